//! The decisions every backend makes the same way, as pure functions: which
//! condition a write must meet, which sequence number and version id a new
//! version gets, how blob reference counts move and which blobs an operation
//! frees. The backends' conformance tests hold them to one answer; keeping the
//! rules here is what keeps the answers one.
//!
//! No storage access here: a backend reads what a rule needs, asks it, and
//! writes what it says. (The PostgreSQL backend uses every rule; the embedded
//! backend still spells some of them out inline and can call these instead.)

use crate::{MetaError, MetaResult, VersionRecord, WriteCondition};
use nuage_base::ids;

/// Whether a write's condition holds against the key's latest version (a
/// delete marker counts as no object): `PreconditionFailed` when not.
pub(crate) fn check_condition(
    condition: &WriteCondition,
    latest: Option<&VersionRecord>,
) -> MetaResult<()> {
    let current = latest.filter(|v| !v.delete_marker);
    let holds = match condition {
        WriteCondition::None => true,
        WriteCondition::IfNoneMatchAny => current.is_none(),
        WriteCondition::IfMatch(etag) => current.is_some_and(|v| &v.etag == etag),
    };
    if holds {
        Ok(())
    } else {
        Err(MetaError::PreconditionFailed)
    }
}

/// The sequence number of a new version: its modification time (ns), or
/// one above the key's latest version when that is not already greater, so
/// a key's versions order by seq even when clocks step back.
pub(crate) fn next_seq(last_modified_unix_ns: i64, latest: Option<&VersionRecord>) -> u64 {
    let floor = u64::try_from(last_modified_unix_ns).unwrap_or(0);
    latest.map_or(floor, |v| floor.max(v.seq.saturating_add(1)))
}

/// The id of a new version: `null` for a null version, else derived from
/// its sequence number.
pub(crate) fn version_id(null_version: bool, seq: u64) -> String {
    if null_version {
        ids::NULL_VERSION_ID.to_owned()
    } else {
        ids::version_id(seq)
    }
}

/// A blob's reference count after one reference more; a blob the
/// transaction was about to free (in `freed`) is kept.
pub(crate) fn add_reference(count: u64, blob: &str, freed: &mut Vec<String>) -> u64 {
    freed.retain(|b| b != blob);
    count.saturating_add(1)
}

/// A blob's reference count after one reference less; when the last one
/// goes the blob joins `freed` (an unreferenced blob stays at zero).
pub(crate) fn drop_reference(count: u64, blob: &str, freed: &mut Vec<String>) -> u64 {
    match count {
        0 => 0,
        1 => {
            freed.push(blob.to_owned());
            0
        }
        n => n - 1,
    }
}

/// The blobs a completed upload frees: those writing its version freed,
/// then those the removed parts freed that the version did not take back
/// (a part kept as a segment goes from one reference to one, and is not
/// freed). `count` is a blob's reference count after the version is written.
pub(crate) fn freed_by_completion(
    mut version_freed: Vec<String>,
    parts_freed: Vec<String>,
    count: impl Fn(&str) -> MetaResult<u64>,
) -> MetaResult<Vec<String>> {
    for blob in parts_freed {
        if count(&blob)? == 0 {
            version_freed.push(blob);
        }
    }
    Ok(version_freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_free_a_blob_at_zero_and_keep_it_when_added_again() {
        let mut freed = Vec::new();
        assert_eq!(drop_reference(2, "a", &mut freed), 1);
        assert_eq!(drop_reference(1, "a", &mut freed), 0);
        assert_eq!(drop_reference(0, "a", &mut freed), 0);
        assert_eq!(freed, ["a"]);
        assert_eq!(add_reference(0, "a", &mut freed), 1);
        assert!(freed.is_empty());
    }
}
