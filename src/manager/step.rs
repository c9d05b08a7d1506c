//! One backend step by the write-ahead rule, and the teardowns built from steps. Live adds and
//! releases, rollbacks and recovery all run their steps through here.

use super::Inner;
use crate::backend::{BackendError, DetachRequest, MountRequest};
use crate::crash::{Boundary, Site};
use crate::error::{Error, Result};
use lunledger_model::{Event, MountId, OpId, Resolution, Slot, Step, Target};
use lunledger_recovery::{settle, AttachPhase, Settled};
use std::future::Future;
use std::sync::atomic::Ordering;

impl Inner {
    /// Runs a backend call as `step` on `target`: crash point, intent, crash point, the call,
    /// crash point, outcome, crash point. Neither record is waited for: the operation's plan,
    /// durable before its first call, already names the step (an add's reservation, a release's
    /// dropped references), and recovery settles a step whose records were lost by `inspect`
    /// or an idempotent retry; both ride on the next durable point.
    /// Returns the backend's own result; `Err` only for journal failures and crashes.
    pub(crate) async fn run_step<Fut>(
        &self,
        op: OpId,
        step: Step,
        target: Target,
        call: Fut,
    ) -> Result<Result<(), BackendError>>
    where
        Fut: Future<Output = Result<(), BackendError>>,
    {
        let site = Site::Step(step, target);
        self.crash_point(op, site, Boundary::BeforeIntent)?;
        super::lock(&self.failed_steps).remove(&target);
        self.record(op, Event::StepIntent { step, target })?;
        self.crash_point(op, site, Boundary::AfterIntent)?;
        let span = tracing::debug_span!("step", op, step = step.name(), ?target);
        let mut res = tracing::Instrument::instrument(call, span).await;
        self.crash_point(op, site, Boundary::AfterCall)?;
        let outcome = match &res {
            Ok(()) => Event::StepDone { step, target },
            // A timeout or a lost connection says nothing about whether an attach or mount took
            // effect: ask the VM. When it cannot tell either, assume it did, so the rollback that
            // follows tears it down (idempotently) instead of leaking it.
            Err(e) if uncertain(e) && matches!(step, Step::Attach | Step::Mount) => {
                let settled = self.took_effect(step, target).await;
                // Only the VM's own word turns the error into success.
                if settled.inspected && settled.resolution == Resolution::Happened {
                    res = Ok(());
                }
                Event::StepResolved {
                    step,
                    target,
                    resolution: settled.resolution,
                }
            }
            Err(e) => {
                if matches!(step, Step::Attach | Step::Mount) {
                    // Before the failure is applied: a sharing caller woken by it finds it.
                    super::lock(&self.failed_steps).insert(target, e.clone());
                }
                Event::StepFailed {
                    step,
                    target,
                    error: e.to_string(),
                }
            }
        };
        self.record(op, outcome)?;
        if res.is_ok() && matches!(step, Step::Unmount | Step::Unplug | Step::Detach) {
            self.teardown_steps.fetch_add(1, Ordering::Relaxed);
        }
        self.crash_point(op, site, Boundary::AfterOutcome)?;
        if let Err(e) = &res {
            tracing::warn!(op, step = step.name(), ?target, error = %e, "step failed");
        }
        Ok(res)
    }

    /// Whether an attach or mount whose call gave an uncertain error took effect: `inspect` the
    /// side it acts on, then the one settling rule recovery uses too
    /// ([`lunledger_recovery::settle`]).
    async fn took_effect(&self, step: Step, target: Target) -> Settled {
        let limit = self.opts.inspect_timeout;
        let seen = if step == Step::Attach {
            let host = tokio::time::timeout(limit, self.host.inspect()).await;
            super::observe(host.ok().and_then(|r| r.ok()), None)
        } else {
            let guest = tokio::time::timeout(limit, self.guest.inspect()).await;
            super::observe(None, guest.ok().and_then(|r| r.ok()))
        };
        // The target is the caller's own reservation: it is in the state until its outcome.
        settle(&self.state(), step, target, &seen).unwrap_or(Settled {
            resolution: Resolution::Happened,
            inspected: false,
        })
    }

    /// Unmounts `mount` if its unmount is due.
    pub(crate) async fn teardown_mount(&self, op: OpId, mount: MountId) -> Result<()> {
        let due = |st: &lunledger_recovery::State| {
            st.mounts
                .get(&mount)
                .is_some_and(|m| m.phase.teardown_due())
        };
        let Some(_claim) = self.claim(Target::Mount(mount), due).await? else {
            return Ok(());
        };
        let req = {
            let st = self.state();
            let Some(m) = st.mounts.get(&mount) else {
                return Ok(());
            };
            MountRequest {
                slot: m.slot,
                attach: m.attach,
                mount,
                path: m.path.clone(),
                spec: m.spec.clone(),
            }
        };
        let res = self
            .run_step(
                op,
                Step::Unmount,
                Target::Mount(mount),
                self.guest.unmount(&req),
            )
            .await?;
        res.map_err(|source| Error::Backend {
            step: Step::Unmount,
            slot: req.slot,
            path: Some(req.path.clone()),
            source,
        })
    }

    /// Tears down the attachment at `slot` if its teardown is due: first any unmount still due on
    /// it (a guest must never lose a mounted device), then unplug, then detach. A failure leaves
    /// the rest due and the slot reserved.
    pub(crate) async fn teardown_attachment(&self, op: OpId, slot: Slot) -> Result<()> {
        let due = |st: &lunledger_recovery::State| {
            st.attachments
                .get(&slot)
                .is_some_and(|a| a.phase.teardown_due())
        };
        let Some(_claim) = self.claim(Target::Slot(slot), due).await? else {
            return Ok(());
        };
        loop {
            let (phase, attach, path, due_mounts) = {
                let st = self.state();
                let Some(a) = st.attachments.get(&slot) else {
                    return Ok(());
                };
                let due: Vec<MountId> = st
                    .mounts
                    .iter()
                    .filter(|(_, m)| {
                        m.slot == slot && m.attach == a.attach && m.phase.teardown_due()
                    })
                    .map(|(id, _)| *id)
                    .collect();
                (a.phase, a.attach, a.disk.path.clone(), due)
            };
            if !phase.teardown_due() {
                return Ok(());
            }
            for m in due_mounts {
                self.teardown_mount(op, m).await?;
            }
            let (step, res) = if phase == AttachPhase::NeedsUnplug {
                let r = self
                    .run_step(
                        op,
                        Step::Unplug,
                        Target::Slot(slot),
                        self.guest.unplug(slot),
                    )
                    .await?;
                (Step::Unplug, r)
            } else {
                let req = DetachRequest { slot, attach };
                let r = self
                    .run_step(op, Step::Detach, Target::Slot(slot), self.host.detach(&req))
                    .await?;
                (Step::Detach, r)
            };
            res.map_err(|source| Error::Backend {
                step,
                slot,
                path: Some(path),
                source,
            })?;
        }
    }
}

/// Errors after which the call may or may not have taken effect.
fn uncertain(e: &BackendError) -> bool {
    matches!(
        e,
        BackendError::Timeout { .. } | BackendError::Unavailable(_)
    )
}
