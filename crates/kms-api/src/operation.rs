//! [`Operation`]: a KMS request parsed from `X-Amz-Target:
//! TrentService.<Name>` and its JSON body into a closed enum of typed inputs.
//!
//! Only the wire is checked here: JSON shape (`SerializationException`),
//! required members (`ValidationException`), base64 blobs. What the values
//! mean (does the key exist, is 31 days allowed) is for the handlers and the
//! key service. Unknown members are ignored, as AWS does, so a newer SDK that
//! sends a member Nuage does not know still works.

use crate::error::ApiError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use nuage_kms::{AccessReason, EncryptionContext, XksCredential};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The `X-Amz-Target` prefix of every KMS operation.
pub(crate) const TARGET_PREFIX: &str = "TrentService.";

/// A base64 blob member (`Plaintext`, `CiphertextBlob`), decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blob(pub Vec<u8>);

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64
            .decode(text.as_bytes())
            .map(Blob)
            .map_err(|_| serde::de::Error::custom("a blob member is not valid base64"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Tag {
    pub tag_key: String,
    pub tag_value: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateKey {
    pub policy: Option<String>,
    pub description: Option<String>,
    pub key_usage: Option<String>,
    pub customer_master_key_spec: Option<String>,
    pub key_spec: Option<String>,
    pub origin: Option<String>,
    pub custom_key_store_id: Option<String>,
    #[serde(default)]
    pub bypass_policy_lockout_safety_check: bool,
    #[serde(default)]
    pub tags: Vec<Tag>,
    pub multi_region: Option<bool>,
    pub xks_key_id: Option<String>,
}

/// Operations whose only input is `KeyId`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KeyOnly {
    pub key_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Paging {
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListAliases {
    pub key_id: Option<String>,
    #[serde(flatten)]
    pub paging: Paging,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AliasTarget {
    pub alias_name: String,
    pub target_key_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AliasOnly {
    pub alias_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Encrypt {
    pub key_id: String,
    pub plaintext: Blob,
    #[serde(default)]
    pub encryption_context: EncryptionContext,
    pub encryption_algorithm: Option<String>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Decrypt {
    pub ciphertext_blob: Blob,
    #[serde(default)]
    pub encryption_context: EncryptionContext,
    pub key_id: Option<String>,
    pub encryption_algorithm: Option<String>,
    pub recipient: Option<serde_json::Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GenerateDataKey {
    pub key_id: String,
    #[serde(default)]
    pub encryption_context: EncryptionContext,
    pub number_of_bytes: Option<i64>,
    pub key_spec: Option<String>,
    pub recipient: Option<serde_json::Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GenerateRandom {
    pub number_of_bytes: Option<i64>,
    pub custom_key_store_id: Option<String>,
    pub recipient: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ReEncrypt {
    pub ciphertext_blob: Blob,
    #[serde(default)]
    pub source_encryption_context: EncryptionContext,
    pub source_key_id: Option<String>,
    pub destination_key_id: String,
    #[serde(default)]
    pub destination_encryption_context: EncryptionContext,
    pub source_encryption_algorithm: Option<String>,
    pub destination_encryption_algorithm: Option<String>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct EnableKeyRotation {
    pub key_id: String,
    pub rotation_period_in_days: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListKeyRotations {
    pub key_id: String,
    pub include_key_material: Option<String>,
    #[serde(flatten)]
    pub paging: Paging,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ScheduleKeyDeletion {
    pub key_id: String,
    pub pending_window_in_days: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GetKeyPolicy {
    pub key_id: String,
    pub policy_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PutKeyPolicy {
    pub key_id: String,
    pub policy_name: Option<String>,
    pub policy: String,
    #[serde(default)]
    pub bypass_policy_lockout_safety_check: bool,
}

/// `XksProxyAuthenticationCredential` as sent. Its `Debug` never shows the
/// secret, and it becomes a [`nuage_kms::XksCredential`] (zeroed on drop)
/// before the handlers see it.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CredentialWire {
    access_key_id: String,
    raw_secret_access_key: String,
}

impl std::fmt::Debug for CredentialWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XksProxyAuthenticationCredential")
            .field("AccessKeyId", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl From<CredentialWire> for XksCredential {
    fn from(wire: CredentialWire) -> Self {
        Self {
            access_key_id: wire.access_key_id,
            raw_secret_access_key: wire.raw_secret_access_key.into(),
        }
    }
}

/// Members of CreateCustomKeyStore and UpdateCustomKeyStore that only
/// CloudHSM key stores or VPC connectivity use (refused).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UnsupportedStoreMembers {
    pub cloud_hsm_cluster_id: Option<String>,
    pub trust_anchor_certificate: Option<String>,
    pub key_store_password: Option<serde_json::Value>,
    pub xks_proxy_vpc_endpoint_service_name: Option<String>,
    pub xks_proxy_vpc_endpoint_service_owner: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateCustomKeyStore {
    pub custom_key_store_name: String,
    pub custom_key_store_type: Option<String>,
    pub xks_proxy_uri_endpoint: Option<String>,
    pub xks_proxy_uri_path: Option<String>,
    pub xks_proxy_connectivity: Option<String>,
    pub xks_proxy_authentication_credential: Option<CredentialWire>,
    #[serde(flatten)]
    pub unsupported: UnsupportedStoreMembers,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateCustomKeyStore {
    pub custom_key_store_id: String,
    pub new_custom_key_store_name: Option<String>,
    pub xks_proxy_uri_endpoint: Option<String>,
    pub xks_proxy_uri_path: Option<String>,
    pub xks_proxy_connectivity: Option<String>,
    pub xks_proxy_authentication_credential: Option<CredentialWire>,
    #[serde(flatten)]
    pub unsupported: UnsupportedStoreMembers,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeCustomKeyStores {
    pub custom_key_store_id: Option<String>,
    pub custom_key_store_name: Option<String>,
    #[serde(flatten)]
    pub paging: Paging,
}

/// Operations whose only input is `CustomKeyStoreId`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct StoreOnly {
    pub custom_key_store_id: String,
}

/// An operation with no input members.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Empty {}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutKeyAccessReasonsWire {
    allowed_reasons: Vec<String>,
}

/// Nuage extension: the reasons the caller tenant's data key accepts.
#[derive(Debug, Clone)]
pub(crate) struct PutKeyAccessReasons {
    pub allowed_reasons: Vec<AccessReason>,
}

impl PutKeyAccessReasons {
    fn from_wire(wire: PutKeyAccessReasonsWire) -> Result<Self, ApiError> {
        let allowed_reasons = wire
            .allowed_reasons
            .iter()
            .map(|name| {
                AccessReason::parse(name).ok_or_else(|| {
                    let known: Vec<&str> = AccessReason::ALL.iter().map(|r| r.as_str()).collect();
                    ApiError::validation(format!(
                        "1 validation error detected: Value '{name}' at 'allowedReasons' failed \
                         to satisfy constraint: Member must satisfy enum value set: [{}]",
                        known.join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { allowed_reasons })
    }
}

/// Every operation Nuage's KMS serves.
#[derive(Debug, Clone)]
pub(crate) enum Operation {
    CreateKey(CreateKey),
    DescribeKey(KeyOnly),
    ListKeys(Paging),
    EnableKey(KeyOnly),
    DisableKey(KeyOnly),
    CreateAlias(AliasTarget),
    ListAliases(ListAliases),
    UpdateAlias(AliasTarget),
    DeleteAlias(AliasOnly),
    Encrypt(Encrypt),
    Decrypt(Decrypt),
    GenerateDataKey(GenerateDataKey),
    GenerateDataKeyWithoutPlaintext(GenerateDataKey),
    GenerateRandom(GenerateRandom),
    ReEncrypt(ReEncrypt),
    EnableKeyRotation(EnableKeyRotation),
    DisableKeyRotation(KeyOnly),
    GetKeyRotationStatus(KeyOnly),
    RotateKeyOnDemand(KeyOnly),
    ListKeyRotations(ListKeyRotations),
    ScheduleKeyDeletion(ScheduleKeyDeletion),
    CancelKeyDeletion(KeyOnly),
    GetKeyPolicy(GetKeyPolicy),
    PutKeyPolicy(PutKeyPolicy),
    /// Nuage extension (key access justifications).
    GetKeyAccessReasons(Empty),
    /// Nuage extension (key access justifications).
    PutKeyAccessReasons(PutKeyAccessReasons),
    /// Nuage extension (crypto-shredding): the records of deleted keys.
    ListShreddedKeys(Paging),
    CreateCustomKeyStore(CreateCustomKeyStore),
    DescribeCustomKeyStores(DescribeCustomKeyStores),
    UpdateCustomKeyStore(UpdateCustomKeyStore),
    ConnectCustomKeyStore(StoreOnly),
    DisconnectCustomKeyStore(StoreOnly),
    DeleteCustomKeyStore(StoreOnly),
}

fn input<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // An operation with no members may come with no body at all.
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        let message = e.to_string();
        // A missing required member is a validation error in AWS's terms;
        // anything else is a body that is not the operation's JSON shape.
        if let Some(member) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            ApiError::validation(format!(
                "1 validation error detected: Value null at '{}' failed to satisfy \
                 constraint: Member must not be null",
                lower_first(member)
            ))
        } else {
            ApiError::serialization(format!("the request body is not valid: {message}"))
        }
    })
}

/// `KeyId` -> `keyId`, as AWS names members in validation messages.
fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}

impl Operation {
    /// Parses the operation named by `target` (the `X-Amz-Target` value).
    ///
    /// # Errors
    /// `UnknownOperationException` for an operation Nuage does not serve;
    /// `SerializationException` / `ValidationException` for a bad body.
    pub(crate) fn parse(target: &str, body: &[u8]) -> Result<Self, ApiError> {
        let name = target.strip_prefix(TARGET_PREFIX).unwrap_or(target);
        Ok(match name {
            "CreateKey" => Self::CreateKey(input(body)?),
            "DescribeKey" => Self::DescribeKey(input(body)?),
            "ListKeys" => Self::ListKeys(input(body)?),
            "EnableKey" => Self::EnableKey(input(body)?),
            "DisableKey" => Self::DisableKey(input(body)?),
            "CreateAlias" => Self::CreateAlias(input(body)?),
            "ListAliases" => Self::ListAliases(input(body)?),
            "UpdateAlias" => Self::UpdateAlias(input(body)?),
            "DeleteAlias" => Self::DeleteAlias(input(body)?),
            "Encrypt" => Self::Encrypt(input(body)?),
            "Decrypt" => Self::Decrypt(input(body)?),
            "GenerateDataKey" => Self::GenerateDataKey(input(body)?),
            "GenerateDataKeyWithoutPlaintext" => {
                Self::GenerateDataKeyWithoutPlaintext(input(body)?)
            }
            "GenerateRandom" => Self::GenerateRandom(input(body)?),
            "ReEncrypt" => Self::ReEncrypt(input(body)?),
            "EnableKeyRotation" => Self::EnableKeyRotation(input(body)?),
            "DisableKeyRotation" => Self::DisableKeyRotation(input(body)?),
            "GetKeyRotationStatus" => Self::GetKeyRotationStatus(input(body)?),
            "RotateKeyOnDemand" => Self::RotateKeyOnDemand(input(body)?),
            "ListKeyRotations" => Self::ListKeyRotations(input(body)?),
            "ScheduleKeyDeletion" => Self::ScheduleKeyDeletion(input(body)?),
            "CancelKeyDeletion" => Self::CancelKeyDeletion(input(body)?),
            "GetKeyPolicy" => Self::GetKeyPolicy(input(body)?),
            "PutKeyPolicy" => Self::PutKeyPolicy(input(body)?),
            "GetKeyAccessReasons" => Self::GetKeyAccessReasons(input(body)?),
            "PutKeyAccessReasons" => {
                Self::PutKeyAccessReasons(PutKeyAccessReasons::from_wire(input(body)?)?)
            }
            "ListShreddedKeys" => Self::ListShreddedKeys(input(body)?),
            "CreateCustomKeyStore" => Self::CreateCustomKeyStore(input(body)?),
            "DescribeCustomKeyStores" => Self::DescribeCustomKeyStores(input(body)?),
            "UpdateCustomKeyStore" => Self::UpdateCustomKeyStore(input(body)?),
            "ConnectCustomKeyStore" => Self::ConnectCustomKeyStore(input(body)?),
            "DisconnectCustomKeyStore" => Self::DisconnectCustomKeyStore(input(body)?),
            "DeleteCustomKeyStore" => Self::DeleteCustomKeyStore(input(body)?),
            _ => {
                return Err(ApiError::bad(
                    "UnknownOperationException",
                    format!("Nuage's KMS does not support the operation `{name}`"),
                ));
            }
        })
    }

    /// The operation's name, which is also its IAM action after `kms:`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::CreateKey(_) => "CreateKey",
            Self::DescribeKey(_) => "DescribeKey",
            Self::ListKeys(_) => "ListKeys",
            Self::EnableKey(_) => "EnableKey",
            Self::DisableKey(_) => "DisableKey",
            Self::CreateAlias(_) => "CreateAlias",
            Self::ListAliases(_) => "ListAliases",
            Self::UpdateAlias(_) => "UpdateAlias",
            Self::DeleteAlias(_) => "DeleteAlias",
            Self::Encrypt(_) => "Encrypt",
            Self::Decrypt(_) => "Decrypt",
            Self::GenerateDataKey(_) => "GenerateDataKey",
            Self::GenerateDataKeyWithoutPlaintext(_) => "GenerateDataKeyWithoutPlaintext",
            Self::GenerateRandom(_) => "GenerateRandom",
            Self::ReEncrypt(_) => "ReEncrypt",
            Self::EnableKeyRotation(_) => "EnableKeyRotation",
            Self::DisableKeyRotation(_) => "DisableKeyRotation",
            Self::GetKeyRotationStatus(_) => "GetKeyRotationStatus",
            Self::RotateKeyOnDemand(_) => "RotateKeyOnDemand",
            Self::ListKeyRotations(_) => "ListKeyRotations",
            Self::ScheduleKeyDeletion(_) => "ScheduleKeyDeletion",
            Self::CancelKeyDeletion(_) => "CancelKeyDeletion",
            Self::GetKeyPolicy(_) => "GetKeyPolicy",
            Self::PutKeyPolicy(_) => "PutKeyPolicy",
            Self::GetKeyAccessReasons(_) => "GetKeyAccessReasons",
            Self::PutKeyAccessReasons(_) => "PutKeyAccessReasons",
            Self::ListShreddedKeys(_) => "ListShreddedKeys",
            Self::CreateCustomKeyStore(_) => "CreateCustomKeyStore",
            Self::DescribeCustomKeyStores(_) => "DescribeCustomKeyStores",
            Self::UpdateCustomKeyStore(_) => "UpdateCustomKeyStore",
            Self::ConnectCustomKeyStore(_) => "ConnectCustomKeyStore",
            Self::DisconnectCustomKeyStore(_) => "DisconnectCustomKeyStore",
            Self::DeleteCustomKeyStore(_) => "DeleteCustomKeyStore",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operations_and_their_members() {
        let op = Operation::parse(
            "TrentService.Encrypt",
            br#"{"KeyId":"alias/a","Plaintext":"aGVsbG8=","EncryptionContext":{"b":"2","a":"1"},"Future":1}"#,
        )
        .unwrap();
        let Operation::Encrypt(encrypt) = op else {
            panic!("{op:?}")
        };
        assert_eq!(encrypt.key_id, "alias/a");
        assert_eq!(encrypt.plaintext.0, b"hello");
        assert_eq!(encrypt.encryption_context.len(), 2);
        assert_eq!(
            Operation::parse("TrentService.ListKeys", b"")
                .unwrap()
                .name(),
            "ListKeys"
        );
        let Operation::ListAliases(list) = Operation::parse(
            "TrentService.ListAliases",
            br#"{"Limit":5,"Marker":"alias/x"}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(list.paging.limit, Some(5));
        assert_eq!(list.paging.marker.as_deref(), Some("alias/x"));
    }

    #[test]
    fn refuses_bad_bodies_with_aws_codes() {
        let missing = Operation::parse("TrentService.DescribeKey", b"{}").unwrap_err();
        assert_eq!(missing.code, "ValidationException");
        assert!(missing.message.contains("'keyId'"), "{}", missing.message);
        for body in [
            &b"{"[..],
            br#"{"KeyId":5}"#,
            b"[]",
            br#"{"KeyId":"k","Plaintext":"***"}"#,
        ] {
            let target = if body.starts_with(br#"{"KeyId":"k""#) {
                "TrentService.Encrypt"
            } else {
                "TrentService.DescribeKey"
            };
            assert_eq!(
                Operation::parse(target, body).unwrap_err().code,
                "SerializationException",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let unknown = Operation::parse(
            "TrentService.PutKeyAccessReasons",
            br#"{"AllowedReasons":["CUSTOMER_INITIATED_ACCESS","GOOGLE_INITIATED_SERVICE"]}"#,
        )
        .unwrap_err();
        assert_eq!(unknown.code, "ValidationException");
        assert!(unknown.message.contains("GOOGLE_INITIATED_SERVICE"));
        assert_eq!(
            Operation::parse("TrentService.PutKeyAccessReasons", b"{}")
                .unwrap_err()
                .code,
            "ValidationException"
        );
        assert_eq!(
            Operation::parse("TrentService.Sign", b"{}")
                .unwrap_err()
                .code,
            "UnknownOperationException"
        );
    }
}
