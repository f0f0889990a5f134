//! [`ApiError`]: a KMS error as it goes on the wire (status, `__type`,
//! `message`), and the single mapping from service, identity and signature
//! errors to AWS KMS's exception names.
//!
//! AWS KMS answers almost every refusal with HTTP 400, `AccessDeniedException`
//! included (AWS KMS API Reference, "Common Errors"); only its own failures
//! are 500 (`KMSInternalException`). Clients act on `__type`, not the status.

use http::StatusCode;
use nuage_iam::IamError;
use nuage_kms::KmsError;
use nuage_sigv4::SigV4Error;

/// An error response: `{"__type": CODE, "message": MESSAGE}`.
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

    /// A client error: every KMS exception but the internal one is a 400.
    pub(crate) fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::bad("ValidationException", message)
    }

    pub(crate) fn serialization(message: impl Into<String>) -> Self {
        Self::bad("SerializationException", message)
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Self::bad("UnsupportedOperationException", message)
    }

    pub(crate) fn access_denied(message: impl Into<String>) -> Self {
        Self::bad("AccessDeniedException", message)
    }

    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "KMSInternalException",
            "The request processing has failed because of an unknown error.",
        )
    }

    pub(crate) fn missing_authentication() -> Self {
        Self::bad(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )
    }

    pub(crate) fn unrecognized_client() -> Self {
        Self::bad(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    }

    pub(crate) fn dry_run() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "DryRunOperationException",
            "The request would have succeeded, but the DryRun option is set.",
        )
    }

    /// The body of the response.
    pub(crate) fn to_json(&self) -> String {
        serde_json::json!({ "__type": self.code, "message": self.message }).to_string()
    }

    /// The one place key-service refusals become wire codes.
    pub(crate) fn from_kms(error: KmsError) -> Self {
        match error {
            KmsError::NotFound(m) => Self::bad("NotFoundException", m),
            KmsError::AlreadyExists(m) => Self::bad("AlreadyExistsException", m),
            KmsError::Disabled(m) => Self::bad("DisabledException", m),
            KmsError::InvalidState(m) => Self::bad("KMSInvalidStateException", m),
            KmsError::InvalidCiphertext(m) => Self::bad("InvalidCiphertextException", m),
            KmsError::IncorrectKey(m) => Self::bad("IncorrectKeyException", m),
            KmsError::InvalidAliasName(m) => Self::bad("InvalidAliasNameException", m),
            KmsError::InvalidArn(m) => Self::bad("InvalidArnException", m),
            KmsError::InvalidMarker(m) => Self::bad("InvalidMarkerException", m),
            KmsError::LimitExceeded(m) => Self::bad("LimitExceededException", m),
            KmsError::Validation(m) => Self::validation(m),
            KmsError::Unsupported(m) => Self::unsupported(m),
            KmsError::AccessDenied(m) => Self::access_denied(m),
            KmsError::CustomKeyStoreNotFound(m) => Self::bad("CustomKeyStoreNotFoundException", m),
            KmsError::CustomKeyStoreNameInUse(m) => {
                Self::bad("CustomKeyStoreNameInUseException", m)
            }
            KmsError::CustomKeyStoreInvalidState(m) => {
                Self::bad("CustomKeyStoreInvalidStateException", m)
            }
            KmsError::CustomKeyStoreHasKeys(m) => Self::bad("CustomKeyStoreHasCMKsException", m),
            KmsError::XksProxyUriInUse(m) => Self::bad("XksProxyUriInUseException", m),
            KmsError::XksProxyUriUnreachable(m) => Self::bad("XksProxyUriUnreachableException", m),
            KmsError::XksProxyIncorrectAuthenticationCredential(m) => {
                Self::bad("XksProxyIncorrectAuthenticationCredentialException", m)
            }
            KmsError::XksProxyInvalidConfiguration(m) => {
                Self::bad("XksProxyInvalidConfigurationException", m)
            }
            KmsError::XksProxyInvalidResponse(m) => {
                Self::bad("XksProxyInvalidResponseException", m)
            }
            KmsError::XksKeyNotFound(m) => Self::bad("XksKeyNotFoundException", m),
            KmsError::XksKeyInvalidConfiguration(m) => {
                Self::bad("XksKeyInvalidConfigurationException", m)
            }
            KmsError::XksKeyAlreadyInUse(m) => Self::bad("XksKeyAlreadyInUseException", m),
            KmsError::Internal(m) => {
                // Logged here, where it is handled; the client learns only that it failed.
                tracing::error!(error = %m, "KMS failure");
                Self::internal()
            }
        }
    }

    /// Identity-service refusals met while authenticating or authorizing.
    pub(crate) fn from_iam(error: IamError) -> Self {
        match error {
            IamError::ExpiredToken => Self::bad(
                "ExpiredTokenException",
                "The security token included in the request is expired",
            ),
            IamError::InvalidClientTokenId => Self::unrecognized_client(),
            IamError::TenantSuspended => {
                Self::access_denied("All access to this tenant has been disabled.")
            }
            IamError::MalformedPolicyDocument(m) => {
                Self::bad("MalformedPolicyDocumentException", m)
            }
            IamError::AccessDenied(m) => Self::access_denied(m),
            IamError::Internal(m) => {
                tracing::error!(error = %m, "identity service failure");
                Self::internal()
            }
            other => {
                tracing::error!(error = %other, "unexpected identity-service refusal in KMS");
                Self::internal()
            }
        }
    }

    /// Signature refusals, as AWS's JSON services name them.
    pub(crate) fn from_sigv4(error: SigV4Error) -> Self {
        match error {
            SigV4Error::Incomplete(m) => Self::bad("IncompleteSignatureException", m),
            e @ SigV4Error::WrongService { .. } => {
                Self::bad("InvalidSignatureException", e.to_string())
            }
            e @ SigV4Error::Mismatch => Self::bad("InvalidSignatureException", e.to_string()),
            SigV4Error::Expired(m) => Self::bad("InvalidSignatureException", m),
        }
    }
}
