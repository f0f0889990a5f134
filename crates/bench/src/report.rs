//! What a run measured: per operation counts, errors by kind, throughput and
//! latency percentiles; as a table for people and as JSON for scripts.

use crate::OpKind;
use crate::histogram::Histogram;
use serde::Serialize;

/// Latency percentiles in milliseconds (successful operations only).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub(crate) fn from_histogram(h: &Histogram) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// One operation's line (or the total).
#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    pub op: String,
    /// Operations that succeeded (and, with verification, were verified).
    pub count: u64,
    /// Operations that failed, whatever the kind (includes verification failures).
    pub errors: u64,
    pub verification_failures: u64,
    /// Object or listing bytes moved by the successful operations.
    pub bytes: u64,
    /// Successful operations per second of the measured run.
    pub ops_per_s: f64,
    /// Megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    pub latency_ms: Latency,
}

/// One kind of error of one operation.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    pub op: String,
    /// `HTTP 403 SignatureDoesNotMatch`, `verification: body`, `transport: connect`, `timeout`.
    pub kind: String,
    pub count: u64,
    /// The first such error, in full.
    pub example: String,
}

/// What the cleanup did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanupReport {
    /// `--keep`: nothing was deleted.
    pub kept: bool,
    pub objects_deleted: u64,
    pub uploads_aborted: u64,
    pub bucket_deleted: bool,
    pub errors: Vec<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub endpoint: String,
    pub bucket: String,
    /// The prefix under which this run wrote (`<prefix>nb-<run id>/`).
    pub run_prefix: String,
    pub workload: String,
    pub sizes: String,
    pub concurrency: usize,
    pub verify: bool,
    pub warmup_s: f64,
    /// Objects written (or reused) before the measured run, not counted.
    pub prepopulated_objects: u64,
    /// Length of the measured run.
    pub duration_s: f64,
    /// Operations attempted in the measured run (successes plus errors).
    pub operations: u64,
    pub results: Vec<OpReport>,
    pub total: OpReport,
    pub errors: Vec<ErrorReport>,
    pub verification_failures: u64,
    /// Why the run stopped early, if it did (`--max-errors`, objects to delete exhausted).
    pub stopped_early: Option<String>,
    pub cleanup: CleanupReport,
}

impl Report {
    /// Why the run must be reported as failed (non-zero exit), if it must:
    /// any verification failure, more errors than `--max-errors`, or nothing
    /// succeeded at all.
    #[must_use]
    pub fn failure(&self, max_errors: Option<u64>) -> Option<String> {
        if self.verification_failures > 0 {
            return Some(format!(
                "{} verification failure(s): the server returned or stored data other than what was written",
                self.verification_failures
            ));
        }
        if let Some(max) = max_errors
            && self.total.errors > max
        {
            return Some(format!(
                "{} errors, more than --max-errors {max}",
                self.total.errors
            ));
        }
        if self.total.count == 0 && self.total.errors > 0 {
            let first = self
                .errors
                .first()
                .map_or(String::new(), |e| format!(": {}", e.example));
            return Some(format!(
                "every operation failed ({} errors){first}",
                self.total.errors
            ));
        }
        None
    }

    /// The human table.
    #[must_use]
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "nuage bench: {} against {} bucket {} ({}), sizes {}, concurrency {}, verify {}\n",
            self.workload,
            self.endpoint,
            self.bucket,
            self.run_prefix,
            self.sizes,
            self.concurrency,
            if self.verify { "on" } else { "off" },
        ));
        out.push_str(&format!(
            "measured {:.2} s, {} operations (warm-up {:.1} s and {} pre-populated objects not counted)\n\n",
            self.duration_s, self.operations, self.warmup_s, self.prepopulated_objects
        ));
        out.push_str(&format!(
            "{:<7}{:>9}{:>8}{:>11}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}\n",
            "op",
            "count",
            "errors",
            "ops/s",
            "MB/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms"
        ));
        for r in self.results.iter().chain(std::iter::once(&self.total)) {
            let l = &r.latency_ms;
            out.push_str(&format!(
                "{:<7}{:>9}{:>8}{:>11.1}{:>10.2}{:>10.2}{:>10.2}{:>10.2}{:>10.2}{:>10.2}\n",
                r.op,
                r.count,
                r.errors,
                r.ops_per_s,
                r.mb_per_s,
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max
            ));
        }
        if !self.errors.is_empty() {
            out.push_str("\nerrors:\n");
            for e in &self.errors {
                out.push_str(&format!(
                    "  {:<7}{:>8} x {}   e.g. {}\n",
                    e.op, e.count, e.kind, e.example
                ));
            }
        }
        if self.verification_failures > 0 {
            out.push_str(&format!(
                "\nVERIFICATION FAILURES: {}\n",
                self.verification_failures
            ));
        }
        if let Some(why) = &self.stopped_early {
            out.push_str(&format!("\nstopped early: {why}\n"));
        }
        let c = &self.cleanup;
        out.push_str(&if c.kept {
            format!(
                "\ncleanup: skipped (--keep); objects remain under {} in {}\n",
                self.run_prefix, self.bucket
            )
        } else {
            format!(
                "\ncleanup: {} objects deleted, {} multipart uploads aborted, bucket {}\n",
                c.objects_deleted,
                c.uploads_aborted,
                if c.bucket_deleted { "deleted" } else { "kept" }
            )
        });
        for e in &c.errors {
            out.push_str(&format!("cleanup error: {e}\n"));
        }
        out
    }
}

pub(crate) fn op_report(
    op: OpKind,
    (count, errors, verification_failures, bytes): (u64, u64, u64, u64),
    latency: &Histogram,
    seconds: f64,
) -> OpReport {
    named_report(
        op.name(),
        (count, errors, verification_failures, bytes),
        latency,
        seconds,
    )
}

pub(crate) fn named_report(
    name: &str,
    (count, errors, verification_failures, bytes): (u64, u64, u64, u64),
    latency: &Histogram,
    seconds: f64,
) -> OpReport {
    let per_s = |n: f64| if seconds > 0.0 { n / seconds } else { 0.0 };
    OpReport {
        op: name.to_owned(),
        count,
        errors,
        verification_failures,
        bytes,
        ops_per_s: per_s(count as f64),
        mb_per_s: per_s(bytes as f64 / 1e6),
        latency_ms: Latency::from_histogram(latency),
    }
}

/// `12.3 MB/s`-style progress numbers.
pub(crate) fn progress_line(
    elapsed_s: f64,
    ops: u64,
    ops_per_s: f64,
    mb_per_s: f64,
    errors: u64,
) -> String {
    format!(
        "[{elapsed_s:>6.1}s] {ops} ops, {ops_per_s:.0} ops/s, {mb_per_s:.2} MB/s, {errors} errors"
    )
}
