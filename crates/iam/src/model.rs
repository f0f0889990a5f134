//! The identity records and the [`Identity`] a request acts as.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Whether a tenant may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantStatus {
    Active,
    /// Every credential of the tenant is refused until it is resumed.
    Suspended,
}

/// An organisation: the owner of buckets, users, roles and policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Twelve digits, used as the account id in ARNs.
    pub id: String,
    /// Unique, human-readable (`default`, `ministere-culture`).
    pub name: String,
    /// ISO 3166-1 alpha-2 country of the legal entity.
    pub legal_country: String,
    pub billing_contact: String,
    pub status: TenantStatus,
    pub created_unix_ns: i64,
    /// Block Public Access for every bucket of the tenant, on top of each
    /// bucket's own settings (S3's account-level setting).
    #[serde(default)]
    pub public_access_block: TenantPublicAccessBlock,
    /// The tenant's residency policy (`nuage-placement`'s JSON form, as
    /// checked and normalized by the admin API); None: no constraint beyond
    /// the region each bucket is created in (docs/residency.md).
    #[serde(default)]
    pub residency_policy: Option<String>,
}

/// Tenant-wide Block Public Access.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantPublicAccessBlock {
    /// Refuse bucket policies that grant access to everyone.
    #[serde(default)]
    pub block_public_policy: bool,
    /// Public bucket policies grant nothing outside the tenant.
    #[serde(default)]
    pub restrict_public_buckets: bool,
}

/// Inline policies by name, and attached managed policies by ARN.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySet {
    /// Policy name -> the JSON document exactly as the user wrote it.
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    #[serde(default)]
    pub attached: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub tenant_id: String,
    pub name: String,
    pub path: String,
    /// `AIDA...`, stable across renames.
    pub id: String,
    pub created_unix_ns: i64,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    #[serde(default)]
    pub policies: PolicySet,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl User {
    #[must_use]
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:iam::{}:user{}{}",
            self.tenant_id, self.path, self.name
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub tenant_id: String,
    pub name: String,
    pub path: String,
    pub id: String,
    pub created_unix_ns: i64,
    #[serde(default)]
    pub policies: PolicySet,
}

impl Group {
    #[must_use]
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:iam::{}:group{}{}",
            self.tenant_id, self.path, self.name
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub tenant_id: String,
    pub name: String,
    pub path: String,
    pub id: String,
    pub created_unix_ns: i64,
    /// The trust policy: who may assume the role.
    pub assume_role_policy: String,
    pub max_session_duration_s: u32,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    #[serde(default)]
    pub policies: PolicySet,
}

impl Role {
    #[must_use]
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:iam::{}:role{}{}",
            self.tenant_id, self.path, self.name
        )
    }
}

/// A customer-managed policy (one version, `v1`, replaced by CreatePolicyVersion later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedPolicy {
    pub tenant_id: String,
    pub name: String,
    pub path: String,
    pub id: String,
    pub document: String,
    #[serde(default)]
    pub description: String,
    pub created_unix_ns: i64,
}

impl ManagedPolicy {
    #[must_use]
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:iam::{}:policy{}{}",
            self.tenant_id, self.path, self.name
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyStatus {
    Active,
    Inactive,
}

impl KeyStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Inactive => "Inactive",
        }
    }
}

/// A long-lived access key of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub tenant_id: String,
    pub user_name: String,
    pub status: KeyStatus,
    pub created_unix_ns: i64,
    #[serde(default)]
    pub last_used_unix_ns: Option<i64>,
    /// The service (`s3`, `iam`, `sts`, `kms`) and region of that last use.
    #[serde(default)]
    pub last_used_service: Option<String>,
    #[serde(default)]
    pub last_used_region: Option<String>,
}

/// Who a temporary credential acts as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionSubject {
    /// GetSessionToken: the user itself, with its own policies.
    User { user_name: String },
    /// AssumeRole: the role's policies.
    Role {
        role_name: String,
        session_name: String,
    },
    /// The operator, under a tenant's approval (`crate::access`): the
    /// approval's policy only, for as long as the approval holds.
    Operator { approval_id: String },
}

/// Temporary credentials from STS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub tenant_id: String,
    pub subject: SessionSubject,
    pub expires_unix_ns: i64,
    /// A session policy only narrows what the subject may do.
    #[serde(default)]
    pub session_policy: Option<String>,
    /// The identity that obtained the session (for the audit trail).
    pub source_arn: String,
}

/// Credentials handed to a client (CreateAccessKey, GetSessionToken, AssumeRole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub expires_unix_ns: Option<i64>,
}

/// What kind of principal a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    User {
        user_name: String,
    },
    AssumedRole {
        role_name: String,
        session_name: String,
    },
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub tenant_id: String,
    pub kind: PrincipalKind,
    /// `arn:aws:iam::T:user/NAME` or `arn:aws:sts::T:assumed-role/ROLE/SESSION`.
    pub arn: String,
    /// `AIDA...` for users, `AROA...:session` for roles.
    pub principal_id: String,
    pub tags: Vec<(String, String)>,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Set for temporary credentials: the token the request must carry.
    pub session_token: Option<String>,
    pub expires_unix_ns: Option<i64>,
    pub session_policy: Option<String>,
    /// For a long-lived key, its last recorded use as of resolution (so that
    /// recording a use needs no second read while the record is fresh).
    pub key_last_used: Option<KeyUse>,
    /// Set when the operator acts under a tenant's approval: the approval id
    /// and justification, which the key service is told and the audit log
    /// records with every request.
    pub approval: Option<crate::access::ApprovedAccess>,
}

/// When, for which service and in which region a key was last used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    pub at_unix_ns: i64,
    pub service: String,
    pub region: String,
}

impl Identity {
    /// Whether a request presented the right session token: none for a
    /// long-lived key, exactly the session's for temporary credentials.
    #[must_use]
    pub fn session_token_matches(&self, presented: Option<&str>) -> bool {
        match (&self.session_token, presented) {
            (None, None) => true,
            (Some(expected), Some(given)) => expected.as_bytes() == given.as_bytes(),
            _ => false,
        }
    }

    #[must_use]
    pub fn user_name(&self) -> Option<&str> {
        match &self.kind {
            PrincipalKind::User { user_name } => Some(user_name),
            PrincipalKind::AssumedRole { .. } => None,
        }
    }
}
