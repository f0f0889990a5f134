//! `nuage-placement`: residency, the decision layer. The operator's
//! topology (regions, sites with their country, jurisdictions, operator and
//! qualifications, nodes), tenants' and buckets' residency policies, the
//! choice of nodes for every blob ([`place`]), the repair of an existing
//! placement ([`repair_plan`]) and its compliance check ([`check`]), and
//! signed residency attestations ([`Attestation`], [`verify`]).
//!
//! The invariant this crate exists for: no byte, replica, log or key lands
//! on a node outside the policy. [`place`] and [`repair_plan`] only ever
//! name compliant, up nodes with room, and fail with a [`PlacementError`]
//! that says why when the policy cannot be met; every write, copy, repair,
//! drain and migration path must go through them.
//!
//! No I/O: the binary reads `topology.toml` and hands over its text; node
//! states and times are parameters. Errors are one enum per concern
//! ([`TopologyError`], [`PolicyError`], [`NotNarrower`], [`PlacementError`],
//! [`AttestationError`]) rather than one for the crate, because each reaches
//! a different caller (the operator's file check, the admin API, the S3
//! write path, a tenant's verifier) that maps it on its own.
//! Reference: `docs/residency.md`.

pub mod attestation;
pub mod geo;
pub mod limits;
pub mod placement;
pub mod policy;
pub mod topology;

pub use attestation::{
    Attestation, AttestationError, AttestationSigner, FORMAT, ReplicaRef, ReplicaStatement,
    Subject, verifier_key, verify,
};
pub use geo::{CountryCode, Jurisdiction, Qualification};
pub use placement::{
    Compliance, Move, MoveReason, NodeState, NodeStates, NodeStatus, Placement, PlacementError,
    RepairPlan, Violation, check, place, repair_plan, score,
};
pub use policy::{
    Durability, NotNarrower, PolicyError, PolicyRule, ResidencyPolicy, SiteRejection,
};
pub use topology::{
    ComputeHostEntry, ComputeHostInfo, Node, NodeEntry, Operator, Region, RegionEntry, Site,
    SiteEntry, SiteOperator, Topology, TopologyError, TopologyFile,
};
