//! Identities: tenants, users, groups, roles, access keys, managed and inline
//! policies, and temporary credentials (STS sessions).
//!
//! This crate owns who exists and which credentials prove it. It stores its
//! records as revision-checked documents ([`nuage_meta::DocumentStore`]) and
//! cannot tell which backend holds them. It never parses a wire protocol: the
//! IAM/STS query API, the admin API and the S3 front end call it.
//!
//! Tenants are what AWS calls accounts: a tenant id is twelve digits, and ARNs
//! use it as the account field (`arn:aws:iam::123456789012:user/alice`) so that
//! policies written for AWS read the same here.

pub mod access;
mod authorize;
mod error;
mod model;
mod policy_bridge;
mod service;

pub use access::{
    AccessRequestState, AccessVerdict, ApprovedAccess, NewOperatorAccessRequest,
    OperatorAccessRequest,
};
pub use authorize::{AccessRequest, Decision, PolicyKind, PolicySummary, check_policy_document};
pub use error::{IamError, IamResult};

/// The name of the inline policy that makes a user a tenant administrator.
pub const ADMINISTRATOR_POLICY_NAME: &str = "AdministratorAccess";
/// Everything, within the tenant: identity policies never reach another
/// tenant's resources without that tenant's bucket policy.
pub const ADMINISTRATOR_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"TenantAdministrator","Effect":"Allow","Action":"*","Resource":"*"}]}"#;
pub use model::*;
pub use service::{
    Iam, PolicyHolder, ROLE_SESSION_DURATION_S_DEFAULT, SESSION_DURATION_S_MAX,
    SESSION_DURATION_S_MIN,
};
