//! The storage service: buckets, objects, versions, multipart uploads and
//! listings, with S3's semantics but none of its wire format.
//!
//! [`Storage`] takes a `&dyn MetaStore` and a `&dyn BlobStore` and cannot tell
//! which backends it got. It owns the rules: names and limits, versioning and
//! delete markers, conditional writes, digests (MD5 ETag and the S3 checksum
//! family), the order "blob durable, then metadata committed, then success", and
//! cleaning up blobs no record references.
//!
//! It must never import a protocol crate: the S3 front end maps
//! [`StorageError`] to wire codes in one place.

mod conditions;
pub mod digest;
mod error;
mod list;
mod multipart;
mod residency;
mod service;
mod sse;

pub use conditions::{Conditions, evaluate_read_conditions};
pub use digest::{ChecksumAlgorithm, DigestSet, Digests};
pub use error::{StorageError, StorageResult};
pub use list::{ListPage, ListQuery, VersionListPage, VersionListQuery};
pub use multipart::{CompletedPart, PartListing, UploadListing};
pub use nuage_meta::{
    BucketEncryption, BucketRecord, Checksums, ContentHeaders, CorsRule, PartRecord,
    PublicAccessBlock, UploadRecord, VersionRecord, Versioning, WriteCondition,
};
pub use residency::ResidencySource;
pub use service::{
    Admission, BucketAdmission, DeleteOutcome, ObjectAttributes, ObjectBody, Region, Requester,
    SharedCopy, Staged, Storage, StorageConfig,
};
pub use sse::{CustomerKey, Protection, canonical_context, context_pairs};
