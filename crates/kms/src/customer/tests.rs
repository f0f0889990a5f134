use super::*;
use crate::ciphertext::CIPHERTEXT_OVERHEAD_BYTES;
use nuage_meta::DocumentStore;
use nuage_meta::embedded::EmbeddedMetaStore;
use std::sync::atomic::{AtomicI64, Ordering};

const TENANT: &str = "111122223333";
const OTHER: &str = "444455556666";
const REGION: &str = "fr-par";

/// A clock the test moves.
struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now_unix_ns(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Fixture {
    kms: CustomerKeys,
    clock: Arc<TestClock>,
    store: Arc<EmbeddedMetaStore>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap());
        let root = nuage_crypto::RootKeyFile::open_or_create(&dir.path().join("root.key")).unwrap();
        let clock = Arc::new(TestClock(AtomicI64::new(1_700_000_000 * 1_000_000_000)));
        let keys = KeyService::new(store.clone(), root);
        Self {
            kms: CustomerKeys::new(keys, clock.clone(), REGION),
            clock,
            store,
            _dir: dir,
        }
    }

    /// The same store and root key, a fresh service (a restart: empty caches).
    fn restarted(&self) -> CustomerKeys {
        let root =
            nuage_crypto::RootKeyFile::open_or_create(&self._dir.path().join("root.key")).unwrap();
        CustomerKeys::new(
            KeyService::new(self.store.clone(), root),
            self.clock.clone(),
            REGION,
        )
    }

    fn advance_days(&self, days: i64) {
        self.clock.0.fetch_add(days * NS_PER_DAY, Ordering::SeqCst);
    }

    async fn key(&self) -> KmsKey {
        self.kms
            .create_key(TENANT, NewKey::default())
            .await
            .unwrap()
    }

    async fn count(&self, tenant: &str) -> u32 {
        self.kms.counts(tenant).await.unwrap().0.keys
    }
}

/// The caller of direct KMS API calls in these tests.
fn caller() -> KeyCaller {
    KeyCaller::direct(format!("arn:aws:iam::{TENANT}:user/alice"), "REQ1")
}

fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn encrypt_decrypt_round_trip_bound_to_the_context() {
    let f = Fixture::new();
    let key = f.key().await;
    assert_eq!(
        key.arn,
        format!("arn:aws:kms:{REGION}:{TENANT}:key/{}", key.key_id)
    );
    assert_eq!(key.state, KeyState::Enabled);
    assert!(key.policy.contains(&format!("arn:aws:iam::{TENANT}:root")));
    let ctx = context(&[("bucket", "photos"), ("purpose", "test")]);
    let blob = f
        .kms
        .encrypt(&key, b"secret message", &ctx, &caller(), "Encrypt")
        .await
        .unwrap();
    assert_eq!(blob.len(), 14 + CIPHERTEXT_OVERHEAD_BYTES);
    assert!(!blob.windows(6).any(|w| w == b"secret"));

    // Decrypt needs no key id: the blob names it.
    let (found, parsed) = f.kms.key_of_ciphertext(TENANT, &blob).await.unwrap();
    assert_eq!(found.key_id, key.key_id);
    let opened = f
        .kms
        .decrypt(&found, &parsed, &ctx, &caller(), "Decrypt")
        .await
        .unwrap();
    assert_eq!(opened.as_slice(), b"secret message");
    // The same context in another order is the same context.
    let reordered: EncryptionContext = [("purpose", "test"), ("bucket", "photos")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    f.kms
        .decrypt(&found, &parsed, &reordered, &caller(), "Decrypt")
        .await
        .unwrap();
    // Any other context is refused.
    for wrong in [
        context(&[]),
        context(&[("bucket", "photos")]),
        context(&[("bucket", "photos"), ("purpose", "Test")]),
        context(&[("bucket", "photos"), ("purpose", "test"), ("x", "")]),
    ] {
        assert!(matches!(
            f.kms
                .decrypt(&found, &parsed, &wrong, &caller(), "Decrypt")
                .await,
            Err(KmsError::InvalidCiphertext(_))
        ));
    }
    // Any altered byte is refused (the header ones may name a key that does
    // not exist, or a version that does not).
    for byte in 0..blob.len() {
        let mut altered = blob.clone();
        altered[byte] ^= 0x01;
        let refused = match f.kms.key_of_ciphertext(TENANT, &altered).await {
            Err(KmsError::InvalidCiphertext(_) | KmsError::NotFound(_)) => true,
            Ok((key, parsed)) => matches!(
                f.kms
                    .decrypt(&key, &parsed, &ctx, &caller(), "Decrypt")
                    .await,
                Err(KmsError::InvalidCiphertext(_))
            ),
            Err(other) => panic!("byte {byte}: {other:?}"),
        };
        assert!(refused, "byte {byte}");
    }
    // Another key named in the request: IncorrectKeyException.
    let other = f.key().await;
    assert!(matches!(
        f.kms
            .decrypt(&other, &parsed, &ctx, &caller(), "Decrypt")
            .await,
        Err(KmsError::IncorrectKey(_))
    ));
    // After a restart (no cached material) it still decrypts.
    let again = f.restarted();
    let (key, parsed) = again.key_of_ciphertext(TENANT, &blob).await.unwrap();
    assert_eq!(
        again
            .decrypt(&key, &parsed, &ctx, &caller(), "Decrypt")
            .await
            .unwrap()
            .as_slice(),
        b"secret message"
    );
    // Size limits.
    assert!(matches!(
        f.kms.encrypt(&key, b"", &ctx, &caller(), "Encrypt").await,
        Err(KmsError::Validation(_))
    ));
    assert!(
        f.kms
            .encrypt(&key, &[1; 4096], &ctx, &caller(), "Encrypt")
            .await
            .is_ok()
    );
    assert!(matches!(
        f.kms
            .encrypt(&key, &[1; 4097], &ctx, &caller(), "Encrypt")
            .await,
        Err(KmsError::Validation(_))
    ));
    let huge = context(&[("k", &"v".repeat(9000))]);
    assert!(matches!(
        f.kms.encrypt(&key, b"x", &huge, &caller(), "Encrypt").await,
        Err(KmsError::Validation(_))
    ));
}

#[tokio::test]
async fn material_is_stored_wrapped_under_the_root_bound_to_the_arn() {
    let f = Fixture::new();
    let key = f.key().await;
    let doc = f
        .store
        .get_document(KEYS, &key_doc(TENANT, &key.key_id))
        .await
        .unwrap()
        .unwrap();
    let stored: KmsKey = serde_json::from_slice(&doc.value).unwrap();
    assert_eq!(stored.materials.len(), 1);
    // Stored tagged with the id of the root that wrapped it.
    let root = nuage_crypto::RootKeyFile::open_or_create(&f._dir.path().join("root.key")).unwrap();
    let tagged = crate::TaggedWrappedKey::parse(&stored.materials[0].wrapped).unwrap();
    assert_eq!(tagged.root(), Some(crate::RootId::of_key(&root)));
    let wrapped = tagged.wrapped();
    assert_eq!(wrapped.len(), nuage_crypto::WRAPPED_KEY_BYTES);
    assert!(nuage_crypto::unwrap_key_encryption_key(&root, wrapped, key.arn.as_bytes()).is_ok());
    let other_arn = key.arn.replace(TENANT, OTHER);
    assert!(
        nuage_crypto::unwrap_key_encryption_key(&root, wrapped, other_arn.as_bytes()).is_err(),
        "bound to its ARN"
    );
}

#[tokio::test]
async fn rotation_adds_versions_and_old_ciphertext_still_decrypts() {
    let f = Fixture::new();
    let key = f.key().await;
    let ctx = context(&[("a", "b")]);
    let old = f
        .kms
        .encrypt(&key, b"before", &ctx, &caller(), "Encrypt")
        .await
        .unwrap();
    assert_eq!(&old[17..21], &[0, 0, 0, 1]);

    let rotated = f.kms.rotate_on_demand(TENANT, &key.key_id).await.unwrap();
    assert_eq!(rotated.materials.len(), 2);
    assert_eq!(rotated.materials[1].rotation, Some(RotationType::OnDemand));
    let key = f.kms.key(TENANT, &key.key_id).await.unwrap();
    let new = f
        .kms
        .encrypt(&key, b"after", &ctx, &caller(), "Encrypt")
        .await
        .unwrap();
    assert_eq!(
        &new[17..21],
        &[0, 0, 0, 2],
        "new ciphertext uses the new material"
    );
    for (blob, text) in [(&old, &b"before"[..]), (&new, b"after")] {
        let (key, parsed) = f.kms.key_of_ciphertext(TENANT, blob).await.unwrap();
        assert_eq!(
            f.kms
                .decrypt(&key, &parsed, &ctx, &caller(), "Decrypt")
                .await
                .unwrap()
                .as_slice(),
            text
        );
    }
    // A version the key never had is refused.
    let mut future = new.clone();
    future[20] = 9;
    let (key, parsed) = f.kms.key_of_ciphertext(TENANT, &future).await.unwrap();
    assert!(matches!(
        f.kms
            .decrypt(&key, &parsed, &ctx, &caller(), "Decrypt")
            .await,
        Err(KmsError::InvalidCiphertext(_))
    ));

    // At most 25 on-demand rotations.
    for _ in 1..KMS_ON_DEMAND_ROTATIONS_MAX {
        f.kms.rotate_on_demand(TENANT, &key.key_id).await.unwrap();
    }
    assert!(matches!(
        f.kms.rotate_on_demand(TENANT, &key.key_id).await,
        Err(KmsError::LimitExceeded(_))
    ));

    // Automatic rotation: due after the period, applied when next read, once.
    let auto = f.key().await;
    assert!(matches!(
        f.kms.enable_rotation(TENANT, &auto.key_id, Some(89)).await,
        Err(KmsError::Validation(_))
    ));
    let enabled = f
        .kms
        .enable_rotation(TENANT, &auto.key_id, Some(90))
        .await
        .unwrap();
    assert!(enabled.rotation_enabled);
    let first_due = enabled.next_rotation_unix_ns.unwrap();
    f.advance_days(89);
    assert_eq!(
        f.kms
            .key(TENANT, &auto.key_id)
            .await
            .unwrap()
            .materials
            .len(),
        1
    );
    f.advance_days(200);
    let read = f.kms.key(TENANT, &auto.key_id).await.unwrap();
    assert_eq!(read.materials.len(), 2);
    assert_eq!(read.materials[1].rotation, Some(RotationType::Automatic));
    assert_eq!(
        read.next_rotation_unix_ns,
        Some(first_due + 3 * 90 * NS_PER_DAY),
        "the next date on the original schedule, after now"
    );
    assert_eq!(
        f.kms
            .key(TENANT, &auto.key_id)
            .await
            .unwrap()
            .materials
            .len(),
        2
    );
    // Disabling rotation stops it; the materials stay.
    let disabled = f.kms.disable_rotation(TENANT, &auto.key_id).await.unwrap();
    assert!(!disabled.rotation_enabled && disabled.next_rotation_unix_ns.is_none());
    f.advance_days(1000);
    assert_eq!(
        f.kms
            .key(TENANT, &auto.key_id)
            .await
            .unwrap()
            .materials
            .len(),
        2
    );
}

#[tokio::test]
async fn key_states_decide_what_a_key_may_do() {
    let f = Fixture::new();
    let key = f.key().await;
    let ctx = EncryptionContext::new();
    let blob = f
        .kms
        .encrypt(&key, b"data", &ctx, &caller(), "Encrypt")
        .await
        .unwrap();

    let disabled = f.kms.disable_key(TENANT, &key.key_id).await.unwrap();
    assert_eq!(disabled.state, KeyState::Disabled);
    assert!(matches!(
        f.kms
            .encrypt(&disabled, b"x", &ctx, &caller(), "Encrypt")
            .await,
        Err(KmsError::Disabled(_))
    ));
    let (k, parsed) = f.kms.key_of_ciphertext(TENANT, &blob).await.unwrap();
    assert!(matches!(
        f.kms.decrypt(&k, &parsed, &ctx, &caller(), "Decrypt").await,
        Err(KmsError::Disabled(_))
    ));
    for refused in [
        f.kms.rotate_on_demand(TENANT, &key.key_id).await,
        f.kms.enable_rotation(TENANT, &key.key_id, None).await,
    ] {
        assert!(matches!(refused, Err(KmsError::Disabled(_))));
    }
    let enabled = f.kms.enable_key(TENANT, &key.key_id).await.unwrap();
    f.kms
        .encrypt(&enabled, b"x", &ctx, &caller(), "Encrypt")
        .await
        .unwrap();

    // Pending deletion: 7 to 30 days, then nothing but describe, cancel,
    // policies and alias deletion.
    for bad in [6, 31, 0] {
        assert!(matches!(
            f.kms
                .schedule_deletion(TENANT, &key.key_id, Some(bad))
                .await,
            Err(KmsError::Validation(_))
        ));
    }
    f.kms
        .create_alias(TENANT, "alias/doomed", &key.key_id)
        .await
        .unwrap();
    let pending = f
        .kms
        .schedule_deletion(TENANT, &key.key_id, None)
        .await
        .unwrap();
    assert_eq!(pending.state, KeyState::PendingDeletion);
    assert_eq!(pending.pending_window_days, Some(30));
    assert!(matches!(
        f.kms
            .encrypt(&pending, b"x", &ctx, &caller(), "Encrypt")
            .await,
        Err(KmsError::InvalidState(_))
    ));
    let (k, parsed) = f.kms.key_of_ciphertext(TENANT, &blob).await.unwrap();
    assert!(matches!(
        f.kms.decrypt(&k, &parsed, &ctx, &caller(), "Decrypt").await,
        Err(KmsError::InvalidState(_))
    ));
    for refused in [
        f.kms.enable_key(TENANT, &key.key_id).await,
        f.kms.disable_key(TENANT, &key.key_id).await,
        f.kms.schedule_deletion(TENANT, &key.key_id, Some(7)).await,
        f.kms.rotate_on_demand(TENANT, &key.key_id).await,
    ] {
        assert!(
            matches!(refused, Err(KmsError::InvalidState(_))),
            "{refused:?}"
        );
    }
    assert!(matches!(
        f.kms.create_alias(TENANT, "alias/late", &key.key_id).await,
        Err(KmsError::InvalidState(_))
    ));
    f.kms.put_policy(TENANT, &key.key_id, "{}").await.unwrap();

    // Cancelling brings it back disabled.
    let cancelled = f.kms.cancel_deletion(TENANT, &key.key_id).await.unwrap();
    assert_eq!(cancelled.state, KeyState::Disabled);
    assert_eq!(cancelled.deletion_unix_ns, None);
    assert!(matches!(
        f.kms.cancel_deletion(TENANT, &key.key_id).await,
        Err(KmsError::InvalidState(_))
    ));

    // Once the window passes, the key, its material and aliases are gone.
    assert_eq!(f.count(TENANT).await, 1);
    f.kms
        .schedule_deletion(TENANT, &key.key_id, Some(7))
        .await
        .unwrap();
    f.advance_days(6);
    assert!(f.kms.key(TENANT, &key.key_id).await.is_ok());
    f.advance_days(2);
    assert!(matches!(
        f.kms.key(TENANT, &key.key_id).await,
        Err(KmsError::NotFound(_))
    ));
    assert!(matches!(
        f.kms.key_of_ciphertext(TENANT, &blob).await,
        Err(KmsError::NotFound(_))
    ));
    assert!(matches!(
        f.kms.alias(TENANT, "alias/doomed").await,
        Err(KmsError::NotFound(_))
    ));
    assert_eq!(f.count(TENANT).await, 0);
    assert!(
        f.store
            .get_document(KEYS, &key_doc(TENANT, &key.key_id))
            .await
            .unwrap()
            .is_none(),
        "the document holding the material is deleted"
    );
}

#[tokio::test]
async fn listings_page_and_skip_deleted_keys() {
    let f = Fixture::new();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(f.key().await.key_id);
    }
    ids.sort();
    let first = f.kms.list_keys(TENANT, None, 2).await.unwrap();
    assert_eq!(
        first.items.iter().map(|k| &k.key_id).collect::<Vec<_>>(),
        [&ids[0], &ids[1]]
    );
    let marker = first.next_marker.unwrap();
    let rest = f.kms.list_keys(TENANT, Some(&marker), 10).await.unwrap();
    assert_eq!(rest.items.len(), 3);
    assert!(rest.next_marker.is_none());
    assert!(matches!(
        f.kms.list_keys(TENANT, Some("nonsense"), 10).await,
        Err(KmsError::InvalidMarker(_))
    ));
    // A key past its deletion date disappears from the listing.
    f.kms
        .schedule_deletion(TENANT, &ids[2], Some(7))
        .await
        .unwrap();
    f.advance_days(8);
    let all = f.kms.list_keys(TENANT, None, 10).await.unwrap();
    assert_eq!(all.items.len(), 4);
    assert!(all.items.iter().all(|k| k.key_id != ids[2]));
    assert_eq!(f.count(TENANT).await, 4);
    // Another tenant sees none of them.
    assert!(
        f.kms
            .list_keys(OTHER, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn aliases_resolve_move_and_go() {
    let f = Fixture::new();
    let a = f.key().await;
    let b = f.key().await;
    let alias = f
        .kms
        .create_alias(TENANT, "alias/app/prod", &a.key_id)
        .await
        .unwrap();
    assert_eq!(alias.target_key_id, a.key_id);
    assert!(matches!(
        f.kms
            .create_alias(TENANT, "alias/app/prod", &b.key_id)
            .await,
        Err(KmsError::AlreadyExists(_))
    ));
    for bad in ["app", "alias/", "alias/aws/s3", "alias/sp ace", "alias/é"] {
        assert!(
            matches!(
                f.kms.create_alias(TENANT, bad, &a.key_id).await,
                Err(KmsError::InvalidAliasName(_) | KmsError::Validation(_))
            ),
            "{bad}"
        );
    }
    // Every form of KeyId.
    let alias_arn = f.kms.alias_arn(TENANT, "alias/app/prod");
    assert_eq!(
        alias_arn,
        format!("arn:aws:kms:{REGION}:{TENANT}:alias/app/prod")
    );
    for reference in [
        a.key_id.clone(),
        a.key_id.to_uppercase(),
        a.arn.clone(),
        "alias/app/prod".to_owned(),
        alias_arn.clone(),
    ] {
        assert_eq!(
            f.kms.resolve(TENANT, &reference).await.unwrap().key_id,
            a.key_id,
            "{reference}"
        );
    }
    assert_eq!(
        f.kms.key(TENANT, &a.key_id).await.unwrap().aliases,
        ["alias/app/prod"]
    );
    for (reference, expected) in [
        ("alias/missing", "NotFound"),
        ("not-a-key", "NotFound"),
        ("arn:aws:kms:fr-par:111122223333:bucket/x", "InvalidArn"),
        ("arn:aws:s3:fr-par:111122223333:key/x", "InvalidArn"),
        ("arn:aws:kms:fr-par:111122223333", "InvalidArn"),
    ] {
        let error = f.kms.resolve(TENANT, reference).await.unwrap_err();
        let kind = match error {
            KmsError::NotFound(_) => "NotFound",
            KmsError::InvalidArn(_) => "InvalidArn",
            other => panic!("{reference}: {other:?}"),
        };
        assert_eq!(kind, expected, "{reference}");
    }
    // Another region's ARN of the same key id names nothing here.
    assert!(matches!(
        f.kms
            .resolve(TENANT, &a.arn.replace(REGION, "de-fra"))
            .await,
        Err(KmsError::NotFound(_))
    ));

    // Moving the alias updates both keys' lists.
    f.kms
        .update_alias(TENANT, "alias/app/prod", &b.key_id)
        .await
        .unwrap();
    assert_eq!(
        f.kms
            .resolve(TENANT, "alias/app/prod")
            .await
            .unwrap()
            .key_id,
        b.key_id
    );
    assert!(
        f.kms
            .key(TENANT, &a.key_id)
            .await
            .unwrap()
            .aliases
            .is_empty()
    );
    assert_eq!(
        f.kms.key(TENANT, &b.key_id).await.unwrap().aliases,
        ["alias/app/prod"]
    );
    assert!(matches!(
        f.kms.update_alias(TENANT, "alias/nope", &b.key_id).await,
        Err(KmsError::NotFound(_))
    ));
    f.kms
        .create_alias(TENANT, "alias/a", &a.key_id)
        .await
        .unwrap();
    let page = f.kms.list_aliases(TENANT, None, 1).await.unwrap();
    assert_eq!(page.items[0].name, "alias/a");
    let next = f
        .kms
        .list_aliases(TENANT, page.next_marker.as_deref(), 10)
        .await
        .unwrap();
    assert_eq!(next.items[0].name, "alias/app/prod");
    assert!(next.next_marker.is_none());
    let of_b = f
        .kms
        .aliases_of(&f.kms.key(TENANT, &b.key_id).await.unwrap())
        .await
        .unwrap();
    assert_eq!(of_b.len(), 1);

    f.kms.delete_alias(TENANT, "alias/app/prod").await.unwrap();
    assert!(
        f.kms
            .key(TENANT, &b.key_id)
            .await
            .unwrap()
            .aliases
            .is_empty()
    );
    assert!(matches!(
        f.kms.delete_alias(TENANT, "alias/app/prod").await,
        Err(KmsError::NotFound(_))
    ));
    // At most 50 aliases per key.
    for i in 0..KMS_ALIASES_PER_KEY_MAX - 1 {
        f.kms
            .create_alias(TENANT, &format!("alias/n{i}"), &a.key_id)
            .await
            .unwrap();
    }
    assert!(matches!(
        f.kms
            .create_alias(TENANT, "alias/one-too-many", &a.key_id)
            .await,
        Err(KmsError::LimitExceeded(_))
    ));
}

#[tokio::test]
async fn tenants_never_see_each_others_keys() {
    let f = Fixture::new();
    let key = f.key().await;
    f.kms
        .create_alias(TENANT, "alias/shared-name", &key.key_id)
        .await
        .unwrap();
    let blob = f
        .kms
        .encrypt(
            &key,
            b"tenant data",
            &EncryptionContext::new(),
            &caller(),
            "Encrypt",
        )
        .await
        .unwrap();
    // By id, ARN, alias name and alias ARN: as if the key did not exist.
    for reference in [
        key.key_id.clone(),
        key.arn.clone(),
        "alias/shared-name".to_owned(),
        f.kms.alias_arn(TENANT, "alias/shared-name"),
    ] {
        assert!(
            matches!(
                f.kms.resolve(OTHER, &reference).await,
                Err(KmsError::NotFound(_))
            ),
            "{reference}"
        );
    }
    assert!(matches!(
        f.kms.key_of_ciphertext(OTHER, &blob).await,
        Err(KmsError::NotFound(_))
    ));
    for refused in [
        f.kms.disable_key(OTHER, &key.key_id).await,
        f.kms.schedule_deletion(OTHER, &key.key_id, None).await,
        f.kms.rotate_on_demand(OTHER, &key.key_id).await,
    ] {
        assert!(matches!(refused, Err(KmsError::NotFound(_))));
    }
    assert!(matches!(
        f.kms.create_alias(OTHER, "alias/mine", &key.key_id).await,
        Err(KmsError::NotFound(_))
    ));
    // The other tenant may use the same alias name for its own key.
    let theirs = f.kms.create_key(OTHER, NewKey::default()).await.unwrap();
    f.kms
        .create_alias(OTHER, "alias/shared-name", &theirs.key_id)
        .await
        .unwrap();
    assert_eq!(
        f.kms
            .resolve(TENANT, "alias/shared-name")
            .await
            .unwrap()
            .key_id,
        key.key_id
    );
    assert_eq!(
        f.kms
            .resolve(OTHER, "alias/shared-name")
            .await
            .unwrap()
            .key_id,
        theirs.key_id
    );
    // Their key's policy names their tenant.
    assert!(
        theirs
            .policy
            .contains(&format!("arn:aws:iam::{OTHER}:root"))
    );
    // A blob whose header is edited to name the other tenant's key fails.
    let mut forged = blob.clone();
    let their_id = uuid::Uuid::parse_str(&theirs.key_id).unwrap();
    forged[1..17].copy_from_slice(their_id.as_bytes());
    let (k, parsed) = f.kms.key_of_ciphertext(OTHER, &forged).await.unwrap();
    assert!(matches!(
        f.kms
            .decrypt(&k, &parsed, &EncryptionContext::new(), &caller(), "Decrypt")
            .await,
        Err(KmsError::InvalidCiphertext(_))
    ));
}

#[tokio::test]
async fn data_keys_and_random_bytes() {
    let f = Fixture::new();
    let key = f.key().await;
    let ctx = context(&[("object", "a")]);
    let (plaintext, blob) = f
        .kms
        .generate_data_key(&key, 32, &ctx, &caller(), "GenerateDataKey")
        .await
        .unwrap();
    assert_eq!(plaintext.len(), 32);
    let (k, parsed) = f.kms.key_of_ciphertext(TENANT, &blob).await.unwrap();
    assert_eq!(
        f.kms
            .decrypt(&k, &parsed, &ctx, &caller(), "Decrypt")
            .await
            .unwrap()
            .as_slice(),
        plaintext.as_slice()
    );
    for bad in [0, 1025] {
        assert!(matches!(random(bad), Err(KmsError::Validation(_))));
        assert!(
            f.kms
                .generate_data_key(&key, bad, &ctx, &caller(), "GenerateDataKey")
                .await
                .is_err()
        );
    }
    assert_eq!(random(1024).unwrap().len(), 1024);
}

#[tokio::test]
async fn creation_limits() {
    let f = Fixture::new();
    let long = NewKey {
        description: "d".repeat(KMS_DESCRIPTION_CHARS_MAX + 1),
        ..NewKey::default()
    };
    assert!(matches!(
        f.kms.create_key(TENANT, long).await,
        Err(KmsError::Validation(_))
    ));
    let tagged = NewKey {
        tags: (0..=KMS_TAGS_MAX)
            .map(|i| (format!("k{i}"), String::new()))
            .collect(),
        ..NewKey::default()
    };
    assert!(matches!(
        f.kms.create_key(TENANT, tagged).await,
        Err(KmsError::Validation(_))
    ));
    // The per-tenant key count is enforced from the stored counter.
    f.kms
        .keys
        .docs
        .commit_documents(vec![
            CustomerKeys::counts_write(
                TENANT,
                &TenantCounts {
                    keys: KMS_KEYS_PER_TENANT_MAX,
                    shredded: 0,
                },
                Expect::Absent,
            )
            .unwrap(),
        ])
        .await
        .unwrap();
    assert!(matches!(
        f.kms.create_key(TENANT, NewKey::default()).await,
        Err(KmsError::LimitExceeded(_))
    ));
    assert!(f.kms.create_key(OTHER, NewKey::default()).await.is_ok());
}
