//! Releases and rollbacks. Both drop every reference first (so a failed unmount never leaks the
//! attachment reference, as it does in hcsshim), then run the teardowns that became due: unmount
//! before unplug before detach. A failed teardown stays due with its slot and path reserved, and a
//! retry of the release resumes it.

use super::run_to_end::RunToEnd;
use super::{lock, Inner};
use crate::crash::{Boundary, Site};
use crate::error::{Error, Result};
use lunledger_model::{AttachId, Event, HandleId, MountId, OpId, OpKind, Slot};
use lunledger_recovery::ReleaseEnd;
use std::sync::Arc;

impl Inner {
    /// Releases handle `id` (a retry resumes a release that failed part way), run by the
    /// caller's task and, if the caller stops waiting, to its end in a task of the manager's
    /// own (`RunToEnd`). The future holds the manager while it runs: `Manager::close` waits
    /// for it as for the manager's tasks.
    pub(crate) fn start_release(self: &Arc<Self>, id: HandleId) -> Result<RunToEnd<Result<()>>> {
        self.check_running()?;
        if !lock(&self.releasing).insert(id) {
            return Err(Error::ReleaseInProgress(id));
        }
        let inner = self.clone();
        let run = RunToEnd::new(
            &self.tasks,
            async move {
                let r = inner.release_op(id).await;
                lock(&inner.releasing).remove(&id);
                if r.is_ok() {
                    inner.checkpoint_logging_failure().await;
                }
                r
            },
            move |r| async move {
                if let Err(e) = r {
                    tracing::warn!(handle = id, error = %e, "release whose caller went away failed");
                }
            },
        );
        if run.is_err() {
            lock(&self.releasing).remove(&id);
        }
        run
    }

    async fn release_op(self: &Arc<Self>, id: HandleId) -> Result<()> {
        if !self.state().handles.contains_key(&id) {
            return Err(Error::AlreadyReleased);
        }
        // Not handed to its add's caller yet: not releasable by anyone else (no public call
        // hands out such a handle; this guards the add against having it released under it).
        if self.is_issuing(id) {
            return Err(Error::UnknownHandle(id));
        }
        let op = self.start_op(OpKind::Release { handle: id })?;
        self.record(op, Event::ReleaseStarted { handle: id })?;
        self.finish_release(op, id, ReleaseEnd::Finished).await
    }

    /// Drops the handle's remaining references, runs the teardowns due, marks the handle
    /// released and ends `op`. On a teardown failure, `op` ends failed and the handle stays,
    /// holding nothing, until a retry finishes its teardown.
    pub(crate) async fn finish_release(
        &self,
        op: OpId,
        id: HandleId,
        end: ReleaseEnd,
    ) -> Result<()> {
        let h = self
            .state()
            .handles
            .get(&id)
            .cloned()
            .ok_or(Error::AlreadyReleased)?;
        if let (true, Some(mount)) = (h.holds_mount, h.mount) {
            self.record(op, Event::MountRefDropped { mount })?;
        }
        if h.holds_attach {
            self.record(op, Event::AttachRefDropped { slot: h.slot })?;
        }
        // Write-ahead: the release (and with it every teardown that became due) is durable
        // before its first teardown call; a caller told "released" never sees the handle again.
        self.crash_point(op, Site::Plan, Boundary::BeforeIntent)?;
        let planned = self.state().last_seq;
        self.durable_for(op, planned).await?;
        self.crash_point(op, Site::Plan, Boundary::AfterIntent)?;
        if let Err(e) = self
            .teardown_for(op, h.mount, Some((h.slot, h.attach)))
            .await
        {
            if !e.stops_manager() {
                self.record(
                    op,
                    Event::OpFailed {
                        error: e.to_string(),
                    },
                )?;
            }
            return Err(e);
        }
        self.record(op, Event::HandleReleased { handle: id })?;
        let end = match end {
            ReleaseEnd::Finished => Event::OpFinished,
            ReleaseEnd::Abandoned => Event::OpAbandoned,
        };
        self.record(op, end)?;
        Ok(())
    }

    /// Rolls back an add: drops what it holds, tears down what became due, ends it with `end`.
    /// The add ends even when a teardown fails: the teardown stays due on its own.
    pub(crate) async fn roll_back_add(&self, op: OpId, end: Event) -> Result<()> {
        let Some(o) = self.state().ops.get(&op).cloned() else {
            return Ok(());
        };
        let attach = o.holds_attach.and_then(|slot| {
            self.state()
                .attachments
                .get(&slot)
                .map(|a| (slot, a.attach))
        });
        if let Some(mount) = o.holds_mount {
            self.record(op, Event::MountRefDropped { mount })?;
        }
        if let Some(slot) = o.holds_attach {
            self.record(op, Event::AttachRefDropped { slot })?;
        }
        let teardown = self.teardown_for(op, o.holds_mount, attach).await;
        if teardown.as_ref().is_err_and(Error::stops_manager) {
            return teardown;
        }
        self.record(op, end)?;
        teardown
    }

    /// Runs the teardowns due on a mount and on an attachment generation (at its slot; a
    /// newer generation at the same slot is left alone).
    async fn teardown_for(
        &self,
        op: OpId,
        mount: Option<MountId>,
        attachment: Option<(Slot, AttachId)>,
    ) -> Result<()> {
        if let Some(m) = mount {
            self.teardown_mount(op, m).await?;
        }
        if let Some((slot, attach)) = attachment {
            let same = self
                .state()
                .attachments
                .get(&slot)
                .is_some_and(|a| a.attach == attach);
            if same {
                self.teardown_attachment(op, slot).await?;
            }
        }
        Ok(())
    }
}
