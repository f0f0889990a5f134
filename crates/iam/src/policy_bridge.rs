//! The one place that speaks `nuage-policy`: parsing stored documents and
//! evaluating a request against them.

use crate::authorize::{AccessRequest, Decision, PolicyKind, PolicySummary};
use crate::{IamError, IamResult, Identity};
use nuage_policy::{Policy, Principal, RequestContext, evaluate, limits};

fn engine_kind(kind: PolicyKind) -> (nuage_policy::PolicyKind, usize) {
    match kind {
        PolicyKind::Identity => (
            nuage_policy::PolicyKind::Identity,
            limits::MANAGED_POLICY_BYTES_MAX,
        ),
        PolicyKind::Bucket => (
            nuage_policy::PolicyKind::Resource,
            limits::BUCKET_POLICY_BYTES_MAX,
        ),
        PolicyKind::Trust => (
            nuage_policy::PolicyKind::Trust,
            limits::ROLE_TRUST_POLICY_BYTES_MAX,
        ),
        PolicyKind::Session => (
            nuage_policy::PolicyKind::Session,
            limits::SESSION_POLICY_BYTES_MAX,
        ),
    }
}

fn parse(name: &str, text: &str, kind: PolicyKind) -> Result<Policy, nuage_policy::PolicyError> {
    let (engine, bytes_max) = engine_kind(kind);
    Policy::parse(name, text, engine, bytes_max)
}

/// Whether a resource policy grants anything to everyone, by S3's meaning of
/// "public" (a condition on the caller's account, ARN, source IP or VPC makes
/// it non-public; a condition on anything the caller controls does not).
fn grants_everyone(text: &str) -> bool {
    parse("resource-policy", text, PolicyKind::Bucket).is_ok_and(|p| p.is_public())
}

pub(crate) fn check(text: &str, kind: PolicyKind) -> IamResult<PolicySummary> {
    parse("policy", text, kind).map_err(|e| IamError::MalformedPolicyDocument(e.to_string()))?;
    Ok(PolicySummary {
        is_public: kind == PolicyKind::Bucket && grants_everyone(text),
    })
}

fn principal_of(identity: &Identity) -> Principal {
    let mut principal = Principal::new(identity.arn.clone(), identity.tenant_id.clone())
        .with_user_id(identity.principal_id.clone());
    if let Some(name) = identity.user_name() {
        principal = principal.with_user_name(name);
    }
    for (k, v) in &identity.tags {
        principal = principal.with_tag(k.clone(), v.clone());
    }
    principal
}

/// The request as the policy engine sees it.
fn context(caller: Option<&Identity>, request: &AccessRequest, now_unix_s: i64) -> RequestContext {
    let principal = caller.map_or_else(Principal::anonymous, principal_of);
    let mut ctx = RequestContext::new(request.action.clone(), request.resource.clone(), principal)
        .with_current_time(now_unix_s);
    for (key, values) in &request.context {
        ctx = ctx.with_values(key, values.iter().cloned());
    }
    ctx
}

/// Parses stored documents. They were validated when written; one that no
/// longer parses means corruption, and skipping it could drop a Deny: refuse.
fn parse_stored(name: &str, text: &str, kind: PolicyKind) -> IamResult<Policy> {
    parse(name, text, kind)
        .map_err(|e| IamError::Internal(format!("stored policy {name} does not parse: {e}")))
}

/// The caller's identity and session policies, parsed.
fn caller_policies(
    caller: Option<&Identity>,
    identity_policies: &[(String, String)],
) -> IamResult<(Vec<Policy>, Option<Policy>)> {
    let mut parsed = Vec::with_capacity(identity_policies.len());
    for (name, text) in identity_policies {
        parsed.push(parse_stored(name, text, PolicyKind::Identity)?);
    }
    let session = match caller.and_then(|c| c.session_policy.as_deref()) {
        Some(text) => Some(parse_stored("session-policy", text, PolicyKind::Session)?),
        None => None,
    };
    Ok((parsed, session))
}

fn outcome(decision: &nuage_policy::Decision) -> Decision {
    let statements: Vec<String> = decision
        .statements
        .iter()
        .map(ToString::to_string)
        .collect();
    let first = decision.statements.first();
    Decision {
        policy: first.map(|s| s.policy.clone()),
        statement: first.and_then(|s| s.sid.clone()),
        allowed: decision.is_allowed(),
        reason: format!(
            "{:?} ({:?}) {}",
            decision.outcome,
            decision.reason,
            statements.join(", ")
        ),
    }
}

pub(crate) fn decide(
    caller: Option<&Identity>,
    request: &AccessRequest,
    resource_owner: Option<&str>,
    resource_policy: Option<&str>,
    restrict_public: bool,
    identity_policies: &[(String, String)],
    now_unix_s: i64,
) -> IamResult<Decision> {
    let ctx = context(caller, request, now_unix_s);
    let (identity, session) = caller_policies(caller, identity_policies)?;
    let same_account = match (caller, resource_owner) {
        (Some(c), Some(owner)) => c.tenant_id == owner,
        (Some(_), None) => true,
        (None, _) => false,
    };
    // S3's RestrictPublicBuckets: a public policy grants nothing to anyone
    // outside the owning tenant.
    let resource_policy = match resource_policy {
        Some(text) if restrict_public && !same_account && grants_everyone(text) => None,
        other => other,
    };
    let resource = match resource_policy {
        Some(text) => Some(parse_stored("resource-policy", text, PolicyKind::Bucket)?),
        None => None,
    };
    let identity_refs: Vec<&Policy> = identity.iter().collect();
    let session_refs: Vec<&Policy> = session.iter().collect();
    Ok(outcome(&evaluate(
        &ctx,
        &identity_refs,
        resource.as_ref(),
        &session_refs,
        same_account,
    )))
}

/// Role assumption: the trust policy must admit the caller (see
/// `Iam::authorize_assume_role`).
pub(crate) fn decide_trust(
    caller: &Identity,
    request: &AccessRequest,
    role_tenant: &str,
    trust_policy: &str,
    identity_policies: &[(String, String)],
    now_unix_s: i64,
) -> IamResult<Decision> {
    let ctx = context(Some(caller), request, now_unix_s);
    let (identity, session) = caller_policies(Some(caller), identity_policies)?;
    let trust = parse_stored("trust-policy", trust_policy, PolicyKind::Trust)?;
    let identity_refs: Vec<&Policy> = identity.iter().collect();
    let session_refs: Vec<&Policy> = session.iter().collect();
    let same_tenant = caller.tenant_id == role_tenant;
    // Does the trust policy alone admit the caller (naming its ARN)?
    let named = same_tenant && evaluate(&ctx, &[], Some(&trust), &[], true).is_allowed();
    // Then every policy counts only for its Deny; otherwise (the trust policy
    // delegates to the tenant, or another tenant's role) both sides must allow.
    let decision = evaluate(&ctx, &identity_refs, Some(&trust), &session_refs, named);
    Ok(outcome(&decision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_policies_are_recognised() {
        let public = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#;
        let aws_star = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}}"#;
        let narrowed = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}"#;
        // A condition on what the caller controls does not make it private.
        let agent = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"StringLike":{"aws:UserAgent":"*"}}}]}"#;
        assert!(check(agent, PolicyKind::Bucket).unwrap().is_public);
        let named = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#;
        assert!(check(public, PolicyKind::Bucket).unwrap().is_public);
        assert!(check(aws_star, PolicyKind::Bucket).unwrap().is_public);
        assert!(!check(narrowed, PolicyKind::Bucket).unwrap().is_public);
        assert!(!check(named, PolicyKind::Bucket).unwrap().is_public);
        assert!(matches!(
            check("{\"Statement\":[{}]}", PolicyKind::Bucket),
            Err(IamError::MalformedPolicyDocument(_))
        ));
    }

    fn identity(tenant: &str, user: &str) -> Identity {
        Identity {
            tenant_id: tenant.into(),
            kind: crate::PrincipalKind::User {
                user_name: user.into(),
            },
            arn: format!("arn:aws:iam::{tenant}:user/{user}"),
            principal_id: "AIDAEXAMPLE".into(),
            tags: vec![],
            access_key_id: "K".into(),
            secret_access_key: "S".into(),
            session_token: None,
            expires_unix_ns: None,
            session_policy: None,
            approval: None,
            key_last_used: None,
        }
    }

    fn assume(tenant: &str) -> AccessRequest {
        AccessRequest {
            action: "sts:AssumeRole".into(),
            resource: format!("arn:aws:iam::{tenant}:role/reader"),
            context: std::collections::BTreeMap::new(),
        }
    }

    #[test]
    fn only_the_trust_policy_opens_a_role() {
        let t = "111122223333";
        let admin_policy = vec![("admin".to_owned(), crate::ADMINISTRATOR_POLICY.to_owned())];
        let names_carol = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{t}:user/carol"}},"Action":"sts:AssumeRole"}}]}}"#
        );
        let names_tenant = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{t}:root"}},"Action":"sts:AssumeRole"}}]}}"#
        );
        // Named directly: no identity policy needed.
        assert!(
            decide_trust(&identity(t, "carol"), &assume(t), t, &names_carol, &[], 0)
                .unwrap()
                .allowed
        );
        // An administrator of the tenant is not named: refused despite Action *.
        assert!(
            !decide_trust(
                &identity(t, "admin"),
                &assume(t),
                t,
                &names_carol,
                &admin_policy,
                0
            )
            .unwrap()
            .allowed
        );
        // Naming the tenant delegates: the identity policy must allow too.
        assert!(
            decide_trust(
                &identity(t, "admin"),
                &assume(t),
                t,
                &names_tenant,
                &admin_policy,
                0
            )
            .unwrap()
            .allowed
        );
        assert!(
            !decide_trust(&identity(t, "dave"), &assume(t), t, &names_tenant, &[], 0)
                .unwrap()
                .allowed
        );
        // Another tenant's administrator, even named by account, needs both sides;
        // named nowhere, it is refused.
        assert!(
            !decide_trust(
                &identity("444455556666", "admin"),
                &assume(t),
                t,
                &names_tenant,
                &admin_policy,
                0
            )
            .unwrap()
            .allowed
        );
    }
}
