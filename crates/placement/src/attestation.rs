//! Residency attestations: a statement, signed by the region's key, of where
//! every replica of a bucket's or an object's data is at one moment, and
//! whether that complies with the policy in force.
//!
//! An attestation is a C2SP signed note. Its text is two lines: the format
//! ([`FORMAT`]), then the statement as canonical JSON on one line (the
//! fields in the order of [`Attestation`], sets sorted, no spaces: exactly
//! what `serde_json::to_string` writes; control characters inside strings
//! are JSON escapes, so the note stays two lines). The note carries one
//! Ed25519 signature whose key name is the statement's `issuer`; the
//! verifier key (`vkey`) is the usual signed-note `name+id+key`.
//!
//! [`verify`] needs only the text and the verifier key, no topology and no
//! network: it checks the signature, the format, that the JSON is the
//! canonical encoding of what it says, that the issuer is the key's name,
//! and that the compliance verdict follows from the replicas and policy the
//! statement itself lists. Each failure has its own [`AttestationError`].

use crate::limits::{ATTESTATION_BYTES_MAX, ATTESTATION_REPLICAS_MAX};
use crate::placement::check_sites;
use crate::policy::ResidencyPolicy;
use crate::topology::{Site, Topology};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use signed_note::{Note, NoteError, StandardVerifier, VerifierList};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The first line of every attestation of this format.
pub const FORMAT: &str = "nuage.residency.attestation/v1";

/// Signed-note signature type for Ed25519.
const ALGORITHM_ED25519: u8 = 0x01;

/// What an attestation is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// The tenant (account id).
    pub tenant: String,
    /// The bucket.
    pub bucket: String,
    /// The object's key, for an object's attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The object's version id, for an object's attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// Where one replica is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaStatement {
    /// The blob (an object's data, or one part of it). Absent in a bucket's
    /// summary, where each line is a node holding some of the bucket's data.
    pub blob: Option<String>,
    /// The shard index under erasure coding; absent for a whole copy.
    pub chunk: Option<u32>,
    /// The node holding it.
    pub node: String,
    /// The node's site as the topology describes it (country,
    /// jurisdictions, operator and its country of control,
    /// qualifications); `null` when the node is not in the topology.
    pub site: Option<Site>,
}

/// A residency statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    /// The region whose key signs.
    pub region: String,
    /// The signer's key name (the signed note's key name).
    pub issuer: String,
    /// When the statement was made (UTC, whole seconds).
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// What it is about.
    pub subject: Subject,
    /// The policy in force.
    pub policy: ResidencyPolicy,
    /// Every replica.
    pub replicas: Vec<ReplicaStatement>,
    /// Whether every replica complies and every blob has its copies.
    pub compliant: bool,
    /// Why not, one sentence each (empty when compliant).
    pub violations: Vec<String>,
}

/// One replica to attest: which blob (or none for a bucket summary), which
/// shard, which node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRef {
    /// The blob.
    pub blob: Option<String>,
    /// The shard index.
    pub chunk: Option<u32>,
    /// The node.
    pub node: String,
}

/// Why an attestation cannot be made or is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    /// The verifier key does not parse.
    #[error("the verifier key is not a signed-note Ed25519 key: {0}")]
    BadVerifierKey(String),
    /// Too large to be an attestation.
    #[error("the attestation is {0} bytes, more than {ATTESTATION_BYTES_MAX}")]
    TooLarge(usize),
    /// Not a signed note.
    #[error("not a signed note: {0}")]
    Malformed(String),
    /// No signature by the given key.
    #[error("not signed by the key {key} (signed by: {})", if signers.is_empty() { "nobody".to_string() } else { signers.join(", ") })]
    WrongKey {
        /// The key expected, `name+id`.
        key: String,
        /// The keys that did sign, `name+id`.
        signers: Vec<String>,
    },
    /// A signature that claims the key but does not verify.
    #[error("the signature by {key} does not verify: the attestation was altered or forged")]
    BadSignature {
        /// The key, `name+id`.
        key: String,
    },
    /// Signed, but not an attestation of a format this verifier reads.
    #[error("unknown attestation format `{0}` (this verifier reads `{FORMAT}`)")]
    UnknownFormat(String),
    /// Signed, but the statement does not parse.
    #[error("the signed statement is not a valid attestation: {0}")]
    InvalidBody(String),
    /// Signed, but not the canonical encoding of the statement.
    #[error("the signed statement is not in canonical form")]
    NotCanonical,
    /// The statement names another issuer than the key.
    #[error("the attestation names issuer `{issuer}` but the key is `{key}`'s")]
    IssuerMismatch {
        /// The statement's issuer.
        issuer: String,
        /// The key's name.
        key: String,
    },
    /// The verdict does not follow from the statement's own content.
    #[error("the compliance verdict does not follow from the listed replicas and policy: {0}")]
    Inconsistent(String),
    /// An issuer that cannot name a signed-note key.
    #[error("`{0}` cannot name a key (no spaces, no `+`, not empty)")]
    InvalidIssuer(String),
    /// More replicas than an attestation holds.
    #[error("{0} replicas, more than the {ATTESTATION_REPLICAS_MAX} an attestation lists")]
    TooManyReplicas(usize),
    /// The signer failed.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Something that holds the region's Ed25519 key and signs with it (the
/// server keeps it sealed by its root of trust).
pub trait AttestationSigner: Send + Sync {
    /// The public half.
    fn public_key(&self) -> VerifyingKey;
    /// An Ed25519 signature of `message`.
    ///
    /// # Errors
    /// The key is unavailable.
    fn sign(&self, message: &[u8]) -> Result<ed25519_dalek::Signature, String>;
}

/// An in-memory key, for tests, the CLI's tests and development.
impl AttestationSigner for SigningKey {
    fn public_key(&self) -> VerifyingKey {
        self.verifying_key()
    }

    fn sign(&self, message: &[u8]) -> Result<ed25519_dalek::Signature, String> {
        self.try_sign(message).map_err(|e| e.to_string())
    }
}

/// The verifier key a tenant uses to check attestations by `issuer`.
///
/// # Errors
/// [`AttestationError::InvalidIssuer`].
pub fn verifier_key(issuer: &str, key: &VerifyingKey) -> Result<String, AttestationError> {
    check_issuer(issuer)?;
    Ok(signed_note::new_ed25519_verifier_key(issuer, key))
}

/// Checks that `vkey` is a signed-note Ed25519 verifier key (`name+id+key`)
/// and returns its `name+id`.
///
/// # Errors
/// [`AttestationError::BadVerifierKey`].
pub fn check_verifier_key(vkey: &str) -> Result<String, AttestationError> {
    let verifier = StandardVerifier::new(vkey.trim())
        .map_err(|e| AttestationError::BadVerifierKey(e.to_string()))?;
    Ok(format!(
        "{}+{:08x}",
        signed_note::Verifier::name(&verifier),
        signed_note::Verifier::key_id(&verifier)
    ))
}

fn check_issuer(issuer: &str) -> Result<(), AttestationError> {
    if signed_note::is_key_name_valid(issuer) && !issuer.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(AttestationError::InvalidIssuer(issuer.to_string()))
    }
}

impl Attestation {
    /// States where `replicas` are, with each node's site from `topology`,
    /// and whether that complies with `policy`.
    ///
    /// # Errors
    /// An invalid issuer, or more replicas than [`ATTESTATION_REPLICAS_MAX`].
    pub fn new(
        topology: &Topology,
        policy: &ResidencyPolicy,
        region: &str,
        issuer: &str,
        issued_at: OffsetDateTime,
        subject: Subject,
        replicas: Vec<ReplicaRef>,
    ) -> Result<Self, AttestationError> {
        check_issuer(issuer)?;
        if replicas.len() > ATTESTATION_REPLICAS_MAX {
            return Err(AttestationError::TooManyReplicas(replicas.len()));
        }
        // Whole seconds in UTC, so that the JSON reads back to the same value.
        let issued_at = issued_at
            .to_offset(time::UtcOffset::UTC)
            .replace_nanosecond(0)
            .unwrap_or(issued_at);
        let replicas: Vec<ReplicaStatement> = replicas
            .into_iter()
            .map(|r| ReplicaStatement {
                site: topology.site_of(&r.node).cloned(),
                blob: r.blob,
                chunk: r.chunk,
                node: r.node,
            })
            .collect();
        let mut attestation = Self {
            region: region.to_string(),
            issuer: issuer.to_string(),
            issued_at,
            subject,
            policy: policy.clone(),
            replicas,
            compliant: true,
            violations: Vec::new(),
        };
        attestation.violations = attestation.derive_violations();
        attestation.compliant = attestation.violations.is_empty();
        Ok(attestation)
    }

    /// The violations that follow from the listed replicas and policy: per
    /// blob, every replica on a site the policy refuses, too few copies or
    /// sites; for a bucket summary's lines, sites refused.
    #[must_use]
    pub fn derive_violations(&self) -> Vec<String> {
        let mut by_blob: BTreeMap<Option<&str>, Vec<&ReplicaStatement>> = BTreeMap::new();
        for replica in &self.replicas {
            by_blob
                .entry(replica.blob.as_deref())
                .or_default()
                .push(replica);
        }
        let mut violations = Vec::new();
        for (blob, replicas) in by_blob {
            let compliance = check_sites(
                &self.policy,
                replicas.iter().map(|r| (r.node.as_str(), r.site.as_ref())),
                blob.is_some(),
            );
            for violation in compliance.violations {
                violations.push(match blob {
                    Some(blob) => format!("blob {blob}: {violation}"),
                    None => violation.to_string(),
                });
            }
        }
        violations
    }

    /// The note text: [`FORMAT`], newline, canonical JSON, newline.
    fn body(&self) -> String {
        // Serializing plain data to a string cannot fail.
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{FORMAT}\n{json}\n")
    }

    /// Signs the statement with the region's key; the result is the whole
    /// signed note, what the API returns and `nuage residency verify` reads.
    ///
    /// # Errors
    /// The signer failing.
    pub fn sign(&self, signer: &dyn AttestationSigner) -> Result<String, AttestationError> {
        sign_text(&self.issuer, &self.body(), signer)
    }
}

struct NoteSigner<'a> {
    name: &'a str,
    id: u32,
    signer: &'a dyn AttestationSigner,
}

impl signed_note::Signer for NoteSigner<'_> {
    fn name(&self) -> &str {
        self.name
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        self.signer
            .sign(msg)
            .map(|s| s.to_bytes().to_vec())
            .map_err(|_| ed25519_dalek::SignatureError::new())
    }
}

fn sign_text(
    issuer: &str,
    text: &str,
    signer: &dyn AttestationSigner,
) -> Result<String, AttestationError> {
    check_issuer(issuer)?;
    let mut note =
        Note::new(text.as_bytes(), &[]).map_err(|e| AttestationError::Signing(e.to_string()))?;
    let public = [
        &[ALGORITHM_ED25519],
        signer.public_key().as_bytes().as_slice(),
    ]
    .concat();
    let note_signer = NoteSigner {
        name: issuer,
        id: signed_note::key_id(issuer, &public),
        signer,
    };
    note.add_sigs(&[&note_signer])
        .map_err(|e| AttestationError::Signing(e.to_string()))?;
    String::from_utf8(note.to_bytes()).map_err(|e| AttestationError::Signing(e.to_string()))
}

/// The `name+id` of each signature line of a note (for error messages).
fn signers(text: &str) -> Vec<String> {
    let Some((_, lines)) = text.rsplit_once("\n\n") else {
        return Vec::new();
    };
    lines
        .lines()
        .filter_map(|line| signed_note::Signature::from_bytes(line.as_bytes()).ok())
        .map(|s| format!("{}+{:08x}", s.name(), s.id()))
        .collect()
}

/// Verifies a signed attestation with the region's verifier key, offline.
///
/// # Errors
/// One [`AttestationError`] per kind of failure: a bad key, a note that does
/// not parse, a signature by another key or none, a signature that does not
/// verify (altered or forged), an unknown format, a body that is not a
/// canonical attestation, an issuer other than the key, a verdict that does
/// not follow from the statement.
pub fn verify(text: &str, vkey: &str) -> Result<Attestation, AttestationError> {
    if text.len() > ATTESTATION_BYTES_MAX {
        return Err(AttestationError::TooLarge(text.len()));
    }
    let verifier = StandardVerifier::new(vkey.trim())
        .map_err(|e| AttestationError::BadVerifierKey(e.to_string()))?;
    let key_name = signed_note::Verifier::name(&verifier).to_string();
    let key = format!(
        "{key_name}+{:08x}",
        signed_note::Verifier::key_id(&verifier)
    );
    let note = Note::from_bytes(text.as_bytes())
        .map_err(|e| AttestationError::Malformed(e.to_string()))?;
    match note.verify(&VerifierList::new(vec![Box::new(verifier)])) {
        Ok(_) => {}
        Err(NoteError::UnverifiedNote) => {
            return Err(AttestationError::WrongKey {
                key,
                signers: signers(text),
            });
        }
        Err(NoteError::InvalidSignature { .. }) => {
            return Err(AttestationError::BadSignature { key });
        }
        Err(other) => return Err(AttestationError::Malformed(other.to_string())),
    }
    // Authentic from here on; now what does it say?
    let body = std::str::from_utf8(note.text())
        .map_err(|e| AttestationError::InvalidBody(e.to_string()))?;
    let (format, rest) = body.split_once('\n').unwrap_or((body, ""));
    if format != FORMAT {
        return Err(AttestationError::UnknownFormat(format.to_string()));
    }
    let json = rest
        .strip_suffix('\n')
        .filter(|json| !json.contains('\n'))
        .ok_or_else(|| {
            AttestationError::InvalidBody("the statement is not one JSON line".to_string())
        })?;
    let attestation: Attestation =
        serde_json::from_str(json).map_err(|e| AttestationError::InvalidBody(e.to_string()))?;
    if attestation.body() != body {
        return Err(AttestationError::NotCanonical);
    }
    if attestation.issuer != key_name {
        return Err(AttestationError::IssuerMismatch {
            issuer: attestation.issuer,
            key: key_name,
        });
    }
    if attestation.replicas.len() > ATTESTATION_REPLICAS_MAX {
        return Err(AttestationError::TooManyReplicas(
            attestation.replicas.len(),
        ));
    }
    let derived = attestation.derive_violations();
    if derived != attestation.violations || attestation.compliant != derived.is_empty() {
        return Err(AttestationError::Inconsistent(format!(
            "it says {}, the replicas and policy it lists give {}",
            verdict_text(attestation.compliant, &attestation.violations),
            verdict_text(derived.is_empty(), &derived)
        )));
    }
    Ok(attestation)
}

fn verdict_text(compliant: bool, violations: &[String]) -> String {
    if compliant && violations.is_empty() {
        "compliant".to_string()
    } else {
        format!("not compliant ({})", violations.join("; "))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::topology::tests::example;

    const ISSUER: &str = "nuage.example/residency/eu-west";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn vkey(seed: u8) -> String {
        verifier_key(ISSUER, &key(seed).verifying_key()).unwrap()
    }

    fn attestation(nodes: &[&str]) -> Attestation {
        let policy = ResidencyPolicy::from_json(
            r#"{"allowed_countries":["FR"],"required_qualifications":["secnumcloud"],"durability":{"replicas":2},"min_sites":2}"#,
        )
        .unwrap();
        Attestation::new(
            &example(),
            &policy,
            "eu-west",
            ISSUER,
            OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap(),
            Subject {
                tenant: "123456789012".into(),
                bucket: "invoices".into(),
                key: Some("2026/11/\nfacture.pdf".into()),
                version_id: Some("0000000000000001a1b2c3d4".into()),
            },
            nodes
                .iter()
                .map(|node| ReplicaRef {
                    blob: Some("blob-1".into()),
                    chunk: None,
                    node: (*node).to_string(),
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn signed_attestation_verifies_and_reads_back() {
        let statement = attestation(&["par1-n1", "par2-n2"]);
        assert!(statement.compliant);
        let signed = statement.sign(&key(1)).unwrap();
        let mut lines = signed.lines();
        assert_eq!(lines.next(), Some(FORMAT));
        assert!(lines.next().unwrap().starts_with("{\"region\":\"eu-west\""));
        assert_eq!(lines.next(), Some(""));
        assert!(lines.next().unwrap().starts_with(&format!("— {ISSUER} ")));
        assert_eq!(verify(&signed, &vkey(1)).unwrap(), statement);
        let replica = &statement.replicas[0];
        let site = replica.site.as_ref().unwrap();
        assert_eq!(site.country.as_str(), "FR");
        assert_eq!(site.operator.entity, "Nuage Exploitation SAS");
        assert!(
            signed.contains(r#""jurisdictions":["FR","EU","EEA"]"#),
            "{signed}"
        );
        assert!(signed.contains(r#""issued_at":"2026-11-18T"#), "{signed}");
    }

    #[test]
    fn verifier_keys_are_checked_and_named() {
        let name = check_verifier_key(&vkey(1)).unwrap();
        assert!(name.starts_with(&format!("{ISSUER}+")), "{name}");
        assert_eq!(name.len(), ISSUER.len() + 9);
        assert!(check_verifier_key("not a key").is_err());
        assert!(check_verifier_key(&vkey(1).replace('A', "B")).is_err());
    }

    #[test]
    fn non_compliant_placements_are_attested_as_such() {
        let statement = attestation(&["par1-n1", "mrs1-n1", "ghost-n1"]);
        assert!(!statement.compliant);
        assert_eq!(
            statement.violations,
            [
                "blob blob-1: replica on mrs1-n1 at site mrs1: lacks secnumcloud",
                "blob blob-1: replica on ghost-n1, a node not in the topology",
                "blob blob-1: 1 compliant replica(s), the policy needs 2",
                "blob blob-1: compliant replicas on 1 site(s), the policy needs 2",
            ]
        );
        let signed = statement.sign(&key(1)).unwrap();
        assert_eq!(verify(&signed, &vkey(1)).unwrap(), statement);
    }

    #[test]
    fn another_key_is_rejected() {
        let signed = attestation(&["par1-n1", "par2-n2"]).sign(&key(1)).unwrap();
        let error = verify(&signed, &vkey(2)).unwrap_err();
        assert!(
            matches!(error, AttestationError::WrongKey { .. }),
            "{error}"
        );
        // A key of another issuer, too.
        let other =
            verifier_key("nuage.example/residency/us-east", &key(1).verifying_key()).unwrap();
        assert!(matches!(
            verify(&signed, &other).unwrap_err(),
            AttestationError::WrongKey { .. }
        ));
    }

    #[test]
    fn altered_bodies_are_rejected() {
        let signed = attestation(&["par1-n1", "par2-n2"]).sign(&key(1)).unwrap();
        for (from, to) in [
            (r#""country":"FR""#, r#""country":"DE""#),
            (r#""node":"par1-n1""#, r#""node":"par1-n2""#),
            (r#""compliant":true"#, r#""compliant":false"#),
            ("\"bucket\":\"invoices\"", "\"bucket\":\"invoicez\""),
        ] {
            assert!(signed.contains(from), "{from}");
            let altered = signed.replacen(from, to, 1);
            assert_eq!(
                verify(&altered, &vkey(1)).unwrap_err(),
                AttestationError::BadSignature {
                    key: vkey(1).rsplit_once('+').unwrap().0.to_string()
                },
                "{from}"
            );
        }
    }

    #[test]
    fn forged_signature_is_rejected() {
        let signed = attestation(&["par1-n1", "par2-n2"]).sign(&key(1)).unwrap();
        // Same key name and id, signature bytes of another key.
        let forged_by = attestation(&["par1-n1", "par2-n2"]).sign(&key(2)).unwrap();
        let id_line = |note: &str| note.lines().last().unwrap().to_string();
        let real = id_line(&signed);
        let other = id_line(&forged_by);
        // Keep the real key id (first 4 bytes), take the other signature.
        use base64::Engine as _;
        let decode = |line: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(line.rsplit_once(' ').unwrap().1)
                .unwrap()
        };
        let mut bytes = decode(&real);
        bytes[4..].copy_from_slice(&decode(&other)[4..]);
        let forged_line = format!(
            "— {ISSUER} {}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        let forged = signed.replace(&real, &forged_line);
        assert!(matches!(
            verify(&forged, &vkey(1)).unwrap_err(),
            AttestationError::BadSignature { .. }
        ));
        // No signature at all.
        let unsigned = signed.replace(&real, "");
        assert!(matches!(
            verify(&unsigned, &vkey(1)).unwrap_err(),
            AttestationError::Malformed(_)
        ));
    }

    #[test]
    fn signed_but_wrong_content_is_rejected() {
        let statement = attestation(&["par1-n1", "par2-n2"]);
        let json = serde_json::to_string(&statement).unwrap();
        // Right key, unknown format.
        let v2 = sign_text(
            ISSUER,
            &format!("nuage.residency.attestation/v2\n{json}\n"),
            &key(1),
        )
        .unwrap();
        assert_eq!(
            verify(&v2, &vkey(1)).unwrap_err(),
            AttestationError::UnknownFormat("nuage.residency.attestation/v2".into())
        );
        // Right key, not canonical (spaces).
        let pretty = serde_json::to_string_pretty(&statement)
            .unwrap()
            .replace('\n', " ");
        let spaced = sign_text(ISSUER, &format!("{FORMAT}\n{pretty}\n"), &key(1)).unwrap();
        assert_eq!(
            verify(&spaced, &vkey(1)).unwrap_err(),
            AttestationError::NotCanonical
        );
        // Right key, not JSON.
        let junk = sign_text(ISSUER, &format!("{FORMAT}\nhello\n"), &key(1)).unwrap();
        assert!(matches!(
            verify(&junk, &vkey(1)).unwrap_err(),
            AttestationError::InvalidBody(_)
        ));
        // Right key, a verdict that does not follow.
        let mut lying = attestation(&["par1-n1", "mrs1-n1"]);
        lying.compliant = true;
        lying.violations.clear();
        let lie = lying.sign(&key(1)).unwrap();
        assert!(matches!(
            verify(&lie, &vkey(1)).unwrap_err(),
            AttestationError::Inconsistent(_)
        ));
        // A statement naming another issuer, signed under this key name.
        let mut impostor = attestation(&["par1-n1", "par2-n2"]);
        impostor.issuer = "nuage.example/residency/us-east".into();
        let text = sign_text(ISSUER, &impostor.body(), &key(1)).unwrap();
        assert!(matches!(
            verify(&text, &vkey(1)).unwrap_err(),
            AttestationError::IssuerMismatch { .. }
        ));
        // Bad keys and non-notes.
        assert!(matches!(
            verify(&v2, "not a key").unwrap_err(),
            AttestationError::BadVerifierKey(_)
        ));
        assert!(matches!(
            verify("hello\n", &vkey(1)).unwrap_err(),
            AttestationError::Malformed(_)
        ));
    }

    #[test]
    fn bucket_summaries_check_sites_only() {
        let policy = ResidencyPolicy::from_json(
            r#"{"allowed_jurisdictions":["EU"],"durability":{"replicas":3},"min_sites":2}"#,
        )
        .unwrap();
        let statement = Attestation::new(
            &example(),
            &policy,
            "eu-west",
            ISSUER,
            OffsetDateTime::UNIX_EPOCH,
            Subject {
                tenant: "123456789012".into(),
                bucket: "b".into(),
                key: None,
                version_id: None,
            },
            ["par1-n1", "fra1-n1", "iad1-n1"]
                .iter()
                .map(|n| ReplicaRef {
                    blob: None,
                    chunk: None,
                    node: (*n).into(),
                })
                .collect(),
        )
        .unwrap();
        assert_eq!(statement.violations.len(), 1, "{:?}", statement.violations);
        assert!(statement.violations[0].starts_with("replica on iad1-n1 at site iad1: in US"));
        let signed = statement.sign(&key(3)).unwrap();
        assert!(!signed.contains("\"key\""));
        assert_eq!(
            verify(
                &signed,
                &verifier_key(ISSUER, &key(3).verifying_key()).unwrap()
            )
            .unwrap(),
            statement
        );
    }
}
