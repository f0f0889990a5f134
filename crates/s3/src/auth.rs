//! Authentication for SigV4: access keys and temporary credentials come from
//! the identity service; its refusals become the S3 errors AWS returns.

use nuage_iam::{Iam, IamError};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Error, S3ErrorCode, S3Result};

/// Looks up the secret of an access key in the identity service.
#[derive(Clone)]
pub struct IamAuth {
    iam: Iam,
}

impl IamAuth {
    #[must_use]
    pub fn new(iam: Iam) -> Self {
        Self { iam }
    }
}

/// The S3 error for an identity-service refusal during authentication.
pub(crate) fn auth_error(e: IamError) -> S3Error {
    match e {
        IamError::ExpiredToken => {
            S3Error::with_message(S3ErrorCode::ExpiredToken, "the provided token has expired")
        }
        IamError::TenantSuspended => S3Error::with_message(
            S3ErrorCode::AllAccessDisabled,
            "all access to this tenant has been disabled",
        ),
        other => {
            tracing::error!(error = %other, "identity lookup failed");
            S3Error::with_message(S3ErrorCode::InternalError, "identity lookup failed")
        }
    }
}

pub(crate) fn invalid_access_key() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::InvalidAccessKeyId,
        "the AWS access key id you provided does not exist in our records",
    )
}

#[async_trait::async_trait]
impl S3Auth for IamAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        // AWS answers an unknown and a deactivated key alike.
        match self.iam.resolve(access_key).await {
            Ok(Some(identity)) => Ok(SecretKey::from(identity.secret_access_key)),
            Ok(None) => Err(invalid_access_key()),
            Err(e) => Err(auth_error(e)),
        }
    }
}
