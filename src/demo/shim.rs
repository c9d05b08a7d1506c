//! The demo's shim: a child process (`lunledger demo-shim`, spawned by `lunledger demo`) that
//! opens the manager on the journal and the VM (the persistent simulated VM, or the parent's
//! running QEMU VM through its QMP and guest agent sockets) and runs a scripted session for two
//! containers, printing one line per step. Its last line, `begin: ...`, announces the operation
//! during which the parent kills it with SIGKILL — a real crash, not a simulated one.

use crate::backend::sim::SimOp;
use crate::cli::fail::{CliError, CliResult, Outcome};
use crate::demo::backend::{self, Target};
use crate::demo::{BackendArg, DemoShimArgs};
use crate::model::{GuestOs, ManagerConfig};
use crate::{DiskRequest, Manager, Mount, MountConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The line prefix the parent waits for before it kills this process.
pub const BEGIN: &str = "begin:";

/// The line prefix saying the victim add completed before any kill (the parent reports it).
pub const FINISHED: &str = "the add finished before the kill";

/// The configuration the demo's shim and the recovering parent both open with (Linux).
pub fn config() -> ManagerConfig {
    config_for(GuestOs::Linux)
}

/// The configuration for `guest`: hcsshim's LCOW or WCOW defaults.
pub fn config_for(guest: GuestOs) -> ManagerConfig {
    match guest {
        GuestOs::Linux => ManagerConfig::lcow_default(),
        GuestOs::Windows => ManagerConfig::wcow_default(),
    }
}

/// Host path of the disk added during the kill (on the simulated VM).
pub const VICTIM_DISK: &str = "/scratch/c2-extra.vhdx";

/// Every disk the session adds, by its simulated-VM path, and whether it must already hold a
/// filesystem: the read-only layers (nothing formats a read-only disk). Scratch disks are blank
/// because their mounts ask for `ensure_filesystem` (the guest formats them); block-device and
/// attach-only disks are never mounted as filesystems. On QEMU each is a real file in the
/// demo's disk directory, named by [`image_file`].
pub const DISKS: &[(&str, bool)] = &[
    ("/images/layer-base.vhdx", true),
    ("/images/layer-app.vhdx", true),
    ("/scratch/c1.vhdx", false),
    ("/scratch/c2.vhdx", false),
    ("/dev/vg0/c1-data", false),
    ("/dev/vg0/c2-data", false),
    ("/images/c1-config.vhdx", false),
    ("/images/c2-config.vhdx", false),
    (VICTIM_DISK, false),
];

/// The image file standing for simulated-VM path `sim` in `dir`: `/dev/vg0/c1-data` becomes
/// `dir/dev-vg0-c1-data.img`. Absolute when `dir` is (QEMU resolves relative paths against its
/// own working directory).
pub fn image_file(dir: &Path, sim: &str) -> PathBuf {
    let stem = sim.trim_start_matches('/').replace('/', "-");
    let stem = stem.strip_suffix(".vhdx").unwrap_or(&stem);
    dir.join(format!("{stem}.img"))
}

/// Runs the shim.
pub fn run(a: &DemoShimArgs) -> CliResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::io("starting the async runtime", e))?;
    rt.block_on(session(a))
}

fn say(line: &str) {
    // stdout is a pipe to the parent: flush every line so it sees progress as it happens.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Where the session's disks are: the simulated VM's made-up paths, or image files.
struct Disks(Option<PathBuf>);

impl Disks {
    fn path(&self, sim: &str) -> String {
        match &self.0 {
            None => sim.to_string(),
            Some(dir) => image_file(dir, sim).display().to_string(),
        }
    }

    /// How a disk is shown: the image files' directory is long and the same for all of them.
    fn shown<'a>(&self, path: &'a str) -> &'a str {
        match &self.0 {
            None => path,
            Some(_) => path.rsplit('/').next().unwrap_or(path),
        }
    }
}

fn missing(what: &str) -> CliError {
    CliError::Usage(format!("demo-shim --backend qemu needs {what}"))
}

async fn session(a: &DemoShimArgs) -> CliResult {
    let latency = Duration::from_millis(a.latency_ms);
    let (target, disks) = match a.backend {
        BackendArg::Sim => {
            let state = a.sim_state.clone().ok_or_else(|| {
                CliError::Usage("demo-shim --backend sim needs --sim-state".into())
            })?;
            (Target::Sim { state, latency }, Disks(None))
        }
        BackendArg::Qemu => (
            Target::Qemu {
                qmp: a.qmp.clone().ok_or_else(|| missing("--qmp"))?,
                qga: a.qga.clone().ok_or_else(|| missing("--qga"))?,
            },
            Disks(Some(a.disks.clone().ok_or_else(|| missing("--disks"))?)),
        ),
    };
    let vm = backend::open(&target).await?;
    let sim = vm.sim.clone();
    let guest = a.guest.os();
    let m = Manager::open(&a.journal, config_for(guest), vm.host, vm.guest)
        .await
        .map_err(|e| CliError::Io(format!("opening the manager: {e}")))?;
    say(&format!(
        "shim pid {} opened the manager ({})",
        std::process::id(),
        match a.backend {
            BackendArg::Sim => format!("{} ms per VM call", a.latency_ms),
            BackendArg::Qemu => "QEMU over QMP and qemu-guest-agent".into(),
        }
    ));
    let t0 = Instant::now();
    // The two containers start together, as a shim would start them.
    let (c1, c2) = tokio::join!(
        container(&m, &disks, "c1", guest),
        container(&m, &disks, "c2", guest)
    );
    let (c1, c2) = (c1?, c2?);
    m.sync()
        .await
        .map_err(|e| CliError::Io(format!("sync: {e}")))?;
    say(&format!(
        "both containers running: {} handles, {} attachments, {} mounts ({} ms)",
        c1.len() + c2.len(),
        m.state().attachments.len(),
        m.state().mounts.len(),
        t0.elapsed().as_millis()
    ));
    if let Some(vm) = &sim {
        // A slow mount (10 x the latency) keeps the kill inside this add even when the parent
        // is slow to react (a loaded machine): the attach is done, the mount is in the VM's
        // hands.
        vm.set_op_latency(SimOp::Mount, latency * 10);
    }
    let victim = disks.path(VICTIM_DISK);
    say(&format!(
        "{BEGIN} c2 adds {} (scratch{})",
        disks.shown(&victim),
        if guest == GuestOs::Linux {
            ", ext4"
        } else {
            ""
        }
    ));
    let t = Instant::now();
    let r = m
        .add_virtual_disk(
            DiskRequest::new(&victim)
                .mount(scratch_mount(guest))
                .owner("c2"),
        )
        .await;
    // Normally the parent's SIGKILL lands before this point.
    say(&format!(
        "{FINISHED}: {} in {} ms",
        match r {
            Ok(h) => format!("handle {}", h.handle_id()),
            Err(e) => format!("error {e}"),
        },
        t.elapsed().as_millis()
    ));
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok(Outcome::Ok)
}

/// A scratch disk's mount: formatted ext4 on first use on Linux; a Windows guest takes no
/// filesystem options (hcsshim's WCOW), so a plain mount there.
fn scratch_mount(guest: GuestOs) -> MountConfig {
    if guest == GuestOs::Windows {
        return MountConfig::default();
    }
    MountConfig {
        ensure_filesystem: true,
        filesystem: "ext4".into(),
        ..MountConfig::default()
    }
}

/// One container's disks: two shared read-only layers, its scratch disk, a block device and an
/// attach-only disk.
async fn container(
    m: &Manager,
    disks: &Disks,
    owner: &str,
    guest: GuestOs,
) -> Result<Vec<Mount>, CliError> {
    let layer = |p: &str| {
        DiskRequest::new(disks.path(p))
            .read_only(true)
            .mount(MountConfig::default())
            .owner(owner)
    };
    let adds: Vec<(&str, DiskRequest, bool)> = vec![
        ("layer", layer("/images/layer-base.vhdx"), false),
        ("layer", layer("/images/layer-app.vhdx"), false),
        (
            "scratch",
            DiskRequest::new(disks.path(&format!("/scratch/{owner}.vhdx")))
                .mount(scratch_mount(guest))
                .owner(owner),
            false,
        ),
        (
            "block",
            DiskRequest::new(disks.path(&format!("/dev/vg0/{owner}-data")))
                // hcsshim's Windows guest ignores block_dev: ask for it on Linux only.
                .mount(MountConfig {
                    block_dev: guest == GuestOs::Linux,
                    ..MountConfig::default()
                })
                .owner(owner),
            true,
        ),
        (
            "attach",
            DiskRequest::new(disks.path(&format!("/images/{owner}-config.vhdx")))
                .read_only(true)
                .owner(owner),
            false,
        ),
    ];
    let mut held = Vec::new();
    for (what, req, physical) in adds {
        let disk = req.host_path.clone();
        let t = Instant::now();
        let r = if physical {
            m.add_physical_disk(req).await
        } else {
            m.add_virtual_disk(req).await
        };
        let h = r.map_err(|e| CliError::Io(format!("{owner}: add {disk}: {e}")))?;
        let ms = t.elapsed().as_millis();
        let refs = m
            .state()
            .attachments
            .get(&h.slot())
            .map(|a| a.refs)
            .unwrap_or(0);
        say(&format!(
            "{owner}  {what:<7} {:<26} handle {:<2} slot {:<4} {:<22} refs {refs}  {ms:>4} ms",
            disks.shown(&disk),
            h.handle_id(),
            h.slot().to_string(),
            if h.guest_path().is_empty() {
                "(attach only)"
            } else {
                h.guest_path()
            },
        ));
        held.push(h);
    }
    Ok(held)
}
