//! The async `Manager`: hcsshim's SCSI semantics, every step journaled before it runs.
//!
//! The live state is the fold of the journal: every change is an event applied with the same
//! `State::apply` replay uses (validated first), then appended. Everything an operation may do is
//! durable before its first backend call (its plan), and a handle before it is returned; step
//! intents and outcomes ride on the next durable point. A journal failure stops the manager
//! (fail-stop): its state may be ahead of the journal, and only a reopen (which recovers) is safe.

mod add;
mod open;
mod recover;
mod release;
mod run_to_end;
mod step;
mod view;

pub use open::{load_state, load_state_with, validate_config, LoadedState, ManagerOptions};
pub use recover::{observe, Inspected, RecoveryReport, SettledStep};
pub use view::{AttachmentInfo, MountInfo};

use crate::backend::{BackendError, GuestBackend, HostBackend};
use crate::crash::{Boundary, CrashHook, CrashPoint, Site};
use crate::error::{Error, Result};
use crate::mount::Mount;
use crate::request::DiskRequest;
use lunledger_journal::{Journal, JournalReader};
use lunledger_model::{DiskKind, Event, HandleId, OpId, OpKind, Slot, Step, Target};
use lunledger_recovery::State;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// The SCSI disk manager. Cheap to clone; clones share one manager.
#[derive(Clone)]
pub struct Manager {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) journal: Journal,
    state: Mutex<State>,
    pub(crate) host: Arc<dyn HostBackend>,
    pub(crate) guest: Arc<dyn GuestBackend>,
    /// Woken on every applied event: callers sharing another caller's attach or mount wait here.
    changed: Notify,
    /// Why the manager stopped, once it has.
    stopped: Mutex<Option<String>>,
    crash: Option<Arc<dyn CrashHook>>,
    /// Handles with a release running, so two releases of one handle never interleave.
    releasing: Mutex<HashSet<HandleId>>,
    /// Handles issued by an add that has not yet handed them to its caller. They are the add
    /// caller's, not anyone else's: the handle listings and `release_owner` leave them out, and
    /// `release` refuses them, so an add is never left holding a handle someone else released.
    /// Filled under the state lock when the handle is issued (lock order: state, then this).
    issuing: Mutex<HashSet<HandleId>>,
    /// Teardowns being run: one runner per mount or slot at a time (two releases can each see
    /// the same teardown due).
    busy: Mutex<HashSet<Target>>,
    /// The backend error of the last failed attach or mount of each target, so that callers
    /// sharing that step get the very error its runner got (cleared when the target's next
    /// step starts).
    pub(crate) failed_steps: Mutex<HashMap<Target, BackendError>>,
    pub(crate) opts: ManagerOptions,
    last_recovery: Mutex<Option<RecoveryReport>>,
    /// The sequence number of the last checkpoint written, held while one is written (see
    /// `maybe_checkpoint`).
    last_checkpoint: tokio::sync::Mutex<u64>,
    /// Every add and release, run by its caller or (once the caller went away) in a task of
    /// its own, and every checkpoint task: `Manager::close` waits for them.
    pub(crate) tasks: tokio_util::task::TaskTracker,
    /// Unmount, unplug and detach calls that succeeded. Recovery runs before the manager is
    /// handed to any caller, so its share is the difference across it.
    pub(crate) teardown_steps: AtomicU64,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (our critical sections
/// leave the data consistent at every point where they could panic: nowhere).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn check_running(&self) -> Result<()> {
        match lock(&self.stopped).as_ref() {
            Some(why) if why.starts_with("crash") => Err(Error::Crashed(why.clone())),
            Some(why) => Err(Error::Stopped(why.clone())),
            None => Ok(()),
        }
    }

    fn stop(&self, why: String) {
        let mut s = lock(&self.stopped);
        if s.is_none() {
            tracing::error!(reason = %why, "manager stopped");
            *s = Some(why);
        }
        self.changed.notify_waiters();
    }

    /// Decides an event from the current state and journals it, atomically: `decide` sees the
    /// state under the same lock that applies and appends the event, so two operations never
    /// pick the same slot, index or path. Returns the decision's value and the record's sequence.
    pub(crate) fn record_with<T>(
        &self,
        op: OpId,
        decide: impl FnOnce(&State) -> Result<(Event, T)>,
    ) -> Result<(T, u64)> {
        self.check_running()?;
        let mut st = self.state();
        let (event, value) = decide(&st)?;
        let seq = self.commit(&mut st, op, event)?;
        drop(st);
        self.changed.notify_waiters();
        Ok((value, seq))
    }

    /// Starts an operation: its id is the fold's next operation id.
    pub(crate) fn start_op(&self, kind: OpKind) -> Result<OpId> {
        self.check_running()?;
        let mut st = self.state();
        let op = st.next_op;
        self.commit(&mut st, op, Event::OpStarted { kind })?;
        drop(st);
        self.crash_point(op, Site::OpStarted, Boundary::AfterOutcome)?;
        Ok(op)
    }

    /// Applies then appends one event; the caller holds the state lock, so the journal's order is
    /// the fold's order.
    fn commit(&self, st: &mut State, op: OpId, event: Event) -> Result<u64> {
        let seq = st
            .apply_next(op, &event)
            .map_err(|e| Error::Internal(format!("{} by op {op}: {e}", event.name())))?;
        let why = match self.journal.append(op, event) {
            Ok(s) if s == seq => return Ok(seq),
            Ok(s) => format!("journal assigned sequence {s}, state expected {seq}"),
            Err(e) => format!("append failed: {e}"),
        };
        self.stop(why.clone());
        Err(Error::Stopped(why))
    }

    /// Journals an event (rides on the next flush).
    pub(crate) fn record(&self, op: OpId, event: Event) -> Result<u64> {
        self.record_with(op, |_| Ok((event, ()))).map(|(_, s)| s)
    }

    /// Journals an event and waits until it is durable.
    pub(crate) async fn record_durable(&self, op: OpId, event: Event) -> Result<u64> {
        let seq = self.record(op, event)?;
        self.durable_for(op, seq).await?;
        Ok(seq)
    }

    /// Waits until everything up to `seq` is durable, for operation `op`: a journal failure
    /// names the operation.
    pub(crate) async fn durable_for(&self, op: OpId, seq: u64) -> Result<()> {
        match self.durable_point(Some(op), seq).await {
            Err(Error::Journal(source)) => Err(Error::JournalFailed { op, source }),
            other => other,
        }
    }

    /// Waits until everything up to `seq` is durable.
    pub(crate) async fn durable(&self, seq: u64) -> Result<()> {
        self.durable_point(None, seq).await
    }

    /// Waits until everything up to `seq` is durable; a durable point of `op` when named (the
    /// journal counts those per operation kind).
    async fn durable_point(&self, op: Option<OpId>, seq: u64) -> Result<()> {
        let limit = self.opts.durable_timeout;
        // A wait the timeout can end at any moment: it never leads the journal's commit (a
        // leader is busy on its own thread for its flush, and a disk that stopped answering
        // must not hold this operation past `durable_timeout`); the writer thread commits.
        let wait = self.journal.wait_durable_cancellable(op, seq);
        let waited = tokio::time::timeout(limit, wait).await;
        let res = waited.unwrap_or_else(|_| {
            // A disk that stopped answering (a hung NFS mount, a wedged device): give up,
            // stopping the journal so that nothing more is made durable behind our back. The
            // manager is stopped with this cause first: another durable wait the halt ends
            // finds it there (below) and reports it, instead of a bare "halted" that would
            // become the manager's stop reason (seen once in a loaded test run).
            let e = lunledger_journal::JournalError::Internal(format!(
                "the journal's flush did not complete within {limit:?} (its disk stopped answering?)"
            ));
            self.stop(format!("flush failed: {e}"));
            self.journal.halt();
            Err(e)
        });
        if let Err(e) = res {
            if matches!(e, lunledger_journal::JournalError::Halted) {
                // Halted because the manager already stopped: the caller gets the first cause,
                // not the halt it led to.
                self.check_running()?;
            }
            self.stop(format!("flush failed: {e}"));
            return Err(e.into());
        }
        self.check_running()
    }

    /// Marks `handle` as issued but not yet handed to its add's caller. Called with the state
    /// lock held (in the decision that issues it).
    pub(crate) fn issuing(&self, handle: HandleId) {
        lock(&self.issuing).insert(handle);
    }

    /// The add issuing `handle` has handed it to its caller (or given up on it): from now on it
    /// is listed and releasable like any other handle.
    pub(crate) fn handed_over(&self, handle: HandleId) {
        lock(&self.issuing).remove(&handle);
    }

    /// Whether `handle` is still being issued by its add.
    pub(crate) fn is_issuing(&self, handle: HandleId) -> bool {
        lock(&self.issuing).contains(&handle)
    }

    /// Whether the teardown due at `slot` has stopped: its last step (on the attachment or on
    /// one of its mounts) failed and no task is running it now. It waits for a retry
    /// (`retry_teardowns`, or the release again).
    pub(crate) fn teardown_stalled(&self, st: &State, slot: Slot) -> bool {
        let Some(a) = st.attachments.get(&slot) else {
            return false;
        };
        let busy = lock(&self.busy);
        if busy.contains(&Target::Slot(slot)) || a.pending.is_some() {
            return false;
        }
        let failed_mount = st.mounts.iter().any(|(id, m)| {
            m.slot == slot
                && m.attach == a.attach
                && m.phase.teardown_due()
                && m.pending.is_none()
                && m.last_error.is_some()
                && !busy.contains(&Target::Mount(*id))
        });
        a.last_error.is_some() || failed_mount
    }

    /// Consults the crash hook; a crash stops the manager and the journal right here.
    pub(crate) fn crash_point(&self, op: OpId, site: Site, boundary: Boundary) -> Result<()> {
        self.check_running()?;
        if let Some(hook) = &self.crash {
            let point = CrashPoint { op, site, boundary };
            if hook.crash_at(&point) {
                let why = format!("crash at {point}");
                // As a SIGKILL would: whatever was not durable yet is gone. (A crash hook exists
                // with the `testing` feature only.)
                #[cfg(feature = "testing")]
                if let Err(e) = self.journal.crash() {
                    tracing::warn!(error = %e, "dropping the journal's non-durable tail failed");
                }
                self.stop(why.clone());
                return Err(Error::Crashed(why));
            }
        }
        Ok(())
    }

    /// The error a caller sharing the failed `step` on `target` gets: the runner's own backend
    /// error (or, for a step failed before this process, its journaled message).
    pub(crate) fn shared_failure(
        &self,
        step: Step,
        target: Target,
        slot: Slot,
        path: Option<String>,
        journaled: Option<&str>,
        phase: &dyn std::fmt::Debug,
    ) -> Error {
        let source = lock(&self.failed_steps)
            .get(&target)
            .cloned()
            .unwrap_or_else(|| {
                BackendError::Failed(
                    journaled
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("{phase:?}")),
                )
            });
        Error::Backend {
            step,
            slot,
            path,
            source,
        }
    }

    /// Waits until `ready` says the state is settled, re-checking after every applied event.
    pub(crate) async fn wait_until<T>(
        &self,
        mut ready: impl FnMut(&State) -> Option<T>,
    ) -> Result<T> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.check_running()?;
            if let Some(v) = ready(&self.state()) {
                return Ok(v);
            }
            notified.await;
        }
    }

    /// Claims the teardown of `target` while `due` says it is due, waiting while another task runs
    /// it. `None`: nothing is due (any more).
    pub(crate) async fn claim(
        &self,
        target: Target,
        due: impl Fn(&State) -> bool,
    ) -> Result<Option<Claim<'_>>> {
        self.wait_until(|st| {
            if !due(st) {
                Some(None)
            } else if lock(&self.busy).insert(target) {
                Some(Some(Claim {
                    inner: self,
                    target,
                }))
            } else {
                None
            }
        })
        .await
    }

    /// Starts [`Self::maybe_checkpoint`] in a task of the manager's when a checkpoint is due:
    /// for an add, whose caller gets its handle without another await (a checkpoint already
    /// being written is left to finish; the next operation looks again).
    pub(crate) fn spawn_checkpoint_if_due(self: &Arc<Self>) {
        let due = match self.last_checkpoint.try_lock() {
            Ok(last) => self.checkpoint_due(self.state().last_seq, *last),
            Err(_) => false,
        };
        if due {
            let inner = self.clone();
            self.tasks
                .spawn(async move { inner.checkpoint_logging_failure().await });
        }
    }

    /// [`Self::maybe_checkpoint`] for an operation that already succeeded: a failed checkpoint
    /// is not the operation's error (it stops the manager when the storage failed).
    pub(crate) async fn checkpoint_logging_failure(self: &Arc<Self>) {
        if let Err(e) = self.maybe_checkpoint().await {
            tracing::warn!(error = %e, "checkpoint failed");
        }
    }

    /// Whether enough records have passed since the checkpoint at `last` for another one.
    fn checkpoint_due(&self, last_seq: u64, last: u64) -> bool {
        let every = self.opts.checkpoint_every;
        every != 0 && last_seq >= last + every
    }

    /// Writes a checkpoint when enough records have passed since the last one.
    pub(crate) async fn maybe_checkpoint(self: &Arc<Self>) -> Result<()> {
        if self.opts.checkpoint_every == 0 {
            // Checkpoints off: not even the lock.
            return Ok(());
        }
        // One checkpoint at a time, and never an older one after a newer: two operations ending
        // together would otherwise race, and the older one could name a record the newer one's
        // pruning had just removed.
        let mut last = self.last_checkpoint.lock().await;
        let (at, blob) = {
            let st = self.state();
            if !self.checkpoint_due(st.last_seq, *last) {
                return Ok(());
            }
            let blob = lunledger_recovery::encode_checkpoint(&st)
                .map_err(|e| Error::Internal(format!("encoding a checkpoint: {e}")))?;
            (st.last_seq, blob)
        };
        // The checkpoint's state must be durable in the journal before the checkpoint claims it.
        self.durable(at).await?;
        let journal = self.journal.clone();
        let retention = self.opts.retention.clone();
        let written = tokio::task::spawn_blocking(move || {
            journal.write_checkpoint(at, blob)?;
            if let Some(r) = retention {
                journal.prune(&r)?;
            }
            Ok::<_, lunledger_journal::JournalError>(())
        })
        .await
        .map_err(|e| Error::Internal(format!("checkpoint task: {e}")))?;
        match written {
            Ok(()) => *last = at,
            // A checkpoint or rotation that failed on storage leaves the journal's files in a
            // state only a reopen sorts out: fail-stop, as for any other journal write.
            Err(
                e @ (lunledger_journal::JournalError::Storage { .. }
                | lunledger_journal::JournalError::Sled(_)
                | lunledger_journal::JournalError::Io { .. }),
            ) => {
                self.journal.halt();
                self.stop(format!("checkpoint failed: {e}"));
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        }
        tracing::debug!(at_seq = at, "checkpoint written");
        Ok(())
    }
}

/// The exclusive right to run one teardown; released (and waiters woken) on drop.
pub(crate) struct Claim<'a> {
    inner: &'a Inner,
    target: Target,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.inner.busy).remove(&self.target);
        self.inner.changed.notify_waiters();
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("journal", &self.inner.journal.dir())
            .field("last_seq", &self.inner.journal.last_seq())
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// Closes the manager: waits (up to 10 s) for its operations still running (every add and
    /// release is tracked, run by its caller or in a task of the manager's), makes the journal
    /// durable, and releases it, so the directory can be opened again. Handles of a closed manager return an error from
    /// `release`. Another clone of this `Manager` still alive keeps the journal open:
    /// [`Error::Internal`] says so instead of returning as if it were released.
    pub async fn close(self) -> Result<()> {
        let tasks = self.inner.tasks.clone();
        tasks.close();
        if tokio::time::timeout(std::time::Duration::from_secs(10), tasks.wait())
            .await
            .is_err()
        {
            return Err(Error::Internal(
                "operations still running after 10 s".into(),
            ));
        }
        let synced = self.sync().await;
        if Arc::strong_count(&self.inner) != 1 {
            return Err(Error::Internal(
                "another clone of this Manager is still alive and keeps the journal open".into(),
            ));
        }
        match synced {
            Ok(()) | Err(Error::Crashed(_)) | Err(Error::Stopped(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Attaches (and, with a mount config, mounts) a virtual disk file.
    pub async fn add_virtual_disk(&self, req: DiskRequest) -> Result<Mount> {
        self.add(req, DiskKind::VirtualDisk).await
    }

    /// Attaches (and mounts) a host block device passed through.
    pub async fn add_physical_disk(&self, req: DiskRequest) -> Result<Mount> {
        self.add(req, DiskKind::PassThru).await
    }

    /// Attaches (and mounts) an extensible virtual disk; `req.host_path` is `evd://<type>/<path>`.
    /// As hcsshim's `AddExtensibleVirtualDisk`, it grants no VM access: a `vm_id` is refused.
    pub async fn add_extensible_virtual_disk(&self, req: DiskRequest) -> Result<Mount> {
        self.add(req, DiskKind::ExtensibleVirtualDisk).await
    }

    /// A copy of the live state (the fold of the journal).
    pub fn state(&self) -> State {
        self.inner.state().clone()
    }

    /// Every live handle, as `Mount`s that can be released. A handle an add is still issuing
    /// (not yet returned to that add's caller) is not listed: it is the add caller's.
    pub fn handles(&self) -> Vec<Mount> {
        let st = self.inner.state();
        st.handles
            .iter()
            .filter(|(id, _)| !self.inner.is_issuing(**id))
            .map(|(id, h)| Mount::new(self.inner.clone(), *id, h))
            .collect()
    }

    /// The live handles labelled with `owner` (a restarted shim takes them back with this).
    /// Like [`Manager::handles`], leaves out handles an add has not yet returned to its caller.
    pub fn handles_by_owner(&self, owner: &str) -> Vec<Mount> {
        let st = self.inner.state();
        st.handles_by_owner(owner)
            .filter(|(id, _)| !self.inner.is_issuing(*id))
            .map(|(id, h)| Mount::new(self.inner.clone(), id, h))
            .collect()
    }

    /// The live handle `id`, if any (and not still being issued by its add).
    pub fn handle(&self, id: HandleId) -> Option<Mount> {
        let st = self.inner.state();
        st.handles
            .get(&id)
            .filter(|_| !self.inner.is_issuing(id))
            .map(|h| Mount::new(self.inner.clone(), id, h))
    }

    /// Releases every handle `owner` holds (a container that vanished). Returns how many were
    /// released; the first error stops nothing: every handle is tried, then the first error is
    /// returned.
    ///
    /// Which handles: those labelled `owner` whose add had returned them to their callers when
    /// `release_owner` started (the set is taken once, at the start). An add for the same owner
    /// that is still running (its handle issued but not yet durable, or durable but not yet
    /// handed over) is not touched: it completes normally, its caller gets the handle and is
    /// the one to release it (a later `release_owner` would also find it). So an add racing
    /// `release_owner` never fails because of it, and nothing leaks.
    pub async fn release_owner(&self, owner: &str) -> Result<usize> {
        let mut released = 0;
        let mut first_err = None;
        for m in self.handles_by_owner(owner).into_iter().rev() {
            match m.release().await {
                Ok(()) => released += 1,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(released),
        }
    }

    /// What the recovery run by `open` did.
    pub fn last_recovery(&self) -> Option<RecoveryReport> {
        lock(&self.inner.last_recovery).clone()
    }

    /// Read access to the journal (audits, counters, tests). Appending is the manager's alone:
    /// every event it journals is first validated by the fold.
    pub fn journal(&self) -> JournalReader {
        self.inner.journal.reader()
    }

    /// Retries every teardown that failed earlier (unmounts, unplugs, detaches no handle waits
    /// for). Returns how many are still due afterwards.
    pub async fn retry_teardowns(&self) -> Result<usize> {
        recover::retry_teardowns(&self.inner).await
    }

    /// Flushes the journal and returns once everything recorded so far is durable.
    pub async fn sync(&self) -> Result<()> {
        let seq = self.inner.state().last_seq;
        self.inner.durable(seq).await
    }
}
