//! Append throughput with and without group commit. Ignored by default: it
//! measures the disk, prints figures and asserts nothing about time.
//!
//! `cargo test -p nuage-audit --test throughput -- --ignored --nocapture`

use std::sync::Arc;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use nuage_audit::{Actor, ActorKind, AuditLog, Authentication, Decision, Effect, Entry};

fn entry(i: u64) -> Entry {
    Entry {
        v: 1,
        time: time::OffsetDateTime::now_utc(),
        tenant: "123456789012".into(),
        actor: Actor {
            kind: ActorKind::TenantUser,
            id: Some("arn:aws:iam::123456789012:user/alice".into()),
            auth: Authentication::Sigv4Header,
            access_key_id: Some("AKIAIOSFODNN7EXAMPLE".into()),
        },
        action: "s3:PutObject".into(),
        resource: Some(format!("arn:aws:s3:::photos/2026/11/{i:08}.jpg")),
        source: Some("203.0.113.7".into()),
        request_id: Some(format!("{i:016x}")),
        decision: Decision {
            effect: Effect::Allow,
            policy: Some("arn:aws:iam::123456789012:policy/writers".into()),
            statement: Some("AllowPut".into()),
        },
        key: Some("arn:aws:kms:eu-west-3:123456789012:key/1234abcd".into()),
        justification: Some("CUSTOMER_INITIATED_ACCESS".into()),
        approval: None,
        status: Some(200),
        placement: None,
        replica: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures the disk; run by hand"]
async fn append_throughput() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = AuditLog::open_dir(
        dir.path(),
        "nuage.example/audit/123456789012",
        Arc::new(SigningKey::from_bytes(&[1; 32])),
    )
    .await
    .expect("open");

    // One caller at a time: every append is its own commit (one fsync round).
    let sequential = 300u64;
    let started = Instant::now();
    for i in 0..sequential {
        log.append(&entry(i)).await.expect("append");
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "sequential: {sequential} appends in {elapsed:.2} s = {:.0} appends/s",
        sequential as f64 / elapsed
    );

    // Many concurrent callers: appends that wait share a commit.
    for callers in [16u64, 256, 1024] {
        let per_caller = 20_000 / callers;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..callers {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0..per_caller {
                    log.append(&entry(c * 1_000_000 + k)).await.expect("append");
                }
            }));
        }
        for task in tasks {
            task.await.expect("join");
        }
        let total = callers * per_caller;
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "{callers} concurrent callers: {total} appends in {elapsed:.2} s = {:.0} appends/s",
            total as f64 / elapsed
        );
    }
    let size = log.size();
    let signed = log.sign_checkpoint().await.expect("sign");
    assert_eq!(signed.size, size);
}
