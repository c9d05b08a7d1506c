//! The audit trail: one [`Row`] per journal record, with the context a person needs (handle,
//! owner, disk, slot, guest path, outcome, step duration) derived by folding the state as the
//! records go by. A record alone names only a slot or a mount id; the fold knows which disk and
//! which guest path those were at that moment.

use lunledger_journal::Record;
use lunledger_model::{
    Drift, Event, HandleId, MountId, OpId, OpKind, Resolution, Slot, Step, Target,
};
use lunledger_recovery::{ApplyError, State};
use serde::Serialize;
use std::collections::HashMap;

/// One audit line. Field names are the stable JSON schema (docs/cli.md).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Row {
    /// Record sequence number.
    pub seq: u64,
    /// UTC RFC 3339 time with milliseconds.
    pub time: String,
    /// Microseconds since the Unix epoch (for programs).
    pub ts_micros: u64,
    /// Operation id.
    pub op: OpId,
    /// Operation kind (`add`, `release`, `recovery`, `retry-teardown`, `configure`), when known.
    pub op_kind: Option<&'static str>,
    /// Event name (`intent`, `done`, `failed`, `resolved`, `op-started`, ...).
    pub event: &'static str,
    /// Backend step, for step events.
    pub step: Option<&'static str>,
    /// Handle the record concerns.
    pub handle: Option<HandleId>,
    /// Owner label of that handle or operation.
    pub owner: Option<String>,
    /// Host path of the disk.
    pub disk: Option<String>,
    /// Slot as `controller:lun`.
    pub slot: Option<String>,
    /// Guest path.
    pub path: Option<String>,
    /// `ok`, `failed`, `happened`, `did-not-happen`, `rolled-back`, `abandoned`, or absent.
    pub outcome: Option<&'static str>,
    /// Error message or rollback reason.
    pub error: Option<String>,
    /// Milliseconds from the step's intent to this outcome (outcome lines only).
    pub duration_ms: Option<f64>,
    /// Anything else worth saying (drift, configuration, checkpoint).
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Default)]
struct OpInfo {
    kind: Option<&'static str>,
    owner: Option<String>,
    disk: Option<String>,
    handle: Option<HandleId>,
}

/// Folds records into rows. Keeps its own caches of what slots, mounts and handles referred to,
/// because the state forgets a mount or handle once it is gone while later records (a late
/// outcome, a recovery resolution) still name it.
#[derive(Debug)]
pub struct Auditor {
    state: State,
    ops: HashMap<OpId, OpInfo>,
    slot_disk: HashMap<Slot, String>,
    mounts: HashMap<MountId, (Slot, String)>,
    handles: HashMap<HandleId, (Slot, Option<MountId>, Option<String>)>,
    intents: HashMap<(Step, Target), u64>,
    /// Handle issued by each add operation, known ahead (see [`Auditor::learn_handles`]).
    op_handle: HashMap<OpId, HandleId>,
}

impl Auditor {
    /// An auditor starting from `state` (an empty state, or a checkpoint's for a pruned journal).
    pub fn new(state: State) -> Auditor {
        let mut a = Auditor {
            state,
            ops: HashMap::new(),
            slot_disk: HashMap::new(),
            mounts: HashMap::new(),
            handles: HashMap::new(),
            intents: HashMap::new(),
            op_handle: HashMap::new(),
        };
        a.seed_from_state();
        a
    }

    fn seed_from_state(&mut self) {
        for (slot, at) in &self.state.attachments {
            self.slot_disk.insert(*slot, at.disk.path.clone());
        }
        for (id, m) in &self.state.mounts {
            self.mounts.insert(*id, (m.slot, m.path.clone()));
        }
        for (id, h) in &self.state.handles {
            self.handles.insert(*id, (h.slot, h.mount, h.owner.clone()));
        }
        for (id, op) in &self.state.ops {
            let info = op_info(&op.kind, &self.handles);
            self.ops.insert(*id, info);
            if let Some(h) = op.handle {
                self.op_handle.insert(*id, h);
            }
        }
    }

    /// Tells the auditor which handle each add issued, from records it has not folded yet, so
    /// an add's earlier records (its attach and mount) already show the handle it will issue.
    pub fn learn_handles<'a>(&mut self, records: impl IntoIterator<Item = &'a Record>) {
        for r in records {
            if let Event::HandleIssued { handle, .. } = &r.event {
                self.op_handle.insert(r.op, *handle);
            }
        }
    }

    /// The state folded so far.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Describes `rec` in the context of the state before it, then applies it. On a fold error
    /// the state is unchanged and no row is made.
    pub fn push(&mut self, rec: &Record) -> Result<Row, ApplyError> {
        let row = self.describe(rec);
        self.state.apply(rec)?;
        self.remember(rec);
        Ok(row)
    }

    fn describe(&mut self, rec: &Record) -> Row {
        let mut row = Row {
            seq: rec.seq,
            time: format_micros(rec.ts_micros),
            ts_micros: rec.ts_micros,
            op: rec.op,
            op_kind: None,
            event: rec.event.name(),
            step: None,
            handle: None,
            owner: None,
            disk: None,
            slot: None,
            path: None,
            outcome: None,
            error: None,
            duration_ms: None,
            detail: None,
        };
        let mut slot: Option<Slot> = None;
        let mut mount: Option<MountId> = None;
        match &rec.event {
            Event::OpStarted { kind } => {
                let info = op_info(kind, &self.handles);
                if let OpKind::Add {
                    requested_path: Some(p),
                    ..
                } = kind
                {
                    row.path = Some(p.clone());
                }
                self.ops.insert(rec.op, info);
            }
            Event::AccessGranted { vm_id, path } => {
                row.disk = Some(path.clone());
                row.detail = Some(format!("vm {vm_id}"));
            }
            Event::AttachReserved { slot: s, disk, .. } => {
                slot = Some(*s);
                row.disk = Some(disk.path.clone());
                row.detail = Some(
                    if disk.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    }
                    .into(),
                );
            }
            Event::AttachRefTaken { slot: s }
            | Event::AttachRefDropped { slot: s }
            | Event::AttachmentLost { slot: s } => slot = Some(*s),
            Event::MountReserved {
                mount: m,
                slot: s,
                path,
                ..
            } => {
                slot = Some(*s);
                mount = Some(*m);
                row.path = Some(path.clone());
            }
            Event::MountRefTaken { mount: m }
            | Event::MountRefDropped { mount: m }
            | Event::MountLost { mount: m } => mount = Some(*m),
            Event::StepIntent { step, target }
            | Event::StepDone { step, target }
            | Event::StepFailed { step, target, .. }
            | Event::StepResolved { step, target, .. } => {
                row.step = Some(step.name());
                match target {
                    Target::Slot(s) => slot = Some(*s),
                    Target::Mount(m) => mount = Some(*m),
                }
                self.step_outcome(rec, *step, *target, &mut row);
            }
            Event::HandleIssued {
                handle,
                slot: s,
                mount: m,
                owner,
            } => {
                row.handle = Some(*handle);
                row.owner = owner.clone();
                slot = Some(*s);
                mount = *m;
            }
            Event::ReleaseStarted { handle } | Event::HandleReleased { handle } => {
                row.handle = Some(*handle);
                if let Some((s, m, _)) = self.handles.get(handle) {
                    slot = Some(*s);
                    mount = *m;
                }
            }
            Event::DriftFound { drift } => {
                row.detail = Some(describe_drift(drift));
                match drift {
                    Drift::UnknownAttachment { slot: s, path, .. } => {
                        slot = Some(*s);
                        row.disk = path.clone();
                    }
                    Drift::MissingAttachment { slot: s } => slot = Some(*s),
                    Drift::UnknownMount { path } => row.path = Some(path.clone()),
                    Drift::UnknownMountUnmounted { path, slot: s } => {
                        slot = Some(*s);
                        row.path = Some(path.clone());
                    }
                    Drift::MissingMount { mount: m, path } => {
                        mount = Some(*m);
                        row.path = Some(path.clone());
                    }
                }
            }
            Event::ConfigSet { config } => {
                row.detail = Some(format!(
                    "{} controllers x {} LUNs, mounts at {}, {} reserved",
                    config.controllers,
                    config.luns_per_controller,
                    config.mount_format,
                    config.reserved.len()
                ));
            }
            Event::OpFinished => row.outcome = Some("ok"),
            Event::OpFailed { error } => {
                row.outcome = Some("failed");
                row.error = Some(error.clone());
            }
            Event::OpRolledBack { reason } => {
                row.outcome = Some("rolled-back");
                row.error = Some(reason.clone());
            }
            Event::OpAbandoned => row.outcome = Some("abandoned"),
            Event::CheckpointTaken { at_seq } => {
                row.detail = Some(format!("state checkpoint at seq {at_seq}"));
            }
        }
        let info = self.ops.get(&rec.op).cloned().unwrap_or_default();
        if row.handle.is_none() {
            row.handle = info.handle.or_else(|| self.op_handle.get(&rec.op).copied());
        }
        // An operation-level record (start, finish) of a release or of a finished add: the
        // handle's slot and mount say what it was about.
        if slot.is_none() && mount.is_none() && row.disk.is_none() {
            if let Some((s, m, _)) = row.handle.and_then(|h| self.handles.get(&h)) {
                slot = Some(*s);
                mount = *m;
            }
        }
        // Context from the mount, the slot, then the operation, in that order of precision.
        if let Some((s, p)) = mount.and_then(|m| self.mounts.get(&m)) {
            slot = slot.or(Some(*s));
            row.path = row.path.take().or_else(|| Some(p.clone()));
        }
        if let Some(s) = slot {
            row.slot = Some(s.to_string());
            if row.disk.is_none() {
                row.disk = self.slot_disk.get(&s).cloned();
            }
        }
        row.op_kind = info.kind;
        if row.owner.is_none() {
            row.owner = row
                .handle
                .and_then(|h| self.handles.get(&h))
                .and_then(|(_, _, o)| o.clone())
                .or(info.owner);
        }
        if row.disk.is_none() {
            row.disk = info.disk;
        }
        row
    }

    fn step_outcome(&mut self, rec: &Record, step: Step, target: Target, row: &mut Row) {
        let done = |row: &mut Row, outcome| row.outcome = Some(outcome);
        match &rec.event {
            Event::StepIntent { .. } => {
                self.intents.insert((step, target), rec.ts_micros);
                return;
            }
            Event::StepDone { .. } => done(row, "ok"),
            Event::StepFailed { error, .. } => {
                done(row, "failed");
                row.error = Some(error.clone());
            }
            Event::StepResolved { resolution, .. } => done(
                row,
                match resolution {
                    Resolution::Happened => "happened",
                    Resolution::DidNotHappen => "did-not-happen",
                },
            ),
            _ => return,
        }
        if let Some(t0) = self.intents.remove(&(step, target)) {
            row.duration_ms = Some(rec.ts_micros.saturating_sub(t0) as f64 / 1000.0);
        }
    }

    /// Caches what a record introduced (after it applied cleanly).
    fn remember(&mut self, rec: &Record) {
        match &rec.event {
            Event::AttachReserved { slot, disk, .. } => {
                self.slot_disk.insert(*slot, disk.path.clone());
            }
            Event::MountReserved {
                mount, slot, path, ..
            } => {
                self.mounts.insert(*mount, (*slot, path.clone()));
            }
            Event::HandleIssued {
                handle,
                slot,
                mount,
                owner,
            } => {
                self.handles.insert(*handle, (*slot, *mount, owner.clone()));
                self.op_handle.insert(rec.op, *handle);
                if let Some(info) = self.ops.get_mut(&rec.op) {
                    info.handle.get_or_insert(*handle);
                }
            }
            _ => {}
        }
    }
}

fn op_info(
    kind: &OpKind,
    handles: &HashMap<HandleId, (Slot, Option<MountId>, Option<String>)>,
) -> OpInfo {
    match kind {
        OpKind::Add { disk, owner, .. } => OpInfo {
            kind: Some(kind.name()),
            owner: owner.clone(),
            disk: Some(disk.path.clone()),
            handle: None,
        },
        OpKind::Release { handle } => OpInfo {
            kind: Some(kind.name()),
            owner: handles.get(handle).and_then(|(_, _, o)| o.clone()),
            disk: None,
            handle: Some(*handle),
        },
        other => OpInfo {
            kind: Some(other.name()),
            ..OpInfo::default()
        },
    }
}

/// Drift in words (the library's wording, shared with the timeline).
pub fn describe_drift(d: &Drift) -> String {
    crate::timeline::describe_drift(d)
}

/// Formats microseconds since the Unix epoch as `2026-11-21T12:23:46.123Z` (UTC, milliseconds).
pub fn format_micros(micros: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros);
    humantime::format_rfc3339_millis(t).to_string()
}
