//! A throwaway PostgreSQL for the tests of one process.
//!
//! [`server`] starts it on first use: `initdb` into a temporary directory,
//! `postgres` listening on 127.0.0.1 at a free port (its unix socket inside
//! that directory), trust authentication for the user `nuage`. Each test
//! takes its own database from [`PostgresServer::create_database`].
//!
//! PostgreSQL refuses to run as root, and CI runs as root: then every
//! PostgreSQL program runs as the `postgres` system user (Debian's packages
//! create it) through `setpriv`, with the temporary directory given to it.
//!
//! Stopping: a static is never dropped, so the server is tied to the test
//! process another way. A small `sh` guardian starts `postgres` and blocks
//! reading a pipe whose other end only this process holds; when the process
//! exits, however it exits, the pipe closes, and the guardian asks PostgreSQL
//! for a fast shutdown, waits for it and removes the directory.
//!
//! [`tls_server`] starts a second one, on first use, that speaks TLS only:
//! `ssl = on` with a certificate for `127.0.0.1` and `localhost` issued by a
//! throwaway CA made for it, and a `pg_hba.conf` of `hostssl` lines only,
//! so a plaintext TCP connection is refused by the server itself. The user
//! [`USER`] is trusted over TLS; the user [`MTLS_USER`] must present a
//! client certificate of that CA (`cert` authentication).
//!
//! Where PostgreSQL is looked for: `$NUAGE_POSTGRES_BIN` (a directory), then
//! the newest `/usr/lib/postgresql/*/bin`, then `initdb` on `PATH`. Missing:
//! with `CI=true` [`server`] panics (a CI run must not pass by skipping);
//! otherwise it prints that the PostgreSQL leg is skipped and returns None.
#![allow(clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long PostgreSQL may take to accept connections (a bound, not a sleep).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Starts tried, each on a new free port, before giving up.
const START_ATTEMPTS_MAX: usize = 3;
/// The superuser `initdb` creates; trust authentication, loopback only.
pub const USER: &str = "nuage";
/// On the TLS server: a login role that must authenticate with a client
/// certificate whose common name is its name.
pub const MTLS_USER: &str = "nuage_mtls";

/// A running throwaway PostgreSQL.
pub struct PostgresServer {
    port: u16,
    bin_dir: PathBuf,
    databases: AtomicU64,
    /// The guardian and the pipe to it; closing the pipe (at process exit,
    /// or [`Self::stop`]) stops the server.
    guard: Mutex<(Child, Option<ChildStdin>)>,
}

static SERVER: OnceLock<Option<PostgresServer>> = OnceLock::new();
static TLS_SERVER: OnceLock<Option<TlsPostgresServer>> = OnceLock::new();

/// A throwaway PostgreSQL that accepts TLS connections only, and the files
/// a client needs to reach it.
pub struct TlsPostgresServer {
    server: PostgresServer,
    /// `ca.pem`, `other-ca.pem`, `client.crt`, `client.key`.
    files: PathBuf,
}

impl TlsPostgresServer {
    /// The server (port, URLs, databases).
    #[must_use]
    pub fn server(&self) -> &PostgresServer {
        &self.server
    }

    /// The PEM certificate of the CA that issued the server's certificate
    /// (for `127.0.0.1` and `localhost`) and the client certificate.
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.files.join("ca.pem")
    }

    /// The PEM certificate of another throwaway CA, which issued nothing
    /// this server presents.
    #[must_use]
    pub fn other_ca_file(&self) -> PathBuf {
        self.files.join("other-ca.pem")
    }

    /// A client certificate for [`MTLS_USER`], issued by [`Self::ca_file`].
    #[must_use]
    pub fn client_cert_file(&self) -> PathBuf {
        self.files.join("client.crt")
    }

    /// The private key of [`Self::client_cert_file`].
    #[must_use]
    pub fn client_key_file(&self) -> PathBuf {
        self.files.join("client.key")
    }
}

/// The process's PostgreSQL, started on first call; None when PostgreSQL is
/// not installed and this is not CI (the caller skips its PostgreSQL leg).
#[must_use]
pub fn server() -> Option<&'static PostgresServer> {
    SERVER
        .get_or_init(|| match find_bin_dir() {
            Some(bin_dir) => Some(PostgresServer::start(bin_dir, false).0),
            None if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
                "PostgreSQL is not installed (no initdb in $NUAGE_POSTGRES_BIN, \
                 /usr/lib/postgresql/*/bin or PATH), and CI must run the PostgreSQL \
                 metadata tests: run scripts/install-test-deps.sh (Debian package `postgresql`)"
            ),
            None => {
                // Straight to stderr: the test harness captures eprintln!.
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "PostgreSQL not found: the PostgreSQL legs of these tests are SKIPPED \
                     (install Debian's `postgresql`, see scripts/install-test-deps.sh)"
                );
                None
            }
        })
        .as_ref()
}

/// The process's TLS-only PostgreSQL (see the module's documentation),
/// started on first call; None as for [`server`].
#[must_use]
pub fn tls_server() -> Option<&'static TlsPostgresServer> {
    TLS_SERVER
        .get_or_init(|| {
            // server() decides about a missing PostgreSQL (panic in CI, a
            // notice elsewhere); the TLS server needs the same programs.
            server()?;
            let bin_dir = find_bin_dir()?;
            let (server, files) = PostgresServer::start(bin_dir, true);
            let files = files.expect("the TLS server has its files");
            Some(TlsPostgresServer { server, files })
        })
        .as_ref()
}

impl PostgresServer {
    /// The TCP port on 127.0.0.1.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a new empty database and returns its URL
    /// (`postgres://nuage@127.0.0.1:PORT/NAME`).
    #[must_use]
    pub fn create_database(&self) -> String {
        self.create_database_owned_by(USER)
    }

    /// Creates a new empty database owned by the role `owner` (which may
    /// then create tables in it) and returns its URL for that role
    /// (`postgres://OWNER@127.0.0.1:PORT/NAME`).
    #[must_use]
    pub fn create_database_owned_by(&self, owner: &str) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("nuage_test_{n}");
        let output = Command::new(self.bin_dir.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-O", owner])
            .arg(&name)
            .output()
            .expect("cannot run createdb");
        assert!(
            output.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        format!("postgres://{owner}@127.0.0.1:{}/{name}", self.port)
    }

    /// The directory of PostgreSQL's programs (`psql`, `createdb`...).
    #[must_use]
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The URL of database `name` on this server.
    #[must_use]
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// The server, and with `tls` the directory of the client's files.
    fn start(bin_dir: PathBuf, tls: bool) -> (Self, Option<PathBuf>) {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS_MAX {
            match Self::try_start(&bin_dir, tls) {
                Ok(started) => return started,
                Err(error) => last_error = error,
            }
        }
        panic!(
            "cannot start a throwaway PostgreSQL from {}: {last_error}",
            bin_dir.display()
        );
    }

    fn try_start(bin_dir: &Path, tls: bool) -> Result<(Self, Option<PathBuf>), String> {
        let root = effective_uid_is_root();
        // As root, under /tmp: the `postgres` user must be able to reach the
        // directory, which a $TMPDIR under /root would not let it.
        let parent = if root {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("nuage-pg-")
            .tempdir_in(&parent)
            .map_err(|e| e.to_string())?
            .keep();
        let owner = if root {
            let owner = postgres_user()?;
            std::os::unix::fs::chown(&dir, Some(owner.0), Some(owner.1))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
            Some(owner)
        } else {
            None
        };
        let data = dir.join("data");
        let socket_dir = dir.join("socket");
        // ICU's en-US collation orders text unlike bytes ("B" < "a" in
        // bytes, not in en-US), so a backend that relied on text order
        // would fail the conformance tests; older servers fall back.
        let icu = [
            "--locale-provider=icu",
            "--icu-locale=en-US",
            "--locale=C.UTF-8",
        ];
        if !initdb(bin_dir, owner, &data, &icu)? {
            let _ = std::fs::remove_dir_all(&data);
            if !initdb(bin_dir, owner, &data, &[])? {
                return Err(format!(
                    "initdb failed, see {}",
                    dir.join("initdb.log").display()
                ));
            }
        }
        std::fs::create_dir(&socket_dir).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&socket_dir, Some(uid), Some(gid))
                .map_err(|e| e.to_string())?;
        }
        let port = free_port()?;
        let log = dir.join("postgres.log");
        let mut postgres = run_as(owner, bin_dir.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(&socket_dir)
            .args(["-c", "max_connections=200"]);
        let files = if tls {
            let files = dir.join("client-files");
            postgres.args(write_tls_files(&dir, &files, owner)?);
            Some(files)
        } else {
            None
        };
        // The guardian: postgres in the background, then wait for EOF on
        // stdin (this process gone or the guard dropped), fast shutdown,
        // clean up.
        let script = r#""$@" </dev/null >>"$NUAGE_PG_LOG" 2>&1 &
pid=$!
while read -r _; do :; done
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$NUAGE_PG_DIR""#;
        let mut guardian = Command::new("sh");
        guardian
            .arg("-c")
            .arg(script)
            .arg("nuage-pg-guardian")
            .arg(postgres.get_program())
            .args(postgres.get_args())
            .env("NUAGE_PG_LOG", &log)
            .env("NUAGE_PG_DIR", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut child = guardian
            .spawn()
            .map_err(|e| format!("cannot start sh: {e}"))?;
        let Some(stdin) = child.stdin.take() else {
            return Err("no pipe to the guardian".into());
        };
        let server = Self {
            port,
            bin_dir: bin_dir.to_path_buf(),
            databases: AtomicU64::new(0),
            guard: Mutex::new((child, Some(stdin))),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(bin_dir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER])
                .status()
                .map_err(|e| format!("cannot run pg_isready: {e}"))?;
            if ready.success() {
                if tls {
                    server.create_role(MTLS_USER)?;
                }
                return Ok((server, files));
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // pg_isready's own early attempts log "FATAL: the database
            // system is starting up": only a server that cannot start
            // counts.
            let died = ["could not bind", "could not create", "PANIC", "lock file"]
                .iter()
                .any(|m| text.contains(m));
            if died || Instant::now() > deadline {
                server.stop();
                return Err(format!("PostgreSQL did not start; its log:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates a login role (no password: how it may log in is
    /// `pg_hba.conf`'s business).
    fn create_role(&self, name: &str) -> Result<(), String> {
        let output = Command::new(self.bin_dir.join("createuser"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .arg(name)
            .output()
            .map_err(|e| format!("cannot run createuser: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "createuser {name} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Stops the server now: the guardian sees its pipe close, shuts
    /// PostgreSQL down and removes the directory.
    fn stop(&self) {
        if let Ok(mut guard) = self.guard.lock() {
            drop(guard.1.take());
            let _ = guard.0.wait();
        }
    }
}

/// Makes a throwaway CA, a server certificate for `127.0.0.1` and
/// `localhost`, a client certificate for [`MTLS_USER`] and an unrelated
/// CA; writes the server's files (its key readable by `owner` only, as
/// PostgreSQL demands) and a `pg_hba.conf` of `hostssl` lines under `dir`,
/// the client's under `files`. Returns the `postgres` arguments that use
/// them.
fn write_tls_files(
    dir: &Path,
    files: &Path,
    owner: Option<(u32, u32)>,
) -> Result<Vec<String>, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use std::os::unix::fs::PermissionsExt as _;
    let e = |e: rcgen::Error| e.to_string();
    let ca_params = |name: &str| -> Result<CertificateParams, String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(params)
    };
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca = ca_params("Nuage test PostgreSQL CA")?
        .self_signed(&ca_key)
        .map_err(e)?;
    let other_ca = ca_params("Nuage test unrelated CA")?
        .self_signed(&KeyPair::generate().map_err(e)?)
        .map_err(e)?;
    let mut server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).map_err(e)?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().map_err(e)?;
    let server_cert = server_params
        .signed_by(&server_key, &ca, &ca_key)
        .map_err(e)?;
    let mut client_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    client_params
        .distinguished_name
        .push(DnType::CommonName, MTLS_USER);
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().map_err(e)?;
    let client_cert = client_params
        .signed_by(&client_key, &ca, &ca_key)
        .map_err(e)?;

    let write = |path: &Path, text: &str, mode: u32| -> Result<(), String> {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let server_dir = dir.join("tls");
    std::fs::create_dir(&server_dir).map_err(|e| e.to_string())?;
    let cert_file = server_dir.join("server.crt");
    let key_file = server_dir.join("server.key");
    let ca_file = server_dir.join("root.crt");
    let hba_file = server_dir.join("pg_hba.conf");
    write(&cert_file, &server_cert.pem(), 0o644)?;
    write(&key_file, &server_key.serialize_pem(), 0o600)?;
    write(&ca_file, &ca.pem(), 0o644)?;
    // No `host` or `hostnossl` line: plaintext over TCP matches nothing.
    let hba = format!(
        "local all all trust\n\
         hostssl all {MTLS_USER} 127.0.0.1/32 cert\n\
         hostssl all all 127.0.0.1/32 trust\n"
    );
    write(&hba_file, &hba, 0o644)?;
    if let Some((uid, gid)) = owner {
        for path in [&server_dir, &cert_file, &key_file, &ca_file, &hba_file] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", path.display()))?;
        }
    }
    std::fs::create_dir(files).map_err(|e| e.to_string())?;
    write(&files.join("ca.pem"), &ca.pem(), 0o644)?;
    write(&files.join("other-ca.pem"), &other_ca.pem(), 0o644)?;
    write(&files.join("client.crt"), &client_cert.pem(), 0o644)?;
    write(
        &files.join("client.key"),
        &client_key.serialize_pem(),
        0o600,
    )?;

    let setting = |name: &str, path: &Path| format!("{name}={}", path.display());
    Ok(vec![
        "-c".into(),
        "ssl=on".into(),
        "-c".into(),
        setting("ssl_cert_file", &cert_file),
        "-c".into(),
        setting("ssl_key_file", &key_file),
        "-c".into(),
        setting("ssl_ca_file", &ca_file),
        "-c".into(),
        setting("hba_file", &hba_file),
    ])
}

/// Runs initdb; Ok(false) when it exits unsuccessfully.
fn initdb(
    bin_dir: &Path,
    owner: Option<(u32, u32)>,
    data: &Path,
    extra: &[&str],
) -> Result<bool, String> {
    let log_path = data.with_file_name("initdb.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let status = run_as(owner, bin_dir.join("initdb"))
        .arg("-D")
        .arg(data)
        .args(["-U", USER, "-A", "trust", "-E", "UTF8", "--no-sync"])
        .args(extra)
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .status()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    Ok(status.success())
}

/// `program` as the `owner` user (through `setpriv`) when given, else as is.
fn run_as(owner: Option<(u32, u32)>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match owner {
        Some((uid, gid)) => {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg(program);
            command
        }
        None => Command::new(program),
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Whether this process runs with effective uid 0 (from /proc, no libc).
fn effective_uid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The `postgres` system user's uid and gid, from /etc/passwd.
fn postgres_user() -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&"postgres") && fields.len() > 3 {
            let uid = fields[2].parse().map_err(|_| "bad uid for postgres")?;
            let gid = fields[3].parse().map_err(|_| "bad gid for postgres")?;
            return Ok((uid, gid));
        }
    }
    Err(
        "running as root, and there is no `postgres` user to run PostgreSQL as \
         (Debian's postgresql package creates it)"
            .into(),
    )
}

fn find_bin_dir() -> Option<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "postgres", "pg_isready", "createdb", "createuser"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    if let Some(dir) = std::env::var_os("NUAGE_POSTGRES_BIN").map(PathBuf::from) {
        return complete(&dir).then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("initdb"))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::canonicalize(p).ok())
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|d| complete(d))
    })
}
