//! Erasure-coded blobs against four real nodes over mutual TLS (fr-1, fr-2,
//! de-1, us-1): one shard per node, about 1/K of the blob on each disk,
//! byte-exact reads of the whole blob and of ranges, reads around a dead
//! node or a corrupt shard (decoding), shards rebuilt by repair and scrub on
//! compliant nodes only, and reads that fail rather than return wrong bytes
//! once more than M shards are gone.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use futures::TryStreamExt as _;
use nuage_blob::{BlobError, BlobStore as _};
use nuage_cluster::{BlobLocation, ClusterBlobStore, ReplicaEvent, ReplicaEventKind, ScrubReport};
use nuage_placement::{PlacementError, ResidencyPolicy};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Bytes each shard takes of a full stripe (`limits::EC_CHUNK_BYTES`).
const CHUNK: u64 = nuage_cluster::limits::EC_CHUNK_BYTES as u64;
/// Data bytes before the first data byte of a node's blob file.
const HEADER_BYTES: u64 = 16;
const HOUR: Duration = Duration::from_secs(3600);

fn ec(json_places: &str, data: u32, parity: u32) -> ResidencyPolicy {
    policy(&format!(
        r#"{{{json_places},"durability":{{"erasure_coding":{{"data":{data},"parity":{parity}}}}},"min_sites":2}}"#
    ))
}

/// Erasure coding on the three EU nodes (fr-1, fr-2, de-1), never us-1.
fn eu_ec(data: u32, parity: u32) -> ResidencyPolicy {
    ec(r#""allowed_jurisdictions":["EU"]"#, data, parity)
}

/// Erasure coding anywhere (all four nodes allowed).
fn anywhere_ec(data: u32, parity: u32) -> ResidencyPolicy {
    ec(r#""allowed_countries":["FR","DE","US"]"#, data, parity)
}

fn keep_recorded(_: &BlobLocation) -> Option<ResidencyPolicy> {
    None
}

/// A repair log that keeps every event.
#[derive(Default)]
struct RecordingLog {
    events: Mutex<Vec<ReplicaEvent>>,
}

impl RecordingLog {
    fn take(&self) -> Vec<ReplicaEvent> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

impl nuage_cluster::RepairLog for RecordingLog {
    fn record<'a>(
        &'a self,
        events: &'a [ReplicaEvent],
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        self.events.lock().unwrap().extend(events.iter().cloned());
        Box::pin(async { Ok(()) })
    }
}

/// The shard length of a blob of `size` bytes under `data` shards.
fn shard_len(size: u64, data: u64) -> u64 {
    let stripe = data * CHUNK;
    let full = size / stripe;
    let rest = size % stripe;
    let last = rest.div_ceil(data);
    full * CHUNK + last + last % 2
}

/// Reads `len` bytes from `offset` and checks them against the pattern.
async fn assert_range(store: &ClusterBlobStore, id: &str, seed: u64, offset: u64, len: u64) {
    let got: Vec<Bytes> = store.read(id, offset, len).try_collect().await.unwrap();
    let got: Vec<u8> = got.concat();
    assert_eq!(got.len() as u64, len, "range {offset}+{len}");
    assert!(
        got == pattern(seed, offset, usize::try_from(len).unwrap()),
        "range {offset}+{len} differs"
    );
}

/// The whole blob and ranges at the edges: first byte, across a chunk
/// boundary, across a stripe boundary, the last byte, past the end.
async fn assert_reads(store: &ClusterBlobStore, id: &str, seed: u64, size: u64, data: u64) {
    assert_eq!(
        read_sha(store, id, size).await.unwrap(),
        sha_of_pattern(seed, size)
    );
    let stripe = data * CHUNK;
    assert_range(store, id, seed, 0, 1).await;
    assert_range(store, id, seed, CHUNK - 5, 10).await;
    assert_range(store, id, seed, stripe - 7, 20).await;
    assert_range(store, id, seed, 2 * stripe + 3, stripe + 100).await;
    assert_range(store, id, seed, size - 1, 1).await;
    assert_range(store, id, seed, size - 3000, 3000).await;
    // A length past the end stops at the end.
    let got: Vec<Bytes> = store.read(id, size - 10, 100).try_collect().await.unwrap();
    assert_eq!(got.concat(), pattern(seed, size - 10, 10));
}

/// The node's final blob file of `blob_id`.
fn blob_file(cluster: &Cluster, node: &str, blob_id: &str) -> PathBuf {
    let files = cluster.node(node).files_of(blob_id);
    assert_eq!(files.len(), 1, "{node}: {files:?}");
    files[0].clone()
}

/// Flips one bit at byte `at` of the file past its header (a data byte or
/// a block's CRC: either way the block fails its check).
fn flip_byte(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = usize::try_from(HEADER_BYTES + at).unwrap();
    bytes[i] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

/// The node holding shard `i`.
fn shard_node(loc: &BlobLocation, i: usize) -> String {
    loc.erasure.as_ref().unwrap().shards[i]
        .node
        .clone()
        .unwrap()
}

const SIZE: u64 = 3 * MIB + 12_345;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_is_striped_one_shard_per_node_and_reads_exactly() {
    let mut cluster = Cluster::start(None).await;
    let policy = eu_ec(2, 1);
    let store = cluster.store(policy.clone()).await;
    let id = write_blob(&store, &target(&policy, Some(SIZE)), 7, SIZE)
        .await
        .unwrap();
    let loc = location(&store, &id).await.unwrap();
    assert_eq!(loc.size, SIZE);
    assert_eq!(loc.sha256, sha_of_pattern(7, SIZE));
    let layout = loc.erasure.clone().unwrap();
    assert_eq!((layout.data, layout.parity), (2, 1));
    assert_eq!(layout.shards.len(), 3);
    assert_eq!(loc.nodes, layout.holders());
    assert_eq!(sorted(loc.nodes.clone()), ["de-1-n1", "fr-1-n1", "fr-2-n1"]);
    let expected = shard_len(SIZE, 2);
    for shard in &layout.shards {
        assert_eq!(shard.length, expected);
        assert_eq!(shard.sha256.len(), 64);
    }
    // On disk: each node holds one shard, about half the blob; us-1 nothing.
    let mut total = 0;
    for node in &loc.nodes {
        let len = std::fs::metadata(blob_file(&cluster, node, &id))
            .unwrap()
            .len();
        assert!(
            len >= expected && len < expected + expected / 50,
            "{node}: {len} bytes on disk for a {expected}-byte shard"
        );
        total += len;
    }
    assert!(
        total < SIZE * 3 / 2 + SIZE / 20,
        "{total} bytes on disk for {SIZE}"
    );
    assert!(cluster.node("us-1-n1").files().is_empty());
    // Two different shards: the parity is not a copy.
    let a = std::fs::read(blob_file(&cluster, &shard_node(&loc, 0), &id)).unwrap();
    let b = std::fs::read(blob_file(&cluster, &shard_node(&loc, 2), &id)).unwrap();
    assert_ne!(a, b);

    // All data shards up: the reads need no decoding.
    assert_reads(&store, &id, 7, SIZE, 2).await;

    // A data shard's node down: reads decode from the parity shard.
    let first = shard_node(&loc, 0);
    cluster.kill(&first);
    let store = cluster.store(policy.clone()).await;
    assert_reads(&store, &id, 7, SIZE, 2).await;
    // Unaware that the node is down (states from before the kill): the
    // read fails over all the same.
    cluster.restart(&first).await;
    let aware = cluster.store(policy.clone()).await;
    cluster.kill(&first);
    assert_reads(&aware, &id, 7, SIZE, 2).await;

    // Two of three shards gone (more than the one parity): an error, never
    // bytes.
    cluster.kill(&shard_node(&loc, 1));
    let store = cluster.store(policy.clone()).await;
    let result: Result<Vec<Bytes>, BlobError> = store.read(&id, 0, SIZE).try_collect().await;
    let e = result.unwrap_err();
    assert!(e.to_string().contains("shards are needed"), "{e}");
    let result: Result<Vec<Bytes>, BlobError> = store.read(&id, SIZE - 1, 1).try_collect().await;
    assert!(result.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_empty_and_unknown_length_blobs_round_trip_and_delete_removes_every_shard() {
    let cluster = Cluster::start(None).await;
    let policy = eu_ec(2, 1);
    let store = cluster.store(policy.clone()).await;
    for (size, exact) in [
        (0, true),
        (1, true),
        (3, true),
        (4 * CHUNK, true),
        (SIZE, false),
    ] {
        let exact_len = exact.then_some(size);
        let id = write_blob(&store, &target(&policy, exact_len), size, size)
            .await
            .unwrap();
        let loc = location(&store, &id).await.unwrap();
        let layout = loc.erasure.clone().unwrap();
        for shard in &layout.shards {
            assert_eq!(shard.length, shard_len(size, 2), "size {size}");
        }
        assert_eq!(
            read_sha(&store, &id, size).await.unwrap(),
            sha_of_pattern(size, size)
        );
        if size > 0 {
            assert_range(&store, &id, size, size - 1, 1).await;
        }
        assert_eq!(cluster.holders(&id).len(), 3);
        store.delete(&id).await.unwrap();
        assert!(cluster.holders(&id).is_empty(), "size {size}");
        assert!(location(&store, &id).await.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_shard_is_read_around_and_the_scrubber_rebuilds_it() {
    let cluster = Cluster::start(None).await;
    let policy = eu_ec(2, 1);
    let store = cluster.store(policy.clone()).await;
    let id = write_blob(&store, &target(&policy, Some(SIZE)), 11, SIZE)
        .await
        .unwrap();
    let loc = location(&store, &id).await.unwrap();
    let victim = shard_node(&loc, 0);
    let file = blob_file(&cluster, &victim, &id);
    // In the shard's third stripe chunk: a read fails over mid-stream.
    flip_byte(&file, 2 * CHUNK + 70_000);
    let corrupted = std::fs::read(&file).unwrap();
    // The node refuses the bad block; the read decodes from the others.
    assert_reads(&store, &id, 11, SIZE, 2).await;

    // A node that breaks off a read mid-stream is taken for down until the
    // next poll.
    assert!(store.poll_nodes().await.is_empty());
    let log = RecordingLog::default();
    let report: ScrubReport = store
        .scrub_once_logged(&keep_recorded, &log, HOUR)
        .await
        .unwrap();
    assert_eq!((report.bad, report.replaced), (1, 1), "{report:?}");
    assert_eq!(report.verified, 2, "{report:?}");
    let events = log.take();
    let discard = events
        .iter()
        .find(|e| e.kind == ReplicaEventKind::Discard)
        .unwrap();
    assert_eq!(discard.shard, Some(0));
    assert_eq!(discard.from[0].node, victim);
    let rebuilt = events
        .iter()
        .find(|e| e.kind == ReplicaEventKind::Repair)
        .unwrap();
    assert_eq!(rebuilt.shard, Some(0));
    // Shard 0 is back, on the only EU node without a shard: the same one.
    let after = location(&store, &id).await.unwrap();
    assert_eq!(shard_node(&after, 0), victim);
    assert_eq!(rebuilt.to[0].node, victim);
    assert_eq!(after.erasure, loc.erasure);
    assert!(after.removing.is_empty(), "{after:?}");
    let replaced = std::fs::read(blob_file(&cluster, &victim, &id)).unwrap();
    assert_ne!(replaced, corrupted);
    assert!(cluster.node("us-1-n1").files().is_empty());
    assert_reads(&store, &id, 11, SIZE, 2).await;
    // A second pass finds every shard good.
    let report = store
        .scrub_once_logged(&keep_recorded, &log, HOUR)
        .await
        .unwrap();
    assert_eq!((report.bad, report.verified), (0, 3), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_rebuilds_a_dead_nodes_shard_on_a_compliant_node_only() {
    let mut cluster = Cluster::start(None).await;
    // 1+1 on two of the three EU nodes: the third EU node is the only
    // compliant home for a lost shard; us-1 never is.
    let policy = eu_ec(1, 1);
    let store = cluster.store(policy.clone()).await;
    let id = write_blob(&store, &target(&policy, Some(SIZE)), 5, SIZE)
        .await
        .unwrap();
    let loc = location(&store, &id).await.unwrap();
    let dead = shard_node(&loc, 0);
    cluster.kill(&dead);
    let store = cluster.store(policy.clone()).await;
    let log = RecordingLog::default();
    let report = store
        .repair_once_logged(&keep_recorded, &log)
        .await
        .unwrap();
    assert_eq!((report.repaired, report.copied), (1, 1), "{report:?}");
    let after = location(&store, &id).await.unwrap();
    let new = shard_node(&after, 0);
    assert!(!loc.nodes.contains(&new), "{after:?}");
    assert_ne!(new, "us-1-n1");
    assert_eq!(after.removing, std::slice::from_ref(&dead));
    assert!(cluster.node("us-1-n1").files().is_empty());
    let events = log.take();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, ReplicaEventKind::Repair);
    assert_eq!(events[0].shard, Some(0));
    assert_eq!(events[0].to[0].node, new);
    assert_eq!(events[0].reason, "node down");
    assert_reads(&store, &id, 5, SIZE, 1).await;
    // The rebuilt shard alone rebuilds the blob.
    cluster.kill(&shard_node(&after, 1));
    let store = cluster.store(policy.clone()).await;
    assert_reads(&store, &id, 5, SIZE, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_decodes_a_lost_data_shard_and_deletes_the_stale_one_later() {
    let mut cluster = Cluster::start(None).await;
    let policy = anywhere_ec(2, 1);
    let store = cluster.store(policy.clone()).await;
    let id = write_blob(&store, &target(&policy, Some(SIZE)), 9, SIZE)
        .await
        .unwrap();
    let loc = location(&store, &id).await.unwrap();
    let spare: Vec<String> = ["de-1-n1", "fr-1-n1", "fr-2-n1", "us-1-n1"]
        .into_iter()
        .map(str::to_owned)
        .filter(|n| !loc.nodes.contains(n))
        .collect();
    assert_eq!(spare.len(), 1);
    // Data shard 1 lost: rebuilt from shard 0 and the parity shard.
    let dead = shard_node(&loc, 1);
    cluster.kill(&dead);
    let store = cluster.store(policy.clone()).await;
    let report = store.repair_once(&keep_recorded).await.unwrap();
    assert_eq!(report.copied, 1, "{report:?}");
    let after = location(&store, &id).await.unwrap();
    assert_eq!(shard_node(&after, 1), spare[0]);
    assert_eq!(shard_node(&after, 0), shard_node(&loc, 0));
    assert_eq!(shard_node(&after, 2), shard_node(&loc, 2));
    assert_eq!(
        std::fs::metadata(blob_file(&cluster, &spare[0], &id))
            .unwrap()
            .len(),
        std::fs::metadata(blob_file(&cluster, &shard_node(&loc, 0), &id))
            .unwrap()
            .len()
    );
    // The rebuilt shard is right: with the parity shard's node down too,
    // the data shards alone read exactly.
    cluster.kill(&shard_node(&loc, 2));
    let store = cluster.store(policy.clone()).await;
    assert_reads(&store, &id, 9, SIZE, 2).await;
    // The dead node comes back: the next repair deletes its stale shard.
    cluster.restart(&dead).await;
    cluster.restart(&shard_node(&loc, 2)).await;
    let store = cluster.store(policy.clone()).await;
    let report = store.repair_once(&keep_recorded).await.unwrap();
    assert_eq!(report.removed, 1, "{report:?}");
    assert!(!cluster.node(&dead).holds(&id));
    let last = location(&store, &id).await.unwrap();
    assert!(last.removing.is_empty());
    assert_eq!(sorted(cluster.holders(&id)), sorted(last.nodes.clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_nodes_shard_moves_as_it_is_and_compliance_counts_shards() {
    let cluster = Cluster::start(None).await;
    let policy = anywhere_ec(2, 1);
    let store = cluster.store(policy.clone()).await;
    let id = write_blob(&store, &target(&policy, Some(SIZE)), 13, SIZE)
        .await
        .unwrap();
    let loc = location(&store, &id).await.unwrap();
    let report = store.compliance("b", &policy).await.unwrap();
    assert!(report.compliant, "{report:?}");
    let drained = shard_node(&loc, 2);
    let spare: Vec<String> = ["de-1-n1", "fr-1-n1", "fr-2-n1", "us-1-n1"]
        .into_iter()
        .map(str::to_owned)
        .filter(|n| !loc.nodes.contains(n))
        .collect();
    let on_drained = store.replicas_on(&drained).await.unwrap();
    assert_eq!(on_drained.replicas, 1);
    assert_eq!(on_drained.bytes, shard_len(SIZE, 2));
    let shard_bytes = std::fs::read(blob_file(&cluster, &drained, &id)).unwrap();
    store.set_node_draining(&drained, true).await.unwrap();
    let report = store.compliance("b", &policy).await.unwrap();
    assert_eq!(report.replicas_to_move, 1, "{report:?}");
    assert!(report.issues[0].reason.contains("shard on"), "{report:?}");
    let log = RecordingLog::default();
    let repaired = store
        .repair_once_logged(&keep_recorded, &log)
        .await
        .unwrap();
    assert_eq!((repaired.copied, repaired.removed), (1, 1), "{repaired:?}");
    let after = location(&store, &id).await.unwrap();
    assert_eq!(shard_node(&after, 2), spare[0]);
    assert!(after.removing.is_empty());
    assert!(cluster.node(&drained).files().is_empty());
    // The very bytes of the shard moved.
    assert_eq!(
        std::fs::read(blob_file(&cluster, &spare[0], &id)).unwrap(),
        shard_bytes
    );
    let events = log.take();
    let kinds: Vec<(ReplicaEventKind, Option<u32>)> =
        events.iter().map(|e| (e.kind, e.shard)).collect();
    assert_eq!(
        kinds,
        [
            (ReplicaEventKind::Migrate, Some(2)),
            (ReplicaEventKind::Remove, Some(2))
        ]
    );
    assert_eq!(store.replicas_on(&drained).await.unwrap().replicas, 0);
    assert_reads(&store, &id, 13, SIZE, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_compliant_node_left_repair_changes_nothing_and_reads_still_work() {
    let mut cluster = Cluster::start(None).await;
    let policy = eu_ec(2, 1);
    let store = cluster.store(policy.clone()).await;
    let id = write_blob(&store, &target(&policy, Some(SIZE)), 3, SIZE)
        .await
        .unwrap();
    let loc = location(&store, &id).await.unwrap();
    cluster.kill("de-1-n1");
    let store = cluster.store(policy.clone()).await;
    let report = store.repair_once(&keep_recorded).await.unwrap();
    assert_eq!((report.copied, report.failed_count), (0, 1), "{report:?}");
    assert!(
        report.failures[0].1.contains("no compliant placement"),
        "{report:?}"
    );
    assert_eq!(location(&store, &id).await.unwrap(), loc);
    assert!(cluster.node("us-1-n1").files().is_empty());
    assert_reads(&store, &id, 3, SIZE, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ec_write_that_cannot_be_placed_is_refused_and_writes_nothing() {
    let mut cluster = Cluster::start(None).await;
    // 2+2 needs four EU nodes; there are three.
    let policy = eu_ec(2, 2);
    let store = cluster.store(policy.clone()).await;
    let e = write_blob(&store, &target(&policy, Some(MIB)), 1, MIB)
        .await
        .unwrap_err();
    let refusal = e.placement_refusal().unwrap();
    assert!(matches!(
        refusal.reason.downcast_ref::<PlacementError>().unwrap(),
        PlacementError::NotEnoughNodes { .. }
    ));
    // 2+1 with one EU node down: refused, not placed on us-1.
    cluster.kill("fr-2-n1");
    let policy = eu_ec(2, 1);
    let store = cluster.store(policy.clone()).await;
    let e = write_blob(&store, &target(&policy, None), 1, MIB)
        .await
        .unwrap_err();
    assert!(e.placement_refusal().is_some(), "{e}");
    for node in ["fr-1-n1", "de-1-n1", "us-1-n1"] {
        assert!(cluster.node(node).files().is_empty(), "{node}");
    }
}

/// Write and read throughput of a 64 MiB blob, erasure-coded 2+1 against 2
/// whole replicas, in this in-process cluster. Prints figures, asserts none
/// (timing is not a test); run with
/// `cargo test --release -p nuage-cluster --test erasure -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn measure_throughput() {
    let mut cluster = Cluster::start(None).await;
    let size = 64 * MIB;
    for (name, policy) in [
        ("replicas 2", eu(2)),
        ("ec 2+1", eu_ec(2, 1)),
        ("ec 2+2", anywhere_ec(2, 2)),
    ] {
        let store = cluster.store(policy.clone()).await;
        let start = std::time::Instant::now();
        let id = write_blob(&store, &target(&policy, Some(size)), 1, size)
            .await
            .unwrap();
        let write = start.elapsed();
        let start = std::time::Instant::now();
        let mut stream = store.read(&id, 0, size);
        let mut got = 0u64;
        while let Some(chunk) = stream.try_next().await.unwrap() {
            got += chunk.len() as u64;
        }
        let read = start.elapsed();
        assert_eq!(got, size);
        let disk: u64 = cluster
            .holders(&id)
            .iter()
            .map(|n| {
                std::fs::metadata(blob_file(&cluster, n, &id))
                    .unwrap()
                    .len()
            })
            .sum();
        #[allow(clippy::cast_precision_loss)]
        let mbs = |d: Duration| size as f64 / MIB as f64 / d.as_secs_f64();
        eprintln!(
            "{name}: write {:.0} MiB/s, read {:.0} MiB/s, {:.2} x the blob on disk",
            mbs(write),
            mbs(read),
            disk as f64 / size as f64
        );
        store.delete(&id).await.unwrap();
    }
    // Degraded: a data shard's node down, every stripe decoded.
    let policy = eu_ec(2, 1);
    let store = cluster.store(policy.clone()).await;
    let id = write_blob(&store, &target(&policy, Some(size)), 1, size)
        .await
        .unwrap();
    cluster.kill(&shard_node(&location(&store, &id).await.unwrap(), 0));
    let store = cluster.store(policy.clone()).await;
    let start = std::time::Instant::now();
    let mut stream = store.read(&id, 0, size);
    let mut got = 0u64;
    while let Some(chunk) = stream.try_next().await.unwrap() {
        got += chunk.len() as u64;
    }
    let read = start.elapsed();
    assert_eq!(got, size);
    #[allow(clippy::cast_precision_loss)]
    let mbs = size as f64 / MIB as f64 / read.as_secs_f64();
    eprintln!("ec 2+1, a data shard's node down (decoding): read {mbs:.0} MiB/s");
    assert_eq!(
        read_sha(&store, &id, size).await.unwrap(),
        sha_of_pattern(1, size)
    );
}
