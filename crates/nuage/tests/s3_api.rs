//! The S3 API, operation by operation, against the real `nuage` binary: each
//! test starts its own server on a temporary directory and drives it with the
//! AWS SDK for Rust (and, where the SDK hides what we need to see, such as an
//! unsigned request or a status line, with a plain HTTP/1.1 request over TCP).
//!
//! Every error case checks the S3 error code and the HTTP status, because
//! clients branch on both.
#![allow(clippy::unwrap_used)]

mod common;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat};
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, ChecksumAlgorithm, ChecksumMode,
    CompletedMultipartUpload, CompletedPart, CorsConfiguration, CorsRule,
    CreateBucketConfiguration, Delete, EncodingType, MetadataDirective, ObjectIdentifier, Tag,
    Tagging, VersioningConfiguration,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Server, bucket_name, random_bytes};
use futures::StreamExt as _;
use md5::Digest as _;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;
/// S3's smallest non-last part.
const PART_MIN: usize = 5 * MIB;
/// How long a condition may take to become true before a poll gives up.
const POLL_BOUND: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------- helpers

/// What a failed SDK call told us: S3 code (absent for bodiless HEAD errors),
/// HTTP status and response headers.
#[derive(Debug)]
struct Failure {
    code: Option<String>,
    status: u16,
    headers: BTreeMap<String, String>,
}

impl Failure {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[track_caller]
fn failure<T: Debug, E: ProvideErrorMetadata + Debug>(
    result: Result<T, SdkError<E, HttpResponse>>,
) -> Failure {
    match result {
        Ok(v) => panic!("expected the call to fail, it returned {v:?}"),
        Err(err) => {
            let raw = err.raw_response();
            let status = raw.map_or(0, |r| r.status().as_u16());
            let headers = raw
                .map(|r| {
                    r.headers()
                        .iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let code = err.code().map(str::to_owned);
            assert!(
                status != 0,
                "the call failed without an HTTP response: {err:?}"
            );
            Failure {
                code,
                status,
                headers,
            }
        }
    }
}

/// Asserts that a call failed with this S3 error code and HTTP status.
#[track_caller]
fn expect_error<T: Debug, E: ProvideErrorMetadata + Debug>(
    result: Result<T, SdkError<E, HttpResponse>>,
    code: &str,
    status: u16,
) -> Failure {
    let f = failure(result);
    assert_eq!((f.code.as_deref(), f.status), (Some(code), status), "{f:?}");
    f
}

/// Asserts the HTTP status of a failed call whose response has no body (HEAD, 304).
#[track_caller]
fn expect_status<T: Debug, E: ProvideErrorMetadata + Debug>(
    result: Result<T, SdkError<E, HttpResponse>>,
    status: u16,
) -> Failure {
    let f = failure(result);
    assert_eq!(f.status, status, "{f:?}");
    f
}

async fn bytes_of(body: ByteStream) -> Vec<u8> {
    body.collect().await.unwrap().into_bytes().to_vec()
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

async fn new_bucket(s3: &Client, test: &str) -> String {
    let name = bucket_name(test);
    s3.create_bucket().bucket(&name).send().await.unwrap();
    name
}

async fn put(
    s3: &Client,
    bucket: &str,
    key: &str,
    body: &[u8],
) -> aws_sdk_s3::operation::put_object::PutObjectOutput {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap()
}

async fn get(s3: &Client, bucket: &str, key: &str) -> Vec<u8> {
    bytes_of(
        s3.get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .body,
    )
    .await
}

async fn enable_versioning(s3: &Client, bucket: &str, status: BucketVersioningStatus) {
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(VersioningConfiguration::builder().status(status).build())
        .send()
        .await
        .unwrap();
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build().unwrap()
}

fn tag_pairs(tags: &[Tag]) -> BTreeSet<(String, String)> {
    tags.iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect()
}

/// A raw HTTP/1.1 exchange, for what the SDK does not show (status lines,
/// unsigned requests, presigned URLs).
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn raw_request(
    endpoint: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
) -> RawResponse {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, headers, mut body) = common::raw_request(endpoint, method, path_and_query, &pairs);
    let headers: BTreeMap<String, String> = headers.into_iter().collect();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Sends a presigned request exactly as signed.
fn fetch_presigned(server: &Server, presigned: &PresignedRequest) -> RawResponse {
    let path = presigned
        .uri()
        .strip_prefix(server.endpoint.as_str())
        .expect("presigned URL on the server's endpoint");
    let headers: Vec<(String, String)> = presigned
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    raw_request(&server.endpoint, presigned.method(), path, &headers)
}

async fn presign_get(
    s3: &Client,
    bucket: &str,
    key: &str,
    range: Option<&str>,
    expires: Duration,
) -> PresignedRequest {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .set_range(range.map(str::to_owned))
        .presigned(PresigningConfig::expires_in(expires).unwrap())
        .await
        .unwrap()
}

/// Asserts the body is an S3 XML error document with this code.
#[track_caller]
fn assert_xml_error(response: &RawResponse, code: &str) {
    let text = response.text();
    assert!(
        text.contains("<Error>"),
        "not an S3 XML error: {response:?} {text}"
    );
    assert!(
        text.contains(&format!("<Code>{code}</Code>")),
        "expected code {code}: {text}"
    );
}

/// `application/x-www-form-urlencoded`-style decoding (`+` is a space), as
/// clients apply to `encoding-type=url` listings.
fn unquote_plus(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

// ---------------------------------------------------------------- buckets

#[tokio::test]
async fn bucket_create_head_list_locate_delete() {
    let server = Server::start();
    let s3 = server.client();

    for bad in [
        "ab",
        "bad..dots",
        "-leading-hyphen",
        "under_score",
        &"a".repeat(64),
    ] {
        expect_error(
            s3.create_bucket().bucket(bad).send().await,
            "InvalidBucketName",
            400,
        );
    }

    let name = bucket_name("buckets");
    let here = CreateBucketConfiguration::builder()
        .location_constraint(BucketLocationConstraint::from("fr-par"))
        .build();
    s3.create_bucket()
        .bucket(&name)
        .create_bucket_configuration(here.clone())
        .send()
        .await
        .unwrap();
    expect_error(
        s3.create_bucket().bucket(&name).send().await,
        "BucketAlreadyOwnedByYou",
        409,
    );
    expect_error(
        s3.create_bucket()
            .bucket(&name)
            .create_bucket_configuration(here)
            .send()
            .await,
        "BucketAlreadyOwnedByYou",
        409,
    );

    let mars_name = bucket_name("mars");
    let mars = CreateBucketConfiguration::builder()
        .location_constraint(BucketLocationConstraint::from("mars-1"))
        .build();
    expect_error(
        s3.create_bucket()
            .bucket(&mars_name)
            .create_bucket_configuration(mars)
            .send()
            .await,
        "InvalidLocationConstraint",
        400,
    );
    expect_status(s3.head_bucket().bucket(&mars_name).send().await, 404);

    let plain = new_bucket(&s3, "plain").await;
    let head = s3.head_bucket().bucket(&name).send().await.unwrap();
    assert_eq!(head.bucket_region(), Some("fr-par"));
    for bucket in [&name, &plain] {
        let location = s3
            .get_bucket_location()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        assert_eq!(
            location
                .location_constraint()
                .map(BucketLocationConstraint::as_str),
            Some("fr-par")
        );
    }
    let listed: Vec<String> = s3
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_owned))
        .collect();
    assert!(
        listed.contains(&name) && listed.contains(&plain),
        "{listed:?}"
    );
    assert!(!listed.contains(&mars_name), "{listed:?}");

    // A bucket holding an object cannot be deleted.
    put(&s3, &name, "k", b"v").await;
    expect_error(
        s3.delete_bucket().bucket(&name).send().await,
        "BucketNotEmpty",
        409,
    );
    s3.delete_object()
        .bucket(&name)
        .key("k")
        .send()
        .await
        .unwrap();

    // Nor one holding only an in-progress multipart upload.
    let upload = s3
        .create_multipart_upload()
        .bucket(&name)
        .key("pending")
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    expect_error(
        s3.delete_bucket().bucket(&name).send().await,
        "BucketNotEmpty",
        409,
    );
    s3.abort_multipart_upload()
        .bucket(&name)
        .key("pending")
        .upload_id(upload_id)
        .send()
        .await
        .unwrap();

    s3.delete_bucket().bucket(&name).send().await.unwrap();
    expect_status(s3.head_bucket().bucket(&name).send().await, 404);
    expect_error(
        s3.delete_bucket().bucket(&name).send().await,
        "NoSuchBucket",
        404,
    );
    let listed: Vec<String> = s3
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_owned))
        .collect();
    assert!(!listed.contains(&name), "{listed:?}");
    // The name is free again.
    s3.create_bucket().bucket(&name).send().await.unwrap();
}

#[tokio::test]
async fn operations_on_a_missing_bucket_fail_with_no_such_bucket() {
    let server = Server::start();
    let s3 = server.client();
    let real = new_bucket(&s3, "real").await;
    put(&s3, &real, "src", b"data").await;
    let b = bucket_name("missing");

    expect_error(
        s3.put_object()
            .bucket(&b)
            .key("k")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await,
        "NoSuchBucket",
        404,
    );
    expect_error(
        s3.get_object().bucket(&b).key("k").send().await,
        "NoSuchBucket",
        404,
    );
    expect_status(s3.head_object().bucket(&b).key("k").send().await, 404);
    expect_error(
        s3.delete_object().bucket(&b).key("k").send().await,
        "NoSuchBucket",
        404,
    );
    expect_error(
        s3.list_objects_v2().bucket(&b).send().await,
        "NoSuchBucket",
        404,
    );
    expect_error(
        s3.list_objects().bucket(&b).send().await,
        "NoSuchBucket",
        404,
    );
    expect_error(
        s3.list_object_versions().bucket(&b).send().await,
        "NoSuchBucket",
        404,
    );
    expect_error(
        s3.get_bucket_location().bucket(&b).send().await,
        "NoSuchBucket",
        404,
    );
    expect_error(
        s3.get_bucket_versioning().bucket(&b).send().await,
        "NoSuchBucket",
        404,
    );
    expect_error(
        s3.put_bucket_versioning()
            .bucket(&b)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await,
        "NoSuchBucket",
        404,
    );
    expect_error(
        s3.get_bucket_tagging().bucket(&b).send().await,
        "NoSuchBucket",
        404,
    );
    expect_error(
        s3.put_bucket_tagging()
            .bucket(&b)
            .tagging(Tagging::builder().tag_set(tag("a", "1")).build().unwrap())
            .send()
            .await,
        "NoSuchBucket",
        404,
    );
    expect_error(
        s3.get_bucket_cors().bucket(&b).send().await,
        "NoSuchBucket",
        404,
    );
    expect_error(
        s3.delete_bucket().bucket(&b).send().await,
        "NoSuchBucket",
        404,
    );
    expect_error(
        s3.create_multipart_upload()
            .bucket(&b)
            .key("k")
            .send()
            .await,
        "NoSuchBucket",
        404,
    );
    expect_error(
        s3.list_multipart_uploads().bucket(&b).send().await,
        "NoSuchBucket",
        404,
    );
    expect_error(
        s3.delete_objects()
            .bucket(&b)
            .delete(
                Delete::builder()
                    .objects(ObjectIdentifier::builder().key("k").build().unwrap())
                    .build()
                    .unwrap(),
            )
            .send()
            .await,
        "NoSuchBucket",
        404,
    );
    // Copy into a missing bucket, and out of one.
    expect_error(
        s3.copy_object()
            .bucket(&b)
            .key("dst")
            .copy_source(format!("{real}/src"))
            .send()
            .await,
        "NoSuchBucket",
        404,
    );
    expect_error(
        s3.copy_object()
            .bucket(&real)
            .key("dst")
            .copy_source(format!("{b}/src"))
            .send()
            .await,
        "NoSuchBucket",
        404,
    );
}

#[tokio::test]
async fn bucket_tagging_and_cors() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "config").await;

    expect_error(
        s3.get_bucket_tagging().bucket(&b).send().await,
        "NoSuchTagSet",
        404,
    );
    let tags = Tagging::builder()
        .tag_set(tag("team", "storage"))
        .tag_set(tag("cost centre", "42 / é"))
        .build()
        .unwrap();
    s3.put_bucket_tagging()
        .bucket(&b)
        .tagging(tags)
        .send()
        .await
        .unwrap();
    let got = s3.get_bucket_tagging().bucket(&b).send().await.unwrap();
    assert_eq!(
        tag_pairs(got.tag_set()),
        BTreeSet::from([
            ("team".to_owned(), "storage".to_owned()),
            ("cost centre".to_owned(), "42 / é".to_owned())
        ])
    );
    // A duplicate tag key is refused and leaves the tag set as it was.
    let duplicate = Tagging::builder()
        .tag_set(tag("a", "1"))
        .tag_set(tag("a", "2"))
        .build()
        .unwrap();
    expect_error(
        s3.put_bucket_tagging()
            .bucket(&b)
            .tagging(duplicate)
            .send()
            .await,
        "InvalidTag",
        400,
    );
    assert_eq!(
        tag_pairs(
            s3.get_bucket_tagging()
                .bucket(&b)
                .send()
                .await
                .unwrap()
                .tag_set()
        )
        .len(),
        2
    );
    s3.delete_bucket_tagging().bucket(&b).send().await.unwrap();
    expect_error(
        s3.get_bucket_tagging().bucket(&b).send().await,
        "NoSuchTagSet",
        404,
    );

    expect_error(
        s3.get_bucket_cors().bucket(&b).send().await,
        "NoSuchCORSConfiguration",
        404,
    );
    let rule = CorsRule::builder()
        .id("web")
        .allowed_methods("GET")
        .allowed_methods("PUT")
        .allowed_origins("https://example.com")
        .allowed_headers("x-amz-*")
        .expose_headers("ETag")
        .max_age_seconds(300)
        .build()
        .unwrap();
    let cors = CorsConfiguration::builder()
        .cors_rules(rule)
        .build()
        .unwrap();
    s3.put_bucket_cors()
        .bucket(&b)
        .cors_configuration(cors)
        .send()
        .await
        .unwrap();
    let got = s3.get_bucket_cors().bucket(&b).send().await.unwrap();
    let rules = got.cors_rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let r = &rules[0];
    assert_eq!(r.id(), Some("web"));
    assert_eq!(r.allowed_methods(), ["GET", "PUT"]);
    assert_eq!(r.allowed_origins(), ["https://example.com"]);
    assert_eq!(r.allowed_headers(), ["x-amz-*"]);
    assert_eq!(r.expose_headers(), ["ETag"]);
    assert_eq!(r.max_age_seconds(), Some(300));
    s3.delete_bucket_cors().bucket(&b).send().await.unwrap();
    expect_error(
        s3.get_bucket_cors().bucket(&b).send().await,
        "NoSuchCORSConfiguration",
        404,
    );
}

// ---------------------------------------------------------------- objects

#[tokio::test]
async fn object_metadata_and_content_headers_round_trip() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "headers").await;
    let body = random_bytes(70_000, 1);
    let expires = DateTime::from_secs(2_139_899_280); // Wed, 23 Oct 2037 07:08:00 GMT
    let put = s3
        .put_object()
        .bucket(&b)
        .key("doc.txt")
        .body(ByteStream::from(body.clone()))
        .metadata("color", "blue")
        .metadata("owner-id", "42")
        .content_type("text/plain; charset=utf-8")
        .content_disposition("attachment; filename=\"doc.txt\"")
        .cache_control("max-age=3600, public")
        .content_language("fr-FR")
        .expires(expires)
        .send()
        .await
        .unwrap();
    assert_eq!(put.e_tag(), Some(quoted(&md5_hex(&body)).as_str()));

    let got = s3
        .get_object()
        .bucket(&b)
        .key("doc.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(got.e_tag(), put.e_tag());
    assert_eq!(got.content_length(), Some(70_000));
    assert_eq!(got.content_type(), Some("text/plain; charset=utf-8"));
    assert_eq!(
        got.content_disposition(),
        Some("attachment; filename=\"doc.txt\"")
    );
    assert_eq!(got.cache_control(), Some("max-age=3600, public"));
    assert_eq!(got.content_language(), Some("fr-FR"));
    let got_expires =
        DateTime::from_str(got.expires_string().unwrap(), DateTimeFormat::HttpDate).unwrap();
    assert_eq!(got_expires.secs(), expires.secs());
    let meta = got.metadata().unwrap();
    assert_eq!(meta.get("color").map(String::as_str), Some("blue"));
    assert_eq!(meta.get("owner-id").map(String::as_str), Some("42"));
    assert_eq!(meta.len(), 2, "{meta:?}");
    assert!(got.last_modified().is_some());
    assert_eq!(bytes_of(got.body).await, body);

    let head = s3
        .head_object()
        .bucket(&b)
        .key("doc.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(head.e_tag(), put.e_tag());
    assert_eq!(head.content_length(), Some(70_000));
    assert_eq!(head.content_type(), Some("text/plain; charset=utf-8"));
    assert_eq!(
        head.content_disposition(),
        Some("attachment; filename=\"doc.txt\"")
    );
    assert_eq!(head.cache_control(), Some("max-age=3600, public"));
    assert_eq!(head.content_language(), Some("fr-FR"));
    assert_eq!(
        DateTime::from_str(head.expires_string().unwrap(), DateTimeFormat::HttpDate)
            .unwrap()
            .secs(),
        expires.secs()
    );
    assert_eq!(
        head.metadata().unwrap().get("color").map(String::as_str),
        Some("blue")
    );

    // response-* query parameters override what is stored, for this response only.
    let over = s3
        .get_object()
        .bucket(&b)
        .key("doc.txt")
        .response_content_type("application/x-override")
        .response_content_disposition("inline")
        .response_cache_control("no-store")
        .response_content_language("de")
        .response_content_encoding("x-custom")
        .response_expires(DateTime::from_secs(1_000_000_000))
        .send()
        .await
        .unwrap();
    assert_eq!(over.content_type(), Some("application/x-override"));
    assert_eq!(over.content_disposition(), Some("inline"));
    assert_eq!(over.cache_control(), Some("no-store"));
    assert_eq!(over.content_language(), Some("de"));
    assert_eq!(over.content_encoding(), Some("x-custom"));
    assert_eq!(
        DateTime::from_str(over.expires_string().unwrap(), DateTimeFormat::HttpDate)
            .unwrap()
            .secs(),
        1_000_000_000
    );
    assert_eq!(bytes_of(over.body).await, body);
    let again = s3
        .head_object()
        .bucket(&b)
        .key("doc.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(again.content_type(), Some("text/plain; charset=utf-8"));

    // Overwrite replaces body and metadata together.
    s3.put_object()
        .bucket(&b)
        .key("doc.txt")
        .body(ByteStream::from_static(b"v2"))
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket(&b)
        .key("doc.txt")
        .send()
        .await
        .unwrap();
    assert!(
        got.metadata()
            .is_none_or(std::collections::HashMap::is_empty),
        "{:?}",
        got.metadata()
    );
    assert_eq!(bytes_of(got.body).await, b"v2");

    // An empty object.
    s3.put_object()
        .bucket(&b)
        .key("empty")
        .body(ByteStream::from_static(b""))
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket(&b)
        .key("empty")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_length(), Some(0));
    assert_eq!(got.e_tag(), Some(quoted(&md5_hex(b"")).as_str()));
    assert!(bytes_of(got.body).await.is_empty());
}

#[tokio::test]
async fn ranged_reads() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "ranges").await;
    let body = random_bytes(1000, 2);
    put(&s3, &b, "obj", &body).await;

    for (range, from, to) in [
        ("bytes=10-19", 10, 19),
        ("bytes=0-0", 0, 0),
        ("bytes=-100", 900, 999),
        ("bytes=990-", 990, 999),
        ("bytes=500-99999", 500, 999),
        ("bytes=-5000", 0, 999),
    ] {
        let got = s3
            .get_object()
            .bucket(&b)
            .key("obj")
            .range(range)
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.content_range(),
            Some(format!("bytes {from}-{to}/1000").as_str()),
            "{range}"
        );
        assert_eq!(got.content_length(), Some(to - from + 1), "{range}");
        assert_eq!(
            bytes_of(got.body).await,
            &body[usize::try_from(from).unwrap()..=usize::try_from(to).unwrap()],
            "{range}"
        );

        // The status line says 206.
        let raw = fetch_presigned(
            &server,
            &presign_get(&s3, &b, "obj", Some(range), Duration::from_secs(60)).await,
        );
        assert_eq!(raw.status, 206, "{range}: {raw:?}");
        assert_eq!(
            raw.header("content-range"),
            Some(format!("bytes {from}-{to}/1000").as_str())
        );
        assert_eq!(
            raw.body,
            &body[usize::try_from(from).unwrap()..=usize::try_from(to).unwrap()]
        );
    }
    // A whole-object GET is 200 without Content-Range.
    let raw = fetch_presigned(
        &server,
        &presign_get(&s3, &b, "obj", None, Duration::from_secs(60)).await,
    );
    assert_eq!(raw.status, 200, "{raw:?}");
    assert_eq!(raw.header("content-range"), None);
    assert_eq!(raw.body, body);

    for unsatisfiable in ["bytes=1000-", "bytes=5000-6000"] {
        expect_error(
            s3.get_object()
                .bucket(&b)
                .key("obj")
                .range(unsatisfiable)
                .send()
                .await,
            "InvalidRange",
            416,
        );
    }
    let raw = fetch_presigned(
        &server,
        &presign_get(&s3, &b, "obj", Some("bytes=1000-"), Duration::from_secs(60)).await,
    );
    assert_eq!(raw.status, 416, "{raw:?}");
    assert_xml_error(&raw, "InvalidRange");
}

#[tokio::test]
async fn conditional_reads() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "conditions").await;
    let etag = put(&s3, &b, "obj", b"conditional")
        .await
        .e_tag()
        .unwrap()
        .to_owned();
    let head = s3.head_object().bucket(&b).key("obj").send().await.unwrap();
    let modified = head.last_modified().unwrap().secs();
    let before = DateTime::from_secs(modified - 3600);
    let after = DateTime::from_secs(modified + 3600);
    let get = || s3.get_object().bucket(&b).key("obj");

    // If-Match
    assert_eq!(
        bytes_of(get().if_match(&etag).send().await.unwrap().body).await,
        b"conditional"
    );
    assert!(get().if_match("*").send().await.is_ok());
    expect_error(
        get()
            .if_match("\"0123456789abcdef0123456789abcdef\"")
            .send()
            .await,
        "PreconditionFailed",
        412,
    );
    expect_status(
        s3.head_object()
            .bucket(&b)
            .key("obj")
            .if_match("\"nope\"")
            .send()
            .await,
        412,
    );

    // If-None-Match
    let not_modified = expect_status(get().if_none_match(&etag).send().await, 304);
    assert_eq!(
        not_modified.header("etag"),
        Some(etag.as_str()),
        "{not_modified:?}"
    );
    expect_status(get().if_none_match("*").send().await, 304);
    expect_status(
        s3.head_object()
            .bucket(&b)
            .key("obj")
            .if_none_match(&etag)
            .send()
            .await,
        304,
    );
    assert!(get().if_none_match("\"other\"").send().await.is_ok());

    // If-Modified-Since
    expect_status(get().if_modified_since(after).send().await, 304);
    expect_status(
        get()
            .if_modified_since(DateTime::from_secs(modified))
            .send()
            .await,
        304,
    );
    assert!(get().if_modified_since(before).send().await.is_ok());

    // If-Unmodified-Since
    expect_error(
        get().if_unmodified_since(before).send().await,
        "PreconditionFailed",
        412,
    );
    assert!(get().if_unmodified_since(after).send().await.is_ok());
    assert!(
        get()
            .if_unmodified_since(DateTime::from_secs(modified))
            .send()
            .await
            .is_ok()
    );

    // S3's precedence: a passing If-Match beats a failing If-Unmodified-Since,
    // and a failing If-None-Match beats a passing If-Modified-Since.
    assert!(
        get()
            .if_match(&etag)
            .if_unmodified_since(before)
            .send()
            .await
            .is_ok()
    );
    expect_status(
        get()
            .if_none_match(&etag)
            .if_modified_since(before)
            .send()
            .await,
        304,
    );

    // The status line of a 304 over the wire.
    let presigned = s3
        .get_object()
        .bucket(&b)
        .key("obj")
        .if_none_match(&etag)
        .presigned(PresigningConfig::expires_in(Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    let raw = fetch_presigned(&server, &presigned);
    assert_eq!(raw.status, 304, "{raw:?}");
    assert!(raw.body.is_empty(), "{raw:?}");
}

#[tokio::test]
async fn conditional_writes_and_digests() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "cwrites").await;

    // If-None-Match: * creates only.
    let first = s3
        .put_object()
        .bucket(&b)
        .key("once")
        .if_none_match("*")
        .body(ByteStream::from_static(b"first"))
        .send()
        .await
        .unwrap();
    expect_error(
        s3.put_object()
            .bucket(&b)
            .key("once")
            .if_none_match("*")
            .body(ByteStream::from_static(b"second"))
            .send()
            .await,
        "PreconditionFailed",
        412,
    );
    assert_eq!(get(&s3, &b, "once").await, b"first");

    // If-Match replaces only the version the client saw.
    expect_error(
        s3.put_object()
            .bucket(&b)
            .key("once")
            .if_match("\"0123456789abcdef0123456789abcdef\"")
            .body(ByteStream::from_static(b"lost update"))
            .send()
            .await,
        "PreconditionFailed",
        412,
    );
    assert_eq!(get(&s3, &b, "once").await, b"first");
    s3.put_object()
        .bucket(&b)
        .key("once")
        .if_match(first.e_tag().unwrap())
        .body(ByteStream::from_static(b"updated"))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&s3, &b, "once").await, b"updated");

    // Content-MD5.
    let body = b"digest me".to_vec();
    let right = BASE64.encode(md5::Md5::digest(&body));
    let wrong = BASE64.encode(md5::Md5::digest(b"something else"));
    expect_error(
        s3.put_object()
            .bucket(&b)
            .key("md5")
            .content_md5(&wrong)
            .body(ByteStream::from(body.clone()))
            .send()
            .await,
        "BadDigest",
        400,
    );
    expect_error(
        s3.get_object().bucket(&b).key("md5").send().await,
        "NoSuchKey",
        404,
    );
    expect_error(
        s3.put_object()
            .bucket(&b)
            .key("md5")
            .content_md5("not-base64-md5")
            .body(ByteStream::from(body.clone()))
            .send()
            .await,
        "InvalidDigest",
        400,
    );
    s3.put_object()
        .bucket(&b)
        .key("md5")
        .content_md5(&right)
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&s3, &b, "md5").await, body);

    // A checksum value that does not match the body.
    let sha256_of_hello_world = "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=";
    expect_error(
        s3.put_object()
            .bucket(&b)
            .key("sha")
            .checksum_sha256(sha256_of_hello_world)
            .body(ByteStream::from_static(b"goodbye world"))
            .send()
            .await,
        "BadDigest",
        400,
    );
    expect_error(
        s3.get_object().bucket(&b).key("sha").send().await,
        "NoSuchKey",
        404,
    );
    s3.put_object()
        .bucket(&b)
        .key("sha")
        .checksum_sha256(sha256_of_hello_world)
        .body(ByteStream::from_static(b"hello world"))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn checksum_algorithms() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "checksums").await;
    // Reference values for "hello world", as AWS documents and the SDKs compute them.
    let cases = [
        (ChecksumAlgorithm::Crc32, "DUoRhQ=="),
        (ChecksumAlgorithm::Crc32C, "yZRlqg=="),
        (ChecksumAlgorithm::Sha1, "Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
        (
            ChecksumAlgorithm::Sha256,
            "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=",
        ),
        (ChecksumAlgorithm::Crc64Nvme, "jSnVw/bqjr4="),
    ];
    let big = random_bytes(300_000, 3);
    for (algorithm, want) in cases {
        let key = format!("hello-{}", algorithm.as_str());
        let out = s3
            .put_object()
            .bucket(&b)
            .key(&key)
            .checksum_algorithm(algorithm.clone())
            .body(ByteStream::from_static(b"hello world"))
            .send()
            .await
            .unwrap();
        let pick_put = match algorithm {
            ChecksumAlgorithm::Crc32 => out.checksum_crc32(),
            ChecksumAlgorithm::Crc32C => out.checksum_crc32_c(),
            ChecksumAlgorithm::Sha1 => out.checksum_sha1(),
            ChecksumAlgorithm::Sha256 => out.checksum_sha256(),
            _ => out.checksum_crc64_nvme(),
        };
        assert_eq!(
            pick_put,
            Some(want),
            "{algorithm:?} in the PutObject response"
        );
        let head = s3
            .head_object()
            .bucket(&b)
            .key(&key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        let pick_head = match algorithm {
            ChecksumAlgorithm::Crc32 => head.checksum_crc32(),
            ChecksumAlgorithm::Crc32C => head.checksum_crc32_c(),
            ChecksumAlgorithm::Sha1 => head.checksum_sha1(),
            ChecksumAlgorithm::Sha256 => head.checksum_sha256(),
            _ => head.checksum_crc64_nvme(),
        };
        assert_eq!(
            pick_head,
            Some(want),
            "{algorithm:?} from HeadObject: {head:?}"
        );
        // Without checksum mode the checksum is not sent.
        let head = s3.head_object().bucket(&b).key(&key).send().await.unwrap();
        assert_eq!(
            (
                head.checksum_crc32(),
                head.checksum_crc32_c(),
                head.checksum_sha1(),
                head.checksum_sha256(),
                head.checksum_crc64_nvme()
            ),
            (None, None, None, None, None)
        );

        // A larger random body: the SDK validates the body of a GET against
        // the checksum the server returns, so a wrong stored value fails here.
        let key = format!("big-{}", algorithm.as_str());
        s3.put_object()
            .bucket(&b)
            .key(&key)
            .checksum_algorithm(algorithm.clone())
            .body(ByteStream::from(big.clone()))
            .send()
            .await
            .unwrap();
        let got = s3
            .get_object()
            .bucket(&b)
            .key(&key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        let returned = [
            got.checksum_crc32(),
            got.checksum_crc32_c(),
            got.checksum_sha1(),
            got.checksum_sha256(),
            got.checksum_crc64_nvme(),
        ];
        assert!(
            returned.iter().any(Option::is_some),
            "{algorithm:?}: no checksum returned: {got:?}"
        );
        assert_eq!(bytes_of(got.body).await, big);
    }

    // CopyObject can compute a new algorithm for the copy.
    let copied = s3
        .copy_object()
        .bucket(&b)
        .key("hello-copy")
        .copy_source(format!("{b}/hello-CRC32"))
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap();
    assert_eq!(
        copied
            .copy_object_result()
            .and_then(|r| r.checksum_sha256()),
        Some("uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=")
    );
    let head = s3
        .head_object()
        .bucket(&b)
        .key("hello-copy")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.checksum_sha256(),
        Some("uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=")
    );
}

#[tokio::test]
async fn delete_and_batch_delete() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "deletes").await;
    put(&s3, &b, "gone", b"x").await;
    let deleted = s3
        .delete_object()
        .bucket(&b)
        .key("gone")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.delete_marker(), None);
    expect_error(
        s3.get_object().bucket(&b).key("gone").send().await,
        "NoSuchKey",
        404,
    );
    expect_status(s3.head_object().bucket(&b).key("gone").send().await, 404);
    // Deleting what is not there succeeds.
    s3.delete_object()
        .bucket(&b)
        .key("gone")
        .send()
        .await
        .unwrap();
    s3.delete_object()
        .bucket(&b)
        .key("never-existed")
        .send()
        .await
        .unwrap();

    for k in ["a", "b", "c", "d"] {
        put(&s3, &b, k, k.as_bytes()).await;
    }
    let ids =
        ["a", "b", "zz-missing", "d"].map(|k| ObjectIdentifier::builder().key(k).build().unwrap());
    let out = s3
        .delete_objects()
        .bucket(&b)
        .delete(
            Delete::builder()
                .set_objects(Some(ids.to_vec()))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let deleted: BTreeSet<&str> = out.deleted().iter().filter_map(|d| d.key()).collect();
    assert_eq!(deleted, BTreeSet::from(["a", "b", "zz-missing", "d"]));
    assert!(out.errors().is_empty(), "{:?}", out.errors());
    let left = s3.list_objects_v2().bucket(&b).send().await.unwrap();
    assert_eq!(
        left.contents()
            .iter()
            .filter_map(|o| o.key())
            .collect::<Vec<_>>(),
        ["c"]
    );

    // Quiet mode reports nothing on success.
    let out = s3
        .delete_objects()
        .bucket(&b)
        .delete(
            Delete::builder()
                .objects(ObjectIdentifier::builder().key("c").build().unwrap())
                .quiet(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        out.deleted().is_empty() && out.errors().is_empty(),
        "{out:?}"
    );
    assert!(
        s3.list_objects_v2()
            .bucket(&b)
            .send()
            .await
            .unwrap()
            .contents()
            .is_empty()
    );
}

#[tokio::test]
async fn copy_object_directives_and_conditions() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "copies").await;
    let other = new_bucket(&s3, "copies-dst").await;
    let body = random_bytes(100_000, 4);
    let src = s3
        .put_object()
        .bucket(&b)
        .key("src")
        .body(ByteStream::from(body.clone()))
        .metadata("origin", "source")
        .content_type("image/png")
        .tagging("k=v")
        .send()
        .await
        .unwrap();
    let src_etag = src.e_tag().unwrap().to_owned();

    // COPY (the default) keeps metadata and content headers.
    let copied = s3
        .copy_object()
        .bucket(&other)
        .key("dst")
        .copy_source(format!("{b}/src"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        copied.copy_object_result().and_then(|r| r.e_tag()),
        Some(src_etag.as_str())
    );
    let got = s3
        .get_object()
        .bucket(&other)
        .key("dst")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.metadata().unwrap().get("origin").map(String::as_str),
        Some("source")
    );
    assert_eq!(got.content_type(), Some("image/png"));
    assert_eq!(got.e_tag(), Some(src_etag.as_str()));
    assert_eq!(bytes_of(got.body).await, body);
    let tags = s3
        .get_object_tagging()
        .bucket(&other)
        .key("dst")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tag_pairs(tags.tag_set()),
        BTreeSet::from([("k".to_owned(), "v".to_owned())])
    );

    // An explicit COPY directive behaves the same.
    s3.copy_object()
        .bucket(&b)
        .key("dst-copy")
        .copy_source(format!("{b}/src"))
        .metadata_directive(MetadataDirective::Copy)
        .send()
        .await
        .unwrap();
    let head = s3
        .head_object()
        .bucket(&b)
        .key("dst-copy")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.metadata().unwrap().get("origin").map(String::as_str),
        Some("source")
    );

    // REPLACE takes metadata and headers from the request only.
    s3.copy_object()
        .bucket(&b)
        .key("dst-replace")
        .copy_source(format!("{b}/src"))
        .metadata_directive(MetadataDirective::Replace)
        .metadata("fresh", "yes")
        .content_type("application/octet-stream")
        .send()
        .await
        .unwrap();
    let head = s3
        .head_object()
        .bucket(&b)
        .key("dst-replace")
        .send()
        .await
        .unwrap();
    let meta = head.metadata().unwrap();
    assert_eq!(meta.get("fresh").map(String::as_str), Some("yes"));
    assert!(!meta.contains_key("origin"), "{meta:?}");
    assert_eq!(head.content_type(), Some("application/octet-stream"));
    assert_eq!(get(&s3, &b, "dst-replace").await, body);

    // Copying an object onto itself must change something.
    expect_error(
        s3.copy_object()
            .bucket(&b)
            .key("src")
            .copy_source(format!("{b}/src"))
            .send()
            .await,
        "InvalidRequest",
        400,
    );
    s3.copy_object()
        .bucket(&b)
        .key("src")
        .copy_source(format!("{b}/src"))
        .metadata_directive(MetadataDirective::Replace)
        .metadata("origin", "rewritten")
        .send()
        .await
        .unwrap();
    let head = s3.head_object().bucket(&b).key("src").send().await.unwrap();
    assert_eq!(
        head.metadata().unwrap().get("origin").map(String::as_str),
        Some("rewritten")
    );
    assert_eq!(get(&s3, &b, "src").await, body);

    // Copy-source conditions fail with 412.
    expect_error(
        s3.copy_object()
            .bucket(&b)
            .key("cond")
            .copy_source(format!("{b}/src"))
            .copy_source_if_match("\"0123456789abcdef0123456789abcdef\"")
            .send()
            .await,
        "PreconditionFailed",
        412,
    );
    expect_error(
        s3.copy_object()
            .bucket(&b)
            .key("cond")
            .copy_source(format!("{b}/src"))
            .copy_source_if_none_match(&src_etag)
            .send()
            .await,
        "PreconditionFailed",
        412,
    );
    expect_error(
        s3.get_object().bucket(&b).key("cond").send().await,
        "NoSuchKey",
        404,
    );
    s3.copy_object()
        .bucket(&b)
        .key("cond")
        .copy_source(format!("{b}/src"))
        .copy_source_if_match(&src_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(get(&s3, &b, "cond").await, body);

    expect_error(
        s3.copy_object()
            .bucket(&b)
            .key("x")
            .copy_source(format!("{b}/no-such-key"))
            .send()
            .await,
        "NoSuchKey",
        404,
    );
}

#[tokio::test]
async fn object_tagging() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "otags").await;
    s3.put_object()
        .bucket(&b)
        .key("k")
        .tagging("a=1&b=two%20words")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object_tagging()
        .bucket(&b)
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tag_pairs(got.tag_set()),
        BTreeSet::from([
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "two words".to_owned())
        ])
    );
    assert_eq!(
        s3.get_object()
            .bucket(&b)
            .key("k")
            .send()
            .await
            .unwrap()
            .tag_count(),
        Some(2)
    );

    let tagging = Tagging::builder()
        .tag_set(tag("project", "nuage"))
        .build()
        .unwrap();
    s3.put_object_tagging()
        .bucket(&b)
        .key("k")
        .tagging(tagging)
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object_tagging()
        .bucket(&b)
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tag_pairs(got.tag_set()),
        BTreeSet::from([("project".to_owned(), "nuage".to_owned())])
    );

    let eleven = Tagging::builder()
        .set_tag_set(Some((0..11).map(|i| tag(&format!("t{i}"), "v")).collect()))
        .build()
        .unwrap();
    expect_error(
        s3.put_object_tagging()
            .bucket(&b)
            .key("k")
            .tagging(eleven)
            .send()
            .await,
        "InvalidTag",
        400,
    );

    s3.delete_object_tagging()
        .bucket(&b)
        .key("k")
        .send()
        .await
        .unwrap();
    assert!(
        s3.get_object_tagging()
            .bucket(&b)
            .key("k")
            .send()
            .await
            .unwrap()
            .tag_set()
            .is_empty()
    );
    assert_eq!(get(&s3, &b, "k").await, b"x");

    let tagging = Tagging::builder().tag_set(tag("a", "1")).build().unwrap();
    expect_error(
        s3.put_object_tagging()
            .bucket(&b)
            .key("missing")
            .tagging(tagging)
            .send()
            .await,
        "NoSuchKey",
        404,
    );
    expect_error(
        s3.get_object_tagging()
            .bucket(&b)
            .key("missing")
            .send()
            .await,
        "NoSuchKey",
        404,
    );
}

#[tokio::test]
async fn keys_and_metadata_limits() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "limits").await;

    for key in [
        "dir with space/ünïcödé 日本語 ✓.txt",
        "plus+sign and%percent",
        "a?b#c&d=e",
        "trailing/",
        "emoji 🦀",
    ] {
        put(&s3, &b, key, key.as_bytes()).await;
        assert_eq!(get(&s3, &b, key).await, key.as_bytes(), "{key}");
        let listed = s3
            .list_objects_v2()
            .bucket(&b)
            .prefix(key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            listed
                .contents()
                .iter()
                .filter_map(|o| o.key())
                .collect::<Vec<_>>(),
            [key]
        );
    }

    let longest = "k".repeat(1024);
    put(&s3, &b, &longest, b"long").await;
    assert_eq!(get(&s3, &b, &longest).await, b"long");
    let too_long = "k".repeat(1025);
    expect_error(
        s3.put_object()
            .bucket(&b)
            .key(&too_long)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await,
        "KeyTooLongError",
        400,
    );
    // A multibyte key is measured in bytes: 342 × 3 = 1,026 bytes.
    expect_error(
        s3.put_object()
            .bucket(&b)
            .key("€".repeat(342))
            .body(ByteStream::from_static(b"x"))
            .send()
            .await,
        "KeyTooLongError",
        400,
    );

    // User metadata: names plus values, at most 2 KiB.
    let at_limit = "v".repeat(2048 - "k".len());
    s3.put_object()
        .bucket(&b)
        .key("meta-ok")
        .metadata("k", &at_limit)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let head = s3
        .head_object()
        .bucket(&b)
        .key("meta-ok")
        .send()
        .await
        .unwrap();
    assert_eq!(head.metadata().unwrap().get("k"), Some(&at_limit));
    let over = "v".repeat(2048);
    expect_error(
        s3.put_object()
            .bucket(&b)
            .key("meta-big")
            .metadata("k", &over)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await,
        "MetadataTooLarge",
        400,
    );
    expect_error(
        s3.create_multipart_upload()
            .bucket(&b)
            .key("meta-big")
            .metadata("k", &over)
            .send()
            .await,
        "MetadataTooLarge",
        400,
    );
    expect_error(
        s3.get_object().bucket(&b).key("meta-big").send().await,
        "NoSuchKey",
        404,
    );
    expect_status(
        s3.head_object().bucket(&b).key("meta-big").send().await,
        404,
    );
}

// ---------------------------------------------------------------- listing

/// The merged listing S3 must produce: keys after `after` under `prefix`, with
/// those containing `delimiter` past the prefix rolled up, in byte order.
/// Entries are `(is_common_prefix, name)`.
fn expected_listing(
    sorted_keys: &[String],
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
) -> Vec<(bool, String)> {
    let mut out: Vec<(bool, String)> = Vec::new();
    for key in sorted_keys {
        if !key.starts_with(prefix) || after.is_some_and(|a| key.as_str() <= a) {
            continue;
        }
        let rolled = delimiter.and_then(|d| {
            key[prefix.len()..]
                .find(d)
                .map(|i| key[..prefix.len() + i + d.len()].to_owned())
        });
        match rolled {
            Some(cp) => {
                if out.last() != Some(&(true, cp.clone())) {
                    out.push((true, cp));
                }
            }
            None => out.push((false, key.clone())),
        }
    }
    out
}

/// Pages through ListObjectsV2 and returns the merged entries, checking each page.
async fn list_v2_all(
    s3: &Client,
    bucket: &str,
    prefix: Option<&str>,
    delimiter: Option<&str>,
    max_keys: i32,
) -> Vec<(bool, String)> {
    let mut entries = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10_000 {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .set_prefix(prefix.map(str::to_owned))
            .set_delimiter(delimiter.map(str::to_owned))
            .max_keys(max_keys)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        let mut batch: Vec<(bool, String)> = page
            .contents()
            .iter()
            .map(|o| (false, o.key().unwrap().to_owned()))
            .collect();
        batch.extend(
            page.common_prefixes()
                .iter()
                .map(|p| (true, p.prefix().unwrap().to_owned())),
        );
        batch.sort_by(|x, y| x.1.cmp(&y.1));
        let count = i32::try_from(batch.len()).unwrap();
        assert!(
            count <= max_keys,
            "page of {count} entries with max-keys {max_keys}"
        );
        assert_eq!(page.key_count(), Some(count));
        entries.extend(batch);
        if page.is_truncated() == Some(true) {
            assert_eq!(count, max_keys, "a truncated page should be full");
            token = Some(
                page.next_continuation_token()
                    .expect("a truncated page needs a continuation token")
                    .to_owned(),
            );
        } else {
            assert_eq!(page.next_continuation_token(), None);
            return entries;
        }
    }
    panic!("listing did not end");
}

#[tokio::test]
async fn listing_pages_prefixes_and_encoding() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "listing").await;

    let mut keys: Vec<String> = Vec::new();
    keys.extend((0..1500).map(|i| format!("k{i:04}")));
    keys.extend((0..950).map(|i| format!("d{}/f{i:03}", i % 10)));
    keys.extend(
        [
            "a",
            "a/",
            "a/b",
            "a/b/c",
            "a!",
            "a0",
            "a b",
            "A",
            "Z",
            "Zz",
            "é",
            "e",
            "日本/語",
            "日本語",
            "~tilde",
            "plus+key",
            "per%cent",
            "photos/2024/x.jpg",
            "photos/2024/y.jpg",
            "photos/2025/z.jpg",
            "photos/top.jpg",
            "\u{10000}astral",
            "a\u{7f}del",
            "emoji/🦀",
        ]
        .map(str::to_owned),
    );
    keys.sort();
    keys.dedup();
    assert!(keys.len() > 2400, "{}", keys.len());
    let results: Vec<Result<_, _>> = futures::stream::iter(keys.clone())
        .map(|key| {
            let s3 = s3.clone();
            let b = b.clone();
            async move {
                s3.put_object()
                    .bucket(&b)
                    .key(&key)
                    .body(ByteStream::from(key.clone().into_bytes()))
                    .send()
                    .await
                    .map(drop)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r.unwrap();
    }

    // Every key exactly once, in byte order, whatever the page size.
    let all: Vec<(bool, String)> = keys.iter().map(|k| (false, k.clone())).collect();
    for max_keys in [1000, 777] {
        let listed = list_v2_all(&s3, &b, None, None, max_keys).await;
        assert_eq!(listed.len(), keys.len(), "max-keys {max_keys}");
        assert!(
            listed == all,
            "max-keys {max_keys}: listing differs from the sorted keys"
        );
    }
    // Default max-keys is 1,000 and the first page says so.
    let first = s3.list_objects_v2().bucket(&b).send().await.unwrap();
    assert_eq!(first.contents().len(), 1000);
    assert_eq!(first.max_keys(), Some(1000));
    assert_eq!(first.is_truncated(), Some(true));
    let first_keys: Vec<&str> = first.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(
        first_keys,
        keys[..1000].iter().map(String::as_str).collect::<Vec<_>>()
    );
    let object = &first.contents()[0];
    assert_eq!(object.size(), Some(i64::try_from(keys[0].len()).unwrap()));
    assert_eq!(
        object.e_tag(),
        Some(quoted(&md5_hex(keys[0].as_bytes())).as_str())
    );

    // Delimiter and common prefixes, paged in small pages that end on prefixes.
    for (prefix, delimiter, max_keys) in [
        (None, "/", 250),
        (None, "/", 3),
        (Some("photos/"), "/", 1),
        (Some("a"), "/", 2),
        (Some("d3/"), "/", 40),
        (Some("k1"), "3", 50),
        (Some("nothing-here/"), "/", 10),
    ] {
        let listed = list_v2_all(&s3, &b, prefix, Some(delimiter), max_keys).await;
        let want = expected_listing(&keys, prefix.unwrap_or(""), Some(delimiter), None);
        assert!(
            listed == want,
            "prefix {prefix:?} delimiter {delimiter:?} max-keys {max_keys}:\n got {listed:?}\nwant {want:?}"
        );
    }
    let photos = s3
        .list_objects_v2()
        .bucket(&b)
        .prefix("photos/")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    assert_eq!(
        photos
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .collect::<Vec<_>>(),
        ["photos/top.jpg"]
    );
    assert_eq!(
        photos
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix())
            .collect::<Vec<_>>(),
        ["photos/2024/", "photos/2025/"]
    );
    let top = s3
        .list_objects_v2()
        .bucket(&b)
        .prefix("a")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    assert_eq!(
        top.contents()
            .iter()
            .filter_map(|o| o.key())
            .collect::<Vec<_>>(),
        ["a", "a b", "a!", "a0", "a\u{7f}del"]
    );
    assert_eq!(
        top.common_prefixes()
            .iter()
            .filter_map(|p| p.prefix())
            .collect::<Vec<_>>(),
        ["a/"]
    );

    // start-after, with and without paging.
    for start_after in ["a/", "k0999", "Z", "zzzz", "\u{10000}"] {
        let page = s3
            .list_objects_v2()
            .bucket(&b)
            .start_after(start_after)
            .max_keys(5)
            .send()
            .await
            .unwrap();
        let want: Vec<&str> = keys
            .iter()
            .map(String::as_str)
            .filter(|k| *k > start_after)
            .take(5)
            .collect();
        assert_eq!(
            page.contents()
                .iter()
                .filter_map(|o| o.key())
                .collect::<Vec<_>>(),
            want,
            "start-after {start_after}"
        );
        assert_eq!(page.start_after(), Some(start_after));
    }

    // encoding-type=url: names come back percent-encoded, and decode to the keys.
    let mut by_key: BTreeMap<String, String> = BTreeMap::new();
    for start_after in ["Zz", "k1499"] {
        let encoded = s3
            .list_objects_v2()
            .bucket(&b)
            .encoding_type(EncodingType::Url)
            .start_after(start_after)
            .send()
            .await
            .unwrap();
        assert_eq!(encoded.encoding_type(), Some(&EncodingType::Url));
        let decoded: Vec<String> = encoded
            .contents()
            .iter()
            .map(|o| unquote_plus(o.key().unwrap()))
            .collect();
        let want: Vec<String> = keys
            .iter()
            .filter(|k| k.as_str() > start_after)
            .take(1000)
            .cloned()
            .collect();
        assert_eq!(decoded, want, "start-after {start_after}");
        for o in encoded.contents() {
            let k = o.key().unwrap();
            assert!(
                k.bytes().all(|c| c.is_ascii_graphic()),
                "not URL-encoded: {k:?}"
            );
            by_key.insert(unquote_plus(k), k.to_owned());
        }
    }
    assert_eq!(by_key["é"], "%C3%A9");
    assert_eq!(by_key["plus+key"], "plus%2Bkey");
    assert_eq!(by_key["per%cent"], "per%25cent");
    assert_eq!(by_key["a\u{7f}del"], "a%7Fdel");
    assert_eq!(by_key["\u{10000}astral"], "%F0%90%80%80astral");
    let rolled = s3
        .list_objects_v2()
        .bucket(&b)
        .encoding_type(EncodingType::Url)
        .delimiter("/")
        .prefix("日本")
        .send()
        .await
        .unwrap();
    assert_eq!(
        rolled
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix())
            .collect::<Vec<_>>(),
        ["%E6%97%A5%E6%9C%AC/"]
    );
    assert_eq!(
        rolled
            .contents()
            .iter()
            .map(|o| unquote_plus(o.key().unwrap()))
            .collect::<Vec<_>>(),
        ["日本語"]
    );

    // ListObjects v1: marker paging (NextMarker, or the last key as clients do).
    let mut v1 = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..100 {
        let page = s3
            .list_objects()
            .bucket(&b)
            .max_keys(600)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        let page_keys: Vec<String> = page
            .contents()
            .iter()
            .map(|o| o.key().unwrap().to_owned())
            .collect();
        assert!(page_keys.len() <= 600);
        v1.extend(page_keys.iter().cloned());
        if page.is_truncated() != Some(true) {
            break;
        }
        let last = page_keys.last().unwrap().clone();
        if let Some(next) = page.next_marker() {
            assert_eq!(next, last);
        }
        marker = Some(last);
    }
    assert!(
        v1 == keys,
        "ListObjects v1 paging did not return every key once, in order"
    );
    let after_marker = s3
        .list_objects()
        .bucket(&b)
        .marker("photos/")
        .max_keys(3)
        .send()
        .await
        .unwrap();
    assert_eq!(
        after_marker
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .collect::<Vec<_>>(),
        keys.iter()
            .map(String::as_str)
            .filter(|k| *k > "photos/")
            .take(3)
            .collect::<Vec<_>>()
    );

    // max-keys=0: nothing, and nothing to continue from.
    let zero = s3
        .list_objects_v2()
        .bucket(&b)
        .max_keys(0)
        .send()
        .await
        .unwrap();
    assert!(
        zero.contents().is_empty() && zero.common_prefixes().is_empty(),
        "{zero:?}"
    );
    assert_eq!(zero.key_count(), Some(0));
    assert_eq!(zero.is_truncated(), Some(false), "{zero:?}");
    assert_eq!(zero.next_continuation_token(), None);
    let zero_v1 = s3
        .list_objects()
        .bucket(&b)
        .max_keys(0)
        .send()
        .await
        .unwrap();
    assert!(zero_v1.contents().is_empty());
    assert_eq!(zero_v1.is_truncated(), Some(false), "{zero_v1:?}");

    // Invalid arguments.
    for token in ["!!!not-a-token!!!", "-1"] {
        expect_error(
            s3.list_objects_v2()
                .bucket(&b)
                .continuation_token(token)
                .send()
                .await,
            "InvalidArgument",
            400,
        );
    }
    expect_error(
        s3.list_objects_v2().bucket(&b).max_keys(-1).send().await,
        "InvalidArgument",
        400,
    );
    expect_error(
        s3.list_objects().bucket(&b).max_keys(-1).send().await,
        "InvalidArgument",
        400,
    );

    // An empty bucket lists nothing and is not truncated.
    let empty = new_bucket(&s3, "empty").await;
    let page = s3.list_objects_v2().bucket(&empty).send().await.unwrap();
    assert!(page.contents().is_empty());
    assert_eq!(
        (page.key_count(), page.is_truncated()),
        (Some(0), Some(false))
    );
}

// ---------------------------------------------------------------- multipart

fn md5_raw(data: &[u8]) -> Vec<u8> {
    md5::Md5::digest(data).to_vec()
}

fn multipart_etag(parts: &[&[u8]]) -> String {
    let joined: Vec<u8> = parts.iter().flat_map(|p| md5_raw(p)).collect();
    format!("\"{}-{}\"", md5_hex(&joined), parts.len())
}

fn completed(parts: &[(i32, &str)]) -> CompletedMultipartUpload {
    CompletedMultipartUpload::builder()
        .set_parts(Some(
            parts
                .iter()
                .map(|(n, e)| CompletedPart::builder().part_number(*n).e_tag(*e).build())
                .collect(),
        ))
        .build()
}

async fn upload_part(
    s3: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    n: i32,
    data: &[u8],
) -> String {
    let out = s3
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(n)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.e_tag(),
        Some(quoted(&md5_hex(data)).as_str()),
        "part {n}"
    );
    out.e_tag().unwrap().to_owned()
}

#[tokio::test]
async fn multipart_upload_round_trip() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "multipart").await;
    let key = "big/object.bin";
    let parts = [
        random_bytes(PART_MIN, 10),
        random_bytes(PART_MIN, 11),
        random_bytes(1, 12),
    ];

    let created = s3
        .create_multipart_upload()
        .bucket(&b)
        .key(key)
        .content_type("application/x-big")
        .metadata("purpose", "test")
        .send()
        .await
        .unwrap();
    let upload_id = created.upload_id().unwrap().to_owned();
    let mut etags = Vec::new();
    for (i, data) in parts.iter().enumerate() {
        etags.push(
            upload_part(
                &s3,
                &b,
                key,
                &upload_id,
                i32::try_from(i + 1).unwrap(),
                data,
            )
            .await,
        );
    }

    let listed = s3
        .list_parts()
        .bucket(&b)
        .key(key)
        .upload_id(&upload_id)
        .send()
        .await
        .unwrap();
    let summary: Vec<(Option<i32>, Option<i64>, Option<&str>)> = listed
        .parts()
        .iter()
        .map(|p| (p.part_number(), p.size(), p.e_tag()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                Some(1),
                Some(i64::try_from(PART_MIN).unwrap()),
                Some(etags[0].as_str())
            ),
            (
                Some(2),
                Some(i64::try_from(PART_MIN).unwrap()),
                Some(etags[1].as_str())
            ),
            (Some(3), Some(1), Some(etags[2].as_str())),
        ]
    );
    assert_eq!(listed.is_truncated(), Some(false));
    let page = s3
        .list_parts()
        .bucket(&b)
        .key(key)
        .upload_id(&upload_id)
        .max_parts(2)
        .send()
        .await
        .unwrap();
    assert_eq!(page.parts().len(), 2);
    assert_eq!(page.is_truncated(), Some(true));
    assert_eq!(page.next_part_number_marker(), Some("2"));
    let rest = s3
        .list_parts()
        .bucket(&b)
        .key(key)
        .upload_id(&upload_id)
        .part_number_marker("2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        rest.parts()
            .iter()
            .map(|p| p.part_number())
            .collect::<Vec<_>>(),
        [Some(3)]
    );

    let uploads = s3.list_multipart_uploads().bucket(&b).send().await.unwrap();
    let found: Vec<(Option<&str>, Option<&str>)> = uploads
        .uploads()
        .iter()
        .map(|u| (u.key(), u.upload_id()))
        .collect();
    assert_eq!(found, [(Some(key), Some(upload_id.as_str()))]);
    let none = s3
        .list_multipart_uploads()
        .bucket(&b)
        .prefix("other/")
        .send()
        .await
        .unwrap();
    assert!(none.uploads().is_empty());
    // Not visible until completed.
    expect_error(
        s3.get_object().bucket(&b).key(key).send().await,
        "NoSuchKey",
        404,
    );

    let done = s3
        .complete_multipart_upload()
        .bucket(&b)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(completed(&[(1, &etags[0]), (2, &etags[1]), (3, &etags[2])]))
        .send()
        .await
        .unwrap();
    let want_etag = multipart_etag(&[&parts[0], &parts[1], &parts[2]]);
    assert!(done.e_tag().unwrap().ends_with("-3\""), "{done:?}");
    assert_eq!(done.e_tag(), Some(want_etag.as_str()));

    let whole: Vec<u8> = parts.concat();
    let got = s3.get_object().bucket(&b).key(key).send().await.unwrap();
    assert_eq!(got.e_tag(), Some(want_etag.as_str()));
    assert_eq!(
        got.content_length(),
        Some(i64::try_from(whole.len()).unwrap())
    );
    assert_eq!(got.content_type(), Some("application/x-big"));
    assert_eq!(
        got.metadata().unwrap().get("purpose").map(String::as_str),
        Some("test")
    );
    assert!(
        bytes_of(got.body).await == whole,
        "multipart object bytes differ"
    );

    // A range across the part boundary.
    let got = s3
        .get_object()
        .bucket(&b)
        .key(key)
        .range(format!("bytes={}-{}", PART_MIN - 3, PART_MIN + 2))
        .send()
        .await
        .unwrap();
    assert_eq!(bytes_of(got.body).await, &whole[PART_MIN - 3..PART_MIN + 3]);

    // partNumber reads one part.
    let part2 = s3
        .get_object()
        .bucket(&b)
        .key(key)
        .part_number(2)
        .send()
        .await
        .unwrap();
    assert_eq!(part2.parts_count(), Some(3));
    assert_eq!(
        part2.content_range(),
        Some(format!("bytes {}-{}/{}", PART_MIN, 2 * PART_MIN - 1, whole.len()).as_str())
    );
    assert!(
        bytes_of(part2.body).await == parts[1],
        "part 2 bytes differ"
    );
    let part3 = s3
        .get_object()
        .bucket(&b)
        .key(key)
        .part_number(3)
        .send()
        .await
        .unwrap();
    assert_eq!(bytes_of(part3.body).await, parts[2]);
    let head2 = s3
        .head_object()
        .bucket(&b)
        .key(key)
        .part_number(2)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head2.content_length(),
        Some(i64::try_from(PART_MIN).unwrap())
    );
    assert_eq!(head2.parts_count(), Some(3));
    // A part past the last: S3's InvalidPartNumber, 416.
    expect_error(
        s3.get_object()
            .bucket(&b)
            .key(key)
            .part_number(4)
            .send()
            .await,
        "InvalidPartNumber",
        416,
    );
    expect_status(
        s3.head_object()
            .bucket(&b)
            .key(key)
            .part_number(4)
            .send()
            .await,
        416,
    );
    // A single-part object has exactly one part.
    put(&s3, &b, "single", b"one part").await;
    let whole_single = s3
        .get_object()
        .bucket(&b)
        .key("single")
        .part_number(1)
        .send()
        .await
        .unwrap();
    assert_eq!(bytes_of(whole_single.body).await, b"one part");
    expect_error(
        s3.get_object()
            .bucket(&b)
            .key("single")
            .part_number(2)
            .send()
            .await,
        "InvalidPartNumber",
        416,
    );

    // The upload is gone once completed.
    let gone = s3.list_multipart_uploads().bucket(&b).send().await.unwrap();
    assert!(gone.uploads().is_empty(), "{gone:?}");
    expect_error(
        s3.list_parts()
            .bucket(&b)
            .key(key)
            .upload_id(&upload_id)
            .send()
            .await,
        "NoSuchUpload",
        404,
    );
}

#[tokio::test]
async fn multipart_errors() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "mperrors").await;
    let big = random_bytes(PART_MIN, 20);

    // A part other than the last below 5 MiB.
    let id = s3
        .create_multipart_upload()
        .bucket(&b)
        .key("small")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let e1 = upload_part(&s3, &b, "small", &id, 1, b"tiny").await;
    let e2 = upload_part(&s3, &b, "small", &id, 2, b"tiny too").await;
    expect_error(
        s3.complete_multipart_upload()
            .bucket(&b)
            .key("small")
            .upload_id(&id)
            .multipart_upload(completed(&[(1, &e1), (2, &e2)]))
            .send()
            .await,
        "EntityTooSmall",
        400,
    );
    // A single small part is a valid (last) part.
    s3.complete_multipart_upload()
        .bucket(&b)
        .key("small")
        .upload_id(&id)
        .multipart_upload(completed(&[(1, &e1)]))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&s3, &b, "small").await, b"tiny");

    let id = s3
        .create_multipart_upload()
        .bucket(&b)
        .key("k")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let e1 = upload_part(&s3, &b, "k", &id, 1, &big).await;
    let e2 = upload_part(&s3, &b, "k", &id, 2, b"end").await;
    // Wrong ETag, and a part that was never uploaded.
    expect_error(
        s3.complete_multipart_upload()
            .bucket(&b)
            .key("k")
            .upload_id(&id)
            .multipart_upload(completed(&[
                (1, &e1),
                (2, "\"0123456789abcdef0123456789abcdef\""),
            ]))
            .send()
            .await,
        "InvalidPart",
        400,
    );
    expect_error(
        s3.complete_multipart_upload()
            .bucket(&b)
            .key("k")
            .upload_id(&id)
            .multipart_upload(completed(&[(1, &e1), (3, &e2)]))
            .send()
            .await,
        "InvalidPart",
        400,
    );
    // Out of order, and a repeated part number.
    expect_error(
        s3.complete_multipart_upload()
            .bucket(&b)
            .key("k")
            .upload_id(&id)
            .multipart_upload(completed(&[(2, &e2), (1, &e1)]))
            .send()
            .await,
        "InvalidPartOrder",
        400,
    );
    expect_error(
        s3.complete_multipart_upload()
            .bucket(&b)
            .key("k")
            .upload_id(&id)
            .multipart_upload(completed(&[(1, &e1), (1, &e1)]))
            .send()
            .await,
        "InvalidPartOrder",
        400,
    );
    // Part numbers outside 1..=10000.
    for n in [0, 10_001] {
        expect_error(
            s3.upload_part()
                .bucket(&b)
                .key("k")
                .upload_id(&id)
                .part_number(n)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await,
            "InvalidArgument",
            400,
        );
    }
    // Failed completions leave the upload intact.
    assert_eq!(
        s3.list_parts()
            .bucket(&b)
            .key("k")
            .upload_id(&id)
            .send()
            .await
            .unwrap()
            .parts()
            .len(),
        2
    );
    expect_error(
        s3.get_object().bucket(&b).key("k").send().await,
        "NoSuchKey",
        404,
    );

    // An upload id belongs to its key.
    expect_error(
        s3.list_parts()
            .bucket(&b)
            .key("other-key")
            .upload_id(&id)
            .send()
            .await,
        "NoSuchUpload",
        404,
    );

    // Abort, then every operation on the upload says NoSuchUpload.
    let aborted = s3
        .abort_multipart_upload()
        .bucket(&b)
        .key("k")
        .upload_id(&id)
        .send()
        .await;
    aborted.unwrap();
    expect_error(
        s3.upload_part()
            .bucket(&b)
            .key("k")
            .upload_id(&id)
            .part_number(3)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await,
        "NoSuchUpload",
        404,
    );
    expect_error(
        s3.list_parts()
            .bucket(&b)
            .key("k")
            .upload_id(&id)
            .send()
            .await,
        "NoSuchUpload",
        404,
    );
    expect_error(
        s3.complete_multipart_upload()
            .bucket(&b)
            .key("k")
            .upload_id(&id)
            .multipart_upload(completed(&[(1, &e1), (2, &e2)]))
            .send()
            .await,
        "NoSuchUpload",
        404,
    );
    expect_error(
        s3.abort_multipart_upload()
            .bucket(&b)
            .key("k")
            .upload_id(&id)
            .send()
            .await,
        "NoSuchUpload",
        404,
    );
    expect_error(
        s3.abort_multipart_upload()
            .bucket(&b)
            .key("k")
            .upload_id("no-such-upload-id")
            .send()
            .await,
        "NoSuchUpload",
        404,
    );
    expect_error(
        s3.get_object().bucket(&b).key("k").send().await,
        "NoSuchKey",
        404,
    );
    assert!(
        s3.list_multipart_uploads()
            .bucket(&b)
            .send()
            .await
            .unwrap()
            .uploads()
            .is_empty()
    );
}

#[tokio::test]
async fn multipart_part_copy_and_checksums() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "mpcopy").await;
    let source = random_bytes(PART_MIN + 1000, 30);
    put(&s3, &b, "source", &source).await;

    // UploadPartCopy with byte ranges.
    let id = s3
        .create_multipart_upload()
        .bucket(&b)
        .key("assembled")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let copy1 = s3
        .upload_part_copy()
        .bucket(&b)
        .key("assembled")
        .upload_id(&id)
        .part_number(1)
        .copy_source(format!("{b}/source"))
        .copy_source_range(format!("bytes=500-{}", 500 + PART_MIN - 1))
        .send()
        .await
        .unwrap();
    let e1 = copy1
        .copy_part_result()
        .unwrap()
        .e_tag()
        .unwrap()
        .to_owned();
    assert_eq!(e1, quoted(&md5_hex(&source[500..500 + PART_MIN])));
    let copy2 = s3
        .upload_part_copy()
        .bucket(&b)
        .key("assembled")
        .upload_id(&id)
        .part_number(2)
        .copy_source(format!("{b}/source"))
        .copy_source_range("bytes=0-99")
        .send()
        .await
        .unwrap();
    let e2 = copy2
        .copy_part_result()
        .unwrap()
        .e_tag()
        .unwrap()
        .to_owned();
    expect_error(
        s3.upload_part_copy()
            .bucket(&b)
            .key("assembled")
            .upload_id(&id)
            .part_number(3)
            .copy_source(format!("{b}/source"))
            .copy_source_range(format!("bytes=0-{}", source.len()))
            .send()
            .await,
        "InvalidRange",
        416,
    );
    s3.complete_multipart_upload()
        .bucket(&b)
        .key("assembled")
        .upload_id(&id)
        .multipart_upload(completed(&[(1, &e1), (2, &e2)]))
        .send()
        .await
        .unwrap();
    let mut want = source[500..500 + PART_MIN].to_vec();
    want.extend_from_slice(&source[..100]);
    assert!(
        get(&s3, &b, "assembled").await == want,
        "assembled bytes differ"
    );

    // A multipart upload with SHA-256 checksums: parts carry them, the object
    // gets a composite checksum `base64-N`.
    let id = s3
        .create_multipart_upload()
        .bucket(&b)
        .key("summed")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let datas = [
        random_bytes(PART_MIN, 31),
        random_bytes(PART_MIN, 32),
        random_bytes(1, 33),
    ];
    let mut parts = Vec::new();
    for (i, data) in datas.iter().enumerate() {
        let n = i32::try_from(i + 1).unwrap();
        let out = s3
            .upload_part()
            .bucket(&b)
            .key("summed")
            .upload_id(&id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        let sum = out.checksum_sha256().expect("a part's SHA-256").to_owned();
        assert_eq!(BASE64.decode(&sum).unwrap().len(), 32);
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .checksum_sha256(sum)
                .build(),
        );
    }
    let listed = s3
        .list_parts()
        .bucket(&b)
        .key("summed")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed
            .parts()
            .iter()
            .map(|p| p.checksum_sha256().map(str::to_owned))
            .collect::<Vec<_>>(),
        parts
            .iter()
            .map(|p| p.checksum_sha256().map(str::to_owned))
            .collect::<Vec<_>>()
    );
    // A wrong part checksum in the completion is refused.
    let mut tampered = parts.clone();
    tampered[1] = CompletedPart::builder()
        .part_number(2)
        .e_tag(parts[1].e_tag().unwrap())
        .checksum_sha256(parts[0].checksum_sha256().unwrap())
        .build();
    expect_error(
        s3.complete_multipart_upload()
            .bucket(&b)
            .key("summed")
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(tampered))
                    .build(),
            )
            .send()
            .await,
        "InvalidPart",
        400,
    );
    let done = s3
        .complete_multipart_upload()
        .bucket(&b)
        .key("summed")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let composite = done
        .checksum_sha256()
        .expect("a composite checksum")
        .to_owned();
    let (digest, count) = composite.rsplit_once('-').unwrap();
    assert_eq!(count, "3");
    assert_eq!(BASE64.decode(digest).unwrap().len(), 32);
    let head = s3
        .head_object()
        .bucket(&b)
        .key("summed")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.checksum_sha256(), Some(composite.as_str()));
    assert_eq!(head.checksum_type().map(|t| t.as_str()), Some("COMPOSITE"));
    assert!(
        get(&s3, &b, "summed").await == datas.concat(),
        "checksummed multipart bytes differ"
    );

    // A copy of it is a single-part object with a full-object SHA-256, which
    // the SDK checks against the body it receives.
    let copied = s3
        .copy_object()
        .bucket(&b)
        .key("summed-copy")
        .copy_source(format!("{b}/summed"))
        .send()
        .await
        .unwrap();
    let sum = copied
        .copy_object_result()
        .and_then(|r| r.checksum_sha256())
        .expect("the copy's SHA-256")
        .to_owned();
    assert!(!sum.contains('-'), "{sum}");
    let got = s3
        .get_object()
        .bucket(&b)
        .key("summed-copy")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(got.checksum_sha256(), Some(sum.as_str()));
    assert_eq!(got.checksum_type().map(|t| t.as_str()), Some("FULL_OBJECT"));
    assert!(
        bytes_of(got.body).await == datas.concat(),
        "copied bytes differ"
    );
}

// ---------------------------------------------------------------- versioning

#[tokio::test]
async fn versioning_versions_and_delete_markers() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "versions").await;

    let status = s3.get_bucket_versioning().bucket(&b).send().await.unwrap();
    assert_eq!(status.status(), None);
    // A put before versioning is the null version.
    let before = put(&s3, &b, "k", b"v0").await;
    assert_eq!(before.version_id(), None);

    enable_versioning(&s3, &b, BucketVersioningStatus::Enabled).await;
    assert_eq!(
        s3.get_bucket_versioning()
            .bucket(&b)
            .send()
            .await
            .unwrap()
            .status(),
        Some(&BucketVersioningStatus::Enabled)
    );
    let v1 = put(&s3, &b, "k", b"v1")
        .await
        .version_id()
        .unwrap()
        .to_owned();
    let v2 = put(&s3, &b, "k", b"v2")
        .await
        .version_id()
        .unwrap()
        .to_owned();
    assert_ne!(v1, v2);
    assert_ne!(v1, "null");
    assert_eq!(get(&s3, &b, "k").await, b"v2");
    for (id, want) in [(v1.as_str(), b"v1"), (v2.as_str(), b"v2"), ("null", b"v0")] {
        let got = s3
            .get_object()
            .bucket(&b)
            .key("k")
            .version_id(id)
            .send()
            .await
            .unwrap();
        assert_eq!(got.version_id(), Some(id));
        assert_eq!(bytes_of(got.body).await, want, "version {id}");
    }
    let head = s3.head_object().bucket(&b).key("k").send().await.unwrap();
    assert_eq!(head.version_id(), Some(v2.as_str()));

    let listed = s3.list_object_versions().bucket(&b).send().await.unwrap();
    let versions: Vec<(&str, &str, bool)> = listed
        .versions()
        .iter()
        .map(|v| {
            (
                v.key().unwrap(),
                v.version_id().unwrap(),
                v.is_latest().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            ("k", v2.as_str(), true),
            ("k", v1.as_str(), false),
            ("k", "null", false)
        ]
    );
    assert!(listed.delete_markers().is_empty());

    // Delete without a version id places a delete marker.
    let deleted = s3.delete_object().bucket(&b).key("k").send().await.unwrap();
    assert_eq!(deleted.delete_marker(), Some(true));
    let marker = deleted.version_id().unwrap().to_owned();
    assert!(marker != v1 && marker != v2);
    let hidden = expect_error(
        s3.get_object().bucket(&b).key("k").send().await,
        "NoSuchKey",
        404,
    );
    assert_eq!(
        hidden.header("x-amz-delete-marker"),
        Some("true"),
        "{hidden:?}"
    );
    let hidden = expect_status(s3.head_object().bucket(&b).key("k").send().await, 404);
    assert_eq!(
        hidden.header("x-amz-delete-marker"),
        Some("true"),
        "{hidden:?}"
    );
    expect_status(
        s3.head_object()
            .bucket(&b)
            .key("k")
            .version_id(&marker)
            .send()
            .await,
        405,
    );
    expect_error(
        s3.get_object()
            .bucket(&b)
            .key("k")
            .version_id(&marker)
            .send()
            .await,
        "MethodNotAllowed",
        405,
    );
    assert!(
        s3.list_objects_v2()
            .bucket(&b)
            .send()
            .await
            .unwrap()
            .contents()
            .is_empty()
    );
    let listed = s3.list_object_versions().bucket(&b).send().await.unwrap();
    let markers: Vec<(&str, &str, bool)> = listed
        .delete_markers()
        .iter()
        .map(|m| {
            (
                m.key().unwrap(),
                m.version_id().unwrap(),
                m.is_latest().unwrap(),
            )
        })
        .collect();
    assert_eq!(markers, [("k", marker.as_str(), true)]);
    assert!(
        listed
            .versions()
            .iter()
            .all(|v| v.is_latest() == Some(false)),
        "{listed:?}"
    );
    // Old versions stay readable by id.
    assert_eq!(
        bytes_of(
            s3.get_object()
                .bucket(&b)
                .key("k")
                .version_id(&v1)
                .send()
                .await
                .unwrap()
                .body
        )
        .await,
        b"v1"
    );

    // Deleting the marker by id brings the object back.
    let undeleted = s3
        .delete_object()
        .bucket(&b)
        .key("k")
        .version_id(&marker)
        .send()
        .await
        .unwrap();
    assert_eq!(undeleted.delete_marker(), Some(true));
    assert_eq!(undeleted.version_id(), Some(marker.as_str()));
    assert_eq!(get(&s3, &b, "k").await, b"v2");

    // Deleting a version by id removes it for good.
    let removed = s3
        .delete_object()
        .bucket(&b)
        .key("k")
        .version_id(&v2)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.version_id(), Some(v2.as_str()));
    assert_eq!(removed.delete_marker(), None);
    assert_eq!(get(&s3, &b, "k").await, b"v1");
    expect_error(
        s3.get_object()
            .bucket(&b)
            .key("k")
            .version_id(&v2)
            .send()
            .await,
        "NoSuchVersion",
        404,
    );
    let listed = s3.list_object_versions().bucket(&b).send().await.unwrap();
    let ids: Vec<&str> = listed
        .versions()
        .iter()
        .filter_map(|v| v.version_id())
        .collect();
    assert_eq!(ids, [v1.as_str(), "null"]);
    expect_error(
        s3.get_object()
            .bucket(&b)
            .key("k")
            .version_id("not-a-version")
            .send()
            .await,
        "InvalidArgument",
        400,
    );

    // A bucket with versions (even only old ones) is not empty.
    expect_error(
        s3.delete_bucket().bucket(&b).send().await,
        "BucketNotEmpty",
        409,
    );
}

#[tokio::test]
async fn versioning_suspended_and_version_paging() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "suspend").await;
    enable_versioning(&s3, &b, BucketVersioningStatus::Enabled).await;

    let mut enabled_ids = Vec::new();
    for body in [b"a1", b"a2", b"a3"] {
        enabled_ids.push(
            put(&s3, &b, "a", body)
                .await
                .version_id()
                .unwrap()
                .to_owned(),
        );
    }
    let marker = s3
        .delete_object()
        .bucket(&b)
        .key("a")
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_owned();
    let b1 = put(&s3, &b, "b", b"b1")
        .await
        .version_id()
        .unwrap()
        .to_owned();
    let b2 = put(&s3, &b, "b", b"b2")
        .await
        .version_id()
        .unwrap()
        .to_owned();
    let c1 = put(&s3, &b, "c/d", b"c1")
        .await
        .version_id()
        .unwrap()
        .to_owned();

    // Walk every version one page at a time: each exactly once, keys ascending,
    // newest first within a key, the first of each key the latest.
    let want: Vec<(String, String, bool)> = vec![
        ("a".into(), marker.clone(), true),
        ("a".into(), enabled_ids[2].clone(), false),
        ("a".into(), enabled_ids[1].clone(), false),
        ("a".into(), enabled_ids[0].clone(), false),
        ("b".into(), b2.clone(), true),
        ("b".into(), b1.clone(), false),
        ("c/d".into(), c1.clone(), true),
    ];
    let mut walked: Vec<(String, String, bool)> = Vec::new();
    let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
    for _ in 0..100 {
        let page = s3
            .list_object_versions()
            .bucket(&b)
            .max_keys(1)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await
            .unwrap();
        let mut entries: Vec<(String, String, bool)> = page
            .versions()
            .iter()
            .map(|v| {
                (
                    v.key().unwrap().to_owned(),
                    v.version_id().unwrap().to_owned(),
                    v.is_latest().unwrap(),
                )
            })
            .collect();
        entries.extend(page.delete_markers().iter().map(|m| {
            (
                m.key().unwrap().to_owned(),
                m.version_id().unwrap().to_owned(),
                m.is_latest().unwrap(),
            )
        }));
        assert!(entries.len() <= 1, "max-keys 1 returned {entries:?}");
        walked.extend(entries);
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = Some(
            page.next_key_marker()
                .expect("a truncated page needs a key marker")
                .to_owned(),
        );
        version_marker = page.next_version_id_marker().map(str::to_owned);
    }
    assert_eq!(walked, want);
    let zero = s3
        .list_object_versions()
        .bucket(&b)
        .max_keys(0)
        .send()
        .await
        .unwrap();
    assert!(
        zero.versions().is_empty() && zero.delete_markers().is_empty(),
        "{zero:?}"
    );
    assert_eq!(zero.is_truncated(), Some(false), "{zero:?}");

    // Delimiter on versions rolls up "c/".
    let rolled = s3
        .list_object_versions()
        .bucket(&b)
        .delimiter("/")
        .send()
        .await
        .unwrap();
    assert_eq!(
        rolled
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix())
            .collect::<Vec<_>>(),
        ["c/"]
    );
    assert_eq!(rolled.versions().len() + rolled.delete_markers().len(), 6);

    // Suspended: new writes are the null version and replace each other.
    enable_versioning(&s3, &b, BucketVersioningStatus::Suspended).await;
    assert_eq!(
        s3.get_bucket_versioning()
            .bucket(&b)
            .send()
            .await
            .unwrap()
            .status(),
        Some(&BucketVersioningStatus::Suspended)
    );
    let n1 = put(&s3, &b, "b", b"null-1").await;
    assert_eq!(n1.version_id(), Some("null"));
    let n2 = put(&s3, &b, "b", b"null-2").await;
    assert_eq!(n2.version_id(), Some("null"));
    assert_eq!(get(&s3, &b, "b").await, b"null-2");
    let got = s3
        .get_object()
        .bucket(&b)
        .key("b")
        .version_id("null")
        .send()
        .await
        .unwrap();
    assert_eq!(bytes_of(got.body).await, b"null-2");
    let listed = s3
        .list_object_versions()
        .bucket(&b)
        .prefix("b")
        .send()
        .await
        .unwrap();
    let ids: Vec<(&str, bool)> = listed
        .versions()
        .iter()
        .map(|v| (v.version_id().unwrap(), v.is_latest().unwrap()))
        .collect();
    assert_eq!(
        ids,
        [("null", true), (b2.as_str(), false), (b1.as_str(), false)]
    );
    // The versions written while enabled are kept.
    assert_eq!(
        bytes_of(
            s3.get_object()
                .bucket(&b)
                .key("b")
                .version_id(&b1)
                .send()
                .await
                .unwrap()
                .body
        )
        .await,
        b"b1"
    );

    // A delete while suspended places a null delete marker.
    let deleted = s3.delete_object().bucket(&b).key("b").send().await.unwrap();
    assert_eq!(deleted.delete_marker(), Some(true));
    assert_eq!(deleted.version_id(), Some("null"));
    expect_error(
        s3.get_object().bucket(&b).key("b").send().await,
        "NoSuchKey",
        404,
    );
    let listed = s3
        .list_object_versions()
        .bucket(&b)
        .prefix("b")
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed
            .versions()
            .iter()
            .filter_map(|v| v.version_id())
            .collect::<Vec<_>>(),
        [b2.as_str(), b1.as_str()]
    );
    assert_eq!(
        listed
            .delete_markers()
            .iter()
            .filter_map(|m| m.version_id())
            .collect::<Vec<_>>(),
        ["null"]
    );
}

// ---------------------------------------------------------------- auth

#[tokio::test]
async fn authentication_failures() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "auth").await;
    put(&s3, &b, "secret", b"classified").await;

    let wrong_secret = server.client_with(|c| {
        c.credentials_provider(aws_credential_types::Credentials::new(
            server.credentials.access_key_id.clone(),
            "definitely-not-the-secret-key",
            None,
            None,
            "wrong",
        ))
    });
    expect_error(
        wrong_secret
            .get_object()
            .bucket(&b)
            .key("secret")
            .send()
            .await,
        "SignatureDoesNotMatch",
        403,
    );
    expect_error(
        wrong_secret
            .put_object()
            .bucket(&b)
            .key("intruder")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await,
        "SignatureDoesNotMatch",
        403,
    );
    expect_error(
        wrong_secret.list_buckets().send().await,
        "SignatureDoesNotMatch",
        403,
    );
    expect_error(
        s3.get_object().bucket(&b).key("intruder").send().await,
        "NoSuchKey",
        404,
    );

    // An unsigned request.
    let anonymous = raw_request(&server.endpoint, "GET", &format!("/{b}/secret"), &[]);
    assert_eq!(anonymous.status, 403, "{anonymous:?}");
    assert_xml_error(&anonymous, "AccessDenied");
    assert!(!anonymous.text().contains("classified"));
    let anonymous_put = raw_request(
        &server.endpoint,
        "PUT",
        &format!("/{b}/anon"),
        &[("Content-Length".to_owned(), "1".to_owned())],
    );
    assert_eq!(anonymous_put.status, 403, "{anonymous_put:?}");
    expect_error(
        s3.get_object().bucket(&b).key("anon").send().await,
        "NoSuchKey",
        404,
    );

    // Presigned GET URLs work without any other credentials...
    let presigned = presign_get(&s3, &b, "secret", None, Duration::from_secs(300)).await;
    let fetched = fetch_presigned(&server, &presigned);
    assert_eq!(fetched.status, 200, "{fetched:?}");
    assert_eq!(fetched.body, b"classified");
    // ...but not for another key than the one signed.
    let path = presigned
        .uri()
        .strip_prefix(server.endpoint.as_str())
        .unwrap()
        .replacen("/secret?", "/other?", 1);
    let tampered = raw_request(&server.endpoint, "GET", &path, &[]);
    assert_eq!(tampered.status, 403, "{tampered:?}");
    assert_xml_error(&tampered, "SignatureDoesNotMatch");

    // ...and stop working once expired.
    let short = presign_get(&s3, &b, "secret", None, Duration::from_secs(1)).await;
    let deadline = Instant::now() + POLL_BOUND;
    let expired = loop {
        let r = fetch_presigned(&server, &short);
        if r.status != 200 {
            break r;
        }
        assert_eq!(r.body, b"classified");
        assert!(
            Instant::now() < deadline,
            "a presigned URL valid for 1 s still worked after {POLL_BOUND:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    assert_eq!(expired.status, 403, "{expired:?}");
    assert_xml_error(&expired, "AccessDenied");
}

#[tokio::test]
async fn unknown_access_key_is_invalid_access_key_id() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "authkey").await;
    let stranger = server.client_with(|c| {
        c.credentials_provider(aws_credential_types::Credentials::new(
            "NUAGEUNKNOWNKEY00000",
            server.credentials.secret_access_key.clone(),
            None,
            None,
            "stranger",
        ))
    });
    expect_error(
        stranger.get_object().bucket(&b).key("k").send().await,
        "InvalidAccessKeyId",
        403,
    );
    expect_error(
        stranger.list_buckets().send().await,
        "InvalidAccessKeyId",
        403,
    );
}

// ---------------------------------------------------------------- request ids

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "reqid").await;
    let mut ids = BTreeSet::new();
    let mut record = |id: Option<&str>, what: &str| {
        let id = id.unwrap_or_else(|| panic!("{what}: no x-amz-request-id"));
        assert!(!id.is_empty(), "{what}");
        assert!(ids.insert(id.to_owned()), "{what}: request id {id} reused");
    };

    record(put(&s3, &b, "k", b"v").await.request_id(), "PutObject");
    record(
        s3.get_object()
            .bucket(&b)
            .key("k")
            .send()
            .await
            .unwrap()
            .request_id(),
        "GetObject",
    );
    record(
        s3.head_object()
            .bucket(&b)
            .key("k")
            .send()
            .await
            .unwrap()
            .request_id(),
        "HeadObject",
    );
    record(
        s3.list_objects_v2()
            .bucket(&b)
            .send()
            .await
            .unwrap()
            .request_id(),
        "ListObjectsV2",
    );
    record(
        s3.list_buckets().send().await.unwrap().request_id(),
        "ListBuckets",
    );
    record(
        s3.delete_object()
            .bucket(&b)
            .key("nothing")
            .send()
            .await
            .unwrap()
            .request_id(),
        "DeleteObject",
    );
    let err = s3
        .get_object()
        .bucket(&b)
        .key("missing")
        .send()
        .await
        .unwrap_err();
    record(err.request_id(), "GetObject error");
    let err = s3
        .head_object()
        .bucket(&b)
        .key("missing")
        .send()
        .await
        .unwrap_err();
    record(err.request_id(), "HeadObject error");
    let err = s3
        .get_object()
        .bucket(&b)
        .key("k")
        .range("bytes=100-")
        .send()
        .await
        .unwrap_err();
    record(err.request_id(), "InvalidRange error");

    // Over the wire, including requests refused before any handler runs.
    for (what, method, path) in [
        ("anonymous GET", "GET", format!("/{b}/k")),
        ("anonymous ListBuckets", "GET", "/".to_owned()),
        ("anonymous HEAD", "HEAD", format!("/{b}/k")),
        ("bad bucket name", "GET", "/A_B/k".to_owned()),
    ] {
        let r = raw_request(&server.endpoint, method, &path, &[]);
        assert!(r.status >= 400, "{what}: {r:?}");
        let id = r.header("x-amz-request-id").map(str::to_owned);
        record(id.as_deref(), what);
        // An error body names the same id, so a bug report can quote it.
        if method != "HEAD" {
            let want = format!("<RequestId>{}</RequestId>", id.unwrap_or_default());
            assert!(r.text().contains(&want), "{what}: {}", r.text());
        }
    }
    let r = fetch_presigned(
        &server,
        &presign_get(&s3, &b, "k", None, Duration::from_secs(60)).await,
    );
    assert_eq!(r.status, 200);
    record(r.header("x-amz-request-id"), "presigned GET");
}

// ---------------------------------------------------------------- restart

#[tokio::test]
async fn everything_survives_a_restart() {
    let mut server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "durable").await;
    let vb = new_bucket(&s3, "durable-versions").await;
    let access_key = server.credentials.access_key_id.clone();
    let secret_key = server.credentials.secret_access_key.clone();

    let small = random_bytes(10_000, 40);
    s3.put_object()
        .bucket(&b)
        .key("small")
        .metadata("kept", "yes")
        .content_type("text/x-kept")
        .tagging("t=1")
        .body(ByteStream::from(small.clone()))
        .send()
        .await
        .unwrap();
    let parts = [random_bytes(PART_MIN, 41), random_bytes(777, 42)];
    let id = s3
        .create_multipart_upload()
        .bucket(&b)
        .key("multi")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let e1 = upload_part(&s3, &b, "multi", &id, 1, &parts[0]).await;
    let e2 = upload_part(&s3, &b, "multi", &id, 2, &parts[1]).await;
    let multi_etag = s3
        .complete_multipart_upload()
        .bucket(&b)
        .key("multi")
        .upload_id(&id)
        .multipart_upload(completed(&[(1, &e1), (2, &e2)]))
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_owned();
    // An upload left in progress across the restart.
    let pending = s3
        .create_multipart_upload()
        .bucket(&b)
        .key("pending")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let pending_etag = upload_part(&s3, &b, "pending", &pending, 1, b"before restart").await;

    enable_versioning(&s3, &vb, BucketVersioningStatus::Enabled).await;
    let v1 = put(&s3, &vb, "doc", b"first")
        .await
        .version_id()
        .unwrap()
        .to_owned();
    let v2 = put(&s3, &vb, "doc", b"second")
        .await
        .version_id()
        .unwrap()
        .to_owned();
    let gone = s3
        .delete_object()
        .bucket(&vb)
        .key("gone")
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_owned();
    s3.put_bucket_tagging()
        .bucket(&b)
        .tagging(
            Tagging::builder()
                .tag_set(tag("env", "test"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    server.restart();
    assert!(
        !server.banner.contains("first start"),
        "a restart must not create new credentials: {}",
        server.banner
    );
    assert_eq!(server.credentials.access_key_id, access_key);
    assert_eq!(server.credentials.secret_access_key, secret_key);
    let s3 = server.client();

    let got = s3
        .get_object()
        .bucket(&b)
        .key("small")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.metadata().unwrap().get("kept").map(String::as_str),
        Some("yes")
    );
    assert_eq!(got.content_type(), Some("text/x-kept"));
    assert_eq!(got.e_tag(), Some(quoted(&md5_hex(&small)).as_str()));
    assert_eq!(bytes_of(got.body).await, small);
    assert_eq!(
        tag_pairs(
            s3.get_object_tagging()
                .bucket(&b)
                .key("small")
                .send()
                .await
                .unwrap()
                .tag_set()
        )
        .len(),
        1
    );
    let got = s3
        .get_object()
        .bucket(&b)
        .key("multi")
        .send()
        .await
        .unwrap();
    assert_eq!(got.e_tag(), Some(multi_etag.as_str()));
    assert!(
        bytes_of(got.body).await == parts.concat(),
        "multipart bytes differ after restart"
    );
    let part2 = s3
        .get_object()
        .bucket(&b)
        .key("multi")
        .part_number(2)
        .send()
        .await
        .unwrap();
    assert_eq!(bytes_of(part2.body).await, parts[1]);

    let listed = s3
        .list_parts()
        .bucket(&b)
        .key("pending")
        .upload_id(&pending)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed
            .parts()
            .iter()
            .filter_map(|p| p.e_tag())
            .collect::<Vec<_>>(),
        [pending_etag.as_str()]
    );
    s3.complete_multipart_upload()
        .bucket(&b)
        .key("pending")
        .upload_id(&pending)
        .multipart_upload(completed(&[(1, &pending_etag)]))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&s3, &b, "pending").await, b"before restart");

    assert_eq!(
        s3.get_bucket_versioning()
            .bucket(&vb)
            .send()
            .await
            .unwrap()
            .status(),
        Some(&BucketVersioningStatus::Enabled)
    );
    assert_eq!(get(&s3, &vb, "doc").await, b"second");
    for (id, want) in [(&v1, b"first".as_slice()), (&v2, b"second".as_slice())] {
        assert_eq!(
            bytes_of(
                s3.get_object()
                    .bucket(&vb)
                    .key("doc")
                    .version_id(id)
                    .send()
                    .await
                    .unwrap()
                    .body
            )
            .await,
            want
        );
    }
    let listed = s3.list_object_versions().bucket(&vb).send().await.unwrap();
    assert_eq!(
        listed
            .delete_markers()
            .iter()
            .filter_map(|m| m.version_id())
            .collect::<Vec<_>>(),
        [gone.as_str()]
    );
    // Version ids keep increasing after a restart: the new version is the latest.
    let v3 = put(&s3, &vb, "doc", b"third")
        .await
        .version_id()
        .unwrap()
        .to_owned();
    assert!(v3 != v1 && v3 != v2);
    assert_eq!(get(&s3, &vb, "doc").await, b"third");
    let listed = s3
        .list_object_versions()
        .bucket(&vb)
        .prefix("doc")
        .send()
        .await
        .unwrap();
    let ids: Vec<&str> = listed
        .versions()
        .iter()
        .filter_map(|v| v.version_id())
        .collect();
    assert_eq!(ids, [v3.as_str(), v2.as_str(), v1.as_str()]);

    let tags = s3.get_bucket_tagging().bucket(&b).send().await.unwrap();
    assert_eq!(
        tag_pairs(tags.tag_set()),
        BTreeSet::from([("env".to_owned(), "test".to_owned())])
    );
    let names: BTreeSet<String> = s3
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .filter_map(|x| x.name().map(str::to_owned))
        .collect();
    assert_eq!(names, BTreeSet::from([b.clone(), vb.clone()]));
}

// ---------------------------------------------------------------- more edges

#[tokio::test]
async fn awkward_keys_round_trip_exactly() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "awkward").await;
    let keys = [
        "a/./b",
        "a/../b",
        "a//b",
        "/leading-slash",
        "..",
        ".",
        "trailing-dot.",
        "semi;colon",
        "q?uery=1&x",
        "hash#frag",
        "back\\slash",
        "tab\there",
        "new\nline",
        "colon:and@at",
        "(paren)[bracket]{brace}",
        "'quote\"double",
    ];
    for key in keys {
        put(&s3, &b, key, key.as_bytes()).await;
    }
    for key in keys {
        assert_eq!(get(&s3, &b, key).await, key.as_bytes(), "{key:?}");
    }
    let listed = list_v2_all(&s3, &b, None, None, 1000).await;
    let mut want: Vec<(bool, String)> = keys.iter().map(|k| (false, (*k).to_owned())).collect();
    want.sort();
    assert_eq!(listed, want);
}

#[tokio::test]
async fn conditional_put_races_and_missing_targets() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "races").await;

    // If-Match names an object that must exist; nothing is written (S3
    // implementations answer 412 PreconditionFailed or 404 NoSuchKey).
    let f = failure(
        s3.put_object()
            .bucket(&b)
            .key("absent")
            .if_match("\"0123456789abcdef0123456789abcdef\"")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await,
    );
    assert!(
        matches!(
            (f.code.as_deref(), f.status),
            (Some("PreconditionFailed"), 412) | (Some("NoSuchKey"), 404)
        ),
        "{f:?}"
    );
    expect_error(
        s3.get_object().bucket(&b).key("absent").send().await,
        "NoSuchKey",
        404,
    );

    // Of many concurrent create-only writes, exactly one wins.
    let attempts: Vec<_> = futures::future::join_all((0..16u8).map(|i| {
        let s3 = s3.clone();
        let b = b.clone();
        async move {
            let r = s3
                .put_object()
                .bucket(&b)
                .key("contended")
                .if_none_match("*")
                .body(ByteStream::from(vec![i; 1000]))
                .send()
                .await;
            (i, r)
        }
    }))
    .await;
    let mut winners = Vec::new();
    for (i, r) in attempts {
        match r {
            Ok(_) => winners.push(i),
            Err(e) => {
                let f = failure::<(), _>(Err(e));
                assert!(
                    matches!(
                        (f.code.as_deref(), f.status),
                        (Some("PreconditionFailed"), 412)
                            | (Some("ConditionalRequestConflict"), 409)
                    ),
                    "{f:?}"
                );
            }
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(get(&s3, &b, "contended").await, vec![winners[0]; 1000]);
}

#[tokio::test]
async fn composite_checksum_is_the_checksum_of_part_checksums() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "composite").await;
    let id = s3
        .create_multipart_upload()
        .bucket(&b)
        .key("summed")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let datas = [random_bytes(PART_MIN, 50), random_bytes(12_345, 51)];
    let mut parts = Vec::new();
    let mut raw_sums = Vec::new();
    for (i, data) in datas.iter().enumerate() {
        let n = i32::try_from(i + 1).unwrap();
        let out = s3
            .upload_part()
            .bucket(&b)
            .key("summed")
            .upload_id(&id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        let sum = out.checksum_crc32().unwrap().to_owned();
        raw_sums.extend(BASE64.decode(&sum).unwrap());
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .checksum_crc32(sum)
                .build(),
        );
    }
    let done = s3
        .complete_multipart_upload()
        .bucket(&b)
        .key("summed")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    // The SDK computes the CRC32 of what it uploads and the server checks it,
    // so uploading the concatenated part checksums yields the reference value.
    let reference = s3
        .put_object()
        .bucket(&b)
        .key("reference")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .body(ByteStream::from(raw_sums))
        .send()
        .await
        .unwrap();
    let want = format!("{}-2", reference.checksum_crc32().unwrap());
    assert_eq!(done.checksum_crc32(), Some(want.as_str()));
    let head = s3
        .head_object()
        .bucket(&b)
        .key("summed")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.checksum_crc32(), Some(want.as_str()));
}

#[tokio::test]
async fn versioned_copy_and_batch_delete() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "vcopy").await;
    enable_versioning(&s3, &b, BucketVersioningStatus::Enabled).await;
    let v1 = put(&s3, &b, "k", b"one")
        .await
        .version_id()
        .unwrap()
        .to_owned();
    put(&s3, &b, "k", b"two").await;

    // Copy a specific source version.
    let copied = s3
        .copy_object()
        .bucket(&b)
        .key("from-v1")
        .copy_source(format!("{b}/k?versionId={v1}"))
        .send()
        .await
        .unwrap();
    assert_eq!(copied.copy_source_version_id(), Some(v1.as_str()));
    assert!(copied.version_id().is_some());
    assert_eq!(get(&s3, &b, "from-v1").await, b"one");

    // Batch delete: a key gets a delete marker, a version id removes that version.
    let out = s3
        .delete_objects()
        .bucket(&b)
        .delete(
            Delete::builder()
                .objects(ObjectIdentifier::builder().key("from-v1").build().unwrap())
                .objects(
                    ObjectIdentifier::builder()
                        .key("k")
                        .version_id(&v1)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert!(out.errors().is_empty(), "{out:?}");
    let marker = out
        .deleted()
        .iter()
        .find(|d| d.key() == Some("from-v1"))
        .unwrap();
    assert_eq!(marker.delete_marker(), Some(true));
    assert!(marker.delete_marker_version_id().is_some());
    let version = out.deleted().iter().find(|d| d.key() == Some("k")).unwrap();
    assert_eq!(version.version_id(), Some(v1.as_str()));
    expect_error(
        s3.get_object().bucket(&b).key("from-v1").send().await,
        "NoSuchKey",
        404,
    );
    expect_error(
        s3.get_object()
            .bucket(&b)
            .key("k")
            .version_id(&v1)
            .send()
            .await,
        "NoSuchVersion",
        404,
    );
    assert_eq!(get(&s3, &b, "k").await, b"two");

    // At most 1,000 keys per request.
    let many: Vec<ObjectIdentifier> = (0..1001)
        .map(|i| {
            ObjectIdentifier::builder()
                .key(format!("k{i}"))
                .build()
                .unwrap()
        })
        .collect();
    expect_error(
        s3.delete_objects()
            .bucket(&b)
            .delete(Delete::builder().set_objects(Some(many)).build().unwrap())
            .send()
            .await,
        "MalformedXML",
        400,
    );
}

#[tokio::test]
async fn multipart_upload_listing_pages_and_part_copy_from_multipart() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "mplist").await;
    let mut uploads = Vec::new();
    for key in ["a", "b", "b", "c/d"] {
        let id = s3
            .create_multipart_upload()
            .bucket(&b)
            .key(key)
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_owned();
        uploads.push((key.to_owned(), id));
    }
    let mut walked = Vec::new();
    let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
    for _ in 0..20 {
        let page = s3
            .list_multipart_uploads()
            .bucket(&b)
            .max_uploads(1)
            .set_key_marker(key_marker.clone())
            .set_upload_id_marker(id_marker.clone())
            .send()
            .await
            .unwrap();
        assert!(page.uploads().len() <= 1);
        walked.extend(page.uploads().iter().map(|u| {
            (
                u.key().unwrap().to_owned(),
                u.upload_id().unwrap().to_owned(),
            )
        }));
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        id_marker = page.next_upload_id_marker().map(str::to_owned);
    }
    let mut want = uploads.clone();
    want.sort();
    assert_eq!(walked.len(), 4, "{walked:?}");
    let mut sorted_walk = walked.clone();
    sorted_walk.sort();
    assert_eq!(sorted_walk, want);
    assert_eq!(
        walked.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["a", "b", "b", "c/d"]
    );
    let rolled = s3
        .list_multipart_uploads()
        .bucket(&b)
        .prefix("c/")
        .send()
        .await
        .unwrap();
    assert_eq!(
        rolled
            .uploads()
            .iter()
            .filter_map(|u| u.key())
            .collect::<Vec<_>>(),
        ["c/d"]
    );

    // UploadPartCopy from a multipart source, across its part boundary.
    let parts = [random_bytes(PART_MIN, 60), random_bytes(1000, 61)];
    let (_, id) = &uploads[0];
    let e1 = upload_part(&s3, &b, "a", id, 1, &parts[0]).await;
    let e2 = upload_part(&s3, &b, "a", id, 2, &parts[1]).await;
    s3.complete_multipart_upload()
        .bucket(&b)
        .key("a")
        .upload_id(id)
        .multipart_upload(completed(&[(1, &e1), (2, &e2)]))
        .send()
        .await
        .unwrap();
    let whole = parts.concat();
    let (_, id) = &uploads[3];
    let copy = s3
        .upload_part_copy()
        .bucket(&b)
        .key("c/d")
        .upload_id(id)
        .part_number(1)
        .copy_source(format!("{b}/a"))
        .copy_source_range(format!("bytes={}-{}", PART_MIN - 10, PART_MIN + 9))
        .send()
        .await
        .unwrap();
    let e = copy.copy_part_result().unwrap().e_tag().unwrap().to_owned();
    assert_eq!(e, quoted(&md5_hex(&whole[PART_MIN - 10..PART_MIN + 10])));
    s3.complete_multipart_upload()
        .bucket(&b)
        .key("c/d")
        .upload_id(id)
        .multipart_upload(completed(&[(1, &e)]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        get(&s3, &b, "c/d").await,
        &whole[PART_MIN - 10..PART_MIN + 10]
    );
    // Copying a whole multipart object gives a single-part copy with the same bytes.
    let copied = s3
        .copy_object()
        .bucket(&b)
        .key("a-copy")
        .copy_source(format!("{b}/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        copied.copy_object_result().and_then(|r| r.e_tag()),
        Some(quoted(&md5_hex(&whole)).as_str())
    );
    assert!(get(&s3, &b, "a-copy").await == whole);
}

#[tokio::test]
async fn content_encoding_and_ranged_head() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "encoding").await;
    let body = random_bytes(4096, 70);
    s3.put_object()
        .bucket(&b)
        .key("gz")
        .content_encoding("gzip")
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let got = s3.get_object().bucket(&b).key("gz").send().await.unwrap();
    assert_eq!(got.content_encoding(), Some("gzip"));
    assert_eq!(bytes_of(got.body).await, body);
    let head = s3
        .head_object()
        .bucket(&b)
        .key("gz")
        .range("bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(100));
    assert_eq!(head.content_range(), Some("bytes 100-199/4096"));
    // A GET of an unversioned object by the null version id.
    let got = s3
        .get_object()
        .bucket(&b)
        .key("gz")
        .version_id("null")
        .send()
        .await
        .unwrap();
    assert_eq!(bytes_of(got.body).await, body);
}

#[tokio::test]
async fn listings_hide_deleted_keys_and_v1_pages_by_next_marker() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "hidden").await;
    enable_versioning(&s3, &b, BucketVersioningStatus::Enabled).await;
    for i in 0..10 {
        put(&s3, &b, &format!("k{i}"), b"x").await;
        if i % 2 == 0 {
            s3.delete_object()
                .bucket(&b)
                .key(format!("k{i}"))
                .send()
                .await
                .unwrap();
        }
    }
    for key in ["dir/a", "dir/b", "gone/x", "gone/y"] {
        put(&s3, &b, key, b"x").await;
    }
    for key in ["dir/a", "gone/x", "gone/y"] {
        s3.delete_object().bucket(&b).key(key).send().await.unwrap();
    }
    // Delete markers are neither listed nor counted against max-keys, and a
    // prefix whose keys are all deleted does not appear.
    let listed = list_v2_all(&s3, &b, None, Some("/"), 2).await;
    let want: Vec<(bool, String)> = vec![
        (true, "dir/".into()),
        (false, "k1".into()),
        (false, "k3".into()),
        (false, "k5".into()),
        (false, "k7".into()),
        (false, "k9".into()),
    ];
    assert_eq!(listed, want);
    let flat = list_v2_all(&s3, &b, None, None, 3).await;
    assert_eq!(
        flat.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>(),
        ["dir/b", "k1", "k3", "k5", "k7", "k9"]
    );

    // ListObjects v1 with a delimiter must be paged by NextMarker (the last
    // entry may be a common prefix).
    let mut entries = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..20 {
        let page = s3
            .list_objects()
            .bucket(&b)
            .delimiter("/")
            .max_keys(1)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        entries.extend(
            page.contents()
                .iter()
                .map(|o| (false, o.key().unwrap().to_owned())),
        );
        entries.extend(
            page.common_prefixes()
                .iter()
                .map(|p| (true, p.prefix().unwrap().to_owned())),
        );
        if page.is_truncated() != Some(true) {
            break;
        }
        marker = Some(
            page.next_marker()
                .expect("a truncated v1 page with a delimiter needs NextMarker")
                .to_owned(),
        );
    }
    assert_eq!(entries, want);
}

#[tokio::test]
async fn copy_source_keys_are_url_decoded() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "copyenc").await;
    let key = "dir with space/ünï+cödé%.txt";
    put(&s3, &b, key, b"payload").await;
    let encoded: String = key
        .bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, b'/' | b'-' | b'_' | b'.') {
                char::from(c).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect();
    s3.copy_object()
        .bucket(&b)
        .key("copy")
        .copy_source(format!("{b}/{encoded}"))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&s3, &b, "copy").await, b"payload");
    let id = s3
        .create_multipart_upload()
        .bucket(&b)
        .key("mp")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let part = s3
        .upload_part_copy()
        .bucket(&b)
        .key("mp")
        .upload_id(&id)
        .part_number(1)
        .copy_source(format!("{b}/{encoded}"))
        .send()
        .await
        .unwrap();
    let e = part.copy_part_result().unwrap().e_tag().unwrap().to_owned();
    s3.complete_multipart_upload()
        .bucket(&b)
        .key("mp")
        .upload_id(&id)
        .multipart_upload(completed(&[(1, &e)]))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&s3, &b, "mp").await, b"payload");
}

#[tokio::test]
async fn multipart_digests_and_conditional_completion() {
    let server = Server::start();
    let s3 = server.client();
    let b = new_bucket(&s3, "mpcond").await;
    put(&s3, &b, "exists", b"old").await;
    let id = s3
        .create_multipart_upload()
        .bucket(&b)
        .key("exists")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    expect_error(
        s3.upload_part()
            .bucket(&b)
            .key("exists")
            .upload_id(&id)
            .part_number(1)
            .content_md5(BASE64.encode(md5::Md5::digest(b"other")))
            .body(ByteStream::from_static(b"part"))
            .send()
            .await,
        "BadDigest",
        400,
    );
    assert!(
        s3.list_parts()
            .bucket(&b)
            .key("exists")
            .upload_id(&id)
            .send()
            .await
            .unwrap()
            .parts()
            .is_empty()
    );
    let e = upload_part(&s3, &b, "exists", &id, 1, b"new").await;
    expect_error(
        s3.complete_multipart_upload()
            .bucket(&b)
            .key("exists")
            .upload_id(&id)
            .if_none_match("*")
            .multipart_upload(completed(&[(1, &e)]))
            .send()
            .await,
        "PreconditionFailed",
        412,
    );
    assert_eq!(get(&s3, &b, "exists").await, b"old");
    s3.complete_multipart_upload()
        .bucket(&b)
        .key("exists")
        .upload_id(&id)
        .multipart_upload(completed(&[(1, &e)]))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&s3, &b, "exists").await, b"new");
}
