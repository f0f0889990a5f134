//! Key wrapping: a [`DataKey`] encrypted under a [`KeyEncryptionKey`], and the
//! [`Binding`] that ties a wrapped key and a ciphertext to one blob.
//!
//! Owns the wrapped-key and binding encodings (see the crate documentation).
//! It must never return a data key whose wrapping failed to authenticate, nor
//! leave an unwrapped key's bytes behind in a buffer it allocated.

use ring::aead::{Aad, NONCE_LEN, Nonce};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::keys::KEY_BYTES;
use crate::{CryptoError, DataKey, KeyEncryptionKey, TAG_BYTES};

/// First byte of a version-1 wrapped key.
pub const WRAPPED_KEY_FORMAT_V1: u8 = 0x01;
/// Length of a version-1 wrapped key: version, nonce, encrypted key, tag.
pub const WRAPPED_KEY_BYTES: usize = 1 + NONCE_LEN + KEY_BYTES + TAG_BYTES;

const BINDING_FORMAT_V1: u8 = 0x01;
const BLOB_BINDING_FORMAT_V2: u8 = 0x02;

/// Where a ciphertext belongs: the associated data of an object's wrapped
/// data key (and of the chunks of blobs written before [`BlobBinding`]).
/// Ciphertext or a wrapped key presented under any other binding fails to
/// authenticate.
///
/// Binding the region means bytes copied to another region's store do not
/// decrypt there; binding the blob means two blobs of one object cannot be
/// swapped. A blob whose chunks are bound this way belongs to one object: a
/// server-side copy of it re-encrypts into a new blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    /// The owning tenant's account id.
    pub tenant: &'a str,
    pub bucket: &'a str,
    /// The object key.
    pub key: &'a str,
    /// The blob id holding the ciphertext.
    pub blob: &'a str,
    /// The region whose storage holds the blob.
    pub region: &'a str,
}

impl Binding<'_> {
    /// Canonical bytes: a version byte, then each field (tenant, bucket, key,
    /// blob, region) as its length in a big-endian `u64` and its UTF-8 bytes.
    /// Injective: different bindings never encode alike, even when fields
    /// contain `|` or any other separator.
    pub fn encode(&self) -> Vec<u8> {
        let fields = [self.tenant, self.bucket, self.key, self.blob, self.region];
        let len = 1 + fields.iter().map(|field| 8 + field.len()).sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.push(BINDING_FORMAT_V1);
        for field in fields {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }
}

/// The associated data of a *shareable* blob's chunks (format 2): the
/// tenant, the blob and the region, not the object. Several objects of one
/// tenant may then reference one blob (a server-side copy shares its
/// source's blob), each with its own wrapped copy of the data key bound by a
/// [`Binding`] to that object. The chunks still cannot move to another blob,
/// tenant or region; a wrapped key still cannot move to another object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobBinding<'a> {
    /// The owning tenant's account id.
    pub tenant: &'a str,
    /// The blob id holding the ciphertext.
    pub blob: &'a str,
    /// The region whose storage holds the blob.
    pub region: &'a str,
}

impl BlobBinding<'_> {
    /// Canonical bytes: version byte 2 (so they never equal a [`Binding`]'s),
    /// then tenant, blob and region, each as its length in a big-endian `u64`
    /// and its UTF-8 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let fields = [self.tenant, self.blob, self.region];
        let len = 1 + fields.iter().map(|field| 8 + field.len()).sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.push(BLOB_BINDING_FORMAT_V2);
        for field in fields {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }
}

fn wrap_aad(aad: &[u8]) -> Vec<u8> {
    // The version byte is authenticated too, so a wrapped key cannot be
    // reinterpreted under another version's rules.
    let mut full = Vec::with_capacity(1 + aad.len());
    full.push(WRAPPED_KEY_FORMAT_V1);
    full.extend_from_slice(aad);
    full
}

/// Seals 32 bytes of key material under `kek` (format: see the crate doc).
fn seal_secret(
    kek: &KeyEncryptionKey,
    secret: &[u8; KEY_BYTES],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| CryptoError::Random)?;
    let mut wrapped = Vec::with_capacity(WRAPPED_KEY_BYTES);
    wrapped.push(WRAPPED_KEY_FORMAT_V1);
    wrapped.extend_from_slice(&nonce);
    wrapped.extend_from_slice(secret);
    // Sealed in place: the plaintext key bytes copied above are overwritten
    // by their ciphertext, so no clear copy is left in this buffer.
    let tag = kek
        .aead_key()
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&wrap_aad(aad)[..]),
            &mut wrapped[1 + NONCE_LEN..],
        )
        .map_err(|_| CryptoError::MalformedWrappedKey("sealing failed"))?;
    wrapped.extend_from_slice(tag.as_ref());
    Ok(wrapped)
}

/// Opens what [`seal_secret`] sealed.
fn open_secret(
    kek: &KeyEncryptionKey,
    wrapped: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<[u8; KEY_BYTES]>, CryptoError> {
    if wrapped.len() != WRAPPED_KEY_BYTES {
        return Err(CryptoError::MalformedWrappedKey("wrong length"));
    }
    let (version, rest) = wrapped.split_at(1);
    if version[0] != WRAPPED_KEY_FORMAT_V1 {
        return Err(CryptoError::MalformedWrappedKey("unknown format version"));
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| CryptoError::MalformedWrappedKey("wrong nonce length"))?;
    // Opened in a buffer that is zeroed when dropped, on every path.
    let mut buffer = Zeroizing::new(sealed.to_vec());
    let plaintext = kek
        .aead_key()
        .open_in_place(nonce, Aad::from(&wrap_aad(aad)[..]), buffer.as_mut_slice())
        .map_err(|_| CryptoError::UnwrapAuthentication)?;
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    // The length was checked above, so the plaintext is exactly KEY_BYTES.
    key.copy_from_slice(plaintext);
    Ok(key)
}

/// Encrypts `dek` under `kek` with a fresh random nonce, authenticating
/// `aad` (normally [`Binding::encode`]). The result is
/// [`WRAPPED_KEY_BYTES`] long and safe to store beside the object's metadata.
pub fn wrap_data_key(
    kek: &KeyEncryptionKey,
    dek: &DataKey,
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    seal_secret(kek, dek.secret(), aad)
}

/// Recovers a data key wrapped by [`wrap_data_key`] under the same `kek` and
/// `aad`. Any other key-encryption key, AAD, or altered byte fails with
/// [`CryptoError::UnwrapAuthentication`]; a wrong length or an unknown
/// version with [`CryptoError::MalformedWrappedKey`].
pub fn unwrap_data_key(
    kek: &KeyEncryptionKey,
    wrapped: &[u8],
    aad: &[u8],
) -> Result<DataKey, CryptoError> {
    open_secret(kek, wrapped, aad).map(DataKey::from_secret)
}

/// The AAD of a wrapped key-encryption key: a prefix no [`Binding`]
/// encoding starts with (those start with 0x01), so a wrapped data key can
/// never be unwrapped as a key-encryption key or the other way round.
fn kek_aad(aad: &[u8]) -> Vec<u8> {
    let mut full = b"kek|".to_vec();
    full.extend_from_slice(aad);
    full
}

/// The associated data that [`wrap_key_encryption_key`] authenticates for a
/// caller's `aad`: the format version byte, `kek|`, then `aad`.
///
/// For root-of-trust adapters that run AES-256-GCM outside the process (a
/// hardware security module): sealing the 32 key bytes with this AAD and a
/// random 12-byte nonce, laid out as `0x01 || nonce || ciphertext || tag`,
/// gives exactly the wrapped-key format of this crate.
pub fn key_encryption_key_wrap_aad(aad: &[u8]) -> Vec<u8> {
    wrap_aad(&kek_aad(aad))
}

/// Encrypts a key-encryption key (a tenant key) under another (the root of
/// trust), authenticating `aad` (for example the tenant id).
pub fn wrap_key_encryption_key(
    root: &KeyEncryptionKey,
    kek: &KeyEncryptionKey,
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    seal_secret(root, kek.secret(), &kek_aad(aad))
}

/// Recovers a key-encryption key wrapped by [`wrap_key_encryption_key`].
pub fn unwrap_key_encryption_key(
    root: &KeyEncryptionKey,
    wrapped: &[u8],
    aad: &[u8],
) -> Result<KeyEncryptionKey, CryptoError> {
    open_secret(root, wrapped, &kek_aad(aad)).map(KeyEncryptionKey::from_secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding<'static> {
        Binding {
            tenant: "123456789012",
            bucket: "photos",
            key: "2024/cat.jpg",
            blob: "0123456789abcdef",
            region: "fr-par",
        }
    }

    fn kek(byte: u8) -> KeyEncryptionKey {
        KeyEncryptionKey::from_secret(Zeroizing::new([byte; KEY_BYTES]))
    }

    #[test]
    fn blob_bindings_are_injective_and_never_equal_object_bindings() {
        let blob = |tenant, blob, region| BlobBinding {
            tenant,
            blob,
            region,
        };
        let a = blob("123456789012", "0123456789abcdef", "fr-par").encode();
        assert_ne!(
            a,
            blob("123456789013", "0123456789abcdef", "fr-par").encode()
        );
        assert_ne!(
            a,
            blob("123456789012", "0123456789abcdee", "fr-par").encode()
        );
        assert_ne!(
            a,
            blob("123456789012", "0123456789abcdef", "fr-lyo").encode()
        );
        // Moving bytes between fields changes the encoding.
        assert_ne!(blob("ab", "c", "d").encode(), blob("a", "bc", "d").encode());
        assert_eq!(a[0], BLOB_BINDING_FORMAT_V2);
        assert_ne!(a[0], binding().encode()[0]);
    }

    #[test]
    fn wrap_then_unwrap_returns_the_same_key() {
        let kek = KeyEncryptionKey::generate().expect("rng");
        let dek = DataKey::generate().expect("rng");
        let aad = binding().encode();
        let wrapped = wrap_data_key(&kek, &dek, &aad).expect("wrap");
        assert_eq!(wrapped.len(), WRAPPED_KEY_BYTES);
        assert_eq!(wrapped[0], WRAPPED_KEY_FORMAT_V1);
        assert!(
            !wrapped.windows(KEY_BYTES).any(|w| w == dek.secret()),
            "the data key must not appear in clear"
        );
        let unwrapped = unwrap_data_key(&kek, &wrapped, &aad).expect("unwrap");
        assert_eq!(unwrapped.secret(), dek.secret());
        // A fresh nonce every time.
        assert_ne!(wrapped, wrap_data_key(&kek, &dek, &aad).expect("wrap"));
    }

    #[test]
    fn unwrap_refuses_wrong_aad_wrong_kek_and_any_altered_byte() {
        let kek = kek(7);
        let dek = DataKey::generate().expect("rng");
        let aad = binding().encode();
        let wrapped = wrap_data_key(&kek, &dek, &aad).expect("wrap");

        let other_object = Binding {
            key: "2024/dog.jpg",
            ..binding()
        }
        .encode();
        let other_region = Binding {
            region: "de-fra",
            ..binding()
        }
        .encode();
        for wrong in [
            &other_object[..],
            &other_region[..],
            b"",
            &aad[..aad.len() - 1],
        ] {
            assert!(matches!(
                unwrap_data_key(&kek, &wrapped, wrong),
                Err(CryptoError::UnwrapAuthentication)
            ));
        }
        assert!(matches!(
            unwrap_data_key(&self::kek(8), &wrapped, &aad),
            Err(CryptoError::UnwrapAuthentication)
        ));
        // Every bit of nonce, ciphertext and tag is authenticated.
        for byte in 1..wrapped.len() {
            for bit in 0..8 {
                let mut altered = wrapped.clone();
                altered[byte] ^= 1 << bit;
                assert!(
                    matches!(
                        unwrap_data_key(&kek, &altered, &aad),
                        Err(CryptoError::UnwrapAuthentication)
                    ),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn unwrap_refuses_malformed_input() {
        let kek = kek(7);
        let dek = DataKey::generate().expect("rng");
        let wrapped = wrap_data_key(&kek, &dek, b"aad").expect("wrap");
        let mut version_2 = wrapped.clone();
        version_2[0] = 2;
        let too_long = [&wrapped[..], &[0]].concat();
        for bad in [&wrapped[..60], &too_long[..], &[][..], &version_2[..]] {
            assert!(matches!(
                unwrap_data_key(&kek, bad, b"aad"),
                Err(CryptoError::MalformedWrappedKey(_))
            ));
        }
    }

    #[test]
    fn binding_encoding_is_length_prefixed_and_injective() {
        let encoded = Binding {
            tenant: "t",
            bucket: "",
            key: "k|",
            blob: "b",
            region: "r",
        }
        .encode();
        let mut expected = vec![1];
        for field in ["t", "", "k|", "b", "r"] {
            expected.extend_from_slice(&(field.len() as u64).to_be_bytes());
            expected.extend_from_slice(field.as_bytes());
        }
        assert_eq!(encoded, expected);

        // Moving a separator between fields changes the encoding.
        let a = Binding {
            bucket: "a|b",
            key: "c",
            ..binding()
        };
        let b = Binding {
            bucket: "a",
            key: "b|c",
            ..binding()
        };
        let c = Binding {
            bucket: "a|b|c",
            key: "",
            ..binding()
        };
        assert_ne!(a.encode(), b.encode());
        assert_ne!(a.encode(), c.encode());
        assert_ne!(b.encode(), c.encode());
    }

    /// A wrapped key built independently (Python `cryptography`, AESGCM) from
    /// the documented format unwraps to the expected data key.
    #[test]
    fn unwraps_an_independently_built_wrapped_key() {
        let kek = KeyEncryptionKey::from_secret(Zeroizing::new(std::array::from_fn(|i| i as u8)));
        let wrapped = crate::test_support::unhex(crate::test_support::KAT_WRAPPED_KEY_HEX);
        let aad = binding().encode();
        let dek = unwrap_data_key(&kek, &wrapped, &aad).expect("known-answer unwrap");
        let expected: [u8; KEY_BYTES] = std::array::from_fn(|i| 0xA0 ^ i as u8);
        assert_eq!(dek.secret(), &expected);
    }

    /// An external AES-256-GCM (here `ring` itself, standing in for an HSM)
    /// fed the documented AAD and layout produces a wrapped key this crate
    /// opens.
    #[test]
    fn external_sealing_with_the_published_aad_matches_the_format() {
        let root = kek(9);
        let tenant = kek(4);
        let nonce = [3u8; NONCE_LEN];
        let mut sealed = tenant.secret().to_vec();
        let tag = root
            .aead_key()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key_encryption_key_wrap_aad(b"123456789012").as_slice()),
                &mut sealed,
            )
            .unwrap();
        let wrapped = [&[WRAPPED_KEY_FORMAT_V1][..], &nonce, &sealed, tag.as_ref()].concat();
        let back = unwrap_key_encryption_key(&root, &wrapped, b"123456789012").unwrap();
        assert_eq!(back.secret(), tenant.secret());
    }

    #[test]
    fn key_encryption_keys_wrap_under_the_root() {
        let root = KeyEncryptionKey::generate().unwrap();
        let tenant = KeyEncryptionKey::generate().unwrap();
        let wrapped = wrap_key_encryption_key(&root, &tenant, b"123456789012").unwrap();
        let back = unwrap_key_encryption_key(&root, &wrapped, b"123456789012").unwrap();
        assert_eq!(back.secret(), tenant.secret());
        assert!(unwrap_key_encryption_key(&root, &wrapped, b"210987654321").is_err());
        // Not interchangeable with data-key wrapping.
        assert!(unwrap_data_key(&root, &wrapped, b"123456789012").is_err());
    }
}
