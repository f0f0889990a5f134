//! Fixtures of the cluster store tests: four nodes served in-process over
//! mutual TLS (fresh cluster CA), each in its own Tokio runtime so that a
//! test can kill one outright, each with its own data directory, in sites
//! fr-1 and fr-2 (France), de-1 (Germany) and us-1 (United States); the
//! location index in an embedded metadata store.
#![allow(clippy::unwrap_used, dead_code)]

use bytes::Bytes;
use futures::TryStreamExt as _;
use nuage_blob::{BlobError, BlobStore as _, PlacementTarget};
use nuage_cluster::{BlobLocation, ClusterBlobStore, ClusterConfig};
use nuage_meta::embedded::EmbeddedMetaStore;
use nuage_placement::ResidencyPolicy;
use nuage_testsupport::nodes::{TestNode, TestNodes};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::time::Duration;

pub const MIB: u64 = 1024 * 1024;

/// The four nodes and the location index (an embedded metadata store).
pub struct Cluster {
    pub nodes: TestNodes,
    pub meta: Arc<EmbeddedMetaStore>,
    pub _meta_dir: tempfile::TempDir,
}

pub fn policy(json: &str) -> ResidencyPolicy {
    ResidencyPolicy::from_json(json).unwrap()
}

pub fn fr_only() -> ResidencyPolicy {
    policy(r#"{"allowed_countries":["FR"],"durability":{"replicas":2},"min_sites":2}"#)
}

pub fn eu(replicas: u32) -> ResidencyPolicy {
    policy(&format!(
        r#"{{"allowed_jurisdictions":["EU"],"durability":{{"replicas":{replicas}}},"min_sites":2}}"#
    ))
}

impl Cluster {
    /// Four nodes; the French ones capped at `fr_capacity` when given.
    pub async fn start(fr_capacity: Option<u64>) -> Self {
        let nodes = TestNodes::start("cluster-test", |country| {
            if country == "FR" { fr_capacity } else { None }
        })
        .await;
        let meta_dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(EmbeddedMetaStore::open(&meta_dir.path().join("meta.redb")).unwrap());
        Self {
            nodes,
            meta,
            _meta_dir: meta_dir,
        }
    }

    /// A gateway's store, with node states polled once.
    pub async fn store(&self, default_policy: ResidencyPolicy) -> ClusterBlobStore {
        let mut config = ClusterConfig::new(
            Arc::clone(&self.nodes.topology),
            self.nodes.gateway_material(),
            default_policy,
        );
        config.idle_timeout = Duration::from_secs(10);
        let store = ClusterBlobStore::new(config, self.meta.clone()).unwrap();
        let down = store.poll_nodes().await;
        let dead: Vec<&String> = self
            .nodes
            .nodes
            .iter()
            .filter(|(_, n)| !n.is_running())
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            down.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            dead,
            "{down:?}"
        );
        store
    }

    pub fn node(&self, id: &str) -> &TestNode {
        &self.nodes.nodes[id]
    }

    pub fn kill(&mut self, id: &str) {
        self.nodes.nodes.get_mut(id).unwrap().kill();
    }

    pub async fn restart(&mut self, id: &str) {
        self.nodes.nodes.get_mut(id).unwrap().restart().await;
    }

    /// Node ids holding a file of `blob_id`, by scanning every disk.
    pub fn holders(&self, blob_id: &str) -> Vec<String> {
        self.nodes.holders(blob_id)
    }

    /// Asserts that no German or American node holds any file at all.
    pub fn assert_nothing_outside_france(&self) {
        for (id, node) in &self.nodes.nodes {
            if node.country != "FR" {
                assert!(
                    node.files().is_empty(),
                    "node {id} in {} holds {:?}",
                    node.country,
                    node.files()
                );
            }
        }
    }
}

/// Deterministic bytes: block `k` of 64 KiB is SHA-256 expanded from `seed`
/// and `k`, generated on the fly.
pub fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut at = offset;
    while out.len() < len {
        let digest = Sha256::digest([seed.to_le_bytes(), (at / 32).to_le_bytes()].concat());
        let within = (at % 32) as usize;
        let take = (32 - within).min(len - out.len());
        out.extend_from_slice(&digest[within..within + take]);
        at += take as u64;
    }
    out
}

/// Writes `total` bytes in 1 MiB chunks (never all in memory); returns the
/// blob id, or the first error with how many bytes were written.
pub async fn write_blob(
    store: &ClusterBlobStore,
    target: &PlacementTarget,
    seed: u64,
    total: u64,
) -> Result<String, BlobError> {
    let mut writer = store.create_placed(target).await?;
    let mut offset = 0;
    while offset < total {
        let len = MIB.min(total - offset);
        writer
            .write(Bytes::from(pattern(seed, offset, len as usize)))
            .await?;
        offset += len;
    }
    let id = writer.blob_id().to_owned();
    assert_eq!(writer.finish().await?, total);
    Ok(id)
}

pub fn sha_of_pattern(seed: u64, total: u64) -> String {
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < total {
        let len = MIB.min(total - offset);
        hasher.update(pattern(seed, offset, len as usize));
        offset += len;
    }
    hex::encode(hasher.finalize())
}

pub async fn read_sha(
    store: &ClusterBlobStore,
    blob_id: &str,
    len: u64,
) -> Result<String, BlobError> {
    let mut stream = store.read(blob_id, 0, len);
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    while let Some(chunk) = stream.try_next().await? {
        got += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(got, len);
    Ok(hex::encode(hasher.finalize()))
}

pub async fn location(store: &ClusterBlobStore, blob_id: &str) -> Option<BlobLocation> {
    store
        .index()
        .get(blob_id)
        .await
        .unwrap()
        .map(|e| e.location)
}

pub fn target(policy: &ResidencyPolicy, exact_len: Option<u64>) -> PlacementTarget {
    PlacementTarget {
        tenant: Some("acme".into()),
        bucket: Some("b".into()),
        policy_json: Some(policy.to_json()),
        exact_len,
    }
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
