//! Crypto-shredding: the record of a deleted key (written in the batch that
//! deletes it, holding no material), its listing, its bound, the messages,
//! and the shredding of a deleted tenant's keys.

use super::shredding::{SHREDDED, SHREDDED_ORDER};
use super::*;
use nuage_base::limits::KMS_SHREDDED_KEYS_PER_TENANT_MAX;
use nuage_meta::DocumentStore;
use nuage_meta::embedded::EmbeddedMetaStore;
use std::sync::atomic::{AtomicI64, Ordering};

const TENANT: &str = "111122223333";
const OTHER: &str = "444455556666";
const REGION: &str = "fr-par";
const START_NS: i64 = 1_700_000_000 * 1_000_000_000;

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
        let clock = Arc::new(TestClock(AtomicI64::new(START_NS)));
        let keys = KeyService::new(store.clone(), root);
        Self {
            kms: CustomerKeys::new(keys, clock.clone(), REGION),
            clock,
            store,
            _dir: dir,
        }
    }

    fn advance_days(&self, days: i64) {
        self.clock.0.fetch_add(days * NS_PER_DAY, Ordering::SeqCst);
    }

    fn now(&self) -> i64 {
        self.clock.0.load(Ordering::SeqCst)
    }

    async fn key(&self, tenant: &str) -> KmsKey {
        self.kms
            .create_key(tenant, NewKey::default())
            .await
            .unwrap()
    }

    /// Every document of `namespace` under `prefix`, raw.
    async fn docs(&self, namespace: &str, prefix: &str) -> Vec<Document> {
        self.store
            .scan_documents(namespace, prefix, None, 100_000)
            .await
            .unwrap()
    }

    /// The base64 form of every wrapped material of `key` as stored: what
    /// must be gone once the key is deleted.
    async fn stored_materials(&self, key: &KmsKey) -> Vec<String> {
        let doc = self
            .store
            .get_document(KEYS, &key_doc(&key.tenant, &key.key_id))
            .await
            .unwrap()
            .unwrap();
        let stored: KmsKey = serde_json::from_slice(&doc.value).unwrap();
        stored
            .materials
            .iter()
            .map(|m| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(&m.wrapped)
            })
            .collect()
    }

    async fn delete_after_window(&self, tenant: &str, key: &KmsKey) {
        self.kms
            .schedule_deletion(tenant, &key.key_id, Some(7))
            .await
            .unwrap();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn deletion_leaves_a_record_without_material_in_the_same_batch() {
    let f = Fixture::new();
    let key = f.key(TENANT).await;
    f.kms.rotate_on_demand(TENANT, &key.key_id).await.unwrap();
    f.kms
        .create_alias(TENANT, "alias/doomed", &key.key_id)
        .await
        .unwrap();
    let materials = f.stored_materials(&key).await;
    assert_eq!(materials.len(), 2);
    f.delete_after_window(TENANT, &key).await;
    let scheduled = f.now() + 7 * NS_PER_DAY;
    // Pending deletion: no record yet, the key is still there.
    assert!(
        f.kms
            .shredded_key(TENANT, &key.key_id)
            .await
            .unwrap()
            .is_none()
    );
    f.advance_days(9);
    let deleted_at = f.now();

    let refused = f.kms.key(TENANT, &key.key_id).await.unwrap_err();
    let KmsError::NotFound(message) = &refused else {
        panic!("{refused:?}")
    };
    assert!(message.contains(&key.arn), "{message}");
    assert!(message.contains("crypto-shredded"), "{message}");
    assert!(message.contains("2023-11-23T22:13:20Z"), "{message}");

    let record = f
        .kms
        .shredded_key(TENANT, &key.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.arn, key.arn);
    assert_eq!(record.material_versions, 2);
    assert_eq!(record.created_unix_ns, key.created_unix_ns);
    assert_eq!(record.scheduled_deletion_unix_ns, scheduled);
    assert_eq!(record.deleted_unix_ns, deleted_at);
    assert_eq!(record.origin, KeyOrigin::AwsKms);
    // The key, its materials and its alias are gone from every document;
    // the record holds none of the material.
    assert!(f.docs(KEYS, &format!("{TENANT}/")).await.is_empty());
    assert!(f.docs(ALIASES, &format!("{TENANT}/")).await.is_empty());
    let raw = f.docs(SHREDDED, &format!("{TENANT}/")).await;
    assert_eq!(raw.len(), 1);
    for material in &materials {
        assert!(!contains(&raw[0].value, material.as_bytes()));
        for namespace in [KEYS, ALIASES, SHREDDED, SHREDDED_ORDER, TENANT_COUNTS] {
            for doc in f.docs(namespace, "").await {
                assert!(!contains(&doc.value, material.as_bytes()), "{namespace}");
            }
        }
    }
    assert!(!contains(&raw[0].value, b"wrapped"));
    let counts = f.kms.counts(TENANT).await.unwrap().0;
    assert_eq!((counts.keys, counts.shredded), (0, 1));
}

#[tokio::test]
async fn a_record_that_cannot_be_written_keeps_the_key() {
    // The record and the deletion commit together: plant a document where
    // the record must go, and the deletion fails as a whole.
    let f = Fixture::new();
    let key = f.key(TENANT).await;
    f.delete_after_window(TENANT, &key).await;
    f.store
        .commit_documents(vec![DocumentWrite {
            namespace: SHREDDED.into(),
            key: key_doc(TENANT, &key.key_id),
            expect: Expect::Absent,
            value: Some(b"{}".to_vec()),
        }])
        .await
        .unwrap();
    f.advance_days(8);
    assert!(matches!(
        f.kms.key(TENANT, &key.key_id).await,
        Err(KmsError::Internal(_))
    ));
    // Still there, material included, and no deletion order entry.
    assert_eq!(f.stored_materials(&key).await.len(), 1);
    assert!(f.docs(SHREDDED_ORDER, "").await.is_empty());
    assert_eq!(f.kms.counts(TENANT).await.unwrap().0.keys, 1);
}

#[tokio::test]
async fn an_object_under_a_deleted_key_is_reported_shredded() {
    let f = Fixture::new();
    let key = f.key(TENANT).await;
    let (_, wrapped) = f
        .kms
        .new_data_key_under(TENANT, &key.arn, b"binding", &KeyCaller::via("s3", "p", ""))
        .await
        .unwrap();
    f.delete_after_window(TENANT, &key).await;
    f.advance_days(30);
    let refused = f
        .kms
        .open_data_key_under(
            TENANT,
            &key.arn,
            &wrapped,
            b"binding",
            AccessReason::CustomerInitiatedAccess,
            &KeyCaller::via("s3", "p", ""),
        )
        .await
        .unwrap_err();
    let crate::KeyError::CustomerKey(KmsError::NotFound(message)) = &refused else {
        panic!("{refused:?}")
    };
    assert!(
        message.starts_with("The object was crypto-shredded: its KMS key "),
        "{message}"
    );
    assert!(message.contains(&key.arn), "{message}");
    assert!(message.contains("was deleted on 2023-12-"), "{message}");
    // A key that never existed is a plain NotFound.
    let never = key
        .arn
        .replace(&key.key_id, "00000000-0000-4000-8000-000000000000");
    let refused = f
        .kms
        .open_data_key_under(
            TENANT,
            &never,
            &wrapped,
            b"binding",
            AccessReason::CustomerInitiatedAccess,
            &KeyCaller::via("s3", "p", ""),
        )
        .await
        .unwrap_err();
    assert!(!refused.to_string().contains("shredded"), "{refused}");
}

#[tokio::test]
async fn shredded_keys_are_listed_in_pages_per_tenant() {
    let f = Fixture::new();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let key = f.key(TENANT).await;
        f.delete_after_window(TENANT, &key).await;
        ids.push(key.key_id);
    }
    let kept = f.key(TENANT).await;
    let theirs = f.key(OTHER).await;
    f.delete_after_window(OTHER, &theirs).await;
    f.advance_days(8);
    // Deletion is lazy: the listing of keys meets them.
    let listed = f.kms.list_keys(TENANT, None, 100).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].key_id, kept.key_id);
    ids.sort();

    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = f
            .kms
            .list_shredded_keys(TENANT, marker.as_deref(), 2)
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|k| k.key_id.clone()));
        match page.next_marker {
            Some(next) => marker = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    // The other tenant's deletion is its own (not yet met: its listing).
    let _ = f.kms.list_keys(OTHER, None, 100).await.unwrap();
    let other = f.kms.list_shredded_keys(OTHER, None, 100).await.unwrap();
    assert_eq!(other.items.len(), 1);
    assert_eq!(other.items[0].key_id, theirs.key_id);
    assert!(matches!(
        f.kms.list_shredded_keys(TENANT, Some("nope"), 2).await,
        Err(KmsError::InvalidMarker(_))
    ));
}

#[tokio::test]
async fn records_are_bounded_per_tenant_dropping_the_oldest() {
    let f = Fixture::new();
    let first = f.key(TENANT).await;
    let second = f.key(TENANT).await;
    let third = f.key(TENANT).await;
    for key in [&first, &second] {
        f.delete_after_window(TENANT, key).await;
        f.advance_days(8);
        assert!(f.kms.key(TENANT, &key.key_id).await.is_err());
    }
    // Pretend the tenant already holds the most records allowed (creating
    // ten thousand keys would say nothing more).
    let (mut counts, expect) = f.kms.counts(TENANT).await.unwrap();
    assert_eq!(counts.shredded, 2);
    counts.shredded = KMS_SHREDDED_KEYS_PER_TENANT_MAX;
    f.store
        .commit_documents(vec![
            CustomerKeys::counts_write(TENANT, &counts, expect).unwrap(),
        ])
        .await
        .unwrap();
    f.delete_after_window(TENANT, &third).await;
    f.advance_days(8);
    assert!(f.kms.key(TENANT, &third.key_id).await.is_err());
    // The oldest record went in the same batch; the count stays at the bound.
    let listed: Vec<String> = f
        .kms
        .list_shredded_keys(TENANT, None, 100)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    let mut expected = vec![second.key_id.clone(), third.key_id.clone()];
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(f.docs(SHREDDED_ORDER, "").await.len(), 2);
    assert_eq!(
        f.kms.counts(TENANT).await.unwrap().0.shredded,
        KMS_SHREDDED_KEYS_PER_TENANT_MAX
    );
}

#[tokio::test]
async fn shredding_a_tenant_destroys_its_tenant_key_and_every_kms_key() {
    let f = Fixture::new();
    let service = f.kms.key_service().clone();
    // SSE-S3-style data, under the tenant key.
    let (_, wrapped) = service.new_data_key(TENANT, b"blob").await.unwrap();
    let enabled = f.key(TENANT).await;
    f.kms
        .rotate_on_demand(TENANT, &enabled.key_id)
        .await
        .unwrap();
    f.kms
        .create_alias(TENANT, "alias/a", &enabled.key_id)
        .await
        .unwrap();
    let disabled = f.key(TENANT).await;
    f.kms.disable_key(TENANT, &disabled.key_id).await.unwrap();
    let pending = f.key(TENANT).await;
    f.delete_after_window(TENANT, &pending).await;
    let gone = f.key(TENANT).await;
    f.delete_after_window(TENANT, &gone).await;
    f.advance_days(8);
    assert!(f.kms.key(TENANT, &gone.key_id).await.is_err());
    f.kms
        .schedule_deletion(TENANT, &enabled.key_id, Some(30))
        .await
        .unwrap();
    service
        .set_allowed_reasons(TENANT, &[AccessReason::CustomerInitiatedAccess])
        .await
        .unwrap();
    let theirs = f.key(OTHER).await;
    let (_, their_wrapped) = service.new_data_key(OTHER, b"blob").await.unwrap();

    let report = f.kms.shred_tenant(TENANT).await.unwrap();
    assert_eq!(
        report,
        TenantShredding {
            tenant_key: true,
            kms_keys: 3,
            material_versions: 4,
            external_key_stores: 0,
        }
    );
    let prefix = format!("{TENANT}/");
    for namespace in [KEYS, ALIASES, SHREDDED, SHREDDED_ORDER] {
        assert!(f.docs(namespace, &prefix).await.is_empty(), "{namespace}");
    }
    for namespace in [
        crate::TENANT_KEYS,
        TENANT_COUNTS,
        crate::access::ACCESS_REASONS,
        custom_key_store::STORES,
    ] {
        assert!(
            f.store
                .get_document(namespace, TENANT)
                .await
                .unwrap()
                .is_none(),
            "{namespace}"
        );
    }
    // The tenant's old data key no longer opens, in this process (the
    // cached tenant key is gone too) or any other.
    assert!(
        service
            .open_data_key(
                TENANT,
                &wrapped,
                b"blob",
                AccessReason::CustomerInitiatedAccess
            )
            .await
            .is_err()
    );
    // The other tenant is untouched.
    f.kms.key(OTHER, &theirs.key_id).await.unwrap();
    service
        .open_data_key(
            OTHER,
            &their_wrapped,
            b"blob",
            AccessReason::CustomerInitiatedAccess,
        )
        .await
        .unwrap();
    // Running it again (after a failure halfway) finds nothing more to do,
    // whatever a read in between re-created.
    let again = f.kms.shred_tenant(TENANT).await.unwrap();
    assert_eq!(again.kms_keys, 0);
    assert!(f.kms.shred_tenant("").await.is_err());
}
