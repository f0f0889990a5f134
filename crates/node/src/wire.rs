//! The protocol's shapes on the wire: paths, headers and JSON bodies, shared
//! by the server and the client so that the two cannot drift apart.

use crate::limits;
use serde::{Deserialize, Serialize};

/// Prefix of every path; a future incompatible protocol gets `/v2`.
pub const BLOBS_PATH: &str = "/v1/blobs";
pub const STATUS_PATH: &str = "/v1/status";
/// Appended to a blob's path (`POST /v1/blobs/{id}/verify`): the node reads
/// its whole copy back, every block checked, and answers a [`VerifyReceipt`].
pub const VERIFY_SUFFIX: &str = "/verify";
/// A blob's data length (HEAD and GET responses).
pub const HEADER_BLOB_LENGTH: &str = "x-nuage-blob-length";
/// A blob's modification time, milliseconds since the Unix epoch (HEAD).
pub const HEADER_MODIFIED_MS: &str = "x-nuage-modified-ms";
/// The error code of a HEAD response, which has no body.
pub const HEADER_ERROR: &str = "x-nuage-error";

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable code: `AccessDenied`, `NoSuchBlob`, `BlobExists`,
    /// `InsufficientStorage`, `InvalidRange`, `BadRequest`, `Corrupt`,
    /// `RequestTimeout`, `InternalError`, `MethodNotAllowed`.
    pub error: String,
    pub message: String,
}

/// The answer to a write: what the node made durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReceipt {
    pub blob_id: String,
    /// Data bytes stored.
    pub length: u64,
    /// SHA-256 of the data bytes stored, lowercase hex.
    pub sha256: String,
    /// True when an identical blob was already there (a retried write).
    pub existed: bool,
}

/// The answer to a verification: what the node read back from its copy,
/// every block's checksum checked. A copy that fails a check is a `Corrupt`
/// error instead, a missing one `NoSuchBlob`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReceipt {
    pub blob_id: String,
    /// Data bytes read.
    pub length: u64,
    /// SHA-256 of the data bytes read, lowercase hex.
    pub sha256: String,
}

/// One blob in a listing or a stat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub blob_id: String,
    /// Data bytes.
    pub length: u64,
    /// Modification time, milliseconds since the Unix epoch.
    pub modified_ms: u64,
}

/// One page of a listing, in blob id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    pub blobs: Vec<BlobInfo>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub site: String,
    /// Bytes of blob files on disk (data, checksums, headers).
    pub used_bytes: u64,
    pub blob_count: u64,
    /// The configured cap on `used_bytes`, if any.
    pub capacity_bytes: Option<u64>,
    /// The file system holding the data directory.
    pub fs_total_bytes: u64,
    pub fs_available_bytes: u64,
    /// Space kept free on that file system.
    pub reserve_bytes: u64,
    /// What a new write may use now (after the reserve, the capacity and the
    /// writes in flight).
    pub writable_bytes: u64,
}

/// Checks a blob id: lowercase hex, 16 to 128 characters.
#[must_use]
pub fn is_valid_blob_id(id: &str) -> bool {
    (limits::BLOB_ID_BYTES_MIN..=limits::BLOB_ID_BYTES_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
