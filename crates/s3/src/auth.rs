//! Access keys for SigV4. Today: the administrator key pair the binary loads;
//! the tenancy issue replaces this with per-user keys from the IAM service.

use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Error, S3ErrorCode, S3Result};
use std::collections::HashMap;

/// The access keys the S3 API accepts.
#[derive(Default)]
pub struct AccessKeys {
    secrets: HashMap<String, SecretKey>,
}

impl AccessKeys {
    #[must_use]
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            secrets: pairs
                .into_iter()
                .map(|(id, secret)| (id, SecretKey::from(secret)))
                .collect(),
        }
    }
}

#[async_trait::async_trait]
impl S3Auth for AccessKeys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        // AWS's answer for a key it never issued (s3s's default says NotSignedUp).
        self.secrets.get(access_key).cloned().ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::InvalidAccessKeyId,
                "the AWS access key id you provided does not exist in our records",
            )
        })
    }
}
