//! The crash matrix: every scenario is stopped at every crash point it reaches (before and after
//! an operation's plan is durable, before and after a step's intent, after the backend call,
//! after the outcome, around issuing a handle), losing every record that was not yet durable
//! (as a SIGKILL may: the test checks the stored journal ends at the last durable record), then
//! reopened and recovered; then, for every crash point of that recovery, the recovery itself
//! is crashed and recovered again. After each recovery:
//! - replaying the journal equals the live state, and its invariants hold;
//! - the simulated VM holds exactly what live handles need;
//! - every handle returned before the crash is still live and releasable;
//! - recovering again changes nothing;
//! - after releasing everything, every slot is free and the VM is empty.

use lunledger_test_support as common;

use common::scenarios::*;
use common::*;
use lunledger::backend::sim::{FaultPlan, SimOp, SimVm};
use lunledger::backend::BackendError;
use lunledger::crash::{Boundary, CrashHook, CrashPoint, Site};
use lunledger::journal::{Journal, JournalOptions};
use lunledger::model::{GuestOs, HandleId, Step};
use lunledger::{Error, Manager, ManagerOptions};
use std::path::Path;
use std::sync::Arc;

fn options_for(guest: GuestOs, hook: Option<Arc<Hook>>) -> ManagerOptions {
    let mut o = ManagerOptions::new(config_for(guest));
    o.crash_hook = hook.map(|h| h as Arc<dyn CrashHook>);
    o.teardown_backoff = std::time::Duration::from_millis(1);
    // Strays (a scenario injects one) are detached, so recovery's repair steps are crashed too.
    o.recovery.detach_unknown = true;
    // A checkpoint, and with it a rotation into a sealed segment, every few records: every crash
    // point is then also reached with history split across segments and generations.
    o.checkpoint_every = 6;
    o.segment_records = 6;
    o
}

async fn open_with(dir: &Path, vm: &SimVm, hook: Option<Arc<Hook>>) -> Result<Manager, Error> {
    // The VM's guest decides the configuration: one test body serves both guest kinds.
    let opts = options_for(vm.snapshot().guest, hook);
    Manager::open_with(dir, opts, vm.host_backend(), vm.guest_backend()).await
}

/// Runs `script` with a crash at point `k`; returns the handles the caller got before the crash,
/// the crash points reached and how many records the crash dropped (appended, not yet durable).
async fn run_until_crash(
    dir: &Path,
    vm: &SimVm,
    script: Script,
    k: Option<usize>,
) -> (Vec<HandleId>, usize, Vec<CrashPoint>, u64) {
    let hook = Hook::new(k);
    let m = match open_with(dir, vm, Some(hook.clone())).await {
        Ok(m) => m,
        // The very first open (which journals the configuration) can be crashed too.
        Err(Error::Crashed(_)) if k.is_some() => return (Vec::new(), hook.count(), Vec::new(), 0),
        Err(e) => panic!("open: {e}"),
    };
    let mut held = Vec::new();
    let r = script(&m, vm, &mut held).await;
    match (&r, k) {
        (Ok(()), None) => {}
        // A crash inside a rollback surfaces as the error that caused the rollback.
        (Ok(()) | Err(Error::Crashed(_)) | Err(Error::Backend { .. }), Some(k))
            if hook.count() > k => {}
        (other, _) => panic!("crash point {k:?}: script ended with {other:?}"),
    }
    let (appended, durable) = (m.journal().last_seq(), m.journal().durable_seq());
    let _ = m.close().await;
    vm.clear_faults();
    let points = hook.points.lock().unwrap().clone();
    let mut dropped = 0;
    if k.is_some() {
        // As a SIGKILL may: the stored journal ends at the last durable record; everything
        // appended after it is gone.
        let j = Journal::open(dir, JournalOptions::default()).unwrap();
        assert_eq!(
            j.last_seq(),
            durable,
            "crash point {k:?}: the journal kept records that were not durable"
        );
        drop(j);
        dropped = appended - durable;
    }
    (held, hook.count(), points, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_every_point_of_every_scenario_and_of_its_recovery() {
    crash_matrix(GuestOs::Linux).await;
}

/// The same matrix on a Windows guest: no unplug anywhere (the simulated Windows guest fails
/// any unplug call, so a teardown or repair that made one would fail the matrix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_every_point_of_every_scenario_and_of_its_recovery_windows() {
    crash_matrix(GuestOs::Windows).await;
}

async fn crash_matrix(guest: GuestOs) {
    let mut scenario_points = 0;
    let mut recovery_points = 0;
    let mut with_segments = 0;
    // Crash points of the calls outside the plain step path: the add's access grant, and
    // recovery's repair of a stray disk.
    let (mut grant_points, mut repair_points) = (0, 0);
    // Records the crashes dropped (appended but not yet durable), and at how many points.
    let (mut dropped, mut lossy_points) = (0u64, 0u64);
    for (name, script) in scenarios_for(guest) {
        let dir = tempdir();
        let vm = SimVm::with_guest(guest);
        let (_, n, points, _) = run_until_crash(dir.path(), &vm, script, None).await;
        grant_points += points.iter().filter(|p| p.site == Site::Grant).count();
        assert!(n > 0, "{name}: no crash point reached");
        for k in 0..n {
            let what = format!("{name}, crash at point {k}");
            // Count the recovery's own crash points once.
            let dir = tempdir();
            let vm = SimVm::with_guest(guest);
            let (held, _, _, lost) = run_until_crash(dir.path(), &vm, script, Some(k)).await;
            dropped += lost;
            lossy_points += u64::from(lost > 0);
            let rhook = Hook::new(None);
            let calls = teardown_calls(&vm);
            let m = open_with(dir.path(), &vm, Some(rhook.clone()))
                .await
                .unwrap();
            check_recovered(&m, &vm, &held, &what).await;
            // The report counts every teardown call recovery made, rollbacks' and finished
            // releases' included (no faults are armed, so every call succeeded).
            let done = m.last_recovery().map(|r| r.teardowns_done).unwrap_or(0);
            assert_eq!(
                done as u64,
                teardown_calls(&vm) - calls,
                "{what}: teardown steps reported vs made by recovery"
            );
            repair_points += rhook
                .points
                .lock()
                .unwrap()
                .iter()
                .filter(|p| matches!(p.site, Site::Repair(_)))
                .count();
            if !m.journal().segments().is_empty() {
                with_segments += 1;
            }
            let before = m.state();
            m.close().await.unwrap();
            // Recovering twice equals recovering once.
            let m = open_with(dir.path(), &vm, None).await.unwrap();
            let again = m.last_recovery().map(|r| r.plan.len()).unwrap_or(0);
            assert_eq!(again, 0, "{what}: a second recovery had work to do");
            // What the VM must hold, and who holds it, is unchanged. (The drift shown is the
            // last recovery's, so a second one that found nothing may clear it, journaling an
            // empty recovery: sequence numbers and counters move, resources do not.)
            let resources = |st: &lunledger::recovery::State| {
                (
                    st.attachments.clone(),
                    st.mounts.clone(),
                    st.handles.clone(),
                    st.ops.clone(),
                )
            };
            assert_eq!(
                resources(&m.state()),
                resources(&before),
                "{what}: a second recovery changed the state"
            );
            release_all_and_check_empty(&m, &vm, &what).await;
            m.close().await.unwrap();
            scenario_points += 1;

            for j in 0..rhook.count() {
                let what = format!("{what}, recovery crashed at point {j}");
                let dir = tempdir();
                let vm = SimVm::with_guest(guest);
                let (held, _, _, _) = run_until_crash(dir.path(), &vm, script, Some(k)).await;
                let m = match open_with(dir.path(), &vm, Some(Hook::new(Some(j)))).await {
                    Err(Error::Crashed(_)) => {
                        recovery_points += 1;
                        open_with(dir.path(), &vm, None).await.unwrap()
                    }
                    // The crash may have torn off the non-durable tail this time, leaving the
                    // recovery fewer points than in the counting run: it is still checked.
                    Ok(m) => {
                        m.close().await.unwrap();
                        open_with(dir.path(), &vm, None).await.unwrap()
                    }
                    Err(e) => panic!("{what}: {e}"),
                };
                check_recovered(&m, &vm, &held, &what).await;
                release_all_and_check_empty(&m, &vm, &what).await;
                m.close().await.unwrap();
            }
        }
        println!("{guest} {name}: {n} crash points");
    }
    println!(
        "crash matrix ({guest}): {scenario_points} scenario crash points ({with_segments} recovered with history in sealed segments) and {recovery_points} recovery crash points exercised"
    );
    println!("records dropped as not yet durable: {dropped}, at {lossy_points} crash points");
    assert!(
        lossy_points * 2 > scenario_points as u64,
        "most crash points should lose a non-durable tail"
    );
    assert!(scenario_points >= 9 * 4);
    assert!(with_segments > 0, "no recovery read a rotated journal");
    println!("{guest}: grant crash points: {grant_points}; recovery repair crash points: {repair_points}");
    assert!(grant_points >= 4, "the access grant has no crash points");
    assert!(
        repair_points >= 3,
        "recovery's stray repair has no crash points"
    );
}

/// A release that recovery cannot finish (its unplug keeps failing) is reported as an error with
/// its teardown still due, not as finished; a later recovery with a healthy VM finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_recovery_cannot_finish_is_not_reported_finished() {
    let script: Script = |m, _, h| {
        Box::pin(async move {
            add(m, mounted("a"), h).await?;
            release(m, h, 0).await
        })
    };
    // Find the crash point just before the release journals its unplug intent.
    let dir = tempdir();
    let vm = SimVm::new();
    let hook = Hook::new(None);
    let m = open_with(dir.path(), &vm, Some(hook.clone()))
        .await
        .unwrap();
    script(&m, &vm, &mut Vec::new()).await.unwrap();
    m.close().await.unwrap();
    let k = hook
        .points
        .lock()
        .unwrap()
        .iter()
        .position(|p| {
            matches!(p.site, Site::Step(Step::Unplug, _)) && p.boundary == Boundary::BeforeIntent
        })
        .expect("the release reaches its unplug");

    let dir = tempdir();
    let vm = SimVm::new();
    run_until_crash(dir.path(), &vm, script, Some(k)).await;
    vm.set_faults(
        FaultPlan::new().fail_always(SimOp::Unplug, BackendError::Failed("device busy".into())),
    );
    let m = open_with(dir.path(), &vm, None).await.unwrap();
    let r = m.last_recovery().unwrap();
    assert!(
        r.releases_finished.is_empty(),
        "reported finished: {:?}",
        r.releases_finished
    );
    assert!(!r.errors.is_empty(), "no error reported: {r:?}");
    assert!(
        r.teardowns_pending.iter().any(|t| t.contains("unplug")),
        "{:?}",
        r.teardowns_pending
    );
    assert_eq!(
        r.teardowns_done, 1,
        "the unmount ran before the crash, but its records were not durable yet (they ride the \
         next durable point): recovery runs it again, idempotently; the unplug keeps failing"
    );
    m.close().await.unwrap();

    vm.clear_faults();
    let m = open_with(dir.path(), &vm, None).await.unwrap();
    let r = m.last_recovery().unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r.teardowns_pending.is_empty(), "{:?}", r.teardowns_pending);
    assert_eq!(r.teardowns_done, 2, "unplug and detach");
    assert_eq!(r.releases_finished.len(), 1, "the resumed release: {r:?}");
    assert!(m.state().is_empty(), "{:?}", m.state());
    assert!(vm.snapshot().is_empty(), "{:?}", vm.snapshot());
}
