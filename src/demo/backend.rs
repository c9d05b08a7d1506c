//! Choosing the VM a demo drives. One small factory, so adding a backend is one match arm: it
//! returns the two backend halves for the manager, and a probe that can tell whether the VM is
//! empty at the end.
//!
//! The QEMU VM itself (a daemonized `qemu-system-x86_64` under TCG with a small guest running
//! qemu-guest-agent) is started by the demo's parent; the shim and the recovering parent only
//! connect to its QMP and agent sockets. Both sockets serve one client at a time, so whoever
//! connects must be the only live user: the parent connects only after the shim died, and drops
//! its connections (closes the manager) before probing.

use crate::backend::qemu::{QemuGuest, QemuHost};
use crate::backend::sim::SimVm;
use crate::backend::{GuestBackend, HostBackend};
use crate::cli::fail::CliError;
use crate::demo::vm::{GuestImage, QemuVm, QemuVmOptions, DEFAULT_QEMU};
use crate::demo::BackendArg;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the VM a manager should drive lives.
#[derive(Clone, Debug)]
pub enum Target {
    /// The persistent simulated VM kept in `state`, with `latency` per backend call.
    Sim {
        /// Its state file.
        state: PathBuf,
        /// Added to every backend call.
        latency: Duration,
    },
    /// A running QEMU VM, reached over its QMP monitor and guest agent sockets.
    Qemu {
        /// The QMP monitor socket.
        qmp: PathBuf,
        /// The qemu-guest-agent socket.
        qga: PathBuf,
    },
}

/// A VM opened for the manager.
pub struct Vm {
    /// The host half.
    pub host: Arc<dyn HostBackend>,
    /// The guest half.
    pub guest: Arc<dyn GuestBackend>,
    /// The simulated VM, for a caller that tunes its latencies (the demo's shim).
    pub sim: Option<SimVm>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("sim", &self.sim)
            .finish_non_exhaustive()
    }
}

/// What a VM still holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holds {
    /// Disks attached on the host side.
    pub attachments: usize,
    /// Mounts (and block-device links) in the guest.
    pub mounts: usize,
    /// SCSI devices the guest still sees, when the backend can tell.
    pub guest_devices: Option<usize>,
}

impl Holds {
    /// Nothing attached, mounted or visible.
    pub fn is_empty(&self) -> bool {
        self.attachments == 0 && self.mounts == 0 && self.guest_devices.unwrap_or(0) == 0
    }
}

/// What the QEMU demo needs on this machine, found before anything is started.
#[derive(Debug)]
pub struct QemuPrereqs {
    /// The guest kernel and initramfs.
    pub image: GuestImage,
    /// `mkfs.ext4`, to format the read-only layer images (nothing formats a read-only disk).
    pub mkfs: PathBuf,
}

/// Fails when `kind` cannot run on this machine, before anything is created or started. For
/// QEMU: the binary, `mkfs.ext4` and the guest image, each error naming the script that
/// installs or builds the missing piece.
pub fn check(kind: BackendArg) -> Result<Option<QemuPrereqs>, CliError> {
    match kind {
        BackendArg::Sim => Ok(None),
        BackendArg::Qemu => {
            if find_program(DEFAULT_QEMU).is_none() {
                return Err(CliError::Io(format!(
                    "{DEFAULT_QEMU} not found on PATH: install QEMU with scripts/install-qemu.sh"
                )));
            }
            let mkfs = find_program("mkfs.ext4").ok_or_else(|| {
                CliError::Io(
                    "mkfs.ext4 not found (PATH, /sbin, /usr/sbin): install it with scripts/install-qemu.sh (Debian: e2fsprogs)"
                        .into(),
                )
            })?;
            let dir = guest_dir()?;
            // The error names the missing file and scripts/build-guest.sh.
            let image = GuestImage::from_dir(&dir).map_err(|e| {
                CliError::Io(format!(
                    "{e} (or set LUNLEDGER_GUEST_DIR to a directory holding vmlinuz and initrd.gz)"
                ))
            })?;
            Ok(Some(QemuPrereqs { image, mkfs }))
        }
    }
}

/// `$LUNLEDGER_GUEST_DIR`, else the first `target/guest` holding a kernel: under the current
/// directory, then in the repository this binary was built in (it runs from `<repo>/target/..`),
/// else `./target/guest` so the error names where it was expected.
fn guest_dir() -> Result<PathBuf, CliError> {
    if let Some(d) = std::env::var_os("LUNLEDGER_GUEST_DIR") {
        return Ok(PathBuf::from(d));
    }
    let cwd =
        std::env::current_dir().map_err(|e| CliError::io("finding the current directory", e))?;
    let mut candidates = vec![cwd.join("target/guest")];
    if let Ok(exe) = std::env::current_exe() {
        // The nearest `target` ancestor of the binary is the build's target dir.
        if let Some(t) = exe
            .ancestors()
            .find(|a| a.file_name() == Some("target".as_ref()))
        {
            candidates.push(t.join("guest"));
        }
    }
    let first = candidates[0].clone();
    Ok(candidates
        .into_iter()
        .find(|c| c.join("vmlinuz").is_file())
        .unwrap_or(first))
}

/// `name` on PATH, or in /sbin or /usr/sbin (not on a normal user's PATH, where mkfs lives).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/sbin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts the demo's QEMU VM (TCG, the manager's 4 controllers, the guest from `prereqs`) and
/// waits until its guest agent answers. On error QEMU is already stopped (by `QemuVm`'s drop).
pub async fn start_qemu(prereqs: &QemuPrereqs) -> Result<(QemuVm, Duration), CliError> {
    let t = Instant::now();
    let vm = QemuVm::start(QemuVmOptions {
        controllers: crate::demo::shim::config().controllers,
        guest: Some(prereqs.image.clone()),
        ..Default::default()
    })
    .await
    .map_err(|e| CliError::Io(format!("starting QEMU: {e}")))?;
    // A TCG boot takes 3-7 s; a loaded machine gets more, but not forever.
    vm.wait_ready(Duration::from_secs(60))
        .await
        .map_err(|e| CliError::Io(format!("waiting for the QEMU guest: {e}")))?;
    Ok((vm, t.elapsed()))
}

/// The QMP and agent sockets of a started demo VM.
pub fn qemu_target(vm: &QemuVm) -> Result<Target, CliError> {
    let qga = vm
        .qga_socket()
        .ok_or_else(|| CliError::Io("the QEMU VM was started without a guest".into()))?;
    Ok(Target::Qemu {
        qmp: vm.qmp_socket(),
        qga,
    })
}

/// Opens the VM at `t` for a manager.
pub async fn open(t: &Target) -> Result<Vm, CliError> {
    match t {
        Target::Sim { state, latency } => {
            let vm = SimVm::persistent(state).map_err(|e| CliError::Io(e.to_string()))?;
            vm.set_latency(*latency);
            Ok(Vm {
                host: vm.host_backend(),
                guest: vm.guest_backend(),
                sim: Some(vm),
            })
        }
        Target::Qemu { qmp, qga } => {
            let (host, guest) = connect_qemu(qmp, qga).await?;
            Ok(Vm {
                host: Arc::new(host),
                guest: Arc::new(guest),
                sim: None,
            })
        }
    }
}

async fn connect_qemu(qmp: &Path, qga: &Path) -> Result<(QemuHost, QemuGuest), CliError> {
    let host = QemuHost::connect(qmp)
        .await
        .map_err(|e| CliError::Io(format!("connecting to QMP at {}: {e}", qmp.display())))?;
    // The guest finds a controller's disks through the controller's PCI address.
    let map = host
        .controller_map()
        .await
        .map_err(|e| CliError::Io(format!("reading QEMU's SCSI controllers: {e}")))?;
    let guest = QemuGuest::connect(qga, map).await.map_err(|e| {
        CliError::Io(format!(
            "connecting to the guest agent at {}: {e}",
            qga.display()
        ))
    })?;
    Ok((host, guest))
}

/// What the VM at `t` holds now, asked of the VM itself (not of any journal). For QEMU this
/// opens its own connections, so nothing else may be connected.
/// `sim`, when given, is the simulated VM already open in this process.
pub async fn holds(t: &Target, sim: Option<&SimVm>) -> Result<Holds, CliError> {
    match t {
        Target::Sim { state, .. } => {
            let s = match sim {
                Some(vm) => vm.snapshot(),
                None => SimVm::persistent(state)
                    .map_err(|e| CliError::Io(e.to_string()))?
                    .snapshot(),
            };
            Ok(Holds {
                attachments: s.attachments.len(),
                mounts: s.mounts.len(),
                guest_devices: None,
            })
        }
        Target::Qemu { qmp, qga } => {
            let (host, guest) = connect_qemu(qmp, qga).await?;
            let h = host
                .inspect()
                .await
                .map_err(|e| CliError::Io(format!("inspecting QEMU over QMP: {e}")))?;
            let g = guest
                .inspect()
                .await
                .map_err(|e| CliError::Io(format!("inspecting the guest: {e}")))?;
            Ok(Holds {
                attachments: h.attachments.len(),
                mounts: g.mounts.len(),
                guest_devices: Some(g.devices.len()),
            })
        }
    }
}
