//! The cluster's certificate authority and the certificates it issues to
//! nodes and gateways.
//!
//! One CA per cluster (an ECDSA P-256 key and a self-signed certificate that
//! may sign end-entity certificates only: path length 0). Each member gets a
//! P-256 key and a certificate whose subject alternative names carry its
//! identity as the URI `nuage://<site>/<role>/<node>` (see `identity.rs`),
//! plus the DNS names and IP addresses it is reached at; the common name is
//! the node id, for people reading logs. Every member certificate is valid
//! for both TLS server and client authentication, since storage nodes also
//! call each other (repair).
//!
//! The CA's private key is the cluster's most sensitive secret: whoever holds
//! it can mint a node in any site. `write_private` creates key files 0600 and
//! nothing here ever logs a key.

use crate::NodeError;
use crate::identity::NodeIdentity;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// The CA's certificate file in a CA directory (and beside each issued pair).
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key file in a CA directory (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";
/// An issued certificate's file in its output directory.
pub const CERT_FILE: &str = "cert.pem";
/// An issued private key's file in its output directory (mode 0600).
pub const KEY_FILE: &str = "key.pem";
/// Validity of a new CA.
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// Default validity of an issued certificate.
pub const CERT_VALIDITY_DAYS_DEFAULT: u32 = 365;
/// Longest validity one may ask for (a node certificate names a site: a node
/// moved elsewhere should not keep a certificate for years).
pub const CERT_VALIDITY_DAYS_MAX: u32 = 825;
/// Most DNS names and IP addresses in one certificate.
pub const CERT_SANS_MAX: usize = 16;
/// Issued certificates are valid from a little before now, for clock skew.
const BACKDATE_MINUTES: i64 = 5;

fn pki(e: impl std::fmt::Display) -> NodeError {
    NodeError::Pki(e.to_string())
}

/// The cluster CA: its certificate and private key, in PEM.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A member's certificate and private key, in PEM.
#[derive(Clone)]
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new CA named `Nuage cluster CA <cluster>`.
    ///
    /// # Errors
    /// `NodeError::Pki` if key generation or signing fails.
    pub fn generate(cluster: &str) -> Result<Self, NodeError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(pki)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Nuage cluster CA {cluster}"));
        dn.push(DnType::OrganizationName, "Nuage");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(BACKDATE_MINUTES);
        params.not_after = now + time::Duration::days(i64::from(CA_VALIDITY_DAYS));
        let cert = params.self_signed(&key).map_err(pki)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA certificate (what every member trusts).
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes `ca.pem` and `ca.key` (0600) into `dir`, creating it; refuses to
    /// overwrite an existing CA.
    ///
    /// # Errors
    /// `NodeError::Pki` when a CA is already there; `NodeError::Io` otherwise.
    pub fn write_to(&self, dir: &Path) -> Result<(), NodeError> {
        std::fs::create_dir_all(dir)?;
        let key = dir.join(CA_KEY_FILE);
        if key.exists() || dir.join(CA_CERT_FILE).exists() {
            return Err(NodeError::Pki(format!(
                "{} already holds a CA; refusing to overwrite it",
                dir.display()
            )));
        }
        write_private(&key, self.key_pem.as_bytes())?;
        write_public(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes())?;
        Ok(())
    }

    /// Reads a CA written by [`write_to`](Self::write_to).
    ///
    /// # Errors
    /// `NodeError::Io` or `NodeError::Pki` when the files are missing or bad.
    pub fn load(dir: &Path) -> Result<Self, NodeError> {
        use std::os::unix::fs::PermissionsExt as _;
        let cert_pem = std::fs::read_to_string(dir.join(CA_CERT_FILE))?;
        let key_path = dir.join(CA_KEY_FILE);
        // As `ssh` does with private keys: a CA key others can read may have
        // been copied, and then anyone may have minted nodes.
        let mode = std::fs::metadata(&key_path)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(NodeError::Pki(format!(
                "{} is accessible by group or others (mode {:o}); chmod 600 it",
                key_path.display(),
                mode & 0o777
            )));
        }
        let key_pem = std::fs::read_to_string(&key_path)?;
        // Check both now, not at the first issue.
        KeyPair::from_pem(&key_pem).map_err(pki)?;
        CertificateParams::from_ca_cert_pem(&cert_pem).map_err(pki)?;
        Ok(Self { cert_pem, key_pem })
    }

    /// Issues a certificate for `identity`, reachable at `sans` (DNS names or
    /// IP addresses), valid for `validity_days`.
    ///
    /// # Errors
    /// `NodeError::Pki` for a bad name, too many names or too long a validity.
    pub fn issue(
        &self,
        identity: &NodeIdentity,
        sans: &[String],
        validity_days: u32,
    ) -> Result<IssuedCertificate, NodeError> {
        if sans.len() > CERT_SANS_MAX {
            return Err(NodeError::Pki(format!(
                "{} names given, at most {CERT_SANS_MAX}",
                sans.len()
            )));
        }
        if validity_days == 0 || validity_days > CERT_VALIDITY_DAYS_MAX {
            return Err(NodeError::Pki(format!(
                "validity must be 1 to {CERT_VALIDITY_DAYS_MAX} days"
            )));
        }
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(pki)?;
        let ca_params = CertificateParams::from_ca_cert_pem(&self.cert_pem).map_err(pki)?;
        // Re-signing the CA's own parameters with its own key yields a
        // certificate with the same subject and key identifier: what rcgen
        // needs as the issuer.
        let ca_cert = ca_params.self_signed(&ca_key).map_err(pki)?;

        let mut params = CertificateParams::new(sans.to_vec())
            .map_err(|e| NodeError::Pki(format!("bad DNS name or IP address: {e}")))?;
        let uri = rcgen::Ia5String::try_from(identity.uri()).map_err(pki)?;
        params.subject_alt_names.push(SanType::URI(uri));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.node.clone());
        dn.push(DnType::OrganizationalUnitName, identity.role.as_str());
        dn.push(
            DnType::OrganizationName,
            format!("Nuage site {}", identity.site),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(BACKDATE_MINUTES);
        params.not_after = now + time::Duration::days(i64::from(validity_days));
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(pki)?;
        let cert = params.signed_by(&key, &ca_cert, &ca_key).map_err(pki)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl IssuedCertificate {
    /// Writes `cert.pem`, `key.pem` (0600) and a copy of the CA's `ca.pem`
    /// into `dir`, creating it; refuses to overwrite an existing key.
    ///
    /// # Errors
    /// `NodeError::Pki` when a key is already there; `NodeError::Io` otherwise.
    pub fn write_to(&self, dir: &Path, ca_cert_pem: &str) -> Result<(), NodeError> {
        std::fs::create_dir_all(dir)?;
        let key = dir.join(KEY_FILE);
        if key.exists() {
            return Err(NodeError::Pki(format!(
                "{} already exists; refusing to overwrite a key",
                key.display()
            )));
        }
        write_private(&key, self.key_pem.as_bytes())?;
        write_public(&dir.join(CERT_FILE), self.cert_pem.as_bytes())?;
        write_public(&dir.join(CA_CERT_FILE), ca_cert_pem.as_bytes())?;
        Ok(())
    }
}

/// Creates `path` readable by its owner only, writes and syncs it.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn issued_certificates_name_their_identity() -> Result<(), NodeError> {
        let ca = CertificateAuthority::generate("test")?;
        let id = NodeIdentity::new("n1", "fr-par", Role::Storage)?;
        let issued = ca.issue(&id, &["localhost".into(), "127.0.0.1".into()], 30)?;
        let der = rustls_pemfile::certs(&mut issued.cert_pem.as_bytes())
            .next()
            .ok_or_else(|| NodeError::Pki("no certificate".into()))??;
        assert_eq!(NodeIdentity::from_certificate_der(&der)?, id);
        assert!(ca.issue(&id, &[], 0).is_err());
        assert!(ca.issue(&id, &[], CERT_VALIDITY_DAYS_MAX + 1).is_err());
        Ok(())
    }

    #[test]
    fn a_ca_round_trips_through_its_directory() -> Result<(), NodeError> {
        let dir = tempfile::tempdir()?;
        let ca = CertificateAuthority::generate("test")?;
        ca.write_to(dir.path())?;
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            ca.write_to(dir.path()).is_err(),
            "a CA is never overwritten"
        );
        let key = dir.path().join(CA_KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640))?;
        assert!(
            CertificateAuthority::load(dir.path()).is_err(),
            "a readable CA key is refused"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        let loaded = CertificateAuthority::load(dir.path())?;
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        let id = NodeIdentity::new("g1", "de-fra", Role::Gateway)?;
        loaded.issue(&id, &["127.0.0.1".into()], 1)?;
        Ok(())
    }
}
