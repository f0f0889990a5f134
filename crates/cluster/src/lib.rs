//! `nuage-cluster`: the replicated blob store over storage nodes, which
//! enforces residency on every byte it writes.
//!
//! [`ClusterBlobStore`] implements `nuage_blob::BlobStore`. A write asks
//! `nuage_placement::place` for the nodes of the blob under its residency
//! policy (the bucket's, through [`BlobStore::create_placed`], or the
//! store's default) and the live node states, streams every chunk to all of
//! them at once, and succeeds only when every replica acknowledged the same
//! length and SHA-256; the replica set is then recorded in the location
//! index (`index`) before `finish` returns. It never opens a connection to
//! a node that placement did not return, so when the compliant nodes are
//! down or full the write fails with a [`nuage_blob::PlacementRefused`] and
//! nothing is written anywhere. A replica failing mid-write abandons the
//! write on every replica (with a [`nuage_blob::Unavailable`] when its node
//! could not be reached or the connection broke: retryable).
//!
//! Reads go to the recorded replicas, nodes known up first, and fail over to
//! the next replica when one cannot serve (also mid-stream: the read resumes
//! on the next replica where the failed one stopped). `delete` removes every
//! replica, then the index entry. [`ClusterBlobStore::poll_nodes`] (or the
//! poller task) keeps the node states placement uses, with the operator's
//! drains read from the metadata documents (`nodestate`, shared by every
//! gateway); `compliance` reports a bucket's blobs against its policy and a
//! drained node's remaining replicas; [`ClusterBlobStore::
//! repair_once`] restores replica counts and moves replicas out of sites a
//! narrowed policy no longer allows, through `nuage_placement::repair_plan`;
//! [`ClusterBlobStore::scrub_once_logged`] has every node read back its
//! replicas, replaces the corrupt or missing ones and deletes orphan files.
//!
//! Under an erasure-coding policy (`data`+`parity`) each placed node gets
//! one Reed-Solomon shard instead of a copy (`erasure`: encoded a stripe at
//! a time, never the whole blob in memory); reads take any `data` shards
//! (the data shards when they serve, so no decoding), repair and scrub
//! rebuild a lost shard from `data` good ones.
//! Reference: `docs/storage-nodes.md` ("Replication and placement",
//! "Erasure coding").

mod compliance;
mod erasure;
pub mod index;
pub mod limits;
mod nodestate;
mod rebuild;
mod repair;
mod scrub;
mod writer;

pub use compliance::{ComplianceIssue, ComplianceReport, NodeReplicas};
pub use index::{
    BlobLocation, ErasureLayout, LOCATIONS_NAMESPACE, LocationIndex, Revisioned, ShardRecord,
};
pub use nodestate::{NODE_STATES_NAMESPACE, NodeReport, OperatorNodeState};
pub use repair::{
    NoRepairLog, PolicySource, RepairLog, RepairReport, ReplicaEvent, ReplicaEventKind,
};
pub use scrub::ScrubReport;

use bytes::Bytes;
use futures::StreamExt as _;
use nuage_blob::{
    BlobEntry, BlobError, BlobResult, BlobStore, BlobStream, BlobWriter, PlacementTarget,
};
use nuage_meta::DocumentStore;
use nuage_node::tls::TlsMaterial;
use nuage_node::{NodeClient, NodeClientConfig, NodeError, NodeIdentity, Role};
use nuage_placement::{NodeState, NodeStates, NodeStatus, ResidencyPolicy, Topology};
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What can go wrong in the cluster store (reaches `BlobStore` callers as
/// a `BlobError`).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster configuration: {0}")]
    Config(String),
    #[error("location index: {0}")]
    Index(nuage_meta::MetaError),
    #[error("location index entry is corrupt: {0}")]
    IndexCorrupt(String),
    #[error("node {node}: {source}")]
    Node {
        node: String,
        #[source]
        source: NodeError,
    },
    #[error("residency policy: {0}")]
    Policy(String),
    #[error("the topology has no storage node `{0}`")]
    UnknownNode(String),
    #[error("node states: {0}")]
    NodeStates(nuage_meta::MetaError),
}

impl From<ClusterError> for BlobError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Node {
                source: NodeError::NotFound(id),
                ..
            } => Self::NotFound(id),
            ClusterError::Node {
                source: NodeError::Corrupt { blob_id, detail },
                node,
            } => Self::Corrupt {
                blob_id,
                detail: format!("on node {node}: {detail}"),
            },
            ClusterError::Policy(m) => Self::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("residency policy: {m}"),
            )),
            other => Self::Io(std::io::Error::other(other.to_string())),
        }
    }
}

/// How the gateway reaches the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The operator's topology: every node, its site and endpoint
    /// (`https://host:port`; the host must be in the node's certificate).
    pub topology: Arc<Topology>,
    /// The gateway's certificate (role `gateway`) and key, and the cluster CA.
    pub tls: TlsMaterial,
    /// The policy of a write that names none (`create`, or a target without
    /// a policy).
    pub default_policy: ResidencyPolicy,
    pub connect_timeout: Duration,
    /// Time without a byte moving on a node request before it is abandoned.
    pub idle_timeout: Duration,
}

impl ClusterConfig {
    /// A configuration with the node client's default timeouts.
    #[must_use]
    pub fn new(topology: Arc<Topology>, tls: TlsMaterial, default_policy: ResidencyPolicy) -> Self {
        Self {
            topology,
            tls,
            default_policy,
            connect_timeout: nuage_node::limits::NODE_CONNECT_TIMEOUT_DEFAULT,
            idle_timeout: nuage_node::limits::NODE_IDLE_TIMEOUT_DEFAULT,
        }
    }
}

/// The replicated, residency-enforcing blob store. Cheap to clone.
#[derive(Clone)]
pub struct ClusterBlobStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) topology: Arc<Topology>,
    pub(crate) clients: BTreeMap<String, NodeClient>,
    pub(crate) index: LocationIndex,
    pub(crate) default_policy: ResidencyPolicy,
    states: RwLock<NodeStates>,
    /// The operator's node states and the last polls (`nodestate`).
    book: RwLock<nodestate::NodeBook>,
    node_state_store: nodestate::NodeStateStore,
}

impl std::fmt::Debug for ClusterBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterBlobStore")
            .field("nodes", &self.inner.clients.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// `https://host:port` (the topology's form) to `host:port`.
fn endpoint_authority(endpoint: &str) -> Result<&str, ClusterError> {
    let rest = endpoint.strip_prefix("https://").ok_or_else(|| {
        ClusterError::Config(format!(
            "node endpoint `{endpoint}` must start with https:// (nodes speak mutual TLS only)"
        ))
    })?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains('/') {
        return Err(ClusterError::Config(format!(
            "node endpoint `{endpoint}` must be https://host:port"
        )));
    }
    Ok(authority)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether an error says the node could not be reached (rather than that it
/// refused the request).
pub(crate) fn is_unreachable(e: &NodeError) -> bool {
    matches!(
        e,
        NodeError::Transport(_) | NodeError::Timeout(_) | NodeError::PeerIdentity(_)
    )
}

impl ClusterBlobStore {
    /// Builds a client for every node of the topology (connecting lazily).
    /// Every node starts down until a poll ([`poll_nodes`](Self::poll_nodes)
    /// or [`spawn_poller`](Self::spawn_poller)) reaches it.
    ///
    /// # Errors
    /// `Config` for an endpoint that is not `https://host:port`, a node or
    /// site id that is not a valid identity, bad TLS material.
    pub fn new(config: ClusterConfig, index: Arc<dyn DocumentStore>) -> Result<Self, ClusterError> {
        let mut clients = BTreeMap::new();
        for node in config.topology.nodes().values() {
            let expected = NodeIdentity::new(&node.id, &node.site, Role::Storage)
                .map_err(|e| ClusterError::Config(format!("node {}: {e}", node.id)))?;
            let mut client_config = NodeClientConfig::new(
                endpoint_authority(&node.endpoint)?,
                expected,
                config.tls.clone(),
            );
            client_config.connect_timeout = config.connect_timeout;
            client_config.idle_timeout = config.idle_timeout;
            let client = NodeClient::new(client_config)
                .map_err(|e| ClusterError::Config(format!("node {}: {e}", node.id)))?;
            clients.insert(node.id.clone(), client);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                topology: config.topology,
                clients,
                index: LocationIndex::new(Arc::clone(&index)),
                default_policy: config.default_policy,
                states: RwLock::new(NodeStates::new()),
                book: RwLock::new(nodestate::NodeBook::default()),
                node_state_store: nodestate::NodeStateStore::new(index),
            }),
        })
    }

    /// The location index.
    #[must_use]
    pub fn index(&self) -> &LocationIndex {
        &self.inner.index
    }

    /// The policy of blobs whose bucket and tenant name none.
    #[must_use]
    pub fn default_policy(&self) -> &ResidencyPolicy {
        &self.inner.default_policy
    }

    /// The node states placement uses now.
    #[must_use]
    pub fn node_states(&self) -> NodeStates {
        self.inner.states()
    }

    /// Reads the operator's node states (drains, from the metadata
    /// documents: one bounded scan), then asks every node for its status
    /// (concurrently, each within `POLL_TIMEOUT`): a node that answers is
    /// up, or draining when drained, with its writable bytes free; any other
    /// is down. Returns the nodes found down, with why, in node id order.
    pub async fn poll_nodes(&self) -> Vec<(String, String)> {
        self.inner.poll_nodes().await
    }

    /// Polls every node every `interval` until the handle is dropped.
    #[must_use]
    pub fn spawn_poller(&self, interval: Duration) -> PollerHandle {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let _down = inner.poll_nodes().await;
                drop(inner);
                tokio::time::sleep(interval).await;
            }
        });
        PollerHandle { task }
    }

    fn read_from_replicas(
        &self,
        blob_id: &str,
        offset: u64,
        len: u64,
        verified_by_caller: bool,
    ) -> BlobStream {
        let (tx, mut rx) = tokio::sync::mpsc::channel(limits::READ_AHEAD_CHUNKS_MAX);
        let inner = Arc::clone(&self.inner);
        let blob_id = blob_id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = inner
                .read_into(&blob_id, offset, len, verified_by_caller, &tx)
                .await
            {
                let _ = tx.send(Err(e)).await;
            }
        });
        Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}

/// The background poller; dropping it stops the polls.
#[derive(Debug)]
pub struct PollerHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PollerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Inner {
    pub(crate) fn states(&self) -> NodeStates {
        self.states
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn is_up(&self, node: &str) -> bool {
        self.states
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
            .is_some_and(|s| s.status != NodeStatus::Down)
    }

    /// Marks a node down at once after it could not be reached, so the
    /// next placement avoids it without waiting for a poll.
    pub(crate) fn mark_down(&self, node: &str) {
        let mut states = self.states.write().unwrap_or_else(PoisonError::into_inner);
        states.insert(
            node.to_owned(),
            NodeState {
                status: NodeStatus::Down,
                free_bytes: 0,
            },
        );
    }

    pub(crate) fn client(&self, node: &str) -> Result<&NodeClient, ClusterError> {
        self.clients
            .get(node)
            .ok_or_else(|| ClusterError::Config(format!("node {node} is not in the topology")))
    }

    /// The replicas to read from: those known up first, then the others
    /// (the states may be stale), in recorded order within each group.
    fn read_order(&self, nodes: &[String]) -> Vec<String> {
        let (mut up, down): (Vec<String>, Vec<String>) =
            nodes.iter().cloned().partition(|n| self.is_up(n));
        up.extend(down);
        up
    }

    /// Streams the range into `tx`, failing over from replica to replica,
    /// resuming where a failed one stopped.
    async fn read_into(
        &self,
        blob_id: &str,
        offset: u64,
        len: u64,
        verified_by_caller: bool,
        tx: &tokio::sync::mpsc::Sender<BlobResult<Bytes>>,
    ) -> Result<(), BlobError> {
        let entry = match self.index.get(blob_id).await? {
            Some(entry) if !entry.location.deleted => entry.location,
            _ => return Err(BlobError::NotFound(blob_id.to_owned())),
        };
        if entry.erasure.is_some() {
            return self.read_erasure_into(&entry, offset, len, tx).await;
        }
        let mut delivered = 0u64;
        let mut last_error: Option<BlobError> = None;
        let mut all_missing = true;
        for node in self.read_order(&entry.nodes) {
            let Ok(client) = self.client(&node) else {
                continue;
            };
            let mut stream = client.read(
                blob_id,
                offset + delivered,
                len.saturating_sub(delivered),
                verified_by_caller,
            );
            let mut failed = false;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(chunk) => {
                        delivered += chunk.len() as u64;
                        if tx.send(Ok(chunk)).await.is_err() {
                            // The reader went away.
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(node = %node, blob_id, error = %e, "replica read failed; trying the next");
                        if is_unreachable(&e) {
                            self.mark_down(&node);
                        }
                        if !matches!(e, NodeError::NotFound(_)) {
                            all_missing = false;
                        }
                        last_error = Some(
                            ClusterError::Node {
                                node: node.clone(),
                                source: e,
                            }
                            .into(),
                        );
                        failed = true;
                        break;
                    }
                }
            }
            if !failed {
                return Ok(());
            }
        }
        Err(match last_error {
            Some(_) if all_missing => BlobError::NotFound(blob_id.to_owned()),
            Some(e) => e,
            None => BlobError::Io(std::io::Error::other(format!(
                "blob {blob_id}: no replica recorded on a known node"
            ))),
        })
    }

    /// Deletes the replicas on `nodes`; returns those that could not be
    /// reached or refused.
    pub(crate) async fn delete_replicas(&self, blob_id: &str, nodes: &[String]) -> Vec<String> {
        let results = futures::future::join_all(nodes.iter().map(|node| async move {
            let outcome = match self.client(node) {
                Ok(client) => match client.delete(blob_id).await {
                    Ok(()) | Err(NodeError::NotFound(_)) => Ok(()),
                    Err(e) => {
                        if is_unreachable(&e) {
                            self.mark_down(node);
                        }
                        Err(e.to_string())
                    }
                },
                // Not in the topology any more: nothing to reach.
                Err(e) => Err(e.to_string()),
            };
            (node.clone(), outcome)
        }))
        .await;
        results
            .into_iter()
            .filter_map(|(node, outcome)| match outcome {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(node = %node, blob_id, error = %e, "replica delete failed");
                    Some(node)
                }
            })
            .collect()
    }

    /// The policy of a write: the target's, or the default.
    fn policy_for(&self, target: &PlacementTarget) -> Result<ResidencyPolicy, ClusterError> {
        match &target.policy_json {
            Some(json) => {
                ResidencyPolicy::from_json(json).map_err(|e| ClusterError::Policy(e.to_string()))
            }
            None => Ok(self.default_policy.clone()),
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for ClusterBlobStore {
    /// A write under the default policy.
    async fn create(&self) -> BlobResult<Box<dyn BlobWriter>> {
        self.create_placed(&PlacementTarget::default()).await
    }

    async fn create_placed(&self, target: &PlacementTarget) -> BlobResult<Box<dyn BlobWriter>> {
        let policy = self.inner.policy_for(target)?;
        Ok(Box::new(
            writer::ClusterWriter::open(Arc::clone(&self.inner), target, policy).await?,
        ))
    }

    fn read(&self, blob_id: &str, offset: u64, len: u64) -> BlobStream {
        self.read_from_replicas(blob_id, offset, len, false)
    }

    fn read_authenticated(&self, blob_id: &str, offset: u64, len: u64) -> BlobStream {
        self.read_from_replicas(blob_id, offset, len, true)
    }

    /// Deletes every replica, then the index entry. Replicas on nodes that
    /// cannot be reached stay listed in a `deleted` entry (never read or
    /// listed), which [`repair_once`](ClusterBlobStore::repair_once)
    /// finishes when they come back.
    async fn delete(&self, blob_id: &str) -> BlobResult<()> {
        let Some(entry) = self.inner.index.get(blob_id).await? else {
            return Ok(());
        };
        let mut nodes = entry.location.nodes.clone();
        nodes.extend(entry.location.removing.iter().cloned());
        let left = self.inner.delete_replicas(blob_id, &nodes).await;
        if left.is_empty() {
            self.inner.index.remove(blob_id, entry.revision).await?;
        } else {
            let mut location = entry.location;
            location.nodes = left;
            location.removing.clear();
            location.deleted = true;
            self.inner.index.update(&location, entry.revision).await?;
        }
        Ok(())
    }

    /// Every live blob of the index, read a page at a time.
    async fn list(&self) -> BlobResult<Vec<BlobEntry>> {
        let mut out = Vec::new();
        let mut pages = index::IndexPages::default();
        while let Some(page) = pages.next(&self.inner.index).await? {
            out.extend(
                page.into_iter()
                    .filter(|e| !e.location.deleted)
                    .map(|e| BlobEntry {
                        blob_id: e.location.blob_id,
                        modified: UNIX_EPOCH + Duration::from_millis(e.location.created_ms),
                    }),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_authority;

    #[test]
    fn endpoints_must_be_https_host_port() {
        assert_eq!(
            endpoint_authority("https://n1.example:7443").ok(),
            Some("n1.example:7443")
        );
        assert_eq!(
            endpoint_authority("https://10.0.0.1:7443/").ok(),
            Some("10.0.0.1:7443")
        );
        for bad in ["http://n1:7443", "n1:7443", "https://", "https://n1:7443/x"] {
            assert!(endpoint_authority(bad).is_err(), "{bad}");
        }
    }
}
