//! EC2 errors: the one place where failures become EC2's wire codes and
//! HTTP statuses (`<Response><Errors><Error><Code>..`).

use http::StatusCode;
use nuage_compute::ComputeError;

/// An error in EC2's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Ec2Error {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

pub type Ec2Result<T> = Result<T, Ec2Error>;

impl Ec2Error {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::bad_request("InvalidParameterValue", message)
    }

    pub fn missing_parameter(name: &str) -> Self {
        Self::bad_request(
            "MissingParameter",
            format!("The request must contain the parameter {name}"),
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "UnauthorizedOperation", message)
    }

    pub fn auth_failure() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "AuthFailure",
            "AWS was not able to validate the provided access credentials",
        )
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        // Logged here, where it is handled; the client learns only that it failed.
        tracing::error!(error = %message, "EC2 request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "An internal error has occurred",
        )
    }

    pub fn instance_not_found(id: &str) -> Self {
        Self::bad_request(
            "InvalidInstanceID.NotFound",
            format!("The instance ID '{id}' does not exist"),
        )
    }

    pub fn image_not_found(id: &str) -> Self {
        Self::bad_request(
            "InvalidAMIID.NotFound",
            format!("The image id '[{id}]' does not exist"),
        )
    }

    pub fn key_pair_not_found(name: &str) -> Self {
        Self::bad_request(
            "InvalidKeyPair.NotFound",
            format!("The key pair '{name}' does not exist"),
        )
    }

    pub(crate) fn from_sigv4(error: nuage_sigv4::SigV4Error) -> Self {
        use nuage_sigv4::SigV4Error;
        match error {
            SigV4Error::Incomplete(m) => Self::bad_request("IncompleteSignature", m),
            e @ SigV4Error::WrongService { .. } => {
                Self::bad_request("IncompleteSignature", e.to_string())
            }
            e @ SigV4Error::Mismatch => Self::new(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                e.to_string(),
            ),
            SigV4Error::Expired(m) => Self::bad_request("RequestExpired", m),
        }
    }

    /// The compute host's refusals, as EC2 names them.
    pub(crate) fn from_compute(error: ComputeError) -> Self {
        match error {
            // A server error in EC2 (HTTP 500): the request was fine, the
            // host has no room.
            e @ ComputeError::InsufficientInstanceCapacity { .. } => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InsufficientInstanceCapacity",
                e.to_string(),
            ),
            e @ ComputeError::InstanceLimitExceeded { .. } => {
                Self::bad_request("InstanceLimitExceeded", e.to_string())
            }
            ComputeError::InvalidInstanceType(t) => Self::invalid_parameter(format!(
                "Invalid value '{t}' for InstanceType (Nuage offers n1.nano, n1.micro, n1.small, n1.medium, n1.large, n1.xlarge)"
            )),
            ComputeError::InstanceNotFound(id) => Self::instance_not_found(&id),
            ComputeError::ImageNotFound(id) => Self::image_not_found(&id),
            ComputeError::InvalidImage(m) => Self::invalid_parameter(format!("invalid image: {m}")),
            e @ ComputeError::IncorrectInstanceState { .. } => {
                Self::bad_request("IncorrectInstanceState", e.to_string())
            }
            ComputeError::InvalidParameter(m) => Self::invalid_parameter(m),
            e => Self::internal(e),
        }
    }

    pub(crate) fn from_meta(error: impl std::fmt::Display) -> Self {
        Self::internal(format!("metadata: {error}"))
    }
}
