//! Routing: a request's method, path and query become one [`Endpoint`], or a
//! 404/405/400 before any handler runs. Handlers never look at the raw path.

use crate::error::ApiError;
use http::{Method, StatusCode};
use percent_encoding::percent_decode_str;

/// Where the admin API is mounted on the `nuage serve` listener. Bucket names
/// cannot start with `_`, so no S3 path-style request can land here.
pub const ADMIN_PATH_PREFIX: &str = "/_nuage/admin";
/// The prefix of version 1 of the API; the paths below are relative to it.
pub const API_V1_PREFIX: &str = "/_nuage/admin/v1/";

/// Whether a request path belongs to the admin API rather than to S3.
#[must_use]
pub fn is_admin_path(path: &str) -> bool {
    path.strip_prefix(ADMIN_PATH_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Every operation of the admin API. Tenants are named by id or by name;
/// users by name; keys by access key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    OpenApi,
    ListTenants,
    CreateTenant,
    GetTenant {
        tenant: String,
    },
    SuspendTenant {
        tenant: String,
    },
    ResumeTenant {
        tenant: String,
    },
    GetTenantPublicAccessBlock {
        tenant: String,
    },
    PutTenantPublicAccessBlock {
        tenant: String,
    },
    DeleteTenant {
        tenant: String,
        purge: bool,
    },
    GetTenantResidency {
        tenant: String,
    },
    PutTenantResidency {
        tenant: String,
    },
    DeleteTenantResidency {
        tenant: String,
    },
    GetBucketResidency {
        tenant: String,
        bucket: String,
    },
    PutBucketResidency {
        tenant: String,
        bucket: String,
    },
    DeleteBucketResidency {
        tenant: String,
        bucket: String,
    },
    GetBucketCompliance {
        tenant: String,
        bucket: String,
    },
    ListClusterNodes,
    GetClusterNode {
        node: String,
    },
    DrainClusterNode {
        node: String,
    },
    UndrainClusterNode {
        node: String,
    },
    RunRepair,
    RunScrub,
    ListUsers {
        tenant: String,
    },
    CreateUser {
        tenant: String,
    },
    GetUser {
        tenant: String,
        user: String,
    },
    DeleteUser {
        tenant: String,
        user: String,
    },
    ListKeys {
        tenant: String,
        user: String,
    },
    CreateKey {
        tenant: String,
        user: String,
    },
    UpdateKey {
        tenant: String,
        user: String,
        key: String,
    },
    DeleteKey {
        tenant: String,
        user: String,
        key: String,
    },
}

impl Endpoint {
    /// Parses a request. `path` is the full request path, `query` the raw
    /// query string.
    ///
    /// # Errors
    /// 404 for a path the API does not have, 405 for a method the path does
    /// not take, 400 for an undecodable path segment or a bad query value.
    pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Self, ApiError> {
        let Some(rest) = path.strip_prefix(API_V1_PREFIX) else {
            return Err(not_found(path));
        };
        let segments = rest
            .split('/')
            .map(decode_segment)
            .collect::<Result<Vec<_>, _>>()?;
        if segments.iter().any(String::is_empty) {
            return Err(not_found(path));
        }
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let get = method == Method::GET;
        let post = method == Method::POST;
        let put = method == Method::PUT;
        let patch = method == Method::PATCH;
        let delete = method == Method::DELETE;
        let t = |s: &str| s.to_owned();
        let endpoint = match segments.as_slice() {
            ["openapi.json"] if get => Self::OpenApi,
            ["openapi.json"] => return Err(method_not_allowed(method, "GET")),
            ["tenants"] if get => Self::ListTenants,
            ["tenants"] if post => Self::CreateTenant,
            ["tenants"] => return Err(method_not_allowed(method, "GET, POST")),
            ["tenants", tenant] if get => Self::GetTenant { tenant: t(tenant) },
            ["tenants", tenant] if delete => Self::DeleteTenant {
                tenant: t(tenant),
                purge: purge_flag(query)?,
            },
            ["tenants", _] => return Err(method_not_allowed(method, "GET, DELETE")),
            ["tenants", tenant, "suspend"] if post => Self::SuspendTenant { tenant: t(tenant) },
            ["tenants", tenant, "resume"] if post => Self::ResumeTenant { tenant: t(tenant) },
            ["tenants", _, "suspend" | "resume"] => return Err(method_not_allowed(method, "POST")),
            ["tenants", tenant, "public-access-block"] if get => {
                Self::GetTenantPublicAccessBlock { tenant: t(tenant) }
            }
            ["tenants", tenant, "public-access-block"] if put => {
                Self::PutTenantPublicAccessBlock { tenant: t(tenant) }
            }
            ["tenants", _, "public-access-block"] => {
                return Err(method_not_allowed(method, "GET, PUT"));
            }
            ["tenants", tenant, "residency"] if get => {
                Self::GetTenantResidency { tenant: t(tenant) }
            }
            ["tenants", tenant, "residency"] if put => {
                Self::PutTenantResidency { tenant: t(tenant) }
            }
            ["tenants", tenant, "residency"] if delete => {
                Self::DeleteTenantResidency { tenant: t(tenant) }
            }
            ["tenants", _, "residency"] => {
                return Err(method_not_allowed(method, "GET, PUT, DELETE"));
            }
            ["tenants", tenant, "buckets", bucket, "residency"] if get => {
                Self::GetBucketResidency {
                    tenant: t(tenant),
                    bucket: t(bucket),
                }
            }
            ["tenants", tenant, "buckets", bucket, "residency"] if put => {
                Self::PutBucketResidency {
                    tenant: t(tenant),
                    bucket: t(bucket),
                }
            }
            ["tenants", tenant, "buckets", bucket, "residency"] if delete => {
                Self::DeleteBucketResidency {
                    tenant: t(tenant),
                    bucket: t(bucket),
                }
            }
            ["tenants", _, "buckets", _, "residency"] => {
                return Err(method_not_allowed(method, "GET, PUT, DELETE"));
            }
            [
                "tenants",
                tenant,
                "buckets",
                bucket,
                "residency",
                "compliance",
            ] if get => Self::GetBucketCompliance {
                tenant: t(tenant),
                bucket: t(bucket),
            },
            ["tenants", _, "buckets", _, "residency", "compliance"] => {
                return Err(method_not_allowed(method, "GET"));
            }
            ["cluster", "nodes"] if get => Self::ListClusterNodes,
            ["cluster", "nodes"] => return Err(method_not_allowed(method, "GET")),
            ["cluster", "nodes", node] if get => Self::GetClusterNode { node: t(node) },
            ["cluster", "nodes", _] => return Err(method_not_allowed(method, "GET")),
            ["cluster", "nodes", node, "drain"] if put => Self::DrainClusterNode { node: t(node) },
            ["cluster", "nodes", node, "drain"] if delete => {
                Self::UndrainClusterNode { node: t(node) }
            }
            ["cluster", "nodes", _, "drain"] => {
                return Err(method_not_allowed(method, "PUT, DELETE"));
            }
            ["cluster", "repair"] if post => Self::RunRepair,
            ["cluster", "scrub"] if post => Self::RunScrub,
            ["cluster", "repair" | "scrub"] => return Err(method_not_allowed(method, "POST")),
            ["tenants", tenant, "users"] if get => Self::ListUsers { tenant: t(tenant) },
            ["tenants", tenant, "users"] if post => Self::CreateUser { tenant: t(tenant) },
            ["tenants", _, "users"] => return Err(method_not_allowed(method, "GET, POST")),
            ["tenants", tenant, "users", user] if get => Self::GetUser {
                tenant: t(tenant),
                user: t(user),
            },
            ["tenants", tenant, "users", user] if delete => Self::DeleteUser {
                tenant: t(tenant),
                user: t(user),
            },
            ["tenants", _, "users", _] => return Err(method_not_allowed(method, "GET, DELETE")),
            ["tenants", tenant, "users", user, "keys"] if get => Self::ListKeys {
                tenant: t(tenant),
                user: t(user),
            },
            ["tenants", tenant, "users", user, "keys"] if post => Self::CreateKey {
                tenant: t(tenant),
                user: t(user),
            },
            ["tenants", _, "users", _, "keys"] => {
                return Err(method_not_allowed(method, "GET, POST"));
            }
            ["tenants", tenant, "users", user, "keys", key] if patch => Self::UpdateKey {
                tenant: t(tenant),
                user: t(user),
                key: t(key),
            },
            ["tenants", tenant, "users", user, "keys", key] if delete => Self::DeleteKey {
                tenant: t(tenant),
                user: t(user),
                key: t(key),
            },
            ["tenants", _, "users", _, "keys", _] => {
                return Err(method_not_allowed(method, "PATCH, DELETE"));
            }
            _ => return Err(not_found(path)),
        };
        Ok(endpoint)
    }

    /// The method and the `OpenAPI` path template of this operation (relative
    /// to [`API_V1_PREFIX`]); the OpenAPI document lists exactly these.
    #[must_use]
    pub fn operation(&self) -> (Method, &'static str) {
        match self {
            Self::OpenApi => (Method::GET, "/openapi.json"),
            Self::ListTenants => (Method::GET, "/tenants"),
            Self::CreateTenant => (Method::POST, "/tenants"),
            Self::GetTenant { .. } => (Method::GET, "/tenants/{tenant}"),
            Self::DeleteTenant { .. } => (Method::DELETE, "/tenants/{tenant}"),
            Self::SuspendTenant { .. } => (Method::POST, "/tenants/{tenant}/suspend"),
            Self::ResumeTenant { .. } => (Method::POST, "/tenants/{tenant}/resume"),
            Self::GetTenantPublicAccessBlock { .. } => {
                (Method::GET, "/tenants/{tenant}/public-access-block")
            }
            Self::PutTenantPublicAccessBlock { .. } => {
                (Method::PUT, "/tenants/{tenant}/public-access-block")
            }
            Self::GetTenantResidency { .. } => (Method::GET, "/tenants/{tenant}/residency"),
            Self::PutTenantResidency { .. } => (Method::PUT, "/tenants/{tenant}/residency"),
            Self::DeleteTenantResidency { .. } => (Method::DELETE, "/tenants/{tenant}/residency"),
            Self::GetBucketResidency { .. } => {
                (Method::GET, "/tenants/{tenant}/buckets/{bucket}/residency")
            }
            Self::PutBucketResidency { .. } => {
                (Method::PUT, "/tenants/{tenant}/buckets/{bucket}/residency")
            }
            Self::DeleteBucketResidency { .. } => (
                Method::DELETE,
                "/tenants/{tenant}/buckets/{bucket}/residency",
            ),
            Self::GetBucketCompliance { .. } => (
                Method::GET,
                "/tenants/{tenant}/buckets/{bucket}/residency/compliance",
            ),
            Self::ListClusterNodes => (Method::GET, "/cluster/nodes"),
            Self::GetClusterNode { .. } => (Method::GET, "/cluster/nodes/{node}"),
            Self::DrainClusterNode { .. } => (Method::PUT, "/cluster/nodes/{node}/drain"),
            Self::UndrainClusterNode { .. } => (Method::DELETE, "/cluster/nodes/{node}/drain"),
            Self::RunRepair => (Method::POST, "/cluster/repair"),
            Self::RunScrub => (Method::POST, "/cluster/scrub"),
            Self::ListUsers { .. } => (Method::GET, "/tenants/{tenant}/users"),
            Self::CreateUser { .. } => (Method::POST, "/tenants/{tenant}/users"),
            Self::GetUser { .. } => (Method::GET, "/tenants/{tenant}/users/{user}"),
            Self::DeleteUser { .. } => (Method::DELETE, "/tenants/{tenant}/users/{user}"),
            Self::ListKeys { .. } => (Method::GET, "/tenants/{tenant}/users/{user}/keys"),
            Self::CreateKey { .. } => (Method::POST, "/tenants/{tenant}/users/{user}/keys"),
            Self::UpdateKey { .. } => (
                Method::PATCH,
                "/tenants/{tenant}/users/{user}/keys/{access_key_id}",
            ),
            Self::DeleteKey { .. } => (
                Method::DELETE,
                "/tenants/{tenant}/users/{user}/keys/{access_key_id}",
            ),
        }
    }

    /// Whether the operation needs the operator token (all but the document
    /// describing the API, which holds no secret).
    #[must_use]
    pub fn requires_token(&self) -> bool {
        !matches!(self, Self::OpenApi)
    }
}

fn decode_segment(segment: &str) -> Result<String, ApiError> {
    percent_decode_str(segment)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| ApiError::bad_request("a path segment is not valid UTF-8 once decoded"))
}

/// `?purge=true` or `?purge=false`; anything else is refused rather than
/// guessed, since a misread flag would delete data or silently not.
fn purge_flag(query: Option<&str>) -> Result<bool, ApiError> {
    let mut purge = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match (name, value) {
            ("purge", "true") => purge = true,
            ("purge", "false") => purge = false,
            ("purge", other) => {
                return Err(ApiError::bad_request(format!(
                    "purge must be `true` or `false`, not `{other}`"
                )));
            }
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}` (DELETE /tenants/{{tenant}} takes only `purge`)"
                )));
            }
        }
    }
    Ok(purge)
}

fn not_found(path: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("the admin API has no endpoint at `{path}`; see {API_V1_PREFIX}openapi.json"),
    )
}

fn method_not_allowed(method: &Method, allowed: &'static str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{method} is not allowed here; allowed: {allowed}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, path: &str) -> Result<Endpoint, ApiError> {
        let (path, query) = path
            .split_once('?')
            .map_or((path, None), |(p, q)| (p, Some(q)));
        Endpoint::parse(&method, path, query)
    }

    #[test]
    fn admin_paths_are_told_apart_from_s3_paths() {
        assert!(is_admin_path("/_nuage/admin/v1/tenants"));
        assert!(is_admin_path("/_nuage/admin"));
        assert!(!is_admin_path("/_nuage/administrator"));
        assert!(!is_admin_path("/bucket/_nuage/admin/v1/tenants"));
        assert!(!is_admin_path("/"));
    }

    #[test]
    fn routes_parse_with_their_parameters() {
        assert_eq!(
            parse(Method::DELETE, "/_nuage/admin/v1/tenants/acme?purge=true").ok(),
            Some(Endpoint::DeleteTenant {
                tenant: "acme".into(),
                purge: true
            })
        );
        assert_eq!(
            parse(
                Method::PATCH,
                "/_nuage/admin/v1/tenants/acme/users/a%40b/keys/NUAKX"
            )
            .ok(),
            Some(Endpoint::UpdateKey {
                tenant: "acme".into(),
                user: "a@b".into(),
                key: "NUAKX".into()
            })
        );
    }

    #[test]
    fn unknown_paths_methods_and_flags_are_refused() {
        let status = |m, p| parse(m, p).err().map(|e| e.status.as_u16());
        assert_eq!(status(Method::GET, "/_nuage/admin/v1/buckets"), Some(404));
        assert_eq!(status(Method::GET, "/_nuage/admin/v1/tenants/"), Some(404));
        assert_eq!(status(Method::GET, "/_nuage/admin/v2/tenants"), Some(404));
        assert_eq!(status(Method::PUT, "/_nuage/admin/v1/tenants"), Some(405));
        assert_eq!(
            status(Method::GET, "/_nuage/admin/v1/tenants/acme/suspend"),
            Some(405)
        );
        assert_eq!(
            status(
                Method::POST,
                "/_nuage/admin/v1/tenants/acme/public-access-block"
            ),
            Some(405)
        );
        assert_eq!(
            status(Method::DELETE, "/_nuage/admin/v1/tenants/acme?purge=yes"),
            Some(400)
        );
        assert_eq!(
            status(Method::DELETE, "/_nuage/admin/v1/tenants/acme?prune=true"),
            Some(400)
        );
        assert_eq!(
            status(Method::GET, "/_nuage/admin/v1/tenants/%FF"),
            Some(400)
        );
    }
}
