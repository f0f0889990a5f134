//! Group commit for the embedded store: write operations that arrive together
//! share one redb write transaction and one durable (fsynced) commit.
//!
//! Owns the write path of [`super::EmbeddedMetaStore`]: every method that
//! writes hands this executor an *operation*, a function on a
//! `&WriteTransaction` (the same body it ran in a transaction of its own
//! before). It must never acknowledge an operation before the commit that
//! holds it is durable, and never let one operation's failure leave a trace
//! or change another's outcome.
//!
//! # How
//! A caller queues its operation (a bounded queue: a full one makes callers
//! wait for room, [`QUEUED_OPERATIONS_MAX`]) and, if no leader is running,
//! starts one on a blocking thread. The leader loops: it takes up to
//! `batch_operations_max` queued operations, applies them in arrival order in
//! one write transaction, commits it with redb's default
//! `Durability::Immediate` (the fsync), then answers each caller. Operations
//! that queue while it commits form the next batch. When the queue is empty
//! the leader stops; there is no timer anywhere, so a lone writer pays exactly
//! what it paid before (one transaction, one fsync) and never waits for
//! company. redb admits one write transaction at a time anyway, so a single
//! leader costs no parallelism.
//!
//! # Semantics: as if one after another
//! Operation *k* of a batch sees the effects of operations before it (same
//! transaction). An operation that fails (precondition failed, no such
//! bucket, conflict, shared blob gone, ...) must leave no partial write, and
//! several bodies write before they can fail (`complete_upload` removes the
//! upload before writing the version; `commit_documents` checks each
//! document as it writes). redb cannot undo part of a transaction: its
//! savepoints can only be taken in a transaction that has not opened a table
//! yet (`SavepointError::InvalidSavepoint` otherwise), i.e. only before the
//! first operation. So on a failure the leader *discards the transaction*,
//! records that operation's error as its answer, and starts over in a fresh
//! transaction with the operations that have not failed, re-running the ones
//! before it (they see the same committed state, so they reach the same
//! outcome; only a new version's random id salt differs, and no caller has
//! seen the discarded one) and then continuing after it. A batch of `n`
//! operations with `f` failures runs at most `n * (f + 1)` operation bodies
//! and still one fsync; aborting a redb transaction costs no I/O. This keeps
//! every existing transaction body unchanged instead of rewriting each into a
//! validate-then-write form whose "validate" half would have to be kept exactly
//! in step with its "write" half.
//!
//! A failed operation is answered after the commit too: its error may depend
//! on earlier operations of the batch, which are not durable before it. If
//! the commit itself fails, every operation of the batch gets that error and
//! none is acknowledged.
//!
//! Bodies must be deterministic apart from fresh identifiers, and must not
//! keep a table open past their return (the next operation opens it again).

use crate::{MetaError, MetaResult};
use redb::{Database, WriteTransaction};
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Default for the most operations one commit carries. Bounds a batch's
/// transaction size and the re-run cost of failures (see the module doc).
pub const BATCH_OPERATIONS_MAX: usize = 64;
/// The most write operations waiting for a commit; more callers wait for room.
pub const QUEUED_OPERATIONS_MAX: usize = 4096;

/// Since the store was opened: how many durable commits it made, and how
/// many write operations it answered (failed ones included) other than with
/// a commit error. `commits / operations` is the fsyncs paid per write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitStats {
    pub commits: u64,
    pub operations: u64,
}

/// An operation waiting for its batch, with its caller's answer slot.
trait Pending: Send {
    /// Runs the body in `txn`, keeping its outcome. `false`: it failed, so
    /// the transaction holds partial writes and must be discarded.
    fn apply(&mut self, txn: &WriteTransaction) -> bool;
    /// Answers the caller: its own outcome if the commit (when there was
    /// one) succeeded, else the commit's error.
    fn settle(self: Box<Self>, commit: Result<(), &str>);
}

struct Operation<T, F> {
    body: F,
    outcome: Option<MetaResult<T>>,
    reply: oneshot::Sender<MetaResult<T>>,
    /// Room in the queue, given back once answered.
    _room: OwnedSemaphorePermit,
}

impl<T, F> Pending for Operation<T, F>
where
    T: Send,
    F: Fn(&WriteTransaction) -> MetaResult<T> + Send,
{
    fn apply(&mut self, txn: &WriteTransaction) -> bool {
        let outcome = (self.body)(txn);
        let applied = outcome.is_ok();
        self.outcome = Some(outcome);
        applied
    }

    fn settle(self: Box<Self>, commit: Result<(), &str>) {
        let answer = match commit {
            Err(e) => Err(MetaError::Backend(e.to_owned())),
            Ok(()) => self.outcome.unwrap_or_else(|| {
                Err(MetaError::Backend(
                    "write operation was never applied".into(),
                ))
            }),
        };
        // The caller may have gone (its request was cancelled): nothing to tell.
        let _ = self.reply.send(answer);
    }
}

struct Queue {
    waiting: VecDeque<Box<dyn Pending>>,
    leader_running: bool,
}

/// The write executor of one store.
pub(super) struct GroupCommit {
    db: Arc<Database>,
    queue: Mutex<Queue>,
    room: Arc<Semaphore>,
    batch_operations_max: usize,
    commits: AtomicU64,
    operations: AtomicU64,
    /// Held by tests to keep the leader from taking a batch, so that they
    /// can queue operations that must then share one commit.
    #[cfg(test)]
    pub(super) gate: Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data
    // (a queue, a flag) is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GroupCommit {
    /// `batch_operations_max` 1 disables batching (one commit per operation).
    pub(super) fn new(db: Arc<Database>, batch_operations_max: usize) -> Arc<Self> {
        Arc::new(Self {
            db,
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                leader_running: false,
            }),
            room: Arc::new(Semaphore::new(QUEUED_OPERATIONS_MAX)),
            batch_operations_max: batch_operations_max.max(1),
            commits: AtomicU64::new(0),
            operations: AtomicU64::new(0),
            #[cfg(test)]
            gate: Mutex::new(()),
        })
    }

    pub(super) fn stats(&self) -> CommitStats {
        CommitStats {
            commits: self.commits.load(Ordering::Relaxed),
            operations: self.operations.load(Ordering::Relaxed),
        }
    }

    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        lock(&self.queue).waiting.len()
    }

    /// Runs `body` in the next batch's transaction; returns its outcome once
    /// that transaction is durable.
    pub(super) async fn submit<T, F>(self: &Arc<Self>, body: F) -> MetaResult<T>
    where
        T: Send + 'static,
        F: Fn(&WriteTransaction) -> MetaResult<T> + Send + 'static,
    {
        let room = Arc::clone(&self.room)
            .acquire_owned()
            .await
            .map_err(|e| MetaError::Backend(e.to_string()))?;
        let (reply, answer) = oneshot::channel();
        let start_leader = {
            let mut queue = lock(&self.queue);
            queue.waiting.push_back(Box::new(Operation {
                body,
                outcome: None,
                reply,
                _room: room,
            }));
            !std::mem::replace(&mut queue.leader_running, true)
        };
        if start_leader {
            let this = Arc::clone(self);
            // Not awaited: the leader answers through the channels, and
            // serves callers that queue after this one too.
            drop(tokio::task::spawn_blocking(move || GroupCommit::lead(this)));
        }
        answer.await.unwrap_or_else(|_| {
            Err(MetaError::Backend(
                "write operation abandoned by the metadata writer".into(),
            ))
        })
    }

    /// The leader: batches until the queue is empty.
    ///
    /// It lets go of the store (its `Arc`, hence the database) before it
    /// answers the last batch, so that a caller that drops the store once
    /// answered can open the file again at once.
    fn lead(self: Arc<Self>) {
        let Some(mut batch) = self.take_batch() else {
            return;
        };
        loop {
            let commit = self.commit_batch(&mut batch);
            match self.take_batch() {
                Some(next) => {
                    settle(batch, &commit);
                    batch = next;
                }
                None => {
                    drop(self);
                    settle(batch, &commit);
                    return;
                }
            }
        }
    }

    /// The next batch, or None (and the leader flag lowered) when the queue
    /// is empty.
    fn take_batch(&self) -> Option<Vec<Box<dyn Pending>>> {
        #[cfg(test)]
        let _gate = lock(&self.gate);
        let mut queue = lock(&self.queue);
        if queue.waiting.is_empty() {
            // Under the lock: a caller queueing after this sees the flag
            // down and starts a new leader.
            queue.leader_running = false;
            return None;
        }
        let take = queue.waiting.len().min(self.batch_operations_max);
        Some(queue.waiting.drain(..take).collect())
    }

    fn commit_batch(&self, batch: &mut [Box<dyn Pending>]) -> Result<(), String> {
        // A panicking body (a bug) fails its whole batch (the transaction is
        // dropped, hence aborted) rather than the leader.
        let commit = std::panic::catch_unwind(AssertUnwindSafe(|| self.apply_and_commit(batch)))
            .unwrap_or_else(|_| Err("a write operation panicked".into()));
        let committed = commit?;
        self.commits
            .fetch_add(u64::from(committed), Ordering::Relaxed);
        self.operations
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Applies the batch in order in one transaction, starting over without
    /// each operation that fails, and commits what remains. `Ok(false)`:
    /// every operation failed, nothing to commit (their errors were decided
    /// on the last commit's state, which is durable).
    fn apply_and_commit(&self, batch: &mut [Box<dyn Pending>]) -> Result<bool, String> {
        let mut failed = vec![false; batch.len()];
        // Each pass either commits or marks one more operation failed, so
        // there are at most `batch.len() + 1` passes.
        for _ in 0..=batch.len() {
            let txn = self.db.begin_write().map_err(|e| e.to_string())?;
            let mut discarded = false;
            for (operation, failed) in batch.iter_mut().zip(failed.iter_mut()) {
                if *failed {
                    continue;
                }
                if !operation.apply(&txn) {
                    *failed = true;
                    discarded = true;
                    break;
                }
            }
            if discarded {
                txn.abort().map_err(|e| e.to_string())?;
                continue;
            }
            if failed.iter().all(|f| *f) {
                txn.abort().map_err(|e| e.to_string())?;
                return Ok(false);
            }
            return txn.commit().map(|()| true).map_err(|e| e.to_string());
        }
        Err("group commit did not converge".into())
    }
}

/// Answers every operation of a batch.
fn settle(batch: Vec<Box<dyn Pending>>, commit: &Result<(), String>) {
    let commit = commit.as_ref().copied().map_err(String::as_str);
    for operation in batch {
        operation.settle(commit);
    }
}
