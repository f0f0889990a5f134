//! Erasure coding: the stripe geometry of an erasure-coded blob, the
//! Reed-Solomon codec over one stripe at a time, and the reader that gets any
//! `data` shards of a stripe from the nodes (data shards first, failing over
//! to parity shards) and rebuilds the stripe's data chunks.
//!
//! Layout (`docs/storage-nodes.md`, "Erasure coding"): a blob of `size`
//! bytes under `data`+`parity` is cut into stripes of `data` x
//! `chunk_bytes` bytes ([`limits::EC_CHUNK_BYTES`]); the last stripe is
//! shorter, its chunk the smallest even length that holds its bytes
//! (zero-padded). Data shard `i` is the concatenation of every stripe's
//! `i`-th chunk; parity shard `j` of every stripe's `j`-th recovery chunk
//! (`reed-solomon-simd`). So every shard has the same length, about
//! `size / data`, and the whole blob takes about `(data + parity) / data`
//! of its size.
//!
//! Memory: the codec and the reader hold one stripe (`data` + `parity`
//! chunks) at a time, never the blob. This module never writes to a node
//! and never decides where a shard goes.

use crate::index::{BlobLocation, ErasureLayout};
use crate::{ClusterError, Inner, is_unreachable, limits};
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use nuage_blob::{BlobError, Unavailable};
use nuage_node::NodeError;
use nuage_node::client::NodeStream;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use std::collections::VecDeque;

/// Where the bytes of an erasure-coded blob of `size` bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub(crate) data: usize,
    pub(crate) parity: usize,
    /// Bytes of each shard per full stripe (even).
    pub(crate) chunk: usize,
    pub(crate) size: u64,
}

/// The even chunk of a last stripe holding `rest` data bytes over `data`
/// shards.
fn last_chunk(rest: u64, data: usize) -> usize {
    let per = rest.div_ceil(data.max(1) as u64);
    usize::try_from(per + per % 2).unwrap_or(usize::MAX)
}

impl Geometry {
    /// The geometry of a new blob under `data`+`parity`.
    pub(crate) fn new(data: u32, parity: u32, size: u64) -> Self {
        Self {
            data: data as usize,
            parity: parity as usize,
            chunk: limits::EC_CHUNK_BYTES,
            size,
        }
    }

    /// The geometry an index entry records, checked.
    pub(crate) fn of(location: &BlobLocation) -> Result<(Self, &ErasureLayout), ClusterError> {
        let corrupt =
            |why: &str| ClusterError::IndexCorrupt(format!("entry {}: {why}", location.blob_id));
        let layout = location
            .erasure
            .as_ref()
            .ok_or_else(|| corrupt("not erasure-coded"))?;
        let width = layout.data as usize + layout.parity as usize;
        if layout.data == 0
            || layout.parity == 0
            || layout.shards.len() != width
            || width > nuage_placement::limits::PLACEMENT_WIDTH_MAX as usize
            || layout.chunk_bytes == 0
            || layout.chunk_bytes % 2 != 0
            || layout.chunk_bytes as usize > limits::EC_CHUNK_BYTES_MAX
        {
            return Err(corrupt("its erasure layout is inconsistent"));
        }
        let geometry = Self {
            data: layout.data as usize,
            parity: layout.parity as usize,
            chunk: layout.chunk_bytes as usize,
            size: location.size,
        };
        if layout
            .shards
            .iter()
            .any(|s| s.length != geometry.shard_len())
        {
            return Err(corrupt("a shard's length does not match the blob's size"));
        }
        Ok((geometry, layout))
    }

    pub(crate) fn width(&self) -> usize {
        self.data + self.parity
    }

    /// Data bytes of a full stripe.
    pub(crate) fn stripe_data_bytes(&self) -> u64 {
        (self.data * self.chunk) as u64
    }

    pub(crate) fn stripes(&self) -> u64 {
        self.size.div_ceil(self.stripe_data_bytes())
    }

    /// Bytes each shard holds of stripe `s`.
    pub(crate) fn stripe_chunk(&self, s: u64) -> usize {
        if s + 1 < self.stripes() {
            self.chunk
        } else {
            last_chunk(
                self.size.saturating_sub(s * self.stripe_data_bytes()),
                self.data,
            )
        }
    }

    /// Data bytes of stripe `s` (the rest of its chunks is padding).
    pub(crate) fn stripe_data_len(&self, s: u64) -> u64 {
        self.size
            .saturating_sub(s * self.stripe_data_bytes())
            .min(self.stripe_data_bytes())
    }

    /// Where stripe `s` starts in every shard.
    pub(crate) fn shard_offset(&self, s: u64) -> u64 {
        s * self.chunk as u64
    }

    /// Bytes of every shard.
    pub(crate) fn shard_len(&self) -> u64 {
        match self.stripes() {
            0 => 0,
            n => self.shard_offset(n - 1) + self.stripe_chunk(n - 1) as u64,
        }
    }
}

/// The Reed-Solomon encoder, its work memory reused from stripe to stripe.
pub(crate) struct Encoder {
    data: usize,
    parity: usize,
    rs: Option<(usize, ReedSolomonEncoder)>,
}

impl Encoder {
    pub(crate) fn new(data: usize, parity: usize) -> Self {
        Self {
            data,
            parity,
            rs: None,
        }
    }

    /// The parity chunks of one stripe's `data` chunks (all of one even
    /// length).
    pub(crate) fn encode(&mut self, originals: &[Bytes]) -> Result<Vec<Bytes>, String> {
        let chunk = originals.first().map_or(0, Bytes::len);
        let rs = match &mut self.rs {
            Some((bytes, rs)) if *bytes == chunk => rs,
            slot => {
                let rs = match slot.take() {
                    Some((_, mut rs)) => {
                        rs.reset(self.data, self.parity, chunk)
                            .map_err(|e| e.to_string())?;
                        rs
                    }
                    None => ReedSolomonEncoder::new(self.data, self.parity, chunk)
                        .map_err(|e| e.to_string())?,
                };
                &mut slot.insert((chunk, rs)).1
            }
        };
        for original in originals {
            rs.add_original_shard(original).map_err(|e| e.to_string())?;
        }
        let result = rs.encode().map_err(|e| e.to_string())?;
        Ok(result.recovery_iter().map(Bytes::copy_from_slice).collect())
    }
}

/// Rebuilds a stripe's `data` chunks from any `data` of its chunks
/// (`(shard index, chunk)`, all of one length).
fn reconstruct(
    geometry: &Geometry,
    decoder: &mut Option<ReedSolomonDecoder>,
    got: Vec<(usize, Bytes)>,
) -> Result<Vec<Bytes>, String> {
    let k = geometry.data;
    let mut originals: Vec<Option<Bytes>> = vec![None; k];
    let mut recovery = Vec::new();
    for (shard, chunk) in got {
        if shard < k {
            originals[shard] = Some(chunk);
        } else {
            recovery.push((shard - k, chunk));
        }
    }
    if originals.iter().all(Option::is_some) {
        // Every data chunk read: nothing to decode.
        return Ok(originals.into_iter().flatten().collect());
    }
    let chunk = recovery.first().map_or(0, |(_, c)| c.len());
    let rs = match decoder {
        Some(rs) => {
            rs.reset(k, geometry.parity, chunk)
                .map_err(|e| e.to_string())?;
            rs
        }
        None => decoder
            .insert(ReedSolomonDecoder::new(k, geometry.parity, chunk).map_err(|e| e.to_string())?),
    };
    for (i, original) in originals.iter().enumerate() {
        if let Some(original) = original {
            rs.add_original_shard(i, original)
                .map_err(|e| e.to_string())?;
        }
    }
    for (j, chunk) in &recovery {
        rs.add_recovery_shard(*j, chunk)
            .map_err(|e| e.to_string())?;
    }
    let result = rs.decode().map_err(|e| e.to_string())?;
    originals
        .into_iter()
        .enumerate()
        .map(|(i, original)| match original {
            Some(o) => Ok(o),
            None => result
                .restored_original(i)
                .map(Bytes::copy_from_slice)
                .ok_or_else(|| format!("the decoder did not restore data shard {i}")),
        })
        .collect()
}

/// One shard being read, cut into stripe chunks.
struct ShardReader {
    shard: usize,
    node: String,
    stream: NodeStream,
    pending: Bytes,
}

impl ShardReader {
    /// The next `n` bytes of the shard.
    async fn read_exact(&mut self, n: usize) -> Result<Bytes, NodeError> {
        if self.pending.len() >= n {
            return Ok(self.pending.split_to(n));
        }
        let mut buf = BytesMut::with_capacity(n);
        buf.extend_from_slice(&self.pending);
        self.pending = Bytes::new();
        // Bounded: each turn adds at least one byte or returns.
        while buf.len() < n {
            match self.stream.next().await {
                Some(Ok(chunk)) => {
                    let need = n - buf.len();
                    if chunk.len() <= need {
                        buf.extend_from_slice(&chunk);
                    } else {
                        buf.extend_from_slice(&chunk[..need]);
                        self.pending = chunk.slice(need..);
                    }
                }
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(NodeError::Protocol(format!(
                        "shard {} on node {} ended early",
                        self.shard, self.node
                    )));
                }
            }
        }
        Ok(buf.freeze())
    }
}

/// Reads stripes `start..end` of an erasure-coded blob: keeps `data`
/// shards open, and when one fails (node down, shard missing or corrupt:
/// the node checks every block it reads), replaces it with the next
/// candidate from the same stripe on. Never returns bytes it could not
/// read or rebuild.
pub(crate) struct StripeReader<'a> {
    inner: &'a Inner,
    blob_id: String,
    geometry: Geometry,
    /// Shards not opened yet, in the order to try them.
    candidates: VecDeque<(usize, String)>,
    active: Vec<ShardReader>,
    end: u64,
    decoder: Option<ReedSolomonDecoder>,
    failures: Vec<String>,
    all_missing: bool,
    all_unreachable: bool,
}

impl<'a> StripeReader<'a> {
    /// `sources` are `(shard index, node)` in the order to try them.
    pub(crate) fn new(
        inner: &'a Inner,
        blob_id: &str,
        geometry: Geometry,
        sources: Vec<(usize, String)>,
        end: u64,
    ) -> Self {
        Self {
            inner,
            blob_id: blob_id.to_owned(),
            geometry,
            candidates: sources.into(),
            active: Vec::with_capacity(geometry.data),
            end,
            decoder: None,
            failures: Vec::new(),
            all_missing: true,
            all_unreachable: true,
        }
    }

    /// The shards of `layout` to read, in order: data shards on nodes known
    /// up, parity shards on nodes known up, then the others (the states
    /// may be stale).
    pub(crate) fn read_order(inner: &Inner, layout: &ErasureLayout) -> Vec<(usize, String)> {
        let shards: Vec<(usize, String)> = layout
            .shards
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.node.clone().map(|n| (i, n)))
            .collect();
        let (mut up, down): (Vec<_>, Vec<_>) =
            shards.into_iter().partition(|(_, n)| inner.is_up(n));
        up.extend(down);
        up
    }

    fn note(&mut self, shard: usize, node: &str, e: &NodeError) {
        tracing::warn!(node, blob_id = %self.blob_id, shard, error = %e, "shard read failed; trying another shard");
        if is_unreachable(e) {
            self.inner.mark_down(node);
        } else {
            self.all_unreachable = false;
        }
        if !matches!(e, NodeError::NotFound(_)) {
            self.all_missing = false;
        }
        if self.failures.len() < limits::REPORT_FAILURES_MAX {
            self.failures
                .push(format!("shard {shard} on node {node}: {e}"));
        }
    }

    fn exhausted(&self, have: usize) -> BlobError {
        let detail = format!(
            "blob {}: {} of its {} shards are needed and only {have} could be read ({})",
            self.blob_id,
            self.geometry.data,
            self.geometry.width(),
            self.failures.join("; ")
        );
        if self.all_missing && have == 0 {
            BlobError::NotFound(self.blob_id.clone())
        } else if self.all_unreachable {
            Unavailable { detail }.into_blob_error()
        } else {
            BlobError::Corrupt {
                blob_id: self.blob_id.clone(),
                detail,
            }
        }
    }

    /// The `data` chunks of stripe `s` (padding included); stripes must be
    /// asked in increasing order.
    pub(crate) async fn stripe(&mut self, s: u64) -> Result<Vec<Bytes>, BlobError> {
        let n = self.geometry.stripe_chunk(s);
        let mut got: Vec<(usize, Bytes)> = Vec::with_capacity(self.geometry.data);
        let mut kept = Vec::with_capacity(self.geometry.data);
        for mut reader in std::mem::take(&mut self.active) {
            match reader.read_exact(n).await {
                Ok(chunk) => {
                    got.push((reader.shard, chunk));
                    kept.push(reader);
                }
                Err(e) => self.note(reader.shard, &reader.node.clone(), &e),
            }
        }
        self.active = kept;
        // Bounded: each turn consumes a candidate.
        while got.len() < self.geometry.data {
            let Some((shard, node)) = self.candidates.pop_front() else {
                return Err(self.exhausted(got.len()));
            };
            let client = match self.inner.client(&node) {
                Ok(client) => client,
                Err(e) => {
                    let e = NodeError::BadRequest(e.to_string());
                    self.note(shard, &node, &e);
                    continue;
                }
            };
            let from = self.geometry.shard_offset(s);
            let to = self.geometry.shard_offset(self.end - 1)
                + self.geometry.stripe_chunk(self.end - 1) as u64;
            // The node checks its block checksums even when the caller
            // authenticates the bytes: only the node can tell which shard
            // is bad, and a bad one is replaced by another.
            let stream = client.read(&self.blob_id, from, to - from, false);
            let mut reader = ShardReader {
                shard,
                node,
                stream,
                pending: Bytes::new(),
            };
            match reader.read_exact(n).await {
                Ok(chunk) => {
                    got.push((shard, chunk));
                    self.active.push(reader);
                }
                Err(e) => self.note(shard, &reader.node.clone(), &e),
            }
        }
        reconstruct(&self.geometry, &mut self.decoder, got).map_err(|e| BlobError::Corrupt {
            blob_id: self.blob_id.clone(),
            detail: format!("decoding stripe {s}: {e}"),
        })
    }
}

impl Inner {
    /// Streams `offset..offset+len` of an erasure-coded blob into `tx`,
    /// stripe by stripe, from the first stripe holding `offset`.
    pub(crate) async fn read_erasure_into(
        &self,
        location: &BlobLocation,
        offset: u64,
        len: u64,
        tx: &tokio::sync::mpsc::Sender<nuage_blob::BlobResult<Bytes>>,
    ) -> Result<(), BlobError> {
        let (geometry, layout) = Geometry::of(location)?;
        let end = offset.saturating_add(len).min(geometry.size);
        if offset >= end {
            return Ok(());
        }
        let stripe_bytes = geometry.stripe_data_bytes();
        let first = offset / stripe_bytes;
        let last = (end - 1) / stripe_bytes + 1;
        let sources = StripeReader::read_order(self, layout);
        let mut reader = StripeReader::new(self, &location.blob_id, geometry, sources, last);
        for s in first..last {
            let chunks = reader.stripe(s).await?;
            let stripe_start = s * stripe_bytes;
            let from = offset.max(stripe_start) - stripe_start;
            let to = (end - stripe_start).min(geometry.stripe_data_len(s));
            let n = geometry.stripe_chunk(s) as u64;
            for (i, chunk) in chunks.into_iter().enumerate() {
                let (lo, hi) = (i as u64 * n, (i as u64 + 1) * n);
                let (a, b) = (from.max(lo), to.min(hi));
                if a >= b {
                    continue;
                }
                let piece = chunk.slice(
                    usize::try_from(a - lo).unwrap_or(0)..usize::try_from(b - lo).unwrap_or(0),
                );
                if tx.send(Ok(piece)).await.is_err() {
                    // The reader went away.
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn geometry(data: usize, parity: usize, chunk: usize, size: u64) -> Geometry {
        Geometry {
            data,
            parity,
            chunk,
            size,
        }
    }

    #[test]
    fn stripes_cover_the_blob_and_only_the_last_is_short() {
        let g = geometry(2, 1, 8, 16 * 3 + 5);
        assert_eq!(g.stripes(), 4);
        assert_eq!(
            (0..4).map(|s| g.stripe_chunk(s)).collect::<Vec<_>>(),
            [8, 8, 8, 4]
        );
        assert_eq!(g.stripe_data_len(3), 5);
        assert_eq!(g.shard_len(), 28);
        // Aligned: the last stripe is full.
        let g = geometry(2, 1, 8, 32);
        assert_eq!((g.stripes(), g.stripe_chunk(1), g.shard_len()), (2, 8, 16));
        // Empty: no stripe, empty shards.
        assert_eq!(geometry(2, 1, 8, 0).shard_len(), 0);
        // One byte: a 2-byte chunk per shard (chunks are even).
        assert_eq!(geometry(3, 2, 8, 1).shard_len(), 2);
    }

    #[test]
    fn any_data_shards_rebuild_the_stripe() {
        let g = geometry(3, 2, 16, 48);
        let originals: Vec<Bytes> = (0..3u8)
            .map(|i| Bytes::from((0..16).map(|b| b * 7 + i).collect::<Vec<u8>>()))
            .collect();
        let parity = Encoder::new(3, 2).encode(&originals).unwrap();
        assert_eq!(parity.len(), 2);
        let all: Vec<Bytes> = originals.iter().chain(&parity).cloned().collect();
        let mut decoder = None;
        for lost in [[0, 1], [0, 2], [1, 3], [2, 4], [3, 4], [0, 4]] {
            let got: Vec<(usize, Bytes)> = (0..5)
                .filter(|i| !lost.contains(i))
                .map(|i| (i, all[i].clone()))
                .collect();
            assert_eq!(
                reconstruct(&g, &mut decoder, got).unwrap(),
                originals,
                "{lost:?}"
            );
        }
        let too_few: Vec<(usize, Bytes)> = vec![(3, all[3].clone()), (4, all[4].clone())];
        assert!(reconstruct(&g, &mut decoder, too_few).is_err());
    }
}
