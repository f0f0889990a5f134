//! The location index: which nodes hold each blob, in the metadata store's
//! documents (namespace [`LOCATIONS_NAMESPACE`], key the blob id, value a
//! JSON [`BlobLocation`]).
//!
//! An entry is created (expecting no entry) only once every replica has
//! acknowledged the blob durable, and every later change (repair, delete)
//! is committed with the revision it read, so two gateways or repairers
//! never overwrite each other's view.

use crate::{ClusterError, limits};
use nuage_meta::{DocumentStore, DocumentWrite, Expect};
use nuage_placement::ResidencyPolicy;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The metadata namespace of the location index.
pub const LOCATIONS_NAMESPACE: &str = "cluster.blob-locations";

/// Where one blob lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobLocation {
    /// The blob id (the document key; not stored in the value).
    #[serde(skip)]
    pub blob_id: String,
    /// Nodes holding a replica that reads may use, in placement order.
    pub nodes: Vec<String>,
    /// Data bytes.
    pub size: u64,
    /// SHA-256 of the data bytes, lowercase hex, as every replica reported.
    pub sha256: String,
    /// When the blob was written, milliseconds since the Unix epoch.
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The policy the replicas were last placed under.
    pub policy: ResidencyPolicy,
    /// Replicas a repair has replaced and not yet deleted (their node was
    /// unreachable): never read, deleted by the next repair.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<String>,
    /// The blob is deleted; `nodes` lists the replicas still to remove
    /// (their node was unreachable at delete time). Never read or listed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Set for an erasure-coded blob: its shards, one per node (`nodes` then
    /// lists the nodes holding a shard, in shard order). Absent for whole
    /// replicas, whose entries read exactly as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasure: Option<ErasureLayout>,
}

/// How an erasure-coded blob is cut and where its shards are
/// (`docs/storage-nodes.md`, "Erasure coding"). The blob is cut into
/// stripes of `data` x `chunk_bytes` data bytes (the last stripe shorter:
/// `data` x its own even chunk, zero-padded); each stripe gives every shard
/// one chunk (data shard `i`: the stripe's `i`-th chunk; parity shards:
/// Reed-Solomon recovery chunks), appended to that shard's node blob, stored
/// under the blob's own id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureLayout {
    /// Shards needed to rebuild the blob.
    pub data: u32,
    /// Extra (recovery) shards.
    pub parity: u32,
    /// Bytes each shard takes of a full stripe.
    pub chunk_bytes: u32,
    /// Shard `i` is `shards[i]`: `data` data shards, then the parity ones.
    pub shards: Vec<ShardRecord>,
}

/// One shard of an erasure-coded blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// The node holding it; None while it is lost (discarded by a scrub,
    /// not rebuilt yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Bytes of the shard's node blob.
    pub length: u64,
    /// SHA-256 of the shard's node blob, lowercase hex.
    pub sha256: String,
}

impl ErasureLayout {
    /// The nodes holding a shard, in shard order: what `nodes` records.
    #[must_use]
    pub fn holders(&self) -> Vec<String> {
        self.shards.iter().filter_map(|s| s.node.clone()).collect()
    }

    /// The shard `node` holds, if any.
    #[must_use]
    pub fn shard_on(&self, node: &str) -> Option<usize> {
        self.shards
            .iter()
            .position(|s| s.node.as_deref() == Some(node))
    }
}

/// One entry and the revision it was read at.
#[derive(Debug, Clone)]
pub struct Revisioned {
    pub location: BlobLocation,
    pub revision: u64,
}

/// The location index over a document store.
#[derive(Clone)]
pub struct LocationIndex {
    docs: Arc<dyn DocumentStore>,
}

impl std::fmt::Debug for LocationIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocationIndex").finish_non_exhaustive()
    }
}

fn decode(key: &str, value: &[u8]) -> Result<BlobLocation, ClusterError> {
    if value.len() > limits::INDEX_ENTRY_BYTES_MAX {
        return Err(ClusterError::IndexCorrupt(format!(
            "entry {key} is {} bytes, more than {}",
            value.len(),
            limits::INDEX_ENTRY_BYTES_MAX
        )));
    }
    let mut location: BlobLocation = serde_json::from_slice(value)
        .map_err(|e| ClusterError::IndexCorrupt(format!("entry {key}: {e}")))?;
    key.clone_into(&mut location.blob_id);
    Ok(location)
}

fn encode(location: &BlobLocation) -> Result<Vec<u8>, ClusterError> {
    serde_json::to_vec(location).map_err(|e| ClusterError::IndexCorrupt(e.to_string()))
}

/// A walk over the whole index, [`limits::INDEX_PAGE_ENTRIES`] entries at
/// a time, in blob id order (the listing and the repair loop both walk it).
#[derive(Default)]
pub(crate) struct IndexPages {
    after: Option<String>,
    done: bool,
}

impl IndexPages {
    /// The next page, or None after the last one.
    pub(crate) async fn next(
        &mut self,
        index: &LocationIndex,
    ) -> Result<Option<Vec<Revisioned>>, ClusterError> {
        if self.done {
            return Ok(None);
        }
        let page = index
            .page(self.after.as_deref(), limits::INDEX_PAGE_ENTRIES)
            .await?;
        let full = page.len() == limits::INDEX_PAGE_ENTRIES;
        self.after = page.last().map(|e| e.location.blob_id.clone());
        self.done = !full || self.after.is_none();
        Ok(Some(page))
    }
}

impl LocationIndex {
    #[must_use]
    pub fn new(docs: Arc<dyn DocumentStore>) -> Self {
        Self { docs }
    }

    /// The entry of `blob_id`, if any.
    ///
    /// # Errors
    /// The metadata store's errors; a corrupt entry.
    pub async fn get(&self, blob_id: &str) -> Result<Option<Revisioned>, ClusterError> {
        let Some(doc) = self
            .docs
            .get_document(LOCATIONS_NAMESPACE, blob_id)
            .await
            .map_err(ClusterError::Index)?
        else {
            return Ok(None);
        };
        Ok(Some(Revisioned {
            location: decode(&doc.key, &doc.value)?,
            revision: doc.revision,
        }))
    }

    /// Records a new blob; fails if an entry exists.
    ///
    /// # Errors
    /// `PreconditionFailed` (as `ClusterError::Index`) when the id is taken.
    pub async fn create(&self, location: &BlobLocation) -> Result<(), ClusterError> {
        self.write(location, Expect::Absent).await
    }

    /// Replaces the entry read at `revision`.
    ///
    /// # Errors
    /// `PreconditionFailed` when it changed since.
    pub async fn update(&self, location: &BlobLocation, revision: u64) -> Result<(), ClusterError> {
        self.write(location, Expect::Revision(revision)).await
    }

    async fn write(&self, location: &BlobLocation, expect: Expect) -> Result<(), ClusterError> {
        self.docs
            .commit_documents(vec![DocumentWrite {
                namespace: LOCATIONS_NAMESPACE.to_owned(),
                key: location.blob_id.clone(),
                expect,
                value: Some(encode(location)?),
            }])
            .await
            .map_err(ClusterError::Index)
    }

    /// Removes the entry read at `revision`.
    ///
    /// # Errors
    /// `PreconditionFailed` when it changed since.
    pub async fn remove(&self, blob_id: &str, revision: u64) -> Result<(), ClusterError> {
        self.docs
            .commit_documents(vec![DocumentWrite {
                namespace: LOCATIONS_NAMESPACE.to_owned(),
                key: blob_id.to_owned(),
                expect: Expect::Revision(revision),
                value: None,
            }])
            .await
            .map_err(ClusterError::Index)
    }

    /// At most `limit` entries after `after`, in blob id order.
    ///
    /// # Errors
    /// The metadata store's errors; a corrupt entry.
    pub async fn page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Revisioned>, ClusterError> {
        let docs = self
            .docs
            .scan_documents(LOCATIONS_NAMESPACE, "", after, limit)
            .await
            .map_err(ClusterError::Index)?;
        docs.iter()
            .map(|doc| {
                Ok(Revisioned {
                    location: decode(&doc.key, &doc.value)?,
                    revision: doc.revision,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const POLICY: &str =
        r#"{"allowed_countries":["FR"],"durability":{"replicas":2},"min_sites":2}"#;

    #[test]
    fn replicated_entries_read_and_write_as_before() {
        // An entry written before erasure coding existed.
        let old = format!(
            r#"{{"nodes":["fr-1-n1","fr-2-n1"],"size":3,"sha256":"ab","created_ms":1,"policy":{POLICY}}}"#
        );
        let location = decode("0123456789abcdef", old.as_bytes()).unwrap();
        assert_eq!(location.erasure, None);
        assert_eq!(location.nodes, ["fr-1-n1", "fr-2-n1"]);
        let json = String::from_utf8(encode(&location).unwrap()).unwrap();
        assert!(!json.contains("erasure"), "{json}");
        assert_eq!(
            decode("0123456789abcdef", json.as_bytes()).unwrap(),
            location
        );
    }

    #[test]
    fn erasure_layouts_round_trip_with_lost_shards() {
        let mut location = decode(
            "0123456789abcdef",
            format!(r#"{{"nodes":["a"],"size":3,"sha256":"ab","created_ms":1,"policy":{POLICY}}}"#)
                .as_bytes(),
        )
        .unwrap();
        let shard = |node: Option<&str>| ShardRecord {
            node: node.map(str::to_owned),
            length: 2,
            sha256: "cd".into(),
        };
        location.erasure = Some(ErasureLayout {
            data: 2,
            parity: 1,
            chunk_bytes: 262_144,
            shards: vec![shard(Some("a")), shard(None), shard(Some("c"))],
        });
        let json = encode(&location).unwrap();
        let back = decode("0123456789abcdef", &json).unwrap();
        assert_eq!(back, location);
        let layout = back.erasure.unwrap();
        assert_eq!(layout.holders(), ["a", "c"]);
        assert_eq!(layout.shard_on("c"), Some(2));
        assert_eq!(layout.shard_on("b"), None);
    }
}
