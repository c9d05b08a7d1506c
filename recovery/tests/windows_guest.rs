//! A Windows guest in the fold, the invariants and the planner: no unplug step anywhere.

mod common;

use common::{fold, release_started, S};
use lunledger_model::{Event, GuestOs, Step, Target};
use lunledger_recovery::{plan, Action, AttachPhase, Observation, RecoveryPolicy, State};

/// Handle 1's release caught after dropping the last reference to its attachment at `S`.
fn with_attachment(guest: GuestOs) -> State {
    fold(&release_started(guest))
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
