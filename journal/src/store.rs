//! The journal handle: opening the sled store, configuration, reads, and the public API that
//! the writer, checkpoint, verify and tail modules implement.

use crate::active::Active;
use crate::codec::{chain_hash, decode_record, key_seq};
use crate::error::JournalError;
use crate::iter::{RawIter, RecordIter, Tail};
use crate::lock::DirLock;
use crate::options::Durability;
use crate::options::JournalOptions;
use crate::record::{ChainHash, Record};
use crate::recover::{scan_on_open, OpenReport, SeqRange};
use crate::segment::SegmentInfo;
use crate::stats::{Counters, JournalStats};
use crate::writer::{Committer, DurableState, Queue, Status};
use lunledger_model::Event;
use lunledger_model::OpId;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

pub use crate::active::is_journal_dir;

pub(crate) const TREE_RECORDS: &str = "records";
pub(crate) const TREE_CHECKPOINTS: &str = "checkpoints";
pub(crate) const TREE_META: &str = "meta";
pub(crate) const TREE_QUARANTINE: &str = "quarantine";
pub(crate) const META_ANCHOR: &[u8] = b"anchor";
pub(crate) const META_QUARANTINE_EPOCH: &[u8] = b"quarantine_epoch";
/// The keyed seal of the head (see [`crate::seal`]).
pub(crate) const META_SEAL: &[u8] = b"seal";

/// What is stored right now: the active sled generation and the sealed segments before it.
/// Replaced as a whole (under the write lock) by a rotation; prune replaces the segment list.
#[derive(Clone)]
pub(crate) struct View {
    pub active: Arc<Active>,
    pub segments: Arc<Vec<SegmentInfo>>,
}

/// State shared by handles, iterators and the writer thread. Field order is drop order: sled
/// first, the directory lock last.
pub(crate) struct Shared {
    /// Every commit round holds a read guard across its batch (insert and flush), so a
    /// rotation, which takes the write guard, never meets a half-written batch.
    pub view: RwLock<View>,
    /// Serialises everything that writes outside the writer thread (configuration, checkpoints,
    /// rotation, pruning), so a rotation copies a generation nobody else is changing.
    pub maint: Mutex<()>,
    pub cache_capacity: u64,
    pub flush_every_ms: Option<u64>,
    pub segment_records: u64,
    /// TEST HOOK: stop (as a crash would) before rotation step `n` (0: never).
    pub rotation_fault: AtomicU8,
    pub durability: Durability,
    pub seal_key: Option<crate::seal::SealKey>,
    pub flush_every: Option<Duration>,
    pub queue: Mutex<Queue>,
    /// The commit lock: its holder (a leading waiter or the writer thread) runs the one commit
    /// round in progress (see `writer.rs`). Taken before `view` (read) and `queue`, never while
    /// holding either.
    pub commit: Mutex<Committer>,
    /// How far records were handed to sled, and flushed: written only by the holder of
    /// `commit` (one round at a time), read without it by the writer thread to decide whether
    /// to wake.
    pub stored: AtomicU64,
    pub flushed: AtomicU64,
    /// Whether waiters lead commit rounds (the default) or leave them all to the writer thread
    /// (the design before issue #16 part 2, kept for the A/B benchmark).
    pub lead: AtomicBool,
    /// Wakes the writer thread.
    pub wake: Condvar,
    pub durable: Mutex<DurableState>,
    pub durable_cv: Condvar,
    pub durable_tx: watch::Sender<DurableState>,
    /// How long recent async waits for the writer took: how long the next one polls before it
    /// parks (`spin.rs`).
    pub wait_average: crate::spin::WaitAverage,
    pub written_tx: watch::Sender<u64>,
    pub halted: AtomicBool,
    pub counters: Counters,
    pub dir: PathBuf,
    pub watermark: crate::watermark::Watermark,
    /// Declared last: released after the generations drop, and each generation waits for sled
    /// to let go of its data file as it drops (see `active::Closer`).
    pub _lock: DirLock,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the data are plain
/// counters and queues that stay consistent under every update).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// A consistent picture of what is stored (cheap: two `Arc` clones).
    pub fn view(&self) -> View {
        self.view_read().clone()
    }

    /// The active sled generation.
    pub fn active(&self) -> Arc<Active> {
        self.view_read().active.clone()
    }

    /// The view, read-locked (the lock holds no invariant a panicking holder could break).
    pub fn view_read(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The view, write-locked: the writer waits between batches until it is dropped.
    pub fn view_write(&self) -> RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|p| p.into_inner())
    }
}

struct Inner {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    report: OpenReport,
}

impl Drop for Inner {
    fn drop(&mut self) {
        {
            let mut q = lock(&self.shared.queue);
            q.shutdown = true;
        }
        self.shared.wake.notify_all();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
        if !self.shared.halted.load(Ordering::SeqCst) {
            let _ = self.shared.active().db.flush();
        }
    }
}

/// A durable, hash-chained, group-committed event journal stored in sled. Cheap to clone; all
/// clones share one writer thread. The journal closes (flushing and stopping the writer) when the
/// last clone, iterator and tail are dropped.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.inner.shared.dir)
            .field("last_seq", &self.last_seq())
            .field("durable_seq", &self.durable_seq())
            .finish()
    }
}

impl Journal {
    /// Opens (creating when missing) the journal in `dir`. Blocking. Takes the directory lock
    /// ([`JournalError::InUse`] when held elsewhere), opens sled, scans from the newest checkpoint
    /// to the end, quarantines a damaged tail (see [`Journal::open_report`]) and starts the
    /// writer thread.
    pub fn open(dir: impl AsRef<Path>, opts: JournalOptions) -> Result<Journal, JournalError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| JournalError::io(&dir, e))?;
        let dir_lock = DirLock::acquire(&dir)?;
        // Which generation is active, and what an interrupted rotation left behind.
        let gen = crate::active::read_current(&dir)?;
        for p in crate::active::remove_inactive(&dir, gen)? {
            tracing::info!(dir = %p.display(), "removed an inactive sled generation (retired or never committed)");
        }
        let gen_path = dir.join(crate::active::gen_dir_name(gen));
        if gen > 0 && !gen_path.is_dir() {
            // sled would create an empty database there and the journal would start over.
            return Err(JournalError::corrupt(
                None,
                format!(
                    "{} names sled generation {} but {} is missing",
                    dir.join(crate::active::CURRENT_FILE).display(),
                    gen,
                    gen_path.display()
                ),
            ));
        }
        let set_aside = crate::snapshot::set_aside_unfinished(&gen_path, &dir)?;
        // A new journal: nothing was ever stored here. Its watermark (0) is written before its
        // store is created, so that an existing journal without one is always a finding, even
        // one that lost every record, and a process killed while creating the journal cannot
        // leave a store without a watermark (the next open finds no store: new again). A new
        // journal whose watermark cannot be written is not created.
        let fresh = gen == 0 && !gen_path.exists();
        let (watermark, mark) = crate::watermark::Watermark::open(&dir)?;
        if fresh && mark == crate::watermark::Mark::Absent {
            watermark.record(0).map_err(|e| {
                JournalError::storage_io(
                    "writing a new journal's watermark",
                    dir.join(crate::watermark::WATERMARK_FILE),
                    e,
                )
            })?;
        }
        let active = Active::open(&dir, gen, opts.cache_capacity, opts.flush_every_ms)?;

        let scan = catch_unwind(AssertUnwindSafe(|| {
            scan_on_open(
                &active.db,
                &active.records,
                &active.checkpoints,
                &active.meta,
                &active.quarantine,
            )
        }))
        .map_err(|p| {
            JournalError::Internal(format!("panic while scanning: {}", panic_msg(&p)))
        })??;

        let sealed = crate::manifest::reconcile(&dir, &active, fresh)?;
        let segments = sealed.segments;
        // What must be stored: the watermark, the newest checkpoint (written only once its
        // record was durable) and the last sealed segment are each a lower bound.
        let newest_cp = crate::checkpoint::latest_checkpoint_in(&active.checkpoints)?;
        let stored_end = stored_end(&active, &segments)?;
        let durable_mark = match mark {
            crate::watermark::Mark::Value(v) => Some(v),
            _ => None,
        };
        let watermark_finding = watermark_finding(
            &mark,
            !fresh,
            stored_end.max(
                scan.report
                    .tail_quarantined
                    .as_ref()
                    .map_or(0, |t| t.first_bad_seq),
            ),
            newest_cp.as_ref().map(|c| c.at_seq),
            segments.last().map(|s| s.last),
        );
        let mut losses: Vec<(u64, u64)> = Vec::new();
        if let Some((first, last)) = sealed.missing.first().zip(sealed.missing.last()) {
            losses.push((first.0, last.1));
        }
        if let Some(mark) = durable_mark {
            match &scan.report.tail_quarantined {
                Some(t) if t.first_bad_seq <= mark => losses.push((t.first_bad_seq, mark)),
                _ if scan.last_seq < mark => losses.push((scan.last_seq.saturating_add(1), mark)),
                _ => {}
            }
        }
        if let Some(cp) = newest_cp.as_ref().filter(|cp| cp.at_seq > stored_end) {
            losses.push((
                stored_end.saturating_add(1),
                cp.at_seq.max(durable_mark.unwrap_or(0)),
            ));
        }
        let lost = losses
            .iter()
            .copied()
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
        if let (Some((first, durable)), false) = (lost, opts.accept_lost_records) {
            return Err(JournalError::LostRecords { first, durable });
        }
        if scan.report.tail_quarantined.is_some() && opts.durability == Durability::Sync {
            // The scan flushed the quarantine move; make it power-safe too.
            active
                .data_file
                .sync_data()
                .map_err(|e| JournalError::io(&active.data_path, e))?;
        }
        if let Some(seg) = segments.last().filter(|seg| seg.last > scan.last_seq) {
            // The active generation lost its checkpoint and records (damage): appending would
            // reuse sequence numbers the sealed history already holds.
            return Err(JournalError::corrupt(
                scan.last_seq.saturating_add(1),
                format!(
                    "the active sled generation ends at seq {} but sealed segment {} ends at {}",
                    scan.last_seq,
                    seg.path.display(),
                    seg.last
                ),
            ));
        }
        if let Some(w) = &watermark_finding {
            tracing::warn!(what = %w, "durable watermark");
        }
        let counters = Counters::default();
        if durable_mark.is_some_and(|m| scan.last_seq > m) {
            // Records stored past the watermark: the last process died between storing them
            // and recording them durable. They are published as durable below (a checkpoint
            // may be written at their end at once), so they are made durable and recorded
            // first: else a checkpoint there and a crash before the next flush would leave the
            // watermark below a checkpoint, which reads as a rewritten watermark.
            active.flush_durable(opts.durability, &counters)?;
            watermark.record(scan.last_seq).map_err(|e| {
                JournalError::storage_io(
                    "recording the stored tail in the watermark",
                    dir.join(crate::watermark::WATERMARK_FILE),
                    e,
                )
            })?;
        }
        let initial = DurableState {
            seq: scan.last_seq,
            status: Status::Running,
            epoch: 0,
        };
        let (durable_tx, _) = watch::channel(initial.clone());
        let (written_tx, _) = watch::channel(scan.last_seq);
        let shared = Arc::new(Shared {
            view: RwLock::new(View {
                active: Arc::new(active),
                segments: Arc::new(segments),
            }),
            maint: Mutex::new(()),
            cache_capacity: opts.cache_capacity,
            flush_every_ms: opts.flush_every_ms,
            segment_records: opts.segment_records,
            rotation_fault: AtomicU8::new(0),
            durability: opts.durability,
            seal_key: opts.seal_key.clone(),
            flush_every: opts.flush_every_ms.map(Duration::from_millis),
            queue: Mutex::new(Queue::new(scan.last_seq.saturating_add(1))),
            commit: Mutex::new(Committer::new(scan.prev_hash)),
            stored: AtomicU64::new(scan.last_seq),
            flushed: AtomicU64::new(scan.last_seq),
            lead: AtomicBool::new(true),
            wake: Condvar::new(),
            durable: Mutex::new(initial),
            durable_cv: Condvar::new(),
            durable_tx,
            wait_average: Default::default(),
            written_tx,
            halted: AtomicBool::new(false),
            counters,
            dir,
            watermark,
            _lock: dir_lock,
        });
        let writer = crate::writer::spawn(shared.clone())?;
        Ok(Journal {
            inner: Arc::new(Inner {
                shared,
                writer: Mutex::new(Some(writer)),
                report: OpenReport {
                    snapshots_set_aside: set_aside,
                    lost_records: lost.map(|(first, last)| SeqRange { first, last }),
                    missing_segments: sealed
                        .missing
                        .into_iter()
                        .map(|(first, last)| SeqRange { first, last })
                        .collect(),
                    unexpected_segments: sealed.unexpected,
                    manifest_reconstructed: sealed.reconstructed,
                    watermark: watermark_finding,
                    ..scan.report
                },
            }),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// What the open found and did (for example a damaged tail moved to quarantine).
    pub fn open_report(&self) -> &OpenReport {
        &self.inner.report
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// Appends one record without waiting: assigns and returns its sequence number (gap-free, in
    /// call order) and queues it for the writer. Takes only a short internal lock, so it is safe
    /// from async code and while holding other locks. The record becomes durable with the next
    /// flush (any durable wait, or the idle flush after `flush_every_ms`).
    pub fn append(&self, op: OpId, event: Event) -> Result<u64, JournalError> {
        crate::writer::enqueue(self.shared(), vec![(op, event)], false)
    }

    /// Appends records (consecutive sequence numbers) and waits until they are durable. Returns
    /// the last one's sequence number (the current last sequence number when `records` is empty).
    pub async fn append_durable(&self, records: Vec<(OpId, Event)>) -> Result<u64, JournalError> {
        let last = if records.is_empty() {
            self.last_seq()
        } else {
            crate::writer::enqueue(self.shared(), records, true)?
        };
        self.wait_durable(last).await?;
        Ok(last)
    }

    /// Waits until every record up to `seq` is durable under the journal's mode. One flush
    /// serves every concurrent waiter (group commit).
    ///
    /// On a multi-thread tokio runtime the first waiter that finds no flush in progress leads:
    /// it hands the queued records to sled and flushes on its own thread, inside
    /// [`tokio::task::block_in_place`] (the worker's other tasks move to another thread), so a
    /// leader is busy for the length of its flush and cannot be cancelled during it; a caller
    /// that must give up after a deadline (a disk that stops answering) uses
    /// [`Journal::wait_durable_cancellable`]. Elsewhere (a current_thread runtime, another executor) the wait is asynchronous
    /// and the journal's writer thread flushes.
    pub async fn wait_durable(&self, seq: u64) -> Result<(), JournalError> {
        crate::writer::wait_durable(self.shared(), seq, true).await
    }

    /// [`Journal::wait_durable`] as a durable point of operation `op`: counted in
    /// [`JournalStats::durable_points`] under the kind its `OpStarted` record named.
    pub async fn wait_durable_for(&self, op: OpId, seq: u64) -> Result<(), JournalError> {
        self.shared().counters.points.point(op);
        crate::writer::wait_durable(self.shared(), seq, true).await
    }

    /// [`Journal::wait_durable`] (a durable point of `op` when named) for a caller that must be
    /// able to give up on the wait at any moment, such as one bounded by a timeout against a
    /// disk that stops answering: it never leads the commit (a leader is busy on its own thread
    /// for the length of its flush); the writer thread commits for it. To spare the wake-up that
    /// hand-off would cost on an idle vCPU, the wait first polls, yielding to the executor, for
    /// about as long as recent waits took (at most 1 ms; none where waits take longer), then
    /// parks. Its records still share flushes with every other waiter.
    pub async fn wait_durable_cancellable(
        &self,
        op: Option<OpId>,
        seq: u64,
    ) -> Result<(), JournalError> {
        if let Some(op) = op {
            self.shared().counters.points.point(op);
        }
        crate::writer::wait_durable(self.shared(), seq, false).await
    }

    /// Blocking form of [`Journal::wait_durable`] (the caller leads when no flush is in
    /// progress); do not call it on an async executor thread.
    pub fn wait_durable_blocking(&self, seq: u64) -> Result<(), JournalError> {
        crate::writer::wait_durable_blocking(self.shared(), seq)
    }

    /// The last assigned sequence number (0 for an empty journal).
    pub fn last_seq(&self) -> u64 {
        lock(&self.shared().queue).next_seq.saturating_sub(1)
    }

    /// The highest sequence number up to which every record is durable.
    pub fn durable_seq(&self) -> u64 {
        lock(&self.shared().durable).seq
    }

    /// The oldest retained record's sequence number, if any record is stored.
    pub fn first_seq(&self) -> Result<Option<u64>, JournalError> {
        let view = self.shared().view();
        match view.segments.first() {
            Some(s) => Ok(Some(s.first)),
            None => view.active.first_seq(),
        }
    }

    /// The sealed archive segments (oldest first): history before the active sled generation.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.shared().view().segments.to_vec()
    }

    /// Which sled generation is active (0 until the first rotation).
    pub fn generation(&self) -> u64 {
        self.shared().active().gen
    }

    /// Stored records from `seq` on, in sequence order (sealed segments, then the active
    /// generation). The iterator checks each record's check, key, sequence continuity and hash
    /// link to the record before it; a problem is yielded as a typed error and ends the
    /// iteration.
    pub fn read_from(&self, seq: u64) -> RecordIter {
        RecordIter::new(
            self.clone(),
            RawIter::new(&self.shared().view(), seq, u64::MAX),
        )
    }

    /// Stored records with `from <= seq <= to_inclusive`, in sequence order (checked as
    /// [`Journal::read_from`]).
    pub fn read_range(&self, from: u64, to_inclusive: u64) -> RecordIter {
        if from > to_inclusive {
            return RecordIter::empty(self.clone());
        }
        RecordIter::new(
            self.clone(),
            RawIter::new(&self.shared().view(), from, to_inclusive),
        )
    }

    /// The newest `n` stored records, oldest first.
    pub fn newest(&self, n: usize) -> Result<Vec<Record>, JournalError> {
        let view = self.shared().view();
        let check = |seq: u64, v: &[u8]| -> Result<Record, JournalError> {
            let rec = decode_record(v).map_err(|e| e.at_seq(seq))?;
            if rec.seq != seq {
                return Err(JournalError::corrupt(
                    seq,
                    format!("stored under seq {seq} but holds seq {}", rec.seq),
                ));
            }
            Ok(rec)
        };
        let mut out = Vec::with_capacity(n.min(1024));
        for item in view.active.records.iter().rev().take(n) {
            let (k, v) = item?;
            let seq = key_seq(&k)
                .ok_or_else(|| JournalError::corrupt(None, "record key is not 8 bytes"))?;
            out.push(check(seq, &v)?);
        }
        // Reach back into the sealed segments, newest first, for the rest.
        for seg in view.segments.iter().rev() {
            if out.len() >= n {
                break;
            }
            let want = n - out.len();
            let mut recs = Vec::new();
            for item in RawIter::segment_only(seg) {
                let (seq, v) = item?;
                recs.push((seq, v));
            }
            for (seq, v) in recs.iter().rev().take(want) {
                out.push(check(*seq, v.as_slice())?);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Follows the journal from `from` (inclusive): [`Tail::next`] returns each stored record in
    /// order and waits for new ones.
    pub fn tail(&self, from: u64) -> Tail {
        Tail::new(self.clone(), from)
    }

    /// TEST HOOK simulating a crash: from now on every append and wait fails with
    /// [`JournalError::Halted`]; records not yet handed to sled are dropped, and nothing more is
    /// flushed by this handle.
    pub fn halt(&self) {
        crate::writer::halt(self.shared());
    }

    /// Halts the journal as a crash of the process would (a test hook for crash points): like
    /// [`Journal::halt`], and every record not yet durable is removed from the store, as a
    /// SIGKILL may lose all of them. Returns the sequence number the journal now ends at.
    #[cfg(feature = "testing")]
    pub fn crash(&self) -> Result<u64, JournalError> {
        crate::writer::crash(self.shared())
    }

    /// BENCHMARK SWITCH (issue #16 part 2's A/B): `false` leaves every commit round to the
    /// writer thread, as before waiting callers led them (`true`, the default). Affects waits
    /// that start afterwards; records, order and durability are the same either way.
    #[doc(hidden)]
    pub fn set_leader_commits(&self, on: bool) {
        self.shared().lead.store(on, Ordering::SeqCst);
        self.shared().wake.notify_all();
    }

    /// Counters of the journal's work since open.
    pub fn stats(&self) -> JournalStats {
        self.shared().counters.snapshot()
    }

    /// Records moved to the quarantine tree by earlier opens, as (sequence number, stored bytes),
    /// oldest quarantine first.
    pub fn quarantined(&self) -> Result<Vec<(u64, Vec<u8>)>, JournalError> {
        let mut out = Vec::new();
        for item in self.shared().active().quarantine.iter() {
            let (k, v) = item?;
            let seq = if k.len() == 16 {
                key_seq(&k[8..]).unwrap_or(0)
            } else {
                0
            };
            out.push((seq, v.to_vec()));
        }
        Ok(out)
    }

    /// The blake3 chain hash of the stored record at `seq`, if stored.
    pub fn stored_hash(&self, seq: u64) -> Result<Option<ChainHash>, JournalError> {
        match RawIter::new(&self.shared().view(), seq, seq).next() {
            None => Ok(None),
            Some(item) => {
                let (s, v) = item?;
                Ok((s == seq).then(|| chain_hash(v.as_slice())))
            }
        }
    }

    /// TEST HOOK simulating a crash part way through a rotation: the next rotation stops (and
    /// halts the journal, as [`Journal::halt`] does) just before its step `step` (1: sealing the
    /// segment, 2: building the next generation, 3: committing it, 4: switching to it, 5:
    /// removing the old generation). `0` turns it off.
    #[doc(hidden)]
    #[cfg(feature = "testing")]
    pub fn set_rotation_fault(&self, step: u8) {
        self.shared().rotation_fault.store(step, Ordering::SeqCst);
    }
}

/// The last sequence number stored: in the active generation, or else in the sealed segments.
pub(crate) fn stored_end(active: &Active, segments: &[SegmentInfo]) -> Result<u64, JournalError> {
    Ok(active
        .last_seq()?
        .unwrap_or(0)
        .max(segments.last().map(|s| s.last).unwrap_or(0)))
}

/// What is wrong with the durable watermark `mark` of a journal that `existed` before this
/// open, given that records up to `stored_end` are stored, the newest checkpoint is at
/// `checkpoint` and sealed history ends at `sealed`. A journal without a readable watermark
/// cannot tell a lost tail (an existing one always has one: open writes it for a new journal,
/// so its absence even with no records left may be the loss of every record), and a watermark
/// below a checkpoint or a sealed segment was rewritten (both are written only after the
/// records they cover were durable).
pub(crate) fn watermark_finding(
    mark: &crate::watermark::Mark,
    existed: bool,
    stored_end: u64,
    checkpoint: Option<u64>,
    sealed: Option<u64>,
) -> Option<String> {
    use crate::watermark::Mark;
    match mark {
        Mark::Absent if stored_end > 0 => Some(format!(
            "no durable watermark (its file is missing or empty) although records up to {stored_end} are stored: a lost tail cannot be detected"
        )),
        Mark::Absent if existed => Some(
            "no durable watermark (its file is missing or empty) in an existing journal that holds no records: records lost from its start cannot be detected".into()
        ),
        Mark::Absent => None,
        Mark::Bad(what) => Some(format!("{what}: a lost tail cannot be detected")),
        Mark::Value(v) => {
            if let Some(c) = checkpoint.filter(|c| c > v) {
                Some(format!(
                    "the durable watermark ({v}) is below the newest checkpoint ({c}): it was rewritten"
                ))
            } else {
                sealed.filter(|s| s > v).map(|s| {
                    format!(
                        "the durable watermark ({v}) is below the last sealed record ({s}): it was rewritten"
                    )
                })
            }
        }
    }
}

/// Opens sled. While we hold the directory lock, sled's own lock on its data file can only be
/// held by a sled instance that is still shutting down (ours, or a raw handle just dropped), so a
/// lock failure is retried for a short while.
pub(crate) fn open_sled(config: &sled::Config) -> Result<sled::Db, JournalError> {
    let start = std::time::Instant::now();
    loop {
        let res = catch_unwind(AssertUnwindSafe(|| config.open())).map_err(|p| {
            JournalError::Internal(format!("sled panicked on open: {}", panic_msg(&p)))
        })?;
        match res {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && start.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            other => {
                return other
                    .map_err(|e| JournalError::storage("opening the journal", &config.path, e))
            }
        }
    }
}

pub(crate) fn panic_msg(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
