//! Executing recovery: observe the VM, plan with the pure planner, run each action through the
//! same journaled steps as live operations, and report. Recovery is itself an operation in the
//! journal, so a crash during recovery is recovered by the next open, and recovering twice does
//! nothing the second time.

use super::{lock, Inner};
use crate::backend::{DetachRequest, GuestView, HostView, MountRequest};
use crate::crash::{Boundary, Site};
use crate::error::{Error, Result};
use lunledger_model::{Drift, Event, MountSpec, OpId, OpKind, Resolution, Step, Target};
use lunledger_recovery::{plan, Action, Observation, ReleaseEnd, SeenAttachment, SeenGuest};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which sides of the VM recovery could inspect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Inspected {
    /// The host (its attachments).
    pub host: bool,
    /// The guest (its devices and mounts).
    pub guest: bool,
}

/// A step whose outcome record was lost, settled by recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SettledStep {
    /// The step.
    pub step: Step,
    /// Its target.
    pub target: Target,
    /// What recovery journaled it as.
    pub resolution: Resolution,
    /// Whether the VM was asked (`false`: assumed; the teardown that follows is idempotent).
    pub asked_vm: bool,
}

/// What a recovery did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RecoveryReport {
    /// Sequence number of the checkpoint the state was rebuilt from, if any.
    pub checkpoint_seq: Option<u64>,
    /// Records replayed after the checkpoint.
    pub records_replayed: u64,
    /// A damaged journal tail that was set aside on open, described.
    pub tail_quarantined: Option<String>,
    /// Durable records found missing and accepted (`ManagerOptions::accept_lost_records`), up
    /// to the last durable one.
    pub lost_records: Option<lunledger_journal::SeqRange>,
    /// What opening the journal found about its own integrity besides a damaged tail and lost
    /// records, described: a missing or bad durable watermark (a lost tail could go unnoticed),
    /// sealed segments missing (accepted with `accept_lost_records`), segment files the
    /// manifest does not name, a segment manifest reconstructed for a journal written before
    /// manifests existed.
    pub journal_findings: Vec<String>,
    /// Which sides of the VM could be inspected.
    pub inspected: Inspected,
    /// The plan executed.
    pub plan: Vec<Action>,
    /// Steps whose lost outcome was settled.
    pub resolved: Vec<SettledStep>,
    /// Adds rolled back (their callers never got a handle).
    pub rolled_back: Vec<OpId>,
    /// Releases finished (one whose teardown still failed after every retry is among `errors`,
    /// its teardown in `teardowns_pending`).
    pub releases_finished: Vec<OpId>,
    /// Operations closed with nothing left to do.
    pub closed: Vec<OpId>,
    /// Teardown steps (unmount, unplug, detach calls) that succeeded during recovery: those of
    /// rolled-back adds and finished releases as well as lone teardowns. A stray disk's detach is
    /// reported as drift instead.
    pub teardowns_done: usize,
    /// Teardowns still due after all retries (slot or mount, and the last error).
    pub teardowns_pending: Vec<String>,
    /// Drift between journal and VM.
    pub drift: Vec<Drift>,
    /// Handles alive after recovery.
    pub live_handles: usize,
    /// Errors met (recovery goes on past them).
    pub errors: Vec<String>,
    /// Wall time of the whole recovery, including rebuilding the state.
    pub duration: Duration,
}

impl RecoveryReport {
    /// Whether recovery had nothing to do.
    pub fn is_clean(&self) -> bool {
        self.plan.is_empty() && self.tail_quarantined.is_none()
    }
}

/// What the backends' views say, in the planner's terms (`None`: that side could not be
/// inspected). `recover --dry-run` plans from this too.
pub fn observe(host: Option<HostView>, guest: Option<GuestView>) -> Observation {
    Observation {
        host: host.map(|h| {
            h.attachments
                .into_iter()
                .map(|a| SeenAttachment {
                    slot: a.slot,
                    attach: a.attach,
                    path: a.path,
                })
                .collect()
        }),
        guest: guest.map(|g| SeenGuest {
            devices: g.devices,
            mount_slots: g
                .mounts
                .iter()
                .filter_map(|m| Some((m.path.clone(), m.slot?)))
                .collect(),
            mounts: g.mounts.into_iter().map(|m| m.path).collect(),
        }),
    }
}

/// Runs recovery on a freshly opened manager.
pub(crate) async fn recover(
    inner: &Arc<Inner>,
    mut report: RecoveryReport,
) -> Result<RecoveryReport> {
    let started = Instant::now();
    let steps_before = inner.teardown_steps.load(Ordering::Relaxed);
    let timeout = inner.opts.inspect_timeout;
    let host = match tokio::time::timeout(timeout, inner.host.inspect()).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            report.errors.push(format!("host inspect: {e}"));
            None
        }
        Err(_) => {
            report.errors.push("host inspect timed out".into());
            None
        }
    };
    let guest = match tokio::time::timeout(timeout, inner.guest.inspect()).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            report.errors.push(format!("guest inspect: {e}"));
            None
        }
        Err(_) => {
            report.errors.push("guest inspect timed out".into());
            None
        }
    };
    report.inspected = Inspected {
        host: host.is_some(),
        guest: guest.is_some(),
    };
    let seen = observe(host, guest);
    let actions = plan(&inner.state(), &seen, &inner.opts.recovery)
        .map_err(|e| Error::Internal(e.to_string()))?;
    report.plan = actions.clone();
    // The state's drift is the last recovery operation's: a recovery that finds nothing still
    // records itself when an earlier one's findings are shown, so they are not shown as this
    // one's. (Nothing to do and nothing shown: nothing is journaled.)
    let stale_drift = !inner.state().drift.is_empty();
    if !actions.is_empty() || stale_drift {
        let op = inner.start_op(OpKind::Recovery)?;
        for action in actions {
            match execute(inner, op, action, &mut report).await {
                Ok(()) => {}
                Err(e) if e.stops_manager() => return Err(e),
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        sweep(inner, op, &mut report).await?;
        inner.record(op, Event::OpFinished)?;
        let seq = inner.state().last_seq;
        inner.durable_for(op, seq).await?;
    }
    let st = inner.state();
    report.live_handles = st.handles.len();
    report.drift = st.drift.clone();
    report.teardowns_pending = pending_teardowns(&st);
    drop(st);
    let steps = inner.teardown_steps.load(Ordering::Relaxed) - steps_before;
    report.teardowns_done = usize::try_from(steps).unwrap_or(usize::MAX);
    report.duration += started.elapsed();
    tracing::info!(
        rolled_back = report.rolled_back.len(),
        releases_finished = report.releases_finished.len(),
        resolved = report.resolved.len(),
        drift = report.drift.len(),
        pending = report.teardowns_pending.len(),
        live_handles = report.live_handles,
        ms = report.duration.as_millis() as u64,
        "recovery finished"
    );
    *lock(&inner.last_recovery) = Some(report.clone());
    Ok(report)
}

fn pending_teardowns(st: &lunledger_recovery::State) -> Vec<String> {
    st.pending_teardowns()
        .into_iter()
        .map(|p| {
            let err = p.last_error.unwrap_or_else(|| "not tried".into());
            match p.target {
                Target::Mount(id) => format!("unmount of mount {id} at {} ({err})", p.path),
                Target::Slot(slot) => format!("{} at {slot} ({err})", p.step),
            }
        })
        .collect()
}

async fn execute(
    inner: &Arc<Inner>,
    op: OpId,
    action: Action,
    report: &mut RecoveryReport,
) -> Result<()> {
    let planned = matches!(action, Action::SettlePlanned { .. });
    match action {
        Action::Resolve {
            step,
            target,
            resolution,
            inspected,
        }
        | Action::SettlePlanned {
            step,
            target,
            resolution,
            inspected,
        } => {
            if planned {
                // The add's plan named this step; its own intent record was lost (or never
                // written): the intent is journaled now, under recovery, with what the VM
                // showed.
                inner.record(op, Event::StepIntent { step, target })?;
            }
            inner.record(
                op,
                Event::StepResolved {
                    step,
                    target,
                    resolution,
                },
            )?;
            report.resolved.push(SettledStep {
                step,
                target,
                resolution,
                asked_vm: inspected,
            });
        }
        Action::LoseAttachment { slot } => {
            inner.record(
                op,
                Event::DriftFound {
                    drift: Drift::MissingAttachment { slot },
                },
            )?;
            inner.record(op, Event::AttachmentLost { slot })?;
        }
        Action::LoseMount { mount } => {
            let path = inner
                .state()
                .mounts
                .get(&mount)
                .map(|m| m.path.clone())
                .unwrap_or_default();
            inner.record(
                op,
                Event::DriftFound {
                    drift: Drift::MissingMount { mount, path },
                },
            )?;
            inner.record(op, Event::MountLost { mount })?;
        }
        Action::Report { drift } => {
            inner.record(op, Event::DriftFound { drift })?;
        }
        Action::UnmountStray { path, slot, attach } => {
            // Write-ahead: the finding, which names what the repair does, is durable before the
            // call; the crash points are those of any step.
            let site = Site::Repair(Step::Unmount);
            inner.crash_point(op, site, Boundary::BeforeIntent)?;
            inner
                .record_durable(
                    op,
                    Event::DriftFound {
                        drift: Drift::UnknownMount { path: path.clone() },
                    },
                )
                .await?;
            inner.crash_point(op, site, Boundary::AfterIntent)?;
            let req = MountRequest {
                slot,
                attach,
                // Not ours: no mount id, and nothing says how it was mounted.
                mount: 0,
                path: path.clone(),
                spec: MountSpec::default(),
            };
            let res = inner.guest.unmount(&req).await;
            if res.is_ok() {
                // A repair is a teardown call recovery made: the report counts it.
                inner.teardown_steps.fetch_add(1, Ordering::Relaxed);
            }
            inner.crash_point(op, site, Boundary::AfterCall)?;
            match res {
                Ok(()) => {
                    inner.record(
                        op,
                        Event::DriftFound {
                            drift: Drift::UnknownMountUnmounted { path, slot },
                        },
                    )?;
                }
                Err(e) => report
                    .errors
                    .push(format!("unmounting unknown mount {path} on {slot}: {e}")),
            }
            inner.crash_point(op, site, Boundary::AfterOutcome)?;
        }
        Action::DetachStray { slot, attach, path } => {
            let drift = |detached| Event::DriftFound {
                drift: Drift::UnknownAttachment {
                    slot,
                    path: path.clone(),
                    detached,
                },
            };
            // Write-ahead: the finding, which names the slot both calls act on, is durable
            // before the first; each call has the crash points of any step.
            let unplug = Site::Repair(Step::Unplug);
            let detach = Site::Repair(Step::Detach);
            inner.crash_point(op, unplug, Boundary::BeforeIntent)?;
            inner.record_durable(op, drift(false)).await?;
            inner.crash_point(op, unplug, Boundary::AfterIntent)?;
            // Attach id 0 is never issued: it asks the backend for whatever is at the slot.
            let req = DetachRequest {
                slot,
                attach: attach.unwrap_or(0),
            };
            // Unplug first: a guest must not lose a device under its feet.
            // Repairs are teardown calls recovery made: the report counts them.
            let counted = |r: &std::result::Result<(), crate::backend::BackendError>| {
                if r.is_ok() {
                    inner.teardown_steps.fetch_add(1, Ordering::Relaxed);
                }
            };
            // A Windows guest has no unplug (hcsshim: a no-op): the detach alone removes it.
            let unplugged = if inner.opts.config.guest.unplugs() {
                let r = inner.guest.unplug(slot).await;
                counted(&r);
                inner.crash_point(op, unplug, Boundary::AfterCall)?;
                r
            } else {
                Ok(())
            };
            let res = match unplugged {
                Ok(()) => {
                    inner.crash_point(op, detach, Boundary::AfterIntent)?;
                    let detached = inner.host.detach(&req).await;
                    counted(&detached);
                    inner.crash_point(op, detach, Boundary::AfterCall)?;
                    detached
                }
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => {
                    inner.record(op, drift(true))?;
                }
                Err(e) => report
                    .errors
                    .push(format!("detaching stray disk at {slot}: {e}")),
            }
        }
        Action::RollBackAdd { op: add } => {
            let end = Event::OpRolledBack {
                reason: "the caller never received a handle (the shim stopped)".into(),
            };
            report.rolled_back.push(add);
            with_retries(inner, || inner.roll_back_add(add, end.clone())).await?;
        }
        Action::FinishRelease {
            op: rel,
            handle,
            end,
        } => {
            let finished = with_retries(inner, || async {
                // Read under the lock, then drop it before any await.
                let op = inner.state().ops.get(&rel).map(|o| o.releasing);
                let Some(releasing) = op else {
                    // A failed attempt ended the operation; resume under a new one.
                    return resume_release(inner, handle).await;
                };
                if releasing.is_none() {
                    // The release was journaled as started but stopped before naming its handle.
                    inner.record(rel, Event::ReleaseStarted { handle })?;
                }
                inner.finish_release(rel, handle, end).await?;
                Ok(Some(rel))
            })
            .await?;
            report.releases_finished.extend(finished);
        }
        Action::ResumeRelease { handle } => {
            let finished = with_retries(inner, || resume_release(inner, handle)).await?;
            report.releases_finished.extend(finished);
        }
        Action::Close { op: other } => {
            inner.record(other, Event::OpFinished)?;
            report.closed.push(other);
        }
        Action::Unmount { mount } => {
            with_retries(inner, || inner.teardown_mount(op, mount)).await?;
        }
        Action::Teardown { slot } => {
            with_retries(inner, || inner.teardown_attachment(op, slot)).await?;
        }
    }
    Ok(())
}

/// Retries, with backoff, every teardown still due after the plan ran (a rollback whose teardown
/// failed has ended its operation, but its teardown stays due and is retried here).
async fn sweep(inner: &Arc<Inner>, op: OpId, report: &mut RecoveryReport) -> Result<()> {
    let (mounts, slots) = inner.state().due_teardowns();
    for m in mounts {
        match with_retries(inner, || inner.teardown_mount(op, m)).await {
            Ok(()) => {}
            Err(e) if e.stops_manager() => return Err(e),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    for s in slots {
        match with_retries(inner, || inner.teardown_attachment(op, s)).await {
            Ok(()) => {}
            Err(e) if e.stops_manager() => return Err(e),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    Ok(())
}

/// Starts a new release operation for a handle whose release had failed; returns it once it
/// finished (`None` when the handle is already gone).
async fn resume_release(
    inner: &Arc<Inner>,
    handle: lunledger_model::HandleId,
) -> Result<Option<OpId>> {
    if !inner.state().handles.contains_key(&handle) {
        return Ok(None);
    }
    let op = inner.start_op(OpKind::Release { handle })?;
    inner.record(op, Event::ReleaseStarted { handle })?;
    inner
        .finish_release(op, handle, ReleaseEnd::Finished)
        .await?;
    Ok(Some(op))
}

/// Runs `f` up to the configured number of attempts with exponential backoff; journal failures
/// and crashes are not retried.
async fn with_retries<T, F, Fut>(inner: &Inner, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let attempts = inner.opts.teardown_attempts.max(1);
    let mut delay = inner.opts.teardown_backoff;
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.stops_manager() || attempt >= attempts => return Err(e),
            Err(e) => {
                tracing::warn!(attempt, error = %e, "recovery step failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
        }
    }
}

/// Retries every teardown that is due, under one operation. Returns how many remain due.
pub(crate) async fn retry_teardowns(inner: &Arc<Inner>) -> Result<usize> {
    let ((mounts, slots), handles) = {
        let st = inner.state();
        (st.due_teardowns(), st.stalled_releases())
    };
    if mounts.is_empty() && slots.is_empty() && handles.is_empty() {
        return Ok(0);
    }
    let op = inner.start_op(OpKind::RetryTeardown)?;
    let mut first_err = None;
    for m in mounts {
        if let Err(e) = inner.teardown_mount(op, m).await {
            first_err.get_or_insert(e);
        }
    }
    for s in slots {
        if let Err(e) = inner.teardown_attachment(op, s).await {
            first_err.get_or_insert(e);
        }
    }
    inner.record(op, Event::OpFinished)?;
    for h in handles {
        if let Err(e) = resume_release(inner, h).await {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err.filter(Error::stops_manager) {
        return Err(e);
    }
    let st = inner.state();
    Ok(pending_teardowns(&st).len())
}
