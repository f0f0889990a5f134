//! [`evaluate`]: combining the policies that apply to a request into one [`Decision`].
//!
//! The logic is the IAM User Guide's "Policy evaluation logic" restricted to the policy types
//! Nuage has (identity-based, resource-based, session policies; no organizations SCPs/RCPs and no
//! permissions boundaries yet):
//!
//! 1. Start from an implicit deny.
//! 2. An applicable `Deny` statement in *any* of the policies is an explicit deny, final.
//! 3. Within one account, an `Allow` in an identity policy *or* in the resource policy
//!    suffices ("If either the identity-based policy or the resource-based policy within the same
//!    account allows the request and the other doesn't, the request is still allowed"). A
//!    resource policy that names only the *account* (`"AWS": "ACCOUNT"` or `:root`) delegates to
//!    the account instead of granting ("AWS account principals"), so it allows by itself only the
//!    root; the account's users and roles still need an identity policy.
//! 4. Across accounts, the caller's identity policies *and* the resource policy must both allow
//!    ("Cross-account policy evaluation logic").
//! 5. Session policies, when a session has any, only narrow: an `Allow` must also be found in
//!    them, except for a resource-policy grant naming the exact role-session ARN, which session
//!    policies do not limit ("Session policies").
//! 6. Anonymous callers and service principals have no identity policies: the resource policy
//!    alone decides for them.
//!
//! The account root is not special-cased: in AWS it bypasses identity policies; in Nuage the
//! caller gives it an allow-everything identity policy if it wants that. The decision names the
//! statements it rests on, for audit logs. This module does no parsing and no I/O.

use std::fmt;

use crate::context::RequestContext;
use crate::document::{Effect, Policy, PrincipalCheck, Statement};
use crate::principal::{PrincipalKind, PrincipalMatch};

/// Which of `evaluate`'s inputs a statement came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    Identity,
    Resource,
    Session,
}

/// One statement a decision rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRef {
    /// The name the policy was parsed with.
    pub policy: String,
    pub source: PolicySource,
    /// The statement's position in the policy's `Statement` list.
    pub index: usize,
    pub sid: Option<String>,
}

impl StatementRef {
    fn new(policy: &Policy, source: PolicySource, statement: &Statement) -> Self {
        Self {
            policy: policy.name().to_owned(),
            source,
            index: statement.index(),
            sid: statement.sid().map(str::to_owned),
        }
    }
}

impl fmt::Display for StatementRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Statement[{}]", self.policy, self.index)?;
        if let Some(sid) = &self.sid {
            write!(f, " (Sid \"{sid}\")")?;
        }
        Ok(())
    }
}

/// Whether a deny came from a `Deny` statement or from the absence of an `Allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    Explicit,
    Implicit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny(DenyKind),
}

/// Why the decision came out as it did, for audit logs and for explaining an `AccessDenied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A `Deny` statement applied.
    ExplicitDeny,
    /// An identity policy allowed (and session policies, if any, too).
    IdentityPolicyAllows,
    /// The resource policy allowed the caller by itself (and session policies, if any, too).
    ResourcePolicyAllows,
    /// Cross-account: both the caller's identity policy and the resource policy allowed.
    IdentityAndResourcePoliciesAllow,
    /// No statement allowed the request.
    NoPolicyAllows,
    /// Cross-account: the resource policy allowed but none of the caller's identity policies did.
    CrossAccountIdentityPolicyDoesNotAllow,
    /// Cross-account: an identity policy allowed but the resource policy did not.
    CrossAccountResourcePolicyDoesNotAllow,
    /// Other policies allowed but the session's policies did not.
    SessionPolicyDoesNotAllow,
}

/// The answer to one request, with the statements it rests on (for an explicit deny, the `Deny`
/// statement; for an allow, every `Allow` statement that was needed; for an implicit deny, none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reason: Reason,
    pub statements: Vec<StatementRef>,
}

impl Decision {
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }

    fn allow(reason: Reason, statements: Vec<StatementRef>) -> Self {
        Self {
            outcome: Outcome::Allow,
            reason,
            statements,
        }
    }

    fn implicit_deny(reason: Reason) -> Self {
        Self {
            outcome: Outcome::Deny(DenyKind::Implicit),
            reason,
            statements: Vec::new(),
        }
    }
}

/// Decides whether `ctx` is allowed, given the caller's identity policies (user, groups, role),
/// the resource's policy (a bucket policy, a role's trust policy), the session's policies (empty
/// when the session has none) and whether the caller's account owns the resource.
#[must_use]
pub fn evaluate(
    ctx: &RequestContext,
    identity_policies: &[&Policy],
    resource_policy: Option<&Policy>,
    session_policies: &[&Policy],
    same_account: bool,
) -> Decision {
    let resource_alone = matches!(
        ctx.principal().kind(),
        PrincipalKind::Anonymous | PrincipalKind::Service
    );
    // Anonymous and service callers have no identity or session policies of their own; ignore
    // any a confused caller passed rather than let them grant.
    let (identity_policies, session_policies) = if resource_alone {
        (&[][..], &[][..])
    } else {
        (identity_policies, session_policies)
    };

    let sources = identity_policies
        .iter()
        .map(|policy| (*policy, PolicySource::Identity))
        .chain(resource_policy.map(|policy| (policy, PolicySource::Resource)))
        .chain(
            session_policies
                .iter()
                .map(|policy| (*policy, PolicySource::Session)),
        );
    for (policy, source) in sources {
        if let Some((statement, _)) = applicable(ctx, policy, source, Effect::Deny).next() {
            return Decision {
                outcome: Outcome::Deny(DenyKind::Explicit),
                reason: Reason::ExplicitDeny,
                statements: vec![StatementRef::new(policy, source, statement)],
            };
        }
    }

    let identity_allow = first_allow(ctx, identity_policies, PolicySource::Identity);
    let session_allow = first_allow(ctx, session_policies, PolicySource::Session);
    // The strongest naming of the caller wins; among equals, the first statement.
    let resource_allow = resource_policy.and_then(|policy| {
        applicable(ctx, policy, PolicySource::Resource, Effect::Allow)
            .filter_map(|(statement, check)| match check {
                PrincipalCheck::Named(strength) => Some((statement, strength)),
                PrincipalCheck::NoElement | PrincipalCheck::NotNamed => None,
            })
            .rev()
            .max_by_key(|(_, strength)| *strength)
            .map(|(statement, strength)| {
                (
                    StatementRef::new(policy, PolicySource::Resource, statement),
                    strength,
                )
            })
    });

    let session_ok = session_policies.is_empty() || session_allow.is_some();
    let with_session = |mut statements: Vec<StatementRef>| {
        statements.extend(session_allow.clone());
        statements
    };

    if resource_alone {
        return match resource_allow {
            Some((statement, _)) => Decision::allow(Reason::ResourcePolicyAllows, vec![statement]),
            None => Decision::implicit_deny(Reason::NoPolicyAllows),
        };
    }

    if !same_account {
        return match (identity_allow, resource_allow) {
            (Some(identity), Some((resource, _))) if session_ok => Decision::allow(
                Reason::IdentityAndResourcePoliciesAllow,
                with_session(vec![identity, resource]),
            ),
            (Some(_), Some(_)) => Decision::implicit_deny(Reason::SessionPolicyDoesNotAllow),
            (Some(_), None) => {
                Decision::implicit_deny(Reason::CrossAccountResourcePolicyDoesNotAllow)
            }
            (None, Some(_)) => {
                Decision::implicit_deny(Reason::CrossAccountIdentityPolicyDoesNotAllow)
            }
            (None, None) => Decision::implicit_deny(Reason::NoPolicyAllows),
        };
    }

    if let Some(identity) = &identity_allow
        && session_ok
    {
        return Decision::allow(
            Reason::IdentityPolicyAllows,
            with_session(vec![identity.clone()]),
        );
    }
    // An account-only naming delegates to the account: it grants nothing by itself.
    let resource_grant =
        resource_allow.filter(|(_, strength)| *strength >= PrincipalMatch::Everyone);
    if let Some((resource, strength)) = resource_grant {
        if strength == PrincipalMatch::Session {
            return Decision::allow(Reason::ResourcePolicyAllows, vec![resource]);
        }
        if session_ok {
            return Decision::allow(Reason::ResourcePolicyAllows, with_session(vec![resource]));
        }
        return Decision::implicit_deny(Reason::SessionPolicyDoesNotAllow);
    }
    if identity_allow.is_some() {
        return Decision::implicit_deny(Reason::SessionPolicyDoesNotAllow);
    }
    Decision::implicit_deny(Reason::NoPolicyAllows)
}

/// The statements of `policy` with `effect` that apply to `ctx`, in order. Identity and session
/// policies contribute only statements without a principal element, resource policies only
/// statements that name the caller, so a policy passed in the wrong place cannot grant.
fn applicable<'a>(
    ctx: &'a RequestContext,
    policy: &'a Policy,
    source: PolicySource,
    effect: Effect,
) -> impl DoubleEndedIterator<Item = (&'a Statement, PrincipalCheck)> + 'a {
    policy
        .statements()
        .iter()
        .filter(move |statement| statement.effect() == effect)
        .filter_map(move |statement| {
            let check = statement.principal_check(ctx.principal());
            let applies = match source {
                PolicySource::Identity | PolicySource::Session => {
                    check == PrincipalCheck::NoElement
                }
                PolicySource::Resource => matches!(check, PrincipalCheck::Named(_)),
            };
            (applies && statement.matches_request(ctx)).then_some((statement, check))
        })
}

fn first_allow(
    ctx: &RequestContext,
    policies: &[&Policy],
    source: PolicySource,
) -> Option<StatementRef> {
    policies.iter().find_map(|policy| {
        applicable(ctx, policy, source, Effect::Allow)
            .next()
            .map(|(statement, _)| StatementRef::new(policy, source, statement))
    })
}
