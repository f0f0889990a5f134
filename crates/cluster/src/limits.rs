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
/// Operator node state documents read per poll (one scan): one per drained
/// node, so the topology's own bound
/// (`nuage_placement::limits::TOPOLOGY_NODES_MAX`).
pub const NODE_STATES_MAX: usize = 10_000;
/// Largest operator node state document accepted (JSON bytes); a real one
/// is about 40.
pub const NODE_STATE_BYTES_MAX: usize = 4 * 1024;
/// Blobs listed with their reasons in a compliance report (more are
/// counted, not listed).
pub const COMPLIANCE_ISSUES_MAX: usize = 100;
/// Replica verifications a scrub pass has in flight at once (each makes its
/// node read the whole blob from disk; the replicas of one blob are on
/// different nodes).
pub const SCRUB_VERIFIES_IN_FLIGHT_MAX: usize = 2;
/// A sensible grace before the scrubber deletes a node file no index entry
/// accounts for: far longer than any write or repair copy takes between its
/// files landing on the nodes and the index naming them, and than the clock
/// skew between nodes and gateway.
pub const SCRUB_ORPHAN_GRACE_DEFAULT: Duration = Duration::from_secs(24 * 60 * 60);
/// Bytes each shard of an erasure-coded blob takes of a full stripe (even,
/// as the codec needs): a stripe is `data` x this many data bytes. A write
/// or a read holds one stripe and its parity, at most
/// `PLACEMENT_WIDTH_MAX` (32) x 256 KiB = 8 MiB, usually far less (2+1:
/// 768 KiB).
pub const EC_CHUNK_BYTES: usize = 256 * 1024;
/// Largest shard chunk accepted from an index entry (a later version may
/// choose another chunk; this bounds what a read of any entry holds).
pub const EC_CHUNK_BYTES_MAX: usize = 4 * 1024 * 1024;
