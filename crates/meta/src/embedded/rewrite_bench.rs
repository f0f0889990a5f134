//! What the rewrite costs at start: `cargo test --release -p nuage-meta --lib
//! rewrite_bench -- --ignored --nocapture` (`NUAGE_BENCH_VERSIONS`, default
//! 100,000). Prints timings; asserts none (docs/performance.md holds them).
#![allow(clippy::unwrap_used, clippy::cast_precision_loss)]

use super::{BLOB_REFS, BUCKETS, EmbeddedMetaStore, VERSIONS, encode, version_key};
use crate::{
    BucketRecord, ChunkBinding, DataSegment, DocumentStore as _, DocumentWrite, Expect,
    VersionRecord, Versioning,
};
use redb::Database;
use std::time::Instant;

const BATCH: u64 = 10_000;

fn record(i: u64) -> VersionRecord {
    VersionRecord {
        bucket: "bench".into(),
        key: format!("invoices/2026/{:08}/scan.pdf", i),
        version_id: format!("v{i:020}"),
        seq: i,
        delete_marker: false,
        last_modified_unix_ns: 1_764_400_000_000_000_000,
        size: 250_000,
        etag: format!("{i:032x}"),
        content: crate::ContentHeaders::default(),
        user_metadata: Default::default(),
        checksums: crate::Checksums::default(),
        tags: vec![],
        segments: vec![DataSegment {
            blob_id: format!("{i:032x}"),
            size: 250_000,
            part_etag: None,
            // About the size of a wrapped data key in base64.
            sealed_key: Some("A".repeat(120)),
            kms_key_arn: None,
            kms_context: None,
            sse_c: false,
            chunk_binding: ChunkBinding::Object,
        }],
        sealed_attributes: Some("B".repeat(160)),
    }
}

fn populate(path: &std::path::Path, versions: u64) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    let bucket = BucketRecord {
        owner: "111122223333".into(),
        policy: None,
        public_access_block: None,
        name: "bench".into(),
        region: "fr-par".into(),
        created_unix_ns: 1,
        versioning: Versioning::Enabled,
        tags: None,
        cors: None,
        encryption: None,
        residency_policy: None,
    };
    txn.open_table(BUCKETS)
        .unwrap()
        .insert(b"bench".as_slice(), encode(&bucket).unwrap().as_slice())
        .unwrap();
    txn.commit().unwrap();
    let mut i = 0;
    while i < versions {
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(VERSIONS).unwrap();
            let mut refs = txn.open_table(BLOB_REFS).unwrap();
            for j in i..(i + BATCH).min(versions) {
                let r = record(j);
                table
                    .insert(
                        version_key(&r.bucket, &r.key, r.seq).as_slice(),
                        encode(&r).unwrap().as_slice(),
                    )
                    .unwrap();
                refs.insert(
                    r.segments[0].blob_id.as_bytes(),
                    1_u64.to_be_bytes().as_slice(),
                )
                .unwrap();
            }
        }
        txn.commit().unwrap();
        i += BATCH;
    }
}

#[tokio::test]
#[ignore = "a measurement, not a check: run it with --ignored --nocapture, in release"]
async fn rewrite_bench() {
    let versions: u64 = std::env::var("NUAGE_BENCH_VERSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let started = Instant::now();
    populate(&path, versions);
    // One shredding: a key document written, then deleted.
    {
        let store = EmbeddedMetaStore::open(&path).unwrap();
        for value in [Some(vec![b'k'; 400]), None] {
            store
                .commit_documents(vec![DocumentWrite {
                    namespace: "kms.key".into(),
                    key: "tenant/key".into(),
                    expect: Expect::Any,
                    value,
                }])
                .await
                .unwrap();
        }
    }
    let populated_s = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path).unwrap().len();

    let t = Instant::now();
    drop(EmbeddedMetaStore::open(&path).unwrap());
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    assert!(EmbeddedMetaStore::deleted_documents_pending(&path).unwrap());
    let check_ms = t.elapsed().as_secs_f64() * 1e3;

    // redb's own in-place compaction, on a copy, for comparison.
    let copy = dir.path().join("copy.redb");
    std::fs::copy(&path, &copy).unwrap();
    let t = Instant::now();
    let mut db = Database::open(&copy).unwrap();
    while db.compact().unwrap() {}
    drop(db);
    let compact_ms = t.elapsed().as_secs_f64() * 1e3;
    let compacted_bytes = std::fs::metadata(&copy).unwrap().len();

    let t = Instant::now();
    let rewrite = EmbeddedMetaStore::rewrite(&path).unwrap();
    let rewrite_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    assert_eq!(EmbeddedMetaStore::forget_deleted(&path).unwrap(), None);
    let nothing_owed_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    drop(EmbeddedMetaStore::open(&path).unwrap());
    let open_after_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "rewrite_bench: {versions} versions, file {bytes} bytes (populated in {populated_s:.1} s)\n\
         \x20 open: {open_ms:.1} ms; check for a pending rewrite: {check_ms:.1} ms\n\
         \x20 rewrite (copy live entries, fsync, rename): {rewrite_ms:.0} ms, {} entries, \
         {} -> {} bytes; open after: {open_after_ms:.1} ms\n\
         \x20 start with nothing owed (check only): {nothing_owed_ms:.1} ms\n\
         \x20 redb in-place compact() for comparison: {compact_ms:.0} ms, {bytes} -> \
         {compacted_bytes} bytes",
        rewrite.entries, rewrite.file_bytes_before, rewrite.file_bytes_after
    );
}
