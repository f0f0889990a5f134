//! A multi-process cluster on this machine, as `nuage dev cluster` sets it
//! up: four storage nodes (`nuage serve --role storage`: fr-1 and fr-2 in
//! two French sites, de-1 in Germany, us-1 in the United States), two
//! gateways (`nuage serve` with `[cluster]`) sharing a throwaway PostgreSQL
//! (`nuage-testsupport`), driven by the AWS SDK and the aws CLI. Every
//! residency claim is checked on the nodes' disks.
//!
//! The gateways' default policy (blobs whose bucket and tenant name none)
//! deliberately allows France, Germany and the United States, so that only
//! the tenant's policy, read from the identity service on every write, keeps
//! the blobs where the test expects them; and the scans that check the
//! write path are made while no gateway runs repair (gateway A is restarted
//! with `repair = false` around them), since repair would move a misplaced
//! replica away and hide the misplacement.
//!
//! 1. Tenant policy EU (2 replicas, 2 sites): uploads through gateway A while
//!    fr-2 is killed mid-series. Every acknowledged object reads back through
//!    gateway B; repair restores two replicas on the EU nodes still up (fr-1,
//!    de-1), never on us-1; once fr-2 is back, its surplus replicas go.
//! 2. Tenant policy narrowed to France only (2 replicas, 2 sites): the bucket
//!    reports itself non-compliant (`nuage residency compliance`) until
//!    repair has moved the German replicas to France and emptied de-1. A
//!    byte flipped in a replica on fr-1 is found by a scrub pass (`nuage
//!    cluster scrub`) and the copy replaced. Draining fr-1 (`nuage cluster
//!    drain`, seen by both gateways) moves nothing: no other French node can
//!    take its replicas, so they stay, the bucket reports non-compliant, a
//!    write is refused, and nothing reaches de-1 or us-1. Gateway B,
//!    restarted with `repair = true`, runs no pass while A holds the
//!    cluster's repair lease. PUT through A,
//!    GET and list through B, a 20 MiB multipart `aws s3 cp`: blobs on fr-1
//!    and fr-2 only, the same ones on both, nothing on de-1 or us-1.
//! 3. Both French nodes killed: a PUT is refused with the placement error
//!    (503 ServiceUnavailable naming the policy), and de-1 and us-1 gained no
//!    file, not even a temporary one.

#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A generous bound on starts and on waiting for repair (not a sleep: the
/// checks poll and pass as soon as the condition holds).
const WAIT_MAX: Duration = Duration::from_secs(120);
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Objects the upload series attempts; fr-2 is killed after KILL_AFTER
/// acknowledgements.
const SERIES_OBJECTS: usize = 16;
const KILL_AFTER: usize = 4;
const OBJECT_BYTES: usize = 512 * 1024;

const DEFAULT_POLICY: &str =
    r#"{"allowed_countries":["FR","DE","US"],"durability":{"replicas":2},"min_sites":1}"#;
const EU_POLICY: &str =
    r#"{"allowed_jurisdictions":["EU"],"durability":{"replicas":2},"min_sites":2}"#;
const FRANCE_POLICY: &str =
    r#"{"allowed_countries":["FR"],"durability":{"replicas":2},"min_sites":2}"#;

/// A storage node process and its files.
struct Node {
    name: String,
    config: PathBuf,
    data_dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nuage"))
            .args(["serve", "--role", "storage", "--config"])
            .arg(&self.config)
            .env("NUAGE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        loop {
            let line = rx
                .recv_timeout(WAIT_MAX)
                .unwrap_or_else(|_| panic!("node {} did not start", self.name));
            if line.starts_with("nuage storage node listening on ") {
                break;
            }
        }
        self.child = Some(child);
    }

    /// SIGKILL, as a crash or a power loss would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every file under `blobs/` (the blob ids).
    fn blobs(&self) -> BTreeSet<String> {
        files_under(&self.data_dir.join("blobs"))
            .into_iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    }

    /// Every file the node holds, temporary ones included.
    fn all_files(&self) -> BTreeSet<PathBuf> {
        files_under(&self.data_dir)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path);
            }
        }
    }
    out
}

/// Polls `check` until it returns None, or fails with its last complaint
/// after [`WAIT_MAX`].
#[track_caller]
fn wait_until(what: &str, mut check: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let Some(complaint) = check() else { return };
        assert!(
            Instant::now() < deadline,
            "{what}: still not true after {} s: {complaint}",
            WAIT_MAX.as_secs()
        );
        std::thread::sleep(POLL_EVERY);
    }
}

fn residency_set(gateway: &Server, policy: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args(["residency", "set", "--tenant", "default", "--policy", "-"])
        .args(["--endpoint", &gateway.endpoint, "--data-dir"])
        .arg(&gateway.data_dir)
        .env_remove("NUAGE_OPERATOR_TOKEN")
        .env("NUAGE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(policy.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "nuage residency set {policy} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `nuage ARGS --endpoint <gateway> --data-dir <its dir>` (the operator
/// token from the data directory); its exit code and JSON output.
fn operator_cli(gateway: &Server, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args(args)
        .args(["--json", "--endpoint", &gateway.endpoint, "--data-dir"])
        .arg(&gateway.data_dir)
        .env_remove("NUAGE_OPERATOR_TOKEN")
        .env("NUAGE_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// `nuage residency compliance` of a bucket of the default tenant: its exit
/// code (0 compliant, 3 not) and report.
fn compliance(gateway: &Server, bucket: &str) -> (i32, serde_json::Value) {
    let (code, json, stderr) = operator_cli(
        gateway,
        &[
            "residency",
            "compliance",
            "--tenant",
            "default",
            "--bucket",
            bucket,
        ],
    );
    assert!(
        code == 0 || code == 3,
        "compliance failed ({code}): {stderr}"
    );
    assert_eq!(json["compliant"].as_bool(), Some(code == 0), "{json}");
    (code, json)
}

fn dev_cluster_setup(dir: &Path, postgres_url: &str) -> toml::Value {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args(["dev", "cluster", "--setup-only", "--gateways", "2"])
        .arg("--dir")
        .arg(dir)
        .args(["--postgres-url", postgres_url])
        .args([
            "--repair-interval-seconds",
            "1",
            "--poll-interval-seconds",
            "1",
        ])
        .args(["--default-policy", DEFAULT_POLICY])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nuage dev cluster --setup-only failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.join("dev-cluster.toml")).unwrap();
    toml::from_str(&text).unwrap()
}

fn path_of(member: &toml::Value, key: &str) -> PathBuf {
    PathBuf::from(member[key].as_str().unwrap())
}

/// A PUT through `gateway` once it knows both French nodes are down: its
/// poller or a failed connection tells it, so a first write may fail on the
/// connection instead (503 `ServiceUnavailable` with S3's generic message);
/// polls (bounded) for the placement refusal.
async fn refused_put(gateway: &Server) -> (String, u16, String) {
    let no_retry =
        gateway.client_with(|c| c.retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()));
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let result = no_retry
            .put_object()
            .bucket("france-only")
            .key("refused")
            .body(common::random_bytes(1000, 9).into())
            .send()
            .await;
        let answer = common::failure_with_message(result);
        // A write that reached a node as it died is refused with 503 too,
        // but generically: wait for the placement's own refusal.
        let placement = answer.2.contains("residency policy cannot be met");
        if (answer.0 == "ServiceUnavailable" && placement) || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The nodes an audit entry's placement or replica change names, as
/// (node, country).
fn named_nodes(list: &serde_json::Value) -> Vec<(String, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_owned(),
                n["country"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Gateway A's log of the default tenant (pulled and verified by `nuage
/// audit`): each write names the French nodes it placed its blob on, and
/// the narrowing to France left migration entries from de-1, by the repair
/// service, before the German replicas were removed.
fn the_tenants_log_names_placements_and_migrations(
    a: &Server,
    home: &Path,
    new_blobs: &BTreeSet<String>,
) {
    let dir = home.join("audit-a");
    common::audit::pull_verified(a, &dir);
    // Gateway A's own log, named after it: another gateway's log of the
    // same tenant has another origin, never a second tree under this one.
    let checkpoint = std::fs::read_to_string(dir.join("checkpoint")).unwrap();
    let origin = checkpoint.lines().next().unwrap_or_default();
    assert!(origin.contains("/audit/gw-1/"), "origin {origin:?}");
    let french = |nodes: &[(String, String)]| {
        nodes
            .iter()
            .all(|(n, c)| (n == "fr-1" || n == "fr-2") && c == "FR")
    };
    let put = common::audit::search(
        &dir,
        &[
            "--action",
            "s3:PutObject",
            "--resource",
            "france-only/small",
        ],
    );
    assert_eq!(put.len(), 1, "{put:?}");
    let placement = put[0]["placement"].as_array().unwrap();
    assert_eq!(placement.len(), 1, "{put:?}");
    let nodes = named_nodes(&placement[0]["nodes"]);
    assert_eq!(nodes.len(), 2, "{put:?}");
    assert!(french(&nodes), "PutObject placed on {nodes:?}");
    let blob = placement[0]["blob"].as_str().unwrap();
    assert!(
        new_blobs.contains(blob),
        "{blob} is on the French nodes' disks"
    );
    // The multipart upload's parts (UploadPart is authorized, and logged,
    // as s3:PutObject; creating and completing the upload place nothing).
    let parts: Vec<serde_json::Value> = common::audit::search(
        &dir,
        &[
            "--action",
            "s3:PutObject",
            "--resource",
            "france-only/big.bin",
        ],
    )
    .into_iter()
    .filter(|e| e.get("placement").is_some())
    .collect();
    assert!(parts.len() >= 3, "{parts:?}");
    for part in &parts {
        let placed = &part["placement"][0];
        assert!(new_blobs.contains(placed["blob"].as_str().unwrap()));
        assert!(french(&named_nodes(&placed["nodes"])), "{part}");
    }
    // The migration to France: copies from de-1 to a French node, and de-1's
    // replicas removed because its site is no longer allowed.
    let migrations = common::audit::search(&dir, &["--action", "nuage:MigrateReplica"]);
    assert!(!migrations.is_empty(), "no migration entry");
    for entry in &migrations {
        assert_eq!(entry["actor"]["kind"], "service", "{entry}");
        assert_eq!(entry["actor"]["id"], "nuage-repair", "{entry}");
        assert_eq!(entry["decision"]["effect"], "allow", "{entry}");
        assert_eq!(entry["resource"], "arn:aws:s3:::eu-series", "{entry}");
        let from = named_nodes(&entry["replica"]["from"]);
        assert!(from.contains(&("de-1".into(), "DE".into())), "{entry}");
        assert!(french(&named_nodes(&entry["replica"]["to"])), "{entry}");
        let reason = entry["replica"]["reason"].as_str().unwrap();
        assert!(reason.contains("site not allowed"), "{entry}");
    }
    let removals = common::audit::search(&dir, &["--action", "nuage:RemoveReplica"]);
    let from_de1 = removals
        .iter()
        .filter(|e| {
            named_nodes(&e["replica"]["from"]) == [("de-1".to_owned(), "DE".to_owned())]
                && e["replica"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("site not allowed")
        })
        .count();
    assert!(
        from_de1 >= migrations.len(),
        "{from_de1} removals from de-1 for {} migrations",
        migrations.len()
    );
    // The scrub's discard of the corrupt copy on fr-1, before its
    // replacement.
    let discards = common::audit::search(&dir, &["--action", "nuage:DiscardReplica"]);
    assert_eq!(discards.len(), 1, "{discards:?}");
    let discarded = discards[0]["replica"]["blob"].as_str().unwrap();
    assert_eq!(
        named_nodes(&discards[0]["replica"]["from"]),
        [("fr-1".to_owned(), "FR".to_owned())],
        "{discards:?}"
    );
    // Node-loss repairs (fr-2 killed under the EU policy) name the dead
    // node; the one other repair is the discarded copy's replacement.
    let mut replacements = 0;
    for entry in common::audit::search(&dir, &["--action", "nuage:RepairReplica"]) {
        if entry["replica"]["reason"] == "node down" {
            assert_eq!(
                named_nodes(&entry["replica"]["from"]),
                [("fr-2".to_owned(), "FR".to_owned())],
                "{entry}"
            );
        } else {
            replacements += 1;
            assert_eq!(entry["replica"]["blob"], discarded, "{entry}");
            assert_eq!(
                named_nodes(&entry["replica"]["to"]),
                [("fr-1".to_owned(), "FR".to_owned())],
                "{entry}"
            );
        }
    }
    assert_eq!(replacements, 1, "one replacement for the discarded copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_nodes_in_three_countries_keeps_each_tenants_bytes_where_its_policy_says() {
    let Some(postgres) = nuage_testsupport::postgres::server() else {
        return;
    };
    let url = postgres.create_database();
    let root = tempfile::tempdir().unwrap();
    let manifest = dev_cluster_setup(&root.path().join("cluster"), &url);
    let mut nodes: Vec<Node> = manifest["node"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Node {
            name: m["name"].as_str().unwrap().to_owned(),
            config: path_of(m, "config"),
            data_dir: path_of(m, "data_dir"),
            child: None,
        })
        .collect();
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["fr-1", "fr-2", "de-1", "us-1"]);
    for node in &mut nodes {
        node.start();
    }
    let (fr1, fr2, de1, us1) = (0, 1, 2, 3);
    let gateways = manifest["gateway"].as_array().unwrap();
    // Gateway A repairs only while the test wants repair: a disk scan made
    // while no repair runs shows where the write path itself put the bytes
    // (repair would move misplaced replicas away and hide a misplacement).
    let start_gateway = |m: &toml::Value, repair: bool| {
        let mut config = path_of(m, "config");
        let text = std::fs::read_to_string(&config).unwrap();
        if !repair && !text.contains("repair = false") {
            // `[cluster]` is the file's last table.
            config = config.with_extension("no-repair.toml");
            std::fs::write(&config, format!("{text}repair = false\n")).unwrap();
        }
        Server::start_in(
            &path_of(m, "data_dir"),
            &["--config", config.to_str().unwrap()],
        )
    };
    // One after the other: the first creates the tenant in the database.
    let mut a = start_gateway(&gateways[0], false);
    let mut b = start_gateway(&gateways[1], false);
    assert_eq!(
        a.credentials.access_key_id, b.credentials.access_key_id,
        "dev cluster gave both gateways the same administrator"
    );
    let (mut s3a, mut s3b) = (a.client(), b.client());
    let home = tempfile::tempdir().unwrap();
    let home = home.path();

    // 1. EU policy; fr-2 killed during a series of uploads.
    residency_set(&a, EU_POLICY);
    s3a.create_bucket()
        .bucket("eu-series")
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from("fr-par"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let uploader = {
        let s3a = s3a.clone();
        tokio::spawn(async move {
            let mut refused = 0;
            for i in 0..SERIES_OBJECTS {
                let body = common::random_bytes(OBJECT_BYTES, i as u64);
                match s3a
                    .put_object()
                    .bucket("eu-series")
                    .key(format!("object-{i}"))
                    .body(body.into())
                    .send()
                    .await
                {
                    Ok(_) => acked_tx.send(i).unwrap(),
                    // A write in flight on the killed node fails whole,
                    // as a retryable 503 (the SDK retried it already).
                    Err(e) => {
                        use aws_sdk_s3::error::ProvideErrorMetadata as _;
                        assert_eq!(e.code(), Some("ServiceUnavailable"), "{e:?}");
                        refused += 1;
                    }
                }
            }
            refused
        })
    };
    let mut acked = Vec::new();
    while acked.len() < KILL_AFTER {
        acked.push(acked_rx.recv().await.expect("the first uploads failed"));
    }
    nodes[fr2].kill();
    let refused = uploader.await.unwrap();
    while let Ok(i) = acked_rx.try_recv() {
        acked.push(i);
    }
    assert!(
        acked.len() > KILL_AFTER,
        "writes went on after fr-2 died (on fr-1 and de-1): {} acknowledged, {refused} refused",
        acked.len()
    );
    for i in &acked {
        let got = common::get_bytes(&s3b, "eu-series", &format!("object-{i}")).await;
        assert!(
            got == common::random_bytes(OBJECT_BYTES, *i as u64),
            "acknowledged object-{i} reads back through gateway B"
        );
    }
    // Where the writes themselves went (no repair has run): nowhere in the US.
    assert!(
        nodes[us1].all_files().is_empty(),
        "no write under the EU policy reached us-1"
    );
    a.stop();
    a = start_gateway(&gateways[0], true);
    // Repair: every live blob on both EU nodes still up, none in the US.
    // (Every live blob has a replica on fr-1 or de-1: two replicas, at most
    // one on fr-2.)
    wait_until("repair restores 2 replicas on fr-1 and de-1", || {
        let (on_fr1, on_de1) = (nodes[fr1].blobs(), nodes[de1].blobs());
        let differ: Vec<&String> = on_fr1.symmetric_difference(&on_de1).collect();
        (!differ.is_empty())
            .then(|| format!("{} blob(s) on one node only: {differ:?}", differ.len()))
    });
    assert!(
        nodes[us1].all_files().is_empty(),
        "nothing ever reached us-1"
    );
    let live: BTreeSet<String> = nodes[fr1].blobs();
    assert!(
        live.len() >= acked.len(),
        "{} blobs for {} objects",
        live.len(),
        acked.len()
    );
    // fr-2 returns: its replicas are surplus; every live blob ends on exactly
    // two EU nodes. (A write fr-2 made durable but never acknowledged may
    // stay there as an orphan: not a live blob.)
    nodes[fr2].start();
    let stale: BTreeSet<String> = nodes[fr2].blobs().difference(&live).cloned().collect();
    wait_until("two replicas of every blob on EU nodes", || {
        let on: Vec<BTreeSet<String>> = [fr1, fr2, de1].iter().map(|n| nodes[*n].blobs()).collect();
        let wrong: Vec<(&String, usize)> = live
            .iter()
            .map(|b| (b, on.iter().filter(|set| set.contains(b)).count()))
            .filter(|(_, n)| *n != 2)
            .collect();
        (!wrong.is_empty()).then(|| format!("replica counts: {wrong:?}"))
    });

    // 2. France only. Set while no repair runs, the bucket reports itself
    // non-compliant, with the German replicas to move; then repair moves
    // them to France and the bucket complies.
    a.stop();
    a = start_gateway(&gateways[0], false);
    let (code, _, stderr) = operator_cli(&a, &["cluster", "repair"]);
    assert!(
        code == 1 && stderr.contains("another gateway"),
        "a gateway with repair = false runs no pass on demand: {stderr}"
    );
    let (code, report) = compliance(&a, "eu-series");
    assert_eq!(
        (code, &report["policy_source"]),
        (0, &"tenant".into()),
        "{report}"
    );
    assert!(
        !nodes[de1].blobs().is_empty(),
        "repair used de-1 while fr-2 was down"
    );
    residency_set(&a, FRANCE_POLICY);
    let (code, report) = compliance(&a, "eu-series");
    assert_eq!(code, 3, "{report}");
    assert!(report["replicas_to_move"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["non_compliant_blobs"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(
        report["policy"]["allowed_countries"],
        serde_json::json!(["FR"]),
        "{report}"
    );
    a.stop();
    a = start_gateway(&gateways[0], true);
    s3a = a.client();
    wait_until("narrowing to France empties de-1", || {
        let on_de1 = nodes[de1].blobs();
        (!on_de1.is_empty()).then(|| format!("{} blob(s) still on de-1", on_de1.len()))
    });
    wait_until("every blob on both French nodes", || {
        let (on_fr1, on_fr2) = (nodes[fr1].blobs(), nodes[fr2].blobs());
        let extra: BTreeSet<&String> = on_fr2.difference(&on_fr1).collect();
        (on_fr1 != live || !extra.iter().all(|b| stale.contains(*b)))
            .then(|| format!("fr-1 {on_fr1:?} fr-2 {on_fr2:?}"))
    });
    for i in &acked {
        let got = common::get_bytes(&s3a, "eu-series", &format!("object-{i}")).await;
        assert!(got == common::random_bytes(OBJECT_BYTES, *i as u64));
    }
    wait_until("the narrowed bucket complies", || {
        let (code, report) = compliance(&b, "eu-series");
        (code != 0).then(|| report.to_string())
    });
    scrub_replaces_a_corrupt_replica(&a, &nodes[fr1], &nodes[fr2], &s3b, &acked).await;
    a_drain_never_moves_data_out_of_its_policy(&a, &b, &nodes, &s3a).await;
    // The repair lease: gateway B, configured to repair too, runs no pass
    // while A holds the cluster's lease (two repairers could delete each
    // other's copies).
    let b_config = path_of(&gateways[1], "config");
    let repairing = b_config.with_extension("repairing.toml");
    let text = std::fs::read_to_string(&b_config).unwrap();
    assert!(text.contains("repair = false\n"), "{text}");
    std::fs::write(&repairing, text.replace("repair = false\n", "")).unwrap();
    b.stop();
    b = Server::start_in(
        &path_of(&gateways[1], "data_dir"),
        &["--config", repairing.to_str().unwrap()],
    );
    let (code, _, stderr) = operator_cli(&b, &["cluster", "repair"]);
    assert!(
        code == 1 && stderr.contains("gateway gw-1 holds the cluster's repair lease"),
        "{stderr}"
    );
    b.stop();
    b = start_gateway(&gateways[1], false);
    s3b = b.client();
    let (before_fr1, before_fr2) = (nodes[fr1].blobs(), nodes[fr2].blobs());
    // From here on no repair runs: the scans show the write path's placement.
    a.stop();
    a = start_gateway(&gateways[0], false);
    s3a = a.client();

    common::aws_ok(&a, home, &["s3", "mb", "s3://france-only"]);
    let small = common::random_bytes(100_000, 7);
    s3a.put_object()
        .bucket("france-only")
        .key("small")
        .body(small.clone().into())
        .send()
        .await
        .unwrap();
    // Read-after-write across gateways: B sees A's write at once.
    assert!(common::get_bytes(&s3b, "france-only", "small").await == small);
    let big = home.join("big.bin");
    std::fs::write(&big, common::random_bytes(20 * 1024 * 1024, 8)).unwrap();
    common::aws_ok(
        &a,
        home,
        &[
            "s3",
            "cp",
            big.to_str().unwrap(),
            "s3://france-only/big.bin",
        ],
    );
    let listed = s3b
        .list_objects_v2()
        .bucket("france-only")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["big.bin", "small"]);
    let back = home.join("big.back");
    common::aws_ok(
        &b,
        home,
        &[
            "s3",
            "cp",
            "s3://france-only/big.bin",
            back.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&big).unwrap());

    let new_fr1: BTreeSet<String> = nodes[fr1]
        .blobs()
        .difference(&before_fr1)
        .cloned()
        .collect();
    let new_fr2: BTreeSet<String> = nodes[fr2]
        .blobs()
        .difference(&before_fr2)
        .cloned()
        .collect();
    // One blob for the small object, one per part of the multipart upload
    // (the aws CLI sends 8 MiB parts: three).
    assert!(new_fr1.len() >= 4, "new blobs on fr-1: {new_fr1:?}");
    assert_eq!(new_fr1, new_fr2, "every new blob on both French nodes");
    assert!(nodes[de1].all_files().is_empty(), "nothing in Germany");
    assert!(
        nodes[us1].all_files().is_empty(),
        "nothing in the United States"
    );
    the_tenants_log_names_placements_and_migrations(&a, home, &new_fr1);

    // 3. Both French nodes down: the write is refused, nothing goes abroad.
    let (de_before, us_before) = (nodes[de1].all_files(), nodes[us1].all_files());
    nodes[fr1].kill();
    nodes[fr2].kill();
    for gateway in [&a, &b] {
        let (code, status, message) = refused_put(gateway).await;
        assert_eq!(
            (code.as_str(), status),
            ("ServiceUnavailable", 503),
            "{message}"
        );
        assert!(
            message.contains("residency policy cannot be met") && message.contains("FR"),
            "{message}"
        );
    }
    let cli = common::aws_err(
        &b,
        home,
        &[
            "s3",
            "cp",
            big.to_str().unwrap(),
            "s3://france-only/refused-big",
        ],
    );
    assert!(cli.contains("ServiceUnavailable"), "{cli}");
    assert_eq!(nodes[de1].all_files(), de_before, "de-1 gained no file");
    assert_eq!(nodes[us1].all_files(), us_before, "us-1 gained no file");
    assert!(nodes[us1].all_files().is_empty());
}

/// A flipped byte in one replica on fr-1: a scrub pass (run through the
/// CLI) finds it, replaces it from fr-2's good copy on the only compliant
/// node that lacks one (fr-1 again), and the object reads back whole.
async fn scrub_replaces_a_corrupt_replica(
    a: &Server,
    fr1: &Node,
    fr2: &Node,
    s3b: &aws_sdk_s3::Client,
    acked: &[usize],
) {
    let (code, clean, stderr) = operator_cli(a, &["cluster", "scrub"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(clean["bad"], 0, "a healthy cluster scrubs clean: {clean}");
    assert!(
        clean["verified"].as_u64().unwrap() >= 2 * acked.len() as u64,
        "{clean}"
    );
    let victim = fr1
        .blobs()
        .intersection(&fr2.blobs())
        .next()
        .unwrap()
        .clone();
    let path = files_under(&fr1.data_dir.join("blobs"))
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == victim))
        .unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x01;
    std::fs::write(&path, &bad).unwrap();
    let (code, report, stderr) = operator_cli(a, &["cluster", "scrub"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        (&report["bad"], &report["replaced"]),
        (&1.into(), &1.into()),
        "{report}"
    );
    let now = std::fs::read(&path).unwrap();
    assert!(
        now != bad && now.len() == good.len(),
        "fr-1 holds a good copy of {victim} again"
    );
    for i in acked {
        let got = common::get_bytes(s3b, "eu-series", &format!("object-{i}")).await;
        assert!(got == common::random_bytes(OBJECT_BYTES, *i as u64));
    }
}

/// Draining fr-1 under a France-only policy with two French nodes: no
/// compliant node can take its replicas, so they stay (readable) and the
/// bucket reports itself non-compliant; nothing moves to Germany or the
/// United States, and a new write is refused. Every gateway sees the
/// drain (it is in the shared database). Undraining ends it.
async fn a_drain_never_moves_data_out_of_its_policy(
    a: &Server,
    b: &Server,
    nodes: &[Node],
    s3a: &aws_sdk_s3::Client,
) {
    let (fr1, de1, us1) = (&nodes[0], &nodes[2], &nodes[3]);
    let (code, node, stderr) = operator_cli(a, &["cluster", "drain", "fr-1"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(node["draining"], true, "{node}");
    assert!(node["replicas"]["replicas"].as_u64().unwrap() > 0, "{node}");
    wait_until("gateway B sees fr-1 draining", || {
        let (_, nodes, _) = operator_cli(b, &["cluster", "nodes"]);
        let fr1 = nodes["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["node"] == "fr-1").cloned());
        (fr1.as_ref().map(|n| &n["status"]) != Some(&"draining".into())).then(|| format!("{fr1:?}"))
    });
    let (code, report, stderr) = operator_cli(a, &["cluster", "repair"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        report["copied"], 0,
        "no compliant node can take fr-1's replicas: {report}"
    );
    assert!(report["failed_count"].as_u64().unwrap() > 0, "{report}");
    assert!(
        de1.all_files().is_empty() && us1.all_files().is_empty(),
        "nothing left France"
    );
    assert!(
        !fr1.blobs().is_empty(),
        "fr-1's replicas stay until they can move"
    );
    let (code, report) = compliance(b, "eu-series");
    assert_eq!(code, 3, "{report}");
    assert!(report["replicas_to_move"].as_u64().unwrap() > 0, "{report}");
    let refused = s3a
        .put_object()
        .bucket("eu-series")
        .key("while-draining")
        .body(common::random_bytes(1000, 11).into())
        .send()
        .await;
    let (code, status, message) = common::failure_with_message(refused);
    assert_eq!(
        (code.as_str(), status),
        ("ServiceUnavailable", 503),
        "{message}"
    );
    assert!(de1.all_files().is_empty() && us1.all_files().is_empty());

    let (code, node, stderr) = operator_cli(b, &["cluster", "undrain", "fr-1"]);
    assert_eq!((code, &node["draining"]), (0, &false.into()), "{stderr}");
    wait_until("the bucket complies again once fr-1 is back", || {
        let (code, report) = compliance(a, "eu-series");
        (code != 0).then(|| report.to_string())
    });
}
