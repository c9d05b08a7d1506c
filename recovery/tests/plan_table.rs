//! The recovery planner, table-driven: each row is a journal prefix (the state a crash left),
//! what the VM reports and the policy, and the actions the planner must return, in order.
//! Adding a recovery case is adding a row.

mod common;

use common::{
    add_until_attach_intent, attached_with_handle, configure, fold, release_started, ATTACH, S,
};
use lunledger_model::{
    AttachId, Drift, Event, GuestOs, ManagerConfig, OpId, Resolution, Slot, Step, Target,
};
use lunledger_recovery::{
    plan, Action, Observation, RecoveryPolicy, ReleaseEnd, SeenAttachment, SeenGuest,
};

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
            events: configure(ManagerConfig::lcow_default()),
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
            events: add_until_attach_intent(GuestOs::Linux),
            seen: blind.clone(),
            policy: keep.clone(),
            want: vec![
                resolve(Resolution::Happened, false),
                Action::RollBackAdd { op: 2 },
            ],
        },
        Row {
            name: "attach outcome lost, the host shows it: it happened; roll the add back",
            events: add_until_attach_intent(GuestOs::Linux),
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
            events: add_until_attach_intent(GuestOs::Linux),
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
            events: attached_with_handle(GuestOs::Linux),
            seen: Observation {
                host: host(&[]),
                guest: guest(&[]),
            },
            policy: keep.clone(),
            want: vec![Action::LoseAttachment { slot: S }],
        },
        Row {
            name: "a held attachment the host shows: nothing to do",
            events: attached_with_handle(GuestOs::Linux),
            seen: Observation {
                host: host(&[(S, Some(ATTACH))]),
                guest: guest(&[S]),
            },
            policy: keep.clone(),
            want: vec![],
        },
        Row {
            name: "a release caught after dropping its reference is finished, then torn down",
            events: release_started(GuestOs::Linux),
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
            events: configure(ManagerConfig::lcow_default()),
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
            events: configure(ManagerConfig::lcow_default()),
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
