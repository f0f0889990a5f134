//! Making the metadata store forget what was deleted: `nuage compact`, and
//! the same step at every start of `nuage serve` when it is owed.
//!
//! redb does not overwrite the pages a transaction frees, so a deleted
//! document (the wrapped material of a crypto-shredded KMS key, a deleted
//! tenant's key) survives in `meta.redb` until the file is rewritten
//! (`nuage_meta::embedded::EmbeddedMetaStore::rewrite`, which copies the
//! live entries into a new file and renames it over the old one). The store
//! records, in the deleting transaction, that a rewrite is owed; the server
//! performs it at start, before the store is shared, so no operator has to
//! remember it. `nuage compact` does it now, for an operator who cannot wait
//! for a restart or wants it done after a backup is restored.
//!
//! Both need `meta.redb` to themselves: the command refuses while a server
//! runs (redb's lock), and the server does it before it opens the store.
//! This module must never remove or replace `meta.redb` other than through
//! that rewrite.

use anyhow::bail;
use nuage_meta::embedded::{EmbeddedMetaStore, Rewrite};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct CompactArgs {
    /// The stopped server's data directory.
    #[arg(long)]
    data_dir: PathBuf,
}

/// Runs `nuage compact`: rewrites `DATA_DIR/meta.redb` (whether or not a
/// rewrite is owed) and says what it did.
///
/// # Errors
/// No metadata store there, a server running on it, or any I/O error (the
/// store is then left as it was).
pub fn run(args: &CompactArgs) -> anyhow::Result<()> {
    let path = args.data_dir.join("meta.redb");
    if !path.is_file() {
        bail!(
            "{} has no metadata store (meta.redb): is it a Nuage data directory?",
            args.data_dir.display()
        );
    }
    let started = Instant::now();
    let rewrite = EmbeddedMetaStore::rewrite(&path).map_err(|error| {
        anyhow::anyhow!(
            "cannot compact the metadata store {}: {error}; if `nuage serve` is running on this \
             data directory, stop it first (or restart it: it compacts at start when a document \
             was deleted)",
            path.display()
        )
    })?;
    println!("{}", summary(&path, &rewrite, started));
    Ok(())
}

/// At start, before the store is opened: rewrites it if a document was
/// deleted since its last rewrite. A failure is logged and start-up goes on
/// (the deleted material is already out of every API's reach; the rewrite is
/// still owed and is tried again at the next start, or by `nuage compact`).
pub fn forget_deleted_at_start(path: &Path) {
    let started = Instant::now();
    match EmbeddedMetaStore::forget_deleted(path) {
        Ok(None) => {}
        Ok(Some(rewrite)) => tracing::info!(
            "{} (documents deleted since the last start are gone from the file)",
            summary(path, &rewrite, started)
        ),
        Err(error) => tracing::error!(
            %error,
            "could not rewrite the metadata store to forget deleted documents; their old bytes \
             stay in {} until a later start or `nuage compact` succeeds",
            path.display()
        ),
    }
}

fn summary(path: &Path, rewrite: &Rewrite, started: Instant) -> String {
    format!(
        "rewrote {} in {} ms: {} live entries, {} -> {} bytes",
        path.display(),
        started.elapsed().as_millis(),
        rewrite.entries,
        rewrite.file_bytes_before,
        rewrite.file_bytes_after
    )
}
