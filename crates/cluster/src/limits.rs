//! Every bound of the cluster blob store, as a named constant (units last).

use std::time::Duration;

/// Location index entries read per page (list, repair).
pub const INDEX_PAGE_ENTRIES: usize = 500;
/// Largest location index entry accepted (JSON bytes): a few node ids, a
/// policy and a hash.
pub const INDEX_ENTRY_BYTES_MAX: usize = 64 * 1024;
/// Status requests in flight at once while polling nodes.
pub const POLL_CONCURRENCY_MAX: usize = 32;
/// A node that does not answer its status request within this is down.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default interval between two polls of every node.
pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_secs(5);
/// Room placement asks of every node for a blob of unknown length (no
/// `exact_len`): a node with less is not offered the write. A node that
/// fills up during the write refuses it, and the write fails whole.
pub const UNKNOWN_LEN_PLACEMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Chunks a read forwards ahead of its consumer.
pub const READ_AHEAD_CHUNKS_MAX: usize = 4;
/// Failures listed in a repair report (more are counted, not listed).
pub const REPORT_FAILURES_MAX: usize = 64;
