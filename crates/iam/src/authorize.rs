//! Authorization decisions: the bridge between requests described by the
//! front ends ([`AccessRequest`]) and the policy language (`nuage-policy`).

use crate::{Iam, IamResult, Identity};
use std::collections::BTreeMap;

/// One action on one resource, with the request's condition keys.
#[derive(Debug, Clone, Default)]
pub struct AccessRequest {
    /// `s3:GetObject`, `iam:CreateUser`, `sts:AssumeRole`, ...
    pub action: String,
    /// The resource ARN (`arn:aws:s3:::bucket/key`), or `*`.
    pub resource: String,
    /// Condition keys (`aws:SourceIp`, `s3:prefix`, ...) and their values.
    pub context: BTreeMap<String, Vec<String>>,
}

/// The outcome, with the reason for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Which policy and statement decided, or why nothing allowed.
    pub reason: String,
    /// The name of the policy whose statement decided (the first statement
    /// the decision rests on), for the audit log; `None` for a default deny.
    pub policy: Option<String>,
    /// That statement's `Sid`, when it has one.
    pub statement: Option<String>,
}

/// Which limits and rules a policy document must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Identity policy of a user, group or role (inline or managed).
    Identity,
    /// A bucket policy (names principals).
    Bucket,
    /// A role's trust policy (names principals; actions `sts:*`).
    Trust,
    /// A session policy passed to AssumeRole.
    Session,
}

/// What the front ends need to know about a valid document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySummary {
    /// Grants access to anyone (principal `*` without a narrowing condition).
    pub is_public: bool,
}

/// Validates a policy document.
///
/// # Errors
/// `MalformedPolicyDocument` with a message that points at the problem.
pub fn check_policy_document(text: &str, kind: PolicyKind) -> IamResult<PolicySummary> {
    crate::policy_bridge::check(text, kind)
}

impl Iam {
    /// Decides whether `caller` may assume `role` (`sts:AssumeRole`). As in
    /// AWS, the role's trust policy decides: one naming the caller's ARN
    /// admits it by itself; one naming only the tenant (account) delegates to
    /// the tenant, whose identity policies must then allow too. An identity
    /// policy alone, even `Action: *`, never opens a role whose trust policy
    /// does not name the caller or its tenant. An explicit Deny anywhere wins.
    ///
    /// # Errors
    /// Backend failure, or a stored trust policy that no longer parses.
    pub async fn authorize_assume_role(
        &self,
        caller: &Identity,
        role: &crate::Role,
        request: &AccessRequest,
    ) -> IamResult<Decision> {
        let identity_policies = self.identity_policies(caller).await?;
        crate::policy_bridge::decide_trust(
            caller,
            request,
            &role.tenant_id,
            &role.assume_role_policy,
            &identity_policies,
            self.now_unix_s(),
        )
    }

    /// Decides whether `caller` (None: anonymous) may perform `request` on a
    /// resource owned by tenant `resource_owner` (None: a resource that does
    /// not exist yet, owned by the caller's tenant if created) and governed by
    /// `resource_policy`. With `restrict_public`, a public resource policy
    /// grants nothing to anonymous or other-tenant callers (S3's
    /// RestrictPublicBuckets).
    ///
    /// # Errors
    /// Backend failure while loading the caller's policies.
    pub async fn authorize(
        &self,
        caller: Option<&Identity>,
        request: &AccessRequest,
        resource_owner: Option<&str>,
        resource_policy: Option<&str>,
        restrict_public: bool,
    ) -> IamResult<Decision> {
        let identity_policies = match caller {
            Some(identity) => self.identity_policies(identity).await?,
            None => Vec::new(),
        };
        let decision = crate::policy_bridge::decide(
            caller,
            request,
            resource_owner,
            resource_policy,
            restrict_public,
            &identity_policies,
            self.now_unix_s(),
        )?;
        // An approved operator session gets exactly what was approved: a
        // resource policy (a bucket policy naming the tenant, a key policy)
        // may still refuse, but never grants it more, so the approval's
        // policy alone must allow too.
        if decision.allowed && caller.is_some_and(|c| c.approval.is_some()) {
            let alone = crate::policy_bridge::decide(
                caller,
                request,
                resource_owner,
                None,
                false,
                &identity_policies,
                self.now_unix_s(),
            )?;
            if !alone.allowed {
                return Ok(alone);
            }
        }
        Ok(decision)
    }
}
