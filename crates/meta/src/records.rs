//! The records the metadata store keeps. Serialized as JSON so that a human (or a
//! future version of Nuage) can read them; every field added later must default.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Versioning state of a bucket, as S3 defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Versioning {
    #[default]
    Unversioned,
    Enabled,
    Suspended,
}

/// One CORS rule, as S3's `CORSRule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CorsRule {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub allowed_methods: Vec<String>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub max_age_seconds: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    pub name: String,
    pub region: String,
    pub created_unix_ns: i64,
    #[serde(default)]
    pub versioning: Versioning,
    #[serde(default)]
    pub tags: Option<Vec<(String, String)>>,
    #[serde(default)]
    pub cors: Option<Vec<CorsRule>>,
    /// The tenant that owns the bucket (its twelve-digit id). Empty only in
    /// records written before tenancy existed; the binary assigns those to the
    /// default tenant at start.
    #[serde(default)]
    pub owner: String,
    /// The bucket policy, exactly as written (IAM policy JSON).
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub public_access_block: Option<PublicAccessBlock>,
    /// The bucket's default encryption (PutBucketEncryption), as put; None:
    /// the built-in default, SSE-S3 (`AES256`).
    #[serde(default)]
    pub encryption: Option<BucketEncryption>,
    /// The bucket's own residency policy (`nuage-placement`'s JSON form, as
    /// the admin API checked it); None: its tenant's applies.
    #[serde(default)]
    pub residency_policy: Option<String>,
}

/// A bucket's default encryption: what a write that asks for none gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BucketEncryption {
    /// `AES256` (SSE-S3) or `aws:kms` (SSE-KMS).
    pub sse_algorithm: String,
    /// For `aws:kms`: the bucket owner's KMS key, exactly as put (key id,
    /// key ARN, alias name or alias ARN); resolved at each write.
    #[serde(default)]
    pub kms_master_key_id: Option<String>,
    /// Stored and returned only: Nuage has no S3 Bucket Keys to enable.
    #[serde(default)]
    pub bucket_key_enabled: bool,
}

/// S3 Block Public Access settings (per bucket, and per tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PublicAccessBlock {
    #[serde(default)]
    pub block_public_acls: bool,
    #[serde(default)]
    pub ignore_public_acls: bool,
    #[serde(default)]
    pub block_public_policy: bool,
    #[serde(default)]
    pub restrict_public_buckets: bool,
}

/// Content checksums in S3's wire form (base64 of the big-endian digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Checksums {
    #[serde(default)]
    pub crc32: Option<String>,
    #[serde(default)]
    pub crc32c: Option<String>,
    #[serde(default)]
    pub crc64nvme: Option<String>,
    #[serde(default)]
    pub sha1: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    /// `FULL_OBJECT` or `COMPOSITE` (checksum of part checksums, suffixed `-N`).
    #[serde(default)]
    pub checksum_type: Option<String>,
}

impl Checksums {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.crc32.is_none()
            && self.crc32c.is_none()
            && self.crc64nvme.is_none()
            && self.sha1.is_none()
            && self.sha256.is_none()
    }
}

/// HTTP content headers stored with an object and returned on GET/HEAD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContentHeaders {
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub content_encoding: Option<String>,
    #[serde(default)]
    pub content_disposition: Option<String>,
    #[serde(default)]
    pub content_language: Option<String>,
    #[serde(default)]
    pub cache_control: Option<String>,
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub website_redirect_location: Option<String>,
}

/// What the chunks of a blob authenticate (their AES-GCM associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChunkBinding {
    /// The object's binding (tenant, bucket, key, blob, region): blobs
    /// written before blobs could be shared. Such a blob belongs to one
    /// object; a copy re-encrypts it.
    #[default]
    Object,
    /// The blob's own binding (tenant, blob, region): several objects of
    /// the tenant, in the region, may share the blob, each with its own
    /// wrapped copy of the data key (a server-side copy rewraps).
    Blob,
}

/// A stretch of object data stored as one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSegment {
    pub blob_id: String,
    pub size: u64,
    /// The part's ETag and checksums for multipart objects (for `partNumber` reads
    /// and GetObjectAttributes); None for single-part objects.
    #[serde(default)]
    pub part_etag: Option<String>,
    /// The blob's data key, wrapped by the owning tenant's key (base64). The
    /// blob then holds the `nuage-crypto` chunked AES-256-GCM format; None
    /// only for data written before encryption at rest existed.
    #[serde(default)]
    pub sealed_key: Option<String>,
    /// The ARN of the customer KMS key `sealed_key` is wrapped under (S3
    /// SSE-KMS); None: wrapped under the tenant key (SSE-S3).
    #[serde(default)]
    pub kms_key_arn: Option<String>,
    /// SSE-KMS: the encryption context bound into `sealed_key`'s wrapping,
    /// as canonical JSON (keys sorted). None for SSE-KMS data written before
    /// contexts were bound (wrapped under the blob's binding alone).
    #[serde(default)]
    pub kms_context: Option<String>,
    /// S3 SSE-C: `sealed_key` is wrapped under the customer-provided key,
    /// which Nuage never stores; a read must present it again.
    #[serde(default)]
    pub sse_c: bool,
    /// What the blob's chunks authenticate. Absent in records written
    /// before blobs could be shared, which read back as `Object`.
    #[serde(default)]
    pub chunk_binding: ChunkBinding,
}

/// One version of an object, or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub bucket: String,
    pub key: String,
    pub version_id: String,
    /// Orders versions of one key; larger is newer. Assigned by the store.
    pub seq: u64,
    pub delete_marker: bool,
    pub last_modified_unix_ns: i64,
    pub size: u64,
    /// Hex MD5 for simple objects, `hex(md5(md5s))-N` for multipart; no quotes.
    pub etag: String,
    #[serde(default)]
    pub content: ContentHeaders,
    #[serde(default)]
    pub user_metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub checksums: Checksums,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// The data, in order. Empty for delete markers and empty objects.
    #[serde(default)]
    pub segments: Vec<DataSegment>,
    /// User metadata and checksum values, encrypted (`WRAPPED_KEY.CIPHERTEXT`,
    /// base64). While set, `user_metadata` is empty and each present checksum
    /// holds an empty placeholder (so listings can name the algorithms).
    #[serde(default)]
    pub sealed_attributes: Option<String>,
}

/// A condition a write must meet, checked inside its transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WriteCondition {
    #[default]
    None,
    /// `If-None-Match: *`: fail if the key has a current (non-delete-marker) version.
    IfNoneMatchAny,
    /// `If-Match: etag`: fail unless the current version has this ETag.
    IfMatch(String),
}

/// A request to write a version.
#[derive(Debug, Clone)]
pub struct PutVersion {
    pub record: VersionRecord,
    /// Write as the `null` version (versioning off or suspended): the existing
    /// `null` version, if any, is replaced and its blobs freed.
    pub null_version: bool,
    pub condition: WriteCondition,
    /// Blobs the record shares with others (a server-side copy's): each
    /// must still be referenced when the transaction runs, or the write
    /// fails with [`crate::MetaError::SharedBlobGone`]. Without this check
    /// a copy committing after its source's last reference went would name
    /// a deleted blob.
    pub shared_blobs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PutVersionOutcome {
    pub record: VersionRecord,
    pub freed_blobs: Vec<String>,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    pub initiated_unix_ns: i64,
    #[serde(default)]
    pub content: ContentHeaders,
    #[serde(default)]
    pub user_metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// The checksum algorithm the client announced (`CRC32`, `SHA256`, ...).
    #[serde(default)]
    pub checksum_algorithm: Option<String>,
    #[serde(default)]
    pub checksum_type: Option<String>,
    /// The customer KMS key (ARN) chosen at creation for SSE-KMS: every
    /// part's data key is wrapped under it. None: SSE-S3.
    #[serde(default)]
    pub kms_key_arn: Option<String>,
    /// SSE-KMS: the encryption context chosen at creation (canonical JSON).
    #[serde(default)]
    pub kms_context: Option<String>,
    /// SSE-C: a random 32-byte value wrapped under the customer-provided key
    /// given at creation, bound to the upload (base64). Every UploadPart
    /// must present a key that unwraps it: the key itself, or any hash of
    /// it, is never stored.
    #[serde(default)]
    pub sse_c_key_check: Option<String>,
    /// User metadata, tags and content headers, encrypted under the tenant
    /// key bound to the upload (`WRAPPED_KEY.CIPHERTEXT`, base64). While
    /// set, `user_metadata`, `tags` and `content` are empty. None in uploads
    /// created before these were sealed, which read back as stored.
    #[serde(default)]
    pub sealed_attributes: Option<String>,
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub part_number: u32,
    pub blob_id: String,
    pub size: u64,
    /// Hex MD5 of the part, no quotes.
    pub etag: String,
    pub last_modified_unix_ns: i64,
    #[serde(default)]
    pub checksums: Checksums,
    /// The part blob's wrapped data key (see [`DataSegment::sealed_key`]).
    #[serde(default)]
    pub sealed_key: Option<String>,
    /// See [`DataSegment::kms_key_arn`].
    #[serde(default)]
    pub kms_key_arn: Option<String>,
    /// See [`DataSegment::kms_context`].
    #[serde(default)]
    pub kms_context: Option<String>,
    /// See [`DataSegment::sse_c`].
    #[serde(default)]
    pub sse_c: bool,
    /// See [`DataSegment::chunk_binding`].
    #[serde(default)]
    pub chunk_binding: ChunkBinding,
}

/// The common prefix `key` rolls up into in a listing of `prefix` with
/// `delimiter`: `prefix`, then the rest of the key up to and including the
/// first `delimiter`; None when the key does not start with `prefix`, the
/// rest holds no delimiter, or the delimiter is empty.
#[must_use]
pub fn common_prefix<'k>(key: &'k str, prefix: &str, delimiter: &str) -> Option<&'k str> {
    if delimiter.is_empty() || !key.starts_with(prefix) {
        return None;
    }
    let rest = key.get(prefix.len()..)?;
    rest.find(delimiter)
        .map(|i| &key[..prefix.len() + i + delimiter.len()])
}

/// The scan position just past every key that starts with `prefix` (keys are
/// UTF-8, which never contains the byte 0xFF).
#[must_use]
pub fn past_prefix(prefix: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 1);
    out.extend_from_slice(prefix.as_bytes());
    out.push(0xFF);
    out
}
