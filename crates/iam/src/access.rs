//! Operator access approvals (Google Access Approval, Azure Customer Lockbox):
//! the operator has no standing access to a tenant's data; it asks, the
//! tenant answers, and an approval yields one time-boxed session scoped to
//! exactly what was approved.
//!
//! This module owns the request documents (namespace [`ACCESS_REQUESTS`],
//! key = request id, which starts with the tenant id so a tenant's requests
//! are one prefix), their states, and the sessions an approval yields. It
//! never writes the audit log (the binary does, before it acknowledges) and
//! does not know the key access justification codes beyond their spelling
//! (`nuage-kms` owns them; the binary checks the name before calling here).
//!
//! States: `PENDING` until the tenant approves, denies, or
//! [`ACCESS_REQUEST_PENDING_S_MAX`] passes (silence is denial: `EXPIRED`);
//! an approval lasts the requested duration from the moment of approval, then
//! is `EXPIRED`; the tenant may `REVOKED` it before, which ends its sessions
//! at once (every request with such a session re-reads the approval).

use crate::model::{Session, SessionSubject};
use crate::{IamError, IamResult, Identity, Tenant, TenantStatus};
use nuage_base::limits::{
    ACCESS_APPROVAL_DURATION_S_MAX, ACCESS_APPROVAL_DURATION_S_MIN, ACCESS_REQUEST_ACTIONS_MAX,
    ACCESS_REQUEST_ITEM_CHARS_MAX, ACCESS_REQUEST_PENDING_S_MAX, ACCESS_REQUEST_RESOURCES_MAX,
    ACCESS_REQUEST_TEXT_CHARS_MAX, ACCESS_REQUESTS_LIST_MAX,
    ACCESS_REQUESTS_PENDING_PER_TENANT_MAX,
};
use serde::{Deserialize, Serialize};

/// The document namespace of access requests.
pub const ACCESS_REQUESTS: &str = "iam.access-request";
/// The role name in the ARN of an approved operator session
/// (`arn:aws:sts::<tenant>:assumed-role/NuageOperatorAccess/<approval id>`).
/// No role of the tenant is looked up under it: the session's only policy
/// is the approval's.
pub const OPERATOR_ACCESS_ROLE_NAME: &str = "NuageOperatorAccess";
/// The principal's own name in the audit trail and `source_arn` of sessions.
pub const OPERATOR_PRINCIPAL: &str = "nuage:operator";

const NS_PER_S: i64 = 1_000_000_000;

/// Where an access request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessRequestState {
    Pending,
    Approved,
    Denied,
    /// Not answered in time, or an approval whose window ended.
    Expired,
    Revoked,
}

impl AccessRequestState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Approved => "APPROVED",
            Self::Denied => "DENIED",
            Self::Expired => "EXPIRED",
            Self::Revoked => "REVOKED",
        }
    }
}

/// What the operator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOperatorAccessRequest {
    pub tenant: String,
    /// ARNs: `arn:aws:s3:::bucket/prefix*`, `arn:aws:kms:<region>:<tenant>:key/<id>`.
    pub resources: Vec<String>,
    /// `s3:GetObject`, `s3:ListBucket`, `kms:Decrypt`, ...
    pub actions: Vec<String>,
    /// A key access justification's wire name (`CUSTOMER_INITIATED_SUPPORT`).
    pub reason: String,
    /// Free text: the support ticket, what will be done.
    pub reason_text: String,
    pub duration_s: u32,
    /// Who asks (the operator's own name for the person, free text).
    pub requested_by: String,
}

/// An access request and, once answered, its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorAccessRequest {
    /// `<tenant>-<16 hex digits>`: the approval id in the audit log.
    pub id: String,
    pub tenant_id: String,
    pub resources: Vec<String>,
    pub actions: Vec<String>,
    pub reason: String,
    pub reason_text: String,
    pub duration_s: u32,
    pub requested_by: String,
    pub requested_unix_ns: i64,
    /// The state as stored; [`Self::state_at`] adds the expiries.
    pub state: AccessRequestState,
    #[serde(default)]
    pub decided_by: Option<String>,
    #[serde(default)]
    pub decided_unix_ns: Option<i64>,
    /// For an approval: when it (and every session it yielded) ends.
    #[serde(default)]
    pub expires_unix_ns: Option<i64>,
    #[serde(default)]
    pub revoked_by: Option<String>,
    #[serde(default)]
    pub revoked_unix_ns: Option<i64>,
}

impl OperatorAccessRequest {
    /// The state at `now_unix_ns`: a pending request or an approval past its
    /// time is `Expired` whatever the document says.
    #[must_use]
    pub fn state_at(&self, now_unix_ns: i64) -> AccessRequestState {
        match self.state {
            AccessRequestState::Pending
                if now_unix_ns
                    >= self.requested_unix_ns
                        + i64::from(ACCESS_REQUEST_PENDING_S_MAX) * NS_PER_S =>
            {
                AccessRequestState::Expired
            }
            AccessRequestState::Approved
                if self.expires_unix_ns.is_none_or(|end| now_unix_ns >= end) =>
            {
                AccessRequestState::Expired
            }
            state => state,
        }
    }

    /// The only policy of the approval's sessions: exactly the approved
    /// actions on exactly the approved resources. KMS actions hold only
    /// through S3 (`kms:ViaService`): the operator reads SSE-KMS objects it
    /// was approved to read, but cannot call the KMS API with the keys, where
    /// each use would name the customer as the reason.
    ///
    /// Listing a bucket is an action on the bucket's ARN, which an approved
    /// prefix (`arn:aws:s3:::bucket/case-42/*`) does not match: the approved
    /// listing actions hold on that bucket only for listings whose `prefix`
    /// lies within an approved prefix ([`listing_statements`]), never for the
    /// whole bucket. Approving the bucket's own ARN approves listing all of it.
    #[must_use]
    pub fn policy(&self) -> String {
        let of = |prefix: &str, items: &[String]| -> Vec<String> {
            items
                .iter()
                .filter(|i| i.starts_with(prefix))
                .cloned()
                .collect()
        };
        let mut statements = Vec::new();
        let s3_actions = of("s3:", &self.actions);
        if !s3_actions.is_empty() {
            let s3_resources = of("arn:aws:s3:::", &self.resources);
            statements.push(serde_json::json!({
                "Sid": "AccessApprovalS3",
                "Effect": "Allow",
                "Action": s3_actions,
                "Resource": s3_resources,
            }));
            statements.extend(listing_statements(&s3_actions, &s3_resources));
        }
        let kms_actions = of("kms:", &self.actions);
        if !kms_actions.is_empty() {
            statements.push(serde_json::json!({
                "Sid": "AccessApprovalKmsViaS3",
                "Effect": "Allow",
                "Action": kms_actions,
                "Resource": of("arn:aws:kms:", &self.resources),
                "Condition": {"StringLike": {"kms:ViaService": "s3.*"}},
            }));
        }
        serde_json::json!({"Version": "2012-10-17", "Statement": statements}).to_string()
    }
}

/// The S3 actions that list a bucket's keys (ListObjects and
/// ListObjectsV2, ListObjectVersions, ListMultipartUploads), each on the
/// bucket's ARN and narrowed by the listing's `prefix` (`s3:prefix`).
const LISTING_ACTIONS: [&str; 3] = [
    "s3:ListBucket",
    "s3:ListBucketVersions",
    "s3:ListBucketMultipartUploads",
];

/// The statements that let an approval of object prefixes list exactly those
/// prefixes: for each approved `arn:aws:s3:::BUCKET/PATTERN` whose pattern
/// ends with `*`, the approved listing actions on `arn:aws:s3:::BUCKET` when
/// the listing's `prefix` matches `PATTERN` (`StringLike`; a listing without
/// a prefix has none, and is refused). A prefix matching `PATTERN` only lists
/// keys that match it too, since the pattern ends with `*`. A pattern that
/// does not end with `*` (one object) yields no listing: a prefix equal to
/// the object's key would also list the keys that extend it. A pattern of
/// `*` alone is every key: the whole bucket is listed, prefix or not.
/// One statement per bucket (the session policy is small: 2 KiB).
fn listing_statements(actions: &[String], resources: &[String]) -> Vec<serde_json::Value> {
    let listing: Vec<&str> = LISTING_ACTIONS
        .into_iter()
        .filter(|listing| actions.iter().any(|a| action_matches(a, listing)))
        .collect();
    if listing.is_empty() {
        return Vec::new();
    }
    // (bucket part, the prefix patterns approved in it; none = all of it)
    let mut buckets: Vec<(&str, Option<Vec<&str>>)> = Vec::new();
    for resource in resources {
        let Some((bucket, pattern)) = resource
            .strip_prefix("arn:aws:s3:::")
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        if !pattern.ends_with('*') {
            continue;
        }
        let whole = pattern.bytes().all(|b| b == b'*');
        let at = match buckets.iter().position(|(b, _)| *b == bucket) {
            Some(at) => at,
            None => {
                buckets.push((bucket, Some(Vec::new())));
                buckets.len() - 1
            }
        };
        match (&mut buckets[at].1, whole) {
            (patterns, true) => *patterns = None,
            (Some(patterns), false) => patterns.push(pattern),
            (None, false) => {}
        }
    }
    buckets
        .into_iter()
        .enumerate()
        .map(|(i, (bucket, patterns))| {
            let mut statement = serde_json::json!({
                "Sid": format!("AccessApprovalS3List{}", i + 1),
                "Effect": "Allow",
                "Action": listing,
                "Resource": format!("arn:aws:s3:::{bucket}"),
            });
            if let Some(patterns) = patterns {
                statement["Condition"] = serde_json::json!({"StringLike": {"s3:prefix": patterns}});
            }
            statement
        })
        .collect()
}

/// Whether an approved action (`s3:List*`, `s3:*`, `s3:ListBucket`) names
/// `action`: IAM's case-insensitive match, `*` any run and `?` one character.
fn action_matches(pattern: &str, action: &str) -> bool {
    let pattern: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let text: Vec<char> = action.to_ascii_lowercase().chars().collect();
    // Iterative glob with one backtrack point: O(pattern × text), both short
    // (`ACCESS_REQUEST_ITEM_CHARS_MAX`).
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// The tenant's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessVerdict {
    Approve,
    Deny,
    Revoke,
}

impl AccessVerdict {
    /// The IAM action a tenant principal needs to give this answer.
    #[must_use]
    pub fn action(self) -> &'static str {
        match self {
            Self::Approve => "nuage:ApproveAccessRequest",
            Self::Deny => "nuage:DenyAccessRequest",
            Self::Revoke => "nuage:RevokeAccessRequest",
        }
    }
}

/// What an identity acting under an approval carries, for authorization
/// (its only policy), for the key service (the reason) and for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedAccess {
    /// The approval id (the request's id).
    pub id: String,
    /// The key access justification's wire name.
    pub reason: String,
    /// The operator's free text.
    pub reason_text: String,
}

/// The ARN of an access request, the resource of the tenant's decisions.
#[must_use]
pub fn access_request_arn(tenant: &str, id: &str) -> String {
    format!("arn:nuage:access::{tenant}:request/{id}")
}

fn check_text(what: &str, text: &str, max: usize) -> IamResult<()> {
    if text.chars().count() > max || text.chars().any(char::is_control) {
        return Err(IamError::InvalidInput(format!(
            "{what} must be at most {max} characters, without control characters"
        )));
    }
    Ok(())
}

/// Whether an ARN names something an operator may be granted: S3 buckets
/// and objects (bucket names are global), or one of the tenant's KMS keys.
fn grantable_resource(tenant: &str, arn: &str) -> bool {
    if let Some(rest) = arn.strip_prefix("arn:aws:s3:::") {
        // Not the whole of S3: the ARN starts with a bucket name.
        return !rest.is_empty() && !rest.starts_with('*') && !rest.starts_with('/');
    }
    if let Some(rest) = arn.strip_prefix("arn:aws:kms:") {
        let mut fields = rest.splitn(3, ':');
        let (_region, account, key) = (fields.next(), fields.next(), fields.next());
        return account == Some(tenant) && key.is_some_and(|k| k.starts_with("key/"));
    }
    false
}

impl crate::Iam {
    /// Checks an operator's request and gives it an id, without storing it:
    /// the binary logs it in the tenant's audit log first, then calls
    /// [`Self::store_access_request`].
    ///
    /// # Errors
    /// `NoSuchEntity` for an unknown tenant, `InvalidInput` for a bad field,
    /// `LimitExceeded` when the tenant already has too many waiting.
    pub async fn prepare_access_request(
        &self,
        new: NewOperatorAccessRequest,
    ) -> IamResult<OperatorAccessRequest> {
        let tenant: Tenant = self.tenant(&new.tenant).await?;
        if tenant.status != TenantStatus::Active {
            return Err(IamError::TenantSuspended);
        }
        if !(ACCESS_APPROVAL_DURATION_S_MIN..=ACCESS_APPROVAL_DURATION_S_MAX)
            .contains(&new.duration_s)
        {
            return Err(IamError::InvalidInput(format!(
                "the duration must be between {ACCESS_APPROVAL_DURATION_S_MIN} and {ACCESS_APPROVAL_DURATION_S_MAX} seconds"
            )));
        }
        if new.resources.is_empty() || new.resources.len() > ACCESS_REQUEST_RESOURCES_MAX {
            return Err(IamError::InvalidInput(format!(
                "name 1 to {ACCESS_REQUEST_RESOURCES_MAX} resources"
            )));
        }
        if new.actions.is_empty() || new.actions.len() > ACCESS_REQUEST_ACTIONS_MAX {
            return Err(IamError::InvalidInput(format!(
                "name 1 to {ACCESS_REQUEST_ACTIONS_MAX} actions"
            )));
        }
        for resource in &new.resources {
            check_text("a resource", resource, ACCESS_REQUEST_ITEM_CHARS_MAX)?;
            if !grantable_resource(&tenant.id, resource) {
                return Err(IamError::InvalidInput(format!(
                    "resource {resource:?} is neither an S3 bucket or object ARN (arn:aws:s3:::bucket/prefix*) nor a KMS key ARN of the tenant"
                )));
            }
        }
        for action in &new.actions {
            check_text("an action", action, ACCESS_REQUEST_ITEM_CHARS_MAX)?;
            // Data access only: never IAM, STS, the audit log or approvals.
            let service_ok = action
                .strip_prefix("s3:")
                .or_else(|| action.strip_prefix("kms:"))
                .is_some_and(|name| !name.is_empty());
            if !service_ok {
                return Err(IamError::InvalidInput(format!(
                    "action {action:?} is not an s3: or kms: action"
                )));
            }
        }
        // Each kind of action needs a resource of its kind, and each resource
        // an action: nothing is approved that the policy would drop.
        for (action_prefix, resource_prefix, what) in [
            ("s3:", "arn:aws:s3:::", "S3"),
            ("kms:", "arn:aws:kms:", "KMS"),
        ] {
            let actions = new.actions.iter().any(|a| a.starts_with(action_prefix));
            let resources = new.resources.iter().any(|r| r.starts_with(resource_prefix));
            if actions != resources {
                return Err(IamError::InvalidInput(format!(
                    "{what} actions and {what} resources go together: name both or neither"
                )));
            }
        }
        check_text(
            "the justification text",
            &new.reason_text,
            ACCESS_REQUEST_TEXT_CHARS_MAX,
        )?;
        check_text(
            "the requester",
            &new.requested_by,
            ACCESS_REQUEST_TEXT_CHARS_MAX,
        )?;
        let now = self.now_ns();
        let pending = self
            .list_access_requests(&tenant.id)
            .await?
            .iter()
            .filter(|r| r.state_at(now) == AccessRequestState::Pending)
            .count();
        if pending >= ACCESS_REQUESTS_PENDING_PER_TENANT_MAX {
            return Err(IamError::LimitExceeded(format!(
                "the tenant already has {pending} access requests waiting for an answer"
            )));
        }
        let request = OperatorAccessRequest {
            id: format!("{}-{}", tenant.id, &nuage_base::ids::random_id()[..16]),
            tenant_id: tenant.id,
            resources: new.resources,
            actions: new.actions,
            reason: new.reason,
            reason_text: new.reason_text,
            duration_s: new.duration_s,
            requested_by: new.requested_by,
            requested_unix_ns: now,
            state: AccessRequestState::Pending,
            decided_by: None,
            decided_unix_ns: None,
            expires_unix_ns: None,
            revoked_by: None,
            revoked_unix_ns: None,
        };
        // The policy its sessions will carry must be valid now, not at approval.
        crate::check_policy_document(&request.policy(), crate::PolicyKind::Session)?;
        Ok(request)
    }

    /// Stores a request [`Self::prepare_access_request`] made.
    ///
    /// # Errors
    /// Backend failure; `Internal` on an id collision.
    pub async fn store_access_request(&self, request: &OperatorAccessRequest) -> IamResult<()> {
        self.create_document(ACCESS_REQUESTS, &request.id, request)
            .await
    }

    /// One request, with its state as of now.
    ///
    /// # Errors
    /// `NoSuchEntity`.
    pub async fn access_request(&self, id: &str) -> IamResult<OperatorAccessRequest> {
        let Some((mut request, _)) = self
            .load_document::<OperatorAccessRequest>(ACCESS_REQUESTS, id)
            .await?
        else {
            return Err(IamError::NoSuchEntity(format!("no access request {id:?}")));
        };
        request.state = request.state_at(self.now_ns());
        Ok(request)
    }

    /// A tenant's requests, newest first, with their states as of now.
    ///
    /// # Errors
    /// Backend failure.
    pub async fn list_access_requests(
        &self,
        tenant_id: &str,
    ) -> IamResult<Vec<OperatorAccessRequest>> {
        let now = self.now_ns();
        let mut out: Vec<OperatorAccessRequest> = self
            .scan_documents::<OperatorAccessRequest>(ACCESS_REQUESTS, &format!("{tenant_id}-"))
            .await?
            .into_iter()
            .map(|(mut r, _)| {
                r.state = r.state_at(now);
                r
            })
            .filter(|r| r.tenant_id == tenant_id)
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.requested_unix_ns));
        out.truncate(ACCESS_REQUESTS_LIST_MAX);
        Ok(out)
    }

    /// The tenant's answer to one of its requests. Approve and deny answer a
    /// pending request; revoke ends an approval early.
    ///
    /// # Errors
    /// `NoSuchEntity` (also for another tenant's request), `InvalidInput`
    /// when the request is not in a state the verdict applies to.
    pub async fn decide_access_request(
        &self,
        tenant_id: &str,
        id: &str,
        verdict: AccessVerdict,
        by_arn: &str,
    ) -> IamResult<OperatorAccessRequest> {
        self.retrying_update(|| async {
            let Some((mut request, revision)) = self
                .load_document::<OperatorAccessRequest>(ACCESS_REQUESTS, id)
                .await?
            else {
                return Err(IamError::NoSuchEntity(format!("no access request {id:?}")).into());
            };
            if request.tenant_id != tenant_id {
                // Another tenant's request does not exist for this one.
                return Err(IamError::NoSuchEntity(format!("no access request {id:?}")).into());
            }
            let now = self.now_ns();
            let state = request.state_at(now);
            match (verdict, state) {
                (AccessVerdict::Approve, AccessRequestState::Pending) => {
                    request.state = AccessRequestState::Approved;
                    request.decided_by = Some(by_arn.to_owned());
                    request.decided_unix_ns = Some(now);
                    request.expires_unix_ns = Some(now + i64::from(request.duration_s) * NS_PER_S);
                }
                (AccessVerdict::Deny, AccessRequestState::Pending) => {
                    request.state = AccessRequestState::Denied;
                    request.decided_by = Some(by_arn.to_owned());
                    request.decided_unix_ns = Some(now);
                }
                (AccessVerdict::Revoke, AccessRequestState::Approved) => {
                    request.state = AccessRequestState::Revoked;
                    request.revoked_by = Some(by_arn.to_owned());
                    request.revoked_unix_ns = Some(now);
                }
                (verdict, state) => {
                    let wanted = if verdict == AccessVerdict::Revoke {
                        "APPROVED"
                    } else {
                        "PENDING"
                    };
                    return Err(IamError::InvalidInput(format!(
                        "access request {id} is {}, not {wanted}",
                        state.as_str()
                    ))
                    .into());
                }
            }
            self.replace_document(ACCESS_REQUESTS, id, revision, &request)
                .await?;
            Ok(request)
        })
        .await
    }

    /// Time-boxed credentials for an approved request: a session of the
    /// tenant that ends with the approval, whose only policy is the
    /// approval's.
    ///
    /// # Errors
    /// `NoSuchEntity`, `AccessDenied` when the request is not approved (or
    /// no longer).
    pub async fn issue_access_session(
        &self,
        id: &str,
    ) -> IamResult<(OperatorAccessRequest, Session)> {
        let request = self.access_request(id).await?;
        if request.state != AccessRequestState::Approved {
            return Err(IamError::AccessDenied(format!(
                "access request {id} is {}: only an approved request yields credentials",
                request.state.as_str()
            )));
        }
        let expires = request.expires_unix_ns.ok_or_else(|| {
            IamError::Internal(format!("approved access request {id} has no end"))
        })?;
        let session = self
            .store_session(
                &request.tenant_id,
                SessionSubject::Operator {
                    approval_id: request.id.clone(),
                },
                expires,
                Some(request.policy()),
                OPERATOR_PRINCIPAL,
            )
            .await?;
        Ok((request, session))
    }

    /// The identity an approved operator session proves, or why not: the
    /// approval is re-read on every request, so a revocation or the end of
    /// the window ends the session at once.
    pub(crate) async fn operator_identity(
        &self,
        session: Session,
        approval_id: &str,
    ) -> IamResult<Option<Identity>> {
        let Some((request, _)) = self
            .load_document::<OperatorAccessRequest>(ACCESS_REQUESTS, approval_id)
            .await?
        else {
            return Ok(None);
        };
        if request.tenant_id != session.tenant_id {
            return Ok(None);
        }
        if request.state_at(self.now_ns()) != AccessRequestState::Approved {
            // Revoked or past its window: the session's token no longer holds.
            return Err(IamError::ExpiredToken);
        }
        Ok(Some(Identity {
            arn: format!(
                "arn:aws:sts::{}:assumed-role/{OPERATOR_ACCESS_ROLE_NAME}/{}",
                session.tenant_id, request.id
            ),
            principal_id: format!("{OPERATOR_ACCESS_ROLE_NAME}:{}", request.id),
            kind: crate::PrincipalKind::AssumedRole {
                role_name: OPERATOR_ACCESS_ROLE_NAME.to_owned(),
                session_name: request.id.clone(),
            },
            tenant_id: session.tenant_id,
            tags: Vec::new(),
            access_key_id: session.access_key_id,
            secret_access_key: session.secret_access_key,
            session_token: Some(session.session_token),
            expires_unix_ns: Some(session.expires_unix_ns),
            session_policy: Some(request.policy()),
            key_last_used: None,
            approval: Some(ApprovedAccess {
                id: request.id,
                reason: request.reason,
                reason_text: request.reason_text,
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccessRequest, Iam};
    use nuage_meta::embedded::EmbeddedMetaStore;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    /// A clock the test moves by hand.
    struct TestClock(AtomicI64);

    impl nuage_base::Clock for TestClock {
        fn now_unix_ns(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn read(key: &str) -> AccessRequest {
        AccessRequest {
            action: "s3:GetObject".into(),
            resource: format!("arn:aws:s3:::{key}"),
            context: Default::default(),
        }
    }

    #[tokio::test]
    async fn an_approval_yields_a_scoped_session_that_ends_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap();
        let clock = Arc::new(TestClock(AtomicI64::new(1_000 * NS_PER_S)));
        let iam = Iam::new(Arc::new(store), clock.clone());
        let t = iam.create_tenant("culture", "FR", "").await.unwrap();
        let new = |duration_s| NewOperatorAccessRequest {
            tenant: "culture".into(),
            resources: vec!["arn:aws:s3:::archives/case-1/*".into()],
            actions: vec!["s3:GetObject".into()],
            reason: "CUSTOMER_INITIATED_SUPPORT".into(),
            reason_text: "ticket 1".into(),
            duration_s,
            requested_by: "ops".into(),
        };
        assert!(matches!(
            iam.prepare_access_request(new(ACCESS_APPROVAL_DURATION_S_MAX + 1))
                .await,
            Err(IamError::InvalidInput(_))
        ));
        let request = iam.prepare_access_request(new(3600)).await.unwrap();
        // Prepared is not stored: the binary logs it first.
        assert!(iam.access_request(&request.id).await.is_err());
        iam.store_access_request(&request).await.unwrap();
        assert!(matches!(
            iam.issue_access_session(&request.id).await,
            Err(IamError::AccessDenied(_))
        ));
        // Another tenant cannot answer it.
        assert!(matches!(
            iam.decide_access_request("000000000000", &request.id, AccessVerdict::Approve, "x")
                .await,
            Err(IamError::NoSuchEntity(_))
        ));
        iam.decide_access_request(&t.id, &request.id, AccessVerdict::Approve, "admin")
            .await
            .unwrap();
        let (_, session) = iam.issue_access_session(&request.id).await.unwrap();
        let who = iam.resolve(&session.access_key_id).await.unwrap().unwrap();
        assert_eq!(
            who.approval.as_ref().map(|a| a.id.as_str()),
            Some(request.id.as_str())
        );
        let allowed = |key: &'static str| {
            let iam = iam.clone();
            let who = who.clone();
            let tenant = t.id.clone();
            async move {
                iam.authorize(Some(&who), &read(key), Some(&tenant), None, false)
                    .await
                    .unwrap()
                    .allowed
            }
        };
        assert!(allowed("archives/case-1/report").await);
        assert!(!allowed("archives/case-2/report").await);
        assert!(!allowed("other/case-1/report").await);
        // A bucket policy of the tenant granting everything adds nothing.
        let open = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*"}]}"#;
        assert!(
            !iam.authorize(
                Some(&who),
                &read("archives/x"),
                Some(&t.id),
                Some(open),
                false
            )
            .await
            .unwrap()
            .allowed
        );
        // The window ends: the session with it.
        clock.0.fetch_add(3600 * NS_PER_S, Ordering::SeqCst);
        assert!(matches!(
            iam.resolve(&session.access_key_id).await,
            Err(IamError::ExpiredToken)
        ));
        assert_eq!(
            iam.access_request(&request.id).await.unwrap().state,
            AccessRequestState::Expired
        );
        // Silence is denial: a pending request expires too.
        let waiting = iam.prepare_access_request(new(900)).await.unwrap();
        iam.store_access_request(&waiting).await.unwrap();
        clock.0.fetch_add(
            i64::from(ACCESS_REQUEST_PENDING_S_MAX) * NS_PER_S,
            Ordering::SeqCst,
        );
        assert!(matches!(
            iam.decide_access_request(&t.id, &waiting.id, AccessVerdict::Approve, "admin")
                .await,
            Err(IamError::InvalidInput(_))
        ));
    }

    #[tokio::test]
    async fn an_approved_prefix_lists_within_it_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap();
        let clock = Arc::new(TestClock(AtomicI64::new(1_000 * NS_PER_S)));
        let iam = Iam::new(Arc::new(store), clock);
        let t = iam.create_tenant("culture", "FR", "").await.unwrap();
        let session = |resources: &[&str], actions: &[&str]| {
            let iam = iam.clone();
            let tenant = t.id.clone();
            let new = NewOperatorAccessRequest {
                tenant: "culture".into(),
                resources: resources.iter().map(|r| (*r).to_owned()).collect(),
                actions: actions.iter().map(|a| (*a).to_owned()).collect(),
                reason: "CUSTOMER_INITIATED_SUPPORT".into(),
                reason_text: "ticket 2".into(),
                duration_s: 3600,
                requested_by: "ops".into(),
            };
            async move {
                let request = iam.prepare_access_request(new).await.unwrap();
                iam.store_access_request(&request).await.unwrap();
                iam.decide_access_request(&tenant, &request.id, AccessVerdict::Approve, "a")
                    .await
                    .unwrap();
                let (_, session) = iam.issue_access_session(&request.id).await.unwrap();
                iam.resolve(&session.access_key_id).await.unwrap().unwrap()
            }
        };
        let decide = |who: &Identity, action: &str, bucket: &str, prefix: Option<&str>| {
            let iam = iam.clone();
            let who = who.clone();
            let tenant = t.id.clone();
            let mut context = std::collections::BTreeMap::new();
            if let Some(prefix) = prefix {
                context.insert("s3:prefix".to_owned(), vec![prefix.to_owned()]);
            }
            let request = AccessRequest {
                action: action.to_owned(),
                resource: format!("arn:aws:s3:::{bucket}"),
                context,
            };
            async move {
                iam.authorize(Some(&who), &request, Some(&tenant), None, false)
                    .await
                    .unwrap()
            }
        };
        let who = session(
            &[
                "arn:aws:s3:::archives/case-1/*",
                "arn:aws:s3:::archives/case-3/*",
                "arn:aws:s3:::archives/one-object.pdf",
            ],
            &["s3:GetObject", "s3:List*"],
        )
        .await;
        for (action, prefix, allowed) in [
            ("s3:ListBucket", Some("case-1/"), true),
            ("s3:ListBucket", Some("case-1/2026/"), true),
            ("s3:ListBucketVersions", Some("case-3/"), true),
            ("s3:ListBucketMultipartUploads", Some("case-3/x"), true),
            ("s3:ListBucket", Some("case-2/"), false),
            // `case-1` also lists `case-10/...`.
            ("s3:ListBucket", Some("case-1"), false),
            ("s3:ListBucket", Some(""), false),
            ("s3:ListBucket", None, false),
            ("s3:ListBucket", Some("one-object.pdf"), false),
        ] {
            let decision = decide(&who, action, "archives", prefix).await;
            assert_eq!(
                decision.allowed, allowed,
                "{action} {prefix:?}: {decision:?}"
            );
            if allowed {
                assert_eq!(decision.statement.as_deref(), Some("AccessApprovalS3List1"));
            }
        }
        assert!(
            !decide(&who, "s3:ListBucket", "other", Some("case-1/"))
                .await
                .allowed
        );
        // `s3:*` on a prefix: only the listing actions hold on the bucket,
        // whatever `prefix` another bucket action carries.
        let everything = session(&["arn:aws:s3:::archives/case-1/*"], &["s3:*"]).await;
        assert!(
            decide(&everything, "s3:ListBucket", "archives", Some("case-1/"))
                .await
                .allowed
        );
        for action in ["s3:DeleteBucket", "s3:PutBucketPolicy", "s3:GetBucketAcl"] {
            assert!(
                !decide(&everything, action, "archives", Some("case-1/"))
                    .await
                    .allowed,
                "{action}"
            );
        }
        // All of a bucket's keys, or the bucket itself: every listing.
        for resource in ["arn:aws:s3:::archives/*", "arn:aws:s3:::archives"] {
            let whole = session(&[resource], &["s3:ListBucket"]).await;
            for prefix in [None, Some(""), Some("case-2/")] {
                assert!(
                    decide(&whole, "s3:ListBucket", "archives", prefix)
                        .await
                        .allowed,
                    "{resource} {prefix:?}"
                );
            }
        }
        // Without a listing action approved, nothing lists.
        let read_only = session(&["arn:aws:s3:::archives/case-1/*"], &["s3:GetObject"]).await;
        assert!(
            !decide(&read_only, "s3:ListBucket", "archives", Some("case-1/"))
                .await
                .allowed
        );
    }

    #[test]
    fn action_patterns_match_as_iam_does() {
        for (pattern, action, matches) in [
            ("s3:ListBucket", "s3:ListBucket", true),
            ("s3:listbucket", "s3:ListBucket", true),
            ("s3:List*", "s3:ListBucketVersions", true),
            ("s3:*", "s3:ListBucket", true),
            ("*", "s3:ListBucket", true),
            ("s3:List?ucket", "s3:ListBucket", true),
            ("s3:*Versions", "s3:ListBucketVersions", true),
            ("s3:*Versions", "s3:ListBucket", false),
            ("s3:ListBucket", "s3:ListBucketVersions", false),
            ("s3:GetObject", "s3:ListBucket", false),
            ("s3:List*s*s", "s3:ListBucketVersions", true),
        ] {
            assert_eq!(
                action_matches(pattern, action),
                matches,
                "{pattern} {action}"
            );
        }
    }

    #[test]
    fn only_data_resources_of_the_tenant_are_grantable() {
        let t = "123456789012";
        assert!(grantable_resource(t, "arn:aws:s3:::logs/2026/*"));
        assert!(grantable_resource(t, "arn:aws:s3:::logs"));
        assert!(grantable_resource(
            t,
            "arn:aws:kms:fr-par:123456789012:key/abc"
        ));
        assert!(!grantable_resource(t, "arn:aws:s3:::*"));
        assert!(!grantable_resource(t, "*"));
        assert!(!grantable_resource(
            t,
            "arn:aws:kms:fr-par:999999999999:key/abc"
        ));
        assert!(!grantable_resource(t, "arn:aws:iam::123456789012:user/a"));
    }
}
