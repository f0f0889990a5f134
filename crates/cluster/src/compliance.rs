//! Progress reports over the location index: how many replicas a node
//! still holds (a drain is finished at zero), and whether a bucket's blobs
//! comply with its residency policy now (a narrowing's migration is
//! finished when they all do).
//!
//! Both are live walks of the whole location index, `INDEX_PAGE_ENTRIES`
//! entries at a time: O(blobs in the cluster) reads of the metadata store
//! and memory of one page plus at most `COMPLIANCE_ISSUES_MAX` listed
//! issues. They are meant for an operator's occasional question, not for a
//! request path. They read and never change anything.

use crate::index::{BlobLocation, IndexPages};
use crate::{ClusterBlobStore, ClusterError, limits};
use nuage_placement::{NodeStates, NodeStatus, ResidencyPolicy, Topology, Violation, check};

/// The replicas the location index still places on one node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeReplicas {
    pub node: String,
    /// The operator drained it (as last read or set by this gateway).
    pub draining: bool,
    /// Index entries naming it: readable replicas, replicas a repair
    /// replaced and has yet to delete, replicas of deleted blobs still to
    /// delete.
    pub replicas: u64,
    /// Their data bytes (the blobs' sizes).
    pub bytes: u64,
}

/// A bucket's blobs checked against a residency policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ComplianceReport {
    pub bucket: String,
    /// Every blob of the bucket complies (true for a bucket with none).
    pub compliant: bool,
    /// The bucket's live blobs, and their data bytes.
    pub blobs: u64,
    pub bytes: u64,
    pub compliant_blobs: u64,
    pub non_compliant_blobs: u64,
    /// Replicas on a site the policy does not allow, or on a draining node:
    /// a repair pass moves them.
    pub replicas_to_move: u64,
    /// Replicas short of the policy's count: those on down nodes or nodes
    /// the topology no longer names count as missing.
    pub replicas_missing: u64,
    /// The first non-compliant blobs with why (at most
    /// `COMPLIANCE_ISSUES_MAX`; `non_compliant_blobs` counts them all).
    pub issues: Vec<ComplianceIssue>,
    /// Index entries looked at (the whole index: every bucket's).
    pub scanned: u64,
}

/// One non-compliant blob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ComplianceIssue {
    pub blob_id: String,
    /// Every way it does not comply, `; `-separated.
    pub reason: String,
}

/// One blob's verdict.
#[derive(Debug, Default, PartialEq, Eq)]
struct Verdict {
    to_move: u64,
    missing: u64,
    reasons: Vec<String>,
}

/// Checks one live blob's replicas against `policy` with the node states.
/// Every replica (readable or being removed) must be on an allowed site;
/// the readable ones on nodes not down must meet the policy's replica count
/// and sites; none may be on a draining node (the node is leaving).
fn assess(
    topology: &Topology,
    policy: &ResidencyPolicy,
    states: &NodeStates,
    location: &BlobLocation,
) -> Verdict {
    let mut verdict = Verdict::default();
    // An erasure-coded blob counts its shards, against the scheme it was
    // written with (repair moves shards, it does not re-encode them).
    let ec_policy;
    let (policy, what) = match &location.erasure {
        Some(layout) => {
            let written = nuage_placement::Durability::ErasureCoding {
                data: layout.data,
                parity: layout.parity,
            };
            // A policy whose durability changed since: the shards can move,
            // not change scheme, so the blob does not comply until it is
            // written again. (A replicated blob under an erasure-coding
            // policy is repaired to K+M whole copies, more durable than
            // the scheme asks: it complies once it has them.)
            if policy.durability != written {
                verdict.reasons.push(format!(
                    "stored as {written}, the policy asks {}: shards are moved, not re-encoded; \
                     write the object again",
                    policy.durability
                ));
            }
            let mut p = policy.clone();
            p.durability = written;
            ec_policy = p;
            (&ec_policy, "shard")
        }
        None => (policy, "replica"),
    };
    let status = |node: &str| states.get(node).map_or(NodeStatus::Down, |s| s.status);
    // Where every replica is, whatever its state: bytes on a site the
    // policy does not allow must move, even on a node that is down.
    let mut all: Vec<String> = location.nodes.clone();
    all.extend(location.removing.iter().cloned());
    for violation in check(topology, policy, &all).violations {
        match violation {
            Violation::SiteNotAllowed { .. } => {
                verdict.to_move += 1;
                verdict.reasons.push(violation.to_string());
            }
            Violation::UnknownNode { .. } => verdict.reasons.push(violation.to_string()),
            // Counted below, over the replicas that can be read.
            Violation::TooFewReplicas { .. } | Violation::TooFewSites { .. } => {}
        }
    }
    let mut live = Vec::new();
    for node in &location.nodes {
        match status(node) {
            NodeStatus::Down => {
                if topology.node(node).is_some() {
                    verdict.reasons.push(format!("{what} on {node}: node down"));
                }
            }
            NodeStatus::Draining => {
                // Still readable and counted, but leaving.
                let allowed = topology
                    .site_of(node)
                    .is_some_and(|site| policy.site_verdict(site).is_ok());
                if allowed {
                    verdict.to_move += 1;
                    verdict
                        .reasons
                        .push(format!("{what} on {node}: node draining"));
                }
                live.push(node.clone());
            }
            NodeStatus::Up => live.push(node.clone()),
        }
    }
    for violation in check(topology, policy, &live).violations {
        match violation {
            Violation::TooFewReplicas { have, need } => {
                verdict.missing += u64::from(need).saturating_sub(have as u64);
                verdict.reasons.push(format!(
                    "{have} readable compliant {what}(s), the policy needs {need}"
                ));
            }
            Violation::TooFewSites { .. } => verdict.reasons.push(violation.to_string()),
            // Counted above.
            Violation::SiteNotAllowed { .. } | Violation::UnknownNode { .. } => {}
        }
    }
    verdict
}

impl ClusterBlobStore {
    /// The location index entries (readable replicas, replicas being
    /// removed, replicas of deleted blobs still to delete) that still name
    /// `node`: a drain is finished when `replicas` is 0. A live walk of the
    /// whole index (O(blobs), a page at a time).
    ///
    /// # Errors
    /// `UnknownNode` when the topology has no such node (a typo must not
    /// read as "empty"); the index's errors.
    pub async fn replicas_on(&self, node: &str) -> Result<NodeReplicas, ClusterError> {
        if self.inner.topology.node(node).is_none() {
            return Err(ClusterError::UnknownNode(node.to_owned()));
        }
        let mut out = NodeReplicas {
            node: node.to_owned(),
            draining: self.inner.is_drained(node),
            replicas: 0,
            bytes: 0,
        };
        let mut pages = IndexPages::default();
        while let Some(page) = pages.next(&self.inner.index).await? {
            for entry in page {
                let location = &entry.location;
                let names = |list: &[String]| list.iter().any(|n| n == node);
                if names(&location.nodes) || names(&location.removing) {
                    out.replicas += 1;
                    // A shard holds its own length, not the blob's.
                    out.bytes += location
                        .erasure
                        .as_ref()
                        .and_then(|l| l.shards.first())
                        .map_or(location.size, |shard| shard.length);
                }
            }
        }
        Ok(out)
    }

    /// Every live blob of `bucket` (by its index entry) checked against
    /// `policy` (the bucket's effective policy now, not the one recorded
    /// with each blob) with the topology and the node states of the last
    /// poll. A live walk of the whole index (O(blobs), a page at a time);
    /// blobs of deleted objects still being removed are not the bucket's.
    ///
    /// # Errors
    /// The index's errors.
    pub async fn compliance(
        &self,
        bucket: &str,
        policy: &ResidencyPolicy,
    ) -> Result<ComplianceReport, ClusterError> {
        let states = self.inner.states();
        let mut report = ComplianceReport {
            bucket: bucket.to_owned(),
            compliant: true,
            blobs: 0,
            bytes: 0,
            compliant_blobs: 0,
            non_compliant_blobs: 0,
            replicas_to_move: 0,
            replicas_missing: 0,
            issues: Vec::new(),
            scanned: 0,
        };
        let mut pages = IndexPages::default();
        while let Some(page) = pages.next(&self.inner.index).await? {
            for entry in page {
                report.scanned += 1;
                let location = entry.location;
                if location.deleted || location.bucket.as_deref() != Some(bucket) {
                    continue;
                }
                report.blobs += 1;
                report.bytes += location.size;
                let verdict = assess(&self.inner.topology, policy, &states, &location);
                report.replicas_to_move += verdict.to_move;
                report.replicas_missing += verdict.missing;
                if verdict.reasons.is_empty() {
                    report.compliant_blobs += 1;
                    continue;
                }
                report.non_compliant_blobs += 1;
                report.compliant = false;
                if report.issues.len() < limits::COMPLIANCE_ISSUES_MAX {
                    report.issues.push(ComplianceIssue {
                        blob_id: location.blob_id,
                        reason: verdict.reasons.join("; "),
                    });
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nuage_placement::NodeState;

    fn topology() -> Topology {
        let mut toml = String::from("[[region]]\nid = \"eu-west\"\n");
        for (node, site, country) in [
            ("fr-1-n1", "fr-1", "FR"),
            ("fr-2-n1", "fr-2", "FR"),
            ("de-1-n1", "de-1", "DE"),
        ] {
            toml.push_str(&format!(
                "\n[[site]]\nid = \"{site}\"\nregion = \"eu-west\"\ncountry = \"{country}\"\n\
                 operator = {{ entity = \"Op\", country_of_control = \"{country}\" }}\n\
                 \n[[node]]\nid = \"{node}\"\nsite = \"{site}\"\n\
                 endpoint = \"https://{node}.example:7443\"\ncapacity_bytes = 1_000_000_000\n"
            ));
        }
        // A second node in fr-1.
        toml.push_str(
            "\n[[node]]\nid = \"fr-1-n2\"\nsite = \"fr-1\"\n\
             endpoint = \"https://fr-1-n2.example:7443\"\ncapacity_bytes = 1_000_000_000\n",
        );
        Topology::from_toml(&toml).unwrap()
    }

    fn fr_only() -> ResidencyPolicy {
        ResidencyPolicy::from_json(
            r#"{"allowed_countries":["FR"],"durability":{"replicas":2},"min_sites":2}"#,
        )
        .unwrap()
    }

    fn states(of: &[(&str, NodeStatus)]) -> NodeStates {
        of.iter()
            .map(|(node, status)| {
                (
                    (*node).to_owned(),
                    NodeState {
                        status: *status,
                        free_bytes: 1 << 30,
                    },
                )
            })
            .collect()
    }

    fn location(nodes: &[&str], removing: &[&str]) -> BlobLocation {
        BlobLocation {
            blob_id: "0123456789abcdef".into(),
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            size: 10,
            sha256: String::new(),
            created_ms: 0,
            tenant: None,
            bucket: Some("b".into()),
            policy: fr_only(),
            removing: removing.iter().map(|n| (*n).to_owned()).collect(),
            erasure: None,
            deleted: false,
        }
    }

    #[test]
    fn a_blob_erasure_coded_under_another_scheme_does_not_comply() {
        let topology = topology();
        let all_up = states(&[
            ("fr-1-n1", NodeStatus::Up),
            ("fr-2-n1", NodeStatus::Up),
            ("de-1-n1", NodeStatus::Up),
        ]);
        let shard = |node: &str| crate::index::ShardRecord {
            node: Some(node.to_owned()),
            length: 5,
            sha256: String::new(),
        };
        let mut blob = location(&["fr-1-n1", "fr-2-n1"], &[]);
        blob.erasure = Some(crate::index::ErasureLayout {
            data: 1,
            parity: 1,
            chunk_bytes: 5,
            shards: vec![shard("fr-1-n1"), shard("fr-2-n1")],
        });
        let ec = |data: u32, parity: u32| {
            let mut p = fr_only();
            p.durability = nuage_placement::Durability::ErasureCoding { data, parity };
            p
        };
        // Its own scheme, on both French sites: compliant.
        assert_eq!(
            assess(&topology, &ec(1, 1), &all_up, &blob),
            Verdict::default()
        );
        // The policy now asks 2 replicas (or another scheme): not re-encoded.
        for policy in [fr_only(), ec(2, 1)] {
            let v = assess(&topology, &policy, &all_up, &blob);
            assert_eq!((v.to_move, v.missing), (0, 0), "{v:?}");
            assert!(v.reasons[0].contains("not re-encoded"), "{v:?}");
        }
    }

    #[test]
    fn verdicts_count_what_repair_must_move_and_restore() {
        let topology = topology();
        let all_up = states(&[
            ("fr-1-n1", NodeStatus::Up),
            ("fr-2-n1", NodeStatus::Up),
            ("de-1-n1", NodeStatus::Up),
        ]);
        let policy = fr_only();
        // On both French sites: compliant.
        let v = assess(
            &topology,
            &policy,
            &all_up,
            &location(&["fr-1-n1", "fr-2-n1"], &[]),
        );
        assert_eq!(v, Verdict::default());
        // One replica in Germany: one to move, one missing in France.
        let v = assess(
            &topology,
            &policy,
            &all_up,
            &location(&["fr-1-n1", "de-1-n1"], &[]),
        );
        assert_eq!((v.to_move, v.missing), (1, 1), "{v:?}");
        // A German replica being removed still has to go.
        let v = assess(
            &topology,
            &policy,
            &all_up,
            &location(&["fr-1-n1", "fr-2-n1"], &["de-1-n1"]),
        );
        assert_eq!((v.to_move, v.missing), (1, 0), "{v:?}");
        // A French replica being removed (surplus) is no issue.
        let v = assess(
            &topology,
            &policy,
            &all_up,
            &location(&["fr-1-n1", "fr-2-n1"], &["fr-2-n1"]),
        );
        assert_eq!(v, Verdict::default());
        // A draining node: to move, still counted as present.
        let draining = states(&[
            ("fr-1-n1", NodeStatus::Draining),
            ("fr-2-n1", NodeStatus::Up),
        ]);
        let v = assess(
            &topology,
            &policy,
            &draining,
            &location(&["fr-1-n1", "fr-2-n1"], &[]),
        );
        assert_eq!((v.to_move, v.missing), (1, 0), "{v:?}");
        assert!(v.reasons[0].contains("draining"), "{v:?}");
        // A down node: missing (also an unknown state).
        let down = states(&[("fr-1-n1", NodeStatus::Up), ("fr-2-n1", NodeStatus::Down)]);
        let v = assess(
            &topology,
            &policy,
            &down,
            &location(&["fr-1-n1", "fr-2-n1"], &[]),
        );
        assert_eq!((v.to_move, v.missing), (0, 1), "{v:?}");
        // A node gone from the topology: missing, not movable.
        let v = assess(
            &topology,
            &policy,
            &all_up,
            &location(&["fr-1-n1", "fr-9-n1"], &[]),
        );
        assert_eq!((v.to_move, v.missing), (0, 1), "{v:?}");
        assert!(v.reasons[0].contains("not in the topology"), "{v:?}");
        // Two replicas on one site: non-compliant (spread), nothing missing.
        let both_up = states(&[("fr-1-n1", NodeStatus::Up), ("fr-1-n2", NodeStatus::Up)]);
        let v = assess(
            &topology,
            &policy,
            &both_up,
            &location(&["fr-1-n1", "fr-1-n2"], &[]),
        );
        assert_eq!((v.to_move, v.missing), (0, 0), "{v:?}");
        assert_eq!(v.reasons.len(), 1, "{v:?}");
        assert!(v.reasons[0].contains("site"), "{v:?}");
    }
}
