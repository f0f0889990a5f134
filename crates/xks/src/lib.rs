//! `nuage-xks`: both ends of the AWS KMS External Key Store (XKS) proxy API v1
//! (github.com/aws/aws-kms-xksproxy-api-spec), for "hold your own key".
//!
//! - [`XksClient`] is Nuage's side: the SigV4-signed HTTPS client that
//!   implements [`nuage_kms::ExternalKeyStore`], through which the key service
//!   wraps and unwraps with a key the tenant holds on its own premises.
//! - [`XksProxy`] is the tenant's side: the reference proxy that
//!   `nuage xks-proxy serve` runs, in front of AES-256 keys in the tenant's
//!   PKCS#11 token, enforcing the key's state and its allowed key access
//!   justifications (Nuage's `nuageAccessReason` extension) and keeping the
//!   tenant's own audit file of every key use.
//! - [`wire`] is the protocol both share: paths, JSON bodies, error names.
//!
//! This crate knows nothing of tenants, key policies or Nuage's storage; the
//! contract it implements lives in `nuage_kms::external`. It reads no
//! configuration: the binary builds [`XksClientConfig`] and
//! [`XksProxyConfig`]. Its I/O is the network, the proxy's token, and the
//! proxy's state and audit files (see [`proxy`]).

mod client;
pub mod proxy;
pub mod wire;

pub use client::{XksClient, XksClientConfig, XksClientError};
pub use proxy::{
    HsmError, HsmKeys, KeyState, KeyStates, StateError, XksCredential, XksHsmConfig, XksProxy,
    XksProxyConfig, XksProxyError, self_signed_certificate,
};
