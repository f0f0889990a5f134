//! Crash safety, end to end: concurrent writers (single-part puts of every size
//! class, multipart uploads, overwrites, deletes), `kill -9` at a random moment,
//! restart on the same data directory, then check that
//! - every acknowledged write reads back byte for byte (MD5 and length), and a
//!   write in flight at the kill shows either its old or its new value, never
//!   anything else (no partial object);
//! - the listing holds no key outside those acceptable values, and every listed
//!   key can be read in full;
//! - after the last crash no space leaks: once incomplete multipart uploads are
//!   aborted, the blob files on disk are exactly those the live objects use
//!   (the orphan collector removed every leftover).
//!
//! The schedule is random but seeded; the seed is printed, and
//! `NUAGE_CRASH_SEED=<seed>` replays it (timing still varies).
#![allow(clippy::unwrap_used)]

mod common;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use md5::{Digest as _, Md5};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
const WRITERS: usize = 8;
const KEYS_PER_WRITER: usize = 6;
const BUCKET: &str = "crash";
const BLOCK: usize = 256 * 1024;
const MIB: usize = 1024 * 1024;
/// How long the orphan collector gets to remove leftovers after the last restart.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A bound on writers noticing the kill (a dead server refuses at once).
const WRITERS_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What a key holds: nothing, or an object with this MD5 and length.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Absent,
    Present { md5: [u8; 16], len: u64 },
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Absent => f.write_str("absent"),
            Self::Present { md5, len } => write!(f, "{len} bytes with MD5 {}", hex::encode(md5)),
        }
    }
}

impl State {
    fn of(data: &[u8]) -> Self {
        Self::Present {
            md5: Md5::digest(data).into(),
            len: data.len() as u64,
        }
    }
}

/// One key's history as the clients saw it. Each key belongs to one writer, so
/// its operations are sequential and at most one is unacknowledged.
#[derive(Debug)]
struct Entry {
    /// The value of the last acknowledged write (or what a restart showed).
    acked: State,
    /// The value of a write sent but not acknowledged (in flight at the kill).
    pending: Option<State>,
}

impl Entry {
    fn acceptable(&self) -> Vec<State> {
        let mut out = vec![self.acked];
        out.extend(self.pending);
        out
    }
}

#[derive(Default)]
struct Ledger(Mutex<BTreeMap<String, Entry>>);

impl Ledger {
    /// Records a write about to be sent.
    fn begin(&self, key: &str, next: State) {
        let mut map = self.0.lock().unwrap();
        let entry = map.entry(key.to_owned()).or_insert(Entry {
            acked: State::Absent,
            pending: None,
        });
        assert!(entry.pending.is_none(), "{key}: two writes in flight");
        entry.pending = Some(next);
    }

    /// Records that the write begun on `key` was acknowledged.
    fn ack(&self, key: &str) {
        let mut map = self.0.lock().unwrap();
        let entry = map.get_mut(key).unwrap();
        entry.acked = entry.pending.take().unwrap();
    }
}

#[derive(Default, Debug)]
struct WriterStats {
    acked: usize,
    in_flight_at_kill: usize,
}

fn client(server: &common::Server) -> Client {
    // No retries: a retry could land on the next server, after verification
    // has started; and a failed request must be seen as unacknowledged.
    server.client_with(|b| {
        b.retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .stalled_stream_protection(aws_sdk_s3::config::StalledStreamProtectionConfig::disabled())
    })
}

fn pick_size(rng: &mut StdRng) -> usize {
    match rng.gen_range(0..10) {
        0 => 0,
        1..=3 => rng.gen_range(1..4096),
        4 => BLOCK - 1 + rng.gen_range(0..3), // around the blob block size
        5 | 6 => rng.gen_range(4096..2 * BLOCK),
        _ => rng.gen_range(2 * BLOCK..=3 * MIB),
    }
}

async fn put(s3: &Client, ledger: &Ledger, key: &str, rng: &mut StdRng) -> Result<(), String> {
    let data = common::random_bytes(pick_size(rng), rng.next_u64());
    ledger.begin(key, State::of(&data));
    s3.put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from(data))
        .send()
        .await
        .map_err(|e| {
            format!(
                "PutObject {key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    ledger.ack(key);
    Ok(())
}

async fn delete(s3: &Client, ledger: &Ledger, key: &str) -> Result<(), String> {
    ledger.begin(key, State::Absent);
    s3.delete_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            format!(
                "DeleteObject {key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    ledger.ack(key);
    Ok(())
}

/// A two-part upload: 5 MiB and a bit, then up to 1 MiB.
async fn multipart(
    s3: &Client,
    ledger: &Ledger,
    key: &str,
    rng: &mut StdRng,
) -> Result<(), String> {
    let parts = [
        common::random_bytes(5 * MIB + rng.gen_range(0..BLOCK), rng.next_u64()),
        common::random_bytes(rng.gen_range(1..=MIB), rng.next_u64()),
    ];
    ledger.begin(key, State::of(&parts.concat()));
    let fail = |op: &str, e: String| format!("{op} {key}: {e}");
    let upload = s3
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            fail(
                "CreateMultipartUpload",
                aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            )
        })?;
    let upload_id = upload.upload_id().unwrap().to_owned();
    let mut completed = Vec::new();
    for (n, part) in (1..).zip(parts) {
        let out = s3
            .upload_part()
            .bucket(BUCKET)
            .key(key)
            .upload_id(&upload_id)
            .part_number(n)
            .body(ByteStream::from(part))
            .send()
            .await
            .map_err(|e| {
                fail(
                    "UploadPart",
                    aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
                )
            })?;
        completed.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            fail(
                "CompleteMultipartUpload",
                aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            )
        })?;
    ledger.ack(key);
    Ok(())
}

/// Writes to its own keys until the server is killed. An error before the kill
/// is a server bug; an error after it leaves the write unacknowledged.
async fn writer(
    id: usize,
    s3: Client,
    ledger: Arc<Ledger>,
    killed: Arc<AtomicBool>,
    seed: u64,
) -> Result<WriterStats, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = WriterStats::default();
    while !killed.load(Ordering::SeqCst) {
        let key = format!("w{id}/k{}", rng.gen_range(0..KEYS_PER_WRITER));
        let result = match rng.gen_range(0..100) {
            0..15 => delete(&s3, &ledger, &key).await,
            15..27 => multipart(&s3, &ledger, &key, &mut rng).await,
            _ => put(&s3, &ledger, &key, &mut rng).await,
        };
        match result {
            Ok(()) => stats.acked += 1,
            Err(_) if killed.load(Ordering::SeqCst) => {
                stats.in_flight_at_kill += 1;
                break;
            }
            Err(e) => return Err(format!("writer {id} failed before the kill: {e}")),
        }
    }
    Ok(stats)
}

/// Every object the listing shows: key -> (size, ETag).
async fn list_all(s3: &Client) -> BTreeMap<String, (i64, String)> {
    let mut out = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(BUCKET)
            .set_continuation_token(token.take())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "ListObjectsV2 failed after a restart (the bucket must survive): {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
        for object in page.contents() {
            out.insert(
                object.key().unwrap().to_owned(),
                (
                    object.size().unwrap_or(-1),
                    object.e_tag().unwrap_or_default().to_owned(),
                ),
            );
        }
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
            _ => break,
        }
    }
    out
}

/// Checks what a restarted server shows against the ledger, then settles each
/// key on what it showed. Returns the listing and the problems found.
async fn verify(s3: &Client, ledger: &Ledger) -> (BTreeMap<String, (i64, String)>, Vec<String>) {
    let listed = list_all(s3).await;
    let mut problems = Vec::new();
    let keys: Vec<String> = ledger
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .keys()
        .cloned()
        .collect();
    for key in listed.keys() {
        if !keys.contains(key) {
            problems.push(format!("{key}: listed but never written"));
        }
    }
    for key in keys {
        let seen = match s3.get_object().bucket(BUCKET).key(&key).send().await {
            Ok(out) => {
                let announced = out.content_length();
                match out.body.collect().await {
                    Ok(body) => {
                        let body = body.into_bytes();
                        if announced != Some(body.len() as i64) {
                            problems.push(format!(
                                "{key}: Content-Length {announced:?} but {} bytes read",
                                body.len()
                            ));
                        }
                        match listed.get(&key) {
                            None => problems.push(format!("{key}: readable but not listed")),
                            Some((size, _)) if *size != body.len() as i64 => {
                                problems.push(format!(
                                    "{key}: listed with size {size} but {} bytes read",
                                    body.len()
                                ));
                            }
                            Some(_) => {}
                        }
                        Some(State::of(&body))
                    }
                    Err(e) => {
                        problems.push(format!(
                            "{key}: body failed mid-stream (partial or corrupt object): {e}"
                        ));
                        None
                    }
                }
            }
            Err(e)
                if e.as_service_error().is_some_and(
                    aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key,
                ) =>
            {
                if listed.contains_key(&key) {
                    problems.push(format!("{key}: listed but GET says NoSuchKey"));
                }
                Some(State::Absent)
            }
            Err(e) => {
                problems.push(format!(
                    "{key}: GET failed: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                ));
                None
            }
        };
        let mut map = ledger
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = map.get_mut(&key).unwrap();
        if let Some(seen) = seen {
            if !entry.acceptable().contains(&seen) {
                problems.push(format!(
                    "{key}: shows {seen:?}, expected the acknowledged {:?}{}",
                    entry.acked,
                    entry
                        .pending
                        .map(|p| format!(" or the in-flight {p:?}"))
                        .unwrap_or_default()
                ));
            }
            entry.acked = seen;
        }
        entry.pending = None;
    }
    (listed, problems)
}

/// Blob files on disk: `<data_dir>/blobs/<shard>/<id>`.
fn count_blobs(data_dir: &Path) -> usize {
    let mut n = 0;
    for shard in std::fs::read_dir(data_dir.join("blobs")).unwrap() {
        let shard = shard.unwrap();
        if shard.file_type().unwrap().is_dir() {
            n += std::fs::read_dir(shard.path()).unwrap().count();
        }
    }
    n
}

/// The blobs an object needs: one per part for a multipart object (its ETag
/// ends in `-N`), else one (zero-length objects too).
fn blobs_needed(etag: &str) -> usize {
    etag.trim_matches('"')
        .rsplit_once('-')
        .map_or(1, |(_, n)| n.parse().unwrap())
}

async fn abort_all_uploads(s3: &Client) -> usize {
    let uploads = s3
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert_ne!(
        uploads.is_truncated(),
        Some(true),
        "more incomplete uploads than one page"
    );
    for upload in uploads.uploads() {
        s3.abort_multipart_upload()
            .bucket(BUCKET)
            .key(upload.key().unwrap())
            .upload_id(upload.upload_id().unwrap())
            .send()
            .await
            .unwrap();
    }
    uploads.uploads().len()
}

fn fail_with(seed: u64, when: &str, problems: &[String]) -> ! {
    panic!(
        "crash test (seed {seed}) {when}:\n  {}",
        problems.join("\n  ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9_and_nothing_leaks() {
    let began = Instant::now();
    let seed: u64 = std::env::var("NUAGE_CRASH_SEED")
        .ok()
        .map(|s| s.parse().expect("NUAGE_CRASH_SEED must be a u64"))
        .unwrap_or_else(|| rand::thread_rng().next_u64());
    eprintln!("crash test seed {seed} (replay with NUAGE_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::default());

    for round in 0..=ROUNDS {
        // Blob files left by the crash, before the collector runs (for the report).
        let left_by_crash = if round == ROUNDS {
            count_blobs(dir.path())
        } else {
            0
        };
        let mut server = common::Server::start_in(dir.path(), &[]);
        let s3 = client(&server);
        if round == 0 {
            s3.create_bucket().bucket(BUCKET).send().await.unwrap();
        } else {
            let (listed, problems) = verify(&s3, &ledger).await;
            if !problems.is_empty() {
                fail_with(seed, &format!("after crash {round}"), &problems);
            }
            eprintln!(
                "round {round}: restart verified, {} objects present",
                listed.len()
            );
        }
        if round == ROUNDS {
            // The last restart: nothing more is written; check for leaks.
            let aborted = abort_all_uploads(&s3).await;
            let listed = list_all(&s3).await;
            let needed: usize = listed.values().map(|(_, etag)| blobs_needed(etag)).sum();
            let deadline = Instant::now() + COLLECT_TIMEOUT;
            let mut on_disk = count_blobs(dir.path());
            while on_disk != needed && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                on_disk = count_blobs(dir.path());
            }
            eprintln!(
                "leak check: {left_by_crash} blob files after the crash; {} objects need {needed} blobs, {on_disk} on disk \
                 once {aborted} incomplete uploads were aborted and orphans collected",
                listed.len()
            );
            if on_disk != needed {
                fail_with(
                    seed,
                    "after the last restart",
                    &[format!(
                        "{on_disk} blob files on disk but the {} live objects use {needed}",
                        listed.len()
                    )],
                );
            }
            server.kill();
            break;
        }

        let killed = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|id| {
                tokio::spawn(writer(
                    id,
                    s3.clone(),
                    Arc::clone(&ledger),
                    Arc::clone(&killed),
                    rng.next_u64(),
                ))
            })
            .collect();
        let delay = Duration::from_millis(rng.gen_range(50..=800));
        tokio::time::sleep(delay).await;
        killed.store(true, Ordering::SeqCst);
        server.kill();
        let mut problems = Vec::new();
        let (mut acked, mut in_flight) = (0, 0);
        for handle in writers {
            match tokio::time::timeout(WRITERS_STOP_TIMEOUT, handle).await {
                Ok(Ok(Ok(stats))) => {
                    acked += stats.acked;
                    in_flight += stats.in_flight_at_kill;
                }
                Ok(Ok(Err(e))) => problems.push(e),
                Ok(Err(e)) => problems.push(format!("writer panicked: {e}")),
                Err(_) => problems.push("a writer did not notice the kill".into()),
            }
        }
        if !problems.is_empty() {
            fail_with(seed, &format!("in round {}", round + 1), &problems);
        }
        eprintln!(
            "round {}: killed after {delay:?}: {acked} writes acknowledged, {in_flight} in flight",
            round + 1
        );
    }

    let ledger = ledger.0.lock().unwrap();
    let present = ledger.values().filter(|e| e.acked != State::Absent).count();
    let keys: BTreeSet<&String> = ledger.keys().collect();
    assert!(
        !keys.is_empty() && present > 0,
        "the writers wrote nothing (seed {seed})"
    );
    eprintln!("crash test passed in {:?} (seed {seed})", began.elapsed());
}
