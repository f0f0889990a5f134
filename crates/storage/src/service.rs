//! [`Storage`]: buckets and objects over a metadata store and a blob store.
//!
//! The write order is the durability invariant: object bytes go to a new blob
//! that is fsynced ([`Storage::stage`]); only then is the metadata record that
//! makes it visible committed (fsynced too); only then does the caller answer.
//! A crash before the commit leaves an unreferenced blob, removed by
//! [`Storage::collect_orphans`] at the next start.

use crate::digest::{ChecksumAlgorithm, DigestSet, Digests};
use crate::sse::{CustomerKey, Protection, customer_wrap_binding, kms_wrap_binding};
use crate::{StorageError, StorageResult};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::future::Either;
use futures::{Stream, StreamExt, TryStreamExt};
use nuage_base::{Clock, ids, limits, names};
use nuage_blob::BlobStore;
use nuage_kms::{AccessReason, CustomerKeys, KeyService};
use nuage_meta::{
    BucketRecord, Checksums, ChunkBinding, ContentHeaders, CorsRule, DataSegment, MetaStore,
    PutVersion, VersionRecord, Versioning, WriteCondition,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A region buckets can be created in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    /// ISO 3166-1 alpha-2 country the region's data stays in.
    pub country: String,
}

/// Whether a tenant may create a bucket in a region: the binary's residency
/// check (the tenant's residency policy against the region's sites,
/// `docs/residency.md`), which the storage service knows nothing of.
pub trait BucketAdmission: Send + Sync {
    /// Decides for `tenant` (its id) and `region` (already resolved from the
    /// location constraint).
    ///
    /// # Errors
    /// The decision could not be made (the identity service failed): the
    /// message is logged, the client gets an internal error.
    fn admit<'a>(
        &'a self,
        tenant: &'a str,
        region: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Admission, String>>;
}

/// A [`BucketAdmission`] decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Refused, with the reason the client is told (the rule that cannot be met).
    Refused(String),
}

/// What the storage service needs to know about the deployment.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The regions; the first is the default.
    pub regions: Vec<Region>,
    /// Region names accepted as aliases of the default region (`us-east-1`,
    /// which clients sign with when nobody told them better).
    pub default_region_aliases: Vec<String>,
}

/// The attributes a writer sets on an object.
#[derive(Debug, Clone, Default)]
pub struct ObjectAttributes {
    pub content: ContentHeaders,
    pub user_metadata: BTreeMap<String, String>,
    pub tags: Vec<(String, String)>,
}

/// Bytes written to a durable blob but not yet visible.
#[derive(Debug)]
pub struct Staged {
    pub blob_id: String,
    /// Plaintext bytes.
    pub size: u64,
    pub digests: Digests,
    /// The object the blob's encryption is bound to: it may only become
    /// data of this bucket and key.
    pub bucket: String,
    pub key: String,
    /// The blob's data key, wrapped (base64).
    pub sealed_key: Option<String>,
    /// The customer KMS key the data key is wrapped under (SSE-KMS); None:
    /// the bucket owner's tenant key (SSE-S3).
    pub kms_key_arn: Option<String>,
    /// SSE-KMS: the encryption context bound into the wrapping (canonical JSON).
    pub kms_context: Option<String>,
    /// SSE-C: the data key is wrapped under the customer-provided key.
    pub sse_c: bool,
    /// The storage nodes the blob was placed on, when the blob store
    /// places blobs on nodes (for the request's audit entry); None on a
    /// single node.
    pub placement: Option<Vec<nuage_blob::ReplicaPlace>>,
}

/// A server-side copy that shares its source's blobs, prepared by
/// [`Storage::share_copy`]: the data keys are wrapped for the destination,
/// nothing is visible until [`Storage::put_copy`]. Dropping it leaves
/// nothing behind (no blob was written).
#[derive(Debug)]
pub struct SharedCopy {
    pub bucket: String,
    pub key: String,
    /// Plaintext bytes, as the source's.
    pub size: u64,
    /// The source's ETag (the content is the same); a copy of a multipart
    /// object, which is a single-part object, needs the content's MD5
    /// instead (computed by the caller, which reads it).
    pub etag: String,
    pub(crate) segments: Vec<DataSegment>,
}

/// The result of a DeleteObject.
#[derive(Debug, Clone, Default)]
pub struct DeleteOutcome {
    pub version_id: Option<String>,
    pub delete_marker: bool,
}

/// A streaming object body.
pub type ObjectBody =
    std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync>>;

/// What [`Storage::seal_attributes`] encrypts.
#[derive(serde::Serialize, serde::Deserialize)]
struct SealedAttributes {
    user_metadata: BTreeMap<String, String>,
    checksums: Checksums,
}

/// One segment's part of a read: which blob bytes, and how to open them.
struct Piece {
    blob_id: String,
    from: u64,
    len: u64,
    sealing: Option<(nuage_crypto::DataKey, Vec<u8>, nuage_crypto::ChunkSpan)>,
}

/// A read of SSE-C data without its key, in S3's words.
fn customer_key_required() -> StorageError {
    StorageError::InvalidRequest(
        "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.".into(),
    )
}

/// Why reading a segment failed (blob store or cipher), for the body stream.
#[derive(Debug)]
struct ReadFailure(String);

impl From<nuage_blob::BlobError> for ReadFailure {
    fn from(e: nuage_blob::BlobError) -> Self {
        Self(e.to_string())
    }
}

/// Why reading `len` bytes at `offset` of an encrypted blob failed: the
/// blob store's CRC32C check over the same range, when it finds corruption
/// on disk, else `failure` (tampering, a wrong key, I/O). Runs only after a
/// failure, so re-reading the range (streamed, memory bounded) costs nothing
/// on the path that succeeds.
async fn diagnose(
    blobs: &dyn BlobStore,
    blob_id: &str,
    offset: u64,
    len: u64,
    failure: ReadFailure,
) -> String {
    let mut verified = blobs.read(blob_id, offset, len);
    while let Some(block) = verified.next().await {
        if let Err(e @ nuage_blob::BlobError::Corrupt { .. }) = block {
            let found = e.to_string();
            return if found == failure.0 {
                found
            } else {
                format!("{found} ({})", failure.0)
            };
        }
        if block.is_err() {
            break;
        }
    }
    failure.0
}

impl From<nuage_crypto::CryptoError> for ReadFailure {
    fn from(e: nuage_crypto::CryptoError) -> Self {
        Self(e.to_string())
    }
}

/// Who a request comes from, as the key service is told when it wraps or
/// unwraps a data key under a customer KMS key on their behalf (an
/// external key store's proxy logs and may decide on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// The caller's ARN (user, role session, tenant root), or `anonymous`.
    pub principal_arn: String,
    /// The request id the client is answered with (`x-amz-request-id`).
    pub request_id: String,
    /// Why this request unwraps data keys (key access justifications): a
    /// tenant's own request is `CustomerInitiatedAccess`; the operator acting
    /// under a tenant's approval names the approval's reason, which the
    /// tenant's allowed reasons and its external key store then judge.
    pub access_reason: AccessReason,
}

impl Requester {
    /// What [`Self::principal_arn`] says for an unsigned request.
    pub const ANONYMOUS: &'static str = "anonymous";
}

/// The storage service.
#[derive(Clone)]
pub struct Storage {
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) keys: KeyService,
    /// Customer KMS keys, for objects stored under S3 SSE-KMS.
    pub(crate) customer_keys: CustomerKeys,
    config: Arc<StorageConfig>,
    /// The request this handle serves (see [`Self::on_behalf_of`]); None
    /// for work of Nuage's own (tests, housekeeping).
    requester: Option<Arc<Requester>>,
    /// Asked before a bucket is created (residency); None: every region is
    /// open to every tenant.
    admission: Option<Arc<dyn BucketAdmission>>,
    /// Where tenants' residency policies are read (see `residency.rs`);
    /// None: only a bucket's own policy places its blobs.
    pub(crate) residency: Option<Arc<dyn crate::ResidencySource>>,
}

impl Storage {
    #[must_use]
    pub fn new(
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        clock: Arc<dyn Clock>,
        keys: KeyService,
        config: StorageConfig,
    ) -> Self {
        let region = config
            .regions
            .first()
            .map_or_else(|| "fr-par".to_owned(), |r| r.name.clone());
        let customer_keys = CustomerKeys::new(keys.clone(), Arc::clone(&clock), region);
        Self {
            meta,
            blobs,
            clock,
            keys,
            customer_keys,
            config: Arc::new(config),
            requester: None,
            admission: None,
            residency: None,
        }
    }

    /// Asks `admission` before creating any bucket (residency policies).
    #[must_use]
    pub fn with_bucket_admission(mut self, admission: Arc<dyn BucketAdmission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// A handle on the same service for one request: uses of customer KMS
    /// keys name `requester` to the key service. Cheap (shared state only),
    /// so a front end makes one per request rather than passing the
    /// requester through every method.
    #[must_use]
    pub fn on_behalf_of(&self, requester: Requester) -> Self {
        let mut handle = self.clone();
        handle.requester = Some(Arc::new(requester));
        handle
    }

    /// Why this handle unwraps data keys: its requester's reason, or
    /// `CustomerInitiatedAccess` for work done for the tenant itself.
    fn access_reason(&self) -> AccessReason {
        self.requester
            .as_ref()
            .map_or(AccessReason::CustomerInitiatedAccess, |r| r.access_reason)
    }

    /// Whom the key service is told a use of `bucket`'s customer keys is
    /// for: the requester, or the bucket owner's root for Nuage's own work.
    fn key_caller(&self, bucket: &BucketRecord) -> nuage_kms::KeyCaller {
        match &self.requester {
            Some(r) => nuage_kms::KeyCaller::via("s3", &r.principal_arn, &r.request_id),
            None => {
                nuage_kms::KeyCaller::via("s3", format!("arn:aws:iam::{}:root", bucket.owner), "")
            }
        }
    }

    /// Shares `customer_keys` (the KMS API's) rather than the instance
    /// [`Self::new`] made over the same key service and region.
    #[must_use]
    pub fn with_customer_keys(mut self, customer_keys: CustomerKeys) -> Self {
        self.customer_keys = customer_keys;
        self
    }

    /// The customer KMS keys objects may be stored under (S3 SSE-KMS).
    #[must_use]
    pub fn customer_keys(&self) -> &CustomerKeys {
        &self.customer_keys
    }

    #[must_use]
    pub fn default_region(&self) -> &str {
        self.config
            .regions
            .first()
            .map_or("fr-par", |r| r.name.as_str())
    }

    /// Whether clients may sign requests for `region`: a configured region,
    /// or an alias of the default one.
    #[must_use]
    pub fn accepts_signing_region(&self, region: &str) -> bool {
        self.config.regions.iter().any(|r| r.name == region)
            || self
                .config
                .default_region_aliases
                .iter()
                .any(|a| a == region)
    }

    pub(crate) fn now_ns(&self) -> i64 {
        self.clock.now_unix_ns()
    }

    /// Deletes blobs a committed transaction freed. A failure only leaks space
    /// until the next orphan collection, so it is logged, not returned.
    pub(crate) async fn free_blobs(&self, blobs: Vec<String>) {
        for blob in blobs {
            if let Err(e) = self.blobs.delete(&blob).await {
                tracing::warn!(blob, error = %e, "could not delete freed blob; the orphan collector will retry");
            }
        }
    }

    // ---- buckets ----

    /// Creates a bucket owned by tenant `owner` in `location` (the default
    /// region when None). Bucket names are global, as in S3.
    ///
    /// # Errors
    /// Invalid name, unknown region, or the name is taken (by this owner or another).
    pub async fn create_bucket(
        &self,
        name: &str,
        location: Option<&str>,
        owner: &str,
    ) -> StorageResult<BucketRecord> {
        names::validate_bucket_name(name).map_err(|e| StorageError::InvalidBucketName(e.0))?;
        let region = match location.filter(|l| !l.is_empty()) {
            None => self.default_region().to_owned(),
            Some(l) if self.config.default_region_aliases.iter().any(|a| a == l) => {
                self.default_region().to_owned()
            }
            Some(l) => {
                if !self.config.regions.iter().any(|r| r.name == l) {
                    let known: Vec<&str> = self
                        .config
                        .regions
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect();
                    return Err(StorageError::InvalidLocationConstraint(format!(
                        "the location constraint `{l}` is not a region of this Nuage (regions: {})",
                        known.join(", ")
                    )));
                }
                l.to_owned()
            }
        };
        if let Some(admission) = &self.admission {
            match admission.admit(owner, &region).await {
                Ok(Admission::Allowed) => {}
                Ok(Admission::Refused(why)) => {
                    return Err(StorageError::InvalidLocationConstraint(why));
                }
                Err(e) => {
                    return Err(StorageError::Internal(format!(
                        "bucket admission (residency) failed: {e}"
                    )));
                }
            }
        }
        let record = BucketRecord {
            name: name.to_owned(),
            region,
            created_unix_ns: self.now_ns(),
            versioning: Versioning::Unversioned,
            tags: None,
            cors: None,
            owner: owner.to_owned(),
            policy: None,
            public_access_block: None,
            encryption: None,
            residency_policy: None,
        };
        match self.meta.create_bucket(record.clone()).await {
            Ok(()) => Ok(record),
            Err(nuage_meta::MetaError::BucketAlreadyExists) => {
                match self.meta.get_bucket(name).await? {
                    Some(existing) if existing.owner != owner => {
                        Err(StorageError::BucketAlreadyExists)
                    }
                    _ => Err(StorageError::BucketAlreadyOwnedByYou),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// # Errors
    /// `NoSuchBucket`.
    pub async fn bucket(&self, name: &str) -> StorageResult<BucketRecord> {
        self.meta
            .get_bucket(name)
            .await?
            .ok_or(StorageError::NoSuchBucket)
    }

    /// # Errors
    /// Backend failure.
    pub async fn list_buckets(&self) -> StorageResult<Vec<BucketRecord>> {
        Ok(self.meta.list_buckets().await?)
    }

    /// # Errors
    /// `NoSuchBucket`, `BucketNotEmpty`.
    pub async fn delete_bucket(&self, name: &str) -> StorageResult<()> {
        Ok(self.meta.delete_bucket(name).await?)
    }

    async fn update_bucket(
        &self,
        name: &str,
        f: impl FnOnce(&mut BucketRecord),
    ) -> StorageResult<BucketRecord> {
        let mut record = self.bucket(name).await?;
        f(&mut record);
        self.meta.update_bucket(record.clone()).await?;
        Ok(record)
    }

    /// Sets (Some) or removes (None) the bucket's own residency policy,
    /// stored as given: the caller (the admin API) checks it first.
    ///
    /// # Errors
    /// `NoSuchBucket`.
    pub async fn set_bucket_residency_policy(
        &self,
        name: &str,
        policy: Option<String>,
    ) -> StorageResult<BucketRecord> {
        self.update_bucket(name, |b| b.residency_policy = policy)
            .await
    }

    /// Sets versioning to Enabled or Suspended (S3 never returns to Unversioned).
    ///
    /// # Errors
    /// `NoSuchBucket`.
    pub async fn set_versioning(&self, name: &str, enabled: bool) -> StorageResult<()> {
        let state = if enabled {
            Versioning::Enabled
        } else {
            Versioning::Suspended
        };
        self.update_bucket(name, |b| {
            if enabled || b.versioning != Versioning::Unversioned {
                b.versioning = state;
            }
        })
        .await
        .map(drop)
    }

    /// Sets or removes the bucket policy (validated by the caller, who knows
    /// the policy language).
    ///
    /// # Errors
    /// `NoSuchBucket`.
    pub async fn set_bucket_policy(&self, name: &str, policy: Option<String>) -> StorageResult<()> {
        self.update_bucket(name, |b| b.policy = policy)
            .await
            .map(drop)
    }

    /// # Errors
    /// `NoSuchBucket`.
    pub async fn set_public_access_block(
        &self,
        name: &str,
        block: Option<nuage_meta::PublicAccessBlock>,
    ) -> StorageResult<()> {
        self.update_bucket(name, |b| b.public_access_block = block)
            .await
            .map(drop)
    }

    /// Sets or removes (back to SSE-S3) the bucket's default encryption,
    /// validated by the caller.
    ///
    /// # Errors
    /// `NoSuchBucket`.
    pub async fn set_bucket_encryption(
        &self,
        name: &str,
        encryption: Option<nuage_meta::BucketEncryption>,
    ) -> StorageResult<()> {
        self.update_bucket(name, |b| b.encryption = encryption)
            .await
            .map(drop)
    }

    /// Gives every bucket without an owner (written before tenancy) to `owner`.
    /// Returns how many changed.
    ///
    /// # Errors
    /// Backend failure.
    pub async fn adopt_unowned_buckets(&self, owner: &str) -> StorageResult<usize> {
        let mut adopted = 0;
        for bucket in self.meta.list_buckets().await? {
            if bucket.owner.is_empty() {
                self.update_bucket(&bucket.name, |b| b.owner = owner.to_owned())
                    .await?;
                adopted += 1;
            }
        }
        Ok(adopted)
    }

    /// # Errors
    /// `NoSuchBucket`, `InvalidTag`.
    pub async fn set_bucket_tags(
        &self,
        name: &str,
        tags: Option<Vec<(String, String)>>,
    ) -> StorageResult<()> {
        if let Some(tags) = &tags {
            names::validate_tags(
                tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                limits::BUCKET_TAGS_MAX,
            )
            .map_err(|e| StorageError::InvalidTag(e.0))?;
        }
        self.update_bucket(name, |b| b.tags = tags).await.map(drop)
    }

    /// # Errors
    /// `NoSuchBucket`, `InvalidArgument` for too many rules or a bad method.
    pub async fn set_bucket_cors(
        &self,
        name: &str,
        cors: Option<Vec<CorsRule>>,
    ) -> StorageResult<()> {
        if let Some(rules) = &cors {
            if rules.is_empty() || rules.len() > limits::CORS_RULES_MAX {
                return Err(StorageError::InvalidArgument(format!(
                    "a CORS configuration holds 1 to {} rules",
                    limits::CORS_RULES_MAX
                )));
            }
            for rule in rules {
                if rule.allowed_origins.is_empty() || rule.allowed_methods.is_empty() {
                    return Err(StorageError::InvalidArgument(
                        "each CORS rule needs an origin and a method".into(),
                    ));
                }
                if let Some(m) = rule
                    .allowed_methods
                    .iter()
                    .find(|m| !["GET", "PUT", "POST", "DELETE", "HEAD"].contains(&m.as_str()))
                {
                    return Err(StorageError::InvalidArgument(format!(
                        "unsupported CORS method `{m}`"
                    )));
                }
            }
        }
        self.update_bucket(name, |b| b.cors = cors).await.map(drop)
    }

    // ---- writing ----

    /// Streams a body into a new durable blob for object `key` of `bucket`,
    /// computing the MD5 and the given checksums over the plaintext, and
    /// encrypting it under a fresh data key bound to the blob (see
    /// [`Self::binding`]). Fails (and removes the blob) past
    /// `size_bytes_max`, or when `expected_len` is given and the body is
    /// shorter or longer.
    ///
    /// # Errors
    /// `NoSuchBucket`, `EntityTooLarge`, `IncompleteBody`, `Body`, a key or
    /// blob store failure.
    pub async fn stage<S, E>(
        &self,
        bucket: &str,
        key: &str,
        body: S,
        expected_len: Option<u64>,
        size_bytes_max: u64,
        algorithms: &[ChecksumAlgorithm],
    ) -> StorageResult<Staged>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        self.stage_under(
            bucket,
            key,
            body,
            expected_len,
            size_bytes_max,
            algorithms,
            Protection::Tenant,
        )
        .await
    }

    /// [`Self::stage`], the blob's data key wrapped as `protection` says:
    /// under the owner's tenant key (SSE-S3), under the customer KMS key of
    /// the bucket owner with an encryption context bound in (SSE-KMS; the
    /// key must be enabled), or under the client's own key (SSE-C).
    ///
    /// # Errors
    /// As [`Self::stage`]; `Kms` when the customer key refuses.
    #[allow(clippy::too_many_arguments)]
    pub async fn stage_under<S, E>(
        &self,
        bucket: &str,
        key: &str,
        body: S,
        expected_len: Option<u64>,
        size_bytes_max: u64,
        algorithms: &[ChecksumAlgorithm],
        protection: Protection<'_>,
    ) -> StorageResult<Staged>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        if expected_len.is_some_and(|l| l > size_bytes_max) {
            return Err(StorageError::EntityTooLarge(format!(
                "your proposed upload exceeds the maximum allowed size of {size_bytes_max} bytes"
            )));
        }
        let bucket_record = self.bucket(bucket).await?;
        // Placed under the bucket's residency policy (`residency.rs`); the
        // blob is ciphertext, one tag per chunk longer than the plaintext.
        let target = self
            .placement_target(
                &bucket_record,
                expected_len.map(nuage_crypto::ciphertext_len),
            )
            .await?;
        let mut writer = self.blobs.create_placed(&target).await?;
        // The chunks authenticate the blob's own binding, so that copies
        // can share the blob; the data key's wrapping authenticates the
        // object's (see `wrap_key`).
        let chunk_binding =
            Self::chunk_aad(&bucket_record, key, writer.blob_id(), ChunkBinding::Blob);
        let (kms_key_arn, kms_context) = match protection {
            Protection::Kms { arn, context } => (Some(arn), context),
            Protection::Tenant | Protection::Customer(_) => (None, None),
        };
        let wrapping = match nuage_crypto::DataKey::generate() {
            Ok(data_key) => self
                .wrap_key(&bucket_record, key, writer.blob_id(), &data_key, protection)
                .await
                .map(|wrapped| (data_key, wrapped)),
            Err(e) => Err(e.into()),
        };
        let (data_key, wrapped) = match wrapping {
            Ok(k) => k,
            Err(e) => {
                writer.abandon().await;
                return Err(e);
            }
        };
        let mut digests = DigestSet::new(algorithms);
        let mut size: u64 = 0;
        let result: StorageResult<()> = async {
            // The plaintext is measured and digested on its way to the cipher;
            // only ciphertext reaches the blob store.
            let plaintext = body.map(|chunk| {
                let chunk = chunk.map_err(|e| StorageError::Body(e.to_string()))?;
                size += chunk.len() as u64;
                // Caught before the excess is sealed: a blob store told the
                // exact length (placement reserves it) never sees more.
                if expected_len.is_some_and(|l| size > l) {
                    return Err(StorageError::IncompleteBody);
                }
                if size > size_bytes_max {
                    return Err(StorageError::EntityTooLarge(format!(
                        "your proposed upload exceeds the maximum allowed size of {size_bytes_max} bytes"
                    )));
                }
                digests.update(&chunk);
                Ok::<Bytes, StorageError>(chunk)
            });
            let mut sealed = std::pin::pin!(nuage_crypto::encrypt_stream::<_, StorageError, StorageError>(
                data_key, &chunk_binding, plaintext
            ));
            while let Some(chunk) = sealed.next().await {
                writer.write(chunk?).await?;
            }
            Ok(())
        }
        .await;
        let result = result.and_then(|()| {
            if expected_len.is_some_and(|l| l != size) {
                Err(StorageError::IncompleteBody)
            } else {
                Ok(())
            }
        });
        if let Err(e) = result {
            writer.abandon().await;
            return Err(e);
        }
        let blob_id = writer.blob_id().to_owned();
        let placement = writer.placement();
        writer.finish().await?;
        Ok(Staged {
            blob_id,
            size,
            digests: digests.finish(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            sealed_key: Some(BASE64.encode(wrapped)),
            kms_key_arn: kms_key_arn.map(str::to_owned),
            kms_context: kms_context.map(str::to_owned),
            sse_c: matches!(protection, Protection::Customer(_)),
            placement,
        })
    }

    /// Wraps a blob's data key for object `key` of `bucket` as `protection`
    /// says: under the owner's tenant key (SSE-S3), under the owner's
    /// customer KMS key with the encryption context bound in (SSE-KMS; the
    /// key must be usable), or under the client's own key (SSE-C). The
    /// wrapping always authenticates the object's binding, so a wrapped key
    /// opens for this object only, even when the blob is shared.
    pub(crate) async fn wrap_key(
        &self,
        bucket: &BucketRecord,
        key: &str,
        blob: &str,
        data_key: &nuage_crypto::DataKey,
        protection: Protection<'_>,
    ) -> StorageResult<Vec<u8>> {
        let object_binding = Self::binding(bucket, key, blob);
        match protection {
            Protection::Customer(customer) => Ok(nuage_crypto::wrap_data_key(
                customer.kek(),
                data_key,
                &customer_wrap_binding(&object_binding),
            )?),
            Protection::Tenant => self
                .keys
                .wrap_data_key(&bucket.owner, data_key, &object_binding)
                .await
                .map_err(|e| StorageError::Internal(e.to_string())),
            Protection::Kms { arn, context } => self
                .customer_keys
                .wrap_data_key_under(
                    &bucket.owner,
                    arn,
                    data_key,
                    &kms_wrap_binding(&object_binding, context),
                    &self.key_caller(bucket),
                )
                .await
                .map_err(StorageError::from),
        }
    }

    /// Unwraps the data key of `segment`, data of object `key` of `bucket`,
    /// for a customer's request (`customer`: the SSE-C key it presented).
    pub(crate) async fn open_key(
        &self,
        bucket: &BucketRecord,
        key: &str,
        segment: &DataSegment,
        customer: Option<&CustomerKey>,
    ) -> StorageResult<nuage_crypto::DataKey> {
        let wrapped = segment.sealed_key.as_deref().ok_or_else(|| {
            StorageError::Internal(format!("blob {} has no data key", segment.blob_id))
        })?;
        let wrapped = BASE64.decode(wrapped).map_err(|e| {
            StorageError::Corrupt(format!("wrapped key of blob {}: {e}", segment.blob_id))
        })?;
        let object_binding = Self::binding(bucket, key, &segment.blob_id);
        // The requester's reason (an approved operator names the
        // approval's); Nuage's own work reads as the customer's.
        let reason = self.access_reason();
        let opened = if segment.sse_c {
            Self::open_customer_data_key(customer, &wrapped, &object_binding)
        } else {
            let binding = kms_wrap_binding(&object_binding, segment.kms_context.as_deref());
            match &segment.kms_key_arn {
                None => {
                    self.keys
                        .open_data_key(&bucket.owner, &wrapped, &binding, reason)
                        .await
                }
                Some(arn) => {
                    self.customer_keys
                        .open_data_key_under(
                            &bucket.owner,
                            arn,
                            &wrapped,
                            &binding,
                            reason,
                            &self.key_caller(bucket),
                        )
                        .await
                }
            }
            .map_err(StorageError::from)
        };
        opened.map_err(|e| match e {
            StorageError::Corrupt(message) => {
                StorageError::Corrupt(format!("data key of blob {}: {message}", segment.blob_id))
            }
            refused => refused,
        })
    }

    /// What the chunks of a blob of object `key` authenticate: the blob's
    /// own binding for shareable blobs, the object's for older ones.
    fn chunk_aad(bucket: &BucketRecord, key: &str, blob: &str, chunks: ChunkBinding) -> Vec<u8> {
        match chunks {
            ChunkBinding::Object => Self::binding(bucket, key, blob),
            ChunkBinding::Blob => nuage_crypto::BlobBinding {
                tenant: &bucket.owner,
                blob,
                region: &bucket.region,
            }
            .encode(),
        }
    }

    /// Unwraps an SSE-C segment's data key with the key the client
    /// presented: the unwrap authenticating is the proof that it is the
    /// right key (nothing about the key is stored to compare with).
    fn open_customer_data_key(
        customer: Option<&CustomerKey>,
        wrapped: &[u8],
        blob_binding: &[u8],
    ) -> StorageResult<nuage_crypto::DataKey> {
        let customer = customer.ok_or_else(customer_key_required)?;
        nuage_crypto::unwrap_data_key(
            customer.kek(),
            wrapped,
            &customer_wrap_binding(blob_binding),
        )
        .map_err(|e| match e {
            nuage_crypto::CryptoError::UnwrapAuthentication => StorageError::CustomerKeyMismatch,
            other => StorageError::from(other),
        })
    }

    /// Checks the SSE-C key of a read (GET, HEAD, copy source) against the
    /// version before anything is returned: required for an SSE-C object
    /// (and must open its first data key), refused for any other.
    ///
    /// # Errors
    /// `InvalidRequest` when missing or not applicable, `CustomerKeyMismatch`
    /// for the wrong key.
    pub async fn check_customer_key(
        &self,
        record: &VersionRecord,
        customer: Option<&CustomerKey>,
    ) -> StorageResult<()> {
        let Some(segment) = record.segments.iter().find(|s| s.sse_c) else {
            return match customer {
                None => Ok(()),
                Some(_) => Err(StorageError::InvalidRequest(
                    "The encryption parameters are not applicable to this object.".into(),
                )),
            };
        };
        let customer = customer.ok_or_else(customer_key_required)?;
        let bucket = self.bucket(&record.bucket).await?;
        let wrapped = segment
            .sealed_key
            .as_deref()
            .and_then(|w| BASE64.decode(w).ok())
            .ok_or_else(|| {
                StorageError::Corrupt(format!("wrapped key of blob {}", segment.blob_id))
            })?;
        let blob_binding = Self::binding(&bucket, &record.key, &segment.blob_id);
        Self::open_customer_data_key(Some(customer), &wrapped, &blob_binding).map(drop)
    }

    /// What a blob's data key is bound to: the owning tenant, the bucket, the
    /// object key, the blob and the region. A wrapped key copied onto another
    /// object, bucket or tenant does not unwrap.
    fn binding(bucket: &BucketRecord, key: &str, blob: &str) -> Vec<u8> {
        nuage_crypto::Binding {
            tenant: &bucket.owner,
            bucket: &bucket.name,
            key,
            blob,
            region: &bucket.region,
        }
        .encode()
    }

    /// Removes a staged blob that will not be committed.
    pub async fn discard(&self, staged: Staged) {
        self.free_blobs(vec![staged.blob_id]).await;
    }

    /// Checks a staged body against the digests the client sent. On mismatch the
    /// caller must [`discard`](Self::discard) it.
    ///
    /// # Errors
    /// `BadDigest` on a mismatch, `InvalidDigest` for a malformed `Content-MD5`.
    pub fn verify(
        staged: &Staged,
        content_md5: Option<&str>,
        expected: &Checksums,
    ) -> StorageResult<()> {
        if let Some(md5) = content_md5
            && crate::digest::parse_content_md5(md5)? != staged.digests.md5
        {
            return Err(StorageError::BadDigest(
                "the Content-MD5 you specified did not match what we received".into(),
            ));
        }
        for algorithm in ChecksumAlgorithm::ALL {
            if let Some(want) = algorithm.get(expected) {
                let got = algorithm.get(&staged.digests.checksums);
                if got != Some(want) {
                    return Err(StorageError::BadDigest(format!(
                        "the {} you specified did not match the calculated checksum",
                        algorithm.name()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Validates user metadata and tags against S3's limits.
    ///
    /// # Errors
    /// `MetadataTooLarge`, `InvalidTag`.
    pub fn validate_attributes(attributes: &ObjectAttributes) -> StorageResult<()> {
        let meta_bytes: usize = attributes
            .user_metadata
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if meta_bytes > limits::USER_METADATA_BYTES_MAX {
            return Err(StorageError::MetadataTooLarge(format!(
                "your metadata headers exceed the maximum allowed metadata size ({meta_bytes} > {} bytes)",
                limits::USER_METADATA_BYTES_MAX
            )));
        }
        names::validate_tags(
            attributes
                .tags
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            limits::OBJECT_TAGS_MAX,
        )
        .map_err(|e| StorageError::InvalidTag(e.0))
    }

    pub(crate) fn validate_key(key: &str) -> StorageResult<()> {
        names::validate_object_key(key).map_err(|e| {
            if key.len() > limits::KEY_LENGTH_BYTES_MAX {
                StorageError::KeyTooLong(e.0)
            } else {
                StorageError::InvalidArgument(e.0)
            }
        })
    }

    /// Makes a staged body visible as the new version of `key`.
    ///
    /// # Errors
    /// `NoSuchBucket`, `PreconditionFailed`, invalid key or attributes.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        staged: Staged,
        attributes: ObjectAttributes,
        checksums: Checksums,
        condition: WriteCondition,
    ) -> StorageResult<VersionRecord> {
        let result = self
            .put_object_inner(bucket, key, &staged, attributes, checksums, condition)
            .await;
        if result.is_err() {
            self.discard(staged).await;
        }
        result
    }

    async fn put_object_inner(
        &self,
        bucket: &str,
        key: &str,
        staged: &Staged,
        attributes: ObjectAttributes,
        mut checksums: Checksums,
        condition: WriteCondition,
    ) -> StorageResult<VersionRecord> {
        Self::validate_key(key)?;
        Self::validate_attributes(&attributes)?;
        if staged.bucket != bucket || staged.key != key {
            return Err(StorageError::Internal(format!(
                "data staged for {}/{} cannot become {bucket}/{key}",
                staged.bucket, staged.key
            )));
        }
        let bucket_record = self.bucket(bucket).await?;
        if !checksums.is_empty() {
            checksums.checksum_type = Some("FULL_OBJECT".into());
        }
        let record = VersionRecord {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            version_id: String::new(),
            seq: 0,
            delete_marker: false,
            last_modified_unix_ns: self.now_ns(),
            size: staged.size,
            etag: staged.digests.md5_hex(),
            content: attributes.content,
            user_metadata: attributes.user_metadata,
            checksums,
            tags: attributes.tags,
            segments: vec![DataSegment {
                blob_id: staged.blob_id.clone(),
                size: staged.size,
                part_etag: None,
                sealed_key: staged.sealed_key.clone(),
                kms_key_arn: staged.kms_key_arn.clone(),
                kms_context: staged.kms_context.clone(),
                sse_c: staged.sse_c,
                chunk_binding: ChunkBinding::Blob,
            }],
            sealed_attributes: None,
        };
        let mut sealed = record.clone();
        self.seal_attributes(&bucket_record, &mut sealed).await?;
        let outcome = self
            .meta
            .put_version(PutVersion {
                record: sealed,
                null_version: bucket_record.versioning != Versioning::Enabled,
                condition,
                shared_blobs: Vec::new(),
            })
            .await?;
        self.free_blobs(outcome.freed_blobs).await;
        Ok(Self::with_identity_of(record, outcome.record))
    }

    /// The written record with the plaintext attributes the caller gave.
    pub(crate) fn with_identity_of(
        mut plain: VersionRecord,
        stored: VersionRecord,
    ) -> VersionRecord {
        plain.version_id = stored.version_id;
        plain.seq = stored.seq;
        plain.sealed_attributes = stored.sealed_attributes;
        plain
    }

    /// Encrypts a record's user metadata and checksum values under a fresh
    /// key bound to the record's first blob, so the metadata store holds
    /// neither. Checksum values become empty placeholders (listings still
    /// name the algorithms).
    pub(crate) async fn seal_attributes(
        &self,
        bucket: &BucketRecord,
        record: &mut VersionRecord,
    ) -> StorageResult<()> {
        if record.user_metadata.is_empty() && record.checksums.is_empty() {
            return Ok(());
        }
        let Some(first) = record.segments.first() else {
            return Ok(());
        };
        let binding = Self::binding(
            bucket,
            &record.key,
            &format!("attributes/{}", first.blob_id),
        );
        let plaintext = serde_json::to_vec(&SealedAttributes {
            user_metadata: record.user_metadata.clone(),
            checksums: record.checksums.clone(),
        })
        .map_err(|e| StorageError::Internal(e.to_string()))?;
        record.sealed_attributes = Some(self.seal_value(bucket, &binding, plaintext).await?);
        record.user_metadata.clear();
        for algorithm in ChecksumAlgorithm::ALL {
            if algorithm.get(&record.checksums).is_some() {
                algorithm.set(&mut record.checksums, Some(String::new()));
            }
        }
        Ok(())
    }

    /// Decrypts what [`Self::seal_attributes`] sealed, back into the record.
    pub(crate) async fn open_attributes(
        &self,
        bucket: &BucketRecord,
        record: &mut VersionRecord,
    ) -> StorageResult<()> {
        let Some(sealed) = record.sealed_attributes.as_deref() else {
            return Ok(());
        };
        let corrupt = |what: &str| {
            StorageError::Corrupt(format!(
                "sealed attributes of {}/{}: {what}",
                record.bucket, record.key
            ))
        };
        let first = record.segments.first().ok_or_else(|| corrupt("no data"))?;
        let binding = Self::binding(
            bucket,
            &record.key,
            &format!("attributes/{}", first.blob_id),
        );
        let plaintext = self
            .open_value(bucket, &binding, sealed)
            .await
            .map_err(|e| match e {
                StorageError::Corrupt(message) => corrupt(&message),
                refused => refused,
            })?;
        let attributes: SealedAttributes =
            serde_json::from_slice(&plaintext).map_err(|e| corrupt(&e.to_string()))?;
        record.user_metadata = attributes.user_metadata;
        record.checksums = attributes.checksums;
        Ok(())
    }

    /// Encrypts `plaintext` (a small record field, never object data)
    /// under a fresh data key wrapped by `bucket`'s owner's tenant key, both
    /// bound to `binding`: `WRAPPED_KEY.CIPHERTEXT`, base64.
    pub(crate) async fn seal_value(
        &self,
        bucket: &BucketRecord,
        binding: &[u8],
        plaintext: Vec<u8>,
    ) -> StorageResult<String> {
        let (key, wrapped) = self
            .keys
            .new_data_key(&bucket.owner, binding)
            .await
            .map_err(|e| StorageError::Internal(e.to_string()))?;
        let input = futures::stream::iter([Ok::<Bytes, StorageError>(Bytes::from(plaintext))]);
        let sealed: Vec<Bytes> =
            nuage_crypto::encrypt_stream::<_, StorageError, StorageError>(key, binding, input)
                .try_collect()
                .await?;
        Ok(format!(
            "{}.{}",
            BASE64.encode(wrapped),
            BASE64.encode(sealed.concat())
        ))
    }

    /// Decrypts what [`Self::seal_value`] sealed under `binding`, for a
    /// customer's request.
    pub(crate) async fn open_value(
        &self,
        bucket: &BucketRecord,
        binding: &[u8],
        sealed: &str,
    ) -> StorageResult<Vec<u8>> {
        let corrupt = |what: &str| StorageError::Corrupt(what.to_owned());
        let (wrapped, ciphertext) = sealed.split_once('.').ok_or_else(|| corrupt("malformed"))?;
        let wrapped = BASE64
            .decode(wrapped)
            .map_err(|_| corrupt("malformed key"))?;
        let ciphertext = BASE64
            .decode(ciphertext)
            .map_err(|_| corrupt("malformed ciphertext"))?;
        let key = self
            .keys
            .open_data_key(
                &bucket.owner,
                &wrapped,
                binding,
                // The requester's reason, as for object data.
                self.access_reason(),
            )
            .await?;
        let plaintext_len = nuage_crypto::plaintext_len(ciphertext.len() as u64)
            .ok_or_else(|| corrupt("bad length"))?;
        let span = nuage_crypto::ChunkSpan::whole(plaintext_len)?;
        let input = futures::stream::iter([Ok::<Bytes, StorageError>(Bytes::from(ciphertext))]);
        let plaintext: Vec<Bytes> = nuage_crypto::decrypt_stream::<_, StorageError, StorageError>(
            &key, binding, span, input,
        )
        .try_collect()
        .await?;
        Ok(plaintext.concat())
    }

    // ---- reading ----

    /// The version a GET/HEAD addresses.
    ///
    /// # Errors
    /// `NoSuchBucket`, `NoSuchKey`, `NoSuchVersion`, `DeleteMarker`,
    /// `MethodNotAllowedOnDeleteMarker`.
    pub async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> StorageResult<VersionRecord> {
        let bucket_record = self.bucket(bucket).await?;
        let record = self.meta.get_version(bucket, key, version_id).await?;
        let found = match (record, version_id) {
            (None, None) => Err(StorageError::NoSuchKey),
            (None, Some(v)) => {
                if ids::version_seq(v).is_none() && v != ids::NULL_VERSION_ID {
                    Err(StorageError::InvalidArgument(
                        "invalid version id specified".into(),
                    ))
                } else {
                    Err(StorageError::NoSuchVersion)
                }
            }
            (Some(r), None) if r.delete_marker => Err(StorageError::DeleteMarker {
                version_id: r.version_id,
            }),
            (Some(r), Some(_)) if r.delete_marker => {
                Err(StorageError::MethodNotAllowedOnDeleteMarker {
                    version_id: r.version_id,
                })
            }
            (Some(r), _) => Ok(r),
        };
        let mut record = found?;
        self.open_attributes(&bucket_record, &mut record).await?;
        Ok(record)
    }

    /// Streams `len` bytes of a version from `offset`. The first chunk is read
    /// before this returns, so a missing or corrupt first block is an error the
    /// caller can still report in the response status. `customer` is the
    /// SSE-C key the request presented (required for SSE-C data).
    ///
    /// # Errors
    /// `Corrupt` when stored data fails its checksum; `InvalidRequest` or
    /// `CustomerKeyMismatch` for a missing or wrong SSE-C key.
    pub async fn read_object(
        &self,
        record: &VersionRecord,
        customer: Option<&CustomerKey>,
        offset: u64,
        len: u64,
    ) -> StorageResult<ObjectBody> {
        let bucket = self.bucket(&record.bucket).await?;
        // Data keys are unwrapped before the first byte is read (a key that
        // does not unwrap is an error status, not a cut-off body); the blobs
        // themselves are opened one segment at a time.
        let mut pieces = Vec::new();
        let mut segment_start = 0u64;
        let end = offset.saturating_add(len);
        for segment in &record.segments {
            let segment_end = segment_start + segment.size;
            let touched = segment_end > offset && segment_start < end && segment.size > 0;
            // An empty encrypted object still has one chunk to authenticate.
            let empty_object = record.size == 0 && segment.sealed_key.is_some();
            if touched || empty_object {
                let from = offset.max(segment_start) - segment_start;
                let to = end.min(segment_end) - segment_start;
                let sealing = match &segment.sealed_key {
                    None => None,
                    Some(_) => {
                        let key = self
                            .open_key(&bucket, &record.key, segment, customer)
                            .await?;
                        let chunk_binding = Self::chunk_aad(
                            &bucket,
                            &record.key,
                            &segment.blob_id,
                            segment.chunk_binding,
                        );
                        let span =
                            nuage_crypto::ChunkSpan::for_range(segment.size, from, to - from)?;
                        Some((key, chunk_binding, span))
                    }
                };
                pieces.push(Piece {
                    blob_id: segment.blob_id.clone(),
                    from,
                    len: to - from,
                    sealing,
                });
            }
            segment_start = segment_end;
        }
        let blobs = Arc::clone(&self.blobs);
        let stream = futures::stream::iter(pieces).map(move |piece| -> ObjectBody {
            match piece.sealing {
                None => Box::pin(
                    blobs
                        .read(&piece.blob_id, piece.from, piece.len)
                        .map_err(|e| std::io::Error::other(e.to_string())),
                ),
                Some((key, binding, span)) => {
                    // Every chunk's tag authenticates its bytes before they
                    // are yielded, so the blob store's CRC32C check is
                    // skipped here (it cost about a sixth of a large GET);
                    // it is run only when authentication fails, to tell
                    // corruption on disk from tampering.
                    let (offset, len) = (span.ciphertext_offset(), span.ciphertext_len());
                    let ciphertext = blobs.read_authenticated(&piece.blob_id, offset, len);
                    let blobs = Arc::clone(&blobs);
                    let blob_id = piece.blob_id;
                    Box::pin(
                        nuage_crypto::decrypt_stream::<_, nuage_blob::BlobError, ReadFailure>(
                            &key, &binding, span, ciphertext,
                        )
                        .then(move |item| match item {
                            Ok(bytes) => Either::Left(futures::future::ready(Ok(bytes))),
                            Err(failure) => {
                                let blobs = Arc::clone(&blobs);
                                let blob_id = blob_id.clone();
                                Either::Right(async move {
                                    let why =
                                        diagnose(blobs.as_ref(), &blob_id, offset, len, failure)
                                            .await;
                                    Err(std::io::Error::other(why))
                                })
                            }
                        }),
                    )
                }
            }
        });
        let mut stream: ObjectBody = Box::pin(stream.flatten());
        match stream.next().await {
            None => Ok(Box::pin(futures::stream::empty())),
            Some(Err(e)) => Err(StorageError::Corrupt(e.to_string())),
            Some(Ok(first)) if first.is_empty() => Ok(stream),
            Some(Ok(first)) => Ok(Box::pin(
                futures::stream::once(async move { Ok(first) }).chain(stream),
            )),
        }
    }

    /// Digests a whole version (MD5 and the given checksums) without copying it.
    ///
    /// # Errors
    /// `Corrupt` when stored data fails its checks.
    pub async fn digest_object(
        &self,
        record: &VersionRecord,
        customer: Option<&CustomerKey>,
        algorithms: &[ChecksumAlgorithm],
    ) -> StorageResult<Digests> {
        let mut body = self.read_object(record, customer, 0, record.size).await?;
        let mut digests = DigestSet::new(algorithms);
        while let Some(chunk) = body.next().await {
            digests.update(&chunk.map_err(|e| StorageError::Corrupt(e.to_string()))?);
        }
        Ok(digests.finish())
    }

    // ---- copying ----

    /// Copies `len` bytes of a version from `offset` into a new staged blob
    /// protected as `protection` says (`source_key`: the source's SSE-C key).
    ///
    /// # Errors
    /// `Corrupt` or a blob store failure.
    #[allow(clippy::too_many_arguments)]
    pub async fn stage_copy(
        &self,
        source: &VersionRecord,
        source_key: Option<&CustomerKey>,
        offset: u64,
        len: u64,
        bucket: &str,
        key: &str,
        protection: Protection<'_>,
    ) -> StorageResult<Staged> {
        let body = self.read_object(source, source_key, offset, len).await?;
        let algorithms: Vec<ChecksumAlgorithm> = ChecksumAlgorithm::ALL
            .into_iter()
            .filter(|a| a.get(&source.checksums).is_some())
            .collect();
        // The copy is encrypted afresh: its data key is bound to its own
        // bucket, key and blob.
        self.stage_under(
            bucket,
            key,
            body,
            Some(len),
            limits::OBJECT_SIZE_BYTES_MAX,
            &algorithms,
            protection,
        )
        .await
    }

    /// Prepares a copy of `source` as object `key` of `bucket` that shares
    /// the source's blobs instead of re-encrypting them: each segment's data
    /// key is unwrapped under the source's protection (`source_key`: its
    /// SSE-C key) and wrapped again for the destination, as `protection`
    /// says. None when the blobs cannot be shared: the destination belongs
    /// to another tenant or region, or is under another effective residency
    /// policy (its blob must be placed for its own), or a segment's chunks
    /// are bound to the source object (data written before blobs could be
    /// shared); the
    /// caller then copies with [`Self::stage_copy`].
    ///
    /// # Errors
    /// `NoSuchBucket`; the source's key refusing (`Kms`, `KeyAccessRefused`,
    /// `CustomerKeyMismatch`, `InvalidRequest`); the destination's key
    /// refusing (`Kms`).
    pub async fn share_copy(
        &self,
        source: &VersionRecord,
        source_key: Option<&CustomerKey>,
        bucket: &str,
        key: &str,
        protection: Protection<'_>,
    ) -> StorageResult<Option<SharedCopy>> {
        let source_bucket = self.bucket(&source.bucket).await?;
        let bucket_record = self.bucket(bucket).await?;
        // The chunks authenticate (tenant, blob, region): only a copy that
        // keeps all three can read them.
        let shareable = source_bucket.owner == bucket_record.owner
            && source_bucket.region == bucket_record.region
            && !source.segments.is_empty()
            && source
                .segments
                .iter()
                .all(|s| s.chunk_binding == ChunkBinding::Blob && s.sealed_key.is_some());
        // The source's replicas were placed for its bucket's residency
        // policy: a destination under another policy gets a blob of its own,
        // placed for that policy.
        if !shareable || !self.same_residency(&source_bucket, &bucket_record).await? {
            return Ok(None);
        }
        let (kms_key_arn, kms_context) = match protection {
            Protection::Kms { arn, context } => (Some(arn.to_owned()), context.map(str::to_owned)),
            Protection::Tenant | Protection::Customer(_) => (None, None),
        };
        let mut segments = Vec::with_capacity(source.segments.len());
        for segment in &source.segments {
            let data_key = self
                .open_key(&source_bucket, &source.key, segment, source_key)
                .await?;
            let wrapped = self
                .wrap_key(&bucket_record, key, &segment.blob_id, &data_key, protection)
                .await?;
            segments.push(DataSegment {
                blob_id: segment.blob_id.clone(),
                size: segment.size,
                // The copy is a single-part object, as S3's copies are.
                part_etag: None,
                sealed_key: Some(BASE64.encode(wrapped)),
                kms_key_arn: kms_key_arn.clone(),
                kms_context: kms_context.clone(),
                sse_c: matches!(protection, Protection::Customer(_)),
                chunk_binding: ChunkBinding::Blob,
            });
        }
        Ok(Some(SharedCopy {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size: source.size,
            etag: source.etag.clone(),
            segments,
        }))
    }

    /// Makes a [`SharedCopy`] visible as the new version of its key, with
    /// `checksums` as given (the source's, or computed by the caller). The
    /// commit fails, atomically, if a shared blob lost its last reference
    /// since the copy was prepared (its source deleted meanwhile): that is
    /// `NoSuchKey`, what a copy of a vanished source gets.
    ///
    /// # Errors
    /// `NoSuchBucket`, `NoSuchKey`, `PreconditionFailed`, invalid key or
    /// attributes.
    pub async fn put_copy(
        &self,
        copy: SharedCopy,
        attributes: ObjectAttributes,
        checksums: Checksums,
        condition: WriteCondition,
    ) -> StorageResult<VersionRecord> {
        Self::validate_key(&copy.key)?;
        Self::validate_attributes(&attributes)?;
        let bucket_record = self.bucket(&copy.bucket).await?;
        let mut shared_blobs: Vec<String> =
            copy.segments.iter().map(|s| s.blob_id.clone()).collect();
        shared_blobs.sort_unstable();
        shared_blobs.dedup();
        let record = VersionRecord {
            bucket: copy.bucket,
            key: copy.key,
            version_id: String::new(),
            seq: 0,
            delete_marker: false,
            last_modified_unix_ns: self.now_ns(),
            size: copy.size,
            etag: copy.etag,
            content: attributes.content,
            user_metadata: attributes.user_metadata,
            checksums,
            tags: attributes.tags,
            segments: copy.segments,
            sealed_attributes: None,
        };
        let mut sealed = record.clone();
        self.seal_attributes(&bucket_record, &mut sealed).await?;
        let outcome = self
            .meta
            .put_version(PutVersion {
                record: sealed,
                null_version: bucket_record.versioning != Versioning::Enabled,
                condition,
                shared_blobs,
            })
            .await
            .map_err(|e| match e {
                nuage_meta::MetaError::SharedBlobGone(_) => StorageError::NoSuchKey,
                other => other.into(),
            })?;
        self.free_blobs(outcome.freed_blobs).await;
        Ok(Self::with_identity_of(record, outcome.record))
    }

    // ---- deleting ----

    /// Deletes a key (placing a delete marker when versioning is on) or one version.
    ///
    /// # Errors
    /// `NoSuchBucket`, `InvalidArgument` for a malformed version id.
    pub async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> StorageResult<DeleteOutcome> {
        let bucket_record = self.bucket(bucket).await?;
        if let Some(version_id) = version_id {
            if ids::version_seq(version_id).is_none() && version_id != ids::NULL_VERSION_ID {
                return Err(StorageError::InvalidArgument(
                    "invalid version id specified".into(),
                ));
            }
            return match self.meta.delete_version(bucket, key, version_id).await {
                Ok((record, freed)) => {
                    self.free_blobs(freed).await;
                    Ok(DeleteOutcome {
                        version_id: Some(record.version_id),
                        delete_marker: record.delete_marker,
                    })
                }
                // Deleting what is not there succeeds, as in S3.
                Err(nuage_meta::MetaError::NoSuchVersion) => Ok(DeleteOutcome {
                    version_id: Some(version_id.to_owned()),
                    delete_marker: false,
                }),
                Err(e) => Err(e.into()),
            };
        }
        match bucket_record.versioning {
            Versioning::Unversioned => match self
                .meta
                .delete_version(bucket, key, ids::NULL_VERSION_ID)
                .await
            {
                Ok((_, freed)) => {
                    self.free_blobs(freed).await;
                    Ok(DeleteOutcome::default())
                }
                Err(nuage_meta::MetaError::NoSuchVersion) => Ok(DeleteOutcome::default()),
                Err(e) => Err(e.into()),
            },
            Versioning::Enabled | Versioning::Suspended => {
                Self::validate_key(key)?;
                let record = VersionRecord {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    version_id: String::new(),
                    seq: 0,
                    delete_marker: true,
                    last_modified_unix_ns: self.now_ns(),
                    size: 0,
                    etag: String::new(),
                    content: ContentHeaders::default(),
                    user_metadata: BTreeMap::new(),
                    checksums: Checksums::default(),
                    tags: Vec::new(),
                    segments: Vec::new(),
                    sealed_attributes: None,
                };
                let null_version = bucket_record.versioning == Versioning::Suspended;
                let outcome = self
                    .meta
                    .put_version(PutVersion {
                        record,
                        null_version,
                        condition: WriteCondition::None,
                        shared_blobs: Vec::new(),
                    })
                    .await?;
                self.free_blobs(outcome.freed_blobs).await;
                Ok(DeleteOutcome {
                    version_id: Some(outcome.record.version_id),
                    delete_marker: true,
                })
            }
        }
    }

    // ---- tags ----

    /// # Errors
    /// `NoSuchKey`/`NoSuchVersion`, `InvalidTag`.
    pub async fn set_object_tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        tags: Vec<(String, String)>,
    ) -> StorageResult<VersionRecord> {
        names::validate_tags(
            tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            limits::OBJECT_TAGS_MAX,
        )
        .map_err(|e| StorageError::InvalidTag(e.0))?;
        self.head_object(bucket, key, version_id).await?;
        Ok(self
            .meta
            .set_version_tags(bucket, key, version_id, tags)
            .await?)
    }

    // ---- housekeeping ----

    /// Deletes blobs that no record references and that were last modified
    /// before `older_than` (so blobs being written now are spared). Returns how
    /// many were removed.
    ///
    /// # Errors
    /// A blob store or metadata failure.
    pub async fn collect_orphans(&self, older_than: std::time::SystemTime) -> StorageResult<usize> {
        let mut removed = 0;
        for entry in self.blobs.list().await? {
            if entry.modified >= older_than {
                continue;
            }
            if !self.meta.blob_is_referenced(&entry.blob_id).await? {
                self.blobs.delete(&entry.blob_id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
