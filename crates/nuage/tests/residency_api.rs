//! Residency policies of tenants and buckets, end to end: a server with a
//! topology of sites in France, Germany and the US; `nuage residency
//! get|set|clear` through the admin API; CreateBucket with the aws CLI,
//! refused in a region whose sites cannot meet the tenant's policy; and the
//! changes in the tenant's audit log (`nuage audit pull`, `search`).
#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use common::audit::{pull_ok, search, tenant_of};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const TOPOLOGY: &str = r#"
[[region]]
id = "fr-par"
[[region]]
id = "de-fra"
[[region]]
id = "us-east"

[[site]]
id = "par1"
region = "fr-par"
country = "FR"
operator = { entity = "Nuage SAS", country_of_control = "FR" }
qualifications = ["secnumcloud"]
[[site]]
id = "par2"
region = "fr-par"
country = "FR"
operator = { entity = "Nuage SAS", country_of_control = "FR" }
qualifications = ["secnumcloud"]
[[site]]
id = "fra1"
region = "de-fra"
country = "DE"
operator = { entity = "Nuage GmbH", country_of_control = "DE" }
[[site]]
id = "use1"
region = "us-east"
country = "US"
operator = { entity = "Nuage Inc", country_of_control = "US" }

[[node]]
id = "par1-n1"
site = "par1"
endpoint = "https://par1-n1:7000"
capacity_bytes = 1000000000
[[node]]
id = "par2-n1"
site = "par2"
endpoint = "https://par2-n1:7000"
capacity_bytes = 1000000000
[[node]]
id = "fra1-n1"
site = "fra1"
endpoint = "https://fra1-n1:7000"
capacity_bytes = 1000000000
[[node]]
id = "use1-n1"
site = "use1"
endpoint = "https://use1-n1:7000"
capacity_bytes = 1000000000
"#;

const FRANCE_ONLY: &str = r#"{"allowed_countries":["FR"],"durability":{"replicas":2}}"#;
const EU: &str = r#"{"allowed_jurisdictions":["EU"],"durability":{"replicas":2}}"#;
const FRANCE_QUALIFIED: &str = r#"{"allowed_countries":["FR"],"required_qualifications":["secnumcloud"],"durability":{"replicas":2},"min_sites":2}"#;
const GERMANY_ONLY: &str = r#"{"allowed_countries":["DE"],"durability":{"replicas":1}}"#;

fn start(dir: &Path) -> Server {
    let topology = dir.join("topology.toml");
    std::fs::write(&topology, TOPOLOGY).unwrap();
    let config = dir.join("nuage.toml");
    std::fs::write(
        &config,
        format!(
            "topology_file = {:?}\n\
             [[regions]]\nname = \"fr-par\"\ncountry = \"FR\"\n\
             [[regions]]\nname = \"de-fra\"\ncountry = \"DE\"\n\
             [[regions]]\nname = \"us-east\"\ncountry = \"US\"\n",
            topology.to_str().unwrap()
        ),
    )
    .unwrap();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    Server::start_in(&data, &["--config", config.to_str().unwrap()])
}

/// `nuage residency ARGS` against the server, with the operator token from
/// its data directory.
fn residency(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nuage"))
        .arg("residency")
        .args(args)
        .args(["--endpoint", &server.endpoint, "--data-dir"])
        .arg(&server.data_dir)
        .env_remove("NUAGE_OPERATOR_TOKEN")
        .env("NUAGE_LOG", "warn")
        .output()
        .unwrap()
}

#[track_caller]
fn residency_json(server: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = residency(server, &all);
    assert!(
        out.status.success(),
        "nuage residency {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[track_caller]
fn residency_err(server: &Server, args: &[&str]) -> String {
    let out = residency(server, args);
    assert!(
        !out.status.success(),
        "nuage residency {args:?} should have failed, printed {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn policy_file(dir: &Path, name: &str, json: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, json).unwrap();
    path.to_str().unwrap().to_owned()
}

fn create_bucket(server: &Server, home: &Path, bucket: &str, region: &str) -> Output {
    let constraint = format!("LocationConstraint={region}");
    common::aws(
        server,
        home,
        &[
            "s3api",
            "create-bucket",
            "--bucket",
            bucket,
            "--create-bucket-configuration",
            &constraint,
        ],
    )
}

#[test]
fn residency_policies_are_stored_narrowed_enforced_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let server = start(dir);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let tenant = tenant_of(&server, home);
    let france = policy_file(dir, "france.json", FRANCE_ONLY);
    let eu = policy_file(dir, "eu.json", EU);
    let qualified = policy_file(dir, "qualified.json", FRANCE_QUALIFIED);
    let germany = policy_file(dir, "germany.json", GERMANY_ONLY);

    // No policy yet: every region is open, and `get` says so.
    let view = residency_json(&server, &["get", "--tenant", &tenant]);
    assert_eq!(view["policy"], Value::Null, "{view}");
    assert_eq!(view["regions"].as_array().unwrap().len(), 3, "{view}");
    let out = create_bucket(&server, home, "before-policy-us", "us-east");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A France-only tenant policy is refused while a bucket sits in us-east,
    // whose sites cannot satisfy it; the bucket is named.
    let refused = residency_err(&server, &["set", "--tenant", &tenant, "--policy", &france]);
    assert!(refused.contains("ResidencyConflict"), "{refused}");
    assert!(refused.contains("before-policy-us"), "{refused}");
    common::aws_ok(
        &server,
        home,
        &["s3api", "delete-bucket", "--bucket", "before-policy-us"],
    );

    let set = residency_json(&server, &["set", "--tenant", &tenant, "--policy", &france]);
    assert_eq!(set["policy"]["allowed_countries"][0], "FR", "{set}");
    let regions = set["regions"].as_array().unwrap();
    let region = |name: &str| {
        regions
            .iter()
            .find(|r| r["region"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(region("fr-par")["satisfiable"], true, "{set}");
    assert_eq!(region("de-fra")["satisfiable"], false, "{set}");
    assert_eq!(region("de-fra")["rule"], "location", "{set}");

    // CreateBucket in Germany is refused with the rule; no bucket exists.
    let out = create_bucket(&server, home, "photos-de", "de-fra");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("InvalidLocationConstraint"), "{stderr}");
    assert!(stderr.contains("rule: location"), "{stderr}");
    assert!(stderr.contains("de-fra"), "{stderr}");
    let listed = common::aws_ok(
        &server,
        home,
        &["s3api", "list-buckets", "--query", "Buckets[].Name"],
    );
    assert!(!listed.contains("photos-de"), "{listed}");
    // In France it is created.
    let out = create_bucket(&server, home, "photos-fr", "fr-par");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A bucket policy widening to the EU is refused, with the narrowing reason.
    let refused = residency_err(
        &server,
        &[
            "set",
            "--tenant",
            &tenant,
            "--bucket",
            "photos-fr",
            "--policy",
            &eu,
        ],
    );
    assert!(refused.contains("PolicyNotNarrower"), "{refused}");
    assert!(refused.contains("(location)"), "{refused}");
    assert!(refused.contains("EU"), "{refused}");

    // A narrowing one is accepted and returned, stored and effective.
    let set = residency_json(
        &server,
        &[
            "set",
            "--tenant",
            &tenant,
            "--bucket",
            "photos-fr",
            "--policy",
            &qualified,
        ],
    );
    assert_eq!(set["effective_source"], "bucket", "{set}");
    let got = residency_json(
        &server,
        &["get", "--tenant", &tenant, "--bucket", "photos-fr"],
    );
    assert_eq!(got["region"], "fr-par");
    assert_eq!(
        got["policy"]["required_qualifications"][0], "secnumcloud",
        "{got}"
    );
    assert_eq!(got["policy"]["min_sites"], 2, "{got}");
    assert_eq!(got["effective"], got["policy"], "{got}");
    assert_eq!(got["effective_source"], "bucket");
    assert_eq!(got["feasibility"]["satisfiable"], true, "{got}");
    // The table form says the same.
    let out = residency(
        &server,
        &["get", "--tenant", &tenant, "--bucket", "photos-fr"],
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("Effective policy (from bucket)"),
        "{printed}"
    );
    assert!(printed.contains("Region fr-par: satisfiable"), "{printed}");

    // A tenant change the bucket's policy would no longer narrow is refused,
    // naming the bucket; the tenant's policy is unchanged.
    let refused = residency_err(&server, &["set", "--tenant", &tenant, "--policy", &germany]);
    assert!(refused.contains("ResidencyConflict"), "{refused}");
    assert!(refused.contains("photos-fr"), "{refused}");
    let view = residency_json(&server, &["get", "--tenant", &tenant]);
    assert_eq!(view["policy"]["allowed_countries"][0], "FR", "{view}");

    // Cleared, the bucket follows its tenant again.
    let out = residency(
        &server,
        &["clear", "--tenant", &tenant, "--bucket", "photos-fr"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = residency_json(
        &server,
        &["get", "--tenant", &tenant, "--bucket", "photos-fr"],
    );
    assert_eq!(got["policy"], Value::Null, "{got}");
    assert_eq!(got["effective_source"], "tenant", "{got}");
    assert_eq!(got["effective"]["allowed_countries"][0], "FR", "{got}");

    // Every change, accepted or refused, is in the tenant's audit log.
    let log = dir.join("log");
    let creds = (
        server.credentials.access_key_id.as_str(),
        server.credentials.secret_access_key.as_str(),
    );
    pull_ok(&server, creds, &log);
    let tenant_puts = search(&log, &["--action", "admin:PutTenantResidency"]);
    let statuses: Vec<u64> = tenant_puts
        .iter()
        .map(|e| e["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, vec![409, 200, 409], "{tenant_puts:?}");
    assert_eq!(tenant_puts[1]["actor"]["kind"], "operator");
    let bucket_puts = search(&log, &["--action", "admin:PutBucketResidency"]);
    let statuses: Vec<u64> = bucket_puts
        .iter()
        .map(|e| e["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, vec![422, 200], "{bucket_puts:?}");
    assert_eq!(bucket_puts[1]["resource"], "arn:aws:s3:::photos-fr");
    let cleared = search(&log, &["--action", "admin:DeleteBucketResidency"]);
    assert_eq!(cleared.len(), 1, "{cleared:?}");
}

#[test]
fn a_configured_region_missing_from_the_topology_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("topology.toml");
    std::fs::write(&topology, TOPOLOGY).unwrap();
    let config = dir.path().join("nuage.toml");
    std::fs::write(
        &config,
        format!(
            "topology_file = {:?}\n[[regions]]\nname = \"it-mil\"\ncountry = \"IT\"\n",
            topology.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("NUAGE_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("it-mil"), "{stderr}");
    assert!(stderr.contains("not in topology_file"), "{stderr}");
}

/// A compute host in Germany (`[compute] site = "fra1"`): RunInstances for a
/// France-only tenant is refused with a residency error before anything is
/// looked up or started, never placed elsewhere; once the tenant's policy
/// allows Germany, the same request gets past residency (and stops at the
/// image, which does not exist).
#[test]
fn an_instance_never_runs_on_a_host_outside_the_tenants_policy() {
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("topology.toml");
    std::fs::write(&topology, TOPOLOGY).unwrap();
    let config = dir.path().join("nuage.toml");
    std::fs::write(
        &config,
        format!(
            "topology_file = {:?}\n\
             [[regions]]\nname = \"fr-par\"\ncountry = \"FR\"\n\
             [[regions]]\nname = \"de-fra\"\ncountry = \"DE\"\n\
             [[regions]]\nname = \"us-east\"\ncountry = \"US\"\n\
             [compute]\nsite = \"fra1\"\naccelerator = \"tcg\"\nvcpus = 1\nmemory_mib = 256\n",
            topology.to_str().unwrap()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let server = Server::start_in(&data, &["--config", config.to_str().unwrap()]);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let tenant = tenant_of(&server, &home);
    let run = |home: &Path| {
        common::aws(
            &server,
            home,
            &[
                "ec2",
                "run-instances",
                "--image-id",
                "ami-0123456789abcdef0",
                "--instance-type",
                "n1.nano",
            ],
        )
    };

    let france = policy_file(dir.path(), "france.json", FRANCE_ONLY);
    residency_json(&server, &["set", "--tenant", &tenant, "--policy", &france]);
    let out = run(&home);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("(Unsupported)") && stderr.contains("residency policy"),
        "{stderr}"
    );
    assert!(stderr.contains("fra1") && stderr.contains("DE"), "{stderr}");

    let germany = policy_file(dir.path(), "germany.json", GERMANY_ONLY);
    residency_json(&server, &["set", "--tenant", &tenant, "--policy", &germany]);
    let out = run(&home);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("InvalidAMIID"), "{stderr}");
}
