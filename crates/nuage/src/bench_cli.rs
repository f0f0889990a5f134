//! `nuage bench`: the built-in S3 load generator (docs/performance.md). This
//! module only turns flags, the standard AWS environment variables and the
//! CA file into a `nuage_bench::Config`, prints progress on stderr and the
//! report on stdout; the bench itself is `nuage-bench`.

use anyhow::Context as _;
use clap::Args;
use nuage_bench::{Addressing, Config, Endpoint, Event, SizeDistribution, Stop, Workload};
use std::path::PathBuf;
use std::time::Duration;

const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9000";
const DEFAULT_REGION: &str = "us-east-1";
const DEFAULT_DURATION: Duration = Duration::from_secs(30);
const DEFAULT_WARMUP_TIMED: Duration = Duration::from_secs(5);

/// Exit status when the run measured but must be reported as failed
/// (verification failures, `--max-errors`, nothing succeeded).
pub const EXIT_FAILED_RUN: i32 = 1;
/// Exit status when nothing could be measured (flags, bucket, pre-population).
pub const EXIT_NOT_RUN: i32 = 2;

#[derive(Args)]
pub struct BenchArgs {
    /// The S3 endpoint (http:// or https://), Nuage or any other.
    #[arg(long, default_value = DEFAULT_ENDPOINT)]
    endpoint: String,
    /// Access key id (default: $AWS_ACCESS_KEY_ID).
    #[arg(long)]
    access_key: Option<String>,
    /// Secret access key (default: $AWS_SECRET_ACCESS_KEY; prefer the
    /// variable, a flag is visible to other users of the machine).
    #[arg(long)]
    secret_key: Option<String>,
    /// Signing region (default: $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// Bucket to use (created if missing, never deleted; only this run's
    /// objects are). Default: a fresh bench-XXXXXXXX bucket, deleted at the end.
    #[arg(long)]
    bucket: Option<String>,
    /// put, get, head, list, delete or mixed.
    #[arg(long, default_value = "put")]
    workload: String,
    /// Weights of a mixed workload (default put=20,get=70,head=5,list=5).
    #[arg(long)]
    mix: Option<String>,
    /// Object size: 4KiB, or a uniform range 1MiB:64MiB (default 4KiB).
    #[arg(long, conflicts_with = "sizes")]
    size: Option<String>,
    /// Weighted object sizes: 4KiB=90,1MiB=10.
    #[arg(long)]
    sizes: Option<String>,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Length of the measured run: 30s, 2m (default 30s).
    #[arg(long, conflicts_with = "operations")]
    duration: Option<String>,
    /// Number of operations of the measured run, instead of a duration.
    #[arg(long)]
    operations: Option<u64>,
    /// Warm-up before the measured run, not counted (default 5s for a timed
    /// run, none with --operations).
    #[arg(long)]
    warmup: Option<String>,
    /// Objects written before the run for get/head/list/delete/mixed, not
    /// counted (default 100; delete: --operations, or 10000).
    #[arg(long)]
    objects: Option<u64>,
    /// Read the bench objects already under --prefix in --bucket (from an
    /// earlier run with --keep) instead of writing new ones.
    #[arg(long)]
    reuse_objects: bool,
    /// Keys per ListObjectsV2 page (1 to 1000).
    #[arg(long, default_value_t = 1000)]
    list_page: u32,
    /// Key prefix of the objects written, and of the listings.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Delimiter of the listings (for example `/`).
    #[arg(long, default_value = "")]
    delimiter: String,
    /// Leave the bucket and the objects in place.
    #[arg(long)]
    keep: bool,
    /// Print the report as one JSON document on stdout.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Verify every read and every ETag (the default).
    #[arg(long, overrides_with = "no_verify")]
    verify: bool,
    /// Skip verification (saves the client's CPU; errors are still counted).
    #[arg(long, overrides_with = "verify")]
    no_verify: bool,
    /// Objects above this size are written with a multipart upload.
    #[arg(long, default_value = "64MiB")]
    multipart_threshold: String,
    /// Part size of multipart uploads (5MiB to 5GiB).
    #[arg(long, default_value = "16MiB")]
    part_size: String,
    /// Parts of one object in flight at once.
    #[arg(long, default_value_t = 4)]
    part_concurrency: usize,
    /// Time allowed to each operation: 60s.
    #[arg(long, default_value = "60s")]
    timeout: String,
    /// Stop the run, and exit non-zero, once more operations than this have failed.
    #[arg(long)]
    max_errors: Option<u64>,
    /// A PEM CA certificate to trust for https:// (besides the system's).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Do not check the server's certificate (development servers only).
    #[arg(long)]
    insecure: bool,
    /// Virtual-host addressing (bucket.host) instead of path-style.
    #[arg(long)]
    virtual_host: bool,
}

fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

fn config(args: BenchArgs) -> anyhow::Result<Config> {
    let access_key_id = args
        .access_key
        .or_else(|| env(&["AWS_ACCESS_KEY_ID"]))
        .context("no access key: pass --access-key or set AWS_ACCESS_KEY_ID")?;
    let secret_access_key = args
        .secret_key
        .or_else(|| env(&["AWS_SECRET_ACCESS_KEY"]))
        .context("no secret key: set AWS_SECRET_ACCESS_KEY or pass --secret-key")?;
    let region = args
        .region
        .or_else(|| env(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
        .unwrap_or_else(|| DEFAULT_REGION.to_owned());
    let ca_pem = match &args.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read --ca-file {}", path.display()))?,
        ),
        None => None,
    };
    let tls = nuage_bench::tls::client_config(ca_pem.as_deref(), args.insecure)?;
    let sizes = match (&args.size, &args.sizes) {
        (_, Some(sizes)) => SizeDistribution::parse_sizes(sizes)?,
        (Some(size), None) => SizeDistribution::parse_size(size)?,
        (None, None) => SizeDistribution::Fixed(4096),
    };
    let stop = match (args.operations, &args.duration) {
        (Some(n), _) => Stop::Operations(n),
        (None, Some(d)) => Stop::After(nuage_bench::size::parse_duration(d)?),
        (None, None) => Stop::After(DEFAULT_DURATION),
    };
    let warmup = match (&args.warmup, stop) {
        (Some(w), _) => nuage_bench::size::parse_duration(w)?,
        (None, Stop::After(_)) => DEFAULT_WARMUP_TIMED,
        (None, Stop::Operations(_)) => Duration::ZERO,
    };
    Ok(Config {
        endpoint: Endpoint {
            url: args.endpoint.trim_end_matches('/').to_owned(),
            access_key_id,
            secret_access_key,
            region,
            session_token: env(&["AWS_SESSION_TOKEN"]),
            addressing: if args.virtual_host {
                Addressing::VirtualHost
            } else {
                Addressing::Path
            },
        },
        tls,
        bucket: args.bucket,
        workload: Workload::parse(&args.workload, args.mix.as_deref())?,
        sizes,
        concurrency: args.concurrency,
        stop,
        warmup,
        objects: args.objects,
        reuse_objects: args.reuse_objects,
        list_page: args.list_page,
        prefix: args.prefix,
        delimiter: args.delimiter,
        keep: args.keep,
        verify: !args.no_verify,
        multipart_threshold: nuage_bench::size::parse_bytes(&args.multipart_threshold)?,
        part_size: nuage_bench::size::parse_bytes(&args.part_size)?,
        part_concurrency: args.part_concurrency,
        timeout: nuage_bench::size::parse_duration(&args.timeout)?,
        max_errors: args.max_errors,
    })
}

/// Runs the bench; the process exit status.
pub fn run(args: BenchArgs) -> i32 {
    let (json, quiet) = (args.json, args.quiet);
    let config = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nuage bench: {e:#}");
            return EXIT_NOT_RUN;
        }
    };
    let max_errors = config.max_errors;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nuage bench: cannot start the runtime: {e}");
            return EXIT_NOT_RUN;
        }
    };
    let on_event = move |event: Event| {
        if !quiet || matches!(event, Event::Warning(_)) {
            eprintln!("nuage bench: {event}");
        }
    };
    let report = match runtime.block_on(nuage_bench::run(config, &on_event)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nuage bench: {e}");
            return EXIT_NOT_RUN;
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("nuage bench: cannot write the report: {e}");
                return EXIT_FAILED_RUN;
            }
        }
    } else {
        print!("{}", report.table());
    }
    if let Some(why) = report.failure(max_errors) {
        eprintln!("nuage bench: FAILED: {why}");
        return EXIT_FAILED_RUN;
    }
    0
}
