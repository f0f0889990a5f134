//! [`XksClient`]: Nuage's side of the XKS wire, the implementation of
//! [`nuage_kms::ExternalKeyStore`] the key service calls to wrap and unwrap
//! with a tenant's external key.
//!
//! Each call is one `POST` over HTTPS (hyper 1, the hyper-util pooled client,
//! rustls with the system's roots plus the CA certificates given at
//! construction), SigV4-signed for the service `kms-xks-proxy` with the
//! store's credential, and bounded: [`XKS_CALL_TIMEOUT_MS_MAX`] for the whole
//! exchange, [`XKS_RESPONSE_BODY_BYTES_MAX`] for the answer. Plain `http://`
//! is refused unless the host is a loopback IP address (a proxy on the same
//! machine, for development): the secret and the keys' plaintext would
//! otherwise cross the network in the clear. `localhost` by name is refused
//! too, since a name can resolve elsewhere.
//!
//! Errors: a proxy that cannot be reached, does not answer in time or answers
//! something that is not the XKS protocol (a malformed body, a wrong-size tag,
//! a CDIV that does not match) is [`XksError::Unreachable`] with a message
//! saying which; an XKS error body is [`XksError::Refused`] with its
//! `errorName`, status and message. A bad endpoint or key id is also
//! `Unreachable`, with nothing sent: the contract has no third kind.
//!
//! Signing uses `nuage_sigv4::sign` rather than the `aws-sigv4` crate: it is
//! the same canonicalization Nuage's verifiers use, checked against AWS's
//! published signing examples, it needs no AWS SDK runtime in the server,
//! and this crate's tests check its signatures against `aws-sigv4`'s.
//! Nothing an XKS proxy returns is cached (see `nuage_kms::external`).

use crate::wire::{
    self, BASE64, DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, ErrorBody,
    HealthResponse, KeyMetadataResponse, MetadataOnlyRequest, RequestMetadata,
};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nuage_base::limits::{
    XKS_AAD_BYTES_MAX, XKS_CALL_TIMEOUT_MS_MAX, XKS_CIPHERTEXT_METADATA_BYTES_MAX,
    XKS_CONNECT_TIMEOUT_MS_MAX, XKS_ERROR_MESSAGE_CHARS_MAX, XKS_PLAINTEXT_BYTES_MAX,
    XKS_RESPONSE_BODY_BYTES_MAX,
};
use nuage_base::{Clock, SystemClock};
use nuage_kms::{
    ExternalKeyStore, XksCiphertext, XksError, XksHealth, XksKeyMetadata, XksProxyEndpoint,
    XksRequestMetadata,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// How to build an [`XksClient`]. Read by the binary from its configuration.
pub struct XksClientConfig {
    /// The region of the SigV4 credential scope (Nuage's region; AWS KMS
    /// signs with the region the request was made in).
    pub region: String,
    /// CA certificates to trust besides the system's, PEM (for example the
    /// self-signed certificate `nuage xks-proxy init` writes). Each entry may
    /// hold several certificates.
    pub extra_ca_certificates_pem: Vec<Vec<u8>>,
    /// Where the `x-amz-date` of each request comes from.
    pub clock: Arc<dyn Clock>,
}

impl XksClientConfig {
    /// The system's roots only, the system clock.
    #[must_use]
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            extra_ca_certificates_pem: Vec::new(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl fmt::Debug for XksClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XksClientConfig")
            .field("region", &self.region)
            .field(
                "extra_ca_certificates",
                &self.extra_ca_certificates_pem.len(),
            )
            .finish_non_exhaustive()
    }
}

/// Why an [`XksClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum XksClientError {
    #[error("invalid CA certificate PEM: {0}")]
    Certificate(String),
    #[error("no trusted CA certificates: the system has none and none were given")]
    NoRoots,
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// The XKS proxy client. Cheap to clone (the connection pool is shared); one
/// instance serves every tenant's stores.
#[derive(Clone)]
pub struct XksClient {
    http: Client<Connector, Full<Bytes>>,
    region: String,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for XksClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XksClient")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl XksClient {
    /// A client trusting the system's roots and `config`'s extra CAs.
    ///
    /// # Errors
    /// An extra certificate that does not parse, or no root at all.
    pub fn new(config: XksClientConfig) -> Result<Self, XksClientError> {
        let mut roots = rustls::RootCertStore::empty();
        // Unreadable system certificates are not fatal: the tenant's own CA
        // may be all a deployment needs.
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        for pem in &config.extra_ca_certificates_pem {
            let certs = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| XksClientError::Certificate(e.to_string()))?;
            if certs.is_empty() {
                return Err(XksClientError::Certificate(
                    "no CERTIFICATE block in the PEM".to_owned(),
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| XksClientError::Certificate(e.to_string()))?;
            }
        }
        if roots.is_empty() {
            return Err(XksClientError::NoRoots);
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| XksClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(Duration::from_millis(XKS_CONNECT_TIMEOUT_MS_MAX)));
        tcp.set_nodelay(true);
        // http:// is allowed by the connector and refused by `url` for any
        // host that is not a loopback address.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Ok(Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
            region: config.region,
            clock: config.clock,
        })
    }

    /// The signed `POST` of `body` to `{uri_endpoint}{uri_path}/{suffix}`.
    fn signed_request(
        &self,
        endpoint: &XksProxyEndpoint,
        suffix: &str,
        body: &impl Serialize,
    ) -> Result<http::Request<Bytes>, XksError> {
        let (url, host) = url(endpoint, suffix)?;
        let body = serde_json::to_vec(body)
            .map_err(|e| XksError::Unreachable(format!("cannot encode the request: {e}")))?;
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(&url)
            .header(http::header::HOST, &host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-amz-date", amz_date(self.clock.now_unix_ns()))
            .body(Bytes::from(body))
            .map_err(|e| XksError::Unreachable(format!("cannot build a request to {url}: {e}")))?;
        nuage_sigv4::sign(
            &mut request,
            &endpoint.access_key_id,
            &endpoint.secret_access_key,
            &self.region,
            wire::SIGNING_SERVICE,
        )
        .map_err(|e| XksError::Unreachable(format!("cannot sign the request: {e}")))?;
        Ok(request)
    }

    /// One signed POST of `body` to `{uri_endpoint}{uri_path}/{suffix}`,
    /// and its 200 answer parsed as `R`.
    async fn call<R: DeserializeOwned>(
        &self,
        endpoint: &XksProxyEndpoint,
        suffix: &str,
        body: &impl Serialize,
    ) -> Result<R, XksError> {
        let request = self.signed_request(endpoint, suffix, body)?;
        let url = request.uri().to_string();
        let request = request.map(Full::new);
        let timeout = Duration::from_millis(XKS_CALL_TIMEOUT_MS_MAX);
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                XksError::Unreachable(format!("cannot reach {url}: {}", error_chain(&e)))
            })?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), XKS_RESPONSE_BODY_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| {
                    XksError::Unreachable(format!(
                        "reading the answer of {url} (at most {XKS_RESPONSE_BODY_BYTES_MAX} \
                         bytes): {e}"
                    ))
                })?
                .to_bytes();
            Ok::<_, XksError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| {
                XksError::Unreachable(format!(
                    "{url} did not answer within {XKS_CALL_TIMEOUT_MS_MAX} ms"
                ))
            })??;
        if status != http::StatusCode::OK {
            return Err(refusal(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            XksError::Unreachable(format!("{url} answered a malformed XKS response: {e}"))
        })
    }
}

/// `YYYYMMDDTHHMMSSZ`.
fn amz_date(now_unix_ns: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_unix_ns))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// The full URL of an operation and the `host` header to sign, after
/// checking the endpoint the way the module's documentation says.
fn url(endpoint: &XksProxyEndpoint, suffix: &str) -> Result<(String, String), XksError> {
    let bad = |why: String| {
        XksError::Unreachable(format!(
            "invalid XKS proxy endpoint `{}`: {why}; nothing was sent",
            endpoint.uri_endpoint
        ))
    };
    let base: http::Uri = endpoint
        .uri_endpoint
        .parse()
        .map_err(|e| bad(format!("not a URI ({e})")))?;
    let authority = base
        .authority()
        .ok_or_else(|| bad("no host".to_owned()))?
        .clone();
    if authority.as_str().contains('@') {
        return Err(bad("user information is not allowed".to_owned()));
    }
    if !matches!(base.path(), "" | "/") || base.query().is_some() {
        return Err(bad(
            "the endpoint is scheme and host only; the path goes in the URI path".to_owned(),
        ));
    }
    match base.scheme_str() {
        Some("https") => {}
        Some("http") => {
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let loopback = host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(bad(
                    "http:// is allowed only to a loopback address (127.0.0.0/8, ::1); \
                     use https://"
                        .to_owned(),
                ));
            }
        }
        _ => return Err(bad("the scheme must be https://".to_owned())),
    }
    wire::check_uri_path(&endpoint.uri_path).map_err(|why| {
        XksError::Unreachable(format!(
            "invalid XKS proxy URI path: {why}; nothing was sent"
        ))
    })?;
    let scheme = base.scheme_str().unwrap_or("https");
    Ok((
        format!("{scheme}://{authority}{}/{suffix}", endpoint.uri_path),
        authority.as_str().to_owned(),
    ))
}

/// A transport error with its causes: hyper's own message ("client error
/// (Connect)") says little without them.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A non-200 answer: the proxy's XKS error, or `Unreachable` when the body is
/// not one.
fn refusal(status: http::StatusCode, body: &[u8]) -> XksError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) if !error.error_name.is_empty() && error.error_name.len() <= 64 => {
            XksError::Refused {
                error_name: wire::error_message(&error.error_name),
                status: status.as_u16(),
                message: wire::error_message(error.error_message.as_deref().unwrap_or("")),
            }
        }
        _ => {
            let excerpt: String = String::from_utf8_lossy(body)
                .chars()
                .take(XKS_ERROR_MESSAGE_CHARS_MAX / 4)
                .collect();
            XksError::Unreachable(format!(
                "the proxy answered HTTP {status} without an XKS error body: {}",
                wire::error_message(&excerpt)
            ))
        }
    }
}

fn decode(field: &str, value: &str) -> Result<Vec<u8>, XksError> {
    BASE64.decode(value).map_err(|_| {
        XksError::Unreachable(format!("malformed XKS response: `{field}` is not base64"))
    })
}

fn check_key_id(id: &str) -> Result<(), XksError> {
    wire::check_key_id(id).map_err(|why| {
        XksError::Unreachable(format!(
            "invalid external key id `{id}`: {why}; nothing was sent"
        ))
    })
}

fn malformed(what: impl fmt::Display) -> XksError {
    XksError::Unreachable(format!("malformed XKS response: {what}"))
}

#[async_trait::async_trait]
impl ExternalKeyStore for XksClient {
    async fn health(
        &self,
        endpoint: &XksProxyEndpoint,
        metadata: &XksRequestMetadata,
    ) -> Result<XksHealth, XksError> {
        let request = MetadataOnlyRequest {
            request_metadata: Some(RequestMetadata::for_health(metadata)),
        };
        let answer: HealthResponse = self.call(endpoint, "health", &request).await?;
        // The spec: at least one and at most ten external key managers.
        if answer.ekm_fleet_details.is_empty() || answer.ekm_fleet_details.len() > 10 {
            return Err(malformed(format!(
                "{} entries in ekmFleetDetails (1 to 10)",
                answer.ekm_fleet_details.len()
            )));
        }
        Ok(XksHealth {
            xks_proxy_vendor: answer.xks_proxy_vendor,
            xks_proxy_model: answer.xks_proxy_model,
            ekm_vendor: answer.ekm_vendor,
            ekm_health: answer
                .ekm_fleet_details
                .into_iter()
                .map(|detail| detail.health_status)
                .collect(),
        })
    }

    async fn key_metadata(
        &self,
        endpoint: &XksProxyEndpoint,
        xks_key_id: &str,
        metadata: &XksRequestMetadata,
    ) -> Result<XksKeyMetadata, XksError> {
        check_key_id(xks_key_id)?;
        let request = MetadataOnlyRequest {
            request_metadata: Some(RequestMetadata::for_key(metadata)),
        };
        let answer: KeyMetadataResponse = self
            .call(endpoint, &format!("keys/{xks_key_id}/metadata"), &request)
            .await?;
        if answer.key_usage.len() > 10 {
            return Err(malformed("more than ten keyUsage values"));
        }
        Ok(XksKeyMetadata {
            key_spec: answer.key_spec,
            key_usage: answer.key_usage,
            key_status: answer.key_status,
        })
    }

    async fn encrypt(
        &self,
        endpoint: &XksProxyEndpoint,
        xks_key_id: &str,
        metadata: &XksRequestMetadata,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<XksCiphertext, XksError> {
        check_key_id(xks_key_id)?;
        if plaintext.len() > XKS_PLAINTEXT_BYTES_MAX || aad.len() > XKS_AAD_BYTES_MAX {
            return Err(XksError::Unreachable(format!(
                "the plaintext ({} bytes) or AAD ({} bytes) exceeds what every XKS proxy must \
                 accept ({XKS_PLAINTEXT_BYTES_MAX} and {XKS_AAD_BYTES_MAX}); nothing was sent",
                plaintext.len(),
                aad.len()
            )));
        }
        let request = EncryptRequest {
            request_metadata: Some(RequestMetadata::for_key(metadata)),
            additional_authenticated_data: (!aad.is_empty()).then(|| BASE64.encode(aad)),
            plaintext: Some(BASE64.encode(plaintext)),
            encryption_algorithm: Some(wire::ENCRYPTION_ALGORITHM.to_owned()),
            // The proxy proves its output decrypts before Nuage stores it.
            ciphertext_data_integrity_value_algorithm: Some(wire::CDIV_ALGORITHM.to_owned()),
        };
        let answer: EncryptResponse = self
            .call(endpoint, &format!("keys/{xks_key_id}/encrypt"), &request)
            .await?;
        let ciphertext = decode("ciphertext", &answer.ciphertext)?;
        let iv = decode("initializationVector", &answer.initialization_vector)?;
        let tag = decode("authenticationTag", &answer.authentication_tag)?;
        let ciphertext_metadata = answer
            .ciphertext_metadata
            .as_deref()
            .map(|m| decode("ciphertextMetadata", m))
            .transpose()?;
        if ciphertext.len() != plaintext.len() {
            return Err(malformed(format!(
                "{} bytes of ciphertext for {} bytes of plaintext",
                ciphertext.len(),
                plaintext.len()
            )));
        }
        if !wire::IV_BYTES_ALLOWED.contains(&iv.len()) || tag.len() != wire::TAG_BYTES {
            return Err(malformed(format!(
                "a {}-byte IV and a {}-byte tag (12 or 16, and 16)",
                iv.len(),
                tag.len()
            )));
        }
        if ciphertext_metadata
            .as_ref()
            .is_some_and(|m| m.len() > XKS_CIPHERTEXT_METADATA_BYTES_MAX)
        {
            return Err(malformed("ciphertextMetadata longer than 20 bytes"));
        }
        let expected = wire::cdiv(
            aad,
            ciphertext_metadata.as_deref().unwrap_or_default(),
            &iv,
            &ciphertext,
            &tag,
        );
        let claimed = answer
            .ciphertext_data_integrity_value
            .as_deref()
            .map(|v| decode("ciphertextDataIntegrityValue", v))
            .transpose()?;
        if claimed.as_deref() != Some(expected.as_slice()) {
            return Err(malformed(
                "the ciphertextDataIntegrityValue is missing or does not match the ciphertext",
            ));
        }
        Ok(XksCiphertext {
            ciphertext,
            initialization_vector: iv,
            authentication_tag: tag,
            ciphertext_metadata,
        })
    }

    async fn decrypt(
        &self,
        endpoint: &XksProxyEndpoint,
        xks_key_id: &str,
        metadata: &XksRequestMetadata,
        ciphertext: &XksCiphertext,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, XksError> {
        check_key_id(xks_key_id)?;
        let request = DecryptRequest {
            request_metadata: Some(RequestMetadata::for_key(metadata)),
            ciphertext: Some(BASE64.encode(&ciphertext.ciphertext)),
            ciphertext_metadata: ciphertext
                .ciphertext_metadata
                .as_deref()
                .map(|m| BASE64.encode(m)),
            encryption_algorithm: Some(wire::ENCRYPTION_ALGORITHM.to_owned()),
            additional_authenticated_data: (!aad.is_empty()).then(|| BASE64.encode(aad)),
            authentication_tag: Some(BASE64.encode(&ciphertext.authentication_tag)),
            initialization_vector: Some(BASE64.encode(&ciphertext.initialization_vector)),
        };
        let answer: DecryptResponse = self
            .call(endpoint, &format!("keys/{xks_key_id}/decrypt"), &request)
            .await?;
        let answer = Zeroizing::new(answer.plaintext);
        let plaintext = Zeroizing::new(decode("plaintext", &answer)?);
        if plaintext.len() != ciphertext.ciphertext.len() {
            return Err(malformed(format!(
                "{} bytes of plaintext for {} bytes of ciphertext",
                plaintext.len(),
                ciphertext.ciphertext.len()
            )));
        }
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn endpoint(uri: &str) -> XksProxyEndpoint {
        XksProxyEndpoint {
            uri_endpoint: uri.to_owned(),
            uri_path: "/p/kms/xks/v1".to_owned(),
            access_key_id: "AKIAI2SFODNN7EXAMPLE".to_owned(),
            secret_access_key: Zeroizing::new("secret".to_owned()),
        }
    }

    #[test]
    fn urls_refuse_plain_http_off_loopback() {
        let (full, host) = url(&endpoint("https://xks.example.com:8443"), "health").unwrap();
        assert_eq!(full, "https://xks.example.com:8443/p/kms/xks/v1/health");
        assert_eq!(host, "xks.example.com:8443");
        assert!(url_ok("http://127.0.0.1:9000"));
        assert!(url_ok("http://127.8.9.10"));
        assert!(url_ok("http://[::1]:9000"));
        for refused in [
            "http://xks.example.com",
            "http://localhost:9000",
            "http://10.0.0.1",
            "http://[::ffff:10.0.0.1]",
            "ftp://xks.example.com",
            "https://xks.example.com/path",
            "https://user@xks.example.com",
            "xks.example.com",
        ] {
            let error = url(&endpoint(refused), "health").unwrap_err();
            assert!(
                matches!(&error, XksError::Unreachable(m) if m.contains("nothing was sent")),
                "{refused}: {error:?}"
            );
        }
    }

    fn url_ok(uri: &str) -> bool {
        url(&endpoint(uri), "health").is_ok()
    }

    struct FixedClock(i64);

    impl Clock for FixedClock {
        fn now_unix_ns(&self) -> i64 {
            self.0
        }
    }

    /// The client's signature is the one AWS's own signer computes for the
    /// same request, secret, region, service and time.
    #[tokio::test]
    async fn signatures_match_aws_sigv4() {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let at_s = 1_764_400_000;
        let mut config = XksClientConfig::new("eu-west-3");
        config.clock = Arc::new(FixedClock(at_s * 1_000_000_000));
        let client = XksClient::new(config).unwrap();
        let endpoint = XksProxyEndpoint {
            secret_access_key: Zeroizing::new("FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE".into()),
            ..endpoint("https://xks.example.com:8443")
        };
        let body = MetadataOnlyRequest {
            request_metadata: Some(RequestMetadata::for_health(&XksRequestMetadata {
                aws_principal_arn: "arn:aws:iam::123456789012:root".into(),
                kms_key_arn: None,
                kms_operation: "KmsHealthCheck".into(),
                kms_request_id: "r-1".into(),
                kms_via_service: None,
                access_reason: "CUSTOMER_INITIATED_ACCESS".into(),
            })),
        };
        let ours = client
            .signed_request(&endpoint, "keys/k-1/metadata", &body)
            .unwrap();
        let identity = aws_credential_types::Credentials::new(
            &endpoint.access_key_id,
            endpoint.secret_access_key.as_str(),
            None,
            None,
            "test",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-3")
            .name("kms-xks-proxy")
            .time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(at_s as u64))
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers = [
            ("host", "xks.example.com:8443"),
            ("content-type", "application/json"),
        ];
        let signable = SignableRequest::new(
            "POST",
            ours.uri().to_string(),
            headers.into_iter(),
            SignableBody::Bytes(ours.body()),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let theirs: Vec<(&str, &str)> = instructions.headers().collect();
        let authorization = |value: &str| value.split("Signature=").nth(1).unwrap().to_owned();
        let aws = theirs
            .iter()
            .find(|(n, _)| *n == "authorization")
            .unwrap()
            .1;
        let nuage = ours.headers()["authorization"].to_str().unwrap();
        assert_eq!(authorization(nuage), authorization(aws), "{nuage}\n{aws}");
        assert!(nuage.contains("/eu-west-3/kms-xks-proxy/aws4_request"));
        assert!(nuage.contains("SignedHeaders=content-type;host;x-amz-date"));
        let date = theirs.iter().find(|(n, _)| *n == "x-amz-date").unwrap().1;
        assert_eq!(ours.headers()["x-amz-date"], date);
    }

    #[test]
    fn amz_dates_are_sigv4_timestamps() {
        assert_eq!(amz_date(1_440_938_160_000_000_000), "20150830T123600Z");
    }

    #[test]
    fn non_xks_error_bodies_are_unreachable() {
        let refused = refusal(
            http::StatusCode::FORBIDDEN,
            br#"{"errorName":"AccessDeniedException","errorMessage":"no"}"#,
        );
        assert_eq!(
            refused,
            XksError::Refused {
                error_name: "AccessDeniedException".into(),
                status: 403,
                message: "no".into()
            }
        );
        let html = refusal(http::StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert!(matches!(html, XksError::Unreachable(m) if m.contains("HTTP 502")));
    }
}
