//! The configuration file (TOML) and its resolution into typed settings.
//! Every key is documented in `docs/configuration.md`; keep the two in step.

use anyhow::{Context as _, bail};
use nuage_base::limits;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub allow_insecure_http: bool,
    #[serde(default)]
    pub tls: TlsFileConfig,
    #[serde(default)]
    pub regions: Vec<RegionFileConfig>,
    #[serde(default)]
    pub root_of_trust: RootOfTrustFileConfig,
    #[serde(default)]
    pub external_key_stores: ExternalKeyStoresFileConfig,
    #[serde(default)]
    pub audit: AuditFileConfig,
    /// `[node]`: read only by `nuage serve --role storage`.
    pub node: Option<crate::node_cli::NodeFileConfig>,
    #[serde(default)]
    pub metadata: MetadataFileConfig,
    /// The operator's `topology.toml` (docs/residency.md); without it, a
    /// one-site topology in the first region's country.
    pub topology_file: Option<PathBuf>,
    /// `[cluster]`: blobs on the topology's storage nodes instead of this
    /// gateway's disk (docs/storage-nodes.md, "Running gateways on nodes").
    pub cluster: Option<ClusterFileConfig>,
    /// `[compute]`: the EC2 API over a compute host on this machine
    /// (docs/compute.md).
    pub compute: Option<crate::server::compute::ComputeFileConfig>,
}

/// `[cluster]`: how a gateway reaches the storage nodes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFileConfig {
    /// The gateway's certificate (`nuage cluster cert issue --role
    /// gateway`), its key, and the cluster CA.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// Seconds between two polls of every node's status (default 5).
    pub poll_interval_seconds: Option<u64>,
    /// Seconds between two repair passes (default 60).
    pub repair_interval_seconds: Option<u64>,
    /// Seconds between two scrub passes of the gateway that repairs
    /// (default a day): each reads every replica on every node.
    pub scrub_interval_seconds: Option<u64>,
    /// Seconds a node's file that no index entry accounts for is left
    /// before a scrub deletes it (default an hour; at least a minute, so a
    /// write or repair copy in flight is never taken for an orphan).
    pub orphan_grace_seconds: Option<u64>,
    /// Whether this gateway runs repair and scrub passes (default true).
    /// Passes take the cluster's repair lease first, so one gateway repairs
    /// at a time however many say true (docs/storage-nodes.md).
    pub repair: Option<bool>,
    /// The residency policy (JSON) of a blob whose bucket and tenant have
    /// none; default: the countries of the first region's sites, 2
    /// replicas (fewer when those sites have fewer nodes).
    pub default_policy: Option<String>,
}

/// `[cluster]` after checks; used by `crate::server::cluster`.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub poll_interval: std::time::Duration,
    pub repair_interval: std::time::Duration,
    pub scrub_interval: std::time::Duration,
    pub orphan_grace: std::time::Duration,
    /// Whether this gateway runs the repair and scrub loops.
    pub repair: bool,
    pub default_policy: Option<String>,
}

/// Default seconds between two polls of the nodes' status.
pub const CLUSTER_POLL_INTERVAL_S_DEFAULT: u64 = 5;
/// Default seconds between two repair passes.
pub const CLUSTER_REPAIR_INTERVAL_S_DEFAULT: u64 = 60;
/// Longest poll or repair interval one may configure (a day).
pub const CLUSTER_INTERVAL_S_MAX: u64 = 86_400;
/// Default seconds between two scrub passes (a day).
pub const CLUSTER_SCRUB_INTERVAL_S_DEFAULT: u64 = 86_400;
/// Longest scrub interval one may configure (30 days).
pub const CLUSTER_SCRUB_INTERVAL_S_MAX: u64 = 30 * 86_400;
/// Default and bounds of the orphan grace, seconds.
pub const CLUSTER_ORPHAN_GRACE_S_DEFAULT: u64 = 3_600;
pub const CLUSTER_ORPHAN_GRACE_S_MIN: u64 = 60;
pub const CLUSTER_ORPHAN_GRACE_S_MAX: u64 = 7 * 86_400;

/// `[metadata]`: where buckets, object versions and documents live
/// (docs/metadata-postgres.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "backend", rename_all = "lowercase")]
pub enum MetadataFileConfig {
    /// `DATA_DIR/meta.redb`, this gateway's alone.
    Embedded {},
    /// A PostgreSQL (or compatible) database several gateways may share.
    Postgres {
        /// `postgres://user@host:port/db` or `host=... dbname=...`.
        url: String,
        /// A file holding the password (overrides one in `url`).
        password_file: Option<PathBuf>,
        /// Connections at most (default 16).
        pool_size: Option<usize>,
        /// `disable`, `require` (tests only) or `verify-full`; default: the
        /// URL's `sslmode`, else `disable` when every host is loopback or a
        /// Unix socket and `verify-full` otherwise.
        tls: Option<String>,
        /// PEM roots to trust (`verify-full`); default: the system's.
        ca_file: Option<PathBuf>,
        /// PEM client certificate and key for mutual TLS.
        client_cert: Option<PathBuf>,
        client_key: Option<PathBuf>,
    },
}

impl Default for MetadataFileConfig {
    fn default() -> Self {
        Self::Embedded {}
    }
}

/// `[metadata]` after checks; opened by `crate::metadata`.
#[derive(Debug, Clone)]
pub enum MetadataSource {
    Embedded,
    Postgres {
        /// Its `Debug` never prints the URL.
        config: nuage_meta::postgres::PostgresConfig,
        password_file: Option<PathBuf>,
    },
}

/// `[audit]`: each tenant's audit log (docs/audit-log.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFileConfig {
    /// Seconds between signed checkpoints of a log that grew.
    pub checkpoint_interval_seconds: Option<u64>,
    /// Days entries are kept before whole bundles of older ones are pruned.
    pub retention_days: Option<u32>,
    /// Witnesses (C2SP tlog-witness) each signed checkpoint is submitted to.
    #[serde(default)]
    pub witnesses: Vec<WitnessConfig>,
}

/// One entry of `[audit] witnesses`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// The witness's base URL; checkpoints go to `<url>/add-checkpoint`.
    pub url: String,
    /// The witness's verifier key (`nuage witness init` prints it).
    pub vkey: String,
}

/// `[audit]` after defaults and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub checkpoint_interval: std::time::Duration,
    pub retention_days: u32,
    pub witnesses: Vec<WitnessConfig>,
}

/// `[external_key_stores]`: how Nuage reaches tenants' XKS proxies.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalKeyStoresFileConfig {
    /// PEM files of certificate authorities trusted for XKS proxies, beside
    /// the system's (a tenant's proxy with a private or self-signed
    /// certificate).
    #[serde(default)]
    pub trusted_ca_files: Vec<PathBuf>,
}

/// `[root_of_trust]`: what wraps each tenant's key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum RootOfTrustFileConfig {
    /// `DATA_DIR/root.key` (development only). A struct variant, not a unit
    /// one, so that `deny_unknown_fields` refuses stray keys beside it.
    File {},
    /// An AES key inside an HSM, reached over PKCS#11.
    Pkcs11 {
        module: PathBuf,
        token_label: String,
        pin_file: PathBuf,
        key_label: Option<String>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFileConfig {
    #[serde(default)]
    pub enabled: bool,
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionFileConfig {
    pub name: String,
    pub country: String,
}

/// Settings after defaults and checks.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub domains: Vec<String>,
    pub tls: Option<TlsSource>,
    pub regions: Vec<nuage_storage::Region>,
    pub root_of_trust: RootOfTrustSource,
    /// Extra certificate authorities trusted for tenants' XKS proxies.
    pub xks_trusted_ca_files: Vec<PathBuf>,
    pub audit: AuditSettings,
    pub metadata: MetadataSource,
    /// `topology_file`, read by the server at start (`crate::topology`).
    pub topology_file: Option<PathBuf>,
    /// `[cluster]`: blobs on storage nodes (requires `topology_file`).
    pub cluster: Option<ClusterSettings>,
    /// `[compute]`: the EC2 API with a local compute host.
    pub compute: Option<crate::server::compute::ComputeSettings>,
}

impl Default for RootOfTrustFileConfig {
    fn default() -> Self {
        Self::File {}
    }
}

/// The root of trust after checks; opened by `crate::root_of_trust`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootOfTrustSource {
    KeyFile,
    Pkcs11 {
        module: PathBuf,
        token_label: String,
        pin_file: PathBuf,
        key_label: String,
    },
}

/// PKCS#11 labels are fixed 32-byte fields (blank-padded).
const PKCS11_LABEL_BYTES_MAX: usize = 32;

#[derive(Debug, Clone)]
pub enum TlsSource {
    Files {
        certificate: PathBuf,
        private_key: PathBuf,
    },
    SelfSigned,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
pub const DEFAULT_DATA_DIR: &str = "./nuage-data";

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))
    }

    pub fn resolve(self) -> anyhow::Result<Config> {
        let listen_text = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text
            .parse()
            .with_context(|| format!("`{listen_text}` is not an IP address and port"))?;
        let tls = match (self.tls.enabled, self.tls.certificate, self.tls.private_key) {
            (false, None, None) => None,
            (_, Some(certificate), Some(private_key)) => Some(TlsSource::Files {
                certificate,
                private_key,
            }),
            (true, None, None) => Some(TlsSource::SelfSigned),
            _ => bail!("tls.certificate and tls.private_key must be given together"),
        };
        if tls.is_none() && !listen.ip().is_loopback() && !self.allow_insecure_http {
            bail!(
                "refusing to serve plain HTTP on {listen}, which is not a loopback address: enable TLS (--tls) or pass --allow-insecure-http"
            );
        }
        let regions = if self.regions.is_empty() {
            vec![nuage_storage::Region {
                name: "fr-par".into(),
                country: "FR".into(),
            }]
        } else {
            self.regions
                .into_iter()
                .map(|r| nuage_storage::Region {
                    name: r.name,
                    country: r.country,
                })
                .collect()
        };
        for region in &regions {
            if region.name.is_empty() || region.country.len() != 2 {
                bail!(
                    "region `{}` needs a name and a two-letter country code",
                    region.name
                );
            }
        }
        let root_of_trust = match self.root_of_trust {
            RootOfTrustFileConfig::File {} => RootOfTrustSource::KeyFile,
            RootOfTrustFileConfig::Pkcs11 {
                module,
                token_label,
                pin_file,
                key_label,
            } => {
                let key_label =
                    key_label.unwrap_or_else(|| nuage_kms::DEFAULT_KEY_LABEL.to_owned());
                for (name, label) in [("token_label", &token_label), ("key_label", &key_label)] {
                    if label.is_empty() || label.len() > PKCS11_LABEL_BYTES_MAX {
                        bail!(
                            "root_of_trust.{name} `{label}` must be 1 to {PKCS11_LABEL_BYTES_MAX} bytes long"
                        );
                    }
                }
                RootOfTrustSource::Pkcs11 {
                    module,
                    token_label,
                    pin_file,
                    key_label,
                }
            }
        };
        let interval_s = self
            .audit
            .checkpoint_interval_seconds
            .unwrap_or(limits::AUDIT_CHECKPOINT_INTERVAL_S_DEFAULT);
        if !(1..=limits::AUDIT_CHECKPOINT_INTERVAL_S_MAX).contains(&interval_s) {
            bail!(
                "audit.checkpoint_interval_seconds must be 1 to {} (got {interval_s})",
                limits::AUDIT_CHECKPOINT_INTERVAL_S_MAX
            );
        }
        let retention_days = self
            .audit
            .retention_days
            .unwrap_or(limits::AUDIT_RETENTION_DAYS_DEFAULT);
        if retention_days == 0 {
            bail!("audit.retention_days must be at least 1");
        }
        if self.audit.witnesses.len() > limits::WITNESSES_MAX {
            bail!(
                "audit.witnesses lists {} witnesses, more than {}",
                self.audit.witnesses.len(),
                limits::WITNESSES_MAX
            );
        }
        for witness in &self.audit.witnesses {
            if !(witness.url.starts_with("http://") || witness.url.starts_with("https://")) {
                bail!("audit.witnesses: url `{}` is not http(s)://", witness.url);
            }
            nuage_audit::witness::WitnessKey::parse(&witness.vkey)
                .with_context(|| format!("audit.witnesses: the vkey of {}", witness.url))?;
        }
        let metadata = match self.metadata {
            MetadataFileConfig::Embedded {} => MetadataSource::Embedded,
            MetadataFileConfig::Postgres {
                url,
                password_file,
                pool_size,
                tls,
                ca_file,
                client_cert,
                client_key,
            } => {
                use nuage_meta::postgres::{
                    POOL_SIZE_DEFAULT, POOL_SIZE_MAX, PostgresConfig, PostgresTls, TlsMode,
                };
                if url.trim().is_empty() {
                    bail!("metadata.url is empty");
                }
                let pool_size = pool_size.unwrap_or(POOL_SIZE_DEFAULT);
                if !(1..=POOL_SIZE_MAX).contains(&pool_size) {
                    bail!("metadata.pool_size must be 1 to {POOL_SIZE_MAX} (got {pool_size})");
                }
                let mode = tls
                    .map(|t| TlsMode::parse(&t).map_err(|e| anyhow::anyhow!("metadata.tls: {e}")))
                    .transpose()?;
                let mut config = PostgresConfig::new(url);
                config.pool_size = pool_size;
                config.tls = PostgresTls {
                    mode,
                    ca_file,
                    client_cert,
                    client_key,
                };
                // The URL and the TLS settings checked together now, so a
                // database off this machine never goes plaintext unasked.
                config
                    .tls_mode()
                    .map_err(|e| anyhow::anyhow!("[metadata]: {e}"))?;
                MetadataSource::Postgres {
                    config,
                    password_file,
                }
            }
        };
        let cluster = match self.cluster {
            None => None,
            Some(c) => Some(resolve_cluster(c, self.topology_file.is_some())?),
        };
        let audit = AuditSettings {
            checkpoint_interval: std::time::Duration::from_secs(interval_s),
            retention_days,
            witnesses: self.audit.witnesses.clone(),
        };
        Ok(Config {
            audit,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen,
            // `bucket.localhost` resolves to loopback on most systems, so
            // virtual-host-style addressing works out of the box on a laptop.
            domains: if self.domains.is_empty() {
                vec!["localhost".to_owned()]
            } else {
                self.domains
            },
            tls,
            regions,
            root_of_trust,
            xks_trusted_ca_files: self.external_key_stores.trusted_ca_files,
            metadata,
            topology_file: self.topology_file,
            cluster,
            compute: self
                .compute
                .map(crate::server::compute::ComputeFileConfig::resolve)
                .transpose()?,
        })
    }
}

/// Checks `[cluster]`: every path given, intervals in bounds, and a
/// topology file to name the nodes.
fn resolve_cluster(c: ClusterFileConfig, has_topology: bool) -> anyhow::Result<ClusterSettings> {
    if !has_topology {
        bail!(
            "[cluster] needs topology_file: the topology names the storage nodes and their endpoints"
        );
    }
    let need = |what: &str, value: Option<PathBuf>| {
        value.with_context(|| {
            format!("cluster.{what} is required (from `nuage cluster cert issue --role gateway`)")
        })
    };
    let bounded = |what: &str, value: Option<u64>, default: u64, (min, max): (u64, u64)| {
        let s = value.unwrap_or(default);
        if !(min..=max).contains(&s) {
            bail!("cluster.{what} must be {min} to {max} (got {s})");
        }
        Ok(std::time::Duration::from_secs(s))
    };
    let interval = |what: &str, value: Option<u64>, default: u64| {
        bounded(what, value, default, (1, CLUSTER_INTERVAL_S_MAX))
    };
    if let Some(policy) = &c.default_policy {
        nuage_placement::ResidencyPolicy::from_json(policy)
            .context("cluster.default_policy is not a valid residency policy")?;
    }
    Ok(ClusterSettings {
        cert: need("cert", c.cert)?,
        key: need("key", c.key)?,
        ca: need("ca", c.ca)?,
        poll_interval: interval(
            "poll_interval_seconds",
            c.poll_interval_seconds,
            CLUSTER_POLL_INTERVAL_S_DEFAULT,
        )?,
        repair_interval: interval(
            "repair_interval_seconds",
            c.repair_interval_seconds,
            CLUSTER_REPAIR_INTERVAL_S_DEFAULT,
        )?,
        scrub_interval: bounded(
            "scrub_interval_seconds",
            c.scrub_interval_seconds,
            CLUSTER_SCRUB_INTERVAL_S_DEFAULT,
            (1, CLUSTER_SCRUB_INTERVAL_S_MAX),
        )?,
        orphan_grace: bounded(
            "orphan_grace_seconds",
            c.orphan_grace_seconds,
            CLUSTER_ORPHAN_GRACE_S_DEFAULT,
            (CLUSTER_ORPHAN_GRACE_S_MIN, CLUSTER_ORPHAN_GRACE_S_MAX),
        )?,
        repair: c.repair.unwrap_or(true),
        default_policy: c.default_policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_http_in_fr_par() -> anyhow::Result<()> {
        let c = FileConfig::default().resolve()?;
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.tls.is_none());
        assert_eq!(c.regions[0].name, "fr-par");
        Ok(())
    }

    #[test]
    fn plain_http_off_loopback_is_refused() {
        let c = FileConfig {
            listen: Some("0.0.0.0:9000".into()),
            ..Default::default()
        };
        assert!(c.resolve().is_err());
    }

    #[test]
    fn root_of_trust_defaults_to_the_key_file_and_reads_pkcs11() -> anyhow::Result<()> {
        assert_eq!(
            FileConfig::default().resolve()?.root_of_trust,
            RootOfTrustSource::KeyFile
        );
        let file: FileConfig = toml::from_str("[root_of_trust]\nkind = \"file\"")?;
        assert_eq!(file.resolve()?.root_of_trust, RootOfTrustSource::KeyFile);
        let hsm: FileConfig = toml::from_str(
            "[root_of_trust]\nkind = \"pkcs11\"\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\n\
             token_label = \"nuage\"\npin_file = \"/etc/nuage/hsm.pin\"",
        )?;
        assert_eq!(
            hsm.resolve()?.root_of_trust,
            RootOfTrustSource::Pkcs11 {
                module: "/usr/lib/softhsm/libsofthsm2.so".into(),
                token_label: "nuage".into(),
                pin_file: "/etc/nuage/hsm.pin".into(),
                key_label: "nuage-root".into(),
            }
        );
        // Missing, misspelt or misplaced keys are errors, as everywhere.
        for bad in [
            "[root_of_trust]\nkind = \"pkcs11\"\nmodule = \"/m.so\"\ntoken_label = \"t\"",
            "[root_of_trust]\nkind = \"pkcs11\"\nmodule = \"/m.so\"\ntoken_label = \"t\"\npin_file = \"/p\"\npin = \"1234\"",
            "[root_of_trust]\nkind = \"file\"\nmodule = \"/m.so\"",
            "[root_of_trust]\nkind = \"hsm\"",
        ] {
            assert!(toml::from_str::<FileConfig>(bad).is_err(), "{bad}");
        }
        let long: FileConfig = toml::from_str(&format!(
            "[root_of_trust]\nkind = \"pkcs11\"\nmodule = \"/m.so\"\ntoken_label = \"{}\"\npin_file = \"/p\"",
            "x".repeat(33)
        ))?;
        assert!(long.resolve().is_err());
        Ok(())
    }

    #[test]
    fn audit_defaults_and_bounds() -> anyhow::Result<()> {
        let defaults = FileConfig::default().resolve()?.audit;
        assert_eq!(
            defaults.checkpoint_interval.as_secs(),
            limits::AUDIT_CHECKPOINT_INTERVAL_S_DEFAULT
        );
        assert_eq!(
            defaults.retention_days,
            limits::AUDIT_RETENTION_DAYS_DEFAULT
        );
        let set: FileConfig =
            toml::from_str("[audit]\ncheckpoint_interval_seconds = 5\nretention_days = 400")?;
        let set = set.resolve()?.audit;
        assert_eq!(
            (set.checkpoint_interval.as_secs(), set.retention_days),
            (5, 400)
        );
        for bad in [
            "[audit]\ncheckpoint_interval_seconds = 0",
            "[audit]\ncheckpoint_interval_seconds = 86401",
            "[audit]\nretention_days = 0",
        ] {
            let file: FileConfig = toml::from_str(bad)?;
            assert!(file.resolve().is_err(), "{bad}");
        }
        assert!(toml::from_str::<FileConfig>("[audit]\nretention = 3").is_err());
        Ok(())
    }

    #[test]
    fn audit_witnesses_are_checked() -> anyhow::Result<()> {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
        let vkey = nuage_audit::witness::witness_verifier_key("witness.example/w1", &key);
        let good: FileConfig = toml::from_str(&format!(
            "[audit]\nwitnesses = [{{ url = \"http://127.0.0.1:7380\", vkey = \"{vkey}\" }}]"
        ))?;
        assert_eq!(good.resolve()?.audit.witnesses.len(), 1);
        let log_key = nuage_audit::verifier_key("log.example", &key);
        for bad in [
            format!("[audit]\nwitnesses = [{{ url = \"ftp://w\", vkey = \"{vkey}\" }}]"),
            format!("[audit]\nwitnesses = [{{ url = \"http://w\", vkey = \"{log_key}\" }}]"),
            "[audit]\nwitnesses = [{ url = \"http://w\" }]".to_string(),
        ] {
            let parsed = toml::from_str::<FileConfig>(&bad);
            assert!(parsed.is_err() || parsed?.resolve().is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("listen = \"127.0.0.1:1\"\nlsiten = 3").is_err());
        assert!(
            toml::from_str::<FileConfig>(
                "listen = \"127.0.0.1:1\"\n[[regions]]\nname = \"fr-par\"\ncountry = \"FR\""
            )
            .is_ok()
        );
    }

    #[test]
    fn cluster_needs_a_topology_and_its_tls_files() -> anyhow::Result<()> {
        assert!(FileConfig::default().resolve()?.cluster.is_none());
        let good: FileConfig = toml::from_str(
            "topology_file = \"/t.toml\"\n[cluster]\ncert = \"/c\"\nkey = \"/k\"\nca = \"/ca\"\n\
             repair_interval_seconds = 2",
        )?;
        let c = good.resolve()?.cluster.context("cluster")?;
        assert_eq!(c.repair_interval.as_secs(), 2);
        assert_eq!(c.poll_interval.as_secs(), CLUSTER_POLL_INTERVAL_S_DEFAULT);
        for bad in [
            "[cluster]\ncert = \"/c\"\nkey = \"/k\"\nca = \"/ca\"",
            "topology_file = \"/t\"\n[cluster]\ncert = \"/c\"\nkey = \"/k\"",
            "topology_file = \"/t\"\n[cluster]\ncert = \"/c\"\nkey = \"/k\"\nca = \"/ca\"\npoll_interval_seconds = 0",
            "topology_file = \"/t\"\n[cluster]\ncert = \"/c\"\nkey = \"/k\"\nca = \"/ca\"\ndefault_policy = \"{}\"",
            "topology_file = \"/t\"\n[cluster]\ncert = \"/c\"\nkey = \"/k\"\nca = \"/ca\"\nnodes = 3",
        ] {
            let parsed = toml::from_str::<FileConfig>(bad);
            assert!(parsed.is_err() || parsed?.resolve().is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn metadata_defaults_to_embedded_and_reads_postgres() -> anyhow::Result<()> {
        assert!(matches!(
            FileConfig::default().resolve()?.metadata,
            MetadataSource::Embedded
        ));
        let pg: FileConfig = toml::from_str(
            "[metadata]\nbackend = \"postgres\"\nurl = \"postgres://nuage:hunter2@db/nuage\"\n\
             password_file = \"/etc/nuage/pg\"\npool_size = 4",
        )?;
        let MetadataSource::Postgres {
            config,
            password_file,
        } = pg.resolve()?.metadata
        else {
            anyhow::bail!("not postgres");
        };
        assert_eq!(config.pool_size, 4);
        assert_eq!(password_file.as_deref(), Some(Path::new("/etc/nuage/pg")));
        assert!(
            !format!("{config:?}").contains("hunter2"),
            "Debug hides the URL"
        );
        for bad in [
            "[metadata]\nbackend = \"postgres\"",
            "[metadata]\nbackend = \"postgres\"\nurl = \"\"",
            "[metadata]\nbackend = \"postgres\"\nurl = \"postgres://db\"\npool_size = 0",
            "[metadata]\nbackend = \"mysql\"\nurl = \"x\"",
            "[metadata]\nbackend = \"embedded\"\nurl = \"x\"",
        ] {
            let parsed = toml::from_str::<FileConfig>(bad);
            assert!(parsed.is_err() || parsed?.resolve().is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn metadata_tls_defaults_to_verify_full_off_this_machine() -> anyhow::Result<()> {
        use nuage_meta::postgres::TlsMode;
        let mode = |toml_text: &str| -> anyhow::Result<TlsMode> {
            let MetadataSource::Postgres { config, .. } =
                toml::from_str::<FileConfig>(toml_text)?.resolve()?.metadata
            else {
                anyhow::bail!("not postgres");
            };
            Ok(config.tls_mode()?)
        };
        let pg = "[metadata]\nbackend = \"postgres\"\n";
        // No TLS setting: a remote host gets verify-full, loopback plaintext.
        assert_eq!(
            mode(&format!(
                "{pg}url = \"postgres://nuage@db.example.eu/nuage\""
            ))?,
            TlsMode::VerifyFull
        );
        assert_eq!(
            mode(&format!(
                "{pg}url = \"postgres://nuage@127.0.0.1:5432/nuage\""
            ))?,
            TlsMode::Disable
        );
        // Plaintext to a remote host only when asked for explicitly.
        assert_eq!(
            mode(&format!(
                "{pg}url = \"postgres://nuage@db.example.eu/nuage\"\ntls = \"disable\""
            ))?,
            TlsMode::Disable
        );
        let full = mode(&format!(
            "{pg}url = \"postgres://nuage@db.example.eu/nuage\"\ntls = \"verify-full\"\n\
             ca_file = \"/etc/nuage/pg-ca.pem\"\nclient_cert = \"/etc/nuage/pg.crt\"\n\
             client_key = \"/etc/nuage/pg.key\""
        ))?;
        assert_eq!(full, TlsMode::VerifyFull);
        assert_eq!(
            mode(&format!(
                "{pg}url = \"postgres://nuage@db.example.eu/nuage?sslmode=verify-full\""
            ))?,
            TlsMode::VerifyFull
        );
        for (bad, why) in [
            ("tls = \"prefer\"", "plaintext"),
            ("tls = \"verify\"", "unknown TLS mode"),
            ("tls = \"disable\"\nca_file = \"/ca.pem\"", "verify-full"),
            ("client_cert = \"/c.pem\"", "go together"),
        ] {
            let text = format!("{pg}url = \"postgres://nuage@db.example.eu/nuage\"\n{bad}");
            let error = format!("{:#}", mode(&text).err().context(bad.to_owned())?);
            assert!(error.contains(why), "{bad}: {error}");
        }
        let conflict = format!(
            "{pg}url = \"postgres://nuage@db.example.eu/nuage?sslmode=disable\"\n\
             tls = \"verify-full\""
        );
        let error = format!("{:#}", mode(&conflict).err().context("conflict")?);
        assert!(error.contains("contradicts"), "{error}");
        Ok(())
    }
}
