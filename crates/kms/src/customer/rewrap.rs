//! Wrapping an existing data key again, for another object: how S3 copies
//! share a blob (each object holds its own wrapped copy of the blob's data
//! key, bound to that object). Only a key just unwrapped by
//! [`KeyService::open_data_key`] or [`CustomerKeys::open_data_key_under`]
//! (with their access checks) ever reaches these; they never unwrap.
//!
//! Kept in a file of its own so that the key hierarchy's files stay as
//! they are: it adds two entry points and changes none.

use super::{CustomerKeys, KeyCaller, KeyOrigin, KmsResult};
use crate::{KeyError, KeyService};
use nuage_crypto::DataKey;

impl KeyService {
    /// Wraps `data_key` under `tenant`'s key, bound to `binding`: what
    /// [`Self::new_data_key`] returns, for a key that already exists.
    ///
    /// # Errors
    /// Key storage failure.
    pub async fn wrap_data_key(
        &self,
        tenant: &str,
        data_key: &DataKey,
        binding: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let kek = self.tenant_key(tenant).await?;
        Ok(nuage_crypto::wrap_data_key(&kek, data_key, binding)?)
    }
}

impl CustomerKeys {
    /// Wraps `data_key` under the customer key `key_arn` of `tenant` (its
    /// current material; through the proxy too for a key in an external key
    /// store), bound to `binding`: the form [`Self::new_data_key_under`]
    /// returns. The key must be usable, as for a new data key.
    ///
    /// # Errors
    /// As [`Self::new_data_key_under`].
    pub async fn wrap_data_key_under(
        &self,
        tenant: &str,
        key_arn: &str,
        data_key: &DataKey,
        binding: &[u8],
        caller: &KeyCaller,
    ) -> KmsResult<Vec<u8>> {
        let key = self.key_of_arn(tenant, key_arn).await?;
        key.check_usable()?;
        let material = key.current_material()?;
        let secret = self.material_secret(&key, material).await?;
        let inner = nuage_crypto::wrap_data_key(&secret, data_key, binding)?;
        if key.origin == KeyOrigin::ExternalKeyStore {
            return self
                .wrap_data_key_external(&key, material.version, &inner, binding, caller)
                .await;
        }
        let mut wrapped = material.version.to_be_bytes().to_vec();
        wrapped.extend(inner);
        Ok(wrapped)
    }
}
