//! `nuage admin ...`: the operator's command line, a client of the admin API
//! (`/_nuage/admin/v1/`, see `nuage-admin-api` and docs/admin.md).
//!
//! It talks HTTP(S) to a running server and never opens a data directory's
//! stores, so it works the same against this machine or a remote one. The
//! only files it reads are the operator credential (for the token, when
//! neither `--token` nor `NUAGE_OPERATOR_TOKEN` gives one) and a certificate
//! to trust for HTTPS.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9000";
pub(crate) const TOKEN_ENV: &str = "NUAGE_OPERATOR_TOKEN";
/// Largest response the CLI reads: a list of thousands of tenants fits.
pub(crate) const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one request may take. Purging a large tenant is the slow call; the
/// server finishes a purge even if the CLI gives up waiting.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);
/// Bytes a path segment keeps as is; everything else is percent-encoded.
pub(crate) const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

/// How an operator CLI reaches the server: the global flags shared by
/// `nuage admin` and `nuage access`.
#[derive(Args)]
pub(crate) struct OperatorConnection {
    /// URL of the Nuage server (http:// or https://).
    #[arg(long, global = true, default_value = DEFAULT_ENDPOINT)]
    pub(crate) endpoint: String,
    /// Operator token. Other local users can see command lines: prefer the
    /// NUAGE_OPERATOR_TOKEN variable, or --data-dir.
    #[arg(long, global = true)]
    pub(crate) token: Option<String>,
    /// The server's data directory: the token is read from its
    /// operator-credentials.toml when neither --token nor NUAGE_OPERATOR_TOKEN
    /// is given, and its self-signed certificate is trusted for https://.
    #[arg(long, global = true, default_value = crate::config::DEFAULT_DATA_DIR)]
    pub(crate) data_dir: PathBuf,
    /// A PEM certificate to trust for https:// in addition to the system's
    /// roots (for a self-signed server certificate elsewhere).
    #[arg(long, global = true)]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Print the API's JSON responses instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub struct AdminArgs {
    #[command(flatten)]
    connection: OperatorConnection,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Tenants: the organisations that own buckets, users and keys.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// A tenant's users.
    #[command(subcommand)]
    User(UserCommand),
    /// A user's access keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Creates a tenant.
    Create {
        name: String,
        /// ISO 3166-1 alpha-2 country of the tenant's legal entity (FR, DE, ...).
        #[arg(long)]
        country: String,
        #[arg(long, default_value = "")]
        billing_contact: String,
    },
    /// Lists every tenant.
    List,
    /// Shows a tenant (by id or name).
    Show { tenant: String },
    /// Refuses every credential of the tenant until it is resumed.
    Suspend { tenant: String },
    /// Lets a suspended tenant's credentials work again.
    Resume { tenant: String },
    /// Sets the tenant-wide Block Public Access, on top of each bucket's own
    /// settings. Both settings are set: a flag left out turns its setting off.
    PublicAccessBlock {
        tenant: String,
        /// Refuse bucket policies that grant access to everyone (AccessDenied).
        #[arg(long)]
        block_public_policy: bool,
        /// Make public bucket policies grant nothing to anonymous callers and
        /// other tenants.
        #[arg(long)]
        restrict_public_buckets: bool,
    },
    /// Deletes a tenant and its identities; refused while it owns buckets.
    Delete {
        tenant: String,
        /// First delete ALL the tenant's data: every object version, upload
        /// and bucket. Cannot be undone.
        #[arg(long)]
        purge: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Creates a user.
    Create {
        #[arg(long)]
        tenant: String,
        name: String,
        /// Give the user the AdministratorAccess policy (everything within the tenant).
        #[arg(long)]
        administrator: bool,
    },
    /// Lists a tenant's users.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Shows a user.
    Show {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// Deletes a user with its access keys and policies.
    Delete {
        #[arg(long)]
        tenant: String,
        name: String,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Creates an access key; its secret is printed this once.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: String,
    },
    /// Lists a user's access keys (without secrets).
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: String,
    },
    /// Lets a deactivated key sign requests again.
    Activate {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: String,
        key_id: String,
    },
    /// Stops a key from signing requests, without deleting it.
    Deactivate {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: String,
        key_id: String,
    },
    /// Deletes a key.
    Delete {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: String,
        key_id: String,
    },
}

/// Runs one admin command to completion.
///
/// # Errors
/// The API's refusal (with its message), or a connection, TLS or token problem.
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_command(args))
}

async fn run_command(args: AdminArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(&args.connection)?;
    let out = Output {
        json: args.connection.json,
    };
    match args.command {
        AdminCommand::Tenant(command) => tenant(&api, &out, command).await,
        AdminCommand::User(command) => user(&api, &out, command).await,
        AdminCommand::Key(command) => key(&api, &out, command).await,
    }
}

async fn tenant(api: &ApiClient, out: &Output, command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Create {
            name,
            country,
            billing_contact,
        } => {
            let body = json!({
                "name": name,
                "legal_country": country.to_ascii_uppercase(),
                "billing_contact": billing_contact,
            });
            let tenant = api.call(Method::POST, &["tenants"], Some(body)).await?;
            out.print(&tenant, || {
                format!(
                    "created tenant {} with id {}\n{}",
                    text(&tenant["name"]),
                    text(&tenant["id"]),
                    tenant_details(&tenant)
                )
            });
        }
        TenantCommand::List => {
            let list = api.call(Method::GET, &["tenants"], None).await?;
            out.print(&list, || {
                table(
                    &["ID", "NAME", "COUNTRY", "STATUS", "BUCKETS", "CREATED"],
                    items(&list, "tenants").map(|t| {
                        [
                            "id",
                            "name",
                            "legal_country",
                            "status",
                            "bucket_count",
                            "created_at",
                        ]
                        .map(|k| text(&t[k]))
                        .to_vec()
                    }),
                )
            });
        }
        TenantCommand::Show { tenant } => {
            let tenant = api.call(Method::GET, &["tenants", &tenant], None).await?;
            out.print(&tenant, || tenant_details(&tenant));
        }
        TenantCommand::Suspend { tenant } => {
            set_tenant_status(api, out, &tenant, "suspend").await?
        }
        TenantCommand::Resume { tenant } => set_tenant_status(api, out, &tenant, "resume").await?,
        TenantCommand::PublicAccessBlock {
            tenant,
            block_public_policy,
            restrict_public_buckets,
        } => {
            let body = json!({
                "block_public_policy": block_public_policy,
                "restrict_public_buckets": restrict_public_buckets,
            });
            let block = api
                .call(
                    Method::PUT,
                    &["tenants", &tenant, "public-access-block"],
                    Some(body),
                )
                .await?;
            out.print(&block, || {
                format!(
                    "Block Public Access of tenant {tenant} is now:\n{}",
                    public_access_block_details(&block)
                )
            });
        }
        TenantCommand::Delete { tenant, purge } => {
            let query = if purge { "?purge=true" } else { "" };
            let deleted = api
                .call_with_query(Method::DELETE, &["tenants", &tenant], query, None)
                .await?;
            out.print(&deleted, || {
                let t = &deleted["tenant"];
                let mut line = format!("deleted tenant {} ({})", text(&t["name"]), text(&t["id"]));
                let p = &deleted["purged"];
                if !p.is_null() {
                    line.push_str(&format!(
                        "\npurged {} bucket(s), {} object version(s) and delete marker(s), {} upload(s)",
                        text(&p["buckets"]),
                        text(&p["object_versions"]),
                        text(&p["uploads"])
                    ));
                }
                let s = &deleted["shredded"];
                if !s.is_null() {
                    let tenant_key = if s["tenant_key"].as_bool() == Some(true) {
                        "the tenant key"
                    } else {
                        "no tenant key (it had stored no data)"
                    };
                    line.push_str(&format!(
                        "
crypto-shredded {tenant_key}, {} KMS key(s) with {} material version(s), \
                         {} external key store(s): no copy of its data can be decrypted",
                        text(&s["kms_keys"]),
                        text(&s["kms_material_versions"]),
                        text(&s["external_key_stores"])
                    ));
                }
                line
            });
        }
    }
    Ok(())
}

async fn set_tenant_status(
    api: &ApiClient,
    out: &Output,
    tenant: &str,
    action: &str,
) -> anyhow::Result<()> {
    let tenant = api
        .call(Method::POST, &["tenants", tenant, action], None)
        .await?;
    out.print(&tenant, || {
        format!(
            "tenant {} ({}) is now {}",
            text(&tenant["name"]),
            text(&tenant["id"]),
            text(&tenant["status"])
        )
    });
    Ok(())
}

async fn user(api: &ApiClient, out: &Output, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create {
            tenant,
            name,
            administrator,
        } => {
            let body = json!({ "name": name, "administrator": administrator });
            let user = api
                .call(Method::POST, &["tenants", &tenant, "users"], Some(body))
                .await?;
            out.print(&user, || {
                format!(
                    "created user {}\n{}",
                    text(&user["name"]),
                    user_details(&user)
                )
            });
        }
        UserCommand::List { tenant } => {
            let list = api
                .call(Method::GET, &["tenants", &tenant, "users"], None)
                .await?;
            out.print(&list, || {
                table(
                    &["NAME", "ID", "POLICIES", "GROUPS", "CREATED"],
                    items(&list, "users").map(|u| {
                        vec![
                            text(&u["name"]),
                            text(&u["id"]),
                            policies(u),
                            joined(&u["groups"]),
                            text(&u["created_at"]),
                        ]
                    }),
                )
            });
        }
        UserCommand::Show { tenant, name } => {
            let user = api
                .call(Method::GET, &["tenants", &tenant, "users", &name], None)
                .await?;
            out.print(&user, || user_details(&user));
        }
        UserCommand::Delete { tenant, name } => {
            let done = api
                .call(Method::DELETE, &["tenants", &tenant, "users", &name], None)
                .await?;
            out.print(&done, || format!("deleted user {name} of tenant {tenant}"));
        }
    }
    Ok(())
}

async fn key(api: &ApiClient, out: &Output, command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create { tenant, user } => {
            let key = api
                .call(
                    Method::POST,
                    &["tenants", &tenant, "users", &user, "keys"],
                    None,
                )
                .await?;
            out.print(&key, || {
                format!(
                    "created an access key for {user} of tenant {tenant}\n\
                     access key id:      {}\n\
                     secret access key:  {}\n\
                     The secret is shown this once only: store it now.",
                    text(&key["access_key_id"]),
                    text(&key["secret_access_key"])
                )
            });
        }
        KeyCommand::List { tenant, user } => {
            let list = api
                .call(
                    Method::GET,
                    &["tenants", &tenant, "users", &user, "keys"],
                    None,
                )
                .await?;
            out.print(&list, || {
                table(
                    &["ACCESS KEY ID", "STATUS", "CREATED", "LAST USED"],
                    items(&list, "access_keys").map(|k| {
                        ["access_key_id", "status", "created_at", "last_used_at"]
                            .map(|f| text(&k[f]))
                            .to_vec()
                    }),
                )
            });
        }
        KeyCommand::Activate {
            tenant,
            user,
            key_id,
        } => set_key_status(api, out, [&tenant, &user, &key_id], "Active").await?,
        KeyCommand::Deactivate {
            tenant,
            user,
            key_id,
        } => set_key_status(api, out, [&tenant, &user, &key_id], "Inactive").await?,
        KeyCommand::Delete {
            tenant,
            user,
            key_id,
        } => {
            let done = api
                .call(
                    Method::DELETE,
                    &["tenants", &tenant, "users", &user, "keys", &key_id],
                    None,
                )
                .await?;
            out.print(&done, || format!("deleted access key {key_id}"));
        }
    }
    Ok(())
}

async fn set_key_status(
    api: &ApiClient,
    out: &Output,
    [tenant, user, key_id]: [&str; 3],
    status: &str,
) -> anyhow::Result<()> {
    let key = api
        .call(
            Method::PATCH,
            &["tenants", tenant, "users", user, "keys", key_id],
            Some(json!({ "status": status })),
        )
        .await?;
    out.print(&key, || {
        format!(
            "access key {} is now {}",
            text(&key["access_key_id"]),
            text(&key["status"])
        )
    });
    Ok(())
}

// ---------------- output ----------------

struct Output {
    json: bool,
}

impl Output {
    /// Prints the raw JSON with `--json` (nothing for an empty 204), else the
    /// human form.
    fn print(&self, value: &Value, human: impl FnOnce() -> String) {
        if self.json {
            if !value.is_null() {
                println!(
                    "{}",
                    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
                );
            }
        } else {
            println!("{}", human());
        }
    }
}

/// A JSON value as table text: strings bare, null as `-`.
pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn joined(value: &Value) -> String {
    let parts: Vec<String> = value.as_array().into_iter().flatten().map(text).collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

fn policies(user: &Value) -> String {
    let mut all: Vec<String> = Vec::new();
    for field in ["inline_policies", "attached_policies"] {
        all.extend(user[field].as_array().into_iter().flatten().map(text));
    }
    if all.is_empty() {
        "-".into()
    } else {
        all.join(",")
    }
}

fn items<'v>(list: &'v Value, field: &str) -> impl Iterator<Item = &'v Value> {
    list[field].as_array().into_iter().flatten()
}

fn details(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn tenant_details(t: &Value) -> String {
    details(&[
        ("id:", text(&t["id"])),
        ("name:", text(&t["name"])),
        ("legal country:", text(&t["legal_country"])),
        ("billing contact:", text(&t["billing_contact"])),
        ("status:", text(&t["status"])),
        ("buckets:", text(&t["bucket_count"])),
        ("created:", text(&t["created_at"])),
        (
            "block public policy:",
            on_off(&t["public_access_block"]["block_public_policy"]),
        ),
        (
            "restrict public buckets:",
            on_off(&t["public_access_block"]["restrict_public_buckets"]),
        ),
    ])
}

fn public_access_block_details(b: &Value) -> String {
    details(&[
        ("block public policy:", on_off(&b["block_public_policy"])),
        (
            "restrict public buckets:",
            on_off(&b["restrict_public_buckets"]),
        ),
    ])
}

/// A boolean setting as `on`/`off` (`-` when absent, as from an older server).
fn on_off(value: &Value) -> String {
    match value {
        Value::Bool(true) => "on".into(),
        Value::Bool(false) => "off".into(),
        other => text(other),
    }
}

fn user_details(u: &Value) -> String {
    details(&[
        ("name:", text(&u["name"])),
        ("id:", text(&u["id"])),
        ("arn:", text(&u["arn"])),
        ("policies:", policies(u)),
        ("groups:", joined(&u["groups"])),
        ("created:", text(&u["created_at"])),
    ])
}

pub(crate) fn table(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(headers.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

// ---------------- HTTP ----------------

pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

pub(crate) struct ApiClient {
    http: Client<Connector, Full<Bytes>>,
    /// `scheme://authority/_nuage/admin/v1`.
    base: String,
    endpoint: String,
    token: String,
}

impl ApiClient {
    pub(crate) fn new(args: &OperatorConnection) -> anyhow::Result<Self> {
        let (endpoint, uri, https) = crate::admin_cli::parse_endpoint(&args.endpoint)?;
        if !uri.path().trim_end_matches('/').is_empty() {
            bail!("--endpoint is the server's root URL, without a path (got `{endpoint}`)");
        }
        let token = operator_token(args.token.as_deref(), &args.data_dir)?;
        let tls = client_tls(https, args.ca_cert.as_deref(), &args.data_dir)?;
        Ok(Self {
            http: http_client(tls),
            base: format!(
                "{endpoint}{}",
                nuage_admin_api::API_V1_PREFIX.trim_end_matches('/')
            ),
            endpoint,
            token,
        })
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.call_with_query(method, segments, "", body).await
    }

    /// One request. Returns the JSON body of a 2xx (`Null` for 204), or the
    /// API's error message as the error.
    async fn call_with_query(
        &self,
        method: Method,
        segments: &[&str],
        query: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut url = self.base.clone();
        for segment in segments {
            url.push('/');
            url.extend(utf8_percent_encode(segment, SEGMENT));
        }
        url.push_str(query);
        let mut request = http::Request::builder()
            .method(method)
            .uri(&url)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::ACCEPT, "application/json");
        let body = match body {
            Some(value) => {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(value.to_string())
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(body))?;
        let (status, bytes) = exchange(
            &self.http,
            request,
            &self.endpoint,
            REQUEST_TIMEOUT,
            RESPONSE_BYTES_MAX,
        )
        .await?;
        interpret(status, &bytes, &self.endpoint)
    }
}

/// `--endpoint` without trailing slashes, parsed, and whether it is https://.
pub(crate) fn parse_endpoint(endpoint: &str) -> anyhow::Result<(String, http::Uri, bool)> {
    let endpoint = endpoint.trim_end_matches('/').to_owned();
    let uri: http::Uri = endpoint
        .parse()
        .with_context(|| format!("--endpoint `{endpoint}` is not a URL"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => bail!("--endpoint must start with http:// or https:// (got `{endpoint}`)"),
    };
    Ok((endpoint, uri, https))
}

/// An HTTP/1 client for an operator API over http:// or https:// (`tls`),
/// shared by the operator CLIs.
pub(crate) fn http_client(tls: rustls::ClientConfig) -> Client<Connector, Full<Bytes>> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Sends one request and reads its answer (at most `bytes_max` bytes)
/// within `timeout`; an error names `endpoint` and the bottom cause.
pub(crate) async fn exchange(
    http: &Client<Connector, Full<Bytes>>,
    request: http::Request<Full<Bytes>>,
    endpoint: &str,
    timeout: Duration,
    bytes_max: usize,
) -> anyhow::Result<(StatusCode, Bytes)> {
    exchange_with(
        http,
        request,
        endpoint,
        (timeout, bytes_max),
        "the response",
        " (is `nuage serve` running there? see --endpoint)",
    )
    .await
}

/// [`exchange`] with the wording of its errors: a body that cannot be read
/// is "cannot read {`what`}: ...", an unreachable server ends with `hint`.
/// `limits` is the timeout and the most bytes read.
pub(crate) async fn exchange_with(
    http: &Client<Connector, Full<Bytes>>,
    request: http::Request<Full<Bytes>>,
    endpoint: &str,
    (timeout, bytes_max): (Duration, usize),
    what: &str,
    hint: &str,
) -> anyhow::Result<(StatusCode, Bytes)> {
    tokio::time::timeout(timeout, async {
        let response = http.request(request).await?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), bytes_max)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read {what}: {e}"))?
            .to_bytes();
        anyhow::Ok((status, bytes))
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer from {endpoint} within {timeout:?}"))?
    .map_err(|e| connection_error(&e, endpoint, hint))
}

fn connection_error(e: &anyhow::Error, endpoint: &str, hint: &str) -> anyhow::Error {
    // The interesting cause (connection refused, certificate unknown) is at
    // the bottom of hyper's error chain.
    let causes: Vec<String> = e.chain().map(ToString::to_string).collect();
    anyhow::anyhow!(
        "cannot reach the Nuage server at {endpoint}: {}{hint}",
        causes.join(": ")
    )
}

/// The `x-amz-date` of a SigV4 request signed now.
pub(crate) fn amz_date() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

fn interpret(status: StatusCode, body: &[u8], endpoint: &str) -> anyhow::Result<Value> {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    if status.is_success() {
        return match value {
            Some(v) => Ok(v),
            None if body.is_empty() => Ok(Value::Null),
            None => {
                bail!("the server at {endpoint} answered {status} with a body that is not JSON")
            }
        };
    }
    let (code, message) = value
        .as_ref()
        .map(|v| (text(&v["error"]["code"]), text(&v["error"]["message"])))
        .filter(|(_, m)| m != "-")
        .unwrap_or_else(|| {
            (
                "-".into(),
                format!("{status} from {endpoint}, which does not look like a Nuage admin API"),
            )
        });
    if status == StatusCode::UNAUTHORIZED {
        bail!(
            "the server refused the operator token (HTTP 401 {code}): {message}\n\
             The token comes from --token, else ${TOKEN_ENV}, else DATA_DIR/{} (--data-dir).",
            crate::credentials::OPERATOR_FILE_NAME
        );
    }
    bail!("{message} ({code}, HTTP {})", status.as_u16())
}

/// `--token`, else `$NUAGE_OPERATOR_TOKEN`, else the data directory's file
/// (shared by `nuage admin` and `nuage access`).
pub(crate) fn operator_token(token: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        return Ok(token.to_owned());
    }
    if let Ok(token) = std::env::var(TOKEN_ENV)
        && !token.is_empty()
    {
        return Ok(token);
    }
    let path = data_dir.join(crate::credentials::OPERATOR_FILE_NAME);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no operator token: pass --token, set {TOKEN_ENV}, or point --data-dir at the server's \
             data directory (cannot read {})",
            path.display()
        )
    })?;
    let creds: crate::credentials::OperatorCredentials =
        toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
    Ok(creds.token)
}

/// TLS for https:// endpoints: the system's roots, plus `--ca-cert`, or else
/// the data directory's self-signed certificate when there is one.
pub(crate) fn client_tls(
    https: bool,
    ca_cert: Option<&Path>,
    data_dir: &Path,
) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if https {
        // Unreadable system certificates are not fatal: an explicit
        // certificate may be all this connection needs.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        let extra = match ca_cert {
            Some(path) => Some(path.to_owned()),
            None => Some(
                data_dir
                    .join(crate::tls::SELF_SIGNED_DIR)
                    .join(crate::tls::SELF_SIGNED_CERT_FILE),
            )
            .filter(|p| p.exists()),
        };
        if let Some(path) = extra {
            let file = std::fs::File::open(&path)
                .with_context(|| format!("cannot open certificate {}", path.display()))?;
            let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("cannot parse certificate {}", path.display()))?;
            if certs.is_empty() {
                bail!("no certificate in {}", path.display());
            }
            for cert in certs {
                roots
                    .add(cert)
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

    #[test]
    fn tables_align_columns() {
        let out = table(
            &["A", "LONGER"],
            vec![vec!["wide cell".into(), "x".into()]].into_iter(),
        );
        assert_eq!(out, "A          LONGER\nwide cell  x");
    }

    #[test]
    fn api_errors_become_their_message() {
        let body = br#"{"error":{"code":"NoSuchEntity","message":"tenant `x` does not exist"}}"#;
        let e = interpret(StatusCode::NOT_FOUND, body, "http://h").unwrap_err();
        assert_eq!(
            e.to_string(),
            "tenant `x` does not exist (NoSuchEntity, HTTP 404)"
        );
        let e = interpret(StatusCode::UNAUTHORIZED, body, "http://h").unwrap_err();
        assert!(e.to_string().contains("refused the operator token"), "{e}");
        let e = interpret(StatusCode::BAD_GATEWAY, b"<html>", "http://h").unwrap_err();
        assert!(e.to_string().contains("502"), "{e}");
    }

    #[test]
    fn path_segments_are_encoded() {
        let encoded: String = utf8_percent_encode("a@b/c d", SEGMENT).collect();
        assert_eq!(encoded, "a%40b%2Fc%20d");
    }
}
