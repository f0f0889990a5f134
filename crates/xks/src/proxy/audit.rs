//! The proxy's audit file (`audit.jsonl` in its directory): one JSON line
//! per decision on a key request, the tenant's own record of every use of
//! its keys, independent of anything Nuage logs.
//!
//! Each line is appended and synced to disk *before* the answer is sent; if
//! that fails, the request fails (`InternalException`) and no plaintext or
//! ciphertext goes out: there is no unaudited key use. The file is opened
//! for each line (append mode, 0600), so the tenant may rotate it by renaming
//! it at any time. Plaintext, keys and AAD are never written here.

use serde::Serialize;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// One line of the audit file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    pub time: String,
    /// `ALLOW` or `DENY`.
    pub decision: &'static str,
    /// The XKS error name of a denial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// The XKS operation: `metadata`, `encrypt`, `decrypt`.
    pub operation: &'static str,
    pub key_id: String,
    /// The access key id whose signature verified (absent when none did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// `awsPrincipalArn` as the caller stated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_via_service: Option<String>,
    /// The key access justification (`REASON_NOT_EXPECTED` when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Appends `record` as one line and syncs it. Blocking.
pub(crate) fn append(path: &Path, record: &AuditRecord) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    // One write of the whole line: with O_APPEND, lines from concurrent
    // requests do not interleave.
    file.write_all(&line)?;
    file.sync_data()
}
