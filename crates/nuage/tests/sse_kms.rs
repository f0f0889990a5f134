//! S3 SSE-KMS against the real binary: objects stored under a customer KMS
//! key (created and managed with the aws CLI), reported as `aws:kms` with the
//! key's ARN, and unreadable while the key is disabled or pending deletion.
//!
//! The CLI comes from `scripts/install-test-deps.sh` (or `NUAGE_AWS_CLI`).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use common::failure;
use common::get_bytes as get;
use std::path::Path;

/// `aws --output text kms ARGS` as the administrator; its trimmed output.
fn kms(server: &common::Server, home: &Path, args: &[&str]) -> String {
    let mut all = vec!["kms"];
    all.extend_from_slice(args);
    common::aws_ok(server, home, &all)
}

#[tokio::test]
async fn sse_kms_objects_follow_their_customer_key() {
    let server = common::Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let s3 = server.client();
    let bucket = "sse-kms";
    s3.create_bucket().bucket(bucket).send().await.unwrap();

    let key_id = kms(
        &server,
        home,
        &["create-key", "--query", "KeyMetadata.KeyId"],
    );
    let key_arn = kms(
        &server,
        home,
        &[
            "describe-key",
            "--key-id",
            &key_id,
            "--query",
            "KeyMetadata.Arn",
        ],
    );
    kms(
        &server,
        home,
        &[
            "create-alias",
            "--alias-name",
            "alias/s3",
            "--target-key-id",
            &key_id,
        ],
    );

    // An SSE-S3 object beside them, unaffected throughout.
    let plain = common::random_bytes(10_000, 1);
    let put = s3
        .put_object()
        .bucket(bucket)
        .key("plain")
        .body(plain.clone().into())
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.server_side_encryption(),
        Some(&ServerSideEncryption::Aes256)
    );
    assert_eq!(put.ssekms_key_id(), None);

    // PUT under the key, named by id, ARN or alias.
    let secret = common::random_bytes(300_000, 2);
    for (object, named) in [
        ("by-id", key_id.as_str()),
        ("by-arn", &key_arn),
        ("by-alias", "alias/s3"),
    ] {
        let put = s3
            .put_object()
            .bucket(bucket)
            .key(object)
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(named)
            .body(secret.clone().into())
            .send()
            .await
            .unwrap();
        assert_eq!(
            put.server_side_encryption(),
            Some(&ServerSideEncryption::AwsKms)
        );
        assert_eq!(put.ssekms_key_id(), Some(key_arn.as_str()));
        let head = s3
            .head_object()
            .bucket(bucket)
            .key(object)
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.server_side_encryption(),
            Some(&ServerSideEncryption::AwsKms)
        );
        assert_eq!(head.ssekms_key_id(), Some(key_arn.as_str()));
        assert_eq!(get(&s3, bucket, object).await, secret);
    }
    let head = s3
        .head_object()
        .bucket(bucket)
        .key("plain")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption(),
        Some(&ServerSideEncryption::Aes256)
    );
    assert_eq!(head.ssekms_key_id(), None);

    // An encryption context is accepted.
    s3.put_object()
        .bucket(bucket)
        .key("with-context")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(&key_id)
        .ssekms_encryption_context("eyJwdXJwb3NlIjoidGVzdCJ9")
        .body(b"ctx".to_vec().into())
        .send()
        .await
        .unwrap();

    // No key, an unknown key, another account's key: refused.
    let (code, status) = failure(
        s3.put_object()
            .bucket(bucket)
            .key("no-key")
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .body(b"x".to_vec().into())
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("InvalidArgument", 400));
    let region = &server.credentials.region;
    for unknown in [
        "0b7c4b2a-1c2d-4e5f-8a9b-0c1d2e3f4a5b".to_owned(),
        "alias/none".to_owned(),
        format!("arn:aws:kms:{region}:999999999999:key/{key_id}"),
    ] {
        let (code, status) = failure(
            s3.put_object()
                .bucket(bucket)
                .key("unknown-key")
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(unknown)
                .body(b"x".to_vec().into())
                .send()
                .await,
        );
        assert_eq!((code.as_str(), status), ("KMS.NotFoundException", 400));
    }

    // CopyObject into SSE-KMS, from SSE-KMS back to SSE-S3.
    let copy = s3
        .copy_object()
        .bucket(bucket)
        .key("plain-copy")
        .copy_source(format!("{bucket}/plain"))
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id("alias/s3")
        .send()
        .await
        .unwrap();
    assert_eq!(
        copy.server_side_encryption(),
        Some(&ServerSideEncryption::AwsKms)
    );
    assert_eq!(copy.ssekms_key_id(), Some(key_arn.as_str()));
    assert_eq!(get(&s3, bucket, "plain-copy").await, plain);
    let copy = s3
        .copy_object()
        .bucket(bucket)
        .key("secret-copy")
        .copy_source(format!("{bucket}/by-id"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        copy.server_side_encryption(),
        Some(&ServerSideEncryption::Aes256)
    );
    assert_eq!(get(&s3, bucket, "secret-copy").await, secret);

    // Multipart under the key.
    let create = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key("multi")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(&key_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        create.server_side_encryption(),
        Some(&ServerSideEncryption::AwsKms)
    );
    assert_eq!(create.ssekms_key_id(), Some(key_arn.as_str()));
    let upload_id = create.upload_id().unwrap();
    let first = common::random_bytes(5 * 1024 * 1024, 3);
    let second = common::random_bytes(1000, 4);
    let mut parts = Vec::new();
    for (n, body) in [(1, &first), (2, &second)] {
        let part = s3
            .upload_part()
            .bucket(bucket)
            .key("multi")
            .upload_id(upload_id)
            .part_number(n)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            part.server_side_encryption(),
            Some(&ServerSideEncryption::AwsKms)
        );
        assert_eq!(part.ssekms_key_id(), Some(key_arn.as_str()));
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(part.e_tag().unwrap())
                .build(),
        );
    }
    let done = s3
        .complete_multipart_upload()
        .bucket(bucket)
        .key("multi")
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        done.server_side_encryption(),
        Some(&ServerSideEncryption::AwsKms)
    );
    assert_eq!(done.ssekms_key_id(), Some(key_arn.as_str()));
    let mut whole = first.clone();
    whole.extend_from_slice(&second);
    assert_eq!(get(&s3, bucket, "multi").await, whole);

    // Revoke the key and the data is gone: reads and writes refused.
    kms(&server, home, &["disable-key", "--key-id", &key_id]);
    for object in ["by-id", "by-alias", "multi", "plain-copy"] {
        let (code, status) = failure(s3.get_object().bucket(bucket).key(object).send().await);
        assert_eq!(
            (code.as_str(), status),
            ("KMS.DisabledException", 400),
            "{object}"
        );
    }
    let (code, status) = failure(
        s3.put_object()
            .bucket(bucket)
            .key("while-disabled")
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(&key_id)
            .body(b"x".to_vec().into())
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("KMS.DisabledException", 400));
    // HEAD still describes the object; SSE-S3 objects read as before.
    let head = s3
        .head_object()
        .bucket(bucket)
        .key("by-id")
        .send()
        .await
        .unwrap();
    assert_eq!(head.ssekms_key_id(), Some(key_arn.as_str()));
    assert_eq!(get(&s3, bucket, "plain").await, plain);
    assert_eq!(get(&s3, bucket, "secret-copy").await, secret);

    kms(&server, home, &["enable-key", "--key-id", &key_id]);
    assert_eq!(get(&s3, bucket, "by-id").await, secret);
    assert_eq!(get(&s3, bucket, "multi").await, whole);

    // Pending deletion: refused too, until the deletion is cancelled.
    kms(
        &server,
        home,
        &[
            "schedule-key-deletion",
            "--key-id",
            &key_id,
            "--pending-window-in-days",
            "7",
        ],
    );
    let (code, status) = failure(s3.get_object().bucket(bucket).key("by-arn").send().await);
    assert_eq!(
        (code.as_str(), status),
        ("KMS.KMSInvalidStateException", 400)
    );
    assert_eq!(get(&s3, bucket, "plain").await, plain);
    kms(&server, home, &["cancel-key-deletion", "--key-id", &key_id]);
    // A cancelled deletion leaves the key disabled.
    let (code, _) = failure(s3.get_object().bucket(bucket).key("by-arn").send().await);
    assert_eq!(code, "KMS.DisabledException");
    kms(&server, home, &["enable-key", "--key-id", &key_id]);
    assert_eq!(get(&s3, bucket, "by-arn").await, secret);
}
