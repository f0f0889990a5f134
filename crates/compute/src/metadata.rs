//! The instance metadata service: what a guest reads at 169.254.169.254.
//!
//! `InstanceMetadata` is what one instance is told about itself (id,
//! hostname, zone, type, SSH keys, user data). It is written once, at run,
//! to `metadata.json` in the instance's directory (mode 0600), and both the
//! config drive and this service are built from it, so they say the same.
//!
//! `MetadataServer` answers HTTP/1.x on a unix socket in the instance's
//! directory; QEMU forwards each guest connection to 169.254.169.254:80 to
//! it (`driver::netdev`). A socket file rather than a loopback port: only
//! the host's user can connect, so no other local user reads a tenant's user
//! data. The paths are those cloud-init's OpenStack and EC2 data sources read
//! (`answer`); everything is read-only and answered from memory. Every
//! connection is bounded: request head size, connections served at once,
//! time to send a head, and lifetime. Connections beyond those served wait
//! in the socket's backlog, each with its own `socat` process on the QEMU
//! side: those are bounded by the driver (socat's idle timeout, and QEMU's
//! open files, which cap how many it can start at once). Dropping the server stops it, closes its
//! connections and removes the socket. This module knows nothing of QEMU or
//! instance states.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::driver::GUEST_IPV4;
use crate::error::{ComputeError, Result};
use crate::image::ConfigDrive;
use crate::limits::{
    METADATA_CONNECTION_TIMEOUT_MS, METADATA_CONNECTIONS_MAX, METADATA_FILE_BYTES_MAX,
    METADATA_HEADER_READ_TIMEOUT_MS, METADATA_REQUEST_HEAD_BYTES_MAX,
};

/// What an instance is told about itself (config drive and metadata service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceMetadata {
    pub instance_id: String,
    pub hostname: String,
    pub availability_zone: String,
    pub instance_type: String,
    /// The host's image id (the content hash; the API layer's `ami-` id is
    /// not known to the host).
    pub image_id: String,
    pub mac: String,
    /// (key name, OpenSSH public key line)
    pub ssh_keys: Vec<(String, String)>,
    /// User data, base64 in the file.
    #[serde(default, with = "base64_bytes")]
    pub user_data: Option<Vec<u8>>,
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` hands us `&Option<T>`.
    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

/// The file in the instance directory.
pub const METADATA_FILE: &str = "metadata.json";
/// The socket QEMU forwards the guest's metadata connections to.
pub const METADATA_SOCKET: &str = "metadata.sock";

/// EC2 metadata versions listed at `/` and accepted in place of `latest`
/// (cloud-init asks for 2021-03-23, then 2009-04-04).
const EC2_VERSIONS: &[&str] = &[
    "1.0",
    "2007-01-19",
    "2009-04-04",
    "2011-01-01",
    "2016-09-02",
    "2021-03-23",
    "latest",
];
/// OpenStack metadata versions listed at `/openstack`.
const OPENSTACK_VERSIONS: &[&str] = &[
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
    "latest",
];

impl InstanceMetadata {
    /// The config drive's view of the same data.
    #[must_use]
    pub fn config_drive(&self) -> ConfigDrive<'_> {
        ConfigDrive {
            instance_id: &self.instance_id,
            hostname: &self.hostname,
            availability_zone: &self.availability_zone,
            ssh_keys: &self.ssh_keys,
            user_data: self.user_data.as_deref(),
            mac: &self.mac,
        }
    }

    /// Writes `metadata.json` (mode 0600: it holds the user data) through a
    /// temporary file and a rename.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self).map_err(|e| ComputeError::CorruptState {
            path: dir.join(METADATA_FILE),
            message: e.to_string(),
        })?;
        crate::state_file::write_atomic(dir, METADATA_FILE, &bytes)
    }

    /// Reads `metadata.json`; `None` if the instance has none (created
    /// before the metadata service existed).
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        crate::state_file::read_json(
            dir,
            METADATA_FILE,
            METADATA_FILE_BYTES_MAX,
            "metadata file too large",
        )
    }

    /// The answer to one request: status, content type, body. `path` is
    /// the URL's path (no query). GET and HEAD read; `PUT /latest/api/token`
    /// (IMDSv2) gets a token, which is then not required: every path here
    /// is the instance's own, readable from inside it only.
    #[must_use]
    pub fn answer(&self, method: &Method, path: &str) -> (StatusCode, &'static str, Bytes) {
        const TEXT: &str = "text/plain";
        const JSON: &str = "application/json";
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if method == Method::PUT {
            if segments.len() == 3
                && is_ec2_version(segments[0])
                && segments[1..] == ["api", "token"]
            {
                let token = hex::encode(rand::random::<[u8; 16]>());
                return (StatusCode::OK, TEXT, Bytes::from(token));
            }
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                Bytes::from_static(b"405 Method Not Allowed"),
            );
        }
        if method != Method::GET && method != Method::HEAD {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                Bytes::from_static(b"405 Method Not Allowed"),
            );
        }
        let text = |s: String| (StatusCode::OK, TEXT, Bytes::from(s));
        let json = |v: Value| (StatusCode::OK, JSON, Bytes::from(v.to_string()));
        let drive = self.config_drive();
        match segments.as_slice() {
            [] => text(EC2_VERSIONS.join("\n")),
            ["openstack"] => text(OPENSTACK_VERSIONS.join("\n")),
            ["openstack", version, rest @ ..] if OPENSTACK_VERSIONS.contains(version) => match rest
            {
                [] => {
                    let mut files = vec!["meta_data.json", "network_data.json"];
                    if self.user_data.is_some() {
                        files.push("user_data");
                    }
                    files.extend(["vendor_data.json", "vendor_data2.json"]);
                    text(files.join("\n"))
                }
                ["meta_data.json"] => json(drive.meta_data()),
                ["network_data.json"] => json(drive.network_data()),
                ["vendor_data.json" | "vendor_data2.json"] => json(json!({})),
                ["user_data"] => match &self.user_data {
                    Some(data) => (
                        StatusCode::OK,
                        "application/octet-stream",
                        Bytes::from(data.clone()),
                    ),
                    None => not_found(),
                },
                _ => not_found(),
            },
            [version, rest @ ..] if is_ec2_version(version) => match rest {
                [] => {
                    let mut entries = vec!["dynamic", "meta-data"];
                    if self.user_data.is_some() {
                        entries.push("user-data");
                    }
                    text(entries.join("\n"))
                }
                ["user-data"] => match &self.user_data {
                    Some(data) => (
                        StatusCode::OK,
                        "application/octet-stream",
                        Bytes::from(data.clone()),
                    ),
                    None => not_found(),
                },
                ["meta-data", key @ ..] => match self.ec2_meta_data(key) {
                    Some(value) => text(value),
                    None => not_found(),
                },
                ["dynamic"] => text("instance-identity/".into()),
                ["dynamic", "instance-identity"] => text("document".into()),
                ["dynamic", "instance-identity", "document"] => json(json!({
                    "instanceId": self.instance_id,
                    "instanceType": self.instance_type,
                    "imageId": self.image_id,
                    "availabilityZone": self.availability_zone,
                    "privateIp": GUEST_IPV4.to_string(),
                    "architecture": "x86_64",
                })),
                _ => not_found(),
            },
            _ => not_found(),
        }
    }

    /// EC2's `meta-data/` tree: a value, or a listing (directories end with `/`).
    fn ec2_meta_data(&self, key: &[&str]) -> Option<String> {
        let value = match key {
            [] => {
                let mut entries = vec![
                    "ami-id",
                    "ami-launch-index",
                    "hostname",
                    "instance-id",
                    "instance-type",
                    "local-hostname",
                    "local-ipv4",
                    "mac",
                    "placement/",
                ];
                if !self.ssh_keys.is_empty() {
                    entries.push("public-keys/");
                }
                entries.join("\n")
            }
            ["ami-id"] => self.image_id.clone(),
            ["ami-launch-index"] => "0".into(),
            ["hostname" | "local-hostname"] => self.hostname.clone(),
            ["instance-id"] => self.instance_id.clone(),
            ["instance-type"] => self.instance_type.clone(),
            ["local-ipv4"] => GUEST_IPV4.to_string(),
            ["mac"] => self.mac.clone(),
            ["placement"] => "availability-zone".into(),
            ["placement", "availability-zone"] => self.availability_zone.clone(),
            ["public-keys"] if !self.ssh_keys.is_empty() => self
                .ssh_keys
                .iter()
                .enumerate()
                .map(|(i, (name, _))| format!("{i}={name}"))
                .collect::<Vec<_>>()
                .join("\n"),
            ["public-keys", index, rest @ ..] => {
                let (_, key) = self.ssh_keys.get(index.parse::<usize>().ok()?)?;
                match rest {
                    [] => "openssh-key".into(),
                    ["openssh-key"] => key.clone(),
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(value)
    }
}

fn is_ec2_version(segment: &str) -> bool {
    EC2_VERSIONS.contains(&segment)
}

fn not_found() -> (StatusCode, &'static str, Bytes) {
    (
        StatusCode::NOT_FOUND,
        "text/plain",
        Bytes::from_static(b"404 Not Found"),
    )
}

/// One instance's metadata service. Dropping it stops the listener, closes
/// its connections and removes the socket file.
pub struct MetadataServer {
    socket: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl MetadataServer {
    /// Listens on `socket` (replacing a stale file there), mode 0600.
    pub fn start(socket: &Path, metadata: InstanceMetadata) -> Result<Self> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).map_err(ComputeError::io(socket))?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
            .map_err(ComputeError::io(socket))?;
        let task = tokio::spawn(serve(listener, Arc::new(metadata)));
        Ok(Self {
            socket: socket.to_path_buf(),
            task,
        })
    }

    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

/// Accepts while a connection slot is free; connections live in a `JoinSet`,
/// so aborting this task ends them too.
async fn serve(listener: UnixListener, metadata: Arc<InstanceMetadata>) {
    let slots = Arc::new(Semaphore::new(METADATA_CONNECTIONS_MAX));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!("metadata service: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metadata = metadata.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let (status, content_type, body) =
                        metadata.answer(request.method(), request.uri().path());
                    let response = Response::builder()
                        .status(status)
                        .header(hyper::header::CONTENT_TYPE, content_type)
                        .body(Full::new(body))
                        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
                    async move { Ok::<_, Infallible>(response) }
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .max_buf_size(METADATA_REQUEST_HEAD_BYTES_MAX)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_millis(METADATA_HEADER_READ_TIMEOUT_MS))
                // socat half-closes once the guest has sent its request
                // (busybox nc does); the answer must still go out.
                .half_close(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let lifetime = Duration::from_millis(METADATA_CONNECTION_TIMEOUT_MS);
            if let Ok(Err(e)) = tokio::time::timeout(lifetime, connection).await {
                tracing::debug!("metadata service: connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn metadata() -> InstanceMetadata {
        InstanceMetadata {
            instance_id: "i-0123456789abcdef0".into(),
            hostname: "web-1".into(),
            availability_zone: "eu-west-1a".into(),
            instance_type: "n1.nano".into(),
            image_id: "ab".repeat(32),
            mac: "52:54:00:01:02:03".into(),
            ssh_keys: vec![("laptop".into(), "ssh-ed25519 AAAA me@laptop".into())],
            user_data: Some(b"#cloud-config\n".to_vec()),
        }
    }

    fn get(m: &InstanceMetadata, path: &str) -> (StatusCode, String) {
        let (status, _, body) = m.answer(&Method::GET, path);
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn ec2_tree() {
        let m = metadata();
        let ok = |path: &str, want: &str| {
            assert_eq!(get(&m, path), (StatusCode::OK, want.into()), "{path}")
        };
        ok("/latest/meta-data/instance-id", "i-0123456789abcdef0");
        ok("/2009-04-04/meta-data/instance-id", "i-0123456789abcdef0");
        ok("/latest/meta-data/local-ipv4", "169.254.169.15");
        ok(
            "/latest/meta-data/placement/availability-zone",
            "eu-west-1a",
        );
        ok("/latest/meta-data/public-keys", "0=laptop");
        ok("/latest/meta-data/public-keys/0/", "openssh-key");
        ok(
            "/latest/meta-data/public-keys/0/openssh-key",
            "ssh-ed25519 AAAA me@laptop",
        );
        ok("/latest/user-data", "#cloud-config\n");
        let (_, listing) = get(&m, "/latest/meta-data/");
        assert!(listing.lines().any(|l| l == "placement/"), "{listing}");
        assert!(listing.lines().any(|l| l == "public-keys/"), "{listing}");
        assert!(get(&m, "/").1.lines().any(|l| l == "latest"));
        for missing in [
            "/latest/meta-data/public-keys/1/openssh-key",
            "/latest/meta-data/nope",
            "/1999-01-01/meta-data/instance-id",
            "/latest/meta-data/instance-id/x",
        ] {
            assert_eq!(get(&m, missing).0, StatusCode::NOT_FOUND, "{missing}");
        }
        let (status, _, token) = m.answer(&Method::PUT, "/latest/api/token");
        assert_eq!((status, token.len()), (StatusCode::OK, 32));
        assert_eq!(
            m.answer(&Method::POST, "/latest/meta-data/").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            m.answer(&Method::PUT, "/latest/user-data").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn openstack_tree_matches_the_config_drive() {
        let m = metadata();
        let (status, versions) = get(&m, "/openstack");
        assert_eq!(status, StatusCode::OK);
        assert!(versions.lines().any(|v| v == "2018-08-27") && versions.ends_with("latest"));
        let meta: Value =
            serde_json::from_str(&get(&m, "/openstack/latest/meta_data.json").1).unwrap();
        assert_eq!(meta, m.config_drive().meta_data());
        assert_eq!(meta["uuid"], "i-0123456789abcdef0");
        assert_eq!(meta["public_keys"]["laptop"], "ssh-ed25519 AAAA me@laptop");
        let net: Value =
            serde_json::from_str(&get(&m, "/openstack/2018-08-27/network_data.json").1).unwrap();
        assert_eq!(net, m.config_drive().network_data());
        assert_eq!(get(&m, "/openstack/latest/vendor_data.json").1, "{}");
        assert_eq!(get(&m, "/openstack/latest/user_data").1, "#cloud-config\n");
        assert!(
            get(&m, "/openstack/latest/")
                .1
                .lines()
                .any(|l| l == "user_data")
        );
        let none = InstanceMetadata {
            user_data: None,
            ssh_keys: Vec::new(),
            ..metadata()
        };
        assert_eq!(
            get(&none, "/openstack/latest/user_data").0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(get(&none, "/latest/user-data").0, StatusCode::NOT_FOUND);
        assert_eq!(
            get(&none, "/latest/meta-data/public-keys").0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&m, "/openstack/2000-01-01/meta_data.json").0,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_file_round_trips_with_binary_user_data() {
        let dir = tempfile::tempdir().unwrap();
        let m = InstanceMetadata {
            user_data: Some((0..=255u8).collect()),
            ..metadata()
        };
        m.write(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(METADATA_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(InstanceMetadata::read(dir.path()).unwrap(), Some(m));
        assert_eq!(
            InstanceMetadata::read(&dir.path().join("none")).unwrap(),
            None
        );
    }

    /// The largest metadata a run accepts (every key and the user data at
    /// their bounds, keys of control characters, which JSON escapes to six
    /// bytes each) is read back: the file's bound is not below it.
    #[test]
    fn the_largest_accepted_metadata_is_read_back() {
        use crate::limits::{SSH_KEY_BYTES_MAX, SSH_KEYS_PER_INSTANCE_MAX, USER_DATA_BYTES_MAX};
        let dir = tempfile::tempdir().unwrap();
        let m = InstanceMetadata {
            ssh_keys: (0..SSH_KEYS_PER_INSTANCE_MAX)
                .map(|i| {
                    (
                        format!("{i:0>255}").replace('0', "\u{1}"),
                        "\u{1}".repeat(SSH_KEY_BYTES_MAX),
                    )
                })
                .collect(),
            user_data: Some(vec![0xff; USER_DATA_BYTES_MAX]),
            hostname: "h".repeat(253),
            ..metadata()
        };
        m.write(dir.path()).unwrap();
        let size = std::fs::metadata(dir.path().join(METADATA_FILE))
            .unwrap()
            .len();
        assert!(size > 1024 * 1024, "{size}");
        assert_eq!(InstanceMetadata::read(dir.path()).unwrap(), Some(m));
    }
}
