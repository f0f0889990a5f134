//! [`RemoteHost`]: a gateway's client of one compute host, over mutual TLS.
//!
//! The client presents the gateway's certificate and accepts the host only
//! if its certificate, signed by the cluster CA, names the host id and site
//! the topology declares, with role `compute`. Every call is bounded by a
//! timeout (`limits`); a host that cannot be connected to or refuses the
//! handshake gives `HostErrorKind::NotSent` (the request never reached it),
//! one that does not answer in time `HostErrorKind::Unreachable` (it may
//! have acted), never a hang. An image push streams the files back to back, never holding
//! more than one chunk.

use std::path::Path;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full, Limited, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use nuage_compute::{
    HostApi, HostError, HostErrorKind, HostStatus, ImageSource, InstanceRecord, RunRequest, RunSpec,
};
use nuage_node::NodeIdentity;
use nuage_node::tls::{PeerMismatch, TlsMaterial};
use tokio::io::AsyncReadExt as _;

use crate::limits;
use crate::wire::{self, ConsoleOutput, HasImage, ImageParts, Registered};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type RequestBody = UnsyncBoxBody<Bytes, BoxError>;
type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, RequestBody>;

/// How to reach one compute host.
#[derive(Debug, Clone)]
pub struct RemoteHostConfig {
    /// `https://host:port` or `host:port`; the host must be in the
    /// certificate.
    pub endpoint: String,
    /// The host this client means to reach (role compute): its certificate
    /// must name it.
    pub expected: NodeIdentity,
    /// The gateway's certificate and key, and the cluster CA.
    pub tls: TlsMaterial,
}

/// A client of one compute host. Cheap to clone.
#[derive(Clone)]
pub struct RemoteHost {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient,
    base: String,
    host: NodeIdentity,
    mismatch: PeerMismatch,
}

impl std::fmt::Debug for RemoteHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteHost")
            .field("host", &self.inner.host.uri())
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Whether the host ended the TLS handshake with an alert (it refused the
/// gateway's certificate): with TLS 1.3 the client may have written its
/// request before the host checked its certificate, but the host never
/// reads a request on a connection whose handshake it refused.
fn handshake_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    use rustls::AlertDescription as A;
    let mut next = Some(e);
    while let Some(e) = next {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::AlertReceived(alert)) = tls {
            return matches!(
                alert,
                A::HandshakeFailure
                    | A::BadCertificate
                    | A::UnsupportedCertificate
                    | A::CertificateRevoked
                    | A::CertificateExpired
                    | A::CertificateUnknown
                    | A::UnknownCA
                    | A::AccessDenied
                    | A::DecryptError
                    | A::ProtocolVersion
                    | A::InsufficientSecurity
                    | A::CertificateRequired
                    | A::NoApplicationProtocol
            );
        }
        next = e.source();
    }
    false
}

impl RemoteHost {
    /// Builds the client; connects lazily, on the first call.
    ///
    /// # Errors
    /// Bad TLS material.
    pub fn new(config: RemoteHostConfig) -> Result<Self, crate::ComputeNodeError> {
        let (tls, mismatch) = nuage_node::tls::client_config(&config.tls, &config.expected)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(limits::CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(Arc::unwrap_or_clone(tls))
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let http = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(limits::CLIENT_POOL_IDLE)
            .pool_max_idle_per_host(limits::CLIENT_IDLE_CONNECTIONS_MAX)
            .build(connector);
        let endpoint = config.endpoint.trim_end_matches('/');
        let base = if endpoint.starts_with("https://") {
            endpoint.to_owned()
        } else {
            format!("https://{endpoint}")
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                host: config.expected,
                mismatch,
            }),
        })
    }

    /// The host this client reaches.
    #[must_use]
    pub fn host(&self) -> &NodeIdentity {
        &self.inner.host
    }

    fn unreachable(&self, why: impl std::fmt::Display) -> HostError {
        HostError::unreachable(format!(
            "compute host {} at {}: {why}",
            self.inner.host, self.inner.base
        ))
    }

    fn not_sent(&self, why: impl std::fmt::Display) -> HostError {
        HostError::new(
            HostErrorKind::NotSent,
            format!(
                "compute host {} at {}: not reached: {why}",
                self.inner.host, self.inner.base
            ),
        )
    }

    /// Sends a request and reads a JSON answer, all within `wait`. A
    /// failure before the request could be sent (connection refused,
    /// connect timeout, TLS handshake, the host's identity refused) is
    /// `NotSent`: nothing was done there; any later one (the answer broke
    /// off or did not come in time) is `Unreachable`: it may have been.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: Request<RequestBody>,
        wait: Duration,
    ) -> Result<T, HostError> {
        let what = format!("{} {}", req.method(), req.uri().path());
        let exchange = async {
            let response = self.inner.http.request(req).await.map_err(|e| {
                match self
                    .inner
                    .mismatch
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                {
                    Some(why) => self.not_sent(format!("refused its identity: {why}")),
                    // The connector failed (refused, connect timeout, TLS
                    // handshake): no byte of the request reached the host.
                    None if e.is_connect() || handshake_refused(&e) => self.not_sent(chain(&e)),
                    None => self.unreachable(chain(&e)),
                }
            })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), limits::RESPONSE_JSON_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| self.unreachable(format!("{what}: the answer broke off: {e}")))?
                .to_bytes();
            Ok::<_, HostError>((status, body))
        };
        let (status, body) = match tokio::time::timeout(wait, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(self.unreachable(format!("{what}: no answer in {} s", wait.as_secs())));
            }
        };
        if status == StatusCode::OK {
            return serde_json::from_slice(&body).map_err(|e| {
                HostError::new(
                    HostErrorKind::Internal,
                    format!(
                        "compute host {}: {what}: unparsable answer: {e}",
                        self.inner.host
                    ),
                )
            });
        }
        Err(
            serde_json::from_slice::<HostError>(&body).unwrap_or_else(|_| {
                HostError::new(
                    HostErrorKind::Internal,
                    format!(
                        "compute host {}: {what}: {status}: {}",
                        self.inner.host,
                        String::from_utf8_lossy(&body[..body.len().min(512)])
                    ),
                )
            }),
        )
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: RequestBody,
    ) -> Result<Request<RequestBody>, HostError> {
        Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.inner.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| HostError::new(HostErrorKind::InvalidParameter, e.to_string()))
    }

    fn empty() -> RequestBody {
        UnsyncBoxBody::new(Empty::<Bytes>::new().map_err(|never| match never {}))
    }

    fn full(bytes: Vec<u8>) -> RequestBody {
        UnsyncBoxBody::new(Full::new(Bytes::from(bytes)).map_err(|never| match never {}))
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, HostError> {
        let req = self.request(Method::GET, path, Self::empty())?;
        self.call(req, limits::QUICK_CALL_TIMEOUT).await
    }

    async fn lifecycle(&self, id: &str, action: &str) -> Result<InstanceRecord, HostError> {
        check_instance_id(id)?;
        let req = self.request(
            Method::POST,
            &format!("{}/{id}/{action}", wire::INSTANCES_PATH),
            Self::empty(),
        )?;
        self.call(req, limits::LIFECYCLE_CALL_TIMEOUT).await
    }
}

/// An id that is not one is not on any host: refused before it is put in a path.
fn check_instance_id(id: &str) -> Result<(), HostError> {
    if wire::is_instance_id(id) {
        Ok(())
    } else {
        Err(HostError::new(HostErrorKind::InstanceNotFound, id))
    }
}

/// The files' sizes, as the push's header declares them.
async fn file_size(path: &Path) -> Result<u64, HostError> {
    tokio::fs::metadata(path)
        .await
        .map(|m| m.len())
        .map_err(|e| HostError::new(HostErrorKind::Internal, format!("{}: {e}", path.display())))
}

/// The files' bytes, back to back, one chunk at a time.
fn files_body(paths: Vec<std::path::PathBuf>) -> RequestBody {
    let stream = futures::stream::unfold(
        (paths.into_iter(), None::<tokio::fs::File>),
        |(mut paths, mut file)| async move {
            loop {
                let current = match file.as_mut() {
                    Some(f) => f,
                    None => {
                        let path = paths.next()?;
                        match tokio::fs::File::open(&path).await {
                            Ok(f) => file.insert(f),
                            Err(e) => {
                                let e: BoxError = format!("{}: {e}", path.display()).into();
                                return Some((Err(e), (paths, None)));
                            }
                        }
                    }
                };
                let mut buf = vec![0u8; limits::PUSH_CHUNK_BYTES];
                match current.read(&mut buf).await {
                    Ok(0) => file = None,
                    Ok(n) => {
                        buf.truncate(n);
                        let frame = http_body::Frame::data(Bytes::from(buf));
                        return Some((Ok(frame), (paths, file)));
                    }
                    Err(e) => {
                        let e: BoxError = Box::new(e);
                        return Some((Err(e), (paths, None)));
                    }
                }
            }
        },
    );
    UnsyncBoxBody::new(StreamBody::new(stream))
}

#[async_trait::async_trait]
impl HostApi for RemoteHost {
    async fn status(&self) -> Result<HostStatus, HostError> {
        self.get(wire::STATUS_PATH).await
    }

    async fn has_image(&self, image_id: &str) -> Result<bool, HostError> {
        if !wire::is_image_id(image_id) {
            return Ok(false);
        }
        let answer: HasImage = self
            .get(&format!("{}/{image_id}", wire::IMAGES_PATH))
            .await?;
        Ok(answer.present)
    }

    async fn register_image(
        &self,
        source: &ImageSource,
        expected: Option<&str>,
    ) -> Result<String, HostError> {
        // The host checks the content against the id in the path: a push
        // always names the id its bytes must hash to.
        let expected = match expected {
            Some(id) => id.to_owned(),
            None => {
                let source = source.clone();
                tokio::task::spawn_blocking(move || nuage_compute::image_content_id(&source))
                    .await
                    .map_err(|e| HostError::new(HostErrorKind::Internal, e.to_string()))?
                    .map_err(|e| HostError::new(HostErrorKind::Internal, e.to_string()))?
            }
        };
        if !wire::is_image_id(&expected) {
            return Err(HostError::new(
                HostErrorKind::InvalidImage,
                format!("`{expected}` is not an image id"),
            ));
        }
        let mut paths = vec![source.disk.clone()];
        let mut parts = ImageParts {
            disk_bytes: file_size(&source.disk).await?,
            kernel_bytes: None,
            initrd_bytes: None,
            cmdline: None,
        };
        if let Some(kernel) = &source.kernel {
            parts.kernel_bytes = Some(file_size(&kernel.kernel).await?);
            paths.push(kernel.kernel.clone());
            if let Some(initrd) = &kernel.initrd {
                parts.initrd_bytes = Some(file_size(initrd).await?);
                paths.push(initrd.clone());
            }
            parts.cmdline = Some(kernel.cmdline.clone());
        }
        let total =
            parts.disk_bytes + parts.kernel_bytes.unwrap_or(0) + parts.initrd_bytes.unwrap_or(0);
        let header = serde_json::to_string(&parts)
            .map_err(|e| HostError::new(HostErrorKind::Internal, e.to_string()))?;
        let req = Request::builder()
            .method(Method::PUT)
            .uri(format!(
                "{}{}/{expected}",
                self.inner.base,
                wire::IMAGES_PATH
            ))
            .header(wire::IMAGE_PARTS_HEADER, header)
            .header(http::header::CONTENT_LENGTH, total)
            .body(files_body(paths))
            .map_err(|e| HostError::new(HostErrorKind::InvalidParameter, e.to_string()))?;
        let registered: Registered = self.call(req, limits::PUSH_TIMEOUT).await?;
        Ok(registered.image_id)
    }

    async fn run(&self, request: RunRequest) -> Result<InstanceRecord, HostError> {
        let body = serde_json::to_vec(&RunSpec::from_request(&request))
            .map_err(|e| HostError::new(HostErrorKind::Internal, e.to_string()))?;
        let req = self.request(Method::POST, wire::INSTANCES_PATH, Self::full(body))?;
        self.call(req, limits::LIFECYCLE_CALL_TIMEOUT).await
    }

    async fn start(&self, id: &str) -> Result<InstanceRecord, HostError> {
        self.lifecycle(id, "start").await
    }

    async fn stop(&self, id: &str) -> Result<InstanceRecord, HostError> {
        self.lifecycle(id, "stop").await
    }

    async fn reboot(&self, id: &str) -> Result<InstanceRecord, HostError> {
        self.lifecycle(id, "reboot").await
    }

    async fn terminate(&self, id: &str) -> Result<InstanceRecord, HostError> {
        self.lifecycle(id, "terminate").await
    }

    async fn describe(&self, id: &str) -> Result<InstanceRecord, HostError> {
        check_instance_id(id)?;
        self.get(&format!("{}/{id}", wire::INSTANCES_PATH)).await
    }

    async fn list(&self) -> Result<Vec<InstanceRecord>, HostError> {
        self.get(wire::INSTANCES_PATH).await
    }

    async fn console_output(&self, id: &str) -> Result<String, HostError> {
        check_instance_id(id)?;
        let answer: ConsoleOutput = self
            .get(&format!("{}/{id}/console", wire::INSTANCES_PATH))
            .await?;
        Ok(answer.output)
    }
}
