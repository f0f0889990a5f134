//! AWS Signature Version 4 verification of `Authorization:
//! AWS4-HMAC-SHA256 ...` headers, for the API front ends Nuage serves itself
//! (IAM and STS queries, the KMS JSON API) rather than through s3s.
//!
//! Why ours and not a crate: s3s verifies only the credential scopes of `s3`
//! and `sts`, refuses every other scope before a custom route sees the
//! request, and keeps its verifier private; `aws-sigv4` only signs. So this
//! crate recomputes the signature the way the SigV4 specification describes
//! and compares it in constant time. It is checked against AWS's published
//! signing examples (the tests below) and, through the front ends' tests,
//! against the real aws CLI.
//!
//! Verification is two steps, because the secret is found by the access key
//! the header names:
//!
//! 1. [`Credential::from_headers`] parses the header, checks that its scope
//!    names one of the services the caller serves, and checks `x-amz-date`
//!    against the clock (15 minutes, [`SIGNATURE_CLOCK_SKEW_S_MAX`]), all
//!    before any lookup, so a malformed, misdirected or stale request costs no
//!    I/O;
//! 2. the caller looks the access key up, then [`Credential::verify`]
//!    recomputes the signature over the request and its body with that
//!    key's secret.
//!
//! Who a key belongs to, session tokens and what a caller may do are the
//! caller's business; so is mapping [`SigV4Error`] to its protocol's error
//! codes. Presigned (query string) authentication and the streaming
//! (`aws-chunked`) payload forms are not supported: none of the APIs that use
//! this crate needs them. This crate does no I/O and reads no configuration.
//!
//! For the client side, [`sign_s3`] signs S3 requests the way S3 wants them
//! (`nuage bench`), with a streamed body's payload hash left to the caller.

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use nuage_base::limits::SIGNATURE_CLOCK_SKEW_S_MAX;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, percent_encode};
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// The only algorithm SigV4 defines for `Authorization` headers.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Everything but RFC 3986's unreserved characters, as SigV4 encodes URIs and
/// query strings.
pub const RFC3986_RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a request's signature was not accepted. Each front end maps these to
/// its protocol's codes (IAM: `IncompleteSignature`, `SignatureDoesNotMatch`,
/// `RequestExpired`; KMS: `IncompleteSignature`, `InvalidSignatureException`,
/// ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// The header, its credential, or a required header is missing or
    /// malformed.
    #[error("{0}")]
    Incomplete(String),
    /// The credential is scoped to a service this front end does not serve.
    #[error("Credential should be scoped to correct service: '{expected}'.")]
    WrongService { service: String, expected: String },
    /// The signature does not match the request: wrong secret, or the request
    /// was altered.
    #[error(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method."
    )]
    Mismatch,
    /// `x-amz-date` is too far from the server's clock.
    #[error("{0}")]
    Expired(String),
}

impl SigV4Error {
    fn incomplete(message: impl Into<String>) -> Self {
        Self::Incomplete(message.into())
    }
}

/// The parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authorization {
    access_key_id: String,
    /// `YYYYMMDD`.
    date: String,
    region: String,
    service: String,
    /// Lowercase, in the order the client listed them.
    signed_headers: Vec<String>,
    signature: Vec<u8>,
}

impl Authorization {
    fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// The signing service of a request's `Authorization` header, if it names
/// one: what a router needs to send a request to the right front end. Only
/// the credential scope is read: a request signed for S3 must reach the S3
/// front end even when the rest of its header is malformed.
#[must_use]
pub fn signing_service(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let credential = value
        .split([' ', ','])
        .find_map(|field| field.strip_prefix("Credential="))?;
    credential.split('/').nth(3).map(str::to_owned)
}

/// `Ok(None)` when there is no `Authorization` header at all.
fn parse_authorization(headers: &http::HeaderMap) -> Result<Option<Authorization>, SigV4Error> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| SigV4Error::incomplete("the Authorization header is not ASCII"))?;
    let Some(fields) = value.strip_prefix(ALGORITHM).filter(|r| r.starts_with(' ')) else {
        return Err(SigV4Error::incomplete(format!(
            "only {ALGORITHM} (Signature Version 4) authorization is supported"
        )));
    };
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for field in fields.split(',') {
        let (name, v) = field.trim().split_once('=').ok_or_else(|| {
            SigV4Error::incomplete(format!("malformed Authorization field `{}`", field.trim()))
        })?;
        match name {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed_headers = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let missing = |what: &str| {
        SigV4Error::incomplete(format!("Authorization header requires '{what}' parameter"))
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, "aws4_request"] = parts.as_slice() else {
        return Err(SigV4Error::incomplete(format!(
            "credential `{credential}` must be KEY/YYYYMMDD/REGION/SERVICE/aws4_request"
        )));
    };
    if key.is_empty() || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SigV4Error::incomplete(format!(
            "malformed credential `{credential}`"
        )));
    }
    let signature = hex::decode(signature)
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or_else(|| SigV4Error::incomplete("the signature must be 64 hexadecimal digits"))?;
    Ok(Some(Authorization {
        access_key_id: (*key).to_owned(),
        date: (*date).to_owned(),
        region: (*region).to_owned(),
        service: (*service).to_owned(),
        signed_headers: signed_headers
            .split(';')
            .map(str::to_ascii_lowercase)
            .collect(),
        signature,
    }))
}

/// Parses `YYYYMMDDTHHMMSSZ` into Unix seconds.
fn parse_amz_date(value: &str) -> Option<i64> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| value.get(range)?.parse::<u32>().ok();
    let year = i32::try_from(num(0..4)?).ok()?;
    let month = time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let day = u8::try_from(num(6..8)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(date, clock)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// The request's `x-amz-date`, checked against the scope and the clock.
fn check_date(
    headers: &http::HeaderMap,
    auth: &Authorization,
    now_unix_s: i64,
) -> Result<String, SigV4Error> {
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| SigV4Error::incomplete("the request must carry an x-amz-date header"))?;
    let at = parse_amz_date(amz_date).ok_or_else(|| {
        SigV4Error::incomplete(format!("x-amz-date `{amz_date}` is not YYYYMMDDTHHMMSSZ"))
    })?;
    if !amz_date.starts_with(&auth.date) {
        return Err(SigV4Error::Mismatch);
    }
    if (now_unix_s - at).abs() > SIGNATURE_CLOCK_SKEW_S_MAX {
        return Err(SigV4Error::Expired(format!(
            "Request has expired: x-amz-date {amz_date} is more than {SIGNATURE_CLOCK_SKEW_S_MAX} seconds from the server's time"
        )));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(SigV4Error::incomplete(format!(
                "the {required} header must be signed"
            )));
        }
    }
    // An unsigned session token could be swapped for another one.
    if headers.contains_key("x-amz-security-token")
        && !auth
            .signed_headers
            .iter()
            .any(|h| h == "x-amz-security-token")
    {
        return Err(SigV4Error::incomplete(
            "the x-amz-security-token header must be signed",
        ));
    }
    Ok(amz_date.to_owned())
}

/// What a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    pub headers: &'a http::HeaderMap,
    /// The whole body: SigV4 signs its SHA-256.
    pub body: &'a [u8],
}

/// A well-formed, fresh `Authorization` header scoped to an expected service,
/// whose signature is still to be checked with the secret of its access key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    auth: Authorization,
    amz_date: String,
}

impl Credential {
    /// Parses the request's `Authorization` header and checks everything that
    /// needs no secret: its shape, that its credential scope names one of
    /// `services`, that `host` and `x-amz-date` (and `x-amz-security-token`
    /// when present) are signed, and that `x-amz-date` is within
    /// [`SIGNATURE_CLOCK_SKEW_S_MAX`] of `now_unix_s`.
    ///
    /// `Ok(None)` when the request has no `Authorization` header at all.
    ///
    /// # Errors
    /// [`SigV4Error::Incomplete`], [`SigV4Error::WrongService`],
    /// [`SigV4Error::Expired`], or [`SigV4Error::Mismatch`] when the date
    /// disagrees with the credential's scope.
    pub fn from_headers(
        headers: &http::HeaderMap,
        services: &[&str],
        now_unix_s: i64,
    ) -> Result<Option<Self>, SigV4Error> {
        let Some(auth) = parse_authorization(headers)? else {
            return Ok(None);
        };
        if !services.contains(&auth.service.as_str()) {
            return Err(SigV4Error::WrongService {
                service: auth.service,
                expected: services.join("' or '"),
            });
        }
        let amz_date = check_date(headers, &auth, now_unix_s)?;
        Ok(Some(Self { auth, amz_date }))
    }

    /// The access key whose secret signed the request (not yet verified).
    #[must_use]
    pub fn access_key_id(&self) -> &str {
        &self.auth.access_key_id
    }

    /// The region of the credential scope.
    #[must_use]
    pub fn region(&self) -> &str {
        &self.auth.region
    }

    /// The service of the credential scope, one of those expected.
    #[must_use]
    pub fn service(&self) -> &str {
        &self.auth.service
    }

    /// Recomputes the signature of `request` with `secret` and compares it
    /// with the header's in constant time.
    ///
    /// # Errors
    /// [`SigV4Error::Mismatch`] when it differs (or `x-amz-content-sha256`
    /// disagrees with the body); [`SigV4Error::Incomplete`] when a signed
    /// header is absent from the request.
    pub fn verify(&self, request: &SignedRequest<'_>, secret: &str) -> Result<(), SigV4Error> {
        let (mac, canonical_request) = signer(request, &self.auth, &self.amz_date, secret)?;
        mac.verify_slice(&self.auth.signature).map_err(|_| {
            tracing::debug!(%canonical_request, "SigV4 signature mismatch");
            SigV4Error::Mismatch
        })
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Result<Vec<u8>, SigV4Error> {
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| SigV4Error::Mismatch)?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// Path segments percent-encoded once more, as SigV4 wants for every service but S3.
fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_owned();
    }
    raw_path
        .split('/')
        .map(|segment| percent_encode(segment.as_bytes(), RFC3986_RESERVED).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// Query parameters decoded, re-encoded the RFC 3986 way and sorted.
fn canonical_query(query: Option<&str>) -> String {
    let encode = |raw: &str| {
        let bytes: Vec<u8> = percent_decode(raw.as_bytes()).collect();
        percent_encode(&bytes, RFC3986_RESERVED).to_string()
    };
    let mut pairs: Vec<(String, String)> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(k), encode(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `name:value\n` for each signed header: values trimmed, inner runs of spaces
/// collapsed, repeated headers joined with commas.
fn canonical_headers(
    auth: &Authorization,
    headers: &http::HeaderMap,
    uri: &http::Uri,
) -> Result<String, SigV4Error> {
    let mut names = auth.signed_headers.clone();
    names.sort();
    let mut out = String::new();
    for name in &names {
        let mut values: Vec<String> = Vec::new();
        for value in headers.get_all(name.as_str()) {
            let text = std::str::from_utf8(value.as_bytes()).map_err(|_| SigV4Error::Mismatch)?;
            values.push(text.split_ascii_whitespace().collect::<Vec<_>>().join(" "));
        }
        // HTTP/2 carries the host in the `:authority` pseudo-header.
        if values.is_empty()
            && name == "host"
            && let Some(authority) = uri.authority()
        {
            values.push(authority.as_str().to_owned());
        }
        if values.is_empty() {
            return Err(SigV4Error::incomplete(format!(
                "signed header `{name}` is not in the request"
            )));
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    Ok(out)
}

/// The HMAC of the string to sign, ready to finalize, and the canonical request.
fn signer(
    request: &SignedRequest<'_>,
    auth: &Authorization,
    amz_date: &str,
    secret: &str,
) -> Result<(HmacSha256, String), SigV4Error> {
    let payload_hash = sha256_hex(request.body);
    if let Some(claimed) = request.headers.get("x-amz-content-sha256")
        && claimed.as_bytes() != payload_hash.as_bytes()
    {
        return Err(SigV4Error::Mismatch);
    }
    let mut signed_headers = auth.signed_headers.clone();
    signed_headers.sort();
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method.as_str(),
        canonical_uri(request.uri.path()),
        canonical_query(request.uri.query()),
        canonical_headers(auth, request.headers, request.uri)?,
        signed_headers.join(";"),
        payload_hash,
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        auth.scope(),
        sha256_hex(canonical_request.as_bytes())
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes())?;
    for part in [auth.region.as_str(), auth.service.as_str(), "aws4_request"] {
        key = hmac(&key, part.as_bytes())?;
    }
    let mut mac = HmacSha256::new_from_slice(&key).map_err(|_| SigV4Error::Mismatch)?;
    mac.update(string_to_sign.as_bytes());
    Ok((mac, canonical_request))
}

/// Signs a request the way a client does, adding its `Authorization` header:
/// for tests and tools that drive a front end without an SDK. The request
/// must carry `host` and `x-amz-date`; every header present is signed.
///
/// # Errors
/// [`SigV4Error::Incomplete`] when `x-amz-date` is missing or not text.
pub fn sign(
    request: &mut http::Request<Bytes>,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
) -> Result<(), SigV4Error> {
    let amz_date = request
        .headers()
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() >= 8)
        .ok_or_else(|| SigV4Error::incomplete("sign: the request has no x-amz-date"))?
        .to_owned();
    let mut names: Vec<String> = request
        .headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k != "authorization")
        .collect();
    names.sort();
    names.dedup();
    let auth = Authorization {
        access_key_id: access_key_id.to_owned(),
        date: amz_date[..8].to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers: names.clone(),
        signature: Vec::new(),
    };
    let signed = SignedRequest {
        method: request.method(),
        uri: request.uri(),
        headers: request.headers(),
        body: request.body(),
    };
    let (mac, _) = signer(&signed, &auth, &amz_date, secret)?;
    let signature = hex::encode(mac.finalize().into_bytes());
    let header = format!(
        "{ALGORITHM} Credential={access_key_id}/{}, SignedHeaders={}, Signature={signature}",
        auth.scope(),
        names.join(";")
    );
    let value = http::HeaderValue::from_str(&header)
        .map_err(|_| SigV4Error::incomplete("sign: the credential is not header text"))?;
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, value);
    Ok(())
}

mod body;
mod s3_client;
pub use body::{BodyError, read_limited};
pub use s3_client::{UNSIGNED_PAYLOAD, payload_sha256_hex, sign_s3};

#[cfg(test)]
mod tests;
