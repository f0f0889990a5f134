//! Migrations between development roots (the HSM ones are in
//! `root::pkcs11::tests`, which run against SoftHSM2): every kind of wrapped
//! key, interruption and resumption, wrong roots, keys from before tags.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::{
    AccessReason, CiphertextBlob, CustomerKeys, EncryptionContext, ExternalKeyStore, KeyCaller,
    KeyService, NewCustomKeyStore, NewKey, XksCiphertext, XksCredential, XksError, XksHealth,
    XksKeyMetadata, XksProxyEndpoint, XksRequestMetadata,
};
use nuage_base::SystemClock;
use nuage_crypto::KeyEncryptionKey;
use nuage_meta::MetaResult;
use nuage_meta::embedded::EmbeddedMetaStore;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

const TENANTS: [&str; 3] = ["111122223333", "444455556666", "777788889999"];
const REGION: &str = "fr-par";
const SECRET: &str = "s3cr3tS3CR3Ts3cr3tS3CR3Ts3cr3tS3CR3Ts3cr3tXYZ/+=";
const ACCESS: AccessReason = AccessReason::CustomerInitiatedAccess;

/// An external key store proxy that answers health checks only and records
/// the secret each one was made with: how a test sees that a store's sealed
/// secret still opens.
#[derive(Debug, Default)]
struct HealthOnlyProxy {
    secrets: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl ExternalKeyStore for HealthOnlyProxy {
    async fn health(
        &self,
        endpoint: &XksProxyEndpoint,
        _: &XksRequestMetadata,
    ) -> Result<XksHealth, XksError> {
        self.secrets
            .lock()
            .unwrap()
            .push(endpoint.secret_access_key.as_str().to_owned());
        Ok(XksHealth {
            xks_proxy_vendor: "test".into(),
            xks_proxy_model: "test".into(),
            ekm_vendor: "test".into(),
            ekm_health: vec!["ACTIVE".into()],
        })
    }

    async fn key_metadata(
        &self,
        _: &XksProxyEndpoint,
        _: &str,
        _: &XksRequestMetadata,
    ) -> Result<XksKeyMetadata, XksError> {
        Err(XksError::Unreachable("health only".into()))
    }

    async fn encrypt(
        &self,
        _: &XksProxyEndpoint,
        _: &str,
        _: &XksRequestMetadata,
        _: &[u8],
        _: &[u8],
    ) -> Result<XksCiphertext, XksError> {
        Err(XksError::Unreachable("health only".into()))
    }

    async fn decrypt(
        &self,
        _: &XksProxyEndpoint,
        _: &str,
        _: &XksRequestMetadata,
        _: &XksCiphertext,
        _: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, XksError> {
        Err(XksError::Unreachable("health only".into()))
    }
}

/// A document store that fails every commit after the first `allowed`: a
/// migration cut short (a crash, an HSM unplugged) at a chosen point.
struct FailingStore {
    inner: Arc<EmbeddedMetaStore>,
    allowed: AtomicUsize,
}

#[async_trait::async_trait]
impl DocumentStore for FailingStore {
    async fn get_document(&self, namespace: &str, key: &str) -> MetaResult<Option<Document>> {
        self.inner.get_document(namespace, key).await
    }

    async fn scan_documents(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> MetaResult<Vec<Document>> {
        self.inner
            .scan_documents(namespace, prefix, after, limit)
            .await
    }

    async fn commit_documents(&self, writes: Vec<DocumentWrite>) -> MetaResult<()> {
        let left = self.allowed.load(Ordering::SeqCst);
        if left == 0 {
            return Err(MetaError::Backend("simulated crash".into()));
        }
        self.allowed.store(left - 1, Ordering::SeqCst);
        self.inner.commit_documents(writes).await
    }
}

fn caller() -> KeyCaller {
    KeyCaller::direct(format!("arn:aws:iam::{}:user/alice", TENANTS[0]), "REQ1")
}

fn context() -> EncryptionContext {
    [("purpose".to_owned(), "migration".to_owned())]
        .into_iter()
        .collect()
}

/// What a data directory holds, to be read back after a migration.
struct Contents {
    /// Per tenant: a wrapped data key and its binding.
    data_keys: Vec<(String, Vec<u8>, [u8; 32])>,
    /// A KMS key with two material versions, and a ciphertext under each.
    kms_key_id: String,
    ciphertexts: Vec<(Vec<u8>, Vec<u8>)>,
    store_id: String,
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<EmbeddedMetaStore>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap());
        Self { _dir: dir, store }
    }

    fn services(&self, keys: KeyService) -> (CustomerKeys, Arc<HealthOnlyProxy>) {
        let proxy = Arc::new(HealthOnlyProxy::default());
        let kms = CustomerKeys::new(keys, Arc::new(SystemClock), REGION)
            .with_external_key_store(Arc::clone(&proxy) as Arc<dyn ExternalKeyStore>);
        (kms, proxy)
    }

    /// Stores one of each kind of wrapped key under `root`.
    async fn fill(&self, root: Arc<dyn RootOfTrust>) -> Contents {
        let keys = KeyService::new(self.store.clone(), root);
        let mut data_keys = Vec::new();
        for tenant in TENANTS {
            let binding = [tenant.as_bytes()[0]; 32];
            let (key, wrapped) = keys.new_data_key(tenant, &binding).await.unwrap();
            let _ = key;
            data_keys.push((tenant.to_owned(), wrapped, binding));
        }
        let (kms, _) = self.services(keys);
        let key = kms.create_key(TENANTS[0], NewKey::default()).await.unwrap();
        let first = kms
            .encrypt(&key, b"under material 1", &context(), &caller(), "Encrypt")
            .await
            .unwrap();
        let key = kms.rotate_on_demand(TENANTS[0], &key.key_id).await.unwrap();
        assert_eq!(key.materials.len(), 2);
        let second = kms
            .encrypt(&key, b"under material 2", &context(), &caller(), "Encrypt")
            .await
            .unwrap();
        let store = kms
            .create_custom_key_store(
                TENANTS[1],
                NewCustomKeyStore {
                    name: "hyok".into(),
                    store_type: Some(crate::EXTERNAL_KEY_STORE.into()),
                    uri_endpoint: Some("https://xks.example.com".into()),
                    uri_path: Some("/a/kms/xks/v1".into()),
                    connectivity: Some(crate::PUBLIC_ENDPOINT.into()),
                    credential: Some(XksCredential {
                        access_key_id: "ABCDEFGHIJKLMNOPQRST".into(),
                        raw_secret_access_key: Zeroizing::new(SECRET.into()),
                    }),
                },
                &KeyCaller::direct(format!("arn:aws:iam::{}:root", TENANTS[1]), "REQ2"),
            )
            .await
            .unwrap();
        Contents {
            data_keys,
            kms_key_id: key.key_id,
            ciphertexts: vec![
                (first, b"under material 1".to_vec()),
                (second, b"under material 2".to_vec()),
            ],
            store_id: store.id,
        }
    }

    /// Reads everything back through fresh services over `keys` (a restart).
    async fn read_back(&self, keys: KeyService, contents: &Contents) -> Result<(), String> {
        for (tenant, wrapped, binding) in &contents.data_keys {
            keys.open_data_key(tenant, wrapped, binding, ACCESS)
                .await
                .map_err(|e| format!("tenant key of {tenant}: {e}"))?;
        }
        let (kms, proxy) = self.services(keys);
        let key = kms
            .key(TENANTS[0], &contents.kms_key_id)
            .await
            .map_err(|e| e.to_string())?;
        for (ciphertext, plaintext) in &contents.ciphertexts {
            let blob = CiphertextBlob::parse(ciphertext).map_err(|e| e.to_string())?;
            let opened = kms
                .decrypt(&key, &blob, &context(), &caller(), "Decrypt")
                .await
                .map_err(|e| format!("KMS material: {e}"))?;
            assert_eq!(opened.as_slice(), plaintext.as_slice());
        }
        kms.connect_custom_key_store(
            TENANTS[1],
            &contents.store_id,
            &KeyCaller::direct(format!("arn:aws:iam::{}:root", TENANTS[1]), "REQ3"),
        )
        .await
        .map_err(|e| format!("external key store secret: {e}"))?;
        assert_eq!(proxy.secrets.lock().unwrap().as_slice(), [SECRET]);
        // Connected once: disconnect, so the next read-back connects again.
        kms.disconnect_custom_key_store(TENANTS[1], &contents.store_id)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Every document's bytes, to see that a refused migration wrote nothing.
    async fn snapshot(&self) -> Vec<(WrappedKind, Document)> {
        let mut all = Vec::new();
        for kind in WrappedKind::ALL {
            for doc in self
                .store
                .scan_documents(kind.namespace(), "", None, usize::MAX)
                .await
                .unwrap()
            {
                all.push((kind, doc));
            }
        }
        all
    }
}

fn file_root() -> Arc<dyn RootOfTrust> {
    Arc::new(KeyEncryptionKey::generate().unwrap())
}

/// 3 tenant keys, 2 materials of one KMS key, 1 external key store key.
fn expected(kind: WrappedKind) -> u64 {
    match kind {
        WrappedKind::TenantKey => 3,
        WrappedKind::KmsKeyMaterial => 2,
        WrappedKind::CustomKeyStoreKey => 1,
        WrappedKind::Document(_) => 0,
    }
}

/// A namespace of keys stored like tenant keys by code outside this crate
/// (as the binary's audit signing key is).
const SIGNER_NAMESPACE: &str = "test.signing-key";

#[tokio::test]
async fn every_kind_of_wrapped_key_moves_to_the_new_root() {
    let f = Fixture::new();
    let (old, new) = (file_root(), file_root());
    let contents = f.fill(Arc::clone(&old)).await;
    let signer = KeyEncryptionKey::generate().unwrap();
    let stored = crate::RootRing::new(Arc::clone(&old))
        .wrap_key(&signer, b"signer")
        .await
        .unwrap();
    f.store
        .commit_documents(vec![DocumentWrite {
            namespace: SIGNER_NAMESPACE.into(),
            key: "signer".into(),
            expect: Expect::Absent,
            value: Some(stored),
        }])
        .await
        .unwrap();
    // Without its namespace the census does not see it; with it, it does.
    assert_eq!(
        census(f.store.as_ref(), &[]).await.unwrap().under(old.id()),
        6
    );
    let before = census(f.store.as_ref(), &[SIGNER_NAMESPACE]).await.unwrap();
    assert_eq!(before.under(old.id()), 7);
    for kind in WrappedKind::ALL {
        assert_eq!(
            before.counts[&(kind, Some(old.id()))],
            expected(kind),
            "{kind}"
        );
    }
    assert_eq!(before.not_under(old.id()), 0);

    let report = rewrap(
        f.store.as_ref(),
        old.as_ref(),
        new.as_ref(),
        REGION,
        &[SIGNER_NAMESPACE],
    )
    .await
    .unwrap();
    assert_eq!(
        report.of(WrappedKind::Document(SIGNER_NAMESPACE)).rewrapped,
        1
    );
    let doc = f
        .store
        .get_document(SIGNER_NAMESPACE, "signer")
        .await
        .unwrap()
        .unwrap();
    let opened = crate::RootRing::new(Arc::clone(&new))
        .unwrap_key(&doc.value, b"signer")
        .await
        .unwrap();
    assert_eq!(opened.expose_bytes(), signer.expose_bytes());
    for kind in WrappedKind::ALL {
        assert_eq!(
            report.of(kind),
            KindCounts {
                rewrapped: expected(kind),
                already: 0
            },
            "{kind}"
        );
    }
    let after = census(f.store.as_ref(), &[SIGNER_NAMESPACE]).await.unwrap();
    assert_eq!(after.not_under(new.id()), 0, "{after}");
    assert_eq!(after.under(new.id()), 7);

    // The new root alone reads everything; the old one alone reads nothing.
    f.read_back(
        KeyService::new(f.store.clone(), Arc::clone(&new)),
        &contents,
    )
    .await
    .unwrap();
    let error = f
        .read_back(
            KeyService::new(f.store.clone(), Arc::clone(&old)),
            &contents,
        )
        .await
        .unwrap_err();
    assert!(error.contains("not configured"), "{error}");

    // Running it again changes nothing.
    let snapshot = f.snapshot().await;
    let again = rewrap(f.store.as_ref(), old.as_ref(), new.as_ref(), REGION, &[])
        .await
        .unwrap();
    assert_eq!(again.rewrapped(), 0);
    assert_eq!(again.of(WrappedKind::TenantKey).already, 3);
    assert_eq!(f.snapshot().await, snapshot);
}

#[tokio::test]
async fn an_interrupted_migration_resumes_and_both_roots_read_it_meanwhile() {
    let f = Fixture::new();
    let (old, new) = (file_root(), file_root());
    let contents = f.fill(Arc::clone(&old)).await;
    // Two documents (tenant keys) get through, then the "crash".
    let failing = FailingStore {
        inner: f.store.clone(),
        allowed: AtomicUsize::new(2),
    };
    let error = rewrap(&failing, old.as_ref(), new.as_ref(), REGION, &[])
        .await
        .unwrap_err();
    assert!(matches!(error, RewrapError::Store(_)), "{error}");
    let half = census(f.store.as_ref(), &[]).await.unwrap();
    assert_eq!(half.under(new.id()), 2, "{half}");
    assert_eq!(half.under(old.id()), 4, "{half}");

    // Half way, neither root alone reads everything, both together do: each
    // document names its root.
    assert!(
        f.read_back(
            KeyService::new(f.store.clone(), Arc::clone(&new)),
            &contents
        )
        .await
        .is_err()
    );
    assert!(
        f.read_back(
            KeyService::new(f.store.clone(), Arc::clone(&old)),
            &contents
        )
        .await
        .is_err()
    );
    let both =
        KeyService::new(f.store.clone(), Arc::clone(&new)).with_previous_root(Arc::clone(&old));
    f.read_back(both, &contents).await.unwrap();

    // Run again: it finishes, skipping what was done.
    let report = rewrap(f.store.as_ref(), old.as_ref(), new.as_ref(), REGION, &[])
        .await
        .unwrap();
    assert_eq!(
        report.of(WrappedKind::TenantKey),
        KindCounts {
            rewrapped: 1,
            already: 2
        }
    );
    assert_eq!(report.of(WrappedKind::KmsKeyMaterial).rewrapped, 2);
    assert_eq!(report.of(WrappedKind::CustomKeyStoreKey).rewrapped, 1);
    assert_eq!(
        census(f.store.as_ref(), &[])
            .await
            .unwrap()
            .not_under(new.id()),
        0
    );
    f.read_back(
        KeyService::new(f.store.clone(), Arc::clone(&new)),
        &contents,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_wrong_old_root_is_refused_and_nothing_is_written() {
    let f = Fixture::new();
    let (old, new, stranger) = (file_root(), file_root(), file_root());
    let contents = f.fill(Arc::clone(&old)).await;
    let snapshot = f.snapshot().await;

    // Tagged with the real old root: refused before any unwrap or write.
    let error = rewrap(
        f.store.as_ref(),
        stranger.as_ref(),
        new.as_ref(),
        REGION,
        &[],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, RewrapError::ThirdRoot { wrapped_by, .. } if *wrapped_by == old.id()),
        "{error}"
    );
    assert_eq!(f.snapshot().await, snapshot);

    // The same roots twice.
    assert!(matches!(
        rewrap(f.store.as_ref(), old.as_ref(), old.as_ref(), REGION, &[]).await,
        Err(RewrapError::SameRoot(_))
    ));
    assert_eq!(f.snapshot().await, snapshot);
    f.read_back(
        KeyService::new(f.store.clone(), Arc::clone(&old)),
        &contents,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn keys_from_before_tags_migrate_and_a_wrong_root_for_them_writes_nothing() {
    let f = Fixture::new();
    let old = KeyEncryptionKey::generate().unwrap();
    let tenant_key = KeyEncryptionKey::generate().unwrap();
    // As an earlier Nuage stored it: the bare wrapped key, no root tag.
    let bare =
        nuage_crypto::wrap_key_encryption_key(&old, &tenant_key, TENANTS[0].as_bytes()).unwrap();
    f.store
        .commit_documents(vec![DocumentWrite {
            namespace: TENANT_KEYS.into(),
            key: TENANTS[0].into(),
            expect: Expect::Absent,
            value: Some(bare.clone()),
        }])
        .await
        .unwrap();
    let old: Arc<dyn RootOfTrust> = Arc::new(old);
    let keys = KeyService::new(f.store.clone(), Arc::clone(&old));
    let (_, wrapped) = keys.new_data_key(TENANTS[0], b"binding").await.unwrap();
    let untagged = census(f.store.as_ref(), &[]).await.unwrap();
    assert_eq!(untagged.counts[&(WrappedKind::TenantKey, None)], 1);

    let (new, stranger) = (file_root(), file_root());
    let error = rewrap(
        f.store.as_ref(),
        stranger.as_ref(),
        new.as_ref(),
        REGION,
        &[],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, RewrapError::NotUnderOldRoot { .. }),
        "{error}"
    );
    let doc = f
        .store
        .get_document(TENANT_KEYS, TENANTS[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.value, bare, "untouched");

    let report = rewrap(f.store.as_ref(), old.as_ref(), new.as_ref(), REGION, &[])
        .await
        .unwrap();
    assert_eq!(report.of(WrappedKind::TenantKey).rewrapped, 1);
    KeyService::new(f.store.clone(), Arc::clone(&new))
        .open_data_key(TENANTS[0], &wrapped, b"binding", ACCESS)
        .await
        .unwrap();
}

#[tokio::test]
async fn migration_reads_documents_page_by_page() {
    let f = Fixture::new();
    let (old, new) = (file_root(), file_root());
    let keys = KeyService::new(f.store.clone(), Arc::clone(&old));
    // More tenants than one page holds, so paging must carry on.
    let tenants = ROOT_REWRAP_PAGE_DOCUMENTS_MAX * 2 + 3;
    let mut wrapped = Vec::new();
    for n in 0..tenants {
        let tenant = format!("{n:012}");
        let (_, key) = keys.new_data_key(&tenant, b"b").await.unwrap();
        wrapped.push((tenant, key));
    }
    let report = rewrap(f.store.as_ref(), old.as_ref(), new.as_ref(), REGION, &[])
        .await
        .unwrap();
    assert_eq!(report.of(WrappedKind::TenantKey).rewrapped, tenants as u64);
    let keys = KeyService::new(f.store.clone(), Arc::clone(&new));
    for (tenant, key) in &wrapped {
        keys.open_data_key(tenant, key, b"b", ACCESS).await.unwrap();
    }
}
