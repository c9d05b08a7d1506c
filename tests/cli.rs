//! The `lunledger` CLI against journals made by real workloads: the manager drives a simulated
//! VM, is closed, then the binary runs. Expected results are computed here independently, from
//! the raw records (`Journal::read_from`) and the library's own fold.

use lunledger::backend::sim::{FaultPlan, SimOp, SimVm};
use lunledger::journal::{Journal, JournalOptions, Record};
use lunledger::model::{Event, HandleId, OpId, OpKind, Slot, Step, Target};
use lunledger::recovery::State;
use lunledger::{DiskRequest, Manager, MountConfig};
use lunledger_test_support::cli::small_config as config;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Output};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lunledger"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

async fn open(dir: &Path, vm: &SimVm) -> Manager {
    Manager::open(dir, config(), vm.host_backend(), vm.guest_backend())
        .await
        .unwrap()
}

fn ro_layer(p: &str, owner: &str) -> DiskRequest {
    DiskRequest::new(p)
        .read_only(true)
        .mount(MountConfig::default())
        .owner(owner)
}

/// Two owners sharing a layer, a scratch disk, an attach-only disk, a failed add (mount fault)
/// and a few releases; some handles stay live. The manager is closed on return.
async fn workload(dir: &Path) {
    let vm = SimVm::new();
    let m = open(dir, &vm).await;
    let a = m
        .add_virtual_disk(ro_layer("/img/layer.vhdx", "c1"))
        .await
        .unwrap();
    let _b = m
        .add_virtual_disk(ro_layer("/img/layer.vhdx", "c2"))
        .await
        .unwrap();
    let scratch = m
        .add_virtual_disk(
            DiskRequest::new("/scratch/c1.vhdx")
                .mount(MountConfig {
                    ensure_filesystem: true,
                    filesystem: "ext4".into(),
                    ..MountConfig::default()
                })
                .owner("c1"),
        )
        .await
        .unwrap();
    let attach_only = m
        .add_virtual_disk(DiskRequest::new("/img/c2-config.vhdx").owner("c2"))
        .await
        .unwrap();
    vm.set_faults(FaultPlan::new().fail_nth(SimOp::Mount, 1, "bad fs"));
    assert!(m
        .add_virtual_disk(ro_layer("/img/broken.vhdx", "c3"))
        .await
        .is_err());
    vm.clear_faults();
    scratch.release().await.unwrap();
    attach_only.release().await.unwrap();
    a.release().await.unwrap();
    let _blk = m
        .add_physical_disk(
            DiskRequest::new("/dev/vg0/c2-data")
                .mount(MountConfig {
                    block_dev: true,
                    ..MountConfig::default()
                })
                .owner("c2"),
        )
        .await
        .unwrap();
    m.close().await.unwrap();
}

/// Opens a closed journal, retrying for a moment (see [`raw_sled`] for why it can be busy).
fn open_journal(dir: &Path) -> Journal {
    let mut last = None;
    for _ in 0..100 {
        match Journal::open(dir, JournalOptions::default()) {
            Ok(j) => return j,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("opening the journal: {last:?}")
}

fn records(dir: &Path) -> Vec<Record> {
    let j = open_journal(dir);
    let r: Vec<Record> = j.read_from(1).collect::<Result<_, _>>().unwrap();
    drop(j);
    r
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Adds `/img/<i>.vhdx` read-only layers for `owners[i]`, releases the `release`-th, closes the
/// manager, and returns its last state.
fn journal_of_layers(
    dir: &Path,
    opts: lunledger::ManagerOptions,
    owners: &[&str],
    release: usize,
) -> State {
    let every = opts.checkpoint_every;
    rt().block_on(async {
        let vm = SimVm::new();
        let m = Manager::open_with(dir, opts, vm.host_backend(), vm.guest_backend())
            .await
            .unwrap();
        let mut held = Vec::new();
        for (i, owner) in owners.iter().enumerate() {
            held.push(
                m.add_virtual_disk(ro_layer(&format!("/img/{i}.vhdx"), owner))
                    .await
                    .unwrap(),
            );
            checkpoint_settled(&m, every).await;
        }
        held.remove(release).release().await.unwrap();
        let st = m.state();
        m.close().await.unwrap();
        st
    })
}

/// Waits (up to 10 s) until no checkpoint is due: an add takes its checkpoint in its own task
/// after the caller has its handle, and on a loaded machine those tasks can lag until close and
/// then take one checkpoint where the tests that count checkpoints expect one per interval.
async fn checkpoint_settled(m: &Manager, every: u64) {
    if every == 0 {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let j = m.journal();
    while std::time::Instant::now() < deadline {
        let at = j.latest_checkpoint().unwrap().map_or(0, |c| c.at_seq);
        if m.state().last_seq < at + every {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

fn made_journal() -> (tempfile::TempDir, Vec<Record>) {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(workload(dir.path()));
    let recs = records(dir.path());
    assert!(recs.len() > 40, "workload too small: {}", recs.len());
    (dir, recs)
}

fn seqs_of(lines: &[Value]) -> Vec<u64> {
    lines.iter().map(|v| v["seq"].as_u64().unwrap()).collect()
}

fn replay_seqs(dir: &Path, extra: &[&str]) -> Vec<u64> {
    let d = dir.to_str().unwrap();
    let mut args = vec!["replay", d, "--json"];
    args.extend_from_slice(extra);
    let o = cli(&args);
    assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    seqs_of(&json_lines(&o))
}

fn expect(recs: &[Record], keep: impl Fn(&Record) -> bool) -> Vec<u64> {
    recs.iter().filter(|r| keep(r)).map(|r| r.seq).collect()
}

/// What each operation and handle was about, computed from the raw records.
struct Facts {
    add_disk: HashMap<OpId, String>,
    add_owner: HashMap<OpId, Option<String>>,
    released: HashMap<OpId, HandleId>,
    issued_by: HashMap<HandleId, OpId>,
    handle_slot: HashMap<HandleId, Slot>,
    op_handle: HashMap<OpId, HandleId>,
    mount_slot: HashMap<u64, Slot>,
}

fn facts(recs: &[Record]) -> Facts {
    let mut f = Facts {
        add_disk: HashMap::new(),
        add_owner: HashMap::new(),
        released: HashMap::new(),
        issued_by: HashMap::new(),
        handle_slot: HashMap::new(),
        op_handle: HashMap::new(),
        mount_slot: HashMap::new(),
    };
    for r in recs {
        match &r.event {
            Event::OpStarted {
                kind: OpKind::Add { disk, owner, .. },
            } => {
                f.add_disk.insert(r.op, disk.path.clone());
                f.add_owner.insert(r.op, owner.clone());
            }
            Event::OpStarted {
                kind: OpKind::Release { handle },
            } => {
                f.released.insert(r.op, *handle);
                f.op_handle.insert(r.op, *handle);
            }
            Event::HandleIssued { handle, slot, .. } => {
                f.issued_by.insert(*handle, r.op);
                f.handle_slot.insert(*handle, *slot);
                f.op_handle.insert(r.op, *handle);
            }
            Event::MountReserved { mount, slot, .. } => {
                f.mount_slot.insert(*mount, *slot);
            }
            _ => {}
        }
    }
    f
}

impl Facts {
    /// The add operation a record's operation is about (itself, or the add of the released handle).
    fn add_of(&self, op: OpId) -> Option<OpId> {
        if self.add_disk.contains_key(&op) {
            return Some(op);
        }
        self.released
            .get(&op)
            .and_then(|h| self.issued_by.get(h))
            .copied()
    }

    fn handle_named(r: &Record) -> Option<HandleId> {
        match &r.event {
            Event::HandleIssued { handle, .. }
            | Event::ReleaseStarted { handle }
            | Event::HandleReleased { handle } => Some(*handle),
            _ => None,
        }
    }

    fn handle_of(&self, r: &Record) -> Option<HandleId> {
        Self::handle_named(r).or_else(|| self.op_handle.get(&r.op).copied())
    }

    fn slot_of(&self, r: &Record) -> Option<Slot> {
        match &r.event {
            Event::AttachReserved { slot, .. }
            | Event::AttachRefTaken { slot }
            | Event::AttachRefDropped { slot }
            | Event::AttachmentLost { slot }
            | Event::MountReserved { slot, .. }
            | Event::HandleIssued { slot, .. } => Some(*slot),
            Event::MountRefTaken { mount }
            | Event::MountRefDropped { mount }
            | Event::MountLost { mount } => self.mount_slot.get(mount).copied(),
            Event::StepIntent { target, .. }
            | Event::StepDone { target, .. }
            | Event::StepFailed { target, .. }
            | Event::StepResolved { target, .. } => match target {
                Target::Slot(s) => Some(*s),
                Target::Mount(m) => self.mount_slot.get(m).copied(),
            },
            Event::ReleaseStarted { handle } | Event::HandleReleased { handle } => {
                self.handle_slot.get(handle).copied()
            }
            Event::OpStarted {
                kind: OpKind::Release { handle },
            } => self.handle_slot.get(handle).copied(),
            Event::OpFinished
            | Event::OpFailed { .. }
            | Event::OpRolledBack { .. }
            | Event::OpAbandoned => self
                .op_handle
                .get(&r.op)
                .and_then(|h| self.handle_slot.get(h))
                .copied(),
            _ => None,
        }
    }
}

#[test]
fn filters_select_exactly_the_matching_records() {
    let (dir, recs) = made_journal();
    let d = dir.path();
    let f = facts(&recs);

    // Everything, in order; --reverse reverses it.
    let all = replay_seqs(d, &[]);
    assert_eq!(all, expect(&recs, |_| true));
    let mut rev = replay_seqs(d, &["--reverse"]);
    rev.reverse();
    assert_eq!(rev, all);

    // --op
    let op = recs
        .iter()
        .find(|r| f.released.contains_key(&r.op))
        .unwrap()
        .op;
    assert_eq!(
        replay_seqs(d, &["--op", &op.to_string()]),
        expect(&recs, |r| r.op == op)
    );

    // --step
    for (name, step) in [
        ("attach", Step::Attach),
        ("mount", Step::Mount),
        ("unmount", Step::Unmount),
        ("unplug", Step::Unplug),
        ("detach", Step::Detach),
    ] {
        let want = expect(&recs, |r| r.event.step().map(|(s, _)| s) == Some(step));
        assert!(!want.is_empty(), "workload has no {name} step");
        assert_eq!(replay_seqs(d, &["--step", name]), want, "--step {name}");
    }

    // --failed
    let want = expect(&recs, |r| {
        matches!(
            r.event,
            Event::StepFailed { .. } | Event::OpFailed { .. } | Event::OpRolledBack { .. }
        )
    });
    assert!(
        want.len() >= 2,
        "the workload has a failed mount and a failed add"
    );
    assert_eq!(replay_seqs(d, &["--failed"]), want);

    // --handle: every handle issued.
    for h in f.issued_by.keys() {
        let want = expect(&recs, |r| f.handle_of(r) == Some(*h));
        assert_eq!(
            replay_seqs(d, &["--handle", &h.to_string()]),
            want,
            "--handle {h}"
        );
    }

    // --owner: the owner's adds and the releases of its handles.
    for owner in ["c1", "c2", "c3"] {
        let want = expect(&recs, |r| {
            f.add_of(r.op)
                .and_then(|a| f.add_owner.get(&a).cloned().flatten())
                .as_deref()
                == Some(owner)
        });
        assert!(!want.is_empty());
        assert_eq!(replay_seqs(d, &["--owner", owner]), want, "--owner {owner}");
    }

    // --disk: the disk's adds and the releases of their handles.
    for disk in [
        "/img/layer.vhdx",
        "/scratch/c1.vhdx",
        "/img/c2-config.vhdx",
        "/img/broken.vhdx",
        "/dev/vg0/c2-data",
    ] {
        let want = expect(&recs, |r| {
            f.add_of(r.op)
                .and_then(|a| f.add_disk.get(&a))
                .map(String::as_str)
                == Some(disk)
        });
        assert!(!want.is_empty());
        assert_eq!(replay_seqs(d, &["--disk", disk]), want, "--disk {disk}");
    }

    // --slot
    let slots: BTreeSet<Slot> = recs.iter().filter_map(|r| f.slot_of(r)).collect();
    assert!(slots.len() >= 3);
    for s in slots {
        let want = expect(&recs, |r| f.slot_of(r) == Some(s));
        assert_eq!(
            replay_seqs(d, &["--slot", &s.to_string()]),
            want,
            "--slot {s}"
        );
    }

    // --from-seq / --to-seq
    assert_eq!(
        replay_seqs(d, &["--from-seq", "10", "--to-seq", "20"]),
        expect(&recs, |r| (10..=20).contains(&r.seq))
    );

    // --since / --until with absolute times, and relative ones.
    let mid = &recs[recs.len() / 2];
    let t = humantime::format_rfc3339_micros(
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(mid.ts_micros),
    )
    .to_string();
    assert_eq!(
        replay_seqs(d, &["--since", &t]),
        expect(&recs, |r| r.ts_micros >= mid.ts_micros)
    );
    assert_eq!(
        replay_seqs(d, &["--until", &t]),
        expect(&recs, |r| r.ts_micros <= mid.ts_micros)
    );
    assert_eq!(replay_seqs(d, &["--since", "-1h"]), all);
    assert!(replay_seqs(d, &["--until", "-1h"]).is_empty());

    // Filters combine (AND).
    let want = expect(&recs, |r| {
        r.event.step().map(|(s, _)| s) == Some(Step::Mount)
            && f.add_of(r.op)
                .and_then(|a| f.add_owner.get(&a).cloned().flatten())
                .as_deref()
                == Some("c1")
    });
    assert_eq!(replay_seqs(d, &["--owner", "c1", "--step", "mount"]), want);
}

#[test]
fn json_lines_have_the_documented_fields() {
    let (dir, recs) = made_journal();
    let o = cli(&["replay", dir.path().to_str().unwrap(), "--json"]);
    assert_eq!(code(&o), 0);
    let lines = json_lines(&o);
    assert_eq!(lines.len(), recs.len());
    let fields = [
        "seq",
        "time",
        "ts_micros",
        "op",
        "op_kind",
        "event",
        "step",
        "handle",
        "owner",
        "disk",
        "slot",
        "path",
        "outcome",
        "error",
        "duration_ms",
        "detail",
    ];
    for (l, r) in lines.iter().zip(&recs) {
        let obj = l.as_object().unwrap();
        for f in fields {
            assert!(obj.contains_key(f), "field {f} missing in {l}");
        }
        assert_eq!(obj.len(), fields.len(), "undocumented fields in {l}");
        assert_eq!(l["seq"], r.seq);
        assert_eq!(l["op"], r.op);
        assert_eq!(l["event"], r.event.name());
        assert!(l["time"].as_str().unwrap().ends_with('Z'));
    }
    // Outcome lines of steps carry the step's duration.
    let done = lines
        .iter()
        .find(|l| l["event"] == "done" && l["step"] == "attach")
        .unwrap();
    assert!(done["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(done["outcome"], "ok");
    let failed = lines.iter().find(|l| l["event"] == "failed").unwrap();
    assert_eq!(failed["outcome"], "failed");
    assert!(failed["error"].as_str().unwrap().contains("bad fs"));
    // People get a table with the same records.
    let o = cli(&["replay", dir.path().to_str().unwrap()]);
    assert_eq!(code(&o), 0);
    let text = stdout(&o);
    assert!(text.starts_with("SEQ"), "{text}");
    assert_eq!(text.lines().count(), recs.len() + 1);
    assert!(!text.contains('\x1b'), "no colour when not on a terminal");
}

/// The closed journal's sled database, opened raw to tamper with it. Retried for a moment: sled
/// locks its file, and a child that another test thread is spawning can hold a copy of the
/// journal's descriptors until it execs.
fn raw_sled(dir: &Path) -> sled::Db {
    let mut last = None;
    for _ in 0..100 {
        match sled::open(dir.join("sled")) {
            Ok(db) => return db,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("opening the journal's sled database: {last:?}")
}

fn slot_text(s: &Slot) -> String {
    format!("{}:{}", s.controller, s.lun)
}

#[test]
fn at_equals_the_fold_up_to_that_record() {
    let (dir, recs) = made_journal();
    let d = dir.path().to_str().unwrap();
    for n in (1..=recs.len()).step_by(7).chain([recs.len()]) {
        let st = State::fold(recs[..n].iter()).unwrap();
        let o = cli(&["replay", d, "--at", &n.to_string(), "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let v = &json_lines(&o)[0];
        assert_eq!(v["last_seq"], st.last_seq);
        let atts: Vec<(String, u64, String)> = v["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["slot"].as_str().unwrap().to_string(),
                    a["refs"].as_u64().unwrap(),
                    a["phase"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(String, u64, String)> = st
            .attachments
            .iter()
            .map(|(s, a)| (slot_text(s), a.refs as u64, format!("{:?}", a.phase)))
            .collect();
        assert_eq!(atts, want, "attachments at {n}");
        let mounts: Vec<(u64, String, u64)> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["mount"].as_u64().unwrap(),
                    m["path"].as_str().unwrap().to_string(),
                    m["refs"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(u64, String, u64)> = st
            .mounts
            .iter()
            .map(|(id, m)| (*id, m.path.clone(), m.refs as u64))
            .collect();
        assert_eq!(mounts, want, "mounts at {n}");
        let handles: Vec<u64> = v["handles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["handle"].as_u64().unwrap())
            .collect();
        assert_eq!(handles, st.handles.keys().copied().collect::<Vec<_>>());
        let ops: Vec<u64> = v["ops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["op"].as_u64().unwrap())
            .collect();
        assert_eq!(ops, st.ops.keys().copied().collect::<Vec<_>>());
    }
    // By time: the fold of every record up to that time.
    let mid = &recs[recs.len() / 3];
    let t = humantime::format_rfc3339_micros(
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(mid.ts_micros),
    )
    .to_string();
    let o = cli(&["replay", d, "--at", &t, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let last = recs
        .iter()
        .take_while(|r| r.ts_micros <= mid.ts_micros)
        .last()
        .unwrap()
        .seq;
    assert_eq!(json_lines(&o)[0]["last_seq"], last);
    // Past the end is a usage error.
    let o = cli(&["replay", d, "--at", "999999"]);
    assert_eq!(code(&o), 2);
}

#[test]
fn verify_passes_a_good_journal_and_names_a_flipped_byte() {
    let (dir, recs) = made_journal();
    let d = dir.path().to_str().unwrap();
    let o = cli(&["verify", d]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("journal OK"));
    let o = cli(&["verify", d, "--json"]);
    assert_eq!(code(&o), 0);
    let v = &json_lines(&o)[0];
    assert_eq!(v["ok"], true);
    assert_eq!(v["records_checked"], recs.len() as u64);

    // Flip one byte inside record 10's stored value.
    {
        let db = raw_sled(dir.path());
        let t = db.open_tree("records").unwrap();
        let key = 10u64.to_be_bytes();
        let mut v = t.get(key).unwrap().unwrap().to_vec();
        let i = v.len() / 2;
        v[i] ^= 0x40;
        t.insert(key, v).unwrap();
        db.flush().unwrap();
    }
    let o = cli(&["verify", d]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("first bad record: seq 10"),
        "{}",
        stdout(&o)
    );
    let o = cli(&["verify", d, "--json"]);
    assert_eq!(code(&o), 1);
    let v = &json_lines(&o)[0];
    assert_eq!(v["ok"], false);
    assert_eq!(v["problem"]["seq"], 10);
    // The CLI never changed the journal: the flipped byte is still there.
    let db = raw_sled(dir.path());
    let t = db.open_tree("records").unwrap();
    assert!(t.get(10u64.to_be_bytes()).unwrap().is_some());
}

#[test]
fn verify_names_durable_records_lost_at_the_tail() {
    let (dir, recs) = made_journal();
    let d = dir.path().to_str().unwrap();
    let last = recs.last().unwrap().seq;
    // The newest records had been flushed (durable); losing them is what sled's silent prefix
    // recovery looks like.
    {
        let db = raw_sled(dir.path());
        let t = db.open_tree("records").unwrap();
        t.remove(last.to_be_bytes()).unwrap().unwrap();
        t.remove((last - 1).to_be_bytes()).unwrap().unwrap();
        db.flush().unwrap();
    }
    let o = cli(&["verify", d, "--json"]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let v = &json_lines(&o)[0];
    assert_eq!(v["problem"]["seq"], last - 1, "{v}");
    assert!(
        v["problem"]["what"].as_str().unwrap().contains("durable"),
        "{v}"
    );
}

#[test]
fn verify_names_a_deleted_record() {
    let (dir, _recs) = made_journal();
    let d = dir.path().to_str().unwrap();
    {
        let db = raw_sled(dir.path());
        let t = db.open_tree("records").unwrap();
        t.remove(12u64.to_be_bytes()).unwrap().unwrap();
        db.flush().unwrap();
    }
    let o = cli(&["verify", d, "--json"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let v = &json_lines(&o)[0];
    assert_eq!(v["problem"]["seq"], 12, "{v}");
    assert!(
        v["problem"]["what"].as_str().unwrap().contains("missing"),
        "{v}"
    );
    let o = cli(&["verify", d]);
    assert!(
        stdout(&o).contains("first bad record: seq 12"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_locked_journal_is_refused_and_copy_audits_it() {
    let (dir, recs) = made_journal();
    let d = dir.path().to_str().unwrap();
    // A second open file description in this process holds the flock, as a running shim would.
    let held = open_journal(dir.path());
    for cmd in ["replay", "status", "verify"] {
        let o = cli(&[cmd, d]);
        assert_eq!(code(&o), 2, "{cmd}");
        let e = stderr(&o);
        assert!(
            e.contains("is in use by a running process") && e.contains("--copy"),
            "{cmd}: {e}"
        );
        assert!(
            e.contains(&format!("pid {}", std::process::id())),
            "{cmd} names the holder: {e}"
        );
    }
    let o = cli(&["replay", d, "--copy"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("point-in-time copy"), "{}", stdout(&o));
    let o = cli(&["replay", d, "--copy", "--json"]);
    assert_eq!(code(&o), 0);
    assert_eq!(json_lines(&o).len(), recs.len(), "JSON stays clean");
    assert!(stderr(&o).contains("point-in-time copy"));
    let o = cli(&["verify", d, "--copy"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    drop(held);
    let o = cli(&["status", d]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
}

#[test]
fn status_and_dry_run_show_a_pending_teardown() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("vm.json");
    let jdir = dir.path().join("journal");
    rt().block_on(async {
        let vm = SimVm::persistent(&sim).unwrap();
        let m = open(&jdir, &vm).await;
        let h = m
            .add_virtual_disk(ro_layer("/img/stuck.vhdx", "c1"))
            .await
            .unwrap();
        vm.set_faults(FaultPlan::new().fail_always(
            SimOp::Detach,
            lunledger::backend::BackendError::Failed("stuck".into()),
        ));
        assert!(h.release().await.is_err());
        m.close().await.unwrap();
    });
    let j = jdir.to_str().unwrap();
    let o = cli(&["status", j]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let text = stdout(&o);
    assert!(text.contains("Pending teardowns (1)"), "{text}");
    assert!(text.contains("stuck"), "{text}");
    let o = cli(&["status", j, "--json"]);
    let v = &json_lines(&o)[0];
    assert_eq!(v["pending_teardowns"][0]["step"], "detach");

    // Journal-only plan, then a plan against the simulated VM's state file.
    let o = cli(&["recover", j, "--dry-run"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("teardown"), "{}", stdout(&o));
    let o = cli(&[
        "recover",
        j,
        "--dry-run",
        "--sim-state",
        sim.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let actions = json_lines(&o);
    assert!(
        actions.iter().any(|a| a["action"] == "teardown"),
        "{actions:?}"
    );
    // Without --dry-run the CLI refuses: it never changes a journal.
    let o = cli(&["recover", j]);
    assert_eq!(code(&o), 2);
    // The journal is unchanged: the teardown is still pending.
    let o = cli(&["status", j]);
    assert_eq!(code(&o), 1);
}

#[test]
fn usage_errors_exit_2() {
    let (dir, _) = made_journal();
    let d = dir.path().to_str().unwrap();
    assert_eq!(code(&cli(&["replay", d, "--slot", "zero"])), 2);
    assert_eq!(code(&cli(&["replay", d, "--since", "last tuesday"])), 2);
    assert_eq!(code(&cli(&["replay", d, "--step", "format"])), 2);
    assert_eq!(code(&cli(&["replay", "/nonexistent/journal"])), 2);
    assert_eq!(code(&cli(&["frobnicate"])), 2);
    assert_eq!(code(&cli(&["replay", d, "--at", "3", "--owner", "c1"])), 2);
    assert_eq!(code(&cli(&["replay", d, "--follow", "--reverse"])), 2);
}

#[test]
fn demo_recovers_from_a_kill_and_ends_empty() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("journal");
    let t = std::time::Instant::now();
    let o = cli(&["demo", "--journal", j.to_str().unwrap()]);
    let text = stdout(&o);
    assert_eq!(code(&o), 0, "{text}\n{}", stderr(&o));
    // About 1.5 s normally; the bound leaves room for a loaded machine.
    assert!(t.elapsed().as_secs() < 30, "demo took {:?}", t.elapsed());
    assert!(text.contains("sent SIGKILL"), "{text}");
    assert!(text.contains("rolled back: op"), "{text}");
    assert!(text.contains("PASS"), "{text}");
    // Independently: the journal's fold is empty and the simulated VM is empty.
    let recs = records(&j);
    let st = State::fold(recs.iter()).unwrap();
    assert!(st.is_empty(), "{st:?}");
    assert!(recs
        .iter()
        .any(|r| matches!(r.event, Event::OpRolledBack { .. })));
    let vm = SimVm::persistent(dir.path().join("journal.sim-vm.json")).unwrap();
    assert!(vm.snapshot().is_empty());
    assert_eq!(code(&cli(&["verify", j.to_str().unwrap()])), 0);
}

#[test]
fn qemu_demo_without_a_guest_image_exits_2_naming_the_script() {
    let o = Command::new(env!("CARGO_BIN_EXE_lunledger"))
        .args(["demo", "--backend", "qemu"])
        .env("NO_COLOR", "1")
        .env("LUNLEDGER_GUEST_DIR", "/nonexistent/guest")
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    // Refused before anything is created: QEMU missing names its installer instead.
    let err = stderr(&o);
    assert!(
        err.contains("scripts/build-guest.sh") || err.contains("scripts/install-qemu.sh"),
        "{err}"
    );
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
}

#[test]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
fn qemu_demo_recovers_from_a_kill_and_ends_empty() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("journal");
    let t = std::time::Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_lunledger"))
        .args([
            "demo",
            "--backend",
            "qemu",
            "--journal",
            j.to_str().unwrap(),
        ])
        .env("NO_COLOR", "1")
        .env(
            "LUNLEDGER_GUEST_DIR",
            std::env::var_os("LUNLEDGER_GUEST_DIR").unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("target/guest")
                    .into()
            }),
        )
        .output()
        .unwrap();
    let text = stdout(&o);
    println!("{text}");
    assert_eq!(code(&o), 0, "{text}\n{}", stderr(&o));
    // About 13 s here (guest boot 6-8 s of it under TCG); the bound leaves room for load.
    assert!(t.elapsed().as_secs() < 120, "demo took {:?}", t.elapsed());
    assert!(text.contains("sent SIGKILL"), "{text}");
    assert!(text.contains("PASS"), "{text}");
    assert!(
        text.contains("QEMU VM: 0 disk(s) attached (QMP), 0 mount(s) and 0 SCSI disk(s)"),
        "{text}"
    );
    // Independently: the journal's fold is empty and verifies; the kill either cut the add short
    // (rolled back) or came after it finished (said so).
    let recs = records(&j);
    let st = State::fold(recs.iter()).unwrap();
    assert!(st.is_empty(), "{st:?}");
    let rolled = recs
        .iter()
        .any(|r| matches!(r.event, Event::OpRolledBack { .. }));
    assert!(
        rolled || text.contains("had already finished when the kill landed"),
        "{text}"
    );
    assert_eq!(code(&cli(&["verify", j.to_str().unwrap()])), 0);
    // QEMU was stopped and the disk images removed.
    assert!(text.contains("QEMU pid"), "{text}");
    assert!(!dir.path().join("journal.disks").exists());
    let pid: i32 = text
        .lines()
        .find_map(|l| l.strip_prefix("QEMU pid ")?.split(' ').next()?.parse().ok())
        .unwrap();
    assert!(
        !lunledger::demo::vm::pid_alive(pid),
        "QEMU pid {pid} still runs"
    );
}

/// `lunledger replay DIR --follow --json` running, with its stdout read on a thread; killed and
/// reaped when dropped, so that a test failing half way does not leave it running.
struct Follower {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<Value>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Follower {
    /// The next JSON line it printed, waiting up to `limit`.
    fn next(&self, limit: std::time::Duration) -> Result<Value, std::sync::mpsc::RecvTimeoutError> {
        self.lines.recv_timeout(limit)
    }
}

/// Starts `lunledger replay DIR --follow --json` (stdout and stderr piped) on the journal in `dir`.
fn spawn_follower(dir: &Path) -> Follower {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_lunledger"))
        .args(["replay", dir.to_str().unwrap(), "--follow", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let v: Value = serde_json::from_str(&line).unwrap();
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    Follower { child, lines }
}

#[test]
fn follow_prints_new_records_of_a_live_journal_until_ctrl_c() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let vm = SimVm::new();
    // The manager stays open: the journal is live and locked throughout.
    let m = rt.block_on(open(dir.path(), &vm));
    let _a = rt
        .block_on(m.add_virtual_disk(ro_layer("/img/one.vhdx", "c1")))
        .unwrap();
    // An add returns with its handle; its op-finished record may follow a moment later.
    let settle = |m: &Manager| {
        for _ in 0..1000 {
            if m.state().ops.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        rt.block_on(m.sync()).unwrap();
    };
    settle(&m);
    let before = m.state().last_seq;
    let mut follower = spawn_follower(dir.path());
    let next = |what: &str| {
        follower
            .next(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
    };
    for seq in 1..=before {
        assert_eq!(next("the existing records")["seq"], seq);
    }
    let _b = rt
        .block_on(m.add_virtual_disk(ro_layer("/img/two.vhdx", "c2")))
        .unwrap();
    settle(&m);
    let after = m.state().last_seq;
    assert!(after > before);
    for seq in before + 1..=after {
        let v = next("the new records");
        assert_eq!(v["seq"], seq);
        assert_eq!(v["owner"], "c2", "{v}");
    }
    // Ctrl-C ends the loop cleanly.
    let child = &mut follower.child;
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("point-in-time copy of live journal"), "{err}");
    rt.block_on(m.close()).unwrap();
}

/// A log shipper tailing `replay --follow --json` sees every record once, in order, while the
/// shim writes checkpoints and rotates its sled generation, and across a restart of the shim
/// (the journal closed, unlocked, then opened again and recovered).
#[test]
fn follow_survives_checkpoints_rotations_and_a_restart_of_the_shim() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let vm = SimVm::new();
    let opts = || {
        let mut o = lunledger::ManagerOptions::new(config());
        o.checkpoint_every = 10;
        o.segment_records = 10;
        o
    };
    let open_shim = || {
        rt.block_on(Manager::open_with(
            dir.path(),
            opts(),
            vm.host_backend(),
            vm.guest_backend(),
        ))
        .unwrap()
    };
    // Adds and releases `n` disks, so checkpoints and rotations happen under the follower.
    let churn = |m: &Manager, tag: &str, n: usize| {
        for i in 0..n {
            let h = rt
                .block_on(m.add_virtual_disk(ro_layer(&format!("/img/{tag}-{i}.vhdx"), tag)))
                .unwrap();
            rt.block_on(h.release()).unwrap();
        }
        rt.block_on(m.sync()).unwrap();
    };
    let m = open_shim();
    churn(&m, "a", 3);
    let follower = spawn_follower(dir.path());
    let mut seen = Vec::new();
    let mut read_up_to = |last: u64, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.last().copied().unwrap_or(0) < last {
            let left = deadline.saturating_duration_since(Instant::now());
            match follower.next(left) {
                Ok(v) => seen.push(v["seq"].as_u64().unwrap()),
                Err(e) => panic!("{what}: waiting for seq {last}, have {seen:?}: {e}"),
            }
        }
    };
    churn(&m, "b", 6);
    let gen_before = m.journal().generation();
    read_up_to(
        m.journal().last_seq(),
        "records written under checkpoints and rotations",
    );
    assert!(
        gen_before > 0,
        "the workload should have rotated the journal"
    );
    // The shim stops (its journal closes and unlocks) and starts again (it recovers).
    rt.block_on(m.close()).unwrap();
    let m = open_shim();
    churn(&m, "c", 3);
    read_up_to(m.journal().last_seq(), "records written after the restart");
    let want: Vec<u64> = (1..=m.journal().last_seq()).collect();
    assert_eq!(seen, want, "every record once, in order");
    rt.block_on(m.close()).unwrap();
}

#[test]
fn a_pruned_journal_replays_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = lunledger::ManagerOptions::new(config());
    opts.checkpoint_every = 10;
    opts.retention = Some(lunledger::journal::Retention {
        keep_records: 0,
        keep_for: std::time::Duration::ZERO,
    });
    let live = journal_of_layers(dir.path(), opts, &["c1", "c2", "c1", "c2", "c1", "c2"], 0);
    let j = open_journal(dir.path());
    let first = j.first_seq().unwrap().unwrap();
    drop(j);
    assert!(first > 1, "the journal was not pruned");
    let d = dir.path().to_str().unwrap();
    let o = cli(&["replay", d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("pruned"), "{}", stderr(&o));
    let o = cli(&["status", d, "--json"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let v = &json_lines(&o)[0];
    let handles: Vec<u64> = v["state"]["handles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["handle"].as_u64().unwrap())
        .collect();
    assert_eq!(handles, live.handles.keys().copied().collect::<Vec<_>>());
    assert_eq!(v["state"]["last_seq"], live.last_seq);
    let o = cli(&["verify", d]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
}

#[test]
fn a_rotated_journal_is_audited_across_its_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = lunledger::ManagerOptions::new(config());
    opts.checkpoint_every = 10;
    opts.segment_records = 10;
    let live = journal_of_layers(dir.path(), opts, &["c1"; 8], 3);
    let j = open_journal(dir.path());
    let segments = j.segments();
    let recs: Vec<Record> = j.read_from(1).map(|r| r.unwrap()).collect();
    drop(j);
    assert!(
        segments.len() >= 2,
        "the journal did not rotate: {segments:?}"
    );
    let d = dir.path().to_str().unwrap();
    // Every record, from the first sealed one on, in order.
    let o = cli(&["replay", d, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let seqs: Vec<u64> = json_lines(&o)
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=live.last_seq).collect::<Vec<_>>());
    // A point in time inside a sealed segment is the fold up to it.
    let n = segments[0].last as usize - 2;
    let o = cli(&["replay", d, "--at", &n.to_string(), "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        json_lines(&o)[0]["last_seq"],
        State::fold(recs[..n].iter()).unwrap().last_seq
    );
    let o = cli(&["status", d, "--json"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(json_lines(&o)[0]["state"]["last_seq"], live.last_seq);
    let o = cli(&["verify", d]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    // A flipped byte in a sealed segment: verify fails and names a record of that segment.
    let seg = &segments[1];
    let mut bytes = std::fs::read(&seg.path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x08;
    std::fs::write(&seg.path, &bytes).unwrap();
    let o = cli(&["verify", d, "--json"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let bad = json_lines(&o)[0]["problem"]["seq"].as_u64().unwrap();
    assert!(
        (seg.first.saturating_sub(1)..=seg.last).contains(&bad),
        "{bad} not in {seg:?}"
    );
}

/// Backend latency of the rotating workload below, in µs, and how many live copies it audits.
const LATENCY_US: u64 = 100;
const AUDITS: usize = 30;

#[test]
fn live_copies_taken_while_the_journal_rotates_are_whole() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let vm = SimVm::new();
    vm.set_latency(std::time::Duration::from_micros(LATENCY_US));
    let mut opts = lunledger::ManagerOptions::new(config());
    opts.checkpoint_every = 40;
    opts.segment_records = 40;
    // The manager stays open (the journal is live and locked) and rotates every ~2 add+release
    // cycles (~25 ms): far more often than a real shim (every 10 000 records by default).
    let m = rt
        .block_on(Manager::open_with(
            dir.path(),
            opts,
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
                    .add_virtual_disk(ro_layer("/img/churn.vhdx", "c1"))
                    .await
                    .unwrap();
                h.release().await.unwrap();
                cycles += 1;
            }
            cycles
        })
    };
    let d = dir.path().to_str().unwrap();
    let mut audits = 0;
    let mut result = Ok(());
    for _ in 0..AUDITS {
        let o = cli(&["replay", d, "--copy", "--json"]);
        if code(&o) != 0 {
            result = Err(format!("replay --copy: {}", stderr(&o)));
            break;
        }
        let seqs: Vec<u64> = json_lines(&o)
            .iter()
            .map(|v| v["seq"].as_u64().unwrap())
            .collect();
        if seqs.first() != Some(&1) || seqs.windows(2).any(|w| w[1] != w[0] + 1) {
            result = Err(format!(
                "a copy lost or reordered records: {} records",
                seqs.len()
            ));
            break;
        }
        audits += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let cycles = rt.block_on(worker).unwrap();
    let segments = m.journal().segments().len();
    rt.block_on(m.close()).unwrap();
    result.unwrap();
    assert_eq!(audits, AUDITS);
    assert!(
        segments >= 3,
        "the journal rotated only {segments} times in {cycles} cycles"
    );
}

/// Issue #15 item 4: after many recoveries that each find the same drift, `status` lists it
/// once: the last recovery's findings, not every recovery's.
#[test]
fn status_lists_the_last_recoverys_drift_once() {
    use lunledger::backend::sim::SimAttachment;
    use lunledger::model::{DiskKind, DiskSpec};
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("vm.json");
    let jdir = dir.path().join("journal");
    rt().block_on(async {
        let vm = SimVm::persistent(&sim).unwrap();
        open(&jdir, &vm).await.close().await.unwrap();
        vm.edit_state(|s| {
            s.put_attachment(SimAttachment {
                slot: Slot::new(1, 7),
                attach: None,
                disk: DiskSpec {
                    path: "/somebody/else.img".into(),
                    read_only: false,
                    kind: DiskKind::VirtualDisk,
                    evd_type: None,
                },
                guest_visible: true,
            })
        })
        .unwrap();
        for _ in 0..5 {
            open(&jdir, &vm).await.close().await.unwrap();
        }
    });
    let j = jdir.to_str().unwrap();
    let o = cli(&["status", j, "--json"]);
    let v = &json_lines(&o)[0];
    let drift = v["state"]["drift"].as_array().cloned().unwrap_or_default();
    assert_eq!(drift.len(), 1, "{drift:?}");
    let text = stdout(&cli(&["status", j]));
    assert!(
        text.contains("Drift found by the last recovery (1)"),
        "{text}"
    );
}

/// A rotated journal (checkpoints every 10 records, segments of 10): several sealed segments.
fn rotated_journal(dir: &Path) -> (State, Vec<lunledger::journal::SegmentInfo>) {
    let mut opts = lunledger::ManagerOptions::new(config());
    opts.checkpoint_every = 10;
    opts.segment_records = 10;
    let live = journal_of_layers(dir, opts, &["c1"; 8], 3);
    let j = open_journal(dir);
    let segments = j.segments();
    drop(j);
    assert!(
        segments.len() >= 2,
        "the journal did not rotate: {segments:?}"
    );
    (live, segments)
}

#[test]
fn deleted_sealed_history_is_a_named_loss_not_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let (live, segments) = rotated_journal(dir.path());
    std::fs::remove_dir_all(dir.path().join(lunledger::journal::ARCHIVE_DIR)).unwrap();
    let d = dir.path().to_str().unwrap();
    let o = cli(&["verify", d, "--json"]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let v = &json_lines(&o)[0];
    assert_eq!(v["problem"]["seq"], 1, "{v}");
    // The range is the journal's, lost history included: not "empty".
    assert_eq!(
        (v["first_seq"].as_u64(), v["last_seq"].as_u64()),
        (Some(1), Some(live.last_seq)),
        "{v}"
    );
    let segs: Vec<(u64, &str)> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["check"] == "segments")
        .map(|p| (p["seq"].as_u64().unwrap(), p["what"].as_str().unwrap()))
        .collect();
    assert_eq!(
        segs.iter().map(|s| s.0).collect::<Vec<_>>(),
        segments.iter().map(|s| s.first).collect::<Vec<_>>(),
        "{v}"
    );
    // Replay and a point in time inside the lost history fail; nothing calls it pruned.
    let o = cli(&["replay", d]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(!stderr(&o).contains("pruned"), "{}", stderr(&o));
    let at = (segments[0].last - 1).to_string();
    let o = cli(&["replay", d, "--at", &at, "--json"]);
    assert_ne!(code(&o), 0, "{}", stdout(&o));
    assert!(!stderr(&o).contains("pruned"), "{}", stderr(&o));
    let o = cli(&["status", d]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
}

#[test]
fn a_missing_watermark_is_a_verify_finding() {
    let (dir, _) = made_journal();
    let d = dir.path().to_str().unwrap();
    let o = cli(&["verify", d]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    std::fs::remove_file(dir.path().join(lunledger::journal::WATERMARK_FILE)).unwrap();
    let o = cli(&["verify", d, "--json"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let v = &json_lines(&o)[0];
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["check"] == "watermark"),
        "{v}"
    );
}

/// Replaces the newest checkpoint's state in a closed (unrotated) journal with `forge(state)`.
fn forge_newest_checkpoint(dir: &Path, forge: impl FnOnce(&mut State)) -> u64 {
    let db = raw_sled(dir);
    let t = db.open_tree("checkpoints").unwrap();
    let (k, v) = t.last().unwrap().expect("no checkpoint");
    // The forger knows the format: the checksum is recomputed.
    let mut st: State = lunledger::recovery::decode_checkpoint(&v[32..]).unwrap();
    forge(&mut st);
    let mut nv = v[..32].to_vec();
    nv.extend_from_slice(&lunledger::recovery::encode_checkpoint(&st).unwrap());
    t.insert(k.clone(), nv).unwrap();
    db.flush().unwrap();
    u64::from_be_bytes(k.as_ref().try_into().unwrap())
}

#[test]
fn a_forged_checkpoint_is_refused_by_verify_dry_run_and_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = lunledger::ManagerOptions::new(config());
    opts.checkpoint_every = 10;
    let live = journal_of_layers(dir.path(), opts.clone(), &["c1", "c2", "c3"], 0);
    let d = dir.path().to_str().unwrap();
    let o = cli(&["verify", d]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    // A disk no record ever attached, in the state the newest checkpoint holds.
    let mut forged = live.attachments.values().next().unwrap().clone();
    forged.disk.path = "/img/never-attached.vhdx".into();
    forged.refs = 0;
    let at = forge_newest_checkpoint(dir.path(), |st| {
        st.attachments.insert(Slot::new(1, 7), forged);
    });
    let o = cli(&["verify", d, "--json"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let v = &json_lines(&o)[0];
    let cp = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["check"] == "checkpoint")
        .unwrap_or_else(|| panic!("no checkpoint finding: {v}"));
    assert_eq!(cp["seq"], at);
    assert!(cp["what"].as_str().unwrap().contains("attachments"), "{cp}");
    // The plan is not made from it.
    let o = cli(&["recover", d, "--dry-run"]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    assert!(stderr(&o).contains("checkpoint"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("never-attached"), "{}", stdout(&o));
    // A real open refuses it, and the VM is never touched.
    rt().block_on(async {
        let vm = SimVm::new();
        match Manager::open_with(dir.path(), opts, vm.host_backend(), vm.guest_backend()).await {
            Err(lunledger::Error::CheckpointMismatch { at_seq, .. }) => assert_eq!(at_seq, at),
            Err(e) => panic!("wrong error: {e}"),
            Ok(m) => panic!(
                "opened on a forged checkpoint: {:?}",
                m.state().attachments.keys().collect::<Vec<_>>()
            ),
        }
        for op in [SimOp::Detach, SimOp::Unplug, SimOp::Unmount, SimOp::Inspect] {
            assert_eq!(vm.calls(op), 0, "{op:?}");
        }
    });
}

#[test]
fn a_checkpoint_past_the_last_record_fails_verify_and_open_without_breaking_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = lunledger::ManagerOptions::new(config());
    opts.checkpoint_every = 10;
    journal_of_layers(dir.path(), opts.clone(), &["c1", "c2"], 0);
    let last = records(dir.path()).len() as u64;
    let stored = |dir: &Path| raw_sled(dir).open_tree("records").unwrap().len() as u64;
    assert_eq!(stored(dir.path()), last);
    {
        let db = raw_sled(dir.path());
        let t = db.open_tree("checkpoints").unwrap();
        let (_, v) = t.last().unwrap().unwrap();
        t.insert((last + 100).to_be_bytes(), v).unwrap();
        db.flush().unwrap();
    }
    let d = dir.path().to_str().unwrap();
    let o = cli(&["verify", d, "--json"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let v = &json_lines(&o)[0];
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["check"] == "checkpoint" && p["seq"] == last + 100),
        "{v}"
    );
    for _ in 0..2 {
        rt().block_on(async {
            let vm = SimVm::new();
            match Manager::open_with(
                dir.path(),
                opts.clone(),
                vm.host_backend(),
                vm.guest_backend(),
            )
            .await
            {
                Err(lunledger::Error::Journal(lunledger::journal::JournalError::LostRecords {
                    first,
                    durable,
                })) => assert_eq!((first, durable), (last + 1, last + 100)),
                Err(e) => panic!("wrong error: {e}"),
                Ok(_) => panic!("opened on a checkpoint past the last record"),
            }
        });
    }
    // Accepting lost records does not make it a starting point either: the records do not
    // reach it, so the open is refused before anything is appended, every time.
    let mut accepting = opts.clone();
    accepting.accept_lost_records = true;
    for _ in 0..2 {
        rt().block_on(async {
            let vm = SimVm::new();
            match Manager::open_with(
                dir.path(),
                accepting.clone(),
                vm.host_backend(),
                vm.guest_backend(),
            )
            .await
            {
                Err(lunledger::Error::CheckpointMismatch { at_seq, .. }) => {
                    assert_eq!(at_seq, last + 100)
                }
                Err(e) => panic!("wrong error: {e}"),
                Ok(_) => panic!("opened on a checkpoint past the last record"),
            }
        });
    }
    // Nothing was appended by the refused opens.
    assert_eq!(stored(dir.path()), last);
}

#[test]
fn a_forged_checkpoint_of_a_pruned_journal_is_named_by_verify_and_never_shown_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = lunledger::ManagerOptions::new(config());
    opts.checkpoint_every = 10;
    // More than one checkpoint interval is kept: the newest checkpoint has one before it.
    // Checkpoints are taken as operations end (an add's after its caller has moved on), so two
    // lie at most `checkpoint_every` plus the longest operation (12 records) apart: 40 records
    // always hold two, however the adds and their checkpoints interleave.
    opts.retention = Some(lunledger::journal::Retention {
        keep_records: 40,
        keep_for: std::time::Duration::ZERO,
    });
    let live = journal_of_layers(
        dir.path(),
        opts.clone(),
        &["c1", "c2", "c1", "c2", "c1", "c2"],
        0,
    );
    let j = open_journal(dir.path());
    let first = j.first_seq().unwrap().unwrap();
    let kept = j.checkpoints().unwrap().len();
    drop(j);
    assert!(first > 1, "the journal was not pruned");
    assert!(kept >= 2, "only {kept} checkpoint(s) kept");
    let mut forged = live.attachments.values().next().unwrap().clone();
    forged.disk.path = "/img/never-attached.vhdx".into();
    forged.refs = 0;
    let at = forge_newest_checkpoint(dir.path(), |st| {
        st.attachments.insert(Slot::new(1, 7), forged);
    });
    let d = dir.path().to_str().unwrap();
    let o = cli(&["status", d, "--json"]);
    assert!(!stdout(&o).contains("never-attached"), "{}", stdout(&o));
    assert_eq!(
        json_lines(&o)[0]["state"]["last_seq"],
        live.last_seq,
        "{}",
        stdout(&o)
    );
    let o = cli(&["verify", d, "--json"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let v = &json_lines(&o)[0];
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["check"] == "checkpoint" && p["seq"] == at),
        "{v}"
    );
    rt().block_on(async {
        let vm = SimVm::new();
        assert!(matches!(
            Manager::open_with(dir.path(), opts, vm.host_backend(), vm.guest_backend()).await,
            Err(lunledger::Error::CheckpointMismatch { .. })
        ));
    });
}

/// Colour follows the conventions people set (anstream's decision): CLICOLOR_FORCE colours
/// even a pipe, NO_COLOR wins over it, and a pipe alone gets none.
#[test]
fn colour_follows_no_color_and_clicolor_force() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("journal");
    let o = cli(&[
        "demo",
        "--journal",
        j.to_str().unwrap(),
        "--latency-ms",
        "1",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let run = |env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lunledger"));
        c.args(["verify", j.to_str().unwrap()])
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR")
            .env_remove("CLICOLOR_FORCE");
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(!run(&[]).contains('\x1b'), "a pipe gets no colour");
    assert!(
        run(&[("CLICOLOR_FORCE", "1")]).contains("\x1b["),
        "forced colour"
    );
    assert!(
        !run(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).contains('\x1b'),
        "NO_COLOR wins"
    );
}
