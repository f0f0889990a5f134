//! [`ApiError`]: an IAM/STS error as it goes on the wire (status, code,
//! message), and the single mapping from [`IamError`] to those codes.

use crate::Api;
use http::StatusCode;
use nuage_iam::IamError;

/// An error response: `<ErrorResponse><Error><Type/><Code/><Message/></Error>...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// `Sender` (the client's fault) or `Receiver` (ours).
    pub(crate) fn kind(&self) -> &'static str {
        if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        }
    }

    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }

    pub(crate) fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidInput", message)
    }

    pub(crate) fn malformed_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MalformedQueryString", message)
    }

    pub(crate) fn limit_exceeded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "LimitExceeded", message)
    }

    pub(crate) fn access_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDenied", message)
    }

    pub(crate) fn no_such_entity(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NoSuchEntity", message)
    }

    pub(crate) fn invalid_action(action: &str, version: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!("Could not find operation {action} for version {version}"),
        )
    }

    pub(crate) fn invalid_client_token_id() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        )
    }

    pub(crate) fn signature_does_not_match() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method.",
        )
    }

    pub(crate) fn incomplete_signature(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "IncompleteSignature", message)
    }

    pub(crate) fn missing_authentication() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        )
    }

    /// Signature refusals, as IAM and STS name them.
    pub(crate) fn from_sigv4(error: nuage_sigv4::SigV4Error) -> Self {
        use nuage_sigv4::SigV4Error;
        match error {
            SigV4Error::Incomplete(m) => Self::incomplete_signature(m),
            e @ SigV4Error::WrongService { .. } => Self::incomplete_signature(e.to_string()),
            SigV4Error::Mismatch => Self::signature_does_not_match(),
            SigV4Error::Expired(m) => Self::new(StatusCode::BAD_REQUEST, "RequestExpired", m),
        }
    }

    /// The one place identity-service refusals become wire codes. STS names
    /// bad input `ValidationError` where IAM says `InvalidInput`.
    pub(crate) fn from_iam(error: IamError, api: Api) -> Self {
        match error {
            IamError::NoSuchEntity(m) => Self::no_such_entity(m),
            IamError::EntityAlreadyExists(m) => {
                Self::new(StatusCode::CONFLICT, "EntityAlreadyExists", m)
            }
            IamError::DeleteConflict(m) => Self::new(StatusCode::CONFLICT, "DeleteConflict", m),
            IamError::LimitExceeded(m) => Self::limit_exceeded(m),
            IamError::MalformedPolicyDocument(m) => {
                Self::new(StatusCode::BAD_REQUEST, "MalformedPolicyDocument", m)
            }
            IamError::InvalidInput(m) => match api {
                Api::Iam => Self::invalid_input(m),
                Api::Sts => Self::validation(m),
            },
            IamError::AccessDenied(m) => Self::access_denied(m),
            // STS documents ExpiredToken as a 400 (ExpiredTokenException);
            // the CLI acts on the code, not the status.
            IamError::ExpiredToken => Self::new(
                StatusCode::BAD_REQUEST,
                "ExpiredToken",
                "The security token included in the request is expired",
            ),
            IamError::InvalidClientTokenId => Self::invalid_client_token_id(),
            IamError::TenantSuspended => {
                Self::access_denied("All access to this tenant has been disabled.")
            }
            IamError::Internal(m) => {
                // Logged here, where it is handled; the client learns only that it failed.
                tracing::error!(error = %m, "identity service failure");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ServiceFailure",
                    "The request processing has failed because of an unknown error.",
                )
            }
        }
    }
}
