//! `lunledger demo`: the crash-and-recover story end to end, on the persistent simulated VM or
//! on a real QEMU VM (`--backend qemu`: TCG, a small guest running qemu-guest-agent).
//!
//! 1. A child shim process (`demo-shim`) opens the manager and sets up two containers.
//! 2. While it is in the middle of one more add, this process kills it with SIGKILL. The VM
//!    (the simulated VM's state file, or the daemonized QEMU) outlives it.
//! 3. This process opens the manager on the same journal and the same VM: recovery runs.
//! 4. It takes the containers' handles back by owner, releases them, closes the manager and
//!    checks that the journal's state and the VM (asked directly) are both empty (exit 0), else
//!    exit 1. QEMU is stopped and the disk images removed whatever happened.

use crate::audit::Auditor;
use crate::cli::fail::{CliError, CliResult, Outcome};
use crate::cli::rows;
use crate::cli::snapshot;
use crate::cli::style;
use crate::cli::table::Table;
use crate::cli::view::{indent, StateView};
use crate::demo::backend::{self, Holds, QemuPrereqs, Target};
use crate::demo::shim::{self, BEGIN, FINISHED};
use crate::demo::{BackendArg, DemoArgs, GuestArg};
use crate::{Manager, RecoveryReport};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How many audit lines the demo shows at the end.
const TAIL: usize = 25;

/// Size of each QEMU disk image (sparse: only what mkfs writes takes space).
const IMAGE_BYTES: u64 = 16 << 20;

/// Size of the victim's image: formatting it in the guest takes long enough under TCG that the
/// kill reliably lands inside its mount.
const VICTIM_BYTES: u64 = 512 << 20;

/// When the parent kills the QEMU shim, after its `begin:` line.
const QEMU_KILL_MS: u64 = 60;

/// Runs the demo.
pub fn run(a: &DemoArgs) -> CliResult {
    let started = Instant::now();
    // Refuse an unavailable backend before creating or starting anything.
    if a.guest == GuestArg::Windows && a.backend == BackendArg::Qemu {
        return Err(CliError::Usage(
            "--guest windows runs on the simulated VM only: there is no Windows VM here, and the QEMU backend serves Linux guests".into(),
        ));
    }
    let prereqs = backend::check(a.backend)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::io("starting the async runtime", e))?;
    heading("lunledger demo: a shim crash in the middle of an add, and recovery");
    match prereqs {
        None => {
            let (journal, sim_state) = work_paths(a.journal.as_deref(), "sim-vm.json", false)?;
            println!("journal:      {}", journal.display());
            println!(
                "simulated VM: {} (a {} guest; outlives the shim)",
                sim_state.display(),
                a.guest.as_str()
            );
            // The VM's file is made here so that its guest OS is the demo's.
            crate::backend::sim::SimVm::persistent_with_guest(&sim_state, a.guest.os())
                .map_err(|e| CliError::Io(e.to_string()))?;
            let target = Target::Sim {
                state: sim_state,
                latency: Duration::ZERO,
            };
            story(&rt, a, &journal, &target, None, started)
        }
        Some(p) => run_qemu(&rt, a, &p, started),
    }
}

/// The QEMU demo: disk images, a booted VM, the story, then QEMU stopped and the images removed
/// on every path (an error or a panic included: `QemuVm` stops QEMU on drop).
fn run_qemu(
    rt: &tokio::runtime::Runtime,
    a: &DemoArgs,
    p: &QemuPrereqs,
    started: Instant,
) -> CliResult {
    let (journal, disks) = work_paths(a.journal.as_deref(), "disks", true)?;
    println!("journal:      {}", journal.display());
    println!("disk images:  {} (removed at the end)", disks.display());
    // QEMU runs daemonized in its own session, so Ctrl-C does not reach it: catch Ctrl-C here
    // (only a flag) so this process lives on to stop it.
    crate::cli::interrupt::install();
    let result = make_images(&p.mkfs, &disks).and_then(|()| {
        let (mut vm, boot) = rt.block_on(backend::start_qemu(p))?;
        if crate::cli::interrupt::requested() {
            return Err(CliError::Io("interrupted".into()));
        }
        println!(
            "QEMU VM:      pid {} (TCG, guest agent up after {:.1} s; outlives the shim)",
            vm.pid().unwrap_or(-1),
            boot.as_secs_f64()
        );
        let r = backend::qemu_target(&vm).and_then(|t| {
            if let Target::Qemu { qmp, qga } = &t {
                println!("              QMP {}", qmp.display());
                println!("              guest agent {}", qga.display());
            }
            story(rt, a, &journal, &t, Some(&disks), started)
        });
        // Stop QEMU whatever the story's outcome. A VM that may still run is not a pass: the
        // story's own error wins, else the stop's.
        let pid = vm.pid();
        match vm.stop() {
            Ok(()) => {
                println!("\nQEMU pid {} stopped", pid.unwrap_or(-1));
                r
            }
            Err(e) => {
                println!("{}", style::red(&format!("stopping QEMU: {e}")));
                r.and(Err(CliError::Io(format!("stopping QEMU: {e}"))))
            }
        }
    });
    if let Err(e) = std::fs::remove_dir_all(&disks) {
        if e.kind() != std::io::ErrorKind::NotFound {
            println!(
                "{}",
                style::red(&format!("removing {}: {e}", disks.display()))
            );
        }
    }
    result
}

/// The disk image files the shim adds on QEMU: sparse files, the read-only layers formatted
/// ext4 here (nothing formats a read-only disk), the rest blank (scratch mounts are formatted in
/// the guest by `ensure_filesystem`).
fn make_images(mkfs: &Path, dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::io(format!("creating {}", dir.display()), e))?;
    for (sim, formatted) in shim::DISKS {
        let f = shim::image_file(dir, sim);
        let file = std::fs::File::create(&f)
            .map_err(|e| CliError::io(format!("creating {}", f.display()), e))?;
        let bytes = if *sim == shim::VICTIM_DISK {
            VICTIM_BYTES
        } else {
            IMAGE_BYTES
        };
        file.set_len(bytes)
            .map_err(|e| CliError::io(format!("sizing {}", f.display()), e))?;
        drop(file);
        if *formatted {
            let out = Command::new(mkfs)
                .args(["-F", "-q"])
                .arg(&f)
                .output()
                .map_err(|e| CliError::io(format!("running {}", mkfs.display()), e))?;
            if !out.status.success() {
                return Err(CliError::Io(format!(
                    "{} {} failed ({}): {}",
                    mkfs.display(),
                    f.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
    }
    Ok(())
}

/// Steps 1 to 7 on the VM at `target`.
fn story(
    rt: &tokio::runtime::Runtime,
    a: &DemoArgs,
    journal: &Path,
    target: &Target,
    disks: Option<&Path>,
    started: Instant,
) -> CliResult {
    heading("1. the shim sets up two containers");
    let end = run_shim(a, journal, target, disks)?;
    if crate::cli::interrupt::requested() {
        // Ctrl-C killed the shim (same process group); stop here so QEMU is stopped promptly.
        return Err(CliError::Io("interrupted".into()));
    }
    let Some(pid) = end.killed else {
        println!("{}", style::red("the shim ended before it could be killed"));
        return Ok(Outcome::Problem);
    };
    println!(
        "{}",
        style::yellow(&format!(
            "parent: sent SIGKILL to shim pid {pid} {} after that add began",
            end.after
                .map(|d| format!("{} ms", d.as_millis()))
                .unwrap_or_default()
        ))
    );
    if end.finished_first {
        println!(
            "{}",
            style::yellow(
                "parent: the add had already finished when the kill landed: recovery has nothing to roll back, and c2's extra disk is released with the rest"
            )
        );
    }
    heading("2. what recovery will do (lunledger recover --dry-run, on a copy)");
    let snap = snapshot::open(journal, false, None)?;
    let policy = crate::recovery::RecoveryPolicy::default();
    let sim = match target {
        Target::Sim { state, .. } => Some(state.as_path()),
        // The dry run reads only the journal; recovery itself asks QEMU and the guest below.
        Target::Qemu { .. } => None,
    };
    let (plan, _) = crate::cli::plan::plan_text(&snap, sim, &policy, false)?;
    drop(snap);
    print!("{}", indent(&plan));
    let empty = rt.block_on(recover_and_clean(journal, target, a.guest))?;
    print_trail(journal)?;
    println!(
        "\nAudit it yourself: lunledger replay {}   (or status / verify)",
        journal.display()
    );
    let verdict = if empty {
        style::green("PASS: journal state and VM are empty")
    } else {
        style::red("FAIL: something is left attached, mounted or held")
    };
    println!("{verdict} ({} ms)", started.elapsed().as_millis());
    Ok(Outcome::problem_if(!empty))
}

fn heading(s: &str) {
    println!("\n{}", style::bold(s));
}

/// The journal directory and the VM's file (`aside`: the simulated VM's state file, or the QEMU
/// disk image directory): inside a new kept temporary directory, or the given journal with the
/// VM's file next to it (`DIR.aside`).
fn work_paths(
    journal: Option<&Path>,
    aside: &str,
    absolute: bool,
) -> Result<(PathBuf, PathBuf), CliError> {
    let (j, other) = match journal {
        Some(j) => {
            let name = j
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "journal".into());
            let other = j.with_file_name(format!("{name}.{aside}"));
            std::fs::create_dir_all(j)
                .map_err(|e| CliError::io(format!("creating {}", j.display()), e))?;
            (j.to_path_buf(), other)
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix("lunledger-demo-")
                .tempdir()
                .map_err(|e| CliError::io("creating a work directory", e))?
                .keep();
            (dir.join("journal"), dir.join(aside))
        }
    };
    if !absolute {
        return Ok((j, other));
    }
    // QEMU opens disk files itself, from its own working directory ("/" once daemonized).
    let j = std::path::absolute(&j)
        .map_err(|e| CliError::io(format!("resolving {}", j.display()), e))?;
    let other = std::path::absolute(&other)
        .map_err(|e| CliError::io(format!("resolving {}", other.display()), e))?;
    Ok((j, other))
}

/// How the shim ended.
struct ShimEnd {
    /// The pid killed, or `None` when the shim ended on its own.
    killed: Option<u32>,
    /// How long after the `begin:` line the kill was sent.
    after: Option<Duration>,
    /// The shim said the add completed before the kill.
    finished_first: bool,
}

/// Spawns the shim, echoes its lines, and kills it half way through the operation it announces.
fn run_shim(
    a: &DemoArgs,
    journal: &Path,
    target: &Target,
    disks: Option<&Path>,
) -> Result<ShimEnd, CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::io("finding this executable", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("demo-shim")
        .arg("--journal")
        .arg(journal)
        .args(["--guest", a.guest.as_str()]);
    match target {
        Target::Sim { state, .. } => {
            cmd.args(["--backend", "sim", "--sim-state"])
                .arg(state)
                .arg("--latency-ms")
                .arg(a.latency_ms.to_string());
        }
        Target::Qemu { qmp, qga } => {
            cmd.args(["--backend", "qemu", "--qmp"])
                .arg(qmp)
                .arg("--qga")
                .arg(qga)
                .arg("--disks")
                .arg(disks.unwrap_or(Path::new("")));
        }
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CliError::io("starting the demo shim", e))?;
    let pid = child.id();
    let out = child
        .stdout
        .take()
        .ok_or_else(|| CliError::Io("the demo shim has no stdout".into()))?;
    let mut end = ShimEnd {
        killed: None,
        after: None,
        finished_first: false,
    };
    for line in BufReader::new(out).lines() {
        let line = line.map_err(|e| CliError::io("reading the demo shim", e))?;
        println!("  shim | {line}");
        if line.starts_with(FINISHED) {
            end.finished_first = true;
        }
        if line.starts_with(BEGIN) && end.killed.is_none() {
            let begun = Instant::now();
            std::thread::sleep(kill_delay(a, target));
            // SAFETY: kill(2) with a pid we spawned and have not reaped has no memory-safety
            // preconditions; the pid cannot be reused before we wait for it.
            let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            if rc != 0 {
                return Err(CliError::io(
                    "killing the demo shim",
                    std::io::Error::last_os_error(),
                ));
            }
            end.killed = Some(pid);
            end.after = Some(begun.elapsed());
        }
    }
    let status = child
        .wait()
        .map_err(|e| CliError::io("waiting for the demo shim", e))?;
    if end.killed.is_none() {
        println!("  shim exited: {status}");
    }
    Ok(end)
}

/// How long after `begin:` to kill.
fn kill_delay(a: &DemoArgs, target: &Target) -> Duration {
    match target {
        // Past the add's attach (one latency), inside its mount (slowed down by the shim): the
        // mount's intent is durable, its outcome is not.
        Target::Sim { .. } => Duration::from_millis(a.latency_ms * 3 / 2),
        // On QEMU (TCG) the add's QMP attach takes ~15 ms and its mount, which formats the
        // victim's larger image in the guest first, a few hundred: 60 ms lands in the mount. On
        // a slow machine it may land in the attach instead, which is a crash just as well.
        Target::Qemu { .. } => Duration::from_millis(QEMU_KILL_MS),
    }
}

/// Steps 3 and 4: recover, take the handles back, release them, close, check emptiness.
async fn recover_and_clean(
    journal: &Path,
    target: &Target,
    guest: GuestArg,
) -> Result<bool, CliError> {
    heading("3. a new shim opens the same journal and VM: recovery runs in open");
    // The shim is dead and reaped: its QMP and agent connections are closed, so ours are the
    // only ones.
    let vm = backend::open(target).await?;
    let sim = vm.sim.clone();
    let m = Manager::open(journal, shim::config_for(guest.os()), vm.host, vm.guest)
        .await
        .map_err(|e| CliError::Io(format!("reopening the manager: {e}")))?;
    match m.last_recovery() {
        Some(r) => print!("{}", indent(&describe_recovery(&r)),),
        None => println!("  (no recovery report)"),
    }
    heading("4. the restarted shim takes its containers' handles back");
    let mut t = Table::new(&["OWNER", "HANDLE", "SLOT", "PATH"]);
    for owner in ["c1", "c2"] {
        for h in m.handles_by_owner(owner) {
            t.row(vec![
                owner.to_string(),
                h.handle_id().to_string(),
                h.slot().to_string(),
                if h.guest_path().is_empty() {
                    "(attach only)".into()
                } else {
                    h.guest_path().to_string()
                },
            ]);
        }
    }
    print!("{}", indent(&t.render()));
    heading("5. both containers stop: release everything by owner");
    for owner in ["c1", "c2"] {
        let t = Instant::now();
        match m.release_owner(owner).await {
            Ok(n) => println!(
                "  {owner}: released {n} handle(s) in {} ms",
                t.elapsed().as_millis()
            ),
            Err(e) => println!("  {}", style::red(&format!("{owner}: release failed: {e}"))),
        }
    }
    let st = m.state();
    let view = StateView::of(&st, None);
    m.close()
        .await
        .map_err(|e| CliError::Io(format!("closing the manager: {e}")))?;
    // Closing the manager dropped its connections: the probe below opens its own.
    let holds = backend::holds(target, sim.as_ref()).await?;
    println!("\n  final state:");
    print!("{}", indent(&indent(&view.render())));
    println!("  {}", describe_holds(target, &holds));
    Ok(view.is_empty() && holds.is_empty())
}

/// What the VM holds, as the VM itself says.
fn describe_holds(target: &Target, h: &Holds) -> String {
    match target {
        Target::Sim { .. } => format!(
            "simulated VM: {} attachment(s), {} mount(s)",
            h.attachments, h.mounts
        ),
        Target::Qemu { .. } => format!(
            "QEMU VM: {} disk(s) attached (QMP), {} mount(s) and {} SCSI disk(s) in the guest (guest agent)",
            h.attachments,
            h.mounts,
            h.guest_devices.unwrap_or(0)
        ),
    }
}

/// A recovery report for people.
fn describe_recovery(r: &RecoveryReport) -> String {
    let mut s = String::new();
    let list = |v: &[u64]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter()
                .map(|o| format!("op {o}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    s.push_str(&format!(
        "rebuilt state from {} record(s){}{}\n",
        r.records_replayed,
        r.checkpoint_seq
            .map(|c| format!(" after the checkpoint at seq {c}"))
            .unwrap_or_default(),
        r.tail_quarantined
            .as_deref()
            .map(|t| format!("; damaged tail set aside: {t}"))
            .unwrap_or_default()
    ));
    s.push_str(&format!(
        "inspected the VM: host {}, guest {}\n",
        yes(r.inspected.host),
        yes(r.inspected.guest)
    ));
    s.push_str(&format!("planned {} action(s)\n", r.plan.len()));
    for settled in &r.resolved {
        let (step, res) = (settled.step, settled.resolution);
        s.push_str(&format!(
            "resolved:  {step} on {} -> {res:?} ({})\n",
            match settled.target {
                crate::model::Target::Slot(sl) => format!("slot {sl}"),
                crate::model::Target::Mount(mo) => format!("mount {mo}"),
            },
            if settled.asked_vm {
                "asked the VM"
            } else {
                "assumed"
            }
        ));
    }
    s.push_str(&style::yellow(&format!(
        "rolled back: {}\n",
        list(&r.rolled_back)
    )));
    s.push_str(&format!(
        "releases finished: {}\n",
        list(&r.releases_finished)
    ));
    s.push_str(&format!("operations closed: {}\n", list(&r.closed)));
    s.push_str(&format!(
        "teardown steps done: {}; still due: {}\n",
        r.teardowns_done,
        if r.teardowns_pending.is_empty() {
            "none".to_string()
        } else {
            r.teardowns_pending.join("; ")
        }
    ));
    s.push_str(&format!(
        "drift: {}\n",
        if r.drift.is_empty() {
            "none".to_string()
        } else {
            r.drift
                .iter()
                .map(crate::audit::describe_drift)
                .collect::<Vec<_>>()
                .join("; ")
        }
    ));
    for e in &r.errors {
        s.push_str(&style::red(&format!("error: {e}\n")));
    }
    s.push_str(&format!(
        "live handles after recovery: {}; recovery took {:.1} ms\n",
        r.live_handles,
        r.duration.as_secs_f64() * 1000.0
    ));
    s
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The interrupted add and its rollback, then the last records of the journal, as `replay`
/// shows them.
fn print_trail(journal: &Path) -> Result<(), CliError> {
    let snap = snapshot::open(journal, false, None)?;
    let hist = snapshot::history(&snap, None)?;
    let mut auditor = Auditor::new(hist.start.clone());
    auditor.learn_handles(&hist.records);
    let mut rows = Vec::new();
    for rec in &hist.records {
        match auditor.push(rec) {
            Ok(r) => rows.push(r),
            Err(e) => return Err(CliError::Io(format!("folding the journal: {}", e.what))),
        }
    }
    // The operations recovery rolled back, and the recovery operations themselves.
    let rolled: Vec<u64> = rows
        .iter()
        .filter(|r| r.outcome == Some("rolled-back"))
        .map(|r| r.op)
        .collect();
    let story: Vec<_> = rows
        .iter()
        .filter(|r| rolled.contains(&r.op) || r.op_kind == Some("recovery"))
        .cloned()
        .collect();
    heading("6. the interrupted add and its rollback, from the audit trail");
    if story.is_empty() {
        // The add finished before the kill: nothing was interrupted, recovery only checked.
        println!("  nothing was rolled back or repaired: no operation was cut short");
    } else {
        print!("{}", rows::table(&story));
    }
    heading(&format!("7. the audit trail (last {TAIL} records)"));
    let skip = rows.len().saturating_sub(TAIL);
    print!("{}", rows::table(&rows[skip..]));
    Ok(())
}
