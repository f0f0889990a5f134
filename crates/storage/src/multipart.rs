//! Multipart uploads: create, upload parts (or copy them), list, complete, abort.
//!
//! Parts are blobs of their own; completing an upload writes one version whose
//! segments are the chosen parts' blobs, so no byte is copied. The ETag is
//! S3's: hex MD5 of the concatenated binary part MD5s, then `-N`.

use crate::digest::ChecksumAlgorithm;
use crate::service::{ObjectAttributes, Staged};
use crate::sse::{CustomerKey, Protection};
use crate::{Storage, StorageError, StorageResult, VersionRecord};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::Digest as _;
use nuage_base::{ids, limits};
use nuage_meta::{
    Checksums, DataSegment, PartRecord, PutVersion, UploadRecord, Versioning, WriteCondition,
};

/// A part named in CompleteMultipartUpload.
#[derive(Debug, Clone, Default)]
pub struct CompletedPart {
    pub part_number: u32,
    /// Unquoted.
    pub etag: String,
    pub checksums: Checksums,
}

#[derive(Debug, Clone, Default)]
pub struct PartListing {
    pub parts: Vec<PartRecord>,
    pub truncated: bool,
    pub next_part_number_marker: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct UploadListing {
    pub uploads: Vec<UploadRecord>,
    pub truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
}

/// What an upload in progress keeps sealed until it completes: the
/// attributes the completed object will carry.
#[derive(serde::Serialize, serde::Deserialize)]
struct UploadAttributes {
    content: nuage_meta::ContentHeaders,
    user_metadata: std::collections::BTreeMap<String, String>,
    tags: Vec<(String, String)>,
}

fn check_part_number(part_number: i32) -> StorageResult<u32> {
    u32::try_from(part_number)
        .ok()
        .filter(|n| (1..=limits::MULTIPART_PARTS_MAX).contains(n))
        .ok_or_else(|| {
            StorageError::InvalidArgument(format!(
                "part number must be an integer between 1 and {}, inclusive",
                limits::MULTIPART_PARTS_MAX
            ))
        })
}

impl Storage {
    /// Starts an upload whose parts will be protected as `protection` says.
    /// For SSE-C, the upload keeps a *key check* (a random value wrapped
    /// under the customer key, bound to the upload) so that each part can
    /// prove it comes with the same key, without the key being stored.
    ///
    /// # Errors
    /// `NoSuchBucket`, invalid key or attributes, unknown checksum algorithm.
    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        attributes: ObjectAttributes,
        checksum_algorithm: Option<ChecksumAlgorithm>,
        checksum_type: Option<String>,
        protection: Protection<'_>,
    ) -> StorageResult<UploadRecord> {
        Self::validate_key(key)?;
        Self::validate_attributes(&attributes)?;
        let bucket_record = self.bucket(bucket).await?;
        let upload_id = ids::random_id();
        let (kms_key_arn, kms_context, sse_c_key_check) = match protection {
            Protection::Tenant => (None, None, None),
            Protection::Kms { arn, context } => {
                (Some(arn.to_owned()), context.map(str::to_owned), None)
            }
            Protection::Customer(customer) => {
                let check = nuage_crypto::DataKey::generate()?;
                let wrapped = nuage_crypto::wrap_data_key(
                    customer.kek(),
                    &check,
                    &Self::upload_check_binding(&bucket_record, key, &upload_id),
                )?;
                (None, None, Some(STANDARD.encode(wrapped)))
            }
        };
        // The attributes are sealed as a completed object's user metadata
        // is: the metadata store never holds them in the clear, even while
        // the upload is in progress.
        let sealed_attributes = if attributes.user_metadata.is_empty()
            && attributes.tags.is_empty()
            && attributes.content == nuage_meta::ContentHeaders::default()
        {
            None
        } else {
            let plaintext = serde_json::to_vec(&UploadAttributes {
                content: attributes.content,
                user_metadata: attributes.user_metadata,
                tags: attributes.tags,
            })
            .map_err(|e| StorageError::Internal(e.to_string()))?;
            let binding = Self::upload_attributes_binding(&bucket_record, key, &upload_id);
            Some(self.seal_value(&bucket_record, &binding, plaintext).await?)
        };
        let record = UploadRecord {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id,
            initiated_unix_ns: self.now_ns(),
            content: nuage_meta::ContentHeaders::default(),
            user_metadata: std::collections::BTreeMap::new(),
            tags: Vec::new(),
            checksum_algorithm: checksum_algorithm.map(|a| a.name().to_owned()),
            checksum_type,
            kms_key_arn,
            kms_context,
            sse_c_key_check,
            sealed_attributes,
        };
        self.meta.create_upload(record.clone()).await?;
        Ok(record)
    }

    /// What an upload's sealed attributes are bound to: the upload, in a
    /// blob field no blob id (hex) can take.
    fn upload_attributes_binding(
        bucket: &nuage_meta::BucketRecord,
        key: &str,
        upload_id: &str,
    ) -> Vec<u8> {
        nuage_crypto::Binding {
            tenant: &bucket.owner,
            bucket: &bucket.name,
            key,
            blob: &format!("upload/{upload_id}/attributes"),
            region: &bucket.region,
        }
        .encode()
    }

    /// Decrypts an upload's sealed attributes into its record (uploads
    /// created before they were sealed are returned as stored).
    ///
    /// # Errors
    /// `Corrupt` when they do not open; the tenant's key access
    /// justifications refusing.
    pub async fn open_upload_attributes(&self, upload: &mut UploadRecord) -> StorageResult<()> {
        let Some(sealed) = upload.sealed_attributes.as_deref() else {
            return Ok(());
        };
        let bucket = self.bucket(&upload.bucket).await?;
        let binding = Self::upload_attributes_binding(&bucket, &upload.key, &upload.upload_id);
        let corrupt = |what: &str| {
            StorageError::Corrupt(format!(
                "sealed attributes of upload {}: {what}",
                upload.upload_id
            ))
        };
        let plaintext = self
            .open_value(&bucket, &binding, sealed)
            .await
            .map_err(|e| match e {
                StorageError::Corrupt(message) => corrupt(&message),
                refused => refused,
            })?;
        let attributes: UploadAttributes =
            serde_json::from_slice(&plaintext).map_err(|e| corrupt(&e.to_string()))?;
        upload.content = attributes.content;
        upload.user_metadata = attributes.user_metadata;
        upload.tags = attributes.tags;
        Ok(())
    }

    /// What an upload's SSE-C key check is bound to: the upload, in a blob
    /// field no blob id can take.
    fn upload_check_binding(
        bucket: &nuage_meta::BucketRecord,
        key: &str,
        upload_id: &str,
    ) -> Vec<u8> {
        let mut binding = nuage_crypto::Binding {
            tenant: &bucket.owner,
            bucket: &bucket.name,
            key,
            blob: &format!("upload/{upload_id}"),
            region: &bucket.region,
        }
        .encode();
        binding.extend_from_slice(b"sse-c-key-check");
        binding
    }

    /// Checks the SSE-C key an UploadPart or UploadPartCopy presents
    /// against the upload's key check: required (and the same key) for an
    /// upload created with SSE-C, refused for any other.
    ///
    /// # Errors
    /// `InvalidRequest` when missing, not applicable or not the same key.
    pub async fn check_upload_key(
        &self,
        upload: &UploadRecord,
        customer: Option<&CustomerKey>,
    ) -> StorageResult<()> {
        match (&upload.sse_c_key_check, customer) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(StorageError::InvalidRequest(
                "The multipart upload initiate did not request encryption with a customer-provided key; the encryption parameters are not applicable to its parts.".into(),
            )),
            (Some(_), None) => Err(StorageError::InvalidRequest(
                "The multipart upload initiate requested encryption. Subsequent part requests must include the appropriate encryption parameters.".into(),
            )),
            (Some(check), Some(customer)) => {
                let bucket = self.bucket(&upload.bucket).await?;
                let wrapped = STANDARD.decode(check).map_err(|_| {
                    StorageError::Corrupt(format!("key check of upload {}", upload.upload_id))
                })?;
                nuage_crypto::unwrap_data_key(
                    customer.kek(),
                    &wrapped,
                    &Self::upload_check_binding(&bucket, &upload.key, &upload.upload_id),
                )
                .map(drop)
                .map_err(|_| {
                    StorageError::InvalidRequest(
                        "The provided encryption parameters did not match the ones used originally.".into(),
                    )
                })
            }
        }
    }

    /// The upload, which must exist for this bucket and key.
    ///
    /// # Errors
    /// `NoSuchBucket`, `NoSuchUpload`.
    pub async fn upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> StorageResult<UploadRecord> {
        self.bucket(bucket).await?;
        self.meta
            .get_upload(bucket, key, upload_id)
            .await?
            .ok_or(StorageError::NoSuchUpload)
    }

    /// Records a staged part.
    ///
    /// # Errors
    /// `NoSuchUpload`, bad part number.
    pub async fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: i32,
        staged: Staged,
        checksums: Checksums,
    ) -> StorageResult<PartRecord> {
        let checked = check_part_number(part_number).and_then(|n| {
            if staged.bucket == bucket && staged.key == key {
                Ok(n)
            } else {
                Err(StorageError::Internal(format!(
                    "data staged for {}/{} cannot become a part of {bucket}/{key}",
                    staged.bucket, staged.key
                )))
            }
        });
        let number = match checked {
            Ok(n) => n,
            Err(e) => {
                self.discard(staged).await;
                return Err(e);
            }
        };
        let part = PartRecord {
            part_number: number,
            blob_id: staged.blob_id.clone(),
            size: staged.size,
            etag: staged.digests.md5_hex(),
            last_modified_unix_ns: self.now_ns(),
            checksums,
            sealed_key: staged.sealed_key.clone(),
            kms_key_arn: staged.kms_key_arn.clone(),
            kms_context: staged.kms_context.clone(),
            sse_c: staged.sse_c,
            // Parts are staged like objects: chunks bound to the blob.
            chunk_binding: nuage_meta::ChunkBinding::Blob,
        };
        match self
            .meta
            .put_part(bucket, key, upload_id, part.clone(), false)
            .await
        {
            Ok(freed) => {
                self.free_blobs(freed).await;
                Ok(part)
            }
            Err(e) => {
                self.discard(staged).await;
                Err(e.into())
            }
        }
    }

    /// Records a part that shares the blob of a whole single-part object
    /// ([`Storage::share_copy`] of an UploadPartCopy's source, prepared for
    /// this upload's key and protection), with the source's ETag and the
    /// `checksums` the caller chose. Fails with `NoSuchKey` if the blob lost
    /// its last reference since (its source deleted meanwhile), atomically.
    ///
    /// # Errors
    /// `NoSuchUpload`, `NoSuchKey`, bad part number, a copy that is not one
    /// whole segment.
    pub async fn put_shared_part(
        &self,
        upload_id: &str,
        part_number: i32,
        copy: crate::SharedCopy,
        checksums: Checksums,
    ) -> StorageResult<PartRecord> {
        let number = check_part_number(part_number)?;
        let [segment] = <[DataSegment; 1]>::try_from(copy.segments)
            .map_err(|_| StorageError::Internal("a shared part is exactly one segment".into()))?;
        let part = PartRecord {
            part_number: number,
            blob_id: segment.blob_id,
            size: segment.size,
            etag: copy.etag,
            last_modified_unix_ns: self.now_ns(),
            checksums,
            sealed_key: segment.sealed_key,
            kms_key_arn: segment.kms_key_arn,
            kms_context: segment.kms_context,
            sse_c: segment.sse_c,
            chunk_binding: segment.chunk_binding,
        };
        let freed = self
            .meta
            .put_part(&copy.bucket, &copy.key, upload_id, part.clone(), true)
            .await?;
        self.free_blobs(freed).await;
        Ok(part)
    }

    /// Checks a part number before its body is read.
    ///
    /// # Errors
    /// `InvalidArgument`.
    pub fn validate_part_number(part_number: i32) -> StorageResult<()> {
        check_part_number(part_number).map(drop)
    }

    /// # Errors
    /// `NoSuchUpload`.
    pub async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        after: u32,
        max_parts: usize,
    ) -> StorageResult<PartListing> {
        self.upload(bucket, key, upload_id).await?;
        let max_parts = max_parts.min(limits::LIST_PARTS_MAX);
        let mut parts = self
            .meta
            .list_parts(upload_id, after, max_parts + 1)
            .await?;
        let truncated = parts.len() > max_parts;
        parts.truncate(max_parts);
        let next = if truncated {
            parts.last().map(|p| p.part_number)
        } else {
            None
        };
        Ok(PartListing {
            parts,
            truncated,
            next_part_number_marker: next,
        })
    }

    /// # Errors
    /// `NoSuchBucket`.
    pub async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: Option<&str>,
        upload_id_marker: Option<&str>,
        max_uploads: usize,
    ) -> StorageResult<UploadListing> {
        self.bucket(bucket).await?;
        let max_uploads = max_uploads.min(limits::LIST_UPLOADS_MAX);
        let after = key_marker.map(|k| (k, upload_id_marker.unwrap_or("\u{10FFFF}")));
        let mut uploads = self
            .meta
            .list_uploads(bucket, prefix, after, max_uploads + 1)
            .await?;
        let truncated = uploads.len() > max_uploads;
        uploads.truncate(max_uploads);
        let last = uploads.last().filter(|_| truncated);
        Ok(UploadListing {
            next_key_marker: last.map(|u| u.key.clone()),
            next_upload_id_marker: last.map(|u| u.upload_id.clone()),
            uploads,
            truncated,
        })
    }

    /// # Errors
    /// `NoSuchBucket`, `NoSuchUpload`.
    pub async fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> StorageResult<()> {
        self.bucket(bucket).await?;
        let freed = self.meta.abort_upload(bucket, key, upload_id).await?;
        self.free_blobs(freed).await;
        Ok(())
    }

    /// Completes an upload with the given parts.
    ///
    /// # Errors
    /// `NoSuchUpload`, `InvalidPart`, `InvalidPartOrder`, `EntityTooSmall`,
    /// `PreconditionFailed`, `BadDigest`.
    pub async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        requested: &[CompletedPart],
        condition: WriteCondition,
        expected_checksums: &Checksums,
    ) -> StorageResult<VersionRecord> {
        let bucket_record = self.bucket(bucket).await?;
        let mut upload = self
            .meta
            .get_upload(bucket, key, upload_id)
            .await?
            .ok_or(StorageError::NoSuchUpload)?;
        self.open_upload_attributes(&mut upload).await?;
        if requested.is_empty() {
            return Err(StorageError::InvalidArgument(
                "you must specify at least one part".into(),
            ));
        }
        if requested
            .windows(2)
            .any(|w| w[0].part_number >= w[1].part_number)
        {
            return Err(StorageError::InvalidPartOrder);
        }
        // Parts are at most 10,000; listing them in pages keeps each read bounded.
        let mut stored = std::collections::BTreeMap::new();
        let mut after = 0u32;
        loop {
            let page = self
                .meta
                .list_parts(upload_id, after, limits::LIST_PARTS_MAX)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.part_number;
            for part in page {
                stored.insert(part.part_number, part);
            }
        }
        let algorithm = upload
            .checksum_algorithm
            .as_deref()
            .and_then(ChecksumAlgorithm::parse);
        let mut md5s = md5::Md5::new();
        let mut composite = Vec::new();
        let mut segments = Vec::with_capacity(requested.len());
        let mut size = 0u64;
        for (i, want) in requested.iter().enumerate() {
            let part = stored.get(&want.part_number).ok_or_else(|| {
                StorageError::InvalidPart(format!("part {} was not uploaded", want.part_number))
            })?;
            if part.etag != want.etag.trim_matches('"') {
                return Err(StorageError::InvalidPart(format!(
                    "the ETag of part {} does not match",
                    want.part_number
                )));
            }
            for a in ChecksumAlgorithm::ALL {
                if let Some(value) = a.get(&want.checksums)
                    && a.get(&part.checksums) != Some(value)
                {
                    return Err(StorageError::InvalidPart(format!(
                        "the {} checksum of part {} does not match",
                        a.name(),
                        want.part_number
                    )));
                }
            }
            if i + 1 < requested.len() && part.size < limits::PART_SIZE_BYTES_MIN {
                return Err(StorageError::EntityTooSmall(format!(
                    "part {} is {} bytes; every part but the last must be at least {} bytes",
                    part.part_number,
                    part.size,
                    limits::PART_SIZE_BYTES_MIN
                )));
            }
            let raw = hex::decode(&part.etag).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            md5s.update(&raw);
            if let Some(a) = algorithm {
                let value = a.get(&part.checksums).and_then(|v| STANDARD.decode(v).ok());
                match value {
                    Some(bytes) => composite.extend_from_slice(&bytes),
                    None => {
                        return Err(StorageError::InvalidPart(format!(
                            "part {} was uploaded without the upload's {} checksum",
                            part.part_number,
                            a.name()
                        )));
                    }
                }
            }
            size += part.size;
            segments.push(DataSegment {
                blob_id: part.blob_id.clone(),
                size: part.size,
                part_etag: Some(part.etag.clone()),
                sealed_key: part.sealed_key.clone(),
                kms_key_arn: part.kms_key_arn.clone(),
                kms_context: part.kms_context.clone(),
                sse_c: part.sse_c,
                chunk_binding: part.chunk_binding,
            });
        }
        if size > limits::OBJECT_SIZE_BYTES_MAX {
            return Err(StorageError::EntityTooLarge(
                "the object exceeds 5 TiB".into(),
            ));
        }
        let count = requested.len();
        let mut checksums = Checksums::default();
        if let Some(a) = algorithm {
            let value = format!("{}-{count}", STANDARD.encode(a.digest_raw(&composite)));
            if let Some(expected) = a.get(expected_checksums)
                && expected != &value
            {
                return Err(StorageError::BadDigest(format!(
                    "the {} of the whole upload did not match",
                    a.name()
                )));
            }
            a.set(&mut checksums, Some(value));
            checksums.checksum_type = Some("COMPOSITE".into());
        }
        let record = VersionRecord {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            version_id: String::new(),
            seq: 0,
            delete_marker: false,
            last_modified_unix_ns: self.now_ns(),
            size,
            etag: format!("{}-{count}", hex::encode(md5s.finalize())),
            content: upload.content,
            user_metadata: upload.user_metadata,
            checksums,
            tags: upload.tags,
            segments,
            sealed_attributes: None,
        };
        let mut sealed = record.clone();
        self.seal_attributes(&bucket_record, &mut sealed).await?;
        let put = PutVersion {
            record: sealed,
            null_version: bucket_record.versioning != Versioning::Enabled,
            condition,
            shared_blobs: Vec::new(),
        };
        let outcome = self.meta.complete_upload(upload_id, put).await?;
        self.free_blobs(outcome.freed_blobs).await;
        Ok(Self::with_identity_of(record, outcome.record))
    }
}
