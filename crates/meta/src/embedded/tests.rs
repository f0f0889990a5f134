//! Group commit of the embedded store: batches behave as the same operations
//! run one after another, a failing operation leaves no trace, and a crash
//! loses nothing that was acknowledged. (The conformance suite in
//! `tests/conformance.rs` checks each operation's semantics.)
#![allow(clippy::unwrap_used)]

use super::EmbeddedMetaStore;
use crate::{
    BucketRecord, Checksums, ChunkBinding, ContentHeaders, DataSegment, DocumentStore,
    DocumentWrite, Expect, MetaError, MetaResult, MetaStore, PartRecord, PutVersion,
    PutVersionOutcome, UploadRecord, VersionRecord, Versioning, WriteCondition,
};
use std::io::BufRead as _;
use std::sync::Arc;
use std::time::Duration;

fn bucket(name: &str) -> BucketRecord {
    BucketRecord {
        name: name.into(),
        region: "fr-par".into(),
        created_unix_ns: 1,
        versioning: Versioning::Unversioned,
        tags: None,
        cors: None,
        owner: "111122223333".into(),
        policy: None,
        public_access_block: None,
        encryption: None,
        residency_policy: None,
    }
}

fn segment(blob: &str) -> DataSegment {
    DataSegment {
        blob_id: blob.into(),
        size: 1,
        part_etag: None,
        sealed_key: None,
        kms_key_arn: None,
        kms_context: None,
        sse_c: false,
        chunk_binding: ChunkBinding::Blob,
    }
}

fn put(bucket: &str, key: &str, blob: &str, condition: WriteCondition) -> PutVersion {
    PutVersion {
        record: VersionRecord {
            bucket: bucket.into(),
            key: key.into(),
            version_id: String::new(),
            seq: 0,
            delete_marker: false,
            last_modified_unix_ns: 1,
            size: 1,
            etag: format!("etag-{blob}"),
            content: ContentHeaders::default(),
            user_metadata: std::collections::BTreeMap::new(),
            checksums: Checksums::default(),
            tags: vec![],
            segments: vec![segment(blob)],
            sealed_attributes: None,
        },
        null_version: true,
        condition,
        shared_blobs: Vec::new(),
    }
}

fn upload(bucket: &str, key: &str, upload_id: &str) -> UploadRecord {
    UploadRecord {
        bucket: bucket.into(),
        key: key.into(),
        upload_id: upload_id.into(),
        initiated_unix_ns: 1,
        content: ContentHeaders::default(),
        user_metadata: std::collections::BTreeMap::new(),
        tags: vec![],
        checksum_algorithm: None,
        checksum_type: None,
        kms_key_arn: None,
        kms_context: None,
        sse_c_key_check: None,
        sealed_attributes: None,
    }
}

fn part(number: u32, blob: &str) -> PartRecord {
    PartRecord {
        part_number: number,
        blob_id: blob.into(),
        size: 1,
        etag: format!("etag-{blob}"),
        last_modified_unix_ns: 1,
        checksums: Checksums::default(),
        sealed_key: None,
        kms_key_arn: None,
        kms_context: None,
        sse_c: false,
        chunk_binding: ChunkBinding::Blob,
    }
}

fn open(dir: &tempfile::TempDir) -> EmbeddedMetaStore {
    EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap()
}

type Operation<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Runs `operations` as one batch, queued in the order given: holds the
/// store's group-commit leader back (the test gate) while each is spawned
/// and has reached the queue, then lets the leader take them all.
// Holding the gate across awaits is the point: it keeps the leader (a
// blocking-pool thread, not this task's) from taking a batch meanwhile.
#[allow(clippy::await_holding_lock)]
async fn gated<T: Send + 'static>(
    store: &EmbeddedMetaStore,
    operations: Vec<Operation<T>>,
) -> Vec<T> {
    assert!(operations.len() <= super::BATCH_OPERATIONS_MAX);
    let gate = store.writer.gate.lock().unwrap();
    let mut handles = Vec::new();
    for (queued, operation) in operations.into_iter().enumerate() {
        handles.push(tokio::spawn(operation));
        while store.writer.queued() < queued + 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    drop(gate);
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_conditional_writes_of_one_key_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create_bucket(bucket("b")).await.unwrap();
    const WRITERS: usize = 48;
    // Unsynchronised: whatever batches the timing makes.
    let mut free = Vec::new();
    for i in 0..WRITERS {
        let store = store.clone();
        free.push(tokio::spawn(async move {
            store
                .put_version(put(
                    "b",
                    "free",
                    &format!("free-{i}"),
                    WriteCondition::IfNoneMatchAny,
                ))
                .await
        }));
    }
    let mut outcomes = Vec::new();
    for handle in free {
        outcomes.push(handle.await.unwrap());
    }
    check_one_winner(&store, "free", outcomes).await;

    // All in one batch: later ones must see the winner's uncommitted write.
    let before = store.commit_stats();
    let operations = (0..WRITERS)
        .map(|i| {
            let store = store.clone();
            Box::pin(async move {
                store
                    .put_version(put(
                        "b",
                        "batched",
                        &format!("batched-{i}"),
                        WriteCondition::IfNoneMatchAny,
                    ))
                    .await
            }) as Operation<_>
        })
        .collect();
    let outcomes = gated(&store, operations).await;
    let after = store.commit_stats();
    assert_eq!(after.commits - before.commits, 1);
    assert_eq!(after.operations - before.operations, WRITERS as u64);
    check_one_winner(&store, "batched", outcomes).await;
}

async fn check_one_winner(
    store: &EmbeddedMetaStore,
    key: &str,
    outcomes: Vec<MetaResult<PutVersionOutcome>>,
) {
    let mut winners = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(outcome) => winners.push(outcome.record),
            Err(MetaError::PreconditionFailed) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{key}: {winners:?}");
    let stored = store.get_version("b", key, None).await.unwrap().unwrap();
    assert_eq!(stored, winners[0]);
    let all = store.scan_versions("b", key, None, 100).await.unwrap();
    assert_eq!(all.len(), 1);
    // Only the winner's blob is referenced.
    assert!(
        store
            .blob_is_referenced(&stored.segments[0].blob_id)
            .await
            .unwrap()
    );
    let loser = if stored.segments[0].blob_id.ends_with("-0") {
        format!("{key}-1")
    } else {
        format!("{key}-0")
    };
    assert!(!store.blob_is_referenced(&loser).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_operation_leaves_no_trace_and_the_rest_of_its_batch_lands() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create_bucket(bucket("b")).await.unwrap();
    store.create_upload(upload("b", "mp", "u1")).await.unwrap();
    store
        .put_part("b", "mp", "u1", part(1, "part-1"), false)
        .await
        .unwrap();
    store
        .commit_documents(vec![DocumentWrite {
            namespace: "ns".into(),
            key: "exists".into(),
            expect: Expect::Absent,
            value: Some(b"v1".to_vec()),
        }])
        .await
        .unwrap();

    let before = store.commit_stats();
    let s = store.clone();
    let outcomes = gated(&store, {
        let mut ops: Vec<Operation<Result<String, String>>> = Vec::new();
        fn label(r: MetaResult<()>) -> Result<String, String> {
            r.map(|()| "ok".to_owned()).map_err(|e| e.to_string())
        }
        let st = s.clone();
        ops.push(Box::pin(async move {
            label(
                st.put_version(put("b", "first", "first", WriteCondition::None))
                    .await
                    .map(drop),
            )
        }));
        // Fails before writing: no such bucket.
        let st = s.clone();
        ops.push(Box::pin(async move {
            label(
                st.put_version(put("nope", "k", "x", WriteCondition::None))
                    .await
                    .map(drop),
            )
        }));
        // Writes (removes the upload and its parts), then fails on the
        // version's condition: its writes must be undone.
        let st = s.clone();
        ops.push(Box::pin(async move {
            let mut completion = put("b", "mp", "part-1", WriteCondition::IfMatch("no".into()));
            completion.null_version = false;
            label(st.complete_upload("u1", completion).await.map(drop))
        }));
        // Writes the first document, then fails on the second.
        let st = s.clone();
        ops.push(Box::pin(async move {
            label(
                st.commit_documents(vec![
                    DocumentWrite {
                        namespace: "ns".into(),
                        key: "new".into(),
                        expect: Expect::Absent,
                        value: Some(b"n".to_vec()),
                    },
                    DocumentWrite {
                        namespace: "ns".into(),
                        key: "exists".into(),
                        expect: Expect::Absent,
                        value: Some(b"v2".to_vec()),
                    },
                ])
                .await,
            )
        }));
        // Sees `first` (earlier in the batch) and replaces it.
        let st = s.clone();
        ops.push(Box::pin(async move {
            label(
                st.put_version(put(
                    "b",
                    "first",
                    "second",
                    WriteCondition::IfMatch("etag-first".into()),
                ))
                .await
                .map(drop),
            )
        }));
        ops
    })
    .await;
    let after = store.commit_stats();
    assert_eq!(after.commits - before.commits, 1, "{outcomes:?}");
    assert_eq!(after.operations - before.operations, 5);

    assert_eq!(outcomes[0], Ok("ok".into()));
    assert_eq!(outcomes[1], Err(MetaError::NoSuchBucket.to_string()));
    assert_eq!(outcomes[2], Err(MetaError::PreconditionFailed.to_string()));
    assert_eq!(outcomes[3], Err(MetaError::PreconditionFailed.to_string()));
    assert_eq!(outcomes[4], Ok("ok".into()));

    // The successful ones landed, in order.
    let first = store
        .get_version("b", "first", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.etag, "etag-second");
    assert!(!store.blob_is_referenced("first").await.unwrap());
    assert!(store.blob_is_referenced("second").await.unwrap());
    // No trace of the failed ones.
    assert!(store.get_bucket("nope").await.unwrap().is_none());
    assert!(store.get_upload("b", "mp", "u1").await.unwrap().is_some());
    assert_eq!(store.list_parts("u1", 0, 10).await.unwrap().len(), 1);
    assert!(store.blob_is_referenced("part-1").await.unwrap());
    assert!(store.get_version("b", "mp", None).await.unwrap().is_none());
    assert!(store.get_document("ns", "new").await.unwrap().is_none());
    let kept = store.get_document("ns", "exists").await.unwrap().unwrap();
    assert_eq!(
        (kept.revision, kept.value.as_slice()),
        (1, b"v1".as_slice())
    );
}

#[tokio::test]
async fn a_lone_writer_commits_alone_and_batching_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create_bucket(bucket("b")).await.unwrap();
    for i in 0..5 {
        store
            .put_version(put(
                "b",
                &format!("k{i}"),
                &format!("k{i}"),
                WriteCondition::None,
            ))
            .await
            .unwrap();
    }
    assert_eq!(store.commit_stats().commits, 6);
    assert_eq!(store.commit_stats().operations, 6);

    let unbatched = EmbeddedMetaStore::open_with_batch(&dir.path().join("one.redb"), 1).unwrap();
    unbatched.create_bucket(bucket("b")).await.unwrap();
    let operations = (0..8)
        .map(|i| {
            let store = unbatched.clone();
            Box::pin(async move {
                store
                    .put_version(put(
                        "b",
                        &format!("k{i}"),
                        &format!("k{i}"),
                        WriteCondition::None,
                    ))
                    .await
                    .map(drop)
            }) as Operation<_>
        })
        .collect();
    let outcomes = gated(&unbatched, operations).await;
    assert!(outcomes.iter().all(Result::is_ok));
    assert_eq!(unbatched.commit_stats().commits, 9);
}

/// Set in the child process of the crash test: where its store lives.
const CRASH_DIR_VAR: &str = "NUAGE_META_CRASH_DIR";
const CRASH_WRITERS: usize = 16;
/// Acknowledgements the parent waits for before it kills the child.
const CRASH_ACKS_BEFORE_KILL: usize = 400;
/// Bounds the child's run if nobody kills it.
const CRASH_WRITES_PER_WRITER_MAX: usize = 100_000;

/// The child of `a_crash_loses_nothing_acknowledged`: 16 writers put
/// distinct keys and print each acknowledged one, until killed. Does
/// nothing when run without the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_crash_loses_nothing_acknowledged in a child process"]
async fn crash_writer() {
    let Some(dir) = std::env::var_os(CRASH_DIR_VAR) else {
        return;
    };
    let store = EmbeddedMetaStore::open(&std::path::Path::new(&dir).join("meta.redb")).unwrap();
    store.create_bucket(bucket("b")).await.unwrap();
    // libtest prints its "test ... " prefix on the same line as the first one.
    println!("acked bucket");
    let mut writers = Vec::new();
    for w in 0..CRASH_WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..CRASH_WRITES_PER_WRITER_MAX {
                let key = format!("w{w}-{n}");
                store
                    .put_version(put("b", &key, &key, WriteCondition::IfNoneMatchAny))
                    .await
                    .unwrap();
                println!("acked {key}");
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
}

#[tokio::test]
async fn a_crash_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "embedded::tests::crash_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_VAR, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut acked = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(key) = line.rsplit_once("acked ").map(|(_, key)| key) {
            acked.push(key.to_owned());
            if acked.len() == CRASH_ACKS_BEFORE_KILL {
                break;
            }
        }
    }
    assert_eq!(
        acked.len(),
        CRASH_ACKS_BEFORE_KILL,
        "the writer stopped early"
    );
    // SIGKILL with writes in flight: no destructor, no orderly shutdown.
    child.kill().unwrap();
    child.wait().unwrap();
    // Acknowledgements printed before the kill and still in the pipe count too.
    for line in lines {
        let line = line.unwrap();
        if let Some(key) = line.rsplit_once("acked ").map(|(_, key)| key) {
            acked.push(key.to_owned());
        }
    }
    assert_eq!(acked[0], "bucket");

    let store = Arc::new(open(&dir));
    let mut missing = Vec::new();
    for key in &acked[1..] {
        let version = store.get_version("b", key, None).await.unwrap();
        if version.is_none_or(|v| v.etag != format!("etag-{key}")) {
            missing.push(key.clone());
        }
    }
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(store.count_versions().await.unwrap() >= (acked.len() - 1) as u64);
}
