//! Repair of erasure-coded blobs: a shard whose node is down or gone,
//! draining, on a site the policy no longer allows, or discarded by the
//! scrubber is rebuilt from any `data` good shards onto a node that
//! `nuage_placement::repair_plan` names (compliant, up, with room), and
//! keeps its index.
//!
//! Same order as the repair of whole replicas (`repair`): rebuild the
//! shards (streamed a stripe at a time through this gateway, each checked
//! against the SHA-256 its record holds; a shard whose node can still be
//! read, draining or on a site no longer allowed, is copied as it is), log the events, record the new
//! shard map with the revision read (the old holders move to `removing`,
//! never read again), then delete what moved away. A rebuild that fails
//! deletes what it wrote and leaves the entry as it was.
//!
//! The blob's scheme (`data`+`parity`) is the one it was written with: a
//! policy whose durability changed since moves shards to compliant sites
//! but does not re-encode them.

use crate::Inner;
use crate::erasure::{Encoder, Geometry, StripeReader};
use crate::index::{BlobLocation, ErasureLayout};
use crate::repair::{RepairLog, RepairReport, ReplicaEvent, ReplicaEventKind};
use crate::writer::replica_place;
use nuage_blob::ReplicaPlace;
use nuage_node::NodeBlobWriter;
use nuage_placement::{Durability, MoveReason, RepairPlan, ResidencyPolicy};
use std::collections::BTreeSet;

/// One shard to rebuild: its index, the node that receives it, and the node
/// that held it (if any) with why it leaves.
struct Rebuild {
    shard: usize,
    to: String,
    from: Option<String>,
    reason: Option<MoveReason>,
}

impl Inner {
    /// Repairs one erasure-coded entry read at `revision` (see the module
    /// documentation).
    pub(crate) async fn repair_erasure(
        &self,
        mut location: BlobLocation,
        revision: u64,
        policy: ResidencyPolicy,
        log: &dyn RepairLog,
        report: &mut RepairReport,
    ) -> Result<(), String> {
        let blob_id = location.blob_id.clone();
        let layout = Geometry::of(&location)
            .map_err(|e| e.to_string())?
            .1
            .clone();
        // Placed under the blob's own scheme: shards are not re-encoded.
        let mut plan_policy = policy.clone();
        plan_policy.durability = Durability::ErasureCoding {
            data: layout.data,
            parity: layout.parity,
        };
        let current = layout.holders();
        let plan = nuage_placement::repair_plan(
            &self.topology,
            &plan_policy,
            &self.states(),
            &blob_id,
            location.size,
            &current,
        )
        .map_err(|e| format!("no compliant placement now: {e}"))?;
        let lost = layout.shards.iter().any(|s| s.node.is_none());
        if plan.is_noop() && !lost && location.removing.is_empty() && policy == location.policy {
            return Ok(());
        }
        let rebuilds = assign(&layout, &plan)?;
        // Sources: readable shards, kept ones first (the plan's order).
        let sources: Vec<(usize, String)> = plan
            .sources
            .iter()
            .filter_map(|node| layout.shard_on(node).map(|i| (i, node.clone())))
            .collect();
        let mut removing = location.removing.clone();
        // 1. Rebuild, each shard checked against its record.
        if !rebuilds.is_empty() {
            // A node that held a stale shard of the blob (being removed)
            // refuses other bytes under the same id: delete it first.
            let stale: Vec<String> = rebuilds
                .iter()
                .filter(|r| removing.contains(&r.to))
                .map(|r| r.to.clone())
                .collect();
            let left = self.delete_replicas(&blob_id, &stale).await;
            if !left.is_empty() {
                return Err(format!(
                    "the stale shards on {left:?} could not be deleted; nothing was rebuilt"
                ));
            }
            removing.retain(|node| !stale.contains(node));
            // A shard whose node is still readable (draining, or on a site
            // no longer allowed) is copied as it is: one shard read instead
            // of `data`. The others, and a copy that fails, are decoded.
            let mut decode = Vec::new();
            for r in &rebuilds {
                let record = &layout.shards[r.shard];
                let copied = match &r.from {
                    Some(from) if plan.sources.contains(from) => self
                        .copy_node_blob(&blob_id, record.length, &record.sha256, from, &r.to)
                        .await
                        .map_err(|e| {
                            tracing::warn!(%blob_id, shard = r.shard, %from, error = %e, "shard copy failed; rebuilding it from the others");
                        })
                        .is_ok(),
                    _ => false,
                };
                if !copied {
                    decode.push(r);
                }
            }
            if !decode.is_empty()
                && let Err(why) = self.rebuild(&location, &layout, &sources, &decode).await
            {
                let added: Vec<String> = rebuilds.iter().map(|r| r.to.clone()).collect();
                self.delete_unrecorded(&blob_id, &added).await;
                return Err(why);
            }
            report.copied += rebuilds.len() as u64;
        }
        let added: Vec<String> = rebuilds.iter().map(|r| r.to.clone()).collect();
        // 2a. Log first.
        let events = self.shard_events(&location, &layout, &plan, &rebuilds);
        if !events.is_empty()
            && let Err(e) = log.record(&events).await
        {
            self.delete_unrecorded(&blob_id, &added).await;
            return Err(format!(
                "logging the repair failed ({e}); the rebuilt shards were deleted, nothing removed"
            ));
        }
        // 2. Record the new shard map; the old holders are never read again.
        let mut new_layout = layout.clone();
        for r in &rebuilds {
            if let Some(old) = new_layout.shards[r.shard].node.replace(r.to.clone())
                && !removing.contains(&old)
            {
                removing.push(old);
            }
        }
        for moved in &plan.remove {
            if !removing.contains(&moved.node) {
                removing.push(moved.node.clone());
            }
        }
        let holders = new_layout.holders();
        removing.retain(|node| !holders.contains(node));
        location.nodes = holders;
        location.erasure = Some(new_layout);
        location.removing = removing;
        location.policy = policy;
        if let Err(e) = self.index.update(&location, revision).await {
            self.delete_unrecorded(&blob_id, &added).await;
            return Err(format!(
                "recording the repair failed ({e}); the rebuilt shards no record lists were deleted"
            ));
        }
        report.repaired += 1;
        // 3. Delete what moved away (reachable now), record the rest.
        self.delete_removed(&blob_id, &location.removing, report)
            .await
    }

    /// Streams every stripe from `data` of `sources` and writes the shards
    /// of `rebuilds` to their nodes; each node's receipt must match the
    /// shard's record.
    async fn rebuild(
        &self,
        location: &BlobLocation,
        layout: &ErasureLayout,
        sources: &[(usize, String)],
        rebuilds: &[&Rebuild],
    ) -> Result<(), String> {
        let (geometry, _) = Geometry::of(location).map_err(|e| e.to_string())?;
        let blob_id = &location.blob_id;
        let mut writers: Vec<(usize, String, NodeBlobWriter)> = Vec::with_capacity(rebuilds.len());
        for r in rebuilds {
            let writer = self
                .client(&r.to)
                .map_err(|e| e.to_string())
                .and_then(|client| {
                    client
                        .create(blob_id, Some(geometry.shard_len()))
                        .map_err(|e| e.to_string())
                });
            match writer {
                Ok(w) => writers.push((r.shard, r.to.clone(), w)),
                Err(e) => {
                    abandon(writers).await;
                    return Err(format!("rebuilding shard {} on {}: {e}", r.shard, r.to));
                }
            }
        }
        let need_parity = rebuilds.iter().any(|r| r.shard >= geometry.data);
        let mut encoder = Encoder::new(geometry.data, geometry.parity);
        let mut reader = StripeReader::new(
            self,
            blob_id,
            geometry,
            sources.to_vec(),
            geometry.stripes(),
        );
        for s in 0..geometry.stripes() {
            let originals = match reader.stripe(s).await {
                Ok(o) => o,
                Err(e) => {
                    abandon(writers).await;
                    return Err(format!("reading stripe {s} to rebuild from: {e}"));
                }
            };
            let parity = if need_parity {
                match encoder.encode(&originals) {
                    Ok(p) => p,
                    Err(e) => {
                        abandon(writers).await;
                        return Err(format!("encoding stripe {s}: {e}"));
                    }
                }
            } else {
                Vec::new()
            };
            for (shard, node, writer) in &mut writers {
                let piece = if *shard < geometry.data {
                    originals.get(*shard)
                } else {
                    parity.get(*shard - geometry.data)
                };
                let Some(piece) = piece.cloned() else {
                    continue;
                };
                if let Err(e) = writer.write(piece).await {
                    let why = format!("writing shard {shard} to {node}: {e}");
                    abandon(writers).await;
                    return Err(why);
                }
            }
        }
        let mut failures = Vec::new();
        for (shard, node, writer) in writers {
            let expected = &layout.shards[shard];
            match writer.finish().await {
                Ok(r) if r.length == expected.length && r.sha256 == expected.sha256 => {}
                Ok(r) => failures.push(format!(
                    "shard {shard} rebuilt on {node} has {} bytes of SHA-256 {}, its record {} \
                     bytes of SHA-256 {}",
                    r.length, r.sha256, expected.length, expected.sha256
                )),
                Err(e) => failures.push(format!("shard {shard} on {node}: {e}")),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "rebuilding blob {blob_id} failed: {}",
                failures.join("; ")
            ))
        }
    }

    /// The audit events of the rebuilds and removals.
    fn shard_events(
        &self,
        location: &BlobLocation,
        layout: &ErasureLayout,
        plan: &RepairPlan,
        rebuilds: &[Rebuild],
    ) -> Vec<ReplicaEvent> {
        let place = |node: &str| replica_place(&self.topology, node);
        let event = |kind, from, to, reason, shard: Option<usize>| ReplicaEvent {
            kind,
            blob_id: location.blob_id.clone(),
            tenant: location.tenant.clone(),
            bucket: location.bucket.clone(),
            from,
            to,
            reason,
            shard: shard.and_then(|i| u32::try_from(i).ok()),
        };
        let sources: Vec<ReplicaPlace> = plan.sources.iter().map(|n| place(n)).collect();
        let mut events: Vec<ReplicaEvent> = rebuilds
            .iter()
            .map(|r| {
                let kind = match &r.reason {
                    Some(
                        MoveReason::SiteNotAllowed { .. }
                        | MoveReason::NodeDraining
                        | MoveReason::Spread,
                    ) => ReplicaEventKind::Migrate,
                    _ => ReplicaEventKind::Repair,
                };
                let (from, reason) = match (&r.from, &r.reason) {
                    (Some(node), Some(reason)) => (vec![place(node)], reason.to_string()),
                    (Some(node), None) => (vec![place(node)], "shard moved".to_owned()),
                    (None, _) => (sources.clone(), "shard lost".to_owned()),
                };
                event(kind, from, vec![place(&r.to)], reason, Some(r.shard))
            })
            .collect();
        events.extend(plan.remove.iter().map(|m| {
            event(
                ReplicaEventKind::Remove,
                vec![place(&m.node)],
                Vec::new(),
                m.reason.to_string(),
                layout.shard_on(&m.node),
            )
        }));
        events
    }
}

/// Which shard each node the plan adds receives: the lost shards and those
/// whose node leaves (not kept), in shard order.
fn assign(layout: &ErasureLayout, plan: &RepairPlan) -> Result<Vec<Rebuild>, String> {
    let keep: BTreeSet<&str> = plan.keep.iter().map(String::as_str).collect();
    let leaving = |node: &str| {
        plan.remove
            .iter()
            .chain(&plan.unavailable)
            .find(|m| m.node == node)
            .map(|m| m.reason.clone())
    };
    let moved: Vec<(usize, Option<String>)> = layout
        .shards
        .iter()
        .enumerate()
        .filter(|(_, s)| s.node.as_deref().is_none_or(|n| !keep.contains(n)))
        .map(|(i, s)| (i, s.node.clone()))
        .collect();
    if moved.len() != plan.add.len() {
        return Err(format!(
            "the repair plan adds {} node(s) for {} shard(s) to place; nothing was changed",
            plan.add.len(),
            moved.len()
        ));
    }
    Ok(moved
        .into_iter()
        .zip(&plan.add)
        .map(|((shard, from), to)| Rebuild {
            shard,
            to: to.clone(),
            reason: from.as_deref().and_then(leaving),
            from,
        })
        .collect())
}

async fn abandon(writers: Vec<(usize, String, NodeBlobWriter)>) {
    futures::future::join_all(writers.into_iter().map(|(_, _, w)| w.abandon())).await;
}
