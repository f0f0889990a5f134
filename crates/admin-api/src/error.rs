//! The admin API's errors and their one mapping to HTTP statuses and JSON
//! bodies (`{"error": {"code": "...", "message": "..."}}`).
//!
//! Internal failures are logged here, where they are turned into a response,
//! and reach the client only as a generic `InternalError`: a backend message
//! may name files or records the operator's client has no business seeing.

use bytes::Bytes;
use http::StatusCode;
use nuage_iam::IamError;
use nuage_storage::StorageError;

/// A refusal or failure, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable code (`NoSuchEntity`, `DeleteConflict`, ...).
    pub code: &'static str,
    pub message: String,
    /// Machine-readable details merged into the error object (a residency
    /// refusal's `rule` and `reason`, the conflicting `buckets`).
    pub detail: Option<serde_json::Value>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// Adds `detail`'s fields (an object) to the error object.
    #[must_use]
    pub(crate) fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the operator token is missing or wrong: send `Authorization: Bearer <token>` \
             with the token from the server's operator-credentials.toml",
        )
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidInput", message)
    }

    pub(crate) fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "admin API: {context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("{context}; the server log has the details"),
        )
    }

    /// The JSON response for this error.
    #[must_use]
    pub fn into_response(self) -> http::Response<Bytes> {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let (Some(serde_json::Value::Object(detail)), Some(object)) =
            (self.detail, error.as_object_mut())
        {
            for (name, value) in detail {
                object.entry(name).or_insert(value);
            }
        }
        let body = serde_json::json!({ "error": error });
        crate::json_response(self.status, &body)
    }
}

impl From<IamError> for ApiError {
    fn from(e: IamError) -> Self {
        let message = e.to_string();
        match e {
            IamError::NoSuchEntity(_) => Self::new(StatusCode::NOT_FOUND, "NoSuchEntity", message),
            IamError::EntityAlreadyExists(_) => {
                Self::new(StatusCode::CONFLICT, "EntityAlreadyExists", message)
            }
            IamError::DeleteConflict(_) => {
                Self::new(StatusCode::CONFLICT, "DeleteConflict", message)
            }
            IamError::LimitExceeded(_) => Self::new(StatusCode::CONFLICT, "LimitExceeded", message),
            IamError::MalformedPolicyDocument(_) => {
                Self::new(StatusCode::BAD_REQUEST, "MalformedPolicyDocument", message)
            }
            IamError::InvalidInput(_) => Self::bad_request(message),
            IamError::TenantSuspended => {
                Self::new(StatusCode::CONFLICT, "TenantSuspended", message)
            }
            // The operator authenticates with its token, never with IAM
            // credentials: these cannot come from the admin API's own calls.
            IamError::AccessDenied(_) | IamError::ExpiredToken | IamError::InvalidClientTokenId => {
                Self::internal("unexpected identity-service refusal", &e)
            }
            IamError::Internal(_) => Self::internal("the identity service failed", &e),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            // A tenant request authenticated just before the suspension wrote
            // into a bucket being purged; purging again finishes the job.
            StorageError::BucketNotEmpty => Self::new(
                StatusCode::CONFLICT,
                "DeleteConflict",
                "a bucket of the tenant received new data while it was being purged; \
                 the tenant stays suspended: run the purge again",
            ),
            other => Self::internal("the storage service failed", &other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_errors_map_to_their_statuses() {
        let cases = [
            (IamError::NoSuchEntity("x".into()), 404, "NoSuchEntity"),
            (
                IamError::EntityAlreadyExists("x".into()),
                409,
                "EntityAlreadyExists",
            ),
            (IamError::DeleteConflict("x".into()), 409, "DeleteConflict"),
            (IamError::LimitExceeded("x".into()), 409, "LimitExceeded"),
            (IamError::InvalidInput("x".into()), 400, "InvalidInput"),
            (
                IamError::Internal("disk on fire".into()),
                500,
                "InternalError",
            ),
        ];
        for (error, status, code) in cases {
            let mapped = ApiError::from(error);
            assert_eq!(mapped.status.as_u16(), status, "{code}");
            assert_eq!(mapped.code, code);
        }
    }

    #[test]
    fn internal_messages_do_not_reach_the_client() {
        let mapped = ApiError::from(IamError::Internal("/var/lib/nuage/meta.redb: EIO".into()));
        assert!(!mapped.message.contains("meta.redb"), "{}", mapped.message);
    }
}
