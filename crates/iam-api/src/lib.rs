//! The AWS IAM and STS Query APIs, so that `aws iam ...` and `aws sts ...`
//! (and every SDK) work unchanged against a Nuage endpoint.
//!
//! One request goes: form parameters ([`params`]) -> SigV4 verification
//! (`nuage-sigv4`) and the caller's identity (`Iam::resolve`, session token
//! checked) -> a closed [`action::Action`] -> authorization of `iam:ActionName`
//! on the ARN of the entity it touches (`Iam::authorize`) -> the identity
//! service -> an AWS Query XML response ([`xml`]); errors map to AWS codes in
//! one place ([`error`]).
//!
//! *Invariant:* the tenant every operation acts in is the caller's, taken from
//! its credentials; nothing in a request can name another tenant's entities.
//!
//! *Boundaries:* this crate parses the wire protocol and nothing else. It
//! never stores anything itself (the identity service does), never reads the
//! environment, and does not depend on the S3 front end: the binary routes
//! query requests here ([`IamQueryApi::is_match`]) before s3s sees them, and
//! passes what the connection knows ([`RequestContext`]).
//!
//! *Audit:* every response to a caller whose access key names a tenant
//! (allowed, denied, failed, signatures that do not verify or are dated too
//! far from now, and expired session keys) carries a
//! [`nuage_audit::RequestAudit`] in its extensions: who, which action on which
//! ARN, and the decision with the policy and statement that made it. The
//! binary appends it to the tenant's log before sending the response. A
//! request whose key is unknown names no tenant and carries none.

mod action;
mod error;
#[cfg(test)]
mod flow_tests;
mod handlers;
mod params;
mod xml;

use bytes::Bytes;
use error::ApiError;
use nuage_audit::{Actor, ActorKind, Effect, RequestAudit};
use nuage_base::Clock;
use nuage_base::limits::QUERY_API_BODY_BYTES_MAX;
use nuage_iam::{Iam, IamError, Identity, PrincipalKind};
use nuage_sigv4::{Credential, SigV4Error, SignedRequest};
use std::net::IpAddr;
use std::sync::Arc;

/// Which of the two query APIs a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Iam,
    Sts,
}

impl Api {
    /// The prefix of this API's actions (`iam:CreateUser`, `sts:AssumeRole`).
    fn action_prefix(self) -> &'static str {
        match self {
            Self::Iam => "iam",
            Self::Sts => "sts",
        }
    }

    pub(crate) fn namespace(self) -> &'static str {
        match self {
            Self::Iam => "https://iam.amazonaws.com/doc/2010-05-08/",
            Self::Sts => "https://sts.amazonaws.com/doc/2011-06-15/",
        }
    }

    pub(crate) fn version(self) -> &'static str {
        match self {
            Self::Iam => "2010-05-08",
            Self::Sts => "2011-06-15",
        }
    }

    /// A first guess, for errors raised before the action is known.
    fn guess(version: Option<&str>, signing_service: Option<&str>) -> Self {
        if version == Some(Self::Sts.version())
            || (version.is_none() && signing_service == Some("sts"))
        {
            Self::Sts
        } else {
            Self::Iam
        }
    }
}

/// The credential scopes this front end accepts.
const SIGNING_SERVICES: &[&str] = &["iam", "sts"];

/// What the HTTP layer knows about a request that the request does not say.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Echoed in every response body and in `x-amzn-RequestId`.
    pub request_id: String,
    /// The client's address: `aws:SourceIp`.
    pub source_ip: Option<IpAddr>,
    /// Whether the connection is TLS: `aws:SecureTransport`.
    pub secure_transport: bool,
}

/// The IAM and STS query front end.
#[derive(Clone)]
pub struct IamQueryApi {
    iam: Iam,
    clock: Arc<dyn Clock>,
}

fn is_form(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn has_action_parameter(uri: &http::Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "Action" || p.starts_with("Action="))
    })
}

impl IamQueryApi {
    #[must_use]
    pub fn new(iam: Iam, clock: Arc<dyn Clock>) -> Self {
        Self { iam, clock }
    }

    /// Whether a request is an IAM or STS query request: `POST /` with a form
    /// body, or `GET`/`POST /?Action=...`, unsigned or signed with SigV4 for
    /// `iam` or `sts`. No S3 operation has that shape (browser POST uploads are
    /// `multipart/form-data` on a bucket), and anything signed otherwise (for
    /// `s3`, or with SigV2) is left to the S3 front end.
    #[must_use]
    pub fn is_match(method: &http::Method, uri: &http::Uri, headers: &http::HeaderMap) -> bool {
        let shape = uri.path() == "/"
            && ((method == http::Method::POST && is_form(headers))
                || ((method == http::Method::GET || method == http::Method::POST)
                    && has_action_parameter(uri)));
        let signed_for_us = !headers.contains_key(http::header::AUTHORIZATION)
            || matches!(
                nuage_sigv4::signing_service(headers).as_deref(),
                Some("iam" | "sts")
            );
        shape && signed_for_us
    }

    /// Answers one query request. Never fails: every problem is an AWS error response.
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
        let signing_service = nuage_sigv4::signing_service(&parts.headers);
        let (api, outcome, audit) = match read_body(&parts, body).await {
            Err(e) => (Api::guess(None, signing_service.as_deref()), Err(e), None),
            Ok(body) => {
                self.serve(&parts, &body, context, signing_service.as_deref())
                    .await
            }
        };
        let (status, text) = match outcome {
            Ok((name, result)) => (
                http::StatusCode::OK,
                xml::response(api, &name, result.as_deref(), &context.request_id),
            ),
            Err(e) => (e.status, xml::error(api, &e, &context.request_id)),
        };
        let mut response = http::Response::new(Bytes::from(text));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/xml"),
        );
        if let Ok(id) = http::HeaderValue::from_str(&context.request_id) {
            headers.insert("x-amzn-requestid", id);
        }
        if let Some(audit) = audit {
            response.extensions_mut().insert(audit);
        }
        response
    }

    /// The answer sent instead of a response that could not be recorded in
    /// the tenant's audit log (`ServiceFailure`, 500): the binary fails closed
    /// and withholds the original response. `audit` is the record that could
    /// not be appended (its action says IAM or STS).
    #[must_use]
    pub fn audit_failure_response(audit: &RequestAudit, request_id: &str) -> http::Response<Bytes> {
        let api = if audit.action.starts_with("sts:") {
            Api::Sts
        } else {
            Api::Iam
        };
        let error = ApiError::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceFailure",
            "The request could not be recorded in the tenant's audit log, so its response is \
             withheld. Its effect may have taken place: check before retrying.",
        );
        let mut response = http::Response::new(Bytes::from(xml::error(api, &error, request_id)));
        *response.status_mut() = error.status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/xml"),
        );
        response
    }

    /// Parses, authenticates, authorizes and runs a request; returns the API it
    /// belongs to (for the error namespace), the action's name and the inner
    /// XML of its `Result` element (None for actions that return nothing),
    /// and the audit record when the caller's key names a tenant.
    async fn serve(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        context: &RequestContext,
        signing_service: Option<&str>,
    ) -> (
        Api,
        Result<(String, Option<String>), ApiError>,
        Option<RequestAudit>,
    ) {
        let form_body: &[u8] = if parts.method == http::Method::POST && is_form(&parts.headers) {
            body
        } else {
            b""
        };
        let mut params = match params::Params::parse(parts.uri.query(), form_body) {
            Ok(p) => p,
            Err(e) => return (Api::guess(None, signing_service), Err(e), None),
        };
        let name = params.take("Action");
        let version = params.take("Version");
        let api = Api::guess(version.as_deref(), signing_service);
        // What the caller asked for, as the log names it until authorization
        // names the action exactly.
        let asked = format!(
            "{}:{}",
            api.action_prefix(),
            nuage_audit::client_text(name.as_deref().unwrap_or("MissingAction"))
        );
        // Authenticate before looking at the action, so that an anonymous
        // caller learns nothing about what exists.
        let identity = match self.authenticate(parts, body).await {
            Ok(identity) => identity,
            // A key that exists but a signature or token that does not match,
            // a signature too old, an expired session: the key's tenant is
            // told someone tried (a default deny).
            Err((e, Some((tenant, claimed)))) => {
                let audit = RequestAudit::new(tenant, claimed, asked);
                return (api, Err(e), Some(audit));
            }
            Err((e, None)) => return (api, Err(e), None),
        };
        let audit = RequestAudit::new(&identity.tenant_id, actor(&identity), asked);
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return (
                api,
                Err(ApiError::new(
                    http::StatusCode::BAD_REQUEST,
                    "MissingAction",
                    "the Action parameter is missing",
                )),
                Some(audit),
            );
        };
        let action = match action::Action::parse(&name, version.as_deref(), params) {
            Ok(a) => a,
            Err(e) => return (api, Err(e), Some(audit)),
        };
        let api = action.api();
        let audit = RequestAudit {
            action: format!("{}:{}", api.action_prefix(), action.name()),
            ..audit
        };
        let call = handlers::Call {
            iam: &self.iam,
            identity: &identity,
            context,
            decided: std::sync::Mutex::new(None),
        };
        let result = call.run(action).await.map(|result| (name, result));
        if let Err(e) = &result {
            tracing::debug!(caller = %identity.arn, code = e.code, message = %e.message, "IAM/STS request refused");
        }
        let audit = match call.decided.into_inner().ok().flatten() {
            Some(decided) => RequestAudit {
                action: decided.action,
                ..audit
            }
            .on(decided.resource)
            .decided(
                if decided.decision.allowed {
                    Effect::Allow
                } else {
                    Effect::Deny
                },
                decided.decision.policy,
                decided.decision.statement,
            ),
            // No policy was asked: an action that needs no permission
            // (GetCallerIdentity, GetSessionToken) when it succeeded; a
            // refusal before authorization (a default deny) otherwise.
            None if result.is_ok() => audit.decided(Effect::Allow, None, None),
            None => audit,
        };
        (api, result, Some(audit))
    }

    /// The caller: a valid SigV4 signature by a known, active key, with its
    /// session token when the key is temporary. A refusal carries the tenant
    /// and the principal the key claimed, once the key is known: also for a
    /// signature dated too far from now (`RequestExpired`) and for a session
    /// key that has expired (`ExpiredToken`).
    async fn authenticate(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Result<Identity, (ApiError, Option<(String, Actor)>)> {
        let now_unix_s = self.clock.now_unix_ns().div_euclid(1_000_000_000);
        let credential =
            match Credential::from_headers(&parts.headers, SIGNING_SERVICES, now_unix_s) {
                Ok(credential) => credential,
                Err(e @ SigV4Error::Expired(_)) => {
                    let claim = match claimed_access_key_id(&parts.headers) {
                        Some(key) => self.claim(key).await,
                        None => None,
                    };
                    return Err((ApiError::from_sigv4(e), claim));
                }
                Err(e) => return Err((ApiError::from_sigv4(e), None)),
            };
        let Some(credential) = credential else {
            if parts
                .uri
                .query()
                .is_some_and(|q| q.contains("X-Amz-Signature="))
            {
                return Err((
                    ApiError::incomplete_signature(
                        "presigned (query string) authentication is not supported for IAM and STS; sign the Authorization header",
                    ),
                    None,
                ));
            }
            return Err((ApiError::missing_authentication(), None));
        };
        let identity = match self.iam.resolve(credential.access_key_id()).await {
            Ok(Some(identity)) => identity,
            // AWS answers an unknown and a deactivated key alike.
            Ok(None) => return Err((ApiError::invalid_client_token_id(), None)),
            Err(e @ IamError::ExpiredToken) => {
                let claim = self.claim(credential.access_key_id()).await;
                return Err((ApiError::from_iam(e, Api::Iam), claim));
            }
            Err(e) => return Err((ApiError::from_iam(e, Api::Iam), None)),
        };
        let claimed = |identity: &Identity| Some((identity.tenant_id.clone(), actor(identity)));
        let signed = SignedRequest {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            body,
        };
        if let Err(e) = credential.verify(&signed, &identity.secret_access_key) {
            return Err((ApiError::from_sigv4(e), claimed(&identity)));
        }
        let presented = parts
            .headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok());
        if !identity.session_token_matches(presented) {
            return Err((ApiError::invalid_client_token_id(), claimed(&identity)));
        }
        Ok(identity)
    }

    /// The tenant and principal an access key names, for logging a request
    /// refused before its signature could count: a key that resolves, or an
    /// expired session's. `None` for a key that names no tenant (unknown,
    /// inactive, a suspended tenant, a lookup failure).
    async fn claim(&self, access_key_id: &str) -> Option<(String, Actor)> {
        match self.iam.resolve(access_key_id).await {
            Ok(Some(identity)) => Some((identity.tenant_id.clone(), actor(&identity))),
            Err(IamError::ExpiredToken) => {
                match self.iam.expired_session_claim(access_key_id).await {
                    Ok(Some((tenant, arn, kind))) => {
                        let kind = match kind {
                            PrincipalKind::User { .. } => ActorKind::TenantUser,
                            PrincipalKind::AssumedRole { .. } => ActorKind::RoleSession,
                        };
                        Some((tenant, Actor::signed(kind, arn, access_key_id)))
                    }
                    Ok(None) => None,
                    Err(error) => {
                        tracing::warn!(%error, "cannot read an expired session; its refusal is not logged");
                        None
                    }
                }
            }
            Ok(None) | Err(_) => None,
        }
    }
}

/// The access key id in the `Authorization` header's credential scope
/// (`Credential=KEY/date/region/service/aws4_request`), whatever else is
/// wrong with the request; at most `ACCESS_KEY_ID_CHARS_MAX` characters.
fn claimed_access_key_id(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let credential = value
        .split([' ', ','])
        .find_map(|field| field.strip_prefix("Credential="))?;
    credential
        .split('/')
        .next()
        .filter(|key| !key.is_empty() && key.len() <= ACCESS_KEY_ID_CHARS_MAX)
}

/// The longest access key id looked up for a refused request (AWS's are 16
/// to 128 characters): anything longer names no key.
const ACCESS_KEY_ID_CHARS_MAX: usize = 128;

/// The audit log's account of a caller: its ARN and the key it signed with.
fn actor(identity: &Identity) -> Actor {
    let kind = match identity.kind {
        PrincipalKind::User { .. } => ActorKind::TenantUser,
        PrincipalKind::AssumedRole { .. } => ActorKind::RoleSession,
    };
    Actor::signed(kind, &identity.arn, &identity.access_key_id)
}

/// Reads the body, refusing more than [`QUERY_API_BODY_BYTES_MAX`].
async fn read_body<B>(parts: &http::request::Parts, body: B) -> Result<Bytes, ApiError>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    nuage_sigv4::read_limited(&parts.headers, body, QUERY_API_BODY_BYTES_MAX)
        .await
        .map_err(|e| match e {
            nuage_sigv4::BodyError::TooLarge => ApiError::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!("a query request body may hold at most {QUERY_API_BODY_BYTES_MAX} bytes"),
            ),
            nuage_sigv4::BodyError::Incomplete(why) => ApiError::new(
                http::StatusCode::BAD_REQUEST,
                "IncompleteBody",
                format!("the request body could not be read: {why}"),
            ),
        })
}

/// The caller's user name, for actions whose `UserName` defaults to the caller.
pub(crate) fn caller_user_name(identity: &Identity) -> Result<String, ApiError> {
    match &identity.kind {
        PrincipalKind::User { user_name } => Ok(user_name.clone()),
        PrincipalKind::AssumedRole { .. } => Err(ApiError::validation(
            "Must specify userName when calling with non-User credentials",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(method: &str, uri: &str, headers: &[(&str, &str)]) -> bool {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        IamQueryApi::is_match(&method.parse().unwrap(), &uri.parse().unwrap(), &map)
    }

    #[test]
    fn matches_query_requests_only() {
        let form = (
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        );
        let iam_auth = (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AK/20240501/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00",
        );
        let s3_auth = (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AK/20240501/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
        );
        assert!(matches("POST", "/", &[form, iam_auth]));
        assert!(matches("POST", "/", &[form]));
        assert!(matches(
            "GET",
            "/?Action=ListUsers&Version=2010-05-08",
            &[iam_auth]
        ));
        assert!(!matches("GET", "/", &[iam_auth]), "ListBuckets");
        assert!(
            !matches("GET", "/?Action=ListUsers", &[s3_auth]),
            "signed for S3"
        );
        assert!(!matches("POST", "/", &[form, s3_auth]));
        assert!(
            !matches(
                "POST",
                "/?delete",
                &[form, ("authorization", "AWS AKID:c2lnbmF0dXJl")]
            ),
            "SigV2"
        );
        assert!(!matches("POST", "/bucket", &[form]));
        assert!(!matches(
            "POST",
            "/",
            &[("content-type", "multipart/form-data; boundary=x")]
        ));
        assert!(!matches("PUT", "/?Action=ListUsers", &[]));
        assert!(!matches("GET", "/?ActionX=1", &[]));
    }
}
