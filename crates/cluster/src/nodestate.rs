//! Node states: what the operator decided about each node (a drain),
//! persisted in the metadata store's documents so that every gateway sharing
//! the database applies it and it survives restarts, and what the last poll
//! of each node saw, which placement uses and [`NodeReport`]s show.
//!
//! Operator states live in namespace [`NODE_STATES_NAMESPACE`], key the node
//! id, value a JSON [`OperatorNodeState`]; a node without a document is not
//! drained (ending a drain deletes the document, so the namespace holds the
//! drained nodes only). Every poll reads them with one bounded scan before it
//! asks the nodes for their status, so a drain set through one gateway takes
//! effect on the others at their next poll. A drained node that answers is
//! `NodeStatus::Draining`: readable, never offered a new replica, and repair
//! (`nuage_placement::repair_plan`) moves its replicas away.
//!
//! This module never moves data (repair does) and never lets a document
//! decide anything about a node the topology does not name.

use crate::{ClusterBlobStore, ClusterError, Inner, limits, now_ms};
use futures::StreamExt as _;
use nuage_meta::{DocumentStore, DocumentWrite, Expect};
use nuage_node::NodeClient;
use nuage_placement::{NodeState, NodeStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

/// The metadata namespace of the operator's node states.
pub const NODE_STATES_NAMESPACE: &str = "cluster.node-states";

/// What the operator decided about one node (the document's value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorNodeState {
    /// Drained: readable, receives nothing, its replicas move away.
    pub draining: bool,
    /// Since when, milliseconds since the Unix epoch.
    pub since_ms: u64,
}

/// One storage node as the gateway last polled it (the operator's view:
/// `nuage admin cluster nodes`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeReport {
    pub node: String,
    pub site: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// `up`, `down` or `draining`: what placement uses now (a node found
    /// unreachable by a request since the last poll is `down`).
    pub status: String,
    /// The operator drained it (also when it is down now).
    pub draining: bool,
    /// Why it is down, when it is.
    pub down_reason: Option<String>,
    /// From the node's last answer to a poll (None when the last poll
    /// failed, or before the first).
    pub writable_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    pub blob_count: Option<u64>,
    /// When it was last polled, milliseconds since the Unix epoch.
    pub polled_ms: Option<u64>,
}

/// What the last poll of one node saw.
#[derive(Debug, Clone)]
struct Polled {
    at_ms: u64,
    answer: Result<nuage_node::NodeStatus, String>,
}

/// The operator states as last read or set here, and the last poll of
/// each node. Lock order: `Inner::states`, then this.
#[derive(Debug, Default)]
pub(crate) struct NodeBook {
    operator: BTreeMap<String, OperatorNodeState>,
    /// Bumped by every drain set through this gateway: a poll whose scan
    /// started before one keeps the newer value it set, rather than the
    /// older one it read.
    generation: u64,
    polled: BTreeMap<String, Polled>,
}

impl NodeBook {
    fn is_draining(&self, node: &str) -> bool {
        self.operator.get(node).is_some_and(|s| s.draining)
    }
}

/// The operator's node states in the document store.
#[derive(Clone)]
pub(crate) struct NodeStateStore {
    docs: Arc<dyn DocumentStore>,
}

impl NodeStateStore {
    pub(crate) fn new(docs: Arc<dyn DocumentStore>) -> Self {
        Self { docs }
    }

    /// Every operator state, in one scan of at most `NODE_STATES_MAX`
    /// documents. A document that does not decode is left out, with a
    /// warning: it drains nothing.
    async fn read_all(&self) -> Result<BTreeMap<String, OperatorNodeState>, ClusterError> {
        let docs = self
            .docs
            .scan_documents(NODE_STATES_NAMESPACE, "", None, limits::NODE_STATES_MAX)
            .await
            .map_err(ClusterError::NodeStates)?;
        if docs.len() == limits::NODE_STATES_MAX {
            tracing::error!(
                max = limits::NODE_STATES_MAX,
                "more node state documents than the bound; later ones are not read"
            );
        }
        let mut out = BTreeMap::new();
        for doc in docs {
            if doc.value.len() > limits::NODE_STATE_BYTES_MAX {
                tracing::warn!(node = %doc.key, bytes = doc.value.len(), "node state document too large; ignored");
                continue;
            }
            match serde_json::from_slice::<OperatorNodeState>(&doc.value) {
                Ok(state) => {
                    out.insert(doc.key, state);
                }
                Err(e) => {
                    tracing::warn!(node = %doc.key, error = %e, "node state document does not decode; ignored");
                }
            }
        }
        Ok(out)
    }

    /// Stores a drain, or deletes the document to end one.
    async fn write(&self, node: &str, state: OperatorNodeState) -> Result<(), ClusterError> {
        let value = if state.draining {
            Some(
                serde_json::to_vec(&state)
                    .map_err(|e| ClusterError::Config(format!("encoding a node state: {e}")))?,
            )
        } else {
            None
        };
        self.docs
            .commit_documents(vec![DocumentWrite {
                namespace: NODE_STATES_NAMESPACE.to_owned(),
                key: node.to_owned(),
                // The operator's last word wins: no revision to race on
                // (deleting a missing document is a no-op).
                expect: Expect::Any,
                value,
            }])
            .await
            .map_err(ClusterError::NodeStates)
    }
}

impl ClusterBlobStore {
    /// Drains `node` (`true`: readable, never placed on, repair moves its
    /// replicas away) or ends its drain, for every gateway sharing the
    /// metadata store: the state is stored in the documents (namespace
    /// [`NODE_STATES_NAMESPACE`]) and applied here at once; the other
    /// gateways apply it at their next poll. Survives restarts.
    ///
    /// # Errors
    /// `UnknownNode` when the topology has no such node; `NodeStates` when
    /// the metadata store fails (nothing changed then).
    pub async fn set_node_draining(&self, node: &str, draining: bool) -> Result<(), ClusterError> {
        if self.inner.topology.node(node).is_none() {
            return Err(ClusterError::UnknownNode(node.to_owned()));
        }
        let state = OperatorNodeState {
            draining,
            since_ms: now_ms(),
        };
        self.inner.node_state_store.write(node, state).await?;
        self.inner.apply_operator_state(node, state);
        tracing::info!(node, draining, "storage node drain set");
        Ok(())
    }

    /// Every node of the topology, in id order, as last polled (and as
    /// requests since found it): no I/O.
    #[must_use]
    pub fn node_reports(&self) -> Vec<NodeReport> {
        self.inner.node_reports()
    }
}

impl Inner {
    /// Records an operator state set through this gateway and applies it
    /// to placement now: a drained node that is up becomes draining, an
    /// undrained draining node up; a down node stays down.
    fn apply_operator_state(&self, node: &str, state: OperatorNodeState) {
        let mut states = self.states.write().unwrap_or_else(PoisonError::into_inner);
        let mut book = self.book.write().unwrap_or_else(PoisonError::into_inner);
        book.generation += 1;
        if state.draining {
            book.operator.insert(node.to_owned(), state);
        } else {
            book.operator.remove(node);
        }
        if let Some(current) = states.get_mut(node) {
            current.status = match (state.draining, current.status) {
                (true, NodeStatus::Up) => NodeStatus::Draining,
                (false, NodeStatus::Draining) => NodeStatus::Up,
                (_, other) => other,
            };
        }
    }

    /// Reads the operator states, then asks every node for its status
    /// (concurrently, each within `POLL_TIMEOUT`): a node that answers is up
    /// (draining when drained) with its writable bytes free, any other is
    /// down. When the states cannot be read, the last ones read stay.
    /// Returns the nodes found down, with why, in node id order.
    pub(crate) async fn poll_nodes(&self) -> Vec<(String, String)> {
        let generation = self
            .book
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .generation;
        let operator = match self.node_state_store.read_all().await {
            Ok(operator) => Some(operator),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the operator's node states; keeping the last ones read");
                None
            }
        };
        // Owned pairs: a future borrowing the map would not be `Send` for
        // every lifetime, as `tokio::spawn` (the poller) needs.
        let targets: Vec<(String, NodeClient)> = self
            .clients
            .iter()
            .map(|(id, client)| (id.clone(), client.clone()))
            .collect();
        let results: Vec<(String, Result<nuage_node::NodeStatus, String>)> =
            futures::stream::iter(targets.into_iter().map(|(id, client)| async move {
                let answer = match tokio::time::timeout(limits::POLL_TIMEOUT, client.status()).await
                {
                    Ok(Ok(status)) => Ok(status),
                    Ok(Err(e)) => {
                        tracing::debug!(node = %id, error = %e, "node status failed");
                        Err(e.to_string())
                    }
                    Err(_) => Err(format!(
                        "no status within {} s",
                        limits::POLL_TIMEOUT.as_secs()
                    )),
                };
                (id, answer)
            }))
            .buffer_unordered(limits::POLL_CONCURRENCY_MAX)
            .collect()
            .await;
        let at_ms = now_ms();
        let mut down = Vec::new();
        let mut states = self.states.write().unwrap_or_else(PoisonError::into_inner);
        let mut book = self.book.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(operator) = operator
            && book.generation == generation
        {
            book.operator = operator;
        }
        for (id, answer) in results {
            let state = match &answer {
                Ok(status) => NodeState {
                    status: if book.is_draining(&id) {
                        NodeStatus::Draining
                    } else {
                        NodeStatus::Up
                    },
                    free_bytes: status.writable_bytes,
                },
                Err(why) => {
                    down.push((id.clone(), why.clone()));
                    NodeState {
                        status: NodeStatus::Down,
                        free_bytes: 0,
                    }
                }
            };
            states.insert(id.clone(), state);
            book.polled.insert(id, Polled { at_ms, answer });
        }
        // Node id order, whatever order the answers came in.
        down.sort();
        down
    }

    fn node_reports(&self) -> Vec<NodeReport> {
        let states = self.states.read().unwrap_or_else(PoisonError::into_inner);
        let book = self.book.read().unwrap_or_else(PoisonError::into_inner);
        self.topology
            .nodes()
            .values()
            .map(|node| {
                let site = self.topology.site(&node.site);
                let polled = book.polled.get(&node.id);
                let answer = polled.and_then(|p| p.answer.as_ref().ok());
                let status = states.get(&node.id).map_or(NodeStatus::Down, |s| s.status);
                let down_reason = (status == NodeStatus::Down).then(|| match polled {
                    None => "not polled yet".to_owned(),
                    Some(Polled {
                        answer: Err(why), ..
                    }) => why.clone(),
                    Some(Polled { answer: Ok(_), .. }) => {
                        "unreachable by a request since the last poll".to_owned()
                    }
                });
                NodeReport {
                    node: node.id.clone(),
                    site: node.site.clone(),
                    country: site.map(|s| s.country.to_string()).unwrap_or_default(),
                    status: status_name(status).to_owned(),
                    draining: book.is_draining(&node.id),
                    down_reason,
                    writable_bytes: answer.map(|a| a.writable_bytes),
                    used_bytes: answer.map(|a| a.used_bytes),
                    blob_count: answer.map(|a| a.blob_count),
                    polled_ms: polled.map(|p| p.at_ms),
                }
            })
            .collect()
    }

    /// Whether the operator drained `node`, as last read or set here.
    pub(crate) fn is_drained(&self, node: &str) -> bool {
        self.book
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_draining(node)
    }
}

/// A node status's name in reports.
pub(crate) fn status_name(status: NodeStatus) -> &'static str {
    match status {
        NodeStatus::Up => "up",
        NodeStatus::Down => "down",
        NodeStatus::Draining => "draining",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_stored_form_is_small_json() {
        let state = OperatorNodeState {
            draining: true,
            since_ms: 1_700_000_000_000,
        };
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(json, r#"{"draining":true,"since_ms":1700000000000}"#);
        assert_eq!(
            serde_json::from_str::<OperatorNodeState>(&json).unwrap(),
            state
        );
        assert!(json.len() < limits::NODE_STATE_BYTES_MAX);
    }
}
