//! The phases of a run: bucket, pre-population, warm-up, measurement,
//! cleanup. Every worker loop is bounded by the operation count or the
//! deadline, every queue by a constant.

use crate::client::{DELETE_OBJECTS_KEYS_MAX, OpError, S3Client};
use crate::histogram::Histogram;
use crate::payload::Rng;
use crate::report::{CleanupReport, ErrorReport, Report, named_report, op_report, progress_line};
use crate::{BenchError, Config, OpKind, Stop, Workload};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Objects put during a mixed run that a later delete may take; older ones
/// are left to the cleanup.
const PUT_POOL_MAX: usize = 100_000;
/// Distinct error kinds kept with an example; more are counted as `other`.
const ERROR_KINDS_MAX: usize = 64;
/// Listing pages the cleanup and `--reuse-objects` read at most.
const LIST_PAGES_MAX: u64 = 100_000;
/// How often the progress line is printed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Default pre-populated set for reads.
const DEFAULT_OBJECTS: u64 = 100;
/// Default pre-populated set for a timed delete run.
const DEFAULT_DELETE_OBJECTS: u64 = 10_000;

/// What a run tells while it works (the binary prints it on stderr).
#[derive(Debug, Clone)]
pub enum Event {
    /// A phase begins.
    Phase(String),
    /// Once a second during the measured run.
    Progress(String),
    /// Something worth knowing that does not stop the run.
    Warning(String),
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Phase(t) | Self::Progress(t) => f.write_str(t),
            Self::Warning(t) => write!(f, "warning: {t}"),
        }
    }
}

/// An object the run can read: its key and bytes follow from these.
#[derive(Debug, Clone, Copy)]
struct ObjectRef {
    run: u64,
    seq: u64,
    size: u64,
}

fn seed_of(object: ObjectRef) -> u64 {
    Rng::new(object.run ^ object.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64()
}

fn run_prefix(prefix: &str, run: u64) -> String {
    format!("{prefix}nb-{run:016x}/")
}

fn key_of(prefix: &str, object: ObjectRef) -> String {
    format!(
        "{}{:012}-{}",
        run_prefix(prefix, object.run),
        object.seq,
        object.size
    )
}

/// The object a bench key names, whatever prefix it is under.
fn parse_key(key: &str) -> Option<ObjectRef> {
    let (dir, leaf) = key.rsplit_once('/')?;
    let run_hex = dir.get(dir.len().checked_sub(16)?..)?;
    if !dir.get(..dir.len() - 16)?.ends_with("nb-") {
        return None;
    }
    let run = u64::from_str_radix(run_hex, 16).ok()?;
    let (seq, size) = leaf.split_once('-')?;
    Some(ObjectRef {
        run,
        seq: seq.parse().ok()?,
        size: size.parse().ok()?,
    })
}

#[derive(Default)]
struct OpStats {
    ok: AtomicU64,
    errors: AtomicU64,
    verification_failures: AtomicU64,
    bytes: AtomicU64,
    latency_us: Histogram,
}

/// One phase's counters.
#[derive(Default)]
struct Stats {
    ops: [OpStats; 5],
    /// (op, kind) -> (count, first example).
    errors: Mutex<BTreeMap<(OpKind, String), (u64, String)>>,
}

impl Stats {
    fn success(&self, op: OpKind, bytes: u64, latency: Duration) {
        let s = &self.ops[op.index()];
        s.ok.fetch_add(1, Ordering::Relaxed);
        s.bytes.fetch_add(bytes, Ordering::Relaxed);
        s.latency_us
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    fn failure(&self, op: OpKind, error: &OpError) {
        let s = &self.ops[op.index()];
        s.errors.fetch_add(1, Ordering::Relaxed);
        if error.is_verification() {
            s.verification_failures.fetch_add(1, Ordering::Relaxed);
        }
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        let mut kind = error.kind();
        if !errors.contains_key(&(op, kind.clone())) && errors.len() >= ERROR_KINDS_MAX {
            kind = "other".to_owned();
        }
        errors
            .entry((op, kind))
            .or_insert_with(|| (0, error.to_string()))
            .0 += 1;
    }

    fn totals(&self) -> (u64, u64, u64) {
        self.ops.iter().fold((0, 0, 0), |(o, e, b), s| {
            (
                o + s.ok.load(Ordering::Relaxed),
                e + s.errors.load(Ordering::Relaxed),
                b + s.bytes.load(Ordering::Relaxed),
            )
        })
    }
}

/// What the workers share.
struct Shared {
    client: S3Client,
    config: Config,
    bucket: String,
    run: u64,
    /// The pre-populated (or reused) objects, set before the run starts.
    objects: OnceLock<Vec<ObjectRef>>,
    /// Next index into `objects` for the delete workload.
    delete_next: AtomicU64,
    /// Next sequence number of this run's new objects.
    next_seq: AtomicU64,
    /// Objects put during the run that a mixed delete may remove.
    put_pool: Mutex<VecDeque<ObjectRef>>,
    stop: AtomicBool,
    stopped_early: Mutex<Option<String>>,
}

impl Shared {
    fn key(&self, object: ObjectRef) -> String {
        key_of(&self.config.prefix, object)
    }

    fn stop_early(&self, why: String) {
        self.stop.store(true, Ordering::Relaxed);
        let mut slot = self
            .stopped_early
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(why);
    }

    async fn put(&self, rng: &mut Rng) -> Result<(u64, Option<ObjectRef>), OpError> {
        let object = ObjectRef {
            run: self.run,
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            size: self.config.sizes.sample(rng),
        };
        self.put_object(object).await?;
        Ok((object.size, Some(object)))
    }

    async fn put_object(&self, object: ObjectRef) -> Result<(), OpError> {
        let c = &self.config;
        let key = self.key(object);
        if object.size > c.multipart_threshold {
            self.client
                .multipart_put(
                    &self.bucket,
                    &key,
                    seed_of(object),
                    object.size,
                    c.part_size,
                    c.part_concurrency,
                    c.verify,
                )
                .await
        } else {
            self.client
                .put_object(&self.bucket, &key, seed_of(object), object.size, c.verify)
                .await
        }
    }

    fn objects(&self) -> &[ObjectRef] {
        self.objects.get().map_or(&[], Vec::as_slice)
    }

    fn pick(&self, rng: &mut Rng) -> Option<ObjectRef> {
        let objects = self.objects();
        let n = objects.len() as u64;
        objects.get(usize::try_from(rng.below(n)).ok()?).copied()
    }

    /// One operation; `Ok(None)` when there is nothing left to do (the
    /// delete workload has deleted every object).
    async fn operation(
        &self,
        op: OpKind,
        rng: &mut Rng,
        list_token: &mut Option<String>,
    ) -> Option<Result<u64, OpError>> {
        let c = &self.config;
        let result = match op {
            OpKind::Put => self.put(rng).await.map(|(bytes, object)| {
                if let (Some(object), Workload::Mixed(_)) = (object, &c.workload) {
                    let mut pool = self.put_pool.lock().unwrap_or_else(PoisonError::into_inner);
                    if pool.len() < PUT_POOL_MAX {
                        pool.push_back(object);
                    }
                }
                bytes
            }),
            OpKind::Get => {
                let object = self.pick(rng)?;
                self.client
                    .get_object(
                        &self.bucket,
                        &self.key(object),
                        seed_of(object),
                        object.size,
                        c.verify,
                    )
                    .await
            }
            OpKind::Head => {
                let object = self.pick(rng)?;
                self.client
                    .head_object(&self.bucket, &self.key(object), object.size, c.verify)
                    .await
                    .map(|()| 0)
            }
            OpKind::List => {
                let page = self
                    .client
                    .list_page(
                        &self.bucket,
                        &c.prefix,
                        &c.delimiter,
                        c.list_page,
                        list_token.as_deref(),
                    )
                    .await;
                page.map(|p| {
                    *list_token = p.next_token;
                    p.response_bytes
                })
            }
            OpKind::Delete => {
                let key = if matches!(c.workload, Workload::Mixed(_)) {
                    let popped = self
                        .put_pool
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front();
                    // Nothing put yet: a DELETE of a key that does not exist
                    // (S3 answers 204), still a DELETE round trip.
                    popped.map_or_else(
                        || {
                            format!(
                                "{}absent-{}",
                                run_prefix(&c.prefix, self.run),
                                rng.next_u64()
                            )
                        },
                        |o| self.key(o),
                    )
                } else {
                    let i = self.delete_next.fetch_add(1, Ordering::Relaxed);
                    let Some(object) = usize::try_from(i).ok().and_then(|i| self.objects().get(i))
                    else {
                        self.stop_early("every pre-populated object is deleted".into());
                        return None;
                    };
                    self.key(*object)
                };
                self.client
                    .delete_object(&self.bucket, &key)
                    .await
                    .map(|()| 0)
            }
        };
        Some(result)
    }
}

fn choose(workload: &Workload, rng: &mut Rng) -> OpKind {
    match workload {
        Workload::Only(op) => *op,
        Workload::Mixed(weights) => {
            let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
            let mut pick = rng.below(total);
            for op in OpKind::ALL {
                let w = u64::from(weights[op.index()]);
                if pick < w {
                    return op;
                }
                pick -= w;
            }
            OpKind::Put
        }
    }
}

/// Runs `concurrency` workers until `stop` (an operation budget or a
/// deadline), recording into `stats`.
async fn phase(shared: &Arc<Shared>, stats: &Arc<Stats>, stop: Stop, seed: u64) {
    let issued = Arc::new(AtomicU64::new(0));
    let deadline = match stop {
        Stop::After(d) => Some(Instant::now() + d),
        Stop::Operations(_) => None,
    };
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..shared.config.concurrency {
        let (shared, stats, issued) = (Arc::clone(shared), Arc::clone(stats), Arc::clone(&issued));
        workers.spawn(async move {
            let mut rng = Rng::new(seed ^ (worker as u64).wrapping_mul(0xA24B_AED4_963E_E407));
            let mut list_token = None;
            loop {
                if shared.stop.load(Ordering::Relaxed)
                    || deadline.is_some_and(|d| Instant::now() >= d)
                {
                    break;
                }
                if let Stop::Operations(n) = stop
                    && issued.fetch_add(1, Ordering::Relaxed) >= n
                {
                    break;
                }
                let op = choose(&shared.config.workload, &mut rng);
                let started = Instant::now();
                let outcome = tokio::time::timeout(
                    shared.config.timeout,
                    shared.operation(op, &mut rng, &mut list_token),
                )
                .await;
                let result = match outcome {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(_) => Err(OpError::Timeout),
                };
                match result {
                    Ok(bytes) => stats.success(op, bytes, started.elapsed()),
                    Err(e) => {
                        stats.failure(op, &e);
                        if let Some(max) = shared.config.max_errors
                            && stats.totals().1 > max
                        {
                            shared.stop_early(format!("more than --max-errors {max} errors"));
                        }
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

/// Writes the objects reads work on, `concurrency` at a time; not counted.
async fn populate(
    shared: &Arc<Shared>,
    count: u64,
    rng: &mut Rng,
) -> Result<Vec<ObjectRef>, BenchError> {
    use futures::StreamExt as _;
    let objects: Vec<ObjectRef> = (0..count)
        .map(|_| ObjectRef {
            run: shared.run,
            seq: shared.next_seq.fetch_add(1, Ordering::Relaxed),
            size: shared.config.sizes.sample(rng),
        })
        .collect();
    let mut results = futures::stream::iter(objects.clone())
        .map(|object| async move {
            tokio::time::timeout(shared.config.timeout, shared.put_object(object))
                .await
                .unwrap_or(Err(OpError::Timeout))
                .map_err(|e| (object, e))
        })
        .buffer_unordered(shared.config.concurrency);
    while let Some(result) = results.next().await {
        if let Err((object, error)) = result {
            return Err(BenchError::Setup {
                step: format!(
                    "pre-populating {} (object {} of {count})",
                    shared.key(object),
                    object.seq + 1
                ),
                error,
            });
        }
    }
    Ok(objects)
}

/// The bench objects already under `--prefix`, up to `limit`.
async fn existing(
    client: &S3Client,
    bucket: &str,
    prefix: &str,
    limit: u64,
) -> Result<Vec<ObjectRef>, BenchError> {
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..LIST_PAGES_MAX {
        let page = client
            .list_page(bucket, prefix, "", 1000, token.as_deref())
            .await
            .map_err(|error| BenchError::Setup {
                step: format!("listing {bucket}/{prefix} for --reuse-objects"),
                error,
            })?;
        found.extend(page.keys.iter().filter_map(|k| parse_key(k)));
        token = page.next_token;
        if token.is_none() || found.len() as u64 >= limit {
            break;
        }
    }
    found.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(found)
}

/// Deletes every object under `prefix` and aborts every multipart upload.
async fn delete_all(client: &S3Client, bucket: &str, prefix: &str, report: &mut CleanupReport) {
    for _ in 0..LIST_PAGES_MAX {
        let page = match client
            .list_page(
                bucket,
                prefix,
                "",
                u32::try_from(DELETE_OBJECTS_KEYS_MAX).unwrap_or(1000),
                None,
            )
            .await
        {
            Ok(p) => p,
            Err(e) => {
                report
                    .errors
                    .push(format!("listing {bucket}/{prefix}: {e}"));
                break;
            }
        };
        if page.keys.is_empty() {
            break;
        }
        match client.delete_objects(bucket, &page.keys).await {
            Ok(failed) if failed.is_empty() => report.objects_deleted += page.keys.len() as u64,
            Ok(failed) => {
                report.objects_deleted += (page.keys.len() - failed.len()) as u64;
                report.errors.push(format!(
                    "{} objects not deleted, e.g. {}",
                    failed.len(),
                    failed[0]
                ));
                break;
            }
            Err(e) => {
                report
                    .errors
                    .push(format!("DeleteObjects in {bucket}: {e}"));
                break;
            }
        }
    }
    for _ in 0..LIST_PAGES_MAX {
        let uploads = match client.list_multipart_uploads(bucket, prefix).await {
            Ok(u) => u,
            Err(e) => {
                report
                    .errors
                    .push(format!("listing multipart uploads in {bucket}: {e}"));
                break;
            }
        };
        if uploads.is_empty() {
            break;
        }
        for (key, id) in &uploads {
            match client.abort_multipart(bucket, key, id).await {
                Ok(()) => report.uploads_aborted += 1,
                Err(e) => {
                    report
                        .errors
                        .push(format!("aborting the upload of {key}: {e}"));
                    return;
                }
            }
        }
    }
}

/// Runs the benchmark `config` describes and reports what it measured.
/// Operations' failures are counted in the report; only a failure that
/// leaves nothing to measure (bad flags, no bucket, pre-population refused)
/// is an error.
///
/// # Errors
/// [`BenchError::Config`] or [`BenchError::Setup`].
pub async fn run(
    config: Config,
    on_event: &(dyn Fn(Event) + Send + Sync),
) -> Result<Report, BenchError> {
    config.validate()?;
    let client = S3Client::new(
        config.endpoint.clone(),
        config.tls.clone(),
        config.concurrency * config.part_concurrency,
    )?;
    let mut rng = Rng::new(rand::random());
    let run = rng.next_u64();
    let user_bucket = config.bucket.is_some();
    let bucket = config
        .bucket
        .clone()
        .unwrap_or_else(|| format!("bench-{:08x}", rng.next_u64() >> 32));
    if user_bucket {
        match client.bucket_exists(&bucket).await {
            Ok(true) => {}
            Ok(false) => {
                on_event(Event::Phase(format!("creating bucket {bucket}")));
                client
                    .create_bucket(&bucket)
                    .await
                    .map_err(|error| BenchError::Setup {
                        step: format!("CreateBucket {bucket}"),
                        error,
                    })?;
            }
            // HeadBucket may be denied where object operations are allowed:
            // go on, and let the operations say what they meet.
            Err(e) => on_event(Event::Warning(format!("HeadBucket {bucket}: {e}"))),
        }
    } else {
        on_event(Event::Phase(format!("creating bucket {bucket}")));
        client
            .create_bucket(&bucket)
            .await
            .map_err(|error| BenchError::Setup {
                step: format!("CreateBucket {bucket}"),
                error,
            })?;
    }
    let wanted = config.objects.unwrap_or(if config.reuse_objects {
        crate::OBJECTS_MAX
    } else if !config.workload.needs_objects() {
        0
    } else if config.workload == Workload::Only(OpKind::Delete) {
        match config.stop {
            Stop::Operations(n) => n.min(crate::OBJECTS_MAX),
            Stop::After(_) => DEFAULT_DELETE_OBJECTS,
        }
    } else {
        DEFAULT_OBJECTS
    });
    let shared = Arc::new(Shared {
        client: client.clone(),
        config: config.clone(),
        bucket: bucket.clone(),
        run,
        objects: OnceLock::new(),
        delete_next: AtomicU64::new(0),
        next_seq: AtomicU64::new(0),
        put_pool: Mutex::new(VecDeque::new()),
        stop: AtomicBool::new(false),
        stopped_early: Mutex::new(None),
    });
    let prepared = if config.reuse_objects {
        on_event(Event::Phase(format!(
            "listing bench objects under {bucket}/{}",
            config.prefix
        )));
        existing(&client, &bucket, &config.prefix, wanted.max(1)).await
    } else if wanted > 0 {
        on_event(Event::Phase(format!(
            "pre-populating {wanted} objects (not counted)"
        )));
        populate(&shared, wanted, &mut rng).await
    } else {
        Ok(Vec::new())
    };
    let objects = match prepared {
        Ok(objects) => objects,
        Err(e) => {
            let mut cleanup = CleanupReport::default();
            if !config.keep {
                cleanup_run(&client, &config, &bucket, run, user_bucket, &mut cleanup).await;
            }
            return Err(e);
        }
    };
    if config.reuse_objects && objects.is_empty() && config.workload.needs_objects() {
        return Err(BenchError::Config(format!(
            "--reuse-objects: no bench objects under {bucket}/{}",
            config.prefix
        )));
    }
    let prepopulated = objects.len() as u64;
    // Set once, before any worker starts.
    let _ = shared.objects.set(objects);

    // A delete warm-up would consume the objects the run is to delete.
    let warmup = if matches!(config.workload, Workload::Only(OpKind::Delete)) {
        Duration::ZERO
    } else {
        config.warmup
    };
    if !warmup.is_zero() {
        on_event(Event::Phase(format!(
            "warming up for {:.1} s (not counted)",
            warmup.as_secs_f64()
        )));
        let warm = Arc::new(Stats::default());
        phase(&shared, &warm, Stop::After(warmup), rng.next_u64()).await;
        let (_, errors, _) = warm.totals();
        if errors > 0 {
            on_event(Event::Warning(format!(
                "{errors} errors during the warm-up"
            )));
        }
        shared.stop.store(false, Ordering::Relaxed);
        *shared
            .stopped_early
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    on_event(Event::Phase(format!(
        "running {} with concurrency {} for {}",
        config.workload,
        config.concurrency,
        match config.stop {
            Stop::After(d) => format!("{:.1} s", d.as_secs_f64()),
            Stop::Operations(n) => format!("{n} operations"),
        }
    )));
    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    let measured = {
        let phase_future = phase(&shared, &stats, config.stop, rng.next_u64());
        tokio::pin!(phase_future);
        let mut interval = tokio::time::interval_at(
            tokio::time::Instant::now() + PROGRESS_INTERVAL,
            PROGRESS_INTERVAL,
        );
        let (mut last_ok, mut last_bytes, mut last_at) = (0, 0, Instant::now());
        loop {
            tokio::select! {
                () = &mut phase_future => break,
                _ = interval.tick() => {
                    let (ok, errors, bytes) = stats.totals();
                    let now = Instant::now();
                    let dt = now.duration_since(last_at).as_secs_f64().max(1e-9);
                    on_event(Event::Progress(progress_line(
                        now.duration_since(started).as_secs_f64(),
                        ok + errors,
                        (ok - last_ok) as f64 / dt,
                        (bytes - last_bytes) as f64 / 1e6 / dt,
                        errors,
                    )));
                    (last_ok, last_bytes, last_at) = (ok, bytes, now);
                }
            }
        }
        started.elapsed()
    };

    let mut cleanup = CleanupReport {
        kept: config.keep,
        ..CleanupReport::default()
    };
    if !config.keep {
        on_event(Event::Phase("cleaning up".into()));
        cleanup_run(&client, &config, &bucket, run, user_bucket, &mut cleanup).await;
    }

    let seconds = measured.as_secs_f64();
    let total_latency = Histogram::new();
    let mut results = Vec::new();
    let mut sums = (0, 0, 0, 0);
    for op in OpKind::ALL {
        let s = &stats.ops[op.index()];
        if config.workload.weight(op) == 0
            && s.ok.load(Ordering::Relaxed) + s.errors.load(Ordering::Relaxed) == 0
        {
            continue;
        }
        let counts = (
            s.ok.load(Ordering::Relaxed),
            s.errors.load(Ordering::Relaxed),
            s.verification_failures.load(Ordering::Relaxed),
            s.bytes.load(Ordering::Relaxed),
        );
        sums = (
            sums.0 + counts.0,
            sums.1 + counts.1,
            sums.2 + counts.2,
            sums.3 + counts.3,
        );
        total_latency.merge(&s.latency_us);
        results.push(op_report(op, counts, &s.latency_us, seconds));
    }
    let errors = stats
        .errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|((op, kind), (count, example))| ErrorReport {
            op: op.name().to_owned(),
            kind: kind.clone(),
            count: *count,
            example: example.clone(),
        })
        .collect();
    let stopped_early = shared
        .stopped_early
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Ok(Report {
        endpoint: config.endpoint.url.clone(),
        bucket,
        run_prefix: run_prefix(&config.prefix, run),
        workload: config.workload.to_string(),
        sizes: config.sizes.to_string(),
        concurrency: config.concurrency,
        verify: config.verify,
        warmup_s: warmup.as_secs_f64(),
        prepopulated_objects: prepopulated,
        duration_s: seconds,
        operations: sums.0 + sums.1,
        results,
        total: named_report("total", sums, &total_latency, seconds),
        errors,
        verification_failures: sums.2,
        stopped_early,
        cleanup,
    })
}

async fn cleanup_run(
    client: &S3Client,
    config: &Config,
    bucket: &str,
    run: u64,
    user_bucket: bool,
    report: &mut CleanupReport,
) {
    if user_bucket {
        delete_all(client, bucket, &run_prefix(&config.prefix, run), report).await;
    } else {
        delete_all(client, bucket, "", report).await;
        match client.delete_bucket(bucket).await {
            Ok(()) => report.bucket_deleted = true,
            Err(e) => report.errors.push(format!("DeleteBucket {bucket}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_carry_what_verification_needs() {
        let object = ObjectRef {
            run: 0x0123_4567_89ab_cdef,
            seq: 42,
            size: 4096,
        };
        for prefix in ["", "data/", "a/nb-/b-"] {
            let key = key_of(prefix, object);
            assert!(key.starts_with(prefix));
            let parsed = parse_key(&key).unwrap();
            assert_eq!(
                (parsed.run, parsed.seq, parsed.size),
                (object.run, 42, 4096),
                "{key}"
            );
        }
        assert_eq!(
            key_of("p/", object),
            "p/nb-0123456789abcdef/000000000042-4096"
        );
        for other in [
            "",
            "x",
            "nb-0123/1-2",
            "p/nb-0123456789abcdeg/1-2",
            "p/xx-0123456789abcdef/1-2",
            "p/nb-0123456789abcdef/1",
        ] {
            assert!(parse_key(other).is_none(), "{other}");
        }
        // Distinct objects, distinct payloads.
        let next = ObjectRef { seq: 43, ..object };
        let other_run = ObjectRef { run: 1, ..object };
        assert_ne!(seed_of(object), seed_of(next));
        assert_ne!(seed_of(object), seed_of(other_run));
    }

    #[test]
    fn mixed_choice_follows_the_weights() {
        let workload = Workload::parse("mixed", Some("put=1,get=3,delete=0")).unwrap();
        let mut rng = Rng::new(5);
        let mut counts = [0u32; 5];
        for _ in 0..40_000 {
            counts[choose(&workload, &mut rng).index()] += 1;
        }
        assert_eq!(counts[OpKind::Delete.index()], 0);
        assert_eq!(counts[OpKind::Head.index()], 0);
        assert!(
            (9_000..11_000).contains(&counts[OpKind::Put.index()]),
            "{counts:?}"
        );
        assert!(
            (29_000..31_000).contains(&counts[OpKind::Get.index()]),
            "{counts:?}"
        );
    }
}
