//! `nuage-bench`: the S3 load generator behind `nuage bench`, usable against
//! any S3 endpoint, Nuage or not.
//!
//! It writes objects whose bytes are unique and incompressible yet
//! re-derivable from a seed carried in the key ([`payload`]), so it verifies
//! every byte it reads back and every ETag it is given without storing what
//! it wrote; it counts latencies in a bounded histogram ([`histogram`]),
//! reports successes, errors by kind and verification failures separately
//! and honestly ([`report`]), and deletes what it created.
//!
//! Phases of a run ([`run`]): bucket (a fresh `bench-XXXXXXXX`, or the
//! user's), pre-population of the objects that GET, HEAD, LIST and DELETE
//! work on (not counted), warm-up (not counted), the measured run, cleanup.
//!
//! It reads no environment and no files: the binary (`nuage bench`) turns
//! flags, environment and the CA file into a [`Config`]. Its only I/O is the
//! S3 traffic it is asked to make.

pub mod client;
pub mod histogram;
pub mod payload;
pub mod report;
mod run;
pub mod size;
pub mod tls;

pub use client::{Addressing, Endpoint};
pub use report::Report;
pub use run::{Event, run};
pub use size::SizeDistribution;

use std::time::Duration;

/// The most objects one run pre-populates (and keeps in memory, 24 bytes each).
pub const OBJECTS_MAX: u64 = 4_000_000;
/// The most concurrent operations.
pub const CONCURRENCY_MAX: usize = 4096;
/// The most parts of one object in flight at once.
pub const PART_CONCURRENCY_MAX: usize = 64;
/// S3's smallest part (all but the last).
pub const PART_SIZE_BYTES_MIN: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const PART_SIZE_BYTES_MAX: u64 = 5 * 1024 * 1024 * 1024;

/// Errors that stop a run before or outside its measurement (operations'
/// own failures are counted in the report, never raised).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag or combination of flags that cannot work.
    #[error("{0}")]
    Config(String),
    /// A step the run depends on failed (creating the bucket, pre-populating).
    #[error("{step}: {error}")]
    Setup {
        step: String,
        error: client::OpError,
    },
}

/// The five operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    Put,
    Get,
    Head,
    List,
    Delete,
}

impl OpKind {
    pub const ALL: [Self; 5] = [Self::Put, Self::Get, Self::Head, Self::List, Self::Delete];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Get => "get",
            Self::Head => "head",
            Self::List => "list",
            Self::Delete => "delete",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == text)
    }
}

/// What the run does: one operation, or a weighted mix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    Only(OpKind),
    /// A weight per [`OpKind`], in [`OpKind::ALL`] order.
    Mixed([u32; 5]),
}

impl Workload {
    /// `put`, `get`, `head`, `list`, `delete`, or `mixed` with `mix` (default
    /// `put=20,get=70,head=5,list=5`).
    ///
    /// # Errors
    /// [`BenchError::Config`] naming what is wrong.
    pub fn parse(workload: &str, mix: Option<&str>) -> Result<Self, BenchError> {
        if workload == "mixed" {
            let mix = mix.unwrap_or("put=20,get=70,head=5,list=5");
            let mut weights = [0u32; 5];
            for entry in mix.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let (op, weight) = entry.split_once('=').ok_or_else(|| {
                    BenchError::Config(format!("--mix: `{entry}` is not OP=WEIGHT"))
                })?;
                let op = OpKind::parse(op.trim()).ok_or_else(|| {
                    BenchError::Config(format!(
                        "--mix: `{op}` is not one of put, get, head, list, delete"
                    ))
                })?;
                weights[op.index()] = weight.trim().parse().map_err(|_| {
                    BenchError::Config(format!("--mix: weight `{weight}` is not a whole number"))
                })?;
            }
            if weights.iter().all(|w| *w == 0) {
                return Err(BenchError::Config(
                    "--mix: at least one weight must be above 0".into(),
                ));
            }
            return Ok(Self::Mixed(weights));
        }
        if mix.is_some() {
            return Err(BenchError::Config(
                "--mix applies to --workload mixed only".into(),
            ));
        }
        OpKind::parse(workload).map(Self::Only).ok_or_else(|| {
            BenchError::Config(format!(
                "--workload `{workload}`: use put, get, head, list, delete or mixed"
            ))
        })
    }

    fn weight(&self, op: OpKind) -> u32 {
        match self {
            Self::Only(o) => u32::from(*o == op),
            Self::Mixed(w) => w[op.index()],
        }
    }

    /// Whether the run reads objects it must have written first.
    fn needs_objects(&self) -> bool {
        [OpKind::Get, OpKind::Head, OpKind::List]
            .iter()
            .any(|o| self.weight(*o) > 0)
            || *self == Self::Only(OpKind::Delete)
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Only(op) => f.write_str(op.name()),
            Self::Mixed(w) => {
                let parts: Vec<String> = OpKind::ALL
                    .iter()
                    .filter(|o| w[o.index()] > 0)
                    .map(|o| format!("{}={}", o.name(), w[o.index()]))
                    .collect();
                write!(f, "mixed({})", parts.join(","))
            }
        }
    }
}

/// When the measured run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    After(Duration),
    Operations(u64),
}

/// Everything a run needs, typed; built by the binary.
#[derive(Debug, Clone)]
pub struct Config {
    pub endpoint: Endpoint,
    pub tls: rustls::ClientConfig,
    /// The user's bucket (created if missing, never deleted), or `None` for a
    /// fresh `bench-XXXXXXXX` deleted at the end.
    pub bucket: Option<String>,
    pub workload: Workload,
    pub sizes: SizeDistribution,
    pub concurrency: usize,
    pub stop: Stop,
    pub warmup: Duration,
    /// How many objects to pre-populate (`None`: a default for the workload).
    pub objects: Option<u64>,
    /// Use the bench objects already under `prefix` instead of writing new
    /// ones (their keys carry their seeds).
    pub reuse_objects: bool,
    pub list_page: u32,
    pub prefix: String,
    pub delimiter: String,
    pub keep: bool,
    pub verify: bool,
    pub multipart_threshold: u64,
    pub part_size: u64,
    pub part_concurrency: usize,
    /// Per operation.
    pub timeout: Duration,
    /// Stop the run once more operations than this have failed.
    pub max_errors: Option<u64>,
}

impl Config {
    /// Checks the combinations that cannot work, before any traffic.
    ///
    /// # Errors
    /// [`BenchError::Config`] naming the flag.
    pub fn validate(&self) -> Result<(), BenchError> {
        let fail = |m: String| Err(BenchError::Config(m));
        if self.concurrency == 0 || self.concurrency > CONCURRENCY_MAX {
            return fail(format!("--concurrency must be 1 to {CONCURRENCY_MAX}"));
        }
        if self.part_concurrency == 0 || self.part_concurrency > PART_CONCURRENCY_MAX {
            return fail(format!(
                "--part-concurrency must be 1 to {PART_CONCURRENCY_MAX}"
            ));
        }
        if !(PART_SIZE_BYTES_MIN..=PART_SIZE_BYTES_MAX).contains(&self.part_size) {
            return fail("--part-size must be 5MiB to 5GiB (S3's part limits)".into());
        }
        if self.sizes.max() > self.multipart_threshold
            && self.sizes.max().div_ceil(self.part_size) > client::MULTIPART_PARTS_MAX
        {
            return fail(format!(
                "objects of {} would need more than 10,000 parts of --part-size {}",
                size::format_bytes(self.sizes.max()),
                size::format_bytes(self.part_size)
            ));
        }
        if self.list_page == 0 || self.list_page > 1000 {
            return fail("--list-page must be 1 to 1000".into());
        }
        if let Some(n) = self.objects
            && n > OBJECTS_MAX
        {
            return fail(format!("--objects is at most {OBJECTS_MAX}"));
        }
        if self.workload.needs_objects() && self.objects == Some(0) && !self.reuse_objects {
            return fail(format!(
                "--workload {} reads objects: --objects must be at least 1",
                self.workload
            ));
        }
        if matches!(self.stop, Stop::Operations(0)) {
            return fail("--operations must be at least 1".into());
        }
        if self.reuse_objects && self.bucket.is_none() {
            return fail(
                "--reuse-objects needs --bucket (a fresh bucket holds nothing to reuse)".into(),
            );
        }
        if let Workload::Mixed(w) = &self.workload
            && w[OpKind::Delete.index()] > 0
            && w[OpKind::Put.index()] == 0
        {
            return fail("--mix: delete deletes what the run put; give put a weight too".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn workloads_parse() {
        assert_eq!(
            Workload::parse("get", None).unwrap(),
            Workload::Only(OpKind::Get)
        );
        assert_eq!(
            Workload::parse("mixed", None).unwrap(),
            Workload::Mixed([20, 70, 5, 5, 0])
        );
        assert_eq!(
            Workload::parse("mixed", Some("put=1, delete=2"))
                .unwrap()
                .to_string(),
            "mixed(put=1,delete=2)"
        );
        for (workload, mix) in [
            ("copy", None),
            ("get", Some("get=1")),
            ("mixed", Some("put=0")),
            ("mixed", Some("copy=1")),
            ("mixed", Some("put")),
            ("mixed", Some("put=-1")),
        ] {
            assert!(
                Workload::parse(workload, mix).is_err(),
                "{workload} {mix:?}"
            );
        }
        assert!(Workload::Only(OpKind::Delete).needs_objects());
        assert!(!Workload::Only(OpKind::Put).needs_objects());
        assert!(!Workload::Mixed([1, 0, 0, 0, 1]).needs_objects());
    }
}
