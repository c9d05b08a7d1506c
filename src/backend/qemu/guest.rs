//! [`QemuGuest`]: the guest side over qemu-guest-agent. Each call is one `guest-exec` of a
//! busybox shell script (see `guest_scripts`) that finds the disk by host:0:0:LUN, where
//! the host number is resolved from the controller's PCI address, and checks its serial. sdX
//! names are never trusted: the kernel hands them out in arrival order.

use super::controllers::ControllerMap;
use super::error::QemuError;
use super::guest_scan;
use super::guest_scripts;
use super::hooks::{self, SequenceHook};
use super::names;
use super::qga::{ExecOutput, QgaClient};
use crate::backend::{BackendError, GuestBackend, GuestView, MountRequest};
use async_trait::async_trait;
use lunledger_model::{ManagerConfig, Slot};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

/// Timeouts of a [`QemuGuest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QemuGuestOptions {
    /// Bound on the agent sync and on each agent command.
    pub command_timeout: Duration,
    /// How long mount waits for a hot-plugged disk to appear in the guest.
    pub device_timeout: Duration,
    /// Bound on one guest script (mkfs of a large disk under TCG is slow).
    pub exec_timeout: Duration,
}

impl Default for QemuGuestOptions {
    fn default() -> Self {
        QemuGuestOptions {
            command_timeout: Duration::from_secs(10),
            device_timeout: Duration::from_secs(10),
            exec_timeout: Duration::from_secs(120),
        }
    }
}

/// The guest backend for a QEMU VM running qemu-guest-agent (with busybox or coreutils).
#[derive(Debug)]
pub struct QemuGuest {
    qga: Mutex<QgaClient>,
    /// The agent client's epoch when we last made sure none of our scripts still ran in the
    /// guest (`u64::MAX`: never).
    drained: AtomicU64,
    controllers: ControllerMap,
    opts: QemuGuestOptions,
    hook: Option<SequenceHook>,
}

impl QemuGuest {
    /// Connects to the agent at `qga_socket`. `controllers` says where each controller sits on
    /// the PCI bus (from [`super::QemuHost::controller_map`]).
    pub async fn connect(
        qga_socket: impl AsRef<Path>,
        controllers: ControllerMap,
    ) -> Result<Self, BackendError> {
        QemuGuest::connect_with(qga_socket, controllers, QemuGuestOptions::default()).await
    }

    /// [`QemuGuest::connect`] with explicit timeouts.
    pub async fn connect_with(
        qga_socket: impl AsRef<Path>,
        controllers: ControllerMap,
        opts: QemuGuestOptions,
    ) -> Result<Self, BackendError> {
        let qga = QgaClient::connect(qga_socket, opts.command_timeout).await?;
        Ok(QemuGuest {
            qga: Mutex::new(qga),
            drained: AtomicU64::new(u64::MAX),
            controllers,
            opts,
            hook: None,
        })
    }

    /// Installs a test hook that makes the mount, unmount and unplug scripts pause at their
    /// inner steps (see [`super::hooks`]).
    pub fn with_sequence_hook(mut self, hook: SequenceHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Runs `/bin/sh -c script sh args...` in the guest (tests and diagnostics).
    pub async fn sh(&self, script: &str, args: &[&str]) -> Result<ExecOutput, QemuError> {
        let mut argv = vec!["-c", script, "sh"];
        argv.extend_from_slice(args);
        let mut qga = self.qga.lock().await;
        qga.exec("/bin/sh", &argv, self.opts.exec_timeout).await
    }

    /// The controllers' PCI addresses this guest backend maps slots with.
    pub fn controllers(&self) -> &ControllerMap {
        &self.controllers
    }

    fn pci(&self, slot: Slot) -> Result<String, QemuError> {
        names::check_slot(slot)?;
        self.controllers
            .get(slot.controller)
            .map(|a| a.to_string())
            .ok_or_else(|| {
                QemuError::Conflict(format!(
                    "controller {} ({}) is not on the VM's PCI bus",
                    slot.controller,
                    names::controller_id(slot.controller)
                ))
            })
    }

    /// Runs the script `name` and maps its exit code onto typed errors; a timeout names the
    /// script, so a hung agent says what it was doing.
    async fn run(&self, name: &str, script: &str, args: &[&str]) -> Result<String, QemuError> {
        let site = match name {
            "mount" => Some(hooks::GUEST_MOUNT),
            "unmount" => Some(hooks::GUEST_UNMOUNT),
            "unplug" => Some(hooks::GUEST_UNPLUG),
            _ => None,
        };
        let pause = match (&self.hook, site) {
            (Some(h), Some(site)) => h.pause(site),
            _ => Duration::ZERO,
        };
        let paused;
        let script = if pause.is_zero() {
            script
        } else {
            paused = format!("LL_PAUSE={:.3}\n{script}", pause.as_secs_f64());
            paused.as_str()
        };
        let mut argv = vec!["-c", script, "sh"];
        argv.extend_from_slice(args);
        let mut qga = self.qga.lock().await;
        self.drain(&mut qga).await?;
        let res = qga.exec("/bin/sh", &argv, self.opts.exec_timeout).await;
        drop(qga);
        let out = res.map_err(|e| match e {
            QemuError::Timeout { command, ms } => QemuError::Timeout {
                command: format!("{command} ({name} script)"),
                ms,
            },
            e => e,
        })?;
        let msg = out.stderr.trim().to_string();
        match out.exit_code {
            Some(0) => Ok(out.stdout),
            Some(12) => Err(QemuError::Unsupported(msg)),
            Some(13) | Some(21) => Err(QemuError::Conflict(msg)),
            code => Err(QemuError::GuestCommand {
                code: code.unwrap_or(-1),
                stderr: msg,
            }),
        }
    }

    /// Before our first script on a new agent connection, or after a script we gave up on,
    /// waits (up to `exec_timeout`) until none of our scripts still runs in the guest: a shim
    /// killed (or a call timed out) mid-script leaves it running, and what it does after we
    /// look (inspect) or act (unmount, unplug) would be missed or undone. The agent runs
    /// commands in the order received, so every leftover has started by the time this runs.
    async fn drain(&self, qga: &mut QgaClient) -> Result<(), QemuError> {
        qga.ensure_connected().await?;
        let epoch = qga.epoch();
        if self.drained.load(Ordering::Acquire) == epoch {
            return Ok(());
        }
        let limit = self.opts.exec_timeout;
        let tries = (limit.as_millis() / 20).max(1).to_string();
        let what = "guest agent: waiting for earlier lunledger guest scripts to end";
        let out = qga
            .exec(
                "/bin/sh",
                &["-c", guest_scripts::drain(), "sh", &tries],
                limit,
            )
            .await
            .map_err(|e| match e {
                QemuError::Timeout { ms, .. } => QemuError::Timeout {
                    command: what.to_string(),
                    ms,
                },
                e => e,
            })?;
        if !out.success() {
            return Err(QemuError::Timeout {
                command: format!("{what} ({} still running)", out.stderr.trim()),
                ms: super::error::millis(limit),
            });
        }
        // Our own exec may have reconnected meanwhile; that connection's leftovers are the ones
        // just waited for only if the epoch did not move again.
        if qga.epoch() == epoch {
            self.drained.store(epoch, Ordering::Release);
        }
        Ok(())
    }

    async fn mount_inner(&self, req: &MountRequest) -> Result<(), QemuError> {
        if req.spec.format_with_refs {
            return Err(QemuError::Unsupported(
                "ReFS formatting needs a Windows guest".to_string(),
            ));
        }
        check_guest_path(&req.path)?;
        let pci = self.pci(req.slot)?;
        let tries = (self.opts.device_timeout.as_millis() / 10)
            .max(1)
            .to_string();
        let flag = |b: bool| if b { "1" } else { "0" };
        let args = [
            pci.as_str(),
            &req.slot.lun.to_string(),
            &names::serial(req.attach),
            &tries,
            &req.path,
            &req.spec.partition.to_string(),
            flag(req.spec.read_only),
            flag(req.spec.block_dev),
            flag(req.spec.ensure_filesystem),
            &req.spec.filesystem,
            flag(req.spec.encrypted),
            &req.mount.to_string(),
            &req.spec.options.join(","),
        ];
        self.run("mount", &guest_scripts::mount(), &args)
            .await
            .map(|_| ())
    }

    async fn unmount_inner(&self, req: &MountRequest) -> Result<(), QemuError> {
        check_guest_path(&req.path)?;
        let flag = if req.spec.encrypted { "1" } else { "0" };
        self.run(
            "unmount",
            &guest_scripts::unmount(),
            &[&req.path, flag, &req.mount.to_string()],
        )
        .await
        .map(|_| ())
    }
}

/// Guest paths are absolute and free of characters /proc/mounts would escape, so what inspect
/// reports compares equal to what was asked.
fn check_guest_path(path: &str) -> Result<(), QemuError> {
    if !path.starts_with('/') || path == "/" || path.contains(['\n', '\t', ' ', '\\', '\0']) {
        return Err(QemuError::Unsupported(format!(
            "guest path {path:?} must be absolute, not /, and free of whitespace and backslashes"
        )));
    }
    Ok(())
}

#[async_trait]
impl GuestBackend for QemuGuest {
    async fn mount(&self, req: &MountRequest) -> Result<(), BackendError> {
        Ok(self.mount_inner(req).await?)
    }

    async fn unmount(&self, req: &MountRequest) -> Result<(), BackendError> {
        Ok(self.unmount_inner(req).await?)
    }

    async fn unplug(&self, slot: Slot) -> Result<(), BackendError> {
        let pci = self.pci(slot)?;
        self.run(
            "unplug",
            &guest_scripts::unplug(),
            &[&pci, &slot.lun.to_string()],
        )
        .await?;
        Ok(())
    }

    async fn check_config(&self, config: &ManagerConfig) -> Result<(), BackendError> {
        linux_only(config)?;
        let missing: Vec<String> = (0..config.controllers)
            .filter(|c| self.controllers.get(*c).is_none())
            .map(names::controller_id)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(BackendError::Mismatch(format!(
            "the guest backend's controller map (from QemuHost::controller_map, the PCI \
             addresses of virtio-scsi-pci devices with ids scsiN) has no {}: the configuration \
             names {} controllers",
            missing.join(", "),
            config.controllers
        )))
    }

    async fn inspect(&self) -> Result<GuestView, BackendError> {
        let report = self.run("inspect", &guest_scripts::inspect(), &[]).await?;
        Ok(guest_scan::parse(&report, &self.controllers))
    }
}

/// The QEMU guest backend drives a Linux guest (its agent scripts are shell, its paths POSIX):
/// a configuration for a Windows guest is a mismatch, refused before the journal is touched.
/// There is no Windows VM to test a Windows guest backend against.
fn linux_only(config: &ManagerConfig) -> Result<(), BackendError> {
    if config.guest != lunledger_model::GuestOs::Linux {
        return Err(BackendError::Mismatch(format!(
            "the QEMU guest backend serves Linux guests only; the configuration names a {} guest",
            config.guest
        )));
    }
    Ok(())
}

#[cfg(test)]
mod windows_tests {
    use super::*;

    #[test]
    fn a_windows_configuration_is_refused_as_a_mismatch() {
        assert!(linux_only(&ManagerConfig::lcow_default()).is_ok());
        let e = linux_only(&ManagerConfig::wcow_default());
        assert!(
            matches!(&e, Err(BackendError::Mismatch(m)) if m.contains("windows")),
            "{e:?}"
        );
    }
}
