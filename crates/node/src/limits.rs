//! Every bound of the storage node protocol, as a named constant (units last).
//! Kept here rather than in `nuage-base::limits` because nothing outside the
//! node service and its client uses them.

use std::time::Duration;

/// TLS connections a node serves at once; the next one waits in the accept
/// queue. With HTTP/1.1 this also bounds requests in flight, and with them
/// the write buffers (one block each).
pub const NODE_CONNECTIONS_MAX: usize = 128;
/// A TLS handshake that takes longer is dropped.
pub const NODE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time without a byte moving on a request (body frame in or out,
/// response awaited) before it is abandoned, on both ends.
pub const NODE_IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Default time to open a TCP connection to a node.
pub const NODE_CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Connections a client keeps idle per node, and for how long.
pub const NODE_CLIENT_IDLE_CONNECTIONS_MAX: usize = 16;
pub const NODE_CLIENT_POOL_IDLE: Duration = Duration::from_secs(60);
/// Chunks a streaming writer queues for the request body before `write`
/// waits: with the node's one block, what a write holds in memory.
pub const NODE_WRITE_QUEUE_CHUNKS_MAX: usize = 4;
/// Largest chunk a streaming writer hands the body at once (bigger writes are
/// split, zero-copy), so the queue holds at most this many bytes per slot.
pub const NODE_WRITE_CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// Chunks of a read the client reads ahead of its consumer.
pub const NODE_READ_AHEAD_CHUNKS_MAX: usize = 4;
/// Largest JSON body either side accepts (errors, receipts, list pages).
pub const NODE_JSON_BODY_BYTES_MAX: usize = 1024 * 1024;
/// Entries in one list page, and the default when the client asks for none.
pub const NODE_LIST_PAGE_MAX: usize = 1000;
/// Longest blob id (hex).
pub const BLOB_ID_BYTES_MAX: usize = 128;
/// Shortest blob id (hex): 64 bits, so ids cannot collide by accident.
pub const BLOB_ID_BYTES_MIN: usize = 16;
/// Space kept free on the node's file system by default: a write that would
/// leave less is refused.
pub const NODE_RESERVE_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;
/// When a write declares no length, space is reserved in steps of this size
/// as bytes arrive.
pub const NODE_RESERVE_STEP_BYTES: u64 = 8 * 1024 * 1024;
/// Verifications (`POST /v1/blobs/{id}/verify`, each reading a whole blob)
/// a node runs at once; the next waits its turn. They read every byte from
/// disk: more at once would only slow the writes and reads they share it with.
pub const NODE_VERIFIES_IN_FLIGHT_MAX: usize = 2;
/// The slowest verification a client waits for, in data bytes per second:
/// a verification's answer comes only once the whole blob is read, so the
/// client waits its idle timeout plus the blob's length at this rate.
pub const NODE_VERIFY_BYTES_PER_SECOND_MIN: u64 = 8 * 1024 * 1024;
