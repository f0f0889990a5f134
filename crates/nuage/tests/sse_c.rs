//! S3 SSE-C against the real binary: objects encrypted under a key the
//! client sends with every request, which Nuage never stores. Driven with
//! the AWS SDK for Rust and the aws CLI (`scripts/install-test-deps.sh`, or
//! `NUAGE_AWS_CLI`). The harness serves plain HTTP on 127.0.0.1, where
//! SSE-C is allowed (loopback); the refusal elsewhere is unit-tested in
//! `nuage-s3`.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::Digest as _;
use std::path::Path;

/// A customer key: its raw bytes, base64 and base64 MD5 (the three forms
/// a client handles).
struct Key {
    raw: Vec<u8>,
    b64: String,
    md5: String,
}

impl Key {
    fn new(seed: u64) -> Self {
        let raw = common::random_bytes(32, seed);
        Self {
            b64: BASE64.encode(&raw),
            md5: BASE64.encode(md5::Md5::digest(&raw)),
            raw,
        }
    }
}

use common::{aws, failure};

async fn get_with(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    object: &str,
    key: &Key,
    range: Option<&str>,
) -> Vec<u8> {
    let got = s3
        .get_object()
        .bucket(bucket)
        .key(object)
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&key.b64)
        .sse_customer_key_md5(&key.md5)
        .set_range(range.map(str::to_owned))
        .send()
        .await
        .unwrap();
    assert_eq!(got.sse_customer_algorithm(), Some("AES256"));
    assert_eq!(got.sse_customer_key_md5(), Some(key.md5.as_str()));
    assert_eq!(got.server_side_encryption(), None);
    got.body.collect().await.unwrap().to_vec()
}

async fn get_plain(s3: &aws_sdk_s3::Client, bucket: &str, object: &str) -> Vec<u8> {
    let got = s3
        .get_object()
        .bucket(bucket)
        .key(object)
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.server_side_encryption(),
        Some(&ServerSideEncryption::Aes256)
    );
    got.body.collect().await.unwrap().to_vec()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Fails if any form of `key` (raw, base64, hex, its MD5 or SHA-256, raw
/// or encoded) is found in any file under `dir`.
fn assert_key_absent(dir: &Path, key: &Key) {
    use sha2::Digest as _;
    let md5 = md5::Md5::digest(&key.raw).to_vec();
    let sha256 = sha2::Sha256::digest(&key.raw).to_vec();
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, bytes) in [("key", &key.raw), ("md5", &md5), ("sha256", &sha256)] {
        needles.push((format!("{name} raw"), bytes.clone()));
        needles.push((format!("{name} base64"), BASE64.encode(bytes).into_bytes()));
        needles.push((format!("{name} hex"), hex::encode(bytes).into_bytes()));
    }
    let mut all = Vec::new();
    files(dir, &mut all);
    assert!(!all.is_empty());
    for file in all {
        let Ok(content) = std::fs::read(&file) else {
            continue;
        };
        for (name, needle) in &needles {
            assert!(
                !content
                    .windows(needle.len())
                    .any(|w| w == needle.as_slice()),
                "the customer key's {name} is in {}",
                file.display()
            );
        }
    }
}

#[tokio::test]
async fn sse_c_objects_need_their_key() {
    let server = common::Server::start();
    let s3 = server.client();
    let bucket = "sse-c";
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let a = Key::new(101);
    let b = Key::new(102);

    // PUT: the response echoes the algorithm and the key's MD5, not AES256.
    let data = common::random_bytes(300_000, 1);
    let put = s3
        .put_object()
        .bucket(bucket)
        .key("secret")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&a.b64)
        .sse_customer_key_md5(&a.md5)
        .metadata("colour", "blue")
        .body(data.clone().into())
        .send()
        .await
        .unwrap();
    assert_eq!(put.sse_customer_algorithm(), Some("AES256"));
    assert_eq!(put.sse_customer_key_md5(), Some(a.md5.as_str()));
    assert_eq!(put.server_side_encryption(), None);

    // GET, range GET and HEAD with the key.
    assert_eq!(get_with(&s3, bucket, "secret", &a, None).await, data);
    assert_eq!(
        get_with(&s3, bucket, "secret", &a, Some("bytes=65530-140000")).await,
        &data[65530..=140_000]
    );
    let head = s3
        .head_object()
        .bucket(bucket)
        .key("secret")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&a.b64)
        .sse_customer_key_md5(&a.md5)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(300_000));
    assert_eq!(head.sse_customer_key_md5(), Some(a.md5.as_str()));
    assert_eq!(head.sse_customer_algorithm(), Some("AES256"));
    assert_eq!(head.server_side_encryption(), None);
    assert_eq!(
        head.metadata().and_then(|m| m.get("colour")),
        Some(&"blue".to_owned())
    );

    // Without the key: 400 InvalidRequest; with another key: 403.
    let (code, status) = failure(s3.get_object().bucket(bucket).key("secret").send().await);
    assert_eq!((code.as_str(), status), ("InvalidRequest", 400));
    let (_, status) = failure(s3.head_object().bucket(bucket).key("secret").send().await);
    assert_eq!(status, 400);
    let (code, status) = failure(
        s3.get_object()
            .bucket(bucket)
            .key("secret")
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&b.b64)
            .sse_customer_key_md5(&b.md5)
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("AccessDenied", 403));
    let (_, status) = failure(
        s3.head_object()
            .bucket(bucket)
            .key("secret")
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&b.b64)
            .sse_customer_key_md5(&b.md5)
            .send()
            .await,
    );
    assert_eq!(status, 403);

    // Malformed SSE-C headers: 400 InvalidArgument, nothing stored.
    for (algorithm, key, md5) in [
        ("AES256", a.b64.as_str(), b.md5.as_str()),
        ("AES128", a.b64.as_str(), a.md5.as_str()),
        (
            "AES256",
            "c2hvcnQ=",
            BASE64.encode(md5::Md5::digest(b"short")).as_str(),
        ),
    ] {
        let (code, status) = failure(
            s3.put_object()
                .bucket(bucket)
                .key("refused")
                .sse_customer_algorithm(algorithm)
                .sse_customer_key(key)
                .sse_customer_key_md5(md5)
                .body(b"x".to_vec().into())
                .send()
                .await,
        );
        assert_eq!(
            (code.as_str(), status),
            ("InvalidArgument", 400),
            "{algorithm} {key} {md5}"
        );
    }
    // SSE-C with x-amz-server-side-encryption.
    let (code, status) = failure(
        s3.put_object()
            .bucket(bucket)
            .key("refused")
            .server_side_encryption(ServerSideEncryption::Aes256)
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&a.b64)
            .sse_customer_key_md5(&a.md5)
            .body(b"x".to_vec().into())
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("InvalidArgument", 400));
    let (code, _) = failure(s3.head_object().bucket(bucket).key("refused").send().await);
    assert_eq!(code, "NotFound");

    // SSE-C headers for an object that is not SSE-C: 400 InvalidRequest.
    let plain = common::random_bytes(70_000, 2);
    s3.put_object()
        .bucket(bucket)
        .key("plain")
        .body(plain.clone().into())
        .send()
        .await
        .unwrap();
    let (code, status) = failure(
        s3.get_object()
            .bucket(bucket)
            .key("plain")
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&a.b64)
            .sse_customer_key_md5(&a.md5)
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("InvalidRequest", 400));

    // CopyObject SSE-C -> SSE-C under a new key.
    let copy = s3
        .copy_object()
        .bucket(bucket)
        .key("rekeyed")
        .copy_source(format!("{bucket}/secret"))
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(&a.b64)
        .copy_source_sse_customer_key_md5(&a.md5)
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&b.b64)
        .sse_customer_key_md5(&b.md5)
        .send()
        .await
        .unwrap();
    assert_eq!(copy.sse_customer_key_md5(), Some(b.md5.as_str()));
    assert_eq!(copy.server_side_encryption(), None);
    assert_eq!(get_with(&s3, bucket, "rekeyed", &b, None).await, data);
    let (code, status) = failure(
        s3.get_object()
            .bucket(bucket)
            .key("rekeyed")
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&a.b64)
            .sse_customer_key_md5(&a.md5)
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("AccessDenied", 403));
    // Without the source's key, or with the wrong one, the copy is refused.
    let (code, status) = failure(
        s3.copy_object()
            .bucket(bucket)
            .key("stolen")
            .copy_source(format!("{bucket}/secret"))
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("InvalidRequest", 400));
    let (code, status) = failure(
        s3.copy_object()
            .bucket(bucket)
            .key("stolen")
            .copy_source(format!("{bucket}/secret"))
            .copy_source_sse_customer_algorithm("AES256")
            .copy_source_sse_customer_key(&b.b64)
            .copy_source_sse_customer_key_md5(&b.md5)
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("AccessDenied", 403));

    // SSE-C -> SSE-S3, and SSE-S3 -> SSE-C.
    let copy = s3
        .copy_object()
        .bucket(bucket)
        .key("decrypted")
        .copy_source(format!("{bucket}/secret"))
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(&a.b64)
        .copy_source_sse_customer_key_md5(&a.md5)
        .send()
        .await
        .unwrap();
    assert_eq!(
        copy.server_side_encryption(),
        Some(&ServerSideEncryption::Aes256)
    );
    assert_eq!(copy.sse_customer_algorithm(), None);
    assert_eq!(get_plain(&s3, bucket, "decrypted").await, data);
    s3.copy_object()
        .bucket(bucket)
        .key("encrypted")
        .copy_source(format!("{bucket}/plain"))
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&b.b64)
        .sse_customer_key_md5(&b.md5)
        .send()
        .await
        .unwrap();
    assert_eq!(get_with(&s3, bucket, "encrypted", &b, None).await, plain);
    let (code, _) = failure(s3.get_object().bucket(bucket).key("encrypted").send().await);
    assert_eq!(code, "InvalidRequest");

    // A copy onto itself that only changes the key (rotation).
    s3.copy_object()
        .bucket(bucket)
        .key("encrypted")
        .copy_source(format!("{bucket}/encrypted"))
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(&b.b64)
        .copy_source_sse_customer_key_md5(&b.md5)
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&a.b64)
        .sse_customer_key_md5(&a.md5)
        .send()
        .await
        .unwrap();
    assert_eq!(get_with(&s3, bucket, "encrypted", &a, None).await, plain);

    // Multipart under key A: every part must come with A.
    let create = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key("multi")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&a.b64)
        .sse_customer_key_md5(&a.md5)
        .send()
        .await
        .unwrap();
    assert_eq!(create.sse_customer_key_md5(), Some(a.md5.as_str()));
    assert_eq!(create.server_side_encryption(), None);
    let upload_id = create.upload_id().unwrap();
    let first = common::random_bytes(5 * 1024 * 1024, 3);
    let second = common::random_bytes(1000, 4);
    let part = |n: i32, body: &Vec<u8>| {
        s3.upload_part()
            .bucket(bucket)
            .key("multi")
            .upload_id(upload_id)
            .part_number(n)
            .body(ByteStream::from(body.clone()))
    };
    let (code, status) = failure(part(1, &first).send().await);
    assert_eq!((code.as_str(), status), ("InvalidRequest", 400));
    let (code, status) = failure(
        part(1, &first)
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&b.b64)
            .sse_customer_key_md5(&b.md5)
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("InvalidRequest", 400));
    let mut parts = Vec::new();
    for (n, body) in [(1, &first), (2, &second)] {
        let uploaded = part(n, body)
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&a.b64)
            .sse_customer_key_md5(&a.md5)
            .send()
            .await
            .unwrap();
        assert_eq!(uploaded.sse_customer_key_md5(), Some(a.md5.as_str()));
        assert_eq!(uploaded.server_side_encryption(), None);
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(uploaded.e_tag().unwrap())
                .build(),
        );
    }
    // UploadPartCopy into the SSE-C upload, from the SSE-C source "secret".
    let copied = s3
        .upload_part_copy()
        .bucket(bucket)
        .key("multi")
        .upload_id(upload_id)
        .part_number(3)
        .copy_source(format!("{bucket}/secret"))
        .copy_source_range("bytes=0-99999")
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(&a.b64)
        .copy_source_sse_customer_key_md5(&a.md5)
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&a.b64)
        .sse_customer_key_md5(&a.md5)
        .send()
        .await
        .unwrap();
    // The second part is under 5 MiB, so it cannot be followed: complete
    // with parts 1 and 3.
    let parts = vec![
        parts.remove(0),
        CompletedPart::builder()
            .part_number(3)
            .e_tag(copied.copy_part_result().unwrap().e_tag().unwrap())
            .build(),
    ];
    // CompleteMultipartUpload needs no key.
    s3.complete_multipart_upload()
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
    let mut whole = first.clone();
    whole.extend_from_slice(&data[..100_000]);
    assert_eq!(get_with(&s3, bucket, "multi", &a, None).await, whole);
    assert_eq!(
        get_with(&s3, bucket, "multi", &a, Some("bytes=5242000-5243000")).await,
        &whole[5_242_000..=5_243_000]
    );
    let (code, _) = failure(s3.get_object().bucket(bucket).key("multi").send().await);
    assert_eq!(code, "InvalidRequest");

    // UploadPartCopy from an SSE-C source into an SSE-S3 upload.
    let create = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key("multi-plain")
        .send()
        .await
        .unwrap();
    let upload_id = create.upload_id().unwrap();
    let (code, _) = failure(
        s3.upload_part_copy()
            .bucket(bucket)
            .key("multi-plain")
            .upload_id(upload_id)
            .part_number(1)
            .copy_source(format!("{bucket}/secret"))
            .send()
            .await,
    );
    assert_eq!(code, "InvalidRequest");
    let copied = s3
        .upload_part_copy()
        .bucket(bucket)
        .key("multi-plain")
        .upload_id(upload_id)
        .part_number(1)
        .copy_source(format!("{bucket}/secret"))
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(&a.b64)
        .copy_source_sse_customer_key_md5(&a.md5)
        .send()
        .await
        .unwrap();
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key("multi-plain")
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(
                    CompletedPart::builder()
                        .part_number(1)
                        .e_tag(copied.copy_part_result().unwrap().e_tag().unwrap())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(get_plain(&s3, bucket, "multi-plain").await, data);

    // After a restart (nothing held in memory), the keys still open their
    // objects; and no form of either key is anywhere on disk.
    let mut server = server;
    server.restart();
    let s3 = server.client();
    assert_eq!(get_with(&s3, bucket, "secret", &a, None).await, data);
    assert_eq!(get_with(&s3, bucket, "rekeyed", &b, None).await, data);
    server.stop();
    assert_key_absent(&server.data_dir, &a);
    assert_key_absent(&server.data_dir, &b);
}

#[track_caller]
fn ok(output: &std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn aws_cli_sse_c() {
    let server = common::Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let key = Key::new(201);
    let other = Key::new(202);
    let key_file = home.join("key.bin");
    std::fs::write(&key_file, &key.raw).unwrap();
    let other_file = home.join("other.bin");
    std::fs::write(&other_file, &other.raw).unwrap();
    let key_arg = format!("fileb://{}", key_file.display());
    let other_arg = format!("fileb://{}", other_file.display());
    let data = common::random_bytes(200_000, 5);
    let source = home.join("source.bin");
    std::fs::write(&source, &data).unwrap();
    let s = |p: &Path| p.display().to_string();

    ok(&aws(&server, home, &["s3", "mb", "s3://cli-sse-c"]), "mb");
    ok(
        &aws(
            &server,
            home,
            &[
                "s3",
                "cp",
                &s(&source),
                "s3://cli-sse-c/obj",
                "--sse-c",
                "AES256",
                "--sse-c-key",
                &key_arg,
            ],
        ),
        "s3 cp --sse-c",
    );
    // s3api get-object with the key: the data, and the echoed MD5.
    let out = home.join("out.bin");
    let stdout = ok(
        &aws(
            &server,
            home,
            &[
                "s3api",
                "get-object",
                "--bucket",
                "cli-sse-c",
                "--key",
                "obj",
                "--sse-customer-algorithm",
                "AES256",
                "--sse-customer-key",
                &key_arg,
                &s(&out),
            ],
        ),
        "s3api get-object",
    );
    assert!(stdout.contains(&key.md5), "{stdout}");
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // s3 cp back down with the key.
    let down = home.join("down.bin");
    ok(
        &aws(
            &server,
            home,
            &[
                "s3",
                "cp",
                "s3://cli-sse-c/obj",
                &s(&down),
                "--sse-c",
                "AES256",
                "--sse-c-key",
                &key_arg,
            ],
        ),
        "s3 cp down --sse-c",
    );
    assert_eq!(std::fs::read(&down).unwrap(), data);
    // Without the key, or with another: refused with S3's codes.
    let refused = aws(
        &server,
        home,
        &[
            "s3api",
            "get-object",
            "--bucket",
            "cli-sse-c",
            "--key",
            "obj",
            &s(&home.join("nothing.bin")),
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("InvalidRequest"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let refused = aws(
        &server,
        home,
        &[
            "s3api",
            "get-object",
            "--bucket",
            "cli-sse-c",
            "--key",
            "obj",
            "--sse-customer-algorithm",
            "AES256",
            "--sse-customer-key",
            &other_arg,
            &s(&home.join("nothing.bin")),
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("AccessDenied"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // A multipart upload through `aws s3 cp` (20 MB: several parts, each
    // with the key).
    let big = common::random_bytes(20 * 1024 * 1024, 6);
    let big_file = home.join("big.bin");
    std::fs::write(&big_file, &big).unwrap();
    ok(
        &aws(
            &server,
            home,
            &[
                "s3",
                "cp",
                &s(&big_file),
                "s3://cli-sse-c/big",
                "--sse-c",
                "AES256",
                "--sse-c-key",
                &key_arg,
            ],
        ),
        "s3 cp multipart --sse-c",
    );
    let big_down = home.join("big-down.bin");
    ok(
        &aws(
            &server,
            home,
            &[
                "s3",
                "cp",
                "s3://cli-sse-c/big",
                &s(&big_down),
                "--sse-c",
                "AES256",
                "--sse-c-key",
                &key_arg,
            ],
        ),
        "s3 cp multipart down --sse-c",
    );
    assert_eq!(std::fs::read(&big_down).unwrap(), big);
    let mut server = server;
    server.stop();
    assert_key_absent(&server.data_dir, &key);
    assert_key_absent(&server.data_dir, &other);
}
