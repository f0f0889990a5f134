//! Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes (Ed25519).
//!
//! A checkpoint is `<origin>\n<size>\n<base64 root>\n`, signed as a note whose key
//! name is the origin (`nuage.example/audit/<tenant>`), so each tenant's verifier
//! key (`vkey`, `<origin>+<key id>+<base64 0x01 ‖ public key>`) names its own log.
//! The private key stays behind [`CheckpointSigner`]: the server keeps it sealed
//! by its root of trust and only asks for signatures. This module formats, signs
//! and verifies; deciding *whether* to sign (never two inconsistent checkpoints)
//! is the log's job ([`crate::AuditLog::sign_checkpoint`]).

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};

use crate::AuditError;

/// Signed-note signature type byte for Ed25519 (C2SP signed-note).
const ALGORITHM_ED25519: u8 = 0x01;

/// Something that holds the log's Ed25519 key and signs with it.
pub trait CheckpointSigner: Send + Sync {
    /// The public half of the key.
    fn public_key(&self) -> VerifyingKey;
    /// An Ed25519 signature of `message`.
    ///
    /// # Errors
    /// [`AuditError::Signing`] when the key is unavailable.
    fn sign(&self, message: &[u8]) -> Result<ed25519_dalek::Signature, AuditError>;
}

/// An in-memory key, for tests and development.
impl CheckpointSigner for SigningKey {
    fn public_key(&self) -> VerifyingKey {
        self.verifying_key()
    }

    fn sign(&self, message: &[u8]) -> Result<ed25519_dalek::Signature, AuditError> {
        self.try_sign(message)
            .map_err(|e| AuditError::Signing(e.to_string()))
    }
}

/// The verifier key (C2SP signed-note `vkey`) of the log named `origin`.
#[must_use]
pub fn verifier_key(origin: &str, key: &VerifyingKey) -> String {
    signed_note::new_ed25519_verifier_key(origin, key)
}

/// The log named by a verifier key, once the key parses.
///
/// # Errors
/// [`AuditError::BadVerifierKey`].
pub fn verifier_key_origin(vkey: &str) -> Result<String, AuditError> {
    let verifier =
        StandardVerifier::new(vkey).map_err(|e| AuditError::BadVerifierKey(e.to_string()))?;
    Ok(signed_note::Verifier::name(&verifier).to_string())
}

/// Whether `origin` can name a log: a valid signed-note key name, one line.
#[must_use]
pub fn is_valid_origin(origin: &str) -> bool {
    signed_note::is_key_name_valid(origin) && !origin.chars().any(char::is_control)
}

/// A checkpoint and its signed-note encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedCheckpoint {
    /// The log's name (first line).
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The tree's root hash.
    pub root: Hash,
    /// The whole signed note, as served at `<prefix>/checkpoint`.
    pub note: Vec<u8>,
}

/// Adapts a [`CheckpointSigner`] to `signed_note`'s signer.
struct NoteSigner<'a> {
    name: &'a str,
    id: u32,
    signer: &'a dyn CheckpointSigner,
}

impl signed_note::Signer for NoteSigner<'_> {
    fn name(&self) -> &str {
        self.name
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        match self.signer.sign(msg) {
            Ok(signature) => Ok(signature.to_bytes().to_vec()),
            Err(error) => {
                tracing::error!(%error, "checkpoint signer failed");
                Err(ed25519_dalek::SignatureError::new())
            }
        }
    }
}

/// Signs the checkpoint `(origin, size, root)`.
///
/// # Errors
/// An invalid origin, or the signer failing.
pub fn sign(
    origin: &str,
    size: u64,
    root: Hash,
    signer: &dyn CheckpointSigner,
) -> Result<SignedCheckpoint, AuditError> {
    if !is_valid_origin(origin) {
        return Err(AuditError::InvalidOrigin(origin.to_string()));
    }
    let body = Checkpoint::new(origin, size, root, "")
        .map_err(|_| AuditError::InvalidOrigin(origin.to_string()))?
        .to_bytes();
    Ok(SignedCheckpoint {
        origin: origin.to_string(),
        size,
        root,
        note: sign_note(origin, &body, signer)?,
    })
}

/// Signs `text` as a signed note under the key name `origin`.
pub(crate) fn sign_note(
    origin: &str,
    text: &[u8],
    signer: &dyn CheckpointSigner,
) -> Result<Vec<u8>, AuditError> {
    let mut note = Note::new(text, &[]).map_err(|e| AuditError::Signing(e.to_string()))?;
    let public = [
        &[ALGORITHM_ED25519],
        signer.public_key().as_bytes().as_slice(),
    ]
    .concat();
    let note_signer = NoteSigner {
        name: origin,
        id: signed_note::key_id(origin, &public),
        signer,
    };
    note.add_sigs(&[&note_signer])
        .map_err(|e| AuditError::Signing(e.to_string()))?;
    Ok(note.to_bytes())
}

/// Verifies a signed note with `vkey`; returns the key's name (the log's
/// origin) and the note's text.
pub(crate) fn open_note(note: &[u8], vkey: &str) -> Result<(String, Vec<u8>), AuditError> {
    let verifier =
        StandardVerifier::new(vkey).map_err(|e| AuditError::BadVerifierKey(e.to_string()))?;
    let origin = signed_note::Verifier::name(&verifier).to_string();
    let parsed =
        Note::from_bytes(note).map_err(|e| AuditError::MalformedCheckpoint(e.to_string()))?;
    parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| AuditError::BadSignature(e.to_string()))?;
    Ok((origin, parsed.text().to_vec()))
}

/// Parses a signed checkpoint and verifies it with the verifier key `vkey`.
///
/// # Errors
/// [`AuditError::BadVerifierKey`], [`AuditError::MalformedCheckpoint`],
/// [`AuditError::BadSignature`] (no valid signature by that key), or
/// [`AuditError::OriginMismatch`] (a checkpoint of another log).
pub fn open(note: &[u8], vkey: &str) -> Result<SignedCheckpoint, AuditError> {
    let (expected_origin, text) = open_note(note, vkey)?;
    let checkpoint = Checkpoint::from_bytes(&text)
        .map_err(|e| AuditError::MalformedCheckpoint(e.to_string()))?;
    if checkpoint.origin() != expected_origin {
        return Err(AuditError::OriginMismatch {
            expected: expected_origin,
            found: checkpoint.origin().to_string(),
        });
    }
    Ok(SignedCheckpoint {
        origin: checkpoint.origin().to_string(),
        size: checkpoint.size(),
        root: *checkpoint.hash(),
        note: note.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "nuage.example/audit/123456789012";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn signed_checkpoint_has_c2sp_shape_and_verifies() {
        let root = tlog_tiles::record_hash(b"x");
        let signed = sign(ORIGIN, 7, root, &key(1)).expect("sign");
        let text = String::from_utf8(signed.note.clone()).expect("utf8");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(ORIGIN));
        assert_eq!(lines.next(), Some("7"));
        assert_eq!(lines.next(), Some(root.to_string().as_str()));
        assert_eq!(lines.next(), Some(""));
        let signature = lines.next().expect("signature line");
        assert!(
            signature.starts_with(&format!("— {ORIGIN} ")),
            "{signature}"
        );
        let vkey = verifier_key(ORIGIN, &key(1).verifying_key());
        assert!(vkey.starts_with(&format!("{ORIGIN}+")));
        assert_eq!(open(&signed.note, &vkey).expect("open"), signed);
    }

    #[test]
    fn another_key_or_a_changed_body_fails() {
        let signed = sign(ORIGIN, 7, tlog_tiles::record_hash(b"x"), &key(1)).expect("sign");
        let other = verifier_key(ORIGIN, &key(2).verifying_key());
        assert!(matches!(
            open(&signed.note, &other),
            Err(AuditError::BadSignature(_))
        ));
        let vkey = verifier_key(ORIGIN, &key(1).verifying_key());
        let text = String::from_utf8(signed.note).expect("utf8");
        let changed = text.replacen("\n7\n", "\n8\n", 1);
        assert!(matches!(
            open(changed.as_bytes(), &vkey),
            Err(AuditError::BadSignature(_))
        ));
    }

    #[test]
    fn checkpoint_of_another_log_is_refused() {
        // Same key, other origin: the vkey names this log, so the note's
        // signature is unknown to it.
        let signed = sign(
            "nuage.example/audit/999999999999",
            1,
            tlog_tiles::EMPTY_HASH,
            &key(1),
        )
        .expect("sign");
        let vkey = verifier_key(ORIGIN, &key(1).verifying_key());
        assert!(open(&signed.note, &vkey).is_err());
    }

    #[test]
    fn invalid_origin_is_refused() {
        for origin in ["", "has space", "has+plus"] {
            assert!(matches!(
                sign(origin, 0, tlog_tiles::EMPTY_HASH, &key(1)),
                Err(AuditError::InvalidOrigin(_))
            ));
        }
    }
}
