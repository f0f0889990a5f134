//! Blobs as files under `<root>/<first two hex digits of id>/<id>`.
//!
//! Durability: `finish` fsyncs the file and then its directory, so the blob
//! survives a crash once `finish` returns. Integrity: every block is followed by
//! its CRC32C, checked on every read; a mismatch ends the stream with
//! [`BlobError::Corrupt`] before the bad bytes are yielded. The one exception is
//! `read_authenticated`, whose caller authenticates every byte itself (AEAD):
//! there the CRC32C is written but not recomputed, since it would cost about a
//! third as much CPU as the cipher to check the same bytes twice (see
//! `docs/performance.md`); the caller re-reads with `read` when its check fails.

use crate::format;
use crate::{BlobEntry, BlobError, BlobResult, BlobStore, BlobStream, BlobWriter};
use bytes::{Bytes, BytesMut};
use nuage_base::limits;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Blobs in a directory of the local file system.
#[derive(Clone)]
pub struct LocalBlobStore {
    root: Arc<PathBuf>,
    block_bytes: u32,
}

impl LocalBlobStore {
    /// Opens (creating if needed) a blob store rooted at `root`.
    ///
    /// # Errors
    /// Fails when the directories cannot be created.
    pub fn open(root: &Path) -> BlobResult<Self> {
        std::fs::create_dir_all(root)?;
        for shard in 0..=255u8 {
            let dir = root.join(format!("{shard:02x}"));
            if !dir.exists() {
                std::fs::create_dir(&dir)?;
            }
        }
        fsync_dir(root)?;
        let block_bytes = u32::try_from(limits::BLOB_BLOCK_BYTES).unwrap_or(u32::MAX);
        Ok(Self {
            root: Arc::new(root.to_path_buf()),
            block_bytes,
        })
    }

    fn path(&self, blob_id: &str) -> Option<PathBuf> {
        // Ids are ours (hex); refuse anything else rather than touch odd paths.
        if blob_id.len() < 3 || !blob_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(self.root.join(&blob_id[..2]).join(blob_id))
    }
}

impl LocalBlobStore {
    fn read_blocks_async(
        &self,
        blob_id: &str,
        offset: u64,
        len: u64,
        verify: Verify,
    ) -> BlobStream {
        stream_blocks(self.path(blob_id), blob_id, offset, len, verify)
    }
}

/// Streams `len` bytes from `offset` of the blob file at `path` (this crate's
/// format), for other stores that keep blobs in it (storage nodes). With
/// `verified_by_caller`, the caller authenticates every byte itself and block
/// checksums are skipped, as in [`BlobStore::read_authenticated`].
#[must_use]
pub fn stream_file(
    path: PathBuf,
    blob_id: &str,
    offset: u64,
    len: u64,
    verified_by_caller: bool,
) -> BlobStream {
    let verify = if verified_by_caller {
        Verify::ByCaller
    } else {
        Verify::Checksums
    };
    stream_blocks(Some(path), blob_id, offset, len, verify)
}

/// [`stream_file`] on the calling (blocking) thread: hands each verified
/// slice to `emit`, stopping early when it returns false.
///
/// # Errors
/// `NotFound`, `Corrupt` (bad header, length or checksum), or I/O errors.
pub fn read_file(
    path: &Path,
    blob_id: &str,
    offset: u64,
    len: u64,
    emit: impl FnMut(Bytes) -> bool,
) -> BlobResult<()> {
    read_blocks(Some(path), blob_id, offset, len, Verify::Checksums, emit)
}

/// The data length of the blob file at `path`, from its header and size.
///
/// # Errors
/// `NotFound`, `Corrupt` when the header or the length is impossible.
pub fn file_data_len(path: &Path, blob_id: &str) -> BlobResult<u64> {
    let corrupt = |detail: String| BlobError::Corrupt {
        blob_id: blob_id.to_owned(),
        detail,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BlobError::NotFound(blob_id.to_owned()));
        }
        Err(e) => return Err(e.into()),
    };
    let mut header = [0u8; 16];
    file.read_exact(&mut header)
        .map_err(|e| corrupt(format!("header unreadable: {e}")))?;
    let block_bytes = format::parse_header(&header).ok_or_else(|| corrupt("bad header".into()))?;
    let file_bytes = file.metadata()?.len();
    format::data_len(file_bytes, block_bytes)
        .ok_or_else(|| corrupt(format!("impossible length {file_bytes}")))
}

fn stream_blocks(
    path: Option<PathBuf>,
    blob_id: &str,
    offset: u64,
    len: u64,
    verify: Verify,
) -> BlobStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<BlobResult<Bytes>>(limits::READ_AHEAD_BLOCKS_MAX);
    let blob_id = blob_id.to_owned();
    tokio::task::spawn_blocking(move || {
        let result = read_blocks(path.as_deref(), &blob_id, offset, len, verify, |chunk| {
            tx.blocking_send(Ok(chunk)).is_ok()
        });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Who checks the bytes of a block read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// This store, against each block's CRC32C, before yielding it.
    Checksums,
    /// The caller, which authenticates every byte (AEAD) before use.
    ByCaller,
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

struct LocalWriter {
    blob_id: String,
    path: PathBuf,
    /// Created (with its header) by the first trip to the blocking pool that
    /// writes, not by `create`: a small object's whole blob is then one trip
    /// (create, write, fsyncs), each trip being two thread wake-ups
    /// (docs/performance.md, "Profiles and fixes").
    file: Option<std::fs::File>,
    /// Whether the file was created: from then on `file` is None only while
    /// a trip holds it, or after one failed.
    created: bool,
    block: BytesMut,
    block_bytes: usize,
    written: u64,
    /// Set once the blob is durable (or removed): until then, dropping the
    /// writer (a client that disconnects mid-upload) removes the partial file.
    settled: bool,
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.settled || !self.created {
            return;
        }
        let path = self.path.clone();
        let remove = move || {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not remove an abandoned blob");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// Writes one block (data then its CRC32C), if any, to `file`.
fn write_block(file: &mut std::fs::File, data: &[u8]) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let crc = crc32c::crc32c(data);
    file.write_all(data)?;
    file.write_all(&crc.to_le_bytes())
}

/// Creates the blob file at `path` with its header (it must not exist).
fn create_file(path: &Path, block_bytes: u32) -> std::io::Result<std::fs::File> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(&format::header(block_bytes))?;
    Ok(file)
}

impl LocalWriter {
    /// The open file to hand to a blocking trip, or what that trip needs to
    /// create it: `Err(path)` when it does not exist yet.
    fn take_file(&mut self) -> BlobResult<Result<std::fs::File, PathBuf>> {
        if !self.created {
            self.created = true;
            return Ok(Err(self.path.clone()));
        }
        self.file
            .take()
            .map(Ok)
            .ok_or_else(|| std::io::Error::other("blob writer already closed").into())
    }

    /// Writes the buffered block (data then CRC) on the blocking pool.
    async fn flush_block(&mut self) -> BlobResult<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let data = self.block.split().freeze();
        let file = self.take_file()?;
        let block_bytes = self.block_bytes_u32();
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let mut file = match file {
                Ok(file) => file,
                Err(path) => create_file(&path, block_bytes)?,
            };
            write_block(&mut file, &data)?;
            Ok(file)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.file = Some(file);
        Ok(())
    }

    fn block_bytes_u32(&self) -> u32 {
        u32::try_from(self.block_bytes).unwrap_or(u32::MAX)
    }
}

#[async_trait::async_trait]
impl BlobWriter for LocalWriter {
    fn blob_id(&self) -> &str {
        &self.blob_id
    }

    async fn write(&mut self, mut data: Bytes) -> BlobResult<()> {
        while !data.is_empty() {
            let room = self.block_bytes - self.block.len();
            let take = room.min(data.len());
            self.block.extend_from_slice(&data.split_to(take));
            self.written += take as u64;
            if self.block.len() == self.block_bytes {
                self.flush_block().await?;
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> BlobResult<u64> {
        let file = self.take_file()?;
        let block_bytes = self.block_bytes_u32();
        let dir = self.path.parent().map(Path::to_path_buf);
        // The last block and the fsyncs in one trip to the blocking pool
        // (a small object is only this block, and its file is created in
        // the same trip).
        let last = self.block.split().freeze();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut file = match file {
                Ok(file) => file,
                Err(path) => create_file(&path, block_bytes)?,
            };
            write_block(&mut file, &last)?;
            file.sync_all()?;
            if let Some(dir) = dir {
                fsync_dir(&dir)?;
            }
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)??;
        self.settled = true;
        Ok(self.written)
    }

    async fn abandon(mut self: Box<Self>) {
        drop(self.file.take());
        let path = self.path.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
        self.settled = true;
    }
}

#[async_trait::async_trait]
impl BlobStore for LocalBlobStore {
    async fn create(&self) -> BlobResult<Box<dyn BlobWriter>> {
        let blob_id = nuage_base::ids::random_id();
        let path = self
            .path(&blob_id)
            .ok_or_else(|| std::io::Error::other("bad blob id"))?;
        // The file is created by the writer's first trip to the blocking
        // pool (see `LocalWriter::file`).
        Ok(Box::new(LocalWriter {
            blob_id,
            path,
            file: None,
            created: false,
            block: BytesMut::with_capacity(self.block_bytes as usize),
            block_bytes: self.block_bytes as usize,
            written: 0,
            settled: false,
        }))
    }

    fn read(&self, blob_id: &str, offset: u64, len: u64) -> BlobStream {
        self.read_blocks_async(blob_id, offset, len, Verify::Checksums)
    }

    fn read_authenticated(&self, blob_id: &str, offset: u64, len: u64) -> BlobStream {
        self.read_blocks_async(blob_id, offset, len, Verify::ByCaller)
    }

    async fn delete(&self, blob_id: &str) -> BlobResult<()> {
        let Some(path) = self.path(blob_id) else {
            return Ok(());
        };
        match tokio::fs::remove_file(path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self) -> BlobResult<Vec<BlobEntry>> {
        let root = Arc::clone(&self.root);
        tokio::task::spawn_blocking(move || -> BlobResult<Vec<BlobEntry>> {
            let mut out = Vec::new();
            for shard in std::fs::read_dir(root.as_path())? {
                let shard = shard?;
                if !shard.file_type()?.is_dir() {
                    continue;
                }
                for entry in std::fs::read_dir(shard.path())? {
                    let entry = entry?;
                    let modified = entry.metadata()?.modified()?;
                    if let Some(name) = entry.file_name().to_str() {
                        out.push(BlobEntry {
                            blob_id: name.to_owned(),
                            modified,
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// Reads and verifies the blocks covering `[offset, offset + len)`, handing each
/// verified slice to `emit`; stops early when `emit` returns false.
fn read_blocks(
    path: Option<&Path>,
    blob_id: &str,
    offset: u64,
    len: u64,
    verify: Verify,
    mut emit: impl FnMut(Bytes) -> bool,
) -> BlobResult<()> {
    let corrupt = |detail: String| BlobError::Corrupt {
        blob_id: blob_id.to_owned(),
        detail,
    };
    let path = path.ok_or_else(|| BlobError::NotFound(blob_id.to_owned()))?;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BlobError::NotFound(blob_id.to_owned()));
        }
        Err(e) => return Err(e.into()),
    };
    let mut header = [0u8; 16];
    file.read_exact(&mut header)
        .map_err(|e| corrupt(format!("header unreadable: {e}")))?;
    let block_bytes = format::parse_header(&header).ok_or_else(|| corrupt("bad header".into()))?;
    let file_bytes = file.metadata()?.len();
    let data_len = format::data_len(file_bytes, block_bytes)
        .ok_or_else(|| corrupt(format!("impossible length {file_bytes}")))?;
    let end = offset
        .checked_add(len)
        .filter(|e| *e <= data_len)
        .ok_or_else(|| {
            corrupt(format!(
                "range {offset}+{len} beyond data length {data_len}"
            ))
        })?;
    if len == 0 {
        return Ok(());
    }
    let block = u64::from(block_bytes);
    let mut index = offset / block;
    file.seek(SeekFrom::Start(format::block_offset(index, block_bytes)))?;
    // As large as the largest block this read touches, not a whole block:
    // a small object's read then zeroes (and allocates) a few KiB, not 256.
    let largest = block.min(data_len - index * block) + format::CRC_BYTES;
    let mut buf = vec![0u8; usize::try_from(largest).map_err(std::io::Error::other)?];
    loop {
        let block_start = index * block;
        if block_start >= end {
            return Ok(());
        }
        let block_len = block.min(data_len - block_start);
        let stored =
            usize::try_from(block_len + format::CRC_BYTES).map_err(std::io::Error::other)?;
        file.read_exact(&mut buf[..stored])?;
        let data_end = stored - format::CRC_BYTES as usize;
        let crc: [u8; 4] = buf[data_end..stored]
            .try_into()
            .map_err(std::io::Error::other)?;
        if verify == Verify::Checksums
            && crc32c::crc32c(&buf[..data_end]) != u32::from_le_bytes(crc)
        {
            return Err(corrupt(format!("checksum mismatch in block {index}")));
        }
        let from =
            usize::try_from(offset.saturating_sub(block_start)).map_err(std::io::Error::other)?;
        let to = usize::try_from(end.min(block_start + block_len) - block_start)
            .map_err(std::io::Error::other)?;
        // One reused read buffer, and a copy of the block handed out.
        // Reading straight into a fresh buffer per block avoided the copy but
        // measured slower for large GETs on an idle machine (fresh 256 KiB
        // allocations fault their pages in; docs/performance.md).
        let data = Bytes::copy_from_slice(&buf[from..to]);
        if !emit(data) {
            return Ok(());
        }
        index += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    async fn read_all(
        store: &LocalBlobStore,
        id: &str,
        offset: u64,
        len: u64,
    ) -> BlobResult<Vec<u8>> {
        let chunks: Vec<Bytes> = store.read(id, offset, len).try_collect().await?;
        Ok(chunks.concat())
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| u8::try_from((i * 7 + i / 251) % 256).unwrap_or(0))
            .collect()
    }

    #[tokio::test]
    async fn write_then_read_ranges() -> BlobResult<()> {
        let dir = tempfile::tempdir()?;
        let store = LocalBlobStore::open(dir.path())?;
        let data = pattern(limits::BLOB_BLOCK_BYTES * 2 + 1234);
        let mut w = store.create().await?;
        let id = w.blob_id().to_owned();
        for chunk in data.chunks(10_000) {
            w.write(Bytes::copy_from_slice(chunk)).await?;
        }
        assert_eq!(w.finish().await?, data.len() as u64);
        assert_eq!(read_all(&store, &id, 0, data.len() as u64).await?, data);
        for (off, len) in [
            (0u64, 1u64),
            (5, 300_000),
            (262_143, 2),
            (524_288, 1234),
            (524_289, 1233),
            (100, 0),
        ] {
            let (o, l) = (
                usize::try_from(off).unwrap_or(0),
                usize::try_from(len).unwrap_or(0),
            );
            assert_eq!(
                read_all(&store, &id, off, len).await?,
                data[o..o + l],
                "range {off}+{len}"
            );
        }
        assert!(
            read_all(&store, &id, 0, data.len() as u64 + 1)
                .await
                .is_err()
        );
        Ok(())
    }

    #[tokio::test]
    async fn corruption_is_detected_not_served() -> BlobResult<()> {
        let dir = tempfile::tempdir()?;
        let store = LocalBlobStore::open(dir.path())?;
        let data = pattern(300_000);
        let mut w = store.create().await?;
        let id = w.blob_id().to_owned();
        w.write(Bytes::from(data.clone())).await?;
        w.finish().await?;
        let path = store
            .path(&id)
            .ok_or_else(|| std::io::Error::other("path"))?;
        let mut bytes = std::fs::read(&path)?;
        let flip = bytes.len() - 100; // inside the last block's data
        bytes[flip] ^= 0x01;
        std::fs::write(&path, &bytes)?;
        // The first block is intact and readable; the second is refused.
        assert_eq!(read_all(&store, &id, 0, 1000).await?, data[..1000]);
        let err = read_all(&store, &id, 0, data.len() as u64).await;
        assert!(matches!(err, Err(BlobError::Corrupt { .. })), "{err:?}");
        // A truncated file is refused too: its length no longer covers the data.
        std::fs::write(&path, &bytes[..bytes.len() - 2])?;
        assert!(read_all(&store, &id, 0, data.len() as u64).await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn an_authenticated_read_leaves_the_check_to_the_caller() -> BlobResult<()> {
        let dir = tempfile::tempdir()?;
        let store = LocalBlobStore::open(dir.path())?;
        let data = pattern(300_000);
        let mut w = store.create().await?;
        let id = w.blob_id().to_owned();
        w.write(Bytes::from(data.clone())).await?;
        w.finish().await?;
        let path = store
            .path(&id)
            .ok_or_else(|| std::io::Error::other("path"))?;
        let mut bytes = std::fs::read(&path)?;
        bytes[format::HEADER_BYTES as usize + 100] ^= 0x01; // in the first block
        std::fs::write(&path, &bytes)?;
        let len = data.len() as u64;
        assert!(matches!(
            read_all(&store, &id, 0, len).await,
            Err(BlobError::Corrupt { .. })
        ));
        // The bytes as stored (the caller's AEAD refuses them), blocks whole
        // and unshared as from `read`.
        let chunks: Vec<Bytes> = store.read_authenticated(&id, 0, len).try_collect().await?;
        assert!(chunks.iter().all(Bytes::is_unique));
        let served = chunks.concat();
        assert_eq!(served.len(), data.len());
        assert_ne!(served[100], data[100]);
        assert_eq!(served[101..], data[101..]);
        // Structure is still checked: a truncated file is refused.
        std::fs::write(&path, &bytes[..bytes.len() - 2])?;
        let truncated: BlobResult<Vec<Bytes>> =
            store.read_authenticated(&id, 0, len).try_collect().await;
        assert!(truncated.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn a_dropped_writer_leaves_nothing() -> BlobResult<()> {
        let dir = tempfile::tempdir()?;
        let store = LocalBlobStore::open(dir.path())?;
        let mut w = store.create().await?;
        w.write(Bytes::from(pattern(600_000))).await?;
        drop(w);
        // The removal runs on the blocking pool: wait for it, boundedly.
        for _ in 0..500 {
            if store.list().await?.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the partial blob of a dropped writer was not removed");
    }

    #[tokio::test]
    async fn a_small_blob_is_one_file_written_at_finish() -> BlobResult<()> {
        let dir = tempfile::tempdir()?;
        let store = LocalBlobStore::open(dir.path())?;
        // Writers that never reach the disk leave nothing, dropped or abandoned.
        drop(store.create().await?);
        store.create().await?.abandon().await;
        let mut w = store.create().await?;
        let id = w.blob_id().to_owned();
        w.write(Bytes::from(pattern(4096))).await?;
        assert!(store.list().await?.is_empty(), "no file before finish");
        assert_eq!(w.finish().await?, 4096);
        assert_eq!(read_all(&store, &id, 0, 4096).await?, pattern(4096));
        assert_eq!(
            read_all(&store, &id, 100, 10).await?,
            pattern(4096)[100..110]
        );
        let listed = store.list().await?;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].blob_id, id);
        Ok(())
    }

    #[tokio::test]
    async fn empty_blob_and_delete() -> BlobResult<()> {
        let dir = tempfile::tempdir()?;
        let store = LocalBlobStore::open(dir.path())?;
        let w = store.create().await?;
        let id = w.blob_id().to_owned();
        assert_eq!(w.finish().await?, 0);
        assert!(read_all(&store, &id, 0, 0).await?.is_empty());
        assert_eq!(store.list().await?.len(), 1);
        store.delete(&id).await?;
        store.delete(&id).await?;
        assert!(matches!(
            read_all(&store, &id, 0, 0).await,
            Err(BlobError::NotFound(_))
        ));
        Ok(())
    }
}
