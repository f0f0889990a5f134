//! A minimal S3 client: exactly the requests the bench makes, SigV4-signed
//! with `nuage-sigv4`, over hyper's pooled HTTP/1.1 client, plain or TLS.
//!
//! Bodies are never buffered whole: a PUT streams its payload as it is
//! generated (`UNSIGNED-PAYLOAD`, so nothing has to be hashed before the
//! first byte goes out; the MD5 for the ETag check is computed on the way),
//! and a GET is compared with the regenerated payload as it arrives. Only
//! small XML answers (errors, listings, multipart) are read into memory, up
//! to [`XML_RESPONSE_BYTES_MAX`].

use crate::payload::{self, Verifier};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use md5::{Digest as _, Md5};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

/// How much of an XML answer (error, listing page, multipart) is read.
pub const XML_RESPONSE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// The piece size in which a PUT body is generated and sent.
pub const PUT_CHUNK_BYTES: usize = 64 * 1024;
/// S3's most keys in one DeleteObjects request.
pub const DELETE_OBJECTS_KEYS_MAX: usize = 1000;
/// S3's most parts in one multipart upload.
pub const MULTIPART_PARTS_MAX: u64 = 10_000;

/// Key and path encoding: RFC 3986 unreserved characters kept, and `/`.
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');
/// Query values: RFC 3986 unreserved characters kept.
const QUERY_ENCODE: &AsciiSet = &KEY_ENCODE.add(b'/');

/// Why one operation did not succeed, in the terms the report counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// The server answered with an error status (and S3 error code, if any).
    Http {
        status: u16,
        code: String,
        message: String,
    },
    /// The server said yes, but what it returned or stored is not what was
    /// written: the bench's reason to exist.
    Verification { what: &'static str, detail: String },
    /// No usable answer: connection, TLS, protocol.
    Transport { what: &'static str, detail: String },
    /// No answer within `--timeout`.
    Timeout,
}

impl OpError {
    /// The counting key: `HTTP 403 SignatureDoesNotMatch`, `verification:
    /// body`, `transport: connect`, `timeout`.
    #[must_use]
    pub fn kind(&self) -> String {
        match self {
            Self::Http { status, code, .. } if code.is_empty() => format!("HTTP {status}"),
            Self::Http { status, code, .. } => format!("HTTP {status} {code}"),
            Self::Verification { what, .. } => format!("verification: {what}"),
            Self::Transport { what, .. } => format!("transport: {what}"),
            Self::Timeout => "timeout".to_owned(),
        }
    }

    #[must_use]
    pub fn is_verification(&self) -> bool {
        matches!(self, Self::Verification { .. })
    }

    fn verification(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Verification {
            what,
            detail: detail.into(),
        }
    }

    fn transport(what: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Transport {
            what,
            detail: detail.to_string(),
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http {
                status,
                code,
                message,
            } => {
                write!(f, "HTTP {status}")?;
                if !code.is_empty() {
                    write!(f, " {code}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            Self::Verification { what, detail } => {
                write!(f, "verification failed ({what}): {detail}")
            }
            Self::Transport { what, detail } => write!(f, "transport error ({what}): {detail}"),
            Self::Timeout => write!(f, "no answer within the timeout"),
        }
    }
}

/// Path-style (`endpoint/bucket/key`) or virtual-host (`bucket.endpoint/key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    Path,
    VirtualHost,
}

/// Where and as whom.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://host:port` or `https://host:port`, optionally with a path.
    pub url: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    /// Of temporary credentials, sent as `x-amz-security-token`.
    pub session_token: Option<String>,
    pub addressing: Addressing,
}

/// The body of a request the bench sends.
pub enum RequestBody {
    Empty,
    Full(Option<Bytes>),
    Payload(PayloadBody),
}

/// A payload generated piece by piece as hyper asks for it.
pub struct PayloadBody {
    seed: u64,
    offset: u64,
    remaining: u64,
    md5: Option<Md5>,
    digest: Arc<Mutex<Option<[u8; 16]>>>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Payload(p) => {
                if p.remaining == 0 {
                    // A zero-length payload: its digest is that of nothing.
                    if let Some(md5) = p.md5.take() {
                        *p.digest.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(md5.finalize().into());
                    }
                    return Poll::Ready(None);
                }
                let len = usize::try_from(p.remaining)
                    .unwrap_or(PUT_CHUNK_BYTES)
                    .min(PUT_CHUNK_BYTES);
                let mut chunk = BytesMut::zeroed(len);
                payload::fill(p.seed, p.offset, &mut chunk);
                if let Some(md5) = &mut p.md5 {
                    md5.update(&chunk);
                }
                p.offset += len as u64;
                p.remaining -= len as u64;
                // hyper stops polling once Content-Length bytes are out:
                // the digest is complete with the last piece.
                if p.remaining == 0
                    && let Some(md5) = p.md5.take()
                {
                    *p.digest.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(md5.finalize().into());
                }
                Poll::Ready(Some(Ok(Frame::data(chunk.freeze()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(b) => b.is_none(),
            Self::Payload(p) => p.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Payload(p) => SizeHint::with_exact(p.remaining),
        }
    }
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
/// What a PUT of a payload range sent and got back.
struct SentPart {
    /// With verification: the MD5 of the bytes sent.
    md5: Option<[u8; 16]>,
    etag: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct ListPage {
    pub keys: Vec<String>,
    pub common_prefixes: u64,
    pub next_token: Option<String>,
    pub response_bytes: u64,
}

/// An S3 client for one endpoint and credential.
#[derive(Clone)]
pub struct S3Client {
    http: Client<Connector, RequestBody>,
    scheme: String,
    authority: String,
    base_path: String,
    endpoint: Endpoint,
}

impl S3Client {
    /// A client with a connection pool sized for `connections` at once.
    ///
    /// # Errors
    /// [`crate::BenchError::Config`] when the endpoint is not an http(s) URL.
    pub fn new(
        endpoint: Endpoint,
        tls: rustls::ClientConfig,
        connections: usize,
    ) -> Result<Self, crate::BenchError> {
        let bad =
            |why: &str| crate::BenchError::Config(format!("--endpoint `{}`: {why}", endpoint.url));
        let uri: http::Uri = endpoint.url.parse().map_err(|_| bad("not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some(s @ ("http" | "https")) => s.to_owned(),
            _ => return Err(bad("must start with http:// or https://")),
        };
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| bad("has no host"))?;
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(connections)
            .build(connector);
        Ok(Self {
            http,
            scheme,
            authority,
            base_path,
            endpoint,
        })
    }

    fn uri(&self, bucket: &str, key: &str, query: &str) -> String {
        let key = utf8_percent_encode(key, KEY_ENCODE);
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        match self.endpoint.addressing {
            Addressing::Path if bucket.is_empty() => {
                format!(
                    "{}://{}{}/{query}",
                    self.scheme, self.authority, self.base_path
                )
            }
            Addressing::Path => format!(
                "{}://{}{}/{bucket}/{key}{query}",
                self.scheme, self.authority, self.base_path
            ),
            Addressing::VirtualHost => format!(
                "{}://{bucket}.{}{}/{key}{query}",
                self.scheme, self.authority, self.base_path
            ),
        }
    }

    /// Builds, signs and sends one request; the response with its body unread.
    async fn send(
        &self,
        method: Method,
        (bucket, key, query): (&str, &str, &str),
        extra: &[(&'static str, String)],
        body: RequestBody,
        content_sha256: &str,
    ) -> Result<http::Response<Incoming>, OpError> {
        let uri: http::Uri = self
            .uri(bucket, key, query)
            .parse()
            .map_err(|e| OpError::transport("request", format!("bad URI: {e}")))?;
        let mut headers = HeaderMap::new();
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let now = time::OffsetDateTime::now_utc();
        let amz_date = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let header = |v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| OpError::transport("request", format!("bad header value `{v}`")))
        };
        headers.insert(http::header::HOST, header(&host)?);
        headers.insert("x-amz-date", header(&amz_date)?);
        headers.insert("x-amz-content-sha256", header(content_sha256)?);
        if let Some(len) = body.size_hint().exact()
            && !matches!(method, Method::GET | Method::HEAD | Method::DELETE)
        {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        for (name, value) in extra {
            headers.insert(*name, header(value)?);
        }
        if let Some(token) = &self.endpoint.session_token {
            headers.insert("x-amz-security-token", header(token)?);
        }
        nuage_sigv4::sign_s3(
            &method,
            &uri,
            &mut headers,
            &self.endpoint.access_key_id,
            &self.endpoint.secret_access_key,
            &self.endpoint.region,
        )
        .map_err(|e| OpError::transport("signing", e))?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .map_err(|e| OpError::transport("request", e))?;
        *request.headers_mut() = headers;
        self.http.request(request).await.map_err(|e| {
            if e.is_connect() {
                OpError::transport("connect", error_chain(&e))
            } else {
                OpError::transport("request", error_chain(&e))
            }
        })
    }

    /// Sends a request with a small (or no) body and reads a small answer;
    /// an error status becomes [`OpError::Http`].
    async fn call(
        &self,
        method: Method,
        target: (&str, &str, &str),
        extra: &[(&'static str, String)],
        body: Option<Bytes>,
    ) -> Result<(HeaderMap, Bytes), OpError> {
        let is_head = method == Method::HEAD;
        let (body, sha) = match body {
            Some(b) => {
                let sha = nuage_sigv4::payload_sha256_hex(&b);
                (RequestBody::Full(Some(b)), sha)
            }
            None => (RequestBody::Empty, nuage_sigv4::payload_sha256_hex(&[])),
        };
        let response = self.send(method, target, extra, body, &sha).await?;
        let status = response.status();
        let (parts, body) = response.into_parts();
        let bytes = read_small(body).await?;
        if !status.is_success() {
            return Err(http_error(status, &bytes, is_head));
        }
        Ok((parts.headers, bytes))
    }

    /// `HeadBucket`: `Ok(true)` exists, `Ok(false)` 404.
    ///
    /// # Errors
    /// Any other answer.
    pub async fn bucket_exists(&self, bucket: &str) -> Result<bool, OpError> {
        match self.call(Method::HEAD, (bucket, "", ""), &[], None).await {
            Ok(_) => Ok(true),
            Err(OpError::Http { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `CreateBucket` in the client's region.
    ///
    /// # Errors
    /// The server's refusal.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), OpError> {
        let body = (self.endpoint.region != "us-east-1").then(|| {
            Bytes::from(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                xml_escape(&self.endpoint.region)
            ))
        });
        self.call(Method::PUT, (bucket, "", ""), &[], body)
            .await
            .map(|_| ())
    }

    /// `DeleteBucket`.
    ///
    /// # Errors
    /// The server's refusal.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), OpError> {
        self.call(Method::DELETE, (bucket, "", ""), &[], None)
            .await
            .map(|_| ())
    }

    /// `PutObject` of the payload `seed`, `size` bytes; with `verify`, the
    /// returned ETag must be the payload's MD5.
    ///
    /// # Errors
    /// The server's refusal, a transport error, or an ETag mismatch.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        seed: u64,
        size: u64,
        verify: bool,
    ) -> Result<(), OpError> {
        let sent = self
            .put_payload(bucket, key, "", seed, (0, size), verify)
            .await?;
        if let Some(expected) = sent.md5 {
            let expected = hex::encode(expected);
            let etag = sent.etag.ok_or_else(|| {
                OpError::verification("ETag", format!("{key}: no ETag in the answer"))
            })?;
            if etag != expected {
                return Err(OpError::verification(
                    "ETag",
                    format!("{key}: ETag {etag}, expected the MD5 {expected}"),
                ));
            }
        }
        Ok(())
    }

    /// PUTs `range` of the payload: the ETag received and, when `verify`,
    /// the MD5 of what was sent.
    async fn put_payload(
        &self,
        bucket: &str,
        key: &str,
        query: &str,
        seed: u64,
        (offset, len): (u64, u64),
        verify: bool,
    ) -> Result<SentPart, OpError> {
        // An empty body is never polled: its digest is known now.
        let digest = Arc::new(Mutex::new((len == 0).then(|| Md5::digest([]).into())));
        let body = RequestBody::Payload(PayloadBody {
            seed,
            offset,
            remaining: len,
            md5: verify.then(Md5::new),
            digest: Arc::clone(&digest),
        });
        let response = self
            .send(
                Method::PUT,
                (bucket, key, query),
                &[],
                body,
                nuage_sigv4::UNSIGNED_PAYLOAD,
            )
            .await?;
        let status = response.status();
        let (parts, body) = response.into_parts();
        let bytes = read_small(body).await?;
        if !status.is_success() {
            return Err(http_error(status, &bytes, false));
        }
        let etag = parts
            .headers
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_owned());
        let md5 = if verify {
            let sent = digest.lock().unwrap_or_else(PoisonError::into_inner).take();
            Some(sent.ok_or_else(|| OpError::transport("request", "the body was not sent whole"))?)
        } else {
            None
        };
        Ok(SentPart { md5, etag })
    }

    /// A multipart upload of the payload `seed` in `part_size` parts, up to
    /// `part_concurrency` at once; aborted on any failure. With `verify`, each
    /// part's ETag must be its MD5 and the object's the MD5 of those, `-N`.
    ///
    /// # Errors
    /// The first failure of any step.
    #[allow(clippy::too_many_arguments)]
    pub async fn multipart_put(
        &self,
        bucket: &str,
        key: &str,
        seed: u64,
        size: u64,
        part_size: u64,
        part_concurrency: usize,
        verify: bool,
    ) -> Result<(), OpError> {
        use futures::StreamExt as _;
        let (_, created) = self
            .call(Method::POST, (bucket, key, "uploads="), &[], None)
            .await?;
        let upload_id = xml_values(&created, "UploadId")
            .into_iter()
            .next()
            .ok_or_else(|| OpError::transport("response", "CreateMultipartUpload: no UploadId"))?;
        let encoded_id = utf8_percent_encode(&upload_id, QUERY_ENCODE).to_string();
        let parts = size.div_ceil(part_size).max(1);
        let uploads = futures::stream::iter(1..=parts)
            .map(|n| {
                let offset = (n - 1) * part_size;
                let len = part_size.min(size - offset);
                let query = format!("partNumber={n}&uploadId={encoded_id}");
                async move {
                    let r = self
                        .put_payload(bucket, key, &query, seed, (offset, len), verify)
                        .await?;
                    Ok::<_, OpError>((n, r))
                }
            })
            .buffer_unordered(part_concurrency.max(1));
        let result: Result<Vec<(u64, SentPart)>, OpError> =
            uploads.collect::<Vec<_>>().await.into_iter().collect();
        let mut done = match result {
            Ok(done) => done,
            Err(e) => {
                let _ = self.abort_multipart(bucket, key, &upload_id).await;
                return Err(e);
            }
        };
        done.sort_by_key(|(n, _)| *n);
        let mut xml = String::from("<CompleteMultipartUpload>");
        let mut all_md5 = Md5::new();
        for (n, part) in &done {
            let Some(etag) = &part.etag else {
                let _ = self.abort_multipart(bucket, key, &upload_id).await;
                return Err(OpError::transport(
                    "response",
                    format!("UploadPart {n} of {key}: no ETag"),
                ));
            };
            if let Some(md5) = &part.md5 {
                if *etag != hex::encode(md5) {
                    let _ = self.abort_multipart(bucket, key, &upload_id).await;
                    return Err(OpError::verification(
                        "ETag",
                        format!("{key} part {n}: ETag {etag}, expected {}", hex::encode(md5)),
                    ));
                }
                all_md5.update(md5);
            }
            xml.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>\"{}\"</ETag></Part>",
                xml_escape(etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let completed = match self
            .call(
                Method::POST,
                (bucket, key, &format!("uploadId={encoded_id}")),
                &[],
                Some(Bytes::from(xml)),
            )
            .await
        {
            Ok((_, body)) => body,
            Err(e) => {
                let _ = self.abort_multipart(bucket, key, &upload_id).await;
                return Err(e);
            }
        };
        // S3 may answer 200 and report the failure in the body.
        if let Some(code) = xml_values(&completed, "Code").into_iter().next() {
            let message = xml_values(&completed, "Message")
                .into_iter()
                .next()
                .unwrap_or_default();
            let _ = self.abort_multipart(bucket, key, &upload_id).await;
            return Err(OpError::Http {
                status: 200,
                code,
                message,
            });
        }
        if verify {
            let expected = format!("{}-{parts}", hex::encode(all_md5.finalize()));
            let etag = xml_values(&completed, "ETag")
                .into_iter()
                .next()
                .unwrap_or_default();
            let etag = etag.trim_matches('"');
            if etag != expected {
                return Err(OpError::verification(
                    "ETag",
                    format!("{key}: multipart ETag {etag}, expected {expected}"),
                ));
            }
        }
        Ok(())
    }

    /// `AbortMultipartUpload`.
    ///
    /// # Errors
    /// The server's refusal.
    pub async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), OpError> {
        let query = format!("uploadId={}", utf8_percent_encode(upload_id, QUERY_ENCODE));
        self.call(Method::DELETE, (bucket, key, &query), &[], None)
            .await
            .map(|_| ())
    }

    /// `ListMultipartUploads` under `prefix`, one page: `(key, upload id)`.
    ///
    /// # Errors
    /// The server's refusal.
    pub async fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, OpError> {
        let query = format!(
            "prefix={}&uploads=",
            utf8_percent_encode(prefix, QUERY_ENCODE)
        );
        let (_, body) = self
            .call(Method::GET, (bucket, "", &query), &[], None)
            .await?;
        Ok(xml_blocks(&body, "Upload")
            .into_iter()
            .filter_map(|block| {
                let key = xml_values(block.as_bytes(), "Key").into_iter().next()?;
                let id = xml_values(block.as_bytes(), "UploadId")
                    .into_iter()
                    .next()?;
                Some((key, id))
            })
            .collect())
    }

    /// `GetObject`, every byte compared with the payload `seed` when
    /// `verify`; the number of bytes received.
    ///
    /// # Errors
    /// The server's refusal, a transport error, or a difference.
    pub async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        seed: u64,
        size: u64,
        verify: bool,
    ) -> Result<u64, OpError> {
        let sha = nuage_sigv4::payload_sha256_hex(&[]);
        let response = self
            .send(
                Method::GET,
                (bucket, key, ""),
                &[],
                RequestBody::Empty,
                &sha,
            )
            .await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = read_small(body).await?;
            return Err(http_error(status, &bytes, false));
        }
        let mut verifier = Verifier::new(seed, 0);
        let mut received: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| OpError::transport("body", error_chain(&e)))?;
            if let Ok(data) = frame.into_data() {
                received += data.len() as u64;
                if verify {
                    verifier.update(&data);
                }
            }
        }
        if verify {
            if received != size {
                return Err(OpError::verification(
                    "size",
                    format!("{key}: {received} bytes read, {size} written"),
                ));
            }
            if let Some(at) = verifier.mismatch_at() {
                return Err(OpError::verification(
                    "body",
                    format!("{key}: the bytes read differ from those written from offset {at}"),
                ));
            }
        }
        Ok(received)
    }

    /// `HeadObject`; with `verify`, its `Content-Length` must be `size`.
    ///
    /// # Errors
    /// The server's refusal, a transport error, or a wrong length.
    pub async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        verify: bool,
    ) -> Result<(), OpError> {
        let (headers, _) = self
            .call(Method::HEAD, (bucket, key, ""), &[], None)
            .await?;
        if verify {
            let length = headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if length != Some(size) {
                return Err(OpError::verification(
                    "size",
                    format!("{key}: HEAD says Content-Length {length:?}, {size} written"),
                ));
            }
        }
        Ok(())
    }

    /// One `ListObjectsV2` page.
    ///
    /// # Errors
    /// The server's refusal or an unreadable answer.
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: &str,
        max_keys: u32,
        token: Option<&str>,
    ) -> Result<ListPage, OpError> {
        let mut query = Vec::new();
        if let Some(token) = token {
            query.push(format!(
                "continuation-token={}",
                utf8_percent_encode(token, QUERY_ENCODE)
            ));
        }
        if !delimiter.is_empty() {
            query.push(format!(
                "delimiter={}",
                utf8_percent_encode(delimiter, QUERY_ENCODE)
            ));
        }
        query.push("list-type=2".to_owned());
        query.push(format!("max-keys={max_keys}"));
        query.push(format!(
            "prefix={}",
            utf8_percent_encode(prefix, QUERY_ENCODE)
        ));
        let (_, body) = self
            .call(Method::GET, (bucket, "", &query.join("&")), &[], None)
            .await?;
        if !body
            .windows(b"<ListBucketResult".len())
            .any(|w| w == b"<ListBucketResult")
        {
            return Err(OpError::transport(
                "response",
                "ListObjectsV2: not a ListBucketResult",
            ));
        }
        let truncated = xml_values(&body, "IsTruncated")
            .first()
            .is_some_and(|v| v == "true");
        let next_token = xml_values(&body, "NextContinuationToken")
            .into_iter()
            .next();
        if truncated && next_token.is_none() {
            return Err(OpError::transport(
                "response",
                "ListObjectsV2: truncated without a continuation token",
            ));
        }
        Ok(ListPage {
            keys: xml_blocks(&body, "Contents")
                .iter()
                .filter_map(|c| xml_values(c.as_bytes(), "Key").into_iter().next())
                .collect(),
            common_prefixes: xml_blocks(&body, "CommonPrefixes").len() as u64,
            next_token: if truncated { next_token } else { None },
            response_bytes: body.len() as u64,
        })
    }

    /// `DeleteObject`.
    ///
    /// # Errors
    /// The server's refusal.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), OpError> {
        self.call(Method::DELETE, (bucket, key, ""), &[], None)
            .await
            .map(|_| ())
    }

    /// `DeleteObjects` (quiet) of up to [`DELETE_OBJECTS_KEYS_MAX`] keys;
    /// the keys the server could not delete, with their codes.
    ///
    /// # Errors
    /// The server's refusal of the whole request.
    pub async fn delete_objects(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<String>, OpError> {
        use base64::Engine as _;
        let mut xml = String::from("<Delete><Quiet>true</Quiet>");
        for key in keys.iter().take(DELETE_OBJECTS_KEYS_MAX) {
            xml.push_str(&format!("<Object><Key>{}</Key></Object>", xml_escape(key)));
        }
        xml.push_str("</Delete>");
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(xml.as_bytes()));
        let (_, body) = self
            .call(
                Method::POST,
                (bucket, "", "delete="),
                &[("content-md5", md5)],
                Some(Bytes::from(xml)),
            )
            .await?;
        Ok(xml_blocks(&body, "Error")
            .iter()
            .map(|e| {
                let key = xml_values(e.as_bytes(), "Key")
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                let code = xml_values(e.as_bytes(), "Code")
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                format!("{key}: {code}")
            })
            .collect())
    }
}

/// The error and its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn read_small(body: Incoming) -> Result<Bytes, OpError> {
    http_body_util::Limited::new(body, XML_RESPONSE_BYTES_MAX)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|e| OpError::transport("body", e))
}

fn http_error(status: StatusCode, body: &[u8], is_head: bool) -> OpError {
    let (code, message) = if is_head {
        (String::new(), String::new())
    } else {
        (
            xml_values(body, "Code")
                .into_iter()
                .next()
                .unwrap_or_default(),
            xml_values(body, "Message")
                .into_iter()
                .next()
                .unwrap_or_default(),
        )
    };
    OpError::Http {
        status: status.as_u16(),
        code,
        message,
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#34;", "\"")
        .replace("&amp;", "&")
}

/// The raw inner text of every `<tag>...</tag>` (not nested in itself).
fn xml_blocks(body: &[u8], tag: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest: &str = &text;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(after[..end].to_owned());
        rest = &after[end + close.len()..];
    }
    out
}

/// The unescaped text of every `<tag>...</tag>`.
fn xml_values(body: &[u8], tag: &str) -> Vec<String> {
    xml_blocks(body, tag)
        .iter()
        .map(|v| xml_unescape(v))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn xml_fields() {
        let body = b"<Error><Code>SignatureDoesNotMatch</Code><Message>a &amp; b</Message></Error>";
        assert_eq!(xml_values(body, "Code"), ["SignatureDoesNotMatch"]);
        assert_eq!(xml_values(body, "Message"), ["a & b"]);
        let list = b"<ListBucketResult><Contents><Key>a</Key></Contents><Contents><Key>b&lt;</Key></Contents></ListBucketResult>";
        let keys: Vec<String> = xml_blocks(list, "Contents")
            .iter()
            .flat_map(|c| xml_values(c.as_bytes(), "Key"))
            .collect();
        assert_eq!(keys, ["a", "b<"]);
    }

    #[test]
    fn path_and_virtual_host_addressing() {
        let endpoint = |url: &str, addressing| Endpoint {
            url: url.to_owned(),
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            region: "r".into(),
            session_token: None,
            addressing,
        };
        let tls = crate::tls::client_config(None, true).unwrap();
        let path = S3Client::new(
            endpoint("http://127.0.0.1:9000", Addressing::Path),
            tls.clone(),
            1,
        )
        .unwrap();
        assert_eq!(
            path.uri("b", "a b/c+d", ""),
            "http://127.0.0.1:9000/b/a%20b/c%2Bd"
        );
        assert_eq!(
            path.uri("b", "", "uploads="),
            "http://127.0.0.1:9000/b/?uploads="
        );
        let vhost = S3Client::new(
            endpoint("https://s3.example:443/", Addressing::VirtualHost),
            tls.clone(),
            1,
        )
        .unwrap();
        assert_eq!(vhost.uri("b", "k", "x=1"), "https://b.s3.example:443/k?x=1");
        for bad in ["ftp://h", "h:9000", "not a url"] {
            assert!(
                S3Client::new(endpoint(bad, Addressing::Path), tls.clone(), 1).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_kinds() {
        let e = OpError::Http {
            status: 403,
            code: "SignatureDoesNotMatch".into(),
            message: String::new(),
        };
        assert_eq!(e.kind(), "HTTP 403 SignatureDoesNotMatch");
        let e = OpError::Http {
            status: 404,
            code: String::new(),
            message: String::new(),
        };
        assert_eq!(e.kind(), "HTTP 404");
        assert!(OpError::verification("body", "x").is_verification());
        assert_eq!(
            OpError::verification("body", "x").kind(),
            "verification: body"
        );
    }
}
