//! `nuage residency verify` and `nuage residency check-topology`, through the
//! real binary: attestations made with the library and a fresh key verify;
//! one altered byte, another key, another format, a non-note are rejected
//! with a non-zero exit and a message; topology files are checked.
#![allow(clippy::unwrap_used)]

use ed25519_dalek::SigningKey;
use nuage_placement::{Attestation, ReplicaRef, ResidencyPolicy, Subject, Topology, verifier_key};
use rand::RngCore as _;
use std::path::Path;
use std::process::{Command, Output};

const ISSUER: &str = "nuage.example/residency/eu-west";

/// France (SecNumCloud sites par1, par2), Germany, the US.
const TOPOLOGY: &str = r#"
[[region]]
id = "eu-west"

[[region]]
id = "us-east"

[[site]]
id = "par1"
region = "eu-west"
country = "FR"
jurisdictions = ["EU", "EEA"]
qualifications = ["secnumcloud"]
operator = { entity = "Nuage Exploitation SAS", country_of_control = "FR" }

[[site]]
id = "par2"
region = "eu-west"
country = "FR"
qualifications = ["secnumcloud"]
operator = { entity = "Nuage Exploitation SAS", country_of_control = "FR" }

[[site]]
id = "fra1"
region = "eu-west"
country = "DE"
operator = { entity = "Nuage Deutschland GmbH", country_of_control = "DE" }

[[site]]
id = "iad1"
region = "us-east"
country = "US"
operator = { entity = "Nuage US Inc.", country_of_control = "US" }

[[node]]
id = "par1-n1"
site = "par1"
endpoint = "https://par1-n1.example.net:7443"
capacity_bytes = 4_000_000_000_000

[[node]]
id = "par2-n1"
site = "par2"
endpoint = "https://par2-n1.example.net:7443"
capacity_bytes = 4_000_000_000_000

[[node]]
id = "fra1-n1"
site = "fra1"
endpoint = "https://fra1-n1.example.net:7443"
capacity_bytes = 2_000_000_000_000

[[node]]
id = "iad1-n1"
site = "iad1"
endpoint = "https://iad1-n1.example.net:7443"
capacity_bytes = 2_000_000_000_000

[[compute_host]]
id = "par1-c1"
site = "par1"
endpoint = "https://par1-c1.example.net:7300"
"#;

const POLICY: &str = r#"{"allowed_countries":["FR"],"required_qualifications":["secnumcloud"],"allowed_operator_countries":["FR"],"durability":{"replicas":2},"min_sites":2}"#;

fn nuage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args(args)
        .env("NUAGE_LOG", "error")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn fresh_key() -> SigningKey {
    let mut seed = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

fn attestation(nodes: &[&str]) -> Attestation {
    Attestation::new(
        &Topology::from_toml(TOPOLOGY).unwrap(),
        &ResidencyPolicy::from_json(POLICY).unwrap(),
        "eu-west",
        ISSUER,
        time::OffsetDateTime::now_utc(),
        Subject {
            tenant: "123456789012".into(),
            bucket: "factures".into(),
            key: Some("2026/novembre.pdf".into()),
            version_id: Some("00000000000000070a1b2c3d".into()),
        },
        nodes
            .iter()
            .map(|node| ReplicaRef {
                blob: Some("0194f3c2a7d84e6b".into()),
                chunk: None,
                node: (*node).to_string(),
            })
            .collect(),
    )
    .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn attestations_verify_offline_and_tampering_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let key = fresh_key();
    let vkey = verifier_key(ISSUER, &key.verifying_key()).unwrap();
    let statement = attestation(&["par1-n1", "par2-n1"]);
    let signed = statement.sign(&key).unwrap();
    let file = write(dir.path(), "attestation.txt", &signed);

    // Verifies, with the key given inline, and prints every replica.
    let out = nuage(&["residency", "verify", &file, "--key", &vkey]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("Verified: signed by {ISSUER}+")),
        "{text}"
    );
    assert!(text.contains("Compliant:  yes"), "{text}");
    assert!(
        text.contains("tenant 123456789012, bucket factures"),
        "{text}"
    );
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("0194f3c2a7d84e6b"))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[0].contains("par1-n1") && rows[0].contains("FR,EU,EEA"),
        "{text}"
    );
    assert!(rows[0].contains("Nuage Exploitation SAS") && rows[0].contains("secnumcloud"));
    assert!(rows[1].contains("par2-n1"), "{text}");

    // The key from a file, and JSON output that reads back to the statement.
    let key_file = write(dir.path(), "region.vkey", &format!("{vkey}\n"));
    let out = nuage(&["residency", "verify", &file, "--key", &key_file, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let parsed: Attestation = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed, statement);

    // One byte of a replica's country changed: rejected.
    let needle = r#""country":"FR""#;
    let at = signed.find(needle).unwrap() + needle.len() - 2;
    let mut altered = signed.clone().into_bytes();
    altered[at] = b'D'; // FR -> DR
    let altered_file = write(
        dir.path(),
        "altered.txt",
        &String::from_utf8(altered).unwrap(),
    );
    let out = nuage(&["residency", "verify", &altered_file, "--key", &vkey]);
    assert!(!out.status.success());
    assert!(stdout(&out).is_empty(), "nothing printed as verified");
    assert!(
        stderr(&out).contains("does not verify: the attestation was altered or forged"),
        "{}",
        stderr(&out)
    );

    // Another key (same issuer name): rejected.
    let other = verifier_key(ISSUER, &fresh_key().verifying_key()).unwrap();
    let out = nuage(&["residency", "verify", &file, "--key", &other]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not signed by the key"),
        "{}",
        stderr(&out)
    );

    // Not an attestation at all, and a malformed key.
    let junk = write(dir.path(), "junk.txt", "hello\n");
    let out = nuage(&["residency", "verify", &junk, "--key", &vkey]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a signed note"),
        "{}",
        stderr(&out)
    );
    let out = nuage(&[
        "residency",
        "verify",
        &file,
        "--key",
        "nuage.example+zz+AAAA",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("verifier key"), "{}", stderr(&out));
}

#[test]
fn non_compliant_attestations_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let key = fresh_key();
    let vkey = verifier_key(ISSUER, &key.verifying_key()).unwrap();
    // One replica in Germany: authentic, but not compliant with a FR policy.
    let statement = attestation(&["par1-n1", "fra1-n1"]);
    assert!(!statement.compliant);
    let file = write(dir.path(), "a.txt", &statement.sign(&key).unwrap());
    let out = nuage(&["residency", "verify", &file, "--key", &vkey]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Compliant:  NO"), "{text}");
    assert!(
        text.contains("replica on fra1-n1 at site fra1: in DE"),
        "{text}"
    );
    let out = nuage(&[
        "residency",
        "verify",
        &file,
        "--key",
        &vkey,
        "--require-compliant",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not comply"), "{}", stderr(&out));
}

#[test]
fn check_topology() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "topology.toml", TOPOLOGY);
    let out = nuage(&["residency", "check-topology", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("valid topology: 2 region(s), 4 site(s), 4 node(s), 1 compute host(s)"),
        "{text}"
    );
    let par1 = text.lines().find(|l| l.starts_with("par1")).unwrap();
    assert!(
        par1.contains("FR,EU,EEA") && par1.contains("4.0 TB"),
        "{par1}"
    );
    // The compute host is counted in its site's row, and only there.
    assert!(par1.trim_end().ends_with(" 1"), "{par1}");
    let iad1 = text.lines().find(|l| l.starts_with("iad1")).unwrap();
    assert!(iad1.contains(" US ") && !iad1.contains("EU"), "{iad1}");

    // With a policy: which sites comply.
    let policy = write(dir.path(), "policy.json", POLICY);
    let out = nuage(&["residency", "check-topology", &file, "--policy", &policy]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("2 compliant site(s), 2 compliant node(s)"),
        "{text}"
    );
    let fra1 = text.lines().find(|l| l.starts_with("fra1")).unwrap();
    assert!(fra1.contains("refused: in DE"), "{fra1}");

    // A policy this topology cannot meet.
    let strict = write(
        dir.path(),
        "strict.json",
        r#"{"allowed_countries":["FR"],"durability":{"replicas":3},"min_sites":3}"#,
    );
    let out = nuage(&["residency", "check-topology", &file, "--policy", &strict]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot satisfy the policy"),
        "{}",
        stderr(&out)
    );

    // Broken files: each mistake named, non-zero exit.
    for (from, to, message) in [
        (
            "site = \"fra1\"",
            "site = \"fra9\"",
            "node `fra1-n1`: unknown site `fra9`",
        ),
        ("country = \"DE\"", "country = \"UK\"", "did you mean `GB`"),
        (
            "id = \"par2-n1\"",
            "id = \"par1-n1\"",
            "duplicate node id `par1-n1`",
        ),
        (
            "[[region]]\nid = \"us-east\"\n",
            "",
            "unknown region `us-east`",
        ),
    ] {
        assert!(TOPOLOGY.contains(from), "{from}");
        let broken = write(dir.path(), "broken.toml", &TOPOLOGY.replacen(from, to, 1));
        let out = nuage(&["residency", "check-topology", &broken]);
        assert!(!out.status.success(), "{from}");
        assert!(stderr(&out).contains(message), "{from}: {}", stderr(&out));
    }
}
