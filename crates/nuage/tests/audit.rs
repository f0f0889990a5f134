//! The audit log through the real binary: IAM/STS requests (allowed, denied,
//! refused signatures) land in the tenant's log with the right fields before
//! their response; `nuage audit pull` fetches and verifies a copy; every kind
//! of tampering with that copy, and with the server's own files, is reported
//! by `nuage audit verify` / the next pull; acknowledged entries survive a
//! kill -9; a tenant reads its own log only.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use common::Server;
use common::audit::{audit, pull_ok, search, tenant_of, tenant_with_administrator, user_with_key};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn admin_creds(server: &Server) -> (String, String) {
    (
        server.credentials.access_key_id.clone(),
        server.credentials.secret_access_key.clone(),
    )
}

/// `nuage audit pull` that must fail; its standard error.
#[track_caller]
fn pull_err(server: &Server, creds: (&str, &str), dir: &Path) -> String {
    let out = common::audit::pull(server, creds, dir);
    assert!(
        !out.status.success(),
        "pull should have failed, printed {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// `nuage audit verify DIR` that must fail; its standard error.
#[track_caller]
fn verify_err(dir: &Path) -> String {
    let out = audit(None, &["verify", dir.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "verify should have failed, printed {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

#[track_caller]
fn verify_ok(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["verify", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = audit(None, &args);
    assert!(
        out.status.success(),
        "verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Entry bundles are `u16 BE length ‖ entry` repeated (C2SP tlog-tiles).
fn decode_bundle(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        out.push(rest[2..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    out
}

fn encode_bundle(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        out.extend_from_slice(&u16::try_from(entry.len()).unwrap().to_be_bytes());
        out.extend_from_slice(entry);
    }
    out
}

/// The only entry bundle of a small log (fewer than 256 entries).
fn bundle_path(dir: &Path) -> PathBuf {
    let partial = dir.join("tile/entries/000.p");
    let name = std::fs::read_dir(&partial)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".partial"))
        .max_by_key(|n| n.parse::<u32>().unwrap_or(0))
        .unwrap();
    partial.join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn iam_requests_are_logged_with_their_decision_and_a_pull_verifies() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let admin = admin_creds(&server);
    let tenant = tenant_of(&server, home);
    let bob = user_with_key(&server, home, "bob");
    // bob has no policy: denied.
    let out = common::aws_as(&server, home, (&bob.0, &bob.1), &["iam", "list-users"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AccessDenied"));
    // A wrong secret for bob's key: the key names the tenant, so it is logged.
    let out = common::aws_as(
        &server,
        home,
        (&bob.0, "wrong-secret"),
        &["iam", "list-roles"],
    );
    assert!(!out.status.success());
    // bob's key and secret, but a signature dated 20 minutes ago: refused,
    // and logged in the tenant the key names.
    let (status, body) = common::audit::signed_query(
        &server,
        (&bob.0, &bob.1),
        None,
        "iam",
        "Action=GetUser&Version=2010-05-08",
        20 * 60,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("RequestExpired"), "{body}");

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().join("log");
    let printed = pull_ok(&server, (&admin.0, &admin.1), &dir);
    assert!(printed.contains(&format!("/audit/{tenant}")), "{printed}");

    // The allowed CreateUser, with every field.
    let created = search(&dir, &["--action", "iam:CreateUser"]);
    assert_eq!(created.len(), 1, "{created:?}");
    let entry = &created[0];
    assert_eq!(entry["v"], 1);
    assert_eq!(entry["tenant"], tenant.as_str());
    assert_eq!(entry["actor"]["kind"], "tenant_user");
    assert_eq!(
        entry["actor"]["id"],
        format!("arn:aws:iam::{tenant}:user/admin").as_str()
    );
    assert_eq!(entry["actor"]["auth"], "sigv4_header");
    assert_eq!(entry["actor"]["access_key_id"], admin.0.as_str());
    assert_eq!(
        entry["resource"],
        format!("arn:aws:iam::{tenant}:user/bob").as_str()
    );
    assert_eq!(entry["decision"]["effect"], "allow");
    assert!(
        entry["decision"]["policy"]
            .as_str()
            .is_some_and(|p| p.starts_with("user/admin/inline/")),
        "{entry}"
    );
    assert_eq!(entry["source"], "127.0.0.1");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["request_id"].as_str().map(str::len), Some(16));
    assert!(entry["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    // bob's denial: a default deny, no policy, 403.
    let denied = search(&dir, &["--actor", "user/bob", "--action", "iam:ListUsers"]);
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["decision"]["effect"], "deny");
    assert!(denied[0]["decision"].get("policy").is_none());
    assert_eq!(denied[0]["resource"], "*");
    assert_eq!(denied[0]["status"], 403);
    // The bad signature with bob's key.
    let forged = search(&dir, &["--actor", &bob.0, "--action", "iam:ListRoles"]);
    assert_eq!(forged.len(), 1, "{forged:?}");
    assert_eq!(forged[0]["decision"]["effect"], "deny");
    assert_eq!(forged[0]["status"], 403);
    // The stale signature with bob's key.
    let stale = search(&dir, &["--actor", &bob.0, "--action", "iam:GetUser"]);
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert_eq!(stale[0]["decision"]["effect"], "deny");
    assert_eq!(stale[0]["status"], 400);
    // Filters that match nothing match nothing.
    assert!(search(&dir, &["--action", "iam:DeleteUser"]).is_empty());
    assert!(search(&dir, &["--until", "2000-01-01T00:00:00Z"]).is_empty());
    assert!(
        !search(
            &dir,
            &["--action", "iam:*", "--since", "2000-01-01T00:00:00Z"]
        )
        .is_empty()
    );

    // The verifier key pinned by the pull is the one the server printed at
    // start: checkpoints verify with that public key alone, offline.
    let pinned = std::fs::read_to_string(dir.join("vkey")).unwrap();
    assert!(
        server.banner.contains(pinned.trim()),
        "banner {} lacks {pinned}",
        server.banner
    );
    let vkey_file = home.join("vkey-from-banner");
    std::fs::write(&vkey_file, pinned.trim()).unwrap();
    let verified = verify_ok(&dir, &["--vkey", vkey_file.to_str().unwrap()]);
    assert!(verified.contains("verified"), "{verified}");
    // Another key does not verify it.
    let other = pinned.trim().rsplit_once('+').unwrap().0.to_owned()
        + "+AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg=";
    std::fs::write(&vkey_file, other).unwrap();
    let out = audit(
        None,
        &[
            "verify",
            dir.to_str().unwrap(),
            "--vkey",
            vkey_file.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());

    // Export: JSON lines, a proof per entry.
    let export = home.join("export.jsonl");
    let out = audit(
        None,
        &[
            "export",
            dir.to_str().unwrap(),
            "--out",
            export.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines[0]["checkpoint"].as_str().is_some());
    assert!(lines.len() > 4);
    for (i, line) in lines[1..].iter().enumerate() {
        assert_eq!(line["index"], i);
        assert_eq!(line["inclusion_proof"]["index"], i);
        assert!(line["entry"]["action"].is_string());
    }
}

#[test]
fn tampering_with_a_pulled_copy_is_reported_case_by_case() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let admin = admin_creds(&server);
    for name in ["u1", "u2", "u3", "u4"] {
        common::aws_ok(&server, home, &["iam", "create-user", "--user-name", name]);
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("log");
    pull_ok(&server, (&admin.0, &admin.1), &dir);
    let first_checkpoint = std::fs::read(dir.join("checkpoint")).unwrap();
    common::aws_ok(&server, home, &["iam", "create-user", "--user-name", "u5"]);
    pull_ok(&server, (&admin.0, &admin.1), &dir);
    verify_ok(&dir, &[]);

    let case = |name: &str, tamper: &dyn Fn(&Path)| -> String {
        let copy = work.path().join(name);
        copy_dir(&dir, &copy);
        tamper(&copy);
        verify_err(&copy)
    };

    // An entry's bytes changed.
    let edited = case("edited", &|copy| {
        let path = bundle_path(copy);
        let mut entries = decode_bundle(&std::fs::read(&path).unwrap());
        let text = String::from_utf8(entries[2].clone()).unwrap();
        entries[2] = text.replace("\"allow\"", "\"deny\"").into_bytes();
        std::fs::write(&path, encode_bundle(&entries)).unwrap();
    });
    assert!(
        edited.contains("TAMPERED") && edited.contains("entry 2 was edited"),
        "{edited}"
    );

    // An entry removed.
    let deleted = case("deleted", &|copy| {
        let path = bundle_path(copy);
        let mut entries = decode_bundle(&std::fs::read(&path).unwrap());
        entries.remove(1);
        std::fs::write(&path, encode_bundle(&entries)).unwrap();
    });
    assert!(
        deleted.contains("TAMPERED") && deleted.contains("entry 1 was deleted"),
        "{deleted}"
    );

    // Two entries swapped.
    let reordered = case("reordered", &|copy| {
        let path = bundle_path(copy);
        let mut entries = decode_bundle(&std::fs::read(&path).unwrap());
        entries.swap(1, 3);
        std::fs::write(&path, encode_bundle(&entries)).unwrap();
    });
    assert!(
        reordered.contains("TAMPERED") && reordered.contains("reordered"),
        "{reordered}"
    );

    // The checkpoint replaced by an older one (signed, authentic, but older
    // than the one already verified).
    let rolled_back = case("rolled-back", &|copy| {
        std::fs::write(copy.join("checkpoint"), &first_checkpoint).unwrap();
    });
    assert!(rolled_back.contains("ROLLBACK"), "{rolled_back}");

    // A checkpoint edited after signing.
    let forged = case("forged", &|copy| {
        let text = String::from_utf8(std::fs::read(copy.join("checkpoint")).unwrap()).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[1] = "9".into();
        std::fs::write(copy.join("checkpoint"), lines.join("\n") + "\n").unwrap();
    });
    assert!(forged.contains("NOT SIGNED BY THIS LOG'S KEY"), "{forged}");

    // The original copy still verifies.
    verify_ok(&dir, &[]);
}

/// Edits entry `index`'s record in a server's `entries` file in place (same
/// length, checksum recomputed), as someone with disk access would.
fn edit_server_entry(log_dir: &Path, index: usize, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let path = log_dir.join("entries");
    let mut bytes = std::fs::read(&path).unwrap();
    let mut offset = 8; // "NUAGEAL1"
    for _ in 0..index {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        offset += 8 + len;
    }
    let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
    let start = offset + 8;
    let text = String::from_utf8(bytes[start..start + len].to_vec()).unwrap();
    assert!(text.contains(from), "{text}");
    let edited = text.replacen(from, to, 1);
    bytes[start..start + len].copy_from_slice(edited.as_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&bytes[offset..offset + 4]),
        edited.as_bytes(),
    );
    bytes[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn tampering_with_the_servers_log_is_reported_by_the_next_pull() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), &[]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let admin = admin_creds(&server);
    let tenant = tenant_of(&server, home);
    common::aws_ok(
        &server,
        home,
        &["iam", "create-user", "--user-name", "early"],
    );
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("log");
    pull_ok(&server, (&admin.0, &admin.1), &dir);
    let log_dir = data.path().join("audit").join(&tenant);

    // 1. The server's copy rolled back to an older state (its own files).
    server.stop();
    let old = work.path().join("server-log-before");
    copy_dir(&log_dir, &old);
    server = Server::start_in(data.path(), &[]);
    common::aws_ok(
        &server,
        home,
        &["iam", "create-user", "--user-name", "late"],
    );
    pull_ok(&server, (&admin.0, &admin.1), &dir);
    server.stop();
    std::fs::remove_dir_all(&log_dir).unwrap();
    copy_dir(&old, &log_dir);
    server = Server::start_in(data.path(), &[]);
    let rolled_back = pull_err(&server, (&admin.0, &admin.1), &dir);
    assert!(rolled_back.contains("ROLLBACK"), "{rolled_back}");

    // 2. An entry edited on the server's disk, checksum and all.
    let fresh = work.path().join("fresh");
    pull_ok(&server, (&admin.0, &admin.1), &fresh);
    edit_server_entry(&log_dir, 0, "\"allow\"", "\"ALLOW\"");
    let edited = pull_err(&server, (&admin.0, &admin.1), &fresh);
    assert!(
        edited.contains("TAMPERED") && edited.contains("entry 0 was edited"),
        "{edited}"
    );
}

#[test]
fn acknowledged_entries_survive_a_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), &[]);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let admin = admin_creds(&server);
    for i in 0..5 {
        common::aws_ok(
            &server,
            home,
            &[
                "iam",
                "create-user",
                "--user-name",
                &format!("before-crash-{i}"),
            ],
        );
    }
    // No checkpoint was asked for: only the appends' own durability counts.
    server.kill();
    let server = Server::start_in(data.path(), &[]);
    let dir = tempfile::tempdir().unwrap();
    pull_ok(&server, (&admin.0, &admin.1), dir.path());
    let created = search(dir.path(), &["--action", "iam:CreateUser"]);
    let names: Vec<&str> = created
        .iter()
        .filter_map(|e| e["resource"].as_str()?.rsplit('/').next())
        .collect();
    assert_eq!(
        names,
        (0..5)
            .map(|i| format!("before-crash-{i}"))
            .collect::<Vec<_>>(),
        "{created:?}"
    );
}

#[test]
fn a_tenant_reads_its_own_log_only_and_needs_permission() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let admin = admin_creds(&server);
    let tenant = tenant_of(&server, home);
    common::aws_ok(
        &server,
        home,
        &["iam", "create-user", "--user-name", "secret-project"],
    );
    let (acme, alice) = tenant_with_administrator(&server, "acme", "alice");
    common::aws_as(&server, home, (&alice.0, &alice.1), &["iam", "list-users"]);

    // acme's pull gets acme's log: its own origin, its own entries only.
    let acme_dir = tempfile::tempdir().unwrap();
    pull_ok(&server, (&alice.0, &alice.1), acme_dir.path());
    let vkey = std::fs::read_to_string(acme_dir.path().join("vkey")).unwrap();
    assert!(
        vkey.starts_with(&format!("localhost/audit/{acme}+")),
        "{vkey}"
    );
    let entries = search(acme_dir.path(), &[]);
    assert!(!entries.is_empty());
    assert!(
        entries.iter().all(|e| e["tenant"] == acme.as_str()),
        "{entries:?}"
    );
    let bundle = std::fs::read(bundle_path(acme_dir.path())).unwrap();
    assert!(!String::from_utf8_lossy(&bundle).contains("secret-project"));
    // The default tenant's copy, pulled by acme into the same directory, is
    // refused: the pinned key names acme's log.
    let default_dir = tempfile::tempdir().unwrap();
    pull_ok(&server, (&admin.0, &admin.1), default_dir.path());
    assert!(
        std::fs::read_to_string(default_dir.path().join("vkey"))
            .unwrap()
            .starts_with(&format!("localhost/audit/{tenant}+"))
    );
    let mixed = pull_err(&server, (&alice.0, &alice.1), default_dir.path());
    assert!(mixed.contains("VERIFIER KEY CHANGED"), "{mixed}");

    // A user without nuage:GetAuditLog is refused, and the refusal is logged.
    let bob = user_with_key(&server, home, "bob");
    let bob_dir = tempfile::tempdir().unwrap();
    let refused = pull_err(&server, (&bob.0, &bob.1), bob_dir.path());
    assert!(refused.contains("AccessDenied"), "{refused}");
    let after = tempfile::tempdir().unwrap();
    pull_ok(&server, (&admin.0, &admin.1), after.path());
    let logged = search(after.path(), &["--action", "nuage:GetAuditLog"]);
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["decision"]["effect"], "deny");
    assert_eq!(
        logged[0]["actor"]["id"],
        format!("arn:aws:iam::{tenant}:user/bob").as_str()
    );
    // Granting exactly nuage:GetAuditLog on the log's ARN lets bob read it.
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"nuage:GetAuditLog","Resource":"arn:nuage:audit::{tenant}:log"}}]}}"#
    );
    common::aws_ok(
        &server,
        home,
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            "bob",
            "--policy-name",
            "read-audit",
            "--policy-document",
            &policy,
        ],
    );
    pull_ok(&server, (&bob.0, &bob.1), bob_dir.path());
    // Allowed reads are not logged: pulls do not make the log grow.
    pull_ok(&server, (&admin.0, &admin.1), after.path());
    let before = search(after.path(), &[]).len();
    pull_ok(&server, (&admin.0, &admin.1), after.path());
    assert_eq!(search(after.path(), &[]).len(), before);
}

#[test]
fn a_response_the_log_cannot_hold_is_withheld() {
    let mut server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let (acme, alice) = tenant_with_administrator(&server, "acme", "alice");
    // acme's log cannot be opened: a file stands where its directory goes.
    // (The operator's actions above opened it: replace it while stopped.)
    server.stop();
    let log_dir = server.data_dir.join("audit").join(&acme);
    std::fs::remove_dir_all(&log_dir).unwrap();
    std::fs::write(&log_dir, b"in the way").unwrap();
    server.restart();
    let out = common::aws_as(
        &server,
        home,
        (&alice.0, &alice.1),
        &["iam", "create-access-key", "--user-name", "alice"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ServiceFailure") && stderr.contains("audit log"),
        "{stderr}"
    );
    // The secret the response would have carried never left.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SecretAccessKey"));
    // Each front end answers in its own terms: S3, KMS, the admin API.
    let out = common::aws_as(
        &server,
        home,
        (&alice.0, &alice.1),
        &["s3", "mb", "s3://acme-withheld"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("InternalError"), "{stderr}");
    let out = common::aws_as(&server, home, (&alice.0, &alice.1), &["kms", "create-key"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("KMSInternalException"), "{stderr}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args(["admin", "--endpoint", &server.endpoint, "--data-dir"])
        .arg(&server.data_dir)
        .args(["user", "create", "--tenant", "acme", "bob"])
        .env_remove("NUAGE_OPERATOR_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("500") || stderr.contains("InternalError"),
        "{stderr}"
    );
    // Another tenant is unaffected.
    common::aws_ok(&server, home, &["iam", "list-users"]);
}

/// One signed GET of the audit API over a kept-alive connection; the status.
fn timed_get(
    stream: &mut std::net::TcpStream,
    authority: &str,
    creds: (&str, &str),
    path: &str,
) -> u16 {
    signed_get(stream, authority, creds, path).0
}

/// One signed GET of the audit API over a kept-alive connection; status and body.
fn signed_get(
    stream: &mut std::net::TcpStream,
    authority: &str,
    creds: (&str, &str),
    path: &str,
) -> (u16, Vec<u8>) {
    use std::io::{BufRead as _, Read as _, Write as _};
    let now = time::OffsetDateTime::now_utc();
    let amz_date = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let mut request = http::Request::get(format!("http://{authority}{path}"))
        .header("host", authority)
        .header("x-amz-date", amz_date)
        .body(bytes::Bytes::new())
        .unwrap();
    nuage_sigv4::sign(&mut request, creds.0, creds.1, "us-east-1", "audit").unwrap();
    let mut text = format!("GET {path} HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        text.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, body)
}

#[test]
fn the_http_api_serves_proofs_and_answers_errors_in_json() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let admin = admin_creds(&server);
    let admin = (admin.0.as_str(), admin.1.as_str());
    for name in ["p1", "p2", "p3"] {
        common::aws_ok(
            &server,
            home.path(),
            &["iam", "create-user", "--user-name", name],
        );
    }
    let authority = server.endpoint.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&authority).unwrap();
    let mut get = |path: &str| signed_get(&mut stream, &authority, admin, path);
    let (status, vkey) = get("/_nuage/audit/v1/vkey");
    assert_eq!(status, 200);
    let vkey = String::from_utf8(vkey).unwrap().trim().to_owned();
    let (status, note) = get("/_nuage/audit/v1/checkpoint");
    assert_eq!(status, 200);
    let checkpoint = nuage_audit::checkpoint::open(&note, &vkey).unwrap();
    assert_eq!(checkpoint.size, 3);
    // Inclusion of entry 1, checked against the bundle's bytes and the signed root.
    let (status, bundle) = get("/_nuage/audit/v1/tile/entries/000.p/3");
    assert_eq!(status, 200);
    let entries = decode_bundle(&bundle);
    let (status, proof) = get("/_nuage/audit/v1/proof/inclusion?index=1&size=3");
    assert_eq!(status, 200);
    let proof: nuage_audit::InclusionProof = serde_json::from_slice(&proof).unwrap();
    proof.verify(&entries[1], checkpoint.root).unwrap();
    assert!(proof.verify(&entries[2], checkpoint.root).is_err());
    // Consistency of the first two entries' tree with the whole.
    common::aws_ok(
        &server,
        home.path(),
        &["iam", "create-user", "--user-name", "p4"],
    );
    let (_, note) = get("/_nuage/audit/v1/checkpoint");
    let bigger = nuage_audit::checkpoint::open(&note, &vkey).unwrap();
    assert_eq!(bigger.size, 4);
    let (status, proof) = get("/_nuage/audit/v1/proof/consistency?from=3&to=4");
    assert_eq!(status, 200);
    let proof: nuage_audit::ConsistencyProof = serde_json::from_slice(&proof).unwrap();
    proof.verify(checkpoint.root, bigger.root).unwrap();
    // Errors, as JSON codes.
    for (path, expected_status, code) in [
        (
            "/_nuage/audit/v1/proof/inclusion?index=9&size=3",
            400,
            "OutOfRange",
        ),
        (
            "/_nuage/audit/v1/proof/inclusion?size=3",
            400,
            "MissingParameter",
        ),
        ("/_nuage/audit/v1/tile/entries/000.p/9", 404, "TileNotFound"),
        ("/_nuage/audit/v1/tile/entries/0", 400, "InvalidTilePath"),
        ("/_nuage/audit/v1/pruned", 404, "NotPruned"),
        ("/_nuage/audit/v1/secrets", 404, "NotFound"),
    ] {
        let (status, body) = get(path);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (expected_status, Some(code)),
            "{path}"
        );
    }
    let (status, _, body) =
        common::raw_request(&server.endpoint, "GET", "/_nuage/audit/v1/checkpoint", &[]);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("MissingAuthentication"))
    );
}

/// What the durable append adds to a request: the same authenticated,
/// authorized read of the audit API, allowed (not logged) and denied (logged,
/// so appended and fsynced before the answer). Ignored by default: it
/// measures this machine, prints figures and asserts nothing about time.
///
/// `cargo test -p nuage --test audit -- --ignored --nocapture append_latency`
#[test]
#[ignore = "measurement"]
fn append_latency() {
    const REQUESTS: usize = 300;
    const THREADS: usize = 16;
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let admin = admin_creds(&server);
    let bob = user_with_key(&server, home.path(), "bob");
    let authority = server.endpoint.trim_start_matches("http://").to_owned();
    let path = "/_nuage/audit/v1/vkey";
    let measure = |creds: (&str, &str), expected: u16| -> Vec<f64> {
        let mut stream = std::net::TcpStream::connect(&authority).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut micros: Vec<f64> = (0..REQUESTS)
            .map(|_| {
                let start = std::time::Instant::now();
                assert_eq!(timed_get(&mut stream, &authority, creds, path), expected);
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        micros.sort_by(f64::total_cmp);
        micros
    };
    let pct = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p) as usize];
    let allowed = measure((&admin.0, &admin.1), 200);
    let denied = measure((&bob.0, &bob.1), 403);
    println!(
        "sequential, {REQUESTS} each: not logged p50 {:.0} µs p99 {:.0} µs; logged (durable append) p50 {:.0} µs p99 {:.0} µs; added p50 {:.0} µs",
        pct(&allowed, 0.5),
        pct(&allowed, 0.99),
        pct(&denied, 0.5),
        pct(&denied, 0.99),
        pct(&denied, 0.5) - pct(&allowed, 0.5)
    );
    for (label, creds, expected) in [("not logged", &admin, 200), ("logged", &bob, 403)] {
        let start = std::time::Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                let authority = authority.clone();
                scope.spawn(move || {
                    let mut stream = std::net::TcpStream::connect(&authority).unwrap();
                    stream.set_nodelay(true).unwrap();
                    for _ in 0..REQUESTS / 10 {
                        assert_eq!(
                            timed_get(&mut stream, &authority, (&creds.0, &creds.1), path),
                            expected
                        );
                    }
                });
            }
        });
        let total = THREADS * (REQUESTS / 10);
        println!(
            "{THREADS} connections, {total} requests {label}: {:.0} requests/s",
            total as f64 / start.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn checkpoints_are_signed_on_the_configured_interval() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("nuage.toml");
    std::fs::write(&config, "[audit]\ncheckpoint_interval_seconds = 1\n").unwrap();
    let server = Server::start_in(data.path(), &["--config", config.to_str().unwrap()]);
    let home = tempfile::tempdir().unwrap();
    let tenant = tenant_of(&server, home.path());
    common::aws_ok(
        &server,
        home.path(),
        &["iam", "create-user", "--user-name", "ticked"],
    );
    // Nobody asks for a checkpoint: the interval alone signs one covering both entries.
    let stored = server
        .data_dir
        .join("audit")
        .join(&tenant)
        .join("checkpoint");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let size = std::fs::read_to_string(&stored)
            .ok()
            .and_then(|t| t.lines().nth(1).and_then(|l| l.parse::<u64>().ok()));
        if size == Some(2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint of size 2 in {stored:?}: {size:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
