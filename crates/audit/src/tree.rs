//! Glue between `tlog_tiles`' Merkle tree functions and our hash sources.
//!
//! `tlog_tiles` computes stored hashes, roots and proofs through its synchronous
//! `HashReader` trait. Here: the [`Frontier`] (the newest hash of each level, all
//! an append needs, kept in memory by the writer) and [`StoreHashes`] (reads from
//! a [`LogStore`], keeping the store's own error instead of flattening it).
//! No I/O of its own.

use std::cell::RefCell;

use tlog_tiles::{Hash, HashReader, split_stored_hash_index, stored_hash_index};

use crate::{AuditError, LogStore};

/// Levels of a tree of at most 2^64 leaves.
const LEVELS: usize = 64;

/// The right edge of the tree: for each level, the newest complete node's hash.
///
/// `tlog_tiles::stored_hashes` for record `n` reads exactly the newest node of
/// each level below the ones it completes, so this is all the writer needs to
/// compute new hashes without reading the store.
#[derive(Debug, Clone)]
pub(crate) struct Frontier {
    nodes: [Option<(u64, Hash)>; LEVELS],
}

impl Frontier {
    /// The frontier of an empty tree.
    pub(crate) fn empty() -> Self {
        Self {
            nodes: [None; LEVELS],
        }
    }

    /// Stored hash indexes of the frontier of a tree of `size` leaves, with
    /// their levels and node numbers.
    pub(crate) fn indexes(size: u64) -> Vec<(u8, u64, u64)> {
        let mut out = Vec::new();
        for level in 0..LEVELS {
            let Some(count) = size.checked_shr(u32::try_from(level).unwrap_or(u32::MAX)) else {
                break;
            };
            if count == 0 {
                break;
            }
            let level = u8::try_from(level).unwrap_or(u8::MAX);
            out.push((level, count - 1, stored_hash_index(level, count - 1)));
        }
        out
    }

    /// Loads the frontier of a tree of `size` leaves from stored hashes.
    pub(crate) fn load(size: u64, store: &dyn LogStore) -> Result<Self, AuditError> {
        let wanted = Self::indexes(size);
        let indexes: Vec<u64> = wanted.iter().map(|(_, _, index)| *index).collect();
        let hashes = store.read_hashes(&indexes)?;
        let mut frontier = Self::empty();
        for ((level, node, _), hash) in wanted.into_iter().zip(hashes) {
            frontier.nodes[usize::from(level)] = Some((node, hash));
        }
        Ok(frontier)
    }

    /// Records the stored hashes of record `n` (as `tlog_tiles::stored_hashes`
    /// returned them: the leaf, then each subtree it completes).
    pub(crate) fn push(&mut self, n: u64, stored: &[Hash]) {
        for (level, hash) in stored.iter().enumerate().take(LEVELS) {
            // Record n completes the node n >> level at each level it touches.
            let node = n >> level;
            self.nodes[level] = Some((node, *hash));
        }
    }

    /// Computes the stored hashes of record `n` with hash `leaf_hash`, and records them.
    pub(crate) fn append(&mut self, n: u64, leaf_hash: Hash) -> Result<Vec<Hash>, AuditError> {
        let stored = tlog_tiles::stored_hashes_for_record_hash(n, leaf_hash, self)?;
        self.push(n, &stored);
        Ok(stored)
    }

    /// The root hash of the tree of `size` leaves this frontier describes.
    pub(crate) fn root(&self, size: u64) -> Result<Hash, AuditError> {
        Ok(tlog_tiles::tree_hash(size, self)?)
    }
}

impl HashReader for Frontier {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&index| {
                let (level, node) = split_stored_hash_index(index);
                match self.nodes.get(usize::from(level)).copied().flatten() {
                    Some((have, hash)) if have == node => Ok(hash),
                    _ => Err(tlog_tiles::Error::IndexesNotInTree),
                }
            })
            .collect()
    }
}

/// A `HashReader` over a store that keeps the store's error for the caller.
pub(crate) struct StoreHashes<'a> {
    store: &'a dyn LogStore,
    error: RefCell<Option<AuditError>>,
}

impl<'a> StoreHashes<'a> {
    pub(crate) fn new(store: &'a dyn LogStore) -> Self {
        Self {
            store,
            error: RefCell::new(None),
        }
    }

    /// Turns a `tlog_tiles` result into ours, preferring the store's own error.
    pub(crate) fn finish<T>(&self, result: Result<T, tlog_tiles::Error>) -> Result<T, AuditError> {
        match (result, self.error.borrow_mut().take()) {
            (_, Some(error)) => Err(error),
            (Ok(value), None) => Ok(value),
            (Err(error), None) => Err(error.into()),
        }
    }
}

impl HashReader for StoreHashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.store.read_hashes(indexes).map_err(|error| {
            let message = error.to_string();
            *self.error.borrow_mut() = Some(error);
            tlog_tiles::Error::InvalidInput(message)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frontier computes the same roots as a tree that keeps every hash.
    #[test]
    fn frontier_matches_full_tree() {
        let mut frontier = Frontier::empty();
        let mut all = std::collections::HashMap::new();
        struct All<'a>(&'a std::collections::HashMap<u64, Hash>);
        impl HashReader for All<'_> {
            fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
                indexes
                    .iter()
                    .map(|i| {
                        self.0
                            .get(i)
                            .copied()
                            .ok_or(tlog_tiles::Error::IndexesNotInTree)
                    })
                    .collect()
            }
        }
        for n in 0..600u64 {
            let leaf = tlog_tiles::record_hash(&n.to_be_bytes());
            let stored = frontier.append(n, leaf).expect("append");
            let expected =
                tlog_tiles::stored_hashes(n, &n.to_be_bytes(), &All(&all)).expect("full");
            assert_eq!(stored, expected, "record {n}");
            for (k, hash) in stored.iter().enumerate() {
                all.insert(stored_hash_index(0, n) + k as u64, *hash);
            }
            assert_eq!(
                frontier.root(n + 1).expect("root"),
                tlog_tiles::tree_hash(n + 1, &All(&all)).expect("root")
            );
        }
    }
}
