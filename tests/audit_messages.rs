//! What the audit commands say (issue #12, items 6 and 8): no false alarm on a live copy, no
//! silence over lost durable records or another program's database, journal text shown with its
//! control bytes escaped, and filters that cannot match refused instead of printing nothing.

use lunledger_test_support as common;

use common::cli::{cli, small_config as config, text};
use lunledger::backend::sim::SimVm;
use lunledger::{DiskRequest, Manager, MountConfig};
use std::path::Path;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A closed journal whose disk paths and owner hold terminal escapes and a newline.
fn journal_with_hostile_text(dir: &Path) {
    rt().block_on(async {
        let vm = SimVm::new();
        let m = Manager::open(dir, config(), vm.host_backend(), vm.guest_backend())
            .await
            .unwrap();
        let _h = m
            .add_virtual_disk(
                DiskRequest::new("/img/\x1b[2J\x1b[31mevil\x07.vhdx")
                    .read_only(true)
                    .mount(MountConfig::default())
                    .owner("c1\njournal OK"),
            )
            .await
            .unwrap();
        m.close().await.unwrap();
    });
}

#[test]
fn journal_text_is_shown_with_control_bytes_escaped() {
    let dir = tempfile::tempdir().unwrap();
    journal_with_hostile_text(dir.path());
    let d = dir.path().to_str().unwrap();
    for args in [
        vec!["replay", d],
        vec!["replay", d, "--at", "100"],
        vec!["status", d],
        vec!["recover", d, "--dry-run"],
    ] {
        let o = cli(&args);
        let out = text(&o);
        assert!(
            !out.contains('\x1b') && !out.contains('\x07'),
            "{args:?} printed raw control bytes: {out:?}"
        );
        assert!(
            !out.lines().any(|l| l.trim() == "journal OK"),
            "{args:?}: a newline from the journal made a line of its own: {out}"
        );
    }
    // The replay shows the path, escaped, so an operator can still read it.
    let out = text(&cli(&["replay", d]));
    assert!(out.contains("\\u{1b}[2J"), "{out}");
    // Programs get the exact bytes, JSON-escaped.
    let out = text(&cli(&["replay", d, "--json"]));
    assert!(out.contains("\\u001b[2J"), "{out}");
}

#[test]
fn replay_and_status_fail_on_lost_durable_records() {
    let dir = tempfile::tempdir().unwrap();
    journal_with_hostile_text(dir.path());
    let last = {
        let j = lunledger::journal::Journal::open(dir.path(), Default::default()).unwrap();
        j.last_seq()
    };
    // Wait out sled's lock release, then drop the two newest (durable) records, as sled's
    // silent prefix recovery of a damaged log would.
    std::thread::sleep(std::time::Duration::from_millis(200));
    {
        let db = sled::open(dir.path().join("sled")).unwrap();
        let t = db.open_tree("records").unwrap();
        t.remove(last.to_be_bytes()).unwrap().unwrap();
        t.remove((last - 1).to_be_bytes()).unwrap().unwrap();
        db.flush().unwrap();
    }
    let d = dir.path().to_str().unwrap();
    for args in [
        vec!["replay", d],
        vec!["status", d],
        vec!["status", d, "--json"],
    ] {
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("durable"), "{args:?}: {}", text(&o));
    }
}

#[test]
fn another_programs_sled_database_is_not_a_journal() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path().join("sled")).unwrap();
        db.insert(b"user:1", b"alice").unwrap();
        db.open_tree("sessions")
            .unwrap()
            .insert(b"s", b"x")
            .unwrap();
        db.flush().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let d = dir.path().to_str().unwrap();
    for args in [vec!["verify", d], vec!["status", d], vec!["replay", d]] {
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("not a lunledger journal"),
            "{args:?}: {}",
            text(&o)
        );
    }
}

#[test]
fn filters_that_cannot_match_are_usage_errors_and_relative_at_works() {
    let dir = tempfile::tempdir().unwrap();
    journal_with_hostile_text(dir.path());
    let d = dir.path().to_str().unwrap();
    let o = cli(&["replay", d, "--from-seq", "100", "--to-seq", "5"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--from-seq"), "{}", text(&o));
    let o = cli(&["replay", d, "--since", "-1m", "--until", "-2h"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // The help suggests relative times; --at takes them like --since does.
    let o = cli(&["replay", d, "--at", "-10m"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("State as of"), "{}", text(&o));
}

/// `verify --copy` on a journal being written: the copy is consistent, so no false alarm.
#[test]
fn verify_copy_of_a_live_journal_raises_no_false_alarm() {
    const AUDITS: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let vm = SimVm::new();
    let m = rt
        .block_on(Manager::open(
            dir.path(),
            config(),
            vm.host_backend(),
            vm.guest_backend(),
        ))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let (m, stop) = (m.clone(), stop.clone());
        rt.spawn(async move {
            let mut cycles = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let h = m
                    .add_virtual_disk(
                        DiskRequest::new("/img/churn.vhdx")
                            .read_only(true)
                            .mount(MountConfig::default()),
                    )
                    .await
                    .unwrap();
                h.release().await.unwrap();
                cycles += 1;
            }
            cycles
        })
    };
    let d = dir.path().to_str().unwrap();
    let mut alarms = Vec::new();
    for _ in 0..AUDITS {
        let o = cli(&["verify", d, "--copy"]);
        if o.status.code() != Some(0) {
            alarms.push(text(&o));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let cycles = rt.block_on(worker).unwrap();
    rt.block_on(m.close()).unwrap();
    assert!(cycles > 10, "the workload barely ran: {cycles} cycles");
    assert!(
        alarms.is_empty(),
        "{} of {AUDITS} live verifies raised an alarm:\n{}",
        alarms.len(),
        alarms.join("\n")
    );
}

/// The keyed seal and the anchor through the CLI: a forged last record (re-framed, so the chain
/// and the record's check still hold) passes a plain verify, as docs/testing.md says, and is
/// caught by `--key-file` and by `--expect-head`.
#[test]
fn verify_with_key_and_anchor_catches_a_forged_record() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("journal");
    let key_file = root.path().join("seal.key");
    std::fs::write(&key_file, format!("{}\n", "ab".repeat(32))).unwrap();
    let key = lunledger::journal::SealKey::from_file(&key_file).unwrap();
    rt().block_on(async {
        let vm = SimVm::new();
        let mut opts = lunledger::ManagerOptions::new(config());
        opts.seal_key = Some(key);
        let m = Manager::open_with(&dir, opts, vm.host_backend(), vm.guest_backend())
            .await
            .unwrap();
        let h = m
            .add_virtual_disk(DiskRequest::new("/img/a.vhdx").mount(MountConfig::default()))
            .await
            .unwrap();
        h.release().await.unwrap();
        m.close().await.unwrap();
    });
    let d = dir.to_str().unwrap();
    let k = key_file.to_str().unwrap();
    let o = cli(&["verify", d, "--key-file", k]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let head = text(&o)
        .lines()
        .find_map(|l| l.strip_prefix("head: ").map(str::to_owned))
        .expect("verify prints the head");
    let o = cli(&["verify", d, "--key-file", k, "--expect-head", &head]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Forge the last record: a new event, framed and checked, linked to the one before.
    std::thread::sleep(std::time::Duration::from_millis(200));
    {
        let db = sled::open(dir.join("sled")).unwrap();
        let recs = db.open_tree("records").unwrap();
        let (k_last, v) = recs.last().unwrap().unwrap();
        let mut rec = lunledger::journal::decode_record(&v).unwrap();
        rec.event = lunledger::model::Event::OpFailed {
            error: "forged".into(),
        };
        recs.insert(k_last, lunledger::journal::encode_record(&rec).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Without key or anchor the forgery passes: the chain catches accidents only.
    let o = cli(&["verify", d]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = cli(&["verify", d, "--key-file", k]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("sealed head"), "{}", text(&o));
    let o = cli(&["verify", d, "--expect-head", &head]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("anchored"), "{}", text(&o));
    // Another key is told apart from a forgery of the journal's own.
    let other = root.path().join("other.key");
    std::fs::write(&other, [9u8; 32]).unwrap();
    let o = cli(&["verify", d, "--key-file", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("another key"), "{}", text(&o));
    // A key file that is not a key, and an anchor that does not parse, are usage errors.
    std::fs::write(&other, b"not a key").unwrap();
    let o = cli(&["verify", d, "--key-file", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = cli(&["verify", d, "--expect-head", "12:xyz"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
