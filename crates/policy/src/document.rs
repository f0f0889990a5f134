//! Policy documents: parsing and validating the JSON into a [`Policy`], and deciding whether one
//! [`Statement`] applies to a request.
//!
//! Parsing is all-or-nothing: a document is either accepted whole, with every pattern, principal
//! and condition value checked for its type, or refused with a [`PolicyError`] that names the
//! statement and the element. The original text is kept byte for byte, because IAM and S3 return
//! policies exactly as they were stored. Which elements a statement must, may or must not have
//! depends on where the policy is attached ([`PolicyKind`]). This module never combines
//! statements into a decision; that is `evaluate`'s job.

use crate::arn;
use crate::condition::{self, Condition};
use crate::context::RequestContext;
use crate::error::PolicyError;
use crate::json::{Json, size_without_white_space_bytes};
use crate::limits::{POLICY_TEXT_BYTES_MAX, STATEMENTS_MAX};
use crate::pattern::{Pattern, glob_match_str};
use crate::principal::{Principal, PrincipalMatch, PrincipalSpec, string_list};

/// Where a policy is attached, which decides the elements its statements take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Attached to a user, group or role: no `Principal`, and `Resource` or `NotResource`.
    Identity,
    /// Attached to a resource, such as a bucket policy: `Principal` or `NotPrincipal`, and
    /// `Resource` or `NotResource`.
    Resource,
    /// A role's trust policy (who may assume it): `Principal`, and no `Resource`.
    Trust,
    /// Passed when assuming a role, to narrow the session: shaped like an identity policy.
    Session,
}

/// The policy language version (`Version`). Policy variables exist only in 2012-10-17; in older
/// or unversioned policies `${...}` is literal text, as in AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V2008_10_17,
    V2012_10_17,
}

/// A statement's `Effect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// A parsed, validated policy together with the exact text it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    name: String,
    kind: PolicyKind,
    text: String,
    version: Option<Version>,
    id: Option<String>,
    statements: Vec<Statement>,
}

/// One statement of a [`Policy`].
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    index: usize,
    sid: Option<String>,
    effect: Effect,
    principal: Option<PrincipalClause>,
    actions: Clause<Pattern>,
    resources: Option<Clause<ResourcePattern>>,
    conditions: Vec<Condition>,
}

/// A list element and whether it was written as its `Not...` form.
#[derive(Debug, Clone, PartialEq)]
struct Clause<T> {
    negated: bool,
    items: Vec<T>,
}

#[derive(Debug, Clone, PartialEq)]
enum PrincipalClause {
    Principal(PrincipalSpec),
    NotPrincipal(PrincipalSpec),
}

#[derive(Debug, Clone, PartialEq)]
enum ResourcePattern {
    /// `"*"`: every resource, ARN or not.
    Any,
    Arn(Pattern),
}

/// How a statement's principal element relates to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrincipalCheck {
    /// The statement has no `Principal`: it is part of an identity or session policy.
    NoElement,
    Named(PrincipalMatch),
    NotNamed,
}

impl Policy {
    /// Parses and validates `text` as a policy of `kind`, refusing it if it is larger than
    /// `size_bytes_max` (white space outside strings not counted; see [`crate::limits`] for the
    /// AWS limit of each kind). `name` identifies the policy in decisions and audit records.
    ///
    /// # Errors
    ///
    /// [`PolicyError`] if the text is too large, is not JSON, or is not a valid policy of `kind`;
    /// the message names the statement and element at fault.
    pub fn parse(
        name: impl Into<String>,
        text: &str,
        kind: PolicyKind,
        size_bytes_max: usize,
    ) -> Result<Self, PolicyError> {
        if text.len() > POLICY_TEXT_BYTES_MAX {
            return Err(PolicyError::TextTooLarge {
                text_bytes: text.len(),
                text_bytes_max: POLICY_TEXT_BYTES_MAX,
            });
        }
        let size_bytes = size_without_white_space_bytes(text);
        if size_bytes > size_bytes_max {
            return Err(PolicyError::TooLarge {
                size_bytes,
                size_bytes_max,
            });
        }
        let json = Json::parse(text).map_err(PolicyError::Syntax)?;
        let Json::Object(members) = json else {
            return Err(PolicyError::malformed(
                "policy",
                format!("expected a JSON object, found {}", json.kind()),
            ));
        };
        let mut version = None;
        let mut id = None;
        let mut statement_json = None;
        for (element, value) in &members {
            match element.as_str() {
                "Version" => version = Some(parse_version(value)?),
                "Id" => id = Some(expect_string(value, "policy", "Id")?.to_owned()),
                "Statement" => statement_json = Some(value),
                other => {
                    return Err(PolicyError::malformed(
                        "policy",
                        format!("unknown element \"{other}\": expected Version, Id or Statement"),
                    ));
                }
            }
        }
        let Some(statement_json) = statement_json else {
            return Err(PolicyError::malformed("policy", "missing Statement"));
        };
        let variables = version == Some(Version::V2012_10_17);
        let statements = match statement_json {
            Json::Object(_) => vec![parse_statement(statement_json, None, kind, variables)?],
            Json::Array(items) if items.is_empty() => {
                return Err(PolicyError::malformed(
                    "Statement",
                    "the list of statements is empty",
                ));
            }
            Json::Array(items) if items.len() > STATEMENTS_MAX => {
                return Err(PolicyError::malformed(
                    "Statement",
                    format!("{} statements; the limit is {STATEMENTS_MAX}", items.len()),
                ));
            }
            Json::Array(items) => items
                .iter()
                .enumerate()
                .map(|(index, item)| parse_statement(item, Some(index), kind, variables))
                .collect::<Result<Vec<_>, _>>()?,
            other => {
                return Err(PolicyError::malformed(
                    "Statement",
                    format!(
                        "expected an object or an array of objects, found {}",
                        other.kind()
                    ),
                ));
            }
        };
        check_unique_sids(&statements)?;
        Ok(Self {
            name: name.into(),
            kind,
            text: text.to_owned(),
            version,
            id,
            statements,
        })
    }

    /// The name given at parse time.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    #[must_use]
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// The policy exactly as it was parsed, to be returned unchanged by `Get...Policy` calls.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// `Version`, if the document has one.
    #[must_use]
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// `Id`, if the document has one.
    #[must_use]
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    #[must_use]
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// Whether this (resource) policy grants access to the public, as S3's Block Public Access
    /// judges it (S3 User Guide, "The meaning of 'public'"): some `Allow` statement names `"*"`
    /// without a condition that confines it to trusted callers, that is `aws:SourceIp` limited
    /// to CIDR ranges, or a fixed value of `aws:PrincipalArn`, `aws:PrincipalAccount`,
    /// `aws:PrincipalOrgID`, `aws:SourceArn`, `aws:SourceVpc`, `aws:SourceVpce`,
    /// `aws:SourceOwner`, `aws:SourceAccount`, `aws:userid`,
    /// `s3:x-amz-server-side-encryption-aws-kms-key-id` or `s3:DataAccessPointArn`. Any other
    /// condition (on `aws:UserAgent`, say) is under the caller's control and does not count.
    #[must_use]
    pub fn is_public(&self) -> bool {
        self.statements.iter().any(|statement| {
            statement.effect == Effect::Allow
                && matches!(&statement.principal, Some(PrincipalClause::Principal(spec)) if spec.names_everyone())
                && !statement
                    .conditions
                    .iter()
                    .any(Condition::confines_to_trusted_callers)
        })
    }
}

impl Statement {
    /// The statement's position in the policy's `Statement` list (0 when it is a lone object).
    #[must_use]
    pub fn index(&self) -> usize {
        self.index
    }

    #[must_use]
    pub fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }

    #[must_use]
    pub fn effect(&self) -> Effect {
        self.effect
    }

    /// How the statement's `Principal`/`NotPrincipal` relates to `caller`.
    pub(crate) fn principal_check(&self, caller: &Principal) -> PrincipalCheck {
        match &self.principal {
            None => PrincipalCheck::NoElement,
            Some(PrincipalClause::Principal(spec)) => spec
                .matches(caller)
                .map_or(PrincipalCheck::NotNamed, PrincipalCheck::Named),
            // NotPrincipal is only accepted with Deny, where how strongly it names the caller
            // does not matter; `Everyone` is the honest description of "all but the listed".
            Some(PrincipalClause::NotPrincipal(spec)) if spec.exempts(caller) => {
                PrincipalCheck::NotNamed
            }
            Some(PrincipalClause::NotPrincipal(_)) => {
                PrincipalCheck::Named(PrincipalMatch::Everyone)
            }
        }
    }

    /// Whether the statement's action, resource and conditions all match `ctx` (the principal is
    /// checked separately, by [`Statement::principal_check`]).
    pub(crate) fn matches_request(&self, ctx: &RequestContext) -> bool {
        self.matches_action(ctx) && self.matches_resource(ctx) && self.matches_conditions(ctx)
    }

    fn matches_action(&self, ctx: &RequestContext) -> bool {
        // Actions are case-insensitive: both sides are lowercased (patterns at parse time).
        let action = ctx.action().to_lowercase();
        let listed = self.actions.items.iter().any(|pattern| {
            pattern
                .resolve(ctx)
                .is_some_and(|tokens| glob_match_str(&tokens, &action))
        });
        listed != self.actions.negated
    }

    fn matches_resource(&self, ctx: &RequestContext) -> bool {
        let Some(resources) = &self.resources else {
            // Trust policies have no Resource: the resource is the role they are attached to.
            return true;
        };
        // Each entry: Some(matched) or None when its variables cannot be resolved.
        let mut outcomes = resources.items.iter().map(|item| match item {
            ResourcePattern::Any => Some(true),
            ResourcePattern::Arn(pattern) => pattern
                .resolve(ctx)
                .map(|tokens| arn::matches(&tokens, ctx.resource())),
        });
        if resources.negated {
            // NotResource applies only if the resource is provably outside every entry; an
            // unresolvable entry cannot be ruled out, so the statement does not apply (the same
            // "never satisfied" rule as conditions).
            outcomes.all(|outcome| outcome == Some(false))
        } else {
            outcomes.any(|outcome| outcome == Some(true))
        }
    }

    fn matches_conditions(&self, ctx: &RequestContext) -> bool {
        self.conditions.iter().all(|condition| condition.holds(ctx))
    }
}

fn parse_version(json: &Json) -> Result<Version, PolicyError> {
    match expect_string(json, "policy", "Version")? {
        "2012-10-17" => Ok(Version::V2012_10_17),
        "2008-10-17" => Ok(Version::V2008_10_17),
        other => Err(PolicyError::malformed(
            "policy, Version",
            format!("\"{other}\" is not a policy language version: use \"2012-10-17\""),
        )),
    }
}

fn expect_string<'a>(json: &'a Json, at: &str, element: &str) -> Result<&'a str, PolicyError> {
    match json {
        Json::String(s) => Ok(s),
        other => Err(PolicyError::malformed(
            format!("{at}, {element}"),
            format!("expected a string, found {}", other.kind()),
        )),
    }
}

/// `Statement[2] (Sid "DenyLogs")`, or `Statement` for a lone statement object.
fn statement_location(index: Option<usize>, sid: Option<&str>) -> String {
    let mut at = match index {
        Some(index) => format!("Statement[{index}]"),
        None => "Statement".to_owned(),
    };
    if let Some(sid) = sid {
        at = format!("{at} (Sid \"{sid}\")");
    }
    at
}

/// The members a statement may have; anything else is refused.
#[derive(Default)]
struct StatementMembers<'a> {
    effect: Option<&'a Json>,
    principal: Option<&'a Json>,
    not_principal: Option<&'a Json>,
    action: Option<&'a Json>,
    not_action: Option<&'a Json>,
    resource: Option<&'a Json>,
    not_resource: Option<&'a Json>,
    condition: Option<&'a Json>,
}

/// A problem inside one statement: the element at fault (empty for the statement as a whole)
/// and the reason. `parse_statement` adds the statement's location.
type ElementError = (String, String);

fn element_error(element: &str, reason: impl Into<String>) -> ElementError {
    (element.to_owned(), reason.into())
}

fn parse_statement(
    json: &Json,
    index: Option<usize>,
    kind: PolicyKind,
    variables: bool,
) -> Result<Statement, PolicyError> {
    let Json::Object(members) = json else {
        return Err(PolicyError::malformed(
            statement_location(index, None),
            format!("expected an object, found {}", json.kind()),
        ));
    };
    // The Sid goes into every message about this statement, so read it first.
    let sid = match members.iter().find(|(name, _)| name == "Sid") {
        Some((_, value)) => {
            Some(expect_string(value, &statement_location(index, None), "Sid")?.to_owned())
        }
        None => None,
    };
    let at = statement_location(index, sid.as_deref());
    parse_statement_members(members, kind, variables)
        .map(|statement| Statement {
            index: index.unwrap_or(0),
            sid,
            ..statement
        })
        .map_err(|(element, reason)| {
            let at = if element.is_empty() {
                at
            } else {
                format!("{at}, {element}")
            };
            PolicyError::malformed(at, reason)
        })
}

/// Everything of a statement but its position and `Sid`, which the caller fills in.
fn parse_statement_members(
    members: &[(String, Json)],
    kind: PolicyKind,
    variables: bool,
) -> Result<Statement, ElementError> {
    let mut found = StatementMembers::default();
    for (name, value) in members {
        let slot = match name.as_str() {
            "Sid" => continue,
            "Effect" => &mut found.effect,
            "Principal" => &mut found.principal,
            "NotPrincipal" => &mut found.not_principal,
            "Action" => &mut found.action,
            "NotAction" => &mut found.not_action,
            "Resource" => &mut found.resource,
            "NotResource" => &mut found.not_resource,
            "Condition" => &mut found.condition,
            other => {
                return Err(element_error(
                    "",
                    format!(
                        "unknown element \"{other}\": expected Sid, Effect, Principal, NotPrincipal, Action, NotAction, Resource, NotResource or Condition"
                    ),
                ));
            }
        };
        *slot = Some(value);
    }
    let effect = parse_effect(found.effect)?;
    let actions = match (found.action, found.not_action) {
        (Some(_), Some(_)) => {
            return Err(element_error("", "has both Action and NotAction; use one"));
        }
        (None, None) => return Err(element_error("", "missing Action or NotAction")),
        (Some(json), None) => {
            parse_actions(json, false).map_err(|reason| element_error("Action", reason))?
        }
        (None, Some(json)) => {
            parse_actions(json, true).map_err(|reason| element_error("NotAction", reason))?
        }
    };
    let principal = parse_principal_clause(&found, kind, effect)?;
    let resources = parse_resource_clause(&found, kind, variables)?;
    let conditions = match found.condition {
        None => Vec::new(),
        Some(json) => condition::parse_block(json, variables)?,
    };
    Ok(Statement {
        index: 0,
        sid: None,
        effect,
        principal,
        actions,
        resources,
        conditions,
    })
}

fn parse_effect(json: Option<&Json>) -> Result<Effect, ElementError> {
    match json {
        None => Err(element_error("", "missing Effect")),
        Some(Json::String(s)) if s == "Allow" => Ok(Effect::Allow),
        Some(Json::String(s)) if s == "Deny" => Ok(Effect::Deny),
        Some(Json::String(s)) => Err(element_error(
            "Effect",
            format!("\"{s}\" is not an effect: use \"Allow\" or \"Deny\""),
        )),
        Some(other) => Err(element_error(
            "Effect",
            format!("expected a string, found {}", other.kind()),
        )),
    }
}

/// `Principal`/`NotPrincipal`: required by resource and trust policies, refused by identity and
/// session policies (which apply to the identity they are attached to).
fn parse_principal_clause(
    found: &StatementMembers,
    kind: PolicyKind,
    effect: Effect,
) -> Result<Option<PrincipalClause>, ElementError> {
    let attached_to_identity = matches!(kind, PolicyKind::Identity | PolicyKind::Session);
    match (found.principal, found.not_principal) {
        (Some(_), Some(_)) => Err(element_error(
            "",
            "has both Principal and NotPrincipal; use one",
        )),
        (None, None) if attached_to_identity => Ok(None),
        (None, None) => Err(element_error(
            "",
            "missing Principal: a resource or trust policy must say whom it applies to",
        )),
        (Some(_), None) | (None, Some(_)) if attached_to_identity => Err(element_error(
            "",
            "an identity or session policy must not name a Principal or NotPrincipal: it applies to the identity it is attached to",
        )),
        (Some(json), None) => PrincipalSpec::parse(json)
            .map(|spec| Some(PrincipalClause::Principal(spec)))
            .map_err(|reason| element_error("Principal", reason)),
        (None, Some(_)) if kind == PolicyKind::Trust => Err(element_error(
            "NotPrincipal",
            "a trust policy must name its principals with Principal",
        )),
        (None, Some(_)) if effect == Effect::Allow => Err(element_error(
            "NotPrincipal",
            "NotPrincipal may only be used with \"Effect\": \"Deny\" (AWS no longer supports it with Allow)",
        )),
        (None, Some(json)) => PrincipalSpec::parse(json)
            .map(|spec| Some(PrincipalClause::NotPrincipal(spec)))
            .map_err(|reason| element_error("NotPrincipal", reason)),
    }
}

/// `Resource`/`NotResource`: exactly one, except in trust policies, which have neither.
fn parse_resource_clause(
    found: &StatementMembers,
    kind: PolicyKind,
    variables: bool,
) -> Result<Option<Clause<ResourcePattern>>, ElementError> {
    match (found.resource, found.not_resource) {
        (Some(_), Some(_)) => Err(element_error(
            "",
            "has both Resource and NotResource; use one",
        )),
        (None, None) if kind == PolicyKind::Trust => Ok(None),
        (_, _) if kind == PolicyKind::Trust => Err(element_error(
            "",
            "a trust policy must not have Resource or NotResource: its resource is the role",
        )),
        (None, None) => Err(element_error("", "missing Resource or NotResource")),
        (Some(json), None) => parse_resources(json, false, variables)
            .map(Some)
            .map_err(|reason| element_error("Resource", reason)),
        (None, Some(json)) => parse_resources(json, true, variables)
            .map(Some)
            .map_err(|reason| element_error("NotResource", reason)),
    }
}

/// `Action`/`NotAction`: `*`, or `service:action` with wildcards in the action part only (AWS
/// refuses `s3GetObject` and wildcards in the service prefix). Matching is case-insensitive.
fn parse_actions(json: &Json, negated: bool) -> Result<Clause<Pattern>, String> {
    let items = string_list(json)?
        .into_iter()
        .map(|action| {
            if action != "*" {
                let valid = action.split_once(':').is_some_and(|(service, name)| {
                    !service.is_empty()
                        && service
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !name.is_empty()
                        && name.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || matches!(b, b'*' | b'?' | b'-' | b'_')
                        })
                });
                if !valid {
                    return Err(format!(
                        "\"{action}\" is not an action: expected service:action, such as s3:GetObject or s3:Get*"
                    ));
                }
            }
            Pattern::compile(&action.to_lowercase(), true, false)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Clause { negated, items })
}

/// `Resource`/`NotResource`: `*` or ARNs, with wildcards and (2012-10-17) policy variables.
fn parse_resources(
    json: &Json,
    negated: bool,
    variables: bool,
) -> Result<Clause<ResourcePattern>, String> {
    let items = string_list(json)?
        .into_iter()
        .map(|resource| {
            if resource == "*" {
                return Ok(ResourcePattern::Any);
            }
            let pattern = Pattern::compile(resource, true, variables)?;
            arn::check_pattern_shape(&pattern.skeleton())?;
            Ok(ResourcePattern::Arn(pattern))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Clause { negated, items })
}

/// IAM requires statement ids to be unique within a policy; so does Nuage, so that a decision's
/// `Sid` names one statement.
fn check_unique_sids(statements: &[Statement]) -> Result<(), PolicyError> {
    for (position, statement) in statements.iter().enumerate() {
        let Some(sid) = statement.sid() else { continue };
        if statements[..position].iter().any(|s| s.sid() == Some(sid)) {
            return Err(PolicyError::malformed(
                statement_location(Some(statement.index), Some(sid)),
                format!("Sid \"{sid}\" is used by more than one statement"),
            ));
        }
    }
    Ok(())
}
