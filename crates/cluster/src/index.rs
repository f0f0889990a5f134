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
