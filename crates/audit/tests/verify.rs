//! Offline verification of an exported log directory: it passes untouched, and
//! each kind of tampering is reported with its own error.

use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use nuage_audit::tiles::{decode_bundle, encode_bundle};
use nuage_audit::{
    Actor, ActorKind, AuditError, AuditLog, Authentication, Decision, Effect, Entry, export_dir,
    verify_dir,
};

const ORIGIN: &str = "nuage.example/audit/123456789012";

fn key() -> Arc<SigningKey> {
    Arc::new(SigningKey::from_bytes(&[9; 32]))
}

fn entry(i: u64) -> Entry {
    Entry {
        v: 1,
        time: time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_800_000_000 + i as i64),
        tenant: "123456789012".into(),
        actor: Actor {
            kind: ActorKind::TenantUser,
            id: Some("arn:aws:iam::123456789012:user/alice".into()),
            auth: Authentication::Sigv4Header,
            access_key_id: Some("AKIAEXAMPLE".into()),
        },
        action: "s3:GetObject".into(),
        resource: Some(format!("arn:aws:s3:::bucket/object-{i}")),
        source: Some("203.0.113.7".into()),
        request_id: Some(format!("req-{i:06}")),
        decision: Decision {
            effect: Effect::Allow,
            policy: None,
            statement: None,
        },
        key: None,
        justification: None,
        approval: None,
        status: Some(200),
        placement: None,
        replica: None,
    }
}

/// A log of `count` entries (from `entries`), signed and exported to `out`.
async fn exported(log_dir: &Path, out: &Path, entries: impl Iterator<Item = Entry>) -> AuditLog {
    let log = AuditLog::open_dir(log_dir, ORIGIN, key())
        .await
        .expect("open");
    for entry in entries {
        log.append(&entry).await.expect("append");
    }
    log.sign_checkpoint().await.expect("sign");
    export_dir(&log, out).await.expect("export");
    log
}

fn vkey() -> String {
    nuage_audit::verifier_key(ORIGIN, &key().verifying_key())
}

/// Rewrites the entries of bundle `path` in `dir`.
fn edit_bundle(dir: &Path, path: &str, edit: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let file = dir.join(path);
    let bytes = std::fs::read(&file).expect("read bundle");
    let mut entries = decode_bundle(path, &bytes).expect("decode");
    edit(&mut entries);
    std::fs::write(&file, encode_bundle(&entries)).expect("write bundle");
}

#[tokio::test]
async fn untouched_log_verifies_and_is_remembered() {
    let (log_dir, out) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let log = exported(log_dir.path(), out.path(), (0..300).map(entry)).await;
    let report = verify_dir(out.path(), &log.verifier_key(), None).expect("verifies");
    assert_eq!(report.size, 300);
    assert_eq!(report.trusted_size, None);
    assert!(out.path().join("tile/entries/001.p/44").exists());
    // The second run checks against the checkpoint the first one trusted.
    let again = verify_dir(out.path(), &vkey(), None).expect("verifies again");
    assert_eq!(again.trusted_size, Some(300));
    // The log grows; the new export is consistent with the trusted state.
    for i in 300..310 {
        log.append(&entry(i)).await.expect("append");
    }
    log.sign_checkpoint().await.expect("sign");
    export_dir(&log, out.path()).await.expect("export");
    let grown = verify_dir(out.path(), &vkey(), None).expect("grown log verifies");
    assert_eq!((grown.size, grown.trusted_size), (310, Some(300)));
}

#[tokio::test]
async fn edited_entry_is_reported() {
    let (log_dir, out) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    exported(log_dir.path(), out.path(), (0..300).map(entry)).await;
    edit_bundle(out.path(), "tile/entries/000", |entries| {
        // Same length, still valid JSON: another object name.
        let text = String::from_utf8(entries[5].clone()).expect("utf8");
        entries[5] = text.replace("object-5", "object-X").into_bytes();
    });
    assert!(matches!(
        verify_dir(out.path(), &vkey(), None),
        Err(AuditError::EditedEntry { index: 5 })
    ));
}

#[tokio::test]
async fn edited_entry_in_the_partial_bundle_is_reported() {
    let (log_dir, out) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    exported(log_dir.path(), out.path(), (0..300).map(entry)).await;
    edit_bundle(out.path(), "tile/entries/001.p/44", |entries| {
        entries[10] = entry(999).to_leaf().expect("leaf");
    });
    assert!(matches!(
        verify_dir(out.path(), &vkey(), None),
        Err(AuditError::EditedEntry { index: 266 })
    ));
}

#[tokio::test]
async fn deleted_entry_is_reported() {
    let (log_dir, out) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    exported(log_dir.path(), out.path(), (0..300).map(entry)).await;
    edit_bundle(out.path(), "tile/entries/000", |entries| {
        entries.remove(7);
    });
    assert!(matches!(
        verify_dir(out.path(), &vkey(), None),
        Err(AuditError::DeletedEntry { index: 7 })
    ));
}

#[tokio::test]
async fn deleted_last_entry_is_reported() {
    let (log_dir, out) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    exported(log_dir.path(), out.path(), (0..300).map(entry)).await;
    edit_bundle(out.path(), "tile/entries/001.p/44", |entries| {
        entries.pop();
    });
    assert!(matches!(
        verify_dir(out.path(), &vkey(), None),
        Err(AuditError::DeletedEntry { index: 299 })
    ));
}

#[tokio::test]
async fn reordered_entries_are_reported() {
    let (log_dir, out) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    exported(log_dir.path(), out.path(), (0..300).map(entry)).await;
    edit_bundle(out.path(), "tile/entries/000", |entries| entries.swap(3, 4));
    assert!(matches!(
        verify_dir(out.path(), &vkey(), None),
        Err(AuditError::ReorderedEntry {
            index: 3,
            belongs_at: 4
        })
    ));
}

#[tokio::test]
async fn rollback_to_an_older_state_is_reported() {
    let (log_dir, old, new) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let log = exported(log_dir.path(), old.path(), (0..100).map(entry)).await;
    for i in 100..300 {
        log.append(&entry(i)).await.expect("append");
    }
    log.sign_checkpoint().await.expect("sign");
    export_dir(&log, new.path()).await.expect("export");
    verify_dir(new.path(), &vkey(), None).expect("the current log verifies");
    // Someone puts the old (validly signed) state back in place of the new one,
    // keeping the verifier's memory of what it trusted.
    std::fs::copy(
        new.path().join("trusted-checkpoint"),
        old.path().join("trusted-checkpoint"),
    )
    .expect("copy");
    let error = verify_dir(old.path(), &vkey(), None).expect_err("rollback");
    assert!(
        matches!(
            error,
            AuditError::Rollback {
                trusted_size: 300,
                size: 100
            }
        ),
        "{error}"
    );
    assert!(error.to_string().starts_with("ROLLBACK"), "loud: {error}");
}

#[tokio::test]
async fn fork_is_reported() {
    // Two logs under the same name and key that diverge at entry 5: what a
    // server that signed two inconsistent checkpoints would show.
    let (dir_a, out_a, dir_b, out_b, dir_c, out_c) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    exported(dir_a.path(), out_a.path(), (0..10).map(entry)).await;
    let trusted = verify_dir(out_a.path(), &vkey(), None).expect("a verifies");
    assert_eq!(trusted.size, 10);
    let trusted_note = std::fs::read(out_a.path().join("trusted-checkpoint")).expect("trusted");

    let forked = (0..10).map(|i| if i == 5 { entry(500) } else { entry(i) });
    exported(dir_b.path(), out_b.path(), forked).await;
    let error = verify_dir(out_b.path(), &vkey(), Some(&trusted_note)).expect_err("fork");
    assert!(
        matches!(
            error,
            AuditError::Fork {
                trusted_size: 10,
                size: 10
            }
        ),
        "{error}"
    );

    // A larger fork: it is internally valid, but does not extend what was trusted.
    let forked = (0..20).map(|i| if i == 5 { entry(500) } else { entry(i) });
    exported(dir_c.path(), out_c.path(), forked).await;
    let error = verify_dir(out_c.path(), &vkey(), Some(&trusted_note)).expect_err("fork");
    assert!(
        matches!(
            error,
            AuditError::Fork {
                trusted_size: 10,
                size: 20
            }
        ),
        "{error}"
    );
    assert!(error.to_string().starts_with("FORK"), "loud: {error}");
}

#[tokio::test]
async fn bad_signature_is_reported() {
    let (log_dir, out) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    exported(log_dir.path(), out.path(), (0..3).map(entry)).await;
    // Another key's verifier.
    let other =
        nuage_audit::verifier_key(ORIGIN, &SigningKey::from_bytes(&[8; 32]).verifying_key());
    assert!(matches!(
        verify_dir(out.path(), &other, None),
        Err(AuditError::BadSignature(_))
    ));
    // A forged size under the genuine signature.
    let path = out.path().join("checkpoint");
    let text = std::fs::read_to_string(&path).expect("checkpoint");
    std::fs::write(&path, text.replacen("\n3\n", "\n2\n", 1)).expect("write");
    assert!(matches!(
        verify_dir(out.path(), &vkey(), None),
        Err(AuditError::BadSignature(_))
    ));
}

#[tokio::test]
async fn altered_hash_tile_is_reported() {
    let (log_dir, out) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    exported(log_dir.path(), out.path(), (0..20).map(entry)).await;
    let path = out.path().join("tile/0/000.p/20");
    let mut bytes = std::fs::read(&path).expect("tile");
    bytes[40] ^= 1;
    std::fs::write(&path, bytes).expect("write");
    assert!(matches!(
        verify_dir(out.path(), &vkey(), None),
        Err(AuditError::TileDoesNotMatchCheckpoint { .. })
    ));
}

#[tokio::test]
async fn entries_and_tiles_edited_together_still_fail() {
    let (log_dir, out) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    exported(log_dir.path(), out.path(), (0..20).map(entry)).await;
    let forged = entry(777).to_leaf().expect("leaf");
    let forged_hash = tlog_tiles::record_hash(&forged);
    edit_bundle(out.path(), "tile/entries/000.p/20", |entries| {
        entries[2] = forged
    });
    let path = out.path().join("tile/0/000.p/20");
    let mut bytes = std::fs::read(&path).expect("tile");
    bytes[64..96].copy_from_slice(&forged_hash.0);
    std::fs::write(&path, bytes).expect("write");
    assert!(matches!(
        verify_dir(out.path(), &vkey(), None),
        Err(AuditError::EntriesDoNotMatchCheckpoint)
    ));
}

#[tokio::test]
async fn missing_bundle_is_reported() {
    let (log_dir, out) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    exported(log_dir.path(), out.path(), (0..300).map(entry)).await;
    std::fs::remove_file(out.path().join("tile/entries/000")).expect("rm");
    assert!(matches!(
        verify_dir(out.path(), &vkey(), None),
        Err(AuditError::MissingBundle { .. })
    ));
}

#[tokio::test]
async fn json_lines_export_carries_a_checked_proof_per_entry() {
    for count in [1u64, 7, 256, 300, 513] {
        let (log_dir, out) = (
            tempfile::tempdir().expect("t"),
            tempfile::tempdir().expect("t"),
        );
        let log = exported(log_dir.path(), out.path(), (0..count).map(entry)).await;
        let mut lines = Vec::new();
        let written = nuage_audit::export_json_lines(out.path(), &log.verifier_key(), &mut lines)
            .unwrap_or_else(|e| panic!("export of {count}: {e}"));
        assert_eq!(written, count);
        let text = String::from_utf8(lines).expect("utf8");
        let mut lines = text.lines();
        let header: serde_json::Value =
            serde_json::from_str(lines.next().expect("header")).expect("json");
        let checkpoint = header["checkpoint"].as_str().expect("checkpoint");
        let root = nuage_audit::checkpoint::open(checkpoint.as_bytes(), &log.verifier_key())
            .expect("signed")
            .root;
        for (i, line) in lines.enumerate() {
            // The entry's bytes are on the line verbatim; the proof holds for them.
            let start = line.find("\"entry\":").expect("entry") + "\"entry\":".len();
            let end = line.rfind(",\"inclusion_proof\":").expect("proof");
            let entry = &line[start..end];
            assert_eq!(entry.as_bytes(), entry_leaf(i as u64).as_slice());
            let value: serde_json::Value = serde_json::from_str(line).expect("json");
            let proof: nuage_audit::InclusionProof =
                serde_json::from_value(value["inclusion_proof"].clone()).expect("proof");
            proof.verify(entry.as_bytes(), root).expect("inclusion");
        }
    }
}

fn entry_leaf(i: u64) -> Vec<u8> {
    entry(i).to_leaf().expect("leaf")
}
