//! A real Debian guest end to end: the real `nuage serve` with `[compute]`,
//! driven by the aws CLI, boots a debootstrap'ed Debian bookworm with
//! cloud-init (`scripts/compute/build-cloud-guest.sh`) under QEMU/TCG from
//! objects in the tenant's bucket; cloud-init takes the imported key pair and
//! the user data from the config drive, and SSH through the forward Nuage
//! reports (`publicIpAddress` and the tag `nuage:ssh-port`) accepts that key
//! and no other.
//!
//! Slow by nature (about a minute to build the image the first time, then
//! 30-60 s of first boot under TCG), so it is a file of its own. Under
//! `CI=true` a missing tool or an image that cannot be built fails the test;
//! elsewhere it prints `SKIPPED: reason` and passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::aws_ok;
use common::ec2::{
    console_as, copy_to_bucket, instance_as, json_as, register_image, start_with_config, wait_for,
};
use nuage_testsupport::guest::{QemuReaper, kernel_in, qemu_under, skip_unless_ci};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long the guest may take from `running` to accepting SSH: first boot
/// under TCG is 30-60 s on an idle 2-core machine; a loaded one is slower.
const SSH_READY_WAIT: Duration = Duration::from_secs(600);
/// The cloud-config the instance gets as user data: a file to look for.
const USER_DATA: &str = "#cloud-config\nwrite_files:\n  - path: /etc/nuage-user-data\n    content: \"written-by-cloud-init\\n\"\n";

fn tool_answers(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Builds (or takes from the cache) the cloud guest; None when the test
/// cannot run here (and that is allowed).
fn cloud_guest_dir() -> Option<PathBuf> {
    let prepared = (|| -> Result<PathBuf, String> {
        for (tool, args) in [
            ("qemu-system-x86_64", &["--version"][..]),
            ("qemu-img", &["--version"][..]),
            ("socat", &["-V"][..]),
            ("ssh", &["-V"][..]),
            ("ssh-keygen", &["-?"][..]),
            ("debootstrap", &["--version"][..]),
            ("mkfs.ext4", &["-V"][..]),
        ] {
            if !tool_answers(tool, args) {
                return Err(format!(
                    "{tool} is not installed (scripts/install-test-deps.sh)"
                ));
            }
        }
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("id -u: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("building the Debian image needs root (debootstrap, chroot)".into());
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ec2-cloud-guest");
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../scripts/compute/build-cloud-guest.sh");
        // Its progress goes straight to the test's output: the first build
        // downloads Debian and takes a minute or more.
        let status = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        if !status.success() {
            return Err(format!("build-cloud-guest.sh failed ({status}), see above"));
        }
        Ok(dir)
    })();
    match prepared {
        Ok(dir) => Some(dir),
        Err(reason) => {
            skip_unless_ci(&reason);
            None
        }
    }
}

/// The address Nuage reports for SSH into an instance: `publicIpAddress`
/// and the port in the tag `nuage:ssh-port`.
fn ssh_address(instance: &Value) -> (String, u16) {
    let ip = instance["PublicIpAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("no PublicIpAddress: {instance}"))
        .to_owned();
    let port = instance["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["Key"] == "nuage:ssh-port")
        .and_then(|t| t["Value"].as_str())
        .unwrap_or_else(|| panic!("no nuage:ssh-port tag: {instance}"))
        .parse::<u16>()
        .unwrap();
    (ip, port)
}

/// `ssh -i KEY -p PORT debian@IP COMMAND`, non-interactive, host key not kept.
fn ssh(key: &Path, ip: &str, port: u16, command: &str) -> Output {
    Command::new("ssh")
        .arg("-i")
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            "-p",
            &port.to_string(),
            &format!("debian@{ip}"),
            command,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `command` over SSH, which must succeed; its standard output.
#[track_caller]
fn ssh_ok(key: &Path, ip: &str, port: u16, command: &str) -> String {
    let out = ssh(key, ip, port, command);
    assert!(
        out.status.success(),
        "ssh {command:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "nuage-test", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen failed");
}

#[test]
fn a_debian_cloud_init_guest_takes_the_key_pair_and_answers_ssh() {
    let started = Instant::now();
    let Some(guest) = cloud_guest_dir() else {
        return;
    };
    eprintln!("cloud guest ready after {:?}", started.elapsed());
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let (server, compute_dir) = start_with_config(
        data.path(),
        "[compute]\naccelerator = \"tcg\"\nvcpus = 2\nmemory_mib = 2048\nstop_wait_seconds = 20\n",
    );
    let _reaper = QemuReaper::under(&[&compute_dir]);
    let admin = common::ec2::admin(&server);

    // The image's parts in the tenant's bucket: the compressed qcow2 disk,
    // the kernel (the uncompressed vmlinux when it could be extracted: PVH
    // boots it faster under TCG) and the initramfs.
    let bucket = common::bucket_name("cloud-images");
    aws_ok(&server, home, &["s3", "mb", &format!("s3://{bucket}")]);
    copy_to_bucket(
        &server,
        home,
        &bucket,
        &[
            (&guest.join("disk.qcow2"), "debian/disk.qcow2"),
            (&guest.join(kernel_in(&guest)), "debian/kernel"),
            (&guest.join("initrd.img"), "debian/initrd.img"),
        ],
    );

    // Two fresh keys: the first is imported, the second never is.
    let key = data.path().join("id_imported");
    let other_key = data.path().join("id_other");
    keygen(&key);
    keygen(&other_key);
    json_as(
        &server,
        home,
        admin,
        &[
            "ec2",
            "import-key-pair",
            "--key-name",
            "debian-key",
            "--public-key-material",
            &format!("fileb://{}.pub", key.display()),
        ],
    );
    let registered = register_image(
        &server,
        home,
        "debian-bookworm-cloud",
        &bucket,
        ["debian/disk.qcow2", "debian/kernel", "debian/initrd.img"],
    );
    let image_id = registered["ImageId"].as_str().unwrap().to_owned();

    let user_data = data.path().join("user-data.yaml");
    std::fs::write(&user_data, USER_DATA).unwrap();
    let run = json_as(
        &server,
        home,
        admin,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            &image_id,
            "--instance-type",
            "n1.micro",
            "--key-name",
            "debian-key",
            "--user-data",
            &format!("file://{}", user_data.display()),
        ],
    );
    let id = run["Instances"][0]["InstanceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let launched = Instant::now();
    wait_for("the instance to be running", || {
        instance_as(&server, home, admin, &id)["State"]["Name"] == "running"
    });
    let instance = instance_as(&server, home, admin, &id);
    let (ip, port) = ssh_address(&instance);
    eprintln!("{id} running, SSH at {ip} port {port}");

    // First boot under TCG: poll SSH until the imported key is accepted,
    // within a bounded deadline (each attempt is bounded by ConnectTimeout).
    let deadline = launched + SSH_READY_WAIT;
    let mut last = String::new();
    loop {
        let out = ssh(&key, &ip, port, "true");
        if out.status.success() {
            break;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            Instant::now() < deadline,
            "no SSH into {id} within {SSH_READY_WAIT:?}; last ssh error: {last}\nconsole:\n{}",
            console_as(&server, home, admin, &id)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!(
        "SSH accepted the imported key {:?} after run-instances (last refusal: {})",
        launched.elapsed(),
        last.trim()
    );

    // cloud-init finishes its stages (user data, final) after sshd starts. A
    // connection lost meanwhile (ssh's status 255: sshd restarted during
    // first boot) is tried again within the same deadline; any other
    // failure is the test's.
    loop {
        let out = ssh(&key, &ip, port, "timeout 300 cloud-init status --wait");
        if out.status.code() != Some(255) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SSH into {id} kept failing while cloud-init ran: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let status = ssh_ok(&key, &ip, port, "cloud-init status --long");
    assert!(status.contains("status: done"), "{status}");
    assert!(status.contains("DataSourceConfigDrive"), "{status}");
    eprintln!(
        "cloud-init done {:?} after run-instances",
        launched.elapsed()
    );

    // The instance cloud-init saw is the EC2 instance.
    let seen = ssh_ok(&key, &ip, port, "cat /var/lib/cloud/data/instance-id");
    assert_eq!(seen.trim(), id);
    // The user data ran.
    let written = ssh_ok(&key, &ip, port, "cat /etc/nuage-user-data");
    assert_eq!(written, "written-by-cloud-init\n");
    // The default user has passwordless sudo, as on a cloud image.
    assert_eq!(ssh_ok(&key, &ip, port, "sudo -n id -u").trim(), "0");
    // The metadata service answers from inside the guest.
    let from_metadata = ssh_ok(
        &key,
        &ip,
        port,
        "python3 -c 'import urllib.request as u; \
         print(u.urlopen(\"http://169.254.169.254/latest/meta-data/instance-id\", timeout=10).read().decode())'",
    );
    assert_eq!(from_metadata.trim(), id);

    // A key that was never imported is refused.
    let refused = ssh(&other_key, &ip, port, "true");
    assert!(!refused.status.success(), "the other key was accepted");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");

    // The console shows cloud-init's run on the config drive.
    let text = console_as(&server, home, admin, &id);
    assert!(text.contains("Cloud-init v."), "{text}");

    // Terminate: no QEMU is left.
    aws_ok(
        &server,
        home,
        &["ec2", "terminate-instances", "--instance-ids", &id],
    );
    wait_for("the instance to be terminated", || {
        instance_as(&server, home, admin, &id)["State"]["Name"] == "terminated"
    });
    wait_for("no QEMU left", || qemu_under(&compute_dir).is_empty());
    eprintln!("test done in {:?}", started.elapsed());
}
