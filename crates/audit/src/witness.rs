//! Witnesses: C2SP `tlog-witness` (the `add-checkpoint` exchange) and C2SP
//! `tlog-cosignature` (`cosignature/v1`).
//!
//! A witness knows each log it watches by origin and verifier key, keeps the
//! latest `(size, root)` it cosigned per log, and cosigns a new checkpoint only
//! after checking the log's signature and a consistency proof from that size.
//! A log can therefore not show a tenant a checkpoint that forks from, or rolls
//! back, what an independent witness has seen, without the cosignature missing.
//!
//! This module owns the formats (request body, cosignature line, witness
//! verifier key), the checks, and the witness's durable state ([`Witness`]);
//! it never speaks HTTP (the `nuage witness` binary does, mapping
//! [`WitnessError::status`] to the spec's status codes) and never reads
//! configuration files.
//!
//! The cosignature (`cosignature/v1`) is a signed-note signature line
//! `— <witness name> base64(key id ‖ timestamp ‖ Ed25519 signature)`, where the
//! key id is `SHA-256(<name> ‖ "\n" ‖ 0x04 ‖ public key)[:4]`, the timestamp a
//! big-endian u64 of seconds since the epoch, and the signed message
//! `cosignature/v1\ntime <timestamp>\n` followed by the checkpoint body.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature as Ed25519Signature, Signer as _, SigningKey, VerifyingKey};
use nuage_base::limits::{WITNESS_LOGS_MAX, WITNESS_PROOF_HASHES_MAX, WITNESS_REQUEST_BYTES_MAX};
use signed_note::{Note, NoteError, VerifierList};
use tlog_tiles::{Checkpoint, HASH_SIZE, Hash};

use crate::{AuditError, checkpoint, store};

/// Signed-note signature type of a timestamped Ed25519 witness cosignature.
pub const ALGORITHM_COSIGNATURE_V1: u8 = 0x04;
/// The path of the `add-checkpoint` endpoint, relative to a witness's URL.
pub const ADD_CHECKPOINT_PATH: &str = "add-checkpoint";
/// Media type of a 409 answer's body: the witness's known size, one line.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// Why a witness refused a checkpoint, in the terms of C2SP tlog-witness.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// The request does not parse, or `old` is beyond the checkpoint (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The checkpoint's origin is not a log this witness watches (404).
    #[error("unknown log {0:?}")]
    UnknownLog(String),
    /// No valid signature of the log's key on the checkpoint (403).
    #[error("the checkpoint is not signed by the log's key: {0}")]
    BadSignature(String),
    /// `old` is not the size this witness knows, or the same size with another
    /// root (409, with the known size in the body).
    #[error("the witness knows size {known_size} of this log, not the one claimed")]
    Conflict { known_size: u64 },
    /// The consistency proof does not hold (422).
    #[error("the consistency proof does not hold: {0}")]
    BadProof(String),
    /// Storage or signing failed (500).
    #[error("witness failure: {0}")]
    Internal(#[from] AuditError),
}

impl WitnessError {
    /// The HTTP status C2SP tlog-witness gives this refusal.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::BadSignature(_) => 403,
            Self::UnknownLog(_) => 404,
            Self::Conflict { .. } => 409,
            Self::BadProof(_) => 422,
            Self::Internal(_) => 500,
        }
    }
}

/// The key id of a witness's cosignature key.
fn cosignature_key_id(name: &str, key: &VerifyingKey) -> u32 {
    let encoded = [&[ALGORITHM_COSIGNATURE_V1], key.as_bytes().as_slice()].concat();
    signed_note::key_id(name, &encoded)
}

/// The verifier key of witness `name`: `<name>+<key id>+base64(0x04 ‖ key)`.
#[must_use]
pub fn witness_verifier_key(name: &str, key: &VerifyingKey) -> String {
    let encoded = [&[ALGORITHM_COSIGNATURE_V1], key.as_bytes().as_slice()].concat();
    format!(
        "{name}+{:08x}+{}",
        cosignature_key_id(name, key),
        STANDARD.encode(encoded)
    )
}

/// The message a `cosignature/v1` signs.
fn cosigned_message(body: &[u8], timestamp: u64) -> Vec<u8> {
    let mut message = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    message.extend_from_slice(body);
    message
}

/// The cosignature line (`— <name> <base64>\n`) of witness `name` on the
/// checkpoint `body` (the note's text) at `timestamp` (seconds since the epoch).
///
/// # Errors
/// [`AuditError::Signing`] when the name is not a valid key name.
pub fn cosign(
    name: &str,
    key: &SigningKey,
    body: &[u8],
    timestamp: u64,
) -> Result<String, AuditError> {
    if !checkpoint::is_valid_origin(name) {
        return Err(AuditError::Signing(format!(
            "invalid witness name {name:?}"
        )));
    }
    let signature = key
        .try_sign(&cosigned_message(body, timestamp))
        .map_err(|e| AuditError::Signing(e.to_string()))?;
    let id = cosignature_key_id(name, &key.verifying_key());
    let bytes = [
        id.to_be_bytes().as_slice(),
        timestamp.to_be_bytes().as_slice(),
        signature.to_bytes().as_slice(),
    ]
    .concat();
    Ok(format!("— {name} {}\n", STANDARD.encode(bytes)))
}

/// A witness's public key, as a tenant or a log is configured with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessKey {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl WitnessKey {
    /// Parses a witness verifier key (`<name>+<hex id>+base64(0x04 ‖ key)`).
    ///
    /// # Errors
    /// [`AuditError::BadVerifierKey`] when it is malformed, of another type, or
    /// its key id does not match.
    pub fn parse(vkey: &str) -> Result<Self, AuditError> {
        let bad = |why: &str| AuditError::BadVerifierKey(format!("witness key {vkey:?}: {why}"));
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("not <name>+<id>+<key>"));
        };
        if !checkpoint::is_valid_origin(name) {
            return Err(bad("invalid name"));
        }
        let id = u32::from_str_radix(id, 16)
            .ok()
            .filter(|_| id.len() == 8)
            .ok_or_else(|| bad("the key id is not 8 hex digits"))?;
        let key = STANDARD
            .decode(key)
            .map_err(|_| bad("the key is not base64"))?;
        let Some((&ALGORITHM_COSIGNATURE_V1, public)) = key.split_first() else {
            return Err(bad("not a cosignature/v1 (0x04) key"));
        };
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| bad("not an Ed25519 key"))?;
        if cosignature_key_id(name, &key) != id {
            return Err(bad("the key id does not match the key"));
        }
        Ok(Self {
            name: name.to_string(),
            id,
            key,
        })
    }

    /// The witness's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Checks one cosignature through `signed_note`: the library hands over the
/// signature bytes after the key id (timestamp ‖ signature).
impl signed_note::Verifier for WitnessKey {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Some((timestamp, signature)) = split_cosignature(sig) else {
            return false;
        };
        self.key
            .verify_strict(&cosigned_message(msg, timestamp), &signature)
            .is_ok()
    }
}

fn split_cosignature(sig: &[u8]) -> Option<(u64, Ed25519Signature)> {
    if sig.len() != 8 + 64 {
        return None;
    }
    let (timestamp, signature) = sig.split_at(8);
    let timestamp = u64::from_be_bytes(timestamp.try_into().ok()?);
    let signature = Ed25519Signature::from_slice(signature).ok()?;
    Some((timestamp, signature))
}

/// What checking one witness's cosignature on a note found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cosignature {
    /// A valid cosignature, made at this time (seconds since the epoch).
    Valid { timestamp: u64 },
    /// The note carries no signature line of this witness.
    Missing,
    /// A line of this witness that does not verify.
    Invalid,
}

/// Checks the cosignature of `witness` on the signed checkpoint `note`.
///
/// # Errors
/// [`AuditError::MalformedCheckpoint`] when the note does not parse.
pub fn check_cosignature(note: &[u8], witness: &WitnessKey) -> Result<Cosignature, AuditError> {
    let parsed =
        Note::from_bytes(note).map_err(|e| AuditError::MalformedCheckpoint(e.to_string()))?;
    match parsed.verify(&VerifierList::new(vec![Box::new(witness.clone())])) {
        Ok(_) => {
            // The library checked the signature; read its timestamp back.
            let timestamp = cosignature_lines(note)
                .filter_map(|line| signed_note::Signature::from_bytes(line.as_bytes()).ok())
                .filter(|s| s.name() == witness.name && s.id() == witness.id)
                .find_map(|s| split_cosignature(s.signature()).map(|(t, _)| t))
                .unwrap_or_default();
            Ok(Cosignature::Valid { timestamp })
        }
        Err(NoteError::UnverifiedNote) => Ok(Cosignature::Missing),
        Err(_) => Ok(Cosignature::Invalid),
    }
}

/// The signature lines of a note (after its last blank line).
fn cosignature_lines(note: &[u8]) -> impl Iterator<Item = &str> {
    let text = std::str::from_utf8(note).unwrap_or_default();
    let signatures = text.rsplit_once("\n\n").map_or("", |(_, s)| s);
    signatures.lines()
}

/// Appends signature `lines` (each ending in `\n`) to a signed note.
#[must_use]
pub fn attach_cosignatures(note: &[u8], lines: &[String]) -> Vec<u8> {
    let mut out = note.to_vec();
    for line in lines {
        if !line.is_empty() && !cosignature_lines(note).any(|l| l == line.trim_end()) {
            out.extend_from_slice(line.as_bytes());
        }
    }
    out
}

/// The signer (name, key id) of a signature line, if it parses as one.
fn line_signer(line: &str) -> Option<(String, u32)> {
    signed_note::Signature::from_bytes(line.trim_end().as_bytes())
        .ok()
        .map(|s| (s.name().to_string(), s.id()))
}

/// Appends to a signed note the signature `lines` of signers that have no
/// line in it yet (one cosignature per witness: a second answer of the same
/// witness, with another timestamp, is dropped). Lines that do not parse as
/// signatures are dropped too.
#[must_use]
pub fn merge_cosignatures(note: &[u8], lines: &[String]) -> Vec<u8> {
    let mut signers: Vec<(String, u32)> = cosignature_lines(note).filter_map(line_signer).collect();
    let mut out = note.to_vec();
    for line in lines {
        let Some(signer) = line_signer(line) else {
            continue;
        };
        if signers.contains(&signer) {
            continue;
        }
        signers.push(signer);
        out.extend_from_slice(line.trim_end().as_bytes());
        out.push(b'\n');
    }
    out
}

/// An `add-checkpoint` request body: `old <size>`, one base64 hash per
/// consistency proof line, a blank line, then the signed checkpoint.
#[must_use]
pub fn add_checkpoint_body(old_size: u64, proof: &[Hash], note: &[u8]) -> Vec<u8> {
    let mut body = format!("old {old_size}\n").into_bytes();
    for hash in proof {
        body.extend_from_slice(STANDARD.encode(hash.0).as_bytes());
        body.push(b'\n');
    }
    body.push(b'\n');
    body.extend_from_slice(note);
    body
}

/// A parsed `add-checkpoint` request.
#[derive(Debug, Clone, PartialEq)]
pub struct AddCheckpoint {
    /// The size the submitter believes the witness knows.
    pub old_size: u64,
    /// Consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint.
    pub note: Vec<u8>,
}

impl AddCheckpoint {
    /// Parses a request body.
    ///
    /// # Errors
    /// [`WitnessError::BadRequest`].
    pub fn parse(body: &[u8]) -> Result<Self, WitnessError> {
        let bad = |why: &str| WitnessError::BadRequest(why.to_string());
        if body.len() > WITNESS_REQUEST_BYTES_MAX {
            return Err(bad("request too large"));
        }
        let mut rest = body;
        let mut next_line = || -> Result<&[u8], WitnessError> {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| bad("truncated request"))?;
            let (line, after) = rest.split_at(end);
            rest = after.get(1..).unwrap_or_default();
            Ok(line)
        };
        let first = std::str::from_utf8(next_line()?).map_err(|_| bad("first line not UTF-8"))?;
        let old_size = first
            .strip_prefix("old ")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| bad("first line is not `old <size>`"))?;
        let mut proof = Vec::new();
        loop {
            let line = next_line()?;
            if line.is_empty() {
                break;
            }
            if proof.len() == WITNESS_PROOF_HASHES_MAX {
                return Err(bad("too many consistency proof lines"));
            }
            let bytes = STANDARD
                .decode(line)
                .map_err(|_| bad("a proof line is not base64"))?;
            let hash: [u8; HASH_SIZE] = bytes
                .try_into()
                .map_err(|_| bad("a proof hash is 32 bytes"))?;
            proof.push(Hash(hash));
        }
        Ok(Self {
            old_size,
            proof,
            note: rest.to_vec(),
        })
    }
}

/// The latest checkpoint a witness cosigned for one log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WitnessedTree {
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
}

/// A witness: its key, the logs it watches, and the latest tree it cosigned
/// for each, kept in `DIR/state/` (one file per log, replaced atomically after
/// an fsync, so a crash never loses a tree already cosigned).
pub struct Witness {
    name: String,
    key: SigningKey,
    logs: BTreeMap<String, String>,
    state_dir: PathBuf,
    // One checkpoint at a time: check and store must not interleave per log,
    // and witnesses see a few requests per minute per log.
    lock: Mutex<()>,
}

impl Witness {
    /// A witness named `name` with `key`, watching `logs` (origin → log
    /// verifier key), keeping its state under `dir`.
    ///
    /// # Errors
    /// An invalid name, more than `WITNESS_LOGS_MAX` logs, a malformed log
    /// key, or the state directory not creatable.
    pub fn open(
        dir: &Path,
        name: &str,
        key: SigningKey,
        logs: BTreeMap<String, String>,
    ) -> Result<Self, AuditError> {
        if !checkpoint::is_valid_origin(name) {
            return Err(AuditError::InvalidOrigin(name.to_string()));
        }
        if logs.len() > WITNESS_LOGS_MAX {
            return Err(AuditError::OutOfRange(format!(
                "{} logs, more than the {WITNESS_LOGS_MAX} a witness watches",
                logs.len()
            )));
        }
        for (origin, vkey) in &logs {
            let verifier = signed_note::StandardVerifier::new(vkey)
                .map_err(|e| AuditError::BadVerifierKey(format!("{vkey:?}: {e}")))?;
            if signed_note::Verifier::name(&verifier) != origin {
                return Err(AuditError::BadVerifierKey(format!(
                    "{vkey:?} is not a key of the log {origin:?}"
                )));
            }
        }
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| AuditError::io(format!("create {}", state_dir.display()), e))?;
        Ok(Self {
            name: name.to_string(),
            key,
            logs,
            state_dir,
            lock: Mutex::new(()),
        })
    }

    /// This witness's verifier key.
    #[must_use]
    pub fn verifier_key(&self) -> String {
        witness_verifier_key(&self.name, &self.key.verifying_key())
    }

    fn state_path(&self, origin: &str) -> PathBuf {
        // Origins hold `/`: name the file by the origin's hex bytes.
        let name: String = origin.bytes().map(|b| format!("{b:02x}")).collect();
        self.state_dir.join(name)
    }

    /// The latest tree cosigned for `origin` (size 0 before the first).
    ///
    /// # Errors
    /// Storage errors, or a damaged state file.
    pub fn witnessed(&self, origin: &str) -> Result<WitnessedTree, AuditError> {
        let path = self.state_path(origin);
        let Some(bytes) = store::read_small_file(&path, 256)? else {
            return Ok(WitnessedTree {
                size: 0,
                root: tlog_tiles::EMPTY_HASH,
            });
        };
        let corrupt = || AuditError::Corrupt(format!("witness state {}", path.display()));
        let text = std::str::from_utf8(&bytes).map_err(|_| corrupt())?;
        let mut lines = text.lines();
        let size = lines
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(corrupt)?;
        let root = lines
            .next()
            .and_then(|r| STANDARD.decode(r).ok())
            .and_then(|r| <[u8; HASH_SIZE]>::try_from(r).ok())
            .ok_or_else(corrupt)?;
        Ok(WitnessedTree {
            size,
            root: Hash(root),
        })
    }

    /// Handles an `add-checkpoint` request body at `now` (seconds since the
    /// epoch): returns the cosignature line to answer with.
    ///
    /// # Errors
    /// The refusals of [`WitnessError`], each with its HTTP status.
    pub fn add_checkpoint(&self, body: &[u8], now: u64) -> Result<String, WitnessError> {
        let request = AddCheckpoint::parse(body)?;
        let parsed = Note::from_bytes(&request.note)
            .map_err(|e| WitnessError::BadRequest(format!("checkpoint: {e}")))?;
        let checkpoint = Checkpoint::from_bytes(parsed.text())
            .map_err(|e| WitnessError::BadRequest(format!("checkpoint: {e}")))?;
        let origin = checkpoint.origin().to_string();
        let vkey = self
            .logs
            .get(&origin)
            .ok_or_else(|| WitnessError::UnknownLog(origin.clone()))?;
        checkpoint::open(&request.note, vkey)
            .map_err(|e| WitnessError::BadSignature(e.to_string()))?;
        let (size, root) = (checkpoint.size(), *checkpoint.hash());
        if request.old_size > size {
            return Err(WitnessError::BadRequest(format!(
                "old size {} is beyond the checkpoint's size {size}",
                request.old_size
            )));
        }
        let _one_at_a_time = self
            .lock
            .lock()
            .map_err(|_| AuditError::Failed("witness state lock poisoned".into()))?;
        let known = self.witnessed(&origin)?;
        if request.old_size != known.size {
            return Err(WitnessError::Conflict {
                known_size: known.size,
            });
        }
        if size == known.size {
            if !request.proof.is_empty() {
                return Err(WitnessError::BadProof(
                    "a proof between equal sizes is empty".into(),
                ));
            }
            if root != known.root {
                tracing::error!(
                    origin,
                    size,
                    "log misbehavior: two checkpoints of the same size with different roots"
                );
                return Err(WitnessError::Conflict {
                    known_size: known.size,
                });
            }
        } else if known.size == 0 {
            if !request.proof.is_empty() {
                return Err(WitnessError::BadProof(
                    "a proof from the empty tree is empty".into(),
                ));
            }
        } else if let Err(e) =
            tlog_tiles::check_tree(&request.proof, size, root, known.size, known.root)
        {
            tracing::warn!(
                origin,
                from = known.size,
                to = size,
                "inconsistent checkpoint refused"
            );
            return Err(WitnessError::BadProof(e.to_string()));
        }
        if size > known.size {
            // Durable before the cosignature leaves: a restart never forgets it.
            let state = format!("{size}\n{}\n", STANDARD.encode(root.0));
            store::write_file_atomically(&self.state_path(&origin), state.as_bytes())?;
        }
        Ok(cosign(&self.name, &self.key, parsed.text(), now)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::sign;

    const ORIGIN: &str = "nuage.example/audit/123456789012";
    const WITNESS: &str = "witness.example/w1";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| tlog_tiles::record_hash(format!("entry {i}").as_bytes()))
            .collect()
    }

    /// Root and consistency proofs of a tree over `leaves`, computed from
    /// scratch with tlog_tiles over an in-memory hash store.
    struct Tree(Vec<Hash>);

    impl tlog_tiles::HashReader for Tree {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
            indexes
                .iter()
                .map(|&i| {
                    usize::try_from(i)
                        .ok()
                        .and_then(|i| self.0.get(i).copied())
                        .ok_or(tlog_tiles::Error::IndexesNotInTree)
                })
                .collect()
        }
    }

    fn tree(records: &[Hash]) -> Tree {
        let mut stored = Vec::new();
        for (n, leaf) in records.iter().enumerate() {
            let reader = Tree(stored.clone());
            let new = tlog_tiles::stored_hashes_for_record_hash(n as u64, *leaf, &reader)
                .expect("stored hashes");
            stored.extend(new);
        }
        Tree(stored)
    }

    fn checkpoint_of(records: &[Hash]) -> (Hash, Vec<u8>) {
        let t = tree(records);
        let root = tlog_tiles::tree_hash(records.len() as u64, &t).expect("root");
        let note = sign(ORIGIN, records.len() as u64, root, &key(1))
            .expect("sign")
            .note;
        (root, note)
    }

    fn proof(records: &[Hash], old: u64) -> Vec<Hash> {
        if old == 0 || old >= records.len() as u64 {
            return Vec::new();
        }
        tlog_tiles::prove_tree(records.len() as u64, old, &tree(records)).expect("proof")
    }

    fn witness(dir: &Path) -> Witness {
        let logs = BTreeMap::from([(
            ORIGIN.to_string(),
            checkpoint::verifier_key(ORIGIN, &key(1).verifying_key()),
        )]);
        Witness::open(dir, WITNESS, key(9), logs).expect("witness")
    }

    fn add(w: &Witness, old: u64, records: &[Hash]) -> Result<String, WitnessError> {
        let (_, note) = checkpoint_of(records);
        let proof = proof(records, old);
        w.add_checkpoint(&add_checkpoint_body(old, &proof, &note), 1_700_000_000)
    }

    #[test]
    fn cosignature_has_the_c2sp_shape_and_verifies_with_its_timestamp() {
        let (_, note) = checkpoint_of(&leaves(3));
        let body = Note::from_bytes(&note).expect("note").text().to_vec();
        let line = cosign(WITNESS, &key(9), &body, 1_234).expect("cosign");
        let b64 = line
            .strip_prefix(&format!("— {WITNESS} "))
            .expect("signature line")
            .trim_end();
        let raw = STANDARD.decode(b64).expect("base64");
        assert_eq!(raw.len(), 4 + 8 + 64);
        assert_eq!(raw[4..12], 1_234u64.to_be_bytes());
        // The key id is SHA-256(name ‖ "\n" ‖ 0x04 ‖ key)[:4].
        let vkey = witness_verifier_key(WITNESS, &key(9).verifying_key());
        let witness_key = WitnessKey::parse(&vkey).expect("vkey");
        assert_eq!(raw[..4], witness_key.id.to_be_bytes());
        // The signed message includes the timestamp.
        let message = [b"cosignature/v1\ntime 1234\n".as_slice(), &body].concat();
        let signature = Ed25519Signature::from_slice(&raw[12..]).expect("sig");
        key(9)
            .verifying_key()
            .verify_strict(&message, &signature)
            .expect("verifies");

        let cosigned = attach_cosignatures(&note, std::slice::from_ref(&line));
        assert_eq!(
            check_cosignature(&cosigned, &witness_key).expect("check"),
            Cosignature::Valid { timestamp: 1_234 }
        );
        // The log's own signature still verifies with extra lines.
        checkpoint::open(
            &cosigned,
            &checkpoint::verifier_key(ORIGIN, &key(1).verifying_key()),
        )
        .expect("log signature");
        assert_eq!(
            check_cosignature(&note, &witness_key).expect("check"),
            Cosignature::Missing
        );
        // A changed timestamp breaks the signature.
        let mut forged = raw.clone();
        forged[11] ^= 1;
        let forged_line = format!("— {WITNESS} {}\n", STANDARD.encode(forged));
        let forged_note = attach_cosignatures(&note, &[forged_line]);
        assert_eq!(
            check_cosignature(&forged_note, &witness_key).expect("check"),
            Cosignature::Invalid
        );
        // Another witness's key does not count it.
        let other = WitnessKey::parse(&witness_verifier_key(WITNESS, &key(8).verifying_key()))
            .expect("vkey");
        assert_eq!(
            check_cosignature(&cosigned, &other).expect("check"),
            Cosignature::Missing
        );
    }

    #[test]
    fn malformed_witness_keys_are_refused() {
        let good = witness_verifier_key(WITNESS, &key(9).verifying_key());
        let log_key = checkpoint::verifier_key(ORIGIN, &key(9).verifying_key());
        for bad in [
            "",
            "name",
            log_key.as_str(),
            &good.replacen('+', "+0", 1),
            &good.replace(WITNESS, "witness.example/w2"),
        ] {
            assert!(WitnessKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_body_round_trips_and_bad_ones_are_400() {
        let records = leaves(5);
        let (_, note) = checkpoint_of(&records);
        let proof = proof(&records, 3);
        let body = add_checkpoint_body(3, &proof, &note);
        let parsed = AddCheckpoint::parse(&body).expect("parse");
        assert_eq!(parsed.old_size, 3);
        assert_eq!(parsed.proof, proof);
        assert_eq!(parsed.note, note);
        for bad in [
            b"".as_slice(),
            b"old\n\n",
            b"old -1\n\n",
            b"new 3\n\n",
            b"old 3\nnot base64!\n\n",
            b"old 3\nAAAA\n\n",
        ] {
            assert_eq!(
                AddCheckpoint::parse(bad)
                    .map(|_| ())
                    .map_err(|e| e.status()),
                Err(400)
            );
        }
    }

    #[test]
    fn witness_follows_a_growing_log_and_keeps_its_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = leaves(9);
        {
            let w = witness(dir.path());
            add(&w, 0, &records[..3]).expect("first");
            add(&w, 3, &records[..7]).expect("grows");
            add(&w, 7, &records[..7]).expect("same checkpoint again");
        }
        // Reopened (a restart): it remembers size 7.
        let w = witness(dir.path());
        assert_eq!(w.witnessed(ORIGIN).expect("state").size, 7);
        let err = add(&w, 3, &records).expect_err("stale old size");
        assert!(
            matches!(err, WitnessError::Conflict { known_size: 7 }),
            "{err}"
        );
        assert_eq!(err.status(), 409);
        let line = add(&w, 7, &records).expect("learned size");
        let (_, note) = checkpoint_of(&records);
        let cosigned = attach_cosignatures(&note, &[line]);
        let witness_key = WitnessKey::parse(&w.verifier_key()).expect("vkey");
        assert!(matches!(
            check_cosignature(&cosigned, &witness_key).expect("check"),
            Cosignature::Valid { .. }
        ));
    }

    #[test]
    fn witness_refuses_rollback_fork_bad_signature_and_unknown_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = witness(dir.path());
        let records = leaves(8);
        add(&w, 0, &records[..6]).expect("first");

        // Rollback: a smaller tree than the one cosigned.
        let err = add(&w, 6, &records[..4]).expect_err("rollback");
        assert_eq!(err.status(), 400, "{err}");
        let err = add(&w, 0, &records[..4]).expect_err("rollback from 0");
        assert_eq!(err.status(), 409, "{err}");

        // Fork: the same size with another root.
        let mut forked = records.clone();
        forked[2] = tlog_tiles::record_hash(b"rewritten");
        let err = add(&w, 6, &forked[..6]).expect_err("same-size fork");
        assert!(
            matches!(err, WitnessError::Conflict { known_size: 6 }),
            "{err}"
        );

        // Fork: a bigger tree that does not extend the cosigned one; its own
        // proof (from the forked history) does not hold against the witness's.
        let err = add(&w, 6, &forked).expect_err("fork");
        assert_eq!(err.status(), 422, "{err}");
        assert_eq!(w.witnessed(ORIGIN).expect("state").size, 6);

        // A checkpoint signed by another key.
        let (_, note) = checkpoint_of(&records);
        let text = Note::from_bytes(&note).expect("note").text().to_vec();
        let bad_note = checkpoint::sign_note(ORIGIN, &text, &key(2)).expect("sign");
        let body = add_checkpoint_body(6, &proof(&records, 6), &bad_note);
        assert_eq!(w.add_checkpoint(&body, 1).map_err(|e| e.status()), Err(403));

        // A log the witness does not watch.
        let other = sign(
            "other.example/log",
            1,
            tlog_tiles::record_hash(b"x"),
            &key(1),
        )
        .expect("sign")
        .note;
        let body = add_checkpoint_body(0, &[], &other);
        assert_eq!(w.add_checkpoint(&body, 1).map_err(|e| e.status()), Err(404));

        // The honest extension is still accepted.
        add(&w, 6, &records).expect("extension");
    }

    #[test]
    fn merged_cosignatures_keep_one_line_per_witness_and_verify() {
        let note = sign(ORIGIN, 1, tlog_tiles::record_hash(b"x"), &key(1))
            .expect("sign")
            .note;
        let body = Note::from_bytes(&note).expect("note").text().to_vec();
        let line =
            |name: &str, seed: u8, at: u64| cosign(name, &key(seed), &body, at).expect("cosign");
        let w1 =
            WitnessKey::parse(&witness_verifier_key(WITNESS, &key(5).verifying_key())).expect("w1");
        let w2 = WitnessKey::parse(&witness_verifier_key(
            "witness.example/w2",
            &key(6).verifying_key(),
        ))
        .expect("w2");
        let once = merge_cosignatures(&note, &[line(WITNESS, 5, 10), "not a signature".into()]);
        let merged = merge_cosignatures(
            &once,
            &[line(WITNESS, 5, 11), line("witness.example/w2", 6, 10)],
        );
        let text = String::from_utf8(merged.clone()).expect("utf8");
        assert_eq!(text.matches("— witness.example/w1 ").count(), 1, "{text}");
        assert!(!text.contains("not a signature"));
        for witness in [&w1, &w2] {
            assert_eq!(
                check_cosignature(&merged, witness).expect("parse"),
                Cosignature::Valid { timestamp: 10 }
            );
        }
    }
}
