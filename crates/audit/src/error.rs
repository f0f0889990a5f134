//! The audit crate's one error type.
//!
//! Operating errors (I/O, corrupt storage, refused signatures) and verification
//! findings share it, and each tampering case has its own variant so that a
//! tenant's tooling can tell an edited entry from a deleted one or a rollback.

use std::path::PathBuf;

/// Everything that can go wrong in the audit log, or be found wrong by the verifier.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// An entry's canonical bytes exceed `AUDIT_ENTRY_BYTES_MAX`.
    #[error("audit entry is {bytes} bytes, more than the {max} an entry bundle can hold")]
    EntryTooLarge { bytes: usize, max: usize },
    /// An entry could not be serialized (or parsed).
    #[error("audit entry encoding: {0}")]
    Encoding(String),
    /// A file operation failed.
    #[error("audit log I/O ({context}): {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Stored log data is damaged somewhere other than a torn last record.
    #[error("audit log storage is corrupt: {0}")]
    Corrupt(String),
    /// Another process (or store) holds this log directory.
    #[error("audit log directory {0} is already open")]
    AlreadyOpen(PathBuf),
    /// An earlier write failed; the store refuses further appends until reopened,
    /// because after a failed fsync the file's state is unknown.
    #[error("audit log refuses appends after an earlier write failure: {0}")]
    Failed(String),
    /// The log's writer has stopped (the log was shut down).
    #[error("audit log writer has stopped")]
    Closed,
    /// The log cannot close while other handles to it are alive.
    #[error("audit log is still in use by other handles")]
    InUse,
    /// Every open log is in use and no more may be opened.
    #[error("all {0} open audit logs are in use; try again")]
    TooManyOpenLogs(usize),
    /// An index or tree size outside the tree.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// A tile or entry bundle path that is not C2SP tlog-tiles syntax.
    #[error("malformed tile path {0:?}")]
    BadTilePath(String),
    /// A well-formed tile path for data the tree does not have yet.
    #[error("tile {path} is beyond the tree of size {size}")]
    TileBeyondTree { path: String, size: u64 },
    /// Entries below the log's minimum index are no longer served (retention).
    #[error("{what} was pruned: entries below {minimum_index} are no longer served")]
    Pruned { what: String, minimum_index: u64 },
    /// A Merkle tree computation failed (bad proof shape, bad math).
    #[error("merkle tree: {0}")]
    Tree(String),
    /// A checkpoint origin that is not a valid signed-note key name.
    #[error("invalid log origin {0:?}")]
    InvalidOrigin(String),
    /// The checkpoint signer failed.
    #[error("checkpoint signing failed: {0}")]
    Signing(String),
    /// Signing refused: the tree is smaller than the last signed checkpoint.
    #[error("refusing to sign size {size}: a checkpoint of size {signed_size} was already signed")]
    SigningWouldRollBack { signed_size: u64, size: u64 },
    /// Signing refused: the tree does not extend the last signed checkpoint.
    #[error(
        "refusing to sign size {size}: it is inconsistent with the signed checkpoint of size {signed_size}"
    )]
    SigningWouldFork { signed_size: u64, size: u64 },

    // Verification findings.
    /// The verifier key (`vkey`) is malformed.
    #[error("malformed verifier key: {0}")]
    BadVerifierKey(String),
    /// A checkpoint that is not a well-formed signed note or tlog-checkpoint.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(String),
    /// The checkpoint's signature does not verify with the log's key, or it
    /// carries no signature by that key.
    #[error("checkpoint signature does not verify with the log's key: {0}")]
    BadSignature(String),
    /// The checkpoint names another log.
    #[error("checkpoint origin {found:?} is not this log's {expected:?}")]
    OriginMismatch { expected: String, found: String },
    /// A file the layout requires is absent.
    #[error("missing {0}")]
    MissingFile(PathBuf),
    /// An entry bundle is absent and no signed pruning marker covers it.
    #[error("entry bundle {path} is missing and no signed pruning marker covers it")]
    MissingBundle { path: String },
    /// An entry bundle that does not decode, or holds the wrong number of entries.
    #[error("malformed entry bundle {path}: {reason}")]
    MalformedBundle { path: String, reason: String },
    /// An entry's bytes were changed.
    #[error("entry {index} was edited: its hash is not in the signed tree")]
    EditedEntry { index: u64 },
    /// An entry was removed (the entries after it moved up by one).
    #[error("entry {index} was deleted")]
    DeletedEntry { index: u64 },
    /// Entries were swapped or moved.
    #[error("entries were reordered: entry {index} belongs at index {belongs_at}")]
    ReorderedEntry { index: u64, belongs_at: u64 },
    /// The entries do not rebuild the signed root, and no authenticated hash tiles
    /// are present to say which entry is wrong.
    #[error("the entries do not rebuild the checkpoint's root hash")]
    EntriesDoNotMatchCheckpoint,
    /// The stored hash tiles do not rebuild the signed root.
    #[error("hash tile {path} does not match the checkpoint")]
    TileDoesNotMatchCheckpoint { path: String },
    /// ROLLBACK: the log shown is older than a checkpoint already trusted.
    #[error(
        "ROLLBACK: the checkpoint has size {size}, smaller than the trusted checkpoint of size {trusted_size}"
    )]
    Rollback { trusted_size: u64, size: u64 },
    /// FORK: the log shown does not extend a checkpoint already trusted.
    #[error(
        "FORK: the checkpoint of size {size} is not consistent with the trusted checkpoint of size {trusted_size}"
    )]
    Fork { trusted_size: u64, size: u64 },
    /// The stored log no longer rebuilds its last signed checkpoint (entries or
    /// hashes lost, replaced or rolled back on the server's disk).
    #[error(
        "the stored log (size {size}) no longer matches its signed checkpoint of size {signed_size}"
    )]
    StoreInconsistent { signed_size: u64, size: u64 },
    /// Entries are missing below the signed pruning mark, or a pruning marker
    /// is wrong.
    #[error("pruning: {0}")]
    Pruning(String),
}

impl AuditError {
    /// An I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<tlog_tiles::Error> for AuditError {
    fn from(error: tlog_tiles::Error) -> Self {
        Self::Tree(error.to_string())
    }
}
