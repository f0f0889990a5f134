//! Tests of the log service: group commit, fail-closed commits, checkpoint
//! refusals, tiles, and proofs checked against ct-merkle and RFC 6962 vectors.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ed25519_dalek::SigningKey;
use sha2_011::Sha256;

use super::*;
use crate::tiles::{decode_bundle, decode_hash_tile};

const ORIGIN: &str = "nuage.example/audit/123456789012";

fn signer() -> Arc<dyn CheckpointSigner> {
    Arc::new(SigningKey::from_bytes(&[1; 32]))
}

fn leaf(i: u64) -> Vec<u8> {
    format!("{{\"entry\":{i}}}").into_bytes()
}

async fn log_with(dir: &Path, count: u64) -> AuditLog {
    let log = AuditLog::open_dir(dir, ORIGIN, signer())
        .await
        .expect("open");
    for i in log.size()..count {
        assert_eq!(log.append_leaf(leaf(i)).await.expect("append"), i);
    }
    log
}

fn ct_tree(leaves: impl IntoIterator<Item = Vec<u8>>) -> MemoryBackedTree<Sha256, Vec<u8>> {
    let mut tree = MemoryBackedTree::new();
    for leaf in leaves {
        tree.push(leaf);
    }
    tree
}

fn ct_root(hash: Hash, size: u64) -> ct_merkle::RootHash<Sha256> {
    ct_merkle::RootHash::new(hash.0.into(), size)
}

fn hashes_bytes(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

#[tokio::test]
async fn appends_get_consecutive_indexes_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entry = crate::entry::tests::sample();
    let root;
    {
        let log = log_with(dir.path(), 0).await;
        assert_eq!(log.append(&entry).await.expect("append"), 0);
        assert_eq!(log.append(&entry).await.expect("append"), 1);
        root = log.root(2).await.expect("root");
        let other = log.clone();
        assert!(matches!(other.close().await, Err(AuditError::InUse)));
        log.close().await.expect("close");
    }
    let log = AuditLog::open_dir(dir.path(), ORIGIN, signer())
        .await
        .expect("reopen");
    assert_eq!(log.size(), 2);
    assert_eq!(log.root(2).await.expect("root"), root);
    let stored = log.read_entries(0, 2).await.expect("read");
    assert_eq!(stored[1], entry.to_leaf().expect("leaf"));
    assert_eq!(Entry::from_leaf(&stored[0]).expect("parse"), entry);
    // Appending after reopen continues the same tree.
    assert_eq!(log.append(&entry).await.expect("append"), 2);
    let expected = ct_tree(std::iter::repeat_n(entry.to_leaf().expect("leaf"), 3));
    assert_eq!(
        log.root(3).await.expect("root").0.as_slice(),
        expected.root().as_bytes().as_slice()
    );
}

/// A store that holds its first append until released, and counts appends.
struct GatedStore {
    inner: FileStore,
    gate: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    entered: AtomicBool,
    appends: AtomicUsize,
    fail: AtomicBool,
}

impl LogStore for GatedStore {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn append(&self, entries: &[Vec<u8>], hashes: &[Hash]) -> Result<(), AuditError> {
        let gate = self.gate.lock().expect("gate").take();
        self.entered.store(true, Ordering::SeqCst);
        if let Some(gate) = gate {
            gate.recv().expect("release");
        }
        self.appends.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(AuditError::io(
                "injected",
                std::io::Error::other("disk gone"),
            ));
        }
        self.inner.append(entries, hashes)
    }
    fn read_entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, AuditError> {
        self.inner.read_entries(start, end)
    }
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, AuditError> {
        self.inner.read_hashes(indexes)
    }
    fn load_note(&self, kind: NoteKind) -> Result<Option<Vec<u8>>, AuditError> {
        self.inner.load_note(kind)
    }
    fn store_note(&self, kind: NoteKind, note: &[u8]) -> Result<(), AuditError> {
        self.inner.store_note(kind, note)
    }
}

fn gated(dir: &Path) -> (Arc<GatedStore>, std::sync::mpsc::Sender<()>) {
    let (release, gate) = std::sync::mpsc::channel();
    let store = Arc::new(GatedStore {
        inner: FileStore::open(dir).expect("open"),
        gate: std::sync::Mutex::new(Some(gate)),
        entered: AtomicBool::new(false),
        appends: AtomicUsize::new(0),
        fail: AtomicBool::new(false),
    });
    (store, release)
}

/// Waits (bounded) until `queued` appends sit in the log's queue.
/// Longest a test waits for a condition another task brings about.
const CONDITION_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

async fn wait_for_queue(log: &AuditLog, queued: usize) {
    // A generous deadline, not a count of yields: on a loaded machine the
    // tasks may take a while to be scheduled.
    let deadline = std::time::Instant::now() + CONDITION_WAIT_MAX;
    while std::time::Instant::now() < deadline {
        if AUDIT_APPEND_QUEUE_MAX - log.shared.queue.capacity() == queued {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("appends never queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_group_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, release) = gated(dir.path());
    let log = AuditLog::open(store.clone(), ORIGIN, signer())
        .await
        .expect("open");
    // The first append holds the writer inside the store...
    let first = tokio::spawn({
        let log = log.clone();
        async move { log.append_leaf(leaf(0)).await }
    });
    let deadline = std::time::Instant::now() + CONDITION_WAIT_MAX;
    while std::time::Instant::now() < deadline {
        if store.entered.load(Ordering::SeqCst) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        store.entered.load(Ordering::SeqCst),
        "the first commit started"
    );
    // ...while 200 more queue up behind it.
    let mut tasks = Vec::new();
    for i in 1..=200u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(
            async move { (i, log.append_leaf(leaf(i)).await) },
        ));
    }
    wait_for_queue(&log, 200).await;
    release.send(()).expect("release");
    assert_eq!(first.await.expect("join").expect("append"), 0);
    let mut indexes = Vec::new();
    let mut by_index = std::collections::BTreeMap::new();
    for task in tasks {
        let (i, index) = task.await.expect("join");
        let index = index.expect("append");
        indexes.push(index);
        by_index.insert(index, leaf(i));
    }
    indexes.sort_unstable();
    assert_eq!(indexes, (1..=200).collect::<Vec<u64>>());
    // One commit for the first, one for all 200 that waited.
    assert_eq!(store.appends.load(Ordering::SeqCst), 2);
    // Each caller's entry is at the index it was told.
    for (index, expected) in by_index {
        assert_eq!(
            log.read_entries(index, index + 1).await.expect("read")[0],
            expected
        );
    }
}

#[tokio::test]
async fn a_failed_commit_fails_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, release) = gated(dir.path());
    release.send(()).expect("release");
    let log = AuditLog::open(store.clone(), ORIGIN, signer())
        .await
        .expect("open");
    assert_eq!(log.append_leaf(leaf(0)).await.expect("append"), 0);
    store.fail.store(true, Ordering::SeqCst);
    assert!(matches!(
        log.append_leaf(leaf(1)).await,
        Err(AuditError::Io { .. })
    ));
    // Even once the disk "recovers", nothing more is acknowledged.
    store.fail.store(false, Ordering::SeqCst);
    assert!(matches!(
        log.append_leaf(leaf(2)).await,
        Err(AuditError::Failed(_))
    ));
    assert_eq!(log.size(), 1);
}

#[tokio::test]
async fn checkpoints_extend_each_other_and_verify_with_the_key_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with(dir.path(), 5).await;
    let first = log.sign_checkpoint().await.expect("sign");
    assert_eq!(first.size, 5);
    // Nothing new: the same checkpoint, not a second signature.
    assert_eq!(log.sign_checkpoint().await.expect("sign again"), first);
    for i in 5..9 {
        log.append_leaf(leaf(i)).await.expect("append");
    }
    let second = log.sign_checkpoint().await.expect("sign");
    assert_eq!(second.size, 9);
    assert_eq!(
        log.latest_checkpoint().await.expect("latest"),
        Some(second.note.clone())
    );
    let vkey = log.verifier_key();
    let opened = checkpoint::open(&second.note, &vkey).expect("verify");
    assert_eq!(opened.root, log.root(9).await.expect("root"));
    let proof = log.consistency_proof(5, 9).await.expect("proof");
    proof.verify(first.root, second.root).expect("consistent");
    // The root is the one an independent implementation computes.
    let expected = ct_tree((0..9).map(leaf));
    assert_eq!(
        second.root.0.as_slice(),
        expected.root().as_bytes().as_slice()
    );
}

/// Copies the signed checkpoint of `from` into a fresh log directory holding `leaves`.
async fn log_with_foreign_checkpoint(
    from: &Path,
    leaves: &[Vec<u8>],
) -> (tempfile::TempDir, AuditLog) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(from.join("checkpoint"), dir.path().join("checkpoint")).expect("copy");
    let log = AuditLog::open_dir(dir.path(), ORIGIN, signer())
        .await
        .expect("open");
    for leaf in leaves {
        log.append_leaf(leaf.clone()).await.expect("append");
    }
    (dir, log)
}

#[tokio::test]
async fn signing_refuses_a_rolled_back_or_forked_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with(dir.path(), 4).await;
    log.sign_checkpoint().await.expect("sign");

    // The store lost its last entry (restored from an old backup).
    let (_rolled, rolled_back) =
        log_with_foreign_checkpoint(dir.path(), &(0..3).map(leaf).collect::<Vec<_>>()).await;
    assert!(matches!(
        rolled_back.sign_checkpoint().await,
        Err(AuditError::SigningWouldRollBack {
            signed_size: 4,
            size: 3
        })
    ));

    // Same size, one entry rewritten.
    let mut edited: Vec<Vec<u8>> = (0..4).map(leaf).collect();
    edited[2] = b"rewritten".to_vec();
    let (_same, same_size) = log_with_foreign_checkpoint(dir.path(), &edited).await;
    assert!(matches!(
        same_size.sign_checkpoint().await,
        Err(AuditError::SigningWouldFork {
            signed_size: 4,
            size: 4
        })
    ));

    // Larger, but not an extension of what was signed.
    edited.push(leaf(4));
    let (_grown, grown) = log_with_foreign_checkpoint(dir.path(), &edited).await;
    assert!(matches!(
        grown.sign_checkpoint().await,
        Err(AuditError::SigningWouldFork {
            signed_size: 4,
            size: 5
        })
    ));

    // A real extension is signed.
    let good: Vec<Vec<u8>> = (0..6).map(leaf).collect();
    let (_good, extended) = log_with_foreign_checkpoint(dir.path(), &good).await;
    assert_eq!(extended.sign_checkpoint().await.expect("sign").size, 6);
}

#[tokio::test]
async fn tiles_and_bundles_are_served_per_c2sp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with(dir.path(), 300).await;
    let bundle = log.read_tile("tile/entries/000").await.expect("bundle");
    let entries = decode_bundle("tile/entries/000", &bundle).expect("decode");
    assert_eq!(entries, (0..256).map(leaf).collect::<Vec<_>>());
    let partial = log
        .read_tile("tile/entries/001.p/44")
        .await
        .expect("partial");
    assert_eq!(
        decode_bundle("p", &partial).expect("decode"),
        (256..300).map(leaf).collect::<Vec<_>>()
    );
    // A narrower partial bundle than the tree has is its prefix.
    let narrow = log.read_tile("tile/entries/001.p/3").await.expect("narrow");
    assert_eq!(decode_bundle("p", &narrow).expect("decode").len(), 3);

    let level0 = log.read_tile("tile/0/000").await.expect("tile");
    assert_eq!(level0.len(), 256 * 32);
    let hashes = decode_hash_tile("tile/0/000", &level0).expect("hashes");
    for (i, hash) in hashes.iter().enumerate() {
        assert_eq!(*hash, tlog_tiles::record_hash(&leaf(i as u64)));
    }
    // A level-1 hash is the root of a full level-0 tile.
    let level1 = log.read_tile("tile/1/000.p/1").await.expect("tile");
    assert_eq!(level1, log.root(256).await.expect("root").0.to_vec());
    assert_eq!(
        log.read_tile("tile/0/001.p/44").await.expect("tile").len(),
        44 * 32
    );

    for beyond in [
        "tile/entries/001",
        "tile/entries/001.p/45",
        "tile/0/001",
        "tile/1/000",
        "tile/2/000.p/1",
    ] {
        assert!(
            matches!(
                log.read_tile(beyond).await,
                Err(AuditError::TileBeyondTree { .. })
            ),
            "{beyond}"
        );
    }
    assert!(matches!(
        log.read_tile("tile/0/1").await,
        Err(AuditError::BadTilePath(_))
    ));
}

#[tokio::test]
async fn proofs_match_ct_merkle_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with(dir.path(), 0).await;
    let mut reference = MemoryBackedTree::<Sha256, Vec<u8>>::new();
    // Sizes around powers of two and a tile boundary, every index of each.
    for size in 1..=270u64 {
        log.append_leaf(leaf(size - 1)).await.expect("append");
        reference.push(leaf(size - 1));
        let root = log.root(size).await.expect("root");
        assert_eq!(
            root.0.as_slice(),
            reference.root().as_bytes().as_slice(),
            "root {size}"
        );
        if !(size <= 20 || size.is_power_of_two() || size % 97 == 0 || size == 270) {
            continue;
        }
        let ct_root = ct_root(root, size);
        for index in 0..size {
            let ours = log.inclusion_proof(index, size).await.expect("proof");
            let theirs = reference.prove_inclusion(usize::try_from(index).expect("index"));
            assert_eq!(
                hashes_bytes(&ours.hashes),
                theirs.as_bytes(),
                "inclusion {index}/{size}"
            );
            ct_root
                .verify_inclusion(
                    &leaf(index),
                    index,
                    &ct_merkle::InclusionProof::from_bytes(hashes_bytes(&ours.hashes)),
                )
                .expect("ct-merkle accepts our proof");
            ours.verify(&leaf(index), root)
                .expect("we accept our proof");
            let decoded = InclusionProof {
                index,
                tree_size: size,
                hashes: theirs
                    .as_bytes()
                    .chunks_exact(32)
                    .map(|c| Hash(c.try_into().expect("32")))
                    .collect(),
            };
            decoded
                .verify(&leaf(index), root)
                .expect("we accept ct-merkle's proof");
            assert!(
                ours.verify(&leaf(index + 1), root).is_err(),
                "wrong leaf rejected"
            );
        }
        // Consistency from every smaller size.
        for old in 1..=size {
            let ours = log.consistency_proof(old, size).await.expect("proof");
            let old_root = log.root(old).await.expect("root");
            ours.verify(old_root, root).expect("we accept our proof");
            let old_tree = ct_tree((0..old).map(leaf));
            let theirs = reference.prove_consistency(usize::try_from(size - old).expect("n"));
            assert_eq!(
                hashes_bytes(&ours.hashes),
                theirs.as_bytes(),
                "consistency {old}/{size}"
            );
            ct_root
                .verify_consistency(
                    &old_tree.root(),
                    &ct_merkle::ConsistencyProof::try_from_bytes(hashes_bytes(&ours.hashes))
                        .expect("proof bytes"),
                )
                .expect("ct-merkle accepts our proof");
            if old < size {
                let wrong = tlog_tiles::record_hash(b"not the old root");
                assert!(ours.verify(wrong, root).is_err());
            }
        }
    }
}

/// RFC 6962 test vectors (from the Certificate Transparency reference tests,
/// as carried by transparency-dev/merkle and ct-merkle).
const RFC6962_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];
const RFC6962_ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

#[tokio::test]
async fn rfc6962_test_vectors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with(dir.path(), 0).await;
    assert_eq!(
        log.root(0).await.expect("empty").0,
        tlog_tiles::EMPTY_HASH.0
    );
    for (size, (leaf, root)) in RFC6962_LEAVES.iter().zip(RFC6962_ROOTS).enumerate() {
        log.append_leaf(hex::decode(leaf).expect("hex"))
            .await
            .expect("append");
        assert_eq!(
            hex::encode(log.root(size as u64 + 1).await.expect("root").0),
            root,
            "root of {}",
            size + 1
        );
    }
    let inclusion = [
        (1u64, 0u64, ""),
        (
            2,
            1,
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        ),
        (
            5,
            1,
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d\
             5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e\
             bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
        (
            8,
            5,
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b\
             ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0\
             d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ];
    for (size, index, expected) in inclusion {
        let proof = log.inclusion_proof(index, size).await.expect("proof");
        assert_eq!(
            hex::encode(hashes_bytes(&proof.hashes)),
            expected,
            "{index}/{size}"
        );
    }
    let consistency = [
        (1u64, 1u64, ""),
        (
            2,
            5,
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e\
             bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
        (
            6,
            8,
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a\
             ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0\
             d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ];
    for (old, new, expected) in consistency {
        let proof = log.consistency_proof(old, new).await.expect("proof");
        assert_eq!(
            hex::encode(hashes_bytes(&proof.hashes)),
            expected,
            "{old}->{new}"
        );
    }
}

#[tokio::test]
async fn proofs_serialize_as_documented_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with(dir.path(), 3).await;
    let proof = log.inclusion_proof(0, 3).await.expect("proof");
    let json = serde_json::to_value(&proof).expect("json");
    assert_eq!(json["index"], 0);
    assert_eq!(json["tree_size"], 3);
    let first = json["hashes"][0].as_str().expect("base64 string");
    assert_eq!(first, crate::proof::hash_to_base64(&proof.hashes[0]));
    let back: InclusionProof = serde_json::from_value(json).expect("parse");
    assert_eq!(back, proof);
    let consistency = log.consistency_proof(1, 3).await.expect("proof");
    let text = serde_json::to_string(&consistency).expect("json");
    assert!(
        text.starts_with("{\"old_size\":1,\"new_size\":3,\"hashes\":[\""),
        "{text}"
    );
    assert!(
        serde_json::from_str::<ConsistencyProof>(
            r#"{"old_size":1,"new_size":3,"hashes":["AAAA"]}"#
        )
        .is_err()
    );
}

#[tokio::test]
async fn out_of_range_requests_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with(dir.path(), 3).await;
    assert!(matches!(
        log.inclusion_proof(3, 3).await,
        Err(AuditError::OutOfRange(_))
    ));
    assert!(matches!(
        log.inclusion_proof(0, 4).await,
        Err(AuditError::OutOfRange(_))
    ));
    assert!(matches!(
        log.consistency_proof(3, 2).await,
        Err(AuditError::OutOfRange(_))
    ));
    assert!(matches!(log.root(4).await, Err(AuditError::OutOfRange(_))));
    assert!(
        log.consistency_proof(0, 3)
            .await
            .expect("from empty")
            .hashes
            .is_empty()
    );
}

#[tokio::test]
async fn the_checkpointer_signs_on_its_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with(dir.path(), 2).await;
    let task = log.spawn_checkpointer(Duration::from_millis(20));
    // Wait (bounded, about 10 s at most) for a checkpoint of `size`.
    async fn signed_size(log: &AuditLog, size: u64) -> bool {
        for _ in 0..1000 {
            if let Some(note) = log.latest_checkpoint().await.expect("latest")
                && checkpoint::open(&note, &log.verifier_key())
                    .expect("open")
                    .size
                    == size
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
    assert!(signed_size(&log, 2).await, "the first tick signed");
    log.append_leaf(leaf(2)).await.expect("append");
    assert!(
        signed_size(&log, 3).await,
        "a later tick signed the grown tree"
    );
    task.abort();
}

/// The records of a log directory's entries file, as a tamperer with a hex
/// editor and knowledge of the format would see them.
fn read_records(dir: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(dir.join("entries")).expect("entries");
    let mut records = Vec::new();
    let mut at = 8;
    while at < bytes.len() {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
        records.push(bytes[at + 8..at + 8 + length].to_vec());
        at += 8 + length;
    }
    records
}

/// Rewrites the entries file with valid checksums, so only the tree can tell.
fn write_records(dir: &Path, records: &[Vec<u8>]) {
    let mut bytes = b"NUAGEAL1".to_vec();
    for record in records {
        let length = u32::try_from(record.len()).expect("len").to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&length), record);
        bytes.extend_from_slice(&length);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(record);
    }
    std::fs::write(dir.join("entries"), bytes).expect("write entries");
}

/// A signed log of 300 entries, closed so its files can be tampered with.
async fn signed_closed_log(dir: &Path) {
    let log = log_with(dir, 300).await;
    log.sign_checkpoint().await.expect("sign");
    assert_eq!(log.scrub().await.expect("clean log scrubs"), 300);
    log.close().await.expect("close");
}

async fn reopen(dir: &Path) -> AuditLog {
    AuditLog::open_dir(dir, ORIGIN, signer())
        .await
        .expect("reopen")
}

#[tokio::test]
async fn scrub_reports_an_edited_stored_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    signed_closed_log(dir.path()).await;
    let mut records = read_records(dir.path());
    records[260] = b"{\"entry\":999}".to_vec();
    write_records(dir.path(), &records);
    let log = reopen(dir.path()).await;
    assert!(matches!(
        log.scrub().await,
        Err(AuditError::EditedEntry { index: 260 })
    ));
}

#[tokio::test]
async fn scrub_reports_reordered_stored_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    signed_closed_log(dir.path()).await;
    let mut records = read_records(dir.path());
    records.swap(40, 41);
    write_records(dir.path(), &records);
    let log = reopen(dir.path()).await;
    assert!(matches!(
        log.scrub().await,
        Err(AuditError::ReorderedEntry {
            index: 40,
            belongs_at: 41
        })
    ));
}

#[tokio::test]
async fn scrub_reports_a_deleted_stored_entry_and_signing_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    signed_closed_log(dir.path()).await;
    let mut records = read_records(dir.path());
    records.remove(17);
    write_records(dir.path(), &records);
    let log = reopen(dir.path()).await;
    assert_eq!(log.size(), 299);
    assert!(matches!(
        log.scrub().await,
        Err(AuditError::DeletedEntry { index: 17 })
    ));
    assert!(matches!(
        log.sign_checkpoint().await,
        Err(AuditError::SigningWouldRollBack {
            signed_size: 300,
            size: 299
        })
    ));
}

#[tokio::test]
async fn scrub_reports_a_rolled_back_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    signed_closed_log(dir.path()).await;
    // An older copy of the entries put back: consistent in itself, but behind
    // what was signed.
    let records = read_records(dir.path());
    write_records(dir.path(), &records[..250]);
    let log = reopen(dir.path()).await;
    assert!(matches!(
        log.scrub().await,
        Err(AuditError::StoreInconsistent {
            signed_size: 300,
            size: 250
        })
    ));
    assert!(matches!(
        log.sign_checkpoint().await,
        Err(AuditError::SigningWouldRollBack { .. })
    ));
}

#[tokio::test]
async fn new_checkpoints_are_announced_and_cosignatures_kept_per_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with(dir.path(), 2).await;
    let (announce, mut announced) = mpsc::channel(1);
    log.announce_checkpoints_to(announce);
    let first = log.sign_checkpoint().await.expect("sign");
    assert_eq!(announced.try_recv().expect("announced"), first);
    // The same tree: the same checkpoint, not announced again.
    assert_eq!(log.sign_checkpoint().await.expect("sign"), first);
    assert!(announced.try_recv().is_err());
    // A full queue never makes signing wait: the notice is dropped.
    log.append_leaf(leaf(2)).await.expect("append");
    let second = log.sign_checkpoint().await.expect("sign");
    log.append_leaf(leaf(3)).await.expect("append");
    let third = log.sign_checkpoint().await.expect("sign");
    assert_eq!(announced.try_recv().expect("announced"), second);
    assert!(announced.try_recv().is_err(), "the third was dropped");

    // Cosignatures of the third are kept, one line per witness, durably.
    let line = |witness: &str, seed: u8, timestamp: u64| {
        let body = signed_note::Note::from_bytes(&third.note).expect("note");
        crate::witness::cosign(
            witness,
            &SigningKey::from_bytes(&[seed; 32]),
            body.text(),
            timestamp,
        )
        .expect("cosign")
    };
    assert_eq!(log.cosigned(&third).await.expect("read"), None);
    let one = log
        .keep_cosignatures(&third, &[line("witness.example/w1", 7, 10)])
        .await
        .expect("keep");
    assert_eq!(log.cosigned(&third).await.expect("read"), Some(one));
    // w1 again (another timestamp) is not kept twice; w2 is added.
    let kept = log
        .keep_cosignatures(
            &third,
            &[
                line("witness.example/w1", 7, 11),
                line("witness.example/w2", 8, 10),
            ],
        )
        .await
        .expect("keep");
    let text = String::from_utf8(kept.clone()).expect("utf8");
    assert_eq!(text.matches("— witness.example/w1 ").count(), 1, "{text}");
    assert_eq!(text.matches("— witness.example/w2 ").count(), 1, "{text}");
    assert!(kept.starts_with(&third.note));
    log.close().await.expect("close");
    let log = reopen(dir.path()).await;
    assert_eq!(
        log.cosigned(&third).await.expect("read"),
        Some(kept.clone())
    );
    // Not for another checkpoint; and an older one's lines do not replace them.
    assert_eq!(log.cosigned(&second).await.expect("read"), None);
    let older = log
        .keep_cosignatures(&second, &[line("witness.example/w3", 9, 10)])
        .await
        .expect("keep");
    assert!(older.starts_with(&second.note));
    assert_eq!(log.cosigned(&third).await.expect("read"), Some(kept));
}
