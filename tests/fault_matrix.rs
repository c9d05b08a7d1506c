//! The storage fault matrix (issue #14): every crash-matrix scenario, with the journal's storage
//! failing from each of its crash points on, at each of the journal's write and sync sites and
//! sled's flush failpoints, in both durability modes. For every (fault, point) pair:
//! - no backend call is made that the durable records do not name (a VM observer notes, at
//!   every call that changes the VM, how far the journal was durable; the fold of those records
//!   in the reopened journal must hold the call's target);
//! - the call that met the fault gets an error that stops the manager, never a panic or a hang,
//!   and a storage error names what, where and the OS error;
//! - the fault gone, reopening on the same journal and VM recovers: replay equals the live
//!   state, the VM holds exactly what the journal says, every handle returned before the fault
//!   is still live, and releasing everything leaves state and VM empty.
//!
//! Needs the `testing` feature: `cargo test --features testing --test fault_matrix`.

use lunledger_test_support as common;

use common::scenarios::*;
use lunledger::backend::sim::{SimCall, SimVm};
use lunledger::crash::{CrashHook, CrashPoint};
use lunledger::journal::faults::{self, Site};
use lunledger::journal::{Durability, JournalError, JournalReader, Record};
use lunledger::model::{Drift, Event, HandleId, OpKind, Slot, Step, Target};
use lunledger::recovery::State;
use lunledger::{Error, Manager, ManagerOptions};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One way the storage fails.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// One of the journal's own sites fails with ENOSPC from its next call on.
    Ours(Site),
    /// One of sled's failpoints fires at its next hit (sled then fails every operation).
    Sled(&'static str),
}

impl Fault {
    fn arm(self) {
        match self {
            Fault::Ours(site) => faults::arm(site, libc::ENOSPC, 0),
            Fault::Sled(name) => faults::arm_sled(name, 0),
        }
    }
}

fn faults_for(mode: Durability) -> Vec<Fault> {
    let mut v = vec![
        Fault::Ours(Site::SegmentWrite),
        Fault::Ours(Site::CurrentReplace),
        Fault::Ours(Site::CheckpointWrite),
        Fault::Sled("buffer write"),
        Fault::Sled("buffer write post"),
    ];
    if mode == Durability::Sync {
        v.push(Fault::Ours(Site::DataSync));
    }
    v
}

/// Arms `fault` at the `target`-th crash point (crashes nowhere) and counts the points.
struct ArmAt {
    target: usize,
    fault: Fault,
    seen: AtomicUsize,
}

impl CrashHook for ArmAt {
    fn crash_at(&self, _: &CrashPoint) -> bool {
        if self.seen.fetch_add(1, Ordering::SeqCst) == self.target {
            self.fault.arm();
        }
        false
    }
}

fn options(mode: Durability, hook: Option<Arc<dyn CrashHook>>) -> ManagerOptions {
    let mut o = ManagerOptions::new(common::config());
    o.durability = mode;
    o.crash_hook = hook;
    o.teardown_backoff = Duration::from_millis(1);
    o.recovery.detach_unknown = true;
    o.checkpoint_every = 6;
    o.segment_records = 6;
    o
}

/// Faults are armed process-wide: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The journal a VM observer checks against.
type Watched = Arc<Mutex<Option<JournalReader>>>;

/// Whether `r` is the intent of the VM-changing `call`: its step intent, or for an access grant
/// the add's `OpStarted` naming the VM and path.
fn is_intent_of(call: &SimCall, r: &Record) -> bool {
    if let SimCall::Grant { vm_id, path } = call {
        return matches!(&r.event, Event::OpStarted { kind: OpKind::Add { vm_id: Some(v), disk, .. } } if v == vm_id && disk.path == *path);
    }
    match step_of(call) {
        Some((step, target)) => {
            matches!(&r.event, Event::StepIntent { step: s, target: t } if *s == step && *t == target)
        }
        None => false,
    }
}

/// The step and target of a backend call that changes the VM (inspects change nothing).
fn step_of(call: &SimCall) -> Option<(Step, Target)> {
    Some(match call {
        SimCall::Attach(r) => (Step::Attach, Target::Slot(r.slot)),
        SimCall::Detach(r) => (Step::Detach, Target::Slot(r.slot)),
        SimCall::Mount(r) => (Step::Mount, Target::Mount(r.mount)),
        SimCall::Unmount(r) => (Step::Unmount, Target::Mount(r.mount)),
        SimCall::Unplug(slot) => (Step::Unplug, Target::Slot(*slot)),
        _ => return None,
    })
}

/// A VM-changing call as the observer saw it: what the journal had appended and made durable
/// at that moment.
#[derive(Clone, Debug)]
struct SeenCall {
    call: SimCall,
    durable: u64,
}

type Seen = Arc<Mutex<Vec<SeenCall>>>;

/// Installs an observer that notes, for every VM-changing call, how far the journal was
/// durable when it was made. The records are looked at later, in the reopened journal (a
/// failed sled refuses reads, and what matters is what survived): see [`check_write_ahead`].
fn watch(vm: &SimVm) -> (Watched, Seen) {
    let journal: Watched = Arc::new(Mutex::new(None));
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let (j, v) = (journal.clone(), seen.clone());
    vm.set_observer(Arc::new(move |call| {
        if step_of(call).is_none() && !matches!(call, SimCall::Grant { .. }) {
            return;
        }
        // The stray a scenario injects behind the manager's back (attach id 0 is never issued).
        if matches!(call, SimCall::Attach(r) if r.attach == 0) {
            return;
        }
        let Some(j) = j.lock().unwrap().clone() else {
            return;
        };
        v.lock().unwrap().push(SeenCall {
            call: call.clone(),
            durable: j.durable_seq(),
        });
    }));
    (journal, seen)
}

/// The write-ahead rule, checked against the journal as reopened after the fault: every call
/// made was named by what was durable when it was made (the fold of the durable records): an
/// attach by its reserved slot and generation, a mount by its reserved id and path, a teardown
/// by the attachment or mount it acts on (or, for recovery's repair of a stray, by the durable
/// `DriftFound` naming it), a grant by its add's `OpStarted`. The step's own intent record rides
/// the next durable point, so it is not required to be durable.
fn check_write_ahead(reopened: &JournalReader, seen: &[SeenCall]) -> Result<(), String> {
    if seen.is_empty() {
        return Ok(());
    }
    let records: Vec<Record> = reopened
        .read_from(1)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading the reopened journal: {e}"))?;
    let mut bad = Vec::new();
    for s in seen {
        let durable: Vec<&Record> = records.iter().filter(|r| r.seq <= s.durable).collect();
        let st = State::fold(durable.iter().copied())
            .map_err(|e| format!("folding the durable records: {e}"))?;
        let drift_names = |slot: Option<Slot>, path: Option<&str>| {
            durable.iter().any(|r| match &r.event {
                Event::DriftFound {
                    drift: Drift::UnknownAttachment { slot: s, .. },
                } => Some(*s) == slot,
                Event::DriftFound {
                    drift: Drift::UnknownMount { path: p },
                } => Some(p.as_str()) == path,
                _ => false,
            })
        };
        let named = match &s.call {
            SimCall::Grant { .. } => durable.iter().any(|r| is_intent_of(&s.call, r)),
            SimCall::Attach(r) => st
                .attachments
                .get(&r.slot)
                .is_some_and(|a| a.attach == r.attach),
            SimCall::Mount(r) => st.mounts.get(&r.mount).is_some_and(|m| m.path == r.path),
            SimCall::Unmount(r) => {
                st.mounts.get(&r.mount).is_some_and(|m| m.path == r.path)
                    || drift_names(None, Some(&r.path))
            }
            SimCall::Unplug(slot) => {
                st.attachments.contains_key(slot) || drift_names(Some(*slot), None)
            }
            SimCall::Detach(r) => {
                st.attachments
                    .get(&r.slot)
                    .is_some_and(|a| a.attach == r.attach)
                    || drift_names(Some(r.slot), None)
            }
            _ => true,
        };
        if !named {
            bad.push(format!(
                "{:?} made while the durable records (up to {}) did not name it",
                s.call, s.durable
            ));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "backend calls outside the write-ahead rule: {bad:?}"
        ))
    }
}

/// Runs one (scenario, point, fault, mode) case; `Ok(true)` when the fault fired.
async fn one_case(
    script: Script,
    k: usize,
    fault: Fault,
    mode: Durability,
) -> Result<bool, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let vm = SimVm::new();
    let (watched, seen) = watch(&vm);
    let hook = Arc::new(ArmAt {
        target: k,
        fault,
        seen: AtomicUsize::new(0),
    });
    let opened = Manager::open_with(
        dir.path(),
        options(mode, Some(hook.clone())),
        vm.host_backend(),
        vm.guest_backend(),
    )
    .await;
    let mut held: Vec<HandleId> = Vec::new();
    let mut fired = false;
    match opened {
        Ok(m) => {
            *watched.lock().unwrap() = Some(m.journal());
            let r = script(&m, &vm, &mut held).await;
            if let Err(e) = &r {
                if !e.stops_manager() && !matches!(e, Error::Backend { .. }) {
                    return Err(format!("the script ended with {e}"));
                }
                fired = e.stops_manager();
                check_message(e)?;
            }
            *watched.lock().unwrap() = None;
            let _ = m.close().await;
        }
        Err(e) if e.stops_manager() => {
            fired = true;
            check_message(&e)?;
        }
        Err(e) => return Err(format!("open: {e}")),
    }
    faults::disarm();
    vm.clear_faults();
    // The fault is gone: the same journal and VM recover.
    let m = reopen(dir.path(), &vm, mode).await?;
    let seen = seen.lock().unwrap().clone();
    check_write_ahead(&m.journal(), &seen)?;
    let what = format!("{fault:?} at point {k} ({mode:?})");
    check_recovered(&m, &vm, &held, &what).await;
    release_all_and_check_empty(&m, &vm, &what).await;
    m.close().await.map_err(|e| e.to_string())?;
    Ok(fired)
}

/// A storage error names the operation, what the journal was doing, where, and the OS error.
fn check_message(e: &Error) -> Result<(), String> {
    let storage = match e {
        Error::JournalFailed { source, .. } | Error::Journal(source) => {
            matches!(source, JournalError::Storage { .. })
        }
        _ => false,
    };
    if storage {
        let m = e.to_string();
        let named = !matches!(e, Error::JournalFailed { .. }) || m.starts_with("operation ");
        if !named || !m.contains(" while ") || !m.contains(" in /") {
            return Err(format!(
                "a storage error without operation, what or where: {m}"
            ));
        }
    }
    Ok(())
}

async fn reopen(dir: &Path, vm: &SimVm, mode: Durability) -> Result<Manager, String> {
    let mut last = String::new();
    for _ in 0..300 {
        match Manager::open_with(
            dir,
            options(mode, None),
            vm.host_backend(),
            vm.guest_backend(),
        )
        .await
        {
            Ok(m) => return Ok(m),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("reopen after the fault: {last}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_faults_at_every_point_of_every_scenario() {
    // Faults are armed process-wide: the tests here run one at a time, and so do the cases.
    let _serial = SERIAL.lock().await;
    let (mut pairs, mut fired) = (0u64, 0u64);
    let mut failures = Vec::new();
    for mode in [Durability::Flush, Durability::Sync] {
        for (name, script) in scenarios() {
            // Count the scenario's points once, without faults.
            let counter = Arc::new(ArmAt {
                target: usize::MAX,
                fault: Fault::Sled("none"),
                seen: AtomicUsize::new(0),
            });
            {
                let dir = tempfile::tempdir().unwrap();
                let vm = SimVm::new();
                let m = Manager::open_with(
                    dir.path(),
                    options(mode, Some(counter.clone())),
                    vm.host_backend(),
                    vm.guest_backend(),
                )
                .await
                .unwrap();
                script(&m, &vm, &mut Vec::new()).await.unwrap();
                m.close().await.unwrap();
            }
            let n = counter.seen.load(Ordering::SeqCst);
            for k in 0..n {
                for fault in faults_for(mode) {
                    pairs += 1;
                    let case = tokio::time::timeout(
                        Duration::from_secs(60),
                        one_case(script, k, fault, mode),
                    )
                    .await;
                    faults::disarm();
                    match case {
                        Ok(Ok(f)) => fired += f as u64,
                        Ok(Err(e)) => {
                            failures.push(format!("{name}, {fault:?} at {k} ({mode:?}): {e}"))
                        }
                        Err(_) => {
                            failures.push(format!("{name}, {fault:?} at {k} ({mode:?}): hung"))
                        }
                    }
                }
            }
        }
    }
    println!(
        "fault matrix: {pairs} (fault, point) pairs, {fired} stopped the manager, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        fired > pairs / 4,
        "too few faults fired: {fired} of {pairs}"
    );
}

/// A journal disk that stops answering: the waiting operation gives up after
/// `durable_timeout`, the manager stops, and once the disk answers again a reopen recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_stopped_by_a_disk_that_stops_answering_is_told_why() {
    let _serial = SERIAL.lock().await;
    // Several operations wait on the same stalled flush: the first whose wait times out halts
    // the journal, and every other wait ends with that halt. Each caller, and the manager's
    // stop reason, must name the cause (the disk), never the bare halt it led to.
    for trial in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let vm = SimVm::new();
        let mut o = options(Durability::Sync, None);
        o.durable_timeout = Duration::from_millis(200);
        let m = Manager::open_with(dir.path(), o, vm.host_backend(), vm.guest_backend())
            .await
            .unwrap();
        faults::arm_stall(Site::DataSync, Duration::from_secs(1));
        let adds: Vec<_> = (0..8u64)
            .map(|i| {
                let m = m.clone();
                tokio::spawn(async move {
                    // Staggered: when the first wait times out, the others are still waiting.
                    tokio::time::sleep(Duration::from_millis(15 * i)).await;
                    m.add_virtual_disk(lunledger::DiskRequest::new(format!("d{i}")))
                        .await
                        .map(|h| h.handle_id())
                })
            })
            .collect();
        for (i, a) in adds.into_iter().enumerate() {
            match a.await.unwrap() {
                Err(e) if e.stops_manager() => assert!(
                    e.to_string().contains("did not complete"),
                    "trial {trial}, add {i}: {e}"
                ),
                other => panic!("trial {trial}, add {i}: expected a stop, got {other:?}"),
            }
        }
        match m
            .add_virtual_disk(lunledger::DiskRequest::new("later"))
            .await
        {
            Err(Error::Stopped(why)) => assert!(why.contains("did not complete"), "{why}"),
            other => panic!("trial {trial}: expected the stop reason, got {other:?}"),
        }
        let _ = m.close().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        faults::disarm();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_disk_that_stops_answering_stops_the_manager_in_bounded_time() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let vm = SimVm::new();
    let mut o = options(Durability::Sync, None);
    o.durable_timeout = Duration::from_millis(300);
    let m = Manager::open_with(dir.path(), o, vm.host_backend(), vm.guest_backend())
        .await
        .unwrap();
    let held = m
        .add_virtual_disk(lunledger::DiskRequest::new("a"))
        .await
        .unwrap()
        .handle_id();
    faults::arm_stall(Site::DataSync, Duration::from_secs(3));
    let start = std::time::Instant::now();
    let r = m
        .add_virtual_disk(lunledger::DiskRequest::new("b"))
        .await
        .map(|h| h.handle_id());
    let took = start.elapsed();
    match &r {
        Err(e) if e.stops_manager() => assert!(e.to_string().contains("did not complete"), "{e}"),
        other => panic!("expected the manager to stop, got {other:?}"),
    }
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(matches!(
        m.add_virtual_disk(lunledger::DiskRequest::new("c")).await,
        Err(Error::Stopped(_))
    ));
    let _ = m.close().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    faults::disarm();
    let m = reopen(dir.path(), &vm, Durability::Sync).await.unwrap();
    check_recovered(&m, &vm, &[held], "stalled disk").await;
    release_all_and_check_empty(&m, &vm, "stalled disk").await;
    m.close().await.unwrap();
}
