//! The one place where storage errors become S3 wire errors.

use nuage_storage::StorageError;
use s3s::{S3Error, S3ErrorCode};

/// What a client is told of an internal error (AWS's own message).
pub const INTERNAL_ERROR_MESSAGE: &str = "We encountered an internal error. Please try again.";

/// What a client is told when a storage node failed mid-write (AWS's own
/// words for `ServiceUnavailable`); the detail is in the server's log.
pub const UNAVAILABLE_MESSAGE: &str = "Service is unable to handle request.";

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
        StorageError::PlacementRefused {
            permanent, full, ..
        } => return placement_refused(permanent, full, message),
        StorageError::Unavailable(_) => {
            // Nothing was written and a retry may well succeed: 503, which
            // SDKs retry with backoff. Which node failed, and its address,
            // are the operator's, in the server's log.
            tracing::warn!(error = %message, "write abandoned: a storage node failed mid-write");
            let mut err = S3Error::with_message(C::ServiceUnavailable, UNAVAILABLE_MESSAGE);
            err.set_status_code(http::StatusCode::SERVICE_UNAVAILABLE);
            return err;
        }
        StorageError::Corrupt(_) | StorageError::Internal(_) => {
            // The detail (blob ids, paths, storage nodes' addresses) is the
            // operator's, in the server's log; the client gets AWS's words.
            tracing::error!(error = %message, "internal error");
            return S3Error::with_message(C::InternalError, INTERNAL_ERROR_MESSAGE);
        }
    };
    let mut err = S3Error::with_message(code, message);
    if let Some(headers) = headers {
        err.set_headers(headers);
    }
    err
}

/// A write the bucket's residency policy cannot place (docs/residency.md,
/// "Where the policy is enforced on the write path"). When the topology
/// itself cannot satisfy the policy, retrying is pointless: 409
/// `InvalidBucketState` (AWS's "the request is not valid with the current
/// state of the bucket", which is what the bucket's policy is). When
/// compliant nodes are down or full, the policy can be met again later: 503,
/// which SDKs retry with backoff, `SlowDown` when the nodes are full (AWS's
/// answer to a store that cannot take more now), else `ServiceUnavailable`.
/// The message is the refusal's own: the policy and the rule not met, with
/// the counts.
fn placement_refused(permanent: bool, full: bool, message: String) -> S3Error {
    let (code, status) = if permanent {
        (S3ErrorCode::InvalidBucketState, http::StatusCode::CONFLICT)
    } else if full {
        (S3ErrorCode::SlowDown, http::StatusCode::SERVICE_UNAVAILABLE)
    } else {
        (
            S3ErrorCode::ServiceUnavailable,
            http::StatusCode::SERVICE_UNAVAILABLE,
        )
    };
    tracing::warn!(error = %message, permanent, full, "write refused by residency placement");
    let mut err = S3Error::with_message(code, message);
    err.set_status_code(status);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(permanent: bool, full: bool) -> S3Error {
        to_s3(StorageError::PlacementRefused {
            message: "the residency policy cannot be met (FR, 2 replicas): needs 2 nodes".into(),
            permanent,
            full,
        })
    }

    #[test]
    fn placement_refusals_map_to_conflict_or_retryable_unavailability() {
        for (permanent, full, code, status) in [
            (true, false, S3ErrorCode::InvalidBucketState, 409),
            (true, true, S3ErrorCode::InvalidBucketState, 409),
            (false, true, S3ErrorCode::SlowDown, 503),
            (false, false, S3ErrorCode::ServiceUnavailable, 503),
        ] {
            let err = refused(permanent, full);
            assert_eq!(err.code(), &code, "{permanent} {full}");
            assert_eq!(
                err.status_code().map(|s| s.as_u16()),
                Some(status),
                "{permanent} {full}"
            );
            assert_eq!(
                err.message(),
                Some("the residency policy cannot be met (FR, 2 replicas): needs 2 nodes")
            );
        }
    }

    #[test]
    fn a_node_lost_mid_write_is_a_retryable_503_without_details() {
        let err = to_s3(StorageError::Unavailable(
            "writing blob 9b0f: the replica on node fr-2 failed (cannot reach the node: \
             https://10.0.0.7:7443: connection reset)"
                .into(),
        ));
        assert_eq!(err.code(), &S3ErrorCode::ServiceUnavailable);
        assert_eq!(err.status_code().map(|s| s.as_u16()), Some(503));
        assert_eq!(err.message(), Some(UNAVAILABLE_MESSAGE));
    }

    #[test]
    fn internal_details_stay_in_the_server_log() {
        for e in [
            StorageError::Internal(
                "writing blob 9b0f: the replica on node fr-2 failed (https://10.0.0.7:7443)".into(),
            ),
            StorageError::Corrupt("blob 9b0f: CRC32C mismatch in /var/lib/nuage/blobs".into()),
        ] {
            let err = to_s3(e);
            assert_eq!(err.code(), &S3ErrorCode::InternalError);
            assert_eq!(err.message(), Some(INTERNAL_ERROR_MESSAGE));
        }
    }
}
