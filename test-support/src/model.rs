//! A reference model of the manager in plain Rust (no I/O), the operations a property test or a
//! fuzzer drives it with, and the harness that runs the same operations against a real `Manager`
//! on a `SimVm` and checks after every one that both agree.
//!
//! Shared by `tests/proptest_manager.rs` (proptest strategies) and the `manager_ops` fuzz target
//! (`arbitrary`), so both check exactly the same semantics. Any disagreement panics with the
//! operation index and what differed: proptest shrinks it, libFuzzer saves it.
#![allow(dead_code)]

use crate::assert_replay_equals_live;
use arbitrary::Arbitrary;
use lunledger::backend::sim::{FaultPlan, SimOp, SimVm};
use lunledger::crash::{Boundary, CrashHook, CrashPoint, Site};
use lunledger::model::{GuestOs, HandleId, ManagerConfig, Slot};
use lunledger::recovery::{AttachPhase, MountPhase, State};
use lunledger::{DiskRequest, Error, Manager, ManagerOptions, Mount, MountConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

/// Number of distinct disk paths; small so that adds share attachments often.
pub const DISKS: u8 = 3;

/// The disk kind an add asks for.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `add_virtual_disk`, host path `/d/N`.
    Virtual,
    /// `add_physical_disk`, at the same host path as [`Kind::Virtual`]: only the kind tells the
    /// two apart.
    Physical,
    /// `add_extensible_virtual_disk`, host path `evd://t/dN`.
    Evd,
}

/// The mount an add asks for. `OptsAb` and `OptsBa` hold the same options in another order: they
/// must share a mount.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MountChoice {
    /// The default mount: no options.
    Plain,
    /// The option `ro`.
    Ro,
    /// The options `a` and `b`.
    OptsAb,
    /// The options `b` and `a`: the same mount as [`MountChoice::OptsAb`].
    OptsBa,
    /// A block-device mount (`MountConfig::block_dev`).
    BlockDev,
}

impl MountChoice {
    /// The mount key part that the choice decides (options compare sorted).
    fn key(self) -> MountChoice {
        match self {
            MountChoice::OptsBa => MountChoice::OptsAb,
            other => other,
        }
    }

    fn config(self) -> MountConfig {
        let options = match self {
            MountChoice::Ro => vec!["ro".to_string()],
            MountChoice::OptsAb => vec!["a".to_string(), "b".to_string()],
            MountChoice::OptsBa => vec!["b".to_string(), "a".to_string()],
            _ => Vec::new(),
        };
        MountConfig {
            options,
            block_dev: self == MountChoice::BlockDev,
            ..Default::default()
        }
    }
}

/// One add request, in a form both proptest and `arbitrary` generate easily.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct AddArgs {
    /// Disk number (taken modulo [`DISKS`]).
    pub disk: u8,
    /// Which add call, and the form of the host path.
    pub kind: Kind,
    /// Whether the disk is attached read-only (part of what decides sharing).
    pub read_only: bool,
    /// The mount asked for; `None`: attach only (then a requested path is invalid).
    pub mount: Option<MountChoice>,
    /// Requested guest path: 0 and 1 are `/g/0`, `/g/1`; 2 and 3 are what the mount format
    /// generates for indexes 0 and 1 (a generated path must never collide with them).
    pub path: Option<u8>,
    /// Owner label: `c0`, `c1` or `c2` (taken modulo 3); `None`: no owner.
    pub owner: Option<u8>,
}

impl AddArgs {
    fn disk_key(&self) -> DiskKey {
        DiskKey {
            kind: self.kind,
            disk: self.disk % DISKS,
            read_only: self.read_only,
        }
    }

    fn requested_path(&self) -> Option<String> {
        self.requested_path_for(GuestOs::Linux)
    }

    /// The requested path in `guest`'s syntax (the Windows harness format is `c:\m\%d`).
    fn requested_path_for(&self, guest: GuestOs) -> Option<String> {
        let sep = match guest {
            GuestOs::Linux => "/",
            GuestOs::Windows => "\\",
        };
        let root = match guest {
            GuestOs::Linux => "",
            GuestOs::Windows => "c:",
        };
        self.path.map(|p| match p % 4 {
            0 => format!("{root}{sep}g{sep}0"),
            1 => format!("{root}{sep}g{sep}1"),
            2 => format!("{root}{sep}m{sep}0"),
            _ => format!("{root}{sep}m{sep}1"),
        })
    }

    fn request(&self) -> DiskRequest {
        self.request_for(GuestOs::Linux)
    }

    fn request_for(&self, guest: GuestOs) -> DiskRequest {
        let d = self.disk % DISKS;
        let host = match self.kind {
            // Virtual and physical use the same path: the kind alone must keep them apart.
            Kind::Virtual | Kind::Physical => format!("/d/{d}"),
            Kind::Evd => format!("evd://t/d{d}"),
        };
        let mut r = DiskRequest::new(host).read_only(self.read_only);
        if let Some(m) = self.mount {
            r = r.mount(m.config());
        }
        if let Some(p) = self.requested_path_for(guest) {
            r = r.guest_path(p);
        }
        if let Some(o) = self.owner_label() {
            r = r.owner(o);
        }
        r
    }

    fn owner_label(&self) -> Option<String> {
        self.owner.map(|o| format!("c{}", o % 3))
    }
}

/// A backend step an add is made to fail at.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddFault {
    /// The attach of a new attachment (an add that shares one makes no attach call).
    Attach,
    /// The mount of a new mount (an add that shares one makes no mount call).
    Mount,
}

fn release_op(f: ReleaseFault) -> SimOp {
    match f {
        ReleaseFault::Unmount => SimOp::Unmount,
        ReleaseFault::Unplug => SimOp::Unplug,
        ReleaseFault::Detach => SimOp::Detach,
    }
}

/// A teardown step a release is made to fail at.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseFault {
    /// The guest unmount of a mount whose last reference went.
    Unmount,
    /// The guest unplug of an attachment whose last reference went (a Windows guest has none).
    Unplug,
    /// The host detach, the last teardown step.
    Detach,
}

/// One transition. Handles are picked by position (modulo the number of live handles, in id
/// order), so every generated sequence is valid and shrinks well.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// An add with no fault.
    Add(AddArgs),
    /// Releases (or retries the failed release of) a handle.
    Release {
        /// Which live handle (by position, see [`Op`]).
        handle: u8,
    },
    /// Releases a handle with the first backend call of `fault`'s kind failing once.
    ReleaseFailing {
        /// Which live handle (by position, see [`Op`]).
        handle: u8,
        /// The teardown step that fails.
        fault: ReleaseFault,
    },
    /// Releases a handle with the first backend call of `fault`'s kind taking effect on the VM
    /// and then reporting a timeout (its outcome unknown to the manager).
    ReleaseTimingOut {
        /// Which live handle (by position, see [`Op`]).
        handle: u8,
        /// The teardown step that takes effect, then times out.
        fault: ReleaseFault,
    },
    /// Adds with the first backend call of `fault`'s kind failing once.
    AddFailing {
        /// The add.
        args: AddArgs,
        /// The step that fails.
        fault: AddFault,
    },
    /// Adds with the first backend call of `fault`'s kind taking effect on the VM and then
    /// reporting a timeout: the manager must settle it with `inspect` (it happened), so the add
    /// succeeds exactly as a plain one would, and nothing is attached or mounted twice.
    AddTimingOut {
        /// The add.
        args: AddArgs,
        /// The step that takes effect, then times out.
        fault: AddFault,
    },
    /// Adds with backend latency and drops the caller's future before it completes.
    AddCancelled(AddArgs),
    /// Two identical adds at once, with backend latency: the second shares (or waits for) the
    /// first's attach and mount; both get what two sequential adds would.
    AddTwiceConcurrently(AddArgs),
    /// Adds with the crash hook armed to crash at the `point`-th crash point, then restarts.
    CrashInAdd {
        /// The add.
        args: AddArgs,
        /// The crash point to crash at: the (`point` % 16 + 1)-th the add reaches.
        point: u8,
    },
    /// Releases with the crash hook armed to crash at the `point`-th crash point, then restarts.
    CrashInRelease {
        /// Which live handle (by position, see [`Op`]).
        handle: u8,
        /// The crash point to crash at: the (`point` % 12 + 1)-th the release reaches.
        point: u8,
    },
    /// Closes the manager and opens it again on the same directory and VM (recovery runs).
    Restart,
    /// `Manager::retry_teardowns`.
    RetryTeardowns,
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// The attachment key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DiskKey {
    kind: Kind,
    disk: u8,
    read_only: bool,
}

/// The mount key (slot and attachment generation are kept beside it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountKey {
    choice: MountChoice,
    read_only: bool,
}

/// Where a model attachment is; compared with the journal state's `AttachPhase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum APhase {
    /// Referenced by at least one handle (`AttachPhase::Attached`); adds of its key share it.
    Live,
    /// Its last reference went; the unplug (and then the detach) is due.
    NeedsUnplug,
    /// Unplugged, or on a Windows guest unreferenced; the detach is due.
    NeedsDetach,
}

/// A model attachment: a disk at a slot, how many handles refer to it, and its teardown phase.
#[derive(Clone, Debug)]
pub struct MAtt {
    gen: u64,
    key: DiskKey,
    refs: u32,
    phase: APhase,
    /// Detached on the VM by a detach that then reported a timeout; still due in the journal.
    vm_gone: bool,
}

/// A model mount: a guest path on one attachment, shared by the handles that asked for the
/// same mount of it.
#[derive(Clone, Debug)]
pub struct MMount {
    slot: Slot,
    gen: u64,
    index: Option<u32>,
    path: String,
    key: MountKey,
    refs: u32,
    /// The last reference is gone; the unmount has not succeeded yet (path and index reserved).
    due: bool,
    /// Unmounted on the VM by an unmount that then reported a timeout; still due in the journal.
    vm_gone: bool,
}

/// A handle as the model predicts it: what an add returns and what the live handles must show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MHandle {
    /// The slot of its attachment.
    pub slot: Slot,
    gen: u64,
    mount: Option<u64>,
    /// Its guest path; empty without a mount.
    pub path: String,
    /// The owner label given at add (a restarted shim finds its handles by it).
    pub owner: Option<String>,
    /// A release started and failed part way: the handle holds nothing but is still owed one.
    pub releasing: bool,
}

/// Why the model says an add fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddError {
    /// A guest path asked for without a mount (`Error::InvalidInput`).
    Invalid,
    /// No free slot that is not reserved (`Error::NoAvailableLocation`).
    NoSlot,
    /// The requested guest path is held by another mount (`Error::GuestPathConflict`).
    Conflict,
    /// The injected attach fault fired (`Error::Backend` at the attach step).
    AttachFailed,
    /// The injected mount fault fired (`Error::Backend` at the mount step).
    MountFailed,
    /// The same disk's previous attachment is still due for teardown and one of the two is
    /// read-write: the VM would refuse a second attachment (`Error::DiskBusy`).
    Busy,
    /// The guest does not support the mount (a Windows guest and mount options).
    Unsupported,
}

/// A fault that fails the first backend call of its kind, once; `applied`: the call takes effect
/// on the VM before it reports failure (a timeout after the VM did it).
struct Fault {
    op: Option<SimOp>,
    applied: bool,
}

impl Fault {
    /// Whether this call fails (consuming the fault).
    fn fires(&mut self, op: SimOp) -> bool {
        if self.op == Some(op) {
            self.op = None;
            true
        } else {
            false
        }
    }
}

/// The manager as the model sees it: hcsshim's allocation rules without its leaks.
#[derive(Clone, Debug)]
pub struct Model {
    /// The guest OS: its path syntax, whether it has an unplug, whether it takes mount options.
    pub guest: GuestOs,
    controllers: u32,
    luns: u32,
    reserved: Vec<Slot>,
    format: String,
    /// Attachments by slot, those still due for teardown included.
    pub atts: BTreeMap<Slot, MAtt>,
    /// Mounts by the model's own mount number, those still due for unmount included.
    pub mounts: BTreeMap<u64, MMount>,
    /// Handles by the id the manager issued (the harness inserts each after its add), those
    /// owed a release included.
    pub handles: BTreeMap<HandleId, MHandle>,
    next_gen: u64,
    next_mount: u64,
}

/// The configuration the harness runs with: 2 controllers x 3 LUNs with (0, 1) reserved, so
/// slot exhaustion and reserved-slot skipping are both reachable.
pub fn harness_config_for(guest: GuestOs) -> ManagerConfig {
    match guest {
        GuestOs::Linux => harness_config(),
        // One controller (a Windows utility VM's only one) with as many free slots as Linux's.
        GuestOs::Windows => ManagerConfig {
            controllers: 1,
            luns_per_controller: 6,
            mount_format: r"c:\m\%d".into(),
            reserved: vec![Slot::new(0, 1)],
            guest,
        },
    }
}

/// The Linux harness configuration.
pub fn harness_config() -> ManagerConfig {
    ManagerConfig {
        guest: Default::default(),
        controllers: 2,
        luns_per_controller: 3,
        mount_format: "/m/%d".into(),
        reserved: vec![Slot::new(0, 1)],
    }
}

impl Model {
    /// The empty model of a manager opened with `cfg`.
    pub fn new(cfg: &ManagerConfig) -> Model {
        Model {
            guest: cfg.guest,
            controllers: cfg.controllers,
            luns: cfg.luns_per_controller,
            reserved: cfg.reserved.clone(),
            format: cfg.mount_format.clone(),
            atts: BTreeMap::new(),
            mounts: BTreeMap::new(),
            handles: BTreeMap::new(),
            next_gen: 1,
            next_mount: 1,
        }
    }

    fn free_slot(&self) -> Option<Slot> {
        (0..self.controllers)
            .flat_map(|c| (0..self.luns).map(move |l| Slot::new(c, l)))
            .find(|s| !self.reserved.contains(s) && !self.atts.contains_key(s))
    }

    fn path_held(&self, p: &str) -> bool {
        self.mounts.values().any(|m| m.path == p)
    }

    fn lowest_free_index(&self) -> u32 {
        (0..)
            .find(|i| !self.mounts.values().any(|m| m.index == Some(*i)))
            .unwrap_or(u32::MAX)
    }

    fn next_mount_path(&self) -> (u32, String) {
        let mut i = 0u32;
        loop {
            let path = self.format.replacen("%d", &i.to_string(), 1);
            if !self.mounts.values().any(|m| m.index == Some(i)) && !self.path_held(&path) {
                return (i, path);
            }
            i += 1;
        }
    }

    /// Predicts an add: the new model (without the handle, whose id only the manager knows) and
    /// the slot and guest path it gets, or why it fails (the model after a failure is returned
    /// too: a failed add leaks nothing, but its rollback may still run teardowns).
    pub fn add(
        &self,
        args: &AddArgs,
        fault: Option<AddFault>,
    ) -> (Model, Result<MHandle, AddError>) {
        let mut m = self.clone();
        let mut f = Fault {
            op: fault.map(|f| match f {
                AddFault::Attach => SimOp::Attach,
                AddFault::Mount => SimOp::Mount,
            }),
            applied: false,
        };
        let r = m.add_in_place(args, &mut f);
        (m, r)
    }

    fn add_in_place(&mut self, args: &AddArgs, f: &mut Fault) -> Result<MHandle, AddError> {
        if args.mount.is_none() && args.path.is_some() {
            return Err(AddError::Invalid);
        }
        // A Windows guest takes no mount options (hcsshim's WCOW), refused before anything.
        let opts = matches!(
            args.mount,
            Some(MountChoice::Ro | MountChoice::OptsAb | MountChoice::OptsBa)
        );
        if self.guest == GuestOs::Windows && opts {
            return Err(AddError::Unsupported);
        }
        let key = args.disk_key();
        let shared = self
            .atts
            .iter()
            .find(|(_, a)| a.phase == APhase::Live && a.key == key)
            .map(|(s, _)| *s);
        let slot = match shared {
            Some(s) => {
                if let Some(a) = self.atts.get_mut(&s) {
                    a.refs += 1;
                }
                s
            }
            None => {
                // Operations here run one at a time, so a teardown still due has failed and
                // waits for a retry: the manager refuses at once.
                let busy = key.kind != Kind::Evd
                    && self.atts.values().any(|a| {
                        a.phase != APhase::Live
                            && a.key.kind == key.kind
                            && a.key.disk == key.disk
                            && (!a.key.read_only || !key.read_only)
                    });
                if busy {
                    return Err(AddError::Busy);
                }
                let s = self.free_slot().ok_or(AddError::NoSlot)?;
                if f.fires(SimOp::Attach) {
                    return Err(AddError::AttachFailed);
                }
                self.atts.insert(
                    s,
                    MAtt {
                        gen: self.next_gen,
                        key,
                        refs: 1,
                        phase: APhase::Live,
                        vm_gone: false,
                    },
                );
                self.next_gen += 1;
                s
            }
        };
        let gen = self.atts.get(&slot).map(|a| a.gen).unwrap_or(0);
        let Some(choice) = args.mount else {
            return Ok(MHandle {
                slot,
                gen,
                mount: None,
                path: String::new(),
                owner: args.owner_label(),
                releasing: false,
            });
        };
        let mkey = MountKey {
            choice: choice.key(),
            read_only: args.read_only,
        };
        let found = self
            .mounts
            .iter()
            .find(|(_, m)| m.slot == slot && m.gen == gen && !m.due && m.key == mkey)
            .map(|(id, _)| *id);
        let mount = match found {
            Some(id) => {
                if let Some(m) = self.mounts.get_mut(&id) {
                    m.refs += 1;
                }
                id
            }
            None => {
                let (index, path) = match args.requested_path_for(self.guest) {
                    Some(p) if self.path_held(&p) => {
                        self.roll_back(slot, f);
                        return Err(AddError::Conflict);
                    }
                    // Every new mount takes the lowest free index, even at a requested path.
                    Some(p) => (Some(self.lowest_free_index()), p),
                    None => {
                        let (i, p) = self.next_mount_path();
                        (Some(i), p)
                    }
                };
                if f.fires(SimOp::Mount) {
                    self.roll_back(slot, f);
                    return Err(AddError::MountFailed);
                }
                let id = self.next_mount;
                self.next_mount += 1;
                self.mounts.insert(
                    id,
                    MMount {
                        slot,
                        gen,
                        index,
                        path,
                        key: mkey,
                        refs: 1,
                        due: false,
                        vm_gone: false,
                    },
                );
                id
            }
        };
        let path = self
            .mounts
            .get(&mount)
            .map(|m| m.path.clone())
            .unwrap_or_default();
        Ok(MHandle {
            slot,
            gen,
            mount: Some(mount),
            path,
            owner: args.owner_label(),
            releasing: false,
        })
    }

    /// A failed add drops the attachment reference it took and tears down what became due.
    fn roll_back(&mut self, slot: Slot, f: &mut Fault) {
        let torn = self.torn_phase();
        let Some(a) = self.atts.get_mut(&slot) else {
            return;
        };
        a.refs -= 1;
        if a.refs == 0 {
            a.phase = torn;
            // The add's rollback ignores a teardown failure: it stays due.
            let _ = self.teardown_attachment(slot, f);
        }
    }

    /// Where an attachment goes on its last reference: a Windows guest has no unplug.
    fn torn_phase(&self) -> APhase {
        match self.guest {
            GuestOs::Linux => APhase::NeedsUnplug,
            GuestOs::Windows => APhase::NeedsDetach,
        }
    }

    fn teardown_mount(&mut self, id: u64, f: &mut Fault) -> Result<(), ()> {
        if self.mounts.get(&id).is_some_and(|m| m.due) {
            if f.fires(SimOp::Unmount) {
                if let (true, Some(m)) = (f.applied, self.mounts.get_mut(&id)) {
                    m.vm_gone = true;
                }
                return Err(());
            }
            self.mounts.remove(&id);
        }
        Ok(())
    }

    /// Unmounts what is still due on the attachment, then unplugs, then detaches; stops at the
    /// first failure, leaving the rest due.
    fn teardown_attachment(&mut self, slot: Slot, f: &mut Fault) -> Result<(), ()> {
        loop {
            let Some(a) = self.atts.get(&slot) else {
                return Ok(());
            };
            let (phase, gen) = (a.phase, a.gen);
            if phase == APhase::Live {
                return Ok(());
            }
            let due: Vec<u64> = self
                .mounts
                .iter()
                .filter(|(_, m)| m.slot == slot && m.gen == gen && m.due)
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                self.teardown_mount(id, f)?;
            }
            if phase == APhase::NeedsUnplug {
                if f.fires(SimOp::Unplug) {
                    return Err(());
                }
                if let Some(a) = self.atts.get_mut(&slot) {
                    a.phase = APhase::NeedsDetach;
                }
            } else {
                if f.fires(SimOp::Detach) {
                    if let (true, Some(a)) = (f.applied, self.atts.get_mut(&slot)) {
                        a.vm_gone = true;
                    }
                    return Err(());
                }
                self.atts.remove(&slot);
            }
        }
    }

    /// Predicts a release (or the retry of a failed one): `Ok` and the handle is gone, or `Err`
    /// and it stays, holding nothing, with the failed teardown and everything after it due.
    /// `applied`: the failing call takes effect on the VM before it reports a timeout.
    pub fn release(
        &self,
        id: HandleId,
        fault: Option<ReleaseFault>,
        applied: bool,
    ) -> (Model, Result<(), ()>) {
        let mut m = self.clone();
        let mut f = Fault {
            op: fault.map(release_op),
            applied,
        };
        let r = m.release_in_place(id, &mut f);
        (m, r)
    }

    fn release_in_place(&mut self, id: HandleId, f: &mut Fault) -> Result<(), ()> {
        let Some(h) = self.handles.get(&id).cloned() else {
            return Ok(());
        };
        if !h.releasing {
            if let Some(mid) = h.mount {
                if let Some(m) = self.mounts.get_mut(&mid) {
                    m.refs -= 1;
                    m.due = m.refs == 0;
                }
            }
            let torn = self.torn_phase();
            if let Some(a) = self.atts.get_mut(&h.slot) {
                a.refs -= 1;
                if a.refs == 0 {
                    a.phase = torn;
                }
            }
            if let Some(h) = self.handles.get_mut(&id) {
                h.releasing = true;
            }
        }
        if let Some(mid) = h.mount {
            self.teardown_mount(mid, f)?;
        }
        if self.atts.get(&h.slot).is_some_and(|a| a.gen == h.gen) {
            self.teardown_attachment(h.slot, f)?;
        }
        self.handles.remove(&id);
        Ok(())
    }

    /// Recovery (or `retry_teardowns`) with no faults: every owed release finishes and every due
    /// teardown succeeds; live handles keep what they hold.
    pub fn settle(&mut self) {
        let owed: Vec<HandleId> = self
            .handles
            .iter()
            .filter(|(_, h)| h.releasing)
            .map(|(id, _)| *id)
            .collect();
        for id in owed {
            self.handles.remove(&id);
        }
        self.mounts.retain(|_, m| !m.due);
        self.atts.retain(|_, a| a.phase == APhase::Live);
    }
}

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct HookState {
    armed: Option<u32>,
    seen: u32,
    crashed: Option<(u32, CrashPoint)>,
}

/// Crashes at the k-th crash point reached after being armed.
#[derive(Debug, Default)]
struct Hook(Mutex<HookState>);

impl Hook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HookState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn arm(&self, k: u32) {
        *self.lock() = HookState {
            armed: Some(k),
            seen: 0,
            crashed: None,
        };
    }
    fn disarm(&self) -> Option<(u32, CrashPoint)> {
        let mut s = self.lock();
        s.armed = None;
        s.crashed.take()
    }
}

impl CrashHook for Hook {
    fn crash_at(&self, point: &CrashPoint) -> bool {
        let mut s = self.lock();
        let Some(k) = s.armed else { return false };
        s.seen += 1;
        if s.seen == k {
            s.armed = None;
            s.crashed = Some((s.seen, *point));
            return true;
        }
        false
    }
}

/// A manager on a simulated VM plus the model it must agree with.
#[derive(Debug)]
pub struct Harness {
    dir: tempfile::TempDir,
    vm: SimVm,
    hook: Arc<Hook>,
    manager: Option<Manager>,
    handles: BTreeMap<HandleId, Mount>,
    /// The model; each operation moves it to what it predicts the manager now holds.
    pub model: Model,
    step: usize,
}

fn opts(guest: GuestOs, hook: &Arc<Hook>) -> ManagerOptions {
    let mut o = ManagerOptions::new(harness_config_for(guest));
    o.crash_hook = Some(hook.clone() as Arc<dyn CrashHook>);
    // Keep recovery's retries fast: they only matter when a fault is still armed.
    o.teardown_backoff = Duration::from_millis(1);
    // Checkpoints and rotations every few dozen records, so restarts and recoveries rebuild
    // from a checkpoint in a later sled generation and replay reads sealed segments.
    o.checkpoint_every = 25;
    o.segment_records = 25;
    o
}

async fn open(dir: &Path, vm: &SimVm, hook: &Arc<Hook>) -> Manager {
    // The VM's guest decides the configuration.
    let o = opts(vm.snapshot().guest, hook);
    Manager::open_with(dir, o, vm.host_backend(), vm.guest_backend())
        .await
        .unwrap_or_else(|e| panic!("open: {e}"))
}

fn add_error_class(e: &Error) -> Option<AddError> {
    match e {
        Error::InvalidInput(_) => Some(AddError::Invalid),
        Error::UnsupportedByGuest { .. } => Some(AddError::Unsupported),
        Error::NoAvailableLocation => Some(AddError::NoSlot),
        Error::DiskBusy { .. } => Some(AddError::Busy),
        Error::GuestPathConflict { .. } => Some(AddError::Conflict),
        Error::Backend {
            step: lunledger::model::Step::Attach,
            ..
        } => Some(AddError::AttachFailed),
        Error::Backend {
            step: lunledger::model::Step::Mount,
            ..
        } => Some(AddError::MountFailed),
        _ => None,
    }
}

impl Harness {
    /// A harness on a VM whose guest runs Linux.
    pub async fn new() -> Harness {
        Harness::new_for(GuestOs::Linux).await
    }

    /// A harness on a VM whose guest runs `guest`.
    pub async fn new_for(guest: GuestOs) -> Harness {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let vm = SimVm::with_guest(guest);
        let hook = Arc::new(Hook::default());
        let manager = open(dir.path(), &vm, &hook).await;
        Harness {
            dir,
            vm,
            hook,
            manager: Some(manager),
            handles: BTreeMap::new(),
            model: Model::new(&harness_config_for(guest)),
            step: 0,
        }
    }

    fn m(&self) -> &Manager {
        match &self.manager {
            Some(m) => m,
            None => panic!("no manager open"),
        }
    }

    fn pick(&self, i: u8) -> Option<HandleId> {
        let ids: Vec<HandleId> = self.model.handles.keys().copied().collect();
        if ids.is_empty() {
            None
        } else {
            Some(ids[i as usize % ids.len()])
        }
    }

    /// Runs one operation against the manager and the model, then checks they agree.
    pub async fn apply(&mut self, op: &Op) {
        self.step += 1;
        match op {
            Op::Add(args) => self.add(args, None).await,
            Op::AddFailing { args, fault } => self.add(args, Some(*fault)).await,
            Op::AddTimingOut { args, fault } => self.add_timing_out(args, *fault).await,
            Op::Release { handle } => self.release(*handle, None, false).await,
            Op::ReleaseFailing { handle, fault } => {
                self.release(*handle, Some(*fault), false).await
            }
            Op::ReleaseTimingOut { handle, fault } => {
                self.release(*handle, Some(*fault), true).await
            }
            Op::AddCancelled(args) => self.add_cancelled(args).await,
            Op::AddTwiceConcurrently(args) => self.add_twice(args).await,
            Op::CrashInAdd { args, point } => self.crash_in_add(args, *point).await,
            Op::CrashInRelease { handle, point } => self.crash_in_release(*handle, *point).await,
            Op::Restart => {
                self.restart().await;
                self.model.settle();
            }
            Op::RetryTeardowns => {
                let left = self.m().retry_teardowns().await;
                assert!(
                    matches!(left, Ok(0)),
                    "step {}: retry_teardowns: {left:?}",
                    self.step
                );
                self.model.settle();
                // Owed releases were finished: their handles are gone, and releasing them again
                // is a typed error.
                let gone: Vec<HandleId> = self
                    .handles
                    .keys()
                    .filter(|id| !self.model.handles.contains_key(id))
                    .copied()
                    .collect();
                for id in gone {
                    if let Some(h) = self.handles.remove(&id) {
                        let r = h.release().await;
                        assert!(
                            matches!(r, Err(Error::AlreadyReleased)),
                            "step {}: release of {id} after retry_teardowns: {r:?}",
                            self.step
                        );
                    }
                }
            }
        }
        self.check(op).await;
    }

    async fn add(&mut self, args: &AddArgs, fault: Option<AddFault>) {
        let (next, want) = self.model.add(args, fault);
        if let Some(f) = fault {
            let op = match f {
                AddFault::Attach => SimOp::Attach,
                AddFault::Mount => SimOp::Mount,
            };
            self.vm
                .set_faults(FaultPlan::new().fail_nth(op, 1, "injected"));
        }
        let got = self.m().add_any(args, self.model.guest).await;
        self.vm.clear_faults();
        self.commit_add(args, next, want, got);
    }

    async fn add_timing_out(&mut self, args: &AddArgs, fault: AddFault) {
        let (next, want) = self.model.add(args, None);
        let op = match fault {
            AddFault::Attach => SimOp::Attach,
            AddFault::Mount => SimOp::Mount,
        };
        self.vm
            .set_faults(FaultPlan::new().succeed_but_fail_nth(op, 1, 5));
        let got = self.m().add_any(args, self.model.guest).await;
        self.vm.clear_faults();
        self.commit_add(args, next, want, got);
    }

    fn commit_add(
        &mut self,
        args: &AddArgs,
        next: Model,
        want: Result<MHandle, AddError>,
        got: Result<Mount, Error>,
    ) {
        let step = self.step;
        match (want, got) {
            (Ok(h), Ok(mount)) => {
                assert_eq!(
                    (mount.slot(), mount.guest_path()),
                    (h.slot, h.path.as_str()),
                    "step {step}: {args:?} allocated differently from the model"
                );
                self.model = next;
                self.model.handles.insert(mount.handle_id(), h);
                self.handles.insert(mount.handle_id(), mount);
            }
            (Err(w), Err(e)) => {
                assert_eq!(
                    Some(w),
                    add_error_class(&e),
                    "step {step}: {args:?} failed with {e}"
                );
                self.model = next;
            }
            (w, g) => panic!("step {step}: {args:?}: model says {w:?}, manager says {g:?}"),
        }
    }

    async fn release(&mut self, i: u8, fault: Option<ReleaseFault>, applied: bool) {
        let Some(id) = self.pick(i) else { return };
        let (next, want) = self.model.release(id, fault, applied);
        if let Some(f) = fault {
            let plan = if applied {
                FaultPlan::new().succeed_but_fail_nth(release_op(f), 1, 5)
            } else {
                FaultPlan::new().fail_nth(release_op(f), 1, "injected")
            };
            self.vm.set_faults(plan);
        }
        let got = match self.handles.get(&id) {
            Some(h) => h.release().await,
            None => panic!("step {}: no Mount for handle {id}", self.step),
        };
        self.vm.clear_faults();
        match (want, &got) {
            (Ok(()), Ok(())) => {
                // A second release of a released handle is a typed error, not a panic or a leak.
                if let Some(h) = self.handles.remove(&id) {
                    let again = h.release().await;
                    assert!(
                        matches!(again, Err(Error::AlreadyReleased)),
                        "step {}: second release of {id}: {again:?}",
                        self.step
                    );
                }
            }
            (Err(()), Err(Error::Backend { .. })) => {}
            (w, g) => panic!(
                "step {}: release of {id} with {fault:?}: model says {w:?}, manager says {g:?}",
                self.step
            ),
        }
        self.model = next;
    }

    async fn add_cancelled(&mut self, args: &AddArgs) {
        let (next, want) = self.model.add(args, None);
        self.vm.set_latency(Duration::from_millis(20));
        let fut = self.m().add_any(args, self.model.guest);
        let r = tokio::time::timeout(Duration::from_millis(3), fut).await;
        match r {
            // Fast enough (a shared add makes no backend call): an ordinary add.
            Ok(got) => {
                self.vm.set_latency(Duration::ZERO);
                self.commit_add(args, next, want, got);
            }
            Err(_) => {
                // The add runs on in the background and is abandoned: wait for it to finish.
                self.quiesce().await;
                self.vm.set_latency(Duration::ZERO);
            }
        }
    }

    async fn add_twice(&mut self, args: &AddArgs) {
        self.vm.set_latency(Duration::from_millis(2));
        let m = self.m().clone();
        let g = self.model.guest;
        let (a, b) = tokio::join!(m.add_any(args, g), m.add_any(args, g));
        self.vm.set_latency(Duration::ZERO);
        // Which of the two went first is not observable: both must match the model's first and
        // second sequential add (the same slot and path when they share).
        for got in [a, b] {
            let (next, want) = self.model.add(args, None);
            self.commit_add(args, next, want, got);
        }
    }

    /// Waits until no operation is in flight (an abandoned add has released its handle).
    async fn quiesce(&self) {
        for _ in 0..2000 {
            if self.m().state().ops.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!(
            "step {}: operations still in flight after 4 s: {:?}",
            self.step,
            self.m().state().ops
        );
    }

    async fn crash_in_add(&mut self, args: &AddArgs, point: u8) {
        let (next, want) = self.model.add(args, None);
        let before: BTreeSet<HandleId> = self.m().state().handles.keys().copied().collect();
        self.hook.arm(u32::from(point % 16) + 1);
        let got = self.m().add_any(args, self.model.guest).await;
        let crashed = self.hook.disarm();
        match crashed {
            None => self.commit_add(args, next, want, got),
            Some((_, p)) => {
                // A crash in the rollback of a failing add leaves the caller its own error.
                let own_failure = match (&want, &got) {
                    (Err(w), Err(e)) => add_error_class(e) == Some(*w),
                    _ => false,
                };
                assert!(
                    matches!(got, Err(Error::Crashed(_))) || own_failure,
                    "step {}: crashed at {p} but the add returned {got:?}",
                    self.step
                );
                self.restart_after_crash().await;
                let after: BTreeSet<HandleId> = self.m().state().handles.keys().copied().collect();
                let new: Vec<HandleId> = after.difference(&before).copied().collect();
                // The handle is durable from the moment it is issued; before that the add is
                // rolled back.
                let issued = p.site == Site::IssueHandle && p.boundary == Boundary::AfterOutcome;
                if issued {
                    let Ok(h) = want else {
                        panic!(
                            "step {}: model says {want:?} but the add issued a handle",
                            self.step
                        )
                    };
                    assert_eq!(new.len(), 1, "step {}: crash at {p}", self.step);
                    let id = new[0];
                    let mount = self.m().handle(id).unwrap_or_else(|| panic!("handle {id}"));
                    assert_eq!(
                        (mount.slot(), mount.guest_path()),
                        (h.slot, h.path.as_str())
                    );
                    self.model = next;
                    self.model.handles.insert(id, h);
                    self.handles.insert(id, mount);
                } else {
                    assert!(
                        new.is_empty(),
                        "step {}: add crashed at {p} before its handle, yet {new:?} appeared",
                        self.step
                    );
                }
                self.model.settle();
                return;
            }
        }
        // No crash point was reached k times: still restart, as the op promises.
        self.restart().await;
        self.model.settle();
    }

    async fn crash_in_release(&mut self, i: u8, point: u8) {
        let Some(id) = self.pick(i) else { return };
        let was_releasing = self.model.handles.get(&id).is_some_and(|h| h.releasing);
        let (next, _) = self.model.release(id, None, false);
        // Any crash point, the first included (right after the release's `OpStarted`).
        self.hook.arm(u32::from(point % 12) + 1);
        let got = match self.handles.get(&id) {
            Some(h) => h.release().await,
            None => panic!("step {}: no Mount for handle {id}", self.step),
        };
        let crashed = self.hook.disarm();
        if let Some((n, p)) = crashed {
            assert!(
                matches!(got, Err(Error::Crashed(_))),
                "step {}: crashed at {p} but the release returned {got:?}",
                self.step
            );
            self.restart_after_crash().await;
            let survived = self.m().state().handles.contains_key(&id);
            // Only before the release's one durable point may the release itself be lost (its
            // records were not durable, and the crash dropped them); then the handle is intact
            // and still live. Point 1 is right after the release's `OpStarted`; point 2 is
            // before its plan (the dropped references) is made durable.
            let before_durable = (n == 1 && p.site == Site::OpStarted)
                || (n == 2 && p.boundary == Boundary::BeforeIntent);
            let may_survive = !was_releasing && before_durable;
            if survived {
                assert!(
                    may_survive,
                    "step {}: release of {id} crashed at {p} (point {n}) and was not finished",
                    self.step
                );
                self.model.settle();
                return;
            }
        } else {
            assert!(got.is_ok(), "step {}: release {id}: {got:?}", self.step);
            self.restart().await;
        }
        self.handles.remove(&id);
        self.model = next;
        self.model.settle();
    }

    /// After a crash: the stored journal ends at the last durable record (the crash dropped
    /// everything appended after it, as a SIGKILL may), then the manager restarts.
    async fn restart_after_crash(&mut self) {
        if let Some(m) = self.manager.take() {
            let durable = m.journal().durable_seq();
            let _ = m.close().await;
            let j = lunledger::journal::Journal::open(self.dir.path(), Default::default())
                .unwrap_or_else(|e| panic!("step {}: reopening the journal: {e}", self.step));
            assert_eq!(
                j.last_seq(),
                durable,
                "step {}: the crash kept records that were not durable",
                self.step
            );
        }
        self.restart().await;
    }

    /// Closes the manager (ignoring the result: it may have crashed) and reopens it on the same
    /// directory and VM, which runs recovery; then takes the handles back by id.
    async fn restart(&mut self) {
        self.vm.clear_faults();
        self.vm.set_latency(Duration::ZERO);
        self.handles.clear();
        if let Some(m) = self.manager.take() {
            let _ = m.close().await;
        }
        let m = open(self.dir.path(), &self.vm, &self.hook).await;
        for h in m.handles() {
            self.handles.insert(h.handle_id(), h);
        }
        self.manager = Some(m);
    }

    /// The manager, the journal, the VM and the model agree.
    async fn check(&self, op: &Op) {
        let step = self.step;
        // An add returns to its caller before its operation is closed (the caller claims the
        // handle first); every operation must close promptly on its own.
        self.quiesce().await;
        let m = self.m();
        let st = m.state();
        type Seen = (Slot, String, Option<String>, bool);
        let real: BTreeMap<HandleId, Seen> = st
            .handles
            .iter()
            .map(|(id, h)| (*id, (h.slot, h.path.clone(), h.owner.clone(), h.releasing)))
            .collect();
        let want: BTreeMap<HandleId, Seen> = self
            .model
            .handles
            .iter()
            .map(|(id, h)| (*id, (h.slot, h.path.clone(), h.owner.clone(), h.releasing)))
            .collect();
        assert_eq!(real, want, "step {step} ({op:?}): live handles differ");
        for owner in ["c0", "c1", "c2"] {
            let got: BTreeSet<HandleId> = m
                .handles_by_owner(owner)
                .iter()
                .map(|h| h.handle_id())
                .collect();
            let want_owned: BTreeSet<HandleId> = want
                .iter()
                .filter(|(_, h)| h.2.as_deref() == Some(owner))
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(got, want_owned, "step {step}: handles of owner {owner}");
        }
        let handle_ids: BTreeSet<HandleId> = self.handles.keys().copied().collect();
        assert_eq!(
            handle_ids,
            want.keys().copied().collect(),
            "step {step}: the harness lost a Mount"
        );
        check_state_against_model(&st, &self.model, step, op);
        assert_replay_equals_live(m).await;
        let vm_ahead = self.model.atts.values().any(|a| a.vm_gone)
            || self.model.mounts.values().any(|m| m.vm_gone);
        if vm_ahead || st.handles.values().any(|h| h.releasing) {
            // The shared helper wants every handle's slot and path on the VM, but a handle owed
            // a release holds nothing (its teardown may be done or half done), and a teardown
            // that timed out after taking effect is due in the journal but gone from the VM.
            assert_vm_holds_live_handles(&st, &self.vm, step);
        } else {
            crate::assert_vm_matches(m, &self.vm);
        }
        let snap = self.vm.snapshot();
        let vm_slots: BTreeSet<Slot> = snap.attachments.iter().map(|a| a.slot).collect();
        assert_eq!(
            vm_slots.len(),
            snap.attachments.len(),
            "step {step}: a slot is double-booked on the VM"
        );
        let model_slots: BTreeSet<Slot> = self
            .model
            .atts
            .iter()
            .filter(|(_, a)| !a.vm_gone)
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(vm_slots, model_slots, "step {step} ({op:?}): VM slots");
        let vm_paths: BTreeSet<String> = snap.mounts.keys().cloned().collect();
        let model_paths: BTreeSet<String> = self
            .model
            .mounts
            .values()
            .filter(|m| !m.vm_gone)
            .map(|m| m.path.clone())
            .collect();
        assert_eq!(vm_paths, model_paths, "step {step} ({op:?}): VM mounts");
    }

    /// Releases everything (retrying failed releases), then checks the VM and the state are empty.
    pub async fn finish(mut self) {
        let ids: Vec<HandleId> = self.handles.keys().copied().collect();
        for id in ids {
            if let Some(h) = self.handles.remove(&id) {
                let r = h.release().await;
                assert!(r.is_ok(), "final release of {id}: {r:?}");
            }
        }
        let left = self.m().retry_teardowns().await;
        assert!(matches!(left, Ok(0)), "final retry_teardowns: {left:?}");
        let m = self.m();
        assert_replay_equals_live(m).await;
        let st = m.state();
        assert!(st.is_empty(), "state not empty at the end: {st:?}");
        assert!(
            self.vm.snapshot().is_empty(),
            "VM not empty at the end: {:?}",
            self.vm.snapshot()
        );
        if let Some(m) = self.manager.take() {
            let _ = m.close().await;
        }
        drop(self.dir);
    }
}

/// The VM holds every slot and mount a handle that is not being released needs.
fn assert_vm_holds_live_handles(st: &State, vm: &SimVm, step: usize) {
    let snap = vm.snapshot();
    for (id, h) in st.handles.iter().filter(|(_, h)| !h.releasing) {
        assert!(
            snap.attachment(h.slot).is_some(),
            "step {step}: handle {id} needs slot {}",
            h.slot
        );
        if h.mount.is_some() {
            assert!(
                snap.mounts.contains_key(&h.path),
                "step {step}: handle {id} needs {}",
                h.path
            );
        }
    }
}

fn check_state_against_model(st: &State, model: &Model, step: usize, op: &Op) {
    let real_atts: BTreeMap<Slot, (u32, APhase)> = st
        .attachments
        .iter()
        .map(|(s, a)| {
            let phase = match a.phase {
                AttachPhase::Attached => APhase::Live,
                AttachPhase::NeedsUnplug => APhase::NeedsUnplug,
                AttachPhase::NeedsDetach => APhase::NeedsDetach,
                p => panic!("step {step} ({op:?}): attachment at {s} left {p:?}"),
            };
            (*s, (a.refs, phase))
        })
        .collect();
    let model_atts: BTreeMap<Slot, (u32, APhase)> = model
        .atts
        .iter()
        .map(|(s, a)| (*s, (a.refs, a.phase)))
        .collect();
    assert_eq!(
        real_atts, model_atts,
        "step {step} ({op:?}): attachments differ"
    );
    let real_mounts: BTreeSet<(String, Slot, Option<u32>, u32, bool)> = st
        .mounts
        .values()
        .map(|m| {
            let due = match m.phase {
                MountPhase::Mounted => false,
                MountPhase::NeedsUnmount => true,
                p => panic!("step {step} ({op:?}): mount at {} left {p:?}", m.path),
            };
            (m.path.clone(), m.slot, m.index, m.refs, due)
        })
        .collect();
    let model_mounts: BTreeSet<(String, Slot, Option<u32>, u32, bool)> = model
        .mounts
        .values()
        .map(|m| (m.path.clone(), m.slot, m.index, m.refs, m.due))
        .collect();
    assert_eq!(
        real_mounts, model_mounts,
        "step {step} ({op:?}): mounts differ"
    );
}

/// The add call of the args' kind.
trait AddAny {
    async fn add_any(&self, args: &AddArgs, guest: GuestOs) -> Result<Mount, Error>;
}

impl AddAny for Manager {
    async fn add_any(&self, args: &AddArgs, guest: GuestOs) -> Result<Mount, Error> {
        let req = args.request_for(guest);
        match args.kind {
            Kind::Virtual => self.add_virtual_disk(req).await,
            Kind::Physical => self.add_physical_disk(req).await,
            Kind::Evd => self.add_extensible_virtual_disk(req).await,
        }
    }
}

/// Runs a whole sequence on a fresh harness: every operation checked, then everything released.
pub async fn run_ops(ops: &[Op]) {
    run_ops_for(GuestOs::Linux, ops).await
}

/// [`run_ops`] on a VM whose guest runs `guest`.
pub async fn run_ops_for(guest: GuestOs, ops: &[Op]) {
    let mut h = Harness::new_for(guest).await;
    for op in ops {
        h.apply(op).await;
    }
    h.finish().await;
}

/// Runs `ops` on a fresh current-thread runtime (deterministic scheduling for shrinking).
pub fn run_ops_blocking(ops: &[Op]) {
    run_ops_blocking_for(GuestOs::Linux, ops)
}

/// [`run_ops_blocking`] on a VM whose guest runs `guest`.
pub fn run_ops_blocking_for(guest: GuestOs, ops: &[Op]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(run_ops_for(guest, ops));
}
