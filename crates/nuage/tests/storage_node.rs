//! A storage node run as the real binary: the PKI made with `nuage cluster`,
//! `nuage serve --role storage`, a `NodeClient` from this test over mutual
//! TLS; a 256 MiB blob streamed both ways (throughput and the node's peak RSS
//! printed), then `kill -9` in the middle of a write and a restart.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures::TryStreamExt as _;
use nuage_node::tls::TlsMaterial;
use nuage_node::{NodeClient, NodeClientConfig, NodeError, NodeIdentity, Role};
use nuage_testsupport::data::pattern;
use sha2::{Digest as _, Sha256};
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;
/// A generous bound on a start, not a sleep.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn nuage() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nuage"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{cmd:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running `nuage serve --role storage`; killed on drop.
struct Node {
    child: Child,
    endpoint: String,
}

impl Node {
    fn start(config: &Path) -> Self {
        let mut child = nuage()
            .args(["serve", "--role", "storage", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(addr) = line.strip_prefix("nuage storage node listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let endpoint = rx
            .recv_timeout(START_TIMEOUT)
            .expect("the storage node did not start");
        Self { child, endpoint }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to clean anything up.
    fn kill_hard(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// A line of `/proc/<pid>/status`, in KiB.
    fn status_kib(&self, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Generates `total` bytes on the fly in 1 MiB chunks.
fn chunks(seed: u64, total: u64) -> impl futures::Stream<Item = Bytes> + Unpin {
    let mut offset = 0u64;
    futures::stream::iter(std::iter::from_fn(move || {
        if offset == total {
            return None;
        }
        let len = MIB.min(total - offset);
        let chunk = Bytes::from(pattern(seed, offset, len as usize));
        offset += len;
        Some(chunk)
    }))
}

fn client(node: &Node, certs: &Path) -> NodeClient {
    let tls = TlsMaterial::load(
        &certs.join("cert.pem"),
        &certs.join("key.pem"),
        &certs.join("ca.pem"),
    )
    .unwrap();
    let expected = NodeIdentity::new("node-1", "fr-par", Role::Storage).unwrap();
    NodeClient::new(NodeClientConfig::new(node.endpoint.clone(), expected, tls)).unwrap()
}

/// Reads a whole blob, returning its SHA-256 and checking its bytes.
async fn read_and_check(client: &NodeClient, id: &str, seed: u64, len: u64) -> String {
    let mut stream = client.read(id, 0, len, false);
    let mut hasher = Sha256::new();
    let mut seen = 0u64;
    while let Some(chunk) = stream.try_next().await.unwrap() {
        // Every 8th MiB checked byte for byte; the digest covers the rest.
        if seen.is_multiple_of(8 * MIB) {
            assert_eq!(
                chunk.as_ref(),
                pattern(seed, seen, chunk.len()),
                "at {seen}"
            );
        }
        seen += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(seen, len);
    hex::encode(hasher.finalize())
}

fn tmp_files(data: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data.join("tmp"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_node_binary_streams_survives_kill_9_and_refuses_strangers() {
    let root = tempfile::tempdir().unwrap();
    let ca = root.path().join("ca");
    let node_certs = root.path().join("node-1");
    let gateway_certs = root.path().join("gw-1");
    let data = root.path().join("data");

    // The PKI, through the CLI.
    run_ok(nuage().args(["cluster", "ca", "init", "--dir"]).arg(&ca));
    let mode = std::fs::metadata(ca.join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the CA key is private");
    let again = run_err(nuage().args(["cluster", "ca", "init", "--dir"]).arg(&ca));
    assert!(again.contains("already holds a CA"), "{again}");
    run_ok(
        nuage()
            .args(["cluster", "cert", "issue", "--ca-dir"])
            .arg(&ca)
            .args(["--node", "node-1", "--site", "fr-par", "--role", "storage"])
            .args(["--san", "127.0.0.1", "--san", "localhost", "--out"])
            .arg(&node_certs),
    );
    run_ok(
        nuage()
            .args(["cluster", "cert", "issue", "--ca-dir"])
            .arg(&ca)
            .args([
                "--node", "gw-1", "--site", "fr-par", "--role", "gateway", "--out",
            ])
            .arg(&gateway_certs),
    );
    let no_san = run_err(
        nuage()
            .args(["cluster", "cert", "issue", "--ca-dir"])
            .arg(&ca)
            .args([
                "--node", "n2", "--site", "fr-par", "--role", "storage", "--out",
            ])
            .arg(root.path().join("n2")),
    );
    assert!(no_san.contains("--san"), "{no_san}");
    let bad_site = run_err(
        nuage()
            .args(["cluster", "cert", "issue", "--ca-dir"])
            .arg(&ca)
            .args([
                "--node", "n2", "--site", "FR PAR", "--role", "gateway", "--out",
            ])
            .arg(root.path().join("n2")),
    );
    assert!(bad_site.contains("site id"), "{bad_site}");

    let config = root.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[node]\nid = \"node-1\"\nsite = \"fr-par\"\nlisten = \"127.0.0.1:0\"\n\
             cert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\nreserve_bytes = {}\n",
            data.display(),
            node_certs.join("cert.pem").display(),
            node_certs.join("key.pem").display(),
            node_certs.join("ca.pem").display(),
            64 * MIB
        ),
    )
    .unwrap();
    // A node whose configured site is not its certificate's refuses to start.
    let wrong = root.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("site = \"fr-par\"", "site = \"de-fra\""),
    )
    .unwrap();
    let refused = run_err(
        nuage()
            .args(["serve", "--role", "storage", "--config"])
            .arg(&wrong),
    );
    assert!(
        refused.contains("nuage://fr-par/storage/node-1"),
        "{refused}"
    );

    let node = Node::start(&config);
    let gateway = client(&node, &gateway_certs);
    let baseline_kib = node.status_kib("VmRSS:");

    // 256 MiB streamed in, generated on the fly, then streamed back.
    let total = 256 * MIB;
    let big = format!("{:032x}", 0xb16u64);
    let started = Instant::now();
    let receipt = gateway
        .write_stream(&big, None, chunks(11, total))
        .await
        .unwrap();
    let write_s = started.elapsed().as_secs_f64();
    assert_eq!(receipt.length, total);
    let peak_kib = node.status_kib("VmHWM:");
    let started = Instant::now();
    assert_eq!(
        read_and_check(&gateway, &big, 11, total).await,
        receipt.sha256
    );
    let read_s = started.elapsed().as_secs_f64();
    let mib = (total / MIB) as f64;
    eprintln!(
        "storage node, 256 MiB over loopback mTLS (debug build of the test client): \
         write {:.1} MiB/s ({write_s:.2} s), read {:.1} MiB/s ({read_s:.2} s); \
         node RSS {baseline_kib} KiB before, peak {peak_kib} KiB after the write",
        mib / write_s,
        mib / read_s
    );
    // A sanity bound, far below the blob: a node that held it whole fails.
    assert!(
        peak_kib < 160 * 1024,
        "the node's peak RSS {peak_kib} KiB suggests the blob was buffered"
    );

    // A small acknowledged blob, then a write killed in the middle.
    let small = format!("{:032x}", 0x5a11u64);
    let small_receipt = gateway
        .write_stream(&small, Some(3 * MIB), chunks(12, 3 * MIB))
        .await
        .unwrap();
    let partial = format!("{:032x}", 0xdeadu64);
    let mut writer = gateway.create(&partial, None).unwrap();
    let mut offset = 0;
    // Enough that the node has a partial file on disk.
    while offset < 32 * MIB {
        writer
            .write(Bytes::from(pattern(13, offset, MIB as usize)))
            .await
            .unwrap();
        offset += MIB;
    }
    let deadline = Instant::now() + START_TIMEOUT;
    while tmp_files(&data).is_empty() {
        assert!(Instant::now() < deadline, "no partial file appeared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.kill_hard();
    let mut failed = None;
    for _ in 0..64 {
        if let Err(e) = writer
            .write(Bytes::from(pattern(13, offset, MIB as usize)))
            .await
        {
            failed = Some(e);
            break;
        }
        offset += MIB;
    }
    let failure = match failed {
        Some(e) => e,
        None => writer.finish().await.unwrap_err(),
    };
    assert!(
        matches!(
            failure,
            NodeError::Transport(_) | NodeError::Protocol(_) | NodeError::Timeout(_)
        ),
        "{failure:?}"
    );
    assert!(
        !tmp_files(&data).is_empty(),
        "the partial file outlived the kill"
    );

    // After a restart: the partial file is gone, the acknowledged blobs list
    // and read back, the interrupted one does not exist.
    let node = Node::start(&config);
    let gateway = client(&node, &gateway_certs);
    assert!(tmp_files(&data).is_empty(), "{:?}", tmp_files(&data));
    let page = gateway.list(None, 100).await.unwrap();
    let mut listed: Vec<&str> = page.blobs.iter().map(|b| b.blob_id.as_str()).collect();
    listed.sort_unstable();
    let mut expected = vec![big.as_str(), small.as_str()];
    expected.sort_unstable();
    assert_eq!(listed, expected);
    assert!(matches!(
        gateway.stat(&partial).await,
        Err(NodeError::NotFound(_))
    ));
    assert_eq!(
        read_and_check(&gateway, &small, 12, 3 * MIB).await,
        small_receipt.sha256
    );
    assert_eq!(
        read_and_check(&gateway, &big, 11, total).await,
        receipt.sha256
    );
    let status = gateway.status().await.unwrap();
    assert_eq!(status.blob_count, 2);

    // The node is reached only as itself: a client expecting another site
    // is refused by its own check.
    let tls = TlsMaterial::load(
        &gateway_certs.join("cert.pem"),
        &gateway_certs.join("key.pem"),
        &gateway_certs.join("ca.pem"),
    )
    .unwrap();
    let elsewhere = NodeClient::new(NodeClientConfig::new(
        node.endpoint.clone(),
        NodeIdentity::new("node-1", "us-east", Role::Storage).unwrap(),
        tls,
    ))
    .unwrap();
    assert!(matches!(
        elsewhere.status().await,
        Err(NodeError::PeerIdentity(_))
    ));
}
