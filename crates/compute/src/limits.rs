//! Every bound the compute host enforces, in one place (names end with the unit).

/// Console output kept per instance, as EC2's GetConsoleOutput returns (the last 64 KiB).
pub const CONSOLE_OUTPUT_BYTES_MAX: u64 = 64 * 1024;
/// The console log file is rewritten down to `CONSOLE_OUTPUT_BYTES_MAX` once it reaches this.
pub const CONSOLE_LOG_FILE_BYTES_MAX: u64 = 2 * CONSOLE_OUTPUT_BYTES_MAX;
/// One read from the serial console socket.
pub const CONSOLE_READ_CHUNK_BYTES: usize = 4096;
/// One QMP message (QEMU's replies to the commands we send are a few hundred bytes).
pub const QMP_LINE_BYTES_MAX: u64 = 1024 * 1024;
/// QMP messages queued between the socket reader and the instance supervisor.
pub const QMP_QUEUE_MESSAGES_MAX: usize = 64;
/// QMP events kept while a command waits for its reply; older ones are dropped.
pub const QMP_PENDING_EVENTS_MAX: usize = 64;
/// How long one QMP command may take to answer.
pub const QMP_COMMAND_TIMEOUT_MS: u64 = 10_000;
/// How long QEMU may take to create its QMP and console sockets.
pub const QEMU_SOCKET_WAIT_MS: u64 = 10_000;
/// Commands queued for one instance's supervisor.
pub const INSTANCE_COMMANDS_QUEUED_MAX: usize = 8;
/// Instances (of any state, terminated records included) one host keeps.
pub const INSTANCES_PER_HOST_MAX: usize = 256;
/// Terminated instance records kept for describe; the oldest go first.
pub const TERMINATED_RECORDS_MAX: usize = 64;
/// An instance record on disk (JSON).
pub const INSTANCE_RECORD_BYTES_MAX: u64 = 256 * 1024;
/// User data, as EC2 (16 KiB before base64).
pub const USER_DATA_BYTES_MAX: usize = 16 * 1024;
/// SSH public keys per instance, and the size of one.
pub const SSH_KEYS_PER_INSTANCE_MAX: usize = 16;
pub const SSH_KEY_BYTES_MAX: usize = 16 * 1024;
/// An availability zone a run names (letters, digits and `-`).
pub const AVAILABILITY_ZONE_BYTES_MAX: usize = 64;
/// Hostname length (RFC 1123 label limit for the whole name is 253; one label 63).
pub const HOSTNAME_BYTES_MAX: usize = 253;
/// ACPI power-down is given this long before `quit`, then SIGKILL.
pub const STOP_POWERDOWN_WAIT_MS: u64 = 30_000;
/// After `quit` (or SIGKILL), how long QEMU may take to exit.
pub const QUIT_WAIT_MS: u64 = 5_000;
/// The KVM probe (a 16-byte real-mode program) must exit within this.
pub const KVM_PROBE_TIMEOUT_MS: u64 = 5_000;
/// A killed process found at recovery must be gone within this.
pub const RECOVERY_KILL_WAIT_MS: u64 = 5_000;
/// Output of one helper command (qemu-img, xorriso) kept for error messages.
pub const TOOL_OUTPUT_BYTES_MAX: usize = 4096;
/// Buffer for hashing and copying images into the cache.
pub const IMAGE_COPY_CHUNK_BYTES: usize = 1024 * 1024;
/// Images one host caches.
pub const IMAGES_PER_HOST_MAX: usize = 64;
/// Wall-clock time a helper command (qemu-img, xorriso) may run.
pub const TOOL_TIMEOUT_MS: u64 = 600_000;
/// Standard output of a helper command read at most (qemu-img info's JSON is a few KiB).
pub const TOOL_STDOUT_BYTES_MAX: usize = 1024 * 1024;
/// `qemu-img info` on a tenant's image runs under `prlimit` with these, as
/// OpenStack does: a crafted image must not make it eat the host's memory or CPU.
pub const QEMU_IMG_INFO_ADDRESS_SPACE_BYTES: u64 = 1024 * 1024 * 1024;
pub const QEMU_IMG_INFO_CPU_SECONDS: u64 = 30;
/// And this much wall-clock time.
pub const QEMU_IMG_INFO_TIMEOUT_MS: u64 = 60_000;
/// Console bytes handed to one blocking write (reads of `CONSOLE_READ_CHUNK_BYTES` are coalesced up to this).
pub const CONSOLE_WRITE_BATCH_BYTES_MAX: usize = 64 * 1024;
/// A guest's reboot request (Ctrl-Alt-Del) is given this long before a hard reset.
pub const REBOOT_WAIT_MS: u64 = 60_000;
/// Metadata service, per instance: one request head (request line and headers).
/// hyper's smallest read buffer is 8 KiB.
pub const METADATA_REQUEST_HEAD_BYTES_MAX: usize = 8192;
/// Metadata service: connections served at once per instance; more wait in the socket's backlog.
pub const METADATA_CONNECTIONS_MAX: usize = 8;
/// Metadata service: how long a client may take to send a request head.
pub const METADATA_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Metadata service: how long one connection may stay open, keep-alive included.
pub const METADATA_CONNECTION_TIMEOUT_MS: u64 = 30_000;
/// Ports tried when choosing an instance's SSH forward.
pub const SSH_PORT_PROBES_MAX: usize = 256;
/// QEMU starts tried for one launch when its SSH port was taken meanwhile.
pub const LAUNCH_ATTEMPTS_MAX: usize = 3;
/// Instance metadata file (`metadata.json`: keys and user data, base64),
/// derived from what `validate_request` accepts: every key at its largest
/// (JSON-escaped, up to 6 bytes per byte), the user data in base64, plus
/// 64 KiB for the rest (ids, hostname, zone, type, MAC, JSON syntax).
pub const METADATA_FILE_BYTES_MAX: u64 = (SSH_KEYS_PER_INSTANCE_MAX
    * (6 * SSH_KEY_BYTES_MAX + 6 * 255)
    + USER_DATA_BYTES_MAX.div_ceil(3) * 4
    + 64 * 1024) as u64;
const _: () = assert!(
    METADATA_FILE_BYTES_MAX
        >= (SSH_KEYS_PER_INSTANCE_MAX * (6 * SSH_KEY_BYTES_MAX + 6 * 255)
            + USER_DATA_BYTES_MAX.div_ceil(3) * 4
            + HOSTNAME_BYTES_MAX
            + AVAILABILITY_ZONE_BYTES_MAX) as u64
);
/// The metadata forward (QEMU starts one `socat` per guest connection to
/// 169.254.169.254:80): socat exits after this long without traffic either
/// way (`-T`), so an idle connection does not keep a process forever.
pub const METADATA_FORWARD_IDLE_SECONDS: u64 = 60;
/// And gives up connecting to the instance's metadata socket after this (`connect-timeout`).
pub const METADATA_FORWARD_CONNECT_SECONDS: u64 = 5;
/// Open files (`RLIMIT_NOFILE`, soft and hard) of each QEMU process. QEMU
/// holds one end of a socket pair per running `socat`, so a guest has fewer
/// metadata forwards (socat processes) at once than this: this minus what
/// QEMU holds itself (29 descriptors measured for a 1-vCPU TCG guest, 33
/// for a 4-vCPU one; KVM adds some per vCPU and virtqueue).
pub const QEMU_OPEN_FILES_MAX: u64 = 128;
