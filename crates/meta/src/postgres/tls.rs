//! TLS to the database: which mode a configuration asks for (the `tls`
//! setting, the URL's `sslmode`, or the default for its hosts), and the
//! rustls client configuration that mode needs.
//!
//! The rule this module keeps: a database reached over the network is never
//! talked to in plaintext unless the operator said so. With neither `tls`
//! nor `sslmode`, a connection string whose every host is loopback
//! (`localhost`, 127.0.0.0/8, `::1`) or a Unix socket gets `disable`, and
//! any other gets `verify-full`. `sslmode=prefer` and `allow` (libpq's
//! default and its weaker cousin) fall back to plaintext without a word when
//! the server offers no TLS, so they are refused, as is `verify-ca` (which
//! trusts any certificate of the CA for any host). A `tls` setting and an
//! `sslmode` that disagree are refused rather than one silently winning.
//!
//! `verify-full` checks the chain up to the trusted roots (`ca_file`, else
//! the system's) and that the certificate names the host connected to (the
//! `host` of the connection string, also when `hostaddr` gives the address).
//! `require` encrypts but accepts any certificate: it stops a passive
//! eavesdropper, not an active one, and is meant for tests.
//!
//! This module reads the certificate files it is given (bounded in size)
//! and nothing else; it never logs a connection string.

use crate::{MetaError, MetaResult};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::io::Read as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres::config::{Host, SslMode};

/// Largest certificate or key file read (a bundle of roots fits easily).
const PEM_FILE_BYTES_MAX: u64 = 1 << 20;

/// How the connection to the database is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext TCP (or a Unix socket). Only on a loopback or private
    /// path the operator vouches for.
    Disable,
    /// TLS without checking the certificate: encrypted, not authenticated.
    /// For tests.
    Require,
    /// TLS, the chain checked up to the trusted roots and the host name
    /// checked against the certificate.
    VerifyFull,
}

impl TlsMode {
    /// The name in the configuration and in `sslmode`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Require => "require",
            Self::VerifyFull => "verify-full",
        }
    }

    /// `disable`, `require` or `verify-full`; anything else is refused with
    /// the reason (`prefer`, `allow` and `verify-ca` are libpq modes Nuage
    /// does not offer).
    ///
    /// # Errors
    /// A message for the operator naming the accepted values.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "disable" => Ok(Self::Disable),
            "require" => Ok(Self::Require),
            "verify-full" => Ok(Self::VerifyFull),
            "prefer" | "allow" => Err(format!(
                "`{value}` falls back to plaintext when the server offers no TLS; \
                 use \"verify-full\" (or \"disable\" for a database on loopback)"
            )),
            "verify-ca" => Err(
                "`verify-ca` accepts a certificate issued for any host; use \"verify-full\"".into(),
            ),
            _ => Err(format!(
                "unknown TLS mode `{value}` (expected \"disable\", \"require\" or \"verify-full\")"
            )),
        }
    }
}

impl std::fmt::Display for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TLS settings of `[metadata]`, before they meet the URL.
#[derive(Clone, Debug, Default)]
pub struct PostgresTls {
    /// None: the URL's `sslmode`, else the default for its hosts.
    pub mode: Option<TlsMode>,
    /// PEM roots to trust (`verify-full` only); default: the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain and key for mutual TLS; both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// The connection string parsed, with the mode it resolves to.
pub(crate) fn resolve(
    url: &str,
    settings: &PostgresTls,
) -> MetaResult<(tokio_postgres::Config, TlsMode)> {
    let (rest, sslmode) = take_sslmode(url);
    let mut pg: tokio_postgres::Config = rest
        .parse()
        .map_err(|e| MetaError::Backend(format!("invalid PostgreSQL connection string: {e}")))?;
    let from_url = sslmode
        .map(|v| TlsMode::parse(&v).map_err(|e| invalid(format!("sslmode in the URL: {e}"))))
        .transpose()?;
    let has_files = settings.ca_file.is_some()
        || settings.client_cert.is_some()
        || settings.client_key.is_some();
    let mode = match (settings.mode, from_url) {
        (Some(a), Some(b)) if a != b => {
            return Err(invalid(format!(
                "tls = \"{a}\" contradicts sslmode={b} in the URL; keep one of them"
            )));
        }
        (Some(mode), _) | (None, Some(mode)) => mode,
        (None, None) if has_files || !all_local(&pg) => TlsMode::VerifyFull,
        (None, None) => TlsMode::Disable,
    };
    if settings.ca_file.is_some() && mode != TlsMode::VerifyFull {
        return Err(invalid(format!(
            "ca_file is used by tls = \"verify-full\" only (the mode is \"{mode}\")"
        )));
    }
    if settings.client_cert.is_some() != settings.client_key.is_some() {
        return Err(invalid(
            "client_cert and client_key go together (mutual TLS needs both)".into(),
        ));
    }
    if settings.client_cert.is_some() && mode == TlsMode::Disable {
        return Err(invalid(
            "client_cert is given but tls = \"disable\": a client certificate needs TLS".into(),
        ));
    }
    if mode != TlsMode::Disable && pg.get_hosts().iter().any(|h| !matches!(h, Host::Tcp(_))) {
        return Err(invalid(format!(
            "PostgreSQL does not speak TLS over a Unix socket; tls = \"{mode}\" needs a TCP host"
        )));
    }
    // tokio-postgres's default, `prefer`, would fall back to plaintext.
    pg.ssl_mode(if mode == TlsMode::Disable {
        SslMode::Disable
    } else {
        SslMode::Require
    });
    Ok((pg, mode))
}

fn invalid(message: String) -> MetaError {
    MetaError::Backend(format!("PostgreSQL TLS settings: {message}"))
}

/// Whether every host of the connection string is on this machine: a Unix
/// socket, `localhost` or a loopback address (each `hostaddr` too).
fn all_local(pg: &tokio_postgres::Config) -> bool {
    let hosts = pg.get_hosts();
    let addrs = pg.get_hostaddrs();
    (!hosts.is_empty() || !addrs.is_empty())
        && hosts.iter().all(|host| match host {
            Host::Tcp(name) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            Host::Unix(_) => true,
        })
        && addrs.iter().all(IpAddr::is_loopback)
}

/// The connection string without its `sslmode` parameter, and that
/// parameter's value. tokio-postgres knows `disable`, `prefer` and
/// `require` only, and would reject `verify-full`, so the mode is taken out
/// here and applied through the TLS connector. A string this cannot read is
/// returned as it is, for tokio-postgres to report.
fn take_sslmode(url: &str) -> (String, Option<String>) {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), None);
        };
        let mut mode = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| match pair.split_once('=') {
                Some(("sslmode", value)) => {
                    mode = Some(value.to_owned());
                    false
                }
                _ => true,
            })
            .collect();
        let rebuilt = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (rebuilt, mode)
    } else {
        take_sslmode_key_value(url).unwrap_or_else(|| (url.to_owned(), None))
    }
}

/// `take_sslmode` for `key=value key='quoted value'` strings (libpq's
/// syntax: spaces around `=` allowed, backslash escapes). None when the
/// string does not follow it.
fn take_sslmode_key_value(text: &str) -> Option<(String, Option<String>)> {
    let bytes = text.as_bytes();
    let mut kept = String::with_capacity(text.len());
    let mut mode = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &text[start..i];
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if key.is_empty() || bytes.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = Vec::new();
        if bytes.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return None,
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        value.push(*bytes.get(i + 1)?);
                        i += 2;
                    }
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(&b) = bytes.get(i) {
                if b.is_ascii_whitespace() {
                    break;
                }
                if b == b'\\' {
                    value.push(*bytes.get(i + 1)?);
                    i += 2;
                } else {
                    value.push(b);
                    i += 1;
                }
            }
        }
        if key == "sslmode" {
            mode = Some(String::from_utf8(value).ok()?);
        } else {
            if !kept.is_empty() {
                kept.push(' ');
            }
            kept.push_str(&text[start..i]);
        }
    }
    Some((kept, mode))
}

/// The rustls configuration for `mode` (None for `disable`).
pub(crate) fn client_config(
    mode: TlsMode,
    settings: &PostgresTls,
) -> MetaResult<Option<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?;
    let builder = match mode {
        TlsMode::Disable => return Ok(None),
        TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))),
        TlsMode::VerifyFull => builder.with_root_certificates(roots(settings.ca_file.as_deref())?),
    };
    let config = match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certificates(cert)?;
            let key = read_private_key(key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid(format!("client_cert and client_key: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(config))
}

/// The trusted roots: the certificates of `ca_file`, else the system's.
fn roots(ca_file: Option<&Path>) -> MetaResult<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certificates(path)? {
                roots
                    .add(cert)
                    .map_err(|e| invalid(format!("ca_file {}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(invalid(
                    "tls = \"verify-full\" without ca_file, and the system trusts no \
                     certificate authority: set ca_file to the database's CA"
                        .into(),
                ));
            }
        }
    }
    Ok(roots)
}

fn read_pem(path: &Path) -> MetaResult<Vec<u8>> {
    let file = std::fs::File::open(path)
        .map_err(|e| invalid(format!("cannot open {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(PEM_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() as u64 > PEM_FILE_BYTES_MAX {
        return Err(invalid(format!(
            "{} is larger than {PEM_FILE_BYTES_MAX} bytes: not a PEM certificate file",
            path.display()
        )));
    }
    Ok(bytes)
}

fn read_certificates(path: &Path) -> MetaResult<Vec<CertificateDer<'static>>> {
    let pem = read_pem(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> MetaResult<PrivateKeyDer<'static>> {
    let pem = read_pem(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| invalid(format!("{}: {e}", path.display())))?
        .ok_or_else(|| invalid(format!("{} holds no PEM private key", path.display())))
}

/// `require`: any certificate is accepted, but the handshake's signatures
/// are still checked (the server must hold the key of the certificate it
/// sent), so the session is encrypted to whoever answered.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mode(url: &str, settings: &PostgresTls) -> Result<TlsMode, String> {
        resolve(url, settings)
            .map(|(_, m)| m)
            .map_err(|e| e.to_string())
    }

    fn with_mode(mode: TlsMode) -> PostgresTls {
        PostgresTls {
            mode: Some(mode),
            ..PostgresTls::default()
        }
    }

    #[test]
    fn loopback_defaults_to_disable_and_anything_else_to_verify_full() {
        let none = PostgresTls::default();
        for local in [
            "postgres://nuage@127.0.0.1:5432/db",
            "postgres://nuage@localhost/db",
            "postgres://nuage@[::1]:5432/db",
            "host=/var/run/postgresql dbname=db",
            "host=127.0.0.2,localhost user=nuage",
        ] {
            assert_eq!(mode(local, &none), Ok(TlsMode::Disable), "{local}");
        }
        for remote in [
            "postgres://nuage@db.example.eu/db",
            "postgres://nuage@10.0.0.5/db",
            "host=127.0.0.1,db.example.eu user=nuage",
            "host=localhost hostaddr=192.0.2.7 user=nuage",
        ] {
            assert_eq!(mode(remote, &none), Ok(TlsMode::VerifyFull), "{remote}");
        }
        // A CA file alone asks for verification, on loopback too.
        let ca = PostgresTls {
            ca_file: Some("/ca.pem".into()),
            ..PostgresTls::default()
        };
        assert_eq!(
            mode("postgres://nuage@127.0.0.1/db", &ca),
            Ok(TlsMode::VerifyFull)
        );
        // The explicit setting wins over the default.
        assert_eq!(
            mode(
                "postgres://nuage@db.example.eu/db",
                &with_mode(TlsMode::Disable)
            ),
            Ok(TlsMode::Disable)
        );
    }

    #[test]
    fn sslmode_in_the_url_is_honoured_and_conflicts_are_refused() {
        let none = PostgresTls::default();
        let (pg, m) = resolve(
            "postgres://nuage@127.0.0.1/db?application_name=n&sslmode=verify-full",
            &none,
        )
        .unwrap();
        assert_eq!(m, TlsMode::VerifyFull);
        assert_eq!(pg.get_application_name(), Some("n"));
        assert_eq!(pg.get_ssl_mode(), SslMode::Require);
        let (pg, m) = resolve(
            "host=db.example.eu sslmode = 'disable' dbname='my db'",
            &none,
        )
        .unwrap();
        assert_eq!(m, TlsMode::Disable);
        assert_eq!(pg.get_dbname(), Some("my db"));
        assert_eq!(pg.get_ssl_mode(), SslMode::Disable);
        assert_eq!(
            mode(
                "postgres://h/db?sslmode=require",
                &with_mode(TlsMode::Require)
            ),
            Ok(TlsMode::Require)
        );
        for (url, settings, expected) in [
            (
                "postgres://h/db?sslmode=disable",
                with_mode(TlsMode::VerifyFull),
                "contradicts",
            ),
            ("postgres://h/db?sslmode=prefer", none.clone(), "plaintext"),
            ("host=h sslmode=allow", none.clone(), "plaintext"),
            (
                "postgres://h/db?sslmode=verify-ca",
                none.clone(),
                "any host",
            ),
            ("postgres://h/db?sslmode=bogus", none.clone(), "unknown"),
        ] {
            let error = mode(url, &settings).unwrap_err();
            assert!(error.contains(expected), "{url}: {error}");
        }
    }

    #[test]
    fn inconsistent_file_settings_are_refused() {
        let cert_only = PostgresTls {
            client_cert: Some("/c".into()),
            ..PostgresTls::default()
        };
        assert!(
            mode("postgres://db.example.eu/d", &cert_only)
                .unwrap_err()
                .contains("go together")
        );
        let ca_with_require = PostgresTls {
            mode: Some(TlsMode::Require),
            ca_file: Some("/ca".into()),
            ..PostgresTls::default()
        };
        assert!(
            mode("postgres://db.example.eu/d", &ca_with_require)
                .unwrap_err()
                .contains("verify-full")
        );
        let client_with_disable = PostgresTls {
            mode: Some(TlsMode::Disable),
            client_cert: Some("/c".into()),
            client_key: Some("/k".into()),
            ..PostgresTls::default()
        };
        assert!(
            mode("postgres://db.example.eu/d", &client_with_disable)
                .unwrap_err()
                .contains("needs TLS")
        );
        assert!(
            mode(
                "host=/run/postgresql dbname=d",
                &with_mode(TlsMode::VerifyFull)
            )
            .unwrap_err()
            .contains("Unix socket")
        );
    }

    #[test]
    fn key_value_strings_keep_everything_but_sslmode() {
        assert_eq!(
            take_sslmode("host=h  sslmode=require user='a b\\'c'"),
            (
                "host=h user='a b\\'c'".to_owned(),
                Some("require".to_owned())
            )
        );
        assert_eq!(
            take_sslmode("postgres://u@h/db?sslmode=disable"),
            ("postgres://u@h/db".to_owned(), Some("disable".to_owned()))
        );
        // Unreadable: left for tokio-postgres to report.
        assert_eq!(take_sslmode("host='h"), ("host='h".to_owned(), None));
    }
}
