//! `State`: the fold of journal events. The live manager, `replay`, point-in-time views and
//! recovery all build their state with the same [`State::apply`], so they cannot disagree.
//!
//! `apply` validates an event against the current state before changing anything: an event that
//! does not fit is an [`ApplyError`] and leaves the state untouched. The live manager therefore
//! validates a step by applying it, and only then appends it to the journal.

use lunledger_model::{
    AttachId, DiskSpec, Entry, Event, HandleId, ManagerConfig, MountId, MountSpec, OpId, OpKind,
    Resolution, Slot, Step, Target,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where an attachment is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttachPhase {
    /// Slot taken; the attach has not been asked of the host yet.
    Reserved,
    /// The attach intent is journaled; its outcome is not (yet) known.
    Attaching,
    /// Attached at the slot.
    Attached,
    /// The attach failed; the slot is freed when the last reference is dropped.
    Failed,
    /// No references remain: the guest must unplug the device (then the host detaches it).
    NeedsUnplug,
    /// Unplugged in the guest: the host must detach it. The slot stays reserved until it does.
    NeedsDetach,
    /// The VM no longer has it although we never detached it: never handed out again.
    Lost,
}

impl AttachPhase {
    /// Whether a new caller may share this attachment.
    pub fn shareable(self) -> bool {
        matches!(
            self,
            AttachPhase::Reserved | AttachPhase::Attaching | AttachPhase::Attached
        )
    }

    /// Whether its teardown (unplug, then detach) is due: no reference remains, the slot stays
    /// reserved until the detach succeeds.
    pub fn teardown_due(self) -> bool {
        matches!(self, AttachPhase::NeedsUnplug | AttachPhase::NeedsDetach)
    }

    /// Whether the VM must hold it: attached, or attached still and due for teardown.
    pub fn on_vm(self) -> bool {
        self == AttachPhase::Attached || self.teardown_due()
    }
}

/// One attachment at a slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Generation id (unique for the journal's life).
    pub attach: AttachId,
    /// The attachment key.
    pub disk: DiskSpec,
    /// References held by operations in flight and live handles.
    pub refs: u32,
    /// Where it is in its life.
    pub phase: AttachPhase,
    /// A step whose intent is journaled and whose outcome is not.
    pub pending: Option<Step>,
    /// The last error a step on it returned.
    pub last_error: Option<String>,
}

/// Where a mount is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountPhase {
    /// Path and index taken; the mount has not been asked of the guest yet.
    Reserved,
    /// The mount intent is journaled; its outcome is not (yet) known.
    Mounting,
    /// Mounted in the guest.
    Mounted,
    /// The mount failed; the entry goes when the last reference is dropped.
    Failed,
    /// No references remain: the guest must unmount it. Its path stays reserved until it does.
    NeedsUnmount,
    /// The guest no longer has it although we never unmounted it: never handed out again.
    Lost,
}

impl MountPhase {
    /// Whether a new caller may share this mount.
    pub fn shareable(self) -> bool {
        matches!(
            self,
            MountPhase::Reserved | MountPhase::Mounting | MountPhase::Mounted
        )
    }

    /// Whether its unmount is due: no reference remains, the path stays reserved until the
    /// unmount succeeds.
    pub fn teardown_due(self) -> bool {
        self == MountPhase::NeedsUnmount
    }

    /// Whether the guest must hold it: mounted, or mounted still and due for unmount.
    pub fn on_vm(self) -> bool {
        self == MountPhase::Mounted || self.teardown_due()
    }
}

/// One guest mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The attachment's slot.
    pub slot: Slot,
    /// The attachment's generation id.
    pub attach: AttachId,
    /// Mount index for generated paths; `None` for a caller-requested path.
    pub index: Option<u32>,
    /// Guest path.
    pub path: String,
    /// The mount key.
    pub spec: MountSpec,
    /// References held by operations in flight and live handles.
    pub refs: u32,
    /// Where it is in its life.
    pub phase: MountPhase,
    /// A step whose intent is journaled and whose outcome is not.
    pub pending: Option<Step>,
    /// The last error a step on it returned.
    pub last_error: Option<String>,
}

/// A handle issued to a caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    /// The operation that issued it.
    pub issued_by: OpId,
    /// Its attachment's slot.
    pub slot: Slot,
    /// Its attachment's generation id.
    pub attach: AttachId,
    /// Its mount, if any.
    pub mount: Option<MountId>,
    /// Guest path (empty for attach only).
    pub path: String,
    /// Owner label.
    pub owner: Option<String>,
    /// Still holds its attachment reference.
    pub holds_attach: bool,
    /// Still holds its mount reference.
    pub holds_mount: bool,
    /// A release has started (and may have failed part way; a retry resumes it).
    pub releasing: bool,
}

/// An operation in flight (finished operations leave the state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// What it does.
    pub kind: OpKind,
    /// Sequence number of its `OpStarted` record.
    pub started_seq: u64,
    /// The attachment reference it holds (before handing it to a handle).
    pub holds_attach: Option<Slot>,
    /// The mount reference it holds (before handing it to a handle).
    pub holds_mount: Option<MountId>,
    /// The handle it issued, if any.
    pub handle: Option<HandleId>,
    /// The handle it is releasing, if any.
    pub releasing: Option<HandleId>,
}

/// Counters over the journal's life (audit summaries; not part of any decision).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Operations finished successfully.
    pub ops_finished: u64,
    /// Operations failed.
    pub ops_failed: u64,
    /// Operations rolled back by recovery.
    pub ops_rolled_back: u64,
    /// Operations abandoned by their caller.
    pub ops_abandoned: u64,
    /// Handles issued.
    pub handles_issued: u64,
    /// Handles released.
    pub handles_released: u64,
}

/// The fold of the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Configuration in force.
    pub config: Option<ManagerConfig>,
    /// Sequence number of the last record applied.
    pub last_seq: u64,
    /// Next operation id.
    pub next_op: OpId,
    /// Next handle id.
    pub next_handle: HandleId,
    /// Next mount id.
    pub next_mount: MountId,
    /// Next attachment generation id.
    pub next_attach: AttachId,
    /// Attachments by slot.
    pub attachments: BTreeMap<Slot, Attachment>,
    /// Mounts by id.
    pub mounts: BTreeMap<MountId, Mount>,
    /// Live handles by id.
    pub handles: BTreeMap<HandleId, Handle>,
    /// Operations in flight.
    pub ops: BTreeMap<OpId, Op>,
    /// Drift found by the most recent recovery operation, each finding once (a repair replaces
    /// the report of what it repaired). A recovery operation starts it afresh; the journal
    /// keeps every recovery's findings.
    pub drift: Vec<lunledger_model::Drift>,
    /// Life-time counters.
    pub counters: Counters,
}

/// Why an event does not fit the state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {seq} ({event}): {what}")]
pub struct ApplyError {
    /// The record's sequence number.
    pub seq: u64,
    /// The event's name.
    pub event: &'static str,
    /// What does not fit.
    pub what: String,
}

type Check<T> = Result<T, String>;

impl State {
    /// An empty state (a new journal).
    pub fn new() -> Self {
        State {
            next_op: 1,
            next_handle: 1,
            next_mount: 1,
            next_attach: 1,
            ..Default::default()
        }
    }

    /// Folds records into a new state.
    pub fn fold<'a, E: Entry + 'a>(
        records: impl IntoIterator<Item = &'a E>,
    ) -> Result<State, ApplyError> {
        let mut s = State::new();
        for r in records {
            s.apply(r)?;
        }
        Ok(s)
    }

    /// Applies one record. Validates first: on error the state is unchanged.
    pub fn apply(&mut self, rec: &impl Entry) -> Result<(), ApplyError> {
        let (seq, event) = (rec.seq(), rec.event());
        if self.last_seq != 0 && seq != self.last_seq + 1 {
            return Err(ApplyError {
                seq,
                event: event.name(),
                what: format!("expected sequence {}", self.last_seq + 1),
            });
        }
        self.apply_event(seq, rec.op(), event)
            .map_err(|what| ApplyError {
                seq,
                event: event.name(),
                what,
            })?;
        self.last_seq = seq;
        Ok(())
    }

    /// Applies `event` as the next record (sequence `last_seq + 1`) and returns that sequence
    /// number. The live manager applies each event this way before appending it, so an event that
    /// does not fit is never journaled; planning uses it on a copy. On error nothing changed.
    pub fn apply_next(&mut self, op: OpId, event: &Event) -> Result<u64, String> {
        let seq = self.last_seq + 1;
        self.apply_event(seq, op, event)?;
        self.last_seq = seq;
        Ok(seq)
    }

    // Every branch validates before it mutates, so an error leaves the state unchanged.
    fn apply_event(&mut self, seq: u64, op: OpId, ev: &Event) -> Check<()> {
        match ev {
            Event::OpStarted { kind } => {
                if self.ops.contains_key(&op) || op < self.next_op {
                    return Err(format!("operation {op} was already started"));
                }
                if let OpKind::Release { handle } = kind {
                    self.handle(*handle)?;
                }
                self.ops.insert(
                    op,
                    Op {
                        kind: kind.clone(),
                        started_seq: seq,
                        holds_attach: None,
                        holds_mount: None,
                        handle: None,
                        releasing: None,
                    },
                );
                self.next_op = op + 1;
                if *kind == OpKind::Recovery {
                    self.drift.clear();
                }
            }
            Event::AccessGranted { .. } => {
                self.op(op)?;
            }
            Event::AttachReserved { slot, attach, disk } => {
                let cfg = self.config.as_ref().ok_or("no configuration")?;
                if !cfg.contains(*slot) {
                    return Err(format!("slot {slot} is out of range"));
                }
                if cfg.reserved.contains(slot) {
                    return Err(format!("slot {slot} is reserved"));
                }
                if self.attachments.contains_key(slot) {
                    return Err(format!("slot {slot} is in use"));
                }
                if *attach < self.next_attach {
                    return Err(format!("attachment id {attach} was already used"));
                }
                let o = self.add_op_mut(op)?;
                if o.holds_attach.is_some() {
                    return Err("operation already holds an attachment".into());
                }
                o.holds_attach = Some(*slot);
                self.attachments.insert(
                    *slot,
                    Attachment {
                        attach: *attach,
                        disk: disk.clone(),
                        refs: 1,
                        phase: AttachPhase::Reserved,
                        pending: None,
                        last_error: None,
                    },
                );
                self.next_attach = attach + 1;
            }
            Event::AttachRefTaken { slot } => {
                let a = self.attachment(*slot)?;
                if !a.phase.shareable() {
                    return Err(format!("attachment at {slot} is {:?}", a.phase));
                }
                let o = self.add_op_mut(op)?;
                if o.holds_attach.is_some() {
                    return Err("operation already holds an attachment".into());
                }
                o.holds_attach = Some(*slot);
                self.attachment_mut(*slot)?.refs += 1;
            }
            Event::AttachRefDropped { slot } => {
                let a = self.attachment(*slot)?;
                if a.pending.is_some() {
                    return Err(format!("attachment at {slot} has a step in flight"));
                }
                if a.phase == AttachPhase::Attaching {
                    return Err(format!("attach at {slot} is unresolved"));
                }
                let attach = a.attach;
                self.drop_holder(op, Ref::Attach(*slot, attach))
                    .map_err(|e| format!("{e} on attachment {slot}"))?;
                // A Windows guest has no unplug (hcsshim: a no-op): its teardown goes straight
                // to the host's detach.
                let unplugs = self.config.as_ref().is_none_or(|c| c.guest.unplugs());
                let a = self.attachment_mut(*slot)?;
                a.refs = a.refs.checked_sub(1).ok_or("reference count underflow")?;
                if a.refs == 0 {
                    match a.phase {
                        AttachPhase::Reserved | AttachPhase::Failed | AttachPhase::Lost => {
                            self.attachments.remove(slot);
                        }
                        AttachPhase::Attached if unplugs => a.phase = AttachPhase::NeedsUnplug,
                        AttachPhase::Attached => a.phase = AttachPhase::NeedsDetach,
                        p => return Err(format!("cannot drop the last reference while {p:?}")),
                    }
                }
            }
            Event::MountReserved {
                mount,
                slot,
                index,
                path,
                spec,
            } => {
                let a = self.attachment(*slot)?;
                if !a.phase.shareable() {
                    return Err(format!("attachment at {slot} is {:?}", a.phase));
                }
                let attach = a.attach;
                if *mount < self.next_mount {
                    return Err(format!("mount id {mount} was already used"));
                }
                if let Some((id, _)) = self.mounts.iter().find(|(_, m)| m.path == *path) {
                    return Err(format!("guest path {path} is held by mount {id}"));
                }
                if let Some(i) = index {
                    if self.mounts.values().any(|m| m.index == Some(*i)) {
                        return Err(format!("mount index {i} is in use"));
                    }
                }
                let o = self.add_op_mut(op)?;
                if o.holds_attach != Some(*slot) {
                    return Err(format!("operation holds no reference on attachment {slot}"));
                }
                if o.holds_mount.is_some() {
                    return Err("operation already holds a mount".into());
                }
                o.holds_mount = Some(*mount);
                self.mounts.insert(
                    *mount,
                    Mount {
                        slot: *slot,
                        attach,
                        index: *index,
                        path: path.clone(),
                        spec: spec.clone(),
                        refs: 1,
                        phase: MountPhase::Reserved,
                        pending: None,
                        last_error: None,
                    },
                );
                self.next_mount = mount + 1;
            }
            Event::MountRefTaken { mount } => {
                let m = self.mount(*mount)?;
                if !m.phase.shareable() {
                    return Err(format!("mount {mount} is {:?}", m.phase));
                }
                let slot = m.slot;
                let o = self.add_op_mut(op)?;
                if o.holds_attach != Some(slot) {
                    return Err(format!("operation holds no reference on attachment {slot}"));
                }
                if o.holds_mount.is_some() {
                    return Err("operation already holds a mount".into());
                }
                o.holds_mount = Some(*mount);
                self.mount_mut(*mount)?.refs += 1;
            }
            Event::MountRefDropped { mount } => {
                let m = self.mount(*mount)?;
                if m.pending.is_some() {
                    return Err(format!("mount {mount} has a step in flight"));
                }
                if m.phase == MountPhase::Mounting {
                    return Err(format!("mount {mount} is unresolved"));
                }
                self.drop_holder(op, Ref::Mount(*mount))
                    .map_err(|e| format!("{e} on mount {mount}"))?;
                let m = self.mount_mut(*mount)?;
                m.refs = m.refs.checked_sub(1).ok_or("reference count underflow")?;
                if m.refs == 0 {
                    match m.phase {
                        MountPhase::Reserved | MountPhase::Failed | MountPhase::Lost => {
                            self.mounts.remove(mount);
                        }
                        MountPhase::Mounted => m.phase = MountPhase::NeedsUnmount,
                        p => return Err(format!("cannot drop the last reference while {p:?}")),
                    }
                }
            }
            Event::StepIntent { step, target } => {
                self.op(op)?;
                self.step_intent(*step, *target)?;
            }
            Event::StepDone { step, target } => {
                self.op(op)?;
                self.step_outcome(*step, *target, true, None)?;
            }
            Event::StepFailed {
                step,
                target,
                error,
            } => {
                self.op(op)?;
                self.step_outcome(*step, *target, false, Some(error.clone()))?;
            }
            Event::StepResolved {
                step,
                target,
                resolution,
            } => {
                self.op(op)?;
                let happened = *resolution == Resolution::Happened;
                let note = (!happened).then(|| "did not happen (found by inspect)".to_string());
                self.step_outcome(*step, *target, happened, note)?;
            }
            Event::HandleIssued {
                handle,
                slot,
                mount,
                owner,
            } => {
                if self.handles.contains_key(handle) || *handle < self.next_handle {
                    return Err(format!("handle {handle} was already issued"));
                }
                let o = self.op(op)?;
                if o.holds_attach != Some(*slot) || o.holds_mount != *mount {
                    return Err("handle does not match the references the operation holds".into());
                }
                let a = self.attachment(*slot)?;
                if a.phase != AttachPhase::Attached {
                    return Err(format!("attachment at {slot} is {:?}", a.phase));
                }
                let attach = a.attach;
                let path = match mount {
                    Some(id) => {
                        let m = self.mount(*id)?;
                        if m.phase != MountPhase::Mounted {
                            return Err(format!("mount {id} is {:?}", m.phase));
                        }
                        m.path.clone()
                    }
                    None => String::new(),
                };
                let o = self.op_mut(op)?;
                o.holds_attach = None;
                o.holds_mount = None;
                o.handle = Some(*handle);
                self.handles.insert(
                    *handle,
                    Handle {
                        issued_by: op,
                        slot: *slot,
                        attach,
                        mount: *mount,
                        path,
                        owner: owner.clone(),
                        holds_attach: true,
                        holds_mount: mount.is_some(),
                        releasing: false,
                    },
                );
                self.next_handle = handle + 1;
                self.counters.handles_issued += 1;
            }
            Event::ReleaseStarted { handle } => {
                self.handle(*handle)?;
                let o = self.op_mut(op)?;
                if o.releasing.is_some() {
                    return Err("operation is already releasing a handle".into());
                }
                o.releasing = Some(*handle);
                if let Some(h) = self.handles.get_mut(handle) {
                    h.releasing = true;
                }
            }
            Event::HandleReleased { handle } => {
                let h = self.handle(*handle)?;
                if h.holds_attach || h.holds_mount {
                    return Err(format!("handle {handle} still holds references"));
                }
                if self.op(op)?.releasing != Some(*handle) {
                    return Err(format!("operation is not releasing handle {handle}"));
                }
                self.handles.remove(handle);
                self.counters.handles_released += 1;
            }
            Event::DriftFound { drift } => {
                self.op(op)?;
                self.drift.retain(|d| !repairs(drift, d));
                if !self.drift.contains(drift) {
                    self.drift.push(drift.clone());
                }
            }
            Event::AttachmentLost { slot } => {
                self.op(op)?;
                let a = self.attachment_mut(*slot)?;
                a.pending = None;
                a.phase = AttachPhase::Lost;
                if a.refs == 0 {
                    self.attachments.remove(slot);
                }
            }
            Event::MountLost { mount } => {
                self.op(op)?;
                let m = self.mount_mut(*mount)?;
                m.pending = None;
                m.phase = MountPhase::Lost;
                if m.refs == 0 {
                    self.mounts.remove(mount);
                }
            }
            Event::ConfigSet { config } => {
                self.config = Some(config.clone());
            }
            Event::OpFinished
            | Event::OpFailed { .. }
            | Event::OpRolledBack { .. }
            | Event::OpAbandoned => {
                let o = self.op(op)?;
                if o.holds_attach.is_some() || o.holds_mount.is_some() {
                    return Err(format!("operation {op} still holds references"));
                }
                self.ops.remove(&op);
                let c = &mut self.counters;
                match ev {
                    Event::OpFinished => c.ops_finished += 1,
                    Event::OpFailed { .. } => c.ops_failed += 1,
                    Event::OpRolledBack { .. } => c.ops_rolled_back += 1,
                    _ => c.ops_abandoned += 1,
                }
            }
            Event::CheckpointTaken { .. } => {}
        }
        Ok(())
    }

    fn step_intent(&mut self, step: Step, target: Target) -> Check<()> {
        match (step, target) {
            (Step::Attach | Step::Unplug | Step::Detach, Target::Slot(slot)) => {
                let a = self.attachment_mut(slot)?;
                if let Some(p) = a.pending {
                    return Err(format!("{p} already in flight at {slot}"));
                }
                let want = match step {
                    Step::Attach => AttachPhase::Reserved,
                    Step::Unplug => AttachPhase::NeedsUnplug,
                    _ => AttachPhase::NeedsDetach,
                };
                if a.phase != want {
                    return Err(format!("{step} at {slot} while {:?}", a.phase));
                }
                if step == Step::Attach {
                    a.phase = AttachPhase::Attaching;
                }
                a.pending = Some(step);
            }
            (Step::Mount | Step::Unmount, Target::Mount(id)) => {
                let m = self.mount_mut(id)?;
                if let Some(p) = m.pending {
                    return Err(format!("{p} already in flight on mount {id}"));
                }
                let want = match step {
                    Step::Mount => MountPhase::Reserved,
                    _ => MountPhase::NeedsUnmount,
                };
                if m.phase != want {
                    return Err(format!("{step} of mount {id} while {:?}", m.phase));
                }
                if step == Step::Mount {
                    m.phase = MountPhase::Mounting;
                }
                m.pending = Some(step);
            }
            _ => return Err(format!("{step} cannot target {target:?}")),
        }
        Ok(())
    }

    fn step_outcome(
        &mut self,
        step: Step,
        target: Target,
        ok: bool,
        error: Option<String>,
    ) -> Check<()> {
        match target {
            Target::Slot(slot) => {
                let a = self.attachment_mut(slot)?;
                if a.pending != Some(step) {
                    return Err(format!("no {step} in flight at {slot}"));
                }
                a.pending = None;
                a.last_error = error;
                match (step, ok) {
                    (Step::Attach, true) => a.phase = AttachPhase::Attached,
                    (Step::Attach, false) => {
                        a.phase = AttachPhase::Failed;
                        if a.refs == 0 {
                            self.attachments.remove(&slot);
                        }
                    }
                    (Step::Unplug, true) => a.phase = AttachPhase::NeedsDetach,
                    (Step::Detach, true) => {
                        self.attachments.remove(&slot);
                    }
                    // A failed teardown step stays due; its slot stays reserved.
                    _ => {}
                }
            }
            Target::Mount(id) => {
                let m = self.mount_mut(id)?;
                if m.pending != Some(step) {
                    return Err(format!("no {step} in flight on mount {id}"));
                }
                m.pending = None;
                m.last_error = error;
                match (step, ok) {
                    (Step::Mount, true) => m.phase = MountPhase::Mounted,
                    (Step::Mount, false) => {
                        m.phase = MountPhase::Failed;
                        if m.refs == 0 {
                            self.mounts.remove(&id);
                        }
                    }
                    (Step::Unmount, true) => {
                        self.mounts.remove(&id);
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Clears the reference a drop is for: the operation's own, or else that of the handle the
    /// operation is releasing.
    fn drop_holder(&mut self, op: OpId, r: Ref) -> Check<()> {
        let o = self.op_mut(op)?;
        match r {
            Ref::Attach(slot, _) if o.holds_attach == Some(slot) => {
                o.holds_attach = None;
                return Ok(());
            }
            Ref::Mount(id) if o.holds_mount == Some(id) => {
                o.holds_mount = None;
                return Ok(());
            }
            _ => {}
        }
        let releasing = o.releasing.ok_or("the operation holds no such reference")?;
        let h = self
            .handles
            .get_mut(&releasing)
            .ok_or_else(|| format!("handle {releasing} is unknown"))?;
        match r {
            Ref::Attach(slot, attach) if h.holds_attach && h.slot == slot && h.attach == attach => {
                h.holds_attach = false;
            }
            Ref::Mount(id) if h.holds_mount && h.mount == Some(id) => h.holds_mount = false,
            _ => return Err(format!("handle {releasing} holds no such reference")),
        }
        Ok(())
    }

    fn op(&self, op: OpId) -> Check<&Op> {
        self.ops
            .get(&op)
            .ok_or_else(|| format!("operation {op} is not in flight"))
    }

    fn op_mut(&mut self, op: OpId) -> Check<&mut Op> {
        self.ops
            .get_mut(&op)
            .ok_or_else(|| format!("operation {op} is not in flight"))
    }

    fn add_op_mut(&mut self, op: OpId) -> Check<&mut Op> {
        let o = self.op_mut(op)?;
        if !matches!(o.kind, OpKind::Add { .. }) {
            return Err(format!("operation {op} is not an add"));
        }
        Ok(o)
    }

    fn attachment(&self, slot: Slot) -> Check<&Attachment> {
        self.attachments
            .get(&slot)
            .ok_or_else(|| format!("no attachment at {slot}"))
    }

    fn attachment_mut(&mut self, slot: Slot) -> Check<&mut Attachment> {
        self.attachments
            .get_mut(&slot)
            .ok_or_else(|| format!("no attachment at {slot}"))
    }

    fn mount(&self, id: MountId) -> Check<&Mount> {
        self.mounts.get(&id).ok_or_else(|| format!("no mount {id}"))
    }

    fn mount_mut(&mut self, id: MountId) -> Check<&mut Mount> {
        self.mounts
            .get_mut(&id)
            .ok_or_else(|| format!("no mount {id}"))
    }

    fn handle(&self, id: HandleId) -> Check<&Handle> {
        self.handles
            .get(&id)
            .ok_or_else(|| format!("no handle {id}"))
    }
}

/// A reference being dropped.
#[derive(Clone, Copy)]
enum Ref {
    Attach(Slot, AttachId),
    Mount(MountId),
}

/// Whether finding `new` is the repair of finding `old` (which it then replaces).
fn repairs(new: &lunledger_model::Drift, old: &lunledger_model::Drift) -> bool {
    use lunledger_model::Drift;
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
