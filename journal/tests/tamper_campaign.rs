//! A tamper and damage campaign against a sealed, rotated journal (issue #12, "done when").
//!
//! Every case copies a template journal, damages or forges it one way (a flipped byte, a
//! truncated or deleted file, a flip in sled's log with the watermark deleted, a FIFO where a file was, swapped segments, a record rewritten with
//! its chain recomputed, a dropped tail with the watermark rewritten to match, the whole
//! directory rolled back to an older copy; the forgeries with and without the seal removed),
//! then audits it read-only (`open_read_only`, `verify`, `check_seal`, `check_anchor`). It
//! counts, for each kind: cases whose readable history changed, and which of them the chain
//! (with what open reports), the keyed seal, and the anchor each detect.
//!
//! Asserted: 0 writes to the audited directory, 0 hangs, 0 panics, and 0 changed histories
//! accepted when the key and the anchor are both used. The cases the chain alone accepts are
//! printed (and explained in docs/testing.md). `LUNLEDGER_TAMPER_CASES` sets the number of cases
//! (default 400; the long tier runs thousands).

use lunledger_journal::*;
use lunledger_journal::{open_read_only, ReadOnlyOptions};
use lunledger_model::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

const HANG: Duration = Duration::from_secs(60);

fn key() -> SealKey {
    SealKey::from_bytes([7; 32])
}

fn options() -> JournalOptions {
    JournalOptions {
        segment_records: 40,
        seal_key: Some(key()),
        ..JournalOptions::default()
    }
}

fn event(i: u64) -> Event {
    Event::OpFailed {
        error: format!("record {i}"),
    }
}

fn append(j: &Journal, from: u64, n: u64) {
    for i in from..from + n {
        let seq = j.append(i, event(i)).unwrap();
        j.wait_durable_blocking(seq).unwrap();
        if seq % 50 == 0 {
            j.write_checkpoint(seq, vec![1, 2, 3]).unwrap();
        }
    }
}

/// Waits out sled's asynchronous release of its file lock after a journal is dropped.
fn reopen(dir: &Path, opts: JournalOptions) -> Journal {
    for _ in 0..200 {
        match Journal::open(dir, opts.clone()) {
            Ok(j) => return j,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    Journal::open(dir, opts).unwrap()
}

struct Template {
    _root: tempfile::TempDir,
    dir: PathBuf,
    older: PathBuf,
    records: Vec<Record>,
    head: Head,
}

/// A sealed journal with sealed segments and checkpoints, and an older copy of it.
fn template() -> Template {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("journal");
    let older = root.path().join("older");
    {
        let j = reopen(&dir, options());
        append(&j, 0, 170);
    }
    copy_dir(&dir, &older);
    let j = reopen(&dir, options());
    append(&j, 170, 90);
    let records: Vec<Record> = j.read_from(1).map(|r| r.unwrap()).collect();
    let head = j.head().unwrap().unwrap();
    assert!(j.segments().len() >= 3, "the template did not rotate");
    assert!(j.check_seal(&key()).unwrap().is_ok());
    drop(j);
    Template {
        _root: root,
        dir,
        older,
        records,
        head,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Every entry below `root` with its kind and content hash (symlinks not followed).
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            let v = if ft.is_file() {
                blake3::hash(&std::fs::read(&p).unwrap())
                    .to_hex()
                    .to_string()
            } else if ft.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else {
                format!("{ft:?}")
            };
            out.insert(p, v);
        }
    }
    out
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = tree(root)
        .into_iter()
        .filter(|(p, k)| k != "dir" && !p.ends_with("LOCK"))
        .map(|(p, _)| p)
        .collect();
    v.sort();
    v
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Flip,
    FlipWithoutWatermark,
    Truncate,
    Delete,
    Fifo,
    SwapSegments,
    ForgeRecord,
    ForgeRecordStripSeal,
    DropTail,
    Rollback,
}

const KINDS: [Kind; 10] = [
    Kind::Flip,
    Kind::FlipWithoutWatermark,
    Kind::Truncate,
    Kind::Delete,
    Kind::Fifo,
    Kind::SwapSegments,
    Kind::ForgeRecord,
    Kind::ForgeRecordStripSeal,
    Kind::DropTail,
    Kind::Rollback,
];

fn active_gen(dir: &Path) -> PathBuf {
    let name = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    dir.join(name.trim())
}

fn raw_sled(dir: &Path) -> sled::Db {
    let path = active_gen(dir);
    for _ in 0..200 {
        if let Ok(db) = sled::open(&path) {
            return db;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    sled::open(&path).unwrap()
}

fn write_watermark(dir: &Path, seq: u64) {
    std::fs::write(
        dir.join(WATERMARK_FILE),
        format!("lunledger-durable {seq:020}\n"),
    )
    .unwrap();
}

/// Applies one mutation of `kind` to the journal in `dir`; returns a description.
fn mutate(kind: Kind, dir: &Path, t: &Template, rng: &mut Rng) -> String {
    match kind {
        Kind::Flip => {
            let fs = files(dir);
            let f = &fs[rng.below(fs.len() as u64) as usize];
            let mut b = std::fs::read(f).unwrap();
            if b.is_empty() {
                return format!("flip in empty {}", f.display());
            }
            let at = rng.below(b.len() as u64) as usize;
            b[at] ^= 1 << rng.below(8);
            std::fs::write(f, b).unwrap();
            format!("flip {}@{at}", f.display())
        }
        Kind::FlipWithoutWatermark => {
            // The durable position's own file gone, then damage inside sled's log.
            let _ = std::fs::remove_file(dir.join(WATERMARK_FILE));
            let f = active_gen(dir).join("db");
            let mut b = std::fs::read(&f).unwrap();
            let at = rng.below(b.len() as u64) as usize;
            b[at] ^= 1 << rng.below(8);
            std::fs::write(&f, b).unwrap();
            format!("no watermark, flip {}@{at}", f.display())
        }
        Kind::Truncate => {
            let fs = files(dir);
            let f = &fs[rng.below(fs.len() as u64) as usize];
            let len = std::fs::metadata(f).unwrap().len();
            let to = rng.below(len.max(1));
            std::fs::OpenOptions::new()
                .write(true)
                .open(f)
                .unwrap()
                .set_len(to)
                .unwrap();
            format!("truncate {} to {to}", f.display())
        }
        Kind::Delete => {
            let fs = files(dir);
            let f = &fs[rng.below(fs.len() as u64) as usize];
            std::fs::remove_file(f).unwrap();
            format!("delete {}", f.display())
        }
        Kind::Fifo => {
            let fs = files(dir);
            let f = &fs[rng.below(fs.len() as u64) as usize];
            std::fs::remove_file(f).unwrap();
            let c = std::ffi::CString::new(f.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            format!("fifo at {}", f.display())
        }
        Kind::SwapSegments => {
            let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.join("archive"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            segs.sort();
            let a = rng.below(segs.len() as u64) as usize;
            let b = (a + 1 + rng.below(segs.len() as u64 - 1) as usize) % segs.len();
            let (ba, bb) = (
                std::fs::read(&segs[a]).unwrap(),
                std::fs::read(&segs[b]).unwrap(),
            );
            std::fs::write(&segs[a], bb).unwrap();
            std::fs::write(&segs[b], ba).unwrap();
            format!("swap {} and {}", segs[a].display(), segs[b].display())
        }
        Kind::ForgeRecord | Kind::ForgeRecordStripSeal => {
            // An attacker who can write the directory: rewrite one record of the active
            // generation with a recomputed check, relink every record after it, rewrite the
            // watermark; optionally remove the seal they cannot recompute.
            let db = raw_sled(dir);
            let recs = db.open_tree("records").unwrap();
            let first = recs.iter().next().unwrap().unwrap().0;
            let first = u64::from_be_bytes(first.as_ref().try_into().unwrap());
            let last = t.records.len() as u64;
            let k = first + rng.below(last - first + 1);
            // The link into record k: from the record before it, wherever it is stored (the
            // template's record k names it).
            let prev = t.records[k as usize - 1].prev_hash;
            forge_from(&recs, &db, k, prev, last, kind, dir)
        }
        Kind::DropTail => {
            let db = raw_sled(dir);
            let recs = db.open_tree("records").unwrap();
            let last = t.records.len() as u64;
            let n = 1 + rng.below(5);
            for s in last - n + 1..=last {
                recs.remove(s.to_be_bytes()).unwrap();
            }
            db.flush().unwrap();
            drop(db);
            write_watermark(dir, last - n);
            format!("drop the last {n} records and rewrite the watermark")
        }
        Kind::Rollback => {
            std::fs::remove_dir_all(dir).unwrap();
            copy_dir(&t.older, dir);
            "roll the directory back to an older copy".into()
        }
    }
}

fn forge_from(
    recs: &sled::Tree,
    db: &sled::Db,
    k: u64,
    mut prev: ChainHash,
    last: u64,
    kind: Kind,
    dir: &Path,
) -> String {
    for s in k..=last {
        let bytes = recs.get(s.to_be_bytes()).unwrap().unwrap();
        let mut rec = decode_record(&bytes).unwrap();
        if s == k {
            rec.event = Event::OpFailed {
                error: "forged".into(),
            };
        }
        rec.prev_hash = prev;
        let new = encode_record(&rec).unwrap();
        prev = chain_hash(&new);
        recs.insert(s.to_be_bytes(), new).unwrap();
    }
    if kind == Kind::ForgeRecordStripSeal {
        db.open_tree("meta").unwrap().remove("seal").unwrap();
    }
    db.flush().unwrap();
    write_watermark(dir, last);
    format!("forge record {k} and relink {k}..={last} ({kind:?})")
}

#[derive(Default, Debug)]
struct Verdict {
    changed: bool,
    by_chain: bool,
    by_seal: bool,
    by_anchor: bool,
}

/// Audits the journal in `dir` read-only and compares what it reads with the template.
fn audit(dir: &Path, t: &Template) -> Verdict {
    let work = tempfile::tempdir().unwrap();
    let opts = ReadOnlyOptions {
        allow_live: false,
        work_dir: Some(work.path().to_path_buf()),
    };
    let ro = match open_read_only(dir, &opts, &mut |_| {}) {
        Ok(ro) => ro,
        // Refused outright: nothing was accepted.
        Err(_) => {
            return Verdict {
                changed: true,
                by_chain: true,
                by_seal: true,
                by_anchor: true,
            }
        }
    };
    let j = ro.journal();
    let rep = j.open_report();
    let mut by_chain =
        rep.lost_records.is_some() || rep.middle_damage.is_some() || rep.tail_quarantined.is_some();
    by_chain |= j.verify().map(|v| v.problem.is_some()).unwrap_or(true);
    let read: Result<Vec<Record>, _> = j.read_from(1).collect();
    by_chain |= read.is_err();
    let changed = match &read {
        Ok(r) => *r != t.records,
        Err(_) => true,
    };
    let by_seal = !j.check_seal(&key()).map(|c| c.is_ok()).unwrap_or(false);
    let by_anchor = j.check_anchor(&t.head).map(|c| c.is_some()).unwrap_or(true);
    Verdict {
        changed,
        by_chain,
        by_seal,
        by_anchor,
    }
}

#[derive(Default, Debug)]
struct Tally {
    cases: u64,
    changed: u64,
    by_chain: u64,
    by_seal: u64,
    by_anchor: u64,
    silent_unkeyed: u64,
    silent_keyed: u64,
}

#[test]
fn tamper_campaign() {
    let cases: u64 = std::env::var("LUNLEDGER_TAMPER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let t = std::sync::Arc::new(template());
    // The untouched template passes every check.
    let clean = audit(&t.dir, &t);
    assert!(
        !clean.changed && !clean.by_chain && !clean.by_seal && !clean.by_anchor,
        "{clean:?}"
    );
    let mut tally: BTreeMap<Kind, Tally> = BTreeMap::new();
    let (mut writes, mut hangs, mut panics) = (Vec::new(), Vec::new(), Vec::new());
    let mut silent_keyed = Vec::new();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for case in 0..cases {
        let kind = KINDS[(case % KINDS.len() as u64) as usize];
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("journal");
        copy_dir(&t.dir, &dir);
        let what = mutate(kind, &dir, &t, &mut rng);
        let before = tree(&dir);
        let (tx, rx) = mpsc::channel();
        let (d2, t2) = (dir.clone(), t.clone());
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| audit(&d2, &t2)));
            let _ = tx.send(r);
        });
        let verdict = match rx.recv_timeout(HANG) {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => {
                panics.push(what);
                continue;
            }
            Err(_) => {
                hangs.push(what);
                continue;
            }
        };
        if tree(&dir) != before {
            writes.push(what.clone());
        }
        let e = tally.entry(kind).or_default();
        e.cases += 1;
        if verdict.changed {
            e.changed += 1;
            e.by_chain += verdict.by_chain as u64;
            e.by_seal += verdict.by_seal as u64;
            e.by_anchor += verdict.by_anchor as u64;
            if !verdict.by_chain {
                e.silent_unkeyed += 1;
            }
            if !verdict.by_chain && !verdict.by_seal && !verdict.by_anchor {
                e.silent_keyed += 1;
                silent_keyed.push(what);
            }
        }
    }
    println!("tamper campaign: {cases} cases");
    println!(
        "  {:<22} {:>5} {:>7} {:>6} {:>6} {:>7} {:>15} {:>13}",
        "kind", "cases", "changed", "chain", "seal", "anchor", "silent(chain)", "silent(all)"
    );
    for (k, e) in &tally {
        println!(
            "  {:<22} {:>5} {:>7} {:>6} {:>6} {:>7} {:>15} {:>13}",
            format!("{k:?}"),
            e.cases,
            e.changed,
            e.by_chain,
            e.by_seal,
            e.by_anchor,
            e.silent_unkeyed,
            e.silent_keyed
        );
    }
    println!(
        "  writes by the read-only audit: {}, hangs: {}, panics: {}",
        writes.len(),
        hangs.len(),
        panics.len()
    );
    assert!(writes.is_empty(), "the audit wrote: {writes:?}");
    assert!(hangs.is_empty(), "hangs: {hangs:?}");
    assert!(panics.is_empty(), "panics: {panics:?}");
    assert!(
        silent_keyed.is_empty(),
        "changed history accepted with key and anchor: {silent_keyed:?}"
    );
    // The forgeries must have been exercised, and they do change history.
    for k in [Kind::ForgeRecord, Kind::DropTail, Kind::Rollback] {
        let e = &tally[&k];
        assert!(e.changed > 0 && e.changed == e.cases, "{k:?}: {e:?}");
    }
}
