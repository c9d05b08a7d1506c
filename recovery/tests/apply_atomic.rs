//! `State::apply_next` is all or nothing: an event that does not fit returns an error and leaves
//! the state exactly as it was, whatever the state and the event. The live manager relies on
//! it (it applies an event before journaling it, and journals nothing that does not fit), so
//! this explores it over random event streams from a small alphabet (few ops, slots, mounts
//! and handles, so events collide often and most are refused).

mod common;

use lunledger_model::{
    DiskSpec, Drift, Event, GuestOs, ManagerConfig, MountSpec, OpKind, Resolution, Slot, Step,
    Target,
};
use lunledger_recovery::State;
use proptest::prelude::*;

fn disk(i: u8) -> DiskSpec {
    DiskSpec {
        read_only: i % 2 == 0,
        ..common::disk(&format!("/img/{i}.vhdx"))
    }
}

fn slot() -> impl Strategy<Value = Slot> {
    (0u32..2, 0u32..2).prop_map(|(c, l)| Slot::new(c, l))
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Attach),
        Just(Step::Mount),
        Just(Step::Unmount),
        Just(Step::Unplug),
        Just(Step::Detach),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        slot().prop_map(Target::Slot),
        (1u64..4).prop_map(Target::Mount)
    ]
}

fn kind() -> impl Strategy<Value = OpKind> {
    prop_oneof![
        (0u8..3).prop_map(|i| OpKind::Add {
            disk: disk(i),
            mount: None,
            requested_path: None,
            owner: None,
            vm_id: None,
        }),
        (1u64..4).prop_map(|handle| OpKind::Release { handle }),
        Just(OpKind::Recovery),
        Just(OpKind::RetryTeardown),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        kind().prop_map(|kind| Event::OpStarted { kind }),
        (slot(), 1u64..5, 0u8..3).prop_map(|(slot, attach, d)| Event::AttachReserved {
            slot,
            attach,
            disk: disk(d),
        }),
        slot().prop_map(|slot| Event::AttachRefTaken { slot }),
        slot().prop_map(|slot| Event::AttachRefDropped { slot }),
        (1u64..4, slot(), 0u32..3).prop_map(|(mount, slot, i)| Event::MountReserved {
            mount,
            slot,
            index: Some(i),
            path: format!("/m{i}"),
            spec: MountSpec::default(),
        }),
        (1u64..4).prop_map(|mount| Event::MountRefTaken { mount }),
        (1u64..4).prop_map(|mount| Event::MountRefDropped { mount }),
        (step(), target()).prop_map(|(step, target)| Event::StepIntent { step, target }),
        (step(), target()).prop_map(|(step, target)| Event::StepDone { step, target }),
        (step(), target()).prop_map(|(step, target)| Event::StepFailed {
            step,
            target,
            error: "boom".into(),
        }),
        (step(), target(), any::<bool>()).prop_map(|(step, target, yes)| Event::StepResolved {
            step,
            target,
            resolution: if yes {
                Resolution::Happened
            } else {
                Resolution::DidNotHappen
            },
        }),
        (1u64..4, slot(), proptest::option::of(1u64..4)).prop_map(|(handle, slot, mount)| {
            Event::HandleIssued {
                handle,
                slot,
                mount,
                owner: None,
            }
        }),
        (1u64..4).prop_map(|handle| Event::ReleaseStarted { handle }),
        (1u64..4).prop_map(|handle| Event::HandleReleased { handle }),
        slot().prop_map(|slot| Event::AttachmentLost { slot }),
        (1u64..4).prop_map(|mount| Event::MountLost { mount }),
        slot().prop_map(|slot| Event::DriftFound {
            drift: Drift::UnknownAttachment {
                slot,
                path: None,
                detached: false,
            },
        }),
        Just(Event::OpFinished),
        Just(Event::OpFailed { error: "x".into() }),
        Just(Event::OpRolledBack { reason: "x".into() }),
        Just(Event::OpAbandoned),
    ]
}

fn configured(guest: GuestOs) -> State {
    common::fold(&common::configure(ManagerConfig {
        controllers: 2,
        luns_per_controller: 2,
        mount_format: match guest {
            GuestOs::Linux => "/m%d".into(),
            GuestOs::Windows => r"c:\m%d".into(),
        },
        reserved: vec![],
        guest,
    }))
}

/// Events that might fit `s` next, built from what it holds (its operations, slots, mounts
/// and handles, and the next ids): a stream of these reaches deep states, where a refused
/// event has the most it could wrongly change.
fn candidates(s: &State) -> Vec<(u64, Event)> {
    let mut ops: Vec<u64> = s.ops.keys().copied().collect();
    ops.push(s.next_op);
    let slots: Vec<Slot> = (0..2)
        .flat_map(|c| (0..2).map(move |l| Slot::new(c, l)))
        .collect();
    let mut mounts: Vec<u64> = s.mounts.keys().copied().collect();
    mounts.push(s.next_mount);
    let mut handles: Vec<u64> = s.handles.keys().copied().collect();
    handles.push(s.next_handle);
    let steps = [
        Step::Attach,
        Step::Mount,
        Step::Unmount,
        Step::Unplug,
        Step::Detach,
    ];
    let mut targets: Vec<Target> = slots.iter().map(|x| Target::Slot(*x)).collect();
    targets.extend(mounts.iter().map(|m| Target::Mount(*m)));
    let mut out = Vec::new();
    for &op in &ops {
        let mut evs = vec![
            Event::OpStarted {
                kind: OpKind::Add {
                    disk: disk((op % 3) as u8),
                    mount: None,
                    requested_path: None,
                    owner: None,
                    vm_id: None,
                },
            },
            Event::OpStarted {
                kind: OpKind::Recovery,
            },
            Event::OpFinished,
            Event::OpFailed { error: "x".into() },
            Event::OpRolledBack { reason: "x".into() },
            Event::OpAbandoned,
        ];
        for &h in &handles {
            evs.push(Event::OpStarted {
                kind: OpKind::Release { handle: h },
            });
            evs.push(Event::ReleaseStarted { handle: h });
            evs.push(Event::HandleReleased { handle: h });
            for &slot in &slots {
                evs.push(Event::HandleIssued {
                    handle: h,
                    slot,
                    mount: s.ops.get(&op).and_then(|o| o.holds_mount),
                    owner: None,
                });
            }
        }
        for &slot in &slots {
            evs.push(Event::AttachReserved {
                slot,
                attach: s.next_attach,
                disk: disk((op % 3) as u8),
            });
            evs.push(Event::AttachRefTaken { slot });
            evs.push(Event::AttachRefDropped { slot });
            evs.push(Event::AttachmentLost { slot });
            let index = (s.next_mount % 3) as u32;
            evs.push(Event::MountReserved {
                mount: s.next_mount,
                slot,
                index: Some(index),
                path: format!("/m{index}"),
                spec: MountSpec::default(),
            });
        }
        for &m in &mounts {
            evs.push(Event::MountRefTaken { mount: m });
            evs.push(Event::MountRefDropped { mount: m });
            evs.push(Event::MountLost { mount: m });
        }
        for &step in &steps {
            for &target in &targets {
                evs.push(Event::StepIntent { step, target });
                evs.push(Event::StepDone { step, target });
                evs.push(Event::StepFailed {
                    step,
                    target,
                    error: "boom".into(),
                });
                for resolution in [Resolution::Happened, Resolution::DidNotHappen] {
                    evs.push(Event::StepResolved {
                        step,
                        target,
                        resolution,
                    });
                }
            }
        }
        out.extend(evs.into_iter().map(|e| (op, e)));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("LUNLEDGER_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(128, |n: u32| n * 4)
    ))]

    /// Walks deep states (each step applies a fitting candidate chosen by the input) and, at
    /// every state on the way, checks every candidate that is refused.
    #[test]
    fn every_refused_event_on_a_walk_through_deep_states_changes_nothing(
        picks in proptest::collection::vec(any::<u16>(), 1..40),
        windows in any::<bool>(),
    ) {
        let mut s = configured(if windows { GuestOs::Windows } else { GuestOs::Linux });
        for pick in picks {
            let cands = candidates(&s);
            let mut fitting = Vec::new();
            for (i, (op, ev)) in cands.iter().enumerate() {
                let mut t = s.clone();
                match t.apply_next(*op, ev) {
                    Ok(_) => fitting.push(i),
                    Err(e) => prop_assert_eq!(
                        &t, &s, "refused {:?} for op {} ({}) but changed the state", ev, op, e
                    ),
                }
            }
            if fitting.is_empty() {
                break;
            }
            let (op, ev) = &cands[fitting[pick as usize % fitting.len()]];
            prop_assert!(s.apply_next(*op, ev).is_ok());
        }
    }

    #[test]
    fn an_event_that_does_not_fit_changes_nothing(
        stream in proptest::collection::vec((2u64..6, event()), 1..120),
        windows in any::<bool>(),
    ) {
        let mut s = configured(if windows { GuestOs::Windows } else { GuestOs::Linux });
        for (op, ev) in &stream {
            let before = s.clone();
            if let Err(e) = s.apply_next(*op, ev) {
                prop_assert_eq!(&s, &before, "refused {:?} ({}) but changed the state", ev, e);
            }
        }
    }
}
