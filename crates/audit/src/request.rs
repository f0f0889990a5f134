//! [`RequestAudit`]: what a protocol front end decided about one request, as it
//! hands it to the server for the tenant's log.
//!
//! A front end knows who called (and how they authenticated), what they asked
//! for, on which resource, and what was decided and by which policy. It puts a
//! `RequestAudit` in its HTTP response's extensions (`http::Extensions`; this
//! type is `Clone + Send + Sync + 'static` for that). The server, after the
//! front end answered and *before the response is sent*, takes it out, adds
//! what only the connection knows ([`RequestFacts`]: time, source address,
//! request id, HTTP status) and appends the resulting [`Entry`] to the tenant's
//! log, durably. A response without one is not logged: this module never
//! invents a decision.
//!
//! This crate does not depend on `http`: the extension is a plain value.

use std::net::IpAddr;

use nuage_base::limits::AUDIT_CLIENT_TEXT_CHARS_MAX;
use time::OffsetDateTime;

use crate::entry::ENTRY_FORMAT_VERSION;
use crate::{Actor, ActorKind, Authentication, Decision, Effect, Entry};

/// A front end's account of one request, completed by the server into an [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAudit {
    /// The tenant whose log records it (twelve-digit account id).
    pub tenant: String,
    /// Who called, how they authenticated, and with which access key.
    pub actor: Actor,
    /// The action, IAM style (`iam:CreateUser`, `s3:GetObject`).
    pub action: String,
    /// The ARN acted on, when there is one.
    pub resource: Option<String>,
    /// Allowed or denied, and by which policy and statement.
    pub decision: Decision,
    /// The KMS key used, when one was.
    pub key: Option<String>,
    /// Why the key was used (a key access justification), when one was.
    pub justification: Option<String>,
    /// The tenant's approval id, when the operator acted under one.
    pub approval: Option<String>,
    /// Where the request's write put the data, when it placed blobs on
    /// storage nodes.
    pub placement: Option<Vec<crate::PlacedBlob>>,
}

/// What the server knows about a request that its front end does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    /// When the response was ready (the decision had been made).
    pub time: OffsetDateTime,
    /// The client's address.
    pub source: Option<IpAddr>,
    /// The request id returned to the client.
    pub request_id: String,
    /// The HTTP status of the response.
    pub status: u16,
}

impl RequestAudit {
    /// A request by `actor` in `tenant`, for `action`, with the decision still
    /// to be set (it starts as a deny no policy made: a default deny).
    #[must_use]
    pub fn new(tenant: impl Into<String>, actor: Actor, action: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            actor,
            action: action.into(),
            resource: None,
            decision: Decision {
                effect: Effect::Deny,
                policy: None,
                statement: None,
            },
            key: None,
            justification: None,
            approval: None,
            placement: None,
        }
    }

    /// The same request, on `resource`.
    #[must_use]
    pub fn on(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// The same request, with the decision `effect` by `policy`/`statement`.
    #[must_use]
    pub fn decided(
        mut self,
        effect: Effect,
        policy: Option<String>,
        statement: Option<String>,
    ) -> Self {
        self.decision = Decision {
            effect,
            policy,
            statement,
        };
        self
    }

    /// The entry for the log, completed with the server's facts.
    #[must_use]
    pub fn into_entry(self, facts: RequestFacts) -> Entry {
        Entry {
            v: ENTRY_FORMAT_VERSION,
            time: facts.time,
            tenant: self.tenant,
            actor: self.actor,
            action: self.action,
            resource: self.resource,
            source: facts.source.map(|ip| ip.to_string()),
            request_id: Some(facts.request_id),
            decision: self.decision,
            key: self.key,
            justification: self.justification,
            approval: self.approval,
            status: Some(facts.status),
            placement: self.placement,
            replica: None,
        }
    }
}

impl Actor {
    /// A caller that signed with SigV4 in the `Authorization` header.
    #[must_use]
    pub fn signed(
        kind: ActorKind,
        arn: impl Into<String>,
        access_key_id: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            id: Some(arn.into()),
            auth: Authentication::Sigv4Header,
            access_key_id: Some(access_key_id.into()),
        }
    }
}

/// A place in a *request's* extensions where a front end that cannot reach
/// its response's extensions (s3s's `S3Access` and handlers see the request
/// only) leaves its [`RequestAudit`]. The server inserts one in every request
/// and reads it after the front end answered, when the response carries none.
/// Clones share the slot.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(std::sync::Arc<std::sync::Mutex<Option<RequestAudit>>>);

impl AuditSlot {
    /// Leaves `audit` in the slot, replacing what was there (the last decision
    /// about the request is the one logged).
    pub fn put(&self, audit: RequestAudit) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(audit);
        }
    }

    /// Takes what was left, if anything.
    #[must_use]
    pub fn take(&self) -> Option<RequestAudit> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// `text` cut to `AUDIT_CLIENT_TEXT_CHARS_MAX` characters: for names a client
/// chose (an action that does not exist), so a log entry stays small.
#[must_use]
pub fn client_text(text: &str) -> String {
    text.chars().take(AUDIT_CLIENT_TEXT_CHARS_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_audit_becomes_the_entry_with_the_servers_facts() {
        let audit = RequestAudit::new(
            "123456789012",
            Actor::signed(
                ActorKind::TenantUser,
                "arn:aws:iam::123456789012:user/alice",
                "AKIAEXAMPLE",
            ),
            "iam:CreateUser",
        )
        .on("arn:aws:iam::123456789012:user/bob")
        .decided(Effect::Allow, Some("admin".into()), Some("All".into()));
        let entry = audit.into_entry(RequestFacts {
            time: time::macros::datetime!(2026-11-29 12:00 UTC),
            source: Some("203.0.113.7".parse().expect("ip")),
            request_id: "R1".into(),
            status: 200,
        });
        let leaf = String::from_utf8(entry.to_leaf().expect("leaf")).expect("utf8");
        assert_eq!(
            leaf,
            concat!(
                r#"{"v":1,"time":"2026-11-29T12:00:00Z","tenant":"123456789012","#,
                r#""actor":{"kind":"tenant_user","id":"arn:aws:iam::123456789012:user/alice","#,
                r#""auth":"sigv4_header","access_key_id":"AKIAEXAMPLE"},"action":"iam:CreateUser","#,
                r#""resource":"arn:aws:iam::123456789012:user/bob","source":"203.0.113.7","#,
                r#""request_id":"R1","decision":{"effect":"allow","policy":"admin","statement":"All"},"#,
                r#""status":200}"#
            )
        );
    }

    #[test]
    fn a_new_request_audit_is_a_default_deny_until_decided() {
        let audit = RequestAudit::new(
            "123456789012",
            Actor::signed(ActorKind::RoleSession, "arn", "ASIA"),
            "sts:AssumeRole",
        );
        assert_eq!(audit.decision.effect, Effect::Deny);
        assert_eq!(audit.decision.policy, None);
    }

    #[test]
    fn a_slot_is_shared_by_its_clones_and_taken_once() {
        let slot = AuditSlot::default();
        let front_end = slot.clone();
        front_end.put(RequestAudit::new(
            "123456789012",
            Actor::signed(ActorKind::TenantUser, "arn", "AK"),
            "s3:GetObject",
        ));
        assert_eq!(slot.take().map(|a| a.action), Some("s3:GetObject".into()));
        assert_eq!(slot.take(), None);
    }

    #[test]
    fn client_text_is_bounded() {
        assert_eq!(
            client_text(&"é".repeat(1000)).chars().count(),
            AUDIT_CLIENT_TEXT_CHARS_MAX
        );
        assert_eq!(client_text("ListUsers"), "ListUsers");
    }
}
