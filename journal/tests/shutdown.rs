//! Dropping the last handle flushes and stops the writer thread (its own test binary, so no
//! other journal's writer is running).

use lunledger_journal::*;
use lunledger_model::*;

fn writer_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim() == "journal-writer")
        .count()
}

/// The thread names itself once running, so allow it a moment.
fn settle(want: usize) -> usize {
    let start = std::time::Instant::now();
    loop {
        let n = writer_threads();
        if n == want || start.elapsed() > std::time::Duration::from_secs(2) {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn drop_flushes_and_stops_the_writer_thread() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(writer_threads(), 0);
    let j = Journal::open(
        dir.path(),
        JournalOptions {
            flush_every_ms: None, // no background flush: only Drop can make the record durable
            ..JournalOptions::default()
        },
    )
    .unwrap();
    assert_eq!(settle(1), 1);
    let clone = j.clone();
    j.append(1, Event::OpFinished).unwrap();
    drop(j);
    assert_eq!(writer_threads(), 1, "a clone still holds the journal");
    let it = clone.read_from(0);
    drop(clone);
    let t0 = std::time::Instant::now();
    assert_eq!(writer_threads(), 1, "an iterator still holds the journal");
    drop(it);
    // Dropping the last holder waits for sled to let go of its files, which is quick.
    assert!(t0.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(settle(0), 0, "writer thread not stopped");
    let j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    assert_eq!(j.last_seq(), 1);
    assert_eq!(j.durable_seq(), 1);
}
