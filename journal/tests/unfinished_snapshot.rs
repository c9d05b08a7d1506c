//! sled 0.34 writes a snapshot on open as `snap.<lsn>.generating`, syncs it, then renames it. A
//! process killed before the rename leaves an unfinished file that sled's next open picks as the
//! newest snapshot and refuses as corrupt (sled issues #1527, #1533) — seen here in the kill -9
//! harness. The journal sets such files aside (kept, not deleted) and opens.

use lunledger_journal::{Journal, JournalOptions};
use lunledger_model::Event;

#[test]
fn an_unfinished_sled_snapshot_is_set_aside_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        for _ in 0..50 {
            j.append(1, Event::OpFinished).unwrap();
        }
        j.wait_durable_blocking(50).unwrap();
    }
    // What a kill during snapshot generation leaves behind: a short, unsynced file.
    let unfinished = dir
        .path()
        .join("sled")
        .join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&unfinished, b"torn").unwrap();
    let j = Journal::open(dir.path(), JournalOptions::default())
        .unwrap_or_else(|e| panic!("open refused after an interrupted snapshot: {e}"));
    assert_eq!(j.read_from(1).count(), 50);
    assert!(j.verify().unwrap().problem.is_none());
    assert!(
        !unfinished.exists(),
        "the unfinished snapshot is still where sled reads it"
    );
    assert_eq!(j.open_report().snapshots_set_aside.len(), 1);
    assert!(
        j.open_report().snapshots_set_aside[0].exists(),
        "the set-aside file was deleted"
    );
}
