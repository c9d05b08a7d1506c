//! The journal's own storage fails (issue #14): every write and sync site of ours, and sled's
//! own failpoints, fail at every position of a workload of durable appends, checkpoints and
//! rotations, in both durability modes and for each OS error a full or failing disk gives.
//! After each fault:
//! - the call that met it gets a typed error ([`JournalError::Storage`] naming the action, the
//!   path and the OS error, for our sites), never a panic, never a hang;
//! - the journal stops: nothing more is appended or made durable;
//! - reopened on a healthy disk, every record whose durable wait returned is there, in order,
//!   the chain verifies, and the journal takes appends again.
//!
//! Needs the `testing` feature (fault injection): `cargo test -p lunledger-journal --features
//! testing --test storage_faults`.

use lunledger_journal::faults::{self, Site};
use lunledger_journal::*;
use lunledger_model::*;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// Faults are armed process-wide: the tests here run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Longer than any healthy step here: a step that takes longer is a hang.
const HANG: Duration = Duration::from_secs(30);

const ERRNOS: [(i32, &str); 4] = [
    (libc::ENOSPC, "No space left on device"),
    (libc::EIO, "Input/output error"),
    (libc::EROFS, "Read-only file system"),
    (libc::EDQUOT, "Disk quota exceeded"),
];

/// sled's own failpoints on the paths a running journal takes.
const SLED_POINTS: [&str; 8] = [
    "buffer write",
    "buffer write post",
    "segment initial free zero",
    "write_config bytes",
    "write_config post",
    "snap write",
    "snap write mv",
    "file truncation",
];

fn opts(durability: Durability) -> JournalOptions {
    JournalOptions {
        durability,
        segment_records: 8,
        // No background flushes: every write reaches the disk at a durable point of ours.
        flush_every_ms: None,
        ..JournalOptions::default()
    }
}

fn reopen(dir: &Path, o: JournalOptions) -> Journal {
    let mut last = None;
    for _ in 0..300 {
        match Journal::open(dir, o.clone()) {
            Ok(j) => return j,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("reopen: {last:?}");
}

/// How the workload ended.
struct Run {
    acknowledged: Vec<u64>,
    error: Option<JournalError>,
    stopped: bool,
}

/// Durable appends with a checkpoint every 4 records (a rotation every 8), until `ops` steps
/// or the first error; then checks that the journal stopped.
fn workload(j: &Journal, ops: u64) -> Run {
    let mut acknowledged = Vec::new();
    let mut error = None;
    for i in 0..ops {
        let step = (|| -> Result<u64, JournalError> {
            let seq = j.append(
                i,
                Event::OpFailed {
                    error: format!("record {i}"),
                },
            )?;
            j.wait_durable_blocking(seq)?;
            if seq % 4 == 0 {
                j.write_checkpoint(seq, vec![0; 16])?;
            }
            Ok(seq)
        })();
        match step {
            Ok(seq) => acknowledged.push(seq),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    // Fail-stop: after a storage failure nothing more becomes durable.
    let stopped = error.is_none()
        || match j.append(999, Event::OpFinished) {
            Err(_) => true,
            Ok(seq) => j.wait_durable_blocking(seq).is_err(),
        };
    Run {
        acknowledged,
        error,
        stopped,
    }
}

/// What one (fault, position) pair showed.
enum Outcome {
    /// The fault fired: error, stop and recovery as promised.
    Held,
    /// The workload never reached the site.
    NotReached,
}

fn one_case(
    dir: &Path,
    mode: Durability,
    arm: &dyn Fn(),
    expect_errno: Option<(i32, &str)>,
) -> Result<Outcome, String> {
    // A journal with history in segments and sled before the fault is armed.
    {
        let j = reopen(dir, opts(mode));
        let run = workload(&j, 10);
        if run.error.is_some() {
            return Err(format!("healthy warm-up failed: {:?}", run.error));
        }
    }
    let j = reopen(dir, opts(mode));
    let before = j.last_seq();
    arm();
    let run = workload(&j, 20);
    faults::disarm();
    drop(j);
    let Some(err) = run.error else {
        return Ok(Outcome::NotReached);
    };
    if !run.stopped {
        return Err(format!("the journal went on after {err}"));
    }
    if let Some((errno, text)) = expect_errno {
        match &err {
            JournalError::Storage { source, .. } if source.raw_os_error() == Some(errno) => {}
            other => return Err(format!("expected a storage error ({errno}), got {other:?}")),
        }
        let msg = err.to_string();
        if !msg.contains(text) || !msg.contains(" while ") || !msg.contains(" in /") {
            return Err(format!("the error does not say what, where and why: {msg}"));
        }
    }
    // The fault is gone: reopen, check, append.
    let o = JournalOptions {
        accept_lost_records: false,
        ..opts(mode)
    };
    let j = reopen(dir, o);
    let recs: Vec<Record> = j
        .read_from(1)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading after the fault: {e}"))?;
    let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
    if seqs != (1..=seqs.len() as u64).collect::<Vec<_>>() {
        return Err("records out of order or missing after reopen".into());
    }
    if let Some(lost) = run.acknowledged.iter().find(|s| !seqs.contains(s)) {
        return Err(format!("acknowledged record {lost} is gone"));
    }
    if (seqs.len() as u64) < before {
        return Err(format!(
            "{} records before the fault, {} after",
            before,
            seqs.len()
        ));
    }
    if let Some(p) = j.verify().map_err(|e| e.to_string())?.problem {
        return Err(format!("verify after the fault: {p:?}"));
    }
    let seq = j
        .append(0, Event::OpFinished)
        .map_err(|e| format!("append after the fault: {e}"))?;
    j.wait_durable_blocking(seq)
        .map_err(|e| format!("durable append after the fault: {e}"))?;
    Ok(Outcome::Held)
}

fn bounded(
    f: impl FnOnce() -> Result<Outcome, String> + Send + 'static,
) -> Result<Outcome, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .unwrap_or_else(|p| Err(format!("panic: {p:?}")));
        let _ = tx.send(r);
    });
    rx.recv_timeout(HANG)
        .unwrap_or_else(|_| Err(format!("no answer within {HANG:?}")))
}

/// Counts of a fault campaign, by fault.
#[derive(Default)]
struct Tally {
    pairs: u32,
    held: u32,
    not_reached: u32,
    failures: Vec<String>,
    /// (mode, fault) -> how often it fired.
    fired: std::collections::BTreeMap<String, u32>,
}

impl Tally {
    fn add(&mut self, key: String, what: String, r: Result<Outcome, String>) {
        self.pairs += 1;
        let fired = self.fired.entry(key.clone()).or_default();
        match r {
            Ok(Outcome::Held) => {
                self.held += 1;
                *fired += 1;
            }
            Ok(Outcome::NotReached) => self.not_reached += 1,
            Err(e) => self.failures.push(format!("{key} {what}: {e}")),
        }
    }
}

#[test]
fn every_storage_fault_stops_the_journal_and_loses_nothing_acknowledged() {
    let _serial = serial();
    let mut t = Tally::default();
    for mode in [Durability::Flush, Durability::Sync] {
        // Our own sites, each failing at its 1st to 6th call, with each OS error.
        for site in Site::ALL {
            if site == Site::LockFile || site == Site::Watermark {
                continue; // open-time and best-effort sites: tested below
            }
            for skip in 0..6 {
                for (errno, text) in ERRNOS {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().to_path_buf();
                    let arm = move || faults::arm(site, errno, skip);
                    let r = bounded(move || one_case(&path, mode, &arm, Some((errno, text))));
                    t.add(
                        format!("{mode:?} {site:?}"),
                        format!("skip {skip} {text}"),
                        r,
                    );
                }
            }
        }
        // sled's failpoints: sled reports its own error (FailPoint or I/O) and poisons the db.
        for point in SLED_POINTS {
            for skip in 0..6 {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().to_path_buf();
                let arm = move || faults::arm_sled(point, skip);
                let r = bounded(move || one_case(&path, mode, &arm, None));
                t.add(
                    format!("{mode:?} sled {point:?}"),
                    format!("skip {skip}"),
                    r,
                );
            }
        }
    }
    let Tally {
        pairs,
        held,
        not_reached,
        failures,
        fired,
    } = t;
    println!(
        "storage faults: {pairs} (fault, position) pairs: {held} fired and held, {not_reached} not reached, {} failed",
        failures.len()
    );
    for (k, n) in &fired {
        println!("  {k:<40} fired {n}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every site on the durable path fired somewhere (fdatasync only exists in Sync mode; sled's
    // snapshot and truncation points run at open and close, not at every position).
    for mode in ["Flush", "Sync"] {
        for site in [
            "SegmentWrite",
            "CurrentReplace",
            "CheckpointWrite",
            "sled \"buffer write\"",
        ] {
            let k = format!("{mode} {site}");
            assert!(fired.get(&k).copied().unwrap_or(0) > 0, "{k} never fired");
        }
    }
    assert!(
        fired.get("Sync DataSync").copied().unwrap_or(0) > 0,
        "fdatasync never failed"
    );
}

#[test]
fn a_lock_file_that_cannot_be_created_is_a_clear_error_at_open() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    faults::arm(Site::LockFile, libc::EROFS, 0);
    let r = Journal::open(dir.path(), JournalOptions::default());
    faults::disarm();
    match r {
        Err(e @ JournalError::Storage { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("Read-only file system") && m.contains("lock file"),
                "{m}"
            );
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
    Journal::open(dir.path(), JournalOptions::default()).unwrap();
}

#[test]
fn a_failed_watermark_write_does_not_lose_records() {
    let _serial = serial();
    // The watermark is written after the flush it describes: failing it weakens only the
    // detection of lost records, and must not stop or lose anything.
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), opts(Durability::Flush)).unwrap();
    faults::arm(Site::Watermark, libc::ENOSPC, 0);
    let run = workload(&j, 10);
    faults::disarm();
    assert!(run.error.is_none(), "{:?}", run.error);
    drop(j);
    let j = reopen(dir.path(), opts(Durability::Flush));
    assert_eq!(j.last_seq(), 10);
}

#[test]
fn a_new_journal_whose_watermark_cannot_be_written_is_not_created() {
    let _serial = serial();
    // The watermark of a new journal comes before its store: were the store created first, a
    // process killed (or a write failing) between the two would leave a journal that every
    // later open and verify reports as having lost its watermark.
    let dir = tempfile::tempdir().unwrap();
    faults::arm(Site::Watermark, libc::ENOSPC, 0);
    let r = Journal::open(dir.path(), opts(Durability::Flush));
    faults::disarm();
    match r {
        Err(e) => assert_eq!(e.os_error(), Some(libc::ENOSPC), "{e}"),
        Ok(_) => panic!("a new journal without its watermark was created"),
    }
    let j = reopen(dir.path(), opts(Durability::Flush));
    assert_eq!(j.verify().unwrap().problem, None);
    assert!(workload(&j, 3).error.is_none());
    drop(j);
    let j = reopen(dir.path(), opts(Durability::Flush));
    assert_eq!(j.last_seq(), 3);
    assert_eq!(j.verify().unwrap().problem, None);
}

#[test]
fn sled_failing_at_open_is_a_clear_error_and_the_journal_opens_once_it_is_gone() {
    let _serial = serial();
    let mut fired = 0;
    for point in SLED_POINTS {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = reopen(dir.path(), opts(Durability::Flush));
            assert!(workload(&j, 10).error.is_none());
        }
        std::thread::sleep(Duration::from_millis(50));
        faults::arm_sled(point, 0);
        let path = dir.path().to_path_buf();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| {
                Journal::open(&path, opts(Durability::Flush))
                    .err()
                    .map(|e| e.to_string())
            });
            let _ = tx.send(r);
        });
        let r = rx
            .recv_timeout(HANG)
            .unwrap_or_else(|_| panic!("{point}: open hung"));
        faults::disarm();
        match r {
            Err(_) => panic!("{point}: open panicked"),
            Ok(Some(msg)) => {
                fired += 1;
                assert!(msg.contains("opening the journal"), "{point}: {msg}");
            }
            Ok(None) => {}
        }
        let j = reopen(dir.path(), opts(Durability::Flush));
        assert_eq!(j.last_seq(), 10, "{point}");
        assert!(j.verify().unwrap().problem.is_none(), "{point}");
    }
    println!(
        "sled failpoints at open: {fired} of {} fired",
        SLED_POINTS.len()
    );
    assert!(fired > 0, "no sled failpoint fired at open");
}
