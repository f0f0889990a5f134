//! The GET path of encrypted objects: the blob store's CRC32C is not
//! recomputed while every chunk's AES-GCM tag authenticates it, yet a
//! damaged blob is still refused, and the error tells corruption on disk
//! (CRC32C mismatch) from tampering (a consistent CRC32C, a failed tag).
// Test helpers may unwrap: a panic is a test failure with a backtrace.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TENANT, data, fixture};
use futures::TryStreamExt;
use nuage_meta::{Checksums, WriteCondition};
use nuage_storage::{ObjectAttributes, Storage, StorageError, VersionRecord};
use std::path::PathBuf;

const HEADER_BYTES: usize = 16;
const BLOCK_BYTES: usize = 256 * 1024;

async fn put(storage: &Storage, key: &str, body: &[u8]) -> VersionRecord {
    let pieces = vec![Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(body))];
    let staged = storage
        .stage(
            "bkt",
            key,
            futures::stream::iter(pieces),
            Some(body.len() as u64),
            1 << 30,
            &[],
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

async fn read(storage: &Storage, record: &VersionRecord) -> Result<Vec<u8>, StorageError> {
    let body = storage.read_object(record, None, 0, record.size).await?;
    let chunks: Vec<bytes::Bytes> = body
        .try_collect()
        .await
        .map_err(|e| StorageError::Corrupt(e.to_string()))?;
    Ok(chunks.concat())
}

fn blob_path(dir: &std::path::Path, record: &VersionRecord) -> PathBuf {
    let id = &record.segments[0].blob_id;
    dir.join("blobs").join(&id[..2]).join(id)
}

/// Flips a bit at `data_offset` of the blob's data (in its second block),
/// recomputing that block's CRC32C when `consistent_crc` (tampering) or not
/// (the disk damaged it).
fn damage(path: &std::path::Path, data_offset: usize, consistent_crc: bool) {
    let mut bytes = std::fs::read(path).unwrap();
    let block = data_offset / BLOCK_BYTES;
    let block_start = HEADER_BYTES + block * (BLOCK_BYTES + 4);
    let data_end = block_start + BLOCK_BYTES.min(bytes.len() - block_start - 4);
    bytes[block_start + data_offset % BLOCK_BYTES] ^= 0x08;
    if consistent_crc {
        let crc = crc32c::crc32c(&bytes[block_start..data_end]).to_le_bytes();
        bytes[data_end..data_end + 4].copy_from_slice(&crc);
    }
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn damage_is_refused_and_told_apart_from_tampering() {
    let f = fixture();
    f.storage.create_bucket("bkt", None, TENANT).await.unwrap();
    let body = data(3 * BLOCK_BYTES + 1000);
    for (key, consistent_crc) in [("disk", false), ("tampered", true)] {
        let record = put(&f.storage, key, &body).await;
        assert!(read(&f.storage, &record).await.unwrap() == body);
        damage(
            &blob_path(&f.dir, &record),
            BLOCK_BYTES + 500,
            consistent_crc,
        );
        let error = match read(&f.storage, &record).await {
            Err(StorageError::Corrupt(message)) => message,
            other => panic!("{key}: damaged object read as {:?}", other.map(|b| b.len())),
        };
        assert_eq!(
            error.contains("checksum mismatch in block 1"),
            !consistent_crc,
            "{key}: {error}"
        );
        // The damaged chunk is never served, whatever the CRC says; a range
        // before it still reads.
        let head = f.storage.read_object(&record, None, 0, 1000).await.unwrap();
        let head: Vec<bytes::Bytes> = head.try_collect().await.unwrap();
        assert!(head.concat() == body[..1000]);
    }
}
