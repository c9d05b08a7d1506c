//! Builds a [`Timeline`] from journal records by folding them: a record names only a slot or a
//! mount id, and whether an attachment or mount ended with it is what the state says after it
//! applied (the same `State::apply` recovery uses), so spans end exactly where the fold frees
//! them.

use super::{
    layout, AttachSpan, DriftMark, Lane, MountSpan, OpSpan, Records, Restart, SpanEnd, StepSpan,
    Timeline, MAX_IDS, MAX_RECS,
};
use lunledger_journal::Record;
use lunledger_model::{Drift, Event, MountId, OpKind, Resolution, Slot, Step, Target};
use lunledger_recovery::{AttachPhase, MountPhase, State};
use std::collections::{BTreeMap, HashMap};

/// At most this many lines describe what one recovery did (the rest are counted).
const MAX_DID: usize = 12;

/// The timeline of every record, folded from `start` (an empty state, or a checkpoint's for a
/// pruned journal).
pub fn build(start: &State, records: &[Record]) -> Timeline {
    build_filtered(start, records, |_| true, true)
}

/// The timeline of the records `keep` accepts (by index into `records`). Every record is
/// folded, so context (which disk is at a slot, which mount a step acts on) is right whatever
/// the filter; a mark is shown when a record behind it is kept. `all`: no filter was given, so
/// attachments already held at the start are shown even when no record touches them.
pub fn build_filtered(
    start: &State,
    records: &[Record],
    keep: impl Fn(usize) -> bool,
    all: bool,
) -> Timeline {
    let mut b = Builder::new(start.clone(), all);
    for (i, rec) in records.iter().enumerate() {
        if let Err(e) = b.push(rec, keep(i)) {
            b.problem = Some(format!(
                "record {} ({}) does not fit the state: {}",
                e.seq, e.event, e.what
            ));
            break;
        }
    }
    b.finish()
}

/// Where an attachment span is: lane, span.
type APos = (usize, usize);
/// Where a mount span is: lane, span, mount.
type MPos = (usize, usize, usize);
/// Where a step span is: its owner and the step's index.
#[derive(Clone, Copy)]
enum SPos {
    Attach(APos, usize),
    Mount(MPos, usize),
}

struct Builder {
    state: State,
    all: bool,
    lanes: Vec<Lane>,
    lane_of: BTreeMap<Slot, usize>,
    open_attach: HashMap<Slot, APos>,
    open_mount: HashMap<MountId, MPos>,
    intents: HashMap<(Step, Target), SPos>,
    /// Steps whose outcome was never recorded (their end is decided in `finish`).
    unended: Vec<SPos>,
    ops: Vec<OpSpan>,
    op_index: HashMap<u64, usize>,
    restarts: Vec<Restart>,
    /// The restart whose recovery operation is running, and the recovery's op id.
    recovering: Option<(usize, u64)>,
    teardown_counts: (usize, usize),
    drift: Vec<DriftMark>,
    records: Records,
    names: HashMap<&'static str, u16>,
    texts: HashMap<String, u32>,
    disks: Vec<String>,
    disk_index: HashMap<String, usize>,
    /// Absolute times of the first and last record kept, and of the previous record folded.
    first_kept: Option<(u64, u64)>,
    last_kept: Option<(u64, u64)>,
    prev_ts: Option<u64>,
    problem: Option<String>,
}

impl Builder {
    fn new(state: State, all: bool) -> Builder {
        let mut b = Builder {
            state,
            all,
            lanes: Vec::new(),
            lane_of: BTreeMap::new(),
            open_attach: HashMap::new(),
            open_mount: HashMap::new(),
            intents: HashMap::new(),
            unended: Vec::new(),
            ops: Vec::new(),
            op_index: HashMap::new(),
            restarts: Vec::new(),
            recovering: None,
            teardown_counts: (0, 0),
            drift: Vec::new(),
            records: Records::default(),
            names: HashMap::new(),
            texts: HashMap::new(),
            disks: Vec::new(),
            disk_index: HashMap::new(),
            first_kept: None,
            last_kept: None,
            prev_ts: None,
            problem: None,
        };
        b.name("");
        b.seed();
        b
    }

    /// Spans for what the starting state already holds (a pruned journal's checkpoint).
    fn seed(&mut self) {
        let attachments: Vec<_> = self
            .state
            .attachments
            .iter()
            .map(|(s, a)| (*s, a.attach, a.disk.path.clone(), a.disk.read_only))
            .collect();
        for (slot, attach, path, ro) in attachments {
            self.open_attachment(slot, attach, &path, ro, 0);
        }
        let mounts: Vec<_> = self
            .state
            .mounts
            .iter()
            .map(|(id, m)| (*id, m.slot, m.path.clone()))
            .collect();
        for (id, slot, path) in mounts {
            self.open_mount_span(id, slot, &path, 0);
        }
    }

    fn name(&mut self, n: &'static str) -> u16 {
        let next = u16::try_from(self.records.names.len()).unwrap_or(u16::MAX);
        *self.names.entry(n).or_insert_with(|| {
            self.records.names.push(n);
            next
        })
    }

    fn text(&mut self, t: &str) -> u32 {
        if let Some(i) = self.texts.get(t) {
            return *i + 1;
        }
        let i = u32::try_from(self.records.texts.len()).unwrap_or(u32::MAX);
        self.records.texts.push(t.to_string());
        self.texts.insert(t.to_string(), i);
        i.saturating_add(1)
    }

    fn disk(&mut self, path: &str) -> usize {
        if let Some(i) = self.disk_index.get(path) {
            return *i;
        }
        self.disks.push(path.to_string());
        self.disk_index
            .insert(path.to_string(), self.disks.len() - 1);
        self.disks.len() - 1
    }

    fn lane(&mut self, slot: Slot) -> usize {
        if let Some(i) = self.lane_of.get(&slot) {
            return *i;
        }
        self.lanes.push(Lane {
            slot: slot.to_string(),
            spans: Vec::new(),
        });
        self.lane_of.insert(slot, self.lanes.len() - 1);
        self.lanes.len() - 1
    }

    fn open_attachment(&mut self, slot: Slot, attach: u64, path: &str, ro: bool, ts: u64) {
        let lane = self.lane(slot);
        let disk = self.disk(path);
        self.lanes[lane].spans.push(AttachSpan {
            attach,
            disk,
            read_only: ro,
            start: ts,
            stop: u64::MAX,
            end: SpanEnd::Open,
            steps: Vec::new(),
            mounts: Vec::new(),
            ops: Vec::new(),
            handles: Vec::new(),
            recs: Vec::new(),
        });
        let pos = (lane, self.lanes[lane].spans.len() - 1);
        self.open_attach.insert(slot, pos);
    }

    fn open_mount_span(&mut self, id: MountId, slot: Slot, path: &str, ts: u64) {
        let Some(&(l, s)) = self.open_attach.get(&slot) else {
            return;
        };
        let a = &mut self.lanes[l].spans[s];
        a.mounts.push(MountSpan {
            mount: id,
            path: path.to_string(),
            start: ts,
            stop: u64::MAX,
            end: SpanEnd::Open,
            steps: Vec::new(),
            ops: Vec::new(),
            recs: Vec::new(),
        });
        self.open_mount.insert(id, (l, s, a.mounts.len() - 1));
    }

    fn attach_mut(&mut self, p: APos) -> &mut AttachSpan {
        &mut self.lanes[p.0].spans[p.1]
    }

    fn mount_mut(&mut self, p: MPos) -> &mut MountSpan {
        &mut self.lanes[p.0].spans[p.1].mounts[p.2]
    }

    fn step_mut(&mut self, p: SPos) -> &mut StepSpan {
        match p {
            SPos::Attach(a, i) => &mut self.attach_mut(a).steps[i],
            SPos::Mount(m, i) => &mut self.mount_mut(m).steps[i],
        }
    }

    /// Folds one record into the picture (`kept`: it passes the filter).
    fn push(&mut self, rec: &Record, kept: bool) -> Result<(), lunledger_recovery::ApplyError> {
        // The fold first: a record that does not fit ends the picture before it.
        let before_slot_of_handle = match &rec.event {
            Event::OpStarted {
                kind: OpKind::Release { handle },
            } => self.state.handles.get(handle).map(|h| h.slot),
            _ => None,
        };
        self.state.apply(rec)?;
        let idx = if kept { Some(self.keep(rec)) } else { None };
        let ts = rec.ts_micros;
        self.track_op(rec, idx, before_slot_of_handle);
        self.track_restart(rec, idx);
        match &rec.event {
            Event::AttachReserved { slot, attach, disk } => {
                self.open_attachment(*slot, *attach, &disk.path, disk.read_only, ts);
                self.touch_attach(*slot, rec.op, idx);
            }
            Event::AttachRefTaken { slot } | Event::AttachRefDropped { slot } => {
                self.touch_attach(*slot, rec.op, idx);
            }
            Event::AttachmentLost { slot } => {
                self.touch_attach(*slot, rec.op, idx);
                if let Some(p) = self.open_attach.get(slot).copied() {
                    self.attach_mut(p).end = SpanEnd::Lost;
                }
            }
            Event::MountReserved {
                mount, slot, path, ..
            } => {
                self.open_mount_span(*mount, *slot, path, ts);
                self.touch_mount(*mount, rec.op, idx);
            }
            Event::MountRefTaken { mount } | Event::MountRefDropped { mount } => {
                self.touch_mount(*mount, rec.op, idx);
            }
            Event::MountLost { mount } => {
                self.touch_mount(*mount, rec.op, idx);
                if let Some(p) = self.open_mount.get(mount).copied() {
                    self.mount_mut(p).end = SpanEnd::Lost;
                }
            }
            Event::StepIntent { step, target } => self.step_intent(rec, *step, *target, idx),
            Event::StepDone { step, target } => {
                self.step_outcome(*step, *target, ts, "ok", None, idx)
            }
            Event::StepFailed {
                step,
                target,
                error,
            } => self.step_outcome(*step, *target, ts, "failed", Some(error.clone()), idx),
            Event::StepResolved {
                step,
                target,
                resolution,
            } => self.step_resolved(*step, *target, *resolution, idx),
            Event::HandleIssued {
                handle,
                slot,
                mount,
                ..
            } => {
                if let Some(p) = self.open_attach.get(slot).copied() {
                    let a = self.attach_mut(p);
                    push_id(&mut a.handles, *handle);
                    push_rec(&mut a.recs, idx);
                }
                if let Some(p) = mount.and_then(|m| self.open_mount.get(&m).copied()) {
                    push_rec(&mut self.mount_mut(p).recs, idx);
                }
            }
            Event::DriftFound { drift } => self.drift_found(drift, ts, idx),
            _ => {}
        }
        self.close_ended(rec, ts);
        self.prev_ts = Some(ts);
        Ok(())
    }

    /// Adds `rec` to the record table; its index.
    fn keep(&mut self, rec: &Record) -> u32 {
        let i = u32::try_from(self.records.seq.len()).unwrap_or(u32::MAX);
        let (outcome, err): (&'static str, Option<String>) = match &rec.event {
            Event::StepDone { .. } | Event::OpFinished => ("ok", None),
            Event::StepFailed { error, .. } => ("failed", Some(error.clone())),
            Event::OpFailed { error } => ("failed", Some(error.clone())),
            Event::StepResolved { resolution, .. } => (resolution_name(*resolution), None),
            Event::OpRolledBack { reason } => ("rolled-back", Some(reason.clone())),
            Event::OpAbandoned => ("abandoned", None),
            Event::DriftFound { drift } => ("", Some(describe_drift(drift))),
            _ => ("", None),
        };
        let ev = self.name(rec.event.name());
        let out = self.name(outcome);
        let err = err.map(|e| self.text(&e)).unwrap_or(0);
        self.records.seq.push(rec.seq);
        self.records.t.push(rec.ts_micros);
        self.records.op.push(rec.op);
        self.records.ev.push(ev);
        self.records.out.push(out);
        self.records.err.push(err);
        self.first_kept.get_or_insert((rec.seq, rec.ts_micros));
        self.last_kept = Some((rec.seq, rec.ts_micros));
        i
    }

    fn touch_attach(&mut self, slot: Slot, op: u64, idx: Option<u32>) {
        if let Some(p) = self.open_attach.get(&slot).copied() {
            let a = self.attach_mut(p);
            push_id(&mut a.ops, op);
            push_rec(&mut a.recs, idx);
        }
    }

    fn touch_mount(&mut self, mount: MountId, op: u64, idx: Option<u32>) {
        if let Some(p) = self.open_mount.get(&mount).copied() {
            let m = self.mount_mut(p);
            push_id(&mut m.ops, op);
            push_rec(&mut m.recs, idx);
        }
    }

    fn step_intent(&mut self, rec: &Record, step: Step, target: Target, idx: Option<u32>) {
        let span = StepSpan {
            step: step.name(),
            op: rec.op,
            start: rec.ts_micros,
            stop: u64::MAX,
            outcome: "none",
            error: None,
            recs: idx.into_iter().collect(),
        };
        let pos = match target {
            Target::Slot(s) => self.open_attach.get(&s).copied().map(|p| {
                let a = self.attach_mut(p);
                a.steps.push(span);
                SPos::Attach(p, a.steps.len() - 1)
            }),
            Target::Mount(m) => self.open_mount.get(&m).copied().map(|p| {
                let ms = self.mount_mut(p);
                ms.steps.push(span);
                SPos::Mount(p, ms.steps.len() - 1)
            }),
        };
        if let Some(p) = pos {
            self.intents.insert((step, target), p);
        }
    }

    fn step_outcome(
        &mut self,
        step: Step,
        target: Target,
        ts: u64,
        outcome: &'static str,
        error: Option<String>,
        idx: Option<u32>,
    ) {
        if let Some(p) = self.intents.remove(&(step, target)) {
            let s = self.step_mut(p);
            s.stop = ts;
            s.outcome = outcome;
            s.error = error;
            push_rec(&mut s.recs, idx);
        }
        if self.recovering.is_some() {
            if outcome == "ok" {
                self.teardown_counts.0 += 1;
            } else {
                self.teardown_counts.1 += 1;
            }
        }
    }

    fn step_resolved(
        &mut self,
        step: Step,
        target: Target,
        resolution: Resolution,
        idx: Option<u32>,
    ) {
        if let Some(p) = self.intents.remove(&(step, target)) {
            let s = self.step_mut(p);
            s.outcome = resolution_name(resolution);
            push_rec(&mut s.recs, idx);
            // The outcome was lost with the shim: the step ended somewhere before the restart.
            self.unended.push(p);
        }
        self.say(format!(
            "resolved {step} on {}: {}",
            target_name(target),
            resolution_name(resolution)
        ));
    }

    fn drift_found(&mut self, drift: &Drift, ts: u64, idx: Option<u32>) {
        let slot = match drift {
            Drift::UnknownAttachment { slot, .. }
            | Drift::MissingAttachment { slot }
            | Drift::UnknownMountUnmounted { slot, .. } => Some(*slot),
            Drift::MissingMount { mount, .. } => self.state.mounts.get(mount).map(|m| m.slot),
            Drift::UnknownMount { .. } => None,
        };
        if let Some(s) = slot {
            self.lane(s);
        }
        let what = describe_drift(drift);
        self.say(format!("drift: {what}"));
        if idx.is_some() {
            self.drift.push(DriftMark {
                at: ts,
                slot: slot.map(|s| s.to_string()),
                what,
                recs: idx.into_iter().collect(),
            });
        }
    }

    fn track_op(&mut self, rec: &Record, idx: Option<u32>, release_slot: Option<Slot>) {
        let ts = rec.ts_micros;
        if let Event::OpStarted { kind } = &rec.event {
            let (owner, disk, handle) = match kind {
                OpKind::Add { disk, owner, .. } => {
                    (owner.clone(), Some(self.disk(&disk.path)), None)
                }
                OpKind::Release { handle } => {
                    let owner = self.state.handles.get(handle).and_then(|h| h.owner.clone());
                    (owner, None, Some(*handle))
                }
                _ => (None, None, None),
            };
            self.ops.push(OpSpan {
                op: rec.op,
                kind: kind.name(),
                start: ts,
                stop: u64::MAX,
                outcome: "open",
                error: None,
                owner,
                disk,
                handle,
                slot: release_slot.map(|s| s.to_string()),
                row: 0,
                recs: Vec::new(),
            });
            self.op_index.insert(rec.op, self.ops.len() - 1);
        }
        let Some(&i) = self.op_index.get(&rec.op) else {
            return;
        };
        let o = &mut self.ops[i];
        push_rec(&mut o.recs, idx);
        match &rec.event {
            Event::AttachReserved { slot, .. } | Event::AttachRefTaken { slot } => {
                o.slot.get_or_insert_with(|| slot.to_string());
            }
            Event::HandleIssued { handle, slot, .. } => {
                o.handle = Some(*handle);
                o.slot.get_or_insert_with(|| slot.to_string());
            }
            Event::OpFinished => end_op(o, ts, "ok", None),
            Event::OpFailed { error } => end_op(o, ts, "failed", Some(error.clone())),
            Event::OpRolledBack { reason } => {
                end_op(o, ts, "rolled-back", Some(reason.clone()));
                let line = format!("rolled back op {} ({})", rec.op, o.kind);
                self.say(line);
            }
            Event::OpAbandoned => end_op(o, ts, "abandoned", None),
            _ => {}
        }
    }

    fn track_restart(&mut self, rec: &Record, idx: Option<u32>) {
        if let Event::OpStarted {
            kind: OpKind::Recovery,
        } = &rec.event
        {
            // The journal's first record is no restart: nothing ran before it.
            if let Some(prev) = self.prev_ts {
                self.restarts.push(Restart {
                    last_before: prev,
                    at: rec.ts_micros,
                    op: rec.op,
                    did: Vec::new(),
                    recs: Vec::new(),
                });
                self.recovering = Some((self.restarts.len() - 1, rec.op));
                self.teardown_counts = (0, 0);
            }
        }
        let Some((r, op)) = self.recovering else {
            return;
        };
        if rec.op == op {
            push_rec(&mut self.restarts[r].recs, idx);
            if matches!(
                rec.event,
                Event::OpFinished | Event::OpFailed { .. } | Event::OpRolledBack { .. }
            ) {
                let (ok, failed) = self.teardown_counts;
                if ok + failed > 0 {
                    self.say(format!("steps run: {ok} ok, {failed} failed"));
                }
                if self.restarts[r].did.is_empty() {
                    self.say("nothing to do".into());
                }
                self.recovering = None;
            }
        } else if let (Event::OpFinished, Some(&i)) = (&rec.event, self.op_index.get(&rec.op)) {
            if self.ops[i].kind == "release" {
                self.say(format!("finished release op {}", rec.op));
            }
        }
    }

    /// Adds a line to what the running recovery did.
    fn say(&mut self, line: String) {
        if let Some((r, _)) = self.recovering {
            let did = &mut self.restarts[r].did;
            if did.len() < MAX_DID {
                did.push(line);
            } else if did.len() == MAX_DID {
                did.push("... and more".into());
            }
        }
    }

    /// Ends the spans the record freed: the fold no longer holds them.
    fn close_ended(&mut self, rec: &Record, ts: u64) {
        let (slot, mount) = match &rec.event {
            Event::AttachRefDropped { slot } | Event::AttachmentLost { slot } => {
                (Some(*slot), None)
            }
            Event::MountRefDropped { mount } | Event::MountLost { mount } => (None, Some(*mount)),
            Event::StepDone { target, .. }
            | Event::StepFailed { target, .. }
            | Event::StepResolved { target, .. } => match target {
                Target::Slot(s) => (Some(*s), None),
                Target::Mount(m) => (None, Some(*m)),
            },
            Event::DriftFound { .. } | Event::OpRolledBack { .. } | Event::OpFailed { .. } => {
                // Recovery and rollbacks free things without naming them one record each.
                self.close_all_gone(ts);
                return;
            }
            _ => (None, None),
        };
        if let Some(m) = mount {
            if !self.state.mounts.contains_key(&m) {
                if let Some(p) = self.open_mount.remove(&m) {
                    let ms = self.mount_mut(p);
                    ms.stop = ts;
                    if ms.end == SpanEnd::Open {
                        ms.end = SpanEnd::Gone;
                    }
                }
            }
        }
        if let Some(s) = slot {
            self.close_attach_if_gone(s, ts);
        }
    }

    fn close_attach_if_gone(&mut self, slot: Slot, ts: u64) {
        let Some(p) = self.open_attach.get(&slot).copied() else {
            return;
        };
        let still = self.state.attachments.get(&slot).map(|a| a.attach);
        if still == Some(self.attach_mut(p).attach) {
            return;
        }
        self.open_attach.remove(&slot);
        let a = self.attach_mut(p);
        a.stop = ts;
        if a.end == SpanEnd::Open {
            a.end = SpanEnd::Gone;
        }
        let mounts: Vec<u64> = a.mounts.iter().map(|m| m.mount).collect();
        for m in mounts {
            if let Some(mp) = self.open_mount.remove(&m) {
                let ms = self.mount_mut(mp);
                ms.stop = ts;
                if ms.end == SpanEnd::Open {
                    ms.end = SpanEnd::Gone;
                }
            }
        }
    }

    fn close_all_gone(&mut self, ts: u64) {
        let gone: Vec<MountId> = self
            .open_mount
            .keys()
            .filter(|m| !self.state.mounts.contains_key(m))
            .copied()
            .collect();
        for m in gone {
            if let Some(p) = self.open_mount.remove(&m) {
                let ms = self.mount_mut(p);
                ms.stop = ts;
                if ms.end == SpanEnd::Open {
                    ms.end = SpanEnd::Gone;
                }
            }
        }
        let slots: Vec<Slot> = self.open_attach.keys().copied().collect();
        for s in slots {
            self.close_attach_if_gone(s, ts);
        }
    }

    fn finish(mut self) -> Timeline {
        let (first_seq, t0) = self.first_kept.unwrap_or((0, 0));
        let (last_seq, t_last) = self.last_kept.unwrap_or((0, t0));
        // Steps without an outcome ended before the next restart (the shim died), else at the
        // end.
        let restarts_at: Vec<u64> = self.restarts.iter().map(|r| r.last_before).collect();
        let pending: Vec<SPos> = self.intents.drain().map(|(_, p)| p).collect();
        let unended = std::mem::take(&mut self.unended);
        for p in pending.into_iter().chain(unended) {
            let s = self.step_mut(p);
            let start = s.start;
            s.stop = restarts_at
                .iter()
                .copied()
                .find(|&r| r >= start)
                .unwrap_or(t_last);
        }
        // What is still held at the end: open, or due for teardown.
        for (slot, p) in self.open_attach.clone() {
            let phase = self.state.attachments.get(&slot).map(|a| a.phase);
            let a = self.attach_mut(p);
            a.end = match phase {
                Some(AttachPhase::Lost) => SpanEnd::Lost,
                Some(ph) if ph.teardown_due() => SpanEnd::Due,
                _ => a.end,
            };
        }
        for (m, p) in self.open_mount.clone() {
            let phase = self.state.mounts.get(&m).map(|x| x.phase);
            let ms = self.mount_mut(p);
            ms.end = match phase {
                Some(MountPhase::Lost) => SpanEnd::Lost,
                Some(ph) if ph.teardown_due() => SpanEnd::Due,
                _ => ms.end,
            };
        }
        let all = self.all;
        let rel = |t: u64| t.min(t_last).saturating_sub(t0);
        let mut lanes: Vec<(Slot, Lane)> = Vec::new();
        for (slot, i) in std::mem::take(&mut self.lane_of) {
            let mut lane = std::mem::take(&mut self.lanes[i]);
            lane.spans.retain_mut(|a| {
                a.mounts.retain_mut(|m| {
                    m.steps.retain(|s| !s.recs.is_empty());
                    all || !m.recs.is_empty() || !m.steps.is_empty()
                });
                a.steps.retain(|s| !s.recs.is_empty());
                all || !a.recs.is_empty() || !a.steps.is_empty() || !a.mounts.is_empty()
            });
            for a in &mut lane.spans {
                relative_attach(a, rel);
            }
            let has_drift = self
                .drift
                .iter()
                .any(|d| d.slot.as_deref() == Some(&lane.slot));
            if !lane.spans.is_empty() || has_drift {
                lanes.push((slot, lane));
            }
        }
        lanes.sort_by_key(|(s, _)| *s);
        let mut ops: Vec<OpSpan> = std::mem::take(&mut self.ops)
            .into_iter()
            .filter(|o| !o.recs.is_empty())
            .collect();
        for o in &mut ops {
            o.start = rel(o.start);
            o.stop = rel(o.stop);
            o.recs.truncate(MAX_RECS);
        }
        layout::pack(&mut ops);
        // A restart is context for whatever is shown: kept when its recovery's records are,
        // or when it falls within the time the records shown span.
        let shown = self.first_kept.is_some();
        let mut restarts: Vec<Restart> = std::mem::take(&mut self.restarts)
            .into_iter()
            .filter(|r| !r.recs.is_empty() || (shown && r.at >= t0 && r.at <= t_last))
            .collect();
        for r in &mut restarts {
            r.last_before = rel(r.last_before);
            r.at = rel(r.at);
            r.recs.truncate(MAX_RECS);
        }
        let mut drift = std::mem::take(&mut self.drift);
        for d in &mut drift {
            d.at = rel(d.at);
        }
        let mut records = std::mem::take(&mut self.records);
        for t in &mut records.t {
            *t = t.saturating_sub(t0);
        }
        Timeline {
            t0,
            end: t_last.saturating_sub(t0),
            first_seq,
            last_seq,
            disks: std::mem::take(&mut self.disks),
            lanes: lanes.into_iter().map(|(_, l)| l).collect(),
            ops,
            restarts,
            drift,
            records,
            problem: self.problem.take(),
        }
    }
}

fn relative_attach(a: &mut AttachSpan, rel: impl Fn(u64) -> u64 + Copy) {
    a.start = rel(a.start);
    a.stop = rel(a.stop);
    a.recs.truncate(MAX_RECS);
    for s in &mut a.steps {
        s.start = rel(s.start);
        s.stop = rel(s.stop);
    }
    for m in &mut a.mounts {
        m.start = rel(m.start);
        m.stop = rel(m.stop);
        m.recs.truncate(MAX_RECS);
        for s in &mut m.steps {
            s.start = rel(s.start);
            s.stop = rel(s.stop);
        }
    }
}

fn end_op(o: &mut OpSpan, ts: u64, outcome: &'static str, error: Option<String>) {
    o.stop = ts;
    o.outcome = outcome;
    o.error = error;
}

fn push_rec(recs: &mut Vec<u32>, idx: Option<u32>) {
    // Kept whole during the build (whether any record is kept decides whether a mark is shown);
    // truncated to MAX_RECS at the end.
    if let Some(i) = idx {
        recs.push(i);
    }
}

fn push_id(ids: &mut Vec<u64>, id: u64) {
    if ids.len() < MAX_IDS && ids.last() != Some(&id) && !ids.contains(&id) {
        ids.push(id);
    }
}

fn resolution_name(r: Resolution) -> &'static str {
    match r {
        Resolution::Happened => "happened",
        Resolution::DidNotHappen => "did-not-happen",
    }
}

fn target_name(t: Target) -> String {
    match t {
        Target::Slot(s) => format!("slot {s}"),
        Target::Mount(m) => format!("mount {m}"),
    }
}

/// Drift in words (the audit trail's wording).
pub fn describe_drift(d: &Drift) -> String {
    match d {
        Drift::UnknownAttachment {
            slot,
            path,
            detached,
        } => format!(
            "VM holds an unknown disk at {slot}{}{}",
            path.as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default(),
            if *detached { ", detached" } else { "" }
        ),
        Drift::MissingAttachment { slot } => {
            format!("journal says {slot} is attached, the VM has nothing there")
        }
        Drift::UnknownMount { path } => format!("guest has an unknown mount at {path}"),
        Drift::UnknownMountUnmounted { path, slot } => {
            format!("guest had an unknown mount at {path} on our disk at {slot}, unmounted")
        }
        Drift::MissingMount { mount, path } => {
            format!("journal says mount {mount} is at {path}, the guest has nothing there")
        }
    }
}
