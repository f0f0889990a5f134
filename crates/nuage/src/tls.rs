//! TLS through rustls: a certificate and key from files, or a self-signed pair
//! generated once and kept in the data directory.

use crate::config::TlsSource;
use anyhow::Context as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

/// Where a generated self-signed certificate lives, under the data directory
/// (`nuage admin` trusts it for https:// when pointed at the same directory).
pub const SELF_SIGNED_DIR: &str = "tls";
pub const SELF_SIGNED_CERT_FILE: &str = "self-signed.crt";

pub fn server_config(
    source: &TlsSource,
    data_dir: &Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (cert_path, key_path) = match source {
        TlsSource::Files {
            certificate,
            private_key,
        } => (certificate.clone(), private_key.clone()),
        TlsSource::SelfSigned => {
            let dir = data_dir.join(SELF_SIGNED_DIR);
            std::fs::create_dir_all(&dir)?;
            let cert = dir.join(SELF_SIGNED_CERT_FILE);
            let key = dir.join("self-signed.key");
            if !cert.exists() || !key.exists() {
                let generated = rcgen::generate_simple_self_signed(vec![
                    "localhost".into(),
                    "127.0.0.1".into(),
                    "::1".into(),
                ])?;
                write_private(&key, generated.key_pair.serialize_pem().as_bytes())?;
                std::fs::write(&cert, generated.cert.pem())?;
                eprintln!(
                    "nuage: generated a self-signed TLS certificate at {}",
                    cert.display()
                );
            }
            (cert, key)
        }
    };
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(&cert_path)
            .with_context(|| format!("cannot open {}", cert_path.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(&key_path)
            .with_context(|| format!("cannot open {}", key_path.display()))?,
    ))?
    .with_context(|| format!("no private key in {}", key_path.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
