//! Bucket default encryption and SSE-KMS encryption contexts against the
//! real binary, with the AWS SDK for Rust and the aws CLI
//! (`scripts/install-test-deps.sh`, or `NUAGE_AWS_CLI`): a default of
//! `aws:kms` applies to PUT, copy and multipart writes that ask for nothing,
//! under the same `kms:GenerateDataKey` authorization as an explicit
//! request, with the encryption context as condition keys.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use common::aws_ok as aws;
use common::failure;
use common::get_bytes as get;

fn configuration(
    algorithm: ServerSideEncryption,
    key: Option<&str>,
    bucket_key: Option<bool>,
) -> ServerSideEncryptionConfiguration {
    ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(
                    ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(algorithm)
                        .set_kms_master_key_id(key.map(str::to_owned))
                        .build()
                        .unwrap(),
                )
                .set_bucket_key_enabled(bucket_key)
                .build(),
        )
        .build()
        .unwrap()
}

/// The pairs of a base64 JSON encryption context.
fn context_of(header: Option<&str>) -> std::collections::BTreeMap<String, String> {
    serde_json::from_slice(&BASE64.decode(header.expect("a context")).unwrap()).unwrap()
}

#[tokio::test]
async fn default_kms_encryption_applies_to_writes_that_ask_for_nothing() {
    let server = common::Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let s3 = server.client();
    let bucket = "defaults";
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let key_id = aws(
        &server,
        home,
        &["kms", "create-key", "--query", "KeyMetadata.KeyId"],
    );
    let key_arn = aws(
        &server,
        home,
        &[
            "kms",
            "describe-key",
            "--key-id",
            &key_id,
            "--query",
            "KeyMetadata.Arn",
        ],
    );
    aws(
        &server,
        home,
        &[
            "kms",
            "create-alias",
            "--alias-name",
            "alias/bucket-default",
            "--target-key-id",
            &key_id,
        ],
    );

    // The built-in default is SSE-S3.
    let got = s3
        .get_bucket_encryption()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    let rule = &got.server_side_encryption_configuration().unwrap().rules()[0];
    let default = rule.apply_server_side_encryption_by_default().unwrap();
    assert_eq!(default.sse_algorithm(), &ServerSideEncryption::Aes256);
    assert_eq!(default.kms_master_key_id(), None);

    // Refused configurations change nothing.
    let (code, status) = failure(
        s3.put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(configuration(
                ServerSideEncryption::AwsKms,
                None,
                None,
            ))
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("InvalidArgument", 400));
    let (code, status) = failure(
        s3.put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(configuration(
                ServerSideEncryption::AwsKmsDsse,
                Some(&key_id),
                None,
            ))
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("NotImplemented", 501));
    let (code, status) = failure(
        s3.put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(configuration(
                ServerSideEncryption::AwsKms,
                Some("not a key"),
                None,
            ))
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("InvalidArgument", 400));

    // aws:kms with an alias: returned as put.
    s3.put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(configuration(
            ServerSideEncryption::AwsKms,
            Some("alias/bucket-default"),
            Some(true),
        ))
        .send()
        .await
        .unwrap();
    let got = s3
        .get_bucket_encryption()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    let rule = &got.server_side_encryption_configuration().unwrap().rules()[0];
    let default = rule.apply_server_side_encryption_by_default().unwrap();
    assert_eq!(default.sse_algorithm(), &ServerSideEncryption::AwsKms);
    assert_eq!(default.kms_master_key_id(), Some("alias/bucket-default"));
    assert_eq!(rule.bucket_key_enabled(), Some(true));

    // PUT without SSE headers: under the default key, with the default context.
    let data = common::random_bytes(100_000, 1);
    let put = s3
        .put_object()
        .bucket(bucket)
        .key("doc")
        .body(data.clone().into())
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.server_side_encryption(),
        Some(&ServerSideEncryption::AwsKms)
    );
    assert_eq!(put.ssekms_key_id(), Some(key_arn.as_str()));
    let context = context_of(put.ssekms_encryption_context());
    assert_eq!(
        context.get("aws:s3:arn").map(String::as_str),
        Some("arn:aws:s3:::defaults/doc")
    );
    let head = s3
        .head_object()
        .bucket(bucket)
        .key("doc")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption(),
        Some(&ServerSideEncryption::AwsKms)
    );
    assert_eq!(head.ssekms_key_id(), Some(key_arn.as_str()));
    assert_eq!(get(&s3, bucket, "doc").await, data);
    // An explicit AES256 still gets SSE-S3.
    let put = s3
        .put_object()
        .bucket(bucket)
        .key("explicit")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.server_side_encryption(),
        Some(&ServerSideEncryption::Aes256)
    );
    assert_eq!(put.ssekms_key_id(), None);

    // CopyObject without SSE headers.
    let copy = s3
        .copy_object()
        .bucket(bucket)
        .key("doc-copy")
        .copy_source(format!("{bucket}/explicit"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        copy.server_side_encryption(),
        Some(&ServerSideEncryption::AwsKms)
    );
    assert_eq!(copy.ssekms_key_id(), Some(key_arn.as_str()));
    assert_eq!(
        context_of(copy.ssekms_encryption_context())
            .get("aws:s3:arn")
            .map(String::as_str),
        Some("arn:aws:s3:::defaults/doc-copy")
    );
    assert_eq!(get(&s3, bucket, "doc-copy").await, b"x");

    // Multipart without SSE headers.
    let create = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key("multi")
        .send()
        .await
        .unwrap();
    assert_eq!(
        create.server_side_encryption(),
        Some(&ServerSideEncryption::AwsKms)
    );
    assert_eq!(create.ssekms_key_id(), Some(key_arn.as_str()));
    let upload_id = create.upload_id().unwrap();
    let first = common::random_bytes(5 * 1024 * 1024, 2);
    let second = common::random_bytes(1000, 3);
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

    // The default key needs kms:GenerateDataKey like an explicit one: a
    // user allowed s3:* but no KMS action cannot write by default, and the
    // encryption context is a condition key.
    let policy = r#"{"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}"#;
    aws(
        &server,
        home,
        &["iam", "create-user", "--user-name", "writer"],
    );
    aws(
        &server,
        home,
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            "writer",
            "--policy-name",
            "s3",
            "--policy-document",
            policy,
        ],
    );
    let keys = aws(
        &server,
        home,
        &[
            "iam",
            "create-access-key",
            "--user-name",
            "writer",
            "--query",
            "AccessKey.[AccessKeyId,SecretAccessKey]",
        ],
    );
    let (access_key, secret) = keys.split_once(char::is_whitespace).unwrap();
    let writer = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(&server.endpoint)
            .region(aws_sdk_s3::config::Region::new(
                server.credentials.region.clone(),
            ))
            .credentials_provider(aws_credential_types::Credentials::new(
                access_key.trim(),
                secret.trim(),
                None,
                None,
                "writer",
            ))
            .force_path_style(true)
            .build(),
    );
    let (code, status) = failure(
        writer
            .put_object()
            .bucket(bucket)
            .key("by-writer")
            .body(b"w".to_vec().into())
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("AccessDenied", 403));
    let kms_policy = r#"{"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Resource": "*"},
        {"Effect": "Deny", "Action": "kms:GenerateDataKey", "Resource": "*",
         "Condition": {"StringEquals": {"kms:EncryptionContext:purpose": "forbidden"}}}]}"#;
    aws(
        &server,
        home,
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            "writer",
            "--policy-name",
            "kms",
            "--policy-document",
            kms_policy,
        ],
    );
    // The IAM change may take a moment to reach the S3 front end's cache:
    // wait for the write to be allowed (bounded).
    let mut allowed = false;
    for _ in 0..50 {
        if writer
            .put_object()
            .bucket(bucket)
            .key("by-writer")
            .body(b"w".to_vec().into())
            .send()
            .await
            .is_ok()
        {
            allowed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        allowed,
        "the writer could not write once allowed kms:GenerateDataKey"
    );
    let forbidden = BASE64.encode(r#"{"purpose":"forbidden"}"#);
    let (code, status) = failure(
        writer
            .put_object()
            .bucket(bucket)
            .key("by-writer")
            .ssekms_encryption_context(&forbidden)
            .body(b"w".to_vec().into())
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("AccessDenied", 403));
    let fine = BASE64.encode(r#"{"purpose":"fine"}"#);
    let put = writer
        .put_object()
        .bucket(bucket)
        .key("by-writer")
        .ssekms_encryption_context(&fine)
        .body(b"w".to_vec().into())
        .send()
        .await
        .unwrap();
    let context = context_of(put.ssekms_encryption_context());
    assert_eq!(context.get("purpose").map(String::as_str), Some("fine"));
    assert_eq!(
        context.get("aws:s3:arn").map(String::as_str),
        Some("arn:aws:s3:::defaults/by-writer")
    );
    assert_eq!(get(&writer, bucket, "by-writer").await, b"w");

    // A malformed context is refused.
    for bad in ["%%%", &BASE64.encode("[1,2]"), &BASE64.encode(r#"{"n":1}"#)] {
        let (code, status) = failure(
            s3.put_object()
                .bucket(bucket)
                .key("bad-context")
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(&key_id)
                .ssekms_encryption_context(bad)
                .body(b"x".to_vec().into())
                .send()
                .await,
        );
        assert_eq!((code.as_str(), status), ("InvalidArgument", 400), "{bad}");
    }

    // Delete: back to SSE-S3.
    s3.delete_bucket_encryption()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    let got = s3
        .get_bucket_encryption()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    let rule = &got.server_side_encryption_configuration().unwrap().rules()[0];
    assert_eq!(
        rule.apply_server_side_encryption_by_default()
            .unwrap()
            .sse_algorithm(),
        &ServerSideEncryption::Aes256
    );
    let put = s3
        .put_object()
        .bucket(bucket)
        .key("after")
        .body(b"y".to_vec().into())
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.server_side_encryption(),
        Some(&ServerSideEncryption::Aes256)
    );
    // Objects written under the default stay readable.
    assert_eq!(get(&s3, bucket, "doc").await, data);
    assert_eq!(get(&s3, bucket, "multi").await, whole);
}

#[tokio::test]
async fn bucket_encryption_with_the_aws_cli() {
    let server = common::Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    aws(&server, home, &["s3", "mb", "s3://cli-defaults"]);
    let key_id = aws(
        &server,
        home,
        &["kms", "create-key", "--query", "KeyMetadata.KeyId"],
    );
    let key_arn = aws(
        &server,
        home,
        &[
            "kms",
            "describe-key",
            "--key-id",
            &key_id,
            "--query",
            "KeyMetadata.Arn",
        ],
    );
    let config = format!(
        r#"{{"Rules": [{{"ApplyServerSideEncryptionByDefault": {{"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "{key_arn}"}}, "BucketKeyEnabled": false}}]}}"#
    );
    aws(
        &server,
        home,
        &[
            "s3api",
            "put-bucket-encryption",
            "--bucket",
            "cli-defaults",
            "--server-side-encryption-configuration",
            &config,
        ],
    );
    let got = aws(
        &server,
        home,
        &[
            "s3api",
            "get-bucket-encryption",
            "--bucket",
            "cli-defaults",
            "--output",
            "json",
        ],
    );
    assert!(got.contains("aws:kms") && got.contains(&key_arn), "{got}");
    let file = home.join("f.txt");
    std::fs::write(&file, "contents").unwrap();
    aws(
        &server,
        home,
        &[
            "s3",
            "cp",
            &file.display().to_string(),
            "s3://cli-defaults/f.txt",
        ],
    );
    let head = aws(
        &server,
        home,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "cli-defaults",
            "--key",
            "f.txt",
            "--query",
            "[ServerSideEncryption,SSEKMSKeyId]",
        ],
    );
    assert_eq!(
        head.split_whitespace().collect::<Vec<_>>(),
        ["aws:kms", key_arn.as_str()]
    );
    aws(
        &server,
        home,
        &[
            "s3api",
            "delete-bucket-encryption",
            "--bucket",
            "cli-defaults",
        ],
    );
    let got = aws(
        &server,
        home,
        &[
            "s3api",
            "get-bucket-encryption",
            "--bucket",
            "cli-defaults",
            "--query",
            "ServerSideEncryptionConfiguration.Rules[0].ApplyServerSideEncryptionByDefault.SSEAlgorithm",
        ],
    );
    assert_eq!(got, "AES256");
    let down = home.join("down.txt");
    aws(
        &server,
        home,
        &[
            "s3",
            "cp",
            "s3://cli-defaults/f.txt",
            &down.display().to_string(),
        ],
    );
    assert_eq!(std::fs::read_to_string(&down).unwrap(), "contents");
}
