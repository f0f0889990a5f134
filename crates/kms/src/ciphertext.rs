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
//! # Ciphertext blob (version 2): keys in an external key store
//!
//! ```text
//! offset  bytes  field
//! 0       1      format version, 0x02
//! 1       16     key id
//! 17      4      material version
//! 21      1      L, length of the proxy's IV (12 or 16)
//! 22      L      the proxy's IV
//! 22+L    1      M, length of the proxy's ciphertext metadata (0 to 20; 0 = none)
//! 23+L    M      the proxy's ciphertext metadata
//! 23+L+M  16     the proxy's authentication tag
//! 39+L+M  n+28   the proxy's ciphertext of the inner layer: the 12-byte nonce and
//!                the n+16 bytes AES-256-GCM ciphertext and tag of the plaintext
//!                under the key's material (exactly version 1's bytes 21..)
//! ```
//!
//! Two layers, as AWS KMS does for keys in external key stores: the inner
//! one under the key's Nuage material (associated data as below, with this
//! version's header), the outer one by the external key store proxy under
//! the external key, with [`external_associated_data`] (a SHA-256 digest of
//! the inner associated data, so it binds the same key ARN, header and
//! encryption context within the proxy's AAD limit). Neither Nuage alone nor
//! the proxy alone can decrypt. With a 12-byte IV and no metadata a blob is
//! the plaintext plus 79 bytes.
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
use crate::external::XksCiphertext;
use nuage_base::limits::XKS_CIPHERTEXT_METADATA_BYTES_MAX;
use nuage_crypto::{MESSAGE_NONCE_BYTES, SealedMessage, TAG_BYTES};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

/// An encryption context: non-secret key/value pairs bound to a ciphertext.
/// A `BTreeMap`, so iteration is already in canonical (byte) order.
pub type EncryptionContext = BTreeMap<String, String>;

/// First byte of a version-1 blob.
pub const CIPHERTEXT_FORMAT_V1: u8 = 0x01;
/// Version, key id, material version.
pub const CIPHERTEXT_HEADER_BYTES: usize = 1 + 16 + 4;
/// First byte of a version-2 blob (a key in an external key store).
pub const CIPHERTEXT_FORMAT_V2: u8 = 0x02;
/// What a blob adds to its plaintext: header, nonce, tag.
pub const CIPHERTEXT_OVERHEAD_BYTES: usize =
    CIPHERTEXT_HEADER_BYTES + MESSAGE_NONCE_BYTES + TAG_BYTES;
/// The IV lengths an external key store proxy may use with AES-GCM.
const XKS_IV_BYTES: [usize; 2] = [12, 16];

/// What follows a blob's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CiphertextBody {
    /// Version 1: sealed under the key's material only.
    Sealed(SealedMessage),
    /// Version 2: the version-1 body (nonce, ciphertext, tag) encrypted
    /// again by the external key store proxy.
    External(XksCiphertext),
}

/// A parsed ciphertext blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiphertextBlob {
    /// The KMS key's id, as a lowercase hyphenated UUID.
    pub key_id: String,
    pub material_version: u32,
    pub body: CiphertextBody,
}

/// Appends the proxy's output in the layout of version 2's bytes 21.. (and
/// of the external wrapped data key).
///
/// # Errors
/// `XksProxyInvalidResponse` for an IV, tag or metadata length the format
/// cannot hold (the proxy answered outside the spec).
pub(crate) fn encode_external(out: &mut Vec<u8>, outer: &XksCiphertext) -> Result<(), KmsError> {
    let metadata = outer.ciphertext_metadata.as_deref().unwrap_or_default();
    if !XKS_IV_BYTES.contains(&outer.initialization_vector.len())
        || outer.authentication_tag.len() != TAG_BYTES
        || metadata.len() > XKS_CIPHERTEXT_METADATA_BYTES_MAX
    {
        return Err(KmsError::XksProxyInvalidResponse(format!(
            "the external key store proxy returned an IV of {} bytes, a tag of {} bytes and {} \
             bytes of ciphertext metadata: AES-GCM needs a 12- or 16-byte IV, a 16-byte tag, and \
             at most {XKS_CIPHERTEXT_METADATA_BYTES_MAX} bytes of metadata",
            outer.initialization_vector.len(),
            outer.authentication_tag.len(),
            metadata.len()
        )));
    }
    // The lengths were just checked to fit a byte.
    out.push(outer.initialization_vector.len() as u8);
    out.extend_from_slice(&outer.initialization_vector);
    out.push(metadata.len() as u8);
    out.extend_from_slice(metadata);
    out.extend_from_slice(&outer.authentication_tag);
    out.extend_from_slice(&outer.ciphertext);
    Ok(())
}

/// Parses what [`encode_external`] wrote; `None` when malformed.
pub(crate) fn parse_external(bytes: &[u8]) -> Option<XksCiphertext> {
    let (&iv_len, rest) = bytes.split_first()?;
    let iv_len = usize::from(iv_len);
    if !XKS_IV_BYTES.contains(&iv_len) {
        return None;
    }
    let (iv, rest) = rest.split_at_checked(iv_len)?;
    let (&metadata_len, rest) = rest.split_first()?;
    let metadata_len = usize::from(metadata_len);
    if metadata_len > XKS_CIPHERTEXT_METADATA_BYTES_MAX {
        return None;
    }
    let (metadata, rest) = rest.split_at_checked(metadata_len)?;
    let (tag, ciphertext) = rest.split_at_checked(TAG_BYTES)?;
    Some(XksCiphertext {
        ciphertext: ciphertext.to_vec(),
        initialization_vector: iv.to_vec(),
        authentication_tag: tag.to_vec(),
        ciphertext_metadata: (metadata_len > 0).then(|| metadata.to_vec()),
    })
}

/// The associated data the external key store proxy authenticates for a
/// blob or wrapped key whose inner associated data is `inner`: `domain`,
/// `|`, then SHA-256 of `inner`. A digest, because the proxy accepts at
/// most 8 KiB of AAD and an encryption context alone may be that large.
#[must_use]
pub fn external_associated_data(domain: &str, inner: &[u8]) -> Vec<u8> {
    let mut out = format!("nuage-xks|{domain}|").into_bytes();
    out.extend_from_slice(&Sha256::digest(inner));
    out
}

impl CiphertextBlob {
    /// The blob's first [`CIPHERTEXT_HEADER_BYTES`] bytes, version 1.
    ///
    /// # Errors
    /// `Internal` when `key_id` is not a UUID (a programmer error: ids come
    /// from stored keys).
    pub fn header(key_id: &str, material_version: u32) -> Result<Vec<u8>, KmsError> {
        Self::header_of(CIPHERTEXT_FORMAT_V1, key_id, material_version)
    }

    /// The first [`CIPHERTEXT_HEADER_BYTES`] bytes of a blob of `version`.
    ///
    /// # Errors
    /// As [`CiphertextBlob::header`].
    pub fn header_of(
        version: u8,
        key_id: &str,
        material_version: u32,
    ) -> Result<Vec<u8>, KmsError> {
        let id = uuid::Uuid::parse_str(key_id)
            .map_err(|_| KmsError::Internal(format!("key id `{key_id}` is not a UUID")))?;
        let mut header = Vec::with_capacity(CIPHERTEXT_HEADER_BYTES);
        header.push(version);
        header.extend_from_slice(id.as_bytes());
        header.extend_from_slice(&material_version.to_be_bytes());
        Ok(header)
    }

    /// The format version this blob is written in.
    #[must_use]
    pub fn version(&self) -> u8 {
        match self.body {
            CiphertextBody::Sealed(_) => CIPHERTEXT_FORMAT_V1,
            CiphertextBody::External(_) => CIPHERTEXT_FORMAT_V2,
        }
    }

    /// The blob's first bytes, as the associated data binds them.
    ///
    /// # Errors
    /// As [`CiphertextBlob::header`].
    pub fn own_header(&self) -> Result<Vec<u8>, KmsError> {
        Self::header_of(self.version(), &self.key_id, self.material_version)
    }

    /// The blob's bytes.
    ///
    /// # Errors
    /// As [`CiphertextBlob::header`]; for version 2, as [`encode_external`].
    pub fn encode(&self) -> Result<Vec<u8>, KmsError> {
        let mut out = self.own_header()?;
        match &self.body {
            CiphertextBody::Sealed(sealed) => {
                out.reserve(MESSAGE_NONCE_BYTES + sealed.ciphertext.len());
                out.extend_from_slice(&sealed.nonce);
                out.extend_from_slice(&sealed.ciphertext);
            }
            CiphertextBody::External(outer) => encode_external(&mut out, outer)?,
        }
        Ok(out)
    }

    /// Parses a blob a client sent.
    ///
    /// # Errors
    /// `InvalidCiphertext` for anything that is not a version-1 blob of at
    /// least [`CIPHERTEXT_OVERHEAD_BYTES`] bytes (an empty plaintext is valid)
    /// or a well-formed version-2 blob.
    pub fn parse(bytes: &[u8]) -> Result<Self, KmsError> {
        let invalid = || {
            KmsError::InvalidCiphertext(
                "the ciphertext is not a Nuage KMS ciphertext blob".to_owned(),
            )
        };
        if bytes.len() < CIPHERTEXT_OVERHEAD_BYTES
            || !matches!(bytes[0], CIPHERTEXT_FORMAT_V1 | CIPHERTEXT_FORMAT_V2)
        {
            return Err(invalid());
        }
        let id: [u8; 16] = bytes[1..17].try_into().map_err(|_| invalid())?;
        let version: [u8; 4] = bytes[17..21].try_into().map_err(|_| invalid())?;
        let material_version = u32::from_be_bytes(version);
        if material_version == 0 {
            return Err(invalid());
        }
        let body = if bytes[0] == CIPHERTEXT_FORMAT_V1 {
            let nonce: [u8; MESSAGE_NONCE_BYTES] = bytes
                [21..CIPHERTEXT_HEADER_BYTES + MESSAGE_NONCE_BYTES]
                .try_into()
                .map_err(|_| invalid())?;
            CiphertextBody::Sealed(SealedMessage {
                nonce,
                ciphertext: bytes[CIPHERTEXT_HEADER_BYTES + MESSAGE_NONCE_BYTES..].to_vec(),
            })
        } else {
            let outer = parse_external(&bytes[CIPHERTEXT_HEADER_BYTES..]).ok_or_else(invalid)?;
            // The outer layer encrypts at least a nonce and a tag.
            if outer.ciphertext.len() < MESSAGE_NONCE_BYTES + TAG_BYTES {
                return Err(invalid());
            }
            CiphertextBody::External(outer)
        };
        Ok(Self {
            key_id: uuid::Uuid::from_bytes(id).hyphenated().to_string(),
            material_version,
            body,
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
            body: CiphertextBody::Sealed(SealedMessage {
                nonce: [7; 12],
                ciphertext: vec![9; 5 + TAG_BYTES],
            }),
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
            body: CiphertextBody::Sealed(SealedMessage {
                nonce: [0; 12],
                ciphertext: vec![0; TAG_BYTES],
            }),
        }
        .encode()
        .unwrap();
        assert!(CiphertextBlob::parse(&good).is_ok(), "empty plaintext");
        let mut version_3 = good.clone();
        version_3[0] = 3;
        // A version-1 body read as version 2: its first byte is no IV length.
        let mut version_2 = good.clone();
        version_2[0] = 2;
        version_2[21] = 200;
        let mut material_0 = good.clone();
        material_0[20] = 0;
        for bad in [
            &good[..good.len() - 1],
            &[][..],
            &version_2[..],
            &version_3[..],
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

    #[test]
    fn version_2_blobs_round_trip_with_the_documented_layout() {
        let outer = XksCiphertext {
            ciphertext: vec![5; 12 + 3 + TAG_BYTES],
            initialization_vector: vec![1; 12],
            authentication_tag: vec![2; 16],
            ciphertext_metadata: Some(b"meta".to_vec()),
        };
        let blob = CiphertextBlob {
            key_id: KEY_ID.into(),
            material_version: 2,
            body: CiphertextBody::External(outer.clone()),
        };
        let bytes = blob.encode().unwrap();
        assert_eq!(bytes[0], 0x02);
        assert_eq!(&bytes[17..21], &[0, 0, 0, 2]);
        assert_eq!(bytes[21], 12, "IV length");
        assert_eq!(&bytes[22..34], &[1; 12]);
        assert_eq!(bytes[34], 4, "metadata length");
        assert_eq!(&bytes[35..39], b"meta");
        assert_eq!(&bytes[39..55], &[2; 16]);
        assert_eq!(&bytes[55..], &outer.ciphertext[..]);
        // Plaintext of 3 bytes: 79 bytes of overhead plus the metadata.
        assert_eq!(bytes.len(), 3 + 79 + 4);
        assert_eq!(CiphertextBlob::parse(&bytes).unwrap(), blob);
        // No metadata is a zero length, read back as none.
        let plain = CiphertextBlob {
            body: CiphertextBody::External(XksCiphertext {
                ciphertext_metadata: None,
                ..outer.clone()
            }),
            ..blob.clone()
        };
        let bytes = plain.encode().unwrap();
        assert_eq!(CiphertextBlob::parse(&bytes).unwrap(), plain);
        // Truncated anywhere, or with impossible lengths: invalid.
        for cut in [22, 34, 40, 54] {
            assert!(matches!(
                CiphertextBlob::parse(&bytes[..cut]),
                Err(KmsError::InvalidCiphertext(_))
            ));
        }
        let mut bad_iv = bytes.clone();
        bad_iv[21] = 13;
        assert!(CiphertextBlob::parse(&bad_iv).is_err());
        // A proxy answer outside the spec is refused when encoding.
        let odd = CiphertextBlob {
            body: CiphertextBody::External(XksCiphertext {
                authentication_tag: vec![0; 12],
                ..outer
            }),
            ..blob
        };
        assert!(matches!(
            odd.encode(),
            Err(KmsError::XksProxyInvalidResponse(_))
        ));
    }
}
