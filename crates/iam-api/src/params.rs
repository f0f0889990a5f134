//! Query API parameters: the URL query and the `application/x-www-form-urlencoded`
//! body, decoded into names and values.
//!
//! The action parser takes parameters out one by one; whatever is left when it
//! finishes is refused. A parameter Nuage does not implement (a permissions
//! boundary, MFA, session tags) therefore fails loudly instead of being
//! ignored, which could grant more than the caller asked for. This module knows
//! nothing of what an action means.

use crate::error::ApiError;
use nuage_base::limits::{
    IAM_TAGS_MAX, QUERY_API_PARAMETERS_MAX, TAG_KEY_CHARS_MAX, TAG_VALUE_CHARS_MAX,
};
use percent_encoding::percent_decode;
use std::collections::BTreeMap;

/// Decodes one form component: `+` is a space, then `%XX` escapes; the result
/// must be UTF-8.
fn decode_component(raw: &[u8]) -> Result<String, ApiError> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&spaced)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| ApiError::malformed_query("a parameter is not valid UTF-8 once decoded"))
}

/// The parameters of one request, by name.
#[derive(Debug, Default)]
pub(crate) struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// Parses the query string and the form body together, as AWS does.
    pub(crate) fn parse(query: Option<&str>, body: &[u8]) -> Result<Self, ApiError> {
        let mut values = BTreeMap::new();
        let pieces = query
            .unwrap_or("")
            .as_bytes()
            .split(|&b| b == b'&')
            .chain(body.split(|&b| b == b'&'));
        for piece in pieces.filter(|p| !p.is_empty()) {
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(at) => (&piece[..at], &piece[at + 1..]),
                None => (piece, &b""[..]),
            };
            let name = decode_component(name)?;
            let value = decode_component(value)?;
            if values.len() >= QUERY_API_PARAMETERS_MAX {
                return Err(ApiError::malformed_query(format!(
                    "a request may carry at most {QUERY_API_PARAMETERS_MAX} parameters"
                )));
            }
            // Two values for one name would leave it to chance which one is
            // authorized and which one is acted on.
            if values.insert(name.clone(), value).is_some() {
                return Err(ApiError::malformed_query(format!(
                    "parameter {name} is given twice"
                )));
            }
        }
        Ok(Self { values })
    }

    pub(crate) fn take(&mut self, name: &str) -> Option<String> {
        self.values.remove(name)
    }

    /// A parameter that must be present and not empty.
    pub(crate) fn require(&mut self, name: &str) -> Result<String, ApiError> {
        match self.take(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::validation(format!(
                "1 validation error detected: value at '{name}' failed to satisfy constraint: member must not be null"
            ))),
        }
    }

    pub(crate) fn take_u32(&mut self, name: &str) -> Result<Option<u32>, ApiError> {
        self.take(name)
            .map(|v| {
                v.parse::<u32>().map_err(|_| {
                    ApiError::validation(format!("{name} must be a whole number, not `{v}`"))
                })
            })
            .transpose()
    }

    pub(crate) fn take_bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        self.take(name)
            .map(|v| match v.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(ApiError::validation(format!(
                    "{name} must be true or false, not `{v}`"
                ))),
            })
            .transpose()
    }

    /// `Tags.member.N.Key` / `Tags.member.N.Value`, numbered from 1 without gaps.
    pub(crate) fn take_tags(&mut self) -> Result<Vec<(String, String)>, ApiError> {
        let mut tags: Vec<(String, String)> = Vec::new();
        for n in 1..=IAM_TAGS_MAX + 1 {
            let Some(key) = self.take(&format!("Tags.member.{n}.Key")) else {
                break;
            };
            let value = self
                .take(&format!("Tags.member.{n}.Value"))
                .unwrap_or_default();
            if n > IAM_TAGS_MAX {
                return Err(ApiError::limit_exceeded(format!(
                    "at most {IAM_TAGS_MAX} tags are allowed"
                )));
            }
            validate_tag(&key, &value)?;
            if tags.iter().any(|(k, _)| k.eq_ignore_ascii_case(&key)) {
                return Err(ApiError::invalid_input(format!(
                    "tag key `{key}` is given twice"
                )));
            }
            tags.push((key, value));
        }
        if let Some(stray) = self.values.keys().find(|k| k.starts_with("Tags.")) {
            return Err(ApiError::validation(format!(
                "parameter {stray} does not belong to a tag list numbered from 1"
            )));
        }
        Ok(tags)
    }

    /// Refuses whatever the action did not take.
    pub(crate) fn finish(self, action: &str) -> Result<(), ApiError> {
        match self.values.into_keys().next() {
            None => Ok(()),
            Some(name) => Err(ApiError::validation(format!(
                "parameter {name} is not supported by {action} in Nuage"
            ))),
        }
    }
}

/// AWS tag rules: key 1 to 128 characters, value up to 256, letters, digits,
/// spaces and `_.:/=+-@`.
fn validate_tag(key: &str, value: &str) -> Result<(), ApiError> {
    let allowed = |c: char| c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c);
    let key_chars = key.chars().count();
    if key_chars == 0 || key_chars > TAG_KEY_CHARS_MAX || !key.chars().all(allowed) {
        return Err(ApiError::invalid_input(format!(
            "tag key `{key}` must be 1 to {TAG_KEY_CHARS_MAX} letters, digits, spaces or _.:/=+-@"
        )));
    }
    if value.chars().count() > TAG_VALUE_CHARS_MAX || !value.chars().all(allowed) {
        return Err(ApiError::invalid_input(format!(
            "tag value of `{key}` must be up to {TAG_VALUE_CHARS_MAX} letters, digits, spaces or _.:/=+-@"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_body_merge_and_decode() {
        let mut p = Params::parse(
            Some("Action=CreateUser&Version=2010-05-08"),
            b"UserName=al%69ce&Path=%2Fteam%2F&Description=a+b%2Bc",
        )
        .unwrap();
        assert_eq!(p.take("Action").as_deref(), Some("CreateUser"));
        assert_eq!(p.require("UserName").unwrap(), "alice");
        assert_eq!(p.take("Path").as_deref(), Some("/team/"));
        assert_eq!(p.take("Description").as_deref(), Some("a b+c"));
        assert!(p.require("Missing").is_err());
        assert!(p.finish("CreateUser").is_err(), "Version was not taken");
    }

    #[test]
    fn policy_documents_survive_form_encoding() {
        let doc = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}"#;
        // What Python's urlencode (botocore) sends: quote_plus.
        let encoded: String = doc
            .bytes()
            .map(|b| match b {
                b' ' => "+".to_owned(),
                b if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) => char::from(b).to_string(),
                b => format!("%{b:02X}"),
            })
            .collect();
        let mut p = Params::parse(None, format!("PolicyDocument={encoded}").as_bytes()).unwrap();
        assert_eq!(p.take("PolicyDocument").as_deref(), Some(doc));
    }

    #[test]
    fn duplicates_bad_utf8_and_floods_are_refused() {
        assert!(Params::parse(None, b"A=1&A=2").is_err());
        assert!(Params::parse(None, b"A=%FF").is_err());
        let flood: Vec<String> = (0..=QUERY_API_PARAMETERS_MAX)
            .map(|i| format!("P{i}=x"))
            .collect();
        assert!(Params::parse(None, flood.join("&").as_bytes()).is_err());
        let mut p = Params::parse(None, b"Flag&Empty=").unwrap();
        assert_eq!(p.take("Flag").as_deref(), Some(""));
        assert!(
            p.require("Empty").is_err(),
            "an empty value is a missing one"
        );
    }

    #[test]
    fn tags_are_numbered_lists() {
        let mut p = Params::parse(
            None,
            b"Tags.member.1.Key=team&Tags.member.1.Value=data&Tags.member.2.Key=env&Tags.member.2.Value=",
        )
        .unwrap();
        assert_eq!(
            p.take_tags().unwrap(),
            vec![
                ("team".to_owned(), "data".to_owned()),
                ("env".to_owned(), String::new())
            ]
        );
        p.finish("CreateUser").unwrap();
        let mut gap = Params::parse(None, b"Tags.member.2.Key=a&Tags.member.2.Value=b").unwrap();
        assert!(gap.take_tags().is_err());
        let mut bad = Params::parse(None, b"Tags.member.1.Key=a%0Ab").unwrap();
        assert!(bad.take_tags().is_err());
    }

    #[test]
    fn numbers_and_booleans() {
        let mut p =
            Params::parse(None, b"DurationSeconds=900&OnlyAttached=true&MaxItems=-1").unwrap();
        assert_eq!(p.take_u32("DurationSeconds").unwrap(), Some(900));
        assert_eq!(p.take_bool("OnlyAttached").unwrap(), Some(true));
        assert!(p.take_u32("MaxItems").is_err());
        assert_eq!(p.take_u32("Absent").unwrap(), None);
    }
}
