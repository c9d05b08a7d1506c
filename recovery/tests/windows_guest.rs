//! A Windows guest in the fold, the invariants and the planner: no unplug step anywhere.

use lunledger_model::{
    DiskKind, DiskSpec, Event, GuestOs, ManagerConfig, OpKind, Slot, Step, Target,
};
use lunledger_recovery::{plan, Action, AttachPhase, Observation, RecoveryPolicy, State};

const S: Slot = Slot::new(0, 0);

fn with_attachment(guest: GuestOs) -> State {
    let config = match guest {
        GuestOs::Linux => ManagerConfig::lcow_default(),
        GuestOs::Windows => ManagerConfig::wcow_default(),
    };
    let t = Target::Slot(S);
    let disk = DiskSpec {
        path: "a".into(),
        read_only: false,
        kind: DiskKind::VirtualDisk,
        evd_type: None,
    };
    let steps = [
        (
            1,
            Event::OpStarted {
                kind: OpKind::Configure,
            },
        ),
        (1, Event::ConfigSet { config }),
        (1, Event::OpFinished),
        (
            2,
            Event::OpStarted {
                kind: OpKind::Add {
                    disk: disk.clone(),
                    mount: None,
                    requested_path: None,
                    owner: None,
                    vm_id: None,
                },
            },
        ),
        (
            2,
            Event::AttachReserved {
                slot: S,
                attach: 1,
                disk,
            },
        ),
        (
            2,
            Event::StepIntent {
                step: Step::Attach,
                target: t,
            },
        ),
        (
            2,
            Event::StepDone {
                step: Step::Attach,
                target: t,
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
        (
            3,
            Event::OpStarted {
                kind: OpKind::Release { handle: 1 },
            },
        ),
        (3, Event::ReleaseStarted { handle: 1 }),
        (3, Event::AttachRefDropped { slot: S }),
    ];
    let mut s = State::new();
    for (op, ev) in &steps {
        s.apply_next(*op, ev)
            .unwrap_or_else(|e| panic!("{ev:?}: {e}"));
    }
    s
}

#[test]
fn the_last_reference_goes_straight_to_the_detach_on_windows() {
    assert_eq!(
        with_attachment(GuestOs::Linux).attachments[&S].phase,
        AttachPhase::NeedsUnplug
    );
    let mut s = with_attachment(GuestOs::Windows);
    assert_eq!(s.attachments[&S].phase, AttachPhase::NeedsDetach);
    assert!(s.violations().is_empty(), "{:?}", s.violations());
    // An unplug intent does not fit a Windows teardown: rejected, nothing changed.
    let before = s.clone();
    let unplug = Event::StepIntent {
        step: Step::Unplug,
        target: Target::Slot(S),
    };
    assert!(s.apply_next(3, &unplug).is_err());
    assert_eq!(s, before);
    // The detach finishes it.
    for ev in [
        Event::StepIntent {
            step: Step::Detach,
            target: Target::Slot(S),
        },
        Event::StepDone {
            step: Step::Detach,
            target: Target::Slot(S),
        },
        Event::HandleReleased { handle: 1 },
        Event::OpFinished,
    ] {
        s.apply_next(3, &ev)
            .unwrap_or_else(|e| panic!("{ev:?}: {e}"));
    }
    assert!(s.is_empty(), "{s:?}");
}

#[test]
fn an_attachment_waiting_for_an_unplug_on_windows_is_a_violation() {
    let mut s = with_attachment(GuestOs::Windows);
    if let Some(a) = s.attachments.get_mut(&S) {
        a.phase = AttachPhase::NeedsUnplug;
    }
    let v = s.violations();
    assert!(v.iter().any(|m| m.contains("unplug")), "{v:?}");
}

#[test]
fn the_planner_tears_down_a_windows_attachment_with_a_detach() {
    let s = with_attachment(GuestOs::Windows);
    let actions = plan(&s, &Observation::default(), &RecoveryPolicy::default()).unwrap();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Teardown { slot } if *slot == S)),
        "{actions:?}"
    );
    // Its state says which step that teardown is: the detach.
    assert_eq!(s.attachments[&S].phase, AttachPhase::NeedsDetach);
}
