//! Customer keys: the KMS keys a tenant creates, uses, rotates and deletes
//! through the KMS API ([`CustomerKeys`]), and their aliases.
//!
//! ```text
//! root of trust (the same one as the storage key hierarchy)
//!   └─ KMS key material, 32 random bytes per material version, stored
//!        │  wrapped by the root with the key's ARN as associated data
//!        └─ ciphertext blobs and data keys handed to clients (crate::ciphertext)
//! ```
//!
//! A key is one document (namespace `kms.key`, key `TENANT/KEY_ID`) holding
//! its metadata, its key policy, the names of its aliases and every material
//! version it ever had; an alias is one document (`kms.alias`,
//! `TENANT/alias/NAME`) naming its key; `kms.tenant` counts each tenant's
//! keys. Writes that touch several (an alias and its key) commit in one
//! revision-checked batch, so an alias and the key's list of aliases never
//! disagree.
//!
//! *Invariants:* key material never leaves this module unwrapped (nothing
//! returns it; `Encrypt` and `Decrypt` happen here). A tenant reaches only its
//! own keys: every lookup is under the caller's tenant, and an ARN naming
//! another tenant or region is treated as a key that does not exist. Rotation
//! adds a material version and never removes one, so old ciphertext keeps
//! decrypting; only deletion erases material, and it leaves a record of the
//! deleted key that holds none (module `shredding`, which also shreds a
//! deleted tenant's keys).
//!
//! Time-based transitions happen when a key is next read (there is no
//! background worker): a key whose deletion date has passed is deleted, with
//! its aliases, by the first lookup or listing that meets it, which then
//! answers as if it never existed; a key whose automatic rotation is due gets
//! its new material on the first lookup after the date while it is enabled.
//!
//! *Boundaries:* authorization is the caller's (the KMS API front end asks the
//! identity service, with the key policy this module stores); so is the
//! validation of policy documents. This module knows nothing of HTTP or JSON
//! on the wire.

mod custom_key_store;
mod shredding;
// For the root-of-trust migration (`crate::migrate`), which rewraps each
// store's key.
pub(crate) use custom_key_store::{STORES as CUSTOM_KEY_STORES, custom_key_store_binding};
mod rewrap;
mod xks;

pub use custom_key_store::{
    ConnectionErrorCode, ConnectionState, CustomKeyStore, CustomKeyStoreUpdate, EXTERNAL_KEY_STORE,
    KeyCaller, NewCustomKeyStore, PUBLIC_ENDPOINT, XksCredential, check_credential,
    check_uri_endpoint, check_uri_path,
};
pub use shredding::{ShreddedKey, TenantShredding};

use crate::KeyService;
use crate::access::AccessReason;
use crate::ciphertext::{
    CIPHERTEXT_FORMAT_V1, CIPHERTEXT_FORMAT_V2, CiphertextBlob, CiphertextBody, EncryptionContext,
    associated_data,
};
use crate::external::ExternalKeyStore;
use nuage_base::Clock;
use nuage_base::limits::{
    KMS_ALIAS_NAME_CHARS_MAX, KMS_ALIASES_PER_KEY_MAX, KMS_DESCRIPTION_CHARS_MAX,
    KMS_ENCRYPTION_CONTEXT_BYTES_MAX, KMS_KEYS_PER_TENANT_MAX, KMS_ON_DEMAND_ROTATIONS_MAX,
    KMS_PENDING_WINDOW_DAYS_DEFAULT, KMS_PENDING_WINDOW_DAYS_MAX, KMS_PENDING_WINDOW_DAYS_MIN,
    KMS_PLAINTEXT_BYTES_MAX, KMS_RANDOM_BYTES_MAX, KMS_ROTATION_PERIOD_DAYS_DEFAULT,
    KMS_ROTATION_PERIOD_DAYS_MAX, KMS_ROTATION_PERIOD_DAYS_MIN, KMS_TAGS_MAX,
    KMS_UPDATE_ATTEMPTS_MAX,
};
use nuage_crypto::DataKey;
use nuage_crypto::KeyEncryptionKey;
use nuage_meta::{Document, DocumentWrite, Expect, MetaError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// Also read by the root-of-trust migration (`crate::migrate`).
pub(crate) const KEYS: &str = "kms.key";
const ALIASES: &str = "kms.alias";
const TENANT_COUNTS: &str = "kms.tenant";
const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;
/// Unwrapped key materials kept in memory (so `Encrypt` does not ask the root
/// of trust, possibly an HSM, every time); beyond this the cache is cleared.
pub const MATERIALS_CACHED_MAX: usize = 10_000;
/// Aliases under this prefix are AWS managed keys' (`alias/aws/s3`): reserved.
const RESERVED_ALIAS_PREFIX: &str = "alias/aws/";

/// Why a KMS request was refused, in the AWS KMS API's own classes (the
/// front end maps each to its exception name). Separate from
/// [`crate::KeyError`], which speaks for the storage key hierarchy.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// No such key or alias in the caller's tenant (and region).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The key is disabled.
    #[error("{0}")]
    Disabled(String),
    /// The key's state forbids the operation (pending deletion, mostly).
    #[error("{0}")]
    InvalidState(String),
    /// The ciphertext is malformed, or does not authenticate under its key
    /// with this encryption context.
    #[error("{0}")]
    InvalidCiphertext(String),
    /// The ciphertext was encrypted under another key than the one named.
    #[error("{0}")]
    IncorrectKey(String),
    #[error("{0}")]
    InvalidAliasName(String),
    #[error("{0}")]
    InvalidArn(String),
    #[error("{0}")]
    InvalidMarker(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    Unsupported(String),
    /// The caller may not do this (an external key store proxy refused).
    #[error("{0}")]
    AccessDenied(String),
    // ---- custom key stores (AWS's exceptions of the same names) ----
    #[error("{0}")]
    CustomKeyStoreNotFound(String),
    #[error("{0}")]
    CustomKeyStoreNameInUse(String),
    /// The store's connection state forbids the operation (or, for a key in
    /// the store, makes it unavailable).
    #[error("{0}")]
    CustomKeyStoreInvalidState(String),
    /// `CustomKeyStoreHasCMKsException`.
    #[error("{0}")]
    CustomKeyStoreHasKeys(String),
    #[error("{0}")]
    XksProxyUriInUse(String),
    #[error("{0}")]
    XksProxyUriUnreachable(String),
    #[error("{0}")]
    XksProxyIncorrectAuthenticationCredential(String),
    #[error("{0}")]
    XksProxyInvalidConfiguration(String),
    #[error("{0}")]
    XksProxyInvalidResponse(String),
    #[error("{0}")]
    XksKeyNotFound(String),
    #[error("{0}")]
    XksKeyInvalidConfiguration(String),
    #[error("{0}")]
    XksKeyAlreadyInUse(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::KeyError> for KmsError {
    fn from(e: crate::KeyError) -> Self {
        match e {
            crate::KeyError::CustomerKey(e) => e,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<MetaError> for KmsError {
    fn from(e: MetaError) -> Self {
        Self::Internal(format!("key storage failed: {e}"))
    }
}

impl From<nuage_crypto::CryptoError> for KmsError {
    fn from(e: nuage_crypto::CryptoError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<serde_json::Error> for KmsError {
    fn from(e: serde_json::Error) -> Self {
        Self::Internal(format!("corrupt KMS record: {e}"))
    }
}

pub type KmsResult<T> = Result<T, KmsError>;

/// A key's lifecycle state (AWS's `KeyState`, the states Nuage keys can have).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
}

impl KeyState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "Enabled",
            Self::Disabled => "Disabled",
            Self::PendingDeletion => "PendingDeletion",
        }
    }
}

/// What a key is for: only symmetric encryption today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyUsage {
    #[serde(rename = "ENCRYPT_DECRYPT")]
    EncryptDecrypt,
}

impl KeyUsage {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        "ENCRYPT_DECRYPT"
    }
}

/// The kind of key material: only AES-256-GCM (AWS's `SYMMETRIC_DEFAULT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeySpec {
    #[serde(rename = "SYMMETRIC_DEFAULT")]
    SymmetricDefault,
}

impl KeySpec {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        "SYMMETRIC_DEFAULT"
    }
}

/// Where a key's cryptography happens (AWS's `Origin`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyOrigin {
    /// Nuage's material alone.
    #[default]
    #[serde(rename = "AWS_KMS")]
    AwsKms,
    /// Nuage's material and an external key in a custom key store, both
    /// needed for every use.
    #[serde(rename = "EXTERNAL_KEY_STORE")]
    ExternalKeyStore,
}

impl KeyOrigin {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwsKms => "AWS_KMS",
            Self::ExternalKeyStore => "EXTERNAL_KEY_STORE",
        }
    }
}

/// How a material version after the first came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RotationType {
    #[serde(rename = "AUTOMATIC")]
    Automatic,
    #[serde(rename = "ON_DEMAND")]
    OnDemand,
}

impl RotationType {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Automatic => "AUTOMATIC",
            Self::OnDemand => "ON_DEMAND",
        }
    }
}

/// One version of a key's material: 32 random bytes, stored only wrapped by
/// the root of trust with the key's ARN as associated data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMaterial {
    /// 1 for the key's first material, then one more per rotation.
    pub version: u32,
    pub created_unix_ns: i64,
    /// `None` for the first material.
    #[serde(default)]
    pub rotation: Option<RotationType>,
    #[serde(with = "base64_bytes")]
    pub wrapped: Vec<u8>,
}

impl KeyMaterial {
    /// An identifier for the material that reveals nothing about it (AWS's
    /// `KeyMaterialId` is 64 hex digits): the hex of the key id's UUID bytes
    /// and the version.
    #[must_use]
    pub fn material_id(&self, key_id: &str) -> String {
        let id = key_id.replace('-', "");
        format!("{id}{:032x}", self.version)
    }
}

/// A customer key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsKey {
    /// A UUID, lowercase and hyphenated.
    pub key_id: String,
    /// `arn:aws:kms:REGION:TENANT:key/KEY_ID`.
    pub arn: String,
    pub tenant: String,
    #[serde(default)]
    pub description: String,
    pub key_usage: KeyUsage,
    pub key_spec: KeySpec,
    pub state: KeyState,
    pub created_unix_ns: i64,
    /// Set while pending deletion.
    #[serde(default)]
    pub deletion_unix_ns: Option<i64>,
    #[serde(default)]
    pub pending_window_days: Option<u32>,
    #[serde(default)]
    pub rotation_enabled: bool,
    /// The automatic rotation period, while rotation is enabled.
    #[serde(default)]
    pub rotation_period_days: Option<u32>,
    #[serde(default)]
    pub next_rotation_unix_ns: Option<i64>,
    /// Oldest first; never empty.
    pub materials: Vec<KeyMaterial>,
    /// The key policy, as the user wrote it (or the default one).
    pub policy: String,
    /// Names (`alias/...`) of the aliases that point here.
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    #[serde(default)]
    pub origin: KeyOrigin,
    /// The custom key store of a key whose origin is `EXTERNAL_KEY_STORE`.
    #[serde(default)]
    pub custom_key_store_id: Option<String>,
    /// Its external key's id in that store (`XksKeyConfiguration.Id`).
    #[serde(default)]
    pub xks_key_id: Option<String>,
}

impl KmsKey {
    /// The material new ciphertext is sealed with.
    ///
    /// # Errors
    /// `Internal` for a key with no material (corruption).
    pub fn current_material(&self) -> KmsResult<&KeyMaterial> {
        self.materials
            .last()
            .ok_or_else(|| KmsError::Internal(format!("key {} has no key material", self.arn)))
    }

    /// How many on-demand rotations the key has had.
    #[must_use]
    pub fn on_demand_rotations(&self) -> usize {
        self.materials
            .iter()
            .filter(|m| m.rotation == Some(RotationType::OnDemand))
            .count()
    }

    /// Refuses cryptographic use unless the key is enabled, with AWS's
    /// exceptions: `DisabledException`, `KMSInvalidStateException`.
    ///
    /// # Errors
    /// `Disabled` or `InvalidState`.
    pub fn check_usable(&self) -> KmsResult<()> {
        match self.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::Disabled(format!("{} is disabled.", self.arn))),
            KeyState::PendingDeletion => Err(self.pending_deletion()),
        }
    }

    fn pending_deletion(&self) -> KmsError {
        KmsError::InvalidState(format!("{} is pending deletion.", self.arn))
    }

    /// For management operations that AWS refuses on a key pending deletion.
    fn check_not_pending_deletion(&self) -> KmsResult<()> {
        if self.state == KeyState::PendingDeletion {
            return Err(self.pending_deletion());
        }
        Ok(())
    }
}

/// An alias: a friendly name for one key of the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsAlias {
    pub tenant: String,
    /// `alias/NAME`.
    pub name: String,
    pub target_key_id: String,
    pub created_unix_ns: i64,
    pub updated_unix_ns: i64,
}

/// What CreateKey asks for.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub description: String,
    /// `None`: AWS's default key policy ([`default_key_policy`]).
    pub policy: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// A page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts, when there is one.
    pub next_marker: Option<String>,
}

/// What a `KeyId` parameter names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyReference {
    Id(String),
    /// `alias/NAME`.
    Alias(String),
}

/// AWS's default key policy: the tenant (account) may do everything, which
/// delegates each use to the tenant's identity policies.
#[must_use]
pub fn default_key_policy(tenant: &str) -> String {
    format!(
        r#"{{
  "Version" : "2012-10-17",
  "Id" : "key-default-1",
  "Statement" : [ {{
    "Sid" : "Enable IAM User Permissions",
    "Effect" : "Allow",
    "Principal" : {{
      "AWS" : "arn:aws:iam::{tenant}:root"
    }},
    "Action" : "kms:*",
    "Resource" : "*"
  }} ]
}}"#
    )
}

/// Checks an alias name the way AWS does: `alias/` then letters, digits,
/// `/`, `_` and `-`, at most [`KMS_ALIAS_NAME_CHARS_MAX`] characters, and not
/// under the reserved `alias/aws/`.
///
/// # Errors
/// `Validation` or `InvalidAliasName`.
pub fn check_alias_name(name: &str) -> KmsResult<()> {
    if name.is_empty() || name.len() > KMS_ALIAS_NAME_CHARS_MAX {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value at 'aliasName' failed to satisfy constraint: \
             Member must have length between 1 and {KMS_ALIAS_NAME_CHARS_MAX}"
        )));
    }
    let rest = name.strip_prefix("alias/").filter(|r| !r.is_empty());
    let Some(rest) = rest else {
        return Err(KmsError::InvalidAliasName(format!(
            "Alias must start with the prefix \"alias/\" and name at least one character: {name}"
        )));
    };
    if !rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
    {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value '{name}' at 'aliasName' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"
        )));
    }
    if name.starts_with(RESERVED_ALIAS_PREFIX) {
        return Err(KmsError::InvalidAliasName(format!(
            "Cannot create or change alias {name}: the prefix alias/aws/ is reserved for AWS managed keys"
        )));
    }
    Ok(())
}

/// Refuses an encryption context larger than [`KMS_ENCRYPTION_CONTEXT_BYTES_MAX`].
///
/// # Errors
/// `Validation`.
pub fn check_encryption_context(context: &EncryptionContext) -> KmsResult<()> {
    let bytes: usize = context.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > KMS_ENCRYPTION_CONTEXT_BYTES_MAX {
        return Err(KmsError::Validation(format!(
            "the encryption context holds {bytes} bytes; at most {KMS_ENCRYPTION_CONTEXT_BYTES_MAX} are allowed"
        )));
    }
    Ok(())
}

fn key_doc(tenant: &str, key_id: &str) -> String {
    format!("{tenant}/{key_id}")
}

fn alias_doc(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

fn is_key_id(text: &str) -> bool {
    text.len() == 36 && uuid::Uuid::try_parse(text).is_ok()
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TenantCounts {
    keys: u32,
    /// Records of deleted keys kept (`shredding`), at most
    /// `KMS_SHREDDED_KEYS_PER_TENANT_MAX`.
    #[serde(default)]
    shredded: u32,
}

/// Unwrapped materials by (key ARN, material version).
type MaterialCache = RwLock<HashMap<(String, u32), Arc<KeyEncryptionKey>>>;

/// The customer keys of one Nuage (one KMS region).
#[derive(Clone)]
pub struct CustomerKeys {
    keys: KeyService,
    clock: Arc<dyn Clock>,
    region: String,
    materials: Arc<MaterialCache>,
    /// The client for external key store proxies, when the server has one.
    external: Option<Arc<dyn ExternalKeyStore>>,
}

impl CustomerKeys {
    /// Customer keys stored beside `keys`' documents, wrapped by its root of
    /// trust, with ARNs in `region`.
    #[must_use]
    pub fn new(keys: KeyService, clock: Arc<dyn Clock>, region: impl Into<String>) -> Self {
        Self {
            keys,
            clock,
            region: region.into(),
            materials: Arc::new(RwLock::new(HashMap::new())),
            external: None,
        }
    }

    /// These keys with `client` reaching the tenants' external key store
    /// proxies (`nuage-xks`'s HTTPS client): custom key stores of type
    /// `EXTERNAL_KEY_STORE` and the keys in them work only with one.
    #[must_use]
    pub fn with_external_key_store(mut self, client: Arc<dyn ExternalKeyStore>) -> Self {
        self.external = Some(client);
        self
    }

    /// The storage key hierarchy these keys share a root of trust with:
    /// the KMS API reaches the tenants' key access justifications through it.
    #[must_use]
    pub fn key_service(&self) -> &KeyService {
        &self.keys
    }

    /// The region in every key and alias ARN.
    #[must_use]
    pub fn region(&self) -> &str {
        &self.region
    }

    #[must_use]
    pub fn key_arn(&self, tenant: &str, key_id: &str) -> String {
        format!("arn:aws:kms:{}:{tenant}:key/{key_id}", self.region)
    }

    /// `name` is `alias/NAME`.
    #[must_use]
    pub fn alias_arn(&self, tenant: &str, name: &str) -> String {
        format!("arn:aws:kms:{}:{tenant}:{name}", self.region)
    }

    fn now(&self) -> i64 {
        self.clock.now_unix_ns()
    }

    fn not_found(&self, tenant: &str, key_id: &str) -> KmsError {
        KmsError::NotFound(format!(
            "Key '{}' does not exist",
            self.key_arn(tenant, key_id)
        ))
    }

    fn alias_not_found(&self, tenant: &str, name: &str) -> KmsError {
        KmsError::NotFound(format!(
            "Alias {} is not found.",
            self.alias_arn(tenant, name)
        ))
    }

    fn contention(what: &str) -> KmsError {
        KmsError::Internal(format!(
            "{what}: the key kept changing under {KMS_UPDATE_ATTEMPTS_MAX} attempts"
        ))
    }

    /// Commits `writes`; `false` when a concurrent write changed what they
    /// expected (the caller re-reads and tries again).
    async fn commit(&self, writes: Vec<DocumentWrite>) -> KmsResult<bool> {
        match self.keys.docs.commit_documents(writes).await {
            Ok(()) => Ok(true),
            Err(MetaError::PreconditionFailed) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn key_write(key: &KmsKey, expect: Expect) -> KmsResult<DocumentWrite> {
        Ok(DocumentWrite {
            namespace: KEYS.into(),
            key: key_doc(&key.tenant, &key.key_id),
            expect,
            value: Some(serde_json::to_vec(key)?),
        })
    }

    // ---- key material ----

    /// Fresh material for `arn`, wrapped by the root of trust.
    async fn new_material(
        &self,
        arn: &str,
        version: u32,
        rotation: Option<RotationType>,
    ) -> KmsResult<KeyMaterial> {
        let secret = KeyEncryptionKey::generate()?;
        let wrapped = self.keys.root.wrap_key(&secret, arn.as_bytes()).await?;
        self.cache_material(arn, version, Arc::new(secret));
        Ok(KeyMaterial {
            version,
            created_unix_ns: self.now(),
            rotation,
            wrapped,
        })
    }

    fn cache_material(&self, arn: &str, version: u32, secret: Arc<KeyEncryptionKey>) {
        if let Ok(mut cache) = self.materials.write() {
            if cache.len() >= MATERIALS_CACHED_MAX {
                cache.clear();
            }
            cache.insert((arn.to_owned(), version), secret);
        }
    }

    /// A material's secret, unwrapped by the root of trust (or from the cache).
    async fn material_secret(
        &self,
        key: &KmsKey,
        material: &KeyMaterial,
    ) -> KmsResult<Arc<KeyEncryptionKey>> {
        let cached = self
            .materials
            .read()
            .ok()
            .and_then(|cache| cache.get(&(key.arn.clone(), material.version)).cloned());
        if let Some(secret) = cached {
            return Ok(secret);
        }
        let secret = Arc::new(
            self.keys
                .root
                .unwrap_key(&material.wrapped, key.arn.as_bytes())
                .await?,
        );
        self.cache_material(&key.arn, material.version, Arc::clone(&secret));
        Ok(secret)
    }

    fn forget_materials(&self, key: &KmsKey) {
        if let Ok(mut cache) = self.materials.write() {
            for material in &key.materials {
                cache.remove(&(key.arn.clone(), material.version));
            }
        }
    }

    // ---- lookups ----

    /// What a `KeyId` parameter names: a key id, a key ARN, an alias name or
    /// an alias ARN. An ARN of another tenant or region names nothing the
    /// caller can see: `NotFound`, exactly as for a key that does not exist.
    ///
    /// # Errors
    /// `InvalidArn` for a malformed KMS ARN; `NotFound` otherwise.
    pub fn parse_reference(&self, tenant: &str, text: &str) -> KmsResult<KeyReference> {
        if text.starts_with("arn:") {
            let parts: Vec<&str> = text.splitn(6, ':').collect();
            let [_, partition, service, region, account, resource] = parts.as_slice() else {
                return Err(KmsError::InvalidArn(format!("Invalid arn {text}")));
            };
            let reference = if let Some(id) = resource.strip_prefix("key/") {
                KeyReference::Id((*id).to_owned())
            } else if resource.starts_with("alias/") {
                KeyReference::Alias((*resource).to_owned())
            } else {
                return Err(KmsError::InvalidArn(format!("Invalid arn {text}")));
            };
            if *partition != "aws" || *service != "kms" || region.is_empty() || account.is_empty() {
                return Err(KmsError::InvalidArn(format!("Invalid arn {text}")));
            }
            if *region != self.region || *account != tenant {
                return Err(KmsError::NotFound(match reference {
                    KeyReference::Id(_) => format!("Key '{text}' does not exist"),
                    KeyReference::Alias(_) => format!("Alias {text} is not found."),
                }));
            }
            return match reference {
                KeyReference::Id(id) if !is_key_id(&id) => {
                    Err(KmsError::NotFound(format!("Invalid keyId '{text}'")))
                }
                KeyReference::Id(id) => Ok(KeyReference::Id(id.to_ascii_lowercase())),
                alias @ KeyReference::Alias(_) => Ok(alias),
            };
        }
        if text.starts_with("alias/") {
            return Ok(KeyReference::Alias(text.to_owned()));
        }
        if is_key_id(text) {
            return Ok(KeyReference::Id(text.to_ascii_lowercase()));
        }
        Err(KmsError::NotFound(format!("Invalid keyId '{text}'")))
    }

    /// The key a `KeyId` parameter names, in the caller's tenant.
    ///
    /// # Errors
    /// As [`CustomerKeys::parse_reference`]; `NotFound` for a missing key or alias.
    pub async fn resolve(&self, tenant: &str, text: &str) -> KmsResult<KmsKey> {
        match self.parse_reference(tenant, text)? {
            KeyReference::Id(id) => self.key(tenant, &id).await,
            KeyReference::Alias(name) => {
                let alias = self.alias(tenant, &name).await?;
                self.key(tenant, &alias.target_key_id).await
            }
        }
    }

    /// The tenant's key `key_id`.
    ///
    /// # Errors
    /// `NotFound`, or a storage failure.
    pub async fn key(&self, tenant: &str, key_id: &str) -> KmsResult<KmsKey> {
        match self.load(tenant, key_id).await? {
            Some((key, _)) => Ok(key),
            None => Err(self.missing(tenant, key_id).await?.map_or_else(
                || self.not_found(tenant, key_id),
                |shredded| shredded.not_found(),
            )),
        }
    }

    /// Why `key_id` is not among the tenant's keys: the record of its
    /// deletion, when it was deleted and the record is still kept.
    async fn missing(&self, tenant: &str, key_id: &str) -> KmsResult<Option<ShreddedKey>> {
        if !is_key_id(key_id) {
            return Ok(None);
        }
        self.shredded_key(tenant, key_id).await
    }

    /// Reads a key and applies what time made due: deletion once its date has
    /// passed (then `None`), or the automatic rotation of an enabled key.
    async fn load(&self, tenant: &str, key_id: &str) -> KmsResult<Option<(KmsKey, u64)>> {
        for _ in 0..KMS_UPDATE_ATTEMPTS_MAX {
            let Some(doc) = self
                .keys
                .docs
                .get_document(KEYS, &key_doc(tenant, key_id))
                .await?
            else {
                return Ok(None);
            };
            if let Some(settled) = self.settle(doc).await? {
                return Ok(settled);
            }
        }
        Err(Self::contention("reading a key"))
    }

    /// `Some(None)`: the key was deleted now; `Some(Some(..))`: the key as it
    /// stands; `None`: a concurrent write interfered, read again.
    async fn settle(&self, doc: Document) -> KmsResult<Option<Option<(KmsKey, u64)>>> {
        let key: KmsKey = serde_json::from_slice(&doc.value)?;
        let now = self.now();
        if key.state == KeyState::PendingDeletion && key.deletion_unix_ns.is_some_and(|d| d <= now)
        {
            return Ok(self.purge(&key, doc.revision).await?.then_some(None));
        }
        let rotation_due = key.state == KeyState::Enabled
            && key.rotation_enabled
            && key.next_rotation_unix_ns.is_some_and(|t| t <= now);
        if !rotation_due {
            return Ok(Some(Some((key, doc.revision))));
        }
        let mut rotated = key.clone();
        let version = next_version(&key)?;
        let material = self
            .new_material(&key.arn, version, Some(RotationType::Automatic))
            .await?;
        rotated.materials.push(material);
        let period_ns = i64::from(
            key.rotation_period_days
                .unwrap_or(KMS_ROTATION_PERIOD_DAYS_DEFAULT),
        ) * NS_PER_DAY;
        // The next date after now on the original schedule: a key read long
        // after its date rotates once, not once per missed period.
        let mut next = key.next_rotation_unix_ns.unwrap_or(now);
        while next <= now {
            next = next.saturating_add(period_ns);
        }
        rotated.next_rotation_unix_ns = Some(next);
        if self
            .commit(vec![Self::key_write(
                &rotated,
                Expect::Revision(doc.revision),
            )?])
            .await?
        {
            tracing::info!(key = %key.arn, version, "rotated a KMS key's material (automatic)");
            return Ok(Some(Some((rotated, doc.revision + 1))));
        }
        Ok(None)
    }

    /// Deletes a key whose waiting period is over, with its aliases and
    /// every material version (crypto-shredding what was sealed under it),
    /// and records the deletion (`shredding`) in the same batch: the record
    /// exists exactly when the key no longer does. `false` when the key
    /// changed meanwhile.
    async fn purge(&self, key: &KmsKey, revision: u64) -> KmsResult<bool> {
        let (counts, counts_expect) = self.counts(&key.tenant).await?;
        let (records, shredded) = self
            .shredded_key_writes(key, self.now(), counts.shredded)
            .await?;
        let mut writes = vec![DocumentWrite {
            namespace: KEYS.into(),
            key: key_doc(&key.tenant, &key.key_id),
            expect: Expect::Revision(revision),
            value: None,
        }];
        // The key's revision is checked, so its alias list is exact.
        for name in &key.aliases {
            writes.push(DocumentWrite {
                namespace: ALIASES.into(),
                key: alias_doc(&key.tenant, name),
                expect: Expect::Any,
                value: None,
            });
        }
        writes.push(Self::counts_write(
            &key.tenant,
            &TenantCounts {
                keys: counts.keys.saturating_sub(1),
                shredded,
            },
            counts_expect,
        )?);
        // The external key may back a new key in its store again.
        writes.extend(Self::xks_key_write(key, Expect::Any, false));
        writes.extend(records);
        let deleted = self.commit(writes).await?;
        if deleted {
            self.forget_materials(key);
            tracing::info!(
                key = %key.arn,
                material_versions = key.materials.len(),
                origin = key.origin.as_str(),
                "deleted a KMS key at the end of its waiting period: its data is crypto-shredded"
            );
        }
        Ok(deleted)
    }

    async fn counts(&self, tenant: &str) -> KmsResult<(TenantCounts, Expect)> {
        match self.keys.docs.get_document(TENANT_COUNTS, tenant).await? {
            Some(doc) => Ok((
                serde_json::from_slice(&doc.value)?,
                Expect::Revision(doc.revision),
            )),
            None => Ok((TenantCounts::default(), Expect::Absent)),
        }
    }

    fn counts_write(
        tenant: &str,
        counts: &TenantCounts,
        expect: Expect,
    ) -> KmsResult<DocumentWrite> {
        Ok(DocumentWrite {
            namespace: TENANT_COUNTS.into(),
            key: tenant.into(),
            expect,
            value: Some(serde_json::to_vec(counts)?),
        })
    }

    /// The tenant's keys in key-id order, after `marker` (a key id), at most
    /// `limit` (the caller bounds it). Keys whose deletion is due are deleted
    /// on the way and not listed.
    ///
    /// # Errors
    /// `InvalidMarker` for a marker that is not a key id; storage failure.
    pub async fn list_keys(
        &self,
        tenant: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> KmsResult<Page<KmsKey>> {
        if marker.is_some_and(|m| !is_key_id(m)) {
            return Err(KmsError::InvalidMarker(
                "Invalid marker: it must come from a previous ListKeys response".into(),
            ));
        }
        let after = marker.map(|m| key_doc(tenant, m));
        let docs = self
            .keys
            .docs
            .scan_documents(KEYS, &format!("{tenant}/"), after.as_deref(), limit + 1)
            .await?;
        let truncated = docs.len() > limit;
        let mut items = Vec::with_capacity(limit.min(docs.len()));
        let mut last = None;
        for doc in docs.into_iter().take(limit) {
            let key_id = doc
                .key
                .rsplit_once('/')
                .map(|(_, id)| id.to_owned())
                .unwrap_or_default();
            last = Some(key_id.clone());
            let settled = match self.settle(doc).await? {
                Some(settled) => settled,
                // Changed while we looked: read it again.
                None => self.load(tenant, &key_id).await?,
            };
            if let Some((key, _)) = settled {
                items.push(key);
            }
        }
        Ok(Page {
            items,
            next_marker: if truncated { last } else { None },
        })
    }

    // ---- lifecycle ----

    /// Creates an enabled key with fresh material.
    ///
    /// # Errors
    /// `Validation` for a description or tags beyond AWS's limits;
    /// `LimitExceeded` past [`KMS_KEYS_PER_TENANT_MAX`]; storage failure.
    pub async fn create_key(&self, tenant: &str, new: NewKey) -> KmsResult<KmsKey> {
        let key = self.new_key_record(tenant, new).await?;
        for _ in 0..KMS_UPDATE_ATTEMPTS_MAX {
            let (counts, expect) = self.counts(tenant).await?;
            if counts.keys >= KMS_KEYS_PER_TENANT_MAX {
                return Err(KmsError::LimitExceeded(format!(
                    "The tenant already has {KMS_KEYS_PER_TENANT_MAX} KMS keys, the most it may have"
                )));
            }
            let writes = vec![
                Self::key_write(&key, Expect::Absent)?,
                Self::counts_write(
                    tenant,
                    &TenantCounts {
                        keys: counts.keys + 1,
                        shredded: counts.shredded,
                    },
                    expect,
                )?,
            ];
            if self.commit(writes).await? {
                tracing::info!(key = %key.arn, "created a KMS key");
                return Ok(key);
            }
        }
        Err(Self::contention("creating a key"))
    }

    /// A new enabled key with fresh material, not yet stored.
    async fn new_key_record(&self, tenant: &str, new: NewKey) -> KmsResult<KmsKey> {
        if new.description.chars().count() > KMS_DESCRIPTION_CHARS_MAX {
            return Err(KmsError::Validation(format!(
                "1 validation error detected: Value at 'description' failed to satisfy \
                 constraint: Member must have length less than or equal to {KMS_DESCRIPTION_CHARS_MAX}"
            )));
        }
        check_tags(&new.tags)?;
        let key_id = uuid::Uuid::new_v4().hyphenated().to_string();
        let arn = self.key_arn(tenant, &key_id);
        let material = self.new_material(&arn, 1, None).await?;
        let key = KmsKey {
            key_id,
            arn,
            tenant: tenant.to_owned(),
            description: new.description,
            key_usage: KeyUsage::EncryptDecrypt,
            key_spec: KeySpec::SymmetricDefault,
            state: KeyState::Enabled,
            created_unix_ns: self.now(),
            deletion_unix_ns: None,
            pending_window_days: None,
            rotation_enabled: false,
            rotation_period_days: None,
            next_rotation_unix_ns: None,
            materials: vec![material],
            policy: new.policy.unwrap_or_else(|| default_key_policy(tenant)),
            aliases: Vec::new(),
            tags: new.tags,
            origin: KeyOrigin::AwsKms,
            custom_key_store_id: None,
            xks_key_id: None,
        };
        Ok(key)
    }

    /// Reads the key, lets `change` decide and edit, writes it back if the key
    /// did not change meanwhile (else reads again).
    async fn update<T>(
        &self,
        tenant: &str,
        key_id: &str,
        mut change: impl FnMut(&mut KmsKey, i64) -> KmsResult<T>,
    ) -> KmsResult<(KmsKey, T)> {
        for _ in 0..KMS_UPDATE_ATTEMPTS_MAX {
            let Some((mut key, revision)) = self.load(tenant, key_id).await? else {
                return Err(self.not_found(tenant, key_id));
            };
            let out = change(&mut key, self.now())?;
            if self
                .commit(vec![Self::key_write(&key, Expect::Revision(revision))?])
                .await?
            {
                return Ok((key, out));
            }
        }
        Err(Self::contention("updating a key"))
    }

    /// EnableKey. Refused while the key is pending deletion.
    ///
    /// # Errors
    /// `NotFound`, `InvalidState`.
    pub async fn enable_key(&self, tenant: &str, key_id: &str) -> KmsResult<KmsKey> {
        let (key, ()) = self
            .update(tenant, key_id, |key, _| {
                key.check_not_pending_deletion()?;
                key.state = KeyState::Enabled;
                Ok(())
            })
            .await?;
        Ok(key)
    }

    /// DisableKey: the key refuses cryptographic use until enabled again.
    ///
    /// # Errors
    /// `NotFound`, `InvalidState`.
    pub async fn disable_key(&self, tenant: &str, key_id: &str) -> KmsResult<KmsKey> {
        let (key, ()) = self
            .update(tenant, key_id, |key, _| {
                key.check_not_pending_deletion()?;
                key.state = KeyState::Disabled;
                Ok(())
            })
            .await?;
        Ok(key)
    }

    /// ScheduleKeyDeletion: the key refuses all use and is deleted, material
    /// and aliases included, `window_days` (7 to 30, default 30) from now.
    ///
    /// # Errors
    /// `Validation` for a window outside 7..=30; `NotFound`; `InvalidState`
    /// when already pending deletion.
    pub async fn schedule_deletion(
        &self,
        tenant: &str,
        key_id: &str,
        window_days: Option<u32>,
    ) -> KmsResult<KmsKey> {
        let days = window_days.unwrap_or(KMS_PENDING_WINDOW_DAYS_DEFAULT);
        if !(KMS_PENDING_WINDOW_DAYS_MIN..=KMS_PENDING_WINDOW_DAYS_MAX).contains(&days) {
            return Err(KmsError::Validation(format!(
                "PendingWindowInDays value {days} is invalid: it must be between \
                 {KMS_PENDING_WINDOW_DAYS_MIN} and {KMS_PENDING_WINDOW_DAYS_MAX} days"
            )));
        }
        let (key, ()) = self
            .update(tenant, key_id, |key, now| {
                key.check_not_pending_deletion()?;
                key.state = KeyState::PendingDeletion;
                key.deletion_unix_ns = Some(now.saturating_add(i64::from(days) * NS_PER_DAY));
                key.pending_window_days = Some(days);
                Ok(())
            })
            .await?;
        tracing::info!(key = %key.arn, days, "scheduled a KMS key for deletion");
        Ok(key)
    }

    /// CancelKeyDeletion: the key comes back disabled, as in AWS.
    ///
    /// # Errors
    /// `NotFound`; `InvalidState` unless pending deletion.
    pub async fn cancel_deletion(&self, tenant: &str, key_id: &str) -> KmsResult<KmsKey> {
        let (key, ()) = self
            .update(tenant, key_id, |key, _| {
                if key.state != KeyState::PendingDeletion {
                    return Err(KmsError::InvalidState(format!(
                        "{} is not pending deletion.",
                        key.arn
                    )));
                }
                key.state = KeyState::Disabled;
                key.deletion_unix_ns = None;
                key.pending_window_days = None;
                Ok(())
            })
            .await?;
        Ok(key)
    }

    /// PutKeyPolicy: replaces the key policy (validated by the caller).
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn put_policy(&self, tenant: &str, key_id: &str, policy: &str) -> KmsResult<()> {
        self.update(tenant, key_id, |key, _| {
            policy.clone_into(&mut key.policy);
            Ok(())
        })
        .await?;
        Ok(())
    }

    // ---- rotation ----

    fn check_rotatable(key: &KmsKey) -> KmsResult<()> {
        if key.origin == KeyOrigin::ExternalKeyStore {
            // As AWS: the external key's lifecycle is the tenant's, in its
            // own key manager.
            return Err(KmsError::Unsupported(format!(
                "{} is in a custom key store: its key material cannot be rotated by KMS \
                 (rotate the external key in the external key manager, with a new KMS key)",
                key.arn
            )));
        }
        match key.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::Disabled(format!("{} is disabled.", key.arn))),
            KeyState::PendingDeletion => Err(key.pending_deletion()),
        }
    }

    /// EnableKeyRotation: a new material every `period_days` (90 to 2,560,
    /// default 365), counted from now.
    ///
    /// # Errors
    /// `Validation`, `NotFound`, `Disabled`, `InvalidState`.
    pub async fn enable_rotation(
        &self,
        tenant: &str,
        key_id: &str,
        period_days: Option<u32>,
    ) -> KmsResult<KmsKey> {
        let days = period_days.unwrap_or(KMS_ROTATION_PERIOD_DAYS_DEFAULT);
        if !(KMS_ROTATION_PERIOD_DAYS_MIN..=KMS_ROTATION_PERIOD_DAYS_MAX).contains(&days) {
            return Err(KmsError::Validation(format!(
                "RotationPeriodInDays value {days} is invalid: it must be between \
                 {KMS_ROTATION_PERIOD_DAYS_MIN} and {KMS_ROTATION_PERIOD_DAYS_MAX} days"
            )));
        }
        let (key, ()) = self
            .update(tenant, key_id, |key, now| {
                Self::check_rotatable(key)?;
                if !key.rotation_enabled || key.rotation_period_days != Some(days) {
                    key.next_rotation_unix_ns =
                        Some(now.saturating_add(i64::from(days) * NS_PER_DAY));
                }
                key.rotation_enabled = true;
                key.rotation_period_days = Some(days);
                Ok(())
            })
            .await?;
        Ok(key)
    }

    /// DisableKeyRotation. Materials already made stay.
    ///
    /// # Errors
    /// `NotFound`, `Disabled`, `InvalidState`.
    pub async fn disable_rotation(&self, tenant: &str, key_id: &str) -> KmsResult<KmsKey> {
        let (key, ()) = self
            .update(tenant, key_id, |key, _| {
                Self::check_rotatable(key)?;
                key.rotation_enabled = false;
                key.rotation_period_days = None;
                key.next_rotation_unix_ns = None;
                Ok(())
            })
            .await?;
        Ok(key)
    }

    /// RotateKeyOnDemand: a new material now, at most
    /// [`KMS_ON_DEMAND_ROTATIONS_MAX`] times per key. The automatic schedule
    /// is unchanged, as in AWS.
    ///
    /// # Errors
    /// `NotFound`, `Disabled`, `InvalidState`, `LimitExceeded`.
    pub async fn rotate_on_demand(&self, tenant: &str, key_id: &str) -> KmsResult<KmsKey> {
        for _ in 0..KMS_UPDATE_ATTEMPTS_MAX {
            let Some((mut key, revision)) = self.load(tenant, key_id).await? else {
                return Err(self.not_found(tenant, key_id));
            };
            Self::check_rotatable(&key)?;
            if key.on_demand_rotations() >= KMS_ON_DEMAND_ROTATIONS_MAX {
                return Err(KmsError::LimitExceeded(format!(
                    "{} has had {KMS_ON_DEMAND_ROTATIONS_MAX} on-demand rotations, the most a key may have",
                    key.arn
                )));
            }
            let version = next_version(&key)?;
            let material = self
                .new_material(&key.arn, version, Some(RotationType::OnDemand))
                .await?;
            key.materials.push(material);
            if self
                .commit(vec![Self::key_write(&key, Expect::Revision(revision))?])
                .await?
            {
                tracing::info!(key = %key.arn, version, "rotated a KMS key's material (on demand)");
                return Ok(key);
            }
        }
        Err(Self::contention("rotating a key"))
    }

    // ---- aliases ----

    /// The tenant's alias `name` (`alias/NAME`).
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn alias(&self, tenant: &str, name: &str) -> KmsResult<KmsAlias> {
        self.load_alias(tenant, name)
            .await?
            .map(|(alias, _)| alias)
            .ok_or_else(|| self.alias_not_found(tenant, name))
    }

    async fn load_alias(&self, tenant: &str, name: &str) -> KmsResult<Option<(KmsAlias, u64)>> {
        match self
            .keys
            .docs
            .get_document(ALIASES, &alias_doc(tenant, name))
            .await?
        {
            Some(doc) => Ok(Some((serde_json::from_slice(&doc.value)?, doc.revision))),
            None => Ok(None),
        }
    }

    fn alias_write(alias: &KmsAlias, expect: Expect) -> KmsResult<DocumentWrite> {
        Ok(DocumentWrite {
            namespace: ALIASES.into(),
            key: alias_doc(&alias.tenant, &alias.name),
            expect,
            value: Some(serde_json::to_vec(alias)?),
        })
    }

    fn check_alias_target(key: &KmsKey) -> KmsResult<()> {
        key.check_not_pending_deletion()?;
        if key.aliases.len() >= KMS_ALIASES_PER_KEY_MAX {
            return Err(KmsError::LimitExceeded(format!(
                "{} already has {KMS_ALIASES_PER_KEY_MAX} aliases, the most a key may have",
                key.arn
            )));
        }
        Ok(())
    }

    /// CreateAlias: `name` now names `key_id`.
    ///
    /// # Errors
    /// `Validation`/`InvalidAliasName`, `AlreadyExists`, `NotFound`,
    /// `InvalidState` (key pending deletion), `LimitExceeded`.
    pub async fn create_alias(
        &self,
        tenant: &str,
        name: &str,
        key_id: &str,
    ) -> KmsResult<KmsAlias> {
        check_alias_name(name)?;
        for _ in 0..KMS_UPDATE_ATTEMPTS_MAX {
            let Some((mut key, revision)) = self.load(tenant, key_id).await? else {
                return Err(self.not_found(tenant, key_id));
            };
            if self.load_alias(tenant, name).await?.is_some() {
                return Err(KmsError::AlreadyExists(format!(
                    "An alias with the name {} already exists",
                    self.alias_arn(tenant, name)
                )));
            }
            Self::check_alias_target(&key)?;
            let now = self.now();
            let alias = KmsAlias {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
                target_key_id: key.key_id.clone(),
                created_unix_ns: now,
                updated_unix_ns: now,
            };
            key.aliases.push(name.to_owned());
            let writes = vec![
                Self::alias_write(&alias, Expect::Absent)?,
                Self::key_write(&key, Expect::Revision(revision))?,
            ];
            if self.commit(writes).await? {
                return Ok(alias);
            }
        }
        Err(Self::contention("creating an alias"))
    }

    /// UpdateAlias: `name` now names `key_id` instead.
    ///
    /// # Errors
    /// `NotFound` (alias or key), `InvalidState`, `LimitExceeded`.
    pub async fn update_alias(
        &self,
        tenant: &str,
        name: &str,
        key_id: &str,
    ) -> KmsResult<KmsAlias> {
        check_alias_name(name)?;
        for _ in 0..KMS_UPDATE_ATTEMPTS_MAX {
            let Some((mut alias, alias_revision)) = self.load_alias(tenant, name).await? else {
                return Err(self.alias_not_found(tenant, name));
            };
            let Some((mut target, target_revision)) = self.load(tenant, key_id).await? else {
                return Err(self.not_found(tenant, key_id));
            };
            let now = self.now();
            alias.updated_unix_ns = now;
            let mut writes = Vec::with_capacity(3);
            if alias.target_key_id == target.key_id {
                target.check_not_pending_deletion()?;
            } else {
                Self::check_alias_target(&target)?;
                if let Some((mut old, old_revision)) =
                    self.load(tenant, &alias.target_key_id).await?
                {
                    old.aliases.retain(|n| n != name);
                    writes.push(Self::key_write(&old, Expect::Revision(old_revision))?);
                }
                target.aliases.push(name.to_owned());
                writes.push(Self::key_write(&target, Expect::Revision(target_revision))?);
                alias.target_key_id.clone_from(&target.key_id);
            }
            writes.push(Self::alias_write(&alias, Expect::Revision(alias_revision))?);
            if self.commit(writes).await? {
                return Ok(alias);
            }
        }
        Err(Self::contention("updating an alias"))
    }

    /// DeleteAlias. The key is untouched.
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn delete_alias(&self, tenant: &str, name: &str) -> KmsResult<()> {
        for _ in 0..KMS_UPDATE_ATTEMPTS_MAX {
            let Some((alias, alias_revision)) = self.load_alias(tenant, name).await? else {
                return Err(self.alias_not_found(tenant, name));
            };
            let mut writes = vec![DocumentWrite {
                namespace: ALIASES.into(),
                key: alias_doc(tenant, name),
                expect: Expect::Revision(alias_revision),
                value: None,
            }];
            if let Some((mut key, revision)) = self.load(tenant, &alias.target_key_id).await? {
                key.aliases.retain(|n| n != name);
                writes.push(Self::key_write(&key, Expect::Revision(revision))?);
            }
            if self.commit(writes).await? {
                return Ok(());
            }
        }
        Err(Self::contention("deleting an alias"))
    }

    /// The tenant's aliases in name order, after `marker` (an alias name), at
    /// most `limit`.
    ///
    /// # Errors
    /// `InvalidMarker`; storage failure.
    pub async fn list_aliases(
        &self,
        tenant: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> KmsResult<Page<KmsAlias>> {
        if marker.is_some_and(|m| !m.starts_with("alias/")) {
            return Err(KmsError::InvalidMarker(
                "Invalid marker: it must come from a previous ListAliases response".into(),
            ));
        }
        let after = marker.map(|m| alias_doc(tenant, m));
        let docs = self
            .keys
            .docs
            .scan_documents(
                ALIASES,
                &format!("{tenant}/alias/"),
                after.as_deref(),
                limit + 1,
            )
            .await?;
        let truncated = docs.len() > limit;
        let items = docs
            .into_iter()
            .take(limit)
            .map(|doc| serde_json::from_slice::<KmsAlias>(&doc.value))
            .collect::<Result<Vec<_>, _>>()?;
        let next_marker = if truncated {
            items.last().map(|a| a.name.clone())
        } else {
            None
        };
        Ok(Page { items, next_marker })
    }

    /// The aliases naming `key`, in name order.
    ///
    /// # Errors
    /// Storage failure.
    pub async fn aliases_of(&self, key: &KmsKey) -> KmsResult<Vec<KmsAlias>> {
        let mut names = key.aliases.clone();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some((alias, _)) = self.load_alias(&key.tenant, &name).await? {
                out.push(alias);
            }
        }
        Ok(out)
    }

    // ---- cryptography ----

    /// Encrypt: seals `plaintext` (at most 4 KiB) under the key's current
    /// material, bound to `context`; returns the ciphertext blob. A key in an
    /// external key store then has the proxy encrypt the result (format
    /// version 2), with `caller` and `operation` in the request metadata.
    ///
    /// # Errors
    /// `Disabled`, `InvalidState`, `Validation`; for a key in an external key
    /// store, `CustomKeyStoreInvalidState` and the proxy's refusals.
    pub async fn encrypt(
        &self,
        key: &KmsKey,
        plaintext: &[u8],
        context: &EncryptionContext,
        caller: &KeyCaller,
        operation: &str,
    ) -> KmsResult<Vec<u8>> {
        if plaintext.is_empty() || plaintext.len() > KMS_PLAINTEXT_BYTES_MAX {
            return Err(KmsError::Validation(format!(
                "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: \
                 Member must have length between 1 and {KMS_PLAINTEXT_BYTES_MAX}"
            )));
        }
        self.seal(key, plaintext, context, caller, operation).await
    }

    /// Encrypt without the plaintext size rule (GenerateDataKey's data keys
    /// are sized by their own rule).
    async fn seal(
        &self,
        key: &KmsKey,
        plaintext: &[u8],
        context: &EncryptionContext,
        caller: &KeyCaller,
        operation: &str,
    ) -> KmsResult<Vec<u8>> {
        key.check_usable()?;
        check_encryption_context(context)?;
        let material = key.current_material()?;
        let secret = self.material_secret(key, material).await?;
        let version = match key.origin {
            KeyOrigin::AwsKms => CIPHERTEXT_FORMAT_V1,
            KeyOrigin::ExternalKeyStore => CIPHERTEXT_FORMAT_V2,
        };
        let header = CiphertextBlob::header_of(version, &key.key_id, material.version)?;
        let aad = associated_data(&header, &key.arn, context)?;
        let sealed = nuage_crypto::seal_message(&secret, &aad, plaintext)?;
        let body = match key.origin {
            KeyOrigin::AwsKms => CiphertextBody::Sealed(sealed),
            KeyOrigin::ExternalKeyStore => CiphertextBody::External(
                self.seal_external_message(key, &sealed, &aad, caller, operation)
                    .await?,
            ),
        };
        CiphertextBlob {
            key_id: key.key_id.clone(),
            material_version: material.version,
            body,
        }
        .encode()
    }

    /// The key a ciphertext blob names, in the caller's tenant, and the
    /// parsed blob (the caller authorizes, then calls [`Self::decrypt`]).
    ///
    /// # Errors
    /// `InvalidCiphertext` for a malformed blob; `NotFound` when its key is
    /// not one of the tenant's (deleted, or another tenant's).
    pub async fn key_of_ciphertext(
        &self,
        tenant: &str,
        blob: &[u8],
    ) -> KmsResult<(KmsKey, CiphertextBlob)> {
        let parsed = CiphertextBlob::parse(blob)?;
        let key = self.key(tenant, &parsed.key_id).await?;
        Ok((key, parsed))
    }

    /// Decrypt: opens a blob sealed under `key` with the same `context`
    /// (for a key in an external key store, the proxy first removes the
    /// outer layer).
    ///
    /// # Errors
    /// `IncorrectKey` when the blob names another key; `Disabled`,
    /// `InvalidState`; `InvalidCiphertext` when it does not authenticate
    /// (another context, an altered byte, an unknown material version, a
    /// blob of the other format than the key's origin); for a key in an
    /// external key store, `CustomKeyStoreInvalidState` and the proxy's
    /// refusals.
    pub async fn decrypt(
        &self,
        key: &KmsKey,
        blob: &CiphertextBlob,
        context: &EncryptionContext,
        caller: &KeyCaller,
        operation: &str,
    ) -> KmsResult<Zeroizing<Vec<u8>>> {
        if blob.key_id != key.key_id {
            return Err(KmsError::IncorrectKey(
                "The key ID in the request does not identify a KMS key that can perform this operation."
                    .into(),
            ));
        }
        key.check_usable()?;
        let invalid = || {
            KmsError::InvalidCiphertext(
                "the ciphertext does not decrypt under its key with this encryption context".into(),
            )
        };
        let material = key
            .materials
            .iter()
            .find(|m| m.version == blob.material_version)
            .ok_or_else(invalid)?;
        let header = blob.own_header()?;
        let aad = associated_data(&header, &key.arn, context)?;
        // A blob must be of its key's format: a version 1 blob naming a key
        // in an external key store would skip the external key.
        let sealed = match (&blob.body, key.origin) {
            (CiphertextBody::Sealed(sealed), KeyOrigin::AwsKms) => sealed.clone(),
            (CiphertextBody::External(outer), KeyOrigin::ExternalKeyStore) => {
                self.open_external_message(key, outer, &aad, caller, operation)
                    .await?
            }
            _ => return Err(invalid()),
        };
        let secret = self.material_secret(key, material).await?;
        nuage_crypto::open_message(&secret, &sealed, &aad).map_err(|e| match e {
            nuage_crypto::CryptoError::MessageAuthentication => invalid(),
            other => other.into(),
        })
    }

    /// GenerateDataKey: `bytes` fresh random bytes, and them encrypted under
    /// `key` bound to `context`.
    ///
    /// # Errors
    /// As [`Self::encrypt`]; `Validation` for a size outside 1..=1024.
    pub async fn generate_data_key(
        &self,
        key: &KmsKey,
        bytes: usize,
        context: &EncryptionContext,
        caller: &KeyCaller,
        operation: &str,
    ) -> KmsResult<(Zeroizing<Vec<u8>>, Vec<u8>)> {
        let plaintext = random(bytes)?;
        let blob = self
            .seal(key, &plaintext, context, caller, operation)
            .await?;
        Ok((plaintext, blob))
    }

    // ---- S3 object data keys (SSE-KMS) ----

    /// The tenant's key that `key_arn` names (a key ARN recorded on an
    /// object segment).
    async fn key_of_arn(&self, tenant: &str, key_arn: &str) -> KmsResult<KmsKey> {
        match self.parse_reference(tenant, key_arn)? {
            KeyReference::Id(id) => self.key(tenant, &id).await,
            KeyReference::Alias(_) => Err(KmsError::NotFound(format!(
                "Key '{key_arn}' does not exist"
            ))),
        }
    }

    /// A fresh data key for an object blob of `tenant`, wrapped under the
    /// current material of the customer key `key_arn` (which must be
    /// enabled) and bound to `binding`. The wrapped form starts with the
    /// material version (4 bytes, big-endian), so rotation keeps old blobs
    /// readable. For a key in an external key store, the proxy then wraps
    /// that again (`caller` goes into its request metadata): the form starts
    /// with `0x02` instead (see `docs/kms.md`).
    ///
    /// # Errors
    /// `NotFound`, `Disabled`, `InvalidState`; key storage or randomness
    /// failure; for a key in an external key store,
    /// `CustomKeyStoreInvalidState` and the proxy's refusals.
    pub async fn new_data_key_under(
        &self,
        tenant: &str,
        key_arn: &str,
        binding: &[u8],
        caller: &KeyCaller,
    ) -> KmsResult<(DataKey, Vec<u8>)> {
        let key = self.key_of_arn(tenant, key_arn).await?;
        key.check_usable()?;
        if key.origin == KeyOrigin::ExternalKeyStore {
            return self.new_data_key_external(&key, binding, caller).await;
        }
        let material = key.current_material()?;
        let secret = self.material_secret(&key, material).await?;
        let data_key = DataKey::generate()?;
        let mut wrapped = material.version.to_be_bytes().to_vec();
        wrapped.extend(nuage_crypto::wrap_data_key(&secret, &data_key, binding)?);
        Ok((data_key, wrapped))
    }

    /// Unwraps a data key [`Self::new_data_key_under`] wrapped, for
    /// `reason`: refused unless the tenant's key access justifications allow
    /// `reason` (checked first) and the key is enabled *now* (a disabled key
    /// or one pending deletion makes its data unreadable). For a key in an
    /// external key store, the proxy unwraps the outer layer first, told the
    /// `reason` and `caller`, and may refuse.
    ///
    /// # Errors
    /// [`crate::KeyError::ReasonNotAllowed`]; [`crate::KeyError::CustomerKey`]
    /// with `NotFound`, `Disabled`, `InvalidState`, or `InvalidCiphertext`
    /// for a wrapped key that does not open with this binding (or is not of
    /// its key's form); for a key in an external key store,
    /// `CustomKeyStoreInvalidState` and the proxy's refusals.
    pub async fn open_data_key_under(
        &self,
        tenant: &str,
        key_arn: &str,
        wrapped: &[u8],
        binding: &[u8],
        reason: AccessReason,
        caller: &KeyCaller,
    ) -> Result<DataKey, crate::KeyError> {
        let allowed = self.keys.allowed_reasons(tenant).await?;
        if !allowed.contains(&reason) {
            tracing::info!(
                tenant,
                reason = reason.as_str(),
                "data key unwrap refused by the tenant's key access justifications"
            );
            return Err(crate::KeyError::ReasonNotAllowed { reason });
        }
        let key = match self.key_of_arn(tenant, key_arn).await {
            Ok(key) => key,
            // Say that the object is gone for good, and since when.
            Err(KmsError::NotFound(message)) => {
                return Err(match self.parse_reference(tenant, key_arn) {
                    Ok(KeyReference::Id(id)) => self
                        .missing(tenant, &id)
                        .await?
                        .map_or(KmsError::NotFound(message), |s| s.object_shredded()),
                    _ => KmsError::NotFound(message),
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        key.check_usable()?;
        let external = wrapped.first() == Some(&xks::EXTERNAL_WRAPPED_KEY_MARKER);
        if external != (key.origin == KeyOrigin::ExternalKeyStore) {
            return Err(KmsError::InvalidCiphertext(format!(
                "the wrapped data key is not of the form {} wraps data keys in",
                key.arn
            ))
            .into());
        }
        let (version, inner) = if external {
            self.unwrap_data_key_external(&key, wrapped, binding, caller, reason)
                .await?
        } else {
            let (version, sealed) = wrapped
                .split_first_chunk::<4>()
                .ok_or_else(|| KmsError::InvalidCiphertext("wrapped data key too short".into()))?;
            (
                u32::from_be_bytes(*version),
                Zeroizing::new(sealed.to_vec()),
            )
        };
        let material = key
            .materials
            .iter()
            .find(|m| m.version == version)
            .ok_or_else(|| {
                KmsError::InvalidCiphertext(format!("no material version {version} in {}", key.arn))
            })?;
        let secret = self.material_secret(&key, material).await?;
        Ok(nuage_crypto::unwrap_data_key(&secret, &inner, binding)
            .map_err(|e| KmsError::InvalidCiphertext(e.to_string()))?)
    }
}

/// GenerateRandom: `bytes` (1 to 1,024) bytes from the system generator.
///
/// # Errors
/// `Validation` for a size outside 1..=1024.
pub fn random(bytes: usize) -> KmsResult<Zeroizing<Vec<u8>>> {
    if !(1..=KMS_RANDOM_BYTES_MAX).contains(&bytes) {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value '{bytes}' at 'numberOfBytes' failed to satisfy \
             constraint: Member must have value between 1 and {KMS_RANDOM_BYTES_MAX}"
        )));
    }
    Ok(nuage_crypto::random_bytes(bytes)?)
}

fn next_version(key: &KmsKey) -> KmsResult<u32> {
    key.current_material()?
        .version
        .checked_add(1)
        .ok_or_else(|| KmsError::Internal(format!("{} has run out of material versions", key.arn)))
}

fn check_tags(tags: &[(String, String)]) -> KmsResult<()> {
    use nuage_base::limits::{TAG_KEY_CHARS_MAX, TAG_VALUE_CHARS_MAX};
    if tags.len() > KMS_TAGS_MAX {
        return Err(KmsError::Validation(format!(
            "a key may have at most {KMS_TAGS_MAX} tags"
        )));
    }
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > TAG_KEY_CHARS_MAX {
            return Err(KmsError::Validation(format!(
                "tag key `{key}` must have 1 to {TAG_KEY_CHARS_MAX} characters"
            )));
        }
        if value.chars().count() > TAG_VALUE_CHARS_MAX {
            return Err(KmsError::Validation(format!(
                "the value of tag `{key}` may have at most {TAG_VALUE_CHARS_MAX} characters"
            )));
        }
    }
    Ok(())
}

/// Wrapped materials as base64 strings in the JSON documents.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod shredding_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod xks_tests;
