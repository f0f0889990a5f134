//! Custom key stores of type `EXTERNAL_KEY_STORE`: where a tenant's external
//! key store proxy is, how to authenticate to it, and whether it is connected
//! (AWS KMS's CreateCustomKeyStore, DescribeCustomKeyStores,
//! UpdateCustomKeyStore, ConnectCustomKeyStore, DisconnectCustomKeyStore,
//! DeleteCustomKeyStore).
//!
//! A tenant's stores (at most [`KMS_CUSTOM_KEY_STORES_PER_TENANT_MAX`]) are
//! one document (namespace `kms.custom-key-store`, key = tenant id), so name
//! and proxy-URI uniqueness, the per-tenant limit and the "no keys, not
//! connected" checks of a deletion are decided in one revision-checked write.
//! Each external key in use is one document (`kms.xks-key`,
//! `TENANT/STORE_ID/XKS_KEY_ID` -> the KMS key id), written in the same batch
//! as its KMS key and deleted with it, so an external key backs at most one
//! KMS key per store and a store with keys cannot be deleted.
//!
//! *Invariant:* the proxy credential's secret is never stored in the clear
//! and never returned. Each store has its own key-encryption key, wrapped by
//! the root of trust with the store's ARN-shaped binding
//! (`arn:aws:kms:REGION:TENANT:custom-key-store/ID`) as associated data; the
//! secret is sealed under it, bound to that name and the access key id.
//! Nothing the proxy answers is cached (see `crate::external`).

use super::{CustomerKeys, KmsError, KmsResult, Page, base64_bytes};
use crate::access::AccessReason;
use crate::external::{XksError, XksHealth, XksProxyEndpoint, XksRequestMetadata};
use nuage_base::limits::{
    KMS_CUSTOM_KEY_STORE_NAME_CHARS_MAX, KMS_CUSTOM_KEY_STORES_PER_TENANT_MAX,
    KMS_UPDATE_ATTEMPTS_MAX, XKS_ACCESS_KEY_ID_CHARS_MAX, XKS_ACCESS_KEY_ID_CHARS_MIN,
    XKS_SECRET_ACCESS_KEY_CHARS_MAX, XKS_SECRET_ACCESS_KEY_CHARS_MIN, XKS_URI_ENDPOINT_CHARS_MAX,
    XKS_URI_PATH_CHARS_MAX,
};
use nuage_crypto::{KeyEncryptionKey, MESSAGE_NONCE_BYTES, SealedMessage};
use nuage_meta::{DocumentWrite, Expect};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use zeroize::Zeroizing;

/// The document holding a tenant's custom key stores.
pub(crate) const STORES: &str = "kms.custom-key-store";
/// One document per external key in use: `TENANT/STORE_ID/XKS_KEY_ID`.
pub(super) const XKS_KEYS: &str = "kms.xks-key";
/// The only custom key store type Nuage has.
pub const EXTERNAL_KEY_STORE: &str = "EXTERNAL_KEY_STORE";
/// The only proxy connectivity Nuage has.
pub const PUBLIC_ENDPOINT: &str = "PUBLIC_ENDPOINT";
/// Every `XksProxyUriPath` ends so: the proxy API version Nuage speaks.
const URI_PATH_SUFFIX: &str = "/kms/xks/v1";
/// Hex digits after `cks-` in a store id (AWS: 17).
const STORE_ID_HEX_DIGITS: usize = 17;

/// A custom key store's `ConnectionState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectionState {
    Connected,
    Disconnected,
    /// The last ConnectCustomKeyStore failed; see the error code.
    Failed,
}

impl ConnectionState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "CONNECTED",
            Self::Disconnected => "DISCONNECTED",
            Self::Failed => "FAILED",
        }
    }
}

/// Why a connection failed (AWS's `ConnectionErrorCode`, the values an
/// external key store with a public endpoint can have).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectionErrorCode {
    InternalError,
    /// The proxy refused the credential (`AuthenticationFailedException`).
    InvalidCredentials,
    /// The proxy refused the request (`AccessDeniedException`).
    XksProxyAccessDenied,
    /// The proxy answered something that is not the XKS protocol, or an
    /// error Nuage cannot act on.
    XksProxyInvalidResponse,
    /// The proxy could not be reached, timed out, or reported every external
    /// key manager instance unavailable.
    XksProxyNotReachable,
}

impl ConnectionErrorCode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InternalError => "INTERNAL_ERROR",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::XksProxyAccessDenied => "XKS_PROXY_ACCESS_DENIED",
            Self::XksProxyInvalidResponse => "XKS_PROXY_INVALID_RESPONSE",
            Self::XksProxyNotReachable => "XKS_PROXY_NOT_REACHABLE",
        }
    }
}

/// The proxy credential's secret, sealed: a key-encryption key wrapped by
/// the root of trust, and the secret sealed under it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SealedSecret {
    #[serde(with = "base64_bytes")]
    wrapped_key: Vec<u8>,
    #[serde(with = "base64_bytes")]
    nonce: Vec<u8>,
    #[serde(with = "base64_bytes")]
    ciphertext: Vec<u8>,
}

/// One external key store. Its secret is sealed and has no accessor: only
/// this crate unseals it, to call the proxy.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomKeyStore {
    /// `cks-` and 17 hex digits.
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// `https://host[:port]`.
    pub uri_endpoint: String,
    /// Ends in `/kms/xks/v1`.
    pub uri_path: String,
    /// The credential's access key id (not secret; AWS returns it).
    pub access_key_id: String,
    pub(super) secret: SealedSecret,
    pub connection_state: ConnectionState,
    /// Set while `Failed`.
    #[serde(default)]
    pub connection_error_code: Option<ConnectionErrorCode>,
    pub created_unix_ns: i64,
}

impl std::fmt::Debug for CustomKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomKeyStore")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .field("uri_endpoint", &self.uri_endpoint)
            .field("uri_path", &self.uri_path)
            .field("access_key_id", &self.access_key_id)
            .field("connection_state", &self.connection_state)
            .field("connection_error_code", &self.connection_error_code)
            .finish_non_exhaustive()
    }
}

impl CustomKeyStore {
    /// `CustomKeyStoreType`: always `EXTERNAL_KEY_STORE`.
    #[must_use]
    pub fn store_type(&self) -> &'static str {
        EXTERNAL_KEY_STORE
    }

    /// `XksProxyConfiguration.Connectivity`: always `PUBLIC_ENDPOINT`.
    #[must_use]
    pub fn connectivity(&self) -> &'static str {
        PUBLIC_ENDPOINT
    }
}

/// An `XksProxyAuthenticationCredential`.
#[derive(Clone)]
pub struct XksCredential {
    pub access_key_id: String,
    pub raw_secret_access_key: Zeroizing<String>,
}

impl std::fmt::Debug for XksCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XksCredential")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What CreateCustomKeyStore asks for (members as the client sent them;
/// [`CustomerKeys::create_custom_key_store`] checks them).
#[derive(Debug, Clone, Default)]
pub struct NewCustomKeyStore {
    pub name: String,
    /// `CustomKeyStoreType`; AWS's default is `AWS_CLOUDHSM`.
    pub store_type: Option<String>,
    pub uri_endpoint: Option<String>,
    pub uri_path: Option<String>,
    pub connectivity: Option<String>,
    pub credential: Option<XksCredential>,
}

/// What UpdateCustomKeyStore asks to change.
#[derive(Debug, Clone, Default)]
pub struct CustomKeyStoreUpdate {
    pub new_name: Option<String>,
    pub uri_endpoint: Option<String>,
    pub uri_path: Option<String>,
    pub connectivity: Option<String>,
    pub credential: Option<XksCredential>,
}

/// Who is using a key or a key store: what an external key store proxy
/// receives as `requestMetadata` besides the key and operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCaller {
    /// `awsPrincipalArn`: the user, role session or tenant root that asked.
    pub principal_arn: String,
    /// `kmsRequestId`: the request id of the call that caused this use.
    pub request_id: String,
    /// `kmsViaService`: `s3` when the storage service uses the key on the
    /// principal's behalf; `None` for direct KMS API calls.
    pub via_service: Option<String>,
}

impl KeyCaller {
    /// A direct KMS API call by `principal_arn`.
    #[must_use]
    pub fn direct(principal_arn: impl Into<String>, request_id: impl Into<String>) -> Self {
        Self {
            principal_arn: principal_arn.into(),
            request_id: request_id.into(),
            via_service: None,
        }
    }

    /// A use by `service` (`s3`) on `principal_arn`'s behalf.
    #[must_use]
    pub fn via(
        service: impl Into<String>,
        principal_arn: impl Into<String>,
        request_id: impl Into<String>,
    ) -> Self {
        Self {
            principal_arn: principal_arn.into(),
            request_id: request_id.into(),
            via_service: Some(service.into()),
        }
    }

    /// The request metadata of one proxy call. A caller without a request
    /// id (the storage service, today) gets a fresh UUID for the call: the
    /// XKS spec requires a `kmsRequestId`, and proxies refuse an empty one.
    pub(super) fn metadata(
        &self,
        key_arn: Option<&str>,
        operation: &str,
        reason: AccessReason,
    ) -> XksRequestMetadata {
        let request_id = if self.request_id.is_empty() {
            uuid::Uuid::new_v4().hyphenated().to_string()
        } else {
            self.request_id.clone()
        };
        XksRequestMetadata {
            aws_principal_arn: self.principal_arn.clone(),
            kms_key_arn: key_arn.map(str::to_owned),
            kms_operation: operation.to_owned(),
            kms_request_id: request_id,
            kms_via_service: self.via_service.clone(),
            access_reason: reason.as_str().to_owned(),
        }
    }
}

/// A tenant's stores, as stored.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TenantStores {
    stores: Vec<CustomKeyStore>,
}

fn validation(member: &str, constraint: &str) -> KmsError {
    KmsError::Validation(format!(
        "1 validation error detected: Value at '{member}' failed to satisfy constraint: {constraint}"
    ))
}

fn check_name(name: &str, member: &str) -> KmsResult<()> {
    let chars = name.chars().count();
    if chars == 0 || chars > KMS_CUSTOM_KEY_STORE_NAME_CHARS_MAX {
        return Err(validation(
            member,
            &format!("Member must have length between 1 and {KMS_CUSTOM_KEY_STORE_NAME_CHARS_MAX}"),
        ));
    }
    Ok(())
}

/// Hosts for which plain HTTP is allowed (a proxy on the same machine, as
/// for tests); everything else must be HTTPS.
fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `XksProxyUriEndpoint`: `https://host[:port]` (AWS allows no port; Nuage
/// allows one so a proxy need not own port 443), `http://` only for a
/// loopback host, no path.
///
/// # Errors
/// `Validation`.
pub fn check_uri_endpoint(endpoint: &str) -> KmsResult<()> {
    const MEMBER: &str = "xksProxyUriEndpoint";
    if endpoint.len() < 10 || endpoint.len() > XKS_URI_ENDPOINT_CHARS_MAX {
        return Err(validation(
            MEMBER,
            &format!("Member must have length between 10 and {XKS_URI_ENDPOINT_CHARS_MAX}"),
        ));
    }
    let (https, rest) = if let Some(rest) = endpoint.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(validation(
            MEMBER,
            "Member must satisfy regular expression pattern: ^https://[a-zA-Z0-9.-]+(:[0-9]+)?$",
        ));
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.contains(']') => (host, Some(port)),
        _ => (rest, None),
    };
    let host_ok = host == "[::1]"
        || (!host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if !host_ok || !port_ok {
        return Err(validation(
            MEMBER,
            "Member must satisfy regular expression pattern: ^https://[a-zA-Z0-9.-]+(:[0-9]+)?$ \
             (a scheme, a host and an optional port, no path)",
        ));
    }
    if !https && !is_loopback_host(host) {
        return Err(KmsError::XksProxyInvalidConfiguration(format!(
            "XksProxyUriEndpoint {endpoint} must use HTTPS: plain HTTP is allowed only for a \
             proxy on a loopback address"
        )));
    }
    Ok(())
}

/// `XksProxyUriPath`: `/kms/xks/v1`, optionally after a prefix of
/// `[a-zA-Z0-9/_-]` starting with `/` (AWS's rule, for the proxy API
/// version Nuage speaks).
///
/// # Errors
/// `Validation`.
pub fn check_uri_path(path: &str) -> KmsResult<()> {
    const MEMBER: &str = "xksProxyUriPath";
    if path.len() < 10 || path.len() > XKS_URI_PATH_CHARS_MAX {
        return Err(validation(
            MEMBER,
            &format!("Member must have length between 10 and {XKS_URI_PATH_CHARS_MAX}"),
        ));
    }
    let prefix_ok = path.strip_suffix(URI_PATH_SUFFIX).is_some_and(|prefix| {
        prefix.is_empty()
            || (prefix.starts_with('/')
                && prefix.len() > 1
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-')))
    });
    if !prefix_ok {
        return Err(validation(
            MEMBER,
            "Member must start with / and end with /kms/xks/v1, with an optional prefix of \
             [a-zA-Z0-9/_-] between them",
        ));
    }
    Ok(())
}

/// `XksProxyAuthenticationCredential`, with AWS's lengths and alphabets.
/// The messages never quote the secret.
///
/// # Errors
/// `Validation`.
pub fn check_credential(credential: &XksCredential) -> KmsResult<()> {
    let id = &credential.access_key_id;
    if !(XKS_ACCESS_KEY_ID_CHARS_MIN..=XKS_ACCESS_KEY_ID_CHARS_MAX).contains(&id.len())
        || !id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    {
        return Err(validation(
            "xksProxyAuthenticationCredential.accessKeyId",
            &format!(
                "Member must have length between {XKS_ACCESS_KEY_ID_CHARS_MIN} and \
                 {XKS_ACCESS_KEY_ID_CHARS_MAX} and satisfy regular expression pattern: ^[A-Z2-7]+$"
            ),
        ));
    }
    let secret = &credential.raw_secret_access_key;
    if !(XKS_SECRET_ACCESS_KEY_CHARS_MIN..=XKS_SECRET_ACCESS_KEY_CHARS_MAX).contains(&secret.len())
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'+' | b'='))
    {
        return Err(validation(
            "xksProxyAuthenticationCredential.rawSecretAccessKey",
            &format!(
                "Member must have length between {XKS_SECRET_ACCESS_KEY_CHARS_MIN} and \
                 {XKS_SECRET_ACCESS_KEY_CHARS_MAX} and satisfy regular expression pattern: \
                 ^[a-zA-Z0-9/+=]+$"
            ),
        ));
    }
    Ok(())
}

/// `XksProxyConnectivity`: only `PUBLIC_ENDPOINT`.
fn check_connectivity(connectivity: &str) -> KmsResult<()> {
    match connectivity {
        PUBLIC_ENDPOINT => Ok(()),
        "VPC_ENDPOINT_SERVICE" => Err(KmsError::Unsupported(
            "XksProxyConnectivity VPC_ENDPOINT_SERVICE is not supported: Nuage reaches external \
             key store proxies over their public endpoint (XksProxyConnectivity PUBLIC_ENDPOINT)"
                .into(),
        )),
        other => Err(KmsError::Validation(format!(
            "1 validation error detected: Value '{other}' at 'xksProxyConnectivity' failed to \
             satisfy constraint: Member must satisfy enum value set: [PUBLIC_ENDPOINT, \
             VPC_ENDPOINT_SERVICE]"
        ))),
    }
}

fn required<T>(value: Option<T>, member: &str) -> KmsResult<T> {
    value.ok_or_else(|| {
        KmsError::Validation(format!(
            "{member} is required for a custom key store of type {EXTERNAL_KEY_STORE}"
        ))
    })
}

/// A new store id: `cks-` and 17 random hex digits, as AWS's.
fn new_store_id() -> KmsResult<String> {
    let bytes = nuage_crypto::random_bytes(STORE_ID_HEX_DIGITS.div_ceil(2))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("cks-{}", &hex[..STORE_ID_HEX_DIGITS]))
}

/// Whether a string looks like a store id (anything else is not found).
fn is_store_id(id: &str) -> bool {
    id.strip_prefix("cks-").is_some_and(|hex| {
        hex.len() == STORE_ID_HEX_DIGITS && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// The AAD of the secret under the store's key: the binding, then the
/// access key id it belongs to (NUL cannot occur in either).
fn secret_aad(binding: &str, access_key_id: &str) -> Vec<u8> {
    let mut aad = b"xks-credential|".to_vec();
    aad.extend_from_slice(binding.as_bytes());
    aad.push(0);
    aad.extend_from_slice(access_key_id.as_bytes());
    aad
}

/// Classifies a failed proxy call made by a management operation (create,
/// update, connect, CreateKey), with AWS's XKS exceptions.
pub(super) fn management_error(error: XksError, what: &str) -> KmsError {
    match error {
        XksError::Unreachable(detail) => KmsError::XksProxyUriUnreachable(format!(
            "{what}: the external key store proxy could not be reached: {detail}"
        )),
        XksError::Refused {
            error_name,
            status,
            message,
        } => match error_name.as_str() {
            "AuthenticationFailedException" => {
                KmsError::XksProxyIncorrectAuthenticationCredential(format!(
                    "{what}: the external key store proxy rejected the authentication \
                     credential (HTTP {status}): {message}"
                ))
            }
            "AccessDeniedException" => KmsError::AccessDenied(format!(
                "{what}: the external key store proxy denied the request (HTTP {status}): {message}"
            )),
            "KeyNotFoundException" => KmsError::XksKeyNotFound(format!(
                "{what}: the external key store proxy does not know the external key (HTTP \
                 {status}): {message}"
            )),
            other => KmsError::XksProxyInvalidResponse(format!(
                "{what}: the external key store proxy answered {other} (HTTP {status}): {message}"
            )),
        },
    }
}

fn connection_error_code(error: &KmsError) -> ConnectionErrorCode {
    match error {
        KmsError::XksProxyUriUnreachable(_) => ConnectionErrorCode::XksProxyNotReachable,
        KmsError::XksProxyIncorrectAuthenticationCredential(_) => {
            ConnectionErrorCode::InvalidCredentials
        }
        KmsError::AccessDenied(_) => ConnectionErrorCode::XksProxyAccessDenied,
        KmsError::XksProxyInvalidResponse(_) => ConnectionErrorCode::XksProxyInvalidResponse,
        _ => ConnectionErrorCode::InternalError,
    }
}

/// The associated data of store `id`'s wrapped key (and of its sealed
/// secret): also what the root-of-trust migration rewraps it with.
pub(crate) fn custom_key_store_binding(region: &str, tenant: &str, id: &str) -> String {
    format!("arn:aws:kms:{region}:{tenant}:custom-key-store/{id}")
}

/// A health answer in which every external key manager instance is
/// unavailable counts as unreachable (as AWS treats it).
fn check_health(health: &XksHealth, what: &str) -> KmsResult<()> {
    if !health.ekm_health.is_empty() && health.ekm_health.iter().all(|h| h == "UNAVAILABLE") {
        return Err(KmsError::XksProxyUriUnreachable(format!(
            "{what}: the external key store proxy reports every external key manager instance \
             UNAVAILABLE"
        )));
    }
    Ok(())
}

impl CustomerKeys {
    /// `arn:aws:kms:REGION:TENANT:custom-key-store/ID`: the binding of a
    /// store's sealed secret (AWS gives stores no ARN; this is not one on the
    /// wire).
    fn store_binding(&self, tenant: &str, id: &str) -> String {
        custom_key_store_binding(&self.region, tenant, id)
    }

    fn store_not_found(id: &str) -> KmsError {
        KmsError::CustomKeyStoreNotFound(format!("Custom key store {id} does not exist."))
    }

    fn no_external_client() -> KmsError {
        KmsError::Unsupported(
            "this Nuage server has no external key store (XKS) client configured, so it cannot \
             reach external key store proxies; ask the operator to enable it"
                .into(),
        )
    }

    /// The external key store client, or the error saying there is none.
    pub(super) fn external_client(&self) -> KmsResult<Arc<dyn crate::external::ExternalKeyStore>> {
        self.external.clone().ok_or_else(Self::no_external_client)
    }

    async fn load_stores(&self, tenant: &str) -> KmsResult<(TenantStores, Expect)> {
        match self.keys.docs.get_document(STORES, tenant).await? {
            Some(doc) => Ok((
                serde_json::from_slice(&doc.value)?,
                Expect::Revision(doc.revision),
            )),
            None => Ok((TenantStores::default(), Expect::Absent)),
        }
    }

    fn stores_write(
        tenant: &str,
        stores: &TenantStores,
        expect: Expect,
    ) -> KmsResult<DocumentWrite> {
        Ok(DocumentWrite {
            namespace: STORES.into(),
            key: tenant.into(),
            expect,
            value: if stores.stores.is_empty() {
                None
            } else {
                Some(serde_json::to_vec(stores)?)
            },
        })
    }

    /// The tenant's store `id`, with the write that asserts it is unchanged
    /// when committed beside other writes (a key created in it).
    pub(super) async fn store_for_key_creation(
        &self,
        tenant: &str,
        id: &str,
    ) -> KmsResult<(CustomKeyStore, DocumentWrite)> {
        let (stores, expect) = self.load_stores(tenant).await?;
        let store = stores
            .stores
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or_else(|| Self::store_not_found(id))?;
        // Rewriting the same value under a revision check makes a concurrent
        // disconnection or deletion of the store fail one of the two writes.
        let write = Self::stores_write(tenant, &stores, expect)?;
        Ok((store, write))
    }

    /// The tenant's custom key store `id`.
    ///
    /// # Errors
    /// `CustomKeyStoreNotFound`.
    pub async fn custom_key_store(&self, tenant: &str, id: &str) -> KmsResult<CustomKeyStore> {
        let (stores, _) = self.load_stores(tenant).await?;
        stores
            .stores
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Self::store_not_found(id))
    }

    /// The endpoint and credential of `store`, its secret unsealed.
    pub(super) async fn proxy_endpoint(
        &self,
        store: &CustomKeyStore,
    ) -> KmsResult<XksProxyEndpoint> {
        let binding = self.store_binding(&store.tenant, &store.id);
        let kek = self.store_key(store, &binding).await?;
        let nonce: [u8; MESSAGE_NONCE_BYTES] =
            store.secret.nonce.as_slice().try_into().map_err(|_| {
                KmsError::Internal(format!(
                    "custom key store {}: corrupt sealed secret",
                    store.id
                ))
            })?;
        let sealed = SealedMessage {
            nonce,
            ciphertext: store.secret.ciphertext.clone(),
        };
        let mut plain =
            nuage_crypto::open_message(&kek, &sealed, &secret_aad(&binding, &store.access_key_id))
                .map_err(|e| {
                    KmsError::Internal(format!(
                        "custom key store {}: the sealed secret does not open: {e}",
                        store.id
                    ))
                })?;
        let secret = String::from_utf8(std::mem::take(&mut *plain)).map_err(|e| {
            // The bytes are secret: zero them before dropping.
            let _ = Zeroizing::new(e.into_bytes());
            KmsError::Internal(format!(
                "custom key store {}: the sealed secret is not UTF-8",
                store.id
            ))
        })?;
        Ok(XksProxyEndpoint {
            uri_endpoint: store.uri_endpoint.clone(),
            uri_path: store.uri_path.clone(),
            access_key_id: store.access_key_id.clone(),
            secret_access_key: Zeroizing::new(secret),
        })
    }

    /// The store's key-encryption key, unwrapped by the root of trust (or
    /// from the materials cache: version 0 never names a key material, and
    /// the binding is no key ARN, so the two never collide).
    async fn store_key(
        &self,
        store: &CustomKeyStore,
        binding: &str,
    ) -> KmsResult<Arc<KeyEncryptionKey>> {
        let cached = self
            .materials
            .read()
            .ok()
            .and_then(|cache| cache.get(&(binding.to_owned(), 0)).cloned());
        if let Some(kek) = cached {
            return Ok(kek);
        }
        let kek = Arc::new(
            self.keys
                .root
                .unwrap_key(&store.secret.wrapped_key, binding.as_bytes())
                .await?,
        );
        self.cache_material(binding, 0, Arc::clone(&kek));
        Ok(kek)
    }

    /// Seals `secret` for the store `id` under `kek`.
    fn seal_secret(
        kek: &KeyEncryptionKey,
        binding: &str,
        credential: &XksCredential,
        wrapped_key: Vec<u8>,
    ) -> KmsResult<SealedSecret> {
        let sealed = nuage_crypto::seal_message(
            kek,
            &secret_aad(binding, &credential.access_key_id),
            credential.raw_secret_access_key.as_bytes(),
        )?;
        Ok(SealedSecret {
            wrapped_key,
            nonce: sealed.nonce.to_vec(),
            ciphertext: sealed.ciphertext,
        })
    }

    /// GetHealthStatus against `endpoint`, for a management operation.
    async fn health_check(
        &self,
        endpoint: &XksProxyEndpoint,
        caller: &KeyCaller,
        operation: &str,
    ) -> KmsResult<()> {
        let client = self.external_client()?;
        let metadata = caller.metadata(None, operation, AccessReason::CustomerInitiatedAccess);
        let what = format!("{operation} {}{}", endpoint.uri_endpoint, endpoint.uri_path);
        let health = client
            .health(endpoint, &metadata)
            .await
            .map_err(|e| management_error(e, &what))?;
        check_health(&health, &what)
    }

    fn check_unique(
        stores: &TenantStores,
        except: Option<&str>,
        name: &str,
        uri_endpoint: &str,
        uri_path: &str,
    ) -> KmsResult<()> {
        for other in stores
            .stores
            .iter()
            .filter(|s| Some(s.id.as_str()) != except)
        {
            if other.name == name {
                return Err(KmsError::CustomKeyStoreNameInUse(format!(
                    "A custom key store named {name} already exists ({})",
                    other.id
                )));
            }
            if other.uri_endpoint == uri_endpoint && other.uri_path == uri_path {
                return Err(KmsError::XksProxyUriInUse(format!(
                    "The custom key store {} already uses the proxy URI {uri_endpoint}{uri_path}",
                    other.id
                )));
            }
        }
        Ok(())
    }

    /// CreateCustomKeyStore for an external key store: checks every member
    /// (AWS's rules), checks that the proxy answers GetHealthStatus with the
    /// credential (as AWS does before creating), then stores the store
    /// `DISCONNECTED`, its secret sealed.
    ///
    /// # Errors
    /// `Unsupported` (no XKS client on this server, `AWS_CLOUDHSM`,
    /// `VPC_ENDPOINT_SERVICE`); `Validation`; `XksProxyInvalidConfiguration`
    /// (plain HTTP to a host not on loopback); `CustomKeyStoreNameInUse`,
    /// `XksProxyUriInUse`, `LimitExceeded`; the proxy's refusals
    /// (`XksProxyUriUnreachable`, `XksProxyIncorrectAuthenticationCredential`,
    /// `XksProxyInvalidResponse`, `AccessDenied`).
    pub async fn create_custom_key_store(
        &self,
        tenant: &str,
        new: NewCustomKeyStore,
        caller: &KeyCaller,
    ) -> KmsResult<CustomKeyStore> {
        match new.store_type.as_deref() {
            Some(EXTERNAL_KEY_STORE) => {}
            None | Some("AWS_CLOUDHSM") => {
                return Err(KmsError::Unsupported(
                    "CustomKeyStoreType AWS_CLOUDHSM is not supported: Nuage's custom key stores \
                     are external key stores (CustomKeyStoreType EXTERNAL_KEY_STORE)"
                        .into(),
                ));
            }
            Some(other) => {
                return Err(KmsError::Validation(format!(
                    "1 validation error detected: Value '{other}' at 'customKeyStoreType' failed \
                     to satisfy constraint: Member must satisfy enum value set: [AWS_CLOUDHSM, \
                     EXTERNAL_KEY_STORE]"
                )));
            }
        }
        self.external_client()?;
        check_name(&new.name, "customKeyStoreName")?;
        check_connectivity(&required(new.connectivity, "XksProxyConnectivity")?)?;
        let uri_endpoint = required(new.uri_endpoint, "XksProxyUriEndpoint")?;
        check_uri_endpoint(&uri_endpoint)?;
        let uri_path = required(new.uri_path, "XksProxyUriPath")?;
        check_uri_path(&uri_path)?;
        let credential = required(new.credential, "XksProxyAuthenticationCredential")?;
        check_credential(&credential)?;
        // Uniqueness first: a name in use should not cost a proxy call.
        let (stores, _) = self.load_stores(tenant).await?;
        Self::check_unique(&stores, None, &new.name, &uri_endpoint, &uri_path)?;
        let endpoint = XksProxyEndpoint {
            uri_endpoint: uri_endpoint.clone(),
            uri_path: uri_path.clone(),
            access_key_id: credential.access_key_id.clone(),
            secret_access_key: credential.raw_secret_access_key.clone(),
        };
        self.health_check(&endpoint, caller, "CreateCustomKeyStore")
            .await?;
        let id = new_store_id()?;
        let binding = self.store_binding(tenant, &id);
        let kek = KeyEncryptionKey::generate()?;
        let wrapped_key = self.keys.root.wrap_key(&kek, binding.as_bytes()).await?;
        let store = CustomKeyStore {
            id,
            tenant: tenant.to_owned(),
            name: new.name,
            uri_endpoint,
            uri_path,
            access_key_id: credential.access_key_id.clone(),
            secret: Self::seal_secret(&kek, &binding, &credential, wrapped_key)?,
            connection_state: ConnectionState::Disconnected,
            connection_error_code: None,
            created_unix_ns: self.now(),
        };
        self.cache_material(&binding, 0, Arc::new(kek));
        for _ in 0..KMS_UPDATE_ATTEMPTS_MAX {
            let (mut stores, expect) = self.load_stores(tenant).await?;
            Self::check_unique(
                &stores,
                None,
                &store.name,
                &store.uri_endpoint,
                &store.uri_path,
            )?;
            if stores.stores.len() >= KMS_CUSTOM_KEY_STORES_PER_TENANT_MAX {
                return Err(KmsError::LimitExceeded(format!(
                    "The tenant already has {KMS_CUSTOM_KEY_STORES_PER_TENANT_MAX} custom key \
                     stores, the most it may have"
                )));
            }
            stores.stores.push(store.clone());
            if self
                .commit(vec![Self::stores_write(tenant, &stores, expect)?])
                .await?
            {
                tracing::info!(tenant, store = %store.id, "created an external key store");
                return Ok(store);
            }
        }
        Err(Self::contention("creating a custom key store"))
    }

    /// DescribeCustomKeyStores: the tenant's stores in creation order, one
    /// of them (`id` or `name`), after `marker` (a store id), at most `limit`.
    ///
    /// # Errors
    /// `CustomKeyStoreNotFound` for an `id` or `name` the tenant does not
    /// have; `InvalidMarker`.
    pub async fn describe_custom_key_stores(
        &self,
        tenant: &str,
        id: Option<&str>,
        name: Option<&str>,
        marker: Option<&str>,
        limit: usize,
    ) -> KmsResult<Page<CustomKeyStore>> {
        let (stores, _) = self.load_stores(tenant).await?;
        let mut stores = stores.stores;
        if let Some(id) = id {
            stores.retain(|s| s.id == id);
            if stores.is_empty() {
                return Err(Self::store_not_found(id));
            }
        }
        if let Some(name) = name {
            stores.retain(|s| s.name == name);
            if stores.is_empty() {
                return Err(KmsError::CustomKeyStoreNotFound(format!(
                    "No custom key store is named {name}."
                )));
            }
        }
        let start = match marker {
            None => 0,
            Some(marker) => {
                let position = stores
                    .iter()
                    .position(|s| s.id == marker)
                    .filter(|_| is_store_id(marker))
                    .ok_or_else(|| {
                        KmsError::InvalidMarker(
                            "Invalid marker: it must come from a previous \
                             DescribeCustomKeyStores response"
                                .into(),
                        )
                    })?;
                position + 1
            }
        };
        let rest: Vec<CustomKeyStore> = stores.into_iter().skip(start).collect();
        let truncated = rest.len() > limit;
        let items: Vec<CustomKeyStore> = rest.into_iter().take(limit).collect();
        let next_marker = if truncated {
            items.last().map(|s| s.id.clone())
        } else {
            None
        };
        Ok(Page { items, next_marker })
    }

    /// Reads the tenant's stores, lets `change` edit store `id`, and writes
    /// them back unless they changed meanwhile (then tries again).
    async fn update_store<T>(
        &self,
        tenant: &str,
        id: &str,
        what: &str,
        mut change: impl FnMut(&mut TenantStores, usize) -> KmsResult<T>,
    ) -> KmsResult<T> {
        for _ in 0..KMS_UPDATE_ATTEMPTS_MAX {
            let (mut stores, expect) = self.load_stores(tenant).await?;
            let index = stores
                .stores
                .iter()
                .position(|s| s.id == id)
                .ok_or_else(|| Self::store_not_found(id))?;
            let out = change(&mut stores, index)?;
            if self
                .commit(vec![Self::stores_write(tenant, &stores, expect)?])
                .await?
            {
                return Ok(out);
            }
        }
        Err(Self::contention(what))
    }

    /// ConnectCustomKeyStore: asks the proxy for its health with the stored
    /// credential. On success the store is `CONNECTED`; on failure it is
    /// `FAILED` with a `ConnectionErrorCode` and the error is returned (AWS
    /// connects asynchronously and only records the failure; Nuage connects
    /// at once and answers it too). Connecting a connected store does
    /// nothing; a `FAILED` store must be disconnected first, as in AWS.
    ///
    /// # Errors
    /// `CustomKeyStoreNotFound`, `CustomKeyStoreInvalidState` (`FAILED`),
    /// `Unsupported` (no XKS client), and the proxy's refusals as for
    /// [`Self::create_custom_key_store`].
    pub async fn connect_custom_key_store(
        &self,
        tenant: &str,
        id: &str,
        caller: &KeyCaller,
    ) -> KmsResult<CustomKeyStore> {
        let store = self.custom_key_store(tenant, id).await?;
        match store.connection_state {
            ConnectionState::Connected => return Ok(store),
            ConnectionState::Failed => {
                return Err(KmsError::CustomKeyStoreInvalidState(format!(
                    "Custom key store {id} is in the FAILED connection state: disconnect it \
                     (DisconnectCustomKeyStore), fix its settings if needed, then connect it"
                )));
            }
            ConnectionState::Disconnected => {}
        }
        let endpoint = self.proxy_endpoint(&store).await?;
        let outcome = self
            .health_check(&endpoint, caller, "ConnectCustomKeyStore")
            .await;
        if let Err(KmsError::Unsupported(m)) = outcome {
            return Err(KmsError::Unsupported(m));
        }
        let (state, code) = match &outcome {
            Ok(()) => (ConnectionState::Connected, None),
            Err(e) => (ConnectionState::Failed, Some(connection_error_code(e))),
        };
        let connected = self
            .update_store(tenant, id, "connecting a custom key store", |stores, i| {
                let store = &mut stores.stores[i];
                if store.connection_state != ConnectionState::Disconnected {
                    return Err(KmsError::CustomKeyStoreInvalidState(format!(
                        "Custom key store {id} changed state while connecting: it is now {}",
                        store.connection_state.as_str()
                    )));
                }
                store.connection_state = state;
                store.connection_error_code = code;
                Ok(store.clone())
            })
            .await?;
        match outcome {
            Ok(()) => {
                tracing::info!(tenant, store = id, "connected an external key store");
                Ok(connected)
            }
            Err(e) => {
                tracing::info!(tenant, store = id, error = %e, "connecting an external key store failed");
                Err(e)
            }
        }
    }

    /// DisconnectCustomKeyStore: the store's keys refuse every use until it
    /// is connected again.
    ///
    /// # Errors
    /// `CustomKeyStoreNotFound`; `CustomKeyStoreInvalidState` when already
    /// disconnected (as AWS).
    pub async fn disconnect_custom_key_store(
        &self,
        tenant: &str,
        id: &str,
    ) -> KmsResult<CustomKeyStore> {
        let store = self
            .update_store(
                tenant,
                id,
                "disconnecting a custom key store",
                |stores, i| {
                    let store = &mut stores.stores[i];
                    if store.connection_state == ConnectionState::Disconnected {
                        return Err(KmsError::CustomKeyStoreInvalidState(format!(
                            "Custom key store {id} is already disconnected"
                        )));
                    }
                    store.connection_state = ConnectionState::Disconnected;
                    store.connection_error_code = None;
                    Ok(store.clone())
                },
            )
            .await?;
        tracing::info!(tenant, store = id, "disconnected an external key store");
        Ok(store)
    }

    /// UpdateCustomKeyStore, with AWS's rules for external key stores: the
    /// name, path and credential may change in any connection state, the
    /// endpoint only while `DISCONNECTED` (so may the connectivity in AWS;
    /// here it is always `PUBLIC_ENDPOINT`). When the
    /// endpoint, path or credential changes, the proxy must answer
    /// GetHealthStatus with the new values first (as AWS checks).
    ///
    /// # Errors
    /// As [`Self::create_custom_key_store`]; `CustomKeyStoreNotFound`;
    /// `CustomKeyStoreInvalidState`.
    pub async fn update_custom_key_store(
        &self,
        tenant: &str,
        id: &str,
        update: CustomKeyStoreUpdate,
        caller: &KeyCaller,
    ) -> KmsResult<CustomKeyStore> {
        let current = self.custom_key_store(tenant, id).await?;
        if let Some(name) = &update.new_name {
            check_name(name, "newCustomKeyStoreName")?;
        }
        if let Some(connectivity) = &update.connectivity {
            check_connectivity(connectivity)?;
        }
        if let Some(endpoint) = &update.uri_endpoint {
            check_uri_endpoint(endpoint)?;
        }
        if let Some(path) = &update.uri_path {
            check_uri_path(path)?;
        }
        if let Some(credential) = &update.credential {
            check_credential(credential)?;
        }
        let endpoint_changes = update
            .uri_endpoint
            .as_ref()
            .is_some_and(|e| *e != current.uri_endpoint);
        // The connectivity cannot change: PUBLIC_ENDPOINT is the only one
        // accepted, and every store has it.
        if endpoint_changes && current.connection_state != ConnectionState::Disconnected {
            return Err(KmsError::CustomKeyStoreInvalidState(format!(
                "Custom key store {id} must be disconnected to change its XksProxyUriEndpoint \
                 (it is {})",
                current.connection_state.as_str()
            )));
        }
        let name = update.new_name.clone().unwrap_or(current.name.clone());
        let uri_endpoint = update
            .uri_endpoint
            .clone()
            .unwrap_or(current.uri_endpoint.clone());
        let uri_path = update.uri_path.clone().unwrap_or(current.uri_path.clone());
        let (stores, _) = self.load_stores(tenant).await?;
        Self::check_unique(&stores, Some(id), &name, &uri_endpoint, &uri_path)?;
        let connection_changes =
            endpoint_changes || update.uri_path.is_some() || update.credential.is_some();
        let binding = self.store_binding(tenant, id);
        let sealed = match &update.credential {
            None => None,
            Some(credential) => {
                let kek = self.store_key(&current, &binding).await?;
                Some(Self::seal_secret(
                    &kek,
                    &binding,
                    credential,
                    current.secret.wrapped_key.clone(),
                )?)
            }
        };
        if connection_changes {
            let mut endpoint = self.proxy_endpoint(&current).await?;
            endpoint.uri_endpoint.clone_from(&uri_endpoint);
            endpoint.uri_path.clone_from(&uri_path);
            if let Some(credential) = &update.credential {
                endpoint.access_key_id.clone_from(&credential.access_key_id);
                endpoint.secret_access_key = credential.raw_secret_access_key.clone();
            }
            self.health_check(&endpoint, caller, "UpdateCustomKeyStore")
                .await?;
        }
        let store = self
            .update_store(tenant, id, "updating a custom key store", |stores, i| {
                Self::check_unique(stores, Some(id), &name, &uri_endpoint, &uri_path)?;
                let store = &mut stores.stores[i];
                if endpoint_changes && store.connection_state != ConnectionState::Disconnected {
                    return Err(KmsError::CustomKeyStoreInvalidState(format!(
                        "Custom key store {id} was connected meanwhile: disconnect it to change \
                         its XksProxyUriEndpoint"
                    )));
                }
                store.name.clone_from(&name);
                store.uri_endpoint.clone_from(&uri_endpoint);
                store.uri_path.clone_from(&uri_path);
                if let (Some(credential), Some(sealed)) = (&update.credential, &sealed) {
                    store.access_key_id.clone_from(&credential.access_key_id);
                    store.secret = sealed.clone();
                }
                Ok(store.clone())
            })
            .await?;
        tracing::info!(tenant, store = id, "updated an external key store");
        Ok(store)
    }

    /// DeleteCustomKeyStore: only a `DISCONNECTED` store without KMS keys
    /// (pending deletion included), as in AWS.
    ///
    /// # Errors
    /// `CustomKeyStoreNotFound`, `CustomKeyStoreInvalidState`,
    /// `CustomKeyStoreHasKeys`.
    pub async fn delete_custom_key_store(&self, tenant: &str, id: &str) -> KmsResult<()> {
        for _ in 0..KMS_UPDATE_ATTEMPTS_MAX {
            let (mut stores, expect) = self.load_stores(tenant).await?;
            let index = stores
                .stores
                .iter()
                .position(|s| s.id == id)
                .ok_or_else(|| Self::store_not_found(id))?;
            let store = &stores.stores[index];
            if store.connection_state != ConnectionState::Disconnected {
                return Err(KmsError::CustomKeyStoreInvalidState(format!(
                    "Custom key store {id} must be disconnected before it is deleted (it is {})",
                    store.connection_state.as_str()
                )));
            }
            // Read after the store document: a key created in the store
            // commits under that document's revision, so one created since
            // this scan makes the write below fail and the loop read again.
            let has_keys = !self
                .keys
                .docs
                .scan_documents(XKS_KEYS, &format!("{tenant}/{id}/"), None, 1)
                .await?
                .is_empty();
            if has_keys {
                return Err(KmsError::CustomKeyStoreHasKeys(format!(
                    "Custom key store {id} still has KMS keys: schedule their deletion and wait \
                     for it to complete first"
                )));
            }
            stores.stores.remove(index);
            if self
                .commit(vec![Self::stores_write(tenant, &stores, expect)?])
                .await?
            {
                self.forget_store_key(&self.store_binding(tenant, id));
                tracing::info!(tenant, store = id, "deleted an external key store");
                return Ok(());
            }
        }
        Err(Self::contention("deleting a custom key store"))
    }

    /// Deletes all of `tenant`'s external key stores at once, whatever their
    /// state (the tenant is being deleted: its keys are already gone), which
    /// destroys each store's key and so its sealed proxy credential.
    /// Returns how many there were.
    pub(super) async fn shred_custom_key_stores(&self, tenant: &str) -> KmsResult<usize> {
        let (stores, _) = self.load_stores(tenant).await?;
        if !self
            .commit(vec![DocumentWrite {
                namespace: STORES.into(),
                key: tenant.into(),
                expect: Expect::Any,
                value: None,
            }])
            .await?
        {
            return Err(KmsError::Internal(
                "an unconditional deletion was refused by the document store".into(),
            ));
        }
        for store in &stores.stores {
            self.forget_store_key(&self.store_binding(tenant, &store.id));
        }
        Ok(stores.stores.len())
    }

    fn forget_store_key(&self, binding: &str) {
        if let Ok(mut cache) = self.materials.write() {
            cache.remove(&(binding.to_owned(), 0));
        }
    }
}
