//! Every bound of the compute host protocol (names end with the unit).

use std::time::Duration;

/// A JSON request body (a run request: user data is at most 16 KiB).
pub const REQUEST_JSON_BYTES_MAX: usize = 256 * 1024;
/// A JSON response body the client reads (a list of at most 256 records).
pub const RESPONSE_JSON_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The `x-nuage-image-parts` header.
pub const IMAGE_PARTS_HEADER_BYTES_MAX: usize = 8 * 1024;
/// A pushed disk, as RegisterImage allows (64 GiB).
pub const IMAGE_DISK_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;
/// A pushed kernel or initrd, as RegisterImage allows (512 MiB).
pub const IMAGE_KERNEL_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// A kernel command line.
pub const KERNEL_CMDLINE_BYTES_MAX: usize = 4096;
/// Image pushes a host receives at once (each holds a staging directory).
pub const IMAGE_PUSHES_IN_FLIGHT_MAX: usize = 4;
/// Connections a host serves at once.
pub const CONNECTIONS_MAX: usize = 64;
/// The TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Reading a request's head on a kept-alive connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting to a host.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Status, has-image, describe, list, console output: a host that does not
/// answer within this is unreachable for the call.
pub const QUICK_CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Run, start, stop, reboot, terminate: a stop waits for the guest's ACPI
/// shutdown (`stop_wait_seconds`, 30 s by default) and 10 s more; keep a
/// remote host's `stop_wait_seconds` well under this.
pub const LIFECYCLE_CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Time without a byte moving while an image is pushed.
pub const PUSH_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A whole image push, registration (copy and hash on the host) included.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(3 * 3600);
/// One chunk read from an image file while pushing it.
pub const PUSH_CHUNK_BYTES: usize = 1024 * 1024;
/// Idle pooled connections kept per host, and for how long. Clearly
/// shorter than the host's `HEADER_READ_TIMEOUT` (its limit on an idle
/// kept-alive connection): a pooled connection the host may be closing at
/// that very moment would be reused for a request that then fails.
pub const CLIENT_IDLE_CONNECTIONS_MAX: usize = 4;
pub const CLIENT_POOL_IDLE: Duration = Duration::from_secs(20);

// The margin above, checked when the crate builds.
const _: () = assert!(CLIENT_POOL_IDLE.as_secs() + 5 <= HEADER_READ_TIMEOUT.as_secs());
