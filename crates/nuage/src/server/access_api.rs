//! Operator access approvals over HTTP: the operator asks, the tenant
//! answers, an approval yields one time-boxed, scoped session
//! (`docs/access-approval.md`; the states and documents are
//! `nuage_iam::access`'s).
//!
//! Two halves on the one listener:
//!
//! | who | method, path | answer |
//! | --- | --- | --- |
//! | operator (bearer token) | `POST /_nuage/admin/v1/access-requests` | the new request (201), logged in the tenant's log *before* it is stored |
//! | operator | `GET /_nuage/admin/v1/access-requests?tenant=T` | the tenant's requests |
//! | operator | `GET /_nuage/admin/v1/access-requests/<id>` | one request |
//! | operator | `POST /_nuage/admin/v1/access-requests/<id>/credentials` | the session's credentials (approved requests only) |
//! | tenant (SigV4) | `GET /_nuage/access/v1/requests[/<id>]` | its requests (`nuage:ListAccessRequests`) |
//! | tenant | `POST /_nuage/access/v1/requests/<id>/approve\|deny\|revoke` | the request after the answer (`nuage:ApproveAccessRequest`, ...), logged *before* it takes effect |
//!
//! The operator half lives here rather than in `nuage-admin-api` because a
//! request, like an answer, must reach the tenant's audit log before it takes
//! effect (write-ahead: `AccessApi::write_ahead`), and the binary holds the
//! logs. Errors are JSON `{"error":{"code":..,"message":..}}`.
//! This module never grants anything itself: the tenant's answer is checked
//! by `Iam::authorize`, and what an approval allows is the session's policy.

use super::tenant_api::{
    self, ApiError, actor, connection_context, declares_body, reply, with_audit,
};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use nuage_audit::{
    Actor, ActorKind, AuditLogs, Authentication, Effect, RequestAudit, RequestFacts,
};
use nuage_base::{Clock, limits};
use nuage_iam::access::{OPERATOR_PRINCIPAL, access_request_arn};
use nuage_iam::{
    AccessRequest, AccessVerdict, Iam, IamError, Identity, NewOperatorAccessRequest,
    OperatorAccessRequest,
};
use nuage_kms::AccessReason;
use serde::Deserialize;
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq as _;

/// The operator's half, inside the admin API's path space.
pub const OPERATOR_PREFIX: &str = "/_nuage/admin/v1/access-requests";
/// The tenant's half.
pub const TENANT_PREFIX: &str = "/_nuage/access/v1/requests";
/// The IAM action a tenant principal needs to see its requests.
pub const LIST_ACTION: &str = "nuage:ListAccessRequests";
/// Audit actions of the operator's steps.
pub const REQUEST_ACTION: &str = "nuage:RequestAccess";
pub const CREDENTIALS_ACTION: &str = "nuage:GetAccessCredentials";
/// Credential scopes a tenant may sign with: `access` (the CLI) and `s3`.
pub const SIGNING_SERVICES: &[&str] = &["access", "s3"];

/// Whether a request is for this API (either half).
#[must_use]
pub fn is_access_path(path: &str) -> bool {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    under(OPERATOR_PREFIX) || under(TENANT_PREFIX)
}

/// The access approval API.
pub struct AccessApi {
    iam: Iam,
    logs: AuditLogs,
    operator_token: String,
    clock: Arc<dyn Clock>,
}

/// What the server knows of the connection.
pub struct Connection<'a> {
    pub source: IpAddr,
    pub secure: bool,
    pub request_id: &'a str,
}

pub use tenant_api::audit_failure_response;

/// A request this API cannot take (`400 InvalidRequest`).
fn invalid_request(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("InvalidRequest", message)
}

fn not_found() -> ApiError {
    ApiError::new(
        http::StatusCode::NOT_FOUND,
        "NotFound",
        "no such access approval resource: see docs/access-approval.md",
    )
}

fn from_iam(error: IamError) -> ApiError {
    use http::StatusCode as S;
    match error {
        IamError::NoSuchEntity(m) => ApiError::new(S::NOT_FOUND, "NotFound", m),
        IamError::InvalidInput(m) | IamError::MalformedPolicyDocument(m) => invalid_request(m),
        IamError::LimitExceeded(m) => ApiError::new(S::CONFLICT, "LimitExceeded", m),
        IamError::AccessDenied(m) => ApiError::new(S::FORBIDDEN, "AccessDenied", m),
        IamError::TenantSuspended => ApiError::new(
            S::FORBIDDEN,
            "TenantSuspended",
            "all access to this tenant has been disabled",
        ),
        IamError::ExpiredToken => ApiError::new(
            S::FORBIDDEN,
            "ExpiredToken",
            "the session token has expired",
        ),
        error => {
            // Logged where it is handled; the client learns only that it failed.
            tracing::error!(%error, "identity service failure");
            ApiError::new(
                S::INTERNAL_SERVER_ERROR,
                "InternalError",
                "the access request could not be processed",
            )
        }
    }
}

/// The JSON form of a request, as both halves show it.
fn view(request: &OperatorAccessRequest) -> serde_json::Value {
    json!({
        "id": request.id,
        "arn": access_request_arn(&request.tenant_id, &request.id),
        "tenant": request.tenant_id,
        "state": request.state.as_str(),
        "resources": request.resources,
        "actions": request.actions,
        "justification": request.reason,
        "reason_text": request.reason_text,
        "duration_seconds": request.duration_s,
        "requested_by": request.requested_by,
        "requested_unix_ns": request.requested_unix_ns,
        "decided_by": request.decided_by,
        "decided_unix_ns": request.decided_unix_ns,
        "expires_unix_ns": request.expires_unix_ns,
        "revoked_by": request.revoked_by,
        "revoked_unix_ns": request.revoked_unix_ns,
    })
}

fn json_reply(status: http::StatusCode, value: &serde_json::Value) -> http::Response<Bytes> {
    reply(status, "application/json", Bytes::from(value.to_string()))
}

/// The operator, as the audit log names it.
fn operator_actor() -> Actor {
    Actor {
        kind: ActorKind::Operator,
        id: Some(OPERATOR_PRINCIPAL.to_owned()),
        auth: Authentication::BearerToken,
        access_key_id: None,
    }
}

/// An audit record about one access request.
fn about(request: &OperatorAccessRequest, actor: Actor, action: &str) -> RequestAudit {
    let mut audit = RequestAudit::new(&request.tenant_id, actor, action)
        .on(access_request_arn(&request.tenant_id, &request.id));
    audit.approval = Some(request.id.clone());
    audit.justification = Some(request.reason.clone());
    audit
}

/// The operator's request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    tenant: String,
    resources: Vec<String>,
    actions: Vec<String>,
    justification: String,
    #[serde(default)]
    reason_text: String,
    duration_seconds: u32,
    #[serde(default)]
    requested_by: Option<String>,
}

type Answer = Result<http::Response<Bytes>, (ApiError, Option<RequestAudit>)>;

fn plain(error: ApiError) -> (ApiError, Option<RequestAudit>) {
    (error, None)
}

impl AccessApi {
    #[must_use]
    pub fn new(iam: Iam, logs: AuditLogs, operator_token: String, clock: Arc<dyn Clock>) -> Self {
        Self {
            iam,
            logs,
            operator_token,
            clock,
        }
    }

    /// Answers one request; every problem is a JSON error response, which
    /// carries its audit record when there is one to log.
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
        connection: &Connection<'_>,
    ) -> http::Response<Bytes>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let answer = if let Some(rest) = path.strip_prefix(OPERATOR_PREFIX) {
            if self.operator_authorized(&parts.headers) {
                match read_body(body).await {
                    Ok(body) => self.operator(&parts, rest, &body, connection).await,
                    Err(e) => Err(plain(e)),
                }
            } else {
                // As the admin API: nothing about the routes before the token.
                Err(plain(ApiError::new(
                    http::StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "missing or wrong operator token (Authorization: Bearer ...)",
                )))
            }
        } else if let Some(rest) = path.strip_prefix(TENANT_PREFIX) {
            self.tenant(&parts, rest, connection).await
        } else {
            Err(plain(not_found()))
        };
        match answer {
            Ok(response) => response,
            Err((error, audit)) => with_audit(error.response(), audit),
        }
    }

    fn operator_authorized(&self, headers: &http::HeaderMap) -> bool {
        let Some(presented) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
        else {
            return false;
        };
        !self.operator_token.is_empty()
            && bool::from(
                presented
                    .trim()
                    .as_bytes()
                    .ct_eq(self.operator_token.as_bytes()),
            )
    }

    async fn operator(
        &self,
        parts: &http::request::Parts,
        rest: &str,
        body: &Bytes,
        connection: &Connection<'_>,
    ) -> Answer {
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        match (&parts.method, segments.as_slice()) {
            (&http::Method::POST, []) => self.create(body, connection).await,
            (&http::Method::GET, []) => {
                let tenant = query_value(parts.uri.query(), "tenant").ok_or_else(|| {
                    plain(invalid_request("name the tenant: ?tenant=<id or name>"))
                })?;
                let tenant = self
                    .iam
                    .tenant(&tenant)
                    .await
                    .map_err(|e| plain(from_iam(e)))?;
                let list = self
                    .iam
                    .list_access_requests(&tenant.id)
                    .await
                    .map_err(|e| plain(from_iam(e)))?;
                let items: Vec<_> = list.iter().map(view).collect();
                Ok(json_reply(
                    http::StatusCode::OK,
                    &json!({"access_requests": items}),
                ))
            }
            (&http::Method::GET, [id]) => {
                let request = self
                    .iam
                    .access_request(id)
                    .await
                    .map_err(|e| plain(from_iam(e)))?;
                Ok(json_reply(http::StatusCode::OK, &view(&request)))
            }
            (&http::Method::POST, [id, "credentials"]) => self.credentials(id).await,
            _ => Err(plain(not_found())),
        }
    }

    /// A new request: checked, logged in the tenant's log (durably), then
    /// stored and acknowledged. A request the log does not hold does not
    /// exist; one the log holds but that could not be stored gets a second
    /// entry with the error's status (see [`Self::write_ahead`]).
    async fn create(&self, body: &Bytes, connection: &Connection<'_>) -> Answer {
        let body: CreateBody = serde_json::from_slice(body)
            .map_err(|e| plain(invalid_request(format!("malformed access request: {e}"))))?;
        let reason = AccessReason::parse(&body.justification).ok_or_else(|| {
            plain(invalid_request(format!(
                "unknown justification {:?}: one of {}",
                nuage_audit::client_text(&body.justification),
                AccessReason::ALL
                    .iter()
                    .filter(|r| **r != AccessReason::CustomerInitiatedAccess)
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        })?;
        if reason == AccessReason::CustomerInitiatedAccess {
            // That reason is the tenant's own requests: the operator never is.
            return Err(plain(invalid_request(
                "CUSTOMER_INITIATED_ACCESS is the tenant's own access; the operator names why it needs access (CUSTOMER_INITIATED_SUPPORT for a support case)",
            )));
        }
        let request = self
            .iam
            .prepare_access_request(NewOperatorAccessRequest {
                tenant: body.tenant,
                resources: body.resources,
                actions: body.actions,
                reason: reason.as_str().to_owned(),
                reason_text: body.reason_text,
                duration_s: body.duration_seconds,
                requested_by: body.requested_by.unwrap_or_else(|| "operator".to_owned()),
            })
            .await
            .map_err(|e| plain(from_iam(e)))?;
        let audit =
            about(&request, operator_actor(), REQUEST_ACTION).decided(Effect::Allow, None, None);
        self.write_ahead(audit.clone(), connection)
            .await
            .map_err(plain)?;
        match self.iam.store_access_request(&request).await {
            Ok(()) => Ok(json_reply(http::StatusCode::CREATED, &view(&request))),
            // Logged, but not made: the outcome entry says so.
            Err(e) => Err((from_iam(e), Some(audit))),
        }
    }

    /// Appends `audit` to its tenant's log, durably, *before* what it
    /// describes takes effect: the entry carries no `status` (there is no
    /// response yet). If the change then fails, the caller attaches the same
    /// record to its error response, so the log gets a second entry with the
    /// same `request_id` and the error's status: logged, not applied. A
    /// change that succeeds has no second entry. If this append fails, the
    /// change is not made.
    async fn write_ahead(
        &self,
        audit: RequestAudit,
        connection: &Connection<'_>,
    ) -> Result<(), ApiError> {
        let mut entry = audit.into_entry(RequestFacts {
            time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(
                self.clock.now_unix_ns(),
            ))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            source: Some(connection.source),
            request_id: connection.request_id.to_owned(),
            status: 0,
        });
        entry.status = None;
        if let Err(error) = self.logs.append(&entry).await {
            tracing::error!(tenant = entry.tenant, action = entry.action, %error, "audit append failed; nothing done");
            return Err(ApiError::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "AuditLogUnavailable",
                "the request could not be recorded in the tenant's audit log, so it was not carried out",
            ));
        }
        Ok(())
    }

    /// The session of an approved request. Every issuance, and every refusal,
    /// is in the tenant's log (the server appends before the response leaves).
    async fn credentials(&self, id: &str) -> Answer {
        let request = self
            .iam
            .access_request(id)
            .await
            .map_err(|e| plain(from_iam(e)))?;
        match self.iam.issue_access_session(id).await {
            Ok((request, session)) => {
                let audit = about(&request, operator_actor(), CREDENTIALS_ACTION).decided(
                    Effect::Allow,
                    None,
                    None,
                );
                let mut response = json_reply(
                    http::StatusCode::OK,
                    &json!({
                        "approval_id": request.id,
                        "tenant": request.tenant_id,
                        "access_key_id": session.access_key_id,
                        "secret_access_key": session.secret_access_key,
                        "session_token": session.session_token,
                        "expires_unix_ns": session.expires_unix_ns,
                    }),
                );
                response.extensions_mut().insert(audit);
                Ok(response)
            }
            Err(e) => {
                let audit = about(&request, operator_actor(), CREDENTIALS_ACTION).decided(
                    Effect::Deny,
                    None,
                    None,
                );
                Err((from_iam(e), Some(audit)))
            }
        }
    }

    async fn tenant(
        &self,
        parts: &http::request::Parts,
        rest: &str,
        connection: &Connection<'_>,
    ) -> Answer {
        // The signature covers an empty body: no call here carries one.
        if declares_body(&parts.headers) {
            return Err(plain(invalid_request(
                "access approval calls carry no body",
            )));
        }
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let (action, id, verdict) = match (&parts.method, segments.as_slice()) {
            (&http::Method::GET, []) => (LIST_ACTION, None, None),
            (&http::Method::GET, [id]) => (LIST_ACTION, Some(*id), None),
            (&http::Method::POST, [id, verb]) => {
                let verdict = match *verb {
                    "approve" => AccessVerdict::Approve,
                    "deny" => AccessVerdict::Deny,
                    "revoke" => AccessVerdict::Revoke,
                    _ => return Err(plain(not_found())),
                };
                (verdict.action(), Some(*id), Some(verdict))
            }
            _ => return Err(plain(not_found())),
        };
        let identity = self.authenticate(parts, action).await?;
        let tenant = identity.tenant_id.clone();
        // A request of another tenant is as absent as an unknown one.
        let request = match id {
            Some(id) => match self.iam.access_request(id).await {
                Ok(r) if r.tenant_id == tenant => Some(r),
                Ok(_) | Err(IamError::NoSuchEntity(_)) => {
                    return Err(plain(ApiError::new(
                        http::StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("no access request {:?}", nuage_audit::client_text(id)),
                    )));
                }
                Err(e) => return Err(plain(from_iam(e))),
            },
            None => None,
        };
        let resource = request.as_ref().map_or_else(
            || access_request_arn(&tenant, "*"),
            |r| access_request_arn(&tenant, &r.id),
        );
        let decision = self
            .iam
            .authorize(
                Some(&identity),
                &AccessRequest {
                    action: action.to_owned(),
                    resource: resource.clone(),
                    context: connection_context(connection.source, connection.secure),
                },
                Some(&tenant),
                None,
                false,
            )
            .await
            .map_err(|e| plain(from_iam(e)))?;
        let audit = |effect: Effect| {
            let base = match &request {
                Some(r) => about(r, actor(&identity), action),
                None => RequestAudit::new(&tenant, actor(&identity), action).on(&resource),
            };
            base.decided(effect, decision.policy.clone(), decision.statement.clone())
        };
        if !decision.allowed {
            return Err((
                ApiError::new(
                    http::StatusCode::FORBIDDEN,
                    "AccessDenied",
                    format!(
                        "{} is not authorized to perform {action} on {resource}",
                        identity.arn
                    ),
                ),
                Some(audit(Effect::Deny)),
            ));
        }
        match (verdict, request.as_ref()) {
            (None, None) => {
                let list = self
                    .iam
                    .list_access_requests(&tenant)
                    .await
                    .map_err(|e| plain(from_iam(e)))?;
                let items: Vec<_> = list.iter().map(view).collect();
                Ok(json_reply(
                    http::StatusCode::OK,
                    &json!({"access_requests": items}),
                ))
            }
            (None, Some(request)) => Ok(json_reply(http::StatusCode::OK, &view(request))),
            (Some(verdict), Some(request)) => {
                // The answer is in the log before it takes effect; if it
                // then cannot take effect, its error response carries the
                // same record: a second entry, with the error's status.
                let answered = audit(Effect::Allow);
                self.write_ahead(answered.clone(), connection)
                    .await
                    .map_err(plain)?;
                match self
                    .iam
                    .decide_access_request(&tenant, &request.id, verdict, &identity.arn)
                    .await
                {
                    Ok(decided) => Ok(json_reply(http::StatusCode::OK, &view(&decided))),
                    // A request no longer in a state the answer applies to.
                    Err(IamError::InvalidInput(m)) => Err((
                        ApiError::new(http::StatusCode::CONFLICT, "InvalidState", m),
                        Some(answered),
                    )),
                    Err(e) => Err((from_iam(e), Some(answered))),
                }
            }
            (Some(_), None) => Err(plain(not_found())),
        }
    }

    /// The tenant caller, by SigV4. A refusal of a known key carries its
    /// audit record.
    async fn authenticate(
        &self,
        parts: &http::request::Parts,
        action: &str,
    ) -> Result<Identity, (ApiError, Option<RequestAudit>)> {
        tenant_api::authenticate(
            &self.iam,
            self.clock.as_ref(),
            parts,
            SIGNING_SERVICES,
            "sign the request with SigV4 (service `access`) as a principal of the tenant",
            from_iam,
            |identity| RequestAudit::new(&identity.tenant_id, actor(identity), action),
        )
        .await
    }
}

/// The body, up to the admin API's limit.
async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = http_body_util::Limited::new(body, limits::ADMIN_REQUEST_BODY_BYTES_MAX);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            http::StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLarge",
            format!(
                "the request body exceeds {} bytes",
                limits::ADMIN_REQUEST_BODY_BYTES_MAX
            ),
        )),
        Err(e) => Err(invalid_request(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// A query parameter, percent-decoded.
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let value = pair.strip_prefix(name)?.strip_prefix('=')?;
        percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()
            .map(|v| v.into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_two_prefixes_are_routed_here() {
        assert!(is_access_path("/_nuage/admin/v1/access-requests"));
        assert!(is_access_path(
            "/_nuage/admin/v1/access-requests/x/credentials"
        ));
        assert!(is_access_path("/_nuage/access/v1/requests/x/approve"));
        assert!(!is_access_path("/_nuage/admin/v1/access-requestsx"));
        assert!(!is_access_path("/_nuage/admin/v1/tenants"));
        assert!(!is_access_path("/bucket/_nuage/access/v1/requests"));
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_value(Some("tenant=my%20t&x=1"), "tenant").as_deref(),
            Some("my t")
        );
        assert_eq!(query_value(Some("tenants=a"), "tenant"), None);
    }
}
