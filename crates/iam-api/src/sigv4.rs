//! AWS Signature Version 4 verification for IAM and STS query requests
//! (`Authorization: AWS4-HMAC-SHA256 ...` headers).
//!
//! Why here and not s3s: s3s verifies only credential scopes for `s3` and
//! `sts`, and refuses the `iam` scope the aws CLI signs IAM requests with before
//! any custom route sees them; its verifier is private. So this module
//! recomputes the signature the way the SigV4 specification describes and
//! compares it in constant time. It checks the signature, the scope and the
//! clock; who the key belongs to is the caller's business. Presigned query
//! authentication is not supported (no IAM or STS client uses it).

use crate::error::ApiError;
use crate::xml::RFC3986_RESERVED;
use hmac::{KeyInit, Mac};
use nuage_base::limits::SIGNATURE_CLOCK_SKEW_S_MAX;
use percent_encoding::{percent_decode, percent_encode};
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD`.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lowercase, in the order the client listed them.
    pub signed_headers: Vec<String>,
    pub signature: Vec<u8>,
}

impl Authorization {
    fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// The signing service of a request's `Authorization` header, if it has a
/// well-formed one (used to leave `s3`-signed requests to the S3 front end).
/// Only the credential scope is read: a request signed for S3 must reach the
/// S3 front end even when the rest of its header is malformed.
pub(crate) fn signing_service(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let credential = value
        .split([' ', ','])
        .find_map(|field| field.strip_prefix("Credential="))?;
    credential.split('/').nth(3).map(str::to_owned)
}

/// `Ok(None)` when there is no `Authorization` header at all.
pub(crate) fn parse_authorization(
    headers: &http::HeaderMap,
) -> Result<Option<Authorization>, ApiError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::incomplete_signature("the Authorization header is not ASCII"))?;
    let Some(fields) = value.strip_prefix(ALGORITHM).filter(|r| r.starts_with(' ')) else {
        return Err(ApiError::incomplete_signature(format!(
            "only {ALGORITHM} (Signature Version 4) authorization is supported"
        )));
    };
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for field in fields.split(',') {
        let (name, v) = field.trim().split_once('=').ok_or_else(|| {
            ApiError::incomplete_signature(format!(
                "malformed Authorization field `{}`",
                field.trim()
            ))
        })?;
        match name {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed_headers = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let missing = |what: &str| {
        ApiError::incomplete_signature(format!("Authorization header requires '{what}' parameter"))
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, "aws4_request"] = parts.as_slice() else {
        return Err(ApiError::incomplete_signature(format!(
            "credential `{credential}` must be KEY/YYYYMMDD/REGION/SERVICE/aws4_request"
        )));
    };
    if key.is_empty() || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::incomplete_signature(format!(
            "malformed credential `{credential}`"
        )));
    }
    let signature = hex::decode(signature)
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or_else(|| {
            ApiError::incomplete_signature("the signature must be 64 hexadecimal digits")
        })?;
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

/// The request's `x-amz-date`, checked against the scope and our clock. Done
/// before any lookup, so a stale or replayed request costs no I/O.
pub(crate) fn check_date(
    headers: &http::HeaderMap,
    auth: &Authorization,
    now_unix_s: i64,
) -> Result<String, ApiError> {
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::incomplete_signature("the request must carry an x-amz-date header")
        })?;
    let at = parse_amz_date(amz_date).ok_or_else(|| {
        ApiError::incomplete_signature(format!("x-amz-date `{amz_date}` is not YYYYMMDDTHHMMSSZ"))
    })?;
    if !amz_date.starts_with(&auth.date) {
        return Err(ApiError::signature_does_not_match());
    }
    if (now_unix_s - at).abs() > SIGNATURE_CLOCK_SKEW_S_MAX {
        return Err(ApiError::new(
            http::StatusCode::BAD_REQUEST,
            "RequestExpired",
            format!(
                "Request has expired: x-amz-date {amz_date} is more than {SIGNATURE_CLOCK_SKEW_S_MAX} seconds from the server's time"
            ),
        ));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(ApiError::incomplete_signature(format!(
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
        return Err(ApiError::incomplete_signature(
            "the x-amz-security-token header must be signed",
        ));
    }
    Ok(amz_date.to_owned())
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut mac =
        HmacSha256::new_from_slice(key).map_err(|_| ApiError::signature_does_not_match())?;
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
) -> Result<String, ApiError> {
    let mut names = auth.signed_headers.clone();
    names.sort();
    let mut out = String::new();
    for name in &names {
        let mut values: Vec<String> = Vec::new();
        for value in headers.get_all(name.as_str()) {
            let text = std::str::from_utf8(value.as_bytes())
                .map_err(|_| ApiError::signature_does_not_match())?;
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
            return Err(ApiError::incomplete_signature(format!(
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

/// What a signature covers.
pub(crate) struct SignedRequest<'a> {
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

/// Recomputes the signature with `secret` and compares it in constant time.
pub(crate) fn verify(
    request: &SignedRequest<'_>,
    auth: &Authorization,
    amz_date: &str,
    secret: &str,
) -> Result<(), ApiError> {
    let (mac, canonical_request) = signer(request, auth, amz_date, secret)?;
    mac.verify_slice(&auth.signature).map_err(|_| {
        tracing::debug!(%canonical_request, "SigV4 signature mismatch");
        ApiError::signature_does_not_match()
    })
}

/// The HMAC of the string to sign, ready to finalize, and the canonical request.
fn signer(
    request: &SignedRequest<'_>,
    auth: &Authorization,
    amz_date: &str,
    secret: &str,
) -> Result<(HmacSha256, String), ApiError> {
    let payload_hash = sha256_hex(request.body);
    if let Some(claimed) = request.headers.get("x-amz-content-sha256")
        && claimed.as_bytes() != payload_hash.as_bytes()
    {
        return Err(ApiError::signature_does_not_match());
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
    let mut mac =
        HmacSha256::new_from_slice(&key).map_err(|_| ApiError::signature_does_not_match())?;
    mac.update(string_to_sign.as_bytes());
    Ok((mac, canonical_request))
}

/// Signs a request the way a client does (tests drive the front end with it).
/// `headers` must hold `host` and `x-amz-date`; every header present is signed.
#[cfg(test)]
pub(crate) fn sign(
    request: &mut http::Request<bytes::Bytes>,
    access_key_id: &str,
    secret: &str,
    service: &str,
) {
    let amz_date = request.headers()["x-amz-date"].to_str().unwrap().to_owned();
    let mut names: Vec<String> = request
        .headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .collect();
    names.sort();
    names.dedup();
    let auth = Authorization {
        access_key_id: access_key_id.to_owned(),
        date: amz_date[..8].to_owned(),
        region: "us-east-1".to_owned(),
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
    let (mac, _) = signer(&signed, &auth, &amz_date, secret).unwrap();
    let signature = hex::encode(mac.finalize().into_bytes());
    let header = format!(
        "{ALGORITHM} Credential={access_key_id}/{}, SignedHeaders={}, Signature={signature}",
        auth.scope(),
        names.join(";")
    );
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, header.parse().unwrap());
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn request(
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (http::Method, http::Uri, http::HeaderMap) {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        (method.parse().unwrap(), uri.parse().unwrap(), map)
    }

    fn check(
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), ApiError> {
        let (method, uri, headers) = request(method, uri, headers);
        let auth = parse_authorization(&headers)?.unwrap();
        // The vectors are dated 2015-08-30T12:36:00Z.
        let amz_date = check_date(&headers, &auth, 1_440_938_160)?;
        verify(
            &SignedRequest {
                method: &method,
                uri: &uri,
                headers: &headers,
                body,
            },
            &auth,
            &amz_date,
            SECRET,
        )
    }

    /// AWS General Reference, "Examples of the complete Signature Version 4
    /// signing process": IAM ListUsers.
    #[test]
    fn aws_iam_list_users_example() {
        let headers = [
            ("host", "iam.amazonaws.com"),
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("x-amz-date", "20150830T123600Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, \
                 Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            ),
        ];
        check(
            "GET",
            "/?Action=ListUsers&Version=2010-05-08",
            &headers,
            b"",
        )
        .unwrap();
        // Any change to what was signed breaks it.
        assert!(
            check(
                "GET",
                "/?Action=ListRoles&Version=2010-05-08",
                &headers,
                b""
            )
            .is_err()
        );
        assert!(
            check(
                "POST",
                "/?Action=ListUsers&Version=2010-05-08",
                &headers,
                b""
            )
            .is_err()
        );
        assert!(
            check(
                "GET",
                "/?Action=ListUsers&Version=2010-05-08",
                &headers,
                b"x"
            )
            .is_err()
        );
    }

    /// aws-sig-v4-test-suite: `get-vanilla` and `post-x-www-form-urlencoded`.
    #[test]
    fn aws_test_suite_vectors() {
        check(
            "GET",
            "/",
            &[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
                (
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                     SignedHeaders=host;x-amz-date, \
                     Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
                ),
            ],
            b"",
        )
        .unwrap();
        check(
            "POST",
            "/",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
                (
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                     SignedHeaders=content-type;host;x-amz-date, \
                     Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
                ),
            ],
            b"Param1=value1",
        )
        .unwrap();
    }

    #[test]
    fn dates_scopes_and_required_headers() {
        let auth_header = "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/iam/aws4_request, \
                           SignedHeaders=host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
        let (_, _, headers) = request(
            "GET",
            "/",
            &[
                ("x-amz-date", "20150830T123600Z"),
                ("authorization", auth_header),
            ],
        );
        let auth = parse_authorization(&headers).unwrap().unwrap();
        assert_eq!(auth.service, "iam");
        assert_eq!(auth.access_key_id, "AKID");
        assert!(check_date(&headers, &auth, 1_440_938_160 + 14 * 60).is_ok());
        let stale = check_date(&headers, &auth, 1_440_938_160 + 16 * 60).unwrap_err();
        assert_eq!(stale.code, "RequestExpired");
        let (_, _, other_day) = request(
            "GET",
            "/",
            &[
                ("x-amz-date", "20150831T000000Z"),
                ("authorization", auth_header),
            ],
        );
        assert!(
            check_date(&other_day, &auth, 1_440_979_200).is_err(),
            "scope date must match"
        );
        let (_, _, token) = request(
            "GET",
            "/",
            &[
                ("x-amz-date", "20150830T123600Z"),
                ("x-amz-security-token", "t"),
                ("authorization", auth_header),
            ],
        );
        assert!(
            check_date(&token, &auth, 1_440_938_160).is_err(),
            "an unsigned token is refused"
        );
        for bad in [
            "AWS AKID:sig",
            "AWS4-HMAC-SHA256 Credential=AKID/2015/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
        ] {
            let (_, _, h) = request("GET", "/", &[("authorization", bad)]);
            assert!(parse_authorization(&h).is_err(), "{bad}");
        }
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("20151330T123600Z"), None);
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(
            canonical_query(Some("b=2&a=%2F x&a=1")),
            "a=%2F%20x&a=1&b=2"
        );
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/a b/%2F"), "/a%20b/%252F");
    }
}
