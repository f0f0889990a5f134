//! A storage node served in-process on 127.0.0.1:0 over real mutual TLS, with
//! certificates from a fresh cluster CA, driven by `NodeClient` and
//! `RemoteBlobStore`.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures::TryStreamExt as _;
use nuage_blob::{BlobError, BlobStore as _};
use nuage_node::pki::CertificateAuthority;
use nuage_node::store::StoreConfig;
use nuage_node::tls::TlsMaterial;
use nuage_node::{
    NodeClient, NodeClientConfig, NodeError, NodeIdentity, NodeServer, NodeServerConfig,
    RemoteBlobStore, Role,
};
use nuage_testsupport::data::pattern;
use sha2::{Digest as _, Sha256};
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

struct Cluster {
    ca: CertificateAuthority,
    node_id: NodeIdentity,
    server: Option<NodeServer>,
    data: tempfile::TempDir,
}

fn material(ca: &CertificateAuthority, id: &NodeIdentity) -> TlsMaterial {
    let issued = ca
        .issue(id, &["localhost".into(), "127.0.0.1".into()], 1)
        .unwrap();
    TlsMaterial {
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
        ca_pem: ca.cert_pem().to_owned(),
    }
}

impl Cluster {
    async fn start(capacity_bytes: Option<u64>) -> Self {
        Self::start_with(capacity_bytes, Duration::from_secs(30)).await
    }

    async fn start_with(capacity_bytes: Option<u64>, idle_timeout: Duration) -> Self {
        let ca = CertificateAuthority::generate("test").unwrap();
        let node_id = NodeIdentity::new("node-1", "fr-par", Role::Storage).unwrap();
        let data = tempfile::tempdir().unwrap();
        let server = NodeServer::start(NodeServerConfig {
            identity: node_id.clone(),
            tls: material(&ca, &node_id),
            store: StoreConfig {
                data_dir: data.path().to_path_buf(),
                capacity_bytes,
                reserve_bytes: 16 * MIB,
            },
            listen: "127.0.0.1:0".parse().unwrap(),
            idle_timeout,
        })
        .await
        .unwrap();
        Self {
            ca,
            node_id,
            server: Some(server),
            data,
        }
    }

    fn endpoint(&self) -> String {
        format!(
            "127.0.0.1:{}",
            self.server.as_ref().unwrap().local_addr().port()
        )
    }

    /// A client presenting `caller`'s certificate, expecting `expected`.
    fn client_as(&self, caller: &NodeIdentity, expected: &NodeIdentity) -> NodeClient {
        NodeClient::new(NodeClientConfig::new(
            self.endpoint(),
            expected.clone(),
            material(&self.ca, caller),
        ))
        .unwrap()
    }

    fn gateway(&self) -> NodeClient {
        let gateway = NodeIdentity::new("gw-1", "fr-par", Role::Gateway).unwrap();
        self.client_as(&gateway, &self.node_id)
    }

    fn tmp_files(&self) -> usize {
        std::fs::read_dir(self.data.path().join("tmp"))
            .unwrap()
            .count()
    }

    /// Partial files are removed on the blocking pool after the request
    /// ends: wait for that, boundedly.
    async fn wait_no_tmp_files(&self) {
        for _ in 0..500 {
            if self.tmp_files() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("a partial blob was left in tmp/");
    }
}

/// `total` bytes in chunks of varying sizes, never all in memory.
fn chunks(seed: u64, total: u64) -> impl futures::Stream<Item = Bytes> + Unpin {
    let sizes = [MIB as usize, 65_537, 300_000, 1];
    let mut offset = 0u64;
    let mut n = 0usize;
    futures::stream::iter(std::iter::from_fn(move || {
        if offset == total {
            return None;
        }
        let len = (sizes[n % sizes.len()] as u64).min(total - offset);
        n += 1;
        let chunk = Bytes::from(pattern(seed, offset, len as usize));
        offset += len;
        Some(chunk)
    }))
}

async fn read_all(
    client: &NodeClient,
    id: &str,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, NodeError> {
    let chunks: Vec<Bytes> = client.read(id, offset, len, false).try_collect().await?;
    Ok(chunks.concat())
}

fn blob_id(n: u64) -> String {
    format!("{n:032x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_blob_streams_in_and_reads_back_in_ranges() {
    let cluster = Cluster::start(None).await;
    let client = cluster.gateway();
    let total = 64 * MIB;
    let id = blob_id(0xb10b);
    // No declared length: the body is chunked, space reserved as it comes.
    let receipt = client
        .write_stream(&id, None, chunks(7, total))
        .await
        .unwrap();
    assert_eq!(receipt.length, total);
    assert!(!receipt.existed);

    // The whole blob, streamed and hashed, matches the receipt.
    let mut stream = client.read(&id, 0, total, false);
    let mut hasher = Sha256::new();
    let mut seen = 0u64;
    while let Some(chunk) = stream.try_next().await.unwrap() {
        assert!(chunk.len() <= nuage_base::limits::BLOB_BLOCK_BYTES);
        assert_eq!(chunk.as_ref(), pattern(7, seen, chunk.len()), "at {seen}");
        seen += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(seen, total);
    assert_eq!(hex::encode(hasher.finalize()), receipt.sha256);

    let block = nuage_base::limits::BLOB_BLOCK_BYTES as u64;
    for (offset, len) in [
        (0, 1),
        (block - 1, 2),
        (10 * MIB + 3, 5 * MIB),
        (total - 100, 100),
        (total, 0),
    ] {
        let bytes = read_all(&client, &id, offset, len).await.unwrap();
        assert_eq!(bytes, pattern(7, offset, len as usize), "{offset}+{len}");
    }
    // The authenticated variant serves the same bytes (unchecked by the node).
    let chunks: Vec<Bytes> = client.read(&id, 5, 1000, true).try_collect().await.unwrap();
    assert_eq!(chunks.concat(), pattern(7, 5, 1000));

    assert_eq!(client.stat(&id).await.unwrap().length, total);
    assert!(matches!(
        read_all(&client, &id, total - 1, 2).await,
        Err(NodeError::InvalidRange(_))
    ));
    let status = client.status().await.unwrap();
    assert_eq!(
        (status.node.as_str(), status.site.as_str()),
        ("node-1", "fr-par")
    );
    assert_eq!(status.blob_count, 1);
    assert!(status.used_bytes > total);

    client.delete(&id).await.unwrap();
    client.delete(&id).await.unwrap(); // deleting a missing blob is fine
    assert!(matches!(
        client.stat(&id).await,
        Err(NodeError::NotFound(_))
    ));
    assert!(matches!(
        read_all(&client, &id, 0, 1).await,
        Err(NodeError::NotFound(_))
    ));
    assert_eq!(client.status().await.unwrap().used_bytes, 0);
    cluster.server.unwrap().shutdown().await;
}

#[tokio::test]
async fn listings_come_in_bounded_pages_in_id_order() {
    let cluster = Cluster::start(None).await;
    let client = cluster.gateway();
    let mut ids: Vec<String> = (0..25u64)
        .map(|n| blob_id(n.wrapping_mul(0x0123_4567_89ab_cdef)))
        .collect();
    for (n, id) in ids.iter().enumerate() {
        let len = n as u64 * 100;
        client
            .write_stream(id, Some(len), chunks(n as u64, len))
            .await
            .unwrap();
    }
    ids.sort();
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = client.list(after.as_deref(), 10).await.unwrap();
        assert!(page.blobs.len() <= 10);
        pages += 1;
        listed.extend(page.blobs.into_iter().map(|b| b.blob_id));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(listed, ids);
    assert!(matches!(
        client.list(None, 0).await,
        Err(NodeError::BadRequest(_))
    ));
    assert!(matches!(
        client.list(None, 1001).await,
        Err(NodeError::BadRequest(_))
    ));
    // Through the BlobStore trait, every page.
    let store = RemoteBlobStore::new(client);
    assert_eq!(store.list().await.unwrap().len(), 25);
}

#[tokio::test]
async fn rewriting_an_id_is_idempotent_only_for_identical_bytes() {
    let cluster = Cluster::start(None).await;
    let client = cluster.gateway();
    let id = blob_id(42);
    let first = client
        .write_stream(&id, None, chunks(1, 600_000))
        .await
        .unwrap();
    let again = client
        .write_stream(&id, None, chunks(1, 600_000))
        .await
        .unwrap();
    assert!(again.existed);
    assert_eq!(again.sha256, first.sha256);
    let other = client.write_stream(&id, None, chunks(2, 600_000)).await;
    assert!(matches!(other, Err(NodeError::Exists(_))), "{other:?}");
    assert_eq!(
        read_all(&client, &id, 0, 600_000).await.unwrap(),
        pattern(1, 0, 600_000)
    );
    cluster.wait_no_tmp_files().await;
    assert!(matches!(
        client.create("not-hex", None),
        Err(NodeError::BadRequest(_))
    ));
}

#[tokio::test]
async fn remote_blob_store_implements_the_blob_store() {
    let cluster = Cluster::start(None).await;
    let store = RemoteBlobStore::new(cluster.gateway());
    let mut writer = store.create().await.unwrap();
    let id = writer.blob_id().to_owned();
    writer
        .write(Bytes::from(pattern(3, 0, 700_000)))
        .await
        .unwrap();
    assert_eq!(writer.finish().await.unwrap(), 700_000);
    let bytes: Vec<Bytes> = store.read(&id, 1000, 5000).try_collect().await.unwrap();
    assert_eq!(bytes.concat(), pattern(3, 1000, 5000));
    let missing: Result<Vec<Bytes>, BlobError> = store.read(&blob_id(9), 0, 1).try_collect().await;
    assert!(
        matches!(missing, Err(BlobError::NotFound(_))),
        "{missing:?}"
    );

    // A writer dropped (or abandoned) mid-write leaves nothing on the node.
    let mut dropped = store.create().await.unwrap();
    dropped
        .write(Bytes::from(pattern(4, 0, 2_000_000)))
        .await
        .unwrap();
    drop(dropped);
    let mut abandoned = store.create().await.unwrap();
    abandoned
        .write(Bytes::from(pattern(4, 0, 2_000_000)))
        .await
        .unwrap();
    abandoned.abandon().await;
    cluster.wait_no_tmp_files().await;
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].blob_id, id);
    store.delete(&id).await.unwrap();
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_node_out_of_space_refuses_and_keeps_nothing() {
    let cluster = Cluster::start(Some(4 * MIB)).await;
    let client = cluster.gateway();
    // Declared: refused before the body is read.
    let declared = client
        .write_stream(&blob_id(1), Some(8 * MIB), chunks(1, 8 * MIB))
        .await;
    assert!(
        matches!(declared, Err(NodeError::InsufficientStorage(_))),
        "{declared:?}"
    );
    // Undeclared: refused once the bytes outgrow the space.
    let streamed = client
        .write_stream(&blob_id(2), None, chunks(2, 12 * MIB))
        .await;
    match &streamed {
        Err(NodeError::InsufficientStorage(message)) => {
            assert!(message.contains("capacity"), "{message}");
        }
        other => panic!("expected InsufficientStorage, got {other:?}"),
    }
    cluster.wait_no_tmp_files().await;
    assert!(client.list(None, 10).await.unwrap().blobs.is_empty());
    let status = client.status().await.unwrap();
    assert_eq!((status.used_bytes, status.blob_count), (0, 0));
    assert_eq!(
        status.writable_bytes,
        4 * MIB,
        "every reservation was released"
    );
    // What fits is still accepted.
    client
        .write_stream(&blob_id(3), None, chunks(3, 3 * MIB))
        .await
        .unwrap();
}

#[tokio::test]
async fn callers_and_servers_are_checked_both_ways() {
    let cluster = Cluster::start(None).await;

    // A client certificate from another CA: the handshake is refused.
    let rogue_ca = CertificateAuthority::generate("rogue").unwrap();
    let gateway = NodeIdentity::new("gw-1", "fr-par", Role::Gateway).unwrap();
    let mut rogue = material(&rogue_ca, &gateway);
    rogue.ca_pem = cluster.ca.cert_pem().to_owned(); // it trusts the real node
    let client = NodeClient::new(NodeClientConfig::new(
        cluster.endpoint(),
        cluster.node_id.clone(),
        rogue,
    ))
    .unwrap();
    let refused = client.status().await;
    match &refused {
        Err(NodeError::Transport(message)) => {
            eprintln!("a rogue client certificate: {message}");
            // The node's alert names the reason; a TCP reset may overtake it
            // when the request was already on its way.
            let message = message.to_lowercase();
            assert!(
                message.contains("alert") || message.contains("reset"),
                "{message}"
            );
        }
        other => panic!("a rogue client certificate was not refused: {other:?}"),
    }

    // A storage node may read and write (repair) but not delete.
    let peer = NodeIdentity::new("node-2", "de-fra", Role::Storage).unwrap();
    let storage = cluster.client_as(&peer, &cluster.node_id);
    let id = blob_id(5);
    storage
        .write_stream(&id, None, chunks(5, 1000))
        .await
        .unwrap();
    assert_eq!(
        read_all(&storage, &id, 0, 1000).await.unwrap(),
        pattern(5, 0, 1000)
    );
    match storage.delete(&id).await {
        Err(NodeError::AccessDenied(message)) => {
            assert!(
                message.contains("nuage://de-fra/storage/node-2"),
                "{message}"
            );
        }
        other => panic!("a storage node deleted a blob: {other:?}"),
    }
    cluster.gateway().stat(&id).await.unwrap();

    // A server whose certificate names another site, or another node, than
    // the client expects is refused before any request is sent.
    for expected in [
        NodeIdentity::new("node-1", "us-east", Role::Storage).unwrap(),
        NodeIdentity::new("node-9", "fr-par", Role::Storage).unwrap(),
    ] {
        let client = cluster.client_as(&gateway, &expected);
        match client.status().await {
            Err(NodeError::PeerIdentity(message)) => {
                assert!(
                    message.contains("nuage://fr-par/storage/node-1"),
                    "{message}"
                );
                assert!(message.contains(&expected.uri()), "{message}");
            }
            other => panic!("a server naming another node was accepted: {other:?}"),
        }
    }

    // A client with no certificate at all: TLS completes on the client's
    // side (TLS 1.3), but the node answers nothing but an alert.
    no_certificate_is_refused(&cluster).await;
}

async fn no_certificate_is_refused(cluster: &Cluster) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut cluster.ca.cert_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(cluster.endpoint())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let outcome = async {
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"GET /v1/status HTTP/1.1\r\nhost: node\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await?;
        Ok::<Vec<u8>, std::io::Error>(buf)
    }
    .await;
    match outcome {
        Err(e) => assert!(
            e.to_string().to_lowercase().contains("certificaterequired"),
            "{e}"
        ),
        Ok(bytes) => assert!(bytes.is_empty(), "the node answered an anonymous client"),
    }
}

#[tokio::test]
async fn a_stalled_write_times_out_and_leaves_nothing() {
    let cluster = Cluster::start_with(None, Duration::from_secs(1)).await;
    let client = cluster.gateway();
    let mut writer = client.create(&blob_id(77), None).unwrap();
    writer
        .write(Bytes::from(pattern(1, 0, MIB as usize)))
        .await
        .unwrap();
    // The partial file appears, then the node gives up on the silent body.
    let mut appeared = false;
    for _ in 0..1000 {
        let files = cluster.tmp_files();
        appeared |= files > 0;
        if appeared && files == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        appeared && cluster.tmp_files() == 0,
        "the stalled write was kept"
    );
    match writer.finish().await {
        Err(NodeError::Timeout(message)) => assert!(message.contains("no body bytes"), "{message}"),
        other => panic!("expected the node's RequestTimeout, got {other:?}"),
    }
    assert!(client.list(None, 10).await.unwrap().blobs.is_empty());
}
