//! The root of trust: what wraps each tenant's key.
//!
//! Two implementations of one trait, [`RootOfTrust`]:
//!
//! - a [`KeyEncryptionKey`] held in this process, read from
//!   `nuage_crypto::RootKeyFile` (**development only**: whoever reads the file
//!   can decrypt everything);
//! - [`Pkcs11Root`]: an AES-256 key inside a hardware security module, reached
//!   over PKCS#11. Wrapping and unwrapping are AES-256-GCM operations inside
//!   the HSM; the root key's bytes never exist in this process or on its disk.
//!
//! Both produce the same stored format (`nuage-crypto`'s wrapped key, version
//! 1: `0x01 || nonce || ciphertext || tag`, 61 bytes, with
//! [`nuage_crypto::key_encryption_key_wrap_aad`] as associated data), so a
//! stored tenant key says nothing about which root wrapped it; a tenant key
//! wrapped by one root simply fails to authenticate under another.
//!
//! This module owns the choice of root and its failure messages. It must never
//! read configuration or the environment (the binary hands it typed settings,
//! the PIN included), and never hold root key material from an HSM.

mod pkcs11;

pub use pkcs11::{DEFAULT_KEY_LABEL, Pkcs11Root, Pkcs11RootConfig};

use crate::KeyError;
use nuage_crypto::KeyEncryptionKey;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Wraps and unwraps tenant keys. Implementations may block on hardware; the
/// trait is async so they can move that work off the request path.
#[async_trait::async_trait]
pub trait RootOfTrust: Send + Sync + fmt::Debug {
    /// A short description for logs: which root this is, never a secret.
    fn describe(&self) -> String;

    /// Encrypts `key` under the root, authenticating `aad` (the tenant id).
    ///
    /// # Errors
    /// Randomness or root-of-trust failure (an HSM that cannot be reached).
    async fn wrap_key(&self, key: &KeyEncryptionKey, aad: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// Recovers a key wrapped by [`RootOfTrust::wrap_key`] of the same root
    /// with the same `aad`.
    ///
    /// # Errors
    /// [`nuage_crypto::CryptoError::UnwrapAuthentication`] (inside
    /// [`KeyError::Crypto`]) for another root, another `aad` or an altered
    /// byte; a malformed-key error for a wrong length or version; a
    /// root-of-trust error when the HSM fails.
    async fn unwrap_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<KeyEncryptionKey, KeyError>;
}

/// The development root: a key in this process's memory, as read from the
/// 0600 key file by `nuage_crypto::RootKeyFile::open_or_create`.
#[async_trait::async_trait]
impl RootOfTrust for KeyEncryptionKey {
    fn describe(&self) -> String {
        "a root key held in memory (development key file)".to_owned()
    }

    async fn wrap_key(&self, key: &KeyEncryptionKey, aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(nuage_crypto::wrap_key_encryption_key(self, key, aad)?)
    }

    async fn unwrap_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<KeyEncryptionKey, KeyError> {
        Ok(nuage_crypto::unwrap_key_encryption_key(self, wrapped, aad)?)
    }
}

/// A shared root (the binary chooses one at start and may hand it to several
/// services).
#[async_trait::async_trait]
impl<R: RootOfTrust + ?Sized> RootOfTrust for Arc<R> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    async fn wrap_key(&self, key: &KeyEncryptionKey, aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        (**self).wrap_key(key, aad).await
    }

    async fn unwrap_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<KeyEncryptionKey, KeyError> {
        (**self).unwrap_key(wrapped, aad).await
    }
}

/// Why a root of trust could not be opened or used. The messages name the
/// setting to fix: they are what an operator sees when `nuage serve` refuses
/// to start.
#[derive(Debug, thiserror::Error)]
pub enum RootOfTrustError {
    #[error("cannot load the PKCS#11 module {}: {detail}", .module.display())]
    Module { module: PathBuf, detail: String },
    #[error(
        "no PKCS#11 token labelled `{label}` in {} (tokens found: {}); \
         check token_label, or initialize the token (softhsm2-util --init-token, or the HSM's tools)",
        .module.display(),
        if .found.is_empty() { "none".to_owned() } else { .found.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(", ") }
    )]
    TokenNotFound {
        module: PathBuf,
        label: String,
        found: Vec<String>,
    },
    #[error(
        "PKCS#11 token `{token}` refused the PIN (CKR_PIN_INCORRECT): check the PIN in pin_file"
    )]
    PinIncorrect { token: String },
    #[error("PKCS#11 token `{token}` has locked its user PIN after too many wrong attempts")]
    PinLocked { token: String },
    #[error(
        "PKCS#11 token `{token}` holds {count} AES keys labelled `{label}`: \
         refusing to guess which one is the root key"
    )]
    AmbiguousKey {
        token: String,
        label: String,
        count: usize,
    },
    #[error("the key `{label}` in PKCS#11 token `{token}` cannot be the root of trust: {reason}")]
    UnsuitableKey {
        token: String,
        label: String,
        reason: &'static str,
    },
    #[error("PKCS#11 token `{token}`: {operation} failed: {detail}")]
    Pkcs11 {
        token: String,
        operation: &'static str,
        detail: String,
    },
    #[error("the task running a PKCS#11 call did not finish: {0}")]
    Task(String),
}
