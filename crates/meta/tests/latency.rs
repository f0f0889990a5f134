//! A measurement, not a check: per-operation latency of `put_version`,
//! `get_version` and a 100-key `scan_latest` page on each backend, the
//! figures `docs/metadata-postgres.md` quotes. Ignored by default; run with
//!
//! ```sh
//! cargo test -p nuage-meta --test latency -- --ignored --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::cast_precision_loss)]

use nuage_meta::embedded::EmbeddedMetaStore;
use nuage_meta::postgres::{PostgresConfig, PostgresMetaStore};
use nuage_meta::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

const KEYS: usize = 1000;
const SCANS: usize = 200;
const CONCURRENT_WRITERS: usize = 8;

fn version(key: &str, t: i64) -> VersionRecord {
    let mut record = common::version("bench", key, &format!("blob-{key}"), t, ChunkBinding::Blob);
    record.etag = "0123456789abcdef0123456789abcdef".into();
    record.segments[0].sealed_key = Some("A".repeat(120));
    record
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{label:<40} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms",
        samples.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3
    );
}

async fn measure(name: &str, store: Arc<dyn MetaStore>) {
    store
        .create_bucket(common::bucket("bench", Versioning::Unversioned))
        .await
        .unwrap();
    let mut puts = Vec::new();
    for i in 0..KEYS {
        let started = Instant::now();
        store
            .put_version(PutVersion {
                record: version(&format!("dir/key-{i:06}"), 1),
                null_version: true,
                condition: WriteCondition::None,
                shared_blobs: vec![],
            })
            .await
            .unwrap();
        puts.push(started.elapsed());
    }
    summary(&format!("{name}: put_version (null, new key)"), puts);
    let mut gets = Vec::new();
    for i in (0..KEYS).step_by(5) {
        let started = Instant::now();
        store
            .get_version("bench", &format!("dir/key-{i:06}"), None)
            .await
            .unwrap()
            .unwrap();
        gets.push(started.elapsed());
    }
    summary(&format!("{name}: get_version (latest)"), gets);
    let mut scans = Vec::new();
    for i in 0..SCANS {
        let after = format!("dir/key-{:06}", (i * 37) % (KEYS - 100));
        let started = Instant::now();
        let page = store
            .scan_latest("bench", "dir/", Some(after.as_bytes()), 100)
            .await
            .unwrap();
        scans.push(started.elapsed());
        assert_eq!(page.len(), 100);
    }
    summary(&format!("{name}: scan_latest page of 100"), scans);
    // Throughput with concurrent writers (distinct keys).
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CONCURRENT_WRITERS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for i in 0..KEYS / CONCURRENT_WRITERS {
                store
                    .put_version(PutVersion {
                        record: version(&format!("par/{w}/{i:06}"), 1),
                        null_version: true,
                        condition: WriteCondition::None,
                        shared_blobs: vec![],
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "{:<40} {:.0} puts/s ({CONCURRENT_WRITERS} writers, {KEYS} puts)",
        format!("{name}: concurrent put_version"),
        KEYS as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it with --ignored --nocapture"]
async fn metadata_latency() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap();
    measure("embedded", Arc::new(embedded)).await;
    if let Some(url) = common::postgres_url().await {
        let store = PostgresMetaStore::connect(&PostgresConfig::new(url))
            .await
            .unwrap();
        measure("postgres", Arc::new(store)).await;
    }
}
