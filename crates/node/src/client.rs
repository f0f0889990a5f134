//! `NodeClient`: one gateway's (or node's) connection pool to one storage
//! node, over mutual TLS.
//!
//! The client presents its own certificate and accepts the node only if its
//! certificate, signed by the cluster CA, names the node id and site the
//! client was configured for (`tls.rs`). Writes stream: [`NodeBlobWriter`]
//! hands chunks through a bounded queue to the request body, so a blob is
//! never held whole; the node's receipt (length and SHA-256 of what it made
//! durable) is checked against what was sent. Reads stream the same way, in
//! blocks of at most `BLOB_BLOCK_BYTES`, and a body that ends short is an
//! error, never a short blob. Connects and every wait for bytes are bounded
//! by timeouts.

use crate::identity::NodeIdentity;
use crate::tls::{PeerMismatch, TlsMaterial};
use crate::wire::{self, BlobInfo, ErrorBody, ListPage, NodeStatus, VerifyReceipt, WriteReceipt};
use crate::{NodeError, limits};
use bytes::{Bytes, BytesMut};
use http::{Method, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use sha2::{Digest as _, Sha256};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type RequestBody = UnsyncBoxBody<Bytes, BoxError>;
type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, RequestBody>;

/// A stream of a blob's bytes from a node.
pub type NodeStream = Pin<Box<dyn futures::Stream<Item = Result<Bytes, NodeError>> + Send + Sync>>;

/// How to reach one node.
#[derive(Debug, Clone)]
pub struct NodeClientConfig {
    /// `host:port`; the host (DNS name or IP) must be in the node's certificate.
    pub endpoint: String,
    /// The node this client means to reach: its certificate must name it.
    pub expected: NodeIdentity,
    /// The caller's certificate and key, and the cluster CA.
    pub tls: TlsMaterial,
    pub connect_timeout: Duration,
    /// Time without a byte moving before a request is abandoned.
    pub idle_timeout: Duration,
}

impl NodeClientConfig {
    /// A configuration with the default timeouts.
    #[must_use]
    pub fn new(endpoint: impl Into<String>, expected: NodeIdentity, tls: TlsMaterial) -> Self {
        Self {
            endpoint: endpoint.into(),
            expected,
            tls,
            connect_timeout: limits::NODE_CONNECT_TIMEOUT_DEFAULT,
            idle_timeout: limits::NODE_IDLE_TIMEOUT_DEFAULT,
        }
    }
}

/// A client of one storage node. Cheap to clone (one shared pool).
#[derive(Clone)]
pub struct NodeClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient,
    base: String,
    node: NodeIdentity,
    mismatch: PeerMismatch,
    idle_timeout: Duration,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("node", &self.inner.node.uri())
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

impl NodeClient {
    /// Builds the client; connects lazily, on the first request.
    ///
    /// # Errors
    /// `TlsConfig` for bad TLS material.
    pub fn new(config: NodeClientConfig) -> Result<Self, NodeError> {
        let (tls, mismatch) = crate::tls::client_config(&config.tls, &config.expected)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(Arc::unwrap_or_clone(tls))
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let http = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(limits::NODE_CLIENT_POOL_IDLE)
            .pool_max_idle_per_host(limits::NODE_CLIENT_IDLE_CONNECTIONS_MAX)
            .build(connector);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base: format!("https://{}", config.endpoint),
                node: config.expected,
                mismatch,
                idle_timeout: config.idle_timeout,
            }),
        })
    }

    /// The node this client reaches.
    #[must_use]
    pub fn node(&self) -> &NodeIdentity {
        &self.inner.node
    }

    fn request(&self, method: Method, path_and_query: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.inner.base))
    }

    fn transport_error(&self, e: &hyper_util::client::legacy::Error) -> NodeError {
        if let Some(why) = self
            .inner
            .mismatch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return NodeError::PeerIdentity(why);
        }
        NodeError::Transport(format!("{}: {}", self.inner.base, chain(e)))
    }

    /// Sends a request and waits for the response head, within the idle timeout.
    async fn send(&self, req: Request<RequestBody>) -> Result<http::Response<Incoming>, NodeError> {
        self.send_within(req, self.inner.idle_timeout).await
    }

    /// Sends a request and waits for the response head, within `wait`.
    async fn send_within(
        &self,
        req: Request<RequestBody>,
        wait: Duration,
    ) -> Result<http::Response<Incoming>, NodeError> {
        let what = format!("{} {}", req.method(), req.uri().path());
        match tokio::time::timeout(wait, self.inner.http.request(req)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(self.transport_error(&e)),
            Err(_) => Err(NodeError::Timeout(format!(
                "{what}: no answer from {} in {} s",
                self.inner.base,
                wait.as_secs()
            ))),
        }
    }

    /// Streams a write of `blob_id`. With `declared_len`, the node reserves
    /// (or refuses) the space before any byte is sent, and exactly that many
    /// bytes must follow.
    ///
    /// # Errors
    /// `BadRequest` for a bad blob id; the node's refusals arrive from
    /// `write` or `finish`.
    pub fn create(
        &self,
        blob_id: &str,
        declared_len: Option<u64>,
    ) -> Result<NodeBlobWriter, NodeError> {
        if !wire::is_valid_blob_id(blob_id) {
            return Err(NodeError::BadRequest(format!(
                "`{blob_id}` is not a blob id"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(limits::NODE_WRITE_QUEUE_CHUNKS_MAX);
        let finished = Arc::new(AtomicBool::new(false));
        let body = WriteBody {
            rx,
            finished: Arc::clone(&finished),
            declared_len,
        };
        let mut req = self.request(Method::PUT, &format!("{}/{blob_id}", wire::BLOBS_PATH));
        if let Some(len) = declared_len {
            req = req.header(http::header::CONTENT_LENGTH, len);
        }
        let req = req
            .body(UnsyncBoxBody::new(body))
            .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        let client = self.clone();
        let id = blob_id.to_owned();
        // The response comes once the node has the whole body and has made it
        // durable: no timeout on the head here; the writer bounds each wait
        // for the queue, and `finish` the wait for the receipt.
        let response = tokio::spawn(async move {
            let response = client
                .inner
                .http
                .request(req)
                .await
                .map_err(|e| client.transport_error(&e))?;
            let response = client.check(response, &id).await?;
            let receipt: WriteReceipt = client.read_json(response).await?;
            Ok(receipt)
        });
        Ok(NodeBlobWriter {
            blob_id: blob_id.to_owned(),
            tx: Some(tx),
            finished,
            response: Some(response),
            hasher: Sha256::new(),
            written: 0,
            idle_timeout: self.inner.idle_timeout,
        })
    }

    /// Writes a whole blob from a stream of chunks, never holding more than
    /// the writer's queue.
    ///
    /// # Errors
    /// As [`create`](Self::create), `NodeBlobWriter::write` and `finish`.
    pub async fn write_stream<S>(
        &self,
        blob_id: &str,
        declared_len: Option<u64>,
        mut chunks: S,
    ) -> Result<WriteReceipt, NodeError>
    where
        S: futures::Stream<Item = Bytes> + Unpin,
    {
        use futures::StreamExt as _;
        let mut writer = self.create(blob_id, declared_len)?;
        while let Some(chunk) = chunks.next().await {
            writer.write(chunk).await?;
        }
        writer.finish().await
    }

    /// Streams `len` bytes of `blob_id` from `offset`. With
    /// `verified_by_caller`, the node skips its block checksums (the caller
    /// authenticates every byte, as `BlobStore::read_authenticated`).
    /// Errors (including `NotFound`) arrive as the stream's first item.
    #[must_use]
    pub fn read(
        &self,
        blob_id: &str,
        offset: u64,
        len: u64,
        verified_by_caller: bool,
    ) -> NodeStream {
        let (tx, rx) = tokio::sync::mpsc::channel(limits::NODE_READ_AHEAD_CHUNKS_MAX);
        let client = self.clone();
        let blob_id = blob_id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = client
                .read_into(&blob_id, offset, len, verified_by_caller, &tx)
                .await
            {
                let _ = tx.send(Err(e)).await;
            }
        });
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    async fn read_into(
        &self,
        blob_id: &str,
        offset: u64,
        len: u64,
        verified_by_caller: bool,
        tx: &tokio::sync::mpsc::Sender<Result<Bytes, NodeError>>,
    ) -> Result<(), NodeError> {
        if !wire::is_valid_blob_id(blob_id) {
            return Err(NodeError::BadRequest(format!(
                "`{blob_id}` is not a blob id"
            )));
        }
        let verify = if verified_by_caller { "caller" } else { "node" };
        let req = self
            .request(
                Method::GET,
                &format!(
                    "{}/{blob_id}?offset={offset}&length={len}&verify={verify}",
                    wire::BLOBS_PATH
                ),
            )
            .body(empty())
            .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        let response = self.check(self.send(req).await?, blob_id).await?;
        let mut body = response.into_body();
        let block_bytes = nuage_base::limits::BLOB_BLOCK_BYTES;
        let mut block = BytesMut::new();
        let mut received = 0u64;
        loop {
            let frame = tokio::time::timeout(self.inner.idle_timeout, body.frame())
                .await
                .map_err(|_| {
                    NodeError::Timeout(format!(
                        "reading {blob_id}: no bytes for {} s after {received}",
                        self.inner.idle_timeout.as_secs()
                    ))
                })?;
            let data = match frame {
                None => break,
                Some(Err(e)) => {
                    return Err(NodeError::Transport(format!(
                        "reading {blob_id}: the body broke after {received} of {len} bytes: {}",
                        chain(&e)
                    )));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            received += data.len() as u64;
            if received > len {
                return Err(NodeError::Protocol(format!(
                    "reading {blob_id}: more than the {len} bytes asked for"
                )));
            }
            let mut data = data;
            while !data.is_empty() {
                let take = (block_bytes - block.len()).min(data.len());
                block.extend_from_slice(&data.split_to(take));
                if block.len() == block_bytes && tx.send(Ok(block.split().freeze())).await.is_err()
                {
                    return Ok(()); // the reader went away
                }
            }
        }
        if received != len {
            return Err(NodeError::Protocol(format!(
                "reading {blob_id}: the body ended after {received} of {len} bytes"
            )));
        }
        if !block.is_empty() {
            let _ = tx.send(Ok(block.freeze())).await;
        }
        Ok(())
    }

    /// A blob's length and modification time.
    ///
    /// # Errors
    /// `NotFound`, transport errors.
    pub async fn stat(&self, blob_id: &str) -> Result<BlobInfo, NodeError> {
        let req = self
            .request(Method::HEAD, &format!("{}/{blob_id}", wire::BLOBS_PATH))
            .body(empty())
            .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        let response = self.send(req).await?;
        let status = response.status();
        let header = |name: &str| -> Option<u64> {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        };
        if status == StatusCode::OK {
            let length = header(wire::HEADER_BLOB_LENGTH).ok_or_else(|| {
                NodeError::Protocol(format!("HEAD without {}", wire::HEADER_BLOB_LENGTH))
            })?;
            return Ok(BlobInfo {
                blob_id: blob_id.to_owned(),
                length,
                modified_ms: header(wire::HEADER_MODIFIED_MS).unwrap_or(0),
            });
        }
        let code = response
            .headers()
            .get(wire::HEADER_ERROR)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Err(error_from(status, &code, String::new(), blob_id))
    }

    /// Asks the node to read its whole copy of `blob_id` back, checking every
    /// block's checksum, and to say what it read (length and SHA-256 of the
    /// data). The caller compares them with what the blob should be.
    ///
    /// The node answers only once it has read the whole blob, so this waits
    /// the idle timeout plus the blob's length (from a stat first) at
    /// `NODE_VERIFY_BYTES_PER_SECOND_MIN`. Only gateways may call it.
    ///
    /// # Errors
    /// `NotFound` for a missing blob, `Corrupt` for a copy that fails a
    /// check, `AccessDenied` for a caller that is not a gateway, `Timeout`,
    /// transport errors.
    pub async fn verify(&self, blob_id: &str) -> Result<VerifyReceipt, NodeError> {
        if !wire::is_valid_blob_id(blob_id) {
            return Err(NodeError::BadRequest(format!(
                "`{blob_id}` is not a blob id"
            )));
        }
        let info = self.stat(blob_id).await?;
        let reading =
            Duration::from_secs(info.length / limits::NODE_VERIFY_BYTES_PER_SECOND_MIN + 1);
        let req = self
            .request(
                Method::POST,
                &format!("{}/{blob_id}{}", wire::BLOBS_PATH, wire::VERIFY_SUFFIX),
            )
            .body(empty())
            .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        let response = self
            .send_within(req, self.inner.idle_timeout.saturating_add(reading))
            .await?;
        let response = self.check(response, blob_id).await?;
        let receipt: VerifyReceipt = self.read_json(response).await?;
        if receipt.blob_id != blob_id {
            return Err(NodeError::Protocol(format!(
                "asked to verify {blob_id}, the node answered for {}",
                receipt.blob_id
            )));
        }
        Ok(receipt)
    }

    /// Removes a blob; removing a missing blob is not an error.
    ///
    /// # Errors
    /// `AccessDenied` for a caller that may not delete, transport errors.
    pub async fn delete(&self, blob_id: &str) -> Result<(), NodeError> {
        let req = self
            .request(Method::DELETE, &format!("{}/{blob_id}", wire::BLOBS_PATH))
            .body(empty())
            .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        let response = self.check(self.send(req).await?, blob_id).await?;
        drain(response).await;
        Ok(())
    }

    /// One page of at most `limit` blobs after `after`, in id order.
    ///
    /// # Errors
    /// Transport errors, `BadRequest` for a limit over the node's page size.
    pub async fn list(&self, after: Option<&str>, limit: usize) -> Result<ListPage, NodeError> {
        let mut path = format!("{}?limit={limit}", wire::BLOBS_PATH);
        if let Some(after) = after {
            if !wire::is_valid_blob_id(after) {
                return Err(NodeError::BadRequest(format!("`{after}` is not a blob id")));
            }
            path.push_str("&after=");
            path.push_str(after);
        }
        let req = self
            .request(Method::GET, &path)
            .body(empty())
            .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        let response = self.check(self.send(req).await?, "").await?;
        self.read_json(response).await
    }

    /// The node's identity and space.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        let req = self
            .request(Method::GET, wire::STATUS_PATH)
            .body(empty())
            .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        let response = self.check(self.send(req).await?, "").await?;
        self.read_json(response).await
    }

    /// Passes a success through; turns an error response into its error.
    async fn check(
        &self,
        response: http::Response<Incoming>,
        blob_id: &str,
    ) -> Result<http::Response<Incoming>, NodeError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body: Result<ErrorBody, NodeError> = self.read_json(response).await;
        let (code, message) = match body {
            Ok(b) => (b.error, b.message),
            Err(e) => (String::new(), format!("(unreadable error body: {e})")),
        };
        Err(error_from(status, &code, message, blob_id))
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        response: http::Response<Incoming>,
    ) -> Result<T, NodeError> {
        let body = Limited::new(response.into_body(), limits::NODE_JSON_BODY_BYTES_MAX);
        let bytes = tokio::time::timeout(self.inner.idle_timeout, body.collect())
            .await
            .map_err(|_| NodeError::Timeout("reading a response body".into()))?
            .map_err(|e| NodeError::Transport(format!("reading a response body: {e}")))?
            .to_bytes();
        serde_json::from_slice(&bytes)
            .map_err(|e| NodeError::Protocol(format!("bad JSON from the node: {e}")))
    }
}

/// The protocol's error codes back into errors (the server's
/// `error_response` is the other half).
fn error_from(status: StatusCode, code: &str, message: String, blob_id: &str) -> NodeError {
    match code {
        "NoSuchBlob" => NodeError::NotFound(blob_id.to_owned()),
        "BlobExists" => NodeError::Exists(message),
        "InsufficientStorage" => NodeError::InsufficientStorage(message),
        "AccessDenied" => NodeError::AccessDenied(message),
        "InvalidRange" => NodeError::InvalidRange(message),
        "BadRequest" => NodeError::BadRequest(message),
        "RequestTimeout" => NodeError::Timeout(message),
        "Corrupt" => NodeError::Corrupt {
            blob_id: blob_id.to_owned(),
            detail: message,
        },
        _ if status == StatusCode::NOT_FOUND && !blob_id.is_empty() => {
            NodeError::NotFound(blob_id.to_owned())
        }
        _ => NodeError::Refused {
            status: status.as_u16(),
            code: code.to_owned(),
            message,
        },
    }
}

fn empty() -> RequestBody {
    UnsyncBoxBody::new(Empty::new().map_err(|never| match never {}))
}

async fn drain(response: http::Response<Incoming>) {
    let mut body = response.into_body();
    while let Some(Ok(_)) = body.frame().await {}
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    // Bounded: error chains are short, but never trust a cycle.
    for _ in 0..8 {
        let Some(s) = source else { break };
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The request body of a write: chunks from the writer's queue. The queue
/// closing ends the body cleanly only after `finish`; otherwise (the writer
/// dropped or abandoned) the body fails, the request is aborted, and the node
/// discards what it received.
struct WriteBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    finished: Arc<AtomicBool>,
    declared_len: Option<u64>,
}

impl Body for WriteBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(None) if self.finished.load(Ordering::Acquire) => Poll::Ready(None),
            Poll::Ready(None) => Poll::Ready(Some(Err(
                "the blob writer was dropped before finish".into(),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.declared_len
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// A blob being streamed to a node. Dropping it, or `abandon`, aborts the
/// request: the node keeps nothing.
pub struct NodeBlobWriter {
    blob_id: String,
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    finished: Arc<AtomicBool>,
    response: Option<tokio::task::JoinHandle<Result<WriteReceipt, NodeError>>>,
    hasher: Sha256,
    written: u64,
    idle_timeout: Duration,
}

impl NodeBlobWriter {
    #[must_use]
    pub fn blob_id(&self) -> &str {
        &self.blob_id
    }

    /// Queues bytes for the body (big chunks are split, without copying);
    /// waits while the queue is full.
    ///
    /// # Errors
    /// The node's refusal (`InsufficientStorage`, `Exists`, ...) when it has
    /// answered already, `Timeout`, transport errors.
    pub async fn write(&mut self, mut data: Bytes) -> Result<(), NodeError> {
        while !data.is_empty() {
            let piece = data.split_to(data.len().min(limits::NODE_WRITE_CHUNK_BYTES_MAX));
            self.hasher.update(&piece);
            self.written += piece.len() as u64;
            let Some(tx) = self.tx.as_ref() else {
                return Err(NodeError::Protocol("write after the writer closed".into()));
            };
            match tokio::time::timeout(self.idle_timeout, tx.send(piece)).await {
                Ok(Ok(())) => {}
                // The request ended: the node answered (a refusal) or the
                // connection broke. Its outcome says which.
                Ok(Err(_)) => return Err(self.outcome_after_early_end().await),
                Err(_) => {
                    return Err(NodeError::Timeout(format!(
                        "writing {}: the node took no bytes for {} s",
                        self.blob_id,
                        self.idle_timeout.as_secs()
                    )));
                }
            }
        }
        Ok(())
    }

    async fn outcome_after_early_end(&mut self) -> NodeError {
        self.tx = None;
        match self.response.take() {
            Some(handle) => match handle.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => NodeError::Protocol(format!(
                    "writing {}: the node answered before the body ended",
                    self.blob_id
                )),
                Err(e) => NodeError::Transport(e.to_string()),
            },
            None => NodeError::Protocol("the write already ended".into()),
        }
    }

    /// Ends the body and waits for the node's receipt: the blob is durable
    /// on the node when this returns Ok. Checks the receipt's length and
    /// SHA-256 against what was sent.
    ///
    /// # Errors
    /// The node's refusal, `ChecksumMismatch`, `Timeout`, transport errors.
    pub async fn finish(mut self) -> Result<WriteReceipt, NodeError> {
        self.finished.store(true, Ordering::Release);
        self.tx = None;
        let handle = self
            .response
            .take()
            .ok_or_else(|| NodeError::Protocol("the write already ended".into()))?;
        let receipt = match tokio::time::timeout(self.idle_timeout, handle).await {
            Ok(Ok(result)) => result?,
            Ok(Err(e)) => return Err(NodeError::Transport(e.to_string())),
            Err(_) => {
                return Err(NodeError::Timeout(format!(
                    "writing {}: no receipt within {} s of the body's end",
                    self.blob_id,
                    self.idle_timeout.as_secs()
                )));
            }
        };
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if receipt.blob_id != self.blob_id
            || receipt.length != self.written
            || receipt.sha256 != sha256
        {
            return Err(NodeError::ChecksumMismatch(format!(
                "sent {} bytes of SHA-256 {sha256} as {}, the node stored {} bytes of SHA-256 {} as {}",
                self.written, self.blob_id, receipt.length, receipt.sha256, receipt.blob_id
            )));
        }
        Ok(receipt)
    }

    /// Aborts the write; the node discards what it received.
    pub async fn abandon(mut self) {
        self.tx = None;
        if let Some(handle) = self.response.take() {
            let _ = tokio::time::timeout(self.idle_timeout, handle).await;
        }
    }
}
