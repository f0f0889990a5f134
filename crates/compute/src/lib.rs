//! Nuage compute: virtual machines on one host, driven over QMP.
//!
//! `ComputeHost` is the instance manager of one host: it registers images
//! (cached by content hash), runs instances from instance types (vCPUs,
//! memory, root disk) within the host's capacity, and stops, starts,
//! reboots and terminates them, keeping each instance's state in a
//! directory of its own so a restarted host knows what happened. VMs run
//! behind the `HypervisorDriver` trait; `QemuDriver` starts
//! `qemu-system-x86_64` (KVM where it verifiably works, TCG otherwise) with a
//! qcow2 overlay over the cached image, an OpenStack config drive carrying
//! the instance id, hostname, SSH keys and user data, a serial console kept
//! to its last 64 KiB, and a QMP socket.
//!
//! This crate does no EC2 protocol, IAM, residency or audit: the API layer
//! calls it with typed requests and maps `ComputeError` to EC2's error codes.
//! See `docs/compute.md`.

pub mod api;
pub mod console;
pub mod driver;
pub mod error;
pub mod host;
pub mod image;
pub mod instance_type;
pub mod limits;
pub mod metadata;
pub mod qmp;
mod state_file;

pub use api::{
    HostApi, HostError, HostErrorKind, HostStatus, LocalHost, RunSpec, image_content_id,
};
pub use driver::{
    AccelDecision, AccelMode, Accelerator, DirectKernel, GUEST_IPV4, HypervisorDriver,
    METADATA_IPV4, QemuDriver, QemuTools, VmEvent, VmExit, VmHandle, VmNetwork, VmSpec,
};
pub use error::{ComputeError, Result};
pub use host::{
    ComputeHost, HostCapacity, HostConfig, InstanceRecord, InstanceState, RebootOutcome,
    RecoveryReport, RunRequest, is_instance_id, new_instance_id,
};
pub use image::{Image, ImageSource};
pub use instance_type::{INSTANCE_TYPES, InstanceType};
pub use metadata::{InstanceMetadata, MetadataServer};
