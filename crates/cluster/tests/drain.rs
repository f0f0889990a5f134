//! Draining a node, node reports and a bucket's compliance, against the four
//! real nodes of `common` (fr-1, fr-2, de-1, us-1, mutual TLS, each in its own
//! runtime). Drains are stored in the metadata documents that several
//! gateways share: a second `ClusterBlobStore` over the same metadata store
//! stands for a second gateway, a new one for a restarted gateway. Where
//! replicas are is checked on the nodes' disks.
#![allow(clippy::unwrap_used)]

use nuage_blob::PlacementTarget;
use nuage_cluster::{BlobLocation, ClusterBlobStore, ClusterError, NodeReport};
use nuage_placement::NodeStatus;

mod common;
use common::*;

const DRAINED: &str = "fr-1-n1";

fn report<'a>(reports: &'a [NodeReport], node: &str) -> &'a NodeReport {
    reports.iter().find(|r| r.node == node).unwrap()
}

fn status(store: &ClusterBlobStore, node: &str) -> NodeStatus {
    store.node_states()[node].status
}

/// Every blob reads back whole and right.
async fn assert_all_readable(store: &ClusterBlobStore, blobs: &[(String, u64, u64)]) {
    for (id, seed, len) in blobs {
        assert_eq!(
            read_sha(store, id, *len).await.unwrap(),
            sha_of_pattern(*seed, *len),
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_empties_the_node_onto_compliant_nodes_for_every_gateway() {
    let cluster = Cluster::start(None).await;
    let a = cluster.store(eu(2)).await;
    let b = cluster.store(eu(2)).await;
    // EU blobs, until some have a replica on the node to drain.
    let mut blobs: Vec<(String, u64, u64)> = Vec::new();
    for seed in 0..20u64 {
        let len = 300_000 + seed;
        let id = write_blob(&a, &target(&eu(2), None), 100 + seed, len)
            .await
            .unwrap();
        blobs.push((id, 100 + seed, len));
        if blobs.len() >= 6 && blobs.iter().any(|(id, ..)| cluster.node(DRAINED).holds(id)) {
            break;
        }
    }
    let on_drained: Vec<(String, u64, u64)> = blobs
        .iter()
        .filter(|(id, ..)| cluster.node(DRAINED).holds(id))
        .cloned()
        .collect();
    assert!(!on_drained.is_empty(), "no blob on {DRAINED}");
    let before = a.replicas_on(DRAINED).await.unwrap();
    assert_eq!(before.replicas, on_drained.len() as u64, "{before:?}");
    assert_eq!(
        before.bytes,
        on_drained.iter().map(|(_, _, len)| len).sum::<u64>()
    );
    assert!(!before.draining);

    // Unknown nodes are refused, not taken for empty ones.
    for unknown in ["fr-1", "nope"] {
        let e = a.set_node_draining(unknown, true).await.unwrap_err();
        assert!(
            matches!(&e, ClusterError::UnknownNode(n) if n == unknown),
            "{e}"
        );
        let e = a.replicas_on(unknown).await.unwrap_err();
        assert!(
            matches!(&e, ClusterError::UnknownNode(n) if n == unknown),
            "{e}"
        );
    }

    // Drained through gateway A: applied there at once.
    a.set_node_draining(DRAINED, true).await.unwrap();
    assert_eq!(status(&a, DRAINED), NodeStatus::Draining);
    let reports = a.node_reports();
    assert_eq!(
        reports.iter().map(|r| r.node.as_str()).collect::<Vec<_>>(),
        ["de-1-n1", "fr-1-n1", "fr-2-n1", "us-1-n1"]
    );
    let drained = report(&reports, DRAINED);
    assert_eq!(
        (drained.status.as_str(), drained.draining),
        ("draining", true)
    );
    assert_eq!(drained.country, "FR");
    // Gateway B learns it from the shared documents at its next poll.
    assert_eq!(status(&b, DRAINED), NodeStatus::Up);
    assert!(b.poll_nodes().await.is_empty());
    assert_eq!(status(&b, DRAINED), NodeStatus::Draining);
    assert!(report(&b.node_reports(), DRAINED).draining);
    assert!(b.replicas_on(DRAINED).await.unwrap().draining);

    // No new write lands on the drained node, through either gateway; the
    // EU policy leaves exactly fr-2 and de-1.
    for (i, store) in [&a, &b, &a, &b].into_iter().enumerate() {
        let seed = 200 + i as u64;
        let id = write_blob(store, &target(&eu(2), None), seed, 200_000)
            .await
            .unwrap();
        assert_eq!(cluster.holders(&id), ["de-1-n1", "fr-2-n1"], "{id}");
        blobs.push((id, seed, 200_000));
    }
    // Everything still reads, the drained node's replicas included.
    assert_all_readable(&a, &blobs).await;
    assert_all_readable(&b, &blobs).await;

    // A repair pass moves every replica off the drained node, onto EU nodes
    // only; reads keep working while it runs.
    let policies = |_: &BlobLocation| Some(eu(2));
    let (repaired, ()) = tokio::join!(a.repair_once(&policies), async {
        assert_all_readable(&b, &blobs).await;
    });
    let repaired = repaired.unwrap();
    assert_eq!(repaired.failed_count, 0, "{repaired:?}");
    assert_eq!(repaired.copied, on_drained.len() as u64, "{repaired:?}");
    assert_eq!(repaired.removed, on_drained.len() as u64, "{repaired:?}");
    let after = b.replicas_on(DRAINED).await.unwrap();
    assert_eq!((after.replicas, after.bytes), (0, 0), "{after:?}");
    assert!(cluster.node(DRAINED).files().is_empty());
    assert!(cluster.node("us-1-n1").files().is_empty());
    for (id, ..) in &blobs {
        let loc = location(&a, id).await.unwrap();
        assert!(loc.removing.is_empty(), "{loc:?}");
        assert_eq!(cluster.holders(id), ["de-1-n1", "fr-2-n1"], "{id}");
        assert_eq!(sorted(loc.nodes), ["de-1-n1", "fr-2-n1"]);
    }
    assert_all_readable(&b, &blobs).await;

    // The drain outlives the gateway: a new store over the same metadata
    // (a restart) finds it at its first poll.
    drop(a);
    let restarted = cluster.store(eu(2)).await;
    assert_eq!(status(&restarted, DRAINED), NodeStatus::Draining);
    assert!(report(&restarted.node_reports(), DRAINED).draining);

    // Undrained: placement uses the node again, on every gateway.
    restarted.set_node_draining(DRAINED, false).await.unwrap();
    assert_eq!(status(&restarted, DRAINED), NodeStatus::Up);
    assert!(!restarted.replicas_on(DRAINED).await.unwrap().draining);
    b.poll_nodes().await;
    assert_eq!(status(&b, DRAINED), NodeStatus::Up);
    let drained = report(&b.node_reports(), DRAINED).clone();
    assert_eq!((drained.status.as_str(), drained.draining), ("up", false));
    let mut landed = false;
    for seed in 0..20u64 {
        let id = write_blob(&b, &target(&eu(2), None), 300 + seed, 100_000)
            .await
            .unwrap();
        if cluster.node(DRAINED).holds(&id) {
            landed = true;
            break;
        }
    }
    assert!(landed, "no write placed on {DRAINED} after the drain ended");
    assert!(cluster.node("us-1-n1").files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_reports_show_each_node_as_last_polled() {
    let mut cluster = Cluster::start(None).await;
    cluster.kill("us-1-n1");
    let store = cluster.store(eu(2)).await;
    let id = write_blob(&store, &target(&eu(2), Some(MIB)), 7, MIB)
        .await
        .unwrap();
    store.poll_nodes().await;
    let reports = store.node_reports();
    assert_eq!(reports.len(), 4);
    for r in &reports {
        assert!(r.polled_ms.is_some(), "{r:?}");
        assert!(!r.draining, "{r:?}");
        if r.node == "us-1-n1" {
            assert_eq!(r.status, "down");
            assert_eq!(r.country, "US");
            assert!(r.down_reason.is_some(), "{r:?}");
            assert_eq!(
                (r.writable_bytes, r.used_bytes, r.blob_count),
                (None, None, None)
            );
        } else {
            assert_eq!(r.status, "up", "{r:?}");
            assert!(r.down_reason.is_none(), "{r:?}");
            assert!(r.writable_bytes.unwrap() > 0, "{r:?}");
            let holds = cluster.node(&r.node).holds(&id);
            assert_eq!(r.blob_count, Some(u64::from(holds)), "{r:?}");
            assert_eq!(r.used_bytes.unwrap() > MIB, holds, "{r:?}");
        }
    }
    // A drained node that is down reports both.
    store.set_node_draining("us-1-n1", true).await.unwrap();
    let us = report(&store.node_reports(), "us-1-n1").clone();
    assert_eq!((us.status.as_str(), us.draining), ("down", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_follows_a_narrowing_until_repair_has_moved_the_replicas() {
    let cluster = Cluster::start(None).await;
    let store = cluster.store(eu(2)).await;
    // Bucket `b`'s EU blobs, until some are in Germany; one of another bucket.
    let mut ids = Vec::new();
    let mut bytes = 0;
    for seed in 0..20u64 {
        let len = 100_000 + seed;
        ids.push(
            write_blob(&store, &target(&eu(2), None), 400 + seed, len)
                .await
                .unwrap(),
        );
        bytes += len;
        if ids.len() >= 4 && ids.iter().any(|id| cluster.node("de-1-n1").holds(id)) {
            break;
        }
    }
    let german = ids
        .iter()
        .filter(|id| cluster.node("de-1-n1").holds(id))
        .count() as u64;
    assert!(german > 0, "no blob in Germany");
    let other = PlacementTarget {
        bucket: Some("other".into()),
        ..target(&eu(2), None)
    };
    write_blob(&store, &other, 499, 1000).await.unwrap();
    let blobs = ids.len() as u64;

    // Under the policy they were written with: compliant.
    let eu_report = store.compliance("b", &eu(2)).await.unwrap();
    assert!(eu_report.compliant, "{eu_report:?}");
    assert_eq!(
        (eu_report.blobs, eu_report.bytes, eu_report.compliant_blobs),
        (blobs, bytes, blobs)
    );
    assert_eq!(
        (eu_report.replicas_to_move, eu_report.replicas_missing),
        (0, 0)
    );
    assert!(eu_report.issues.is_empty());
    assert_eq!(eu_report.scanned, blobs + 1);

    // Narrowed to France: each German replica is to move, and each such
    // blob is one French replica short.
    let narrowed = store.compliance("b", &fr_only()).await.unwrap();
    assert!(!narrowed.compliant, "{narrowed:?}");
    assert_eq!(narrowed.non_compliant_blobs, german, "{narrowed:?}");
    assert_eq!(narrowed.compliant_blobs, blobs - german);
    assert_eq!(narrowed.replicas_to_move, german, "{narrowed:?}");
    assert_eq!(narrowed.replicas_missing, german, "{narrowed:?}");
    assert_eq!(narrowed.issues.len() as u64, german);
    for issue in &narrowed.issues {
        assert!(cluster.node("de-1-n1").holds(&issue.blob_id), "{issue:?}");
        assert!(issue.reason.contains("de-1-n1"), "{issue:?}");
    }

    // The repair pass under the narrowed policy migrates them.
    let policies = |loc: &BlobLocation| (loc.bucket.as_deref() == Some("b")).then(fr_only);
    let repaired = store.repair_once(&policies).await.unwrap();
    assert_eq!(repaired.failed_count, 0, "{repaired:?}");
    let done = store.compliance("b", &fr_only()).await.unwrap();
    assert!(done.compliant, "{done:?}");
    assert_eq!((done.compliant_blobs, done.non_compliant_blobs), (blobs, 0));
    assert_eq!(
        (done.replicas_to_move, done.replicas_missing),
        (0, 0),
        "{done:?}"
    );
    for id in &ids {
        assert_eq!(cluster.holders(id), ["fr-1-n1", "fr-2-n1"]);
    }

    // A draining node makes its replicas movable again (here they have
    // nowhere to go: FR needs both French sites).
    store.set_node_draining("fr-1-n1", true).await.unwrap();
    let draining = store.compliance("b", &fr_only()).await.unwrap();
    assert!(!draining.compliant);
    assert_eq!(
        (draining.replicas_to_move, draining.replicas_missing),
        (blobs, 0),
        "{draining:?}"
    );
    assert!(
        draining.issues[0].reason.contains("draining"),
        "{draining:?}"
    );
    store.set_node_draining("fr-1-n1", false).await.unwrap();
    assert!(store.compliance("b", &fr_only()).await.unwrap().compliant);

    // Other buckets are not counted; an unknown bucket has nothing.
    assert_eq!(store.compliance("other", &eu(2)).await.unwrap().blobs, 1);
    let none = store.compliance("nope", &fr_only()).await.unwrap();
    assert!(none.compliant);
    assert_eq!((none.blobs, none.scanned), (0, blobs + 1));
}
