//! Settling steps whose records were lost after the last durable point: a planned attach or
//! mount (reserved, its own intent lost) is settled by what the VM shows; a teardown due that
//! the VM no longer holds is run again, not reported lost; the live manager's rule and the
//! planner's are one (`settle`).

mod common;

use common::{add_kind, configured, disk, S};
use lunledger_model::{Event, MountSpec, Resolution, Step, Target};
use lunledger_recovery::{
    plan, settle, Action, Observation, RecoveryPolicy, SeenAttachment, SeenGuest, Settled, State,
};

/// An add whose plan (attachment at `S`, mount 1 at `/m0`) is all that survived.
fn planned() -> State {
    let mut s = configured();
    let add = add_kind("a", Some(MountSpec::default()));
    s.apply_next(2, &Event::OpStarted { kind: add }).unwrap();
    s.apply_next(
        2,
        &Event::AttachReserved {
            slot: S,
            attach: 1,
            disk: disk("a"),
        },
    )
    .unwrap();
    s.apply_next(
        2,
        &Event::MountReserved {
            mount: 1,
            slot: S,
            index: Some(0),
            path: "/m0".into(),
            spec: MountSpec::default(),
        },
    )
    .unwrap();
    s
}

fn seen(attached: bool, mounted: bool) -> Observation {
    Observation {
        host: Some(if attached {
            vec![SeenAttachment {
                slot: S,
                attach: Some(1),
                path: Some("a".into()),
            }]
        } else {
            vec![]
        }),
        guest: Some(SeenGuest {
            devices: if attached { vec![S] } else { vec![] },
            mounts: if mounted { vec!["/m0".into()] } else { vec![] },
            mount_slots: Default::default(),
        }),
    }
}

fn settled(p: &[Action]) -> Vec<(Step, Resolution, bool)> {
    p.iter()
        .filter_map(|a| match a {
            Action::SettlePlanned {
                step,
                resolution,
                inspected,
                ..
            } => Some((*step, *resolution, *inspected)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_planned_attach_and_mount_whose_intents_were_lost_are_settled_by_inspect() {
    let s = planned();
    let policy = RecoveryPolicy::default();
    // Both calls happened before the crash, their records lost.
    let p = plan(&s, &seen(true, true), &policy).unwrap();
    assert_eq!(
        settled(&p),
        [
            (Step::Attach, Resolution::Happened, true),
            (Step::Mount, Resolution::Happened, true)
        ]
    );
    assert!(p.contains(&Action::RollBackAdd { op: 2 }), "{p:?}");
    // Nothing is reported lost or stray: the VM holds what the plan named.
    assert!(
        !p.iter().any(|a| matches!(
            a,
            Action::LoseAttachment { .. }
                | Action::LoseMount { .. }
                | Action::DetachStray { .. }
                | Action::UnmountStray { .. }
                | Action::Report { .. }
        )),
        "{p:?}"
    );
    // Only the attach happened.
    let p = plan(&s, &seen(true, false), &policy).unwrap();
    assert_eq!(
        settled(&p),
        [
            (Step::Attach, Resolution::Happened, true),
            (Step::Mount, Resolution::DidNotHappen, true)
        ]
    );
    // Neither.
    let p = plan(&s, &seen(false, false), &policy).unwrap();
    assert_eq!(
        settled(&p),
        [
            (Step::Attach, Resolution::DidNotHappen, true),
            (Step::Mount, Resolution::DidNotHappen, true)
        ]
    );
    // The VM cannot be asked: assume both happened (the rollback's teardown is idempotent).
    let p = plan(&s, &Observation::default(), &policy).unwrap();
    assert_eq!(
        settled(&p),
        [
            (Step::Attach, Resolution::Happened, false),
            (Step::Mount, Resolution::Happened, false)
        ]
    );
}

#[test]
fn a_teardown_due_the_vm_no_longer_holds_is_run_again_not_reported_lost() {
    let mut s = planned();
    for ev in [
        Event::StepIntent {
            step: Step::Attach,
            target: Target::Slot(S),
        },
        Event::StepDone {
            step: Step::Attach,
            target: Target::Slot(S),
        },
        Event::StepIntent {
            step: Step::Mount,
            target: Target::Mount(1),
        },
        Event::StepDone {
            step: Step::Mount,
            target: Target::Mount(1),
        },
        Event::MountRefDropped { mount: 1 },
        Event::AttachRefDropped { slot: S },
        Event::OpRolledBack {
            reason: "test".into(),
        },
    ] {
        s.apply_next(2, &ev).unwrap();
    }
    // The durable records end here; the unmount, unplug and detach ran, their records lost.
    let p = plan(&s, &seen(false, false), &RecoveryPolicy::default()).unwrap();
    assert_eq!(
        p,
        [Action::Unmount { mount: 1 }, Action::Teardown { slot: S }],
        "teardowns are idempotent: run again, nothing lost"
    );
}

#[test]
fn the_live_rule_and_the_planners_are_one() {
    let mut s = planned();
    s.apply_next(
        2,
        &Event::StepIntent {
            step: Step::Attach,
            target: Target::Slot(S),
        },
    )
    .unwrap();
    let t = Target::Slot(S);
    let got = |o: &Observation| settle(&s, Step::Attach, t, o);
    assert_eq!(
        got(&seen(true, false)),
        Some(Settled {
            resolution: Resolution::Happened,
            inspected: true
        })
    );
    // The live manager inspects one side only (the host for an attach).
    let host_only = Observation {
        host: Some(vec![]),
        guest: None,
    };
    assert_eq!(
        got(&host_only),
        Some(Settled {
            resolution: Resolution::DidNotHappen,
            inspected: true
        })
    );
    let p = plan(&s, &host_only, &RecoveryPolicy::default()).unwrap();
    assert_eq!(
        p.first(),
        Some(&Action::Resolve {
            step: Step::Attach,
            target: t,
            resolution: Resolution::DidNotHappen,
            inspected: true
        })
    );
    // An unplug is judged by the guest, a detach by the host; unknown: run it again.
    assert_eq!(
        settle(&s, Step::Unplug, t, &Observation::default()),
        Some(Settled {
            resolution: Resolution::DidNotHappen,
            inspected: false
        })
    );
    assert_eq!(
        settle(&s, Step::Mount, Target::Mount(9), &seen(true, true)),
        None
    );
}
