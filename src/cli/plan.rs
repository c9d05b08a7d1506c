//! The recovery plan as people read it (`lunledger recover --dry-run`, the demo): the plan
//! opening the journal would execute, computed by the same pure planner the manager uses,
//! against what a backend reports (or against nothing: a journal-only plan).

use super::fail::CliError;
use super::snapshot::Snapshot;
use super::style;
use crate::backend::sim::{persist, SimVm};
use crate::backend::{GuestView, HostView};
use crate::model::{Resolution, Target};
use crate::recovery::{plan, Action, Observation, RecoveryPolicy, ReleaseEnd, State};
use serde::Serialize;
use std::path::Path;

#[derive(Serialize)]
struct Line<'a> {
    index: usize,
    action: &'static str,
    description: String,
    raw: &'a Action,
}

/// The plan for the journal copy `snap`, observing the simulated VM in `sim` (if any), as text
/// (a table, or JSON lines), and how many actions it has.
pub fn plan_text(
    snap: &Snapshot,
    sim: Option<&Path>,
    policy: &RecoveryPolicy,
    json: bool,
) -> Result<(String, usize), CliError> {
    let state = crate::load_state(snap.journal())
        .map_err(|e| CliError::Io(format!("rebuilding the state: {e}")))?
        .state;
    let (seen, source) = match sim {
        Some(path) => (
            observe_sim(path)?,
            format!("simulated VM {}", path.display()),
        ),
        None => (
            Observation::default(),
            "no backend (journal-only plan: lost outcomes are assumed, drift is not checked)"
                .to_string(),
        ),
    };
    let actions = plan(&state, &seen, policy).map_err(|e| CliError::Io(e.to_string()))?;
    let mut text = String::new();
    if json {
        for (i, act) in actions.iter().enumerate() {
            let line = Line {
                index: i + 1,
                action: kind(act),
                description: describe(act, &state),
                raw: act,
            };
            text.push_str(&serde_json::to_string(&line).unwrap_or_default());
            text.push('\n');
        }
    } else {
        text.push_str(&format!(
            "{} as of seq {}, observing {source}:\n",
            style::bold("Recovery plan"),
            state.last_seq
        ));
        if actions.is_empty() {
            text.push_str(&style::green(
                "  nothing to do: opening would not change anything\n",
            ));
        }
        for (i, act) in actions.iter().enumerate() {
            text.push_str(&format!(
                "  {:>2}. {:<16} {}\n",
                i + 1,
                kind(act),
                style::printable(&describe(act, &state))
            ));
        }
    }
    Ok((text, actions.len()))
}

/// Reads a persistent simulated VM's state file without writing it.
fn observe_sim(path: &Path) -> Result<Observation, CliError> {
    let st = persist::load(path)
        .map_err(|e| CliError::Io(e.to_string()))?
        .ok_or_else(|| {
            CliError::Io(format!(
                "simulated VM state file {} does not exist",
                path.display()
            ))
        })?;
    let vm = SimVm::with_state(st);
    Ok(observation(vm.host_view(), vm.guest_view()))
}

/// What the VM reports, in the planner's terms (the manager's recovery does the same).
pub fn observation(host: HostView, guest: GuestView) -> Observation {
    crate::observe(Some(host), Some(guest))
}

fn kind(a: &Action) -> &'static str {
    match a {
        Action::Resolve { .. } => "resolve",
        Action::SettlePlanned { .. } => "settle-planned",
        Action::LoseAttachment { .. } => "lose-attachment",
        Action::LoseMount { .. } => "lose-mount",
        Action::Report { .. } => "report-drift",
        Action::UnmountStray { .. } => "unmount-stray",
        Action::DetachStray { .. } => "detach-stray",
        Action::RollBackAdd { .. } => "roll-back-add",
        Action::FinishRelease { .. } => "finish-release",
        Action::ResumeRelease { .. } => "resume-release",
        Action::Close { .. } => "close-op",
        Action::Unmount { .. } => "unmount",
        Action::Teardown { .. } => "teardown",
    }
}

fn target(t: &Target, st: &State) -> String {
    match t {
        Target::Slot(s) => match st.attachments.get(s) {
            Some(a) => format!("slot {s} ({})", a.disk.path),
            None => format!("slot {s}"),
        },
        Target::Mount(m) => match st.mounts.get(m) {
            Some(mm) => format!("mount {m} ({} on slot {})", mm.path, mm.slot),
            None => format!("mount {m}"),
        },
    }
}

/// An action in words, with the disk and paths it touches.
fn describe(a: &Action, st: &State) -> String {
    let op = |id: &u64| match st.ops.get(id) {
        Some(o) => match &o.kind {
            crate::model::OpKind::Add { disk, owner, .. } => format!(
                "op {id} (add {}{})",
                disk.path,
                owner
                    .as_deref()
                    .map(|o| format!(" for {o}"))
                    .unwrap_or_default()
            ),
            k => format!("op {id} ({})", k.name()),
        },
        None => format!("op {id}"),
    };
    match a {
        Action::Resolve {
            step,
            target: t,
            resolution,
            inspected,
        }
        | Action::SettlePlanned {
            step,
            target: t,
            resolution,
            inspected,
        } => format!(
            "{step} on {}: {} ({})",
            target(t, st),
            match resolution {
                Resolution::Happened => "took effect",
                Resolution::DidNotHappen => "did not take effect",
            },
            if *inspected {
                "the VM says so"
            } else {
                "assumed; the teardown that follows is idempotent"
            }
        ),
        Action::LoseAttachment { slot } => {
            format!(
                "{}: the VM no longer has it; mark it lost",
                target(&Target::Slot(*slot), st)
            )
        }
        Action::LoseMount { mount } => {
            format!(
                "{}: the guest no longer has it; mark it lost",
                target(&Target::Mount(*mount), st)
            )
        }
        Action::Report { drift } => crate::audit::describe_drift(drift),
        Action::UnmountStray { path, slot, .. } => {
            format!("unmount {path}: the journal does not know it, and it is on our disk at {slot}")
        }
        Action::DetachStray { slot, attach, path } => format!(
            "detach the disk at {slot}{}{} which the journal does not hold",
            path.as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default(),
            attach
                .map(|g| format!(", our generation {g}"))
                .unwrap_or_default()
        ),
        Action::RollBackAdd { op: id } => {
            format!("roll back {}: its caller never got a handle", op(id))
        }
        Action::FinishRelease {
            op: id,
            handle,
            end,
        } => format!(
            "finish releasing handle {handle} for {}, then mark it {}",
            op(id),
            match end {
                ReleaseEnd::Finished => "finished",
                ReleaseEnd::Abandoned => "abandoned",
            }
        ),
        Action::ResumeRelease { handle } => {
            format!("resume the failed release of handle {handle}")
        }
        Action::Close { op: id } => format!("close {}: nothing left to do", op(id)),
        Action::Unmount { mount } => format!("unmount {}", target(&Target::Mount(*mount), st)),
        Action::Teardown { slot } => {
            format!("unplug and detach {}", target(&Target::Slot(*slot), st))
        }
    }
}
