//! The administrator's access key pair: created on first start, stored with
//! owner-only permissions in the data directory, reused afterwards.

use anyhow::Context as _;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

pub const FILE_NAME: &str = "credentials.toml";

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
        .collect()
}

/// Loads the credentials, or creates them. Returns whether they were created.
pub fn load_or_create(data_dir: &Path, region: &str) -> anyhow::Result<(AdminCredentials, bool)> {
    let path = data_dir.join(FILE_NAME);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let creds: AdminCredentials =
            toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
        return Ok((creds, false));
    }
    let creds = AdminCredentials {
        access_key_id: format!(
            "NU{}",
            random_string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 18)
        ),
        secret_access_key: random_string(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            40,
        ),
        region: region.to_owned(),
    };
    let text = toml::to_string(&creds)?;
    let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok((creds, true))
}

/// The platform operator's credential for the admin API: a bearer token.
/// The operator is not a tenant and has no standing access to tenant data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorCredentials {
    pub token: String,
}

pub const OPERATOR_FILE_NAME: &str = "operator-credentials.toml";

/// Loads the operator credential, or creates it (owner-only permissions).
pub fn load_or_create_operator(data_dir: &Path) -> anyhow::Result<OperatorCredentials> {
    let path = data_dir.join(OPERATOR_FILE_NAME);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display()));
    }
    let creds = OperatorCredentials {
        token: format!(
            "nuop_{}",
            random_string(b"abcdefghijklmnopqrstuvwxyz0123456789", 48)
        ),
    };
    write_private(data_dir, OPERATOR_FILE_NAME, &toml::to_string(&creds)?)?;
    Ok(creds)
}

fn write_private(data_dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let tmp = data_dir.join(format!("{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(name))?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}
