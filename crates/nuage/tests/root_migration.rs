//! `nuage root-of-trust` against the real binary: a data directory written
//! under the development key file moves into a SoftHSM2 token, and a root key
//! rotates, each with the server stopped; every SSE-S3 and SSE-KMS object
//! reads back identical afterwards, nothing stays under the old root, and the
//! old root key file is gone. (SoftHSM2 and the aws CLI come from
//! scripts/install-test-deps.sh.)
#![allow(clippy::unwrap_used, clippy::panic, clippy::missing_panics_doc)]
mod common;

use aws_sdk_s3::types::ServerSideEncryption;
use common::Server;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TOKEN_LABEL: &str = "nuage-test";
const USER_PIN: &str = "1234";
const SO_PIN: &str = "5678";
/// How long a start that must fail may take before the test gives up on it.
const FAILED_START_TIMEOUT: Duration = Duration::from_secs(60);
const MODULE_CANDIDATES: [&str; 3] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
];

/// A SoftHSM2 token of its own, and the configuration files of the test.
struct Setup {
    dir: tempfile::TempDir,
    conf: PathBuf,
    module: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let module = MODULE_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .unwrap_or_else(|| {
                panic!("SoftHSM2 is not installed: run scripts/install-test-deps.sh")
            });
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let output = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", TOKEN_LABEL])
            .args(["--pin", USER_PIN, "--so-pin", SO_PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(output.status.success(), "softhsm2-util --init-token failed");
        let pin = dir.path().join("hsm.pin");
        std::fs::write(&pin, format!("{USER_PIN}\n")).unwrap();
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
        Self { dir, conf, module }
    }

    fn env(&self) -> [(&'static str, &OsStr); 1] {
        [("SOFTHSM2_CONF", self.conf.as_os_str())]
    }

    /// `[root_of_trust] kind = "file"`.
    fn file_config(&self) -> PathBuf {
        let path = self.dir.path().join("file.toml");
        std::fs::write(&path, "[root_of_trust]\nkind = \"file\"\n").unwrap();
        path
    }

    /// The token's key `key_label`.
    fn hsm_config(&self, key_label: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{key_label}.toml"));
        std::fs::write(
            &path,
            format!(
                "[root_of_trust]\nkind = \"pkcs11\"\nmodule = \"{}\"\ntoken_label = \"{TOKEN_LABEL}\"\n\
                 pin_file = \"{}\"\nkey_label = \"{key_label}\"\n",
                self.module.display(),
                self.dir.path().join("hsm.pin").display()
            ),
        )
        .unwrap();
        path
    }

    /// `nuage root-of-trust ARGS`.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nuage"))
            .arg("root-of-trust")
            .args(args)
            .envs(self.env())
            .env("NUAGE_LOG", "warn")
            .output()
            .unwrap()
    }

    /// `nuage root-of-trust ARGS`, which must succeed; its standard output.
    fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "nuage root-of-trust {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

/// What the test stored, to read back.
struct Stored {
    bucket: &'static str,
    objects: Vec<(&'static str, Vec<u8>, ServerSideEncryption)>,
}

fn kms(server: &Server, home: &Path, args: &[&str]) -> String {
    let mut all = vec!["kms"];
    all.extend_from_slice(args);
    common::aws_ok(server, home, &all)
}

/// SSE-S3 objects (one small, one of several chunks) and SSE-KMS objects
/// under a customer key with two material versions.
async fn store_objects(server: &Server, home: &Path) -> Stored {
    let s3 = server.client();
    let bucket = "migrated";
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let key_id = kms(
        server,
        home,
        &["create-key", "--query", "KeyMetadata.KeyId"],
    );
    let mut objects = vec![
        (
            "s3-small",
            b"sealed under the tenant key".to_vec(),
            ServerSideEncryption::Aes256,
        ),
        (
            "s3-large",
            common::random_bytes(300_000, 1),
            ServerSideEncryption::Aes256,
        ),
        (
            "kms-1",
            common::random_bytes(70_000, 2),
            ServerSideEncryption::AwsKms,
        ),
    ];
    for (name, body, sse) in &objects {
        let mut request = s3
            .put_object()
            .bucket(bucket)
            .key(*name)
            .body(body.clone().into());
        if *sse == ServerSideEncryption::AwsKms {
            request = request
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(&key_id);
        }
        request.send().await.unwrap();
    }
    // A second material version, and an object under it.
    kms(server, home, &["rotate-key-on-demand", "--key-id", &key_id]);
    let body = common::random_bytes(5_000, 3);
    s3.put_object()
        .bucket(bucket)
        .key("kms-2")
        .body(body.clone().into())
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(&key_id)
        .send()
        .await
        .unwrap();
    objects.push(("kms-2", body, ServerSideEncryption::AwsKms));
    Stored { bucket, objects }
}

async fn read_back(server: &Server, stored: &Stored) {
    let s3 = server.client();
    for (name, body, sse) in &stored.objects {
        let got = s3
            .get_object()
            .bucket(stored.bucket)
            .key(*name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {name}: {e:?}"));
        assert_eq!(got.server_side_encryption(), Some(sse), "{name}");
        assert_eq!(&got.body.collect().await.unwrap().to_vec(), body, "{name}");
    }
}

/// Runs `nuage serve` expecting it to refuse to start; its standard error.
fn failed_start(data_dir: &Path, setup: &Setup, config: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .envs(setup.env())
        .env("NUAGE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > FAILED_START_TIMEOUT {
            let _ = child.kill();
            panic!("nuage serve kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    stderr
}

#[tokio::test]
async fn a_key_file_data_directory_moves_into_the_hsm() {
    let setup = Setup::new();
    let (file, hsm) = (setup.file_config(), setup.hsm_config("nuage-root"));
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let home = tempfile::tempdir().unwrap();

    let mut server = Server::start_in(data.path(), &[]);
    let stored = store_objects(&server, home.path()).await;
    let migrate = [
        "migrate",
        "--data-dir",
        data_dir,
        "--from-config",
        file.to_str().unwrap(),
        "--to-config",
        hsm.to_str().unwrap(),
    ];
    // Refused while the server runs, and nothing changes.
    let running = setup.cli(&migrate);
    let stderr = String::from_utf8_lossy(&running.stderr);
    assert!(!running.status.success());
    assert!(stderr.contains("stop it first"), "{stderr}");
    assert!(data.path().join("root.key").exists());
    server.stop();

    let before = setup.cli_ok(&[
        "status",
        "--data-dir",
        data_dir,
        "--config",
        file.to_str().unwrap(),
    ]);
    assert!(
        before.contains("not under the configured root: 0"),
        "{before}"
    );

    // A from-config naming a key that is not there: refused, nothing changed
    // (no marker left to block the server, no key generated for it).
    let wrong = setup.hsm_config("not-the-root");
    let refused = setup.cli(&[
        "migrate",
        "--data-dir",
        data_dir,
        "--from-config",
        wrong.to_str().unwrap(),
        "--to-config",
        hsm.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("holds no AES key labelled `not-the-root`"),
        "{stderr}"
    );
    assert!(!data.path().join("root-of-trust.migrating").exists());
    assert!(data.path().join("root.key").exists());

    let out = setup.cli_ok(&migrate);
    // One tenant (the default one), one KMS key of two material versions.
    assert!(out.contains("tenant keys: 1 rewrapped"), "{out}");
    assert!(out.contains("KMS key materials: 2 rewrapped"), "{out}");
    // The server's audit checkpoint signing key, sealed by the root too.
    assert!(out.contains("audit.signing-key: 1 rewrapped"), "{out}");
    assert!(out.contains("removed the old root key"), "{out}");
    assert!(!data.path().join("root.key").exists());
    assert!(!data.path().join("root-of-trust.migrating").exists());
    let status = setup.cli_ok(&[
        "status",
        "--data-dir",
        data_dir,
        "--config",
        hsm.to_str().unwrap(),
    ]);
    assert!(
        status.contains("not under the configured root: 0"),
        "{status}"
    );
    assert!(status.contains("tenant keys: 1 under root"), "{status}");

    // Safe to run again: nothing left to move.
    let again = setup.cli_ok(&migrate);
    assert!(
        again.contains("every stored key is already under the new root"),
        "{again}"
    );
    assert!(!again.contains("rewrapped"), "{again}");

    let server = Server::start_in_with_env(
        data.path(),
        &["--config", hsm.to_str().unwrap()],
        &setup.env(),
    );
    read_back(&server, &stored).await;
    // Still no key file: the HSM root writes none.
    assert!(!data.path().join("root.key").exists());
}

#[tokio::test]
async fn the_root_key_file_rotates_and_an_unfinished_rotation_blocks_start_up() {
    let setup = Setup::new();
    let file = setup.file_config();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let home = tempfile::tempdir().unwrap();

    let mut server = Server::start_in(data.path(), &[]);
    let stored = store_objects(&server, home.path()).await;
    server.stop();
    let old_key = std::fs::read(data.path().join("root.key")).unwrap();

    let out = setup.cli_ok(&["rotate", "--data-dir", data_dir]);
    assert!(out.contains("tenant keys: 1 rewrapped"), "{out}");
    assert!(out.contains("KMS key materials: 2 rewrapped"), "{out}");
    let new_key = std::fs::read(data.path().join("root.key")).unwrap();
    assert_eq!(new_key.len(), 32);
    assert_ne!(new_key, old_key, "a new root key");
    assert!(!data.path().join("root.key.next").exists());
    let mode = std::fs::metadata(data.path().join("root.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let status = setup.cli_ok(&[
        "status",
        "--data-dir",
        data_dir,
        "--config",
        file.to_str().unwrap(),
    ]);
    assert!(
        status.contains("not under the configured root: 0"),
        "{status}"
    );

    // An unfinished migration (its marker left behind) stops the server.
    std::fs::write(data.path().join("root-of-trust.migrating"), "interrupted\n").unwrap();
    let stderr = failed_start(data.path(), &setup, &file);
    assert!(stderr.contains("unfinished"), "{stderr}");
    // Running the command again finishes it (here: one more rotation).
    setup.cli_ok(&["rotate", "--data-dir", data_dir]);
    assert!(!data.path().join("root-of-trust.migrating").exists());

    let server = Server::start_in(data.path(), &[]);
    read_back(&server, &stored).await;
}

#[tokio::test]
async fn an_hsm_root_key_rotates_to_a_new_key_in_the_token() {
    let setup = Setup::new();
    let hsm = setup.hsm_config("nuage-root");
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let home = tempfile::tempdir().unwrap();

    let mut server = Server::start_in_with_env(
        data.path(),
        &["--config", hsm.to_str().unwrap()],
        &setup.env(),
    );
    let stored = store_objects(&server, home.path()).await;
    server.stop();

    let out = setup.cli_ok(&[
        "rotate",
        "--data-dir",
        data_dir,
        "--config",
        hsm.to_str().unwrap(),
        "--destroy-old-key",
    ]);
    assert!(out.contains("tenant keys: 1 rewrapped"), "{out}");
    assert!(out.contains("destroyed the old key `nuage-root`"), "{out}");
    assert!(out.contains("key_label = \"nuage-root-g2\""), "{out}");
    let rotated = setup.hsm_config("nuage-root-g2");
    let status = setup.cli_ok(&[
        "status",
        "--data-dir",
        data_dir,
        "--config",
        rotated.to_str().unwrap(),
    ]);
    assert!(
        status.contains("not under the configured root: 0"),
        "{status}"
    );

    let server = Server::start_in_with_env(
        data.path(),
        &["--config", rotated.to_str().unwrap()],
        &setup.env(),
    );
    read_back(&server, &stored).await;
}
