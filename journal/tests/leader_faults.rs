//! Leader/follower group commit under storage faults (issue #16 part 2): a fault during a
//! leader's flush reaches every waiter (leader and followers, async and blocking) as the same
//! typed error; a halt while a leader is stuck in its flush ends the followers' waits at once.
//!
//! Needs the `testing` feature: `cargo test -p lunledger-journal --features testing --test
//! leader_faults`.

mod common;

use common::multi_thread;
use lunledger_journal::faults::{self, Site};
use lunledger_journal::*;
use lunledger_model::*;
use std::time::{Duration, Instant};

/// Faults are armed process-wide: the tests here run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn sync_opts() -> JournalOptions {
    JournalOptions {
        durability: Durability::Sync,
        flush_every_ms: None,
        ..JournalOptions::default()
    }
}

fn event(i: u64) -> Event {
    Event::OpFailed {
        error: format!("{i}"),
    }
}

fn is_sync_eio(e: &JournalError) -> bool {
    match e {
        JournalError::Storage { action, source, .. } => {
            *action == "syncing the journal's data file" && source.raw_os_error() == Some(libc::EIO)
        }
        _ => false,
    }
}

/// The leader's fdatasync fails (after a stall that lets followers queue up behind it): every
/// waiter gets the typed storage error, none hangs, and the journal stays stopped.
#[test]
fn a_failed_leader_flush_reaches_every_waiter_typed() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), sync_opts()).unwrap();
    let rt = multi_thread();
    rt.block_on(j.append_durable(vec![(0, event(0))])).unwrap();
    faults::arm_stall(Site::DataSync, Duration::from_millis(300));
    let results = rt.block_on(async {
        let mut hs = Vec::new();
        for t in 1..=32u64 {
            let j = j.clone();
            hs.push(tokio::spawn(async move {
                j.append_durable(vec![(t, event(t))]).await
            }));
            if t == 1 {
                // Let the first one become the leader and stall in its flush.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // And a blocking waiter on a plain thread.
        let jb = j.clone();
        let blocking = std::thread::spawn(move || {
            let seq = jb.append(99, event(99))?;
            jb.wait_durable_blocking(seq)
        });
        let mut out = Vec::new();
        for h in hs {
            out.push(
                tokio::time::timeout(Duration::from_secs(20), h)
                    .await
                    .expect("a waiter hung")
                    .unwrap()
                    .map(|_| ()),
            );
        }
        out.push(blocking.join().unwrap());
        out
    });
    faults::disarm();
    for r in &results {
        match r {
            Err(e) if is_sync_eio(e) => {}
            other => panic!("expected the typed fdatasync failure, got {other:?}"),
        }
    }
    // Sticky: later calls get it too, and nothing more becomes durable.
    let durable = j.durable_seq();
    assert_eq!(durable, 1);
    let later = rt.block_on(j.append_durable(vec![(1, event(1))]));
    assert!(
        matches!(&later, Err(JournalError::Halted)) || later.as_ref().is_err_and(is_sync_eio),
        "{later:?}"
    );
    assert!(j.wait_durable_blocking(1).is_err());
    assert_eq!(j.durable_seq(), durable);
    drop(j);
    drop(rt);
    let j = Journal::open(dir.path(), sync_opts()).unwrap();
    assert!(j.last_seq() >= 1);
    assert_eq!(j.verify().unwrap().problem, None);
}

/// A halt while the leader is stuck in a stalled flush: the followers' waits end with
/// `Halted` at once (not after the stall), and the leader's when its flush returns.
#[test]
fn halt_during_leadership_ends_the_followers_waits_at_once() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), sync_opts()).unwrap();
    let rt = multi_thread();
    rt.block_on(j.append_durable(vec![(0, event(0))])).unwrap();
    let stall = Duration::from_millis(1500);
    faults::arm_stall(Site::DataSync, stall);
    let jl = j.clone();
    let leader = std::thread::spawn(move || {
        let seq = jl.append(1, event(1))?;
        jl.wait_durable_blocking(seq)
    });
    std::thread::sleep(Duration::from_millis(100));
    let (followers, took) = rt.block_on(async {
        let mut hs = Vec::new();
        for t in 2..20u64 {
            let j = j.clone();
            hs.push(tokio::spawn(async move {
                j.append_durable(vec![(t, event(t))]).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let start = Instant::now();
        j.halt();
        let mut out = Vec::new();
        for h in hs {
            out.push(h.await.unwrap());
        }
        (out, start.elapsed())
    });
    assert!(
        took < stall / 2,
        "followers waited for the stuck leader: {took:?}"
    );
    for r in followers {
        assert!(matches!(r, Err(JournalError::Halted)), "{r:?}");
    }
    let led = leader.join().unwrap();
    faults::disarm();
    // The leader's flush failed after the halt: either error is a refusal, never success.
    assert!(led.is_err(), "{led:?}");
    assert_eq!(j.durable_seq(), 1);
}

/// On a current_thread runtime the writer thread commits: a storage failure there reaches the
/// waiters the same way.
#[test]
fn a_failed_flush_on_a_current_thread_runtime_is_typed_too() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), sync_opts()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    faults::arm(Site::DataSync, libc::EIO, 0);
    let results = rt.block_on(async {
        let mut hs = Vec::new();
        for t in 0..8u64 {
            let j = j.clone();
            hs.push(tokio::spawn(async move {
                j.append_durable(vec![(t, event(t))]).await
            }));
        }
        let mut out = Vec::new();
        for h in hs {
            out.push(h.await.unwrap());
        }
        out
    });
    faults::disarm();
    assert_eq!(j.stats().leader_rounds, 0);
    for r in results {
        assert!(r.as_ref().is_err_and(is_sync_eio), "{r:?}");
    }
}

/// A wait that must stay cancellable never leads: a timeout around it fires while the writer
/// thread is stuck in a stalled flush (the manager's `durable_timeout` relies on this).
#[test]
fn a_cancellable_wait_never_leads_and_its_timeout_fires_on_a_stalled_disk() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), sync_opts()).unwrap();
    let rt = multi_thread();
    for i in 0..5 {
        let seq = j.append(i, event(i)).unwrap();
        rt.block_on(j.wait_durable_cancellable(Some(i), seq))
            .unwrap();
    }
    assert_eq!(j.stats().leader_rounds, 0);
    let stall = Duration::from_millis(1500);
    faults::arm_stall(Site::DataSync, stall);
    let seq = j.append(9, event(9)).unwrap();
    let start = Instant::now();
    let r = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_millis(200),
            j.wait_durable_cancellable(None, seq),
        )
        .await
    });
    let took = start.elapsed();
    assert!(r.is_err(), "the wait did not time out: {r:?}");
    assert!(
        took < stall / 2,
        "the timeout waited for the stalled flush: {took:?}"
    );
    j.halt();
    drop(j);
    drop(rt);
    faults::disarm();
}
