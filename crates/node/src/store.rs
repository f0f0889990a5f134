//! Blobs on a storage node's disk: `nuage-blob`'s file format (blocks with
//! CRC32C) under `DATA/blobs/<first two hex digits>/<id>`.
//!
//! A write goes to `DATA/tmp/<id>.<random>` and becomes visible only once
//! durable: the file is fsynced, hard-linked to its final name (which fails
//! if the name exists, so two writers of one id never overwrite each other),
//! the temporary name removed and the directory fsynced. A crash at any
//! point leaves at most a file in `tmp/`, which `open` removes: a listing
//! never shows a partial blob, and nothing is acknowledged before it is
//! durable.
//!
//! Space: every write reserves what its file will take before it writes
//! (the declared length, or steps of `NODE_RESERVE_STEP_BYTES` as bytes
//! arrive), against the smaller of the file system's available space less
//! the configured reserve and the configured capacity less what is stored;
//! a write that does not fit is refused and its temporary file removed.
//! This module never speaks HTTP.

use crate::NodeError;
use crate::limits;
use crate::wire::{BlobInfo, ListPage, VerifyReceipt, WriteReceipt, is_valid_blob_id};
use bytes::{Bytes, BytesMut};
use nuage_blob::format;
use sha2::{Digest as _, Sha256};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::UNIX_EPOCH;

const BLOBS_DIR: &str = "blobs";
const TMP_DIR: &str = "tmp";

/// Where and how much a node stores.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// A cap on the bytes of blob files; `None`: the file system's size.
    pub capacity_bytes: Option<u64>,
    /// Space the node leaves free on its file system.
    pub reserve_bytes: u64,
}

/// The node's blob files.
#[derive(Clone)]
pub struct NodeStore {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
    blobs_dir: PathBuf,
    tmp_dir: PathBuf,
    capacity_bytes: Option<u64>,
    reserve_bytes: u64,
    block_bytes: u32,
    space: Mutex<Space>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Space {
    /// Bytes of committed blob files.
    used_bytes: u64,
    blob_count: u64,
    /// Bytes reserved by writes in progress.
    in_flight_bytes: u64,
}

/// The store's view of its space, for `/v1/status`.
#[derive(Debug, Clone, Copy)]
pub struct SpaceReport {
    pub used_bytes: u64,
    pub blob_count: u64,
    pub capacity_bytes: Option<u64>,
    pub fs_total_bytes: u64,
    pub fs_available_bytes: u64,
    pub reserve_bytes: u64,
    pub writable_bytes: u64,
}

/// Bytes of the file holding `data_len` data bytes.
#[must_use]
pub fn file_bytes_for(data_len: u64, block_bytes: u32) -> u64 {
    let blocks = data_len.div_ceil(u64::from(block_bytes));
    format::HEADER_BYTES + data_len + blocks * format::CRC_BYTES
}

fn blocking_err(e: tokio::task::JoinError) -> NodeError {
    NodeError::Io(std::io::Error::other(e))
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn modified_ms(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl NodeStore {
    /// Opens the store, creating its directories; removes what crashed writes
    /// left in `tmp/` and counts what is stored. Blocking: call it before
    /// serving, or on the blocking pool.
    ///
    /// # Errors
    /// I/O errors creating or walking the directories.
    pub fn open(config: &StoreConfig) -> Result<Self, NodeError> {
        let blobs_dir = config.data_dir.join(BLOBS_DIR);
        let tmp_dir = config.data_dir.join(TMP_DIR);
        std::fs::create_dir_all(&blobs_dir)?;
        std::fs::create_dir_all(&tmp_dir)?;
        for shard in 0..=255u8 {
            let dir = blobs_dir.join(format!("{shard:02x}"));
            if !dir.exists() {
                std::fs::create_dir(&dir)?;
            }
        }
        fsync_dir(&blobs_dir)?;
        fsync_dir(&config.data_dir)?;
        let mut removed = 0u64;
        for entry in std::fs::read_dir(&tmp_dir)? {
            let entry = entry?;
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
        if removed > 0 {
            fsync_dir(&tmp_dir)?;
            tracing::info!(removed, "removed partial blobs of interrupted writes");
        }
        let mut space = Space::default();
        for shard in std::fs::read_dir(&blobs_dir)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(shard.path())? {
                let entry = entry?;
                space.used_bytes += entry.metadata()?.len();
                space.blob_count += 1;
            }
        }
        let block_bytes = u32::try_from(nuage_base::limits::BLOB_BLOCK_BYTES).unwrap_or(u32::MAX);
        Ok(Self {
            inner: Arc::new(Inner {
                data_dir: config.data_dir.clone(),
                blobs_dir,
                tmp_dir,
                capacity_bytes: config.capacity_bytes,
                reserve_bytes: config.reserve_bytes,
                block_bytes,
                space: Mutex::new(space),
            }),
        })
    }

    fn space(&self) -> std::sync::MutexGuard<'_, Space> {
        self.inner
            .space
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn check_id(blob_id: &str) -> Result<(), NodeError> {
        if is_valid_blob_id(blob_id) {
            Ok(())
        } else {
            Err(NodeError::BadRequest(format!(
                "`{blob_id}` is not a blob id (lowercase hex, {} to {} characters)",
                limits::BLOB_ID_BYTES_MIN,
                limits::BLOB_ID_BYTES_MAX
            )))
        }
    }

    /// Callers check the id first; a bad one still never panics here.
    fn blob_path(&self, blob_id: &str) -> PathBuf {
        let shard = blob_id.get(..2).unwrap_or("00");
        self.inner.blobs_dir.join(shard).join(blob_id)
    }

    /// `(total, available)` bytes of the data directory's file system.
    fn fs_space(&self) -> Result<(u64, u64), NodeError> {
        let stat = rustix::fs::statvfs(&self.inner.data_dir)
            .map_err(|e| NodeError::Io(std::io::Error::from(e)))?;
        Ok((
            stat.f_blocks.saturating_mul(stat.f_frsize),
            stat.f_bavail.saturating_mul(stat.f_frsize),
        ))
    }

    fn writable(&self, space: &Space, fs_available: u64) -> u64 {
        let by_fs = fs_available.saturating_sub(self.inner.reserve_bytes);
        let by_capacity = self
            .inner
            .capacity_bytes
            .map_or(u64::MAX, |c| c.saturating_sub(space.used_bytes));
        by_fs.min(by_capacity).saturating_sub(space.in_flight_bytes)
    }

    /// Reserves `bytes` for a write, or says why not.
    fn reserve(&self, bytes: u64) -> Result<(), NodeError> {
        let (_, available) = self.fs_space()?;
        let mut space = self.space();
        let writable = self.writable(&space, available);
        if bytes > writable {
            return Err(NodeError::InsufficientStorage(format!(
                "{bytes} bytes needed, {writable} writable (reserve {} bytes{})",
                self.inner.reserve_bytes,
                self.inner
                    .capacity_bytes
                    .map(|c| format!(", capacity {c} bytes"))
                    .unwrap_or_default()
            )));
        }
        space.in_flight_bytes += bytes;
        Ok(())
    }

    fn release(&self, bytes: u64) {
        let mut space = self.space();
        space.in_flight_bytes = space.in_flight_bytes.saturating_sub(bytes);
    }

    /// Space figures for the status endpoint.
    ///
    /// # Errors
    /// When the file system cannot be queried.
    pub fn space_report(&self) -> Result<SpaceReport, NodeError> {
        let (total, available) = self.fs_space()?;
        let space = *self.space();
        Ok(SpaceReport {
            used_bytes: space.used_bytes,
            blob_count: space.blob_count,
            capacity_bytes: self.inner.capacity_bytes,
            fs_total_bytes: total,
            fs_available_bytes: available,
            reserve_bytes: self.inner.reserve_bytes,
            writable_bytes: self.writable(&space, available),
        })
    }

    /// Starts writing `blob_id`. With `declared_len`, the whole file's space
    /// is reserved now (and refused now if it does not fit); without, space
    /// is reserved as bytes arrive.
    ///
    /// # Errors
    /// `BadRequest` for a bad id, `InsufficientStorage`, I/O errors.
    pub async fn begin_write(
        &self,
        blob_id: &str,
        declared_len: Option<u64>,
    ) -> Result<PendingBlob, NodeError> {
        Self::check_id(blob_id)?;
        let reserved = match declared_len {
            Some(len) => file_bytes_for(len, self.inner.block_bytes),
            None => format::HEADER_BYTES,
        };
        self.reserve(reserved)?;
        let suffix = nuage_base::ids::random_id();
        let tmp_path = self.inner.tmp_dir.join(format!("{blob_id}.{suffix}"));
        // From here the guard releases the reservation and removes the file.
        let mut pending = PendingBlob {
            store: self.clone(),
            blob_id: blob_id.to_owned(),
            tmp_path: tmp_path.clone(),
            writing: None,
            in_flight: None,
            block: BytesMut::with_capacity(self.inner.block_bytes as usize),
            written: 0,
            declared_len,
            reserved,
            settled: false,
        };
        let block_bytes = self.inner.block_bytes;
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(tmp_path)?;
            file.write_all(&format::header(block_bytes))?;
            Ok(file)
        })
        .await
        .map_err(blocking_err)??;
        pending.writing = Some(Writing {
            file,
            hasher: Sha256::new(),
        });
        Ok(pending)
    }

    /// A blob's length and modification time.
    ///
    /// # Errors
    /// `NotFound`, `Corrupt`, `BadRequest` for a bad id.
    pub async fn stat(&self, blob_id: &str) -> Result<BlobInfo, NodeError> {
        Self::check_id(blob_id)?;
        let path = self.blob_path(blob_id);
        let id = blob_id.to_owned();
        tokio::task::spawn_blocking(move || stat_file(&path, &id))
            .await
            .map_err(blocking_err)?
    }

    /// Streams `[offset, offset + len)` of a blob whose id and length the
    /// caller has checked with [`stat`](Self::stat) (a range past the end
    /// ends the stream with `Corrupt`).
    #[must_use]
    pub fn read(
        &self,
        blob_id: &str,
        offset: u64,
        len: u64,
        verified_by_caller: bool,
    ) -> nuage_blob::BlobStream {
        nuage_blob::local::stream_file(
            self.blob_path(blob_id),
            blob_id,
            offset,
            len,
            verified_by_caller,
        )
    }

    /// Reads the whole blob back on the blocking pool, checking every
    /// block's CRC32C, and computes the SHA-256 of its data: what a scrubber
    /// compares with what the blob should be. Memory: one block at a time.
    ///
    /// # Errors
    /// `NotFound`, `Corrupt` (bad header, impossible length, a block that
    /// fails its checksum), `BadRequest` for a bad id, I/O errors.
    pub async fn verify(&self, blob_id: &str) -> Result<VerifyReceipt, NodeError> {
        Self::check_id(blob_id)?;
        let path = self.blob_path(blob_id);
        let id = blob_id.to_owned();
        let (length, sha256) = tokio::task::spawn_blocking(move || digest_file(&path, &id))
            .await
            .map_err(blocking_err)??;
        Ok(VerifyReceipt {
            blob_id: blob_id.to_owned(),
            length,
            sha256,
        })
    }

    /// Removes a blob; returns whether it was there.
    ///
    /// # Errors
    /// `BadRequest` for a bad id, I/O errors.
    pub async fn delete(&self, blob_id: &str) -> Result<bool, NodeError> {
        Self::check_id(blob_id)?;
        let path = self.blob_path(blob_id);
        let removed = tokio::task::spawn_blocking(move || -> std::io::Result<Option<u64>> {
            let bytes = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
            if let Some(dir) = path.parent() {
                fsync_dir(dir)?;
            }
            Ok(Some(bytes))
        })
        .await
        .map_err(blocking_err)??;
        if let Some(bytes) = removed {
            let mut space = self.space();
            space.used_bytes = space.used_bytes.saturating_sub(bytes);
            space.blob_count = space.blob_count.saturating_sub(1);
        }
        Ok(removed.is_some())
    }

    /// Up to `limit` blobs whose ids sort after `after`, in id order.
    ///
    /// # Errors
    /// `BadRequest` for a bad `after` or limit, I/O errors.
    pub async fn list(&self, after: Option<&str>, limit: usize) -> Result<ListPage, NodeError> {
        if let Some(after) = after {
            Self::check_id(after)?;
        }
        if limit == 0 || limit > limits::NODE_LIST_PAGE_MAX {
            return Err(NodeError::BadRequest(format!(
                "limit must be 1 to {}",
                limits::NODE_LIST_PAGE_MAX
            )));
        }
        let blobs_dir = self.inner.blobs_dir.clone();
        let after = after.map(str::to_owned);
        tokio::task::spawn_blocking(move || list_blocking(&blobs_dir, after.as_deref(), limit))
            .await
            .map_err(blocking_err)?
    }
}

fn stat_file(path: &Path, blob_id: &str) -> Result<BlobInfo, NodeError> {
    let length = nuage_blob::local::file_data_len(path, blob_id).map_err(from_blob)?;
    let meta = std::fs::metadata(path)?;
    Ok(BlobInfo {
        blob_id: blob_id.to_owned(),
        length,
        modified_ms: modified_ms(&meta),
    })
}

/// The blob crate's errors in this crate's terms.
#[must_use]
pub fn from_blob(e: nuage_blob::BlobError) -> NodeError {
    match e {
        nuage_blob::BlobError::NotFound(id) => NodeError::NotFound(id),
        nuage_blob::BlobError::Corrupt { blob_id, detail } => {
            NodeError::Corrupt { blob_id, detail }
        }
        nuage_blob::BlobError::Io(e) => NodeError::Io(e),
    }
}

fn list_blocking(
    blobs_dir: &Path,
    after: Option<&str>,
    limit: usize,
) -> Result<ListPage, NodeError> {
    let first_shard = after.map_or(0, |a| u8::from_str_radix(&a[..2], 16).unwrap_or(0));
    // One more than a page, to know whether another page follows.
    let mut names: Vec<String> = Vec::with_capacity(limit + 1);
    for shard in first_shard..=255u8 {
        let dir = blobs_dir.join(format!("{shard:02x}"));
        let mut in_shard: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if is_valid_blob_id(&name) && after.is_none_or(|a| name.as_str() > a) {
                in_shard.push(name);
            }
        }
        in_shard.sort_unstable();
        let room = limit + 1 - names.len();
        names.extend(in_shard.into_iter().take(room));
        if names.len() > limit {
            break;
        }
    }
    let more = names.len() > limit;
    names.truncate(limit);
    let mut blobs = Vec::with_capacity(names.len());
    for name in &names {
        let path = blobs_dir.join(&name[..2]).join(name);
        match stat_file(&path, name) {
            Ok(info) => blobs.push(info),
            // Deleted between the directory read and now.
            Err(NodeError::NotFound(_)) => {}
            Err(NodeError::Corrupt { detail, .. }) => {
                tracing::warn!(blob_id = %name, %detail, "corrupt blob file listed with length 0");
                blobs.push(BlobInfo {
                    blob_id: name.clone(),
                    length: 0,
                    modified_ms: 0,
                });
            }
            Err(e) => return Err(e),
        }
    }
    let next_after = if more { names.last().cloned() } else { None };
    Ok(ListPage { blobs, next_after })
}

/// The file and running digest of a write, owned by whichever task writes.
struct Writing {
    file: std::fs::File,
    hasher: Sha256,
}

type BlockWrite = tokio::task::JoinHandle<std::io::Result<Writing>>;

/// A blob being written. Dropped before [`finish`](Self::finish), it removes
/// its temporary file and releases its space.
pub struct PendingBlob {
    store: NodeStore,
    blob_id: String,
    tmp_path: PathBuf,
    /// The file, when no block write holds it.
    writing: Option<Writing>,
    /// The block being written on the blocking pool, at most one: the next
    /// block fills from the network meanwhile.
    in_flight: Option<BlockWrite>,
    block: BytesMut,
    written: u64,
    declared_len: Option<u64>,
    reserved: u64,
    settled: bool,
}

impl PendingBlob {
    /// Data bytes received so far.
    #[must_use]
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends bytes, writing each full block.
    ///
    /// # Errors
    /// `BadRequest` past the declared length, `InsufficientStorage`, I/O.
    pub async fn append(&mut self, mut data: Bytes) -> Result<(), NodeError> {
        let after = self.written + data.len() as u64;
        match self.declared_len {
            Some(declared) if after > declared => {
                return Err(NodeError::BadRequest(format!(
                    "body longer than its declared {declared} bytes"
                )));
            }
            Some(_) => {}
            None => {
                let needed = file_bytes_for(after, self.store.inner.block_bytes);
                if needed > self.reserved {
                    // A step ahead when there is room for it; near the
                    // limit, exactly what these bytes need.
                    let exact = needed - self.reserved;
                    let step = exact.max(limits::NODE_RESERVE_STEP_BYTES);
                    let got = match self.store.reserve(step) {
                        Ok(()) => step,
                        Err(_) => self.store.reserve(exact).map(|()| exact)?,
                    };
                    self.reserved += got;
                }
            }
        }
        let block_bytes = self.store.inner.block_bytes as usize;
        while !data.is_empty() {
            let take = (block_bytes - self.block.len()).min(data.len());
            self.block.extend_from_slice(&data.split_to(take));
            self.written += take as u64;
            if self.block.len() == block_bytes {
                self.write_block().await?;
            }
        }
        Ok(())
    }

    /// Waits for the block in flight, if any, and takes the file back.
    async fn take_file(&mut self) -> Result<Writing, NodeError> {
        if let Some(handle) = self.in_flight.take() {
            return Ok(handle.await.map_err(blocking_err)??);
        }
        self.writing
            .take()
            .ok_or_else(|| NodeError::Io(std::io::Error::other("blob writer already closed")))
    }

    /// Starts writing the buffered block (data, then its CRC32C).
    async fn write_block(&mut self) -> Result<(), NodeError> {
        if self.block.is_empty() {
            return Ok(());
        }
        let data = self.block.split().freeze();
        let mut writing = self.take_file().await?;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            writing.hasher.update(&data);
            let crc = crc32c::crc32c(&data);
            writing.file.write_all(&data)?;
            writing.file.write_all(&crc.to_le_bytes())?;
            Ok(writing)
        }));
        Ok(())
    }

    /// Makes the blob durable and visible under its id; an identical blob
    /// already there is success (`existed`), a different one `Exists`.
    ///
    /// # Errors
    /// `BadRequest` when fewer bytes came than declared, `Exists`, I/O.
    pub async fn finish(mut self) -> Result<WriteReceipt, NodeError> {
        if let Some(declared) = self.declared_len
            && declared != self.written
        {
            return Err(NodeError::BadRequest(format!(
                "body of {} bytes, {declared} declared",
                self.written
            )));
        }
        self.write_block().await?;
        let writing = self.take_file().await?;
        let sha256 = hex::encode(writing.hasher.finalize());
        let file = writing.file;
        let tmp_path = self.tmp_path.clone();
        let final_path = self.store.blob_path(&self.blob_id);
        let blob_id = self.blob_id.clone();
        let length = self.written;
        let block_bytes = self.store.inner.block_bytes;
        let expected_sha = sha256.clone();
        let existed = tokio::task::spawn_blocking(move || -> Result<bool, NodeError> {
            file.sync_all()?;
            drop(file);
            let existed = match std::fs::hard_link(&tmp_path, &final_path) {
                Ok(()) => false,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let (len, digest) = digest_file(&final_path, &blob_id)?;
                    if len != length || digest != expected_sha {
                        return Err(NodeError::Exists(format!(
                            "blob {blob_id} is stored with {len} bytes of SHA-256 {digest}, \
                             this write has {length} bytes of SHA-256 {expected_sha}"
                        )));
                    }
                    true
                }
                Err(e) => return Err(e.into()),
            };
            std::fs::remove_file(&tmp_path)?;
            if let Some(dir) = final_path.parent() {
                fsync_dir(dir)?;
            }
            Ok(existed)
        })
        .await
        .map_err(blocking_err)??;
        self.settled = true;
        let mut space = self.store.space();
        space.in_flight_bytes = space.in_flight_bytes.saturating_sub(self.reserved);
        if !existed {
            space.used_bytes += file_bytes_for(length, block_bytes);
            space.blob_count += 1;
        }
        drop(space);
        Ok(WriteReceipt {
            blob_id: self.blob_id.clone(),
            length,
            sha256,
            existed,
        })
    }
}

/// Length and SHA-256 of a stored blob, every block checked.
fn digest_file(path: &Path, blob_id: &str) -> Result<(u64, String), NodeError> {
    let len = nuage_blob::local::file_data_len(path, blob_id).map_err(from_blob)?;
    let mut hasher = Sha256::new();
    nuage_blob::local::read_file(path, blob_id, 0, len, |chunk| {
        hasher.update(&chunk);
        true
    })
    .map_err(from_blob)?;
    Ok((len, hex::encode(hasher.finalize())))
}

impl Drop for PendingBlob {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.store.release(self.reserved);
        let path = self.tmp_path.clone();
        let remove = move || {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a partial blob");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sizes_match_the_blob_format() {
        let block = 8u32;
        for data in [0u64, 1, 8, 9, 16, 17] {
            let file = file_bytes_for(data, block);
            assert_eq!(format::data_len(file, block), Some(data), "{data}");
        }
    }
}
