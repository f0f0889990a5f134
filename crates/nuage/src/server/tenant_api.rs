//! What the tenant-facing JSON APIs on the S3 port share (`audit_api`,
//! `residency_api`, and the tenant half of `access_api`): the JSON error
//! `{"error":{"code":..,"message":..}}`, the SigV4 authentication of a
//! tenant's principal, and the audit actor it is recorded as.
//!
//! Each API keeps what differs: its credential scopes and the hint sent when
//! a request is unsigned, how an identity service failure reads, and the
//! audit record of a refused known key.

use bytes::Bytes;
use nuage_audit::{Actor, ActorKind, RequestAudit};
use nuage_base::Clock;
use nuage_iam::{Iam, IamError, Identity, PrincipalKind};
use nuage_sigv4::{Credential, SigV4Error, SignedRequest};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// An error on the wire: status, code, message.
pub(crate) struct ApiError {
    status: http::StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: http::StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(http::StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn from_sigv4(error: SigV4Error) -> Self {
        match error {
            SigV4Error::Mismatch => Self::new(
                http::StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                "the request signature does not match: check the secret key and the signing method",
            ),
            SigV4Error::Expired(m) => Self::new(http::StatusCode::FORBIDDEN, "RequestExpired", m),
            e @ (SigV4Error::Incomplete(_) | SigV4Error::WrongService { .. }) => {
                Self::bad_request("IncompleteSignature", e.to_string())
            }
        }
    }

    pub(crate) fn response(&self) -> http::Response<Bytes> {
        let body = json!({"error": {"code": self.code, "message": self.message}}).to_string();
        reply(self.status, "application/json", Bytes::from(body))
    }
}

/// A response with `status`, `content_type` and `body`.
pub(crate) fn reply(
    status: http::StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> http::Response<Bytes> {
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// The JSON error sent instead of a response that could not be recorded in
/// the audit log (the server fails closed).
#[must_use]
pub fn audit_failure_response() -> http::Response<Bytes> {
    ApiError::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "AuditLogUnavailable",
        "the request could not be recorded in the tenant's audit log, so its response is withheld",
    )
    .response()
}

/// `response`, carrying `audit` (when there is one) for the server to log.
pub(crate) fn with_audit(
    mut response: http::Response<Bytes>,
    audit: Option<RequestAudit>,
) -> http::Response<Bytes> {
    if let Some(audit) = audit {
        response.extensions_mut().insert(audit);
    }
    response
}

/// A read: `GET` or `HEAD` (else 405 `MethodNotAllowed`, `read_only_message`)
/// without a body (else 400 `UnexpectedBody`, `no_body_message`).
pub(crate) fn expect_read(
    parts: &http::request::Parts,
    read_only_message: &'static str,
    no_body_message: &'static str,
) -> Result<(), ApiError> {
    if parts.method != http::Method::GET && parts.method != http::Method::HEAD {
        return Err(ApiError::new(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            read_only_message,
        ));
    }
    if declares_body(&parts.headers) {
        return Err(ApiError::bad_request("UnexpectedBody", no_body_message));
    }
    Ok(())
}

/// Whether the request declares a body (`Content-Length` above 0): the
/// signature covers an empty one, and no call of these APIs carries one.
pub(crate) fn declares_body(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// The condition keys a policy may test about the connection
/// (`aws:SourceIp`, `aws:SecureTransport`).
pub(crate) fn connection_context(source: IpAddr, secure: bool) -> BTreeMap<String, Vec<String>> {
    let mut keys = BTreeMap::new();
    keys.insert("aws:SourceIp".to_owned(), vec![source.to_string()]);
    keys.insert("aws:SecureTransport".to_owned(), vec![secure.to_string()]);
    keys
}

/// The identity service's refusals a tenant may see (a suspended tenant, an
/// expired session); any other error is `other`'s to report.
pub(crate) fn from_iam(error: IamError, other: impl FnOnce(IamError) -> ApiError) -> ApiError {
    match error {
        IamError::TenantSuspended => ApiError::new(
            http::StatusCode::FORBIDDEN,
            "AccessDenied",
            "all access to this tenant has been disabled",
        ),
        IamError::ExpiredToken => ApiError::new(
            http::StatusCode::FORBIDDEN,
            "ExpiredToken",
            "the session token has expired",
        ),
        error => other(error),
    }
}

/// A tenant's principal, as the audit log names it.
pub(crate) fn actor(identity: &Identity) -> Actor {
    let kind = match identity.kind {
        PrincipalKind::User { .. } => ActorKind::TenantUser,
        PrincipalKind::AssumedRole { .. } => ActorKind::RoleSession,
    };
    Actor::signed(kind, &identity.arn, &identity.access_key_id)
}

/// The caller, by SigV4 over an empty body, with a credential scoped to one
/// of `signing_services`. An unsigned request gets `missing_auth_message`;
/// an identity service failure, `from_iam`'s error. A refusal of a known key
/// (bad signature, wrong session token) carries the audit record `refused`
/// builds for it.
pub(crate) async fn authenticate(
    iam: &Iam,
    clock: &dyn Clock,
    parts: &http::request::Parts,
    signing_services: &[&str],
    missing_auth_message: &'static str,
    from_iam: fn(IamError) -> ApiError,
    refused: impl Fn(&Identity) -> RequestAudit,
) -> Result<Identity, (ApiError, Option<RequestAudit>)> {
    let now_unix_s = clock.now_unix_ns().div_euclid(1_000_000_000);
    let credential = Credential::from_headers(&parts.headers, signing_services, now_unix_s)
        .map_err(|e| (ApiError::from_sigv4(e), None))?
        .ok_or_else(|| {
            (
                ApiError::new(
                    http::StatusCode::FORBIDDEN,
                    "MissingAuthentication",
                    missing_auth_message,
                ),
                None,
            )
        })?;
    let identity = match iam.resolve(credential.access_key_id()).await {
        Ok(Some(identity)) => identity,
        Ok(None) => {
            return Err((
                ApiError::new(
                    http::StatusCode::FORBIDDEN,
                    "InvalidAccessKeyId",
                    "the access key does not exist or is not active",
                ),
                None,
            ));
        }
        Err(e) => return Err((from_iam(e), None)),
    };
    let signed = SignedRequest {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body: b"",
    };
    if let Err(e) = credential.verify(&signed, &identity.secret_access_key) {
        return Err((ApiError::from_sigv4(e), Some(refused(&identity))));
    }
    let presented = parts
        .headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok());
    if !identity.session_token_matches(presented) {
        return Err((
            ApiError::new(
                http::StatusCode::FORBIDDEN,
                "InvalidToken",
                "the session token is missing or does not match the access key",
            ),
            Some(refused(&identity)),
        ));
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn errors_are_json_with_code_and_message() {
        let response = audit_failure_response();
        assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            "application/json"
        );
        assert_eq!(
            response.body().as_ref(),
            br#"{"error":{"code":"AuditLogUnavailable","message":"the request could not be recorded in the tenant's audit log, so its response is withheld"}}"#
        );
        let response = ApiError::bad_request("InvalidArgument", "a \"quoted\" name").response();
        assert_eq!(response.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(
            response.body().as_ref(),
            br#"{"error":{"code":"InvalidArgument","message":"a \"quoted\" name"}}"#
        );
    }

    #[test]
    fn only_a_positive_content_length_declares_a_body() {
        let mut headers = http::HeaderMap::new();
        assert!(!declares_body(&headers));
        headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from_static("0"),
        );
        assert!(!declares_body(&headers));
        headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from_static("1"),
        );
        assert!(declares_body(&headers));
    }

    #[test]
    fn the_connection_context_names_source_and_transport() {
        let keys = connection_context(IpAddr::from([192, 0, 2, 7]), true);
        assert_eq!(keys["aws:SourceIp"], vec!["192.0.2.7".to_owned()]);
        assert_eq!(keys["aws:SecureTransport"], vec!["true".to_owned()]);
        assert_eq!(keys.len(), 2);
    }
}
