//! Every bound of the EC2 front end, in one place.

/// A request body (form parameters); the largest is a RunInstances with
/// 16 KiB of user data, base64-encoded.
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
/// Parameters in one request.
pub const PARAMETERS_MAX: usize = 256;
/// Items of one list parameter (`InstanceId.N`, `Filter.N.Value.M`).
pub const LIST_ITEMS_MAX: usize = 100;
/// Filters in one request.
pub const FILTERS_MAX: usize = 10;
/// Instances one RunInstances may start (`MaxCount`).
pub const RUN_INSTANCES_COUNT_MAX: u32 = 16;
/// Key pairs, images and instance records per tenant on this server.
pub const RECORDS_PER_TENANT_MAX: usize = 1000;
/// Documents read per metadata scan.
pub const DOCUMENT_SCAN_PAGE: usize = 200;
/// A key pair's name, an image's name and description (EC2: 255).
pub const NAME_CHARS_MAX: usize = 255;
/// An imported public key (OpenSSH line).
pub const PUBLIC_KEY_BYTES_MAX: usize = 16 * 1024;
/// A disk image read from a bucket.
pub const IMAGE_DISK_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;
/// A kernel or ramdisk read from a bucket.
pub const IMAGE_KERNEL_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// The kernel command line of images booted from a kernel and ramdisk
/// (EC2 has no parameter for it): a serial console, reboot on panic.
pub const KERNEL_CMDLINE: &str = "console=ttyS0 panic=-1 quiet loglevel=4";
/// Image stagings (objects read from buckets into the staging directory,
/// for RegisterImage or a push to a host) at once on this gateway; more
/// wait up to [`STAGING_WAIT`], then get `Unavailable`.
pub const STAGINGS_IN_FLIGHT_MAX: usize = 2;
/// How long a staging waits for its turn.
pub const STAGING_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// A `ClientToken` (EC2: at most 64 ASCII characters).
pub const CLIENT_TOKEN_CHARS_MAX: usize = 64;
/// How long a `ClientToken` names its reservation; an older one may be
/// used again. Tokens per tenant are bounded by `RECORDS_PER_TENANT_MAX`:
/// beyond it the oldest is forgotten.
pub const CLIENT_TOKEN_LIFETIME_S: i64 = 24 * 3600;
/// How long a repeat of a `ClientToken` whose first request is still
/// running waits for it before answering `Unavailable` (which botocore
/// retries), polling every [`CLIENT_TOKEN_POLL`].
pub const CLIENT_TOKEN_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
/// How often a waiting repeat looks at its token.
pub const CLIENT_TOKEN_POLL: std::time::Duration = std::time::Duration::from_millis(500);
/// A `ClientToken` whose request has been running longer than any
/// RunInstances can (a staging wait, a push of the largest image within
/// the host protocol's 3 h push timeout, runs of up to 16 instances) was
/// abandoned (its gateway stopped mid-request): it may be claimed again.
pub const CLIENT_TOKEN_IN_PROGRESS_MAX_S: i64 = 6 * 3600;
/// Claim attempts of one `ClientToken` lost to concurrent claims before
/// the request is answered `Unavailable`.
pub const CLIENT_TOKEN_CLAIM_CONFLICTS_MAX: u32 = 8;
/// Instances one StopInstances, StartInstances, TerminateInstances or
/// RebootInstances acts on at once (each may wait for its guest).
pub const STATE_CHANGES_IN_FLIGHT_MAX: usize = 16;
/// How long an instance whose launch got no answer shows `pending` while
/// its host does not know it (the run may still be on its way); after
/// that, a host that does not know it never started it, and its record is
/// dropped.
pub const LOST_LAUNCH_GRACE_S: i64 = 300;
