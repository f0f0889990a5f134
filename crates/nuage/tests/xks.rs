//! Hold your own key, end to end through the real binaries: Nuage ->
//! `nuage xks-proxy` -> a SoftHSM2 token. The tenant registers its proxy as
//! an external key store with the aws CLI, creates a KMS key backed by a key
//! in its own token, and stores objects under it (SSE-KMS); then it disables
//! the key on its premises (reads fail at once), enables it (reads work),
//! narrows the reasons it accepts (reads refused), stops its proxy (reads
//! fail fast), and destroys the key (the objects are gone for good).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use common::get_bytes as get;
use common::xks::XksSetup;
use common::{aws_err, aws_ok, failure_with_message as failure};

const TOKEN_LABEL: &str = "tenant-xks";
const XKS_KEY: &str = "invoices-2026";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn objects_under_a_tenant_held_key_follow_the_tenant_s_decisions() {
    // The tenant's premises: a token, a proxy, a key.
    let tenant = XksSetup::new(TOKEN_LABEL);
    let credential = tenant.init();
    tenant.key("create", &[XKS_KEY]);
    let mut proxy = tenant.serve();

    // Nuage trusts the proxy's self-signed certificate.
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let server = tenant.start_trusting_server(data.path());
    let home = tempfile::tempdir().unwrap();
    let home = home.path();

    let store_id = XksSetup::create_key_store(&server, home, &proxy, &credential);
    assert!(store_id.starts_with("cks-"), "{store_id}");
    aws_ok(
        &server,
        home,
        &[
            "kms",
            "connect-custom-key-store",
            "--custom-key-store-id",
            &store_id,
        ],
    );
    let state = aws_ok(
        &server,
        home,
        &[
            "kms",
            "describe-custom-key-stores",
            "--custom-key-store-id",
            &store_id,
            "--query",
            "CustomKeyStores[0].ConnectionState",
        ],
    );
    assert_eq!(state, "CONNECTED");
    let described = aws_ok(&server, home, &["kms", "describe-custom-key-stores"]);
    assert!(
        !described.contains(&credential.secret_access_key),
        "the proxy's secret is never returned"
    );
    let key_id =
        XksSetup::create_external_key(&server, home, &store_id, XKS_KEY, "KeyMetadata.KeyId");
    let key_arn = aws_ok(
        &server,
        home,
        &[
            "kms",
            "describe-key",
            "--key-id",
            &key_id,
            "--query",
            "[KeyMetadata.Arn, KeyMetadata.Origin, KeyMetadata.XksKeyConfiguration.Id]",
        ],
    );
    let mut fields = key_arn.split('\t');
    let key_arn = fields.next().unwrap().to_owned();
    assert_eq!(fields.next(), Some("EXTERNAL_KEY_STORE"));
    assert_eq!(fields.next(), Some(XKS_KEY));

    // The KMS API: a round trip through both layers.
    let plaintext = home.join("plain.bin");
    std::fs::write(&plaintext, b"tenant secret").unwrap();
    let sealed = aws_ok(
        &server,
        home,
        &[
            "kms",
            "encrypt",
            "--key-id",
            &key_id,
            "--plaintext",
            &format!("fileb://{}", plaintext.display()),
            "--query",
            "CiphertextBlob",
        ],
    );
    let raw = base64_decode(&sealed);
    std::fs::write(home.join("sealed.bin"), &raw).unwrap();
    let opened = aws_ok(
        &server,
        home,
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", home.join("sealed.bin").display()),
            "--query",
            "Plaintext",
        ],
    );
    assert_eq!(base64_decode(&opened), b"tenant secret");

    // S3 objects under the key, single-part and multipart.
    let s3 = server.client();
    let bucket = common::bucket_name("xks");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let marker = b"HOLD-YOUR-OWN-KEY-MARKER-7f3a";
    let mut body = common::random_bytes(300_000, 7);
    body[1000..1000 + marker.len()].copy_from_slice(marker);
    let put = s3
        .put_object()
        .bucket(&bucket)
        .key("invoice.pdf")
        .body(ByteStream::from(body.clone()))
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(&key_id)
        .send()
        .await
        .unwrap();
    assert_eq!(put.ssekms_key_id(), Some(key_arn.as_str()));
    assert_eq!(get(&s3, &bucket, "invoice.pdf").await, body);
    let big = common::random_bytes(12 << 20, 8);
    let big_path = home.join("big.bin");
    std::fs::write(&big_path, &big).unwrap();
    aws_ok(
        &server,
        home,
        &[
            "s3",
            "cp",
            big_path.to_str().unwrap(),
            &format!("s3://{bucket}/archive.bin"),
            "--sse",
            "aws:kms",
            "--sse-kms-key-id",
            &key_arn,
        ],
    );
    assert!(get(&s3, &bucket, "archive.bin").await == big);

    // The proxy saw S3's unwraps, with the reason and the key's ARN.
    let lines = tenant.audit();
    assert!(
        lines.iter().any(|l| l["operation"] == "decrypt"
            && l["decision"] == "ALLOW"
            && l["kmsViaService"] == "s3"
            && l["reason"] == "CUSTOMER_INITIATED_ACCESS"
            && l["kmsKeyArn"] == key_arn.as_str()),
        "{lines:?}"
    );

    // S3 passes its requester down: the proxy sees the user who asked and
    // the request id the client was answered with.
    let admin_arn = aws_ok(
        &server,
        home,
        &["sts", "get-caller-identity", "--query", "Arn"],
    );
    // A user, not the tenant's root that stood in before.
    assert!(
        admin_arn.starts_with("arn:aws:iam::") && admin_arn.ends_with(":user/admin"),
        "{admin_arn}"
    );
    let read = s3
        .get_object()
        .bucket(&bucket)
        .key("invoice.pdf")
        .send()
        .await
        .unwrap();
    let request_id = aws_sdk_s3::operation::RequestId::request_id(&read)
        .expect("x-amz-request-id")
        .to_owned();
    assert!(!request_id.is_empty());
    let lines = tenant.audit();
    let decision = lines
        .iter()
        .find(|l| l["kmsRequestId"] == request_id.as_str())
        .unwrap_or_else(|| panic!("no decision for request {request_id}: {lines:?}"));
    assert_eq!(decision["operation"], "decrypt", "{decision}");
    assert_eq!(decision["principalArn"], admin_arn.as_str(), "{decision}");
    assert_eq!(decision["kmsViaService"], "s3", "{decision}");

    // A copy shares the blob: its data key is unwrapped through the proxy
    // and wrapped again through it, for the copy.
    s3.copy_object()
        .bucket(&bucket)
        .key("invoice-copy.pdf")
        .copy_source(format!("{bucket}/invoice.pdf"))
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(&key_id)
        .send()
        .await
        .unwrap();
    assert_eq!(get(&s3, &bucket, "invoice-copy.pdf").await, body);

    // The tenant disables the key on its premises: the next read fails.
    tenant.key("disable", &[XKS_KEY]);
    let (code, status, message) = failure(
        s3.get_object()
            .bucket(&bucket)
            .key("invoice.pdf")
            .send()
            .await,
    );
    assert_eq!(
        (code.as_str(), status),
        ("KMS.KMSInvalidStateException", 400),
        "{message}"
    );
    let refused = aws_err(
        &server,
        home,
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", home.join("sealed.bin").display()),
        ],
    );
    assert!(refused.contains("KMSInvalidStateException"), "{refused}");
    // Enabled again: reads work at once (nothing was cached either way).
    tenant.key("enable", &[XKS_KEY]);
    assert_eq!(get(&s3, &bucket, "invoice.pdf").await, body);

    // The tenant's proxy accepts only a support reason: the customer's own
    // reads are refused by the proxy, naming the reason.
    tenant.key("reasons", &[XKS_KEY, "CUSTOMER_INITIATED_SUPPORT"]);
    let (code, status, message) = failure(
        s3.get_object()
            .bucket(&bucket)
            .key("invoice.pdf")
            .send()
            .await,
    );
    assert_eq!(
        (code.as_str(), status),
        ("KMS.AccessDeniedException", 403),
        "{message}"
    );
    assert!(message.contains("CUSTOMER_INITIATED_ACCESS"), "{message}");
    tenant.key("reasons", &[XKS_KEY, "CUSTOMER_INITIATED_ACCESS"]);
    assert_eq!(get(&s3, &bucket, "invoice.pdf").await, body);

    // The proxy is down: reads fail (fast, within the call timeout).
    let _ = proxy.child.kill();
    let _ = proxy.child.wait();
    let (code, status, message) = failure(
        s3.get_object()
            .bucket(&bucket)
            .key("invoice.pdf")
            .send()
            .await,
    );
    assert_eq!(
        (code.as_str(), status),
        ("KMS.XksProxyUriUnreachableException", 400),
        "{message}"
    );

    // Nothing under Nuage's data directory holds the plaintext.
    let mut stack = vec![data_dir.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                assert!(!contains(&bytes, marker), "plaintext in {}", path.display());
                assert!(
                    !contains(&bytes, credential.secret_access_key.as_bytes()),
                    "the proxy's secret in clear in {}",
                    path.display()
                );
            }
        }
    }

    // Back up, then the tenant destroys the key: crypto-shredded for good.
    // (The proxy restarts on a new port: the tenant points its store there.)
    proxy = tenant.serve();
    for args in [
        vec![
            "disconnect-custom-key-store",
            "--custom-key-store-id",
            &store_id,
        ],
        vec![
            "update-custom-key-store",
            "--custom-key-store-id",
            &store_id,
            "--xks-proxy-uri-endpoint",
            &proxy.endpoint(),
        ],
        vec![
            "connect-custom-key-store",
            "--custom-key-store-id",
            &store_id,
        ],
    ] {
        let mut full = vec!["kms"];
        full.extend(args);
        aws_ok(&server, home, &full);
    }
    assert_eq!(get(&s3, &bucket, "invoice.pdf").await, body);
    tenant.key("destroy", &[XKS_KEY]);
    for key in ["invoice.pdf", "archive.bin"] {
        let (code, status, message) =
            failure(s3.get_object().bucket(&bucket).key(key).send().await);
        assert_eq!(
            (code.as_str(), status),
            ("KMS.XksKeyNotFoundException", 400),
            "{message}"
        );
    }
    drop(proxy);
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap()
}
