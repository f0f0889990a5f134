//! The tenant's read-only view of its audit log, on the S3 port under
//! `/_nuage/audit/v1/` (no bucket name starts with `_`):
//!
//! | `GET` path | answer |
//! | --- | --- |
//! | `checkpoint` | a checkpoint signed now (covers every entry acknowledged before the request), with the witnesses' cosignatures: those kept for it, and those of the missing witnesses that answered now |
//! | `vkey` | the log's verifier key |
//! | `pruned` | the signed pruning marker (404 `NotPruned` if the log never pruned) |
//! | `tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]` | C2SP tlog-tiles hash tiles and entry bundles |
//! | `proof/inclusion?index=I&size=S` | RFC 6962 inclusion proof (JSON) |
//! | `proof/consistency?from=A&to=B` | RFC 6962 consistency proof (JSON) |
//!
//! Every request is SigV4-signed (`Authorization` header, service `audit` or
//! `s3`) by an identity of a tenant, and authorized as `nuage:GetAuditLog` on
//! `arn:nuage:audit::<tenant>:log`; it reads the caller's own tenant's log,
//! and nothing in a request can name another. Errors are JSON
//! `{"error":{"code":..,"message":..}}`.
//!
//! Reads that are allowed are not themselves logged: each pull would add
//! entries, so the log could never be read up to date, and a tenant's tools
//! polling it would fill it. Refused reads (denied by policy, or a known key
//! with a bad signature) are logged, as any refusal.

use super::tenant_api::{
    self, ApiError, actor, connection_context, expect_read, reply, with_audit,
};
use bytes::Bytes;
use nuage_audit::{AuditError, AuditLog, AuditLogs, Effect, RequestAudit, verify};
use nuage_base::Clock;
use nuage_iam::{AccessRequest, Iam, IamError, Identity};
use std::net::IpAddr;
use std::sync::Arc;

/// Where the API lives.
pub const PREFIX: &str = "/_nuage/audit/v1/";
/// The IAM action a reader needs.
pub const GET_AUDIT_LOG_ACTION: &str = "nuage:GetAuditLog";
/// The credential scopes accepted: `audit` (what `nuage audit pull` signs
/// with) and `s3` (so generic S3 signing tools work on the S3 port).
pub const SIGNING_SERVICES: &[&str] = &["audit", "s3"];

/// The ARN of `tenant`'s audit log, the resource `nuage:GetAuditLog` names.
#[must_use]
pub fn log_arn(tenant: &str) -> String {
    format!("arn:nuage:audit::{tenant}:log")
}

/// Whether a request is for this API.
#[must_use]
pub fn is_audit_path(path: &str) -> bool {
    path.starts_with("/_nuage/audit/")
}

/// The read-only audit API.
pub struct AuditApi {
    logs: AuditLogs,
    iam: Iam,
    clock: Arc<dyn Clock>,
    witnesses: super::witnesses::Witnesses,
}

pub use tenant_api::audit_failure_response;

/// An audit log error on the wire.
fn from_audit(error: &AuditError) -> ApiError {
    match error {
        AuditError::BadTilePath(_) => ApiError::new(
            http::StatusCode::BAD_REQUEST,
            "InvalidTilePath",
            error.to_string(),
        ),
        AuditError::TileBeyondTree { .. } => ApiError::new(
            http::StatusCode::NOT_FOUND,
            "TileNotFound",
            error.to_string(),
        ),
        AuditError::OutOfRange(_) => ApiError::new(
            http::StatusCode::BAD_REQUEST,
            "OutOfRange",
            error.to_string(),
        ),
        AuditError::Pruned { .. } => {
            ApiError::new(http::StatusCode::GONE, "Pruned", error.to_string())
        }
        AuditError::TooManyOpenLogs(_) => ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            error.to_string(),
        ),
        _ => {
            // Logged here, where it is handled; the client learns only that it failed.
            tracing::error!(%error, "audit log read failed");
            ApiError::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "the audit log could not be read",
            )
        }
    }
}

impl AuditApi {
    #[must_use]
    pub fn new(
        logs: AuditLogs,
        iam: Iam,
        clock: Arc<dyn Clock>,
        witnesses: super::witnesses::Witnesses,
    ) -> Self {
        Self {
            logs,
            iam,
            clock,
            witnesses,
        }
    }

    /// Answers one request; every problem is a JSON error response.
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
        source_ip: IpAddr,
        secure: bool,
    ) -> http::Response<Bytes> {
        let (parts, _body) = request.into_parts();
        match self.serve(&parts, source_ip, secure).await {
            Ok(response) => response,
            Err((error, audit)) => with_audit(error.response(), audit),
        }
    }

    async fn serve(
        &self,
        parts: &http::request::Parts,
        source_ip: IpAddr,
        secure: bool,
    ) -> Result<http::Response<Bytes>, (ApiError, Option<RequestAudit>)> {
        // The signature covers an empty body: reads carry none.
        expect_read(
            parts,
            "the audit log is read-only: use GET",
            "audit log requests carry no body",
        )
        .map_err(|e| (e, None))?;
        let identity = self.authenticate(parts).await?;
        let tenant = identity.tenant_id.clone();
        let request = AccessRequest {
            action: GET_AUDIT_LOG_ACTION.to_owned(),
            resource: log_arn(&tenant),
            context: connection_context(source_ip, secure),
        };
        let decision = self
            .iam
            .authorize(Some(&identity), &request, Some(&tenant), None, false)
            .await
            .map_err(|e| (from_iam(e), None))?;
        if !decision.allowed {
            let audit = RequestAudit::new(&tenant, actor(&identity), GET_AUDIT_LOG_ACTION)
                .on(log_arn(&tenant))
                .decided(Effect::Deny, decision.policy, decision.statement);
            return Err((
                ApiError::new(
                    http::StatusCode::FORBIDDEN,
                    "AccessDenied",
                    format!(
                        "{} is not authorized to perform {GET_AUDIT_LOG_ACTION} on {}",
                        identity.arn,
                        log_arn(&tenant)
                    ),
                ),
                Some(audit),
            ));
        }
        let path = parts
            .uri
            .path()
            .strip_prefix(PREFIX)
            .unwrap_or_default()
            .to_owned();
        let log = self
            .logs
            .log(&tenant)
            .await
            .map_err(|e| (from_audit(&e), None))?;
        self.read(&log, &tenant, &path, parts.uri.query())
            .await
            .map_err(|e| (e, None))
    }

    /// The read itself, for an authorized caller.
    async fn read(
        &self,
        log: &AuditLog,
        tenant: &str,
        path: &str,
        query: Option<&str>,
    ) -> Result<http::Response<Bytes>, ApiError> {
        let audit = |e: AuditError| from_audit(&e);
        let text = "text/plain; charset=utf-8";
        match path {
            verify::CHECKPOINT_FILE => {
                // Signed on demand (the log keeps the last one if nothing was
                // added), so a pull always sees every acknowledged entry.
                // Then with its kept cosignatures, and those of the missing
                // witnesses that answer now.
                let signed = log.sign_checkpoint().await.map_err(audit)?;
                let note = if self.witnesses.is_empty() {
                    signed.note
                } else {
                    self.witnesses.cosign(log, &signed).await
                };
                Ok(reply(http::StatusCode::OK, text, Bytes::from(note)))
            }
            "vkey" => Ok(reply(
                http::StatusCode::OK,
                text,
                Bytes::from(format!("{}\n", self.logs.verifier_key(tenant))),
            )),
            verify::PRUNED_FILE => match log.pruning_marker().await.map_err(audit)? {
                Some(note) => Ok(reply(http::StatusCode::OK, text, Bytes::from(note))),
                None => Err(ApiError::new(
                    http::StatusCode::NOT_FOUND,
                    "NotPruned",
                    "this log was never pruned",
                )),
            },
            "proof/inclusion" => {
                let index = query_u64(query, "index")?;
                let size = query_u64(query, "size")?;
                let proof = log.inclusion_proof(index, size).await.map_err(audit)?;
                json_reply(&proof)
            }
            "proof/consistency" => {
                let from = query_u64(query, "from")?;
                let to = query_u64(query, "to")?;
                let proof = log.consistency_proof(from, to).await.map_err(audit)?;
                json_reply(&proof)
            }
            tile if tile.starts_with("tile/") => {
                let bytes = log.read_tile(tile).await.map_err(audit)?;
                Ok(reply(
                    http::StatusCode::OK,
                    "application/octet-stream",
                    Bytes::from(bytes),
                ))
            }
            _ => Err(ApiError::new(
                http::StatusCode::NOT_FOUND,
                "NotFound",
                format!(
                    "no such audit log resource {:?}: see docs/audit-log.md",
                    nuage_audit::client_text(path)
                ),
            )),
        }
    }

    /// The caller, by SigV4. A refusal of a known key carries its audit record.
    async fn authenticate(
        &self,
        parts: &http::request::Parts,
    ) -> Result<Identity, (ApiError, Option<RequestAudit>)> {
        tenant_api::authenticate(
            &self.iam,
            self.clock.as_ref(),
            parts,
            SIGNING_SERVICES,
            "sign the request with SigV4 (service `audit`): the audit log is its tenant's only",
            from_iam,
            |identity| {
                RequestAudit::new(&identity.tenant_id, actor(identity), GET_AUDIT_LOG_ACTION)
                    .on(log_arn(&identity.tenant_id))
            },
        )
        .await
    }
}

fn from_iam(error: IamError) -> ApiError {
    tenant_api::from_iam(error, |error| {
        tracing::error!(%error, "identity service failure");
        ApiError::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "the request could not be authorized",
        )
    })
}

fn json_reply(value: &impl serde::Serialize) -> Result<http::Response<Bytes>, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| {
        ApiError::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("proof serialization failed: {e}"),
        )
    })?;
    Ok(reply(
        http::StatusCode::OK,
        "application/json",
        Bytes::from(body),
    ))
}

/// A required decimal query parameter.
fn query_u64(query: Option<&str>, name: &'static str) -> Result<u64, ApiError> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .ok_or_else(|| {
            ApiError::new(
                http::StatusCode::BAD_REQUEST,
                "MissingParameter",
                format!("the query parameter `{name}` is required"),
            )
        })?;
    value.parse().map_err(|_| {
        ApiError::new(
            http::StatusCode::BAD_REQUEST,
            "InvalidParameter",
            format!(
                "the query parameter `{name}` must be a whole number (got {:?})",
                nuage_audit::client_text(value)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_exact_whole_numbers() {
        assert_eq!(query_u64(Some("index=3&size=10"), "size").ok(), Some(10));
        assert_eq!(query_u64(Some("index=3&size=10"), "index").ok(), Some(3));
        assert!(query_u64(Some("sizes=10"), "size").is_err());
        assert!(query_u64(Some("size=-1"), "size").is_err());
        assert!(query_u64(None, "size").is_err());
    }

    #[test]
    fn only_the_audit_prefix_is_routed_here() {
        assert!(is_audit_path("/_nuage/audit/v1/checkpoint"));
        assert!(!is_audit_path("/_nuage/admin/v1/tenants"));
        assert!(!is_audit_path("/bucket/_nuage/audit/v1/checkpoint"));
    }
}
