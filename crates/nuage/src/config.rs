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
        })
    }
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
}
