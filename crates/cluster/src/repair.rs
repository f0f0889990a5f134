//! Repair: bring every blob's replicas back in line with its policy, after
//! a node loss, a drain or a narrowed policy, through
//! `nuage_placement::repair_plan` (which only ever names compliant, up
//! nodes with room).
//!
//! For each index entry, in order: copy the blob from a readable replica to
//! every `add` node (streamed through this gateway, checked against the
//! recorded SHA-256), record the new replica set with the revision read
//! (replicas being removed move to `removing`, never read again), then
//! delete the removed replicas and record that. A copy that fails is
//! deleted and the entry left as it was; a revision conflict (a concurrent
//! delete or repair) deletes the new copies. Replicas on down nodes stay
//! recorded: when the node returns, a later repair removes them as surplus.
//!
//! Erasure-coded blobs take the same steps in `rebuild`, a shard at a
//! time: a lost shard is rebuilt from `data` good ones, not copied.

use crate::index::{BlobLocation, IndexPages, Revisioned};
use crate::writer::replica_place;
use crate::{ClusterBlobStore, ClusterError, Inner, limits};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use nuage_blob::ReplicaPlace;
use nuage_node::NodeError;
use nuage_placement::{Move, MoveReason, RepairPlan, ResidencyPolicy};

/// The policy a blob must meet now, as the buckets say (a bucket's policy
/// may have been narrowed since the blob was written). `None`: the policy
/// recorded with the blob.
pub trait PolicySource: Send + Sync {
    fn policy_for(&self, location: &BlobLocation) -> Option<ResidencyPolicy>;
}

impl<F> PolicySource for F
where
    F: Fn(&BlobLocation) -> Option<ResidencyPolicy> + Send + Sync,
{
    fn policy_for(&self, location: &BlobLocation) -> Option<ResidencyPolicy> {
        self(location)
    }
}

/// What a repair does to one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaEventKind {
    /// A copy that restores the blob's durability (a replica's node is
    /// down or gone, or the blob has fewer replicas than its policy asks).
    Repair,
    /// A copy that moves the blob where its policy now wants it (a site
    /// the policy no longer allows, a draining node, too few sites).
    Migrate,
    /// A replica deleted (moved away, or surplus).
    Remove,
    /// A replica the scrubber found bad (corrupt, missing, or other bytes
    /// than the index records), dropped from the replica set and deleted;
    /// the copy that replaces it is a `Repair` event of its own.
    Discard,
}

/// One replica copied or removed by a repair, for the owning tenant's
/// audit log. Reported to the [`RepairLog`] before the repair records the
/// new replica set or deletes anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaEvent {
    pub kind: ReplicaEventKind,
    pub blob_id: String,
    /// The tenant and bucket the blob was written for (None for blobs
    /// written without them).
    pub tenant: Option<String>,
    pub bucket: Option<String>,
    /// For a copy: the replicas it replaces (or, when it replaces none, the
    /// replicas it may be copied from). For a removal: the removed replica.
    pub from: Vec<ReplicaPlace>,
    /// For a copy: the node that received it. Empty for a removal.
    pub to: Vec<ReplicaPlace>,
    /// Why, in words (`node down`, `site not allowed: ...`).
    pub reason: String,
    /// For an erasure-coded blob, the shard (its index) the event is about;
    /// None for a whole replica.
    pub shard: Option<u32>,
}

/// Where a repair makes its changes durable before acting on them (the
/// tenants' audit logs). A failure stops the repair of that blob: the new
/// copies are deleted and nothing is removed.
pub trait RepairLog: Send + Sync {
    /// Records `events`, durably, before returning Ok.
    fn record<'a>(&'a self, events: &'a [ReplicaEvent]) -> BoxFuture<'a, Result<(), String>>;
}

/// A repair log that keeps nothing (tests, tools).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRepairLog;

impl RepairLog for NoRepairLog {
    fn record<'a>(&'a self, _events: &'a [ReplicaEvent]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// What one repair pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RepairReport {
    /// Index entries looked at.
    pub scanned: u64,
    /// Entries changed.
    pub repaired: u64,
    /// Replicas copied to new nodes.
    pub copied: u64,
    /// Replicas deleted (moved away, surplus, or of deleted blobs).
    pub removed: u64,
    /// Entries that could not be repaired now, with why (at most
    /// `REPORT_FAILURES_MAX` listed; `failed_count` counts them all).
    pub failures: Vec<(String, String)>,
    pub failed_count: u64,
}

/// Counts a failure of a pass and lists it while the list is under
/// `REPORT_FAILURES_MAX` (repair and scrub reports alike).
pub(crate) fn note_failure(
    failures: &mut Vec<(String, String)>,
    failed_count: &mut u64,
    what: &str,
    why: String,
) {
    *failed_count += 1;
    if failures.len() < limits::REPORT_FAILURES_MAX {
        failures.push((what.to_owned(), why));
    }
}

impl RepairReport {
    fn fail(&mut self, blob_id: &str, why: String) {
        note_failure(&mut self.failures, &mut self.failed_count, blob_id, why);
    }
}

impl ClusterBlobStore {
    /// One pass over the whole index. Uses the node states of the last poll.
    /// Logs nothing ([`Self::repair_once_logged`] does).
    ///
    /// # Errors
    /// Only a failure to read the index; each blob's failure is in the report.
    pub async fn repair_once(
        &self,
        policies: &dyn PolicySource,
    ) -> Result<RepairReport, ClusterError> {
        self.repair_once_logged(policies, &NoRepairLog).await
    }

    /// [`Self::repair_once`], each blob's copies and removals recorded in
    /// `log` once the copies are durable and before the new replica set is
    /// recorded or any replica deleted.
    ///
    /// # Errors
    /// Only a failure to read the index; each blob's failure is in the report.
    pub async fn repair_once_logged(
        &self,
        policies: &dyn PolicySource,
        log: &dyn RepairLog,
    ) -> Result<RepairReport, ClusterError> {
        let mut report = RepairReport::default();
        let mut pages = IndexPages::default();
        while let Some(page) = pages.next(&self.inner.index).await? {
            for entry in page {
                report.scanned += 1;
                let blob_id = entry.location.blob_id.clone();
                if let Err(why) = self
                    .inner
                    .repair_entry(entry, policies, log, &mut report)
                    .await
                {
                    report.fail(&blob_id, why);
                }
            }
        }
        Ok(report)
    }
}

impl Inner {
    /// Deletes copies this pass made but could not record, except on the
    /// nodes the index lists now: another repairer (a second gateway) may
    /// have copied to, and recorded, the same node meanwhile, and deleting
    /// that copy would leave the index naming a replica that is gone. (The
    /// window between this read and the delete remains: run repair on one
    /// gateway, as docs/storage-nodes.md says.)
    pub(crate) async fn delete_unrecorded(&self, blob_id: &str, added: &[String]) {
        let recorded: Vec<String> = match self.index.get(blob_id).await {
            Ok(Some(entry)) => entry.location.nodes,
            Ok(None) => Vec::new(),
            Err(e) => {
                // Unknown: keeping a surplus copy is safe, deleting a
                // recorded one is not.
                tracing::warn!(blob_id, error = %e, "cannot re-read a blob's location; its new copies are kept");
                return;
            }
        };
        let unrecorded: Vec<String> = added
            .iter()
            .filter(|node| !recorded.contains(node))
            .cloned()
            .collect();
        self.delete_replicas(blob_id, &unrecorded).await;
    }

    /// Repairs one entry read at its revision (also the scrubber's second
    /// half, once it has discarded bad replicas).
    pub(crate) async fn repair_entry(
        &self,
        entry: Revisioned,
        policies: &dyn PolicySource,
        log: &dyn RepairLog,
        report: &mut RepairReport,
    ) -> Result<(), String> {
        let Revisioned {
            mut location,
            revision,
        } = entry;
        let blob_id = location.blob_id.clone();
        if location.deleted {
            let left = self.delete_replicas(&blob_id, &location.nodes).await;
            let removed = location.nodes.len() - left.len();
            if removed == 0 {
                return Ok(());
            }
            report.removed += removed as u64;
            report.repaired += 1;
            let result = if left.is_empty() {
                self.index.remove(&blob_id, revision).await
            } else {
                location.nodes = left;
                self.index.update(&location, revision).await
            };
            return result.map_err(|e| e.to_string());
        }
        let policy = policies
            .policy_for(&location)
            .unwrap_or_else(|| location.policy.clone());
        if location.erasure.is_some() {
            return self
                .repair_erasure(location, revision, policy, log, report)
                .await;
        }
        let states = self.states();
        let plan = nuage_placement::repair_plan(
            &self.topology,
            &policy,
            &states,
            &blob_id,
            location.size,
            &location.nodes,
        )
        .map_err(|e| format!("no compliant placement now: {e}"))?;
        let mut removing = location.removing.clone();
        if plan.is_noop() && removing.is_empty() && policy == location.policy {
            return Ok(());
        }
        // 1. Copies, each checked against the recorded hash.
        let mut added = Vec::new();
        for node in &plan.add {
            match self.copy(&location, &plan.sources, node).await {
                Ok(()) => added.push(node.clone()),
                Err(why) => {
                    self.delete_unrecorded(&blob_id, &added).await;
                    return Err(why);
                }
            }
        }
        report.copied += added.len() as u64;
        // 2a. Log first: the tenant's log holds every change before the
        // index names it or a replica is deleted.
        let events = self.events(&location, &plan, &added);
        if !events.is_empty()
            && let Err(e) = log.record(&events).await
        {
            self.delete_unrecorded(&blob_id, &added).await;
            return Err(format!(
                "logging the repair failed ({e}); the new copies were deleted, nothing removed"
            ));
        }
        // 2. Record: the target, plus replicas on down nodes (not readable
        // now, still there); the removed ones are never read again.
        let mut nodes = plan.target();
        for gone in &plan.unavailable {
            if gone.reason == MoveReason::NodeDown && !nodes.contains(&gone.node) {
                nodes.push(gone.node.clone());
            }
        }
        for moved in &plan.remove {
            if !removing.contains(&moved.node) {
                removing.push(moved.node.clone());
            }
        }
        // A node copied to again (it was being removed, or the scrubber
        // discarded its bad copy) holds a replica the record now lists:
        // deleting it as one being removed would lose it.
        removing.retain(|node| !nodes.contains(node));
        location.nodes = nodes;
        location.removing = removing;
        location.policy = policy;
        if let Err(e) = self.index.update(&location, revision).await {
            self.delete_unrecorded(&blob_id, &added).await;
            return Err(format!(
                "recording the repair failed ({e}); the new copies no record lists were deleted"
            ));
        }
        report.repaired += 1;
        self.delete_removed(&blob_id, &location.removing, report)
            .await
    }

    /// Step 3 of a repair: deletes the replicas (or shards) that moved away,
    /// and records what is left to delete.
    pub(crate) async fn delete_removed(
        &self,
        blob_id: &str,
        removing: &[String],
        report: &mut RepairReport,
    ) -> Result<(), String> {
        if removing.is_empty() {
            return Ok(());
        }
        let left = self.delete_replicas(blob_id, removing).await;
        report.removed += (removing.len() - left.len()) as u64;
        let Some(current) = self.index.get(blob_id).await.map_err(|e| e.to_string())? else {
            return Ok(());
        };
        let mut updated = current.location;
        updated.removing = left;
        self.index
            .update(&updated, current.revision)
            .await
            .map_err(|e| e.to_string())
    }

    /// The audit events of carrying out `plan` for `location`, whose copies
    /// to `added` are made.
    pub(crate) fn events(
        &self,
        location: &BlobLocation,
        plan: &RepairPlan,
        added: &[String],
    ) -> Vec<ReplicaEvent> {
        let place = |node: &str| replica_place(&self.topology, node);
        let event = |kind, from, to, reason| ReplicaEvent {
            kind,
            blob_id: location.blob_id.clone(),
            tenant: location.tenant.clone(),
            bucket: location.bucket.clone(),
            from,
            to,
            reason,
            shard: None,
        };
        // What the copies replace: replicas leaving, and unreadable ones.
        let replaced: Vec<&Move> = plan
            .remove
            .iter()
            .chain(&plan.unavailable)
            .filter(|m| m.reason != MoveReason::Surplus && m.reason != MoveReason::Duplicate)
            .collect();
        let migrates = replaced.iter().any(|m| {
            matches!(
                m.reason,
                MoveReason::SiteNotAllowed { .. } | MoveReason::NodeDraining | MoveReason::Spread
            )
        });
        let kind = if migrates {
            ReplicaEventKind::Migrate
        } else {
            ReplicaEventKind::Repair
        };
        let (from, reason): (Vec<ReplicaPlace>, String) = if replaced.is_empty() {
            (
                plan.sources.iter().map(|n| place(n)).collect(),
                "fewer replicas than the policy asks".to_owned(),
            )
        } else {
            let mut reasons: Vec<String> = Vec::new();
            for m in &replaced {
                let r = m.reason.to_string();
                if !reasons.contains(&r) {
                    reasons.push(r);
                }
            }
            (
                replaced.iter().map(|m| place(&m.node)).collect(),
                reasons.join("; "),
            )
        };
        let mut events: Vec<ReplicaEvent> = added
            .iter()
            .map(|node| event(kind, from.clone(), vec![place(node)], reason.clone()))
            .collect();
        events.extend(plan.remove.iter().map(|m| {
            event(
                ReplicaEventKind::Remove,
                vec![place(&m.node)],
                Vec::new(),
                m.reason.to_string(),
            )
        }));
        events
    }

    /// Streams the blob from the first source that serves it to `dest`.
    async fn copy(
        &self,
        location: &BlobLocation,
        sources: &[String],
        dest: &str,
    ) -> Result<(), String> {
        let mut errors = Vec::new();
        for source in sources {
            match self.copy_from(location, source, dest).await {
                Ok(()) => return Ok(()),
                Err(e) => errors.push(format!("from {source}: {e}")),
            }
        }
        Err(format!(
            "copying blob {} to node {dest} failed: {}",
            location.blob_id,
            errors.join("; ")
        ))
    }

    async fn copy_from(
        &self,
        location: &BlobLocation,
        source: &str,
        dest: &str,
    ) -> Result<(), NodeError> {
        self.copy_node_blob(
            &location.blob_id,
            location.size,
            &location.sha256,
            source,
            dest,
        )
        .await
    }

    /// Streams the node blob `blob_id` (a replica, or a shard) from `source`
    /// to `dest`; keeps the copy only when it has `length` bytes of SHA-256
    /// `sha256`.
    pub(crate) async fn copy_node_blob(
        &self,
        blob_id: &str,
        length: u64,
        sha256: &str,
        source: &str,
        dest: &str,
    ) -> Result<(), NodeError> {
        let from = self
            .client(source)
            .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        let to = self
            .client(dest)
            .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        let mut stream = from.read(blob_id, 0, length, false);
        let mut writer = to.create(blob_id, Some(length))?;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => writer.write(chunk).await?,
                Err(e) => {
                    writer.abandon().await;
                    return Err(e);
                }
            }
        }
        let receipt = writer.finish().await?;
        if receipt.sha256 != sha256 || receipt.length != length {
            // The node verified its blocks, so this is a bad index entry or
            // a bug; never keep a copy that differs.
            let _ = to.delete(blob_id).await;
            return Err(NodeError::ChecksumMismatch(format!(
                "the copy has {} bytes of SHA-256 {}, the index records {length} bytes of \
                 SHA-256 {sha256}",
                receipt.length, receipt.sha256
            )));
        }
        Ok(())
    }
}
