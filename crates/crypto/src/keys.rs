//! Key material: [`DataKey`] and [`KeyEncryptionKey`].
//!
//! Owns the 32-byte secrets and the promise made about them: they come from
//! the system random number generator, never appear in `Debug` output, are
//! not `Clone`, and are overwritten with zeros when dropped. Two types rather
//! than one so a data key cannot be passed where a key-encryption key is
//! expected. This module must never hand out raw key bytes outside the crate,
//! with one documented exception: a root of trust that wraps tenant keys in
//! a hardware security module needs a key-encryption key's bytes in and out
//! ([`KeyEncryptionKey::expose_bytes`], [`KeyEncryptionKey::from_bytes`]).
//! Bytes may come in (never out) as an S3 SSE-C customer key
//! ([`KeyEncryptionKey::from_customer_key`]).
//!
//! Randomness deliberately does not come through a substitutable trait (as
//! time does elsewhere in Nuage): a test-controlled source is exactly what
//! must never reach key generation, and no test needs predictable keys.
//!
//! Zeroing is best effort: it clears the bytes these types own, not copies a
//! move may leave on the stack, nor `ring`'s expanded AES key schedule inside
//! a stream's `LessSafeKey`.

use std::fmt;

use ring::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::CryptoError;

/// Length of every key in this crate (AES-256).
pub const KEY_BYTES: usize = 32;

type SecretBytes = Zeroizing<[u8; KEY_BYTES]>;

fn random_secret() -> Result<SecretBytes, CryptoError> {
    let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
    SystemRandom::new()
        .fill(bytes.as_mut())
        .map_err(|_| CryptoError::Random)?;
    Ok(bytes)
}

fn aead_key(bytes: &SecretBytes) -> LessSafeKey {
    // Cannot fail: AES-256-GCM takes exactly KEY_BYTES bytes, which the type
    // guarantees. This is an assertion about this code, not about input.
    let unbound = UnboundKey::new(&AES_256_GCM, bytes.as_ref())
        .expect("a 32-byte key is a valid AES-256-GCM key");
    LessSafeKey::new(unbound)
}

/// The key that seals one object's chunks. Fresh for every blob; stored only
/// wrapped under a [`KeyEncryptionKey`].
pub struct DataKey {
    bytes: SecretBytes,
}

impl DataKey {
    /// A new random data key from the operating system's generator.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self {
            bytes: random_secret()?,
        })
    }

    pub(crate) fn from_secret(bytes: SecretBytes) -> Self {
        Self { bytes }
    }

    pub(crate) fn secret(&self) -> &[u8; KEY_BYTES] {
        &self.bytes
    }

    pub(crate) fn aead_key(&self) -> LessSafeKey {
        aead_key(&self.bytes)
    }

    /// Consumes the key for sealing one plaintext: the caller cannot use it
    /// again, and its bytes are zeroed here.
    pub(crate) fn into_aead_key(self) -> LessSafeKey {
        aead_key(&self.bytes)
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// A key that only ever encrypts other keys ([`crate::wrap_data_key`]). The
/// development root key is one ([`crate::RootKeyFile`]).
pub struct KeyEncryptionKey {
    bytes: SecretBytes,
}

impl KeyEncryptionKey {
    /// A new random key-encryption key from the operating system's generator.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self {
            bytes: random_secret()?,
        })
    }

    pub(crate) fn from_secret(bytes: SecretBytes) -> Self {
        Self { bytes }
    }

    /// A key-encryption key from raw bytes that a root of trust has just
    /// unwrapped (a hardware security module decrypting a stored tenant key).
    ///
    /// **Only root-of-trust adapters may use this** (`nuage-kms`'s PKCS#11
    /// root): everywhere else a key-encryption key comes from
    /// [`KeyEncryptionKey::generate`] or [`crate::unwrap_key_encryption_key`].
    /// The bytes must be the output of an authenticated decryption, never
    /// input from the network or disk.
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_BYTES]>) -> Self {
        Self { bytes }
    }

    /// A key-encryption key a client supplied with its request: the
    /// customer-provided key of S3 SSE-C, which wraps one blob's data key
    /// (or an upload's key check) and is then dropped. Never stored by
    /// Nuage; whether it is the right key is proved by an unwrap
    /// authenticating, never by comparing it with anything kept.
    pub fn from_customer_key(bytes: Zeroizing<[u8; KEY_BYTES]>) -> Self {
        Self { bytes }
    }

    /// The raw key bytes, for a root of trust that wraps this key outside the
    /// process (a hardware security module encrypting a tenant key).
    ///
    /// **Only root-of-trust adapters may use this**, to hand the bytes
    /// straight to the wrapping operation: never log, store or send them
    /// anywhere else, and keep any copy in a [`Zeroizing`] buffer.
    pub fn expose_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.bytes
    }

    pub(crate) fn secret(&self) -> &[u8; KEY_BYTES] {
        &self.bytes
    }

    pub(crate) fn aead_key(&self) -> LessSafeKey {
        aead_key(&self.bytes)
    }
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyEncryptionKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_differ() {
        let a = DataKey::generate().expect("rng");
        let b = DataKey::generate().expect("rng");
        assert_ne!(a.secret(), b.secret());
        assert_ne!(a.secret(), &[0u8; KEY_BYTES]);
        let c = KeyEncryptionKey::generate().expect("rng");
        assert_ne!(c.secret(), a.secret());
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = DataKey::from_secret(Zeroizing::new([0xAB; KEY_BYTES]));
        let printed = format!(
            "{key:?} {:?}",
            KeyEncryptionKey::from_secret(Zeroizing::new([0xAB; KEY_BYTES]))
        );
        assert_eq!(printed, "DataKey(<redacted>) KeyEncryptionKey(<redacted>)");
    }
}
