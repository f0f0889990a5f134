//! The server's audit checkpoint signing key: one Ed25519 key for every
//! tenant's log, created on first start and stored only sealed by the root of
//! trust.
//!
//! Stored like a tenant key, so the root-of-trust migration treats it the same
//! way (`root_of_trust_cli.rs` names [`SIGNING_KEY_NAMESPACE`] to
//! `nuage_kms::rewrap`; change both together): one document, namespace [`SIGNING_KEY_NAMESPACE`], key
//! [`SIGNING_KEY_DOCUMENT`], whose value *is* the stored key — the 32-byte
//! Ed25519 seed wrapped by the root of trust and tagged with the root's id
//! (`nuage_kms::RootRing`), the associated data being the document key.
//! Keeping it in the metadata store beside the other root-wrapped keys (not in
//! a file of its own) means one backup, one census and one migration cover
//! every secret the root protects.
//!
//! This module never writes the seed anywhere unwrapped, and never replaces a
//! stored key: a seed that no longer unwraps stops start-up, because a new key
//! would make every tenant's pinned verifier key fail.

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use nuage_crypto::KeyEncryptionKey;
use nuage_kms::{RootOfTrust, RootRing};
use nuage_meta::{DocumentStore, DocumentWrite, Expect, MetaError};
use std::sync::Arc;

/// The document namespace of the audit signing key.
pub const SIGNING_KEY_NAMESPACE: &str = "audit.signing-key";
/// The one document in it; also the wrapping's associated data.
pub const SIGNING_KEY_DOCUMENT: &str = "audit-checkpoint-signer";

/// The signing key, created (and stored sealed) on first use.
pub async fn load_or_create(
    docs: &dyn DocumentStore,
    root: Arc<dyn RootOfTrust>,
) -> anyhow::Result<SigningKey> {
    load_or_create_sealed(
        docs,
        root,
        SIGNING_KEY_NAMESPACE,
        SIGNING_KEY_DOCUMENT,
        "audit checkpoint signing key",
    )
    .await
}

/// An Ed25519 signing key stored as one document (`namespace`, `document`)
/// whose value is its seed wrapped by the root of trust and tagged with the
/// root's id, the associated data being the document key; created on first
/// use, never replaced (a seed that no longer unwraps is an error: verifiers
/// pin the public key). `what` names the key in messages. The audit
/// checkpoint key and the region's residency key (`region_key.rs`) are
/// stored this way.
pub(crate) async fn load_or_create_sealed(
    docs: &dyn DocumentStore,
    root: Arc<dyn RootOfTrust>,
    namespace: &str,
    document: &str,
    what: &str,
) -> anyhow::Result<SigningKey> {
    let ring = RootRing::new(root);
    let aad = document.as_bytes();
    let unwrap = |value: Vec<u8>| {
        let ring = ring.clone();
        async move {
            let seed = ring.unwrap_key(&value, aad).await.with_context(|| {
                format!(
                    "cannot unwrap the {what} with the root of trust \
                     (is this the root of trust this data directory was created with?)"
                )
            })?;
            anyhow::Ok(SigningKey::from_bytes(seed.expose_bytes()))
        }
    };
    if let Some(doc) = docs.get_document(namespace, document).await? {
        return unwrap(doc.value).await;
    }
    // 32 bytes from the system's randomness, as every key the root wraps.
    let seed =
        KeyEncryptionKey::generate().with_context(|| format!("cannot generate the {what}"))?;
    let wrapped = ring
        .wrap_key(&seed, aad)
        .await
        .with_context(|| format!("cannot seal the {what} with the root of trust"))?;
    let write = DocumentWrite {
        namespace: namespace.into(),
        key: document.into(),
        expect: Expect::Absent,
        value: Some(wrapped),
    };
    match docs.commit_documents(vec![write]).await {
        Ok(()) => {
            tracing::info!("created the {what}");
            Ok(SigningKey::from_bytes(seed.expose_bytes()))
        }
        // Created concurrently (another gateway): the stored one is the key.
        Err(MetaError::PreconditionFailed) => {
            let doc = docs
                .get_document(namespace, document)
                .await?
                .with_context(|| format!("the {what} vanished while being created"))?;
            unwrap(doc.value).await
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use nuage_meta::embedded::EmbeddedMetaStore;

    #[tokio::test]
    async fn the_key_is_created_once_stored_sealed_and_needs_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap();
        let root: Arc<dyn RootOfTrust> = Arc::new(KeyEncryptionKey::generate().unwrap());
        let first = load_or_create(&store, Arc::clone(&root)).await.unwrap();
        let again = load_or_create(&store, Arc::clone(&root)).await.unwrap();
        assert_eq!(first.to_bytes(), again.to_bytes());
        let stored = store
            .get_document(SIGNING_KEY_NAMESPACE, SIGNING_KEY_DOCUMENT)
            .await
            .unwrap()
            .unwrap()
            .value;
        // Root-tagged, and the seed is nowhere in it.
        assert_eq!(stored.len(), nuage_kms::ROOT_TAGGED_WRAPPED_KEY_BYTES);
        assert_eq!(
            nuage_kms::TaggedWrappedKey::parse(&stored).unwrap().root(),
            Some(root.id())
        );
        assert!(!stored.windows(32).any(|w| w == first.to_bytes()));
        // Another root cannot open it, and start-up stops rather than replace it.
        let other: Arc<dyn RootOfTrust> = Arc::new(KeyEncryptionKey::generate().unwrap());
        assert!(load_or_create(&store, other).await.is_err());
    }
}
