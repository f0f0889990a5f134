//! External key stores: keys a tenant holds on its own premises, reached
//! through a proxy speaking the AWS KMS External Key Store (XKS) proxy API v1
//! (github.com/aws/aws-kms-xksproxy-api-spec).
//!
//! This module is the contract between the key service (which decides when a
//! tenant's external key must wrap or unwrap something, and with which request
//! metadata) and the transport (crate `nuage-xks`: the SigV4-signed HTTPS
//! client, and the reference proxy `nuage xks-proxy`). Nothing here does I/O.
//!
//! Nuage keeps **no cache** of anything an external key store returns: every
//! wrap and every unwrap is a call to the proxy, so a key the tenant disables
//! or destroys in its own key manager stops every read at once.

use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

/// How Nuage reaches one external key store proxy (from
/// `CreateCustomKeyStore` / `UpdateCustomKeyStore`).
/// Not serializable: the key service stores its own record, with the secret
/// sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct XksProxyEndpoint {
    /// `https://host[:port]` (`XksProxyUriEndpoint`), no path.
    pub uri_endpoint: String,
    /// The path prefix, ending in `/kms/xks/v1` (`XksProxyUriPath`).
    pub uri_path: String,
    /// The SigV4 access key id the proxy expects
    /// (`XksProxyAuthenticationCredential.AccessKeyId`).
    pub access_key_id: String,
    /// Its secret (`RawSecretAccessKey`). At rest, the key service stores it
    /// only sealed by the root of trust.
    pub secret_access_key: Zeroizing<String>,
}

impl fmt::Debug for XksProxyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XksProxyEndpoint")
            .field("uri_endpoint", &self.uri_endpoint)
            .field("uri_path", &self.uri_path)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The `requestMetadata` object every XKS call carries (spec section
/// "Request metadata"), plus Nuage's key access justification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XksRequestMetadata {
    /// `awsPrincipalArn`: who asked (a user, role session, or the tenant root).
    pub aws_principal_arn: String,
    /// `kmsKeyArn`: the Nuage KMS key backed by the external key (absent on
    /// health checks).
    pub kms_key_arn: Option<String>,
    /// `kmsOperation`: the KMS operation that caused the call (`Encrypt`,
    /// `Decrypt`, `GenerateDataKey`, `CreateKey`, `DescribeKey`,
    /// `ConnectCustomKeyStore`, ...).
    pub kms_operation: String,
    /// `kmsRequestId`: Nuage's request id.
    pub kms_request_id: String,
    /// `kmsViaService`: the service that used the key on the principal's
    /// behalf (`s3` for object reads and writes), absent for direct KMS calls.
    pub kms_via_service: Option<String>,
    /// Nuage extension `nuageAccessReason`: the key access justification, an
    /// [`crate::AccessReason`] wire name (`CUSTOMER_INITIATED_ACCESS`, ...).
    /// A proxy enforces its own list of allowed reasons.
    pub access_reason: String,
}

/// What `encrypt` returns and `decrypt` takes (AES-256-GCM under the
/// external key; the proxy picks the IV).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XksCiphertext {
    pub ciphertext: Vec<u8>,
    pub initialization_vector: Vec<u8>,
    pub authentication_tag: Vec<u8>,
    /// `ciphertextMetadata`, when the proxy returns one; passed back on decrypt.
    pub ciphertext_metadata: Option<Vec<u8>>,
}

/// `GetKeyMetadata`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XksKeyMetadata {
    /// `keySpec`, `AES_256` for a usable key.
    pub key_spec: String,
    /// `keyUsage`, containing `ENCRYPT` and `DECRYPT` for a usable key.
    pub key_usage: Vec<String>,
    /// `keyStatus`: `ENABLED` or `DISABLED`.
    pub key_status: String,
}

/// `GetHealthStatus`'s answer, reduced to what Nuage reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XksHealth {
    pub xks_proxy_vendor: String,
    pub xks_proxy_model: String,
    pub ekm_vendor: String,
    /// `healthStatus` of each external key manager instance (`ACTIVE`,
    /// `DEGRADED`, `UNAVAILABLE`).
    pub ekm_health: Vec<String>,
}

/// Why an external key store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XksError {
    /// The proxy could not be reached, timed out, or answered something that
    /// is not the XKS protocol.
    #[error("the external key store proxy is unreachable: {0}")]
    Unreachable(String),
    /// The proxy answered with an XKS error: `errorName` as the spec names
    /// it (`KeyNotFoundException`, `InvalidStateException`,
    /// `AccessDeniedException`, `AuthenticationFailedException`,
    /// `InvalidCiphertextException`, `ValidationException`, ...), with its
    /// HTTP status and message.
    #[error("the external key store refused ({error_name}, HTTP {status}): {message}")]
    Refused {
        error_name: String,
        status: u16,
        message: String,
    },
}

/// A client for external key store proxies. Implemented by `nuage-xks`'s
/// SigV4-signed HTTPS client; one instance serves every tenant's stores (the
/// endpoint and credential come with each call).
#[async_trait::async_trait]
pub trait ExternalKeyStore: Send + Sync + fmt::Debug {
    /// `POST {uri_path}/health`.
    async fn health(
        &self,
        endpoint: &XksProxyEndpoint,
        metadata: &XksRequestMetadata,
    ) -> Result<XksHealth, XksError>;

    /// `POST {uri_path}/keys/{xks_key_id}/metadata`.
    async fn key_metadata(
        &self,
        endpoint: &XksProxyEndpoint,
        xks_key_id: &str,
        metadata: &XksRequestMetadata,
    ) -> Result<XksKeyMetadata, XksError>;

    /// `POST {uri_path}/keys/{xks_key_id}/encrypt` with `AES_GCM`; `aad` is
    /// sent as `additionalAuthenticatedData` (omitted when empty).
    async fn encrypt(
        &self,
        endpoint: &XksProxyEndpoint,
        xks_key_id: &str,
        metadata: &XksRequestMetadata,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<XksCiphertext, XksError>;

    /// `POST {uri_path}/keys/{xks_key_id}/decrypt`.
    async fn decrypt(
        &self,
        endpoint: &XksProxyEndpoint,
        xks_key_id: &str,
        metadata: &XksRequestMetadata,
        ciphertext: &XksCiphertext,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, XksError>;
}
