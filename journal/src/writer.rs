//! The writer thread and group commit.
//!
//! `append` assigns the next sequence number under the queue lock and pushes the record; the
//! single writer thread drains the whole queue, encodes each record chained to the one before,
//! inserts it into sled in sequence order and, when any waiter needs durability, flushes once for
//! the whole batch (sled `flush()`, plus fdatasync of sled's data file in `Durability::Sync`).
//! It then publishes the new durable sequence number to every waiter at once.

use crate::codec::{chain_hash, encode_record, seq_key};
use crate::error::JournalError;
use crate::record::{ChainHash, Record, SCHEMA_VERSION};
use crate::stats::Counters;
use crate::store::{lock, panic_msg, Shared};
use lunledger_model::Event;
use lunledger_model::OpId;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) struct Pending {
    seq: u64,
    ts_micros: u64,
    op: OpId,
    event: Event,
}

pub(crate) struct Queue {
    pub next_seq: u64,
    pending: Vec<Pending>,
    want_durable: u64,
    pub shutdown: bool,
}

impl Queue {
    pub fn new(next_seq: u64) -> Queue {
        Queue {
            next_seq,
            pending: Vec::new(),
            want_durable: 0,
            shutdown: false,
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
    s.wake.notify_one();
    Ok(last)
}

/// Registers a need for durability up to `seq`; returns `Ok(true)` when already durable.
fn register_wait(s: &Shared, seq: u64) -> Result<bool, JournalError> {
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
    drop(q);
    s.wake.notify_one();
    Ok(false)
}

pub(crate) async fn wait_durable(s: &Shared, seq: u64) -> Result<(), JournalError> {
    if register_wait(s, seq)? {
        return Ok(());
    }
    let mut rx = s.durable_tx.subscribe();
    loop {
        {
            let st = rx.borrow_and_update();
            if st.seq >= seq {
                return Ok(());
            }
            if let Some(e) = st.error() {
                return Err(e);
            }
        }
        rx.changed().await.map_err(|_| JournalError::Closed)?;
    }
}

pub(crate) fn wait_durable_blocking(s: &Shared, seq: u64) -> Result<(), JournalError> {
    if register_wait(s, seq)? {
        return Ok(());
    }
    let mut st = lock(&s.durable);
    loop {
        if st.seq >= seq {
            return Ok(());
        }
        if let Some(e) = st.error() {
            return Err(e);
        }
        st = s.durable_cv.wait(st).unwrap_or_else(|p| p.into_inner());
    }
}

fn publish(s: &Shared, update: impl FnOnce(&mut DurableState)) {
    let snapshot = {
        let mut st = lock(&s.durable);
        update(&mut st);
        st.clone()
    };
    s.durable_cv.notify_all();
    s.durable_tx.send_replace(snapshot);
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
    // The writer holds a read guard across each batch and its flush: once this is granted, no
    // record is being inserted or flushed, and none will be (the writer is halted).
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

pub(crate) fn spawn(
    shared: Arc<Shared>,
    prev_hash: ChainHash,
    last_written: u64,
) -> Result<JoinHandle<()>, JournalError> {
    std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || {
            let s = &*shared;
            match catch_unwind(AssertUnwindSafe(|| run(s, prev_hash, last_written))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => fail(s, Failure::of(&e)),
                Err(p) => fail(s, Failure::Other(format!("panic: {}", panic_msg(&p)))),
            }
        })
        .map_err(|e| JournalError::Internal(format!("cannot start writer thread: {e}")))
}

fn run(s: &Shared, mut prev_hash: ChainHash, mut written: u64) -> Result<(), JournalError> {
    let mut durable = written;
    let mut last_flush = std::time::Instant::now();
    loop {
        let mut idle_flush = false;
        let (batch, want, shutdown) = {
            let mut q = lock(&s.queue);
            loop {
                if s.halted.load(Ordering::SeqCst) {
                    publish(s, |st| {
                        if st.status == Status::Running {
                            st.status = Status::Halted;
                        }
                    });
                    return Ok(());
                }
                if q.shutdown || !q.pending.is_empty() || q.want_durable > durable {
                    break;
                }
                match s.flush_every {
                    Some(d) if written > durable => {
                        let (g, t) = s.wake.wait_timeout(q, d).unwrap_or_else(|p| p.into_inner());
                        q = g;
                        if t.timed_out() && q.pending.is_empty() {
                            idle_flush = true;
                            break;
                        }
                    }
                    _ => q = s.wake.wait(q).unwrap_or_else(|p| p.into_inner()),
                }
            }
            (std::mem::take(&mut q.pending), q.want_durable, q.shutdown)
        };

        // Held until this batch is inserted and flushed: a rotation waits for it, so it never
        // copies a generation with half a batch in it, nor loses a batch to the old one.
        let view = s.view_read();
        let n = batch.len() as u64;
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
                prev_hash,
            };
            let bytes = encode_record(&rec)?;
            prev_hash = chain_hash(&bytes);
            view.active
                .records
                .insert(seq_key(p.seq), bytes)
                .map_err(|e| JournalError::storage("writing a record", view.active.dir(), e))?;
            written = p.seq;
        }
        if n > 0 {
            s.counters.largest_batch.fetch_max(n, Ordering::Relaxed);
            s.written_tx.send_replace(written);
        }
        if s.halted.load(Ordering::SeqCst) {
            drop(view);
            continue;
        }
        // Under a steady stream of non-durable appends the writer never idles: flush at least
        // every `flush_every` anyway, so `durable_seq` keeps up.
        let periodic = s.flush_every.is_some_and(|d| last_flush.elapsed() >= d);
        if written > durable && (want > durable || shutdown || idle_flush || periodic) {
            if let Some(key) = &s.seal_key {
                // In the same flush as the records it seals, and after them in sled's write
                // order: a seal that survives a crash never names a record that did not.
                let seal = crate::seal::seal_bytes(key, written, &prev_hash);
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
            last_flush = std::time::Instant::now();
            durable = written;
            publish(s, |st| st.seq = durable);
        }
        drop(view);
        if shutdown {
            publish(s, |st| {
                if st.status == Status::Running {
                    st.status = Status::Closed;
                }
            });
            return Ok(());
        }
    }
}
