//! A journal disk that stops answering, and who may lead the journal's commit.
//!
//! A durable point is cheapest when the waiting task leads the journal's commit round on its own
//! thread (no hand-off to the writer thread and back). But a leader is inside the round's I/O and
//! cannot give up on it, and `durable_timeout` must bound what a caller waits for even when the
//! disk stops answering (a hung NFS mount, a wedged device). So only the add and release tasks
//! lead (they run under [`in_operation_task`]), because their callers never wait on them
//! directly: each waits for its task *or* [`Inner::until_stalled`], whichever comes first. The
//! [`watchdog`] ends that race once a commit round has run past `durable_timeout`. Every other
//! durable wait (open, recovery, `sync`) runs in its caller's own task and does not lead: the
//! writer thread commits for it and the timeout bounds it directly.

use super::Inner;
use crate::error::Error;
use lunledger_journal::JournalError;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

tokio::task_local! {
    /// Set for the body of an add or release task (see the module documentation).
    static OPERATION_TASK: ();
}

/// Runs `fut` as an operation task: its durable points may lead the journal's commit.
pub(crate) async fn in_operation_task<F: std::future::Future>(fut: F) -> F::Output {
    OPERATION_TASK.scope((), fut).await
}

/// Whether the running task is an operation task, whose durable points may lead.
pub(crate) fn may_lead() -> bool {
    OPERATION_TASK.try_with(|_| ()).is_ok()
}

impl Inner {
    /// The journal's disk did not answer within `limit`: stops the manager with that cause,
    /// then halts the journal so that nothing more is made durable behind our back (in that
    /// order: a wait the halt ends finds the cause, not a bare "halted"), and wakes every
    /// caller waiting for an operation task. Returns the cause.
    pub(crate) fn journal_stalled(&self, limit: Duration) -> JournalError {
        let e = JournalError::Internal(format!(
            "the journal's flush did not complete within {limit:?} (its disk stopped answering?)"
        ));
        self.stop(format!("flush failed: {e}"));
        self.journal.halt();
        self.stalled.store(true, Ordering::SeqCst);
        self.stall.notify_waiters();
        e
    }

    /// Resolves, with the manager's stop, once the journal stalled (see
    /// [`Inner::journal_stalled`]); pending until then.
    pub(crate) async fn until_stalled(&self) -> Error {
        loop {
            let notified = self.stall.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stalled.load(Ordering::SeqCst) {
                return match self.check_running() {
                    Err(e) => e,
                    Ok(()) => Error::Stopped("the journal's disk stopped answering".into()),
                };
            }
            notified.await;
        }
    }
}

/// Watches the journal's commit rounds for one stuck past `limit` (its disk stopped answering)
/// and then stops the manager (see [`Inner::journal_stalled`]). Ends with the manager: it holds
/// only a weak reference between looks, and returns once the manager stopped.
pub(crate) async fn watchdog(inner: Weak<Inner>, limit: Duration) {
    // A stuck round is noticed at most a quarter of the limit late (at most a second).
    let tick = (limit / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.check_running().is_err() {
            return;
        }
        if let Some(running) = inner.journal.commit_running_for() {
            if running > limit {
                tracing::error!(
                    ?running,
                    ?limit,
                    "a journal commit round is stuck: stopping the manager"
                );
                inner.journal_stalled(limit);
                return;
            }
        }
    }
}
