//! `nuage access ...`: operator access approvals from the command line
//! (docs/access-approval.md).
//!
//! Two kinds of caller use it. The operator (`request`, `list --tenant`,
//! `credentials`) authenticates with the admin API's bearer token, found as
//! `nuage admin` finds it. A tenant's approver (`list`, `show`, `approve`,
//! `deny`, `revoke`) signs with SigV4, with the standard AWS environment
//! variables. It talks HTTP(S) to a running server and opens no store.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use percent_encoding::utf8_percent_encode;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

use crate::admin_cli::{
    Connector, OperatorConnection, RESPONSE_BYTES_MAX, SEGMENT, TOKEN_ENV, text,
};
use crate::server::access_api::{OPERATOR_PREFIX, TENANT_PREFIX};

const DEFAULT_REGION: &str = "us-east-1";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args)]
pub struct AccessArgs {
    #[command(flatten)]
    connection: OperatorConnection,
    #[command(subcommand)]
    command: AccessCommand,
}

#[derive(Subcommand)]
enum AccessCommand {
    /// (operator) Asks a tenant for access; logged in the tenant's audit log.
    Request {
        /// The tenant (id or name).
        #[arg(long)]
        tenant: String,
        /// An ARN (arn:aws:s3:::bucket/prefix*, a KMS key ARN); repeatable.
        #[arg(long = "resource", required = true)]
        resources: Vec<String>,
        /// An action (s3:GetObject, kms:Decrypt); repeatable.
        #[arg(long = "action", required = true)]
        actions: Vec<String>,
        /// The key access justification (CUSTOMER_INITIATED_SUPPORT, OPERATOR_INITIATED_REVIEW, ...).
        #[arg(long)]
        justification: String,
        /// Free text: the ticket, what will be done.
        #[arg(long, default_value = "")]
        reason_text: String,
        /// How long the access lasts once approved: 30m, 2h, 3600 (seconds); at most 8h.
        #[arg(long)]
        duration: String,
        /// Who asks (a name for the tenant to see).
        #[arg(long)]
        requested_by: Option<String>,
    },
    /// Lists requests: a tenant's own (SigV4), or with --tenant the operator's view.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// (tenant) Shows one request.
    Show { id: String },
    /// (tenant) Approves a pending request.
    Approve { id: String },
    /// (tenant) Denies a pending request.
    Deny { id: String },
    /// (tenant) Ends an approval now; its sessions stop working at once.
    Revoke { id: String },
    /// (operator) The approved session's credentials, as shell exports.
    Credentials { id: String },
}

/// Runs one access command.
///
/// # Errors
/// The API's refusal (with its message), or a connection or credential problem.
pub fn run(args: AccessArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_command(args))
}

async fn run_command(args: AccessArgs) -> anyhow::Result<()> {
    let client = AccessClient::new(&args.connection)?;
    let json = args.connection.json;
    // Read only by operator commands: a tenant's approver needs no token.
    let token_source = (
        args.connection.token.clone(),
        args.connection.data_dir.clone(),
    );
    match args.command {
        AccessCommand::Request {
            tenant,
            resources,
            actions,
            justification,
            reason_text,
            duration,
            requested_by,
        } => {
            let body = json!({
                "tenant": tenant,
                "resources": resources,
                "actions": actions,
                "justification": justification,
                "reason_text": reason_text,
                "duration_seconds": parse_duration(&duration)?,
                "requested_by": requested_by,
            });
            let created = client
                .operator(Method::POST, "", "", Some(body), &token_source)
                .await?;
            print(json, &created, || {
                format!(
                    "{}\naccess request {} is PENDING until tenant {} answers (`nuage access approve|deny {}`)",
                    summary(&created),
                    text(&created["id"]),
                    text(&created["tenant"]),
                    text(&created["id"])
                )
            });
        }
        AccessCommand::List {
            tenant: Some(tenant),
        } => {
            let query = format!("?tenant={}", utf8_percent_encode(&tenant, SEGMENT));
            let list = client
                .operator(Method::GET, "", &query, None, &token_source)
                .await?;
            print(json, &list, || table(&list));
        }
        AccessCommand::List { tenant: None } => {
            let list = client.tenant(Method::GET, "").await?;
            print(json, &list, || table(&list));
        }
        AccessCommand::Show { id } => {
            let one = client
                .tenant(Method::GET, &format!("/{}", segment(&id)))
                .await?;
            print(json, &one, || summary(&one));
        }
        AccessCommand::Approve { id } => decide(&client, json, &id, "approve").await?,
        AccessCommand::Deny { id } => decide(&client, json, &id, "deny").await?,
        AccessCommand::Revoke { id } => decide(&client, json, &id, "revoke").await?,
        AccessCommand::Credentials { id } => {
            let creds = client
                .operator(
                    Method::POST,
                    &format!("/{}/credentials", segment(&id)),
                    "",
                    None,
                    &token_source,
                )
                .await?;
            print(json, &creds, || {
                format!(
                    "export AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\nexport AWS_SESSION_TOKEN={}\n# approval {} of tenant {}; ends at unix ns {}; every use is in the tenant's audit log",
                    text(&creds["access_key_id"]),
                    text(&creds["secret_access_key"]),
                    text(&creds["session_token"]),
                    text(&creds["approval_id"]),
                    text(&creds["tenant"]),
                    text(&creds["expires_unix_ns"]),
                )
            });
        }
    }
    Ok(())
}

async fn decide(client: &AccessClient, json: bool, id: &str, verb: &str) -> anyhow::Result<()> {
    let decided = client
        .tenant(Method::POST, &format!("/{}/{verb}", segment(id)))
        .await?;
    print(json, &decided, || summary(&decided));
    Ok(())
}

fn segment(id: &str) -> String {
    utf8_percent_encode(id, SEGMENT).to_string()
}

/// `90` (seconds), `30s`, `45m`, `2h`.
fn parse_duration(text: &str) -> anyhow::Result<u32> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((at, 's')) => (&text[..at], 1),
        Some((at, 'm')) => (&text[..at], 60),
        Some((at, 'h')) => (&text[..at], 3600),
        _ => (text, 1),
    };
    let n: u32 = number
        .parse()
        .with_context(|| format!("--duration {text:?}: use 30m, 2h or a number of seconds"))?;
    n.checked_mul(unit)
        .with_context(|| format!("--duration {text:?} is too long"))
}

fn print(json: bool, value: &Value, human: impl FnOnce() -> String) {
    if json {
        println!("{value:#}");
    } else {
        println!("{}", human());
    }
}

fn joined(value: &Value) -> String {
    value
        .as_array()
        .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "-".into())
}

fn summary(r: &Value) -> String {
    [
        ("id", text(&r["id"])),
        ("tenant", text(&r["tenant"])),
        ("state", text(&r["state"])),
        ("resources", joined(&r["resources"])),
        ("actions", joined(&r["actions"])),
        ("justification", text(&r["justification"])),
        ("reason", text(&r["reason_text"])),
        ("duration (s)", text(&r["duration_seconds"])),
        ("requested by", text(&r["requested_by"])),
        ("decided by", text(&r["decided_by"])),
        ("revoked by", text(&r["revoked_by"])),
    ]
    .iter()
    .map(|(k, v)| format!("{k:<14} {v}"))
    .collect::<Vec<_>>()
    .join("\n")
}

fn table(list: &Value) -> String {
    let mut out = format!(
        "{:<30} {:<9} {:<28} {}",
        "ID", "STATE", "JUSTIFICATION", "RESOURCES"
    );
    for r in list["access_requests"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n{:<30} {:<9} {:<28} {}",
            text(&r["id"]),
            text(&r["state"]),
            text(&r["justification"]),
            joined(&r["resources"])
        ));
    }
    out
}

struct AccessClient {
    http: Client<Connector, Full<Bytes>>,
    endpoint: String,
    authority: String,
}

impl AccessClient {
    fn new(args: &OperatorConnection) -> anyhow::Result<Self> {
        let (endpoint, uri, https) = crate::admin_cli::parse_endpoint(&args.endpoint)?;
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .context("--endpoint has no host")?;
        let tls = crate::admin_cli::client_tls(https, args.ca_cert.as_deref(), &args.data_dir)?;
        Ok(Self {
            http: crate::admin_cli::http_client(tls),
            endpoint,
            authority,
        })
    }

    /// An operator call, with the bearer token.
    async fn operator(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<Value>,
        source: &(Option<String>, PathBuf),
    ) -> anyhow::Result<Value> {
        let token = crate::admin_cli::operator_token(source.0.as_deref(), &source.1)?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{OPERATOR_PREFIX}{path}{query}", self.endpoint))
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(v) => {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        self.send(request.body(body)?).await
    }

    /// A tenant call, signed with the AWS environment's credentials.
    async fn tenant(&self, method: Method, path: &str) -> anyhow::Result<Value> {
        let env = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        };
        let access_key_id =
            env(&["AWS_ACCESS_KEY_ID"]).context("no tenant credentials: set AWS_ACCESS_KEY_ID")?;
        let secret = env(&["AWS_SECRET_ACCESS_KEY"])
            .context("no tenant credentials: set AWS_SECRET_ACCESS_KEY")?;
        let region =
            env(&["AWS_REGION", "AWS_DEFAULT_REGION"]).unwrap_or_else(|| DEFAULT_REGION.into());
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{TENANT_PREFIX}{path}", self.endpoint))
            .header(http::header::HOST, &self.authority)
            .header("x-amz-date", crate::admin_cli::amz_date())
            .body(Bytes::new())?;
        if let Some(token) = env(&["AWS_SESSION_TOKEN"]) {
            request
                .headers_mut()
                .insert("x-amz-security-token", http::HeaderValue::from_str(&token)?);
        }
        nuage_sigv4::sign(&mut request, &access_key_id, &secret, &region, "access")
            .map_err(|e| anyhow::anyhow!("cannot sign the request: {e}"))?;
        self.send(request).await
    }

    async fn send(&self, request: http::Request<Bytes>) -> anyhow::Result<Value> {
        let (status, body) = crate::admin_cli::exchange_with(
            &self.http,
            request.map(Full::new),
            &self.endpoint,
            (REQUEST_TIMEOUT, RESPONSE_BYTES_MAX),
            "the response",
            "",
        )
        .await?;
        let value: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return value.context("the server answered with a body that is not JSON");
        }
        let field = |name: &str| {
            value
                .as_ref()
                .and_then(|v| v["error"][name].as_str().map(str::to_owned))
        };
        let code = field("code").unwrap_or_else(|| "-".into());
        let message = field("message").unwrap_or_else(|| format!("{status}"));
        if status == StatusCode::UNAUTHORIZED {
            bail!(
                "the server refused the operator token ({code}): {message}; the token comes from --token, else ${TOKEN_ENV}, else --data-dir"
            );
        }
        bail!("{message} ({code}, HTTP {})", status.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("2h").ok(), Some(7200));
        assert_eq!(parse_duration("30m").ok(), Some(1800));
        assert_eq!(parse_duration("45s").ok(), Some(45));
        assert_eq!(parse_duration("90").ok(), Some(90));
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("-1h").is_err());
    }
}
