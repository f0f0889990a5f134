//! Encryption at rest through the real binary: no plaintext reaches the disk,
//! tampered ciphertext (even with a recomputed block checksum) and ciphertext
//! moved to another object are refused, never served.
#![allow(clippy::unwrap_used)]
mod common;

use common::Server;
use std::path::{Path, PathBuf};

const MARKER: &[u8] = b"NUAGE-PLAINTEXT-MARKER-";
/// The blob format's header and checksummed block size (crates/blob/src/format.rs).
const BLOB_HEADER_BYTES: usize = 16;
const BLOB_BLOCK_BYTES: usize = 256 * 1024;

fn blob_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(data_dir.join("blobs")).unwrap() {
        for entry in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(entry.unwrap().path());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Flips one byte inside the first block's data and recomputes that block's
/// CRC32C, so only the cipher's authentication can notice.
fn tamper_first_block(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let block_len = BLOB_BLOCK_BYTES.min(bytes.len() - BLOB_HEADER_BYTES - 4);
    bytes[BLOB_HEADER_BYTES + 100] ^= 0x40;
    let data = &bytes[BLOB_HEADER_BYTES..BLOB_HEADER_BYTES + block_len];
    let crc = crc32c::crc32c(data).to_le_bytes();
    bytes[BLOB_HEADER_BYTES + block_len..BLOB_HEADER_BYTES + block_len + 4].copy_from_slice(&crc);
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn objects_are_encrypted_at_rest_and_tampering_is_refused() {
    let server = Server::start();
    let s3 = server.client();
    s3.create_bucket().bucket("sealed").send().await.unwrap();
    let plaintext: Vec<u8> = MARKER.iter().copied().cycle().take(300_000).collect();
    for key in ["a", "b"] {
        s3.put_object()
            .bucket("sealed")
            .key(key)
            .body(plaintext.clone().into())
            .send()
            .await
            .unwrap();
    }
    // Multipart parts are encrypted too.
    let upload = s3
        .create_multipart_upload()
        .bucket("sealed")
        .key("mp")
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    let mut part_data: Vec<u8> = MARKER
        .iter()
        .copied()
        .cycle()
        .take(5 * 1024 * 1024)
        .collect();
    part_data.truncate(5 * 1024 * 1024);
    let part = s3
        .upload_part()
        .bucket("sealed")
        .key("mp")
        .upload_id(upload_id)
        .part_number(1)
        .body(part_data.clone().into())
        .send()
        .await
        .unwrap();
    let completed = aws_sdk_s3::types::CompletedMultipartUpload::builder()
        .parts(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(1)
                .e_tag(part.e_tag().unwrap())
                .build(),
        )
        .build();
    s3.complete_multipart_upload()
        .bucket("sealed")
        .key("mp")
        .upload_id(upload_id)
        .multipart_upload(completed)
        .send()
        .await
        .unwrap();

    // Reads decrypt, also ranges that straddle a 64 KiB cipher chunk.
    let got = s3
        .get_object()
        .bucket("sealed")
        .key("a")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        plaintext.as_slice()
    );
    let range = s3
        .get_object()
        .bucket("sealed")
        .key("a")
        .range("bytes=65530-131080")
        .send()
        .await
        .unwrap();
    assert_eq!(
        range.body.collect().await.unwrap().into_bytes().as_ref(),
        &plaintext[65530..=131_080]
    );

    // Nothing on disk holds the plaintext.
    let files = blob_files(&server.data_dir);
    assert_eq!(files.len(), 3);
    for file in &files {
        assert!(
            !contains(&std::fs::read(file).unwrap(), MARKER),
            "{} holds plaintext",
            file.display()
        );
    }
    let metadata = std::fs::read(server.data_dir.join("meta.redb")).unwrap();
    assert!(
        !contains(&metadata, MARKER),
        "the metadata store holds no object data"
    );
    // User metadata and checksum values are sealed in the metadata store too,
    // and come back in the clear to the owner.
    let put = s3
        .put_object()
        .bucket("sealed")
        .key("with-attributes")
        .metadata("note", "NUAGE-META-MARKER")
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .body(b"attributes".to_vec().into())
        .send()
        .await
        .unwrap();
    let sha256 = put.checksum_sha256().unwrap().to_owned();
    assert_eq!(
        put.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256)
    );
    // SSE-KMS needs a customer key named (no AWS-managed default key).
    let kms = s3
        .put_object()
        .bucket("sealed")
        .key("kms")
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        kms.into_service_error().meta().code(),
        Some("InvalidArgument")
    );
    let config = s3
        .get_bucket_encryption()
        .bucket("sealed")
        .send()
        .await
        .unwrap();
    let rule = &config
        .server_side_encryption_configuration()
        .unwrap()
        .rules()[0];
    assert_eq!(
        rule.apply_server_side_encryption_by_default()
            .unwrap()
            .sse_algorithm(),
        &aws_sdk_s3::types::ServerSideEncryption::Aes256
    );
    let head = s3
        .head_object()
        .bucket("sealed")
        .key("with-attributes")
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("note"))
            .map(String::as_str),
        Some("NUAGE-META-MARKER")
    );
    assert_eq!(head.checksum_sha256(), Some(sha256.as_str()));
    assert_eq!(
        head.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256)
    );
    let listed = s3
        .list_objects_v2()
        .bucket("sealed")
        .prefix("with-")
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.contents()[0].checksum_algorithm().len(),
        1,
        "listings still name the algorithm"
    );
    let metadata = std::fs::read(server.data_dir.join("meta.redb")).unwrap();
    assert!(
        !contains(&metadata, b"NUAGE-META-MARKER"),
        "user metadata is sealed"
    );
    assert!(
        !contains(&metadata, sha256.as_bytes()),
        "checksum values are sealed"
    );
    // The root of trust is readable by its owner only.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(server.data_dir.join("root.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "root.key must not be readable by group or others"
    );

    // Find each object's blob by its size: a and b are the two equal-sized ones.
    let mut small: Vec<&PathBuf> = files
        .iter()
        .filter(|f| std::fs::metadata(f).unwrap().len() < 1024 * 1024)
        .collect();
    small.sort();
    assert_eq!(small.len(), 2);

    // Moving one object's ciphertext onto the other's blob: each data key is
    // bound to its own blob, so the swapped object no longer reads.
    let first = std::fs::read(small[0]).unwrap();
    std::fs::write(small[1], &first).unwrap();
    let mut failures = 0;
    for key in ["a", "b"] {
        match s3.get_object().bucket("sealed").key(key).send().await {
            Ok(out) => {
                // Whatever is served must be the real plaintext, never other bytes.
                let body = out.body.collect().await;
                match body {
                    Ok(bytes) => assert_eq!(bytes.into_bytes().as_ref(), plaintext.as_slice()),
                    Err(_) => failures += 1,
                }
            }
            Err(e) => {
                assert_eq!(e.into_service_error().meta().code(), Some("InternalError"));
                failures += 1;
            }
        }
    }
    assert_eq!(
        failures, 1,
        "exactly the object whose ciphertext was replaced is refused"
    );

    // A flipped ciphertext byte with a valid block checksum: refused.
    tamper_first_block(small[0]);
    tamper_first_block(small[1]);
    for key in ["a", "b"] {
        let err = s3
            .get_object()
            .bucket("sealed")
            .key(key)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err.into_service_error().meta().code(),
            Some("InternalError")
        );
    }
    // The multipart object is untouched and still reads.
    let mp = s3
        .get_object()
        .bucket("sealed")
        .key("mp")
        .send()
        .await
        .unwrap();
    assert_eq!(
        mp.body.collect().await.unwrap().into_bytes().as_ref(),
        part_data.as_slice()
    );
}

/// Every file under the data directory, recursively.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_copy_shares_its_source_blob_within_a_tenant() {
    let server = Server::start();
    let s3 = server.client();
    s3.create_bucket().bucket("shared").send().await.unwrap();
    let data = common::random_bytes(1_000_000, 7);
    s3.put_object()
        .bucket("shared")
        .key("source")
        .body(data.clone().into())
        .send()
        .await
        .unwrap();
    assert_eq!(blob_files(&server.data_dir).len(), 1);
    let copied = s3
        .copy_object()
        .bucket("shared")
        .key("copy")
        .copy_source("shared/source")
        .send()
        .await
        .unwrap();
    assert_eq!(
        blob_files(&server.data_dir).len(),
        1,
        "the copy shares the source's blob"
    );
    let head = s3
        .head_object()
        .bucket("shared")
        .key("source")
        .send()
        .await
        .unwrap();
    assert_eq!(
        copied.copy_object_result().unwrap().e_tag(),
        head.e_tag(),
        "same content, same ETag"
    );
    assert_eq!(common::get_bytes(&s3, "shared", "copy").await, data);
    let range = s3
        .get_object()
        .bucket("shared")
        .key("copy")
        .range("bytes=65530-700000")
        .send()
        .await
        .unwrap();
    assert_eq!(
        range.body.collect().await.unwrap().into_bytes().as_ref(),
        &data[65530..=700_000]
    );
    // The source goes, the copy stays readable; with the copy the blob goes.
    s3.delete_object()
        .bucket("shared")
        .key("source")
        .send()
        .await
        .unwrap();
    assert_eq!(common::get_bytes(&s3, "shared", "copy").await, data);
    assert_eq!(blob_files(&server.data_dir).len(), 1);
    s3.delete_object()
        .bucket("shared")
        .key("copy")
        .send()
        .await
        .unwrap();
    assert_eq!(blob_files(&server.data_dir).len(), 0);
}

#[tokio::test]
async fn user_metadata_of_an_upload_in_progress_is_sealed() {
    const META_MARKER: &str = "NUAGE-UPLOAD-META-MARKER";
    const TAG_MARKER: &str = "NUAGE-UPLOAD-TAG-MARKER";
    let server = Server::start();
    let s3 = server.client();
    s3.create_bucket().bucket("uploads").send().await.unwrap();
    let upload = s3
        .create_multipart_upload()
        .bucket("uploads")
        .key("mp")
        .metadata("note", META_MARKER)
        .tagging(format!("team={TAG_MARKER}"))
        .content_type("text/x-nuage-marker")
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    // While the upload is in progress, no file of the data directory holds
    // the metadata in the clear.
    for file in all_files(&server.data_dir) {
        let bytes = std::fs::read(&file).unwrap();
        for marker in [META_MARKER, TAG_MARKER, "text/x-nuage-marker"] {
            assert!(
                !contains(&bytes, marker.as_bytes()),
                "{} holds {marker}",
                file.display()
            );
        }
    }
    let part = s3
        .upload_part()
        .bucket("uploads")
        .key("mp")
        .upload_id(upload_id)
        .part_number(1)
        .body(b"last and only part".to_vec().into())
        .send()
        .await
        .unwrap();
    s3.complete_multipart_upload()
        .bucket("uploads")
        .key("mp")
        .upload_id(upload_id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .parts(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(1)
                        .e_tag(part.e_tag().unwrap())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Completion carries them over to the object.
    let head = s3
        .head_object()
        .bucket("uploads")
        .key("mp")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("note"))
            .map(String::as_str),
        Some(META_MARKER)
    );
    assert_eq!(head.content_type(), Some("text/x-nuage-marker"));
    let tags = s3
        .get_object_tagging()
        .bucket("uploads")
        .key("mp")
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tag_set()[0].value(), TAG_MARKER);
}

#[tokio::test]
async fn a_part_copied_from_a_whole_object_shares_its_blob() {
    let server = Server::start();
    let s3 = server.client();
    s3.create_bucket().bucket("parts").send().await.unwrap();
    let data = common::random_bytes(6 << 20, 9);
    s3.put_object()
        .bucket("parts")
        .key("source")
        .body(data.clone().into())
        .send()
        .await
        .unwrap();
    let upload = s3
        .create_multipart_upload()
        .bucket("parts")
        .key("assembled")
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    // Part 1: the whole object, shared. Part 2: a range, re-encrypted.
    let whole = s3
        .upload_part_copy()
        .bucket("parts")
        .key("assembled")
        .upload_id(upload_id)
        .part_number(1)
        .copy_source("parts/source")
        .send()
        .await
        .unwrap();
    assert_eq!(
        blob_files(&server.data_dir).len(),
        1,
        "the part shares the blob"
    );
    let ranged = s3
        .upload_part_copy()
        .bucket("parts")
        .key("assembled")
        .upload_id(upload_id)
        .part_number(2)
        .copy_source("parts/source")
        .copy_source_range("bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(blob_files(&server.data_dir).len(), 2);
    let etag = |r: &aws_sdk_s3::operation::upload_part_copy::UploadPartCopyOutput| {
        r.copy_part_result().unwrap().e_tag().unwrap().to_owned()
    };
    s3.complete_multipart_upload()
        .bucket("parts")
        .key("assembled")
        .upload_id(upload_id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .parts(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(1)
                        .e_tag(etag(&whole))
                        .build(),
                )
                .parts(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(2)
                        .e_tag(etag(&ranged))
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    s3.delete_object()
        .bucket("parts")
        .key("source")
        .send()
        .await
        .unwrap();
    let mut expected = data.clone();
    expected.extend_from_slice(&data[100..200]);
    assert!(common::get_bytes(&s3, "parts", "assembled").await == expected);
    assert_eq!(blob_files(&server.data_dir).len(), 2);

    // A CopyObject of the multipart object shares both blobs and is a
    // single-part object, as S3's copies are: MD5 ETag, one part.
    let flat = s3
        .copy_object()
        .bucket("parts")
        .key("flat")
        .copy_source("parts/assembled")
        .send()
        .await
        .unwrap();
    assert_eq!(blob_files(&server.data_dir).len(), 2);
    let md5 = format!("\"{:x}\"", <md5::Md5 as md5::Digest>::digest(&expected));
    assert_eq!(
        flat.copy_object_result().unwrap().e_tag(),
        Some(md5.as_str())
    );
    let part = s3
        .head_object()
        .bucket("parts")
        .key("flat")
        .part_number(1)
        .send()
        .await
        .unwrap();
    assert_eq!(part.content_length(), Some(expected.len() as i64));
    assert_eq!(part.parts_count(), None);
    assert!(common::get_bytes(&s3, "parts", "flat").await == expected);
    for key in ["assembled", "flat"] {
        s3.delete_object()
            .bucket("parts")
            .key(key)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(blob_files(&server.data_dir).len(), 0);
}
