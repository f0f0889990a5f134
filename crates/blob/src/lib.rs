//! The blob store: immutable byte sequences named by id, written once, read by
//! range, deleted whole, behind the [`BlobStore`] trait.
//!
//! This crate owns durability and integrity of object bytes: a blob is durable
//! when [`BlobWriter::finish`] returns, and every byte read back has been checked
//! against the checksum stored beside it (or, through
//! [`BlobStore::read_authenticated`], is checked by the caller's AEAD instead). It knows nothing of buckets, keys or
//! S3; the metadata store decides which blobs are live.
//!
//! Backends: [`local::LocalBlobStore`] (files on a local file system). Remote
//! storage nodes will implement the same trait.

pub mod format;
pub mod local;

use bytes::Bytes;

/// What can go wrong in the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} does not exist")]
    NotFound(String),
    #[error("blob {blob_id} is corrupt: {detail}")]
    Corrupt { blob_id: String, detail: String },
    #[error("blob store I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type BlobResult<T> = Result<T, BlobError>;

/// A stream of verified data chunks.
pub type BlobStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = BlobResult<Bytes>> + Send + Sync>>;

/// A blob found in the store, for the orphan collector.
#[derive(Debug, Clone)]
pub struct BlobEntry {
    pub blob_id: String,
    pub modified: std::time::SystemTime,
}

/// Storage for blobs.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Starts writing a new blob with a fresh id.
    async fn create(&self) -> BlobResult<Box<dyn BlobWriter>>;
    /// Streams `len` bytes from `offset`, each block verified before it is yielded.
    fn read(&self, blob_id: &str, offset: u64, len: u64) -> BlobStream;
    /// [`read`](BlobStore::read) for a caller that authenticates every byte
    /// it gets before using it (the AES-GCM tag of each chunk of an encrypted
    /// blob), so a wrong byte is never served: the backend may skip its own
    /// block checksums, which would only check the same bytes twice. When the
    /// caller's authentication fails, it reads the range again with `read` to
    /// tell corruption on disk from tampering.
    fn read_authenticated(&self, blob_id: &str, offset: u64, len: u64) -> BlobStream {
        self.read(blob_id, offset, len)
    }
    /// Removes a blob; removing a missing blob is not an error.
    async fn delete(&self, blob_id: &str) -> BlobResult<()>;
    /// Every blob present, for the orphan collector.
    async fn list(&self) -> BlobResult<Vec<BlobEntry>>;
}

/// A blob being written. Dropping it without [`finish`](BlobWriter::finish)
/// leaves a partial blob that the orphan collector removes; call
/// [`abandon`](BlobWriter::abandon) to remove it at once.
#[async_trait::async_trait]
pub trait BlobWriter: Send {
    fn blob_id(&self) -> &str;
    /// Appends bytes; buffers at most one block.
    async fn write(&mut self, data: Bytes) -> BlobResult<()>;
    /// Flushes and makes the blob durable (data and directory entry fsynced).
    /// Returns the number of data bytes.
    async fn finish(self: Box<Self>) -> BlobResult<u64>;
    /// Discards the blob.
    async fn abandon(self: Box<Self>);
}
