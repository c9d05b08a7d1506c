//! Journal benchmark (not a timed test): `cargo bench -p lunledger-journal`.
//!
//! In one run it measures
//! (a) the physical limit: a raw append-only file, write + fdatasync per ~120-byte record;
//! (b) `append_durable` of one record at a time in `Flush` and `Sync` modes, as a ratio to (a);
//! (c) 64 concurrent tokio writers doing `append_durable`: records/s and flushes per record;
//! (d) sled alone on the caller's thread (insert + `flush()`, and + fdatasync of its data file):
//!     what `append_durable` would cost with no journal around it, so (b) / (d) is the journal's
//!     share (target <= 1.2x, issue #16 part 2);
//! (e) the A/B of issue #16 part 2: (b) with the waiting caller leading the commit (the design
//!     now) against (b) with every commit on the writer thread (the design before, still
//!     selectable for this bench: `Journal::set_leader_commits(false)`), alternated within
//!     each round (A,B then B,A), ratio new / old per round.
//! Rounds are interleaved and medians taken, since the machine is noisy. Run it on a tmpfs with
//! `TMPDIR=/dev/shm`.

use lunledger_journal::*;
use lunledger_model::*;
use std::io::Write;
use std::time::Instant;

const N_SINGLE: usize = 1000;
/// Interleaved rounds; `LUNLEDGER_JOURNAL_BENCH_ROUNDS` overrides it (more rounds steady the
/// A/B medians on a tmpfs, where one round takes milliseconds).
const ROUNDS: usize = 5;

fn rounds() -> usize {
    std::env::var("LUNLEDGER_JOURNAL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(ROUNDS)
}
const WRITERS: u64 = 64;
const PER_WRITER: u64 = 50;
/// Each single-writer measurement stops after this long (at least `MIN_SAMPLES` records), so a
/// slow, shared disk cannot push the whole run past a minute.
const BUDGET: std::time::Duration = std::time::Duration::from_millis(1500);
const MIN_SAMPLES: usize = 100;

fn over_budget(start: Instant, samples: usize) -> bool {
    samples >= MIN_SAMPLES && start.elapsed() > BUDGET
}

fn event(i: u64) -> Event {
    Event::AttachReserved {
        slot: Slot::new((i % 4) as u32, (i % 64) as u32),
        attach: i,
        disk: DiskSpec {
            path: format!("/var/lib/lunledger/vm-disks/sandbox-01/layer-{i:020}.vhdx"),
            read_only: true,
            kind: DiskKind::VirtualDisk,
            evd_type: None,
        },
    }
}

fn median(v: &mut [f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p) as usize]
}

/// The raw record: `[u32 len][u32 check][rmp payload]`, about the size of a journal record.
fn frame(i: u64) -> Vec<u8> {
    let payload = rmp_serde::to_vec(&(i, event(i))).expect("encode");
    let check = blake3::hash(&payload);
    let mut frame = Vec::with_capacity(payload.len() + 8);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&check.as_bytes()[..4]);
    frame.extend_from_slice(&payload);
    frame
}

fn since_us(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

/// Runs `one(i)` for up to `N_SINGLE` records within the time budget; each call does one record
/// and returns the µs it measured (preparation it does first is not timed).
fn budgeted(mut one: impl FnMut(u64) -> f64) -> Vec<f64> {
    let mut lat = Vec::with_capacity(N_SINGLE);
    let start = Instant::now();
    for i in 0..N_SINGLE as u64 {
        if over_budget(start, lat.len()) {
            break;
        }
        lat.push(one(i));
    }
    lat
}

fn append_file(dir: &std::path::Path, name: String) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("raw file")
}

/// (a) raw: frames appended, fdatasync after each. Returns per-record µs and the frame size.
fn raw_round(dir: &std::path::Path, round: usize) -> (Vec<f64>, usize) {
    let mut f = append_file(dir, format!("raw-{round}.log"));
    let mut bytes = 0;
    let lat = budgeted(|i| {
        let frame = frame(i);
        bytes += frame.len();
        let t = Instant::now();
        f.write_all(&frame).expect("write");
        f.sync_data().expect("fdatasync");
        since_us(t)
    });
    let n = lat.len().max(1);
    (lat, bytes / n)
}

/// (a'') raw append + sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER) + fdatasync: sled's
/// mechanism followed by the same fdatasync that `Durability::Sync` adds, on a plain file.
fn raw_sfr_round(dir: &std::path::Path, round: usize) -> Vec<f64> {
    use std::os::unix::io::AsRawFd;
    let mut f = append_file(dir, format!("raw-sfr-{round}.log"));
    let mut off = 0i64;
    budgeted(|i| {
        let frame = frame(i);
        let t = Instant::now();
        f.write_all(&frame).expect("write");
        // SAFETY: valid fd, plain integer arguments.
        let rc = unsafe {
            libc::sync_file_range(
                f.as_raw_fd(),
                off,
                frame.len() as i64,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )
        };
        assert_eq!(rc, 0, "sync_file_range");
        f.sync_data().expect("fdatasync");
        let us = since_us(t);
        off += frame.len() as i64;
        us
    })
}

/// (d) sled itself, on the calling thread: insert a record-sized value and `flush()` (then
/// fdatasync sled's data file when `sync`), as the writer does for one record, minus the writer
/// thread and the tokio wake-up.
fn sled_direct_round(dir: &std::path::Path, round: usize, sync: bool) -> Vec<f64> {
    let path = dir.join(format!("sled-direct-{round}-{sync}"));
    let db = sled::Config::new()
        .path(&path)
        .cache_capacity(8 * 1024 * 1024)
        .flush_every_ms(Some(500))
        .open()
        .expect("sled open");
    let tree = db.open_tree("records").expect("sled tree");
    let data = std::fs::File::open(path.join("db")).expect("sled data file");
    let value = vec![0x5a_u8; 171];
    budgeted(|i| {
        let t = Instant::now();
        tree.insert(i.to_be_bytes(), value.as_slice())
            .expect("sled insert");
        db.flush().expect("sled flush");
        if sync {
            data.sync_data().expect("fdatasync");
        }
        since_us(t)
    })
}

/// (a') raw pre-zeroed file: pwrite + fdatasync per record (no size change to journal).
fn raw_prezeroed_round(dir: &std::path::Path, round: usize) -> Vec<f64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join(format!("raw-zeroed-{round}.log")))
        .expect("raw file");
    f.write_all_at(&vec![0u8; N_SINGLE * 160], 0).expect("zero");
    f.sync_all().expect("fsync");
    let mut off = 0u64;
    budgeted(|i| {
        let frame = frame(i);
        let t = Instant::now();
        f.write_all_at(&frame, off).expect("pwrite");
        f.sync_data().expect("fdatasync");
        let us = since_us(t);
        off += frame.len() as u64;
        us
    })
}

fn opts(durability: Durability) -> JournalOptions {
    JournalOptions {
        durability,
        ..JournalOptions::default()
    }
}

/// (b) one writer, `append_durable` per record; `leader`: the caller leads its commit (else
/// the writer thread commits, the design before issue #16 part 2). Returns per-record µs and
/// stats.
fn single_round(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    durability: Durability,
    leader: bool,
) -> (Vec<f64>, JournalStats) {
    let j = Journal::open(dir, opts(durability)).expect("open");
    j.set_leader_commits(leader);
    let lat = rt.block_on(async {
        let mut lat = Vec::with_capacity(N_SINGLE);
        let start = Instant::now();
        for i in 0..N_SINGLE as u64 {
            if over_budget(start, lat.len()) {
                break;
            }
            let t = Instant::now();
            j.append_durable(vec![(i, event(i))]).await.expect("append");
            lat.push(since_us(t));
        }
        lat
    });
    (lat, j.stats())
}

/// (c) 64 concurrent writers. Returns records/s and stats.
fn concurrent_round(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    durability: Durability,
    leader: bool,
) -> (f64, JournalStats) {
    let j = Journal::open(dir, opts(durability)).expect("open");
    j.set_leader_commits(leader);
    let t = Instant::now();
    rt.block_on(async {
        let mut hs = Vec::new();
        for w in 0..WRITERS {
            let j = j.clone();
            hs.push(tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    j.append_durable(vec![(w, event(w * 1000 + i))])
                        .await
                        .expect("append");
                }
            }));
        }
        for h in hs {
            h.await.expect("join");
        }
    });
    let secs = t.elapsed().as_secs_f64();
    ((WRITERS * PER_WRITER) as f64 / secs, j.stats())
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let base = tempfile::tempdir().expect("tempdir");

    let mut raw_med = Vec::new();
    let mut raw_all = Vec::new();
    let mut flush_med = Vec::new();
    let mut flush_all = Vec::new();
    let mut sync_med = Vec::new();
    let mut sync_all = Vec::new();
    let mut ratio_flush = Vec::new();
    let mut ratio_sync = Vec::new();
    let mut raw_frame = 0;
    let mut zeroed_med = Vec::new();
    let mut zeroed_all = Vec::new();
    let mut ratio_sync_zeroed = Vec::new();
    let mut ratio_zeroed = Vec::new();
    let mut sfr_med = Vec::new();
    let mut sfr_all = Vec::new();
    let mut ratio_sync_sfr = Vec::new();
    let mut sync_syncs_per_rec = 0.0;
    let (mut direct_flush_med, mut direct_sync_med) = (Vec::new(), Vec::new());
    let (mut writer_share_flush, mut writer_share_sync) = (Vec::new(), Vec::new());
    let (mut old_flush_med, mut old_sync_med) = (Vec::new(), Vec::new());
    let (mut ab_flush, mut ab_sync) = (Vec::new(), Vec::new());
    let (mut old_share_flush, mut old_share_sync) = (Vec::new(), Vec::new());
    let mut leader_rounds_per_rec = 0.0;
    let rounds = rounds();
    for round in 0..rounds {
        let (mut r, fb) = raw_round(base.path(), round);
        raw_frame = fb;
        // A (leader, now) and B (writer thread, before) back to back, their order alternating
        // from round to round so that drift favours neither.
        let ab = |d: Durability, name: &str| {
            let run = |leader: bool| {
                let dir = base.path().join(format!("{name}-{round}-{leader}"));
                single_round(&rt, &dir, d, leader)
            };
            if round % 2 == 0 {
                let new = run(true);
                (new, run(false))
            } else {
                let old = run(false);
                (run(true), old)
            }
        };
        let ((mut f, fst), (mut fo, _)) = ab(Durability::Flush, "flush");
        leader_rounds_per_rec = fst.leader_rounds as f64 / fst.appended.max(1) as f64;
        let ((mut s, st), (mut so, _)) = ab(Durability::Sync, "sync");
        sync_syncs_per_rec = st.fdatasyncs as f64 / st.appended.max(1) as f64;
        let (fom, som) = (median(&mut fo), median(&mut so));
        let mut z = raw_prezeroed_round(base.path(), round);
        let (rm, fm, sm) = (median(&mut r), median(&mut f), median(&mut s));
        let zm = median(&mut z);
        let mut q = raw_sfr_round(base.path(), round);
        let qm = median(&mut q);
        let df = median(&mut sled_direct_round(base.path(), round, false));
        let ds = median(&mut sled_direct_round(base.path(), round, true));
        direct_flush_med.push(df);
        direct_sync_med.push(ds);
        writer_share_flush.push(fm / df);
        writer_share_sync.push(sm / ds);
        old_share_flush.push(fom / df);
        old_share_sync.push(som / ds);
        old_flush_med.push(fom);
        old_sync_med.push(som);
        ab_flush.push(fm / fom);
        ab_sync.push(sm / som);
        sfr_med.push(qm);
        ratio_sync_sfr.push(sm / qm);
        sfr_all.extend(q);
        zeroed_med.push(zm);
        ratio_sync_zeroed.push(sm / zm);
        ratio_zeroed.push(zm / rm);
        zeroed_all.extend(z);
        raw_med.push(rm);
        flush_med.push(fm);
        sync_med.push(sm);
        ratio_flush.push(fm / rm);
        ratio_sync.push(sm / rm);
        raw_all.extend(r);
        flush_all.extend(f);
        sync_all.extend(s);
    }

    let mut conc = Vec::new();
    for (round, d) in [
        Durability::Flush,
        Durability::Sync,
        Durability::Flush,
        Durability::Sync,
        Durability::Flush,
        Durability::Sync,
    ]
    .into_iter()
    .enumerate()
    {
        for leader in [round % 4 < 2, round % 4 >= 2] {
            let dir = base.path().join(format!("conc-{round}-{leader}"));
            let (rps, st) = concurrent_round(&rt, &dir, d, leader);
            conc.push((d, leader, rps, st));
        }
    }

    println!();
    println!("lunledger-journal bench — {rounds} interleaved rounds of up to {N_SINGLE} records ({} ms budget each); medians (per-round ratios, median of rounds)", BUDGET.as_millis());
    let sample = Record {
        schema: SCHEMA_VERSION,
        seq: 123_456,
        ts_micros: 1_700_000_000_000_000,
        op: 77,
        event: event(123_456),
        prev_hash: [0xab; 32],
    };
    println!(
        "raw frame {raw_frame} B (u32 len + u32 check + rmp payload); journal stored record {} B (+8 B key; includes 32 B prev_hash, 8 B check)",
        encode_record(&sample).map_or(0, |b| b.len())
    );
    println!();
    println!("| measurement | median µs | p99 µs | rec/s | ratio vs raw (a) | target |");
    println!("|---|---:|---:|---:|---:|---|");
    let r99 = pct(&mut raw_all, 0.99);
    let f99 = pct(&mut flush_all, 0.99);
    let s99 = pct(&mut sync_all, 0.99);
    let rm = median(&mut raw_med);
    let fm = median(&mut flush_med);
    let sm = median(&mut sync_med);
    let rf = median(&mut ratio_flush);
    let rs = median(&mut ratio_sync);
    println!("| (a) raw write + fdatasync per record | {rm:.1} | {r99:.1} | {:.0} | 1.00 | physical limit |", 1e6 / rm);
    println!("| (b) append_durable, Flush (sled flush = sync_file_range) | {fm:.1} | {f99:.1} | {:.0} | {rf:.2} | (not power-safe) |", 1e6 / fm);
    println!(
        "| (b) append_durable, Sync (flush + fdatasync db) | {sm:.1} | {s99:.1} | {:.0} | {rs:.2} | <= 1.30 {} |",
        1e6 / sm,
        if rs <= 1.3 { "MET" } else { "MISSED" }
    );
    let zm = median(&mut zeroed_med);
    let z99 = pct(&mut zeroed_all, 0.99);
    println!(
        "| (a') raw pre-zeroed file, pwrite + fdatasync | {zm:.1} | {z99:.1} | {:.0} | {:.2} (Sync / this = {:.2}) | reference |",
        1e6 / zm,
        median(&mut ratio_zeroed),
        median(&mut ratio_sync_zeroed)
    );
    let qm = median(&mut sfr_med);
    let q99 = pct(&mut sfr_all, 0.99);
    println!(
        "| (a'') raw append + sync_file_range + fdatasync | {qm:.1} | {q99:.1} | {:.0} | {:.2} (Sync / this = {:.2}) | reference |",
        1e6 / qm,
        qm / rm,
        median(&mut ratio_sync_sfr)
    );
    let dfm = median(&mut direct_flush_med);
    let dsm = median(&mut direct_sync_med);
    println!(
        "| (d) sled insert + flush() on the caller's thread (no writer) | {dfm:.1} | | {:.0} | {:.2} (Flush (b) / this = {:.2}) | reference |",
        1e6 / dfm,
        dfm / rm,
        median(&mut writer_share_flush)
    );
    println!(
        "| (d') the same + fdatasync of sled's data file | {dsm:.1} | | {:.0} | {:.2} (Sync (b) / this = {:.2}) | reference |",
        1e6 / dsm,
        dsm / rm,
        median(&mut writer_share_sync)
    );
    println!();
    println!("| per durable point vs sled insert + flush on the caller's thread (same rounds; target <= 1.2x) | leader (now) | writer thread (before) |");
    println!("|---|---:|---:|");
    for (name, now, before) in [
        (
            "Flush: (b) / (d)",
            &mut writer_share_flush,
            &mut old_share_flush,
        ),
        (
            "Sync: (b) / (d')",
            &mut writer_share_sync,
            &mut old_share_sync,
        ),
    ] {
        let (n, b) = (median(now), median(before));
        println!(
            "| {name} | {n:.2}x {} | {b:.2}x {} |",
            if n <= 1.2 { "MET" } else { "MISSED" },
            if b <= 1.2 { "MET" } else { "MISSED" }
        );
    }
    println!();
    println!(
        "| (e) A/B, interleaved: append_durable with the caller leading (new) vs the writer thread (old) | new µs | old µs | new / old (median of per-round ratios) | per-round ratios |"
    );
    println!("|---|---:|---:|---:|---|");
    for (name, new, old, ratios) in [
        ("Flush", &mut flush_med, &mut old_flush_med, &mut ab_flush),
        ("Sync", &mut sync_med, &mut old_sync_med, &mut ab_sync),
    ] {
        let per_round = ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>();
        println!(
            "| {name} | {:.1} | {:.1} | {:.2} | {per_round:?} |",
            median(new),
            median(old),
            median(ratios)
        );
    }
    println!(
        "leader rounds per record in single-writer Flush (last round): {leader_rounds_per_rec:.2}"
    );
    println!("fdatasyncs per record in single-writer Sync: {sync_syncs_per_rec:.2}");
    println!(
        "per-round medians µs raw {:?} raw-zeroed {:?} flush {:?} sync {:?}",
        raw_med
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>(),
        zeroed_med
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>(),
        flush_med
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>(),
        sync_med
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>(),
    );
    println!(
        "per-round ratios Flush {:?} Sync {:?}; ratio of pooled medians: Flush {:.2}, Sync {:.2}",
        ratio_flush
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>(),
        ratio_sync
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>(),
        median(&mut flush_all.clone()) / median(&mut raw_all.clone()),
        median(&mut sync_all.clone()) / median(&mut raw_all.clone()),
    );
    println!();
    println!("| (c) {WRITERS} concurrent writers x {PER_WRITER} | commit | rec/s | flushes | flushes/record | fdatasyncs | largest batch | leader rounds | target |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---|");
    for (d, leader, rps, st) in &conc {
        let fpr = st.flushes as f64 / st.appended as f64;
        println!(
            "| {d:?} | {} | {rps:.0} | {} | {fpr:.3} | {} | {} | {} | <= 0.10 flushes/record {} |",
            if *leader { "leader" } else { "writer thread" },
            st.flushes,
            st.fdatasyncs,
            st.largest_batch,
            st.leader_rounds,
            if fpr <= 0.1 { "MET" } else { "MISSED" }
        );
    }
    let raw_rps = 1e6 / rm;
    for want in [Durability::Flush, Durability::Sync] {
        for leader in [true, false] {
            let mut v: Vec<f64> = conc
                .iter()
                .filter(|c| c.0 == want && c.1 == leader)
                .map(|c| c.2)
                .collect();
            let m = median(&mut v);
            println!(
                "(c) {want:?}, {}: median {m:.0} rec/s = {:.2}x single-writer raw fdatasync rate",
                if leader { "leader" } else { "writer thread" },
                m / raw_rps
            );
        }
    }
    println!();
    println!("total bench time {:.1} s", started.elapsed().as_secs_f64());
}
