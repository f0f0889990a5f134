//! Base images cached by content hash, qcow2 overlays, and config drives.
//!
//! An image is a disk (raw or qcow2, never with a backing file of its own)
//! plus, optionally, a kernel, initrd and command line to boot directly. Its
//! id is a SHA-256 over all of that ([`content_id`]: each part framed, so
//! that parts cannot pass for one another), so the same bytes are cached once and a
//! cached file is never changed in place (written to a temporary name, then
//! renamed). Overlays and config drives belong to one instance and live in
//! its directory. This module runs `qemu-img` and `xorriso`/`genisoimage`;
//! it never starts a VM.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::driver::DirectKernel;
use crate::error::{ComputeError, Result};
use crate::limits::{
    IMAGE_COPY_CHUNK_BYTES, IMAGES_PER_HOST_MAX, QEMU_IMG_INFO_ADDRESS_SPACE_BYTES,
    QEMU_IMG_INFO_CPU_SECONDS, QEMU_IMG_INFO_TIMEOUT_MS, TOOL_OUTPUT_BYTES_MAX,
    TOOL_STDOUT_BYTES_MAX, TOOL_TIMEOUT_MS,
};

/// What to register as an image.
#[derive(Debug, Clone)]
pub struct ImageSource {
    pub disk: PathBuf,
    pub kernel: Option<DirectKernel>,
}

/// A cached image, as recorded in `images/<id>/image.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Image {
    /// Hex SHA-256 over the disk, kernel, initrd and command line.
    pub id: String,
    pub disk: PathBuf,
    /// `raw` or `qcow2`.
    pub format: String,
    pub virtual_size_bytes: u64,
    pub kernel: Option<DirectKernel>,
}

pub struct ImageCache {
    dir: PathBuf,
    qemu_img: PathBuf,
    /// `prlimit` (util-linux) if on `PATH`: `qemu-img info` runs under it.
    prlimit: Option<PathBuf>,
    /// Held while a staged image is moved into place: two registrations of
    /// the same content must not remove or rename over each other's.
    publish: std::sync::Mutex<()>,
}

impl ImageCache {
    pub fn new(dir: PathBuf, qemu_img: PathBuf) -> Self {
        let prlimit = find_on_path("prlimit");
        if prlimit.is_none() {
            tracing::warn!(
                "compute: prlimit is not on PATH; qemu-img info runs without memory and CPU limits"
            );
        }
        Self {
            dir,
            qemu_img,
            prlimit,
            publish: std::sync::Mutex::new(()),
        }
    }

    /// Removes what registrations that never finished left (`tmp-*`
    /// staging directories: a crash, or a registration whose task was
    /// dropped). Only while nothing registers: at the host's open.
    pub fn remove_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten().take(IMAGES_PER_HOST_MAX * 4) {
            if entry.file_name().to_string_lossy().starts_with("tmp-") {
                let path = entry.path();
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => tracing::warn!(
                        "compute: removed {}, left by an unfinished image registration",
                        path.display()
                    ),
                    Err(e) => tracing::warn!("compute: cannot remove {}: {e}", path.display()),
                }
            }
        }
    }

    /// Copies the source into the cache (once per content hash) and returns
    /// its record. With `expected`, content whose id differs is refused
    /// (`InvalidImage`) before the cache keeps it.
    pub async fn register(&self, source: &ImageSource, expected: Option<&str>) -> Result<Image> {
        let info = qemu_img_info(&self.qemu_img, self.prlimit.as_deref(), &source.disk).await?;
        let format = info
            .get("format")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        if format != "raw" && format != "qcow2" {
            return Err(ComputeError::InvalidImage(format!(
                "format {format:?}: only raw and qcow2"
            )));
        }
        check_self_contained(&info)?;
        let virtual_size_bytes = info
            .get("virtual-size")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);

        let tmp_dir = self.dir.join(format!("tmp-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&tmp_dir).map_err(ComputeError::io(&tmp_dir))?;
        // A tenant's image: the host's user alone reads it (files are 0600).
        std::fs::set_permissions(&tmp_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(ComputeError::io(&tmp_dir))?;
        // Copying and hashing gigabytes is blocking work: off the runtime.
        let result = {
            let (dir, source, tmp, format) = (
                self.dir.clone(),
                source.clone(),
                tmp_dir.clone(),
                format.clone(),
            );
            tokio::task::spawn_blocking(move || {
                stage(&dir, &source, &tmp, &format, virtual_size_bytes)
            })
            .await
            .map_err(|e| ComputeError::InvalidImage(format!("staging the image failed: {e}")))?
        };
        let image = match result {
            Ok(image) => image,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp_dir);
                return Err(e);
            }
        };
        if let Some(expected) = expected
            && expected != image.id
        {
            let _ = std::fs::remove_dir_all(&tmp_dir);
            return Err(ComputeError::InvalidImage(format!(
                "the image's content hashes to {}, not to the registered {expected}: its \
                 objects changed since it was registered",
                image.id
            )));
        }
        let final_dir = self.dir.join(&image.id);
        let _publishing = self
            .publish
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if final_dir.join("image.json").exists() {
            let _ = std::fs::remove_dir_all(&tmp_dir);
        } else {
            if self.list()?.len() >= IMAGES_PER_HOST_MAX {
                let _ = std::fs::remove_dir_all(&tmp_dir);
                return Err(ComputeError::CacheFull {
                    max: IMAGES_PER_HOST_MAX,
                });
            }
            let _ = std::fs::remove_dir_all(&final_dir);
            std::fs::rename(&tmp_dir, &final_dir).map_err(ComputeError::io(&final_dir))?;
        }
        self.get(&image.id)
    }

    pub fn get(&self, id: &str) -> Result<Image> {
        if !is_image_id(id) {
            return Err(ComputeError::ImageNotFound(id.to_string()));
        }
        let path = self.dir.join(id).join("image.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ComputeError::ImageNotFound(id.to_string()));
            }
            Err(e) => return Err(ComputeError::Io { path, source: e }),
        };
        serde_json::from_slice(&bytes).map_err(|e| ComputeError::CorruptState {
            path,
            message: e.to_string(),
        })
    }

    pub fn list(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
            Err(e) => {
                return Err(ComputeError::Io {
                    path: self.dir.clone(),
                    source: e,
                });
            }
        };
        for entry in entries.flatten().take(IMAGES_PER_HOST_MAX * 4) {
            let name = entry.file_name().to_string_lossy().to_string();
            // Staging directories (`tmp-*`, the one being published among
            // them) hold an `image.json` too: they are not cached images.
            if is_image_id(&name) && entry.path().join("image.json").exists() {
                ids.push(name);
            }
        }
        Ok(ids)
    }
}

/// An image id: 64 lower-case hex digits (what `content_id` gives).
fn is_image_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The length and SHA-256 of one part of an image (disk, kernel, initrd,
/// command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartDigest {
    len: u64,
    sha256: [u8; 32],
}

impl PartDigest {
    pub(crate) fn of_bytes(bytes: &[u8]) -> Self {
        Self {
            len: bytes.len() as u64,
            sha256: Sha256::digest(bytes).into(),
        }
    }

    /// Reads `input` to its end, handing each chunk to `sink` too.
    pub(crate) fn of_reader(
        mut input: impl Read,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<Self> {
        let mut hash = Sha256::new();
        let mut len = 0u64;
        let mut buf = vec![0u8; IMAGE_COPY_CHUNK_BYTES];
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                return Ok(Self {
                    len,
                    sha256: hash.finalize().into(),
                });
            }
            hash.update(&buf[..n]);
            sink(&buf[..n])?;
            len += n as u64;
        }
    }
}

/// The first bytes hashed into every image id: a new formula gets a new tag.
const CONTENT_ID_VERSION: &[u8] = b"nuage-image-v2\0";

/// An image's id, the one formula both the cache and the gateway use: the
/// hex SHA-256 of [`CONTENT_ID_VERSION`], then per part present, in the
/// order disk, kernel, initrd, command line, one fixed-size record: a tag
/// byte (`d`, `k`, `i`, `c`), the part's length (u64 big-endian) and its
/// SHA-256. Fixed-size records cannot run into one another, so no crafted
/// disk can hash like a disk plus a kernel (the id's earlier formula joined
/// the parts' bytes with `\0kernel\0`-style separators, which a disk could
/// contain).
pub(crate) fn content_id(
    disk: &PartDigest,
    kernel: Option<(&PartDigest, Option<&PartDigest>, &str)>,
) -> String {
    let mut hash = Sha256::new();
    hash.update(CONTENT_ID_VERSION);
    let mut part = |tag: u8, digest: &PartDigest| {
        hash.update([tag]);
        hash.update(digest.len.to_be_bytes());
        hash.update(digest.sha256);
    };
    part(b'd', disk);
    if let Some((kernel, initrd, cmdline)) = kernel {
        part(b'k', kernel);
        if let Some(initrd) = initrd {
            part(b'i', initrd);
        }
        part(b'c', &PartDigest::of_bytes(cmdline.as_bytes()));
    }
    hex::encode(hash.finalize())
}

/// Copies every file into `tmp` while hashing, then writes `image.json`
/// with the paths it will have once `tmp` is renamed to its id (under
/// `dir`, the cache).
fn stage(dir: &Path, source: &ImageSource, tmp: &Path, format: &str, size: u64) -> Result<Image> {
    let disk_name = format!("disk.{format}");
    let disk = copy_hashing(&source.disk, &tmp.join(&disk_name))?;
    let id = match &source.kernel {
        None => content_id(&disk, None),
        Some(kernel) => {
            let kernel_digest = copy_hashing(&kernel.kernel, &tmp.join("kernel"))?;
            let initrd = match &kernel.initrd {
                Some(initrd) => Some(copy_hashing(initrd, &tmp.join("initrd"))?),
                None => None,
            };
            content_id(
                &disk,
                Some((&kernel_digest, initrd.as_ref(), &kernel.cmdline)),
            )
        }
    };
    let final_dir = dir.join(&id);
    let image = Image {
        id,
        disk: final_dir.join(&disk_name),
        format: format.to_string(),
        virtual_size_bytes: size,
        kernel: source.kernel.as_ref().map(|k| DirectKernel {
            kernel: final_dir.join("kernel"),
            initrd: k.initrd.as_ref().map(|_| final_dir.join("initrd")),
            cmdline: k.cmdline.clone(),
        }),
    };
    let record =
        serde_json::to_vec_pretty(&image).map_err(|e| ComputeError::InvalidImage(e.to_string()))?;
    let path = tmp.join("image.json");
    private_file(&path)
        .and_then(|mut file| file.write_all(&record).map_err(ComputeError::io(&path)))?;
    Ok(image)
}

/// A new file only the host's user can read or write (mode 0600, whatever the umask).
fn private_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(ComputeError::io(path))
}

fn copy_hashing(from: &Path, to: &Path) -> Result<PartDigest> {
    let input = std::fs::File::open(from).map_err(ComputeError::io(from))?;
    let mut output = private_file(to)?;
    // A failed write is reported against `to`, a failed read against `from`.
    let mut write_error = None;
    let digest = PartDigest::of_reader(input, |chunk| {
        output.write_all(chunk).map_err(|e| {
            let kind = e.kind();
            write_error = Some(e);
            std::io::Error::from(kind)
        })
    });
    if let Some(e) = write_error {
        return Err(ComputeError::Io {
            path: to.to_path_buf(),
            source: e,
        });
    }
    let digest = digest.map_err(ComputeError::io(from))?;
    output.sync_all().map_err(ComputeError::io(to))?;
    Ok(digest)
}

async fn run_tool(program: &Path, args: &[&std::ffi::OsStr]) -> Result<Vec<u8>> {
    run_tool_bounded(program, args, Duration::from_millis(TOOL_TIMEOUT_MS)).await
}

/// Runs a helper to completion within `timeout` (killed otherwise), keeping
/// at most `TOOL_STDOUT_BYTES_MAX` of its standard output (more is an
/// error) and the last `TOOL_OUTPUT_BYTES_MAX` of its standard error.
async fn run_tool_bounded(
    program: &Path,
    args: &[&std::ffi::OsStr],
    timeout: Duration,
) -> Result<Vec<u8>> {
    let tool = || program.display().to_string();
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ComputeError::Tool {
            tool: tool(),
            message: e.to_string(),
        })?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(ComputeError::Tool {
            tool: tool(),
            message: "no pipes".into(),
        });
    };
    let limit = u64::try_from(TOOL_STDOUT_BYTES_MAX).unwrap_or(u64::MAX);
    let read_stdout = async {
        let mut out = Vec::new();
        let read = stdout.take(limit + 1).read_to_end(&mut out).await;
        read.map(|_| out)
    };
    let read_stderr = async {
        // Drained in chunks, keeping only the tail.
        let mut tail = Vec::new();
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > TOOL_OUTPUT_BYTES_MAX {
                tail.drain(..tail.len() - TOOL_OUTPUT_BYTES_MAX);
            }
        }
        tail
    };
    let finished = tokio::time::timeout(timeout, async {
        let (out, err) = tokio::join!(read_stdout, read_stderr);
        (out, err)
    })
    .await;
    let Ok((out, err)) = finished else {
        let _ = child.kill().await;
        return Err(ComputeError::Tool {
            tool: tool(),
            message: format!("did not finish within {} s", timeout.as_secs()),
        });
    };
    let out = out.map_err(|e| ComputeError::Tool {
        tool: tool(),
        message: e.to_string(),
    })?;
    if out.len() > TOOL_STDOUT_BYTES_MAX {
        let _ = child.kill().await;
        return Err(ComputeError::Tool {
            tool: tool(),
            message: format!("more than {TOOL_STDOUT_BYTES_MAX} bytes of output"),
        });
    }
    let status = child.wait().await.map_err(|e| ComputeError::Tool {
        tool: tool(),
        message: e.to_string(),
    })?;
    if status.success() {
        return Ok(out);
    }
    Err(ComputeError::Tool {
        tool: tool(),
        message: format!("{status}: {}", String::from_utf8_lossy(&err).trim()),
    })
}

/// Refuses an image that names any file but itself: a backing file, a
/// qcow2 external data file, or any child node but its own `file`. QEMU
/// would open such a file on the host when the image boots (or is
/// converted), so a tenant's image could read another tenant's data or the
/// server's own files.
fn check_self_contained(info: &serde_json::Value) -> Result<()> {
    for key in [
        "backing-filename",
        "full-backing-filename",
        "backing-filename-format",
    ] {
        if info.get(key).is_some() {
            return Err(ComputeError::InvalidImage(
                "an image may not have a backing file".into(),
            ));
        }
    }
    let data = info.get("format-specific").and_then(|f| f.get("data"));
    if data.is_some_and(|d| d.get("data-file").is_some() || d.get("data-file-raw").is_some()) {
        return Err(ComputeError::InvalidImage(
            "an image may not have an external data file".into(),
        ));
    }
    let children = info
        .get("children")
        .and_then(serde_json::Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if let Some(other) = children
        .iter()
        .find(|c| c.get("name").and_then(serde_json::Value::as_str) != Some("file"))
    {
        return Err(ComputeError::InvalidImage(format!(
            "an image may consist of its own file only (it also names {})",
            other.get("name").unwrap_or(&serde_json::Value::Null)
        )));
    }
    Ok(())
}

/// `qemu-img info --output=json DISK`, under `prlimit --as --cpu` when there
/// is one (the limits OpenStack sets): the image is the tenant's, and a
/// crafted one could make qemu-img allocate or loop without end.
async fn qemu_img_info(
    qemu_img: &Path,
    prlimit: Option<&Path>,
    disk: &Path,
) -> Result<serde_json::Value> {
    let address_space = format!("--as={QEMU_IMG_INFO_ADDRESS_SPACE_BYTES}");
    let cpu = format!("--cpu={QEMU_IMG_INFO_CPU_SECONDS}");
    let info_args: [&std::ffi::OsStr; 3] =
        ["info".as_ref(), "--output=json".as_ref(), disk.as_os_str()];
    let timeout = Duration::from_millis(QEMU_IMG_INFO_TIMEOUT_MS);
    let out = match prlimit {
        Some(prlimit) => {
            let mut args: Vec<&std::ffi::OsStr> = vec![
                address_space.as_ref(),
                cpu.as_ref(),
                "--".as_ref(),
                qemu_img.as_os_str(),
            ];
            args.extend(info_args);
            run_tool_bounded(prlimit, &args, timeout).await?
        }
        None => run_tool_bounded(qemu_img, &info_args, timeout).await?,
    };
    serde_json::from_slice(&out).map_err(|e| ComputeError::Tool {
        tool: "qemu-img info".into(),
        message: format!("unparsable output: {e}"),
    })
}

/// `qemu-img create -f qcow2 -b BASE -F FMT OVERLAY SIZE`.
pub async fn create_overlay(
    qemu_img: &Path,
    base: &Image,
    overlay: &Path,
    size_bytes: u64,
) -> Result<()> {
    if base.virtual_size_bytes > size_bytes {
        return Err(ComputeError::InvalidParameter(format!(
            "image virtual size {} bytes exceeds the instance type's root disk of {size_bytes} bytes",
            base.virtual_size_bytes
        )));
    }
    let size = size_bytes.to_string();
    run_tool(
        qemu_img,
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            base.disk.as_os_str(),
            "-F".as_ref(),
            base.format.as_ref(),
            overlay.as_os_str(),
            size.as_ref(),
        ],
    )
    .await?;
    make_private(overlay)
}

/// What goes on the config drive.
#[derive(Debug, Clone)]
pub struct ConfigDrive<'a> {
    pub instance_id: &'a str,
    pub hostname: &'a str,
    pub availability_zone: &'a str,
    /// (name, OpenSSH public key)
    pub ssh_keys: &'a [(String, String)],
    pub user_data: Option<&'a [u8]>,
    pub mac: &'a str,
}

/// Finds xorriso, else genisoimage, on `PATH`.
pub fn find_iso_builder() -> Option<PathBuf> {
    ["xorriso", "genisoimage"]
        .into_iter()
        .find_map(find_on_path)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

impl ConfigDrive<'_> {
    /// `openstack/latest/meta_data.json` (also served by the metadata service).
    #[must_use]
    pub fn meta_data(&self) -> serde_json::Value {
        let public_keys: serde_json::Map<String, serde_json::Value> = self
            .ssh_keys
            .iter()
            .map(|(n, k)| (n.clone(), json!(k)))
            .collect();
        let keys: Vec<_> = self
            .ssh_keys
            .iter()
            .map(|(n, k)| json!({ "name": n, "type": "ssh", "data": k }))
            .collect();
        json!({
            "uuid": self.instance_id,
            "name": self.hostname,
            "hostname": self.hostname,
            "availability_zone": self.availability_zone,
            "launch_index": 0,
            "public_keys": public_keys,
            "keys": keys,
            "meta": {},
        })
    }

    /// `openstack/latest/network_data.json`: a network_data.json without
    /// networks leaves the NIC down under cloud-init, so DHCP on the one NIC.
    #[must_use]
    pub fn network_data(&self) -> serde_json::Value {
        json!({
            "links": [{ "id": "eth0", "type": "phy", "ethernet_mac_address": self.mac }],
            "networks": [{ "id": "net0", "type": "ipv4_dhcp", "link": "eth0" }],
            "services": [],
        })
    }
}

/// Writes an ISO 9660 volume labelled `config-2` with
/// `openstack/latest/{meta_data.json,user_data,network_data.json}`.
pub async fn build_config_drive(
    iso_builder: &Path,
    drive: &ConfigDrive<'_>,
    output: &Path,
) -> Result<()> {
    let staging = output.with_extension("staging");
    let _ = std::fs::remove_dir_all(&staging);
    let latest = staging.join("openstack").join("latest");
    std::fs::create_dir_all(&latest).map_err(ComputeError::io(&latest))?;
    let meta_data = drive.meta_data();
    let network_data = drive.network_data();
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = latest.join(name);
        std::fs::write(&path, bytes).map_err(ComputeError::io(&path))
    };
    write("meta_data.json", meta_data.to_string().as_bytes())?;
    write("network_data.json", network_data.to_string().as_bytes())?;
    if let Some(user_data) = drive.user_data {
        write("user_data", user_data)?;
    }
    let is_xorriso = iso_builder.file_name().is_some_and(|n| n == "xorriso");
    let os = std::ffi::OsStr::new;
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    if is_xorriso {
        args.extend([os("-as"), os("mkisofs")]);
    }
    args.extend([
        os("-quiet"),
        os("-V"),
        os("config-2"),
        os("-J"),
        os("-R"),
        os("-o"),
        output.as_os_str(),
        staging.as_os_str(),
    ]);
    let result = run_tool(iso_builder, &args).await;
    let _ = std::fs::remove_dir_all(&staging);
    result?;
    // It holds the user data.
    make_private(output)
}

/// Mode 0600 on a file a tool created (with the umask's mode).
fn make_private(path: &Path) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(ComputeError::io(path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_cache_and_the_gateway_compute_the_same_id() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let source = ImageSource {
            disk: file("disk", &[1u8; 3000]),
            kernel: Some(DirectKernel {
                kernel: file("kernel", b"k"),
                initrd: Some(file("initrd", b"i")),
                cmdline: "console=ttyS0".into(),
            }),
        };
        let tmp = dir.path().join("tmp-1");
        std::fs::create_dir_all(&tmp).unwrap();
        let image = stage(dir.path(), &source, &tmp, "raw", 3000).unwrap();
        assert_eq!(image.id, crate::api::image_content_id(&source).unwrap());
        assert_eq!(
            std::fs::read(tmp.join("disk.raw")).unwrap(),
            vec![1u8; 3000]
        );
    }

    #[tokio::test]
    async fn qemu_img_info_runs_under_prlimit() {
        let Some(prlimit) = find_on_path("prlimit") else {
            eprintln!("SKIPPED: no prlimit");
            return;
        };
        // A stand-in for qemu-img that reports the limits it runs under.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("qemu-img");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho \"{\\\"format\\\":\\\"raw\\\",\\\"as_kib\\\":$(ulimit -v),\\\"cpu_s\\\":$(ulimit -t)}\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let info = qemu_img_info(&fake, Some(&prlimit), Path::new("/dev/null"))
            .await
            .unwrap();
        assert_eq!(info["as_kib"], QEMU_IMG_INFO_ADDRESS_SPACE_BYTES / 1024);
        assert_eq!(info["cpu_s"], QEMU_IMG_INFO_CPU_SECONDS);
    }

    #[tokio::test]
    async fn helper_commands_are_bounded() {
        let sh = Path::new("/bin/sh");
        let endless = run_tool_bounded(
            sh,
            &["-c".as_ref(), "yes".as_ref()],
            Duration::from_secs(60),
        )
        .await;
        assert!(
            matches!(&endless, Err(ComputeError::Tool { message, .. }) if message.contains("more than")),
            "{endless:?}"
        );
        let slow = run_tool_bounded(
            sh,
            &["-c".as_ref(), "exec sleep 30".as_ref()],
            Duration::from_millis(200),
        )
        .await;
        assert!(
            matches!(&slow, Err(ComputeError::Tool { message, .. }) if message.contains("did not finish")),
            "{slow:?}"
        );
        let failed = run_tool_bounded(
            sh,
            &["-c".as_ref(), "echo why >&2; exit 3".as_ref()],
            Duration::from_secs(60),
        )
        .await;
        assert!(
            matches!(&failed, Err(ComputeError::Tool { message, .. }) if message.ends_with("why")),
            "{failed:?}"
        );
    }
}
