//! Property tests over seeded random topologies, node states and policies:
//! placement never names a non-compliant, down, draining or full node,
//! spreads over as many sites as it can, fails only when it must; repairs
//! reach a compliant placement and then rest; narrowing is sound.
#![allow(clippy::unwrap_used)]

use nuage_placement::{
    Durability, NodeEntry, NodeState, NodeStates, NodeStatus, Operator, PlacementError,
    RegionEntry, ResidencyPolicy, SiteEntry, Topology, TopologyFile, check, place, repair_plan,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use std::collections::{BTreeMap, BTreeSet};

const CASES: u64 = 400;
const BLOBS_PER_CASE: usize = 20;

const COUNTRIES: [&str; 6] = ["FR", "DE", "NO", "US", "CH", "IE"];
const LABELS: [&str; 2] = ["FR-GOV", "HEALTH-EU"];
const QUALIFICATIONS: [&str; 3] = ["secnumcloud", "hds", "c5"];
const PLACES: [&str; 9] = [
    "EU",
    "EEA",
    "FR-GOV",
    "HEALTH-EU",
    "FR",
    "DE",
    "US",
    "NO",
    "CH",
];

fn subset<'a>(rng: &mut StdRng, from: &[&'a str], p: f64) -> Vec<&'a str> {
    from.iter().copied().filter(|_| rng.gen_bool(p)).collect()
}

fn topology(rng: &mut StdRng) -> Topology {
    let mut file = TopologyFile {
        regions: vec![RegionEntry {
            id: "r".into(),
            name: None,
        }],
        ..TopologyFile::default()
    };
    let sites = rng.gen_range(1..=8);
    for s in 0..sites {
        let country = *COUNTRIES.choose(rng).unwrap();
        let mut jurisdictions: Vec<String> = subset(rng, &LABELS, 0.4)
            .into_iter()
            .map(String::from)
            .collect();
        if country != "US" && country != "CH" && rng.gen_bool(0.5) {
            jurisdictions.push("EEA".into());
        }
        file.sites.push(SiteEntry {
            id: format!("s{s}"),
            region: "r".into(),
            country: country.into(),
            jurisdictions,
            operator: Operator {
                entity: format!("Operator {s}"),
                country_of_control: (*["FR", "DE", "US"].choose(rng).unwrap()).into(),
            },
            qualifications: subset(rng, &QUALIFICATIONS, 0.5)
                .into_iter()
                .map(String::from)
                .collect(),
        });
        for n in 0..rng.gen_range(1..=5) {
            file.nodes.push(NodeEntry {
                id: format!("s{s}-n{n}"),
                site: format!("s{s}"),
                endpoint: format!("https://s{s}-n{n}.example:7443"),
                capacity_bytes: 100,
            });
        }
    }
    Topology::new(file).unwrap()
}

fn states(rng: &mut StdRng, topology: &Topology) -> NodeStates {
    let reported: Vec<&String> = topology
        .nodes()
        .keys()
        .filter(|_| rng.gen_bool(0.95)) // some nodes never reported
        .collect();
    reported
        .into_iter()
        .map(|id| {
            let status = match rng.gen_range(0..10) {
                0 => NodeStatus::Down,
                1 => NodeStatus::Draining,
                _ => NodeStatus::Up,
            };
            (
                id.clone(),
                NodeState {
                    status,
                    free_bytes: rng.gen_range(0..=100),
                },
            )
        })
        .collect()
}

fn policy(rng: &mut StdRng) -> Option<ResidencyPolicy> {
    let places = subset(rng, &PLACES, 0.25);
    let (countries, jurisdictions): (Vec<&str>, Vec<&str>) =
        places.into_iter().partition(|p| p.len() == 2 && *p != "EU");
    let replicas = rng.gen_range(1..=5);
    let durability = if rng.gen_bool(0.2) {
        Durability::ErasureCoding {
            data: rng.gen_range(1..=3),
            parity: rng.gen_range(1..=2),
        }
    } else {
        Durability::Replicas(replicas)
    };
    let json = serde_json::json!({
        "allowed_countries": countries,
        "allowed_jurisdictions": jurisdictions,
        "required_qualifications": subset(rng, &QUALIFICATIONS, 0.2),
        "allowed_operator_countries": if rng.gen_bool(0.3) {
            Some(subset(rng, &["FR", "DE", "US"], 0.6))
        } else {
            None
        },
        "durability": durability,
        "min_sites": rng.gen_range(1..=durability.width()),
    });
    ResidencyPolicy::from_json(&json.to_string()).ok()
}

/// Nodes a placement may use: compliant site, up, room.
fn usable(
    topology: &Topology,
    policy: &ResidencyPolicy,
    states: &NodeStates,
    size: u64,
) -> BTreeSet<String> {
    let need = policy.durability.bytes_per_node(size);
    topology
        .nodes()
        .values()
        .filter(|n| policy.site_verdict(topology.site(&n.site).unwrap()).is_ok())
        .filter(|n| {
            states
                .get(&n.id)
                .is_some_and(|s| s.status == NodeStatus::Up && s.free_bytes >= need)
        })
        .map(|n| n.id.clone())
        .collect()
}

fn sites_of<'a>(
    topology: &'a Topology,
    nodes: impl IntoIterator<Item = &'a String>,
) -> BTreeSet<&'a str> {
    nodes
        .into_iter()
        .map(|n| topology.node(n).unwrap().site.as_str())
        .collect()
}

#[test]
fn placement_properties() {
    let mut placed = 0;
    let mut refused = 0;
    for seed in 0..CASES {
        let mut rng = StdRng::seed_from_u64(seed);
        let topology = topology(&mut rng);
        let states = states(&mut rng, &topology);
        let Some(policy) = policy(&mut rng) else {
            continue;
        };
        let width = policy.width() as usize;
        for b in 0..BLOBS_PER_CASE {
            let blob = format!("blob-{seed}-{b}");
            let size = rng.gen_range(0..=60);
            let usable = usable(&topology, &policy, &states, size);
            let usable_sites = sites_of(&topology, &usable);
            match place(&topology, &policy, &states, &blob, size) {
                Ok(placement) => {
                    placed += 1;
                    let nodes: BTreeSet<&String> = placement.nodes.iter().collect();
                    assert_eq!(nodes.len(), width, "seed {seed}: distinct nodes");
                    for node in &placement.nodes {
                        assert!(usable.contains(node), "seed {seed}: {node} is not usable");
                    }
                    let sites = sites_of(&topology, &placement.nodes);
                    // Spread first: as many sites as possible.
                    assert_eq!(sites.len(), width.min(usable_sites.len()), "seed {seed}");
                    assert!(sites.len() >= policy.min_sites as usize);
                    assert!(check(&topology, &policy, &placement.nodes).is_compliant());
                    // Deterministic.
                    assert_eq!(
                        place(&topology, &policy, &states, &blob, size).unwrap(),
                        placement
                    );
                }
                Err(error) => {
                    refused += 1;
                    // Refused only when it must be.
                    assert!(
                        usable.len() < width || usable_sites.len() < policy.min_sites as usize,
                        "seed {seed}: refused with {} usable nodes on {} sites: {error}",
                        usable.len(),
                        usable_sites.len()
                    );
                    if let PlacementError::NoCompliantSite { .. } = error {
                        assert!(
                            topology
                                .sites()
                                .values()
                                .all(|s| policy.site_verdict(s).is_err())
                        );
                    }
                }
            }
        }
    }
    // The generator exercises both outcomes.
    assert!(
        placed > 1000 && refused > 1000,
        "placed {placed}, refused {refused}"
    );
}

#[test]
fn repair_properties() {
    let mut repaired = 0;
    for seed in 0..CASES {
        let mut rng = StdRng::seed_from_u64(1_000_000 + seed);
        let topology = topology(&mut rng);
        let states = states(&mut rng, &topology);
        let Some(policy) = policy(&mut rng) else {
            continue;
        };
        let all: Vec<String> = topology.nodes().keys().cloned().collect();
        for b in 0..BLOBS_PER_CASE {
            let blob = format!("blob-{seed}-{b}");
            // Replicas anywhere, compliant or not, some on unknown nodes.
            let count = rng.gen_range(1..=4);
            let mut current: Vec<String> = all.choose_multiple(&mut rng, count).cloned().collect();
            if rng.gen_bool(0.1) {
                current.push("gone-n1".into());
            }
            let Ok(plan) = repair_plan(&topology, &policy, &states, &blob, 10, &current) else {
                continue;
            };
            repaired += 1;
            let usable = usable(&topology, &policy, &states, 10);
            for node in &plan.add {
                assert!(
                    usable.contains(node),
                    "seed {seed}: added {node} not usable"
                );
                assert!(
                    !current.contains(node),
                    "seed {seed}: added {node} holds it already"
                );
            }
            for node in &plan.keep {
                assert!(
                    current.contains(node) && usable.contains(node) || {
                        // Kept replicas need no room.
                        policy.site_verdict(topology.site_of(node).unwrap()).is_ok()
                            && states[node].status == NodeStatus::Up
                    }
                );
            }
            assert!(!plan.sources.is_empty());
            let target = plan.target();
            assert!(
                check(&topology, &policy, &target).is_compliant(),
                "seed {seed}: {:?}",
                check(&topology, &policy, &target)
            );
            // Every replica not in the target is removed or unavailable.
            let accounted: BTreeSet<&String> = plan
                .remove
                .iter()
                .chain(&plan.unavailable)
                .map(|m| &m.node)
                .chain(&target)
                .collect();
            for node in &current {
                assert!(accounted.contains(node), "seed {seed}: {node} forgotten");
            }
            // Carried out with the same states, it rests.
            let mut after = states.clone();
            for node in &plan.add {
                after.get_mut(node).unwrap().free_bytes -= policy.durability.bytes_per_node(10);
            }
            let again = repair_plan(&topology, &policy, &after, &blob, 10, &target).unwrap();
            assert!(again.is_noop(), "seed {seed}: {again:?}");
        }
    }
    assert!(repaired > 1000, "repaired {repaired}");
}

#[test]
fn narrowing_is_sound() {
    let mut narrower = 0;
    for seed in 0..CASES * 10 {
        let mut rng = StdRng::seed_from_u64(2_000_000 + seed);
        let topology = topology(&mut rng);
        let (Some(parent), Some(child)) = (policy(&mut rng), policy(&mut rng)) else {
            continue;
        };
        if child.narrows(&parent).is_err() {
            continue;
        }
        narrower += 1;
        for site in topology.sites().values() {
            if child.site_verdict(site).is_ok() {
                assert!(
                    parent.site_verdict(site).is_ok(),
                    "seed {seed}: {} narrows {} but allows {site:?}",
                    child.to_json(),
                    parent.to_json()
                );
            }
        }
        assert!(child.durability.losses_tolerated() >= parent.durability.losses_tolerated());
        assert!(child.min_sites >= parent.min_sites);
    }
    assert!(narrower > 20, "only {narrower} narrowing pairs generated");
}

#[test]
fn rendezvous_moves_few_blobs_when_a_node_joins() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut topology = loop {
        let t = topology(&mut rng);
        if t.nodes().len() >= 10 {
            break t;
        }
    };
    let policy = ResidencyPolicy::from_json(
        r#"{"allowed_countries":["FR","DE","NO","US","CH","IE"],"durability":{"replicas":1}}"#,
    )
    .unwrap();
    let up = |t: &Topology| -> NodeStates {
        t.nodes()
            .keys()
            .map(|id| {
                (
                    id.clone(),
                    NodeState {
                        status: NodeStatus::Up,
                        free_bytes: 1000,
                    },
                )
            })
            .collect()
    };
    let before: BTreeMap<String, String> = (0..2000)
        .map(|i| {
            let blob = format!("b{i}");
            let node = place(&topology, &policy, &up(&topology), &blob, 1)
                .unwrap()
                .nodes[0]
                .clone();
            (blob, node)
        })
        .collect();
    // One more node in the first site: only blobs that now land on it move.
    let mut file = TopologyFile::default();
    file.regions.push(RegionEntry {
        id: "r".into(),
        name: None,
    });
    for site in topology.sites().values() {
        file.sites.push(SiteEntry {
            id: site.id.clone(),
            region: site.region.clone(),
            country: site.country.to_string(),
            jurisdictions: Vec::new(),
            operator: Operator {
                entity: site.operator.entity.clone(),
                country_of_control: site.operator.country_of_control.to_string(),
            },
            qualifications: Vec::new(),
        });
    }
    for node in topology.nodes().values() {
        file.nodes.push(NodeEntry {
            id: node.id.clone(),
            site: node.site.clone(),
            endpoint: node.endpoint.clone(),
            capacity_bytes: node.capacity_bytes,
        });
    }
    file.nodes.push(NodeEntry {
        id: "new-node".into(),
        site: "s0".into(),
        endpoint: "https://new-node.example:7443".into(),
        capacity_bytes: 100,
    });
    topology = Topology::new(file).unwrap();
    let mut moved = 0;
    for (blob, node) in &before {
        let now = &place(&topology, &policy, &up(&topology), blob, 1)
            .unwrap()
            .nodes[0];
        if now != node {
            assert_eq!(now, "new-node");
            moved += 1;
        }
    }
    let nodes = topology.nodes().len();
    // About 1/nodes of the blobs move to the new node, nothing else moves.
    assert!(
        moved > 0 && moved < 2 * 2000 / nodes,
        "moved {moved} of 2000 ({nodes} nodes)"
    );
}
