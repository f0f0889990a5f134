//! Custom key stores and keys in them, against [`TestProxy`]: an in-process
//! test double of an external key store proxy (unit level only; the
//! end-to-end tests drive the real `nuage-xks` client and proxy).

use super::*;
use crate::external::XksRequestMetadata;
use crate::external::{XksCiphertext, XksError, XksHealth, XksKeyMetadata, XksProxyEndpoint};
use nuage_meta::DocumentStore;
use nuage_meta::embedded::EmbeddedMetaStore;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

const TENANT: &str = "111122223333";
const OTHER: &str = "444455556666";
const REGION: &str = "fr-par";
const ACCESS_KEY_ID: &str = "ABCDEFGHIJKLMNOPQRST";
const SECRET: &str = "s3cr3tS3CR3Ts3cr3tS3CR3Ts3cr3tS3CR3Ts3cr3tXYZ/+=";
const ENDPOINT: &str = "https://xks.example.com";
const PATH: &str = "/tenant-a/kms/xks/v1";
const PRINCIPAL: &str = "arn:aws:iam::111122223333:user/alice";

/// How the double answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    /// Every call fails as a connection failure would.
    Unreachable,
    /// Health answers with every external key manager unavailable.
    AllUnavailable,
    /// Answers a body that is not the protocol's.
    Garbage,
    /// Its credential was rotated: Nuage's no longer authenticates.
    RotatedCredential,
}

/// One external key the double holds.
struct TestKey {
    key: nuage_crypto::KeyEncryptionKey,
    spec: String,
    status: String,
}

/// An external key store proxy in this process: real AES-256-GCM
/// (`nuage_crypto::seal_message`) under keys it holds, SigV4 replaced by a
/// comparison of the credential, and switches to make it refuse.
#[derive(Default)]
struct TestProxy {
    keys: Mutex<HashMap<String, TestKey>>,
    mode: Mutex<Option<Mode>>,
    /// The access reasons it refuses (`AccessDeniedException`).
    refused_reasons: Mutex<Vec<String>>,
    /// Every call: what was called, and its metadata.
    calls: Mutex<Vec<(String, XksRequestMetadata)>>,
}

impl std::fmt::Debug for TestProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestProxy")
    }
}

fn refused(name: &str, status: u16) -> XksError {
    XksError::Refused {
        error_name: name.into(),
        status,
        message: format!("test proxy: {name}"),
    }
}

impl TestProxy {
    fn new() -> Arc<Self> {
        let proxy = Arc::new(Self::default());
        proxy.add_key("ext-1", "AES_256", "ENABLED");
        proxy.add_key("ext-2", "AES_256", "ENABLED");
        proxy
    }

    fn add_key(&self, id: &str, spec: &str, status: &str) {
        self.keys.lock().unwrap().insert(
            id.to_owned(),
            TestKey {
                key: nuage_crypto::KeyEncryptionKey::generate().unwrap(),
                spec: spec.into(),
                status: status.into(),
            },
        );
    }

    fn set_status(&self, id: &str, status: &str) {
        self.keys.lock().unwrap().get_mut(id).unwrap().status = status.into();
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = Some(mode);
    }

    fn calls(&self) -> Vec<(String, XksRequestMetadata)> {
        self.calls.lock().unwrap().clone()
    }

    /// Checks what every call checks; records the call.
    fn admit(
        &self,
        call: &str,
        endpoint: &XksProxyEndpoint,
        metadata: &XksRequestMetadata,
    ) -> Result<(), XksError> {
        self.calls
            .lock()
            .unwrap()
            .push((call.to_owned(), metadata.clone()));
        match self.mode.lock().unwrap().unwrap_or(Mode::Normal) {
            Mode::Unreachable => {
                return Err(XksError::Unreachable("connection refused".into()));
            }
            Mode::Garbage => return Err(refused("NotAnXksError", 500)),
            Mode::Normal | Mode::AllUnavailable | Mode::RotatedCredential => {}
        }
        let rotated = *self.mode.lock().unwrap() == Some(Mode::RotatedCredential);
        if rotated
            || endpoint.access_key_id != ACCESS_KEY_ID
            || endpoint.secret_access_key.as_str() != SECRET
        {
            return Err(refused("AuthenticationFailedException", 401));
        }
        if self
            .refused_reasons
            .lock()
            .unwrap()
            .contains(&metadata.access_reason)
        {
            return Err(refused("AccessDeniedException", 403));
        }
        Ok(())
    }

    fn usable_key(&self, id: &str) -> Result<nuage_crypto::KeyEncryptionKey, XksError> {
        let keys = self.keys.lock().unwrap();
        let key = keys
            .get(id)
            .ok_or_else(|| refused("KeyNotFoundException", 404))?;
        if key.status != "ENABLED" {
            return Err(refused("InvalidStateException", 400));
        }
        // A copy of the key, through its wrapped form under itself.
        let wrapped = nuage_crypto::wrap_key_encryption_key(&key.key, &key.key, b"copy").unwrap();
        Ok(nuage_crypto::unwrap_key_encryption_key(&key.key, &wrapped, b"copy").unwrap())
    }

    /// What the proxy's encrypt does, for tests that forge layers.
    fn seal(&self, id: &str, plaintext: &[u8], aad: &[u8]) -> XksCiphertext {
        let key = self.usable_key(id).unwrap();
        let sealed = nuage_crypto::seal_message(&key, aad, plaintext).unwrap();
        let (ciphertext, tag) = sealed.ciphertext.split_at(sealed.ciphertext.len() - 16);
        XksCiphertext {
            ciphertext: ciphertext.to_vec(),
            initialization_vector: sealed.nonce.to_vec(),
            authentication_tag: tag.to_vec(),
            ciphertext_metadata: None,
        }
    }

    /// What the proxy's decrypt does.
    fn open(&self, id: &str, outer: &XksCiphertext, aad: &[u8]) -> Result<Vec<u8>, XksError> {
        let key = self.usable_key(id)?;
        let nonce: [u8; 12] = outer
            .initialization_vector
            .as_slice()
            .try_into()
            .map_err(|_| refused("InvalidCiphertextException", 400))?;
        let mut ciphertext = outer.ciphertext.clone();
        ciphertext.extend_from_slice(&outer.authentication_tag);
        nuage_crypto::open_message(
            &key,
            &nuage_crypto::SealedMessage { nonce, ciphertext },
            aad,
        )
        .map(|p| p.to_vec())
        .map_err(|_| refused("InvalidCiphertextException", 400))
    }
}

#[async_trait::async_trait]
impl ExternalKeyStore for TestProxy {
    async fn health(
        &self,
        endpoint: &XksProxyEndpoint,
        metadata: &XksRequestMetadata,
    ) -> Result<XksHealth, XksError> {
        self.admit("health", endpoint, metadata)?;
        let all_down = *self.mode.lock().unwrap() == Some(Mode::AllUnavailable);
        Ok(XksHealth {
            xks_proxy_vendor: "test".into(),
            xks_proxy_model: "double".into(),
            ekm_vendor: "test".into(),
            ekm_health: vec![if all_down { "UNAVAILABLE" } else { "ACTIVE" }.into()],
        })
    }

    async fn key_metadata(
        &self,
        endpoint: &XksProxyEndpoint,
        xks_key_id: &str,
        metadata: &XksRequestMetadata,
    ) -> Result<XksKeyMetadata, XksError> {
        self.admit("metadata", endpoint, metadata)?;
        let keys = self.keys.lock().unwrap();
        let key = keys
            .get(xks_key_id)
            .ok_or_else(|| refused("KeyNotFoundException", 404))?;
        Ok(XksKeyMetadata {
            key_spec: key.spec.clone(),
            key_usage: vec!["ENCRYPT".into(), "DECRYPT".into()],
            key_status: key.status.clone(),
        })
    }

    async fn encrypt(
        &self,
        endpoint: &XksProxyEndpoint,
        xks_key_id: &str,
        metadata: &XksRequestMetadata,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<XksCiphertext, XksError> {
        self.admit("encrypt", endpoint, metadata)?;
        self.usable_key(xks_key_id)?;
        Ok(self.seal(xks_key_id, plaintext, aad))
    }

    async fn decrypt(
        &self,
        endpoint: &XksProxyEndpoint,
        xks_key_id: &str,
        metadata: &XksRequestMetadata,
        ciphertext: &XksCiphertext,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, XksError> {
        self.admit("decrypt", endpoint, metadata)?;
        self.open(xks_key_id, ciphertext, aad).map(Zeroizing::new)
    }
}

/// A clock the test moves.
struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now_unix_ns(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Fixture {
    kms: CustomerKeys,
    proxy: Arc<TestProxy>,
    clock: Arc<TestClock>,
    store: Arc<EmbeddedMetaStore>,
    _dir: tempfile::TempDir,
}

fn caller() -> KeyCaller {
    KeyCaller::direct(PRINCIPAL, "REQ-42")
}

fn credential(secret: &str) -> XksCredential {
    XksCredential {
        access_key_id: ACCESS_KEY_ID.into(),
        raw_secret_access_key: Zeroizing::new(secret.into()),
    }
}

fn new_store(name: &str, path: &str) -> NewCustomKeyStore {
    NewCustomKeyStore {
        name: name.into(),
        store_type: Some(EXTERNAL_KEY_STORE.into()),
        uri_endpoint: Some(ENDPOINT.into()),
        uri_path: Some(path.into()),
        connectivity: Some(PUBLIC_ENDPOINT.into()),
        credential: Some(credential(SECRET)),
    }
}

fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap());
        let root = nuage_crypto::RootKeyFile::open_or_create(&dir.path().join("root.key")).unwrap();
        let clock = Arc::new(TestClock(AtomicI64::new(1_700_000_000 * 1_000_000_000)));
        let proxy = TestProxy::new();
        let kms = CustomerKeys::new(KeyService::new(store.clone(), root), clock.clone(), REGION)
            .with_external_key_store(proxy.clone());
        Self {
            kms,
            proxy,
            clock,
            store,
            _dir: dir,
        }
    }

    async fn connected_store(&self) -> CustomKeyStore {
        let store = self
            .kms
            .create_custom_key_store(TENANT, new_store("hyok", PATH), &caller())
            .await
            .unwrap();
        self.kms
            .connect_custom_key_store(TENANT, &store.id, &caller())
            .await
            .unwrap()
    }

    async fn external_key(&self, store: &str, xks_key_id: &str) -> KmsKey {
        self.kms
            .create_external_key(TENANT, NewKey::default(), store, xks_key_id, &caller())
            .await
            .unwrap()
    }

    async fn decrypt(&self, blob: &[u8], ctx: &EncryptionContext) -> KmsResult<Vec<u8>> {
        let (key, parsed) = self.kms.key_of_ciphertext(TENANT, blob).await?;
        self.kms
            .decrypt(&key, &parsed, ctx, &caller(), "Decrypt")
            .await
            .map(|p| p.to_vec())
    }
}

#[tokio::test]
async fn store_lifecycle_as_aws() {
    let f = Fixture::new();
    let store = f
        .kms
        .create_custom_key_store(TENANT, new_store("hyok", PATH), &caller())
        .await
        .unwrap();
    assert!(
        store.id.starts_with("cks-") && store.id.len() == 21,
        "{}",
        store.id
    );
    assert!(store.id[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(store.connection_state, ConnectionState::Disconnected);
    assert_eq!(store.connection_error_code, None);
    assert_eq!(store.store_type(), "EXTERNAL_KEY_STORE");
    assert_eq!(store.connectivity(), "PUBLIC_ENDPOINT");
    // Creation asked the proxy for its health, with the credential.
    let calls = f.proxy.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "health");
    assert_eq!(calls[0].1.kms_operation, "CreateCustomKeyStore");
    assert_eq!(calls[0].1.kms_key_arn, None);

    // Names are unique per tenant; so are proxy URIs. Another tenant is free.
    let again = f
        .kms
        .create_custom_key_store(TENANT, new_store("hyok", "/other/kms/xks/v1"), &caller())
        .await;
    assert!(
        matches!(again, Err(KmsError::CustomKeyStoreNameInUse(_))),
        "{again:?}"
    );
    let same_uri = f
        .kms
        .create_custom_key_store(TENANT, new_store("second", PATH), &caller())
        .await;
    assert!(
        matches!(same_uri, Err(KmsError::XksProxyUriInUse(_))),
        "{same_uri:?}"
    );
    f.kms
        .create_custom_key_store(OTHER, new_store("hyok", PATH), &caller())
        .await
        .unwrap();
    let second = f
        .kms
        .create_custom_key_store(TENANT, new_store("second", "/kms/xks/v1"), &caller())
        .await
        .unwrap();

    // Describe: all, one page at a time, by id, by name; another tenant's
    // store is not found.
    let all = f
        .kms
        .describe_custom_key_stores(TENANT, None, None, None, 100)
        .await
        .unwrap();
    assert_eq!(
        all.items.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [store.id.as_str(), second.id.as_str()]
    );
    let first_page = f
        .kms
        .describe_custom_key_stores(TENANT, None, None, None, 1)
        .await
        .unwrap();
    assert_eq!(first_page.items[0].id, store.id);
    assert_eq!(first_page.next_marker.as_deref(), Some(store.id.as_str()));
    let next = f
        .kms
        .describe_custom_key_stores(TENANT, None, None, first_page.next_marker.as_deref(), 1)
        .await
        .unwrap();
    assert_eq!(next.items[0].id, second.id);
    assert_eq!(next.next_marker, None);
    let by_name = f
        .kms
        .describe_custom_key_stores(TENANT, None, Some("second"), None, 100)
        .await
        .unwrap();
    assert_eq!(by_name.items[0].id, second.id);
    assert!(matches!(
        f.kms
            .describe_custom_key_stores(OTHER, Some(&store.id), None, None, 100)
            .await,
        Err(KmsError::CustomKeyStoreNotFound(_))
    ));
    assert!(matches!(
        f.kms
            .describe_custom_key_stores(TENANT, None, None, Some("cks-nope"), 100)
            .await,
        Err(KmsError::InvalidMarker(_))
    ));

    // Connect, then a key in it.
    let connected = f
        .kms
        .connect_custom_key_store(TENANT, &store.id, &caller())
        .await
        .unwrap();
    assert_eq!(connected.connection_state, ConnectionState::Connected);
    let key = f.external_key(&store.id, "ext-1").await;
    assert_eq!(key.origin, KeyOrigin::ExternalKeyStore);
    assert_eq!(key.custom_key_store_id.as_deref(), Some(store.id.as_str()));
    assert_eq!(key.xks_key_id.as_deref(), Some("ext-1"));

    // Rename while connected (AWS allows it); the endpoint needs a
    // disconnected store.
    let renamed = f
        .kms
        .update_custom_key_store(
            TENANT,
            &store.id,
            CustomKeyStoreUpdate {
                new_name: Some("renamed".into()),
                ..CustomKeyStoreUpdate::default()
            },
            &caller(),
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "renamed");
    let move_endpoint = CustomKeyStoreUpdate {
        uri_endpoint: Some("https://xks2.example.com:8443".into()),
        ..CustomKeyStoreUpdate::default()
    };
    assert!(matches!(
        f.kms
            .update_custom_key_store(TENANT, &store.id, move_endpoint.clone(), &caller())
            .await,
        Err(KmsError::CustomKeyStoreInvalidState(_))
    ));

    // Delete: refused while connected, then while it has keys.
    assert!(matches!(
        f.kms.delete_custom_key_store(TENANT, &store.id).await,
        Err(KmsError::CustomKeyStoreInvalidState(_))
    ));
    let disconnected = f
        .kms
        .disconnect_custom_key_store(TENANT, &store.id)
        .await
        .unwrap();
    assert_eq!(disconnected.connection_state, ConnectionState::Disconnected);
    assert!(matches!(
        f.kms.disconnect_custom_key_store(TENANT, &store.id).await,
        Err(KmsError::CustomKeyStoreInvalidState(_))
    ));
    let moved = f
        .kms
        .update_custom_key_store(TENANT, &store.id, move_endpoint, &caller())
        .await
        .unwrap();
    assert_eq!(moved.uri_endpoint, "https://xks2.example.com:8443");
    assert!(matches!(
        f.kms.delete_custom_key_store(TENANT, &store.id).await,
        Err(KmsError::CustomKeyStoreHasKeys(_))
    ));
    // Once its key is deleted (after the waiting period), the store goes,
    // and the external key is free again for a new store's key.
    f.kms
        .schedule_deletion(TENANT, &key.key_id, Some(7))
        .await
        .unwrap();
    f.clock.0.fetch_add(8 * NS_PER_DAY, Ordering::SeqCst);
    assert!(matches!(
        f.kms.key(TENANT, &key.key_id).await,
        Err(KmsError::NotFound(_))
    ));
    f.kms
        .delete_custom_key_store(TENANT, &store.id)
        .await
        .unwrap();
    assert!(matches!(
        f.kms.custom_key_store(TENANT, &store.id).await,
        Err(KmsError::CustomKeyStoreNotFound(_))
    ));
    f.kms
        .connect_custom_key_store(TENANT, &second.id, &caller())
        .await
        .unwrap();
    f.external_key(&second.id, "ext-1").await;
}

#[tokio::test]
async fn store_members_are_checked_as_aws_checks_them() {
    let f = Fixture::new();
    let create = |new: NewCustomKeyStore| {
        let kms = f.kms.clone();
        async move { kms.create_custom_key_store(TENANT, new, &caller()).await }
    };
    let unsupported = [
        NewCustomKeyStore {
            store_type: None,
            ..new_store("a", PATH)
        },
        NewCustomKeyStore {
            store_type: Some("AWS_CLOUDHSM".into()),
            ..new_store("a", PATH)
        },
        NewCustomKeyStore {
            connectivity: Some("VPC_ENDPOINT_SERVICE".into()),
            ..new_store("a", PATH)
        },
    ];
    for new in unsupported {
        let refused = create(new).await;
        assert!(
            matches!(refused, Err(KmsError::Unsupported(_))),
            "{refused:?}"
        );
    }
    let mut invalid = Vec::new();
    for path in [
        "/kms/xks/v2",
        "kms/xks/v1",
        "/a b/kms/xks/v1",
        "/kms/xks/v1/",
        "//kms/xks/v1x",
    ] {
        invalid.push(NewCustomKeyStore {
            uri_path: Some(path.into()),
            ..new_store("a", PATH)
        });
    }
    for endpoint in [
        "https://xks.example.com/path",
        "ftp://xks.example.com",
        "https://xks.example.com:0",
        "https://xks.example.com:99999",
        "https://xks_example.com",
    ] {
        invalid.push(NewCustomKeyStore {
            uri_endpoint: Some(endpoint.into()),
            ..new_store("a", PATH)
        });
    }
    for (id, secret) in [
        ("SHORT", SECRET),
        ("abcdefghijklmnopqrst", SECRET),
        (ACCESS_KEY_ID, "too-short"),
        (ACCESS_KEY_ID, &"x".repeat(65)),
        (ACCESS_KEY_ID, &format!("{}!", &SECRET[1..])),
    ] {
        invalid.push(NewCustomKeyStore {
            credential: Some(XksCredential {
                access_key_id: id.into(),
                raw_secret_access_key: Zeroizing::new(secret.into()),
            }),
            ..new_store("a", PATH)
        });
    }
    invalid.push(new_store("", PATH));
    invalid.push(NewCustomKeyStore {
        credential: None,
        ..new_store("a", PATH)
    });
    invalid.push(NewCustomKeyStore {
        store_type: Some("SOMETHING".into()),
        ..new_store("a", PATH)
    });
    for new in invalid {
        match create(new).await {
            Err(KmsError::Validation(message)) => {
                assert!(!message.contains(&SECRET[..20]), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    // Plain HTTP only to loopback.
    let http = create(NewCustomKeyStore {
        uri_endpoint: Some("http://xks.example.com".into()),
        ..new_store("a", PATH)
    })
    .await;
    assert!(
        matches!(http, Err(KmsError::XksProxyInvalidConfiguration(_))),
        "{http:?}"
    );
    for endpoint in [
        "http://127.0.0.1:8080",
        "http://localhost:9",
        "http://[::1]:443",
    ] {
        create(NewCustomKeyStore {
            name: endpoint.into(),
            uri_endpoint: Some(endpoint.into()),
            ..new_store("a", PATH)
        })
        .await
        .unwrap();
    }
    // Nothing was created by the refused requests.
    let listed = f
        .kms
        .describe_custom_key_stores(TENANT, None, None, None, 100)
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 3);

    // Without an XKS client, the server says so.
    let plain = Fixture::new();
    let no_client = CustomerKeys::new(plain.kms.key_service().clone(), plain.clock.clone(), REGION);
    match no_client
        .create_custom_key_store(TENANT, new_store("a", PATH), &caller())
        .await
    {
        Err(KmsError::Unsupported(message)) => assert!(message.contains("no external key store")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_secret_is_stored_only_sealed_and_never_shown() {
    let f = Fixture::new();
    let store = f.connected_store().await;
    let doc = f
        .store
        .get_document(custom_key_store::STORES, TENANT)
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&doc.value);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
    for needle in [SECRET, &SECRET[..24], &b64[..24]] {
        assert!(
            !text.contains(needle),
            "stored document holds the secret: {text}"
        );
    }
    assert!(
        text.contains(ACCESS_KEY_ID),
        "the access key id is not secret"
    );
    assert!(!format!("{store:?}").contains(&SECRET[..24]));
    // Yet it opens after a restart (from the root of trust alone), and
    // rotating it re-seals the new one.
    let root = nuage_crypto::RootKeyFile::open_or_create(&f._dir.path().join("root.key")).unwrap();
    let restarted = CustomerKeys::new(
        KeyService::new(f.store.clone(), root),
        f.clock.clone(),
        REGION,
    )
    .with_external_key_store(f.proxy.clone());
    let reloaded = restarted.custom_key_store(TENANT, &store.id).await.unwrap();
    let endpoint = restarted.proxy_endpoint(&reloaded).await.unwrap();
    assert_eq!(endpoint.secret_access_key.as_str(), SECRET);
    assert!(!format!("{endpoint:?}").contains(&SECRET[..24]));
    // The sealed secret is bound to its store: moved to another store's
    // record, it does not open.
    let other = restarted
        .create_custom_key_store(TENANT, new_store("other", "/kms/xks/v1"), &caller())
        .await
        .unwrap();
    let mut forged = other.clone();
    forged.secret = reloaded.secret.clone();
    assert!(matches!(
        restarted.proxy_endpoint(&forged).await,
        Err(KmsError::Internal(_))
    ));
}

#[tokio::test]
async fn connection_failures_are_recorded_with_aws_codes() {
    let f = Fixture::new();
    let store = f
        .kms
        .create_custom_key_store(TENANT, new_store("hyok", PATH), &caller())
        .await
        .unwrap();
    for (mode, code, error) in [
        (
            Mode::Unreachable,
            ConnectionErrorCode::XksProxyNotReachable,
            "XksProxyUriUnreachable",
        ),
        (
            Mode::AllUnavailable,
            ConnectionErrorCode::XksProxyNotReachable,
            "XksProxyUriUnreachable",
        ),
        (
            Mode::Garbage,
            ConnectionErrorCode::XksProxyInvalidResponse,
            "XksProxyInvalidResponse",
        ),
        (
            Mode::RotatedCredential,
            ConnectionErrorCode::InvalidCredentials,
            "XksProxyIncorrectAuthenticationCredential",
        ),
    ] {
        f.proxy.set_mode(mode);
        let refused = f
            .kms
            .connect_custom_key_store(TENANT, &store.id, &caller())
            .await
            .unwrap_err();
        assert!(format!("{refused:?}").starts_with(error), "{refused:?}");
        let failed = f.kms.custom_key_store(TENANT, &store.id).await.unwrap();
        assert_eq!(failed.connection_state, ConnectionState::Failed);
        assert_eq!(failed.connection_error_code, Some(code));
        assert_eq!(
            failed.connection_error_code.map(|c| c.as_str()),
            Some(match code {
                ConnectionErrorCode::XksProxyNotReachable => "XKS_PROXY_NOT_REACHABLE",
                ConnectionErrorCode::InvalidCredentials => "INVALID_CREDENTIALS",
                _ => "XKS_PROXY_INVALID_RESPONSE",
            })
        );
        // A failed store must be disconnected before connecting again.
        f.proxy.set_mode(Mode::Normal);
        assert!(matches!(
            f.kms
                .connect_custom_key_store(TENANT, &store.id, &caller())
                .await,
            Err(KmsError::CustomKeyStoreInvalidState(_))
        ));
        f.kms
            .disconnect_custom_key_store(TENANT, &store.id)
            .await
            .unwrap();
    }
    // The proxy refuses the access reason: XKS_PROXY_ACCESS_DENIED.
    f.proxy
        .refused_reasons
        .lock()
        .unwrap()
        .push("CUSTOMER_INITIATED_ACCESS".into());
    assert!(matches!(
        f.kms
            .connect_custom_key_store(TENANT, &store.id, &caller())
            .await,
        Err(KmsError::AccessDenied(_))
    ));
    let denied = f.kms.custom_key_store(TENANT, &store.id).await.unwrap();
    assert_eq!(
        denied.connection_error_code.map(|c| c.as_str()),
        Some("XKS_PROXY_ACCESS_DENIED")
    );
    f.proxy.refused_reasons.lock().unwrap().clear();
    f.kms
        .disconnect_custom_key_store(TENANT, &store.id)
        .await
        .unwrap();
    // A wrong credential: the update is refused (the proxy is asked with
    // the new values first) and nothing changes.
    let wrong = CustomKeyStoreUpdate {
        credential: Some(credential(&SECRET.replace('s', "t"))),
        ..CustomKeyStoreUpdate::default()
    };
    assert!(matches!(
        f.kms
            .update_custom_key_store(TENANT, &store.id, wrong, &caller())
            .await,
        Err(KmsError::XksProxyIncorrectAuthenticationCredential(_))
    ));
    let connected = f
        .kms
        .connect_custom_key_store(TENANT, &store.id, &caller())
        .await
        .unwrap();
    assert_eq!(connected.connection_state, ConnectionState::Connected);
    assert_eq!(connected.connection_error_code, None);
    let last = f.proxy.calls().pop().unwrap();
    assert_eq!(last.1.kms_operation, "ConnectCustomKeyStore");
    assert_eq!(last.1.aws_principal_arn, PRINCIPAL);
}

#[tokio::test]
async fn keys_in_a_store_need_a_usable_external_key() {
    let f = Fixture::new();
    let store = f
        .kms
        .create_custom_key_store(TENANT, new_store("hyok", PATH), &caller())
        .await
        .unwrap();
    let create = |xks: &'static str| {
        let kms = f.kms.clone();
        let id = store.id.clone();
        async move {
            kms.create_external_key(TENANT, NewKey::default(), &id, xks, &caller())
                .await
        }
    };
    assert!(matches!(
        create("ext-1").await,
        Err(KmsError::CustomKeyStoreInvalidState(_))
    ));
    f.kms
        .connect_custom_key_store(TENANT, &store.id, &caller())
        .await
        .unwrap();
    assert!(matches!(
        create("missing").await,
        Err(KmsError::XksKeyNotFound(_))
    ));
    assert!(matches!(
        create("bad id!").await,
        Err(KmsError::Validation(_))
    ));
    f.proxy.add_key("hmac", "HMAC_256", "ENABLED");
    f.proxy.add_key("off", "AES_256", "DISABLED");
    for xks in ["hmac", "off"] {
        assert!(matches!(
            create(xks).await,
            Err(KmsError::XksKeyInvalidConfiguration(_))
        ));
    }
    let key = create("ext-1").await.unwrap();
    // The proxy was asked about the key, for the new key's ARN.
    let (call, metadata) = f.proxy.calls().pop().unwrap();
    assert_eq!(call, "metadata");
    assert_eq!(metadata.kms_key_arn.as_deref(), Some(key.arn.as_str()));
    assert_eq!(metadata.kms_operation, "CreateKey");
    match create("ext-1").await {
        Err(KmsError::XksKeyAlreadyInUse(message)) => assert!(message.contains(&key.key_id)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        f.kms
            .create_external_key(
                TENANT,
                NewKey::default(),
                "cks-00000000000000000",
                "ext-2",
                &caller()
            )
            .await,
        Err(KmsError::CustomKeyStoreNotFound(_))
    ));
    // No rotation by KMS, as AWS.
    for refused in [
        f.kms.rotate_on_demand(TENANT, &key.key_id).await,
        f.kms.enable_rotation(TENANT, &key.key_id, None).await,
    ] {
        assert!(
            matches!(refused, Err(KmsError::Unsupported(_))),
            "{refused:?}"
        );
    }
    assert_eq!(f.kms.counts(TENANT).await.unwrap().0.keys, 1);
}

#[tokio::test]
async fn double_encryption_round_trips_and_names_the_caller() {
    let f = Fixture::new();
    let store = f.connected_store().await;
    let key = f.external_key(&store.id, "ext-1").await;
    let plain = f.kms.create_key(TENANT, NewKey::default()).await.unwrap();
    let ctx = context(&[("app", "billing")]);
    let before = f.proxy.calls().len();
    let blob = f
        .kms
        .encrypt(&key, b"secret message", &ctx, &caller(), "Encrypt")
        .await
        .unwrap();
    assert_eq!(blob[0], 0x02);
    assert_eq!(blob.len(), 14 + 79);
    assert!(!blob.windows(6).any(|w| w == b"secret"));
    assert_eq!(f.decrypt(&blob, &ctx).await.unwrap(), b"secret message");
    assert!(matches!(
        f.decrypt(&blob, &context(&[("app", "other")])).await,
        Err(KmsError::InvalidCiphertext(_))
    ));
    // Every use called the proxy (no cache), with the request's metadata.
    let calls = &f.proxy.calls()[before..];
    assert_eq!(
        calls.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        ["encrypt", "decrypt", "decrypt"]
    );
    for ((_, metadata), operation) in calls.iter().zip(["Encrypt", "Decrypt", "Decrypt"]) {
        assert_eq!(
            *metadata,
            XksRequestMetadata {
                aws_principal_arn: PRINCIPAL.into(),
                kms_key_arn: Some(key.arn.clone()),
                kms_operation: operation.into(),
                kms_request_id: "REQ-42".into(),
                kms_via_service: None,
                access_reason: "CUSTOMER_INITIATED_ACCESS".into(),
            }
        );
    }

    // GenerateDataKey, and ReEncrypt both ways with an ordinary key.
    let (data_key, wrapped) = f
        .kms
        .generate_data_key(&key, 32, &ctx, &caller(), "GenerateDataKey")
        .await
        .unwrap();
    assert_eq!(
        f.decrypt(&wrapped, &ctx).await.unwrap(),
        data_key.as_slice()
    );
    assert_eq!(
        f.proxy.calls().last().map(|(_, m)| m.kms_operation.clone()),
        Some("Decrypt".into())
    );
    let (source, parsed) = f.kms.key_of_ciphertext(TENANT, &blob).await.unwrap();
    let opened = f
        .kms
        .decrypt(&source, &parsed, &ctx, &caller(), "ReEncrypt")
        .await
        .unwrap();
    let moved = f
        .kms
        .encrypt(&plain, &opened, &ctx, &caller(), "ReEncrypt")
        .await
        .unwrap();
    assert_eq!(moved[0], 0x01);
    assert_eq!(f.decrypt(&moved, &ctx).await.unwrap(), b"secret message");
    let back = f
        .kms
        .encrypt(&key, b"secret message", &ctx, &caller(), "ReEncrypt")
        .await
        .unwrap();
    assert_eq!(f.decrypt(&back, &ctx).await.unwrap(), b"secret message");

    // The external key disabled in the tenant's key manager: unusable at
    // once, with a message saying why; enabled again, usable again.
    f.proxy.set_status("ext-1", "DISABLED");
    for refused in [
        f.decrypt(&blob, &ctx).await.map(|_| ()),
        f.kms
            .encrypt(&key, b"x", &ctx, &caller(), "Encrypt")
            .await
            .map(|_| ()),
    ] {
        match refused {
            Err(KmsError::InvalidState(message)) => assert!(message.contains("disabled")),
            other => panic!("{other:?}"),
        }
    }
    f.proxy.set_status("ext-1", "ENABLED");
    f.decrypt(&blob, &ctx).await.unwrap();
    // The proxy unreachable, or the store disconnected.
    f.proxy.set_mode(Mode::Unreachable);
    assert!(matches!(
        f.decrypt(&blob, &ctx).await,
        Err(KmsError::XksProxyUriUnreachable(_))
    ));
    f.proxy.set_mode(Mode::Normal);
    f.kms
        .disconnect_custom_key_store(TENANT, &store.id)
        .await
        .unwrap();
    let calls = f.proxy.calls().len();
    assert!(matches!(
        f.decrypt(&blob, &ctx).await,
        Err(KmsError::CustomKeyStoreInvalidState(_))
    ));
    assert_eq!(
        f.proxy.calls().len(),
        calls,
        "no call to a disconnected store"
    );
    f.kms
        .connect_custom_key_store(TENANT, &store.id, &caller())
        .await
        .unwrap();
    f.decrypt(&blob, &ctx).await.unwrap();
    // The external key gone from the key manager.
    f.proxy.keys.lock().unwrap().remove("ext-1");
    assert!(matches!(
        f.decrypt(&blob, &ctx).await,
        Err(KmsError::XksKeyNotFound(_))
    ));
}

#[tokio::test]
async fn neither_layer_alone_decrypts() {
    let f = Fixture::new();
    let store = f.connected_store().await;
    let key = f.external_key(&store.id, "ext-1").await;
    let twin = f.external_key(&store.id, "ext-2").await;
    let ctx = context(&[("app", "billing")]);
    let blob = f
        .kms
        .encrypt(&key, b"secret message", &ctx, &caller(), "Encrypt")
        .await
        .unwrap();
    let CiphertextBody::External(outer) = CiphertextBlob::parse(&blob).unwrap().body else {
        panic!("not a version 2 blob")
    };
    let header = CiphertextBlob::header_of(0x02, &key.key_id, 1).unwrap();
    let inner_aad = associated_data(&header, &key.arn, &ctx).unwrap();
    let outer_aad = crate::ciphertext::external_associated_data("message", &inner_aad);

    // The proxy alone gets the inner layer, not the plaintext.
    let inner = f.proxy.open("ext-1", &outer, &outer_aad).unwrap();
    assert!(!inner.windows(6).any(|w| w == b"secret"));
    assert_eq!(inner.len(), 12 + 14 + 16);

    // Every altered byte of the blob is refused.
    for byte in 0..blob.len() {
        let mut altered = blob.clone();
        altered[byte] ^= 0x01;
        let refused = f.decrypt(&altered, &ctx).await;
        assert!(
            matches!(
                refused,
                Err(KmsError::InvalidCiphertext(_) | KmsError::NotFound(_))
            ),
            "byte {byte}: {refused:?}"
        );
    }
    // An altered inner layer under a valid outer one (what a proxy could
    // forge): refused by Nuage's layer.
    let mut tampered = inner.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let forged = |outer: XksCiphertext| {
        let mut bytes = header.clone();
        crate::ciphertext::encode_external(&mut bytes, &outer).unwrap();
        bytes
    };
    let refused = f
        .decrypt(&forged(f.proxy.seal("ext-1", &tampered, &outer_aad)), &ctx)
        .await;
    assert!(
        matches!(refused, Err(KmsError::InvalidCiphertext(_))),
        "{refused:?}"
    );
    // The inner layer alone, as a version 1 blob (what Nuage alone could
    // make of it): refused, a key in an external key store takes version 2
    // only.
    let mut v1 = CiphertextBlob::header(&key.key_id, 1).unwrap();
    v1.extend_from_slice(&inner);
    assert!(matches!(
        f.decrypt(&v1, &ctx).await,
        Err(KmsError::InvalidCiphertext(_))
    ));
    // Outer layers swapped between two keys' blobs, or the outer layer of
    // another external key: refused.
    let other = f
        .kms
        .encrypt(&twin, b"secret message", &ctx, &caller(), "Encrypt")
        .await
        .unwrap();
    let mut swapped = other.clone();
    swapped[1..21].copy_from_slice(&blob[1..21]);
    assert!(matches!(
        f.decrypt(&swapped, &ctx).await,
        Err(KmsError::InvalidCiphertext(_))
    ));
    let reouter = forged(f.proxy.seal("ext-2", &inner, &outer_aad));
    assert!(matches!(
        f.decrypt(&reouter, &ctx).await,
        Err(KmsError::InvalidCiphertext(_))
    ));
    // The untouched blob still opens.
    assert_eq!(f.decrypt(&blob, &ctx).await.unwrap(), b"secret message");
}

#[tokio::test]
async fn object_data_keys_under_external_keys() {
    let f = Fixture::new();
    let store = f.connected_store().await;
    let key = f.external_key(&store.id, "ext-1").await;
    let plain = f.kms.create_key(TENANT, NewKey::default()).await.unwrap();
    let s3 = KeyCaller::via("s3", format!("arn:aws:iam::{TENANT}:root"), "");
    let reason = AccessReason::CustomerInitiatedAccess;
    let (data_key, wrapped) = f
        .kms
        .new_data_key_under(TENANT, &key.arn, b"binding", &s3)
        .await
        .unwrap();
    assert_eq!(wrapped[0], 0x02, "the external form announces itself");
    assert_eq!(&wrapped[1..5], &[0, 0, 0, 1]);
    let opened = f
        .kms
        .open_data_key_under(TENANT, &key.arn, &wrapped, b"binding", reason, &s3)
        .await
        .unwrap();
    // Unwrapping authenticates (AES-GCM under the material, after the
    // proxy's layer), so the key that comes out is the one that went in.
    drop((data_key, opened));
    let calls = f.proxy.calls();
    let (wrap_call, wrap_meta) = &calls[calls.len() - 2];
    let (unwrap_call, unwrap_meta) = &calls[calls.len() - 1];
    assert_eq!(
        (wrap_call.as_str(), unwrap_call.as_str()),
        ("encrypt", "decrypt")
    );
    assert_eq!(wrap_meta.kms_operation, "GenerateDataKey");
    assert_eq!(unwrap_meta.kms_operation, "Decrypt");
    for metadata in [wrap_meta, unwrap_meta] {
        assert_eq!(metadata.kms_via_service.as_deref(), Some("s3"));
        assert_eq!(
            metadata.aws_principal_arn,
            format!("arn:aws:iam::{TENANT}:root")
        );
        assert_eq!(metadata.kms_key_arn.as_deref(), Some(key.arn.as_str()));
        assert_eq!(metadata.access_reason, "CUSTOMER_INITIATED_ACCESS");
        // No request id from storage: each call gets a fresh one (the XKS
        // spec requires it).
        assert!(uuid::Uuid::try_parse(&metadata.kms_request_id).is_ok());
    }
    assert_ne!(wrap_meta.kms_request_id, unwrap_meta.kms_request_id);

    // Another binding, a truncated or altered form: refused.
    let open = |wrapped: Vec<u8>, binding: &'static [u8], arn: String| {
        let kms = f.kms.clone();
        let s3 = s3.clone();
        async move {
            kms.open_data_key_under(TENANT, &arn, &wrapped, binding, reason, &s3)
                .await
        }
    };
    assert!(
        open(wrapped.clone(), b"other", key.arn.clone())
            .await
            .is_err()
    );
    let mut altered = wrapped.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert!(matches!(
        open(altered, b"binding", key.arn.clone()).await,
        Err(crate::KeyError::CustomerKey(KmsError::InvalidCiphertext(_)))
    ));
    assert!(
        open(wrapped[..20].to_vec(), b"binding", key.arn.clone())
            .await
            .is_err()
    );
    // The ordinary form presented for the external key, or the external form
    // for an ordinary key: refused.
    let (_, ordinary) = f
        .kms
        .new_data_key_under(TENANT, &plain.arn, b"binding", &s3)
        .await
        .unwrap();
    assert_eq!(ordinary[0], 0x00);
    assert!(matches!(
        open(ordinary.clone(), b"binding", key.arn.clone()).await,
        Err(crate::KeyError::CustomerKey(KmsError::InvalidCiphertext(_)))
    ));
    assert!(matches!(
        open(wrapped.clone(), b"binding", plain.arn.clone()).await,
        Err(crate::KeyError::CustomerKey(KmsError::InvalidCiphertext(_)))
    ));
    open(ordinary, b"binding", plain.arn.clone()).await.unwrap();

    // The proxy refuses the reason: access denied, naming it.
    f.proxy
        .refused_reasons
        .lock()
        .unwrap()
        .push("CUSTOMER_INITIATED_ACCESS".into());
    match open(wrapped.clone(), b"binding", key.arn.clone()).await {
        Err(crate::KeyError::CustomerKey(KmsError::AccessDenied(message))) => {
            assert!(message.contains("CUSTOMER_INITIATED_ACCESS"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    f.proxy.refused_reasons.lock().unwrap().clear();
    // The tenant's own access justifications refuse before any proxy call.
    f.kms
        .key_service()
        .set_allowed_reasons(TENANT, &[AccessReason::ThirdPartyDataRequest])
        .await
        .unwrap();
    let calls = f.proxy.calls().len();
    assert!(matches!(
        open(wrapped.clone(), b"binding", key.arn.clone()).await,
        Err(crate::KeyError::ReasonNotAllowed { .. })
    ));
    assert_eq!(f.proxy.calls().len(), calls);
    f.kms
        .key_service()
        .set_allowed_reasons(TENANT, &[reason])
        .await
        .unwrap();
    // The external key disabled: data unreadable, and no new data keys.
    f.proxy.set_status("ext-1", "DISABLED");
    assert!(matches!(
        open(wrapped.clone(), b"binding", key.arn.clone()).await,
        Err(crate::KeyError::CustomerKey(KmsError::InvalidState(_)))
    ));
    assert!(matches!(
        f.kms
            .new_data_key_under(TENANT, &key.arn, b"binding", &s3)
            .await,
        Err(KmsError::InvalidState(_))
    ));
    f.proxy.set_status("ext-1", "ENABLED");
    open(wrapped, b"binding", key.arn.clone()).await.unwrap();
}

#[tokio::test]
async fn a_deleted_external_key_is_shredded_whatever_the_proxy_still_holds() {
    let f = Fixture::new();
    let store = f.connected_store().await;
    let key = f.external_key(&store.id, "ext-1").await;
    let blob = f
        .kms
        .encrypt(&key, b"secret", &context(&[]), &caller(), "Encrypt")
        .await
        .unwrap();
    f.kms
        .schedule_deletion(TENANT, &key.key_id, Some(7))
        .await
        .unwrap();
    f.clock.0.fetch_add(8 * NS_PER_DAY, Ordering::SeqCst);
    // The proxy still holds the external key: Nuage's half is what goes.
    assert!(f.proxy.keys.lock().unwrap().contains_key("ext-1"));
    let refused = f.decrypt(&blob, &context(&[])).await.unwrap_err();
    let KmsError::NotFound(message) = &refused else {
        panic!("{refused:?}")
    };
    assert!(message.contains("crypto-shredded"), "{message}");
    assert!(message.contains("Nuage's half"), "{message}");
    let record = f
        .kms
        .shredded_key(TENANT, &key.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.origin, KeyOrigin::ExternalKeyStore);
    assert_eq!(
        record.custom_key_store_id.as_deref(),
        Some(store.id.as_str())
    );
    assert_eq!(record.xks_key_id.as_deref(), Some("ext-1"));

    // Deleting the tenant destroys its stores (their sealed credentials).
    let report = f.kms.shred_tenant(TENANT).await.unwrap();
    assert_eq!(report.external_key_stores, 1);
    assert_eq!(report.kms_keys, 0);
    assert!(
        f.store
            .get_document(custom_key_store::STORES, TENANT)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        f.kms.custom_key_store(TENANT, &store.id).await,
        Err(KmsError::CustomKeyStoreNotFound(_))
    ));
}
