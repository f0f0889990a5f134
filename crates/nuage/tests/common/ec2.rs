//! The EC2 API through the aws CLI, for the compute tests (`compute`,
//! `compute_hosts`, `compute_cloud_init`): JSON answers, refusals by error
//! code, an instance's description and console, and an image's objects put
//! in a bucket and registered.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use nuage_testsupport::guest::TinyGuest;
use serde_json::Value;

use super::{Server, aws, aws_as, aws_ok};

/// `aws --output json ARGS` with these credentials, which must succeed.
#[track_caller]
pub fn json_as(server: &Server, home: &Path, creds: (&str, &str), args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let out = aws_as(server, home, creds, &all);
    assert!(
        out.status.success(),
        "aws {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `nuage serve` on `data/server` with `data/nuage.toml` holding `config`
/// (its `[compute]` section); the server and its compute directory.
pub fn start_with_config(data: &Path, config: &str) -> (Server, PathBuf) {
    let config_file = data.join("nuage.toml");
    std::fs::write(&config_file, config).unwrap();
    let server_dir = data.join("server");
    let server = Server::start_in(&server_dir, &["--config", config_file.to_str().unwrap()]);
    (server, server_dir.join("compute"))
}

/// The server's administrator's access key id and secret.
pub fn admin(server: &Server) -> (&str, &str) {
    let credentials = &server.credentials;
    (&credentials.access_key_id, &credentials.secret_access_key)
}

/// [`json_as`] as the server's administrator.
#[track_caller]
pub fn json(server: &Server, home: &Path, args: &[&str]) -> Value {
    json_as(server, home, admin(server), args)
}

/// An aws CLI run of `args`, which must have failed with `code`; its stderr.
#[track_caller]
pub fn check_refused(out: std::process::Output, args: &[&str], code: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "aws {args:?} should have failed with {code}"
    );
    assert!(
        stderr.contains(&format!("({code})")),
        "aws {args:?}: expected {code}, got: {stderr}"
    );
    stderr
}

/// `aws ARGS` with these credentials, which must fail with `code`; its stderr.
#[track_caller]
pub fn refused_as(
    server: &Server,
    home: &Path,
    creds: (&str, &str),
    args: &[&str],
    code: &str,
) -> String {
    check_refused(aws_as(server, home, creds, args), args, code)
}

/// [`refused_as`] as the server's administrator.
#[track_caller]
pub fn refused(server: &Server, home: &Path, args: &[&str], code: &str) -> String {
    check_refused(aws(server, home, args), args, code)
}

/// `describe-instances` of one instance with these credentials: its entry.
pub fn instance_as(server: &Server, home: &Path, creds: (&str, &str), id: &str) -> Value {
    let args = ["ec2", "describe-instances", "--instance-ids", id];
    json_as(server, home, creds, &args)["Reservations"][0]["Instances"][0].clone()
}

/// [`instance_as`] as the server's administrator.
pub fn instance(server: &Server, home: &Path, id: &str) -> Value {
    instance_as(server, home, admin(server), id)
}

/// The console text with these credentials (the CLI may or may not decode
/// EC2's base64 itself).
pub fn console_as(server: &Server, home: &Path, creds: (&str, &str), id: &str) -> String {
    let args = ["ec2", "get-console-output", "--instance-id", id];
    let v = json_as(server, home, creds, &args);
    let output = v["Output"].as_str().unwrap_or("").to_owned();
    match base64::engine::general_purpose::STANDARD.decode(output.trim()) {
        Ok(bytes) if !output.contains(' ') => String::from_utf8_lossy(&bytes).into_owned(),
        _ => output,
    }
}

/// [`console_as`] as the server's administrator.
pub fn console(server: &Server, home: &Path, id: &str) -> String {
    console_as(server, home, admin(server), id)
}

/// Waits (bounded, on a condition) until `check` holds.
#[track_caller]
pub fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..600 {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

/// `aws s3 cp FILE s3://BUCKET/KEY` as the administrator, for each file.
pub fn copy_to_bucket(server: &Server, home: &Path, bucket: &str, files: &[(&Path, &str)]) {
    for (file, key) in files {
        aws_ok(
            server,
            home,
            &[
                "s3",
                "cp",
                file.to_str().unwrap(),
                &format!("s3://{bucket}/{key}"),
            ],
        );
    }
}

/// The tiny guest's image in a new bucket: `bucket` made, a 1 MiB disk of
/// zeros written at `disk`, and the disk, the guest's kernel and initramfs
/// copied to `tiny/disk.raw`, `tiny/kernel` and `tiny/initrd.gz`.
pub fn put_tiny_image(server: &Server, home: &Path, bucket: &str, disk: &Path, guest: &TinyGuest) {
    aws_ok(server, home, &["s3", "mb", &format!("s3://{bucket}")]);
    std::fs::write(disk, vec![0u8; 1024 * 1024]).unwrap();
    copy_to_bucket(
        server,
        home,
        bucket,
        &[
            (disk, "tiny/disk.raw"),
            (&guest.kernel(), "tiny/kernel"),
            (&guest.initrd(), "tiny/initrd.gz"),
        ],
    );
}

/// `aws ec2 register-image --name NAME` as the administrator, of the disk,
/// kernel and initramfs at these keys of `bucket`; the CLI's answer.
pub fn register_image(
    server: &Server,
    home: &Path,
    name: &str,
    bucket: &str,
    [disk, kernel, ramdisk]: [&str; 3],
) -> Value {
    json(
        server,
        home,
        &[
            "ec2",
            "register-image",
            "--name",
            name,
            "--image-location",
            &format!("{bucket}/{disk}"),
            "--kernel-id",
            &format!("{bucket}/{kernel}"),
            "--ramdisk-id",
            &format!("{bucket}/{ramdisk}"),
        ],
    )
}
