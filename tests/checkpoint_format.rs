//! The checkpoint's persisted form: every format version decodes to the state it was written
//! from, the current one is frozen byte for byte, and damage is a typed error, never a state.
//!
//! The states come from folding the journal written by an older build
//! (`tests/fixtures/journal-a62731e`), whose own checkpoints are format 0 (no header).

use lunledger_test_support as common;

use lunledger::journal::{Journal, JournalOptions, Record};
use lunledger::recovery::{decode_checkpoint, encode_checkpoint, PersistError, State};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The older build's journal (opened on a copy: opening writes) and all its records.
fn older_journal() -> (tempfile::TempDir, Journal, Vec<Record>) {
    let tmp = common::tempdir();
    common::copy_dir(&fixtures().join("journal-a62731e/journal"), tmp.path());
    let j = Journal::open(tmp.path(), JournalOptions::default()).unwrap();
    let records = j.read_from(1).collect::<Result<Vec<_>, _>>().unwrap();
    (tmp, j, records)
}

/// A state with something of everything: attachments, mounts, handles, an operation in flight
/// and counters (the fold of the older journal's first 24 records).
fn busy_state(records: &[Record]) -> State {
    let s = State::fold(records[..24].iter()).unwrap();
    assert!(
        !s.attachments.is_empty() && !s.mounts.is_empty() && !s.handles.is_empty(),
        "the fixture state should hold attachments, mounts and handles"
    );
    assert!(
        !s.ops.is_empty(),
        "the fixture state should hold an operation in flight"
    );
    s
}

#[test]
fn the_current_format_is_frozen_and_decodes_to_its_state() {
    let (_tmp, _j, records) = older_journal();
    let state = busy_state(&records);
    let frozen = std::fs::read(fixtures().join("checkpoint-v2.bin")).unwrap();
    assert_eq!(
        encode_checkpoint(&state).unwrap(),
        frozen,
        "the persisted form changed: that is a new format version with its own fixture"
    );
    assert_eq!(decode_checkpoint(&frozen).unwrap(), state);
}

/// Format 1 (written before the configuration carried the guest OS) still decodes, as Linux.
#[test]
fn format_1_still_decodes_to_its_state() {
    let (_tmp, _j, records) = older_journal();
    let state = busy_state(&records);
    let frozen = std::fs::read(fixtures().join("checkpoint-v1.bin")).unwrap();
    assert_eq!(u16::from_be_bytes([frozen[4], frozen[5]]), 1);
    assert_eq!(decode_checkpoint(&frozen).unwrap(), state);
}

#[test]
fn format_0_checkpoints_of_an_older_build_are_migrated() {
    let (_tmp, j, records) = older_journal();
    let cps = j.checkpoints().unwrap();
    assert!(cps.len() >= 2, "the fixture has {} checkpoints", cps.len());
    for cp in cps {
        assert!(!cp.blob.starts_with(b"LLCP"), "format 0 has no header");
        let upto = records.iter().take_while(|r| r.seq <= cp.at_seq);
        let want = State::fold(upto).unwrap();
        assert_eq!(
            decode_checkpoint(&cp.blob).unwrap(),
            want,
            "at {}",
            cp.at_seq
        );
    }
}

#[test]
fn damaged_checkpoints_are_typed_errors() {
    let (_tmp, _j, records) = older_journal();
    let good = encode_checkpoint(&busy_state(&records)).unwrap();
    // Every single-byte change and every truncation is refused, whatever the byte.
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x41;
        match decode_checkpoint(&bad) {
            Err(
                PersistError::Checksum { .. }
                | PersistError::NewerFormat { .. }
                | PersistError::Decode { .. },
            ) => {}
            other => panic!("byte {i} changed: {other:?}"),
        }
    }
    for len in 0..good.len() {
        assert!(decode_checkpoint(&good[..len]).is_err(), "cut at {len}");
    }
    let mut newer = good.clone();
    newer[4..6].copy_from_slice(&3u16.to_be_bytes());
    assert_eq!(
        decode_checkpoint(&newer),
        Err(PersistError::NewerFormat { found: 3 })
    );
}

/// How `checkpoint-v<N>.bin` is made for the current format N. Run only when adding a format
/// version (never to make a failing fixture test pass); older fixtures stay as they are.
#[test]
#[ignore]
fn generate_current_format_fixture() {
    let (_tmp, _j, records) = older_journal();
    let bytes = encode_checkpoint(&busy_state(&records)).unwrap();
    let name = format!("checkpoint-v{}.bin", lunledger::recovery::FORMAT_VERSION);
    std::fs::write(fixtures().join(name), bytes).unwrap();
}
