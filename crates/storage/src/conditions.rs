//! HTTP conditional-request rules for reads and copies (RFC 9110 as S3 applies them).

use crate::{StorageError, StorageResult, VersionRecord};

/// The conditional headers of a GET, HEAD or copy source.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// `If-Match`: ETags (unquoted) or `*`.
    pub if_match: Option<Vec<String>>,
    pub if_none_match: Option<Vec<String>>,
    pub if_modified_since_unix_s: Option<i64>,
    pub if_unmodified_since_unix_s: Option<i64>,
}

fn matches(list: &[String], etag: &str) -> bool {
    list.iter().any(|e| {
        e == "*"
            || e.trim_matches('"')
                .trim_start_matches("W/")
                .trim_matches('"')
                == etag
    })
}

/// Decides whether a read proceeds. S3's precedence: a passing `If-Match`
/// overrides a failing `If-Unmodified-Since`; a failing `If-None-Match` wins over
/// `If-Modified-Since`.
///
/// # Errors
/// `PreconditionFailed` (412) or `NotModified` (304).
pub fn evaluate_read_conditions(record: &VersionRecord, c: &Conditions) -> StorageResult<()> {
    let modified_s = record.last_modified_unix_ns.div_euclid(1_000_000_000);
    match &c.if_match {
        Some(list) => {
            if !matches(list, &record.etag) {
                return Err(StorageError::PreconditionFailed);
            }
        }
        None => {
            if c.if_unmodified_since_unix_s.is_some_and(|t| modified_s > t) {
                return Err(StorageError::PreconditionFailed);
            }
        }
    }
    match &c.if_none_match {
        Some(list) => {
            if matches(list, &record.etag) {
                return Err(StorageError::NotModified);
            }
        }
        None => {
            if c.if_modified_since_unix_s.is_some_and(|t| modified_s <= t) {
                return Err(StorageError::NotModified);
            }
        }
    }
    Ok(())
}
