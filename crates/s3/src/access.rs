//! Authorization of every S3 request: who is calling (the identity behind the
//! access key, or anonymous), which IAM action on which resource, and whether
//! the caller's policies, the bucket's policy and Block Public Access allow it.
//!
//! The decision itself belongs to the identity service ([`Iam::authorize`]);
//! this module only translates an S3 request into an [`AccessRequest`]:
//! the action name, the resource ARN and the condition keys S3 defines.

use crate::auth::{auth_error, invalid_access_key};
use nuage_audit::{AuditSlot, RequestAudit};
use nuage_iam::{AccessRequest, Decision, Iam, Identity};
use nuage_storage::{BucketRecord, Storage, StorageError};
use s3s::access::{S3Access, S3AccessContext};
use s3s::dto::{CopyObjectInput, CopySource, DeleteObjectsInput, UploadPartCopyInput};
use s3s::path::S3Path;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Result};
use std::collections::BTreeMap;

/// The authenticated caller, left in the request's extensions for handlers
/// (ListBuckets lists the caller's tenant; CreateBucket makes it the owner).
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Identity>);

impl Caller {
    #[must_use]
    pub fn tenant_id(&self) -> Option<&str> {
        self.0.as_ref().map(|i| i.tenant_id.as_str())
    }
}

/// The source address of the connection, put in the extensions by the HTTP layer.
#[derive(Debug, Clone, Copy)]
pub struct SourceAddress(pub std::net::IpAddr);

/// Whether the connection is TLS, put in the extensions by the HTTP layer.
#[derive(Debug, Clone, Copy)]
pub struct SecureTransport(pub bool);

/// The S3 authorizer.
#[derive(Clone)]
pub struct Authorizer {
    iam: Iam,
    storage: Storage,
}

/// The IAM action of an S3 operation (AWS's table "Actions defined by Amazon S3").
fn action_for(op: &str, has_version_id: bool) -> String {
    let action = match op {
        "ListBuckets" => "ListAllMyBuckets",
        "HeadBucket" | "ListObjects" | "ListObjectsV2" => "ListBucket",
        "ListObjectVersions" => "ListBucketVersions",
        "ListMultipartUploads" => "ListBucketMultipartUploads",
        "ListParts" => "ListMultipartUploadParts",
        "GetObject" | "HeadObject" if has_version_id => "GetObjectVersion",
        "GetObject" | "HeadObject" => "GetObject",
        "PutObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => "PutObject",
        "DeleteObject" if has_version_id => "DeleteObjectVersion",
        "DeleteObject" | "DeleteObjects" => "DeleteObject",
        "GetObjectTagging" if has_version_id => "GetObjectVersionTagging",
        "PutObjectTagging" if has_version_id => "PutObjectVersionTagging",
        "DeleteObjectTagging" if has_version_id => "DeleteObjectVersionTagging",
        "DeleteBucketTagging" => "PutBucketTagging",
        "GetBucketCors" => "GetBucketCORS",
        "GetBucketEncryption" => "GetEncryptionConfiguration",
        "PutBucketEncryption" | "DeleteBucketEncryption" => "PutEncryptionConfiguration",
        "PutBucketCors" | "DeleteBucketCors" => "PutBucketCORS",
        "GetPublicAccessBlock" => "GetBucketPublicAccessBlock",
        "PutPublicAccessBlock" | "DeletePublicAccessBlock" => "PutBucketPublicAccessBlock",
        other => other,
    };
    format!("s3:{action}")
}

pub(crate) fn resource_arn(bucket: Option<&str>, key: Option<&str>) -> String {
    match (bucket, key) {
        (Some(b), Some(k)) => format!("arn:aws:s3:::{b}/{k}"),
        (Some(b), None) => format!("arn:aws:s3:::{b}"),
        // ListAllMyBuckets: AWS's examples grant it on `arn:aws:s3:::*`.
        _ => "arn:aws:s3:::*".to_owned(),
    }
}

fn query_pairs(uri: &http::Uri) -> Vec<(String, String)> {
    let Some(query) = uri.query() else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A query component, percent-decoded, `+` a space.
fn decode(s: &str) -> String {
    percent_decode(s, true)
}

/// A path (or a value in which `+` is itself), percent-decoded.
pub(crate) fn decode_path(s: &str) -> String {
    percent_decode(s, false)
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                match s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `region` and `service` of a SigV4 credential scope, from the
/// `Authorization` header or a presigned URL's `X-Amz-Credential`.
fn credential_scope(
    headers: &http::HeaderMap,
    query: &[(String, String)],
) -> Option<(String, String)> {
    let credential = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|auth| auth.split("Credential=").nth(1))
        .map(|rest| rest.split([',', ' ']).next().unwrap_or(rest).to_owned())
        .or_else(|| {
            query
                .iter()
                .find(|(k, _)| k == "X-Amz-Credential")
                .map(|(_, v)| v.clone())
        })?;
    let mut parts = credential.split('/');
    let (_key, _date, region, service) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((region.to_owned(), service.to_owned()))
}

impl Authorizer {
    #[must_use]
    pub fn new(iam: Iam, storage: Storage) -> Self {
        Self { iam, storage }
    }

    /// A signature is valid for one service and region: an S3 request signed
    /// for IAM, or for a region this Nuage does not serve, is refused.
    fn check_scope(&self, headers: &http::HeaderMap, query: &[(String, String)]) -> S3Result<()> {
        let Some((region, service)) = credential_scope(headers, query) else {
            return Ok(());
        };
        if service != "s3" {
            return Err(S3Error::with_message(
                S3ErrorCode::AuthorizationHeaderMalformed,
                format!(
                    "the credential is scoped to service `{service}`; S3 requests must be signed for `s3`"
                ),
            ));
        }
        if !self.storage.accepts_signing_region(&region) {
            return Err(S3Error::with_message(
                S3ErrorCode::AuthorizationHeaderMalformed,
                format!(
                    "the region `{region}` is wrong; expecting `{}`",
                    self.storage.default_region()
                ),
            ));
        }
        Ok(())
    }

    /// The caller behind the request's access key, with its session token checked.
    ///
    /// A key that exists presented with the wrong session token is an attempt
    /// with the tenant's key: the tenant's log is told (a default deny).
    async fn caller(
        &self,
        access_key: Option<&str>,
        headers: &http::HeaderMap,
        uri: &http::Uri,
        slot: Option<&AuditSlot>,
        action: &str,
    ) -> S3Result<Option<Identity>> {
        let Some(access_key) = access_key else {
            return Ok(None);
        };
        let identity = self
            .iam
            .resolve(access_key)
            .await
            .map_err(auth_error)?
            .ok_or_else(invalid_access_key)?;
        let presented = headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                query_pairs(uri)
                    .into_iter()
                    .find(|(k, _)| k == "X-Amz-Security-Token")
                    .map(|(_, v)| v)
            });
        if !identity.session_token_matches(presented.as_deref()) {
            let message = if identity.session_token.is_some() && presented.is_none() {
                "temporary credentials need their session token (x-amz-security-token)"
            } else {
                "the provided token is malformed or otherwise invalid"
            };
            crate::audit::put(
                slot,
                crate::audit::request(
                    &identity.tenant_id,
                    Some(&identity),
                    crate::audit::actor(Some(&identity), is_presigned(uri)),
                    action,
                ),
            );
            return Err(S3Error::with_message(S3ErrorCode::InvalidToken, message));
        }
        Ok(Some(identity))
    }

    /// Condition keys every request has.
    fn base_context(extensions: &http::Extensions) -> BTreeMap<String, Vec<String>> {
        let mut keys = BTreeMap::new();
        if let Some(SourceAddress(ip)) = extensions.get::<SourceAddress>() {
            keys.insert("aws:SourceIp".to_owned(), vec![ip.to_string()]);
        }
        let secure = extensions.get::<SecureTransport>().is_some_and(|s| s.0);
        keys.insert("aws:SecureTransport".to_owned(), vec![secure.to_string()]);
        // Keys about the caller (aws:username, aws:PrincipalTag/*, ...) are
        // answered by the policy engine from the principal itself.
        keys
    }

    /// Decides one action on one resource. `Err` only when the decision
    /// could not be made (a lookup failed); a refusal is a `Decision`.
    async fn decide(
        &self,
        caller: Option<&Identity>,
        action: String,
        bucket: Option<&BucketRecord>,
        resource: String,
        context: BTreeMap<String, Vec<String>>,
    ) -> S3Result<Decision> {
        let request = AccessRequest {
            action,
            resource,
            context,
        };
        let restrict_public = match bucket {
            Some(b) if b.policy.is_some() => {
                b.public_access_block
                    .is_some_and(|p| p.restrict_public_buckets)
                    || self.tenant_blocks(&b.owner).await.restrict_public_buckets
            }
            _ => false,
        };
        let decision = self
            .iam
            .authorize(
                caller,
                &request,
                bucket.map(|b| b.owner.as_str()),
                bucket.and_then(|b| b.policy.as_deref()),
                restrict_public,
            )
            .await
            .map_err(auth_error)?;
        if !decision.allowed {
            tracing::debug!(action = %request.action, resource = %request.resource, reason = %decision.reason, "access denied");
        }
        Ok(decision)
    }

    /// The owner tenant's Block Public Access. If it cannot be read, every
    /// block is on: failing closed only withholds public access, which the
    /// owner's own identities never need.
    async fn tenant_blocks(&self, tenant: &str) -> nuage_iam::TenantPublicAccessBlock {
        self.iam.tenant(tenant).await.map_or(
            nuage_iam::TenantPublicAccessBlock {
                block_public_policy: true,
                restrict_public_buckets: true,
            },
            |t| t.public_access_block,
        )
    }

    /// The bucket's record, `None` when there is no such bucket. Any other
    /// failure refuses the request: without its record, another tenant's
    /// bucket would be judged as one the caller's tenant is about to create.
    async fn bucket(&self, name: &str) -> S3Result<Option<BucketRecord>> {
        match self.storage.bucket(name).await {
            Ok(record) => Ok(Some(record)),
            Err(StorageError::NoSuchBucket) => Ok(None),
            Err(e) => Err(crate::errors::to_s3(e)),
        }
    }

    /// Checks read access to a copy source (CopyObject, UploadPartCopy).
    async fn check_copy_source<T>(&self, req: &S3Request<T>, source: &CopySource) -> S3Result<()> {
        let CopySource::Bucket {
            bucket,
            key,
            version_id,
        } = source
        else {
            return Ok(());
        };
        let caller = req.extensions.get::<Caller>().and_then(|c| c.0.clone());
        let record = self.bucket(bucket).await?;
        let action = action_for("GetObject", version_id.is_some());
        let context = Self::base_context(&req.extensions);
        let resource = resource_arn(Some(bucket), Some(key));
        let decision = self
            .decide(
                caller.as_ref(),
                action.clone(),
                record.as_ref(),
                resource.clone(),
                context,
            )
            .await?;
        if decision.allowed {
            return Ok(());
        }
        // The copy is refused for its source: that is the decision logged
        // (an allowed copy keeps the destination's).
        crate::audit::amend(crate::audit::slot(&req.extensions), |audit| {
            *audit = RequestAudit {
                action,
                ..audit.clone()
            }
            .on(resource)
            .decided(
                crate::audit::effect(false),
                decision.policy,
                decision.statement,
            );
        });
        Err(access_denied())
    }
}

/// S3's refusal, whatever refused (a policy, Block Public Access, no policy).
fn access_denied() -> S3Error {
    S3Error::with_message(S3ErrorCode::AccessDenied, "access denied")
}

/// Whether an operation lists a bucket's keys (or uploads) by `prefix`.
fn is_listing(op: &str) -> bool {
    matches!(
        op,
        "ListObjects" | "ListObjectsV2" | "ListObjectVersions" | "ListMultipartUploads"
    )
}

/// Whether the request is signed in its query string (a presigned URL).
fn is_presigned(uri: &http::Uri) -> bool {
    uri.query()
        .is_some_and(|q| q.split('&').any(|p| p.starts_with("X-Amz-Signature=")))
}

/// Logs a request a policy allowed but an ownership rule then refused (bucket
/// policy and default encryption are the owner's): a deny no policy made.
fn deny_after_policy(slot: Option<&AuditSlot>, audit: Option<RequestAudit>) {
    if let Some(audit) = audit {
        crate::audit::put(slot, audit.decided(crate::audit::effect(false), None, None));
    }
}

#[async_trait::async_trait]
impl S3Access for Authorizer {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let access_key = cx.credentials().map(|c| c.access_key.clone());
        let query = query_pairs(cx.uri());
        let has_version_id = query.iter().any(|(k, v)| k == "versionId" && !v.is_empty());
        let op = cx.s3_op().name().to_owned();
        let op = op.as_str();
        let action = action_for(op, has_version_id);
        let presigned = is_presigned(cx.uri());
        // A clone shares the slot; holding it leaves `cx` free to borrow.
        let slot = crate::audit::slot(cx.extensions_mut()).cloned();
        let slot = slot.as_ref();
        let (bucket_name, key) = match cx.s3_path() {
            S3Path::Root => (None, None),
            S3Path::Bucket { bucket } => (Some(bucket.to_string()), None),
            S3Path::Object { bucket, key } => (Some(bucket.to_string()), Some(key.to_string())),
        };
        let resource = resource_arn(bucket_name.as_deref(), key.as_deref());
        let caller = self
            .caller(access_key.as_deref(), cx.headers(), cx.uri(), slot, &action)
            .await?;
        if let Some(identity) = &caller
            && let Err(refused) = self.check_scope(cx.headers(), &query)
        {
            // Signed by the tenant's key, for another service or region: a
            // default deny in its log.
            crate::audit::put(
                slot,
                crate::audit::request(
                    &identity.tenant_id,
                    Some(identity),
                    crate::audit::actor(Some(identity), presigned),
                    &action,
                )
                .on(&resource),
            );
            return Err(refused);
        }
        if let Some(identity) = caller.as_ref().filter(|i| i.session_token.is_none()) {
            // The signature is verified by now: record the key's last use
            // (IAM's GetAccessKeyLastUsed). A failure to record refuses nothing.
            let region = credential_scope(cx.headers(), &query)
                .map_or_else(|| self.storage.default_region().to_owned(), |(r, _)| r);
            if let Err(e) = self.iam.record_key_use(identity, "s3", &region).await {
                tracing::warn!(error = %e, "could not record an access key's last use");
            }
        }
        let mut context = Self::base_context(cx.extensions_mut());
        if let Some((_, v)) = query.iter().find(|(k, _)| k == "versionId") {
            context.insert("s3:VersionId".to_owned(), vec![v.clone()]);
        }
        // A listing's parameters are condition keys of listings only (as in
        // AWS): a `prefix` on any other request must not satisfy a policy
        // that lets a prefix be listed (an approved operator session's).
        if is_listing(op) {
            for (name, key_name) in [
                ("prefix", "s3:prefix"),
                ("delimiter", "s3:delimiter"),
                ("max-keys", "s3:max-keys"),
            ] {
                if let Some((_, v)) = query.iter().find(|(k, _)| k == name) {
                    context.insert(key_name.to_owned(), vec![v.clone()]);
                }
            }
        }
        for (header, key_name) in [
            (
                "x-amz-server-side-encryption",
                "s3:x-amz-server-side-encryption",
            ),
            ("x-amz-copy-source", "s3:x-amz-copy-source"),
            ("x-amz-metadata-directive", "s3:x-amz-metadata-directive"),
            ("x-amz-storage-class", "s3:x-amz-storage-class"),
        ] {
            if let Some(v) = cx.headers().get(header).and_then(|v| v.to_str().ok()) {
                context.insert(key_name.to_owned(), vec![v.to_owned()]);
            }
        }
        // The log entry: in the caller's tenant until the bucket's owner is
        // known (a bucket that does not exist, or a lookup that fails, stays
        // there), then in the owner's: anonymous requests name no other tenant,
        // and the server also copies a cross-tenant entry to the caller's
        // tenant (`record` in the binary).
        let audit_actor = crate::audit::actor(caller.as_ref(), presigned);
        if let Some(identity) = &caller {
            crate::audit::put(
                slot,
                crate::audit::request(
                    &identity.tenant_id,
                    Some(identity),
                    audit_actor.clone(),
                    &action,
                )
                .on(&resource),
            );
        }
        let record = match &bucket_name {
            Some(name) if op != "CreateBucket" => self.bucket(name).await?,
            _ => None,
        };
        let tenant = record
            .as_ref()
            .map(|r| r.owner.clone())
            .or_else(|| caller.as_ref().map(|c| c.tenant_id.clone()));
        let mut audit = tenant.filter(|t| !t.is_empty()).map(|t| {
            crate::audit::request(&t, caller.as_ref(), audit_actor, &action).on(&resource)
        });
        // DeleteObjects is decided per key once its body is parsed.
        if op != "DeleteObjects" {
            let decision = self
                .decide(
                    caller.as_ref(),
                    action.clone(),
                    record.as_ref(),
                    resource,
                    context,
                )
                .await;
            let decision = match decision {
                Ok(d) => d,
                Err(e) => {
                    // Undecided (a lookup failed): logged as a default deny.
                    if let Some(audit) = audit {
                        crate::audit::put(slot, audit);
                    }
                    return Err(e);
                }
            };
            let allowed = decision.allowed;
            audit = audit.map(|a| {
                a.decided(
                    crate::audit::effect(allowed),
                    decision.policy,
                    decision.statement,
                )
            });
            if !allowed {
                if let Some(audit) = audit {
                    crate::audit::put(slot, audit);
                }
                return Err(access_denied());
            }
        }
        if let Some(audit) = &audit {
            crate::audit::put(slot, audit.clone());
        }
        // The bucket policy is its owner's to manage: a policy may grant
        // these actions to others, but like AWS, S3 then answers 405.
        if matches!(
            op,
            "GetBucketPolicy" | "PutBucketPolicy" | "DeleteBucketPolicy"
        ) && let Some(record) = &record
            && caller.as_ref().map(|c| c.tenant_id.as_str()) != Some(record.owner.as_str())
        {
            deny_after_policy(slot, audit);
            return Err(S3Error::with_message(
                S3ErrorCode::MethodNotAllowed,
                "only the bucket owner's tenant may manage its bucket policy",
            ));
        }
        // A bucket's default encryption decides which KMS key other
        // principals' writes use: only its owner's principals manage it,
        // whatever a bucket policy grants.
        if matches!(
            op,
            "GetBucketEncryption" | "PutBucketEncryption" | "DeleteBucketEncryption"
        ) && let Some(record) = &record
            && caller.as_ref().map(|c| c.tenant_id.as_str()) != Some(record.owner.as_str())
        {
            deny_after_policy(slot, audit);
            return Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                "only the bucket owner's tenant may manage its default encryption",
            ));
        }
        cx.extensions_mut().insert(Caller(caller));
        Ok(())
    }

    async fn delete_objects(&self, req: &mut S3Request<DeleteObjectsInput>) -> S3Result<()> {
        let caller = req.extensions.get::<Caller>().and_then(|c| c.0.clone());
        let record = self.bucket(&req.input.bucket).await?;
        let context = Self::base_context(&req.extensions);
        // One denied key denies the request: a batch must not be a way around
        // a per-prefix policy. (AWS reports per key; a whole refusal is safer
        // and simpler, and says which key.)
        // Logged once for the batch: the refused key's decision, or the
        // last key's when every key is allowed.
        let logged = |action: String, resource: String, decision: Decision| {
            crate::audit::amend(crate::audit::slot(&req.extensions), |audit| {
                *audit = RequestAudit {
                    action,
                    ..audit.clone()
                }
                .on(resource)
                .decided(
                    crate::audit::effect(decision.allowed),
                    decision.policy,
                    decision.statement,
                );
            });
        };
        let mut last = None;
        for object in &req.input.delete.objects {
            let action = action_for("DeleteObject", object.version_id.is_some());
            let resource = resource_arn(Some(&req.input.bucket), Some(&object.key));
            let decision = self
                .decide(
                    caller.as_ref(),
                    action.clone(),
                    record.as_ref(),
                    resource.clone(),
                    context.clone(),
                )
                .await?;
            if !decision.allowed {
                logged(action, resource, decision);
                return Err(S3Error::with_message(
                    S3ErrorCode::AccessDenied,
                    format!("access denied to delete `{}`", object.key),
                ));
            }
            last = Some((action, resource, decision));
        }
        if let Some((action, resource, decision)) = last {
            logged(action, resource, decision);
        }
        Ok(())
    }

    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        let source = req.input.copy_source.clone();
        self.check_copy_source(req, &source).await
    }

    async fn upload_part_copy(&self, req: &mut S3Request<UploadPartCopyInput>) -> S3Result<()> {
        let source = req.input.copy_source.clone();
        self.check_copy_source(req, &source).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_follow_aws_names() {
        assert_eq!(action_for("ListObjectsV2", false), "s3:ListBucket");
        assert_eq!(action_for("GetObject", true), "s3:GetObjectVersion");
        assert_eq!(action_for("UploadPart", false), "s3:PutObject");
        assert_eq!(action_for("DeleteBucketCors", false), "s3:PutBucketCORS");
        assert_eq!(action_for("GetBucketPolicy", false), "s3:GetBucketPolicy");
        assert_eq!(resource_arn(Some("b"), Some("k/x")), "arn:aws:s3:::b/k/x");
        assert_eq!(decode("a%2Fb+c"), "a/b c");
    }
}
