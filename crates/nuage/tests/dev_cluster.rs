//! `nuage dev cluster`, as the README has a newcomer run it: four storage
//! nodes in France, Germany and the United States and one gateway as
//! children of one command. The aws CLI stores and reads an object through
//! the gateway; the bytes land on the French nodes only (the default policy
//! keeps blobs in the first region's country, France); and a `kill -9` of
//! the supervisor takes every child down with it (each watches its parent).

#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A generous bound on the start and on the children's exit (the checks
/// poll and pass as soon as the condition holds).
const WAIT_MAX: Duration = Duration::from_secs(120);
const POLL_EVERY: Duration = Duration::from_millis(200);
/// The environment variable `nuage dev cluster` names itself in, in each child.
const SUPERVISOR_ENV: &str = "NUAGE_DEV_SUPERVISOR_PID";

/// The processes whose environment names `supervisor` as theirs and that
/// still run (a zombie has exited).
fn children_of(supervisor: u32) -> BTreeSet<u32> {
    let marker = format!("{SUPERVISOR_ENV}={supervisor}");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let named = environ
            .split(|b| *b == 0)
            .any(|var| var == marker.as_bytes());
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ...`: the state follows the last `)`.
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
        if named && !zombie {
            out.insert(pid);
        }
    }
    out
}

fn blobs_under(dir: &Path) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                count += 1;
            }
        }
    }
    count
}

#[test]
fn dev_cluster_runs_a_multi_site_cluster_and_takes_its_children_down_with_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cluster");
    let mut supervisor = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args(["dev", "cluster", "--gateways", "1", "--dir"])
        .arg(&dir)
        .env("NUAGE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = supervisor.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let endpoint = loop {
        let line = rx
            .recv_timeout(WAIT_MAX)
            .expect("nuage dev cluster printed no gateway endpoint");
        if let Some(rest) = line.strip_prefix("nuage dev cluster: gateway gw-1 listening on ") {
            break rest.trim().to_owned();
        }
    };
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(dir.join("dev-cluster.toml")).unwrap()).unwrap();
    let data_dir = |member: &toml::Value| PathBuf::from(member["data_dir"].as_str().unwrap());
    let gateway = Server::attach(&endpoint, &data_dir(&manifest["gateway"][0]));
    let children = children_of(supervisor.id());
    assert_eq!(children.len(), 5, "four nodes and a gateway: {children:?}");

    // The README's first steps, with the aws CLI.
    let home = root.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let file = home.join("some-file");
    std::fs::write(&file, common::random_bytes(300_000, 5)).unwrap();
    common::aws_ok(&gateway, &home, &["s3", "mb", "s3://demo"]);
    common::aws_ok(
        &gateway,
        &home,
        &["s3", "cp", file.to_str().unwrap(), "s3://demo/"],
    );
    let back = home.join("back");
    common::aws_ok(
        &gateway,
        &home,
        &["s3", "cp", "s3://demo/some-file", back.to_str().unwrap()],
    );
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&file).unwrap());
    for node in manifest["node"].as_array().unwrap() {
        let name = node["name"].as_str().unwrap();
        let blobs = blobs_under(&data_dir(node).join("blobs"));
        if name.starts_with("fr-") {
            assert!(blobs >= 1, "{name} holds a replica");
        } else {
            assert_eq!(blobs, 0, "{name} is outside the default policy's France");
        }
    }

    // kill -9 of the supervisor: no chance to stop its children itself.
    let pid = supervisor.id();
    supervisor.kill().unwrap();
    supervisor.wait().unwrap();
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let left = children_of(pid);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "children still running {} s after the supervisor died: {left:?}",
            WAIT_MAX.as_secs()
        );
        std::thread::sleep(POLL_EVERY);
    }
}
