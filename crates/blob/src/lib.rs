//! The blob store: immutable byte sequences named by id, written once, read by
//! range, deleted whole, behind the [`BlobStore`] trait.
//!
//! This crate owns durability and integrity of object bytes: a blob is durable
//! when [`BlobWriter::finish`] returns, and every byte read back has been checked
//! against the checksum stored beside it (or, through
//! [`BlobStore::read_authenticated`], is checked by the caller's AEAD instead). It knows nothing of buckets, keys or
//! S3; the metadata store decides which blobs are live.
//!
//! Backends: [`local::LocalBlobStore`] (files on a local file system), and
//! `nuage_node::RemoteBlobStore` (one storage node, whose files are in this
//! crate's format: [`local::stream_file`] and friends serve them).

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

/// Where a new blob may be placed: who it belongs to and the residency
/// policy its bucket (or tenant) carries. Single-node stores ignore it; the
/// replicated store (`nuage_cluster::ClusterBlobStore`) places the blob's
/// replicas with it.
///
/// The policy travels as its JSON form (`nuage_placement::ResidencyPolicy::
/// to_json`, schema in `docs/residency.md`) so that this crate does not
/// depend on the placement crate; the cluster store parses it and refuses a
/// write whose policy does not parse. `None`: the store's default policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementTarget {
    pub tenant: Option<String>,
    pub bucket: Option<String>,
    /// The residency policy, JSON.
    pub policy_json: Option<String>,
    /// The blob's exact length when the caller knows it (a `Content-Length`):
    /// placement then checks every node has room for it and each node
    /// reserves it before the first byte. When given, exactly this many
    /// bytes must be written.
    pub exact_len: Option<u64>,
}

/// Why a write could not be placed: the residency policy cannot be met by
/// the nodes that are up and have room. Nothing was written anywhere.
///
/// It reaches callers inside [`BlobError::Io`] (an `std::io::Error` whose
/// inner error is this; find it with [`BlobError::placement_refusal`]) so
/// that matches on [`BlobError`] elsewhere stay exhaustive. `reason` is the
/// placement crate's `PlacementError` (downcast it for the details).
#[derive(Debug, thiserror::Error)]
#[error("the residency policy cannot be met ({policy}): {reason}")]
pub struct PlacementRefused {
    /// The policy, in words (`nuage_placement::ResidencyPolicy::places_text`
    /// and its durability).
    pub policy: String,
    /// True when the topology itself can never satisfy the policy (S3: 409),
    /// false when nodes are down or full (S3: 503).
    pub permanent: bool,
    /// True when compliant nodes are up but lack room (S3: 503 `SlowDown`).
    pub full: bool,
    #[source]
    pub reason: Box<dyn std::error::Error + Send + Sync>,
}

impl PlacementRefused {
    /// Wraps the refusal into the error the blob store returns.
    #[must_use]
    pub fn into_blob_error(self) -> BlobError {
        BlobError::Io(std::io::Error::other(self))
    }
}

/// A write abandoned because a replica's node could not be reached, or its
/// connection broke (or stalled) mid-write: the write was abandoned on every
/// replica, so nothing was written, and the same write may succeed when
/// retried (S3: 503 `ServiceUnavailable`). Not for a node that answered with
/// a refusal (out of space, corrupt, bad request).
///
/// Like [`PlacementRefused`] it travels inside [`BlobError::Io`] (find it
/// with [`BlobError::unavailable`]). `detail` names the node and why, for
/// the server's log, not for clients.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct Unavailable {
    pub detail: String,
}

impl Unavailable {
    /// Wraps it into the error the blob store returns.
    #[must_use]
    pub fn into_blob_error(self) -> BlobError {
        BlobError::Io(std::io::Error::other(self))
    }
}

impl BlobError {
    /// The placement refusal this error carries, if it is one.
    #[must_use]
    pub fn placement_refusal(&self) -> Option<&PlacementRefused> {
        match self {
            Self::Io(e) => e.get_ref()?.downcast_ref::<PlacementRefused>(),
            _ => None,
        }
    }

    /// The transient unavailability this error carries, if it is one.
    #[must_use]
    pub fn unavailable(&self) -> Option<&Unavailable> {
        match self {
            Self::Io(e) => e.get_ref()?.downcast_ref::<Unavailable>(),
            _ => None,
        }
    }
}

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
    /// Starts writing a new blob placed for `target` (its residency policy).
    /// Stores that keep everything in one place ignore the target (the
    /// default); the replicated store never writes outside the policy and
    /// fails with a [`PlacementRefused`] when it cannot be met.
    async fn create_placed(&self, target: &PlacementTarget) -> BlobResult<Box<dyn BlobWriter>> {
        let _ = target;
        self.create().await
    }
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

/// One replica of a blob, as placed: the node and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaPlace {
    /// The node id (topology file).
    pub node: String,
    /// The node's site.
    pub site: String,
    /// The site's country, ISO 3166-1 alpha-2.
    pub country: String,
}

/// A blob being written. Dropping it without [`finish`](BlobWriter::finish)
/// leaves a partial blob that the orphan collector removes; call
/// [`abandon`](BlobWriter::abandon) to remove it at once.
#[async_trait::async_trait]
pub trait BlobWriter: Send {
    fn blob_id(&self) -> &str;
    /// The nodes this blob is being written to, when the store places
    /// blobs on storage nodes (the replicated store); None for a store
    /// that keeps everything in one place. Valid once `finish` succeeds.
    fn placement(&self) -> Option<Vec<ReplicaPlace>> {
        None
    }
    /// Appends bytes; buffers at most one block.
    async fn write(&mut self, data: Bytes) -> BlobResult<()>;
    /// Flushes and makes the blob durable (data and directory entry fsynced).
    /// Returns the number of data bytes.
    async fn finish(self: Box<Self>) -> BlobResult<u64>;
    /// Discards the blob.
    async fn abandon(self: Box<Self>);
}
