//! EC2 errors: the one place where failures become EC2's wire codes and
//! HTTP statuses (`<Response><Errors><Error><Code>..`).

use http::StatusCode;
use nuage_compute::{ComputeError, HostError, HostErrorKind};

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
        Self::from_host(error.into())
    }

    /// A host call's failure, in process or remote, as EC2 names it.
    pub(crate) fn from_host(error: HostError) -> Self {
        let HostError { kind, message } = error;
        match kind {
            // A server error in EC2 (HTTP 500): the request was fine, the
            // host has no room.
            HostErrorKind::InsufficientInstanceCapacity => Self::insufficient_capacity(message),
            HostErrorKind::InstanceLimitExceeded => {
                Self::bad_request("InstanceLimitExceeded", message)
            }
            HostErrorKind::InvalidInstanceType => Self::invalid_parameter(format!(
                "Invalid value '{message}' for InstanceType (Nuage offers n1.nano, n1.micro, n1.small, n1.medium, n1.large, n1.xlarge)"
            )),
            HostErrorKind::InstanceNotFound => Self::instance_not_found(&message),
            HostErrorKind::ImageNotFound => Self::image_not_found(&message),
            HostErrorKind::InvalidImage => {
                Self::invalid_parameter(format!("invalid image: {message}"))
            }
            HostErrorKind::IncorrectInstanceState => {
                Self::bad_request("IncorrectInstanceState", message)
            }
            HostErrorKind::InvalidParameter => Self::invalid_parameter(message),
            HostErrorKind::Unreachable | HostErrorKind::NotSent => Self::unavailable(message),
            // Passing conditions of one host, said as they are: callers that
            // can (scheduling, image caching) move on to another host first.
            HostErrorKind::Busy => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", message)
            }
            HostErrorKind::CacheFull => Self::insufficient_capacity(message),
            HostErrorKind::Internal | HostErrorKind::Refused => Self::internal(message),
        }
    }

    pub(crate) fn insufficient_capacity(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InsufficientInstanceCapacity",
            message,
        )
    }

    /// A compute host could not be reached: EC2's `Unavailable` (503), which
    /// clients retry.
    /// The detail (addresses, transport errors) is logged here, not sent.
    pub(crate) fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %detail, "compute host unreachable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "The compute host this request needs is unreachable just now; try again later",
        )
    }

    /// A run was sent to a host and its answer did not come: the instance
    /// may be starting there. Its record is kept (describe-instances shows
    /// it); a client's retry with the same `ClientToken` gets it back rather
    /// than another instance.
    pub(crate) fn launch_outcome_unknown(id: &str, detail: impl std::fmt::Display) -> Self {
        tracing::warn!(instance = %id, error = %detail, "a run's answer was lost; the instance is kept as pending");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!(
                "The compute host did not answer the launch of instance {id}: the instance may \
                 have started; describe-instances shows it. A retry with the same ClientToken \
                 returns it instead of starting another."
            ),
        )
    }

    pub(crate) fn from_meta(error: impl std::fmt::Display) -> Self {
        Self::internal(format!("metadata: {error}"))
    }
}
