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
//! nothing runs that the host does not track. Each running VM has its own
//! metadata service (a unix socket its supervisor owns, `metadata`) and an
//! SSH forward on a host port no other instance of this host holds (stopped
//! instances keep theirs, so a start usually gets the same port back).
//! This module knows nothing of EC2 wire formats, tenants, IAM or residency:
//! the API layer maps them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::unix::fs::PermissionsExt;
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
    AccelDecision, AccelMode, GUEST_IPV4, HypervisorDriver, QemuDriver, QemuTools, VmEvent, VmExit,
    VmHandle, VmNetwork, VmSpec, process_alive,
};
use crate::error::{ComputeError, Result};
use crate::image::{self, Image, ImageCache, ImageSource};
use crate::instance_type::InstanceType;
use crate::limits::{
    AVAILABILITY_ZONE_BYTES_MAX, HOSTNAME_BYTES_MAX, INSTANCE_COMMANDS_QUEUED_MAX,
    INSTANCE_RECORD_BYTES_MAX, INSTANCES_PER_HOST_MAX, LAUNCH_ATTEMPTS_MAX, QUIT_WAIT_MS,
    REBOOT_WAIT_MS, RECOVERY_KILL_WAIT_MS, SSH_KEY_BYTES_MAX, SSH_KEYS_PER_INSTANCE_MAX,
    SSH_PORT_PROBES_MAX, STOP_POWERDOWN_WAIT_MS, TERMINATED_RECORDS_MAX, USER_DATA_BYTES_MAX,
};
use crate::metadata::{InstanceMetadata, METADATA_FILE, METADATA_SOCKET, MetadataServer};
use crate::state_file;

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
    /// How long a reboot waits for the guest to honour Ctrl-Alt-Del before a hard reset.
    pub reboot_wait: Duration,
    /// Where instances' SSH forwards listen (QEMU `hostfwd`). Default
    /// 127.0.0.1. IPv4 only: QEMU's `hostfwd` option takes no IPv6 address.
    pub ssh_bind_address: IpAddr,
    /// The address reported for them (`InstanceRecord::ssh_forward`): what a
    /// tenant connects to. Default: the bind address, or 127.0.0.1 when that
    /// is unspecified (0.0.0.0 or ::).
    pub ssh_advertise_address: Option<IpAddr>,
    /// Host ports for SSH forwards. `None` (the default): a free port the
    /// kernel picks from its ephemeral range.
    pub ssh_port_range: Option<RangeInclusive<u16>>,
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
            reboot_wait: Duration::from_millis(REBOOT_WAIT_MS),
            ssh_bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ssh_advertise_address: None,
            ssh_port_range: None,
        }
    }

    /// The address SSH forwards are reported at.
    #[must_use]
    pub fn ssh_advertised(&self) -> IpAddr {
        match self.ssh_advertise_address {
            Some(address) => address,
            None if self.ssh_bind_address.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            None => self.ssh_bind_address,
        }
    }
}

/// How the last reboot went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootOutcome {
    /// The guest rebooted itself after Ctrl-Alt-Del.
    Graceful,
    /// It did not within `reboot_wait` (or could not be asked): hard reset.
    Forced,
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
    /// The guest's address in its user network (its DHCP lease), while not terminated.
    #[serde(default)]
    pub private_ip: Option<Ipv4Addr>,
    /// The host address and port forwarded to the guest's port 22 (the
    /// advertised address). Kept while stopped, so a start reuses the port
    /// when it is still free; cleared at terminate.
    #[serde(default)]
    pub ssh_forward: Option<SocketAddr>,
    /// How the last reboot went, once one has.
    #[serde(default)]
    pub last_reboot: Option<RebootOutcome>,
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
    /// An id the caller chose (a gateway that may retry), in the host's own
    /// format ([`new_instance_id`]; any other is `InvalidParameter`). When
    /// the host already has an instance with this id, `run` returns its
    /// current record instead of starting another (a retry after a lost
    /// answer); one of another type or image is `InvalidParameter`.
    /// `None`: the host picks one.
    pub instance_id: Option<String>,
    /// The zone the guest is told (config drive and metadata service) and
    /// its record names. `None`: the host's own (`HostConfig::availability_zone`).
    pub availability_zone: Option<String>,
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
    Reboot(oneshot::Sender<Result<()>>),
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
        if config.ssh_bind_address.is_ipv6() {
            return Err(ComputeError::InvalidParameter(format!(
                "ssh_bind_address {}: QEMU forwards ports from IPv4 addresses only",
                config.ssh_bind_address
            )));
        }
        let iso_builder = match &config.iso_builder {
            Some(path) => path.clone(),
            None => image::find_iso_builder().ok_or_else(|| ComputeError::Tool {
                tool: "xorriso".into(),
                message: "neither xorriso nor genisoimage is on PATH".into(),
            })?,
        };
        let instances_dir = config.state_dir.join("instances");
        let images_dir = config.state_dir.join("images");
        // Tenants' images, user data and disks: no other local user may
        // read them (nor list them), whatever the umask.
        for dir in [&config.state_dir, &instances_dir, &images_dir] {
            std::fs::create_dir_all(dir).map_err(ComputeError::io(dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(ComputeError::io(dir))?;
        }
        let instances_dir = instances_dir
            .canonicalize()
            .map_err(ComputeError::io(&instances_dir))?;
        // Absolute: an overlay names its base image by this path, and
        // qemu-img resolves a relative one from the overlay's directory
        // (a relative `--data-dir` would make every run fail).
        let images_dir = images_dir
            .canonicalize()
            .map_err(ComputeError::io(&images_dir))?;
        let images = ImageCache::new(images_dir, config.tools.qemu_img.clone());
        images.remove_leftovers();
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
        self.register_image_expecting(source, None).await
    }

    /// As `register_image`; with `expected`, content whose id differs is
    /// refused (`InvalidImage`) and not cached. Runs on a task of its own,
    /// so that a caller that goes away (a dropped connection) does not
    /// leave a staging directory behind.
    pub async fn register_image_expecting(
        &self,
        source: &ImageSource,
        expected: Option<&str>,
    ) -> Result<Image> {
        let inner = Arc::clone(&self.inner);
        let (source, expected) = (source.clone(), expected.map(str::to_owned));
        tokio::spawn(async move { inner.images.register(&source, expected.as_deref()).await })
            .await
            .map_err(|e| ComputeError::InvalidImage(format!("registering the image failed: {e}")))?
    }

    /// A cached image, by id (`ImageNotFound` if this host has none).
    pub fn image(&self, id: &str) -> Result<Image> {
        self.inner.images.get(id)
    }

    /// Runs an instance: returns once its VM runs (state `running`), or with
    /// the error that kept it from running (the instance is then terminated).
    ///
    /// The work runs on a task of its own and goes on if the caller goes
    /// away (a gateway's connection dropped): cancelled halfway, it would
    /// leave the instance `pending` (holding capacity) and possibly a QEMU
    /// running whose pid nothing recorded.
    pub async fn run(&self, request: RunRequest) -> Result<InstanceRecord> {
        let host = self.handle();
        detached("run", async move { host.run_to_end(request).await }).await
    }

    /// Another handle on the same host, for a detached task.
    fn handle(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }

    async fn run_to_end(&self, request: RunRequest) -> Result<InstanceRecord> {
        let inner = &self.inner;
        let instance_type = InstanceType::find(&request.instance_type)
            .ok_or_else(|| ComputeError::InvalidInstanceType(request.instance_type.clone()))?;
        validate_request(&request)?;
        let image = inner.images.get(&request.image_id)?;
        let id = match &request.instance_id {
            Some(id) => id.clone(),
            None => new_instance_id(),
        };
        let zone = request
            .availability_zone
            .clone()
            .unwrap_or_else(|| inner.config.availability_zone.clone());
        let hostname = request.hostname.clone().unwrap_or_else(|| id.clone());
        let mac = mac_for(&id);
        let record = InstanceRecord {
            id: id.clone(),
            instance_type: instance_type.name.to_string(),
            vcpus: instance_type.vcpus,
            memory_mib: instance_type.memory_mib,
            image_id: image.id.clone(),
            hostname: hostname.clone(),
            availability_zone: zone.clone(),
            mac: mac.clone(),
            state: InstanceState::Pending,
            state_reason: None,
            launch_time: now(),
            state_changed_at: now(),
            pid: None,
            launches: 0,
            resets: 0,
            private_ip: None,
            ssh_forward: None,
            last_reboot: None,
        };
        let dir = inner.instance_dir(&id);
        {
            let mut instances = inner.lock();
            if let Some(existing) = instances.get(&id) {
                // A retry of a run whose answer was lost: the same instance.
                let existing = &existing.record;
                if existing.instance_type != record.instance_type
                    || existing.image_id != record.image_id
                {
                    return Err(ComputeError::InvalidParameter(format!(
                        "instance {id} already exists with type {} and image {}",
                        existing.instance_type, existing.image_id
                    )));
                }
                if existing.state == InstanceState::Terminated && existing.launches == 0 {
                    // The first run failed: the retry fails the same way,
                    // rather than answer with a dead instance.
                    return Err(ComputeError::Hypervisor(format!(
                        "instance {id} failed to start: {}",
                        existing
                            .state_reason
                            .as_deref()
                            .unwrap_or("no reason recorded")
                    )));
                }
                return Ok(existing.clone());
            }
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
            // The config drive and metadata file hold the tenant's user data.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(ComputeError::io(&dir))?;
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
            let metadata = InstanceMetadata {
                instance_id: id.clone(),
                hostname: hostname.clone(),
                availability_zone: zone.clone(),
                instance_type: instance_type.name.to_string(),
                image_id: image.id.clone(),
                mac: mac.clone(),
                ssh_keys: request.ssh_keys.clone(),
                user_data: request.user_data.clone(),
            };
            metadata.write(&dir)?;
            image::build_config_drive(
                &inner.iso_builder,
                &metadata.config_drive(),
                &dir.join(CONFIG_DRIVE_FILE),
            )
            .await?;
            Inner::launch(inner, &id).await
        }
        .await;
        if let Err(e) = prepared {
            // Unless a terminate came meanwhile: it has its own outcome.
            if inner.set_state_if(
                &id,
                InstanceState::Pending,
                InstanceState::Terminated,
                Some(format!("Server.InternalError: {e}")),
            ) {
                inner.remove_instance_files(&dir);
            }
            return Err(e);
        }
        self.describe(&id)
    }

    /// Starts a stopped instance (its overlay and config drive are kept
    /// while stopped). On a task of its own, as `run`.
    pub async fn start(&self, id: &str) -> Result<InstanceRecord> {
        let (host, id) = (self.handle(), id.to_owned());
        detached("start", async move { host.start_to_end(&id).await }).await
    }

    async fn start_to_end(&self, id: &str) -> Result<InstanceRecord> {
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
            // Unless a terminate came meanwhile: `terminated` stays.
            inner.set_state_if(
                id,
                InstanceState::Pending,
                InstanceState::Stopped,
                Some(format!("Server.InternalError: {e}")),
            );
            return Err(e);
        }
        self.describe(id)
    }

    /// ACPI power-down; after `stop_wait`, `quit`; then SIGKILL. Returns
    /// once stopped. Like every lifecycle call, on a task of its own (see
    /// `run`): a stop or terminate cancelled halfway would leave the
    /// instance `stopping` or `shutting-down`, or its VM without a supervisor.
    pub async fn stop(&self, id: &str) -> Result<InstanceRecord> {
        let (host, id) = (self.handle(), id.to_owned());
        detached("stop", async move { host.stop_to_end(&id).await }).await
    }

    async fn stop_to_end(&self, id: &str) -> Result<InstanceRecord> {
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

    /// Reboots a running instance as EC2 does: the guest is asked
    /// (Ctrl-Alt-Del), and reset by force if it has not rebooted within
    /// `reboot_wait`. Returns once the request is delivered (or, for a
    /// hypervisor that cannot ask, once the reset is done); the outcome shows
    /// in `InstanceRecord::last_reboot`.
    pub async fn reboot(&self, id: &str) -> Result<InstanceRecord> {
        let (host, id) = (self.handle(), id.to_owned());
        detached("reboot", async move { host.reboot_to_end(&id).await }).await
    }

    async fn reboot_to_end(&self, id: &str) -> Result<InstanceRecord> {
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
            .send(VmCommand::Reboot(tx))
            .await
            .map_err(|_| ComputeError::Hypervisor("the VM exited".into()))?;
        rx.await
            .map_err(|_| ComputeError::Hypervisor("the VM exited".into()))??;
        self.describe(id)
    }

    /// Kills the VM and deletes its overlay, config drive, metadata, console
    /// log and sockets, and releases its SSH port; the record stays (state
    /// `terminated`) for describe.
    pub async fn terminate(&self, id: &str) -> Result<InstanceRecord> {
        let (host, id) = (self.handle(), id.to_owned());
        detached("terminate", async move { host.terminate_to_end(&id).await }).await
    }

    async fn terminate_to_end(&self, id: &str) -> Result<InstanceRecord> {
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
    if let Some(id) = &request.instance_id
        && !is_instance_id(id)
    {
        return Err(ComputeError::InvalidParameter(format!(
            "instance id {id:?}: expected `i-` and 17 lower-case hex digits"
        )));
    }
    if let Some(zone) = &request.availability_zone
        && (zone.is_empty()
            || zone.len() > AVAILABILITY_ZONE_BYTES_MAX
            || !zone.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err(ComputeError::InvalidParameter(format!(
            "invalid availability zone {zone:?}"
        )));
    }
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

/// A new instance id in the host's format (EC2-style: `i-` and 17
/// lower-case hex digits), for callers that choose the id of a `run`
/// ([`RunRequest::instance_id`]) so that they can retry it.
#[must_use]
pub fn new_instance_id() -> String {
    let n: u128 = rand::random::<u128>() & ((1u128 << 68) - 1);
    format!("i-{n:017x}")
}

/// Whether `id` has the shape [`new_instance_id`] gives.
#[must_use]
pub fn is_instance_id(id: &str) -> bool {
    id.len() == 19
        && id.strip_prefix("i-").is_some_and(|hex| {
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// A stable locally administered MAC in QEMU's 52:54:00 range.
fn mac_for(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        digest[0], digest[1], digest[2]
    )
}

/// Runs a lifecycle call's work on a task of its own, so that a caller that
/// goes away cannot cancel it halfway (see `ComputeHost::run`).
async fn detached<T: Send + 'static>(
    what: &str,
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| ComputeError::Hypervisor(format!("the {what} task failed: {e}")))?
}

fn write_record(dir: &Path, record: &InstanceRecord) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| ComputeError::CorruptState {
        path: dir.join(RECORD_FILE),
        message: e.to_string(),
    })?;
    state_file::write_atomic(dir, RECORD_FILE, &bytes)
}

fn read_record(dir: &Path) -> Result<Option<InstanceRecord>> {
    state_file::read_json(
        dir,
        RECORD_FILE,
        INSTANCE_RECORD_BYTES_MAX,
        "record too large",
    )
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
        self.set_state_where(id, |_| true, state, reason);
    }

    /// `set_state` if the instance is still in `expected`; whether it was.
    fn set_state_if(
        &self,
        id: &str,
        expected: InstanceState,
        state: InstanceState,
        reason: Option<String>,
    ) -> bool {
        self.set_state_where(id, |current| current == expected, state, reason)
    }

    fn set_state_where(
        &self,
        id: &str,
        applies: impl Fn(InstanceState) -> bool,
        state: InstanceState,
        reason: Option<String>,
    ) -> bool {
        let mut instances = self.lock();
        let Some(slot) = instances.get_mut(id) else {
            return false;
        };
        if !applies(slot.record.state) {
            return false;
        }
        {
            slot.record.state = state;
            slot.record.state_reason = reason;
            slot.record.state_changed_at = now();
            if !state.holds_capacity() {
                slot.record.pid = None;
                slot.commands = None;
            }
            if state == InstanceState::Terminated {
                // Its SSH port is free for others; it has no address.
                slot.record.ssh_forward = None;
                slot.record.private_ip = None;
            }
            if let Err(e) = write_record(&self.instance_dir(id), &slot.record) {
                tracing::error!(instance = id, "compute: cannot persist state: {e}");
            }
        }
        true
    }

    /// Files that exist only while a VM runs: the driver's sockets and
    /// pidfile, and the metadata socket.
    fn runtime_files(&self, dir: &Path) -> Vec<PathBuf> {
        let mut files = self.driver.runtime_files(dir);
        files.push(dir.join(METADATA_SOCKET));
        files
    }

    /// Everything but the record.
    fn remove_instance_files(&self, dir: &Path) {
        let mut files = vec![
            dir.join(OVERLAY_FILE),
            dir.join(CONFIG_DRIVE_FILE),
            dir.join(METADATA_FILE),
            dir.join(CONSOLE_FILE),
            dir.join(QEMU_LOG_FILE),
        ];
        files.extend(self.runtime_files(dir));
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
        // The metadata service listens before the guest can ask.
        let metadata = match InstanceMetadata::read(&dir)? {
            Some(metadata) => metadata,
            None => {
                tracing::warn!(
                    instance = id,
                    "compute: no {METADATA_FILE}: the metadata service knows no keys or user data"
                );
                InstanceMetadata {
                    instance_id: record.id.clone(),
                    hostname: record.hostname.clone(),
                    availability_zone: record.availability_zone.clone(),
                    instance_type: record.instance_type.clone(),
                    image_id: record.image_id.clone(),
                    mac: record.mac.clone(),
                    ssh_keys: Vec::new(),
                    user_data: None,
                }
            }
        };
        let metadata_server = MetadataServer::start(&dir.join(METADATA_SOCKET), metadata)?;
        let mut spec = VmSpec {
            name: id.to_string(),
            dir: dir.clone(),
            vcpus: record.vcpus,
            memory_mib: record.memory_mib,
            root_disk: dir.join(OVERLAY_FILE),
            config_drive: Some(dir.join(CONFIG_DRIVE_FILE)),
            kernel: image.kernel.clone(),
            mac: record.mac.clone(),
            serial: format!("ds=openstack;i={id}"),
            network: VmNetwork {
                metadata_socket: Some(metadata_server.socket().to_path_buf()),
                ssh_forward: None,
            },
        };
        // The port was free when chosen, but anything on the machine may
        // take it before QEMU binds it: then another port, a few times.
        let mut refused_ports = Vec::new();
        let mut attempt = 0;
        let mut vm = loop {
            attempt += 1;
            let port = self.reserve_ssh_port(id, &refused_ports)?;
            spec.network.ssh_forward = Some(SocketAddr::new(self.config.ssh_bind_address, port));
            let console = ConsoleLog::open(&dir.join(CONSOLE_FILE))?;
            match self.driver.launch(&spec, console).await {
                Ok(vm) => break vm,
                Err(e) if attempt < LAUNCH_ATTEMPTS_MAX && is_port_conflict(&e) => {
                    tracing::warn!(
                        instance = id,
                        port,
                        "compute: ssh port taken meanwhile: {e}"
                    );
                    refused_ports.push(port);
                }
                Err(e) => return Err(e),
            }
        };
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
            Waits {
                stop: self.config.stop_wait,
                reboot: self.config.reboot_wait,
            },
            metadata_server,
        ));
        Ok(())
    }

    /// Chooses the SSH port of instance `id` and records it in its slot (so
    /// no concurrent launch takes it): the one it had, if still free, else a
    /// free one no other instance holds, other than `refused`.
    fn reserve_ssh_port(&self, id: &str, refused: &[u16]) -> Result<u16> {
        let mut instances = self.lock();
        let held: Vec<u16> = instances
            .iter()
            .filter(|(other, slot)| {
                other.as_str() != id && slot.record.state != InstanceState::Terminated
            })
            .filter_map(|(_, slot)| slot.record.ssh_forward.map(|a| a.port()))
            .collect();
        let slot = instances
            .get_mut(id)
            .ok_or_else(|| ComputeError::InstanceNotFound(id.into()))?;
        if slot.record.state != InstanceState::Pending {
            // Terminated (or stopped) meanwhile: it gets no port back.
            return Err(incorrect_state(id, slot.record.state, "launch", "pending"));
        }
        let previous = slot.record.ssh_forward.map(|a| a.port());
        let unavailable = |port: u16| held.contains(&port) || refused.contains(&port);
        let port = choose_ssh_port(
            self.config.ssh_bind_address,
            self.config.ssh_port_range.as_ref(),
            previous,
            unavailable,
        )?;
        slot.record.ssh_forward = Some(SocketAddr::new(self.config.ssh_advertised(), port));
        slot.record.private_ip = Some(GUEST_IPV4);
        Ok(port)
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
        for file in self.runtime_files(&dir) {
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
            for file in self.runtime_files(&dir) {
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

/// Whether a launch failed because QEMU could not bind the SSH forward's
/// port ("Could not set up host forwarding rule 'tcp:...'").
fn is_port_conflict(error: &ComputeError) -> bool {
    matches!(error, ComputeError::Hypervisor(message) if message.contains("Could not set up host forwarding rule"))
}

/// A host port for an SSH forward on `bind`: `previous` if it is still
/// free, else one from `range` (from a random offset) or, without a range,
/// one the kernel picks; never one `unavailable` refuses. Free means that
/// binding it works now: QEMU binds it a moment later (with
/// `SO_REUSEADDR`, as `std` does here).
fn choose_ssh_port(
    bind: IpAddr,
    range: Option<&RangeInclusive<u16>>,
    previous: Option<u16>,
    unavailable: impl Fn(u16) -> bool,
) -> Result<u16> {
    let free = |port: u16| {
        port != 0
            && !unavailable(port)
            && std::net::TcpListener::bind(SocketAddr::new(bind, port)).is_ok()
    };
    if let Some(port) = previous
        && range.is_none_or(|r| r.contains(&port))
        && free(port)
    {
        return Ok(port);
    }
    let exhausted = |where_: String| ComputeError::InsufficientInstanceCapacity {
        requested: format!("an SSH port on {bind}"),
        available: format!("none free {where_}"),
    };
    match range {
        Some(range) => {
            let (start, end) = (u32::from(*range.start()), u32::from(*range.end()));
            let len = (end + 1).saturating_sub(start);
            if len == 0 {
                return Err(exhausted(format!("in the empty range {start}-{end}")));
            }
            let offset = rand::random::<u32>() % len;
            (0..len)
                .take(SSH_PORT_PROBES_MAX)
                .filter_map(|i| u16::try_from(start + (offset + i) % len).ok())
                .find(|&port| free(port))
                .ok_or_else(|| exhausted(format!("in {start}-{end}")))
        }
        None => (0..SSH_PORT_PROBES_MAX)
            .find_map(|_| {
                let listener = std::net::TcpListener::bind(SocketAddr::new(bind, 0)).ok()?;
                let port = listener.local_addr().ok()?.port();
                (!unavailable(port)).then_some(port)
            })
            .ok_or_else(|| exhausted("among the kernel's ephemeral ports".into())),
    }
}

/// How long the supervisor gives a guest to act on a request.
#[derive(Debug, Clone, Copy)]
struct Waits {
    stop: Duration,
    reboot: Duration,
}

/// Owns one VM and its metadata service: runs the commands sent to it and
/// records how it ended. Holds only a weak reference, so dropping the host
/// ends it (the VM keeps running, untracked, until the next `open`; its
/// metadata service stops).
async fn supervise(
    host: Weak<Inner>,
    id: String,
    mut vm: Box<dyn VmHandle>,
    mut commands: mpsc::Receiver<VmCommand>,
    waits: Waits,
    metadata_server: MetadataServer,
) {
    let stop_wait = waits.stop;
    let mut guest_shutdown = false;
    let mut reply_after_exit: Vec<oneshot::Sender<()>> = Vec::new();
    // Set while a reboot request waits for the guest to reset.
    let mut reboot_deadline: Option<tokio::time::Instant> = None;
    let note_reboot = |outcome: RebootOutcome| {
        tracing::info!(instance = %id, ?outcome, "compute: rebooted");
        if let Some(host) = host.upgrade()
            && let Some(slot) = host.lock().get_mut(&id)
        {
            slot.record.last_reboot = Some(outcome);
            if let Err(e) = write_record(&host.instance_dir(&id), &slot.record) {
                tracing::error!(instance = %id, "compute: cannot persist state: {e}");
            }
        }
    };
    let exit = loop {
        let deadline = reboot_deadline.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(VmCommand::Status(reply)) => {
                    let _ = reply.send(vm.status().await);
                }
                Some(VmCommand::Reboot(reply)) => match vm.request_reboot().await {
                    Ok(()) => {
                        let at = tokio::time::Instant::now() + waits.reboot;
                        reboot_deadline = Some(reboot_deadline.map_or(at, |d| d.min(at)));
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        tracing::warn!(instance = %id, "compute: cannot ask the guest to reboot ({e}); resetting");
                        let reset = vm.reset().await;
                        if reset.is_ok() {
                            reboot_deadline = None;
                            note_reboot(RebootOutcome::Forced);
                        }
                        let _ = reply.send(reset);
                    }
                },
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
            () = tokio::time::sleep_until(deadline), if reboot_deadline.is_some() => {
                reboot_deadline = None;
                match vm.reset().await {
                    Ok(()) => note_reboot(RebootOutcome::Forced),
                    Err(e) => tracing::warn!(instance = %id, "compute: reset after the reboot wait: {e}"),
                }
            }
            event = vm.next_event() => match event {
                VmEvent::Exited(exit) => break exit,
                VmEvent::Shutdown { guest, .. } => guest_shutdown |= guest,
                VmEvent::Reset { guest } => {
                    if let Some(host) = host.upgrade()
                        && let Some(slot) = host.lock().get_mut(&id)
                    {
                        slot.record.resets += 1;
                    }
                    if guest && reboot_deadline.take().is_some() {
                        note_reboot(RebootOutcome::Graceful);
                    }
                }
            },
        }
    };
    // Before the exit is recorded: once it is, a start may bind a new
    // socket at the same path, which this one's removal must not take away.
    drop(metadata_server);
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
                private_ip: None,
                ssh_forward: None,
                last_reboot: None,
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
    fn ssh_ports_are_free_and_not_held() {
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        // A port someone listens on is not chosen, even as the previous one.
        let busy = std::net::TcpListener::bind((localhost, 0)).unwrap();
        let busy_port = busy.local_addr().unwrap().port();
        let port = choose_ssh_port(localhost, None, Some(busy_port), |_| false).unwrap();
        assert_ne!(port, busy_port);
        // The previous port comes back when it is free.
        assert_eq!(
            choose_ssh_port(localhost, None, Some(port), |_| false).unwrap(),
            port
        );
        // Within a range, skipping held and busy ports; none left is capacity.
        // busy_port + 2 must be free for this check (another process may
        // hold it): a new busy port until it is, a bounded number of times.
        let (mut busy, mut busy_port) = (busy, busy_port);
        for _ in 0..100 {
            if busy_port < u16::MAX - 2
                && std::net::TcpListener::bind((localhost, busy_port + 2)).is_ok()
            {
                break;
            }
            busy = std::net::TcpListener::bind((localhost, 0)).unwrap();
            busy_port = busy.local_addr().unwrap().port();
        }
        let range = busy_port..=busy_port.saturating_add(2);
        let held = busy_port.saturating_add(1);
        let chosen = choose_ssh_port(localhost, Some(&range), None, |p| p == held)
            .expect("busy_port + 2 is free");
        assert_eq!(chosen, busy_port + 2);
        let none = choose_ssh_port(localhost, Some(&range), None, |p| p != busy_port);
        assert!(
            matches!(none, Err(ComputeError::InsufficientInstanceCapacity { .. })),
            "{none:?}"
        );
        drop(busy);
        assert!(is_port_conflict(&ComputeError::Hypervisor(
            "qemu exited: Could not set up host forwarding rule 'tcp:127.0.0.1:22-:22'".into()
        )));
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
