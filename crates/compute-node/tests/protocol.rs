//! The compute host protocol's refusals, over real mutual TLS and a real
//! `ComputeHost` (QEMU's tools, TCG; no VM is started): only a gateway's
//! certificate is served (the host itself refuses a stranger CA's
//! certificate, or none); a client refuses a host whose certificate names
//! another host; bad ids, unknown instances and images whose bytes do not
//! hash to the id they were pushed under come back as the `ComputeError`
//! kinds the EC2 front end maps; a fifth push at once is `Busy`, one into
//! a full cache `CacheFull`.
//!
//! Under `CI=true` missing QEMU tools fail the test; elsewhere it prints why
//! and skips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use nuage_compute::{HostApi, HostErrorKind, ImageSource};
use nuage_compute_node::{
    ComputeNodeServer, ComputeNodeServerConfig, RemoteHost, RemoteHostConfig,
};
use nuage_node::pki::CertificateAuthority;
use nuage_node::tls::TlsMaterial;
use nuage_node::{NodeIdentity, Role};

fn tools_present() -> bool {
    let missing: Vec<&str> = ["qemu-system-x86_64", "qemu-img", "xorriso"]
        .into_iter()
        .filter(|tool| {
            !std::process::Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "the compute host protocol test cannot run under CI: {missing:?} missing"
    );
    eprintln!("SKIPPED: {missing:?} not installed (scripts/install-test-deps.sh)");
    false
}

/// A TLS connection trusting `ca`, with `client`'s certificate or none.
async fn raw_connect(
    ca: &CertificateAuthority,
    client: Option<&TlsMaterial>,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(material) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(material.cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(material.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
}

/// Sends `request` over TLS trusting `ca`, with `client`'s certificate or
/// none, and reads until the host closes.
async fn raw_exchange(
    ca: &CertificateAuthority,
    client: Option<&TlsMaterial>,
    addr: std::net::SocketAddr,
    request: &[u8],
) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tls = raw_connect(ca, client, addr).await?;
    tls.write_all(request).await?;
    tls.flush().await?;
    let mut answer = Vec::new();
    // Bounded: the host answers one request (or refuses) and closes.
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tls.read_to_end(&mut answer),
    )
    .await
    .map_err(|_| std::io::Error::other("no answer in 30 s"))??;
    Ok(answer)
}

fn material(ca: &CertificateAuthority, node: &str, site: &str, role: Role) -> TlsMaterial {
    let identity = NodeIdentity::new(node, site, role).unwrap();
    let issued = ca.issue(&identity, &["127.0.0.1".to_owned()], 1).unwrap();
    TlsMaterial {
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
        ca_pem: ca.cert_pem().to_owned(),
    }
}

#[tokio::test]
async fn only_gateways_are_served_and_refusals_keep_their_kind() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate("test").unwrap();
    let host_dir = dir.path().join("host");
    let mut config = nuage_compute::HostConfig::new(
        host_dir.clone(),
        nuage_compute::HostCapacity {
            vcpus: 1,
            memory_mib: 256,
        },
    );
    config.accel = nuage_compute::AccelMode::Tcg;
    let (host, _) = nuage_compute::ComputeHost::open(config).await.unwrap();
    let host = Arc::new(nuage_compute::LocalHost::new(Arc::new(host)));
    let local = Arc::clone(&host);

    // A host must present a compute host's certificate.
    let wrong = ComputeNodeServer::start(ComputeNodeServerConfig {
        tls: material(&ca, "gw-1", "par1", Role::Gateway),
        listen: "127.0.0.1:0".parse().unwrap(),
        host: Arc::clone(&host),
        uploads_dir: dir.path().join("uploads"),
        availability_zone: "par1".into(),
    })
    .await;
    assert!(
        wrong
            .err()
            .unwrap()
            .to_string()
            .contains("not a compute host"),
        "a gateway certificate cannot serve as a host"
    );
    let server = ComputeNodeServer::start(ComputeNodeServerConfig {
        tls: material(&ca, "fr-1", "par1", Role::Compute),
        listen: "127.0.0.1:0".parse().unwrap(),
        host,
        uploads_dir: dir.path().join("uploads"),
        availability_zone: "par1".into(),
    })
    .await
    .unwrap();
    let endpoint = server.local_addr().to_string();
    let expected = NodeIdentity::new("fr-1", "par1", Role::Compute).unwrap();
    let client = |tls: TlsMaterial, expected: &NodeIdentity| {
        RemoteHost::new(RemoteHostConfig {
            endpoint: endpoint.clone(),
            expected: expected.clone(),
            tls,
        })
        .unwrap()
    };

    // A gateway is served.
    let gateway = client(material(&ca, "gw-1", "par1", Role::Gateway), &expected);
    let status = gateway.status().await.unwrap();
    assert_eq!((status.vcpus, status.memory_mib), (1, 256));
    assert_eq!(
        (status.used_vcpus, status.availability_zone.as_str()),
        (0, "par1")
    );

    // A storage node's and another compute host's certificates are not.
    for (node, role) in [("st-1", Role::Storage), ("de-1", Role::Compute)] {
        let other = client(material(&ca, node, "par1", role), &expected);
        let e = other.status().await.unwrap_err();
        assert_eq!(e.kind, HostErrorKind::Refused, "{e}");
        assert!(e.message.contains("only gateways"), "{e}");
        let e = other.list().await.unwrap_err();
        assert_eq!(e.kind, HostErrorKind::Refused, "{e}");
    }
    // A gateway certificate from another CA does not get through the
    // handshake: the client trusts the host (the cluster CA is its `ca`),
    // so it is the host that must refuse the certificate.
    let stranger = CertificateAuthority::generate("other").unwrap();
    let strangers = TlsMaterial {
        ca_pem: ca.cert_pem().to_owned(),
        ..material(&stranger, "gw-1", "par1", Role::Gateway)
    };
    // The host never read the request: `NotSent`, so that a run may go to
    // another host.
    let e = client(strangers, &expected).status().await.unwrap_err();
    assert_eq!(e.kind, HostErrorKind::NotSent, "{e}");
    assert!(!e.message.contains("refused its identity"), "{e}");
    assert!(e.message.contains("alert"), "{e}");
    // Nor does a client that presents no certificate at all.
    let e = raw_exchange(
        &ca,
        None,
        server.local_addr(),
        b"GET /v1/status HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("alert"), "{e}");
    // (The same raw client with a gateway's certificate is served.)
    let gateway_tls = material(&ca, "gw-1", "par1", Role::Gateway);
    let answer = raw_exchange(
        &ca,
        Some(&gateway_tls),
        server.local_addr(),
        b"GET /v1/status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // The gateway refuses a host whose certificate names another host.
    let elsewhere = NodeIdentity::new("fr-1", "fra1", Role::Compute).unwrap();
    let e = client(material(&ca, "gw-1", "par1", Role::Gateway), &elsewhere)
        .status()
        .await
        .unwrap_err();
    assert_eq!(e.kind, HostErrorKind::NotSent);
    assert!(e.message.contains("refused its identity"), "{e}");
    // Nothing listening: not sent either.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_address = closed.local_addr().unwrap();
    drop(closed);
    let nobody = RemoteHost::new(RemoteHostConfig {
        endpoint: closed_address.to_string(),
        expected: expected.clone(),
        tls: material(&ca, "gw-1", "par1", Role::Gateway),
    })
    .unwrap();
    let e = nobody
        .run(nuage_compute::RunRequest {
            instance_type: "n1.nano".into(),
            image_id: "0".repeat(64),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, HostErrorKind::NotSent, "{e}");

    // Errors keep their kind across the wire.
    let e = gateway.describe("i-0123456789abcdef0").await.unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (HostErrorKind::InstanceNotFound, "i-0123456789abcdef0")
    );
    let e = gateway.stop("i-0123456789abcdef0").await.unwrap_err();
    assert_eq!(e.kind, HostErrorKind::InstanceNotFound);
    let e = gateway
        .run(nuage_compute::RunRequest {
            instance_type: "n1.nano".into(),
            image_id: "0".repeat(64),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, HostErrorKind::ImageNotFound, "{e}");
    assert!(!gateway.has_image(&"0".repeat(64)).await.unwrap());

    // An image pushed under an id its bytes do not hash to is refused;
    // under its own id it is cached, once.
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, vec![7u8; 64 * 1024]).unwrap();
    let source = ImageSource { disk, kernel: None };
    let e = gateway
        .register_image(&source, Some(&"a".repeat(64)))
        .await
        .unwrap_err();
    assert_eq!(e.kind, HostErrorKind::InvalidImage, "{e}");
    let id = nuage_compute::image_content_id(&source).unwrap();
    assert!(!gateway.has_image(&id).await.unwrap());
    assert_eq!(
        gateway.register_image(&source, Some(&id)).await.unwrap(),
        id
    );
    assert!(gateway.has_image(&id).await.unwrap());
    assert_eq!(gateway.register_image(&source, None).await.unwrap(), id);

    // In process too, content that is not the image expected is refused
    // before the cache keeps it.
    let fresh = dir.path().join("fresh.raw");
    std::fs::write(&fresh, vec![6u8; 64 * 1024]).unwrap();
    let fresh = ImageSource {
        disk: fresh,
        kernel: None,
    };
    let e = local
        .register_image(&fresh, Some(&"b".repeat(64)))
        .await
        .unwrap_err();
    assert_eq!(e.kind, HostErrorKind::InvalidImage, "{e}");
    let fresh_id = nuage_compute::image_content_id(&fresh).unwrap();
    assert!(!local.has_image(&fresh_id).await.unwrap());
    let staged: Vec<_> = std::fs::read_dir(host_dir.join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("tmp-"))
        .collect();
    assert!(staged.is_empty(), "{staged:?}");

    // Four pushes in progress take every push slot: a fifth is `Busy`
    // (the host cannot take it now), and works once they are gone.
    use tokio::io::AsyncWriteExt as _;
    let uploads = dir.path().join("uploads");
    let mut holding = Vec::new();
    for n in 0..4 {
        let mut tls = raw_connect(&ca, Some(&gateway_tls), server.local_addr())
            .await
            .unwrap();
        let head = format!(
            "PUT /v1/images/{} HTTP/1.1\r\nhost: x\r\nx-nuage-image-parts: \
             {{\"disk_bytes\":1048576}}\r\ncontent-length: 1048576\r\n\r\n",
            format!("{n}").repeat(64)
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(&[0u8; 1024]).await.unwrap();
        tls.flush().await.unwrap();
        holding.push(tls);
    }
    let uploads_count = || std::fs::read_dir(&uploads).unwrap().count();
    for _ in 0..600 {
        if uploads_count() == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(uploads_count(), 4);
    let other = dir.path().join("other.raw");
    std::fs::write(&other, vec![8u8; 64 * 1024]).unwrap();
    let other = ImageSource {
        disk: other,
        kernel: None,
    };
    let other_id = nuage_compute::image_content_id(&other).unwrap();
    let e = gateway
        .register_image(&other, Some(&other_id))
        .await
        .unwrap_err();
    assert_eq!(e.kind, HostErrorKind::Busy, "{e}");
    drop(holding);
    for _ in 0..600 {
        if uploads_count() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(uploads_count(), 0, "abandoned pushes leave nothing behind");
    assert_eq!(
        gateway
            .register_image(&other, Some(&other_id))
            .await
            .unwrap(),
        other_id
    );

    // A full cache is `CacheFull`, not a fault of the image.
    let cached = 2;
    for n in cached..nuage_compute::limits::IMAGES_PER_HOST_MAX {
        let disk = dir.path().join(format!("fill-{n}.raw"));
        std::fs::write(&disk, n.to_be_bytes().repeat(512)).unwrap();
        local
            .register_image(&ImageSource { disk, kernel: None }, None)
            .await
            .unwrap();
    }
    let last = dir.path().join("one-too-many.raw");
    std::fs::write(&last, vec![9u8; 4096]).unwrap();
    let last = ImageSource {
        disk: last,
        kernel: None,
    };
    let last_id = nuage_compute::image_content_id(&last).unwrap();
    let e = gateway
        .register_image(&last, Some(&last_id))
        .await
        .unwrap_err();
    assert_eq!(e.kind, HostErrorKind::CacheFull, "{e}");
    assert!(!gateway.has_image(&last_id).await.unwrap());
    server.shutdown().await;
}
