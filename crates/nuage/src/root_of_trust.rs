//! Opens the root of trust the configuration names: the development key file
//! in the data directory, or an HSM over PKCS#11 whose PIN is read here from
//! `pin_file` (the binary reads files; `nuage-kms` receives the PIN).
//!
//! Any failure stops start-up with a message naming the setting to fix: a
//! server that cannot reach its root of trust can decrypt nothing.

use crate::config::RootOfTrustSource;
use anyhow::{Context as _, bail};
use nuage_kms::{Pkcs11Root, Pkcs11RootConfig, RootOfTrust};
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The development root of trust, in the data directory (mode 0600).
pub const ROOT_KEY_FILE: &str = "root.key";
/// Present in the data directory while a root-of-trust migration or rotation
/// is unfinished (`nuage root-of-trust`): the server refuses to start, since
/// part of the stored keys may be under a root it was not given.
pub const MIGRATION_MARKER_FILE: &str = "root-of-trust.migrating";

/// Permission bits that must be clear on the PIN file: any access by group
/// or others.
const GROUP_OTHER_ACCESS_MASK: u32 = 0o077;
/// A PIN longer than this is not a PIN (PKCS#11 tokens take a few dozen
/// bytes at most); the bound keeps a wrong path from reading a large file.
const PIN_BYTES_MAX: u64 = 256;

pub async fn open(
    source: &RootOfTrustSource,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn RootOfTrust>> {
    let marker = data_dir.join(MIGRATION_MARKER_FILE);
    if marker.exists() {
        bail!(
            "a root-of-trust migration of this data directory is unfinished ({} exists): run the \
             same `nuage root-of-trust migrate` or `rotate` command again to finish it \
             (docs/configuration.md)",
            marker.display()
        );
    }
    match source {
        RootOfTrustSource::KeyFile => {
            let path = data_dir.join(ROOT_KEY_FILE);
            let key = nuage_crypto::RootKeyFile::open_or_create(&path)
                .context("cannot open the root key")?;
            tracing::info!(
                path = %path.display(),
                root = %key.id(),
                "root of trust: development key file"
            );
            Ok(Arc::new(key))
        }
        RootOfTrustSource::Pkcs11 {
            module,
            token_label,
            pin_file,
            key_label,
        } => {
            let stale = data_dir.join(ROOT_KEY_FILE);
            if stale.exists() {
                tracing::warn!(
                    path = %stale.display(),
                    "a development root key file is in the data directory: keys it wrapped do not \
                     unwrap under the HSM root; move them with `nuage root-of-trust migrate`"
                );
            }
            let root = open_pkcs11(module, token_label, pin_file, key_label, true).await?;
            tracing::info!(root = %root.describe(), "root of trust: HSM over PKCS#11");
            Ok(Arc::new(root))
        }
    }
}

/// The HSM root: its PIN read from `pin_file` (checked as for the server),
/// the key found, or generated under `key_label` if the token has none and
/// `create_if_missing` (otherwise refused).
pub async fn open_pkcs11(
    module: &Path,
    token_label: &str,
    pin_file: &Path,
    key_label: &str,
    create_if_missing: bool,
) -> anyhow::Result<Pkcs11Root> {
    let pin = read_pin(pin_file)?;
    let config = Pkcs11RootConfig {
        module: module.to_owned(),
        token_label: token_label.to_owned(),
        pin,
        key_label: key_label.to_owned(),
    };
    let root = if create_if_missing {
        Pkcs11Root::open(config).await
    } else {
        Pkcs11Root::open_existing(config).await
    };
    root.context("cannot open the PKCS#11 root of trust ([root_of_trust] in the configuration)")
}

/// The user PIN: the file's content without a final line break. Refused if
/// group or others can access the file, as for the root key file.
fn read_pin(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("cannot open root_of_trust.pin_file {}", path.display()))?;
    // Checked on the open handle, so the file read is the file checked.
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        bail!(
            "root_of_trust.pin_file {} is not a regular file",
            path.display()
        );
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER_ACCESS_MASK != 0 {
        bail!(
            "root_of_trust.pin_file {} has mode {mode:04o}: it must not be accessible to group or \
             others (chmod 600 it, and consider the PIN exposed)",
            path.display()
        );
    }
    if metadata.len() > PIN_BYTES_MAX {
        bail!(
            "root_of_trust.pin_file {} holds {} bytes: a PIN file holds the PIN alone",
            path.display(),
            metadata.len()
        );
    }
    let mut pin = Zeroizing::new(String::new());
    file.read_to_string(&mut pin)
        .with_context(|| format!("cannot read root_of_trust.pin_file {}", path.display()))?;
    let len = pin.trim_end_matches(['\n', '\r']).len();
    pin.truncate(len);
    if pin.is_empty() {
        bail!("root_of_trust.pin_file {} is empty", path.display());
    }
    Ok(pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_file_must_be_private_and_hold_a_pin() -> anyhow::Result<()> {
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
        std::fs::write(&path, "\n")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))?;
        assert!(read_pin(&path).is_err(), "empty");
        assert!(read_pin(&dir.path().join("absent")).is_err());
        Ok(())
    }
}
