//! Retention: pruning old entry bundles behind a signed marker keeps every root,
//! proof and the verification of what is kept, and a verifier accepts missing
//! bundles only under a genuine marker.

use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use nuage_audit::{
    Actor, ActorKind, AuditError, AuditLog, Authentication, Decision, Effect, Entry, export_dir,
    retention_cutoff, verify_dir,
};
use time::OffsetDateTime;
use time::macros::datetime;

const ORIGIN: &str = "nuage.example/audit/123456789012";
const NOW: OffsetDateTime = datetime!(2026-11-29 12:00 UTC);

fn key() -> Arc<SigningKey> {
    Arc::new(SigningKey::from_bytes(&[5; 32]))
}

fn entry(i: u64, time: OffsetDateTime) -> Entry {
    Entry {
        v: 1,
        time,
        tenant: "123456789012".into(),
        actor: Actor {
            kind: ActorKind::Operator,
            id: Some("operator".into()),
            auth: Authentication::BearerToken,
            access_key_id: None,
        },
        action: "admin:GetTenant".into(),
        resource: None,
        source: Some("198.51.100.1".into()),
        request_id: Some(format!("req-{i}")),
        decision: Decision {
            effect: Effect::Deny,
            policy: None,
            statement: None,
        },
        key: None,
        justification: None,
        approval: None,
        status: Some(403),
        placement: None,
        replica: None,
    }
}

/// A year-old entry for `i < old`, a fresh one otherwise.
fn aged(i: u64, old: u64) -> Entry {
    if i < old {
        entry(i, NOW - time::Duration::days(365))
    } else {
        entry(i, NOW - time::Duration::days(1))
    }
}

async fn log_of(dir: &Path, entries: impl Iterator<Item = Entry>) -> AuditLog {
    let log = AuditLog::open_dir(dir, ORIGIN, key()).await.expect("open");
    for entry in entries {
        log.append(&entry).await.expect("append");
    }
    log
}

fn cutoff() -> OffsetDateTime {
    retention_cutoff(NOW, nuage_base::limits::AUDIT_RETENTION_DAYS_DEFAULT)
}

#[tokio::test]
async fn pruning_drops_old_bundles_and_keeps_verification() {
    let (dir, out) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let log = log_of(dir.path(), (0..600).map(|i| aged(i, 530))).await;
    // Nothing is published yet, so nothing may be pruned.
    assert_eq!(log.prune(cutoff()).await.expect("prune"), 0);
    let signed = log.sign_checkpoint().await.expect("sign");
    // Bundles 0 and 1 are all old; bundle 2 holds fresh entries.
    assert_eq!(log.prune(cutoff()).await.expect("prune"), 512);
    assert!(matches!(
        log.read_tile("tile/entries/001").await,
        Err(AuditError::Pruned {
            minimum_index: 512,
            ..
        })
    ));
    assert!(matches!(
        log.read_entries(0, 1).await,
        Err(AuditError::Pruned { .. })
    ));
    log.read_tile("tile/entries/002.p/88")
        .await
        .expect("kept bundle");
    log.read_tile("tile/0/000").await.expect("hash tiles stay");
    // Proofs about pruned entries still verify against the same root.
    let proof = log.inclusion_proof(3, 600).await.expect("proof");
    proof
        .verify(&aged(3, 530).to_leaf().expect("leaf"), signed.root)
        .expect("inclusion of a pruned entry");

    export_dir(&log, out.path()).await.expect("export");
    assert!(!out.path().join("tile/entries/000").exists());
    assert!(out.path().join("pruned").exists());
    let report = verify_dir(out.path(), &log.verifier_key(), None).expect("verifies");
    assert_eq!((report.size, report.minimum_index), (600, 512));

    // Reopened, the log still refuses the pruned bundles.
    log.close().await.expect("close");
    let log = AuditLog::open_dir(dir.path(), ORIGIN, key())
        .await
        .expect("reopen");
    assert_eq!(log.minimum_index(), 512);
    assert!(log.read_tile("tile/entries/000").await.is_err());
}

#[tokio::test]
async fn pruning_never_takes_a_bundle_with_a_recent_entry() {
    let dir = tempfile::tempdir().expect("t");
    let entries = (0..600).map(|i| if i == 300 { aged(i, 0) } else { aged(i, 600) });
    let log = log_of(dir.path(), entries).await;
    log.sign_checkpoint().await.expect("sign");
    // Bundle 0 is old; bundle 1 holds entry 300, one day old: pruning stops there.
    assert_eq!(log.prune(cutoff()).await.expect("prune"), 256);
    // Old entries beyond the last checkpoint's full bundles are not pruned either.
    assert_eq!(log.prune(NOW).await.expect("prune"), 512);
}

#[tokio::test]
async fn missing_bundles_without_a_marker_are_refused() {
    let (dir, out) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let log = log_of(dir.path(), (0..600).map(|i| aged(i, 600))).await;
    log.sign_checkpoint().await.expect("sign");
    log.prune(cutoff()).await.expect("prune");
    export_dir(&log, out.path()).await.expect("export");
    std::fs::remove_file(out.path().join("pruned")).expect("rm marker");
    assert!(matches!(
        verify_dir(out.path(), &log.verifier_key(), None),
        Err(AuditError::MissingBundle { .. })
    ));
}

#[tokio::test]
async fn a_forged_marker_is_refused() {
    let (dir, out) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let log = log_of(dir.path(), (0..600).map(|i| aged(i, 0))).await;
    log.sign_checkpoint().await.expect("sign");
    export_dir(&log, out.path()).await.expect("export");
    // Someone deletes old bundles and signs a marker with a key of their own.
    let forged =
        nuage_audit::prune::sign(ORIGIN, 512, &SigningKey::from_bytes(&[6; 32])).expect("sign");
    std::fs::write(out.path().join("pruned"), forged.note).expect("write");
    std::fs::remove_file(out.path().join("tile/entries/000")).expect("rm");
    assert!(matches!(
        verify_dir(out.path(), &log.verifier_key(), None),
        Err(AuditError::BadSignature(_))
    ));
}

#[tokio::test]
async fn an_altered_hash_tile_under_a_pruned_bundle_is_caught() {
    let (dir, out) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let log = log_of(dir.path(), (0..600).map(|i| aged(i, 600))).await;
    log.sign_checkpoint().await.expect("sign");
    log.prune(cutoff()).await.expect("prune");
    export_dir(&log, out.path()).await.expect("export");
    let path = out.path().join("tile/0/000");
    let mut bytes = std::fs::read(&path).expect("tile");
    bytes[0] ^= 1;
    std::fs::write(&path, bytes).expect("write");
    assert!(matches!(
        verify_dir(out.path(), &log.verifier_key(), None),
        Err(AuditError::EntriesDoNotMatchCheckpoint)
    ));
}
