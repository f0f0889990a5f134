//! `nuage cluster ...`: the cluster's PKI, offline.
//!
//! `ca init` creates the cluster CA in a directory (`ca.pem`, `ca.key` 0600);
//! `cert issue` signs a certificate for a storage node or a gateway whose
//! subject alternative names carry `nuage://<site>/<role>/<node>` and the
//! names it is reached at (docs/storage-nodes.md). The CA key never leaves
//! its directory; keep it off the nodes.

use anyhow::{Context as _, bail};
use nuage_node::pki::{self, CertificateAuthority};
use nuage_node::{NodeIdentity, Role};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ClusterArgs {
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
        /// `storage` or `gateway`.
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
            if role == Role::Storage && sans.is_empty() {
                bail!(
                    "a storage node's certificate needs at least one --san (the DNS name or IP address clients dial)"
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
    }
}
