//! Keys: each tenant's key-encryption key, protected by the root of trust,
//! and the data keys of object blobs, wrapped by their tenant's key.
//!
//! This crate owns the key hierarchy, not the cipher (`nuage-crypto`) nor
//! where wrapped keys are stored next to objects (`nuage-storage`):
//!
//! ```text
//! root key (development: a 0600 file; production: an AES key inside an HSM,
//!   │        reached over PKCS#11, that never leaves it; see [`RootOfTrust`])
//!   └─ tenant key, one per tenant, stored wrapped by the root key
//!        └─ data key, one per blob, stored wrapped beside the object's record,
//!           its wrapping bound to (tenant, bucket, key, blob, region)
//! ```
//!
//! A tenant key is created the first time the tenant stores data and never
//! leaves this service unwrapped.
//!
//! Every unwrap of a data key names an [`AccessReason`]; the tenant decides
//! which reasons its data key accepts ([`KeyService::set_allowed_reasons`],
//! module `access`), and a reason outside that list is refused before any
//! key is unwrapped.
//!
//! Beside that hierarchy, the same root of trust protects the *customer keys*
//! tenants manage through the KMS API ([`CustomerKeys`], module `customer`):
//!
//! ```text
//! root key
//!   └─ KMS key material, one per key and rotation, stored wrapped by the
//!        │  root with the key's ARN as associated data
//!        └─ ciphertext blobs (Encrypt, GenerateDataKey) held by clients;
//!           format in module `ciphertext`
//! ```
//!
//! A customer key may also live in the tenant's own key manager, behind an
//! external key store proxy (AWS KMS's XKS, [`ExternalKeyStore`]): then
//! every ciphertext and data key under it is sealed by its Nuage material
//! *and* by the external key, so neither side alone can decrypt, and
//! nothing the proxy returns is cached.
//!
//! Every key the root wraps is stored tagged with the root's [`RootId`]
//! ([`RootRing`]), and [`rewrap`] (module `migrate`) moves all of them from
//! one root of trust to another: a migration between kinds of root (file to
//! HSM) or a rotation of the root key, resumable at any point.

mod access;
mod ciphertext;
mod customer;
mod external;
mod migrate;
mod root;

pub use access::{ACCESS_REASONS, AccessReason, DEFAULT_ALLOWED_REASONS};
pub use ciphertext::{
    CIPHERTEXT_FORMAT_V1, CIPHERTEXT_FORMAT_V2, CIPHERTEXT_HEADER_BYTES, CIPHERTEXT_OVERHEAD_BYTES,
    CiphertextBlob, CiphertextBody, EncryptionContext, associated_data, external_associated_data,
};
pub use customer::{
    ConnectionErrorCode, ConnectionState, CustomKeyStore, CustomKeyStoreUpdate, CustomerKeys,
    EXTERNAL_KEY_STORE, KeyCaller, KeyMaterial, KeyOrigin, KeyReference, KeySpec, KeyState,
    KeyUsage, KmsAlias, KmsError, KmsKey, KmsResult, MATERIALS_CACHED_MAX, NewCustomKeyStore,
    NewKey, PUBLIC_ENDPOINT, Page, RotationType, XksCredential, check_alias_name, check_credential,
    check_encryption_context, check_uri_endpoint, check_uri_path, default_key_policy, random,
};
pub use customer::{ShreddedKey, TenantShredding};

pub use external::{
    ExternalKeyStore, XksCiphertext, XksError, XksHealth, XksKeyMetadata, XksProxyEndpoint,
    XksRequestMetadata,
};
pub use migrate::{Census, KindCounts, RewrapError, RewrapReport, WrappedKind, census, rewrap};
pub use root::{
    DEFAULT_KEY_LABEL, Pkcs11Root, Pkcs11RootConfig, ROOT_ID_BYTES, ROOT_TAGGED_WRAPPED_KEY_BYTES,
    ROOT_TAGGED_WRAPPED_KEY_FORMAT, RootId, RootOfTrust, RootOfTrustError, RootRing,
    TaggedWrappedKey, tag_wrapped_key,
};

use nuage_crypto::{DataKey, KeyEncryptionKey};
use nuage_meta::{DocumentStore, DocumentWrite, Expect, MetaError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// One document per tenant: its key, wrapped by the root of trust (stored
/// root-tagged, see [`RootRing`]) with the tenant id as associated data.
const TENANT_KEYS: &str = "kms.tenant-key";
/// Tenant keys kept unwrapped in memory; beyond this the cache is cleared
/// (a bound, not an eviction policy: a cleared key is simply unwrapped again).
pub const TENANT_KEYS_CACHED_MAX: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key cryptography failed: {0}")]
    Crypto(#[from] nuage_crypto::CryptoError),
    #[error("key storage failed: {0}")]
    Store(#[from] MetaError),
    #[error("root of trust: {0}")]
    RootOfTrust(#[from] RootOfTrustError),
    /// The tenant's key access reasons do not include this access's reason;
    /// nothing was unwrapped.
    #[error("the tenant's key access justifications do not allow access for the reason {reason}")]
    ReasonNotAllowed { reason: AccessReason },
    /// A stored allowed-reasons list that does not parse.
    #[error("corrupt key access reasons of a tenant: {0}")]
    CorruptReasons(String),
    /// A customer KMS key protecting the data refused: missing, disabled,
    /// pending deletion, or the wrapped key does not open under it.
    #[error("{0}")]
    CustomerKey(#[from] KmsError),
}

/// The key hierarchy of one Nuage.
#[derive(Clone)]
pub struct KeyService {
    docs: Arc<dyn DocumentStore>,
    root: Arc<RootRing>,
    tenants: Arc<RwLock<HashMap<String, Arc<KeyEncryptionKey>>>>,
}

impl KeyService {
    /// A key service whose tenant keys are wrapped by `root`: a
    /// [`Pkcs11Root`] in production, the [`KeyEncryptionKey`] read from the
    /// development key file, or an `Arc<dyn RootOfTrust>` chosen at start.
    #[must_use]
    pub fn new(docs: Arc<dyn DocumentStore>, root: impl RootOfTrust + 'static) -> Self {
        Self {
            docs,
            root: Arc::new(RootRing::new(Arc::new(root))),
            tenants: Arc::new(RwLock::new(HashMap::new())),
        }
    }

    /// This service also unwrapping with `previous` (never wrapping with
    /// it): for reading a data directory part of which is still under the
    /// root it is migrating from. Each stored key names its root, so the
    /// right one is used.
    #[must_use]
    pub fn with_previous_root(mut self, previous: impl RootOfTrust + 'static) -> Self {
        let ring = (*self.root).clone().with_previous(Arc::new(previous));
        self.root = Arc::new(ring);
        self.tenants = Arc::new(RwLock::new(HashMap::new()));
        self
    }

    /// The root that wraps new keys.
    #[must_use]
    pub fn root(&self) -> &Arc<dyn RootOfTrust> {
        self.root.current()
    }

    /// The tenant's key, created on first use.
    async fn tenant_key(&self, tenant: &str) -> Result<Arc<KeyEncryptionKey>, KeyError> {
        if let Some(key) = self
            .tenants
            .read()
            .ok()
            .and_then(|cache| cache.get(tenant).cloned())
        {
            return Ok(key);
        }
        let aad = tenant.as_bytes();
        let key = match self.docs.get_document(TENANT_KEYS, tenant).await? {
            Some(doc) => self.root.unwrap_key(&doc.value, aad).await?,
            None => {
                let fresh = KeyEncryptionKey::generate()?;
                let wrapped = self.root.wrap_key(&fresh, aad).await?;
                let write = DocumentWrite {
                    namespace: TENANT_KEYS.into(),
                    key: tenant.into(),
                    expect: Expect::Absent,
                    value: Some(wrapped),
                };
                match self.docs.commit_documents(vec![write]).await {
                    Ok(()) => {
                        tracing::info!(tenant, "created the tenant's key");
                        fresh
                    }
                    // Another request created it first: use theirs.
                    Err(MetaError::PreconditionFailed) => {
                        let doc = self
                            .docs
                            .get_document(TENANT_KEYS, tenant)
                            .await?
                            .ok_or(MetaError::PreconditionFailed)?;
                        self.root.unwrap_key(&doc.value, aad).await?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let key = Arc::new(key);
        if let Ok(mut cache) = self.tenants.write() {
            if cache.len() >= TENANT_KEYS_CACHED_MAX {
                cache.clear();
            }
            cache.insert(tenant.to_owned(), Arc::clone(&key));
        }
        Ok(key)
    }

    /// A fresh data key for a new blob of `tenant`, and its wrapped form,
    /// bound to `binding`.
    ///
    /// # Errors
    /// Key storage or randomness failure.
    pub async fn new_data_key(
        &self,
        tenant: &str,
        binding: &[u8],
    ) -> Result<(DataKey, Vec<u8>), KeyError> {
        let kek = self.tenant_key(tenant).await?;
        let key = DataKey::generate()?;
        let wrapped = nuage_crypto::wrap_data_key(&kek, &key, binding)?;
        Ok((key, wrapped))
    }

    /// Unwraps a blob's data key for `reason`; fails unless the tenant's
    /// allowed reasons include `reason` and `binding` is the one the key was
    /// wrapped with.
    ///
    /// # Errors
    /// [`KeyError::ReasonNotAllowed`] (checked first: nothing is unwrapped),
    /// wrong binding or tenant, corrupt wrapped key, key storage failure.
    pub async fn open_data_key(
        &self,
        tenant: &str,
        wrapped: &[u8],
        binding: &[u8],
        reason: AccessReason,
    ) -> Result<DataKey, KeyError> {
        let allowed = self.allowed_reasons(tenant).await?;
        if !allowed.contains(&reason) {
            // The binding names bucket and key: it stays out of the log.
            tracing::info!(
                tenant,
                reason = reason.as_str(),
                allowed = ?allowed.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "data key unwrap refused by the tenant's key access justifications"
            );
            return Err(KeyError::ReasonNotAllowed { reason });
        }
        let kek = self.tenant_key(tenant).await?;
        Ok(nuage_crypto::unwrap_data_key(&kek, wrapped, binding)?)
    }

    /// The reasons for which `tenant`'s data key may be unwrapped:
    /// [`DEFAULT_ALLOWED_REASONS`] until the tenant sets its own.
    ///
    /// # Errors
    /// Key storage failure, or a stored list that does not parse.
    pub async fn allowed_reasons(&self, tenant: &str) -> Result<Vec<AccessReason>, KeyError> {
        match self.docs.get_document(ACCESS_REASONS, tenant).await? {
            None => Ok(DEFAULT_ALLOWED_REASONS.to_vec()),
            Some(doc) => serde_json::from_slice(&doc.value)
                .map_err(|e| KeyError::CorruptReasons(e.to_string())),
        }
    }

    /// Replaces `tenant`'s allowed reasons (duplicates dropped, order kept).
    /// An empty list is accepted: it refuses every read of the tenant's data
    /// until the list is changed again (writes still work).
    ///
    /// # Errors
    /// Key storage failure.
    pub async fn set_allowed_reasons(
        &self,
        tenant: &str,
        reasons: &[AccessReason],
    ) -> Result<(), KeyError> {
        let mut list: Vec<AccessReason> = Vec::with_capacity(reasons.len());
        for reason in reasons {
            if !list.contains(reason) {
                list.push(*reason);
            }
        }
        let value =
            serde_json::to_vec(&list).map_err(|e| KeyError::CorruptReasons(e.to_string()))?;
        self.docs
            .commit_documents(vec![DocumentWrite {
                namespace: ACCESS_REASONS.into(),
                key: tenant.into(),
                expect: Expect::Any,
                value: Some(value),
            }])
            .await?;
        tracing::info!(
            tenant,
            allowed = ?list.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "set the tenant's key access justifications"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nuage_meta::embedded::EmbeddedMetaStore;

    const ACCESS: AccessReason = AccessReason::CustomerInitiatedAccess;
    const TENANT: &str = "111122223333";

    fn service(dir: &std::path::Path, store: Arc<EmbeddedMetaStore>) -> KeyService {
        let root = nuage_crypto::RootKeyFile::open_or_create(&dir.join("root.key")).unwrap();
        KeyService::new(store, root)
    }

    #[tokio::test]
    async fn default_reasons_apply_until_the_tenant_sets_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap());
        let keys = service(dir.path(), store);
        assert_eq!(
            keys.allowed_reasons(TENANT).await.unwrap(),
            DEFAULT_ALLOWED_REASONS.to_vec()
        );
        let (_, wrapped) = keys.new_data_key(TENANT, b"b").await.unwrap();
        for reason in DEFAULT_ALLOWED_REASONS {
            keys.open_data_key(TENANT, &wrapped, b"b", reason)
                .await
                .unwrap();
        }
        for reason in [
            AccessReason::OperatorInitiatedService,
            AccessReason::OperatorInitiatedReview,
            AccessReason::ThirdPartyDataRequest,
            AccessReason::ReasonNotExpected,
        ] {
            assert!(
                matches!(
                    keys.open_data_key(TENANT, &wrapped, b"b", reason).await,
                    Err(KeyError::ReasonNotAllowed { reason: r }) if r == reason
                ),
                "{reason}"
            );
        }
    }

    #[tokio::test]
    async fn a_reason_outside_the_list_is_refused_and_writes_still_work() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap());
        let keys = service(dir.path(), store);
        let (_, wrapped) = keys.new_data_key(TENANT, b"b").await.unwrap();
        keys.set_allowed_reasons(TENANT, &[AccessReason::OperatorInitiatedSystemOperation])
            .await
            .unwrap();
        let refused = keys
            .open_data_key(TENANT, &wrapped, b"b", ACCESS)
            .await
            .unwrap_err();
        assert!(matches!(
            refused,
            KeyError::ReasonNotAllowed {
                reason: AccessReason::CustomerInitiatedAccess
            }
        ));
        assert!(refused.to_string().contains("CUSTOMER_INITIATED_ACCESS"));
        // The reason is checked before the binding: still refused by reason.
        assert!(matches!(
            keys.open_data_key(TENANT, &wrapped, b"other", ACCESS).await,
            Err(KeyError::ReasonNotAllowed { .. })
        ));
        keys.open_data_key(
            TENANT,
            &wrapped,
            b"b",
            AccessReason::OperatorInitiatedSystemOperation,
        )
        .await
        .unwrap();
        // Writes are not affected; other tenants keep the defaults.
        let (_, fresh) = keys.new_data_key(TENANT, b"c").await.unwrap();
        let (_, theirs) = keys.new_data_key("444455556666", b"d").await.unwrap();
        keys.open_data_key("444455556666", &theirs, b"d", ACCESS)
            .await
            .unwrap();
        // An empty list locks every read.
        keys.set_allowed_reasons(TENANT, &[]).await.unwrap();
        for reason in AccessReason::ALL {
            assert!(
                keys.open_data_key(TENANT, &fresh, b"c", reason)
                    .await
                    .is_err()
            );
        }
    }

    #[tokio::test]
    async fn allowed_reasons_round_trip_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap());
        let keys = service(dir.path(), store.clone());
        let (_, wrapped) = keys.new_data_key(TENANT, b"b").await.unwrap();
        let wanted = [
            AccessReason::ThirdPartyDataRequest,
            AccessReason::CustomerInitiatedSupport,
            AccessReason::ThirdPartyDataRequest,
        ];
        keys.set_allowed_reasons(TENANT, &wanted).await.unwrap();
        let expected = vec![
            AccessReason::ThirdPartyDataRequest,
            AccessReason::CustomerInitiatedSupport,
        ];
        assert_eq!(keys.allowed_reasons(TENANT).await.unwrap(), expected);
        // Stored as a JSON array of wire names.
        let doc = store
            .get_document(ACCESS_REASONS, TENANT)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            doc.value,
            br#"["THIRD_PARTY_DATA_REQUEST","CUSTOMER_INITIATED_SUPPORT"]"#
        );
        // A new service over the same store (a restart) keeps the list.
        let again = service(dir.path(), store);
        assert_eq!(again.allowed_reasons(TENANT).await.unwrap(), expected);
        assert!(matches!(
            again.open_data_key(TENANT, &wrapped, b"b", ACCESS).await,
            Err(KeyError::ReasonNotAllowed { .. })
        ));
        again
            .open_data_key(TENANT, &wrapped, b"b", AccessReason::ThirdPartyDataRequest)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn data_keys_round_trip_per_tenant_and_binding() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap());
        let root = nuage_crypto::RootKeyFile::open_or_create(&dir.path().join("root.key")).unwrap();
        let keys = KeyService::new(store.clone(), root);
        let (_, wrapped) = keys
            .new_data_key("111122223333", b"binding-a")
            .await
            .unwrap();
        keys.open_data_key("111122223333", &wrapped, b"binding-a", ACCESS)
            .await
            .unwrap();
        assert!(
            keys.open_data_key("111122223333", &wrapped, b"binding-b", ACCESS)
                .await
                .is_err(),
            "bound to its object"
        );
        assert!(
            keys.open_data_key("444455556666", &wrapped, b"binding-a", ACCESS)
                .await
                .is_err(),
            "bound to its tenant"
        );
        // A new service over the same store and root key still opens it.
        let root = nuage_crypto::RootKeyFile::open_or_create(&dir.path().join("root.key")).unwrap();
        let again = KeyService::new(store, root);
        again
            .open_data_key("111122223333", &wrapped, b"binding-a", ACCESS)
            .await
            .unwrap();
        // The tenant key is stored wrapped, never in the clear, and names
        // the root that wrapped it.
        let doc = again
            .docs
            .get_document(TENANT_KEYS, "111122223333")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(doc.value.len(), ROOT_TAGGED_WRAPPED_KEY_BYTES);
        let stored = TaggedWrappedKey::parse(&doc.value).unwrap();
        assert_eq!(stored.root(), Some(again.root().id()));
    }
}
