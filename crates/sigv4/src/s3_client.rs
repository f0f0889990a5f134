//! Signing S3 requests as a client does, for tools that drive any S3 endpoint
//! without an SDK (`nuage bench`). Unlike [`crate::sign`], which hashes a
//! buffered body and encodes the path twice as every service but S3 wants,
//! this signs the path as S3 does (each segment encoded once) and takes the
//! payload hash from the request's `x-amz-content-sha256` header, so a body
//! that is streamed (`UNSIGNED-PAYLOAD`) never has to be held in memory.

use super::{
    ALGORITHM, Authorization, HmacSha256, RFC3986_RESERVED, SigV4Error, canonical_headers,
    canonical_query, hmac, sha256_hex,
};
use hmac::{KeyInit, Mac};
use percent_encoding::{percent_decode, percent_encode};

/// The `x-amz-content-sha256` value of a request whose body is not hashed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The SHA-256 of a buffered body, hex-encoded, for `x-amz-content-sha256`.
#[must_use]
pub fn payload_sha256_hex(body: &[u8]) -> String {
    sha256_hex(body)
}

/// S3's canonical URI: each path segment decoded, then encoded once the
/// RFC 3986 way (idempotent for a path that was already encoded so).
fn canonical_uri_s3(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_owned();
    }
    raw_path
        .split('/')
        .map(|segment| {
            let bytes: Vec<u8> = percent_decode(segment.as_bytes()).collect();
            percent_encode(&bytes, RFC3986_RESERVED).to_string()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Adds the `Authorization` header of an S3 request (service `s3`). The
/// headers must already carry `host`, `x-amz-date` (`YYYYMMDDTHHMMSSZ`) and
/// `x-amz-content-sha256` (the body's hex SHA-256, or [`UNSIGNED_PAYLOAD`]);
/// every header present is signed.
///
/// # Errors
/// [`SigV4Error::Incomplete`] when one of those headers is missing or a
/// header value is not text.
pub fn sign_s3(
    method: &http::Method,
    uri: &http::Uri,
    headers: &mut http::HeaderMap,
    access_key_id: &str,
    secret: &str,
    region: &str,
) -> Result<(), SigV4Error> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| SigV4Error::Incomplete(format!("sign_s3: the request has no {name}")))
    };
    let amz_date = text("x-amz-date")?;
    let payload_hash = text("x-amz-content-sha256")?;
    text("host")?;
    let date = amz_date
        .get(..8)
        .ok_or_else(|| SigV4Error::Incomplete(format!("x-amz-date `{amz_date}` is too short")))?;
    let mut names: Vec<String> = headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k != "authorization")
        .collect();
    names.sort();
    names.dedup();
    let auth = Authorization {
        access_key_id: access_key_id.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: "s3".to_owned(),
        signed_headers: names.clone(),
        signature: Vec::new(),
    };
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.as_str(),
        canonical_uri_s3(uri.path()),
        canonical_query(uri.query()),
        canonical_headers(&auth, headers, uri)?,
        names.join(";"),
        payload_hash,
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        auth.scope(),
        sha256_hex(canonical_request.as_bytes())
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes())?;
    for part in [auth.region.as_str(), "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes())?;
    }
    let mut mac = HmacSha256::new_from_slice(&key).map_err(|_| SigV4Error::Mismatch)?;
    mac.update(string_to_sign.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    let header = format!(
        "{ALGORITHM} Credential={access_key_id}/{}, SignedHeaders={}, Signature={signature}",
        auth.scope(),
        names.join(";")
    );
    let value = http::HeaderValue::from_str(&header)
        .map_err(|_| SigV4Error::Incomplete("sign_s3: the credential is not header text".into()))?;
    headers.insert(http::header::AUTHORIZATION, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn signature(method: &str, uri: &str, headers: &[(&str, &str)]) -> String {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        let method: http::Method = method.parse().unwrap();
        let uri: http::Uri = uri.parse().unwrap();
        sign_s3(&method, &uri, &mut map, ACCESS_KEY, SECRET, "us-east-1").unwrap();
        let value = map[http::header::AUTHORIZATION].to_str().unwrap();
        value.rsplit("Signature=").next().unwrap().to_owned()
    }

    /// Amazon S3 API Reference, "Signature Calculations for the Authorization
    /// Header: Transferring Payload in a Single Chunk", example GET Object.
    #[test]
    fn aws_s3_get_object_example() {
        let sig = signature(
            "GET",
            "/test.txt",
            &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", "20130524T000000Z"),
            ],
        );
        assert_eq!(
            sig,
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// The same page's GET Bucket (List Objects) example: a sorted query.
    #[test]
    fn aws_s3_list_objects_example() {
        let sig = signature(
            "GET",
            "/?max-keys=2&prefix=J",
            &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", "20130524T000000Z"),
            ],
        );
        assert_eq!(
            sig,
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    #[test]
    fn missing_content_hash_is_refused() {
        let mut map = http::HeaderMap::new();
        map.insert("host", http::HeaderValue::from_static("h"));
        map.insert(
            "x-amz-date",
            http::HeaderValue::from_static("20130524T000000Z"),
        );
        let err = sign_s3(
            &http::Method::GET,
            &"/".parse().unwrap(),
            &mut map,
            ACCESS_KEY,
            SECRET,
            "us-east-1",
        )
        .unwrap_err();
        assert!(matches!(err, SigV4Error::Incomplete(_)), "{err:?}");
    }

    #[test]
    fn path_is_encoded_once() {
        assert_eq!(canonical_uri_s3("/b/a%20b/c~d"), "/b/a%20b/c~d");
        assert_eq!(canonical_uri_s3("/b/a b"), "/b/a%20b");
        assert_eq!(canonical_uri_s3(""), "/");
    }
}
