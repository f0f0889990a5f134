//! Guest networking with real QEMU (TCG) and the tiny guest: the metadata
//! service at 169.254.169.254 (the guest reads its instance id and user data
//! from it and prints them on its console), the SSH forward (a TCP
//! connection to the reported address reaches the guest's port 22), graceful
//! reboot and its hard-reset fallback, and what stop, start and terminate do
//! to the socket and the port.
//!
//! Under `CI=true` a missing QEMU or a guest that cannot be built fails the
//! tests; elsewhere they print why and skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nuage_compute::driver::process_alive;
use nuage_compute::{
    AccelMode, ComputeError, ComputeHost, DirectKernel, GUEST_IPV4, HostCapacity, HostConfig,
    ImageSource, InstanceRecord, InstanceState, RebootOutcome, RunRequest,
};
use nuage_testsupport::guest::{QemuReaper, TinyGuest, tiny_guest};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The tiny guest, built once per test binary.
fn guest() -> Option<&'static TinyGuest> {
    tiny_guest(
        &PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tiny-guest-network"),
        &["socat"],
    )
}

async fn open_host(state: &Path, configure: impl FnOnce(&mut HostConfig)) -> ComputeHost {
    let mut config = HostConfig::new(
        state.to_path_buf(),
        HostCapacity {
            vcpus: 4,
            memory_mib: 2048,
        },
    );
    config.accel = AccelMode::Tcg;
    config.stop_wait = Duration::from_secs(20);
    configure(&mut config);
    ComputeHost::open(config).await.unwrap().0
}

async fn register(host: &ComputeHost, guest: &TinyGuest, scratch: &Path) -> String {
    let disk = scratch.join("base.raw");
    std::fs::write(&disk, vec![0u8; 1024 * 1024]).unwrap();
    host.register_image(&ImageSource {
        disk,
        kernel: Some(DirectKernel {
            kernel: guest.kernel(),
            initrd: Some(guest.initrd()),
            cmdline: guest.cmdline.clone(),
        }),
    })
    .await
    .unwrap()
    .id
}

const USER_DATA: &[u8] = b"#!/bin/sh\necho hello-from-user-data\n";
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBogus test";

fn request(image_id: &str, user_data: &[u8]) -> RunRequest {
    RunRequest {
        instance_type: "n1.nano".into(),
        image_id: image_id.into(),
        hostname: Some("tiny".into()),
        ssh_keys: vec![("test".into(), KEY.into())],
        user_data: Some(user_data.to_vec()),
        ..RunRequest::default()
    }
}

/// Waits (bounded) until the console shows `needle` at least `count` times.
async fn wait_console(host: &ComputeHost, id: &str, needle: &str, count: usize) -> String {
    for _ in 0..1800 {
        let console = host.console_output(id).unwrap();
        if console.matches(needle).count() >= count {
            return console;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "console of {id} never showed {needle:?} {count} times:\n{}",
        host.console_output(id).unwrap()
    );
}

/// Waits (bounded) until the record satisfies `done`.
async fn wait_record(
    host: &ComputeHost,
    id: &str,
    done: impl Fn(&InstanceRecord) -> bool,
) -> InstanceRecord {
    for _ in 0..1800 {
        let record = host.describe(id).unwrap();
        if done(&record) {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{id}: {:?}", host.describe(id).unwrap());
}

/// Connects to the SSH forward and reads the guest's banner line. QEMU
/// accepts on the host side at once and then connects to the guest, so
/// until the guest's listener is up a connection just closes: retry
/// (bounded) while the answer is empty.
async fn ssh_banner(address: SocketAddr) -> String {
    for _ in 0..100 {
        let stream = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::net::TcpStream::connect(address),
        )
        .await
        .expect("connect timed out")
        .unwrap();
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stream).read_line(&mut line),
        )
        .await
        .expect("no banner")
        .unwrap();
        if !line.is_empty() {
            return line.trim_end().to_string();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{address} never answered with a banner");
}

/// One HTTP/1.1 request on the instance's metadata socket, as QEMU's
/// forward delivers the guest's: the status code and body.
async fn metadata_get(socket: &Path, head: &str) -> (u16, String) {
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the metadata service did not answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n")
}

const BOOTED: &str = "nuage-guest: booted kernel";
const READY: &str = "waiting for the power button";
const PORT_22: &str = "nuage-guest: port 22 answers";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_ssh_graceful_reboot_stop_start_terminate() {
    let Some(guest) = guest() else { return };
    let state = tempfile::tempdir().unwrap();
    let host = open_host(state.path(), |c| {
        // A graceful reboot must not need the fallback.
        c.reboot_wait = Duration::from_secs(600);
    })
    .await;
    let image = register(&host, guest, state.path()).await;
    let mut reaper = QemuReaper::default();

    let started = std::time::Instant::now();
    let record = host.run(request(&image, USER_DATA)).await.unwrap();
    let id = record.id.clone();
    reaper.push(record.pid.unwrap());
    assert_eq!(record.private_ip, Some(GUEST_IPV4));
    let forward = record.ssh_forward.expect("an SSH forward");
    assert_eq!(forward.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));

    // The guest read its identity and user data from 169.254.169.254.
    wait_console(&host, &id, &format!("metadata instance-id {id}"), 1).await;
    eprintln!(
        "run to the metadata answer in the guest: {:?}",
        started.elapsed()
    );
    let digest = hex::encode(Sha256::digest(USER_DATA));
    wait_console(
        &host,
        &id,
        &format!("metadata user-data sha256 {digest}"),
        1,
    )
    .await;
    let console = wait_console(&host, &id, PORT_22, 1).await;
    assert!(
        console.contains(&format!("network eth0 {GUEST_IPV4}")),
        "{console}"
    );

    // The reported forward reaches the guest's port 22.
    assert_eq!(ssh_banner(forward).await, "SSH-2.0-nuage-tiny-guest");

    // The service itself, on its socket (only the host's user may connect).
    let dir = host.instance_dir(&id);
    let socket = dir.join("metadata.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "metadata socket mode {mode:o}");
    let (status, body) = metadata_get(&socket, &get("/openstack/latest/meta_data.json")).await;
    assert_eq!(status, 200);
    let meta: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(meta["uuid"], id.as_str());
    assert_eq!(meta["public_keys"]["test"], KEY);
    let (status, body) =
        metadata_get(&socket, &get("/latest/meta-data/public-keys/0/openssh-key")).await;
    assert_eq!((status, body.as_str()), (200, KEY));
    let (status, body) = metadata_get(&socket, &get("/openstack/latest/user_data")).await;
    assert_eq!((status, body.as_bytes()), (200, USER_DATA));
    assert_eq!(
        metadata_get(&socket, &get("/latest/meta-data/nothing"))
            .await
            .0,
        404
    );
    // A request head over the bound is refused, not buffered.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (status, _) = metadata_get(&socket, &huge).await;
    assert_eq!(status, 431, "an oversized request head");

    // Reboot: Ctrl-Alt-Del, and the guest reboots itself.
    let pid = host.describe(&id).unwrap().pid.unwrap();
    wait_console(&host, &id, READY, 1).await;
    host.reboot(&id).await.unwrap();
    wait_console(&host, &id, "ctrl-alt-del, rebooting", 1).await;
    wait_console(&host, &id, BOOTED, 2).await;
    let rebooted = wait_record(&host, &id, |r| r.last_reboot.is_some()).await;
    assert_eq!(rebooted.last_reboot, Some(RebootOutcome::Graceful));
    assert_eq!(rebooted.pid, Some(pid));
    wait_console(&host, &id, PORT_22, 2).await;

    // Stop: no socket, no forward listening; the port stays the instance's.
    let stopped = host.stop(&id).await.unwrap();
    assert_eq!(stopped.state, InstanceState::Stopped);
    assert!(!socket.exists(), "metadata socket left after stop");
    assert!(
        tokio::net::TcpStream::connect(forward).await.is_err(),
        "the SSH forward still listens after stop"
    );
    assert_eq!(stopped.ssh_forward, Some(forward));

    // Start: the same port (free meanwhile), the metadata service again.
    let running = host.start(&id).await.unwrap();
    reaper.push(running.pid.unwrap());
    assert_eq!(running.ssh_forward, Some(forward));
    wait_console(&host, &id, &format!("metadata instance-id {id}"), 3).await;
    wait_console(&host, &id, PORT_22, 3).await;
    assert_eq!(ssh_banner(forward).await, "SSH-2.0-nuage-tiny-guest");

    // Terminate: no socket, no metadata file, no forward, no address.
    let pid = running.pid.unwrap();
    let terminated = host.terminate(&id).await.unwrap();
    assert_eq!(terminated.state, InstanceState::Terminated);
    assert!(!process_alive(pid));
    assert_eq!(
        (terminated.ssh_forward, terminated.private_ip),
        (None, None)
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["instance.json".to_string()], "files left behind");
    assert!(tokio::net::TcpStream::connect(forward).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_falls_back_to_a_reset_when_the_guest_ignores_it() {
    let Some(guest) = guest() else { return };
    let state = tempfile::tempdir().unwrap();
    let host = open_host(state.path(), |c| c.reboot_wait = Duration::from_secs(3)).await;
    let image = register(&host, guest, state.path()).await;
    let mut reaper = QemuReaper::default();
    let user_data = b"#!/bin/sh\ntouch /tmp/ignore-ctrl-alt-del\n";
    let record = host.run(request(&image, user_data)).await.unwrap();
    let id = record.id.clone();
    reaper.push(record.pid.unwrap());
    wait_console(&host, &id, READY, 1).await;

    host.reboot(&id).await.unwrap();
    wait_console(&host, &id, "ctrl-alt-del ignored", 1).await;
    wait_console(&host, &id, BOOTED, 2).await;
    let rebooted = wait_record(&host, &id, |r| r.last_reboot.is_some()).await;
    assert_eq!(rebooted.last_reboot, Some(RebootOutcome::Forced));
    assert_eq!(rebooted.state, InstanceState::Running);
    let console = host.console_output(&id).unwrap();
    assert!(!console.contains("ctrl-alt-del, rebooting"), "{console}");
    host.terminate(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_ports_come_from_the_configured_range_and_are_released() {
    let Some(guest) = guest() else { return };
    let state = tempfile::tempdir().unwrap();
    // Two ports nobody listens on now.
    let base = (0..200)
        .map(|_| 40_000 + rand_port_offset())
        .find(|&p| {
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        })
        .unwrap();
    let range = base..=base + 1;
    let host = open_host(state.path(), |c| c.ssh_port_range = Some(range.clone())).await;
    let image = register(&host, guest, state.path()).await;
    let mut reaper = QemuReaper::default();

    let a = host.run(request(&image, USER_DATA)).await.unwrap();
    reaper.push(a.pid.unwrap());
    let b = host.run(request(&image, USER_DATA)).await.unwrap();
    reaper.push(b.pid.unwrap());
    let (pa, pb) = (a.ssh_forward.unwrap().port(), b.ssh_forward.unwrap().port());
    assert!(
        range.contains(&pa) && range.contains(&pb) && pa != pb,
        "{pa} {pb}"
    );
    // QEMU listens on both before the guest even boots.
    for port in [pa, pb] {
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        );
    }
    // The range is used up: a third instance cannot get a port.
    let third = host.run(request(&image, USER_DATA)).await;
    assert!(
        matches!(&third, Err(ComputeError::InsufficientInstanceCapacity { requested, .. }) if requested.contains("SSH port")),
        "{third:?}"
    );
    // Terminating one releases its port for the next.
    host.terminate(&a.id).await.unwrap();
    let c = host.run(request(&image, USER_DATA)).await.unwrap();
    reaper.push(c.pid.unwrap());
    assert_eq!(c.ssh_forward.unwrap().port(), pa);
    host.terminate(&b.id).await.unwrap();
    host.terminate(&c.id).await.unwrap();

    // A stopped instance keeps its port: with A stopped and B running, C
    // gets none, and A starts again on its own.
    let a = host.run(request(&image, USER_DATA)).await.unwrap();
    reaper.push(a.pid.unwrap());
    let pa = a.ssh_forward.unwrap().port();
    wait_console(&host, &a.id, READY, 1).await;
    let stopped = host.stop(&a.id).await.unwrap();
    assert_eq!(stopped.state, InstanceState::Stopped);
    assert_eq!(stopped.ssh_forward.unwrap().port(), pa);
    let b = host.run(request(&image, USER_DATA)).await.unwrap();
    reaper.push(b.pid.unwrap());
    let pb = b.ssh_forward.unwrap().port();
    assert!(range.contains(&pb) && pb != pa, "{pa} {pb}");
    let third = host.run(request(&image, USER_DATA)).await;
    assert!(
        matches!(&third, Err(ComputeError::InsufficientInstanceCapacity { requested, .. }) if requested.contains("SSH port")),
        "{third:?}"
    );
    let started = host.start(&a.id).await.unwrap();
    reaper.push(started.pid.unwrap());
    assert_eq!(started.ssh_forward.unwrap().port(), pa);
    host.terminate(&a.id).await.unwrap();
    host.terminate(&b.id).await.unwrap();
}

/// This machine's address on its outbound interface, if it has one (no
/// packet is sent: a UDP socket's connect only picks the route).
fn outbound_address() -> Option<Ipv4Addr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// `restrict=on`: the guest reaches neither the host (QEMU's gateway
/// address, which user networking maps to the host's loopback) nor any
/// other address, even where the host listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_reaches_neither_the_host_nor_the_outside() {
    let Some(guest) = guest() else { return };
    let state = tempfile::tempdir().unwrap();
    let host = open_host(state.path(), |_| {}).await;
    let image = register(&host, guest, state.path()).await;
    let mut reaper = QemuReaper::default();
    // A listener the guest would reach without the restriction; it closes
    // what it accepts, so that a probe that does connect ends at once.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acceptor = tokio::spawn({
        let accepted = std::sync::Arc::clone(&accepted);
        async move {
            while listener.accept().await.is_ok() {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let mut targets = vec![("gateway", "169.254.169.2".to_string())];
    if let Some(ip) = outbound_address() {
        targets.push(("outside", ip.to_string()));
    } else {
        eprintln!("no outbound address: checking the gateway only");
    }
    let mut script = String::from(
        "#!/bin/sh
(
         i=0
         while ! ifconfig eth0 | grep -q 'inet addr' && [ $i -lt 1200 ]; do i=$((i + 1)); sleep 0.5; done
",
    );
    for (name, address) in &targets {
        script.push_str(&format!(
            "if echo hi | nc -w 5 {address} {port} >/dev/null 2>&1; then r=reached; else r=failed; fi
             echo \"nuage-guest: probe {name} $r\"
"
        ));
    }
    script.push_str(
        ") &
",
    );
    let record = host.run(request(&image, script.as_bytes())).await.unwrap();
    reaper.push(record.pid.unwrap());
    for (name, _) in &targets {
        let console =
            wait_console(&host, &record.id, &format!("nuage-guest: probe {name} "), 1).await;
        assert!(
            console.contains(&format!("nuage-guest: probe {name} failed")),
            "{name}: {console}"
        );
    }
    acceptor.abort();
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the guest connected to the host's listener"
    );
    host.terminate(&record.id).await.unwrap();
}

fn rand_port_offset() -> u16 {
    rand::random::<u16>() % 20_000
}

/// The `socat` processes QEMU started for instance directory `dir` (they
/// inherit QEMU's working directory, the instance's; glib may reparent
/// them, so the parent pid says nothing).
fn metadata_forwards(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| {
            entry.file_name().to_string_lossy().parse::<u32>().is_ok()
                && std::fs::read_to_string(entry.path().join("comm"))
                    .is_ok_and(|comm| comm.trim_end() == "socat")
                && std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == dir)
        })
        .count()
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A guest opening many idle connections to 169.254.169.254:80 makes QEMU
/// start one socat each, but no more than its open files allow, and each
/// exits once idle for `METADATA_FORWARD_IDLE_SECONDS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_metadata_connections_are_bounded_and_end() {
    use nuage_compute::limits::{METADATA_FORWARD_IDLE_SECONDS, QEMU_OPEN_FILES_MAX};
    let Some(guest) = guest() else { return };
    let state = tempfile::tempdir().unwrap();
    let host = open_host(state.path(), |_| {}).await;
    let image = register(&host, guest, state.path()).await;
    let mut reaper = QemuReaper::default();
    // Twice as many connections as QEMU has descriptors, each held open
    // (and silent) by `sleep`, once the network is up.
    let connections = 2 * QEMU_OPEN_FILES_MAX;
    let user_data = format!(
        "#!/bin/sh\n(\n\
         i=0\n\
         while ! ifconfig eth0 | grep -q 'inet addr' && [ $i -lt 1200 ]; do i=$((i + 1)); sleep 0.5; done\n\
         n=0\n\
         while [ $n -lt {connections} ]; do sleep 100000 | nc 169.254.169.254 80 >/dev/null 2>&1 & n=$((n + 1)); done\n\
         echo \"nuage-guest: opened $n idle metadata connections\"\n\
         ) &\n"
    );
    let mut req = request(&image, user_data.as_bytes());
    req.instance_type = "n1.micro".into();
    let record = host.run(req).await.unwrap();
    let id = record.id.clone();
    let pid = record.pid.unwrap();
    reaper.push(pid);
    let dir = host.instance_dir(&id);
    wait_console(&host, &id, "idle metadata connections", 1).await;
    // QEMU forks socat asynchronously to the guest's nc: watch (bounded)
    // until the count stops growing for a few seconds.
    let (mut most, mut same_since, mut qemu_fds) = (0, 0, 0);
    for _ in 0..600 {
        let now = metadata_forwards(&dir);
        assert!(
            now as u64 <= QEMU_OPEN_FILES_MAX,
            "{now} socat processes for one VM"
        );
        if now > most {
            (most, same_since, qemu_fds) = (now, 0, open_files(pid));
        } else {
            same_since += 1;
            if same_since >= 30 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "at most {most} socat processes for {connections} guest connections; qemu then held {qemu_fds} descriptors ({} of its own)",
        qemu_fds.saturating_sub(most)
    );
    assert!(
        most > 8,
        "the guest's connections never reached socat ({most})"
    );
    assert!(
        (most as u64) < QEMU_OPEN_FILES_MAX,
        "{most} socat processes for one VM"
    );
    // Idle, they end: the service closes those it serves after its head
    // timeout, socat the others after its idle timeout (bounded wait).
    let deadline = 3 * METADATA_FORWARD_IDLE_SECONDS * 10;
    let mut left = most;
    for _ in 0..deadline {
        left = metadata_forwards(&dir);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "socat processes still running");
    // The VM still runs.
    assert_eq!(host.describe(&id).unwrap().state, InstanceState::Running);
    assert!(process_alive(pid));
    host.terminate(&id).await.unwrap();
}
