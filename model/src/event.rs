//! The event vocabulary: one variant per step the manager takes. Every state change of the manager
//! is one of these, appended before (intents) or after (outcomes) the step it describes, so the
//! fold of the journal alone decides every recovery case.

use crate::spec::{AttachId, DiskSpec, HandleId, ManagerConfig, MountId, MountSpec, Slot};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What an operation was started to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    /// An add (`add_virtual_disk` and friends).
    Add {
        /// The attachment key.
        disk: DiskSpec,
        /// The mount, or `None` for attach only.
        mount: Option<MountSpec>,
        /// Guest path the caller asked for, if any.
        requested_path: Option<String>,
        /// Owner label (a container id, say).
        owner: Option<String>,
        /// VM id for an access grant, if any.
        vm_id: Option<String>,
    },
    /// A release of one handle (also a retry of a failed release).
    Release {
        /// The handle released.
        handle: HandleId,
    },
    /// A recovery pass run when the manager opens the journal.
    Recovery,
    /// A retry of teardowns that failed earlier (no handle involved).
    RetryTeardown,
    /// A configuration change accepted on open.
    Configure,
}

impl OpKind {
    /// Short name for tables and filters.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Add { .. } => "add",
            OpKind::Release { .. } => "release",
            OpKind::Recovery => "recovery",
            OpKind::RetryTeardown => "retry-teardown",
            OpKind::Configure => "configure",
        }
    }
}

/// A backend step: the calls the manager makes on the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Step {
    /// Host: attach the disk at its slot.
    Attach,
    /// Guest: mount the attached disk at its guest path.
    Mount,
    /// Guest: unmount.
    Unmount,
    /// Guest: eject the SCSI device (before the host detaches it).
    Unplug,
    /// Host: detach the disk from its slot.
    Detach,
}

impl Step {
    /// Lower-case name, as shown by `replay` and accepted by `--step`.
    pub fn name(self) -> &'static str {
        match self {
            Step::Attach => "attach",
            Step::Mount => "mount",
            Step::Unmount => "unmount",
            Step::Unplug => "unplug",
            Step::Detach => "detach",
        }
    }

    /// Parses a name as printed by [`Step::name`].
    pub fn parse(s: &str) -> Option<Step> {
        [
            Step::Attach,
            Step::Mount,
            Step::Unmount,
            Step::Unplug,
            Step::Detach,
        ]
        .into_iter()
        .find(|st| st.name() == s)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a step acts on: an attachment (by slot) for attach, unplug and detach; a mount for mount
/// and unmount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    /// The attachment at this slot.
    Slot(Slot),
    /// The mount with this id.
    Mount(MountId),
}

/// How recovery settled a step whose outcome record was missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    /// The backend's `inspect` showed the step took effect.
    Happened,
    /// The backend's `inspect` showed the step did not take effect.
    DidNotHappen,
}

/// A disagreement between the journal and what the VM reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Drift {
    /// The VM has a disk at a slot the journal holds free.
    UnknownAttachment {
        /// Where.
        slot: Slot,
        /// The host path the VM reports, if it knows.
        path: Option<String>,
        /// Whether recovery detached it (only when configured to).
        detached: bool,
    },
    /// The journal says attached, the VM has nothing there: the attachment is marked lost.
    MissingAttachment {
        /// Where.
        slot: Slot,
    },
    /// The guest has a mount at a path the journal does not know.
    UnknownMount {
        /// The guest path.
        path: String,
    },
    /// The journal says mounted, the guest has nothing there: the mount is marked lost.
    MissingMount {
        /// The mount.
        mount: MountId,
        /// Its guest path.
        path: String,
    },
    /// The guest had a mount the journal does not know, on the device at a slot the journal
    /// holds: recovery unmounted it (left there, it would make that device's unplug fail, or
    /// become a zombie mount when the device goes). Recorded after the unmount succeeded; the
    /// `UnknownMount` recorded before it is the intent.
    UnknownMountUnmounted {
        /// The guest path.
        path: String,
        /// The slot of the device behind it.
        slot: Slot,
    },
}

/// One step of the manager's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// An operation began. The record's operation id is the new operation's id.
    OpStarted {
        /// What it does.
        kind: OpKind,
    },
    /// The host granted the VM access to a path (before attaching).
    AccessGranted {
        /// VM id.
        vm_id: String,
        /// Host path.
        path: String,
    },
    /// A new attachment was reserved at a free slot, holding the operation's first reference.
    AttachReserved {
        /// The slot taken.
        slot: Slot,
        /// This attachment's generation id.
        attach: AttachId,
        /// The attachment key.
        disk: DiskSpec,
    },
    /// The operation took a reference on an existing attachment.
    AttachRefTaken {
        /// The attachment's slot.
        slot: Slot,
    },
    /// The operation (or the handle it releases) dropped its reference on an attachment. When it
    /// was the last, the attachment's teardown is due (or its slot is freed at once when it was
    /// never attached).
    AttachRefDropped {
        /// The attachment's slot.
        slot: Slot,
    },
    /// A new mount was reserved at a free index (or a requested path), holding the first reference.
    MountReserved {
        /// New mount id.
        mount: MountId,
        /// The attachment it mounts.
        slot: Slot,
        /// Mount index (for generated paths), or `None` for a caller-requested path.
        index: Option<u32>,
        /// The guest path.
        path: String,
        /// The mount key.
        spec: MountSpec,
    },
    /// The operation took a reference on an existing mount.
    MountRefTaken {
        /// The mount.
        mount: MountId,
    },
    /// A reference on a mount was dropped; when it was the last, an unmount is due.
    MountRefDropped {
        /// The mount.
        mount: MountId,
    },
    /// A backend step is about to run (durable before the backend sees the call).
    StepIntent {
        /// The step.
        step: Step,
        /// Its target.
        target: Target,
    },
    /// The step succeeded.
    StepDone {
        /// The step.
        step: Step,
        /// Its target.
        target: Target,
    },
    /// The step failed.
    StepFailed {
        /// The step.
        step: Step,
        /// Its target.
        target: Target,
        /// The backend's error message.
        error: String,
    },
    /// Recovery settled a step whose outcome record was missing.
    StepResolved {
        /// The step.
        step: Step,
        /// Its target.
        target: Target,
        /// What the backend showed.
        resolution: Resolution,
    },
    /// A handle was issued to the caller (durable before the caller sees it).
    HandleIssued {
        /// New handle id.
        handle: HandleId,
        /// The attachment it holds a reference on.
        slot: Slot,
        /// The mount it holds a reference on, if any.
        mount: Option<MountId>,
        /// Owner label.
        owner: Option<String>,
    },
    /// The handle's release began (the operation is a `Release`).
    ReleaseStarted {
        /// The handle.
        handle: HandleId,
    },
    /// The handle is fully released: its references are dropped and any teardown they started
    /// has finished.
    HandleReleased {
        /// The handle.
        handle: HandleId,
    },
    /// The VM disagreed with the journal.
    DriftFound {
        /// What disagreed.
        drift: Drift,
    },
    /// The attachment at this slot is gone from the VM without our teardown: never handed out
    /// again; its slot is freed once no reference remains.
    AttachmentLost {
        /// The slot.
        slot: Slot,
    },
    /// The mount is gone from the guest without our unmount: never handed out again.
    MountLost {
        /// The mount.
        mount: MountId,
    },
    /// The manager's configuration was set (on create) or changed (on an accepted open).
    ConfigSet {
        /// The configuration now in force.
        config: ManagerConfig,
    },
    /// The operation finished successfully.
    OpFinished,
    /// The operation failed; what it had acquired was released (rolled back) first.
    OpFailed {
        /// Why.
        error: String,
    },
    /// The operation was rolled back by recovery (its caller never got a result).
    OpRolledBack {
        /// Why.
        reason: String,
    },
    /// The operation completed but nobody was waiting for its handle, which was released again.
    OpAbandoned,
    /// A checkpoint of the state was stored at this sequence number.
    CheckpointTaken {
        /// The sequence number the checkpoint's state includes.
        at_seq: u64,
    },
}

impl Event {
    /// Short name for tables and filters.
    pub fn name(&self) -> &'static str {
        match self {
            Event::OpStarted { .. } => "op-started",
            Event::AccessGranted { .. } => "access-granted",
            Event::AttachReserved { .. } => "attach-reserved",
            Event::AttachRefTaken { .. } => "attach-ref-taken",
            Event::AttachRefDropped { .. } => "attach-ref-dropped",
            Event::MountReserved { .. } => "mount-reserved",
            Event::MountRefTaken { .. } => "mount-ref-taken",
            Event::MountRefDropped { .. } => "mount-ref-dropped",
            Event::StepIntent { .. } => "intent",
            Event::StepDone { .. } => "done",
            Event::StepFailed { .. } => "failed",
            Event::StepResolved { .. } => "resolved",
            Event::HandleIssued { .. } => "handle-issued",
            Event::ReleaseStarted { .. } => "release-started",
            Event::HandleReleased { .. } => "handle-released",
            Event::DriftFound { .. } => "drift",
            Event::AttachmentLost { .. } => "attachment-lost",
            Event::MountLost { .. } => "mount-lost",
            Event::ConfigSet { .. } => "config-set",
            Event::OpFinished => "op-finished",
            Event::OpFailed { .. } => "op-failed",
            Event::OpRolledBack { .. } => "op-rolled-back",
            Event::OpAbandoned => "op-abandoned",
            Event::CheckpointTaken { .. } => "checkpoint",
        }
    }

    /// The backend step this event is about, if any.
    pub fn step(&self) -> Option<(Step, Target)> {
        match self {
            Event::StepIntent { step, target }
            | Event::StepDone { step, target }
            | Event::StepFailed { step, target, .. }
            | Event::StepResolved { step, target, .. } => Some((*step, *target)),
            _ => None,
        }
    }
}
