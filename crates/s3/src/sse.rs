//! Server-side encryption headers: parsing and validating what a request
//! asks for (SSE-S3, SSE-KMS with its encryption context, SSE-C), a
//! bucket's default encryption configuration, the protection a write gets
//! ([`crate::NuageS3::write_encryption`]), and the headers responses report.
//! The KMS authorization itself is the handlers' (`authorize_kms`); the
//! cryptography is the storage service's.
//!
//! It must never log, store or echo a customer-provided key: only its MD5,
//! which S3 echoes, leaves this module.

use crate::errors::to_s3;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use nuage_meta::{BucketEncryption, UploadRecord};
use nuage_storage::{
    CustomerKey, PartRecord, Protection, VersionRecord, canonical_context, context_pairs,
};
use s3s::dto::{ServerSideEncryption, ServerSideEncryptionConfiguration};
use s3s::{S3Error, S3ErrorCode, S3Result};
use std::collections::BTreeMap;

/// The SSE-C key of a request, from the three input fields named
/// `<prefix>_algorithm`, `<prefix>_key` and `<prefix>_key_md5`
/// (`sse_customer` for the object written or read, `copy_source_sse_customer`
/// for a copy's source); see [`customer_key`].
macro_rules! sse_c_key {
    ($input:expr, sse_customer, $extensions:expr) => {
        $crate::sse::customer_key(
            $crate::sse::CustomerHeaders {
                algorithm: $input.sse_customer_algorithm.as_deref(),
                key: $input.sse_customer_key.as_deref(),
                key_md5: $input.sse_customer_key_md5.as_deref(),
            },
            $extensions,
        )
    };
    ($input:expr, copy_source_sse_customer, $extensions:expr) => {
        $crate::sse::customer_key(
            $crate::sse::CustomerHeaders {
                algorithm: $input.copy_source_sse_customer_algorithm.as_deref(),
                key: $input.copy_source_sse_customer_key.as_deref(),
                key_md5: $input.copy_source_sse_customer_key_md5.as_deref(),
            },
            $extensions,
        )
    };
}
pub(crate) use sse_c_key;

/// The only SSE-C algorithm S3 defines.
pub(crate) const SSE_C_ALGORITHM: &str = "AES256";

/// Largest encryption context header accepted, as JSON: the KMS API's
/// limit on a context (the JSON is a little larger than the pairs it holds).
const CONTEXT_BYTES_MAX: usize = nuage_base::limits::KMS_ENCRYPTION_CONTEXT_BYTES_MAX;

fn invalid_argument(message: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, message.to_owned())
}

/// The protection a write gets: what it asked for, else its bucket's default.
pub(crate) enum WriteSse {
    /// SSE-S3.
    Tenant,
    /// SSE-KMS with the key's ARN and the canonical encryption context.
    Kms { arn: String, context: String },
    /// SSE-C.
    Customer(CustomerKey),
}

impl WriteSse {
    pub(crate) fn protection(&self) -> Protection<'_> {
        match self {
            Self::Tenant => Protection::Tenant,
            Self::Kms { arn, context } => Protection::Kms {
                arn,
                context: Some(context),
            },
            Self::Customer(key) => Protection::Customer(key),
        }
    }

    pub(crate) fn customer(&self) -> Option<&CustomerKey> {
        match self {
            Self::Customer(key) => Some(key),
            Self::Tenant | Self::Kms { .. } => None,
        }
    }
}

/// The encryption headers of a write request.
pub(crate) struct WriteSseRequest<'a> {
    pub sse: Option<&'a ServerSideEncryption>,
    pub kms_key_id: Option<&'a str>,
    pub context: Option<&'a str>,
    pub customer: Option<CustomerKey>,
}

/// How the parts of `upload` are protected (`customer`: the request's
/// SSE-C key, already checked against the upload's).
pub(crate) fn upload_protection<'a>(
    upload: &'a UploadRecord,
    customer: Option<&'a CustomerKey>,
) -> Protection<'a> {
    match (&upload.kms_key_arn, customer) {
        (Some(arn), _) => Protection::Kms {
            arn,
            context: upload.kms_context.as_deref(),
        },
        (None, Some(key)) if upload.sse_c_key_check.is_some() => Protection::Customer(key),
        (None, _) => Protection::Tenant,
    }
}

/// The three SSE-C headers of a request (or of its copy source).
#[derive(Clone, Copy, Default)]
pub(crate) struct CustomerHeaders<'a> {
    pub algorithm: Option<&'a str>,
    pub key: Option<&'a str>,
    pub key_md5: Option<&'a str>,
}

impl CustomerHeaders<'_> {
    fn any(&self) -> bool {
        self.algorithm.is_some() || self.key.is_some() || self.key_md5.is_some()
    }
}

/// The customer key a request's SSE-C headers give, validated as S3 does
/// (all three present, `AES256`, 32 bytes of base64, the MD5 matching),
/// and refused over plain HTTP but from loopback: the key travels in the
/// clear in a header, so anyone on the path would learn it (AWS refuses
/// SSE-C over HTTP altogether).
pub(crate) fn customer_key(
    headers: CustomerHeaders<'_>,
    extensions: &http::Extensions,
) -> S3Result<Option<CustomerKey>> {
    if !headers.any() {
        return Ok(None);
    }
    let secure = extensions
        .get::<crate::SecureTransport>()
        .is_some_and(|s| s.0);
    let loopback = extensions
        .get::<crate::SourceAddress>()
        .is_some_and(|a| a.0.to_canonical().is_loopback());
    if !secure && !loopback {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "Requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection.",
        ));
    }
    let Some(algorithm) = headers.algorithm else {
        return Err(invalid_argument(
            "Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm.",
        ));
    };
    if algorithm != SSE_C_ALGORITHM {
        return Err(invalid_argument(
            "The encryption method specified is not supported; SSE-C supports AES256 only.",
        ));
    }
    let Some(key) = headers.key else {
        return Err(invalid_argument(
            "Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key.",
        ));
    };
    let Some(key_md5) = headers.key_md5 else {
        return Err(invalid_argument(
            "Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key.",
        ));
    };
    let key = CustomerKey::from_base64(key).ok_or_else(|| {
        invalid_argument("The secret key was invalid for the specified algorithm.")
    })?;
    if key.md5_base64() != key_md5.trim() {
        return Err(invalid_argument(
            "The calculated MD5 hash of the key did not match the hash that was provided.",
        ));
    }
    Ok(Some(key))
}

impl crate::NuageS3 {
    /// The protection a write gets: SSE-C when the request sent a customer
    /// key, SSE-KMS or SSE-S3 as `x-amz-server-side-encryption` says, else
    /// the bucket's default encryption. For SSE-KMS: the key must be one of
    /// the bucket owner's, the caller must be allowed `kms:GenerateDataKey`
    /// with it (under the write's encryption context), and it must be enabled.
    pub(crate) async fn write_encryption(
        &self,
        caller: Option<&nuage_iam::Identity>,
        bucket: &str,
        key: &str,
        request: WriteSseRequest<'_>,
    ) -> S3Result<WriteSse> {
        let WriteSseRequest {
            sse,
            kms_key_id,
            context,
            customer,
        } = request;
        let sse = sse.map(ServerSideEncryption::as_str);
        if let Some(customer) = customer {
            if sse.is_some() || kms_key_id.is_some() || context.is_some() {
                return Err(incompatible_with_sse_c());
            }
            return Ok(WriteSse::Customer(customer));
        }
        let key_id = match sse {
            Some(ServerSideEncryption::AWS_KMS) => {
                let Some(key_id) = kms_key_id.filter(|k| !k.is_empty()) else {
                    return Err(invalid_argument(
                        "a KMS key id is required (x-amz-server-side-encryption-aws-kms-key-id): Nuage has no AWS-managed aws/s3 key",
                    ));
                };
                key_id.to_owned()
            }
            Some(ServerSideEncryption::AES256) | None => {
                if kms_key_id.is_some() {
                    return Err(invalid_argument(
                        "x-amz-server-side-encryption-aws-kms-key-id is only valid with x-amz-server-side-encryption: aws:kms",
                    ));
                }
                let default = match sse {
                    Some(_) => None,
                    None => self.storage.bucket(bucket).await.map_err(to_s3)?.encryption,
                };
                match default {
                    Some(d) if d.sse_algorithm == ServerSideEncryption::AWS_KMS => {
                        d.kms_master_key_id.ok_or_else(|| {
                            invalid_argument("the bucket's default encryption names no KMS key")
                        })?
                    }
                    _ => {
                        if context.is_some() {
                            return Err(invalid_argument(
                                "x-amz-server-side-encryption-context is only valid with SSE-KMS",
                            ));
                        }
                        return Ok(WriteSse::Tenant);
                    }
                }
            }
            Some(other) => {
                return Err(S3Error::with_message(
                    S3ErrorCode::NotImplemented,
                    format!(
                        "server-side encryption `{other}` is not supported; use AES256, aws:kms or SSE-C"
                    ),
                ));
            }
        };
        let context = encryption_context(context, bucket, key)?;
        let owner = self.storage.bucket(bucket).await.map_err(to_s3)?.owner;
        let kms_key = self
            .storage
            .customer_keys()
            .resolve(&owner, &key_id)
            .await
            .map_err(|e| to_s3(e.into()))?;
        self.authorize_kms(caller, "GenerateDataKey", &kms_key, Some(&context))
            .await?;
        kms_key.check_usable().map_err(|e| to_s3(e.into()))?;
        Ok(WriteSse::Kms {
            arn: kms_key.arn,
            context,
        })
    }
}

/// SSE-C cannot be combined with `x-amz-server-side-encryption` (S3's rule).
pub(crate) fn incompatible_with_sse_c() -> S3Error {
    invalid_argument(
        "Server Side Encryption with Customer provided key is incompatible with the encryption method specified.",
    )
}

/// The SSE-KMS encryption context of a write: the pairs of
/// `x-amz-server-side-encryption-context` (base64 of a JSON object of
/// strings), plus `aws:s3:arn` = the object's ARN, which S3 adds; a
/// context naming another `aws:s3:arn` is refused. Canonical JSON.
pub(crate) fn encryption_context(
    header: Option<&str>,
    bucket: &str,
    key: &str,
) -> S3Result<String> {
    let mut pairs = BTreeMap::new();
    if let Some(header) = header {
        let bad = || {
            invalid_argument(
                "x-amz-server-side-encryption-context must be base64 of a JSON object whose values are strings",
            )
        };
        let json = BASE64.decode(header.trim()).map_err(|_| bad())?;
        if json.len() > CONTEXT_BYTES_MAX {
            return Err(invalid_argument(
                "the encryption context is larger than 8 KiB",
            ));
        }
        pairs = serde_json::from_slice::<BTreeMap<String, String>>(&json).map_err(|_| bad())?;
    }
    let arn = format!("arn:aws:s3:::{bucket}/{key}");
    match pairs.get("aws:s3:arn") {
        Some(given) if *given != arn => {
            return Err(invalid_argument(
                "the encryption context's aws:s3:arn must be the object's ARN",
            ));
        }
        _ => {}
    }
    pairs.insert("aws:s3:arn".to_owned(), arn);
    Ok(canonical_context(&pairs))
}

/// The condition keys KMS defines for an encryption context:
/// `kms:EncryptionContext:<key>` for each pair and `kms:EncryptionContextKeys`.
pub(crate) fn context_condition_keys(canonical: Option<&str>) -> BTreeMap<String, Vec<String>> {
    let mut keys = BTreeMap::new();
    let Some(pairs) = canonical.and_then(context_pairs) else {
        return keys;
    };
    keys.insert(
        "kms:EncryptionContextKeys".to_owned(),
        pairs.keys().cloned().collect(),
    );
    for (k, v) in pairs {
        keys.insert(format!("kms:EncryptionContext:{k}"), vec![v]);
    }
    keys
}

/// A bucket's default encryption from PutBucketEncryption: one rule,
/// `AES256` or `aws:kms` with a key (Nuage has no AWS-managed `aws/s3`
/// key); `aws:kms:dsse` is not implemented. The key is stored as given and
/// resolved among the bucket owner's keys at each write, as S3 does.
pub(crate) fn bucket_encryption(
    configuration: &ServerSideEncryptionConfiguration,
) -> S3Result<BucketEncryption> {
    let [rule] = configuration.rules.as_slice() else {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            "a server-side encryption configuration holds exactly one rule",
        ));
    };
    let Some(default) = &rule.apply_server_side_encryption_by_default else {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            "the rule needs ApplyServerSideEncryptionByDefault",
        ));
    };
    let algorithm = default.sse_algorithm.as_str();
    let key_id = default
        .kms_master_key_id
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    match algorithm {
        ServerSideEncryption::AES256 => {
            if key_id.is_some() {
                return Err(invalid_argument(
                    "a KMSMasterKeyID is allowed only with SSEAlgorithm aws:kms",
                ));
            }
        }
        ServerSideEncryption::AWS_KMS => {
            let Some(key_id) = key_id else {
                return Err(invalid_argument(
                    "SSEAlgorithm aws:kms needs a KMSMasterKeyID: Nuage has no AWS-managed aws/s3 key",
                ));
            };
            check_key_id_shape(key_id)?;
        }
        "aws:kms:dsse" => {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                "dual-layer SSE-KMS (aws:kms:dsse) is not supported; use aws:kms",
            ));
        }
        other => {
            return Err(S3Error::with_message(
                S3ErrorCode::MalformedXML,
                format!("unknown SSEAlgorithm `{other}` (AES256 or aws:kms)"),
            ));
        }
    }
    Ok(BucketEncryption {
        sse_algorithm: algorithm.to_owned(),
        kms_master_key_id: key_id.map(str::to_owned),
        bucket_key_enabled: rule.bucket_key_enabled.unwrap_or(false),
    })
}

/// A KMS key reference as S3 accepts one: a key id, a key ARN, an alias
/// name or an alias ARN. Whether the key exists is known at write time.
fn check_key_id_shape(key_id: &str) -> S3Result<()> {
    let well_formed = if let Some(rest) = key_id.strip_prefix("arn:") {
        let fields: Vec<&str> = rest.splitn(5, ':').collect();
        fields.len() == 5
            && fields[1] == "kms"
            && (fields[4].starts_with("key/") || fields[4].starts_with("alias/"))
    } else {
        key_id.starts_with("alias/") || key_id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
    };
    if well_formed && key_id.len() <= 2048 {
        Ok(())
    } else {
        Err(invalid_argument(&format!(
            "`{key_id}` is not a KMS key id, key ARN, alias name or alias ARN"
        )))
    }
}

/// How stored data is protected, as responses report it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reported {
    pub kms_key_arn: Option<String>,
    pub kms_context: Option<String>,
    pub sse_c: bool,
}

impl Reported {
    pub(crate) fn of_record(record: &VersionRecord) -> Self {
        let kms = record.segments.iter().find(|s| s.kms_key_arn.is_some());
        Self {
            kms_key_arn: kms.and_then(|s| s.kms_key_arn.clone()),
            kms_context: kms.and_then(|s| s.kms_context.clone()),
            sse_c: record.segments.iter().any(|s| s.sse_c),
        }
    }

    pub(crate) fn of_upload(upload: &UploadRecord) -> Self {
        Self {
            kms_key_arn: upload.kms_key_arn.clone(),
            kms_context: upload.kms_context.clone(),
            sse_c: upload.sse_c_key_check.is_some(),
        }
    }

    pub(crate) fn of_part(part: &PartRecord) -> Self {
        Self {
            kms_key_arn: part.kms_key_arn.clone(),
            kms_context: part.kms_context.clone(),
            sse_c: part.sse_c,
        }
    }

    /// `x-amz-server-side-encryption`: `aws:kms` for SSE-KMS, `AES256` for
    /// SSE-S3, absent for SSE-C (which reports the customer headers instead).
    pub(crate) fn sse(&self) -> Option<ServerSideEncryption> {
        if self.sse_c {
            None
        } else if self.kms_key_arn.is_some() {
            Some(ServerSideEncryption::from_static(
                ServerSideEncryption::AWS_KMS,
            ))
        } else {
            Some(ServerSideEncryption::from_static(
                ServerSideEncryption::AES256,
            ))
        }
    }

    pub(crate) fn kms_key_id(&self) -> Option<String> {
        self.kms_key_arn.clone()
    }

    /// `x-amz-server-side-encryption-context`: base64 of the context's JSON.
    pub(crate) fn context(&self) -> Option<String> {
        self.kms_context.as_ref().map(|c| BASE64.encode(c))
    }

    /// `x-amz-server-side-encryption-customer-algorithm` and `-key-MD5`,
    /// from the key the request presented (already proved to be the right one).
    pub(crate) fn customer(&self, key: Option<&CustomerKey>) -> (Option<String>, Option<String>) {
        match key {
            Some(key) if self.sse_c => (
                Some(SSE_C_ALGORITHM.to_owned()),
                Some(key.md5_base64().to_owned()),
            ),
            _ => (None, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest as _;

    #[test]
    fn contexts_add_the_object_arn() {
        let canonical = encryption_context(None, "b", "k").expect("default");
        assert_eq!(canonical, r#"{"aws:s3:arn":"arn:aws:s3:::b/k"}"#);
        let given = BASE64.encode(r#"{"team":"blue"}"#);
        let canonical = encryption_context(Some(&given), "b", "k").expect("given");
        assert_eq!(
            canonical,
            r#"{"aws:s3:arn":"arn:aws:s3:::b/k","team":"blue"}"#
        );
        assert!(encryption_context(Some("%%%"), "b", "k").is_err());
        let not_strings = BASE64.encode(r#"{"n":1}"#);
        assert!(encryption_context(Some(&not_strings), "b", "k").is_err());
        let other_arn = BASE64.encode(r#"{"aws:s3:arn":"arn:aws:s3:::b/other"}"#);
        assert!(encryption_context(Some(&other_arn), "b", "k").is_err());
        let keys = context_condition_keys(Some(&canonical));
        assert_eq!(keys["kms:EncryptionContext:team"], ["blue"]);
        assert_eq!(
            keys["kms:EncryptionContextKeys"],
            ["aws:s3:arn".to_owned(), "team".to_owned()]
        );
    }

    fn connection(secure: bool, ip: [u8; 4]) -> http::Extensions {
        let mut extensions = http::Extensions::new();
        extensions.insert(crate::SecureTransport(secure));
        extensions.insert(crate::SourceAddress(std::net::IpAddr::from(ip)));
        extensions
    }

    fn code_of(result: S3Result<Option<CustomerKey>>) -> String {
        result.map_or_else(|e| e.code().as_str().to_owned(), |_| "ok".to_owned())
    }

    #[test]
    fn sse_c_headers_are_validated() {
        let key = BASE64.encode([5u8; 32]);
        let md5 = BASE64.encode(md5::Md5::digest([5u8; 32]));
        let headers = CustomerHeaders {
            algorithm: Some("AES256"),
            key: Some(&key),
            key_md5: Some(&md5),
        };
        let local = connection(false, [127, 0, 0, 1]);
        let parsed = customer_key(headers, &local).unwrap().unwrap();
        assert_eq!(parsed.md5_base64(), md5);
        assert!(
            customer_key(CustomerHeaders::default(), &local)
                .unwrap()
                .is_none()
        );
        // The key in the clear on a network path: refused; over TLS: fine.
        assert_eq!(
            code_of(customer_key(headers, &connection(false, [192, 0, 2, 7]))),
            "InvalidRequest"
        );
        assert_eq!(
            code_of(customer_key(headers, &connection(true, [192, 0, 2, 7]))),
            "ok"
        );
        let short = BASE64.encode([5u8; 16]);
        let other_md5 = BASE64.encode(md5::Md5::digest([6u8; 32]));
        for bad in [
            CustomerHeaders {
                algorithm: None,
                ..headers
            },
            CustomerHeaders {
                key: None,
                ..headers
            },
            CustomerHeaders {
                key_md5: None,
                ..headers
            },
            CustomerHeaders {
                algorithm: Some("AES128"),
                ..headers
            },
            CustomerHeaders {
                key: Some(&short),
                ..headers
            },
            CustomerHeaders {
                key: Some("***"),
                ..headers
            },
            CustomerHeaders {
                key_md5: Some(&other_md5),
                ..headers
            },
        ] {
            assert_eq!(code_of(customer_key(bad, &local)), "InvalidArgument");
        }
    }

    #[test]
    fn key_id_shapes() {
        for good in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/photos",
            "arn:aws:kms:fr-par:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:fr-par:111122223333:alias/photos",
        ] {
            assert!(check_key_id_shape(good).is_ok(), "{good}");
        }
        for bad in [
            "photos",
            "arn:aws:s3:::bucket",
            "arn:aws:kms:fr-par:1:thing/x",
        ] {
            assert!(check_key_id_shape(bad).is_err(), "{bad}");
        }
    }
}
