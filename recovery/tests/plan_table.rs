//! The recovery planner, table-driven: each row is a journal prefix (the state a crash left),
//! what the VM reports and the policy, and the actions the planner must return, in order.
//! Adding a recovery case is adding a row.

use lunledger_model::{
    AttachId, DiskKind, DiskSpec, Drift, Event, ManagerConfig, OpId, OpKind, Resolution, Slot,
    Step, Target,
};
use lunledger_recovery::{
    plan, Action, Observation, RecoveryPolicy, ReleaseEnd, SeenAttachment, SeenGuest, State,
};

const S: Slot = Slot::new(0, 0);
const ATTACH: AttachId = 1;

fn disk() -> DiskSpec {
    DiskSpec {
        path: "/img/a.vhdx".into(),
        read_only: false,
        kind: DiskKind::VirtualDisk,
        evd_type: None,
    }
}

/// Events by operation: op 1 configures; later ops as the row says.
fn configure() -> Vec<(OpId, Event)> {
    vec![
        (
            1,
            Event::OpStarted {
                kind: OpKind::Configure,
            },
        ),
        (
            1,
            Event::ConfigSet {
                config: ManagerConfig::lcow_default(),
            },
        ),
        (1, Event::OpFinished),
    ]
}

/// Op 2: an add of `disk()` at `S`, up to the attach intent.
fn add_until_attach_intent() -> Vec<(OpId, Event)> {
    let mut ev = configure();
    ev.extend([
        (
            2,
            Event::OpStarted {
                kind: OpKind::Add {
                    disk: disk(),
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
                attach: ATTACH,
                disk: disk(),
            },
        ),
        (
            2,
            Event::StepIntent {
                step: Step::Attach,
                target: Target::Slot(S),
            },
        ),
    ]);
    ev
}

/// Op 2 finished: handle 1 holds `disk()` at `S`.
fn attached_with_handle() -> Vec<(OpId, Event)> {
    let mut ev = add_until_attach_intent();
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
fn release_started() -> Vec<(OpId, Event)> {
    let mut ev = attached_with_handle();
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

fn fold(events: &[(OpId, Event)]) -> State {
    let mut s = State::new();
    for (op, ev) in events {
        if let Err(e) = s.apply_next(*op, ev) {
            panic!("fixture event {ev:?} does not fit: {e}");
        }
    }
    s
}

fn host(slots: &[(Slot, Option<AttachId>)]) -> Option<Vec<SeenAttachment>> {
    Some(
        slots
            .iter()
            .map(|(slot, attach)| SeenAttachment {
                slot: *slot,
                attach: *attach,
                path: None,
            })
            .collect(),
    )
}

fn guest(devices: &[Slot]) -> Option<SeenGuest> {
    Some(SeenGuest {
        devices: devices.to_vec(),
        ..SeenGuest::default()
    })
}

struct Row {
    name: &'static str,
    events: Vec<(OpId, Event)>,
    seen: Observation,
    policy: RecoveryPolicy,
    want: Vec<Action>,
}

fn rows() -> Vec<Row> {
    let blind = Observation::default();
    let keep = RecoveryPolicy::default();
    let detach = RecoveryPolicy {
        detach_unknown: true,
    };
    let resolve = |resolution, inspected| Action::Resolve {
        step: Step::Attach,
        target: Target::Slot(S),
        resolution,
        inspected,
    };
    let stray = Slot::new(1, 5);
    vec![
        Row {
            name: "a clean journal and an empty VM: nothing to do",
            events: configure(),
            seen: Observation {
                host: host(&[]),
                guest: guest(&[]),
            },
            policy: keep.clone(),
            want: vec![],
        },
        Row {
            // The rollback tears down what its dropped references leave due (an idempotent
            // detach here): no separate teardown action.
            name: "attach outcome lost, VM not asked: assume it happened, roll the add back",
            events: add_until_attach_intent(),
            seen: blind.clone(),
            policy: keep.clone(),
            want: vec![
                resolve(Resolution::Happened, false),
                Action::RollBackAdd { op: 2 },
            ],
        },
        Row {
            name: "attach outcome lost, the host shows it: it happened; roll the add back",
            events: add_until_attach_intent(),
            seen: Observation {
                host: host(&[(S, Some(ATTACH))]),
                guest: guest(&[S]),
            },
            policy: keep.clone(),
            want: vec![
                resolve(Resolution::Happened, true),
                Action::RollBackAdd { op: 2 },
            ],
        },
        Row {
            name: "attach outcome lost, the host lacks it: it did not happen; roll back only",
            events: add_until_attach_intent(),
            seen: Observation {
                host: host(&[]),
                guest: guest(&[]),
            },
            policy: keep.clone(),
            want: vec![
                resolve(Resolution::DidNotHappen, true),
                Action::RollBackAdd { op: 2 },
            ],
        },
        Row {
            name: "a held attachment the host lost is marked lost",
            events: attached_with_handle(),
            seen: Observation {
                host: host(&[]),
                guest: guest(&[]),
            },
            policy: keep.clone(),
            want: vec![Action::LoseAttachment { slot: S }],
        },
        Row {
            name: "a held attachment the host shows: nothing to do",
            events: attached_with_handle(),
            seen: Observation {
                host: host(&[(S, Some(ATTACH))]),
                guest: guest(&[S]),
            },
            policy: keep.clone(),
            want: vec![],
        },
        Row {
            name: "a release caught after dropping its reference is finished, then torn down",
            events: release_started(),
            seen: Observation {
                host: host(&[(S, Some(ATTACH))]),
                guest: guest(&[S]),
            },
            policy: keep.clone(),
            want: vec![
                Action::FinishRelease {
                    op: 3,
                    handle: 1,
                    end: ReleaseEnd::Finished,
                },
                Action::Teardown { slot: S },
            ],
        },
        Row {
            name: "a foreign disk is reported, not touched, by default",
            events: configure(),
            seen: Observation {
                host: host(&[(stray, None)]),
                guest: guest(&[stray]),
            },
            policy: keep.clone(),
            want: vec![Action::Report {
                drift: Drift::UnknownAttachment {
                    slot: stray,
                    path: None,
                    detached: false,
                },
            }],
        },
        Row {
            name: "a foreign disk is detached when the policy says so",
            events: configure(),
            seen: Observation {
                host: host(&[(stray, None)]),
                guest: guest(&[stray]),
            },
            policy: detach,
            want: vec![Action::DetachStray {
                slot: stray,
                attach: None,
                path: None,
            }],
        },
    ]
}

#[test]
fn every_row_plans_exactly_its_actions_and_planning_is_pure() {
    let mut failures = Vec::new();
    for row in rows() {
        let state = fold(&row.events);
        let got = plan(&state, &row.seen, &row.policy).unwrap();
        if got != row.want {
            failures.push(format!(
                "{}:\n  want {:?}\n  got  {:?}",
                row.name, row.want, got
            ));
        }
        assert_eq!(
            plan(&state, &row.seen, &row.policy).unwrap(),
            got,
            "{}: the planner is pure",
            row.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
