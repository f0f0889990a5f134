//! Helpers for the audit log tests: the real `nuage audit` and `nuage admin`
//! commands, and IAM users made with the aws CLI.

use super::Server;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// `nuage audit ARGS` with these credentials in the environment.
pub fn audit(creds: Option<(&str, &str)>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nuage"));
    command
        .arg("audit")
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env("NUAGE_LOG", "warn");
    if let Some((key, secret)) = creds {
        command
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret);
    }
    command.output().unwrap()
}

/// `nuage audit search DIR ARGS`, parsed.
#[track_caller]
pub fn search(dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["search", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = audit(None, &all);
    assert!(
        out.status.success(),
        "search failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Creates an IAM user with an access key (as the administrator, through
/// the aws CLI); returns its key and secret.
pub fn user_with_key(server: &Server, home: &Path, name: &str) -> (String, String) {
    super::aws_ok(server, home, &["iam", "create-user", "--user-name", name]);
    let out = super::aws(
        server,
        home,
        &[
            "--output",
            "json",
            "iam",
            "create-access-key",
            "--user-name",
            name,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        key["AccessKey"]["AccessKeyId"].as_str().unwrap().to_owned(),
        key["AccessKey"]["SecretAccessKey"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

/// `nuage audit pull` into `dir` of the log `creds` may read.
pub fn pull(server: &Server, creds: (&str, &str), dir: &Path) -> Output {
    audit(
        Some(creds),
        &[
            "pull",
            "--endpoint",
            &server.endpoint,
            "--dir",
            dir.to_str().unwrap(),
        ],
    )
}

/// [`pull`], which must succeed; what it printed.
#[track_caller]
pub fn pull_ok(server: &Server, creds: (&str, &str), dir: &Path) -> String {
    let out = pull(server, creds, dir);
    assert!(
        out.status.success(),
        "pull failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Pulls the server's default tenant's log into `dir` as its administrator
/// (`nuage audit pull` verifies it), then verifies it offline again.
#[track_caller]
pub fn pull_verified(server: &Server, dir: &Path) {
    pull_ok(
        server,
        (
            &server.credentials.access_key_id,
            &server.credentials.secret_access_key,
        ),
        dir,
    );
    let out = audit(None, &["verify", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates tenant `tenant` (in France) with an administrator `user` and an
/// access key for it, through `nuage admin`; returns the tenant's id and
/// the user's key and secret.
#[track_caller]
pub fn tenant_with_administrator(
    server: &Server,
    tenant: &str,
    user: &str,
) -> (String, (String, String)) {
    let id = admin_json(server, &["tenant", "create", tenant, "--country", "FR"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    admin_json(
        server,
        &[
            "user",
            "create",
            "--tenant",
            tenant,
            user,
            "--administrator",
        ],
    );
    let key = admin_json(
        server,
        &["key", "create", "--tenant", tenant, "--user", user],
    );
    (
        id,
        (
            key["access_key_id"].as_str().unwrap().to_owned(),
            key["secret_access_key"].as_str().unwrap().to_owned(),
        ),
    )
}

/// The default tenant's account id, as `aws sts get-caller-identity` says.
pub fn tenant_of(server: &Server, home: &Path) -> String {
    super::aws_ok(
        server,
        home,
        &["sts", "get-caller-identity", "--query", "Account"],
    )
}

/// `nuage admin ARGS --json`, which must succeed.
#[track_caller]
pub fn admin_json(server: &Server, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args(["admin", "--endpoint", &server.endpoint, "--data-dir"])
        .arg(&server.data_dir)
        .args(args)
        .arg("--json")
        .env_remove("NUAGE_OPERATOR_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nuage admin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A SigV4-signed `GET /?QUERY` for the IAM or STS query API (`service`),
/// dated `age_s` seconds ago, with a session token if given; status and body.
pub fn signed_query(
    server: &Server,
    (key, secret): (&str, &str),
    session_token: Option<&str>,
    service: &str,
    query: &str,
    age_s: i64,
) -> (u16, String) {
    let at = time::OffsetDateTime::now_utc() - time::Duration::seconds(age_s);
    let amz_date = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    let authority = server.endpoint.trim_start_matches("http://");
    let mut request = http::Request::get(format!("{}/?{query}", server.endpoint))
        .header("host", authority)
        .header("x-amz-date", amz_date)
        .body(bytes::Bytes::new())
        .unwrap();
    if let Some(token) = session_token {
        request
            .headers_mut()
            .insert("x-amz-security-token", token.parse().unwrap());
    }
    nuage_sigv4::sign(
        &mut request,
        key,
        secret,
        &server.credentials.region,
        service,
    )
    .unwrap();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, _, body) =
        super::raw_request(&server.endpoint, "GET", &format!("/?{query}"), &headers);
    (status, String::from_utf8_lossy(&body).into_owned())
}
