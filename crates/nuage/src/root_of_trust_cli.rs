//! `nuage root-of-trust`: moving a stopped server's data directory from one
//! root of trust to another (`migrate`: file to HSM, HSM to file, one HSM key
//! to another), rotating the root key (`rotate`: a fresh key of the same
//! kind), and saying which root each stored key is under (`status`).
//!
//! The work is `nuage_kms::rewrap` (resumable, idempotent, every document
//! all under one root or all under the other); this module owns what
//! surrounds it on disk:
//!
//! - **offline only**: it opens `meta.redb`, which a running server holds
//!   locked, and the server cannot start while this holds it;
//! - **an unfinished migration stops the server from starting**: the marker
//!   file `root-of-trust.migrating` is written before the first document and
//!   removed after the last step, so no server ever runs with part of the
//!   keys under a root it was not given; running the same command again
//!   finishes the work;
//! - **a new development key file is staged** as `root.key.next` (reused if
//!   an earlier run left it) and renamed over `root.key` only once every key
//!   is under it; migrating *away* from the file root deletes `root.key` at
//!   the end, and only then. An old HSM key is destroyed only on
//!   `--destroy-old-key`.
//!
//! It must never delete or replace a root key while any stored key is still
//! under it.

use crate::config::{Config, FileConfig, RootOfTrustSource};
use crate::root_of_trust::{MIGRATION_MARKER_FILE, ROOT_KEY_FILE, open_pkcs11};
use anyhow::{Context as _, bail};
use nuage_kms::{Pkcs11Root, RootId, RootOfTrust};
use nuage_meta::embedded::EmbeddedMetaStore;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Keys the binary itself stores wrapped by the root of trust, as tenant
/// keys are: `nuage_kms::rewrap` migrates them with the rest.
const KEY_DOCUMENTS: &[&str] = &[
    crate::server::audit_key::SIGNING_KEY_NAMESPACE,
    crate::server::region_key::SIGNING_KEY_NAMESPACE,
];

/// The new development root key while a rotation or migration to the file
/// root is under way; renamed to `root.key` when it is complete.
const STAGED_ROOT_KEY_FILE: &str = "root.key.next";
/// PKCS#11 labels are fixed 32-byte fields.
const PKCS11_LABEL_BYTES_MAX: usize = 32;
/// Suffix of generated key labels on rotation: `nuage-root` -> `nuage-root-g2`
/// -> `nuage-root-g3`.
const GENERATION_SUFFIX: &str = "-g";

#[derive(clap::Args)]
pub struct RootOfTrustArgs {
    #[command(subcommand)]
    command: RootOfTrustCommand,
}

#[derive(clap::Subcommand)]
enum RootOfTrustCommand {
    /// Moves every key wrapped by the root of trust of OLD.toml to that of
    /// NEW.toml (server stopped). Safe to rerun; rerun it after any failure.
    Migrate {
        /// The stopped server's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The configuration the server ran with until now.
        #[arg(long)]
        from_config: PathBuf,
        /// The configuration it will run with (its `[root_of_trust]`).
        #[arg(long)]
        to_config: PathBuf,
        /// With a PKCS#11 old root: destroy its key in the HSM once nothing
        /// is under it. Without this flag the key stays in the token.
        #[arg(long)]
        destroy_old_key: bool,
    },
    /// Moves every key to a fresh root key of the same kind (server
    /// stopped): a new `root.key`, or a new key in the same PKCS#11 token.
    Rotate {
        /// The stopped server's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The server's configuration (default: the development key file).
        #[arg(long)]
        config: Option<PathBuf>,
        /// PKCS#11 only: the new key's label (default: the old label with
        /// `-g2`, `-g3`... ). Set it as `key_label` in the configuration
        /// afterwards.
        #[arg(long)]
        new_key_label: Option<String>,
        /// PKCS#11 only: destroy the old key in the HSM once nothing is
        /// under it.
        #[arg(long)]
        destroy_old_key: bool,
    },
    /// Counts the stored keys under each root of trust (server stopped).
    Status {
        /// The stopped server's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// With a configuration: also say how many keys are not under its
        /// root.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Runs one `nuage root-of-trust` command.
///
/// # Errors
/// Anything that stopped it, with what to do next.
pub fn run(args: RootOfTrustArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match args.command {
            RootOfTrustCommand::Migrate {
                data_dir,
                from_config,
                to_config,
                destroy_old_key,
            } => {
                let from = load_config(&from_config)?;
                let to = load_config(&to_config)?;
                let region = region(&from);
                if region != self::region(&to) {
                    bail!(
                        "{} and {} name different first regions ({region} and {}): KMS key ARNs \
                         depend on it; migrate with the same regions",
                        from_config.display(),
                        to_config.display(),
                        self::region(&to)
                    );
                }
                if from.root_of_trust == to.root_of_trust {
                    bail!(
                        "{} and {} name the same root of trust: nothing to migrate (to change the \
                         root key, use `nuage root-of-trust rotate`)",
                        from_config.display(),
                        to_config.display()
                    );
                }
                let target = match to.root_of_trust {
                    RootOfTrustSource::KeyFile => Target::StagedFile,
                    source => Target::Configured(source),
                };
                migrate(
                    &data_dir,
                    &region,
                    &from.root_of_trust,
                    &target,
                    destroy_old_key,
                )
                .await
            }
            RootOfTrustCommand::Rotate {
                data_dir,
                config,
                new_key_label,
                destroy_old_key,
            } => {
                let config = match &config {
                    Some(path) => load_config(path)?,
                    None => FileConfig::default().resolve()?,
                };
                let region = region(&config);
                let target = match &config.root_of_trust {
                    RootOfTrustSource::KeyFile => {
                        if new_key_label.is_some() || destroy_old_key {
                            bail!(
                                "--new-key-label and --destroy-old-key are for a PKCS#11 root; \
                                 this data directory's root is the development key file"
                            );
                        }
                        Target::StagedFile
                    }
                    RootOfTrustSource::Pkcs11 {
                        module,
                        token_label,
                        pin_file,
                        key_label,
                    } => {
                        let label = match new_key_label {
                            Some(label) => label,
                            None => next_key_label(key_label)?,
                        };
                        if label.is_empty() || label.len() > PKCS11_LABEL_BYTES_MAX {
                            bail!(
                                "--new-key-label `{label}` must be 1 to {PKCS11_LABEL_BYTES_MAX} \
                                 bytes long"
                            );
                        }
                        if label == *key_label {
                            bail!("--new-key-label is the current key_label `{label}`");
                        }
                        Target::Configured(RootOfTrustSource::Pkcs11 {
                            module: module.clone(),
                            token_label: token_label.clone(),
                            pin_file: pin_file.clone(),
                            key_label: label,
                        })
                    }
                };
                migrate(
                    &data_dir,
                    &region,
                    &config.root_of_trust,
                    &target,
                    destroy_old_key,
                )
                .await
            }
            RootOfTrustCommand::Status { data_dir, config } => status(&data_dir, config).await,
        }
    })
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    FileConfig::load(path)?
        .resolve()
        .with_context(|| format!("invalid configuration {}", path.display()))
}

/// The region of KMS key ARNs: the first configured, as the server does.
fn region(config: &Config) -> String {
    config
        .regions
        .first()
        .map_or_else(|| "fr-par".to_owned(), |r| r.name.clone())
}

/// `nuage-root` -> `nuage-root-g2`, `nuage-root-g2` -> `nuage-root-g3`.
fn next_key_label(label: &str) -> anyhow::Result<String> {
    let (base, generation) = match label.rsplit_once(GENERATION_SUFFIX) {
        Some((base, digits)) if !digits.is_empty() => match digits.parse::<u32>() {
            Ok(n) => (base, n.saturating_add(1)),
            Err(_) => (label, 2),
        },
        _ => (label, 2),
    };
    let next = format!("{base}{GENERATION_SUFFIX}{generation}");
    if next.len() > PKCS11_LABEL_BYTES_MAX {
        bail!(
            "the next key label `{next}` is longer than {PKCS11_LABEL_BYTES_MAX} bytes: choose one \
             with --new-key-label"
        );
    }
    Ok(next)
}

/// Where the keys go.
enum Target {
    /// A new development key file, staged as `root.key.next`.
    StagedFile,
    /// A PKCS#11 key (another token or key label than the old root's).
    Configured(RootOfTrustSource),
}

/// An opened root, and what is needed to retire it.
struct Opened {
    root: Arc<dyn RootOfTrust>,
    /// The HSM root, to destroy its key on request.
    pkcs11: Option<Pkcs11Root>,
}

/// Opens the root `source` names. `existing`: the root must be there already
/// (the old root of a migration, or the one `status` compares with): no
/// development key file is created, no HSM key generated.
async fn open_source(
    source: &RootOfTrustSource,
    data_dir: &Path,
    existing: bool,
) -> anyhow::Result<Opened> {
    match source {
        RootOfTrustSource::KeyFile => {
            let path = data_dir.join(ROOT_KEY_FILE);
            // Never create it: a fresh key would be no one's old root.
            if existing && !path.exists() {
                bail!(
                    "no development root key {} in the data directory",
                    path.display()
                );
            }
            let key = nuage_crypto::RootKeyFile::open_or_create(&path)
                .with_context(|| format!("cannot open the root key {}", path.display()))?;
            Ok(Opened {
                root: Arc::new(key),
                pkcs11: None,
            })
        }
        RootOfTrustSource::Pkcs11 {
            module,
            token_label,
            pin_file,
            key_label,
        } => {
            let root = open_pkcs11(module, token_label, pin_file, key_label, !existing).await?;
            Ok(Opened {
                root: Arc::new(root.clone()),
                pkcs11: Some(root),
            })
        }
    }
}

/// Opens the metadata store, refusing while a server holds it.
fn open_store(data_dir: &Path) -> anyhow::Result<Arc<EmbeddedMetaStore>> {
    let path = data_dir.join("meta.redb");
    if !path.is_file() {
        bail!(
            "{} has no metadata store (meta.redb): is it a Nuage data directory?",
            data_dir.display()
        );
    }
    let store = EmbeddedMetaStore::open(&path).map_err(|error| {
        anyhow::anyhow!(
            "cannot open the metadata store {}: {error}; if `nuage serve` is running on this data \
             directory, stop it first (root-of-trust commands run offline)",
            path.display()
        )
    })?;
    Ok(Arc::new(store))
}

async fn migrate(
    data_dir: &Path,
    region: &str,
    from: &RootOfTrustSource,
    target: &Target,
    destroy_old_key: bool,
) -> anyhow::Result<()> {
    if destroy_old_key && !matches!(from, RootOfTrustSource::Pkcs11 { .. }) {
        bail!("--destroy-old-key is for a PKCS#11 old root (the old root.key is always removed)");
    }
    let store = open_store(data_dir)?;
    let marker = data_dir.join(MIGRATION_MARKER_FILE);
    if marker.exists() {
        println!(
            "resuming the unfinished migration ({} exists)",
            marker.display()
        );
    }

    // The new root first: it may be all that is left after a run that
    // stopped between its last two steps.
    let staged = data_dir.join(STAGED_ROOT_KEY_FILE);
    let new = match target {
        Target::StagedFile => Opened {
            root: Arc::new(
                nuage_crypto::RootKeyFile::open_or_create(&staged).with_context(|| {
                    format!("cannot create the new root key {}", staged.display())
                })?,
            ),
            pkcs11: None,
        },
        Target::Configured(source) => open_source(source, data_dir, false).await?,
    };
    println!("new root of trust: {}", new.root.describe());

    let old = match open_source(from, data_dir, true).await {
        Ok(old) => Some(old),
        // Retired already (root.key removed, the HSM key destroyed) by a run
        // that stopped just before its end: nothing needs it any more.
        Err(error) => {
            let census = nuage_kms::census(store.as_ref(), KEY_DOCUMENTS).await?;
            if census.not_under(new.root.id()) != 0 {
                return Err(error);
            }
            println!(
                "the old root cannot be opened ({error:#}), but every stored key is already \
                 under the new root"
            );
            None
        }
    };
    // Before anything is written (the marker included): keys under a root
    // that is neither mean a wrong configuration, which must not leave the
    // data directory blocked.
    let before = nuage_kms::census(store.as_ref(), KEY_DOCUMENTS).await?;
    let known = [Some(new.root.id()), old.as_ref().map(|o| o.root.id())];
    if let Some(((kind, root), count)) = before
        .counts
        .iter()
        .find(|((_, root), _)| root.is_some() && !known.contains(root))
    {
        bail!(
            "{count} {kind} are under root {}, which is neither the old nor the new root: check \
             --from-config (or finish the migration that put them there); nothing was changed",
            root.map(|r| r.to_string()).unwrap_or_default()
        );
    }
    write_marker(&marker, new.root.id())?;
    if let Some(old) = &old {
        println!("old root of trust: {}", old.root.describe());
        let report = match nuage_kms::rewrap(
            store.as_ref(),
            old.root.as_ref(),
            new.root.as_ref(),
            region,
            KEY_DOCUMENTS,
        )
        .await
        {
            Ok(report) => report,
            Err(error) => {
                // Nothing under the new root yet: the data directory is as
                // it was, and the old configuration still serves it all.
                let untouched = nuage_kms::census(store.as_ref(), KEY_DOCUMENTS)
                    .await
                    .is_ok_and(|census| census.under(new.root.id()) == 0);
                if untouched {
                    std::fs::remove_file(&marker)
                        .with_context(|| format!("cannot remove {}", marker.display()))?;
                    return Err(error).context("the migration failed before changing anything");
                }
                return Err(error).context(
                    "the migration stopped; every document is still entirely under one root or \
                     the other: fix the cause and run the same command again",
                );
            }
        };
        print!("{report}");
    }
    let census = nuage_kms::census(store.as_ref(), KEY_DOCUMENTS).await?;
    let left = census.not_under(new.root.id());
    if left != 0 {
        bail!("{left} stored keys are still not under the new root:\n{census}");
    }

    // Every key is under the new root: retire the old one.
    match target {
        Target::StagedFile => {
            let path = data_dir.join(ROOT_KEY_FILE);
            std::fs::rename(&staged, &path).with_context(|| {
                format!("cannot rename {} to {}", staged.display(), path.display())
            })?;
            sync_directory(data_dir)?;
            println!("{} is the new root key", path.display());
        }
        Target::Configured(_) => {
            if matches!(from, RootOfTrustSource::KeyFile) {
                let path = data_dir.join(ROOT_KEY_FILE);
                match std::fs::remove_file(&path) {
                    Ok(()) => println!("removed the old root key {}", path.display()),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => {
                        return Err(error)
                            .with_context(|| format!("cannot remove {}", path.display()));
                    }
                }
                sync_directory(data_dir)?;
            }
        }
    }
    if destroy_old_key && let Some(pkcs11) = old.as_ref().and_then(|o| o.pkcs11.as_ref()) {
        pkcs11
            .destroy_key()
            .await
            .context("every key is under the new root, but the old HSM key was not destroyed")?;
        println!("destroyed the old key `{}` in the HSM", pkcs11.key_label());
    }
    std::fs::remove_file(&marker).with_context(|| format!("cannot remove {}", marker.display()))?;
    sync_directory(data_dir)?;
    println!(
        "done: every stored key ({}) is under root {}",
        census.under(new.root.id()),
        new.root.id()
    );
    if let (Target::Configured(RootOfTrustSource::Pkcs11 { key_label, .. }), Some(_)) =
        (target, new.pkcs11.as_ref())
    {
        println!(
            "start the server with [root_of_trust] kind = \"pkcs11\", key_label = \"{key_label}\""
        );
    }
    // Both roots stay open until here: dropping a PKCS#11 context finalizes
    // the module for the whole process.
    drop(old);
    drop(new);
    Ok(())
}

async fn status(data_dir: &Path, config: Option<PathBuf>) -> anyhow::Result<()> {
    let store = open_store(data_dir)?;
    let census = nuage_kms::census(store.as_ref(), KEY_DOCUMENTS).await?;
    print!("{census}");
    if let Some(path) = config {
        let config = load_config(&path)?;
        let root = open_source(&config.root_of_trust, data_dir, true).await?;
        println!("configured root: {}", root.root.describe());
        println!(
            "not under the configured root: {}",
            census.not_under(root.root.id())
        );
    }
    if data_dir.join(MIGRATION_MARKER_FILE).exists() {
        println!("a migration is unfinished: run it again to finish it");
    }
    Ok(())
}

/// The marker that keeps a server from starting mid-migration; names the
/// new root for whoever finds it.
fn write_marker(path: &Path, new_root: RootId) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(
        file,
        "A root-of-trust migration to root {new_root} is unfinished: run the same \
         `nuage root-of-trust` command again. The server will not start until it is done."
    )?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        sync_directory(dir)?;
    }
    Ok(())
}

/// Makes a rename or removal in `dir` durable.
fn sync_directory(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_pkcs11_labels_count_generations() -> anyhow::Result<()> {
        assert_eq!(next_key_label("nuage-root")?, "nuage-root-g2");
        assert_eq!(next_key_label("nuage-root-g2")?, "nuage-root-g3");
        assert_eq!(next_key_label("nuage-root-gx")?, "nuage-root-gx-g2");
        assert!(next_key_label(&"x".repeat(31)).is_err());
        Ok(())
    }
}
