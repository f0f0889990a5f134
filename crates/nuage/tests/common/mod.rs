//! Test harness: spawns the real `nuage` binary on a temporary data directory
//! and an ephemeral port, and builds AWS SDK clients for it.
#![allow(dead_code, clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod audit;
pub mod ec2;
pub mod kms;
pub mod xks;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a start may take before the test fails (a generous bound, not a sleep).
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

pub struct Server {
    child: Option<Child>,
    pub endpoint: String,
    pub data_dir: PathBuf,
    pub credentials: Credentials,
    /// Everything the server printed on stdout before it was ready.
    pub banner: String,
    _temp: Option<tempfile::TempDir>,
}

fn read_credentials(data_dir: &Path) -> Credentials {
    let text = std::fs::read_to_string(data_dir.join("credentials.toml")).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    let get = |k: &str| value.get(k).and_then(|v| v.as_str()).unwrap().to_owned();
    Credentials {
        access_key_id: get("access_key_id"),
        secret_access_key: get("secret_access_key"),
        region: get("region"),
    }
}

impl Server {
    /// Starts a fresh server on a new temporary data directory.
    pub fn start() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let mut server = Self::start_in(temp.path(), &[]);
        server._temp = Some(temp);
        server
    }

    /// A server some other process started and owns (its endpoint and
    /// data directory, where its administrator's credentials are): dropping
    /// this stops nothing.
    pub fn attach(endpoint: &str, data_dir: &Path) -> Self {
        Self {
            child: None,
            endpoint: endpoint.to_owned(),
            data_dir: data_dir.to_path_buf(),
            credentials: read_credentials(data_dir),
            banner: String::new(),
            _temp: None,
        }
    }

    /// Starts a server on an existing data directory (a restart), with extra flags.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_in_with_env(data_dir, extra, &[])
    }

    /// [`Server::start_in`] with extra environment variables for the process
    /// (for example `SOFTHSM2_CONF`, which only the PKCS#11 module reads).
    pub fn start_in_with_env(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nuage"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("NUAGE_LOG", "warn,s3s::ops=off")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Keep draining so the server never blocks on a full pipe.
                }
            }
        });
        let mut banner = String::new();
        let endpoint = loop {
            let line = rx
                .recv_timeout(START_TIMEOUT)
                .expect("nuage did not report its endpoint in time");
            banner.push_str(&line);
            banner.push('\n');
            if let Some(url) = line.strip_prefix("nuage: S3 endpoint listening on ") {
                break url.trim().to_owned();
            }
        };
        let credentials = read_credentials(data_dir);
        Self {
            child: Some(child),
            endpoint,
            data_dir: data_dir.to_path_buf(),
            credentials,
            banner,
            _temp: None,
        }
    }

    /// Kills the process abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process gracefully (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Stops the process and starts it again on the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        let temp = self._temp.take();
        let mut next = Self::start_in(&self.data_dir, &[]);
        next._temp = temp;
        *self = next;
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        self.client_with(|b| b)
    }

    pub fn client_with(
        &self,
        f: impl FnOnce(aws_sdk_s3::config::Builder) -> aws_sdk_s3::config::Builder,
    ) -> aws_sdk_s3::Client {
        let creds = aws_credential_types::Credentials::new(
            &self.credentials.access_key_id,
            &self.credentials.secret_access_key,
            None,
            None,
            "nuage-test",
        );
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_sdk_s3::config::Region::new(
                self.credentials.region.clone(),
            ))
            .credentials_provider(creds)
            .force_path_style(true);
        aws_sdk_s3::Client::from_conf(f(config).build())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Incompressible test data, reproducible from a seed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = vec![0u8; len];
    rng.fill_bytes(&mut out);
    out
}

/// A unique bucket name for a test.
pub fn bucket_name(test: &str) -> String {
    format!("{}-{}", test.replace('_', "-"), &nuage_random_suffix())
}

fn nuage_random_suffix() -> String {
    use rand::Rng;
    let n: u32 = rand::thread_rng().r#gen();
    format!("{n:08x}")
}

/// A raw HTTP/1.1 exchange (no signing): returns the status code, the response
/// headers (names lowercased) and the body. For requests the SDK cannot make,
/// such as anonymous requests and CORS preflights.
pub fn raw_request(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let authority = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {authority}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

/// The value of a header in a [`raw_request`] response.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The aws CLI that `scripts/install-test-deps.sh` installs: `NUAGE_AWS_CLI`,
/// else `$NUAGE_TOOLS_DIR/venv/bin/aws` (default tools dir `~/.cache/nuage-tools`).
pub fn aws_cli() -> PathBuf {
    if let Some(path) = std::env::var_os("NUAGE_AWS_CLI") {
        return PathBuf::from(path);
    }
    let tools = std::env::var_os("NUAGE_TOOLS_DIR").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            Path::new(&home).join(".cache/nuage-tools")
        },
        PathBuf::from,
    );
    let path = tools.join("venv/bin/aws");
    assert!(
        path.exists(),
        "the aws CLI is not installed at {}: run scripts/install-test-deps.sh (or set NUAGE_AWS_CLI)",
        path.display()
    );
    path
}

/// `aws ARGS` (with `--endpoint-url`) signed with the given access key,
/// with a private configuration under `home`; the raw process output.
pub fn aws_as(
    server: &Server,
    home: &Path,
    (access_key_id, secret_access_key): (&str, &str),
    args: &[&str],
) -> std::process::Output {
    std::fs::write(
        home.join("aws-config"),
        // aws CLI v1 would otherwise fetch any argument that looks like a
        // URL (an XKS proxy endpoint) and pass its content instead.
        format!(
            "[default]\nregion = {}\ncli_follow_urlparam = false\n",
            server.credentials.region
        ),
    )
    .unwrap();
    Command::new(aws_cli())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("absent"))
        .env("AWS_ACCESS_KEY_ID", access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret_access_key)
        .env("AWS_DEFAULT_REGION", &server.credentials.region)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_PAGER", "")
        .args(["--endpoint-url", &server.endpoint])
        .args(args)
        .output()
        .unwrap()
}

/// [`aws_as`] as the server's administrator.
pub fn aws(server: &Server, home: &Path, args: &[&str]) -> std::process::Output {
    let credentials = &server.credentials;
    aws_as(
        server,
        home,
        (&credentials.access_key_id, &credentials.secret_access_key),
        args,
    )
}

/// `aws --output text ARGS` as the administrator, which must succeed; its
/// trimmed standard output.
#[track_caller]
pub fn aws_ok(server: &Server, home: &Path, args: &[&str]) -> String {
    let mut all = vec!["--output", "text"];
    all.extend_from_slice(args);
    let output = aws(server, home, &all);
    assert!(
        output.status.success(),
        "aws {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// `aws ARGS` as the administrator, which must fail; its standard error.
#[track_caller]
pub fn aws_err(server: &Server, home: &Path, args: &[&str]) -> String {
    let output = aws(server, home, args);
    assert!(
        !output.status.success(),
        "aws {args:?} should have failed, printed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

/// The S3 error code, HTTP status and message of a failed SDK call.
#[track_caller]
pub fn failure_with_message<T: std::fmt::Debug, E>(
    result: Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> (String, u16, String)
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
{
    use aws_sdk_s3::error::ProvideErrorMetadata as _;
    let err = result.expect_err("the call should have been refused");
    let status = err.raw_response().map_or(0, |r| r.status().as_u16());
    (
        err.code().unwrap_or_default().to_owned(),
        status,
        err.message().unwrap_or_default().to_owned(),
    )
}

/// The S3 error code and HTTP status of a failed SDK call.
#[track_caller]
pub fn failure<T: std::fmt::Debug, E>(
    result: Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> (String, u16)
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
{
    let (code, status, _) = failure_with_message(result);
    (code, status)
}

/// The whole body of an object (the request must succeed).
pub async fn get_bytes(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .to_vec()
}
