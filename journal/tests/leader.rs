//! Leader/follower group commit (issue #16 part 2): a waiting caller commits on its own thread
//! when no flush is in progress, followers share its flush or lead the next one, and the writer
//! thread commits for waiters that cannot block (a current_thread runtime) and for records
//! nobody waits for. Order, chain and group commit must hold on every path.

mod common;
use common::*;
use lunledger_journal::*;
use lunledger_model::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const TASKS: u64 = 48;
const PER_TASK: u64 = 15;

fn event(t: u64, i: u64) -> Event {
    Event::OpFailed {
        error: format!("{t}/{i}"),
    }
}

/// Every task's records are stored in its own order, all sequence numbers once, the chain
/// verifies after a reopen.
fn check_stored(dir: &Path, total: u64) {
    let j = Journal::open(dir, opts()).unwrap();
    assert_eq!(j.durable_seq(), total);
    let recs = read_all(&j);
    assert_eq!(
        recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let mut per_task = std::collections::BTreeMap::<u64, Vec<String>>::new();
    for r in &recs {
        if let Event::OpFailed { error } = &r.event {
            per_task.entry(r.op).or_default().push(error.clone());
        }
    }
    for (t, got) in per_task {
        let want: Vec<String> = (0..got.len() as u64).map(|i| format!("{t}/{i}")).collect();
        assert_eq!(got, want, "task {t} out of order");
    }
    assert_eq!(j.verify().unwrap().problem, None);
}

/// `TASKS` tasks doing `append_durable` concurrently on the current runtime.
async fn concurrent_waiters(j: &Journal) -> BTreeSet<u64> {
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let j = j.clone();
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..PER_TASK {
                let seq = j.append_durable(vec![(t, event(t, i))]).await.unwrap();
                assert!(j.durable_seq() >= seq, "returned before durable");
                seqs.push(seq);
            }
            seqs
        }));
    }
    let mut all = BTreeSet::new();
    for h in handles {
        for s in h.await.unwrap() {
            assert!(all.insert(s), "seq {s} twice");
        }
    }
    all
}

fn run_on(rt: tokio::runtime::Runtime, durability: Durability) -> JournalStats {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(
        dir.path(),
        JournalOptions {
            durability,
            ..opts()
        },
    )
    .unwrap();
    let all = rt.block_on(concurrent_waiters(&j));
    let total = TASKS * PER_TASK;
    assert_eq!(all.len() as u64, total);
    let st = j.stats();
    assert_eq!(st.appended, total);
    assert!(
        st.flushes < st.durable_waits,
        "no flush was shared ({} flushes for {} waits)",
        st.flushes,
        st.durable_waits
    );
    if durability == Durability::Sync {
        assert_eq!(st.fdatasyncs, st.flushes);
    }
    drop(j);
    drop(rt);
    check_stored(dir.path(), total);
    st
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn multi_thread_runtime_waiters_lead_and_share_flushes() {
    for d in [Durability::Flush, Durability::Sync] {
        let st = run_on(multi_thread(), d);
        assert!(st.leader_rounds > 0, "{d:?}: no waiter led: {st:?}");
    }
}

/// `block_in_place` panics on a current_thread runtime: the writer thread commits instead.
#[test]
fn current_thread_runtime_waiters_never_block_and_the_writer_commits() {
    for d in [Durability::Flush, Durability::Sync] {
        let st = run_on(current_thread(), d);
        assert_eq!(
            st.leader_rounds, 0,
            "{d:?}: a waiter led on a current_thread runtime"
        );
    }
}

/// Both runtimes on one journal at once: leaders and the writer thread commit side by side.
#[test]
fn leaders_and_the_writer_thread_together_keep_order() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), opts()).unwrap();
    let j2 = j.clone();
    let other = std::thread::spawn(move || current_thread().block_on(concurrent_waiters(&j2)));
    let mine = multi_thread().block_on(concurrent_waiters(&j));
    let theirs = other.join().unwrap();
    assert_eq!(mine.len() + theirs.len(), 2 * (TASKS * PER_TASK) as usize);
    assert!(mine.is_disjoint(&theirs));
    drop(j);
    // Both halves used op ids 0..TASKS: check order per (op) on the union.
    let j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(read_all(&j).len() as u64, 2 * TASKS * PER_TASK);
    assert_eq!(j.verify().unwrap().problem, None);
}

/// Blocking waiters on plain threads lead too, and still share flushes.
#[test]
fn blocking_waiters_lead_and_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), opts()).unwrap();
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let j = j.clone();
            std::thread::spawn(move || {
                for i in 0..30 {
                    let seq = j.append(t, event(t, i)).unwrap();
                    j.wait_durable_blocking(seq).unwrap();
                    assert!(j.durable_seq() >= seq);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = j.stats();
    assert!(st.leader_rounds > 0, "{st:?}");
    assert!(st.flushes < st.durable_waits, "{st:?}");
    drop(j);
    check_stored(dir.path(), 16 * 30);
}

/// The old design (every round on the writer thread) stays selectable for the A/B benchmark
/// and behaves the same.
#[test]
fn writer_thread_only_mode_for_the_benchmark() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), opts()).unwrap();
    j.set_leader_commits(false);
    let rt = multi_thread();
    let all = rt.block_on(concurrent_waiters(&j));
    assert_eq!(all.len() as u64, TASKS * PER_TASK);
    assert_eq!(j.stats().leader_rounds, 0);
    j.set_leader_commits(true);
    for _ in 0..10 {
        let seq = rt
            .block_on(j.append_durable(vec![(1, Event::OpFinished)]))
            .unwrap();
        assert!(j.durable_seq() >= seq);
    }
    assert!(j.stats().leader_rounds > 0);
    drop(j);
    drop(rt);
    let j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(j.last_seq(), TASKS * PER_TASK + 10);
    assert_eq!(j.verify().unwrap().problem, None);
}

/// Records nobody waits for still reach sled (the writer thread) and a later waiter's flush
/// covers them; a waiter inside an async block on a plain executor (no tokio) falls back too.
#[test]
fn non_durable_appends_reach_sled_without_a_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(
        dir.path(),
        JournalOptions {
            flush_every_ms: Some(20),
            ..opts()
        },
    )
    .unwrap();
    for i in 0..10 {
        j.append(1, event(1, i)).unwrap();
    }
    let start = std::time::Instant::now();
    while j.durable_seq() < 10 {
        assert!(start.elapsed() < Duration::from_secs(10), "never flushed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(read_all(&j).len(), 10);
    let seq = j.append(1, event(1, 10)).unwrap();
    // No tokio runtime at all: a minimal executor polls the future.
    block_on_plain(j.wait_durable(seq)).unwrap();
    assert_eq!(j.stats().leader_rounds, 0);
    assert_eq!(j.durable_seq(), seq);
}

/// A tiny executor (a thread park per wake-up), so that a wait runs outside tokio.
fn block_on_plain<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// A halt while waiters are queued behind a leader ends every wait with `Halted`, and nothing
/// is committed after it.
#[test]
fn halt_ends_every_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), opts()).unwrap();
    let rt = multi_thread();
    let results = rt.block_on(async {
        let mut hs = Vec::new();
        for t in 0..TASKS {
            let j = j.clone();
            hs.push(tokio::spawn(async move {
                let mut last = Ok(0);
                for i in 0..200 {
                    last = j.append_durable(vec![(t, event(t, i))]).await;
                    if last.is_err() {
                        break;
                    }
                }
                last
            }));
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        j.halt();
        let mut out = Vec::new();
        for h in hs {
            out.push(tokio::time::timeout(Duration::from_secs(10), h).await);
        }
        out
    });
    for r in results {
        let r = r.expect("a waiter hung after halt").unwrap();
        assert!(
            matches!(r, Err(JournalError::Halted) | Ok(_)),
            "unexpected {r:?}"
        );
    }
    let after = j.durable_seq();
    assert!(matches!(
        rt.block_on(j.append_durable(vec![(1, Event::OpFinished)])),
        Err(JournalError::Halted)
    ));
    assert!(matches!(
        j.wait_durable_blocking(1),
        Err(JournalError::Halted)
    ));
    assert_eq!(j.durable_seq(), after);
}

/// Leaders hand over many times a second, with the writer thread draining non-durable appends
/// in between: no waiter is ever left asleep (a stale durable state published after a newer
/// one could leave its waiters asleep until something else published).
#[test]
fn no_waiter_is_left_asleep_under_churn() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), opts()).unwrap();
    let rt = multi_thread();
    rt.block_on(async {
        for round in 0..20u64 {
            let mut hs = Vec::new();
            for t in 0..8u64 {
                let j = j.clone();
                hs.push(tokio::spawn(async move {
                    for i in 0..25 {
                        // Every other record rides the next durable point, as the manager's
                        // step records do.
                        j.append(t, event(t, 2 * i)).unwrap();
                        let seq = j.append(t, event(t, 2 * i + 1)).unwrap();
                        j.wait_durable(seq).await.unwrap();
                    }
                }));
            }
            for h in hs {
                tokio::time::timeout(Duration::from_secs(30), h)
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: a waiter was left asleep"))
                    .unwrap();
            }
        }
    });
    assert_eq!(j.durable_seq(), 20 * 8 * 50);
    let st = j.stats();
    assert!(st.flushes < st.durable_waits, "{st:?}");
}
