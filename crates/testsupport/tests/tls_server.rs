//! The TLS-only PostgreSQL fixture, checked with libpq's own client
//! (`psql`), so that the fixture is known good independently of the Rust
//! client the metadata store's tests exercise against it: plaintext is
//! refused by the server, `verify-full` against the fixture's CA connects
//! over TLS, the unrelated CA does not verify, and the `cert` role needs
//! its client certificate.
//!
//! Skipped (with a notice) where PostgreSQL is not installed, failed in CI.
#![allow(clippy::unwrap_used)]

use nuage_testsupport::postgres::{MTLS_USER, TlsPostgresServer, USER, tls_server};
use std::path::Path;

/// Runs `psql` with `conninfo`, asking whether this session uses TLS;
/// Ok(stdout) or Err(stderr).
fn psql(tls: &TlsPostgresServer, conninfo: &str) -> Result<String, String> {
    let output = std::process::Command::new(tls.server().bin_dir().join("psql"))
        .args(["-X", "-tA", "-c"])
        .arg("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .arg(conninfo)
        // Nothing from the environment or the home directory.
        .env_remove("PGSSLMODE")
        .env("PGSSLCERT", "/nonexistent")
        .env("PGSSLKEY", "/nonexistent")
        .output()
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn conninfo(tls: &TlsPostgresServer, user: &str, dbname: &str, rest: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={user} dbname={dbname} {rest}",
        tls.server().port()
    )
}

fn dbname(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

fn root(path: &Path) -> String {
    format!("sslrootcert={}", path.display())
}

#[test]
fn the_tls_server_accepts_verified_tls_only() {
    let Some(tls) = tls_server() else {
        return;
    };
    let db = dbname(&tls.server().create_database());
    let verified = psql(
        tls,
        &conninfo(
            tls,
            USER,
            &db,
            &format!("sslmode=verify-full {}", root(&tls.ca_file())),
        ),
    );
    assert_eq!(verified.as_deref(), Ok("t"), "{verified:?}");
    // By name too: the certificate carries `localhost`.
    let by_name = psql(
        tls,
        &format!(
            "host=localhost port={} user={USER} dbname={db} sslmode=verify-full {}",
            tls.server().port(),
            root(&tls.ca_file())
        ),
    );
    assert_eq!(by_name.as_deref(), Ok("t"), "{by_name:?}");
    let plaintext = psql(tls, &conninfo(tls, USER, &db, "sslmode=disable")).unwrap_err();
    assert!(plaintext.contains("no encryption"), "{plaintext}");
    let other_ca = psql(
        tls,
        &conninfo(
            tls,
            USER,
            &db,
            &format!("sslmode=verify-full {}", root(&tls.other_ca_file())),
        ),
    )
    .unwrap_err();
    assert!(other_ca.contains("certificate verify failed"), "{other_ca}");
}

#[test]
fn the_cert_role_needs_its_client_certificate() {
    let Some(tls) = tls_server() else {
        return;
    };
    let db = dbname(&tls.server().create_database());
    let ca = root(&tls.ca_file());
    let without = psql(
        tls,
        &conninfo(tls, MTLS_USER, &db, &format!("sslmode=verify-full {ca}")),
    )
    .unwrap_err();
    assert!(without.contains("certificate"), "{without}");
    let with = psql(
        tls,
        &conninfo(
            tls,
            MTLS_USER,
            &db,
            &format!(
                "sslmode=verify-full {ca} sslcert={} sslkey={}",
                tls.client_cert_file().display(),
                tls.client_key_file().display()
            ),
        ),
    );
    assert_eq!(with.as_deref(), Ok("t"), "{with:?}");
}
