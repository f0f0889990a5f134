//! The cluster's repair lease: at most one gateway runs repair and scrub
//! passes at a time, whichever configuration says `cluster.repair = true`.
//!
//! Two repairers copying the same blob at once can delete the copy the
//! other just recorded (docs/storage-nodes.md, "Running gateways on
//! nodes"). The lease is one document in the shared metadata store
//! (namespace [`LEASE_NAMESPACE`], key [`REPAIR_LEASE_KEY`], value
//! `{"holder": gateway, "until_ms": ...}`), taken and renewed with the
//! revision read, so two gateways can never both believe they hold it: a
//! gateway takes it when it is free, expired, or already its own; the
//! holder renews it while a pass runs, and a pass whose renewal fails is
//! abandoned (a pass is crash-safe: what it had not recorded is an orphan
//! the next scrub removes, what it had not deleted stays listed for
//! deletion). Expiry compares wall clocks: gateways' clocks must agree to
//! well within [`LEASE_TTL_MIN`] (NTP).

use nuage_meta::{DocumentStore, DocumentWrite, Expect, MetaError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Where the lease lives.
pub const LEASE_NAMESPACE: &str = "cluster.leases";
pub const REPAIR_LEASE_KEY: &str = "repair";
/// Shortest lease: long enough for clock skew between gateways and a slow
/// metadata store to never let two holders overlap.
pub const LEASE_TTL_MIN: Duration = Duration::from_secs(60);
/// Largest lease document read (a gateway id and a number).
const LEASE_BYTES_MAX: usize = 4 * 1024;

/// The stored lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    holder: String,
    until_ms: u64,
}

/// Why this gateway does not hold the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseRefused {
    /// Another gateway holds it (its id), until then.
    Held { holder: String, until_ms: u64 },
    /// Another gateway took it between our read and our write.
    Lost,
    /// The metadata store failed, or the document is damaged.
    Failed(String),
}

impl std::fmt::Display for LeaseRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Held { holder, until_ms } => write!(
                f,
                "gateway {holder} holds the cluster's repair lease (until {}); passes run there",
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(*until_ms) * 1_000_000)
                    .ok()
                    .and_then(|t| t
                        .format(&time::format_description::well_known::Rfc3339)
                        .ok())
                    .unwrap_or_else(|| format!("{until_ms} ms"))
            ),
            Self::Lost => write!(f, "another gateway took the cluster's repair lease"),
            Self::Failed(why) => write!(f, "the repair lease cannot be read or written: {why}"),
        }
    }
}

/// One gateway's handle on the lease.
pub struct RepairLease {
    docs: Arc<dyn DocumentStore>,
    gateway: String,
    ttl: Duration,
}

impl RepairLease {
    /// A lease of `ttl` (at least [`LEASE_TTL_MIN`]) for `gateway`.
    pub fn new(docs: Arc<dyn DocumentStore>, gateway: String, ttl: Duration) -> Self {
        Self {
            docs,
            gateway,
            ttl: ttl.max(LEASE_TTL_MIN),
        }
    }

    /// How long a lease taken or renewed now runs.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often a holder renews while a pass runs.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Takes or renews the lease at `now_ms` (milliseconds since the Unix
    /// epoch): Ok when this gateway holds it until `now_ms + ttl`.
    ///
    /// # Errors
    /// [`LeaseRefused`]: held by another gateway and not expired, taken
    /// meanwhile, or a store failure.
    pub async fn take(&self, now_ms: u64) -> Result<(), LeaseRefused> {
        let current = self
            .docs
            .get_document(LEASE_NAMESPACE, REPAIR_LEASE_KEY)
            .await
            .map_err(|e| LeaseRefused::Failed(e.to_string()))?;
        let expect = match &current {
            None => Expect::Absent,
            Some(doc) => {
                if doc.value.len() > LEASE_BYTES_MAX {
                    return Err(LeaseRefused::Failed(format!(
                        "the lease document is {} bytes",
                        doc.value.len()
                    )));
                }
                let lease: Lease = serde_json::from_slice(&doc.value)
                    .map_err(|e| LeaseRefused::Failed(format!("the lease document: {e}")))?;
                if lease.holder != self.gateway && lease.until_ms > now_ms {
                    return Err(LeaseRefused::Held {
                        holder: lease.holder,
                        until_ms: lease.until_ms,
                    });
                }
                Expect::Revision(doc.revision)
            }
        };
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let lease = Lease {
            holder: self.gateway.clone(),
            until_ms: now_ms.saturating_add(ttl_ms),
        };
        let value = serde_json::to_vec(&lease).map_err(|e| LeaseRefused::Failed(e.to_string()))?;
        match self
            .docs
            .commit_documents(vec![DocumentWrite {
                namespace: LEASE_NAMESPACE.to_owned(),
                key: REPAIR_LEASE_KEY.to_owned(),
                expect,
                value: Some(value),
            }])
            .await
        {
            Ok(()) => Ok(()),
            Err(MetaError::PreconditionFailed) => Err(LeaseRefused::Lost),
            Err(e) => Err(LeaseRefused::Failed(e.to_string())),
        }
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn store() -> (Arc<dyn DocumentStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let meta =
            nuage_meta::embedded::EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap();
        (Arc::new(meta), dir)
    }

    #[tokio::test]
    async fn one_gateway_holds_the_lease_until_it_expires() {
        let (docs, _dir) = store();
        let ttl = LEASE_TTL_MIN;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap();
        let a = RepairLease::new(Arc::clone(&docs), "gw-1".into(), ttl);
        let b = RepairLease::new(Arc::clone(&docs), "gw-2".into(), ttl);
        let t0 = 1_000_000;
        a.take(t0).await.unwrap();
        // B is refused while A's lease runs, and told who holds it.
        let refused = b.take(t0 + 1).await.unwrap_err();
        assert_eq!(
            refused,
            LeaseRefused::Held {
                holder: "gw-1".into(),
                until_ms: t0 + ttl_ms
            }
        );
        assert!(refused.to_string().contains("gw-1"), "{refused}");
        // A renews: the lease runs from the renewal.
        a.take(t0 + ttl_ms - 1).await.unwrap();
        assert!(
            b.take(t0 + ttl_ms + 1).await.is_err(),
            "renewed, not expired"
        );
        // Expired: B takes it, and A is refused in turn.
        b.take(t0 + 3 * ttl_ms).await.unwrap();
        assert!(matches!(
            a.take(t0 + 3 * ttl_ms + 1).await,
            Err(LeaseRefused::Held { holder, .. }) if holder == "gw-2"
        ));
    }

    #[tokio::test]
    async fn only_one_of_two_racing_takers_wins() {
        let (docs, _dir) = store();
        let a = RepairLease::new(Arc::clone(&docs), "gw-1".into(), LEASE_TTL_MIN);
        let b = RepairLease::new(Arc::clone(&docs), "gw-2".into(), LEASE_TTL_MIN);
        // Both read "free" at once: exactly one create succeeds.
        let (ra, rb) = tokio::join!(a.take(5), b.take(5));
        let won = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{ra:?} {rb:?}");
        // A damaged document is a failure, never a free lease.
        docs.commit_documents(vec![DocumentWrite {
            namespace: LEASE_NAMESPACE.into(),
            key: REPAIR_LEASE_KEY.into(),
            expect: Expect::Any,
            value: Some(b"not json".to_vec()),
        }])
        .await
        .unwrap();
        assert!(matches!(a.take(10).await, Err(LeaseRefused::Failed(_))));
    }
}
