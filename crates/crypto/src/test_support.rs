//! Helpers shared by this crate's unit tests: deterministic plaintexts,
//! random input splits, and whole-stream encrypt/decrypt drivers.

use bytes::Bytes;
use futures::{StreamExt, executor::block_on, stream};
use rand::{Rng, rngs::StdRng};
use zeroize::Zeroizing;

use crate::keys::KEY_BYTES;
use crate::{ChunkSpan, CryptoError, DataKey, decrypt_stream, encrypt_stream};

/// Known answers computed independently from the documented format with
/// Python's `cryptography` (AESGCM), key bytes 0..32, binding
/// [`kat_binding`]:
/// the empty object, the 5-byte object "hello", and the SHA-256 of the
/// ciphertext of [`pattern`]`(65541)` (two chunks).
pub const KAT_EMPTY_HEX: &str = "1b712f3517fbf5f9629e6290c60cb1c7";
pub const KAT_HELLO_HEX: &str = "7db3d3902b900e7c96935dda41e22fd2a9c0a9edd4";
pub const KAT_TWO_CHUNKS_SHA256_HEX: &str =
    "3edf58524af2a19609c48704e574bc0ddf7115fe9d0fefbcf2c6358c91ad64f1";
/// Data key `0xA0 ^ i` wrapped under key-encryption key bytes 0..32 with
/// nonce bytes 0x10..0x1c and AAD [`kat_binding`].
pub const KAT_WRAPPED_KEY_HEX: &str = "01101112131415161718191a1bdd5f3ab5ed6c9c1462dca2b6a3d4c7fc67e1fcbdaf77e1065f4058dce2e9ea64793146817c3380bbca9f4a9ad07ac9d9";

pub fn kat_binding() -> Vec<u8> {
    crate::Binding {
        tenant: "123456789012",
        bucket: "photos",
        key: "2024/cat.jpg",
        blob: "0123456789abcdef",
        region: "fr-par",
    }
    .encode()
}

pub fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("test hex"))
        .collect()
}

/// Plaintext whose bytes depend on their position (period 251, coprime with
/// the chunk size), so a misplaced chunk or off-by-one shows up.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}

/// Two data keys with the same bytes: one to consume in encryption, one to
/// decrypt with. Only tests may do this; see the one-plaintext-per-key rule.
pub fn key_pair(seed: u8) -> (DataKey, DataKey) {
    let bytes: [u8; KEY_BYTES] = std::array::from_fn(|i| seed.wrapping_mul(31) ^ i as u8);
    (
        DataKey::from_secret(Zeroizing::new(bytes)),
        DataKey::from_secret(Zeroizing::new(bytes)),
    )
}

/// Splits `data` at random boundaries (pieces of 0 to `piece_max` bytes, so
/// empty pieces occur too).
pub fn split(data: &[u8], rng: &mut StdRng, piece_max: usize) -> Vec<Bytes> {
    let mut pieces = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = rng.gen_range(0..=piece_max).min(rest.len());
        pieces.push(Bytes::copy_from_slice(&rest[..n]));
        rest = &rest[n..];
    }
    if rng.gen_bool(0.5) {
        pieces.push(Bytes::new());
    }
    pieces
}

/// A piece size limit that varies between runs: sometimes tiny, sometimes
/// larger than a chunk.
pub fn piece_max(rng: &mut StdRng) -> usize {
    [1, 7, 1000, 65535, 65536, 65553, 200_000][rng.gen_range(0..7)]
}

fn source(pieces: Vec<Bytes>) -> impl futures::Stream<Item = Result<Bytes, CryptoError>> {
    stream::iter(pieces.into_iter().map(Ok))
}

/// Encrypts `plaintext` fed in random pieces; returns the sealed chunks.
pub fn encrypt_chunks(
    key: DataKey,
    binding: &[u8],
    plaintext: &[u8],
    rng: &mut StdRng,
) -> Vec<Bytes> {
    let limit = piece_max(rng);
    let input = source(split(plaintext, rng, limit));
    block_on(
        encrypt_stream::<_, _, CryptoError>(key, binding, input)
            .map(|item| item.expect("encryption does not fail"))
            .collect(),
    )
}

pub fn encrypt(key: DataKey, binding: &[u8], plaintext: &[u8], rng: &mut StdRng) -> Vec<u8> {
    encrypt_chunks(key, binding, plaintext, rng).concat()
}

/// What a decryption produced: every byte yielded before the stream ended,
/// and the error that ended it, if any.
#[derive(Debug)]
pub struct Outcome {
    pub yielded: Vec<u8>,
    pub error: Option<CryptoError>,
}

/// Decrypts `ciphertext` (exactly what the reader fetched) fed in random
/// pieces, collecting until the stream ends. Asserts the stream ends after
/// an error and yields no empty items.
pub fn decrypt(
    key: &DataKey,
    binding: &[u8],
    span: ChunkSpan,
    ciphertext: &[u8],
    rng: &mut StdRng,
) -> Outcome {
    let limit = piece_max(rng);
    let input = source(split(ciphertext, rng, limit));
    let mut output = decrypt_stream::<_, _, CryptoError>(key, binding, span, input);
    let mut outcome = Outcome {
        yielded: Vec::new(),
        error: None,
    };
    block_on(async {
        while let Some(item) = output.next().await {
            assert!(outcome.error.is_none(), "an item after an error");
            match item {
                Ok(bytes) => {
                    assert!(!bytes.is_empty(), "empty item");
                    assert!(
                        bytes.len() <= crate::CHUNK_PLAINTEXT_BYTES,
                        "item over a chunk"
                    );
                    outcome.yielded.extend_from_slice(&bytes);
                }
                Err(error) => outcome.error = Some(error),
            }
        }
    });
    outcome
}

/// The ciphertext bytes a reader would fetch for `span`.
pub fn fetch(ciphertext: &[u8], span: &ChunkSpan) -> Vec<u8> {
    let start = span.ciphertext_offset() as usize;
    ciphertext[start..start + span.ciphertext_len() as usize].to_vec()
}
