//! `nuage serve --role storage`: a storage node (docs/storage-nodes.md). It
//! serves only the node protocol over mutual TLS, from the `[node]` section
//! of the configuration file; no S3, no metadata store, no keys.

use crate::config::FileConfig;
use anyhow::{Context as _, bail};
use nuage_node::store::StoreConfig;
use nuage_node::tls::TlsMaterial;
use nuage_node::{NodeIdentity, NodeServer, NodeServerConfig, Role, limits};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What `nuage serve` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServeRole {
    /// The S3, IAM, KMS and admin APIs (the default).
    Gateway,
    /// A storage node: the node protocol only, configured by `[node]`.
    Storage,
    /// A compute host: the compute host protocol only, configured by
    /// `[compute]` (docs/compute.md, "Several hosts").
    Compute,
}

/// `[node]`: a storage node's identity, address and TLS material.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFileConfig {
    /// The node id; must be what the certificate names.
    pub id: Option<String>,
    /// The site; must be what the certificate names.
    pub site: Option<String>,
    /// Address the node protocol listens on.
    pub listen: Option<String>,
    /// The node's certificate, its key, and the cluster CA (PEM files from
    /// `nuage cluster cert issue`).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// A cap on the bytes of blobs stored; default: the file system's size.
    pub capacity_bytes: Option<u64>,
    /// Space left free on the file system (default 1 GiB).
    pub reserve_bytes: Option<u64>,
    /// Seconds without a byte moving before a request is abandoned (default 30).
    pub idle_timeout_seconds: Option<u64>,
}

/// Longest idle timeout one may configure.
const IDLE_TIMEOUT_S_MAX: u64 = 3600;

pub fn run(
    config_path: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
    listen: Option<String>,
) -> anyhow::Result<()> {
    let file = match config_path {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let node = file.node.unwrap_or_default();
    let need = |what: &str, value: Option<String>| {
        value.with_context(|| format!("[node] {what} is required for --role storage"))
    };
    let identity = NodeIdentity::new(
        &need("id", node.id)?,
        &need("site", node.site)?,
        Role::Storage,
    )?;
    let listen_text = need("listen", listen.or(node.listen))?;
    let listen: SocketAddr = listen_text
        .parse()
        .with_context(|| format!("`{listen_text}` is not an IP address and port"))?;
    let path = |what: &str, value: Option<PathBuf>| {
        value.with_context(|| format!("[node] {what} is required for --role storage"))
    };
    let tls = TlsMaterial::load(
        &path("cert", node.cert)?,
        &path("key", node.key)?,
        &path("ca", node.ca)?,
    )?;
    let idle_s = node
        .idle_timeout_seconds
        .unwrap_or(limits::NODE_IDLE_TIMEOUT_DEFAULT.as_secs());
    if !(1..=IDLE_TIMEOUT_S_MAX).contains(&idle_s) {
        bail!("[node] idle_timeout_seconds must be 1 to {IDLE_TIMEOUT_S_MAX}");
    }
    let data_dir = data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_DATA_DIR));
    let config = NodeServerConfig {
        identity,
        tls,
        store: StoreConfig {
            data_dir,
            capacity_bytes: node.capacity_bytes,
            reserve_bytes: node
                .reserve_bytes
                .unwrap_or(limits::NODE_RESERVE_BYTES_DEFAULT),
        },
        listen,
        idle_timeout: Duration::from_secs(idle_s),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = NodeServer::start(config).await?;
        // Tests and scripts read the bound address (port 0) from here.
        println!("nuage storage node listening on {}", server.local_addr());
        crate::server::shutdown_signal().await;
        server.shutdown().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_section_parses_and_refuses_unknown_keys() -> anyhow::Result<()> {
        let file: FileConfig = toml::from_str(
            "data_dir = \"/d\"\n[node]\nid = \"node-1\"\nsite = \"fr-par\"\n\
             listen = \"127.0.0.1:7100\"\ncert = \"/c\"\nkey = \"/k\"\nca = \"/a\"\n\
             capacity_bytes = 1000\nreserve_bytes = 10\nidle_timeout_seconds = 5",
        )?;
        let node = file.node.context("no [node]")?;
        assert_eq!(node.id.as_deref(), Some("node-1"));
        assert_eq!(node.capacity_bytes, Some(1000));
        assert!(toml::from_str::<FileConfig>("[node]\nid = \"n\"\nsiet = \"fr\"").is_err());
        Ok(())
    }

    #[test]
    fn a_node_without_its_identity_or_certificates_does_not_start() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("node.toml");
        std::fs::write(&config, "[node]\nid = \"node-1\"\nlisten = \"127.0.0.1:0\"")?;
        let err = run(Some(&config), Some(dir.path().into()), None)
            .err()
            .context("started without a site")?;
        assert!(err.to_string().contains("[node] site"), "{err:#}");
        Ok(())
    }
}
