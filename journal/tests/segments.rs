//! Rotation and sealed segments: history moves out of sled at checkpoints, every record stays
//! readable and verifiable, a crash at any rotation step loses nothing, pruning removes whole
//! segments, and damage to a segment is named.

mod common;

use common::read_all;
use lunledger_journal::*;
use lunledger_model::*;
use std::path::Path;
use std::time::Duration;

fn small_segments() -> JournalOptions {
    JournalOptions {
        segment_records: 10,
        ..JournalOptions::default()
    }
}

fn append_durable(j: &Journal, n: u64) {
    for i in 0..n {
        let seq = j
            .append(
                i,
                Event::OpFailed {
                    error: format!("record {i}"),
                },
            )
            .unwrap();
        j.wait_durable_blocking(seq).unwrap();
    }
}

/// The sled generation directories on disk.
/// 12 records checkpointed at 12 and closed: all sealed into a segment, generation 1 active.
fn rotate_once(dir: &Path) {
    let j = Journal::open(dir, small_segments()).unwrap();
    append_durable(&j, 12);
    j.write_checkpoint(12, vec![]).unwrap();
    assert_eq!(j.generation(), 1);
}

fn generation_dirs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n == "sled" || (n.starts_with("sled-") && n[5..].bytes().all(|c| c.is_ascii_digit()))
        })
        .collect();
    v.sort();
    v
}

fn assert_whole(j: &Journal, last: u64) {
    let all = read_all(j);
    assert_eq!(all.len() as u64, last, "records lost or repeated");
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
    }
    let v = j.verify().unwrap();
    assert_eq!(v.problem, None, "{v:?}");
    assert_eq!(
        (v.first_seq, v.last_seq, v.records_checked),
        (Some(1), Some(last), last)
    );
}

#[test]
fn rotation_seals_history_and_every_record_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    append_durable(&j, 25);
    // Fewer than segment_records before the checkpoint: no rotation.
    j.write_checkpoint(5, b"s5".to_vec()).unwrap();
    assert_eq!((j.generation(), j.segments().len()), (0, 0));
    j.write_checkpoint(20, b"s20".to_vec()).unwrap();
    assert_eq!(j.generation(), 1);
    let segs = j.segments();
    assert_eq!(
        segs.iter().map(|s| (s.first, s.last)).collect::<Vec<_>>(),
        vec![(1, 20)]
    );
    append_durable(&j, 25);
    j.write_checkpoint(40, b"s40".to_vec()).unwrap();
    assert_eq!(j.generation(), 2);
    assert_whole(&j, 50);
    // Reads across the boundaries, by range, newest and hash.
    let r: Vec<u64> = j.read_range(18, 43).map(|r| r.unwrap().seq).collect();
    assert_eq!(r, (18..=43).collect::<Vec<_>>());
    let newest: Vec<u64> = j.newest(35).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(newest, (16..=50).collect::<Vec<_>>());
    let all = read_all(&j);
    assert_eq!(j.stored_hash(7).unwrap(), Some(all[7].prev_hash));
    assert_eq!(j.stored_hash(40).unwrap(), Some(all[40].prev_hash));
    assert_eq!(j.first_seq().unwrap(), Some(1));
    assert_eq!(
        j.latest_checkpoint().unwrap().unwrap().blob,
        b"s40".to_vec()
    );
    // Only the active generation is left on disk once the old ones have no reader.
    assert_eq!(generation_dirs(dir.path()), vec!["sled-000002".to_string()]);
    drop(j);

    // Reopen: sled opens only the active generation; the open scan starts after the checkpoint.
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(j.generation(), 2);
    assert_eq!(j.open_report().scanned_from, Some(41));
    assert_eq!(j.open_report().records_scanned, 10);
    assert_eq!(j.last_seq(), 50);
    assert_whole(&j, 50);
    append_durable(&j, 1);
    assert_whole(&j, 51);
}

#[test]
fn a_checkpoint_at_the_newest_record_leaves_an_empty_generation_that_still_continues() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(dir.path(), small_segments()).unwrap();
        append_durable(&j, 12);
        j.write_checkpoint(12, b"s12".to_vec()).unwrap();
        assert_eq!(j.generation(), 1);
        assert_eq!(
            j.newest(3)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            vec![10, 11, 12]
        );
    }
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(j.last_seq(), 12);
    assert_eq!(j.append(1, Event::OpFinished).unwrap(), 13);
    j.wait_durable_blocking(13).unwrap();
    assert_whole(&j, 13);
}

#[test]
#[cfg(feature = "testing")]
fn a_crash_at_every_rotation_step_loses_nothing() {
    let mut steps = 0;
    for step in 1..=5u8 {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(dir.path(), small_segments()).unwrap();
            append_durable(&j, 30);
            j.write_checkpoint(10, b"s10".to_vec()).unwrap(); // a clean rotation first
            assert_eq!(j.generation(), 1);
            j.set_rotation_fault(step);
            match j.write_checkpoint(25, b"s25".to_vec()) {
                Err(JournalError::Halted) => {}
                other => panic!("step {step}: expected the simulated crash, got {other:?}"),
            }
        }
        let j = Journal::open(dir.path(), small_segments()).unwrap();
        assert_eq!(j.last_seq(), 30, "step {step}");
        // Committed (steps 4 and 5) or not, exactly one generation and no repeated records.
        let want_gen = if step >= 4 { 2 } else { 1 };
        assert_eq!(j.generation(), want_gen, "step {step}");
        assert_eq!(
            generation_dirs(dir.path()),
            vec![format!("sled-{want_gen:06}")],
            "step {step}"
        );
        assert_whole(&j, 30);
        let want_cp = if step >= 4 { 25 } else { 10 };
        assert!(j.latest_checkpoint().unwrap().unwrap().at_seq >= want_cp);
        // The next rotation works.
        append_durable(&j, 15);
        j.write_checkpoint(40, b"s40".to_vec()).unwrap();
        assert_whole(&j, 45);
        assert_eq!(j.segments().last().map(|s| s.last), Some(40), "step {step}");
        steps += 1;
    }
    println!("rotation crash points exercised: {steps}");
}

#[test]
fn appends_during_rotations_all_land_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    append_durable(&j, 1);
    let writer = {
        let j = j.clone();
        std::thread::spawn(move || {
            for i in 0..3000u64 {
                let seq = j.append(i, Event::OpFinished).unwrap();
                if i % 7 == 0 {
                    j.wait_durable_blocking(seq).unwrap();
                }
            }
        })
    };
    let mut rotations = 0;
    while !writer.is_finished() {
        let at = j.durable_seq();
        if at > 0 {
            j.write_checkpoint(at, vec![]).unwrap();
        }
        rotations = j.generation();
        std::thread::sleep(Duration::from_millis(2));
    }
    writer.join().unwrap();
    let last = j.last_seq();
    j.wait_durable_blocking(last).unwrap();
    assert!(rotations >= 3, "only {rotations} rotations happened");
    assert_whole(&j, 3001);
    drop(j);
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    assert_whole(&j, 3001);
}

#[test]
fn pruning_removes_whole_segments_and_verify_stays_anchored() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    for cp in [20, 40, 60, 80] {
        append_durable(&j, 20);
        j.write_checkpoint(cp, vec![]).unwrap();
    }
    append_durable(&j, 20);
    assert_eq!(j.segments().len(), 4);
    // keep 30 behind the checkpoint at 80: records up to 50 may go, so segments 1-20 and 21-40
    // go whole and 41-60 stays.
    let r = j
        .prune(&Retention {
            keep_records: 30,
            keep_for: Duration::ZERO,
        })
        .unwrap();
    assert_eq!((r.records_removed, r.first_retained), (40, Some(41)));
    assert_eq!(j.first_seq().unwrap(), Some(41));
    let v = j.verify().unwrap();
    assert_eq!(v.problem, None, "{v:?}");
    assert_eq!((v.first_seq, v.records_checked), (Some(41), 60));
    drop(j);
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(j.verify().unwrap().problem, None);
    // Young records are kept by keep_for.
    let r = j
        .prune(&Retention {
            keep_records: 0,
            keep_for: Duration::from_secs(3600),
        })
        .unwrap();
    assert_eq!(r.records_removed, 0);
    // Everything up to the checkpoint may go: the rest of the segments, then nothing more of the
    // active generation (it starts after the checkpoint).
    let r = j
        .prune(&Retention {
            keep_records: 0,
            keep_for: Duration::ZERO,
        })
        .unwrap();
    assert_eq!((r.records_removed, r.first_retained), (40, Some(81)));
    assert_eq!(j.segments().len(), 0);
    assert_eq!(j.verify().unwrap().problem, None);
    // A changed first retained record is caught against the anchor.
    drop(j);
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    let v = j.verify().unwrap();
    assert_eq!(
        (v.problem, v.first_seq, v.last_seq),
        (None, Some(81), Some(100))
    );
}

#[test]
fn damage_to_a_segment_is_named() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(dir.path(), small_segments()).unwrap();
        for cp in [20, 40] {
            append_durable(&j, 20);
            j.write_checkpoint(cp, vec![]).unwrap();
        }
        append_durable(&j, 5);
    }
    let segs: Vec<_> = std::fs::read_dir(dir.path().join(ARCHIVE_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(segs.len(), 2);
    let mut segs = segs;
    segs.sort();
    // Flip a byte in the middle of the second segment (records 21..=40).
    let mut bytes = std::fs::read(&segs[1]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&segs[1], &bytes).unwrap();
    // Recovery does not read sealed history: the open is clean.
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(j.last_seq(), 45);
    let p = j.verify().unwrap().problem.expect("damage not found");
    assert!((21..=40).contains(&p.seq), "{p:?}");
    let err = j
        .read_from(1)
        .find_map(|r| r.err())
        .expect("read passed the damage");
    match err {
        JournalError::Corrupt { seq: Some(s), .. } | JournalError::Decode { seq: Some(s), .. } => {
            assert!((21..=40).contains(&s), "{s}")
        }
        other => panic!("{other:?}"),
    }
    drop(j);
    // A segment deleted from under the journal: the open refuses (the manifest says it was
    // sealed) unless told to accept the loss, and the missing records are named.
    std::fs::remove_file(&segs[0]).unwrap();
    assert!(matches!(
        Journal::open(dir.path(), small_segments()),
        Err(JournalError::LostRecords {
            first: 1,
            durable: 20
        })
    ));
    let accepting = JournalOptions {
        accept_lost_records: true,
        ..small_segments()
    };
    let j = Journal::open(dir.path(), accepting).unwrap();
    let p = j
        .verify()
        .unwrap()
        .problem
        .expect("missing segment not found");
    assert_eq!(p.seq, 1, "{p:?}");
}

#[test]
fn tail_reads_sealed_history_then_follows() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    append_durable(&j, 15);
    j.write_checkpoint(12, vec![]).unwrap();
    assert_eq!(j.segments().len(), 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut t = j.tail(1);
        for want in 1..=15 {
            assert_eq!(t.next().await.unwrap().seq, want);
        }
        let j2 = j.clone();
        let w = tokio::task::spawn_blocking(move || append_durable(&j2, 1));
        assert_eq!(t.next().await.unwrap().seq, 16);
        w.await.unwrap();
    });
}

#[test]
fn a_missing_active_generation_is_refused_not_recreated() {
    let dir = tempfile::tempdir().unwrap();
    rotate_once(dir.path());
    std::fs::remove_dir_all(dir.path().join("sled-000001")).unwrap();
    match Journal::open(dir.path(), small_segments()) {
        Err(JournalError::Corrupt { what, .. }) => assert!(what.contains("sled-000001"), "{what}"),
        other => panic!("expected Corrupt naming the generation, got {other:?}"),
    }
    // Nothing was created in its place.
    assert!(!dir.path().join("sled-000001").exists());
}

#[test]
fn a_generation_that_lost_its_checkpoint_never_reuses_sealed_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    rotate_once(dir.path());
    {
        let db = sled::open(dir.path().join("sled-000001")).unwrap();
        db.open_tree("checkpoints").unwrap().clear().unwrap();
        db.flush().unwrap();
    }
    let accepting = JournalOptions {
        accept_lost_records: true,
        ..small_segments()
    };
    match Journal::open(dir.path(), accepting) {
        Err(JournalError::Corrupt { seq: Some(1), what }) => {
            assert!(what.contains("ends at 12"), "{what}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        Journal::open(dir.path(), small_segments()),
        Err(JournalError::LostRecords {
            first: 1,
            durable: 12
        })
    ));
}
