//! The fold's invariants: what must hold after every event of any journal. Checked by tests after
//! every workload and by `lunledger verify`.

use crate::state::{AttachPhase, MountPhase, State};
use lunledger_model::{HandleId, MountId, Slot, Step, Target};
use std::collections::{BTreeMap, BTreeSet};

impl State {
    /// Every invariant violation, described (empty when the state is consistent).
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        let mut attach_refs: BTreeMap<_, u32> = BTreeMap::new();
        let mut mount_refs: BTreeMap<_, u32> = BTreeMap::new();
        for (id, o) in &self.ops {
            if let Some(s) = o.holds_attach {
                *attach_refs.entry(s).or_default() += 1;
            }
            if let Some(m) = o.holds_mount {
                *mount_refs.entry(m).or_default() += 1;
                if o.holds_attach.is_none() {
                    v.push(format!(
                        "operation {id} holds mount {m} without its attachment"
                    ));
                }
            }
        }
        for (id, h) in &self.handles {
            if h.holds_attach {
                *attach_refs.entry(h.slot).or_default() += 1;
            }
            if h.holds_mount {
                match h.mount {
                    Some(m) => *mount_refs.entry(m).or_default() += 1,
                    None => v.push(format!("handle {id} holds a mount it does not name")),
                }
            }
            let intact = h.holds_attach && h.holds_mount == h.mount.is_some();
            if !h.releasing && !intact {
                v.push(format!(
                    "handle {id} lost a reference without being released"
                ));
            }
        }
        if let Some(cfg) = &self.config {
            for (slot, a) in &self.attachments {
                if !cfg.contains(*slot) {
                    v.push(format!("attachment at {slot} is out of range"));
                }
                // hcsshim's Windows guest has no unplug: its teardown never waits for one.
                let unplug = a.phase == AttachPhase::NeedsUnplug || a.pending == Some(Step::Unplug);
                if !cfg.guest.unplugs() && unplug {
                    v.push(format!(
                        "attachment {slot} waits for a guest unplug on a {} guest",
                        cfg.guest
                    ));
                }
                if cfg.reserved.contains(slot) {
                    v.push(format!("attachment at reserved slot {slot}"));
                }
            }
        } else if !self.attachments.is_empty() {
            v.push("attachments without a configuration".into());
        }
        for (slot, a) in &self.attachments {
            let held = attach_refs.get(slot).copied().unwrap_or(0);
            if a.refs != held {
                v.push(format!(
                    "attachment {slot} counts {} references, {held} are held",
                    a.refs
                ));
            }
            let torn = a.phase.teardown_due();
            if torn && a.refs != 0 {
                v.push(format!("attachment {slot} is torn down while referenced"));
            }
            if a.refs == 0 && matches!(a.phase, AttachPhase::Reserved | AttachPhase::Attached) {
                v.push(format!(
                    "attachment {slot} is {:?} with no reference",
                    a.phase
                ));
            }
        }
        let mut paths = BTreeMap::new();
        for (id, m) in &self.mounts {
            let held = mount_refs.get(id).copied().unwrap_or(0);
            if m.refs != held {
                v.push(format!(
                    "mount {id} counts {} references, {held} are held",
                    m.refs
                ));
            }
            if m.refs == 0 && matches!(m.phase, MountPhase::Reserved | MountPhase::Mounted) {
                v.push(format!("mount {id} is {:?} with no reference", m.phase));
            }
            match self.attachments.get(&m.slot) {
                Some(a) if a.attach == m.attach => {
                    // A live mount needs a live attachment; a mount whose own teardown is due (or
                    // that failed or is lost) may sit on an attachment due for teardown: the
                    // unmount runs first.
                    let settled = matches!(
                        m.phase,
                        MountPhase::Lost | MountPhase::NeedsUnmount | MountPhase::Failed
                    );
                    if !settled && !a.phase.shareable() && a.phase != AttachPhase::Failed {
                        v.push(format!("mount {id} outlives its attachment's teardown"));
                    }
                }
                _ => v.push(format!("mount {id} has no attachment at {}", m.slot)),
            }
            if let Some(other) = paths.insert(m.path.as_str(), id) {
                v.push(format!(
                    "mounts {other} and {id} share guest path {}",
                    m.path
                ));
            }
        }
        for (slot, _) in attach_refs
            .iter()
            .filter(|(s, _)| !self.attachments.contains_key(s))
        {
            v.push(format!("a reference is held on empty slot {slot}"));
        }
        for (m, _) in mount_refs
            .iter()
            .filter(|(m, _)| !self.mounts.contains_key(m))
        {
            v.push(format!("a reference is held on unknown mount {m}"));
        }
        v
    }

    /// Whether nothing is attached, mounted, held or in flight.
    pub fn is_empty(&self) -> bool {
        self.attachments.is_empty()
            && self.mounts.is_empty()
            && self.handles.is_empty()
            && self.ops.is_empty()
    }
}

impl State {
    /// What the VM must hold according to the journal: the slots of every attachment that is
    /// attached or still due for teardown, and the guest paths of every mount that is mounted or
    /// still due for unmount. Tests compare a backend's `inspect` against it.
    pub fn needed_on_vm(&self) -> (BTreeSet<Slot>, BTreeSet<String>) {
        let slots = self
            .attachments
            .iter()
            .filter(|(_, a)| a.phase.on_vm())
            .map(|(s, _)| *s)
            .collect();
        let paths = self
            .mounts
            .values()
            .filter(|m| m.phase.on_vm())
            .map(|m| m.path.clone())
            .collect();
        (slots, paths)
    }
}

impl State {
    /// Teardowns that are due: mounts to unmount and attachments to unplug or detach, in id and
    /// slot order. Releases, recovery and `retry_teardowns` work through these.
    pub fn due_teardowns(&self) -> (Vec<MountId>, Vec<Slot>) {
        let mounts = self
            .mounts
            .iter()
            .filter(|(_, m)| m.phase.teardown_due())
            .map(|(id, _)| *id)
            .collect();
        let slots = self
            .attachments
            .iter()
            .filter(|(_, a)| a.phase.teardown_due())
            .map(|(s, _)| *s)
            .collect();
        (mounts, slots)
    }

    /// Handles whose release started and stopped (a teardown failed) with no operation still
    /// releasing them: a retry resumes their release. Recovery and `retry_teardowns` both ask
    /// this.
    pub fn stalled_releases(&self) -> Vec<HandleId> {
        let in_flight: BTreeSet<HandleId> = self.ops.values().filter_map(|o| o.releasing).collect();
        self.handles
            .iter()
            .filter(|(id, h)| h.releasing && !in_flight.contains(id))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every teardown step still due, described: what a release, recovery or
    /// `retry_teardowns` would do next, in the order [`State::due_teardowns`] gives.
    pub fn pending_teardowns(&self) -> Vec<PendingTeardown> {
        let (mounts, slots) = self.due_teardowns();
        let mounts = mounts.into_iter().filter_map(|id| {
            let m = self.mounts.get(&id)?;
            Some(PendingTeardown {
                step: Step::Unmount,
                target: Target::Mount(id),
                path: m.path.clone(),
                phase: format!("{:?}", m.phase),
                last_error: m.last_error.clone(),
            })
        });
        let slots = slots.into_iter().filter_map(|slot| {
            let a = self.attachments.get(&slot)?;
            Some(PendingTeardown {
                step: if a.phase == AttachPhase::NeedsUnplug {
                    Step::Unplug
                } else {
                    Step::Detach
                },
                target: Target::Slot(slot),
                path: a.disk.path.clone(),
                phase: format!("{:?}", a.phase),
                last_error: a.last_error.clone(),
            })
        });
        mounts.chain(slots).collect()
    }
}

/// A teardown step still due (see [`State::pending_teardowns`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingTeardown {
    /// The step: unmount, unplug or detach.
    pub step: Step,
    /// Its target: the mount or the slot.
    pub target: Target,
    /// The mount's guest path, or the attachment's host path.
    pub path: String,
    /// The phase it is in (`NeedsUnmount`, `NeedsUnplug`, ...).
    pub phase: String,
    /// The last attempt's error (`None`: not tried yet).
    pub last_error: Option<String>,
}
