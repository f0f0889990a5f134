//! `nuage xks-proxy` through the real binary: `init`, `serve` and the `key`
//! commands as separate processes on a SoftHSM2 token made for the test
//! (scripts/install-test-deps.sh installs softhsm2), driven by Nuage's own
//! `XksClient` over TLS with the certificate `init` wrote. The key commands
//! change what the running proxy does on its very next request, with no
//! restart, and every decision lands in the tenant's audit file.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::xks::{XksSetup, audit_lines};
use nuage_kms::{ExternalKeyStore, XksError, XksProxyEndpoint, XksRequestMetadata};
use nuage_xks::{XksClient, XksClientConfig};
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use zeroize::Zeroizing;

const TOKEN_LABEL: &str = "nuage-xks-cli";
const KEY_ID: &str = "tenant-key-1";

fn metadata(reason: &str, request_id: &str) -> XksRequestMetadata {
    XksRequestMetadata {
        aws_principal_arn: "arn:aws:iam::123456789012:user/alice".to_owned(),
        kms_key_arn: Some("arn:aws:kms:eu-west-3:123456789012:key/k1".to_owned()),
        kms_operation: "Decrypt".to_owned(),
        kms_request_id: request_id.to_owned(),
        kms_via_service: Some("s3".to_owned()),
        access_reason: reason.to_owned(),
    }
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, XksError>, name: &str) {
    match result {
        Err(XksError::Refused { error_name, .. }) if error_name == name => {}
        other => panic!("expected {name}, got {other:?}"),
    }
}

#[tokio::test]
async fn the_tenant_controls_its_keys_from_the_command_line() {
    let setup = XksSetup::new(TOKEN_LABEL);
    let dir = setup.proxy_dir();
    let dir_arg = dir.to_str().unwrap().to_owned();
    let pin_file = setup.pin_file();
    let init_args = [
        "init",
        "--dir",
        &dir_arg,
        "--listen",
        "127.0.0.1:0",
        "--uri-path",
        "/tenant-a/kms/xks/v1",
        "--pkcs11-module",
        setup.module.to_str().unwrap(),
        "--token-label",
        TOKEN_LABEL,
        "--pin-file",
        pin_file.to_str().unwrap(),
    ];
    let output = setup.run(&init_args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let uri_path = printed["XksProxyUriPath"].as_str().unwrap().to_owned();
    let credential = &printed["XksProxyAuthenticationCredential"];
    let access_key_id = credential["AccessKeyId"].as_str().unwrap().to_owned();
    let secret = credential["RawSecretAccessKey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(uri_path, "/tenant-a/kms/xks/v1");
    for secret_file in ["credentials.toml", "tls/xks-proxy.key"] {
        let mode = std::fs::metadata(dir.join(secret_file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret_file}");
    }
    // A second init would lose the credential: refused.
    let again = setup.run(&init_args);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already initialized"));

    assert!(setup.key("create", &[KEY_ID]).contains("created key"));
    let proxy = setup.serve();
    let (endpoint_uri, served_path) = proxy.url.split_at(proxy.url.find("/tenant-a").unwrap());
    assert_eq!(served_path, uri_path);
    let certificate = std::fs::read(dir.join("tls/xks-proxy.crt")).unwrap();
    let client = XksClient::new(XksClientConfig {
        region: "eu-west-3".to_owned(),
        extra_ca_certificates_pem: vec![certificate],
        clock: Arc::new(nuage_base::SystemClock),
    })
    .unwrap();
    let endpoint = XksProxyEndpoint {
        uri_endpoint: endpoint_uri.to_owned(),
        uri_path: uri_path.clone(),
        access_key_id,
        secret_access_key: Zeroizing::new(secret),
    };
    let customer = metadata("CUSTOMER_INITIATED_ACCESS", "r-customer");

    let health = client.health(&endpoint, &customer).await.unwrap();
    assert_eq!(health.ekm_health, ["ACTIVE"]);
    let data_key = [42u8; 32];
    let aad = b"tenant=t1,bucket=photos";
    let sealed = client
        .encrypt(&endpoint, KEY_ID, &customer, &data_key, aad)
        .await
        .unwrap();
    let opened = client
        .decrypt(&endpoint, KEY_ID, &customer, &sealed, aad)
        .await
        .unwrap();
    assert_eq!(opened.as_slice(), data_key);

    // Disabled from the command line: the very next decrypt is refused.
    assert!(setup.key("disable", &[KEY_ID]).contains("disabled"));
    assert_refused(
        client
            .decrypt(&endpoint, KEY_ID, &customer, &sealed, aad)
            .await,
        "InvalidStateException",
    );
    let described = client
        .key_metadata(&endpoint, KEY_ID, &customer)
        .await
        .unwrap();
    assert_eq!(described.key_status, "DISABLED");
    setup.key("enable", &[KEY_ID]);
    let opened = client
        .decrypt(&endpoint, KEY_ID, &customer, &sealed, aad)
        .await
        .unwrap();
    assert_eq!(opened.as_slice(), data_key);

    // The operator's review is refused until the tenant allows it.
    let review = metadata("OPERATOR_INITIATED_REVIEW", "r-review");
    assert_refused(
        client
            .decrypt(&endpoint, KEY_ID, &review, &sealed, aad)
            .await,
        "AccessDeniedException",
    );
    setup.key(
        "reasons",
        &[
            KEY_ID,
            "CUSTOMER_INITIATED_ACCESS",
            "OPERATOR_INITIATED_REVIEW",
        ],
    );
    let opened = client
        .decrypt(&endpoint, KEY_ID, &review, &sealed, aad)
        .await
        .unwrap();
    assert_eq!(opened.as_slice(), data_key);
    let unknown = setup.run(&[
        "key",
        "reasons",
        "--dir",
        &dir_arg,
        KEY_ID,
        "GOOGLE_SAYS_SO",
    ]);
    assert!(!unknown.status.success());

    // A key created while the proxy runs is served at once.
    setup.key("create", &["tenant-key-2"]);
    let other = client
        .encrypt(&endpoint, "tenant-key-2", &customer, b"x", b"")
        .await
        .unwrap();
    assert_eq!(other.ciphertext.len(), 1);
    let listed = setup.key("list", &[]);
    assert!(
        listed.contains(&format!(
            "{KEY_ID}\tENABLED\tCUSTOMER_INITIATED_ACCESS,OPERATOR_INITIATED_REVIEW\tin-token"
        )),
        "{listed}"
    );

    // Destroyed: gone for good, without a restart.
    assert!(setup.key("destroy", &[KEY_ID]).contains("destroyed"));
    assert_refused(
        client
            .decrypt(&endpoint, KEY_ID, &customer, &sealed, aad)
            .await,
        "KeyNotFoundException",
    );

    // The tenant's record of every decision, in order.
    let lines = audit_lines(&dir);
    let summary: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["operation"].as_str().unwrap().to_owned(),
                l.get("error")
                    .and_then(|e| e.as_str())
                    .unwrap_or("ALLOW")
                    .to_owned(),
            )
        })
        .collect();
    let expected = [
        ("encrypt", "ALLOW"),
        ("decrypt", "ALLOW"),
        ("decrypt", "InvalidStateException"),
        ("metadata", "ALLOW"),
        ("decrypt", "ALLOW"),
        ("decrypt", "AccessDeniedException"),
        ("decrypt", "ALLOW"),
        ("encrypt", "ALLOW"),
        ("decrypt", "KeyNotFoundException"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(summary, expected);
    let denied_review = &lines[5];
    assert_eq!(denied_review["reason"], "OPERATOR_INITIATED_REVIEW");
    assert_eq!(denied_review["kmsRequestId"], "r-review");
    assert_eq!(
        denied_review["principalArn"],
        "arn:aws:iam::123456789012:user/alice"
    );
    assert_eq!(denied_review["decision"], "DENY");
    drop(proxy);

    // A PIN file others can read is refused.
    std::fs::set_permissions(setup.pin_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = setup.run(&["key", "list", "--dir", &dir_arg]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("chmod 600"));
}
