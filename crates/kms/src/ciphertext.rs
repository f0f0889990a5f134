//! The ciphertext blob that KMS `Encrypt` and `GenerateDataKey` return, and
//! the associated data that binds it to its key and encryption context.
//!
//! This module owns the byte format (pure: no I/O, no keys). It must never
//! accept a blob whose length or version it does not fully understand.
//!
//! # Ciphertext blob (version 1)
//!
//! ```text
//! offset  bytes  field
//! 0       1      format version, 0x01
//! 1       16     key id: the KMS key's UUID, its 16 bytes in RFC 9562 order
//! 17      4      material version, big-endian u32 (1 = the key's first material)
//! 21      12     nonce, random
//! 33      n+16   AES-256-GCM ciphertext of the n-byte plaintext, then the tag
//! ```
//!
//! So a blob is the plaintext plus [`CIPHERTEXT_OVERHEAD_BYTES`] (49) bytes.
//! The key id and material version are what let `Decrypt` work without a
//! `KeyId`, and let old ciphertext decrypt after rotation (which adds a
//! material version and never removes one).
//!
//! # Associated data
//!
//! The GCM associated data is [`associated_data`]:
//!
//! ```text
//! header (bytes 0..21 of the blob: version, key id, material version)
//! u32 BE length of the key ARN, the key ARN (UTF-8)
//! u32 BE number of encryption-context pairs
//! for each pair, in byte order of the keys:
//!     u32 BE key length, key (UTF-8), u32 BE value length, value (UTF-8)
//! ```
//!
//! and `nuage-crypto` prefixes it with `msg|` ([`nuage_crypto::seal_message`]).
//! Length prefixes make the encoding injective, and sorting makes it
//! canonical: the same context in any JSON order gives the same bytes, a
//! changed, added or removed pair gives different ones, so `Decrypt` with any
//! other context fails to authenticate. Binding the ARN (tenant, region, key
//! id) means a blob whose header is edited to name another key, or another
//! version, fails too, even before the material would.

use crate::customer::KmsError;
use nuage_crypto::{MESSAGE_NONCE_BYTES, SealedMessage, TAG_BYTES};
use std::collections::BTreeMap;

/// An encryption context: non-secret key/value pairs bound to a ciphertext.
/// A `BTreeMap`, so iteration is already in canonical (byte) order.
pub type EncryptionContext = BTreeMap<String, String>;

/// First byte of a version-1 blob.
pub const CIPHERTEXT_FORMAT_V1: u8 = 0x01;
/// Version, key id, material version.
pub const CIPHERTEXT_HEADER_BYTES: usize = 1 + 16 + 4;
/// What a blob adds to its plaintext: header, nonce, tag.
pub const CIPHERTEXT_OVERHEAD_BYTES: usize =
    CIPHERTEXT_HEADER_BYTES + MESSAGE_NONCE_BYTES + TAG_BYTES;

/// A parsed ciphertext blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiphertextBlob {
    /// The KMS key's id, as a lowercase hyphenated UUID.
    pub key_id: String,
    pub material_version: u32,
    pub sealed: SealedMessage,
}

impl CiphertextBlob {
    /// The blob's first [`CIPHERTEXT_HEADER_BYTES`] bytes.
    ///
    /// # Errors
    /// `Internal` when `key_id` is not a UUID (a programmer error: ids come
    /// from stored keys).
    pub fn header(key_id: &str, material_version: u32) -> Result<Vec<u8>, KmsError> {
        let id = uuid::Uuid::parse_str(key_id)
            .map_err(|_| KmsError::Internal(format!("key id `{key_id}` is not a UUID")))?;
        let mut header = Vec::with_capacity(CIPHERTEXT_HEADER_BYTES);
        header.push(CIPHERTEXT_FORMAT_V1);
        header.extend_from_slice(id.as_bytes());
        header.extend_from_slice(&material_version.to_be_bytes());
        Ok(header)
    }

    /// The blob's bytes.
    ///
    /// # Errors
    /// As [`CiphertextBlob::header`].
    pub fn encode(&self) -> Result<Vec<u8>, KmsError> {
        let mut out = Self::header(&self.key_id, self.material_version)?;
        out.reserve(MESSAGE_NONCE_BYTES + self.sealed.ciphertext.len());
        out.extend_from_slice(&self.sealed.nonce);
        out.extend_from_slice(&self.sealed.ciphertext);
        Ok(out)
    }

    /// Parses a blob a client sent.
    ///
    /// # Errors
    /// `InvalidCiphertext` for anything that is not a version-1 blob of at
    /// least [`CIPHERTEXT_OVERHEAD_BYTES`] bytes (an empty plaintext is valid).
    pub fn parse(bytes: &[u8]) -> Result<Self, KmsError> {
        let invalid = || {
            KmsError::InvalidCiphertext(
                "the ciphertext is not a Nuage KMS ciphertext blob".to_owned(),
            )
        };
        if bytes.len() < CIPHERTEXT_OVERHEAD_BYTES || bytes[0] != CIPHERTEXT_FORMAT_V1 {
            return Err(invalid());
        }
        let id: [u8; 16] = bytes[1..17].try_into().map_err(|_| invalid())?;
        let version: [u8; 4] = bytes[17..21].try_into().map_err(|_| invalid())?;
        let nonce: [u8; MESSAGE_NONCE_BYTES] = bytes
            [21..CIPHERTEXT_HEADER_BYTES + MESSAGE_NONCE_BYTES]
            .try_into()
            .map_err(|_| invalid())?;
        let material_version = u32::from_be_bytes(version);
        if material_version == 0 {
            return Err(invalid());
        }
        Ok(Self {
            key_id: uuid::Uuid::from_bytes(id).hyphenated().to_string(),
            material_version,
            sealed: SealedMessage {
                nonce,
                ciphertext: bytes[CIPHERTEXT_HEADER_BYTES + MESSAGE_NONCE_BYTES..].to_vec(),
            },
        })
    }
}

fn push_len_prefixed(out: &mut Vec<u8>, field: &[u8]) -> Result<(), KmsError> {
    let len = u32::try_from(field.len())
        .map_err(|_| KmsError::Validation("an encryption context field is too long".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

/// The associated data of a blob (see the module documentation).
///
/// # Errors
/// `Validation` for a field longer than `u32::MAX` bytes (callers bound the
/// context far below that).
pub fn associated_data(
    header: &[u8],
    key_arn: &str,
    context: &EncryptionContext,
) -> Result<Vec<u8>, KmsError> {
    let mut out = header.to_vec();
    push_len_prefixed(&mut out, key_arn.as_bytes())?;
    let pairs = u32::try_from(context.len())
        .map_err(|_| KmsError::Validation("too many encryption context pairs".into()))?;
    out.extend_from_slice(&pairs.to_be_bytes());
    for (key, value) in context {
        push_len_prefixed(&mut out, key.as_bytes())?;
        push_len_prefixed(&mut out, value.as_bytes())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn blobs_round_trip_with_the_documented_layout() {
        let blob = CiphertextBlob {
            key_id: KEY_ID.into(),
            material_version: 3,
            sealed: SealedMessage {
                nonce: [7; 12],
                ciphertext: vec![9; 5 + TAG_BYTES],
            },
        };
        let bytes = blob.encode().unwrap();
        assert_eq!(bytes.len(), 5 + CIPHERTEXT_OVERHEAD_BYTES);
        assert_eq!(CIPHERTEXT_OVERHEAD_BYTES, 49);
        assert_eq!(bytes[0], 0x01);
        assert_eq!(
            hex_of(&bytes[1..17]),
            "1234abcd12ab34cd56ef1234567890ab",
            "the UUID's bytes"
        );
        assert_eq!(&bytes[17..21], &[0, 0, 0, 3]);
        assert_eq!(&bytes[21..33], &[7; 12]);
        assert_eq!(CiphertextBlob::parse(&bytes).unwrap(), blob);
    }

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn malformed_blobs_are_invalid_ciphertext() {
        let good = CiphertextBlob {
            key_id: KEY_ID.into(),
            material_version: 1,
            sealed: SealedMessage {
                nonce: [0; 12],
                ciphertext: vec![0; TAG_BYTES],
            },
        }
        .encode()
        .unwrap();
        assert!(CiphertextBlob::parse(&good).is_ok(), "empty plaintext");
        let mut version_2 = good.clone();
        version_2[0] = 2;
        let mut material_0 = good.clone();
        material_0[20] = 0;
        for bad in [
            &good[..good.len() - 1],
            &[][..],
            &version_2[..],
            &material_0[..],
            b"not a blob at all, but long enough to be one if it had the version",
        ] {
            assert!(matches!(
                CiphertextBlob::parse(bad),
                Err(KmsError::InvalidCiphertext(_))
            ));
        }
    }

    #[test]
    fn associated_data_is_canonical_and_injective() {
        let header = CiphertextBlob::header(KEY_ID, 1).unwrap();
        let arn = "arn:aws:kms:fr-par:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let ab = associated_data(&header, arn, &context(&[("a", "1"), ("b", "2")])).unwrap();
        let ba = associated_data(&header, arn, &context(&[("b", "2"), ("a", "1")])).unwrap();
        assert_eq!(ab, ba, "order does not matter");
        let mut expected = header.clone();
        expected.extend_from_slice(&(arn.len() as u32).to_be_bytes());
        expected.extend_from_slice(arn.as_bytes());
        expected.extend_from_slice(&2u32.to_be_bytes());
        for field in ["a", "1", "b", "2"] {
            expected.extend_from_slice(&(field.len() as u32).to_be_bytes());
            expected.extend_from_slice(field.as_bytes());
        }
        assert_eq!(ab, expected);
        // Moving characters between fields, or changing anything, changes it.
        for other in [
            context(&[("a", "1b"), ("", "2")]),
            context(&[("a1", ""), ("b", "2")]),
            context(&[("a", "1")]),
            context(&[("a", "1"), ("b", "2"), ("c", "")]),
            context(&[("A", "1"), ("b", "2")]),
            context(&[]),
        ] {
            assert_ne!(associated_data(&header, arn, &other).unwrap(), ab);
        }
        assert_ne!(
            associated_data(
                &header,
                &arn.replace("fr-par", "de-fra"),
                &context(&[("a", "1"), ("b", "2")])
            )
            .unwrap(),
            ab
        );
        let v2 = CiphertextBlob::header(KEY_ID, 2).unwrap();
        assert_ne!(
            associated_data(&v2, arn, &context(&[("a", "1"), ("b", "2")])).unwrap(),
            ab
        );
    }
}
