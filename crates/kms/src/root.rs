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
//! Both produce the same wrapped form (`nuage-crypto`'s wrapped key, version
//! 1: `0x01 || nonce || ciphertext || tag`, 61 bytes, with
//! [`nuage_crypto::key_encryption_key_wrap_aad`] as associated data); a key
//! wrapped by one root simply fails to authenticate under another. What is
//! *stored* is that form tagged with the [`RootId`] of the root that wrapped
//! it ([`RootRing`], module `ring`), so a data directory can say which root
//! each of its wrapped keys needs: that is what lets a migration between
//! roots (module `crate::migrate`) stop half way and resume, and a reader
//! holding both roots pick the right one.
//!
//! This module owns the choice of root and its failure messages. It must never
//! read configuration or the environment (the binary hands it typed settings,
//! the PIN included), and never hold root key material from an HSM.

mod pkcs11;
mod ring;

pub use pkcs11::{DEFAULT_KEY_LABEL, Pkcs11Root, Pkcs11RootConfig};
pub use ring::{
    ROOT_TAGGED_WRAPPED_KEY_BYTES, ROOT_TAGGED_WRAPPED_KEY_FORMAT, RootRing, TaggedWrappedKey,
    tag_wrapped_key,
};

use crate::KeyError;
use nuage_crypto::KeyEncryptionKey;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Bytes of a [`RootId`].
pub const ROOT_ID_BYTES: usize = 16;
/// What the development root's id is an HMAC of (under the root key): fixed,
/// so the id is stable, and naming its purpose, so the HMAC is of use for
/// nothing else.
const FILE_ROOT_ID_LABEL: &[u8] = b"nuage root-of-trust identifier v1";

/// Which root of trust wrapped a stored key: 16 bytes that name a root and
/// reveal nothing about its key material. The development root's is the
/// start of an HMAC-SHA-256 of a fixed label under the root key (the key is
/// 256 random bits: the id cannot be inverted or searched); an HSM root's is
/// a digest of token label, key label and the key's `CKA_ID` (random, set
/// when Nuage generates the key), so a new key under an old label is another
/// root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RootId(pub [u8; ROOT_ID_BYTES]);

impl fmt::Display for RootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootId({self})")
    }
}

impl RootId {
    /// The id of the development root whose key is `key`.
    #[must_use]
    pub fn of_key(key: &KeyEncryptionKey) -> Self {
        let hmac_key = ::ring::hmac::Key::new(::ring::hmac::HMAC_SHA256, key.expose_bytes());
        let tag = ::ring::hmac::sign(&hmac_key, FILE_ROOT_ID_LABEL);
        let mut id = [0u8; ROOT_ID_BYTES];
        id.copy_from_slice(&tag.as_ref()[..ROOT_ID_BYTES]);
        Self(id)
    }
}

/// Wraps and unwraps tenant keys. Implementations may block on hardware; the
/// trait is async so they can move that work off the request path.
#[async_trait::async_trait]
pub trait RootOfTrust: Send + Sync + fmt::Debug {
    /// A short description for logs: which root this is, never a secret.
    fn describe(&self) -> String;

    /// This root's identifier, recorded beside every key it wraps.
    fn id(&self) -> RootId;

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
        format!(
            "the development root key {} (held in memory, read from a key file)",
            RootId::of_key(self)
        )
    }

    fn id(&self) -> RootId {
        RootId::of_key(self)
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

    fn id(&self) -> RootId {
        (**self).id()
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
    #[error("PKCS#11 token `{token}` holds no AES key labelled `{label}`: check key_label")]
    KeyNotFound { token: String, label: String },
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
    /// A stored key names a root that this process was not given: the data
    /// directory is (partly) under another root of trust.
    #[error(
        "a stored key was wrapped by root of trust {wrapped_by}, which is not configured \
         (configured: {}); finish or undo the root-of-trust migration \
         (`nuage root-of-trust migrate`, docs/configuration.md)",
        .configured.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    UnknownRoot {
        wrapped_by: RootId,
        configured: Vec<RootId>,
    },
}
