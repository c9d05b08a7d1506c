//! The recovery planner: a pure function from the journal's state and what the VM reports to an
//! ordered list of actions. The manager executes the actions through the same journaled steps as
//! live operations, so a crash during recovery is recovered by planning again.
//!
//! Order: settle steps whose outcome was lost, then drift, then operations in flight (roll back
//! adds whose caller never got a handle, finish releases), then teardowns still due.

use crate::settle::{holds, settle, Settled};
use crate::state::{AttachPhase, MountPhase, State};
use lunledger_model::{
    AttachId, Drift, Event, HandleId, MountId, OpId, OpKind, Resolution, Slot, Step, Target,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One attachment as the host reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenAttachment {
    /// Where.
    pub slot: Slot,
    /// Our generation id, when the backend can tell.
    pub attach: Option<AttachId>,
    /// Host path, when known.
    pub path: Option<String>,
}

/// What the guest reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenGuest {
    /// Devices the guest sees.
    pub devices: Vec<Slot>,
    /// Guest paths mounted (or linked).
    pub mounts: Vec<String>,
    /// The slot of the device behind each mount, for the mounts where the guest can tell.
    #[serde(default)]
    pub mount_slots: BTreeMap<String, Slot>,
}

/// What the VM reported; `None` for a side that could not be inspected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The host's attachments.
    pub host: Option<Vec<SeenAttachment>>,
    /// The guest's devices and mounts.
    pub guest: Option<SeenGuest>,
}

/// Recovery choices.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryPolicy {
    /// Detach disks the VM holds that the journal never attached (default: only report them).
    pub detach_unknown: bool,
}

/// What to do about an operation that finished its release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseEnd {
    /// A release: `OpFinished`.
    Finished,
    /// An add whose caller went away: `OpAbandoned`.
    Abandoned,
}

/// One recovery action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Journal the outcome of a step whose outcome record was lost.
    Resolve {
        /// The step.
        step: Step,
        /// Its target.
        target: Target,
        /// What the VM showed (or what is assumed when it could not tell).
        resolution: Resolution,
        /// Whether the VM was asked (`false`: assumed, the following teardown is idempotent).
        inspected: bool,
    },
    /// Settle an attach or mount an add planned durably whose own intent record was lost (it may
    /// or may not have been called): journal its intent, then its outcome.
    SettlePlanned {
        /// The step (attach or mount).
        step: Step,
        /// Its target.
        target: Target,
        /// What the VM showed (or what is assumed when it could not tell).
        resolution: Resolution,
        /// Whether the VM was asked (`false`: assumed, the rollback's teardown is idempotent).
        inspected: bool,
    },
    /// The VM lost an attachment: mark it lost and report.
    LoseAttachment {
        /// The slot.
        slot: Slot,
    },
    /// The guest lost a mount: mark it lost and report.
    LoseMount {
        /// The mount.
        mount: MountId,
    },
    /// Report drift that needs no state change.
    Report {
        /// What disagreed.
        drift: Drift,
    },
    /// Unmount a guest mount the journal does not know, on the device of an attachment the
    /// journal holds at `slot` (a repair: it would block that device's unplug, or become a
    /// zombie mount when the device goes).
    UnmountStray {
        /// The guest path.
        path: String,
        /// The slot of the device behind it.
        slot: Slot,
        /// Our attachment generation at that slot.
        attach: AttachId,
    },
    /// Detach a disk the journal does not hold (ours from an old generation, or foreign when the
    /// policy says so).
    DetachStray {
        /// The slot.
        slot: Slot,
        /// Its generation id, if ours.
        attach: Option<AttachId>,
        /// Host path, if known.
        path: Option<String>,
    },
    /// Roll back an add whose caller never got a handle.
    RollBackAdd {
        /// The add.
        op: OpId,
    },
    /// Finish the release an operation had started.
    FinishRelease {
        /// The releasing operation.
        op: OpId,
        /// The handle.
        handle: HandleId,
        /// How the operation ends.
        end: ReleaseEnd,
    },
    /// Resume a release that failed before the crash (a new release operation).
    ResumeRelease {
        /// The handle.
        handle: HandleId,
    },
    /// Close an operation with nothing left to do.
    Close {
        /// The operation.
        op: OpId,
    },
    /// Unmount a mount whose last reference is gone.
    Unmount {
        /// The mount.
        mount: MountId,
    },
    /// Unplug and detach an attachment whose last reference is gone.
    Teardown {
        /// The slot.
        slot: Slot,
    },
}

/// The planner's simulation of its own events did not fit the state: a bug (the planner and
/// the fold disagree), reported instead of planning on a state that never was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the recovery plan does not fit the journal's state: {event} was refused: {what}")]
pub struct PlanError {
    /// The simulated event's name.
    pub event: &'static str,
    /// Why the fold refused it.
    pub what: String,
}

/// Applies a simulated event; the first that does not fit is kept to be reported.
fn fit(sim: &mut State, op: OpId, ev: &Event, misfit: &mut Option<PlanError>) {
    if let Err(what) = sim.apply_next(op, ev) {
        misfit.get_or_insert(PlanError {
            event: ev.name(),
            what,
        });
    }
}

/// Plans recovery. Pure: reads `state` and `seen`, returns the actions in execution order.
/// The plan simulates its own events on a copy of the state; one that does not fit is a
/// [`PlanError`].
pub fn plan(
    state: &State,
    seen: &Observation,
    policy: &RecoveryPolicy,
) -> Result<Vec<Action>, PlanError> {
    let mut sim = state.clone();
    let sim_op = sim.next_op;
    let mut misfit = None;
    // A recovery operation holds the simulated events.
    let started = Event::OpStarted {
        kind: OpKind::Recovery,
    };
    fit(&mut sim, sim_op, &started, &mut misfit);
    let mut actions = Vec::new();

    resolve_pending(&mut sim, sim_op, seen, &mut actions, &mut misfit);
    drift(&mut sim, sim_op, seen, policy, &mut actions, &mut misfit);
    if let Some(e) = misfit {
        return Err(e);
    }

    for (id, op) in sim.ops.iter().rev() {
        if *id == sim_op {
            continue;
        }
        let action = match (&op.kind, op.handle, op.releasing) {
            (_, _, Some(handle)) if sim.handles.contains_key(&handle) => Action::FinishRelease {
                op: *id,
                handle,
                end: match op.kind {
                    OpKind::Add { .. } => ReleaseEnd::Abandoned,
                    _ => ReleaseEnd::Finished,
                },
            },
            (OpKind::Add { .. }, None, _) => Action::RollBackAdd { op: *id },
            (OpKind::Release { handle }, _, None) if sim.handles.contains_key(handle) => {
                Action::FinishRelease {
                    op: *id,
                    handle: *handle,
                    end: ReleaseEnd::Finished,
                }
            }
            _ => Action::Close { op: *id },
        };
        actions.push(action);
    }
    actions.extend(
        sim.stalled_releases()
            .into_iter()
            .map(|handle| Action::ResumeRelease { handle }),
    );
    let (mounts, slots) = sim.due_teardowns();
    actions.extend(mounts.into_iter().map(|mount| Action::Unmount { mount }));
    actions.extend(slots.into_iter().map(|slot| Action::Teardown { slot }));
    Ok(actions)
}

fn resolve_pending(
    sim: &mut State,
    op: OpId,
    seen: &Observation,
    out: &mut Vec<Action>,
    misfit: &mut Option<PlanError>,
) {
    // (step, target, whether its intent record was lost): a step in flight, or a planned attach
    // or mount (still reserved at recovery: the add's plan was durable, and its intent and call
    // may have followed without a durable record).
    let mut found = Vec::new();
    for (slot, a) in &sim.attachments {
        match (a.pending, a.phase) {
            (Some(step), _) => found.push((step, Target::Slot(*slot), false)),
            (None, AttachPhase::Reserved) => found.push((Step::Attach, Target::Slot(*slot), true)),
            _ => {}
        }
    }
    for (id, m) in &sim.mounts {
        match (m.pending, m.phase) {
            (Some(step), _) => found.push((step, Target::Mount(*id), false)),
            (None, MountPhase::Reserved) => found.push((Step::Mount, Target::Mount(*id), true)),
            _ => {}
        }
    }
    for (step, target, intent_lost) in found {
        let Some(Settled {
            resolution,
            inspected,
        }) = settle(sim, step, target, seen)
        else {
            continue;
        };
        if intent_lost {
            fit(sim, op, &Event::StepIntent { step, target }, misfit);
        }
        let ev = Event::StepResolved {
            step,
            target,
            resolution,
        };
        fit(sim, op, &ev, misfit);
        out.push(if intent_lost {
            Action::SettlePlanned {
                step,
                target,
                resolution,
                inspected,
            }
        } else {
            Action::Resolve {
                step,
                target,
                resolution,
                inspected,
            }
        });
    }
}

fn drift(
    sim: &mut State,
    op: OpId,
    seen: &Observation,
    policy: &RecoveryPolicy,
    out: &mut Vec<Action>,
    misfit: &mut Option<PlanError>,
) {
    if let Some(host) = &seen.host {
        let lost: Vec<Slot> = sim
            .attachments
            .iter()
            // A teardown due whose records after the last durable point were lost may have
            // happened: it is run again (idempotently), not reported lost.
            .filter(|(slot, a)| a.phase == AttachPhase::Attached && !holds(host, **slot, a.attach))
            .map(|(slot, _)| *slot)
            .collect();
        for slot in lost {
            fit(sim, op, &Event::AttachmentLost { slot }, misfit);
            out.push(Action::LoseAttachment { slot });
        }
        let reserved = sim
            .config
            .as_ref()
            .map(|c| c.reserved.clone())
            .unwrap_or_default();
        for s in host {
            let ours_live = sim
                .attachments
                .get(&s.slot)
                .is_some_and(|a| s.attach.is_none_or(|id| id == a.attach));
            if ours_live || reserved.contains(&s.slot) {
                continue;
            }
            let ours_old = s.attach.is_some_and(|id| id < sim.next_attach);
            if ours_old || policy.detach_unknown {
                out.push(Action::DetachStray {
                    slot: s.slot,
                    attach: s.attach,
                    path: s.path.clone(),
                });
            } else {
                out.push(Action::Report {
                    drift: Drift::UnknownAttachment {
                        slot: s.slot,
                        path: s.path.clone(),
                        detached: false,
                    },
                });
            }
        }
    }
    if let Some(guest) = &seen.guest {
        let lost: Vec<MountId> = sim
            .mounts
            .iter()
            .filter(|(_, m)| m.phase == MountPhase::Mounted && !guest.mounts.contains(&m.path))
            .map(|(id, _)| *id)
            .collect();
        for mount in lost {
            fit(sim, op, &Event::MountLost { mount }, misfit);
            out.push(Action::LoseMount { mount });
        }
        let prefix = sim
            .config
            .as_ref()
            .and_then(|c| c.mount_format.split("%d").next().map(str::to_string))
            .filter(|p| !p.is_empty());
        for path in &guest.mounts {
            if sim.mount_at_path(path).is_some() {
                continue;
            }
            // On the device of an attachment of ours that the host (inspected) still holds:
            // ours to repair, wherever it is mounted.
            let ours = guest.mount_slots.get(path).and_then(|slot| {
                let a = sim.attachments.get(slot)?;
                let held = seen
                    .host
                    .as_ref()
                    .is_some_and(|host| holds(host, *slot, a.attach));
                (a.phase.on_vm() && held).then_some((*slot, a.attach))
            });
            if let Some((slot, attach)) = ours {
                out.push(Action::UnmountStray {
                    path: path.clone(),
                    slot,
                    attach,
                });
            } else if prefix.as_ref().is_some_and(|p| path.starts_with(p)) {
                out.push(Action::Report {
                    drift: Drift::UnknownMount { path: path.clone() },
                });
            }
        }
    }
}
