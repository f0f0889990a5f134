//! `nuage witness ...`: an independent witness of transparency logs (C2SP
//! tlog-witness), for whoever a tenant trusts to run one (docs/audit-log.md,
//! "Witnesses").
//!
//! - `init --dir DIR --name NAME` makes the witness's Ed25519 key
//!   (`DIR/witness.key`, mode 0600) and `DIR/witness.toml`, and prints the
//!   witness's verifier key (`vkey`), what tenants and servers configure.
//! - `add-log --dir DIR --origin O --vkey V` adds a log to watch.
//! - `serve --dir DIR --listen ADDR` answers `POST /add-checkpoint`; prints
//!   `nuage witness: listening on http://ADDR` once ready.
//!
//! The checks, the durable state and the cosignature format live in
//! `nuage_audit::witness`; this file reads files and speaks HTTP/1.1, mapping
//! each refusal to its C2SP status code.

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use nuage_audit::witness::{ADD_CHECKPOINT_PATH, SIZE_CONTENT_TYPE, Witness, WitnessError};
use nuage_base::limits::{WITNESS_CONNECTIONS_MAX, WITNESS_REQUEST_BYTES_MAX};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The configuration file in a witness directory.
pub const CONFIG_FILE: &str = "witness.toml";
/// The private key file in a witness directory (base64 Ed25519 seed).
pub const KEY_FILE: &str = "witness.key";
/// What `serve` prints once it accepts connections, before the URL.
pub const LISTENING_BANNER: &str = "nuage witness: listening on ";

#[derive(Args)]
pub struct WitnessArgs {
    #[command(subcommand)]
    command: WitnessCommand,
}

#[derive(Subcommand)]
enum WitnessCommand {
    /// Creates the witness's key and configuration in DIR; prints its verifier key.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// The witness's name (a schema-less URL, such as `witness.example/w1`).
        #[arg(long)]
        name: String,
    },
    /// Adds a log to watch: its origin and its verifier key.
    AddLog {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        origin: String,
        #[arg(long)]
        vkey: String,
    },
    /// Serves `POST /add-checkpoint` (C2SP tlog-witness).
    Serve {
        #[arg(long)]
        dir: PathBuf,
        /// IP:PORT to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:7380")]
        listen: String,
    },
}

/// `witness.toml`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WitnessConfig {
    name: String,
    #[serde(default)]
    logs: Vec<LogConfig>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogConfig {
    origin: String,
    vkey: String,
}

pub fn run(args: WitnessArgs) -> anyhow::Result<()> {
    match args.command {
        WitnessCommand::Init { dir, name } => init(&dir, &name),
        WitnessCommand::AddLog { dir, origin, vkey } => add_log(&dir, origin, vkey),
        WitnessCommand::Serve { dir, listen } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(&dir, &listen)),
    }
}

fn init(dir: &Path, name: &str) -> anyhow::Result<()> {
    if !nuage_audit::checkpoint::is_valid_origin(name) {
        bail!("`{name}` is not a valid witness name (no spaces or `+`)");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let key_path = dir.join(KEY_FILE);
    if key_path.exists() {
        bail!(
            "{} exists: this witness is already initialized",
            key_path.display()
        );
    }
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed[..]);
    let key = SigningKey::from_bytes(&seed);
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .with_context(|| format!("create {}", key_path.display()))?
    };
    file.write_all(format!("{}\n", STANDARD.encode(seed.as_slice())).as_bytes())?;
    file.sync_all()?;
    write_config(
        dir,
        &WitnessConfig {
            name: name.to_string(),
            logs: Vec::new(),
        },
    )?;
    println!(
        "{}",
        nuage_audit::witness::witness_verifier_key(name, &key.verifying_key())
    );
    Ok(())
}

fn load_config(dir: &Path) -> anyhow::Result<WitnessConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("read {} (run `nuage witness init`)", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

fn write_config(dir: &Path, config: &WitnessConfig) -> anyhow::Result<()> {
    let path = dir.join(CONFIG_FILE);
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(toml::to_string(config)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn load_key(dir: &Path) -> anyhow::Result<SigningKey> {
    let path = dir.join(KEY_FILE);
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?,
    );
    let seed = zeroize::Zeroizing::new(
        STANDARD
            .decode(text.trim())
            .with_context(|| format!("{} is not base64", path.display()))?,
    );
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .with_context(|| format!("{} is not a 32-byte Ed25519 seed", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn add_log(dir: &Path, origin: String, vkey: String) -> anyhow::Result<()> {
    let mut config = load_config(dir)?;
    let verifier = nuage_audit::checkpoint::verifier_key_origin(&vkey)
        .context("malformed log verifier key")?;
    if verifier != origin {
        bail!("the verifier key names the log `{verifier}`, not `{origin}`");
    }
    config.logs.retain(|log| log.origin != origin);
    config.logs.push(LogConfig {
        origin: origin.clone(),
        vkey,
    });
    write_config(dir, &config)?;
    println!("watching {origin}");
    Ok(())
}

async fn serve(dir: &Path, listen: &str) -> anyhow::Result<()> {
    let config = load_config(dir)?;
    let key = load_key(dir)?;
    let logs: BTreeMap<String, String> = config
        .logs
        .into_iter()
        .map(|log| (log.origin, log.vkey))
        .collect();
    let witness = Arc::new(
        Witness::open(dir, &config.name, key, logs).context("cannot open the witness state")?,
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("{LISTENING_BANNER}http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let connections = Arc::new(tokio::sync::Semaphore::new(WITNESS_CONNECTIONS_MAX));
    let shutdown = crate::server::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&connections).acquire_owned() => permit?,
        };
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
        };
        let witness = Arc::clone(&witness);
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(Arc::clone(&witness), request));
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "witness connection ended");
            }
            drop(permit);
        });
    }
    eprintln!("nuage witness: stopped");
    Ok(())
}

async fn handle(
    witness: Arc<Witness>,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let text = |status: u16, content_type: &str, body: String| {
        let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        if let Ok(value) = http::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        Ok(response)
    };
    let plain = "text/plain; charset=utf-8";
    if request.uri().path() != format!("/{ADD_CHECKPOINT_PATH}") {
        return text(404, plain, "not found\n".into());
    }
    if request.method() != http::Method::POST {
        return text(405, plain, "use POST\n".into());
    }
    let body = match Limited::new(request.into_body(), WITNESS_REQUEST_BYTES_MAX)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => return text(413, plain, "request too large\n".into()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let result = tokio::task::spawn_blocking(move || witness.add_checkpoint(&body, now)).await;
    match result {
        Ok(Ok(cosignature)) => text(200, plain, cosignature),
        Ok(Err(WitnessError::Conflict { known_size })) => {
            text(409, SIZE_CONTENT_TYPE, format!("{known_size}\n"))
        }
        Ok(Err(error)) => {
            if error.status() >= 500 {
                tracing::error!(%error, "add-checkpoint failed");
            } else {
                tracing::info!(%error, "add-checkpoint refused");
            }
            text(error.status(), plain, format!("{error}\n"))
        }
        Err(error) => {
            tracing::error!(%error, "add-checkpoint task failed");
            text(500, plain, "internal error\n".into())
        }
    }
}
