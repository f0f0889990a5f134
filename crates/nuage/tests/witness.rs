//! Witnesses through the real binaries: two `nuage witness` processes watch a
//! tenant's audit log, the server submits each checkpoint it serves to both
//! and attaches their cosignatures, `nuage audit pull --require-witnesses`
//! passes with both keys and fails when it asks for a third that never
//! cosigned, and a witness refuses checkpoints inconsistent with what it
//! cosigned (C2SP tlog-witness status codes). Checkpoints the server signs on
//! its own interval reach the witness without any pull, and their kept
//! cosignatures are served after the witness stops, across a restart.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use base64::Engine as _;
use common::Server;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

fn nuage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args(args)
        .env("NUAGE_LOG", "warn")
        .output()
        .unwrap()
}

#[track_caller]
fn nuage_ok(args: &[&str]) -> String {
    let out = nuage(args);
    assert!(
        out.status.success(),
        "nuage {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A running `nuage witness serve`, killed on drop.
struct WitnessProcess {
    child: Child,
    url: String,
    vkey: String,
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn witness(dir: &Path, name: &str, origin: &str, log_vkey: &str) -> WitnessProcess {
    let d = dir.to_str().unwrap();
    let vkey = nuage_ok(&["witness", "init", "--dir", d, "--name", name]);
    assert!(vkey.starts_with(&format!("{name}+")), "{vkey}");
    nuage_ok(&[
        "witness", "add-log", "--dir", d, "--origin", origin, "--vkey", log_vkey,
    ]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args(["witness", "serve", "--dir", d, "--listen", "127.0.0.1:0"])
        .env("NUAGE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("nuage witness: listening on ")
        .unwrap_or_else(|| panic!("no ready line: {line:?}"))
        .to_owned();
    WitnessProcess { child, url, vkey }
}

/// `POST <url>/add-checkpoint` with `body`; status and body.
fn add_checkpoint(url: &str, body: &[u8]) -> (u16, String) {
    let address = url.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST /add-checkpoint HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn pull(server: &Server, dir: &Path, witnesses: &[&str], required: usize) -> Output {
    let required = required.to_string();
    let mut args = vec![
        "audit",
        "pull",
        "--endpoint",
        &server.endpoint,
        "--dir",
        dir.to_str().unwrap(),
        "--require-witnesses",
        &required,
    ];
    for vkey in witnesses {
        args.extend(["--witness", vkey]);
    }
    Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args(&args)
        .env("AWS_ACCESS_KEY_ID", &server.credentials.access_key_id)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            &server.credentials.secret_access_key,
        )
        .env_remove("AWS_SESSION_TOKEN")
        .env("NUAGE_LOG", "warn")
        .output()
        .unwrap()
}

fn checkpoint_size(note: &[u8]) -> u64 {
    String::from_utf8_lossy(note)
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// The default tenant's log verifier key, as the server's banner prints it.
fn log_verifier_key(server: &Server) -> String {
    server
        .banner
        .lines()
        .find_map(|l| l.split("tenant's verifier key is ").nth(1))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn witnesses_cosign_checkpoints_and_refuse_inconsistent_ones() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let scratch = tempfile::tempdir().unwrap();

    // First start: learn the default tenant's log verifier key.
    let mut server = Server::start_in(data.path(), &[]);
    let log_vkey = log_verifier_key(&server);
    let origin = log_vkey.split('+').next().unwrap().to_owned();
    server.stop();

    let w1 = witness(
        &scratch.path().join("w1"),
        "witness.example/w1",
        &origin,
        &log_vkey,
    );
    let w2 = witness(
        &scratch.path().join("w2"),
        "witness.example/w2",
        &origin,
        &log_vkey,
    );
    // A third witness that watches nothing and is not configured.
    let w3_vkey = nuage_ok(&[
        "witness",
        "init",
        "--dir",
        scratch.path().join("w3").to_str().unwrap(),
        "--name",
        "witness.example/w3",
    ]);
    let config = scratch.path().join("nuage.toml");
    std::fs::write(
        &config,
        format!(
            "[audit]\nwitnesses = [{{ url = \"{}\", vkey = \"{}\" }}, {{ url = \"{}\", vkey = \"{}\" }}]\n",
            w1.url, w1.vkey, w2.url, w2.vkey
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap().to_owned();
    let mut server = Server::start_in(data.path(), &["--config", &config_arg]);

    common::aws_ok(&server, home, &["iam", "create-user", "--user-name", "w1"]);
    let copy = scratch.path().join("copy");
    let out = pull(&server, &copy, &[&w1.vkey, &w2.vkey], 2);
    assert!(
        out.status.success(),
        "pull with 2 witnesses failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = std::fs::read(copy.join("checkpoint")).unwrap();
    let first_size = checkpoint_size(&first);
    assert!(first_size >= 1);
    let text = String::from_utf8_lossy(&first).into_owned();
    assert!(text.contains("\n— witness.example/w1 "), "{text}");
    assert!(text.contains("\n— witness.example/w2 "), "{text}");

    // The log grows; the witnesses follow (consistency from their last size).
    common::aws_ok(&server, home, &["iam", "create-user", "--user-name", "w2"]);
    let out = pull(&server, &copy, &[&w1.vkey, &w2.vkey], 2);
    assert!(
        out.status.success(),
        "second pull failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = std::fs::read(copy.join("checkpoint")).unwrap();
    let second_size = checkpoint_size(&second);
    assert!(second_size > first_size);
    // Offline, too.
    nuage_ok(&[
        "audit",
        "verify",
        copy.to_str().unwrap(),
        "--witness",
        &w1.vkey,
        "--witness",
        &w2.vkey,
        "--require-witnesses",
        "2",
    ]);

    // A third key that never cosigned: 3 required, 2 present, loud failure.
    let out = pull(&server, &copy, &[&w1.vkey, &w2.vkey, &w3_vkey], 3);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NOT WITNESSED"), "{stderr}");
    assert!(
        stderr.contains("witness.example/w3: no cosignature"),
        "{stderr}"
    );

    // The witness refuses checkpoints inconsistent with what it cosigned.
    let body = |old: u64, proof: &[[u8; 32]], note: &[u8]| {
        let mut body = format!("old {old}\n").into_bytes();
        for hash in proof {
            body.extend(
                base64::engine::general_purpose::STANDARD
                    .encode(hash)
                    .bytes(),
            );
            body.push(b'\n');
        }
        body.push(b'\n');
        body.extend_from_slice(note);
        body
    };
    // Rolling back to the first checkpoint: older than what it cosigned.
    let (status, _) = add_checkpoint(&w1.url, &body(second_size, &[], &first));
    assert_eq!(status, 400);
    let (status, known) = add_checkpoint(&w1.url, &body(0, &[], &first));
    assert_eq!(status, 409);
    assert_eq!(known.trim(), second_size.to_string());
    // The same size as cosigned, claimed from another size: 409 with its size.
    let (status, known) = add_checkpoint(&w1.url, &body(first_size, &[], &second));
    assert_eq!(status, 409);
    assert_eq!(known.trim(), second_size.to_string());

    // A checkpoint the witnesses have not seen (the server restarted without
    // them), offered with a proof that does not link it to what was cosigned.
    server.stop();
    let server = Server::start_in(data.path(), &[]);
    common::aws_ok(&server, home, &["iam", "create-user", "--user-name", "w3"]);
    let unwitnessed = scratch.path().join("unwitnessed");
    let out = pull(&server, &unwitnessed, &[], 0);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let third = std::fs::read(unwitnessed.join("checkpoint")).unwrap();
    assert!(checkpoint_size(&third) > second_size);
    let (status, _) = add_checkpoint(&w1.url, &body(second_size, &[[7; 32]], &third));
    assert_eq!(status, 422);
    // A checkpoint not signed by the log: 403.
    let forged = String::from_utf8_lossy(&third).replacen(
        &format!("\n{}\n", checkpoint_size(&third)),
        &format!("\n{}\n", checkpoint_size(&third) + 1),
        1,
    );
    let (status, _) = add_checkpoint(&w1.url, &body(second_size, &[], forged.as_bytes()));
    assert_eq!(status, 403);
    // And without witnesses the checkpoint carries no cosignature: a tenant
    // requiring them refuses it.
    let out = pull(&server, &unwitnessed, &[&w1.vkey, &w2.vkey], 1);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT WITNESSED"));
}

/// The size a witness's state (`DIR/state/<hex origin>`) says it cosigned.
fn witnessed_size(witness_dir: &Path, origin: &str) -> u64 {
    let name: String = origin.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::read_to_string(witness_dir.join("state").join(name))
        .ok()
        .and_then(|state| state.lines().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn checkpoints_the_server_signs_on_its_own_are_witnessed_and_their_cosignatures_kept() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let scratch = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), &[]);
    let log_vkey = log_verifier_key(&server);
    let origin = log_vkey.split('+').next().unwrap().to_owned();
    let tenant = origin.rsplit('/').next().unwrap().to_owned();
    server.stop();
    let log_dir = data.path().join("audit").join(&tenant);
    let size_before = std::fs::read(log_dir.join("checkpoint"))
        .map(|note| checkpoint_size(&note))
        .unwrap_or(0);

    let witness_dir = scratch.path().join("w1");
    let w1 = witness(&witness_dir, "witness.example/w1", &origin, &log_vkey);
    let w1_vkey = w1.vkey.clone();
    let config = scratch.path().join("nuage.toml");
    std::fs::write(
        &config,
        format!(
            "[audit]\ncheckpoint_interval_seconds = 1\nwitnesses = [{{ url = \"{}\", vkey = \"{}\" }}]\n",
            w1.url, w1.vkey
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap().to_owned();
    let mut server = Server::start_in(data.path(), &["--config", &config_arg]);
    common::aws_ok(&server, home, &["iam", "create-user", "--user-name", "t1"]);
    common::aws_ok(&server, home, &["iam", "create-user", "--user-name", "t2"]);
    // Two more entries; nobody pulls. The interval's checkpoint of them
    // reaches the witness, and its cosignature is kept beside the log.
    let size = size_before + 2;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let kept = loop {
        let kept = std::fs::read(log_dir.join("checkpoint.cosigned")).unwrap_or_default();
        if witnessed_size(&witness_dir, &origin) == size
            && !kept.is_empty()
            && checkpoint_size(&kept) == size
        {
            break kept;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the witness never saw size {size} (it has {}), kept: {:?}",
            witnessed_size(&witness_dir, &origin),
            String::from_utf8_lossy(&kept)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let kept_text = String::from_utf8_lossy(&kept).into_owned();
    assert!(kept_text.contains("\n— witness.example/w1 "), "{kept_text}");
    let stored = std::fs::read(log_dir.join("checkpoint")).unwrap();
    assert!(kept.starts_with(&stored), "kept for another checkpoint");

    // The witness goes away: the kept cosignature is served all the same,
    // now and after a restart (it was kept durably).
    drop(w1);
    for round in 0..2 {
        let copy = scratch.path().join(format!("copy{round}"));
        let out = pull(&server, &copy, &[&w1_vkey], 1);
        assert!(
            out.status.success(),
            "pull {round} without the witness running failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pulled = std::fs::read(copy.join("checkpoint")).unwrap();
        assert_eq!(checkpoint_size(&pulled), size);
        assert!(
            String::from_utf8_lossy(&pulled).contains("\n— witness.example/w1 "),
            "{}",
            String::from_utf8_lossy(&pulled)
        );
        if round == 0 {
            server.stop();
            server = Server::start_in(data.path(), &["--config", &config_arg]);
        }
    }
}
