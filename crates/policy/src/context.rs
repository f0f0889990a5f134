//! [`RequestContext`]: everything a policy can look at about one request.
//!
//! The protocol front ends build it (action, resource ARN, caller, and condition keys such as
//! `aws:SourceIp` or `s3:prefix`); this crate only reads it. Condition key names are
//! case-insensitive, as in AWS. Keys about the caller (`aws:username`, `aws:PrincipalTag/...`, ...)
//! are answered by the [`Principal`] alone, so a front end cannot accidentally let request data
//! impersonate them. Time is a context key like any other: this crate never reads a clock.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::pattern::Variables;
use crate::principal::{Principal, PrincipalKind};

/// One request, as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    action: String,
    resource: String,
    principal: Principal,
    /// Lowercased key name to values. An empty list is the same as an absent key.
    keys: BTreeMap<String, Vec<String>>,
}

/// Context keys whose values come from the [`Principal`] and nowhere else.
const PRINCIPAL_KEYS: [&str; 6] = [
    "aws:principalarn",
    "aws:principalaccount",
    "aws:principaltype",
    "aws:principalservicename",
    "aws:username",
    "aws:userid",
];
const PRINCIPAL_TAG_PREFIX: &str = "aws:principaltag/";

impl RequestContext {
    /// A request by `principal` to perform `action` (such as `s3:GetObject`) on `resource`
    /// (an ARN such as `arn:aws:s3:::bucket/key`, or `*` for actions on no resource).
    #[must_use]
    pub fn new(
        action: impl Into<String>,
        resource: impl Into<String>,
        principal: Principal,
    ) -> Self {
        Self {
            action: action.into(),
            resource: resource.into(),
            principal,
            keys: BTreeMap::new(),
        }
    }

    /// Sets condition key `name` to one value, replacing any earlier values. Keys about the
    /// principal (`aws:username`, `aws:userid`, `aws:PrincipalArn`, `aws:PrincipalAccount`,
    /// `aws:PrincipalType`, `aws:PrincipalServiceName`, `aws:PrincipalTag/*`) are ignored here:
    /// the [`Principal`] answers them.
    #[must_use]
    pub fn with_key(self, name: &str, value: impl Into<String>) -> Self {
        self.with_values(name, [value.into()])
    }

    /// Sets multivalued condition key `name` (such as `aws:TagKeys`) to `values`, replacing any
    /// earlier values. An empty list makes the key absent.
    #[must_use]
    pub fn with_values<V: Into<String>>(
        mut self,
        name: &str,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        let name = name.to_lowercase();
        let values: Vec<String> = values.into_iter().map(Into::into).collect();
        if values.is_empty() {
            self.keys.remove(&name);
        } else {
            self.keys.insert(name, values);
        }
        self
    }

    /// Sets `aws:CurrentTime` (ISO 8601, UTC) and `aws:EpochTime` (seconds) to the request's
    /// time, which the caller reads from its clock.
    #[must_use]
    pub fn with_current_time(self, unix_seconds: i64) -> Self {
        let iso = OffsetDateTime::from_unix_timestamp(unix_seconds)
            .ok()
            .and_then(|time| time.format(&Rfc3339).ok());
        let this = self.with_key("aws:EpochTime", unix_seconds.to_string());
        match iso {
            Some(iso) => this.with_key("aws:CurrentTime", iso),
            None => this,
        }
    }

    #[must_use]
    pub fn action(&self) -> &str {
        &self.action
    }

    #[must_use]
    pub fn resource(&self) -> &str {
        &self.resource
    }

    #[must_use]
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The values of condition key `name` (any case); empty if the key is absent.
    #[must_use]
    pub fn values(&self, name: &str) -> Vec<&str> {
        let name = name.to_lowercase();
        if let Some(tag) = name.strip_prefix(PRINCIPAL_TAG_PREFIX) {
            return self.principal.tag(tag).into_iter().collect();
        }
        if PRINCIPAL_KEYS.contains(&name.as_str()) {
            return self.principal_key(&name).into_iter().collect();
        }
        self.keys
            .get(&name)
            .map(|values| values.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn principal_key(&self, name: &str) -> Option<&str> {
        let principal = &self.principal;
        let identified = !matches!(
            principal.kind(),
            PrincipalKind::Anonymous | PrincipalKind::Service
        );
        match name {
            "aws:principalarn" if identified => Some(principal.arn()),
            "aws:principalaccount" if identified => Some(principal.account()),
            "aws:principaltype" => principal.type_name(),
            "aws:principalservicename" if principal.kind() == PrincipalKind::Service => {
                Some(principal.arn())
            }
            "aws:username" => principal.user_name(),
            "aws:userid" => principal.user_id(),
            _ => None,
        }
    }
}

impl Variables for RequestContext {
    fn variable(&self, key: &str) -> Option<&str> {
        match self.values(key).as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal::new("arn:aws:iam::111122223333:user/alice", "111122223333")
            .with_user_name("alice")
            .with_user_id("AIDAEXAMPLE")
            .with_tag("Team", "storage")
    }

    #[test]
    fn key_names_are_case_insensitive() {
        let ctx = RequestContext::new("s3:ListBucket", "arn:aws:s3:::b", alice())
            .with_key("s3:Prefix", "home/");
        assert_eq!(ctx.values("S3:PREFIX"), ["home/"]);
        assert!(ctx.values("s3:delimiter").is_empty());
    }

    #[test]
    fn principal_keys_come_from_the_principal_only() {
        let ctx = RequestContext::new("s3:GetObject", "arn:aws:s3:::b/k", alice())
            .with_key("aws:username", "mallory")
            .with_key("aws:PrincipalTag/Team", "admins");
        assert_eq!(ctx.values("aws:username"), ["alice"]);
        assert_eq!(ctx.values("aws:userid"), ["AIDAEXAMPLE"]);
        assert_eq!(ctx.values("aws:PrincipalTag/team"), ["storage"]);
        assert_eq!(
            ctx.values("aws:PrincipalArn"),
            ["arn:aws:iam::111122223333:user/alice"]
        );
        assert_eq!(ctx.values("aws:PrincipalAccount"), ["111122223333"]);
        assert_eq!(ctx.values("aws:PrincipalType"), ["User"]);
        assert!(ctx.values("aws:PrincipalTag/missing").is_empty());
    }

    #[test]
    fn anonymous_callers_have_no_identity_keys() {
        let ctx = RequestContext::new("s3:GetObject", "arn:aws:s3:::b/k", Principal::anonymous());
        assert!(ctx.values("aws:PrincipalArn").is_empty());
        assert!(ctx.values("aws:PrincipalAccount").is_empty());
        assert_eq!(ctx.values("aws:PrincipalType"), ["Anonymous"]);
    }

    #[test]
    fn current_time_sets_both_time_keys() {
        let ctx =
            RequestContext::new("s3:GetObject", "*", alice()).with_current_time(1_700_000_000);
        assert_eq!(ctx.values("aws:EpochTime"), ["1700000000"]);
        assert_eq!(ctx.values("aws:CurrentTime"), ["2023-11-14T22:13:20Z"]);
    }

    #[test]
    fn only_single_values_resolve_as_variables() {
        let ctx = RequestContext::new("s3:GetObject", "*", alice())
            .with_values("aws:TagKeys", ["a", "b"])
            .with_values("s3:prefix", Vec::<String>::new());
        assert_eq!(ctx.variable("aws:username"), Some("alice"));
        assert_eq!(ctx.variable("aws:tagkeys"), None);
        assert_eq!(ctx.variable("s3:prefix"), None);
    }
}
