//! `nuage audit ...`: a tenant's tools for its audit log (docs/audit-log.md).
//!
//! - `pull` fetches the log's verifier key (pinned in `DIR/vkey` on the first
//!   pull, compared on every later one), a fresh checkpoint, and the tiles and
//!   entry bundles it lacks, into `DIR`, then verifies the whole copy
//!   (`nuage_audit::verify_dir`) against the checkpoint it trusted last time.
//! - `verify` does the same verification offline.
//! - `search` prints the entries of a verified copy that match filters, as
//!   JSON lines.
//! - `export` writes a verified copy as JSON lines with an inclusion proof per
//!   entry.
//!
//! Every verification failure (a rollback, a fork, an edited, deleted or
//! reordered entry, a bad signature) is printed loudly and exits non-zero.
//! Requests are SigV4-signed (service `audit`) with the standard AWS
//! credentials variables or flags; the CLI never opens a server's data
//! directory.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use nuage_audit::verify::{CHECKPOINT_FILE, PRUNED_FILE};
use nuage_audit::{AuditError, Entry, VerifyReport, checkpoint, tiles::TilePath};
use nuage_base::limits::{AUDIT_CHECKPOINT_BYTES_MAX, AUDIT_TILE_BYTES_MAX};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::admin_cli::{Connector, DEFAULT_ENDPOINT};

/// Where the pinned verifier key is kept in a pull directory.
pub const VKEY_FILE: &str = "vkey";
const DEFAULT_REGION: &str = "us-east-1";
/// Longest one request may take (a full 16 MiB bundle on a slow link).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest verifier key accepted from a server or a file.
const VKEY_BYTES_MAX: usize = 1024;

#[derive(Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Fetches new checkpoints, tiles and entries into DIR and verifies them.
    Pull(PullArgs),
    /// Verifies a pulled directory offline.
    Verify(VerifyArgs),
    /// Prints the entries of a verified directory that match every filter, as JSON lines.
    Search(SearchArgs),
    /// Writes a verified directory as JSON lines, each entry with its inclusion proof.
    Export(ExportArgs),
}

#[derive(Args)]
struct PullArgs {
    /// URL of the Nuage server (its S3 endpoint).
    #[arg(long, default_value = DEFAULT_ENDPOINT)]
    endpoint: String,
    /// The local copy of the log.
    #[arg(long)]
    dir: PathBuf,
    /// Access key id (default: $AWS_ACCESS_KEY_ID).
    #[arg(long)]
    access_key_id: Option<String>,
    /// Secret access key (default: $AWS_SECRET_ACCESS_KEY; prefer the variable,
    /// command lines are visible to other users).
    #[arg(long)]
    secret_access_key: Option<String>,
    /// Session token of temporary credentials (default: $AWS_SESSION_TOKEN).
    #[arg(long)]
    session_token: Option<String>,
    /// Region of the signature (default: $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// A PEM certificate to trust for https:// besides the system's roots.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    #[command(flatten)]
    witnesses: WitnessPolicy,
}

/// Which witnesses' cosignatures a checkpoint needs (C2SP tlog-cosignature).
#[derive(Args)]
struct WitnessPolicy {
    /// A witness verifier key to accept cosignatures from (repeatable).
    #[arg(long = "witness", value_name = "VKEY")]
    witnesses: Vec<String>,
    /// Fail unless the checkpoint carries valid cosignatures of at least K of
    /// the --witness keys.
    #[arg(long, value_name = "K", default_value_t = 0)]
    require_witnesses: usize,
}

impl WitnessPolicy {
    /// Checks the cosignatures on `note`; a shortfall is a loud error.
    fn check(&self, note: &[u8]) -> anyhow::Result<()> {
        if self.require_witnesses > self.witnesses.len() {
            bail!(
                "--require-witnesses {} but only {} --witness keys given",
                self.require_witnesses,
                self.witnesses.len()
            );
        }
        let mut valid = Vec::new();
        let mut problems = Vec::new();
        for vkey in &self.witnesses {
            let key = nuage_audit::witness::WitnessKey::parse(vkey)?;
            match nuage_audit::witness::check_cosignature(note, &key)? {
                nuage_audit::witness::Cosignature::Valid { timestamp } => {
                    valid.push(format!("{} (at {timestamp})", key.name()));
                }
                nuage_audit::witness::Cosignature::Missing => {
                    problems.push(format!("{}: no cosignature", key.name()));
                }
                nuage_audit::witness::Cosignature::Invalid => {
                    problems.push(format!("{}: INVALID cosignature", key.name()));
                }
            }
        }
        if valid.len() < self.require_witnesses {
            bail!(
                "VERIFICATION FAILED: THE CHECKPOINT IS NOT WITNESSED: {} of the required {} \
                 cosignatures ({}{}{})",
                valid.len(),
                self.require_witnesses,
                valid.join(", "),
                if valid.is_empty() || problems.is_empty() {
                    ""
                } else {
                    "; "
                },
                problems.join(", ")
            );
        }
        if !self.witnesses.is_empty() {
            eprintln!(
                "nuage audit: checkpoint cosigned by {} of {} witnesses: {}",
                valid.len(),
                self.witnesses.len(),
                valid.join(", ")
            );
        }
        Ok(())
    }
}

#[derive(Args)]
struct VerifyArgs {
    /// The local copy of the log.
    dir: PathBuf,
    /// The verifier key to trust (a file holding it); default DIR/vkey, pinned by the first pull.
    #[arg(long)]
    vkey: Option<PathBuf>,
    #[command(flatten)]
    witnesses: WitnessPolicy,
}

#[derive(Args)]
struct SearchArgs {
    /// The local copy of the log (verified before searching).
    dir: PathBuf,
    /// Entries whose actor ARN/id or access key id contains this.
    #[arg(long)]
    actor: Option<String>,
    /// Entries of this action (`iam:CreateUser`); a final `*` matches a prefix (`iam:*`).
    #[arg(long)]
    action: Option<String>,
    /// Entries whose resource contains this.
    #[arg(long)]
    resource: Option<String>,
    /// Entries at or after this time (RFC 3339, `2026-11-29T12:00:00Z`).
    #[arg(long)]
    since: Option<String>,
    /// Entries before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// The verifier key to trust (a file); default DIR/vkey.
    #[arg(long)]
    vkey: Option<PathBuf>,
}

#[derive(Args)]
struct ExportArgs {
    /// The local copy of the log (verified before exporting).
    dir: PathBuf,
    /// The JSON lines file to write.
    #[arg(long)]
    out: PathBuf,
    /// The verifier key to trust (a file); default DIR/vkey.
    #[arg(long)]
    vkey: Option<PathBuf>,
}

pub fn run(args: AuditArgs) -> anyhow::Result<()> {
    match args.command {
        AuditCommand::Pull(pull_args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(pull(pull_args))
        }
        AuditCommand::Verify(verify_args) => {
            let vkey = read_vkey(&verify_args.dir, verify_args.vkey.as_deref())?;
            let report = verify(&verify_args.dir, &vkey)?;
            let note = read_bounded(
                &verify_args.dir.join(CHECKPOINT_FILE),
                AUDIT_CHECKPOINT_BYTES_MAX,
            )?;
            verify_args.witnesses.check(&note)?;
            println!("{}", describe(&report));
            Ok(())
        }
        AuditCommand::Search(search_args) => search(&search_args),
        AuditCommand::Export(export_args) => {
            let vkey = read_vkey(&export_args.dir, export_args.vkey.as_deref())?;
            let file = std::fs::File::create(&export_args.out)
                .with_context(|| format!("cannot create {}", export_args.out.display()))?;
            let mut out = std::io::BufWriter::new(file);
            let written = nuage_audit::export_json_lines(&export_args.dir, &vkey, &mut out)
                .map_err(|e| finding(&export_args.dir, &e))?;
            std::io::Write::flush(&mut out)?;
            println!(
                "exported {written} entries with inclusion proofs to {}",
                export_args.out.display()
            );
            Ok(())
        }
    }
}

/// The verifier key: `--vkey FILE`, else the one pinned in `DIR/vkey`.
fn read_vkey(dir: &Path, file: Option<&Path>) -> anyhow::Result<String> {
    let path = file.map_or_else(|| dir.join(VKEY_FILE), Path::to_path_buf);
    let text = read_bounded(&path, VKEY_BYTES_MAX).with_context(|| {
        format!(
            "cannot read the verifier key {} (pull once, or pass --vkey FILE)",
            path.display()
        )
    })?;
    let text = String::from_utf8(text).context("the verifier key is not text")?;
    Ok(text.trim().to_owned())
}

fn read_bounded(path: &Path, max: usize) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(bytes)
}

/// Verifies `dir`; a finding becomes a loud error.
fn verify(dir: &Path, vkey: &str) -> anyhow::Result<VerifyReport> {
    nuage_audit::verify_dir(dir, vkey, None).map_err(|e| finding(dir, &e))
}

/// The message of a failed verification: tampering is said as such.
fn finding(dir: &Path, error: &AuditError) -> anyhow::Error {
    let what = match error {
        AuditError::Rollback { .. } | AuditError::Fork { .. } => {
            "THE LOG WAS ROLLED BACK OR FORKED"
        }
        AuditError::EditedEntry { .. }
        | AuditError::DeletedEntry { .. }
        | AuditError::ReorderedEntry { .. }
        | AuditError::EntriesDoNotMatchCheckpoint
        | AuditError::TileDoesNotMatchCheckpoint { .. }
        | AuditError::MissingBundle { .. }
        | AuditError::MalformedBundle { .. }
        | AuditError::Pruning(_) => "THE LOG WAS TAMPERED WITH",
        AuditError::BadSignature(_) | AuditError::OriginMismatch { .. } => {
            "THE CHECKPOINT IS NOT SIGNED BY THIS LOG'S KEY"
        }
        _ => "the log could not be verified",
    };
    anyhow::anyhow!(
        "VERIFICATION FAILED: {what}: {error} (in {})",
        dir.display()
    )
}

fn describe(report: &VerifyReport) -> String {
    let mut text = format!(
        "verified {}: {} entries, root {}",
        report.origin, report.size, report.root
    );
    if let Some(trusted) = report.trusted_size {
        text.push_str(&format!(
            ", consistent with the checkpoint of size {trusted} verified before"
        ));
    }
    if report.minimum_index > 0 {
        text.push_str(&format!(
            "; entries below {} were pruned by the log (their hashes were checked)",
            report.minimum_index
        ));
    }
    text
}

// ---------------- search ----------------

struct Filters {
    actor: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    since: Option<time::OffsetDateTime>,
    until: Option<time::OffsetDateTime>,
}

fn parse_time(flag: &str, value: Option<&str>) -> anyhow::Result<Option<time::OffsetDateTime>> {
    value
        .map(|v| {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .with_context(|| {
                    format!("--{flag} {v:?} is not an RFC 3339 time (2026-11-29T12:00:00Z)")
                })
        })
        .transpose()
}

impl Filters {
    fn matches(&self, entry: &Entry) -> bool {
        let actor_ok = self.actor.as_deref().is_none_or(|want| {
            entry
                .actor
                .id
                .as_deref()
                .is_some_and(|id| id.contains(want))
                || entry
                    .actor
                    .access_key_id
                    .as_deref()
                    .is_some_and(|k| k.contains(want))
        });
        let action_ok = self
            .action
            .as_deref()
            .is_none_or(|want| match want.strip_suffix('*') {
                Some(prefix) => entry.action.starts_with(prefix),
                None => entry.action == want,
            });
        let resource_ok = self
            .resource
            .as_deref()
            .is_none_or(|want| entry.resource.as_deref().is_some_and(|r| r.contains(want)));
        let since_ok = self.since.is_none_or(|since| entry.time >= since);
        let until_ok = self.until.is_none_or(|until| entry.time < until);
        actor_ok && action_ok && resource_ok && since_ok && until_ok
    }
}

fn search(args: &SearchArgs) -> anyhow::Result<()> {
    let filters = Filters {
        actor: args.actor.clone(),
        action: args.action.clone(),
        resource: args.resource.clone(),
        since: parse_time("since", args.since.as_deref())?,
        until: parse_time("until", args.until.as_deref())?,
    };
    let vkey = read_vkey(&args.dir, args.vkey.as_deref())?;
    // Only verified entries are shown.
    let report = verify(&args.dir, &vkey)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    nuage_audit::for_each_entry(&args.dir, &report, |index, leaf| {
        let entry = Entry::from_leaf(leaf)?;
        if filters.matches(&entry) {
            // The entry's own bytes, as signed.
            let written = std::io::Write::write_all(&mut out, leaf)
                .and_then(|()| std::io::Write::write_all(&mut out, b"\n"));
            written.map_err(|e| AuditError::Encoding(format!("entry {index}: {e}")))?;
        }
        Ok(())
    })
    .map_err(|e| finding(&args.dir, &e))?;
    std::io::Write::flush(&mut out)?;
    Ok(())
}

// ---------------- pull ----------------

/// Signed requests to one server's audit API.
struct AuditClient {
    http: Client<Connector, Full<Bytes>>,
    endpoint: String,
    authority: String,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    region: String,
}

/// A flag, else the first environment variable set (and not empty).
pub(crate) fn flag_or_env(flag: Option<&str>, vars: &[&str]) -> Option<String> {
    flag.map(str::to_owned)
        .filter(|v| !v.is_empty())
        .or_else(|| {
            vars.iter()
                .find_map(|v| std::env::var(v).ok().filter(|v| !v.is_empty()))
        })
}

impl AuditClient {
    fn new(args: &PullArgs) -> anyhow::Result<Self> {
        let (endpoint, uri, https) = crate::admin_cli::parse_endpoint(&args.endpoint)?;
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .context("--endpoint has no host")?;
        let access_key_id = flag_or_env(args.access_key_id.as_deref(), &["AWS_ACCESS_KEY_ID"])
            .context("no access key: pass --access-key-id or set AWS_ACCESS_KEY_ID")?;
        let secret_access_key = flag_or_env(
            args.secret_access_key.as_deref(),
            &["AWS_SECRET_ACCESS_KEY"],
        )
        .context("no secret key: set AWS_SECRET_ACCESS_KEY (or --secret-access-key)")?;
        let session_token = flag_or_env(args.session_token.as_deref(), &["AWS_SESSION_TOKEN"]);
        let region = flag_or_env(
            args.region.as_deref(),
            &["AWS_REGION", "AWS_DEFAULT_REGION"],
        )
        .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        let tls = client_tls(https, args.ca_cert.as_deref())?;
        Ok(Self {
            http: crate::admin_cli::http_client(tls),
            endpoint,
            authority,
            access_key_id,
            secret_access_key,
            session_token,
            region,
        })
    }

    /// GETs `path` under the API prefix; `Ok(None)` for a 404 or 410 (absent
    /// or pruned), an error naming the server's code otherwise.
    async fn get(&self, path: &str, max: usize) -> anyhow::Result<Option<Bytes>> {
        let url = format!(
            "{}{}{path}",
            self.endpoint,
            crate::server::audit_api::PREFIX
        );
        let mut request = http::Request::get(&url)
            .header(http::header::HOST, &self.authority)
            .header("x-amz-date", crate::admin_cli::amz_date())
            .body(Bytes::new())?;
        if let Some(token) = &self.session_token {
            request
                .headers_mut()
                .insert("x-amz-security-token", http::HeaderValue::from_str(token)?);
        }
        nuage_sigv4::sign(
            &mut request,
            &self.access_key_id,
            &self.secret_access_key,
            &self.region,
            "audit",
        )
        .map_err(|e| anyhow::anyhow!("cannot sign the request: {e}"))?;
        let (status, body) = crate::admin_cli::exchange_with(
            &self.http,
            request.map(Full::new),
            &self.endpoint,
            (REQUEST_TIMEOUT, max),
            &format!("the response to {path}"),
            "",
        )
        .await?;
        if status.is_success() {
            return Ok(Some(body));
        }
        if status == http::StatusCode::NOT_FOUND || status == http::StatusCode::GONE {
            return Ok(None);
        }
        let value: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let code = value
            .as_ref()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "-".into());
        let message = value
            .as_ref()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{status}, which does not look like a Nuage audit API"));
        bail!("{path}: {message} ({code}, HTTP {})", status.as_u16())
    }
}

async fn pull(args: PullArgs) -> anyhow::Result<()> {
    let client = AuditClient::new(&args)?;
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let served = client
        .get("vkey", VKEY_BYTES_MAX)
        .await?
        .context("the server has no audit log verifier key")?;
    let served = String::from_utf8(served.to_vec())
        .context("the server's verifier key is not text")?
        .trim()
        .to_owned();
    let pinned_path = dir.join(VKEY_FILE);
    let vkey = if pinned_path.exists() {
        let pinned = read_vkey(dir, None)?;
        if pinned != served {
            bail!(
                "VERIFICATION FAILED: THE SERVER'S VERIFIER KEY CHANGED: {} pins {pinned}, the server now \
                 says {served}. Nothing was fetched. If the change is expected, verify the new key \
                 out of band and start a new directory.",
                pinned_path.display()
            );
        }
        pinned
    } else {
        // Trust on first use: say so, so the key can be checked out of band.
        write_file(&pinned_path, format!("{served}\n").as_bytes())?;
        eprintln!(
            "nuage audit: pinned the log's verifier key {served} in {} (compare it with the one your \
             provider publishes)",
            pinned_path.display()
        );
        served
    };
    let note = client
        .get(CHECKPOINT_FILE, AUDIT_CHECKPOINT_BYTES_MAX)
        .await?
        .context("the server has no checkpoint")?;
    // Checked before anything it names is fetched.
    let signed = checkpoint::open(&note, &vkey).map_err(|e| finding(dir, &e))?;
    args.witnesses.check(&note)?;
    let minimum_index = match client.get(PRUNED_FILE, AUDIT_CHECKPOINT_BYTES_MAX).await? {
        Some(marker) => {
            let marker = nuage_audit::prune::open(&marker, &vkey).map_err(|e| finding(dir, &e))?;
            write_file(&dir.join(PRUNED_FILE), &marker.note)?;
            marker.minimum_index
        }
        None => 0,
    };
    let mut fetched = 0u64;
    for tile in TilePath::all_for_size(signed.size) {
        let path = tile.to_path();
        let target = dir.join(&path);
        let (full, pruned) = match tile {
            TilePath::Entries { index, width } => (
                u64::from(width) == nuage_audit::tiles::TILE_WIDTH,
                index * nuage_audit::tiles::TILE_WIDTH + u64::from(width) <= minimum_index,
            ),
            TilePath::Hashes { width, .. } => {
                (u64::from(width) == nuage_audit::tiles::TILE_WIDTH, false)
            }
        };
        // A full tile never changes; partial ones are small and fetched again.
        if pruned || (full && target.exists()) {
            continue;
        }
        let bytes = client
            .get(&path, AUDIT_TILE_BYTES_MAX)
            .await?
            .with_context(|| {
                format!("the server does not serve {path}, which its checkpoint covers")
            })?;
        write_file(&target, &bytes)?;
        fetched += 1;
    }
    // The checkpoint last, so the directory never names tiles it lacks.
    write_file(&dir.join(CHECKPOINT_FILE), &note)?;
    let report = verify(dir, &vkey)?;
    println!("fetched {fetched} tiles; {}", describe(&report));
    Ok(())
}

/// Writes a file (creating its directory) through a temporary name and a
/// rename, so an interrupted pull never leaves half a tile.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, bytes)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))
}

/// TLS for https:// endpoints: the system's roots, plus `--ca-cert`.
fn client_tls(https: bool, ca_cert: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if https {
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca_cert {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open certificate {}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut std::io::BufReader::new(file)) {
                roots
                    .add(cert.with_context(|| format!("cannot parse {}", path.display()))?)
                    .with_context(|| format!("unusable certificate in {}", path.display()))?;
            }
        }
        if roots.is_empty() {
            bail!("no trusted certificates for https://: pass --ca-cert");
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nuage_audit::{Actor, ActorKind, Effect, RequestAudit, RequestFacts};

    fn entry(action: &str, at: &str) -> Entry {
        RequestAudit::new(
            "123456789012",
            Actor::signed(
                ActorKind::TenantUser,
                "arn:aws:iam::123456789012:user/alice",
                "AKIA1",
            ),
            action,
        )
        .on("arn:aws:iam::123456789012:user/bob")
        .decided(Effect::Allow, None, None)
        .into_entry(RequestFacts {
            time: time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            source: None,
            request_id: "r".into(),
            status: 200,
        })
    }

    #[test]
    fn filters_combine() -> anyhow::Result<()> {
        let e = entry("iam:CreateUser", "2026-11-29T12:00:00Z");
        let none = Filters {
            actor: None,
            action: None,
            resource: None,
            since: None,
            until: None,
        };
        assert!(none.matches(&e));
        let by = |actor: Option<&str>,
                  action: Option<&str>,
                  since: Option<&str>|
         -> anyhow::Result<bool> {
            Ok(Filters {
                actor: actor.map(str::to_owned),
                action: action.map(str::to_owned),
                resource: Some("user/bob".into()),
                since: parse_time("since", since)?,
                until: None,
            }
            .matches(&e))
        };
        assert!(by(
            Some("alice"),
            Some("iam:*"),
            Some("2026-11-29T11:00:00Z")
        )?);
        assert!(by(Some("AKIA1"), Some("iam:CreateUser"), None)?);
        assert!(!by(Some("carol"), None, None)?);
        assert!(!by(None, Some("iam:Create"), None)?);
        assert!(!by(None, None, Some("2026-11-29T12:00:01Z"))?);
        assert!(parse_time("since", Some("yesterday")).is_err());
        Ok(())
    }
}
