//! The storage service's errors, one per distinct thing a client can be told.

use nuage_blob::BlobError;
use nuage_meta::MetaError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    InvalidBucketName(String),
    #[error("the specified bucket does not exist")]
    NoSuchBucket,
    #[error("you already own this bucket")]
    BucketAlreadyOwnedByYou,
    #[error(
        "the requested bucket name is not available; bucket names are shared by all users of this Nuage"
    )]
    BucketAlreadyExists,
    #[error("the bucket you tried to delete is not empty")]
    BucketNotEmpty,
    #[error("{0}")]
    InvalidLocationConstraint(String),
    #[error("the specified key does not exist")]
    NoSuchKey,
    #[error("the specified version does not exist")]
    NoSuchVersion,
    /// The latest version is a delete marker (GET/HEAD without version id).
    #[error("the specified key does not exist")]
    DeleteMarker { version_id: String },
    /// A delete marker was addressed by version id for a read.
    #[error("the specified method is not allowed against a delete marker")]
    MethodNotAllowedOnDeleteMarker { version_id: String },
    #[error("the specified multipart upload does not exist")]
    NoSuchUpload,
    #[error("{0}")]
    InvalidPart(String),
    #[error("the list of parts was not in ascending order")]
    InvalidPartOrder,
    #[error("{0}")]
    EntityTooSmall(String),
    #[error("{0}")]
    EntityTooLarge(String),
    #[error("at least one of the preconditions you specified did not hold")]
    PreconditionFailed,
    #[error("not modified")]
    NotModified,
    #[error("the requested range is not satisfiable")]
    InvalidRange,
    #[error("{0}")]
    BadDigest(String),
    #[error("{0}")]
    InvalidDigest(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    KeyTooLong(String),
    #[error("{0}")]
    MetadataTooLarge(String),
    #[error("{0}")]
    InvalidTag(String),
    #[error("the request body ended before its declared length")]
    IncompleteBody,
    #[error("stored data failed its integrity check: {0}")]
    Corrupt(String),
    #[error("the tag set does not exist")]
    NoSuchTagSet,
    #[error("the CORS configuration does not exist")]
    NoSuchCorsConfiguration,
    /// The bucket owner's key access justifications refused to unwrap the
    /// data key for this access's reason (the wire name it holds).
    #[error(
        "access denied by the key access justifications of the bucket owner: \
         the reason {0} is not allowed"
    )]
    KeyAccessRefused(String),
    /// The customer KMS key of an SSE-KMS object or request refused: `code`
    /// is the S3 error code AWS uses (`KMS.DisabledException`, ...).
    #[error("{message}")]
    Kms { code: &'static str, message: String },
    /// A request S3 answers with `InvalidRequest` (400): SSE-C parameters
    /// missing for, or not applicable to, the object or upload.
    #[error("{0}")]
    InvalidRequest(String),
    /// The SSE-C key presented does not open the object's (or upload's)
    /// wrapped key: AccessDenied (403), as in S3.
    #[error(
        "access denied: the customer-provided key is not the key this object was encrypted with"
    )]
    CustomerKeyMismatch,
    /// A new blob cannot be placed under its bucket's residency policy
    /// (`docs/residency.md`): nothing was written anywhere, nothing of the
    /// object recorded. The message names the policy and the rule that
    /// cannot be met, with the counts.
    #[error("{message}")]
    PlacementRefused {
        message: String,
        /// The topology itself cannot satisfy the policy (retrying will not
        /// help until the operator or the policy changes).
        permanent: bool,
        /// Compliant nodes are up but lack room.
        full: bool,
    },
    /// A write abandoned because a storage node could not be reached or its
    /// connection broke mid-write (`nuage_blob::Unavailable`): nothing was
    /// written, the request may be retried. The detail (node, address) is
    /// for the server's log only.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The client's body stream failed (disconnect, bad chunk signature).
    #[error("request body: {0}")]
    Body(String),
}

pub type StorageResult<T> = Result<T, StorageError>;

impl From<nuage_kms::KeyError> for StorageError {
    /// A refusal by reason is the owner's decision (403); anything else
    /// the key service reports is a failure to read stored data.
    fn from(e: nuage_kms::KeyError) -> Self {
        match e {
            nuage_kms::KeyError::ReasonNotAllowed { reason } => {
                Self::KeyAccessRefused(reason.as_str().to_owned())
            }
            nuage_kms::KeyError::CustomerKey(e) => e.into(),
            other => Self::Corrupt(other.to_string()),
        }
    }
}

impl From<nuage_kms::KmsError> for StorageError {
    /// A customer key's refusal, in the codes S3 answers with for SSE-KMS.
    fn from(e: nuage_kms::KmsError) -> Self {
        use nuage_kms::KmsError as K;
        let code = match &e {
            K::NotFound(_) | K::InvalidArn(_) => "KMS.NotFoundException",
            K::Disabled(_) => "KMS.DisabledException",
            K::InvalidState(_) => "KMS.KMSInvalidStateException",
            K::InvalidCiphertext(_) | K::IncorrectKey(_) => "KMS.InvalidCiphertextException",
            // A key in an external key store: its store or proxy refused.
            K::AccessDenied(_) => "KMS.AccessDeniedException",
            K::CustomKeyStoreInvalidState(_) => "KMS.CustomKeyStoreInvalidStateException",
            K::XksProxyUriUnreachable(_) => "KMS.XksProxyUriUnreachableException",
            K::XksProxyIncorrectAuthenticationCredential(_) => {
                "KMS.XksProxyIncorrectAuthenticationCredentialException"
            }
            K::XksProxyInvalidResponse(_) => "KMS.XksProxyInvalidResponseException",
            K::XksKeyNotFound(_) => "KMS.XksKeyNotFoundException",
            _ => return Self::Internal(e.to_string()),
        };
        Self::Kms {
            code,
            message: e.to_string(),
        }
    }
}

impl From<MetaError> for StorageError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NoSuchBucket => Self::NoSuchBucket,
            MetaError::BucketAlreadyExists => Self::BucketAlreadyOwnedByYou,
            MetaError::BucketNotEmpty => Self::BucketNotEmpty,
            MetaError::NoSuchVersion => Self::NoSuchVersion,
            MetaError::NoSuchUpload => Self::NoSuchUpload,
            MetaError::PreconditionFailed => Self::PreconditionFailed,
            // A shared blob's records all went: what was copied is gone.
            MetaError::SharedBlobGone(_) => Self::NoSuchKey,
            MetaError::Corrupt(m) => Self::Corrupt(m),
            MetaError::Backend(m) => Self::Internal(m),
        }
    }
}

impl From<BlobError> for StorageError {
    fn from(e: BlobError) -> Self {
        // A refusal travels inside `Io`: looked for first.
        if let Some(refused) = e.placement_refusal() {
            return Self::PlacementRefused {
                message: refused.to_string(),
                permanent: refused.permanent,
                full: refused.full,
            };
        }
        if let Some(unavailable) = e.unavailable() {
            return Self::Unavailable(unavailable.to_string());
        }
        match e {
            BlobError::Corrupt { .. } => Self::Corrupt(e.to_string()),
            BlobError::NotFound(_) => Self::Corrupt(e.to_string()),
            BlobError::Io(io) => Self::Internal(io.to_string()),
        }
    }
}

impl From<nuage_crypto::CryptoError> for StorageError {
    fn from(e: nuage_crypto::CryptoError) -> Self {
        Self::Corrupt(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_lost_mid_write_is_unavailable_not_internal() {
        let e: StorageError = nuage_blob::Unavailable {
            detail: "the replica on node fr-1-n1 failed".into(),
        }
        .into_blob_error()
        .into();
        assert!(
            matches!(&e, StorageError::Unavailable(m) if m.contains("fr-1-n1")),
            "{e:?}"
        );
        let other: StorageError = BlobError::Io(std::io::Error::other("disk on fire")).into();
        assert!(matches!(other, StorageError::Internal(_)), "{other:?}");
    }
}
