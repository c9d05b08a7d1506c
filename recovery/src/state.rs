//! `State`: the fold of journal events. The live manager, `replay`, point-in-time views and
//! recovery all build their state with the same [`State::apply`], so they cannot disagree.
//!
//! `apply` is two phases: `check` (`check.rs`) reads the state through `&self` and either refuses
//! the event with an [`ApplyError`] or returns the `Change` it makes; `commit` (`change.rs`)
//! makes that change and cannot fail. An event that does not fit therefore leaves the state
//! untouched by construction. The live manager validates a step by applying it, and only then
//! appends it to the journal.

use lunledger_model::{
    AttachId, DiskSpec, Entry, Event, HandleId, ManagerConfig, MountId, MountSpec, OpId, OpKind,
    Slot, Step,
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

    /// Applies one record. Checked first: on error the state is unchanged.
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

    // Checked through `&self`, then made: a refused event cannot have changed anything.
    fn apply_event(&mut self, seq: u64, op: OpId, ev: &Event) -> Result<(), String> {
        let change = self.check(seq, op, ev)?;
        self.commit(change);
        Ok(())
    }
}
