//! [`AuditLog`]: one tenant's audit log as a service.
//!
//! Appends go through a bounded queue to one writer task, which takes every
//! append waiting (up to `AUDIT_COMMIT_BATCH_MAX`), computes their tree hashes
//! from the in-memory frontier, and makes the whole batch durable with one write
//! and one fsync per file (group commit) before answering each caller with its
//! entry's index. Checkpoints are signed on demand or on an interval, never two
//! inconsistent ones: the last signed checkpoint is kept durably and a new one is
//! signed only if the tree provably extends it. Tiles, bundles and proofs are
//! served from the store. Blocking store work runs on tokio's blocking pool; all
//! methods need a tokio runtime. This module never decides what gets logged.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nuage_base::limits::{
    AUDIT_APPEND_QUEUE_MAX, AUDIT_CHECKPOINT_BYTES_MAX, AUDIT_COMMIT_BATCH_MAX,
};
use tlog_tiles::Hash;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::checkpoint::{self, CheckpointSigner, SignedCheckpoint, is_valid_origin};
use crate::proof::{ConsistencyProof, InclusionProof};
use crate::prune::{self, PruningMarker};
use crate::store::{FileStore, LogStore, NoteKind};
use crate::tree::{Frontier, StoreHashes};
use crate::{AuditError, Entry, tiles};

/// One tenant's audit log. Cheap to clone; clones share the log.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn LogStore>,
    origin: String,
    signer: Arc<dyn CheckpointSigner>,
    queue: mpsc::Sender<Pending>,
    /// Held while deciding on and signing a checkpoint, so two signings never race.
    signing: Mutex<()>,
    /// The writer task, awaited by [`AuditLog::close`].
    writer: tokio::task::JoinHandle<()>,
    /// Entry bundles ending at or below this index are no longer served.
    minimum_index: AtomicU64,
    /// Where each newly signed checkpoint is announced (to be witnessed), if
    /// anyone listens: see [`AuditLog::announce_checkpoints_to`].
    announce: std::sync::OnceLock<mpsc::Sender<SignedCheckpoint>>,
    /// Held while the stored cosignatures are read, merged and replaced.
    cosigning: Mutex<()>,
}

/// An append waiting for the group commit.
struct Pending {
    leaf: Vec<u8>,
    done: oneshot::Sender<Result<u64, AuditError>>,
}

impl AuditLog {
    /// Opens the file-backed log in `dir` (see [`FileStore`]).
    ///
    /// # Errors
    /// See [`FileStore::open`] and [`AuditLog::open`].
    pub async fn open_dir(
        dir: &Path,
        origin: &str,
        signer: Arc<dyn CheckpointSigner>,
    ) -> Result<Self, AuditError> {
        let dir = dir.to_path_buf();
        let store = blocking(move || FileStore::open(&dir)).await?;
        Self::open(Arc::new(store), origin, signer).await
    }

    /// Opens a log over `store`, named `origin` (for example
    /// `nuage.example/audit/123456789012`), signing checkpoints with `signer`.
    ///
    /// # Errors
    /// An invalid origin, or the store failing to load the tree's frontier.
    pub async fn open(
        store: Arc<dyn LogStore>,
        origin: &str,
        signer: Arc<dyn CheckpointSigner>,
    ) -> Result<Self, AuditError> {
        if !is_valid_origin(origin) {
            return Err(AuditError::InvalidOrigin(origin.to_string()));
        }
        let loader = Arc::clone(&store);
        let vkey = checkpoint::verifier_key(origin, &signer.public_key());
        let (frontier, minimum_index) = blocking(move || {
            let frontier = Frontier::load(loader.size(), loader.as_ref())?;
            // A stored marker that does not verify means the state was tampered
            // with (or the key changed): refuse to run on it.
            let minimum_index = match loader.load_note(NoteKind::Pruned)? {
                Some(note) => prune::open(&note, &vkey)?.minimum_index,
                None => 0,
            };
            Ok((frontier, minimum_index))
        })
        .await?;
        let (queue, receiver) = mpsc::channel(AUDIT_APPEND_QUEUE_MAX);
        let writer = tokio::spawn(write_batches(Arc::clone(&store), frontier, receiver));
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                origin: origin.to_string(),
                signer,
                queue,
                signing: Mutex::new(()),
                writer,
                minimum_index: AtomicU64::new(minimum_index),
                announce: std::sync::OnceLock::new(),
                cosigning: Mutex::new(()),
            }),
        })
    }

    /// Closes the log: waits for queued appends to commit and the writer to stop,
    /// then releases the store (and its directory lock).
    ///
    /// # Errors
    /// [`AuditError::InUse`] when other clones of this log are still alive (the
    /// log stays open for them).
    pub async fn close(self) -> Result<(), AuditError> {
        let shared = Arc::try_unwrap(self.shared).map_err(|_| AuditError::InUse)?;
        let Shared {
            store,
            queue,
            writer,
            ..
        } = shared;
        // Dropping the last sender ends the writer once the queue is drained.
        drop(queue);
        writer
            .await
            .map_err(|e| AuditError::Failed(format!("writer task: {e}")))?;
        drop(store);
        Ok(())
    }

    /// Handles to this log alive now (this one included): a registry closes a
    /// log only when it holds the last one.
    #[must_use]
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.shared)
    }

    /// The log's origin (checkpoint first line and key name).
    #[must_use]
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// The verifier key tenants check checkpoints with.
    #[must_use]
    pub fn verifier_key(&self) -> String {
        checkpoint::verifier_key(&self.shared.origin, &self.shared.signer.public_key())
    }

    /// Entries durably in the log.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.shared.store.size()
    }

    /// Appends `entry`, returning its index once it is durable.
    ///
    /// Waits while `AUDIT_APPEND_QUEUE_MAX` appends are already queued.
    ///
    /// # Errors
    /// An entry too large, the log closed, or the commit failing (after which
    /// the log refuses every append until reopened).
    pub async fn append(&self, entry: &Entry) -> Result<u64, AuditError> {
        self.append_leaf(entry.to_leaf()?).await
    }

    /// Appends canonical entry bytes (see [`Entry::to_leaf`]).
    ///
    /// # Errors
    /// As [`AuditLog::append`].
    pub async fn append_leaf(&self, leaf: Vec<u8>) -> Result<u64, AuditError> {
        if leaf.len() > nuage_base::limits::AUDIT_ENTRY_BYTES_MAX {
            return Err(AuditError::EntryTooLarge {
                bytes: leaf.len(),
                max: nuage_base::limits::AUDIT_ENTRY_BYTES_MAX,
            });
        }
        let (done, result) = oneshot::channel();
        self.shared
            .queue
            .send(Pending { leaf, done })
            .await
            .map_err(|_| AuditError::Closed)?;
        result.await.map_err(|_| AuditError::Closed)?
    }

    /// Signs a checkpoint of the current tree, or returns the last one if the
    /// tree has not grown.
    ///
    /// Refuses ([`AuditError::SigningWouldRollBack`], [`AuditError::SigningWouldFork`])
    /// when the tree does not extend the last signed checkpoint: the store lost
    /// or changed entries, and signing would publish two inconsistent views.
    /// The new checkpoint is stored durably before it is returned.
    ///
    /// # Errors
    /// The refusals above, storage errors, or the signer failing.
    pub async fn sign_checkpoint(&self) -> Result<SignedCheckpoint, AuditError> {
        let _signing = self.shared.signing.lock().await;
        let shared = Arc::clone(&self.shared);
        let (signed, new) = blocking(move || {
            let store = shared.store.as_ref();
            let size = store.size();
            let reader = StoreHashes::new(store);
            let root = reader.finish(tlog_tiles::tree_hash(size, &reader))?;
            let vkey = checkpoint::verifier_key(&shared.origin, &shared.signer.public_key());
            if let Some(note) = store.load_note(NoteKind::Checkpoint)? {
                let last = checkpoint::open(&note, &vkey)?;
                if size < last.size {
                    return Err(AuditError::SigningWouldRollBack {
                        signed_size: last.size,
                        size,
                    });
                }
                let fork = AuditError::SigningWouldFork {
                    signed_size: last.size,
                    size,
                };
                if size == last.size {
                    return if root == last.root {
                        Ok((last, false))
                    } else {
                        Err(fork)
                    };
                }
                if last.size > 0 {
                    let proof = reader.finish(tlog_tiles::prove_tree(size, last.size, &reader))?;
                    if tlog_tiles::check_tree(&proof, size, root, last.size, last.root).is_err() {
                        return Err(fork);
                    }
                }
            }
            let signed = checkpoint::sign(&shared.origin, size, root, shared.signer.as_ref())?;
            if signed.note.len() > AUDIT_CHECKPOINT_BYTES_MAX {
                return Err(AuditError::Signing("checkpoint too large".into()));
            }
            // Durable before anyone sees it: the next signing checks against it.
            store.store_note(NoteKind::Checkpoint, &signed.note)?;
            Ok((signed, true))
        })
        .await?;
        if new && let Some(announce) = self.shared.announce.get() {
            // Never waits: a full queue drops this notice, and the next
            // checkpoint (which extends this one) is announced in its place.
            if announce.try_send(signed.clone()).is_err() {
                tracing::debug!(
                    origin = self.shared.origin,
                    size = signed.size,
                    "checkpoint not announced: the queue is full or closed"
                );
            }
        }
        Ok(signed)
    }

    /// Announces every checkpoint this log signs from now on (on request, on
    /// the interval, before closing; not the last one returned again when
    /// the tree has not grown) on `announce`, without ever waiting for room.
    /// Set once: later calls are ignored.
    pub fn announce_checkpoints_to(&self, announce: mpsc::Sender<SignedCheckpoint>) {
        let _ = self.shared.announce.set(announce);
    }

    /// The stored cosigned checkpoint, if it is `signed` with at least one
    /// cosignature: `signed.note` followed by the witnesses' lines.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn cosigned(&self, signed: &SignedCheckpoint) -> Result<Option<Vec<u8>>, AuditError> {
        let store = Arc::clone(&self.shared.store);
        let stored = blocking(move || store.load_note(NoteKind::Cosigned)).await?;
        Ok(stored.filter(|note| note.len() > signed.note.len() && note.starts_with(&signed.note)))
    }

    /// Keeps the (verified) cosignature `lines` of `signed` durably beside
    /// the log, merged with those already kept for the same checkpoint (one
    /// per witness), and returns the cosigned note. Lines for a checkpoint
    /// older than the one kept are not kept (the note is still returned).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn keep_cosignatures(
        &self,
        signed: &SignedCheckpoint,
        lines: &[String],
    ) -> Result<Vec<u8>, AuditError> {
        let _cosigning = self.shared.cosigning.lock().await;
        let store = Arc::clone(&self.shared.store);
        let signed = signed.clone();
        let lines = lines.to_vec();
        blocking(move || {
            let stored = store.load_note(NoteKind::Cosigned)?;
            let base = match stored {
                Some(note) if note.starts_with(&signed.note) => note,
                Some(note) if note_size(&note).is_some_and(|size| size > signed.size) => {
                    return Ok(crate::witness::merge_cosignatures(&signed.note, &lines));
                }
                _ => signed.note.clone(),
            };
            let merged = crate::witness::merge_cosignatures(&base, &lines);
            if merged.len() > base.len() && merged.len() <= AUDIT_CHECKPOINT_BYTES_MAX {
                store.store_note(NoteKind::Cosigned, &merged)?;
            }
            Ok(merged)
        })
        .await
    }

    /// The last signed checkpoint (the bytes served at `<prefix>/checkpoint`).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn latest_checkpoint(&self) -> Result<Option<Vec<u8>>, AuditError> {
        let store = Arc::clone(&self.shared.store);
        blocking(move || store.load_note(NoteKind::Checkpoint)).await
    }

    /// Signs a checkpoint every `interval` while the log has grown since the last
    /// one. Errors are logged, not fatal: the next tick tries again. The task
    /// holds the log weakly, so it ends by itself once the log is closed or
    /// dropped (or when the returned handle is aborted).
    #[must_use]
    pub fn spawn_checkpointer(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut signed_size = None;
            loop {
                ticker.tick().await;
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                let log = AuditLog { shared };
                if signed_size == Some(log.size()) {
                    continue;
                }
                match log.sign_checkpoint().await {
                    Ok(signed) => signed_size = Some(signed.size),
                    Err(error) => {
                        tracing::error!(origin = log.origin(), %error, "audit checkpoint refused");
                    }
                }
            }
        })
    }

    /// The tile or entry bundle at a C2SP tlog-tiles `path` (such as
    /// `tile/0/x001/234` or `tile/entries/005.p/17`).
    ///
    /// # Errors
    /// [`AuditError::BadTilePath`], [`AuditError::TileBeyondTree`], storage errors.
    pub async fn read_tile(&self, path: &str) -> Result<Vec<u8>, AuditError> {
        let minimum_index = self.minimum_index();
        if let tiles::TilePath::Entries { index, width } = tiles::TilePath::parse(path)?
            && index.saturating_mul(tiles::TILE_WIDTH) + u64::from(width) <= minimum_index
        {
            return Err(AuditError::Pruned {
                what: path.to_string(),
                minimum_index,
            });
        }
        let store = Arc::clone(&self.shared.store);
        let path = path.to_string();
        blocking(move || tiles::read_tile(store.as_ref(), store.size(), &path)).await
    }

    /// Entries below this index have been pruned (see [`crate::prune`]).
    #[must_use]
    pub fn minimum_index(&self) -> u64 {
        self.shared.minimum_index.load(Ordering::Acquire)
    }

    /// The last signed pruning marker, if the log was ever pruned.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn pruning_marker(&self) -> Result<Option<Vec<u8>>, AuditError> {
        let store = Arc::clone(&self.shared.store);
        blocking(move || store.load_note(NoteKind::Pruned)).await
    }

    /// Prunes whole entry bundles whose entries are all older than `before`,
    /// within the latest signed checkpoint, and returns the new minimum index.
    ///
    /// Stops at the first bundle holding an entry at or after `before` (or one
    /// that does not parse as an [`Entry`]), so nothing younger is ever pruned.
    /// The signed marker is stored durably before the log stops serving the
    /// bundles. Hash tiles stay, so every proof and root remains available.
    /// (Today the bundles' bytes stay on disk too: the log refuses to serve
    /// them; reclaiming their space is for a later store.)
    ///
    /// # Errors
    /// Storage errors, or the signer failing.
    pub async fn prune(&self, before: time::OffsetDateTime) -> Result<u64, AuditError> {
        let _signing = self.shared.signing.lock().await;
        let shared = Arc::clone(&self.shared);
        let minimum_index = blocking(move || {
            let store = shared.store.as_ref();
            let current = shared.minimum_index.load(Ordering::Acquire);
            let vkey = checkpoint::verifier_key(&shared.origin, &shared.signer.public_key());
            // Only what a checkpoint published may be pruned (C2SP: the minimum
            // index is at most the current checkpoint's size).
            let Some(note) = store.load_note(NoteKind::Checkpoint)? else {
                return Ok(current);
            };
            let published = checkpoint::open(&note, &vkey)?.size;
            let mut minimum = current;
            while minimum + tiles::TILE_WIDTH <= published {
                let entries = store.read_entries(minimum, minimum + tiles::TILE_WIDTH)?;
                let all_old = entries
                    .iter()
                    .all(|leaf| Entry::from_leaf(leaf).is_ok_and(|entry| entry.time < before));
                if !all_old {
                    break;
                }
                minimum += tiles::TILE_WIDTH;
            }
            if minimum > current {
                let PruningMarker { note, .. } =
                    prune::sign(&shared.origin, minimum, shared.signer.as_ref())?;
                store.store_note(NoteKind::Pruned, &note)?;
                shared.minimum_index.store(minimum, Ordering::Release);
                tracing::info!(origin = shared.origin, minimum, "audit log pruned");
            }
            Ok(minimum)
        })
        .await?;
        Ok(minimum_index)
    }

    /// The root hash of the tree of `size` entries.
    ///
    /// # Errors
    /// A size beyond the log, storage errors.
    pub async fn root(&self, size: u64) -> Result<Hash, AuditError> {
        let store = Arc::clone(&self.shared.store);
        blocking(move || {
            check_size(store.as_ref(), size)?;
            let reader = StoreHashes::new(store.as_ref());
            reader.finish(tlog_tiles::tree_hash(size, &reader))
        })
        .await
    }

    /// Proof that entry `index` is in the tree of `tree_size` entries.
    ///
    /// # Errors
    /// `index >= tree_size`, a size beyond the log, storage errors.
    pub async fn inclusion_proof(
        &self,
        index: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, AuditError> {
        let store = Arc::clone(&self.shared.store);
        blocking(move || {
            check_size(store.as_ref(), tree_size)?;
            if index >= tree_size {
                return Err(AuditError::OutOfRange(format!(
                    "entry {index} of a tree of {tree_size}"
                )));
            }
            let reader = StoreHashes::new(store.as_ref());
            let hashes = reader.finish(tlog_tiles::prove_record(tree_size, index, &reader))?;
            Ok(InclusionProof {
                index,
                tree_size,
                hashes,
            })
        })
        .await
    }

    /// Proof that the tree of `old_size` entries is a prefix of the tree of `new_size`.
    ///
    /// # Errors
    /// `old_size > new_size`, a size beyond the log, storage errors.
    pub async fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, AuditError> {
        let store = Arc::clone(&self.shared.store);
        blocking(move || {
            check_size(store.as_ref(), new_size)?;
            if old_size > new_size {
                return Err(AuditError::OutOfRange(format!(
                    "consistency from {old_size} to the smaller {new_size}"
                )));
            }
            let hashes = if old_size == 0 {
                Vec::new()
            } else {
                let reader = StoreHashes::new(store.as_ref());
                reader.finish(tlog_tiles::prove_tree(new_size, old_size, &reader))?
            };
            Ok(ConsistencyProof {
                old_size,
                new_size,
                hashes,
            })
        })
        .await
    }

    /// Checks the stored log against itself and its last signed checkpoint:
    /// every kept entry (checksum, then hash) against the stored leaf hashes,
    /// and the stored tree against the signed root. Returns how many entries
    /// were checked. Run it in the background now and then: it finds tampering
    /// with the server's own files before a tenant does.
    ///
    /// # Errors
    /// [`AuditError::Corrupt`] (a record failing its checksum),
    /// [`AuditError::EditedEntry`], [`AuditError::DeletedEntry`],
    /// [`AuditError::ReorderedEntry`], [`AuditError::StoreInconsistent`], or
    /// storage errors.
    pub async fn scrub(&self) -> Result<u64, AuditError> {
        let shared = Arc::clone(&self.shared);
        blocking(move || {
            let store = shared.store.as_ref();
            let size = store.size();
            let first = shared.minimum_index.load(Ordering::Acquire).min(size);
            let mut start = first;
            while start < size {
                let end = size.min((start / tiles::TILE_WIDTH + 1) * tiles::TILE_WIDTH);
                let entries: Vec<Hash> = store
                    .read_entries(start, end)?
                    .iter()
                    .map(|leaf| tlog_tiles::record_hash(leaf))
                    .collect();
                let indexes: Vec<u64> = (start..end)
                    .map(|i| tlog_tiles::stored_hash_index(0, i))
                    .collect();
                let stored = store.read_hashes(&indexes)?;
                if let Some(finding) = crate::verify::classify(start, &entries, &stored) {
                    return Err(finding);
                }
                start = end;
            }
            if let Some(note) = store.load_note(NoteKind::Checkpoint)? {
                let vkey = checkpoint::verifier_key(&shared.origin, &shared.signer.public_key());
                let signed = checkpoint::open(&note, &vkey)?;
                let inconsistent = AuditError::StoreInconsistent {
                    signed_size: signed.size,
                    size,
                };
                if size < signed.size {
                    return Err(inconsistent);
                }
                let reader = StoreHashes::new(store);
                if reader.finish(tlog_tiles::tree_hash(signed.size, &reader))? != signed.root {
                    return Err(inconsistent);
                }
            }
            Ok(size - first)
        })
        .await
    }

    /// Entries `start..end` (at most one bundle's worth), for export and tests.
    ///
    /// # Errors
    /// Out of range, storage errors.
    pub async fn read_entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, AuditError> {
        let minimum_index = self.minimum_index();
        if start < minimum_index {
            return Err(AuditError::Pruned {
                what: format!("entries {start}..{end}"),
                minimum_index,
            });
        }
        let store = Arc::clone(&self.shared.store);
        blocking(move || store.read_entries(start, end)).await
    }
}

fn check_size(store: &dyn LogStore, size: u64) -> Result<(), AuditError> {
    let have = store.size();
    if size > have {
        return Err(AuditError::OutOfRange(format!(
            "tree size {size} beyond the log's {have}"
        )));
    }
    Ok(())
}

/// Runs blocking store work on tokio's blocking pool.
/// The tree size a checkpoint note states (its second line).
fn note_size(note: &[u8]) -> Option<u64> {
    std::str::from_utf8(note).ok()?.lines().nth(1)?.parse().ok()
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AuditError> + Send + 'static,
) -> Result<T, AuditError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AuditError::Failed(format!("blocking task: {e}")))?
}

/// The writer task: group commit until every sender is gone.
async fn write_batches(
    store: Arc<dyn LogStore>,
    mut frontier: Frontier,
    mut receiver: mpsc::Receiver<Pending>,
) {
    let mut failed: Option<String> = None;
    let mut batch: Vec<Pending> = Vec::with_capacity(AUDIT_COMMIT_BATCH_MAX);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        // Everything that queued while the previous commit ran joins this one.
        while batch.len() < AUDIT_COMMIT_BATCH_MAX {
            match receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        if let Some(reason) = &failed {
            for pending in batch.drain(..) {
                let _ = pending.done.send(Err(AuditError::Failed(reason.clone())));
            }
            continue;
        }
        let first_index = store.size();
        let mut next = frontier.clone();
        let mut hashes = Vec::with_capacity(batch.len() * 2);
        let mut leaves = Vec::with_capacity(batch.len());
        let mut hashing = Ok(());
        for (k, pending) in batch.iter_mut().enumerate() {
            match next.append(
                first_index + k as u64,
                tlog_tiles::record_hash(&pending.leaf),
            ) {
                Ok(stored) => hashes.extend(stored),
                Err(error) => {
                    hashing = Err(error);
                    break;
                }
            }
            leaves.push(std::mem::take(&mut pending.leaf));
        }
        let result = match hashing {
            Ok(()) => {
                let writer = Arc::clone(&store);
                blocking(move || writer.append(&leaves, &hashes)).await
            }
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => {
                frontier = next;
                for (k, pending) in batch.drain(..).enumerate() {
                    // A caller that gave up waiting still has its entry logged.
                    let _ = pending.done.send(Ok(first_index + k as u64));
                }
            }
            Err(error) => {
                // Fail closed: after a failed commit the store's state is
                // unknown, so no later entry may be acknowledged.
                let reason = error.to_string();
                tracing::error!(%reason, "audit log commit failed; refusing further appends");
                let mut error = Some(error);
                for pending in batch.drain(..) {
                    let reply = error
                        .take()
                        .unwrap_or_else(|| AuditError::Failed(reason.clone()));
                    let _ = pending.done.send(Err(reply));
                }
                failed = Some(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests;
