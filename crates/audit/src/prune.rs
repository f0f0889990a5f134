//! Retention: the signed pruning marker.
//!
//! Pruning follows C2SP tlog-tiles: the log keeps a *minimum index* (a multiple
//! of 256, at most the size of its latest checkpoint) and stops serving entry
//! bundles that end at or below it; every hash tile stays, so roots, proofs and
//! the verification of everything kept are unchanged. The minimum index is
//! published as a signed note by the log's key, so a verifier accepts a missing
//! bundle only when the log itself said it pruned it:
//!
//! ```text
//! <origin>
//! pruned <minimum index>
//!
//! — <origin> <base64 signature>
//! ```
//!
//! Its second line is not a number, so it can never be taken for a checkpoint,
//! nor a checkpoint for it. This module formats and verifies the marker; the log
//! decides what may be pruned ([`crate::AuditLog::prune`]).

use time::OffsetDateTime;

use crate::AuditError;
use crate::checkpoint::{CheckpointSigner, is_valid_origin, open_note, sign_note};
use crate::tiles::TILE_WIDTH;

/// A verified (or freshly signed) pruning marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruningMarker {
    /// The log it is about.
    pub origin: String,
    /// Entries below this index may no longer be served.
    pub minimum_index: u64,
    /// The signed note, as stored and exported.
    pub note: Vec<u8>,
}

/// Signs a marker saying entries below `minimum_index` are pruned.
///
/// # Errors
/// A minimum index that is not a whole number of bundles, an invalid origin,
/// or the signer failing.
pub fn sign(
    origin: &str,
    minimum_index: u64,
    signer: &dyn CheckpointSigner,
) -> Result<PruningMarker, AuditError> {
    if !is_valid_origin(origin) {
        return Err(AuditError::InvalidOrigin(origin.to_string()));
    }
    if !minimum_index.is_multiple_of(TILE_WIDTH) {
        return Err(AuditError::Pruning(format!(
            "minimum index {minimum_index} is not a multiple of {TILE_WIDTH}"
        )));
    }
    let text = format!("{origin}\npruned {minimum_index}\n");
    Ok(PruningMarker {
        origin: origin.to_string(),
        minimum_index,
        note: sign_note(origin, text.as_bytes(), signer)?,
    })
}

/// Verifies a marker with the log's verifier key.
///
/// # Errors
/// [`AuditError::BadSignature`] and friends from the signature, or
/// [`AuditError::Pruning`] for a marker that is not of this shape or this log.
pub fn open(note: &[u8], vkey: &str) -> Result<PruningMarker, AuditError> {
    let (origin, text) = open_note(note, vkey)?;
    let malformed = || AuditError::Pruning("malformed pruning marker".into());
    let text = String::from_utf8(text).map_err(|_| malformed())?;
    let mut lines = text.split('\n');
    if lines.next() != Some(origin.as_str()) {
        return Err(malformed());
    }
    let number = lines
        .next()
        .and_then(|line| line.strip_prefix("pruned "))
        .ok_or_else(malformed)?;
    if lines.next() != Some("") || lines.next().is_some() {
        return Err(malformed());
    }
    let minimum_index: u64 = number.parse().map_err(|_| malformed())?;
    if minimum_index.to_string() != number || !minimum_index.is_multiple_of(TILE_WIDTH) {
        return Err(malformed());
    }
    Ok(PruningMarker {
        origin,
        minimum_index,
        note: note.to_vec(),
    })
}

/// The time before which entries are past a retention of `days` days.
#[must_use]
pub fn retention_cutoff(now: OffsetDateTime, days: u32) -> OffsetDateTime {
    now - time::Duration::days(i64::from(days))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    const ORIGIN: &str = "nuage.example/audit/123456789012";

    #[test]
    fn marker_round_trips_and_is_not_a_checkpoint() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let vkey = crate::verifier_key(ORIGIN, &key.verifying_key());
        let marker = sign(ORIGIN, 512, &key).expect("sign");
        assert_eq!(open(&marker.note, &vkey).expect("open"), marker);
        assert!(crate::checkpoint::open(&marker.note, &vkey).is_err());
        let checkpoint =
            crate::checkpoint::sign(ORIGIN, 512, tlog_tiles::EMPTY_HASH, &key).expect("sign");
        assert!(matches!(
            open(&checkpoint.note, &vkey),
            Err(AuditError::Pruning(_))
        ));
        assert!(sign(ORIGIN, 100, &key).is_err());
        let other = SigningKey::from_bytes(&[4; 32]);
        let forged = sign(ORIGIN, 512, &other).expect("sign");
        assert!(matches!(
            open(&forged.note, &vkey),
            Err(AuditError::BadSignature(_))
        ));
    }

    #[test]
    fn cutoff_is_days_before_now() {
        let now = time::macros::datetime!(2026-11-29 12:00 UTC);
        assert_eq!(
            retention_cutoff(now, 190),
            time::macros::datetime!(2026-05-23 12:00 UTC)
        );
    }
}
