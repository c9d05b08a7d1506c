//! The demo's shim: a child process (`lunledger demo-shim`, spawned by `lunledger demo`) that
//! opens the manager on the journal and the persistent simulated VM and runs a scripted session
//! for two containers, printing one line per step. Its last line, `begin: ...`, announces the
//! operation during which the parent kills it with SIGKILL — a real crash, not a simulated one.

use crate::args::DemoShimArgs;
use crate::fail::{CliError, CliResult, Outcome};
use lunledger::backend::sim::{SimOp, SimVm};
use lunledger::journal::ManagerConfig;
use lunledger::{DiskRequest, Manager, Mount, MountConfig};
use std::io::Write;
use std::time::{Duration, Instant};

/// The line prefix the parent waits for before it kills this process.
pub const BEGIN: &str = "begin:";

/// The configuration the demo's shim and the recovering parent both open with.
pub fn config() -> ManagerConfig {
    ManagerConfig::lcow_default()
}

/// Host path of the disk added during the kill.
pub const VICTIM_DISK: &str = "/scratch/c2-extra.vhdx";

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

async fn session(a: &DemoShimArgs) -> CliResult {
    let latency = Duration::from_millis(a.latency_ms);
    // The shim drives the simulated VM directly: it slows the victim's mount down below.
    let vm = SimVm::persistent(&a.sim_state).map_err(|e| CliError::Io(e.to_string()))?;
    vm.set_latency(latency);
    let m = Manager::open(&a.journal, config(), vm.host_backend(), vm.guest_backend())
        .await
        .map_err(|e| CliError::Io(format!("opening the manager: {e}")))?;
    say(&format!(
        "shim pid {} opened the manager ({} ms per VM call)",
        std::process::id(),
        a.latency_ms
    ));
    let t0 = Instant::now();
    // The two containers start together, as a shim would start them.
    let (c1, c2) = tokio::join!(container(&m, "c1"), container(&m, "c2"));
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
    // A slow mount (10 x the latency) keeps the kill inside this add even when the parent is
    // slow to react (a loaded machine): the attach is done, the mount is in the VM's hands.
    vm.set_op_latency(SimOp::Mount, latency * 10);
    say(&format!("{BEGIN} c2 adds {VICTIM_DISK} (scratch, ext4)"));
    let r = m
        .add_virtual_disk(
            DiskRequest::new(VICTIM_DISK)
                .mount(scratch_mount())
                .owner("c2"),
        )
        .await;
    // Normally the parent's SIGKILL lands before this point.
    say(&format!(
        "the add finished before the kill: {:?}",
        r.map(|h| h.handle_id())
    ));
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok(Outcome::Ok)
}

fn scratch_mount() -> MountConfig {
    MountConfig {
        ensure_filesystem: true,
        filesystem: "ext4".into(),
        ..MountConfig::default()
    }
}

/// One container's disks: two shared read-only layers, its scratch disk, a block device and an
/// attach-only disk.
async fn container(m: &Manager, owner: &str) -> Result<Vec<Mount>, CliError> {
    let layer = |p: &str| {
        DiskRequest::new(p)
            .read_only(true)
            .mount(MountConfig::default())
            .owner(owner)
    };
    let adds: Vec<(&str, DiskRequest, bool)> = vec![
        ("layer", layer("/images/layer-base.vhdx"), false),
        ("layer", layer("/images/layer-app.vhdx"), false),
        (
            "scratch",
            DiskRequest::new(format!("/scratch/{owner}.vhdx"))
                .mount(scratch_mount())
                .owner(owner),
            false,
        ),
        (
            "block",
            DiskRequest::new(format!("/dev/vg0/{owner}-data"))
                .mount(MountConfig {
                    block_dev: true,
                    ..MountConfig::default()
                })
                .owner(owner),
            true,
        ),
        (
            "attach",
            DiskRequest::new(format!("/images/{owner}-config.vhdx"))
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
        let refs = m
            .state()
            .attachments
            .get(&h.slot())
            .map(|a| a.refs)
            .unwrap_or(0);
        say(&format!(
            "{owner}  {what:<7} {disk:<26} handle {:<2} slot {:<4} {:<22} refs {refs}  {:>4} ms",
            h.handle_id(),
            h.slot().to_string(),
            if h.guest_path().is_empty() {
                "(attach only)"
            } else {
                h.guest_path()
            },
            t.elapsed().as_millis()
        ));
        held.push(h);
    }
    Ok(held)
}
