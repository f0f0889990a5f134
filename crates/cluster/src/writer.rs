//! The write path: place, fan out (whole copies, or one erasure-coded
//! shard per node, encoded a stripe at a time), acknowledge, record.

use crate::erasure::{Encoder, Geometry};
use crate::index::{BlobLocation, ErasureLayout, ShardRecord};
use crate::{ClusterError, Inner, is_unreachable, limits, now_ms};
use bytes::{Bytes, BytesMut};
use nuage_blob::{
    BlobError, BlobResult, BlobWriter, PlacementRefused, PlacementTarget, ReplicaPlace, Unavailable,
};
use nuage_node::{NodeBlobWriter, NodeError, WriteReceipt};
use nuage_placement::{Durability, NodeStatus, PlacementError, ResidencyPolicy, Topology};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;

/// One blob being streamed to every node placement chose. Memory: each
/// replica's writer queues at most `NODE_WRITE_QUEUE_CHUNKS_MAX` chunks of
/// at most `NODE_WRITE_CHUNK_BYTES_MAX`, and the chunks are shared (`Bytes`),
/// not copied per replica; an erasure-coded write also holds one stripe and
/// its parity chunks. Dropping it without `finish` aborts every
/// replica's request, and the nodes discard what they received.
pub(crate) struct ClusterWriter {
    inner: Arc<Inner>,
    blob_id: String,
    replicas: Vec<(String, NodeBlobWriter)>,
    tenant: Option<String>,
    bucket: Option<String>,
    policy: ResidencyPolicy,
    /// Why the write failed, once it has: every later call fails with it.
    failed: Option<Failure>,
    /// Set for an erasure-coded write: `replicas[i]` receives shard `i`.
    erasure: Option<Striper>,
}

/// An erasure-coded write's state: the stripe being filled (at most one
/// stripe of data bytes), the codec, and the whole blob's length and hash.
struct Striper {
    data: u32,
    parity: u32,
    stripe: BytesMut,
    encoder: Encoder,
    hasher: Sha256,
    written: u64,
}

impl Striper {
    fn stripe_bytes(&self) -> usize {
        self.data as usize * limits::EC_CHUNK_BYTES
    }

    /// Every shard's chunk of one stripe of `stripe` data bytes (at most a
    /// full stripe; a shorter, last one is zero-padded to `data` even
    /// chunks).
    fn encode(&mut self, stripe: Bytes) -> Result<Vec<Bytes>, String> {
        let data = self.data as usize;
        let chunk = if stripe.len() == self.stripe_bytes() {
            limits::EC_CHUNK_BYTES
        } else {
            let per = stripe.len().div_ceil(data);
            per + per % 2
        };
        let stripe = if stripe.len() == chunk * data {
            stripe
        } else {
            let mut padded = BytesMut::zeroed(chunk * data);
            padded[..stripe.len()].copy_from_slice(&stripe);
            padded.freeze()
        };
        let mut pieces: Vec<Bytes> = (0..data)
            .map(|i| stripe.slice(i * chunk..(i + 1) * chunk))
            .collect();
        let parity = self.encoder.encode(&pieces)?;
        pieces.extend(parity);
        Ok(pieces)
    }
}

/// Why a write failed.
struct Failure {
    why: String,
    /// A replica's node could not be reached or its connection broke (or
    /// stalled): nothing was written and a retry may succeed
    /// ([`nuage_blob::Unavailable`], S3 503), unlike a node's refusal.
    transient: bool,
    /// A replica's node ran out of room during the write (its length was
    /// not known when it was placed): compliant nodes are full, S3 503
    /// `SlowDown`, as when placement finds no room.
    full: bool,
}

impl Failure {
    fn permanent(why: String) -> Self {
        Self {
            why,
            transient: false,
            full: false,
        }
    }
}

/// The client's words for a node that filled up during a write: nothing
/// about which node, nor its address.
#[derive(Debug, thiserror::Error)]
#[error("a node the policy allows ran out of space during the write; nothing was kept")]
struct FilledUp;

/// Whether a replica's failure says its node is unreachable or the
/// connection broke or stalled (transient), rather than that the node
/// answered with a refusal. A node that is not the one expected
/// (`PeerIdentity`) is a misconfiguration, not a transient failure.
fn is_transient(e: &NodeError) -> bool {
    matches!(e, NodeError::Transport(_) | NodeError::Timeout(_))
}

fn refusal(policy: &ResidencyPolicy, e: PlacementError) -> BlobError {
    let full = matches!(
        &e,
        PlacementError::NotEnoughNodes { up, with_room, needed, .. }
            if *up >= *needed as usize && *with_room < *needed as usize
    );
    PlacementRefused {
        policy: format!("{}, {}", policy.places_text(), policy.durability),
        permanent: e.is_permanent(),
        full,
        reason: Box::new(e),
    }
    .into_blob_error()
}

/// Where `node` stands, as the topology says (a node no longer in it is
/// named with an empty site and country).
pub(crate) fn replica_place(topology: &Topology, node: &str) -> ReplicaPlace {
    let site = topology.site_of(node);
    ReplicaPlace {
        node: node.to_owned(),
        site: site.map(|s| s.id.clone()).unwrap_or_default(),
        country: site.map(|s| s.country.to_string()).unwrap_or_default(),
    }
}

impl ClusterWriter {
    /// Places the blob and opens a write to each chosen node (no byte sent
    /// yet). A placement failure opens nothing.
    pub(crate) async fn open(
        inner: Arc<Inner>,
        target: &PlacementTarget,
        policy: ResidencyPolicy,
    ) -> BlobResult<Self> {
        let blob_id = nuage_base::ids::random_id();
        let size = target
            .exact_len
            .unwrap_or(limits::UNKNOWN_LEN_PLACEMENT_BYTES);
        // Each node of an erasure-coded blob stores one shard, whose length
        // follows from the blob's.
        let erasure = match policy.durability {
            Durability::ErasureCoding { data, parity } => Some(Striper {
                data,
                parity,
                stripe: BytesMut::new(),
                encoder: Encoder::new(data as usize, parity as usize),
                hasher: Sha256::new(),
                written: 0,
            }),
            Durability::Replicas(_) => None,
        };
        let node_len = match (&erasure, target.exact_len) {
            (Some(ec), Some(len)) => Some(Geometry::new(ec.data, ec.parity, len).shard_len()),
            (_, len) => len,
        };
        let states = inner.states();
        let placement = nuage_placement::place(&inner.topology, &policy, &states, &blob_id, size)
            .map_err(|e| refusal(&policy, e))?;
        let mut replicas = Vec::with_capacity(placement.nodes.len());
        for node in placement.nodes {
            // `place` names only up nodes of the topology, each of which has
            // a client; anything else is a bug, and writes nowhere.
            debug_assert!(
                states
                    .get(&node)
                    .is_some_and(|s| s.status == NodeStatus::Up)
            );
            let writer = inner
                .client(&node)?
                .create(&blob_id, node_len)
                .map_err(|source| ClusterError::Node {
                    node: node.clone(),
                    source,
                })?;
            replicas.push((node, writer));
        }
        tracing::debug!(blob_id, nodes = ?replicas.iter().map(|(n, _)| n).collect::<Vec<_>>(), "blob placed");
        Ok(Self {
            inner,
            blob_id,
            replicas,
            tenant: target.tenant.clone(),
            bucket: target.bucket.clone(),
            policy,
            failed: None,
            erasure,
        })
    }

    fn failed_error(&self, failure: &Failure) -> BlobError {
        let detail = format!("writing blob {}: {}", self.blob_id, failure.why);
        if failure.full {
            tracing::warn!(error = %detail, "write abandoned: a storage node filled up");
            return PlacementRefused {
                policy: format!("{}, {}", self.policy.places_text(), self.policy.durability),
                permanent: false,
                full: true,
                reason: Box::new(FilledUp),
            }
            .into_blob_error();
        }
        if failure.transient {
            Unavailable { detail }.into_blob_error()
        } else {
            BlobError::Io(std::io::Error::other(detail))
        }
    }

    /// Aborts every replica still being written.
    async fn abort_all(&mut self) {
        let replicas = std::mem::take(&mut self.replicas);
        futures::future::join_all(replicas.into_iter().map(|(_, w)| w.abandon())).await;
    }

    fn node_failure(&self, node: &str, e: &NodeError) -> Failure {
        if is_unreachable(e) {
            self.inner.mark_down(node);
        }
        Failure {
            why: format!(
                "the replica on node {node} failed ({e}); the write was abandoned on all {} replicas",
                self.replicas.len().max(1)
            ),
            transient: is_transient(e),
            full: matches!(e, NodeError::InsufficientStorage(_)),
        }
    }
}

#[async_trait::async_trait]
impl BlobWriter for ClusterWriter {
    fn blob_id(&self) -> &str {
        &self.blob_id
    }

    fn placement(&self) -> Option<Vec<ReplicaPlace>> {
        Some(
            self.replicas
                .iter()
                .map(|(node, _)| replica_place(&self.inner.topology, node))
                .collect(),
        )
    }

    async fn write(&mut self, data: Bytes) -> BlobResult<()> {
        if let Some(failure) = &self.failed {
            return Err(self.failed_error(failure));
        }
        let Some(ec) = self.erasure.as_mut() else {
            let pieces = vec![data; self.replicas.len()];
            return self.send(pieces).await;
        };
        ec.hasher.update(&data);
        ec.written += data.len() as u64;
        let mut data = data;
        // Bounded: each turn takes bytes from `data` or ends.
        while !data.is_empty() {
            let Some(ec) = self.erasure.as_mut() else {
                break;
            };
            let room = ec.stripe_bytes() - ec.stripe.len();
            let take = data.split_to(room.min(data.len()));
            if ec.stripe.is_empty() && take.len() == ec.stripe_bytes() {
                // A whole stripe in the caller's chunk: no copy.
                self.send_stripe(take).await?;
                continue;
            }
            ec.stripe.extend_from_slice(&take);
            if ec.stripe.len() == ec.stripe_bytes() {
                let stripe = ec.stripe.split().freeze();
                self.send_stripe(stripe).await?;
            }
        }
        Ok(())
    }

    /// Succeeds when every replica made the blob durable with the same
    /// length and SHA-256, and the replica set is recorded in the index.
    /// Otherwise deletes what was stored and fails.
    async fn finish(mut self: Box<Self>) -> BlobResult<u64> {
        if let Some(failure) = &self.failed {
            return Err(self.failed_error(failure));
        }
        // The last, short stripe of an erasure-coded blob.
        if let Some(ec) = self.erasure.as_mut()
            && !ec.stripe.is_empty()
        {
            let stripe = ec.stripe.split().freeze();
            self.send_stripe(stripe).await?;
        }
        let replicas = std::mem::take(&mut self.replicas);
        let count = replicas.len();
        let results: Vec<(String, Result<WriteReceipt, NodeError>)> = futures::future::join_all(
            replicas
                .into_iter()
                .map(|(node, writer)| async move { (node, writer.finish().await) }),
        )
        .await;
        let mut stored = Vec::with_capacity(count);
        let mut failure: Option<Failure> = None;
        let mut receipt: Option<WriteReceipt> = None;
        let mut shards = Vec::with_capacity(count);
        let shard_len = self
            .erasure
            .as_ref()
            .map(|ec| Geometry::new(ec.data, ec.parity, ec.written).shard_len());
        for (node, result) in results {
            match result {
                Ok(r) if shard_len.is_some() => {
                    if Some(r.length) != shard_len {
                        failure.get_or_insert(Failure::permanent(format!(
                            "node {node} stored {} bytes of its shard, not {}",
                            r.length,
                            shard_len.unwrap_or_default()
                        )));
                    }
                    shards.push(ShardRecord {
                        node: Some(node.clone()),
                        length: r.length,
                        sha256: r.sha256,
                    });
                    stored.push(node);
                }
                Ok(r) => {
                    if let Some(first) = &receipt
                        && (first.length != r.length || first.sha256 != r.sha256)
                    {
                        failure.get_or_insert(Failure::permanent(format!(
                            "the replicas disagree: {} bytes of SHA-256 {} on one, {} bytes of \
                             SHA-256 {} on node {node}",
                            first.length, first.sha256, r.length, r.sha256
                        )));
                    }
                    receipt.get_or_insert(r);
                    stored.push(node);
                }
                Err(e) => {
                    let why = self.node_failure(&node, &e);
                    failure.get_or_insert(why);
                }
            }
        }
        // An erasure-coded blob's length and hash are of the data the
        // caller wrote; each shard's are in its record.
        let (receipt, erasure) = match self.erasure.take() {
            Some(ec) => {
                let receipt = WriteReceipt {
                    blob_id: self.blob_id.clone(),
                    length: ec.written,
                    sha256: hex::encode(ec.hasher.finalize()),
                    existed: false,
                };
                let layout = ErasureLayout {
                    data: ec.data,
                    parity: ec.parity,
                    chunk_bytes: u32::try_from(limits::EC_CHUNK_BYTES).unwrap_or(u32::MAX),
                    shards,
                };
                (Some(receipt), Some(layout))
            }
            None => (receipt, None),
        };
        let receipt = match (failure, receipt) {
            (None, Some(receipt)) => receipt,
            (failure, _) => {
                let failure = failure
                    .unwrap_or_else(|| Failure::permanent("no replica was written".to_owned()));
                self.discard(&stored).await;
                return Err(self.failed_error(&failure));
            }
        };
        let location = BlobLocation {
            blob_id: self.blob_id.clone(),
            nodes: stored.clone(),
            size: receipt.length,
            sha256: receipt.sha256,
            created_ms: now_ms(),
            tenant: self.tenant.clone(),
            bucket: self.bucket.clone(),
            policy: self.policy.clone(),
            removing: Vec::new(),
            deleted: false,
            erasure,
        };
        if let Err(e) = self.inner.index.create(&location).await {
            let failure = Failure::permanent(format!(
                "recording its replicas failed ({e}); the replicas were deleted"
            ));
            self.discard(&stored).await;
            return Err(self.failed_error(&failure));
        }
        Ok(receipt.length)
    }

    async fn abandon(mut self: Box<Self>) {
        self.abort_all().await;
    }
}

impl ClusterWriter {
    /// Sends `pieces[i]` to `replicas[i]`, all at once; the first failure
    /// abandons the write on every node.
    async fn send(&mut self, pieces: Vec<Bytes>) -> BlobResult<()> {
        let results = futures::future::join_all(self.replicas.iter_mut().zip(pieces).map(
            |((node, writer), data)| async move {
                writer.write(data).await.map_err(|e| (node.clone(), e))
            },
        ))
        .await;
        if let Some(Err((node, e))) = results.into_iter().find(Result::is_err) {
            let failure = self.node_failure(&node, &e);
            self.abort_all().await;
            let err = self.failed_error(&failure);
            self.failed = Some(failure);
            return Err(err);
        }
        Ok(())
    }

    /// Encodes one stripe and sends every shard its chunk.
    async fn send_stripe(&mut self, stripe: Bytes) -> BlobResult<()> {
        let Some(ec) = self.erasure.as_mut() else {
            return Ok(());
        };
        match ec.encode(stripe) {
            Ok(pieces) => self.send(pieces).await,
            Err(e) => {
                let failure = Failure::permanent(format!("encoding a stripe failed: {e}"));
                self.abort_all().await;
                let err = self.failed_error(&failure);
                self.failed = Some(failure);
                Err(err)
            }
        }
    }

    /// Deletes replicas that were stored for a write that failed. Those on
    /// nodes that cannot be reached are recorded as a deleted entry, which
    /// a repair removes when the node is back.
    async fn discard(&self, stored: &[String]) {
        let left = self.inner.delete_replicas(&self.blob_id, stored).await;
        if left.is_empty() {
            return;
        }
        let tombstone = BlobLocation {
            blob_id: self.blob_id.clone(),
            nodes: left,
            size: 0,
            sha256: String::new(),
            created_ms: now_ms(),
            tenant: self.tenant.clone(),
            bucket: self.bucket.clone(),
            policy: self.policy.clone(),
            removing: Vec::new(),
            deleted: true,
            erasure: None,
        };
        if let Err(e) = self.inner.index.create(&tombstone).await {
            tracing::error!(blob_id = %self.blob_id, error = %e, "an abandoned replica could not be deleted nor recorded");
        }
    }
}
