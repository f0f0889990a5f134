//! Key access justifications through the real binary: the tenant narrows the
//! reasons its data key accepts with the KMS extension operation
//! `PutKeyAccessReasons`, and its own S3 reads (reason
//! `CUSTOMER_INITIATED_ACCESS`) are then refused with 403 AccessDenied while
//! writes go on; restoring the list restores reads.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use aws_sdk_s3::error::ProvideErrorMetadata as _;
use common::Server;
use common::kms::kms_call;
use serde_json::json;

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
