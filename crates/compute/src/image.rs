//! Base images cached by content hash, qcow2 overlays, and config drives.
//!
//! An image is a disk (raw or qcow2, never with a backing file of its own)
//! plus, optionally, a kernel, initrd and command line to boot directly. Its
//! id is the SHA-256 of all of that, so the same bytes are cached once and a
//! cached file is never changed in place (written to a temporary name, then
//! renamed). Overlays and config drives belong to one instance and live in
//! its directory. This module runs `qemu-img` and `xorriso`/`genisoimage`;
//! it never starts a VM.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::driver::DirectKernel;
use crate::error::{ComputeError, Result};
use crate::limits::{IMAGE_COPY_CHUNK_BYTES, IMAGES_PER_HOST_MAX, TOOL_OUTPUT_BYTES_MAX};

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
    /// Held while a staged image is moved into place: two registrations of
    /// the same content must not remove or rename over each other's.
    publish: std::sync::Mutex<()>,
}

impl ImageCache {
    pub fn new(dir: PathBuf, qemu_img: PathBuf) -> Self {
        Self {
            dir,
            qemu_img,
            publish: std::sync::Mutex::new(()),
        }
    }

    /// Copies the source into the cache (once per content hash) and returns its record.
    pub async fn register(&self, source: &ImageSource) -> Result<Image> {
        let info = qemu_img_info(&self.qemu_img, &source.disk).await?;
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
                return Err(ComputeError::InvalidImage(format!(
                    "this host caches at most {IMAGES_PER_HOST_MAX} images"
                )));
            }
            let _ = std::fs::remove_dir_all(&final_dir);
            std::fs::rename(&tmp_dir, &final_dir).map_err(ComputeError::io(&final_dir))?;
        }
        self.get(&image.id)
    }

    pub fn get(&self, id: &str) -> Result<Image> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
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
            if entry.path().join("image.json").exists() {
                ids.push(name);
            }
        }
        Ok(ids)
    }
}

/// Copies every file into `tmp` while hashing, then writes `image.json`
/// with the paths it will have once `tmp` is renamed to its id (under
/// `dir`, the cache).
fn stage(dir: &Path, source: &ImageSource, tmp: &Path, format: &str, size: u64) -> Result<Image> {
    let mut hash = Sha256::new();
    let disk_name = format!("disk.{format}");
    copy_hashing(&source.disk, &tmp.join(&disk_name), &mut hash)?;
    if let Some(kernel) = &source.kernel {
        hash.update(b"\0kernel\0");
        copy_hashing(&kernel.kernel, &tmp.join("kernel"), &mut hash)?;
        if let Some(initrd) = &kernel.initrd {
            hash.update(b"\0initrd\0");
            copy_hashing(initrd, &tmp.join("initrd"), &mut hash)?;
        }
        hash.update(b"\0cmdline\0");
        hash.update(kernel.cmdline.as_bytes());
    }
    let id = hex::encode(hash.finalize());
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
    std::fs::write(&path, record).map_err(ComputeError::io(&path))?;
    Ok(image)
}

fn copy_hashing(from: &Path, to: &Path, hash: &mut Sha256) -> Result<()> {
    let mut input = std::fs::File::open(from).map_err(ComputeError::io(from))?;
    let mut output = std::fs::File::create(to).map_err(ComputeError::io(to))?;
    let mut buf = vec![0u8; IMAGE_COPY_CHUNK_BYTES];
    loop {
        let n = input.read(&mut buf).map_err(ComputeError::io(from))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(ComputeError::io(to))?;
    }
    output.sync_all().map_err(ComputeError::io(to))
}

async fn run_tool(program: &Path, args: &[&std::ffi::OsStr]) -> Result<Vec<u8>> {
    let output = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| ComputeError::Tool {
            tool: program.display().to_string(),
            message: e.to_string(),
        })?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let start = stderr.len().saturating_sub(TOOL_OUTPUT_BYTES_MAX);
    Err(ComputeError::Tool {
        tool: program.display().to_string(),
        message: format!(
            "{}: {}",
            output.status,
            stderr.get(start..).unwrap_or("").trim()
        ),
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

async fn qemu_img_info(qemu_img: &Path, disk: &Path) -> Result<serde_json::Value> {
    let out = run_tool(
        qemu_img,
        &["info".as_ref(), "--output=json".as_ref(), disk.as_os_str()],
    )
    .await?;
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
    .await
    .map(drop)
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
    let path = std::env::var_os("PATH")?;
    for name in ["xorriso", "genisoimage"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
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
    let public_keys: serde_json::Map<String, serde_json::Value> = drive
        .ssh_keys
        .iter()
        .map(|(n, k)| (n.clone(), json!(k)))
        .collect();
    let keys: Vec<_> = drive
        .ssh_keys
        .iter()
        .map(|(n, k)| json!({ "name": n, "type": "ssh", "data": k }))
        .collect();
    let meta_data = json!({
        "uuid": drive.instance_id,
        "name": drive.hostname,
        "hostname": drive.hostname,
        "availability_zone": drive.availability_zone,
        "launch_index": 0,
        "public_keys": public_keys,
        "keys": keys,
        "meta": {},
    });
    // A network_data.json without networks leaves the NIC down under cloud-init.
    let network_data = json!({
        "links": [{ "id": "eth0", "type": "phy", "ethernet_mac_address": drive.mac }],
        "networks": [{ "id": "net0", "type": "ipv4_dhcp", "link": "eth0" }],
        "services": [],
    });
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
    result.map(drop)
}
