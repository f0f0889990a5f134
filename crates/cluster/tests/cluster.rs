//! The replicated blob store against real storage nodes: four nodes served
//! in-process over mutual TLS (fresh cluster CA), each in its own Tokio
//! runtime so that a test can kill one outright (its runtime shut down: every
//! connection drops mid-request, as when the machine dies), each with its own
//! data directory, in sites fr-1 and fr-2 (France), de-1 (Germany) and us-1
//! (United States); the location index in an embedded metadata store.
//! Residency is checked on the nodes' disks, not through the API.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures::TryStreamExt as _;
use nuage_blob::{BlobError, BlobStore as _, PlacementTarget};
use nuage_cluster::BlobLocation;
use nuage_placement::PlacementError;

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_france_only_blob_lands_on_the_french_nodes_only() {
    let cluster = Cluster::start(None).await;
    let store = cluster.store(eu(3)).await;
    let total = 40 * MIB;
    let id = write_blob(&store, &target(&fr_only(), Some(total)), 1, total)
        .await
        .unwrap();
    let loc = location(&store, &id).await.unwrap();
    assert_eq!(sorted(loc.nodes.clone()), ["fr-1-n1", "fr-2-n1"]);
    assert_eq!(loc.size, total);
    assert_eq!(loc.sha256, sha_of_pattern(1, total));
    assert_eq!(read_sha(&store, &id, total).await.unwrap(), loc.sha256);
    // A range from the middle.
    let range: Vec<Bytes> = store
        .read(&id, 5 * MIB + 7, 1000)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(range.concat(), pattern(1, 5 * MIB + 7, 1000));
    // Every disk: the blob's file on both French nodes, nothing anywhere else.
    assert_eq!(cluster.holders(&id), ["fr-1-n1", "fr-2-n1"]);
    cluster.assert_nothing_outside_france();
    // Unknown length (no exact_len) places the same way.
    let id2 = write_blob(&store, &target(&fr_only(), None), 2, 3 * MIB + 5)
        .await
        .unwrap();
    assert_eq!(cluster.holders(&id2), ["fr-1-n1", "fr-2-n1"]);
    cluster.assert_nothing_outside_france();
    // A policy that does not parse writes nothing.
    let bad = PlacementTarget {
        policy_json: Some(r#"{"allowed_countries":["FR"]}"#.into()),
        ..PlacementTarget::default()
    };
    match store.create_placed(&bad).await.err().unwrap() {
        BlobError::Io(e) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}"),
        other => panic!("{other}"),
    }
    let listed: Vec<String> = sorted(
        store
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.blob_id)
            .collect(),
    );
    assert_eq!(listed, sorted(vec![id.clone(), id2.clone()]));
}

/// The write must fail before any byte moves, with the placement error.
fn assert_refused(e: &BlobError, full: bool) {
    let refusal = e
        .placement_refusal()
        .unwrap_or_else(|| panic!("not a placement refusal: {e}"));
    assert_eq!(refusal.full, full, "{refusal}");
    assert!(!refusal.permanent, "{refusal}");
    let reason = refusal.reason.downcast_ref::<PlacementError>().unwrap();
    assert!(
        matches!(
            reason,
            PlacementError::NotEnoughNodes { .. } | PlacementError::NotEnoughSites { .. }
        ),
        "{reason:?}"
    );
    let text = e.to_string();
    assert!(text.contains("FR"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn france_down_refuses_writes_and_nothing_lands_elsewhere() {
    let mut cluster = Cluster::start(None).await;
    cluster.kill("fr-1-n1");
    cluster.kill("fr-2-n1");
    let store = cluster.store(fr_only()).await;
    for exact_len in [Some(40 * MIB), None] {
        let e = write_blob(&store, &target(&fr_only(), exact_len), 3, 40 * MIB)
            .await
            .unwrap_err();
        assert_refused(&e, false);
    }
    // Through the plain `create` (the default policy) too.
    let e = store.create().await.err().unwrap();
    assert_refused(&e, false);
    cluster.assert_nothing_outside_france();
    assert!(store.list().await.unwrap().is_empty());
    // Only one French node down: min_sites 2 cannot be met either.
    let mut cluster = Cluster::start(None).await;
    cluster.kill("fr-2-n1");
    let store = cluster.store(fr_only()).await;
    let e = write_blob(&store, &target(&fr_only(), None), 3, MIB)
        .await
        .unwrap_err();
    assert_refused(&e, false);
    cluster.assert_nothing_outside_france();
    assert!(cluster.node("fr-1-n1").files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn france_full_refuses_writes_and_nothing_lands_elsewhere() {
    // French nodes capped at 1 MiB.
    let cluster = Cluster::start(Some(MIB)).await;
    let store = cluster.store(fr_only()).await;
    for exact_len in [Some(40 * MIB), None] {
        let e = write_blob(&store, &target(&fr_only(), exact_len), 4, 40 * MIB)
            .await
            .unwrap_err();
        assert_refused(&e, true);
    }
    cluster.assert_nothing_outside_france();
    for id in ["fr-1-n1", "fr-2-n1"] {
        assert!(cluster.node(id).files().is_empty());
    }
    assert!(store.list().await.unwrap().is_empty());
}

/// A blob of unknown length placed on French nodes with room for the
/// placement's guess but not for all of it: the nodes refuse mid-write,
/// and the write fails as a full refusal (S3 503 `SlowDown`), nothing kept
/// anywhere, no node named to the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn french_nodes_filling_up_mid_write_refuse_it_as_full() {
    let room = nuage_cluster::limits::UNKNOWN_LEN_PLACEMENT_BYTES + 4 * MIB;
    let cluster = Cluster::start(Some(room)).await;
    let store = cluster.store(fr_only()).await;
    let e = write_blob(&store, &target(&fr_only(), None), 6, room + 8 * MIB)
        .await
        .unwrap_err();
    let refusal = e
        .placement_refusal()
        .unwrap_or_else(|| panic!("not a placement refusal: {e}"));
    assert!(refusal.full && !refusal.permanent, "{refusal}");
    let text = refusal.to_string();
    assert!(
        text.contains("FR") && text.contains("ran out of space"),
        "{text}"
    );
    assert!(
        !text.contains("fr-1") && !text.contains("127.0.0.1"),
        "{text}"
    );
    cluster.assert_nothing_outside_france();
    for id in ["fr-1-n1", "fr-2-n1"] {
        assert!(cluster.node(id).files().is_empty(), "{id} kept nothing");
    }
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eu_blob_with_three_replicas_never_lands_in_the_us() {
    let cluster = Cluster::start(None).await;
    let store = cluster.store(eu(3)).await;
    for seed in 0..4 {
        let id = write_blob(&store, &target(&eu(3), None), 10 + seed, 2 * MIB + seed)
            .await
            .unwrap();
        assert_eq!(cluster.holders(&id), ["de-1-n1", "fr-1-n1", "fr-2-n1"]);
    }
    assert!(cluster.node("us-1-n1").files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_dead_replica_and_delete_finishes_later() {
    let mut cluster = Cluster::start(None).await;
    let store = cluster.store(fr_only()).await;
    let total = 9 * MIB + 3;
    let id = write_blob(&store, &target(&fr_only(), Some(total)), 5, total)
        .await
        .unwrap();
    let sha = sha_of_pattern(5, total);
    // Kill the replica a read tries first; the store has not noticed.
    let first = location(&store, &id).await.unwrap().nodes[0].clone();
    let other = if first == "fr-1-n1" {
        "fr-2-n1"
    } else {
        "fr-1-n1"
    };
    cluster.kill(&first);
    assert_eq!(read_sha(&store, &id, total).await.unwrap(), sha);
    // And after a poll marked it down.
    store.poll_nodes().await;
    assert_eq!(read_sha(&store, &id, total).await.unwrap(), sha);
    // Delete: the surviving replica goes; the dead node's copy stays listed
    // in a deleted entry (never read or listed) for a later repair.
    store.delete(&id).await.unwrap();
    assert!(cluster.node(other).files_of(&id).is_empty());
    let tomb = location(&store, &id).await.unwrap();
    assert!(tomb.deleted);
    assert_eq!(tomb.nodes, std::slice::from_ref(&first));
    assert!(store.list().await.unwrap().is_empty());
    let e = store.read(&id, 0, 1).try_next().await.unwrap_err();
    assert!(matches!(e, BlobError::NotFound(_)), "{e}");
    // Deleting again is not an error.
    store.delete(&id).await.unwrap();
    // The node comes back: a repair removes its copy and the entry.
    let none = |_: &BlobLocation| None;
    let report = store.repair_once(&none).await.unwrap();
    assert_eq!(report.removed, 0, "still down: {report:?}");
    assert_eq!(cluster.node(&first).files_of(&id).len(), 1);
    cluster.restart(&first).await;
    assert!(store.poll_nodes().await.is_empty());
    let report = store.repair_once(&none).await.unwrap();
    assert_eq!(report.removed, 1, "{report:?}");
    assert!(cluster.node(&first).files_of(&id).is_empty());
    assert!(location(&store, &id).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_dying_mid_write_fails_the_write_and_leaves_nothing() {
    let mut cluster = Cluster::start(None).await;
    let store = cluster.store(fr_only()).await;
    let acked = write_blob(&store, &target(&fr_only(), None), 8, 3 * MIB)
        .await
        .unwrap();
    let total = 64 * MIB;
    let mut writer = store
        .create_placed(&target(&fr_only(), Some(total)))
        .await
        .unwrap();
    let id = writer.blob_id().to_owned();
    let mut offset = 0;
    let mut error = None;
    while offset < total {
        if offset == 8 * MIB {
            // Both French nodes are receiving it now.
            assert_eq!(cluster.holders(&id), ["fr-1-n1", "fr-2-n1"]);
            cluster.kill("fr-1-n1");
        }
        let len = MIB.min(total - offset);
        if let Err(e) = writer
            .write(Bytes::from(pattern(6, offset, len as usize)))
            .await
        {
            error = Some(e);
            break;
        }
        offset += len;
    }
    let error = match error {
        Some(e) => e,
        None => writer.finish().await.unwrap_err(),
    };
    let text = error.to_string();
    assert!(text.contains("fr-1-n1"), "{text}");
    // A node lost mid-write: transient (S3 503), not a placement refusal.
    assert!(error.unavailable().is_some(), "not Unavailable: {error:?}");
    assert!(error.placement_refusal().is_none(), "{error}");
    // The surviving replica discarded its partial copy; nothing is indexed.
    cluster.node("fr-2-n1").wait_no_files_of(&id).await;
    assert!(location(&store, &id).await.is_none());
    let listed: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.blob_id)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&acked));
    cluster.assert_nothing_outside_france();
    // What was acknowledged before stays readable, from the survivor.
    assert_eq!(
        read_sha(&store, &acked, 3 * MIB).await.unwrap(),
        sha_of_pattern(8, 3 * MIB)
    );
    // The dead node's partial file is only in its tmp/ (removed when it
    // restarts); never under blobs/.
    for file in cluster.node("fr-1-n1").files_of(&id) {
        assert!(
            file.parent().unwrap().ends_with("tmp"),
            "{}",
            file.display()
        );
    }
    // The next write sees fr-1 down and is refused: FR needs two sites.
    let e = write_blob(&store, &target(&fr_only(), None), 7, MIB)
        .await
        .unwrap_err();
    assert!(e.placement_refusal().is_some(), "{e}");
    // Restarted, the dead node drops its partial file.
    cluster.restart("fr-1-n1").await;
    assert!(cluster.node("fr-1-n1").files_of(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_restores_replicas_on_compliant_nodes_only() {
    let mut cluster = Cluster::start(None).await;
    let store = cluster.store(eu(2)).await;
    let keep_recorded = |_: &BlobLocation| None;
    // Several blobs, so that some have a replica on the node that dies.
    let mut ids = Vec::new();
    for seed in 0..6 {
        ids.push(
            write_blob(&store, &target(&eu(2), None), 20 + seed, MIB + seed)
                .await
                .unwrap(),
        );
    }
    assert!(store.repair_once(&keep_recorded).await.unwrap().repaired == 0);
    let victim = "fr-1-n1";
    let hit: Vec<String> = ids
        .iter()
        .filter(|id| cluster.node(victim).files_of(id).len() == 1)
        .cloned()
        .collect();
    assert!(!hit.is_empty(), "no blob on {victim}");
    cluster.kill(victim);
    store.poll_nodes().await;
    let report = store.repair_once(&keep_recorded).await.unwrap();
    assert_eq!(report.failed_count, 0, "{report:?}");
    assert_eq!(report.copied, hit.len() as u64, "{report:?}");
    for (seed, id) in ids.iter().enumerate() {
        let loc = location(&store, id).await.unwrap();
        let live: Vec<&String> = loc.nodes.iter().filter(|n| *n != victim).collect();
        assert_eq!(live.len(), 2, "{loc:?}");
        // Two live EU replicas on disk, never the US.
        let holders: Vec<String> = cluster
            .holders(id)
            .into_iter()
            .filter(|n| n != victim)
            .collect();
        assert_eq!(holders.len(), 2, "{id}: {holders:?}");
        assert!(!holders.contains(&"us-1-n1".to_owned()));
        let len = MIB + seed as u64;
        assert_eq!(read_sha(&store, id, len).await.unwrap(), loc.sha256);
    }
    assert!(cluster.node("us-1-n1").files().is_empty());
    // A second pass has nothing to do.
    let again = store.repair_once(&keep_recorded).await.unwrap();
    assert_eq!((again.copied, again.removed), (0, 0), "{again:?}");
    // The node returns: its old replicas are surplus and go.
    cluster.restart(victim).await;
    assert!(store.poll_nodes().await.is_empty());
    let back = store.repair_once(&keep_recorded).await.unwrap();
    assert_eq!(back.failed_count, 0, "{back:?}");
    assert_eq!(
        (back.copied, back.removed),
        (0, hit.len() as u64),
        "{back:?}"
    );
    for id in &ids {
        let loc = location(&store, id).await.unwrap();
        assert_eq!(loc.nodes.len(), 2, "{loc:?}");
        assert!(loc.removing.is_empty());
        assert_eq!(sorted(cluster.holders(id)), sorted(loc.nodes.clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowing_eu_to_france_moves_replicas_out_of_germany() {
    let cluster = Cluster::start(None).await;
    let store = cluster.store(eu(2)).await;
    let mut ids = Vec::new();
    for seed in 0..6 {
        ids.push(
            write_blob(&store, &target(&eu(2), None), 30 + seed, MIB + seed)
                .await
                .unwrap(),
        );
    }
    let in_germany = ids
        .iter()
        .filter(|id| !cluster.node("de-1-n1").files_of(id).is_empty())
        .count();
    assert!(in_germany > 0, "no blob in Germany");
    // The bucket's policy narrows to France.
    let narrowed = |_: &BlobLocation| Some(fr_only());
    let report = store.repair_once(&narrowed).await.unwrap();
    assert_eq!(report.failed_count, 0, "{report:?}");
    assert_eq!(report.removed, in_germany as u64, "{report:?}");
    for (seed, id) in ids.iter().enumerate() {
        let loc = location(&store, id).await.unwrap();
        assert_eq!(sorted(loc.nodes.clone()), ["fr-1-n1", "fr-2-n1"], "{loc:?}");
        assert!(loc.removing.is_empty());
        assert_eq!(loc.policy, fr_only());
        assert_eq!(cluster.holders(id), ["fr-1-n1", "fr-2-n1"]);
        assert_eq!(
            read_sha(&store, id, MIB + seed as u64).await.unwrap(),
            loc.sha256
        );
    }
    cluster.assert_nothing_outside_france();
}

/// A repair log that keeps the events, noting for each whether de-1 still
/// held the blob when it was recorded; or refuses everything.
struct RecordingLog<'a> {
    cluster: &'a Cluster,
    refuse: bool,
    events: std::sync::Mutex<Vec<(nuage_cluster::ReplicaEvent, bool)>>,
}

impl nuage_cluster::RepairLog for RecordingLog<'_> {
    fn record<'a>(
        &'a self,
        events: &'a [nuage_cluster::ReplicaEvent],
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if self.refuse {
                return Err("the log is full".into());
            }
            let mut kept = self.events.lock().unwrap();
            for event in events {
                let on_de1 = !self
                    .cluster
                    .node("de-1-n1")
                    .files_of(&event.blob_id)
                    .is_empty();
                kept.push((event.clone(), on_de1));
            }
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_is_logged_before_any_replica_is_removed() {
    use nuage_cluster::ReplicaEventKind;
    let cluster = Cluster::start(None).await;
    let store = cluster.store(eu(2)).await;
    let mut ids = Vec::new();
    for seed in 0..6 {
        ids.push(
            write_blob(&store, &target(&eu(2), None), 60 + seed, 100_000)
                .await
                .unwrap(),
        );
    }
    let german: Vec<&String> = ids
        .iter()
        .filter(|id| !cluster.node("de-1-n1").files_of(id).is_empty())
        .collect();
    assert!(!german.is_empty(), "no blob in Germany");
    let before: Vec<Vec<String>> = ids.iter().map(|id| sorted(cluster.holders(id))).collect();
    let narrowed = |_: &BlobLocation| Some(fr_only());

    // A log that refuses: nothing is recorded, removed, or left behind.
    let refusing = RecordingLog {
        cluster: &cluster,
        refuse: true,
        events: std::sync::Mutex::default(),
    };
    let report = store
        .repair_once_logged(&narrowed, &refusing)
        .await
        .unwrap();
    assert_eq!(report.removed, 0, "{report:?}");
    assert_eq!(report.failed_count, german.len() as u64, "{report:?}");
    let after: Vec<Vec<String>> = ids.iter().map(|id| sorted(cluster.holders(id))).collect();
    assert_eq!(after, before, "a refused log changes no replica");

    // A log that keeps: one migration and one removal per German blob, each
    // recorded while the German replica still existed.
    let log = RecordingLog {
        cluster: &cluster,
        refuse: false,
        events: std::sync::Mutex::default(),
    };
    let report = store.repair_once_logged(&narrowed, &log).await.unwrap();
    assert_eq!(report.failed_count, 0, "{report:?}");
    cluster.assert_nothing_outside_france();
    let events = log.events.into_inner().unwrap();
    for id in &german {
        let of: Vec<&(nuage_cluster::ReplicaEvent, bool)> =
            events.iter().filter(|(e, _)| &e.blob_id == *id).collect();
        let kinds: Vec<ReplicaEventKind> = of.iter().map(|(e, _)| e.kind).collect();
        assert_eq!(
            kinds,
            [ReplicaEventKind::Migrate, ReplicaEventKind::Remove],
            "{of:?}"
        );
        for (event, on_de1) in &of {
            assert!(
                on_de1,
                "logged after the German replica was removed: {event:?}"
            );
            assert_eq!(event.tenant.as_deref(), Some("acme"));
            assert_eq!(event.bucket.as_deref(), Some("b"));
            assert_eq!(event.from.len(), 1, "{event:?}");
            assert_eq!(
                (event.from[0].node.as_str(), event.from[0].country.as_str()),
                ("de-1-n1", "DE")
            );
            assert!(event.reason.starts_with("site not allowed"), "{event:?}");
        }
        let to = &of[0].0.to;
        assert_eq!(to.len(), 1);
        assert_eq!(to[0].country, "FR", "{to:?}");
        assert!(of[1].0.to.is_empty());
    }
    // Blobs already in France only had their recorded policy changed.
    assert_eq!(events.len(), 2 * german.len(), "{events:?}");
}
