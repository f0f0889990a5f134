//! Several compute hosts, end to end: a gateway (`[compute] hosts =
//! "topology"`) and two `nuage serve --role compute` processes, one in a
//! French site and one in a German site, each with room for one `n1.nano`,
//! talking mutual TLS with certificates from `nuage cluster`. The aws CLI
//! drives the gateway; QEMU (TCG) boots the tiny guest on the hosts.
//!
//! Residency: a France-only tenant's instance runs on the French host and
//! never on the German one, even when the French host is full (the request
//! is refused with `InsufficientInstanceCapacity`); once the tenant allows
//! Germany, the next instance runs there, the image pushed to it first.
//! Stop, start, console output and terminate go to the instance's host; a
//! host that is down describes its instances by their last known state and
//! refuses lifecycle calls with `Unavailable`.
//!
//! Also: a launch whose answer is lost (a relay in front of the German host
//! drops the connection once the host has begun the instance) leaves an
//! instance the tenant owns and sees, and a retry with the same
//! `ClientToken` returns it rather than starting another; the guest is told
//! the topology's zone; a start or reboot on a host the tenant's narrowed
//! policy no longer allows is refused; objects changed since RegisterImage
//! are not pushed; another tenant naming the tenant's bucket learns nothing
//! of its residency policy. A `ClientToken` repeated while its first request
//! is still pushing the image (the relay holds the host's answer) waits for
//! it and answers the same single instance, never an empty reservation.
//!
//! Under `CI=true` a missing QEMU or a guest that cannot be built fails the
//! test; elsewhere it prints why and skips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::audit::{tenant_of, tenant_with_administrator};
use common::ec2::{
    check_refused, console, copy_to_bucket, instance, json, put_tiny_image, refused,
    register_image, wait_for,
};
use common::{Server, aws, aws_as, aws_ok};
use nuage_testsupport::guest::{QemuReaper, TinyGuest, qemu_under, tiny_guest};
use serde_json::Value;
use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const START_TIMEOUT: Duration = Duration::from_secs(60);

const FRANCE_ONLY: &str = r#"{"allowed_countries":["FR"],"durability":{"replicas":2}}"#;
const FRANCE_OR_GERMANY: &str = r#"{"allowed_countries":["FR","DE"],"durability":{"replicas":2}}"#;
const GERMANY_ONLY: &str = r#"{"allowed_countries":["DE"],"durability":{"replicas":1}}"#;

/// The tiny guest, built once per test binary.
fn guest() -> Option<&'static TinyGuest> {
    tiny_guest(
        &PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ec2-hosts-tiny-guest"),
        &[],
    )
}

fn nuage() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nuage"));
    cmd.env("NUAGE_LOG", "warn");
    cmd
}

#[track_caller]
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running `nuage serve --role compute`; killed on drop.
struct Host {
    child: Child,
    /// `127.0.0.1:PORT`.
    address: String,
    config: PathBuf,
    data: PathBuf,
}

impl Host {
    fn start(config: &Path, data: &Path, listen: &str) -> Self {
        let mut child = nuage()
            .args(["serve", "--role", "compute", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .args(["--listen", listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(rest) = line.strip_prefix("nuage compute host ")
                    && let Some((_, after)) = rest.split_once(" listening on ")
                {
                    let address = after.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(address);
                }
            }
        });
        let address = rx
            .recv_timeout(START_TIMEOUT)
            .expect("the compute host did not start");
        Self {
            child,
            address,
            config: config.to_path_buf(),
            data: data.to_path_buf(),
        }
    }

    fn instances_dir(&self) -> PathBuf {
        self.data.join("compute/host/instances")
    }

    fn images(&self) -> usize {
        std::fs::read_dir(self.data.join("compute/host/images"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("image.json").exists())
                    .count()
            })
            .unwrap_or(0)
    }

    /// `kill -9`, then the same host again on the same address.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        let again = Self::start(
            &self.config.clone(),
            &self.data.clone(),
            &self.address.clone(),
        );
        let old = std::mem::replace(self, again);
        drop(old);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay in front of a compute host (TLS passes through it
/// untouched). Armed, it drops a connection instead of passing on the
/// host's answer once the host has begun a new instance (a directory
/// appeared under `watch` since arming): the run arrived, and its answer is
/// lost, deterministically.
struct Relay {
    address: String,
    /// The instance directories present when armed; None: pass everything.
    armed: Arc<Mutex<Option<HashSet<String>>>>,
    /// Held ([`Relay::hold`]): a directory and its entries then; once one
    /// more appears, the host's answers wait until [`Relay::release`].
    held: Held,
}

type Held = Arc<Mutex<Option<(PathBuf, HashSet<String>)>>>;

/// Whether a hold applies now: an entry appeared since it was set.
fn holding(held: &Held) -> bool {
    held.lock()
        .unwrap()
        .as_ref()
        .is_some_and(|(dir, before)| entries(dir).iter().any(|e| !before.contains(e)))
}

fn entries(dir: &Path) -> HashSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl Relay {
    fn start(target: String, watch: PathBuf) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let armed: Arc<Mutex<Option<HashSet<String>>>> = Arc::new(Mutex::new(None));
        let state = Arc::clone(&armed);
        let held: Held = Arc::new(Mutex::new(None));
        let hold = Arc::clone(&held);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&target) else {
                    // The host is down: so is the connection.
                    continue;
                };
                let (mut from_client, mut to_server) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_client, &mut to_server);
                    let _ = to_server.shutdown(Shutdown::Write);
                });
                let (state, watch) = (Arc::clone(&state), watch.clone());
                let hold = Arc::clone(&hold);
                std::thread::spawn(move || {
                    let (mut from_server, mut to_client) = (server, client);
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match from_server.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let cut = state.lock().unwrap().as_ref().is_some_and(|before| {
                            entries(&watch).iter().any(|e| !before.contains(e))
                        });
                        // Held: the answer waits (at most a minute).
                        for _ in 0..1200 {
                            if !holding(&hold) {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        if cut || to_client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to_client.shutdown(Shutdown::Both);
                    let _ = from_server.shutdown(Shutdown::Both);
                });
            }
        });
        Self {
            address,
            armed,
            held,
        }
    }

    /// Holds the host's answers back once an entry appears under `dir`.
    fn hold(&self, dir: &Path) {
        *self.held.lock().unwrap() = Some((dir.to_owned(), entries(dir)));
    }

    fn release(&self) {
        *self.held.lock().unwrap() = None;
    }

    fn arm(&self, watch: &Path) {
        *self.armed.lock().unwrap() = Some(entries(watch));
    }

    fn disarm(&self) {
        *self.armed.lock().unwrap() = None;
    }
}

/// `nuage residency set|clear` for the tenant (or one of its buckets).
fn residency(server: &Server, args: &[&str]) {
    run_ok(
        nuage()
            .arg("residency")
            .args(args)
            .args(["--endpoint", &server.endpoint, "--data-dir"])
            .arg(&server.data_dir)
            .env_remove("NUAGE_OPERATOR_TOKEN"),
    );
}

fn set_policy(server: &Server, dir: &Path, target: &[&str], name: &str, policy: &str) {
    let file = dir.join(name);
    std::fs::write(&file, policy).unwrap();
    let mut args = vec!["set"];
    args.extend_from_slice(target);
    args.extend_from_slice(&["--policy", file.to_str().unwrap()]);
    residency(server, &args);
}

fn run_instance(server: &Server, home: &Path, image: &str, user_data: &str) -> Value {
    json(
        server,
        home,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            image,
            "--instance-type",
            "n1.nano",
            "--user-data",
            user_data,
        ],
    )
}

#[test]
#[allow(clippy::too_many_lines)]
fn instances_run_only_on_hosts_their_residency_allows() {
    let Some(guest) = guest() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();

    // The cluster's PKI: a certificate per host, one for the gateway.
    let ca = dir.join("ca");
    run_ok(nuage().args(["cluster", "ca", "init", "--dir"]).arg(&ca));
    let issue = |node: &str, site: &str, role: &str| -> PathBuf {
        let out = dir.join(format!("certs-{node}"));
        run_ok(
            nuage()
                .args(["cluster", "cert", "issue", "--ca-dir"])
                .arg(&ca)
                .args(["--node", node, "--site", site, "--role", role])
                .args(["--san", "127.0.0.1", "--out"])
                .arg(&out),
        );
        out
    };
    let host_config = |name: &str, certs: &Path| -> PathBuf {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[compute]\naccelerator = \"tcg\"\nvcpus = 1\nmemory_mib = 256\n\
                 stop_wait_seconds = 20\ncert = {:?}\nkey = {:?}\nca = {:?}\n",
                certs.join("cert.pem"),
                certs.join("key.pem"),
                certs.join("ca.pem")
            ),
        )
        .unwrap();
        path
    };
    let fr_certs = issue("fr-1", "par1", "compute");
    let de_certs = issue("de-1", "fra1", "compute");
    let gw_certs = issue("gw-1", "par1", "gateway");
    let fr = Host::start(
        &host_config("fr-1", &fr_certs),
        &dir.join("host-fr"),
        "127.0.0.1:0",
    );
    let mut de = Host::start(
        &host_config("de-1", &de_certs),
        &dir.join("host-de"),
        "127.0.0.1:0",
    );
    let (fr_dir, de_dir) = (fr.instances_dir(), de.instances_dir());
    let _reaper = QemuReaper::under(&[&fr_dir, &de_dir]);
    // The gateway reaches the German host through a relay that can lose
    // answers.
    let relay = Relay::start(de.address.clone(), de_dir.clone());

    // The topology: a French and a German site, a host in each.
    let topology = dir.join("topology.toml");
    std::fs::write(
        &topology,
        format!(
            r#"
[[region]]
id = "fr-par"
[[region]]
id = "de-fra"

[[site]]
id = "par1"
region = "fr-par"
country = "FR"
operator = {{ entity = "Nuage SAS", country_of_control = "FR" }}
[[site]]
id = "par2"
region = "fr-par"
country = "FR"
operator = {{ entity = "Nuage SAS", country_of_control = "FR" }}
[[site]]
id = "fra1"
region = "de-fra"
country = "DE"
operator = {{ entity = "Nuage GmbH", country_of_control = "DE" }}

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

[[compute_host]]
id = "fr-1"
site = "par1"
endpoint = "https://{}"
[[compute_host]]
id = "de-1"
site = "fra1"
endpoint = "https://{}"
availability_zone = "de-fra-1a"
"#,
            fr.address, relay.address
        ),
    )
    .unwrap();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "topology_file = {:?}\n\
             [[regions]]\nname = \"fr-par\"\ncountry = \"FR\"\n\
             [[regions]]\nname = \"de-fra\"\ncountry = \"DE\"\n\
             [compute]\nhosts = \"topology\"\ncert = {:?}\nkey = {:?}\nca = {:?}\n",
            topology,
            gw_certs.join("cert.pem"),
            gw_certs.join("key.pem"),
            gw_certs.join("ca.pem")
        ),
    )
    .unwrap();
    let data = dir.join("gateway");
    std::fs::create_dir_all(&data).unwrap();
    let server = Server::start_in(&data, &["--config", config.to_str().unwrap()]);
    assert!(
        server.banner.contains("scheduling onto 2 compute hosts"),
        "{}",
        server.banner
    );
    let zones = json(&server, &home, &["ec2", "describe-availability-zones"]);
    let names: Vec<&str> = zones["AvailabilityZones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["ZoneName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["de-fra-1a", "par1"], "{zones}");

    // A France-only tenant, its image in its bucket.
    let tenant = tenant_of(&server, &home);
    set_policy(
        &server,
        dir,
        &["--tenant", &tenant],
        "france.json",
        FRANCE_ONLY,
    );
    let bucket = common::bucket_name("ec2-hosts");
    let disk = dir.join("disk.raw");
    put_tiny_image(&server, &home, &bucket, &disk, guest);
    let registered = register_image(
        &server,
        &home,
        "tiny",
        &bucket,
        ["tiny/disk.raw", "tiny/kernel", "tiny/initrd.gz"],
    );
    let image = registered["ImageId"].as_str().unwrap().to_owned();
    // Cached on the one host the tenant may use.
    assert_eq!((fr.images(), de.images()), (1, 0));

    // The first instance: on the French host, in its zone.
    let first = run_instance(&server, &home, &image, "echo hello-from-france");
    let first_id = first["Instances"][0]["InstanceId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        first["Instances"][0]["Placement"]["AvailabilityZone"],
        "par1"
    );
    assert_eq!(
        instance(&server, &home, &first_id)["State"]["Name"],
        "running"
    );
    assert_eq!(qemu_under(&fr_dir).len(), 1, "one QEMU on the French host");
    assert!(qemu_under(&de_dir).is_empty(), "none on the German host");
    assert!(fr_dir.join(&first_id).exists());

    // The French host is full: refused, although the German one has room,
    // and nothing starts there.
    let stderr = refused(
        &server,
        &home,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            &image,
            "--instance-type",
            "n1.nano",
        ],
        "InsufficientInstanceCapacity",
    );
    assert!(stderr.contains("fr-1"), "{stderr}");
    assert!(!stderr.contains("de-1"), "{stderr}");
    assert!(qemu_under(&de_dir).is_empty());
    assert_eq!(de.images(), 0, "no byte of the image went to Germany");
    assert_eq!(
        std::fs::read_dir(&de_dir).map(|d| d.count()).unwrap_or(0),
        0,
        "no instance directory on the German host"
    );
    // Asking for the German zone is a residency refusal, not a placement.
    let stderr = refused(
        &server,
        &home,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            &image,
            "--instance-type",
            "n1.nano",
            "--placement",
            "AvailabilityZone=de-fra-1a",
        ],
        "Unsupported",
    );
    assert!(stderr.contains("fra1") && stderr.contains("DE"), "{stderr}");
    assert!(qemu_under(&de_dir).is_empty());

    // Germany allowed for the tenant, but not for the bucket holding the
    // image: its bytes may not go there, so the French host (full) is the
    // only candidate.
    set_policy(
        &server,
        dir,
        &["--tenant", &tenant],
        "both.json",
        FRANCE_OR_GERMANY,
    );
    set_policy(
        &server,
        dir,
        &["--tenant", &tenant, "--bucket", &bucket],
        "bucket-france.json",
        FRANCE_ONLY,
    );
    let stderr = refused(
        &server,
        &home,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            &image,
            "--instance-type",
            "n1.nano",
        ],
        "InsufficientInstanceCapacity",
    );
    assert!(
        stderr.contains("fr-1") && !stderr.contains("de-1"),
        "{stderr}"
    );
    assert_eq!(de.images(), 0, "no byte of the image went to Germany");
    assert!(qemu_under(&de_dir).is_empty());

    // Another tenant, allowed Germany only, names that bucket (which it may
    // not read): refused as unauthorized, and told nothing of the bucket's
    // residency policy, which would exclude every host it may use.
    let (other_tenant, other) = tenant_with_administrator(&server, "ec2-hosts-other", "root");
    set_policy(
        &server,
        dir,
        &["--tenant", &other_tenant],
        "germany.json",
        GERMANY_ONLY,
    );
    let other_home = dir.join("home-other");
    std::fs::create_dir_all(&other_home).unwrap();
    let args = [
        "ec2",
        "register-image",
        "--name",
        "borrowed",
        "--image-location",
        &format!("{bucket}/tiny/disk.raw"),
    ];
    let stderr = check_refused(
        aws_as(&server, &other_home, (&other.0, &other.1), &args),
        &args,
        "UnauthorizedOperation",
    );
    assert!(
        !stderr.contains("residency") && !stderr.contains("FR"),
        "{stderr}"
    );
    residency(
        &server,
        &["clear", "--tenant", &tenant, "--bucket", &bucket],
    );

    // The image's disk object changed since RegisterImage: it is not
    // pushed to Germany, and nothing starts.
    let disk_key = format!("s3://{bucket}/tiny/disk.raw");
    let changed = dir.join("changed.raw");
    std::fs::write(&changed, vec![1u8; 1024 * 1024]).unwrap();
    aws_ok(
        &server,
        &home,
        &["s3", "cp", changed.to_str().unwrap(), &disk_key],
    );
    refused(
        &server,
        &home,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            &image,
            "--instance-type",
            "n1.nano",
        ],
        "InvalidAMIID.Unavailable",
    );
    assert_eq!(de.images(), 0, "a changed image is not pushed");
    assert!(qemu_under(&de_dir).is_empty());
    aws_ok(
        &server,
        &home,
        &["s3", "cp", disk.to_str().unwrap(), &disk_key],
    );

    // Allowed Germany too: the next instance runs there, the image pushed
    // to the German host first (checked against the registered content).
    // Its answer is lost on the way back: the tenant is told the instance
    // may have started, and sees it.
    relay.arm(&de_dir);
    let run_args = [
        "ec2",
        "run-instances",
        "--image-id",
        &image,
        "--instance-type",
        "n1.nano",
        "--user-data",
        "echo hello-from-germany",
        "--client-token",
        "lost-launch-1",
    ];
    let stderr = refused(&server, &home, &run_args, "InternalError");
    assert!(stderr.contains("may have started"), "{stderr}");
    relay.disarm();
    let all = json(&server, &home, &["ec2", "describe-instances"]);
    let in_germany: Vec<String> = all["Reservations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["Instances"].as_array().unwrap().clone())
        .filter(|i| i["Placement"]["AvailabilityZone"] == "de-fra-1a")
        .map(|i| i["InstanceId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(in_germany.len(), 1, "{all}");
    let second_id = in_germany[0].clone();
    assert!(de_dir.join(&second_id).exists());
    // The client's retry, with the same token: the same instance, no other.
    let second = json(&server, &home, &run_args);
    assert_eq!(second["Instances"][0]["InstanceId"], second_id.as_str());
    assert_eq!(
        second["Instances"][0]["Placement"]["AvailabilityZone"],
        "de-fra-1a"
    );
    assert_eq!(qemu_under(&de_dir).len(), 1, "one QEMU for one token");
    // The guest was told the topology's zone, as EC2 says.
    let metadata: Value = serde_json::from_slice(
        &std::fs::read(de_dir.join(&second_id).join("metadata.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metadata["availability_zone"], "de-fra-1a", "{metadata}");
    assert_eq!(de.images(), 1);
    assert_eq!(qemu_under(&de_dir).len(), 1);
    assert_eq!(qemu_under(&fr_dir).len(), 1);
    assert!(de_dir.join(&second_id).exists() && !fr_dir.join(&second_id).exists());
    let all = json(&server, &home, &["ec2", "describe-instances"]);
    let mut zones: Vec<String> = all["Reservations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["Instances"].as_array().unwrap().clone())
        .map(|i| {
            i["Placement"]["AvailabilityZone"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    zones.sort();
    assert_eq!(zones, ["de-fra-1a", "par1"], "{all}");

    // Console output, stop and start through the remote host.
    wait_for("the German guest's user data output", || {
        console(&server, &home, &second_id).contains("hello-from-germany")
    });
    assert!(!console(&server, &home, &second_id).contains("hello-from-france"));
    json(
        &server,
        &home,
        &["ec2", "stop-instances", "--instance-ids", &second_id],
    );
    wait_for("the German instance to stop", || {
        instance(&server, &home, &second_id)["State"]["Name"] == "stopped"
    });
    assert!(qemu_under(&de_dir).is_empty(), "QEMU runs while stopped");
    json(
        &server,
        &home,
        &["ec2", "start-instances", "--instance-ids", &second_id],
    );
    wait_for("the German instance to run again", || {
        instance(&server, &home, &second_id)["State"]["Name"] == "running"
    });
    assert_eq!(qemu_under(&de_dir).len(), 1);
    json(
        &server,
        &home,
        &["ec2", "stop-instances", "--instance-ids", &second_id],
    );
    wait_for("the German instance to stop again", || {
        instance(&server, &home, &second_id)["State"]["Name"] == "stopped"
    });

    // France only again: the stopped German instance may not start (or
    // reboot) there any more.
    set_policy(
        &server,
        dir,
        &["--tenant", &tenant],
        "france-again.json",
        FRANCE_ONLY,
    );
    for action in ["start-instances", "reboot-instances"] {
        let stderr = refused(
            &server,
            &home,
            &["ec2", action, "--instance-ids", &second_id],
            "Unsupported",
        );
        assert!(
            stderr.contains("de-1") && stderr.contains("fra1"),
            "{stderr}"
        );
    }
    assert!(qemu_under(&de_dir).is_empty(), "nothing started in Germany");
    set_policy(
        &server,
        dir,
        &["--tenant", &tenant],
        "both-again.json",
        FRANCE_OR_GERMANY,
    );

    // The German host goes down: its instance is described by its last
    // known state, with the reason; a lifecycle call is `Unavailable`.
    de.kill();
    let seen = instance(&server, &home, &second_id);
    assert_eq!(seen["State"]["Name"], "stopped", "{seen}");
    assert!(
        seen["StateReason"]["Message"]
            .as_str()
            .unwrap_or("")
            .contains("unreachable"),
        "{seen}"
    );
    assert_eq!(
        instance(&server, &home, &first_id)["State"]["Name"],
        "running"
    );
    refused(
        &server,
        &home,
        &["ec2", "start-instances", "--instance-ids", &second_id],
        "Unavailable",
    );
    de.restart();

    // Terminate: each on its own host, nothing left running.
    json(
        &server,
        &home,
        &[
            "ec2",
            "terminate-instances",
            "--instance-ids",
            &first_id,
            &second_id,
        ],
    );
    wait_for("both instances to be terminated", || {
        instance(&server, &home, &first_id)["State"]["Name"] == "terminated"
            && instance(&server, &home, &second_id)["State"]["Name"] == "terminated"
    });
    assert!(qemu_under(&fr_dir).is_empty() && qemu_under(&de_dir).is_empty());
    for (dir, id) in [(&fr_dir, &first_id), (&de_dir, &second_id)] {
        let left: Vec<String> = std::fs::read_dir(dir.join(id))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["instance.json"], "{}", dir.display());
    }

    // A ClientToken repeated while its first request still runs (its image
    // being pushed: the client's read timeout ran out, and botocore sent
    // the same token again) waits for it and answers its instance: never
    // a reservation without instances, never a second instance. A second
    // image, cached in France, pushed to Germany (the French host full);
    // the German host's answer to the push is held back by the relay.
    set_policy(
        &server,
        dir,
        &["--tenant", &tenant],
        "france-for-image.json",
        FRANCE_ONLY,
    );
    let disk2 = dir.join("disk2.raw");
    std::fs::write(&disk2, vec![2u8; 1024 * 1024]).unwrap();
    copy_to_bucket(&server, &home, &bucket, &[(&disk2, "tiny/disk2.raw")]);
    let registered = register_image(
        &server,
        &home,
        "tiny-2",
        &bucket,
        ["tiny/disk2.raw", "tiny/kernel", "tiny/initrd.gz"],
    );
    let image2 = registered["ImageId"].as_str().unwrap().to_owned();
    assert_eq!((fr.images(), de.images()), (2, 1));
    // The French host full, the tenant allowed Germany: the run goes there.
    let filler = run_instance(&server, &home, &image, "echo filler");
    let filler_id = filler["Instances"][0]["InstanceId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(fr_dir.join(&filler_id).exists());
    set_policy(
        &server,
        dir,
        &["--tenant", &tenant],
        "both-for-run.json",
        FRANCE_OR_GERMANY,
    );
    let de_images = de.data.join("compute/host/images");
    relay.hold(&de_images);
    let token_args: Vec<String> = [
        "--output",
        "json",
        "ec2",
        "run-instances",
        "--image-id",
        &image2,
        "--instance-type",
        "n1.nano",
        "--client-token",
        "concurrent-1",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    let run_in_background = || {
        let args: Vec<&str> = token_args.iter().map(String::as_str).collect();
        aws(&server, &home, &args)
    };
    let images_before = entries(&de_images).len();
    let (first, repeat) = std::thread::scope(|scope| {
        let first = scope.spawn(run_in_background);
        wait_for("the push to the German host to begin", || {
            entries(&de_images).len() > images_before
        });
        let repeat = scope.spawn(run_in_background);
        // The repeat waits for the first (polling its token); let the
        // first go on only once it is surely waiting.
        std::thread::sleep(Duration::from_secs(3));
        relay.release();
        (first.join().unwrap(), repeat.join().unwrap())
    });
    let answers: Vec<Value> = [first, repeat]
        .into_iter()
        .map(|out| {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    let ids: Vec<&str> = answers
        .iter()
        .map(|a| {
            let instances = a["Instances"].as_array().unwrap();
            assert_eq!(instances.len(), 1, "{a}");
            instances[0]["InstanceId"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids[0], ids[1], "{answers:?}");
    assert_eq!(answers[0]["ReservationId"], answers[1]["ReservationId"]);
    assert_eq!(qemu_under(&de_dir).len(), 1, "one instance for one token");
    assert_eq!(de.images(), 2);
    json(
        &server,
        &home,
        &[
            "ec2",
            "terminate-instances",
            "--instance-ids",
            ids[0],
            &filler_id,
        ],
    );
    wait_for("the token's instance to be terminated", || {
        instance(&server, &home, ids[0])["State"]["Name"] == "terminated"
    });
    assert!(qemu_under(&de_dir).is_empty() && qemu_under(&fr_dir).is_empty());
    drop(fr);
}
