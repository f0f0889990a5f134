//! Listings: ListObjects (v1 and v2) and ListObjectVersions, with prefix,
//! delimiter and markers, in S3's order (UTF-8 byte order of keys).
//!
//! The work per page is bounded: at most `max_keys` results, and at most
//! [`limits::LIST_SCAN_ENTRIES_MAX`] index entries examined; past that the page is
//! returned truncated with a marker, as S3 allows. A rolled-up common prefix is
//! skipped with one seek, not by walking the keys under it.

use crate::{Storage, StorageResult, VersionRecord};
use nuage_base::{ids, limits};

/// A ListObjects query. `after` is the marker, start-after or decoded
/// continuation token: results are keys strictly after it.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub after: Option<String>,
    pub max_keys: usize,
}

#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<VersionRecord>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// The last key or common prefix returned: where the next page starts after.
    pub next_after: Option<String>,
}

/// A ListObjectVersions query.
#[derive(Debug, Clone, Default)]
pub struct VersionListQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub key_marker: Option<String>,
    pub version_id_marker: Option<String>,
    pub max_keys: usize,
}

#[derive(Debug, Clone, Default)]
pub struct VersionListPage {
    /// Versions and delete markers, key ascending then newest first.
    pub versions: Vec<VersionRecord>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_version_id_marker: Option<String>,
}

/// How many records a scan asks for right after a common prefix was rolled
/// up: the next key is most often the first of another prefix, and every
/// record asked for is read and decoded.
const LIST_BATCH_AFTER_PREFIX: usize = 2;

/// The common prefix `key` rolls up into, if any.
fn common_prefix<'k>(key: &'k str, prefix: &str, delimiter: Option<&str>) -> Option<&'k str> {
    let delimiter = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.get(prefix.len()..)?;
    rest.find(delimiter)
        .map(|i| &key[..prefix.len() + i + delimiter.len()])
}

/// The scan position just past every key that starts with `prefix` (keys are
/// UTF-8, which never contains the byte 0xFF).
fn past_prefix(prefix: &str) -> Vec<u8> {
    let mut out = prefix.as_bytes().to_vec();
    out.push(0xFF);
    out
}

/// Where a scan resumes for a marker: past a whole common prefix when the marker
/// is one (so its keys are not rolled up again), else just past the marker.
fn resume_position(marker: &str, prefix: &str, delimiter: Option<&str>) -> Vec<u8> {
    match common_prefix(marker, prefix, delimiter) {
        Some(cp) if cp == marker => past_prefix(cp),
        _ => marker.as_bytes().to_vec(),
    }
}

impl Storage {
    /// One page of the latest, non-deleted version of each key.
    ///
    /// # Errors
    /// `NoSuchBucket`, backend failure.
    pub async fn list_objects(&self, bucket: &str, query: &ListQuery) -> StorageResult<ListPage> {
        self.bucket(bucket).await?;
        let max_keys = query.max_keys.min(limits::LIST_KEYS_MAX);
        if max_keys == 0 {
            // Nothing asked, nothing to continue from: S3 answers "not
            // truncated" (a truncated page must carry a continuation point).
            return Ok(ListPage::default());
        }
        let delimiter = query.delimiter.as_deref();
        let mut page = ListPage::default();
        let mut cursor: Option<Vec<u8>> = query
            .after
            .as_deref()
            .map(|m| resume_position(m, &query.prefix, delimiter));
        let mut examined = 0usize;
        // The metadata store skips the rest of a common prefix once one of
        // its keys is visible (`scan_latest_delimited`: the embedded store
        // seeks past it within one read transaction), so each batch is a
        // whole page's worth whatever the delimiter.
        'scan: loop {
            let batch_len = (max_keys - page.objects.len() - page.common_prefixes.len() + 1)
                .clamp(2, limits::LIST_KEYS_MAX + 1);
            let batch = self
                .meta
                .scan_latest_delimited(
                    bucket,
                    &query.prefix,
                    delimiter.unwrap_or(""),
                    cursor.as_deref(),
                    batch_len,
                )
                .await?;
            if batch.is_empty() {
                break;
            }
            let batch_full = batch.len() == batch_len;
            for record in batch {
                examined += 1;
                if let Some(cp) = common_prefix(&record.key, &query.prefix, delimiter)
                    && page.common_prefixes.last().map(String::as_str) == Some(cp)
                {
                    // Already rolled up (a store returns only one visible
                    // key per prefix; this keeps the page right regardless).
                    continue;
                }
                if page.objects.len() + page.common_prefixes.len() >= max_keys
                    || examined > limits::LIST_SCAN_ENTRIES_MAX
                {
                    page.truncated = true;
                    break 'scan;
                }
                if let Some(cp) = common_prefix(&record.key, &query.prefix, delimiter) {
                    // Only a visible key makes a common prefix appear.
                    if record.delete_marker {
                        cursor = Some(record.key.into_bytes());
                        continue;
                    }
                    let cp = cp.to_owned();
                    cursor = Some(past_prefix(&cp));
                    page.next_after = Some(cp.clone());
                    page.common_prefixes.push(cp);
                    continue;
                }
                cursor = Some(record.key.clone().into_bytes());
                if record.delete_marker {
                    continue;
                }
                page.next_after = Some(record.key.clone());
                page.objects.push(record);
            }
            if !batch_full {
                break;
            }
        }
        if !page.truncated {
            page.next_after = None;
        }
        Ok(page)
    }

    /// One page of versions and delete markers.
    ///
    /// # Errors
    /// `NoSuchBucket`, `InvalidArgument` for a version-id marker without key marker.
    pub async fn list_object_versions(
        &self,
        bucket: &str,
        query: &VersionListQuery,
    ) -> StorageResult<VersionListPage> {
        self.bucket(bucket).await?;
        let max_keys = query.max_keys.min(limits::LIST_KEYS_MAX);
        let delimiter = query.delimiter.as_deref();
        let mut page = VersionListPage::default();
        // Position: (key bytes, Some(seq) = after that version of the key, None = after all of it).
        let mut cursor: Option<(Vec<u8>, Option<u64>)> =
            match (&query.key_marker, &query.version_id_marker) {
                (None, Some(_)) => {
                    return Err(crate::StorageError::InvalidArgument(
                        "a version-id marker cannot be specified without a key marker".into(),
                    ));
                }
                (None, None) => None,
                (Some(k), None) => Some((resume_position(k, &query.prefix, delimiter), None)),
                (Some(k), Some(v)) if v == ids::NULL_VERSION_ID => {
                    // The null version has no sequence in its id: find it.
                    let seq = self
                        .meta
                        .get_version(bucket, k, Some(v))
                        .await?
                        .map(|r| r.seq);
                    Some((k.as_bytes().to_vec(), seq))
                }
                (Some(k), Some(v)) => match ids::version_seq(v) {
                    Some(seq) => Some((k.as_bytes().to_vec(), Some(seq))),
                    None => {
                        return Err(crate::StorageError::InvalidArgument(
                            "invalid version id marker".into(),
                        ));
                    }
                },
            };
        if max_keys == 0 {
            // As for ListObjects: an empty page is not truncated.
            return Ok(page);
        }
        let mut examined = 0usize;
        // As in `list_objects`: the rest of a rolled-up prefix is skipped,
        // and the scan after it asks for a short batch.
        let mut rolled_up: Option<String> = None;
        'scan: loop {
            let batch_len = if rolled_up.is_some() {
                LIST_BATCH_AFTER_PREFIX
            } else {
                limits::LIST_KEYS_MAX + 1
            };
            let after = cursor.as_ref().map(|(k, s)| (k.as_slice(), *s));
            let batch = self
                .meta
                .scan_versions(bucket, &query.prefix, after, batch_len)
                .await?;
            if batch.is_empty() {
                break;
            }
            let batch_full = batch.len() == batch_len;
            for record in batch {
                examined += 1;
                if let Some(cp) = &rolled_up
                    && record.key.starts_with(cp.as_str())
                    && examined <= limits::LIST_SCAN_ENTRIES_MAX
                {
                    continue;
                }
                rolled_up = None;
                if page.versions.len() + page.common_prefixes.len() >= max_keys
                    || examined > limits::LIST_SCAN_ENTRIES_MAX
                {
                    page.truncated = true;
                    break 'scan;
                }
                if let Some(cp) = common_prefix(&record.key, &query.prefix, delimiter) {
                    let cp = cp.to_owned();
                    cursor = Some((past_prefix(&cp), None));
                    page.next_key_marker = Some(cp.clone());
                    page.next_version_id_marker = None;
                    page.common_prefixes.push(cp.clone());
                    rolled_up = Some(cp);
                    continue;
                }
                cursor = Some((record.key.clone().into_bytes(), Some(record.seq)));
                page.next_key_marker = Some(record.key.clone());
                page.next_version_id_marker = Some(record.version_id.clone());
                page.versions.push(record);
            }
            if !batch_full {
                break;
            }
        }
        if !page.truncated {
            page.next_key_marker = None;
            page.next_version_id_marker = None;
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefixes_roll_up() {
        assert_eq!(common_prefix("a/b/c", "", Some("/")), Some("a/"));
        assert_eq!(common_prefix("a/b/c", "a/", Some("/")), Some("a/b/"));
        assert_eq!(common_prefix("a/b", "a/", Some("/")), None);
        assert_eq!(common_prefix("a/b", "", None), None);
        assert_eq!(common_prefix("a--b--c", "", Some("--")), Some("a--"));
    }

    #[test]
    fn resuming_after_a_common_prefix_skips_it() {
        assert_eq!(resume_position("a/", "", Some("/")), b"a/\xFF".to_vec());
        assert_eq!(resume_position("a/b", "", Some("/")), b"a/b".to_vec());
        assert_eq!(resume_position("a/", "", None), b"a/".to_vec());
    }
}
