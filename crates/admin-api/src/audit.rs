//! What the admin API tells a tenant's audit log about an operator action.
//!
//! Every authenticated request that concerns one tenant (its record, its
//! users, its keys, its suspension, purge and crypto-shredding) is logged in
//! *that tenant's* log, with the operator as actor (`operator`, authenticated
//! by bearer token; the token itself is never recorded). Requests that concern
//! no tenant (the list of tenants, the OpenAPI document) are not logged: there
//! is no operator log yet. Requests without the operator token are not
//! operator actions and name no tenant anyone authenticated for: not logged
//! either. The server appends the record before the response leaves.

use nuage_audit::{Actor, ActorKind, Authentication, Effect, RequestAudit};

use crate::endpoint::Endpoint;

/// The actor id of the operator (there is one operator credential).
const OPERATOR_ID: &str = "operator";

/// The tenant an endpoint acts on (as the path names it: id or name), the
/// action's name and, below the tenant, the user it concerns; `None` for an
/// endpoint that concerns no existing tenant (CreateTenant's tenant is known
/// from its response).
pub(crate) fn target(endpoint: &Endpoint) -> Option<(&str, &'static str, Option<&str>)> {
    Some(match endpoint {
        Endpoint::GetTenant { tenant } => (tenant, "GetTenant", None),
        Endpoint::SuspendTenant { tenant } => (tenant, "SuspendTenant", None),
        Endpoint::ResumeTenant { tenant } => (tenant, "ResumeTenant", None),
        Endpoint::GetTenantPublicAccessBlock { tenant } => {
            (tenant, "GetTenantPublicAccessBlock", None)
        }
        Endpoint::PutTenantPublicAccessBlock { tenant } => {
            (tenant, "PutTenantPublicAccessBlock", None)
        }
        Endpoint::DeleteTenant { tenant, purge } => (
            tenant,
            if *purge {
                "DeleteTenantAndPurge"
            } else {
                "DeleteTenant"
            },
            None,
        ),
        Endpoint::GetTenantResidency { tenant } => (tenant, "GetTenantResidency", None),
        Endpoint::PutTenantResidency { tenant } => (tenant, "PutTenantResidency", None),
        Endpoint::DeleteTenantResidency { tenant } => (tenant, "DeleteTenantResidency", None),
        Endpoint::GetBucketResidency { tenant, .. } => (tenant, "GetBucketResidency", None),
        Endpoint::PutBucketResidency { tenant, .. } => (tenant, "PutBucketResidency", None),
        Endpoint::DeleteBucketResidency { tenant, .. } => (tenant, "DeleteBucketResidency", None),
        Endpoint::GetBucketCompliance { tenant, .. } => (tenant, "GetBucketCompliance", None),
        Endpoint::ListUsers { tenant } => (tenant, "ListUsers", None),
        Endpoint::CreateUser { tenant } => (tenant, "CreateUser", None),
        Endpoint::GetUser { tenant, user } => (tenant, "GetUser", Some(user.as_str())),
        Endpoint::DeleteUser { tenant, user } => (tenant, "DeleteUser", Some(user.as_str())),
        Endpoint::ListKeys { tenant, user } => (tenant, "ListKeys", Some(user.as_str())),
        Endpoint::CreateKey { tenant, user } => (tenant, "CreateKey", Some(user.as_str())),
        Endpoint::UpdateKey { tenant, user, .. } => (tenant, "UpdateKey", Some(user.as_str())),
        Endpoint::DeleteKey { tenant, user, .. } => (tenant, "DeleteKey", Some(user.as_str())),
        // No tenant: the list of all tenants, the API's document, the
        // cluster's nodes, drains and passes (what a drain, repair or scrub
        // then does to a tenant's replicas is in that tenant's log, as the
        // repair service's entries). (Endpoints added later name their
        // tenant here to be logged.)
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

/// The record of an operator request, before it runs (a tenant about to be
/// deleted is resolved while it exists); `None` when it concerns no existing
/// tenant.
pub(crate) async fn before(iam: &nuage_iam::Iam, endpoint: &Endpoint) -> Option<RequestAudit> {
    let (tenant, action, user) = target(endpoint)?;
    // The path names a tenant by id or by name; the log is the id's.
    let tenant = iam.tenant(tenant).await.ok()?;
    let audit = operator_action(&tenant.id, action, user);
    // A bucket's residency is an action on the bucket, not on the tenant.
    Some(match endpoint {
        Endpoint::GetBucketResidency { bucket, .. }
        | Endpoint::PutBucketResidency { bucket, .. }
        | Endpoint::DeleteBucketResidency { bucket, .. }
        | Endpoint::GetBucketCompliance { bucket, .. } => {
            audit.on(format!("arn:aws:s3:::{bucket}"))
        }
        _ => audit,
    })
}

/// Attaches the record to the response, for the server to append. A created
/// tenant is known from the response only (its id).
pub(crate) fn attach(
    response: &mut http::Response<bytes::Bytes>,
    endpoint: &Endpoint,
    audit: Option<RequestAudit>,
) {
    let audit = audit.or_else(|| {
        if *endpoint != Endpoint::CreateTenant || response.status() != http::StatusCode::CREATED {
            return None;
        }
        let created: serde_json::Value = serde_json::from_slice(response.body()).ok()?;
        let id = created.get("id")?.as_str()?;
        Some(operator_action(id, "CreateTenant", None))
    });
    if let Some(audit) = audit {
        response.extensions_mut().insert(audit);
    }
}

/// The operator, as the log names it.
fn operator() -> Actor {
    Actor {
        kind: ActorKind::Operator,
        id: Some(OPERATOR_ID.to_owned()),
        auth: Authentication::BearerToken,
        access_key_id: None,
    }
}

/// The record of `action` by the operator on `tenant_id` (the twelve-digit
/// id), on the tenant's root ARN or one of its users. The operator token
/// allows every admin action: an allow that no policy made.
pub(crate) fn operator_action(tenant_id: &str, action: &str, user: Option<&str>) -> RequestAudit {
    let resource = match user {
        Some(user) => format!("arn:aws:iam::{tenant_id}:user/{user}"),
        None => format!("arn:aws:iam::{tenant_id}:root"),
    };
    RequestAudit::new(tenant_id, operator(), format!("admin:{action}"))
        .on(resource)
        .decided(Effect::Allow, None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_actions_name_the_tenant_and_never_a_token() {
        let audit = operator_action("111122223333", "DeleteUser", Some("bob"));
        assert_eq!(audit.tenant, "111122223333");
        assert_eq!(audit.action, "admin:DeleteUser");
        assert_eq!(
            audit.resource.as_deref(),
            Some("arn:aws:iam::111122223333:user/bob")
        );
        assert_eq!(audit.actor.kind, ActorKind::Operator);
        assert_eq!(audit.actor.auth, Authentication::BearerToken);
        assert_eq!(audit.actor.access_key_id, None);
        assert_eq!(target(&Endpoint::ListTenants), None);
        assert_eq!(
            target(&Endpoint::SuspendTenant {
                tenant: "acme".into()
            }),
            Some(("acme", "SuspendTenant", None))
        );
    }
}
