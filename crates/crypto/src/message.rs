//! Short messages sealed whole under a [`KeyEncryptionKey`], and random bytes
//! for callers: what a KMS customer key does for `Encrypt`, `Decrypt` and
//! `GenerateDataKey` (`nuage-kms`).
//!
//! A KMS customer key is a key-encryption key in the wide sense: what it
//! encrypts is whatever a client sends, usually a data key, sometimes a
//! password, always small (the caller bounds it; AWS KMS allows 4 KiB). The
//! whole message is one AES-256-GCM operation, so nothing here streams.
//!
//! Format of [`seal_message`]: a fresh random 12-byte nonce, and
//! `AES-256-GCM-Encrypt(key, nonce, aad "msg|" || A, plaintext)` (ciphertext,
//! then the 16-byte tag); the caller stores both and chooses `A`. The `msg|`
//! prefix keeps messages apart from wrapped keys (whose AAD starts with `0x01`
//! or `0x01 kek|`) even if one key were misused for both. Random nonces keep
//! one key safe for about 2^32 messages (NIST SP 800-38D, 8.3): key rotation
//! gives a busy key fresh material long before that.
//!
//! This module must never return plaintext whose tag failed to verify, and
//! hands plaintext back only in buffers that are zeroed when dropped.

use ring::aead::{Aad, NONCE_LEN, Nonce};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::{CryptoError, KeyEncryptionKey};

/// Length of a message's nonce.
pub const MESSAGE_NONCE_BYTES: usize = NONCE_LEN;

/// A sealed message: what [`open_message`] needs besides the key and AAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedMessage {
    pub nonce: [u8; MESSAGE_NONCE_BYTES],
    /// The ciphertext (as long as the plaintext) followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

fn message_aad(aad: &[u8]) -> Vec<u8> {
    let mut full = b"msg|".to_vec();
    full.extend_from_slice(aad);
    full
}

/// Encrypts `plaintext` under `key` with a fresh random nonce, authenticating
/// `aad`.
///
/// # Errors
/// [`CryptoError::Random`] when the system generator fails.
pub fn seal_message(
    key: &KeyEncryptionKey,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<SealedMessage, CryptoError> {
    let mut nonce = [0u8; MESSAGE_NONCE_BYTES];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| CryptoError::Random)?;
    let mut ciphertext = plaintext.to_vec();
    // Sealed in place: the copy of the plaintext becomes its ciphertext.
    key.aead_key()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&message_aad(aad)[..]),
            &mut ciphertext,
        )
        .map_err(|_| CryptoError::MessageAuthentication)?;
    Ok(SealedMessage { nonce, ciphertext })
}

/// Recovers what [`seal_message`] sealed under the same `key` and `aad`.
///
/// # Errors
/// [`CryptoError::MessageAuthentication`] for another key, another AAD, an
/// altered byte, or input too short to hold a tag.
pub fn open_message(
    key: &KeyEncryptionKey,
    sealed: &SealedMessage,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut buffer = Zeroizing::new(sealed.ciphertext.clone());
    let len = key
        .aead_key()
        .open_in_place(
            Nonce::assume_unique_for_key(sealed.nonce),
            Aad::from(&message_aad(aad)[..]),
            buffer.as_mut_slice(),
        )
        .map_err(|_| CryptoError::MessageAuthentication)?
        .len();
    buffer.truncate(len);
    Ok(buffer)
}

/// `len` bytes from the operating system's generator, in a buffer zeroed when
/// dropped: data keys handed to clients (`GenerateDataKey`) and
/// `GenerateRandom`.
///
/// # Errors
/// [`CryptoError::Random`] when the system generator fails.
pub fn random_bytes(len: usize) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    SystemRandom::new()
        .fill(bytes.as_mut_slice())
        .map_err(|_| CryptoError::Random)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TAG_BYTES;

    #[test]
    fn sealed_messages_open_only_with_their_key_and_aad() {
        let key = KeyEncryptionKey::generate().unwrap();
        let sealed = seal_message(&key, b"context", b"attack at dawn").unwrap();
        assert_eq!(sealed.ciphertext.len(), 14 + TAG_BYTES);
        assert!(!sealed.ciphertext.windows(6).any(|w| w == b"attack"));
        assert_eq!(
            open_message(&key, &sealed, b"context").unwrap().as_slice(),
            b"attack at dawn"
        );
        let other = KeyEncryptionKey::generate().unwrap();
        assert!(matches!(
            open_message(&other, &sealed, b"context"),
            Err(CryptoError::MessageAuthentication)
        ));
        assert!(open_message(&key, &sealed, b"contexT").is_err());
        for byte in 0..sealed.ciphertext.len() {
            let mut altered = sealed.clone();
            altered.ciphertext[byte] ^= 0x80;
            assert!(open_message(&key, &altered, b"context").is_err(), "{byte}");
        }
        let mut moved = sealed.clone();
        moved.nonce[0] ^= 1;
        assert!(open_message(&key, &moved, b"context").is_err());
        let short = SealedMessage {
            nonce: sealed.nonce,
            ciphertext: vec![0; TAG_BYTES - 1],
        };
        assert!(open_message(&key, &short, b"context").is_err());
        // A fresh nonce every time.
        assert_ne!(seal_message(&key, b"context", b"x").unwrap().nonce, {
            seal_message(&key, b"context", b"x").unwrap().nonce
        });
    }

    #[test]
    fn messages_and_wrapped_keys_are_not_interchangeable() {
        let key = KeyEncryptionKey::generate().unwrap();
        let tenant = KeyEncryptionKey::generate().unwrap();
        let wrapped = crate::wrap_key_encryption_key(&key, &tenant, b"t").unwrap();
        let as_message = SealedMessage {
            nonce: wrapped[1..13].try_into().unwrap(),
            ciphertext: wrapped[13..].to_vec(),
        };
        for aad in [&b"t"[..], b"kek|t", b"\x01kek|t"] {
            assert!(open_message(&key, &as_message, aad).is_err());
        }
    }

    #[test]
    fn random_bytes_are_random_and_sized() {
        let a = random_bytes(32).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a.as_slice(), random_bytes(32).unwrap().as_slice());
        assert!(random_bytes(0).unwrap().is_empty());
    }
}
