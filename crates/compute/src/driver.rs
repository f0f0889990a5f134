//! The hypervisor driver boundary and its QEMU implementation.
//!
//! A driver turns a `VmSpec` (vCPUs, memory, disks, optional direct kernel)
//! into a running VM and gives a `VmHandle` to control it: ACPI power-down,
//! hard reset, quit, kill, and a stream of `VmEvent`s ending with the exit.
//! Cloud Hypervisor or Firecracker drivers implement the same two traits.
//! Drivers know nothing about instance ids, states, capacity or images:
//! those belong to `host`. A driver never outlives its handle's owner's
//! intent: it kills only the process it started (or, at recovery, one whose
//! command line names the instance directory it is asked about).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::console::ConsoleLog;
use crate::error::{ComputeError, Result};
use crate::limits::{
    CONSOLE_READ_CHUNK_BYTES, CONSOLE_WRITE_BATCH_BYTES_MAX, KVM_PROBE_TIMEOUT_MS,
    METADATA_FORWARD_CONNECT_SECONDS, METADATA_FORWARD_IDLE_SECONDS, QEMU_OPEN_FILES_MAX,
    QEMU_SOCKET_WAIT_MS, QUIT_WAIT_MS,
};
use crate::qmp::QmpClient;

/// How guests are run: hardware virtualisation or QEMU's binary translator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    Kvm,
    Tcg,
}

impl fmt::Display for Accelerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        })
    }
}

/// The operator's choice (`compute.accel = auto|tcg|kvm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccelMode {
    #[default]
    Auto,
    Tcg,
    Kvm,
}

/// What was chosen at start, and why: reported by the host, logged once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccelDecision {
    pub accelerator: Accelerator,
    pub reason: String,
}

/// The guest's network (QEMU user networking): it must contain the metadata
/// address, since QEMU forwards only addresses inside it.
pub const GUEST_NETWORK: &str = "169.254.169.0/24";
/// The address QEMU's DHCP server gives the guest first (its `dhcpstart`
/// default, the network's `.15`): with one guest per network, always this.
pub const GUEST_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 15);
/// Where guests find the metadata service, as on EC2 and OpenStack.
pub const METADATA_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// How the VM's one NIC reaches anything. Without either, the guest is
/// alone on its user network (`restrict=on`: no way out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmNetwork {
    /// A unix socket directly inside the VM's `dir` that each guest TCP
    /// connection to `METADATA_IPV4:80` is forwarded to (one connection each).
    pub metadata_socket: Option<PathBuf>,
    /// A host address whose TCP connections are forwarded to the guest's port 22.
    pub ssh_forward: Option<SocketAddr>,
}

/// One VM to start. Paths are absolute; `dir` holds its sockets and pidfile.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub name: String,
    pub dir: PathBuf,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// qcow2 overlay, first virtio disk.
    pub root_disk: PathBuf,
    /// ISO 9660 config drive, second virtio disk, read-only.
    pub config_drive: Option<PathBuf>,
    pub kernel: Option<DirectKernel>,
    /// Guest NIC MAC address (`52:54:00:..`).
    pub mac: String,
    /// SMBIOS system serial: cloud-init reads the instance id from it.
    pub serial: String,
    pub network: VmNetwork,
}

/// Boot a kernel directly (PVH for an uncompressed vmlinux) instead of the disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DirectKernel {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
}

/// Something that happened to a running VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEvent {
    /// The guest (or the host) shut the machine down; the process exits next.
    Shutdown { guest: bool, reason: String },
    /// The machine was reset (a reboot).
    Reset { guest: bool },
    /// The process exited; no further events.
    Exited(VmExit),
}

/// How the VM process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    Code(i32),
    Signal(i32),
}

impl VmExit {
    fn from_status(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(signal)) => Self::Signal(signal),
            (None, None) => Self::Code(-1),
        }
    }
}

impl fmt::Display for VmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exited with status {code}"),
            Self::Signal(signal) => write!(f, "exited with signal {signal}"),
        }
    }
}

#[async_trait]
pub trait HypervisorDriver: Send + Sync {
    /// `qemu`, `cloud-hypervisor`, ...
    fn name(&self) -> &'static str;
    fn accelerator(&self) -> &AccelDecision;
    /// Starts the VM with its console captured into `console` from the first byte.
    async fn launch(&self, spec: &VmSpec, console: ConsoleLog) -> Result<Box<dyn VmHandle>>;
    /// Whether process `pid` is a VM this driver started in instance directory
    /// `dir` or any directory below it (recovery: guards against a reused pid).
    fn owns_process(&self, pid: u32, dir: &Path) -> bool;
    /// Where the driver writes the VM's pid for `dir`.
    fn pidfile(&self, dir: &Path) -> PathBuf;
    /// Files the driver leaves in `dir` while a VM runs (sockets), to remove afterwards.
    fn runtime_files(&self, dir: &Path) -> Vec<PathBuf>;
}

#[async_trait]
pub trait VmHandle: Send {
    fn pid(&self) -> Option<u32>;
    /// ACPI power button: the guest decides to shut down (or not).
    async fn power_down(&mut self) -> Result<()>;
    /// Hard reset, like the reset button.
    async fn reset(&mut self) -> Result<()>;
    /// Asks the guest to reboot (Ctrl-Alt-Del on its keyboard); it may not.
    /// A driver that cannot says so, and the host resets instead.
    async fn request_reboot(&mut self) -> Result<()> {
        Err(ComputeError::Hypervisor(
            "this hypervisor cannot ask a guest to reboot".into(),
        ))
    }
    /// Asks the hypervisor to exit now, without the guest's cooperation.
    async fn quit(&mut self) -> Result<()>;
    /// SIGKILL.
    async fn kill(&mut self) -> Result<()>;
    /// The hypervisor's own view (`running`, `paused`, ...).
    async fn status(&mut self) -> Result<String>;
    /// The next event. Cancel safe; after `Exited` it returns `Exited` again.
    async fn next_event(&mut self) -> VmEvent;
}

/// Programs the QEMU driver runs.
#[derive(Debug, Clone)]
pub struct QemuTools {
    pub qemu_system: PathBuf,
    pub qemu_img: PathBuf,
}

impl Default for QemuTools {
    fn default() -> Self {
        Self {
            qemu_system: "qemu-system-x86_64".into(),
            qemu_img: "qemu-img".into(),
        }
    }
}

pub struct QemuDriver {
    tools: QemuTools,
    accel: AccelDecision,
}

const QMP_SOCKET: &str = "qmp.sock";
const CONSOLE_SOCKET: &str = "console.sock";
const PIDFILE: &str = "qemu.pid";
const QEMU_LOG: &str = "qemu.log";
const KVM_PROBE_EXIT_CODE: i32 = (0x2a << 1) | 1;

impl QemuDriver {
    /// Decides the accelerator (see `decide_accelerator`) and checks QEMU runs.
    pub async fn new(tools: QemuTools, mode: AccelMode) -> Result<Self> {
        let version = Command::new(&tools.qemu_system)
            .arg("--version")
            .output()
            .await
            .map_err(|e| {
                ComputeError::Hypervisor(format!("{}: {e}", tools.qemu_system.display()))
            })?;
        if !version.status.success() {
            return Err(ComputeError::Hypervisor(format!(
                "{} --version failed",
                tools.qemu_system.display()
            )));
        }
        // QEMU starts a socat for each guest connection to the metadata
        // service: without one, guests find no metadata (but boot).
        let socat_found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("socat").is_file()));
        if !socat_found {
            tracing::warn!(
                "compute: socat is not on PATH: guests cannot reach the metadata service"
            );
        }
        let accel = decide_accelerator(&tools.qemu_system, mode).await?;
        tracing::info!(accelerator = %accel.accelerator, reason = %accel.reason, "compute: accelerator chosen");
        Ok(Self { tools, accel })
    }

    #[must_use]
    pub fn tools(&self) -> &QemuTools {
        &self.tools
    }

    fn command_line(&self, spec: &VmSpec) -> Vec<String> {
        let dir = &spec.dir;
        let path = |name: &str| dir.join(name).display().to_string();
        let (accel, cpu) = match self.accel.accelerator {
            Accelerator::Kvm => ("kvm", "host"),
            Accelerator::Tcg => ("tcg", "max"),
        };
        let mut args: Vec<String> = vec![
            "-name".into(),
            format!("guest={},debug-threads=on", spec.name),
            "-machine".into(),
            "q35".into(),
            "-accel".into(),
            accel.into(),
            "-cpu".into(),
            cpu.into(),
            "-smp".into(),
            spec.vcpus.to_string(),
            "-m".into(),
            format!("{}M", spec.memory_mib),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            // Start paused: the console and QMP are connected before the
            // first instruction runs, so no output is lost.
            "-S".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", path(QMP_SOCKET)),
            "-chardev".into(),
            format!(
                "socket,id=console,path={},server=on,wait=off",
                path(CONSOLE_SOCKET)
            ),
            "-serial".into(),
            "chardev:console".into(),
            "-pidfile".into(),
            path(PIDFILE),
            "-smbios".into(),
            format!(
                "type=1,manufacturer=OpenStack Foundation,product=OpenStack Nova,serial={}",
                spec.serial
            ),
            "-drive".into(),
            format!(
                "file={},if=virtio,format=qcow2,discard=unmap",
                spec.root_disk.display()
            ),
        ];
        if let Some(config_drive) = &spec.config_drive {
            args.push("-drive".into());
            args.push(format!(
                "file={},if=virtio,format=raw,readonly=on",
                config_drive.display()
            ));
        }
        args.push("-netdev".into());
        args.push(netdev(&spec.network));
        args.push("-device".into());
        args.push(format!("virtio-net-pci,netdev=net0,mac={}", spec.mac));
        if let Some(kernel) = &spec.kernel {
            args.push("-kernel".into());
            args.push(kernel.kernel.display().to_string());
            if let Some(initrd) = &kernel.initrd {
                args.push("-initrd".into());
                args.push(initrd.display().to_string());
            }
            args.push("-append".into());
            args.push(kernel.cmdline.clone());
        }
        args
    }
}

#[async_trait]
impl HypervisorDriver for QemuDriver {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn accelerator(&self) -> &AccelDecision {
        &self.accel
    }

    async fn launch(&self, spec: &VmSpec, console: ConsoleLog) -> Result<Box<dyn VmHandle>> {
        if let Some(socket) = &spec.network.metadata_socket {
            check_metadata_socket(&spec.dir, socket)?;
        }
        let mut sockets = vec![spec.dir.join(QMP_SOCKET), spec.dir.join(CONSOLE_SOCKET)];
        sockets.extend(spec.network.metadata_socket.clone());
        for socket in &sockets {
            // sun_path holds 108 bytes including the NUL.
            if socket.as_os_str().len() > 107 {
                return Err(ComputeError::InvalidParameter(format!(
                    "socket path {} is too long for a unix socket; use a shorter state directory",
                    socket.display()
                )));
            }
        }
        // Stale sockets of an earlier QEMU (the metadata one is the host's).
        for socket in &sockets[..2] {
            let _ = std::fs::remove_file(socket);
        }
        let log_path = spec.dir.join(QEMU_LOG);
        let log = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(ComputeError::io(&log_path))?;
        let mut child = Command::new(&self.tools.qemu_system)
            .args(self.command_line(spec))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // The metadata forward names its socket relative to the instance
            // directory (see `netdev`); every other path is absolute.
            .current_dir(&spec.dir)
            // A crashed host must not take its VMs down with it; the next
            // host process finds them through their pidfiles.
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                ComputeError::Hypervisor(format!("{}: {e}", self.tools.qemu_system.display()))
            })?;
        // QEMU starts paused (`-S`): the guest opens no connection before
        // `cont`, so the limit holds from its first metadata forward.
        if let Err(e) = limit_open_files(child.id()) {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(e);
        }
        match connect(&mut child, &spec.dir, console).await {
            Ok((qmp, console_task)) => {
                let mut vm = QemuVm {
                    child,
                    qmp: Some(qmp),
                    console_task,
                    exit: None,
                };
                if let Err(e) = vm.qmp()?.execute("cont", None).await {
                    let _ = vm.kill().await;
                    return Err(e);
                }
                Ok(Box::new(vm))
            }
            Err(e) => {
                let _ = child.start_kill();
                let status = child.wait().await.ok();
                let stderr = tail_of_file(&log_path);
                Err(ComputeError::Hypervisor(format!(
                    "{e}{}{}",
                    status
                        .map(|s| format!("; qemu {}", VmExit::from_status(s)))
                        .unwrap_or_default(),
                    if stderr.is_empty() {
                        String::new()
                    } else {
                        format!(": {stderr}")
                    }
                )))
            }
        }
    }

    fn owns_process(&self, pid: u32, dir: &Path) -> bool {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        // `-qmp unix:<dir>/.../qmp.sock,...`: matches one instance's directory,
        // or every instance under a parent directory.
        let needle = format!("unix:{}/", dir.display());
        process_alive(pid)
            && String::from_utf8_lossy(&cmdline)
                .split('\0')
                .any(|arg| arg.starts_with(&needle) && arg.contains(QMP_SOCKET))
    }

    fn pidfile(&self, dir: &Path) -> PathBuf {
        dir.join(PIDFILE)
    }

    fn runtime_files(&self, dir: &Path) -> Vec<PathBuf> {
        vec![
            dir.join(QMP_SOCKET),
            dir.join(CONSOLE_SOCKET),
            dir.join(PIDFILE),
        ]
    }
}

/// Connects QMP and the console, waiting (bounded) for QEMU to listen on them.
async fn connect(
    child: &mut Child,
    dir: &Path,
    mut console: ConsoleLog,
) -> Result<(QmpClient, JoinHandle<()>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(QEMU_SOCKET_WAIT_MS);
    let mut stream = connect_unix(child, &dir.join(CONSOLE_SOCKET), deadline).await?;
    let qmp_stream = connect_unix(child, &dir.join(QMP_SOCKET), deadline).await?;
    let console_task = tokio::spawn(async move {
        let mut buf = vec![0u8; CONSOLE_READ_CHUNK_BYTES];
        loop {
            let mut batch = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf[..n].to_vec(),
            };
            // Whatever else is already there goes in the same write.
            let mut closed = false;
            while batch.len() < CONSOLE_WRITE_BATCH_BYTES_MAX {
                match stream.try_read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => batch.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
            // File writes block: off the runtime's workers, one batch at a time.
            console = match console.append_off_runtime(batch).await {
                Ok(console) => console,
                Err(e) => {
                    tracing::warn!("console log: {e}");
                    return;
                }
            };
            if closed {
                return;
            }
        }
    });
    match QmpClient::from_stream(qmp_stream).await {
        Ok(qmp) => Ok((qmp, console_task)),
        Err(e) => {
            console_task.abort();
            Err(e)
        }
    }
}

/// QEMU creates a socket file before it listens on it: retry (bounded by
/// `deadline`) while the file is missing or the connection is refused.
async fn connect_unix(
    child: &mut Child,
    path: &Path,
    deadline: tokio::time::Instant,
) -> Result<UnixStream> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ComputeError::Hypervisor(format!(
                "qemu {} before {} was ready",
                VmExit::from_status(status),
                path.display()
            )));
        }
        let error = match UnixStream::connect(path).await {
            Ok(stream) => return Ok(stream),
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(ComputeError::Hypervisor(format!(
                "{} not ready within {QEMU_SOCKET_WAIT_MS} ms: {error}",
                path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct QemuVm {
    child: Child,
    qmp: Option<QmpClient>,
    console_task: JoinHandle<()>,
    exit: Option<VmExit>,
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        self.console_task.abort();
    }
}

impl QemuVm {
    fn qmp(&mut self) -> Result<&mut QmpClient> {
        self.qmp
            .as_mut()
            .ok_or_else(|| ComputeError::Qmp("connection closed".into()))
    }
}

#[async_trait]
impl VmHandle for QemuVm {
    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn power_down(&mut self) -> Result<()> {
        self.qmp()?
            .execute("system_powerdown", None)
            .await
            .map(drop)
    }

    async fn reset(&mut self) -> Result<()> {
        self.qmp()?.execute("system_reset", None).await.map(drop)
    }

    /// Ctrl-Alt-Del on the machine's PS/2 keyboard (q35's i8042): Linux
    /// signals its init, which reboots (systemd: `ctrl-alt-del.target`).
    /// QMP has no ACPI reboot request.
    async fn request_reboot(&mut self) -> Result<()> {
        let keys: Vec<serde_json::Value> = ["ctrl", "alt", "delete"]
            .into_iter()
            .map(|key| serde_json::json!({ "type": "qcode", "data": key }))
            .collect();
        self.qmp()?
            .execute("send-key", Some(serde_json::json!({ "keys": keys })))
            .await
            .map(drop)
    }

    async fn quit(&mut self) -> Result<()> {
        match self.qmp()?.execute("quit", None).await {
            // QEMU may close the socket before its answer arrives.
            Ok(_) => Ok(()),
            Err(ComputeError::Qmp(m)) if m.contains("closed") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn kill(&mut self) -> Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        let _ = self.child.start_kill();
        let wait = Duration::from_millis(QUIT_WAIT_MS);
        match tokio::time::timeout(wait, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.exit = Some(VmExit::from_status(status));
                Ok(())
            }
            Ok(Err(e)) => Err(ComputeError::Hypervisor(format!("wait for qemu: {e}"))),
            Err(_) => Err(ComputeError::Hypervisor("qemu survived SIGKILL".into())),
        }
    }

    async fn status(&mut self) -> Result<String> {
        self.qmp()?.query_status().await
    }

    async fn next_event(&mut self) -> VmEvent {
        // Bounded: every turn either returns or closes the QMP connection,
        // which happens once.
        loop {
            if let Some(exit) = &self.exit {
                return VmEvent::Exited(exit.clone());
            }
            let qmp_event = async {
                match self.qmp.as_mut() {
                    Some(qmp) => qmp.next_event().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = self.child.wait() => {
                    let exit = match status {
                        Ok(status) => VmExit::from_status(status),
                        Err(_) => VmExit::Code(-1),
                    };
                    self.exit = Some(exit.clone());
                    return VmEvent::Exited(exit);
                }
                event = qmp_event => match event {
                    None => self.qmp = None,
                    Some(event) => {
                        let guest = event.data.get("guest").and_then(serde_json::Value::as_bool).unwrap_or(false);
                        let reason = event.data.get("reason").and_then(serde_json::Value::as_str).unwrap_or("").to_string();
                        match event.name.as_str() {
                            "SHUTDOWN" => return VmEvent::Shutdown { guest, reason },
                            "RESET" => return VmEvent::Reset { guest },
                            _ => {}
                        }
                    }
                },
            }
        }
    }
}

/// Sets QEMU's `RLIMIT_NOFILE` (soft and hard) to `QEMU_OPEN_FILES_MAX`, or
/// to the host process's own hard limit if that is lower. Each metadata
/// forward's `socat` costs QEMU one descriptor (its end of the socket pair)
/// for as long as it runs, so this bounds how many a guest can make QEMU
/// fork; QEMU cannot raise a hard limit (without `CAP_SYS_RESOURCE`), and
/// once at it, a new guest connection to the service is refused.
fn limit_open_files(pid: Option<u32>) -> Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, prlimit};
    let pid = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| ComputeError::Hypervisor("qemu exited at once".into()))?;
    let own = getrlimit(Resource::Nofile).maximum;
    let max = own.map_or(QEMU_OPEN_FILES_MAX, |own| own.min(QEMU_OPEN_FILES_MAX));
    let limit = Rlimit {
        current: Some(max),
        maximum: Some(max),
    };
    prlimit(Some(pid), Resource::Nofile, limit)
        .map(drop)
        .map_err(|e| ComputeError::Hypervisor(format!("limiting qemu's open files: {e}")))
}

/// The `cmd:` of the metadata forward: `-T`, socat exits after that many
/// idle seconds (a guest cannot keep one open for ever); `-t 10`, after the
/// guest half-closes, socat waits that long for the answer.
fn metadata_forward_command(socket: &str) -> String {
    format!(
        "socat -T {METADATA_FORWARD_IDLE_SECONDS} -t 10 - \
         UNIX-CONNECT:{socket},connect-timeout={METADATA_FORWARD_CONNECT_SECONDS}"
    )
}

/// `-netdev user,...`: the guest alone on `GUEST_NETWORK` (`restrict=on`: no
/// way out), plus the metadata and SSH forwards. A `cmd:` guest forward
/// starts `socat` for each connection the guest opens (a plain `tcp:` one
/// shares a single stream between connections, which hangs HTTP clients);
/// how many run at once is bounded by QEMU's open files (`limit_open_files`).
fn netdev(network: &VmNetwork) -> String {
    let mut netdev = format!("user,id=net0,restrict=on,net={GUEST_NETWORK}");
    if let Some(socket) = network.metadata_socket.as_ref().and_then(|s| s.file_name()) {
        netdev.push_str(&format!(
            ",guestfwd=tcp:{METADATA_IPV4}:80-cmd:{}",
            // `,,`: a comma inside an option value (QEMU's escape).
            metadata_forward_command(&socket.to_string_lossy()).replace(',', ",,")
        ));
    }
    if let Some(forward) = network.ssh_forward {
        // IPv4 (the host refuses IPv6: QEMU's option takes none).
        netdev.push_str(&format!(",hostfwd=tcp:{forward}-:22"));
    }
    netdev
}

/// The metadata socket must sit directly in `dir` under a plain name: socat
/// and QEMU's option parser would read anything else (`,` `:` spaces) as syntax.
fn check_metadata_socket(dir: &Path, socket: &Path) -> Result<()> {
    let name = socket.file_name().map(|n| n.to_string_lossy().into_owned());
    let plain = name.as_deref().is_some_and(|n| {
        !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    });
    if socket.parent() != Some(dir) || !plain {
        return Err(ComputeError::InvalidParameter(format!(
            "metadata socket {} must be a plain name directly in {}",
            socket.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// Whether `pid` exists and is not a zombie.
#[must_use]
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the last ')' (the command name may contain one).
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|state| state != 'Z' && state != 'X')
}

fn tail_of_file(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text
        .len()
        .saturating_sub(crate::limits::TOOL_OUTPUT_BYTES_MAX);
    String::from_utf8_lossy(&text[start..]).trim().to_string()
}

/// Chooses the accelerator.
///
/// `tcg` and `kvm` are taken as asked (`kvm` fails if `/dev/kvm` cannot be
/// opened). `auto` picks KVM only when all of these hold: `/dev/kvm` opens
/// read-write; the loaded KVM module is a hardware one (`kvm_intel` or
/// `kvm_amd`: nested or paravirtual ones such as `kvm_pvm` run a 16-byte
/// probe but not ordinary kernels); and a probe VM under KVM runs a real-mode
/// program that writes to QEMU's debug-exit port. Otherwise TCG, with the
/// reason. The probe costs well under a second.
pub async fn decide_accelerator(qemu_system: &Path, mode: AccelMode) -> Result<AccelDecision> {
    let kvm_openable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    match mode {
        AccelMode::Tcg => Ok(AccelDecision {
            accelerator: Accelerator::Tcg,
            reason: "configured: tcg".into(),
        }),
        AccelMode::Kvm if kvm_openable => Ok(AccelDecision {
            accelerator: Accelerator::Kvm,
            reason: "configured: kvm".into(),
        }),
        AccelMode::Kvm => Err(ComputeError::Hypervisor(
            "accel = kvm but /dev/kvm cannot be opened read-write".into(),
        )),
        AccelMode::Auto => {
            let tcg = |reason: String| AccelDecision {
                accelerator: Accelerator::Tcg,
                reason,
            };
            if !kvm_openable {
                return Ok(tcg("auto: /dev/kvm cannot be opened read-write".into()));
            }
            let hardware = ["kvm_intel", "kvm_amd"]
                .into_iter()
                .find(|m| Path::new("/sys/module").join(m).exists());
            let Some(module) = hardware else {
                return Ok(tcg(
                    "auto: /dev/kvm exists but neither kvm_intel nor kvm_amd is loaded (a nested or paravirtual KVM is not trusted to boot ordinary guests)".into(),
                ));
            };
            match kvm_probe(qemu_system).await {
                Ok(()) => Ok(AccelDecision {
                    accelerator: Accelerator::Kvm,
                    reason: format!("auto: {module} loaded and the KVM probe VM ran"),
                }),
                Err(e) => Ok(tcg(format!("auto: KVM probe failed: {e}"))),
            }
        }
    }
}

/// Runs a 64 KiB firmware image whose reset vector writes 0x2a to the
/// isa-debug-exit port; QEMU then exits with status (0x2a << 1) | 1.
async fn kvm_probe(qemu_system: &Path) -> Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "nuage-kvm-probe-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).map_err(ComputeError::io(&dir))?;
    let bios = dir.join("probe.bin");
    let mut image = vec![0u8; 64 * 1024];
    // mov al, 0x2a; out 0xf4, al; hlt; jmp $-3
    let code = [0xB0, 0x2A, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD];
    let at = image.len() - 16;
    image[at..at + code.len()].copy_from_slice(&code);
    std::fs::write(&bios, &image).map_err(ComputeError::io(&bios))?;
    let run = Command::new(qemu_system)
        .args([
            "-accel",
            "kvm",
            "-machine",
            "pc",
            "-m",
            "16",
            "-nodefaults",
            "-no-user-config",
        ])
        .args([
            "-display",
            "none",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-bios",
        ])
        .arg(&bios)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    let result = tokio::time::timeout(Duration::from_millis(KVM_PROBE_TIMEOUT_MS), run).await;
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(Ok(status)) if status.code() == Some(KVM_PROBE_EXIT_CODE) => Ok(()),
        Ok(Ok(status)) => Err(ComputeError::Hypervisor(format!(
            "probe qemu {}",
            VmExit::from_status(status)
        ))),
        Ok(Err(e)) => Err(ComputeError::Hypervisor(format!("probe: {e}"))),
        Err(_) => Err(ComputeError::Hypervisor(format!(
            "probe did not finish within {KVM_PROBE_TIMEOUT_MS} ms"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_netdev_line_carries_both_forwards() {
        let dir = Path::new("/state/instances/i-0");
        let network = VmNetwork {
            metadata_socket: Some(dir.join("metadata.sock")),
            ssh_forward: Some("127.0.0.1:22001".parse().unwrap()),
        };
        assert_eq!(
            netdev(&network),
            "user,id=net0,restrict=on,net=169.254.169.0/24,\
             guestfwd=tcp:169.254.169.254:80-cmd:socat -T 60 -t 10 - \
             UNIX-CONNECT:metadata.sock,,connect-timeout=5,\
             hostfwd=tcp:127.0.0.1:22001-:22"
        );
        assert_eq!(
            netdev(&VmNetwork::default()),
            "user,id=net0,restrict=on,net=169.254.169.0/24"
        );
        assert!(check_metadata_socket(dir, &dir.join("metadata.sock")).is_ok());
        for bad in ["/elsewhere/metadata.sock", "/state/instances/i-0/a,b.sock"] {
            assert!(check_metadata_socket(dir, Path::new(bad)).is_err(), "{bad}");
        }
    }
}
