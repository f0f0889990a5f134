//! `cargo bench -p nuage-storage --bench encryption`: what encryption at rest
//! costs the storage layer, for 1 MiB and 64 MiB objects, PUT and GET, with
//! and without encryption in the same run.
//!
//! - PUT with encryption: `Storage::stage` (body stream -> MD5 + CRC64NVME ->
//!   AES-256-GCM chunks -> blob blocks with CRC32C -> fsync of file and
//!   directory), the path every PutObject takes before its metadata commit.
//! - PUT without: the same body stream, the same digests, the same blob
//!   writer (same blocks, CRC32C, fsyncs), no cipher.
//! - GET with encryption: `Storage::read_object` drained (key unwrap, blob
//!   read with CRC32C check, chunk decryption).
//! - GET without: the blob store's read of the same number of bytes drained
//!   (same read-ahead, same CRC32C check).
//!
//! The two variants alternate (A, B, A, B, ...) so that load from other
//! processes on the machine falls on both alike; each figure is the median of
//! its samples. A few component rates (AES-GCM open, CRC32C, MD5 + CRC64NVME)
//! are printed too, to tell where the time goes. Prints figures, asserts
//! nothing about speed.

use bytes::Bytes;
use futures::StreamExt;
use nuage_blob::BlobStore;
use nuage_blob::local::LocalBlobStore;
use nuage_meta::{Checksums, MetaStore, WriteCondition};
use nuage_storage::{
    ChecksumAlgorithm, DigestSet, ObjectAttributes, Region, Storage, StorageConfig,
};
use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Body pieces as they arrive from a socket.
const PIECE_BYTES: usize = 64 * 1024;
/// Measuring time per (size, operation) pair of variants.
const MEASURE_MIN: Duration = Duration::from_secs(4);
/// At least this many samples of each variant.
const SAMPLES_MIN: usize = 5;
const TENANT: &str = "111122223333";
/// S3's default checksum for uploads without one, computed on every PUT.
const ALGORITHMS: &[ChecksumAlgorithm] = &[ChecksumAlgorithm::Crc64Nvme];

fn ok<T, E: Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("bench setup failed: {e}"))
}

fn body(data: &Bytes) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
    let pieces: Vec<Result<Bytes, std::io::Error>> = (0..data.len())
        .step_by(PIECE_BYTES)
        .map(|i| Ok(data.slice(i..(i + PIECE_BYTES).min(data.len()))))
        .collect();
    futures::stream::iter(pieces)
}

struct Bench {
    storage: Storage,
    blobs: Arc<LocalBlobStore>,
    _dir: tempfile::TempDir,
}

fn setup() -> Bench {
    // Under the target directory's file system rather than /tmp, which may
    // be memory: fsync must reach a disk for the figures to mean anything.
    let base = std::env::var_os("NUAGE_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = ok(tempfile::tempdir_in(base));
    let path = dir.path();
    let meta = Arc::new(ok(nuage_meta::embedded::EmbeddedMetaStore::open(
        &path.join("meta.redb"),
    )));
    let blobs = Arc::new(ok(LocalBlobStore::open(&path.join("blobs"))));
    let root = ok(nuage_crypto::RootKeyFile::open_or_create(
        &path.join("root.key"),
    ));
    let keys = nuage_kms::KeyService::new(
        Arc::clone(&meta) as Arc<dyn nuage_meta::DocumentStore>,
        root,
    );
    let storage = Storage::new(
        Arc::clone(&meta) as Arc<dyn MetaStore>,
        Arc::clone(&blobs) as Arc<dyn BlobStore>,
        Arc::new(nuage_base::SystemClock),
        keys,
        StorageConfig {
            regions: vec![Region {
                name: "fr-par".into(),
                country: "FR".into(),
            }],
            default_region_aliases: Vec::new(),
        },
    );
    Bench {
        storage,
        blobs,
        _dir: dir,
    }
}

/// PUT without encryption: the same digests and blob writer as `stage`.
async fn put_plain(blobs: &LocalBlobStore, data: &Bytes) -> String {
    let mut writer = ok(blobs.create().await);
    let mut digests = DigestSet::new(ALGORITHMS);
    let mut size = 0u64;
    let mut input = std::pin::pin!(body(data));
    while let Some(piece) = input.next().await {
        let piece = ok(piece);
        size += piece.len() as u64;
        digests.update(&piece);
        ok(writer.write(piece).await);
    }
    let blob_id = writer.blob_id().to_owned();
    assert_eq!(ok(writer.finish().await), size);
    std::hint::black_box(digests.finish());
    blob_id
}

async fn drain(mut stream: nuage_storage::ObjectBody) -> u64 {
    let mut total = 0u64;
    while let Some(piece) = stream.next().await {
        total += ok(piece).len() as u64;
    }
    total
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

fn report(size: usize, op: &str, plain: &mut [Duration], sealed: &mut [Duration]) {
    let (a, b) = (median(plain), median(sealed));
    println!(
        "{:>2} MiB {op}: without {:>6.0} MB/s ({:>9.3} ms), with {:>6.0} MB/s ({:>9.3} ms), overhead {:+5.1} % ({} samples each)",
        size >> 20,
        mb_per_s(size, a),
        a.as_secs_f64() * 1e3,
        mb_per_s(size, b),
        b.as_secs_f64() * 1e3,
        (b.as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0,
        plain.len(),
    );
}

async fn bench_size(bench: &Bench, size: usize) {
    let data = Bytes::from(
        (0..size)
            .map(|i| u8::try_from(i % 251).unwrap_or(0))
            .collect::<Vec<u8>>(),
    );
    let key = format!("object-{size}");

    // PUT, A/B interleaved.
    let (mut plain, mut sealed) = (Vec::new(), Vec::new());
    let started = Instant::now();
    while started.elapsed() < MEASURE_MIN || plain.len() < SAMPLES_MIN {
        let t = Instant::now();
        let blob_id = put_plain(&bench.blobs, &data).await;
        plain.push(t.elapsed());
        ok(bench.blobs.delete(&blob_id).await);

        let t = Instant::now();
        let staged = ok(bench
            .storage
            .stage(
                "bench",
                &key,
                body(&data),
                Some(size as u64),
                u64::MAX,
                ALGORITHMS,
            )
            .await);
        sealed.push(t.elapsed());
        bench.storage.discard(staged).await;
    }
    report(size, "PUT", &mut plain, &mut sealed);

    // GET: one object of each kind, read whole, A/B interleaved.
    let plain_blob = put_plain(&bench.blobs, &data).await;
    let staged = ok(bench
        .storage
        .stage(
            "bench",
            &key,
            body(&data),
            Some(size as u64),
            u64::MAX,
            ALGORITHMS,
        )
        .await);
    let record = ok(bench
        .storage
        .put_object(
            "bench",
            &key,
            staged,
            ObjectAttributes::default(),
            Checksums::default(),
            WriteCondition::None,
        )
        .await);
    let (mut plain, mut sealed) = (Vec::new(), Vec::new());
    let started = Instant::now();
    while started.elapsed() < MEASURE_MIN || plain.len() < SAMPLES_MIN {
        let t = Instant::now();
        let stream: nuage_storage::ObjectBody = Box::pin(
            bench
                .blobs
                .read(&plain_blob, 0, size as u64)
                .map(|r| r.map_err(std::io::Error::other)),
        );
        assert_eq!(drain(stream).await, size as u64);
        plain.push(t.elapsed());

        let t = Instant::now();
        let stream = ok(bench
            .storage
            .read_object(&record, None, 0, size as u64)
            .await);
        assert_eq!(drain(stream).await, size as u64);
        sealed.push(t.elapsed());
    }
    report(size, "GET", &mut plain, &mut sealed);
    ok(bench.blobs.delete(&plain_blob).await);
}

/// Per-byte costs of the parts, single-threaded, in memory.
fn components() {
    const SIZE: usize = 64 << 20;
    let data = Bytes::from(vec![0x5a_u8; SIZE]);
    let print = |name: &str, samples: &mut [Duration]| {
        let m = median(samples);
        println!(
            "component {name:<34} {:>6.0} MB/s  {:.3} ns/byte",
            mb_per_s(SIZE, m),
            m.as_secs_f64() * 1e9 / SIZE as f64
        );
    };
    let time = |name: &str, f: &mut dyn FnMut()| {
        let mut samples = Vec::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(2) || samples.len() < SAMPLES_MIN {
            let t = Instant::now();
            f();
            samples.push(t.elapsed());
        }
        print(name, &mut samples);
    };
    time("CRC32C", &mut || {
        std::hint::black_box(crc32c::crc32c(&data));
    });
    time("MD5 + CRC64NVME", &mut || {
        let mut set = DigestSet::new(ALGORITHMS);
        for piece in data.chunks(PIECE_BYTES) {
            set.update(piece);
        }
        std::hint::black_box(set.finish());
    });
    let mut target = vec![0u8; SIZE];
    time("memcpy (into a warm buffer)", &mut || {
        target.copy_from_slice(&data);
        std::hint::black_box(&target);
    });
    // The raw cipher: seal 64 KiB chunks in place in one warm buffer (GCM
    // open does the same work: CTR plus GHASH over the same bytes).
    {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let cipher = LessSafeKey::new(ok(
            UnboundKey::new(&AES_256_GCM, &[7u8; 32]).map_err(|_| "aead key")
        ));
        let mut chunk = vec![0x5a_u8; 64 * 1024];
        time("AES-256-GCM, 64 KiB chunks in place", &mut || {
            for i in 0..(SIZE / chunk.len()) {
                let mut nonce = [0u8; 12];
                nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
                let tag = ok(cipher
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(b"bench"),
                        &mut chunk,
                    )
                    .map_err(|_| "seal"));
                std::hint::black_box(tag.as_ref());
            }
        });
    }
    let kek = ok(nuage_crypto::KeyEncryptionKey::generate());
    let key = ok(nuage_crypto::DataKey::generate());
    let wrapped = ok(nuage_crypto::wrap_data_key(&kek, &key, b"bench"));
    let sealed: Vec<Bytes> = futures::executor::block_on(
        nuage_crypto::encrypt_stream::<_, nuage_crypto::CryptoError, nuage_crypto::CryptoError>(
            key,
            b"bench",
            futures::stream::iter(
                data.chunks(PIECE_BYTES)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect::<Vec<_>>(),
            ),
        )
        .map(ok)
        .collect(),
    );
    let key = ok(nuage_crypto::unwrap_data_key(&kek, &wrapped, b"bench"));
    // The same bytes in 256 KiB pieces, as the blob store yields them.
    let ciphertext = Bytes::from(sealed.concat());
    let blocks: Vec<Bytes> = (0..ciphertext.len())
        .step_by(256 * 1024)
        .map(|i| ciphertext.slice(i..(i + 256 * 1024).min(ciphertext.len())))
        .collect();
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) || samples.len() < SAMPLES_MIN {
        // Fresh, unshared buffers, as the blob store hands out, made
        // (and their pages faulted in) before the clock starts.
        let input: Vec<Result<Bytes, nuage_crypto::CryptoError>> =
            blocks.iter().map(|b| Ok(Bytes::from(b.to_vec()))).collect();
        let span = ok(nuage_crypto::ChunkSpan::whole(SIZE as u64));
        let t = Instant::now();
        let n: usize = futures::executor::block_on(
            nuage_crypto::decrypt_stream::<_, _, nuage_crypto::CryptoError>(
                &key,
                b"bench",
                span,
                futures::stream::iter(input),
            )
            .map(|r| ok(r).len())
            .fold(0, |a, b| async move { a + b }),
        );
        samples.push(t.elapsed());
        assert_eq!(n, SIZE);
    }
    print("decrypt_stream over blob blocks", &mut samples);
}

fn main() {
    let runtime = ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build());
    runtime.block_on(async {
        let bench = setup();
        ok(bench.storage.create_bucket("bench", None, TENANT).await);
        for size in [1usize << 20, 64 << 20] {
            bench_size(&bench, size).await;
        }
    });
    components();
}
