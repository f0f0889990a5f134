//! The attributes of multipart uploads in progress: sealed in the metadata
//! store, opened at completion; uploads created before they were sealed
//! still complete with theirs.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use common::{TENANT, fixture};
use nuage_meta::MetaStore;
use nuage_storage::{
    Checksums, CompletedPart, ContentHeaders, ObjectAttributes, Protection, StorageError,
    UploadRecord, WriteCondition,
};
use std::collections::BTreeMap;

const MARKER: &str = "NUAGE-UPLOAD-ATTRIBUTE-MARKER";

fn attributes() -> ObjectAttributes {
    ObjectAttributes {
        content: ContentHeaders {
            content_type: Some(format!("text/{MARKER}")),
            ..ContentHeaders::default()
        },
        user_metadata: BTreeMap::from([("note".to_owned(), MARKER.to_owned())]),
        tags: vec![("team".to_owned(), MARKER.to_owned())],
    }
}

async fn complete_with_one_part(
    f: &common::Fixture,
    upload_id: &str,
) -> nuage_storage::VersionRecord {
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
        b"the only part",
    ))]);
    let staged = f
        .storage
        .stage("bkt", "mp", body, None, 1 << 20, &[])
        .await
        .unwrap();
    let part = f
        .storage
        .put_part("bkt", "mp", upload_id, 1, staged, Checksums::default())
        .await
        .unwrap();
    f.storage
        .complete_upload(
            "bkt",
            "mp",
            upload_id,
            &[CompletedPart {
                part_number: 1,
                etag: part.etag,
                checksums: Checksums::default(),
            }],
            WriteCondition::None,
            &Checksums::default(),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn upload_attributes_are_sealed_until_completion() {
    let f = fixture();
    f.storage.create_bucket("bkt", None, TENANT).await.unwrap();
    let upload = f
        .storage
        .create_upload("bkt", "mp", attributes(), None, None, Protection::Tenant)
        .await
        .unwrap();
    let stored = f
        .meta
        .get_upload("bkt", "mp", &upload.upload_id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.sealed_attributes.is_some());
    assert!(stored.user_metadata.is_empty() && stored.tags.is_empty());
    assert_eq!(stored.content, ContentHeaders::default());
    let text = serde_json::to_string(&stored).unwrap();
    assert!(!text.contains(MARKER), "{text}");

    // Bound to its upload: moved onto another upload, they do not open.
    let mut other = f
        .storage
        .create_upload(
            "bkt",
            "mp",
            ObjectAttributes::default(),
            None,
            None,
            Protection::Tenant,
        )
        .await
        .unwrap();
    assert!(other.sealed_attributes.is_none(), "nothing to seal");
    other.sealed_attributes = stored.sealed_attributes.clone();
    assert!(matches!(
        f.storage.open_upload_attributes(&mut other).await,
        Err(StorageError::Corrupt(_))
    ));

    let record = complete_with_one_part(&f, &upload.upload_id).await;
    assert_eq!(
        record.user_metadata.get("note").map(String::as_str),
        Some(MARKER)
    );
    let head = f.storage.head_object("bkt", "mp", None).await.unwrap();
    assert_eq!(head.user_metadata, attributes().user_metadata);
    assert_eq!(head.tags, attributes().tags);
    assert_eq!(head.content, attributes().content);
}

#[tokio::test]
async fn uploads_created_before_sealing_complete_with_their_attributes() {
    let f = fixture();
    f.storage.create_bucket("bkt", None, TENANT).await.unwrap();
    let attributes = attributes();
    f.meta
        .create_upload(UploadRecord {
            bucket: "bkt".into(),
            key: "mp".into(),
            upload_id: "legacy-upload".into(),
            initiated_unix_ns: 1,
            content: attributes.content.clone(),
            user_metadata: attributes.user_metadata.clone(),
            tags: attributes.tags.clone(),
            checksum_algorithm: None,
            checksum_type: None,
            kms_key_arn: None,
            kms_context: None,
            sse_c_key_check: None,
            sealed_attributes: None,
        })
        .await
        .unwrap();
    complete_with_one_part(&f, "legacy-upload").await;
    let head = f.storage.head_object("bkt", "mp", None).await.unwrap();
    assert_eq!(head.user_metadata, attributes.user_metadata);
    assert_eq!(head.tags, attributes.tags);
    assert_eq!(head.content, attributes.content);
}
