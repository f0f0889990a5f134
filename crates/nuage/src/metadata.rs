//! Opens the metadata store `[metadata]` names: the embedded redb file in
//! the data directory (the default), or a PostgreSQL database that several
//! gateways may share (`docs/metadata-postgres.md`). Either way the rest of
//! the wiring gets the same two faces of one store: [`MetaStore`] for
//! storage, [`DocumentStore`] for identities, keys and the audit key.
//!
//! The password of a PostgreSQL URL may come from `password_file` (one
//! line; refused when group or others can read it, like the HSM PIN file),
//! so the configuration file need not hold it. No error printed here
//! includes the URL or the password. TLS to the database (`tls`, `ca_file`,
//! `client_cert`, `client_key`) is checked against the URL by the
//! configuration and applied by `nuage-meta`.

use crate::config::MetadataSource;
use anyhow::{Context as _, bail};
use nuage_meta::embedded::EmbeddedMetaStore;
use nuage_meta::postgres::PostgresMetaStore;
use nuage_meta::{DocumentStore, MetaStore};
use std::path::Path;
use std::sync::Arc;

/// The metadata store, as both traits.
pub struct Metadata {
    pub meta: Arc<dyn MetaStore>,
    pub documents: Arc<dyn DocumentStore>,
}

/// Longest password file read (a password, not a document).
const PASSWORD_FILE_BYTES_MAX: u64 = 4096;

pub async fn open(source: &MetadataSource, data_dir: &Path) -> anyhow::Result<Metadata> {
    match source {
        MetadataSource::Embedded => {
            let path = data_dir.join("meta.redb");
            // Before the store is shared (a rewrite needs the file to
            // itself): what was deleted since the last start
            // (crypto-shredded keys) leaves the file.
            crate::compact_cli::forget_deleted_at_start(&path);
            let store =
                Arc::new(EmbeddedMetaStore::open(&path).context("cannot open the metadata store")?);
            Ok(Metadata {
                meta: Arc::clone(&store) as Arc<dyn MetaStore>,
                documents: store,
            })
        }
        MetadataSource::Postgres {
            config,
            password_file,
        } => {
            let mut config = config.clone();
            if let Some(path) = password_file {
                config.password = Some(read_password(path)?);
            }
            let store =
                Arc::new(PostgresMetaStore::connect(&config).await.map_err(|e| {
                    anyhow::anyhow!("cannot open the PostgreSQL metadata store: {e}")
                })?);
            // Checked by the configuration already; named in the log so an
            // operator sees whether the metadata travels encrypted.
            let tls = config
                .tls_mode()
                .map_or("unknown", nuage_meta::postgres::TlsMode::as_str);
            tracing::info!(
                pool_size = config.pool_size,
                tls,
                "metadata store: PostgreSQL (schema up to date)"
            );
            Ok(Metadata {
                meta: Arc::clone(&store) as Arc<dyn MetaStore>,
                documents: store,
            })
        }
    }
}

fn read_password(path: &Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open metadata.password_file {}", path.display()))?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "metadata.password_file {} can be read by group or others (mode {:o}): chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    let mut text = String::new();
    file.take(PASSWORD_FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read metadata.password_file {}", path.display()))?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("metadata.password_file {} is empty", path.display());
    }
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::read_password;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_password_file_must_be_private_and_loses_its_line_break() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        let refused = read_password(&path).err().map(|e| e.to_string());
        assert!(
            refused.as_deref().is_some_and(|e| e.contains("chmod 600")),
            "{refused:?}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        assert_eq!(read_password(&path)?, "s3cret");
        std::fs::write(&path, "\n")?;
        assert!(read_password(&path).is_err(), "empty");
        Ok(())
    }
}
