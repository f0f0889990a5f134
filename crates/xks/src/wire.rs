//! The XKS proxy API v1 on the wire (github.com/aws/aws-kms-xksproxy-api-spec):
//! URI paths, the JSON bodies of the four operations with the spec's
//! camelCase names, base64 fields, the error body, and the error names with
//! their HTTP statuses. Shared by the client and the proxy so both sides
//! speak exactly the same thing; no I/O here.

use nuage_base::limits::{
    XKS_ERROR_MESSAGE_CHARS_MAX, XKS_KEY_ID_CHARS_MAX, XKS_URI_PATH_CHARS_MAX,
};
use serde::{Deserialize, Serialize};

/// SigV4 service name of every XKS request's credential scope.
pub const SIGNING_SERVICE: &str = "kms-xks-proxy";
/// How every `XksProxyUriPath` ends.
pub const URI_PATH_SUFFIX: &str = "/kms/xks/v1";
/// The only `encryptionAlgorithm` of v1.
pub const ENCRYPTION_ALGORITHM: &str = "AES_GCM";
/// The only `ciphertextDataIntegrityValueAlgorithm` of v1.
pub const CDIV_ALGORITHM: &str = "SHA_256";
/// `keySpec` of every key the spec allows.
pub const KEY_SPEC_AES_256: &str = "AES_256";
/// AES-GCM authentication tag length the spec requires.
pub const TAG_BYTES: usize = 16;
/// IV lengths the spec allows (96 bits, the one GCM is designed for, or 128).
pub const IV_BYTES_ALLOWED: [usize; 2] = [12, 16];
/// Nuage's extension to `requestMetadata`: the key access justification.
pub const ACCESS_REASON_FIELD: &str = "nuageAccessReason";
/// What a request without [`ACCESS_REASON_FIELD`] counts as.
pub const REASON_NOT_EXPECTED: &str = "REASON_NOT_EXPECTED";

/// The spec's base64: the standard alphabet with padding.
pub(crate) const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `requestMetadata`. Every field is optional on the wire so the proxy can
/// answer a missing one with a `ValidationException` rather than a parse
/// error; fields this version does not know (the spec says KMS may add some)
/// are ignored, as it requires.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_principal_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_source_vpc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_source_vpce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_via_service: Option<String>,
    /// Nuage extension: the key access justification's wire name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nuage_access_reason: Option<String>,
}

impl RequestMetadata {
    /// The metadata of a key operation, from the contract's type.
    #[must_use]
    pub fn for_key(metadata: &nuage_kms::XksRequestMetadata) -> Self {
        Self {
            aws_principal_arn: Some(metadata.aws_principal_arn.clone()),
            aws_source_vpc: None,
            aws_source_vpce: None,
            kms_key_arn: metadata.kms_key_arn.clone(),
            kms_operation: Some(metadata.kms_operation.clone()),
            kms_request_id: Some(metadata.kms_request_id.clone()),
            kms_via_service: metadata.kms_via_service.clone(),
            nuage_access_reason: Some(metadata.access_reason.clone()),
        }
    }

    /// The metadata of a health check: the spec's two fields only.
    #[must_use]
    pub fn for_health(metadata: &nuage_kms::XksRequestMetadata) -> Self {
        Self {
            kms_operation: Some(metadata.kms_operation.clone()),
            kms_request_id: Some(metadata.kms_request_id.clone()),
            ..Self::default()
        }
    }
}

/// Body of `health` and `keys/{id}/metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataOnlyRequest {
    #[serde(default)]
    pub request_metadata: Option<RequestMetadata>,
}

/// `GetKeyMetadata`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyMetadataResponse {
    pub key_spec: String,
    pub key_usage: Vec<String>,
    pub key_status: String,
}

/// `Encrypt`'s request. Binary fields hold base64 text, decoded by the side
/// that reads them so each can answer a bad encoding in its own terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptRequest {
    #[serde(default)]
    pub request_metadata: Option<RequestMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data: Option<String>,
    #[serde(default)]
    pub plaintext: Option<String>,
    #[serde(default)]
    pub encryption_algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_data_integrity_value_algorithm: Option<String>,
}

/// `Encrypt`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptResponse {
    pub ciphertext: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_metadata: Option<String>,
    pub initialization_vector: String,
    pub authentication_tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_data_integrity_value: Option<String>,
}

/// `Decrypt`'s request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptRequest {
    #[serde(default)]
    pub request_metadata: Option<RequestMetadata>,
    #[serde(default)]
    pub ciphertext: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_metadata: Option<String>,
    #[serde(default)]
    pub encryption_algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data: Option<String>,
    #[serde(default)]
    pub authentication_tag: Option<String>,
    #[serde(default)]
    pub initialization_vector: Option<String>,
}

/// `Decrypt`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptResponse {
    pub plaintext: String,
}

/// `GetHealthStatus`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    pub xks_proxy_fleet_size: u32,
    pub xks_proxy_vendor: String,
    pub xks_proxy_model: String,
    pub ekm_vendor: String,
    pub ekm_fleet_details: Vec<EkmFleetDetail>,
}

/// One external key manager behind the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EkmFleetDetail {
    pub id: String,
    pub model: String,
    pub health_status: String,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// The spec's error names ("Error Codes"), each with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorName {
    Validation,
    InvalidState,
    InvalidCiphertext,
    InvalidKeyUsage,
    AuthenticationFailed,
    AccessDenied,
    KeyNotFound,
    InvalidUriPath,
    Throttling,
    UnsupportedOperation,
    DependencyTimeout,
    Internal,
}

impl ErrorName {
    /// The `errorName` on the wire.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Validation => "ValidationException",
            Self::InvalidState => "InvalidStateException",
            Self::InvalidCiphertext => "InvalidCiphertextException",
            Self::InvalidKeyUsage => "InvalidKeyUsageException",
            Self::AuthenticationFailed => "AuthenticationFailedException",
            Self::AccessDenied => "AccessDeniedException",
            Self::KeyNotFound => "KeyNotFoundException",
            Self::InvalidUriPath => "InvalidUriPathException",
            Self::Throttling => "ThrottlingException",
            Self::UnsupportedOperation => "UnsupportedOperationException",
            Self::DependencyTimeout => "DependencyTimeoutException",
            Self::Internal => "InternalException",
        }
    }

    /// The HTTP status the spec gives it.
    #[must_use]
    pub const fn status(self) -> u16 {
        match self {
            Self::Validation
            | Self::InvalidState
            | Self::InvalidCiphertext
            | Self::InvalidKeyUsage => 400,
            Self::AuthenticationFailed => 401,
            Self::AccessDenied => 403,
            Self::KeyNotFound | Self::InvalidUriPath => 404,
            Self::Throttling => 429,
            Self::UnsupportedOperation => 501,
            Self::DependencyTimeout => 503,
            Self::Internal => 500,
        }
    }
}

/// An `errorMessage` as the spec wants it: printable ASCII only, under 512
/// characters. Anything else is replaced or cut, so a message built from
/// request input can never break the rule.
#[must_use]
pub fn error_message(text: &str) -> String {
    text.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(XKS_ERROR_MESSAGE_CHARS_MAX)
        .collect()
}

/// Whether every character is an ASCII letter or digit, or one of `extra`.
fn charset_ok(text: &str, extra: &[char]) -> bool {
    text.chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

/// Checks an `externalKeyId`: 1 to 128 characters among letters, digits,
/// `-`, `.` and `_` (spec). The charset needs no percent-encoding, so the
/// id goes into the URI path as it is.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn check_key_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > XKS_KEY_ID_CHARS_MAX {
        return Err(format!(
            "an external key id has 1 to {XKS_KEY_ID_CHARS_MAX} characters"
        ));
    }
    if !charset_ok(id, &['-', '.', '_']) || id == "." || id == ".." {
        return Err("an external key id uses only letters, digits, '-', '.' and '_'".to_owned());
    }
    Ok(())
}

/// Checks an `XksProxyUriPath`: starts with `/`, ends with `/kms/xks/v1`, at
/// most 128 characters among letters, digits, `/`, `-` and `_` (spec).
///
/// # Errors
/// A sentence saying what is wrong.
pub fn check_uri_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || !path.ends_with(URI_PATH_SUFFIX) {
        return Err(format!(
            "the XKS URI path must start with '/' and end with `{URI_PATH_SUFFIX}` (got `{path}`)"
        ));
    }
    if path.len() > XKS_URI_PATH_CHARS_MAX || !charset_ok(path, &['/', '-', '_']) {
        return Err(format!(
            "the XKS URI path has at most {XKS_URI_PATH_CHARS_MAX} characters among letters, \
             digits, '/', '-' and '_'"
        ));
    }
    if path.contains("//") {
        return Err("the XKS URI path has an empty segment".to_owned());
    }
    Ok(())
}

/// The spec's ciphertext data integrity value: SHA-256 over the AAD, the
/// ciphertext metadata, the IV, the ciphertext and the tag, concatenated.
#[must_use]
pub fn cdiv(aad: &[u8], metadata: &[u8], iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    for part in [aad, metadata, iv, ciphertext, tag] {
        hash.update(part);
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use base64::Engine as _;

    #[test]
    fn request_bodies_use_the_spec_names() {
        let request = EncryptRequest {
            request_metadata: Some(RequestMetadata {
                aws_principal_arn: Some("arn:aws:iam::123456789012:user/Alice".into()),
                kms_key_arn: Some("arn:k".into()),
                kms_operation: Some("Encrypt".into()),
                kms_request_id: Some("r-1".into()),
                nuage_access_reason: Some("CUSTOMER_INITIATED_ACCESS".into()),
                ..RequestMetadata::default()
            }),
            additional_authenticated_data: Some("YQ==".into()),
            plaintext: Some("SGVsbG8gV29ybGQh".into()),
            encryption_algorithm: Some("AES_GCM".into()),
            ciphertext_data_integrity_value_algorithm: Some("SHA_256".into()),
        };
        let json: serde_json::Value = serde_json::to_value(&request).unwrap();
        let metadata = &json["requestMetadata"];
        assert_eq!(
            metadata["awsPrincipalArn"],
            "arn:aws:iam::123456789012:user/Alice"
        );
        assert_eq!(metadata["kmsKeyArn"], "arn:k");
        assert_eq!(metadata["kmsOperation"], "Encrypt");
        assert_eq!(metadata["kmsRequestId"], "r-1");
        assert_eq!(metadata["nuageAccessReason"], "CUSTOMER_INITIATED_ACCESS");
        assert!(metadata.get("kmsViaService").is_none(), "absent, not null");
        assert_eq!(json["additionalAuthenticatedData"], "YQ==");
        assert_eq!(json["plaintext"], "SGVsbG8gV29ybGQh");
        assert_eq!(json["encryptionAlgorithm"], "AES_GCM");
        assert_eq!(json["ciphertextDataIntegrityValueAlgorithm"], "SHA_256");
    }

    /// The spec's own Decrypt request example parses, unknown fields and all.
    #[test]
    fn the_spec_decrypt_example_parses() {
        let body = r#"{
            "requestMetadata": {
                "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
                "kmsKeyArn": "arn:aws:kms:us-east-2:123456789012:/key/1234abcd",
                "kmsOperation": "Decrypt",
                "kmsRequestId": "5112f4d6-db54-4af4-ae30-c55a22a8dfae",
                "kmsViaService": "ebs",
                "someFutureField": "ignored"
            },
            "additionalAuthenticatedData": "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n",
            "encryptionAlgorithm": "AES_GCM",
            "ciphertext": "ghxkK1txeDNn3q8Y",
            "ciphertextMetadata": "a2V5X3ZlcnNpb249MQ==",
            "initializationVector": "HMrlRw85cAJUd5Ax",
            "authenticationTag": "vBxN2ncH1oEkR8WVXpmyYQ=="
        }"#;
        let request: DecryptRequest = serde_json::from_str(body).unwrap();
        let metadata = request.request_metadata.unwrap();
        assert_eq!(metadata.kms_via_service.as_deref(), Some("ebs"));
        assert_eq!(metadata.nuage_access_reason, None);
        assert_eq!(
            request.ciphertext_metadata.as_deref(),
            Some("a2V5X3ZlcnNpb249MQ==")
        );
        assert_eq!(
            request.authentication_tag.as_deref(),
            Some("vBxN2ncH1oEkR8WVXpmyYQ==")
        );
    }

    /// Appendix C's worked example.
    #[test]
    fn cdiv_matches_the_spec_example() {
        let decode = |s: &str| BASE64.decode(s).unwrap();
        let value = cdiv(
            b"project=nile,department=marketing",
            b"key_version=1",
            &decode("HMrlRw85cAJUd5Ax"),
            &decode("ghxkK1txeDNn3q8Y"),
            &decode("vBxN2ncH1oEkR8WVXpmyYQ=="),
        );
        assert_eq!(
            BASE64.encode(value),
            "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="
        );
    }

    #[test]
    fn key_ids_and_paths_follow_the_spec() {
        assert!(check_key_id("tenant-1.key_A").is_ok());
        for bad in ["", "a/b", "a b", "é", "..", &"k".repeat(129)] {
            assert!(check_key_id(bad).is_err(), "{bad}");
        }
        assert!(check_uri_path("/kms/xks/v1").is_ok());
        assert!(check_uri_path("/keystores/4a0d79d6-1d1b/kms/xks/v1").is_ok());
        for bad in [
            "kms/xks/v1",
            "/kms/xks/v2",
            "/a b/kms/xks/v1",
            "//kms/xks/v1",
        ] {
            assert!(check_uri_path(bad).is_err(), "{bad}");
        }
        let long = format!("/{}{URI_PATH_SUFFIX}", "p".repeat(120));
        assert!(check_uri_path(&long).is_err());
    }

    #[test]
    fn error_messages_are_printable_ascii_and_short() {
        let message = error_message(&format!("caf\u{e9}\n{}", "x".repeat(600)));
        assert!(message.starts_with("caf??x"));
        assert_eq!(message.len(), XKS_ERROR_MESSAGE_CHARS_MAX);
        assert_eq!(ErrorName::AccessDenied.status(), 403);
        assert_eq!(ErrorName::KeyNotFound.as_str(), "KeyNotFoundException");
    }
}
