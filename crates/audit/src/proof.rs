//! Inclusion and consistency proofs (RFC 6962 / RFC 9162), and their JSON form.
//!
//! An [`InclusionProof`] shows that entry `index` is in the tree of `tree_size`
//! entries; a [`ConsistencyProof`] that the tree of `old_size` is a prefix of the
//! tree of `new_size`. Both are the RFC's audit paths, hashes in base64:
//!
//! ```json
//! {"index":3,"tree_size":8,"hashes":["base64...", "..."]}
//! {"old_size":3,"new_size":8,"hashes":["base64...", "..."]}
//! ```
//!
//! Proofs are built and checked with `tlog_tiles`; the tests check them against
//! an independent implementation (`ct-merkle`) and RFC 6962 test vectors.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tlog_tiles::{HASH_SIZE, Hash};

use crate::AuditError;

/// Proof that entry `index` is in the tree of `tree_size` entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The entry's position, from 0.
    pub index: u64,
    /// The size of the tree the proof is for.
    pub tree_size: u64,
    /// The audit path, leaf to root.
    #[serde(with = "base64_hashes")]
    pub hashes: Vec<Hash>,
}

/// Proof that the tree of `old_size` entries is a prefix of the one of `new_size`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The smaller tree's size.
    pub old_size: u64,
    /// The larger tree's size.
    pub new_size: u64,
    /// The consistency path.
    #[serde(with = "base64_hashes")]
    pub hashes: Vec<Hash>,
}

impl InclusionProof {
    /// Checks that `entry` (its canonical bytes) is at `self.index` of the tree
    /// of `self.tree_size` entries whose root is `root`.
    ///
    /// # Errors
    /// [`AuditError::Tree`] when the proof does not hold.
    pub fn verify(&self, entry: &[u8], root: Hash) -> Result<(), AuditError> {
        tlog_tiles::check_record(
            &self.hashes,
            self.tree_size,
            root,
            self.index,
            tlog_tiles::record_hash(entry),
        )?;
        Ok(())
    }
}

impl ConsistencyProof {
    /// Checks that the tree with root `old_root` is a prefix of the one with
    /// root `new_root`. A proof from the empty tree is always empty and valid.
    ///
    /// # Errors
    /// [`AuditError::Tree`] when the proof does not hold.
    pub fn verify(&self, old_root: Hash, new_root: Hash) -> Result<(), AuditError> {
        if self.old_size == 0 {
            return if self.hashes.is_empty() {
                Ok(())
            } else {
                Err(AuditError::Tree(
                    "a proof from the empty tree is empty".into(),
                ))
            };
        }
        tlog_tiles::check_tree(
            &self.hashes,
            self.new_size,
            new_root,
            self.old_size,
            old_root,
        )?;
        Ok(())
    }
}

/// Serde for a list of hashes as base64 strings.
mod base64_hashes {
    use super::{Deserialize, HASH_SIZE, Hash, STANDARD};
    use base64::Engine as _;
    use serde::{Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(
        hashes: &[Hash],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(hashes.iter().map(|h| STANDARD.encode(h.0)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Hash>, D::Error> {
        let strings = Vec::<String>::deserialize(deserializer)?;
        strings
            .iter()
            .map(|s| {
                let bytes = STANDARD.decode(s).map_err(D::Error::custom)?;
                let array: [u8; HASH_SIZE] = bytes
                    .try_into()
                    .map_err(|_| D::Error::custom("a hash is 32 bytes"))?;
                Ok(Hash(array))
            })
            .collect()
    }
}

/// Base64 of a hash, as checkpoints write it.
#[must_use]
pub fn hash_to_base64(hash: &Hash) -> String {
    STANDARD.encode(hash.0)
}
