//! `[compute]`: the EC2 API (`nuage-ec2-api`) over a compute host on this
//! machine (`nuage-compute`). This module reads the section, opens the host
//! (recovering what a previous process left) and gives the API an
//! [`ObjectReader`] that reads image objects through the storage service as
//! the caller, with `s3:GetObject` decided exactly as an S3 GET decides it
//! (identity policies, the bucket's policy, Block Public Access).
//!
//! Scheduling across several hosts (`nuage serve --role compute`, residency)
//! is not built: one server, one host.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use nuage_ec2_api::{Ec2Api, Ec2Settings, ObjectReadError, ObjectReader, RequestContext};
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
        if let Some(zone) = &self.availability_zone
            && (zone.is_empty()
                || zone.len() > 64
                || !zone.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            anyhow::bail!("compute.availability_zone must be 1 to 64 letters, digits or dashes");
        }
        Ok(ComputeSettings {
            state_dir: self.state_dir,
            accelerator: self.accelerator.unwrap_or_default(),
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            availability_zone: self.availability_zone,
            stop_wait: Duration::from_secs(stop_wait_s),
            site: self.site,
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

/// Opens the compute host and builds the EC2 front end (the server's
/// services it is wired to, one argument each, as `server.rs` has them).
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
) -> anyhow::Result<Ec2Api> {
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
    let state_dir = settings
        .state_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("compute"));
    let capacity = nuage_compute::HostCapacity {
        vcpus: settings.vcpus.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
        }),
        memory_mib: settings.memory_mib.unwrap_or_else(default_memory_mib),
    };
    let availability_zone = settings
        .availability_zone
        .clone()
        .unwrap_or_else(|| format!("{region}a"));
    let mut host_config = nuage_compute::HostConfig::new(state_dir.join("host"), capacity);
    host_config.accel = settings.accelerator;
    host_config.availability_zone = availability_zone.clone();
    host_config.stop_wait = settings.stop_wait;
    let (host, report) = nuage_compute::ComputeHost::open(host_config)
        .await
        .with_context(|| format!("cannot open the compute host in {}", state_dir.display()))?;
    for (id, description) in &report.changed {
        tracing::warn!(instance = %id, state = %description, "instance changed while the server was down");
    }
    let decision = host.accelerator();
    println!(
        "nuage: EC2 API enabled: compute host with {} vCPUs and {} MiB in {availability_zone} (site {}, {}), accelerator {} ({})",
        capacity.vcpus,
        capacity.memory_mib,
        host_site.id,
        host_site.country,
        decision.accelerator,
        decision.reason
    );
    // Staged image objects from an interrupted registration are garbage.
    let staging_dir = state_dir.join("staging");
    if staging_dir.exists() {
        std::fs::remove_dir_all(&staging_dir)
            .with_context(|| format!("cannot clear {}", staging_dir.display()))?;
    }
    std::fs::create_dir_all(&staging_dir)
        .with_context(|| format!("cannot create {}", staging_dir.display()))?;
    let objects = Arc::new(StorageObjects {
        storage,
        iam: iam.clone(),
    });
    Ok(Ec2Api::new(
        Arc::new(host),
        docs,
        iam,
        clock,
        objects,
        Ec2Settings {
            region: region.to_owned(),
            availability_zone,
            staging_dir,
            host_site,
        },
    ))
}

/// Image objects read through the storage service as the caller.
struct StorageObjects {
    storage: Storage,
    iam: Iam,
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
        // The same decision as an S3 GET: the bucket's owner and policy,
        // with RestrictPublicBuckets. A bucket that does not exist is judged
        // like one the caller cannot read, so its absence is not revealed.
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
        for bad in [
            "[compute]\nvcpus = 0",
            "[compute]\nmemory_mib = 1",
            "[compute]\naccelerator = \"xen\"",
            "[compute]\nstop_wait_seconds = 0",
            "[compute]\navailability_zone = \"a b\"",
            "[compute]\ncores = 2",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        Ok(())
    }
}
