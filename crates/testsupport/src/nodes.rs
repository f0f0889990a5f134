//! Storage nodes served in-process over mutual TLS, in sites of a
//! topology: the fixture of the replicated store's tests (`nuage-cluster`'s
//! and the storage service's residency tests).
//!
//! Four nodes ([`NODES`]), in sites fr-1 and fr-2 (France), de-1 (Germany)
//! and us-1 (United States), certificates from a fresh cluster CA. Each node
//! runs in a Tokio runtime of its own, so that a test can kill one outright
//! (its runtime shut down: every connection drops mid-request, as when the
//! machine dies) and start it again on its data directory and port. Where
//! blobs landed is read from the nodes' disks, not through any API.
//!
//! Behind the `nodes` feature: the other tests of this crate's users do not
//! build the node.
#![allow(clippy::missing_panics_doc, clippy::unwrap_used)]

use nuage_node::pki::CertificateAuthority;
use nuage_node::store::StoreConfig;
use nuage_node::tls::TlsMaterial;
use nuage_node::{NodeIdentity, NodeServer, NodeServerConfig, Role};
use nuage_placement::Topology;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;
/// Binds tried when a restarted node's old port is still held (a bound).
const BIND_ATTEMPTS_MAX: usize = 200;
/// Polls of a node's disk while waiting for a file to go (a bound).
const DISK_POLLS_MAX: usize = 1000;

/// (node id, site, country)
pub const NODES: [(&str, &str, &str); 4] = [
    ("fr-1-n1", "fr-1", "FR"),
    ("fr-2-n1", "fr-2", "FR"),
    ("de-1-n1", "de-1", "DE"),
    ("us-1-n1", "us-1", "US"),
];

/// A certificate for `id` from `ca`, valid for localhost and 127.0.0.1.
pub fn material(ca: &CertificateAuthority, id: &NodeIdentity) -> TlsMaterial {
    let issued = ca
        .issue(id, &["localhost".into(), "127.0.0.1".into()], 1)
        .unwrap();
    TlsMaterial {
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
        ca_pem: ca.cert_pem().to_owned(),
    }
}

/// One storage node in a runtime of its own; killed on drop.
pub struct TestNode {
    pub site: String,
    pub country: String,
    pub port: u16,
    data: tempfile::TempDir,
    config: NodeServerConfig,
    runtime: Option<tokio::runtime::Runtime>,
    /// Kept: dropping it would stop the accept loop (its stop channel
    /// closes); the node dies with its runtime instead.
    server: Option<NodeServer>,
}

async fn serve(config: NodeServerConfig) -> (tokio::runtime::Runtime, NodeServer) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // A restarted node binds its old port again: the dead runtime's
    // listener may take a moment to close, so retry (boundedly).
    for _ in 0..BIND_ATTEMPTS_MAX {
        match runtime
            .spawn(NodeServer::start(config.clone()))
            .await
            .unwrap()
        {
            Ok(server) => return (runtime, server),
            Err(nuage_node::NodeError::Io(e)) if e.kind() == std::io::ErrorKind::AddrInUse => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("port {} stayed in use", config.listen);
}

impl TestNode {
    /// A node on a fresh data directory and a free port; `capacity_bytes`
    /// None: the disk's.
    pub async fn start(
        ca: &CertificateAuthority,
        node: &str,
        site: &str,
        country: &str,
        capacity_bytes: Option<u64>,
    ) -> Self {
        let identity = NodeIdentity::new(node, site, Role::Storage).unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut config = NodeServerConfig {
            identity: identity.clone(),
            tls: material(ca, &identity),
            store: StoreConfig {
                data_dir: data.path().to_path_buf(),
                capacity_bytes,
                reserve_bytes: 16 * MIB,
            },
            listen: "127.0.0.1:0".parse().unwrap(),
            idle_timeout: Duration::from_secs(30),
        };
        let (runtime, server) = serve(config.clone()).await;
        let port = server.local_addr().port();
        config.listen = server.local_addr();
        Self {
            site: site.to_owned(),
            country: country.to_owned(),
            port,
            data,
            config,
            runtime: Some(runtime),
            server: Some(server),
        }
    }

    pub fn is_running(&self) -> bool {
        self.runtime.is_some()
    }

    /// Kills the node: its runtime stops, every task and socket with it.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        self.server = None;
    }

    /// Starts the node again on its data directory and port.
    pub async fn restart(&mut self) {
        assert!(self.runtime.is_none());
        let (runtime, server) = serve(self.config.clone()).await;
        self.runtime = Some(runtime);
        self.server = Some(server);
    }

    /// Every regular file under the node's data directory, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    walk(&entry.path(), out);
                } else {
                    out.push(entry.path());
                }
            }
        }
        let mut out = Vec::new();
        walk(self.data.path(), &mut out);
        out.sort();
        out
    }

    /// Files of `blob_id` (final or temporary) on the node's disk.
    pub fn files_of(&self, blob_id: &str) -> Vec<PathBuf> {
        self.files()
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(blob_id))
            })
            .collect()
    }

    /// Whether any file of the node (final or temporary) is named after `blob_id`.
    pub fn holds(&self, blob_id: &str) -> bool {
        !self.files_of(blob_id).is_empty()
    }

    /// Waits (boundedly) until the node holds no file of `blob_id`: a node
    /// removes an aborted write's temporary file on its blocking pool just
    /// after the request ends.
    pub async fn wait_no_files_of(&self, blob_id: &str) {
        for _ in 0..DISK_POLLS_MAX {
            if self.files_of(blob_id).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "node in {} still holds {:?}",
            self.site,
            self.files_of(blob_id)
        );
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The [`NODES`], started, and the topology that places them: regions
/// eu-west (France, Germany) and us-east, each site run by an operator of
/// its own country.
pub struct TestNodes {
    pub ca: CertificateAuthority,
    /// By node id.
    pub nodes: BTreeMap<String, TestNode>,
    pub topology: Arc<Topology>,
}

impl TestNodes {
    /// Starts the four nodes under a fresh CA named `ca_name`; a node's
    /// capacity is `capacity(country)`.
    pub async fn start(ca_name: &str, capacity: impl Fn(&str) -> Option<u64>) -> Self {
        let ca = CertificateAuthority::generate(ca_name).unwrap();
        let mut nodes = BTreeMap::new();
        for (id, site, country) in NODES {
            nodes.insert(
                id.to_owned(),
                TestNode::start(&ca, id, site, country, capacity(country)).await,
            );
        }
        let mut toml =
            String::from("[[region]]\nid = \"eu-west\"\n\n[[region]]\nid = \"us-east\"\n");
        for (id, node) in &nodes {
            let region = if node.country == "US" {
                "us-east"
            } else {
                "eu-west"
            };
            toml.push_str(&format!(
                "\n[[site]]\nid = \"{site}\"\nregion = \"{region}\"\ncountry = \"{country}\"\n\
                 operator = {{ entity = \"Op {country}\", country_of_control = \"{country}\" }}\n\
                 \n[[node]]\nid = \"{id}\"\nsite = \"{site}\"\nendpoint = \"https://127.0.0.1:{port}\"\n\
                 capacity_bytes = 1_000_000_000_000\n",
                site = node.site,
                country = node.country,
                port = node.port,
            ));
        }
        let topology = Arc::new(Topology::from_toml(&toml).unwrap());
        Self {
            ca,
            nodes,
            topology,
        }
    }

    /// A gateway's certificate (node `gw-1` in site fr-1).
    pub fn gateway_material(&self) -> TlsMaterial {
        let gateway = NodeIdentity::new("gw-1", "fr-1", Role::Gateway).unwrap();
        material(&self.ca, &gateway)
    }

    /// The ids of the nodes holding a file of `blob_id`, by scanning every disk.
    pub fn holders(&self, blob_id: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.holds(blob_id))
            .map(|(id, _)| id.clone())
            .collect()
    }
}
