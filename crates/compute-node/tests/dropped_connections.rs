//! A gateway that goes away mid-request (its timeout, a restart, a network
//! reset) must not leave the host half-way: a run whose connection closed
//! right after the request was written still ends `running`, with its QEMU
//! recorded and its capacity counted; a push whose connection closed
//! mid-body leaves no upload behind. Real mutual TLS (a raw tokio-rustls
//! client with a gateway's certificate), a real `ComputeHost` booting the
//! tiny guest under QEMU/TCG (`scripts/compute/build-tiny-guest.sh`).
//!
//! Under `CI=true` a missing QEMU or a guest that cannot be built fails the
//! tests; elsewhere they print why and skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nuage_compute::{
    AccelMode, ComputeHost, DirectKernel, HostApi, HostCapacity, HostConfig, ImageSource,
    InstanceState, LocalHost, RunSpec,
};
use nuage_compute_node::{
    ComputeNodeServer, ComputeNodeServerConfig, RemoteHost, RemoteHostConfig,
};
use nuage_node::pki::CertificateAuthority;
use nuage_node::tls::TlsMaterial;
use nuage_node::{NodeIdentity, Role};
use nuage_testsupport::guest::{QemuReaper, TinyGuest, qemu_under, tiny_guest};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncWriteExt as _;

/// The tiny guest, built once per test binary.
fn guest() -> Option<&'static TinyGuest> {
    tiny_guest(
        &PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compute-node-tiny-guest"),
        &["xorriso"],
    )
}

fn material(ca: &CertificateAuthority, node: &str, role: Role) -> TlsMaterial {
    let identity = NodeIdentity::new(node, "par1", role).unwrap();
    let issued = ca.issue(&identity, &["127.0.0.1".to_owned()], 1).unwrap();
    TlsMaterial {
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
        ca_pem: ca.cert_pem().to_owned(),
    }
}

/// A TLS connection to the host with a gateway's certificate, outside any
/// HTTP client: the test decides when the socket closes.
async fn raw_gateway_connection(
    gateway: &TlsMaterial,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(gateway.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(gateway.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(gateway.key_pem.as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    host_dir: PathBuf,
    uploads: PathBuf,
    gateway_tls: TlsMaterial,
    server: ComputeNodeServer,
    gateway: RemoteHost,
    image_id: String,
}

async fn fixture(guest: &TinyGuest) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate("test").unwrap();
    let host_dir = dir.path().join("host");
    let mut config = HostConfig::new(
        host_dir.clone(),
        HostCapacity {
            vcpus: 2,
            memory_mib: 512,
        },
    );
    config.accel = AccelMode::Tcg;
    config.stop_wait = Duration::from_secs(5);
    let (host, _) = ComputeHost::open(config).await.unwrap();
    let host = Arc::new(LocalHost::new(Arc::new(host)));
    let disk = dir.path().join("base.raw");
    std::fs::write(&disk, vec![0u8; 16 * 1024 * 1024]).unwrap();
    let image_id = host
        .register_image(
            &ImageSource {
                disk,
                kernel: Some(DirectKernel {
                    kernel: guest.kernel(),
                    initrd: Some(guest.initrd()),
                    cmdline: guest.cmdline.clone(),
                }),
            },
            None,
        )
        .await
        .unwrap();
    let uploads = dir.path().join("uploads");
    let server = ComputeNodeServer::start(ComputeNodeServerConfig {
        tls: material(&ca, "fr-1", Role::Compute),
        listen: "127.0.0.1:0".parse().unwrap(),
        host,
        uploads_dir: uploads.clone(),
        availability_zone: "par1".into(),
    })
    .await
    .unwrap();
    let gateway_tls = material(&ca, "gw-1", Role::Gateway);
    let gateway = RemoteHost::new(RemoteHostConfig {
        endpoint: server.local_addr().to_string(),
        expected: NodeIdentity::new("fr-1", "par1", Role::Compute).unwrap(),
        tls: gateway_tls.clone(),
    })
    .unwrap();
    Fixture {
        host_dir,
        uploads,
        gateway_tls,
        server,
        gateway,
        image_id,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_connection_closes_still_ends_running_and_recorded() {
    let Some(guest) = guest() else { return };
    let f = fixture(guest).await;
    let instances_dir = f.host_dir.join("instances").canonicalize().unwrap();
    let _reaper = QemuReaper::under(&[&instances_dir]);

    // The request, written whole; then the socket closes at once.
    drop(send_run(&f).await);
    let first = wait_running(&f, 1).await;

    // Another, whose socket closes while the host is starting it.
    let tls = send_run(&f).await;
    let mut pending = false;
    for _ in 0..1200 {
        let records = f.gateway.list().await.unwrap();
        if records.iter().any(|r| r.state == InstanceState::Pending) {
            pending = true;
            break;
        }
        if records.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(tls);
    if !pending {
        eprintln!("the second run was not seen pending: its connection closed after it ran");
    }
    let records = wait_running(&f, 2).await;
    assert!(records.iter().any(|r| r.id == first[0].id));

    // Capacity counts them, and the only QEMUs are the ones recorded.
    let status = f.gateway.status().await.unwrap();
    let held: u32 = records
        .iter()
        .filter(|r| r.state.holds_capacity())
        .map(|r| r.vcpus)
        .sum();
    assert_eq!((status.used_vcpus, held), (2, 2));
    let mut recorded: Vec<u32> = records
        .iter()
        .map(|r| r.pid.expect("a running instance records its QEMU"))
        .collect();
    recorded.sort_unstable();
    let mut found = qemu_under(&instances_dir);
    found.sort_unstable();
    assert_eq!(found, recorded);

    // Terminated, nothing runs any more.
    for record in &records {
        let gone = f.gateway.terminate(&record.id).await.unwrap();
        assert_eq!(gone.state, InstanceState::Terminated);
    }
    assert_eq!(qemu_under(&instances_dir), Vec::<u32>::new());
    assert_eq!(f.gateway.status().await.unwrap().used_vcpus, 0);
    f.server.shutdown().await;
}

/// Writes a run request (the whole of it, at once) on a connection of its
/// own and returns the connection, unread.
async fn send_run(f: &Fixture) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let body = serde_json::to_vec(&RunSpec {
        instance_type: "n1.nano".into(),
        image_id: f.image_id.clone(),
        ..RunSpec::default()
    })
    .unwrap();
    let mut tls = raw_gateway_connection(&f.gateway_tls, f.server.local_addr()).await;
    let head = format!(
        "POST /v1/instances HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(&[head.as_bytes(), &body].concat())
        .await
        .unwrap();
    tls.flush().await.unwrap();
    tls
}

/// Polls (bounded) until the host has `count` instances, all running:
/// none may stay `pending`.
async fn wait_running(f: &Fixture, count: usize) -> Vec<nuage_compute::InstanceRecord> {
    let mut last = Vec::new();
    for _ in 0..1200 {
        last = f.gateway.list().await.unwrap();
        if last.len() == count && last.iter().all(|r| r.state == InstanceState::Running) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the runs never all ended running: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_whose_connection_closes_leaves_no_upload() {
    let Some(guest) = guest() else { return };
    let f = fixture(guest).await;

    // A push that declares 1 GiB, sends 1 MiB, and goes away.
    let mut tls = raw_gateway_connection(&f.gateway_tls, f.server.local_addr()).await;
    let head = format!(
        "PUT /v1/images/{} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-nuage-image-parts: \
         {{\"disk_bytes\":1073741824}}\r\ncontent-length: 1073741824\r\n\r\n",
        "a".repeat(64)
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&vec![0u8; 1024 * 1024]).await.unwrap();
    tls.flush().await.unwrap();
    // The upload directory exists while the body arrives...
    let mut seen = false;
    for _ in 0..600 {
        if std::fs::read_dir(&f.uploads).unwrap().next().is_some() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the push never reached the host");
    drop(tls);
    // ...and is gone once the connection is (bounded poll).
    let mut left = Vec::new();
    for _ in 0..600 {
        left = std::fs::read_dir(&f.uploads)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left.is_empty(), "left behind: {left:?}");
    let images_left: Vec<_> = std::fs::read_dir(f.host_dir.join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("tmp-"))
        .collect();
    assert!(images_left.is_empty(), "{images_left:?}");
    assert!(f.gateway.has_image(&f.image_id).await.unwrap());
    f.server.shutdown().await;
}
