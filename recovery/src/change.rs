//! `Change`: what one event does to the state, decided before anything changes.
//!
//! [`State::apply`] is two phases: `check` (in `check.rs`) reads the state through `&self`,
//! refuses an event that does not fit and otherwise returns the `Change` it makes; `commit`
//! (here) makes it and cannot fail. So "an error leaves the state unchanged" holds by
//! construction: the only phase that can fail cannot write.

use crate::state::{AttachPhase, Attachment, Handle, Mount, MountPhase, Op, State};
use lunledger_model::{Drift, HandleId, ManagerConfig, MountId, OpId, Slot, Step};
use std::collections::BTreeMap;

/// What one event does, with every lookup and count already checked.
#[derive(Debug)]
pub(crate) enum Change {
    /// Nothing (an event that only names an operation in flight, or a checkpoint marker).
    Nothing,
    /// An operation starts.
    OpStarted {
        op: OpId,
        entry: Op,
        /// A recovery operation starts its drift report afresh.
        clears_drift: bool,
    },
    /// An add reserves a slot for a new attachment.
    AttachReserved {
        op: OpId,
        slot: Slot,
        entry: Attachment,
    },
    /// An add takes a reference on an attachment.
    AttachRefTaken { op: OpId, slot: Slot },
    /// A reference on an attachment is dropped by its holder.
    AttachRefDropped {
        holder: Holder,
        slot: Slot,
        then: AfterDrop<AttachPhase>,
    },
    /// An add reserves a path (and index) for a new mount.
    MountReserved {
        op: OpId,
        mount: MountId,
        entry: Mount,
    },
    /// An add takes a reference on a mount.
    MountRefTaken { op: OpId, mount: MountId },
    /// A reference on a mount is dropped by its holder.
    MountRefDropped {
        holder: Holder,
        mount: MountId,
        then: AfterDrop<MountPhase>,
    },
    /// A step's intent on an attachment: it is in flight (and an attach starts attaching).
    SlotStepStarted {
        slot: Slot,
        step: Step,
        phase: AttachPhase,
    },
    /// A step's intent on a mount: it is in flight (and a mount starts mounting).
    MountStepStarted {
        mount: MountId,
        step: Step,
        phase: MountPhase,
    },
    /// A step's outcome on an attachment.
    SlotStepEnded {
        slot: Slot,
        error: Option<String>,
        then: AfterStep<AttachPhase>,
    },
    /// A step's outcome on a mount.
    MountStepEnded {
        mount: MountId,
        error: Option<String>,
        then: AfterStep<MountPhase>,
    },
    /// A handle is issued: the operation's references move to it.
    HandleIssued {
        op: OpId,
        handle: HandleId,
        entry: Handle,
    },
    /// A release starts.
    ReleaseStarted { op: OpId, handle: HandleId },
    /// A released handle leaves the state.
    HandleReleased { handle: HandleId },
    /// Recovery reports drift (replacing the finding it repairs).
    DriftFound { drift: Drift },
    /// The VM no longer has an attachment.
    AttachmentLost { slot: Slot, remove: bool },
    /// The guest no longer has a mount.
    MountLost { mount: MountId, remove: bool },
    /// The configuration is set.
    ConfigSet { config: ManagerConfig },
    /// An operation ends.
    OpEnded { op: OpId, end: OpEnd },
}

/// Who holds the reference being dropped.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Holder {
    /// The operation itself (before it handed its references to a handle).
    Op(OpId),
    /// The handle the operation is releasing.
    Handle(HandleId),
}

/// What a dropped reference leaves behind.
#[derive(Clone, Copy, Debug)]
pub(crate) enum AfterDrop<P> {
    /// Other references remain: the count goes down.
    Shared,
    /// The last reference of an entry that never reached the VM: it goes.
    Remove,
    /// The last reference of an entry on the VM: its teardown is due.
    Teardown(P),
}

/// What a step's outcome leaves behind.
#[derive(Clone, Copy, Debug)]
pub(crate) enum AfterStep<P> {
    /// The phase stays (a failed teardown step stays due).
    Stay,
    /// The entry moves to this phase.
    Phase(P),
    /// The entry goes (torn down, or failed with no reference left).
    Remove,
}

/// How an operation ended (for the life-time counters).
#[derive(Clone, Copy, Debug)]
pub(crate) enum OpEnd {
    Finished,
    Failed,
    RolledBack,
    Abandoned,
}

impl State {
    /// Makes a checked change. It cannot fail: every lookup it repeats was checked against this
    /// same state (a missing entry here could only mean a checked change applied to another
    /// state, which nothing does; it then changes nothing rather than panic).
    pub(crate) fn commit(&mut self, change: Change) {
        match change {
            Change::Nothing => {}
            Change::OpStarted {
                op,
                entry,
                clears_drift,
            } => {
                self.ops.insert(op, entry);
                self.next_op = op + 1;
                if clears_drift {
                    self.drift.clear();
                }
            }
            Change::AttachReserved { op, slot, entry } => {
                if let Some(o) = self.ops.get_mut(&op) {
                    o.holds_attach = Some(slot);
                }
                self.next_attach = entry.attach + 1;
                self.attachments.insert(slot, entry);
            }
            Change::AttachRefTaken { op, slot } => {
                if let Some(o) = self.ops.get_mut(&op) {
                    o.holds_attach = Some(slot);
                }
                if let Some(a) = self.attachments.get_mut(&slot) {
                    a.refs += 1;
                }
            }
            Change::AttachRefDropped { holder, slot, then } => {
                self.release_holder(holder, Dropped::Attach);
                drop_ref(&mut self.attachments, slot, then);
            }
            Change::MountReserved { op, mount, entry } => {
                if let Some(o) = self.ops.get_mut(&op) {
                    o.holds_mount = Some(mount);
                }
                self.mounts.insert(mount, entry);
                self.next_mount = mount + 1;
            }
            Change::MountRefTaken { op, mount } => {
                if let Some(o) = self.ops.get_mut(&op) {
                    o.holds_mount = Some(mount);
                }
                if let Some(m) = self.mounts.get_mut(&mount) {
                    m.refs += 1;
                }
            }
            Change::MountRefDropped {
                holder,
                mount,
                then,
            } => {
                self.release_holder(holder, Dropped::Mount);
                drop_ref(&mut self.mounts, mount, then);
            }
            Change::SlotStepStarted { slot, step, phase } => {
                start_step(&mut self.attachments, slot, step, phase);
            }
            Change::MountStepStarted { mount, step, phase } => {
                start_step(&mut self.mounts, mount, step, phase);
            }
            Change::SlotStepEnded { slot, error, then } => {
                end_step(&mut self.attachments, slot, error, then);
            }
            Change::MountStepEnded { mount, error, then } => {
                end_step(&mut self.mounts, mount, error, then);
            }
            Change::HandleIssued { op, handle, entry } => {
                if let Some(o) = self.ops.get_mut(&op) {
                    o.holds_attach = None;
                    o.holds_mount = None;
                    o.handle = Some(handle);
                }
                self.handles.insert(handle, entry);
                self.next_handle = handle + 1;
                self.counters.handles_issued += 1;
            }
            Change::ReleaseStarted { op, handle } => {
                if let Some(o) = self.ops.get_mut(&op) {
                    o.releasing = Some(handle);
                }
                if let Some(h) = self.handles.get_mut(&handle) {
                    h.releasing = true;
                }
            }
            Change::HandleReleased { handle } => {
                self.handles.remove(&handle);
                self.counters.handles_released += 1;
            }
            Change::DriftFound { drift } => {
                self.drift.retain(|d| !repairs(&drift, d));
                if !self.drift.contains(&drift) {
                    self.drift.push(drift);
                }
            }
            Change::AttachmentLost { slot, remove } => {
                lose(&mut self.attachments, slot, remove, AttachPhase::Lost);
            }
            Change::MountLost { mount, remove } => {
                lose(&mut self.mounts, mount, remove, MountPhase::Lost);
            }
            Change::ConfigSet { config } => self.config = Some(config),
            Change::OpEnded { op, end } => {
                self.ops.remove(&op);
                let c = &mut self.counters;
                match end {
                    OpEnd::Finished => c.ops_finished += 1,
                    OpEnd::Failed => c.ops_failed += 1,
                    OpEnd::RolledBack => c.ops_rolled_back += 1,
                    OpEnd::Abandoned => c.ops_abandoned += 1,
                }
            }
        }
    }

    /// Clears the dropped reference from its holder.
    fn release_holder(&mut self, holder: Holder, dropped: Dropped) {
        match holder {
            Holder::Op(op) => {
                if let Some(o) = self.ops.get_mut(&op) {
                    match dropped {
                        Dropped::Attach => o.holds_attach = None,
                        Dropped::Mount => o.holds_mount = None,
                    }
                }
            }
            Holder::Handle(id) => {
                if let Some(h) = self.handles.get_mut(&id) {
                    match dropped {
                        Dropped::Attach => h.holds_attach = false,
                        Dropped::Mount => h.holds_mount = false,
                    }
                }
            }
        }
    }
}

/// What attachments and mounts share: a reference count, a phase, a step in flight and the last
/// error, so that one function makes each kind of change to either.
trait Tracked {
    type Phase;
    fn refs(&mut self) -> &mut u32;
    fn phase(&mut self) -> &mut Self::Phase;
    fn pending(&mut self) -> &mut Option<Step>;
    fn last_error(&mut self) -> &mut Option<String>;
}

impl Tracked for Attachment {
    type Phase = AttachPhase;
    fn refs(&mut self) -> &mut u32 {
        &mut self.refs
    }
    fn phase(&mut self) -> &mut AttachPhase {
        &mut self.phase
    }
    fn pending(&mut self) -> &mut Option<Step> {
        &mut self.pending
    }
    fn last_error(&mut self) -> &mut Option<String> {
        &mut self.last_error
    }
}

impl Tracked for Mount {
    type Phase = MountPhase;
    fn refs(&mut self) -> &mut u32 {
        &mut self.refs
    }
    fn phase(&mut self) -> &mut MountPhase {
        &mut self.phase
    }
    fn pending(&mut self) -> &mut Option<Step> {
        &mut self.pending
    }
    fn last_error(&mut self) -> &mut Option<String> {
        &mut self.last_error
    }
}

/// One reference on the entry at `key` is gone.
fn drop_ref<K: Ord, E: Tracked>(map: &mut BTreeMap<K, E>, key: K, then: AfterDrop<E::Phase>) {
    if let AfterDrop::Remove = then {
        map.remove(&key);
    } else if let Some(e) = map.get_mut(&key) {
        *e.refs() = e.refs().saturating_sub(1);
        if let AfterDrop::Teardown(p) = then {
            *e.phase() = p;
        }
    }
}

/// A step on the entry at `key` is in flight.
fn start_step<K: Ord, E: Tracked>(map: &mut BTreeMap<K, E>, key: K, step: Step, phase: E::Phase) {
    if let Some(e) = map.get_mut(&key) {
        *e.pending() = Some(step);
        *e.phase() = phase;
    }
}

/// The step in flight on the entry at `key` has its outcome.
fn end_step<K: Ord, E: Tracked>(
    map: &mut BTreeMap<K, E>,
    key: K,
    error: Option<String>,
    then: AfterStep<E::Phase>,
) {
    if let AfterStep::Remove = then {
        map.remove(&key);
    } else if let Some(e) = map.get_mut(&key) {
        *e.pending() = None;
        *e.last_error() = error;
        if let AfterStep::Phase(p) = then {
            *e.phase() = p;
        }
    }
}

/// The VM no longer has the entry at `key`: it goes if nothing holds it, else it is lost.
fn lose<K: Ord, E: Tracked>(map: &mut BTreeMap<K, E>, key: K, remove: bool, lost: E::Phase) {
    if remove {
        map.remove(&key);
    } else if let Some(e) = map.get_mut(&key) {
        *e.pending() = None;
        *e.phase() = lost;
    }
}

/// Which of its references a holder drops.
#[derive(Clone, Copy)]
enum Dropped {
    Attach,
    Mount,
}

/// Whether finding `new` is the repair of finding `old` (which it then replaces).
fn repairs(new: &Drift, old: &Drift) -> bool {
    match (new, old) {
        (
            Drift::UnknownAttachment {
                slot,
                path,
                detached: true,
            },
            Drift::UnknownAttachment {
                slot: s,
                path: p,
                detached: false,
            },
        ) => slot == s && path == p,
        (Drift::UnknownMountUnmounted { path, .. }, Drift::UnknownMount { path: p }) => path == p,
        _ => false,
    }
}
