//! [`XksProxy`]: the reference XKS proxy a tenant runs on its premises
//! (`nuage xks-proxy serve`), in front of AES-256 keys in its own PKCS#11
//! token.
//!
//! Every request goes through the same steps, each answering the spec's
//! error on failure: HTTPS only (rustls); the URI path must be the configured
//! prefix (ending `/kms/xks/v1`) then `health` or `keys/{id}/metadata|encrypt|decrypt`
//! (`InvalidUriPathException` 404; a GET is 405); the body is read up to
//! [`XKS_REQUEST_BODY_BYTES_MAX`]; the SigV4 signature is verified with
//! `nuage_sigv4` for the service `kms-xks-proxy`, any region, one of the
//! configured credentials, and an `x-amz-date` within five minutes
//! (`AuthenticationFailedException` 401); then, for key operations, the key
//! must be listed in the state file and present in the token
//! (`KeyNotFoundException` 404), the request's `nuageAccessReason` (absent:
//! `REASON_NOT_EXPECTED`) must be one the key allows (`AccessDeniedException`
//! 403), and `encrypt`/`decrypt` need an enabled key (`InvalidStateException`
//! 400). Health checks are excluded from that secondary authorization, as the
//! spec requires. Every decision on a key request is appended to the audit
//! file before the answer leaves.
//!
//! The proxy never issues `ciphertextMetadata` (so the HSM's AAD is exactly
//! `additionalAuthenticatedData`) and refuses a decrypt that carries one.
//! When asked for a CDIV, it decrypts its own output before answering, as the
//! spec's Appendix C recommends.
//!
//! I/O of this module: the listener, the token (through [`HsmKeys`]), the
//! state file (read) and the audit file (appended). It reads no
//! configuration: [`XksProxyConfig`] is built by the binary.

mod audit;
mod hsm;
mod state;

pub use audit::AuditRecord;
pub use hsm::{GCM_IV_BYTES, HsmError, HsmKeys, TokenDescription, XksHsmConfig};
pub use state::{DEFAULT_ALLOWED_REASONS, KeyState, KeyStates, StateError};

use crate::wire::{
    self, BASE64, DecryptRequest, DecryptResponse, EkmFleetDetail, EncryptRequest, EncryptResponse,
    ErrorBody, ErrorName, HealthResponse, KeyMetadataResponse, MetadataOnlyRequest,
    RequestMetadata,
};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use nuage_base::Clock;
use nuage_base::limits::{
    XKS_AAD_BYTES_MAX, XKS_ARN_CHARS_MAX, XKS_CREDENTIALS_MAX, XKS_PLAINTEXT_BYTES_MAX,
    XKS_PROXY_CONNECTIONS_MAX, XKS_REQUEST_BODY_BYTES_MAX, XKS_SIGNATURE_CLOCK_SKEW_S_MAX,
};
use rand::Rng as _;
use state::StateWatcher;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `xksProxyVendor` and `xksProxyModel` of health answers.
const PROXY_VENDOR: &str = "Nuage";
const PROXY_MODEL: &str = concat!("nuage xks-proxy ", env!("CARGO_PKG_VERSION"));

/// One SigV4 credential the proxy accepts (the spec's "authentication
/// key"): Nuage's `XksProxyAuthenticationCredential`.
#[derive(Clone, PartialEq, Eq)]
pub struct XksCredential {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
}

impl fmt::Debug for XksCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XksCredential")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl XksCredential {
    /// A fresh credential as the spec's Appendix A describes: an access key
    /// id of 26 characters from the base-32 alphabet (`A`-`Z`, `2`-`7`), a
    /// secret that is 256 random bits in base64.
    #[must_use]
    pub fn generate() -> Self {
        const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let mut rng = rand::rngs::OsRng;
        let access_key_id = (0..26)
            .map(|_| char::from(BASE32[rng.gen_range(0..BASE32.len())]))
            .collect();
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill(&mut secret[..]);
        Self {
            access_key_id,
            secret_access_key: Zeroizing::new(BASE64.encode(secret.as_ref())),
        }
    }
}

/// A self-signed TLS certificate and its private key, PEM, for `init` and
/// tests: `(certificate, private key)`.
///
/// # Errors
/// A name rcgen cannot put in a certificate.
pub fn self_signed_certificate(
    names: Vec<String>,
) -> Result<(String, Zeroizing<String>), XksProxyError> {
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| XksProxyError::Tls(e.to_string()))?;
    Ok((
        generated.cert.pem(),
        Zeroizing::new(generated.key_pair.serialize_pem()),
    ))
}

/// Everything the proxy needs, built by the binary from its directory.
pub struct XksProxyConfig {
    /// Where to listen (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The URI path prefix, ending `/kms/xks/v1` (`XksProxyUriPath`).
    pub uri_path: String,
    /// The server certificate chain, PEM.
    pub tls_certificate_pem: Vec<u8>,
    /// Its private key, PEM.
    pub tls_private_key_pem: Zeroizing<Vec<u8>>,
    /// The SigV4 credentials accepted (two during a rotation).
    pub credentials: Vec<XksCredential>,
    /// The token holding the keys.
    pub hsm: XksHsmConfig,
    /// The key state file (`keys.json`), reread when it changes.
    pub state_file: PathBuf,
    /// The audit file (`audit.jsonl`), appended to.
    pub audit_file: PathBuf,
    /// The clock signatures are checked against and audit lines are dated by.
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for XksProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XksProxyConfig")
            .field("listen", &self.listen)
            .field("uri_path", &self.uri_path)
            .field("credentials", &self.credentials)
            .field("hsm", &self.hsm)
            .field("state_file", &self.state_file)
            .field("audit_file", &self.audit_file)
            .finish_non_exhaustive()
    }
}

/// Why the proxy could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum XksProxyError {
    #[error("invalid proxy configuration: {0}")]
    Config(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the key token: {0}")]
    Hsm(#[from] HsmError),
    #[error("the key state file: {0}")]
    State(#[from] StateError),
}

/// A bound, ready proxy; [`XksProxy::serve`] runs it.
pub struct XksProxy {
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

impl fmt::Debug for XksProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XksProxy")
            .field("local_addr", &self.local_addr)
            .field("uri_path", &self.shared.uri_path)
            .finish_non_exhaustive()
    }
}

struct Shared {
    uri_path: String,
    secrets: HashMap<String, Zeroizing<String>>,
    keys: HsmKeys,
    states: Arc<StateWatcher>,
    audit_file: PathBuf,
    clock: Arc<dyn Clock>,
}

impl XksProxy {
    /// Checks the configuration, builds TLS, logs in to the token, reads the
    /// state file once (so a broken one stops start-up) and binds.
    ///
    /// # Errors
    /// A bad URI path or credential list, unusable TLS material, a token
    /// that does not open, an invalid state file, or an address in use.
    pub async fn bind(config: XksProxyConfig) -> Result<Self, XksProxyError> {
        wire::check_uri_path(&config.uri_path).map_err(XksProxyError::Config)?;
        if config.credentials.is_empty() || config.credentials.len() > XKS_CREDENTIALS_MAX {
            return Err(XksProxyError::Config(format!(
                "between 1 and {XKS_CREDENTIALS_MAX} SigV4 credentials are needed"
            )));
        }
        let mut secrets = HashMap::new();
        for credential in config.credentials {
            if credential.access_key_id.is_empty() || credential.secret_access_key.is_empty() {
                return Err(XksProxyError::Config(
                    "a credential has an empty access key id or secret".to_owned(),
                ));
            }
            if secrets
                .insert(
                    credential.access_key_id.clone(),
                    credential.secret_access_key,
                )
                .is_some()
            {
                return Err(XksProxyError::Config(format!(
                    "access key id {} is listed twice",
                    credential.access_key_id
                )));
            }
        }
        let tls = server_tls(&config.tls_certificate_pem, &config.tls_private_key_pem)?;
        let keys = HsmKeys::open(config.hsm).await?;
        let states = Arc::new(StateWatcher::new(config.state_file));
        states.current()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| XksProxyError::Listen {
                address: config.listen,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| XksProxyError::Listen {
                address: config.listen,
                source,
            })?;
        Ok(Self {
            listener,
            tls: tokio_rustls::TlsAcceptor::from(tls),
            local_addr,
            shared: Arc::new(Shared {
                uri_path: config.uri_path,
                secrets,
                keys,
                states,
                audit_file: config.audit_file,
                clock: config.clock,
            }),
        })
    }

    /// The address actually bound.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URI path prefix served.
    #[must_use]
    pub fn uri_path(&self) -> &str {
        &self.shared.uri_path
    }

    /// Serves until `shutdown` completes. Connections in progress are
    /// dropped with the runtime.
    ///
    /// # Errors
    /// None today; the signature leaves room for fatal listener errors.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), XksProxyError> {
        let connections = Arc::new(tokio::sync::Semaphore::new(XKS_PROXY_CONNECTIONS_MAX));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&connections).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let tls = self.tls.clone();
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move {
                let _permit = permit;
                let stream =
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                let service = service_fn(move |request| {
                    let shared = Arc::clone(&shared);
                    async move { Ok::<_, std::convert::Infallible>(handle(&shared, request).await) }
                });
                let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                http.http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
                if let Err(error) = http.serve_connection(TokioIo::new(stream), service).await {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            });
        }
        Ok(())
    }
}

fn server_tls(
    certificate_pem: &[u8],
    private_key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, XksProxyError> {
    let certs = rustls_pemfile::certs(&mut &*certificate_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| XksProxyError::Tls(format!("the certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(XksProxyError::Tls(
            "no certificate in the certificate PEM".to_owned(),
        ));
    }
    let key = rustls_pemfile::private_key(&mut &*private_key_pem)
        .map_err(|e| XksProxyError::Tls(format!("the private key PEM: {e}")))?
        .ok_or_else(|| XksProxyError::Tls("no private key in the key PEM".to_owned()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    // TLS 1.2 and 1.3, as the spec requires.
    .with_safe_default_protocol_versions()
    .map_err(|e| XksProxyError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| XksProxyError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A failed request, in the spec's terms.
#[derive(Debug)]
struct Failure {
    name: ErrorName,
    message: String,
    status: Option<u16>,
}

impl Failure {
    fn new(name: ErrorName, message: impl Into<String>) -> Self {
        Self {
            name,
            message: message.into(),
            status: None,
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyOperation {
    Metadata,
    Encrypt,
    Decrypt,
}

impl KeyOperation {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Metadata => "metadata",
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Health,
    Key(String, KeyOperation),
}

/// The route of a path under `prefix`.
fn route(prefix: &str, path: &str) -> Result<Route, Failure> {
    let invalid = || {
        Failure::new(
            ErrorName::InvalidUriPath,
            format!("no XKS API at this path (this proxy serves {prefix}/...)"),
        )
    };
    let rest = path
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(invalid)?;
    if rest == "health" {
        return Ok(Route::Health);
    }
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("keys"), Some(id), Some(operation), None) => {
            let operation = match operation {
                "metadata" => KeyOperation::Metadata,
                "encrypt" => KeyOperation::Encrypt,
                "decrypt" => KeyOperation::Decrypt,
                _ => return Err(invalid()),
            };
            wire::check_key_id(id).map_err(|why| Failure::new(ErrorName::Validation, why))?;
            Ok(Route::Key(id.to_owned(), operation))
        }
        _ => Err(invalid()),
    }
}

fn json_response(status: u16, body: &impl serde::Serialize) -> http::Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = http::Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(failure: &Failure) -> http::Response<Full<Bytes>> {
    json_response(
        failure.status.unwrap_or_else(|| failure.name.status()),
        &ErrorBody {
            error_name: failure.name.as_str().to_owned(),
            error_message: Some(wire::error_message(&failure.message)),
        },
    )
}

async fn handle(shared: &Shared, request: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let result = dispatch(shared, request).await;
    let elapsed_ms = started.elapsed().as_millis();
    match result {
        Ok(response) => {
            tracing::info!(%path, elapsed_ms, "XKS request served");
            response
        }
        Err(failure) => {
            tracing::info!(%path, elapsed_ms, error = failure.name.as_str(), message = %failure.message, "XKS request refused");
            error_response(&failure)
        }
    }
}

async fn dispatch(
    shared: &Shared,
    request: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Failure> {
    let route = route(&shared.uri_path, request.uri().path())?;
    if request.method() != http::Method::POST {
        // The spec: a GET at an API's URI is 405.
        return Err(Failure {
            name: ErrorName::Validation,
            message: "XKS API requests are POST".to_owned(),
            status: Some(405),
        });
    }
    let (parts, body) = request.into_parts();
    let too_large = || {
        Failure::new(
            ErrorName::Validation,
            format!("the request body exceeds {XKS_REQUEST_BODY_BYTES_MAX} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > XKS_REQUEST_BODY_BYTES_MAX as u64) {
        return Err(too_large());
    }
    let body = Limited::new(body, XKS_REQUEST_BODY_BYTES_MAX)
        .collect()
        .await
        .map_err(|_| too_large())?
        .to_bytes();
    let access_key_id = authenticate(shared, &parts, &body);
    match route {
        Route::Health => {
            access_key_id?;
            // The spec lists no ValidationException for health checks, and
            // the answer depends on nothing in the body: it is not parsed.
            Ok(json_response(200, &health(shared).await))
        }
        Route::Key(id, operation) => {
            // Whatever the outcome, the decision is audited; the metadata is
            // read leniently first so even a refusal names who asked.
            let metadata = serde_json::from_slice::<MetadataOnlyRequest>(&body)
                .ok()
                .and_then(|r| r.request_metadata);
            let outcome = match &access_key_id {
                Ok(_) => key_operation(shared, &id, operation, metadata.as_ref(), &body).await,
                Err(failure) => Err(Failure::new(failure.name, failure.message.clone())),
            };
            let record = audit_record(
                shared,
                &id,
                operation,
                access_key_id.ok(),
                metadata,
                outcome.as_ref().err().map(|f| f.name),
            );
            let audit_file = shared.audit_file.clone();
            let written = tokio::task::spawn_blocking(move || audit::append(&audit_file, &record))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
            if let Err(error) = written {
                tracing::error!(%error, file = %shared.audit_file.display(), "cannot write the audit file: refusing the request");
                return Err(Failure::new(
                    ErrorName::Internal,
                    "the proxy cannot write its audit file",
                ));
            }
            outcome
        }
    }
}

/// The access key id whose signature verified.
fn authenticate(
    shared: &Shared,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<String, Failure> {
    let failed = |message: String| Failure::new(ErrorName::AuthenticationFailed, message);
    let now_s = shared.clock.now_unix_ns().div_euclid(1_000_000_000);
    let credential =
        nuage_sigv4::Credential::from_headers(&parts.headers, &[wire::SIGNING_SERVICE], now_s)
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| {
                failed("the request is not signed (no Authorization header)".to_owned())
            })?;
    // The spec asks for five minutes, tighter than the 15 nuage_sigv4 allows.
    let signed_at = parts
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_amz_date)
        .ok_or_else(|| failed("x-amz-date is not YYYYMMDDTHHMMSSZ".to_owned()))?;
    if (now_s - signed_at).abs() > XKS_SIGNATURE_CLOCK_SKEW_S_MAX {
        return Err(failed(format!(
            "x-amz-date is more than {XKS_SIGNATURE_CLOCK_SKEW_S_MAX} seconds from the proxy's clock"
        )));
    }
    let secret = shared
        .secrets
        .get(credential.access_key_id())
        .ok_or_else(|| failed("unknown access key id".to_owned()))?;
    credential
        .verify(
            &nuage_sigv4::SignedRequest {
                method: &parts.method,
                uri: &parts.uri,
                headers: &parts.headers,
                body,
            },
            secret,
        )
        .map_err(|e| failed(e.to_string()))?;
    Ok(credential.access_key_id().to_owned())
}

/// `YYYYMMDDTHHMMSSZ` as Unix seconds.
fn parse_amz_date(value: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(value, format)
        .ok()
        .map(|at| at.assume_utc().unix_timestamp())
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            ErrorName::Validation,
            format!("malformed request body: {e}"),
        )
    })
}

async fn health(shared: &Shared) -> HealthResponse {
    let (vendor, detail) = match shared.keys.health().await {
        Ok(token) => (
            token.manufacturer.clone(),
            EkmFleetDetail {
                id: token.label,
                model: token.model,
                health_status: "ACTIVE".to_owned(),
            },
        ),
        Err(error) => {
            tracing::warn!(%error, "health check: the token does not answer");
            (
                "unknown".to_owned(),
                EkmFleetDetail {
                    id: "pkcs11".to_owned(),
                    model: "unknown".to_owned(),
                    health_status: "UNAVAILABLE".to_owned(),
                },
            )
        }
    };
    HealthResponse {
        xks_proxy_fleet_size: 1,
        xks_proxy_vendor: PROXY_VENDOR.to_owned(),
        xks_proxy_model: PROXY_MODEL.to_owned(),
        ekm_vendor: vendor,
        ekm_fleet_details: vec![detail],
    }
}

fn check_metadata(metadata: Option<&RequestMetadata>) -> Result<&RequestMetadata, Failure> {
    let invalid =
        |what: &str| Failure::new(ErrorName::Validation, format!("requestMetadata: {what}"));
    let metadata = metadata.ok_or_else(|| invalid("missing"))?;
    let required = [
        ("awsPrincipalArn", &metadata.aws_principal_arn),
        ("kmsOperation", &metadata.kms_operation),
        ("kmsRequestId", &metadata.kms_request_id),
    ];
    for (name, value) in required {
        if value.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(&format!("{name} is required")));
        }
    }
    for arn in [&metadata.aws_principal_arn, &metadata.kms_key_arn] {
        if arn
            .as_ref()
            .is_some_and(|a| a.chars().count() > XKS_ARN_CHARS_MAX)
        {
            return Err(invalid(&format!(
                "an ARN is longer than {XKS_ARN_CHARS_MAX} characters"
            )));
        }
    }
    Ok(metadata)
}

fn reason_of(metadata: Option<&RequestMetadata>) -> String {
    metadata
        .and_then(|m| m.nuage_access_reason.clone())
        .unwrap_or_else(|| wire::REASON_NOT_EXPECTED.to_owned())
}

async fn key_operation(
    shared: &Shared,
    id: &str,
    operation: KeyOperation,
    metadata: Option<&RequestMetadata>,
    body: &[u8],
) -> Result<http::Response<Full<Bytes>>, Failure> {
    // Parse errors first: a body that is not JSON has no metadata to check.
    match operation {
        KeyOperation::Metadata => drop(parse::<MetadataOnlyRequest>(body)?),
        KeyOperation::Encrypt => drop(parse::<EncryptRequest>(body)?),
        KeyOperation::Decrypt => drop(parse::<DecryptRequest>(body)?),
    }
    check_metadata(metadata)?;
    let reason = reason_of(metadata);
    // One stat (and rarely a reread) of a tiny file: on the blocking pool
    // all the same, as every file system call here.
    let watcher = Arc::clone(&shared.states);
    let states = tokio::task::spawn_blocking(move || watcher.current())
        .await
        .map_err(|e| StateError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })
        .and_then(|r| r);
    let states = states.map_err(|error| {
        tracing::error!(%error, "the key state file is unusable: refusing key operations");
        Failure::new(
            ErrorName::Internal,
            "the proxy's key state file is unusable",
        )
    })?;
    let not_found = || Failure::new(ErrorName::KeyNotFound, format!("no external key `{id}`"));
    let state = states.keys.get(id).ok_or_else(not_found)?;
    if !state.allowed_reasons.contains(&reason) {
        return Err(Failure::new(
            ErrorName::AccessDenied,
            format!(
                "access reason {reason} is not allowed for key `{id}` (allowed: {})",
                state.allowed_reasons.join(", ")
            ),
        ));
    }
    let hsm_failure = |error: HsmError| match error {
        HsmError::KeyNotFound(_) => not_found(),
        HsmError::InvalidCiphertext => Failure::new(
            ErrorName::InvalidCiphertext,
            "the ciphertext, IV, tag or AAD does not authenticate under the key",
        ),
        HsmError::Timeout(ms) => {
            tracing::error!(ms, "the token did not answer in time");
            Failure::new(
                ErrorName::DependencyTimeout,
                "the external key manager did not answer in time",
            )
        }
        other => {
            tracing::error!(error = %other, "the token failed");
            Failure::new(ErrorName::Internal, "the external key manager failed")
        }
    };
    match operation {
        KeyOperation::Metadata => {
            if !shared.keys.key_exists(id).await.map_err(hsm_failure)? {
                return Err(not_found());
            }
            Ok(json_response(
                200,
                &KeyMetadataResponse {
                    key_spec: wire::KEY_SPEC_AES_256.to_owned(),
                    key_usage: vec!["ENCRYPT".to_owned(), "DECRYPT".to_owned()],
                    key_status: if state.enabled { "ENABLED" } else { "DISABLED" }.to_owned(),
                },
            ))
        }
        KeyOperation::Encrypt => {
            let disabled = !state.enabled;
            let request: EncryptRequest = parse(body)?;
            if disabled {
                return Err(disabled_key(id));
            }
            check_algorithm(request.encryption_algorithm.as_deref())?;
            let want_cdiv = match request.ciphertext_data_integrity_value_algorithm.as_deref() {
                None => false,
                Some(wire::CDIV_ALGORITHM) => true,
                Some(other) => {
                    return Err(Failure::new(
                        ErrorName::UnsupportedOperation,
                        format!("ciphertextDataIntegrityValueAlgorithm {other} (only SHA_256)"),
                    ));
                }
            };
            let plaintext = Zeroizing::new(
                request
                    .plaintext
                    .as_deref()
                    .ok_or_else(|| Failure::new(ErrorName::Validation, "plaintext is required"))
                    .and_then(|p| {
                        BASE64.decode(p).map_err(|_| {
                            Failure::new(ErrorName::Validation, "plaintext is not base64")
                        })
                    })?,
            );
            if plaintext.len() > XKS_PLAINTEXT_BYTES_MAX {
                return Err(Failure::new(
                    ErrorName::UnsupportedOperation,
                    format!("plaintext larger than {XKS_PLAINTEXT_BYTES_MAX} bytes"),
                ));
            }
            let aad = decode_aad(
                request.additional_authenticated_data.as_deref(),
                ErrorName::Validation,
            )?;
            let (iv, ciphertext, tag) = shared
                .keys
                .encrypt(id, plaintext.clone(), aad.clone())
                .await
                .map_err(hsm_failure)?;
            let cdiv = if want_cdiv {
                // Appendix C: the CDIV first, then proof that the output
                // decrypts to the input, so a bit flip is caught here and not
                // when the tenant needs its data.
                let value = wire::cdiv(&aad, &[], &iv, &ciphertext, &tag);
                let check = shared
                    .keys
                    .decrypt(id, iv.clone(), &ciphertext, &tag, aad)
                    .await
                    .map_err(hsm_failure)?;
                if *check != *plaintext {
                    tracing::error!(key = %id, "the token's ciphertext does not decrypt to its plaintext");
                    return Err(Failure::new(
                        ErrorName::Internal,
                        "encryption could not be verified",
                    ));
                }
                Some(BASE64.encode(value))
            } else {
                None
            };
            Ok(json_response(
                200,
                &EncryptResponse {
                    ciphertext: BASE64.encode(&ciphertext),
                    ciphertext_metadata: None,
                    initialization_vector: BASE64.encode(&iv),
                    authentication_tag: BASE64.encode(&tag),
                    ciphertext_data_integrity_value: cdiv,
                },
            ))
        }
        KeyOperation::Decrypt => {
            let request: DecryptRequest = parse(body)?;
            if !state.enabled {
                return Err(disabled_key(id));
            }
            check_algorithm(request.encryption_algorithm.as_deref())?;
            let invalid = |what: &str| Failure::new(ErrorName::InvalidCiphertext, what.to_owned());
            let field = |value: Option<&str>, name: &str| {
                value
                    .ok_or_else(|| invalid(&format!("{name} is required")))
                    .and_then(|v| {
                        BASE64
                            .decode(v)
                            .map_err(|_| invalid(&format!("{name} is not base64")))
                    })
            };
            if request.ciphertext_metadata.is_some() {
                return Err(invalid(
                    "this proxy issues no ciphertextMetadata: the ciphertext is not one of its own",
                ));
            }
            let ciphertext = field(request.ciphertext.as_deref(), "ciphertext")?;
            let iv = field(
                request.initialization_vector.as_deref(),
                "initializationVector",
            )?;
            let tag = field(request.authentication_tag.as_deref(), "authenticationTag")?;
            if ciphertext.len() > XKS_PLAINTEXT_BYTES_MAX {
                return Err(Failure::new(
                    ErrorName::UnsupportedOperation,
                    format!("ciphertext larger than {XKS_PLAINTEXT_BYTES_MAX} bytes"),
                ));
            }
            if !wire::IV_BYTES_ALLOWED.contains(&iv.len()) {
                return Err(invalid("initializationVector must be 12 or 16 bytes"));
            }
            if tag.len() != wire::TAG_BYTES {
                return Err(invalid("authenticationTag must be 16 bytes"));
            }
            let aad = decode_aad(
                request.additional_authenticated_data.as_deref(),
                ErrorName::InvalidCiphertext,
            )?;
            let plaintext = shared
                .keys
                .decrypt(id, iv, &ciphertext, &tag, aad)
                .await
                .map_err(hsm_failure)?;
            let encoded = Zeroizing::new(BASE64.encode(plaintext.as_slice()));
            Ok(json_response(
                200,
                &DecryptResponse {
                    plaintext: encoded.to_string(),
                },
            ))
        }
    }
}

fn disabled_key(id: &str) -> Failure {
    Failure::new(
        ErrorName::InvalidState,
        format!("the external key `{id}` is disabled"),
    )
}

fn check_algorithm(algorithm: Option<&str>) -> Result<(), Failure> {
    match algorithm {
        Some(wire::ENCRYPTION_ALGORITHM) => Ok(()),
        None => Err(Failure::new(
            ErrorName::Validation,
            "encryptionAlgorithm is required",
        )),
        Some(other) => Err(Failure::new(
            ErrorName::UnsupportedOperation,
            format!("encryptionAlgorithm {other} (only AES_GCM)"),
        )),
    }
}

fn decode_aad(aad: Option<&str>, bad: ErrorName) -> Result<Vec<u8>, Failure> {
    let aad = match aad {
        None => Vec::new(),
        Some(text) => BASE64
            .decode(text)
            .map_err(|_| Failure::new(bad, "additionalAuthenticatedData is not base64"))?,
    };
    if aad.len() > XKS_AAD_BYTES_MAX {
        return Err(Failure::new(
            ErrorName::UnsupportedOperation,
            format!("additionalAuthenticatedData larger than {XKS_AAD_BYTES_MAX} bytes"),
        ));
    }
    Ok(aad)
}

fn audit_record(
    shared: &Shared,
    id: &str,
    operation: KeyOperation,
    access_key_id: Option<String>,
    metadata: Option<RequestMetadata>,
    error: Option<ErrorName>,
) -> AuditRecord {
    let now =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(shared.clock.now_unix_ns()))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let time = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    // Only an authenticated caller's statements are worth recording as such.
    let authenticated = access_key_id.is_some();
    let reason = authenticated.then(|| reason_of(metadata.as_ref()));
    let metadata = metadata.filter(|_| authenticated).unwrap_or_default();
    let bounded = |value: Option<String>| {
        value.map(|v| v.chars().take(XKS_ARN_CHARS_MAX).collect::<String>())
    };
    AuditRecord {
        time,
        decision: if error.is_none() { "ALLOW" } else { "DENY" },
        error: error.map(ErrorName::as_str),
        operation: operation.as_str(),
        key_id: id.to_owned(),
        access_key_id,
        principal_arn: bounded(metadata.aws_principal_arn),
        kms_operation: bounded(metadata.kms_operation),
        kms_request_id: bounded(metadata.kms_request_id),
        kms_key_arn: bounded(metadata.kms_key_arn),
        kms_via_service: bounded(metadata.kms_via_service),
        reason: bounded(reason),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn routes_follow_the_prefix() {
        let prefix = "/tenant-a/kms/xks/v1";
        assert_eq!(
            route(prefix, "/tenant-a/kms/xks/v1/health").unwrap(),
            Route::Health
        );
        assert_eq!(
            route(prefix, "/tenant-a/kms/xks/v1/keys/k-1/decrypt").unwrap(),
            Route::Key("k-1".into(), KeyOperation::Decrypt)
        );
        for path in [
            "/kms/xks/v1/health",
            "/tenant-a/kms/xks/v1",
            "/tenant-a/kms/xks/v1/",
            "/tenant-a/kms/xks/v1/keys/k/sign",
            "/tenant-a/kms/xks/v1/keys/k/encrypt/more",
            "/tenant-a/kms/xks/v1health",
        ] {
            let failure = route(prefix, path).unwrap_err();
            assert_eq!(failure.name, ErrorName::InvalidUriPath, "{path}");
        }
        let failure = route(prefix, "/tenant-a/kms/xks/v1/keys/a%2Fb/encrypt").unwrap_err();
        assert_eq!(failure.name, ErrorName::Validation);
    }

    #[test]
    fn generated_credentials_follow_appendix_a() {
        let credential = XksCredential::generate();
        assert_eq!(credential.access_key_id.len(), 26);
        assert!(
            credential
                .access_key_id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
        assert_eq!(
            BASE64
                .decode(credential.secret_access_key.as_str())
                .unwrap()
                .len(),
            32
        );
        assert_ne!(credential, XksCredential::generate());
    }

    #[test]
    fn amz_dates_parse() {
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("2015-08-30T12:36:00Z"), None);
    }
}
