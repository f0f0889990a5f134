//! `nuage cluster ...`: the cluster's PKI, offline, and its storage nodes
//! through a gateway's admin API.
//!
//! `nodes`, `node`, `drain`, `undrain`, `repair` and `scrub` call
//! `/_nuage/admin/v1/cluster/` on a gateway with the operator token (the
//! connection flags are `nuage admin`'s).
//!
//! `ca init` creates the cluster CA in a directory (`ca.pem`, `ca.key` 0600);
//! `cert issue` signs a certificate for a storage node or a gateway whose
//! subject alternative names carry `nuage://<site>/<role>/<node>` and the
//! names it is reached at (docs/storage-nodes.md). The CA key never leaves
//! its directory; keep it off the nodes.

use crate::admin_cli::{ApiClient, OperatorConnection, table};
use anyhow::{Context as _, bail};
use http::Method;
use nuage_node::pki::{self, CertificateAuthority};
use nuage_node::{NodeIdentity, Role};
use serde_json::Value;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    connection: OperatorConnection,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(clap::Subcommand)]
enum ClusterCommand {
    /// The cluster certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Certificates for storage nodes and gateways.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// The storage nodes as the gateway last polled them.
    Nodes,
    /// One storage node, with the replicas still placed on it.
    Node { node: String },
    /// Drains a node for every gateway: nothing new lands on it and repair
    /// passes move its replicas to compliant nodes; `node` shows progress.
    Drain { node: String },
    /// Ends a node's drain.
    Undrain { node: String },
    /// Runs one repair pass now (on the gateway that repairs).
    Repair,
    /// Runs one scrub pass now: every replica verified by its node, bad ones
    /// replaced, orphan files removed after their grace.
    Scrub,
}

#[derive(clap::Subcommand)]
enum CaCommand {
    /// Creates a new CA (ECDSA P-256) in DIR; refuses to overwrite one.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// A name for the cluster, in the CA's common name.
        #[arg(long, default_value = "nuage")]
        name: String,
    },
}

#[derive(clap::Subcommand)]
enum CertCommand {
    /// Issues a certificate and key for one member into OUT (`cert.pem`,
    /// `key.pem` 0600, and a copy of `ca.pem`).
    Issue {
        /// The CA directory (`nuage cluster ca init --dir`).
        #[arg(long)]
        ca_dir: PathBuf,
        /// The member's node id (a-z, 0-9, inner `-`).
        #[arg(long)]
        node: String,
        /// The site it is in (a-z, 0-9, inner `-`).
        #[arg(long)]
        site: String,
        /// `storage`, `gateway` or `compute`.
        #[arg(long)]
        role: String,
        /// DNS name or IP address it is reached at; repeatable. A storage
        /// node needs at least one: clients check the name they dial.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Days of validity.
        #[arg(long, default_value_t = pki::CERT_VALIDITY_DAYS_DEFAULT)]
        days: u32,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let online = |segments: &[&str], method: Method| -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = ApiClient::new(&args.connection)?;
        let mut path = vec!["cluster"];
        path.extend_from_slice(segments);
        let value = runtime.block_on(client.call(method, &path, None))?;
        if args.connection.json {
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            print_answer(segments, &value);
        }
        Ok(())
    };
    match &args.command {
        ClusterCommand::Nodes => return online(&["nodes"], Method::GET),
        ClusterCommand::Node { node } => return online(&["nodes", node], Method::GET),
        ClusterCommand::Drain { node } => return online(&["nodes", node, "drain"], Method::PUT),
        ClusterCommand::Undrain { node } => {
            return online(&["nodes", node, "drain"], Method::DELETE);
        }
        ClusterCommand::Repair => return online(&["repair"], Method::POST),
        ClusterCommand::Scrub => return online(&["scrub"], Method::POST),
        ClusterCommand::Ca { .. } | ClusterCommand::Cert { .. } => {}
    }
    match args.command {
        ClusterCommand::Ca {
            command: CaCommand::Init { dir, name },
        } => {
            let ca = CertificateAuthority::generate(&name)?;
            ca.write_to(&dir)?;
            println!(
                "cluster CA created: {} (certificate, give to every member) and {} (private key, keep offline)",
                dir.join(pki::CA_CERT_FILE).display(),
                dir.join(pki::CA_KEY_FILE).display()
            );
            Ok(())
        }
        ClusterCommand::Cert {
            command:
                CertCommand::Issue {
                    ca_dir,
                    node,
                    site,
                    role,
                    sans,
                    days,
                    out,
                },
        } => {
            let role = Role::parse(&role)?;
            let identity = NodeIdentity::new(&node, &site, role)?;
            if role != Role::Gateway && sans.is_empty() {
                bail!(
                    "a {role} node's certificate needs at least one --san (the DNS name or IP address clients dial)"
                );
            }
            let ca = CertificateAuthority::load(&ca_dir)
                .with_context(|| format!("cannot read the CA in {}", ca_dir.display()))?;
            let issued = ca.issue(&identity, &sans, days)?;
            issued.write_to(&out, ca.cert_pem())?;
            println!(
                "issued {} into {} ({}, {}, {})",
                identity.uri(),
                out.display(),
                pki::CERT_FILE,
                pki::KEY_FILE,
                pki::CA_CERT_FILE
            );
            Ok(())
        }
        ClusterCommand::Nodes
        | ClusterCommand::Node { .. }
        | ClusterCommand::Drain { .. }
        | ClusterCommand::Undrain { .. }
        | ClusterCommand::Repair
        | ClusterCommand::Scrub => Ok(()),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn node_row(n: &Value) -> Vec<String> {
    let status = match n["down_reason"].as_str() {
        Some(why) if n["status"] == "down" => format!("down ({why})"),
        _ => text(&n["status"]),
    };
    [
        text(&n["node"]),
        text(&n["site"]),
        text(&n["country"]),
        status,
        text(&n["blob_count"]),
        text(&n["used_bytes"]),
        text(&n["writable_bytes"]),
    ]
    .into()
}

const NODE_HEADERS: [&str; 7] = [
    "NODE", "SITE", "COUNTRY", "STATUS", "BLOBS", "USED", "WRITABLE",
];

/// The human form of an answer.
fn print_answer(segments: &[&str], value: &Value) {
    match segments {
        ["nodes"] => {
            let nodes = value["nodes"].as_array().cloned().unwrap_or_default();
            println!("{}", table(&NODE_HEADERS, nodes.iter().map(node_row)));
        }
        ["nodes", ..] => {
            println!("{}", table(&NODE_HEADERS, std::iter::once(node_row(value))));
            let replicas = &value["replicas"];
            let left = replicas["replicas"].as_u64().unwrap_or(0);
            match (value["draining"].as_bool() == Some(true), left) {
                (true, 0) => println!("Drained: the location index places no replica on it."),
                (true, n) => println!(
                    "Draining: {n} replica(s), {} bytes, still on it; repair passes move them.",
                    text(&replicas["bytes"])
                ),
                (false, n) => {
                    println!("{n} replica(s), {} bytes, on it.", text(&replicas["bytes"]))
                }
            }
        }
        _ => {
            // A pass's report: its counters, then the failures it lists.
            if let Value::Object(fields) = value {
                for (name, v) in fields {
                    if name != "failures" {
                        println!("{name}: {}", text(v));
                    }
                }
            }
            for failure in value["failures"].as_array().into_iter().flatten() {
                println!("failed: {} {}", text(&failure[0]), text(&failure[1]));
            }
        }
    }
}
