//! `nuage serve` with its PostgreSQL metadata over TLS, against the
//! TLS-only throwaway PostgreSQL of `nuage-testsupport` (a certificate for
//! 127.0.0.1 and localhost from a throwaway CA; plaintext refused by the
//! server): with `tls = "verify-full"` and that CA the gateway starts and
//! serves objects; with another CA it refuses to start and says why; a URL
//! naming a host that is not loopback, with no TLS settings, is verified
//! against the system's roots (which do not know the throwaway CA), so
//! the gateway refuses to start rather than fall back to plaintext; and
//! plaintext is attempted only when `tls = "disable"` is written out.
//!
//! The non-loopback name is reached through `hostaddr=127.0.0.1`: nothing
//! leaves this machine.
//!
//! Without PostgreSQL installed the tests are skipped with a notice, except
//! in CI (`CI=true`), where they fail.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use nuage_testsupport::postgres::{TlsPostgresServer, tls_server};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a gateway that cannot reach its database may take to give up
/// (its connect timeout is 10 s): a bound, not a sleep.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(60);

fn config_file(dir: &Path, metadata: &str) -> PathBuf {
    let path = dir.join("nuage.toml");
    std::fs::write(
        &path,
        format!("[metadata]\nbackend = \"postgres\"\npool_size = 4\n{metadata}\n"),
    )
    .unwrap();
    path
}

/// The database's name in a URL from `create_database`.
fn dbname(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// Runs `nuage serve` expecting it to fail at start; returns its stderr.
fn refused_start(data_dir: &Path, config: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("NUAGE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + REFUSAL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nuage serve neither started nor gave up within {REFUSAL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        !status.success(),
        "nuage serve exited successfully: {stderr}"
    );
    eprintln!("nuage serve refused to start, as expected: {stderr}");
    stderr
}

fn tls() -> Option<&'static TlsPostgresServer> {
    tls_server()
}

#[tokio::test]
async fn a_gateway_serves_with_its_metadata_over_verified_tls() {
    let Some(tls) = tls() else {
        return;
    };
    let url = tls.server().create_database();
    let root = tempfile::tempdir().unwrap();
    let config = config_file(
        root.path(),
        &format!(
            "url = \"{url}\"\ntls = \"verify-full\"\nca_file = \"{}\"",
            tls.ca_file().display()
        ),
    );
    let server = common::Server::start_in(
        &root.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let s3 = server.client();
    s3.create_bucket().bucket("over-tls").send().await.unwrap();
    s3.put_object()
        .bucket("over-tls")
        .key("k")
        .body(b"sealed in transit".to_vec().into())
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("over-tls")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"sealed in transit"
    );
}

#[test]
fn a_gateway_refuses_to_start_on_an_unverified_database() {
    let Some(tls) = tls() else {
        return;
    };
    let url = tls.server().create_database();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    // The wrong CA: a certificate error, and the mode, on stderr.
    let wrong_ca = config_file(
        root.path(),
        &format!(
            "url = \"{url}\"\ntls = \"verify-full\"\nca_file = \"{}\"",
            tls.other_ca_file().display()
        ),
    );
    let stderr = refused_start(&data, &wrong_ca);
    assert!(
        stderr.contains("invalid peer certificate") && stderr.contains("verify-full"),
        "{stderr}"
    );
    // A host name off this machine and no TLS settings: verify-full against
    // the system's roots, which do not know the throwaway CA.
    let remote_name = format!(
        "host=metadata.nuage.test hostaddr=127.0.0.1 port={} user=nuage dbname={}",
        tls.server().port(),
        dbname(&url)
    );
    // (A machine whose store is empty refuses for that reason instead.)
    let no_settings = config_file(root.path(), &format!("url = \"{remote_name}\""));
    let stderr = refused_start(&data, &no_settings);
    assert!(
        (stderr.contains("invalid peer certificate") && stderr.contains("verify-full"))
            || stderr.contains("the system trusts no certificate authority"),
        "{stderr}"
    );
    // Plaintext only when written out; this server refuses it.
    let plaintext = config_file(
        root.path(),
        &format!("url = \"{remote_name}\"\ntls = \"disable\""),
    );
    let stderr = refused_start(&data, &plaintext);
    assert!(stderr.contains("no encryption"), "{stderr}");
    // Settings that contradict each other stop the gateway before it
    // connects.
    let conflict = config_file(
        root.path(),
        &format!("url = \"{url}?sslmode=require\"\ntls = \"disable\""),
    );
    let stderr = refused_start(&data, &conflict);
    assert!(stderr.contains("contradicts"), "{stderr}");
}
