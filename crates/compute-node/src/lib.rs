//! The compute host protocol: how a gateway drives a compute host that runs
//! in a process of its own (`nuage serve --role compute`, docs/compute.md,
//! "Several hosts").
//!
//! [`ComputeNodeServer`] serves one `ComputeHost` over HTTP/1.1 with mutual
//! TLS from the cluster CA: its certificate must name role `compute`, and
//! only callers whose certificate names role `gateway` are served.
//! [`RemoteHost`] is the gateway's client; it implements
//! `nuage_compute::HostApi`, so the EC2 front end drives a remote host
//! exactly as one in its own process. Bodies are JSON, bounded; an image
//! travels as one streamed request (disk, kernel, initrd back to back, sizes
//! declared up front) and is checked by the host as `register_image` checks
//! it. Errors travel as `nuage_compute::HostError` (a `ComputeError`'s kind
//! and text), so the EC2 client gets the same codes either way.
//!
//! *Boundaries:* no EC2, IAM or residency here (the gateway schedules);
//! nothing but `ComputeHost`'s public API on the host side.

pub mod client;
pub mod limits;
pub mod server;

pub use client::{RemoteHost, RemoteHostConfig};
pub use server::{ComputeNodeServer, ComputeNodeServerConfig};

/// Why a compute host could not start.
#[derive(Debug, thiserror::Error)]
pub enum ComputeNodeError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Node(#[from] nuage_node::NodeError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Paths and headers of the protocol.
pub mod wire {
    use serde::{Deserialize, Serialize};

    pub const STATUS_PATH: &str = "/v1/status";
    /// `GET /v1/images/<id>` (has it?), `PUT /v1/images/<id>` (push).
    pub const IMAGES_PATH: &str = "/v1/images";
    /// `GET`, `POST` (run); `/<id>` `GET`; `/<id>/<action>` `POST`;
    /// `/<id>/console` `GET`.
    pub const INSTANCES_PATH: &str = "/v1/instances";
    /// The header that describes a pushed image ([`ImageParts`], JSON).
    pub const IMAGE_PARTS_HEADER: &str = "x-nuage-image-parts";

    /// What a pushed image's body holds, in order.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ImageParts {
        pub disk_bytes: u64,
        /// Present for a direct-boot image.
        #[serde(default)]
        pub kernel_bytes: Option<u64>,
        #[serde(default)]
        pub initrd_bytes: Option<u64>,
        #[serde(default)]
        pub cmdline: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct HasImage {
        pub present: bool,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Registered {
        pub image_id: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ConsoleOutput {
        pub output: String,
    }

    /// An image id: 64 lower-case hex digits.
    #[must_use]
    pub fn is_image_id(id: &str) -> bool {
        id.len() == 64
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// An instance id: `i-` and 8 to 32 lower-case hex digits.
    #[must_use]
    pub fn is_instance_id(id: &str) -> bool {
        id.strip_prefix("i-").is_some_and(|hex| {
            (8..=32).contains(&hex.len())
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    }
}
