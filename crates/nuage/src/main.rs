//! `nuage`: the command line and the wiring. It alone reads flags, environment
//! and configuration files; it builds typed configuration and hands it to the
//! library crates, which never look at the process environment.

mod access_cli;
mod admin_cli;
mod audit_cli;
mod bench_cli;
mod bootstrap;
mod cluster_cli;
mod compact_cli;
mod compute_cli;
mod config;
mod credentials;
mod debug_clock;
mod dev_cli;
mod metadata;
mod node_cli;
mod residency_cli;
mod root_of_trust;
mod root_of_trust_cli;
mod server;
mod tls;
mod topology;
mod witness_cli;
mod xks_proxy_cli;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "nuage",
    version,
    about = "Nuage: a sovereign cloud platform. S3-compatible object storage with data that stays where its owner says."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs Nuage on this machine: S3 API, embedded metadata, local disk storage.
    Serve(ServeArgs),
    /// The operator's commands: tenants, users and access keys, through the
    /// admin API of a running server (docs/admin.md).
    Admin(admin_cli::AdminArgs),
    /// Operator access approvals: the operator asks, the tenant approves or
    /// denies, an approval yields time-boxed credentials (docs/access-approval.md).
    Access(access_cli::AccessArgs),
    /// The reference external key store (XKS) proxy a tenant runs on its own
    /// premises, and its key commands (docs/xks-proxy.md).
    XksProxy(xks_proxy_cli::XksProxyArgs),
    /// Moves a stopped server's keys to another root of trust, or rotates the
    /// root key (docs/configuration.md).
    RootOfTrust(root_of_trust_cli::RootOfTrustArgs),
    /// A tenant's audit log: pull and verify a copy, search it, export it
    /// (docs/audit-log.md).
    Audit(audit_cli::AuditArgs),
    /// Rewrites a stopped server's metadata store so that nothing deleted
    /// remains in the file (docs/configuration.md).
    Compact(compact_cli::CompactArgs),
    /// An independent witness of transparency logs (C2SP tlog-witness).
    Witness(witness_cli::WitnessArgs),
    /// An S3 load generator for any endpoint: PUT, GET, HEAD, LIST, DELETE
    /// and mixed workloads, verified, with latency percentiles (docs/performance.md).
    Bench(Box<bench_cli::BenchArgs>),
    /// Residency: verify a residency attestation offline, check a topology
    /// file, get/set/clear the policies of tenants and buckets
    /// (docs/residency.md).
    Residency(residency_cli::ResidencyArgs),
    /// The cluster's PKI: the CA and the certificates of storage nodes and
    /// gateways (docs/storage-nodes.md).
    Cluster(cluster_cli::ClusterArgs),
    /// Development helpers: `nuage dev cluster` runs a small multi-site
    /// cluster on this machine (README).
    Dev(dev_cli::DevArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory for metadata, object data, credentials and TLS material.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address for the S3 API (port 0 picks a free port).
    #[arg(long)]
    listen: Option<String>,
    /// TOML configuration file; flags override it. See docs/configuration.md.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve HTTPS; without a configured certificate, a self-signed one is generated on first start.
    #[arg(long)]
    tls: bool,
    /// Base domain for virtual-host-style addressing (`bucket.DOMAIN`); repeatable.
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// Allow plain HTTP on a non-loopback address (development only).
    #[arg(long)]
    allow_insecure_http: bool,
    /// `storage` runs a storage node from the `[node]` section instead
    /// (docs/storage-nodes.md); `compute` a compute host from `[compute]`
    /// (docs/compute.md).
    #[arg(long, value_enum, default_value = "gateway")]
    role: node_cli::ServeRole,
}

/// `s3s::ops` logs every rejected request (bad signature, missing key) at
/// ERROR; those are the client's errors, answered with an S3 error, not ours.
/// Internal errors are logged by `nuage-s3` where they are mapped.
const DEFAULT_LOG_FILTER: &str = "info,s3s::ops=off";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NUAGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .init();
    if matches!(cli.command, Command::Serve(_)) {
        dev_cli::exit_with_supervisor();
    }
    match cli.command {
        Command::Bench(args) => std::process::exit(bench_cli::run(*args)),
        Command::Residency(args) => {
            if let Err(e) = residency_cli::run(args) {
                eprintln!("nuage residency: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Compact(args) => {
            if let Err(e) = compact_cli::run(&args) {
                eprintln!("nuage compact: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Witness(args) => {
            if let Err(e) = witness_cli::run(args) {
                eprintln!("nuage witness: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Audit(args) => {
            if let Err(e) = audit_cli::run(args) {
                eprintln!("nuage audit: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Access(args) => {
            if let Err(e) = access_cli::run(args) {
                eprintln!("nuage access: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Admin(args) => {
            if let Err(e) = admin_cli::run(args) {
                eprintln!("nuage admin: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::XksProxy(args) => {
            if let Err(e) = xks_proxy_cli::run(args) {
                eprintln!("nuage xks-proxy: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::RootOfTrust(args) => {
            if let Err(e) = root_of_trust_cli::run(args) {
                eprintln!("nuage root-of-trust: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Cluster(args) => {
            if let Err(e) = cluster_cli::run(args) {
                eprintln!("nuage cluster: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Dev(args) => {
            if let Err(e) = dev_cli::run(args) {
                eprintln!("nuage dev: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Serve(args) if args.role == node_cli::ServeRole::Compute => {
            if args.tls || !args.domains.is_empty() || args.allow_insecure_http {
                anyhow::bail!(
                    "--tls, --domain and --allow-insecure-http are for the gateway; a compute host always serves mutual TLS"
                );
            }
            compute_cli::run(args.config.as_deref(), args.data_dir, args.listen)
        }
        Command::Serve(args) if args.role == node_cli::ServeRole::Storage => {
            if args.tls || !args.domains.is_empty() || args.allow_insecure_http {
                anyhow::bail!(
                    "--tls, --domain and --allow-insecure-http are for the gateway; a storage node always serves mutual TLS"
                );
            }
            node_cli::run(args.config.as_deref(), args.data_dir, args.listen)
        }
        Command::Serve(args) => {
            let mut file = match &args.config {
                Some(path) => config::FileConfig::load(path)?,
                None => config::FileConfig::default(),
            };
            if let Some(d) = args.data_dir {
                file.data_dir = Some(d);
            }
            if let Some(l) = args.listen {
                file.listen = Some(l);
            }
            if args.tls {
                file.tls.enabled = true;
            }
            if !args.domains.is_empty() {
                file.domains = args.domains;
            }
            if args.allow_insecure_http {
                file.allow_insecure_http = true;
            }
            let config = file.resolve().context("invalid configuration")?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(server::serve(config))
        }
    }
}
