//! Several gateways on one PostgreSQL database: two `PostgresMetaStore`s
//! (two pools, as two `nuage` processes would have) serve one consistent
//! namespace. What one commits the other reads at once (read-after-write,
//! list-after-write), and concurrent conditional writes from both resolve
//! with exactly one winner. Also: migrations run once, survive two stores
//! starting at once, and data survives reconnecting.
//!
//! Runs against the throwaway PostgreSQL of `nuage-testsupport`; skipped
//! (with a notice) where PostgreSQL is not installed, failed in CI.
#![allow(clippy::unwrap_used)]

use nuage_meta::postgres::{PostgresConfig, PostgresMetaStore};
use nuage_meta::*;
use std::sync::Arc;

mod common;

use common::{part, upload};

/// Two stores on one fresh database, or None when PostgreSQL is absent.
async fn two_gateways() -> Option<(Arc<PostgresMetaStore>, Arc<PostgresMetaStore>)> {
    let config = PostgresConfig::new(common::postgres_url().await?);
    // Both start at once: the migrations race, and both must come up.
    let (a, b) = tokio::join!(
        PostgresMetaStore::connect(&config),
        PostgresMetaStore::connect(&config)
    );
    Some((Arc::new(a.unwrap()), Arc::new(b.unwrap())))
}

fn bucket(name: &str) -> BucketRecord {
    common::bucket(name, Versioning::Enabled)
}

fn version(bucket: &str, key: &str, blob: &str, t: i64) -> VersionRecord {
    common::version(bucket, key, blob, t, ChunkBinding::Blob)
}

fn put(record: VersionRecord, condition: WriteCondition) -> PutVersion {
    PutVersion {
        record,
        null_version: false,
        condition,
        shared_blobs: Vec::new(),
    }
}

#[tokio::test]
async fn a_write_on_one_gateway_is_read_and_listed_on_the_other() {
    let Some((a, b)) = two_gateways().await else {
        return;
    };
    a.create_bucket(bucket("shared")).await.unwrap();
    assert!(b.get_bucket("shared").await.unwrap().is_some());
    assert!(matches!(
        b.create_bucket(bucket("shared")).await,
        Err(MetaError::BucketAlreadyExists)
    ));
    for i in 0..20_i64 {
        let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let key = format!("k{i:02}");
        let written = writer
            .put_version(put(
                version("shared", &key, &format!("blob{i}"), 10 + i),
                WriteCondition::None,
            ))
            .await
            .unwrap()
            .record;
        // Read-after-write on the other gateway, with no delay.
        let read = reader
            .get_version("shared", &key, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, written);
        // List-after-write: the new key is in the other gateway's listing.
        let listed = reader.scan_latest("shared", "", None, 1000).await.unwrap();
        assert_eq!(listed.len(), usize::try_from(i + 1).unwrap());
        assert_eq!(listed.last().unwrap().key, key);
    }
    // A delete on one gateway is seen by the other.
    let gone = a.get_version("shared", "k05", None).await.unwrap().unwrap();
    a.delete_version("shared", "k05", &gone.version_id)
        .await
        .unwrap();
    assert!(
        b.get_version("shared", "k05", None)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        b.scan_latest("shared", "", None, 1000).await.unwrap().len(),
        19
    );
    assert_eq!(b.count_versions().await.unwrap(), 19);
    // Documents too.
    a.commit_documents(vec![DocumentWrite {
        namespace: "iam".into(),
        key: "user/alice".into(),
        expect: Expect::Absent,
        value: Some(b"alice".to_vec()),
    }])
    .await
    .unwrap();
    let doc = b.get_document("iam", "user/alice").await.unwrap().unwrap();
    assert_eq!((doc.revision, doc.value.as_slice()), (1, &b"alice"[..]));
}

#[tokio::test]
async fn concurrent_conditional_writes_from_two_gateways_have_one_winner() {
    let Some((a, b)) = two_gateways().await else {
        return;
    };
    a.create_bucket(bucket("race")).await.unwrap();
    for round in 0..3 {
        let key = format!("once-{round}");
        let mut tasks = Vec::new();
        for i in 0..12 {
            let store = if i % 2 == 0 {
                Arc::clone(&a)
            } else {
                Arc::clone(&b)
            };
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .put_version(put(
                        version("race", &key, &format!("blob-{round}-{i}"), 1),
                        WriteCondition::IfNoneMatchAny,
                    ))
                    .await
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(outcome) => winners.push(outcome.record),
                Err(MetaError::PreconditionFailed) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one If-None-Match:* wins"
        );
        let stored = b.get_version("race", &key, None).await.unwrap().unwrap();
        assert_eq!(stored, winners[0]);
        let versions = a.scan_versions("race", &key, None, 100).await.unwrap();
        assert_eq!(versions.len(), 1, "round {round}: no loser left a version");
        // Exactly the winner's blob is referenced.
        for i in 0..12 {
            let blob = format!("blob-{round}-{i}");
            let referenced = a.blob_is_referenced(&blob).await.unwrap();
            assert_eq!(referenced, stored.segments[0].blob_id == blob, "{blob}");
        }
    }
    // If-Match races: from one known ETag, exactly one replacement wins.
    let current = a
        .get_version("race", "once-0", None)
        .await
        .unwrap()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        let etag = current.etag.clone();
        tasks.push(tokio::spawn(async move {
            store
                .put_version(put(
                    version("race", "once-0", &format!("next-{i}"), 2),
                    WriteCondition::IfMatch(etag),
                ))
                .await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(MetaError::PreconditionFailed) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1, "exactly one If-Match wins");
}

#[tokio::test]
async fn complete_and_abort_of_one_upload_race_to_one_outcome() {
    let Some((a, b)) = two_gateways().await else {
        return;
    };
    a.create_bucket(bucket("mp")).await.unwrap();
    for round in 0..4 {
        let id = format!("up-{round}");
        a.create_upload(upload("mp", "big", &id)).await.unwrap();
        b.put_part("mp", "big", &id, part(1, &format!("{id}-p1")), false)
            .await
            .unwrap();
        a.put_part("mp", "big", &id, part(2, &format!("{id}-p2")), false)
            .await
            .unwrap();
        let mut record = version("mp", "big", &format!("{id}-p1"), 5);
        record.segments.push(record.segments[0].clone());
        record.segments[1].blob_id = format!("{id}-p2");
        let complete = put(record, WriteCondition::None);
        // Alternate which gateway completes and which aborts.
        let (completer, aborter) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (completed, aborted) = tokio::join!(
            completer.complete_upload(&id, complete),
            aborter.abort_upload("mp", "big", &id)
        );
        match (completed, aborted) {
            (Ok(outcome), Err(MetaError::NoSuchUpload)) => {
                assert!(outcome.freed_blobs.is_empty(), "both parts became segments");
                let latest = b.get_version("mp", "big", None).await.unwrap().unwrap();
                assert_eq!(latest, outcome.record);
                for p in ["p1", "p2"] {
                    assert!(a.blob_is_referenced(&format!("{id}-{p}")).await.unwrap());
                }
            }
            (Err(MetaError::NoSuchUpload), Ok(mut freed)) => {
                freed.sort();
                assert_eq!(freed, [format!("{id}-p1"), format!("{id}-p2")]);
                for p in ["p1", "p2"] {
                    assert!(!a.blob_is_referenced(&format!("{id}-{p}")).await.unwrap());
                }
            }
            (c, ab) => panic!("round {round}: both or neither won: {c:?} / {ab:?}"),
        }
        assert!(a.get_upload("mp", "big", &id).await.unwrap().is_none());
        assert!(b.list_parts(&id, 0, 10).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn concurrent_document_commits_with_one_revision_have_one_winner() {
    let Some((a, b)) = two_gateways().await else {
        return;
    };
    let write = |expect, value: &str| DocumentWrite {
        namespace: "kms.key".into(),
        key: "key-1".into(),
        expect,
        value: Some(value.as_bytes().to_vec()),
    };
    a.commit_documents(vec![write(Expect::Absent, "v0")])
        .await
        .unwrap();
    for revision in 1..=3_u64 {
        let mut tasks = Vec::new();
        for i in 0..10 {
            let store = if i % 2 == 0 {
                Arc::clone(&a)
            } else {
                Arc::clone(&b)
            };
            let w = write(Expect::Revision(revision), &format!("r{revision}-{i}"));
            tasks.push(tokio::spawn(async move {
                store.commit_documents(vec![w]).await
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => won += 1,
                Err(MetaError::PreconditionFailed) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(won, 1, "revision {revision}: exactly one commit wins");
        let doc = b.get_document("kms.key", "key-1").await.unwrap().unwrap();
        assert_eq!(doc.revision, revision + 1);
    }
}

#[tokio::test]
async fn migrations_run_once_and_data_survives_reconnecting() {
    let Some(server) = nuage_testsupport::postgres::server() else {
        return;
    };
    let url = tokio::task::spawn_blocking(|| server.create_database())
        .await
        .unwrap();
    let config = PostgresConfig::new(url);
    {
        let store = PostgresMetaStore::connect(&config).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), 1);
        store.create_bucket(bucket("kept")).await.unwrap();
        store
            .put_version(put(version("kept", "k", "blob", 1), WriteCondition::None))
            .await
            .unwrap();
    }
    let store = PostgresMetaStore::connect(&config).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 1);
    let record = store.get_version("kept", "k", None).await.unwrap().unwrap();
    assert_eq!(record.segments[0].blob_id, "blob");
    // An up-to-date database runs no DDL: a user that may only read and
    // write rows (no CREATE on the schema) starts and works.
    let dbname = config.url.rsplit('/').next().unwrap().to_owned();
    let role = format!("rows_only_{dbname}");
    let (admin, connection) = tokio_postgres::connect(&config.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; \
             REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
             GRANT USAGE ON SCHEMA public TO {role}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};"
        ))
        .await
        .unwrap();
    let limited = PostgresConfig::new(format!(
        "postgres://{role}@127.0.0.1:{}/{dbname}",
        server.port()
    ));
    let limited = PostgresMetaStore::connect(&limited).await.unwrap();
    assert!(limited.get_bucket("kept").await.unwrap().is_some());
    limited
        .put_version(put(version("kept", "k2", "blob2", 2), WriteCondition::None))
        .await
        .unwrap();
    // A wrong password never shows up in the error.
    let mut wrong = PostgresConfig::new("postgres://nuage@127.0.0.1:1/none");
    wrong.password = Some("sekret-password".into());
    let error = PostgresMetaStore::connect(&wrong).await.err().unwrap();
    assert!(!error.to_string().contains("sekret"), "{error}");
    let malformed = PostgresConfig::new("postgres://nuage:sekret@127.0.0.1:notaport/db");
    let error = PostgresMetaStore::connect(&malformed).await.err().unwrap();
    assert!(!error.to_string().contains("sekret"), "{error}");
}

#[tokio::test]
async fn connections_the_database_dropped_are_replaced() {
    let Some(server) = nuage_testsupport::postgres::server() else {
        return;
    };
    let url = tokio::task::spawn_blocking(|| server.create_database())
        .await
        .unwrap();
    let dbname = url.rsplit('/').next().unwrap().to_owned();
    let store = PostgresMetaStore::connect(&PostgresConfig::new(url))
        .await
        .unwrap();
    store.create_bucket(bucket("kept")).await.unwrap();
    // Several pooled connections are open now.
    let reads = (0..4).map(|_| store.get_bucket("kept"));
    for read in futures_join(reads).await {
        assert!(read.unwrap().is_some());
    }
    // The database drops every connection to this database (as a restart
    // or a failover would).
    let (admin, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={} dbname=postgres",
            server.port(),
            nuage_testsupport::postgres::USER
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&dbname],
        )
        .await
        .unwrap();
    assert!(!killed.is_empty());
    // Every operation still succeeds: a connection found closed when its
    // transaction begins is replaced.
    for _ in 0..8 {
        assert!(store.get_bucket("kept").await.unwrap().is_some());
    }
    store.create_bucket(bucket("after")).await.unwrap();
}

/// Awaits every future (in order), without another dependency.
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.collect();
    let mut out = Vec::new();
    for f in handles {
        out.push(f.await);
    }
    out
}
