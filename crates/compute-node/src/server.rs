//! The compute host's side of the protocol: HTTP/1.1 over mutual TLS.
//!
//! Every connection presents a certificate the cluster CA signed (the TLS
//! layer refuses any other); every request is then parsed into a closed
//! [`Endpoint`], refused unless the caller's certificate names role
//! `gateway`, logged with the caller, and served by the host through
//! `HostApi`. Errors map to a status and a `HostError` body in one place
//! (`error_response`). Each request runs on a task of its own, body
//! included, that a dropped connection does not cancel (see
//! `serve_connection`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use nuage_compute::{
    DirectKernel, HostApi, HostError, HostErrorKind, ImageSource, LocalHost, RunSpec,
};
use nuage_node::tls::TlsMaterial;
use nuage_node::{NodeIdentity, Role};
use tokio::io::AsyncWriteExt as _;

use crate::wire::{self, ConsoleOutput, HasImage, ImageParts, Registered};
use crate::{ComputeNodeError, limits};

/// Everything a compute host needs to serve.
pub struct ComputeNodeServerConfig {
    pub tls: TlsMaterial,
    pub listen: SocketAddr,
    /// The host, opened (and recovered) by the caller.
    pub host: Arc<LocalHost>,
    /// Where pushed images are received before the host caches them
    /// (emptied at start).
    pub uploads_dir: PathBuf,
    /// The zone reported in the status.
    pub availability_zone: String,
}

/// A running compute host service.
pub struct ComputeNodeServer {
    local_addr: SocketAddr,
    identity: NodeIdentity,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    host: Arc<LocalHost>,
    uploads_dir: PathBuf,
    availability_zone: String,
    pushes: tokio::sync::Semaphore,
}

impl ComputeNodeServer {
    /// Checks the certificate (it must name role `compute`), clears the
    /// uploads directory, binds and serves.
    ///
    /// # Errors
    /// Bad TLS material, a certificate of another role, I/O.
    pub async fn start(config: ComputeNodeServerConfig) -> Result<Self, ComputeNodeError> {
        let identity = config.tls.identity()?;
        if identity.role != Role::Compute {
            return Err(ComputeNodeError::Config(format!(
                "the certificate names {identity}, not a compute host (issue one with \
                 `nuage cluster cert issue --role compute`)"
            )));
        }
        let tls = nuage_node::tls::server_config(&config.tls)?;
        if config.uploads_dir.exists() {
            std::fs::remove_dir_all(&config.uploads_dir)?;
        }
        std::fs::create_dir_all(&config.uploads_dir)?;
        // Tenants' images on their way in: the host's user alone reads them.
        std::fs::set_permissions(
            &config.uploads_dir,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
        )?;
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let state = Arc::new(State {
            host: config.host,
            uploads_dir: config.uploads_dir,
            availability_zone: config.availability_zone,
            pushes: tokio::sync::Semaphore::new(limits::IMAGE_PUSHES_IN_FLIGHT_MAX),
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let task = tokio::spawn(accept_loop(listener, acceptor, state, stopped));
        tracing::info!(host = %identity, %local_addr, "compute host serving");
        Ok(Self {
            local_addr,
            identity,
            stop,
            task,
        })
    }

    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Who this host is (from its certificate).
    #[must_use]
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// Stops accepting connections; requests in progress finish on their own.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let connections = Arc::new(tokio::sync::Semaphore::new(limits::CONNECTIONS_MAX));
    loop {
        let Ok(permit) = Arc::clone(&connections).acquire_owned().await else {
            return;
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        tokio::spawn(serve_connection(
            tcp,
            remote,
            acceptor,
            state,
            Arc::new(permit),
        ));
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    // One of `CONNECTIONS_MAX`, held by the connection and by each request
    // it started until that request's work ends.
    permit: Arc<tokio::sync::OwnedSemaphorePermit>,
) {
    let tls = match tokio::time::timeout(limits::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::warn!(%remote, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::warn!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let peer: Arc<Result<NodeIdentity, String>> = Arc::new(
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .ok_or_else(|| "no client certificate".to_owned())
            .and_then(|der| NodeIdentity::from_certificate_der(der).map_err(|e| e.to_string())),
    );
    let service = hyper::service::service_fn(move |req| {
        let state = Arc::clone(&state);
        let peer = Arc::clone(&peer);
        let permit = Arc::clone(&permit);
        // Detached, and started here rather than when hyper first polls the
        // answer: hyper drops the answer's future when the gateway drops
        // the connection (its timeout, a restart, a network reset; even an
        // EOF right after a complete request, before the future was ever
        // polled). An operation cancelled halfway would leave an instance
        // `pending` holding capacity, a QEMU nobody recorded, or a staging
        // directory behind; detached, a run whose request arrived whole
        // ends as it would have, and a push whose body breaks off is
        // refused and its upload removed.
        let work = tokio::spawn(async move {
            let _permit = permit;
            handle(state, &peer, remote, req).await
        });
        async move {
            Ok::<_, Infallible>(work.await.unwrap_or_else(|e| {
                error_response(&(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    HostError::new(HostErrorKind::Internal, format!("the request failed: {e}")),
                ))
            }))
        }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits::HEADER_READ_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

/// The protocol's operations.
#[derive(Debug)]
enum Endpoint {
    Status,
    HasImage(String),
    PushImage(String),
    Run,
    List,
    Describe(String),
    Start(String),
    Stop(String),
    Reboot(String),
    Terminate(String),
    Console(String),
}

fn refused(status: StatusCode, message: impl Into<String>) -> (StatusCode, HostError) {
    (status, HostError::new(HostErrorKind::Refused, message))
}

impl Endpoint {
    fn parse(method: &Method, path: &str) -> Result<Self, (StatusCode, HostError)> {
        let not_found = || {
            refused(
                StatusCode::NOT_FOUND,
                format!("no endpoint {method} {path}"),
            )
        };
        if path == wire::STATUS_PATH {
            return match *method {
                Method::GET => Ok(Self::Status),
                _ => Err(not_found()),
            };
        }
        if path == wire::INSTANCES_PATH {
            return match *method {
                Method::GET => Ok(Self::List),
                Method::POST => Ok(Self::Run),
                _ => Err(not_found()),
            };
        }
        if let Some(id) = path
            .strip_prefix(wire::IMAGES_PATH)
            .and_then(|r| r.strip_prefix('/'))
        {
            if !wire::is_image_id(id) {
                return Err(refused(
                    StatusCode::BAD_REQUEST,
                    format!("`{id}` is not an image id (64 lower-case hex digits)"),
                ));
            }
            return match *method {
                Method::GET => Ok(Self::HasImage(id.to_owned())),
                Method::PUT => Ok(Self::PushImage(id.to_owned())),
                _ => Err(not_found()),
            };
        }
        let rest = path
            .strip_prefix(wire::INSTANCES_PATH)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(not_found)?;
        let (id, action) = match rest.split_once('/') {
            Some((id, action)) => (id, Some(action)),
            None => (rest, None),
        };
        if !wire::is_instance_id(id) {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                format!("`{id}` is not an instance id"),
            ));
        }
        let id = id.to_owned();
        match (method, action) {
            (&Method::GET, None) => Ok(Self::Describe(id)),
            (&Method::GET, Some("console")) => Ok(Self::Console(id)),
            (&Method::POST, Some("start")) => Ok(Self::Start(id)),
            (&Method::POST, Some("stop")) => Ok(Self::Stop(id)),
            (&Method::POST, Some("reboot")) => Ok(Self::Reboot(id)),
            (&Method::POST, Some("terminate")) => Ok(Self::Terminate(id)),
            _ => Err(not_found()),
        }
    }
}

async fn handle(
    state: Arc<State>,
    peer: &Result<NodeIdentity, String>,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    // Only gateways schedule: a storage node's or another compute host's
    // certificate, valid as it is, may not run or see anything here.
    let caller = match peer {
        Ok(identity) if identity.role == Role::Gateway => identity.clone(),
        Ok(identity) => {
            tracing::warn!(%remote, caller = %identity, "refused: not a gateway");
            return error_response(&refused(
                StatusCode::FORBIDDEN,
                format!("{identity} may not call a compute host: only gateways may"),
            ));
        }
        Err(why) => {
            return error_response(&refused(
                StatusCode::FORBIDDEN,
                format!("the client certificate names no cluster identity: {why}"),
            ));
        }
    };
    let endpoint = match Endpoint::parse(req.method(), req.uri().path()) {
        Ok(e) => e,
        Err(e) => return error_response(&e),
    };
    tracing::debug!(caller = %caller, ?endpoint, "compute host request");
    match serve(&state, endpoint, req).await {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => {
            let status = status_of(e.kind);
            if status.is_server_error() {
                tracing::warn!(caller = %caller, error = %e, "compute host request failed");
            }
            error_response(&(status, e))
        }
    }
}

/// The one place where a host error becomes an HTTP status.
fn status_of(kind: HostErrorKind) -> StatusCode {
    match kind {
        HostErrorKind::InstanceNotFound | HostErrorKind::ImageNotFound => StatusCode::NOT_FOUND,
        HostErrorKind::IncorrectInstanceState => StatusCode::CONFLICT,
        HostErrorKind::InsufficientInstanceCapacity
        | HostErrorKind::InstanceLimitExceeded
        | HostErrorKind::Busy => StatusCode::SERVICE_UNAVAILABLE,
        HostErrorKind::CacheFull => StatusCode::INSUFFICIENT_STORAGE,
        HostErrorKind::InvalidInstanceType
        | HostErrorKind::InvalidImage
        | HostErrorKind::InvalidParameter
        | HostErrorKind::Refused => StatusCode::BAD_REQUEST,
        HostErrorKind::Internal | HostErrorKind::Unreachable | HostErrorKind::NotSent => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

fn error_response((status, error): &(StatusCode, HostError)) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(error).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = *status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, HostError> {
    serde_json::to_vec(value).map_err(|e| HostError::new(HostErrorKind::Internal, e.to_string()))
}

/// An upload directory, removed (on a blocking thread: it may hold
/// gigabytes) when dropped: once its image is registered or refused,
/// whatever ended the request.
struct UploadDir(PathBuf);

impl Drop for UploadDir {
    fn drop(&mut self) {
        let dir = std::mem::take(&mut self.0);
        let remove = move || match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an upload directory");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

async fn serve(
    state: &State,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Vec<u8>, HostError> {
    let host = &state.host;
    match endpoint {
        Endpoint::Status => {
            let mut status = host.status().await?;
            status
                .availability_zone
                .clone_from(&state.availability_zone);
            json(&status)
        }
        Endpoint::HasImage(id) => json(&HasImage {
            present: host.has_image(&id).await?,
        }),
        Endpoint::PushImage(expected) => {
            let _permit = state.pushes.try_acquire().map_err(|_| {
                HostError::new(
                    HostErrorKind::Busy,
                    format!(
                        "this host receives at most {} images at once",
                        limits::IMAGE_PUSHES_IN_FLIGHT_MAX
                    ),
                )
            })?;
            let upload = UploadDir(
                state
                    .uploads_dir
                    .join(format!("push-{:016x}", rand::random::<u64>())),
            );
            let source = receive(&upload.0, req).await?;
            json(&Registered {
                image_id: check_and_register(host, source, &expected).await?,
            })
        }
        Endpoint::Run => {
            let spec: RunSpec = read_json(req).await?;
            json(&host.run(spec.into_request()?).await?)
        }
        Endpoint::List => json(&host.list().await?),
        Endpoint::Describe(id) => json(&host.describe(&id).await?),
        Endpoint::Start(id) => json(&host.start(&id).await?),
        Endpoint::Stop(id) => json(&host.stop(&id).await?),
        Endpoint::Reboot(id) => json(&host.reboot(&id).await?),
        Endpoint::Terminate(id) => json(&host.terminate(&id).await?),
        Endpoint::Console(id) => json(&ConsoleOutput {
            output: host.console_output(&id).await?,
        }),
    }
}

fn bad(message: impl Into<String>) -> HostError {
    HostError::new(HostErrorKind::InvalidParameter, message)
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, HostError> {
    let body = Limited::new(req.into_body(), limits::REQUEST_JSON_BYTES_MAX)
        .collect()
        .await
        .map_err(|e| {
            bad(format!(
                "the request body could not be read (at most {} bytes): {e}",
                limits::REQUEST_JSON_BYTES_MAX
            ))
        })?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| bad(format!("the request body is not valid JSON: {e}")))
}

/// Receives the parts the header declares into `dir`.
async fn receive(dir: &Path, req: Request<Incoming>) -> Result<ImageSource, HostError> {
    let parts_text = req
        .headers()
        .get(wire::IMAGE_PARTS_HEADER)
        .ok_or_else(|| bad(format!("{} is missing", wire::IMAGE_PARTS_HEADER)))?
        .as_bytes();
    if parts_text.len() > limits::IMAGE_PARTS_HEADER_BYTES_MAX {
        return Err(bad(format!("{} is too long", wire::IMAGE_PARTS_HEADER)));
    }
    let parts: ImageParts = serde_json::from_slice(parts_text)
        .map_err(|e| bad(format!("{}: {e}", wire::IMAGE_PARTS_HEADER)))?;
    if parts.disk_bytes > limits::IMAGE_DISK_BYTES_MAX {
        return Err(bad(format!(
            "a disk may hold at most {} bytes",
            limits::IMAGE_DISK_BYTES_MAX
        )));
    }
    for size in [parts.kernel_bytes, parts.initrd_bytes]
        .into_iter()
        .flatten()
    {
        if size > limits::IMAGE_KERNEL_BYTES_MAX {
            return Err(bad(format!(
                "a kernel or initrd may hold at most {} bytes",
                limits::IMAGE_KERNEL_BYTES_MAX
            )));
        }
    }
    if parts.kernel_bytes.is_none() && (parts.initrd_bytes.is_some() || parts.cmdline.is_some()) {
        return Err(bad("an initrd or command line needs a kernel"));
    }
    if parts
        .cmdline
        .as_ref()
        .is_some_and(|c| c.len() > limits::KERNEL_CMDLINE_BYTES_MAX)
    {
        return Err(bad("the kernel command line is too long"));
    }
    let internal = |e: std::io::Error| HostError::new(HostErrorKind::Internal, e.to_string());
    tokio::fs::create_dir_all(dir).await.map_err(internal)?;
    let disk = dir.join("disk");
    let kernel = dir.join("kernel");
    let initrd = dir.join("initrd");
    let mut files: Vec<(PathBuf, u64)> = vec![(disk.clone(), parts.disk_bytes)];
    if let Some(size) = parts.kernel_bytes {
        files.push((kernel.clone(), size));
    }
    if let Some(size) = parts.initrd_bytes {
        files.push((initrd.clone(), size));
    }
    receive_files(req.into_body(), &files).await?;
    Ok(ImageSource {
        disk,
        kernel: parts.kernel_bytes.map(|_| DirectKernel {
            kernel,
            initrd: parts.initrd_bytes.map(|_| initrd),
            cmdline: parts.cmdline.clone().unwrap_or_default(),
        }),
    })
}

/// Registers a received image with `expected` as the id it must hash to.
async fn check_and_register(
    host: &LocalHost,
    source: ImageSource,
    expected: &str,
) -> Result<String, HostError> {
    let internal = |e: std::io::Error| HostError::new(HostErrorKind::Internal, e.to_string());
    // Bytes that are not the image named are refused before the cache
    // copies them (the host checks the id again as it registers them).
    let hashed = source.clone();
    let id = tokio::task::spawn_blocking(move || nuage_compute::image_content_id(&hashed))
        .await
        .map_err(|e| HostError::new(HostErrorKind::Internal, e.to_string()))?
        .map_err(internal)?;
    if id != expected {
        return Err(HostError::new(
            HostErrorKind::InvalidImage,
            format!("the pushed bytes hash to {id}, not to the image {expected} they were sent as"),
        ));
    }
    host.register_image(&source, Some(expected)).await
}

/// Splits the body into `files` (path, exact size), streaming; a body
/// shorter or longer than the sizes declared is refused.
async fn receive_files(mut body: Incoming, files: &[(PathBuf, u64)]) -> Result<(), HostError> {
    let internal = |e: std::io::Error| HostError::new(HostErrorKind::Internal, e.to_string());
    let mut index = 0;
    let mut left = files.first().map_or(0, |f| f.1);
    let mut file = match files.first() {
        Some((path, _)) => Some(tokio::fs::File::create(path).await.map_err(internal)?),
        None => None,
    };
    loop {
        // Files of zero bytes are complete before any data arrives.
        while left == 0 && file.is_some() {
            if let Some(f) = file.take() {
                f.sync_all().await.map_err(internal)?;
            }
            index += 1;
            if let Some((path, size)) = files.get(index) {
                file = Some(tokio::fs::File::create(path).await.map_err(internal)?);
                left = *size;
            }
        }
        let frame = match tokio::time::timeout(limits::PUSH_IDLE_TIMEOUT, body.frame()).await {
            Err(_) => return Err(bad("the image upload stalled")),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(bad(format!("the image upload broke off: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        while !data.is_empty() {
            let Some(f) = file.as_mut() else {
                return Err(bad("the image upload is longer than its declared parts"));
            };
            let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
            let chunk = data.split_to(take);
            f.write_all(&chunk).await.map_err(internal)?;
            left -= chunk.len() as u64;
            if left == 0 {
                if let Some(f) = file.take() {
                    f.sync_all().await.map_err(internal)?;
                }
                index += 1;
                if let Some((path, size)) = files.get(index) {
                    file = Some(tokio::fs::File::create(path).await.map_err(internal)?);
                    left = *size;
                }
            }
        }
    }
    if file.is_some() || index < files.len() {
        return Err(bad("the image upload is shorter than its declared parts"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn endpoints_parse_and_bad_ids_are_refused() {
        let id = "i-0123456789abcdef0";
        assert!(matches!(
            Endpoint::parse(&Method::POST, &format!("/v1/instances/{id}/stop")),
            Ok(Endpoint::Stop(_))
        ));
        assert!(matches!(
            Endpoint::parse(&Method::GET, "/v1/instances"),
            Ok(Endpoint::List)
        ));
        let image = "a".repeat(64);
        assert!(matches!(
            Endpoint::parse(&Method::PUT, &format!("/v1/images/{image}")),
            Ok(Endpoint::PushImage(_))
        ));
        for (method, path) in [
            (Method::GET, "/v1/images/../../etc"),
            (Method::GET, "/v1/instances/i-XYZ"),
            (Method::POST, "/v1/instances/i-0123456789abcdef0/explode"),
            (Method::DELETE, "/v1/status"),
            (Method::GET, "/"),
        ] {
            assert!(Endpoint::parse(&method, path).is_err(), "{method} {path}");
        }
    }
}
