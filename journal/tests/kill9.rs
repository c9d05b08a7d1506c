//! A child process appending durably is killed with SIGKILL; every acknowledged record survives
//! and the journal reopens with an intact chain.

use lunledger_journal::*;
use lunledger_model::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Child half: appends durably forever, printing each acknowledged seq.
#[test]
#[ignore]
fn child_append_forever() {
    let Some(dir) = std::env::var_os("LUNLEDGER_KILL_DIR") else {
        return;
    };
    let j = Journal::open(&dir, JournalOptions::default()).unwrap();
    append_and_ack_forever(&j, 8);
}

/// Appends durably from `writers` tasks forever, printing `ACK <seq>` for each acknowledged
/// record (the parent's proof of what must survive).
fn append_and_ack_forever(j: &Journal, writers: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut hs = Vec::new();
        for w in 0..writers {
            let j = j.clone();
            hs.push(tokio::spawn(async move {
                for i in 0.. {
                    let event = Event::OpFailed {
                        error: format!("{w}/{i}"),
                    };
                    let seq = j.append_durable(vec![(w, event)]).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {seq}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for h in hs {
            h.await.unwrap();
        }
    });
}

/// Runs this test binary's ignored child test `name` with `env` naming its journal directory;
/// the child reports on a piped stdout.
fn spawn_child(name: &str, env: &str, dir: &std::path::Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", name, "--nocapture"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child("child_append_forever", "LUNLEDGER_KILL_DIR", dir.path());
    let stdout = child.stdout.take().unwrap();
    let mut max_acked = 0u64;
    let start = Instant::now();
    let mut lines = BufReader::new(stdout).lines();
    while start.elapsed() < Duration::from_millis(700) {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(s) = l.strip_prefix("ACK ") {
                    max_acked = max_acked.max(s.trim().parse().unwrap());
                }
            }
            _ => break,
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(max_acked > 0, "child acknowledged nothing");
    let j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    println!(
        "acked {max_acked}, recovered {}, report {:?}",
        j.last_seq(),
        j.open_report()
    );
    assert!(j.last_seq() >= max_acked, "lost acknowledged records");
    assert_eq!(j.verify().unwrap().problem, None);
}

/// Child half of the rotation kill loop: appends durably from 4 tasks while a thread writes a
/// checkpoint every 25 durable records, with rotation at every checkpoint (segment_records 20).
#[test]
#[ignore]
fn child_append_and_rotate_forever() {
    let Some(dir) = std::env::var_os("LUNLEDGER_ROTATE_DIR") else {
        return;
    };
    let opts = JournalOptions {
        segment_records: 20,
        ..JournalOptions::default()
    };
    let j = Journal::open(&dir, opts).unwrap();
    let cp = j.clone();
    std::thread::spawn(move || {
        let mut last = cp.latest_checkpoint().unwrap().map_or(0, |c| c.at_seq);
        loop {
            let at = cp.durable_seq();
            if at >= last + 25 {
                cp.write_checkpoint(at, at.to_be_bytes().to_vec()).unwrap();
                last = at;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    append_and_ack_forever(&j, 4);
}

/// What an interrupted rotation leaves on disk (before open cleans it up): a second sled
/// generation, an unrenamed `CURRENT`, or an unrenamed segment.
fn rotation_leftovers(dir: &std::path::Path) -> bool {
    let gens = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n == "sled" || (n.starts_with("sled-") && n[5..].bytes().all(|c| c.is_ascii_digit()))
        })
        .count();
    let seg_tmp = std::fs::read_dir(dir.join(ARCHIVE_DIR))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        })
        .unwrap_or(false);
    gens > 1 || dir.join("CURRENT.tmp").exists() || seg_tmp
}

/// SIGKILL while the child creates its journal (its first moments, spread over the time it
/// takes to start and open): whatever the kill interrupted, the next open finds either a new
/// journal or a whole one, and verify finds nothing wrong (a store left without its watermark
/// would be reported as a journal that lost it).
#[test]
fn sigkill_while_a_journal_is_created_leaves_a_new_or_a_whole_one() {
    let kills: u64 = std::env::var("LUNLEDGER_CREATE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    // Where the child's open happens: measured once, so that the kills spread over it.
    let probe = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut child = spawn_child("child_append_forever", "LUNLEDGER_KILL_DIR", probe.path());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The harness prints its own lines first; the first ACK comes after the open. (The pipe
    // stays open until the child is dead: a write to a closed one would panic it.)
    for l in lines.by_ref() {
        if l.map_or(true, |l| l.starts_with("ACK ")) {
            break;
        }
    }
    let first_ack = start.elapsed();
    child.kill().unwrap();
    child.wait().unwrap();
    drop(lines);
    let span = first_ack.as_micros().max(1000) as u64;
    let mut created = 0;
    for kill in 0..kills {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn_child("child_append_forever", "LUNLEDGER_KILL_DIR", dir.path());
        // Over [0, first ack], denser early: the first kills land before the journal exists,
        // many inside its creation (its first milliseconds), the last ones after it.
        std::thread::sleep(Duration::from_micros(span * kill * kill / (kills * kills)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if dir.path().join("sled").exists() {
            created += 1;
        }
        let j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        let v = j.verify().unwrap();
        assert_eq!(v.problem, None, "kill {kill}/{kills} of {span} µs: {v:?}");
    }
    println!("creation kill loop: {kills} kills over {span} µs, {created} left a store");
}

/// SIGKILL at random moments of a workload that rotates constantly: every acknowledged record
/// survives, the chain verifies across segments, and exactly one generation is left.
#[test]
fn sigkill_during_rotations_loses_nothing() {
    let kills: u32 = std::env::var("LUNLEDGER_ROTATE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut mid_rotation = 0;
    let mut max_acked = 0u64;
    for kill in 0..kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = Duration::from_millis(40 + seed % 260);
        let mut child = spawn_child(
            "child_append_and_rotate_forever",
            "LUNLEDGER_ROTATE_DIR",
            dir.path(),
        );
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acked = 0u64;
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if let Some(s) = l.strip_prefix("ACK ") {
                    acked = acked.max(s.trim().parse().unwrap_or(0));
                }
            }
            acked
        });
        std::thread::sleep(wait);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        max_acked = max_acked.max(reader.join().unwrap());
        if rotation_leftovers(dir.path()) {
            mid_rotation += 1;
        }
        let j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        assert!(
            j.last_seq() >= max_acked,
            "kill {kill}: lost acknowledged records"
        );
        let v = j.verify().unwrap();
        assert_eq!(v.problem, None, "kill {kill}: {v:?}");
        assert_eq!(v.records_checked, j.last_seq(), "kill {kill}");
        assert!(
            !rotation_leftovers(dir.path()),
            "kill {kill}: open left rotation debris"
        );
    }
    let j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    println!(
        "rotation kill loop: {kills} kills, {mid_rotation} landed mid-rotation, {} records, {} segments, generation {}, 0 lost",
        j.last_seq(),
        j.segments().len(),
        j.generation()
    );
    assert!(j.segments().len() > 1, "the workload never rotated");
}
