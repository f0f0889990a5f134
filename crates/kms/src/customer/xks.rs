//! Keys in external key stores: creating one over an external key, and the
//! double encryption every use of such a key goes through.
//!
//! As AWS KMS does, a key in an external key store also has ordinary Nuage
//! material (wrapped by the root of trust). Sealing a ciphertext blob or a
//! data key seals it under that material first (the inner layer), then has
//! the external key store proxy encrypt the result under the external key
//! (the outer layer), with associated data binding the key's ARN and
//! everything the inner layer binds. Opening goes the other way. So neither
//! Nuage (which never holds the external key) nor the proxy (which never
//! holds the material) can decrypt alone, and a tenant that disables or
//! deletes its external key, or disconnects the store, stops every use at
//! once: Nuage keeps no cache of what the proxy returns.
//!
//! Every proxy call carries `requestMetadata`: the caller's principal ARN,
//! the key ARN, the KMS operation, the request id, the service acting for
//! the caller (`s3`) and the access reason (crate::external).

use super::custom_key_store::{ConnectionState, KeyCaller, XKS_KEYS, management_error};
use super::{CustomerKeys, KeyOrigin, KmsError, KmsKey, KmsResult, NewKey, TenantCounts};
use crate::access::AccessReason;
use crate::ciphertext::{encode_external, external_associated_data, parse_external};
use crate::external::{ExternalKeyStore, XksCiphertext, XksError, XksProxyEndpoint};
use nuage_base::limits::{KMS_KEYS_PER_TENANT_MAX, KMS_UPDATE_ATTEMPTS_MAX, XKS_KEY_ID_CHARS_MAX};
use nuage_crypto::{DataKey, MESSAGE_NONCE_BYTES, SealedMessage, TAG_BYTES};
use nuage_meta::{DocumentWrite, Expect};
use std::sync::Arc;
use zeroize::Zeroizing;

/// First byte of a data key wrapped under a key in an external key store.
/// A data key wrapped under an ordinary key starts with its material
/// version, big-endian, whose first byte is 0 (versions stay far below
/// 2^24: at most one per 90 days plus 25 on demand).
pub(super) const EXTERNAL_WRAPPED_KEY_MARKER: u8 = 0x02;
/// The external key's spec, usage and status a key requires (XKS spec,
/// GetKeyMetadata).
const XKS_KEY_SPEC: &str = "AES_256";
const XKS_KEY_ENABLED: &str = "ENABLED";

/// Domains of the outer associated data, so a blob's outer layer never
/// opens as a data key's, or the other way round.
const MESSAGE_DOMAIN: &str = "message";
const DATA_KEY_DOMAIN: &str = "data-key";

/// Where a key's external key lives, ready for one call.
struct ExternalTarget {
    client: Arc<dyn ExternalKeyStore>,
    endpoint: XksProxyEndpoint,
    xks_key_id: String,
}

/// Classifies a failed proxy call made while using a key.
fn use_error(error: XksError, key: &KmsKey, operation: &str, reason: AccessReason) -> KmsError {
    let xks_key = key.xks_key_id.as_deref().unwrap_or_default();
    match error {
        XksError::Unreachable(detail) => KmsError::XksProxyUriUnreachable(format!(
            "{operation} with {}: the external key store proxy could not be reached: {detail}",
            key.arn
        )),
        XksError::Refused {
            error_name,
            status,
            message,
        } => match error_name.as_str() {
            "InvalidStateException" | "InvalidKeyUsageException" => {
                KmsError::InvalidState(format!(
                    "{} is unusable: its external key {xks_key} is disabled (or may not be used \
                     for {operation}) in the external key manager: {message}",
                    key.arn
                ))
            }
            "KeyNotFoundException" => KmsError::XksKeyNotFound(format!(
                "{}: the external key store proxy does not know the external key {xks_key}: \
                 {message}",
                key.arn
            )),
            "AccessDeniedException" => KmsError::AccessDenied(format!(
                "The external key store proxy denied {operation} with {} for the access reason \
                 {reason}: {message}",
                key.arn
            )),
            "AuthenticationFailedException" => {
                KmsError::XksProxyIncorrectAuthenticationCredential(format!(
                    "{operation} with {}: the external key store proxy rejected the \
                     authentication credential (HTTP {status}): {message}",
                    key.arn
                ))
            }
            "InvalidCiphertextException" => KmsError::InvalidCiphertext(format!(
                "the ciphertext does not decrypt under the external key of {} with this \
                 encryption context",
                key.arn
            )),
            other => KmsError::XksProxyInvalidResponse(format!(
                "{operation} with {}: the external key store proxy answered {other} (HTTP \
                 {status}): {message}",
                key.arn
            )),
        },
    }
}

/// `XksKeyId`: 1 to 128 characters of `[a-zA-Z0-9-_.]` (AWS's pattern).
fn check_xks_key_id(id: &str) -> KmsResult<()> {
    if id.is_empty()
        || id.len() > XKS_KEY_ID_CHARS_MAX
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value at 'xksKeyId' failed to satisfy constraint: \
             Member must have length between 1 and {XKS_KEY_ID_CHARS_MAX} and satisfy regular \
             expression pattern: ^[a-zA-Z0-9-_.]+$"
        )));
    }
    Ok(())
}

fn xks_key_doc(tenant: &str, store: &str, xks_key_id: &str) -> String {
    format!("{tenant}/{store}/{xks_key_id}")
}

impl CustomerKeys {
    /// The document write that records (or, with `None`, releases) the
    /// external key a key uses.
    pub(super) fn xks_key_write(
        key: &KmsKey,
        expect: Expect,
        present: bool,
    ) -> Option<DocumentWrite> {
        let (store, xks_key_id) = (key.custom_key_store_id.as_ref()?, key.xks_key_id.as_ref()?);
        Some(DocumentWrite {
            namespace: XKS_KEYS.into(),
            key: xks_key_doc(&key.tenant, store, xks_key_id),
            expect,
            value: present.then(|| key.key_id.clone().into_bytes()),
        })
    }

    /// CreateKey with `Origin` `EXTERNAL_KEY_STORE`: a key backed by the
    /// external key `xks_key_id` in the connected store `store_id`. The
    /// proxy must report an enabled AES-256 key that encrypts and decrypts;
    /// an external key backs at most one key per store.
    ///
    /// # Errors
    /// As [`Self::create_key`]; `Unsupported` (no XKS client);
    /// `CustomKeyStoreNotFound`; `CustomKeyStoreInvalidState` (not
    /// connected); `XksKeyAlreadyInUse`; `XksKeyNotFound`;
    /// `XksKeyInvalidConfiguration`; the proxy's other refusals.
    pub async fn create_external_key(
        &self,
        tenant: &str,
        new: NewKey,
        store_id: &str,
        xks_key_id: &str,
        caller: &KeyCaller,
    ) -> KmsResult<KmsKey> {
        let client = self.external_client()?;
        check_xks_key_id(xks_key_id)?;
        let store = self.custom_key_store(tenant, store_id).await?;
        self.check_store_open_for_keys(&store.connection_state, store_id)?;
        self.check_xks_key_free(tenant, store_id, xks_key_id)
            .await?;
        let mut key = self.new_key_record(tenant, new).await?;
        let endpoint = self.proxy_endpoint(&store).await?;
        let metadata = caller.metadata(
            Some(&key.arn),
            "CreateKey",
            AccessReason::CustomerInitiatedAccess,
        );
        let what = format!("CreateKey with external key {xks_key_id}");
        let described = client
            .key_metadata(&endpoint, xks_key_id, &metadata)
            .await
            .map_err(|e| management_error(e, &what))?;
        let usable = described.key_spec == XKS_KEY_SPEC
            && ["ENCRYPT", "DECRYPT"]
                .iter()
                .all(|u| described.key_usage.iter().any(|k| k == u))
            && described.key_status == XKS_KEY_ENABLED;
        if !usable {
            return Err(KmsError::XksKeyInvalidConfiguration(format!(
                "The external key {xks_key_id} must be an enabled AES_256 key whose usage \
                 includes ENCRYPT and DECRYPT; the proxy reports key spec {}, usage [{}], status {}",
                described.key_spec,
                described.key_usage.join(", "),
                described.key_status
            )));
        }
        key.origin = KeyOrigin::ExternalKeyStore;
        key.custom_key_store_id = Some(store_id.to_owned());
        key.xks_key_id = Some(xks_key_id.to_owned());
        for _ in 0..KMS_UPDATE_ATTEMPTS_MAX {
            let (store, store_write) = self.store_for_key_creation(tenant, store_id).await?;
            self.check_store_open_for_keys(&store.connection_state, store_id)?;
            self.check_xks_key_free(tenant, store_id, xks_key_id)
                .await?;
            let (counts, expect) = self.counts(tenant).await?;
            if counts.keys >= KMS_KEYS_PER_TENANT_MAX {
                return Err(KmsError::LimitExceeded(format!(
                    "The tenant already has {KMS_KEYS_PER_TENANT_MAX} KMS keys, the most it may have"
                )));
            }
            let mut writes = vec![
                Self::key_write(&key, Expect::Absent)?,
                Self::counts_write(
                    tenant,
                    &TenantCounts {
                        keys: counts.keys + 1,
                        shredded: counts.shredded,
                    },
                    expect,
                )?,
                store_write,
            ];
            writes.extend(Self::xks_key_write(&key, Expect::Absent, true));
            if self.commit(writes).await? {
                tracing::info!(key = %key.arn, store = store_id, "created a KMS key in an external key store");
                return Ok(key);
            }
        }
        Err(Self::contention("creating a key in an external key store"))
    }

    fn check_store_open_for_keys(&self, state: &ConnectionState, store_id: &str) -> KmsResult<()> {
        if *state != ConnectionState::Connected {
            return Err(KmsError::CustomKeyStoreInvalidState(format!(
                "Custom key store {store_id} is not connected (it is {}): connect it first",
                state.as_str()
            )));
        }
        Ok(())
    }

    async fn check_xks_key_free(
        &self,
        tenant: &str,
        store_id: &str,
        xks_key_id: &str,
    ) -> KmsResult<()> {
        if let Some(doc) = self
            .keys
            .docs
            .get_document(XKS_KEYS, &xks_key_doc(tenant, store_id, xks_key_id))
            .await?
        {
            return Err(KmsError::XksKeyAlreadyInUse(format!(
                "The external key {xks_key_id} already backs the KMS key {} in custom key store \
                 {store_id}",
                String::from_utf8_lossy(&doc.value)
            )));
        }
        Ok(())
    }

    /// The external key of `key`, its store checked connected.
    async fn external_target(&self, key: &KmsKey) -> KmsResult<ExternalTarget> {
        let (Some(store_id), Some(xks_key_id)) = (&key.custom_key_store_id, &key.xks_key_id) else {
            return Err(KmsError::Internal(format!(
                "{} is in an external key store but names no store or external key",
                key.arn
            )));
        };
        let store = self.custom_key_store(&key.tenant, store_id).await?;
        if store.connection_state != ConnectionState::Connected {
            return Err(KmsError::CustomKeyStoreInvalidState(format!(
                "{} is unavailable: its custom key store {store_id} is not connected (it is {})",
                key.arn,
                store.connection_state.as_str()
            )));
        }
        Ok(ExternalTarget {
            client: self.external_client()?,
            endpoint: self.proxy_endpoint(&store).await?,
            xks_key_id: xks_key_id.clone(),
        })
    }

    /// The outer layer: the proxy encrypts `inner` under the key's external
    /// key, authenticating `aad`.
    async fn external_encrypt(
        &self,
        key: &KmsKey,
        inner: &[u8],
        aad: &[u8],
        caller: &KeyCaller,
        operation: &str,
    ) -> KmsResult<XksCiphertext> {
        let target = self.external_target(key).await?;
        let reason = AccessReason::CustomerInitiatedAccess;
        let metadata = caller.metadata(Some(&key.arn), operation, reason);
        let outer = target
            .client
            .encrypt(&target.endpoint, &target.xks_key_id, &metadata, inner, aad)
            .await
            .map_err(|e| use_error(e, key, operation, reason))?;
        // AES-GCM: as long as its plaintext. Anything else is not what was
        // asked for, and would not decrypt later.
        if outer.ciphertext.len() != inner.len() {
            return Err(KmsError::XksProxyInvalidResponse(format!(
                "{operation} with {}: the external key store proxy returned {} bytes of \
                 ciphertext for {} bytes of plaintext",
                key.arn,
                outer.ciphertext.len(),
                inner.len()
            )));
        }
        Ok(outer)
    }

    /// Opens the outer layer: the proxy decrypts under the key's external key.
    async fn external_decrypt(
        &self,
        key: &KmsKey,
        outer: &XksCiphertext,
        aad: &[u8],
        caller: &KeyCaller,
        operation: &str,
        reason: AccessReason,
    ) -> KmsResult<Zeroizing<Vec<u8>>> {
        let target = self.external_target(key).await?;
        let metadata = caller.metadata(Some(&key.arn), operation, reason);
        target
            .client
            .decrypt(&target.endpoint, &target.xks_key_id, &metadata, outer, aad)
            .await
            .map_err(|e| use_error(e, key, operation, reason))
    }

    /// Version 2 blob body: `inner` (a sealed message under the material)
    /// encrypted by the proxy, with the outer associated data derived from
    /// the inner one.
    pub(super) async fn seal_external_message(
        &self,
        key: &KmsKey,
        inner: &SealedMessage,
        inner_aad: &[u8],
        caller: &KeyCaller,
        operation: &str,
    ) -> KmsResult<XksCiphertext> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(
            MESSAGE_NONCE_BYTES + inner.ciphertext.len(),
        ));
        bytes.extend_from_slice(&inner.nonce);
        bytes.extend_from_slice(&inner.ciphertext);
        let aad = external_associated_data(MESSAGE_DOMAIN, inner_aad);
        self.external_encrypt(key, &bytes, &aad, caller, operation)
            .await
    }

    /// Opens a version 2 blob body down to the inner sealed message.
    pub(super) async fn open_external_message(
        &self,
        key: &KmsKey,
        outer: &XksCiphertext,
        inner_aad: &[u8],
        caller: &KeyCaller,
        operation: &str,
    ) -> KmsResult<SealedMessage> {
        let aad = external_associated_data(MESSAGE_DOMAIN, inner_aad);
        let bytes = self
            .external_decrypt(
                key,
                outer,
                &aad,
                caller,
                operation,
                AccessReason::CustomerInitiatedAccess,
            )
            .await?;
        let invalid = || {
            KmsError::InvalidCiphertext(
                "the ciphertext does not decrypt under its key with this encryption context".into(),
            )
        };
        let (nonce, ciphertext) = bytes
            .split_first_chunk::<MESSAGE_NONCE_BYTES>()
            .ok_or_else(invalid)?;
        if ciphertext.len() < TAG_BYTES {
            return Err(invalid());
        }
        Ok(SealedMessage {
            nonce: *nonce,
            ciphertext: ciphertext.to_vec(),
        })
    }

    /// The outer associated data of a data key wrapped under `key`'s
    /// material `version` with `binding`: binds the key ARN, the version and
    /// the object binding.
    fn data_key_outer_aad(key: &KmsKey, version: u32, binding: &[u8]) -> Vec<u8> {
        let mut inner = vec![EXTERNAL_WRAPPED_KEY_MARKER];
        inner.extend_from_slice(&version.to_be_bytes());
        // Lengths fit a u64: they are sizes of things in memory.
        inner.extend_from_slice(&(key.arn.len() as u64).to_be_bytes());
        inner.extend_from_slice(key.arn.as_bytes());
        inner.extend_from_slice(binding);
        external_associated_data(DATA_KEY_DOMAIN, &inner)
    }

    /// Wraps `data_key`'s inner form (`wrapped`, under material `version`)
    /// with the external key: `0x02`, the version, then the proxy's output
    /// in the layout of a version 2 blob's bytes 21...
    pub(super) async fn wrap_data_key_external(
        &self,
        key: &KmsKey,
        version: u32,
        wrapped: &[u8],
        binding: &[u8],
        caller: &KeyCaller,
    ) -> KmsResult<Vec<u8>> {
        let aad = Self::data_key_outer_aad(key, version, binding);
        let outer = self
            .external_encrypt(key, wrapped, &aad, caller, "GenerateDataKey")
            .await?;
        let mut out = vec![EXTERNAL_WRAPPED_KEY_MARKER];
        out.extend_from_slice(&version.to_be_bytes());
        encode_external(&mut out, &outer)?;
        Ok(out)
    }

    /// Opens what [`Self::wrap_data_key_external`] made, down to the
    /// material version and the inner wrapped data key.
    pub(super) async fn unwrap_data_key_external(
        &self,
        key: &KmsKey,
        wrapped: &[u8],
        binding: &[u8],
        caller: &KeyCaller,
        reason: AccessReason,
    ) -> KmsResult<(u32, Zeroizing<Vec<u8>>)> {
        let invalid =
            || KmsError::InvalidCiphertext("malformed wrapped data key of an external key".into());
        let rest = wrapped
            .strip_prefix(&[EXTERNAL_WRAPPED_KEY_MARKER])
            .ok_or_else(invalid)?;
        let (version, rest) = rest.split_first_chunk::<4>().ok_or_else(invalid)?;
        let version = u32::from_be_bytes(*version);
        let outer = parse_external(rest).ok_or_else(invalid)?;
        let aad = Self::data_key_outer_aad(key, version, binding);
        let inner = self
            .external_decrypt(key, &outer, &aad, caller, "Decrypt", reason)
            .await?;
        Ok((version, inner))
    }

    /// A fresh data key wrapped under the current material of `key` (in an
    /// external key store), then by its external key.
    pub(super) async fn new_data_key_external(
        &self,
        key: &KmsKey,
        binding: &[u8],
        caller: &KeyCaller,
    ) -> KmsResult<(DataKey, Vec<u8>)> {
        let material = key.current_material()?;
        let secret = self.material_secret(key, material).await?;
        let data_key = DataKey::generate()?;
        let inner = nuage_crypto::wrap_data_key(&secret, &data_key, binding)?;
        let wrapped = self
            .wrap_data_key_external(key, material.version, &inner, binding, caller)
            .await?;
        Ok((data_key, wrapped))
    }
}
