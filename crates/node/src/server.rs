//! The storage node service: HTTP/1.1 over mutual TLS.
//!
//! Every connection presents a client certificate the cluster CA signed (the
//! TLS layer refuses any other); every request is then parsed into a closed
//! `Endpoint`, authorized by the role its certificate names, logged with
//! the caller's node and site, and served from the [`NodeStore`]. Gateways
//! may do everything; storage nodes (repairing each other) everything but
//! delete and verify. A verification (the scrubber's whole-blob check) runs
//! on the blocking pool, at most `NODE_VERIFIES_IN_FLIGHT_MAX` at once. Bodies stream both ways; what a request holds in memory is one
//! block being filled and one being written.
//!
//! Endpoints and errors: `docs/storage-nodes.md`. This module maps errors to
//! status codes in one place (`error_response`).

use crate::identity::{NodeIdentity, Role};
use crate::store::{NodeStore, StoreConfig};
use crate::tls::TlsMaterial;
use crate::wire::{self, ErrorBody, NodeStatus};
use crate::{NodeError, limits};
use bytes::Bytes;
use futures::StreamExt as _;
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

type ResponseBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Everything a node needs to serve.
#[derive(Debug, Clone)]
pub struct NodeServerConfig {
    /// Who this node is: must be what its certificate names (role storage).
    pub identity: NodeIdentity,
    pub tls: TlsMaterial,
    pub store: StoreConfig,
    pub listen: SocketAddr,
    /// Time without a byte moving before a request is abandoned.
    pub idle_timeout: Duration,
}

/// A running node. Dropping it does not stop it; call
/// [`shutdown`](Self::shutdown).
pub struct NodeServer {
    local_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    identity: NodeIdentity,
    store: NodeStore,
    idle_timeout: Duration,
    /// Verifications running at once (`NODE_VERIFIES_IN_FLIGHT_MAX`).
    verifies: tokio::sync::Semaphore,
}

impl NodeServer {
    /// Checks the configuration, opens the store (removing partial blobs of
    /// interrupted writes), binds and starts serving.
    ///
    /// # Errors
    /// A certificate that names another identity or not a storage node, bad
    /// TLS material, I/O errors opening the store or binding.
    pub async fn start(config: NodeServerConfig) -> Result<Self, NodeError> {
        let named = config.tls.identity()?;
        if named != config.identity || named.role != Role::Storage {
            return Err(NodeError::TlsConfig(format!(
                "the node certificate names {named}, but this node is {}",
                config.identity
            )));
        }
        let tls = crate::tls::server_config(&config.tls)?;
        let store_config = config.store.clone();
        let store = tokio::task::spawn_blocking(move || NodeStore::open(&store_config))
            .await
            .map_err(|e| NodeError::Io(std::io::Error::other(e)))??;
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let state = Arc::new(State {
            identity: config.identity.clone(),
            store,
            idle_timeout: config.idle_timeout,
            verifies: tokio::sync::Semaphore::new(limits::NODE_VERIFIES_IN_FLIGHT_MAX),
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let task = tokio::spawn(accept_loop(listener, acceptor, state, stopped));
        tracing::info!(node = %config.identity, %local_addr, "storage node serving");
        Ok(Self {
            local_addr,
            stop,
            task,
        })
    }

    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections; requests in progress finish on their own.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Serves until the accept loop ends (it does not, short of shutdown).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let connections = Arc::new(tokio::sync::Semaphore::new(limits::NODE_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = Arc::clone(&connections).acquire_owned().await else {
            return;
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(tcp, remote, acceptor, state).await;
        });
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
) {
    let tls = match tokio::time::timeout(limits::NODE_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            // A client without a certificate, or with one the cluster CA did
            // not sign, ends here.
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
    let idle_timeout = state.idle_timeout;
    let service = hyper::service::service_fn(move |req| {
        let state = Arc::clone(&state);
        let peer = Arc::clone(&peer);
        async move { Ok::<_, Infallible>(handle(state, peer, remote, req).await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

/// What a request asks for: the protocol's closed set of operations.
#[derive(Debug)]
enum Endpoint {
    PutBlob(String),
    GetBlob {
        blob_id: String,
        offset: u64,
        length: Option<u64>,
        verified_by_caller: bool,
    },
    HeadBlob(String),
    DeleteBlob(String),
    /// Reads the whole copy back, every block checked (gateways only).
    VerifyBlob(String),
    List {
        after: Option<String>,
        limit: usize,
    },
    Status,
}

impl Endpoint {
    fn parse(method: &Method, uri: &http::Uri) -> Result<Self, NodeError> {
        let path = uri.path();
        let query = parse_query(uri.query())?;
        let unknown = |allowed: &[&str]| -> Result<(), NodeError> {
            match query.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
                Some((k, _)) => Err(NodeError::BadRequest(format!(
                    "unknown query parameter `{k}`"
                ))),
                None => Ok(()),
            }
        };
        let get = |key: &str| {
            query
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let number = |key: &str| -> Result<Option<u64>, NodeError> {
            get(key)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| {
                        NodeError::BadRequest(format!("`{key}` must be a non-negative integer"))
                    })
                })
                .transpose()
        };
        if path == wire::STATUS_PATH {
            unknown(&[])?;
            return match *method {
                Method::GET => Ok(Self::Status),
                _ => Err(method_not_allowed(method, path)),
            };
        }
        if path == wire::BLOBS_PATH {
            unknown(&["after", "limit"])?;
            let limit = number("limit")?.map_or(Ok(limits::NODE_LIST_PAGE_MAX), |l| {
                usize::try_from(l).map_err(|_| NodeError::BadRequest("limit too large".into()))
            })?;
            return match *method {
                Method::GET => Ok(Self::List {
                    after: get("after").map(str::to_owned),
                    limit,
                }),
                _ => Err(method_not_allowed(method, path)),
            };
        }
        let rest = path
            .strip_prefix(wire::BLOBS_PATH)
            .and_then(|rest| rest.strip_prefix('/'));
        let (rest, verify) = match rest.and_then(|r| r.strip_suffix(wire::VERIFY_SUFFIX)) {
            Some(id) => (Some(id), true),
            None => (rest, false),
        };
        let Some(blob_id) = rest.filter(|id| !id.contains('/')) else {
            return Err(NodeError::Refused {
                status: StatusCode::NOT_FOUND.as_u16(),
                code: "NoSuchEndpoint".into(),
                message: format!("no endpoint at {path}"),
            });
        };
        if !wire::is_valid_blob_id(blob_id) {
            return Err(NodeError::BadRequest(format!(
                "`{blob_id}` is not a blob id (lowercase hex, {} to {} characters)",
                limits::BLOB_ID_BYTES_MIN,
                limits::BLOB_ID_BYTES_MAX
            )));
        }
        let blob_id = blob_id.to_owned();
        if verify {
            unknown(&[])?;
            return match *method {
                Method::POST => Ok(Self::VerifyBlob(blob_id)),
                _ => Err(method_not_allowed(method, path)),
            };
        }
        match *method {
            Method::PUT => {
                unknown(&[])?;
                Ok(Self::PutBlob(blob_id))
            }
            Method::GET => {
                unknown(&["offset", "length", "verify"])?;
                let verified_by_caller = match get("verify") {
                    None | Some("node") => false,
                    Some("caller") => true,
                    Some(other) => {
                        return Err(NodeError::BadRequest(format!(
                            "verify must be `node` or `caller`, not `{other}`"
                        )));
                    }
                };
                Ok(Self::GetBlob {
                    blob_id,
                    offset: number("offset")?.unwrap_or(0),
                    length: number("length")?,
                    verified_by_caller,
                })
            }
            Method::HEAD => {
                unknown(&[])?;
                Ok(Self::HeadBlob(blob_id))
            }
            Method::DELETE => {
                unknown(&[])?;
                Ok(Self::DeleteBlob(blob_id))
            }
            _ => Err(method_not_allowed(method, path)),
        }
    }

    /// Who may call it: gateways anything; storage nodes, which read and
    /// write each other's blobs to repair, anything but delete and verify
    /// (the scrubber, which runs on a gateway, is the only one that needs a
    /// whole-blob read, which costs the node a full pass over the file).
    fn allows(&self, role: Role) -> bool {
        match role {
            Role::Gateway => true,
            Role::Storage => !matches!(self, Self::DeleteBlob(_) | Self::VerifyBlob(_)),
            // A compute host holds no blobs and needs none of a node's.
            Role::Compute => false,
        }
    }
}

fn method_not_allowed(method: &Method, path: &str) -> NodeError {
    NodeError::Refused {
        status: StatusCode::METHOD_NOT_ALLOWED.as_u16(),
        code: "MethodNotAllowed".into(),
        message: format!("{method} is not allowed on {path}"),
    }
}

/// Query parameters are hex ids and integers: no percent-decoding needed,
/// and a `%` is refused rather than misread.
fn parse_query(query: Option<&str>) -> Result<Vec<(String, String)>, NodeError> {
    const QUERY_PARAMETERS_MAX: usize = 8;
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for pair in query.split('&') {
        if out.len() == QUERY_PARAMETERS_MAX {
            return Err(NodeError::BadRequest("too many query parameters".into()));
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k.contains('%') || v.contains('%') {
            return Err(NodeError::BadRequest(
                "percent-encoding is not used in this protocol".into(),
            ));
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

async fn handle(
    state: Arc<State>,
    peer: Arc<Result<NodeIdentity, String>>,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let (peer_node, peer_site, peer_role) = match peer.as_ref() {
        Ok(id) => (id.node.as_str(), id.site.as_str(), id.role.as_str()),
        Err(_) => ("-", "-", "-"),
    };
    let span = tracing::info_span!(
        "node_request",
        peer_node,
        peer_site,
        peer_role,
        %remote,
        method = %req.method(),
        path = %req.uri().path(),
    );
    let started = Instant::now();
    let is_head = req.method() == Method::HEAD;
    async move {
        let result = match peer.as_ref() {
            Err(why) => Err(NodeError::AccessDenied(format!(
                "the client certificate carries no cluster identity: {why}"
            ))),
            Ok(identity) => match Endpoint::parse(req.method(), req.uri()) {
                Err(e) => Err(e),
                Ok(endpoint) if !endpoint.allows(identity.role) => {
                    Err(NodeError::AccessDenied(format!(
                        "{identity} (role {}) may not call this endpoint",
                        identity.role
                    )))
                }
                Ok(endpoint) => serve(&state, endpoint, req).await,
            },
        };
        let response = result.unwrap_or_else(|e| error_response(&e, is_head));
        let elapsed_ms = started.elapsed().as_millis();
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms,
            "node request"
        );
        response
    }
    .instrument(span)
    .await
}

async fn serve(
    state: &State,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, NodeError> {
    match endpoint {
        Endpoint::PutBlob(blob_id) => put_blob(state, &blob_id, req.into_body()).await,
        Endpoint::GetBlob {
            blob_id,
            offset,
            length,
            verified_by_caller,
        } => get_blob(state, &blob_id, offset, length, verified_by_caller).await,
        Endpoint::HeadBlob(blob_id) => {
            let info = state.store.stat(&blob_id).await?;
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(wire::HEADER_BLOB_LENGTH, info.length)
                .header(wire::HEADER_MODIFIED_MS, info.modified_ms)
                .body(empty())
                .map_err(internal)?)
        }
        Endpoint::DeleteBlob(blob_id) => {
            let existed = state.store.delete(&blob_id).await?;
            tracing::info!(%blob_id, existed, "blob deleted");
            Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(empty())
                .map_err(internal)?)
        }
        Endpoint::VerifyBlob(blob_id) => {
            let _turn = state.verifies.acquire().await.map_err(internal)?;
            let started = Instant::now();
            let receipt = state.store.verify(&blob_id).await?;
            tracing::info!(
                %blob_id,
                length = receipt.length,
                elapsed_ms = started.elapsed().as_millis(),
                "blob verified"
            );
            json(StatusCode::OK, &receipt)
        }
        Endpoint::List { after, limit } => {
            let page = state.store.list(after.as_deref(), limit).await?;
            json(StatusCode::OK, &page)
        }
        Endpoint::Status => {
            let space = state.store.space_report()?;
            json(
                StatusCode::OK,
                &NodeStatus {
                    node: state.identity.node.clone(),
                    site: state.identity.site.clone(),
                    used_bytes: space.used_bytes,
                    blob_count: space.blob_count,
                    capacity_bytes: space.capacity_bytes,
                    fs_total_bytes: space.fs_total_bytes,
                    fs_available_bytes: space.fs_available_bytes,
                    reserve_bytes: space.reserve_bytes,
                    writable_bytes: space.writable_bytes,
                },
            )
        }
    }
}

/// Streams the body into a pending blob; 200 with the receipt once durable.
/// Any failure drops the pending blob, which removes its temporary file.
async fn put_blob(
    state: &State,
    blob_id: &str,
    mut body: Incoming,
) -> Result<Response<ResponseBody>, NodeError> {
    // `Content-Length`, when the client sent one: space for it is reserved
    // (or refused) before a byte of the body is read.
    let declared = body.size_hint().exact();
    let mut pending = state.store.begin_write(blob_id, declared).await?;
    loop {
        let frame = tokio::time::timeout(state.idle_timeout, body.frame())
            .await
            .map_err(|_| {
                NodeError::Timeout(format!(
                    "no body bytes for {} s after {} bytes",
                    state.idle_timeout.as_secs(),
                    pending.written()
                ))
            })?;
        match frame {
            None => break,
            Some(Err(e)) => {
                return Err(NodeError::BadRequest(format!(
                    "request body broken after {} bytes: {e}",
                    pending.written()
                )));
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    pending.append(data).await?;
                }
            }
        }
    }
    let receipt = pending.finish().await?;
    tracing::info!(
        blob_id,
        length = receipt.length,
        existed = receipt.existed,
        "blob stored"
    );
    json(StatusCode::OK, &receipt)
}

async fn get_blob(
    state: &State,
    blob_id: &str,
    offset: u64,
    length: Option<u64>,
    verified_by_caller: bool,
) -> Result<Response<ResponseBody>, NodeError> {
    let info = state.store.stat(blob_id).await?;
    let length = match length {
        Some(l) => l,
        None => info.length.checked_sub(offset).ok_or_else(|| {
            NodeError::InvalidRange(format!("offset {offset} beyond {} bytes", info.length))
        })?,
    };
    if offset
        .checked_add(length)
        .is_none_or(|end| end > info.length)
    {
        return Err(NodeError::InvalidRange(format!(
            "{offset}+{length} beyond the blob's {} bytes",
            info.length
        )));
    }
    let id = blob_id.to_owned();
    let stream = state
        .store
        .read(blob_id, offset, length, verified_by_caller)
        .map(move |item| match item {
            Ok(bytes) => Ok(Frame::data(bytes)),
            Err(e) => {
                // The status is sent; ending the body short tells the client
                // (its length is known), which never sees the bad bytes.
                tracing::error!(blob_id = %id, error = %e, "read failed mid-stream");
                Err(std::io::Error::other(e.to_string()))
            }
        });
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_LENGTH, length)
        .header(wire::HEADER_BLOB_LENGTH, info.length)
        .body(UnsyncBoxBody::new(StreamBody::new(stream)))
        .map_err(internal)
}

fn internal(e: impl std::fmt::Display) -> NodeError {
    NodeError::Io(std::io::Error::other(e.to_string()))
}

fn empty() -> ResponseBody {
    UnsyncBoxBody::new(Full::new(Bytes::new()).map_err(|never| match never {}))
}

fn json<T: serde::Serialize>(
    status: StatusCode,
    value: &T,
) -> Result<Response<ResponseBody>, NodeError> {
    let body = serde_json::to_vec(value).map_err(internal)?;
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(UnsyncBoxBody::new(
            Full::new(Bytes::from(body)).map_err(|never| match never {}),
        ))
        .map_err(internal)
}

/// The one mapping from errors to the protocol's status codes and codes.
fn error_response(error: &NodeError, is_head: bool) -> Response<ResponseBody> {
    let (status, code) = match error {
        NodeError::BadRequest(_) | NodeError::BadIdentity(_) => {
            (StatusCode::BAD_REQUEST, "BadRequest")
        }
        NodeError::AccessDenied(_) => (StatusCode::FORBIDDEN, "AccessDenied"),
        NodeError::NotFound(_) => (StatusCode::NOT_FOUND, "NoSuchBlob"),
        NodeError::Exists(_) => (StatusCode::CONFLICT, "BlobExists"),
        NodeError::InvalidRange(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange"),
        NodeError::InsufficientStorage(_) => {
            (StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage")
        }
        NodeError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "RequestTimeout"),
        NodeError::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "Corrupt"),
        NodeError::Refused { status, code, .. } => (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            code.as_str(),
        ),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
    };
    // The detail alone: the code already says what kind of error it is.
    let message = match error {
        NodeError::Refused { message, .. }
        | NodeError::BadRequest(message)
        | NodeError::BadIdentity(message)
        | NodeError::AccessDenied(message)
        | NodeError::Exists(message)
        | NodeError::InvalidRange(message)
        | NodeError::InsufficientStorage(message)
        | NodeError::Timeout(message) => message.clone(),
        NodeError::Corrupt { detail, .. } => detail.clone(),
        other => other.to_string(),
    };
    if status.is_server_error() {
        tracing::error!(code, %message, "request failed");
    } else {
        tracing::info!(code, %message, "request refused");
    }
    let builder = Response::builder()
        .status(status)
        .header(wire::HEADER_ERROR, code);
    let response = if is_head {
        builder.body(empty())
    } else {
        let body = serde_json::to_vec(&ErrorBody {
            error: code.to_owned(),
            message,
        })
        .unwrap_or_default();
        builder
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(UnsyncBoxBody::new(
                Full::new(Bytes::from(body)).map_err(|never| match never {}),
            ))
    };
    response.unwrap_or_else(|_| {
        let mut fallback = Response::new(empty());
        *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}
