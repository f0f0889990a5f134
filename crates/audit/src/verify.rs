//! Offline verification of a tenant's copy of its audit log.
//!
//! The directory layout (what a tenant's pull stores, and what [`export_dir`]
//! writes) mirrors the C2SP tlog-tiles URLs under the log's prefix:
//!
//! ```text
//! DIR/checkpoint                  the signed checkpoint to verify
//! DIR/tile/<L>/<N>[.p/<W>]        hash tiles for that checkpoint's size
//! DIR/tile/entries/<N>[.p/<W>]    entry bundles for that checkpoint's size
//! DIR/pruned                      the signed pruning marker, if the log pruned
//! DIR/trusted-checkpoint          the last checkpoint verification accepted
//!                                 (written by verify_dir on success)
//! ```
//!
//! Entry bundles that end at or below a signed pruning marker's minimum index
//! may be absent; their level-0 hash tiles then stand in for them in the tree
//! rebuild (and are authenticated by it). Any other missing bundle is an error.
//!
//! [`verify_dir`] checks, in order: the checkpoint's signature with the verifier
//! key alone; that it neither rolls back nor forks from the trusted checkpoint;
//! that the entries rebuild exactly the signed root (which proves every entry's
//! inclusion at its index, and that there are no others); that the trusted
//! checkpoint's tree is a prefix of this one. When entries do not rebuild the
//! root, level-0 hash tiles that *do* rebuild it (so are authentic) say which
//! entry was edited, deleted or moved. This module reads files only; it never
//! trusts anything in the directory that the signature does not cover.

use std::path::{Path, PathBuf};

use nuage_base::limits::{AUDIT_CHECKPOINT_BYTES_MAX, AUDIT_ENTRY_BYTES_MAX};
use tlog_tiles::{Hash, record_hash};

use crate::checkpoint::{self, SignedCheckpoint};
use crate::prune;
use crate::store::{read_small_file, write_file_atomically};
use crate::tiles::{TILE_WIDTH, TilePath, decode_bundle, decode_hash_tile};
use crate::tree::Frontier;
use crate::{AuditError, AuditLog};

/// Name of the checkpoint file in a verification directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// Name of the file holding the last checkpoint verification accepted.
pub const TRUSTED_CHECKPOINT_FILE: &str = "trusted-checkpoint";
/// Name of the pruning marker file in a verification directory.
pub const PRUNED_FILE: &str = "pruned";
/// Largest entry bundle or tile file read: 256 entries of at most
/// `AUDIT_ENTRY_BYTES_MAX` bytes and their 2-byte length prefixes (16 MiB).
const TILE_FILE_BYTES_MAX: usize = TILE_WIDTH as usize * (AUDIT_ENTRY_BYTES_MAX + 2);

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    /// The log verified.
    pub origin: String,
    /// Its size: every entry below it was checked.
    pub size: u64,
    /// Its signed root.
    pub root: Hash,
    /// The size of the trusted checkpoint it was found consistent with, if any.
    pub trusted_size: Option<u64>,
    /// Entries below this index were pruned by the log (signed marker); their
    /// hashes were checked, their contents were not available.
    pub minimum_index: u64,
}

/// Verifies the log copy in `dir` with the verifier key `vkey`.
///
/// `trusted` is a checkpoint trusted from before (for example kept elsewhere, or
/// obtained from a witness); without one, `DIR/trusted-checkpoint` is used if
/// present. On success `DIR/trusted-checkpoint` is replaced by this checkpoint,
/// so the next run detects a rollback or fork relative to it.
///
/// # Errors
/// One distinct [`AuditError`] per finding: `BadSignature`, `Rollback`, `Fork`,
/// `EditedEntry`, `DeletedEntry`, `ReorderedEntry`, `EntriesDoNotMatchCheckpoint`,
/// `TileDoesNotMatchCheckpoint`, `MissingFile`, `MalformedBundle`, ...
pub fn verify_dir(
    dir: &Path,
    vkey: &str,
    trusted: Option<&[u8]>,
) -> Result<VerifyReport, AuditError> {
    let note = read_small_file(&dir.join(CHECKPOINT_FILE), AUDIT_CHECKPOINT_BYTES_MAX)?
        .ok_or_else(|| AuditError::MissingFile(dir.join(CHECKPOINT_FILE)))?;
    let checkpoint = checkpoint::open(&note, vkey)?;
    let trusted = match trusted {
        Some(bytes) => Some(bytes.to_vec()),
        None => read_small_file(
            &dir.join(TRUSTED_CHECKPOINT_FILE),
            AUDIT_CHECKPOINT_BYTES_MAX,
        )?,
    };
    let trusted = match trusted {
        Some(bytes) => Some(checkpoint::open(&bytes, vkey)?),
        None => None,
    };
    if let Some(trusted) = &trusted {
        if checkpoint.size < trusted.size {
            return Err(AuditError::Rollback {
                trusted_size: trusted.size,
                size: checkpoint.size,
            });
        }
        if checkpoint.size == trusted.size && checkpoint.root != trusted.root {
            return Err(AuditError::Fork {
                trusted_size: trusted.size,
                size: checkpoint.size,
            });
        }
    }
    let minimum_index = match read_small_file(&dir.join(PRUNED_FILE), AUDIT_CHECKPOINT_BYTES_MAX)? {
        Some(note) => {
            let marker = prune::open(&note, vkey)?;
            if marker.minimum_index > checkpoint.size {
                return Err(AuditError::Pruning(format!(
                    "marker prunes below {}, beyond the checkpoint's size {}",
                    marker.minimum_index, checkpoint.size
                )));
            }
            marker.minimum_index
        }
        None => 0,
    };
    let trusted_size = trusted.as_ref().map(|t| t.size);
    let prefix_root = check_entries(dir, &checkpoint, trusted_size, minimum_index)?;
    if let (Some(trusted), Some(prefix_root)) = (&trusted, prefix_root)
        && prefix_root != trusted.root
    {
        return Err(AuditError::Fork {
            trusted_size: trusted.size,
            size: checkpoint.size,
        });
    }
    write_file_atomically(&dir.join(TRUSTED_CHECKPOINT_FILE), &checkpoint.note)?;
    Ok(VerifyReport {
        origin: checkpoint.origin,
        size: checkpoint.size,
        root: checkpoint.root,
        trusted_size,
        minimum_index,
    })
}

/// Rebuilds the tree from the entry bundles and compares it with the checkpoint;
/// returns the root of the first `prefix_size` entries when asked.
fn check_entries(
    dir: &Path,
    checkpoint: &SignedCheckpoint,
    prefix_size: Option<u64>,
    minimum_index: u64,
) -> Result<Option<Hash>, AuditError> {
    let size = checkpoint.size;
    let mut from_entries = Frontier::empty();
    let mut from_tiles = Frontier::empty();
    // False once a bundle's entry count is wrong: the tree no longer has the
    // checkpoint's shape, so its root cannot match.
    let mut entries_shaped = true;
    // False once a level-0 tile is missing or malformed: tiles can't authenticate.
    let mut tiles_complete = true;
    let mut first_tile_mismatch: Option<String> = None;
    let mut first_finding: Option<AuditError> = None;
    let mut prefix_root = None;
    if prefix_size == Some(0) {
        prefix_root = Some(tlog_tiles::EMPTY_HASH);
    }
    let mut leaves_done = 0u64;
    for tile_index in 0..size.div_ceil(TILE_WIDTH) {
        let start = tile_index * TILE_WIDTH;
        let width = (size - start).min(TILE_WIDTH);
        let width_u32 = u32::try_from(width).unwrap_or(u32::MAX);
        let bundle_path = TilePath::Entries {
            index: tile_index,
            width: width_u32,
        }
        .to_path();
        let hashes_path = TilePath::Hashes {
            level: 0,
            index: tile_index,
            width: width_u32,
        }
        .to_path();
        let tile_hashes = match read_tile_file(dir, &hashes_path)? {
            Some(bytes) => match decode_hash_tile(&hashes_path, &bytes) {
                Ok(hashes) if hashes.len() as u64 == width => Some(hashes),
                _ => None,
            },
            None => None,
        };
        let entry_hashes: Vec<Hash> = match read_tile_file(dir, &bundle_path)? {
            Some(bundle) => decode_bundle(&bundle_path, &bundle)?
                .iter()
                .map(|entry| record_hash(entry))
                .collect(),
            // Pruned under a signed marker: the leaf hashes stand in for the
            // entries, and the root check below authenticates them.
            None if start + width <= minimum_index => tile_hashes.clone().ok_or_else(|| {
                AuditError::Pruning(format!(
                    "{bundle_path} is pruned but its hash tile {hashes_path} is missing"
                ))
            })?,
            None => return Err(AuditError::MissingBundle { path: bundle_path }),
        };
        match &tile_hashes {
            Some(hashes) => {
                if tiles_complete {
                    for (k, hash) in hashes.iter().enumerate() {
                        from_tiles.append(start + k as u64, *hash)?;
                    }
                }
                if first_tile_mismatch.is_none() && *hashes != entry_hashes {
                    first_tile_mismatch = Some(hashes_path.clone());
                }
                if first_finding.is_none() {
                    first_finding = classify(start, &entry_hashes, hashes);
                }
            }
            None => tiles_complete = false,
        }
        if entry_hashes.len() as u64 != width {
            entries_shaped = false;
        }
        if entries_shaped {
            for hash in &entry_hashes {
                from_entries.append(leaves_done, *hash)?;
                leaves_done += 1;
                if prefix_size == Some(leaves_done) {
                    prefix_root = Some(from_entries.root(leaves_done)?);
                }
            }
        }
    }
    let entries_match = entries_shaped && from_entries.root(size)? == checkpoint.root;
    let tiles_authentic = tiles_complete && from_tiles.root(size)? == checkpoint.root;
    if entries_match {
        // The entries are right; a tile that disagrees with them was altered.
        if let Some(path) = first_tile_mismatch {
            return Err(AuditError::TileDoesNotMatchCheckpoint { path });
        }
        return Ok(prefix_root);
    }
    match (tiles_authentic, first_finding) {
        (true, Some(finding)) => Err(finding),
        _ => Err(AuditError::EntriesDoNotMatchCheckpoint),
    }
}

/// Names what happened to a run of entries starting at `start`, given the
/// authentic leaf hashes of those positions; `None` when they agree.
pub(crate) fn classify(start: u64, entries: &[Hash], authentic: &[Hash]) -> Option<AuditError> {
    let first = entries
        .iter()
        .zip(authentic)
        .position(|(e, a)| e != a)
        .or_else(|| {
            (entries.len() != authentic.len()).then(|| entries.len().min(authentic.len()))
        })?;
    let index = start + first as u64;
    // A deletion shifts every later entry up by one position.
    let later = entries.get(first..).unwrap_or(&[]);
    let shifted_authentic = authentic.get(first + 1..).unwrap_or(&[]);
    let overlap = later.len().min(shifted_authentic.len());
    let shifted = later.iter().zip(shifted_authentic).all(|(e, a)| e == a);
    if shifted && (entries.len() < authentic.len() || overlap > 0) {
        return Some(AuditError::DeletedEntry { index });
    }
    if let Some(entry) = entries.get(first)
        && let Some(belongs) = authentic.iter().position(|a| a == entry)
    {
        return Some(AuditError::ReorderedEntry {
            index,
            belongs_at: start + belongs as u64,
        });
    }
    Some(AuditError::EditedEntry { index })
}

/// Reads `DIR/<path>`, or `None` when absent.
fn read_tile_file(dir: &Path, path: &str) -> Result<Option<Vec<u8>>, AuditError> {
    read_small_file(&dir.join(path), TILE_FILE_BYTES_MAX)
}

/// Calls `visit(index, entry)` for every entry of a directory that
/// [`verify_dir`] just accepted (`report`), in order, one bundle in memory at a
/// time. Entries below the pruning mark are skipped.
///
/// # Errors
/// A bundle missing or malformed (the directory changed since it was
/// verified), or the first error `visit` returns.
pub fn for_each_entry(
    dir: &Path,
    report: &VerifyReport,
    mut visit: impl FnMut(u64, &[u8]) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    for tile_index in 0..report.size.div_ceil(TILE_WIDTH) {
        let start = tile_index * TILE_WIDTH;
        let width = (report.size - start).min(TILE_WIDTH);
        if start + width <= report.minimum_index {
            continue;
        }
        let path = TilePath::Entries {
            index: tile_index,
            width: u32::try_from(width).unwrap_or(u32::MAX),
        }
        .to_path();
        let bundle =
            read_tile_file(dir, &path)?.ok_or(AuditError::MissingBundle { path: path.clone() })?;
        for (k, entry) in decode_bundle(&path, &bundle)?.iter().enumerate() {
            visit(start + k as u64, entry)?;
        }
    }
    Ok(())
}

/// Reads hash tiles from a verification directory, for `tlog_tiles`'
/// [`tlog_tiles::TileHashReader`], which authenticates them against the root.
struct DirTiles<'a> {
    dir: &'a Path,
}

impl tlog_tiles::TileReader for DirTiles<'_> {
    fn height(&self) -> u8 {
        crate::tiles::TILE_HEIGHT
    }

    fn read_tiles(&self, tiles: &[tlog_tiles::Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        tiles
            .iter()
            .map(|tile| {
                // tlog_tiles' own paths name the height (Go's tlog layout);
                // C2SP's do not.
                let path = TilePath::Hashes {
                    level: tile.level(),
                    index: tile.level_index(),
                    width: tile.width(),
                }
                .to_path();
                match read_tile_file(self.dir, &path) {
                    Ok(Some(bytes)) => Ok(bytes),
                    _ => Err(tlog_tiles::Error::InvalidTile),
                }
            })
            .collect()
    }

    fn save_tiles(&self, _tiles: &[tlog_tiles::Tile], _data: &[Vec<u8>]) {}
}

/// Writes a verified directory as JSON lines: first
/// `{"checkpoint":"<signed note>"}`, then one line per kept entry,
/// `{"index":I,"entry":<the entry, byte for byte>,"inclusion_proof":{"index":I,"tree_size":N,"hashes":[..]}}`,
/// each proof against the checkpoint's root (checked before it is written).
/// Returns how many entries were written.
///
/// # Errors
/// Verification findings (see [`verify_dir`]), file errors.
pub fn export_json_lines(
    dir: &Path,
    vkey: &str,
    out: &mut dyn std::io::Write,
) -> Result<u64, AuditError> {
    let report = verify_dir(dir, vkey, None)?;
    let note = read_small_file(&dir.join(CHECKPOINT_FILE), AUDIT_CHECKPOINT_BYTES_MAX)?
        .ok_or_else(|| AuditError::MissingFile(dir.join(CHECKPOINT_FILE)))?;
    let header = serde_json::json!({ "checkpoint": String::from_utf8_lossy(&note) });
    let io = |e| AuditError::io("write export", e);
    writeln!(out, "{header}").map_err(io)?;
    let tiles = DirTiles { dir };
    let reader = tlog_tiles::TileHashReader::new(report.size, report.root, &tiles);
    let mut written = 0;
    for_each_entry(dir, &report, |index, entry| {
        let hashes = tlog_tiles::prove_record(report.size, index, &reader)?;
        let proof = crate::InclusionProof {
            index,
            tree_size: report.size,
            hashes,
        };
        proof.verify(entry, report.root)?;
        let proof =
            serde_json::to_string(&proof).map_err(|e| AuditError::Encoding(e.to_string()))?;
        // The entry verbatim: its exact bytes are the leaf the proof is for.
        let entry = std::str::from_utf8(entry)
            .map_err(|_| AuditError::Encoding(format!("entry {index} is not UTF-8")))?;
        writeln!(
            out,
            "{{\"index\":{index},\"entry\":{entry},\"inclusion_proof\":{proof}}}"
        )
        .map_err(io)?;
        written += 1;
        Ok(())
    })?;
    Ok(written)
}

/// Writes the log's latest signed checkpoint and every tile and entry bundle of
/// its size into `dir`, in the layout [`verify_dir`] reads. Returns the checkpoint.
///
/// # Errors
/// No checkpoint signed yet, storage or file errors.
pub async fn export_dir(log: &AuditLog, dir: &Path) -> Result<SignedCheckpoint, AuditError> {
    let note = log
        .latest_checkpoint()
        .await?
        .ok_or_else(|| AuditError::MissingFile(PathBuf::from(CHECKPOINT_FILE)))?;
    let checkpoint = checkpoint::open(&note, &log.verifier_key())?;
    let minimum_index = log.minimum_index();
    if let Some(marker) = log.pruning_marker().await? {
        write_blocking(dir.join(PRUNED_FILE), marker).await?;
    }
    for tile in TilePath::all_for_size(checkpoint.size) {
        if let TilePath::Entries { index, width } = tile
            && index * TILE_WIDTH + u64::from(width) <= minimum_index
        {
            continue;
        }
        let path = tile.to_path();
        let bytes = log.read_tile(&path).await?;
        let target = dir.join(&path);
        let parent = target.parent().unwrap_or(dir).to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&parent)
                .and_then(|()| std::fs::write(&target, &bytes))
                .map_err(|e| AuditError::io(format!("write {}", target.display()), e))
        })
        .await
        .map_err(|e| AuditError::Failed(format!("blocking task: {e}")))??;
    }
    // The checkpoint last, so a reader never sees one whose tiles are not there.
    write_blocking(dir.join(CHECKPOINT_FILE), checkpoint.note.clone()).await?;
    Ok(checkpoint)
}

/// Writes a small file atomically on the blocking pool, creating its directory.
async fn write_blocking(target: PathBuf, bytes: Vec<u8>) -> Result<(), AuditError> {
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(target.parent().unwrap_or(Path::new(".")))
            .map_err(|e| AuditError::io("create export directory", e))?;
        write_file_atomically(&target, &bytes)
    })
    .await
    .map_err(|e| AuditError::Failed(format!("blocking task: {e}")))?
}
