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
