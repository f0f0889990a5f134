//! `cargo bench -p nuage-meta --bench metadata`: the embedded metadata
//! store's hot paths, and what group commit gains, in one run.
//!
//! - `put_version` at concurrency 1 and 16, with group commit (the default
//!   batch bound) and without (batch bound 1: one transaction and one fsync
//!   per write, as before group commit): operations per second, p50/p99
//!   latency, and durable commits per operation (from the store's
//!   [`CommitStats`]).
//! - A small PUT as the storage layer does it, at concurrency 16: a 4 KiB
//!   blob file written, fsynced, hard-linked into place, its directory
//!   fsynced (what `nuage-blob`'s local store does), then `put_version`. This
//!   crate cannot depend on `nuage-storage` (which depends on it), so the
//!   blob write is reproduced with the same system calls rather than called;
//!   encryption and digests (about 10 µs for 4 KiB) are left out.
//! - `get_version` of a random key, one at a time.
//! - A list page of 1,000 entries in a bucket of N keys
//!   (`NUAGE_BENCH_LIST_KEYS`, default 100,000), laid out as directories of
//!   10 keys (`d00000/k0` ... ): one `scan_latest` of 1,001. Pages with a
//!   delimiter are built by the storage layer: `cargo bench -p nuage-storage
//!   --bench list` measures them through `Storage::list_objects` itself.
//!
//! The variants with and without group commit alternate in rounds (A, B, A,
//! B, ...) so that load from other processes falls on both alike; rates are
//! the median over rounds, latencies pooled over rounds. The store's files
//! live under `NUAGE_BENCH_DIR` (default: the temporary directory), which
//! must be on a disk for fsync to mean anything. Prints figures, asserts
//! nothing about speed.

use nuage_meta::embedded::{BATCH_OPERATIONS_MAX, CommitStats, EmbeddedMetaStore};
use nuage_meta::{
    BucketRecord, Checksums, ChunkBinding, ContentHeaders, DataSegment, MetaStore, PutVersion,
    VersionRecord, Versioning, WriteCondition,
};
use std::fmt::Display;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Length of one measuring round of one variant.
const ROUND: Duration = Duration::from_secs(3);
/// Rounds of each variant (alternating).
const ROUNDS: usize = 3;
const BUCKET: &str = "bench";
const LIST_BUCKET: &str = "list";
const LIST_KEYS_DEFAULT: usize = 100_000;
const KEYS_PER_DIRECTORY: usize = 10;
const PAGE_KEYS: usize = 1000;
/// Writers used to fill the listing bucket (they batch).
const FILL_WRITERS: usize = 64;
const SMALL_OBJECT_BYTES: usize = 4096;
/// Samples of each read measurement.
const READ_SAMPLES: usize = 20_000;
const LIST_SAMPLES: usize = 30;

fn ok<T, E: Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("bench setup failed: {e}"))
}

fn bucket(name: &str) -> BucketRecord {
    BucketRecord {
        name: name.into(),
        region: "fr-par".into(),
        created_unix_ns: 1,
        versioning: Versioning::Unversioned,
        tags: None,
        cors: None,
        owner: "111122223333".into(),
        policy: None,
        public_access_block: None,
        encryption: None,
        residency_policy: None,
    }
}

/// A version as a 4 KiB single-part PUT writes it (one segment, a wrapped
/// data key, checksums), so that records have a realistic size.
fn put(bucket: &str, key: &str, blob: &str) -> PutVersion {
    PutVersion {
        record: VersionRecord {
            bucket: bucket.into(),
            key: key.into(),
            version_id: String::new(),
            seq: 0,
            delete_marker: false,
            last_modified_unix_ns: 1_764_400_000_000_000_000,
            size: SMALL_OBJECT_BYTES as u64,
            etag: "0f343b0931126a20f133d67c2b018a3b".into(),
            content: ContentHeaders {
                content_type: Some("application/octet-stream".into()),
                ..ContentHeaders::default()
            },
            user_metadata: std::collections::BTreeMap::new(),
            checksums: Checksums {
                crc64nvme: Some("AAAAAAAAAAA=".into()),
                checksum_type: Some("FULL_OBJECT".into()),
                ..Checksums::default()
            },
            tags: vec![],
            segments: vec![DataSegment {
                blob_id: blob.into(),
                size: SMALL_OBJECT_BYTES as u64 + 16,
                part_etag: None,
                sealed_key: Some("x".repeat(80)),
                kms_key_arn: None,
                kms_context: None,
                sse_c: false,
                chunk_binding: ChunkBinding::Blob,
            }],
            sealed_attributes: None,
        },
        null_version: true,
        condition: WriteCondition::None,
        shared_blobs: Vec::new(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One variant's store and what it measured over its rounds.
struct Variant {
    name: &'static str,
    store: EmbeddedMetaStore,
    rates: Vec<f64>,
    latencies: Vec<Duration>,
    stats: CommitStats,
}

impl Variant {
    fn open(dir: &Path, name: &'static str, batch: usize) -> Self {
        let store = ok(EmbeddedMetaStore::open_with_batch(
            &dir.join(format!("{name}.redb")),
            batch,
        ));
        Self {
            name,
            store,
            rates: Vec::new(),
            latencies: Vec::new(),
            stats: CommitStats::default(),
        }
    }

    fn report(&mut self, what: &str) {
        self.rates.sort_by(f64::total_cmp);
        self.latencies.sort_unstable();
        let rate = self.rates.get(self.rates.len() / 2).copied().unwrap_or(0.0);
        println!(
            "{what:<34} {:<10} {rate:>8.0} op/s  p50 {:>6.2} ms  p99 {:>6.2} ms  commits/op {:.3} ({} ops)",
            self.name,
            ms(percentile(&self.latencies, 0.50)),
            ms(percentile(&self.latencies, 0.99)),
            self.stats.commits as f64 / self.stats.operations.max(1) as f64,
            self.stats.operations,
        );
        self.rates.clear();
        self.latencies.clear();
        self.stats = CommitStats::default();
    }
}

/// Where a small PUT's blob goes: the local blob store's layout in miniature.
struct BlobDir {
    tmp: PathBuf,
    blobs: PathBuf,
}

impl BlobDir {
    fn create(dir: &Path, name: &str) -> Arc<Self> {
        let this = Self {
            tmp: dir.join(format!("{name}-tmp")),
            blobs: dir.join(format!("{name}-blobs")),
        };
        ok(std::fs::create_dir_all(&this.tmp));
        ok(std::fs::create_dir_all(&this.blobs));
        Arc::new(this)
    }

    /// Writes, fsyncs and links a blob into place, fsyncs the directory.
    fn write(&self, id: &str, data: &[u8]) {
        let staged = self.tmp.join(id);
        let mut file = ok(std::fs::File::create(&staged));
        ok(file.write_all(data));
        ok(file.sync_all());
        ok(std::fs::hard_link(&staged, self.blobs.join(id)));
        ok(std::fs::File::open(&self.blobs).and_then(|d| d.sync_all()));
        ok(std::fs::remove_file(&staged));
    }
}

/// Runs `writers` concurrent PUT loops on `variant` for one round; each
/// writes keys of its own (`round` keeps rounds apart). With `blobs`, each
/// PUT first writes its 4 KiB blob file as the blob store would.
async fn put_round(
    variant: &mut Variant,
    writers: usize,
    round: usize,
    blobs: Option<&Arc<BlobDir>>,
) {
    let before = variant.store.commit_stats();
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = variant.store.clone();
        let counter = Arc::clone(&counter);
        let blobs = blobs.map(Arc::clone);
        tasks.push(tokio::spawn(async move {
            let data = vec![0x5a_u8; SMALL_OBJECT_BYTES];
            let mut latencies = Vec::new();
            let mut n = 0_usize;
            while started.elapsed() < ROUND {
                let key = format!("r{round}/w{w}/k{n}");
                let blob = format!("r{round}-w{w}-k{n}");
                let t = Instant::now();
                if let Some(blobs) = &blobs {
                    let (blobs, blob, data) = (Arc::clone(blobs), blob.clone(), data.clone());
                    ok(tokio::task::spawn_blocking(move || blobs.write(&blob, &data)).await);
                }
                ok(store.put_version(put(BUCKET, &key, &blob)).await);
                latencies.push(t.elapsed());
                counter.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            latencies
        }));
    }
    for task in tasks {
        variant.latencies.extend(ok(task.await));
    }
    let elapsed = started.elapsed();
    let after = variant.store.commit_stats();
    variant.stats.commits += after.commits - before.commits;
    variant.stats.operations += after.operations - before.operations;
    variant
        .rates
        .push(counter.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64());
}

async fn bench_puts(dir: &Path) {
    let mut batched = Variant::open(dir, "batched", BATCH_OPERATIONS_MAX);
    let mut single = Variant::open(dir, "unbatched", 1);
    for variant in [&batched, &single] {
        ok(variant.store.create_bucket(bucket(BUCKET)).await);
    }
    let mut round = 0;
    for writers in [1, 16] {
        for _ in 0..ROUNDS {
            for variant in [&mut batched, &mut single] {
                put_round(variant, writers, round, None).await;
            }
            round += 1;
        }
        let what = format!("put_version, concurrency {writers}");
        batched.report(&what);
        single.report(&what);
    }
    let blob_dirs = [
        BlobDir::create(dir, "batched"),
        BlobDir::create(dir, "unbatched"),
    ];
    for _ in 0..ROUNDS {
        for (variant, blobs) in [&mut batched, &mut single].into_iter().zip(&blob_dirs) {
            put_round(variant, 16, round, Some(blobs)).await;
        }
        round += 1;
    }
    let what = "PUT 4 KiB (blob fsyncs + put), c16";
    batched.report(what);
    single.report(what);
}

fn list_key(i: usize) -> String {
    format!("d{:05}/k{}", i / KEYS_PER_DIRECTORY, i % KEYS_PER_DIRECTORY)
}

/// Fills the listing bucket with `keys` keys, `FILL_WRITERS` at a time.
async fn fill(store: &EmbeddedMetaStore, keys: usize) {
    ok(store.create_bucket(bucket(LIST_BUCKET)).await);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..FILL_WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..keys).step_by(FILL_WRITERS) {
                let key = list_key(i);
                ok(store.put_version(put(LIST_BUCKET, &key, &key)).await);
            }
        }));
    }
    for task in tasks {
        ok(task.await);
    }
    println!(
        "filled a bucket of {keys} keys in {:.1} s ({} commits)",
        started.elapsed().as_secs_f64(),
        store.commit_stats().commits
    );
}

async fn bench_reads(dir: &Path) {
    let keys = std::env::var("NUAGE_BENCH_LIST_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LIST_KEYS_DEFAULT)
        .max(PAGE_KEYS * KEYS_PER_DIRECTORY);
    let store = ok(EmbeddedMetaStore::open(&dir.join("list.redb")));
    fill(&store, keys).await;

    let mut latencies = Vec::with_capacity(READ_SAMPLES);
    let mut position = 0x9e37_usize;
    let started = Instant::now();
    for _ in 0..READ_SAMPLES {
        position = position.wrapping_mul(1_103_515_245).wrapping_add(12_345) % keys;
        let t = Instant::now();
        let found = ok(store
            .get_version(LIST_BUCKET, &list_key(position), None)
            .await);
        latencies.push(t.elapsed());
        assert!(found.is_some(), "a key of the bucket is missing");
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    println!(
        "get_version (latest, random key)   {:>8.0} op/s  p50 {:>6.3} ms  p99 {:>6.3} ms",
        READ_SAMPLES as f64 / elapsed.as_secs_f64(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
    );

    // Pages start at random keys far enough from the end to be full.
    let starts: Vec<usize> = (0..LIST_SAMPLES)
        .map(|i| (i * 7919 * KEYS_PER_DIRECTORY) % (keys - PAGE_KEYS * KEYS_PER_DIRECTORY))
        .collect();
    let mut plain = Vec::new();
    for &start in &starts {
        let after = list_key(start).into_bytes();
        let t = Instant::now();
        let page = ok(store
            .scan_latest(LIST_BUCKET, "", Some(after.as_slice()), PAGE_KEYS + 1)
            .await);
        plain.push(t.elapsed());
        assert_eq!(page.len(), PAGE_KEYS + 1);
    }
    plain.sort_unstable();
    println!(
        "list page of 1,000, one scan_latest of 1,001   p50 {:>7.2} ms  p99 {:>7.2} ms  ({keys} keys, {} pages)",
        ms(percentile(&plain, 0.50)),
        ms(percentile(&plain, 0.99)),
        plain.len(),
    );
}

fn main() {
    let base = std::env::var_os("NUAGE_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = ok(tempfile::tempdir_in(base));
    let runtime = ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build());
    runtime.block_on(async {
        bench_puts(dir.path()).await;
        bench_reads(dir.path()).await;
    });
}
