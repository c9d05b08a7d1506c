//! `check`: whether an event fits the state, and the [`Change`] it makes if it does.
//!
//! It reads the state through `&self` only, so a refused event cannot have changed anything;
//! `commit` (in `change.rs`) then makes the change and cannot fail.

use crate::change::{AfterDrop, AfterStep, Change, Holder, OpEnd};
use crate::state::{AttachPhase, Attachment, Handle, Mount, MountPhase, Op, State};
use lunledger_model::{
    AttachId, Event, HandleId, MountId, OpId, OpKind, Resolution, Slot, Step, Target,
};

pub(crate) type Check<T> = Result<T, String>;

impl State {
    /// Decides what `ev`, as record `seq` of operation `op`, does to this state.
    pub(crate) fn check(&self, seq: u64, op: OpId, ev: &Event) -> Check<Change> {
        Ok(match ev {
            Event::OpStarted { kind } => {
                if self.ops.contains_key(&op) || op < self.next_op {
                    return Err(format!("operation {op} was already started"));
                }
                if let OpKind::Release { handle } = kind {
                    self.handle(*handle)?;
                }
                Change::OpStarted {
                    op,
                    entry: Op {
                        kind: kind.clone(),
                        started_seq: seq,
                        holds_attach: None,
                        holds_mount: None,
                        handle: None,
                        releasing: None,
                    },
                    clears_drift: *kind == OpKind::Recovery,
                }
            }
            Event::AccessGranted { .. }
            | Event::StepIntent { .. }
            | Event::StepDone { .. }
            | Event::StepFailed { .. }
            | Event::StepResolved { .. }
            | Event::DriftFound { .. }
            | Event::AttachmentLost { .. }
            | Event::MountLost { .. } => {
                self.op(op)?;
                self.check_in_op(ev)?
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
                if self.add_op(op)?.holds_attach.is_some() {
                    return Err("operation already holds an attachment".into());
                }
                Change::AttachReserved {
                    op,
                    slot: *slot,
                    entry: Attachment {
                        attach: *attach,
                        disk: disk.clone(),
                        refs: 1,
                        phase: AttachPhase::Reserved,
                        pending: None,
                        last_error: None,
                    },
                }
            }
            Event::AttachRefTaken { slot } => {
                let a = self.attachment(*slot)?;
                if !a.phase.shareable() {
                    return Err(format!("attachment at {slot} is {:?}", a.phase));
                }
                if self.add_op(op)?.holds_attach.is_some() {
                    return Err("operation already holds an attachment".into());
                }
                Change::AttachRefTaken { op, slot: *slot }
            }
            Event::AttachRefDropped { slot } => {
                let a = self.attachment(*slot)?;
                if a.pending.is_some() {
                    return Err(format!("attachment at {slot} has a step in flight"));
                }
                if a.phase == AttachPhase::Attaching {
                    return Err(format!("attach at {slot} is unresolved"));
                }
                let holder = self
                    .holder(op, Held::Attach(*slot, a.attach))
                    .map_err(|e| format!("{e} on attachment {slot}"))?;
                // A Windows guest has no unplug (hcsshim: a no-op): its teardown goes straight
                // to the host's detach.
                let unplugs = self.config.as_ref().is_none_or(|c| c.guest.unplugs());
                let then = match a.refs {
                    0 => return Err("reference count underflow".into()),
                    1 => match a.phase {
                        AttachPhase::Reserved | AttachPhase::Failed | AttachPhase::Lost => {
                            AfterDrop::Remove
                        }
                        AttachPhase::Attached if unplugs => {
                            AfterDrop::Teardown(AttachPhase::NeedsUnplug)
                        }
                        AttachPhase::Attached => AfterDrop::Teardown(AttachPhase::NeedsDetach),
                        p => return Err(format!("cannot drop the last reference while {p:?}")),
                    },
                    _ => AfterDrop::Shared,
                };
                Change::AttachRefDropped {
                    holder,
                    slot: *slot,
                    then,
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
                self.may_take_mount(op, *slot)?;
                Change::MountReserved {
                    op,
                    mount: *mount,
                    entry: Mount {
                        slot: *slot,
                        attach: a.attach,
                        index: *index,
                        path: path.clone(),
                        spec: spec.clone(),
                        refs: 1,
                        phase: MountPhase::Reserved,
                        pending: None,
                        last_error: None,
                    },
                }
            }
            Event::MountRefTaken { mount } => {
                let m = self.mount(*mount)?;
                if !m.phase.shareable() {
                    return Err(format!("mount {mount} is {:?}", m.phase));
                }
                self.may_take_mount(op, m.slot)?;
                Change::MountRefTaken { op, mount: *mount }
            }
            Event::MountRefDropped { mount } => {
                let m = self.mount(*mount)?;
                if m.pending.is_some() {
                    return Err(format!("mount {mount} has a step in flight"));
                }
                if m.phase == MountPhase::Mounting {
                    return Err(format!("mount {mount} is unresolved"));
                }
                let holder = self
                    .holder(op, Held::Mount(*mount))
                    .map_err(|e| format!("{e} on mount {mount}"))?;
                let then = match m.refs {
                    0 => return Err("reference count underflow".into()),
                    1 => match m.phase {
                        MountPhase::Reserved | MountPhase::Failed | MountPhase::Lost => {
                            AfterDrop::Remove
                        }
                        MountPhase::Mounted => AfterDrop::Teardown(MountPhase::NeedsUnmount),
                        p => return Err(format!("cannot drop the last reference while {p:?}")),
                    },
                    _ => AfterDrop::Shared,
                };
                Change::MountRefDropped {
                    holder,
                    mount: *mount,
                    then,
                }
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
                Change::HandleIssued {
                    op,
                    handle: *handle,
                    entry: Handle {
                        issued_by: op,
                        slot: *slot,
                        attach: a.attach,
                        mount: *mount,
                        path,
                        owner: owner.clone(),
                        holds_attach: true,
                        holds_mount: mount.is_some(),
                        releasing: false,
                    },
                }
            }
            Event::ReleaseStarted { handle } => {
                self.handle(*handle)?;
                if self.op(op)?.releasing.is_some() {
                    return Err("operation is already releasing a handle".into());
                }
                Change::ReleaseStarted {
                    op,
                    handle: *handle,
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
                Change::HandleReleased { handle: *handle }
            }
            Event::ConfigSet { config } => Change::ConfigSet {
                config: config.clone(),
            },
            Event::OpFinished
            | Event::OpFailed { .. }
            | Event::OpRolledBack { .. }
            | Event::OpAbandoned => {
                let o = self.op(op)?;
                if o.holds_attach.is_some() || o.holds_mount.is_some() {
                    return Err(format!("operation {op} still holds references"));
                }
                let end = match ev {
                    Event::OpFinished => OpEnd::Finished,
                    Event::OpFailed { .. } => OpEnd::Failed,
                    Event::OpRolledBack { .. } => OpEnd::RolledBack,
                    _ => OpEnd::Abandoned,
                };
                Change::OpEnded { op, end }
            }
            Event::CheckpointTaken { .. } => Change::Nothing,
        })
    }

    /// The events that need only an operation in flight (checked by the caller) and their
    /// target.
    fn check_in_op(&self, ev: &Event) -> Check<Change> {
        Ok(match ev {
            Event::StepIntent { step, target } => self.step_started(*step, *target)?,
            Event::StepDone { step, target } => self.step_ended(*step, *target, true, None)?,
            Event::StepFailed {
                step,
                target,
                error,
            } => self.step_ended(*step, *target, false, Some(error.clone()))?,
            Event::StepResolved {
                step,
                target,
                resolution,
            } => {
                let happened = *resolution == Resolution::Happened;
                let note = (!happened).then(|| "did not happen (found by inspect)".to_string());
                self.step_ended(*step, *target, happened, note)?
            }
            Event::DriftFound { drift } => Change::DriftFound {
                drift: drift.clone(),
            },
            Event::AttachmentLost { slot } => Change::AttachmentLost {
                slot: *slot,
                remove: self.attachment(*slot)?.refs == 0,
            },
            Event::MountLost { mount } => Change::MountLost {
                mount: *mount,
                remove: self.mount(*mount)?.refs == 0,
            },
            _ => Change::Nothing,
        })
    }

    fn step_started(&self, step: Step, target: Target) -> Check<Change> {
        match (step, target) {
            (Step::Attach | Step::Unplug | Step::Detach, Target::Slot(slot)) => {
                let a = self.attachment(slot)?;
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
                let phase = match step {
                    Step::Attach => AttachPhase::Attaching,
                    _ => a.phase,
                };
                Ok(Change::SlotStepStarted { slot, step, phase })
            }
            (Step::Mount | Step::Unmount, Target::Mount(mount)) => {
                let m = self.mount(mount)?;
                if let Some(p) = m.pending {
                    return Err(format!("{p} already in flight on mount {mount}"));
                }
                let want = match step {
                    Step::Mount => MountPhase::Reserved,
                    _ => MountPhase::NeedsUnmount,
                };
                if m.phase != want {
                    return Err(format!("{step} of mount {mount} while {:?}", m.phase));
                }
                let phase = match step {
                    Step::Mount => MountPhase::Mounting,
                    _ => m.phase,
                };
                Ok(Change::MountStepStarted { mount, step, phase })
            }
            _ => Err(format!("{step} cannot target {target:?}")),
        }
    }

    fn step_ended(
        &self,
        step: Step,
        target: Target,
        ok: bool,
        error: Option<String>,
    ) -> Check<Change> {
        match target {
            Target::Slot(slot) => {
                let a = self.attachment(slot)?;
                if a.pending != Some(step) {
                    return Err(format!("no {step} in flight at {slot}"));
                }
                let then = match (step, ok) {
                    (Step::Attach, true) => AfterStep::Phase(AttachPhase::Attached),
                    (Step::Attach, false) if a.refs == 0 => AfterStep::Remove,
                    (Step::Attach, false) => AfterStep::Phase(AttachPhase::Failed),
                    (Step::Unplug, true) => AfterStep::Phase(AttachPhase::NeedsDetach),
                    (Step::Detach, true) => AfterStep::Remove,
                    // A failed teardown step stays due; its slot stays reserved.
                    _ => AfterStep::Stay,
                };
                Ok(Change::SlotStepEnded { slot, error, then })
            }
            Target::Mount(mount) => {
                let m = self.mount(mount)?;
                if m.pending != Some(step) {
                    return Err(format!("no {step} in flight on mount {mount}"));
                }
                let then = match (step, ok) {
                    (Step::Mount, true) => AfterStep::Phase(MountPhase::Mounted),
                    (Step::Mount, false) if m.refs == 0 => AfterStep::Remove,
                    (Step::Mount, false) => AfterStep::Phase(MountPhase::Failed),
                    (Step::Unmount, true) => AfterStep::Remove,
                    _ => AfterStep::Stay,
                };
                Ok(Change::MountStepEnded { mount, error, then })
            }
        }
    }

    /// Who drops a reference: the operation's own, or else that of the handle the operation
    /// is releasing.
    fn holder(&self, op: OpId, held: Held) -> Check<Holder> {
        let o = self.op(op)?;
        match held {
            Held::Attach(slot, _) if o.holds_attach == Some(slot) => return Ok(Holder::Op(op)),
            Held::Mount(id) if o.holds_mount == Some(id) => return Ok(Holder::Op(op)),
            _ => {}
        }
        let releasing = o.releasing.ok_or("the operation holds no such reference")?;
        let h = self
            .handles
            .get(&releasing)
            .ok_or_else(|| format!("handle {releasing} is unknown"))?;
        match held {
            Held::Attach(slot, attach)
                if h.holds_attach && h.slot == slot && h.attach == attach =>
            {
                Ok(Holder::Handle(releasing))
            }
            Held::Mount(id) if h.holds_mount && h.mount == Some(id) => {
                Ok(Holder::Handle(releasing))
            }
            _ => Err(format!("handle {releasing} holds no such reference")),
        }
    }

    /// Whether add `op` may take a mount on the attachment at `slot`: it holds a reference on
    /// that attachment and no mount yet.
    fn may_take_mount(&self, op: OpId, slot: Slot) -> Check<()> {
        let o = self.add_op(op)?;
        if o.holds_attach != Some(slot) {
            return Err(format!("operation holds no reference on attachment {slot}"));
        }
        if o.holds_mount.is_some() {
            return Err("operation already holds a mount".into());
        }
        Ok(())
    }

    fn op(&self, op: OpId) -> Check<&Op> {
        self.ops
            .get(&op)
            .ok_or_else(|| format!("operation {op} is not in flight"))
    }

    fn add_op(&self, op: OpId) -> Check<&Op> {
        let o = self.op(op)?;
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

    fn mount(&self, id: MountId) -> Check<&Mount> {
        self.mounts.get(&id).ok_or_else(|| format!("no mount {id}"))
    }

    fn handle(&self, id: HandleId) -> Check<&Handle> {
        self.handles
            .get(&id)
            .ok_or_else(|| format!("no handle {id}"))
    }
}

/// A reference being dropped.
#[derive(Clone, Copy)]
enum Held {
    Attach(Slot, AttachId),
    Mount(MountId),
}
