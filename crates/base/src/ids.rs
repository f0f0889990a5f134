//! Identifiers: blob ids, upload ids, version ids, request ids.
//!
//! Version ids are opaque to clients but sort by creation inside a key: they
//! embed the version's sequence number so a listing can resume after one.

use rand::Rng;

/// The version id S3 gives objects written while versioning is off or suspended.
pub const NULL_VERSION_ID: &str = "null";

/// A fresh random identifier (128 bits, lowercase hex, 32 characters).
#[must_use]
pub fn random_id() -> String {
    let value: u128 = rand::thread_rng().r#gen();
    format!("{value:032x}")
}

/// A version id for sequence number `seq`: 16 hex digits of the sequence then 8
/// random ones, so that two gateways never mint the same id.
#[must_use]
pub fn version_id(seq: u64) -> String {
    let salt: u32 = rand::thread_rng().r#gen();
    format!("{seq:016x}{salt:08x}")
}

/// The sequence number embedded in a version id, if it is one of ours.
#[must_use]
pub fn version_seq(version_id: &str) -> Option<u64> {
    if version_id.len() != 24 || !version_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(version_id.get(..16)?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_id_round_trips_its_sequence() {
        let id = version_id(0x1234_5678_9abc);
        assert_eq!(id.len(), 24);
        assert_eq!(version_seq(&id), Some(0x1234_5678_9abc));
        assert_eq!(version_seq("null"), None);
        assert_eq!(version_seq("zz34567890abcdef12345678"), None);
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(random_id(), random_id());
    }
}
