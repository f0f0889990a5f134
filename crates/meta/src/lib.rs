//! The metadata store: buckets, object versions, multipart uploads and the blob
//! reference index, behind the [`MetaStore`] trait.
//!
//! This crate owns the *records* and the atomic operations on them. It knows
//! nothing of HTTP, S3 wire formats or where object bytes live: a record names its
//! data by blob id only. Every operation that must be atomic (a conditional
//! write, completing an upload, deleting a non-empty bucket) is one method, so a
//! backend implements it as one transaction.
//!
//! Smaller services (identities, keys, policies) keep their records as
//! revision-checked [`documents`] instead.
//!
//! Backends: [`embedded::EmbeddedMetaStore`] (redb, one file, fsync on commit)
//! and [`postgres::PostgresMetaStore`] (a PostgreSQL database, or a compatible
//! distributed one, that several gateways share). Both implement
//! [`MetaStore`] and [`DocumentStore`]; the conformance tests in
//! `tests/conformance.rs` run against each.

pub mod documents;
pub mod embedded;
pub mod postgres;
pub mod records;
mod rules;

pub use documents::{Document, DocumentStore, DocumentWrite, Expect};
pub use records::*;

/// What can go wrong in the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("bucket does not exist")]
    NoSuchBucket,
    #[error("bucket already exists")]
    BucketAlreadyExists,
    #[error("bucket is not empty")]
    BucketNotEmpty,
    #[error("object version does not exist")]
    NoSuchVersion,
    #[error("multipart upload does not exist")]
    NoSuchUpload,
    #[error("precondition failed")]
    PreconditionFailed,
    /// A write meant to share this blob, but no record references it any
    /// more (it is freed, or about to be): the source of a copy vanished.
    #[error("shared blob {0} is no longer referenced")]
    SharedBlobGone(String),
    #[error("metadata record is corrupt: {0}")]
    Corrupt(String),
    #[error("metadata backend failure: {0}")]
    Backend(String),
}

pub type MetaResult<T> = Result<T, MetaError>;

/// How many records [`MetaStore::scan_latest_delimited`]'s default asks for
/// right after a common prefix was rolled up.
const DELIMITED_BATCH_AFTER_PREFIX: usize = 2;

/// The metadata operations Nuage needs, each atomic.
///
/// Keys are compared as UTF-8 bytes, which is S3's listing order.
#[async_trait::async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Creates a bucket; fails with `BucketAlreadyExists` if the name is taken.
    async fn create_bucket(&self, bucket: BucketRecord) -> MetaResult<()>;
    async fn get_bucket(&self, name: &str) -> MetaResult<Option<BucketRecord>>;
    /// Replaces a bucket's record (tags, CORS, versioning), which must exist.
    async fn update_bucket(&self, bucket: BucketRecord) -> MetaResult<()>;
    /// Deletes an empty bucket: no version, no delete marker, no upload in progress.
    async fn delete_bucket(&self, name: &str) -> MetaResult<()>;
    /// All buckets, ordered by name.
    async fn list_buckets(&self) -> MetaResult<Vec<BucketRecord>>;

    /// Writes a new version (object or delete marker) atomically with its
    /// condition. Assigns `seq` (greater than any earlier version of the key) and,
    /// unless `null_version`, the version id. Returns the written version and the
    /// blobs no longer referenced (to delete after the commit).
    async fn put_version(&self, put: PutVersion) -> MetaResult<PutVersionOutcome>;
    /// The latest version of a key (which may be a delete marker), or a given version.
    async fn get_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> MetaResult<Option<VersionRecord>>;
    /// Permanently removes one version. Returns it and the blobs it freed.
    async fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> MetaResult<(VersionRecord, Vec<String>)>;
    /// Replaces the tag set of a version (the latest when `version_id` is None).
    async fn set_version_tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        tags: Vec<(String, String)>,
    ) -> MetaResult<VersionRecord>;
    /// Up to `limit` keys with their latest version, in key order, starting
    /// strictly after `after` (or at the first key when None) and limited to
    /// keys that start with `prefix`.
    async fn scan_latest(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> MetaResult<Vec<VersionRecord>>;
    /// [`MetaStore::scan_latest`] for a listing with a delimiter: the same
    /// records in the same order, except that once a key that rolls up into
    /// a common prefix (`prefix`, then the rest of the key up to and
    /// including the first `delimiter`) is returned with a latest version that
    /// is not a delete marker, the other keys of that common prefix are
    /// skipped (a delete marker does not make the prefix appear, so the walk
    /// goes on to the next key). Fewer than `limit` records means the end.
    ///
    /// The default walks with [`MetaStore::scan_latest`], starting a new scan
    /// past each common prefix; a backend that can seek inside one read
    /// transaction does better (the embedded one: a page of 1,000 common
    /// prefixes in one transaction, not 1,000).
    async fn scan_latest_delimited(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> MetaResult<Vec<VersionRecord>> {
        if delimiter.is_empty() {
            return self.scan_latest(bucket, prefix, after, limit).await;
        }
        let mut out: Vec<VersionRecord> = Vec::new();
        let mut cursor: Option<Vec<u8>> = after.map(<[u8]>::to_vec);
        // The common prefix last rolled up: the rest of its keys in a batch
        // are dropped, and the scan past it asks for a short batch (the next
        // key most often starts another prefix, and every record asked for is
        // read and decoded). Every scan but the last returns a record that
        // lands in `out` or moves the cursor past a key, so the loop ends.
        let mut rolled_up: Option<String> = None;
        while out.len() < limit {
            let batch_len = if rolled_up.is_some() {
                DELIMITED_BATCH_AFTER_PREFIX.min(limit - out.len())
            } else {
                limit - out.len()
            };
            let batch = self
                .scan_latest(bucket, prefix, cursor.as_deref(), batch_len)
                .await?;
            let batch_full = batch.len() == batch_len;
            for record in batch {
                if let Some(cp) = &rolled_up
                    && record.key.starts_with(cp.as_str())
                {
                    continue;
                }
                rolled_up = None;
                if out.len() == limit {
                    return Ok(out);
                }
                match records::common_prefix(&record.key, prefix, delimiter) {
                    Some(cp) if !record.delete_marker => {
                        let cp = cp.to_owned();
                        cursor = Some(records::past_prefix(&cp));
                        rolled_up = Some(cp);
                    }
                    _ => cursor = Some(record.key.as_bytes().to_vec()),
                }
                out.push(record);
            }
            if !batch_full {
                break;
            }
        }
        Ok(out)
    }
    /// Up to `limit` versions in (key ascending, newest first) order, starting
    /// strictly after the position `after` (key, seq) or at `prefix`'s start.
    async fn scan_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&[u8], Option<u64>)>,
        limit: usize,
    ) -> MetaResult<Vec<VersionRecord>>;

    async fn create_upload(&self, upload: UploadRecord) -> MetaResult<()>;
    async fn get_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> MetaResult<Option<UploadRecord>>;
    /// Records a part (replacing one with the same number). Returns blobs
    /// freed. `shared`: the part's blob is another record's too (an
    /// UploadPartCopy's), and must still be referenced when the transaction
    /// runs, or the write fails with [`MetaError::SharedBlobGone`].
    async fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: PartRecord,
        shared: bool,
    ) -> MetaResult<Vec<String>>;
    /// Parts with number greater than `after`, ascending, at most `limit`.
    async fn list_parts(
        &self,
        upload_id: &str,
        after: u32,
        limit: usize,
    ) -> MetaResult<Vec<PartRecord>>;
    /// Uploads in (key, upload id) order after the given marker.
    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> MetaResult<Vec<UploadRecord>>;
    /// Removes an upload and its parts; returns the blobs freed.
    async fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> MetaResult<Vec<String>>;
    /// Atomically turns an upload into a version: removes the upload and all its
    /// parts, writes the version (whose blobs must be among the parts'), returns
    /// the blobs freed (unused parts, replaced null version).
    async fn complete_upload(
        &self,
        upload_id: &str,
        put: PutVersion,
    ) -> MetaResult<PutVersionOutcome>;

    /// Whether any record references the blob. Used by the orphan collector.
    async fn blob_is_referenced(&self, blob_id: &str) -> MetaResult<bool>;
    /// How many versions and delete markers the store holds (all buckets).
    async fn count_versions(&self) -> MetaResult<u64>;
}
