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

pub(crate) fn decide(
    caller: Option<&Identity>,
    request: &AccessRequest,
    resource_owner: Option<&str>,
    resource_policy: Option<&str>,
    restrict_public: bool,
    identity_policies: &[(String, String)],
    now_unix_s: i64,
) -> IamResult<Decision> {
    let principal = caller.map_or_else(Principal::anonymous, principal_of);
    let mut ctx = RequestContext::new(request.action.clone(), request.resource.clone(), principal)
        .with_current_time(now_unix_s);
    for (key, values) in &request.context {
        ctx = ctx.with_values(key, values.iter().cloned());
    }
    // Stored documents were validated when written; one that no longer
    // parses means corruption, and skipping it could drop a Deny: refuse.
    let mut parsed = Vec::with_capacity(identity_policies.len());
    for (name, text) in identity_policies {
        let policy = parse(name, text, PolicyKind::Identity)
            .map_err(|e| IamError::Internal(format!("stored policy {name} does not parse: {e}")))?;
        parsed.push(policy);
    }
    let session =
        match caller.and_then(|c| c.session_policy.as_deref()) {
            Some(text) => Some(parse("session-policy", text, PolicyKind::Session).map_err(
                |e| IamError::Internal(format!("stored session policy does not parse: {e}")),
            )?),
            None => None,
        };
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
    let resource =
        match resource_policy {
            Some(text) => Some(parse("resource-policy", text, PolicyKind::Bucket).map_err(
                |e| IamError::Internal(format!("stored resource policy does not parse: {e}")),
            )?),
            None => None,
        };
    let identity_refs: Vec<&Policy> = parsed.iter().collect();
    let session_refs: Vec<&Policy> = session.iter().collect();
    let decision = evaluate(
        &ctx,
        &identity_refs,
        resource.as_ref(),
        &session_refs,
        same_account,
    );
    let statements: Vec<String> = decision
        .statements
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(Decision {
        allowed: decision.is_allowed(),
        reason: format!(
            "{:?} ({:?}) {}",
            decision.outcome,
            decision.reason,
            statements.join(", ")
        ),
    })
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
}
