//! The stored form of a key wrapped by a root of trust, and the roots a key
//! service reads with.
//!
//! Every key the root of trust wraps (tenant keys, KMS key materials, the
//! per-store keys of external key stores) is stored *tagged* with the
//! [`RootId`] of the root that wrapped it:
//!
//! ```text
//! 0x81 || root id (16 bytes) || wrapped key (nuage-crypto v1, 61 bytes)   = 78 bytes
//! ```
//!
//! The tag is a routing hint, not a secret and not authenticated: the
//! wrapped key's own AES-GCM tag (unchanged, same associated data as before)
//! is what proves a key genuine, so a forged tag only sends the unwrap to a
//! root that then refuses it. Keys stored before tags existed are the bare
//! 61-byte form (first byte `0x01`, never `0x81`) and are read as wrapped by
//! an unknown root: each configured root is tried in turn.
//!
//! [`RootRing`] is what [`crate::KeyService`] wraps and unwraps with: one
//! current root that wraps everything new, and optionally previous roots
//! that only unwrap (a server started during a migration with both roots
//! configured reads every document, whichever root it is under).
//!
//! This module must never hold a root's key material: it delegates to the
//! [`RootOfTrust`] implementations.

use super::{ROOT_ID_BYTES, RootId, RootOfTrust, RootOfTrustError};
use crate::KeyError;
use nuage_crypto::{CryptoError, KeyEncryptionKey, WRAPPED_KEY_BYTES};
use std::sync::Arc;

/// First byte of a root-tagged wrapped key: the high bit sets it apart from
/// `nuage-crypto`'s wrapped-key versions (`0x01`), the low bits are this
/// envelope's version.
pub const ROOT_TAGGED_WRAPPED_KEY_FORMAT: u8 = 0x81;
/// Length of a root-tagged wrapped key.
pub const ROOT_TAGGED_WRAPPED_KEY_BYTES: usize = 1 + ROOT_ID_BYTES + WRAPPED_KEY_BYTES;

/// A stored wrapped key, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaggedWrappedKey<'a> {
    /// Wrapped by the root `root`; `wrapped` is the root's own form.
    Tagged { root: RootId, wrapped: &'a [u8] },
    /// Stored before roots were recorded: any root may have wrapped it.
    Untagged(&'a [u8]),
}

impl<'a> TaggedWrappedKey<'a> {
    /// Splits stored bytes into the root's id and the wrapped key.
    ///
    /// # Errors
    /// A tagged key of the wrong length (truncated or padded on disk).
    pub fn parse(stored: &'a [u8]) -> Result<Self, CryptoError> {
        match stored.split_first() {
            Some((&ROOT_TAGGED_WRAPPED_KEY_FORMAT, rest)) => {
                if stored.len() != ROOT_TAGGED_WRAPPED_KEY_BYTES {
                    return Err(CryptoError::MalformedWrappedKey(
                        "root-tagged wrapped key of the wrong length",
                    ));
                }
                let (id, wrapped) = rest.split_at(ROOT_ID_BYTES);
                let mut root = [0u8; ROOT_ID_BYTES];
                root.copy_from_slice(id);
                Ok(Self::Tagged {
                    root: RootId(root),
                    wrapped,
                })
            }
            _ => Ok(Self::Untagged(stored)),
        }
    }

    /// The root named by the tag, if any.
    #[must_use]
    pub fn root(&self) -> Option<RootId> {
        match self {
            Self::Tagged { root, .. } => Some(*root),
            Self::Untagged(_) => None,
        }
    }

    /// The root's own wrapped form.
    #[must_use]
    pub fn wrapped(&self) -> &'a [u8] {
        match self {
            Self::Tagged { wrapped, .. } | Self::Untagged(wrapped) => wrapped,
        }
    }
}

/// `wrapped` (a root's own form) tagged with that root's id.
#[must_use]
pub fn tag_wrapped_key(root: RootId, wrapped: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(1 + ROOT_ID_BYTES + wrapped.len());
    stored.push(ROOT_TAGGED_WRAPPED_KEY_FORMAT);
    stored.extend_from_slice(&root.0);
    stored.extend_from_slice(wrapped);
    stored
}

/// The roots a key service uses: `current` wraps, every one of them may
/// unwrap what it wrapped.
#[derive(Debug, Clone)]
pub struct RootRing {
    current: Arc<dyn RootOfTrust>,
    /// Roots kept for reading only (during a migration), never for wrapping.
    previous: Vec<Arc<dyn RootOfTrust>>,
}

impl RootRing {
    /// A ring of one root.
    #[must_use]
    pub fn new(current: Arc<dyn RootOfTrust>) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }

    /// This ring with `root` also trusted for unwrapping.
    #[must_use]
    pub fn with_previous(mut self, root: Arc<dyn RootOfTrust>) -> Self {
        self.previous.push(root);
        self
    }

    /// The root that wraps new keys.
    #[must_use]
    pub fn current(&self) -> &Arc<dyn RootOfTrust> {
        &self.current
    }

    fn roots(&self) -> impl Iterator<Item = &Arc<dyn RootOfTrust>> {
        std::iter::once(&self.current).chain(self.previous.iter())
    }

    /// Wraps `key` under the current root and tags it with the root's id.
    ///
    /// # Errors
    /// As [`RootOfTrust::wrap_key`].
    pub async fn wrap_key(&self, key: &KeyEncryptionKey, aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let wrapped = self.current.wrap_key(key, aad).await?;
        Ok(tag_wrapped_key(self.current.id(), &wrapped))
    }

    /// Unwraps a stored key with the root its tag names, or, for an untagged
    /// key, with each root in turn until one authenticates it.
    ///
    /// # Errors
    /// [`RootOfTrustError::UnknownRoot`] for a tag naming no configured root;
    /// otherwise as [`RootOfTrust::unwrap_key`] (for an untagged key, the
    /// current root's error when none succeeds).
    pub async fn unwrap_key(
        &self,
        stored: &[u8],
        aad: &[u8],
    ) -> Result<KeyEncryptionKey, KeyError> {
        match TaggedWrappedKey::parse(stored)? {
            TaggedWrappedKey::Tagged { root, wrapped } => {
                let Some(found) = self.roots().find(|r| r.id() == root) else {
                    return Err(RootOfTrustError::UnknownRoot {
                        wrapped_by: root,
                        configured: self.roots().map(|r| r.id()).collect(),
                    }
                    .into());
                };
                found.unwrap_key(wrapped, aad).await
            }
            TaggedWrappedKey::Untagged(wrapped) => {
                let mut first_error = None;
                for root in self.roots() {
                    match root.unwrap_key(wrapped, aad).await {
                        Ok(key) => return Ok(key),
                        // Another root may have wrapped it; anything else
                        // (an HSM down, a malformed key) is final.
                        Err(KeyError::Crypto(CryptoError::UnwrapAuthentication)) => {
                            first_error
                                .get_or_insert(KeyError::Crypto(CryptoError::UnwrapAuthentication));
                        }
                        Err(error) => return Err(error),
                    }
                }
                Err(first_error.unwrap_or(KeyError::Crypto(CryptoError::UnwrapAuthentication)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn keys_are_stored_tagged_and_each_root_opens_its_own() {
        let old: Arc<dyn RootOfTrust> = Arc::new(KeyEncryptionKey::generate().unwrap());
        let new: Arc<dyn RootOfTrust> = Arc::new(KeyEncryptionKey::generate().unwrap());
        assert_ne!(old.id(), new.id());
        let tenant = KeyEncryptionKey::generate().unwrap();
        let under_old = RootRing::new(Arc::clone(&old))
            .wrap_key(&tenant, b"aad")
            .await
            .unwrap();
        assert_eq!(under_old.len(), ROOT_TAGGED_WRAPPED_KEY_BYTES);
        assert_eq!(
            TaggedWrappedKey::parse(&under_old).unwrap().root(),
            Some(old.id())
        );
        // Only the new root configured: the tag names a root it lacks.
        let only_new = RootRing::new(Arc::clone(&new));
        assert!(matches!(
            only_new.unwrap_key(&under_old, b"aad").await,
            Err(KeyError::RootOfTrust(RootOfTrustError::UnknownRoot { wrapped_by, .. }))
                if wrapped_by == old.id()
        ));
        // Both configured (a migration): the tag picks the old one.
        let both = only_new.with_previous(Arc::clone(&old));
        let opened = both.unwrap_key(&under_old, b"aad").await.unwrap();
        assert_eq!(opened.expose_bytes(), tenant.expose_bytes());
        assert!(both.unwrap_key(&under_old, b"other aad").await.is_err());
        // New keys go under the current root.
        let fresh = both.wrap_key(&tenant, b"aad").await.unwrap();
        assert_eq!(
            TaggedWrappedKey::parse(&fresh).unwrap().root(),
            Some(new.id())
        );
    }

    #[tokio::test]
    async fn untagged_keys_from_before_tags_are_tried_under_every_root() {
        let old = KeyEncryptionKey::generate().unwrap();
        let tenant = KeyEncryptionKey::generate().unwrap();
        let bare = nuage_crypto::wrap_key_encryption_key(&old, &tenant, b"aad").unwrap();
        assert_eq!(
            TaggedWrappedKey::parse(&bare).unwrap(),
            TaggedWrappedKey::Untagged(&bare)
        );
        let new: Arc<dyn RootOfTrust> = Arc::new(KeyEncryptionKey::generate().unwrap());
        let ring = RootRing::new(Arc::clone(&new));
        assert!(matches!(
            ring.unwrap_key(&bare, b"aad").await,
            Err(KeyError::Crypto(CryptoError::UnwrapAuthentication))
        ));
        let ring = ring.with_previous(Arc::new(old));
        let opened = ring.unwrap_key(&bare, b"aad").await.unwrap();
        assert_eq!(opened.expose_bytes(), tenant.expose_bytes());
    }

    #[test]
    fn a_truncated_tagged_key_is_malformed() {
        let stored = tag_wrapped_key(RootId([7; ROOT_ID_BYTES]), &[1; WRAPPED_KEY_BYTES]);
        assert!(TaggedWrappedKey::parse(&stored).is_ok());
        assert!(TaggedWrappedKey::parse(&stored[..stored.len() - 1]).is_err());
    }
}
