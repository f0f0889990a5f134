//! The one place where storage errors become S3 wire errors.

use nuage_storage::StorageError;
use s3s::{S3Error, S3ErrorCode};

/// Maps a storage error to S3's code, status and message.
#[must_use]
pub fn to_s3(e: StorageError) -> S3Error {
    use S3ErrorCode as C;
    let message = e.to_string();
    let (code, headers) = match e {
        StorageError::InvalidBucketName(_) => (C::InvalidBucketName, None),
        StorageError::NoSuchBucket => (C::NoSuchBucket, None),
        StorageError::BucketAlreadyOwnedByYou => (C::BucketAlreadyOwnedByYou, None),
        StorageError::BucketAlreadyExists => (C::BucketAlreadyExists, None),
        StorageError::BucketNotEmpty => (C::BucketNotEmpty, None),
        StorageError::InvalidLocationConstraint(_) => (C::InvalidLocationConstraint, None),
        StorageError::NoSuchKey => (C::NoSuchKey, None),
        StorageError::NoSuchVersion => (C::NoSuchVersion, None),
        StorageError::DeleteMarker { version_id } => {
            (C::NoSuchKey, Some(delete_marker_headers(&version_id)))
        }
        StorageError::MethodNotAllowedOnDeleteMarker { version_id } => (
            C::MethodNotAllowed,
            Some(delete_marker_headers(&version_id)),
        ),
        StorageError::NoSuchUpload => (C::NoSuchUpload, None),
        StorageError::InvalidPart(_) => (C::InvalidPart, None),
        StorageError::InvalidPartOrder => (C::InvalidPartOrder, None),
        StorageError::EntityTooSmall(_) => (C::EntityTooSmall, None),
        StorageError::EntityTooLarge(_) => (C::EntityTooLarge, None),
        StorageError::PreconditionFailed => (C::PreconditionFailed, None),
        StorageError::NotModified => (C::NotModified, None),
        StorageError::InvalidRange => (C::InvalidRange, None),
        StorageError::BadDigest(_) => (C::BadDigest, None),
        StorageError::InvalidDigest(_) => (C::InvalidDigest, None),
        StorageError::InvalidArgument(_) => (C::InvalidArgument, None),
        StorageError::KeyTooLong(_) => (C::KeyTooLongError, None),
        StorageError::MetadataTooLarge(_) => (C::MetadataTooLarge, None),
        StorageError::InvalidTag(_) => (C::InvalidTag, None),
        StorageError::IncompleteBody | StorageError::Body(_) => (C::IncompleteBody, None),
        StorageError::NoSuchTagSet => (C::NoSuchTagSet, None),
        StorageError::NoSuchCorsConfiguration => (C::NoSuchCORSConfiguration, None),
        StorageError::KeyAccessRefused(_) | StorageError::CustomerKeyMismatch => {
            (C::AccessDenied, None)
        }
        StorageError::InvalidRequest(_) => (C::InvalidRequest, None),
        StorageError::Kms { code, .. } => return kms_error(code, message),
        StorageError::Corrupt(_) | StorageError::Internal(_) => {
            tracing::error!(error = %message, "internal error");
            (C::InternalError, None)
        }
    };
    let mut err = S3Error::with_message(code, message);
    if let Some(headers) = headers {
        err.set_headers(headers);
    }
    err
}

/// An SSE-KMS refusal: AWS's `KMS.*` codes, with status 400 (403 for access denied).
#[must_use]
pub fn kms_error(code: &'static str, message: impl Into<String>) -> S3Error {
    let mut err = S3Error::with_message(S3ErrorCode::Custom(code.into()), message.into());
    // An external key store proxy refusing the access is a refusal, as S3
    // answers KMS denials: 403.
    let status = if code == "KMS.AccessDeniedException" {
        http::StatusCode::FORBIDDEN
    } else {
        http::StatusCode::BAD_REQUEST
    };
    err.set_status_code(status);
    err
}

fn delete_marker_headers(version_id: &str) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    // s3s replaces the error response's headers with these: keep the body's type.
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    headers.insert(
        "x-amz-delete-marker",
        http::HeaderValue::from_static("true"),
    );
    if let Ok(v) = http::HeaderValue::from_str(version_id) {
        headers.insert("x-amz-version-id", v);
    }
    headers
}
