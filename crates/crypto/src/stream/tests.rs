//! Round trips, range reads, tampering and buffering bounds of the streaming
//! adapters. Inputs are split at random boundaries from fixed seeds, so a
//! failure names its seed and reproduces.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::executor::block_on;
use futures::{Stream, StreamExt, stream};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;
use crate::test_support::{
    KAT_EMPTY_HEX, KAT_HELLO_HEX, KAT_TWO_CHUNKS_SHA256_HEX, Outcome, decrypt, encrypt,
    encrypt_chunks, fetch, kat_binding, key_pair, pattern, split, unhex,
};
use crate::{
    CHUNK_CIPHERTEXT_BYTES as CC, CHUNK_PLAINTEXT_BYTES as C, ciphertext_len, plaintext_len,
};

const BINDING: &[u8] = b"tenant|bucket|key|blob|region";
const FOUR_CHUNKS: usize = 3 * C + 5;

fn whole(len: usize) -> ChunkSpan {
    ChunkSpan::whole(len as u64).expect("valid length")
}

/// Encrypts `pattern(len)` under key `seed`; returns plaintext, ciphertext
/// and the decryption key.
fn object(len: usize, seed: u64) -> (Vec<u8>, Vec<u8>, DataKey) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (encrypt_key, decrypt_key) = key_pair(seed as u8);
    let plaintext = pattern(len);
    let ciphertext = encrypt(encrypt_key, BINDING, &plaintext, &mut rng);
    (plaintext, ciphertext, decrypt_key)
}

/// Asserts that a tampered decryption failed and released only genuine
/// plaintext (a prefix of what was asked for).
fn assert_refused(outcome: &Outcome, expected: &[u8], what: &str) {
    assert!(outcome.error.is_some(), "{what}: decrypted without error");
    assert!(
        expected.starts_with(&outcome.yielded),
        "{what}: yielded bytes that are not the genuine plaintext"
    );
    assert!(
        outcome.yielded.len() < expected.len() || expected.is_empty(),
        "{what}: released the whole plaintext before failing"
    );
}

fn chunk_ranges(ciphertext_len: usize) -> Vec<std::ops::Range<usize>> {
    (0..ciphertext_len)
        .step_by(CC)
        .map(|start| start..(start + CC).min(ciphertext_len))
        .collect()
}

#[test]
fn round_trips_named_sizes_split_at_random_boundaries() {
    for len in [0, 1, C - 1, C, C + 1, 2 * C, FOUR_CHUNKS] {
        for seed in 0..6 {
            let mut rng = StdRng::seed_from_u64(seed);
            let (encrypt_key, decrypt_key) = key_pair(3);
            let plaintext = pattern(len);
            let chunks = encrypt_chunks(encrypt_key, BINDING, &plaintext, &mut rng);
            assert_eq!(
                chunks.len() as u64,
                crate::chunk_count(len as u64),
                "len {len}"
            );
            assert!(chunks.iter().all(|chunk| chunk.len() <= CC));
            let ciphertext = chunks.concat();
            assert_eq!(
                ciphertext.len() as u64,
                ciphertext_len(len as u64),
                "len {len}"
            );
            assert_eq!(plaintext_len(ciphertext.len() as u64), Some(len as u64));

            let outcome = decrypt(&decrypt_key, BINDING, whole(len), &ciphertext, &mut rng);
            assert!(
                outcome.error.is_none(),
                "len {len} seed {seed}: {:?}",
                outcome.error
            );
            assert!(
                outcome.yielded == plaintext,
                "len {len} seed {seed}: wrong plaintext"
            );
        }
    }
}

#[test]
fn empty_object_is_one_empty_final_chunk() {
    let (_, ciphertext, key) = object(0, 1);
    assert_eq!(ciphertext.len(), TAG_BYTES);
    let mut rng = StdRng::seed_from_u64(1);
    let outcome = decrypt(&key, BINDING, whole(0), &ciphertext, &mut rng);
    assert!(outcome.error.is_none() && outcome.yielded.is_empty());
    // Missing entirely, or under another binding: refused.
    let outcome = decrypt(&key, BINDING, whole(0), &[], &mut rng);
    assert!(matches!(outcome.error, Some(CryptoError::Truncated { .. })));
    let outcome = decrypt(&key, b"other", whole(0), &ciphertext, &mut rng);
    assert!(matches!(
        outcome.error,
        Some(CryptoError::ChunkAuthentication { chunk: 0 })
    ));
}

/// Ciphertexts computed independently (Python `cryptography`) from the
/// format as documented in the crate root.
#[test]
fn matches_independent_known_answers() {
    let mut rng = StdRng::seed_from_u64(2);
    let key = || DataKey::from_secret(zeroize::Zeroizing::new(std::array::from_fn(|i| i as u8)));
    let binding = kat_binding();
    assert_eq!(
        encrypt(key(), &binding, b"", &mut rng),
        unhex(KAT_EMPTY_HEX)
    );
    assert_eq!(
        encrypt(key(), &binding, b"hello", &mut rng),
        unhex(KAT_HELLO_HEX)
    );
    let two_chunks = encrypt(key(), &binding, &pattern(C + 5), &mut rng);
    assert_eq!(two_chunks.len(), C + 5 + 2 * TAG_BYTES);
    let digest = ring::digest::digest(&ring::digest::SHA256, &two_chunks);
    assert_eq!(digest.as_ref(), unhex(KAT_TWO_CHUNKS_SHA256_HEX).as_slice());
}

/// Every range between chosen points (chunk edges and their neighbours,
/// object edges), read from only the ciphertext its span names.
#[test]
fn every_range_between_boundary_points_decrypts_from_its_span() {
    let (plaintext, ciphertext, key) = object(FOUR_CHUNKS, 4);
    let mut rng = StdRng::seed_from_u64(4);
    let mut points = vec![0, 1, 2, FOUR_CHUNKS - 1, FOUR_CHUNKS];
    for edge in [C, 2 * C, 3 * C] {
        points.extend([edge - 2, edge - 1, edge, edge + 1]);
    }
    points.sort_unstable();
    let mut checked = 0;
    for &start in &points {
        for &end in points.iter().filter(|&&end| end >= start) {
            let span = ChunkSpan::for_range(FOUR_CHUNKS as u64, start as u64, (end - start) as u64)
                .expect("in range");
            let needed = fetch(&ciphertext, &span);
            let chunks_touched = if start == end {
                1
            } else {
                (end - 1) / C - (start / C).min(3) + 1
            };
            assert_eq!(span.chunk_count(), chunks_touched as u64, "{start}..{end}");
            let outcome = decrypt(&key, BINDING, span, &needed, &mut rng);
            assert!(
                outcome.error.is_none(),
                "{start}..{end}: {:?}",
                outcome.error
            );
            assert!(
                outcome.yielded == plaintext[start..end],
                "{start}..{end}: wrong bytes"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, points.len() * (points.len() + 1) / 2);
}

#[test]
fn random_ranges_decrypt_from_their_span() {
    let mut rng = StdRng::seed_from_u64(5);
    for (len, seed) in [(FOUR_CHUNKS, 5), (C, 6), (C + 1, 7), (5 * C, 8)] {
        let (plaintext, ciphertext, key) = object(len, seed);
        for _ in 0..60 {
            let start = rng.gen_range(0..=len);
            let end = rng.gen_range(start..=len);
            let span = ChunkSpan::for_range(len as u64, start as u64, (end - start) as u64)
                .expect("in range");
            let outcome = decrypt(&key, BINDING, span, &fetch(&ciphertext, &span), &mut rng);
            assert!(
                outcome.error.is_none(),
                "{len}: {start}..{end}: {:?}",
                outcome.error
            );
            assert!(
                outcome.yielded == plaintext[start..end],
                "{len}: {start}..{end}"
            );
        }
    }
}

#[test]
fn every_range_of_tiny_objects() {
    let mut rng = StdRng::seed_from_u64(9);
    for len in [0, 1, 2, 3, 17] {
        let (plaintext, ciphertext, key) = object(len, 9);
        for start in 0..=len {
            for end in start..=len {
                let span = ChunkSpan::for_range(len as u64, start as u64, (end - start) as u64)
                    .expect("in range");
                assert_eq!(
                    fetch(&ciphertext, &span),
                    ciphertext,
                    "one chunk, all of it"
                );
                let outcome = decrypt(&key, BINDING, span, &ciphertext, &mut rng);
                assert!(outcome.error.is_none());
                assert_eq!(outcome.yielded, plaintext[start..end]);
            }
        }
    }
}

#[test]
fn flipped_bits_anywhere_are_refused() {
    let (plaintext, ciphertext, key) = object(FOUR_CHUNKS, 10);
    let mut rng = StdRng::seed_from_u64(10);
    let chunks = chunk_ranges(ciphertext.len());
    // First and last byte of every chunk (the last is in the tag), a middle
    // byte, and random positions.
    let mut positions: Vec<usize> = chunks
        .iter()
        .flat_map(|chunk| [chunk.start, chunk.start + (chunk.len() / 2), chunk.end - 1])
        .collect();
    positions.extend((0..20).map(|_| rng.gen_range(0..ciphertext.len())));
    for position in positions {
        let mut altered = ciphertext.clone();
        altered[position] ^= 1 << rng.gen_range(0..8);
        let chunk = (position / CC) as u64;
        let outcome = decrypt(&key, BINDING, whole(FOUR_CHUNKS), &altered, &mut rng);
        assert_refused(&outcome, &plaintext, &format!("flip at {position}"));
        assert!(
            matches!(outcome.error, Some(CryptoError::ChunkAuthentication { chunk: c }) if c == chunk),
            "flip at {position}: {:?}",
            outcome.error
        );
        // Only the chunks before the damaged one were released.
        assert_eq!(outcome.yielded.len() as u64, chunk * C as u64);

        // A range read through the damaged chunk fails as well.
        let span = ChunkSpan::for_range(FOUR_CHUNKS as u64, chunk * C as u64, 1).expect("range");
        let outcome = decrypt(&key, BINDING, span, &fetch(&altered, &span), &mut rng);
        assert_refused(
            &outcome,
            &plaintext[chunk as usize * C..][..1],
            "range over flip",
        );
    }
}

#[test]
fn truncation_is_refused_whether_the_length_comes_from_metadata_or_the_blob() {
    let (plaintext, ciphertext, key) = object(FOUR_CHUNKS, 11);
    let mut rng = StdRng::seed_from_u64(11);
    let chunks = chunk_ranges(ciphertext.len());
    let without_final = &ciphertext[..chunks[3].start];
    let cuts: [(&str, &[u8]); 4] = [
        ("final chunk dropped", without_final),
        ("final chunk cut short", &ciphertext[..ciphertext.len() - 3]),
        ("middle of a chunk", &ciphertext[..CC + 100]),
        ("only the first chunk", &ciphertext[..CC]),
    ];
    for (what, cut) in cuts {
        // The recorded length says more is due: truncated.
        let outcome = decrypt(&key, BINDING, whole(FOUR_CHUNKS), cut, &mut rng);
        assert_refused(&outcome, &plaintext, what);
        assert!(
            matches!(outcome.error, Some(CryptoError::Truncated { .. })),
            "{what}"
        );

        // The length is inferred from the blob: its new last chunk lacks the
        // final flag (or is not a chunk at all), so it fails to open.
        if let Some(len) = plaintext_len(cut.len() as u64) {
            let outcome = decrypt(&key, BINDING, whole(len as usize), cut, &mut rng);
            assert_refused(&outcome, &plaintext[..len as usize], what);
            assert!(
                matches!(outcome.error, Some(CryptoError::ChunkAuthentication { .. })),
                "{what}: {:?}",
                outcome.error
            );
        }
    }
}

#[test]
fn reordered_dropped_and_foreign_chunks_are_refused() {
    let (plaintext, ciphertext, key) = object(FOUR_CHUNKS, 12);
    let mut rng = StdRng::seed_from_u64(12);
    let chunks: Vec<&[u8]> = chunk_ranges(ciphertext.len())
        .into_iter()
        .map(|range| &ciphertext[range])
        .collect();

    let swapped = [chunks[1], chunks[0], chunks[2], chunks[3]].concat();
    let outcome = decrypt(&key, BINDING, whole(FOUR_CHUNKS), &swapped, &mut rng);
    assert_refused(&outcome, &plaintext, "swapped 0 and 1");
    assert!(outcome.yielded.is_empty());

    let swapped_tail = [chunks[0], chunks[2], chunks[1], chunks[3]].concat();
    let outcome = decrypt(&key, BINDING, whole(FOUR_CHUNKS), &swapped_tail, &mut rng);
    assert_refused(&outcome, &plaintext, "swapped 1 and 2");
    assert_eq!(outcome.yielded, plaintext[..C]);

    let dropped = [chunks[0], chunks[2], chunks[3]].concat();
    for len in [
        FOUR_CHUNKS as u64,
        plaintext_len(dropped.len() as u64).expect("valid"),
    ] {
        let outcome = decrypt(&key, BINDING, whole(len as usize), &dropped, &mut rng);
        assert_refused(&outcome, &plaintext, "middle chunk dropped");
        assert!(matches!(
            outcome.error,
            Some(CryptoError::ChunkAuthentication { chunk: 1 })
        ));
    }

    let duplicated = [chunks[0], chunks[0], chunks[2], chunks[3]].concat();
    let outcome = decrypt(&key, BINDING, whole(FOUR_CHUNKS), &duplicated, &mut rng);
    assert_refused(&outcome, &plaintext, "chunk 0 repeated");

    // Chunk 1 of another object sealed with the same key bytes (which the
    // one-plaintext-per-key rule forbids, so this is the worst case) but
    // bound elsewhere.
    let (encrypt_key, _) = key_pair(12);
    let elsewhere = encrypt(encrypt_key, b"another|binding", &plaintext, &mut rng);
    let transplanted = [chunks[0], &elsewhere[CC..2 * CC], chunks[2], chunks[3]].concat();
    let outcome = decrypt(&key, BINDING, whole(FOUR_CHUNKS), &transplanted, &mut rng);
    assert_refused(&outcome, &plaintext, "chunk from another binding");
    assert!(matches!(
        outcome.error,
        Some(CryptoError::ChunkAuthentication { chunk: 1 })
    ));
}

#[test]
fn wrong_binding_or_wrong_key_releases_nothing() {
    let (plaintext, ciphertext, key) = object(FOUR_CHUNKS, 13);
    let mut rng = StdRng::seed_from_u64(13);
    let (_, wrong_key) = key_pair(14);
    for (what, key, binding) in [
        ("wrong key", &wrong_key, BINDING),
        (
            "wrong binding",
            &key,
            b"tenant|bucket|key|blob|other".as_slice(),
        ),
        ("empty binding", &key, b"".as_slice()),
    ] {
        let outcome = decrypt(key, binding, whole(FOUR_CHUNKS), &ciphertext, &mut rng);
        assert_refused(&outcome, &plaintext, what);
        assert!(outcome.yielded.is_empty(), "{what}");
        assert!(matches!(
            outcome.error,
            Some(CryptoError::ChunkAuthentication { chunk: 0 })
        ));
    }
}

#[test]
fn appended_data_is_refused_before_the_last_plaintext_is_released() {
    let (plaintext, ciphertext, key) = object(FOUR_CHUNKS, 15);
    let mut rng = StdRng::seed_from_u64(15);
    let extra_chunk = [&ciphertext[..], &ciphertext[CC..2 * CC]].concat();
    let extra_byte = [&ciphertext[..], &[0]].concat();
    for (what, appended) in [("extra chunk", &extra_chunk), ("extra byte", &extra_byte)] {
        let outcome = decrypt(&key, BINDING, whole(FOUR_CHUNKS), appended, &mut rng);
        assert_refused(&outcome, &plaintext, what);
        assert!(
            matches!(outcome.error, Some(CryptoError::TrailingCiphertext { .. })),
            "{what}: {:?}",
            outcome.error
        );
        // The short final chunk was held back.
        assert_eq!(outcome.yielded, plaintext[..3 * C], "{what}");

        // Inferring the length from the blob moves the final chunk off the
        // end (or makes the length invalid): it fails to open.
        if let Some(len) = plaintext_len(appended.len() as u64) {
            let outcome = decrypt(&key, BINDING, whole(len as usize), appended, &mut rng);
            assert!(outcome.error.is_some(), "{what}");
            assert!(plaintext.starts_with(&outcome.yielded));
        }
    }
    // A range read handed more than its span: refused too.
    let span = ChunkSpan::for_range(FOUR_CHUNKS as u64, 10, 20).expect("range");
    let too_much = &ciphertext[..span.ciphertext_len() as usize + 1];
    let outcome = decrypt(&key, BINDING, span, too_much, &mut rng);
    assert!(matches!(
        outcome.error,
        Some(CryptoError::TrailingCiphertext { .. })
    ));
    assert!(
        outcome.yielded.is_empty(),
        "a one-chunk range releases nothing"
    );
}

/// Errors of the caller's stream type, to show both adapters pass input
/// errors through unchanged.
#[derive(Debug)]
enum PipeError {
    Source(&'static str),
    Crypto(CryptoError),
}

impl From<&'static str> for PipeError {
    fn from(error: &'static str) -> Self {
        Self::Source(error)
    }
}

impl From<CryptoError> for PipeError {
    fn from(error: CryptoError) -> Self {
        Self::Crypto(error)
    }
}

#[test]
fn input_errors_pass_through_and_end_the_stream() {
    let (encrypt_key, decrypt_key) = key_pair(16);
    let input = stream::iter([
        Ok(Bytes::from(pattern(C + 10))),
        Err("disk on fire"),
        Ok(Bytes::new()),
    ]);
    let items: Vec<Result<Bytes, PipeError>> =
        block_on(encrypt_stream(encrypt_key, BINDING, input).collect());
    assert_eq!(
        items.len(),
        2,
        "one sealed chunk, then the error, then the end"
    );
    assert!(matches!(items[0], Ok(ref chunk) if chunk.len() == CC));
    assert!(matches!(items[1], Err(PipeError::Source("disk on fire"))));

    let input = stream::iter([Ok(Bytes::from(vec![0u8; 5])), Err("network reset")]);
    let items: Vec<Result<Bytes, PipeError>> =
        block_on(decrypt_stream(&decrypt_key, BINDING, whole(C), input).collect());
    assert!(matches!(
        items.as_slice(),
        [Err(PipeError::Source("network reset"))]
    ));

    let input = stream::iter([Ok::<_, &'static str>(Bytes::from(vec![0u8; 5]))]);
    let items: Vec<Result<Bytes, PipeError>> =
        block_on(decrypt_stream(&decrypt_key, BINDING, whole(C), input).collect());
    assert!(matches!(
        items.as_slice(),
        [Err(PipeError::Crypto(CryptoError::Truncated {
            expected_bytes: 65552,
            received_bytes: 5
        }))]
    ));
}

type BoxedStream = Pin<Box<dyn Stream<Item = Result<Bytes, CryptoError>> + Send + Sync>>;

#[test]
fn adapters_box_as_send_and_sync_streams() {
    let (encrypt_key, decrypt_key) = key_pair(17);
    let plaintext = pattern(C + 3);
    let input: BoxedStream = Box::pin(stream::iter([Ok(Bytes::from(plaintext.clone()))]));
    let encrypted: BoxedStream = Box::pin(encrypt_stream(encrypt_key, BINDING, input));
    let decrypted: BoxedStream = Box::pin(decrypt_stream(
        &decrypt_key,
        BINDING,
        whole(C + 3),
        encrypted,
    ));
    let output: Vec<Bytes> = block_on(decrypted.map(|item| item.expect("round trip")).collect());
    assert_eq!(output.concat(), plaintext);
}

/// A stream of `pieces` that counts how many bytes have been taken from it.
fn counted(pieces: Vec<Bytes>, taken: Arc<AtomicU64>) -> BoxedStream {
    Box::pin(stream::iter(pieces).map(move |piece| {
        taken.fetch_add(piece.len() as u64, Ordering::SeqCst);
        Ok(piece)
    }))
}

#[test]
fn encryption_reads_at_most_one_chunk_ahead() {
    const PIECE: usize = 1000;
    let (encrypt_key, decrypt_key) = key_pair(18);
    let len = 5 * C + 123;
    let plaintext = pattern(len);
    let pieces = plaintext
        .chunks(PIECE)
        .map(Bytes::copy_from_slice)
        .collect();
    let taken = Arc::new(AtomicU64::new(0));
    let mut sealed = encrypt_stream::<_, _, CryptoError>(
        encrypt_key,
        BINDING,
        counted(pieces, Arc::clone(&taken)),
    );
    let mut ciphertext = Vec::new();
    block_on(async {
        let mut emitted = 0u64;
        while let Some(chunk) = sealed.next().await {
            let chunk = chunk.expect("encrypts");
            emitted += 1;
            let taken = taken.load(Ordering::SeqCst);
            // It has read past the chunk it emitted (to know it was not the
            // last) but not a whole further chunk.
            assert!(
                taken <= emitted * C as u64 + PIECE as u64,
                "read ahead: {taken}"
            );
            assert!(taken >= (emitted * C as u64).min(len as u64));
            ciphertext.extend_from_slice(&chunk);
        }
    });
    let mut rng = StdRng::seed_from_u64(18);
    let outcome = decrypt(&decrypt_key, BINDING, whole(len), &ciphertext, &mut rng);
    assert!(outcome.error.is_none() && outcome.yielded == plaintext);

    // One enormous input buffer still comes out as chunk-sized pieces.
    let (encrypt_key, _) = key_pair(19);
    let input = stream::iter([Ok::<_, CryptoError>(Bytes::from(pattern(16 * C + 1)))]);
    let sizes: Vec<usize> = block_on(
        encrypt_stream::<_, _, CryptoError>(encrypt_key, BINDING, input)
            .map(|chunk| chunk.expect("encrypts").len())
            .collect(),
    );
    assert_eq!(sizes.len(), 17);
    assert!(sizes[..16].iter().all(|&size| size == CC));
    assert_eq!(sizes[16], 1 + TAG_BYTES);
}

#[test]
fn decryption_releases_each_chunk_as_soon_as_it_arrives() {
    const PIECE: usize = 999;
    let (plaintext, ciphertext, key) = object(FOUR_CHUNKS, 20);
    let pieces = ciphertext
        .chunks(PIECE)
        .map(Bytes::copy_from_slice)
        .collect();
    let taken = Arc::new(AtomicU64::new(0));
    let mut opened = decrypt_stream::<_, _, CryptoError>(
        &key,
        BINDING,
        whole(FOUR_CHUNKS),
        counted(pieces, Arc::clone(&taken)),
    );
    let mut output = Vec::new();
    block_on(async {
        let mut released = 0u64;
        while let Some(piece) = opened.next().await {
            let piece = piece.expect("decrypts");
            released += 1;
            let taken = taken.load(Ordering::SeqCst);
            if released < 4 {
                // No more than one input piece beyond the chunk just opened.
                assert!(
                    taken < released * CC as u64 + PIECE as u64,
                    "read ahead: {taken}"
                );
            }
            output.extend_from_slice(&piece);
        }
    });
    assert!(output == plaintext);
}

/// A larger object through both adapters, as a smoke test of the whole path.
/// Deliberately not timed: speed belongs to a benchmark, not a pass/fail test.
#[test]
fn sixteen_mebibytes_round_trip() {
    let len = 16 * 1024 * 1024 + 12_345;
    let (plaintext, ciphertext, key) = object(len, 21);
    assert_eq!(ciphertext.len() as u64, ciphertext_len(len as u64));
    let mut rng = StdRng::seed_from_u64(21);
    let outcome = decrypt(&key, BINDING, whole(len), &ciphertext, &mut rng);
    assert!(outcome.error.is_none());
    assert!(outcome.yielded == plaintext);
    // A range in the middle needs two chunks of the 257, not the whole blob.
    let span = ChunkSpan::for_range(len as u64, 8 * 1024 * 1024 - 10, 20).expect("range");
    assert_eq!(span.ciphertext_len(), 2 * CC as u64);
    let outcome = decrypt(&key, BINDING, span, &fetch(&ciphertext, &span), &mut rng);
    assert_eq!(outcome.yielded, plaintext[8 * 1024 * 1024 - 10..][..20]);
}

#[test]
fn split_helper_covers_the_input() {
    let mut rng = StdRng::seed_from_u64(22);
    let data = pattern(10_000);
    assert_eq!(split(&data, &mut rng, 7).concat(), data);
}

/// Decrypts exactly these input buffers (no random splitting).
fn decrypt_pieces(key: &DataKey, span: ChunkSpan, pieces: Vec<Bytes>) -> (Vec<Bytes>, Outcome) {
    let input = stream::iter(pieces.into_iter().map(Ok::<Bytes, CryptoError>));
    let mut output = decrypt_stream::<_, _, CryptoError>(key, BINDING, span, input);
    let mut items = Vec::new();
    let mut outcome = Outcome {
        yielded: Vec::new(),
        error: None,
    };
    block_on(async {
        while let Some(item) = output.next().await {
            assert!(outcome.error.is_none(), "an item after an error");
            match item {
                Ok(bytes) => {
                    outcome.yielded.extend_from_slice(&bytes);
                    items.push(bytes);
                }
                Err(error) => outcome.error = Some(error),
            }
        }
    });
    (items, outcome)
}

/// The ways input reaches the decryptor: one owned buffer, owned 256 KiB
/// blocks as the blob store yields them (chunks straddle block boundaries),
/// slices of one shared buffer (never altered), and tiny pieces.
fn feeds(ciphertext: &[u8]) -> Vec<(&'static str, Vec<Bytes>)> {
    let shared = Bytes::copy_from_slice(ciphertext);
    vec![
        ("one owned buffer", vec![Bytes::copy_from_slice(ciphertext)]),
        (
            "owned blocks",
            ciphertext
                .chunks(256 * 1024)
                .map(Bytes::copy_from_slice)
                .collect(),
        ),
        (
            "shared slices",
            (0..ciphertext.len())
                .step_by(100_000)
                .map(|i| shared.slice(i..(i + 100_000).min(ciphertext.len())))
                .collect(),
        ),
        (
            "tiny pieces",
            ciphertext.chunks(777).map(Bytes::copy_from_slice).collect(),
        ),
    ]
}

#[test]
fn shared_input_is_decrypted_without_being_altered() {
    let len = 3 * C + 5;
    let (plaintext, ciphertext, key) = object(len, 24);
    let shared = Bytes::copy_from_slice(&ciphertext);
    let pieces = vec![shared.slice(..CC + 7), shared.slice(CC + 7..)];
    let (_, outcome) = decrypt_pieces(&key, whole(len), pieces);
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert!(outcome.yielded == plaintext);
    assert!(
        shared == ciphertext,
        "decryption wrote into a shared buffer"
    );
}

#[test]
fn tampering_is_refused_whatever_the_input_buffers() {
    let len = 9 * C + 3; // Crosses a 256 KiB block boundary twice.
    let (plaintext, ciphertext, key) = object(len, 25);
    let chunks: Vec<&[u8]> = chunk_ranges(ciphertext.len())
        .into_iter()
        .map(|range| &ciphertext[range])
        .collect();

    for (how, pieces) in feeds(&ciphertext) {
        let (_, outcome) = decrypt_pieces(&key, whole(len), pieces);
        assert!(outcome.error.is_none(), "{how}: {:?}", outcome.error);
        assert!(outcome.yielded == plaintext, "{how}: round trip");
    }

    for chunk in [0usize, 3, 4, 9] {
        let mut flipped = ciphertext.clone();
        flipped[chunk * CC + 100.min(chunks[chunk].len() - 1)] ^= 0x10;
        for (how, pieces) in feeds(&flipped) {
            let (_, outcome) = decrypt_pieces(&key, whole(len), pieces);
            assert!(
                matches!(outcome.error, Some(CryptoError::ChunkAuthentication { chunk: c }) if c == chunk as u64),
                "{how}, flip in chunk {chunk}: {:?}",
                outcome.error
            );
            assert!(outcome.yielded == plaintext[..chunk * C], "{how}: released");
        }
    }

    for (how, pieces) in feeds(&ciphertext[..ciphertext.len() - 3]) {
        let (_, outcome) = decrypt_pieces(&key, whole(len), pieces);
        assert!(
            matches!(outcome.error, Some(CryptoError::Truncated { .. })),
            "{how}, truncated: {:?}",
            outcome.error
        );
        assert_refused(&outcome, &plaintext, how);
    }

    let mut reordered: Vec<&[u8]> = chunks.clone();
    reordered.swap(4, 5);
    for (how, pieces) in feeds(&reordered.concat()) {
        let (_, outcome) = decrypt_pieces(&key, whole(len), pieces);
        assert!(
            matches!(
                outcome.error,
                Some(CryptoError::ChunkAuthentication { chunk: 4 })
            ),
            "{how}, reordered: {:?}",
            outcome.error
        );
        assert!(outcome.yielded == plaintext[..4 * C], "{how}: released");
    }

    let appended = [&ciphertext[..], b"x"].concat();
    for (how, pieces) in feeds(&appended) {
        let (_, outcome) = decrypt_pieces(&key, whole(len), pieces);
        assert!(
            matches!(outcome.error, Some(CryptoError::TrailingCiphertext { .. })),
            "{how}, appended: {:?}",
            outcome.error
        );
        assert_refused(&outcome, &plaintext, how);
    }
}
