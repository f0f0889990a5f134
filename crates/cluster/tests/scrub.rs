//! The scrubber against four real nodes over mutual TLS: bytes flipped on a
//! node's disk, a wiped disk, orphan files and a blob with no good replica
//! left, every outcome checked on the nodes' disks and through reads.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nuage_cluster::{
    BlobLocation, ClusterBlobStore, LocationIndex, ReplicaEvent, ReplicaEventKind, ScrubReport,
};
use nuage_node::{NodeClient, NodeClientConfig, NodeIdentity, Role};
use nuage_placement::ResidencyPolicy;
use std::path::{Path, PathBuf};
use std::time::Duration;

const FR1: &str = "fr-1-n1";
const FR2: &str = "fr-2-n1";
const DE1: &str = "de-1-n1";
const HOUR: Duration = Duration::from_secs(3600);
/// Where data byte `i` (< 256 KiB) of a blob file is: after the 16-byte header.
const HEADER_BYTES: u64 = 16;

/// Each blob keeps the policy recorded with it.
fn keep_recorded(_: &BlobLocation) -> Option<ResidencyPolicy> {
    None
}

/// A repair log that keeps every event with the nodes the index listed for
/// its blob at the moment it was recorded.
struct RecordingLog {
    index: LocationIndex,
    events: std::sync::Mutex<Vec<(ReplicaEvent, Vec<String>)>>,
}

impl RecordingLog {
    fn new(store: &ClusterBlobStore) -> Self {
        Self {
            index: store.index().clone(),
            events: std::sync::Mutex::default(),
        }
    }

    fn take(&self) -> Vec<(ReplicaEvent, Vec<String>)> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

impl nuage_cluster::RepairLog for RecordingLog {
    fn record<'a>(
        &'a self,
        events: &'a [ReplicaEvent],
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            for event in events {
                let listed = self
                    .index
                    .get(&event.blob_id)
                    .await
                    .unwrap()
                    .map(|e| sorted(e.location.nodes))
                    .unwrap_or_default();
                self.events.lock().unwrap().push((event.clone(), listed));
            }
            Ok(())
        })
    }
}

async fn scrub(store: &ClusterBlobStore, log: &RecordingLog, grace: Duration) -> ScrubReport {
    let report = store
        .scrub_once_logged(&keep_recorded, log, grace)
        .await
        .unwrap();
    eprintln!("{report:?}");
    report
}

/// The blob's final file on `node` (never a temporary one).
fn blob_file(cluster: &Cluster, node: &str, blob_id: &str) -> PathBuf {
    let files = cluster.node(node).files_of(blob_id);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0]
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .ends_with("blobs")
    );
    files[0].clone()
}

/// Flips one bit of the data byte at `at` (in the first block) on disk.
fn flip_byte(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = usize::try_from(HEADER_BYTES + at).unwrap();
    bytes[i] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

/// A client of `node` with the gateway's certificate, as a tool would have.
fn node_client(cluster: &Cluster, node: &str) -> NodeClient {
    let test_node = cluster.node(node);
    NodeClient::new(NodeClientConfig::new(
        format!("127.0.0.1:{}", test_node.port),
        NodeIdentity::new(node, &test_node.site, Role::Storage).unwrap(),
        cluster.nodes.gateway_material(),
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_discarded_and_replaced_on_a_compliant_node() {
    let cluster = Cluster::start(None).await;
    let store = cluster.store(fr_only()).await;
    let len = 3 * MIB + 4321;
    let id = write_blob(&store, &target(&fr_only(), Some(len)), 7, len)
        .await
        .unwrap();
    let sha = sha_of_pattern(7, len);
    assert_eq!(sorted(cluster.holders(&id)), [FR1, FR2]);
    let log = RecordingLog::new(&store);

    // A clean store: every replica verifies, nothing changes.
    let clean = scrub(&store, &log, HOUR).await;
    assert_eq!(
        clean,
        ScrubReport {
            scanned: 1,
            verified: 2,
            bytes_verified: 2 * len,
            ..ScrubReport::default()
        }
    );
    assert!(log.take().is_empty());

    // One bit flipped in fr-1's copy.
    let corrupt = blob_file(&cluster, FR1, &id);
    flip_byte(&corrupt, 1000);
    let corrupted_bytes = std::fs::read(&corrupt).unwrap();
    let report = scrub(&store, &log, HOUR).await;
    assert_eq!(report.scanned, 1);
    assert_eq!(report.verified, 1, "{report:?}");
    assert_eq!(report.bytes_verified, len);
    assert_eq!(report.bad, 1, "{report:?}");
    assert_eq!(report.replaced, 1, "{report:?}");
    assert_eq!(report.orphans_removed, 0);
    assert_eq!(report.failed_count, 0, "{report:?}");

    // The log saw the discard while the index still listed fr-1, then the
    // copy that replaced it.
    let events = log.take();
    let kinds: Vec<ReplicaEventKind> = events.iter().map(|(e, _)| e.kind).collect();
    assert_eq!(
        kinds,
        [ReplicaEventKind::Discard, ReplicaEventKind::Repair],
        "{events:?}"
    );
    let (discard, listed) = &events[0];
    assert_eq!(listed, &[FR1, FR2], "the index changed before the log");
    assert_eq!(discard.blob_id, id);
    assert_eq!(discard.tenant.as_deref(), Some("acme"));
    assert_eq!(discard.bucket.as_deref(), Some("b"));
    assert_eq!(discard.from.len(), 1);
    assert_eq!(
        (
            discard.from[0].node.as_str(),
            discard.from[0].country.as_str()
        ),
        (FR1, "FR")
    );
    assert!(discard.to.is_empty());
    assert!(
        discard
            .reason
            .starts_with("checksum mismatch on node fr-1-n1"),
        "{}",
        discard.reason
    );
    let (repair, listed) = &events[1];
    assert_eq!(listed, &[FR2], "the discard was recorded before the copy");
    assert_eq!(repair.to.len(), 1);
    assert_eq!(repair.to[0].country, "FR", "{repair:?}");

    // Two replicas again, on the French nodes only (the policy's only
    // choice), the corrupt bytes gone, and reads right.
    let entry = location(&store, &id).await.unwrap();
    assert_eq!(sorted(entry.nodes.clone()), [FR1, FR2]);
    assert!(entry.removing.is_empty(), "{entry:?}");
    assert_eq!(sorted(cluster.holders(&id)), [FR1, FR2]);
    cluster.assert_nothing_outside_france();
    let replaced = std::fs::read(blob_file(&cluster, FR1, &id)).unwrap();
    assert_ne!(replaced, corrupted_bytes, "the corrupt copy is still there");
    assert_eq!(read_sha(&store, &id, len).await.unwrap(), sha);

    // And the next pass finds nothing wrong.
    let again = scrub(&store, &log, HOUR).await;
    assert_eq!((again.verified, again.bad, again.failed_count), (2, 0, 0));
    assert!(log.take().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_disk_is_refilled_by_one_pass() {
    let cluster = Cluster::start(None).await;
    let store = cluster.store(fr_only()).await;
    let mut ids = Vec::new();
    for seed in 0..4u64 {
        let len = 200_000 + seed * 150_000;
        let id = write_blob(&store, &target(&fr_only(), Some(len)), 20 + seed, len)
            .await
            .unwrap();
        ids.push((id, len, sha_of_pattern(20 + seed, len)));
    }
    // Every blob file of fr-2 removed behind the node's back.
    let wiped: Vec<PathBuf> = cluster
        .node(FR2)
        .files()
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "blobs"))
        .collect();
    assert_eq!(wiped.len(), ids.len());
    for path in &wiped {
        std::fs::remove_file(path).unwrap();
    }
    for (id, _, _) in &ids {
        assert_eq!(cluster.holders(id), [FR1]);
    }

    let log = RecordingLog::new(&store);
    let report = scrub(&store, &log, HOUR).await;
    let n = ids.len() as u64;
    assert_eq!(
        (report.scanned, report.verified, report.bad, report.replaced),
        (n, n, n, n),
        "{report:?}"
    );
    assert_eq!(report.failed_count, 0, "{report:?}");
    let events = log.take();
    let discards: Vec<&ReplicaEvent> = events
        .iter()
        .map(|(e, _)| e)
        .filter(|e| e.kind == ReplicaEventKind::Discard)
        .collect();
    assert_eq!(discards.len(), ids.len());
    for event in discards {
        assert_eq!(event.reason, "replica missing on node fr-2-n1");
    }
    for (id, len, sha) in &ids {
        assert_eq!(sorted(cluster.holders(id)), [FR1, FR2]);
        let entry = location(&store, id).await.unwrap();
        assert_eq!(sorted(entry.nodes), [FR1, FR2]);
        assert_eq!(read_sha(&store, id, *len).await.unwrap(), *sha);
    }
    cluster.assert_nothing_outside_france();
    // The refilled copies verify. (Spawned, as the gateway's scrub loop
    // runs it: the pass must be a `Send` future.)
    let spawned = store.clone();
    let again = tokio::spawn(async move {
        spawned
            .scrub_once_logged(&keep_recorded, &nuage_cluster::NoRepairLog, HOUR)
            .await
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!((again.verified, again.bad), (2 * n, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_removed_only_once_older_than_the_grace() {
    let cluster = Cluster::start(None).await;
    let store = cluster.store(eu(2)).await;
    let policy = fr_only();
    let len = 300_000;
    let id = write_blob(&store, &target(&policy, Some(len)), 31, len)
        .await
        .unwrap();
    // A copy of a tenant's blob no record lists (a repair copy that was
    // never recorded), on de-1.
    let data = bytes::Bytes::from(pattern(31, 0, usize::try_from(len).unwrap()));
    node_client(&cluster, DE1)
        .write_stream(&id, Some(len), futures::stream::iter([data]))
        .await
        .unwrap();
    // A bare file no index entry names at all, on fr-2.
    let bare = "00ab".repeat(8);
    node_client(&cluster, FR2)
        .write_stream(
            &bare,
            None,
            futures::stream::iter([bytes::Bytes::from_static(b"nobody's")]),
        )
        .await
        .unwrap();
    assert_eq!(sorted(cluster.holders(&id)), [DE1, FR1, FR2]);
    assert_eq!(cluster.holders(&bare), [FR2]);

    // Younger than the grace: kept.
    let log = RecordingLog::new(&store);
    let report = scrub(&store, &log, HOUR).await;
    assert_eq!((report.verified, report.bad), (2, 0));
    assert_eq!(report.orphans_removed, 0, "{report:?}");
    assert_eq!(sorted(cluster.holders(&id)), [DE1, FR1, FR2]);
    assert_eq!(cluster.holders(&bare), [FR2]);
    assert!(log.take().is_empty());

    // With no grace: both go, the recorded replicas stay.
    let report = scrub(&store, &log, Duration::ZERO).await;
    assert_eq!(report.orphans_removed, 2, "{report:?}");
    assert_eq!(report.failed_count, 0, "{report:?}");
    assert_eq!(sorted(cluster.holders(&id)), [FR1, FR2]);
    assert!(cluster.holders(&bare).is_empty());
    cluster.assert_nothing_outside_france();
    let entry = location(&store, &id).await.unwrap();
    assert_eq!(sorted(entry.nodes), [FR1, FR2]);
    assert_eq!(
        read_sha(&store, &id, len).await.unwrap(),
        sha_of_pattern(31, len)
    );
    // Only the tenant's orphan is in its log (the bare one is traced).
    let events = log.take();
    assert_eq!(events.len(), 1, "{events:?}");
    let (event, listed) = &events[0];
    assert_eq!(event.kind, ReplicaEventKind::Remove);
    assert_eq!(event.reason, "orphan");
    assert_eq!(event.blob_id, id);
    assert_eq!(event.tenant.as_deref(), Some("acme"));
    assert_eq!(
        (event.from[0].node.as_str(), event.from[0].country.as_str()),
        (DE1, "DE")
    );
    assert_eq!(listed, &[FR1, FR2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_replica_corrupt_nothing_is_deleted_and_the_loss_is_reported() {
    let cluster = Cluster::start(None).await;
    let store = cluster.store(fr_only()).await;
    let len = MIB;
    let id = write_blob(&store, &target(&fr_only(), Some(len)), 41, len)
        .await
        .unwrap();
    let before = location(&store, &id).await.unwrap();
    let mut on_disk = Vec::new();
    for node in [FR1, FR2] {
        let path = blob_file(&cluster, node, &id);
        flip_byte(&path, 77);
        on_disk.push((path.clone(), std::fs::read(&path).unwrap()));
    }
    let log = RecordingLog::new(&store);
    let report = scrub(&store, &log, HOUR).await;
    assert_eq!(
        (report.verified, report.bad, report.replaced),
        (0, 2, 0),
        "{report:?}"
    );
    assert_eq!(report.failed_count, 1, "{report:?}");
    assert_eq!(report.failures[0].0, id);
    assert!(
        report.failures[0].1.starts_with("no replica verifies good"),
        "{report:?}"
    );
    assert!(log.take().is_empty(), "nothing is discarded");
    // Both (corrupt) copies are where they were, and the entry unchanged.
    for (path, bytes) in &on_disk {
        assert_eq!(&std::fs::read(path).unwrap(), bytes);
    }
    assert_eq!(location(&store, &id).await.unwrap(), before);
    // Reads fail rather than return wrong bytes.
    assert!(read_sha(&store, &id, len).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_node_does_not_answer_is_not_discarded() {
    let mut cluster = Cluster::start(None).await;
    let store = cluster.store(fr_only()).await;
    let len = 500_000;
    let id = write_blob(&store, &target(&fr_only(), Some(len)), 51, len)
        .await
        .unwrap();
    let before = location(&store, &id).await.unwrap();
    // fr-2 dies after the last poll: the store still thinks it up, its
    // verification cannot connect.
    cluster.kill(FR2);
    let log = RecordingLog::new(&store);
    let report = scrub(&store, &log, Duration::ZERO).await;
    assert_eq!((report.verified, report.bad), (1, 0), "{report:?}");
    assert_eq!(report.failed_count, 0, "{report:?}");
    assert!(log.take().is_empty());
    assert_eq!(location(&store, &id).await.unwrap(), before);
    // Back, polled: both replicas verify.
    cluster.restart(FR2).await;
    store.poll_nodes().await;
    let report = scrub(&store, &log, Duration::ZERO).await;
    assert_eq!((report.verified, report.bad), (2, 0), "{report:?}");
    assert_eq!(sorted(cluster.holders(&id)), [FR1, FR2]);
}
