//! IAM errors, named as the AWS IAM/STS APIs name them.

#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("{0}")]
    NoSuchEntity(String),
    #[error("{0}")]
    EntityAlreadyExists(String),
    #[error("{0}")]
    DeleteConflict(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("the security token included in the request is expired")]
    ExpiredToken,
    #[error("the security token included in the request is invalid")]
    InvalidClientTokenId,
    #[error("the tenant is suspended")]
    TenantSuspended,
    #[error("internal error: {0}")]
    Internal(String),
}

pub type IamResult<T> = Result<T, IamError>;

impl From<nuage_meta::MetaError> for IamError {
    fn from(e: nuage_meta::MetaError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<serde_json::Error> for IamError {
    fn from(e: serde_json::Error) -> Self {
        Self::Internal(format!("corrupt identity record: {e}"))
    }
}
