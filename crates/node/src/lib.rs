//! Storage nodes: the service that keeps blobs for gateways on one machine of
//! one site, the client gateways (and nodes repairing each other) reach it
//! with, and the cluster PKI that names every member.
//!
//! - `pki`: the cluster CA; certificates whose subject alternative names
//!   carry `nuage://<site>/<role>/<node>`.
//! - `identity`: that identity, parsed from a verified certificate.
//! - `tls`: rustls configurations. Mutual TLS is mandatory both ways: the node
//!   accepts only clients whose certificate the cluster CA signed, and the
//!   client accepts only the node (id and site) it meant to reach.
//! - `store`: blobs on the node's disk, in `nuage-blob`'s format; written
//!   under a temporary name and linked into place once durable, so a crash
//!   never leaves a partial blob visible.
//! - `server`: the HTTP/1.1 protocol (docs/storage-nodes.md), every request
//!   authorized by the caller's certificate role.
//! - `client`: `NodeClient`, streaming writes and reads; `remote`:
//!   `RemoteBlobStore`, `nuage_blob::BlobStore` over one node.
//!
//! This crate never decides where a blob goes (placement does) nor which
//! blobs are live (the metadata store does); a node stores what an
//! authenticated gateway sends it and nothing else.

pub mod client;
pub mod identity;
pub mod limits;
pub mod pki;
pub mod remote;
pub mod server;
pub mod store;
pub mod tls;
pub mod wire;

pub use client::{NodeBlobWriter, NodeClient, NodeClientConfig};
pub use identity::{NodeIdentity, Role};
pub use remote::RemoteBlobStore;
pub use server::{NodeServer, NodeServerConfig};
pub use wire::{BlobInfo, ListPage, NodeStatus, WriteReceipt};

/// What can go wrong in a node, its client or the PKI.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("bad identity: {0}")]
    BadIdentity(String),
    #[error("certificate authority: {0}")]
    Pki(String),
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    #[error("the peer is not the expected node: {0}")]
    PeerIdentity(String),
    #[error("cannot reach the node: {0}")]
    Transport(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("blob {0} does not exist on the node")]
    NotFound(String),
    #[error("blob exists with other content: {0}")]
    Exists(String),
    #[error("the node is out of space: {0}")]
    InsufficientStorage(String),
    #[error("invalid range: {0}")]
    InvalidRange(String),
    #[error("access denied by the node: {0}")]
    AccessDenied(String),
    #[error("the node refused the request ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("checksum mismatch: {0}")]
    ChecksumMismatch(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("blob {blob_id} is corrupt on the node: {detail}")]
    Corrupt { blob_id: String, detail: String },
    #[error("node I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<NodeError> for nuage_blob::BlobError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::NotFound(id) => Self::NotFound(id),
            NodeError::Corrupt { blob_id, detail } => Self::Corrupt { blob_id, detail },
            NodeError::Io(e) => Self::Io(e),
            other => Self::Io(std::io::Error::other(other.to_string())),
        }
    }
}
