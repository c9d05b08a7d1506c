//! Property tests: arbitrary appends, reopens, checkpoints (rotating into sealed segments) and
//! prunes read back exactly; any single-byte change to a stored record is rejected and named.

mod common;
use common::*;
use lunledger_journal::*;
use lunledger_model::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Action {
    Append {
        op: u64,
        event: Event,
    },
    Reopen,
    Durable,
    /// A checkpoint at the newest record (a rotation once 5 records are in the generation).
    Checkpoint,
    /// Prune behind the newest checkpoint, keeping this many records.
    Prune {
        keep: u64,
    },
}

fn event() -> impl Strategy<Value = Event> {
    let all = every_event();
    prop_oneof![
        (0..all.len()).prop_map(move |i| all[i].clone()),
        ".{0,40}".prop_map(|error| Event::OpFailed { error }),
        any::<u64>().prop_map(|at_seq| Event::CheckpointTaken { at_seq }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (any::<u64>(), event()).prop_map(|(op, event)| Action::Append { op, event }),
        1 => Just(Action::Reopen),
        1 => Just(Action::Durable),
        1 => Just(Action::Checkpoint),
        1 => (0u64..20).prop_map(|keep| Action::Prune { keep }),
    ]
}

/// The retained records are exactly the model's from the first retained one on.
fn check_matches(j: &Journal, model: &[(u64, Event)]) {
    let recs = read_all(j);
    let first = j.first_seq().unwrap().unwrap_or(model.len() as u64 + 1);
    assert_eq!(recs.len() as u64, model.len() as u64 + 1 - first);
    for (r, (i, (op, ev))) in recs
        .iter()
        .zip(model.iter().enumerate().skip(first as usize - 1))
    {
        assert_eq!(r.seq, i as u64 + 1);
        assert_eq!(r.schema, SCHEMA_VERSION);
        assert_eq!((&r.op, &r.event), (op, ev));
    }
    assert_eq!(j.last_seq(), model.len() as u64);
}

/// Small segments, so short action sequences rotate.
fn rotating() -> JournalOptions {
    JournalOptions {
        segment_records: 5,
        ..opts()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn appends_and_reopens_read_back_the_same(actions in proptest::collection::vec(action(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), rotating()).unwrap();
        let mut model: Vec<(u64, Event)> = Vec::new();
        for a in actions {
            match a {
                Action::Append { op, event } => {
                    let seq = j.append(op, event.clone()).unwrap();
                    model.push((op, event));
                    prop_assert_eq!(seq, model.len() as u64);
                }
                Action::Durable => {
                    let last = j.last_seq();
                    j.wait_durable_blocking(last).unwrap();
                    prop_assert!(j.durable_seq() >= last);
                }
                Action::Reopen => {
                    drop(j);
                    j = Journal::open(dir.path(), rotating()).unwrap();
                    prop_assert_eq!(j.open_report().tail_quarantined.clone(), None);
                    check_matches(&j, &model);
                }
                Action::Checkpoint => {
                    let last = j.last_seq();
                    if last > 0 {
                        j.write_checkpoint(last, last.to_be_bytes().to_vec()).unwrap();
                        let cp = j.latest_checkpoint().unwrap().unwrap();
                        prop_assert_eq!((cp.at_seq, cp.blob), (last, last.to_be_bytes().to_vec()));
                        check_matches(&j, &model);
                    }
                }
                Action::Prune { keep } => {
                    // Appends are asynchronous: read back only what the writer has stored.
                    let last = j.last_seq();
                    j.wait_durable_blocking(last).unwrap();
                    let before = j.first_seq().unwrap();
                    let r = j.prune(&Retention { keep_records: keep, keep_for: std::time::Duration::ZERO }).unwrap();
                    prop_assert_eq!(r.first_retained, j.first_seq().unwrap());
                    if let (Some(b), Some(a)) = (before, r.first_retained) {
                        prop_assert_eq!(a - b, r.records_removed);
                    }
                    check_matches(&j, &model);
                    prop_assert_eq!(j.verify().unwrap().problem, None);
                }
            }
        }
        drop(j);
        let j = Journal::open(dir.path(), rotating()).unwrap();
        check_matches(&j, &model);
        prop_assert_eq!(j.verify().unwrap().problem, None);
    }

    #[test]
    fn any_single_byte_change_is_rejected(
        events in proptest::collection::vec(event(), 1..8),
        pick in any::<prop::sample::Index>(),
        offset in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(dir.path(), opts()).unwrap();
            for (i, e) in events.iter().enumerate() {
                j.append(i as u64, e.clone()).unwrap();
            }
        }
        let n = events.len() as u64;
        let k = pick.index(events.len()) as u64 + 1;
        {
            let db = sled::open(dir.path().join("sled")).unwrap();
            let t = db.open_tree("records").unwrap();
            let mut b = t.get(k.to_be_bytes()).unwrap().unwrap().to_vec();
            let at = offset.index(b.len());
            b[at] ^= mask;
            t.insert(k.to_be_bytes(), b).unwrap();
            db.flush().unwrap();
        }
        let j = match Journal::open(dir.path(), opts()) {
            Ok(j) => j,
            // A change to a durable record at the tail is refused by open, naming it.
            Err(JournalError::LostRecords { first, .. }) => {
                prop_assert_eq!(first, k);
                return Ok(());
            }
            Err(e) => panic!("open: {e}"),
        };
        let report = j.open_report().clone();
        let v = j.verify().unwrap();
        let named = match (&report.tail_quarantined, &v.problem) {
            (Some(d), _) => d.first_bad_seq,
            (None, Some(p)) => p.seq,
            (None, None) => 0,
        };
        prop_assert_eq!(named, k, "n={} report={:?} verify={:?}", n, report, v);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The pure decoder never panics, on raw junk or on junk with a valid check (which reaches
    /// the MessagePack decoder).
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), framed in any::<bool>()) {
        let input = if framed {
            let mut b = bytes.clone();
            let check = blake3::hash(&bytes);
            b.extend_from_slice(&check.as_bytes()[..8]);
            b
        } else {
            bytes
        };
        let res = std::panic::catch_unwind(|| decode_record(&input));
        prop_assert!(res.is_ok());
    }

    /// Mutating a valid payload (then re-framing it) gives a record or a typed error, never a panic.
    #[test]
    fn mutated_valid_payloads_never_panic(idx in 0usize..33, at in any::<prop::sample::Index>(), val in any::<u8>()) {
        let evs = every_event();
        let r = Record { schema: 1, seq: 5, ts_micros: 9, op: 2, event: evs[idx % evs.len()].clone(), prev_hash: [3; 32] };
        let framed = encode_record(&r).unwrap();
        let mut payload = framed[..framed.len() - 8].to_vec();
        let i = at.index(payload.len());
        payload[i] = val;
        let check = blake3::hash(&payload);
        payload.extend_from_slice(&check.as_bytes()[..8]);
        let res = std::panic::catch_unwind(|| decode_record(&payload));
        prop_assert!(res.is_ok());
    }
}
