//! The embedded backend: one redb file, every commit fsynced before it returns.
//!
//! Layout (all tables map bytes to bytes; values are JSON records):
//! - `buckets`: name -> [`BucketRecord`]
//! - `versions`: bucket 0x00 key 0x00 (u64::MAX - seq, big-endian) -> [`VersionRecord`];
//!   so a key's versions sort newest first and keys sort in S3 order. Keys never
//!   contain NUL (checked at the edge), which keeps the encoding prefix-free.
//! - `uploads`: bucket 0x00 key 0x00 upload id -> [`UploadRecord`]
//! - `upload_index`: upload id -> bucket 0x00 key
//! - `parts`: upload id 0x00 part number (big-endian u32) -> [`PartRecord`]
//! - `documents`: namespace 0x00 key -> revision (u64 big-endian) then the value.
//! - `blob_refs`: blob id -> how many records (versions, parts) reference it, a
//!   big-endian u64 (an empty value, written before blobs could be shared, counts
//!   one). A blob is freed when its count reaches zero; the orphan collector
//!   deletes blobs with no entry (leftovers of a crash).
//! - `maintenance`: what the store owes itself. `forget-deleted` is present
//!   from the commit that deletes a document (in that same transaction)
//!   until the file is rewritten.
//!
//! Forgetting deleted documents: redb is copy-on-write and does not
//! overwrite the pages a transaction frees (it stopped zeroing them,
//! cberner/redb#442), and `Database::compact` moves live pages down but may
//! leave freed pages inside the file (holes no page fits, a trailing part of
//! the last region it does not trim). A deleted document (a crypto-shredded
//! key's wrapped material) would survive in those pages. [`EmbeddedMetaStore::rewrite`]
//! therefore copies every live entry into a new file, which never held a
//! deleted byte, and renames it over the old one; it needs the file to
//! itself (no open store, no running server), so the binary runs it at start
//! when `forget-deleted` is set, and `nuage compact` runs it on demand.
//!
//! Writes go through a group commit ([`group`]): operations that arrive
//! together share one write transaction and one fsync, with the outcome of
//! running them one after another; none is answered before its commit is
//! durable.

use crate::{
    BucketRecord, Document, MetaError, MetaResult, MetaStore, PartRecord, PutVersion,
    PutVersionOutcome, UploadRecord, VersionRecord, WriteCondition,
};
use nuage_base::ids;
use nuage_base::limits::{META_CACHE_BYTES, META_REWRITE_TRANSACTION_ENTRIES_MAX};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle as _};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod group;
pub use group::{BATCH_OPERATIONS_MAX, CommitStats, QUEUED_OPERATIONS_MAX};

const BUCKETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("buckets");
const VERSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("versions");
const UPLOADS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("uploads");
const UPLOAD_INDEX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("upload_index");
const PARTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("parts");
const BLOB_REFS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blob_refs");
const DOCUMENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("documents");
const MAINTENANCE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("maintenance");
/// Key in `maintenance`: a document was deleted since the last rewrite.
const FORGET_DELETED: &[u8] = b"forget-deleted";
/// Suffix of the new file while a rewrite is under way; a leftover one (a
/// crash mid-rewrite) is discarded by the next rewrite.
const REWRITE_SUFFIX: &str = "rewrite";

/// What a rewrite did (see [`EmbeddedMetaStore::rewrite`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// Live entries copied, over every table.
    pub entries: u64,
    /// Size of the file before and after, in bytes.
    pub file_bytes_before: u64,
    pub file_bytes_after: u64,
}

/// Metadata in a single redb file.
#[derive(Clone)]
pub struct EmbeddedMetaStore {
    db: Arc<Database>,
    writer: Arc<group::GroupCommit>,
}

fn backend(e: impl std::fmt::Display) -> MetaError {
    MetaError::Backend(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> MetaResult<T> {
    serde_json::from_slice(bytes).map_err(|e| MetaError::Corrupt(e.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> MetaResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(backend)
}

fn key_prefix(bucket: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bucket.len() + key.len() + 2);
    out.extend_from_slice(bucket.as_bytes());
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out.push(0);
    out
}

fn version_key(bucket: &str, key: &str, seq: u64) -> Vec<u8> {
    let mut out = key_prefix(bucket, key);
    out.extend_from_slice(&(u64::MAX - seq).to_be_bytes());
    out
}

fn bucket_prefix(bucket: &str) -> Vec<u8> {
    let mut out = bucket.as_bytes().to_vec();
    out.push(0);
    out
}

/// The first encoded key after every entry of object key `after` (keys never hold NUL).
fn after_key(bucket: &str, after: &[u8]) -> Vec<u8> {
    let mut out = bucket_prefix(bucket);
    out.extend_from_slice(after);
    out.push(1);
    out
}

/// The object key inside an encoded `versions` key.
fn object_key_of(encoded: &[u8], bucket_len: usize) -> &[u8] {
    encoded
        .get(bucket_len + 1..encoded.len().saturating_sub(9))
        .unwrap_or_default()
}

fn part_key(upload_id: &str, part_number: u32) -> Vec<u8> {
    let mut out = upload_id.as_bytes().to_vec();
    out.push(0);
    out.extend_from_slice(&part_number.to_be_bytes());
    out
}

type Table<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// The newest version of a key, if any.
fn latest_version(
    versions: &Table<'_>,
    bucket: &str,
    key: &str,
) -> MetaResult<Option<VersionRecord>> {
    let prefix = key_prefix(bucket, key);
    let mut range = versions.range(prefix.as_slice()..).map_err(backend)?;
    if let Some(entry) = range.next() {
        let (k, v) = entry.map_err(backend)?;
        if k.value().starts_with(&prefix) {
            return decode(v.value()).map(Some);
        }
    }
    Ok(None)
}

/// Finds a version by id among a key's versions.
fn find_version(
    versions: &impl ReadableTable<&'static [u8], &'static [u8]>,
    bucket: &str,
    key: &str,
    version_id: &str,
) -> MetaResult<Option<VersionRecord>> {
    if let Some(seq) = ids::version_seq(version_id) {
        if let Some(v) = versions
            .get(version_key(bucket, key, seq).as_slice())
            .map_err(backend)?
        {
            let record: VersionRecord = decode(v.value())?;
            if record.version_id == version_id {
                return Ok(Some(record));
            }
        }
        return Ok(None);
    }
    // The `null` version carries no sequence in its id: walk the key's versions.
    let prefix = key_prefix(bucket, key);
    for entry in versions.range(prefix.as_slice()..).map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        let record: VersionRecord = decode(v.value())?;
        if record.version_id == version_id {
            return Ok(Some(record));
        }
    }
    Ok(None)
}

/// How many records reference `blob` (0: none, the blob may be deleted).
fn ref_count(refs: &Table<'_>, blob: &str) -> MetaResult<u64> {
    let Some(value) = refs.get(blob.as_bytes()).map_err(backend)? else {
        return Ok(0);
    };
    let bytes = value.value();
    if bytes.is_empty() {
        // Written before blobs could be shared: exactly one reference.
        return Ok(1);
    }
    let count: [u8; 8] = bytes
        .try_into()
        .map_err(|_| MetaError::Corrupt(format!("blob reference count of {blob}")))?;
    Ok(u64::from_be_bytes(count))
}

/// Adds a reference to `blob`; a blob this transaction was about to free is
/// kept.
fn ref_add(refs: &mut Table<'_>, blob: &str, freed: &mut Vec<String>) -> MetaResult<()> {
    let count = ref_count(refs, blob)?.saturating_add(1);
    refs.insert(blob.as_bytes(), count.to_be_bytes().as_slice())
        .map_err(backend)?;
    freed.retain(|b| b != blob);
    Ok(())
}

/// Drops one reference to `blob`; when none is left the entry goes and the
/// blob joins `freed` (deleted by the caller once the transaction commits).
fn ref_drop(refs: &mut Table<'_>, blob: &str, freed: &mut Vec<String>) -> MetaResult<()> {
    match ref_count(refs, blob)? {
        0 => {}
        1 => {
            refs.remove(blob.as_bytes()).map_err(backend)?;
            freed.push(blob.to_owned());
        }
        n => {
            refs.insert(blob.as_bytes(), (n - 1).to_be_bytes().as_slice())
                .map_err(backend)?;
        }
    }
    Ok(())
}

fn remove_refs(
    refs: &mut Table<'_>,
    record: &VersionRecord,
    freed: &mut Vec<String>,
) -> MetaResult<()> {
    for segment in &record.segments {
        ref_drop(refs, &segment.blob_id, freed)?;
    }
    Ok(())
}

fn write_version(txn: &redb::WriteTransaction, put: PutVersion) -> MetaResult<PutVersionOutcome> {
    let PutVersion {
        mut record,
        null_version,
        condition,
        shared_blobs,
    } = put;
    if txn
        .open_table(BUCKETS)
        .map_err(backend)?
        .get(record.bucket.as_bytes())
        .map_err(backend)?
        .is_none()
    {
        return Err(MetaError::NoSuchBucket);
    }
    let mut versions = txn.open_table(VERSIONS).map_err(backend)?;
    let mut refs = txn.open_table(BLOB_REFS).map_err(backend)?;
    // Checked before this transaction drops any reference (a copy onto its
    // own key replaces the very version it shares with).
    for blob in &shared_blobs {
        if ref_count(&refs, blob)? == 0 {
            return Err(MetaError::SharedBlobGone(blob.clone()));
        }
    }
    let latest = latest_version(&versions, &record.bucket, &record.key)?;
    let current = latest.as_ref().filter(|v| !v.delete_marker);
    match &condition {
        WriteCondition::None => {}
        WriteCondition::IfNoneMatchAny => {
            if current.is_some() {
                return Err(MetaError::PreconditionFailed);
            }
        }
        WriteCondition::IfMatch(etag) => {
            if current.is_none_or(|v| &v.etag != etag) {
                return Err(MetaError::PreconditionFailed);
            }
        }
    }
    let floor = u64::try_from(record.last_modified_unix_ns).unwrap_or(0);
    record.seq = latest
        .as_ref()
        .map_or(floor, |v| floor.max(v.seq.saturating_add(1)));
    let mut freed = Vec::new();
    if null_version {
        if let Some(old) =
            find_version(&versions, &record.bucket, &record.key, ids::NULL_VERSION_ID)?
        {
            versions
                .remove(version_key(&old.bucket, &old.key, old.seq).as_slice())
                .map_err(backend)?;
            remove_refs(&mut refs, &old, &mut freed)?;
        }
        record.version_id = ids::NULL_VERSION_ID.to_owned();
    } else {
        record.version_id = ids::version_id(record.seq);
    }
    for segment in &record.segments {
        ref_add(&mut refs, &segment.blob_id, &mut freed)?;
    }
    let value = encode(&record)?;
    versions
        .insert(
            version_key(&record.bucket, &record.key, record.seq).as_slice(),
            value.as_slice(),
        )
        .map_err(backend)?;
    Ok(PutVersionOutcome {
        record,
        freed_blobs: freed,
    })
}

impl EmbeddedMetaStore {
    /// Opens (or creates) the store at `path`.
    ///
    /// # Errors
    /// Fails when the file cannot be opened or is not a redb database.
    pub fn open(path: &Path) -> MetaResult<Self> {
        Self::open_with_batch(path, BATCH_OPERATIONS_MAX)
    }

    /// As [`open`](Self::open), with at most `batch_operations_max` write
    /// operations per commit; 1 turns group commit off (one transaction and
    /// one fsync per operation, kept to measure what batching gains).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with_batch(path: &Path, batch_operations_max: usize) -> MetaResult<Self> {
        let db = Database::builder()
            .set_cache_size(META_CACHE_BYTES)
            .create(path)
            .map_err(backend)?;
        let txn = db.begin_write().map_err(backend)?;
        for table in [
            BUCKETS,
            VERSIONS,
            UPLOADS,
            UPLOAD_INDEX,
            PARTS,
            BLOB_REFS,
            DOCUMENTS,
        ] {
            txn.open_table(table).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        let db = Arc::new(db);
        let writer = group::GroupCommit::new(Arc::clone(&db), batch_operations_max);
        Ok(Self { db, writer })
    }

    /// Commits made and write operations answered since the store opened.
    #[must_use]
    pub fn commit_stats(&self) -> CommitStats {
        self.writer.stats()
    }

    /// Whether the store at `path` holds deleted documents that a
    /// [`rewrite`](Self::rewrite) has not yet removed from the file.
    ///
    /// # Errors
    /// Fails when the file cannot be opened (another process holds it) or
    /// read.
    pub fn deleted_documents_pending(path: &Path) -> MetaResult<bool> {
        let db = open_exclusive(path)?;
        let txn = db.begin_read().map_err(backend)?;
        let table = match txn.open_table(MAINTENANCE) {
            Ok(table) => table,
            // Written by a version that never set the marker.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(backend(e)),
        };
        Ok(table.get(FORGET_DELETED).map_err(backend)?.is_some())
    }

    /// [`rewrite`](Self::rewrite)s the store at `path` if a document was
    /// deleted since its last rewrite; `None` when there was nothing to
    /// forget (the file is left untouched). Blocking; run it before the
    /// store is opened.
    ///
    /// # Errors
    /// As [`rewrite`](Self::rewrite).
    pub fn forget_deleted(path: &Path) -> MetaResult<Option<Rewrite>> {
        if !path.exists() || !Self::deleted_documents_pending(path)? {
            return Ok(None);
        }
        Self::rewrite(path).map(Some)
    }

    /// Rewrites the store at `path` into a new file holding only its live
    /// entries, then renames it over the old one: no byte of anything
    /// deleted (nor of any earlier version of a record) remains in the
    /// file. Blocking, and it needs the file to itself.
    ///
    /// Crash-safe: the new file is complete and fsynced before the rename
    /// (atomic), and the directory is fsynced after it; until then the old
    /// file is the store, unchanged. Needs free space for a second copy of
    /// the live data. The old file's blocks go back to the file system,
    /// which does not erase them: that is below what a file can promise.
    ///
    /// # Errors
    /// Fails, leaving the old file as it was, when another process (a
    /// running server) holds the store, or on any I/O error.
    pub fn rewrite(path: &Path) -> MetaResult<Rewrite> {
        let file_bytes_before = std::fs::metadata(path).map_err(backend)?.len();
        let staged = rewrite_path(path);
        let old = open_exclusive(path)?;
        match std::fs::remove_file(&staged) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(backend(e)),
        }
        let new = Database::builder()
            .set_cache_size(META_CACHE_BYTES)
            .create(&staged)
            .map_err(backend)?;
        let entries = copy_live_entries(&old, &new)?;
        // Every commit above was durable (redb fsyncs on commit).
        drop(new);
        std::fs::rename(&staged, path).map_err(backend)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(backend)?;
        }
        // Held until now so that nothing opened the store meanwhile.
        drop(old);
        let file_bytes_after = std::fs::metadata(path).map_err(backend)?.len();
        Ok(Rewrite {
            entries,
            file_bytes_before,
            file_bytes_after,
        })
    }

    /// Runs the point read `f` on the calling task, with no hop to the
    /// blocking pool. Only for reads of one record by its key (one B-tree
    /// descent and one decode: microseconds from redb's cache, at worst a few
    /// page reads from the OS page cache), never for scans. A request reads
    /// ten or so such records (bucket, version, IAM and KMS documents); as
    /// `spawn_blocking` hops they cost two thread wake-ups and the pool's
    /// lock each, more than the read itself, and were most of the server's
    /// context switches (docs/performance.md, "Profiles and fixes").
    fn point_read<T>(&self, f: impl FnOnce(&Database) -> MetaResult<T>) -> MetaResult<T> {
        f(&self.db)
    }

    async fn blocking<T, F>(&self, f: F) -> MetaResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> MetaResult<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(backend)?
    }

    /// Runs the write operation `f` in a group commit (see [`group`]): `f`
    /// may run more than once (in transactions that are discarded), so it
    /// takes its inputs by reference and is deterministic apart from fresh
    /// ids; it returns once its transaction is durable.
    async fn write<T, F>(&self, f: F) -> MetaResult<T>
    where
        T: Send + 'static,
        F: Fn(&redb::WriteTransaction) -> MetaResult<T> + Send + 'static,
    {
        self.writer.submit(f).await
    }
}

#[async_trait::async_trait]
impl MetaStore for EmbeddedMetaStore {
    async fn create_bucket(&self, bucket: BucketRecord) -> MetaResult<()> {
        self.write(move |txn| {
            let mut buckets = txn.open_table(BUCKETS).map_err(backend)?;
            if buckets
                .get(bucket.name.as_bytes())
                .map_err(backend)?
                .is_some()
            {
                return Err(MetaError::BucketAlreadyExists);
            }
            let value = encode(&bucket)?;
            buckets
                .insert(bucket.name.as_bytes(), value.as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn get_bucket(&self, name: &str) -> MetaResult<Option<BucketRecord>> {
        self.point_read(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let buckets = txn.open_table(BUCKETS).map_err(backend)?;
            buckets
                .get(name.as_bytes())
                .map_err(backend)?
                .map(|v| decode(v.value()))
                .transpose()
        })
    }

    async fn update_bucket(&self, bucket: BucketRecord) -> MetaResult<()> {
        self.write(move |txn| {
            let mut buckets = txn.open_table(BUCKETS).map_err(backend)?;
            if buckets
                .get(bucket.name.as_bytes())
                .map_err(backend)?
                .is_none()
            {
                return Err(MetaError::NoSuchBucket);
            }
            let value = encode(&bucket)?;
            buckets
                .insert(bucket.name.as_bytes(), value.as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn delete_bucket(&self, name: &str) -> MetaResult<()> {
        let name = name.to_owned();
        self.write(move |txn| {
            let mut buckets = txn.open_table(BUCKETS).map_err(backend)?;
            if buckets.get(name.as_bytes()).map_err(backend)?.is_none() {
                return Err(MetaError::NoSuchBucket);
            }
            let prefix = bucket_prefix(&name);
            for table in [VERSIONS, UPLOADS] {
                let t = txn.open_table(table).map_err(backend)?;
                let mut range = t.range(prefix.as_slice()..).map_err(backend)?;
                if let Some(entry) = range.next() {
                    let (k, _) = entry.map_err(backend)?;
                    if k.value().starts_with(&prefix) {
                        return Err(MetaError::BucketNotEmpty);
                    }
                }
            }
            buckets.remove(name.as_bytes()).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn list_buckets(&self) -> MetaResult<Vec<BucketRecord>> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let buckets = txn.open_table(BUCKETS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in buckets.iter().map_err(backend)? {
                let (_, v) = entry.map_err(backend)?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn put_version(&self, put: PutVersion) -> MetaResult<PutVersionOutcome> {
        self.write(move |txn| write_version(txn, put.clone())).await
    }

    async fn get_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> MetaResult<Option<VersionRecord>> {
        let read = |db: &Database, bucket: &str, key: &str, version_id: Option<&str>| {
            let txn = db.begin_read().map_err(backend)?;
            let versions = txn.open_table(VERSIONS).map_err(backend)?;
            if let Some(version_id) = version_id {
                return find_version(&versions, bucket, key, version_id);
            }
            let prefix = key_prefix(bucket, key);
            let mut range = versions.range(prefix.as_slice()..).map_err(backend)?;
            if let Some(entry) = range.next() {
                let (k, v) = entry.map_err(backend)?;
                if k.value().starts_with(&prefix) {
                    return decode(v.value()).map(Some);
                }
            }
            Ok(None)
        };
        match version_id {
            // The `null` version is found by walking the key's versions: a
            // scan, so on the blocking pool.
            Some(v) if ids::version_seq(v).is_none() => {
                let (bucket, key, v) = (bucket.to_owned(), key.to_owned(), v.to_owned());
                self.blocking(move |db| read(db, &bucket, &key, Some(&v)))
                    .await
            }
            _ => self.point_read(|db| read(db, bucket, key, version_id)),
        }
    }

    async fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> MetaResult<(VersionRecord, Vec<String>)> {
        let (bucket, key, version_id) = (bucket.to_owned(), key.to_owned(), version_id.to_owned());
        self.write(move |txn| {
            let mut versions = txn.open_table(VERSIONS).map_err(backend)?;
            let mut refs = txn.open_table(BLOB_REFS).map_err(backend)?;
            let record = find_version(&versions, &bucket, &key, &version_id)?
                .ok_or(MetaError::NoSuchVersion)?;
            versions
                .remove(version_key(&bucket, &key, record.seq).as_slice())
                .map_err(backend)?;
            let mut freed = Vec::new();
            remove_refs(&mut refs, &record, &mut freed)?;
            Ok((record, freed))
        })
        .await
    }

    async fn set_version_tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        tags: Vec<(String, String)>,
    ) -> MetaResult<VersionRecord> {
        let (bucket, key, version_id) = (
            bucket.to_owned(),
            key.to_owned(),
            version_id.map(str::to_owned),
        );
        self.write(move |txn| {
            let mut versions = txn.open_table(VERSIONS).map_err(backend)?;
            let record = match version_id.as_deref() {
                Some(id) => find_version(&versions, &bucket, &key, id)?,
                None => latest_version(&versions, &bucket, &key)?,
            };
            let mut record = record.ok_or(MetaError::NoSuchVersion)?;
            if record.delete_marker {
                return Err(MetaError::NoSuchVersion);
            }
            record.tags.clone_from(&tags);
            let value = encode(&record)?;
            versions
                .insert(
                    version_key(&bucket, &key, record.seq).as_slice(),
                    value.as_slice(),
                )
                .map_err(backend)?;
            Ok(record)
        })
        .await
    }

    async fn scan_latest(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> MetaResult<Vec<VersionRecord>> {
        let (bucket, prefix, after) = (
            bucket.to_owned(),
            prefix.to_owned(),
            after.map(<[u8]>::to_vec),
        );
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let versions = txn.open_table(VERSIONS).map_err(backend)?;
            let mut scope = bucket_prefix(&bucket);
            scope.extend_from_slice(prefix.as_bytes());
            let start = match after {
                Some(after) => scope.clone().max(after_key(&bucket, &after)),
                None => scope.clone(),
            };
            let mut out: Vec<VersionRecord> = Vec::new();
            let mut last_key: Vec<u8> = Vec::new();
            for entry in versions.range(start.as_slice()..).map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                let k = k.value();
                if !k.starts_with(&scope) {
                    break;
                }
                let object_key = object_key_of(k, bucket.len());
                if !out.is_empty() && object_key == last_key.as_slice() {
                    continue; // an older version of the key just taken
                }
                if out.len() == limit {
                    break;
                }
                last_key.clear();
                last_key.extend_from_slice(object_key);
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }

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
        let (bucket, prefix, delimiter) =
            (bucket.to_owned(), prefix.to_owned(), delimiter.to_owned());
        let after = after.map(<[u8]>::to_vec);
        // One read transaction for the whole walk: past a common prefix the
        // walk seeks (a new range in the same transaction), it neither reads
        // the prefix's keys nor starts a new scan.
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let versions = txn.open_table(VERSIONS).map_err(backend)?;
            let mut scope = bucket_prefix(&bucket);
            scope.extend_from_slice(prefix.as_bytes());
            let mut start = match after {
                Some(after) => scope.clone().max(after_key(&bucket, &after)),
                None => scope.clone(),
            };
            let mut out: Vec<VersionRecord> = Vec::new();
            // Each pass of the outer loop is one seek; it ends when the scope
            // does, at `limit` records, or after a visible key that rolls up
            // (the next pass starts past its common prefix). Every pass but
            // the last adds a record, so there are at most `limit` + 1.
            'seek: while out.len() < limit {
                let mut last_key: Option<Vec<u8>> = None;
                for entry in versions.range(start.as_slice()..).map_err(backend)? {
                    let (k, v) = entry.map_err(backend)?;
                    let k = k.value();
                    if !k.starts_with(&scope) {
                        break 'seek;
                    }
                    let object_key = object_key_of(k, bucket.len());
                    if last_key.as_deref() == Some(object_key) {
                        continue; // an older version of the key just taken
                    }
                    if out.len() == limit {
                        break 'seek;
                    }
                    last_key = Some(object_key.to_vec());
                    let record: VersionRecord = decode(v.value())?;
                    let past = match crate::common_prefix(&record.key, &prefix, &delimiter) {
                        Some(cp) if !record.delete_marker => {
                            Some(after_key(&bucket, &crate::past_prefix(cp)))
                        }
                        _ => None,
                    };
                    out.push(record);
                    if let Some(past) = past {
                        start = past;
                        continue 'seek;
                    }
                }
                break;
            }
            Ok(out)
        })
        .await
    }

    async fn scan_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&[u8], Option<u64>)>,
        limit: usize,
    ) -> MetaResult<Vec<VersionRecord>> {
        let (bucket, prefix) = (bucket.to_owned(), prefix.to_owned());
        let after = after.map(|(k, s)| (k.to_vec(), s));
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let versions = txn.open_table(VERSIONS).map_err(backend)?;
            let mut scope = bucket_prefix(&bucket);
            scope.extend_from_slice(prefix.as_bytes());
            let (start, exclusive) = match &after {
                None => (scope.clone(), None),
                Some((key, None)) => (scope.clone().max(after_key(&bucket, key)), None),
                Some((key, Some(seq))) => {
                    let position = version_key(&bucket, &String::from_utf8_lossy(key), *seq);
                    (scope.clone().max(position.clone()), Some(position))
                }
            };
            let mut out = Vec::new();
            for entry in versions.range(start.as_slice()..).map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                let k = k.value();
                if !k.starts_with(&scope) || out.len() == limit {
                    break;
                }
                if exclusive.as_deref() == Some(k) {
                    continue;
                }
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn create_upload(&self, upload: UploadRecord) -> MetaResult<()> {
        self.write(move |txn| {
            if txn
                .open_table(BUCKETS)
                .map_err(backend)?
                .get(upload.bucket.as_bytes())
                .map_err(backend)?
                .is_none()
            {
                return Err(MetaError::NoSuchBucket);
            }
            let mut uploads = txn.open_table(UPLOADS).map_err(backend)?;
            let mut index = txn.open_table(UPLOAD_INDEX).map_err(backend)?;
            let mut k = key_prefix(&upload.bucket, &upload.key);
            k.extend_from_slice(upload.upload_id.as_bytes());
            let value = encode(&upload)?;
            uploads
                .insert(k.as_slice(), value.as_slice())
                .map_err(backend)?;
            let mut location = bucket_prefix(&upload.bucket);
            location.extend_from_slice(upload.key.as_bytes());
            index
                .insert(upload.upload_id.as_bytes(), location.as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn get_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> MetaResult<Option<UploadRecord>> {
        let mut k = key_prefix(bucket, key);
        k.extend_from_slice(upload_id.as_bytes());
        self.point_read(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let uploads = txn.open_table(UPLOADS).map_err(backend)?;
            uploads
                .get(k.as_slice())
                .map_err(backend)?
                .map(|v| decode(v.value()))
                .transpose()
        })
    }

    async fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: PartRecord,
        shared: bool,
    ) -> MetaResult<Vec<String>> {
        let mut upload_key = key_prefix(bucket, key);
        upload_key.extend_from_slice(upload_id.as_bytes());
        let upload_id = upload_id.to_owned();
        self.write(move |txn| {
            if txn
                .open_table(UPLOADS)
                .map_err(backend)?
                .get(upload_key.as_slice())
                .map_err(backend)?
                .is_none()
            {
                return Err(MetaError::NoSuchUpload);
            }
            let mut parts = txn.open_table(PARTS).map_err(backend)?;
            let mut refs = txn.open_table(BLOB_REFS).map_err(backend)?;
            if shared && ref_count(&refs, &part.blob_id)? == 0 {
                return Err(MetaError::SharedBlobGone(part.blob_id.clone()));
            }
            let k = part_key(&upload_id, part.part_number);
            let mut freed = Vec::new();
            let old = parts
                .get(k.as_slice())
                .map_err(backend)?
                .map(|old| decode::<PartRecord>(old.value()))
                .transpose()?;
            ref_add(&mut refs, &part.blob_id, &mut freed)?;
            if let Some(old) = old {
                ref_drop(&mut refs, &old.blob_id, &mut freed)?;
            }
            let value = encode(&part)?;
            parts
                .insert(k.as_slice(), value.as_slice())
                .map_err(backend)?;
            Ok(freed)
        })
        .await
    }

    async fn list_parts(
        &self,
        upload_id: &str,
        after: u32,
        limit: usize,
    ) -> MetaResult<Vec<PartRecord>> {
        let upload_id = upload_id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let parts = txn.open_table(PARTS).map_err(backend)?;
            let start = part_key(&upload_id, after.saturating_add(1));
            let end = part_key(&upload_id, u32::MAX);
            let mut out = Vec::new();
            if after == u32::MAX {
                return Ok(out);
            }
            for entry in parts
                .range(start.as_slice()..=end.as_slice())
                .map_err(backend)?
            {
                if out.len() == limit {
                    break;
                }
                let (_, v) = entry.map_err(backend)?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> MetaResult<Vec<UploadRecord>> {
        let mut scope = bucket_prefix(bucket);
        scope.extend_from_slice(prefix.as_bytes());
        let start = match after {
            None => scope.clone(),
            Some((key, upload_id)) => {
                let mut k = key_prefix(bucket, key);
                k.extend_from_slice(upload_id.as_bytes());
                k.push(0); // strictly after this upload
                scope.clone().max(k)
            }
        };
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let uploads = txn.open_table(UPLOADS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in uploads.range(start.as_slice()..).map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                if !k.value().starts_with(&scope) || out.len() == limit {
                    break;
                }
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> MetaResult<Vec<String>> {
        let mut upload_key = key_prefix(bucket, key);
        upload_key.extend_from_slice(upload_id.as_bytes());
        let upload_id = upload_id.to_owned();
        self.write(move |txn| {
            let mut uploads = txn.open_table(UPLOADS).map_err(backend)?;
            if uploads
                .remove(upload_key.as_slice())
                .map_err(backend)?
                .is_none()
            {
                return Err(MetaError::NoSuchUpload);
            }
            txn.open_table(UPLOAD_INDEX)
                .map_err(backend)?
                .remove(upload_id.as_bytes())
                .map_err(backend)?;
            remove_parts(txn, &upload_id)
        })
        .await
    }

    async fn complete_upload(
        &self,
        upload_id: &str,
        put: PutVersion,
    ) -> MetaResult<PutVersionOutcome> {
        let upload_id = upload_id.to_owned();
        self.write(move |txn| {
            let mut upload_key = key_prefix(&put.record.bucket, &put.record.key);
            upload_key.extend_from_slice(upload_id.as_bytes());
            if txn
                .open_table(UPLOADS)
                .map_err(backend)?
                .remove(upload_key.as_slice())
                .map_err(backend)?
                .is_none()
            {
                return Err(MetaError::NoSuchUpload);
            }
            txn.open_table(UPLOAD_INDEX)
                .map_err(backend)?
                .remove(upload_id.as_bytes())
                .map_err(backend)?;
            // The parts' references go, the version's come: a part kept as a
            // segment goes from one reference to one, and is not freed.
            let freed = remove_parts(txn, &upload_id)?;
            let mut outcome = write_version(txn, put.clone())?;
            let refs = txn.open_table(BLOB_REFS).map_err(backend)?;
            for blob in freed {
                if ref_count(&refs, &blob)? == 0 {
                    outcome.freed_blobs.push(blob);
                }
            }
            Ok(outcome)
        })
        .await
    }

    async fn blob_is_referenced(&self, blob_id: &str) -> MetaResult<bool> {
        self.point_read(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let refs = txn.open_table(BLOB_REFS).map_err(backend)?;
            Ok(refs.get(blob_id.as_bytes()).map_err(backend)?.is_some())
        })
    }

    async fn count_versions(&self) -> MetaResult<u64> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let versions = txn.open_table(VERSIONS).map_err(backend)?;
            versions.len().map_err(backend)
        })
        .await
    }
}

fn document_key(namespace: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(namespace.len() + key.len() + 1);
    out.extend_from_slice(namespace.as_bytes());
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out
}

fn decode_document(key: &str, stored: &[u8]) -> MetaResult<Document> {
    let (revision, value) = stored
        .split_at_checked(8)
        .ok_or_else(|| MetaError::Corrupt(format!("document {key} is truncated")))?;
    let revision = u64::from_be_bytes(revision.try_into().map_err(backend)?);
    Ok(Document {
        key: key.to_owned(),
        revision,
        value: value.to_vec(),
    })
}

#[async_trait::async_trait]
impl crate::DocumentStore for EmbeddedMetaStore {
    async fn get_document(&self, namespace: &str, key: &str) -> MetaResult<Option<Document>> {
        let k = document_key(namespace, key);
        self.point_read(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(DOCUMENTS).map_err(backend)?;
            table
                .get(k.as_slice())
                .map_err(backend)?
                .map(|v| decode_document(key, v.value()))
                .transpose()
        })
    }

    async fn scan_documents(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> MetaResult<Vec<Document>> {
        let scope = document_key(namespace, prefix);
        let namespace_len = namespace.len() + 1;
        let start = match after {
            Some(after) => {
                let mut k = document_key(namespace, after);
                k.push(0); // strictly after: keys never hold NUL
                scope.clone().max(k)
            }
            None => scope.clone(),
        };
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(DOCUMENTS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in table.range(start.as_slice()..).map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                if !k.value().starts_with(&scope) || out.len() == limit {
                    break;
                }
                let key = String::from_utf8_lossy(&k.value()[namespace_len..]).into_owned();
                out.push(decode_document(&key, v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn commit_documents(&self, writes: Vec<crate::DocumentWrite>) -> MetaResult<()> {
        self.write(move |txn| {
            let mut table = txn.open_table(DOCUMENTS).map_err(backend)?;
            let mut deleted = false;
            for write in &writes {
                if write.key.contains('\0') || write.namespace.contains('\0') {
                    return Err(MetaError::Backend(
                        "document keys must not contain NUL".into(),
                    ));
                }
                let k = document_key(&write.namespace, &write.key);
                let current = table
                    .get(k.as_slice())
                    .map_err(backend)?
                    .map(|v| decode_document(&write.key, v.value()))
                    .transpose()?;
                let holds = match (write.expect, &current) {
                    (crate::Expect::Any, _) | (crate::Expect::Absent, None) => true,
                    (crate::Expect::Revision(r), Some(doc)) => doc.revision == r,
                    _ => false,
                };
                if !holds {
                    return Err(MetaError::PreconditionFailed);
                }
                match &write.value {
                    None => {
                        deleted |= table.remove(k.as_slice()).map_err(backend)?.is_some();
                    }
                    Some(value) => {
                        let revision = current.map_or(1, |d| d.revision + 1);
                        let mut stored = revision.to_be_bytes().to_vec();
                        stored.extend_from_slice(value);
                        table
                            .insert(k.as_slice(), stored.as_slice())
                            .map_err(backend)?;
                    }
                }
            }
            if deleted {
                // In the deleting transaction: no deletion commits without
                // the promise that the next rewrite forgets it.
                let mut maintenance = txn.open_table(MAINTENANCE).map_err(backend)?;
                if maintenance.get(FORGET_DELETED).map_err(backend)?.is_none() {
                    maintenance
                        .insert(FORGET_DELETED, [].as_slice())
                        .map_err(backend)?;
                }
            }
            Ok(())
        })
        .await
    }
}

/// Opens the file at `path`, which must exist, for a rewrite: redb locks it,
/// so this fails while a server (or any other store) has it open.
fn open_exclusive(path: &Path) -> MetaResult<Database> {
    Database::builder()
        .set_cache_size(META_CACHE_BYTES)
        .open(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => MetaError::Backend(format!(
                "{} is in use by another process (is the server running?)",
                path.display()
            )),
            e => backend(e),
        })
}

fn rewrite_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(REWRITE_SUFFIX);
    path.with_file_name(name)
}

/// Copies every entry of every table of `old` except `maintenance` (what a
/// rewrite fulfils) into `new`, in transactions of a bounded number of
/// entries; checks each table's count after copying it. Returns the number
/// of entries copied.
fn copy_live_entries(old: &Database, new: &Database) -> MetaResult<u64> {
    let read = old.begin_read().map_err(backend)?;
    if read
        .list_multimap_tables()
        .map_err(backend)?
        .next()
        .is_some()
    {
        // This store never creates one; copying what it does not know
        // would be guesswork.
        return Err(MetaError::Corrupt(
            "the metadata store holds a multimap table it does not know".into(),
        ));
    }
    let mut total = 0_u64;
    for handle in read.list_tables().map_err(backend)? {
        let name = handle.name().to_owned();
        if name == MAINTENANCE.name() {
            continue;
        }
        // Every table of this store maps bytes to bytes; any other type is
        // refused by `open_table` (the rewrite then stops, the file intact).
        let definition = TableDefinition::<&[u8], &[u8]>::new(&name);
        let source = read.open_table(definition).map_err(backend)?;
        let mut copied = 0_u64;
        let mut last: Option<Vec<u8>> = None;
        loop {
            let txn = new.begin_write().map_err(backend)?;
            let mut in_transaction = 0_usize;
            {
                let mut target = txn.open_table(definition).map_err(backend)?;
                let start = match &last {
                    None => Bound::Unbounded,
                    Some(key) => Bound::Excluded(key.as_slice()),
                };
                for entry in source
                    .range::<&[u8]>((start, Bound::Unbounded))
                    .map_err(backend)?
                {
                    if in_transaction == META_REWRITE_TRANSACTION_ENTRIES_MAX {
                        break;
                    }
                    let (k, v) = entry.map_err(backend)?;
                    target.insert(k.value(), v.value()).map_err(backend)?;
                    last = Some(k.value().to_vec());
                    in_transaction += 1;
                }
            }
            txn.commit().map_err(backend)?;
            copied += in_transaction as u64;
            if in_transaction < META_REWRITE_TRANSACTION_ENTRIES_MAX {
                break;
            }
        }
        let expected = source.len().map_err(backend)?;
        if copied != expected {
            return Err(MetaError::Backend(format!(
                "rewrite of table {name} copied {copied} of {expected} entries"
            )));
        }
        total += copied;
    }
    Ok(total)
}

/// Deletes every part of an upload and drops their blob references; returns
/// the blobs left without any.
fn remove_parts(txn: &redb::WriteTransaction, upload_id: &str) -> MetaResult<Vec<String>> {
    let mut parts = txn.open_table(PARTS).map_err(backend)?;
    let mut refs = txn.open_table(BLOB_REFS).map_err(backend)?;
    let start = part_key(upload_id, 0);
    let end = part_key(upload_id, u32::MAX);
    let mut freed = Vec::new();
    let mut doomed = Vec::new();
    for entry in parts
        .range(start.as_slice()..=end.as_slice())
        .map_err(backend)?
    {
        let (k, v) = entry.map_err(backend)?;
        let part: PartRecord = decode(v.value())?;
        doomed.push((k.value().to_vec(), part.blob_id));
    }
    for (k, blob) in doomed {
        parts.remove(k.as_slice()).map_err(backend)?;
        ref_drop(&mut refs, &blob, &mut freed)?;
    }
    Ok(freed)
}

#[cfg(test)]
mod rewrite_bench;
#[cfg(test)]
mod tests;
