//! `[compute]`: the EC2 API (`nuage-ec2-api`) over compute hosts: one on
//! this machine (`nuage-compute`, `hosts = "local"`, the default), or the
//! topology's `[[compute_host]]`s, each a `nuage serve --role compute`
//! reached over the host protocol with the cluster's certificates
//! (`nuage-compute-node`, `hosts = "topology"`). This module reads the
//! section, opens the local host (recovering what a previous process left)
//! or builds a client per remote host, and gives the API an
//! [`ObjectReader`] that reads image objects through the storage service as
//! the caller, with `s3:GetObject` decided exactly as an S3 GET decides it
//! (identity policies, the bucket's policy, Block Public Access).
//! `crate::compute_cli` runs the other side, `nuage serve --role compute`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use nuage_ec2_api::{
    Ec2Api, Ec2Settings, ObjectReadError, ObjectReader, RequestContext, ScheduledHost,
};
use nuage_iam::{AccessRequest, Iam, Identity};
use nuage_storage::{Requester, Storage, StorageError};
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;

/// `[compute]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeFileConfig {
    /// Default `DATA_DIR/compute`.
    pub state_dir: Option<PathBuf>,
    /// `auto` (default), `tcg` or `kvm`.
    pub accelerator: Option<nuage_compute::AccelMode>,
    /// vCPUs the host may hand out; default: this machine's CPUs.
    pub vcpus: Option<u32>,
    /// Memory the host may hand out; default: half of this machine's.
    pub memory_mib: Option<u64>,
    /// Default: the first region's name followed by `a` (`fr-para`).
    pub availability_zone: Option<String>,
    /// How long a stop waits for the guest's ACPI shutdown (default 30).
    pub stop_wait_seconds: Option<u64>,
    /// The topology site this host is in (`topology_file`); default: the
    /// single node's own site. Instances run here only for tenants whose
    /// residency policy allows this site.
    pub site: Option<String>,
    /// `local` (default): a host in this process. `topology`: schedule
    /// onto the topology's `[[compute_host]]`s (a gateway only).
    pub hosts: Option<String>,
    /// `nuage serve --role compute`: where the host protocol listens.
    pub listen: Option<String>,
    /// The cluster certificate, its key and the cluster CA: a compute
    /// host's own (`--role compute`), or the gateway's with `hosts =
    /// "topology"` (default: `[cluster]`'s).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// How long a reboot waits for the guest to honour Ctrl-Alt-Del before
    /// a hard reset (default 60).
    pub reboot_wait_seconds: Option<u64>,
    /// Where instances' SSH forwards listen (default `127.0.0.1`; IPv4).
    pub ssh_bind_address: Option<std::net::IpAddr>,
    /// The address reported to tenants for them (`publicIpAddress`);
    /// default the bind address (127.0.0.1 when that is 0.0.0.0).
    pub ssh_advertise_address: Option<std::net::IpAddr>,
    /// Host ports for SSH forwards, `[first, last]`; default a free port
    /// the kernel picks.
    pub ssh_port_range: Option<[u16; 2]>,
}

/// Where the EC2 API's instances run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostsMode {
    /// One host in this process.
    Local,
    /// The topology's compute hosts, over the host protocol.
    Topology,
}

/// `[compute]` after checks.
#[derive(Debug, Clone)]
pub struct ComputeSettings {
    pub state_dir: Option<PathBuf>,
    pub accelerator: nuage_compute::AccelMode,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub availability_zone: Option<String>,
    pub stop_wait: Duration,
    pub site: Option<String>,
    pub hosts: HostsMode,
    pub listen: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub reboot_wait: Duration,
    pub ssh_bind_address: Option<std::net::IpAddr>,
    pub ssh_advertise_address: Option<std::net::IpAddr>,
    pub ssh_port_range: Option<std::ops::RangeInclusive<u16>>,
}

const VCPUS_MAX: u32 = 4096;
const MEMORY_MIB_MAX: u64 = 64 * 1024 * 1024;
const STOP_WAIT_S_MAX: u64 = 3600;

impl ComputeFileConfig {
    pub fn resolve(self) -> anyhow::Result<ComputeSettings> {
        if self.vcpus.is_some_and(|v| !(1..=VCPUS_MAX).contains(&v)) {
            anyhow::bail!("compute.vcpus must be 1 to {VCPUS_MAX}");
        }
        if self
            .memory_mib
            .is_some_and(|m| !(64..=MEMORY_MIB_MAX).contains(&m))
        {
            anyhow::bail!("compute.memory_mib must be 64 to {MEMORY_MIB_MAX}");
        }
        let stop_wait_s = self.stop_wait_seconds.unwrap_or(30);
        if !(1..=STOP_WAIT_S_MAX).contains(&stop_wait_s) {
            anyhow::bail!("compute.stop_wait_seconds must be 1 to {STOP_WAIT_S_MAX}");
        }
        let reboot_wait_s = self.reboot_wait_seconds.unwrap_or(60);
        if !(1..=STOP_WAIT_S_MAX).contains(&reboot_wait_s) {
            anyhow::bail!("compute.reboot_wait_seconds must be 1 to {STOP_WAIT_S_MAX}");
        }
        if self.ssh_bind_address.is_some_and(|a| a.is_ipv6()) {
            // QEMU's hostfwd takes no IPv6 address.
            anyhow::bail!("compute.ssh_bind_address must be an IPv4 address");
        }
        let ssh_port_range = match self.ssh_port_range {
            None => None,
            Some([first, last]) if first >= 1024 && first <= last => Some(first..=last),
            Some([first, last]) => anyhow::bail!(
                "compute.ssh_port_range must be [first, last] with 1024 <= first <= last, not \
                 [{first}, {last}]"
            ),
        };
        if let Some(zone) = &self.availability_zone
            && (zone.is_empty()
                || zone.len() > 64
                || !zone.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            anyhow::bail!("compute.availability_zone must be 1 to 64 letters, digits or dashes");
        }
        let hosts = match self.hosts.as_deref() {
            None | Some("local") => HostsMode::Local,
            Some("topology") => HostsMode::Topology,
            Some(other) => {
                anyhow::bail!("compute.hosts must be `local` or `topology`, not `{other}`")
            }
        };
        if hosts == HostsMode::Topology {
            // These describe a host in this process, which there is not.
            for (key, set) in [
                ("state_dir", self.state_dir.is_some()),
                ("accelerator", self.accelerator.is_some()),
                ("vcpus", self.vcpus.is_some()),
                ("memory_mib", self.memory_mib.is_some()),
                ("availability_zone", self.availability_zone.is_some()),
                ("site", self.site.is_some()),
                ("listen", self.listen.is_some()),
                ("stop_wait_seconds", self.stop_wait_seconds.is_some()),
                ("reboot_wait_seconds", self.reboot_wait_seconds.is_some()),
                ("ssh_bind_address", self.ssh_bind_address.is_some()),
                (
                    "ssh_advertise_address",
                    self.ssh_advertise_address.is_some(),
                ),
                ("ssh_port_range", ssh_port_range.is_some()),
            ] {
                if set {
                    anyhow::bail!(
                        "compute.{key} describes a local host; with compute.hosts = \"topology\" \
                         each host's own configuration and the topology's [[compute_host]] say it"
                    );
                }
            }
        }
        Ok(ComputeSettings {
            hosts,
            listen: self.listen,
            cert: self.cert,
            key: self.key,
            ca: self.ca,
            state_dir: self.state_dir,
            accelerator: self.accelerator.unwrap_or_default(),
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            availability_zone: self.availability_zone,
            stop_wait: Duration::from_secs(stop_wait_s),
            site: self.site,
            reboot_wait: Duration::from_secs(reboot_wait_s),
            ssh_bind_address: self.ssh_bind_address,
            ssh_advertise_address: self.ssh_advertise_address,
            ssh_port_range,
        })
    }
}

/// Half of `MemTotal`, or 1 GiB when it cannot be read.
fn default_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(1024, |kib| (kib / 1024 / 2).max(64))
}

/// The local host's capacity: configured, else this machine's CPUs and
/// half its memory.
fn capacity(settings: &ComputeSettings) -> nuage_compute::HostCapacity {
    nuage_compute::HostCapacity {
        vcpus: settings.vcpus.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
        }),
        memory_mib: settings.memory_mib.unwrap_or_else(default_memory_mib),
    }
}

/// Opens a compute host in `state_dir` (recovering what a previous process
/// left) and wraps it as a `HostApi`.
pub async fn open_host(
    settings: &ComputeSettings,
    state_dir: &Path,
    availability_zone: &str,
) -> anyhow::Result<Arc<nuage_compute::LocalHost>> {
    let host_dir = state_dir.join("host");
    let mut host_config = nuage_compute::HostConfig::new(host_dir.clone(), capacity(settings));
    host_config.accel = settings.accelerator;
    host_config.availability_zone = availability_zone.to_owned();
    host_config.stop_wait = settings.stop_wait;
    host_config.reboot_wait = settings.reboot_wait;
    if let Some(address) = settings.ssh_bind_address {
        host_config.ssh_bind_address = address;
    }
    host_config.ssh_advertise_address = settings.ssh_advertise_address;
    host_config
        .ssh_port_range
        .clone_from(&settings.ssh_port_range);
    let (host, report) = nuage_compute::ComputeHost::open(host_config)
        .await
        .with_context(|| format!("cannot open the compute host in {}", state_dir.display()))?;
    for (id, description) in &report.changed {
        tracing::warn!(instance = %id, state = %description, "instance changed while the server was down");
    }
    Ok(Arc::new(nuage_compute::LocalHost::new(Arc::new(host))))
}

/// The cluster TLS material for calling compute hosts: `[compute]`'s
/// `cert`/`key`/`ca`, else `[cluster]`'s.
fn gateway_tls(
    settings: &ComputeSettings,
    cluster: Option<&crate::config::ClusterSettings>,
) -> anyhow::Result<nuage_node::tls::TlsMaterial> {
    let (cert, key, ca) = match (&settings.cert, &settings.key, &settings.ca, cluster) {
        (Some(cert), Some(key), Some(ca), _) => (cert.clone(), key.clone(), ca.clone()),
        (None, None, None, Some(cluster)) => (
            cluster.cert.clone(),
            cluster.key.clone(),
            cluster.ca.clone(),
        ),
        _ => anyhow::bail!(
            "compute.hosts = \"topology\" needs the gateway's cluster certificate: set \
             compute.cert, compute.key and compute.ca (from `nuage cluster cert issue --role \
             gateway`), or a [cluster] section"
        ),
    };
    let tls = nuage_node::tls::TlsMaterial::load(&cert, &key, &ca)?;
    let identity = tls.identity()?;
    if identity.role != nuage_node::Role::Gateway {
        anyhow::bail!(
            "{} names {identity}: a gateway's certificate (`--role gateway`) is needed to call \
             compute hosts",
            cert.display()
        );
    }
    Ok(tls)
}

/// Opens the compute host (or the clients of the topology's hosts) and
/// builds the EC2 front end (the server's services it is wired to, one
/// argument each, as `server.rs` has them).
#[allow(clippy::too_many_arguments)]
pub async fn start(
    settings: &ComputeSettings,
    data_dir: &Path,
    region: &str,
    docs: Arc<dyn nuage_meta::DocumentStore>,
    iam: Iam,
    clock: Arc<dyn nuage_base::Clock>,
    storage: Storage,
    topology: &nuage_placement::Topology,
    cluster: Option<&crate::config::ClusterSettings>,
) -> anyhow::Result<Ec2Api> {
    let state_dir = settings
        .state_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("compute"));
    let hosts = match settings.hosts {
        HostsMode::Local => vec![local_host(settings, &state_dir, region, topology).await?],
        HostsMode::Topology => remote_hosts(settings, topology, cluster)?,
    };
    // Staged image objects from an interrupted registration are garbage.
    let staging_dir = state_dir.join("staging");
    if staging_dir.exists() {
        std::fs::remove_dir_all(&staging_dir)
            .with_context(|| format!("cannot clear {}", staging_dir.display()))?;
    }
    std::fs::create_dir_all(&staging_dir)
        .with_context(|| format!("cannot create {}", staging_dir.display()))?;
    // Tenants' image objects while they are registered: the server's user alone reads them.
    std::fs::set_permissions(
        &staging_dir,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
    )
    .with_context(|| format!("cannot restrict {}", staging_dir.display()))?;
    let objects = Arc::new(StorageObjects {
        storage,
        iam: iam.clone(),
    });
    Ok(Ec2Api::new(
        hosts,
        docs,
        iam,
        clock,
        objects,
        Ec2Settings {
            region: region.to_owned(),
            staging_dir,
        },
    ))
}

async fn local_host(
    settings: &ComputeSettings,
    state_dir: &Path,
    region: &str,
    topology: &nuage_placement::Topology,
) -> anyhow::Result<ScheduledHost> {
    // Where this host stands, for the tenants' residency policies.
    let site_id = settings
        .site
        .clone()
        .unwrap_or_else(|| crate::topology::LOCAL_SITE.to_owned());
    let host_site = topology.site(&site_id).cloned().with_context(|| {
        format!(
            "compute.site `{site_id}` is not a site of the topology{}",
            if settings.site.is_none() {
                " (with a topology_file, name this host's site in compute.site)"
            } else {
                ""
            }
        )
    })?;
    let availability_zone = settings
        .availability_zone
        .clone()
        .unwrap_or_else(|| format!("{region}a"));
    let host = open_host(settings, state_dir, &availability_zone).await?;
    let capacity = capacity(settings);
    let decision = host.host().accelerator();
    println!(
        "nuage: EC2 API enabled: compute host with {} vCPUs and {} MiB in {availability_zone} (site {}, {}), accelerator {} ({})",
        capacity.vcpus,
        capacity.memory_mib,
        host_site.id,
        host_site.country,
        decision.accelerator,
        decision.reason
    );
    Ok(ScheduledHost {
        id: crate::topology::LOCAL_SITE.to_owned(),
        site: host_site,
        availability_zone,
        local: true,
        host,
    })
}

fn remote_hosts(
    settings: &ComputeSettings,
    topology: &nuage_placement::Topology,
    cluster: Option<&crate::config::ClusterSettings>,
) -> anyhow::Result<Vec<ScheduledHost>> {
    let declared = topology.compute_hosts();
    if declared.is_empty() {
        anyhow::bail!(
            "compute.hosts = \"topology\" needs [[compute_host]] tables in topology_file"
        );
    }
    let tls = gateway_tls(settings, cluster)?;
    let mut hosts = Vec::with_capacity(declared.len());
    for entry in declared.values() {
        let site = topology
            .site(&entry.site)
            .cloned()
            .with_context(|| format!("compute host {}: unknown site", entry.id))?;
        let expected =
            nuage_node::NodeIdentity::new(&entry.id, &entry.site, nuage_node::Role::Compute)
                .with_context(|| {
                    format!("compute host {} cannot be named in a certificate", entry.id)
                })?;
        let client = nuage_compute_node::RemoteHost::new(nuage_compute_node::RemoteHostConfig {
            endpoint: entry.endpoint.clone(),
            expected,
            tls: tls.clone(),
        })?;
        hosts.push(ScheduledHost {
            id: entry.id.clone(),
            site,
            availability_zone: entry.availability_zone.clone(),
            local: false,
            host: Arc::new(client),
        });
    }
    let names: Vec<String> = hosts
        .iter()
        .map(|h| {
            format!(
                "{} ({}, site {}, {})",
                h.id, h.availability_zone, h.site.id, h.site.country
            )
        })
        .collect();
    println!(
        "nuage: EC2 API enabled: scheduling onto {} compute hosts: {}",
        hosts.len(),
        names.join(", ")
    );
    Ok(hosts)
}

/// Image objects read through the storage service as the caller.
struct StorageObjects {
    storage: Storage,
    iam: Iam,
}

impl StorageObjects {
    /// `s3:GetObject` on `bucket/key` for `caller`, decided as an S3 GET
    /// decides it: the bucket's owner and policy, with
    /// RestrictPublicBuckets. A bucket that does not exist is judged as one
    /// the caller's tenant would own (so only a caller allowed to read it
    /// learns it is missing: `NotFound`); a refusal is `AccessDenied`. The
    /// one decision `copy_to_file` makes before reading and
    /// `authorize_read` answers alone.
    async fn decide_read(
        &self,
        caller: &Identity,
        context: &RequestContext,
        bucket: &str,
        key: &str,
    ) -> Result<(), ObjectReadError> {
        let failed = |e: &dyn std::fmt::Display| ObjectReadError::Failed(e.to_string());
        let bucket_record = match self.storage.bucket(bucket).await {
            Ok(record) => Some(record),
            Err(StorageError::NoSuchBucket) => None,
            Err(e) => return Err(failed(&e)),
        };
        let restrict_public = match &bucket_record {
            Some(b) if b.policy.is_some() => {
                b.public_access_block
                    .is_some_and(|p| p.restrict_public_buckets)
                    || self
                        .iam
                        .tenant(&b.owner)
                        .await
                        .map_or(true, |t| t.public_access_block.restrict_public_buckets)
            }
            _ => false,
        };
        let mut keys = std::collections::BTreeMap::new();
        if let Some(ip) = context.source_ip {
            keys.insert("aws:SourceIp".to_owned(), vec![ip.to_string()]);
        }
        keys.insert(
            "aws:SecureTransport".to_owned(),
            vec![context.secure_transport.to_string()],
        );
        let request = AccessRequest {
            action: "s3:GetObject".to_owned(),
            resource: format!("arn:aws:s3:::{bucket}/{key}"),
            context: keys,
        };
        let decision = self
            .iam
            .authorize(
                Some(caller),
                &request,
                bucket_record.as_ref().map(|b| b.owner.as_str()),
                bucket_record.as_ref().and_then(|b| b.policy.as_deref()),
                restrict_public,
            )
            .await
            .map_err(|e| failed(&e))?;
        if !decision.allowed {
            return Err(ObjectReadError::AccessDenied(format!(
                "{} may not s3:GetObject it",
                caller.arn
            )));
        }
        if bucket_record.is_none() {
            return Err(ObjectReadError::NotFound("no such bucket".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectReader for StorageObjects {
    async fn copy_to_file(
        &self,
        caller: &Identity,
        context: &RequestContext,
        bucket: &str,
        key: &str,
        dest: &Path,
        bytes_max: u64,
    ) -> Result<u64, ObjectReadError> {
        let failed = |e: &dyn std::fmt::Display| ObjectReadError::Failed(e.to_string());
        self.decide_read(caller, context, bucket, key).await?;
        let version = match self.storage.head_object(bucket, key, None).await {
            Ok(v) => v,
            Err(StorageError::NoSuchKey | StorageError::DeleteMarker { .. }) => {
                return Err(ObjectReadError::NotFound("no such key".into()));
            }
            Err(e) => return Err(failed(&e)),
        };
        if version.size > bytes_max {
            return Err(ObjectReadError::TooLarge(bytes_max));
        }
        // An S3 GET of an SSE-KMS object also needs kms:Decrypt with its
        // key, and an SSE-C one the customer's key: neither is asked here
        // yet, so such objects are refused rather than read past those
        // checks.
        if version
            .segments
            .iter()
            .any(|s| s.kms_key_arn.is_some() || s.sse_c)
        {
            return Err(ObjectReadError::AccessDenied(
                "RegisterImage reads images stored with SSE-S3 (the default) only; this object \
                 is encrypted with SSE-KMS or SSE-C"
                    .into(),
            ));
        }
        // The key service is told who reads and why, as for an S3 GET.
        let storage = self.storage.on_behalf_of(Requester {
            principal_arn: caller.arn.clone(),
            request_id: context.request_id.clone(),
            access_reason: nuage_s3::access_reason(Some(caller)),
        });
        let mut body = storage
            .read_object(&version, None, 0, version.size)
            .await
            .map_err(|e| failed(&e))?;
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| failed(&e))?;
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| failed(&e))?;
            written += chunk.len() as u64;
            if written > bytes_max {
                return Err(ObjectReadError::TooLarge(bytes_max));
            }
            file.write_all(&chunk).await.map_err(|e| failed(&e))?;
        }
        file.sync_all().await.map_err(|e| failed(&e))?;
        Ok(written)
    }

    async fn authorize_read(
        &self,
        caller: &Identity,
        context: &RequestContext,
        bucket: &str,
        key: &str,
    ) -> Result<(), ObjectReadError> {
        self.decide_read(caller, context, bucket, key).await
    }

    async fn residency_policy(&self, bucket: &str) -> Result<Option<String>, ObjectReadError> {
        let record = match self.storage.bucket(bucket).await {
            Ok(record) => record,
            Err(StorageError::NoSuchBucket) => return Ok(None),
            Err(e) => return Err(ObjectReadError::Failed(e.to_string())),
        };
        self.storage
            .effective_residency_policy(&record)
            .await
            .map_err(|e| ObjectReadError::Failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<ComputeSettings> {
        let file: crate::config::FileConfig = toml::from_str(text)?;
        file.compute
            .ok_or_else(|| anyhow::anyhow!("no [compute]"))?
            .resolve()
    }

    #[test]
    fn compute_section_defaults_and_bounds() -> anyhow::Result<()> {
        let c = parse("[compute]")?;
        assert_eq!(c.accelerator, nuage_compute::AccelMode::Auto);
        assert_eq!(c.stop_wait, Duration::from_secs(30));
        assert!(c.state_dir.is_none() && c.vcpus.is_none());
        let c = parse(
            "[compute]\naccelerator = \"tcg\"\nvcpus = 2\nmemory_mib = 1024\nstate_dir = \"/vm\"",
        )?;
        assert_eq!(c.accelerator, nuage_compute::AccelMode::Tcg);
        assert_eq!((c.vcpus, c.memory_mib), (Some(2), Some(1024)));
        assert_eq!(c.hosts, HostsMode::Local);
        assert_eq!(c.reboot_wait, Duration::from_secs(60));
        let c = parse(
            "[compute]\nssh_bind_address = \"0.0.0.0\"\nssh_advertise_address = \"192.0.2.7\"\n\
             ssh_port_range = [22000, 22999]\nreboot_wait_seconds = 5",
        )?;
        assert_eq!(c.ssh_bind_address, Some("0.0.0.0".parse()?));
        assert_eq!(c.ssh_advertise_address, Some("192.0.2.7".parse()?));
        assert_eq!(c.ssh_port_range, Some(22000..=22999));
        assert_eq!(c.reboot_wait, Duration::from_secs(5));
        let c = parse("[compute]\nhosts = \"topology\"\ncert = \"/c\"\nkey = \"/k\"\nca = \"/a\"")?;
        assert_eq!(c.hosts, HostsMode::Topology);
        for bad in [
            "[compute]\nvcpus = 0",
            "[compute]\nmemory_mib = 1",
            "[compute]\naccelerator = \"xen\"",
            "[compute]\nstop_wait_seconds = 0",
            "[compute]\nreboot_wait_seconds = 0",
            "[compute]\nssh_bind_address = \"::1\"",
            "[compute]\nssh_port_range = [2300, 2200]",
            "[compute]\nssh_port_range = [22, 30]",
            "[compute]\nhosts = \"topology\"\nssh_port_range = [2200, 2300]",
            "[compute]\navailability_zone = \"a b\"",
            "[compute]\ncores = 2",
            "[compute]\nhosts = \"everywhere\"",
            "[compute]\nhosts = \"topology\"\nvcpus = 2",
            "[compute]\nhosts = \"topology\"\nstop_wait_seconds = 20",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        Ok(())
    }
}
