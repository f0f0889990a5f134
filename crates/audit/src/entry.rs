//! One audit log entry: who did what to which resource, from where, and what was
//! decided; and its canonical bytes, which are the Merkle tree leaf.
//!
//! The JSON field names are a published format (`docs/audit-log.md`): renaming
//! or reordering a field changes every future leaf, so fields are only ever added
//! at the end, as `Option`s omitted when absent. This module must never produce
//! two different byte strings for one entry: serialization is compact JSON with
//! fields in declaration order (serde's derive guarantees the order), no maps.

use nuage_base::limits::AUDIT_ENTRY_BYTES_MAX;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::AuditError;

/// Version of the entry format, written as field `v` of every entry.
pub const ENTRY_FORMAT_VERSION: u32 = 1;

/// One event in a tenant's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Entry format version (`1`).
    pub v: u32,
    /// When the request was decided, RFC 3339 in UTC.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// The tenant whose log this is (its twelve-digit account id).
    pub tenant: String,
    /// Who acted, and how they proved it.
    pub actor: Actor,
    /// What was done, as an IAM-style action: `s3:GetObject`, `kms:Decrypt`,
    /// `admin:DeleteTenant`, `storage:Repair`.
    pub action: String,
    /// What it was done to (an ARN), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The client's address (IP, without port), when the request came over the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The request id returned to the client (`x-amz-request-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Allowed or denied, and by what.
    pub decision: Decision,
    /// The KMS key used, when a key was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Why the key was used (a key access justification such as
    /// `CUSTOMER_INITIATED_ACCESS`), when a key was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// The tenant's approval of an operator access, when the operator acted on
    /// the tenant's data under one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// The HTTP status of the response, when there was an HTTP response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Where a write put the tenant's data: each blob written and the
    /// storage nodes holding it, when the gateway runs on storage nodes.
    /// Entries written before this field existed lack it (and their leaf
    /// bytes are unchanged: an absent field is not serialized).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Vec<PlacedBlob>>,
    /// What a repair did to one replica of the tenant's data (a copy or a
    /// removal, from which nodes to which, and why); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaChange>,
}

/// One blob a write stored, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedBlob {
    /// The blob id.
    pub blob: String,
    /// The nodes holding a replica, in placement order.
    pub nodes: Vec<PlacedNode>,
}

/// One storage node, where it stands and under whose law.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedNode {
    /// The node id (topology file).
    pub node: String,
    /// Its site.
    pub site: String,
    /// The site's country, ISO 3166-1 alpha-2.
    pub country: String,
}

/// A replica a repair copied or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaChange {
    /// The blob id.
    pub blob: String,
    /// The replicas the change moves away from (the copy's sources for a
    /// copy, the removed replica for a removal).
    pub from: Vec<PlacedNode>,
    /// The node that received the copy; empty for a removal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<PlacedNode>,
    /// Why, in words (`node down`, `site not allowed: ...`, `surplus`).
    pub reason: String,
    /// The shard's index, for an erasure-coded blob (absent for a replica,
    /// so entries without it are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// What sort of caller.
    pub kind: ActorKind,
    /// Its ARN (users, role sessions) or id (services, operators); absent for
    /// anonymous callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// How it authenticated.
    pub auth: Authentication,
    /// The access key id it signed with, when it signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
}

/// The sort of caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// An IAM user of the tenant (or the tenant's root user).
    TenantUser,
    /// An assumed-role session (STS).
    RoleSession,
    /// An unauthenticated caller.
    Anonymous,
    /// Nuage itself (placement, repair, migration, lifecycle).
    Service,
    /// The cloud's operator, through the admin API.
    Operator,
}

/// How a caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Authentication {
    /// AWS Signature Version 4 in the `Authorization` header.
    Sigv4Header,
    /// AWS Signature Version 4 in the query string (presigned URL).
    PresignedUrl,
    /// A bearer token (the operator's admin API).
    BearerToken,
    /// No authentication (anonymous requests, internal service actions).
    None,
}

/// Whether the request was allowed, and by which policy when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// `allow` or `deny`.
    pub effect: Effect,
    /// The policy that decided (ARN or name), when one did; absent for a
    /// default deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The statement id (`Sid`) within that policy, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
}

/// Allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    Deny,
}

impl Entry {
    /// The canonical bytes of this entry: one line of compact JSON (no newline),
    /// fields in their fixed order, time in UTC. These bytes are the Merkle leaf.
    ///
    /// # Errors
    /// [`AuditError::EntryTooLarge`] past `AUDIT_ENTRY_BYTES_MAX`.
    pub fn to_leaf(&self) -> Result<Vec<u8>, AuditError> {
        // Normalizing to UTC here, not trusting callers, keeps one instant one
        // byte string.
        let mut canonical = self.clone();
        canonical.time = canonical.time.to_offset(time::UtcOffset::UTC);
        let bytes =
            serde_json::to_vec(&canonical).map_err(|e| AuditError::Encoding(e.to_string()))?;
        if bytes.len() > AUDIT_ENTRY_BYTES_MAX {
            return Err(AuditError::EntryTooLarge {
                bytes: bytes.len(),
                max: AUDIT_ENTRY_BYTES_MAX,
            });
        }
        Ok(bytes)
    }

    /// Parses an entry from its leaf bytes.
    ///
    /// # Errors
    /// [`AuditError::Encoding`] when the bytes are not an entry.
    pub fn from_leaf(leaf: &[u8]) -> Result<Self, AuditError> {
        serde_json::from_slice(leaf).map_err(|e| AuditError::Encoding(e.to_string()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Entry {
        Entry {
            v: ENTRY_FORMAT_VERSION,
            time: time::macros::datetime!(2026-11-29 12:00:00.5 UTC),
            tenant: "123456789012".into(),
            actor: Actor {
                kind: ActorKind::TenantUser,
                id: Some("arn:aws:iam::123456789012:user/alice".into()),
                auth: Authentication::Sigv4Header,
                access_key_id: Some("AKIAEXAMPLE".into()),
            },
            action: "kms:Decrypt".into(),
            resource: Some("arn:aws:kms:eu-west-3:123456789012:key/k1".into()),
            source: Some("203.0.113.7".into()),
            request_id: Some("r-1".into()),
            decision: Decision {
                effect: Effect::Allow,
                policy: Some("arn:aws:iam::123456789012:policy/p".into()),
                statement: Some("AllowDecrypt".into()),
            },
            key: Some("arn:aws:kms:eu-west-3:123456789012:key/k1".into()),
            justification: Some("CUSTOMER_INITIATED_ACCESS".into()),
            approval: None,
            status: Some(200),
            placement: None,
            replica: None,
        }
    }

    #[test]
    fn canonical_bytes_are_fixed() {
        let leaf = sample().to_leaf().expect("leaf");
        assert_eq!(
            String::from_utf8(leaf.clone()).expect("utf8"),
            concat!(
                r#"{"v":1,"time":"2026-11-29T12:00:00.5Z","tenant":"123456789012","#,
                r#""actor":{"kind":"tenant_user","id":"arn:aws:iam::123456789012:user/alice","#,
                r#""auth":"sigv4_header","access_key_id":"AKIAEXAMPLE"},"action":"kms:Decrypt","#,
                r#""resource":"arn:aws:kms:eu-west-3:123456789012:key/k1","source":"203.0.113.7","#,
                r#""request_id":"r-1","decision":{"effect":"allow","#,
                r#""policy":"arn:aws:iam::123456789012:policy/p","statement":"AllowDecrypt"},"#,
                r#""key":"arn:aws:kms:eu-west-3:123456789012:key/k1","#,
                r#""justification":"CUSTOMER_INITIATED_ACCESS","status":200}"#
            )
        );
        assert_eq!(Entry::from_leaf(&leaf).expect("parse"), sample());
    }

    #[test]
    fn entries_without_the_new_fields_keep_their_bytes() {
        // A leaf written before `placement` and `replica` existed parses,
        // and serializes back to the very same bytes (its hash unchanged).
        let old = concat!(
            r#"{"v":1,"time":"2026-11-29T12:00:00.5Z","tenant":"123456789012","#,
            r#""actor":{"kind":"service","id":"nuage","auth":"none"},"action":"s3:PutObject","#,
            r#""decision":{"effect":"allow"},"status":200}"#
        );
        let entry = Entry::from_leaf(old.as_bytes()).expect("parse");
        assert_eq!(entry.placement, None);
        assert_eq!(entry.replica, None);
        assert_eq!(entry.to_leaf().expect("leaf"), old.as_bytes());
    }

    #[test]
    fn placement_and_replica_come_last() {
        let node = |n: &str, c: &str| PlacedNode {
            node: n.into(),
            site: format!("{n}-site"),
            country: c.into(),
        };
        let mut entry = sample();
        entry.placement = Some(vec![PlacedBlob {
            blob: "b1".into(),
            nodes: vec![node("fr-1", "FR")],
        }]);
        entry.replica = Some(ReplicaChange {
            blob: "b1".into(),
            from: vec![node("de-1", "DE")],
            to: vec![node("fr-2", "FR")],
            reason: "site not allowed".into(),
            shard: None,
        });
        let leaf = String::from_utf8(entry.to_leaf().expect("leaf")).expect("utf8");
        assert!(
            leaf.ends_with(concat!(
                r#""status":200,"placement":[{"blob":"b1","nodes":[{"node":"fr-1","#,
                r#""site":"fr-1-site","country":"FR"}]}],"replica":{"blob":"b1","#,
                r#""from":[{"node":"de-1","site":"de-1-site","country":"DE"}],"#,
                r#""to":[{"node":"fr-2","site":"fr-2-site","country":"FR"}],"#,
                r#""reason":"site not allowed"}}"#
            )),
            "{leaf}"
        );
        assert_eq!(Entry::from_leaf(leaf.as_bytes()).expect("parse"), entry);
        // A shard's index follows the reason; a replica's entry has none.
        if let Some(replica) = entry.replica.as_mut() {
            replica.shard = Some(2);
        }
        let leaf = String::from_utf8(entry.to_leaf().expect("leaf")).expect("utf8");
        assert!(
            leaf.ends_with(r#""reason":"site not allowed","shard":2}}"#),
            "{leaf}"
        );
        assert_eq!(Entry::from_leaf(leaf.as_bytes()).expect("parse"), entry);
    }

    #[test]
    fn time_is_normalized_to_utc() {
        let mut entry = sample();
        entry.time = entry.time.to_offset(time::macros::offset!(+2));
        assert_eq!(
            entry.to_leaf().expect("leaf"),
            sample().to_leaf().expect("leaf")
        );
    }

    #[test]
    fn oversized_entry_is_refused() {
        let mut entry = sample();
        entry.resource = Some("a".repeat(AUDIT_ENTRY_BYTES_MAX));
        assert!(matches!(
            entry.to_leaf(),
            Err(AuditError::EntryTooLarge { .. })
        ));
    }

    #[test]
    fn no_newline_can_enter_a_leaf() {
        let mut entry = sample();
        entry.action = "s3:Get\nObject".into();
        let leaf = entry.to_leaf().expect("leaf");
        assert!(!leaf.contains(&b'\n'));
    }
}
