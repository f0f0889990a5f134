//! `nuage xks-proxy`: the reference external key store proxy a tenant runs on
//! its own premises (docs/xks-proxy.md), and the commands that manage its
//! keys. Everything lives in one directory the tenant chooses:
//!
//! - `xks-proxy.toml`: listen address, URI path, the PKCS#11 token
//!   (`[hsm]`: module, token label, PIN file) and the TLS files;
//! - `credentials.toml` (0600): the SigV4 credentials Nuage signs with;
//! - `tls/xks-proxy.crt` and `tls/xks-proxy.key` (0600): the self-signed
//!   certificate `init` makes, the `.crt` being what the tenant gives Nuage;
//! - `keys.json`: each key's state and allowed access reasons (written
//!   atomically by `key ...`, reread by a running proxy on change);
//! - `audit.jsonl`: one line per decision on a key request.
//!
//! This module reads those files and the PIN file (refused when group or
//! others can read it) and hands typed configuration to `nuage-xks`.

use anyhow::{Context as _, bail};
use nuage_xks::{
    HsmError, HsmKeys, KeyState, KeyStates, XksCredential, XksHsmConfig, XksProxy, XksProxyConfig,
};
use serde::{Deserialize, Serialize};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

const CONFIG_FILE: &str = "xks-proxy.toml";
const CREDENTIALS_FILE: &str = "credentials.toml";
const STATE_FILE: &str = "keys.json";
const AUDIT_FILE: &str = "audit.jsonl";
const TLS_DIR: &str = "tls";
const CERTIFICATE_FILE: &str = "xks-proxy.crt";
const PRIVATE_KEY_FILE: &str = "xks-proxy.key";
/// What `serve` prints once listening, followed by the base URL
/// (`https://ADDRESS/PREFIX/kms/xks/v1`), for scripts and tests.
pub const LISTENING_BANNER: &str = "nuage xks-proxy: listening on ";
/// Permission bits that must be clear on secret files: any group or other
/// access.
const GROUP_OTHER_ACCESS_MASK: u32 = 0o077;
/// Bounds on the small files read here, so a wrong path cannot make the
/// process read a large file.
const PIN_BYTES_MAX: u64 = 256;
const SMALL_FILE_BYTES_MAX: u64 = 1024 * 1024;

#[derive(clap::Args)]
pub struct XksProxyArgs {
    #[command(subcommand)]
    command: XksProxyCommand,
}

#[derive(clap::Subcommand)]
enum XksProxyCommand {
    /// Creates the proxy's directory: configuration, a self-signed TLS
    /// certificate, and a SigV4 credential (printed once, as the JSON the KMS
    /// console and `nuage` accept).
    Init(InitArgs),
    /// Runs the proxy. Prints `nuage xks-proxy: listening on URL` once ready.
    Serve(DirArg),
    /// Manages the keys in the token and their state.
    Key(KeyArgs),
}

#[derive(clap::Args)]
struct DirArg {
    /// The proxy's directory.
    #[arg(long)]
    dir: PathBuf,
}

#[derive(clap::Args)]
struct InitArgs {
    /// The proxy's directory (created, 0700).
    #[arg(long)]
    dir: PathBuf,
    /// Address to listen on (port 0 picks a free port at each start).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: String,
    /// The URI path prefix, ending in /kms/xks/v1 (XksProxyUriPath).
    #[arg(long, default_value = "/kms/xks/v1")]
    uri_path: String,
    /// The PKCS#11 library of the token.
    #[arg(long)]
    pkcs11_module: PathBuf,
    /// The label of the token holding the keys.
    #[arg(long)]
    token_label: String,
    /// A file holding the token's user PIN (mode 0600 or stricter).
    #[arg(long)]
    pin_file: PathBuf,
    /// Names for the self-signed certificate (repeatable; default localhost,
    /// 127.0.0.1 and ::1).
    #[arg(long = "hostname")]
    hostnames: Vec<String>,
}

#[derive(clap::Args)]
struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(clap::Subcommand)]
enum KeyCommand {
    /// Generates an AES-256 key in the token (sensitive, not extractable),
    /// enabled, allowing CUSTOMER_INITIATED_ACCESS only.
    Create(KeyIdArgs),
    /// Lists the keys: id, status, allowed reasons, presence in the token.
    List(DirArg),
    /// Lets the key encrypt and decrypt again.
    Enable(KeyIdArgs),
    /// Refuses every encrypt and decrypt with the key from the next request on.
    Disable(KeyIdArgs),
    /// Destroys the key in the token: what it protects is unreadable for good.
    Destroy(KeyIdArgs),
    /// Sets the access reasons (nuageAccessReason) the key accepts.
    Reasons(ReasonsArgs),
}

#[derive(clap::Args)]
struct KeyIdArgs {
    #[arg(long)]
    dir: PathBuf,
    /// The external key id (letters, digits, '-', '.', '_'; at most 128).
    id: String,
}

#[derive(clap::Args)]
struct ReasonsArgs {
    #[arg(long)]
    dir: PathBuf,
    id: String,
    /// Wire names, e.g. CUSTOMER_INITIATED_ACCESS CUSTOMER_INITIATED_SUPPORT.
    #[arg(required = true)]
    reasons: Vec<String>,
}

/// `xks-proxy.toml`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxyFile {
    listen: String,
    uri_path: String,
    hsm: HsmSection,
    tls: TlsSection,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HsmSection {
    module: PathBuf,
    token_label: String,
    pin_file: PathBuf,
}

/// Relative paths are relative to the proxy's directory.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    certificate: PathBuf,
    private_key: PathBuf,
}

/// `credentials.toml`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    credentials: Vec<CredentialEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialEntry {
    access_key_id: String,
    secret_access_key: String,
}

pub fn run(args: XksProxyArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.command {
        XksProxyCommand::Init(args) => init(&args),
        XksProxyCommand::Serve(args) => runtime.block_on(serve(&args.dir)),
        XksProxyCommand::Key(args) => runtime.block_on(key(args.command)),
    }
}

fn init(args: &InitArgs) -> anyhow::Result<()> {
    nuage_xks::wire::check_uri_path(&args.uri_path).map_err(anyhow::Error::msg)?;
    args.listen
        .parse::<std::net::SocketAddr>()
        .with_context(|| format!("--listen `{}` is not IP:PORT", args.listen))?;
    let config_path = args.dir.join(CONFIG_FILE);
    if config_path.exists() {
        bail!(
            "{} exists: this directory is already initialized (its credential would be lost)",
            config_path.display()
        );
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(args.dir.join(TLS_DIR))
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let names = if args.hostnames.is_empty() {
        vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ]
    } else {
        args.hostnames.clone()
    };
    let (certificate, private_key) = nuage_xks::self_signed_certificate(names)?;
    let certificate_path = args.dir.join(TLS_DIR).join(CERTIFICATE_FILE);
    write_private(
        &args.dir.join(TLS_DIR).join(PRIVATE_KEY_FILE),
        private_key.as_bytes(),
    )?;
    std::fs::write(&certificate_path, certificate.as_bytes())
        .with_context(|| format!("cannot write {}", certificate_path.display()))?;
    let credential = XksCredential::generate();
    let credentials = CredentialsFile {
        credentials: vec![CredentialEntry {
            access_key_id: credential.access_key_id.clone(),
            secret_access_key: credential.secret_access_key.to_string(),
        }],
    };
    let text = Zeroizing::new(toml::to_string(&credentials)?);
    write_private(&args.dir.join(CREDENTIALS_FILE), text.as_bytes())?;
    KeyStates::default().save(&args.dir.join(STATE_FILE))?;
    let config = ProxyFile {
        listen: args.listen.clone(),
        uri_path: args.uri_path.clone(),
        hsm: HsmSection {
            module: args.pkcs11_module.clone(),
            token_label: args.token_label.clone(),
            pin_file: absolute(&args.pin_file)?,
        },
        tls: TlsSection {
            certificate: PathBuf::from(TLS_DIR).join(CERTIFICATE_FILE),
            private_key: PathBuf::from(TLS_DIR).join(PRIVATE_KEY_FILE),
        },
    };
    // Written last: its presence means the directory is complete.
    write_private(&config_path, toml::to_string(&config)?.as_bytes())?;
    // The spec's configuration file format (what the AWS KMS console reads),
    // printed once; the secret stays only in credentials.toml (0600).
    let printed = serde_json::json!({
        "XksProxyUriPath": args.uri_path,
        "XksProxyAuthenticationCredential": {
            "AccessKeyId": credential.access_key_id,
            "RawSecretAccessKey": credential.secret_access_key.as_str(),
        }
    });
    println!("{printed}");
    eprintln!(
        "nuage xks-proxy: initialized {}; give Nuage the URI path and credential above and the \
         certificate {}",
        args.dir.display(),
        certificate_path.display()
    );
    Ok(())
}

async fn serve(dir: &Path) -> anyhow::Result<()> {
    let config = load_config(dir)?;
    let listen = config
        .listen
        .parse()
        .with_context(|| format!("listen `{}` in {CONFIG_FILE} is not IP:PORT", config.listen))?;
    let credentials = read_credentials(dir)?;
    let certificate = read_small(&dir.join(&config.tls.certificate), false)?;
    let private_key = Zeroizing::new(read_small(&dir.join(&config.tls.private_key), true)?);
    let proxy = XksProxy::bind(XksProxyConfig {
        listen,
        uri_path: config.uri_path.clone(),
        tls_certificate_pem: certificate,
        tls_private_key_pem: private_key,
        credentials,
        hsm: hsm_config(&config.hsm)?,
        state_file: dir.join(STATE_FILE),
        audit_file: dir.join(AUDIT_FILE),
        clock: Arc::new(nuage_base::SystemClock),
    })
    .await
    .context("cannot start the XKS proxy")?;
    println!(
        "{LISTENING_BANNER}https://{}{}",
        proxy.local_addr(),
        proxy.uri_path()
    );
    std::io::stdout().flush()?;
    proxy.serve(crate::server::shutdown_signal()).await?;
    eprintln!("nuage xks-proxy: stopped");
    Ok(())
}

async fn key(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create(args) => {
            check_id(&args.id)?;
            let (keys, state_file) = open(&args.dir).await?;
            if KeyStates::load(&state_file)?.keys.contains_key(&args.id) {
                bail!("key {} exists already", args.id);
            }
            let created = keys
                .create_key(&args.id)
                .await
                .with_context(|| format!("cannot create key {} in the token", args.id))?;
            KeyStates::update(&state_file, |states| {
                states
                    .keys
                    .entry(args.id.clone())
                    .or_insert_with(KeyState::default);
                Ok::<_, anyhow::Error>(())
            })?;
            let how = if created {
                "created"
            } else {
                "adopted the token's existing"
            };
            println!("{how} key {}", args.id);
        }
        KeyCommand::List(args) => {
            let (keys, state_file) = open(&args.dir).await?;
            for (id, state) in KeyStates::load(&state_file)?.keys {
                let present = keys.key_exists(&id).await?;
                println!(
                    "{id}\t{}\t{}\t{}",
                    if state.enabled { "ENABLED" } else { "DISABLED" },
                    state.allowed_reasons.join(","),
                    if present {
                        "in-token"
                    } else {
                        "MISSING-FROM-TOKEN"
                    }
                );
            }
        }
        KeyCommand::Enable(args) => set_enabled(&args, true)?,
        KeyCommand::Disable(args) => set_enabled(&args, false)?,
        KeyCommand::Destroy(args) => {
            check_id(&args.id)?;
            let (keys, state_file) = open(&args.dir).await?;
            // Unlisted first, so the proxy stops serving the key at once even
            // if the token is slow or fails below.
            let listed = KeyStates::update(&state_file, |states| {
                Ok::<_, anyhow::Error>(states.keys.remove(&args.id).is_some())
            })?;
            match keys.destroy_key(&args.id).await {
                Ok(()) => println!("destroyed key {}", args.id),
                Err(HsmError::KeyNotFound(_)) if listed => {
                    println!("key {} was no longer in the token; unlisted it", args.id);
                }
                Err(error) => return Err(error).context(format!("cannot destroy key {}", args.id)),
            }
        }
        KeyCommand::Reasons(args) => {
            check_id(&args.id)?;
            let mut reasons = Vec::new();
            for name in &args.reasons {
                let Some(reason) = nuage_kms::AccessReason::parse(name) else {
                    let known: Vec<&str> = nuage_kms::AccessReason::ALL
                        .iter()
                        .map(|r| r.as_str())
                        .collect();
                    bail!(
                        "unknown access reason `{name}` (known: {})",
                        known.join(", ")
                    );
                };
                if !reasons.contains(&reason.as_str().to_owned()) {
                    reasons.push(reason.as_str().to_owned());
                }
            }
            load_config(&args.dir)?;
            KeyStates::update(&args.dir.join(STATE_FILE), |states| {
                let state = states
                    .keys
                    .get_mut(&args.id)
                    .with_context(|| format!("no key {}", args.id))?;
                state.allowed_reasons = reasons.clone();
                Ok::<_, anyhow::Error>(())
            })?;
            println!("key {} allows {}", args.id, reasons.join(","));
        }
    }
    Ok(())
}

fn set_enabled(args: &KeyIdArgs, enabled: bool) -> anyhow::Result<()> {
    check_id(&args.id)?;
    load_config(&args.dir)?;
    KeyStates::update(&args.dir.join(STATE_FILE), |states| {
        let state = states
            .keys
            .get_mut(&args.id)
            .with_context(|| format!("no key {}", args.id))?;
        state.enabled = enabled;
        Ok::<_, anyhow::Error>(())
    })?;
    let word = if enabled { "enabled" } else { "disabled" };
    println!("{word} key {}", args.id);
    Ok(())
}

fn check_id(id: &str) -> anyhow::Result<()> {
    nuage_xks::wire::check_key_id(id).map_err(|why| anyhow::anyhow!("key id `{id}`: {why}"))
}

/// The token's keys and the state file's path.
async fn open(dir: &Path) -> anyhow::Result<(HsmKeys, PathBuf)> {
    let config = load_config(dir)?;
    let keys = HsmKeys::open(hsm_config(&config.hsm)?)
        .await
        .context("cannot open the PKCS#11 token ([hsm] in xks-proxy.toml)")?;
    Ok((keys, dir.join(STATE_FILE)))
}

fn load_config(dir: &Path) -> anyhow::Result<ProxyFile> {
    let path = dir.join(CONFIG_FILE);
    let text = String::from_utf8(read_small(&path, false)?)
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    let config: ProxyFile =
        toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
    nuage_xks::wire::check_uri_path(&config.uri_path).map_err(anyhow::Error::msg)?;
    Ok(config)
}

fn hsm_config(section: &HsmSection) -> anyhow::Result<XksHsmConfig> {
    Ok(XksHsmConfig {
        module: section.module.clone(),
        token_label: section.token_label.clone(),
        pin: read_pin(&section.pin_file)?,
    })
}

fn read_credentials(dir: &Path) -> anyhow::Result<Vec<XksCredential>> {
    let path = dir.join(CREDENTIALS_FILE);
    let bytes = Zeroizing::new(read_small(&path, true)?);
    let text =
        std::str::from_utf8(&bytes).with_context(|| format!("{} is not UTF-8", path.display()))?;
    let file: CredentialsFile =
        toml::from_str(text).with_context(|| format!("invalid {}", path.display()))?;
    Ok(file
        .credentials
        .into_iter()
        .map(|entry| XksCredential {
            access_key_id: entry.access_key_id,
            secret_access_key: Zeroizing::new(entry.secret_access_key),
        })
        .collect())
}

/// The user PIN: the file's content without a final line break. Refused if
/// group or others can access the file.
fn read_pin(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let bytes = Zeroizing::new(read_bounded(path, true, PIN_BYTES_MAX)?);
    let text = std::str::from_utf8(&bytes)
        .with_context(|| format!("hsm.pin_file {} is not UTF-8", path.display()))?;
    let pin = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned());
    if pin.is_empty() {
        bail!("hsm.pin_file {} is empty", path.display());
    }
    Ok(pin)
}

fn read_small(path: &Path, private: bool) -> anyhow::Result<Vec<u8>> {
    read_bounded(path, private, SMALL_FILE_BYTES_MAX)
}

/// A regular file of at most `max` bytes; when `private`, refused if group or
/// others can access it (checked on the open handle, so the file read is the
/// file checked).
fn read_bounded(path: &Path, private: bool, max: u64) -> anyhow::Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if private && mode & GROUP_OTHER_ACCESS_MASK != 0 {
        bail!(
            "{} has mode {mode:04o}: it must not be accessible to group or others (chmod 600 \
             it, and consider its secret exposed)",
            path.display()
        );
    }
    if metadata.len() > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(bytes)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_must_be_private_and_bounded() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("hsm.pin");
        std::fs::write(&path, "1234\n")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        assert_eq!(read_pin(&path)?.as_str(), "1234");
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            let error = read_pin(&path).err().context("refused")?.to_string();
            assert!(error.contains("chmod 600"), "{error}");
        }
        std::fs::write(&path, "x".repeat(300))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        assert!(read_pin(&path).is_err(), "too long for a PIN");
        std::fs::write(&path, "\n")?;
        assert!(read_pin(&path).is_err(), "empty");
        Ok(())
    }
}
