//! A gateway on storage nodes (`[cluster]`, docs/storage-nodes.md "Running
//! gateways on nodes"): the replicated blob store over the topology's nodes,
//! its location index in the metadata store's documents, the node poller,
//! the repair loop, and the two places residency policies are read from.
//!
//! The policies themselves are enforced below: the storage service asks
//! [`TenantResidency`] for a tenant's policy when its bucket has none and
//! hands the effective one to `ClusterBlobStore::create_placed`, which places
//! only on compliant nodes or refuses. This module decides nothing about
//! placement; it only wires and schedules.

use super::repair_lease::{LeaseRefused, RepairLease, now_ms};
use crate::config::ClusterSettings;
use anyhow::Context as _;
use futures::future::BoxFuture;
use nuage_admin_api::{ClusterAdminError, ClusterAnswer};
use nuage_audit::{
    Actor, ActorKind, AuditLogs, Authentication, Decision, Effect, Entry, PlacedNode, ReplicaChange,
};
use nuage_cluster::{
    BlobLocation, ClusterBlobStore, ClusterConfig, PolicySource, PollerHandle, RepairLog,
    ReplicaEvent, ReplicaEventKind,
};
use nuage_iam::Iam;
use nuage_meta::{DocumentStore, MetaStore};
use nuage_node::tls::TlsMaterial;
use nuage_placement::{CountryCode, Durability, ResidencyPolicy, Topology};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

/// Replicas of a blob under the derived default policy (fewer when the
/// first region's countries have fewer nodes).
const DEFAULT_REPLICAS: u32 = 2;
/// Tenants whose policy one repair pass reads (the rest keep the policy
/// their blobs were written under until a later pass).
const REPAIR_TENANTS_MAX: usize = 10_000;

/// The cluster store and its background tasks; dropping it stops them.
pub struct Cluster {
    pub store: ClusterBlobStore,
    /// This gateway's node id, from its certificate: its audit logs are
    /// its own (`<host>/audit/<gateway>/<tenant>`), since each gateway
    /// keeps its logs on its own disk.
    pub gateway: String,
    _poller: PollerHandle,
    loops: Vec<tokio::task::JoinHandle<()>>,
    ops: Arc<ClusterOps>,
}

impl Cluster {
    /// Gives the repair and scrub passes the tenants' audit logs: until
    /// then they change nothing, since every copy and removal must be
    /// logged first.
    pub fn log_repairs_to(&self, logs: AuditLogs) {
        let _ = self.ops.audit.set(logs);
    }

    /// The cluster as the admin API drives it (`/_nuage/admin/v1/cluster/`).
    pub fn admin(&self) -> Arc<dyn nuage_admin_api::ClusterAdmin> {
        Arc::clone(&self.ops) as Arc<dyn nuage_admin_api::ClusterAdmin>
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.loops {
            task.abort();
        }
    }
}

/// What the repair and scrub passes need, shared by their loops and the
/// admin API's "run now". One pass at a time on this gateway.
struct ClusterOps {
    store: ClusterBlobStore,
    meta: Arc<dyn MetaStore>,
    iam: Iam,
    /// The tenants' audit logs (they open after the blob store).
    audit: OnceLock<AuditLogs>,
    /// Whether this gateway repairs and scrubs (`cluster.repair`).
    repairs: bool,
    orphan_grace: std::time::Duration,
    passes: tokio::sync::Mutex<()>,
    /// The cluster-wide lease a pass runs under (one repairer at a time).
    lease: RepairLease,
}

/// Why a pass did not run.
enum PassRefused {
    /// Not on this gateway, or not yet.
    Conflict(String),
    Failed(String),
}

impl ClusterOps {
    /// The audit logs, the policies now, and the pass lock.
    async fn prepare(
        &self,
    ) -> Result<(&AuditLogs, PolicySnapshot, tokio::sync::MutexGuard<'_, ()>), PassRefused> {
        if !self.repairs {
            return Err(PassRefused::Conflict(
                "this gateway does not repair or scrub (cluster.repair = false): another gateway \
                 of the cluster does; ask it"
                    .into(),
            ));
        }
        let Some(logs) = self.audit.get() else {
            return Err(PassRefused::Conflict(
                "the audit logs are not open yet; retry in a moment".into(),
            ));
        };
        let guard = self.passes.lock().await;
        self.lease.take(now_ms()).await.map_err(lease_refused)?;
        let policies = snapshot(self.meta.as_ref(), &self.iam)
            .await
            .map_err(|e| PassRefused::Failed(format!("policies unreadable: {e:#}")))?;
        Ok((logs, policies, guard))
    }

    /// Runs `pass` while renewing the lease; a pass whose lease is lost
    /// (another gateway took it, or the store failed) is abandoned.
    async fn under_lease<T>(
        &self,
        pass: impl std::future::Future<Output = Result<T, nuage_cluster::ClusterError>>,
    ) -> Result<T, PassRefused> {
        // The lease was taken (by `prepare`) at most now; it is held until
        // `held_until` by this machine's monotonic clock unless renewed. A
        // renewal that fails, or does not answer before the next one is
        // due, ends the pass while the lease still runs.
        let every = self.lease.renew_every();
        let renew = async {
            let mut held_until = tokio::time::Instant::now() + self.lease.ttl();
            loop {
                tokio::time::sleep(every).await;
                let asked = tokio::time::Instant::now();
                // Woken late (a paused process, a starved runtime): the
                // lease may be about to lapse, or have lapsed.
                if asked + every >= held_until {
                    return LeaseRefused::Failed("the lease ran too close to its end".into());
                }
                match tokio::time::timeout(every, self.lease.take(now_ms())).await {
                    Ok(Ok(())) => held_until = asked + self.lease.ttl(),
                    Ok(Err(e)) => return e,
                    Err(_) => {
                        return LeaseRefused::Failed(format!(
                            "renewing the lease took more than {} s",
                            every.as_secs()
                        ));
                    }
                }
            }
        };
        tokio::select! {
            biased;
            lost = renew => {
                tracing::warn!(why = %lost, "repair lease lost: pass abandoned");
                Err(lease_refused(lost))
            }
            done = pass => done.map_err(|e| PassRefused::Failed(e.to_string())),
        }
    }

    async fn repair_pass(&self) -> Result<nuage_cluster::RepairReport, PassRefused> {
        let (logs, policies, _guard) = self.prepare().await?;
        let log = AuditRepairLog(logs);
        self.under_lease(self.store.repair_once_logged(&policies, &log))
            .await
    }

    async fn scrub_pass(&self) -> Result<nuage_cluster::ScrubReport, PassRefused> {
        let (logs, policies, _guard) = self.prepare().await?;
        let log = AuditRepairLog(logs);
        self.under_lease(
            self.store
                .scrub_once_logged(&policies, &log, self.orphan_grace),
        )
        .await
    }

    fn node_view(&self, node: &str) -> Result<serde_json::Value, ClusterAdminError> {
        let report = self
            .store
            .node_reports()
            .into_iter()
            .find(|r| r.node == node)
            .ok_or_else(|| ClusterAdminError::UnknownNode(node.to_owned()))?;
        serde_json::to_value(report).map_err(|e| ClusterAdminError::Internal(e.to_string()))
    }

    async fn node_with_replicas(&self, node: &str) -> ClusterAnswer {
        let mut view = self.node_view(node)?;
        let replicas = self.store.replicas_on(node).await.map_err(admin_error)?;
        view["replicas"] = serde_json::json!({
            "replicas": replicas.replicas,
            "bytes": replicas.bytes,
        });
        Ok(view)
    }
}

fn lease_refused(e: LeaseRefused) -> PassRefused {
    match e {
        LeaseRefused::Failed(why) => PassRefused::Failed(why),
        other => PassRefused::Conflict(other.to_string()),
    }
}

fn admin_error(e: nuage_cluster::ClusterError) -> ClusterAdminError {
    match e {
        nuage_cluster::ClusterError::UnknownNode(node) => ClusterAdminError::UnknownNode(node),
        other => ClusterAdminError::Internal(other.to_string()),
    }
}

fn pass_answer<T: serde::Serialize>(result: Result<T, PassRefused>) -> ClusterAnswer {
    match result {
        Ok(report) => {
            serde_json::to_value(report).map_err(|e| ClusterAdminError::Internal(e.to_string()))
        }
        Err(PassRefused::Conflict(why)) => Err(ClusterAdminError::Conflict(why)),
        Err(PassRefused::Failed(why)) => Err(ClusterAdminError::Internal(why)),
    }
}

impl nuage_admin_api::ClusterAdmin for ClusterOps {
    fn nodes(&self) -> BoxFuture<'_, ClusterAnswer> {
        Box::pin(async move {
            let nodes = self.store.node_reports();
            Ok(serde_json::json!({ "nodes": nodes }))
        })
    }

    fn node<'a>(&'a self, node: &'a str) -> BoxFuture<'a, ClusterAnswer> {
        Box::pin(self.node_with_replicas(node))
    }

    fn set_draining<'a>(&'a self, node: &'a str, draining: bool) -> BoxFuture<'a, ClusterAnswer> {
        Box::pin(async move {
            self.store
                .set_node_draining(node, draining)
                .await
                .map_err(admin_error)?;
            tracing::info!(%node, draining, "storage node drain set");
            self.node_with_replicas(node).await
        })
    }

    fn repair(&self) -> BoxFuture<'_, ClusterAnswer> {
        Box::pin(async move { pass_answer(self.repair_pass().await) })
    }

    fn scrub(&self) -> BoxFuture<'_, ClusterAnswer> {
        Box::pin(async move { pass_answer(self.scrub_pass().await) })
    }

    fn compliance<'a>(
        &'a self,
        bucket: &'a str,
        policy: Option<&'a ResidencyPolicy>,
    ) -> BoxFuture<'a, ClusterAnswer> {
        Box::pin(async move {
            let policy = policy.unwrap_or_else(|| self.store.default_policy());
            let report = self
                .store
                .compliance(bucket, policy)
                .await
                .map_err(admin_error)?;
            serde_json::to_value(report).map_err(|e| ClusterAdminError::Internal(e.to_string()))
        })
    }
}

/// Builds the cluster store over `topology`'s nodes, polls them once (so
/// the first writes see the nodes that are up), and starts the poller and
/// the repair loop.
///
/// # Errors
/// Unreadable TLS material, a node endpoint the store refuses, an invalid
/// default policy, or none derivable from the first region.
pub async fn start(
    settings: &ClusterSettings,
    topology: Arc<Topology>,
    first_region: &str,
    docs: Arc<dyn DocumentStore>,
    meta: Arc<dyn MetaStore>,
    iam: Iam,
) -> anyhow::Result<Cluster> {
    let tls = TlsMaterial::load(&settings.cert, &settings.key, &settings.ca)
        .context("cannot load the [cluster] certificate, key or CA")?;
    let gateway = tls
        .identity()
        .context("the [cluster] certificate names no cluster identity")?
        .node;
    let default_policy = match &settings.default_policy {
        Some(json) => ResidencyPolicy::from_json(json)
            .context("cluster.default_policy is not a valid residency policy")?,
        None => derived_default_policy(&topology, first_region)?,
    };
    tracing::info!(
        nodes = topology.nodes().len(),
        default_policy = %default_policy.to_json(),
        "gateway on storage nodes"
    );
    let lease_docs = Arc::clone(&docs);
    let store = ClusterBlobStore::new(
        ClusterConfig::new(Arc::clone(&topology), tls, default_policy),
        docs,
    )
    .context("cannot set up the cluster blob store")?;
    for (node, why) in store.poll_nodes().await {
        tracing::warn!(%node, %why, "storage node down at start");
    }
    let poller = store.spawn_poller(settings.poll_interval);
    let ops = Arc::new(ClusterOps {
        store: store.clone(),
        meta,
        iam,
        audit: OnceLock::new(),
        repairs: settings.repair,
        orphan_grace: settings.orphan_grace,
        passes: tokio::sync::Mutex::new(()),
        lease: RepairLease::new(
            lease_docs,
            gateway.clone(),
            settings.repair_interval.saturating_mul(3),
        ),
    });
    let loops = if settings.repair {
        vec![
            tokio::spawn(repair_loop(Arc::clone(&ops), settings.repair_interval)),
            tokio::spawn(scrub_loop(Arc::clone(&ops), settings.scrub_interval)),
        ]
    } else {
        tracing::info!(
            "repair and scrub passes are left to another gateway (cluster.repair = false)"
        );
        Vec::new()
    };
    Ok(Cluster {
        store,
        gateway,
        _poller: poller,
        loops,
        ops,
    })
}

/// The policy of a blob whose bucket and tenant name none: the countries of
/// the first region's sites (a blob stays in its default region, as on a
/// single node), [`DEFAULT_REPLICAS`] replicas or as many nodes as those
/// sites hold.
fn derived_default_policy(
    topology: &Topology,
    first_region: &str,
) -> anyhow::Result<ResidencyPolicy> {
    let sites: Vec<_> = topology
        .sites()
        .values()
        .filter(|s| s.region == first_region)
        .collect();
    let countries: BTreeSet<CountryCode> = sites.iter().map(|s| s.country).collect();
    let nodes = topology
        .nodes()
        .values()
        .filter(|n| sites.iter().any(|s| s.id == n.site))
        .count();
    let replicas = DEFAULT_REPLICAS.min(u32::try_from(nodes).unwrap_or(u32::MAX));
    if replicas == 0 {
        anyhow::bail!(
            "region `{first_region}` (the first configured) has no node in topology_file: set \
             cluster.default_policy or add nodes"
        );
    }
    ResidencyPolicy::new(
        countries,
        BTreeSet::new(),
        BTreeSet::new(),
        None,
        Durability::Replicas(replicas),
        1,
    )
    .context("cannot derive a default residency policy from the first region")
}

/// The storage service's source of tenants' policies: the identity record.
pub struct TenantResidency {
    iam: Iam,
}

impl TenantResidency {
    pub fn new(iam: Iam) -> Self {
        Self { iam }
    }
}

impl nuage_storage::ResidencySource for TenantResidency {
    fn tenant_policy<'a>(
        &'a self,
        tenant: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            self.iam
                .tenant(tenant)
                .await
                .map(|t| t.residency_policy)
                .map_err(|e| e.to_string())
        })
    }
}

/// Repair's view of the policies now: each bucket's effective policy (its
/// own, else its tenant's), read before the pass. `repair_once` asks
/// synchronously, so the pass works from this snapshot; a blob whose bucket
/// is gone, or has no policy, keeps the policy it was written under.
struct PolicySnapshot {
    buckets: BTreeMap<String, ResidencyPolicy>,
}

impl PolicySource for PolicySnapshot {
    fn policy_for(&self, location: &BlobLocation) -> Option<ResidencyPolicy> {
        location
            .bucket
            .as_ref()
            .and_then(|b| self.buckets.get(b))
            .cloned()
    }
}

async fn snapshot(meta: &dyn MetaStore, iam: &Iam) -> anyhow::Result<PolicySnapshot> {
    let mut tenants: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut buckets = BTreeMap::new();
    for bucket in meta.list_buckets().await.context("cannot list buckets")? {
        let text = match bucket.residency_policy {
            Some(own) => Some(own),
            None if bucket.owner.is_empty() => None,
            None => {
                if !tenants.contains_key(&bucket.owner) {
                    if tenants.len() >= REPAIR_TENANTS_MAX {
                        continue;
                    }
                    let policy = iam
                        .tenant(&bucket.owner)
                        .await
                        .with_context(|| format!("cannot read tenant {}", bucket.owner))?
                        .residency_policy;
                    tenants.insert(bucket.owner.clone(), policy);
                }
                tenants.get(&bucket.owner).cloned().flatten()
            }
        };
        let Some(text) = text else { continue };
        match ResidencyPolicy::from_json(&text) {
            Ok(policy) => {
                buckets.insert(bucket.name, policy);
            }
            Err(e) => {
                tracing::warn!(bucket = %bucket.name, error = %e, "stored residency policy does not parse; repair keeps the recorded one");
            }
        }
    }
    Ok(PolicySnapshot { buckets })
}

/// The audit action of a repair's change to one replica.
fn repair_action(kind: ReplicaEventKind) -> &'static str {
    match kind {
        ReplicaEventKind::Repair => "nuage:RepairReplica",
        ReplicaEventKind::Migrate => "nuage:MigrateReplica",
        ReplicaEventKind::Remove => "nuage:RemoveReplica",
        ReplicaEventKind::Discard => "nuage:DiscardReplica",
    }
}

/// The id the repair service acts under in the tenants' logs.
const REPAIR_ACTOR_ID: &str = "nuage-repair";

/// The owning tenant's log entry for one replica change.
fn repair_entry(tenant: &str, event: &ReplicaEvent) -> Entry {
    let nodes = |places: &[nuage_blob::ReplicaPlace]| {
        places
            .iter()
            .map(|p| PlacedNode {
                node: p.node.clone(),
                site: p.site.clone(),
                country: p.country.clone(),
            })
            .collect()
    };
    Entry {
        v: nuage_audit::ENTRY_FORMAT_VERSION,
        time: time::OffsetDateTime::now_utc(),
        tenant: tenant.to_owned(),
        actor: Actor {
            kind: ActorKind::Service,
            id: Some(REPAIR_ACTOR_ID.to_owned()),
            auth: Authentication::None,
            access_key_id: None,
        },
        action: repair_action(event.kind).to_owned(),
        resource: event.bucket.as_ref().map(|b| format!("arn:aws:s3:::{b}")),
        source: None,
        request_id: None,
        decision: Decision {
            effect: Effect::Allow,
            policy: None,
            statement: None,
        },
        key: None,
        justification: None,
        approval: None,
        status: None,
        placement: None,
        replica: Some(ReplicaChange {
            blob: event.blob_id.clone(),
            from: nodes(&event.from),
            to: nodes(&event.to),
            reason: event.reason.clone(),
            shard: event.shard,
        }),
    }
}

/// Repairs' changes, in the owning tenants' audit logs: each entry is
/// durable before the repair goes on. A blob written without a tenant (none
/// owns it) has no log; its changes are traced only.
struct AuditRepairLog<'a>(&'a AuditLogs);

impl RepairLog for AuditRepairLog<'_> {
    fn record<'a>(
        &'a self,
        events: &'a [ReplicaEvent],
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            for event in events {
                let Some(tenant) = event
                    .tenant
                    .as_deref()
                    .filter(|t| nuage_audit::is_tenant_id(t))
                else {
                    tracing::info!(blob_id = %event.blob_id, action = repair_action(event.kind), reason = %event.reason, "repair of a blob no tenant owns");
                    continue;
                };
                self.0
                    .append(&repair_entry(tenant, event))
                    .await
                    .map_err(|e| format!("tenant {tenant}'s audit log: {e}"))?;
            }
            Ok(())
        })
    }
}

/// One repair pass every `interval`, each logged; one pass at a time (a
/// pass that outlasts the interval delays the next). No pass runs before
/// the audit logs are given ([`Cluster::log_repairs_to`]).
async fn repair_loop(ops: Arc<ClusterOps>, interval: std::time::Duration) {
    loop {
        tokio::time::sleep(interval).await;
        match ops.repair_pass().await {
            Ok(report) if report.repaired > 0 || report.failed_count > 0 => tracing::info!(
                scanned = report.scanned,
                repaired = report.repaired,
                copied = report.copied,
                removed = report.removed,
                failed = report.failed_count,
                failures = ?report.failures,
                "repair pass"
            ),
            Ok(report) => tracing::debug!(scanned = report.scanned, "repair pass: nothing to do"),
            Err(PassRefused::Conflict(why)) => tracing::debug!(%why, "repair pass waits"),
            Err(PassRefused::Failed(why)) => tracing::warn!(%why, "repair pass failed"),
        }
    }
}

/// One scrub pass every `interval` (it reads every replica on every node),
/// under the same rules as the repair loop.
async fn scrub_loop(ops: Arc<ClusterOps>, interval: std::time::Duration) {
    loop {
        tokio::time::sleep(interval).await;
        match ops.scrub_pass().await {
            Ok(report)
                if report.bad > 0 || report.orphans_removed > 0 || report.failed_count > 0 =>
            {
                tracing::warn!(
                    scanned = report.scanned,
                    verified = report.verified,
                    bad = report.bad,
                    replaced = report.replaced,
                    orphans_removed = report.orphans_removed,
                    failed = report.failed_count,
                    failures = ?report.failures,
                    "scrub pass found damage"
                );
            }
            Ok(report) => tracing::info!(
                scanned = report.scanned,
                verified = report.verified,
                bytes = report.bytes_verified,
                "scrub pass: every replica verified"
            ),
            Err(PassRefused::Conflict(why)) => tracing::debug!(%why, "scrub pass waits"),
            Err(PassRefused::Failed(why)) => tracing::warn!(%why, "scrub pass failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TOPOLOGY: &str = r#"
[[region]]
id = "fr-par"
[[region]]
id = "de-fra"
[[region]]
id = "empty"
[[site]]
id = "par1"
region = "fr-par"
country = "FR"
operator = { entity = "A", country_of_control = "FR" }
[[site]]
id = "par2"
region = "fr-par"
country = "FR"
operator = { entity = "A", country_of_control = "FR" }
[[site]]
id = "fra1"
region = "de-fra"
country = "DE"
operator = { entity = "B", country_of_control = "DE" }
[[node]]
id = "fr-1"
site = "par1"
endpoint = "https://127.0.0.1:1"
capacity_bytes = 1
[[node]]
id = "fr-2"
site = "par2"
endpoint = "https://127.0.0.1:2"
capacity_bytes = 1
[[node]]
id = "de-1"
site = "fra1"
endpoint = "https://127.0.0.1:3"
capacity_bytes = 1
"#;

    #[test]
    fn the_default_policy_keeps_blobs_in_the_first_regions_countries() {
        let topology = Topology::from_toml(TOPOLOGY).unwrap();
        let fr = derived_default_policy(&topology, "fr-par").unwrap();
        assert_eq!(
            fr.to_json(),
            ResidencyPolicy::from_json(
                r#"{"allowed_countries":["FR"],"durability":{"replicas":2},"min_sites":1}"#
            )
            .unwrap()
            .to_json()
        );
        // One node there: one replica rather than a policy never met.
        let de = derived_default_policy(&topology, "de-fra").unwrap();
        assert_eq!(de.durability, Durability::Replicas(1));
        let e = derived_default_policy(&topology, "empty").unwrap_err();
        assert!(format!("{e:#}").contains("no node"), "{e:#}");
    }
}
