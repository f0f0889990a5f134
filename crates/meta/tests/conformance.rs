//! Conformance tests for [`MetaStore`] and [`DocumentStore`] backends. Every
//! backend must pass all of them; a new backend adds itself to [`stores`].
//!
//! PostgreSQL: each test gets a fresh database on the throwaway server that
//! `nuage-testsupport` starts for this test binary (Debian's packages). Where
//! PostgreSQL is not installed the PostgreSQL leg is skipped with a notice,
//! except in CI (`CI=true`), where that is a failure.
#![allow(clippy::unwrap_used)]

use nuage_meta::embedded::EmbeddedMetaStore;
use nuage_meta::postgres::{PostgresConfig, PostgresMetaStore};
use nuage_meta::*;
use std::sync::Arc;

mod common;

/// A backend under test: its name, both faces of one store, and the
/// temporary directory it lives in (embedded).
type Store = (
    &'static str,
    Arc<dyn MetaStore>,
    Arc<dyn DocumentStore>,
    Option<tempfile::TempDir>,
);

/// One store of every backend, each on fresh storage, with both faces.
async fn stores() -> Vec<Store> {
    let dir = tempfile::tempdir().unwrap();
    let embedded = Arc::new(EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap());
    let mut out: Vec<Store> = vec![("embedded", embedded.clone(), embedded, Some(dir))];
    if let Some(url) = common::postgres_url().await {
        let store = Arc::new(
            PostgresMetaStore::connect(&PostgresConfig::new(url))
                .await
                .unwrap(),
        );
        out.push(("postgres", store.clone(), store, None));
    }
    out
}

/// One [`MetaStore`] of every backend, each on fresh storage.
async fn backends() -> Vec<(&'static str, Arc<dyn MetaStore>, Option<tempfile::TempDir>)> {
    stores()
        .await
        .into_iter()
        .map(|(name, meta, _, dir)| (name, meta, dir))
        .collect()
}

/// One [`DocumentStore`] of every backend, each on fresh storage.
async fn document_backends() -> Vec<(
    &'static str,
    Arc<dyn DocumentStore>,
    Option<tempfile::TempDir>,
)> {
    stores()
        .await
        .into_iter()
        .map(|(name, _, docs, dir)| (name, docs, dir))
        .collect()
}

/// The keys `scan_documents` returns.
async fn document_keys(
    store: &dyn DocumentStore,
    namespace: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Vec<String> {
    store
        .scan_documents(namespace, prefix, after, limit)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.key)
        .collect()
}

fn bucket(name: &str) -> BucketRecord {
    common::bucket(name, Versioning::Unversioned)
}

fn version(bucket: &str, key: &str, blob: &str, t: i64) -> VersionRecord {
    common::version(bucket, key, blob, t, ChunkBinding::Object)
}

fn put(record: VersionRecord, null_version: bool, condition: WriteCondition) -> PutVersion {
    PutVersion {
        record,
        null_version,
        condition,
        shared_blobs: Vec::new(),
    }
}

#[tokio::test]
async fn buckets_are_created_listed_and_deleted_only_when_empty() {
    for (name, store, _dir) in backends().await {
        store.create_bucket(bucket("b1")).await.unwrap();
        store.create_bucket(bucket("a0")).await.unwrap();
        assert!(
            matches!(
                store.create_bucket(bucket("b1")).await,
                Err(MetaError::BucketAlreadyExists)
            ),
            "{name}"
        );
        let names: Vec<String> = store
            .list_buckets()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert_eq!(names, ["a0", "b1"], "{name}");
        store
            .put_version(put(
                version("b1", "k", "blob1", 10),
                true,
                WriteCondition::None,
            ))
            .await
            .unwrap();
        assert!(
            matches!(
                store.delete_bucket("b1").await,
                Err(MetaError::BucketNotEmpty)
            ),
            "{name}"
        );
        store.delete_version("b1", "k", "null").await.unwrap();
        store
            .create_upload(common::upload("b1", "u", "up1"))
            .await
            .unwrap();
        assert!(
            matches!(
                store.delete_bucket("b1").await,
                Err(MetaError::BucketNotEmpty)
            ),
            "{name}"
        );
        store.abort_upload("b1", "u", "up1").await.unwrap();
        store.delete_bucket("b1").await.unwrap();
        assert!(store.get_bucket("b1").await.unwrap().is_none(), "{name}");
        assert!(
            matches!(
                store.delete_bucket("b1").await,
                Err(MetaError::NoSuchBucket)
            ),
            "{name}"
        );
        // Writing into a missing bucket fails inside the transaction.
        let r = store
            .put_version(put(version("b1", "k", "x", 1), true, WriteCondition::None))
            .await;
        assert!(matches!(r, Err(MetaError::NoSuchBucket)), "{name}");
    }
}

#[tokio::test]
async fn versions_order_newest_first_and_null_version_is_replaced() {
    for (name, store, _dir) in backends().await {
        store.create_bucket(bucket("b")).await.unwrap();
        let v1 = store
            .put_version(put(
                version("b", "k", "b1", 100),
                false,
                WriteCondition::None,
            ))
            .await
            .unwrap()
            .record;
        // A clock that goes backwards still yields a newer sequence.
        let v2 = store
            .put_version(put(
                version("b", "k", "b2", 50),
                false,
                WriteCondition::None,
            ))
            .await
            .unwrap()
            .record;
        assert!(v2.seq > v1.seq, "{name}");
        assert_ne!(v1.version_id, v2.version_id);
        assert_eq!(
            store
                .get_version("b", "k", None)
                .await
                .unwrap()
                .unwrap()
                .version_id,
            v2.version_id,
            "{name}"
        );
        assert_eq!(
            store
                .get_version("b", "k", Some(&v1.version_id))
                .await
                .unwrap()
                .unwrap()
                .etag,
            "etag-b1"
        );
        let n1 = store
            .put_version(put(
                version("b", "k", "b3", 200),
                true,
                WriteCondition::None,
            ))
            .await
            .unwrap();
        assert_eq!(n1.record.version_id, "null");
        assert!(n1.freed_blobs.is_empty());
        let n2 = store
            .put_version(put(
                version("b", "k", "b4", 300),
                true,
                WriteCondition::None,
            ))
            .await
            .unwrap();
        assert_eq!(
            n2.freed_blobs,
            ["b3"],
            "{name}: the replaced null version's blob is freed"
        );
        assert!(!store.blob_is_referenced("b3").await.unwrap());
        assert!(store.blob_is_referenced("b4").await.unwrap());
        let all = store.scan_versions("b", "", None, 100).await.unwrap();
        let ids: Vec<&str> = all.iter().map(|v| v.version_id.as_str()).collect();
        assert_eq!(
            ids,
            ["null", v2.version_id.as_str(), v1.version_id.as_str()],
            "{name}"
        );
        // Resuming after a version continues with the next older one.
        let rest = store
            .scan_versions("b", "", Some((b"k", Some(v2.seq))), 100)
            .await
            .unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].version_id, v1.version_id);
        let (deleted, freed) = store
            .delete_version("b", "k", &v1.version_id)
            .await
            .unwrap();
        assert_eq!(deleted.version_id, v1.version_id);
        assert_eq!(freed, ["b1"]);
        assert!(matches!(
            store.delete_version("b", "k", &v1.version_id).await,
            Err(MetaError::NoSuchVersion)
        ));
    }
}

#[tokio::test]
async fn conditional_writes_are_atomic() {
    for (name, store, _dir) in backends().await {
        store.create_bucket(bucket("b")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                store
                    .put_version(put(
                        version("b", "once", &format!("blob{i}"), 1),
                        true,
                        WriteCondition::IfNoneMatchAny,
                    ))
                    .await
            }));
        }
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => won += 1,
                Err(MetaError::PreconditionFailed) => {}
                Err(e) => panic!("{name}: {e}"),
            }
        }
        assert_eq!(won, 1, "{name}: exactly one If-None-Match:* write wins");
        let current = store.get_version("b", "once", None).await.unwrap().unwrap();
        let bad = store
            .put_version(put(
                version("b", "once", "x", 2),
                true,
                WriteCondition::IfMatch("nope".into()),
            ))
            .await;
        assert!(matches!(bad, Err(MetaError::PreconditionFailed)));
        store
            .put_version(put(
                version("b", "once", "y", 2),
                true,
                WriteCondition::IfMatch(current.etag),
            ))
            .await
            .unwrap();
        let missing = store
            .put_version(put(
                version("b", "absent", "z", 2),
                true,
                WriteCondition::IfMatch("etag-y".into()),
            ))
            .await;
        assert!(
            matches!(missing, Err(MetaError::PreconditionFailed)),
            "{name}: If-Match on a missing key fails"
        );
    }
}

#[tokio::test]
async fn scan_latest_walks_keys_in_byte_order() {
    for (name, store, _dir) in backends().await {
        store.create_bucket(bucket("b")).await.unwrap();
        store.create_bucket(bucket("b-other")).await.unwrap();
        let keys = ["a", "a/", "a/b", "a!", "a0", "B", "é", "z/y/x"];
        for (i, k) in keys.iter().enumerate() {
            for j in 0..2 {
                let t = i64::try_from(i * 10 + j).unwrap();
                store
                    .put_version(put(
                        version("b", k, &format!("{i}-{j}"), t),
                        false,
                        WriteCondition::None,
                    ))
                    .await
                    .unwrap();
            }
        }
        store
            .put_version(put(
                version("b-other", "a", "o", 1),
                true,
                WriteCondition::None,
            ))
            .await
            .unwrap();
        let mut sorted: Vec<&str> = keys.to_vec();
        sorted.sort_unstable();
        let all = store.scan_latest("b", "", None, 100).await.unwrap();
        let got: Vec<&str> = all.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(
            got, sorted,
            "{name}: one entry per key, byte order, no other bucket"
        );
        assert!(
            all.iter().all(|v| v.segments[0].blob_id.ends_with("-1")),
            "{name}: the latest version of each key"
        );
        let page = store.scan_latest("b", "", Some(b"a/"), 2).await.unwrap();
        let got: Vec<&str> = page.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(got, ["a/b", "a0"], "{name}");
        let prefixed = store.scan_latest("b", "a/", None, 100).await.unwrap();
        assert_eq!(prefixed.len(), 2);
        // A position past a whole prefix skips it.
        let past = store
            .scan_latest("b", "", Some(b"a/\xFF"), 100)
            .await
            .unwrap();
        assert_eq!(past.first().map(|v| v.key.as_str()), Some("a0"), "{name}");
        assert_eq!(store.count_versions().await.unwrap(), 17);
    }
}

/// The keys `scan_latest_delimited` returns.
async fn delimited_keys(
    store: &dyn MetaStore,
    prefix: &str,
    delimiter: &str,
    after: Option<&[u8]>,
    limit: usize,
) -> Vec<String> {
    store
        .scan_latest_delimited("b", prefix, delimiter, after, limit)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.key)
        .collect()
}

#[tokio::test]
async fn scan_latest_delimited_returns_one_visible_key_per_common_prefix() {
    for (name, store, _dir) in backends().await {
        store.create_bucket(bucket("b")).await.unwrap();
        store.create_bucket(bucket("b-other")).await.unwrap();
        // (key, latest version a delete marker); every key also has an older
        // version that is an object.
        let keys = [
            ("a/1", false),
            ("a/2", false),
            ("a/3/x", false),
            ("b", false),
            ("c/1", true),
            ("c/2", true),
            ("c/3", false),
            ("c/4", false),
            ("d/1", true),
            ("e--1--x", false),
            ("e--2", false),
            ("f", true),
            ("g/1", false),
        ];
        for (i, (k, marker)) in keys.iter().enumerate() {
            let t = i64::try_from(i * 10).unwrap();
            store
                .put_version(put(
                    version("b", k, &format!("{i}-0"), t),
                    false,
                    WriteCondition::None,
                ))
                .await
                .unwrap();
            let mut latest = version("b", k, &format!("{i}-1"), t + 1);
            if *marker {
                latest.delete_marker = true;
                latest.segments.clear();
            }
            store
                .put_version(put(latest, false, WriteCondition::None))
                .await
                .unwrap();
        }
        store
            .put_version(put(
                version("b-other", "a/0", "o", 1),
                true,
                WriteCondition::None,
            ))
            .await
            .unwrap();
        // Delete markers are returned (they hide no prefix); the first visible
        // key of a prefix is returned and the rest of the prefix skipped.
        let all = delimited_keys(store.as_ref(), "", "/", None, 100).await;
        assert_eq!(
            all,
            [
                "a/1", "b", "c/1", "c/2", "c/3", "d/1", "e--1--x", "e--2", "f", "g/1"
            ],
            "{name}: delimiter /"
        );
        let latest = store
            .scan_latest_delimited("b", "", "/", None, 100)
            .await
            .unwrap();
        assert!(
            latest
                .iter()
                .all(|v| v.segments.is_empty() == v.delete_marker
                    && (v.delete_marker || v.segments[0].blob_id.ends_with("-1"))),
            "{name}: the latest version of each key"
        );
        // Paging with `limit` and a position: a short page ends exactly at
        // `limit`, and a position past a prefix resumes after it.
        assert_eq!(
            delimited_keys(store.as_ref(), "", "/", None, 3).await,
            ["a/1", "b", "c/1"],
            "{name}: limit"
        );
        assert_eq!(
            delimited_keys(store.as_ref(), "", "/", Some(b"a/\xFF"), 3).await,
            ["b", "c/1", "c/2"],
            "{name}: after a common prefix"
        );
        assert_eq!(
            delimited_keys(store.as_ref(), "", "/", Some(b"c/2"), 2).await,
            ["c/3", "d/1"],
            "{name}: after a delete marker inside a prefix"
        );
        // A prefix, a delimiter of two bytes, no delimiter.
        assert_eq!(
            delimited_keys(store.as_ref(), "a/", "/", None, 100).await,
            ["a/1", "a/2", "a/3/x"],
            "{name}: prefix a/"
        );
        assert_eq!(
            delimited_keys(store.as_ref(), "", "--", None, 100)
                .await
                .len(),
            12,
            "{name}: delimiter -- rolls e--1--x and e--2 into one"
        );
        assert_eq!(
            delimited_keys(store.as_ref(), "", "", None, 100)
                .await
                .len(),
            keys.len(),
            "{name}: no delimiter is scan_latest"
        );
        assert!(
            delimited_keys(store.as_ref(), "zz", "/", None, 100)
                .await
                .is_empty(),
            "{name}: an empty scope"
        );
    }
}

#[tokio::test]
async fn uploads_parts_and_completion() {
    for (name, store, _dir) in backends().await {
        store.create_bucket(bucket("b")).await.unwrap();
        let upload = common::upload("b", "big", "u1");
        store.create_upload(upload.clone()).await.unwrap();
        let part = |n: u32, blob: &str| PartRecord {
            size: 5,
            etag: format!("e{n}"),
            chunk_binding: ChunkBinding::Object,
            ..common::part(n, blob)
        };
        for n in 1..=3 {
            assert!(
                store
                    .put_part("b", "big", "u1", part(n, &format!("p{n}")), false)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
        assert_eq!(
            store
                .put_part("b", "big", "u1", part(2, "p2b"), false)
                .await
                .unwrap(),
            ["p2"],
            "{name}: re-uploading frees the old part"
        );
        assert!(matches!(
            store
                .put_part("b", "big", "nope", part(1, "x"), false)
                .await,
            Err(MetaError::NoSuchUpload)
        ));
        let listed = store.list_parts("u1", 0, 2).await.unwrap();
        assert_eq!(
            listed.iter().map(|p| p.part_number).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(store.list_parts("u1", 2, 10).await.unwrap().len(), 1);
        assert_eq!(
            store.list_uploads("b", "", None, 10).await.unwrap().len(),
            1
        );
        let mut record = version("b", "big", "p1", 5);
        record.segments = vec![
            DataSegment {
                blob_id: "p1".into(),
                size: 5,
                part_etag: Some("e1".into()),
                sealed_key: None,
                kms_key_arn: None,
                kms_context: None,
                sse_c: false,
                chunk_binding: ChunkBinding::Object,
            },
            DataSegment {
                blob_id: "p2b".into(),
                size: 5,
                part_etag: Some("e2".into()),
                sealed_key: None,
                kms_key_arn: None,
                kms_context: None,
                sse_c: false,
                chunk_binding: ChunkBinding::Object,
            },
        ];
        let outcome = store
            .complete_upload("u1", put(record, true, WriteCondition::None))
            .await
            .unwrap();
        assert_eq!(
            outcome.freed_blobs,
            ["p3"],
            "{name}: the unused part is freed"
        );
        assert!(store.blob_is_referenced("p1").await.unwrap());
        assert!(store.blob_is_referenced("p2b").await.unwrap());
        assert!(store.get_upload("b", "big", "u1").await.unwrap().is_none());
        assert!(store.list_parts("u1", 0, 10).await.unwrap().is_empty());
        let again = store
            .complete_upload(
                "u1",
                put(version("b", "big", "q", 6), true, WriteCondition::None),
            )
            .await;
        assert!(matches!(again, Err(MetaError::NoSuchUpload)), "{name}");
        // The parts became the version's segments with one reference each:
        // deleting the version frees them.
        let (_, mut freed) = store.delete_version("b", "big", "null").await.unwrap();
        freed.sort();
        assert_eq!(freed, ["p1", "p2b"], "{name}");
        assert!(!store.blob_is_referenced("p1").await.unwrap(), "{name}");
    }
}

#[tokio::test]
async fn a_shared_blob_is_freed_with_its_last_reference() {
    for (name, store, _dir) in backends().await {
        store.create_bucket(bucket("b")).await.unwrap();
        store.create_bucket(bucket("c")).await.unwrap();
        // A copy shares its source's blob: three records, one blob.
        for (b, k) in [("b", "src"), ("b", "copy"), ("c", "other")] {
            let outcome = store
                .put_version(put(version(b, k, "shared", 1), true, WriteCondition::None))
                .await
                .unwrap();
            assert!(outcome.freed_blobs.is_empty(), "{name}");
        }
        // Overwriting one with a version naming the same blob keeps the count.
        let outcome = store
            .put_version(put(
                version("b", "copy", "shared", 2),
                true,
                WriteCondition::None,
            ))
            .await
            .unwrap();
        assert!(outcome.freed_blobs.is_empty(), "{name}");
        let (_, freed) = store.delete_version("b", "src", "null").await.unwrap();
        assert!(freed.is_empty(), "{name}: still referenced twice");
        let outcome = store
            .put_version(put(
                version("b", "copy", "fresh", 3),
                true,
                WriteCondition::None,
            ))
            .await
            .unwrap();
        assert!(
            outcome.freed_blobs.is_empty(),
            "{name}: still referenced once"
        );
        assert!(store.blob_is_referenced("shared").await.unwrap(), "{name}");
        let (_, freed) = store.delete_version("c", "other", "null").await.unwrap();
        assert_eq!(freed, ["shared"], "{name}: the last reference frees it");
        assert!(!store.blob_is_referenced("shared").await.unwrap(), "{name}");
    }
}

#[tokio::test]
async fn a_write_sharing_a_freed_blob_fails_atomically() {
    for (name, store, _dir) in backends().await {
        store.create_bucket(bucket("b")).await.unwrap();
        store
            .put_version(put(
                version("b", "src", "shared", 1),
                true,
                WriteCondition::None,
            ))
            .await
            .unwrap();
        // A copy that shares the blob while the source holds it commits.
        let mut copy = put(
            version("b", "copy", "shared", 2),
            true,
            WriteCondition::None,
        );
        copy.shared_blobs = vec!["shared".into()];
        store.put_version(copy.clone()).await.unwrap();
        // A copy onto the source's own key replaces the very version it
        // shares with: checked before that reference goes, so it commits.
        let mut onto_itself = put(version("b", "src", "shared", 3), true, WriteCondition::None);
        onto_itself.shared_blobs = vec!["shared".into()];
        let outcome = store.put_version(onto_itself).await.unwrap();
        assert!(outcome.freed_blobs.is_empty(), "{name}");
        // Both go: the blob is freed with its last reference...
        store.delete_version("b", "src", "null").await.unwrap();
        let (_, freed) = store.delete_version("b", "copy", "null").await.unwrap();
        assert_eq!(freed, ["shared"], "{name}");
        // ...and a copy that unwrapped its keys before that commits nothing.
        let late = store.put_version(copy).await;
        assert!(
            matches!(late, Err(MetaError::SharedBlobGone(ref b)) if b == "shared"),
            "{name}: {late:?}"
        );
        assert!(
            store
                .get_version("b", "copy", None)
                .await
                .unwrap()
                .is_none(),
            "{name}"
        );
        assert!(!store.blob_is_referenced("shared").await.unwrap(), "{name}");

        // The same for a part that shares a blob (UploadPartCopy).
        store
            .put_version(put(
                version("b", "src", "held", 4),
                true,
                WriteCondition::None,
            ))
            .await
            .unwrap();
        store
            .create_upload(common::upload("b", "mp", "up"))
            .await
            .unwrap();
        let part = |blob: &str| PartRecord {
            etag: "e".into(),
            ..common::part(1, blob)
        };
        store
            .put_part("b", "mp", "up", part("held"), true)
            .await
            .unwrap();
        let (_, freed) = store.delete_version("b", "src", "null").await.unwrap();
        assert!(freed.is_empty(), "{name}: the part holds the blob");
        let late = store.put_part("b", "mp", "up", part("gone"), true).await;
        assert!(
            matches!(late, Err(MetaError::SharedBlobGone(ref b)) if b == "gone"),
            "{name}: {late:?}"
        );
        assert_eq!(
            store.list_parts("up", 0, 10).await.unwrap()[0].blob_id,
            "held"
        );
    }
}

#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    {
        let store = EmbeddedMetaStore::open(&path).unwrap();
        store.create_bucket(bucket("b")).await.unwrap();
        store
            .put_version(put(
                version("b", "k", "blob", 1),
                true,
                WriteCondition::None,
            ))
            .await
            .unwrap();
    }
    let store = EmbeddedMetaStore::open(&path).unwrap();
    assert_eq!(
        store
            .get_version("b", "k", None)
            .await
            .unwrap()
            .unwrap()
            .segments[0]
            .blob_id,
        "blob"
    );
}

fn doc_write(key: &str, expect: Expect, value: Option<&str>) -> DocumentWrite {
    DocumentWrite {
        namespace: "ns".into(),
        key: key.into(),
        expect,
        value: value.map(|v| v.as_bytes().to_vec()),
    }
}

#[tokio::test]
async fn documents_commit_atomically_with_revisions() {
    for (name, store, _dir) in document_backends().await {
        documents_commit_atomically(name, store).await;
    }
}

async fn documents_commit_atomically(name: &str, store: Arc<dyn DocumentStore>) {
    eprintln!("documents: {name}");
    store
        .commit_documents(vec![
            doc_write("a/1", Expect::Absent, Some("one")),
            doc_write("a/2", Expect::Absent, Some("two")),
        ])
        .await
        .unwrap();
    let one = store.get_document("ns", "a/1").await.unwrap().unwrap();
    assert_eq!((one.revision, one.value.as_slice()), (1, &b"one"[..]));
    // A failed expectation applies nothing of the batch.
    let failed = store
        .commit_documents(vec![
            doc_write("a/3", Expect::Absent, Some("three")),
            doc_write("a/1", Expect::Revision(7), Some("x")),
        ])
        .await;
    assert!(matches!(failed, Err(MetaError::PreconditionFailed)));
    assert!(store.get_document("ns", "a/3").await.unwrap().is_none());
    store
        .commit_documents(vec![doc_write("a/1", Expect::Revision(1), Some("uno"))])
        .await
        .unwrap();
    assert_eq!(
        store
            .get_document("ns", "a/1")
            .await
            .unwrap()
            .unwrap()
            .revision,
        2
    );
    assert!(matches!(
        store
            .commit_documents(vec![doc_write("a/2", Expect::Absent, Some("dup"))])
            .await,
        Err(MetaError::PreconditionFailed)
    ));
    // Concurrent updates from the same revision: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .commit_documents(vec![doc_write(
                    "a/2",
                    Expect::Revision(1),
                    Some(&format!("v{i}")),
                )])
                .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    store
        .commit_documents(vec![DocumentWrite {
            namespace: "other".into(),
            key: "a/9".into(),
            expect: Expect::Any,
            value: Some(vec![1]),
        }])
        .await
        .unwrap();
    let listed: Vec<String> = document_keys(&*store, "ns", "a/", None, 10).await;
    assert_eq!(listed, ["a/1", "a/2"], "scans stay inside their namespace");
    let after: Vec<String> = document_keys(&*store, "ns", "", Some("a/1"), 10).await;
    assert_eq!(after, ["a/2"]);
    store
        .commit_documents(vec![doc_write("a/1", Expect::Revision(2), None)])
        .await
        .unwrap();
    assert!(store.get_document("ns", "a/1").await.unwrap().is_none());
}

#[tokio::test]
async fn documents_scan_in_byte_order_in_pages() {
    for (name, store, _dir) in document_backends().await {
        let keys = ["a", "B", "é", "a/b", "a/", "a0", "z"];
        store
            .commit_documents(
                keys.iter()
                    .map(|k| doc_write(k, Expect::Absent, Some(k)))
                    .collect(),
            )
            .await
            .unwrap();
        let mut sorted = keys.to_vec();
        sorted.sort_unstable(); // byte order: "B" < "a" < ... < "é"
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store
                .scan_documents("ns", "", after.as_deref(), 3)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 3, "{name}");
            after = page.last().map(|d| d.key.clone());
            seen.extend(page.into_iter().map(|d| d.key));
        }
        assert_eq!(seen, sorted, "{name}: pages in byte order");
        let prefixed: Vec<String> = document_keys(&*store, "ns", "a/", None, 10).await;
        assert_eq!(prefixed, ["a/", "a/b"], "{name}");
        // A batch that writes one key twice sees its own first write.
        store
            .commit_documents(vec![
                doc_write("z", Expect::Revision(1), Some("z2")),
                doc_write("z", Expect::Revision(2), Some("z3")),
            ])
            .await
            .unwrap();
        let z = store.get_document("ns", "z").await.unwrap().unwrap();
        assert_eq!((z.revision, z.value.as_slice()), (3, &b"z3"[..]), "{name}");
        // Deleting an absent key with Expect::Any is a no-op; re-creating
        // a deleted key starts at revision 1 again.
        store
            .commit_documents(vec![
                doc_write("nothing", Expect::Any, None),
                doc_write("z", Expect::Revision(3), None),
            ])
            .await
            .unwrap();
        store
            .commit_documents(vec![doc_write("z", Expect::Absent, Some("again"))])
            .await
            .unwrap();
        assert_eq!(
            store
                .get_document("ns", "z")
                .await
                .unwrap()
                .unwrap()
                .revision,
            1,
            "{name}"
        );
        let nul = store
            .commit_documents(vec![doc_write("bad\0key", Expect::Any, Some("x"))])
            .await;
        assert!(matches!(nul, Err(MetaError::Backend(_))), "{name}: {nul:?}");
    }
}

#[tokio::test]
async fn scan_versions_pages_through_every_version() {
    for (name, store, _dir) in backends().await {
        store.create_bucket(bucket("b")).await.unwrap();
        for (i, key) in ["k1", "k2"].iter().enumerate() {
            for j in 0..3 {
                let t = i64::try_from(100 + i * 10 + j).unwrap();
                store
                    .put_version(put(
                        version("b", key, &format!("{key}-{j}"), t),
                        false,
                        WriteCondition::None,
                    ))
                    .await
                    .unwrap();
            }
        }
        let mut seen = Vec::new();
        let mut after: Option<(Vec<u8>, Option<u64>)> = None;
        loop {
            let page = store
                .scan_versions("b", "", after.as_ref().map(|(k, s)| (k.as_slice(), *s)), 2)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            let last = page.last().unwrap();
            after = Some((last.key.as_bytes().to_vec(), Some(last.seq)));
            seen.extend(page.into_iter().map(|v| v.segments[0].blob_id.clone()));
        }
        assert_eq!(
            seen,
            ["k1-2", "k1-1", "k1-0", "k2-2", "k2-1", "k2-0"],
            "{name}: key ascending, newest first"
        );
        let past_k1 = store
            .scan_versions("b", "", Some((b"k1", None)), 10)
            .await
            .unwrap();
        assert_eq!(past_k1.len(), 3, "{name}");
        assert!(past_k1.iter().all(|v| v.key == "k2"), "{name}");
        // Deleting the newest version makes the next one the latest.
        let newest = store.get_version("b", "k1", None).await.unwrap().unwrap();
        store
            .delete_version("b", "k1", &newest.version_id)
            .await
            .unwrap();
        let latest = store.scan_latest("b", "", None, 10).await.unwrap();
        assert_eq!(latest[0].segments[0].blob_id, "k1-1", "{name}");
        assert_eq!(
            store
                .get_version("b", "k1", None)
                .await
                .unwrap()
                .unwrap()
                .segments[0]
                .blob_id,
            "k1-1",
            "{name}"
        );
    }
}
