//! The manager's behaviour on the simulated VM: hcsshim's own tests, its skipped parallel test,
//! and one test per hcsshim bug we must not have.

use lunledger_test_support as common;

use common::*;
use lunledger::backend::sim::{FaultPlan, SimCall, SimOp, SimVm};
use lunledger::model::{Event, ManagerConfig, Slot, Step};
use lunledger::{DiskRequest, Error, ManagerOptions, MountConfig};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn ro_mount(path: &str) -> DiskRequest {
    DiskRequest::new(path)
        .read_only(true)
        .mount(MountConfig::default())
}

/// Adds journaled as abandoned by their callers.
fn abandoned_adds(m: &lunledger::Manager) -> usize {
    m.journal()
        .read_from(1)
        .filter_map(Result::ok)
        .filter(|r| r.event == Event::OpAbandoned)
        .count()
}

/// Whether `done` holds within 2 s (checked every 10 ms): for work a caller left to the manager.
async fn within_2s(done: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if done() {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn add_add_remove_remove() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let m1 = m.add_virtual_disk(ro_mount("path")).await.unwrap();
    let m2 = m.add_virtual_disk(ro_mount("path")).await.unwrap();
    assert_eq!(m1.guest_path(), m2.guest_path());
    assert!(!m1.guest_path().is_empty());
    assert_eq!(vm.snapshot().attachments.len(), 1);
    m1.release().await.unwrap();
    assert_eq!(vm.snapshot().attachments.len(), 1, "still referenced by m2");
    m2.release().await.unwrap();
    assert!(vm.snapshot().is_empty());
    assert_replay_equals_live(&m).await;
    assert!(m.state().is_empty());
}

/// An add is over when it returns its handle, and so is a release: the state a caller reads
/// right after shows no operation in flight (on a current_thread runtime the add's task has not
/// run again by then, so an add closed by its task would still be open).
#[tokio::test]
async fn operations_are_closed_when_their_call_returns() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    for path in ["a", "b", "a"] {
        let h = m.add_virtual_disk(ro_mount(path)).await.unwrap();
        let s = m.state();
        assert!(s.ops.is_empty(), "after add of {path}: {:?}", s.ops);
        assert_eq!(s.handles.len(), 1);
        h.release().await.unwrap();
        let s = m.state();
        assert!(s.ops.is_empty(), "after release of {path}: {:?}", s.ops);
        assert!(s.is_empty(), "{s:?}");
    }
    assert_replay_equals_live(&m).await;
}

#[tokio::test]
async fn explicit_guest_path_is_reused() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let m1 = m
        .add_virtual_disk(ro_mount("path").guest_path("/mnt1"))
        .await
        .unwrap();
    assert_eq!(m1.guest_path(), "/mnt1");
    let m2 = m.add_virtual_disk(ro_mount("path")).await.unwrap();
    assert_eq!(m2.guest_path(), "/mnt1");
    let m3 = m
        .add_virtual_disk(ro_mount("path").guest_path("/mnt2"))
        .await
        .unwrap();
    assert_eq!(
        m3.guest_path(),
        "/mnt1",
        "a matching mount wins over a requested path"
    );
    assert_eq!(vm.snapshot().mounts.len(), 1);
    m3.release().await.unwrap();
    m2.release().await.unwrap();
    assert_eq!(vm.snapshot().mounts.len(), 1);
    m1.release().await.unwrap();
    assert!(vm.snapshot().mounts.is_empty());
    assert_replay_equals_live(&m).await;
}

#[tokio::test]
async fn conflicting_guest_path_is_a_typed_error_and_leaks_nothing() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let m1 = m
        .add_virtual_disk(ro_mount("path").guest_path("/mnt1"))
        .await
        .unwrap();
    let e = m
        .add_virtual_disk(ro_mount("path2").guest_path("/mnt1"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::GuestPathConflict { ref path } if path == "/mnt1"),
        "{e}"
    );
    assert_eq!(
        vm.snapshot().attachments.len(),
        1,
        "path2's attach was rolled back"
    );
    m1.release().await.unwrap();
    assert!(vm.snapshot().is_empty());
    assert_replay_equals_live(&m).await;
}

#[tokio::test]
async fn slots_are_controller_major_and_reserved_slots_skipped() {
    let dir = tempdir();
    let vm = SimVm::new();
    let cfg = ManagerConfig {
        guest: Default::default(),
        controllers: 2,
        luns_per_controller: 2,
        mount_format: "/m/%d".into(),
        reserved: vec![Slot::new(0, 0)],
    };
    let m = open_opts(dir.path(), &vm, ManagerOptions::new(cfg)).await;
    let a = m.add_virtual_disk(DiskRequest::new("a")).await.unwrap();
    let b = m.add_virtual_disk(DiskRequest::new("b")).await.unwrap();
    let c = m.add_virtual_disk(DiskRequest::new("c")).await.unwrap();
    assert_eq!(
        (a.slot(), b.slot(), c.slot()),
        (Slot::new(0, 1), Slot::new(1, 0), Slot::new(1, 1))
    );
    let e = m.add_virtual_disk(DiskRequest::new("d")).await.unwrap_err();
    assert!(matches!(e, Error::NoAvailableLocation), "{e}");
    b.release().await.unwrap();
    let d = m.add_virtual_disk(DiskRequest::new("d")).await.unwrap();
    assert_eq!(d.slot(), Slot::new(1, 0), "the first free slot is reused");
    assert_eq!(a.guest_path(), "", "attach only has no guest path");
    assert_replay_equals_live(&m).await;
}

#[tokio::test]
async fn invalid_configurations_are_typed_errors() {
    let vm = SimVm::new();
    let bad = [
        ManagerConfig {
            mount_format: "/m".into(),
            ..config()
        },
        ManagerConfig {
            mount_format: "/m/%d/%d".into(),
            ..config()
        },
        ManagerConfig {
            reserved: vec![Slot::new(4, 0)],
            ..config()
        },
        ManagerConfig {
            reserved: vec![Slot::new(0, 64)],
            ..config()
        },
        ManagerConfig {
            controllers: 0,
            ..config()
        },
    ];
    for cfg in bad {
        let dir = tempdir();
        let r = lunledger::Manager::open(
            dir.path(),
            cfg.clone(),
            vm.host_backend(),
            vm.guest_backend(),
        )
        .await;
        assert!(
            matches!(r, Err(Error::InvalidConfig(_))),
            "{cfg:?} was accepted"
        );
    }
}

#[tokio::test]
async fn a_configuration_that_contradicts_live_state_is_refused() {
    let dir = tempdir();
    let vm = SimVm::new();
    {
        let m = open(dir.path(), &vm).await;
        let mut held = Vec::new();
        for i in 0..70 {
            held.push(
                m.add_virtual_disk(DiskRequest::new(format!("d{i}")))
                    .await
                    .unwrap(),
            );
        }
        // Dropping handles releases nothing: the journal keeps them for the next open.
        drop(held);
        m.close().await.unwrap();
    }
    let small = ManagerConfig {
        controllers: 1,
        ..config()
    };
    let r =
        lunledger::Manager::open(dir.path(), small, vm.host_backend(), vm.guest_backend()).await;
    assert!(matches!(r, Err(Error::ConfigConflict(_))), "{:?}", r.err());
    let m = open(dir.path(), &vm).await;
    assert_eq!(
        m.handles().len(),
        70,
        "nothing was lost by the refused open"
    );
}

#[tokio::test]
async fn malformed_evd_paths_are_rejected_before_anything_is_journaled() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let before = m.state().last_seq;
    for bad in ["evd:///x", "evd://nopath", ""] {
        let e = m
            .add_extensible_virtual_disk(DiskRequest::new(bad))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidEvdPath(_) | Error::InvalidInput(_)),
            "{bad}: {e}"
        );
    }
    assert_eq!(m.state().last_seq, before);
    let ok = m
        .add_extensible_virtual_disk(DiskRequest::new("evd://space/abc/def"))
        .await
        .unwrap();
    let st = m.state();
    let a = &st.attachments[&ok.slot()];
    assert_eq!(
        (a.disk.path.as_str(), a.disk.evd_type.as_deref()),
        ("abc/def", Some("space"))
    );
}

#[tokio::test]
async fn second_release_is_already_released() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let h = m.add_virtual_disk(ro_mount("p")).await.unwrap();
    h.release().await.unwrap();
}

#[tokio::test]
async fn failed_unmount_keeps_no_leak_and_release_can_be_retried() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let h = m.add_virtual_disk(ro_mount("p")).await.unwrap();
    vm.set_faults(FaultPlan::new().fail_nth(SimOp::Unmount, 1, "busy"));
    let e = h.release().await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Backend {
                step: Step::Unmount,
                ..
            }
        ),
        "{e}"
    );
    // hcsshim would now have a refcount-0 mount and a leaked attachment reference; a new add of
    // the same disk must not be handed the half-torn-down mount.
    let h2 = m.add_virtual_disk(ro_mount("p")).await.unwrap();
    assert_ne!(h2.guest_path(), h.guest_path(), "a zombie mount was reused");
    h.release().await.unwrap();
    h2.release().await.unwrap();
    assert!(vm.snapshot().is_empty());
    assert!(m.state().is_empty());
    assert_replay_equals_live(&m).await;
}

#[tokio::test]
async fn failed_unplug_or_detach_keeps_the_slot_reserved_until_teardown_succeeds() {
    for op in [SimOp::Unplug, SimOp::Detach] {
        let dir = tempdir();
        let vm = SimVm::new();
        let m = open(dir.path(), &vm).await;
        // Read-only, so the VM lets a second attachment of the image exist (see below for
        // read-write).
        let h = m
            .add_virtual_disk(DiskRequest::new("p").read_only(true))
            .await
            .unwrap();
        let slot = h.slot();
        vm.set_faults(FaultPlan::new().fail_nth(op, 1, "stuck"));
        assert!(h.release().await.is_err());
        let h2 = m
            .add_virtual_disk(DiskRequest::new("p").read_only(true))
            .await
            .unwrap();
        assert_ne!(
            h2.slot(),
            slot,
            "{op:?}: a half-detached attachment was reused"
        );
        assert_vm_matches(&m, &vm);
        // A read-write add of the same image cannot be attached while the failed teardown
        // holds it: a typed, retryable error at once (nobody is running that teardown).
        let e = m.add_virtual_disk(DiskRequest::new("p")).await.unwrap_err();
        assert!(
            matches!(e, Error::DiskBusy { slot: s, .. } if s == slot) && e.is_retryable(),
            "{op:?}: {e}"
        );
        assert_vm_matches(&m, &vm);
        h.release().await.unwrap();
        h2.release().await.unwrap();
        assert!(vm.snapshot().is_empty() && m.state().is_empty(), "{op:?}");
        assert_replay_equals_live(&m).await;
    }
}

#[tokio::test]
async fn retry_teardowns_finishes_orphaned_teardowns() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let h = m.add_virtual_disk(ro_mount("p")).await.unwrap();
    vm.set_faults(FaultPlan::new().fail_nth(SimOp::Detach, 1, "stuck"));
    assert!(h.release().await.is_err());
    assert_eq!(m.retry_teardowns().await.unwrap(), 0);
    assert!(vm.snapshot().is_empty() && m.state().is_empty());
    assert_replay_equals_live(&m).await;
}

#[tokio::test]
async fn failed_attach_and_failed_mount_roll_back_and_share_the_error() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    vm.set_latency(Duration::from_millis(20));
    vm.set_faults(FaultPlan::new().fail_nth(SimOp::Attach, 1, "no such file"));
    let (a, b) = tokio::join!(
        m.add_virtual_disk(ro_mount("p")),
        m.add_virtual_disk(ro_mount("p"))
    );
    assert!(
        a.is_err() && b.is_err(),
        "both callers share the failed attach"
    );
    assert!(vm.snapshot().is_empty() && m.state().is_empty());
    vm.set_faults(FaultPlan::new().fail_nth(SimOp::Mount, 1, "bad fs"));
    let (a, b) = tokio::join!(
        m.add_virtual_disk(ro_mount("p")),
        m.add_virtual_disk(ro_mount("p"))
    );
    assert!(
        a.is_err() && b.is_err(),
        "both callers share the failed mount"
    );
    assert!(vm.snapshot().is_empty(), "{:?}", vm.snapshot());
    assert!(m.state().is_empty());
    assert_replay_equals_live(&m).await;
}

/// A release runs in its caller's task; a caller that stops waiting leaves it to finish in a
/// task of the manager's: the disk is still torn down and the release journaled as finished.
#[tokio::test]
async fn a_release_whose_caller_stops_waiting_runs_to_its_end() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let h = m.add_virtual_disk(ro_mount("p")).await.unwrap();
    vm.set_latency(Duration::from_millis(30));
    let r = tokio::time::timeout(Duration::from_millis(10), h.release()).await;
    assert!(r.is_err(), "the release was expected to be cancelled");
    let done = within_2s(|| m.state().is_empty() && vm.snapshot().is_empty()).await;
    assert!(done, "the release stopped with its caller: {:?}", m.state());
    assert_replay_equals_live(&m).await;
}

/// `close` waits for an operation whose caller went away (it goes on in the manager's task
/// tracker), so nothing it does is lost and the reopened journal shows it ended.
#[tokio::test]
async fn close_waits_for_an_add_its_caller_gave_up_on() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    vm.set_latency(Duration::from_millis(40));
    let r =
        tokio::time::timeout(Duration::from_millis(10), m.add_virtual_disk(ro_mount("p"))).await;
    assert!(r.is_err(), "the add was expected to be cancelled");
    m.close().await.unwrap();
    assert!(vm.snapshot().is_empty(), "{:?}", vm.snapshot());
    vm.set_latency(Duration::ZERO);
    let m = open(dir.path(), &vm).await;
    assert!(m.state().is_empty(), "{:?}", m.state());
    let report = m.last_recovery().expect("a recovery report");
    assert!(
        report.plan.is_empty(),
        "close left work to recovery: {report:?}"
    );
    assert_eq!(abandoned_adds(&m), 1);
}

#[tokio::test]
async fn a_cancelled_caller_leaks_nothing_and_is_journaled_as_abandoned() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    vm.set_latency(Duration::from_millis(30));
    let first = m.add_virtual_disk(ro_mount("p"));
    let r = tokio::time::timeout(Duration::from_millis(10), first).await;
    assert!(r.is_err(), "the add was expected to be cancelled");
    // A waiter on the same disk, cancelled too.
    let r = tokio::time::timeout(Duration::from_millis(5), m.add_virtual_disk(ro_mount("p"))).await;
    assert!(r.is_err());
    let empty = within_2s(|| m.state().is_empty()).await;
    assert!(empty, "abandoned adds leaked: {:?}", m.state());
    assert!(vm.snapshot().is_empty());
    m.sync().await.unwrap();
    assert_eq!(abandoned_adds(&m), 2);
    assert_replay_equals_live(&m).await;
}

#[tokio::test]
async fn caller_options_are_never_reordered_and_compare_sorted() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let opts = vec!["rw".to_string(), "noatime".to_string()];
    let cfg = MountConfig {
        options: opts.clone(),
        ..Default::default()
    };
    let a = m
        .add_virtual_disk(DiskRequest::new("p").mount(cfg.clone()))
        .await
        .unwrap();
    assert_eq!(cfg.options, opts);
    let rev = MountConfig {
        options: vec!["noatime".into(), "rw".into()],
        ..Default::default()
    };
    let b = m
        .add_virtual_disk(DiskRequest::new("p").mount(rev))
        .await
        .unwrap();
    assert_eq!(
        a.guest_path(),
        b.guest_path(),
        "same options in another order share the mount"
    );
    let st = m.state();
    assert_eq!(
        st.mounts.values().next().map(|m| m.spec.options.clone()),
        Some(opts)
    );
}

#[tokio::test]
async fn a_generated_path_never_collides_with_a_requested_one() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let a = m
        .add_virtual_disk(ro_mount("a").guest_path("/var/run/scsi/0"))
        .await
        .unwrap();
    let b = m.add_virtual_disk(ro_mount("b")).await.unwrap();
    assert_eq!(a.guest_path(), "/var/run/scsi/0");
    assert_eq!(b.guest_path(), "/var/run/scsi/1");
    assert_replay_equals_live(&m).await;
}

/// The write-ahead rule: when the backend sees a call, what the journal holds durably already
/// names it (an add's reserved slot, generation, mount and path; a release's teardown due), so
/// recovery from the durable records alone can settle or redo it. The step's own intent record
/// is appended before the call but not waited for.
#[tokio::test]
async fn everything_a_call_does_is_durable_before_the_backend_sees_it() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let journal = m.journal().clone();
    let problems = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (p2, c2) = (problems.clone(), calls.clone());
    vm.set_observer(Arc::new(move |call: &SimCall| {
        let durable = journal.durable_seq();
        let records: Vec<_> = journal
            .read_range(1, durable)
            .collect::<Result<_, _>>()
            .unwrap();
        let st = lunledger::recovery::State::fold(records.iter()).unwrap();
        let (step, named) = match call {
            SimCall::Attach(r) => (
                Step::Attach,
                st.attachments
                    .get(&r.slot)
                    .is_some_and(|a| a.attach == r.attach),
            ),
            SimCall::Mount(r) => (
                Step::Mount,
                st.mounts.get(&r.mount).is_some_and(|x| x.path == r.path),
            ),
            SimCall::Unmount(r) => (
                Step::Unmount,
                st.mounts
                    .get(&r.mount)
                    .is_some_and(|x| x.phase.teardown_due()),
            ),
            SimCall::Unplug(slot) => (
                Step::Unplug,
                st.attachments
                    .get(slot)
                    .is_some_and(|a| a.phase.teardown_due()),
            ),
            SimCall::Detach(r) => (
                Step::Detach,
                st.attachments
                    .get(&r.slot)
                    .is_some_and(|a| a.phase.teardown_due()),
            ),
            _ => return,
        };
        c2.lock().unwrap().push(step);
        if !named {
            p2.lock().unwrap().push(format!(
                "{step}: the durable records (to {durable}) do not name it"
            ));
        }
    }));
    let h = m.add_virtual_disk(ro_mount("p")).await.unwrap();
    h.release().await.unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        [
            Step::Attach,
            Step::Mount,
            Step::Unmount,
            Step::Unplug,
            Step::Detach
        ]
    );
    let p = problems.lock().unwrap().clone();
    assert!(p.is_empty(), "{p:?}");
    // And the step intents are still journaled, in order, before each call (the release's ride
    // the next durable point: wait for everything appended to be stored).
    m.sync().await.unwrap();
    let steps: Vec<Step> = m
        .journal()
        .read_from(1)
        .filter_map(|r| match r.ok()?.event {
            Event::StepIntent { step, .. } => Some(step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, *calls.lock().unwrap());
}

#[tokio::test]
async fn handles_by_owner_and_release_owner() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    for i in 0..3 {
        m.add_virtual_disk(ro_mount(&format!("c1-{i}")).owner("c1"))
            .await
            .unwrap();
    }
    m.add_virtual_disk(ro_mount("shared").owner("c1"))
        .await
        .unwrap();
    let keep = m
        .add_virtual_disk(ro_mount("shared").owner("c2"))
        .await
        .unwrap();
    assert_eq!(m.handles_by_owner("c1").len(), 4);
    assert_eq!(m.release_owner("c1").await.unwrap(), 4);
    assert!(m.handles_by_owner("c1").is_empty());
    assert_eq!(m.handles().len(), 1);
    assert_vm_matches(&m, &vm);
    keep.release().await.unwrap();
    assert!(vm.snapshot().is_empty());
}

/// hcsshim's skipped parallel test: 16 tasks x 1000 randomised add/release cycles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_add_release_cycles_end_empty() {
    let cycles: u64 = std::env::var("LUNLEDGER_PARALLEL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for _ in 0..cycles {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Some disks are shared by all tasks, some private; some attach only.
                let disk = if x % 3 == 0 {
                    format!("shared-{}", x % 4)
                } else {
                    format!("t{t}-{}", x % 5)
                };
                let mut req = DiskRequest::new(disk).read_only(x % 2 == 0);
                if x % 4 != 1 {
                    req = req.mount(MountConfig::default());
                }
                let h = m.add_virtual_disk(req).await.expect("add");
                if x % 7 == 0 {
                    tokio::task::yield_now().await;
                }
                h.release().await.expect("release");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(m.state().is_empty(), "{:?}", m.state());
    assert!(vm.snapshot().is_empty());
    assert_replay_equals_live(&m).await;
    let stats = m.journal().stats();
    println!("{} cycles: {stats:?}", 16 * cycles);
}

#[tokio::test]
async fn sync_durability_fdatasyncs_before_each_backend_step() {
    let dir = tempdir();
    let vm = SimVm::new();
    let mut opts = ManagerOptions::new(config());
    opts.durability = lunledger::journal::Durability::Sync;
    let m = open_opts(dir.path(), &vm, opts).await;
    let before = m.journal().stats();
    let h = m.add_virtual_disk(ro_mount("p")).await.unwrap();
    h.release().await.unwrap();
    let after = m.journal().stats();
    // The add's plan, its handle, the release: three durable points, one at a time.
    let syncs = after.fdatasyncs - before.fdatasyncs;
    assert!(
        syncs >= 3,
        "only {syncs} fdatasyncs for a sequential add+release"
    );
    assert_eq!(
        after.fdatasyncs - before.fdatasyncs,
        after.flushes - before.flushes
    );
}

#[tokio::test]
async fn an_attach_or_mount_that_times_out_after_taking_effect_is_not_leaked() {
    for op in [SimOp::Attach, SimOp::Mount] {
        let dir = tempdir();
        let vm = SimVm::new();
        let m = open(dir.path(), &vm).await;
        // The VM does it, then the call reports a timeout: inspect shows it happened, so the add
        // goes on and succeeds.
        vm.set_faults(FaultPlan::new().succeed_but_fail_nth(op, 1, 500));
        let h = m
            .add_virtual_disk(ro_mount("p"))
            .await
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
        assert_vm_matches(&m, &vm);
        h.release().await.unwrap();
        assert!(vm.snapshot().is_empty(), "{op:?}: {:?}", vm.snapshot());
        // When the VM cannot be asked either, the add fails and its rollback tears down what
        // may exist.
        vm.set_faults(
            FaultPlan::new()
                .succeed_but_fail_nth(op, 1, 500)
                .fail_nth(SimOp::Inspect, 1, "agent gone")
                .fail_nth(SimOp::Inspect, 2, "agent gone"),
        );
        assert!(m.add_virtual_disk(ro_mount("p")).await.is_err(), "{op:?}");
        assert!(
            vm.snapshot().is_empty(),
            "{op:?}: leaked {:?}",
            vm.snapshot()
        );
        assert!(m.state().is_empty(), "{op:?}");
        assert_replay_equals_live(&m).await;
    }
}

#[tokio::test]
async fn a_requested_guest_path_takes_a_mount_index_as_in_hcsshim() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let a = m
        .add_virtual_disk(ro_mount("a").guest_path("/custom"))
        .await
        .unwrap();
    let b = m.add_virtual_disk(ro_mount("b")).await.unwrap();
    assert_eq!(a.guest_path(), "/custom");
    assert_eq!(
        b.guest_path(),
        "/var/run/scsi/1",
        "index 0 is held by the requested mount"
    );
    a.release().await.unwrap();
    let c = m.add_virtual_disk(ro_mount("c")).await.unwrap();
    assert_eq!(
        c.guest_path(),
        "/var/run/scsi/0",
        "the lowest free index is reused"
    );
    assert_replay_equals_live(&m).await;
}

/// Issue #15 item 2: an add racing `release_owner` for the same owner. `release_owner` releases
/// only the handles already returned to their callers when it starts; the add's caller gets its
/// handle and releases it. Never an internal error, never a leak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_racing_release_owner_of_the_same_owner() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    // Held by another owner throughout: an add sharing it has no backend step, so its only wait
    // is its handle's durable point, and a release of that handle has no wait at all.
    let keeper = m
        .add_virtual_disk(ro_mount("shared").owner("other"))
        .await
        .unwrap();
    for round in 0..200u32 {
        let disk = if round % 2 == 0 {
            "shared".to_string()
        } else {
            format!("new-{round}")
        };
        let old = m
            .add_virtual_disk(ro_mount(&format!("old-{round}")).owner("c"))
            .await
            .unwrap();
        let adder = {
            let m = m.clone();
            tokio::spawn(async move { m.add_virtual_disk(ro_mount(&disk).owner("c")).await })
        };
        // Start release_owner at varied points of the add: mostly right when its handle has been
        // issued (while the add waits for its durable point), sometimes anywhere.
        if round % 4 == 0 {
            tokio::time::sleep(Duration::from_micros(u64::from(round) * 13 % 2000)).await;
        } else {
            let old_id = old.handle_id();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline
                && !m.state().handles_by_owner("c").any(|(id, _)| id != old_id)
                && !adder.is_finished()
            {
                tokio::task::yield_now().await;
            }
        }
        let released = m.release_owner("c").await;
        let added = adder.await.unwrap();
        let released = match released {
            Ok(n) => n,
            Err(e) => panic!("round {round}: release_owner: {e}"),
        };
        assert!(
            (1..=2).contains(&released),
            "round {round}: released {released}"
        );
        let new = match added {
            Ok(h) => h,
            Err(e) => panic!("round {round}: add: {e}"),
        };
        assert_eq!(
            old.release().await.map_err(|e| e.to_string()),
            Err(Error::AlreadyReleased.to_string()),
            "round {round}: release_owner released the old handle"
        );
        // The added handle is its caller's: release_owner either released it (it had returned
        // before release_owner started) or left it to the caller.
        match new.release().await {
            Ok(()) | Err(Error::AlreadyReleased) => {}
            Err(e) => panic!("round {round}: releasing the new handle: {e}"),
        }
        let st = m.state();
        assert_eq!(st.handles.len(), 1, "round {round}: {:?}", st.handles);
        assert!(
            st.violations().is_empty(),
            "round {round}: {:?}",
            st.violations()
        );
        assert_vm_matches(&m, &vm);
    }
    keeper.release().await.unwrap();
    assert!(vm.snapshot().is_empty());
    assert_replay_equals_live(&m).await;
}

/// Starts releasing `h` in a task, with the simulated detach slowed to `detach`, and returns
/// once the attachment's teardown is under way (the slot is due for unplug or detach).
async fn release_slowly(
    m: &lunledger::Manager,
    vm: &SimVm,
    h: lunledger::Mount,
    detach: Duration,
) -> tokio::task::JoinHandle<lunledger::Result<()>> {
    vm.set_op_latency(SimOp::Detach, detach);
    let slot = h.slot();
    let task = tokio::spawn(async move { h.release().await });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !m
        .state()
        .attachments
        .get(&slot)
        .is_some_and(|a| a.phase.teardown_due())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "teardown never started"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task
}

fn rw_mount(path: &str) -> DiskRequest {
    DiskRequest::new(path).mount(MountConfig::default())
}

/// Issue #15 item 3: re-adding a read-write disk while its previous attachment is still being
/// torn down waits for the teardown instead of asking the VM for a second read-write attach
/// of the same image (QEMU: `Failed to get "write" lock`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_adding_a_read_write_disk_waits_for_its_teardown() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let first = m.add_virtual_disk(rw_mount("rw.img")).await.unwrap();
    let releasing = release_slowly(&m, &vm, first, Duration::from_millis(300)).await;
    let again = m.add_virtual_disk(rw_mount("rw.img")).await;
    let again = match again {
        Ok(h) => h,
        Err(e) => panic!("re-add during teardown: {e}"),
    };
    releasing.await.unwrap().unwrap();
    assert_eq!(vm.snapshot().attachments.len(), 1);
    assert_vm_matches(&m, &vm);
    vm.set_op_latency(SimOp::Detach, Duration::ZERO);
    again.release().await.unwrap();
    assert!(vm.snapshot().is_empty());
    assert_replay_equals_live(&m).await;
}

/// The wait is bounded: a teardown that takes longer gives a typed, retryable error, the add
/// leaks nothing, and a retry after the teardown succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_adding_a_read_write_disk_gives_up_typed_when_its_teardown_lasts() {
    let dir = tempdir();
    let vm = SimVm::new();
    let mut opts = ManagerOptions::new(config());
    opts.busy_disk_wait = Duration::from_millis(100);
    let m = open_opts(dir.path(), &vm, opts).await;
    let first = m.add_virtual_disk(rw_mount("rw.img")).await.unwrap();
    let releasing = release_slowly(&m, &vm, first, Duration::from_millis(1500)).await;
    let e = m.add_virtual_disk(rw_mount("rw.img")).await.unwrap_err();
    assert!(
        matches!(e, Error::DiskBusy { ref path, .. } if path == "rw.img"),
        "{e}"
    );
    assert!(e.is_retryable(), "{e}");
    let st = m.state();
    assert_eq!(st.attachments.len(), 1, "only the one being torn down");
    assert!(st.violations().is_empty(), "{:?}", st.violations());
    releasing.await.unwrap().unwrap();
    assert!(vm.snapshot().is_empty());
    let again = m.add_virtual_disk(rw_mount("rw.img")).await.unwrap();
    vm.set_op_latency(SimOp::Detach, Duration::ZERO);
    again.release().await.unwrap();
    assert!(vm.snapshot().is_empty());
    assert_replay_equals_live(&m).await;
}

/// A grant that fails keeps the backend's error (typed, with the VM and path), the add is
/// rolled back with nothing left behind, and the grant's intent (the add's `OpStarted`, naming
/// VM and path) was durable before the call.
#[tokio::test]
async fn a_failed_access_grant_keeps_its_backend_error() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    vm.set_faults(FaultPlan::new().fail_nth(SimOp::Grant, 1, "access denied"));
    let r = m
        .add_virtual_disk(DiskRequest::new("/img/a.vhdx").vm_id("vm-1"))
        .await;
    match r {
        Err(Error::GrantFailed {
            vm_id,
            path,
            source: lunledger::backend::BackendError::Failed(msg),
        }) => {
            assert_eq!((vm_id.as_str(), path.as_str()), ("vm-1", "/img/a.vhdx"));
            assert!(msg.contains("access denied"), "{msg}");
        }
        other => panic!("expected GrantFailed, got {other:?}"),
    }
    assert!(m.state().is_empty(), "{:?}", m.state());
    assert_eq!(vm.calls(SimOp::Attach), 0);
    // The next grant succeeds and the add goes on.
    let h = m
        .add_virtual_disk(DiskRequest::new("/img/a.vhdx").vm_id("vm-1"))
        .await
        .unwrap();
    h.release().await.unwrap();
    m.close().await.unwrap();
}

/// Callers sharing another caller's failed attach or mount get the very error its runner got:
/// the same `Error::Backend`, with the backend's own typed error (not a message string).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_sharing_a_failed_step_get_the_runners_typed_error() {
    use lunledger::backend::BackendError;
    for (op, step) in [(SimOp::Attach, Step::Attach), (SimOp::Mount, Step::Mount)] {
        let dir = tempdir();
        let vm = SimVm::new();
        let m = open(dir.path(), &vm).await;
        vm.set_op_latency(op, Duration::from_millis(100));
        vm.set_faults(FaultPlan::new().fail_always(
            op,
            BackendError::Unsupported("no dm-crypt in this guest".into()),
        ));
        let req = || {
            DiskRequest::new("/img/shared.vhdx")
                .read_only(true)
                .mount(MountConfig::default())
        };
        let (a, b) = tokio::join!(m.add_virtual_disk(req()), m.add_virtual_disk(req()));
        for r in [a.map(|_| ()), b.map(|_| ())] {
            match r {
                Err(Error::Backend {
                    step: s,
                    source: BackendError::Unsupported(msg),
                    ..
                }) => {
                    assert_eq!(s, step);
                    assert!(msg.contains("dm-crypt"), "{msg}");
                }
                other => panic!("{step}: expected the runner's Unsupported error, got {other:?}"),
            }
        }
        // Exactly one of them ran the step: the other shared it.
        let calls = vm.calls(op);
        assert_eq!(calls, 1, "{step}: {calls} calls");
        vm.clear_faults();
        assert!(m.state().handles.is_empty(), "{:?}", m.state().handles);
        m.close().await.unwrap();
    }
}

/// The simulated VM's call log lists every call in order with its result: what an embedder
/// asserts its shim asked of the VM.
#[tokio::test]
async fn the_simulated_vms_call_log_lists_each_call_with_its_result() {
    use lunledger::backend::sim::LoggedCall;
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    vm.clear_call_log();
    let h = m
        .add_virtual_disk(DiskRequest::new("/img/a.vhdx").mount(MountConfig::default()))
        .await
        .unwrap();
    h.release().await.unwrap();
    vm.set_faults(FaultPlan::new().fail_nth(SimOp::Mount, 1, "bad superblock"));
    assert!(m
        .add_virtual_disk(DiskRequest::new("/img/b.vhdx").mount(MountConfig::default()))
        .await
        .is_err());
    let log: Vec<(&'static str, bool)> = vm
        .call_log()
        .iter()
        .map(|LoggedCall { call, result }| {
            let name = match call {
                SimCall::Attach(_) => "attach",
                SimCall::Mount(_) => "mount",
                SimCall::Unmount(_) => "unmount",
                SimCall::Unplug(_) => "unplug",
                SimCall::Detach(_) => "detach",
                _ => "other",
            };
            (name, result.is_ok())
        })
        .collect();
    assert_eq!(
        log,
        vec![
            ("attach", true),
            ("mount", true),
            ("unmount", true),
            ("unplug", true),
            ("detach", true),
            ("attach", true),
            ("mount", false),
            ("unplug", true),
            ("detach", true),
        ]
    );
    m.close().await.unwrap();
}

/// Reference counts, slots, paths and phases are readable without cloning the state, and an
/// EVD add with a VM id is refused (hcsshim grants nothing for EVDs).
#[tokio::test]
async fn attachments_and_mounts_are_listed_with_their_refcounts() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let req = || {
        DiskRequest::new("/img/layer.vhdx")
            .read_only(true)
            .mount(MountConfig::default())
    };
    let a = m.add_virtual_disk(req()).await.unwrap();
    let b = m.add_virtual_disk(req()).await.unwrap();
    let c = m
        .add_virtual_disk(DiskRequest::new("/img/other.vhdx"))
        .await
        .unwrap();
    let atts = m.attachments();
    assert_eq!(atts.len(), 2, "{atts:?}");
    let layer = atts
        .iter()
        .find(|x| x.disk.path == "/img/layer.vhdx")
        .unwrap();
    assert_eq!((layer.refs, layer.slot), (2, a.slot()));
    let mounts = m.mounts();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(
        (mounts[0].refs, mounts[0].path.as_str()),
        (2, a.guest_path())
    );
    b.release().await.unwrap();
    assert_eq!(m.mounts()[0].refs, 1);
    a.release().await.unwrap();
    c.release().await.unwrap();
    assert!(m.attachments().is_empty() && m.mounts().is_empty());
    assert!(matches!(
        m.add_extensible_virtual_disk(DiskRequest::new("evd://space/x").vm_id("vm-1"))
            .await,
        Err(Error::InvalidInput(_))
    ));
    m.close().await.unwrap();
}

/// Issue #12 item 4: what the journal's open found about its own integrity (a missing durable
/// watermark here) reaches the shim in the recovery report, not only a log line.
#[tokio::test]
async fn journal_integrity_findings_reach_the_recovery_report() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let h = m.add_virtual_disk(ro_mount("/img/a.vhdx")).await.unwrap();
    h.release().await.unwrap();
    let r = m.last_recovery().unwrap();
    assert!(r.journal_findings.is_empty(), "{:?}", r.journal_findings);
    m.close().await.unwrap();
    std::fs::remove_file(dir.path().join(lunledger::journal::WATERMARK_FILE)).unwrap();
    let m = open(dir.path(), &vm).await;
    let r = m.last_recovery().unwrap();
    assert_eq!(r.journal_findings.len(), 1, "{:?}", r.journal_findings);
    assert!(
        r.journal_findings[0].contains("watermark"),
        "{:?}",
        r.journal_findings
    );
    m.close().await.unwrap();
}
