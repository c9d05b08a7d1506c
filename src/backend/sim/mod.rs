//! A simulated VM: one in-process VM whose host side implements [`HostBackend`] and whose guest
//! side implements [`GuestBackend`], with configurable latency, fault injection ([`faults`]), a
//! call observer, and an optional state file ([`persist`]) so the VM outlives the process
//! driving it.
//!
//! # Semantics
//!
//! Strict, so that manager bugs fail loudly (the rules live in [`state`]):
//!
//! - attach: an empty slot takes the disk; the same attach id with the same disk again is `Ok`;
//!   any other attach at an occupied slot is `Failed`;
//! - detach: an empty slot, or one holding another attachment, is `Ok` with no effect; a device
//!   the guest still sees (not unplugged) is `Failed("detach before unplug ...")`;
//! - mount: the device must be attached with the request's attach id and not unplugged; a path
//!   holding a different mount is `Failed`; the same mount again is `Ok`;
//! - unmount: a path not mounted is `Ok`; a path holding another device's mount is `Failed`;
//! - unplug: an absent or unplugged device is `Ok`; a device with a live mount is
//!   `Failed("device busy ...")`. An unplugged device stays attached on the host (a re-attach
//!   with the same id is `Ok` but does not make the guest see it again, as with a real VM).
//!
//! With [`SimVm::set_strict`]`(false)` an early unplug or detach succeeds and leaves the mounts
//! on the device as zombies ([`SimMount::zombie`]): still listed by the guest, unmountable, but
//! blocking their paths, as a real guest does after a surprise removal.
//!
//! Every call is counted ([`SimVm::calls`]), shown to the observer, delayed by the latency, then
//! subjected to the [`FaultPlan`]; a failed or hung call changes nothing.
//!
//! ```
//! # use lunledger::backend::sim::SimVm;
//! let vm = SimVm::new();
//! let host = vm.host_backend();
//! let guest = vm.guest_backend();
//! # drop((host, guest));
//! assert!(vm.snapshot().is_empty());
//! ```

pub mod faults;
pub mod persist;
pub mod state;

pub use faults::{FaultAction, FaultPlan, FaultRule, SimOp, Trigger, XorShift};
pub use persist::{SimError, STATE_FILE_VERSION};
pub use state::{SimAttachment, SimMount, SimState};

use crate::backend::{
    AttachRequest, BackendError, DetachRequest, GuestBackend, GuestView, HostBackend, HostView,
    MountRequest,
};
use async_trait::async_trait;
use lunledger_model::{GuestOs, ManagerConfig, Slot};
use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// One backend call as the observer sees it, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimCall {
    /// `HostBackend::grant_vm_access(vm_id, path)`.
    Grant {
        /// The VM id.
        vm_id: String,
        /// The host path.
        path: String,
    },
    /// `HostBackend::attach`.
    Attach(AttachRequest),
    /// `HostBackend::detach`.
    Detach(DetachRequest),
    /// `HostBackend::inspect`.
    HostInspect,
    /// `GuestBackend::mount`.
    Mount(MountRequest),
    /// `GuestBackend::unmount`.
    Unmount(MountRequest),
    /// `GuestBackend::unplug`.
    Unplug(Slot),
    /// `GuestBackend::inspect`.
    GuestInspect,
}

impl SimCall {
    /// The call's kind.
    pub fn op(&self) -> SimOp {
        match self {
            SimCall::Grant { .. } => SimOp::Grant,
            SimCall::Attach(_) => SimOp::Attach,
            SimCall::Detach(_) => SimOp::Detach,
            SimCall::HostInspect | SimCall::GuestInspect => SimOp::Inspect,
            SimCall::Mount(_) => SimOp::Mount,
            SimCall::Unmount(_) => SimOp::Unmount,
            SimCall::Unplug(_) => SimOp::Unplug,
        }
    }
}

/// One call in [`SimVm::call_log`]: what was asked, and what the VM answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedCall {
    /// The call.
    pub call: SimCall,
    /// Its result (an inspect's view is left out: `Ok(())`).
    pub result: Result<(), BackendError>,
}

/// How many calls [`SimVm::call_log`] keeps (the oldest go first).
pub const CALL_LOG_LIMIT: usize = 100_000;

/// A hook invoked at the start of every backend call, before latency and faults.
pub type SimObserver = Arc<dyn Fn(&SimCall) + Send + Sync>;

struct Core {
    state: SimState,
    path: Option<PathBuf>,
    strict: bool,
    faults: FaultPlan,
    calls: BTreeMap<SimOp, u64>,
    log: std::collections::VecDeque<LoggedCall>,
    latency: Duration,
    op_latency: BTreeMap<SimOp, Duration>,
    observer: Option<SimObserver>,
}

/// A simulated VM. Cheap to clone: clones share the same VM.
#[derive(Clone)]
pub struct SimVm {
    core: Arc<Mutex<Core>>,
}

impl std::fmt::Debug for SimVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = self.lock();
        f.debug_struct("SimVm")
            .field("state", &core.state)
            .field("path", &core.path)
            .field("strict", &core.strict)
            .finish_non_exhaustive()
    }
}

impl Default for SimVm {
    fn default() -> Self {
        SimVm::new()
    }
}

/// Exclusive access to a simulated VM's fault plan (see [`SimVm::faults_mut`]). Holds the VM's
/// lock: drop it before calling the VM.
pub struct FaultsGuard<'a>(MutexGuard<'a, Core>);

impl std::fmt::Debug for FaultsGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultsGuard").finish_non_exhaustive()
    }
}

impl Deref for FaultsGuard<'_> {
    type Target = FaultPlan;
    fn deref(&self) -> &FaultPlan {
        &self.0.faults
    }
}

impl DerefMut for FaultsGuard<'_> {
    fn deref_mut(&mut self) -> &mut FaultPlan {
        &mut self.0.faults
    }
}

impl SimVm {
    /// An empty in-memory VM in strict mode, with no latency and no faults.
    pub fn new() -> Self {
        SimVm::from_parts(SimState::default(), None)
    }

    /// An empty in-memory VM whose guest runs `guest` (see [`SimState::guest`]).
    pub fn with_guest(guest: GuestOs) -> Self {
        SimVm::from_parts(
            SimState {
                guest,
                ..SimState::default()
            },
            None,
        )
    }

    /// An in-memory VM starting from `state`.
    pub fn with_state(state: SimState) -> Self {
        SimVm::from_parts(state, None)
    }

    /// A VM kept in the file at `path`: loaded from it when it exists (else empty, and the file
    /// is created), and rewritten atomically after every call that changes the state, before
    /// the call returns. One process at a time drives a file: a second [`SimVm`] opened on the
    /// same path (in this process or another) does not see the first one's later changes, and
    /// the last writer wins. Clone the `SimVm` to share it within a process.
    pub fn persistent(path: impl AsRef<Path>) -> Result<SimVm, SimError> {
        SimVm::persistent_with_guest(path, GuestOs::Linux)
    }

    /// [`SimVm::persistent`]; a new file's VM runs `guest`. An existing file keeps the guest
    /// it was created with (an open whose configuration names another one is refused by
    /// `check_config`).
    pub fn persistent_with_guest(
        path: impl AsRef<Path>,
        guest: GuestOs,
    ) -> Result<SimVm, SimError> {
        let path = path.as_ref().to_path_buf();
        let state = match persist::load(&path)? {
            Some(s) => s,
            None => {
                let s = SimState {
                    guest,
                    ..SimState::default()
                };
                persist::save(&path, &s)?;
                s
            }
        };
        Ok(SimVm::from_parts(state, Some(path)))
    }

    fn from_parts(state: SimState, path: Option<PathBuf>) -> Self {
        SimVm {
            core: Arc::new(Mutex::new(Core {
                state,
                path,
                strict: true,
                faults: FaultPlan::new(),
                calls: BTreeMap::new(),
                log: std::collections::VecDeque::new(),
                latency: Duration::ZERO,
                op_latency: BTreeMap::new(),
                observer: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while the lock is held (say, in an `edit_state` closure) cannot leave a torn
        // state: `edit_state` and a persistent VM's calls edit a copy and commit it by one
        // assignment; an in-memory VM's calls change the state in place only through the
        // `apply_*` functions, which check everything before they change anything.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The host side as a trait object.
    pub fn host_backend(&self) -> Arc<dyn HostBackend> {
        Arc::new(self.clone())
    }

    /// The guest side as a trait object.
    pub fn guest_backend(&self) -> Arc<dyn GuestBackend> {
        Arc::new(self.clone())
    }

    /// A copy of the VM's current state.
    pub fn snapshot(&self) -> SimState {
        self.lock().state.clone()
    }

    /// What the host side reports now (no call is counted, no fault applies).
    pub fn host_view(&self) -> HostView {
        self.lock().state.host_view()
    }

    /// What the guest side reports now (no call is counted, no fault applies).
    pub fn guest_view(&self) -> GuestView {
        self.lock().state.guest_view()
    }

    /// Changes the state out of band (drift: a disk someone else attached, a mount that
    /// vanished), persisting it for a persistent VM. On a save error the state is unchanged.
    pub fn edit_state(&self, edit: impl FnOnce(&mut SimState)) -> Result<(), SimError> {
        let mut core = self.lock();
        let mut next = core.state.clone();
        edit(&mut next);
        if let Some(path) = &core.path {
            persist::save(path, &next)?;
        }
        core.state = next;
        Ok(())
    }

    /// The state file of a persistent VM.
    pub fn path(&self) -> Option<PathBuf> {
        self.lock().path.clone()
    }

    /// Strict mode (the default): unplugging a device with a live mount fails with "device
    /// busy", and detaching a device the guest still sees fails with "detach before unplug".
    /// With strict mode off both succeed and leave zombie mounts, as a real guest does.
    pub fn set_strict(&self, strict: bool) {
        self.lock().strict = strict;
    }

    /// Whether strict mode is on.
    pub fn strict(&self) -> bool {
        self.lock().strict
    }

    /// Delays every call by `latency` (zero by default).
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Delays calls of kind `op` by `latency`, instead of the general latency.
    pub fn set_op_latency(&self, op: SimOp, latency: Duration) {
        self.lock().op_latency.insert(op, latency);
    }

    /// Replaces the fault plan.
    pub fn set_faults(&self, plan: FaultPlan) {
        self.lock().faults = plan;
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.set_faults(FaultPlan::new());
    }

    /// Exclusive access to the fault plan, to add rules in place. Drop the guard before calling
    /// the VM.
    pub fn faults_mut(&self) -> FaultsGuard<'_> {
        FaultsGuard(self.lock())
    }

    /// Calls of kind `op` made since the VM was created in this process (faulted calls
    /// included).
    pub fn calls(&self, op: SimOp) -> u64 {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// Installs the call observer.
    pub fn set_observer(&self, observer: SimObserver) {
        self.lock().observer = Some(observer);
    }

    /// Removes the call observer.
    pub fn clear_observer(&self) {
        self.lock().observer = None;
    }

    /// Every call this VM answered since it was created in this process (or since
    /// [`SimVm::clear_call_log`]), in the order they finished, each with its result: the
    /// testing aid for shims, which can assert exactly what their manager asked the VM. A call
    /// that hangs (a `hang` fault) never finishes and is not listed. At most the newest
    /// [`CALL_LOG_LIMIT`] calls are kept.
    pub fn call_log(&self) -> Vec<LoggedCall> {
        self.lock().log.iter().cloned().collect()
    }

    /// Empties the call log.
    pub fn clear_call_log(&self) {
        self.lock().log.clear();
    }

    /// Runs one backend call (see [`SimVm::call_inner`]) and logs it with its result.
    async fn call<T>(
        &self,
        call: SimCall,
        effect: impl FnOnce(&mut SimState, bool) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let res = self.call_inner(call.clone(), effect).await;
        let mut core = self.lock();
        if core.log.len() >= CALL_LOG_LIMIT {
            core.log.pop_front();
        }
        core.log.push_back(LoggedCall {
            call,
            result: res.as_ref().map(|_| ()).map_err(Clone::clone),
        });
        res
    }

    /// Runs one backend call: count it, tell the observer, wait out the latency, apply its
    /// fault if one fires, else apply `effect` (to a copy first, persisted before it is
    /// committed, when the VM has a state file).
    async fn call_inner<T>(
        &self,
        call: SimCall,
        effect: impl FnOnce(&mut SimState, bool) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let op = call.op();
        let (observer, latency, fault) = {
            let mut core = self.lock();
            *core.calls.entry(op).or_insert(0) += 1;
            let latency = core.op_latency.get(&op).copied().unwrap_or(core.latency);
            let fault = core.faults.decide(op);
            (core.observer.clone(), latency, fault)
        };
        if let Some(obs) = observer {
            obs(&call);
        }
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match &fault {
            Some(FaultAction::Fail(e)) => return Err(e.clone()),
            Some(FaultAction::Hang) => return std::future::pending().await,
            _ => {}
        }
        let out = {
            let mut core = self.lock();
            let core = &mut *core;
            match &core.path {
                // A persistent VM saves the changed state before it becomes the state: a copy,
                // so that a failed save leaves the VM as it was.
                Some(path) => {
                    let mut next = core.state.clone();
                    let out = effect(&mut next, core.strict)?;
                    if next != core.state {
                        persist::save(path, &next)
                            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
                        core.state = next;
                    }
                    out
                }
                // In memory, in place: an effect that fails leaves the state untouched (the
                // contract of `SimState`'s `apply_*`, checked by its property test), and a
                // copy per call would cost O(state) on every call of every simulated VM.
                None => effect(&mut core.state, core.strict)?,
            }
        };
        match fault {
            Some(FaultAction::ApplyThenFail(e)) => Err(e),
            Some(FaultAction::ApplyThenHang) => std::future::pending().await,
            _ => Ok(out),
        }
    }
}

#[async_trait]
impl HostBackend for SimVm {
    async fn grant_vm_access(&self, vm_id: &str, path: &str) -> Result<(), BackendError> {
        let call = SimCall::Grant {
            vm_id: vm_id.to_string(),
            path: path.to_string(),
        };
        self.call(call, |_, _| Ok(())).await
    }

    async fn attach(&self, req: &AttachRequest) -> Result<(), BackendError> {
        self.call(SimCall::Attach(req.clone()), |s, _| s.apply_attach(req))
            .await
    }

    async fn detach(&self, req: &DetachRequest) -> Result<(), BackendError> {
        self.call(SimCall::Detach(*req), |s, strict| {
            s.apply_detach(req, strict)
        })
        .await
    }

    async fn inspect(&self) -> Result<HostView, BackendError> {
        self.call(SimCall::HostInspect, |s, _| Ok(s.host_view()))
            .await
    }
}

#[async_trait]
impl GuestBackend for SimVm {
    async fn mount(&self, req: &MountRequest) -> Result<(), BackendError> {
        self.call(SimCall::Mount(req.clone()), |s, _| s.apply_mount(req))
            .await
    }

    async fn unmount(&self, req: &MountRequest) -> Result<(), BackendError> {
        self.call(SimCall::Unmount(req.clone()), |s, _| s.apply_unmount(req))
            .await
    }

    async fn unplug(&self, slot: Slot) -> Result<(), BackendError> {
        self.call(SimCall::Unplug(slot), |s, strict| {
            s.apply_unplug(slot, strict)
        })
        .await
    }

    async fn inspect(&self) -> Result<GuestView, BackendError> {
        self.call(SimCall::GuestInspect, |s, _| Ok(s.guest_view()))
            .await
    }

    /// The configuration must name this VM's guest OS (no call is counted, no fault applies).
    async fn check_config(&self, config: &ManagerConfig) -> Result<(), BackendError> {
        let guest = self.lock().state.guest;
        if config.guest != guest {
            return Err(BackendError::Mismatch(format!(
                "the configuration is for a {} guest, the VM runs a {guest} guest",
                config.guest
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
