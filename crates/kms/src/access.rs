//! Key access justifications: every unwrap of a tenant's data key names an
//! [`AccessReason`], and the tenant decides which reasons its data key
//! accepts (Google Key Access Justifications, for Nuage's storage keys).
//!
//! The allowed reasons are a document (namespace [`ACCESS_REASONS`], key =
//! tenant id, value = a JSON array of wire names). When a tenant has none,
//! [`DEFAULT_ALLOWED_REASONS`] apply. An empty list is allowed and refuses
//! every read of the tenant's data until the list is changed again; writes
//! (new data keys) are never refused by reason.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The document namespace of the tenants' allowed reasons.
pub const ACCESS_REASONS: &str = "kms.access-reasons";

/// Why a tenant's data key is being unwrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessReason {
    /// The tenant itself, e.g. one of its S3 requests.
    CustomerInitiatedAccess,
    /// The operator, at the tenant's request (a support case).
    CustomerInitiatedSupport,
    /// The operator, to keep the service running for the tenant.
    OperatorInitiatedService,
    /// The operator, reviewing for abuse, fraud or compliance.
    OperatorInitiatedReview,
    /// The operator's automated systems (replication, repair, compaction).
    OperatorInitiatedSystemOperation,
    /// A legal or government request for the tenant's data.
    ThirdPartyDataRequest,
    /// An access Nuage did not expect and cannot give a reason for.
    ReasonNotExpected,
}

/// The reasons a tenant's data key accepts until the tenant sets its own.
pub const DEFAULT_ALLOWED_REASONS: [AccessReason; 3] = [
    AccessReason::CustomerInitiatedAccess,
    AccessReason::CustomerInitiatedSupport,
    AccessReason::OperatorInitiatedSystemOperation,
];

impl AccessReason {
    /// Every reason, in wire order.
    pub const ALL: [Self; 7] = [
        Self::CustomerInitiatedAccess,
        Self::CustomerInitiatedSupport,
        Self::OperatorInitiatedService,
        Self::OperatorInitiatedReview,
        Self::OperatorInitiatedSystemOperation,
        Self::ThirdPartyDataRequest,
        Self::ReasonNotExpected,
    ];

    /// The wire name, e.g. `CUSTOMER_INITIATED_ACCESS`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CustomerInitiatedAccess => "CUSTOMER_INITIATED_ACCESS",
            Self::CustomerInitiatedSupport => "CUSTOMER_INITIATED_SUPPORT",
            Self::OperatorInitiatedService => "OPERATOR_INITIATED_SERVICE",
            Self::OperatorInitiatedReview => "OPERATOR_INITIATED_REVIEW",
            Self::OperatorInitiatedSystemOperation => "OPERATOR_INITIATED_SYSTEM_OPERATION",
            Self::ThirdPartyDataRequest => "THIRD_PARTY_DATA_REQUEST",
            Self::ReasonNotExpected => "REASON_NOT_EXPECTED",
        }
    }

    /// The reason a wire name denotes; `None` for an unknown name.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for AccessReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for reason in AccessReason::ALL {
            assert_eq!(AccessReason::parse(reason.as_str()), Some(reason));
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
        assert_eq!(AccessReason::parse("customer_initiated_access"), None);
        assert_eq!(AccessReason::parse("GOOGLE_INITIATED_SERVICE"), None);
    }
}
