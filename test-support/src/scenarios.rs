//! The crash matrix's scenarios and checks, shared with the storage fault matrix: scripts of
//! manager calls on a simulated VM, a hook that counts (and stops at) crash points, and what
//! must hold after a recovery.

use crate::assert_replay_equals_live;
use crate::assert_vm_matches;
use lunledger::backend::sim::{FaultPlan, SimOp, SimVm};
use lunledger::crash::{CrashHook, CrashPoint};
use lunledger::model::{GuestOs, HandleId};
use lunledger::{DiskRequest, Error, Manager, MountConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Crashes at the `target`-th point reached (never, for `None`) and records the points seen.
#[derive(Debug)]
pub struct Hook {
    target: Option<usize>,
    seen: AtomicUsize,
    /// Every crash point reached, in order, the one it crashed at included.
    pub points: Mutex<Vec<CrashPoint>>,
}

impl Hook {
    /// A hook, ready for `ManagerOptions::crash_hook`, that crashes at the point reached with
    /// index `target` (counting from 0).
    pub fn new(target: Option<usize>) -> Arc<Hook> {
        Arc::new(Hook {
            target,
            seen: AtomicUsize::new(0),
            points: Mutex::new(Vec::new()),
        })
    }
    /// How many crash points were reached so far.
    pub fn count(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

impl CrashHook for Hook {
    fn crash_at(&self, p: &CrashPoint) -> bool {
        let i = self.seen.fetch_add(1, Ordering::SeqCst);
        self.points.lock().unwrap().push(*p);
        Some(i) == self.target
    }
}

/// A scenario: manager calls on the VM (which it may give faults or a stray disk), pushing
/// every handle it gets to the vector and removing those it releases; boxed so that
/// scenarios fit in one table.
pub type Script =
    for<'a> fn(
        &'a Manager,
        &'a SimVm,
        &'a mut Vec<HandleId>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + 'a>>;

/// A request for the read-only disk at `path`, mounted with the default configuration.
pub fn mounted(path: &str) -> DiskRequest {
    DiskRequest::new(path)
        .read_only(true)
        .mount(MountConfig::default())
}

/// Adds a virtual disk as `req` asks and, once the add returned it, counts its handle as held.
pub async fn add(m: &Manager, req: DiskRequest, held: &mut Vec<HandleId>) -> Result<(), Error> {
    let h = m.add_virtual_disk(req).await?;
    held.push(h.handle_id());
    Ok(())
}

/// Releases `held[i]`. While the release runs the handle is not counted as held: a crash then
/// may leave it live (release not journaled yet) or released (recovery finished it).
pub async fn release(m: &Manager, held: &mut Vec<HandleId>, i: usize) -> Result<(), Error> {
    let id = held.remove(i);
    let h = m.handle(id).ok_or(Error::UnknownHandle(id))?;
    match h.release().await {
        Err(e @ Error::Backend { .. }) => {
            held.insert(i, id);
            Err(e)
        }
        r => r,
    }
}

/// The scenarios for a Linux guest.
pub fn scenarios() -> Vec<(&'static str, Script)> {
    scenarios_for(GuestOs::Linux)
}

/// The scenarios for `guest`. A Windows guest has no unplug step, so its failed teardown
/// step is the detach.
pub fn scenarios_for(guest: GuestOs) -> Vec<(&'static str, Script)> {
    let mut v = common_scenarios();
    v.push(match guest {
        GuestOs::Linux => ("failed unplug, then retried release", |m, vm, h| {
            Box::pin(failed_teardown_then_retry(m, vm, h, SimOp::Unplug))
        }),
        GuestOs::Windows => ("failed detach, then retried release", |m, vm, h| {
            Box::pin(failed_teardown_then_retry(m, vm, h, SimOp::Detach))
        }),
    });
    v
}

async fn failed_teardown_then_retry(
    m: &Manager,
    vm: &SimVm,
    h: &mut Vec<HandleId>,
    op: SimOp,
) -> Result<(), Error> {
    add(m, mounted("a"), h).await?;
    vm.set_faults(FaultPlan::new().fail_nth(op, 1, "device busy"));
    match release(m, h, 0).await {
        Err(Error::Backend { .. }) => {}
        Err(e) => return Err(e),
        Ok(()) => panic!("the {op:?} fault did not fire"),
    }
    release(m, h, 0).await
}

fn common_scenarios() -> Vec<(&'static str, Script)> {
    vec![
        ("attach only", |m, _, h| {
            Box::pin(add(m, DiskRequest::new("a"), h))
        }),
        ("attach+mount", |m, _, h| Box::pin(add(m, mounted("a"), h))),
        ("shared attach", |m, _, h| {
            Box::pin(async move {
                add(m, DiskRequest::new("a"), h).await?;
                add(m, DiskRequest::new("a"), h).await
            })
        }),
        ("shared mount", |m, _, h| {
            Box::pin(async move {
                add(m, mounted("a"), h).await?;
                add(m, mounted("a"), h).await
            })
        }),
        ("release of the last reference", |m, _, h| {
            Box::pin(async move {
                add(m, mounted("a"), h).await?;
                release(m, h, 0).await
            })
        }),
        ("release of a non-last reference", |m, _, h| {
            Box::pin(async move {
                add(m, mounted("a"), h).await?;
                add(m, mounted("a"), h).await?;
                release(m, h, 0).await
            })
        }),
        ("block-device mount", |m, _, h| {
            let cfg = MountConfig {
                block_dev: true,
                ..Default::default()
            };
            Box::pin(async move {
                add(m, DiskRequest::new("a").mount(cfg), h).await?;
                release(m, h, 0).await
            })
        }),
        ("failed mount rolls back the attach", |m, vm, h| {
            Box::pin(async move {
                vm.set_faults(FaultPlan::new().fail_nth(SimOp::Mount, 1, "bad superblock"));
                match add(m, mounted("a"), h).await {
                    Err(Error::Backend { .. }) => Ok(()),
                    Err(e) => Err(e),
                    Ok(()) => panic!("the mount fault did not fire"),
                }
            })
        }),
        ("add with a VM access grant", |m, _, h| {
            Box::pin(add(m, mounted("a").vm_id("vm-1"), h))
        }),
        (
            "a stray disk in the VM (recovery detaches it), then an add",
            |m, vm, h| {
                Box::pin(async move {
                    inject_stray(vm).await;
                    add(m, mounted("a"), h).await
                })
            },
        ),
    ]
}

/// Unmount, unplug and detach calls the VM has seen.
pub fn teardown_calls(vm: &SimVm) -> u64 {
    [SimOp::Unmount, SimOp::Unplug, SimOp::Detach]
        .into_iter()
        .map(|op| vm.calls(op))
        .sum()
}

/// Everything that must hold after a recovery.
pub async fn check_recovered(m: &Manager, vm: &SimVm, held: &[HandleId], what: &str) {
    assert_replay_equals_live(m).await;
    assert_vm_matches(m, vm);
    for id in held {
        assert!(
            m.handle(*id).is_some(),
            "{what}: handle {id} returned before the crash was lost"
        );
    }
    let st = m.state();
    assert!(
        st.ops.is_empty(),
        "{what}: operations still in flight: {:?}",
        st.ops
    );
}

/// Releases every live handle, then asserts that the state and the VM are empty and that the
/// journal replays to the live state; `what` names the case in the messages.
pub async fn release_all_and_check_empty(m: &Manager, vm: &SimVm, what: &str) {
    for h in m.handles() {
        h.release()
            .await
            .unwrap_or_else(|e| panic!("{what}: release {}: {e}", h.handle_id()));
    }
    assert!(
        m.state().is_empty(),
        "{what}: state not empty: {:?}",
        m.state()
    );
    assert!(
        vm.snapshot().is_empty(),
        "{what}: VM not empty: {:?}",
        vm.snapshot()
    );
    assert_replay_equals_live(m).await;
}

/// Where [`inject_stray`] puts a disk the journal never attached (far from where adds go).
pub const STRAY_SLOT: (u32, u32) = (3, 63);
/// [`STRAY_SLOT`] on a Windows guest, whose VM has a single controller.
pub const STRAY_SLOT_WINDOWS: (u32, u32) = (0, 63);

/// Attaches a disk behind the manager's back, as another tool or a lost journal would: drift
/// that recovery (with `detach_unknown`) repairs by unplugging and detaching it.
pub async fn inject_stray(vm: &SimVm) {
    use lunledger::backend::AttachRequest;
    use lunledger::model::{DiskKind, DiskSpec, Slot};
    let (c, l) = match vm.snapshot().guest {
        GuestOs::Linux => STRAY_SLOT,
        GuestOs::Windows => STRAY_SLOT_WINDOWS,
    };
    let req = AttachRequest {
        slot: Slot::new(c, l),
        attach: 0,
        disk: DiskSpec {
            path: "/img/stray.vhdx".into(),
            read_only: true,
            kind: DiskKind::VirtualDisk,
            evd_type: None,
        },
    };
    if let Err(e) = vm.host_backend().attach(&req).await {
        panic!("injecting a stray disk: {e}");
    }
}
