//! The fold: events that fit change the state; events that do not are rejected and change
//! nothing; the planner is pure.

mod common;

use common::{add_kind, add_reserved, add_until_attach_intent, configured, disk, fold, S};
use lunledger_model::{Event, GuestOs, MountSpec, OpKind, Resolution, Slot, Step, Target};
use lunledger_recovery::{plan, Action, AttachPhase, Observation, RecoveryPolicy};

#[test]
fn events_that_do_not_fit_are_rejected_and_change_nothing() {
    let mut s = configured();
    s.apply_next(
        2,
        &Event::OpStarted {
            kind: add_kind("a", None),
        },
    )
    .unwrap();
    let before = s.clone();
    let bad = [
        Event::AttachRefTaken { slot: S }, // nothing there
        Event::StepIntent {
            step: Step::Attach,
            target: Target::Slot(S),
        }, // not reserved
        Event::AttachReserved {
            slot: Slot::new(9, 0),
            attach: 1,
            disk: disk("a"),
        }, // out of range
        Event::HandleIssued {
            handle: 1,
            slot: S,
            mount: None,
            owner: None,
        },
        Event::OpStarted {
            kind: OpKind::Recovery,
        }, // op 2 already started
    ];
    for ev in bad {
        assert!(s.apply_next(2, &ev).is_err(), "{ev:?} was accepted");
        assert_eq!(s, before, "{ev:?} changed the state");
    }
}

#[test]
fn a_full_add_and_release_returns_to_empty() {
    let mut s = configured();
    let t = Target::Slot(S);
    let steps = [
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
                attach: 1,
                disk: disk("a"),
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
                owner: Some("c".into()),
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
        (
            3,
            Event::StepIntent {
                step: Step::Unplug,
                target: t,
            },
        ),
        (
            3,
            Event::StepDone {
                step: Step::Unplug,
                target: t,
            },
        ),
        (
            3,
            Event::StepIntent {
                step: Step::Detach,
                target: t,
            },
        ),
        (
            3,
            Event::StepDone {
                step: Step::Detach,
                target: t,
            },
        ),
        (3, Event::HandleReleased { handle: 1 }),
        (3, Event::OpFinished),
    ];
    for (op, ev) in &steps {
        s.apply_next(*op, ev)
            .unwrap_or_else(|e| panic!("{ev:?}: {e}"));
        assert!(
            s.violations().is_empty(),
            "after {ev:?}: {:?}",
            s.violations()
        );
    }
    assert!(s.is_empty());
    assert_eq!(s.free_slot(), Some(S));
}

#[test]
fn an_add_caught_mid_attach_is_resolved_then_rolled_back() {
    let s = fold(&add_until_attach_intent(GuestOs::Linux));
    assert_eq!(s.attachments[&S].phase, AttachPhase::Attaching);
    let blind = plan(&s, &Observation::default(), &RecoveryPolicy::default()).unwrap();
    assert_eq!(
        blind.first(),
        Some(&Action::Resolve {
            step: Step::Attach,
            target: Target::Slot(S),
            resolution: Resolution::Happened,
            inspected: false
        }),
        "without inspect, assume attached (the rollback's detach is idempotent)"
    );
    assert!(blind.contains(&Action::RollBackAdd { op: 2 }));
    let seen = Observation {
        host: Some(vec![]),
        guest: None,
    };
    let p = plan(&s, &seen, &RecoveryPolicy::default()).unwrap();
    assert!(matches!(
        p.first(),
        Some(Action::Resolve {
            resolution: Resolution::DidNotHappen,
            inspected: true,
            ..
        })
    ));
    assert_eq!(
        plan(&s, &seen, &RecoveryPolicy::default()).unwrap(),
        p,
        "the planner is pure"
    );
}

#[test]
fn mount_keys_compare_sorted_options() {
    let mut s = fold(&add_reserved(GuestOs::Linux));
    let spec = MountSpec {
        options: vec!["b".into(), "a".into()],
        ..Default::default()
    };
    s.apply_next(
        2,
        &Event::MountReserved {
            mount: 1,
            slot: S,
            index: Some(0),
            path: "/run/mounts/scsi/m0".into(),
            spec,
        },
    )
    .unwrap();
    let other = MountSpec {
        options: vec!["a".into(), "b".into()],
        ..Default::default()
    };
    assert_eq!(s.find_mount(S, &other), Some(1));
    assert_eq!(s.next_mount_path(), Some((1, "/run/mounts/scsi/m1".into())));
}

#[test]
fn next_mount_path_skips_held_indexes_and_paths_and_stops_on_a_bad_format() {
    let mut s = configured();
    // Index 0 at its own path; index 1 at a requested path that is index 2's generated path.
    let mounts = [
        (2, Slot::new(0, 1), 0, "/run/mounts/scsi/m0"),
        (3, Slot::new(0, 2), 1, "/run/mounts/scsi/m2"),
    ];
    for (op, slot, index, path) in mounts {
        let d = disk(path);
        s.apply_next(
            op,
            &Event::OpStarted {
                kind: add_kind(path, None),
            },
        )
        .unwrap();
        s.apply_next(
            op,
            &Event::AttachReserved {
                slot,
                attach: op,
                disk: d,
            },
        )
        .unwrap();
        s.apply_next(
            op,
            &Event::MountReserved {
                mount: op,
                slot,
                index: Some(index),
                path: path.into(),
                spec: MountSpec::default(),
            },
        )
        .unwrap();
    }
    assert_eq!(s.lowest_free_index(), 2);
    assert_eq!(s.next_mount_path(), Some((3, "/run/mounts/scsi/m3".into())));
    // A format without exactly one `%d` names no path: answered at once, not after trying every
    // index.
    if let Some(cfg) = s.config.as_mut() {
        cfg.mount_format = "/run/mounts/fixed".into();
    }
    let t = std::time::Instant::now();
    assert_eq!(s.next_mount_path(), None);
    assert!(t.elapsed() < std::time::Duration::from_secs(1));
}

/// Issue #15 item 4: `State::drift` is the drift found by the last recovery, each finding once;
/// the journal keeps every `DriftFound` of every recovery.
#[test]
fn drift_is_the_last_recoverys_deduplicated() {
    use lunledger_model::Drift;
    let mut s = configured();
    let stray = |n: u32| Drift::UnknownMount {
        path: format!("/run/gcs/c/{n}"),
    };
    let mut op = 2;
    for round in 0..3u32 {
        s.apply_next(
            op,
            &Event::OpStarted {
                kind: OpKind::Recovery,
            },
        )
        .unwrap();
        // Each recovery finds the same stray mount (reported twice, as a retried plan could),
        // and one of its own.
        for d in [stray(0), stray(0), stray(10 + round)] {
            s.apply_next(op, &Event::DriftFound { drift: d }).unwrap();
        }
        s.apply_next(op, &Event::OpFinished).unwrap();
        op += 1;
    }
    assert_eq!(s.drift, vec![stray(0), stray(12)]);
    // A finding that was repaired replaces the report of the same thing.
    s.apply_next(
        op,
        &Event::OpStarted {
            kind: OpKind::Recovery,
        },
    )
    .unwrap();
    let slot = Slot::new(1, 2);
    let found = Drift::UnknownAttachment {
        slot,
        path: None,
        detached: false,
    };
    let detached = Drift::UnknownAttachment {
        slot,
        path: None,
        detached: true,
    };
    s.apply_next(op, &Event::DriftFound { drift: found })
        .unwrap();
    s.apply_next(
        op,
        &Event::DriftFound {
            drift: detached.clone(),
        },
    )
    .unwrap();
    assert_eq!(s.drift, vec![detached]);
}
