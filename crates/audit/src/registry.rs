//! [`AuditLogs`]: every tenant's log on one server, opened on first use.
//!
//! Tenant `T`'s log lives in `DIR/T/` (a [`crate::FileStore`]) and is named
//! `<origin prefix>T` (for example `nuage.example/audit/123456789012`). All
//! logs share one checkpoint signer: a tenant's verifier key differs from
//! another's only by its name. At most `open_logs_max` logs are open at once;
//! opening one more first closes the least recently used log that no request
//! holds, and a background task closes logs idle for `idle` and prunes entries
//! past the retention period. A log is closed only after a checkpoint of
//! everything it holds was signed, so a tenant never waits for the next
//! interval to see entries of a log that went quiet.
//!
//! Lookups, opens and closes hold one lock, so two requests never open the
//! same directory; the price is that opening a large log after a crash (its
//! recovery) delays every tenant's next lookup meanwhile.
//!
//! This module decides *where* each tenant's log is and how many are open; it
//! never decides what is logged, and never opens a directory whose name is not
//! a tenant id (so no request can reach a path outside `DIR`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nuage_base::limits::AUDIT_PRUNE_INTERVAL_S;
use tokio::sync::Mutex;

use crate::checkpoint::{self, CheckpointSigner, SignedCheckpoint};
use crate::{AuditError, AuditLog, Entry, prune};

/// Longest a close waits for the last other handle of a log to go away, in
/// milliseconds, before leaving the log open.
const CLOSE_GRACE_MS: u32 = 100;
/// Least recently used logs tried, at most, to make room for one more.
const EVICTION_ATTEMPTS_MAX: usize = 8;
/// Digits of a tenant id (an AWS account id).
const TENANT_ID_DIGITS: usize = 12;
/// Newly signed checkpoints waiting to be taken by
/// [`AuditLogs::take_checkpoint_announcements`]'s receiver: past this, a
/// notice is dropped (its log's next checkpoint extends it and is announced).
pub const CHECKPOINT_ANNOUNCEMENTS_MAX: usize = 1024;

/// How the server's logs are laid out and kept.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The directory holding one subdirectory per tenant (`DATA_DIR/audit`).
    pub dir: PathBuf,
    /// What each log's origin starts with, the tenant id following
    /// (`nuage.example/audit/`).
    pub origin_prefix: String,
    /// Interval between checkpoints of a log that grew.
    pub checkpoint_interval: Duration,
    /// Entries older than this many days are pruned.
    pub retention_days: u32,
    /// Most logs open at once.
    pub open_logs_max: usize,
    /// A log unused this long is closed.
    pub idle: Duration,
}

/// Every tenant's audit log. Cheap to clone; clones share the logs.
#[derive(Clone)]
pub struct AuditLogs {
    inner: Arc<Inner>,
}

struct Inner {
    config: RegistryConfig,
    signer: Arc<dyn CheckpointSigner>,
    /// Held while a log is looked up, opened or closed: one open per directory.
    open: Mutex<HashMap<String, OpenLog>>,
    /// Every open log announces the checkpoints it signs here.
    announce: tokio::sync::mpsc::Sender<SignedCheckpoint>,
    /// The other end, until someone takes it.
    announcements: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<SignedCheckpoint>>>,
}

struct OpenLog {
    log: AuditLog,
    last_used: Instant,
    checkpointer: tokio::task::JoinHandle<()>,
}

/// Whether `tenant` is a tenant id (twelve ASCII digits), hence a safe
/// directory name.
#[must_use]
pub fn is_tenant_id(tenant: &str) -> bool {
    tenant.len() == TENANT_ID_DIGITS && tenant.bytes().all(|b| b.is_ascii_digit())
}

impl AuditLogs {
    /// The logs under `config.dir`, signed by `signer`. Nothing is opened yet.
    ///
    /// # Errors
    /// [`AuditError::InvalidOrigin`] when the prefix cannot start an origin.
    pub fn new(
        config: RegistryConfig,
        signer: Arc<dyn CheckpointSigner>,
    ) -> Result<Self, AuditError> {
        let sample = format!("{}{}", config.origin_prefix, "0".repeat(TENANT_ID_DIGITS));
        if !checkpoint::is_valid_origin(&sample) {
            return Err(AuditError::InvalidOrigin(sample));
        }
        let (announce, announcements) = tokio::sync::mpsc::channel(CHECKPOINT_ANNOUNCEMENTS_MAX);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                signer,
                open: Mutex::new(HashMap::new()),
                announce,
                announcements: std::sync::Mutex::new(Some(announcements)),
            }),
        })
    }

    /// The checkpoints every log signs from now on (on request, on the
    /// interval, before closing), for whoever submits them to witnesses.
    /// The first call gets the receiver, later ones `None`. Nobody waits on
    /// the receiver: when it falls `CHECKPOINT_ANNOUNCEMENTS_MAX` behind,
    /// notices are dropped.
    #[must_use]
    pub fn take_checkpoint_announcements(
        &self,
    ) -> Option<tokio::sync::mpsc::Receiver<SignedCheckpoint>> {
        self.inner
            .announcements
            .lock()
            .ok()
            .and_then(|mut receiver| receiver.take())
    }

    /// The tenant whose log is named `origin`, if it is one of these logs.
    #[must_use]
    pub fn tenant_of(&self, origin: &str) -> Option<String> {
        origin
            .strip_prefix(&self.inner.config.origin_prefix)
            .filter(|tenant| is_tenant_id(tenant))
            .map(str::to_owned)
    }

    /// The origin (log name) of `tenant`'s log.
    #[must_use]
    pub fn origin(&self, tenant: &str) -> String {
        format!("{}{tenant}", self.inner.config.origin_prefix)
    }

    /// The verifier key of `tenant`'s log.
    #[must_use]
    pub fn verifier_key(&self, tenant: &str) -> String {
        checkpoint::verifier_key(&self.origin(tenant), &self.inner.signer.public_key())
    }

    /// The retention period, in days.
    #[must_use]
    pub fn retention_days(&self) -> u32 {
        self.inner.config.retention_days
    }

    /// Logs open right now.
    pub async fn open_count(&self) -> usize {
        self.inner.open.lock().await.len()
    }

    /// `tenant`'s log, opened (and created) on first use.
    ///
    /// # Errors
    /// [`AuditError::OutOfRange`] for a tenant that is not a tenant id,
    /// [`AuditError::TooManyOpenLogs`] when every open log is in use, or the
    /// log failing to open.
    pub async fn log(&self, tenant: &str) -> Result<AuditLog, AuditError> {
        if !is_tenant_id(tenant) {
            return Err(AuditError::OutOfRange(format!(
                "{:?} is not a tenant id",
                crate::request::client_text(tenant)
            )));
        }
        let mut open = self.inner.open.lock().await;
        if let Some(found) = open.get_mut(tenant) {
            found.last_used = Instant::now();
            return Ok(found.log.clone());
        }
        while open.len() >= self.inner.config.open_logs_max {
            let mut by_age: Vec<(Instant, String)> =
                open.iter().map(|(t, o)| (o.last_used, t.clone())).collect();
            by_age.sort();
            let mut closed = false;
            // Each attempt on a log in use may wait CLOSE_GRACE_MS: bounded.
            for (_, victim) in by_age.into_iter().take(EVICTION_ATTEMPTS_MAX) {
                if self.try_close(&mut open, &victim).await {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err(AuditError::TooManyOpenLogs(self.inner.config.open_logs_max));
            }
        }
        let log = AuditLog::open_dir(
            &self.inner.config.dir.join(tenant),
            &self.origin(tenant),
            Arc::clone(&self.inner.signer),
        )
        .await?;
        log.announce_checkpoints_to(self.inner.announce.clone());
        let checkpointer = log.spawn_checkpointer(self.inner.config.checkpoint_interval);
        open.insert(
            tenant.to_string(),
            OpenLog {
                log: log.clone(),
                last_used: Instant::now(),
                checkpointer,
            },
        );
        Ok(log)
    }

    /// Appends `entry` to its tenant's log; returns its index once durable.
    ///
    /// # Errors
    /// As [`AuditLogs::log`] and [`AuditLog::append`].
    pub async fn append(&self, entry: &Entry) -> Result<u64, AuditError> {
        self.log(&entry.tenant).await?.append(entry).await
    }

    /// Closes `tenant`'s log if no request holds it: signs a checkpoint of
    /// what it holds, then closes it. Returns whether it was closed.
    async fn try_close(&self, open: &mut HashMap<String, OpenLog>, tenant: &str) -> bool {
        let Some(entry) = open.get(tenant) else {
            return false;
        };
        // The checkpointer upgrades its weak handle while signing: stop it
        // first, so the count below sees request holders only.
        entry.checkpointer.abort();
        let Some(entry) = open.remove(tenant) else {
            return false;
        };
        let _ = entry.checkpointer.await;
        // An aborted signing may still be finishing on the blocking pool (it
        // holds a handle until it returns), and a request may be about to
        // drop its own: give them a short, bounded grace.
        let mut waited_ms = 0;
        while entry.log.handles() > 1 && waited_ms < CLOSE_GRACE_MS {
            tokio::time::sleep(Duration::from_millis(1)).await;
            waited_ms += 1;
        }
        if entry.log.handles() > 1 {
            // In use by a request: keep it open, with a new checkpointer.
            let checkpointer = entry
                .log
                .spawn_checkpointer(self.inner.config.checkpoint_interval);
            open.insert(
                tenant.to_string(),
                OpenLog {
                    checkpointer,
                    ..entry
                },
            );
            return false;
        }
        if let Err(error) = entry.log.sign_checkpoint().await {
            tracing::error!(tenant, %error, "audit checkpoint before closing refused");
        }
        match entry.log.close().await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(tenant, %error, "closing an audit log failed");
                true
            }
        }
    }

    /// Closes every log unused for the idle period (and not held by a
    /// request). Returns how many were closed.
    pub async fn close_idle(&self) -> usize {
        let mut open = self.inner.open.lock().await;
        let idle: Vec<String> = open
            .iter()
            .filter(|(_, o)| o.last_used.elapsed() >= self.inner.config.idle)
            .map(|(t, _)| t.clone())
            .collect();
        let mut closed = 0;
        for tenant in idle {
            if self.try_close(&mut open, &tenant).await {
                closed += 1;
            }
        }
        closed
    }

    /// Closes every log (at shutdown), each after a last checkpoint.
    pub async fn close_all(&self) {
        let mut open = self.inner.open.lock().await;
        let tenants: Vec<String> = open.keys().cloned().collect();
        for tenant in tenants {
            self.try_close(&mut open, &tenant).await;
        }
    }

    /// Prunes every tenant's log of whole bundles older than the retention
    /// period (see [`AuditLog::prune`]). Returns how many logs were examined.
    ///
    /// # Errors
    /// The log directory cannot be listed. A log failing to prune is logged
    /// and skipped.
    pub async fn prune_all(&self, now: time::OffsetDateTime) -> Result<usize, AuditError> {
        let cutoff = prune::retention_cutoff(now, self.inner.config.retention_days);
        let dir = self.inner.config.dir.clone();
        let tenants = tokio::task::spawn_blocking(move || list_tenants(&dir))
            .await
            .map_err(|e| AuditError::Failed(format!("blocking task: {e}")))??;
        let mut examined = 0;
        for tenant in tenants {
            examined += 1;
            let result = match self.log(&tenant).await {
                Ok(log) => log.prune(cutoff).await,
                Err(error) => Err(error),
            };
            if let Err(error) = result {
                tracing::error!(tenant, %error, "audit retention pruning failed");
            }
        }
        Ok(examined)
    }

    /// Runs [`AuditLogs::close_idle`] every quarter of the idle period and
    /// [`AuditLogs::prune_all`] every `AUDIT_PRUNE_INTERVAL_S`, until aborted.
    #[must_use]
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let logs = self.clone();
        tokio::spawn(async move {
            let sweep = (logs.inner.config.idle / 4).max(Duration::from_secs(1));
            let mut idle_ticker = tokio::time::interval(sweep);
            // The first pruning one period after start, not at start: it opens
            // every tenant's log, which a starting server need not wait for.
            let prune_period = Duration::from_secs(AUDIT_PRUNE_INTERVAL_S);
            let mut prune_ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + prune_period, prune_period);
            idle_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            prune_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = idle_ticker.tick() => {
                        let closed = logs.close_idle().await;
                        if closed > 0 {
                            tracing::debug!(closed, "closed idle audit logs");
                        }
                    }
                    _ = prune_ticker.tick() => {
                        if let Err(error) = logs.prune_all(time::OffsetDateTime::now_utc()).await {
                            tracing::error!(%error, "audit retention pruning could not run");
                        }
                    }
                }
            }
        })
    }
}

/// The tenant ids that have a log directory under `dir`.
fn list_tenants(dir: &std::path::Path) -> Result<Vec<String>, AuditError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuditError::io("list audit logs", e)),
    };
    let mut tenants = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io("list audit logs", e))?;
        if let Some(name) = entry.file_name().to_str()
            && is_tenant_id(name)
        {
            tenants.push(name.to_string());
        }
    }
    tenants.sort();
    Ok(tenants)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{Actor, ActorKind, Effect, RequestAudit, RequestFacts};

    fn config(dir: &std::path::Path, open_logs_max: usize) -> RegistryConfig {
        RegistryConfig {
            dir: dir.to_path_buf(),
            origin_prefix: "nuage.example/audit/".into(),
            checkpoint_interval: Duration::from_secs(3600),
            retention_days: 190,
            open_logs_max,
            idle: Duration::from_secs(3600),
        }
    }

    fn entry(tenant: &str) -> Entry {
        RequestAudit::new(
            tenant,
            Actor::signed(ActorKind::TenantUser, "arn", "AK"),
            "iam:ListUsers",
        )
        .decided(Effect::Allow, None, None)
        .into_entry(RequestFacts {
            time: time::OffsetDateTime::now_utc(),
            source: None,
            request_id: "r".into(),
            status: 200,
        })
    }

    fn signer() -> Arc<dyn CheckpointSigner> {
        Arc::new(ed25519_dalek::SigningKey::from_bytes(&[9; 32]))
    }

    #[tokio::test]
    async fn each_tenant_has_its_own_directory_and_origin() {
        let dir = tempfile::tempdir().unwrap();
        let logs = AuditLogs::new(config(dir.path(), 8), signer()).unwrap();
        logs.append(&entry("111111111111")).await.unwrap();
        logs.append(&entry("111111111111")).await.unwrap();
        logs.append(&entry("222222222222")).await.unwrap();
        let one = logs.log("111111111111").await.unwrap();
        assert_eq!(one.size(), 2);
        assert_eq!(one.origin(), "nuage.example/audit/111111111111");
        assert_eq!(logs.log("222222222222").await.unwrap().size(), 1);
        assert!(dir.path().join("111111111111").is_dir());
        assert!(
            logs.verifier_key("111111111111")
                .starts_with("nuage.example/audit/111111111111+")
        );
        for bad in [
            "../../etc",
            "12345678901",
            "1234567890123",
            "12345678901a",
            "",
        ] {
            assert!(logs.log(bad).await.is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn open_logs_are_bounded_and_a_closed_log_reopens_with_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let logs = AuditLogs::new(config(dir.path(), 2), signer()).unwrap();
        for tenant in ["111111111111", "222222222222", "333333333333"] {
            logs.append(&entry(tenant)).await.unwrap();
            assert!(logs.open_count().await <= 2);
        }
        // The first was closed to make room, after signing a checkpoint.
        let reopened = logs.log("111111111111").await.unwrap();
        assert_eq!(reopened.size(), 1);
        let note = reopened.latest_checkpoint().await.unwrap().unwrap();
        let signed = checkpoint::open(&note, &logs.verifier_key("111111111111")).unwrap();
        assert_eq!(signed.size, 1);
        // A log a request holds is never closed under it.
        let held = logs.log("111111111111").await.unwrap();
        let other = logs.log("222222222222").await.unwrap();
        let refused = logs.log("444444444444").await;
        assert!(
            matches!(refused, Err(AuditError::TooManyOpenLogs(2))),
            "{:?}",
            refused.err()
        );
        drop((held, other, reopened));
        logs.append(&entry("444444444444")).await.unwrap();
    }

    #[tokio::test]
    async fn idle_logs_are_closed_and_prune_all_visits_every_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), 8);
        cfg.idle = Duration::ZERO;
        let logs = AuditLogs::new(cfg, signer()).unwrap();
        logs.append(&entry("111111111111")).await.unwrap();
        logs.append(&entry("222222222222")).await.unwrap();
        assert_eq!(logs.close_idle().await, 2);
        assert_eq!(logs.open_count().await, 0);
        std::fs::create_dir_all(dir.path().join("not-a-tenant")).unwrap();
        assert_eq!(
            logs.prune_all(time::OffsetDateTime::now_utc())
                .await
                .unwrap(),
            2
        );
    }
}
