//! Server-side copies that share their source's blobs (the data key
//! rewrapped for the copy, no byte re-encrypted), on a temporary embedded
//! store; and the copies that cannot share (another tenant, blobs written
//! before blobs could be shared), which re-encrypt.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{OTHER_TENANT, TENANT, blob_files, data, fixture};
use futures::{StreamExt, TryStreamExt};
use nuage_meta::{ChunkBinding, DataSegment, MetaStore, PutVersion};
use nuage_storage::{
    Checksums, CustomerKey, ObjectAttributes, Protection, Storage, StorageError, VersionRecord,
    WriteCondition, canonical_context,
};
use std::collections::BTreeMap;

async fn put(
    storage: &Storage,
    bucket: &str,
    key: &str,
    data: &[u8],
    protection: Protection<'_>,
) -> VersionRecord {
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(data.to_vec()))]);
    let staged = storage
        .stage_under(
            bucket,
            key,
            body,
            Some(data.len() as u64),
            1 << 30,
            &[nuage_storage::ChecksumAlgorithm::Crc32],
            protection,
        )
        .await
        .unwrap();
    let checksums = staged.digests.checksums.clone();
    storage
        .put_object(
            bucket,
            key,
            staged,
            ObjectAttributes::default(),
            checksums,
            WriteCondition::None,
        )
        .await
        .unwrap()
}

async fn read_range(
    storage: &Storage,
    record: &VersionRecord,
    customer: Option<&CustomerKey>,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, StorageError> {
    let body = storage.read_object(record, customer, offset, len).await?;
    let chunks: Vec<bytes::Bytes> = body
        .try_collect()
        .await
        .map_err(|e| StorageError::Corrupt(e.to_string()))?;
    Ok(chunks.concat())
}

async fn read(
    storage: &Storage,
    record: &VersionRecord,
    customer: Option<&CustomerKey>,
) -> Result<Vec<u8>, StorageError> {
    read_range(storage, record, customer, 0, record.size).await
}

/// CopyObject as the S3 front end does it when the blobs can be shared.
async fn share(
    storage: &Storage,
    source: &VersionRecord,
    source_key: Option<&CustomerKey>,
    key: &str,
    protection: Protection<'_>,
) -> VersionRecord {
    let copy = storage
        .share_copy(source, source_key, "bkt", key, protection)
        .await
        .unwrap()
        .expect("the blobs can be shared");
    storage
        .put_copy(
            copy,
            ObjectAttributes::default(),
            source.checksums.clone(),
            WriteCondition::None,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_copy_shares_its_source_blob_and_outlives_it() {
    let f = fixture();
    f.storage.create_bucket("bkt", None, TENANT).await.unwrap();
    let bytes = data(300_000);
    let source = put(&f.storage, "bkt", "source", &bytes, Protection::Tenant).await;
    assert_eq!(source.segments[0].chunk_binding, ChunkBinding::Blob);
    assert_eq!(blob_files(&f.dir), 1);

    let copy = share(&f.storage, &source, None, "copy", Protection::Tenant).await;
    assert_eq!(blob_files(&f.dir), 1, "the copy wrote no blob");
    assert_eq!(copy.segments[0].blob_id, source.segments[0].blob_id);
    assert_ne!(copy.segments[0].sealed_key, source.segments[0].sealed_key);
    assert_eq!(copy.etag, source.etag);
    let stored = f.storage.head_object("bkt", "copy", None).await.unwrap();
    assert_eq!(stored.checksums, source.checksums);
    assert_eq!(read(&f.storage, &stored, None).await.unwrap(), bytes);
    // Ranges inside a chunk, across chunks, and the last bytes.
    for (offset, len) in [(1u64, 10u64), (65_000, 70_000), (299_990, 10)] {
        let got = read_range(&f.storage, &stored, None, offset, len)
            .await
            .unwrap();
        assert_eq!(
            got,
            bytes[offset as usize..(offset + len) as usize],
            "{offset}+{len}"
        );
    }

    // The source goes; the copy keeps the blob alive.
    f.storage
        .delete_object("bkt", "source", None)
        .await
        .unwrap();
    assert_eq!(blob_files(&f.dir), 1);
    let stored = f.storage.head_object("bkt", "copy", None).await.unwrap();
    assert_eq!(read(&f.storage, &stored, None).await.unwrap(), bytes);
    // The last reference frees the blob at once (no orphan collection).
    f.storage.delete_object("bkt", "copy", None).await.unwrap();
    assert_eq!(blob_files(&f.dir), 0);
}

#[tokio::test]
async fn a_wrapped_key_moved_between_records_sharing_a_blob_does_not_open() {
    let f = fixture();
    f.storage.create_bucket("bkt", None, TENANT).await.unwrap();
    let bytes = data(70_000);
    let source = put(&f.storage, "bkt", "source", &bytes, Protection::Tenant).await;
    let copy = share(&f.storage, &source, None, "copy", Protection::Tenant).await;
    // The copy's wrapped key is bound to the copy: on the source's record
    // it does not open, and the other way round.
    let mut tampered = source.clone();
    tampered.segments[0].sealed_key = copy.segments[0].sealed_key.clone();
    assert!(matches!(
        read(&f.storage, &tampered, None).await,
        Err(StorageError::Corrupt(_))
    ));
    let mut tampered = copy.clone();
    tampered.segments[0].sealed_key = source.segments[0].sealed_key.clone();
    assert!(matches!(
        read(&f.storage, &tampered, None).await,
        Err(StorageError::Corrupt(_))
    ));
    // Nor do the chunks open under the object's binding.
    let mut tampered = copy.clone();
    tampered.segments[0].chunk_binding = ChunkBinding::Object;
    assert!(read(&f.storage, &tampered, None).await.is_err());
    // The records as written do.
    assert_eq!(read(&f.storage, &source, None).await.unwrap(), bytes);
    assert_eq!(read(&f.storage, &copy, None).await.unwrap(), bytes);
}

#[tokio::test]
async fn shared_copies_change_the_protection() {
    let f = fixture();
    f.storage.create_bucket("bkt", None, TENANT).await.unwrap();
    let kms = f
        .storage
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
    let a = CustomerKey::from_base64(&BASE64.encode([1u8; 32])).unwrap();
    let b = CustomerKey::from_base64(&BASE64.encode([2u8; 32])).unwrap();
    let bytes = data(200_000);
    let source = put(&f.storage, "bkt", "sse-c", &bytes, Protection::Customer(&a)).await;

    // The source's key is needed, and must be the right one.
    let wrong = f
        .storage
        .share_copy(&source, Some(&b), "bkt", "x", Protection::Tenant)
        .await;
    assert!(matches!(wrong, Err(StorageError::CustomerKeyMismatch)));

    // SSE-C to SSE-KMS.
    let mut pairs = BTreeMap::new();
    pairs.insert("aws:s3:arn".to_owned(), "arn:aws:s3:::bkt/kms".to_owned());
    let context = canonical_context(&pairs);
    let to_kms = share(
        &f.storage,
        &source,
        Some(&a),
        "kms",
        Protection::Kms {
            arn: &kms.arn,
            context: Some(&context),
        },
    )
    .await;
    assert_eq!(blob_files(&f.dir), 1);
    assert!(!to_kms.segments[0].sse_c);
    assert_eq!(
        to_kms.segments[0].kms_key_arn.as_deref(),
        Some(kms.arn.as_str())
    );
    assert_eq!(read(&f.storage, &to_kms, None).await.unwrap(), bytes);

    // SSE-KMS to SSE-C under another key.
    let to_c = share(&f.storage, &to_kms, None, "c", Protection::Customer(&b)).await;
    assert_eq!(blob_files(&f.dir), 1);
    assert!(to_c.segments[0].sse_c);
    assert_eq!(read(&f.storage, &to_c, Some(&b)).await.unwrap(), bytes);
    assert!(matches!(
        read(&f.storage, &to_c, Some(&a)).await,
        Err(StorageError::CustomerKeyMismatch)
    ));
    // The source still opens with its own key only.
    assert_eq!(read(&f.storage, &source, Some(&a)).await.unwrap(), bytes);
}

#[tokio::test]
async fn a_copy_whose_source_vanishes_before_its_commit_is_no_such_key() {
    let f = fixture();
    f.storage.create_bucket("bkt", None, TENANT).await.unwrap();
    let source = put(&f.storage, "bkt", "source", &data(1000), Protection::Tenant).await;
    let prepared = f
        .storage
        .share_copy(&source, None, "bkt", "copy", Protection::Tenant)
        .await
        .unwrap()
        .unwrap();
    // The source is deleted between the copy's unwrap and its commit.
    f.storage
        .delete_object("bkt", "source", None)
        .await
        .unwrap();
    assert_eq!(blob_files(&f.dir), 0);
    let committed = f
        .storage
        .put_copy(
            prepared,
            ObjectAttributes::default(),
            Checksums::default(),
            WriteCondition::None,
        )
        .await;
    assert!(
        matches!(committed, Err(StorageError::NoSuchKey)),
        "{committed:?}"
    );
    assert!(matches!(
        f.storage.head_object("bkt", "copy", None).await,
        Err(StorageError::NoSuchKey)
    ));
}

#[tokio::test]
async fn copies_across_tenants_or_of_older_blobs_re_encrypt() {
    let f = fixture();
    f.storage.create_bucket("bkt", None, TENANT).await.unwrap();
    f.storage
        .create_bucket("theirs", None, OTHER_TENANT)
        .await
        .unwrap();
    let bytes = data(100_000);
    let source = put(&f.storage, "bkt", "source", &bytes, Protection::Tenant).await;
    // Another tenant: the chunks are bound to this one, nothing is shared.
    assert!(
        f.storage
            .share_copy(&source, None, "theirs", "copy", Protection::Tenant)
            .await
            .unwrap()
            .is_none()
    );
    let staged = f
        .storage
        .stage_copy(
            &source,
            None,
            0,
            source.size,
            "theirs",
            "copy",
            Protection::Tenant,
        )
        .await
        .unwrap();
    let theirs = f
        .storage
        .put_object(
            "theirs",
            "copy",
            staged,
            ObjectAttributes::default(),
            Checksums::default(),
            WriteCondition::None,
        )
        .await
        .unwrap();
    assert_ne!(theirs.segments[0].blob_id, source.segments[0].blob_id);
    assert_eq!(blob_files(&f.dir), 2);
    assert_eq!(read(&f.storage, &theirs, None).await.unwrap(), bytes);

    // A blob written before blobs could be shared: its chunks are bound to
    // its object. Written here as the earlier code did.
    let bucket = f.storage.bucket("bkt").await.unwrap();
    let mut writer = nuage_blob::BlobStore::create(f.blobs.as_ref())
        .await
        .unwrap();
    let blob_id = writer.blob_id().to_owned();
    let binding = nuage_crypto::Binding {
        tenant: TENANT,
        bucket: "bkt",
        key: "legacy",
        blob: &blob_id,
        region: &bucket.region,
    }
    .encode();
    let (data_key, wrapped) = f.keys.new_data_key(TENANT, &binding).await.unwrap();
    let plaintext =
        futures::stream::iter([Ok::<_, StorageError>(bytes::Bytes::from(bytes.clone()))]);
    let mut sealed = std::pin::pin!(
        nuage_crypto::encrypt_stream::<_, StorageError, StorageError>(
            data_key, &binding, plaintext
        )
    );
    while let Some(chunk) = sealed.next().await {
        writer.write(chunk.unwrap()).await.unwrap();
    }
    writer.finish().await.unwrap();
    let mut record = source.clone();
    record.key = "legacy".into();
    record.segments = vec![DataSegment {
        blob_id: blob_id.clone(),
        size: bytes.len() as u64,
        part_etag: None,
        sealed_key: Some(BASE64.encode(wrapped)),
        kms_key_arn: None,
        kms_context: None,
        sse_c: false,
        chunk_binding: ChunkBinding::Object,
    }];
    record.sealed_attributes = None;
    record.checksums = Checksums::default();
    f.meta
        .put_version(PutVersion {
            record,
            null_version: true,
            condition: WriteCondition::None,
            shared_blobs: Vec::new(),
        })
        .await
        .unwrap();
    let legacy = f.storage.head_object("bkt", "legacy", None).await.unwrap();
    assert_eq!(read(&f.storage, &legacy, None).await.unwrap(), bytes);
    assert!(
        f.storage
            .share_copy(&legacy, None, "bkt", "copy", Protection::Tenant)
            .await
            .unwrap()
            .is_none()
    );
    let staged = f
        .storage
        .stage_copy(
            &legacy,
            None,
            0,
            legacy.size,
            "bkt",
            "copy",
            Protection::Tenant,
        )
        .await
        .unwrap();
    let copy = f
        .storage
        .put_object(
            "bkt",
            "copy",
            staged,
            ObjectAttributes::default(),
            Checksums::default(),
            WriteCondition::None,
        )
        .await
        .unwrap();
    assert_eq!(copy.segments[0].chunk_binding, ChunkBinding::Blob);
    assert_eq!(blob_files(&f.dir), 4);
    assert_eq!(read(&f.storage, &copy, None).await.unwrap(), bytes);
}
