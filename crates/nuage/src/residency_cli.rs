//! `nuage residency`: offline residency tools. `verify` checks a residency
//! attestation with the region's verifier key and prints where every replica
//! is; `check-topology` validates an operator's `topology.toml` and lists its
//! sites (and, given a policy, which of them comply).
//!
//! Both only read the files they are given; they never contact a server, so
//! a tenant can check an attestation on a machine of its own.
//!
//! `key` fetches the region's verifier key (`GET /_nuage/residency/v1/key`,
//! unauthenticated) and `attest` an attestation
//! (`GET /_nuage/residency/v1/attestation`, SigV4-signed, service
//! `residency`, with the tenant's AWS credentials), for `verify` to check.
//!
//! `get`, `set` and `clear` manage the residency policies of tenants and
//! buckets on a running server, through the admin API with the operator
//! token (as `nuage admin` does): `/tenants/{tenant}/residency` and
//! `/tenants/{tenant}/buckets/{bucket}/residency`.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use nuage_placement::{Attestation, ResidencyPolicy, Topology, limits, verify};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::admin_cli::{DEFAULT_ENDPOINT, SEGMENT};
use crate::audit_cli::flag_or_env;

#[derive(clap::Args)]
pub struct ResidencyArgs {
    #[command(subcommand)]
    command: ResidencyCommand,
}

#[derive(clap::Subcommand)]
enum ResidencyCommand {
    /// Verifies a residency attestation offline and prints its replicas.
    Verify(VerifyArgs),
    /// Validates a topology file and prints its sites.
    CheckTopology(CheckTopologyArgs),
    /// Shows a tenant's or a bucket's residency policy (stored and
    /// effective) and whether the server's topology can satisfy it.
    Get(PolicyTarget),
    /// Sets a tenant's or a bucket's residency policy from a JSON file. A
    /// bucket's may only narrow its tenant's.
    Set(SetArgs),
    /// Removes a tenant's or a bucket's residency policy.
    Clear(PolicyTarget),
    /// Checks every blob of a bucket against its effective policy on a
    /// gateway of a cluster: compliant, or what is left to migrate or
    /// restore (after a narrowing, a drain or a node loss). Exits 3 when
    /// the bucket does not comply.
    Compliance(PolicyTarget),
    /// Prints the region's verifier key, which `verify --key` takes.
    Key(KeyArgs),
    /// Asks the server for a signed attestation of where an object's (or a
    /// bucket's) replicas are, signed with the caller's access key.
    Attest(AttestArgs),
}

#[derive(clap::Args)]
struct KeyArgs {
    /// URL of the Nuage server (its S3 endpoint).
    #[arg(long, default_value = DEFAULT_ENDPOINT)]
    endpoint: String,
    /// A PEM certificate to trust for https://.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Write the key to this file (else standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct AttestArgs {
    /// URL of the Nuage server (its S3 endpoint).
    #[arg(long, default_value = DEFAULT_ENDPOINT)]
    endpoint: String,
    /// The bucket.
    #[arg(long)]
    bucket: String,
    /// An object of the bucket (else: every object's latest version).
    #[arg(long)]
    key: Option<String>,
    /// A version of the object (else its latest).
    #[arg(long, requires = "key")]
    version_id: Option<String>,
    /// Write the attestation to this file (else standard output).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Access key id (default: $AWS_ACCESS_KEY_ID).
    #[arg(long)]
    access_key_id: Option<String>,
    /// Secret access key (default: $AWS_SECRET_ACCESS_KEY; prefer the
    /// variable, command lines are visible to other users).
    #[arg(long)]
    secret_access_key: Option<String>,
    /// Session token of temporary credentials (default: $AWS_SESSION_TOKEN).
    #[arg(long)]
    session_token: Option<String>,
    /// Region of the signature (default: $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// A PEM certificate to trust for https://.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

/// Where the admin API is and how to authenticate (as `nuage admin`).
#[derive(clap::Args)]
struct ServerArgs {
    /// URL of the Nuage server (http:// or https://).
    #[arg(long, default_value = DEFAULT_ENDPOINT)]
    endpoint: String,
    /// Operator token. Other local users can see command lines: prefer the
    /// NUAGE_OPERATOR_TOKEN variable, or --data-dir.
    #[arg(long)]
    token: Option<String>,
    /// The server's data directory: the token is read from its
    /// operator-credentials.toml when neither --token nor NUAGE_OPERATOR_TOKEN
    /// is given, and its self-signed certificate is trusted for https://.
    #[arg(long, default_value = crate::config::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// A PEM certificate to trust for https://.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Print the API's JSON response.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct PolicyTarget {
    /// The tenant (id or name).
    #[arg(long)]
    tenant: String,
    /// A bucket of the tenant: its own policy rather than the tenant's.
    #[arg(long)]
    bucket: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(clap::Args)]
struct SetArgs {
    #[command(flatten)]
    target: PolicyTarget,
    /// The policy (JSON, docs/residency.md), or `-` for standard input.
    #[arg(long)]
    policy: PathBuf,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The attestation (a signed note, as the API returns it).
    file: PathBuf,
    /// The region's verifier key (`name+id+key`), or a file holding it.
    #[arg(long)]
    key: String,
    /// Print the verified statement as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Fail also when the attestation verifies but states that the
    /// placement does not comply with the policy.
    #[arg(long)]
    require_compliant: bool,
}

#[derive(clap::Args)]
struct CheckTopologyArgs {
    /// The topology file (`topology.toml`).
    file: PathBuf,
    /// A residency policy (JSON): also say which sites comply with it.
    #[arg(long)]
    policy: Option<PathBuf>,
}

/// Runs `nuage residency ...`.
///
/// # Errors
/// Any failure, worded for the person at the terminal.
pub fn run(args: ResidencyArgs) -> anyhow::Result<()> {
    match args.command {
        ResidencyCommand::Verify(args) => run_verify(&args),
        ResidencyCommand::CheckTopology(args) => run_check_topology(&args),
        ResidencyCommand::Get(target) => remote(&target, Method::GET, None),
        ResidencyCommand::Set(args) => {
            let text = if args.policy.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .take(u64::try_from(limits::POLICY_JSON_BYTES_MAX).unwrap_or(u64::MAX) + 1)
                    .read_to_string(&mut text)
                    .context("cannot read the policy from standard input")?;
                if text.len() > limits::POLICY_JSON_BYTES_MAX {
                    bail!(
                        "the policy is larger than {} bytes",
                        limits::POLICY_JSON_BYTES_MAX
                    );
                }
                text
            } else {
                read_bounded(&args.policy, limits::POLICY_JSON_BYTES_MAX)?
            };
            // Checked here too, so that a typo is pointed at before any
            // request; the server checks it again.
            ResidencyPolicy::from_json(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", args.policy.display()))?;
            remote(&args.target, Method::PUT, Some(text))
        }
        ResidencyCommand::Clear(target) => remote(&target, Method::DELETE, None),
        ResidencyCommand::Compliance(target) => run_compliance(&target),
        ResidencyCommand::Key(args) => run_key(&args),
        ResidencyCommand::Attest(args) => run_attest(&args),
    }
}

/// Largest response read: a tenant's view lists at most every region.
const RESPONSE_BYTES_MAX: usize = 1024 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One admin API call for `get`, `set` or `clear`, and its printout.
fn remote(target: &PolicyTarget, method: Method, body: Option<String>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let clear = method == Method::DELETE;
    let value = runtime.block_on(call(target, method, body))?;
    if target.server.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let whose = match &target.bucket {
        Some(bucket) => format!("bucket `{bucket}` of tenant `{}`", target.tenant),
        None => format!("tenant `{}`", target.tenant),
    };
    if clear {
        println!("Removed the residency policy of {whose}.");
        return Ok(());
    }
    print_view(&whose, &value);
    Ok(())
}

fn policy_json(value: &Value) -> String {
    if value.is_null() {
        "none".to_owned()
    } else {
        value.to_string()
    }
}

fn print_view(whose: &str, value: &Value) {
    println!(
        "Residency policy of {whose}: {}",
        policy_json(&value["policy"])
    );
    if let Some(source) = value["effective_source"].as_str() {
        println!(
            "Effective policy (from {source}): {}",
            policy_json(&value["effective"])
        );
    }
    let mut feasibility: Vec<&Value> = value["regions"]
        .as_array()
        .map(|r| r.iter().collect())
        .unwrap_or_default();
    if value["feasibility"].is_object() {
        feasibility.push(&value["feasibility"]);
    }
    for region in feasibility {
        let name = region["region"].as_str().unwrap_or("-");
        if region["satisfiable"].as_bool() == Some(true) {
            println!("Region {name}: satisfiable");
        } else {
            println!(
                "Region {name}: NOT satisfiable ({}): {}",
                region["rule"].as_str().unwrap_or("-"),
                region["reason"].as_str().unwrap_or("-")
            );
        }
    }
}

/// Exit status of `compliance` for a bucket that does not comply (1 is a
/// failure to ask).
const NOT_COMPLIANT_EXIT: i32 = 3;

fn run_compliance(target: &PolicyTarget) -> anyhow::Result<()> {
    let Some(bucket) = &target.bucket else {
        bail!("compliance is a bucket's: give --bucket");
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let value = runtime.block_on(call_at(target, Method::GET, None, "/compliance"))?;
    let compliant = value["compliant"].as_bool() == Some(true);
    if target.server.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let n = |name: &str| value[name].as_u64().unwrap_or(0);
        println!(
            "Bucket `{bucket}` against its effective policy (from {}): {}",
            value["policy_source"].as_str().unwrap_or("-"),
            policy_json(&value["policy"])
        );
        println!(
            "{}: {} of {} blob(s) comply; {} replica(s) to move, {} missing.",
            if compliant {
                "COMPLIANT"
            } else {
                "NOT COMPLIANT"
            },
            n("compliant_blobs"),
            n("blobs"),
            n("replicas_to_move"),
            n("replicas_missing")
        );
        for issue in value["issues"].as_array().into_iter().flatten() {
            println!(
                "  {}: {}",
                issue["blob_id"].as_str().unwrap_or("-"),
                issue["reason"].as_str().unwrap_or("-")
            );
        }
    }
    if !compliant {
        std::process::exit(NOT_COMPLIANT_EXIT);
    }
    Ok(())
}

async fn call(
    target: &PolicyTarget,
    method: Method,
    body: Option<String>,
) -> anyhow::Result<Value> {
    call_at(target, method, body, "").await
}

/// One admin API call on the target's `/residency` path plus `suffix`.
async fn call_at(
    target: &PolicyTarget,
    method: Method,
    body: Option<String>,
    suffix: &str,
) -> anyhow::Result<Value> {
    let server = &target.server;
    let (endpoint, _, https) = crate::admin_cli::parse_endpoint(&server.endpoint)?;
    let token = crate::admin_cli::operator_token(server.token.as_deref(), &server.data_dir)?;
    let tls = crate::admin_cli::client_tls(https, server.ca_cert.as_deref(), &server.data_dir)?;
    let client = crate::admin_cli::http_client(tls);
    let mut url = format!(
        "{endpoint}{}/tenants/{}",
        nuage_admin_api::API_V1_PREFIX.trim_end_matches('/'),
        utf8_percent_encode(&target.tenant, SEGMENT)
    );
    if let Some(bucket) = &target.bucket {
        url.push_str("/buckets/");
        url.extend(utf8_percent_encode(bucket, SEGMENT));
    }
    url.push_str("/residency");
    url.push_str(suffix);
    let mut request = http::Request::builder()
        .method(method)
        .uri(&url)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let (status, bytes) = crate::admin_cli::exchange(
        &client,
        request,
        &endpoint,
        REQUEST_TIMEOUT,
        RESPONSE_BYTES_MAX,
    )
    .await?;
    let value: Option<Value> = serde_json::from_slice(&bytes).ok();
    if status.is_success() {
        return Ok(value.unwrap_or(Value::Null));
    }
    let error = value.as_ref().map(|v| &v["error"]);
    let field = |name: &str| error.and_then(|e| e[name].as_str()).map(str::to_owned);
    let code = field("code").unwrap_or_else(|| "-".into());
    let message = field("message").unwrap_or_else(|| format!("{status} from {endpoint}"));
    if status == StatusCode::UNAUTHORIZED {
        bail!(
            "the server refused the operator token (HTTP 401 {code}): {message}\n\
             The token comes from --token, else $NUAGE_OPERATOR_TOKEN, else DATA_DIR/{} (--data-dir).",
            crate::credentials::OPERATOR_FILE_NAME
        );
    }
    bail!("{message} ({code}, HTTP {})", status.as_u16())
}

/// Reads a whole file of at most `max` bytes as UTF-8.
fn read_bounded(path: &Path, max: usize) -> anyhow::Result<String> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut text = String::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?;
    if text.len() > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(text)
}

fn run_verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let key_path = Path::new(&args.key);
    let vkey = if !args.key.contains('+') && key_path.is_file() {
        read_bounded(key_path, 4096)?.trim().to_string()
    } else {
        args.key.trim().to_string()
    };
    let text = read_bounded(&args.file, limits::ATTESTATION_BYTES_MAX)?;
    let attestation =
        verify(&text, &vkey).with_context(|| format!("{}: rejected", args.file.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&attestation)?);
    } else {
        print_attestation(&attestation, &vkey);
    }
    if args.require_compliant && !attestation.compliant {
        bail!(
            "{}: the attestation is authentic but states that the placement does not comply \
             with the policy",
            args.file.display()
        );
    }
    Ok(())
}

fn print_attestation(attestation: &Attestation, vkey: &str) {
    let key = vkey.rsplit_once('+').map_or(vkey, |(name_id, _)| name_id);
    println!("Verified: signed by {key}");
    println!("Region:     {}", attestation.region);
    println!(
        "Issued at:  {}",
        attestation
            .issued_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    );
    let subject = &attestation.subject;
    let mut what = format!("tenant {}, bucket {}", subject.tenant, subject.bucket);
    if let Some(key) = &subject.key {
        what.push_str(&format!(", key {key:?}"));
    }
    if let Some(version) = &subject.version_id {
        what.push_str(&format!(", version {version}"));
    }
    println!("Subject:    {what}");
    println!("Policy:     {}", policy_text(&attestation.policy));
    if attestation.compliant {
        println!("Compliant:  yes");
    } else {
        println!("Compliant:  NO");
        for violation in &attestation.violations {
            println!("  - {violation}");
        }
    }
    println!();
    let mut rows = vec![
        [
            "BLOB",
            "CHUNK",
            "NODE",
            "SITE",
            "COUNTRY",
            "JURISDICTIONS",
            "OPERATOR",
            "CONTROL",
            "QUALIFICATIONS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for replica in &attestation.replicas {
        let mut row = vec![
            replica.blob.clone().unwrap_or_else(|| "(bucket)".into()),
            replica.chunk.map_or_else(|| "-".into(), |c| c.to_string()),
            replica.node.clone(),
        ];
        match &replica.site {
            Some(site) => row.extend([
                site.id.clone(),
                site.country.to_string(),
                join(&site.jurisdictions),
                site.operator.entity.clone(),
                site.operator.country_of_control.to_string(),
                join(&site.qualifications),
            ]),
            None => row.extend(
                ["(not in the topology)".to_string()]
                    .into_iter()
                    .chain(std::iter::repeat_n("-".to_string(), 5)),
            ),
        }
        rows.push(row);
    }
    print_table(&rows);
}

fn policy_text(policy: &ResidencyPolicy) -> String {
    let mut parts = vec![format!("in {}", policy.places_text())];
    if !policy.required_qualifications.is_empty() {
        parts.push(format!(
            "requires {}",
            join(&policy.required_qualifications)
        ));
    }
    if let Some(countries) = &policy.allowed_operator_countries {
        parts.push(format!("operators controlled from {}", join(countries)));
    }
    parts.push(format!(
        "{} on at least {} site(s)",
        policy.durability, policy.min_sites
    ));
    parts.join("; ")
}

fn join<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let joined: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    if joined.is_empty() {
        "-".to_string()
    } else {
        joined.join(",")
    }
}

fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn run_check_topology(args: &CheckTopologyArgs) -> anyhow::Result<()> {
    let text = read_bounded(&args.file, limits::TOPOLOGY_FILE_BYTES_MAX)?;
    let topology = Topology::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("{}: invalid topology: {e}", args.file.display()))?;
    let policy = match &args.policy {
        Some(path) => Some(
            ResidencyPolicy::from_json(&read_bounded(path, limits::POLICY_JSON_BYTES_MAX)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    println!(
        "{}: valid topology: {} region(s), {} site(s), {} node(s), {} compute host(s)",
        args.file.display(),
        topology.regions().len(),
        topology.sites().len(),
        topology.nodes().len(),
        topology.compute_hosts().len()
    );
    let mut header = [
        "SITE",
        "REGION",
        "COUNTRY",
        "JURISDICTIONS",
        "OPERATOR",
        "CONTROL",
        "QUALIFICATIONS",
        "NODES",
        "CAPACITY",
        "COMPUTE",
    ]
    .map(String::from)
    .to_vec();
    if policy.is_some() {
        header.push("POLICY".to_string());
    }
    let mut rows = vec![header];
    let mut compliant = (0usize, 0usize);
    for site in topology.sites().values() {
        let nodes: Vec<_> = topology.nodes_in(&site.id).collect();
        let capacity: u64 = nodes.iter().map(|n| n.capacity_bytes).sum();
        let mut row = vec![
            site.id.clone(),
            site.region.clone(),
            site.country.to_string(),
            join(&site.jurisdictions),
            site.operator.entity.clone(),
            site.operator.country_of_control.to_string(),
            join(&site.qualifications),
            nodes.len().to_string(),
            bytes_text(capacity),
            topology
                .compute_hosts()
                .values()
                .filter(|h| h.site == site.id)
                .count()
                .to_string(),
        ];
        if let Some(policy) = &policy {
            row.push(match policy.site_verdict(site) {
                Ok(()) => {
                    compliant.0 += 1;
                    compliant.1 += nodes.len();
                    "complies".to_string()
                }
                Err(rejection) => format!("refused: {rejection}"),
            });
        }
        rows.push(row);
    }
    println!();
    print_table(&rows);
    if let Some(policy) = &policy {
        println!();
        println!(
            "Policy ({}): {} compliant site(s), {} compliant node(s)",
            policy_text(policy),
            compliant.0,
            compliant.1
        );
        if compliant.0 < policy.min_sites as usize || compliant.1 < policy.width() as usize {
            bail!(
                "this topology cannot satisfy the policy: it needs {} node(s) on at least {} \
                 site(s)",
                policy.width(),
                policy.min_sites
            );
        }
    }
    Ok(())
}

/// `1.5 TB`-style sizes (SI units, as disks are sold).
fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut unit = 0;
    let mut whole = bytes;
    let mut tenths = 0;
    while whole >= 1000 && unit + 1 < UNITS.len() {
        tenths = (whole % 1000) / 100;
        whole /= 1000;
        unit += 1;
    }
    if unit == 0 {
        format!("{whole} B")
    } else {
        format!("{whole}.{tenths} {}", UNITS[unit])
    }
}

/// Query-string bytes kept as is (RFC 3986 unreserved), as SigV4 encodes.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// The default signing region, as the AWS tools.
const DEFAULT_SIGNING_REGION: &str = "us-east-1";

/// GETs `path_and_query` under the residency API, signed when `credentials`
/// are given; the body on success, an error naming the server's code else.
async fn residency_get(
    endpoint_flag: &str,
    ca_cert: Option<&Path>,
    path_and_query: &str,
    credentials: Option<(&str, &str, Option<&str>, &str)>,
) -> anyhow::Result<Bytes> {
    let (endpoint, uri, https) = crate::admin_cli::parse_endpoint(endpoint_flag)?;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .context("--endpoint has no host")?;
    let tls =
        crate::admin_cli::client_tls(https, ca_cert, Path::new(crate::config::DEFAULT_DATA_DIR))?;
    let client = crate::admin_cli::http_client(tls);
    let url = format!(
        "{endpoint}{}{path_and_query}",
        crate::server::residency_api::PREFIX
    );
    let mut request = http::Request::get(&url)
        .header(http::header::HOST, &authority)
        .header("x-amz-date", crate::admin_cli::amz_date())
        .body(Bytes::new())?;
    if let Some((access_key_id, secret, token, region)) = credentials {
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("x-amz-security-token", http::HeaderValue::from_str(token)?);
        }
        nuage_sigv4::sign(&mut request, access_key_id, secret, region, "residency")
            .map_err(|e| anyhow::anyhow!("cannot sign the request: {e}"))?;
    }
    let (status, bytes) = crate::admin_cli::exchange(
        &client,
        request.map(Full::new),
        &endpoint,
        REQUEST_TIMEOUT,
        limits::ATTESTATION_BYTES_MAX,
    )
    .await?;
    if status.is_success() {
        return Ok(bytes);
    }
    let value: Option<Value> = serde_json::from_slice(&bytes).ok();
    let error = value.as_ref().map(|v| &v["error"]);
    let field = |name: &str| error.and_then(|e| e[name].as_str()).map(str::to_owned);
    let code = field("code").unwrap_or_else(|| "-".into());
    let message = field("message")
        .unwrap_or_else(|| format!("{status}, which does not look like a Nuage residency API"));
    bail!("{message} ({code}, HTTP {})", status.as_u16())
}

fn write_or_print(out: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn run_key(args: &KeyArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bytes = runtime.block_on(residency_get(
        &args.endpoint,
        args.ca_cert.as_deref(),
        "key",
        None,
    ))?;
    let key = std::str::from_utf8(&bytes)
        .context("the server's verifier key is not text")?
        .trim();
    // Checked here, so that what is saved is a key `verify` accepts.
    nuage_placement::attestation::check_verifier_key(key)
        .map_err(|e| anyhow::anyhow!("the server answered with no verifier key ({e})"))?;
    write_or_print(args.out.as_deref(), &format!("{key}\n"))
}

fn run_attest(args: &AttestArgs) -> anyhow::Result<()> {
    let access_key_id = flag_or_env(args.access_key_id.as_deref(), &["AWS_ACCESS_KEY_ID"])
        .context("no access key: pass --access-key-id or set AWS_ACCESS_KEY_ID")?;
    let secret = flag_or_env(
        args.secret_access_key.as_deref(),
        &["AWS_SECRET_ACCESS_KEY"],
    )
    .context("no secret key: set AWS_SECRET_ACCESS_KEY (or --secret-access-key)")?;
    let token = flag_or_env(args.session_token.as_deref(), &["AWS_SESSION_TOKEN"]);
    let region = flag_or_env(
        args.region.as_deref(),
        &["AWS_REGION", "AWS_DEFAULT_REGION"],
    )
    .unwrap_or_else(|| DEFAULT_SIGNING_REGION.to_owned());
    let mut query = format!(
        "attestation?bucket={}",
        utf8_percent_encode(&args.bucket, QUERY_VALUE)
    );
    if let Some(key) = &args.key {
        query.push_str("&key=");
        query.extend(utf8_percent_encode(key, QUERY_VALUE));
    }
    if let Some(version) = &args.version_id {
        query.push_str("&versionId=");
        query.extend(utf8_percent_encode(version, QUERY_VALUE));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bytes = runtime.block_on(residency_get(
        &args.endpoint,
        args.ca_cert.as_deref(),
        &query,
        Some((&access_key_id, &secret, token.as_deref(), &region)),
    ))?;
    let text = std::str::from_utf8(&bytes).context("the attestation is not text")?;
    write_or_print(args.out.as_deref(), text)?;
    if let Some(path) = &args.out {
        eprintln!(
            "Wrote the attestation to {}; check it with `nuage residency verify {} --key KEY` (KEY from `nuage residency key`).",
            path.display(),
            path.display()
        );
    }
    Ok(())
}
