//! Nuage's per-tenant audit log: an append-only, tamper-evident transparency log.
//!
//! Every request that touches a tenant becomes an [`Entry`], serialized canonically
//! (one compact JSON line) into a Merkle tree leaf. The tree follows RFC 6962 /
//! RFC 9162 hashing; the log is published in the C2SP formats: signed checkpoints
//! (`tlog-checkpoint` in a `signed-note`, Ed25519), hash tiles and entry bundles
//! (`tlog-tiles`), plus inclusion and consistency proofs on request. A tenant
//! verifies all of it offline with the log's public key alone ([`verify`]).
//!
//! The pieces:
//! - [`entry`]: what one entry records, and its canonical bytes.
//! - [`store`]: the durable, crash-safe storage of entries and tree hashes behind
//!   the [`LogStore`] trait ([`FileStore`] today, PostgreSQL later).
//! - [`log`]: [`AuditLog`], the service: group-committed appends, checkpoints,
//!   tiles and proofs for one tenant.
//! - [`tiles`], [`checkpoint`], [`proof`]: the wire formats.
//! - [`prune`]: retention, behind a signed pruning marker.
//! - [`verify`]: the offline verifier and the directory layout it reads.
//! - [`request`]: [`RequestAudit`], what a front end decided about a request,
//!   which the server completes into an entry (the recipe is in
//!   `docs/audit-log.md`, "For developers").
//! - [`witness`]: C2SP tlog-witness: the `add-checkpoint` checks and state of
//!   a witness, and `cosignature/v1` lines, made and verified.
//! - [`registry`]: [`AuditLogs`], every tenant's log on one server: opened on
//!   first use, a bounded number open, idle ones closed, retention applied,
//!   and every newly signed checkpoint announced on one bounded queue (for
//!   whoever submits them to witnesses; [`AuditLog::keep_cosignatures`]
//!   keeps the witnesses' answers beside the log).
//!
//! This crate never decides what to log or whether a request is allowed: callers
//! hand it finished entries. It never acknowledges an append before it is durable,
//! and it never signs a checkpoint that is inconsistent with the last one it signed.

pub mod checkpoint;
pub mod entry;
mod error;
pub mod log;
pub mod proof;
pub mod prune;
pub mod registry;
pub mod request;
pub mod store;
pub mod tiles;
mod tree;
pub mod verify;
pub mod witness;

pub use checkpoint::{CheckpointSigner, SignedCheckpoint, verifier_key};
pub use entry::{
    Actor, ActorKind, Authentication, Decision, ENTRY_FORMAT_VERSION, Effect, Entry, PlacedBlob,
    PlacedNode, ReplicaChange,
};
pub use error::AuditError;
pub use log::AuditLog;
pub use proof::{ConsistencyProof, InclusionProof};
pub use prune::{PruningMarker, retention_cutoff};
pub use registry::{AuditLogs, RegistryConfig, is_tenant_id};
pub use request::{AuditSlot, RequestAudit, RequestFacts, client_text};
pub use store::{FileStore, LogStore, NoteKind};
pub use tlog_tiles::Hash;
pub use verify::{VerifyReport, export_dir, export_json_lines, for_each_entry, verify_dir};
