//! [`QemuVm`]: starts and stops a throw-away QEMU VM for tests and demos: q35 under TCG, N
//! `virtio-scsi-pci` controllers `scsi0..`, QMP on unix sockets and, optionally, a guest kernel
//! and initramfs running qemu-guest-agent (see `scripts/build-guest.sh`).
//!
//! QEMU runs daemonized (`-daemonize -pidfile`), so it outlives a client that is killed: that is
//! what crash tests need. It is stopped by pid, by [`QemuVm::stop`] or on drop.

use crate::backend::qemu::{QgaClient, QmpClient};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The QEMU binary used unless [`QemuVmOptions::qemu`] says otherwise.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// An error starting or stopping a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The QEMU binary is not installed.
    #[error("{binary} not found ({reason}): install it with scripts/install-qemu.sh (Debian: qemu-system-x86)")]
    QemuMissing {
        /// The binary looked for.
        binary: String,
        /// Why it could not run.
        reason: String,
    },
    /// The guest kernel or initramfs is missing.
    #[error("guest image missing: {0}: build it with scripts/build-guest.sh")]
    GuestImageMissing(String),
    /// QEMU refused to start.
    #[error("QEMU failed to start ({status}): {stderr}")]
    StartFailed {
        /// Its exit status.
        status: String,
        /// Its stderr.
        stderr: String,
    },
    /// QEMU exited while we waited for it.
    #[error("QEMU (pid {pid}) exited; console tail: {console}")]
    Died {
        /// Its pid.
        pid: i32,
        /// The last lines of the guest console, if any.
        console: String,
    },
    /// QMP or the guest agent did not answer in time.
    #[error("VM not ready within {ms} ms: {last}")]
    NotReady {
        /// The timeout.
        ms: u64,
        /// The last error seen.
        last: String,
    },
    /// A host I/O error (temp dir, pid file, kill).
    #[error("{0}")]
    Io(String),
}

/// A guest kernel and initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The kernel (`vmlinuz`).
    pub kernel: PathBuf,
    /// The initramfs (`initrd.gz`), whose /init starts qemu-ga.
    pub initrd: PathBuf,
}

impl GuestImage {
    /// `dir/vmlinuz` and `dir/initrd.gz`, as `scripts/build-guest.sh dir` writes them; an error
    /// naming the missing file (and the script to run) otherwise.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, VmError> {
        let dir = dir.as_ref();
        let image = GuestImage {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.gz"),
        };
        for f in [&image.kernel, &image.initrd] {
            if !f.is_file() {
                return Err(VmError::GuestImageMissing(f.display().to_string()));
            }
        }
        Ok(image)
    }
}

/// How to start a [`QemuVm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuVmOptions {
    /// Number of `virtio-scsi-pci` controllers, with ids `scsi0..`.
    pub controllers: u32,
    /// A guest to boot; `None` starts the VM paused (`-S`) with no OS, which is enough for all
    /// host-side (QMP) work.
    pub guest: Option<GuestImage>,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Extra arguments, appended last.
    pub extra_args: Vec<String>,
}

impl Default for QemuVmOptions {
    fn default() -> Self {
        QemuVmOptions {
            controllers: 4,
            guest: None,
            memory_mib: 512,
            qemu: PathBuf::from(DEFAULT_QEMU),
            extra_args: Vec::new(),
        }
    }
}

/// A running QEMU process and its private directory (sockets, pid file, console log).
#[derive(Debug)]
pub struct QemuVm {
    dir: PathBuf,
    pid: Option<i32>,
    has_guest: bool,
}

impl QemuVm {
    /// Starts QEMU daemonized and returns once it has written its pid file (QMP may still be
    /// coming up: see [`QemuVm::wait_ready`]).
    pub async fn start(opts: QemuVmOptions) -> Result<Self, VmError> {
        if let Some(g) = &opts.guest {
            for f in [&g.kernel, &g.initrd] {
                if !f.is_file() {
                    return Err(VmError::GuestImageMissing(f.display().to_string()));
                }
            }
        }
        let dir = make_private_dir()?;
        // From here on, dropping `vm` removes the directory (and the process, once known).
        let mut vm = QemuVm {
            dir,
            pid: None,
            has_guest: opts.guest.is_some(),
        };
        let args = vm.args(&opts);
        let out = tokio::process::Command::new(&opts.qemu)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    VmError::QemuMissing {
                        binary: opts.qemu.display().to_string(),
                        reason: e.to_string(),
                    }
                } else {
                    VmError::Io(format!("cannot run {}: {e}", opts.qemu.display()))
                }
            })?;
        if !out.status.success() {
            return Err(VmError::StartFailed {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let pidfile = vm.dir.join("qemu.pid");
        let text = std::fs::read_to_string(&pidfile)
            .map_err(|e| VmError::Io(format!("cannot read {}: {e}", pidfile.display())))?;
        let pid = text
            .trim()
            .parse::<i32>()
            .map_err(|e| VmError::Io(format!("bad pid file {}: {e}", pidfile.display())))?;
        vm.pid = Some(pid);
        Ok(vm)
    }

    fn args(&self, opts: &QemuVmOptions) -> Vec<String> {
        let p = |name: &str| self.dir.join(name).display().to_string();
        let mut a: Vec<String> = [
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-nodefaults",
            "-nographic",
            "-display",
            "none",
            "-smp",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(["-m".to_string(), opts.memory_mib.to_string()]);
        for sock in ["qmp.sock", "qmp-aux.sock"] {
            a.extend([
                "-qmp".to_string(),
                format!("unix:{},server=on,wait=off", p(sock)),
            ]);
        }
        for c in 0..opts.controllers {
            a.extend(["-device".to_string(), format!("virtio-scsi-pci,id=scsi{c}")]);
        }
        match &opts.guest {
            None => a.push("-S".to_string()),
            Some(g) => {
                a.extend([
                    "-kernel".to_string(),
                    g.kernel.display().to_string(),
                    "-initrd".to_string(),
                    g.initrd.display().to_string(),
                    "-append".to_string(),
                    "console=ttyS0 panic=-1 quiet loglevel=4".to_string(),
                    "-no-reboot".to_string(),
                    "-chardev".to_string(),
                    format!("file,id=con0,path={}", p("console.log")),
                    "-serial".to_string(),
                    "chardev:con0".to_string(),
                    "-device".to_string(),
                    "virtio-serial-pci,id=vser0".to_string(),
                    "-chardev".to_string(),
                    format!("socket,id=qga0,path={},server=on,wait=off", p("qga.sock")),
                    "-device".to_string(),
                    "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0"
                        .to_string(),
                ]);
            }
        }
        a.extend([
            "-pidfile".to_string(),
            p("qemu.pid"),
            "-daemonize".to_string(),
        ]);
        a.extend(opts.extra_args.iter().cloned());
        a
    }

    /// Waits until QMP answers and, with a guest, until qemu-ga answers a sync (a TCG boot takes
    /// ~3 s; 60 s is a generous bound). Fails early if QEMU exits.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), VmError> {
        let start = Instant::now();
        let attempt = Duration::from_secs(2);
        let mut last: String;
        loop {
            if !self.is_alive() {
                return Err(self.died());
            }
            match QmpClient::connect(self.qmp_socket(), attempt).await {
                Ok(_) => break,
                Err(e) => last = e.to_string(),
            }
            if start.elapsed() >= timeout {
                return Err(VmError::NotReady {
                    ms: millis(timeout),
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let Some(qga) = self.qga_socket() else {
            return Ok(());
        };
        loop {
            if !self.is_alive() {
                return Err(self.died());
            }
            match QgaClient::connect(&qga, attempt).await {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            if start.elapsed() >= timeout {
                return Err(VmError::NotReady {
                    ms: millis(timeout),
                    last,
                });
            }
            // A refused connect returns at once; do not spin on it.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The QMP socket for the backend ([`crate::backend::qemu::QemuHost`]). QEMU serves one
    /// client per monitor.
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }

    /// A second QMP monitor, for observers (tests) while the backend holds the first.
    pub fn aux_qmp_socket(&self) -> PathBuf {
        self.dir.join("qmp-aux.sock")
    }

    /// The guest agent socket, when a guest was booted.
    pub fn qga_socket(&self) -> Option<PathBuf> {
        self.has_guest.then(|| self.dir.join("qga.sock"))
    }

    /// The guest console log, when a guest was booted.
    pub fn console_log(&self) -> Option<PathBuf> {
        self.has_guest.then(|| self.dir.join("console.log"))
    }

    /// The VM's private directory (removed by [`QemuVm::stop`]).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// QEMU's pid, until stopped.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// Whether the QEMU process is alive (a zombie waiting to be reaped counts as dead).
    pub fn is_alive(&self) -> bool {
        self.pid.is_some_and(pid_alive)
    }

    /// Kills QEMU (SIGKILL, by pid, after checking the pid is still this VM's QEMU), waits for it
    /// to die and removes the directory. Idempotent.
    pub fn stop(&mut self) -> Result<(), VmError> {
        if let Some(pid) = self.pid {
            if pid_alive(pid) && self.owns(pid) {
                // SAFETY: kill(2) with a pid we started and just verified; no memory is involved.
                let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
                if rc != 0 {
                    let err = std::io::Error::last_os_error();
                    if err.raw_os_error() != Some(libc::ESRCH) {
                        return Err(VmError::Io(format!("kill {pid}: {err}")));
                    }
                }
                let start = Instant::now();
                while pid_alive(pid) && start.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            self.pid = None;
        }
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VmError::Io(format!(
                "cannot remove {}: {e}",
                self.dir.display()
            ))),
        }
    }

    /// Whether `pid`'s command line names our directory (guards against pid reuse).
    fn owns(&self, pid: i32) -> bool {
        let dir = self.dir.display().to_string();
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&dir))
            .unwrap_or(false)
    }

    fn died(&self) -> VmError {
        let console = self
            .console_log()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|s| {
                let lines: Vec<&str> = s.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            })
            .unwrap_or_default();
        VmError::Died {
            pid: self.pid.unwrap_or(-1),
            console,
        }
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "stopping QEMU on drop failed");
        }
    }
}

/// Alive unless /proc has no entry or its state is Z (zombie) or X (dead): `kill(pid, 0)`
/// succeeds on a zombie, and an orphaned daemon is reaped by init only lazily.
pub fn pid_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ..." where comm may itself contain parentheses and spaces.
    match stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
    {
        Some(state) => state != "Z" && state != "X",
        None => false,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A fresh 0700 directory under the temp dir. Kept short: unix socket paths max out at 107 bytes.
fn make_private_dir() -> Result<PathBuf, VmError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    for _ in 0..100 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("llvm-{}-{n}-{nanos:x}", std::process::id()));
        match std::fs::DirBuilder::new().mode_0700().create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(VmError::Io(format!("cannot create {}: {e}", dir.display()))),
        }
    }
    Err(VmError::Io(format!(
        "cannot create a private directory under {}",
        base.display()
    )))
}

/// `DirBuilder::mode` via the unix extension trait, named for readability above.
trait Mode0700 {
    fn mode_0700(&mut self) -> &mut Self;
}

impl Mode0700 for std::fs::DirBuilder {
    fn mode_0700(&mut self) -> &mut Self {
        std::os::unix::fs::DirBuilderExt::mode(self, 0o700)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_pid_is_alive_and_bogus_pid_is_not() {
        assert!(pid_alive(std::process::id() as i32));
        assert!(!pid_alive(i32::MAX));
    }

    #[test]
    fn missing_guest_image_names_the_script() {
        let e = GuestImage::from_dir("/nonexistent-ll").unwrap_err();
        assert!(e.to_string().contains("scripts/build-guest.sh"), "{e}");
    }
}
