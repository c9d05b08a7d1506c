//! Group commit: a waiting caller leads, the writer thread drains the rest.
//!
//! `append` assigns the next sequence number under the queue lock and pushes the record. Records
//! reach sled in *commit rounds*, run by whoever holds the commit lock ([`Committer`]): a round
//! takes the whole queue, encodes each record chained to the one before, inserts it into sled
//! in sequence order and, when any waiter needs durability, flushes once for the whole batch
//! (sled `flush()`, plus fdatasync of sled's data file in `Durability::Sync`), then publishes
//! the new durable sequence number to every waiter at once.
//!
//! The first waiter that needs durability and finds the commit lock free becomes the leader and
//! runs the round on its own thread (an async waiter inside `block_in_place` on a multi-thread
//! tokio runtime); waiters arriving meanwhile are followers: the leader's flush covers them if
//! their records were in its batch, and otherwise one of them leads the next round when the
//! leader lets go (it bumps `DurableState::epoch` so that they look again). No thread hand-off
//! is on that path. The writer thread remains for what has no leader: non-durable appends
//! (inserted soon, flushed after `flush_every` idle), waiters that cannot block (a
//! current_thread runtime) or must stay cancellable ([`crate::Journal::wait_durable_cancellable`]:
//! a leader cannot be cancelled during its flush), waits given up on, the final flush on close,
//! and the old design kept for the A/B benchmark ([`crate::Journal::set_leader_commits`]). An
//! async waiter the writer commits for polls before it parks (`spin.rs`).

use crate::codec::{encode_record_hashed, seq_key};
use crate::error::JournalError;
use crate::record::{ChainHash, Record, SCHEMA_VERSION};
use crate::stats::Counters;
use crate::store::{lock, panic_msg, Shared};
use lunledger_model::Event;
use lunledger_model::OpId;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

pub(crate) struct Pending {
    seq: u64,
    ts_micros: u64,
    op: OpId,
    event: Event,
}

pub(crate) struct Queue {
    pub next_seq: u64,
    pending: Vec<Pending>,
    /// The highest sequence number any waiter needs durable.
    want_durable: u64,
    /// The highest one a waiter that does not lead needs: the writer thread flushes for it.
    writer_want: u64,
    /// The highest one a waiter that may lead needs: a committer letting go of the commit lock
    /// below it wakes the waiters, so that one of them leads.
    leader_want: u64,
    pub shutdown: bool,
}

impl Queue {
    pub fn new(next_seq: u64) -> Queue {
        Queue {
            next_seq,
            pending: Vec::new(),
            want_durable: 0,
            writer_want: 0,
            leader_want: 0,
            shutdown: false,
        }
    }
}

/// What only the committer uses: the chain's head and when it last flushed. Held in
/// `Shared::commit`; whoever holds that lock (a leading waiter or the writer thread) is the
/// only one taking records off the queue, so records reach sled in sequence order, one round at
/// a time. How far records were handed to sled and flushed are `Shared::{stored, flushed}`,
/// which only the holder of that lock writes (the writer thread also reads them without it).
pub(crate) struct Committer {
    prev_hash: ChainHash,
    last_flush: Instant,
}

impl Committer {
    /// The committer of a journal whose stored records are chained to `prev_hash`.
    pub fn new(prev_hash: ChainHash) -> Committer {
        Committer {
            prev_hash,
            last_flush: Instant::now(),
        }
    }
}

/// Whether the writer still runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Running,
    Halted,
    Closed,
    Failed(Failure),
}

/// Why the writer stopped, kept so that every waiter gets its own typed error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The storage failed (see [`JournalError::Storage`]).
    Storage {
        action: &'static str,
        path: std::path::PathBuf,
        errno: Option<i32>,
        what: String,
    },
    /// Anything else (a sled bug, a caught panic).
    Other(String),
}

impl Failure {
    fn of(e: &JournalError) -> Failure {
        match e {
            JournalError::Storage {
                action,
                path,
                source,
            } => Failure::Storage {
                action,
                path: path.clone(),
                errno: source.raw_os_error(),
                what: source.to_string(),
            },
            other => Failure::Other(other.to_string()),
        }
    }

    fn error(&self) -> JournalError {
        match self {
            Failure::Storage {
                action,
                path,
                errno,
                what,
            } => JournalError::Storage {
                action,
                path: path.clone(),
                source: match errno {
                    Some(n) => std::io::Error::from_raw_os_error(*n),
                    None => std::io::Error::other(what.clone()),
                },
            },
            Failure::Other(m) => JournalError::Internal(format!("writer failed: {m}")),
        }
    }
}

/// The durable sequence number and the writer's status, published to waiters.
#[derive(Clone, Debug)]
pub(crate) struct DurableState {
    pub seq: u64,
    pub status: Status,
    /// Bumped when a committer lets go of the commit lock while a waiter still needs a flush:
    /// a waiter that found the lock taken waits for this (or a new `seq`) and then tries to lead.
    pub epoch: u64,
}

impl DurableState {
    fn error(&self) -> Option<JournalError> {
        match &self.status {
            Status::Running => None,
            Status::Halted => Some(JournalError::Halted),
            Status::Closed => Some(JournalError::Closed),
            Status::Failed(f) => Some(f.error()),
        }
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Queues records with consecutive sequence numbers; returns the last one's.
pub(crate) fn enqueue(
    s: &Shared,
    records: Vec<(OpId, Event)>,
    durable: bool,
) -> Result<u64, JournalError> {
    let n = records.len() as u64;
    let last = {
        let mut q = lock(&s.queue);
        if s.halted.load(Ordering::SeqCst) {
            return Err(JournalError::Halted);
        }
        if q.shutdown {
            return Err(JournalError::Closed);
        }
        let ts = now_micros();
        for (op, event) in records {
            s.counters.points.appended(op, &event);
            let seq = q.next_seq;
            q.next_seq += 1;
            q.pending.push(Pending {
                seq,
                ts_micros: ts,
                op,
                event,
            });
        }
        let last = q.next_seq - 1;
        if durable {
            q.want_durable = q.want_durable.max(last);
        }
        last
    };
    Counters::add(&s.counters.appended, n);
    // A durable append's caller waits next and leads (or, when it cannot, wakes the writer
    // then); a record nobody waits for is the writer thread's to hand to sled.
    if !durable || !s.lead.load(Ordering::Relaxed) {
        s.wake.notify_one();
    }
    Ok(last)
}

/// Registers a need for durability up to `seq`; returns `Ok(true)` when already durable. A
/// waiter that will not lead (`by_writer`) asks the writer thread to flush for it.
fn register_wait(s: &Shared, seq: u64, by_writer: bool) -> Result<bool, JournalError> {
    Counters::add(&s.counters.durable_waits, 1);
    if s.halted.load(Ordering::SeqCst) {
        // A halted (crashed) journal answers no wait, not even for what is already durable.
        let st = lock(&s.durable);
        return Err(st.error().unwrap_or(JournalError::Halted));
    }
    {
        let st = lock(&s.durable);
        if st.seq >= seq {
            return Ok(true);
        }
        if let Some(e) = st.error() {
            return Err(e);
        }
    }
    let mut q = lock(&s.queue);
    let last = q.next_seq.saturating_sub(1);
    if seq > last {
        return Err(JournalError::NotAssigned { seq, last });
    }
    q.want_durable = q.want_durable.max(seq);
    if by_writer {
        q.writer_want = q.writer_want.max(seq);
        drop(q);
        s.wake.notify_one();
    } else {
        q.leader_want = q.leader_want.max(seq);
    }
    Ok(false)
}

/// Whether an async waiter may block its thread for a commit round: only inside a multi-thread
/// tokio runtime, where `block_in_place` hands the worker's other tasks to another thread. On
/// a current_thread runtime `block_in_place` would panic, and outside tokio the executor is
/// unknown: the writer thread commits for those waiters.
fn may_block_in_place() -> bool {
    matches!(
        tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(tokio::runtime::RuntimeFlavor::MultiThread)
    )
}

/// The commit lock, if nobody holds it.
fn try_lead(s: &Shared) -> Option<MutexGuard<'_, Committer>> {
    match s.commit.try_lock() {
        Ok(g) => Some(g),
        // A round runs inside `catch_unwind`, so a poisoned lock holds a consistent committer
        // (and a failed journal refuses every round anyway).
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Runs one commit round as leader, then lets go of the commit lock.
fn lead(s: &Shared, mut guard: MutexGuard<'_, Committer>) {
    Counters::add(&s.counters.leader_rounds, 1);
    commit_round(s, &mut guard, false);
    release(s, guard);
}

/// Lets go of the commit lock; when a waiter that may lead still needs a flush (it may have
/// found the lock taken and be waiting for it), wakes the waiters so that one of them leads
/// next. (Waiters that do not lead are the writer thread's: waking them would be spurious.)
fn release(s: &Shared, guard: MutexGuard<'_, Committer>) {
    drop(guard);
    // A waiter registers its need before it tries the lock: one that found the lock taken
    // registered before the `drop` above, so this sees it.
    let needed = lock(&s.queue).leader_want > s.flushed.load(Ordering::SeqCst);
    if needed {
        publish(s, |st| st.epoch = st.epoch.wrapping_add(1));
    }
}

/// The async durable wait; `may_lead`: the caller may commit on its own thread (else the
/// writer thread commits for it, and the caller can give up on the wait at any time).
pub(crate) async fn wait_durable(s: &Shared, seq: u64, may_lead: bool) -> Result<(), JournalError> {
    let mut leads = may_lead && s.lead.load(Ordering::Relaxed) && may_block_in_place();
    let started = Instant::now();
    if register_wait(s, seq, !leads)? {
        return Ok(());
    }
    // Subscribed (and the current state seen) before trying the lock: a leader's publish or
    // release after that wakes this waiter.
    let mut rx = s.durable_tx.subscribe();
    let abandoned = Abandoned(s);
    // Whether the last look at the state came from polling rather than a wake-up.
    let mut polled = false;
    loop {
        {
            let st = rx.borrow_and_update();
            if st.seq >= seq {
                std::mem::forget(abandoned);
                if !leads {
                    s.wait_average.record(started.elapsed());
                    if polled {
                        Counters::add(&s.counters.polled_waits, 1);
                    }
                }
                return Ok(());
            }
            if let Some(e) = st.error() {
                std::mem::forget(abandoned);
                return Err(e);
            }
        }
        if leads {
            if let Some(guard) = try_lead(s) {
                let ran = catch_unwind(AssertUnwindSafe(|| {
                    tokio::task::block_in_place(|| lead(s, guard))
                }));
                if ran.is_err() {
                    // `block_in_place` refused this thread (an executor inside the runtime
                    // that may not block; a round's own panic is caught inside `lead`): the
                    // guard was dropped unwinding, and the writer thread commits instead.
                    leads = false;
                    register_wait(s, seq, true)?;
                    release_dropped(s);
                }
                continue;
            }
        }
        if !leads && poll_until_changed(&mut rx, s.wait_average.budget()).await {
            polled = true;
            continue;
        }
        polled = false;
        rx.changed().await.map_err(|_| JournalError::Closed)?;
    }
}

/// Yields to the executor until the durable state changes or `budget` runs out (see
/// `spin.rs`: a worker that stays awake is woken without the cost of an idle vCPU's wake-up);
/// returns whether it changed. A sender gone (the journal dropped) returns false at once:
/// `changed` then reports it.
async fn poll_until_changed(rx: &mut watch::Receiver<DurableState>, budget: Duration) -> bool {
    if budget.is_zero() {
        return false;
    }
    let start = Instant::now();
    loop {
        match rx.has_changed() {
            Ok(true) => return true,
            Ok(false) => {}
            Err(_) => return false,
        }
        if start.elapsed() >= budget {
            return false;
        }
        // Its thread, too: the writer and sled's I/O thread it waits for may be runnable on
        // this vCPU (the others busy, as with a TCG QEMU beside us), and polling through their
        // time slice made each durable point ~0.4 ms slower on a real VM.
        std::thread::yield_now();
        tokio::task::yield_now().await;
    }
}

/// Dropped with an async wait that was given up on (its future dropped, a timeout): its
/// records were queued for a leader that will not come, so the writer thread takes them, as
/// it takes records nobody waits for.
struct Abandoned<'a>(&'a Shared);

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        self.0.wake.notify_one();
    }
}

/// After a commit lock was dropped without [`release`]: wake the waiters as `release` would.
fn release_dropped(s: &Shared) {
    publish(s, |st| st.epoch = st.epoch.wrapping_add(1));
}

pub(crate) fn wait_durable_blocking(s: &Shared, seq: u64) -> Result<(), JournalError> {
    let leads = s.lead.load(Ordering::Relaxed);
    if register_wait(s, seq, !leads)? {
        return Ok(());
    }
    loop {
        let epoch = {
            let st = lock(&s.durable);
            if st.seq >= seq {
                return Ok(());
            }
            if let Some(e) = st.error() {
                return Err(e);
            }
            st.epoch
        };
        if leads {
            if let Some(guard) = try_lead(s) {
                lead(s, guard);
                continue;
            }
        }
        let mut st = lock(&s.durable);
        while st.epoch == epoch && st.seq < seq && st.error().is_none() {
            st = s.durable_cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn publish(s: &Shared, update: impl FnOnce(&mut DurableState)) {
    {
        let mut st = lock(&s.durable);
        update(&mut st);
        // Sent under the lock: publishers on different threads (a leader's durable point, the
        // previous leader's release, a halt) must reach the channel in the order they changed
        // the state, or a stale snapshot could overwrite a newer one and leave its waiters
        // asleep.
        s.durable_tx.send_replace(st.clone());
    }
    s.durable_cv.notify_all();
}

pub(crate) fn halt(s: &Shared) {
    {
        let mut q = lock(&s.queue);
        s.halted.store(true, Ordering::SeqCst);
        q.pending.clear();
    }
    s.wake.notify_all();
    publish(s, |st| {
        if st.status == Status::Running {
            st.status = Status::Halted;
        }
    });
    s.written_tx.send_modify(|_| {});
}

/// Halts the journal as the death of the process would: besides what [`halt`] does, every
/// record handed to sled but not yet made durable is removed from the store, since a SIGKILL
/// may lose all of them (sled keeps them in its own buffers until a flush). Returns the durable
/// sequence number the journal now ends at.
#[cfg(feature = "testing")]
pub(crate) fn crash(s: &Shared) -> Result<u64, JournalError> {
    halt(s);
    // A checkpoint's rotation copies records into a new generation under `maint` and commits
    // it later: waiting for it keeps it from bringing back a record removed below.
    let _maint = lock(&s.maint);
    // Every commit round holds a read guard across its batch and its flush: once this is
    // granted, no record is being inserted or flushed, and none will be (the journal is halted).
    let view = s.view_write();
    let durable = lock(&s.durable).seq;
    let records = &view.active.records;
    let lost: Vec<sled::IVec> = records
        .range(seq_key(durable.saturating_add(1))..)
        .keys()
        .collect::<Result<_, _>>()?;
    for key in lost {
        records.remove(key)?;
    }
    // sled's own background flusher may already have written some of them: make the removal
    // stick, so the store ends exactly at the durable point (the worst a SIGKILL can do).
    records.flush()?;
    Ok(durable)
}

/// Stops the journal after `e` failed a write outside the writer (a checkpoint, a rotation, a
/// prune): fail-stop, as for the writer's own writes, so that nothing more is appended or made
/// durable on storage that failed. Errors that are not storage failures pass unchanged.
pub(crate) fn fail_on_storage_error(
    s: &Shared,
    action: &'static str,
    e: JournalError,
) -> JournalError {
    // sled's I/O errors met on the way (through `?`) get the action and the directory.
    let e = match e {
        JournalError::Sled(sled::Error::Io(io)) => {
            JournalError::storage(action, &s.dir, sled::Error::Io(io))
        }
        other => other,
    };
    if matches!(e, JournalError::Storage { .. } | JournalError::Sled(_)) {
        fail(s, Failure::of(&e));
    }
    e
}

fn fail(s: &Shared, failure: Failure) {
    {
        let mut q = lock(&s.queue);
        s.halted.store(true, Ordering::SeqCst);
        q.pending.clear();
    }
    tracing::error!(error = %failure.error(), "journal writer failed; journal halted");
    publish(s, |st| st.status = Status::Failed(failure));
    s.written_tx.send_modify(|_| {});
}

/// Starts the writer thread: it commits what no leader does (see the module documentation).
pub(crate) fn spawn(shared: Arc<Shared>) -> Result<JoinHandle<()>, JournalError> {
    std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || {
            let s = &*shared;
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| run(s))) {
                fail(s, Failure::Other(format!("panic: {}", panic_msg(&p))));
            }
        })
        .map_err(|e| JournalError::Internal(format!("cannot start writer thread: {e}")))
}

fn run(s: &Shared) {
    loop {
        let (shutdown, idle) = {
            let mut q = lock(&s.queue);
            loop {
                if s.halted.load(Ordering::SeqCst) {
                    publish(s, |st| {
                        if st.status == Status::Running {
                            st.status = Status::Halted;
                        }
                    });
                    return;
                }
                let flushed = s.flushed.load(Ordering::SeqCst);
                if q.shutdown || !q.pending.is_empty() || q.writer_want > flushed {
                    break (q.shutdown, false);
                }
                match s.flush_every {
                    Some(d) if s.stored.load(Ordering::SeqCst) > flushed => {
                        let (g, t) = s.wake.wait_timeout(q, d).unwrap_or_else(|p| p.into_inner());
                        q = g;
                        if t.timed_out() && q.pending.is_empty() {
                            break (q.shutdown, true);
                        }
                    }
                    _ => q = s.wake.wait(q).unwrap_or_else(|p| p.into_inner()),
                }
            }
        };
        // Waits for a leader's round, if one runs; the queue may be empty after it.
        let mut w = lock(&s.commit);
        // Under a steady stream of non-durable appends the writer never idles: flush at least
        // every `flush_every` anyway, so `durable_seq` keeps up.
        let periodic = s.flush_every.is_some_and(|d| w.last_flush.elapsed() >= d);
        commit_round(s, &mut w, shutdown || idle || periodic);
        release(s, w);
        if shutdown {
            publish(s, |st| {
                if st.status == Status::Running {
                    st.status = Status::Closed;
                }
            });
            return;
        }
    }
}

/// One commit round (the caller holds the commit lock): hands the queued records to sled in
/// sequence order and flushes when a waiter needs it (or `force`: idle, periodic, closing).
/// A failure stops the journal (fail-stop) and reaches every waiter as its typed error.
fn commit_round(s: &Shared, w: &mut Committer, force: bool) {
    match catch_unwind(AssertUnwindSafe(|| round(s, w, force))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => fail(s, Failure::of(&e)),
        Err(p) => fail(s, Failure::Other(format!("panic: {}", panic_msg(&p)))),
    }
}

fn round(s: &Shared, w: &mut Committer, force: bool) -> Result<(), JournalError> {
    let (batch, want) = {
        let mut q = lock(&s.queue);
        if s.halted.load(Ordering::SeqCst) {
            return Ok(());
        }
        (std::mem::take(&mut q.pending), q.want_durable)
    };
    // Held until this batch is inserted and flushed: a rotation waits for it, so it never
    // copies a generation with half a batch in it, nor loses a batch to the old one.
    let view = s.view_read();
    let n = batch.len() as u64;
    // Ours alone to change while we hold the commit lock.
    let mut written = s.stored.load(Ordering::SeqCst);
    let durable = s.flushed.load(Ordering::SeqCst);
    for p in batch {
        if s.halted.load(Ordering::SeqCst) {
            break;
        }
        let rec = Record {
            schema: SCHEMA_VERSION,
            seq: p.seq,
            ts_micros: p.ts_micros,
            op: p.op,
            event: p.event,
            prev_hash: w.prev_hash,
        };
        let (bytes, hash) = encode_record_hashed(&rec)?;
        view.active
            .records
            .insert(seq_key(p.seq), bytes)
            .map_err(|e| JournalError::storage("writing a record", view.active.dir(), e))?;
        w.prev_hash = hash;
        written = p.seq;
    }
    if n > 0 {
        s.counters.largest_batch.fetch_max(n, Ordering::Relaxed);
        s.stored.store(written, Ordering::SeqCst);
        s.written_tx.send_replace(written);
    }
    if s.halted.load(Ordering::SeqCst) {
        return Ok(());
    }
    if written > durable && (want > durable || force) {
        if let Some(key) = &s.seal_key {
            // In the same flush as the records it seals, and after them in sled's write
            // order: a seal that survives a crash never names a record that did not.
            let seal = crate::seal::seal_bytes(key, written, &w.prev_hash);
            view.active
                .meta
                .insert(crate::store::META_SEAL, seal)
                .map_err(|e| JournalError::storage("sealing the head", view.active.dir(), e))?;
        }
        view.active.flush_durable(s.durability, &s.counters)?;
        if let Err(e) = s.watermark.record(written) {
            // Only the detection of lost records weakens; the records themselves are durable.
            tracing::warn!(error = %e, "could not record the durable watermark");
        }
        w.last_flush = Instant::now();
        s.flushed.store(written, Ordering::SeqCst);
        // Published under the view's read guard: `crash` (which takes the write guard) sees
        // every flush's durable point.
        publish(s, |st| st.seq = st.seq.max(written));
    }
    drop(view);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(seq: u64) -> DurableState {
        DurableState {
            seq,
            status: Status::Running,
            epoch: 0,
        }
    }

    #[tokio::test]
    async fn polling_sees_a_change_made_by_another_thread_and_gives_up_after_its_budget() {
        let (tx, mut rx) = watch::channel(state(0));
        assert!(
            !poll_until_changed(&mut rx, Duration::ZERO).await,
            "no budget, no poll"
        );
        let t = Instant::now();
        assert!(!poll_until_changed(&mut rx, Duration::from_millis(2)).await);
        assert!(t.elapsed() >= Duration::from_millis(2));
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(200));
            tx.send_replace(state(1));
            tx
        });
        assert!(poll_until_changed(&mut rx, Duration::from_secs(10)).await);
        assert_eq!(rx.borrow_and_update().seq, 1);
        drop(sender.join());
        let t = Instant::now();
        assert!(
            !poll_until_changed(&mut rx, Duration::from_secs(10)).await,
            "a sender gone is left to `changed` to report"
        );
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
