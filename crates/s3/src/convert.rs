//! Conversions between s3s DTOs and storage types.

use nuage_storage::{Checksums, ContentHeaders, VersionRecord};
use s3s::dto::{ETag, ETagCondition, Timestamp};
use s3s::{S3Error, S3ErrorCode};
use std::collections::BTreeMap;

pub fn timestamp(unix_ns: i64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ns))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    // S3 timestamps have millisecond precision; HTTP dates have seconds.
    let t = t
        .replace_nanosecond(u32::from(t.millisecond()) * 1_000_000)
        .unwrap_or(t);
    Timestamp::from(t)
}

pub fn unix_seconds(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

pub fn etag(value: &str) -> ETag {
    ETag::Strong(value.to_owned())
}

pub fn condition_list(c: Option<&ETagCondition>) -> Option<Vec<String>> {
    c.map(|c| match c {
        ETagCondition::Any => vec!["*".to_owned()],
        ETagCondition::ETag(e) => vec![e.value().to_owned()],
    })
}

pub fn user_metadata(m: Option<s3s::dto::Metadata>) -> BTreeMap<String, String> {
    m.map(|m| {
        m.into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect()
    })
    .unwrap_or_default()
}

pub fn metadata_out(m: &BTreeMap<String, String>) -> Option<s3s::dto::Metadata> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Parses the `x-amz-tagging` header (URL query encoding).
pub fn parse_tagging_header(value: Option<&str>) -> Result<Vec<(String, String)>, S3Error> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(Vec::new());
    };
    let mut tags = Vec::new();
    for pair in value.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| -> Result<String, S3Error> {
            percent_decode(&s.replace('+', " ")).ok_or_else(|| {
                S3Error::with_message(
                    S3ErrorCode::InvalidTag,
                    "the tagging header is not valid URL encoding",
                )
            })
        };
        tags.push((decode(k)?, decode(v)?));
    }
    Ok(tags)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// S3's `encoding-type=url`: percent-encode all but unreserved characters and `/`.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn tags_to_dto(tags: &[(String, String)]) -> Vec<s3s::dto::Tag> {
    tags.iter()
        .map(|(k, v)| s3s::dto::Tag {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

pub fn tags_from_dto(tags: Vec<s3s::dto::Tag>) -> Vec<(String, String)> {
    tags.into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
        .collect()
}

pub fn expires_string(t: Option<Timestamp>) -> Option<String> {
    t.map(|t| {
        let mut buf = Vec::new();
        let _ = t.format(s3s::dto::TimestampFormat::HttpDate, &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

pub fn expires_timestamp(s: Option<&String>) -> Option<Timestamp> {
    s.and_then(|s| Timestamp::parse(s3s::dto::TimestampFormat::HttpDate, s).ok())
}

pub struct ContentInput {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<Timestamp>,
    pub website_redirect_location: Option<String>,
}

pub fn content(c: ContentInput) -> ContentHeaders {
    ContentHeaders {
        content_type: c.content_type,
        // aws-chunked is a transfer detail, not the object's encoding.
        content_encoding: c
            .content_encoding
            .map(|e| {
                e.split(',')
                    .map(str::trim)
                    .filter(|p| !p.eq_ignore_ascii_case("aws-chunked"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|e| !e.is_empty()),
        content_disposition: c.content_disposition,
        content_language: c.content_language,
        cache_control: c.cache_control,
        expires: expires_string(c.expires),
        website_redirect_location: c.website_redirect_location,
    }
}

/// The checksums a request announced (headers), completed by the trailers of
/// an `aws-chunked` body once it has been read.
pub fn announced_checksums(
    crc32: Option<String>,
    crc32c: Option<String>,
    crc64nvme: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
) -> Checksums {
    Checksums {
        crc32,
        crc32c,
        crc64nvme,
        sha1,
        sha256,
        checksum_type: None,
    }
}

pub fn apply_trailers(
    checksums: &mut Checksums,
    trailers: Option<&s3s::TrailingHeaders>,
) -> Result<(), S3Error> {
    let Some(trailers) = trailers.and_then(s3s::TrailingHeaders::take) else {
        return Ok(());
    };
    for (name, slot) in [
        ("x-amz-checksum-crc32", &mut checksums.crc32),
        ("x-amz-checksum-crc32c", &mut checksums.crc32c),
        ("x-amz-checksum-crc64nvme", &mut checksums.crc64nvme),
        ("x-amz-checksum-sha1", &mut checksums.sha1),
        ("x-amz-checksum-sha256", &mut checksums.sha256),
    ] {
        if let Some(v) = trailers.get(name) {
            let v = v.to_str().map_err(|_| {
                S3Error::with_message(S3ErrorCode::InvalidArgument, "invalid checksum trailer")
            })?;
            *slot = Some(v.to_owned());
        }
    }
    Ok(())
}

pub fn checksum_type(c: &Checksums) -> Option<s3s::dto::ChecksumType> {
    c.checksum_type.clone().map(s3s::dto::ChecksumType::from)
}

pub fn object_summary(r: &VersionRecord) -> s3s::dto::Object {
    s3s::dto::Object {
        key: Some(r.key.clone()),
        e_tag: Some(etag(&r.etag)),
        last_modified: Some(timestamp(r.last_modified_unix_ns)),
        size: Some(i64::try_from(r.size).unwrap_or(i64::MAX)),
        storage_class: Some(s3s::dto::ObjectStorageClass::from_static(
            s3s::dto::ObjectStorageClass::STANDARD,
        )),
        checksum_algorithm: checksum_algorithms(&r.checksums),
        checksum_type: checksum_type(&r.checksums),
        ..Default::default()
    }
}

pub fn checksum_algorithms(c: &Checksums) -> Option<Vec<s3s::dto::ChecksumAlgorithm>> {
    let list: Vec<s3s::dto::ChecksumAlgorithm> = nuage_storage::ChecksumAlgorithm::ALL
        .into_iter()
        .filter(|a| a.get(c).is_some())
        .map(|a| s3s::dto::ChecksumAlgorithm::from(a.name().to_owned()))
        .collect();
    (!list.is_empty()).then_some(list)
}
