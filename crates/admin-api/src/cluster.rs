//! The cluster's operations (docs/storage-nodes.md, "Operating a cluster"):
//! the storage nodes as the gateway sees them, draining one, running a
//! repair or scrub pass now, and a bucket's compliance with its residency
//! policy (the migration progress after a narrowing).
//!
//! The admin API decides nothing about placement: it resolves the tenant,
//! the bucket and its effective policy, and hands the request to the
//! server's [`ClusterAdmin`], which drives the cluster store. A server that
//! keeps its blobs on its own disk has none, and answers 409 `NotACluster`.

use crate::error::ApiError;
use crate::{AdminApi, json_response};
use bytes::Bytes;
use futures::future::BoxFuture;
use http::StatusCode;
use nuage_placement::ResidencyPolicy;
use serde_json::Value;

type ApiResult = Result<http::Response<Bytes>, ApiError>;

/// Why a cluster operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterAdminError {
    /// No node of that id in the topology (404 `NoSuchNode`).
    UnknownNode(String),
    /// Not now, or not on this gateway (409 `ClusterConflict`), with why.
    Conflict(String),
    /// Anything else (500; the detail goes to the server log).
    Internal(String),
}

/// A JSON answer, or why not.
pub type ClusterAnswer = Result<Value, ClusterAdminError>;

/// The server's cluster, as the admin API drives it. Every method answers
/// the JSON the endpoint returns.
pub trait ClusterAdmin: Send + Sync {
    /// Every node of the topology, as this gateway last polled it.
    fn nodes(&self) -> BoxFuture<'_, ClusterAnswer>;
    /// One node, with the replicas the location index still places on it
    /// (a drain is finished when none are left).
    fn node<'a>(&'a self, node: &'a str) -> BoxFuture<'a, ClusterAnswer>;
    /// Starts (`true`) or ends a drain, for every gateway; answers the node.
    fn set_draining<'a>(&'a self, node: &'a str, draining: bool) -> BoxFuture<'a, ClusterAnswer>;
    /// One repair pass, now; answers its report.
    fn repair(&self) -> BoxFuture<'_, ClusterAnswer>;
    /// One scrub pass, now; answers its report.
    fn scrub(&self) -> BoxFuture<'_, ClusterAnswer>;
    /// The bucket's blobs checked against `policy` (None: the cluster's
    /// default policy, which a bucket and tenant without one follow).
    fn compliance<'a>(
        &'a self,
        bucket: &'a str,
        policy: Option<&'a ResidencyPolicy>,
    ) -> BoxFuture<'a, ClusterAnswer>;
}

impl From<ClusterAdminError> for ApiError {
    fn from(e: ClusterAdminError) -> Self {
        match e {
            ClusterAdminError::UnknownNode(node) => ApiError::new(
                StatusCode::NOT_FOUND,
                "NoSuchNode",
                format!("the topology has no storage node `{node}`"),
            ),
            ClusterAdminError::Conflict(why) => {
                ApiError::new(StatusCode::CONFLICT, "ClusterConflict", why)
            }
            ClusterAdminError::Internal(why) => {
                ApiError::internal("cluster operation failed", &why)
            }
        }
    }
}

fn not_a_cluster() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "NotACluster",
        "this server keeps its data on its own disk ([cluster] is not configured): it has no \
         storage nodes to list, drain, repair or scrub",
    )
}

fn ok(value: &Value) -> ApiResult {
    Ok(json_response(StatusCode::OK, value))
}

impl AdminApi {
    fn cluster(&self) -> Result<&dyn ClusterAdmin, ApiError> {
        self.cluster.as_deref().ok_or_else(not_a_cluster)
    }

    pub(crate) async fn list_cluster_nodes(&self) -> ApiResult {
        ok(&self.cluster()?.nodes().await?)
    }

    pub(crate) async fn get_cluster_node(&self, node: &str) -> ApiResult {
        ok(&self.cluster()?.node(node).await?)
    }

    pub(crate) async fn drain_cluster_node(&self, node: &str, draining: bool) -> ApiResult {
        let answer = self.cluster()?.set_draining(node, draining).await?;
        tracing::info!(%node, draining, "admin: storage node drain set");
        ok(&answer)
    }

    pub(crate) async fn run_repair(&self) -> ApiResult {
        ok(&self.cluster()?.repair().await?)
    }

    pub(crate) async fn run_scrub(&self) -> ApiResult {
        ok(&self.cluster()?.scrub().await?)
    }

    /// The bucket's compliance with its effective policy now (its own, else
    /// its tenant's, else the cluster's default).
    pub(crate) async fn get_bucket_compliance(&self, tenant: &str, bucket: &str) -> ApiResult {
        let cluster = self.cluster()?;
        let (tenant_id, record, effective, source) = self.effective_policy(tenant, bucket).await?;
        let mut report = cluster.compliance(&record.name, effective.as_ref()).await?;
        if let Value::Object(fields) = &mut report {
            fields.insert("tenant".into(), Value::String(tenant_id));
            fields.insert(
                "policy".into(),
                effective
                    .as_ref()
                    .and_then(|p| serde_json::to_value(p).ok())
                    .unwrap_or(Value::Null),
            );
            fields.insert("policy_source".into(), Value::String(source.to_owned()));
        }
        ok(&report)
    }
}
