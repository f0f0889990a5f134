//! A tenant's `nuage xks-proxy` for tests: a SoftHSM2 token made for the test
//! (scripts/install-test-deps.sh installs softhsm2), the proxy directory
//! `init` creates, the `key` commands, and the `serve` process.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const USER_PIN: &str = "1234";
const SO_PIN: &str = "5678";
/// How long the proxy may take to start (a bound, not a sleep).
const START_TIMEOUT: Duration = Duration::from_secs(60);

const MODULE_CANDIDATES: [&str; 3] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
];

/// A token in a temporary directory, its PIN file, and the proxy directory.
pub struct XksSetup {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub module: PathBuf,
    pub token_label: String,
}

/// What `nuage xks-proxy init` printed: the spec's configuration JSON.
pub struct XksCredential {
    pub uri_path: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl XksSetup {
    /// A fresh SoftHSM2 token labelled `token_label`.
    pub fn new(token_label: &str) -> Self {
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
            .args(["--init-token", "--free", "--label", token_label])
            .args(["--pin", USER_PIN, "--so-pin", SO_PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("softhsm2-util (run scripts/install-test-deps.sh)");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let pin = dir.path().join("token.pin");
        std::fs::write(&pin, format!("{USER_PIN}\n")).unwrap();
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
        Self {
            dir,
            conf,
            module,
            token_label: token_label.to_owned(),
        }
    }

    pub fn proxy_dir(&self) -> PathBuf {
        self.dir.path().join("proxy")
    }

    pub fn pin_file(&self) -> PathBuf {
        self.dir.path().join("token.pin")
    }

    /// The certificate `init` generated, which Nuage must trust.
    pub fn certificate(&self) -> PathBuf {
        self.proxy_dir().join("tls/xks-proxy.crt")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nuage"));
        command
            .arg("xks-proxy")
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .env("NUAGE_LOG", "warn");
        command
    }

    /// Runs `nuage xks-proxy ARGS...` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `nuage xks-proxy init` on 127.0.0.1, port 0, the default URI path.
    pub fn init(&self) -> XksCredential {
        let dir = self.proxy_dir();
        let pin_file = self.pin_file();
        let output = self.run(&[
            "init",
            "--dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--pkcs11-module",
            self.module.to_str().unwrap(),
            "--token-label",
            &self.token_label,
            "--pin-file",
            pin_file.to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let credential = &printed["XksProxyAuthenticationCredential"];
        XksCredential {
            uri_path: printed["XksProxyUriPath"].as_str().unwrap().to_owned(),
            access_key_id: credential["AccessKeyId"].as_str().unwrap().to_owned(),
            secret_access_key: credential["RawSecretAccessKey"]
                .as_str()
                .unwrap()
                .to_owned(),
        }
    }

    /// Runs `nuage xks-proxy key COMMAND --dir DIR ARGS...`, which must succeed.
    pub fn key(&self, command: &str, args: &[&str]) -> String {
        let dir = self.proxy_dir();
        let mut all = vec!["key", command, "--dir", dir.to_str().unwrap()];
        all.extend_from_slice(args);
        let output = self.run(&all);
        assert!(
            output.status.success(),
            "key {command} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Starts `nuage xks-proxy serve`; returns once it reported its address.
    pub fn serve(&self) -> XksProxy {
        let dir = self.proxy_dir();
        let mut child = self
            .command(&["serve", "--dir", dir.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Keep draining after the test stops listening.
                let _ = lines.send(line);
            }
        });
        let mut proxy = XksProxy {
            child,
            url: String::new(),
        };
        proxy.url = loop {
            let line = received
                .recv_timeout(START_TIMEOUT)
                .expect("the proxy did not report its address in time");
            if let Some(url) = line.strip_prefix("nuage xks-proxy: listening on ") {
                break url.trim().to_owned();
            }
        };
        proxy
    }

    /// Starts Nuage on `DATA/data`, its configuration in `DATA/nuage.toml`
    /// trusting the proxy's self-signed certificate.
    pub fn start_trusting_server(&self, data: &Path) -> super::Server {
        let config = data.join("nuage.toml");
        std::fs::write(
            &config,
            format!(
                "[external_key_stores]\ntrusted_ca_files = [\"{}\"]\n",
                self.certificate().display()
            ),
        )
        .unwrap();
        super::Server::start_in(&data.join("data"), &["--config", config.to_str().unwrap()])
    }

    /// `aws kms create-custom-key-store` for `proxy`, named `on-premises`,
    /// with the `credential` `init` printed: the store's id.
    pub fn create_key_store(
        server: &super::Server,
        home: &Path,
        proxy: &XksProxy,
        credential: &XksCredential,
    ) -> String {
        super::aws_ok(
            server,
            home,
            &[
                "kms",
                "create-custom-key-store",
                "--custom-key-store-name",
                "on-premises",
                "--custom-key-store-type",
                "EXTERNAL_KEY_STORE",
                "--xks-proxy-uri-endpoint",
                &proxy.endpoint(),
                "--xks-proxy-uri-path",
                &credential.uri_path,
                "--xks-proxy-connectivity",
                "PUBLIC_ENDPOINT",
                "--xks-proxy-authentication-credential",
                &format!(
                    "AccessKeyId={},RawSecretAccessKey={}",
                    credential.access_key_id, credential.secret_access_key
                ),
            ],
        )
    }

    /// `aws kms create-key` in the external key store `store_id`, backed by
    /// the proxy's key `xks_key_id`: what `--query QUERY` selects.
    pub fn create_external_key(
        server: &super::Server,
        home: &Path,
        store_id: &str,
        xks_key_id: &str,
        query: &str,
    ) -> String {
        super::aws_ok(
            server,
            home,
            &[
                "kms",
                "create-key",
                "--origin",
                "EXTERNAL_KEY_STORE",
                "--custom-key-store-id",
                store_id,
                "--xks-key-id",
                xks_key_id,
                "--query",
                query,
            ],
        )
    }

    /// The decisions the proxy recorded, one JSON object per line.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        audit_lines(&self.proxy_dir())
    }
}

pub fn audit_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The `serve` process, killed when dropped.
pub struct XksProxy {
    pub child: Child,
    /// `https://127.0.0.1:PORT/PATH/kms/xks/v1`.
    pub url: String,
}

impl XksProxy {
    /// `https://127.0.0.1:PORT`, the `XksProxyUriEndpoint`.
    pub fn endpoint(&self) -> String {
        let after_scheme = self.url.find("://").unwrap() + 3;
        let path = self.url[after_scheme..].find('/').unwrap() + after_scheme;
        self.url[..path].to_owned()
    }
}

impl Drop for XksProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
