//! Targeted damage: tail quarantine, middle damage, newer schema, tampering named by verify,
//! and retention with prune keeping verify green.

mod common;
use common::*;
use lunledger_journal::*;
use lunledger_model::*;
use std::path::Path;
use std::time::Duration;

fn write_n(dir: &Path, n: u64) {
    let j = Journal::open(dir, opts()).unwrap();
    let evs = every_event();
    for i in 0..n {
        j.append(i, evs[i as usize % evs.len()].clone()).unwrap();
    }
    j.wait_durable_blocking(n).unwrap();
}

/// Runs `f` on the raw sled records tree of a closed journal.
fn with_raw(dir: &Path, f: impl FnOnce(&sled::Tree)) {
    let db = sled::open(dir.join("sled")).unwrap();
    let t = db.open_tree("records").unwrap();
    f(&t);
    db.flush().unwrap();
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

#[test]
fn undecodable_tail_is_quarantined_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 10);
    let mut original = Vec::new();
    with_raw(dir.path(), |t| {
        let v = t.get(key(10)).unwrap().unwrap();
        original = v.to_vec();
        let mut b = v.to_vec();
        b[3] ^= 0x40;
        t.insert(key(10), b).unwrap();
    });
    // Record 10 never became durable: a torn tail.
    rewind_watermark(dir.path(), 9);
    let j = Journal::open(dir.path(), opts()).unwrap();
    let d = j
        .open_report()
        .tail_quarantined
        .clone()
        .expect("no tail damage reported");
    assert_eq!((d.first_bad_seq, d.records), (10, 1), "{d:?}");
    assert_eq!(j.last_seq(), 9);
    let q = j.quarantined().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].0, 10);
    assert_ne!(q[0].1, original); // the damaged bytes are kept as found
    assert_eq!(j.append(1, Event::OpFinished).unwrap(), 10);
    j.wait_durable_blocking(10).unwrap();
    assert_eq!(j.verify().unwrap().problem, None);
    drop(j);
    let j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(j.open_report().tail_quarantined, None);
    assert_eq!(j.last_seq(), 10);
}

#[test]
fn broken_chain_at_the_end_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 6);
    with_raw(dir.path(), |t| {
        // Records 5 and 6 re-encoded validly but linked to nothing.
        for s in [5u64, 6] {
            let mut r = decode_record(&t.get(key(s)).unwrap().unwrap()).unwrap();
            r.prev_hash = [7; 32];
            t.insert(key(s), encode_record(&r).unwrap()).unwrap();
        }
    });
    rewind_watermark(dir.path(), 4);
    let j = Journal::open(dir.path(), opts()).unwrap();
    let d = j.open_report().tail_quarantined.clone().unwrap();
    assert_eq!((d.first_bad_seq, d.records), (5, 2), "{d:?}");
    assert!(d.what.contains("chain"), "{}", d.what);
    assert_eq!(j.last_seq(), 4);
    assert_eq!(j.verify().unwrap().problem, None);
}

#[test]
fn middle_damage_is_reported_not_fixed() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 10);
    with_raw(dir.path(), |t| {
        let mut b = t.get(key(5)).unwrap().unwrap().to_vec();
        b[10] ^= 1;
        t.insert(key(5), b).unwrap();
    });
    let j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(j.open_report().tail_quarantined, None);
    assert_eq!(
        j.open_report().middle_damage.as_ref().map(|p| p.seq),
        Some(5)
    );
    assert_eq!(j.last_seq(), 10);
    let res: Vec<_> = j.read_from(1).collect();
    assert_eq!(res.len(), 5);
    assert!(res[..4].iter().all(|r| r.is_ok()));
    match &res[4] {
        Err(JournalError::Corrupt { seq: Some(5), .. }) => {}
        other => panic!("expected Corrupt at 5, got {other:?}"),
    }
    assert_eq!(j.verify().unwrap().problem.map(|p| p.seq), Some(5));
    assert!(j.quarantined().unwrap().is_empty());
}

#[test]
fn verify_names_a_tampered_record() {
    for (tamper_seq, reencode) in [(3u64, false), (3, true), (1, true), (8, false), (8, true)] {
        let dir = tempfile::tempdir().unwrap();
        write_n(dir.path(), 8);
        with_raw(dir.path(), |t| {
            let v = t.get(key(tamper_seq)).unwrap().unwrap();
            let b = if reencode {
                // A validly framed record with a different event: only the chain catches it.
                let mut r = decode_record(&v).unwrap();
                r.event = Event::OpFailed {
                    error: "forged".into(),
                };
                encode_record(&r).unwrap()
            } else {
                let mut b = v.to_vec();
                let last = b.len() - 1;
                b[last / 2] ^= 0x10;
                b
            };
            t.insert(key(tamper_seq), b).unwrap();
        });
        // Tampering with the newest (durable) record is lost data to `open`; accept it here so
        // `verify` can be asked to name it.
        let accepting = JournalOptions {
            accept_lost_records: true,
            ..opts()
        };
        let j = Journal::open(dir.path(), accepting).unwrap();
        let v = j.verify().unwrap();
        if tamper_seq == 8 {
            if reencode {
                // The newest record, validly re-framed, has no successor or checkpoint to betray
                // it: undetectable by design.
                assert_eq!(v.problem, None);
            } else {
                // A damaged newest record is a damaged tail: quarantined on open, named there.
                let d = j.open_report().tail_quarantined.clone().unwrap();
                assert_eq!(d.first_bad_seq, 8);
                assert_eq!(v.problem, None);
            }
            continue;
        }
        if reencode {
            assert_eq!(
                j.open_report().middle_damage.as_ref().map(|p| p.seq),
                Some(tamper_seq)
            );
            let err = j.read_from(1).find_map(|r| r.err()).unwrap();
            assert!(
                matches!(err, JournalError::Corrupt { seq: Some(s), .. } if s == tamper_seq),
                "{err:?}"
            );
        }
        assert_eq!(
            v.problem.as_ref().map(|p| p.seq),
            Some(tamper_seq),
            "tamper {tamper_seq} reencode {reencode}: {v:?} / {:?}",
            j.open_report()
        );
    }
}

#[test]
fn verify_names_a_missing_record() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 8);
    with_raw(dir.path(), |t| {
        t.remove(key(4)).unwrap();
    });
    let j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(j.verify().unwrap().problem.map(|p| p.seq), Some(4));
}

#[test]
fn newer_schema_record_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 3);
    with_raw(dir.path(), |t| {
        let prev = t.get(key(3)).unwrap().unwrap();
        let r = Record {
            schema: SCHEMA_VERSION + 1,
            seq: 4,
            ts_micros: 0,
            op: 1,
            event: Event::OpFinished,
            prev_hash: *blake3::hash(&prev).as_bytes(),
        };
        t.insert(key(4), encode_record(&r).unwrap()).unwrap();
    });
    match Journal::open(dir.path(), opts()) {
        Err(JournalError::NewerSchema { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    // Nothing was quarantined or lost: the record is still there for a newer build.
    with_raw(dir.path(), |t| assert!(t.get(key(4)).unwrap().is_some()));
}

#[test]
fn retention_and_prune_keep_verify_green() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 100);
    let j = Journal::open(dir.path(), opts()).unwrap();
    let keep_all_young = Retention {
        keep_records: 0,
        keep_for: Duration::from_secs(3600),
    };
    // No checkpoint: nothing pruned.
    assert_eq!(j.prune(&keep_all_young).unwrap().records_removed, 0);
    j.write_checkpoint(40, b"s40".to_vec()).unwrap();
    j.write_checkpoint(80, b"s80".to_vec()).unwrap();
    assert_eq!(j.latest_checkpoint().unwrap().unwrap().at_seq, 80);
    assert_eq!(
        j.latest_checkpoint().unwrap().unwrap().hash_at_seq,
        j.stored_hash(80).unwrap().unwrap()
    );
    // Young records are kept by keep_for.
    assert_eq!(j.prune(&keep_all_young).unwrap().records_removed, 0);
    let r = j
        .prune(&Retention {
            keep_records: 10,
            keep_for: Duration::ZERO,
        })
        .unwrap();
    assert_eq!(r.records_removed, 70);
    assert_eq!(r.first_retained, Some(71));
    assert_eq!(r.checkpoints_removed, 1);
    assert_eq!(j.first_seq().unwrap(), Some(71));
    let v = j.verify().unwrap();
    assert_eq!(v.problem, None, "{v:?}");
    assert_eq!(
        (v.first_seq, v.last_seq, v.records_checked),
        (Some(71), Some(100), 30)
    );
    // Prune right up to the checkpoint, then further appends.
    let r = j
        .prune(&Retention {
            keep_records: 0,
            keep_for: Duration::ZERO,
        })
        .unwrap();
    assert_eq!(r.first_retained, Some(81));
    assert_eq!(j.verify().unwrap().problem, None);
    j.append(1, Event::OpFinished).unwrap();
    drop(j);
    let j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(j.last_seq(), 101);
    assert_eq!(j.verify().unwrap().problem, None);
    assert_eq!(read_all(&j).len(), 21);
    // Checkpoint at the newest record and prune everything: the newest record is kept, and
    // sequence numbers continue after a reopen.
    j.write_checkpoint(101, b"s101".to_vec()).unwrap();
    j.prune(&Retention {
        keep_records: 0,
        keep_for: Duration::ZERO,
    })
    .unwrap();
    assert_eq!(j.first_seq().unwrap(), Some(101));
    drop(j);
    let j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(j.last_seq(), 101);
    assert_eq!(j.append(1, Event::OpFinished).unwrap(), 102);
    j.wait_durable_blocking(102).unwrap();
    assert_eq!(j.verify().unwrap().problem, None);
    assert_eq!(
        j.latest_checkpoint().unwrap().unwrap().blob,
        b"s101".to_vec()
    );
}

#[test]
fn prune_anchor_catches_a_changed_first_retained_record() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 20);
    {
        let j = Journal::open(dir.path(), opts()).unwrap();
        j.write_checkpoint(15, vec![]).unwrap();
        j.prune(&Retention {
            keep_records: 5,
            keep_for: Duration::ZERO,
        })
        .unwrap();
        assert_eq!(j.first_seq().unwrap(), Some(11));
    }
    with_raw(dir.path(), |t| {
        let mut r = decode_record(&t.get(key(11)).unwrap().unwrap()).unwrap();
        r.prev_hash = [1; 32];
        t.insert(key(11), encode_record(&r).unwrap()).unwrap();
    });
    let j = Journal::open(dir.path(), opts()).unwrap();
    let p = j.verify().unwrap().problem.expect("anchor not checked");
    assert!(p.seq == 11 || p.seq == 10, "{p:?}");
}

#[test]
fn checkpoint_needs_a_stored_record() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), opts()).unwrap();
    assert!(matches!(
        j.write_checkpoint(1, vec![]),
        Err(JournalError::NotAssigned { .. })
    ));
}

#[test]
fn open_scans_from_the_newest_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 50);
    {
        let j = Journal::open(dir.path(), opts()).unwrap();
        assert_eq!(j.open_report().scanned_from, Some(1));
        assert_eq!(j.open_report().records_scanned, 50);
        j.write_checkpoint(40, b"s40".to_vec()).unwrap();
    }
    let j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(j.open_report().scanned_from, Some(41));
    assert_eq!(j.open_report().records_scanned, 10);
    assert_eq!(j.open_report().last_seq, 50);
    drop(j);
    // A record the checkpoint vouches for that no longer matches is an error, not a tail.
    with_raw(dir.path(), |t| {
        let mut r = decode_record(&t.get(key(40)).unwrap().unwrap()).unwrap();
        r.op += 1;
        t.insert(key(40), encode_record(&r).unwrap()).unwrap();
    });
    match Journal::open(dir.path(), opts()) {
        Err(JournalError::Corrupt { seq: Some(40), .. }) => {}
        other => panic!("expected Corrupt at 40, got {other:?}"),
    }
}

#[test]
fn damage_to_durable_records_is_refused_unless_accepted() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 10);
    with_raw(dir.path(), |t| {
        let mut b = t.get(key(10)).unwrap().unwrap().to_vec();
        b[3] ^= 0x40;
        t.insert(key(10), b).unwrap();
    });
    match Journal::open(dir.path(), opts()) {
        Err(JournalError::LostRecords { first, durable }) => assert_eq!((first, durable), (10, 10)),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("durable record 10 was damaged and the open went on silently"),
    }
    let accepting = JournalOptions {
        accept_lost_records: true,
        ..opts()
    };
    let j = Journal::open(dir.path(), accepting).unwrap();
    assert_eq!(
        j.open_report().lost_records,
        Some(SeqRange {
            first: 10,
            last: 10
        })
    );
    assert_eq!(j.last_seq(), 9);
    assert_eq!(
        j.quarantined().unwrap().len(),
        1,
        "the damaged record is kept"
    );
}

#[test]
fn records_missing_below_the_watermark_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 10);
    // What sled's silent prefix recovery looks like from above: the newest records are gone.
    with_raw(dir.path(), |t| {
        t.remove(key(10)).unwrap();
        t.remove(key(9)).unwrap();
    });
    match Journal::open(dir.path(), opts()) {
        Err(JournalError::LostRecords { first, durable }) => assert_eq!((first, durable), (9, 10)),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("two durable records vanished and the open went on silently"),
    }
}

#[test]
fn a_tail_stored_past_the_watermark_is_durable_before_a_checkpoint_can_cover_it() {
    // A process killed after sled stored records and before the watermark recorded them leaves
    // such a tail (found by the long tier's rotation kill loop: kill 96 of 100). Open publishes
    // the tail as durable, so a checkpoint may be written at its end at once; if nothing is
    // flushed after that, the watermark must still not read as rewritten.
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 10);
    rewind_watermark(dir.path(), 9);
    {
        let j = Journal::open(dir.path(), opts()).unwrap();
        assert_eq!(j.durable_seq(), 10);
        j.write_checkpoint(10, vec![1]).unwrap();
    }
    let j = Journal::open(dir.path(), opts()).unwrap();
    let v = j.verify().unwrap();
    assert_eq!(v.problem, None, "{v:?}");
    assert_eq!(j.open_report().lost_records, None);
}
