//! The instance manager of one compute host: `ComputeHost`.
//!
//! Owns the state directory (`images/`, `instances/<id>/instance.json` plus
//! the instance's overlay, config drive, console log and the driver's
//! sockets and pidfile), the capacity accounting, and one supervisor task per
//! running VM. Lifecycle methods set the transitional state (pending,
//! stopping, shutting-down) and hand the VM work to the supervisor, which
//! alone records how a VM ended. Invariants: an instance in pending, running,
//! stopping or shutting-down holds its vCPUs and memory, and the sum never
//! exceeds the host's capacity; at `open`, every VM process started under
//! this state directory is killed and its instance says what happened, so
//! nothing runs that the host does not track. This module knows nothing of
//! EC2 wire formats, tenants, IAM or residency: the API layer maps them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{mpsc, oneshot};

use crate::console::{self, ConsoleLog};
use crate::driver::{
    AccelDecision, AccelMode, HypervisorDriver, QemuDriver, QemuTools, VmEvent, VmExit, VmHandle,
    VmSpec, process_alive,
};
use crate::error::{ComputeError, Result};
use crate::image::{self, ConfigDrive, Image, ImageCache, ImageSource};
use crate::instance_type::InstanceType;
use crate::limits::{
    HOSTNAME_BYTES_MAX, INSTANCE_COMMANDS_QUEUED_MAX, INSTANCE_RECORD_BYTES_MAX,
    INSTANCES_PER_HOST_MAX, QUIT_WAIT_MS, RECOVERY_KILL_WAIT_MS, SSH_KEY_BYTES_MAX,
    SSH_KEYS_PER_INSTANCE_MAX, STOP_POWERDOWN_WAIT_MS, TERMINATED_RECORDS_MAX, USER_DATA_BYTES_MAX,
};

/// What a host may hand out. An accounting figure, not a count of cores:
/// the operator decides how much to overcommit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCapacity {
    pub vcpus: u32,
    pub memory_mib: u64,
}

#[derive(Debug, Clone)]
pub struct HostConfig {
    pub state_dir: PathBuf,
    pub capacity: HostCapacity,
    pub accel: AccelMode,
    pub tools: QemuTools,
    /// xorriso or genisoimage; `None` finds one on `PATH`.
    pub iso_builder: Option<PathBuf>,
    pub availability_zone: String,
    /// How long a stop waits for the guest to honour the ACPI power button.
    pub stop_wait: Duration,
}

impl HostConfig {
    #[must_use]
    pub fn new(state_dir: PathBuf, capacity: HostCapacity) -> Self {
        Self {
            state_dir,
            capacity,
            accel: AccelMode::Auto,
            tools: QemuTools::default(),
            iso_builder: None,
            availability_zone: "local-1a".into(),
            stop_wait: Duration::from_millis(STOP_POWERDOWN_WAIT_MS),
        }
    }
}

/// EC2's instance states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
}

impl InstanceState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::ShuttingDown => "shutting-down",
            Self::Terminated => "terminated",
        }
    }

    /// Whether the instance holds its vCPUs and memory.
    #[must_use]
    pub fn holds_capacity(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Running | Self::Stopping | Self::ShuttingDown
        )
    }
}

/// EC2's state-reason texts.
pub const REASON_USER_SHUTDOWN: &str = "Client.UserInitiatedShutdown: User initiated shutdown";
pub const REASON_INSTANCE_SHUTDOWN: &str =
    "Client.InstanceInitiatedShutdown: Instance initiated shutdown";

/// One instance, as persisted in `instances/<id>/instance.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceRecord {
    pub id: String,
    pub instance_type: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub image_id: String,
    pub hostname: String,
    pub availability_zone: String,
    pub mac: String,
    pub state: InstanceState,
    /// Why the instance is in its state, when it did not get there on its own
    /// (EC2's `StateReason`, e.g. `Server.InternalError: qemu exited with signal 9`).
    pub state_reason: Option<String>,
    pub launch_time: String,
    pub state_changed_at: String,
    /// The VM process while one runs.
    pub pid: Option<u32>,
    /// How many times the VM process has been started.
    pub launches: u32,
    /// Guest resets (reboots) seen since the last launch.
    pub resets: u32,
}

impl InstanceRecord {
    /// `running`, or `stopped (Server.InternalError: qemu exited with signal 9)`.
    #[must_use]
    pub fn state_description(&self) -> String {
        match &self.state_reason {
            Some(reason) => format!("{} ({reason})", self.state.as_str()),
            None => self.state.as_str().to_string(),
        }
    }
}

/// A request to run one instance.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub instance_type: String,
    pub image_id: String,
    /// Defaults to the instance id.
    pub hostname: Option<String>,
    /// (key name, OpenSSH public key line)
    pub ssh_keys: Vec<(String, String)>,
    pub user_data: Option<Vec<u8>>,
}

/// What `open` found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// VM processes started under this state directory that were still running, killed.
    pub killed_pids: Vec<u32>,
    /// Instances whose state changed, with their new description.
    pub changed: Vec<(String, String)>,
}

enum VmCommand {
    Stop(oneshot::Sender<()>),
    Reset(oneshot::Sender<Result<()>>),
    Kill(oneshot::Sender<()>),
    Status(oneshot::Sender<Result<String>>),
}

struct Slot {
    record: InstanceRecord,
    commands: Option<mpsc::Sender<VmCommand>>,
}

struct Inner {
    config: HostConfig,
    driver: Arc<dyn HypervisorDriver>,
    images: ImageCache,
    iso_builder: PathBuf,
    instances: Mutex<BTreeMap<String, Slot>>,
    /// `STATE/instances`, canonical: the path QEMU's command line names, so
    /// that `owns_process` recognises this host's processes by it.
    instances_dir: PathBuf,
}

/// The instance manager of one host. Dropping it detaches from running VMs
/// without stopping them, as a crash would; the next `open` kills them.
pub struct ComputeHost {
    inner: Arc<Inner>,
}

const RECORD_FILE: &str = "instance.json";
const OVERLAY_FILE: &str = "root.qcow2";
const CONFIG_DRIVE_FILE: &str = "config.iso";
const CONSOLE_FILE: &str = "console.log";
const QEMU_LOG_FILE: &str = "qemu.log";

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl ComputeHost {
    /// Opens the state directory with the QEMU driver, recovering what a
    /// previous host process left (see the module doc).
    pub async fn open(config: HostConfig) -> Result<(Self, RecoveryReport)> {
        let driver = QemuDriver::new(config.tools.clone(), config.accel).await?;
        Self::open_with_driver(config, Arc::new(driver)).await
    }

    pub async fn open_with_driver(
        config: HostConfig,
        driver: Arc<dyn HypervisorDriver>,
    ) -> Result<(Self, RecoveryReport)> {
        let iso_builder = match &config.iso_builder {
            Some(path) => path.clone(),
            None => image::find_iso_builder().ok_or_else(|| ComputeError::Tool {
                tool: "xorriso".into(),
                message: "neither xorriso nor genisoimage is on PATH".into(),
            })?,
        };
        let instances_dir = config.state_dir.join("instances");
        let images_dir = config.state_dir.join("images");
        for dir in [&instances_dir, &images_dir] {
            std::fs::create_dir_all(dir).map_err(ComputeError::io(dir))?;
        }
        let instances_dir = instances_dir
            .canonicalize()
            .map_err(ComputeError::io(&instances_dir))?;
        let images = ImageCache::new(images_dir, config.tools.qemu_img.clone());
        let inner = Inner {
            config,
            driver,
            images,
            iso_builder,
            instances: Mutex::new(BTreeMap::new()),
            instances_dir: instances_dir.clone(),
        };
        let report = inner.recover(&instances_dir).await?;
        Ok((
            Self {
                inner: Arc::new(inner),
            },
            report,
        ))
    }

    #[must_use]
    pub fn accelerator(&self) -> &AccelDecision {
        self.inner.driver.accelerator()
    }

    #[must_use]
    pub fn capacity(&self) -> HostCapacity {
        self.inner.config.capacity
    }

    /// vCPUs and memory held by instances now.
    #[must_use]
    pub fn used(&self) -> HostCapacity {
        used(&self.inner.lock())
    }

    pub async fn register_image(&self, source: &ImageSource) -> Result<Image> {
        self.inner.images.register(source).await
    }

    /// Runs an instance: returns once its VM runs (state `running`), or with
    /// the error that kept it from running (the instance is then terminated).
    pub async fn run(&self, request: RunRequest) -> Result<InstanceRecord> {
        let inner = &self.inner;
        let instance_type = InstanceType::find(&request.instance_type)
            .ok_or_else(|| ComputeError::InvalidInstanceType(request.instance_type.clone()))?;
        validate_request(&request)?;
        let image = inner.images.get(&request.image_id)?;
        let id = new_instance_id();
        let hostname = request.hostname.clone().unwrap_or_else(|| id.clone());
        let mac = mac_for(&id);
        let record = InstanceRecord {
            id: id.clone(),
            instance_type: instance_type.name.to_string(),
            vcpus: instance_type.vcpus,
            memory_mib: instance_type.memory_mib,
            image_id: image.id.clone(),
            hostname: hostname.clone(),
            availability_zone: inner.config.availability_zone.clone(),
            mac: mac.clone(),
            state: InstanceState::Pending,
            state_reason: None,
            launch_time: now(),
            state_changed_at: now(),
            pid: None,
            launches: 0,
            resets: 0,
        };
        let dir = inner.instance_dir(&id);
        {
            let mut instances = inner.lock();
            let live = instances
                .values()
                .filter(|s| s.record.state != InstanceState::Terminated)
                .count();
            if live >= INSTANCES_PER_HOST_MAX {
                return Err(ComputeError::InstanceLimitExceeded {
                    max: INSTANCES_PER_HOST_MAX,
                });
            }
            check_capacity(
                &instances,
                inner.config.capacity,
                instance_type.vcpus,
                instance_type.memory_mib,
            )?;
            std::fs::create_dir_all(&dir).map_err(ComputeError::io(&dir))?;
            write_record(&dir, &record)?;
            instances.insert(
                id.clone(),
                Slot {
                    record,
                    commands: None,
                },
            );
        }
        let prepared = async {
            image::create_overlay(
                &inner.config.tools.qemu_img,
                &image,
                &dir.join(OVERLAY_FILE),
                instance_type.root_disk_bytes(),
            )
            .await?;
            let drive = ConfigDrive {
                instance_id: &id,
                hostname: &hostname,
                availability_zone: &inner.config.availability_zone,
                ssh_keys: &request.ssh_keys,
                user_data: request.user_data.as_deref(),
                mac: &mac,
            };
            image::build_config_drive(&inner.iso_builder, &drive, &dir.join(CONFIG_DRIVE_FILE))
                .await?;
            Inner::launch(inner, &id).await
        }
        .await;
        if let Err(e) = prepared {
            inner.remove_instance_files(&dir);
            inner.set_state(
                &id,
                InstanceState::Terminated,
                Some(format!("Server.InternalError: {e}")),
            );
            return Err(e);
        }
        self.describe(&id)
    }

    /// Starts a stopped instance (its overlay and config drive are kept while stopped).
    pub async fn start(&self, id: &str) -> Result<InstanceRecord> {
        let inner = &self.inner;
        {
            let mut instances = inner.lock();
            let slot = instances
                .get(id)
                .ok_or_else(|| ComputeError::InstanceNotFound(id.into()))?;
            match slot.record.state {
                InstanceState::Stopped => {}
                InstanceState::Running | InstanceState::Pending => return Ok(slot.record.clone()),
                state => return Err(incorrect_state(id, state, "start", "stopped")),
            }
            let (vcpus, memory_mib) = (slot.record.vcpus, slot.record.memory_mib);
            check_capacity(&instances, inner.config.capacity, vcpus, memory_mib)?;
            if let Some(slot) = instances.get_mut(id) {
                slot.record.state = InstanceState::Pending;
                slot.record.state_reason = None;
                slot.record.state_changed_at = now();
                write_record(&inner.instance_dir(id), &slot.record)?;
            }
        }
        if let Err(e) = Inner::launch(inner, id).await {
            inner.set_state(
                id,
                InstanceState::Stopped,
                Some(format!("Server.InternalError: {e}")),
            );
            return Err(e);
        }
        self.describe(id)
    }

    /// ACPI power-down; after `stop_wait`, `quit`; then SIGKILL. Returns once stopped.
    pub async fn stop(&self, id: &str) -> Result<InstanceRecord> {
        let commands = {
            let mut instances = self.inner.lock();
            let slot = instances
                .get_mut(id)
                .ok_or_else(|| ComputeError::InstanceNotFound(id.into()))?;
            match slot.record.state {
                InstanceState::Running => {}
                InstanceState::Stopped | InstanceState::Stopping => return Ok(slot.record.clone()),
                state => return Err(incorrect_state(id, state, "stop", "running")),
            }
            slot.record.state = InstanceState::Stopping;
            slot.record.state_reason = Some(REASON_USER_SHUTDOWN.into());
            slot.record.state_changed_at = now();
            write_record(&self.inner.instance_dir(id), &slot.record)?;
            slot.commands.clone()
        };
        if let Some(commands) = commands {
            let (tx, rx) = oneshot::channel();
            if commands.send(VmCommand::Stop(tx)).await.is_ok() {
                // An error here means the supervisor ended: the VM is gone.
                let _ = rx.await;
            }
        }
        self.describe(id)
    }

    /// Hard reset of a running instance (the guest boots again).
    pub async fn reboot(&self, id: &str) -> Result<InstanceRecord> {
        let commands = {
            let instances = self.inner.lock();
            let slot = instances
                .get(id)
                .ok_or_else(|| ComputeError::InstanceNotFound(id.into()))?;
            if slot.record.state != InstanceState::Running {
                return Err(incorrect_state(id, slot.record.state, "reboot", "running"));
            }
            slot.commands.clone()
        };
        let commands = commands
            .ok_or_else(|| incorrect_state(id, InstanceState::Stopped, "reboot", "running"))?;
        let (tx, rx) = oneshot::channel();
        commands
            .send(VmCommand::Reset(tx))
            .await
            .map_err(|_| ComputeError::Hypervisor("the VM exited".into()))?;
        rx.await
            .map_err(|_| ComputeError::Hypervisor("the VM exited".into()))??;
        self.describe(id)
    }

    /// Kills the VM and deletes its overlay, config drive, console log and
    /// sockets; the record stays (state `terminated`) for describe.
    pub async fn terminate(&self, id: &str) -> Result<InstanceRecord> {
        let commands = {
            let mut instances = self.inner.lock();
            let slot = instances
                .get_mut(id)
                .ok_or_else(|| ComputeError::InstanceNotFound(id.into()))?;
            if slot.record.state == InstanceState::Terminated {
                return Ok(slot.record.clone());
            }
            slot.record.state = InstanceState::ShuttingDown;
            slot.record.state_reason = Some(REASON_USER_SHUTDOWN.into());
            slot.record.state_changed_at = now();
            write_record(&self.inner.instance_dir(id), &slot.record)?;
            slot.commands.take()
        };
        if let Some(commands) = commands {
            let (tx, rx) = oneshot::channel();
            if commands.send(VmCommand::Kill(tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
        // The supervisor is gone; a pid still recorded means it did not see the exit.
        if let Some(pid) = self.describe(id)?.pid {
            kill_and_wait(&*self.inner.driver, pid, &self.inner.instance_dir(id)).await;
        }
        self.inner
            .remove_instance_files(&self.inner.instance_dir(id));
        self.inner.set_state(
            id,
            InstanceState::Terminated,
            Some(REASON_USER_SHUTDOWN.into()),
        );
        self.inner.prune_terminated();
        self.describe(id)
    }

    /// The last 64 KiB of the serial console (lossy UTF-8).
    pub fn console_output(&self, id: &str) -> Result<String> {
        self.describe(id)?;
        let tail = console::read_tail(&self.inner.instance_dir(id).join(CONSOLE_FILE))?;
        Ok(String::from_utf8_lossy(&tail).into_owned())
    }

    pub fn describe(&self, id: &str) -> Result<InstanceRecord> {
        self.inner
            .lock()
            .get(id)
            .map(|slot| slot.record.clone())
            .ok_or_else(|| ComputeError::InstanceNotFound(id.into()))
    }

    #[must_use]
    pub fn list(&self) -> Vec<InstanceRecord> {
        self.inner
            .lock()
            .values()
            .map(|slot| slot.record.clone())
            .collect()
    }

    /// The hypervisor's own view of a running VM (QMP `query-status`:
    /// `running`, `paused`, ...).
    pub async fn hypervisor_status(&self, id: &str) -> Result<String> {
        let commands = {
            let instances = self.inner.lock();
            let slot = instances
                .get(id)
                .ok_or_else(|| ComputeError::InstanceNotFound(id.into()))?;
            slot.commands.clone()
        };
        let gone = || ComputeError::Hypervisor("no VM runs for this instance".into());
        let commands = commands.ok_or_else(gone)?;
        let (tx, rx) = oneshot::channel();
        commands
            .send(VmCommand::Status(tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Where the instance's files live.
    #[must_use]
    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.inner.instance_dir(id)
    }
}

fn incorrect_state(
    id: &str,
    state: InstanceState,
    action: &'static str,
    needs: &'static str,
) -> ComputeError {
    ComputeError::IncorrectInstanceState {
        id: id.into(),
        state: state.as_str().into(),
        action,
        needs,
    }
}

fn used(instances: &BTreeMap<String, Slot>) -> HostCapacity {
    instances
        .values()
        .filter(|s| s.record.state.holds_capacity())
        .fold(
            HostCapacity {
                vcpus: 0,
                memory_mib: 0,
            },
            |acc, s| HostCapacity {
                vcpus: acc.vcpus + s.record.vcpus,
                memory_mib: acc.memory_mib + s.record.memory_mib,
            },
        )
}

fn check_capacity(
    instances: &BTreeMap<String, Slot>,
    capacity: HostCapacity,
    vcpus: u32,
    memory_mib: u64,
) -> Result<()> {
    let used = used(instances);
    if used.vcpus + vcpus > capacity.vcpus || used.memory_mib + memory_mib > capacity.memory_mib {
        return Err(ComputeError::InsufficientInstanceCapacity {
            requested: format!("{vcpus} vCPUs and {memory_mib} MiB"),
            available: format!(
                "{} vCPUs and {} MiB",
                capacity.vcpus.saturating_sub(used.vcpus),
                capacity.memory_mib.saturating_sub(used.memory_mib)
            ),
        });
    }
    Ok(())
}

fn validate_request(request: &RunRequest) -> Result<()> {
    if let Some(user_data) = &request.user_data
        && user_data.len() > USER_DATA_BYTES_MAX
    {
        return Err(ComputeError::InvalidParameter(format!(
            "user data is {} bytes; at most {USER_DATA_BYTES_MAX}",
            user_data.len()
        )));
    }
    if let Some(hostname) = &request.hostname {
        let valid = !hostname.is_empty()
            && hostname.len() <= HOSTNAME_BYTES_MAX
            && hostname.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid {
            return Err(ComputeError::InvalidParameter(format!(
                "invalid hostname {hostname:?}"
            )));
        }
    }
    if request.ssh_keys.len() > SSH_KEYS_PER_INSTANCE_MAX {
        return Err(ComputeError::InvalidParameter(format!(
            "at most {SSH_KEYS_PER_INSTANCE_MAX} SSH keys"
        )));
    }
    for (name, key) in &request.ssh_keys {
        if name.is_empty()
            || name.len() > 255
            || key.len() > SSH_KEY_BYTES_MAX
            || key.contains('\n')
        {
            return Err(ComputeError::InvalidParameter(format!(
                "invalid SSH key {name:?}"
            )));
        }
    }
    Ok(())
}

/// EC2-style id: `i-` and 17 hex digits.
fn new_instance_id() -> String {
    let n: u128 = rand::random::<u128>() & ((1u128 << 68) - 1);
    format!("i-{n:017x}")
}

/// A stable locally administered MAC in QEMU's 52:54:00 range.
fn mac_for(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        digest[0], digest[1], digest[2]
    )
}

fn write_record(dir: &Path, record: &InstanceRecord) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| ComputeError::CorruptState {
        path: dir.join(RECORD_FILE),
        message: e.to_string(),
    })?;
    // Durable before it replaces the old record, and the rename durable
    // before returning: after a power loss the record is the old one or
    // the new one, never a torn file.
    let tmp = dir.join("instance.json.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(ComputeError::io(&tmp))?;
    std::io::Write::write_all(&mut file, &bytes).map_err(ComputeError::io(&tmp))?;
    file.sync_all().map_err(ComputeError::io(&tmp))?;
    let path = dir.join(RECORD_FILE);
    std::fs::rename(&tmp, &path).map_err(ComputeError::io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ComputeError::io(dir))
}

fn read_record(dir: &Path) -> Result<Option<InstanceRecord>> {
    let path = dir.join(RECORD_FILE);
    let bytes = match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ComputeError::Io { path, source: e }),
        Ok(meta) if meta.len() > INSTANCE_RECORD_BYTES_MAX => {
            return Err(ComputeError::CorruptState {
                path,
                message: "record too large".into(),
            });
        }
        Ok(_) => std::fs::read(&path).map_err(ComputeError::io(&path))?,
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ComputeError::CorruptState {
            path,
            message: e.to_string(),
        })
}

fn read_pidfile(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// SIGKILL and wait (bounded) until the process is gone or a zombie.
async fn kill_and_wait(driver: &dyn HypervisorDriver, pid: u32, dir: &Path) {
    if !driver.owns_process(pid, dir) {
        return;
    }
    if let Some(target) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(target, rustix::process::Signal::KILL);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(RECOVERY_KILL_WAIT_MS);
    while process_alive(pid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Slot>> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.instances
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn instance_dir(&self, id: &str) -> PathBuf {
        self.instances_dir.join(id)
    }

    fn set_state(&self, id: &str, state: InstanceState, reason: Option<String>) {
        let mut instances = self.lock();
        if let Some(slot) = instances.get_mut(id) {
            slot.record.state = state;
            slot.record.state_reason = reason;
            slot.record.state_changed_at = now();
            if !state.holds_capacity() {
                slot.record.pid = None;
                slot.commands = None;
            }
            if let Err(e) = write_record(&self.instance_dir(id), &slot.record) {
                tracing::error!(instance = id, "compute: cannot persist state: {e}");
            }
        }
    }

    /// Everything but the record.
    fn remove_instance_files(&self, dir: &Path) {
        let mut files = vec![
            dir.join(OVERLAY_FILE),
            dir.join(CONFIG_DRIVE_FILE),
            dir.join(CONSOLE_FILE),
            dir.join(QEMU_LOG_FILE),
        ];
        files.extend(self.driver.runtime_files(dir));
        for file in files {
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("compute: cannot remove {}: {e}", file.display()),
            }
        }
    }

    /// Forgets the oldest terminated records beyond `TERMINATED_RECORDS_MAX`.
    fn prune_terminated(&self) {
        let mut instances = self.lock();
        let mut terminated: Vec<(String, String)> = instances
            .values()
            .filter(|s| s.record.state == InstanceState::Terminated)
            .map(|s| (s.record.state_changed_at.clone(), s.record.id.clone()))
            .collect();
        if terminated.len() <= TERMINATED_RECORDS_MAX {
            return;
        }
        terminated.sort();
        let excess = terminated.len() - TERMINATED_RECORDS_MAX;
        for (_, id) in terminated.into_iter().take(excess) {
            instances.remove(&id);
            let _ = std::fs::remove_dir_all(self.instance_dir(&id));
        }
    }

    /// Starts the VM of an instance in `pending` and its supervisor.
    async fn launch(self: &Arc<Self>, id: &str) -> Result<()> {
        let record = self
            .lock()
            .get(id)
            .map(|s| s.record.clone())
            .ok_or_else(|| ComputeError::InstanceNotFound(id.into()))?;
        let image = self.images.get(&record.image_id)?;
        let dir = self
            .instance_dir(id)
            .canonicalize()
            .map_err(ComputeError::io(self.instance_dir(id)))?;
        let spec = VmSpec {
            name: id.to_string(),
            dir: dir.clone(),
            vcpus: record.vcpus,
            memory_mib: record.memory_mib,
            root_disk: dir.join(OVERLAY_FILE),
            config_drive: Some(dir.join(CONFIG_DRIVE_FILE)),
            kernel: image.kernel.clone(),
            mac: record.mac.clone(),
            serial: format!("ds=openstack;i={id}"),
        };
        let console = ConsoleLog::open(&dir.join(CONSOLE_FILE))?;
        let mut vm = self.driver.launch(&spec, console).await?;
        let (tx, rx) = mpsc::channel(INSTANCE_COMMANDS_QUEUED_MAX);
        let recorded = {
            let mut instances = self.lock();
            match instances.get_mut(id) {
                // Terminated (or gone) while QEMU was starting: it must not run.
                None => Err(ComputeError::InstanceNotFound(id.into())),
                Some(slot) if slot.record.state != InstanceState::Pending => {
                    Err(incorrect_state(id, slot.record.state, "launch", "pending"))
                }
                Some(slot) => {
                    let mut record = slot.record.clone();
                    record.state = InstanceState::Running;
                    record.state_reason = None;
                    record.state_changed_at = now();
                    record.pid = vm.pid();
                    record.launches += 1;
                    record.resets = 0;
                    let written = write_record(&dir, &record);
                    if written.is_ok() {
                        slot.record = record;
                        slot.commands = Some(tx);
                    }
                    written
                }
            }
        };
        if let Err(e) = recorded {
            // No supervisor will own this VM: nothing may run untracked.
            if let Err(kill) = vm.kill().await {
                tracing::error!(instance = id, "compute: {kill}");
            }
            return Err(e);
        }
        tokio::spawn(supervise(
            Arc::downgrade(self),
            id.to_string(),
            vm,
            rx,
            self.config.stop_wait,
        ));
        Ok(())
    }

    /// Records how a VM ended (the supervisor's last act).
    fn vm_exited(&self, id: &str, exit: &VmExit, guest_shutdown: bool) {
        let mut instances = self.lock();
        let Some(slot) = instances.get_mut(id) else {
            return;
        };
        slot.commands = None;
        slot.record.pid = None;
        let reason = match slot.record.state {
            InstanceState::Stopping => REASON_USER_SHUTDOWN.to_string(),
            InstanceState::Pending | InstanceState::Running => {
                if guest_shutdown && *exit == VmExit::Code(0) {
                    REASON_INSTANCE_SHUTDOWN.to_string()
                } else {
                    format!("Server.InternalError: qemu {exit}")
                }
            }
            // Terminate records its own outcome.
            InstanceState::ShuttingDown | InstanceState::Stopped | InstanceState::Terminated => {
                let _ = write_record(&self.instance_dir(id), &slot.record);
                return;
            }
        };
        tracing::info!(instance = id, "compute: vm {exit}; stopped ({reason})");
        slot.record.state = InstanceState::Stopped;
        slot.record.state_reason = Some(reason);
        slot.record.state_changed_at = now();
        let dir = self.instance_dir(id);
        if let Err(e) = write_record(&dir, &slot.record) {
            tracing::error!(instance = id, "compute: cannot persist state: {e}");
        }
        for file in self.driver.runtime_files(&dir) {
            let _ = std::fs::remove_file(file);
        }
    }

    /// Kills every VM process started under `instances_dir` (none is tracked
    /// yet) and settles each record: what was running is now stopped, with why.
    async fn recover(&self, instances_dir: &Path) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        // Any VM process whose sockets live under our directory, pidfile or not.
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if self.driver.owns_process(pid, instances_dir) {
                    kill_and_wait(&*self.driver, pid, instances_dir).await;
                    tracing::warn!(
                        pid,
                        "compute: killed a VM process left by an earlier host process"
                    );
                    report.killed_pids.push(pid);
                }
            }
        }
        let entries = std::fs::read_dir(instances_dir).map_err(ComputeError::io(instances_dir))?;
        let mut instances = self.lock();
        for entry in entries
            .flatten()
            .take(INSTANCES_PER_HOST_MAX + TERMINATED_RECORDS_MAX)
        {
            let dir = entry.path();
            let pid = read_pidfile(&self.driver.pidfile(&dir));
            let killed = pid.filter(|p| report.killed_pids.contains(p));
            let mut record = match read_record(&dir) {
                Ok(Some(record)) => record,
                Ok(None) => {
                    // No record: not an instance (a run that died before
                    // writing one). Its VM, if any, was killed above.
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                }
                Err(e) => {
                    tracing::error!("compute: skipping {}: {e}", dir.display());
                    continue;
                }
            };
            let before = record.state;
            match record.state {
                InstanceState::Pending | InstanceState::Running | InstanceState::Stopping => {
                    record.state = InstanceState::Stopped;
                    record.state_reason = Some(match killed {
                        Some(pid) => format!(
                            "Server.InternalError: host restarted; qemu (pid {pid}) was still running untracked and was killed"
                        ),
                        None => "Server.InternalError: qemu exited while the host was down".into(),
                    });
                }
                InstanceState::ShuttingDown => {
                    self.remove_instance_files(&dir);
                    record.state = InstanceState::Terminated;
                }
                InstanceState::Stopped | InstanceState::Terminated => {}
            }
            record.pid = None;
            for file in self.driver.runtime_files(&dir) {
                let _ = std::fs::remove_file(file);
            }
            if record.state != before {
                record.state_changed_at = now();
                report
                    .changed
                    .push((record.id.clone(), record.state_description()));
            }
            write_record(&dir, &record)?;
            instances.insert(
                record.id.clone(),
                Slot {
                    record,
                    commands: None,
                },
            );
        }
        Ok(report)
    }
}

/// Owns one VM: runs the commands sent to it and records how it ended.
/// Holds only a weak reference, so dropping the host ends it (the VM keeps
/// running, untracked, until the next `open`).
async fn supervise(
    host: Weak<Inner>,
    id: String,
    mut vm: Box<dyn VmHandle>,
    mut commands: mpsc::Receiver<VmCommand>,
    stop_wait: Duration,
) {
    let mut guest_shutdown = false;
    let mut reply_after_exit: Vec<oneshot::Sender<()>> = Vec::new();
    let exit = loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(VmCommand::Status(reply)) => {
                    let _ = reply.send(vm.status().await);
                }
                Some(VmCommand::Reset(reply)) => {
                    let _ = reply.send(vm.reset().await);
                }
                Some(VmCommand::Stop(reply)) => {
                    reply_after_exit.push(reply);
                    if let Err(e) = vm.power_down().await {
                        tracing::warn!(instance = %id, "compute: powerdown: {e}");
                    }
                    let exit = match wait_exit(&mut *vm, stop_wait, &mut guest_shutdown).await {
                        Some(exit) => exit,
                        None => {
                            let _ = vm.quit().await;
                            match wait_exit(&mut *vm, Duration::from_millis(QUIT_WAIT_MS), &mut guest_shutdown).await {
                                Some(exit) => exit,
                                None => force_exit(&mut *vm, &mut guest_shutdown).await,
                            }
                        }
                    };
                    break exit;
                }
                Some(VmCommand::Kill(reply)) => {
                    reply_after_exit.push(reply);
                    break force_exit(&mut *vm, &mut guest_shutdown).await;
                }
            },
            event = vm.next_event() => match event {
                VmEvent::Exited(exit) => break exit,
                VmEvent::Shutdown { guest, .. } => guest_shutdown |= guest,
                VmEvent::Reset { .. } => {
                    if let Some(host) = host.upgrade()
                        && let Some(slot) = host.lock().get_mut(&id)
                    {
                        slot.record.resets += 1;
                    }
                }
            },
        }
    };
    if let Some(host) = host.upgrade() {
        host.vm_exited(&id, &exit, guest_shutdown);
    }
    for reply in reply_after_exit {
        let _ = reply.send(());
    }
}

async fn wait_exit(
    vm: &mut dyn VmHandle,
    wait: Duration,
    guest_shutdown: &mut bool,
) -> Option<VmExit> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, vm.next_event()).await {
            Err(_) => return None,
            Ok(VmEvent::Exited(exit)) => return Some(exit),
            Ok(VmEvent::Shutdown { guest, .. }) => *guest_shutdown |= guest,
            Ok(VmEvent::Reset { .. }) => {}
        }
    }
}

async fn force_exit(vm: &mut dyn VmHandle, guest_shutdown: &mut bool) -> VmExit {
    if let Err(e) = vm.kill().await {
        tracing::error!("compute: {e}");
    }
    wait_exit(vm, Duration::from_millis(QUIT_WAIT_MS), guest_shutdown)
        .await
        .unwrap_or(VmExit::Signal(9))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(state: InstanceState, vcpus: u32, memory_mib: u64) -> Slot {
        Slot {
            record: InstanceRecord {
                id: new_instance_id(),
                instance_type: "n1.nano".into(),
                vcpus,
                memory_mib,
                image_id: String::new(),
                hostname: String::new(),
                availability_zone: String::new(),
                mac: String::new(),
                state,
                state_reason: None,
                launch_time: String::new(),
                state_changed_at: String::new(),
                pid: None,
                launches: 0,
                resets: 0,
            },
            commands: None,
        }
    }

    #[test]
    fn only_live_instances_hold_capacity() {
        let mut instances = BTreeMap::new();
        for (i, state) in [
            InstanceState::Running,
            InstanceState::Stopped,
            InstanceState::Terminated,
            InstanceState::Pending,
        ]
        .into_iter()
        .enumerate()
        {
            instances.insert(i.to_string(), slot(state, 1, 256));
        }
        assert_eq!(
            used(&instances),
            HostCapacity {
                vcpus: 2,
                memory_mib: 512
            }
        );
        let capacity = HostCapacity {
            vcpus: 3,
            memory_mib: 1024,
        };
        assert!(check_capacity(&instances, capacity, 1, 512).is_ok());
        assert!(matches!(
            check_capacity(&instances, capacity, 2, 256),
            Err(ComputeError::InsufficientInstanceCapacity { .. })
        ));
        assert!(matches!(
            check_capacity(&instances, capacity, 1, 513),
            Err(ComputeError::InsufficientInstanceCapacity { .. })
        ));
    }

    #[test]
    fn bad_requests_are_refused() {
        let ok = RunRequest {
            hostname: Some("web-1.example".into()),
            ..RunRequest::default()
        };
        assert!(validate_request(&ok).is_ok());
        for hostname in ["", "-web", "a..b", "under_score", &"x".repeat(64)] {
            let bad = RunRequest {
                hostname: Some(hostname.into()),
                ..RunRequest::default()
            };
            assert!(validate_request(&bad).is_err(), "{hostname:?}");
        }
        let big = RunRequest {
            user_data: Some(vec![b'x'; USER_DATA_BYTES_MAX + 1]),
            ..RunRequest::default()
        };
        assert!(validate_request(&big).is_err());
        let key = RunRequest {
            ssh_keys: vec![("k".into(), "ssh-ed25519 AAAA\nextra".into())],
            ..RunRequest::default()
        };
        assert!(validate_request(&key).is_err());
    }

    #[test]
    fn ids_and_macs_have_ec2_and_qemu_shapes() {
        let id = new_instance_id();
        assert_eq!(id.len(), 19);
        assert!(id.starts_with("i-") && id[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        let mac = mac_for(&id);
        assert!(mac.starts_with("52:54:00:") && mac.len() == 17);
        assert_eq!(mac, mac_for(&id));
    }
}
