//! Resumable audit streams (issue #18): a log shipper resumes after its own restart without gaps
//! or duplicates, and notices a journal that is not the one it left (replaced, restored from an
//! older copy, pruned past its position).

use lunledger_test_support as common;

use common::cli::{cli, small_config as config, text};
use lunledger::backend::sim::SimVm;
use lunledger::journal::Retention;
use lunledger::{DiskRequest, Manager, ManagerOptions, MountConfig};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// Sequence numbers of the records a `--json` replay printed (cursor lines left out).
fn seqs(o: &Output) -> Vec<u64> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["seq"].as_u64())
        .collect()
}

/// Opens the journal, adds and releases `cycles` disks, closes it; returns the last seq.
fn work(dir: &Path, cycles: usize, opts: impl Fn() -> ManagerOptions) -> u64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let vm = SimVm::new();
        let m = Manager::open_with(dir, opts(), vm.host_backend(), vm.guest_backend())
            .await
            .unwrap();
        for i in 0..cycles {
            let h = m
                .add_virtual_disk(
                    DiskRequest::new(format!("/img/{i}.vhdx")).mount(MountConfig::default()),
                )
                .await
                .unwrap();
            h.release().await.unwrap();
        }
        let last = m.journal().last_seq();
        m.close().await.unwrap();
        last
    })
}

fn plain() -> ManagerOptions {
    ManagerOptions::new(config())
}

#[test]
fn a_shipper_resumes_without_gaps_or_duplicates() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("journal");
    let file = root.path().join("cursor");
    let (d, f) = (dir.to_str().unwrap(), file.to_str().unwrap());
    let mut seen = Vec::new();
    let mut last = 0;
    for round in 0..4 {
        last = work(&dir, 2 + round, plain);
        let o = cli(&["replay", d, "--json", "--cursor-file", f]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let got = seqs(&o);
        assert!(!got.is_empty(), "round {round}: nothing new");
        seen.extend(got);
    }
    // Every record once, in order, through the last (closing may journal one after `last`).
    let end = *seen.last().unwrap();
    assert!(end >= last, "stopped at {end} before {last}");
    assert_eq!(seen, (1..=end).collect::<Vec<_>>(), "gaps or duplicates");
    // Nothing new: nothing printed, and the cursor stays.
    let before = std::fs::read_to_string(&file).unwrap();
    let o = cli(&["replay", d, "--json", "--cursor-file", f]);
    assert_eq!(
        (o.status.code(), seqs(&o).len()),
        (Some(0), 0),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    // --show-cursor prints the same cursor; --after-cursor with it prints nothing.
    let o = cli(&["replay", d, "--show-cursor"]);
    let shown = text(&o)
        .lines()
        .find_map(|l| l.strip_prefix("-- cursor: ").map(str::to_owned))
        .expect("a cursor line");
    assert_eq!(shown, before.trim());
    let o = cli(&["replay", d, "--json", "--after-cursor", &shown]);
    assert_eq!(
        (o.status.code(), seqs(&o).len()),
        (Some(0), 0),
        "{}",
        text(&o)
    );
}

#[test]
fn a_replaced_or_restored_journal_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let b = root.path().join("b");
    let older = root.path().join("older");
    work(&a, 2, plain);
    let st = Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&older)
        .status()
        .unwrap();
    assert!(st.success());
    work(&a, 3, plain);
    work(&b, 5, plain);
    let o = cli(&["replay", a.to_str().unwrap(), "--show-cursor"]);
    let c = text(&o)
        .lines()
        .find_map(|l| l.strip_prefix("-- cursor: ").map(str::to_owned))
        .unwrap();
    // Another journal of the same length: the record at the cursor is not the same one.
    let o = cli(&["replay", b.to_str().unwrap(), "--after-cursor", &c]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("cannot resume after cursor"),
        "{}",
        text(&o)
    );
    // An older copy of the same journal ends before the cursor.
    let o = cli(&["replay", older.to_str().unwrap(), "--after-cursor", &c]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("ends at seq"), "{}", text(&o));
    // A cursor that does not parse is a usage error.
    let o = cli(&["replay", a.to_str().unwrap(), "--after-cursor", "12:xyz"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn a_journal_pruned_past_the_cursor_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("journal");
    let d = dir.to_str().unwrap();
    work(&dir, 1, plain);
    let o = cli(&["replay", d, "--show-cursor"]);
    let c = text(&o)
        .lines()
        .find_map(|l| l.strip_prefix("-- cursor: ").map(str::to_owned))
        .unwrap();
    let pruning = || {
        let mut o = ManagerOptions::new(config());
        o.checkpoint_every = 10;
        o.segment_records = 10;
        o.retention = Some(Retention {
            keep_records: 5,
            keep_for: std::time::Duration::ZERO,
        });
        o
    };
    work(&dir, 12, pruning);
    let o = cli(&["replay", d, "--after-cursor", &c]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not stored"), "{}", text(&o));
}
