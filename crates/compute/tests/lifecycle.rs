//! End-to-end tests of the compute host with real QEMU (TCG) booting a tiny
//! guest (Debian's kernel and a busybox initramfs) that
//! `scripts/compute/build-tiny-guest.sh` builds on first use.
//!
//! Under `CI=true` a missing QEMU or a guest that cannot be built fails the
//! tests; elsewhere they print why and skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use nuage_compute::driver::{decide_accelerator, process_alive};
use nuage_compute::{
    AccelMode, Accelerator, ComputeError, ComputeHost, DirectKernel, HostCapacity, HostConfig,
    ImageSource, InstanceState, RunRequest,
};
use nuage_testsupport::guest::{QemuReaper, TinyGuest, tiny_guest};

/// The tiny guest, built once per test binary.
fn guest() -> Option<&'static TinyGuest> {
    tiny_guest(
        &PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tiny-guest"),
        &[],
    )
}

async fn open_host(
    state: &Path,
    capacity: HostCapacity,
) -> (ComputeHost, nuage_compute::RecoveryReport) {
    let mut config = HostConfig::new(state.to_path_buf(), capacity);
    config.accel = AccelMode::Tcg;
    config.stop_wait = Duration::from_secs(20);
    ComputeHost::open(config).await.unwrap()
}

/// `path` (absolute) as a path relative to the current directory.
fn relative_to_cwd(path: &Path) -> std::path::PathBuf {
    let cwd = std::env::current_dir().unwrap();
    let mut relative = std::path::PathBuf::new();
    for _ in cwd.components().skip(1) {
        relative.push("..");
    }
    relative.join(path.strip_prefix("/").unwrap())
}

async fn register(host: &ComputeHost, guest: &TinyGuest, scratch: &Path) -> String {
    let disk = scratch.join("base.raw");
    std::fs::write(&disk, vec![0u8; 16 * 1024 * 1024]).unwrap();
    let image = host
        .register_image(&ImageSource {
            disk,
            kernel: Some(DirectKernel {
                kernel: guest.kernel(),
                initrd: Some(guest.initrd()),
                cmdline: guest.cmdline.clone(),
            }),
        })
        .await
        .unwrap();
    assert_eq!(image.format, "raw");
    image.id
}

fn request(image_id: &str) -> RunRequest {
    RunRequest {
        instance_type: "n1.nano".into(),
        image_id: image_id.into(),
        hostname: Some("tiny".into()),
        ssh_keys: vec![(
            "test".into(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBogus test".into(),
        )],
        user_data: Some(b"#!/bin/sh\necho hello-from-user-data\n".to_vec()),
        ..RunRequest::default()
    }
}

/// Waits (bounded) until the console shows `needle` at least `count` times.
async fn wait_console(host: &ComputeHost, id: &str, needle: &str, count: usize) -> String {
    for _ in 0..1200 {
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

async fn wait_state(
    host: &ComputeHost,
    id: &str,
    state: InstanceState,
) -> nuage_compute::InstanceRecord {
    for _ in 0..600 {
        let record = host.describe(id).unwrap();
        if record.state == state {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{id} never reached {state:?}: {}",
        host.describe(id).unwrap().state_description()
    );
}

const BOOTED: &str = "nuage-guest: booted kernel";
const READY: &str = "waiting for the power button";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_console_reboot_stop_start_terminate() {
    let Some(guest) = guest() else { return };
    let state = tempfile::tempdir().unwrap();
    let (host, _) = open_host(
        state.path(),
        HostCapacity {
            vcpus: 4,
            memory_mib: 2048,
        },
    )
    .await;
    assert_eq!(host.accelerator().accelerator, Accelerator::Tcg);
    let image = register(&host, guest, state.path()).await;
    let mut reaper = QemuReaper::default();

    let started = std::time::Instant::now();
    // The caller (a gateway) chooses the id and the zone the guest is told.
    let chosen = RunRequest {
        instance_id: Some(nuage_compute::new_instance_id()),
        availability_zone: Some("de-fra-1a".into()),
        ..request(&image)
    };
    let record = host.run(chosen.clone()).await.unwrap();
    assert_eq!(
        record.state,
        InstanceState::Running,
        "{}",
        record.state_description()
    );
    assert_eq!(Some(&record.id), chosen.instance_id.as_ref());
    assert_eq!(record.availability_zone, "de-fra-1a");
    let pid = record.pid.unwrap();
    reaper.push(pid);
    assert!(process_alive(pid));
    // A retry is the same instance, not another; one that differs is refused.
    let again = host.run(chosen.clone()).await.unwrap();
    assert_eq!(
        (again.id.as_str(), again.pid),
        (record.id.as_str(), Some(pid))
    );
    assert_eq!(host.list().len(), 1);
    let other = RunRequest {
        instance_type: "n1.micro".into(),
        ..chosen.clone()
    };
    assert!(matches!(
        host.run(other).await,
        Err(ComputeError::InvalidParameter(_))
    ));
    let console = wait_console(&host, &record.id, "hello-from-user-data", 1).await;
    eprintln!("boot to user data output: {:?}", started.elapsed());
    // The config drive carried the instance id, hostname and zone.
    assert!(console.contains(&record.id), "{console}");
    assert!(console.contains("\"hostname\":\"tiny\""), "{console}");
    assert!(
        console.contains("\"availability_zone\":\"de-fra-1a\""),
        "{console}"
    );
    wait_console(&host, &record.id, READY, 1).await;
    assert_eq!(host.hypervisor_status(&record.id).await.unwrap(), "running");

    // Reboot: a second boot shows in the console, the process stays.
    host.reboot(&record.id).await.unwrap();
    wait_console(&host, &record.id, BOOTED, 2).await;
    wait_console(&host, &record.id, READY, 2).await;
    assert_eq!(host.describe(&record.id).unwrap().pid, Some(pid));

    // Stop: ACPI power button, the guest powers off, QEMU exits.
    let started = std::time::Instant::now();
    let stopped = host.stop(&record.id).await.unwrap();
    eprintln!("stop (ACPI powerdown to exit): {:?}", started.elapsed());
    assert_eq!(
        stopped.state,
        InstanceState::Stopped,
        "{}",
        stopped.state_description()
    );
    assert!(
        stopped
            .state_description()
            .contains("UserInitiatedShutdown")
    );
    assert!(!process_alive(pid));
    assert!(
        host.console_output(&record.id)
            .unwrap()
            .contains("power button pressed")
    );
    assert_eq!(
        host.used(),
        HostCapacity {
            vcpus: 0,
            memory_mib: 0
        }
    );

    // Start: a new QEMU over the same overlay and config drive.
    let running = host.start(&record.id).await.unwrap();
    assert_eq!(running.state, InstanceState::Running);
    let pid = running.pid.unwrap();
    reaper.push(pid);
    wait_console(&host, &record.id, "hello-from-user-data", 3).await;
    assert_eq!(running.launches, 2);

    // Terminate: no process, no overlay, no config drive, no sockets.
    let dir = host.instance_dir(&record.id);
    assert!(dir.join("root.qcow2").exists() && dir.join("config.iso").exists());
    let terminated = host.terminate(&record.id).await.unwrap();
    assert_eq!(terminated.state, InstanceState::Terminated);
    assert!(!process_alive(pid), "qemu {pid} still runs");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["instance.json".to_string()], "files left behind");
    assert_eq!(
        host.used(),
        HostCapacity {
            vcpus: 0,
            memory_mib: 0
        }
    );
    assert!(matches!(
        host.start(&record.id).await,
        Err(ComputeError::IncorrectInstanceState { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_capacity_is_refused_and_sigkill_is_reported() {
    let Some(guest) = guest() else { return };
    let state = tempfile::tempdir().unwrap();
    let (host, _) = open_host(
        state.path(),
        HostCapacity {
            vcpus: 1,
            memory_mib: 256,
        },
    )
    .await;
    let image = register(&host, guest, state.path()).await;
    let mut reaper = QemuReaper::default();

    let first = host.run(request(&image)).await.unwrap();
    let pid = first.pid.unwrap();
    reaper.push(pid);
    let refused = host.run(request(&image)).await;
    assert!(
        matches!(
            refused,
            Err(ComputeError::InsufficientInstanceCapacity { .. })
        ),
        "{refused:?}"
    );
    let bigger = RunRequest {
        instance_type: "n1.medium".into(),
        ..request(&image)
    };
    assert!(matches!(
        host.run(bigger).await,
        Err(ComputeError::InsufficientInstanceCapacity { .. })
    ));
    assert_eq!(host.list().len(), 1, "a refused run leaves no instance");

    // Someone kills QEMU: the host notices and says so.
    wait_console(&host, &first.id, "hello-from-user-data", 1).await;
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let record = wait_state(&host, &first.id, InstanceState::Stopped).await;
    assert!(
        record
            .state_description()
            .contains("qemu exited with signal 9"),
        "{}",
        record.state_description()
    );
    assert_eq!(record.pid, None);
    // Its capacity is free again.
    assert_eq!(
        host.used(),
        HostCapacity {
            vcpus: 0,
            memory_mib: 0
        }
    );
    host.terminate(&first.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_restart_kills_untracked_qemu_and_reports() {
    let Some(guest) = guest() else { return };
    let state = tempfile::tempdir().unwrap();
    let capacity = HostCapacity {
        vcpus: 2,
        memory_mib: 1024,
    };
    let mut reaper = QemuReaper::default();

    let (host, _) = open_host(state.path(), capacity).await;
    let image = register(&host, guest, state.path()).await;
    let record = host.run(request(&image)).await.unwrap();
    let pid = record.pid.unwrap();
    reaper.push(pid);
    let doomed = host.run(request(&image)).await.unwrap();
    let doomed_pid = doomed.pid.unwrap();
    reaper.push(doomed_pid);
    wait_console(&host, &record.id, "hello-from-user-data", 1).await;
    // The host process "crashes": it forgets its VMs, which keep running.
    drop(host);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(process_alive(pid), "dropping the host must not kill VMs");
    // While no host runs, one of the VMs dies.
    let killed = std::process::Command::new("kill")
        .args(["-9", &doomed_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let (host, report) = open_host(state.path(), capacity).await;
    assert_eq!(report.killed_pids, vec![pid]);
    assert!(!process_alive(pid), "recovery left qemu {pid} running");
    let after = host.describe(&record.id).unwrap();
    assert_eq!(after.state, InstanceState::Stopped);
    let description = after.state_description();
    assert!(description.contains("host restarted"), "{description}");
    assert!(description.contains(&format!("pid {pid}")), "{description}");
    let dead = host.describe(&doomed.id).unwrap();
    assert_eq!(
        dead.state_description(),
        "stopped (Server.InternalError: qemu exited while the host was down)"
    );
    let mut changed = report.changed.clone();
    changed.sort();
    let mut expected = vec![
        (record.id.clone(), description),
        (doomed.id.clone(), dead.state_description()),
    ];
    expected.sort();
    assert_eq!(changed, expected);
    assert_eq!(
        host.used(),
        HostCapacity {
            vcpus: 0,
            memory_mib: 0
        }
    );
    host.terminate(&doomed.id).await.unwrap();

    // The instance can be started again by the new host.
    let running = host.start(&record.id).await.unwrap();
    reaper.push(running.pid.unwrap());
    wait_console(&host, &record.id, "hello-from-user-data", 2).await;
    host.terminate(&record.id).await.unwrap();
    assert!(!process_alive(running.pid.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_poweroff_is_an_instance_initiated_shutdown() {
    let Some(guest) = guest() else { return };
    let state = tempfile::tempdir().unwrap();
    let capacity = HostCapacity {
        vcpus: 1,
        memory_mib: 512,
    };
    // A relative state directory (as `nuage serve --data-dir ./data` gives):
    // the overlay must still find its base image, which qemu-img would look
    // for relative to the overlay's own directory.
    // Nested deeper than the test's own directory, so that resolving it
    // from the overlay's directory cannot land on the same place.
    let nested = state.path().join("a/b/c/d/e");
    std::fs::create_dir_all(&nested).unwrap();
    let relative = relative_to_cwd(&nested);
    assert!(relative.is_relative());
    let (host, _) = open_host(&relative, capacity).await;
    let image = register(&host, guest, state.path()).await;
    let mut reaper = QemuReaper::default();
    let run = RunRequest {
        user_data: Some(b"#!/bin/sh\necho going-down\npoweroff -f\n".to_vec()),
        ..request(&image)
    };
    let record = host.run(run).await.unwrap();
    reaper.push(record.pid.unwrap());
    let stopped = wait_state(&host, &record.id, InstanceState::Stopped).await;
    assert_eq!(
        stopped.state_description(),
        "stopped (Client.InstanceInitiatedShutdown: Instance initiated shutdown)"
    );
    assert!(
        host.console_output(&record.id)
            .unwrap()
            .contains("going-down")
    );
    assert!(matches!(
        host.reboot(&record.id).await,
        Err(ComputeError::IncorrectInstanceState { .. })
    ));
    host.terminate(&record.id).await.unwrap();
}

#[tokio::test]
async fn images_are_cached_by_content_and_checked() {
    let Some(_) = guest() else { return };
    let state = tempfile::tempdir().unwrap();
    // A registration that never finished (a crash) left its staging directory.
    let leftover = state.path().join("images").join("tmp-42");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("disk.raw"), b"half").unwrap();
    let (host, _) = open_host(
        state.path(),
        HostCapacity {
            vcpus: 1,
            memory_mib: 256,
        },
    )
    .await;
    assert!(
        !leftover.exists(),
        "the host's open removes what staging left"
    );
    let disk = state.path().join("a.raw");
    std::fs::write(&disk, vec![7u8; 1024 * 1024]).unwrap();
    let copy = state.path().join("b.raw");
    std::fs::copy(&disk, &copy).unwrap();
    let a = host
        .register_image(&ImageSource { disk, kernel: None })
        .await
        .unwrap();
    let b = host
        .register_image(&ImageSource {
            disk: copy,
            kernel: None,
        })
        .await
        .unwrap();
    assert_eq!(a.id, b.id, "the same bytes are one image");
    assert!(a.disk.starts_with(state.path()));

    // A qcow2 with a backing file could make QEMU read any host file.
    let sneaky = state.path().join("sneaky.qcow2");
    let created = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&a.disk)
        .arg(&sneaky)
        .status()
        .unwrap();
    assert!(created.success());
    let refused = host
        .register_image(&ImageSource {
            disk: sneaky,
            kernel: None,
        })
        .await;
    assert!(
        matches!(refused, Err(ComputeError::InvalidImage(_))),
        "{refused:?}"
    );
    // Nor with an external data file: its "disk" would be that host file.
    let secret = state.path().join("host-secret.raw");
    std::fs::write(&secret, vec![42u8; 64 * 1024]).unwrap();
    let data_file = state.path().join("data-file.qcow2");
    let created = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-o"])
        .arg(format!("data_file={}", secret.display()))
        .arg(&data_file)
        .arg("64K")
        .status()
        .unwrap();
    assert!(created.success());
    let refused = host
        .register_image(&ImageSource {
            disk: data_file,
            kernel: None,
        })
        .await;
    assert!(
        matches!(&refused, Err(ComputeError::InvalidImage(why)) if why.contains("data file")),
        "{refused:?}"
    );

    let unknown = RunRequest {
        image_id: "0".repeat(64),
        ..request("")
    };
    assert!(matches!(
        host.run(unknown).await,
        Err(ComputeError::ImageNotFound(_))
    ));
    let bad_type = RunRequest {
        instance_type: "t2.micro".into(),
        ..request(&a.id)
    };
    assert!(matches!(
        host.run(bad_type).await,
        Err(ComputeError::InvalidInstanceType(_))
    ));
    // An id not in the host's own format, or a malformed zone, is refused.
    for (id, zone) in [
        (Some("i-123"), None),
        (Some("i-0123456789ABCDEF0"), None),
        (Some("../../etc/passwd"), None),
        (None, Some("zone/../x")),
        (None, Some("")),
    ] {
        let bad = RunRequest {
            instance_id: id.map(str::to_owned),
            availability_zone: zone.map(str::to_owned),
            ..request(&a.id)
        };
        let refused = host.run(bad).await;
        assert!(
            matches!(refused, Err(ComputeError::InvalidParameter(_))),
            "{id:?} {zone:?}: {refused:?}"
        );
    }
    assert!(host.list().is_empty());
}

#[tokio::test]
async fn auto_does_not_trust_a_paravirtual_kvm() {
    if !Path::new("/sys/module/kvm_intel").exists() && !Path::new("/sys/module/kvm_amd").exists() {
        let qemu = PathBuf::from("qemu-system-x86_64");
        let decision = decide_accelerator(&qemu, AccelMode::Auto).await.unwrap();
        assert_eq!(
            decision.accelerator,
            Accelerator::Tcg,
            "{}",
            decision.reason
        );
        assert!(decision.reason.starts_with("auto:"));
    }
    let forced = decide_accelerator(Path::new("qemu-system-x86_64"), AccelMode::Tcg)
        .await
        .unwrap();
    assert_eq!(forced.accelerator, Accelerator::Tcg);
}

/// A run that failed leaves its id `terminated`; retrying that id (a caller
/// whose answer was lost) gets the failure again, not a dead instance as if
/// it had started.
#[tokio::test]
async fn a_retried_failed_run_fails_again() {
    let Some(_) = guest() else { return };
    let state = tempfile::tempdir().unwrap();
    let (host, _) = open_host(
        state.path(),
        HostCapacity {
            vcpus: 1,
            memory_mib: 512,
        },
    )
    .await;
    // A 2 GiB (virtual) disk does not fit n1.nano's 1 GiB root disk.
    let disk = state.path().join("big.qcow2");
    let created = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("2G")
        .status()
        .unwrap();
    assert!(created.success());
    let image = host
        .register_image(&ImageSource { disk, kernel: None })
        .await
        .unwrap();
    let id = nuage_compute::host::new_instance_id();
    let same_id = || RunRequest {
        instance_id: Some(id.clone()),
        ..request(&image.id)
    };
    let first = host.run(same_id()).await;
    assert!(
        matches!(&first, Err(ComputeError::InvalidParameter(m)) if m.contains("root disk")),
        "{first:?}"
    );
    let record = host.describe(&id).unwrap();
    assert_eq!(record.state, InstanceState::Terminated);
    let second = host.run(same_id()).await;
    assert!(
        matches!(&second, Err(ComputeError::Hypervisor(m)) if m.contains("root disk")),
        "{second:?}"
    );
    // Nothing held: the capacity is all free.
    assert_eq!(host.used().vcpus, 0);
}
