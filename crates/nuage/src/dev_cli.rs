//! `nuage dev cluster`: a small multi-site cluster on this machine, for
//! trying Nuage and for tests (README, "A small multi-site cluster on one
//! machine"; docs/storage-nodes.md, "Running gateways on nodes").
//!
//! In a directory it creates, once, a cluster CA, four storage nodes in four
//! sites (two in France, one in Germany, one in the United States, in
//! regions `fr-par`, `de-fra`, `us-east`), their certificates, the topology,
//! and the configuration of N gateways with `[cluster]`; then it starts the
//! nodes and the gateways as its own child processes (`nuage serve --role
//! storage`, `nuage serve`), prints the endpoints, the credentials and
//! example commands, and stops every child on Ctrl-C or SIGTERM (a node
//! that dies is reported, and the rest keep running, so that a node loss can
//! be tried; with no gateway left, everything stops). A second run on the same directory starts the same cluster
//! again. Everything here is for development: the CA key sits beside the
//! nodes, and the root of trust is a key file.
//!
//! Metadata: with `--postgres-url`, every gateway shares that database;
//! without, the one gateway allowed uses its embedded store (several
//! gateways need a shared database). This helper does not start PostgreSQL
//! itself: the machine's own, or any reachable one, is named by URL.

use anyhow::{Context as _, bail};
use nuage_node::pki::{self, CertificateAuthority};
use nuage_node::{NodeIdentity, Role};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt as _;

/// The nodes of the development cluster: (node id, site, region, country).
pub const NODES: [(&str, &str, &str, &str); 4] = [
    ("fr-1", "par1", "fr-par", "FR"),
    ("fr-2", "par2", "fr-par", "FR"),
    ("de-1", "fra1", "de-fra", "DE"),
    ("us-1", "nyc1", "us-east", "US"),
];
/// Its regions, first the default one: (id, country).
const REGIONS: [(&str, &str); 3] = [("fr-par", "FR"), ("de-fra", "DE"), ("us-east", "US")];
/// Gateways one run may start.
const GATEWAYS_MAX: usize = 8;
/// How long a child may take to report that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Set on every child: the supervisor's process id. A child whose parent
/// changes (the supervisor was killed, even with SIGKILL, and the child
/// re-parented) exits ([`exit_with_supervisor`]).
pub const SUPERVISOR_ENV: &str = "NUAGE_DEV_SUPERVISOR_PID";
/// How often a child checks that its supervisor still runs.
const SUPERVISOR_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a child may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Space each node leaves free on the file system (the node's default, 1
/// GiB, is much for a laptop shared by four nodes).
const NODE_RESERVE_BYTES: u64 = 256 * 1024 * 1024;
/// The file that says what a directory holds (read by the second run and by
/// tests).
pub const MANIFEST_FILE: &str = "dev-cluster.toml";
/// Validity of the development certificates.
const CERT_DAYS: u32 = 365;

#[derive(clap::Args)]
pub struct DevArgs {
    #[command(subcommand)]
    command: DevCommand,
}

#[derive(clap::Subcommand)]
enum DevCommand {
    /// Creates (first run) and runs a cluster of four storage nodes in
    /// France (2 sites), Germany and the United States, and its gateways.
    Cluster(ClusterArgs),
}

#[derive(clap::Args)]
struct ClusterArgs {
    /// Directory of the cluster: CA, certificates, topology, configurations,
    /// data and logs. Created if missing; reused if it holds a cluster.
    #[arg(long)]
    dir: PathBuf,
    /// Gateways to start (more than one needs --postgres-url).
    #[arg(long, default_value_t = 1)]
    gateways: usize,
    /// A PostgreSQL database every gateway shares (docs/metadata-postgres.md);
    /// without it, the gateway keeps its metadata in its embedded store.
    #[arg(long)]
    postgres_url: Option<String>,
    /// Nodes listen on BASE..BASE+3 and gateways on BASE+10.. (default:
    /// free ports chosen at setup).
    #[arg(long)]
    base_port: Option<u16>,
    /// Each node's capacity, GiB.
    #[arg(long, default_value_t = 4)]
    node_capacity_gib: u64,
    /// Seconds between repair passes of each gateway.
    #[arg(long, default_value_t = 30)]
    repair_interval_seconds: u64,
    /// Seconds between polls of the nodes' status by each gateway.
    #[arg(long, default_value_t = 2)]
    poll_interval_seconds: u64,
    /// The residency policy (JSON) of blobs whose bucket and tenant have
    /// none (`[cluster] default_policy`); default: the first region's.
    #[arg(long)]
    default_policy: Option<String>,
    /// Write everything, print how to start each process, start nothing.
    #[arg(long)]
    setup_only: bool,
}

/// One process of the cluster, as the manifest lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub name: String,
    pub listen: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    /// The node's site (nodes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// `dev-cluster.toml`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub node: Vec<Member>,
    pub gateway: Vec<Member>,
}

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let DevCommand::Cluster(args) = args.command;
    if args.gateways == 0 || args.gateways > GATEWAYS_MAX {
        bail!("--gateways must be 1 to {GATEWAYS_MAX}");
    }
    if args.gateways > 1 && args.postgres_url.is_none() {
        bail!(
            "{} gateways must share their metadata: pass --postgres-url (or run one gateway on its embedded store)",
            args.gateways
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest = if manifest_path.exists() {
        let text = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?;
        let manifest: Manifest = toml::from_str(&text)
            .with_context(|| format!("cannot parse {}", manifest_path.display()))?;
        println!(
            "nuage dev cluster: reusing the cluster in {} (its ports and settings; delete the directory for a new one)",
            dir.display()
        );
        manifest
    } else {
        if std::fs::read_dir(&dir)?.next().is_some() {
            bail!(
                "{} is not empty and holds no {MANIFEST_FILE}: give an empty or new directory",
                dir.display()
            );
        }
        let manifest = setup(&dir, &args)?;
        std::fs::write(&manifest_path, toml::to_string(&manifest)?)?;
        manifest
    };
    if args.setup_only {
        print_commands(&manifest);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(supervise(&dir, &manifest))
}

/// A TOML string literal.
fn q(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn qp(path: &Path) -> String {
    q(&path.to_string_lossy())
}

/// Free loopback ports, held together while chosen so that none repeats.
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("cannot find free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn setup(dir: &Path, args: &ClusterArgs) -> anyhow::Result<Manifest> {
    let node_ports: Vec<u16> = match args.base_port {
        Some(base) => (0..NODES.len())
            .map(|i| base.checked_add(u16::try_from(i).unwrap_or(u16::MAX)))
            .collect::<Option<_>>()
            .context("--base-port is too high")?,
        None => free_ports(NODES.len())?,
    };
    let gateway_ports: Vec<u16> = match args.base_port {
        Some(base) => (0..args.gateways)
            .map(|i| base.checked_add(10 + u16::try_from(i).unwrap_or(u16::MAX)))
            .collect::<Option<_>>()
            .context("--base-port is too high")?,
        None => free_ports(args.gateways)?,
    };
    let capacity_bytes = args
        .node_capacity_gib
        .checked_mul(1024 * 1024 * 1024)
        .filter(|b| *b > 0)
        .context("--node-capacity-gib must be 1 or more")?;

    // The CA: in the cluster's directory, which is fine for development only.
    let ca_dir = dir.join("ca");
    let ca = CertificateAuthority::generate("nuage-dev")?;
    ca.write_to(&ca_dir)?;

    let mut topology = String::from(
        "# The development cluster's topology (nuage dev cluster). docs/residency.md\n",
    );
    for (region, _) in REGIONS {
        let _ = write!(topology, "\n[[region]]\nid = {}\n", q(region));
    }
    for (_, site, region, country) in NODES {
        let _ = write!(
            topology,
            "\n[[site]]\nid = {}\nregion = {}\ncountry = {}\noperator = {{ entity = {}, country_of_control = {} }}\n",
            q(site),
            q(region),
            q(country),
            q(&format!("Nuage dev operator ({country})")),
            q(country),
        );
    }
    let mut nodes = Vec::new();
    for ((id, site, _, _), port) in NODES.iter().zip(&node_ports) {
        let listen = format!("127.0.0.1:{port}");
        let _ = write!(
            topology,
            "\n[[node]]\nid = {}\nsite = {}\nendpoint = {}\ncapacity_bytes = {capacity_bytes}\n",
            q(id),
            q(site),
            q(&format!("https://{listen}"))
        );
        let home = dir.join("nodes").join(id);
        let tls = home.join("tls");
        let issued = ca.issue(
            &NodeIdentity::new(id, site, Role::Storage)?,
            &["127.0.0.1".to_owned(), "localhost".to_owned()],
            CERT_DAYS,
        )?;
        issued.write_to(&tls, ca.cert_pem())?;
        let data_dir = home.join("data");
        std::fs::create_dir_all(&data_dir)?;
        let config = home.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "# Storage node {id} (nuage dev cluster). docs/configuration.md\n\
                 data_dir = {}\n\n[node]\nid = {}\nsite = {}\nlisten = {}\ncert = {}\nkey = {}\nca = {}\n\
                 capacity_bytes = {capacity_bytes}\nreserve_bytes = {NODE_RESERVE_BYTES}\n",
                qp(&data_dir),
                q(id),
                q(site),
                q(&listen),
                qp(&tls.join(pki::CERT_FILE)),
                qp(&tls.join(pki::KEY_FILE)),
                qp(&tls.join(pki::CA_CERT_FILE)),
            ),
        )?;
        nodes.push(Member {
            name: (*id).to_owned(),
            listen,
            config,
            data_dir,
            site: Some((*site).to_owned()),
        });
    }
    let topology_path = dir.join("topology.toml");
    std::fs::write(&topology_path, &topology)?;
    // Checked now rather than by the first gateway's start.
    nuage_placement::Topology::from_toml(&topology).context("the generated topology")?;

    let mut gateways = Vec::new();
    for (i, port) in gateway_ports.iter().enumerate() {
        let name = format!("gw-{}", i + 1);
        let home = dir.join("gateways").join(&name);
        let tls = home.join("tls");
        // A gateway's certificate names a site too: the first French one.
        let issued = ca.issue(
            &NodeIdentity::new(&name, NODES[i % 2].1, Role::Gateway)?,
            &[],
            CERT_DAYS,
        )?;
        issued.write_to(&tls, ca.cert_pem())?;
        let data_dir = home.join("data");
        create_private_dir(&data_dir)?;
        let listen = format!("127.0.0.1:{port}");
        let mut text = format!(
            "# Gateway {name} (nuage dev cluster). docs/configuration.md\n\
             data_dir = {}\nlisten = {}\ntopology_file = {}\n",
            qp(&data_dir),
            q(&listen),
            qp(&topology_path)
        );
        for (region, country) in REGIONS {
            let _ = write!(
                text,
                "\n[[regions]]\nname = {}\ncountry = {}\n",
                q(region),
                q(country)
            );
        }
        if let Some(url) = &args.postgres_url {
            let _ = write!(
                text,
                "\n[metadata]\nbackend = \"postgres\"\nurl = {}\n",
                q(url)
            );
        }
        let _ = write!(
            text,
            "\n[cluster]\ncert = {}\nkey = {}\nca = {}\npoll_interval_seconds = {}\nrepair_interval_seconds = {}\n",
            qp(&tls.join(pki::CERT_FILE)),
            qp(&tls.join(pki::KEY_FILE)),
            qp(&tls.join(pki::CA_CERT_FILE)),
            args.poll_interval_seconds,
            args.repair_interval_seconds,
        );
        if i > 0 {
            // One repairer: the cluster's repair lease would let only one
            // run at a time anyway; this keeps the first gateway the one.
            text.push_str("repair = false\n");
        }
        if let Some(policy) = &args.default_policy {
            let _ = writeln!(text, "default_policy = {}", q(policy));
        }
        let config = home.join("gateway.toml");
        std::fs::write(&config, text)?;
        // Checked now: a bad interval or policy is named before anything runs.
        crate::config::FileConfig::load(&config)?
            .resolve()
            .with_context(|| format!("the generated {}", config.display()))?;
        gateways.push(Member {
            name,
            listen,
            config,
            data_dir,
            site: None,
        });
    }
    share_gateway_secrets(&gateways)?;
    Ok(Manifest {
        node: nodes,
        gateway: gateways,
    })
}

fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Every gateway on one database needs the same root of trust, and the same
/// administrator key and operator token make them interchangeable
/// (docs/metadata-postgres.md): created in the first gateway's data
/// directory, copied (mode 0600 kept) to the others.
fn share_gateway_secrets(gateways: &[Member]) -> anyhow::Result<()> {
    let Some(first) = gateways.first() else {
        return Ok(());
    };
    crate::credentials::load_or_create(&first.data_dir, REGIONS[0].0)?;
    crate::credentials::load_or_create_operator(&first.data_dir)?;
    nuage_crypto::RootKeyFile::open_or_create(
        &first.data_dir.join(crate::root_of_trust::ROOT_KEY_FILE),
    )
    .context("cannot create the development root key")?;
    for other in &gateways[1..] {
        for file in [
            crate::credentials::FILE_NAME,
            crate::credentials::OPERATOR_FILE_NAME,
            crate::root_of_trust::ROOT_KEY_FILE,
        ] {
            std::fs::copy(first.data_dir.join(file), other.data_dir.join(file))
                .with_context(|| format!("cannot copy {file} to {}", other.name))?;
        }
    }
    Ok(())
}

fn print_commands(manifest: &Manifest) {
    let exe =
        std::env::current_exe().map_or_else(|_| "nuage".to_owned(), |p| p.display().to_string());
    println!("Start the storage nodes, then the gateways (the first before the others):");
    for node in &manifest.node {
        println!(
            "    {exe} serve --role storage --config {}",
            node.config.display()
        );
    }
    for gateway in &manifest.gateway {
        println!("    {exe} serve --config {}", gateway.config.display());
    }
}

/// A running child and what it is.
struct Running {
    name: String,
    child: tokio::process::Child,
    gateway: bool,
    /// Exited on its own (reported once).
    exited: bool,
}

/// Starts `nuage ARGS` with stderr to `log`, and waits (bounded) for the
/// stdout line starting with `ready`, whose rest it returns.
async fn start_child(
    name: &str,
    args: &[&std::ffi::OsStr],
    log: &Path,
    ready: &str,
) -> anyhow::Result<(Running, String)> {
    let exe = std::env::current_exe().context("cannot find the nuage executable")?;
    let log_file =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut child = tokio::process::Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        // Plain log files, without terminal colours.
        .env("NO_COLOR", "1")
        // A child never outlives this supervisor's handle, nor (through
        // `exit_with_supervisor`) the supervisor itself.
        .kill_on_drop(true)
        .env(SUPERVISOR_ENV, std::process::id().to_string())
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let found = tokio::time::timeout(START_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix(ready) {
                return Ok::<_, std::io::Error>(Some(rest.trim().to_owned()));
            }
        }
        Ok(None)
    })
    .await;
    let rest = match found {
        Ok(Ok(Some(rest))) => rest,
        Ok(Ok(None) | Err(_)) | Err(_) => {
            let _ = child.kill().await;
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{name} did not start within {} s; the end of {}:\n{}",
                START_TIMEOUT.as_secs(),
                log.display(),
                tail.join("\n")
            );
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((
        Running {
            name: name.to_owned(),
            child,
            gateway: false,
            exited: false,
        },
        rest,
    ))
}

async fn supervise(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut running: Vec<Running> = Vec::new();
    let started = start_all(manifest, &logs, &mut running).await;
    let outcome = match started {
        Ok(endpoints) => {
            print_banner(manifest, &endpoints, &logs);
            wait_for_stop(&mut running).await
        }
        Err(e) => Err(e),
    };
    stop_all(running).await;
    outcome
}

async fn start_all(
    manifest: &Manifest,
    logs: &Path,
    running: &mut Vec<Running>,
) -> anyhow::Result<Vec<String>> {
    for node in &manifest.node {
        let (child, addr) = start_child(
            &node.name,
            &[
                "serve".as_ref(),
                "--role".as_ref(),
                "storage".as_ref(),
                "--config".as_ref(),
                node.config.as_os_str(),
            ],
            &logs.join(format!("{}.log", node.name)),
            "nuage storage node listening on ",
        )
        .await?;
        println!(
            "nuage dev cluster: storage node {} (site {}) listening on {addr}",
            node.name,
            node.site.as_deref().unwrap_or("?")
        );
        running.push(child);
    }
    // One gateway after the other: the first creates the tenant and its
    // keys in a shared database, the next ones find them.
    let mut endpoints = Vec::new();
    for gateway in &manifest.gateway {
        let (mut child, endpoint) = start_child(
            &gateway.name,
            &[
                "serve".as_ref(),
                "--config".as_ref(),
                gateway.config.as_os_str(),
            ],
            &logs.join(format!("{}.log", gateway.name)),
            "nuage: S3 endpoint listening on ",
        )
        .await?;
        println!(
            "nuage dev cluster: gateway {} listening on {endpoint}",
            gateway.name
        );
        child.gateway = true;
        running.push(child);
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

fn print_banner(manifest: &Manifest, endpoints: &[String], logs: &Path) {
    let Some(first) = manifest.gateway.first() else {
        return;
    };
    let Some(endpoint) = endpoints.first() else {
        return;
    };
    let creds = crate::credentials::load_or_create(&first.data_dir, REGIONS[0].0)
        .ok()
        .map(|(c, _)| c);
    println!();
    if let Some(creds) = creds {
        println!("Credentials (the `default` tenant's administrator, every gateway):");
        println!("    export AWS_ACCESS_KEY_ID={}", creds.access_key_id);
        println!(
            "    export AWS_SECRET_ACCESS_KEY={}",
            creds.secret_access_key
        );
        println!("    export AWS_DEFAULT_REGION={}", creds.region);
    }
    println!();
    println!("Try:");
    println!("    aws --endpoint-url {endpoint} s3 mb s3://demo");
    println!("    aws --endpoint-url {endpoint} s3 cp ./some-file s3://demo/");
    if let Some(other) = endpoints.get(1) {
        println!("    aws --endpoint-url {other} s3 ls s3://demo/     # through another gateway");
    }
    println!(
        "    nuage residency set --tenant default --endpoint {endpoint} --data-dir {} \\",
        first.data_dir.display()
    );
    println!(
        "        --policy - <<< '{{\"allowed_countries\":[\"FR\"],\"durability\":{{\"replicas\":2}},\"min_sites\":2}}'"
    );
    println!(
        "    ls {}/*/data/blobs/*/      # which nodes hold the blobs",
        manifest
            .node
            .first()
            .and_then(|n| n.data_dir.parent())
            .and_then(Path::parent)
            .map_or_else(|| ".".to_owned(), |p| p.display().to_string())
    );
    println!();
    println!(
        "Logs in {}. Ctrl-C stops the cluster; running the same command again restarts it.",
        logs.display()
    );
}

/// Until Ctrl-C or SIGTERM. A storage node that exits (killed to try a
/// node loss) is reported and the rest keep running; when no gateway is
/// left, the cluster stops with an error.
async fn wait_for_stop(running: &mut [Running]) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let watch = async {
        loop {
            for r in running.iter_mut().filter(|r| !r.exited) {
                if let Ok(Some(status)) = r.child.try_wait() {
                    r.exited = true;
                    println!(
                        "nuage dev cluster: {} exited ({status}); the others keep running (see logs/{}.log; run the cluster again to restart it)",
                        r.name, r.name
                    );
                }
            }
            if running.iter().filter(|r| r.gateway).all(|r| r.exited) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            println!("nuage dev cluster: stopping");
            Ok(())
        }
        _ = term.recv() => Ok(()),
        () = watch => bail!("every gateway exited; stopping the cluster (see the logs)"),
    }
}

/// SIGTERM to every child (gateways first, the reverse of the start), then
/// waits for each, killing those that outlast [`STOP_TIMEOUT`].
async fn stop_all(running: Vec<Running>) {
    for r in running.iter().rev() {
        if let Some(pid) = r.child.id() {
            let _ = tokio::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
    }
    for mut r in running.into_iter().rev() {
        if tokio::time::timeout(STOP_TIMEOUT, r.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(child = %r.name, "did not stop in time: killed");
            let _ = r.child.kill().await;
        }
    }
}

/// In a child of `nuage dev cluster` (its environment names the supervisor),
/// a thread that ends the process once its parent is no longer that
/// supervisor: `kill -9` of `nuage dev cluster` then leaves nothing running.
/// Elsewhere, nothing.
pub fn exit_with_supervisor() {
    let Some(supervisor) = std::env::var(SUPERVISOR_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("dev-supervisor-watch".into())
        .spawn(move || {
            loop {
                if std::os::unix::process::parent_id() != supervisor {
                    eprintln!(
                        "nuage: the `nuage dev cluster` that started this process (pid {supervisor}) is gone; exiting"
                    );
                    std::process::exit(0);
                }
                std::thread::sleep(SUPERVISOR_CHECK_INTERVAL);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the dev cluster supervisor");
    }
}
