//! The storage service's key protections on a temporary embedded store:
//! SSE-KMS wrappings bound to their encryption context, SSE-C data and
//! upload key checks that open only with the customer's key.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::TryStreamExt;
use nuage_storage::{
    Checksums, CustomerKey, ObjectAttributes, Protection, Region, Storage, StorageConfig,
    StorageError, VersionRecord, WriteCondition, canonical_context,
};
use std::collections::BTreeMap;
use std::sync::Arc;

const TENANT: &str = "111122223333";

fn storage(dir: &std::path::Path) -> Storage {
    let meta =
        Arc::new(nuage_meta::embedded::EmbeddedMetaStore::open(&dir.join("meta.redb")).unwrap());
    let blobs = Arc::new(nuage_blob::local::LocalBlobStore::open(&dir.join("blobs")).unwrap());
    let clock: Arc<dyn nuage_base::Clock> = Arc::new(nuage_base::SystemClock);
    let root = nuage_crypto::RootKeyFile::open_or_create(&dir.join("root.key")).unwrap();
    let keys = nuage_kms::KeyService::new(
        Arc::clone(&meta) as Arc<dyn nuage_meta::DocumentStore>,
        root,
    );
    Storage::new(
        meta,
        blobs,
        clock,
        keys,
        StorageConfig {
            regions: vec![Region {
                name: "fr-par".into(),
                country: "FR".into(),
            }],
            default_region_aliases: Vec::new(),
        },
    )
}

async fn put(
    storage: &Storage,
    key: &str,
    data: &[u8],
    protection: Protection<'_>,
) -> VersionRecord {
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(data.to_vec()))]);
    let staged = storage
        .stage_under(
            "bkt",
            key,
            body,
            Some(data.len() as u64),
            1 << 30,
            &[],
            protection,
        )
        .await
        .unwrap();
    storage
        .put_object(
            "bkt",
            key,
            staged,
            ObjectAttributes::default(),
            Checksums::default(),
            WriteCondition::None,
        )
        .await
        .unwrap()
}

async fn read(
    storage: &Storage,
    record: &VersionRecord,
    customer: Option<&CustomerKey>,
) -> Result<Vec<u8>, StorageError> {
    let body = storage
        .read_object(record, customer, 0, record.size)
        .await?;
    let chunks: Vec<bytes::Bytes> = body
        .try_collect()
        .await
        .map_err(|e| StorageError::Corrupt(e.to_string()))?;
    Ok(chunks.concat())
}

fn context(pairs: &[(&str, &str)]) -> String {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    canonical_context(&map)
}

#[tokio::test]
async fn kms_wrappings_open_only_under_their_context() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(dir.path());
    storage.create_bucket("bkt", None, TENANT).await.unwrap();
    let key = storage
        .customer_keys()
        .create_key(
            TENANT,
            nuage_kms::NewKey {
                description: String::new(),
                policy: None,
                tags: Vec::new(),
            },
        )
        .await
        .unwrap();
    let ctx = context(&[("aws:s3:arn", "arn:aws:s3:::b/doc"), ("team", "blue")]);
    let data = vec![7u8; 100_000];
    let record = put(
        &storage,
        "doc",
        &data,
        Protection::Kms {
            arn: &key.arn,
            context: Some(&ctx),
        },
    )
    .await;
    assert_eq!(
        record.segments[0].kms_context.as_deref(),
        Some(ctx.as_str())
    );
    assert_eq!(read(&storage, &record, None).await.unwrap(), data);

    // The same wrapped key presented with another context, or none, does not open.
    for other in [
        Some(context(&[
            ("aws:s3:arn", "arn:aws:s3:::b/doc"),
            ("team", "red"),
        ])),
        Some(context(&[("aws:s3:arn", "arn:aws:s3:::b/doc")])),
        None,
    ] {
        let mut tampered = record.clone();
        tampered.segments[0].kms_context = other.clone();
        match read(&storage, &tampered, None).await {
            Err(StorageError::Kms { code, .. }) => {
                assert_eq!(code, "KMS.InvalidCiphertextException", "{other:?}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn sse_c_data_opens_only_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(dir.path());
    storage.create_bucket("bkt", None, TENANT).await.unwrap();
    let a = CustomerKey::from_base64(&BASE64.encode([1u8; 32])).unwrap();
    let b = CustomerKey::from_base64(&BASE64.encode([2u8; 32])).unwrap();
    let data = vec![9u8; 70_000];
    let record = put(&storage, "secret", &data, Protection::Customer(&a)).await;
    assert!(record.segments[0].sse_c);
    assert_eq!(read(&storage, &record, Some(&a)).await.unwrap(), data);
    storage.check_customer_key(&record, Some(&a)).await.unwrap();
    assert!(matches!(
        read(&storage, &record, Some(&b)).await,
        Err(StorageError::CustomerKeyMismatch)
    ));
    assert!(matches!(
        storage.check_customer_key(&record, Some(&b)).await,
        Err(StorageError::CustomerKeyMismatch)
    ));
    assert!(matches!(
        read(&storage, &record, None).await,
        Err(StorageError::InvalidRequest(_))
    ));
    assert!(matches!(
        storage.check_customer_key(&record, None).await,
        Err(StorageError::InvalidRequest(_))
    ));
    // Marked as not SSE-C, the wrapped key does not open under the tenant key.
    let mut tampered = record.clone();
    tampered.segments[0].sse_c = false;
    assert!(read(&storage, &tampered, None).await.is_err());
    // SSE-C parameters for an SSE-S3 object are refused.
    let plain = put(&storage, "plain", b"plain", Protection::Tenant).await;
    assert!(matches!(
        storage.check_customer_key(&plain, Some(&a)).await,
        Err(StorageError::InvalidRequest(_))
    ));
    storage.check_customer_key(&plain, None).await.unwrap();

    // An SSE-C upload's key check: the same key passes, another or none does not.
    let upload = storage
        .create_upload(
            "bkt",
            "multi",
            ObjectAttributes::default(),
            None,
            None,
            Protection::Customer(&a),
        )
        .await
        .unwrap();
    let check = upload.sse_c_key_check.clone().unwrap();
    assert!(!check.contains(a.md5_base64()));
    storage.check_upload_key(&upload, Some(&a)).await.unwrap();
    assert!(matches!(
        storage.check_upload_key(&upload, Some(&b)).await,
        Err(StorageError::InvalidRequest(_))
    ));
    assert!(matches!(
        storage.check_upload_key(&upload, None).await,
        Err(StorageError::InvalidRequest(_))
    ));
    // Bound to the upload: another upload's check does not pass for this one.
    let other = storage
        .create_upload(
            "bkt",
            "multi",
            ObjectAttributes::default(),
            None,
            None,
            Protection::Customer(&a),
        )
        .await
        .unwrap();
    let mut swapped = other.clone();
    swapped.sse_c_key_check = Some(check);
    assert!(storage.check_upload_key(&swapped, Some(&a)).await.is_err());
}
