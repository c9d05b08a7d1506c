//! Audit integrity (issue #12 items 3-5, journal side): the manifest of sealed and pruned
//! segments makes a missing segment a named loss; the durable watermark is checksummed and its
//! absence is a finding; a checkpoint past the last record is a typed error, never a new start.

mod common;

use common::read_all;
use lunledger_journal::*;
use lunledger_journal::{CURRENT_FILE, SLED_DATA_FILE, SLED_DIR};
use lunledger_model::*;
use std::path::Path;
use std::time::Duration;

fn small_segments() -> JournalOptions {
    JournalOptions {
        segment_records: 10,
        ..JournalOptions::default()
    }
}

fn accepting() -> JournalOptions {
    JournalOptions {
        accept_lost_records: true,
        ..small_segments()
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

/// Four rotations (segments 1-20, 21-40, 41-60, 61-80) and 20 records after: 100 records.
fn rotated_journal(dir: &Path) {
    let j = Journal::open(dir, small_segments()).unwrap();
    for cp in [20, 40, 60, 80] {
        append_durable(&j, 20);
        j.write_checkpoint(cp, vec![]).unwrap();
    }
    append_durable(&j, 20);
    assert_eq!(j.segments().len(), 4);
}

fn segment_path(dir: &Path, first: u64, last: u64) -> std::path::PathBuf {
    dir.join(ARCHIVE_DIR)
        .join(format!("{first:020}-{last:020}.seg"))
}

/// The active generation of a closed journal, opened raw.
fn raw_active(dir: &Path) -> sled::Db {
    let gen = std::fs::read_to_string(dir.join(CURRENT_FILE))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| SLED_DIR.to_string());
    sled::open(dir.join(gen)).unwrap()
}

#[test]
fn a_deleted_archive_is_a_named_loss_not_pruning() {
    let dir = tempfile::tempdir().unwrap();
    rotated_journal(dir.path());
    std::fs::remove_dir_all(dir.path().join(ARCHIVE_DIR)).unwrap();
    match Journal::open(dir.path(), small_segments()) {
        Err(JournalError::LostRecords { first, durable }) => {
            assert_eq!((first, durable), (1, 80))
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("sealed history 1..=80 is gone and the open went on silently"),
    }
    let j = Journal::open(dir.path(), accepting()).unwrap();
    assert_eq!(
        j.open_report().missing_segments,
        [(1, 20), (21, 40), (41, 60), (61, 80)]
            .map(|(first, last)| SeqRange { first, last })
            .to_vec()
    );
    // History still starts at 1: the records are missing, not pruned.
    assert_eq!(j.first_seq().unwrap(), Some(1));
    let v = j.verify().unwrap();
    let p = v.problem.clone().expect("missing segments not found");
    assert_eq!(p.seq, 1, "{p:?}");
    assert_eq!(
        p.kind,
        ProblemKind::MissingSegment { first: 1, last: 20 },
        "{p:?}"
    );
    let missing: Vec<_> = v
        .problems
        .iter()
        .filter_map(|p| match p.kind {
            ProblemKind::MissingSegment { first, last } => Some((first, last)),
            _ => None,
        })
        .collect();
    assert_eq!(missing, vec![(1, 20), (21, 40), (41, 60), (61, 80)]);
    // A read over the missing history fails at once.
    match j.read_range(1, 100).next() {
        Some(Err(JournalError::Corrupt { seq: Some(1), .. })) => {}
        other => panic!("expected Corrupt at 1, got {other:?}"),
    }
    drop(j);
    // The loss stays named on every later open (the manifest still lists the segments).
    let j = Journal::open(dir.path(), accepting()).unwrap();
    assert_eq!(j.open_report().missing_segments.len(), 4);
}

#[test]
fn a_deleted_middle_segment_is_named_by_open_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    rotated_journal(dir.path());
    std::fs::remove_file(segment_path(dir.path(), 21, 40)).unwrap();
    assert!(matches!(
        Journal::open(dir.path(), small_segments()),
        Err(JournalError::LostRecords {
            first: 21,
            durable: 40
        })
    ));
    let j = Journal::open(dir.path(), accepting()).unwrap();
    assert_eq!(
        j.open_report().missing_segments,
        vec![SeqRange {
            first: 21,
            last: 40
        }]
    );
    let p = j.verify().unwrap().problem.expect("not found");
    assert_eq!(
        (p.seq, p.kind),
        (
            21,
            ProblemKind::MissingSegment {
                first: 21,
                last: 40
            }
        )
    );
}

#[test]
fn a_segment_the_manifest_does_not_know_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    rotated_journal(dir.path());
    // A stray copy of a segment under a name no rotation wrote.
    let stray = segment_path(dir.path(), 3, 7);
    std::fs::copy(segment_path(dir.path(), 1, 20), &stray).unwrap();
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(j.open_report().unexpected_segments, vec![stray.clone()]);
    let p = j.verify().unwrap().problem.expect("not found");
    assert_eq!(
        p.kind,
        ProblemKind::UnexpectedSegment { first: 3, last: 7 },
        "{p:?}"
    );
    // Nothing was deleted, and reads do not use it.
    assert!(stray.exists());
    assert_eq!(read_all(&j).len(), 100);
}

#[test]
fn pruned_segments_are_recorded_and_never_missing() {
    let dir = tempfile::tempdir().unwrap();
    rotated_journal(dir.path());
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    j.prune(&Retention {
        keep_records: 30,
        keep_for: Duration::ZERO,
    })
    .unwrap();
    assert_eq!(j.first_seq().unwrap(), Some(41));
    drop(j);
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(j.open_report().missing_segments, Vec::<SeqRange>::new());
    assert_eq!(j.verify().unwrap().problem, None);
    drop(j);
    // A prune interrupted after it recorded the removal but before the file went: the next
    // open finishes it instead of calling the file unexpected.
    std::fs::write(segment_path(dir.path(), 1, 20), b"LLSEG\0\0\x01").unwrap();
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    assert!(j.open_report().unexpected_segments.is_empty());
    assert!(!segment_path(dir.path(), 1, 20).exists());
    assert_eq!(j.verify().unwrap().problem, None);
    drop(j);
    // Deleting a retained segment after pruning is still a loss.
    std::fs::remove_file(segment_path(dir.path(), 41, 60)).unwrap();
    assert!(matches!(
        Journal::open(dir.path(), small_segments()),
        Err(JournalError::LostRecords {
            first: 41,
            durable: 60
        })
    ));
}

#[test]
fn a_journal_without_a_manifest_is_reconstructed_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    rotated_journal(dir.path());
    // What a journal written before the manifest existed looks like.
    let strip = |dir: &Path| {
        let db = raw_active(dir);
        db.open_tree("meta").unwrap().remove("manifest").unwrap();
        db.flush().unwrap();
    };
    strip(dir.path());
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    assert!(j.open_report().manifest_reconstructed);
    assert!(j.open_report().missing_segments.is_empty());
    assert_eq!(j.verify().unwrap().problem, None);
    drop(j);
    let j = Journal::open(dir.path(), small_segments()).unwrap();
    assert!(!j.open_report().manifest_reconstructed, "not stored");
    drop(j);
    // Without a manifest, what must have been sealed is still known (from the pruning anchor to
    // the active generation's first record): a deleted archive is named.
    strip(dir.path());
    std::fs::remove_dir_all(dir.path().join(ARCHIVE_DIR)).unwrap();
    assert!(matches!(
        Journal::open(dir.path(), small_segments()),
        Err(JournalError::LostRecords {
            first: 1,
            durable: 80
        })
    ));
}

fn write_n(dir: &Path, n: u64) {
    let j = Journal::open(dir, JournalOptions::default()).unwrap();
    append_durable(&j, n);
}

fn watermark_path(dir: &Path) -> std::path::PathBuf {
    dir.join(WATERMARK_FILE)
}

#[test]
fn the_watermark_is_checksummed_and_a_bad_one_is_a_finding() {
    for (name, damage) in [
        ("deleted", None),
        ("emptied", Some(Vec::new())),
        (
            "garbled",
            Some(b"lunledger-durable 0000000000000000000x\n".to_vec()),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_n(dir.path(), 10);
        let text = std::fs::read_to_string(watermark_path(dir.path())).unwrap();
        assert!(
            text.starts_with("lunledger-durable 00000000000000000010 "),
            "{text:?}"
        );
        match damage {
            None => std::fs::remove_file(watermark_path(dir.path())).unwrap(),
            Some(b) => std::fs::write(watermark_path(dir.path()), b).unwrap(),
        }
        // The newest records dropped (as sled's prefix recovery would): undetectable now, but
        // the open says why.
        {
            let db = sled::open(dir.path().join(SLED_DIR)).unwrap();
            let t = db.open_tree("records").unwrap();
            t.remove(10u64.to_be_bytes()).unwrap();
            t.remove(9u64.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        assert!(
            j.open_report().watermark.is_some(),
            "{name}: {:?}",
            j.open_report()
        );
        let p = j.verify().unwrap().problem.expect(name);
        assert_eq!(p.kind, ProblemKind::Watermark, "{name}: {p:?}");
    }
}

#[test]
fn a_watermark_with_a_wrong_checksum_is_a_finding() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 10);
    let text = std::fs::read_to_string(watermark_path(dir.path())).unwrap();
    // Rewritten to a lower value, checksum kept.
    let forged = text.replacen("00000000000000000010", "00000000000000000004", 1);
    std::fs::write(watermark_path(dir.path()), forged).unwrap();
    let j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    let w = j.open_report().watermark.clone().expect("not found");
    assert!(w.contains("checksum"), "{w}");
    assert_eq!(
        j.verify().unwrap().problem.map(|p| p.kind),
        Some(ProblemKind::Watermark)
    );
}

#[test]
fn a_new_journal_and_an_old_format_watermark_are_not_findings() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    assert_eq!(j.open_report().watermark, None);
    // A new journal starts with an (empty) manifest of its own: nothing was reconstructed.
    assert!(!j.open_report().manifest_reconstructed);
    drop(j);
    write_n(dir.path(), 5);
    // The format journals wrote before the checksum: read, and rewritten at the next flush.
    std::fs::write(
        watermark_path(dir.path()),
        "lunledger-durable 00000000000000000005\n",
    )
    .unwrap();
    let j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    assert_eq!(j.open_report().watermark, None);
    assert_eq!(j.verify().unwrap().problem, None);
    append_durable(&j, 1);
    drop(j);
    let text = std::fs::read_to_string(watermark_path(dir.path())).unwrap();
    assert!(
        text.starts_with("lunledger-durable 00000000000000000006 "),
        "{text:?}"
    );
}

#[test]
fn records_lost_below_the_newest_checkpoint_are_refused_without_a_watermark() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        append_durable(&j, 20);
        j.write_checkpoint(15, b"state".to_vec()).unwrap();
    }
    std::fs::remove_file(watermark_path(dir.path())).unwrap();
    {
        let db = sled::open(dir.path().join(SLED_DIR)).unwrap();
        let t = db.open_tree("records").unwrap();
        for seq in 13..=20u64 {
            t.remove(seq.to_be_bytes()).unwrap();
        }
        db.flush().unwrap();
    }
    match Journal::open(dir.path(), JournalOptions::default()) {
        Err(JournalError::LostRecords { first, durable }) => {
            assert_eq!((first, durable), (13, 15))
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(j) => panic!(
            "records 13..=15 (checkpointed) are gone and the open went on: {:?}",
            j.open_report()
        ),
    }
}

#[test]
fn a_checkpoint_past_the_last_record_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let hash;
    {
        let j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        append_durable(&j, 10);
        j.write_checkpoint(10, b"state".to_vec()).unwrap();
        hash = j.stored_hash(10).unwrap().unwrap();
    }
    {
        let db = sled::open(dir.path().join(SLED_DIR)).unwrap();
        let mut v = hash.to_vec();
        v.extend_from_slice(b"forged");
        db.open_tree("checkpoints")
            .unwrap()
            .insert(1000u64.to_be_bytes(), v)
            .unwrap();
        db.flush().unwrap();
    }
    match Journal::open(dir.path(), JournalOptions::default()) {
        Err(JournalError::LostRecords { first, durable }) => {
            assert_eq!((first, durable), (11, 1000))
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(j) => panic!(
            "a checkpoint at 1000 over records ending at 10 was accepted (next seq {})",
            j.last_seq() + 1
        ),
    }
    let j = Journal::open(
        dir.path(),
        JournalOptions {
            accept_lost_records: true,
            ..JournalOptions::default()
        },
    )
    .unwrap();
    let v = j.verify().unwrap();
    assert!(
        v.problems
            .iter()
            .any(|p| p.kind == ProblemKind::Checkpoint { at_seq: 1000 }),
        "{v:?}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// The measurement: with the watermark gone, a flipped byte in sled's log (after which
/// sled keeps only the prefix before it) must never pass as an intact journal.
#[test]
fn flips_in_sleds_log_never_pass_as_intact_without_a_watermark() {
    let base = tempfile::tempdir().unwrap();
    let pristine = base.path().join("pristine");
    {
        let j = Journal::open(&pristine, JournalOptions::default()).unwrap();
        append_durable(&j, 80);
    }
    std::fs::remove_file(watermark_path(&pristine)).unwrap();
    let db = pristine.join(SLED_DIR).join(SLED_DATA_FILE);
    let len = std::fs::metadata(&db).unwrap().len();
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut lossy = 0;
    for case in 0..80 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let off = (rng % len) as usize;
        let d = base.path().join(format!("case{case}"));
        copy_dir(&pristine, &d);
        let target = d.join(SLED_DIR).join(SLED_DATA_FILE);
        let mut bytes = std::fs::read(&target).unwrap();
        bytes[off] ^= 0x20;
        std::fs::write(&target, &bytes).unwrap();
        let opts = JournalOptions {
            accept_lost_records: true,
            ..JournalOptions::default()
        };
        if let Ok(j) = Journal::open(&d, opts) {
            let intact = j.read_from(1).filter(|r| r.is_ok()).count() == 80;
            let v = j.verify().unwrap();
            if !intact {
                lossy += 1;
                assert!(
                    v.problem.is_some(),
                    "flip at {off}: records lost and verify says OK"
                );
            }
            assert!(
                v.problems.iter().any(|p| p.kind == ProblemKind::Watermark),
                "flip at {off}: {v:?}"
            );
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
    println!("{lossy} of 80 flips lost records; none passed as intact");
}
