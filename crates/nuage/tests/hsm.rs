//! The production root of trust through the real binary: `nuage serve` with
//! `[root_of_trust] kind = "pkcs11"` on a SoftHSM2 token made for each test
//! (scripts/install-test-deps.sh installs softhsm2). Objects survive restarts,
//! no root key file is ever written, and a bad PIN, token or module stops
//! start-up with a message that names it.
#![allow(clippy::unwrap_used, clippy::panic)]
mod common;

use common::Server;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

/// A SoftHSM2 token of its own in a temporary directory.
struct SoftHsm {
    dir: tempfile::TempDir,
    conf: PathBuf,
    module: PathBuf,
}

impl SoftHsm {
    fn new() -> Self {
        let module = MODULE_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .unwrap_or_else(|| {
                panic!(
                    "SoftHSM2 is not installed (no {}): run scripts/install-test-deps.sh",
                    MODULE_CANDIDATES.join(", ")
                )
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
            .unwrap_or_else(|error| {
                panic!("cannot run softhsm2-util ({error}): run scripts/install-test-deps.sh")
            });
        assert!(
            output.status.success(),
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self { dir, conf, module }
    }

    fn env(&self) -> [(&'static str, &OsStr); 1] {
        [("SOFTHSM2_CONF", self.conf.as_os_str())]
    }

    /// A configuration file for this token; the PIN file holds `pin` with
    /// `mode`.
    fn config(&self, name: &str, token_label: &str, pin: &str, mode: u32) -> PathBuf {
        let pin_file = self.dir.path().join(format!("{name}.pin"));
        std::fs::write(&pin_file, format!("{pin}\n")).unwrap();
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(mode)).unwrap();
        self.config_with(name, &self.module, token_label, &pin_file)
    }

    fn config_with(
        &self,
        name: &str,
        module: &Path,
        token_label: &str,
        pin_file: &Path,
    ) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[root_of_trust]\nkind = \"pkcs11\"\nmodule = \"{}\"\ntoken_label = \"{token_label}\"\n\
                 pin_file = \"{}\"\n",
                module.display(),
                pin_file.display()
            ),
        )
        .unwrap();
        path
    }
}

fn start(data_dir: &Path, hsm: &SoftHsm, config: &Path) -> Server {
    Server::start_in_with_env(
        data_dir,
        &["--config", config.to_str().unwrap()],
        &hsm.env(),
    )
}

#[tokio::test]
async fn objects_survive_restarts_under_an_hsm_root() {
    let hsm = SoftHsm::new();
    let config = hsm.config("good", TOKEN_LABEL, USER_PIN, 0o600);
    let data = tempfile::tempdir().unwrap();
    let small = b"sealed under a key that never leaves the HSM".to_vec();
    let large = common::random_bytes(300_000, 7);

    let mut server = start(data.path(), &hsm, &config);
    let s3 = server.client();
    s3.create_bucket().bucket("vault").send().await.unwrap();
    for (key, body) in [("small", &small), ("large", &large)] {
        s3.put_object()
            .bucket("vault")
            .key(key)
            .body(body.clone().into())
            .send()
            .await
            .unwrap();
    }
    for (key, body) in [("small", &small), ("large", &large)] {
        let got = s3
            .get_object()
            .bucket("vault")
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(&got.body.collect().await.unwrap().to_vec(), body);
    }
    server.stop();

    // A restart opens the same root key in the token and reads everything.
    let mut server = start(data.path(), &hsm, &config);
    let s3 = server.client();
    for (key, body) in [("small", &small), ("large", &large)] {
        let got = s3
            .get_object()
            .bucket("vault")
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(&got.body.collect().await.unwrap().to_vec(), body, "{key}");
    }
    // New tenant data after the restart too.
    s3.put_object()
        .bucket("vault")
        .key("after")
        .body(small.clone().into())
        .send()
        .await
        .unwrap();
    server.stop();

    // The root key never reached the disk: no development key file.
    assert!(!data.path().join("root.key").exists());
    let names: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|name| !name.contains("root")), "{names:?}");
}

/// Runs `nuage serve` expecting it to fail; returns its standard error.
fn failed_start(hsm: &SoftHsm, config: &Path) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data.path())
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .envs(hsm.env())
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
            panic!("nuage serve with {} kept running", config.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        !data.path().join("root.key").exists(),
        "no fallback to a key file"
    );
    stderr
}

#[test]
fn a_wrong_pin_token_module_or_pin_file_stops_start_up() {
    let hsm = SoftHsm::new();

    let stderr = failed_start(&hsm, &hsm.config("wrong-pin", TOKEN_LABEL, "0000", 0o600));
    assert!(stderr.contains("refused the PIN"), "{stderr}");

    let stderr = failed_start(&hsm, &hsm.config("no-token", "elsewhere", USER_PIN, 0o600));
    assert!(
        stderr.contains("no PKCS#11 token labelled `elsewhere`"),
        "{stderr}"
    );

    let pin_file = hsm.dir.path().join("good.pin");
    std::fs::write(&pin_file, USER_PIN).unwrap();
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let missing = Path::new("/nonexistent/libpkcs11.so");
    let stderr = failed_start(
        &hsm,
        &hsm.config_with("no-module", missing, TOKEN_LABEL, &pin_file),
    );
    assert!(
        stderr.contains("cannot load the PKCS#11 module /nonexistent/libpkcs11.so"),
        "{stderr}"
    );

    let stderr = failed_start(
        &hsm,
        &hsm.config("readable-pin", TOKEN_LABEL, USER_PIN, 0o644),
    );
    assert!(stderr.contains("chmod 600"), "{stderr}");
}
