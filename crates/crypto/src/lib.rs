//! Encryption at rest: chunked AES-256-GCM objects, key wrapping, and a
//! development root key.
//!
//! This crate owns the byte formats that protect object data on disk and the
//! rules for using keys with them. It is a pure library: no network, no
//! configuration, no knowledge of buckets or S3 beyond the [`Binding`] a caller
//! fills in. The only I/O is [`RootKeyFile`], the development root of trust.
//! Cryptography is `ring`'s AES-256-GCM and system random number generator;
//! nothing here implements a cipher.
//!
//! # Key hierarchy
//!
//! Every object (more precisely: every blob) is sealed under its own fresh
//! [`DataKey`]. The data key is stored only *wrapped* (encrypted) under a
//! [`KeyEncryptionKey`] with [`wrap_data_key`], next to the object's metadata.
//! Each tenant's key-encryption key is in turn wrapped by the root of trust:
//! for development the root key from [`RootKeyFile::open_or_create`]; in
//! production a key inside a hardware security module, reached over PKCS#11
//! by `nuage-kms`, which seals with AES-256-GCM in the HSM using
//! [`key_encryption_key_wrap_aad`] so the stored format is the same.
//!
//! # Object format (version 1)
//!
//! The design is the STREAM construction as used by age's payload and C2SP's
//! chunked encryption: fixed-size chunks, each sealed separately, with the
//! chunk counter and a "final" flag in the nonce. It differs from age in three
//! ways: the AEAD is AES-256-GCM (NIST SP 800-38D) instead of
//! ChaCha20-Poly1305; the data key is used directly instead of being derived
//! from a per-file nonce (safe because a data key seals exactly one
//! plaintext, see below); and every chunk authenticates a caller-given binding
//! as associated data.
//!
//! Inputs: a 32-byte data key `K`, a binding `B` (any byte string, normally
//! [`Binding::encode`]), and a plaintext `P` of `L` bytes. Let
//! `C = CHUNK_PLAINTEXT_BYTES = 65536` and `T = TAG_BYTES = 16`.
//!
//! 1. Number of chunks: `n = max(1, ceil(L / C))`. An empty plaintext is one
//!    empty chunk.
//! 2. Chunk `i` (for `0 <= i < n`) holds plaintext bytes `P[i*C .. min((i+1)*C, L)]`.
//!    Every chunk but the last holds exactly `C` bytes; the last holds
//!    `L - (n-1)*C` bytes, between 1 and `C` unless `L = 0`.
//! 3. Nonce of chunk `i` (12 bytes): `i` as an 11-byte big-endian unsigned
//!    integer, then one byte `0x01` if `i = n-1` (the final chunk) and `0x00`
//!    otherwise.
//! 4. Sealed chunk `i` = `AES-256-GCM-Encrypt(key K, nonce_i, aad B, chunk_i)`,
//!    that is the ciphertext (as long as the chunk) followed by the 16-byte tag.
//! 5. The object ciphertext is the concatenation of the sealed chunks, with no
//!    header and no trailer: `ciphertext_len(L) = L + T*n`. The ciphertext
//!    therefore names neither its format version nor its key: the object's
//!    metadata records both (the wrapped data key, and that this format
//!    applies), and a future format gets a new metadata tag.
//!
//! A ciphertext length `X` determines `L`: with `q = X div (C+T)` and
//! `r = X mod (C+T)`, `L = q*C` if `r = 0` and `q >= 1`, `L = q*C + r - T` if
//! `r > T`, or if `r = T` and `q = 0`; any other `X` is not a valid length
//! ([`plaintext_len`]). The map is a bijection, so there is exactly one valid
//! encoding of each plaintext.
//!
//! Decryption must know `n` (from the object's recorded length or from the
//! ciphertext length) and opens chunk `n-1` with the final flag set. This is
//! what makes the format robust: a flipped bit fails the chunk's tag; reordered,
//! dropped or duplicated chunks fail because the counter is in the nonce;
//! truncation at a chunk boundary fails because the new last chunk was sealed
//! without the final flag; appended data is either refused as trailing bytes
//! or moves the final chunk off the end; a chunk copied from another object
//! fails because that object's binding (and normally key) differs. A reader
//! releases no byte of a chunk before that chunk's tag verifies.
//!
//! A range of the plaintext needs only the chunks that cover it:
//! [`ChunkSpan::for_range`] names them and the exact ciphertext byte range to
//! fetch, and [`decrypt_stream`] opens them and trims the result.
//!
//! **Invariant: a data key seals exactly one plaintext.** Nonces are derived
//! from the chunk index, so two plaintexts under one key would reuse nonces,
//! which breaks AES-GCM's confidentiality and integrity outright. The binding
//! does not prevent this; it only stops ciphertext from being accepted in the
//! wrong place. [`encrypt_stream`] therefore takes the [`DataKey`] by value,
//! and `DataKey` is not `Clone`: rewriting an object means a new blob and a new
//! key.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use futures::{TryStreamExt, executor::block_on, stream};
//! use nuage_crypto::*;
//!
//! # fn main() -> Result<(), CryptoError> {
//! let root = KeyEncryptionKey::generate()?; // or RootKeyFile::open_or_create(path)?
//! let binding = Binding { tenant: "123456789012", bucket: "photos", key: "cat.jpg",
//!                         blob: "b-0001", region: "fr-par" }.encode();
//! let plaintext = Bytes::from(vec![7u8; 100_000]);
//!
//! // Writing: a fresh key per blob, stored wrapped; the key is consumed.
//! let data_key = DataKey::generate()?;
//! let wrapped = wrap_data_key(&root, &data_key, &binding)?;
//! let body = stream::iter([Ok::<_, CryptoError>(plaintext.clone())]);
//! let sealed: Vec<Bytes> = block_on(
//!     encrypt_stream::<_, _, CryptoError>(data_key, &binding, body).try_collect(),
//! )?;
//! let blob: Vec<u8> = sealed.concat();
//! assert_eq!(blob.len() as u64, ciphertext_len(100_000));
//!
//! // Reading bytes 70_000..70_010: fetch only the chunk that holds them.
//! let data_key = unwrap_data_key(&root, &wrapped, &binding)?;
//! let span = ChunkSpan::for_range(100_000, 70_000, 10)?;
//! let start = span.ciphertext_offset() as usize;
//! let fetched = Bytes::copy_from_slice(&blob[start..][..span.ciphertext_len() as usize]);
//! let opened = decrypt_stream::<_, CryptoError, CryptoError>(
//!     &data_key, &binding, span, stream::iter([Ok(fetched)]),
//! );
//! let range: Vec<Bytes> = block_on(opened.try_collect())?;
//! assert_eq!(range.concat(), plaintext[70_000..70_010]);
//! # Ok(())
//! # }
//! ```
//!
//! # Wrapped key format (version 1)
//!
//! `wrap_data_key(KEK, DEK, A)` = `0x01 || N || AES-256-GCM-Encrypt(key KEK,
//! nonce N, aad 0x01 || A, DEK)`, where `N` is 12 fresh random bytes:
//! 1 + 12 + 32 + 16 = 61 bytes ([`WRAPPED_KEY_BYTES`]). The version byte is
//! authenticated along with the caller's AAD `A`. Random nonces keep a single
//! key-encryption key safe for about 2^32 wraps (NIST SP 800-38D, 8.3).
//!
//! # Binding encoding (version 1)
//!
//! [`Binding::encode`] = `0x01`, then for each field in the order tenant,
//! bucket, key, blob, region: the field's UTF-8 length as a big-endian `u64`,
//! then its UTF-8 bytes. Length prefixes make the encoding injective: no two
//! different bindings encode to the same bytes, whatever characters the fields
//! contain.
//!
//! # Sealed messages
//!
//! [`seal_message`] encrypts a short message whole under a key-encryption key
//! (a KMS customer key's material) with a fresh random nonce and the caller's
//! AAD prefixed by `msg|`; see the `message` module. [`random_bytes`] hands out
//! system randomness in a zeroing buffer (data keys for `GenerateDataKey`).
//!
//! # Root key file (development only)
//!
//! Exactly 32 raw random bytes, mode `0600`; see [`RootKeyFile`].

mod format;
mod keys;
mod message;
mod root_key;
mod stream;
mod wrap;

pub use format::{
    CHUNK_CIPHERTEXT_BYTES, CHUNK_PLAINTEXT_BYTES, ChunkSpan, PLAINTEXT_BYTES_MAX, TAG_BYTES,
    chunk_count, ciphertext_len, plaintext_len,
};
pub use keys::{DataKey, KEY_BYTES, KeyEncryptionKey};
pub use message::{MESSAGE_NONCE_BYTES, SealedMessage, open_message, random_bytes, seal_message};
pub use root_key::RootKeyFile;
pub use stream::{DecryptStream, EncryptStream, decrypt_stream, encrypt_stream};
pub use wrap::{
    Binding, BlobBinding, WRAPPED_KEY_BYTES, WRAPPED_KEY_FORMAT_V1, key_encryption_key_wrap_aad,
    unwrap_data_key, unwrap_key_encryption_key, wrap_data_key, wrap_key_encryption_key,
};

use std::path::PathBuf;

/// What can go wrong in this crate. Decryption failures say *that* something
/// failed to authenticate, never which byte: the cipher cannot tell a wrong
/// key from a flipped bit, and neither should an error message pretend to.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the system random number generator failed")]
    Random,
    #[error(
        "chunk {chunk} failed authentication: wrong key or binding, or the ciphertext was altered, \
         reordered or truncated"
    )]
    ChunkAuthentication { chunk: u64 },
    #[error("ciphertext ended after {received_bytes} of the {expected_bytes} bytes expected")]
    Truncated {
        expected_bytes: u64,
        received_bytes: u64,
    },
    #[error("ciphertext continues past the {expected_bytes} bytes expected")]
    TrailingCiphertext { expected_bytes: u64 },
    #[error(
        "range of {len} bytes at offset {offset} is outside an object of {plaintext_len} bytes"
    )]
    RangeOutOfBounds {
        offset: u64,
        len: u64,
        plaintext_len: u64,
    },
    #[error("object of {plaintext_len} bytes exceeds the format's limit of {PLAINTEXT_BYTES_MAX}")]
    ObjectTooLarge { plaintext_len: u64 },
    #[error("wrapped key is malformed: {0}")]
    MalformedWrappedKey(&'static str),
    #[error("wrapped key failed authentication: wrong key-encryption key or wrong binding")]
    UnwrapAuthentication,
    #[error("sealed message failed authentication: wrong key or context, or it was altered")]
    MessageAuthentication,
    #[error("root key file {}: {source}", .path.display())]
    RootKeyIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "root key file {} has mode {mode:04o}: it must not be accessible to group or others \
         (chmod 600 it, and consider the key exposed)",
        .path.display()
    )]
    RootKeyPermissions { path: PathBuf, mode: u32 },
    #[error("root key file {} is not a regular file", .path.display())]
    RootKeyNotAFile { path: PathBuf },
    #[error("root key file {} holds {len} bytes; a root key is exactly {KEY_BYTES}", .path.display())]
    RootKeyLength { path: PathBuf, len: u64 },
}

#[cfg(test)]
mod test_support;
