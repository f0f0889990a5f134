//! Principals: who makes a request ([`Principal`]), and who a resource policy's `Principal` or
//! `NotPrincipal` element names (`PrincipalSpec`).
//!
//! Matching follows the IAM User Guide ("AWS JSON policy elements: Principal"): `"*"` and
//! `{"AWS": "*"}` name everyone, anonymous callers included; an account id or
//! `arn:aws:iam::ACCOUNT:root` names the *account*, which delegates to it rather than granting to
//! each of its identities; a role ARN names every session of that role. How strongly a statement
//! named the caller ([`PrincipalMatch`]) is what `evaluate` needs to apply the same-account and
//! session-policy rules. Accounts are Nuage tenant ids and are compared as opaque strings.

use crate::arn;
use crate::json::Json;

/// What kind of caller a [`Principal`] is, derived from its ARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An unauthenticated request.
    Anonymous,
    /// The account itself: `arn:aws:iam::ACCOUNT:root`.
    Root,
    /// An IAM user: `arn:aws:iam::ACCOUNT:user/PATH/NAME`.
    User,
    /// A role session: `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    AssumedRole,
    /// A federated user session: `arn:aws:sts::ACCOUNT:federated-user/NAME`.
    FederatedUser,
    /// A service acting on its own behalf, such as `logging.s3.amazonaws.com`.
    Service,
    /// Any other ARN: matched by exact ARN and by account only.
    Other,
}

/// The caller of a request, as authentication established it.
///
/// Its ARN, account, user name, user id and tags also answer the context keys
/// `aws:PrincipalArn`, `aws:PrincipalAccount`, `aws:PrincipalType`, `aws:username`,
/// `aws:userid`, `aws:PrincipalTag/KEY` and `aws:PrincipalServiceName` (see
/// [`RequestContext`](crate::RequestContext)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    kind: PrincipalKind,
    arn: String,
    account: String,
    user_name: Option<String>,
    user_id: Option<String>,
    tags: Vec<(String, String)>,
}

impl Principal {
    /// An authenticated identity of `account` (a Nuage tenant id) with the given ARN: the account
    /// root, a user, a role session or a federated user, told apart by the ARN.
    #[must_use]
    pub fn new(arn: impl Into<String>, account: impl Into<String>) -> Self {
        let arn = arn.into();
        let kind = kind_of(&arn);
        Self {
            kind,
            arn,
            account: account.into(),
            user_name: None,
            user_id: None,
            tags: Vec::new(),
        }
    }

    /// An unauthenticated caller: only statements naming `"*"` apply to it.
    #[must_use]
    pub fn anonymous() -> Self {
        Self {
            kind: PrincipalKind::Anonymous,
            arn: String::new(),
            account: String::new(),
            user_name: None,
            user_id: None,
            tags: Vec::new(),
        }
    }

    /// A service principal such as `logging.s3.amazonaws.com`, matched by `{"Service": ...}`.
    #[must_use]
    pub fn service(name: impl Into<String>) -> Self {
        Self {
            kind: PrincipalKind::Service,
            arn: name.into(),
            account: String::new(),
            user_name: None,
            user_id: None,
            tags: Vec::new(),
        }
    }

    /// The friendly user name (`aws:username`); AWS sets it for IAM users only.
    #[must_use]
    pub fn with_user_name(mut self, user_name: impl Into<String>) -> Self {
        self.user_name = Some(user_name.into());
        self
    }

    /// The unique id (`aws:userid`): `AIDA...` for a user, `AROA...:session` for a role session.
    #[must_use]
    pub fn with_user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// A tag of the user or role (`aws:PrincipalTag/KEY`). Keys compare case-insensitively.
    #[must_use]
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    #[must_use]
    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// The ARN (the service name for a service principal, empty for an anonymous one).
    #[must_use]
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The account (Nuage tenant id); empty for anonymous and service principals.
    #[must_use]
    pub fn account(&self) -> &str {
        &self.account
    }

    #[must_use]
    pub fn user_name(&self) -> Option<&str> {
        self.user_name.as_deref()
    }

    #[must_use]
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// The value of tag `key`, compared case-insensitively.
    #[must_use]
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The value AWS gives `aws:PrincipalType`.
    pub(crate) fn type_name(&self) -> Option<&'static str> {
        match self.kind {
            PrincipalKind::Anonymous => Some("Anonymous"),
            PrincipalKind::Root => Some("Account"),
            PrincipalKind::User => Some("User"),
            PrincipalKind::AssumedRole => Some("AssumedRole"),
            PrincipalKind::FederatedUser => Some("FederatedUser"),
            PrincipalKind::Service => Some("Service"),
            PrincipalKind::Other => None,
        }
    }

    fn partition(&self) -> Option<&str> {
        arn::split(&self.arn).map(|[_, partition, ..]| partition)
    }

    /// For a role session, the role's name (the path is not part of a session ARN).
    fn role_name(&self) -> Option<&str> {
        if self.kind != PrincipalKind::AssumedRole {
            return None;
        }
        let [.., resource] = arn::split(&self.arn)?;
        resource.strip_prefix("assumed-role/")?.split('/').next()
    }
}

fn kind_of(text: &str) -> PrincipalKind {
    match arn::split(text) {
        Some([_, _, "iam", _, _, "root"]) => PrincipalKind::Root,
        Some([_, _, "iam", _, _, resource]) if resource.starts_with("user/") => PrincipalKind::User,
        Some([_, _, "sts", _, _, resource]) if resource.starts_with("assumed-role/") => {
            PrincipalKind::AssumedRole
        }
        Some([_, _, "sts", _, _, resource]) if resource.starts_with("federated-user/") => {
            PrincipalKind::FederatedUser
        }
        _ => PrincipalKind::Other,
    }
}

/// How specifically a statement's `Principal` named the caller, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PrincipalMatch {
    /// The caller's account (account id or `:root` ARN) and the caller is not the root itself:
    /// the account is delegated to, so an identity policy must still allow within it.
    Account,
    /// `"*"`: everyone.
    Everyone,
    /// The caller's own user ARN, its role's ARN, the account root for the root itself, or its
    /// service name.
    Identity,
    /// The exact ARN of the caller's role session: session policies do not narrow this grant.
    Session,
}

/// One entry of a `Principal` element.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Everyone,
    /// An account id (`partition` is `None`) or an `arn:P:iam::ACCOUNT:root` ARN.
    Account {
        partition: Option<String>,
        account: String,
    },
    /// A user or federated-user ARN, matched exactly.
    Arn(String),
    /// A role ARN: any session of that role.
    Role {
        partition: String,
        account: String,
        name: String,
    },
    /// An assumed-role session ARN, matched exactly.
    Session(String),
    /// A `{"Service": ...}` name.
    Service(String),
    /// `Federated` and `CanonicalUser` principals: accepted for compatibility, never matched,
    /// since Nuage has no identity federation or canonical users yet.
    Unsupported,
}

/// A parsed `Principal` or `NotPrincipal` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PrincipalSpec {
    entries: Vec<Entry>,
}

impl PrincipalSpec {
    /// Parses the element's JSON; errors name the offending value, the caller adds the location.
    pub(crate) fn parse(json: &Json) -> Result<Self, String> {
        match json {
            Json::String(s) if s == "*" => Ok(Self {
                entries: vec![Entry::Everyone],
            }),
            Json::String(s) => Err(format!(
                "\"{s}\" is not a principal: use \"*\" or an object such as {{\"AWS\": \"arn:aws:iam::ACCOUNT:user/NAME\"}}"
            )),
            Json::Object(members) => {
                let mut entries = Vec::new();
                if members.is_empty() {
                    return Err("names no principal".into());
                }
                for (kind, values) in members {
                    for value in string_list(values).map_err(|e| format!("{kind}: {e}"))? {
                        entries.push(parse_entry(kind, value)?);
                    }
                }
                Ok(Self { entries })
            }
            other => Err(format!(
                "must be \"*\" or an object, found {}",
                other.kind()
            )),
        }
    }

    /// Whether this element names everyone (`"*"` or `{"AWS": "*"}`).
    pub(crate) fn names_everyone(&self) -> bool {
        self.entries.contains(&Entry::Everyone)
    }

    /// How strongly this element names `caller`, or `None` if it does not.
    pub(crate) fn matches(&self, caller: &Principal) -> Option<PrincipalMatch> {
        self.entries
            .iter()
            .filter_map(|entry| entry_matches(entry, caller))
            .max()
    }

    /// Whether a `NotPrincipal` element exempts `caller`. As the IAM User Guide warns for
    /// `NotPrincipal` with `Deny`, the caller's account must be listed as well as the caller itself
    /// (its user or federated-user ARN, its role or role-session ARN); listing only the user
    /// leaves the account, and so the user, denied. Root and service callers are their own
    /// account.
    pub(crate) fn exempts(&self, caller: &Principal) -> bool {
        if self.entries.contains(&Entry::Everyone) {
            return true;
        }
        let matches: Vec<PrincipalMatch> = self
            .entries
            .iter()
            .filter_map(|entry| entry_matches(entry, caller))
            .collect();
        let identity_listed = matches.iter().any(|m| *m >= PrincipalMatch::Identity);
        match caller.kind {
            PrincipalKind::Anonymous => false,
            PrincipalKind::Root | PrincipalKind::Service => identity_listed,
            _ => identity_listed && matches.contains(&PrincipalMatch::Account),
        }
    }
}

fn entry_matches(entry: &Entry, caller: &Principal) -> Option<PrincipalMatch> {
    if *entry == Entry::Everyone {
        return Some(PrincipalMatch::Everyone);
    }
    match caller.kind {
        PrincipalKind::Anonymous => return None,
        PrincipalKind::Service => {
            return matches!(entry, Entry::Service(name) if *name == caller.arn)
                .then_some(PrincipalMatch::Identity);
        }
        _ => {}
    }
    match entry {
        Entry::Account { partition, account } => {
            let same_partition = partition
                .as_deref()
                .is_none_or(|p| Some(p) == caller.partition());
            (same_partition && *account == caller.account).then_some(
                if caller.kind == PrincipalKind::Root {
                    PrincipalMatch::Identity
                } else {
                    PrincipalMatch::Account
                },
            )
        }
        Entry::Arn(arn) => (*arn == caller.arn).then_some(PrincipalMatch::Identity),
        Entry::Role {
            partition,
            account,
            name,
        } => (Some(partition.as_str()) == caller.partition()
            && *account == caller.account
            && Some(name.as_str()) == caller.role_name())
        .then_some(PrincipalMatch::Identity),
        Entry::Session(arn) => (*arn == caller.arn).then_some(PrincipalMatch::Session),
        Entry::Everyone | Entry::Service(_) | Entry::Unsupported => None,
    }
}

/// A string or a non-empty array of strings.
pub(crate) fn string_list(json: &Json) -> Result<Vec<&str>, String> {
    match json {
        Json::String(s) => Ok(vec![s.as_str()]),
        Json::Array(items) if items.is_empty() => Err("the list is empty".into()),
        Json::Array(items) => items
            .iter()
            .map(|item| match item {
                Json::String(s) => Ok(s.as_str()),
                other => Err(format!(
                    "expected a string in the list, found {}",
                    other.kind()
                )),
            })
            .collect(),
        other => Err(format!(
            "expected a string or an array of strings, found {}",
            other.kind()
        )),
    }
}

fn parse_entry(kind: &str, value: &str) -> Result<Entry, String> {
    match kind {
        "AWS" => parse_aws_entry(value),
        "Service" if value.is_empty() || value.contains(['*', '?']) => Err(format!(
            "Service: \"{value}\" is not a service principal name"
        )),
        "Service" => Ok(Entry::Service(value.to_owned())),
        "Federated" | "CanonicalUser" if value.is_empty() => {
            Err(format!("{kind}: the principal is empty"))
        }
        "Federated" | "CanonicalUser" => Ok(Entry::Unsupported),
        other => Err(format!(
            "unknown principal type \"{other}\": expected AWS, Service, Federated or CanonicalUser"
        )),
    }
}

fn parse_aws_entry(value: &str) -> Result<Entry, String> {
    let invalid = |why: &str| Err(format!("AWS: invalid principal \"{value}\": {why}"));
    if value == "*" {
        return Ok(Entry::Everyone);
    }
    if value.contains(['*', '?']) {
        return invalid("wildcards may only stand alone (\"*\"), never inside a principal");
    }
    let Some([_, partition, service, region, account, resource]) = arn::split(value) else {
        if !value.starts_with("arn:") && is_account_id(value) {
            return Ok(Entry::Account {
                partition: None,
                account: value.to_owned(),
            });
        }
        return invalid("expected an account id or an IAM or STS ARN");
    };
    if partition.is_empty() || !region.is_empty() || !is_account_id(account) {
        return invalid(
            "expected arn:PARTITION:iam::ACCOUNT:... or arn:PARTITION:sts::ACCOUNT:...",
        );
    }
    let named = |prefix: &str, parts: usize| {
        resource.strip_prefix(prefix).is_some_and(|rest| {
            let components: Vec<&str> = rest.split('/').collect();
            components.len() >= parts && components.iter().all(|c| !c.is_empty())
        })
    };
    match service {
        "iam" if resource == "root" => Ok(Entry::Account {
            partition: Some(partition.to_owned()),
            account: account.to_owned(),
        }),
        "iam" if named("user/", 1) => Ok(Entry::Arn(value.to_owned())),
        "iam" if named("role/", 1) => Ok(Entry::Role {
            partition: partition.to_owned(),
            account: account.to_owned(),
            name: resource.rsplit('/').next().unwrap_or_default().to_owned(),
        }),
        "sts" if named("assumed-role/", 2) => Ok(Entry::Session(value.to_owned())),
        "sts" if named("federated-user/", 1) => Ok(Entry::Arn(value.to_owned())),
        _ => invalid(
            "expected :root, :user/NAME, :role/NAME, :assumed-role/ROLE/SESSION or :federated-user/NAME",
        ),
    }
}

/// An account id: AWS uses 12 digits; Nuage tenant ids are any short run of letters, digits,
/// `-` and `_`, so both are accepted.
fn is_account_id(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> PrincipalSpec {
        PrincipalSpec::parse(&Json::parse(json).unwrap()).unwrap()
    }

    fn spec_error(json: &str) -> String {
        PrincipalSpec::parse(&Json::parse(json).unwrap()).unwrap_err()
    }

    const ACCOUNT: &str = "111122223333";

    fn alice() -> Principal {
        Principal::new("arn:aws:iam::111122223333:user/team/alice", ACCOUNT)
    }

    fn root() -> Principal {
        Principal::new("arn:aws:iam::111122223333:root", ACCOUNT)
    }

    fn session() -> Principal {
        Principal::new(
            "arn:aws:sts::111122223333:assumed-role/Reader/build-42",
            ACCOUNT,
        )
    }

    #[test]
    fn kinds_come_from_the_arn() {
        assert_eq!(alice().kind(), PrincipalKind::User);
        assert_eq!(root().kind(), PrincipalKind::Root);
        assert_eq!(session().kind(), PrincipalKind::AssumedRole);
        assert_eq!(
            Principal::new("arn:aws:sts::1:federated-user/bob", "1").kind(),
            PrincipalKind::FederatedUser
        );
        assert_eq!(Principal::anonymous().kind(), PrincipalKind::Anonymous);
        assert_eq!(Principal::new("weird", "1").kind(), PrincipalKind::Other);
    }

    #[test]
    fn everyone_matches_everyone_including_anonymous() {
        for json in [r#""*""#, r#"{"AWS": "*"}"#, r#"{"AWS": ["*"]}"#] {
            let spec = spec(json);
            assert_eq!(spec.matches(&alice()), Some(PrincipalMatch::Everyone));
            assert_eq!(
                spec.matches(&Principal::anonymous()),
                Some(PrincipalMatch::Everyone)
            );
        }
    }

    #[test]
    fn account_forms_delegate_to_the_account() {
        for json in [
            r#"{"AWS": "111122223333"}"#,
            r#"{"AWS": "arn:aws:iam::111122223333:root"}"#,
        ] {
            let spec = spec(json);
            assert_eq!(spec.matches(&alice()), Some(PrincipalMatch::Account));
            assert_eq!(spec.matches(&session()), Some(PrincipalMatch::Account));
            assert_eq!(spec.matches(&root()), Some(PrincipalMatch::Identity));
            assert_eq!(
                spec.matches(&Principal::new(
                    "arn:aws:iam::444455556666:user/x",
                    "444455556666"
                )),
                None
            );
            assert_eq!(spec.matches(&Principal::anonymous()), None);
        }
        // The partition of a root ARN is part of the match.
        let spec = spec(r#"{"AWS": "arn:other:iam::111122223333:root"}"#);
        assert_eq!(spec.matches(&alice()), None);
    }

    #[test]
    fn user_arns_match_exactly() {
        let spec = spec(r#"{"AWS": ["arn:aws:iam::111122223333:user/team/alice"]}"#);
        assert_eq!(spec.matches(&alice()), Some(PrincipalMatch::Identity));
        let other = Principal::new("arn:aws:iam::111122223333:user/team/alicia", ACCOUNT);
        assert_eq!(spec.matches(&other), None);
    }

    #[test]
    fn role_arns_match_their_sessions_and_session_arns_match_exactly() {
        let role = spec(r#"{"AWS": "arn:aws:iam::111122223333:role/ops/Reader"}"#);
        assert_eq!(role.matches(&session()), Some(PrincipalMatch::Identity));
        let other_role = spec(r#"{"AWS": "arn:aws:iam::111122223333:role/Writer"}"#);
        assert_eq!(other_role.matches(&session()), None);
        let exact = spec(r#"{"AWS": "arn:aws:sts::111122223333:assumed-role/Reader/build-42"}"#);
        assert_eq!(exact.matches(&session()), Some(PrincipalMatch::Session));
        let other_session =
            spec(r#"{"AWS": "arn:aws:sts::111122223333:assumed-role/Reader/build-43"}"#);
        assert_eq!(other_session.matches(&session()), None);
    }

    #[test]
    fn the_strongest_entry_wins() {
        let spec = spec(
            r#"{"AWS": ["111122223333", "arn:aws:sts::111122223333:assumed-role/Reader/build-42"]}"#,
        );
        assert_eq!(spec.matches(&session()), Some(PrincipalMatch::Session));
    }

    #[test]
    fn services_match_by_name_only() {
        let spec = spec(r#"{"Service": ["logging.s3.amazonaws.com"]}"#);
        let logging = Principal::service("logging.s3.amazonaws.com");
        assert_eq!(spec.matches(&logging), Some(PrincipalMatch::Identity));
        assert_eq!(spec.matches(&alice()), None);
        let by_account =
            super::PrincipalSpec::parse(&Json::parse(r#"{"AWS": "111122223333"}"#).unwrap())
                .unwrap();
        assert_eq!(by_account.matches(&logging), None);
    }

    #[test]
    fn federated_and_canonical_principals_parse_but_never_match() {
        let spec =
            spec(r#"{"Federated": "cognito-identity.amazonaws.com", "CanonicalUser": "79a5"}"#);
        assert_eq!(spec.matches(&alice()), None);
    }

    #[test]
    fn not_principal_exempts_only_when_the_account_is_listed_too() {
        let user_only = spec(r#"{"AWS": "arn:aws:iam::111122223333:user/team/alice"}"#);
        assert!(!user_only.exempts(&alice()));
        let user_and_account = spec(
            r#"{"AWS": ["arn:aws:iam::111122223333:user/team/alice", "arn:aws:iam::111122223333:root"]}"#,
        );
        assert!(user_and_account.exempts(&alice()));
        assert!(user_and_account.exempts(&root()));
        assert!(!user_and_account.exempts(&session()));
        let role_and_account =
            spec(r#"{"AWS": ["arn:aws:iam::111122223333:role/Reader", "111122223333"]}"#);
        assert!(role_and_account.exempts(&session()));
        assert!(!role_and_account.exempts(&Principal::anonymous()));
        assert!(spec(r#""*""#).exempts(&Principal::anonymous()));
    }

    #[test]
    fn malformed_principals_are_refused_with_the_value() {
        assert!(spec_error(r#""alice""#).contains("\"alice\" is not a principal"));
        assert!(spec_error(r"{}").contains("names no principal"));
        assert!(spec_error(r"42").contains("found a number"));
        assert!(spec_error(r#"{"AWS": []}"#).contains("AWS: the list is empty"));
        assert!(spec_error(r#"{"AWS": [7]}"#).contains("found a number"));
        assert!(spec_error(r#"{"Group": "x"}"#).contains("unknown principal type \"Group\""));
        assert!(spec_error(r#"{"AWS": "arn:aws:iam::111122223333:user/*"}"#).contains("wildcards"));
        assert!(spec_error(r#"{"AWS": "arn:aws:s3:::bucket"}"#).contains("invalid principal"));
        assert!(
            spec_error(r#"{"AWS": "arn:aws:iam::111122223333:group/g"}"#)
                .contains("invalid principal")
        );
        assert!(spec_error(r#"{"AWS": "not an account"}"#).contains("invalid principal"));
        assert!(
            spec_error(r#"{"AWS": "arn:aws:sts::111122223333:assumed-role/OnlyRole"}"#)
                .contains("invalid principal")
        );
    }
}
