//! EC2 Query parameters: the form body (and query string) as flat
//! `Name=value` pairs, with EC2's list (`InstanceId.1`) and filter
//! (`Filter.1.Name`, `Filter.1.Value.1`) conventions.

use std::collections::BTreeMap;

use crate::error::{Ec2Error, Ec2Result};
use crate::limits::{FILTERS_MAX, LIST_ITEMS_MAX, PARAMETERS_MAX};

#[derive(Debug, Default)]
pub struct Params(BTreeMap<String, String>);

fn decode(text: &str) -> Ec2Result<String> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| Ec2Error::invalid_parameter("a parameter is not valid UTF-8"))
}

impl Params {
    /// Parses the query string and the form body together; at most
    /// [`PARAMETERS_MAX`] pairs, a name given twice is refused.
    pub fn parse(query: Option<&str>, body: &[u8]) -> Ec2Result<Self> {
        let body = std::str::from_utf8(body)
            .map_err(|_| Ec2Error::invalid_parameter("the request body is not UTF-8"))?;
        let mut map = BTreeMap::new();
        for pair in query
            .unwrap_or("")
            .split('&')
            .chain(body.split('&'))
            .filter(|p| !p.is_empty())
        {
            if map.len() >= PARAMETERS_MAX {
                return Err(Ec2Error::invalid_parameter(format!(
                    "a request may carry at most {PARAMETERS_MAX} parameters"
                )));
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name)?;
            if map.insert(name.clone(), decode(value)?).is_some() {
                return Err(Ec2Error::invalid_parameter(format!(
                    "the parameter {name} is given twice"
                )));
            }
        }
        Ok(Self(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn required(&self, name: &str) -> Ec2Result<&str> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Ec2Error::missing_parameter(name))
    }

    pub fn count(&self, name: &str, default: u32) -> Ec2Result<u32> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                Ec2Error::invalid_parameter(format!("{name} must be a number, not '{v}'"))
            }),
        }
    }

    /// A digest (SHA-256, hex) of every parameter but `skip`: two requests
    /// with the same digest asked for the same thing.
    pub fn digest_without(&self, skip: &[&str]) -> String {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        for (name, value) in &self.0 {
            if skip.contains(&name.as_str()) {
                continue;
            }
            // Lengths first, so no two parameter lists hash alike.
            hash.update((name.len() as u64).to_le_bytes());
            hash.update(name.as_bytes());
            hash.update((value.len() as u64).to_le_bytes());
            hash.update(value.as_bytes());
        }
        hex::encode(hash.finalize())
    }

    /// `NAME.1`, `NAME.2`, ... in index order; at most [`LIST_ITEMS_MAX`].
    pub fn list(&self, name: &str) -> Ec2Result<Vec<String>> {
        indexed(&self.0, &format!("{name}."))
    }

    /// `Filter.N.Name` with its `Filter.N.Value.M`.
    pub fn filters(&self) -> Ec2Result<Vec<(String, Vec<String>)>> {
        let mut filters = Vec::new();
        for index in 1..=FILTERS_MAX + 1 {
            let Some(name) = self.get(&format!("Filter.{index}.Name")) else {
                break;
            };
            if index > FILTERS_MAX {
                return Err(Ec2Error::invalid_parameter(format!(
                    "at most {FILTERS_MAX} filters"
                )));
            }
            let values = indexed(&self.0, &format!("Filter.{index}.Value."))?;
            filters.push((name.to_owned(), values));
        }
        Ok(filters)
    }
}

fn indexed(map: &BTreeMap<String, String>, prefix: &str) -> Ec2Result<Vec<String>> {
    let mut items: Vec<(u32, String)> = Vec::new();
    for (name, value) in map.range(prefix.to_owned()..) {
        let Some(rest) = name.strip_prefix(prefix) else {
            break;
        };
        // `Filter.1.Value.1` is not an item of `Filter.1.`.
        let Ok(index) = rest.parse::<u32>() else {
            continue;
        };
        if items.len() >= LIST_ITEMS_MAX {
            return Err(Ec2Error::invalid_parameter(format!(
                "a list may hold at most {LIST_ITEMS_MAX} items"
            )));
        }
        items.push((index, value.clone()));
    }
    items.sort_by_key(|(index, _)| *index);
    Ok(items.into_iter().map(|(_, v)| v).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lists_and_filters() {
        let p = Params::parse(
            None,
            b"Action=DescribeInstances&InstanceId.2=i-b&InstanceId.10=i-c&InstanceId.1=i-a\
              &Filter.1.Name=instance-state-name&Filter.1.Value.1=running&Filter.1.Value.2=stopped\
              &UserData=ZWNobyBo%2BaQ%3D%3D&Name=a+b",
        )
        .unwrap();
        assert_eq!(p.list("InstanceId").unwrap(), ["i-a", "i-b", "i-c"]);
        assert_eq!(
            p.filters().unwrap(),
            [(
                "instance-state-name".to_owned(),
                vec!["running".to_owned(), "stopped".to_owned()]
            )]
        );
        assert_eq!(p.get("UserData"), Some("ZWNobyBo+aQ=="));
        assert_eq!(p.get("Name"), Some("a b"));
        assert!(p.required("ImageId").is_err());
    }

    #[test]
    fn bounded() {
        let body = (0..=PARAMETERS_MAX)
            .map(|i| format!("P{i}=x"))
            .collect::<Vec<_>>()
            .join("&");
        assert!(Params::parse(None, body.as_bytes()).is_err());
        assert!(Params::parse(None, b"A=1&A=2").is_err());
    }

    #[test]
    fn a_digest_ignores_only_the_skipped_parameters() {
        let p = |body: &str| Params::parse(None, body.as_bytes()).unwrap();
        let skip = ["ClientToken"];
        let a = p("Action=RunInstances&ImageId=ami-1&ClientToken=t1");
        assert_eq!(
            a.digest_without(&skip),
            p("ClientToken=t2&ImageId=ami-1&Action=RunInstances").digest_without(&skip)
        );
        assert_ne!(
            a.digest_without(&skip),
            p("Action=RunInstances&ImageId=ami-2&ClientToken=t1").digest_without(&skip)
        );
        // Names and values cannot run into each other.
        assert_ne!(
            p("AB=C").digest_without(&skip),
            p("A=BC").digest_without(&skip)
        );
    }
}
