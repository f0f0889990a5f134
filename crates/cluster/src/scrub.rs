//! Scrubbing: prove that every replica the index names still holds the
//! blob's bytes, replace the ones that do not, and delete the node files no
//! index entry accounts for.
//!
//! For each live index entry, every replica on a node that is up is asked to
//! verify itself (`NodeClient::verify`: the node reads its whole copy back,
//! every block's CRC32C checked, and answers the length and SHA-256 of the
//! data). A replica that is missing, corrupt, or holds another length or
//! SHA-256 than the index records is *bad*. Bad replicas are handled in a
//! fixed order: a `Discard` event per bad replica goes to the [`RepairLog`]
//! (the tenant's audit log) first; then the index drops them from `nodes`
//! (into `removing`, never read again) with the revision read; then their
//! files are deleted (best effort); then the entry is repaired at once by
//! the repair pass's own logic (`repair_entry`, so `repair_plan` picks the
//! new nodes: compliant, up, with room), copying only from replicas still
//! listed, which after the discard are the good ones and those whose node
//! did not answer. The last good replica is never removed: an entry with no
//! replica that verifies is left as it is and reported, loudly.
//!
//! Then the orphan sweep lists every node that is up and deletes the blob
//! files that no entry accounts for (no entry, or an entry that lists the
//! node neither in `nodes` nor in `removing`) and that are older than the
//! grace: a write or a repair copy puts its files on the nodes before the
//! index names them, and the grace keeps the sweep away from those.
//!
//! An erasure-coded blob's shards are verified each against its own record
//! (length and SHA-256 in the entry's `erasure` layout); a bad shard is
//! dropped from the shard map and rebuilt through the same repair, and
//! only when at least `data` shards verify good.
//!
//! This module never places a replica itself (repair does, through
//! `nuage_placement::repair_plan`) and never copies from a replica that
//! failed its verification.

use crate::index::{BlobLocation, IndexPages, Revisioned};
use crate::repair::{PolicySource, RepairLog, RepairReport, ReplicaEvent, ReplicaEventKind};
use crate::writer::replica_place;
use crate::{ClusterBlobStore, ClusterError, Inner, is_unreachable, limits, now_ms};
use futures::StreamExt as _;
use nuage_node::{NodeClient, NodeError};
use std::time::Duration;

/// What one scrub pass found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScrubReport {
    /// Index entries looked at.
    pub scanned: u64,
    /// Replicas whose node verified the length and SHA-256 the index records.
    pub verified: u64,
    /// Data bytes of those replicas (each read in full by its node).
    pub bytes_verified: u64,
    /// Replicas found corrupt, missing, or with another length or SHA-256.
    pub bad: u64,
    /// Bad replicas for which a good copy was made on a compliant node
    /// during this pass.
    pub replaced: u64,
    /// Node files no index entry accounts for, older than the grace, deleted.
    pub orphans_removed: u64,
    /// What could not be checked or fixed, with why: a blob id or, for a
    /// node's listing, the node id (at most `REPORT_FAILURES_MAX` listed;
    /// `failed_count` counts them all).
    pub failures: Vec<(String, String)>,
    pub failed_count: u64,
}

impl ScrubReport {
    fn fail(&mut self, what: &str, why: String) {
        crate::repair::note_failure(&mut self.failures, &mut self.failed_count, what, why);
    }
}

/// What one replica's verification said.
enum Verdict {
    /// The node read back the recorded length and SHA-256.
    Good { bytes: u64 },
    /// Missing, corrupt, or other bytes: why, in words.
    Bad(String),
    /// Not checked now: the node is down or unreachable (`notable` false,
    /// repair's business), or it failed otherwise (`notable` true).
    Unknown { why: String, notable: bool },
}

fn is_conflict(e: &ClusterError) -> bool {
    matches!(
        e,
        ClusterError::Index(nuage_meta::MetaError::PreconditionFailed)
    )
}

impl ClusterBlobStore {
    /// One scrub pass: verifies every replica of every live blob on the
    /// nodes that are up (the node states of the last poll), discards and
    /// replaces the bad ones, then deletes orphan files older than
    /// `orphan_grace` from every node that is up. Every discarded replica
    /// (`ReplicaEventKind::Discard`), every copy that replaces one and every
    /// orphan of a tenant's blob (`Remove`, reason `orphan`) reaches `log`
    /// before the index changes or anything is deleted.
    ///
    /// It reads every byte of every replica: run it rarely, on the gateway
    /// that repairs, never at the same time as its repair pass.
    ///
    /// # Errors
    /// Only a failure to read the index while walking it; each blob's and
    /// each node's failure is in the report.
    pub async fn scrub_once_logged(
        &self,
        policies: &dyn PolicySource,
        log: &dyn RepairLog,
        orphan_grace: Duration,
    ) -> Result<ScrubReport, ClusterError> {
        let mut report = ScrubReport::default();
        let mut pages = IndexPages::default();
        while let Some(page) = pages.next(&self.inner.index).await? {
            for entry in page {
                report.scanned += 1;
                let blob_id = entry.location.blob_id.clone();
                if let Err(why) = self
                    .inner
                    .scrub_entry(entry, policies, log, &mut report)
                    .await
                {
                    tracing::warn!(%blob_id, %why, "scrub could not settle a blob");
                    report.fail(&blob_id, why);
                }
            }
        }
        self.inner
            .sweep_orphans(orphan_grace, log, &mut report)
            .await;
        tracing::info!(
            scanned = report.scanned,
            verified = report.verified,
            bytes_verified = report.bytes_verified,
            bad = report.bad,
            replaced = report.replaced,
            orphans_removed = report.orphans_removed,
            failed = report.failed_count,
            "scrub pass done"
        );
        Ok(report)
    }
}

impl Inner {
    /// Verifies the replica, or for an erasure-coded blob the shard, that
    /// `node` holds against its record.
    async fn verify_replica(&self, location: &BlobLocation, node: &str) -> Verdict {
        let (length, sha256) = match &location.erasure {
            Some(layout) => match layout.shard_on(node) {
                Some(i) => (layout.shards[i].length, layout.shards[i].sha256.as_str()),
                None => {
                    return Verdict::Unknown {
                        why: format!("node {node} holds no shard of the layout"),
                        notable: true,
                    };
                }
            },
            None => (location.size, location.sha256.as_str()),
        };
        if !self.is_up(node) {
            return Verdict::Unknown {
                why: format!("node {node} is down"),
                notable: false,
            };
        }
        let client = match self.client(node) {
            Ok(client) => client,
            Err(e) => {
                return Verdict::Unknown {
                    why: e.to_string(),
                    notable: true,
                };
            }
        };
        match client.verify(&location.blob_id).await {
            Ok(receipt) if receipt.length == length && receipt.sha256 == sha256 => Verdict::Good {
                bytes: receipt.length,
            },
            Ok(receipt) => Verdict::Bad(format!(
                "checksum mismatch on node {node}: it holds {} bytes of SHA-256 {}, the index \
                 records {} bytes of SHA-256 {}",
                receipt.length, receipt.sha256, length, sha256
            )),
            Err(NodeError::NotFound(_)) => Verdict::Bad(format!("replica missing on node {node}")),
            Err(NodeError::Corrupt { detail, .. }) => {
                Verdict::Bad(format!("checksum mismatch on node {node}: {detail}"))
            }
            Err(e) => {
                let unreachable = is_unreachable(&e);
                if unreachable {
                    self.mark_down(node);
                }
                Verdict::Unknown {
                    why: format!("node {node}: {e}"),
                    notable: !unreachable,
                }
            }
        }
    }

    async fn scrub_entry(
        &self,
        entry: Revisioned,
        policies: &dyn PolicySource,
        log: &dyn RepairLog,
        report: &mut ScrubReport,
    ) -> Result<(), String> {
        let Revisioned { location, revision } = entry;
        // A deleted blob's leftover replicas are repair's to remove.
        if location.deleted {
            return Ok(());
        }
        let blob_id = location.blob_id.clone();
        // Owned node ids: a closure taking a reference would make the future
        // not `Send` for every lifetime, as `tokio::spawn` needs.
        let verdicts: Vec<(String, Verdict)> =
            futures::stream::iter(location.nodes.clone().into_iter().map(|node| {
                let location = &location;
                async move {
                    let verdict = self.verify_replica(location, &node).await;
                    (node, verdict)
                }
            }))
            .buffered(limits::SCRUB_VERIFIES_IN_FLIGHT_MAX)
            .collect()
            .await;
        let mut good: Vec<String> = Vec::new();
        let mut bad: Vec<(String, String)> = Vec::new();
        let mut unchecked: Vec<String> = Vec::new();
        for (node, verdict) in verdicts {
            match verdict {
                Verdict::Good { bytes } => {
                    report.verified += 1;
                    report.bytes_verified += bytes;
                    good.push(node);
                }
                Verdict::Bad(why) => bad.push((node, why)),
                Verdict::Unknown { why, notable } => {
                    tracing::debug!(%blob_id, %why, "replica not verified");
                    if notable {
                        unchecked.push(why);
                    }
                }
            }
        }
        let unchecked = || -> Result<(), String> {
            if unchecked.is_empty() {
                Ok(())
            } else {
                Err(format!("replicas not verified: {}", unchecked.join("; ")))
            }
        };
        if bad.is_empty() {
            return unchecked();
        }
        // 1. Bad replicas of a blob being deleted (its files go first, then its
        // entry) or repaired right now are no news: only act on an entry
        // that is still as it was read.
        match self.index.get(&blob_id).await.map_err(|e| e.to_string())? {
            Some(now) if now.revision == revision => {}
            _ => {
                tracing::info!(%blob_id, "the blob changed while it was scrubbed; the next pass checks it again");
                return Ok(());
            }
        }
        report.bad += bad.len() as u64;
        for (node, why) in &bad {
            tracing::warn!(%blob_id, %node, %why, "bad replica");
        }
        // 2. Never remove the last good replica: with none, change nothing.
        // An erasure-coded blob needs `data` good shards to rebuild the bad
        // ones: with fewer, discarding would not help either.
        let needed = location.erasure.as_ref().map_or(1, |l| l.data as usize);
        if good.len() < needed {
            let why = bad
                .iter()
                .map(|(_, why)| why.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            tracing::error!(
                %blob_id,
                tenant = location.tenant.as_deref().unwrap_or(""),
                bucket = location.bucket.as_deref().unwrap_or(""),
                %why,
                "no replica of the blob verifies: its data is lost unless a replica not checked now is good; nothing was changed"
            );
            if location.erasure.is_some() {
                return Err(format!(
                    "only {} shard(s) verify good, {needed} needed to rebuild ({why}); nothing \
                     was changed",
                    good.len()
                ));
            }
            return Err(format!(
                "no replica verifies good ({why}); nothing was changed"
            ));
        }
        let bad_nodes: Vec<String> = bad.iter().map(|(node, _)| node.clone()).collect();
        // 3. Log first: the tenant's log holds the discard before the index
        // changes or the copy is deleted.
        let events: Vec<ReplicaEvent> = bad
            .iter()
            .map(|(node, why)| ReplicaEvent {
                kind: ReplicaEventKind::Discard,
                blob_id: blob_id.clone(),
                tenant: location.tenant.clone(),
                bucket: location.bucket.clone(),
                from: vec![replica_place(&self.topology, node)],
                to: Vec::new(),
                reason: why.clone(),
                shard: location
                    .erasure
                    .as_ref()
                    .and_then(|l| l.shard_on(node))
                    .and_then(|i| u32::try_from(i).ok()),
            })
            .collect();
        log.record(&events)
            .await
            .map_err(|e| format!("logging the discard failed ({e}); nothing was changed"))?;
        // 4. Record: the bad replicas are never read again. They wait in
        // `removing` until their files are gone.
        let mut updated = location.clone();
        updated.nodes.retain(|node| !bad_nodes.contains(node));
        if let Some(layout) = updated.erasure.as_mut() {
            for shard in &mut layout.shards {
                if shard.node.as_ref().is_some_and(|n| bad_nodes.contains(n)) {
                    shard.node = None;
                }
            }
        }
        for node in &bad_nodes {
            if !updated.removing.contains(node) {
                updated.removing.push(node.clone());
            }
        }
        match self.index.update(&updated, revision).await {
            Ok(()) => {}
            Err(e) if is_conflict(&e) => {
                return Err(
                    "the blob changed while it was scrubbed (a write, delete or repair); \
                     nothing was changed, the next pass checks it again"
                        .to_owned(),
                );
            }
            Err(e) => return Err(format!("recording the discard failed: {e}")),
        }
        // 5. Delete the bad copies, so that repair may put a good one on the
        // same node (a node holding other bytes under the id refuses it).
        let left = self.delete_replicas(&blob_id, &bad_nodes).await;
        if !left.is_empty() {
            tracing::warn!(%blob_id, nodes = ?left, "bad replicas not deleted now; repair deletes them later");
        }
        // 6. Repair now, from the replicas still listed.
        let Some(current) = self.index.get(&blob_id).await.map_err(|e| e.to_string())? else {
            return unchecked();
        };
        if current.location.deleted {
            return unchecked();
        }
        let mut repair = RepairReport::default();
        self.repair_entry(current, policies, log, &mut repair)
            .await
            .map_err(|e| format!("the bad replicas were discarded; replacing them failed: {e}"))?;
        report.replaced += repair.copied.min(bad_nodes.len() as u64);
        unchecked()
    }

    /// Deletes, from every node that is up, blob files older than `grace`
    /// that no index entry accounts for.
    async fn sweep_orphans(&self, grace: Duration, log: &dyn RepairLog, report: &mut ScrubReport) {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        for (node, client) in &self.clients {
            if !self.is_up(node) {
                continue;
            }
            if let Err(why) = self.sweep_node(node, client, grace_ms, log, report).await {
                tracing::warn!(%node, %why, "orphan sweep of a node stopped");
                report.fail(node, why);
            }
        }
    }

    async fn sweep_node(
        &self,
        node: &str,
        client: &NodeClient,
        grace_ms: u64,
        log: &dyn RepairLog,
        report: &mut ScrubReport,
    ) -> Result<(), String> {
        let mut after: Option<String> = None;
        loop {
            let page = client
                .list(after.as_deref(), nuage_node::limits::NODE_LIST_PAGE_MAX)
                .await
                .map_err(|e| {
                    if is_unreachable(&e) {
                        self.mark_down(node);
                    }
                    format!("listing node {node}: {e}")
                })?;
            let now = now_ms();
            for info in &page.blobs {
                // Young files may be a write or a repair copy that the index
                // does not name yet.
                if now.saturating_sub(info.modified_ms) < grace_ms {
                    continue;
                }
                let entry = self
                    .index
                    .get(&info.blob_id)
                    .await
                    .map_err(|e| format!("reading the index for {}: {e}", info.blob_id))?;
                let accounted = entry.as_ref().is_some_and(|e| {
                    e.location.nodes.iter().any(|n| n == node)
                        || e.location.removing.iter().any(|n| n == node)
                });
                if accounted {
                    continue;
                }
                let blob_id = &info.blob_id;
                match entry.as_ref().map(|e| &e.location) {
                    Some(location) if location.tenant.is_some() => {
                        let event = ReplicaEvent {
                            kind: ReplicaEventKind::Remove,
                            blob_id: blob_id.clone(),
                            tenant: location.tenant.clone(),
                            bucket: location.bucket.clone(),
                            from: vec![replica_place(&self.topology, node)],
                            to: Vec::new(),
                            reason: "orphan".to_owned(),
                            shard: None,
                        };
                        if let Err(e) = log.record(std::slice::from_ref(&event)).await {
                            report.fail(
                                blob_id,
                                format!("logging the orphan on node {node} failed ({e}); kept"),
                            );
                            continue;
                        }
                    }
                    _ => tracing::warn!(
                        %node,
                        %blob_id,
                        length = info.length,
                        modified_ms = info.modified_ms,
                        "deleting an orphan blob file (no index entry lists it on this node)"
                    ),
                }
                match client.delete(blob_id).await {
                    Ok(()) | Err(NodeError::NotFound(_)) => report.orphans_removed += 1,
                    Err(e) => report.fail(
                        blob_id,
                        format!("deleting the orphan on node {node} failed: {e}"),
                    ),
                }
            }
            match page.next_after {
                None => return Ok(()),
                // Ids strictly increase, or the walk would never end.
                Some(next) if after.as_ref().is_none_or(|a| next > *a) => after = Some(next),
                Some(next) => {
                    return Err(format!(
                        "node {node} listed {next} after {after:?}: its listing does not advance"
                    ));
                }
            }
        }
    }
}
