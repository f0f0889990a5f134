//! "A compute host" as the EC2 front end sees it: the [`HostApi`] trait, its
//! in-process implementation [`LocalHost`] over a [`ComputeHost`], and the
//! types the host protocol (`nuage-compute-node`) carries: [`HostError`]
//! (a [`ComputeError`] reduced to its kind and text, so that
//! `InsufficientInstanceCapacity`, `IncorrectInstanceState` ... reach the
//! EC2 client unchanged whichever side of the wire the host is on),
//! [`HostStatus`] and [`RunSpec`].
//!
//! It also knows how an image's content id is computed
//! ([`image_content_id`]), so that a gateway can check that the bytes it is
//! about to push to a host are the ones registered, before they leave it.
//!
//! This module never starts a VM itself and does no I/O but reading image
//! files to hash them: everything goes through `ComputeHost`'s public API.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::ComputeError;
use crate::host::{ComputeHost, InstanceRecord, RunRequest};
use crate::image::{ImageSource, PartDigest, content_id};

/// What kind of failure a host call met: the variants of [`ComputeError`]
/// that callers tell apart, plus what only a remote host can cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostErrorKind {
    InsufficientInstanceCapacity,
    InstanceLimitExceeded,
    InvalidInstanceType,
    InstanceNotFound,
    ImageNotFound,
    InvalidImage,
    IncorrectInstanceState,
    InvalidParameter,
    /// Anything else on the host (a tool, the hypervisor, I/O).
    Internal,
    /// The host could not be reached or did not answer in time.
    Unreachable,
    /// The request never reached the host (connection refused, connect
    /// timeout, TLS handshake failed, the host's identity refused): nothing
    /// was done there. Wire-only, like `Unreachable`.
    NotSent,
    /// The host refused the caller (not a gateway) or the request's shape.
    Refused,
    /// The host cannot take this now (e.g. every image push slot is in
    /// use); the same call may work later or on another host.
    Busy,
    /// The host's image cache is full.
    CacheFull,
}

/// A failed host call. For `InvalidInstanceType`, `InstanceNotFound` and
/// `ImageNotFound` the message is the type or id named; for `InvalidImage`
/// and `InvalidParameter`, the reason; otherwise the error's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct HostError {
    pub kind: HostErrorKind,
    pub message: String,
}

impl HostError {
    #[must_use]
    pub fn new(kind: HostErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    #[must_use]
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(HostErrorKind::Unreachable, message)
    }
}

impl From<ComputeError> for HostError {
    fn from(error: ComputeError) -> Self {
        use HostErrorKind as K;
        match error {
            e @ ComputeError::InsufficientInstanceCapacity { .. } => {
                Self::new(K::InsufficientInstanceCapacity, e.to_string())
            }
            e @ ComputeError::InstanceLimitExceeded { .. } => {
                Self::new(K::InstanceLimitExceeded, e.to_string())
            }
            ComputeError::InvalidInstanceType(t) => Self::new(K::InvalidInstanceType, t),
            ComputeError::InstanceNotFound(id) => Self::new(K::InstanceNotFound, id),
            ComputeError::ImageNotFound(id) => Self::new(K::ImageNotFound, id),
            ComputeError::InvalidImage(m) => Self::new(K::InvalidImage, m),
            e @ ComputeError::CacheFull { .. } => Self::new(K::CacheFull, e.to_string()),
            e @ ComputeError::IncorrectInstanceState { .. } => {
                Self::new(K::IncorrectInstanceState, e.to_string())
            }
            ComputeError::InvalidParameter(m) => Self::new(K::InvalidParameter, m),
            e => Self::new(K::Internal, e.to_string()),
        }
    }
}

/// A host's capacity and what is held of it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub used_vcpus: u32,
    pub used_memory_mib: u64,
    /// The zone the host writes into its instances' records.
    pub availability_zone: String,
    /// `kvm` or `tcg`.
    pub accelerator: String,
}

impl HostStatus {
    /// vCPUs and MiB still free.
    #[must_use]
    pub fn free(&self) -> (u32, u64) {
        (
            self.vcpus.saturating_sub(self.used_vcpus),
            self.memory_mib.saturating_sub(self.used_memory_mib),
        )
    }
}

/// A [`RunRequest`] on the wire (user data in base64).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    pub instance_type: String,
    pub image_id: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub ssh_keys: Vec<(String, String)>,
    /// Base64.
    #[serde(default)]
    pub user_data: Option<String>,
    /// See [`RunRequest::instance_id`].
    #[serde(default)]
    pub instance_id: Option<String>,
    /// See [`RunRequest::availability_zone`].
    #[serde(default)]
    pub availability_zone: Option<String>,
}

impl RunSpec {
    #[must_use]
    pub fn from_request(request: &RunRequest) -> Self {
        Self {
            instance_type: request.instance_type.clone(),
            image_id: request.image_id.clone(),
            hostname: request.hostname.clone(),
            ssh_keys: request.ssh_keys.clone(),
            user_data: request
                .user_data
                .as_ref()
                .map(|d| base64::engine::general_purpose::STANDARD.encode(d)),
            instance_id: request.instance_id.clone(),
            availability_zone: request.availability_zone.clone(),
        }
    }

    /// # Errors
    /// `InvalidParameter` when the user data is not base64.
    pub fn into_request(self) -> Result<RunRequest, HostError> {
        let user_data = match self.user_data {
            None => None,
            Some(text) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| {
                        HostError::new(HostErrorKind::InvalidParameter, "user data is not base64")
                    })?,
            ),
        };
        Ok(RunRequest {
            instance_type: self.instance_type,
            image_id: self.image_id,
            hostname: self.hostname,
            ssh_keys: self.ssh_keys,
            user_data,
            instance_id: self.instance_id,
            availability_zone: self.availability_zone,
        })
    }
}

/// One compute host, in process or across the network.
#[async_trait::async_trait]
pub trait HostApi: Send + Sync + 'static {
    async fn status(&self) -> Result<HostStatus, HostError>;
    /// Whether the host's image cache holds `image_id`.
    async fn has_image(&self, image_id: &str) -> Result<bool, HostError>;
    /// Registers an image from files on this machine (checked with
    /// `qemu-img` by the host, as `ComputeHost::register_image` does);
    /// with `expected`, refuses (`InvalidImage`) content whose id differs.
    /// Returns the image id.
    async fn register_image(
        &self,
        source: &ImageSource,
        expected: Option<&str>,
    ) -> Result<String, HostError>;
    async fn run(&self, request: RunRequest) -> Result<InstanceRecord, HostError>;
    async fn start(&self, id: &str) -> Result<InstanceRecord, HostError>;
    async fn stop(&self, id: &str) -> Result<InstanceRecord, HostError>;
    async fn reboot(&self, id: &str) -> Result<InstanceRecord, HostError>;
    async fn terminate(&self, id: &str) -> Result<InstanceRecord, HostError>;
    async fn describe(&self, id: &str) -> Result<InstanceRecord, HostError>;
    async fn list(&self) -> Result<Vec<InstanceRecord>, HostError>;
    async fn console_output(&self, id: &str) -> Result<String, HostError>;
}

/// A [`ComputeHost`] in this process.
pub struct LocalHost {
    host: Arc<ComputeHost>,
}

impl LocalHost {
    #[must_use]
    pub fn new(host: Arc<ComputeHost>) -> Self {
        Self { host }
    }

    #[must_use]
    pub fn host(&self) -> &ComputeHost {
        &self.host
    }
}

#[async_trait::async_trait]
impl HostApi for LocalHost {
    async fn status(&self) -> Result<HostStatus, HostError> {
        let capacity = self.host.capacity();
        let used = self.host.used();
        Ok(HostStatus {
            vcpus: capacity.vcpus,
            memory_mib: capacity.memory_mib,
            used_vcpus: used.vcpus,
            used_memory_mib: used.memory_mib,
            availability_zone: String::new(),
            accelerator: self.host.accelerator().accelerator.to_string(),
        })
    }

    async fn has_image(&self, image_id: &str) -> Result<bool, HostError> {
        match self.host.image(image_id) {
            Ok(_) => Ok(true),
            Err(ComputeError::ImageNotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn register_image(
        &self,
        source: &ImageSource,
        expected: Option<&str>,
    ) -> Result<String, HostError> {
        Ok(self
            .host
            .register_image_expecting(source, expected)
            .await?
            .id)
    }

    async fn run(&self, request: RunRequest) -> Result<InstanceRecord, HostError> {
        Ok(self.host.run(request).await?)
    }

    async fn start(&self, id: &str) -> Result<InstanceRecord, HostError> {
        Ok(self.host.start(id).await?)
    }

    async fn stop(&self, id: &str) -> Result<InstanceRecord, HostError> {
        Ok(self.host.stop(id).await?)
    }

    async fn reboot(&self, id: &str) -> Result<InstanceRecord, HostError> {
        Ok(self.host.reboot(id).await?)
    }

    async fn terminate(&self, id: &str) -> Result<InstanceRecord, HostError> {
        Ok(self.host.terminate(id).await?)
    }

    async fn describe(&self, id: &str) -> Result<InstanceRecord, HostError> {
        Ok(self.host.describe(id)?)
    }

    async fn list(&self) -> Result<Vec<InstanceRecord>, HostError> {
        Ok(self.host.list())
    }

    async fn console_output(&self, id: &str) -> Result<String, HostError> {
        Ok(self.host.console_output(id)?)
    }
}

/// The id `ComputeHost::register_image` gives these files (the cache's
/// own formula, `image::content_id`: a version tag, then per part a tag,
/// its length and its SHA-256). Blocking: reads every byte.
///
/// # Errors
/// A file that cannot be read.
pub fn image_content_id(source: &ImageSource) -> std::io::Result<String> {
    let digest = |path: &Path| PartDigest::of_reader(std::fs::File::open(path)?, |_| Ok(()));
    let disk = digest(&source.disk)?;
    Ok(match &source.kernel {
        None => content_id(&disk, None),
        Some(kernel) => {
            let kernel_digest = digest(&kernel.kernel)?;
            let initrd = match &kernel.initrd {
                Some(initrd) => Some(digest(initrd)?),
                None => None,
            };
            content_id(
                &disk,
                Some((&kernel_digest, initrd.as_ref(), &kernel.cmdline)),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn errors_keep_their_kind_and_the_names_callers_quote() {
        let e: HostError = ComputeError::InstanceNotFound("i-1".into()).into();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (HostErrorKind::InstanceNotFound, "i-1")
        );
        let e: HostError = ComputeError::InsufficientInstanceCapacity {
            requested: "1 vCPU".into(),
            available: "0 vCPU".into(),
        }
        .into();
        assert_eq!(e.kind, HostErrorKind::InsufficientInstanceCapacity);
        assert!(e.message.contains("0 vCPU"));
        let round: HostError = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(round, e);
    }

    /// The id's earlier formula: the parts' bytes joined with separators.
    /// Kernel, initrd, command line.
    type Boot<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8]);

    fn legacy_id(disk: &[u8], kernel: Option<Boot<'_>>) -> String {
        use sha2::{Digest as _, Sha256};
        let mut hash = Sha256::new();
        hash.update(disk);
        if let Some((kernel, initrd, cmdline)) = kernel {
            hash.update(b"\0kernel\0");
            hash.update(kernel);
            if let Some(initrd) = initrd {
                hash.update(b"\0initrd\0");
                hash.update(initrd);
            }
            hash.update(b"\0cmdline\0");
            hash.update(cmdline);
        }
        hex::encode(hash.finalize())
    }

    #[test]
    fn parts_cannot_pass_for_one_another() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let (d, k, i, c) = (
            &b"DISK"[..],
            &b"KERNEL"[..],
            &b"INITRD"[..],
            "console=ttyS0",
        );
        let boot = |disk: PathBuf, kernel: PathBuf, initrd: Option<PathBuf>| ImageSource {
            disk,
            kernel: Some(crate::DirectKernel {
                kernel,
                initrd,
                cmdline: c.into(),
            }),
        };

        // A disk-only image whose disk is D, "\0kernel\0", K, "\0cmdline\0", C...
        let crafted_disk = [d, b"\0kernel\0", k, b"\0cmdline\0", c.as_bytes()].concat();
        // ...hashed like the direct-boot image (D, K, C) under the old formula,
        assert_eq!(
            legacy_id(&crafted_disk, None),
            legacy_id(d, Some((k, None, c.as_bytes())))
        );
        // and no longer.
        let crafted = ImageSource {
            disk: file("crafted-disk", &crafted_disk),
            kernel: None,
        };
        let direct = boot(file("d", d), file("k", k), None);
        assert_ne!(
            image_content_id(&crafted).unwrap(),
            image_content_id(&direct).unwrap()
        );

        // A kernel K, "\0initrd\0", I without an initrd against (D, K, I, C).
        let crafted_kernel = [k, b"\0initrd\0", i].concat();
        assert_eq!(
            legacy_id(d, Some((&crafted_kernel, None, c.as_bytes()))),
            legacy_id(d, Some((k, Some(i), c.as_bytes())))
        );
        let crafted = boot(file("d", d), file("crafted-kernel", &crafted_kernel), None);
        let direct = boot(file("d", d), file("k", k), Some(file("i", i)));
        assert_ne!(
            image_content_id(&crafted).unwrap(),
            image_content_id(&direct).unwrap()
        );

        // An empty initrd is still an initrd.
        let empty = boot(file("d", d), file("k", k), Some(file("empty", b"")));
        let none = boot(file("d", d), file("k", k), None);
        assert_ne!(
            image_content_id(&empty).unwrap(),
            image_content_id(&none).unwrap()
        );
    }

    #[test]
    fn run_specs_carry_user_data_in_base64() {
        let request = RunRequest {
            instance_type: "n1.nano".into(),
            image_id: "ab".into(),
            user_data: Some(vec![0, 1, 255]),
            ..RunRequest::default()
        };
        let spec = RunSpec::from_request(&request);
        assert_eq!(spec.user_data.as_deref(), Some("AAH/"));
        assert_eq!(
            spec.into_request().unwrap().user_data,
            Some(vec![0, 1, 255])
        );
        // The fields a newer gateway adds travel too; an older one's JSON
        // (without them) still parses.
        let chosen = RunRequest {
            instance_id: Some("i-0123456789abcdef0".into()),
            availability_zone: Some("de-fra-1a".into()),
            ..RunRequest::default()
        };
        let spec = RunSpec::from_request(&chosen);
        let round: RunSpec = serde_json::from_slice(&serde_json::to_vec(&spec).unwrap()).unwrap();
        let back = round.into_request().unwrap();
        assert_eq!(back.instance_id.as_deref(), Some("i-0123456789abcdef0"));
        assert_eq!(back.availability_zone.as_deref(), Some("de-fra-1a"));
        let old: RunSpec =
            serde_json::from_str(r#"{"instance_type":"n1.nano","image_id":"ab"}"#).unwrap();
        assert_eq!((old.instance_id, old.availability_zone), (None, None));
        let bad = RunSpec {
            user_data: Some("!".into()),
            ..RunSpec::default()
        };
        assert_eq!(
            bad.into_request().unwrap_err().kind,
            HostErrorKind::InvalidParameter
        );
    }
}
