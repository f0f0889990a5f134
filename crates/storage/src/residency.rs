//! Which residency policy a new blob is written under, and who is asked.
//!
//! Every blob the storage service writes (a PUT, a multipart part, a copy
//! that re-encrypts, an UploadPartCopy that cannot share) is created with
//! [`nuage_blob::BlobStore::create_placed`] and the **effective** policy of
//! its bucket: the bucket's own (`BucketRecord::residency_policy`), else its
//! tenant's, else none (`docs/residency.md`, "Policies on a server"). The
//! blob store places the replicas (the replicated store only on compliant
//! nodes) or refuses, and a refusal becomes [`StorageError::PlacementRefused`]
//! before anything is recorded.
//!
//! The storage service knows nothing of identities: the tenant's policy
//! comes through a [`ResidencySource`] the binary wires in
//! ([`Storage::with_residency`]). Without one, only a bucket's own policy
//! applies. This module must never decide placement itself (that is the
//! blob store's job, through `nuage-placement`) nor parse a policy: the
//! policy travels as the JSON the admin API checked.

use crate::error::{StorageError, StorageResult};
use crate::service::Storage;
use nuage_blob::PlacementTarget;
use nuage_meta::BucketRecord;
use std::sync::Arc;

/// Where the storage service reads a tenant's residency policy (the
/// identity service, in the binary).
pub trait ResidencySource: Send + Sync {
    /// The policy of `tenant` (its twelve-digit id) in its JSON form, or
    /// None when the tenant has none.
    ///
    /// # Errors
    /// The policy could not be read (the identity service failed). The
    /// write is then refused (an internal error): a blob is never written
    /// without knowing where it may go.
    fn tenant_policy<'a>(
        &'a self,
        tenant: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<String>, String>>;
}

impl Storage {
    /// Reads tenants' residency policies from `source`, for the buckets
    /// that carry none of their own.
    #[must_use]
    pub fn with_residency(mut self, source: Arc<dyn ResidencySource>) -> Self {
        self.residency = Some(source);
        self
    }

    /// The effective residency policy of `bucket` (JSON): its own, else its
    /// tenant's, else None.
    ///
    /// # Errors
    /// `Internal` when the tenant's policy cannot be read.
    pub async fn effective_residency_policy(
        &self,
        bucket: &BucketRecord,
    ) -> StorageResult<Option<String>> {
        if let Some(own) = &bucket.residency_policy {
            return Ok(Some(own.clone()));
        }
        let Some(source) = &self.residency else {
            return Ok(None);
        };
        // Records written before tenancy have no owner until the binary
        // assigns one at start: no tenant, no tenant policy.
        if bucket.owner.is_empty() {
            return Ok(None);
        }
        source.tenant_policy(&bucket.owner).await.map_err(|e| {
            StorageError::Internal(format!(
                "the residency policy of tenant {} could not be read: {e}",
                bucket.owner
            ))
        })
    }

    /// What the blob store is told about a new blob of `bucket` whose
    /// ciphertext will be exactly `exact_len` bytes when known.
    pub(crate) async fn placement_target(
        &self,
        bucket: &BucketRecord,
        exact_len: Option<u64>,
    ) -> StorageResult<PlacementTarget> {
        Ok(PlacementTarget {
            tenant: (!bucket.owner.is_empty()).then(|| bucket.owner.clone()),
            bucket: Some(bucket.name.clone()),
            policy_json: self.effective_residency_policy(bucket).await?,
            exact_len,
        })
    }

    /// Whether a copy from `source` into `destination` (buckets of the same
    /// tenant) may share the source's blobs: only when both are under the
    /// same effective policy. The source's replicas were placed for the
    /// source's policy; a destination under another one gets its own blob,
    /// placed for its own policy. Policies are compared as stored (the
    /// canonical JSON the admin API writes): two spellings of one policy
    /// only cost a rewrite, never a misplacement.
    pub(crate) async fn same_residency(
        &self,
        source: &BucketRecord,
        destination: &BucketRecord,
    ) -> StorageResult<bool> {
        if source.owner == destination.owner
            && source.residency_policy == destination.residency_policy
        {
            // Same own policy, or both inheriting the same tenant's.
            return Ok(true);
        }
        Ok(self.effective_residency_policy(source).await?
            == self.effective_residency_policy(destination).await?)
    }
}
