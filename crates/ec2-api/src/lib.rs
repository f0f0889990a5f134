//! The AWS EC2 Query API over compute hosts, so that `aws ec2 ...` runs,
//! describes, stops, starts and terminates virtual machines on Nuage.
//!
//! The hosts are a list of [`ScheduledHost`]s, each in a topology site: one
//! in this process (`nuage_compute::LocalHost`) or several reached over the
//! host protocol (`nuage-compute-node`), all behind `nuage_compute::HostApi`.
//! RunInstances places each instance on a host whose site the tenant's
//! residency policy and the image's buckets' policies allow ([`schedule`]);
//! every other action goes to the host the instance's record names.
//!
//! One request goes: form parameters ([`params`]) -> SigV4 verification for
//! service `ec2` and the caller's identity (`Iam::resolve`, session token
//! checked) -> the action -> authorization of `ec2:ActionName` on the EC2 ARN
//! it touches (`arn:aws:ec2:REGION:ACCOUNT:instance/ID`, `image/ami-..`,
//! `key-pair/NAME`) -> the tenant's records ([`store`]) and the compute host
//! (`nuage-compute`) -> EC2 XML ([`xml`]); errors map to EC2's codes in one
//! place ([`error`]).
//!
//! *Invariant:* the tenant every operation acts in is the caller's. Key
//! pairs, images and instance ownership are stored under the tenant's id,
//! and an instance the caller's tenant does not own is `NotFound` whatever
//! the host holds, so no request can see or touch another tenant's VM.
//!
//! *Boundaries:* this crate speaks the wire protocol. It keeps its own small
//! records in the document store, reads image objects only through the
//! [`ObjectReader`] the binary gives it (which reads as the caller, so S3
//! permissions apply), never reads the environment, and does not depend on
//! the S3 front end. Every response to a caller whose key names a tenant
//! carries a [`nuage_audit::RequestAudit`] for the binary to log.

mod error;
mod handlers;
pub mod limits;
mod params;
mod store;
mod tokens;
mod xml;

pub use error::{Ec2Error, Ec2Result};

use bytes::Bytes;
use nuage_audit::{Actor, ActorKind, RequestAudit};
use nuage_base::Clock;
use nuage_compute::HostApi;
use nuage_iam::{Iam, IamError, Identity, PrincipalKind};
use nuage_meta::DocumentStore;
use nuage_sigv4::{Credential, SignedRequest};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use limits::REQUEST_BODY_BYTES_MAX;

/// What the HTTP layer knows about a request that the request does not say.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub request_id: String,
    /// `aws:SourceIp`.
    pub source_ip: Option<IpAddr>,
    /// `aws:SecureTransport`.
    pub secure_transport: bool,
}

/// Why an object could not be read for an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectReadError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("the object is larger than {0} bytes")]
    TooLarge(u64),
    #[error("{0}")]
    Failed(String),
}

/// Reads an object of the object store into a file, as `caller`: the
/// binary implements it over the storage service and checks `s3:GetObject`
/// (identity and bucket policies) exactly as an S3 GET would.
#[async_trait::async_trait]
pub trait ObjectReader: Send + Sync + 'static {
    /// Copies `bucket/key` into `dest` (created), at most `bytes_max`
    /// bytes; returns the size.
    async fn copy_to_file(
        &self,
        caller: &Identity,
        context: &RequestContext,
        bucket: &str,
        key: &str,
        dest: &Path,
        bytes_max: u64,
    ) -> Result<u64, ObjectReadError>;

    /// Whether `caller` may read `bucket/key`: the decision
    /// [`Self::copy_to_file`] makes before it reads (the same refusals, a
    /// bucket that does not exist is `NotFound` once the caller may read
    /// it), without reading. Asked before anything about a bucket (its
    /// residency policy) shapes an answer, so that a caller learns nothing
    /// of a bucket it may not read.
    async fn authorize_read(
        &self,
        caller: &Identity,
        context: &RequestContext,
        bucket: &str,
        key: &str,
    ) -> Result<(), ObjectReadError>;

    /// The effective residency policy (JSON) of `bucket`: its own, else its
    /// tenant's where the store places by it; None for none, or for a
    /// bucket that does not exist. Image bytes copied to a compute host
    /// stay within it. Callers ask [`Self::authorize_read`] first.
    async fn residency_policy(&self, bucket: &str) -> Result<Option<String>, ObjectReadError>;
}

/// A compute host the EC2 API schedules onto.
#[derive(Clone)]
pub struct ScheduledHost {
    /// Its id (the topology's, or `local`).
    pub id: String,
    /// Its topology site: an instance runs here only when the tenant's (and
    /// the image's buckets') residency policies allow it.
    pub site: nuage_placement::Site,
    /// The zone its instances show (and their guests are told).
    pub availability_zone: String,
    /// The host in this process (`hosts = "local"`): instance records from
    /// before several hosts, which name no host, are its.
    pub local: bool,
    pub host: Arc<dyn HostApi>,
}

/// How this server's EC2 API is set up.
#[derive(Debug, Clone)]
pub struct Ec2Settings {
    /// The region in ARNs and `DescribeAvailabilityZones`.
    pub region: String,
    /// Where image objects are staged before a host caches them.
    pub staging_dir: PathBuf,
}

/// The EC2 front end.
#[derive(Clone)]
pub struct Ec2Api {
    hosts: Arc<Vec<ScheduledHost>>,
    records: store::Records,
    iam: Iam,
    clock: Arc<dyn Clock>,
    objects: Arc<dyn ObjectReader>,
    settings: Arc<Ec2Settings>,
    /// Image stagings (objects read into `staging_dir`) running at once,
    /// gateway-wide: at most [`limits::STAGINGS_IN_FLIGHT_MAX`].
    stagings: Arc<tokio::sync::Semaphore>,
    /// One push of an image to a host at a time: concurrent runs that
    /// need the same image on the same host wait for the first push.
    pushes: handlers::PushLocks,
}

const SIGNING_SERVICES: &[&str] = &["ec2"];

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

impl Ec2Api {
    #[must_use]
    pub fn new(
        hosts: Vec<ScheduledHost>,
        docs: Arc<dyn DocumentStore>,
        iam: Iam,
        clock: Arc<dyn Clock>,
        objects: Arc<dyn ObjectReader>,
        settings: Ec2Settings,
    ) -> Self {
        Self {
            hosts: Arc::new(hosts),
            records: store::Records::new(docs),
            iam,
            clock,
            objects,
            settings: Arc::new(settings),
            stagings: Arc::new(tokio::sync::Semaphore::new(limits::STAGINGS_IN_FLIGHT_MAX)),
            pushes: handlers::PushLocks::default(),
        }
    }

    /// Whether a request is for EC2: `POST /` with a form body (or `GET`/`POST
    /// /?Action=...`) signed with SigV4 for service `ec2`. The signature's
    /// scope is what tells it from an IAM/STS query request, which has the
    /// same shape; an unsigned request is left to the IAM front end.
    #[must_use]
    pub fn is_match(method: &http::Method, uri: &http::Uri, headers: &http::HeaderMap) -> bool {
        let has_action = uri.query().is_some_and(|q| {
            q.split('&')
                .any(|p| p == "Action" || p.starts_with("Action="))
        });
        let shape = uri.path() == "/"
            && ((method == http::Method::POST && is_form(headers))
                || ((method == http::Method::GET || method == http::Method::POST) && has_action));
        shape && nuage_sigv4::signing_service(headers).as_deref() == Some("ec2")
    }

    /// Answers one request. Never fails: every problem is an EC2 error response.
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
            Err(e) => (Err(e), None),
            Ok(body) => self.serve(&parts, &body, context).await,
        };
        let (status, text) = match outcome {
            Ok((action, inner)) => (
                http::StatusCode::OK,
                xml::response(&action, &context.request_id, &inner),
            ),
            Err(e) => (e.status, xml::error(&e, &context.request_id)),
        };
        let mut response = http::Response::new(Bytes::from(text));
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/xml;charset=UTF-8"),
        );
        if let Some(audit) = audit {
            response.extensions_mut().insert(audit);
        }
        response
    }

    /// The answer to an EC2 request on a server without `[compute]`.
    #[must_use]
    pub fn disabled_response(request_id: &str) -> http::Response<Bytes> {
        let error = Ec2Error::bad_request(
            "UnsupportedOperation",
            "this Nuage server runs no virtual machines: its configuration has no [compute] section",
        );
        let mut response = http::Response::new(Bytes::from(xml::error(&error, request_id)));
        *response.status_mut() = error.status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/xml;charset=UTF-8"),
        );
        response
    }

    /// [`Self::handle`] on a task of its own, so that a request's effects run
    /// to completion even when the client goes away or the connection is
    /// dropped: a RunInstances cut short would leave a VM that no record
    /// owns, a RegisterImage its staging files.
    pub async fn handle_detached<B>(
        &self,
        request: http::Request<B>,
        context: RequestContext,
    ) -> http::Response<Bytes>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let api = self.clone();
        let request_id = context.request_id.clone();
        match tokio::spawn(async move { api.handle(request, &context).await }).await {
            Ok(response) => response,
            Err(e) => {
                let error = Ec2Error::internal(format!("the request's task ended: {e}"));
                let mut response =
                    http::Response::new(Bytes::from(xml::error(&error, &request_id)));
                *response.status_mut() = error.status;
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/xml;charset=UTF-8"),
                );
                response
            }
        }
    }

    /// The answer sent instead of a response that could not be recorded in
    /// the tenant's audit log (the binary fails closed).
    #[must_use]
    pub fn audit_failure_response(request_id: &str) -> http::Response<Bytes> {
        let error = Ec2Error::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "The request could not be recorded in the tenant's audit log, so its response is \
             withheld. Its effect may have taken place: check before retrying.",
        );
        let mut response = http::Response::new(Bytes::from(xml::error(&error, request_id)));
        *response.status_mut() = error.status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/xml;charset=UTF-8"),
        );
        response
    }

    async fn serve(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        context: &RequestContext,
    ) -> (Ec2Result<(String, String)>, Option<RequestAudit>) {
        let form_body: &[u8] = if parts.method == http::Method::POST && is_form(&parts.headers) {
            body
        } else {
            b""
        };
        let params = match params::Params::parse(parts.uri.query(), form_body) {
            Ok(p) => p,
            Err(e) => return (Err(e), None),
        };
        let name = params.get("Action").unwrap_or("").to_owned();
        let asked = format!(
            "ec2:{}",
            nuage_audit::client_text(if name.is_empty() {
                "MissingAction"
            } else {
                &name
            })
        );
        let identity = match self.authenticate(parts, body).await {
            Ok(identity) => identity,
            Err((e, Some((tenant, claimed)))) => {
                return (Err(e), Some(RequestAudit::new(tenant, claimed, asked)));
            }
            Err((e, None)) => return (Err(e), None),
        };
        let audit = RequestAudit::new(&identity.tenant_id, actor(&identity), asked);
        if name.is_empty() {
            return (
                Err(Ec2Error::bad_request(
                    "MissingAction",
                    "The request must contain the parameter Action",
                )),
                Some(audit),
            );
        }
        let call = handlers::Call {
            api: self,
            identity: &identity,
            context,
            params: &params,
            decided: std::sync::Mutex::new(None),
            seen: handlers::HostsSeen::default(),
        };
        let result = call.run(&name).await.map(|inner| (name.clone(), inner));
        if let Err(e) = &result {
            tracing::debug!(caller = %identity.arn, code = e.code, message = %e.message, "EC2 request refused");
        }
        let audit = match call.decided.into_inner().ok().flatten() {
            Some((resource, decision)) => audit.on(resource).decided(
                if decision.allowed {
                    nuage_audit::Effect::Allow
                } else {
                    nuage_audit::Effect::Deny
                },
                decision.policy,
                decision.statement,
            ),
            None => audit,
        };
        (result, Some(audit))
    }

    /// The caller: a valid SigV4 signature (service `ec2`) by a known, active
    /// key, with its session token when the key is temporary. A refusal
    /// carries the tenant and principal once the key is known, for the log.
    async fn authenticate(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Result<Identity, (Ec2Error, Option<(String, Actor)>)> {
        let now_unix_s = self.clock.now_unix_ns().div_euclid(1_000_000_000);
        let credential = Credential::from_headers(&parts.headers, SIGNING_SERVICES, now_unix_s)
            .map_err(|e| (Ec2Error::from_sigv4(e), None))?
            .ok_or_else(|| {
                (
                    Ec2Error::bad_request(
                        "MissingAuthenticationToken",
                        "the request must be signed with Signature Version 4",
                    ),
                    None,
                )
            })?;
        let identity = match self.iam.resolve(credential.access_key_id()).await {
            Ok(Some(identity)) => identity,
            Ok(None) | Err(IamError::ExpiredToken) => return Err((Ec2Error::auth_failure(), None)),
            Err(e) => return Err((Ec2Error::internal(e), None)),
        };
        let claimed = |identity: &Identity| Some((identity.tenant_id.clone(), actor(identity)));
        let signed = SignedRequest {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            body,
        };
        if let Err(e) = credential.verify(&signed, &identity.secret_access_key) {
            return Err((Ec2Error::from_sigv4(e), claimed(&identity)));
        }
        let presented = parts
            .headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok());
        if !identity.session_token_matches(presented) {
            return Err((Ec2Error::auth_failure(), claimed(&identity)));
        }
        Ok(identity)
    }
}

/// The audit log's account of a caller.
fn actor(identity: &Identity) -> Actor {
    let kind = match identity.kind {
        PrincipalKind::User { .. } => ActorKind::TenantUser,
        PrincipalKind::AssumedRole { .. } => ActorKind::RoleSession,
    };
    Actor::signed(kind, &identity.arn, &identity.access_key_id)
}

/// Reads the body, refusing more than [`REQUEST_BODY_BYTES_MAX`].
async fn read_body<B>(parts: &http::request::Parts, body: B) -> Ec2Result<Bytes>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    nuage_sigv4::read_limited(&parts.headers, body, REQUEST_BODY_BYTES_MAX)
        .await
        .map_err(|e| match e {
            nuage_sigv4::BodyError::TooLarge => Ec2Error::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!("a request body may hold at most {REQUEST_BODY_BYTES_MAX} bytes"),
            ),
            nuage_sigv4::BodyError::Incomplete(why) => Ec2Error::bad_request(
                "IncompleteBody",
                format!("the request body could not be read: {why}"),
            ),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn matches(method: &str, uri: &str, headers: &[(&str, &str)]) -> bool {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        Ec2Api::is_match(&method.parse().unwrap(), &uri.parse().unwrap(), &map)
    }

    #[test]
    fn matches_only_requests_signed_for_ec2() {
        let form = (
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        );
        let auth = |service: &str| {
            format!(
                "AWS4-HMAC-SHA256 Credential=AK/20240501/fr-par/{service}/aws4_request, SignedHeaders=host, Signature=00"
            )
        };
        let ec2 = auth("ec2");
        let iam = auth("iam");
        let s3 = auth("s3");
        assert!(matches("POST", "/", &[form, ("authorization", &ec2)]));
        assert!(matches(
            "GET",
            "/?Action=DescribeInstances&Version=2016-11-15",
            &[("authorization", &ec2)]
        ));
        assert!(
            !matches("POST", "/", &[form]),
            "unsigned: the IAM front end's"
        );
        assert!(!matches("POST", "/", &[form, ("authorization", &iam)]));
        assert!(!matches("POST", "/", &[form, ("authorization", &s3)]));
        assert!(!matches("GET", "/", &[("authorization", &ec2)]));
        assert!(!matches(
            "POST",
            "/bucket",
            &[form, ("authorization", &ec2)]
        ));
        assert!(!matches(
            "PUT",
            "/?Action=RunInstances",
            &[("authorization", &ec2)]
        ));
    }
}
