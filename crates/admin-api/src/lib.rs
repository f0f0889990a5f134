//! The operator's admin API: tenants, their users and access keys, as JSON
//! over HTTP under `/_nuage/admin/v1/`, served by the same listener as S3.
//!
//! It is a protocol front end, like `nuage-s3`: it parses a request into one
//! [`Endpoint`], checks the operator token, and calls the identity service
//! (`nuage-iam`) and, to delete a tenant, the storage service (the purge of
//! its data) and the key service (the crypto-shredding of its keys).
//! All error mapping happens in `error.rs`; the wire format lives in
//! `model.rs`, apart from the identity records; `openapi.rs` describes it.
//!
//! What it must never do:
//! - act for a caller without the operator token (compared in constant
//!   time), except to serve the OpenAPI document;
//! - read tenant data: the operator is not a tenant. There is no endpoint that
//!   returns an object or a listing of keys; the only data operation is the
//!   purge of a tenant being deleted, which deletes and never reads content;
//! - touch the metadata or blob stores directly (it goes through the services);
//! - buffer an unbounded body: requests are read up to
//!   [`limits::ADMIN_REQUEST_BODY_BYTES_MAX`].

mod audit;
mod cluster;
mod endpoint;
mod error;
mod model;
mod openapi;
mod purge;
mod residency;

pub use cluster::{ClusterAdmin, ClusterAdminError, ClusterAnswer};
pub use endpoint::{ADMIN_PATH_PREFIX, API_V1_PREFIX, Endpoint, is_admin_path};
pub use error::ApiError;
pub use model::*;
pub use openapi::{
    ACCESS_OPERATIONS, ACCESS_TENANT_SERVER, ADMIN_SERVER, document as openapi_document,
};
pub use residency::{
    BucketResidency, BucketResidencyView, RegionFeasibility, TenantResidencyView, Unsatisfiable,
    region_feasibility,
};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt as _;
use nuage_base::limits;
use nuage_iam::{Iam, IamError, PolicyHolder, TenantStatus};
use nuage_kms::CustomerKeys;
use nuage_storage::Storage;
use serde::Serialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq as _;

/// The inline policy `"administrator": true` attaches to a new user.
pub use nuage_iam::{ADMINISTRATOR_POLICY, ADMINISTRATOR_POLICY_NAME};

type ApiResult = Result<http::Response<Bytes>, ApiError>;

/// The admin API service. Cheap to clone.
#[derive(Clone)]
pub struct AdminApi {
    iam: Iam,
    storage: Storage,
    /// The key service, through its customer keys: deleting a tenant
    /// shreds its tenant key and KMS keys.
    keys: CustomerKeys,
    operator_token: String,
    /// The sites residency policies are checked against; None: policies
    /// are checked on their own (and against the tenant's) only.
    topology: Option<std::sync::Arc<nuage_placement::Topology>>,
    /// The storage nodes, on a gateway of a cluster (`cluster.rs`).
    cluster: Option<std::sync::Arc<dyn ClusterAdmin>>,
}

impl AdminApi {
    /// An empty `operator_token` refuses every authenticated request.
    /// `keys` must share `storage`'s document store and root of trust: a
    /// deleted tenant's keys are destroyed through it.
    #[must_use]
    pub fn new(iam: Iam, storage: Storage, keys: CustomerKeys, operator_token: String) -> Self {
        if operator_token.is_empty() {
            tracing::warn!("the operator token is empty: the admin API will refuse every request");
        }
        Self {
            iam,
            storage,
            keys,
            operator_token,
            topology: None,
            cluster: None,
        }
    }

    /// Checks residency policies against `topology` (the server's).
    #[must_use]
    pub fn with_topology(mut self, topology: std::sync::Arc<nuage_placement::Topology>) -> Self {
        self.topology = Some(topology);
        self
    }

    /// Serves the cluster endpoints through `cluster` (a gateway of a cluster).
    #[must_use]
    pub fn with_cluster(mut self, cluster: std::sync::Arc<dyn ClusterAdmin>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Serves one request whose path [`is_admin_path`]. The body is read only
    /// after the route and the token are accepted, and only up to
    /// [`limits::ADMIN_REQUEST_BODY_BYTES_MAX`].
    pub async fn handle<B>(&self, request: http::Request<B>) -> http::Response<Bytes>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let endpoint = match self.admit(
            &parts.method,
            parts.uri.path(),
            parts.uri.query(),
            &parts.headers,
        ) {
            Ok(endpoint) => endpoint,
            Err(e) => return e.into_response(),
        };
        let limited = http_body_util::Limited::new(body, limits::ADMIN_REQUEST_BODY_BYTES_MAX);
        let body = match limited.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return body_too_large().into_response();
            }
            Err(e) => {
                return ApiError::bad_request(format!("cannot read the request body: {e}"))
                    .into_response();
            }
        };
        self.dispatch_logged(endpoint, &body).await
    }

    /// Dispatches, and attaches the audit record of an operator action on a
    /// tenant to the response (`audit.rs`).
    async fn dispatch_logged(&self, endpoint: Endpoint, body: &Bytes) -> http::Response<Bytes> {
        let audit = audit::before(&self.iam, &endpoint).await;
        let mut response = self
            .dispatch(endpoint.clone(), body)
            .await
            .unwrap_or_else(ApiError::into_response);
        audit::attach(&mut response, &endpoint, audit);
        response
    }

    /// Serves one request whose body is already in memory (tests, and
    /// callers that read it themselves).
    pub async fn handle_parts(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> http::Response<Bytes> {
        let result = match self.admit(method, path, query, headers) {
            Ok(_) if body.len() > limits::ADMIN_REQUEST_BODY_BYTES_MAX => Err(body_too_large()),
            Ok(endpoint) => return self.dispatch_logged(endpoint, body).await,
            Err(e) => Err(e),
        };
        result.unwrap_or_else(ApiError::into_response)
    }

    /// Checks the token (unless the endpoint is public), then the route. The
    /// token comes first so that a caller without it learns nothing, not
    /// even which paths exist beyond the published document.
    fn admit(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Endpoint, ApiError> {
        let public = *method == Method::GET && path == format!("{API_V1_PREFIX}openapi.json");
        if !public && !self.authorized(headers) {
            return Err(ApiError::unauthorized());
        }
        Endpoint::parse(method, path, query)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
        else {
            return false;
        };
        // `ct_eq` on slices of different lengths returns false at once; that
        // leaks only the length, which the token format makes public anyway.
        !self.operator_token.is_empty()
            && bool::from(
                presented
                    .trim()
                    .as_bytes()
                    .ct_eq(self.operator_token.as_bytes()),
            )
    }

    async fn dispatch(&self, endpoint: Endpoint, body: &Bytes) -> ApiResult {
        match endpoint {
            Endpoint::OpenApi => Ok(json_response(StatusCode::OK, &openapi::document())),
            Endpoint::ListTenants => self.list_tenants().await,
            Endpoint::CreateTenant => {
                let request: CreateTenantRequest = parse_body(body)?;
                let tenant = self
                    .iam
                    .create_tenant(
                        &request.name,
                        &request.legal_country,
                        &request.billing_contact,
                    )
                    .await?;
                tracing::info!(tenant = %tenant.id, name = %tenant.name, "admin: tenant created");
                Ok(json_response(
                    StatusCode::CREATED,
                    &TenantView::new(tenant, 0),
                ))
            }
            Endpoint::GetTenant { tenant } => {
                let tenant = self.iam.tenant(&tenant).await?;
                let buckets = self.bucket_count(&tenant.id).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &TenantView::new(tenant, buckets),
                ))
            }
            Endpoint::SuspendTenant { tenant } => {
                self.set_status(&tenant, TenantStatus::Suspended).await
            }
            Endpoint::ResumeTenant { tenant } => {
                self.set_status(&tenant, TenantStatus::Active).await
            }
            Endpoint::GetTenantPublicAccessBlock { tenant } => {
                let tenant = self.iam.tenant(&tenant).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &PublicAccessBlockView::from(tenant.public_access_block),
                ))
            }
            Endpoint::PutTenantPublicAccessBlock { tenant } => {
                let request = parse_public_access_block(body)?;
                let tenant = self
                    .iam
                    .set_tenant_public_access_block(&tenant, request.into())
                    .await?;
                tracing::info!(
                    tenant = %tenant.id,
                    block_public_policy = request.block_public_policy,
                    restrict_public_buckets = request.restrict_public_buckets,
                    "admin: tenant Block Public Access set"
                );
                Ok(json_response(
                    StatusCode::OK,
                    &PublicAccessBlockView::from(tenant.public_access_block),
                ))
            }
            Endpoint::DeleteTenant { tenant, purge } => self.delete_tenant(&tenant, purge).await,
            Endpoint::GetTenantResidency { tenant } => self.get_tenant_residency(&tenant).await,
            Endpoint::PutTenantResidency { tenant } => {
                self.put_tenant_residency(&tenant, Some(body)).await
            }
            Endpoint::DeleteTenantResidency { tenant } => {
                self.put_tenant_residency(&tenant, None).await
            }
            Endpoint::GetBucketResidency { tenant, bucket } => {
                self.get_bucket_residency(&tenant, &bucket).await
            }
            Endpoint::PutBucketResidency { tenant, bucket } => {
                self.put_bucket_residency(&tenant, &bucket, Some(body))
                    .await
            }
            Endpoint::DeleteBucketResidency { tenant, bucket } => {
                self.put_bucket_residency(&tenant, &bucket, None).await
            }
            Endpoint::GetBucketCompliance { tenant, bucket } => {
                self.get_bucket_compliance(&tenant, &bucket).await
            }
            Endpoint::ListClusterNodes => self.list_cluster_nodes().await,
            Endpoint::GetClusterNode { node } => self.get_cluster_node(&node).await,
            Endpoint::DrainClusterNode { node } => self.drain_cluster_node(&node, true).await,
            Endpoint::UndrainClusterNode { node } => self.drain_cluster_node(&node, false).await,
            Endpoint::RunRepair => self.run_repair().await,
            Endpoint::RunScrub => self.run_scrub().await,
            Endpoint::ListUsers { tenant } => {
                let tenant = self.iam.tenant(&tenant).await?;
                let users = self
                    .iam
                    .list_users(&tenant.id, "/")
                    .await?
                    .into_iter()
                    .map(UserView::from)
                    .collect();
                Ok(json_response(StatusCode::OK, &UserList { users }))
            }
            Endpoint::CreateUser { tenant } => {
                let request: CreateUserRequest = parse_body(body)?;
                self.create_user(&tenant, request).await
            }
            Endpoint::GetUser { tenant, user } => {
                let tenant = self.iam.tenant(&tenant).await?;
                let user = self.iam.user(&tenant.id, &user).await?;
                Ok(json_response(StatusCode::OK, &UserView::from(user)))
            }
            Endpoint::DeleteUser { tenant, user } => self.delete_user(&tenant, &user).await,
            Endpoint::ListKeys { tenant, user } => {
                let tenant = self.iam.tenant(&tenant).await?;
                let user = self.iam.user(&tenant.id, &user).await?;
                let access_keys = self
                    .iam
                    .list_access_keys(&tenant.id, &user.name)
                    .await?
                    .iter()
                    .map(AccessKeyView::from)
                    .collect();
                Ok(json_response(
                    StatusCode::OK,
                    &AccessKeyList { access_keys },
                ))
            }
            Endpoint::CreateKey { tenant, user } => {
                let tenant = self.iam.tenant(&tenant).await?;
                let user = self.iam.user(&tenant.id, &user).await?;
                let key = self.iam.create_access_key(&tenant.id, &user.name).await?;
                tracing::info!(tenant = %tenant.id, user = %user.name, key = %key.access_key_id, "admin: access key created");
                let created = NewAccessKey {
                    key: AccessKeyView::from(&key),
                    secret_access_key: key.secret_access_key,
                };
                Ok(json_response(StatusCode::CREATED, &created))
            }
            Endpoint::UpdateKey { tenant, user, key } => {
                let request: UpdateKeyRequest = parse_body(body)?;
                let tenant = self.iam.tenant(&tenant).await?;
                self.iam
                    .set_access_key_status(&tenant.id, &user, &key, request.status.into())
                    .await?;
                let updated = self
                    .iam
                    .list_access_keys(&tenant.id, &user)
                    .await?
                    .iter()
                    .find(|k| k.access_key_id == key)
                    .map(AccessKeyView::from)
                    .ok_or_else(|| {
                        ApiError::from(IamError::NoSuchEntity(format!(
                            "the access key with id {key} cannot be found"
                        )))
                    })?;
                tracing::info!(tenant = %tenant.id, %user, %key, status = ?request.status, "admin: access key status set");
                Ok(json_response(StatusCode::OK, &updated))
            }
            Endpoint::DeleteKey { tenant, user, key } => {
                let tenant = self.iam.tenant(&tenant).await?;
                self.iam.delete_access_key(&tenant.id, &user, &key).await?;
                tracing::info!(tenant = %tenant.id, %user, %key, "admin: access key deleted");
                Ok(no_content())
            }
        }
    }

    async fn bucket_count(&self, tenant_id: &str) -> Result<usize, ApiError> {
        Ok(self
            .storage
            .list_buckets()
            .await?
            .iter()
            .filter(|b| b.owner == tenant_id)
            .count())
    }

    async fn list_tenants(&self) -> ApiResult {
        let buckets = self.storage.list_buckets().await?;
        let tenants = self
            .iam
            .list_tenants()
            .await?
            .into_iter()
            .map(|t| {
                let count = buckets.iter().filter(|b| b.owner == t.id).count();
                TenantView::new(t, count)
            })
            .collect();
        Ok(json_response(StatusCode::OK, &TenantList { tenants }))
    }

    async fn set_status(&self, tenant: &str, status: TenantStatus) -> ApiResult {
        let tenant = self.iam.set_tenant_status(tenant, status).await?;
        tracing::info!(tenant = %tenant.id, status = ?status, "admin: tenant status set");
        let buckets = self.bucket_count(&tenant.id).await?;
        Ok(json_response(
            StatusCode::OK,
            &TenantView::new(tenant, buckets),
        ))
    }

    /// Deletes a tenant: suspends it, purges its data (with `purge`),
    /// crypto-shreds its keys, then deletes its identities. Each step runs
    /// only once the previous one is complete, and the tenant is deleted
    /// last: a failure anywhere leaves it suspended with its identities, and
    /// the same request again finishes the job (every step is idempotent).
    async fn delete_tenant(&self, tenant: &str, purge: bool) -> ApiResult {
        let tenant = self.iam.tenant(tenant).await?;
        if !purge && let buckets @ 1.. = self.bucket_count(&tenant.id).await? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "DeleteConflict",
                format!(
                    "tenant `{}` ({}) still owns {buckets} bucket(s): its users must delete them first, \
                     or delete the tenant with purge=true to delete all of its data",
                    tenant.name, tenant.id
                ),
            ));
        }
        // Suspend first: the tenant's credentials stop working, so no new
        // bucket, object or key appears behind the purge and the shredding.
        self.iam
            .set_tenant_status(&tenant.id, TenantStatus::Suspended)
            .await?;
        // Both run to the end even if the operator's client goes away
        // (dropping the request would stop them halfway, harmlessly but
        // uselessly): they run as their own task.
        let storage = self.storage.clone();
        let keys = self.keys.clone();
        let tenant_id = tenant.id.clone();
        let (purged, shredded) = tokio::spawn(async move {
            let purged = if purge {
                Some(
                    purge::purge_tenant_data(&storage, &tenant_id)
                        .await
                        .map_err(ApiError::from)?,
                )
            } else {
                None
            };
            // After the purge: the keys are what makes any surviving copy
            // of the purged blobs (a backup, a disk) undecryptable.
            let shredded = keys
                .shred_tenant(&tenant_id)
                .await
                .map_err(|e| ApiError::internal("shredding the tenant's keys failed", &e))?;
            Ok::<_, ApiError>((purged, shredded))
        })
        .await
        .map_err(|e| ApiError::internal("the tenant deletion task failed", &e))??;
        if let Some(report) = &purged {
            tracing::info!(tenant = %tenant.id, buckets = report.buckets, object_versions = report.object_versions, uploads = report.uploads, "admin: tenant data purged");
        }
        tracing::info!(
            tenant = %tenant.id,
            tenant_key = shredded.tenant_key,
            kms_keys = shredded.kms_keys,
            material_versions = shredded.material_versions,
            external_key_stores = shredded.external_key_stores,
            "admin: tenant keys crypto-shredded"
        );
        let deleted = self.iam.delete_tenant(&tenant.id).await?;
        tracing::info!(tenant = %deleted.id, name = %deleted.name, "admin: tenant deleted");
        Ok(json_response(
            StatusCode::OK,
            &TenantDeletion {
                tenant: TenantView::new(deleted, 0),
                purged,
                shredded: shredded.into(),
            },
        ))
    }

    async fn create_user(&self, tenant: &str, request: CreateUserRequest) -> ApiResult {
        let tenant = self.iam.tenant(tenant).await?;
        let user = self
            .iam
            .create_user(&tenant.id, &request.name, None, Vec::new())
            .await?;
        if request.administrator
            && let Err(e) = self
                .iam
                .put_inline_policy(
                    PolicyHolder::User,
                    &tenant.id,
                    &user.name,
                    ADMINISTRATOR_POLICY_NAME,
                    ADMINISTRATOR_POLICY,
                )
                .await
        {
            // Do not leave behind a user that looks created but lacks the
            // rights it was asked for.
            if let Err(cleanup) = self.iam.delete_user(&tenant.id, &user.name).await {
                tracing::warn!(error = %cleanup, user = %user.name, "admin: could not remove a half-created user");
            }
            return Err(e.into());
        }
        let user = self.iam.user(&tenant.id, &user.name).await?;
        tracing::info!(tenant = %tenant.id, user = %user.name, administrator = request.administrator, "admin: user created");
        Ok(json_response(StatusCode::CREATED, &UserView::from(user)))
    }

    /// The operator's delete is complete: it removes what IAM's `DeleteUser`
    /// would insist be removed first (keys, policies, group memberships).
    async fn delete_user(&self, tenant: &str, name: &str) -> ApiResult {
        let tenant = self.iam.tenant(tenant).await?;
        let user = self.iam.user(&tenant.id, name).await?;
        for key in self.iam.list_access_keys(&tenant.id, &user.name).await? {
            ignore_missing(
                self.iam
                    .delete_access_key(&tenant.id, &user.name, &key.access_key_id)
                    .await,
            )?;
        }
        for policy in user.policies.inline.keys() {
            ignore_missing(
                self.iam
                    .delete_inline_policy(PolicyHolder::User, &tenant.id, &user.name, policy)
                    .await,
            )?;
        }
        for arn in &user.policies.attached {
            ignore_missing(
                self.iam
                    .set_policy_attachment(PolicyHolder::User, &tenant.id, &user.name, arn, false)
                    .await,
            )?;
        }
        for group in &user.groups {
            ignore_missing(
                self.iam
                    .set_group_membership(&tenant.id, group, &user.name, false)
                    .await,
            )?;
        }
        self.iam.delete_user(&tenant.id, &user.name).await?;
        tracing::info!(tenant = %tenant.id, user = %user.name, "admin: user deleted");
        Ok(no_content())
    }
}

/// A dependent removed concurrently is as good as removed by us.
fn ignore_missing(result: Result<(), IamError>) -> Result<(), ApiError> {
    match result {
        Ok(()) | Err(IamError::NoSuchEntity(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestTooLarge",
        format!(
            "the request body exceeds {} bytes",
            limits::ADMIN_REQUEST_BODY_BYTES_MAX
        ),
    )
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("this request needs a JSON body"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

/// The body of `PUT /tenants/{tenant}/public-access-block`, with a message
/// that shows the expected shape: a half-understood request must not turn a
/// protection off.
fn parse_public_access_block(body: &Bytes) -> Result<PublicAccessBlockView, ApiError> {
    const SHAPE: &str = r#"the body must be {"block_public_policy": true|false, "restrict_public_buckets": true|false}"#;
    if body.is_empty() {
        return Err(ApiError::bad_request(SHAPE));
    }
    // Through `Value` first: serde would also take the struct from an array
    // (`[true, false]`), whose meaning depends on field order.
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("{SHAPE}: malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(format!("{SHAPE}, not {value}")));
    }
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("{SHAPE}: {e}")))
}

pub(crate) fn json_response<T: Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
) -> http::Response<Bytes> {
    let body = match serde_json::to_vec_pretty(value) {
        Ok(body) => body,
        Err(e) => {
            // Our own types always serialize; this is a programmer error,
            // answered rather than panicking the connection.
            tracing::error!(error = %e, "admin API: response did not serialize");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, Bytes::from_static(
                br#"{"error":{"code":"InternalError","message":"response serialization failed"}}"#,
            ));
        }
    };
    plain(status, Bytes::from(body))
}

fn plain(status: StatusCode, body: Bytes) -> http::Response<Bytes> {
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    // Responses can carry a secret (a new access key): keep them out of caches.
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

fn no_content() -> http::Response<Bytes> {
    let mut response = http::Response::new(Bytes::new());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

#[cfg(test)]
mod tests;
