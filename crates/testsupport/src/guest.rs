//! The tiny guest the compute tests boot under QEMU/TCG (Debian's kernel and
//! a busybox initramfs, `scripts/compute/build-tiny-guest.sh`), the rule for
//! when they may skip, and the cleanup of the QEMU processes a failed test
//! would leave running.
//!
//! Under `CI=true` a missing tool or a guest that cannot be built fails the
//! test (a panic); elsewhere the test prints `SKIPPED: reason` and returns.
//!
//! It never starts a VM itself: the tests do, through the code under test.
//! Behind the `compute` feature: the other tests do not need QEMU.
#![allow(clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The built guest: its directory (`vmlinux` or `vmlinuz`, `initrd.gz`,
/// `guest.env`) and the kernel command line to boot it with.
pub struct TinyGuest {
    pub dir: PathBuf,
    pub cmdline: String,
}

impl TinyGuest {
    /// The kernel to boot (the uncompressed `vmlinux` when the build could
    /// extract it: PVH boots it faster under TCG).
    pub fn kernel(&self) -> PathBuf {
        self.dir.join(kernel_in(&self.dir))
    }

    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.gz")
    }
}

/// The kernel's file name in a guest directory: `vmlinux` when it is there,
/// else `vmlinuz`.
pub fn kernel_in(dir: &Path) -> &'static str {
    if dir.join("vmlinux").exists() {
        "vmlinux"
    } else {
        "vmlinuz"
    }
}

/// Under `CI=true`: fails the test with `reason`. Elsewhere: prints
/// `SKIPPED: reason` (the caller then returns).
pub fn skip_unless_ci(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the compute tests cannot run under CI: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// Whether `tool --version` (or `tool -V`, socat's spelling) succeeds.
fn tool_installed(tool: &str) -> bool {
    ["--version", "-V"].iter().any(|flag| {
        Command::new(tool)
            .arg(flag)
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// The tiny guest built into `dir`, or None where the test may skip (see
/// [`skip_unless_ci`]). Needs `qemu-system-x86_64`, `qemu-img` and the
/// caller's `extra_tools`.
///
/// Built once per test process: the tests of a binary run in parallel, and
/// two builds into one directory would read each other's half-written
/// files. The first caller's `dir` and tools are the ones that count, so
/// every test of a binary passes the same. Several test binaries, one after
/// another, may share a directory: the script caches and only copies files
/// on a second run.
pub fn tiny_guest(dir: &Path, extra_tools: &[&str]) -> Option<&'static TinyGuest> {
    static GUEST: OnceLock<Result<TinyGuest, String>> = OnceLock::new();
    match GUEST.get_or_init(|| build(dir, extra_tools)) {
        Ok(guest) => Some(guest),
        Err(reason) => {
            skip_unless_ci(reason);
            None
        }
    }
}

fn build(dir: &Path, extra_tools: &[&str]) -> Result<TinyGuest, String> {
    for tool in ["qemu-system-x86_64", "qemu-img"].iter().chain(extra_tools) {
        if !tool_installed(tool) {
            return Err(format!(
                "{tool} is not installed (scripts/install-test-deps.sh)"
            ));
        }
    }
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/compute/build-tiny-guest.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "build-tiny-guest.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let env = std::fs::read_to_string(dir.join("guest.env")).map_err(|e| e.to_string())?;
    let cmdline = env
        .lines()
        .find_map(|l| l.strip_prefix("CMDLINE="))
        .ok_or("guest.env has no CMDLINE")?
        .to_string();
    Ok(TinyGuest {
        dir: dir.to_path_buf(),
        cmdline,
    })
}

/// The QEMU processes whose command line names a path under `dir`.
pub fn qemu_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .expect("/proc is readable")
        .flatten()
    {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("qemu-system") && cmdline.contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Kills (SIGKILL), on drop, the VM processes a failed test would otherwise
/// leave running: the QEMU processes under its directories
/// ([`qemu_under`]) and the processes it was given by id that still run.
#[derive(Default)]
pub struct QemuReaper {
    dirs: Vec<PathBuf>,
    pids: Vec<u32>,
}

impl QemuReaper {
    /// Reaps the QEMU processes under each of `dirs`.
    pub fn under(dirs: &[&Path]) -> Self {
        Self {
            dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
            pids: Vec::new(),
        }
    }

    /// Reaps this process too.
    pub fn push(&mut self, pid: u32) {
        self.pids.push(pid);
    }
}

impl Drop for QemuReaper {
    fn drop(&mut self) {
        let alive = self
            .pids
            .iter()
            .copied()
            .filter(|pid| Path::new("/proc").join(pid.to_string()).exists());
        let under = self.dirs.iter().flat_map(|dir| qemu_under(dir));
        for pid in alive.chain(under).collect::<Vec<_>>() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}
