//! The JSON the admin API speaks. These types are the wire format, kept apart
//! from the identity records so that a change to how IAM stores a tenant does
//! not change the API (and so that a stored secret is only ever serialized on
//! purpose, by [`NewAccessKey`]).

use nuage_iam::{AccessKey, KeyStatus, Tenant, TenantPublicAccessBlock, TenantStatus, User};
use serde::{Deserialize, Serialize};

/// `POST /tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    pub name: String,
    /// ISO 3166-1 alpha-2, upper case (`FR`).
    pub legal_country: String,
    #[serde(default)]
    pub billing_contact: String,
}

/// `POST /tenants/{tenant}/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub name: String,
    /// Attach the inline policy `AdministratorAccess` (everything, within the
    /// tenant): how the operator bootstraps a tenant's own administrator.
    #[serde(default)]
    pub administrator: bool,
}

/// `PATCH /tenants/{tenant}/users/{user}/keys/{access_key_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyRequest {
    pub status: KeyStatusView,
}

/// `PUT /tenants/{tenant}/public-access-block`, and what both it and `GET`
/// answer: the tenant-wide Block Public Access settings. Both fields are
/// required on `PUT`, so that a typo cannot silently switch one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicAccessBlockView {
    /// Refuse bucket policies that grant access to everyone.
    pub block_public_policy: bool,
    /// Public bucket policies grant nothing outside the tenant.
    pub restrict_public_buckets: bool,
}

impl From<TenantPublicAccessBlock> for PublicAccessBlockView {
    fn from(b: TenantPublicAccessBlock) -> Self {
        Self {
            block_public_policy: b.block_public_policy,
            restrict_public_buckets: b.restrict_public_buckets,
        }
    }
}

impl From<PublicAccessBlockView> for TenantPublicAccessBlock {
    fn from(b: PublicAccessBlockView) -> Self {
        Self {
            block_public_policy: b.block_public_policy,
            restrict_public_buckets: b.restrict_public_buckets,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantStatusView {
    Active,
    Suspended,
}

impl From<TenantStatus> for TenantStatusView {
    fn from(s: TenantStatus) -> Self {
        match s {
            TenantStatus::Active => Self::Active,
            TenantStatus::Suspended => Self::Suspended,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyStatusView {
    Active,
    Inactive,
}

impl From<KeyStatus> for KeyStatusView {
    fn from(s: KeyStatus) -> Self {
        match s {
            KeyStatus::Active => Self::Active,
            KeyStatus::Inactive => Self::Inactive,
        }
    }
}

impl From<KeyStatusView> for KeyStatus {
    fn from(s: KeyStatusView) -> Self {
        match s {
            KeyStatusView::Active => Self::Active,
            KeyStatusView::Inactive => Self::Inactive,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub legal_country: String,
    pub billing_contact: String,
    pub status: TenantStatusView,
    /// RFC 3339.
    pub created_at: String,
    /// Buckets the tenant owns (what `DELETE` without `purge` refuses to orphan).
    pub bucket_count: usize,
    /// Tenant-wide Block Public Access, on top of each bucket's own settings.
    pub public_access_block: PublicAccessBlockView,
}

impl TenantView {
    pub fn new(tenant: Tenant, bucket_count: usize) -> Self {
        Self {
            created_at: rfc3339(tenant.created_unix_ns),
            id: tenant.id,
            name: tenant.name,
            legal_country: tenant.legal_country,
            billing_contact: tenant.billing_contact,
            status: tenant.status.into(),
            bucket_count,
            public_access_block: tenant.public_access_block.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub name: String,
    pub id: String,
    pub arn: String,
    pub path: String,
    pub created_at: String,
    /// Names of the user's inline policies.
    pub inline_policies: Vec<String>,
    /// ARNs of the managed policies attached to the user.
    pub attached_policies: Vec<String>,
    pub groups: Vec<String>,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            arn: user.arn(),
            created_at: rfc3339(user.created_unix_ns),
            name: user.name,
            id: user.id,
            path: user.path,
            inline_policies: user.policies.inline.into_keys().collect(),
            attached_policies: user.policies.attached,
            groups: user.groups,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantList {
    pub tenants: Vec<TenantView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserList {
    pub users: Vec<UserView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccessKeyList {
    pub access_keys: Vec<AccessKeyView>,
}

/// An access key as listed: never its secret.
#[derive(Debug, Clone, Serialize)]
pub struct AccessKeyView {
    pub access_key_id: String,
    pub tenant_id: String,
    pub user_name: String,
    pub status: KeyStatusView,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

impl From<&AccessKey> for AccessKeyView {
    fn from(key: &AccessKey) -> Self {
        Self {
            access_key_id: key.access_key_id.clone(),
            tenant_id: key.tenant_id.clone(),
            user_name: key.user_name.clone(),
            status: key.status.into(),
            created_at: rfc3339(key.created_unix_ns),
            last_used_at: key.last_used_unix_ns.map(rfc3339),
        }
    }
}

/// A key just created: the only response that carries a secret.
#[derive(Debug, Clone, Serialize)]
pub struct NewAccessKey {
    #[serde(flatten)]
    pub key: AccessKeyView,
    pub secret_access_key: String,
}

/// What `DELETE /tenants/{tenant}` removed.
#[derive(Debug, Clone, Serialize)]
pub struct TenantDeletion {
    pub tenant: TenantView,
    /// Present when the request purged the tenant's data.
    pub purged: Option<PurgeReport>,
    /// The keys destroyed, which makes every copy of the tenant's blobs,
    /// wherever it is, undecryptable (crypto-shredding).
    pub shredded: ShredReport,
}

/// What crypto-shredding a deleted tenant destroyed (counts only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShredReport {
    /// Whether the tenant key (which wraps the data keys of its SSE-S3
    /// objects) existed and was destroyed.
    pub tenant_key: bool,
    /// KMS keys destroyed, in any state.
    pub kms_keys: usize,
    /// Their material versions.
    pub kms_material_versions: usize,
    /// External key stores whose sealed proxy credential was destroyed.
    pub external_key_stores: usize,
}

impl From<nuage_kms::TenantShredding> for ShredReport {
    fn from(s: nuage_kms::TenantShredding) -> Self {
        Self {
            tenant_key: s.tenant_key,
            kms_keys: s.kms_keys,
            kms_material_versions: s.material_versions,
            external_key_stores: s.external_key_stores,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    pub buckets: usize,
    /// Object versions and delete markers.
    pub object_versions: usize,
    /// In-progress multipart uploads aborted.
    pub uploads: usize,
}

/// Nanoseconds since the epoch as RFC 3339 (UTC); a value out of range (a
/// corrupt record) shows as the raw number rather than failing the request.
fn rfc3339(unix_ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_ns.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(
            super::rfc3339(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
