//! Purging a tenant's data: every in-progress upload, every object version
//! and delete marker, then every bucket the tenant owns.
//!
//! It must never touch another tenant's data. A bucket is selected by its
//! owner, and its identity (name, owner, creation time) is checked again
//! before each page of deletions and right before the bucket itself is
//! deleted, so a bucket that changed hands in the meantime (deleted by its
//! tenant, re-created by another) is left alone.
//!
//! The caller suspends the tenant first, so its credentials cannot add data
//! while the purge runs. A request authenticated just before the suspension
//! can still land; each bucket gets [`PURGE_BUCKET_PASSES_MAX`] passes, after
//! which the purge fails with the tenant still suspended and can be rerun:
//! every step is idempotent.

use crate::model::PurgeReport;
use nuage_base::limits;
use nuage_storage::{BucketRecord, Storage, StorageError, StorageResult, VersionListQuery};

/// Passes over one bucket (uploads, then versions, then the bucket) before
/// giving up on a bucket that keeps receiving data.
const PURGE_BUCKET_PASSES_MAX: usize = 3;

/// Deletes all the data of tenant `tenant_id`.
///
/// # Errors
/// A storage failure, or `BucketNotEmpty` when a bucket kept receiving data.
pub(crate) async fn purge_tenant_data(
    storage: &Storage,
    tenant_id: &str,
) -> StorageResult<PurgeReport> {
    // Buckets from before tenancy have an empty owner; an empty id (a corrupt
    // identity record) would select them all.
    if tenant_id.is_empty() {
        return Err(StorageError::Internal(
            "refusing to purge for a tenant without an id".into(),
        ));
    }
    let mut report = PurgeReport::default();
    for bucket in storage.list_buckets().await? {
        if bucket.owner != tenant_id {
            continue;
        }
        if purge_bucket(storage, &bucket, &mut report).await? {
            report.buckets += 1;
        }
    }
    Ok(report)
}

/// Whether `listed` still exists as the same bucket (not one re-created
/// under its name, possibly by another tenant).
async fn still_same_bucket(storage: &Storage, listed: &BucketRecord) -> StorageResult<bool> {
    match storage.bucket(&listed.name).await {
        Ok(current) => {
            Ok(current.owner == listed.owner && current.created_unix_ns == listed.created_unix_ns)
        }
        Err(StorageError::NoSuchBucket) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Empties and deletes one bucket. Returns whether this call deleted it.
async fn purge_bucket(
    storage: &Storage,
    bucket: &BucketRecord,
    report: &mut PurgeReport,
) -> StorageResult<bool> {
    for _ in 0..PURGE_BUCKET_PASSES_MAX {
        if !abort_uploads(storage, bucket, report).await?
            || !delete_versions(storage, bucket, report).await?
            || !still_same_bucket(storage, bucket).await?
        {
            return Ok(false);
        }
        match storage.delete_bucket(&bucket.name).await {
            Ok(()) => return Ok(true),
            Err(StorageError::NoSuchBucket) => return Ok(false),
            // Something landed after the listing: go round again.
            Err(StorageError::BucketNotEmpty) => {}
            Err(e) => return Err(e),
        }
    }
    tracing::warn!(
        bucket = %bucket.name,
        tenant = %bucket.owner,
        "purge: the bucket kept receiving data; the tenant stays suspended"
    );
    Err(StorageError::BucketNotEmpty)
}

/// Aborts every in-progress upload. Returns false when the bucket is no
/// longer the one listed.
async fn abort_uploads(
    storage: &Storage,
    bucket: &BucketRecord,
    report: &mut PurgeReport,
) -> StorageResult<bool> {
    let mut key_marker: Option<String> = None;
    let mut upload_id_marker: Option<String> = None;
    loop {
        if !still_same_bucket(storage, bucket).await? {
            return Ok(false);
        }
        let page = match storage
            .list_uploads(
                &bucket.name,
                "",
                key_marker.as_deref(),
                upload_id_marker.as_deref(),
                limits::LIST_UPLOADS_MAX,
            )
            .await
        {
            Ok(page) => page,
            Err(StorageError::NoSuchBucket) => return Ok(false),
            Err(e) => return Err(e),
        };
        for upload in &page.uploads {
            match storage
                .abort_upload(&bucket.name, &upload.key, &upload.upload_id)
                .await
            {
                Ok(()) => report.uploads += 1,
                // Completed or aborted meanwhile: the version pass handles the former.
                Err(StorageError::NoSuchUpload) => {}
                Err(e) => return Err(e),
            }
        }
        match (page.truncated, page.next_key_marker) {
            (true, Some(next)) => {
                key_marker = Some(next);
                upload_id_marker = page.next_upload_id_marker;
            }
            _ => return Ok(true),
        }
    }
}

/// Deletes every version and delete marker. Returns false when the bucket is
/// no longer the one listed.
async fn delete_versions(
    storage: &Storage,
    bucket: &BucketRecord,
    report: &mut PurgeReport,
) -> StorageResult<bool> {
    let mut query = VersionListQuery {
        max_keys: limits::LIST_KEYS_MAX,
        ..VersionListQuery::default()
    };
    loop {
        if !still_same_bucket(storage, bucket).await? {
            return Ok(false);
        }
        let page = match storage.list_object_versions(&bucket.name, &query).await {
            Ok(page) => page,
            Err(StorageError::NoSuchBucket) => return Ok(false),
            Err(e) => return Err(e),
        };
        for version in &page.versions {
            match storage
                .delete_object(&bucket.name, &version.key, Some(&version.version_id))
                .await
            {
                Ok(_) => report.object_versions += 1,
                Err(StorageError::NoSuchBucket) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        // A truncated page always carries where to resume; without one, stop
        // rather than loop, and let the bucket deletion tell whether it is empty.
        match (page.truncated, page.next_key_marker) {
            (true, Some(next)) => {
                query.key_marker = Some(next);
                query.version_id_marker = page.next_version_id_marker;
            }
            _ => return Ok(true),
        }
    }
}
