//! `XksClient` against a real `XksProxy` over TLS on 127.0.0.1 (port 0),
//! backed by a SoftHSM2 token made for each test (scripts/install-test-deps.sh
//! installs softhsm2). No mocks: the proxy, the token, the TLS and the SigV4
//! are the real ones; requests the client would never send are sent raw, and
//! one is signed by AWS's own `aws-sigv4` to show the proxy verifies what AWS
//! signs.
//!
//! SoftHSM finds its tokens through `SOFTHSM2_CONF`, read when the library
//! initializes; setting it inside this multi-threaded process is unsound (and
//! `unsafe_code` is forbidden). So each token test runs twice: the outer run
//! makes a token and re-runs this test binary on that one test with
//! `SOFTHSM2_CONF` set; the inner run does the work.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use nuage_base::{Clock, SystemClock};
use nuage_kms::{ExternalKeyStore, XksCiphertext, XksError, XksProxyEndpoint, XksRequestMetadata};
use nuage_xks::{
    HsmKeys, KeyState, KeyStates, StateError, XksClient, XksClientConfig, XksCredential,
    XksHsmConfig, XksProxy, XksProxyConfig,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use zeroize::Zeroizing;

const TOKEN_LABEL: &str = "nuage-xks-test";
const USER_PIN: &str = "1234";
const SO_PIN: &str = "5678";
const CHILD_MARKER: &str = "NUAGE_XKS_TEST_SOFTHSM_CHILD";
const REGION: &str = "eu-west-3";
const URI_PATH: &str = "/tenant-a/kms/xks/v1";
const KEY_ID: &str = "key-1";
const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

const MODULE_CANDIDATES: [&str; 3] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
];

fn softhsm_module() -> PathBuf {
    MODULE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "SoftHSM2 is not installed (no {}): run scripts/install-test-deps.sh",
                MODULE_CANDIDATES.join(", ")
            )
        })
}

/// In the outer run: makes a token, runs `test` in a child process pointed
/// at it, checks that exactly that test ran and passed, and returns `None`.
/// In the child: returns the module's path for the test to go on.
fn softhsm_child(test: &str) -> Option<PathBuf> {
    if std::env::var_os(CHILD_MARKER).is_some() {
        return Some(softhsm_module());
    }
    softhsm_module();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let output = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", TOKEN_LABEL])
        .args(["--pin", USER_PIN, "--so-pin", SO_PIN])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util (run scripts/install-test-deps.sh)");
    assert!(
        output.status.success(),
        "softhsm2-util --init-token: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD_MARKER, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test} against SoftHSM2 failed:\n{stdout}\n{stderr}"
    );
    None
}

fn hsm_config(module: &Path) -> XksHsmConfig {
    XksHsmConfig {
        module: module.to_owned(),
        token_label: TOKEN_LABEL.to_owned(),
        pin: Zeroizing::new(USER_PIN.to_owned()),
    }
}

/// A clock `offset_s` seconds off the system's.
struct SkewedClock(i64);

impl Clock for SkewedClock {
    fn now_unix_ns(&self) -> i64 {
        SystemClock.now_unix_ns() + self.0 * 1_000_000_000
    }
}

/// A running proxy with one key (`key-1`, default state), and a client that
/// trusts its certificate.
struct Fixture {
    dir: tempfile::TempDir,
    keys: HsmKeys,
    certificate: String,
    client: XksClient,
    endpoint: XksProxyEndpoint,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Fixture {
    async fn start(module: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (certificate, private_key) =
            nuage_xks::self_signed_certificate(vec!["127.0.0.1".into(), "localhost".into()])
                .unwrap();
        let credential = XksCredential::generate();
        let keys = HsmKeys::open(hsm_config(module)).await.unwrap();
        assert!(keys.create_key(KEY_ID).await.unwrap(), "a new key");
        let fixture_state = dir.path().join("keys.json");
        KeyStates::update(&fixture_state, |states| {
            states.keys.insert(KEY_ID.to_owned(), KeyState::default());
            Ok::<_, StateError>(())
        })
        .unwrap();
        let proxy = XksProxy::bind(XksProxyConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            uri_path: URI_PATH.to_owned(),
            tls_certificate_pem: certificate.clone().into_bytes(),
            tls_private_key_pem: Zeroizing::new(private_key.as_bytes().to_vec()),
            credentials: vec![credential.clone()],
            hsm: hsm_config(module),
            state_file: fixture_state,
            audit_file: dir.path().join("audit.jsonl"),
            clock: Arc::new(SystemClock),
        })
        .await
        .unwrap();
        let address = proxy.local_addr();
        assert_eq!(proxy.uri_path(), URI_PATH);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(proxy.serve(async move {
            let _ = stopped.await;
        }));
        let client = client_with(&certificate, Arc::new(SystemClock));
        Self {
            dir,
            keys,
            certificate,
            client,
            endpoint: XksProxyEndpoint {
                uri_endpoint: format!("https://{address}"),
                uri_path: URI_PATH.to_owned(),
                access_key_id: credential.access_key_id,
                secret_access_key: credential.secret_access_key,
            },
            _stop: stop,
        }
    }

    fn state_file(&self) -> PathBuf {
        self.dir.path().join("keys.json")
    }

    fn set_state(&self, id: &str, change: impl FnOnce(&mut KeyState)) {
        KeyStates::update(&self.state_file(), |states| {
            change(states.keys.get_mut(id).unwrap());
            Ok::<_, StateError>(())
        })
        .unwrap();
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// A raw POST to `path` under the URI path, signed by `aws-sigv4` with
    /// `secret` (or unsigned): status and JSON body.
    async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        secret: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let address = self
            .endpoint
            .uri_endpoint
            .trim_start_matches("https://")
            .to_owned();
        let url = format!("{}{URI_PATH}/{path}", self.endpoint.uri_endpoint);
        let mut builder = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("host", &address)
            .header("content-type", "application/json");
        if let Some(secret) = secret {
            use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
            let identity = aws_credential_types::Credentials::new(
                &self.endpoint.access_key_id,
                secret,
                None,
                None,
                "xks-test",
            )
            .into();
            let params = aws_sigv4::sign::v4::SigningParams::builder()
                .identity(&identity)
                .region(REGION)
                .name("kms-xks-proxy")
                .time(std::time::SystemTime::now())
                .settings(SigningSettings::default())
                .build()
                .unwrap()
                .into();
            let headers = [
                ("host", address.as_str()),
                ("content-type", "application/json"),
            ];
            let signable = SignableRequest::new(
                method,
                &url,
                headers.into_iter(),
                SignableBody::Bytes(&body),
            )
            .unwrap();
            let (instructions, _) = sign(signable, &params).unwrap().into_parts();
            for (name, value) in instructions.headers() {
                builder = builder.header(name, value);
            }
        }
        let request = builder.body(Full::new(Bytes::from(body))).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.certificate.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Full<Bytes>>(connector);
        let response = client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }
}

fn client_with(certificate: &str, clock: Arc<dyn Clock>) -> XksClient {
    XksClient::new(XksClientConfig {
        region: REGION.to_owned(),
        extra_ca_certificates_pem: vec![certificate.as_bytes().to_vec()],
        clock,
    })
    .unwrap()
}

fn metadata(reason: &str) -> XksRequestMetadata {
    XksRequestMetadata {
        aws_principal_arn: "arn:aws:iam::123456789012:user/alice".to_owned(),
        kms_key_arn: Some("arn:aws:kms:eu-west-3:123456789012:key/k".to_owned()),
        kms_operation: "Decrypt".to_owned(),
        kms_request_id: "req-42".to_owned(),
        kms_via_service: Some("s3".to_owned()),
        access_reason: reason.to_owned(),
    }
}

fn customer() -> XksRequestMetadata {
    metadata("CUSTOMER_INITIATED_ACCESS")
}

#[track_caller]
fn assert_refused(
    result: Result<impl std::fmt::Debug, XksError>,
    name: &str,
    status: u16,
) -> String {
    match result {
        Err(XksError::Refused {
            error_name,
            status: got,
            message,
        }) if error_name == name && got == status => message,
        other => panic!("expected {name} ({status}), got {other:?}"),
    }
}

#[tokio::test]
async fn health_metadata_and_round_trip() {
    let Some(module) = softhsm_child("health_metadata_and_round_trip") else {
        return;
    };
    let fx = Fixture::start(&module).await;
    let health = fx.client.health(&fx.endpoint, &customer()).await.unwrap();
    assert_eq!(health.xks_proxy_vendor, "Nuage");
    assert_eq!(health.ekm_health, ["ACTIVE"]);
    assert!(health.ekm_vendor.contains("SoftHSM"), "{health:?}");

    let key = fx
        .client
        .key_metadata(&fx.endpoint, KEY_ID, &customer())
        .await
        .unwrap();
    assert_eq!(key.key_spec, "AES_256");
    assert_eq!(key.key_usage, ["ENCRYPT", "DECRYPT"]);
    assert_eq!(key.key_status, "ENABLED");

    let data_key = [7u8; 32];
    let aad = b"tenant=t1,bucket=b,key=k";
    let sealed = fx
        .client
        .encrypt(&fx.endpoint, KEY_ID, &customer(), &data_key, aad)
        .await
        .unwrap();
    assert_eq!(sealed.ciphertext.len(), 32);
    assert_ne!(sealed.ciphertext, data_key, "encrypted");
    assert_eq!(sealed.initialization_vector.len(), 12);
    assert_eq!(sealed.authentication_tag.len(), 16);
    assert_eq!(sealed.ciphertext_metadata, None);
    let again = fx
        .client
        .encrypt(&fx.endpoint, KEY_ID, &customer(), &data_key, aad)
        .await
        .unwrap();
    assert_ne!(
        again.initialization_vector, sealed.initialization_vector,
        "a fresh IV each time"
    );
    let opened = fx
        .client
        .decrypt(&fx.endpoint, KEY_ID, &customer(), &sealed, aad)
        .await
        .unwrap();
    assert_eq!(opened.as_slice(), data_key);
    // No AAD at all works too.
    let bare = fx
        .client
        .encrypt(&fx.endpoint, KEY_ID, &customer(), b"hi", b"")
        .await
        .unwrap();
    let opened = fx
        .client
        .decrypt(&fx.endpoint, KEY_ID, &customer(), &bare, b"")
        .await
        .unwrap();
    assert_eq!(opened.as_slice(), b"hi");

    // The tenant's audit file has one line per key request.
    let audit = fx.audit();
    assert_eq!(audit.len(), 6, "{audit:?}");
    let operations: Vec<&str> = audit
        .iter()
        .map(|l| l["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        operations,
        [
            "metadata", "encrypt", "encrypt", "decrypt", "encrypt", "decrypt"
        ]
    );
    let line = &audit[3];
    assert_eq!(line["decision"], "ALLOW");
    assert_eq!(line["keyId"], KEY_ID);
    assert_eq!(line["principalArn"], "arn:aws:iam::123456789012:user/alice");
    assert_eq!(line["kmsOperation"], "Decrypt");
    assert_eq!(line["kmsRequestId"], "req-42");
    assert_eq!(line["reason"], "CUSTOMER_INITIATED_ACCESS");
    assert_eq!(line["accessKeyId"], fx.endpoint.access_key_id.as_str());
    let text = std::fs::read_to_string(fx.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        !text.contains(&BASE64.encode(data_key)),
        "no plaintext in the audit file"
    );
}

#[tokio::test]
async fn wrong_aad_tampering_and_foreign_ciphertexts_are_invalid() {
    let Some(module) = softhsm_child("wrong_aad_tampering_and_foreign_ciphertexts_are_invalid")
    else {
        return;
    };
    let fx = Fixture::start(&module).await;
    let sealed = fx
        .client
        .encrypt(&fx.endpoint, KEY_ID, &customer(), &[1u8; 32], b"bound-here")
        .await
        .unwrap();
    let decrypt = |ciphertext: XksCiphertext, aad: &'static [u8]| {
        let fx = &fx;
        async move {
            fx.client
                .decrypt(&fx.endpoint, KEY_ID, &customer(), &ciphertext, aad)
                .await
        }
    };
    assert_refused(
        decrypt(sealed.clone(), b"bound-elsewhere").await,
        "InvalidCiphertextException",
        400,
    );
    assert_refused(
        decrypt(sealed.clone(), b"").await,
        "InvalidCiphertextException",
        400,
    );
    let mut tag = sealed.clone();
    tag.authentication_tag[0] ^= 1;
    assert_refused(
        decrypt(tag, b"bound-here").await,
        "InvalidCiphertextException",
        400,
    );
    let mut body = sealed.clone();
    body.ciphertext[31] ^= 0x80;
    assert_refused(
        decrypt(body, b"bound-here").await,
        "InvalidCiphertextException",
        400,
    );
    let mut iv = sealed.clone();
    iv.initialization_vector[0] ^= 1;
    assert_refused(
        decrypt(iv, b"bound-here").await,
        "InvalidCiphertextException",
        400,
    );
    let mut short_tag = sealed.clone();
    short_tag.authentication_tag.truncate(12);
    assert_refused(
        decrypt(short_tag, b"bound-here").await,
        "InvalidCiphertextException",
        400,
    );
    let mut metadata = sealed.clone();
    metadata.ciphertext_metadata = Some(b"v1".to_vec());
    assert_refused(
        decrypt(metadata, b"bound-here").await,
        "InvalidCiphertextException",
        400,
    );
    // Another key's ciphertext does not open under this one.
    fx.keys.create_key("key-2").await.unwrap();
    KeyStates::update(&fx.state_file(), |s| {
        s.keys.insert("key-2".into(), KeyState::default());
        Ok::<_, StateError>(())
    })
    .unwrap();
    let result = fx
        .client
        .decrypt(&fx.endpoint, "key-2", &customer(), &sealed, b"bound-here")
        .await;
    assert_refused(result, "InvalidCiphertextException", 400);
    // And the original still does.
    let opened = decrypt(sealed, b"bound-here").await.unwrap();
    assert_eq!(opened.as_slice(), [1u8; 32]);
    let denials = fx
        .audit()
        .iter()
        .filter(|l| l["decision"] == "DENY")
        .count();
    assert_eq!(denials, 8);
}

#[tokio::test]
async fn bad_signatures_are_authentication_failures() {
    let Some(module) = softhsm_child("bad_signatures_are_authentication_failures") else {
        return;
    };
    let fx = Fixture::start(&module).await;
    let mut wrong_secret = fx.endpoint.clone();
    wrong_secret.secret_access_key = Zeroizing::new("not-the-secret".to_owned());
    let result = fx
        .client
        .key_metadata(&wrong_secret, KEY_ID, &customer())
        .await;
    assert_refused(result, "AuthenticationFailedException", 401);
    let result = fx.client.health(&wrong_secret, &customer()).await;
    assert_refused(result, "AuthenticationFailedException", 401);
    let mut unknown = fx.endpoint.clone();
    unknown.access_key_id = XksCredential::generate().access_key_id;
    let result = fx
        .client
        .encrypt(&unknown, KEY_ID, &customer(), b"x", b"")
        .await;
    assert_refused(result, "AuthenticationFailedException", 401);
    // Ten minutes off: outside the spec's five.
    let late = client_with(&fx.certificate, Arc::new(SkewedClock(-600)));
    let message = assert_refused(
        late.key_metadata(&fx.endpoint, KEY_ID, &customer()).await,
        "AuthenticationFailedException",
        401,
    );
    assert!(message.contains("300 seconds"), "{message}");
    // Unsigned.
    let (status, body) = fx.raw("POST", "health", b"{}".to_vec(), None).await;
    assert_eq!(
        (status, body["errorName"].as_str()),
        (401, Some("AuthenticationFailedException"))
    );
    // Signed by AWS's own signer: accepted, so the proxy verifies what AWS signs.
    let secret = fx.endpoint.secret_access_key.clone();
    let body = br#"{"requestMetadata":{"kmsRequestId":"r","kmsOperation":"KmsHealthCheck"}}"#;
    let (status, answer) = fx.raw("POST", "health", body.to_vec(), Some(&secret)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["xksProxyFleetSize"], 1);
    // The failures were audited as denials, without unverified metadata.
    let audit = fx.audit();
    assert_eq!(audit.len(), 3, "{audit:?}");
    for line in &audit {
        assert_eq!(line["error"], "AuthenticationFailedException");
        assert!(line.get("principalArn").is_none());
    }
}

#[tokio::test]
async fn a_disabled_key_is_refused_until_enabled_again() {
    let Some(module) = softhsm_child("a_disabled_key_is_refused_until_enabled_again") else {
        return;
    };
    let fx = Fixture::start(&module).await;
    let sealed = fx
        .client
        .encrypt(&fx.endpoint, KEY_ID, &customer(), b"data key", b"a")
        .await
        .unwrap();
    fx.set_state(KEY_ID, |state| state.enabled = false);
    let result = fx
        .client
        .decrypt(&fx.endpoint, KEY_ID, &customer(), &sealed, b"a")
        .await;
    let message = assert_refused(result, "InvalidStateException", 400);
    assert!(message.contains("disabled"), "{message}");
    let result = fx
        .client
        .encrypt(&fx.endpoint, KEY_ID, &customer(), b"x", b"")
        .await;
    assert_refused(result, "InvalidStateException", 400);
    let key = fx
        .client
        .key_metadata(&fx.endpoint, KEY_ID, &customer())
        .await
        .unwrap();
    assert_eq!(key.key_status, "DISABLED");
    fx.set_state(KEY_ID, |state| state.enabled = true);
    let opened = fx
        .client
        .decrypt(&fx.endpoint, KEY_ID, &customer(), &sealed, b"a")
        .await
        .unwrap();
    assert_eq!(opened.as_slice(), b"data key");
}

#[tokio::test]
async fn reasons_the_key_does_not_allow_are_denied() {
    let Some(module) = softhsm_child("reasons_the_key_does_not_allow_are_denied") else {
        return;
    };
    let fx = Fixture::start(&module).await;
    let sealed = fx
        .client
        .encrypt(&fx.endpoint, KEY_ID, &customer(), b"k", b"")
        .await
        .unwrap();
    let review = metadata("OPERATOR_INITIATED_REVIEW");
    let message = assert_refused(
        fx.client
            .decrypt(&fx.endpoint, KEY_ID, &review, &sealed, b"")
            .await,
        "AccessDeniedException",
        403,
    );
    assert!(message.contains("OPERATOR_INITIATED_REVIEW"), "{message}");
    assert_refused(
        fx.client.key_metadata(&fx.endpoint, KEY_ID, &review).await,
        "AccessDeniedException",
        403,
    );
    // A request without the extension counts as REASON_NOT_EXPECTED.
    let secret = fx.endpoint.secret_access_key.clone();
    let body = serde_json::json!({
        "requestMetadata": {
            "awsPrincipalArn": "arn:aws:iam::123456789012:root",
            "kmsOperation": "Decrypt",
            "kmsRequestId": "no-reason",
        },
        "encryptionAlgorithm": "AES_GCM",
        "ciphertext": BASE64.encode(&sealed.ciphertext),
        "initializationVector": BASE64.encode(&sealed.initialization_vector),
        "authenticationTag": BASE64.encode(&sealed.authentication_tag),
    });
    let path = format!("keys/{KEY_ID}/decrypt");
    let (status, answer) = fx
        .raw("POST", &path, body.to_string().into_bytes(), Some(&secret))
        .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["errorName"], "AccessDeniedException");
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap()
            .contains("REASON_NOT_EXPECTED")
    );
    // Once the tenant allows the review reason, it works, without a restart.
    fx.set_state(KEY_ID, |state| {
        state
            .allowed_reasons
            .push("OPERATOR_INITIATED_REVIEW".into())
    });
    let opened = fx
        .client
        .decrypt(&fx.endpoint, KEY_ID, &review, &sealed, b"")
        .await
        .unwrap();
    assert_eq!(opened.as_slice(), b"k");
    let audit = fx.audit();
    let denied: Vec<&str> = audit
        .iter()
        .filter(|l| l["error"] == "AccessDeniedException")
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        denied,
        [
            "OPERATOR_INITIATED_REVIEW",
            "OPERATOR_INITIATED_REVIEW",
            "REASON_NOT_EXPECTED"
        ]
    );
    assert_eq!(audit.last().unwrap()["decision"], "ALLOW");
}

#[tokio::test]
async fn unknown_keys_are_not_found() {
    let Some(module) = softhsm_child("unknown_keys_are_not_found") else {
        return;
    };
    let fx = Fixture::start(&module).await;
    let result = fx
        .client
        .key_metadata(&fx.endpoint, "no-such-key", &customer())
        .await;
    assert_refused(result, "KeyNotFoundException", 404);
    // In the token but not listed in the state file: not served.
    fx.keys.create_key("unlisted").await.unwrap();
    let result = fx
        .client
        .encrypt(&fx.endpoint, "unlisted", &customer(), b"x", b"")
        .await;
    assert_refused(result, "KeyNotFoundException", 404);
    // Listed but destroyed in the token: gone at once.
    let sealed = fx
        .client
        .encrypt(&fx.endpoint, KEY_ID, &customer(), b"x", b"")
        .await
        .unwrap();
    fx.keys.destroy_key(KEY_ID).await.unwrap();
    let result = fx
        .client
        .decrypt(&fx.endpoint, KEY_ID, &customer(), &sealed, b"")
        .await;
    assert_refused(result, "KeyNotFoundException", 404);
    let result = fx
        .client
        .key_metadata(&fx.endpoint, KEY_ID, &customer())
        .await;
    assert_refused(result, "KeyNotFoundException", 404);
}

#[tokio::test]
async fn malformed_and_oversized_requests_are_refused() {
    let Some(module) = softhsm_child("malformed_and_oversized_requests_are_refused") else {
        return;
    };
    let fx = Fixture::start(&module).await;
    let secret = fx.endpoint.secret_access_key.clone();
    let path = format!("keys/{KEY_ID}/encrypt");
    let huge = serde_json::json!({
        "requestMetadata": {"awsPrincipalArn": "a", "kmsOperation": "Encrypt", "kmsRequestId": "r"},
        "plaintext": BASE64.encode(vec![0u8; 100 * 1024]),
        "encryptionAlgorithm": "AES_GCM",
    });
    let (status, answer) = fx
        .raw("POST", &path, huge.to_string().into_bytes(), Some(&secret))
        .await;
    assert_eq!(
        (status, answer["errorName"].as_str()),
        (400, Some("ValidationException")),
        "{answer}"
    );
    assert!(answer["errorMessage"].as_str().unwrap().contains("65536"));
    // Within the body limit, over the plaintext one.
    let big = serde_json::json!({
        "requestMetadata": {"awsPrincipalArn": "a", "kmsOperation": "Encrypt", "kmsRequestId": "r",
                            "nuageAccessReason": "CUSTOMER_INITIATED_ACCESS"},
        "plaintext": BASE64.encode(vec![0u8; 5000]),
        "encryptionAlgorithm": "AES_GCM",
    });
    let (status, answer) = fx
        .raw("POST", &path, big.to_string().into_bytes(), Some(&secret))
        .await;
    assert_eq!(
        (status, answer["errorName"].as_str()),
        (501, Some("UnsupportedOperationException"))
    );
    let (status, answer) = fx
        .raw("POST", &path, b"not json".to_vec(), Some(&secret))
        .await;
    assert_eq!(
        (status, answer["errorName"].as_str()),
        (400, Some("ValidationException"))
    );
    let no_arn = serde_json::json!({
        "requestMetadata": {"kmsOperation": "Encrypt", "kmsRequestId": "r"},
        "plaintext": "AA==", "encryptionAlgorithm": "AES_GCM",
    });
    let (status, answer) = fx
        .raw(
            "POST",
            &path,
            no_arn.to_string().into_bytes(),
            Some(&secret),
        )
        .await;
    assert_eq!(
        (status, answer["errorName"].as_str()),
        (400, Some("ValidationException"))
    );
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap()
            .contains("awsPrincipalArn")
    );
    let (status, answer) = fx.raw("GET", "health", Vec::new(), Some(&secret)).await;
    assert_eq!(status, 405, "{answer}");
    let (status, answer) = fx
        .raw("POST", "keys/k/sign", b"{}".to_vec(), Some(&secret))
        .await;
    assert_eq!(
        (status, answer["errorName"].as_str()),
        (404, Some("InvalidUriPathException"))
    );
    // The client refuses to send what no proxy must accept.
    let result = fx
        .client
        .encrypt(&fx.endpoint, KEY_ID, &customer(), &[0u8; 5000], b"")
        .await;
    assert!(matches!(result, Err(XksError::Unreachable(m)) if m.contains("nothing was sent")));
}

#[tokio::test]
async fn unreachable_proxies_are_unreachable() {
    let client = XksClient::new(XksClientConfig::new(REGION)).unwrap();
    let endpoint = |uri: String| XksProxyEndpoint {
        uri_endpoint: uri,
        uri_path: URI_PATH.to_owned(),
        access_key_id: "AKIAI2SFODNN7EXAMPLE".to_owned(),
        secret_access_key: Zeroizing::new("secret".to_owned()),
    };
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let result = client
        .health(&endpoint(format!("https://{closed}")), &customer())
        .await;
    assert!(
        matches!(&result, Err(XksError::Unreachable(m)) if m.contains("cannot reach")),
        "{result:?}"
    );
    // A listener that accepts and never answers: the call's timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let started = std::time::Instant::now();
    let result = client
        .health(&endpoint(format!("https://{address}")), &customer())
        .await;
    assert!(
        matches!(&result, Err(XksError::Unreachable(m)) if m.contains("did not answer within")),
        "{result:?}"
    );
    let limit = nuage_base::limits::XKS_CALL_TIMEOUT_MS_MAX;
    assert!(started.elapsed() < std::time::Duration::from_millis(limit + 2000));
    held.abort();
    // Plain HTTP off loopback is refused before anything is sent.
    let result = client
        .health(&endpoint("http://xks.example.com".to_owned()), &customer())
        .await;
    assert!(
        matches!(&result, Err(XksError::Unreachable(m)) if m.contains("loopback") && m.contains("nothing was sent")),
        "{result:?}"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_unreachable() {
    let Some(module) = softhsm_child("an_untrusted_certificate_is_unreachable") else {
        return;
    };
    let fx = Fixture::start(&module).await;
    let (other, _) = nuage_xks::self_signed_certificate(vec!["127.0.0.1".into()]).unwrap();
    let stranger = client_with(&other, Arc::new(SystemClock));
    let result = stranger.health(&fx.endpoint, &customer()).await;
    assert!(
        matches!(&result, Err(XksError::Unreachable(m)) if m.contains("cannot reach")),
        "{result:?}"
    );
}
