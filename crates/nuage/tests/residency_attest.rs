//! Residency attestations through the real binary: on a single node, objects
//! PUT with the aws CLI, `nuage residency attest` for an object and for the
//! bucket, `nuage residency verify` with the key `nuage residency key`
//! fetched; an altered attestation is rejected; another tenant and an IAM
//! user without permission are refused, and every request is in the audit
//! log; the region key survives a restart. And a gateway on storage nodes
//! (`nuage dev cluster`) attests exactly the nodes whose disks hold the blob.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use common::audit::{pull_verified, search, tenant_with_administrator, user_with_key};
use common::{Server, aws_ok};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

const ACTION: &str = "nuage:GetResidencyAttestation";

/// `nuage residency ARGS` with these credentials in the environment.
fn residency(creds: Option<(&str, &str)>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nuage"));
    command
        .arg("residency")
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

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[track_caller]
fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "should have failed, printed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// The server's verifier key, saved in `file` by `nuage residency key`.
fn fetch_key(server: &Server, file: &Path) -> String {
    ok(&residency(
        None,
        &[
            "key",
            "--endpoint",
            &server.endpoint,
            "--out",
            file.to_str().unwrap(),
        ],
    ));
    std::fs::read_to_string(file).unwrap().trim().to_owned()
}

/// `nuage residency attest` as `creds`, into `out`.
fn attest(
    server: &Server,
    creds: (&str, &str),
    bucket: &str,
    key: Option<&str>,
    out: &Path,
) -> Output {
    let mut args = vec![
        "attest",
        "--endpoint",
        &server.endpoint,
        "--bucket",
        bucket,
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(key) = key {
        args.extend(["--key", key]);
    }
    residency(Some(creds), &args)
}

/// `nuage residency verify FILE --key KEYFILE --json`, which must succeed.
#[track_caller]
fn verified(file: &Path, key_file: &Path) -> Value {
    let out = ok(&residency(
        None,
        &[
            "verify",
            file.to_str().unwrap(),
            "--key",
            key_file.to_str().unwrap(),
            "--json",
        ],
    ));
    serde_json::from_str(&out).unwrap()
}

#[track_caller]
fn assert_all_local(attestation: &Value, blobs: usize) {
    let replicas = attestation["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), blobs, "{attestation:#}");
    for replica in replicas {
        assert_eq!(replica["node"], "local", "{replica:#}");
        assert_eq!(replica["site"]["id"], "local", "{replica:#}");
        assert_eq!(replica["site"]["country"], "FR", "{replica:#}");
        let jurisdictions = replica["site"]["jurisdictions"].to_string();
        assert!(jurisdictions.contains("\"EU\""), "{replica:#}");
        assert!(replica["blob"].as_str().is_some_and(|b| !b.is_empty()));
    }
    assert_eq!(attestation["compliant"], true, "{attestation:#}");
}

#[test]
fn attestations_are_signed_verified_refused_logged_and_keep_their_key() {
    let mut server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let admin = (
        server.credentials.access_key_id.clone(),
        server.credentials.secret_access_key.clone(),
    );
    let admin = (admin.0.as_str(), admin.1.as_str());
    let bucket = "factures";
    aws_ok(
        &server,
        home.path(),
        &["s3", "mb", &format!("s3://{bucket}")],
    );
    let body = work.path().join("body");
    std::fs::write(&body, common::random_bytes(100_000, 7)).unwrap();
    let object = "2026/novembre rapport.pdf";
    for key in [object, "other"] {
        aws_ok(
            &server,
            home.path(),
            &[
                "s3api",
                "put-object",
                "--bucket",
                bucket,
                "--key",
                key,
                "--body",
                body.to_str().unwrap(),
            ],
        );
    }

    // The key, as served and as the banner said.
    let key_file = work.path().join("region.vkey");
    let vkey = fetch_key(&server, &key_file);
    assert!(
        server.banner.contains(&vkey),
        "{vkey} not in {}",
        server.banner
    );
    assert!(vkey.contains("/residency/"), "{vkey}");

    // An object: its one blob, on the local node, in France.
    let object_file = work.path().join("object.att");
    ok(&attest(&server, admin, bucket, Some(object), &object_file));
    let statement = verified(&object_file, &key_file);
    assert_eq!(statement["subject"]["bucket"], bucket);
    assert_eq!(statement["subject"]["key"], object);
    assert!(statement["subject"]["version_id"].as_str().is_some());
    assert_all_local(&statement, 1);
    // The default policy of a single node: its region's country, one copy.
    assert_eq!(statement["policy"]["allowed_countries"][0], "FR");
    let table = ok(&residency(
        None,
        &[
            "verify",
            object_file.to_str().unwrap(),
            "--key",
            key_file.to_str().unwrap(),
        ],
    ));
    assert!(table.contains("Verified"), "{table}");
    assert!(table.contains("local"), "{table}");

    // The bucket: both objects' blobs.
    let bucket_file = work.path().join("bucket.att");
    ok(&attest(&server, admin, bucket, None, &bucket_file));
    let statement = verified(&bucket_file, &key_file);
    assert!(statement["subject"]["key"].is_null());
    assert_all_local(&statement, 2);

    // One byte changed (the country of the first replica): rejected.
    let text = std::fs::read_to_string(&object_file).unwrap();
    let altered = text.replacen("\"country\":\"FR\"", "\"country\":\"DE\"", 1);
    assert_ne!(altered, text);
    let altered_file = work.path().join("altered.att");
    std::fs::write(&altered_file, altered).unwrap();
    let err = fails(&residency(
        None,
        &[
            "verify",
            altered_file.to_str().unwrap(),
            "--key",
            key_file.to_str().unwrap(),
        ],
    ));
    assert!(err.contains("rejected"), "{err}");

    // Another tenant's administrator: refused, nothing written.
    let (other_tenant, other) = tenant_with_administrator(&server, "autre", "chef");
    let refused_file = work.path().join("refused.att");
    let err = fails(&attest(
        &server,
        (&other.0, &other.1),
        bucket,
        Some(object),
        &refused_file,
    ));
    assert!(err.contains("AccessDenied"), "{err}");
    assert!(!refused_file.exists());
    // An IAM user of the tenant without a policy: refused too.
    let (user_key, user_secret) = user_with_key(&server, home.path(), "stagiaire");
    let err = fails(&attest(
        &server,
        (&user_key, &user_secret),
        bucket,
        None,
        &refused_file,
    ));
    assert!(err.contains("AccessDenied"), "{err}");
    // No such key, no such bucket.
    let err = fails(&attest(
        &server,
        admin,
        bucket,
        Some("absent"),
        &refused_file,
    ));
    assert!(err.contains("NoSuchKey"), "{err}");
    let err = fails(&attest(
        &server,
        admin,
        "absent-bucket",
        None,
        &refused_file,
    ));
    assert!(err.contains("NoSuchBucket"), "{err}");

    // The owner's log holds the two attestations and the two refusals.
    let log_dir = work.path().join("log");
    pull_verified(&server, &log_dir);
    let entries: Vec<Value> = search(&log_dir, &[])
        .into_iter()
        .filter(|e| e["action"] == ACTION)
        .collect();
    let effects: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["decision"]["effect"].as_str().unwrap(),
                e["actor"]["id"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let allowed = effects.iter().filter(|(e, _)| *e == "allow").count();
    let denied: Vec<&str> = effects
        .iter()
        .filter(|(e, _)| *e == "deny")
        .map(|(_, who)| *who)
        .collect();
    // Two attestations plus the NoSuchKey (allowed, then not found).
    assert_eq!(allowed, 3, "{entries:#?}");
    assert_eq!(denied.len(), 2, "{entries:#?}");
    assert!(
        denied.iter().any(|who| who.contains(&other_tenant)),
        "the other tenant's refusal: {entries:#?}"
    );
    assert!(
        denied.iter().any(|who| who.contains("stagiaire")),
        "the IAM user's refusal: {entries:#?}"
    );
    // And the other tenant's log has its own refusal.
    let other_dir = work.path().join("other-log");
    common::audit::pull_ok(&server, (&other.0, &other.1), &other_dir);
    let theirs: Vec<Value> = search(&other_dir, &[])
        .into_iter()
        .filter(|e| e["action"] == ACTION)
        .collect();
    assert_eq!(theirs.len(), 1, "{theirs:#?}");
    assert_eq!(theirs[0]["decision"]["effect"], "deny");

    // A restart keeps the key: the old attestation still verifies.
    server.restart();
    let again_file = work.path().join("region-again.vkey");
    assert_eq!(fetch_key(&server, &again_file), vkey);
    verified(&object_file, &again_file);
}

/// A storage node process of `nuage dev cluster --setup-only`.
struct Node {
    name: String,
    data_dir: std::path::PathBuf,
    child: std::process::Child,
}

impl Node {
    fn start(member: &toml::Value) -> Self {
        use std::io::BufRead as _;
        let name = member["name"].as_str().unwrap().to_owned();
        let mut child = Command::new(env!("CARGO_BIN_EXE_nuage"))
            .args(["serve", "--role", "storage", "--config"])
            .arg(member["config"].as_str().unwrap())
            .env("NUAGE_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Reads until the node says it listens (the process is killed on
        // drop, which ends the read if it never does).
        let mut lines = std::io::BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("node {name} exited before listening"))
                .unwrap();
            if line.starts_with("nuage storage node listening on ") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Self {
            name,
            data_dir: member["data_dir"].as_str().unwrap().into(),
            child,
        }
    }

    /// Whether a file named `blob` is under the node's `blobs/`.
    fn holds(&self, blob: &str) -> bool {
        let mut stack = vec![self.data_dir.join("blobs")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.file_name().is_some_and(|n| n == blob) {
                    return true;
                }
            }
        }
        false
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway on four storage nodes (`nuage dev cluster`, one gateway on its
/// embedded store, the default policy derived from region fr-par: France,
/// two replicas): an object's attestation lists the two nodes that hold its
/// blob on their disks, in France, and verifies.
#[test]
fn a_cluster_gateway_attests_the_nodes_that_hold_each_blob() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args(["dev", "cluster", "--setup-only", "--gateways", "1"])
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nuage dev cluster --setup-only failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(dir.join("dev-cluster.toml")).unwrap()).unwrap();
    let nodes: Vec<Node> = manifest["node"]
        .as_array()
        .unwrap()
        .iter()
        .map(Node::start)
        .collect();
    let gateway = &manifest["gateway"][0];
    let server = Server::start_in(
        Path::new(gateway["data_dir"].as_str().unwrap()),
        &["--config", gateway["config"].as_str().unwrap()],
    );
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let admin = (
        server.credentials.access_key_id.as_str(),
        server.credentials.secret_access_key.as_str(),
    );
    aws_ok(&server, home.path(), &["s3", "mb", "s3://placed"]);
    let body = work.path().join("body");
    std::fs::write(&body, common::random_bytes(50_000, 3)).unwrap();
    aws_ok(
        &server,
        home.path(),
        &[
            "s3api",
            "put-object",
            "--bucket",
            "placed",
            "--key",
            "k",
            "--body",
            body.to_str().unwrap(),
        ],
    );
    let key_file = work.path().join("region.vkey");
    fetch_key(&server, &key_file);
    let file = work.path().join("object.att");
    ok(&attest(&server, admin, "placed", Some("k"), &file));
    let statement = verified(&file, &key_file);
    let replicas = statement["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2, "{statement:#}");
    let blob = replicas[0]["blob"].as_str().unwrap();
    let mut sites = BTreeSet::new();
    for replica in replicas {
        assert_eq!(replica["blob"], blob, "{statement:#}");
        assert_eq!(replica["site"]["country"], "FR", "{statement:#}");
        sites.insert(replica["site"]["id"].as_str().unwrap().to_owned());
        let name = replica["node"].as_str().unwrap();
        let node = nodes.iter().find(|n| n.name == name).unwrap();
        assert!(node.holds(blob), "{name} does not hold {blob}");
    }
    assert_eq!(sites.len(), 2, "{statement:#}");
    // And no node the attestation leaves out holds it.
    for node in &nodes {
        let listed = replicas.iter().any(|r| r["node"] == node.name.as_str());
        assert_eq!(node.holds(blob), listed, "{}", node.name);
    }
    assert_eq!(statement["compliant"], true, "{statement:#}");
    assert_eq!(statement["policy"]["durability"]["replicas"], 2);
}
