//! The AWS KMS JSON API (`TrentService`), so that `aws kms ...` and every SDK
//! work unchanged against a Nuage endpoint, on the same port as S3.
//!
//! One request goes: `POST /` with `X-Amz-Target: TrentService.<Operation>`
//! and an `application/x-amz-json-1.1` body of at most
//! [`KMS_REQUEST_BODY_BYTES_MAX`] bytes -> SigV4 verification for the `kms`
//! service (`nuage-sigv4`) and the caller's identity (`Iam::resolve`, session
//! token checked) -> a closed [`operation::Operation`] -> the key the request
//! names, looked up in the caller's tenant only -> authorization of
//! `kms:<Operation>` on the key's ARN, the key policy acting as the resource
//! policy (`Iam::authorize`) -> the key service (`nuage_kms::CustomerKeys`) ->
//! a JSON response; errors map to AWS exception names in one place
//! ([`error`]). What is supported and how it differs from AWS:
//! `docs/kms.md`.
//!
//! *Invariant:* a tenant never sees or uses another tenant's keys. The tenant
//! comes from the caller's credentials; a key id, key ARN, alias or
//! ciphertext naming another tenant's key is answered `NotFoundException`,
//! exactly as a key that does not exist (AWS would consult the key policy
//! for a cross-account ARN; Nuage keeps tenants sealed).
//!
//! *Boundaries:* this crate parses the wire protocol and nothing else. It
//! never stores anything itself and never holds key material (the key service
//! does both), never reads the environment, and does not depend on the S3 or
//! IAM front ends: the binary routes KMS requests here ([`KmsApi::is_match`])
//! before s3s sees them, and passes what the connection knows
//! ([`RequestContext`]).

mod error;
mod handlers;
mod operation;

use bytes::Bytes;
use error::ApiError;
use nuage_audit::{Actor, ActorKind, Effect, RequestAudit};
use nuage_base::Clock;
use nuage_base::limits::KMS_REQUEST_BODY_BYTES_MAX;
use nuage_iam::{Iam, Identity, PrincipalKind};
use nuage_kms::{AccessReason, CustomerKeys};
use nuage_sigv4::{Credential, SignedRequest};
use std::net::IpAddr;
use std::sync::Arc;

/// The credential scope KMS requests are signed for.
const SIGNING_SERVICES: &[&str] = &["kms"];
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// What the HTTP layer knows about a request that the request does not say.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Echoed in `x-amzn-RequestId`.
    pub request_id: String,
    /// The client's address: `aws:SourceIp`.
    pub source_ip: Option<IpAddr>,
    /// Whether the connection is TLS: `aws:SecureTransport`.
    pub secure_transport: bool,
}

/// The KMS JSON front end.
#[derive(Clone)]
pub struct KmsApi {
    keys: CustomerKeys,
    iam: Iam,
    clock: Arc<dyn Clock>,
}

impl KmsApi {
    #[must_use]
    pub fn new(keys: CustomerKeys, iam: Iam, clock: Arc<dyn Clock>) -> Self {
        Self { keys, iam, clock }
    }

    /// Whether a request is a KMS request: `POST /` with an `X-Amz-Target`
    /// naming `TrentService`, unsigned or signed with SigV4 for `kms`. No S3
    /// or IAM/STS request carries that header; anything signed for another
    /// service is left to the other front ends.
    #[must_use]
    pub fn is_match(method: &http::Method, uri: &http::Uri, headers: &http::HeaderMap) -> bool {
        let shape = method == http::Method::POST
            && uri.path() == "/"
            && headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with(operation::TARGET_PREFIX));
        let signed_for_us = !headers.contains_key(http::header::AUTHORIZATION)
            || nuage_sigv4::signing_service(headers).as_deref() == Some("kms");
        shape && signed_for_us
    }

    /// Answers one KMS request. Never fails: every problem is an AWS error response.
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
        context: &RequestContext,
    ) -> http::Response<Bytes>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let (outcome, audit) = match read_body(&parts, body).await {
            Ok(body) => self.serve(&parts, &body, context).await,
            Err(e) => (Err(e), None),
        };
        let (status, text) = match outcome {
            Ok(Some(value)) => (http::StatusCode::OK, value.to_string()),
            Ok(None) => (http::StatusCode::OK, String::new()),
            Err(e) => (e.status, e.to_json()),
        };
        let mut response = http::Response::new(Bytes::from(text));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(CONTENT_TYPE),
        );
        if let Ok(id) = http::HeaderValue::from_str(&context.request_id) {
            headers.insert("x-amzn-requestid", id);
        }
        if let Some(audit) = audit {
            response.extensions_mut().insert(audit);
        }
        response
    }

    /// Serves one request; with it, the audit log's account of it once the
    /// caller's key named a tenant.
    async fn serve(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        context: &RequestContext,
    ) -> (
        Result<Option<serde_json::Value>, ApiError>,
        Option<RequestAudit>,
    ) {
        let target = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // What the caller asked for, as the log names it until the operation
        // is parsed.
        let asked = format!(
            "kms:{}",
            nuage_audit::client_text(
                target
                    .strip_prefix(operation::TARGET_PREFIX)
                    .unwrap_or(target)
            )
        );
        // Authenticate before parsing, so an anonymous caller learns nothing.
        let identity = match self.authenticate(parts, body).await {
            Ok(identity) => identity,
            // A key that exists but a signature or token that does not match:
            // the key's tenant is told someone tried (a default deny).
            Err((e, Some(claimed))) => {
                let audit = RequestAudit::new(&claimed.tenant_id, actor(&claimed), asked);
                return (Err(e), Some(audit));
            }
            Err((e, None)) => return (Err(e), None),
        };
        let audit = RequestAudit::new(&identity.tenant_id, actor(&identity), asked);
        let operation = match operation::Operation::parse(target, body) {
            Ok(operation) => operation,
            Err(e) => return (Err(e), Some(audit)),
        };
        let name = operation.name();
        let audit = RequestAudit {
            action: format!("kms:{name}"),
            ..audit
        };
        let call = handlers::Call {
            keys: &self.keys,
            iam: &self.iam,
            identity: &identity,
            context,
            decided: std::sync::Mutex::new(None),
        };
        let result = call.run(operation).await;
        if let Err(e) = &result {
            tracing::debug!(caller = %identity.arn, operation = name, code = e.code, message = %e.message, "KMS request refused");
        }
        let used_key = result.is_ok();
        let audit = match call.decided.into_inner().ok().flatten() {
            Some(decided) => {
                let mut audit = RequestAudit {
                    action: decided.action,
                    ..audit
                }
                .on(&decided.resource)
                .decided(
                    if decided.decision.allowed {
                        Effect::Allow
                    } else {
                        Effect::Deny
                    },
                    decided.decision.policy,
                    decided.decision.statement,
                );
                // A cryptographic operation that succeeded used its key, on
                // the caller's own request (a dry run or a disabled key did not).
                if used_key && is_cryptographic(name) && decided.resource.contains(":key/") {
                    audit.key = Some(decided.resource);
                    audit.justification =
                        Some(AccessReason::CustomerInitiatedAccess.as_str().to_owned());
                }
                audit
            }
            None => audit,
        };
        (result, Some(audit))
    }

    /// The caller: a valid SigV4 signature for `kms` by a known, active key,
    /// with its session token when the key is temporary.
    async fn authenticate(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Result<Identity, (ApiError, Option<Identity>)> {
        let now_unix_s = self.clock.now_unix_ns().div_euclid(1_000_000_000);
        let credential = Credential::from_headers(&parts.headers, SIGNING_SERVICES, now_unix_s)
            .map_err(|e| (ApiError::from_sigv4(e), None))?
            .ok_or_else(|| (ApiError::missing_authentication(), None))?;
        let identity = match self.iam.resolve(credential.access_key_id()).await {
            Ok(Some(identity)) => identity,
            // AWS answers an unknown and a deactivated key alike.
            Ok(None) => return Err((ApiError::unrecognized_client(), None)),
            Err(e) => return Err((ApiError::from_iam(e), None)),
        };
        let signed = SignedRequest {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            body,
        };
        if let Err(e) = credential.verify(&signed, &identity.secret_access_key) {
            return Err((ApiError::from_sigv4(e), Some(identity)));
        }
        let presented = parts
            .headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok());
        if !identity.session_token_matches(presented) {
            return Err((ApiError::unrecognized_client(), Some(identity)));
        }
        Ok(identity)
    }
}

/// The audit log's account of a caller: its ARN and the key it signed with.
fn actor(identity: &Identity) -> Actor {
    let kind = match identity.kind {
        PrincipalKind::User { .. } => ActorKind::TenantUser,
        PrincipalKind::AssumedRole { .. } => ActorKind::RoleSession,
    };
    Actor::signed(kind, &identity.arn, &identity.access_key_id)
}

/// The operations that use a key's material (its key use is logged with a
/// justification).
fn is_cryptographic(operation: &str) -> bool {
    matches!(
        operation,
        "Encrypt" | "Decrypt" | "ReEncrypt" | "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext"
    )
}

/// Reads the body, refusing more than [`KMS_REQUEST_BODY_BYTES_MAX`].
async fn read_body<B>(parts: &http::request::Parts, body: B) -> Result<Bytes, ApiError>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    nuage_sigv4::read_limited(&parts.headers, body, KMS_REQUEST_BODY_BYTES_MAX)
        .await
        .map_err(|e| match e {
            nuage_sigv4::BodyError::TooLarge => ApiError::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLargeException",
                format!("a KMS request body may hold at most {KMS_REQUEST_BODY_BYTES_MAX} bytes"),
            ),
            nuage_sigv4::BodyError::Incomplete(why) => {
                ApiError::serialization(format!("the request body could not be read: {why}"))
            }
        })
}

#[cfg(test)]
mod tests;
