//! Key access justifications through the real binary: the tenant narrows the
//! reasons its data key accepts with the KMS extension operation
//! `PutKeyAccessReasons`, and its own S3 reads (reason
//! `CUSTOMER_INITIATED_ACCESS`) are then refused with 403 AccessDenied while
//! writes go on; restoring the list restores reads.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use aws_sdk_s3::error::ProvideErrorMetadata as _;
use common::Server;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

/// A KMS JSON request signed with SigV4 for `kms` by the default admin,
/// sent over plain HTTP: returns the status and the JSON body.
fn kms_call(server: &Server, operation: &str, body: &Value) -> (u16, Value) {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let creds = &server.credentials;
    let identity = aws_credential_types::Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        None,
        None,
        "justifications-test",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&creds.region)
        .name("kms")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let host = server.endpoint.trim_start_matches("http://").to_owned();
    let url = format!("{}/", server.endpoint);
    let target = format!("TrentService.{operation}");
    let payload = body.to_string();
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target.as_str()),
    ];
    let request = SignableRequest::new(
        "POST",
        &url,
        headers.iter().copied(),
        SignableBody::Bytes(payload.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();

    let mut stream = std::net::TcpStream::connect(&host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = String::from("POST / HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers.iter().copied().chain(instructions.headers()) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", payload.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(payload.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status_line = String::from_utf8_lossy(&response[..split]).into_owned();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let body = &response[split + 4..];
    let body = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
    };
    (status, body)
}

async fn read(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    object.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test]
async fn the_tenant_decides_which_reasons_may_unwrap_its_data() {
    let server = Server::start();
    let s3 = server.client();
    let bucket = common::bucket_name("justifications");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    s3.put_object()
        .bucket(&bucket)
        .key("doc")
        .body(b"sovereign bytes".to_vec().into())
        .send()
        .await
        .unwrap();
    assert_eq!(read(&s3, &bucket, "doc").await, b"sovereign bytes");

    // The defaults include the tenant's own access.
    let (status, got) = kms_call(&server, "GetKeyAccessReasons", &json!({}));
    assert_eq!(status, 200, "{got}");
    let defaults = got["AllowedReasons"].clone();
    assert!(
        defaults
            .as_array()
            .unwrap()
            .contains(&json!("CUSTOMER_INITIATED_ACCESS")),
        "{got}"
    );

    // Unknown reasons are a validation error and change nothing.
    let (status, refused) = kms_call(
        &server,
        "PutKeyAccessReasons",
        &json!({ "AllowedReasons": ["BECAUSE_I_SAID_SO"] }),
    );
    assert_eq!(
        (status, refused["__type"].as_str()),
        (400, Some("ValidationException")),
        "{refused}"
    );

    // Only the operator's automated systems may unwrap the tenant's data now.
    let (status, put) = kms_call(
        &server,
        "PutKeyAccessReasons",
        &json!({ "AllowedReasons": ["OPERATOR_INITIATED_SYSTEM_OPERATION"] }),
    );
    assert_eq!(status, 200, "{put}");
    let err = s3
        .get_object()
        .bucket(&bucket)
        .key("doc")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    let err = err.into_service_error();
    assert_eq!(err.code(), Some("AccessDenied"), "{err:?}");
    let message = err.message().unwrap_or_default();
    assert!(message.contains("CUSTOMER_INITIATED_ACCESS"), "{message}");

    // Writes are not affected; the new object is locked as well.
    s3.put_object()
        .bucket(&bucket)
        .key("later")
        .body(b"written while locked".to_vec().into())
        .send()
        .await
        .unwrap();
    assert!(
        s3.get_object()
            .bucket(&bucket)
            .key("later")
            .send()
            .await
            .is_err()
    );

    // Restoring the list restores reads.
    let (status, put) = kms_call(
        &server,
        "PutKeyAccessReasons",
        &json!({ "AllowedReasons": defaults }),
    );
    assert_eq!(status, 200, "{put}");
    assert_eq!(read(&s3, &bucket, "doc").await, b"sovereign bytes");
    assert_eq!(read(&s3, &bucket, "later").await, b"written while locked");
}
