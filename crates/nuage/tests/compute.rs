//! The EC2 API end to end: the real `nuage serve` with `[compute]`, driven
//! by the aws CLI, boots the tiny guest (Debian's kernel and a busybox
//! initramfs, `scripts/compute/build-tiny-guest.sh`) under QEMU/TCG from
//! objects in the tenant's bucket.
//!
//! Under `CI=true` a missing QEMU or a guest that cannot be built fails the
//! test; elsewhere it prints why and skips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::audit::{pull_verified, search, tenant_with_administrator, user_with_key};
use common::ec2::{
    console_as, instance_as, json_as, put_tiny_image, refused_as, register_image,
    start_with_config, wait_for,
};
use common::{Server, aws_ok};
use nuage_testsupport::guest::{QemuReaper, TinyGuest, qemu_under, tiny_guest};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The tiny guest, built once per test binary.
fn guest() -> Option<&'static TinyGuest> {
    tiny_guest(
        &PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ec2-tiny-guest"),
        &[],
    )
}

fn state_of(server: &Server, home: &Path, creds: (&str, &str), id: &str) -> String {
    instance_as(server, home, creds, id)["State"]["Name"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn ec2_api_runs_the_tiny_guest_through_the_aws_cli() {
    let Some(guest) = guest() else { return };
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    // Two vCPUs: an n1.xlarge (4) never fits.
    let (server, compute_dir) = start_with_config(
        data.path(),
        "[compute]\naccelerator = \"tcg\"\nvcpus = 2\nmemory_mib = 1024\nstop_wait_seconds = 20\n",
    );
    let _reaper = QemuReaper::under(&[&compute_dir]);
    assert!(
        server.banner.contains("EC2 API enabled"),
        "{}",
        server.banner
    );
    let admin = common::ec2::admin(&server);

    // The image's parts in the tenant's bucket.
    let bucket = common::bucket_name("ec2-images");
    let disk = data.path().join("disk.raw");
    put_tiny_image(&server, home, &bucket, &disk, guest);

    // A key pair and the image.
    let public_key = data.path().join("key.pub");
    std::fs::write(
        &public_key,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJvZ3VzLWJ1dC13ZWxsLWZvcm1lZC1rZXktYnl0ZXMh test@nuage\n",
    )
    .unwrap();
    let imported = json_as(
        &server,
        home,
        admin,
        &[
            "ec2",
            "import-key-pair",
            "--key-name",
            "tiny-key",
            "--public-key-material",
            &format!("fileb://{}", public_key.display()),
        ],
    );
    assert_eq!(imported["KeyName"], "tiny-key");
    assert!(imported["KeyPairId"].as_str().unwrap().starts_with("key-"));
    refused_as(
        &server,
        home,
        admin,
        &[
            "ec2",
            "import-key-pair",
            "--key-name",
            "tiny-key",
            "--public-key-material",
            &format!("fileb://{}", public_key.display()),
        ],
        "InvalidKeyPair.Duplicate",
    );
    let keys = json_as(&server, home, admin, &["ec2", "describe-key-pairs"]);
    assert_eq!(keys["KeyPairs"].as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(
        keys["KeyPairs"][0]["KeyFingerprint"],
        imported["KeyFingerprint"]
    );

    let registered = register_image(
        &server,
        home,
        "tiny",
        &bucket,
        ["tiny/disk.raw", "tiny/kernel", "tiny/initrd.gz"],
    );
    let image_id = registered["ImageId"].as_str().unwrap().to_owned();
    assert!(image_id.starts_with("ami-"), "{registered}");
    let images = json_as(&server, home, admin, &["ec2", "describe-images"]);
    assert_eq!(
        images["Images"][0]["ImageId"],
        image_id.as_str(),
        "{images}"
    );
    assert_eq!(images["Images"][0]["State"], "available");
    // An object that does not exist is refused before anything is cached.
    refused_as(
        &server,
        home,
        admin,
        &[
            "ec2",
            "register-image",
            "--name",
            "missing",
            "--image-location",
            &format!("{bucket}/nothing-here"),
        ],
        "InvalidParameterValue",
    );

    // An SSE-KMS object would need kms:Decrypt as well, which RegisterImage
    // does not ask: refused rather than read past that check.
    let key = json_as(&server, home, admin, &["kms", "create-key"]);
    let key_id = key["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    aws_ok(
        &server,
        home,
        &[
            "s3",
            "cp",
            disk.to_str().unwrap(),
            &format!("s3://{bucket}/tiny/disk-kms.raw"),
            "--sse",
            "aws:kms",
            "--sse-kms-key-id",
            &key_id,
        ],
    );
    refused_as(
        &server,
        home,
        admin,
        &[
            "ec2",
            "register-image",
            "--name",
            "kms-encrypted",
            "--image-location",
            &format!("{bucket}/tiny/disk-kms.raw"),
        ],
        "UnauthorizedOperation",
    );

    // A user of the tenant who may describe but not run.
    let viewer = user_with_key(&server, home, "viewer");
    aws_ok(
        &server,
        home,
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            "viewer",
            "--policy-name",
            "describe-only",
            "--policy-document",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:Describe*"],"Resource":"*"}]}"#,
        ],
    );
    let viewer = (viewer.0.as_str(), viewer.1.as_str());
    json_as(&server, home, viewer, &["ec2", "describe-images"]);
    let run_args = [
        "ec2",
        "run-instances",
        "--image-id",
        &image_id,
        "--instance-type",
        "n1.nano",
        "--key-name",
        "tiny-key",
        "--user-data",
        "echo hello-from-user-data",
        "--count",
        "1",
    ];
    refused_as(&server, home, viewer, &run_args, "UnauthorizedOperation");
    // RunInstances is authorized on the image and the key pair too: a user
    // allowed to run anything but this key pair is refused.
    let picky = user_with_key(&server, home, "picky");
    aws_ok(
        &server,
        home,
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            "picky",
            "--policy-name",
            "not-that-key",
            "--policy-document",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:*","Resource":"*"},{"Effect":"Deny","Action":"ec2:RunInstances","Resource":"arn:aws:ec2:*:*:key-pair/tiny-key"}]}"#,
        ],
    );
    let picky = (picky.0.as_str(), picky.1.as_str());
    refused_as(&server, home, picky, &run_args, "UnauthorizedOperation");

    // Run: running, and the user data's output on the console.
    let run = json_as(&server, home, admin, &run_args);
    let instance = &run["Instances"][0];
    let id = instance["InstanceId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("i-"), "{run}");
    assert_eq!(instance["ImageId"], image_id.as_str());
    assert_eq!(instance["InstanceType"], "n1.nano");
    assert_eq!(instance["KeyName"], "tiny-key");
    wait_for("the instance to run", || {
        let v = json_as(
            &server,
            home,
            admin,
            &[
                "ec2",
                "describe-instances",
                "--filters",
                "Name=instance-state-name,Values=running",
            ],
        );
        v["Reservations"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["Instances"].as_array().unwrap().iter())
            .any(|i| i["InstanceId"] == id.as_str())
    });
    // The filter filters: no stopped instance.
    let stopped = json_as(
        &server,
        home,
        admin,
        &[
            "ec2",
            "describe-instances",
            "--filters",
            "Name=instance-state-name,Values=stopped",
        ],
    );
    assert_eq!(stopped["Reservations"], serde_json::json!([]), "{stopped}");
    wait_for("the user data's output on the console", || {
        console_as(&server, home, admin, &id).contains("hello-from-user-data")
    });
    assert_eq!(
        qemu_under(&compute_dir).len(),
        1,
        "one QEMU runs the instance"
    );
    // The viewer may describe the tenant's instance, not reboot it.
    assert_eq!(state_of(&server, home, viewer, &id), "running");
    refused_as(
        &server,
        home,
        viewer,
        &["ec2", "reboot-instances", "--instance-ids", &id],
        "UnauthorizedOperation",
    );

    // Another tenant sees nothing of it and cannot terminate it.
    let (_, other) = tenant_with_administrator(&server, "ec2-other", "root");
    let other = (other.0.as_str(), other.1.as_str());
    refused_as(
        &server,
        home,
        other,
        &["ec2", "describe-instances", "--instance-ids", &id],
        "InvalidInstanceID.NotFound",
    );
    refused_as(
        &server,
        home,
        other,
        &["ec2", "terminate-instances", "--instance-ids", &id],
        "InvalidInstanceID.NotFound",
    );
    refused_as(
        &server,
        home,
        other,
        &["ec2", "get-console-output", "--instance-id", &id],
        "InvalidInstanceID.NotFound",
    );
    let theirs = json_as(&server, home, other, &["ec2", "describe-instances"]);
    assert_eq!(theirs["Reservations"], serde_json::json!([]), "{theirs}");
    let their_images = json_as(&server, home, other, &["ec2", "describe-images"]);
    assert_eq!(their_images["Images"], serde_json::json!([]));
    refused_as(
        &server,
        home,
        other,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            &image_id,
            "--instance-type",
            "n1.nano",
        ],
        "InvalidAMIID.NotFound",
    );
    // Nor read the first tenant's bucket to register it as their own.
    refused_as(
        &server,
        home,
        other,
        &[
            "ec2",
            "register-image",
            "--name",
            "stolen",
            "--image-location",
            &format!("{bucket}/tiny/disk.raw"),
        ],
        "UnauthorizedOperation",
    );
    assert!(state_of(&server, home, admin, &id) == "running");

    // Over the host's capacity: 4 vCPUs on a 2-vCPU host.
    refused_as(
        &server,
        home,
        admin,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            &image_id,
            "--instance-type",
            "n1.xlarge",
        ],
        "InsufficientInstanceCapacity",
    );

    // MinCount 2 where one more fits: the one started is terminated again.
    refused_as(
        &server,
        home,
        admin,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            &image_id,
            "--instance-type",
            "n1.nano",
            "--count",
            "2:2",
        ],
        "InsufficientInstanceCapacity",
    );
    assert_eq!(
        qemu_under(&compute_dir).len(),
        1,
        "a partial launch was left running"
    );
    let running = json_as(
        &server,
        home,
        admin,
        &[
            "ec2",
            "describe-instances",
            "--filters",
            "Name=instance-state-name,Values=running,pending",
        ],
    );
    assert_eq!(
        running["Reservations"].as_array().unwrap().len(),
        1,
        "{running}"
    );

    // The host's instance types and zone.
    let types = json_as(
        &server,
        home,
        admin,
        &[
            "ec2",
            "describe-instance-types",
            "--instance-types",
            "n1.medium",
        ],
    );
    assert_eq!(
        types["InstanceTypes"][0]["VCpuInfo"]["DefaultVCpus"], 2,
        "{types}"
    );
    assert_eq!(types["InstanceTypes"][0]["MemoryInfo"]["SizeInMiB"], 2048);
    let zones = json_as(
        &server,
        home,
        admin,
        &["ec2", "describe-availability-zones"],
    );
    assert_eq!(
        zones["AvailabilityZones"][0]["ZoneName"],
        format!("{}a", server.credentials.region).as_str(),
        "{zones}"
    );

    // Reboot: a second boot in the same VM.
    aws_ok(
        &server,
        home,
        &["ec2", "reboot-instances", "--instance-ids", &id],
    );
    wait_for("the user data's output after the reboot", || {
        console_as(&server, home, admin, &id)
            .matches("hello-from-user-data")
            .count()
            >= 2
    });

    // Stop (ACPI) and start: the guest boots again and runs its user data again.
    let stop = json_as(
        &server,
        home,
        admin,
        &["ec2", "stop-instances", "--instance-ids", &id],
    );
    assert_eq!(
        stop["StoppingInstances"][0]["PreviousState"]["Name"],
        "running"
    );
    wait_for("the instance to stop", || {
        state_of(&server, home, admin, &id) == "stopped"
    });
    assert!(
        qemu_under(&compute_dir).is_empty(),
        "QEMU runs while stopped"
    );
    json_as(
        &server,
        home,
        admin,
        &["ec2", "start-instances", "--instance-ids", &id],
    );
    wait_for("the instance to run again", || {
        state_of(&server, home, admin, &id) == "running"
    });
    wait_for("a third boot's user data output", || {
        console_as(&server, home, admin, &id)
            .matches("hello-from-user-data")
            .count()
            >= 3
    });

    // Terminate: no QEMU, no overlay.
    let terminated = json_as(
        &server,
        home,
        admin,
        &["ec2", "terminate-instances", "--instance-ids", &id],
    );
    assert_eq!(
        terminated["TerminatingInstances"][0]["CurrentState"]["Name"],
        "terminated"
    );
    assert_eq!(state_of(&server, home, admin, &id), "terminated");
    assert!(qemu_under(&compute_dir).is_empty(), "QEMU still runs");
    let instance_dir = compute_dir.join("host/instances").join(&id);
    let left: Vec<String> = std::fs::read_dir(&instance_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        ["instance.json"],
        "left in {}",
        instance_dir.display()
    );

    // Key pair and image go away.
    aws_ok(
        &server,
        home,
        &["ec2", "deregister-image", "--image-id", &image_id],
    );
    refused_as(
        &server,
        home,
        admin,
        &["ec2", "describe-images", "--image-ids", &image_id],
        "InvalidAMIID.NotFound",
    );
    aws_ok(
        &server,
        home,
        &["ec2", "delete-key-pair", "--key-name", "tiny-key"],
    );
    let keys = json_as(&server, home, admin, &["ec2", "describe-key-pairs"]);
    assert_eq!(keys["KeyPairs"], serde_json::json!([]));

    // Every call is in the tenant's audit log, refusals included.
    let dir = data.path().join("audit");
    pull_verified(&server, &dir);
    let runs = search(&dir, &["--action", "ec2:RunInstances"]);
    let tenant = common::audit::tenant_of(&server, home);
    let allowed: Vec<&Value> = runs
        .iter()
        .filter(|e| e["decision"]["effect"] == "allow")
        .collect();
    assert!(!allowed.is_empty(), "{runs:#?}");
    assert_eq!(
        allowed[0]["resource"],
        format!(
            "arn:aws:ec2:{}:{tenant}:instance/*",
            server.credentials.region
        )
        .as_str()
    );
    assert!(
        runs.iter().any(|e| e["decision"]["effect"] == "deny"
            && e["actor"]["id"]
                .as_str()
                .is_some_and(|a| a.ends_with(":user/viewer"))),
        "{runs:#?}"
    );
    let terminations = search(&dir, &["--action", "ec2:TerminateInstances"]);
    assert!(
        terminations.iter().any(|e| e["resource"]
            == format!(
                "arn:aws:ec2:{}:{tenant}:instance/{id}",
                server.credentials.region
            )
            .as_str()),
        "{terminations:#?}"
    );
}

/// Without `[compute]`, EC2 requests get EC2's answer, and the query APIs
/// that share the shape (IAM, STS) and S3 still route as before.
#[test]
fn ec2_requests_without_compute_are_refused_in_ec2_terms() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let admin = common::ec2::admin(&server);
    refused_as(
        &server,
        home,
        admin,
        &["ec2", "describe-instances"],
        "UnsupportedOperation",
    );
    let account = aws_ok(
        &server,
        home,
        &["sts", "get-caller-identity", "--query", "Account"],
    );
    assert_eq!(account.len(), 12);
    aws_ok(&server, home, &["iam", "list-users"]);
    aws_ok(&server, home, &["s3", "ls"]);
}
