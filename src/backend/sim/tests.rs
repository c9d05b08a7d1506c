//! Unit tests of the simulated VM as a backend: calls, faults, latency, observer, persistence.

use super::*;
use lunledger_model::{DiskKind, DiskSpec, MountSpec};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

fn disk(name: &str) -> DiskSpec {
    DiskSpec {
        path: format!("/img/{name}"),
        read_only: false,
        kind: DiskKind::VirtualDisk,
        evd_type: None,
    }
}

fn att(slot: Slot, attach: u64) -> AttachRequest {
    AttachRequest {
        slot,
        attach,
        disk: disk(&format!("d{attach}")),
    }
}

fn mnt(slot: Slot, attach: u64, path: &str) -> MountRequest {
    MountRequest {
        slot,
        attach,
        mount: attach * 10,
        path: path.into(),
        spec: MountSpec::default(),
    }
}

const S0: Slot = Slot::new(0, 0);

#[tokio::test]
async fn full_cycle_through_trait_objects() {
    let vm = SimVm::new();
    let host = vm.host_backend();
    let guest = vm.guest_backend();
    host.grant_vm_access("vm", "/img/d1").await.unwrap();
    host.attach(&att(S0, 1)).await.unwrap();
    guest.mount(&mnt(S0, 1, "/m0")).await.unwrap();
    assert_eq!(guest.inspect().await.unwrap().mounts.len(), 1);
    assert_eq!(host.inspect().await.unwrap().attachments.len(), 1);
    let err = guest.unplug(S0).await.unwrap_err();
    assert!(err.to_string().contains("device busy"), "{err}");
    let err = host
        .detach(&DetachRequest {
            slot: S0,
            attach: 1,
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("detach before unplug"), "{err}");
    guest.unmount(&mnt(S0, 1, "/m0")).await.unwrap();
    guest.unplug(S0).await.unwrap();
    host.detach(&DetachRequest {
        slot: S0,
        attach: 1,
    })
    .await
    .unwrap();
    assert!(vm.snapshot().is_empty());
    assert_eq!(vm.calls(SimOp::Grant), 1);
    assert_eq!(vm.calls(SimOp::Unplug), 2);
    assert_eq!(vm.calls(SimOp::Detach), 2);
    assert_eq!(vm.calls(SimOp::Inspect), 2);
}

#[tokio::test]
async fn lax_mode_models_surprise_removal() {
    let vm = SimVm::new();
    vm.set_strict(false);
    assert!(!vm.strict());
    vm.attach(&att(S0, 1)).await.unwrap();
    vm.mount(&mnt(S0, 1, "/m0")).await.unwrap();
    vm.detach(&DetachRequest {
        slot: S0,
        attach: 1,
    })
    .await
    .unwrap();
    let g = vm.guest_view();
    assert!(g.devices.is_empty());
    assert_eq!(g.mounts.len(), 1, "zombie mount stays listed");
    assert!(vm.snapshot().mounts["/m0"].zombie);
}

#[tokio::test]
async fn failed_call_applies_nothing_and_counts() {
    let vm = SimVm::new();
    vm.set_faults(FaultPlan::new().fail_nth(SimOp::Attach, 1, "injected"));
    let e = vm.attach(&att(S0, 1)).await.unwrap_err();
    assert_eq!(e, BackendError::Failed("injected".into()));
    assert!(vm.snapshot().is_empty());
    vm.attach(&att(S0, 1)).await.unwrap();
    assert_eq!(vm.calls(SimOp::Attach), 2);
    assert_eq!(vm.faults_mut().count(SimOp::Attach), 2);
}

#[tokio::test]
async fn succeed_but_report_failure_applies_the_effect() {
    let vm = SimVm::new();
    vm.set_faults(FaultPlan::new().succeed_but_fail_nth(SimOp::Attach, 1, 250));
    let e = vm.attach(&att(S0, 1)).await.unwrap_err();
    assert_eq!(
        e,
        BackendError::Timeout {
            call: "simulated Attach".into(),
            ms: 250
        }
    );
    assert_eq!(vm.host_view().attachments.len(), 1);
    // The retry is idempotent.
    vm.attach(&att(S0, 1)).await.unwrap();
}

#[tokio::test]
async fn hang_never_completes_and_applies_nothing() {
    let vm = SimVm::new();
    vm.faults_mut().push(FaultRule {
        op: SimOp::Mount,
        trigger: Trigger::Always,
        action: FaultAction::Hang,
    });
    vm.attach(&att(S0, 1)).await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(50), vm.mount(&mnt(S0, 1, "/m"))).await;
    assert!(r.is_err(), "mount should hang");
    assert!(vm.snapshot().mounts.is_empty());
    vm.faults_mut().clear();
    vm.mount(&mnt(S0, 1, "/m")).await.unwrap();

    vm.set_faults(FaultPlan::new().succeed_but_hang_nth(SimOp::Unmount, 1));
    let r = tokio::time::timeout(Duration::from_millis(50), vm.unmount(&mnt(S0, 1, "/m"))).await;
    assert!(r.is_err(), "unmount should hang");
    assert!(vm.snapshot().mounts.is_empty(), "but its effect happened");
}

#[tokio::test]
async fn inspect_faults_hit_both_sides() {
    let vm = SimVm::new();
    vm.set_faults(FaultPlan::new().fail_always(
        SimOp::Inspect,
        BackendError::Unavailable("agent down".into()),
    ));
    assert!(HostBackend::inspect(&vm).await.is_err());
    assert!(GuestBackend::inspect(&vm).await.is_err());
    vm.clear_faults();
    assert!(HostBackend::inspect(&vm).await.is_ok());
    assert_eq!(vm.calls(SimOp::Inspect), 3);
}

#[tokio::test]
async fn probabilistic_faults_are_reproducible() {
    async fn run(seed: u64) -> Vec<bool> {
        let vm = SimVm::new();
        vm.set_faults(FaultPlan::seeded(seed).fail_with_probability(SimOp::Unplug, 0.5, "dice"));
        let mut out = Vec::new();
        for _ in 0..64 {
            out.push(vm.unplug(S0).await.is_err());
        }
        out
    }
    let a = run(42).await;
    assert_eq!(a, run(42).await);
    assert!(a.iter().any(|x| *x) && a.iter().any(|x| !*x));
}

#[tokio::test]
async fn latency_delays_calls() {
    let vm = SimVm::new();
    vm.set_latency(Duration::from_millis(30));
    let t = Instant::now();
    vm.unplug(S0).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(30));
    vm.set_op_latency(SimOp::Unplug, Duration::ZERO);
    let t = Instant::now();
    vm.unplug(S0).await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(30));
}

#[tokio::test]
async fn observer_sees_each_call_before_its_effect() {
    let vm = SimVm::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    {
        let seen = seen.clone();
        let count = count.clone();
        let probe = vm.clone();
        vm.set_observer(Arc::new(move |c: &SimCall| {
            // The VM is not locked while the observer runs, and the effect is not applied yet.
            if let SimCall::Attach(r) = c {
                assert!(probe.snapshot().attachment(r.slot).is_none());
            }
            count.fetch_add(1, Ordering::SeqCst);
            seen.lock().unwrap().push(c.clone());
        }));
    }
    vm.attach(&att(S0, 1)).await.unwrap();
    vm.unplug(S0).await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![SimCall::Attach(att(S0, 1)), SimCall::Unplug(S0)]
    );
    vm.clear_observer();
    vm.detach(&DetachRequest {
        slot: S0,
        attach: 1,
    })
    .await
    .unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn persistent_vm_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.json");
    {
        let vm = SimVm::persistent(&path).unwrap();
        assert!(path.exists());
        assert_eq!(vm.path(), Some(path.clone()));
        vm.attach(&att(Slot::new(1, 3), 1)).await.unwrap();
        vm.mount(&mnt(Slot::new(1, 3), 1, "/m0")).await.unwrap();
        // A faulted call that applied its effect is persisted too.
        vm.set_faults(FaultPlan::new().succeed_but_fail_nth(SimOp::Attach, 1, 1));
        assert!(vm.attach(&att(S0, 2)).await.is_err());
    }
    let vm = SimVm::persistent(&path).unwrap();
    let s = vm.snapshot();
    assert_eq!(s.attachments.len(), 2);
    assert_eq!(s.mounts["/m0"].slot, Slot::new(1, 3));
    vm.edit_state(|s| s.mounts.clear()).unwrap();
    assert!(SimVm::persistent(&path)
        .unwrap()
        .snapshot()
        .mounts
        .is_empty());
}

#[tokio::test]
async fn corrupt_state_file_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.json");
    std::fs::write(&path, b"{\"version\":1,\"state\":").unwrap();
    match SimVm::persistent(&path) {
        Err(SimError::Corrupt { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn failed_save_leaves_state_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let vm = SimVm::persistent(sub.join("vm.json")).unwrap();
    std::fs::remove_dir_all(&sub).unwrap();
    let e = vm.attach(&att(S0, 1)).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable(_)), "{e}");
    assert!(vm.snapshot().is_empty());
    // Calls without an effect do not write.
    vm.unplug(S0).await.unwrap();
    assert!(vm.edit_state(|s| s.mounts.clear()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_on_a_persistent_vm_are_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.json");
    let vm = SimVm::persistent(&path).unwrap();
    let mut tasks = Vec::new();
    for i in 0..32u32 {
        let vm = vm.clone();
        tasks.push(tokio::spawn(async move {
            let s = Slot::new(i / 8, i % 8);
            let a = u64::from(i) + 1;
            vm.attach(&att(s, a)).await.unwrap();
            vm.mount(&mnt(s, a, &format!("/m{i}"))).await.unwrap();
            if i % 2 == 0 {
                vm.unmount(&mnt(s, a, &format!("/m{i}"))).await.unwrap();
                vm.unplug(s).await.unwrap();
                vm.detach(&DetachRequest { slot: s, attach: a })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = vm.snapshot();
    assert_eq!(s.attachments.len(), 16);
    assert_eq!(s.mounts.len(), 16);
    assert_eq!(vm.calls(SimOp::Attach), 32);
    assert_eq!(SimVm::persistent(&path).unwrap().snapshot(), s);
}
