//! Records and databases the metadata store's test binaries share: a
//! minimal record of each kind (each test sets the fields it checks) and a
//! fresh database on the throwaway PostgreSQL of `nuage-testsupport`.
// Each test binary uses its own subset of these.
#![allow(dead_code)]

use nuage_meta::*;

/// A fresh database on this test process's PostgreSQL, or None when
/// PostgreSQL is not installed (`nuage-testsupport` fails instead in CI).
pub async fn postgres_url() -> Option<String> {
    let server = nuage_testsupport::postgres::server()?;
    Some(
        tokio::task::spawn_blocking(|| server.create_database())
            .await
            .unwrap(),
    )
}

pub fn bucket(name: &str, versioning: Versioning) -> BucketRecord {
    BucketRecord {
        owner: "111122223333".into(),
        policy: None,
        public_access_block: None,
        name: name.into(),
        region: "fr-par".into(),
        created_unix_ns: 1,
        versioning,
        tags: None,
        cors: None,
        encryption: None,
        residency_policy: None,
    }
}

/// A one-byte object of `key` in one segment (`blob`), modified at `t`.
pub fn version(
    bucket: &str,
    key: &str,
    blob: &str,
    t: i64,
    binding: ChunkBinding,
) -> VersionRecord {
    VersionRecord {
        bucket: bucket.into(),
        key: key.into(),
        version_id: String::new(),
        seq: 0,
        delete_marker: false,
        last_modified_unix_ns: t,
        size: 1,
        etag: format!("etag-{blob}"),
        content: ContentHeaders::default(),
        user_metadata: Default::default(),
        checksums: Checksums::default(),
        tags: vec![],
        segments: vec![DataSegment {
            blob_id: blob.into(),
            size: 1,
            part_etag: None,
            sealed_key: None,
            kms_key_arn: None,
            kms_context: None,
            sse_c: false,
            chunk_binding: binding,
        }],
        sealed_attributes: None,
    }
}

pub fn upload(bucket: &str, key: &str, id: &str) -> UploadRecord {
    UploadRecord {
        bucket: bucket.into(),
        key: key.into(),
        upload_id: id.into(),
        initiated_unix_ns: 1,
        content: ContentHeaders::default(),
        user_metadata: Default::default(),
        tags: vec![],
        checksum_algorithm: None,
        checksum_type: None,
        kms_key_arn: None,
        kms_context: None,
        sse_c_key_check: None,
        sealed_attributes: None,
    }
}

/// A one-byte part in its own blob.
pub fn part(number: u32, blob: &str) -> PartRecord {
    PartRecord {
        part_number: number,
        blob_id: blob.into(),
        size: 1,
        etag: format!("etag-{blob}"),
        last_modified_unix_ns: 1,
        checksums: Checksums::default(),
        sealed_key: None,
        kms_key_arn: None,
        kms_context: None,
        sse_c: false,
        chunk_binding: ChunkBinding::Blob,
    }
}
