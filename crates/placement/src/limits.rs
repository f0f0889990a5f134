//! Every bound this crate enforces, as a named constant with the unit last.
//!
//! They bound the work of a placement (which scans every node) and the size
//! of what is parsed from an operator's file or a tenant's attestation.

/// Largest topology file accepted, in bytes.
pub const TOPOLOGY_FILE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most regions in a topology.
pub const TOPOLOGY_REGIONS_MAX: usize = 64;
/// Most sites in a topology.
pub const TOPOLOGY_SITES_MAX: usize = 1024;
/// Most nodes in a topology (a placement scores each once).
pub const TOPOLOGY_NODES_MAX: usize = 10_000;
/// Most entries in one list of a policy (countries, jurisdictions, ...).
pub const POLICY_LIST_ENTRIES_MAX: usize = 256;
/// Largest policy JSON accepted, in bytes.
pub const POLICY_JSON_BYTES_MAX: usize = 64 * 1024;
/// Most nodes one blob is spread over (replicas, or data + parity shards).
pub const PLACEMENT_WIDTH_MAX: u32 = 32;
/// Most replica lines in one attestation; it must stay well under the signed
/// note's own limit of 1,000,000 bytes.
pub const ATTESTATION_REPLICAS_MAX: usize = 2048;
/// Largest attestation accepted by the verifier, in bytes (the signed-note
/// library refuses larger notes too).
pub const ATTESTATION_BYTES_MAX: usize = 1_000_000;
/// Most site rejections quoted in one placement error.
pub const ERROR_REASONS_MAX: usize = 8;
