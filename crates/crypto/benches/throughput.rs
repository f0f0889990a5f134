//! `cargo bench -p nuage-crypto`: throughput of the chunked AES-256-GCM
//! format for 1 MiB and 64 MiB objects, sealing and opening, through the
//! same streaming adapters the storage service uses. Prints MB/s and makes
//! no assertion about speed (figures go in the docs, not in tests).

use bytes::Bytes;
use futures::StreamExt;
use futures::executor::block_on;
use nuage_crypto::{
    ChunkSpan, CryptoError, DataKey, KeyEncryptionKey, decrypt_stream, encrypt_stream,
    unwrap_data_key, wrap_data_key,
};
use std::time::{Duration, Instant};

/// Input arrives in pieces of this size, as from a socket.
const PIECE_BYTES: usize = 256 * 1024;
/// Minimum measuring time per case, for steadier figures on a shared machine.
const MEASURE_MIN: Duration = Duration::from_secs(2);
const BINDING: &[u8] = b"bench";

fn pieces(data: &Bytes) -> Vec<Result<Bytes, CryptoError>> {
    (0..data.len())
        .step_by(PIECE_BYTES)
        .map(|i| Ok(data.slice(i..(i + PIECE_BYTES).min(data.len()))))
        .collect()
}

fn seal(key: DataKey, data: &Bytes) -> Vec<Bytes> {
    block_on(
        encrypt_stream::<_, CryptoError, CryptoError>(
            key,
            BINDING,
            futures::stream::iter(pieces(data)),
        )
        .map(|r| r.unwrap_or_else(|e| panic!("seal: {e}")))
        .collect(),
    )
}

fn rate(bytes: usize, rounds: u32, elapsed: Duration) -> f64 {
    (bytes as f64 * f64::from(rounds)) / elapsed.as_secs_f64() / 1e6
}

fn main() {
    let kek = KeyEncryptionKey::generate().unwrap_or_else(|e| panic!("{e}"));
    for size in [1usize << 20, 64 << 20] {
        let data = Bytes::from(vec![0x5a_u8; size]);

        let mut rounds = 0u32;
        let started = Instant::now();
        while started.elapsed() < MEASURE_MIN || rounds == 0 {
            let key = DataKey::generate().unwrap_or_else(|e| panic!("{e}"));
            std::hint::black_box(seal(key, &data));
            rounds += 1;
        }
        let seal_rate = rate(size, rounds, started.elapsed());

        // A key is consumed by sealing (one key, one plaintext); keep a
        // wrapped copy, as the storage service does, to open with.
        let key = DataKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let wrapped = wrap_data_key(&kek, &key, BINDING).unwrap_or_else(|e| panic!("{e}"));
        let sealed: Vec<Bytes> = seal(key, &data);
        let key = unwrap_data_key(&kek, &wrapped, BINDING).unwrap_or_else(|e| panic!("{e}"));
        let mut rounds = 0u32;
        let started = Instant::now();
        while started.elapsed() < MEASURE_MIN || rounds == 0 {
            let span = ChunkSpan::whole(size as u64).unwrap_or_else(|e| panic!("{e}"));
            let opened: usize = block_on(
                decrypt_stream::<_, CryptoError, CryptoError>(
                    &key,
                    BINDING,
                    span,
                    futures::stream::iter(sealed.iter().cloned().map(Ok::<Bytes, CryptoError>)),
                )
                .map(|r| r.unwrap_or_else(|e| panic!("open: {e}")).len())
                .fold(0, |total, n| async move { total + n }),
            );
            assert_eq!(opened, size, "the bench must open what it sealed");
            rounds += 1;
        }
        let open_rate = rate(size, rounds, started.elapsed());
        println!(
            "chunked AES-256-GCM, {:>2} MiB objects: seal {seal_rate:>6.0} MB/s, open {open_rate:>6.0} MB/s",
            size >> 20
        );
    }
}
