//! What the recovery tests share: a disk, a configured state, and the journal prefixes of one
//! add (op 2, of the disk `a` at [`S`]) and of its release (op 3), after op 1 configured.
// Each test binary uses only some of these.
#![allow(dead_code)]

use lunledger_model::{
    AttachId, DiskKind, DiskSpec, Event, GuestOs, ManagerConfig, MountSpec, OpId, OpKind, Slot,
    Step, Target,
};
use lunledger_recovery::State;

/// The slot the fixtures' add takes.
pub const S: Slot = Slot::new(0, 0);
/// The attach id of the fixtures' attachment at [`S`].
pub const ATTACH: AttachId = 1;

/// A read-write virtual disk at host path `path`.
pub fn disk(path: &str) -> DiskSpec {
    DiskSpec {
        path: path.into(),
        read_only: false,
        kind: DiskKind::VirtualDisk,
        evd_type: None,
    }
}

/// The add of `disk(path)` with `mount`, no requested path, owner or VM grant.
pub fn add_kind(path: &str, mount: Option<MountSpec>) -> OpKind {
    OpKind::Add {
        disk: disk(path),
        mount,
        requested_path: None,
        owner: None,
        vm_id: None,
    }
}

/// hcsshim's default configuration for `guest` (an LCOW or a WCOW utility VM).
pub fn config_for(guest: GuestOs) -> ManagerConfig {
    match guest {
        GuestOs::Linux => ManagerConfig::lcow_default(),
        GuestOs::Windows => ManagerConfig::wcow_default(),
    }
}

/// Op 1 sets `config`.
pub fn configure(config: ManagerConfig) -> Vec<(OpId, Event)> {
    vec![
        (
            1,
            Event::OpStarted {
                kind: OpKind::Configure,
            },
        ),
        (1, Event::ConfigSet { config }),
        (1, Event::OpFinished),
    ]
}

/// The state `events` leave, applied in order from an empty one; panics at an event that does
/// not fit (a broken fixture).
pub fn fold(events: &[(OpId, Event)]) -> State {
    let mut s = State::new();
    for (op, ev) in events {
        if let Err(e) = s.apply_next(*op, ev) {
            panic!("fixture event {ev:?} does not fit: {e}");
        }
    }
    s
}

/// A state configured for a Linux guest, holding nothing.
pub fn configured() -> State {
    fold(&configure(config_for(GuestOs::Linux)))
}

/// Op 2: an add of `disk("a")` that reserved [`S`] (as [`ATTACH`]), on a `guest` VM.
pub fn add_reserved(guest: GuestOs) -> Vec<(OpId, Event)> {
    let mut ev = configure(config_for(guest));
    ev.extend([
        (
            2,
            Event::OpStarted {
                kind: add_kind("a", None),
            },
        ),
        (
            2,
            Event::AttachReserved {
                slot: S,
                attach: ATTACH,
                disk: disk("a"),
            },
        ),
    ]);
    ev
}

/// Op 2 up to its attach intent.
pub fn add_until_attach_intent(guest: GuestOs) -> Vec<(OpId, Event)> {
    let mut ev = add_reserved(guest);
    ev.push((
        2,
        Event::StepIntent {
            step: Step::Attach,
            target: Target::Slot(S),
        },
    ));
    ev
}

/// Op 2 finished: handle 1 holds `disk("a")` at [`S`].
pub fn attached_with_handle(guest: GuestOs) -> Vec<(OpId, Event)> {
    let mut ev = add_until_attach_intent(guest);
    ev.extend([
        (
            2,
            Event::StepDone {
                step: Step::Attach,
                target: Target::Slot(S),
            },
        ),
        (
            2,
            Event::HandleIssued {
                handle: 1,
                slot: S,
                mount: None,
                owner: None,
            },
        ),
        (2, Event::OpFinished),
    ]);
    ev
}

/// Op 3 released handle 1 up to its dropped reference (no teardown step journaled yet).
pub fn release_started(guest: GuestOs) -> Vec<(OpId, Event)> {
    let mut ev = attached_with_handle(guest);
    ev.extend([
        (
            3,
            Event::OpStarted {
                kind: OpKind::Release { handle: 1 },
            },
        ),
        (3, Event::ReleaseStarted { handle: 1 }),
        (3, Event::AttachRefDropped { slot: S }),
    ]);
    ev
}
