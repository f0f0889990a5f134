//! `cargo bench -p nuage-storage --bench list`: the ListObjects path,
//! `Storage::list_objects`, over the embedded metadata store.
//!
//! The bucket holds `NUAGE_BENCH_LIST_KEYS` keys (default 100,000; the issue's
//! figure is 1,000,000), ten per "directory" (`d000000/k0` ... `d000000/k9`,
//! ...), written straight into the metadata store (listing reads no object
//! data). It prints, for pages of 1,000 starting at spread-out markers:
//! without a delimiter (1,000 keys) and with `/` (1,000 common prefixes, each
//! rolling up ten keys); and the time of a full listing without a delimiter,
//! page after page. Prints figures, asserts nothing about speed.
//!
//! `NUAGE_BENCH_DIR` puts the store elsewhere than the system's temporary
//! directory (a disk rather than memory, for the fill's fsyncs).

use nuage_blob::BlobStore;
use nuage_blob::local::LocalBlobStore;
use nuage_meta::{
    Checksums, ChunkBinding, ContentHeaders, DataSegment, MetaStore, PutVersion, VersionRecord,
    WriteCondition,
};
use nuage_storage::{ListQuery, Region, Storage, StorageConfig};
use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TENANT: &str = "111122223333";
const BUCKET: &str = "list-bench";
const KEYS_DEFAULT: usize = 100_000;
const KEYS_PER_DIRECTORY: usize = 10;
const PAGE_KEYS: usize = 1000;
const PAGE_SAMPLES: usize = 30;
/// Concurrent writers while filling (group commit batches them).
const FILL_WRITERS: usize = 32;

fn ok<T, E: Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("bench setup failed: {e}"))
}

fn key(i: usize) -> String {
    format!("d{:06}/k{}", i / KEYS_PER_DIRECTORY, i % KEYS_PER_DIRECTORY)
}

/// A record the size of a real small object's (about 600 bytes of JSON).
fn record(key: &str) -> VersionRecord {
    VersionRecord {
        bucket: BUCKET.into(),
        key: key.into(),
        version_id: String::new(),
        seq: 0,
        delete_marker: false,
        last_modified_unix_ns: 1_764_400_000_000_000_000,
        size: 4096,
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
            blob_id: format!("blob-{key}"),
            size: 4096 + 16,
            part_etag: None,
            sealed_key: Some("x".repeat(80)),
            kms_key_arn: None,
            kms_context: None,
            sse_c: false,
            chunk_binding: ChunkBinding::Blob,
        }],
        sealed_attributes: None,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn fill(meta: &Arc<nuage_meta::embedded::EmbeddedMetaStore>, keys: usize) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..FILL_WRITERS {
        let meta = Arc::clone(meta);
        tasks.push(tokio::spawn(async move {
            for i in (writer..keys).step_by(FILL_WRITERS) {
                let k = key(i);
                ok(meta
                    .put_version(PutVersion {
                        record: record(&k),
                        null_version: true,
                        condition: WriteCondition::None,
                        shared_blobs: Vec::new(),
                    })
                    .await);
            }
        }));
    }
    for task in tasks {
        ok(task.await);
    }
    println!(
        "filled a bucket of {keys} keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn page(
    storage: &Storage,
    delimiter: Option<&str>,
    after: Option<String>,
) -> (usize, Option<String>) {
    let page = ok(storage
        .list_objects(
            BUCKET,
            &ListQuery {
                prefix: String::new(),
                delimiter: delimiter.map(str::to_owned),
                after,
                max_keys: PAGE_KEYS,
            },
        )
        .await);
    let entries = page.objects.len() + page.common_prefixes.len();
    (entries, page.truncated.then_some(page.next_after).flatten())
}

async fn run() {
    let keys = std::env::var("NUAGE_BENCH_LIST_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KEYS_DEFAULT)
        .max(4 * PAGE_KEYS * KEYS_PER_DIRECTORY);
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
    let key_service = nuage_kms::KeyService::new(
        Arc::clone(&meta) as Arc<dyn nuage_meta::DocumentStore>,
        root,
    );
    let storage = Storage::new(
        Arc::clone(&meta) as Arc<dyn MetaStore>,
        Arc::clone(&blobs) as Arc<dyn BlobStore>,
        Arc::new(nuage_base::SystemClock),
        key_service,
        StorageConfig {
            regions: vec![Region {
                name: "fr-par".into(),
                country: "FR".into(),
            }],
            default_region_aliases: Vec::new(),
        },
    );
    ok(storage.create_bucket(BUCKET, None, TENANT).await);
    fill(&meta, keys).await;

    // Markers spread over the bucket, far enough from its end for full pages.
    let span = keys - 2 * PAGE_KEYS * KEYS_PER_DIRECTORY;
    let markers: Vec<String> = (0..PAGE_SAMPLES)
        .map(|i| key((i * 7919 * KEYS_PER_DIRECTORY) % span))
        .collect();
    for (what, delimiter) in [
        ("no delimiter (1,000 keys)", None),
        ("delimiter '/' (1,000 prefixes)", Some("/")),
    ] {
        let mut samples = Vec::with_capacity(PAGE_SAMPLES);
        for marker in &markers {
            let t = Instant::now();
            let (entries, next) = page(&storage, delimiter, Some(marker.clone())).await;
            samples.push(t.elapsed());
            assert_eq!(entries, PAGE_KEYS, "a page is full");
            assert!(next.is_some(), "the page is truncated");
        }
        samples.sort_unstable();
        println!(
            "list page, {what:<31} p50 {:>7.2} ms  p99 {:>7.2} ms  ({keys} keys, {PAGE_SAMPLES} pages)",
            ms(percentile(&samples, 0.50)),
            ms(percentile(&samples, 0.99)),
        );
    }

    let started = Instant::now();
    let (mut listed, mut after) = (0, None);
    loop {
        let (entries, next) = page(&storage, None, after).await;
        listed += entries;
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, keys, "the full listing returns every key");
    println!(
        "full listing, no delimiter: {listed} keys in {:.2} s ({} pages)",
        started.elapsed().as_secs_f64(),
        keys.div_ceil(PAGE_KEYS)
    );
    // The process's memory after filling and listing: the metadata store's
    // cache is bounded (`META_CACHE_BYTES`), so it must not follow `keys`.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
    {
        println!("{}", line.split_whitespace().collect::<Vec<_>>().join(" "));
    }
}

fn main() {
    let runtime = ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build());
    runtime.block_on(run());
}
