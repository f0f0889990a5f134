//! `nuage bench` against the real `nuage serve`: it counts what it did,
//! verifies what it reads, reports failures as failures, and cleans up. The
//! bucket's contents are checked with the aws CLI (`scripts/install-test-deps.sh`),
//! independently of the bench's own client. No timed assertions: only counts,
//! bytes, ETags and exit statuses.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use common::{Server, aws, aws_ok};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// `nuage bench ARGS --json --quiet` against `server` with `secret`.
fn bench_with_secret(server: &Server, secret: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nuage"))
        .arg("bench")
        .args(["--endpoint", &server.endpoint, "--json", "--quiet"])
        .args(args)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_REGION")
        .env("AWS_ACCESS_KEY_ID", &server.credentials.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", &server.credentials.region)
        .output()
        .unwrap()
}

fn bench(server: &Server, args: &[&str]) -> Output {
    bench_with_secret(server, &server.credentials.secret_access_key, args)
}

/// The JSON report of a run that must exit 0.
#[track_caller]
fn report_ok(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "nuage bench failed ({:?}): {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn op<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["op"] == name)
        .unwrap_or_else(|| panic!("no {name} line in {report}"))
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
}

/// The keys under `prefix`, through the aws CLI.
fn keys(server: &Server, home: &Path, bucket: &str, prefix: &str) -> Vec<String> {
    let text = aws_ok(
        server,
        home,
        &[
            "s3api",
            "list-objects-v2",
            "--bucket",
            bucket,
            "--prefix",
            prefix,
            "--query",
            "Contents[].Key",
        ],
    );
    if text == "None" {
        return Vec::new();
    }
    text.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn a_put_run_writes_exactly_its_operations_and_cleans_up() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();

    // --keep into the user's bucket (created by the bench): the objects stay.
    let bucket = common::bucket_name("bench-kept");
    let output = bench(
        &server,
        &[
            "--workload",
            "put",
            "--operations",
            "50",
            "--concurrency",
            "8",
            "--size",
            "4KiB",
            "--bucket",
            &bucket,
            "--keep",
        ],
    );
    let report = report_ok(&output);
    let put = op(&report, "put");
    assert_eq!(num(&put["count"]), 50, "{report}");
    assert_eq!(num(&put["errors"]), 0, "{report}");
    assert_eq!(num(&put["bytes"]), 50 * 4096);
    assert_eq!(num(&report["operations"]), 50);
    assert_eq!(report["cleanup"]["kept"], true);
    let prefix = report["run_prefix"].as_str().unwrap();
    let written = keys(&server, home, &bucket, prefix);
    assert_eq!(written.len(), 50, "{written:?}");
    let size = aws_ok(
        &server,
        home,
        &[
            "s3api",
            "head-object",
            "--bucket",
            &bucket,
            "--key",
            &written[0],
            "--query",
            "ContentLength",
        ],
    );
    assert_eq!(size, "4096");

    // A fresh bucket, not kept: every object and the bucket are gone.
    let output = bench(
        &server,
        &[
            "--workload",
            "put",
            "--operations",
            "50",
            "--concurrency",
            "8",
        ],
    );
    let report = report_ok(&output);
    assert_eq!(num(&op(&report, "put")["count"]), 50, "{report}");
    assert_eq!(num(&report["cleanup"]["objects_deleted"]), 50, "{report}");
    assert_eq!(report["cleanup"]["bucket_deleted"], true, "{report}");
    let fresh = report["bucket"].as_str().unwrap();
    assert!(fresh.starts_with("bench-"), "{fresh}");
    let head = aws(&server, home, &["s3api", "head-bucket", "--bucket", fresh]);
    assert!(!head.status.success(), "bucket {fresh} still exists");
    assert!(
        String::from_utf8_lossy(&head.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&head.stderr)
    );
    // The kept bucket was not touched by the second run.
    assert_eq!(keys(&server, home, &bucket, "").len(), 50);
}

#[test]
fn get_and_mixed_runs_verify_and_add_up() {
    let server = Server::start();

    let output = bench(
        &server,
        &[
            "--workload",
            "get",
            "--objects",
            "10",
            "--operations",
            "40",
            "--size",
            "100KiB",
            "--concurrency",
            "4",
        ],
    );
    let report = report_ok(&output);
    let get = op(&report, "get");
    assert_eq!(num(&get["count"]), 40, "{report}");
    assert_eq!(num(&get["errors"]), 0, "{report}");
    assert_eq!(num(&get["bytes"]), 40 * 100 * 1024, "every byte was read");
    assert_eq!(num(&report["prepopulated_objects"]), 10);
    assert_eq!(report["verify"], true);
    assert_eq!(num(&report["verification_failures"]), 0);
    // The pre-populated objects are not counted as PUTs of the run.
    assert!(
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["op"] != "put")
    );
    assert_eq!(num(&report["cleanup"]["objects_deleted"]), 10, "{report}");

    let output = bench(
        &server,
        &[
            "--workload",
            "mixed",
            "--mix",
            "put=30,get=40,head=10,list=10,delete=10",
            "--objects",
            "20",
            "--operations",
            "200",
            "--size",
            "1KiB:64KiB",
            "--concurrency",
            "8",
        ],
    );
    let report = report_ok(&output);
    let results = report["results"].as_array().unwrap();
    let attempted: u64 = results
        .iter()
        .map(|r| num(&r["count"]) + num(&r["errors"]))
        .sum();
    assert_eq!(attempted, 200, "{report}");
    assert_eq!(num(&report["operations"]), 200);
    assert_eq!(num(&report["total"]["count"]), 200, "no errors: {report}");
    for name in ["put", "get", "head", "list", "delete"] {
        assert!(
            num(&op(&report, name)["count"]) > 0,
            "{name} never ran: {report}"
        );
    }
    // Everything the run wrote (pre-populated and put) is deleted, whatever
    // the deletes of the run already removed.
    assert_eq!(report["cleanup"]["bucket_deleted"], true, "{report}");
    assert!(
        report["cleanup"]["errors"].as_array().unwrap().is_empty(),
        "{report}"
    );
}

#[test]
fn multipart_above_the_threshold_makes_a_multipart_etag_and_reads_back() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let bucket = common::bucket_name("bench-multipart");
    let output = bench(
        &server,
        &[
            "--workload",
            "put",
            "--operations",
            "2",
            "--size",
            "12MiB",
            "--multipart-threshold",
            "8MiB",
            "--part-size",
            "5MiB",
            "--bucket",
            &bucket,
            "--keep",
        ],
    );
    let report = report_ok(&output);
    assert_eq!(num(&op(&report, "put")["count"]), 2, "{report}");
    let written = keys(
        &server,
        home,
        &bucket,
        report["run_prefix"].as_str().unwrap(),
    );
    assert_eq!(written.len(), 2);
    for key in &written {
        let etag = aws_ok(
            &server,
            home,
            &[
                "s3api",
                "head-object",
                "--bucket",
                &bucket,
                "--key",
                key,
                "--query",
                "ETag",
            ],
        );
        assert!(
            etag.trim_matches('"').ends_with("-3"),
            "12 MiB in 5 MiB parts: {etag}"
        );
    }
    // Read back across part boundaries, from the keys alone.
    let output = bench(
        &server,
        &[
            "--workload",
            "get",
            "--bucket",
            &bucket,
            "--reuse-objects",
            "--operations",
            "4",
            "--concurrency",
            "2",
        ],
    );
    let report = report_ok(&output);
    let get = op(&report, "get");
    assert_eq!(num(&get["count"]), 4, "{report}");
    assert_eq!(num(&get["bytes"]), 4 * 12 * 1024 * 1024);
    // Reused objects belong to the earlier run: not deleted.
    assert_eq!(keys(&server, home, &bucket, "").len(), 2);
}

#[test]
fn data_that_does_not_match_is_a_verification_failure() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let bucket = common::bucket_name("bench-verify");
    let output = bench(
        &server,
        &[
            "--workload",
            "get",
            "--objects",
            "2",
            "--operations",
            "2",
            "--size",
            "8KiB",
            "--bucket",
            &bucket,
            "--keep",
        ],
    );
    let report = report_ok(&output);
    let written = keys(
        &server,
        home,
        &bucket,
        report["run_prefix"].as_str().unwrap(),
    );
    assert_eq!(written.len(), 2);
    // Same size, other bytes: only a byte comparison can tell.
    let forged = home.join("forged");
    std::fs::write(&forged, common::random_bytes(8192, 99)).unwrap();
    aws_ok(
        &server,
        home,
        &[
            "s3api",
            "put-object",
            "--bucket",
            &bucket,
            "--key",
            &written[0],
            "--body",
            forged.to_str().unwrap(),
        ],
    );

    let output = bench(
        &server,
        &[
            "--workload",
            "get",
            "--bucket",
            &bucket,
            "--reuse-objects",
            "--operations",
            "60",
            "--verify",
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("FAILED") && stderr.contains("verification failure"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let get = op(&report, "get");
    let failures = num(&report["verification_failures"]);
    // Each GET picks one of the two objects: both are hit in 60 tries.
    assert!(failures > 0 && num(&get["count"]) > 0, "{report}");
    assert_eq!(num(&get["errors"]), failures, "{report}");
    assert_eq!(num(&get["count"]) + failures, 60);
    let error = &report["errors"][0];
    assert_eq!(error["kind"], "verification: body", "{report}");
    assert!(
        error["example"].as_str().unwrap().contains(&written[0]),
        "{error}"
    );
}

#[test]
fn a_wrong_secret_key_is_an_error_for_every_operation() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();

    // A fresh bucket cannot even be created: nothing measured, exit 2.
    let output = bench_with_secret(&server, "not-the-secret", &["--operations", "5"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CreateBucket") && stderr.contains("403 SignatureDoesNotMatch"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());

    // Into an existing bucket: every PUT is refused, and counted as refused.
    let bucket = common::bucket_name("bench-denied");
    aws_ok(&server, home, &["s3", "mb", &format!("s3://{bucket}")]);
    let output = bench_with_secret(
        &server,
        "not-the-secret",
        &[
            "--workload",
            "put",
            "--operations",
            "20",
            "--bucket",
            &bucket,
            "--concurrency",
            "4",
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("FAILED: every operation failed"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let put = op(&report, "put");
    assert_eq!(num(&put["count"]), 0, "{report}");
    assert_eq!(num(&put["errors"]), 20, "{report}");
    assert_eq!(
        report["errors"][0]["kind"], "HTTP 403 SignatureDoesNotMatch",
        "{report}"
    );
    assert_eq!(num(&report["errors"][0]["count"]), 20);
    assert!(keys(&server, home, &bucket, "").is_empty());

    // --max-errors stops the run instead of hammering on.
    let output = bench_with_secret(
        &server,
        "not-the-secret",
        &[
            "--operations",
            "100000",
            "--bucket",
            &bucket,
            "--concurrency",
            "2",
            "--max-errors",
            "3",
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let errors = num(&report["total"]["errors"]);
    // Each of the 2 workers may have one request in flight when the limit is passed.
    assert!((4..=5).contains(&errors), "{report}");
    assert!(
        report["stopped_early"]
            .as_str()
            .unwrap()
            .contains("--max-errors 3"),
        "{report}"
    );
}

#[test]
fn https_with_the_servers_certificate_or_insecure_and_never_silently() {
    let temp = tempfile::tempdir().unwrap();
    let server = Server::start_in(temp.path(), &["--tls"]);
    assert!(
        server.endpoint.starts_with("https://"),
        "{}",
        server.endpoint
    );
    let cert = temp.path().join("tls/self-signed.crt");
    let cert = cert.to_str().unwrap();

    let report = report_ok(&bench(&server, &["--operations", "5", "--ca-file", cert]));
    assert_eq!(num(&op(&report, "put")["count"]), 5, "{report}");
    let report = report_ok(&bench(&server, &["--operations", "5", "--insecure"]));
    assert_eq!(num(&op(&report, "put")["count"]), 5, "{report}");

    // A certificate nobody vouched for stops the run before anything is measured.
    let output = bench(&server, &["--operations", "5"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CreateBucket") && stderr.contains("transport"),
        "{stderr}"
    );
}
