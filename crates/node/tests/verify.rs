//! `POST /v1/blobs/{id}/verify`: a real node over mutual TLS reads its whole
//! copy back and says what it read; a byte flipped on its disk, a truncated
//! file or a missing one are the protocol's errors, and only gateways may ask.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use nuage_node::pki::CertificateAuthority;
use nuage_node::store::StoreConfig;
use nuage_node::tls::TlsMaterial;
use nuage_node::{
    NodeClient, NodeClientConfig, NodeError, NodeIdentity, NodeServer, NodeServerConfig, Role,
};
use nuage_testsupport::data::pattern;
use sha2::{Digest as _, Sha256};
use std::path::PathBuf;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;
/// The blob format's block (256 KiB) and the header and CRC around it.
const BLOCK_BYTES: u64 = 256 * 1024;
const HEADER_BYTES: u64 = 16;
const CRC_BYTES: u64 = 4;

struct Node {
    ca: CertificateAuthority,
    id: NodeIdentity,
    server: NodeServer,
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

impl Node {
    async fn start() -> Self {
        let ca = CertificateAuthority::generate("verify-test").unwrap();
        let id = NodeIdentity::new("node-1", "fr-par", Role::Storage).unwrap();
        let data = tempfile::tempdir().unwrap();
        let server = NodeServer::start(NodeServerConfig {
            identity: id.clone(),
            tls: material(&ca, &id),
            store: StoreConfig {
                data_dir: data.path().to_path_buf(),
                capacity_bytes: None,
                reserve_bytes: 16 * MIB,
            },
            listen: "127.0.0.1:0".parse().unwrap(),
            idle_timeout: Duration::from_secs(30),
        })
        .await
        .unwrap();
        Self {
            ca,
            id,
            server,
            data,
        }
    }

    fn client(&self, role: Role) -> NodeClient {
        let caller = NodeIdentity::new("caller-1", "fr-par", role).unwrap();
        NodeClient::new(NodeClientConfig::new(
            format!("127.0.0.1:{}", self.server.local_addr().port()),
            self.id.clone(),
            material(&self.ca, &caller),
        ))
        .unwrap()
    }

    fn blob_file(&self, blob_id: &str) -> PathBuf {
        self.data
            .path()
            .join("blobs")
            .join(&blob_id[..2])
            .join(blob_id)
    }
}

fn blob_id(n: u64) -> String {
    format!("{n:032x}")
}

async fn write(client: &NodeClient, id: &str, seed: u64, len: u64) -> String {
    let bytes = Bytes::from(pattern(seed, 0, usize::try_from(len).unwrap()));
    let receipt = client
        .write_stream(id, Some(len), futures::stream::iter([bytes]))
        .await
        .unwrap();
    receipt.sha256
}

/// Flips one bit of data byte `at` in the blob file on disk.
fn flip_data_byte(path: &PathBuf, at: u64) {
    let block = at / BLOCK_BYTES;
    let offset = HEADER_BYTES + block * (BLOCK_BYTES + CRC_BYTES) + at % BLOCK_BYTES;
    let mut file = std::fs::read(path).unwrap();
    let index = usize::try_from(offset).unwrap();
    file[index] ^= 0x01;
    std::fs::write(path, file).unwrap();
}

#[tokio::test]
async fn a_good_copy_verifies_with_its_length_and_sha256() {
    let node = Node::start().await;
    let gateway = node.client(Role::Gateway);
    // Three whole blocks and a partial fourth; and an empty blob.
    let len = 3 * BLOCK_BYTES + 12_345;
    let id = blob_id(1);
    let written = write(&gateway, &id, 1, len).await;
    let expected = hex::encode(Sha256::digest(pattern(1, 0, usize::try_from(len).unwrap())));
    assert_eq!(written, expected);
    let receipt = gateway.verify(&id).await.unwrap();
    assert_eq!(receipt.blob_id, id);
    assert_eq!(receipt.length, len);
    assert_eq!(receipt.sha256, expected);

    // A larger blob, for the figure in docs/storage-nodes.md (printed, not
    // asserted: the machine is shared).
    let big = blob_id(7);
    let big_len = 64 * MIB;
    let chunks =
        (0..64u64).map(|i| Bytes::from(pattern(7, i * MIB, usize::try_from(MIB).unwrap())));
    let big_sha = gateway
        .write_stream(&big, Some(big_len), futures::stream::iter(chunks))
        .await
        .unwrap()
        .sha256;
    let started = std::time::Instant::now();
    let receipt = gateway.verify(&big).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!((receipt.length, receipt.sha256), (big_len, big_sha));
    eprintln!(
        "verified {} MiB in {} ms ({:.0} MiB/s)",
        big_len / MIB,
        elapsed.as_millis(),
        (big_len / MIB) as f64 / elapsed.as_secs_f64()
    );

    let empty = blob_id(2);
    write(&gateway, &empty, 2, 0).await;
    let receipt = gateway.verify(&empty).await.unwrap();
    assert_eq!(receipt.length, 0);
    assert_eq!(receipt.sha256, hex::encode(Sha256::digest(b"")));
}

#[tokio::test]
async fn a_flipped_byte_or_a_truncated_file_is_corrupt_and_a_missing_blob_is_not_found() {
    let node = Node::start().await;
    let gateway = node.client(Role::Gateway);
    let len = 3 * BLOCK_BYTES + 100;
    let id = blob_id(3);
    write(&gateway, &id, 3, len).await;
    gateway.verify(&id).await.unwrap();

    // One bit in the third block: the stat still succeeds (the length is
    // right), the whole read does not.
    flip_data_byte(&node.blob_file(&id), 2 * BLOCK_BYTES + 777);
    assert_eq!(gateway.stat(&id).await.unwrap().length, len);
    match gateway.verify(&id).await {
        Err(NodeError::Corrupt { blob_id, detail }) => {
            assert_eq!(blob_id, id);
            eprintln!("flipped byte: {detail}");
            assert!(detail.contains("checksum mismatch in block 2"), "{detail}");
        }
        other => panic!("a flipped byte verified: {other:?}"),
    }

    // A file cut in the middle of a block's CRC: an impossible length.
    let cut = blob_id(4);
    write(&gateway, &cut, 4, len).await;
    let path = node.blob_file(&cut);
    let file = std::fs::read(&path).unwrap();
    std::fs::write(&path, &file[..file.len() - 2]).unwrap();
    match gateway.verify(&cut).await {
        Err(NodeError::Corrupt { blob_id, .. }) => assert_eq!(blob_id, cut),
        other => panic!("a truncated file verified: {other:?}"),
    }

    // A blob the node does not hold.
    match gateway.verify(&blob_id(5)).await {
        Err(NodeError::NotFound(missing)) => assert_eq!(missing, blob_id(5)),
        other => panic!("a missing blob verified: {other:?}"),
    }
    // The file removed behind the node's back: the same.
    std::fs::remove_file(node.blob_file(&id)).unwrap();
    assert!(matches!(
        gateway.verify(&id).await,
        Err(NodeError::NotFound(_))
    ));
}

#[tokio::test]
async fn only_gateways_may_verify() {
    let node = Node::start().await;
    let id = blob_id(6);
    write(&node.client(Role::Gateway), &id, 6, 1000).await;
    let storage = node.client(Role::Storage);
    // A storage node may stat (repair does), not verify.
    storage.stat(&id).await.unwrap();
    match storage.verify(&id).await {
        Err(NodeError::AccessDenied(message)) => {
            assert!(
                message.contains("nuage://fr-par/storage/caller-1"),
                "{message}"
            );
        }
        other => panic!("a storage node verified a blob: {other:?}"),
    }
    assert!(matches!(
        node.client(Role::Gateway).verify("not-hex").await,
        Err(NodeError::BadRequest(_))
    ));
}
