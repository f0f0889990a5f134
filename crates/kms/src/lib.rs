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
//! leaves this service unwrapped. Customer-held keys (XKS) build on this.
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

mod ciphertext;
mod customer;
mod root;

pub use ciphertext::{
    CIPHERTEXT_FORMAT_V1, CIPHERTEXT_HEADER_BYTES, CIPHERTEXT_OVERHEAD_BYTES, CiphertextBlob,
    EncryptionContext, associated_data,
};
pub use customer::{
    CustomerKeys, KeyMaterial, KeyReference, KeySpec, KeyState, KeyUsage, KmsAlias, KmsError,
    KmsKey, KmsResult, MATERIALS_CACHED_MAX, NewKey, Page, RotationType, check_alias_name,
    check_encryption_context, default_key_policy, random,
};

pub use root::{DEFAULT_KEY_LABEL, Pkcs11Root, Pkcs11RootConfig, RootOfTrust, RootOfTrustError};

use nuage_crypto::{DataKey, KeyEncryptionKey};
use nuage_meta::{DocumentStore, DocumentWrite, Expect, MetaError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

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
}

/// The key hierarchy of one Nuage.
#[derive(Clone)]
pub struct KeyService {
    docs: Arc<dyn DocumentStore>,
    root: Arc<dyn RootOfTrust>,
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
            root: Arc::new(root),
            tenants: Arc::new(RwLock::new(HashMap::new())),
        }
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

    /// Unwraps a blob's data key; fails unless `binding` is the one it was
    /// wrapped with.
    ///
    /// # Errors
    /// Wrong binding or tenant, corrupt wrapped key, key storage failure.
    pub async fn open_data_key(
        &self,
        tenant: &str,
        wrapped: &[u8],
        binding: &[u8],
    ) -> Result<DataKey, KeyError> {
        let kek = self.tenant_key(tenant).await?;
        Ok(nuage_crypto::unwrap_data_key(&kek, wrapped, binding)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nuage_meta::embedded::EmbeddedMetaStore;

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
        keys.open_data_key("111122223333", &wrapped, b"binding-a")
            .await
            .unwrap();
        assert!(
            keys.open_data_key("111122223333", &wrapped, b"binding-b")
                .await
                .is_err(),
            "bound to its object"
        );
        assert!(
            keys.open_data_key("444455556666", &wrapped, b"binding-a")
                .await
                .is_err(),
            "bound to its tenant"
        );
        // A new service over the same store and root key still opens it.
        let root = nuage_crypto::RootKeyFile::open_or_create(&dir.path().join("root.key")).unwrap();
        let again = KeyService::new(store, root);
        again
            .open_data_key("111122223333", &wrapped, b"binding-a")
            .await
            .unwrap();
        // The tenant key is stored wrapped, never in the clear.
        let doc = again
            .docs
            .get_document(TENANT_KEYS, "111122223333")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(doc.value.len(), nuage_crypto::WRAPPED_KEY_BYTES);
    }
}
