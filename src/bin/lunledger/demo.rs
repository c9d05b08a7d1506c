//! `lunledger demo`: the crash-and-recover story end to end on the persistent simulated VM.
//!
//! 1. A child shim process (`demo-shim`) opens the manager and sets up two containers.
//! 2. While it is in the middle of one more add, this process kills it with SIGKILL.
//! 3. This process opens the manager on the same journal and the same VM: recovery runs.
//! 4. It takes the containers' handles back by owner, releases them, closes the manager and
//!    checks that the journal's state and the VM are both empty (exit 0), else exit 1.

use crate::args::DemoArgs;
use crate::audit::Auditor;
use crate::backend;
use crate::demo_shim::{self, BEGIN};
use crate::fail::{CliError, CliResult, Outcome};
use crate::history;
use crate::snapshot;
use crate::style;
use crate::table::Table;
use crate::trail;
use crate::view::{indent, StateView};
use lunledger::{Manager, RecoveryReport};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How many audit lines the demo shows at the end.
const TAIL: usize = 25;

/// Runs the demo.
pub fn run(a: &DemoArgs) -> CliResult {
    let started = Instant::now();
    // Refuse an unavailable backend before creating or starting anything.
    backend::check(a.backend)?;
    let (journal, sim_state) = work_paths(a.journal.as_deref())?;
    heading("lunledger demo: a shim crash in the middle of an add, and recovery");
    println!("journal:      {}", journal.display());
    println!("simulated VM: {} (outlives the shim)", sim_state.display());
    heading("1. the shim sets up two containers");
    let killed = run_shim(&journal, &sim_state, a.latency_ms)?;
    let Some(pid) = killed else {
        println!("{}", style::red("the shim ended before it could be killed"));
        return Ok(Outcome::Problem);
    };
    println!(
        "{}",
        style::yellow(&format!(
            "parent: sent SIGKILL to shim pid {pid} in the middle of that add"
        ))
    );
    heading("2. what recovery will do (lunledger recover --dry-run, on a copy)");
    let snap = snapshot::open(&journal, false)?;
    let policy = lunledger::recovery::RecoveryPolicy::default();
    let (plan, _) = crate::dry_run::plan_text(&snap, Some(&sim_state), &policy, false)?;
    drop(snap);
    print!("{}", indent(&plan));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::io("starting the async runtime", e))?;
    let empty = rt.block_on(recover_and_clean(a, &journal, &sim_state))?;
    print_trail(&journal)?;
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

/// The journal directory and the VM state file: inside a new kept temporary directory, or the
/// given journal with the VM file next to it.
fn work_paths(journal: Option<&Path>) -> Result<(PathBuf, PathBuf), CliError> {
    match journal {
        Some(j) => {
            let name = j
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "journal".into());
            let sim = j.with_file_name(format!("{name}.sim-vm.json"));
            std::fs::create_dir_all(j)
                .map_err(|e| CliError::io(format!("creating {}", j.display()), e))?;
            Ok((j.to_path_buf(), sim))
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix("lunledger-demo-")
                .tempdir()
                .map_err(|e| CliError::io("creating a work directory", e))?
                .keep();
            Ok((dir.join("journal"), dir.join("sim-vm.json")))
        }
    }
}

/// Spawns the shim, echoes its lines, and kills it half way through the operation it announces.
/// Returns the killed pid, or `None` when the shim ended on its own.
fn run_shim(journal: &Path, sim_state: &Path, latency_ms: u64) -> Result<Option<u32>, CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::io("finding this executable", e))?;
    let mut child = Command::new(exe)
        .arg("demo-shim")
        .arg("--journal")
        .arg(journal)
        .arg("--sim-state")
        .arg(sim_state)
        .arg("--latency-ms")
        .arg(latency_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CliError::io("starting the demo shim", e))?;
    let pid = child.id();
    let out = child
        .stdout
        .take()
        .ok_or_else(|| CliError::Io("the demo shim has no stdout".into()))?;
    let mut killed = None;
    for line in BufReader::new(out).lines() {
        let line = line.map_err(|e| CliError::io("reading the demo shim", e))?;
        println!("  shim | {line}");
        if line.starts_with(BEGIN) && killed.is_none() {
            // Past the add's attach (one latency), inside its mount (slowed down by the shim):
            // the mount's intent is durable, its outcome is not.
            std::thread::sleep(Duration::from_millis(latency_ms * 3 / 2));
            // SAFETY: kill(2) with a pid we spawned and have not reaped has no memory-safety
            // preconditions; the pid cannot be reused before we wait for it.
            let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            if rc != 0 {
                return Err(CliError::io(
                    "killing the demo shim",
                    std::io::Error::last_os_error(),
                ));
            }
            killed = Some(pid);
        }
    }
    let status = child
        .wait()
        .map_err(|e| CliError::io("waiting for the demo shim", e))?;
    if killed.is_none() {
        println!("  shim exited: {status}");
    }
    Ok(killed)
}

/// Steps 3 and 4: recover, take the handles back, release them, close, check emptiness.
async fn recover_and_clean(a: &DemoArgs, journal: &Path, sim: &Path) -> Result<bool, CliError> {
    heading("3. a new shim opens the same journal and VM: recovery runs in open");
    let vm = backend::open(a.backend, sim, Duration::ZERO)?;
    let holds = vm.holds;
    let m = Manager::open(journal, demo_shim::config(), vm.host, vm.guest)
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
    let (vm_attach, vm_mounts) = holds();
    println!("\n  final state:");
    print!("{}", indent(&indent(&view.render())));
    println!("  simulated VM: {vm_attach} attachment(s), {vm_mounts} mount(s)");
    Ok(view.is_empty() && vm_attach == 0 && vm_mounts == 0)
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
        yes(r.inspected.0),
        yes(r.inspected.1)
    ));
    s.push_str(&format!("planned {} action(s)\n", r.plan.len()));
    for (step, target, res, asked) in &r.resolved {
        s.push_str(&format!(
            "resolved:  {step} on {} -> {res:?} ({})\n",
            match target {
                lunledger::journal::Target::Slot(sl) => format!("slot {sl}"),
                lunledger::journal::Target::Mount(mo) => format!("mount {mo}"),
            },
            if *asked { "asked the VM" } else { "assumed" }
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
    let snap = snapshot::open(journal, false)?;
    let hist = history::load(&snap.journal, None)?;
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
    print!("{}", trail::table(&story));
    heading(&format!("7. the audit trail (last {TAIL} records)"));
    let skip = rows.len().saturating_sub(TAIL);
    print!("{}", trail::table(&rows[skip..]));
    Ok(())
}
