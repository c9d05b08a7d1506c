//! Settling a step whose outcome is unknown: one decision, used by the live manager (a call
//! that ended in an uncertain error: a timeout, a lost connection) and by the recovery planner
//! (an intent whose outcome record was lost, or a planned attach or mount whose own intent
//! record was lost with the records after the last durable point).
//!
//! The VM's word wins where it was asked. Where it could not be asked, an attach or mount is
//! assumed to have happened (the rollback that follows tears it down, idempotently, instead of
//! leaking it) and a teardown step is assumed not to have happened (it is simply run again,
//! idempotently).

use crate::plan::{Observation, SeenAttachment};
use crate::state::State;
use lunledger_model::{AttachId, Resolution, Slot, Step, Target};

/// How a step with an unknown outcome is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    /// What is taken to have happened.
    pub resolution: Resolution,
    /// Whether the VM said so (`false`: assumed; what follows is idempotent).
    pub inspected: bool,
}

/// Settles `step` on `target` from what the VM reported (`seen`; a side that was not inspected
/// is `None`). `None` when `state` does not hold the target.
pub fn settle(state: &State, step: Step, target: Target, seen: &Observation) -> Option<Settled> {
    // (seen by the VM?) -> (happened, inspected), per step.
    let (present, creates) = match target {
        Target::Slot(slot) => {
            let a = state.attachments.get(&slot)?;
            let present = if step == Step::Unplug {
                seen.guest.as_ref().map(|g| g.devices.contains(&slot))
            } else {
                seen.host.as_ref().map(|h| holds(h, slot, a.attach))
            };
            (present, step == Step::Attach)
        }
        Target::Mount(id) => {
            let m = state.mounts.get(&id)?;
            let present = seen.guest.as_ref().map(|g| g.mounts.contains(&m.path));
            (present, step == Step::Mount)
        }
    };
    let (happened, inspected) = match present {
        // An attach or mount happened if the VM has it; a teardown step if it no longer does.
        Some(p) => (p == creates, true),
        None => (creates, false),
    };
    Some(Settled {
        resolution: if happened {
            Resolution::Happened
        } else {
            Resolution::DidNotHappen
        },
        inspected,
    })
}

/// Whether the host holds our attachment generation `attach` at `slot` (a backend that cannot
/// tell generations apart matches any disk at the slot).
pub(crate) fn holds(host: &[SeenAttachment], slot: Slot, attach: AttachId) -> bool {
    host.iter()
        .any(|s| s.slot == slot && s.attach.is_none_or(|a| a == attach))
}
