//! What the S3 front end tells the tenant's audit log about a request.
//!
//! The authorizer ([`crate::access`]) describes every request whose tenant it
//! can name (the caller's, or the bucket owner's for anonymous and
//! cross-tenant requests) and leaves that description in the request's
//! [`AuditSlot`]; handlers that unwrapped or wrapped a data key add which key
//! and why. The server appends the result before the response leaves. This
//! module only describes: it never decides, and never does I/O, so the hot
//! path pays a few small allocations and no extra metadata read.

use nuage_audit::{
    Actor, ActorKind, AuditSlot, Authentication, Effect, PlacedBlob, PlacedNode, RequestAudit,
};
use nuage_iam::{Identity, PrincipalKind};

use crate::sse::Reported;

/// The audit log's account of a caller: its ARN, the key it signed with and
/// how (header or presigned URL); anonymous when it did not sign.
pub(crate) fn actor(identity: Option<&Identity>, presigned: bool) -> Actor {
    let Some(identity) = identity else {
        return Actor {
            kind: ActorKind::Anonymous,
            id: None,
            auth: Authentication::None,
            access_key_id: None,
        };
    };
    let kind = match identity.kind {
        PrincipalKind::User { .. } => ActorKind::TenantUser,
        PrincipalKind::AssumedRole { .. } => ActorKind::RoleSession,
    };
    let mut actor = Actor::signed(kind, &identity.arn, &identity.access_key_id);
    if presigned {
        actor.auth = Authentication::PresignedUrl;
    }
    actor
}

/// The audit log's account of a caller known only by the principal its
/// expired session key claims (`arn`, `kind`): what it claimed, and how it
/// signed.
pub(crate) fn claimed_actor(
    kind: &PrincipalKind,
    arn: String,
    access_key_id: &str,
    presigned: bool,
) -> Actor {
    let kind = match kind {
        PrincipalKind::User { .. } => ActorKind::TenantUser,
        PrincipalKind::AssumedRole { .. } => ActorKind::RoleSession,
    };
    let mut actor = Actor::signed(kind, arn, access_key_id);
    if presigned {
        actor.auth = Authentication::PresignedUrl;
    }
    actor
}

/// The audit `Effect` of an identity-service decision.
pub(crate) fn effect(allowed: bool) -> Effect {
    if allowed { Effect::Allow } else { Effect::Deny }
}

/// The request's audit slot (the server puts one in every request).
pub(crate) fn slot(extensions: &http::Extensions) -> Option<&AuditSlot> {
    extensions.get::<AuditSlot>()
}

/// Leaves `audit` in the request's slot (the last one left is logged).
pub(crate) fn put(slot: Option<&AuditSlot>, audit: RequestAudit) {
    if let Some(slot) = slot {
        slot.put(audit);
    }
}

/// Changes the request's audit record in place, if it has one.
pub(crate) fn amend(slot: Option<&AuditSlot>, change: impl FnOnce(&mut RequestAudit)) {
    if let Some(slot) = slot
        && let Some(mut audit) = slot.take()
    {
        change(&mut audit);
        slot.put(audit);
    }
}

/// The name the log gives a tenant's own key (SSE-S3), which has no KMS ARN:
/// it is the key of the tenant that owns the data, the log's tenant.
pub(crate) fn tenant_key_name(tenant: &str) -> String {
    format!("arn:nuage:kms::{tenant}:tenant-key")
}

/// Records that the request wrapped or unwrapped a data key protecting
/// `reported`'s data, on the caller's behalf: the KMS key for SSE-KMS, the
/// bucket owner's tenant key for SSE-S3. SSE-C keys are the client's, never
/// stored, and are not named.
///
/// The justification is the one the key service was given: the approval's
/// reason for an operator's approved session, the customer's own access for
/// everyone else (`crate::handlers::access_reason`).
pub(crate) fn note_key_use(extensions: &http::Extensions, reported: &Reported) {
    if reported.sse_c {
        return;
    }
    let caller = extensions
        .get::<crate::access::Caller>()
        .and_then(|c| c.0.as_ref());
    let reason = crate::handlers::access_reason(caller);
    amend(slot(extensions), |audit| {
        audit.key = Some(
            reported
                .kms_key_arn
                .clone()
                .unwrap_or_else(|| tenant_key_name(&audit.tenant)),
        );
        audit.justification = Some(reason.as_str().to_owned());
    });
}

/// Where a staged blob was placed, as the log names it; None on a single
/// node (its store does not place blobs on storage nodes).
pub(crate) fn placed(staged: &nuage_storage::Staged) -> Option<PlacedBlob> {
    let nodes = staged.placement.as_ref()?;
    Some(PlacedBlob {
        blob: staged.blob_id.clone(),
        nodes: nodes
            .iter()
            .map(|n| PlacedNode {
                node: n.node.clone(),
                site: n.site.clone(),
                country: n.country.clone(),
            })
            .collect(),
    })
}

/// Records in the request's entry that its write placed `placed` (a blob
/// and the nodes holding it). Called once the write is committed.
pub(crate) fn note_placement(extensions: &http::Extensions, placed: Option<PlacedBlob>) {
    let Some(placed) = placed else { return };
    amend(slot(extensions), |audit| {
        audit.placement.get_or_insert_with(Vec::new).push(placed);
    });
}

/// A new entry for `identity`'s request in `tenant`'s log, naming the
/// operator access approval the request was made under, if any.
pub(crate) fn request(
    tenant: &str,
    identity: Option<&Identity>,
    actor: Actor,
    action: &str,
) -> RequestAudit {
    let mut audit = RequestAudit::new(tenant, actor, action);
    audit.approval = identity
        .and_then(|i| i.approval.as_ref())
        .map(|a| a.id.clone());
    audit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit() -> RequestAudit {
        RequestAudit::new("111122223333", actor(None, false), "s3:GetObject")
    }

    #[test]
    fn a_key_use_names_the_kms_key_or_the_tenant_key() {
        let mut extensions = http::Extensions::new();
        extensions.insert(AuditSlot::default());
        let take = |extensions: &http::Extensions| slot(extensions).and_then(AuditSlot::take);
        put(slot(&extensions), audit());
        note_key_use(&extensions, &Reported::default());
        let logged = take(&extensions).unwrap_or_else(audit);
        assert_eq!(
            logged.key.as_deref(),
            Some("arn:nuage:kms::111122223333:tenant-key")
        );
        assert_eq!(
            logged.justification.as_deref(),
            Some("CUSTOMER_INITIATED_ACCESS")
        );
        put(slot(&extensions), audit());
        let kms = Reported {
            kms_key_arn: Some("arn:aws:kms:fr-par:111122223333:key/k".into()),
            ..Reported::default()
        };
        note_key_use(&extensions, &kms);
        assert_eq!(
            take(&extensions).and_then(|a| a.key).as_deref(),
            Some("arn:aws:kms:fr-par:111122223333:key/k")
        );
        put(slot(&extensions), audit());
        let sse_c = Reported {
            sse_c: true,
            ..Reported::default()
        };
        note_key_use(&extensions, &sse_c);
        assert_eq!(take(&extensions).and_then(|a| a.key), None);
    }

    #[test]
    fn a_placement_is_added_to_the_requests_entry() {
        let mut extensions = http::Extensions::new();
        extensions.insert(AuditSlot::default());
        put(slot(&extensions), audit());
        note_placement(&extensions, None);
        let placed = PlacedBlob {
            blob: "b1".into(),
            nodes: vec![PlacedNode {
                node: "fr-1".into(),
                site: "par1".into(),
                country: "FR".into(),
            }],
        };
        note_placement(&extensions, Some(placed.clone()));
        let logged = slot(&extensions).and_then(AuditSlot::take);
        assert_eq!(logged.and_then(|a| a.placement), Some(vec![placed]));
    }

    #[test]
    fn anonymous_callers_have_no_id_nor_key() {
        let a = actor(None, true);
        assert_eq!(a.kind, ActorKind::Anonymous);
        assert_eq!(a.auth, Authentication::None);
        assert_eq!(a.id, None);
    }
}
