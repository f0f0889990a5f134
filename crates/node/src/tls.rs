//! rustls configurations for the node protocol. Both ends present a
//! certificate the cluster CA signed, and both check the other's:
//!
//! - the node (server) requires a client certificate (`WebPkiClientVerifier`,
//!   no anonymous clients) and reads the caller's identity from it;
//! - the client verifies the node's chain and the DNS name or IP address it
//!   dialled (`WebPkiServerVerifier`), then that the certificate names the
//!   node id and site it meant to reach: a valid certificate of another node,
//!   or of the right node id in another site, is refused.
//!
//! Only TLS 1.3 and 1.2 with rustls's safe defaults; ALPN `http/1.1`.

use crate::NodeError;
use crate::identity::NodeIdentity;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

/// A member's TLS material: its certificate (chain), key, and the cluster CA.
#[derive(Clone)]
pub struct TlsMaterial {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Reads the three PEM files.
    ///
    /// # Errors
    /// `NodeError::TlsConfig` naming the file that cannot be read.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, NodeError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| NodeError::TlsConfig(format!("cannot read {}: {e}", p.display())))
        };
        Ok(Self {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            ca_pem: read(ca)?,
        })
    }

    /// The member's own identity, from its certificate.
    ///
    /// # Errors
    /// `NodeError::TlsConfig` or `BadIdentity` when the certificate is missing
    /// or names no identity.
    pub fn identity(&self) -> Result<NodeIdentity, NodeError> {
        let chain = certs(&self.cert_pem)?;
        let leaf = chain
            .first()
            .ok_or_else(|| NodeError::TlsConfig("no certificate in the PEM".into()))?;
        NodeIdentity::from_certificate_der(leaf)
    }

    fn chain_and_key(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), NodeError> {
        let chain = certs(&self.cert_pem)?;
        if chain.is_empty() {
            return Err(NodeError::TlsConfig("no certificate in the PEM".into()));
        }
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .map_err(|e| NodeError::TlsConfig(format!("bad private key PEM: {e}")))?
            .ok_or_else(|| NodeError::TlsConfig("no private key in the PEM".into()))?;
        Ok((chain, key))
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, NodeError> {
        let mut roots = RootCertStore::empty();
        let cas = certs(&self.ca_pem)?;
        if cas.is_empty() {
            return Err(NodeError::TlsConfig("no CA certificate in the PEM".into()));
        }
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| NodeError::TlsConfig(format!("bad CA certificate: {e}")))?;
        }
        Ok(Arc::new(roots))
    }
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, NodeError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NodeError::TlsConfig(format!("bad certificate PEM: {e}")))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(e: impl std::fmt::Display) -> NodeError {
    NodeError::TlsConfig(e.to_string())
}

/// The node's server configuration: its certificate, and client certificates
/// required and verified against the cluster CA.
///
/// # Errors
/// `NodeError::TlsConfig` for bad PEM or a key that does not match.
pub fn server_config(material: &TlsMaterial) -> Result<Arc<rustls::ServerConfig>, NodeError> {
    let (chain, key) = material.chain_and_key()?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(material.roots()?, provider())
            .build()
            .map_err(tls_config)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Why the last handshake refused the server's identity, for the client to
/// report instead of a bare TLS error.
pub type PeerMismatch = Arc<Mutex<Option<String>>>;

/// The client configuration for reaching the node named `expected`, with
/// `material`'s certificate as the client's.
///
/// # Errors
/// `NodeError::TlsConfig` for bad PEM or a key that does not match.
pub fn client_config(
    material: &TlsMaterial,
    expected: &NodeIdentity,
) -> Result<(Arc<rustls::ClientConfig>, PeerMismatch), NodeError> {
    let (chain, key) = material.chain_and_key()?;
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(material.roots()?, provider())
            .build()
            .map_err(tls_config)?;
    let mismatch = PeerMismatch::default();
    let verifier = Arc::new(ExpectedNode {
        inner,
        expected: expected.clone(),
        mismatch: Arc::clone(&mismatch),
    });
    // No ALPN here: the HTTP connector sets `http/1.1` itself.
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(tls_config)?;
    Ok((Arc::new(config), mismatch))
}

/// WebPKI verification, then the identity check.
#[derive(Debug)]
struct ExpectedNode {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    expected: NodeIdentity,
    mismatch: PeerMismatch,
}

impl ExpectedNode {
    fn refuse(&self, why: String) -> rustls::Error {
        *self.mismatch.lock().unwrap_or_else(PoisonError::into_inner) = Some(why.clone());
        rustls::Error::General(why)
    }
}

impl ServerCertVerifier for ExpectedNode {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let named = NodeIdentity::from_certificate_der(end_entity)
            .map_err(|e| self.refuse(format!("the server certificate: {e}")))?;
        if named != self.expected {
            return Err(self.refuse(format!(
                "the server certificate names {named}, expected {}",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
