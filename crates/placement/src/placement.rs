//! Choosing the nodes that hold a blob, repairing a blob's placement, and
//! checking an existing one against a policy.
//!
//! Every decision here obeys one rule: a node is a target only if its site
//! complies with the policy, it is up (never down, draining or of unknown
//! state) and it has room. Among those, each blob's nodes are chosen by
//! rendezvous (highest random weight) hashing, SHA-256 of the blob id and the
//! node id, so every gateway that sees the same topology and node states
//! makes the same choice, and adding a node moves only the blobs it wins.
//! Sites come first: the k-th node chosen is the best-scored node of the
//! site holding the fewest of the blob's nodes so far, so a blob spans as
//! many sites as it can before any site holds two of its copies.
//!
//! When the policy cannot be met, the functions return an error that says
//! why, with counts; they never return a partial or widened placement.

use crate::limits::ERROR_REASONS_MAX;
use crate::policy::{ResidencyPolicy, SiteRejection};
use crate::topology::{Node, Site, Topology};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Domain separation for the rendezvous score (changing it moves every blob).
const SCORE_DOMAIN: &[u8] = b"nuage-placement/v1\0";

/// Whether a node takes data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Serving: a placement target.
    Up,
    /// Unreachable: holds nothing readable, receives nothing.
    Down,
    /// Being emptied by its operator: readable, receives nothing, its
    /// replicas move elsewhere.
    Draining,
}

/// What the cluster knows of a node right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Up, down or draining.
    pub status: NodeStatus,
    /// Room left.
    pub free_bytes: u64,
}

/// Node states by node id. A node of the topology missing here is treated as
/// down: a state nobody reported is not trusted with data.
pub type NodeStates = BTreeMap<String, NodeState>;

/// The nodes chosen for a blob, in order: with erasure coding, shard `i`
/// goes to `nodes[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Node ids.
    pub nodes: Vec<String>,
}

/// Why data cannot be placed. The S3 layer maps these to one error each
/// (`docs/residency.md`); [`PlacementError::is_permanent`] tells a topology
/// that can never comply from a shortage that may pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// No site of the topology is allowed by the policy.
    #[error(
        "no site complies with the residency policy ({sites} site(s) in the topology{})",
        reasons_text(reasons)
    )]
    NoCompliantSite {
        /// Sites in the topology.
        sites: usize,
        /// Why sites were refused (`par1: lacks secnumcloud`), at most
        /// `ERROR_REASONS_MAX`.
        reasons: Vec<String>,
    },
    /// Fewer distinct sites than the policy's `min_sites`.
    #[error(
        "the residency policy needs {required} distinct sites; {compliant_sites} site(s) comply, \
         {usable_sites} of them with a node up and with room"
    )]
    NotEnoughSites {
        /// The policy's `min_sites`.
        required: u32,
        /// Compliant sites in the topology.
        compliant_sites: usize,
        /// Those with a usable node.
        usable_sites: usize,
    },
    /// Fewer usable compliant nodes than the blob needs.
    #[error(
        "the residency policy needs {needed} nodes; {compliant} node(s) comply, {up} of them up, \
         {with_room} of those with {bytes_per_node} bytes free"
    )]
    NotEnoughNodes {
        /// Nodes per blob.
        needed: u32,
        /// Nodes in compliant sites.
        compliant: usize,
        /// Those up (not down, draining or unknown).
        up: usize,
        /// Those with room for the blob.
        with_room: usize,
        /// Bytes each node must take.
        bytes_per_node: u64,
    },
    /// A repair needs a copy and no replica can be read.
    #[error("no replica of the blob can be read ({replicas} recorded, none on a node up)")]
    NoReadableReplica {
        /// Replicas recorded.
        replicas: usize,
    },
}

fn reasons_text(reasons: &[String]) -> String {
    if reasons.is_empty() {
        String::new()
    } else {
        format!(": {}", reasons.join("; "))
    }
}

impl PlacementError {
    /// Whether the topology itself can never satisfy the policy, whatever
    /// the nodes' states (as opposed to nodes down or full).
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::NoCompliantSite { .. } => true,
            Self::NotEnoughSites {
                required,
                compliant_sites,
                ..
            } => *compliant_sites < *required as usize,
            Self::NotEnoughNodes {
                needed, compliant, ..
            } => *compliant < *needed as usize,
            Self::NoReadableReplica { .. } => false,
        }
    }
}

/// The rendezvous score of `node` for `blob`: the first 8 bytes of
/// SHA-256(domain ‖ blob ‖ 0 ‖ node), big-endian.
#[must_use]
pub fn score(blob: &str, node: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(SCORE_DOMAIN);
    hasher.update(blob.as_bytes());
    hasher.update([0]);
    hasher.update(node.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[derive(Debug, Clone, Copy)]
struct Scored<'a> {
    node: &'a Node,
    score: u64,
    kept: bool,
}

impl Scored<'_> {
    /// Higher is better; ties (never seen in practice) go to the smaller id.
    fn rank(&self) -> (u64, std::cmp::Reverse<&str>) {
        (self.score, std::cmp::Reverse(self.node.id.as_str()))
    }
}

/// The compliant part of the topology, for one blob.
struct Pool<'a> {
    compliant_sites: usize,
    compliant_nodes: usize,
    up_nodes: usize,
    /// Compliant, up, with room.
    candidates: Vec<Scored<'a>>,
    bytes_per_node: u64,
}

fn pool<'a>(
    topology: &'a Topology,
    policy: &ResidencyPolicy,
    states: &NodeStates,
    blob: &str,
    size_bytes: u64,
) -> Result<Pool<'a>, PlacementError> {
    let bytes_per_node = policy.durability.bytes_per_node(size_bytes);
    let mut compliant_sites = BTreeSet::new();
    let mut reasons = Vec::new();
    for site in topology.sites().values() {
        match policy.site_verdict(site) {
            Ok(()) => {
                compliant_sites.insert(site.id.as_str());
            }
            Err(rejection) => {
                if reasons.len() < ERROR_REASONS_MAX {
                    reasons.push(format!("{}: {rejection}", site.id));
                }
            }
        }
    }
    if compliant_sites.is_empty() {
        return Err(PlacementError::NoCompliantSite {
            sites: topology.sites().len(),
            reasons,
        });
    }
    let mut pool = Pool {
        compliant_sites: compliant_sites.len(),
        compliant_nodes: 0,
        up_nodes: 0,
        candidates: Vec::new(),
        bytes_per_node,
    };
    for node in topology.nodes().values() {
        if !compliant_sites.contains(node.site.as_str()) {
            continue;
        }
        pool.compliant_nodes += 1;
        let Some(state) = states.get(&node.id) else {
            continue;
        };
        if state.status != NodeStatus::Up {
            continue;
        }
        pool.up_nodes += 1;
        if state.free_bytes >= bytes_per_node {
            pool.candidates.push(Scored {
                node,
                score: score(blob, &node.id),
                kept: false,
            });
        }
    }
    Ok(pool)
}

impl Pool<'_> {
    fn not_enough_nodes(&self, needed: u32) -> PlacementError {
        PlacementError::NotEnoughNodes {
            needed,
            compliant: self.compliant_nodes,
            up: self.up_nodes,
            with_room: self.candidates.len(),
            bytes_per_node: self.bytes_per_node,
        }
    }
}

fn site_counts<'a>(chosen: &[Scored<'a>]) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for scored in chosen {
        *counts.entry(scored.node.site.as_str()).or_insert(0) += 1;
    }
    counts
}

/// Picks, in `chosen`, the node to give up: in the most crowded site, a
/// newly added one before a kept one, then the lowest score.
fn victim(chosen: &[Scored<'_>]) -> Option<usize> {
    let counts = site_counts(chosen);
    chosen
        .iter()
        .enumerate()
        .min_by_key(|(_, s)| {
            (
                std::cmp::Reverse(counts.get(s.node.site.as_str()).copied().unwrap_or(0)),
                s.kept,
                s.rank(),
            )
        })
        .map(|(i, _)| i)
}

/// Why a replica leaves a blob's placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum MoveReason {
    /// The node is no longer in the topology.
    NodeNotInTopology,
    /// The node is down (or its state unknown).
    NodeDown,
    /// The node is being drained.
    NodeDraining,
    /// The node's site does not comply with the policy.
    SiteNotAllowed {
        /// Why.
        rejection: SiteRejection,
    },
    /// More replicas than the policy's durability.
    Surplus,
    /// Moved to reach the policy's `min_sites`.
    Spread,
    /// The same node was listed twice.
    Duplicate,
}

impl fmt::Display for MoveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NodeNotInTopology => f.write_str("node not in the topology"),
            Self::NodeDown => f.write_str("node down"),
            Self::NodeDraining => f.write_str("node draining"),
            Self::SiteNotAllowed { rejection } => write!(f, "site not allowed: {rejection}"),
            Self::Surplus => f.write_str("more replicas than the policy asks"),
            Self::Spread => f.write_str("moved to span more sites"),
            Self::Duplicate => f.write_str("listed twice"),
        }
    }
}

/// One replica and why it leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The node holding it.
    pub node: String,
    /// Why.
    pub reason: MoveReason,
}

/// What to do to bring one blob's placement in line with the policy.
/// Execute in order: copy the blob from a `sources` node to every `add`
/// node, make those copies durable and recorded, and only then delete the
/// replicas in `remove`. Never delete first: a non-compliant replica stays
/// until a compliant copy exists (the bucket reports itself non-compliant
/// meanwhile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairPlan {
    /// Replicas that stay (compliant, up).
    pub keep: Vec<String>,
    /// Nodes that receive a new copy (compliant, up, with room).
    pub add: Vec<String>,
    /// Replicas to delete once the new copies are durable (when their node
    /// is reachable).
    pub remove: Vec<Move>,
    /// Replicas that cannot be read now and are not counted (node down or
    /// gone); a compliant one that comes back is surplus, and a later plan
    /// removes it.
    pub unavailable: Vec<Move>,
    /// Readable replicas to copy from, compliant ones first.
    pub sources: Vec<String>,
}

impl RepairPlan {
    /// The placement once the plan is carried out.
    #[must_use]
    pub fn target(&self) -> Vec<String> {
        self.keep.iter().chain(&self.add).cloned().collect()
    }

    /// Whether nothing needs doing.
    #[must_use]
    pub fn is_noop(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// Adds the best candidates to `chosen` until it has `width` nodes on at
/// least `min_sites` sites, spreading across sites first; trims surplus.
fn select<'a>(
    mut chosen: Vec<Scored<'a>>,
    pool: &Pool<'a>,
    width: u32,
    min_sites: u32,
    dropped: &mut Vec<(Scored<'a>, MoveReason)>,
) -> Result<Vec<Scored<'a>>, PlacementError> {
    let width = width as usize;
    let min_sites = min_sites as usize;
    while chosen.len() > width {
        let Some(i) = victim(&chosen) else { break };
        dropped.push((chosen.remove(i), MoveReason::Surplus));
    }
    let taken: BTreeSet<&str> = chosen.iter().map(|s| s.node.id.as_str()).collect();
    let mut rest: Vec<Scored<'a>> = pool
        .candidates
        .iter()
        .filter(|s| !taken.contains(s.node.id.as_str()))
        .copied()
        .collect();
    // Bounded: each turn moves one node from `rest` to `chosen`.
    while chosen.len() < width {
        let counts = site_counts(&chosen);
        let best = rest.iter().enumerate().max_by_key(|(_, s)| {
            (
                std::cmp::Reverse(counts.get(s.node.site.as_str()).copied().unwrap_or(0)),
                s.rank(),
            )
        });
        let Some((i, _)) = best else {
            return Err(pool.not_enough_nodes(width as u32));
        };
        chosen.push(rest.remove(i));
    }
    // Only kept replicas can leave too few sites here: fill-in already
    // prefers unused sites. Each swap adds a site, so this ends.
    while site_counts(&chosen).len() < min_sites {
        let counts = site_counts(&chosen);
        let newcomer = rest
            .iter()
            .enumerate()
            .filter(|(_, s)| !counts.contains_key(s.node.site.as_str()))
            .max_by_key(|(_, s)| s.rank());
        let Some((i, _)) = newcomer else {
            let usable: BTreeSet<&str> = chosen
                .iter()
                .chain(&rest)
                .map(|s| s.node.site.as_str())
                .collect();
            return Err(PlacementError::NotEnoughSites {
                required: min_sites as u32,
                compliant_sites: pool.compliant_sites,
                usable_sites: usable.len(),
            });
        };
        let Some(out) = victim(&chosen) else { break };
        let leaving = chosen.remove(out);
        if leaving.kept {
            dropped.push((leaving, MoveReason::Spread));
        }
        chosen.push(rest.remove(i));
    }
    Ok(chosen)
}

/// Chooses the nodes for a new blob of `size_bytes` (a write, a multipart
/// part, a copy that does not share the source's blob).
///
/// # Errors
/// A [`PlacementError`] saying why the policy cannot be met; nothing may
/// then be written anywhere.
pub fn place(
    topology: &Topology,
    policy: &ResidencyPolicy,
    states: &NodeStates,
    blob: &str,
    size_bytes: u64,
) -> Result<Placement, PlacementError> {
    let pool = pool(topology, policy, states, blob, size_bytes)?;
    check_sites_possible(&pool, policy)?;
    let chosen = select(
        Vec::new(),
        &pool,
        policy.width(),
        policy.min_sites,
        &mut Vec::new(),
    )?;
    Ok(Placement {
        nodes: chosen.into_iter().map(|s| s.node.id.clone()).collect(),
    })
}

fn check_sites_possible(pool: &Pool<'_>, policy: &ResidencyPolicy) -> Result<(), PlacementError> {
    if pool.compliant_sites < policy.min_sites as usize {
        let usable: BTreeSet<&str> = pool
            .candidates
            .iter()
            .map(|s| s.node.site.as_str())
            .collect();
        return Err(PlacementError::NotEnoughSites {
            required: policy.min_sites,
            compliant_sites: pool.compliant_sites,
            usable_sites: usable.len(),
        });
    }
    Ok(())
}

/// Plans the repair of one blob whose replicas are on `current`: after a
/// node loss, a drain, a policy change (narrowing moves data out of sites
/// that no longer comply), or a rebalancing. The target keeps every
/// compliant replica it can and adds only compliant, up nodes with room.
///
/// # Errors
/// A [`PlacementError`] when no compliant target exists (the blob then
/// stays where it is, reported non-compliant by [`check`]), or
/// [`PlacementError::NoReadableReplica`].
pub fn repair_plan(
    topology: &Topology,
    policy: &ResidencyPolicy,
    states: &NodeStates,
    blob: &str,
    size_bytes: u64,
    current: &[String],
) -> Result<RepairPlan, PlacementError> {
    let pool = pool(topology, policy, states, blob, size_bytes)?;
    check_sites_possible(&pool, policy)?;
    let mut kept = Vec::new();
    let mut remove = Vec::new();
    let mut unavailable = Vec::new();
    let mut other_sources = Vec::new();
    let mut seen = BTreeSet::new();
    for id in current {
        if !seen.insert(id.as_str()) {
            unavailable.push(Move {
                node: id.clone(),
                reason: MoveReason::Duplicate,
            });
            continue;
        }
        let (Some(node), Some(site)) = (topology.node(id), topology.site_of(id)) else {
            unavailable.push(Move {
                node: id.clone(),
                reason: MoveReason::NodeNotInTopology,
            });
            continue;
        };
        let status = states.get(id).map_or(NodeStatus::Down, |s| s.status);
        let readable = status != NodeStatus::Down;
        match (policy.site_verdict(site), status) {
            (Err(rejection), _) => {
                remove.push(Move {
                    node: id.clone(),
                    reason: MoveReason::SiteNotAllowed { rejection },
                });
                if readable {
                    other_sources.push(id.clone());
                }
            }
            (Ok(()), NodeStatus::Up) => kept.push(Scored {
                node,
                score: score(blob, id),
                kept: true,
            }),
            (Ok(()), NodeStatus::Draining) => {
                remove.push(Move {
                    node: id.clone(),
                    reason: MoveReason::NodeDraining,
                });
                // Drained replicas are read before non-compliant ones.
                other_sources.insert(0, id.clone());
            }
            (Ok(()), NodeStatus::Down) => unavailable.push(Move {
                node: id.clone(),
                reason: MoveReason::NodeDown,
            }),
        }
    }
    let mut sources: Vec<String> = kept.iter().map(|s| s.node.id.clone()).collect();
    sources.extend(other_sources);
    if sources.is_empty() {
        // Every target would need a copy, and there is nothing to copy.
        return Err(PlacementError::NoReadableReplica {
            replicas: current.len(),
        });
    }
    let mut dropped = Vec::new();
    let chosen = select(kept, &pool, policy.width(), policy.min_sites, &mut dropped)?;
    for (scored, reason) in dropped {
        remove.push(Move {
            node: scored.node.id.clone(),
            reason,
        });
    }
    let keep: Vec<String> = chosen
        .iter()
        .filter(|s| s.kept)
        .map(|s| s.node.id.clone())
        .collect();
    let add: Vec<String> = chosen
        .iter()
        .filter(|s| !s.kept)
        .map(|s| s.node.id.clone())
        .collect();
    Ok(RepairPlan {
        keep,
        add,
        remove,
        unavailable,
        sources,
    })
}

/// One way an existing placement breaks its policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "violation")]
pub enum Violation {
    /// A replica on a node the topology does not know.
    UnknownNode {
        /// The node.
        node: String,
    },
    /// A replica on a site the policy does not allow.
    SiteNotAllowed {
        /// The node.
        node: String,
        /// Its site.
        site: String,
        /// Why the site is refused.
        rejection: SiteRejection,
    },
    /// Fewer compliant replicas than the policy's durability.
    TooFewReplicas {
        /// Compliant replicas.
        have: usize,
        /// Needed.
        need: u32,
    },
    /// Compliant replicas on fewer sites than `min_sites`.
    TooFewSites {
        /// Distinct sites.
        have: usize,
        /// Needed.
        need: u32,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownNode { node } => {
                write!(f, "replica on {node}, a node not in the topology")
            }
            Self::SiteNotAllowed {
                node,
                site,
                rejection,
            } => write!(f, "replica on {node} at site {site}: {rejection}"),
            Self::TooFewReplicas { have, need } => {
                write!(f, "{have} compliant replica(s), the policy needs {need}")
            }
            Self::TooFewSites { have, need } => {
                write!(
                    f,
                    "compliant replicas on {have} site(s), the policy needs {need}"
                )
            }
        }
    }
}

/// Whether a blob's replicas comply, and every way they do not.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Compliance {
    /// Empty when compliant.
    pub violations: Vec<Violation>,
}

impl Compliance {
    /// No violation.
    #[must_use]
    pub fn is_compliant(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks where a blob's replicas are against the policy. Node states do
/// not matter here: a replica on a down node is still where it is.
#[must_use]
pub fn check(topology: &Topology, policy: &ResidencyPolicy, replicas: &[String]) -> Compliance {
    check_sites(
        policy,
        replicas
            .iter()
            .map(|node| (node.as_str(), topology.site_of(node))),
        true,
    )
}

/// The check over (node, its site if known) pairs; `count` also checks the
/// replica and site counts (not for a bucket's per-node summary).
pub(crate) fn check_sites<'a>(
    policy: &ResidencyPolicy,
    replicas: impl Iterator<Item = (&'a str, Option<&'a Site>)>,
    count: bool,
) -> Compliance {
    let mut violations = Vec::new();
    let mut nodes = BTreeSet::new();
    let mut sites = BTreeSet::new();
    let mut compliant = 0usize;
    for (node, site) in replicas {
        if !nodes.insert(node) {
            continue;
        }
        match site {
            None => violations.push(Violation::UnknownNode {
                node: node.to_string(),
            }),
            Some(site) => match policy.site_verdict(site) {
                Ok(()) => {
                    compliant += 1;
                    sites.insert(site.id.as_str());
                }
                Err(rejection) => violations.push(Violation::SiteNotAllowed {
                    node: node.to_string(),
                    site: site.id.clone(),
                    rejection,
                }),
            },
        }
    }
    if count {
        if compliant < policy.width() as usize {
            violations.push(Violation::TooFewReplicas {
                have: compliant,
                need: policy.width(),
            });
        }
        if sites.len() < policy.min_sites as usize {
            violations.push(Violation::TooFewSites {
                have: sites.len(),
                need: policy.min_sites,
            });
        }
    }
    Compliance { violations }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::topology::tests::example;

    const GIB: u64 = 1 << 30;

    fn policy(json: &str) -> ResidencyPolicy {
        ResidencyPolicy::from_json(json).unwrap()
    }

    fn all_up(topology: &Topology) -> NodeStates {
        topology
            .nodes()
            .keys()
            .map(|id| {
                (
                    id.clone(),
                    NodeState {
                        status: NodeStatus::Up,
                        free_bytes: GIB,
                    },
                )
            })
            .collect()
    }

    fn site_of<'a>(topology: &'a Topology, node: &str) -> &'a str {
        &topology.node(node).unwrap().site
    }

    #[test]
    fn places_only_on_compliant_sites_spread_first() {
        let topology = example();
        let states = all_up(&topology);
        let snc = policy(
            r#"{"allowed_countries":["FR"],"required_qualifications":["secnumcloud"],"durability":{"replicas":3},"min_sites":2}"#,
        );
        for i in 0..200 {
            let blob = format!("blob-{i}");
            let placement = place(&topology, &snc, &states, &blob, 100).unwrap();
            assert_eq!(placement.nodes.len(), 3);
            let sites: BTreeSet<&str> = placement
                .nodes
                .iter()
                .map(|n| site_of(&topology, n))
                .collect();
            // par1 and par2 only, both used.
            assert_eq!(sites, BTreeSet::from(["par1", "par2"]), "{blob}");
            // Deterministic.
            assert_eq!(
                place(&topology, &snc, &states, &blob, 100).unwrap(),
                placement
            );
        }
        // EU, three replicas: three distinct sites among par1, par2, mrs1, fra1.
        let eu = policy(r#"{"allowed_jurisdictions":["EU"],"durability":{"replicas":3}}"#);
        let placement = place(&topology, &eu, &states, "x", 1).unwrap();
        let sites: BTreeSet<&str> = placement
            .nodes
            .iter()
            .map(|n| site_of(&topology, n))
            .collect();
        assert_eq!(sites.len(), 3);
        assert!(!sites.contains("iad1"));
    }

    #[test]
    fn choices_are_spread_over_nodes() {
        let topology = example();
        let states = all_up(&topology);
        let fr = policy(r#"{"allowed_countries":["FR"],"durability":{"replicas":1}}"#);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..6000 {
            let placement = place(&topology, &fr, &states, &format!("b{i}"), 1).unwrap();
            *counts.entry(placement.nodes[0].clone()).or_default() += 1;
        }
        // Six French nodes, each wins about 1,000 blobs.
        assert_eq!(counts.len(), 6);
        assert!(
            counts.values().all(|n| (800..1200).contains(n)),
            "{counts:?}"
        );
    }

    #[test]
    fn errors_say_why() {
        let topology = example();
        let mut states = all_up(&topology);
        let ch = policy(r#"{"allowed_countries":["CH"],"durability":{"replicas":1}}"#);
        let error = place(&topology, &ch, &states, "b", 1).unwrap_err();
        assert!(error.is_permanent());
        assert!(matches!(
            error,
            PlacementError::NoCompliantSite { sites: 5, .. }
        ));
        assert!(error.to_string().contains("iad1: in US"), "{error}");

        let de = policy(r#"{"allowed_countries":["DE"],"durability":{"replicas":3}}"#);
        let error = place(&topology, &de, &states, "b", 1).unwrap_err();
        assert_eq!(
            error,
            PlacementError::NotEnoughNodes {
                needed: 3,
                compliant: 2,
                up: 2,
                with_room: 2,
                bytes_per_node: 1
            }
        );
        assert!(error.is_permanent());

        let de_two_sites =
            policy(r#"{"allowed_countries":["DE"],"durability":{"replicas":2},"min_sites":2}"#);
        let error = place(&topology, &de_two_sites, &states, "b", 1).unwrap_err();
        assert!(matches!(
            error,
            PlacementError::NotEnoughSites {
                required: 2,
                compliant_sites: 1,
                ..
            }
        ));
        assert!(error.is_permanent());

        // Transient: par2 down, SecNumCloud needs two sites.
        let snc = policy(
            r#"{"allowed_countries":["FR"],"required_qualifications":["secnumcloud"],"durability":{"replicas":2},"min_sites":2}"#,
        );
        for id in ["par2-n1", "par2-n2"] {
            states.get_mut(id).unwrap().status = NodeStatus::Down;
        }
        let error = place(&topology, &snc, &states, "b", 1).unwrap_err();
        assert_eq!(
            error,
            PlacementError::NotEnoughSites {
                required: 2,
                compliant_sites: 2,
                usable_sites: 1
            }
        );
        assert!(!error.is_permanent());
        // Full nodes: too big for what is left.
        let states = all_up(&topology);
        let error = place(&topology, &snc, &states, "b", 2 * GIB).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("5 node(s) comply, 5 of them up, 0 of those with"),
            "{error}"
        );
        assert!(!error.is_permanent());
    }

    #[test]
    fn draining_down_and_unknown_nodes_are_never_chosen() {
        let topology = example();
        let mut states = all_up(&topology);
        states.get_mut("par1-n1").unwrap().status = NodeStatus::Draining;
        states.get_mut("par1-n2").unwrap().status = NodeStatus::Down;
        states.remove("par2-n1");
        let fr = policy(r#"{"allowed_countries":["FR"],"durability":{"replicas":3}}"#);
        for i in 0..300 {
            let placement = place(&topology, &fr, &states, &format!("b{i}"), 1).unwrap();
            for node in ["par1-n1", "par1-n2", "par2-n1"] {
                assert!(!placement.nodes.contains(&node.to_string()));
            }
        }
    }

    #[test]
    fn erasure_coding_places_one_shard_per_node() {
        let topology = example();
        let states = all_up(&topology);
        let ec = policy(
            r#"{"allowed_jurisdictions":["EU"],"durability":{"erasure_coding":{"data":4,"parity":2}},"min_sites":4}"#,
        );
        let placement = place(&topology, &ec, &states, "b", 4 * GIB).unwrap();
        assert_eq!(placement.nodes.len(), 6);
        let distinct: BTreeSet<&String> = placement.nodes.iter().collect();
        assert_eq!(distinct.len(), 6);
        let sites: BTreeSet<&str> = placement
            .nodes
            .iter()
            .map(|n| site_of(&topology, n))
            .collect();
        assert_eq!(sites.len(), 4);
    }

    #[test]
    fn narrowing_moves_replicas_out_and_keeps_the_rest() {
        let topology = example();
        let states = all_up(&topology);
        let current: Vec<String> = ["par1-n1", "fra1-n1", "par2-n1"].map(String::from).to_vec();
        let fr =
            policy(r#"{"allowed_countries":["FR"],"durability":{"replicas":3},"min_sites":2}"#);
        assert_eq!(
            check(&topology, &fr, &current).violations,
            vec![
                Violation::SiteNotAllowed {
                    node: "fra1-n1".into(),
                    site: "fra1".into(),
                    rejection: fr.site_verdict(topology.site("fra1").unwrap()).unwrap_err()
                },
                Violation::TooFewReplicas { have: 2, need: 3 }
            ]
        );
        let plan = repair_plan(&topology, &fr, &states, "b", 1, &current).unwrap();
        assert_eq!(plan.keep, ["par1-n1", "par2-n1"]);
        assert_eq!(plan.add.len(), 1);
        assert_ne!(site_of(&topology, &plan.add[0]), "fra1");
        assert_eq!(plan.remove.len(), 1);
        assert_eq!(plan.remove[0].node, "fra1-n1");
        assert_eq!(plan.sources, ["par1-n1", "par2-n1", "fra1-n1"]);
        assert!(check(&topology, &fr, &plan.target()).is_compliant());
        // Once done, nothing more to do.
        let again = repair_plan(&topology, &fr, &states, "b", 1, &plan.target()).unwrap();
        assert!(again.is_noop(), "{again:?}");
    }

    #[test]
    fn node_loss_drain_and_spread() {
        let topology = example();
        let mut states = all_up(&topology);
        let snc = policy(
            r#"{"allowed_countries":["FR"],"required_qualifications":["secnumcloud"],"durability":{"replicas":3},"min_sites":2}"#,
        );
        // All three in par1: compliant sites but one site only.
        let current: Vec<String> = ["par1-n1", "par1-n2", "par1-n3"].map(String::from).to_vec();
        assert_eq!(
            check(&topology, &snc, &current).violations,
            vec![Violation::TooFewSites { have: 1, need: 2 }]
        );
        let plan = repair_plan(&topology, &snc, &states, "b", 1, &current).unwrap();
        assert_eq!(plan.add.len(), 1);
        assert_eq!(site_of(&topology, &plan.add[0]), "par2");
        assert_eq!(plan.remove.len(), 1);
        assert_eq!(plan.remove[0].reason, MoveReason::Spread);
        assert!(check(&topology, &snc, &plan.target()).is_compliant());

        // A node down and another draining.
        states.get_mut("par1-n1").unwrap().status = NodeStatus::Down;
        states.get_mut("par2-n1").unwrap().status = NodeStatus::Draining;
        let current: Vec<String> = ["par1-n1", "par2-n1", "par1-n2"].map(String::from).to_vec();
        let plan = repair_plan(&topology, &snc, &states, "b", 1, &current).unwrap();
        assert_eq!(plan.keep, ["par1-n2"]);
        assert_eq!(plan.add.len(), 2);
        assert!(plan.add.contains(&"par2-n2".to_string()), "{plan:?}");
        assert!(!plan.add.contains(&"par1-n1".to_string()));
        assert_eq!(
            plan.unavailable,
            vec![Move {
                node: "par1-n1".into(),
                reason: MoveReason::NodeDown
            }]
        );
        assert_eq!(
            plan.remove,
            vec![Move {
                node: "par2-n1".into(),
                reason: MoveReason::NodeDraining
            }]
        );
        assert_eq!(plan.sources, ["par1-n2", "par2-n1"]);

        // Nothing readable.
        states.get_mut("par1-n2").unwrap().status = NodeStatus::Down;
        states.get_mut("par2-n1").unwrap().status = NodeStatus::Down;
        assert_eq!(
            repair_plan(&topology, &snc, &states, "b", 1, &current).unwrap_err(),
            PlacementError::NoReadableReplica { replicas: 3 }
        );
    }

    #[test]
    fn surplus_replicas_are_trimmed_keeping_sites() {
        let topology = example();
        let states = all_up(&topology);
        let two =
            policy(r#"{"allowed_countries":["FR"],"durability":{"replicas":2},"min_sites":2}"#);
        let current: Vec<String> = ["par1-n1", "par1-n2", "par2-n1", "unknown-n9", "par1-n1"]
            .map(String::from)
            .to_vec();
        let plan = repair_plan(&topology, &two, &states, "b", 1, &current).unwrap();
        assert!(plan.add.is_empty());
        assert_eq!(plan.keep.len(), 2);
        assert!(plan.keep.contains(&"par2-n1".to_string()));
        assert_eq!(plan.remove.len(), 1);
        assert_eq!(plan.remove[0].reason, MoveReason::Surplus);
        let reasons: Vec<&MoveReason> = plan.unavailable.iter().map(|m| &m.reason).collect();
        assert_eq!(
            reasons,
            [&MoveReason::NodeNotInTopology, &MoveReason::Duplicate]
        );
        assert_eq!(
            check(&topology, &two, &current).violations,
            vec![Violation::UnknownNode {
                node: "unknown-n9".into()
            }]
        );
    }

    #[test]
    fn repair_without_compliant_room_fails_and_keeps_the_data() {
        let topology = example();
        let states = all_up(&topology);
        let current: Vec<String> = ["fra1-n1", "fra1-n2"].map(String::from).to_vec();
        let fr_snc_operator = policy(
            r#"{"allowed_countries":["FR"],"required_qualifications":["secnumcloud"],"durability":{"replicas":2}}"#,
        );
        // Too big for any compliant node: the plan fails, nothing is proposed.
        assert!(matches!(
            repair_plan(&topology, &fr_snc_operator, &states, "b", 2 * GIB, &current),
            Err(PlacementError::NotEnoughNodes { with_room: 0, .. })
        ));
    }
}
