//! Residency policies: where a tenant's or a bucket's data may live, with
//! what qualifications, under whose control, and how many copies on how
//! many sites.
//!
//! A policy is always valid once deserialized (`try_from` a raw form), so no
//! caller can place data under a policy that says nothing. This module
//! decides about one site at a time ([`ResidencyPolicy::site_verdict`]) and
//! whether one policy narrows another; it knows nothing of nodes.

use crate::geo::{CountryCode, Jurisdiction, Qualification};
use crate::limits::{PLACEMENT_WIDTH_MAX, POLICY_JSON_BYTES_MAX, POLICY_LIST_ENTRIES_MAX};
use crate::topology::Site;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// How a blob survives the loss of nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Durability {
    /// Whole copies on this many nodes: `{"replicas": 3}`.
    Replicas(u32),
    /// Reed-Solomon style shards: `data` shards rebuild the blob, `parity`
    /// more are stored, one per node: `{"erasure_coding": {"data": 4,
    /// "parity": 2}}`. Placement chooses the `data + parity` nodes; the
    /// cluster stores one Reed-Solomon shard on each.
    ErasureCoding {
        /// Shards needed to rebuild.
        data: u32,
        /// Extra shards.
        parity: u32,
    },
}

impl Durability {
    /// How many nodes hold a piece of each blob.
    #[must_use]
    pub fn width(&self) -> u32 {
        match *self {
            Self::Replicas(n) => n,
            Self::ErasureCoding { data, parity } => data.saturating_add(parity),
        }
    }

    /// How many of those nodes can be lost without losing the blob.
    #[must_use]
    pub fn losses_tolerated(&self) -> u32 {
        match *self {
            Self::Replicas(n) => n.saturating_sub(1),
            Self::ErasureCoding { parity, .. } => parity,
        }
    }

    /// The bytes each chosen node stores for a blob of `size_bytes`.
    #[must_use]
    pub fn bytes_per_node(&self, size_bytes: u64) -> u64 {
        match *self {
            Self::Replicas(_) => size_bytes,
            Self::ErasureCoding { data, .. } => size_bytes.div_ceil(u64::from(data.max(1))),
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Replicas(n) => write!(f, "{n} replicas"),
            Self::ErasureCoding { data, parity } => write!(f, "erasure coding {data}+{parity}"),
        }
    }
}

/// Where data may live, and how it is kept. JSON schema in
/// `docs/residency.md`; an absent list is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPolicy")]
pub struct ResidencyPolicy {
    /// Sites in these countries are allowed.
    pub allowed_countries: BTreeSet<CountryCode>,
    /// Sites under any of these jurisdictions are allowed (a site is allowed
    /// when its country is in `allowed_countries` *or* one of its
    /// jurisdictions is here).
    pub allowed_jurisdictions: BTreeSet<Jurisdiction>,
    /// A site must hold every one of these.
    pub required_qualifications: BTreeSet<Qualification>,
    /// When present, a site's operator must be controlled from one of these
    /// countries (keeps data away from operators that a foreign law reaches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_operator_countries: Option<BTreeSet<CountryCode>>,
    /// Copies or shards per blob.
    pub durability: Durability,
    /// Each blob spans at least this many distinct sites.
    pub min_sites: u32,
}

/// The wire form, checked into a [`ResidencyPolicy`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    allowed_countries: BTreeSet<CountryCode>,
    #[serde(default)]
    allowed_jurisdictions: BTreeSet<Jurisdiction>,
    #[serde(default)]
    required_qualifications: BTreeSet<Qualification>,
    #[serde(default)]
    allowed_operator_countries: Option<BTreeSet<CountryCode>>,
    durability: Durability,
    #[serde(default = "one")]
    min_sites: u32,
}

fn one() -> u32 {
    1
}

impl TryFrom<RawPolicy> for ResidencyPolicy {
    type Error = PolicyError;
    fn try_from(raw: RawPolicy) -> Result<Self, PolicyError> {
        Self::new(
            raw.allowed_countries,
            raw.allowed_jurisdictions,
            raw.required_qualifications,
            raw.allowed_operator_countries,
            raw.durability,
            raw.min_sites,
        )
    }
}

/// An invalid policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not the JSON schema.
    #[error("residency policy: {0}")]
    Json(String),
    /// A policy that no topology can satisfy, or that says nothing.
    #[error("{0}")]
    Invalid(String),
}

impl ResidencyPolicy {
    /// A checked policy.
    ///
    /// # Errors
    /// No allowed place, a width of zero or above the limit, `min_sites`
    /// zero or above the width, a list too long.
    pub fn new(
        allowed_countries: BTreeSet<CountryCode>,
        allowed_jurisdictions: BTreeSet<Jurisdiction>,
        required_qualifications: BTreeSet<Qualification>,
        allowed_operator_countries: Option<BTreeSet<CountryCode>>,
        durability: Durability,
        min_sites: u32,
    ) -> Result<Self, PolicyError> {
        let invalid = |why: String| Err(PolicyError::Invalid(why));
        if allowed_countries.is_empty() && allowed_jurisdictions.is_empty() {
            // Deliberately no "anywhere" default: a residency policy names
            // where data may go.
            return invalid(
                "allow at least one country (`allowed_countries`) or jurisdiction \
                 (`allowed_jurisdictions`)"
                    .to_string(),
            );
        }
        let longest = [
            allowed_countries.len(),
            allowed_jurisdictions.len(),
            required_qualifications.len(),
            allowed_operator_countries.as_ref().map_or(0, BTreeSet::len),
        ];
        if longest.iter().any(|n| *n > POLICY_LIST_ENTRIES_MAX) {
            return invalid(format!(
                "a list has more than {POLICY_LIST_ENTRIES_MAX} entries"
            ));
        }
        if allowed_operator_countries
            .as_ref()
            .is_some_and(BTreeSet::is_empty)
        {
            return invalid(
                "`allowed_operator_countries` is empty, so no operator qualifies (omit it to \
                 allow any)"
                    .to_string(),
            );
        }
        match durability {
            Durability::Replicas(0) => return invalid("`replicas` is 0".to_string()),
            Durability::ErasureCoding { data: 0, .. } => {
                return invalid("erasure coding with 0 data shards".to_string());
            }
            Durability::ErasureCoding { parity: 0, .. } => {
                return invalid(
                    "erasure coding with 0 parity shards tolerates no loss".to_string(),
                );
            }
            _ => {}
        }
        let width = durability.width();
        if width > PLACEMENT_WIDTH_MAX {
            return invalid(format!(
                "{durability} needs {width} nodes per blob, more than {PLACEMENT_WIDTH_MAX}"
            ));
        }
        if min_sites == 0 || min_sites > width {
            return invalid(format!(
                "`min_sites` is {min_sites}: it must be between 1 and the {width} nodes each \
                 blob is stored on"
            ));
        }
        Ok(Self {
            allowed_countries,
            allowed_jurisdictions,
            required_qualifications,
            allowed_operator_countries,
            durability,
            min_sites,
        })
    }

    /// Parses the JSON form (admin API, `nuage residency`).
    ///
    /// # Errors
    /// [`PolicyError::Json`] for anything not the schema or not valid.
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        if text.len() > POLICY_JSON_BYTES_MAX {
            return Err(PolicyError::Json(format!(
                "larger than {POLICY_JSON_BYTES_MAX} bytes"
            )));
        }
        serde_json::from_str(text).map_err(|e| PolicyError::Json(e.to_string()))
    }

    /// The JSON form (keys in schema order, lists sorted).
    #[must_use]
    pub fn to_json(&self) -> String {
        // Serializing plain data to a string cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Nodes each blob is stored on.
    #[must_use]
    pub fn width(&self) -> u32 {
        self.durability.width()
    }

    /// Whether the policy lets data on `site`, and if not, why.
    ///
    /// # Errors
    /// The first rule the site breaks.
    pub fn site_verdict(&self, site: &Site) -> Result<(), SiteRejection> {
        let located = self.allowed_countries.contains(&site.country)
            || site
                .jurisdictions
                .iter()
                .any(|j| self.allowed_jurisdictions.contains(j));
        if !located {
            return Err(SiteRejection::Location {
                country: site.country,
                jurisdictions: site.jurisdictions.iter().cloned().collect(),
            });
        }
        let missing: Vec<Qualification> = self
            .required_qualifications
            .difference(&site.qualifications)
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(SiteRejection::Qualifications { missing });
        }
        if let Some(allowed) = &self.allowed_operator_countries
            && !allowed.contains(&site.operator.country_of_control)
        {
            return Err(SiteRejection::OperatorControl {
                entity: site.operator.entity.clone(),
                country_of_control: site.operator.country_of_control,
            });
        }
        Ok(())
    }

    /// Whether `self` (a bucket's policy) only narrows `parent` (its
    /// tenant's): every site `self` allows, in any topology, `parent` allows
    /// too; it requires every qualification and operator rule `parent` does;
    /// it tolerates at least as many lost nodes, on at least as many sites.
    ///
    /// The check does not look at a topology, so that adding a site later
    /// never makes a bucket's policy wider than its tenant's. It knows that
    /// `FR` is inside `EU` and `EEA`; an operator's label is only covered by
    /// the same label.
    ///
    /// # Errors
    /// The first rule that `self` widens.
    pub fn narrows(&self, parent: &ResidencyPolicy) -> Result<(), NotNarrower> {
        let places = self
            .allowed_countries
            .iter()
            .map(|c| Jurisdiction::Country(*c))
            .chain(self.allowed_jurisdictions.iter().cloned());
        for place in places {
            if !parent.covers(&place) {
                return Err(NotNarrower {
                    rule: PolicyRule::Location,
                    why: format!(
                        "it allows {place}, which the parent policy ({}) does not wholly allow",
                        parent.places_text()
                    ),
                });
            }
        }
        let missing: Vec<String> = parent
            .required_qualifications
            .difference(&self.required_qualifications)
            .map(ToString::to_string)
            .collect();
        if !missing.is_empty() {
            return Err(NotNarrower {
                rule: PolicyRule::Qualifications,
                why: format!(
                    "it does not require {}, which the parent policy requires",
                    missing.join(", ")
                ),
            });
        }
        if let Some(parent_operators) = &parent.allowed_operator_countries {
            match &self.allowed_operator_countries {
                None => {
                    return Err(NotNarrower {
                        rule: PolicyRule::OperatorControl,
                        why: format!(
                            "it allows operators controlled from anywhere; the parent policy \
                             only from {}",
                            join(parent_operators)
                        ),
                    });
                }
                Some(own) => {
                    let extra: Vec<&CountryCode> = own.difference(parent_operators).collect();
                    if !extra.is_empty() {
                        return Err(NotNarrower {
                            rule: PolicyRule::OperatorControl,
                            why: format!(
                                "it allows operators controlled from {}, which the parent \
                                 policy does not",
                                join(extra)
                            ),
                        });
                    }
                }
            }
        }
        if self.durability.losses_tolerated() < parent.durability.losses_tolerated() {
            return Err(NotNarrower {
                rule: PolicyRule::Durability,
                why: format!(
                    "{} tolerates the loss of {} node(s), the parent policy's {} of {}",
                    self.durability,
                    self.durability.losses_tolerated(),
                    parent.durability,
                    parent.durability.losses_tolerated()
                ),
            });
        }
        if self.min_sites < parent.min_sites {
            return Err(NotNarrower {
                rule: PolicyRule::MinSites,
                why: format!(
                    "it needs {} distinct site(s), the parent policy {}",
                    self.min_sites, parent.min_sites
                ),
            });
        }
        Ok(())
    }

    /// Whether every site that falls under `place` is allowed here, whatever
    /// the topology.
    fn covers(&self, place: &Jurisdiction) -> bool {
        let exact = match place {
            Jurisdiction::Country(c) => self.allowed_countries.contains(c),
            _ => false,
        } || self.allowed_jurisdictions.contains(place);
        if exact {
            return true;
        }
        // A site under `place` is in one of its countries, and falls under
        // every known jurisdiction of that country; a label's sites could be
        // anywhere.
        place.countries().is_some_and(|countries| {
            countries.iter().all(|country| {
                self.allowed_countries.contains(country)
                    || self
                        .allowed_jurisdictions
                        .iter()
                        .any(|j| j.contains_country(*country))
            })
        })
    }

    /// `FR, EU` for messages.
    #[must_use]
    pub fn places_text(&self) -> String {
        let places: Vec<String> = self
            .allowed_countries
            .iter()
            .map(ToString::to_string)
            .chain(self.allowed_jurisdictions.iter().map(ToString::to_string))
            .collect();
        places.join(", ")
    }
}

fn join<'a, T: fmt::Display + 'a>(items: impl IntoIterator<Item = &'a T>) -> String {
    items
        .into_iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a site may not hold data under a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum SiteRejection {
    /// Neither its country nor any of its jurisdictions is allowed.
    Location {
        /// Its country.
        country: CountryCode,
        /// Its jurisdictions.
        jurisdictions: Vec<Jurisdiction>,
    },
    /// It lacks required qualifications.
    Qualifications {
        /// Those it lacks.
        missing: Vec<Qualification>,
    },
    /// Its operator is controlled from a country not allowed.
    OperatorControl {
        /// The operator.
        entity: String,
        /// Where it is controlled from.
        country_of_control: CountryCode,
    },
}

impl fmt::Display for SiteRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Location {
                country,
                jurisdictions,
            } => write!(
                f,
                "in {country} (under {}), not an allowed place",
                join(jurisdictions)
            ),
            Self::Qualifications { missing } => write!(f, "lacks {}", join(missing)),
            Self::OperatorControl {
                entity,
                country_of_control,
            } => write!(
                f,
                "operated by {entity}, controlled from {country_of_control}, not an allowed \
                 country of control"
            ),
        }
    }
}

/// The rule a policy breaks when it does not narrow its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyRule {
    /// Allowed countries and jurisdictions.
    Location,
    /// Required qualifications.
    Qualifications,
    /// Allowed operator countries of control.
    OperatorControl,
    /// Replicas or erasure coding.
    Durability,
    /// Minimum distinct sites.
    MinSites,
}

impl fmt::Display for PolicyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Location => "location",
            Self::Qualifications => "qualifications",
            Self::OperatorControl => "operator control",
            Self::Durability => "durability",
            Self::MinSites => "minimum sites",
        })
    }
}

/// A bucket policy that would widen its tenant's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the policy does not narrow its parent's ({rule}): {why}")]
pub struct NotNarrower {
    /// Which rule.
    pub rule: PolicyRule,
    /// Why, in words.
    pub why: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::topology::tests::example;

    fn policy(json: &str) -> ResidencyPolicy {
        ResidencyPolicy::from_json(json).unwrap()
    }

    #[test]
    fn json_round_trips_in_schema_order() {
        let text = r#"{"allowed_countries":["FR"],"allowed_jurisdictions":["EU"],"required_qualifications":["secnumcloud"],"allowed_operator_countries":["FR"],"durability":{"replicas":3},"min_sites":2}"#;
        let parsed = policy(text);
        assert_eq!(parsed.to_json(), text);
        let ec = policy(
            r#"{"allowed_jurisdictions":["EEA"],"durability":{"erasure_coding":{"data":4,"parity":2}}}"#,
        );
        assert_eq!(ec.width(), 6);
        assert_eq!(ec.min_sites, 1);
        assert_eq!(ec.durability.bytes_per_node(10), 3);
        assert_eq!(
            ec.to_json(),
            r#"{"allowed_countries":[],"allowed_jurisdictions":["EEA"],"required_qualifications":[],"durability":{"erasure_coding":{"data":4,"parity":2}},"min_sites":1}"#
        );
    }

    #[test]
    fn invalid_policies_are_refused_with_reasons() {
        for (json, needle) in [
            (r#"{"durability":{"replicas":3}}"#, "allow at least one"),
            (
                r#"{"allowed_countries":["FR"],"durability":{"replicas":0}}"#,
                "`replicas` is 0",
            ),
            (
                r#"{"allowed_countries":["FR"],"durability":{"replicas":2},"min_sites":3}"#,
                "`min_sites` is 3",
            ),
            (
                r#"{"allowed_countries":["FR"],"durability":{"replicas":99}}"#,
                "more than 32",
            ),
            (
                r#"{"allowed_countries":["UK"],"durability":{"replicas":3}}"#,
                "did you mean `GB`",
            ),
            (
                r#"{"allowed_countries":["FR"],"durability":{"replicas":3},"colour":"blue"}"#,
                "unknown field",
            ),
            (
                r#"{"allowed_countries":["FR"],"allowed_operator_countries":[],"durability":{"replicas":1}}"#,
                "no operator",
            ),
            (
                r#"{"allowed_countries":["FR"],"durability":{"erasure_coding":{"data":4,"parity":0}}}"#,
                "tolerates no loss",
            ),
            (
                r#"{"allowed_countries":["FR"]}"#,
                "missing field `durability`",
            ),
        ] {
            let error = ResidencyPolicy::from_json(json).unwrap_err().to_string();
            assert!(error.contains(needle), "{json}: {error}");
        }
    }

    #[test]
    fn site_verdicts_follow_each_rule() {
        let topology = example();
        let site = |id: &str| topology.site(id).unwrap();
        let eu = policy(r#"{"allowed_jurisdictions":["EU"],"durability":{"replicas":3}}"#);
        assert!(eu.site_verdict(site("par1")).is_ok());
        assert!(eu.site_verdict(site("fra1")).is_ok());
        assert!(matches!(
            eu.site_verdict(site("iad1")),
            Err(SiteRejection::Location { .. })
        ));
        let snc = policy(
            r#"{"allowed_countries":["FR"],"required_qualifications":["secnumcloud"],"durability":{"replicas":3}}"#,
        );
        assert!(snc.site_verdict(site("par2")).is_ok());
        assert_eq!(
            snc.site_verdict(site("mrs1")).unwrap_err().to_string(),
            "lacks secnumcloud"
        );
        let controlled = policy(
            r#"{"allowed_countries":["FR"],"allowed_operator_countries":["FR"],"durability":{"replicas":1}}"#,
        );
        assert!(controlled.site_verdict(site("par1")).is_ok());
        assert!(matches!(
            controlled.site_verdict(site("mrs1")),
            Err(SiteRejection::OperatorControl { .. })
        ));
    }

    #[test]
    fn narrowing() {
        let tenant = policy(
            r#"{"allowed_jurisdictions":["EU"],"required_qualifications":["secnumcloud"],"allowed_operator_countries":["FR","DE"],"durability":{"replicas":3},"min_sites":2}"#,
        );
        let fr = policy(
            r#"{"allowed_countries":["FR"],"required_qualifications":["secnumcloud","hds"],"allowed_operator_countries":["FR"],"durability":{"replicas":3},"min_sites":2}"#,
        );
        assert_eq!(fr.narrows(&tenant), Ok(()));
        assert_eq!(tenant.narrows(&tenant), Ok(()));
        let rule = |json: &str| policy(json).narrows(&tenant).unwrap_err().rule;
        assert_eq!(
            rule(
                r#"{"allowed_jurisdictions":["EEA"],"required_qualifications":["secnumcloud"],"allowed_operator_countries":["FR"],"durability":{"replicas":3},"min_sites":2}"#
            ),
            PolicyRule::Location
        );
        assert_eq!(
            rule(
                r#"{"allowed_countries":["CH"],"required_qualifications":["secnumcloud"],"allowed_operator_countries":["FR"],"durability":{"replicas":3},"min_sites":2}"#
            ),
            PolicyRule::Location
        );
        assert_eq!(
            rule(
                r#"{"allowed_countries":["FR"],"allowed_operator_countries":["FR"],"durability":{"replicas":3},"min_sites":2}"#
            ),
            PolicyRule::Qualifications
        );
        assert_eq!(
            rule(
                r#"{"allowed_countries":["FR"],"required_qualifications":["secnumcloud"],"durability":{"replicas":3},"min_sites":2}"#
            ),
            PolicyRule::OperatorControl
        );
        assert_eq!(
            rule(
                r#"{"allowed_countries":["FR"],"required_qualifications":["secnumcloud"],"allowed_operator_countries":["US"],"durability":{"replicas":3},"min_sites":2}"#
            ),
            PolicyRule::OperatorControl
        );
        assert_eq!(
            rule(
                r#"{"allowed_countries":["FR"],"required_qualifications":["secnumcloud"],"allowed_operator_countries":["FR"],"durability":{"replicas":2},"min_sites":2}"#
            ),
            PolicyRule::Durability
        );
        assert_eq!(
            rule(
                r#"{"allowed_countries":["FR"],"required_qualifications":["secnumcloud"],"allowed_operator_countries":["FR"],"durability":{"replicas":3},"min_sites":1}"#
            ),
            PolicyRule::MinSites
        );
        // Erasure coding 4+2 tolerates two losses, like three replicas.
        let ec = policy(
            r#"{"allowed_countries":["DE"],"required_qualifications":["secnumcloud"],"allowed_operator_countries":["DE"],"durability":{"erasure_coding":{"data":4,"parity":2}},"min_sites":3}"#,
        );
        assert_eq!(ec.narrows(&tenant), Ok(()));
        // EEA is wider than EU; EU is inside EEA; a label only covers itself.
        let eea = policy(r#"{"allowed_jurisdictions":["EEA"],"durability":{"replicas":1}}"#);
        let eu = policy(r#"{"allowed_jurisdictions":["EU"],"durability":{"replicas":1}}"#);
        assert!(eu.narrows(&eea).is_ok());
        assert!(eea.narrows(&eu).is_err());
        let eu_and_norway = policy(
            r#"{"allowed_countries":["NO","IS","LI"],"allowed_jurisdictions":["EU"],"durability":{"replicas":1}}"#,
        );
        assert!(eea.narrows(&eu_and_norway).is_ok());
        let label = policy(r#"{"allowed_jurisdictions":["FR-GOV"],"durability":{"replicas":1}}"#);
        assert!(label.narrows(&eu).is_err());
        assert!(eu.narrows(&label).is_err());
        assert!(label.narrows(&label).is_ok());
    }
}
