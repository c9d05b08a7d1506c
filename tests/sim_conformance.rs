//! The backend conformance suite on the simulated VM, in memory and persistent, plus checks that
//! the suite catches a broken backend and that a persistent VM outlives a killed driver.

use lunledger_test_support::conformance;

use async_trait::async_trait;
use conformance::Fixture;
use lunledger::backend::sim::{SimOp, SimVm};
use lunledger::backend::{
    AttachRequest, BackendError, DetachRequest, GuestBackend, HostBackend, HostView, MountRequest,
};
use lunledger::model::{DiskKind, DiskSpec, GuestOs, MountSpec, Slot};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct SimFixture {
    vm: SimVm,
    _dir: Option<tempfile::TempDir>,
}

impl SimFixture {
    fn in_memory() -> Self {
        SimFixture {
            vm: SimVm::new(),
            _dir: None,
        }
    }

    fn windows() -> Self {
        SimFixture {
            vm: SimVm::with_guest(GuestOs::Windows),
            _dir: None,
        }
    }

    fn persistent() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let vm = SimVm::persistent(dir.path().join("vm.json")).unwrap();
        SimFixture {
            vm,
            _dir: Some(dir),
        }
    }

    /// After a case: the VM is empty, and a persistent VM's file holds exactly its state.
    fn finish(&self) {
        assert!(self.vm.snapshot().is_empty(), "{:?}", self.vm.snapshot());
        if let Some(path) = self.vm.path() {
            let reopened = SimVm::persistent(&path).unwrap();
            assert_eq!(reopened.snapshot(), self.vm.snapshot());
        }
    }
}

fn sim_disk(name: &str, read_only: bool) -> DiskSpec {
    DiskSpec {
        path: format!("/sim/images/{name}.img"),
        read_only,
        kind: DiskKind::VirtualDisk,
        evd_type: None,
    }
}

fn sim_slots() -> Vec<Slot> {
    (0..4)
        .flat_map(|c| (0..64).map(move |l| Slot::new(c, l)))
        .collect()
}

impl Fixture for SimFixture {
    fn host(&self) -> Arc<dyn HostBackend> {
        self.vm.host_backend()
    }
    fn guest(&self) -> Arc<dyn GuestBackend> {
        self.vm.guest_backend()
    }
    fn disk(&self, name: &str, read_only: bool) -> DiskSpec {
        sim_disk(name, read_only)
    }
    fn slots(&self) -> Vec<Slot> {
        // A Windows utility VM has one controller.
        let controllers = match self.vm.snapshot().guest {
            GuestOs::Linux => 4,
            GuestOs::Windows => 1,
        };
        sim_slots()
            .into_iter()
            .filter(|s| s.controller < controllers)
            .collect()
    }
    fn has_guest(&self) -> bool {
        true
    }
    fn guest_os(&self) -> GuestOs {
        self.vm.snapshot().guest
    }
}

macro_rules! each_case {
    ($($case:ident),* $(,)?) => {
        mod in_memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let f = SimFixture::in_memory();
                    conformance::$case(&f).await;
                    f.finish();
                }
            )*
        }
        mod windows {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let f = SimFixture::windows();
                    conformance::$case(&f).await;
                    f.finish();
                }
            )*
        }
        mod persistent {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let f = SimFixture::persistent();
                    conformance::$case(&f).await;
                    f.finish();
                }
            )*
        }
        #[test]
        fn every_case_is_listed_once() {
            let ours = [$(stringify!($case)),*];
            assert_eq!(ours.as_slice(), conformance::CASES);
        }
    };
}

each_case!(
    attach_then_inspect_shows_it,
    attach_is_idempotent,
    attach_over_another_attachment_fails,
    detach_of_empty_slot_succeeds,
    detach_after_attach_removes_it,
    attach_at_several_slots,
    read_only_attach_is_reported,
    mount_then_guest_inspect_shows_it,
    mount_is_idempotent,
    unmount_is_idempotent,
    unplug_then_detach_leaves_nothing,
    block_device_mount_shows_as_block_dev,
    full_teardown_leaves_empty_views,
);

#[tokio::test]
async fn run_all_in_memory_twice_on_one_vm() {
    let f = SimFixture::in_memory();
    conformance::run_all(&f).await;
    conformance::run_all(&f).await;
    f.finish();
    // Strict mode held throughout: no case unplugged a mounted device or detached early.
    assert!(f.vm.strict());
}

#[tokio::test]
async fn run_all_windows_twice_on_one_vm() {
    let f = SimFixture::windows();
    conformance::run_all(&f).await;
    conformance::run_all(&f).await;
    f.finish();
    // The suite never asked the Windows guest to unplug but once, in the case that checks it
    // is refused (each run).
    assert_eq!(f.vm.calls(SimOp::Unplug), 2);
}

#[tokio::test]
async fn run_all_persistent() {
    let f = SimFixture::persistent();
    conformance::run_all(&f).await;
    f.finish();
    assert!(f.vm.calls(SimOp::Attach) > 0);
}

#[tokio::test]
async fn run_all_with_latency() {
    let f = SimFixture::in_memory();
    f.vm.set_latency(Duration::from_millis(1));
    conformance::run_all(&f).await;
    f.finish();
}

/// Guest cases are skipped, not failed, on a fixture without a guest.
struct HostOnly(SimFixture);

impl Fixture for HostOnly {
    fn host(&self) -> Arc<dyn HostBackend> {
        self.0.host()
    }
    fn guest(&self) -> Arc<dyn GuestBackend> {
        panic!("the suite called the guest of a fixture without one")
    }
    fn disk(&self, name: &str, read_only: bool) -> DiskSpec {
        self.0.disk(name, read_only)
    }
    fn slots(&self) -> Vec<Slot> {
        self.0.slots()
    }
    fn has_guest(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn run_all_host_only() {
    let f = HostOnly(SimFixture::in_memory());
    f.0.vm.set_strict(false);
    conformance::run_all(&f).await;
    f.0.finish();
    assert_eq!(f.0.vm.calls(SimOp::Mount), 0);
    assert_eq!(f.0.vm.calls(SimOp::Unplug), 0);
}

// ---------------------------------------------------------------------------------------------
// The suite catches broken backends.

/// A host side with one deliberate bug.
#[derive(Clone, Copy)]
enum Bug {
    DetachIsNoop,
    InspectHidesAttachId,
    AttachNotIdempotent,
}

struct BuggyHost {
    vm: SimVm,
    bug: Bug,
}

#[async_trait]
impl HostBackend for BuggyHost {
    async fn attach(&self, req: &AttachRequest) -> Result<(), BackendError> {
        if matches!(self.bug, Bug::AttachNotIdempotent)
            && self.vm.snapshot().attachment(req.slot).is_some()
        {
            return Err(BackendError::Failed("slot in use".into()));
        }
        HostBackend::attach(&self.vm, req).await
    }
    async fn detach(&self, req: &DetachRequest) -> Result<(), BackendError> {
        if matches!(self.bug, Bug::DetachIsNoop) {
            return Ok(());
        }
        HostBackend::detach(&self.vm, req).await
    }
    async fn inspect(&self) -> Result<HostView, BackendError> {
        let mut v = HostBackend::inspect(&self.vm).await?;
        if matches!(self.bug, Bug::InspectHidesAttachId) {
            for a in &mut v.attachments {
                a.attach = None;
            }
        }
        Ok(v)
    }
}

struct Buggy {
    inner: SimFixture,
    bug: Bug,
}

impl Fixture for Buggy {
    fn host(&self) -> Arc<dyn HostBackend> {
        Arc::new(BuggyHost {
            vm: self.inner.vm.clone(),
            bug: self.bug,
        })
    }
    fn guest(&self) -> Arc<dyn GuestBackend> {
        self.inner.guest()
    }
    fn disk(&self, name: &str, read_only: bool) -> DiskSpec {
        self.inner.disk(name, read_only)
    }
    fn slots(&self) -> Vec<Slot> {
        self.inner.slots()
    }
    fn has_guest(&self) -> bool {
        true
    }
}

fn buggy(bug: Bug) -> Buggy {
    Buggy {
        inner: SimFixture::in_memory(),
        bug,
    }
}

#[tokio::test]
#[should_panic(expected = "still held")]
async fn suite_catches_a_detach_that_does_nothing() {
    conformance::detach_after_attach_removes_it(&buggy(Bug::DetachIsNoop)).await;
}

#[tokio::test]
#[should_panic(expected = "attach id")]
async fn suite_catches_an_inspect_without_attach_ids() {
    conformance::attach_then_inspect_shows_it(&buggy(Bug::InspectHidesAttachId)).await;
}

#[tokio::test]
#[should_panic(expected = "slot in use")]
async fn suite_catches_a_non_idempotent_attach() {
    conformance::attach_is_idempotent(&buggy(Bug::AttachNotIdempotent)).await;
}

// ---------------------------------------------------------------------------------------------
// A persistent VM outlives a driver killed with SIGKILL.

const CHILD_ENV: &str = "LUNLEDGER_SIM_CHILD_STATE";

/// Runs only as the child of `persistent_vm_outlives_a_killed_driver`: attaches and mounts on
/// the persistent VM, says so, and waits to be killed.
#[tokio::test]
async fn sim_child_driver() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let vm = SimVm::persistent(&path).unwrap();
    let att = AttachRequest {
        slot: Slot::new(2, 9),
        attach: 77,
        disk: sim_disk("child", false),
    };
    HostBackend::attach(&vm, &att).await.unwrap();
    let m = MountRequest {
        slot: att.slot,
        attach: att.attach,
        mount: 1,
        path: "/run/child".into(),
        spec: MountSpec::default(),
    };
    GuestBackend::mount(&vm, &m).await.unwrap();
    std::fs::write(format!("{path}.ready"), b"ready").unwrap();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn persistent_vm_outlives_a_killed_driver() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.json");
    let ready = dir.path().join("vm.json.ready");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sim_child_driver",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child exited early: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "child never got ready"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let vm = SimVm::persistent(&path).unwrap();
    let g = vm.guest_view();
    assert_eq!(g.devices, vec![Slot::new(2, 9)]);
    assert_eq!(g.mounts.len(), 1);
    assert_eq!(vm.host_view().attachments[0].attach, Some(77));
    // A new driver finishes the teardown on the same VM.
    let m = MountRequest {
        slot: Slot::new(2, 9),
        attach: 77,
        mount: 1,
        path: "/run/child".into(),
        spec: MountSpec::default(),
    };
    GuestBackend::unmount(&vm, &m).await.unwrap();
    GuestBackend::unplug(&vm, Slot::new(2, 9)).await.unwrap();
    HostBackend::detach(
        &vm,
        &DetachRequest {
            slot: Slot::new(2, 9),
            attach: 77,
        },
    )
    .await
    .unwrap();
    assert!(SimVm::persistent(&path).unwrap().snapshot().is_empty());
}
