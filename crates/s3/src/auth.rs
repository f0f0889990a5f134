//! Authentication for SigV4: access keys and temporary credentials come from
//! the identity service; its refusals become the S3 errors AWS returns.
//! [`RefusedRequests`] logs the requests s3s refuses before authorization
//! (a signature that does not verify) in the tenant their key names.

use nuage_audit::{Actor, AuditSlot, RequestAudit};
use nuage_iam::{Iam, IamError, PrincipalKind};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Error, S3ErrorCode, S3Result};

/// Looks up the secret of an access key in the identity service.
#[derive(Clone)]
pub struct IamAuth {
    iam: Iam,
}

impl IamAuth {
    #[must_use]
    pub fn new(iam: Iam) -> Self {
        Self { iam }
    }
}

/// The S3 error for an identity-service refusal during authentication.
pub(crate) fn auth_error(e: IamError) -> S3Error {
    match e {
        IamError::ExpiredToken => {
            S3Error::with_message(S3ErrorCode::ExpiredToken, "the provided token has expired")
        }
        IamError::TenantSuspended => S3Error::with_message(
            S3ErrorCode::AllAccessDisabled,
            "all access to this tenant has been disabled",
        ),
        other => {
            tracing::error!(error = %other, "identity lookup failed");
            S3Error::with_message(S3ErrorCode::InternalError, "identity lookup failed")
        }
    }
}

pub(crate) fn invalid_access_key() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::InvalidAccessKeyId,
        "the AWS access key id you provided does not exist in our records",
    )
}

#[async_trait::async_trait]
impl S3Auth for IamAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        // AWS answers an unknown and a deactivated key alike.
        match self.iam.resolve(access_key).await {
            Ok(Some(identity)) => Ok(SecretKey::from(identity.secret_access_key)),
            Ok(None) => Err(invalid_access_key()),
            Err(e) => Err(auth_error(e)),
        }
    }
}

/// `decision.policy` of a request refused by the checks S3 makes before
/// authorizing it (signature, expiry, credential scope, request form): no
/// IAM policy was evaluated. `decision.statement` is then the S3 error code.
pub const REQUEST_CHECKS: &str = "nuage:s3-request-checks";

/// The query parameters that carry a query-string signature (SigV4 and
/// SigV2 presigned URLs): not part of what the request asked for.
const SIGNATURE_PARAMETERS: [&str; 10] = [
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-signedheaders",
    "x-amz-signature",
    "x-amz-security-token",
    "awsaccesskeyid",
    "signature",
    "expires",
];

/// The longest access key id looked up for a refused request (AWS's are 16
/// to 128 characters): anything longer names no key.
const ACCESS_KEY_ID_CHARS_MAX: usize = 128;

/// The longest S3 error code read back from a refusal's body.
const ERROR_CODE_CHARS_MAX: usize = 64;

/// An S3 request that names an access key, as the server saw it before s3s
/// took it: what the log needs if s3s refuses it before Nuage's authorizer
/// describes it. Unsigned requests have none.
#[derive(Debug)]
pub struct SignedAttempt {
    access_key: String,
    presigned: bool,
    method: http::Method,
    uri: http::Uri,
    host: Option<String>,
}

/// Logs the S3 requests that s3s refuses before Nuage's authorizer runs.
///
/// s3s verifies SigV4 itself ([`IamAuth`] only hands it the secret) and
/// answers a signature that does not verify, an expired presigned URL, a
/// credential for another date, or a malformed request without calling
/// Nuage. Such a request still names an access key, hence a tenant: the
/// server keeps a [`SignedAttempt`] of each request before s3s takes it, and
/// after s3s answered with an error that nothing described, [`Self::note`]
/// leaves a deny in the request's [`AuditSlot`], which the server appends
/// like any other entry (durably, before the response; fail closed).
/// A request the authorizer described already is never described twice, and
/// a key that does not exist names no tenant and is not logged.
#[derive(Clone)]
pub struct RefusedRequests {
    iam: Iam,
    hosts: crate::VirtualHosts,
}

impl RefusedRequests {
    #[must_use]
    pub fn new(iam: Iam, hosts: crate::VirtualHosts) -> Self {
        Self { iam, hosts }
    }

    /// The access key `request` is signed with (SigV4 or SigV2, in the
    /// `Authorization` header or a presigned URL's query), without checking
    /// anything: `None` for an unsigned request or a key no access key id
    /// could be. No lookup; a few small copies.
    #[must_use]
    pub fn attempt<B>(&self, request: &http::Request<B>) -> Option<SignedAttempt> {
        let (access_key, presigned) = signed_key(request)?;
        Some(SignedAttempt {
            access_key,
            presigned,
            method: request.method().clone(),
            uri: request.uri().clone(),
            host: request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
                .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned())),
        })
    }

    /// After s3s answered `response` to `attempt`: if it is an error and
    /// nothing described the request in `slot` (the authorizer never ran),
    /// leaves there a deny in the tenant of the attempt's key, naming the S3
    /// error code. Nothing for a key that does not resolve (unknown, inactive,
    /// an expired session, a suspended tenant): no tenant to tell.
    pub async fn note(
        &self,
        slot: &AuditSlot,
        attempt: Option<SignedAttempt>,
        response: &http::Response<s3s::Body>,
    ) {
        let Some(attempt) = attempt else {
            return;
        };
        let status = response.status();
        if !(status.is_client_error() || status.is_server_error()) {
            return;
        }
        // Described by the authorizer or a handler: that is the request's entry.
        if let Some(described) = slot.take() {
            slot.put(described);
            return;
        }
        let Some((tenant, actor, approval)) = self.claim(&attempt).await else {
            return;
        };
        let (bucket, key) = attempt.bucket_and_key(&self.hosts);
        let valid_bucket = bucket
            .as_deref()
            .filter(|b| nuage_base::names::validate_bucket_name(b).is_ok());
        let valid_key = key
            .as_deref()
            .filter(|k| nuage_base::names::validate_object_key(k).is_ok());
        let resource = match (bucket.is_some(), valid_bucket, key.is_some(), valid_key) {
            (false, _, _, _) => Some(crate::access::resource_arn(None, None)),
            (true, Some(b), false, _) => Some(crate::access::resource_arn(Some(b), None)),
            (true, Some(b), true, Some(k)) => Some(crate::access::resource_arn(Some(b), Some(k))),
            // A bucket name or key S3 would refuse: the action says what it was.
            _ => None,
        };
        let action = attempt.action(bucket.is_some(), key.is_some());
        let mut audit = RequestAudit::new(tenant, actor, action).decided(
            nuage_audit::Effect::Deny,
            Some(REQUEST_CHECKS.to_owned()),
            error_code(response.body()),
        );
        audit.resource = resource;
        audit.approval = approval;
        slot.put(audit);
    }

    /// The tenant, the principal and the operator approval (if any) the
    /// attempt's key names: a key that resolves, or an expired session's
    /// (s3s answers `ExpiredToken`; the claim is read from the session
    /// alone). `None` for a key that names no tenant (unknown, inactive, a
    /// suspended tenant, a lookup failure) and for a session whose operator
    /// approval was revoked before its end (the identity service answers
    /// `ExpiredToken` for it without a claim).
    async fn claim(&self, attempt: &SignedAttempt) -> Option<(String, Actor, Option<String>)> {
        match self.iam.resolve(&attempt.access_key).await {
            Ok(Some(identity)) => Some((
                identity.tenant_id.clone(),
                crate::audit::actor(Some(&identity), attempt.presigned),
                identity.approval.map(|a| a.id),
            )),
            Err(IamError::ExpiredToken) => {
                match self.iam.expired_session_claim(&attempt.access_key).await {
                    Ok(Some((tenant, arn, kind))) => {
                        let approval = match &kind {
                            PrincipalKind::AssumedRole {
                                role_name,
                                session_name,
                            } if role_name == nuage_iam::access::OPERATOR_ACCESS_ROLE_NAME => {
                                Some(session_name.clone())
                            }
                            _ => None,
                        };
                        let actor = crate::audit::claimed_actor(
                            &kind,
                            arn,
                            &attempt.access_key,
                            attempt.presigned,
                        );
                        Some((tenant, actor, approval))
                    }
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read an expired session; its refusal is not logged");
                        None
                    }
                }
            }
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, "a refused request's access key names no tenant");
                None
            }
        }
    }
}

impl SignedAttempt {
    /// The bucket and key the request addresses, percent-decoded: the bucket
    /// from a virtual host or else the first path segment, the key the rest.
    fn bucket_and_key(&self, hosts: &crate::VirtualHosts) -> (Option<String>, Option<String>) {
        let path = crate::access::decode_path(self.uri.path());
        let path = path.strip_prefix('/').unwrap_or(&path);
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        if let Some((_, bucket)) = self.host.as_deref().and_then(|h| hosts.bucket_in_host(h)) {
            return (Some(bucket.to_owned()), non_empty(path));
        }
        match path.split_once('/') {
            Some((bucket, key)) => (non_empty(bucket), non_empty(key)),
            None => (non_empty(path), None),
        }
    }

    /// The logged action of a request refused before its operation was
    /// known: `s3:<METHOD> <path form>[?<query parameter names>]`, the path
    /// form being `/`, `/{bucket}` or `/{bucket}/{key}` and the names those
    /// of the query without its signature's (`s3:GET /{bucket}/{key}`,
    /// `s3:PUT /{bucket}?tagging`), at most `AUDIT_CLIENT_TEXT_CHARS_MAX`
    /// characters.
    fn action(&self, bucket: bool, key: bool) -> String {
        let form = match (bucket, key) {
            (false, _) => "/",
            (true, false) => "/{bucket}",
            (true, true) => "/{bucket}/{key}",
        };
        let names: Vec<&str> = self
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
            .filter(|name| {
                !name.is_empty()
                    && !SIGNATURE_PARAMETERS
                        .iter()
                        .any(|p| name.eq_ignore_ascii_case(p))
            })
            .collect();
        let query = if names.is_empty() {
            String::new()
        } else {
            format!("?{}", names.join("&"))
        };
        nuage_audit::client_text(&format!("s3:{} {form}{query}", self.method))
    }
}

/// The access key a request is signed with, and whether in its query (a
/// presigned URL); `None` when unsigned, or when what stands for the key
/// could not be one (only ASCII letters and digits, at most
/// [`ACCESS_KEY_ID_CHARS_MAX`]).
fn signed_key<B>(request: &http::Request<B>) -> Option<(String, bool)> {
    let (access_key, presigned) = match request.headers().get(http::header::AUTHORIZATION) {
        Some(value) => (header_access_key(value.to_str().ok()?)?, false),
        None => (query_access_key(request.uri().query()?)?, true),
    };
    let plausible = (1..=ACCESS_KEY_ID_CHARS_MAX).contains(&access_key.len())
        && access_key.bytes().all(|b| b.is_ascii_alphanumeric());
    plausible.then_some((access_key, presigned))
}

/// The access key of an `Authorization` header: SigV4
/// (`AWS4-HMAC-SHA256 Credential=KEY/date/region/s3/aws4_request, ...`) or
/// SigV2 (`AWS KEY:signature`).
fn header_access_key(value: &str) -> Option<String> {
    if let Some(v2) = value.strip_prefix("AWS ") {
        return v2.split_once(':').map(|(key, _)| key.trim().to_owned());
    }
    let credential = value.split("Credential=").nth(1)?;
    credential.split_once('/').map(|(key, _)| key.to_owned())
}

/// The access key of a presigned URL's query: `X-Amz-Credential` (SigV4)
/// or `AWSAccessKeyId` (SigV2).
fn query_access_key(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        let value = crate::access::decode_path(value);
        match name {
            "X-Amz-Credential" => value.split_once('/').map(|(key, _)| key.to_owned()),
            "AWSAccessKeyId" => Some(value),
            _ => None,
        }
    })
}

/// The `<Code>` of an S3 error body, when it has one that looks like a code.
fn error_code(body: &s3s::Body) -> Option<String> {
    let bytes = body.bytes()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let length = text[start..].find("</Code>")?;
    let code = &text[start..start + length];
    let plausible = (1..=ERROR_CODE_CHARS_MAX).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
    plausible.then(|| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(uri: &str, host: Option<&str>, method: http::Method) -> SignedAttempt {
        SignedAttempt {
            access_key: "AK".into(),
            presigned: false,
            method,
            uri: uri.parse().unwrap_or_default(),
            host: host.map(str::to_owned),
        }
    }

    #[test]
    fn the_access_key_comes_from_either_signature_version() {
        assert_eq!(
            header_access_key(
                "AWS4-HMAC-SHA256 Credential=AKIA123/20261129/fr-par/s3/aws4_request, SignedHeaders=host, Signature=ab"
            )
            .as_deref(),
            Some("AKIA123")
        );
        assert_eq!(
            header_access_key("AWS AKIA456:c2lnbmF0dXJl").as_deref(),
            Some("AKIA456")
        );
        assert_eq!(header_access_key("Bearer token"), None);
        assert_eq!(
            query_access_key(
                "x-id=GetObject&X-Amz-Credential=AKIA789%2F20261129%2Ffr-par%2Fs3%2Faws4_request&X-Amz-Signature=ab"
            )
            .as_deref(),
            Some("AKIA789")
        );
        assert_eq!(
            query_access_key("AWSAccessKeyId=AKIAV2&Expires=1&Signature=x").as_deref(),
            Some("AKIAV2")
        );
        assert_eq!(query_access_key("list-type=2&prefix=a"), None);
    }

    #[test]
    fn an_unsigned_request_or_an_implausible_key_is_no_attempt() {
        let request = |auth: Option<&str>, uri: &str| {
            let mut builder = http::Request::get(uri);
            if let Some(auth) = auth {
                builder = builder.header(http::header::AUTHORIZATION, auth);
            }
            builder.body(()).unwrap_or_default()
        };
        assert_eq!(signed_key(&request(None, "/b/k")), None);
        assert_eq!(signed_key(&request(None, "/b/k?prefix=a")), None);
        assert_eq!(signed_key(&request(Some("AWS ../../etc:x"), "/b/k")), None);
        let long = format!("AWS {}:x", "A".repeat(ACCESS_KEY_ID_CHARS_MAX + 1));
        assert_eq!(signed_key(&request(Some(&long), "/b/k")), None);
        assert_eq!(
            signed_key(&request(Some("AWS AKIA1:x"), "/b/k")),
            Some(("AKIA1".to_owned(), false))
        );
        assert_eq!(
            signed_key(&request(
                None,
                "/b/k?X-Amz-Credential=AKIA2%2Fd%2Fr%2Fs3%2Faws4_request&X-Amz-Signature=x"
            )),
            Some(("AKIA2".to_owned(), true))
        );
    }

    #[test]
    fn the_action_is_the_method_and_the_path_form() {
        let hosts = crate::VirtualHosts::new(vec!["s3.example.fr".into()]);
        let get = |uri: &str, host: Option<&str>| {
            let a = attempt(uri, host, http::Method::GET);
            let (bucket, key) = a.bucket_and_key(&hosts);
            (a.action(bucket.is_some(), key.is_some()), bucket, key)
        };
        assert_eq!(
            get(
                "/photos/2026/a%20b.jpg?X-Amz-Signature=x&x-id=GetObject",
                None
            ),
            (
                "s3:GET /{bucket}/{key}?x-id".to_owned(),
                Some("photos".to_owned()),
                Some("2026/a b.jpg".to_owned())
            )
        );
        assert_eq!(
            get("/?list-type=2&prefix=a", Some("photos.s3.example.fr:9000")),
            (
                "s3:GET /{bucket}?list-type&prefix".to_owned(),
                Some("photos".to_owned()),
                None
            )
        );
        assert_eq!(
            get("/", Some("127.0.0.1:9000")),
            ("s3:GET /".to_owned(), None, None)
        );
        let put = attempt("/b/k?tagging", None, http::Method::PUT);
        assert_eq!(put.action(true, true), "s3:PUT /{bucket}/{key}?tagging");
        // Client-chosen text is bounded.
        let long = attempt(&format!("/b?{}", "n&".repeat(500)), None, http::Method::GET);
        assert_eq!(
            long.action(true, false).chars().count(),
            nuage_base::limits::AUDIT_CLIENT_TEXT_CHARS_MAX
        );
    }

    #[test]
    fn the_error_code_is_read_from_the_body() {
        let body = s3s::Body::from(
            "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>m</Message></Error>"
                .to_owned(),
        );
        assert_eq!(error_code(&body).as_deref(), Some("SignatureDoesNotMatch"));
        let odd = s3s::Body::from("<Error><Code>a b\"c</Code></Error>".to_owned());
        assert_eq!(error_code(&odd), None);
        assert_eq!(error_code(&s3s::Body::from(String::new())), None);
    }
}
