//! The host's lifecycle rules where the timing matters, with a driver whose
//! launch the test holds: a terminate while a start is pending stays a
//! terminate. Also the modes of what the host writes. Needs qemu-img and
//! xorriso (the overlay and config drive are real); without them the tests
//! print why and skip (under `CI=true` they fail).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use nuage_compute::console::ConsoleLog;
use nuage_compute::driver::{
    AccelDecision, Accelerator, HypervisorDriver, VmEvent, VmExit, VmHandle, VmSpec,
};
use nuage_compute::{
    ComputeError, ComputeHost, HostCapacity, HostConfig, ImageSource, InstanceState, RunRequest,
};
use tokio::sync::{Notify, watch};

fn tools_present() -> bool {
    let ok = ["qemu-img", "xorriso"].iter().all(|tool| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("qemu-img and xorriso are needed (scripts/install-test-deps.sh)");
        }
        eprintln!("SKIPPED: qemu-img or xorriso is not installed");
    }
    ok
}

/// A VM that runs until it is powered down or killed.
struct FakeVm {
    exited: watch::Receiver<bool>,
    exit: watch::Sender<bool>,
}

#[async_trait]
impl VmHandle for FakeVm {
    fn pid(&self) -> Option<u32> {
        None
    }
    async fn power_down(&mut self) -> nuage_compute::Result<()> {
        let _ = self.exit.send(true);
        Ok(())
    }
    async fn reset(&mut self) -> nuage_compute::Result<()> {
        Ok(())
    }
    async fn quit(&mut self) -> nuage_compute::Result<()> {
        let _ = self.exit.send(true);
        Ok(())
    }
    async fn kill(&mut self) -> nuage_compute::Result<()> {
        let _ = self.exit.send(true);
        Ok(())
    }
    async fn status(&mut self) -> nuage_compute::Result<String> {
        Ok("running".into())
    }
    async fn next_event(&mut self) -> VmEvent {
        let _ = self.exited.wait_for(|exited| *exited).await;
        VmEvent::Exited(VmExit::Code(0))
    }
}

/// Launch number `hold_launch` (counting from 1) waits for `release`, then
/// fails as QEMU does when its SSH port was taken meanwhile (so the host
/// tries again with another port); every other launch succeeds at once.
struct HeldDriver {
    accel: AccelDecision,
    launches: AtomicUsize,
    hold_launch: usize,
    entered: Notify,
    release: Notify,
    dir: Mutex<Option<PathBuf>>,
}

#[async_trait]
impl HypervisorDriver for HeldDriver {
    fn name(&self) -> &'static str {
        "held"
    }
    fn accelerator(&self) -> &AccelDecision {
        &self.accel
    }
    async fn launch(
        &self,
        spec: &VmSpec,
        _console: ConsoleLog,
    ) -> nuage_compute::Result<Box<dyn VmHandle>> {
        *self.dir.lock().unwrap() = Some(spec.dir.clone());
        let n = self.launches.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.hold_launch {
            self.entered.notify_one();
            self.release.notified().await;
            return Err(ComputeError::Hypervisor(
                "qemu exited: Could not set up host forwarding rule 'tcp:127.0.0.1:1-:22'".into(),
            ));
        }
        let (exit, exited) = watch::channel(false);
        Ok(Box::new(FakeVm { exited, exit }))
    }
    fn owns_process(&self, _pid: u32, _dir: &Path) -> bool {
        false
    }
    fn pidfile(&self, dir: &Path) -> PathBuf {
        dir.join("fake.pid")
    }
    fn runtime_files(&self, dir: &Path) -> Vec<PathBuf> {
        vec![self.pidfile(dir)]
    }
}

async fn open(state: &Path, driver: Arc<HeldDriver>) -> (Arc<ComputeHost>, String) {
    let config = HostConfig::new(
        state.join("host"),
        HostCapacity {
            vcpus: 4,
            memory_mib: 2048,
        },
    );
    let (host, _) = ComputeHost::open_with_driver(config, driver).await.unwrap();
    let disk = state.join("disk.raw");
    std::fs::write(&disk, vec![7u8; 1024 * 1024]).unwrap();
    let image = host
        .register_image(&ImageSource { disk, kernel: None })
        .await
        .unwrap();
    (Arc::new(host), image.id)
}

fn held_driver(hold_launch: usize) -> Arc<HeldDriver> {
    Arc::new(HeldDriver {
        accel: AccelDecision {
            accelerator: Accelerator::Tcg,
            reason: "fake".into(),
        },
        launches: AtomicUsize::new(0),
        hold_launch,
        entered: Notify::new(),
        release: Notify::new(),
        dir: Mutex::new(None),
    })
}

fn request(image: &str) -> RunRequest {
    RunRequest {
        instance_type: "n1.nano".into(),
        image_id: image.into(),
        user_data: Some(b"#!/bin/sh\necho secret\n".to_vec()),
        ..RunRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminate_during_a_pending_start_stays_terminated() {
    if !tools_present() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    // Launch 1 is the run; launch 2, the start, is held.
    let driver = held_driver(2);
    let (host, image) = open(state.path(), Arc::clone(&driver)).await;
    let record = host.run(request(&image)).await.unwrap();
    let id = record.id.clone();
    assert_eq!(record.state, InstanceState::Running);
    let stopped = host.stop(&id).await.unwrap();
    assert_eq!(stopped.state, InstanceState::Stopped);
    assert!(stopped.ssh_forward.is_some());

    let start = tokio::spawn({
        let id = id.clone();
        let host = Arc::clone(&host);
        async move { host.start(&id).await }
    });
    driver.entered.notified().await;
    assert_eq!(host.describe(&id).unwrap().state, InstanceState::Pending);
    let terminated = host.terminate(&id).await.unwrap();
    assert_eq!(terminated.state, InstanceState::Terminated);
    // The held launch now fails with a port conflict: the host must not
    // take a port again nor launch again for an instance no longer pending.
    driver.release.notify_one();
    let started = start.await.unwrap();
    assert!(started.is_err(), "{started:?}");
    let after = host.describe(&id).unwrap();
    assert_eq!(after.state, InstanceState::Terminated, "{after:?}");
    assert_eq!((after.ssh_forward, after.private_ip), (None, None));
    assert_eq!(driver.launches.load(Ordering::SeqCst), 2, "launched again");
    // As on disk.
    let on_disk: serde_json::Value = serde_json::from_slice(
        &std::fs::read(host.instance_dir(&id).join("instance.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk["state"], "terminated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminate_during_a_pending_run_stays_terminated() {
    if !tools_present() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let driver = held_driver(1);
    let (host, image) = open(state.path(), Arc::clone(&driver)).await;
    let id = nuage_compute::host::new_instance_id();
    let run = tokio::spawn({
        let host = Arc::clone(&host);
        let request = RunRequest {
            instance_id: Some(id.clone()),
            ..request(&image)
        };
        async move { host.run(request).await }
    });
    driver.entered.notified().await;
    host.terminate(&id).await.unwrap();
    driver.release.notify_one();
    assert!(run.await.unwrap().is_err());
    let after = host.describe(&id).unwrap();
    assert_eq!(after.state, InstanceState::Terminated);
    assert_eq!(
        after.state_reason.as_deref(),
        Some(nuage_compute::host::REASON_USER_SHUTDOWN)
    );
    assert_eq!((after.ssh_forward, after.private_ip), (None, None));
}

/// Nothing the host writes (state directory, image cache, instance files)
/// is open to group or others, even under a umask that would allow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_the_host_writes_is_readable_by_other_users() {
    if !tools_present() {
        return;
    }
    // Under umask 022 (the usual one), directories would be 0755 and files 0644.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let state = tempfile::tempdir().unwrap();
    let driver = held_driver(0);
    let (host, image) = open(state.path(), driver).await;
    let record = host.run(request(&image)).await.unwrap();
    let root = state.path().join("host");
    let mut seen = 0;
    let mut stack = vec![root.clone()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode();
        // (The console log is the console's, in the 0700 instance directory.)
        if path.file_name().is_none_or(|n| n != "console.log") {
            assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", path.display());
        }
        seen += 1;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    // The state directory, images/, the image's directory and files,
    // instances/, the instance's directory, record, overlay, config drive, metadata.
    assert!(seen >= 10, "only {seen} paths");
    let instance_dir = host.instance_dir(&record.id);
    let mode = std::fs::metadata(&instance_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(instance_dir.join("config.iso").exists());
    host.terminate(&record.id).await.unwrap();
}
