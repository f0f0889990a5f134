//! One method per S3 operation: parse the DTO, call the storage service, build
//! the output. Semantics live in the storage service.

use crate::NuageS3;
use crate::convert::{self, ContentInput, timestamp};
use crate::errors::to_s3;
use crate::sse::{self, Reported, WriteSseRequest, upload_protection};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use nuage_base::limits;
use nuage_storage::{
    ChecksumAlgorithm, Checksums, CompletedPart, Conditions, CorsRule, CustomerKey, ListQuery,
    ObjectAttributes, Protection, Requester, Storage, StorageError, VersionListQuery,
    VersionRecord, Versioning, WriteCondition, evaluate_read_conditions,
};
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

type Res<T> = S3Result<S3Response<T>>;

fn ok<T>(output: T) -> Res<T> {
    Ok(S3Response::new(output))
}

/// A success with no body: 204, as S3 answers deletions.
fn no_content<T>(output: T) -> Res<T> {
    let mut response = S3Response::new(output);
    response.status = Some(http::StatusCode::NO_CONTENT);
    Ok(response)
}

fn no_bucket_policy() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NoSuchBucketPolicy,
        "the bucket policy does not exist",
    )
}

fn invalid(message: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, message.into())
}

fn max_keys(value: Option<i32>) -> S3Result<usize> {
    match value {
        None => Ok(limits::LIST_KEYS_MAX),
        Some(n) if n < 0 => Err(invalid("max-keys must be a non-negative integer")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(0).min(limits::LIST_KEYS_MAX)),
    }
}

fn size_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn url_encoded(encoding: Option<&EncodingType>) -> bool {
    encoding.is_some_and(|e| e.as_str().eq_ignore_ascii_case("url"))
}

/// The algorithms to compute for a body: every one the client announced, by
/// value, by name, or as a trailer; CRC64NVME when none (S3's default).
fn algorithms_for(
    headers: &http::HeaderMap,
    announced: &Checksums,
    named: Option<&s3s::dto::ChecksumAlgorithm>,
) -> Vec<ChecksumAlgorithm> {
    let mut out: Vec<ChecksumAlgorithm> = ChecksumAlgorithm::ALL
        .into_iter()
        .filter(|a| a.get(announced).is_some())
        .collect();
    if let Some(a) = named.and_then(|n| ChecksumAlgorithm::parse(n.as_str())) {
        out.push(a);
    }
    if let Some(trailer) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
        for name in trailer.split(',') {
            if let Some(a) = name
                .trim()
                .strip_prefix("x-amz-checksum-")
                .and_then(ChecksumAlgorithm::parse)
            {
                out.push(a);
            }
        }
    }
    if out.is_empty() {
        out.push(ChecksumAlgorithm::Crc64Nvme);
    }
    out.dedup();
    out
}

/// The checksums to store: those computed for the announced algorithms.
fn stored_checksums(computed: &Checksums, algorithms: &[ChecksumAlgorithm]) -> Checksums {
    let mut out = Checksums::default();
    for a in algorithms {
        a.set(&mut out, a.get(computed).cloned());
    }
    out
}

fn write_condition(
    if_none_match: Option<&ETagCondition>,
    if_match: Option<&ETagCondition>,
) -> S3Result<WriteCondition> {
    match (if_none_match, if_match) {
        (Some(ETagCondition::Any), _) => Ok(WriteCondition::IfNoneMatchAny),
        (Some(ETagCondition::ETag(_)), _) => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "If-None-Match on writes supports only `*`",
        )),
        (None, Some(ETagCondition::ETag(e))) => Ok(WriteCondition::IfMatch(e.value().to_owned())),
        (None, Some(ETagCondition::Any)) => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "If-Match on writes needs an ETag",
        )),
        (None, None) => Ok(WriteCondition::None),
    }
}

fn copy_source(source: &CopySource) -> S3Result<(String, String, Option<String>)> {
    match source {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => Ok((
            bucket.to_string(),
            key.to_string(),
            version_id.as_deref().map(str::to_owned),
        )),
        CopySource::AccessPoint { .. } | CopySource::Outpost { .. } => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "access point copy sources are not supported",
        )),
    }
}

/// Resolves a byte range against an object length; `None` is the whole object.
fn resolve_range(range: Option<&Range>, size: u64) -> S3Result<Option<(u64, u64)>> {
    match range {
        None => Ok(None),
        Some(r) => {
            let span = r
                .check(size)
                .map_err(|_| to_s3(StorageError::InvalidRange))?;
            Ok(Some((span.start, span.end - span.start)))
        }
    }
}

/// Parses `bytes=first-last` from x-amz-copy-source-range.
fn copy_range(value: Option<&str>, size: u64) -> S3Result<(u64, u64)> {
    let Some(value) = value else {
        return Ok((0, size));
    };
    let spec = value.strip_prefix("bytes=").ok_or_else(|| {
        invalid("the x-amz-copy-source-range value must be of the form bytes=first-last")
    })?;
    let (a, b) = spec.split_once('-').ok_or_else(|| {
        invalid("the x-amz-copy-source-range value must be of the form bytes=first-last")
    })?;
    let first: u64 = a
        .parse()
        .map_err(|_| invalid("bad x-amz-copy-source-range"))?;
    let last: u64 = b
        .parse()
        .map_err(|_| invalid("bad x-amz-copy-source-range"))?;
    if first > last || last >= size {
        return Err(to_s3(StorageError::InvalidRange));
    }
    Ok((first, last - first + 1))
}

/// S3's answer for a `partNumber` past the object's last part (s3s has no
/// variant for this code, hence the custom one).
fn part_number_not_satisfiable() -> S3Error {
    let mut err = S3Error::with_message(
        S3ErrorCode::Custom("InvalidPartNumber".into()),
        "the requested partnumber is not satisfiable",
    );
    err.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
    err
}

/// The byte span of part `n` of a multipart object.
fn part_span(record: &VersionRecord, part_number: i32) -> S3Result<(u64, u64)> {
    let index = usize::try_from(part_number)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| invalid("part number must be at least 1"))?
        - 1;
    // Segments without a part ETag make a single-part object, even several
    // of them (a copy of a multipart object shares its parts' blobs).
    let single = record.segments.iter().all(|s| s.part_etag.is_none());
    if single {
        return if index == 0 {
            Ok((0, record.size))
        } else {
            Err(part_number_not_satisfiable())
        };
    }
    let offset: u64 = record.segments.iter().take(index).map(|s| s.size).sum();
    let segment = record
        .segments
        .get(index)
        .ok_or_else(part_number_not_satisfiable)?;
    Ok((offset, segment.size))
}

fn parts_count(record: &VersionRecord) -> Option<i32> {
    record
        .etag
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
}

fn versioning_status(v: Versioning) -> Option<BucketVersioningStatus> {
    match v {
        Versioning::Unversioned => None,
        Versioning::Enabled => Some(BucketVersioningStatus::from_static(
            BucketVersioningStatus::ENABLED,
        )),
        Versioning::Suspended => Some(BucketVersioningStatus::from_static(
            BucketVersioningStatus::SUSPENDED,
        )),
    }
}

fn version_id_out(record: &VersionRecord) -> Option<String> {
    (record.version_id != nuage_base::ids::NULL_VERSION_ID).then(|| record.version_id.clone())
}

/// Version id header for a write: the id when the bucket is versioned
/// (including `null` under suspension), nothing when it never was.
async fn written_version_id(storage: &Storage, record: &VersionRecord) -> Option<String> {
    match storage.bucket(&record.bucket).await.map(|b| b.versioning) {
        Ok(Versioning::Unversioned) | Err(_) => None,
        Ok(_) => Some(record.version_id.clone()),
    }
}

fn read_conditions(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> Conditions {
    Conditions {
        if_match: convert::condition_list(if_match),
        if_none_match: convert::condition_list(if_none_match),
        if_modified_since_unix_s: if_modified_since.map(convert::unix_seconds),
        if_unmodified_since_unix_s: if_unmodified_since.map(convert::unix_seconds),
    }
}

/// The error for a failed GET/HEAD condition. A 304 carries the ETag a 200
/// would have (RFC 9110 §15.4.5: caches revalidate with it).
fn read_condition_error(e: StorageError, record: &VersionRecord) -> S3Error {
    let not_modified = matches!(e, StorageError::NotModified);
    let mut err = to_s3(e);
    if not_modified && let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", record.etag)) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::ETAG, v);
        err.set_headers(headers);
    }
    err
}

fn decode_token(token: &str) -> S3Result<String> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| invalid("the continuation token provided is incorrect"))
}

fn cors_to_dto(rule: &CorsRule) -> CORSRule {
    CORSRule {
        id: rule.id.clone(),
        allowed_methods: rule.allowed_methods.clone(),
        allowed_origins: rule.allowed_origins.clone(),
        allowed_headers: (!rule.allowed_headers.is_empty()).then(|| rule.allowed_headers.clone()),
        expose_headers: (!rule.expose_headers.is_empty()).then(|| rule.expose_headers.clone()),
        max_age_seconds: rule.max_age_seconds,
    }
}

fn cors_from_dto(rule: CORSRule) -> CorsRule {
    CorsRule {
        id: rule.id,
        allowed_methods: rule.allowed_methods,
        allowed_origins: rule.allowed_origins,
        allowed_headers: rule.allowed_headers.unwrap_or_default(),
        expose_headers: rule.expose_headers.unwrap_or_default(),
        max_age_seconds: rule.max_age_seconds,
    }
}

fn owner() -> Owner {
    Owner {
        display_name: Some("nuage".into()),
        id: Some("nuage".into()),
    }
}

/// The digests a client sent with a body: `Content-MD5`, checksum headers,
/// and the trailers of an `aws-chunked` body (readable once the body is).
struct ClientDigests<'a> {
    content_md5: Option<&'a str>,
    announced: Checksums,
    trailers: Option<&'a s3s::TrailingHeaders>,
}

/// What a GET or HEAD asks for, before any byte is read.
struct ReadRequest<'a> {
    bucket: &'a str,
    key: &'a str,
    version_id: Option<&'a str>,
    if_match: Option<&'a ETagCondition>,
    if_none_match: Option<&'a ETagCondition>,
    if_modified_since: Option<&'a Timestamp>,
    if_unmodified_since: Option<&'a Timestamp>,
    part_number: Option<i32>,
    range: Option<&'a Range>,
    checksum_mode: Option<&'a ChecksumMode>,
    /// The SSE-C key the request presented.
    customer: Option<&'a CustomerKey>,
}

/// The version a GET or HEAD reads, and which bytes of it.
struct ReadPlan {
    record: VersionRecord,
    /// `Some((offset, length))` for a range or part, None for the whole object.
    span: Option<(u64, u64)>,
    /// Full-object checksums are returned only for whole-object reads that ask.
    checksums_on: bool,
}

impl ReadPlan {
    fn len(&self) -> u64 {
        self.span.map_or(self.record.size, |(_, l)| l)
    }

    fn content_range(&self) -> Option<String> {
        self.span
            .filter(|(_, l)| *l > 0)
            .map(|(o, l)| format!("bytes {o}-{}/{}", o + l - 1, self.record.size))
    }

    fn response<T>(&self, output: T) -> S3Response<T> {
        let mut response = S3Response::new(output);
        if self.span.is_some_and(|(_, l)| l > 0) {
            response.status = Some(http::StatusCode::PARTIAL_CONTENT);
        }
        response
    }
}

/// The `response-*` query overrides of GET and HEAD.
struct Overrides {
    content_type: Option<ContentType>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<Timestamp>,
}

/// Fills the headers GET and HEAD share (their output types have the same
/// field names but no common trait, hence a macro).
macro_rules! object_read_output {
    ($output:ident, $plan:expr, $overrides:expr, $version_in:expr, $part_number:expr, $customer:expr) => {{
        let plan = &$plan;
        let overrides = $overrides;
        let record = &plan.record;
        let content = &record.content;
        let reported = Reported::of_record(record);
        let (sse_customer_algorithm, sse_customer_key_md5) = reported.customer($customer);
        let mut output = $output {
            content_length: Some(size_i64(plan.len())),
            content_range: plan.content_range(),
            accept_ranges: Some("bytes".into()),
            last_modified: Some(timestamp(record.last_modified_unix_ns)),
            e_tag: Some(convert::etag(&record.etag)),
            version_id: version_id_out(record).or($version_in),
            metadata: convert::metadata_out(&record.user_metadata),
            content_type: overrides
                .content_type
                .or_else(|| content.content_type.clone().and_then(|t| t.parse().ok())),
            content_encoding: overrides
                .content_encoding
                .or_else(|| content.content_encoding.clone()),
            content_disposition: overrides
                .content_disposition
                .or_else(|| content.content_disposition.clone()),
            content_language: overrides
                .content_language
                .or_else(|| content.content_language.clone()),
            cache_control: overrides
                .cache_control
                .or_else(|| content.cache_control.clone()),
            expires: overrides
                .expires
                .or_else(|| convert::expires_timestamp(content.expires.as_ref())),
            website_redirect_location: content.website_redirect_location.clone(),
            parts_count: $part_number.and_then(|_| parts_count(record)),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            server_side_encryption: reported.sse(),
            ssekms_key_id: reported.kms_key_id(),
            sse_customer_algorithm,
            sse_customer_key_md5,
            ..Default::default()
        };
        if plan.checksums_on {
            let c = &record.checksums;
            output.checksum_crc32 = c.crc32.clone();
            output.checksum_crc32c = c.crc32c.clone();
            output.checksum_crc64nvme = c.crc64nvme.clone();
            output.checksum_sha1 = c.sha1.clone();
            output.checksum_sha256 = c.sha256.clone();
            output.checksum_type = convert::checksum_type(c);
        }
        output
    }};
}

impl NuageS3 {
    /// Finds the version, checks the conditions, resolves the range or part.
    async fn plan_read(&self, r: ReadRequest<'_>) -> S3Result<ReadPlan> {
        let record = self
            .storage
            .head_object(r.bucket, r.key, r.version_id)
            .await
            .map_err(to_s3)?;
        // An SSE-C object answers nothing, not even its ETag, to a request
        // without its key.
        self.storage
            .check_customer_key(&record, r.customer)
            .await
            .map_err(to_s3)?;
        let conditions = read_conditions(
            r.if_match,
            r.if_none_match,
            r.if_modified_since,
            r.if_unmodified_since,
        );
        evaluate_read_conditions(&record, &conditions)
            .map_err(|e| read_condition_error(e, &record))?;
        let span = match (r.part_number, r.range) {
            (Some(_), Some(_)) => return Err(invalid("cannot specify both Range and partNumber")),
            (Some(n), None) => Some(part_span(&record, n)?),
            (None, range) => resolve_range(range, record.size)?,
        };
        let checksums_on = span.is_none()
            && r.checksum_mode
                .is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
        Ok(ReadPlan {
            record,
            span,
            checksums_on,
        })
    }
}

/// Every object is encrypted at rest under its tenant's key, which is what
/// S3 calls SSE-S3: responses say so, as AWS's do for default encryption.
fn sse_s3() -> ServerSideEncryption {
    ServerSideEncryption::from_static(ServerSideEncryption::AES256)
}

/// The customer KMS key an object's data is wrapped under, if any.
fn record_kms_key(record: &VersionRecord) -> Option<&str> {
    record
        .segments
        .iter()
        .find_map(|s| s.kms_key_arn.as_deref())
}

/// The encryption context an object's SSE-KMS data is bound to, if any.
fn record_kms_context(record: &VersionRecord) -> Option<&str> {
    record
        .segments
        .iter()
        .find_map(|s| s.kms_context.as_deref())
}

/// The identity behind the request (None: anonymous).
fn caller_identity<T>(req: &S3Request<T>) -> Option<nuage_iam::Identity> {
    req.extensions
        .get::<crate::access::Caller>()
        .and_then(|c| c.0.clone())
}

impl NuageS3 {
    /// `kms:<action>` on the customer key, decided as the KMS API decides
    /// (the caller's identity policies with the key policy as resource
    /// policy); AccessDenied (403) when refused.
    pub(crate) async fn authorize_kms(
        &self,
        caller: Option<&nuage_iam::Identity>,
        action: &str,
        key: &nuage_kms::KmsKey,
        encryption_context: Option<&str>,
    ) -> S3Result<()> {
        // kms:EncryptionContext:<key> and kms:EncryptionContextKeys, as
        // KMS itself offers them for the data key S3 asks for.
        let mut context = sse::context_condition_keys(encryption_context);
        if let Some(tenant) = caller.map(|c| c.tenant_id.clone()) {
            context.insert("kms:CallerAccount".to_owned(), vec![tenant]);
        }
        context.insert(
            "kms:ViaService".to_owned(),
            vec![format!(
                "s3.{}.amazonaws.com",
                self.storage.customer_keys().region()
            )],
        );
        let request = nuage_iam::AccessRequest {
            action: format!("kms:{action}"),
            resource: key.arn.clone(),
            context,
        };
        let decision = self
            .iam
            .authorize(
                caller,
                &request,
                Some(&key.tenant),
                Some(&key.policy),
                false,
            )
            .await
            .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))?;
        if decision.allowed {
            return Ok(());
        }
        let who = caller.map_or("anonymous", |c| c.arn.as_str());
        Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            format!(
                "User: {who} is not authorized to perform: kms:{action} on resource: {}",
                key.arn
            ),
        ))
    }

    /// Before a part of an SSE-KMS upload is stored: `kms:GenerateDataKey`
    /// on the key chosen when the upload was created.
    async fn authorize_upload_key(
        &self,
        caller: Option<&nuage_iam::Identity>,
        upload: &nuage_meta::UploadRecord,
    ) -> S3Result<()> {
        let Some(arn) = upload.kms_key_arn.as_deref() else {
            return Ok(());
        };
        self.authorize_bucket_key(
            caller,
            &upload.bucket,
            arn,
            "GenerateDataKey",
            upload.kms_context.as_deref(),
        )
        .await
    }

    /// `kms:<action>` on the KMS key `arn` of `bucket`'s owner (see
    /// [`Self::authorize_kms`]).
    async fn authorize_bucket_key(
        &self,
        caller: Option<&nuage_iam::Identity>,
        bucket: &str,
        arn: &str,
        action: &str,
        context: Option<&str>,
    ) -> S3Result<()> {
        let owner = self.storage.bucket(bucket).await.map_err(to_s3)?.owner;
        let key = self
            .storage
            .customer_keys()
            .resolve(&owner, arn)
            .await
            .map_err(|e| to_s3(e.into()))?;
        self.authorize_kms(caller, action, &key, context).await
    }

    /// Before reading an SSE-KMS object: the caller must be allowed
    /// `kms:Decrypt` with its key (the key's state is checked on unwrap).
    async fn authorize_read(
        &self,
        caller: Option<&nuage_iam::Identity>,
        record: &VersionRecord,
    ) -> S3Result<()> {
        let Some(arn) = record_kms_key(record) else {
            return Ok(());
        };
        self.authorize_bucket_key(
            caller,
            &record.bucket,
            arn,
            "Decrypt",
            record_kms_context(record),
        )
        .await
    }
}

impl NuageS3 {
    /// The storage service acting for this request: uses of customer KMS
    /// keys name the caller and the request id the client is answered with
    /// (`x-amz-request-id`, set by the HTTP layer) to the key service, as
    /// AWS KMS is told by S3. An unsigned request is `anonymous`.
    fn storage_for<T>(&self, req: &S3Request<T>) -> Storage {
        let caller = caller_identity(req);
        let access_reason = access_reason(caller.as_ref());
        let principal_arn = caller.map_or_else(|| Requester::ANONYMOUS.to_owned(), |c| c.arn);
        let request_id = req
            .extensions
            .get::<crate::RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        self.storage.on_behalf_of(Requester {
            principal_arn,
            request_id,
            access_reason,
        })
    }
}

/// Why a caller's request unwraps data keys: the operator under a tenant's
/// approval gives the approval's justification (one Nuage cannot name is
/// `REASON_NOT_EXPECTED`, which tenants do not allow by default); everyone
/// else is the customer.
pub fn access_reason(caller: Option<&nuage_iam::Identity>) -> nuage_kms::AccessReason {
    match caller.and_then(|c| c.approval.as_ref()) {
        Some(approval) => nuage_kms::AccessReason::parse(&approval.reason)
            .unwrap_or(nuage_kms::AccessReason::ReasonNotExpected),
        None => nuage_kms::AccessReason::CustomerInitiatedAccess,
    }
}

/// The tenant of the authenticated caller (set by the authorizer).
fn caller_tenant<T>(req: &S3Request<T>) -> S3Result<String> {
    req.extensions
        .get::<crate::access::Caller>()
        .and_then(|c| c.tenant_id().map(str::to_owned))
        .ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::AccessDenied,
                "this operation needs a signed request",
            )
        })
}

fn setting(value: Option<bool>) -> bool {
    value.unwrap_or(false)
}

/// A request body and the object it is for.
struct Upload<'a> {
    bucket: &'a str,
    key: &'a str,
    body: Option<StreamingBlob>,
    content_length: Option<i64>,
    size_bytes_max: u64,
    /// How the data key is wrapped.
    protection: Protection<'a>,
}

/// Reads a request body into a staged blob and checks it against the digests
/// the client sent.
async fn stage_body(
    storage: &Storage,
    upload: Upload<'_>,
    algorithms: &[ChecksumAlgorithm],
    digests: ClientDigests<'_>,
) -> S3Result<nuage_storage::Staged> {
    let ClientDigests {
        content_md5,
        announced: mut expected,
        trailers,
    } = digests;
    let Upload {
        bucket,
        key,
        body,
        content_length,
        size_bytes_max,
        protection,
    } = upload;
    let expected_len = content_length.and_then(|l| u64::try_from(l).ok());
    let staged = match body {
        Some(body) => {
            storage
                .stage_under(
                    bucket,
                    key,
                    body,
                    expected_len,
                    size_bytes_max,
                    algorithms,
                    protection,
                )
                .await
        }
        None => {
            storage
                .stage_under(
                    bucket,
                    key,
                    futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>(),
                    expected_len,
                    size_bytes_max,
                    algorithms,
                    protection,
                )
                .await
        }
    }
    .map_err(to_s3)?;
    let verified = convert::apply_trailers(&mut expected, trailers)
        .and_then(|()| Storage::verify(&staged, content_md5, &expected).map_err(to_s3));
    if let Err(e) = verified {
        storage.discard(staged).await;
        return Err(e);
    }
    Ok(staged)
}

#[async_trait::async_trait]
impl S3 for NuageS3 {
    // ---------------- buckets ----------------

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> Res<CreateBucketOutput> {
        let owner = caller_tenant(&req)?;
        let input = req.input;
        let location = input
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
            .map(|l| l.as_str().to_owned());
        let record = self
            .storage
            .create_bucket(&input.bucket, location.as_deref(), &owner)
            .await
            .map_err(to_s3)?;
        ok(CreateBucketOutput {
            location: Some(format!("/{}", record.name)),
        })
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> Res<HeadBucketOutput> {
        let record = self
            .storage
            .bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        ok(HeadBucketOutput {
            bucket_region: Some(record.region),
            ..Default::default()
        })
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> Res<DeleteBucketOutput> {
        self.storage
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        ok(DeleteBucketOutput {})
    }

    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> Res<ListBucketsOutput> {
        // A tenant sees its own buckets only, whatever its policies say.
        let tenant = caller_tenant(&req)?;
        let prefix = req.input.prefix.unwrap_or_default();
        let buckets = self
            .storage
            .list_buckets()
            .await
            .map_err(to_s3)?
            .into_iter()
            .filter(|b| b.owner == tenant && b.name.starts_with(&prefix))
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_unix_ns)),
                bucket_region: Some(b.region),
            })
            .collect();
        ok(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some(tenant.clone()),
                id: Some(tenant),
            }),
            ..Default::default()
        })
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> Res<GetBucketLocationOutput> {
        let record = self
            .storage
            .bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        ok(GetBucketLocationOutput {
            location_constraint: Some(BucketLocationConstraint::from(record.region)),
        })
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> Res<GetBucketVersioningOutput> {
        let record = self
            .storage
            .bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        ok(GetBucketVersioningOutput {
            status: versioning_status(record.versioning),
            mfa_delete: None,
        })
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> Res<PutBucketVersioningOutput> {
        let input = req.input;
        let enabled = match input
            .versioning_configuration
            .status
            .as_ref()
            .map(BucketVersioningStatus::as_str)
        {
            Some(BucketVersioningStatus::ENABLED) => true,
            Some(BucketVersioningStatus::SUSPENDED) => false,
            _ => {
                return Err(S3Error::with_message(
                    S3ErrorCode::MalformedXML,
                    "the versioning status must be Enabled or Suspended",
                ));
            }
        };
        self.storage
            .set_versioning(&input.bucket, enabled)
            .await
            .map_err(to_s3)?;
        ok(PutBucketVersioningOutput {})
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> Res<GetBucketTaggingOutput> {
        let record = self
            .storage
            .bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        let tags = record
            .tags
            .ok_or_else(|| to_s3(StorageError::NoSuchTagSet))?;
        ok(GetBucketTaggingOutput {
            tag_set: convert::tags_to_dto(&tags),
        })
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> Res<PutBucketTaggingOutput> {
        let input = req.input;
        let tags = convert::tags_from_dto(input.tagging.tag_set);
        self.storage
            .set_bucket_tags(&input.bucket, Some(tags))
            .await
            .map_err(to_s3)?;
        ok(PutBucketTaggingOutput {})
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> Res<DeleteBucketTaggingOutput> {
        self.storage
            .set_bucket_tags(&req.input.bucket, None)
            .await
            .map_err(to_s3)?;
        ok(DeleteBucketTaggingOutput {})
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> Res<GetBucketCorsOutput> {
        let record = self
            .storage
            .bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        let rules = record
            .cors
            .ok_or_else(|| to_s3(StorageError::NoSuchCorsConfiguration))?;
        ok(GetBucketCorsOutput {
            cors_rules: Some(rules.iter().map(cors_to_dto).collect()),
        })
    }

    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> Res<PutBucketCorsOutput> {
        let input = req.input;
        let rules = input
            .cors_configuration
            .cors_rules
            .into_iter()
            .map(cors_from_dto)
            .collect();
        self.storage
            .set_bucket_cors(&input.bucket, Some(rules))
            .await
            .map_err(to_s3)?;
        ok(PutBucketCorsOutput {})
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> Res<DeleteBucketCorsOutput> {
        self.storage
            .set_bucket_cors(&req.input.bucket, None)
            .await
            .map_err(to_s3)?;
        ok(DeleteBucketCorsOutput {})
    }

    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> Res<PutBucketPolicyOutput> {
        let input = req.input;
        let record = self.storage.bucket(&input.bucket).await.map_err(to_s3)?;
        let summary =
            nuage_iam::check_policy_document(&input.policy, nuage_iam::PolicyKind::Bucket)
                .map_err(|e| S3Error::with_message(S3ErrorCode::MalformedPolicy, e.to_string()))?;
        let tenant_blocks = self
            .iam
            .tenant(&record.owner)
            .await
            .is_ok_and(|t| t.public_access_block.block_public_policy);
        if summary.is_public
            && (tenant_blocks
                || record
                    .public_access_block
                    .is_some_and(|b| b.block_public_policy))
        {
            return Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                "the bucket's Block Public Access settings forbid a public bucket policy",
            ));
        }
        self.storage
            .set_bucket_policy(&input.bucket, Some(input.policy))
            .await
            .map_err(to_s3)?;
        no_content(PutBucketPolicyOutput {})
    }

    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> Res<GetBucketPolicyOutput> {
        let record = self
            .storage
            .bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        let policy = record.policy.ok_or_else(no_bucket_policy)?;
        ok(GetBucketPolicyOutput {
            policy: Some(policy),
        })
    }

    async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> Res<DeleteBucketPolicyOutput> {
        self.storage
            .set_bucket_policy(&req.input.bucket, None)
            .await
            .map_err(to_s3)?;
        no_content(DeleteBucketPolicyOutput {})
    }

    async fn get_bucket_policy_status(
        &self,
        req: S3Request<GetBucketPolicyStatusInput>,
    ) -> Res<GetBucketPolicyStatusOutput> {
        let record = self
            .storage
            .bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        let policy = record.policy.ok_or_else(no_bucket_policy)?;
        let is_public = nuage_iam::check_policy_document(&policy, nuage_iam::PolicyKind::Bucket)
            .map(|s| s.is_public)
            .unwrap_or(false);
        ok(GetBucketPolicyStatusOutput {
            policy_status: Some(PolicyStatus {
                is_public: Some(is_public),
            }),
        })
    }

    async fn put_public_access_block(
        &self,
        req: S3Request<PutPublicAccessBlockInput>,
    ) -> Res<PutPublicAccessBlockOutput> {
        let input = req.input;
        let c = input.public_access_block_configuration;
        let block = nuage_storage::PublicAccessBlock {
            block_public_acls: setting(c.block_public_acls),
            ignore_public_acls: setting(c.ignore_public_acls),
            block_public_policy: setting(c.block_public_policy),
            restrict_public_buckets: setting(c.restrict_public_buckets),
        };
        self.storage
            .set_public_access_block(&input.bucket, Some(block))
            .await
            .map_err(to_s3)?;
        ok(PutPublicAccessBlockOutput {})
    }

    async fn get_public_access_block(
        &self,
        req: S3Request<GetPublicAccessBlockInput>,
    ) -> Res<GetPublicAccessBlockOutput> {
        let record = self
            .storage
            .bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        let b = record.public_access_block.ok_or_else(|| {
            let mut err = S3Error::with_message(
                S3ErrorCode::Custom("NoSuchPublicAccessBlockConfiguration".into()),
                "the public access block configuration was not found",
            );
            err.set_status_code(http::StatusCode::NOT_FOUND);
            err
        })?;
        ok(GetPublicAccessBlockOutput {
            public_access_block_configuration: Some(PublicAccessBlockConfiguration {
                block_public_acls: Some(b.block_public_acls),
                ignore_public_acls: Some(b.ignore_public_acls),
                block_public_policy: Some(b.block_public_policy),
                restrict_public_buckets: Some(b.restrict_public_buckets),
            }),
        })
    }

    async fn delete_public_access_block(
        &self,
        req: S3Request<DeletePublicAccessBlockInput>,
    ) -> Res<DeletePublicAccessBlockOutput> {
        self.storage
            .set_public_access_block(&req.input.bucket, None)
            .await
            .map_err(to_s3)?;
        no_content(DeletePublicAccessBlockOutput {})
    }

    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> Res<GetBucketEncryptionOutput> {
        let record = self
            .storage
            .bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        // Without a configuration every bucket still encrypts with SSE-S3,
        // which is what S3 reports for buckets that never set one.
        let (algorithm, key_id, bucket_key) = match record.encryption {
            Some(e) => (
                ServerSideEncryption::from(e.sse_algorithm),
                e.kms_master_key_id,
                Some(e.bucket_key_enabled),
            ),
            None => (sse_s3(), None, Some(false)),
        };
        ok(GetBucketEncryptionOutput {
            server_side_encryption_configuration: Some(ServerSideEncryptionConfiguration {
                rules: vec![ServerSideEncryptionRule {
                    apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                        sse_algorithm: algorithm,
                        kms_master_key_id: key_id,
                    }),
                    bucket_key_enabled: bucket_key,
                }],
            }),
        })
    }

    async fn put_bucket_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> Res<PutBucketEncryptionOutput> {
        let input = req.input;
        self.storage.bucket(&input.bucket).await.map_err(to_s3)?;
        let encryption = sse::bucket_encryption(&input.server_side_encryption_configuration)?;
        self.storage
            .set_bucket_encryption(&input.bucket, Some(encryption))
            .await
            .map_err(to_s3)?;
        ok(PutBucketEncryptionOutput {})
    }

    async fn delete_bucket_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> Res<DeleteBucketEncryptionOutput> {
        self.storage
            .set_bucket_encryption(&req.input.bucket, None)
            .await
            .map_err(to_s3)?;
        no_content(DeleteBucketEncryptionOutput {})
    }

    // ---------------- objects ----------------

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> Res<PutObjectOutput> {
        let storage = self.storage_for(&req);
        let caller = caller_identity(&req);
        let headers = req.headers;
        let trailers = req.trailing_headers;
        let input = req.input;
        let customer = crate::sse::sse_c_key!(input, sse_customer, &req.extensions)?;
        let write = self
            .write_encryption(
                caller.as_ref(),
                &input.bucket,
                &input.key,
                WriteSseRequest {
                    sse: input.server_side_encryption.as_ref(),
                    kms_key_id: input.ssekms_key_id.as_deref(),
                    context: input.ssekms_encryption_context.as_deref(),
                    customer,
                },
            )
            .await?;
        let condition = write_condition(input.if_none_match.as_ref(), input.if_match.as_ref())?;
        let tags = convert::parse_tagging_header(input.tagging.as_deref())?;
        let attributes = ObjectAttributes {
            content: convert::content(ContentInput {
                content_type: input.content_type.map(|m| m.to_string()),
                content_encoding: input.content_encoding,
                content_disposition: input.content_disposition,
                content_language: input.content_language,
                cache_control: input.cache_control,
                expires: input.expires,
                website_redirect_location: input.website_redirect_location,
            }),
            user_metadata: convert::user_metadata(input.metadata),
            tags,
        };
        Storage::validate_attributes(&attributes).map_err(to_s3)?;
        let announced = convert::announced_checksums(
            input.checksum_crc32,
            input.checksum_crc32c,
            input.checksum_crc64nvme,
            input.checksum_sha1,
            input.checksum_sha256,
        );
        let algorithms = algorithms_for(&headers, &announced, input.checksum_algorithm.as_ref());
        let staged = stage_body(
            &storage,
            Upload {
                bucket: &input.bucket,
                key: &input.key,
                body: input.body,
                content_length: input.content_length,
                size_bytes_max: limits::PUT_OBJECT_SIZE_BYTES_MAX,
                protection: write.protection(),
            },
            &algorithms,
            ClientDigests {
                content_md5: input.content_md5.as_deref(),
                announced,
                trailers: trailers.as_ref(),
            },
        )
        .await?;
        let checksums = stored_checksums(&staged.digests.checksums, &algorithms);
        let placed = crate::audit::placed(&staged);
        let record = storage
            .put_object(
                &input.bucket,
                &input.key,
                staged,
                attributes,
                checksums,
                condition,
            )
            .await
            .map_err(to_s3)?;
        let c = &record.checksums;
        let reported = Reported::of_record(&record);
        // The write wrapped a new data key: the log names the key.
        crate::audit::note_key_use(&req.extensions, &reported);
        crate::audit::note_placement(&req.extensions, placed);
        let (sse_customer_algorithm, sse_customer_key_md5) = reported.customer(write.customer());
        ok(PutObjectOutput {
            server_side_encryption: reported.sse(),
            ssekms_key_id: reported.kms_key_id(),
            ssekms_encryption_context: reported.context(),
            sse_customer_algorithm,
            sse_customer_key_md5,
            e_tag: Some(convert::etag(&record.etag)),
            version_id: written_version_id(&storage, &record).await,
            checksum_crc32: c.crc32.clone(),
            checksum_crc32c: c.crc32c.clone(),
            checksum_crc64nvme: c.crc64nvme.clone(),
            checksum_sha1: c.sha1.clone(),
            checksum_sha256: c.sha256.clone(),
            checksum_type: convert::checksum_type(c),
            size: Some(size_i64(record.size)),
            ..Default::default()
        })
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> Res<GetObjectOutput> {
        let storage = self.storage_for(&req);
        let caller = caller_identity(&req);
        let input = req.input;
        let customer = crate::sse::sse_c_key!(input, sse_customer, &req.extensions)?;
        let plan = self
            .plan_read(ReadRequest {
                bucket: &input.bucket,
                key: &input.key,
                version_id: input.version_id.as_deref(),
                if_match: input.if_match.as_ref(),
                if_none_match: input.if_none_match.as_ref(),
                if_modified_since: input.if_modified_since.as_ref(),
                if_unmodified_since: input.if_unmodified_since.as_ref(),
                part_number: input.part_number,
                range: input.range.as_ref(),
                checksum_mode: input.checksum_mode.as_ref(),
                customer: customer.as_ref(),
            })
            .await?;
        self.authorize_read(caller.as_ref(), &plan.record).await?;
        let (offset, len) = plan.span.unwrap_or((0, plan.record.size));
        let body = storage
            .read_object(&plan.record, customer.as_ref(), offset, len)
            .await
            .map_err(to_s3)?;
        // The read unwrapped the object's data key: the log names the key.
        crate::audit::note_key_use(&req.extensions, &Reported::of_record(&plan.record));
        let overrides = Overrides {
            content_type: input.response_content_type,
            content_encoding: input.response_content_encoding,
            content_disposition: input.response_content_disposition,
            content_language: input.response_content_language,
            cache_control: input.response_cache_control,
            expires: input.response_expires,
        };
        let mut output = object_read_output!(
            GetObjectOutput,
            plan,
            overrides,
            input.version_id,
            input.part_number,
            customer.as_ref()
        );
        output.body = Some(StreamingBlob::wrap(
            body.map(|r| r.map_err(std::io::Error::other)),
        ));
        output.tag_count = (!plan.record.tags.is_empty())
            .then(|| i32::try_from(plan.record.tags.len()).unwrap_or(0));
        Ok(plan.response(output))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> Res<HeadObjectOutput> {
        let input = req.input;
        let customer = crate::sse::sse_c_key!(input, sse_customer, &req.extensions)?;
        let plan = self
            .plan_read(ReadRequest {
                bucket: &input.bucket,
                key: &input.key,
                version_id: input.version_id.as_deref(),
                if_match: input.if_match.as_ref(),
                if_none_match: input.if_none_match.as_ref(),
                if_modified_since: input.if_modified_since.as_ref(),
                if_unmodified_since: input.if_unmodified_since.as_ref(),
                part_number: input.part_number,
                range: input.range.as_ref(),
                checksum_mode: input.checksum_mode.as_ref(),
                customer: customer.as_ref(),
            })
            .await?;
        let overrides = Overrides {
            content_type: input.response_content_type,
            content_encoding: input.response_content_encoding,
            content_disposition: input.response_content_disposition,
            content_language: input.response_content_language,
            cache_control: input.response_cache_control,
            expires: input.response_expires,
        };
        let output = object_read_output!(
            HeadObjectOutput,
            plan,
            overrides,
            input.version_id,
            input.part_number,
            customer.as_ref()
        );
        Ok(plan.response(output))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> Res<DeleteObjectOutput> {
        let input = req.input;
        let outcome = self
            .storage
            .delete_object(&input.bucket, &input.key, input.version_id.as_deref())
            .await
            .map_err(to_s3)?;
        no_content(DeleteObjectOutput {
            delete_marker: outcome.delete_marker.then_some(true),
            version_id: outcome.version_id,
            ..Default::default()
        })
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> Res<DeleteObjectsOutput> {
        let input = req.input;
        let objects = input.delete.objects;
        if objects.len() > limits::DELETE_OBJECTS_KEYS_MAX {
            return Err(S3Error::with_message(
                S3ErrorCode::MalformedXML,
                format!(
                    "a DeleteObjects request names at most {} keys",
                    limits::DELETE_OBJECTS_KEYS_MAX
                ),
            ));
        }
        self.storage.bucket(&input.bucket).await.map_err(to_s3)?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in objects {
            match self
                .storage
                .delete_object(&input.bucket, &object.key, object.version_id.as_deref())
                .await
            {
                Ok(outcome) => {
                    if !quiet {
                        let marker_id = outcome
                            .delete_marker
                            .then(|| outcome.version_id.clone())
                            .flatten();
                        deleted.push(DeletedObject {
                            key: Some(object.key),
                            version_id: object.version_id,
                            delete_marker: outcome.delete_marker.then_some(true),
                            delete_marker_version_id: marker_id,
                        });
                    }
                }
                Err(e) => {
                    let s3 = to_s3(e);
                    errors.push(Error {
                        code: Some(s3.code().as_str().to_owned()),
                        message: s3.message().map(str::to_owned),
                        key: Some(object.key),
                        version_id: object.version_id,
                    });
                }
            }
        }
        ok(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        })
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> Res<CopyObjectOutput> {
        let storage = self.storage_for(&req);
        let caller = caller_identity(&req);
        let input = req.input;
        let customer = crate::sse::sse_c_key!(input, sse_customer, &req.extensions)?;
        let source_customer =
            crate::sse::sse_c_key!(input, copy_source_sse_customer, &req.extensions)?;
        // A copy onto itself may change nothing but its encryption (AWS's
        // key rotation for SSE-C and SSE-KMS objects).
        let changes_encryption = customer.is_some()
            || input.server_side_encryption.is_some()
            || input.ssekms_key_id.is_some();
        let write = self
            .write_encryption(
                caller.as_ref(),
                &input.bucket,
                &input.key,
                WriteSseRequest {
                    sse: input.server_side_encryption.as_ref(),
                    kms_key_id: input.ssekms_key_id.as_deref(),
                    context: input.ssekms_encryption_context.as_deref(),
                    customer,
                },
            )
            .await?;
        let (src_bucket, src_key, src_version) = copy_source(&input.copy_source)?;
        let source = storage
            .head_object(&src_bucket, &src_key, src_version.as_deref())
            .await
            .map_err(|e| match e {
                StorageError::DeleteMarker { .. } => to_s3(StorageError::NoSuchKey),
                other => to_s3(other),
            })?;
        storage
            .check_customer_key(&source, source_customer.as_ref())
            .await
            .map_err(to_s3)?;
        let conditions = read_conditions(
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        );
        // For copies every failed condition is 412, never 304.
        evaluate_read_conditions(&source, &conditions)
            .map_err(|_| to_s3(StorageError::PreconditionFailed))?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let replace_tags = input
            .tagging_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == TaggingDirective::REPLACE);
        if src_bucket == input.bucket
            && src_key == input.key
            && src_version.is_none()
            && !replace
            && !replace_tags
            && !changes_encryption
        {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                "this copy request is illegal because it is trying to copy an object to itself without changing the object's metadata",
            ));
        }
        let attributes = ObjectAttributes {
            content: if replace {
                convert::content(ContentInput {
                    content_type: input.content_type.map(|m| m.to_string()),
                    content_encoding: input.content_encoding,
                    content_disposition: input.content_disposition,
                    content_language: input.content_language,
                    cache_control: input.cache_control,
                    expires: input.expires,
                    website_redirect_location: input.website_redirect_location,
                })
            } else {
                source.content.clone()
            },
            user_metadata: if replace {
                convert::user_metadata(input.metadata)
            } else {
                source.user_metadata.clone()
            },
            tags: if replace_tags {
                convert::parse_tagging_header(input.tagging.as_deref())?
            } else {
                source.tags.clone()
            },
        };
        Storage::validate_attributes(&attributes).map_err(to_s3)?;
        self.authorize_read(caller.as_ref(), &source).await?;
        let mut algorithms: Vec<ChecksumAlgorithm> = ChecksumAlgorithm::ALL
            .into_iter()
            .filter(|a| a.get(&source.checksums).is_some())
            .collect();
        if let Some(a) = input
            .checksum_algorithm
            .as_ref()
            .and_then(|a| ChecksumAlgorithm::parse(a.as_str()))
        {
            algorithms = vec![a];
        }
        if algorithms.is_empty() {
            algorithms.push(ChecksumAlgorithm::Crc64Nvme);
        }
        // Within a tenant and region the copy shares the source's blobs,
        // its data keys rewrapped for it: no byte is read or written.
        let shared = storage
            .share_copy(
                &source,
                source_customer.as_ref(),
                &input.bucket,
                &input.key,
                write.protection(),
            )
            .await
            .map_err(to_s3)?;
        let record = if let Some(mut shared) = shared {
            // The content is the source's, so are its ETag and checksums;
            // a checksum the source lacks is computed by reading it. A copy
            // of a multipart object is a single-part object, as in S3: its
            // ETag is the MD5 of the content and its checksums cover the
            // whole object, so those are computed by reading it too (still
            // nothing is written).
            let multipart = source.segments.iter().any(|s| s.part_etag.is_some());
            let checksums = if !multipart
                && algorithms
                    .iter()
                    .all(|a| a.get(&source.checksums).is_some())
            {
                let mut kept = stored_checksums(&source.checksums, &algorithms);
                kept.checksum_type
                    .clone_from(&source.checksums.checksum_type);
                kept
            } else {
                let digests = storage
                    .digest_object(&source, source_customer.as_ref(), &algorithms)
                    .await
                    .map_err(to_s3)?;
                shared.etag = digests.md5_hex();
                let mut computed = stored_checksums(&digests.checksums, &algorithms);
                computed.checksum_type = Some("FULL_OBJECT".into());
                computed
            };
            storage
                .put_copy(shared, attributes, checksums, WriteCondition::None)
                .await
                .map_err(to_s3)?
        } else {
            let staged = storage
                .stage_copy(
                    &source,
                    source_customer.as_ref(),
                    0,
                    source.size,
                    &input.bucket,
                    &input.key,
                    write.protection(),
                )
                .await
                .map_err(to_s3)?;
            // The staged copy computed the source's algorithms; compute any
            // other on demand.
            let checksums = if algorithms
                .iter()
                .all(|a| a.get(&staged.digests.checksums).is_some())
            {
                stored_checksums(&staged.digests.checksums, &algorithms)
            } else {
                let digests = storage
                    .digest_object(&source, source_customer.as_ref(), &algorithms)
                    .await
                    .map_err(to_s3)?;
                stored_checksums(&digests.checksums, &algorithms)
            };
            let placed = crate::audit::placed(&staged);
            let record = storage
                .put_object(
                    &input.bucket,
                    &input.key,
                    staged,
                    attributes,
                    checksums,
                    WriteCondition::None,
                )
                .await
                .map_err(to_s3)?;
            crate::audit::note_placement(&req.extensions, placed);
            record
        };
        let c = &record.checksums;
        let reported = Reported::of_record(&record);
        // The write wrapped a new data key: the log names the key.
        crate::audit::note_key_use(&req.extensions, &reported);
        let (sse_customer_algorithm, sse_customer_key_md5) = reported.customer(write.customer());
        ok(CopyObjectOutput {
            server_side_encryption: reported.sse(),
            ssekms_key_id: reported.kms_key_id(),
            ssekms_encryption_context: reported.context(),
            sse_customer_algorithm,
            sse_customer_key_md5,
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(convert::etag(&record.etag)),
                last_modified: Some(timestamp(record.last_modified_unix_ns)),
                checksum_crc32: c.crc32.clone(),
                checksum_crc32c: c.crc32c.clone(),
                checksum_crc64nvme: c.crc64nvme.clone(),
                checksum_sha1: c.sha1.clone(),
                checksum_sha256: c.sha256.clone(),
                checksum_type: convert::checksum_type(c),
            }),
            copy_source_version_id: version_id_out(&source),
            version_id: written_version_id(&storage, &record).await,
            ..Default::default()
        })
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> Res<GetObjectTaggingOutput> {
        let input = req.input;
        let record = self
            .storage
            .head_object(&input.bucket, &input.key, input.version_id.as_deref())
            .await
            .map_err(to_s3)?;
        ok(GetObjectTaggingOutput {
            tag_set: convert::tags_to_dto(&record.tags),
            version_id: version_id_out(&record),
        })
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> Res<PutObjectTaggingOutput> {
        let input = req.input;
        let tags = convert::tags_from_dto(input.tagging.tag_set);
        let record = self
            .storage
            .set_object_tags(&input.bucket, &input.key, input.version_id.as_deref(), tags)
            .await
            .map_err(to_s3)?;
        ok(PutObjectTaggingOutput {
            version_id: version_id_out(&record),
        })
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> Res<DeleteObjectTaggingOutput> {
        let input = req.input;
        let record = self
            .storage
            .set_object_tags(
                &input.bucket,
                &input.key,
                input.version_id.as_deref(),
                Vec::new(),
            )
            .await
            .map_err(to_s3)?;
        ok(DeleteObjectTaggingOutput {
            version_id: version_id_out(&record),
        })
    }

    // ---------------- listing ----------------

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> Res<ListObjectsV2Output> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = match (&input.continuation_token, &input.start_after) {
            (Some(token), _) => Some(decode_token(token)?),
            (None, start_after) => start_after.clone().filter(|s| !s.is_empty()),
        };
        let max = max_keys(input.max_keys)?;
        let query = ListQuery {
            prefix: prefix.clone(),
            delimiter: input.delimiter.clone().filter(|d| !d.is_empty()),
            after,
            max_keys: max,
        };
        let page = self
            .storage
            .list_objects(&input.bucket, &query)
            .await
            .map_err(to_s3)?;
        let encode = url_encoded(input.encoding_type.as_ref());
        let enc = |s: String| if encode { convert::url_encode(&s) } else { s };
        let key_count = page.objects.len() + page.common_prefixes.len();
        let fetch_owner = input.fetch_owner.unwrap_or(false);
        let contents = page
            .objects
            .iter()
            .map(|r| {
                let mut o = convert::object_summary(r);
                o.key = o.key.map(&enc);
                if fetch_owner {
                    o.owner = Some(owner());
                }
                o
            })
            .collect();
        ok(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(prefix)),
            delimiter: input.delimiter.map(&enc),
            max_keys: input.max_keys.or(Some(1000)),
            key_count: Some(i32::try_from(key_count).unwrap_or(i32::MAX)),
            continuation_token: input.continuation_token,
            start_after: input.start_after.map(&enc),
            is_truncated: Some(page.truncated),
            next_continuation_token: page
                .next_after
                .map(|n| URL_SAFE_NO_PAD.encode(n.as_bytes())),
            contents: Some(contents),
            common_prefixes: Some(
                page.common_prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(enc(p)),
                    })
                    .collect(),
            ),
            encoding_type: input.encoding_type,
            ..Default::default()
        })
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> Res<ListObjectsOutput> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = max_keys(input.max_keys)?;
        let query = ListQuery {
            prefix: prefix.clone(),
            delimiter: input.delimiter.clone().filter(|d| !d.is_empty()),
            after: input.marker.clone().filter(|m| !m.is_empty()),
            max_keys: max,
        };
        let page = self
            .storage
            .list_objects(&input.bucket, &query)
            .await
            .map_err(to_s3)?;
        let encode = url_encoded(input.encoding_type.as_ref());
        let enc = |s: String| if encode { convert::url_encode(&s) } else { s };
        let contents = page
            .objects
            .iter()
            .map(|r| {
                let mut o = convert::object_summary(r);
                o.key = o.key.map(&enc);
                o.owner = Some(owner());
                o
            })
            .collect();
        ok(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(prefix)),
            delimiter: input.delimiter.map(&enc),
            marker: Some(enc(input.marker.unwrap_or_default())),
            max_keys: input.max_keys.or(Some(1000)),
            is_truncated: Some(page.truncated),
            next_marker: page.next_after.map(&enc),
            contents: Some(contents),
            common_prefixes: Some(
                page.common_prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(enc(p)),
                    })
                    .collect(),
            ),
            encoding_type: input.encoding_type,
            ..Default::default()
        })
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> Res<ListObjectVersionsOutput> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let query = VersionListQuery {
            prefix: prefix.clone(),
            delimiter: input.delimiter.clone().filter(|d| !d.is_empty()),
            key_marker: input.key_marker.clone().filter(|k| !k.is_empty()),
            version_id_marker: input.version_id_marker.clone().filter(|v| !v.is_empty()),
            max_keys: max_keys(input.max_keys)?,
        };
        let page = self
            .storage
            .list_object_versions(&input.bucket, &query)
            .await
            .map_err(to_s3)?;
        let encode = url_encoded(input.encoding_type.as_ref());
        let enc = |s: String| if encode { convert::url_encode(&s) } else { s };
        // The newest version of a key is the first one listed for it, unless the
        // page resumed inside that key.
        let mut previous_key = query
            .version_id_marker
            .as_ref()
            .and(query.key_marker.clone());
        let mut versions = Vec::new();
        let mut markers = Vec::new();
        for r in &page.versions {
            let is_latest = previous_key.as_deref() != Some(r.key.as_str());
            previous_key = Some(r.key.clone());
            if r.delete_marker {
                markers.push(DeleteMarkerEntry {
                    key: Some(enc(r.key.clone())),
                    version_id: Some(r.version_id.clone()),
                    is_latest: Some(is_latest),
                    last_modified: Some(timestamp(r.last_modified_unix_ns)),
                    owner: Some(owner()),
                });
            } else {
                versions.push(ObjectVersion {
                    key: Some(enc(r.key.clone())),
                    version_id: Some(r.version_id.clone()),
                    is_latest: Some(is_latest),
                    last_modified: Some(timestamp(r.last_modified_unix_ns)),
                    e_tag: Some(convert::etag(&r.etag)),
                    size: Some(size_i64(r.size)),
                    owner: Some(owner()),
                    storage_class: Some(ObjectVersionStorageClass::from_static(
                        ObjectVersionStorageClass::STANDARD,
                    )),
                    checksum_algorithm: convert::checksum_algorithms(&r.checksums),
                    checksum_type: convert::checksum_type(&r.checksums),
                    ..Default::default()
                });
            }
        }
        ok(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(prefix)),
            delimiter: input.delimiter.map(&enc),
            key_marker: input.key_marker.map(&enc),
            version_id_marker: input.version_id_marker,
            max_keys: input.max_keys.or(Some(1000)),
            is_truncated: Some(page.truncated),
            next_key_marker: page.next_key_marker.map(&enc),
            next_version_id_marker: page.next_version_id_marker,
            versions: Some(versions),
            delete_markers: Some(markers),
            common_prefixes: Some(
                page.common_prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(enc(p)),
                    })
                    .collect(),
            ),
            encoding_type: input.encoding_type,
            ..Default::default()
        })
    }

    // ---------------- multipart ----------------

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> Res<CreateMultipartUploadOutput> {
        let caller = caller_identity(&req);
        let input = req.input;
        let customer = crate::sse::sse_c_key!(input, sse_customer, &req.extensions)?;
        let write = self
            .write_encryption(
                caller.as_ref(),
                &input.bucket,
                &input.key,
                WriteSseRequest {
                    sse: input.server_side_encryption.as_ref(),
                    kms_key_id: input.ssekms_key_id.as_deref(),
                    context: input.ssekms_encryption_context.as_deref(),
                    customer,
                },
            )
            .await?;
        let tags = convert::parse_tagging_header(input.tagging.as_deref())?;
        let attributes = ObjectAttributes {
            content: convert::content(ContentInput {
                content_type: input.content_type.map(|m| m.to_string()),
                content_encoding: input.content_encoding,
                content_disposition: input.content_disposition,
                content_language: input.content_language,
                cache_control: input.cache_control,
                expires: input.expires,
                website_redirect_location: input.website_redirect_location,
            }),
            user_metadata: convert::user_metadata(input.metadata),
            tags,
        };
        let algorithm = match input.checksum_algorithm.as_ref() {
            None => None,
            Some(a) => Some(ChecksumAlgorithm::parse(a.as_str()).ok_or_else(|| {
                invalid(format!("unsupported checksum algorithm `{}`", a.as_str()))
            })?),
        };
        let checksum_type = input.checksum_type.as_ref().map(|t| t.as_str().to_owned());
        if checksum_type.as_deref() == Some("FULL_OBJECT") {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                "full-object checksums for multipart uploads are not supported yet; use COMPOSITE",
            ));
        }
        let upload = self
            .storage
            .create_upload(
                &input.bucket,
                &input.key,
                attributes,
                algorithm,
                checksum_type
                    .clone()
                    .or(algorithm.map(|_| "COMPOSITE".to_owned())),
                write.protection(),
            )
            .await
            .map_err(to_s3)?;
        let reported = Reported::of_upload(&upload);
        let (sse_customer_algorithm, sse_customer_key_md5) = reported.customer(write.customer());
        ok(CreateMultipartUploadOutput {
            server_side_encryption: reported.sse(),
            ssekms_key_id: reported.kms_key_id(),
            ssekms_encryption_context: reported.context(),
            sse_customer_algorithm,
            sse_customer_key_md5,
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload.upload_id),
            checksum_algorithm: input.checksum_algorithm,
            checksum_type: upload.checksum_type.map(ChecksumType::from),
            ..Default::default()
        })
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> Res<UploadPartOutput> {
        let storage = self.storage_for(&req);
        let caller = caller_identity(&req);
        let headers = req.headers;
        let trailers = req.trailing_headers;
        let input = req.input;
        let customer = crate::sse::sse_c_key!(input, sse_customer, &req.extensions)?;
        Storage::validate_part_number(input.part_number).map_err(to_s3)?;
        let upload = storage
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await
            .map_err(to_s3)?;
        storage
            .check_upload_key(&upload, customer.as_ref())
            .await
            .map_err(to_s3)?;
        self.authorize_upload_key(caller.as_ref(), &upload).await?;
        let announced = convert::announced_checksums(
            input.checksum_crc32,
            input.checksum_crc32c,
            input.checksum_crc64nvme,
            input.checksum_sha1,
            input.checksum_sha256,
        );
        let mut algorithms =
            algorithms_for(&headers, &announced, input.checksum_algorithm.as_ref());
        if let Some(a) = upload
            .checksum_algorithm
            .as_deref()
            .and_then(ChecksumAlgorithm::parse)
        {
            algorithms.push(a);
            algorithms.dedup();
        }
        let staged = stage_body(
            &storage,
            Upload {
                bucket: &input.bucket,
                key: &input.key,
                body: input.body,
                content_length: input.content_length,
                size_bytes_max: limits::PART_SIZE_BYTES_MAX,
                protection: upload_protection(&upload, customer.as_ref()),
            },
            &algorithms,
            ClientDigests {
                content_md5: input.content_md5.as_deref(),
                announced,
                trailers: trailers.as_ref(),
            },
        )
        .await?;
        let checksums = stored_checksums(&staged.digests.checksums, &algorithms);
        let placed = crate::audit::placed(&staged);
        let part = storage
            .put_part(
                &input.bucket,
                &input.key,
                &input.upload_id,
                input.part_number,
                staged,
                checksums,
            )
            .await
            .map_err(to_s3)?;
        let c = &part.checksums;
        let reported = Reported::of_part(&part);
        // The part's blob got a new data key, wrapped: the log names the key.
        crate::audit::note_key_use(&req.extensions, &reported);
        crate::audit::note_placement(&req.extensions, placed);
        let (sse_customer_algorithm, sse_customer_key_md5) = reported.customer(customer.as_ref());
        ok(UploadPartOutput {
            server_side_encryption: reported.sse(),
            ssekms_key_id: reported.kms_key_id(),
            sse_customer_algorithm,
            sse_customer_key_md5,
            e_tag: Some(convert::etag(&part.etag)),
            checksum_crc32: c.crc32.clone(),
            checksum_crc32c: c.crc32c.clone(),
            checksum_crc64nvme: c.crc64nvme.clone(),
            checksum_sha1: c.sha1.clone(),
            checksum_sha256: c.sha256.clone(),
            ..Default::default()
        })
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> Res<UploadPartCopyOutput> {
        let storage = self.storage_for(&req);
        let caller = caller_identity(&req);
        let input = req.input;
        let customer = crate::sse::sse_c_key!(input, sse_customer, &req.extensions)?;
        let source_customer =
            crate::sse::sse_c_key!(input, copy_source_sse_customer, &req.extensions)?;
        Storage::validate_part_number(input.part_number).map_err(to_s3)?;
        let upload = storage
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await
            .map_err(to_s3)?;
        storage
            .check_upload_key(&upload, customer.as_ref())
            .await
            .map_err(to_s3)?;
        self.authorize_upload_key(caller.as_ref(), &upload).await?;
        let (src_bucket, src_key, src_version) = copy_source(&input.copy_source)?;
        let source = storage
            .head_object(&src_bucket, &src_key, src_version.as_deref())
            .await
            .map_err(|e| match e {
                StorageError::DeleteMarker { .. } => to_s3(StorageError::NoSuchKey),
                other => to_s3(other),
            })?;
        storage
            .check_customer_key(&source, source_customer.as_ref())
            .await
            .map_err(to_s3)?;
        let conditions = read_conditions(
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        );
        evaluate_read_conditions(&source, &conditions)
            .map_err(|_| to_s3(StorageError::PreconditionFailed))?;
        let (offset, len) = copy_range(input.copy_source_range.as_deref(), source.size)?;
        if len > limits::PART_SIZE_BYTES_MAX {
            return Err(to_s3(StorageError::EntityTooLarge(
                "a copied part may be at most 5 GiB".into(),
            )));
        }
        self.authorize_read(caller.as_ref(), &source).await?;
        let mut algorithms = vec![ChecksumAlgorithm::Crc64Nvme];
        if let Some(a) = upload
            .checksum_algorithm
            .as_deref()
            .and_then(ChecksumAlgorithm::parse)
        {
            algorithms = vec![a];
        }
        // A part that is a whole single-part object shares its blob, the
        // data key rewrapped for the upload; its ETag is the source's.
        let whole_single_part = offset == 0
            && len == source.size
            && source.segments.len() == 1
            && source.segments.iter().all(|s| s.part_etag.is_none());
        let shared = if whole_single_part {
            storage
                .share_copy(
                    &source,
                    source_customer.as_ref(),
                    &input.bucket,
                    &input.key,
                    upload_protection(&upload, customer.as_ref()),
                )
                .await
                .map_err(to_s3)?
        } else {
            None
        };
        let part = if let Some(shared) = shared {
            // The part is the whole object: the source's full-object
            // checksums are the part's; one it lacks is computed by reading.
            let full_object = source
                .checksums
                .checksum_type
                .as_deref()
                .is_none_or(|t| t == "FULL_OBJECT");
            let checksums = if full_object
                && algorithms
                    .iter()
                    .all(|a| a.get(&source.checksums).is_some())
            {
                stored_checksums(&source.checksums, &algorithms)
            } else {
                let digests = storage
                    .digest_object(&source, source_customer.as_ref(), &algorithms)
                    .await
                    .map_err(to_s3)?;
                stored_checksums(&digests.checksums, &algorithms)
            };
            storage
                .put_shared_part(&input.upload_id, input.part_number, shared, checksums)
                .await
                .map_err(to_s3)?
        } else {
            let body = storage
                .read_object(&source, source_customer.as_ref(), offset, len)
                .await
                .map_err(to_s3)?;
            let staged = storage
                .stage_under(
                    &input.bucket,
                    &input.key,
                    body,
                    Some(len),
                    limits::PART_SIZE_BYTES_MAX,
                    &algorithms,
                    upload_protection(&upload, customer.as_ref()),
                )
                .await
                .map_err(to_s3)?;
            let checksums = stored_checksums(&staged.digests.checksums, &algorithms);
            let placed = crate::audit::placed(&staged);
            let part = storage
                .put_part(
                    &input.bucket,
                    &input.key,
                    &input.upload_id,
                    input.part_number,
                    staged,
                    checksums,
                )
                .await
                .map_err(to_s3)?;
            crate::audit::note_placement(&req.extensions, placed);
            part
        };
        let c = &part.checksums;
        let reported = Reported::of_part(&part);
        // The part's blob got a new data key, wrapped: the log names the key.
        crate::audit::note_key_use(&req.extensions, &reported);
        let (sse_customer_algorithm, sse_customer_key_md5) = reported.customer(customer.as_ref());
        ok(UploadPartCopyOutput {
            server_side_encryption: reported.sse(),
            ssekms_key_id: reported.kms_key_id(),
            sse_customer_algorithm,
            sse_customer_key_md5,
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(convert::etag(&part.etag)),
                last_modified: Some(timestamp(part.last_modified_unix_ns)),
                checksum_crc32: c.crc32.clone(),
                checksum_crc32c: c.crc32c.clone(),
                checksum_crc64nvme: c.crc64nvme.clone(),
                checksum_sha1: c.sha1.clone(),
                checksum_sha256: c.sha256.clone(),
            }),
            copy_source_version_id: version_id_out(&source),
            ..Default::default()
        })
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> Res<CompleteMultipartUploadOutput> {
        let input = req.input;
        // S3 does not require the SSE-C key to complete (no data is read);
        // when sent, it must be the upload's.
        let customer = crate::sse::sse_c_key!(input, sse_customer, &req.extensions)?;
        if customer.is_some() {
            let upload = self
                .storage
                .upload(&input.bucket, &input.key, &input.upload_id)
                .await
                .map_err(to_s3)?;
            self.storage
                .check_upload_key(&upload, customer.as_ref())
                .await
                .map_err(to_s3)?;
        }
        let condition = write_condition(input.if_none_match.as_ref(), input.if_match.as_ref())?;
        let parts = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                Ok(CompletedPart {
                    part_number: p
                        .part_number
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| invalid("each part needs a valid PartNumber"))?,
                    etag: p
                        .e_tag
                        .map(|e| e.value().to_owned())
                        .ok_or_else(|| invalid("each part needs an ETag"))?,
                    checksums: convert::announced_checksums(
                        p.checksum_crc32,
                        p.checksum_crc32c,
                        p.checksum_crc64nvme,
                        p.checksum_sha1,
                        p.checksum_sha256,
                    ),
                })
            })
            .collect::<S3Result<Vec<_>>>()?;
        let expected = convert::announced_checksums(
            input.checksum_crc32,
            input.checksum_crc32c,
            input.checksum_crc64nvme,
            input.checksum_sha1,
            input.checksum_sha256,
        );
        let record = self
            .storage
            .complete_upload(
                &input.bucket,
                &input.key,
                &input.upload_id,
                &parts,
                condition,
                &expected,
            )
            .await
            .map_err(to_s3)?;
        let c = &record.checksums;
        let reported = Reported::of_record(&record);
        let mut response = S3Response::new(CompleteMultipartUploadOutput {
            server_side_encryption: reported.sse(),
            ssekms_key_id: reported.kms_key_id(),
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            e_tag: Some(convert::etag(&record.etag)),
            version_id: written_version_id(&self.storage, &record).await,
            checksum_crc32: c.crc32.clone(),
            checksum_crc32c: c.crc32c.clone(),
            checksum_crc64nvme: c.crc64nvme.clone(),
            checksum_sha1: c.sha1.clone(),
            checksum_sha256: c.sha256.clone(),
            checksum_type: convert::checksum_type(c),
            ..Default::default()
        });
        // s3s's output has no SSE-C fields for CompleteMultipartUpload:
        // the headers S3 sends are added here.
        if let (Some(algorithm), Some(md5)) = reported.customer(customer.as_ref()) {
            for (name, value) in [
                ("x-amz-server-side-encryption-customer-algorithm", algorithm),
                ("x-amz-server-side-encryption-customer-key-md5", md5),
            ] {
                if let Ok(value) = http::HeaderValue::from_str(&value) {
                    response.headers.insert(name, value);
                }
            }
        }
        Ok(response)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> Res<AbortMultipartUploadOutput> {
        let input = req.input;
        self.storage
            .abort_upload(&input.bucket, &input.key, &input.upload_id)
            .await
            .map_err(to_s3)?;
        no_content(AbortMultipartUploadOutput::default())
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> Res<ListPartsOutput> {
        let input = req.input;
        let after = match input.part_number_marker {
            None => 0,
            Some(m) => u32::try_from(m)
                .map_err(|_| invalid("part-number-marker must be a non-negative integer"))?,
        };
        let max = match input.max_parts {
            None => limits::LIST_PARTS_MAX,
            Some(n) if n < 0 => return Err(invalid("max-parts must be a non-negative integer")),
            Some(n) => usize::try_from(n).unwrap_or(0),
        };
        let upload = self
            .storage
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await
            .map_err(to_s3)?;
        let listing = self
            .storage
            .list_parts(&input.bucket, &input.key, &input.upload_id, after, max)
            .await
            .map_err(to_s3)?;
        let parts = listing
            .parts
            .iter()
            .map(|p| Part {
                part_number: i32::try_from(p.part_number).ok(),
                e_tag: Some(convert::etag(&p.etag)),
                size: Some(size_i64(p.size)),
                last_modified: Some(timestamp(p.last_modified_unix_ns)),
                checksum_crc32: p.checksums.crc32.clone(),
                checksum_crc32c: p.checksums.crc32c.clone(),
                checksum_crc64nvme: p.checksums.crc64nvme.clone(),
                checksum_sha1: p.checksums.sha1.clone(),
                checksum_sha256: p.checksums.sha256.clone(),
            })
            .collect();
        ok(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: listing
                .next_part_number_marker
                .and_then(|n| i32::try_from(n).ok()),
            max_parts: Some(i32::try_from(max.min(limits::LIST_PARTS_MAX)).unwrap_or(1000)),
            is_truncated: Some(listing.truncated),
            parts: Some(parts),
            owner: Some(owner()),
            initiator: Some(Initiator {
                display_name: Some("nuage".into()),
                id: Some("nuage".into()),
            }),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            checksum_algorithm: upload
                .checksum_algorithm
                .map(s3s::dto::ChecksumAlgorithm::from),
            checksum_type: upload.checksum_type.map(ChecksumType::from),
            ..Default::default()
        })
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> Res<ListMultipartUploadsOutput> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = match input.max_uploads {
            None => limits::LIST_UPLOADS_MAX,
            Some(n) if n < 0 => return Err(invalid("max-uploads must be a non-negative integer")),
            Some(n) => usize::try_from(n).unwrap_or(0),
        };
        let listing = self
            .storage
            .list_uploads(
                &input.bucket,
                &prefix,
                input.key_marker.as_deref().filter(|k| !k.is_empty()),
                input.upload_id_marker.as_deref(),
                max,
            )
            .await
            .map_err(to_s3)?;
        let encode = url_encoded(input.encoding_type.as_ref());
        let enc = |s: String| if encode { convert::url_encode(&s) } else { s };
        let uploads = listing
            .uploads
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(enc(u.key)),
                upload_id: Some(u.upload_id),
                initiated: Some(timestamp(u.initiated_unix_ns)),
                owner: Some(owner()),
                initiator: Some(Initiator {
                    display_name: Some("nuage".into()),
                    id: Some("nuage".into()),
                }),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                checksum_algorithm: u.checksum_algorithm.map(s3s::dto::ChecksumAlgorithm::from),
                checksum_type: u.checksum_type.map(ChecksumType::from),
            })
            .collect();
        ok(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(enc(prefix)),
            key_marker: input.key_marker.map(&enc),
            upload_id_marker: input.upload_id_marker,
            next_key_marker: listing.next_key_marker.map(&enc),
            next_upload_id_marker: listing.next_upload_id_marker,
            max_uploads: Some(i32::try_from(max.min(limits::LIST_UPLOADS_MAX)).unwrap_or(1000)),
            is_truncated: Some(listing.truncated),
            uploads: Some(uploads),
            encoding_type: input.encoding_type,
            ..Default::default()
        })
    }
}
