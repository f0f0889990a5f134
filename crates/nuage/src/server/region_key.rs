//! The region's residency attestation signing key: one Ed25519 key per
//! metadata store (every gateway of a region shares the store, so this is
//! one key per region), created on first start and stored only sealed by
//! the root of trust, exactly as the audit checkpoint key
//! (`audit_key.rs`): one document, namespace [`SIGNING_KEY_NAMESPACE`], key
//! [`SIGNING_KEY_DOCUMENT`], whose value is the 32-byte seed wrapped by the
//! root of trust and tagged with the root's id, the associated data being
//! the document key. `root_of_trust_cli.rs` names the namespace to
//! `nuage_kms::rewrap`, so a root migration moves it with the other keys.
//!
//! The key signs under the name `HOST/residency/REGION` (the first
//! configured domain, else the listening address; the first configured
//! region): [`issuer`]. Tenants pin the verifier key
//! (`GET /_nuage/residency/v1/key`); so a seed that no longer unwraps stops
//! start-up rather than being replaced.

use ed25519_dalek::SigningKey;
use nuage_kms::RootOfTrust;
use nuage_meta::DocumentStore;
use std::sync::Arc;

/// The document namespace of the residency signing key.
pub const SIGNING_KEY_NAMESPACE: &str = "residency.signing-key";
/// The one document in it; also the wrapping's associated data.
pub const SIGNING_KEY_DOCUMENT: &str = "residency-attestation-signer";

/// The signed-note key name attestations are signed under.
#[must_use]
pub fn issuer(host: &str, region: &str) -> String {
    format!("{host}/residency/{region}")
}

/// The signing key, created (and stored sealed) on first use.
///
/// # Errors
/// The store failing, or a stored key the root of trust cannot unwrap.
pub async fn load_or_create(
    docs: &dyn DocumentStore,
    root: Arc<dyn RootOfTrust>,
) -> anyhow::Result<SigningKey> {
    super::audit_key::load_or_create_sealed(
        docs,
        root,
        SIGNING_KEY_NAMESPACE,
        SIGNING_KEY_DOCUMENT,
        "residency attestation signing key",
    )
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use nuage_crypto::KeyEncryptionKey;
    use nuage_meta::embedded::EmbeddedMetaStore;

    #[tokio::test]
    async fn the_key_is_created_once_stored_sealed_and_needs_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap();
        let root: Arc<dyn RootOfTrust> = Arc::new(KeyEncryptionKey::generate().unwrap());
        let first = load_or_create(&store, Arc::clone(&root)).await.unwrap();
        let again = load_or_create(&store, Arc::clone(&root)).await.unwrap();
        assert_eq!(first.to_bytes(), again.to_bytes());
        // Not the audit key: a key of its own.
        let audit = crate::server::audit_key::load_or_create(&store, Arc::clone(&root))
            .await
            .unwrap();
        assert_ne!(first.to_bytes(), audit.to_bytes());
        let stored = store
            .get_document(SIGNING_KEY_NAMESPACE, SIGNING_KEY_DOCUMENT)
            .await
            .unwrap()
            .unwrap()
            .value;
        assert_eq!(
            nuage_kms::TaggedWrappedKey::parse(&stored).unwrap().root(),
            Some(root.id())
        );
        assert!(!stored.windows(32).any(|w| w == first.to_bytes()));
        let other: Arc<dyn RootOfTrust> = Arc::new(KeyEncryptionKey::generate().unwrap());
        assert!(load_or_create(&store, other).await.is_err());
    }
}
