//! Residency policies of tenants and buckets (`docs/residency.md`): the
//! admin API's `/tenants/{tenant}/residency` and
//! `/tenants/{tenant}/buckets/{bucket}/residency`, the check of a policy
//! against the region's sites of the topology ([`region_feasibility`]), and
//! [`BucketResidency`], the storage service's bucket admission (CreateBucket
//! is refused in a region whose sites cannot meet the tenant's policy).
//!
//! Policies are stored as `nuage-placement`'s canonical JSON, in the tenant
//! record (identity service) and in the bucket record (storage service); the
//! rules (`narrows`, `site_verdict`) are `nuage-placement`'s, never redone
//! here. What this module must never do: store a policy it has not parsed,
//! let a bucket's policy widen its tenant's, or let a tenant's change leave
//! a bucket policy that no longer narrows it.

use crate::error::ApiError;
use crate::{AdminApi, ApiResult, json_response, no_content};
use bytes::Bytes;
use http::StatusCode;
use nuage_placement::{PolicyRule, ResidencyPolicy, SiteRejection, Topology};
use nuage_storage::{Admission, BucketAdmission, BucketRecord};
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Bucket names listed in one refusal; the count says how many more.
const CONFLICTING_BUCKETS_LISTED_MAX: usize = 20;
/// Site reasons quoted in one refusal.
const SITE_REASONS_MAX: usize = 8;

/// Why a region cannot satisfy a policy: the rule, and in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unsatisfiable {
    pub rule: PolicyRule,
    pub reason: String,
}

/// Whether the sites of `region` in `topology` can hold data under `policy`:
/// some comply (location, qualifications, operator control), at least
/// `min_sites` of them, with at least as many nodes as a blob needs. Node
/// states and free space are not looked at: this is the static check made
/// when a policy is set or a bucket created, not a placement.
///
/// # Errors
/// The first rule the region's sites cannot meet.
pub fn region_feasibility(
    topology: &Topology,
    policy: &ResidencyPolicy,
    region: &str,
) -> Result<(), Unsatisfiable> {
    let sites: Vec<_> = topology
        .sites()
        .values()
        .filter(|s| s.region == region)
        .collect();
    let mut compliant = BTreeSet::new();
    let mut rejections = Vec::new();
    for site in &sites {
        match policy.site_verdict(site) {
            Ok(()) => {
                compliant.insert(site.id.as_str());
            }
            Err(rejection) => rejections.push((site.id.as_str(), rejection)),
        }
    }
    if compliant.is_empty() {
        let rule = match rejections.first() {
            Some((_, SiteRejection::Qualifications { .. })) => PolicyRule::Qualifications,
            Some((_, SiteRejection::OperatorControl { .. })) => PolicyRule::OperatorControl,
            Some((_, SiteRejection::Location { .. })) | None => PolicyRule::Location,
        };
        let reasons: Vec<String> = rejections
            .iter()
            .take(SITE_REASONS_MAX)
            .map(|(id, why)| format!("{id}: {why}"))
            .collect();
        let reason = if sites.is_empty() {
            format!("region `{region}` has no site in the topology")
        } else {
            format!(
                "no site of region `{region}` complies with the policy (allowed: {}): {}",
                policy.places_text(),
                reasons.join("; ")
            )
        };
        return Err(Unsatisfiable { rule, reason });
    }
    if compliant.len() < policy.min_sites as usize {
        return Err(Unsatisfiable {
            rule: PolicyRule::MinSites,
            reason: format!(
                "the policy needs {} distinct sites; region `{region}` has {} compliant site(s)",
                policy.min_sites,
                compliant.len()
            ),
        });
    }
    let nodes = topology
        .nodes()
        .values()
        .filter(|n| compliant.contains(n.site.as_str()))
        .count();
    if nodes < policy.width() as usize {
        return Err(Unsatisfiable {
            rule: PolicyRule::Durability,
            reason: format!(
                "the policy's {} needs {} nodes per blob; the compliant sites of region \
                 `{region}` have {nodes}",
                policy.durability,
                policy.width()
            ),
        });
    }
    Ok(())
}

/// Whether the topology can satisfy a policy in one region, as the API says it.
#[derive(Debug, Clone, Serialize)]
pub struct RegionFeasibility {
    pub region: String,
    pub satisfiable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<PolicyRule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl RegionFeasibility {
    fn of(topology: &Topology, policy: Option<&ResidencyPolicy>, region: &str) -> Self {
        let verdict = policy.map_or(Ok(()), |p| region_feasibility(topology, p, region));
        let (rule, reason) = match verdict {
            Ok(()) => (None, None),
            Err(u) => (Some(u.rule), Some(u.reason)),
        };
        Self {
            region: region.to_owned(),
            satisfiable: rule.is_none(),
            rule,
            reason,
        }
    }
}

/// `GET|PUT /tenants/{tenant}/residency`.
#[derive(Debug, Serialize)]
pub struct TenantResidencyView {
    pub tenant: String,
    /// The stored policy; null: none (every bucket is bounded by its
    /// region only).
    pub policy: Option<ResidencyPolicy>,
    /// Per region of the topology; absent when the server has no topology.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<RegionFeasibility>>,
}

/// `GET|PUT /tenants/{tenant}/buckets/{bucket}/residency`.
#[derive(Debug, Serialize)]
pub struct BucketResidencyView {
    pub tenant: String,
    pub bucket: String,
    pub region: String,
    /// The bucket's own policy; null: none.
    pub policy: Option<ResidencyPolicy>,
    /// The policy in force: the bucket's own, else its tenant's, else null.
    pub effective: Option<ResidencyPolicy>,
    /// `bucket`, `tenant` or `none`: where `effective` comes from.
    pub effective_source: &'static str,
    /// Whether the bucket's region can satisfy `effective`; absent when the
    /// server has no topology.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feasibility: Option<RegionFeasibility>,
}

/// The policy in force for a bucket, and where it comes from: its own
/// (`bucket`), else its tenant's (`tenant`), else none (`none`).
fn effective(
    own: Option<ResidencyPolicy>,
    tenant: Option<ResidencyPolicy>,
) -> (Option<ResidencyPolicy>, &'static str) {
    match (own, tenant) {
        (Some(own), _) => (Some(own), "bucket"),
        (None, Some(tenant)) => (Some(tenant), "tenant"),
        (None, None) => (None, "none"),
    }
}

/// Parses a stored policy. A stored one was checked when it was set, so a
/// failure here is damage (or a newer format), reported, never ignored.
fn stored(text: Option<&str>, whose: &str) -> Result<Option<ResidencyPolicy>, ApiError> {
    text.map(|t| {
        ResidencyPolicy::from_json(t).map_err(|e| {
            ApiError::internal(
                &format!("the stored residency policy of {whose} does not parse"),
                &e,
            )
        })
    })
    .transpose()
}

fn parse_policy(body: &Bytes) -> Result<ResidencyPolicy, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidResidencyPolicy",
            "this request needs a residency policy (JSON) as its body",
        ));
    }
    let text = std::str::from_utf8(body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidResidencyPolicy",
            "the body is not UTF-8",
        )
    })?;
    ResidencyPolicy::from_json(text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidResidencyPolicy",
            e.to_string(),
        )
    })
}

fn unsatisfiable(bucket_region: &str, u: &Unsatisfiable) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "ResidencyUnsatisfiable",
        format!(
            "the topology cannot satisfy this policy in region `{bucket_region}` (rule: {}): {}",
            u.rule, u.reason
        ),
    )
    .with_detail(serde_json::json!({ "rule": u.rule, "reason": u.reason }))
}

impl AdminApi {
    async fn owned_bucket(&self, tenant_id: &str, bucket: &str) -> Result<BucketRecord, ApiError> {
        let not_found = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NoSuchBucket",
                format!("the tenant owns no bucket named `{bucket}`"),
            )
        };
        match self.storage.bucket(bucket).await {
            Ok(record) if record.owner == tenant_id => Ok(record),
            Ok(_) | Err(nuage_storage::StorageError::NoSuchBucket) => Err(not_found()),
            Err(e) => Err(e.into()),
        }
    }

    fn tenant_view(
        &self,
        tenant_id: String,
        policy: Option<ResidencyPolicy>,
    ) -> TenantResidencyView {
        let regions = self.topology.as_ref().map(|topology| {
            topology
                .regions()
                .keys()
                .map(|region| RegionFeasibility::of(topology, policy.as_ref(), region))
                .collect()
        });
        TenantResidencyView {
            tenant: tenant_id,
            policy,
            regions,
        }
    }

    fn bucket_view(
        &self,
        tenant_id: String,
        record: &BucketRecord,
        tenant_policy: Option<ResidencyPolicy>,
        own: Option<ResidencyPolicy>,
    ) -> BucketResidencyView {
        let (effective, effective_source) = effective(own.clone(), tenant_policy);
        let feasibility = self
            .topology
            .as_ref()
            .map(|t| RegionFeasibility::of(t, effective.as_ref(), &record.region));
        BucketResidencyView {
            tenant: tenant_id,
            bucket: record.name.clone(),
            region: record.region.clone(),
            policy: own,
            effective,
            effective_source,
            feasibility,
        }
    }

    pub(crate) async fn get_tenant_residency(&self, tenant: &str) -> ApiResult {
        let tenant = self.iam.tenant(tenant).await?;
        let policy = stored(tenant.residency_policy.as_deref(), &tenant.id)?;
        Ok(json_response(
            StatusCode::OK,
            &self.tenant_view(tenant.id, policy),
        ))
    }

    /// Sets (`Some`) or removes the tenant's policy. Refused when a bucket
    /// policy of the tenant would no longer narrow it, when a bucket that
    /// follows the tenant's policy sits in a region that cannot satisfy it,
    /// or when no region of the topology can.
    pub(crate) async fn put_tenant_residency(
        &self,
        tenant: &str,
        body: Option<&Bytes>,
    ) -> ApiResult {
        let policy = body.map(parse_policy).transpose()?;
        let tenant = self.iam.tenant(tenant).await?;
        if let Some(policy) = &policy {
            let buckets: Vec<BucketRecord> = self
                .storage
                .list_buckets()
                .await?
                .into_iter()
                .filter(|b| b.owner == tenant.id)
                .collect();
            let mut conflicts = Vec::new();
            for bucket in &buckets {
                let own = stored(bucket.residency_policy.as_deref(), &bucket.name)?;
                let why = match own {
                    Some(own) => own.narrows(policy).err().map(|e| format!("{e}")),
                    None => self.topology.as_ref().and_then(|t| {
                        region_feasibility(t, policy, &bucket.region)
                            .err()
                            .map(|u| {
                                format!("its region cannot satisfy it ({}): {}", u.rule, u.reason)
                            })
                    }),
                };
                if let Some(why) = why {
                    conflicts.push((bucket.name.clone(), why));
                }
            }
            if !conflicts.is_empty() {
                let listed: Vec<String> = conflicts
                    .iter()
                    .take(CONFLICTING_BUCKETS_LISTED_MAX)
                    .map(|(name, why)| format!("`{name}`: {why}"))
                    .collect();
                let more = conflicts.len().saturating_sub(listed.len());
                let names: Vec<&str> = conflicts
                    .iter()
                    .take(CONFLICTING_BUCKETS_LISTED_MAX)
                    .map(|(name, _)| name.as_str())
                    .collect();
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "ResidencyConflict",
                    format!(
                        "{} bucket(s) of the tenant would not comply with this policy: {}{}; change \
                         or clear their policies first",
                        conflicts.len(),
                        listed.join("; "),
                        if more > 0 { format!(" (and {more} more)") } else { String::new() }
                    ),
                )
                .with_detail(serde_json::json!({ "buckets": names })));
            }
            if let Some(topology) = &self.topology {
                let verdicts: Vec<Result<(), Unsatisfiable>> = topology
                    .regions()
                    .keys()
                    .map(|r| region_feasibility(topology, policy, r))
                    .collect();
                if !verdicts.iter().any(Result::is_ok) {
                    let first = verdicts.into_iter().find_map(Result::err);
                    let (rule, reason) = first.map_or((PolicyRule::Location, String::new()), |u| {
                        (u.rule, u.reason)
                    });
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "ResidencyUnsatisfiable",
                        format!("no region of the topology can satisfy this policy (rule: {rule}): {reason}"),
                    )
                    .with_detail(serde_json::json!({ "rule": rule, "reason": reason })));
                }
            }
        }
        let tenant = self
            .iam
            .set_tenant_residency_policy(&tenant.id, policy.as_ref().map(ResidencyPolicy::to_json))
            .await?;
        tracing::info!(tenant = %tenant.id, policy = ?tenant.residency_policy, "admin: tenant residency policy set");
        if policy.is_none() {
            return Ok(no_content());
        }
        Ok(json_response(
            StatusCode::OK,
            &self.tenant_view(tenant.id, policy),
        ))
    }

    /// A bucket of the tenant and the policy in force for it: its own, else
    /// its tenant's (`source` says which), else None (`default`: the
    /// server's default policy applies).
    pub(crate) async fn effective_policy(
        &self,
        tenant: &str,
        bucket: &str,
    ) -> Result<(String, BucketRecord, Option<ResidencyPolicy>, &'static str), ApiError> {
        let tenant = self.iam.tenant(tenant).await?;
        let record = self.owned_bucket(&tenant.id, bucket).await?;
        let own = stored(record.residency_policy.as_deref(), &record.name)?;
        let tenant_policy = stored(tenant.residency_policy.as_deref(), &tenant.id)?;
        let (effective, source) = match effective(own, tenant_policy) {
            (None, _) => (None, "default"),
            found => found,
        };
        Ok((tenant.id, record, effective, source))
    }

    pub(crate) async fn get_bucket_residency(&self, tenant: &str, bucket: &str) -> ApiResult {
        let tenant = self.iam.tenant(tenant).await?;
        let record = self.owned_bucket(&tenant.id, bucket).await?;
        let tenant_policy = stored(tenant.residency_policy.as_deref(), &tenant.id)?;
        let own = stored(record.residency_policy.as_deref(), &record.name)?;
        Ok(json_response(
            StatusCode::OK,
            &self.bucket_view(tenant.id, &record, tenant_policy, own),
        ))
    }

    /// Sets (`Some`) or removes the bucket's own policy. A policy must narrow
    /// the tenant's (422 `PolicyNotNarrower`, with the rule) and be
    /// satisfiable in the bucket's region (422 `ResidencyUnsatisfiable`).
    pub(crate) async fn put_bucket_residency(
        &self,
        tenant: &str,
        bucket: &str,
        body: Option<&Bytes>,
    ) -> ApiResult {
        let policy = body.map(parse_policy).transpose()?;
        let tenant = self.iam.tenant(tenant).await?;
        let record = self.owned_bucket(&tenant.id, bucket).await?;
        let tenant_policy = stored(tenant.residency_policy.as_deref(), &tenant.id)?;
        if let Some(policy) = &policy {
            if let Some(parent) = &tenant_policy
                && let Err(e) = policy.narrows(parent)
            {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "PolicyNotNarrower",
                    format!(
                        "a bucket's residency policy may only narrow its tenant's ({}): {}",
                        e.rule, e.why
                    ),
                )
                .with_detail(serde_json::json!({ "rule": e.rule, "reason": e.why })));
            }
            if let Some(topology) = &self.topology
                && let Err(u) = region_feasibility(topology, policy, &record.region)
            {
                return Err(unsatisfiable(&record.region, &u));
            }
        }
        let record = self
            .storage
            .set_bucket_residency_policy(
                &record.name,
                policy.as_ref().map(ResidencyPolicy::to_json),
            )
            .await?;
        tracing::info!(tenant = %tenant.id, bucket = %record.name, policy = ?record.residency_policy, "admin: bucket residency policy set");
        if policy.is_none() {
            return Ok(no_content());
        }
        Ok(json_response(
            StatusCode::OK,
            &self.bucket_view(tenant.id, &record, tenant_policy, policy),
        ))
    }
}

/// The storage service's [`BucketAdmission`]: a tenant with a residency
/// policy may create a bucket only in a region whose sites can satisfy it.
/// A tenant without a policy may use every region.
pub struct BucketResidency {
    iam: nuage_iam::Iam,
    topology: Arc<Topology>,
}

impl BucketResidency {
    #[must_use]
    pub fn new(iam: nuage_iam::Iam, topology: Arc<Topology>) -> Self {
        Self { iam, topology }
    }

    async fn decide(&self, tenant: &str, region: &str) -> Result<Admission, String> {
        let tenant = self.iam.tenant(tenant).await.map_err(|e| e.to_string())?;
        let Some(text) = tenant.residency_policy.as_deref() else {
            return Ok(Admission::Allowed);
        };
        let policy = ResidencyPolicy::from_json(text).map_err(|e| {
            format!(
                "the stored residency policy of tenant {} does not parse: {e}",
                tenant.id
            )
        })?;
        Ok(match region_feasibility(&self.topology, &policy, region) {
            Ok(()) => Admission::Allowed,
            Err(u) => Admission::Refused(format!(
                "the tenant's residency policy cannot be met in region `{region}` (rule: {}): {}",
                u.rule, u.reason
            )),
        })
    }
}

impl BucketAdmission for BucketResidency {
    fn admit<'a>(
        &'a self,
        tenant: &'a str,
        region: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Admission, String>> {
        Box::pin(self.decide(tenant, region))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TOPOLOGY: &str = r#"
[[region]]
id = "fr-par"
[[region]]
id = "de-fra"
[[site]]
id = "par1"
region = "fr-par"
country = "FR"
operator = { entity = "A", country_of_control = "FR" }
qualifications = ["secnumcloud"]
[[site]]
id = "par2"
region = "fr-par"
country = "FR"
operator = { entity = "B", country_of_control = "US" }
[[site]]
id = "fra1"
region = "de-fra"
country = "DE"
operator = { entity = "C", country_of_control = "DE" }
[[node]]
id = "par1-n1"
site = "par1"
endpoint = "https://par1-n1"
capacity_bytes = 1
[[node]]
id = "par2-n1"
site = "par2"
endpoint = "https://par2-n1"
capacity_bytes = 1
[[node]]
id = "fra1-n1"
site = "fra1"
endpoint = "https://fra1-n1"
capacity_bytes = 1
"#;

    fn check(policy: &str, region: &str) -> Result<(), Unsatisfiable> {
        let topology = Topology::from_toml(TOPOLOGY).unwrap();
        region_feasibility(
            &topology,
            &ResidencyPolicy::from_json(policy).unwrap(),
            region,
        )
    }

    #[test]
    fn each_rule_a_region_cannot_meet_is_named() {
        let fr = r#"{"allowed_countries":["FR"],"durability":{"replicas":2},"min_sites":2}"#;
        assert_eq!(check(fr, "fr-par"), Ok(()));
        let e = check(fr, "de-fra").unwrap_err();
        assert_eq!(e.rule, PolicyRule::Location);
        assert!(e.reason.contains("fra1"), "{}", e.reason);
        // Only par1 holds the qualification: one site, not two.
        let qualified = r#"{"allowed_countries":["FR"],"required_qualifications":["secnumcloud"],"durability":{"replicas":2},"min_sites":2}"#;
        assert_eq!(
            check(qualified, "fr-par").unwrap_err().rule,
            PolicyRule::MinSites
        );
        // French control leaves par1 and its single node: not three replicas.
        let controlled = r#"{"allowed_countries":["FR"],"allowed_operator_countries":["FR"],"durability":{"replicas":3}}"#;
        assert_eq!(
            check(controlled, "fr-par").unwrap_err().rule,
            PolicyRule::Durability
        );
        let us_only = r#"{"allowed_countries":["FR"],"allowed_operator_countries":["US"],"required_qualifications":["secnumcloud"],"durability":{"replicas":1}}"#;
        // par1 lacks nothing but its operator is French; par2 lacks the qualification.
        let e = check(us_only, "fr-par").unwrap_err();
        assert_eq!(e.rule, PolicyRule::OperatorControl, "{}", e.reason);
        let e = check(fr, "nowhere").unwrap_err();
        assert!(e.reason.contains("no site"), "{}", e.reason);
    }
}
