//! SSE-S3 and SSE-KMS through the aws CLI against the real binary: a
//! multipart upload under a customer KMS key (the CLI splits files over
//! 8 MiB), ranged reads across a part boundary, server-side copies that change
//! the encryption, and a disabled key stopping the CLI's reads.
//!
//! The CLI comes from `scripts/install-test-deps.sh` (or `NUAGE_AWS_CLI`).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use common::{aws_err, aws_ok};

#[tokio::test]
async fn the_aws_cli_stores_reads_and_copies_sse_s3_and_sse_kms_objects() {
    let server = common::Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let bucket = common::bucket_name("sse-cli");
    let url = |key: &str| format!("s3://{bucket}/{key}");
    aws_ok(&server, home, &["s3", "mb", &format!("s3://{bucket}")]);
    let key_id = aws_ok(
        &server,
        home,
        &["kms", "create-key", "--query", "KeyMetadata.KeyId"],
    );
    let key_arn = aws_ok(
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
    aws_ok(
        &server,
        home,
        &[
            "kms",
            "create-alias",
            "--alias-name",
            "alias/cli",
            "--target-key-id",
            &key_id,
        ],
    );

    // 20 MiB: the CLI uploads it in three parts (8 + 8 + 4 MiB).
    let big = common::random_bytes(20 << 20, 41);
    let big_path = home.join("big.bin");
    std::fs::write(&big_path, &big).unwrap();
    aws_ok(
        &server,
        home,
        &[
            "s3",
            "cp",
            big_path.to_str().unwrap(),
            &url("big-kms"),
            "--sse",
            "aws:kms",
            "--sse-kms-key-id",
            "alias/cli",
        ],
    );
    let head = |key: &str| {
        aws_ok(
            &server,
            home,
            &[
                "s3api",
                "head-object",
                "--bucket",
                &bucket,
                "--key",
                key,
                "--query",
                "[ServerSideEncryption, SSEKMSKeyId, ETag]",
            ],
        )
    };
    let described = head("big-kms");
    assert!(
        described.starts_with(&format!("aws:kms\t{key_arn}\t")),
        "{described}"
    );
    assert!(
        described.ends_with("-3\""),
        "uploaded in three parts: {described}"
    );

    let out = home.join("out.bin");
    aws_ok(
        &server,
        home,
        &["s3", "cp", &url("big-kms"), out.to_str().unwrap()],
    );
    assert!(std::fs::read(&out).unwrap() == big, "whole-object read");

    // Ranges: inside the first chunk, and across the first part boundary
    // (which is also a 64 KiB chunk boundary of neither blob's start).
    for (first, last) in [(1_000usize, 2_999usize), (8_388_000, 8_390_000)] {
        let range = format!("bytes={first}-{last}");
        aws_ok(
            &server,
            home,
            &[
                "s3api",
                "get-object",
                "--bucket",
                &bucket,
                "--key",
                "big-kms",
                "--range",
                &range,
                out.to_str().unwrap(),
            ],
        );
        assert!(
            std::fs::read(&out).unwrap() == big[first..=last],
            "range {range}"
        );
    }

    // A server-side copy that changes the encryption to SSE-S3 (the CLI
    // copies an object this size part by part with UploadPartCopy).
    aws_ok(
        &server,
        home,
        &[
            "s3",
            "cp",
            &url("big-kms"),
            &url("big-s3"),
            "--sse",
            "AES256",
        ],
    );
    let described = head("big-s3");
    assert!(described.starts_with("AES256\tNone\t"), "{described}");
    aws_ok(
        &server,
        home,
        &["s3", "cp", &url("big-s3"), out.to_str().unwrap()],
    );
    assert!(std::fs::read(&out).unwrap() == big, "copied to SSE-S3");

    // A small object: SSE-S3 by default, then copied (CopyObject) under the
    // KMS key by ARN.
    let small = common::random_bytes(100_000, 42);
    let small_path = home.join("small.bin");
    std::fs::write(&small_path, &small).unwrap();
    aws_ok(
        &server,
        home,
        &["s3", "cp", small_path.to_str().unwrap(), &url("small")],
    );
    assert!(head("small").starts_with("AES256\tNone\t"));
    aws_ok(
        &server,
        home,
        &[
            "s3",
            "cp",
            &url("small"),
            &url("small-kms"),
            "--sse",
            "aws:kms",
            "--sse-kms-key-id",
            &key_arn,
        ],
    );
    assert!(head("small-kms").starts_with(&format!("aws:kms\t{key_arn}\t")));
    aws_ok(
        &server,
        home,
        &["s3", "cp", &url("small-kms"), out.to_str().unwrap()],
    );
    assert!(std::fs::read(&out).unwrap() == small, "copied to SSE-KMS");

    // The key disabled: the CLI's reads of its objects fail with the KMS
    // error; the SSE-S3 copy stays readable; enabled again, reads work.
    aws_ok(&server, home, &["kms", "disable-key", "--key-id", &key_id]);
    let refused = aws_err(
        &server,
        home,
        &["s3", "cp", &url("big-kms"), out.to_str().unwrap()],
    );
    assert!(refused.contains("KMS.DisabledException"), "{refused}");
    let refused = aws_err(
        &server,
        home,
        &["s3", "cp", &url("small-kms"), out.to_str().unwrap()],
    );
    assert!(refused.contains("KMS.DisabledException"), "{refused}");
    aws_ok(
        &server,
        home,
        &["s3", "cp", &url("big-s3"), out.to_str().unwrap()],
    );
    aws_ok(&server, home, &["kms", "enable-key", "--key-id", &key_id]);
    aws_ok(
        &server,
        home,
        &["s3", "cp", &url("small-kms"), out.to_str().unwrap()],
    );
    assert!(std::fs::read(&out).unwrap() == small, "readable again");
}
