//! The add operation: take (or share) an attachment, take (or share) a mount, issue a handle.
//!
//! Each add runs to completion even when its caller stops waiting (`RunToEnd`): a cancelled
//! caller can leak nothing. If the caller went away before the handle was returned, the handle
//! is released again and the operation is journaled as abandoned.

use super::run_to_end::RunToEnd;
use super::{Inner, Manager};
use crate::backend::{AttachRequest, MountRequest};
use crate::crash::{Boundary, Site};
use crate::error::{Error, Result};
use crate::mount::Mount;
use crate::request::DiskRequest;
use lunledger_model::{
    DiskKind, DiskSpec, Event, MountId, MountSpec, OpId, OpKind, Slot, Step, Target,
};
use lunledger_recovery::{AttachPhase, MountPhase, ReleaseEnd};
use std::sync::Arc;

impl Manager {
    pub(super) async fn add(&self, req: DiskRequest, kind: DiskKind) -> Result<Mount> {
        let (disk, mount) = req.specs_for(kind, self.inner.opts.config.guest)?;
        self.inner.check_running()?;
        let inner = self.inner.clone();
        let orphan = self.inner.clone();
        let span = tracing::info_span!("add", path = %req.host_path, kind = kind.as_str());
        let op = RunToEnd::new(
            &self.inner.tasks,
            tracing::Instrument::instrument(
                async move { add_op(&inner, &req, disk, mount).await },
                span,
            ),
            move |result| async move {
                // The caller went away before the add ended: nobody will ever release this
                // handle, so the add releases it.
                if let Ok((op, m)) = result {
                    orphan.handed_over(m.handle_id());
                    if let Err(e) = abandon(&orphan, op).await {
                        tracing::warn!(op, error = %e, "abandoning the unclaimed add failed");
                        return;
                    }
                    orphan.spawn_checkpoint_if_due();
                }
            },
        )?;
        let (op, m) = op.await?;
        // From here to the return there is no await: the handle is the caller's, listed and
        // releasable like any other, and the add is over before it is returned (its end rides
        // the next durable point).
        self.inner.handed_over(m.handle_id());
        if let Err(e) = self.inner.record(op, Event::OpFinished) {
            tracing::warn!(op, error = %e, "closing the add failed");
        }
        self.inner.spawn_checkpoint_if_due();
        Ok(m)
    }
}

/// Grants `vm` access to `path` by the write-ahead rule. The intent is the add's `OpStarted`
/// record (it names the VM and the path), durable with the add's plan before the call (see
/// `add_steps`); the outcome is `AccessGranted`. As in hcsshim, a grant is idempotent and never
/// revoked, so recovery has nothing to settle for one whose outcome was lost.
async fn grant(inner: &Arc<Inner>, op: OpId, vm: &str, path: &str) -> Result<()> {
    inner.crash_point(op, Site::Grant, Boundary::BeforeIntent)?;
    inner.crash_point(op, Site::Grant, Boundary::AfterIntent)?;
    let res = inner.host.grant_vm_access(vm, path).await;
    inner.crash_point(op, Site::Grant, Boundary::AfterCall)?;
    if let Err(source) = res {
        return Err(Error::GrantFailed {
            vm_id: vm.to_string(),
            path: path.to_string(),
            source,
        });
    }
    inner.record(
        op,
        Event::AccessGranted {
            vm_id: vm.to_string(),
            path: path.to_string(),
        },
    )?;
    inner.crash_point(op, Site::Grant, Boundary::AfterOutcome)
}

/// Releases the handle of an add whose caller went away, under the add's own operation.
async fn abandon(inner: &Arc<Inner>, op: OpId) -> Result<()> {
    let handle = inner
        .state()
        .ops
        .get(&op)
        .and_then(|o| o.handle)
        .ok_or_else(|| Error::Internal(format!("abandoned add {op} has no handle")))?;
    tracing::info!(
        op,
        handle,
        "add abandoned by its caller; releasing its handle"
    );
    inner.record(op, Event::ReleaseStarted { handle })?;
    inner
        .finish_release(op, handle, ReleaseEnd::Abandoned)
        .await
}

async fn add_op(
    inner: &Arc<Inner>,
    req: &DiskRequest,
    disk: DiskSpec,
    mount: Option<MountSpec>,
) -> Result<(OpId, Mount)> {
    let op = inner.start_op(OpKind::Add {
        disk: disk.clone(),
        mount: mount.clone(),
        requested_path: req.guest_path.clone(),
        owner: req.owner.clone(),
        vm_id: req.vm_id.clone(),
    })?;
    match add_steps(inner, op, req, &disk, mount.as_ref()).await {
        Ok(m) => Ok((op, m)),
        Err(e) if e.stops_manager() => Err(e),
        Err(e) => {
            let end = Event::OpFailed {
                error: e.to_string(),
            };
            if let Err(rb) = inner.roll_back_add(op, end).await {
                tracing::warn!(op, error = %rb, "rolling back a failed add left a teardown due");
            }
            Err(e)
        }
    }
}

async fn add_steps(
    inner: &Arc<Inner>,
    op: OpId,
    req: &DiskRequest,
    disk: &DiskSpec,
    mount: Option<&MountSpec>,
) -> Result<Mount> {
    let deadline = tokio::time::Instant::now() + inner.opts.busy_disk_wait;
    let (slot, new) = loop {
        let taken = inner.record_with(op, |st| match st.find_attachment(disk) {
            Some(slot) => Ok((Event::AttachRefTaken { slot }, (slot, false))),
            None => {
                // The VM would refuse a second attachment of the image while the previous one
                // is torn down: wait for it (below) rather than ask.
                if let Some(slot) = st.teardown_holding(disk) {
                    return Err(Error::DiskBusy {
                        path: disk.path.clone(),
                        slot,
                    });
                }
                let slot = st.free_slot().ok_or(Error::NoAvailableLocation)?;
                let ev = Event::AttachReserved {
                    slot,
                    attach: st.next_attach,
                    disk: disk.clone(),
                };
                Ok((ev, (slot, true)))
            }
        });
        match taken {
            Ok((taken, _)) => break taken,
            Err(Error::DiskBusy { path, slot }) => {
                wait_teardown(inner, path, slot, deadline).await?;
            }
            Err(e) => return Err(e),
        }
    };
    // A shared attachment: its attach is another add's; a mount on it is decided once it is there.
    if !new {
        wait_attached(inner, slot).await?;
    }
    let mut mount_plan = None;
    // A mount that cannot be planned (its requested path is taken): hcsshim meets that only
    // after attaching, so a new attachment's attach still runs first and its failure is the
    // error the caller gets (the rollback then detaches it).
    let mut unplannable = None;
    if let Some(spec) = mount {
        match plan_mount(inner, op, slot, spec, req.guest_path.as_deref()) {
            Ok(p) => mount_plan = Some(p),
            Err(e) if new && !e.stops_manager() => unplannable = Some(e),
            Err(e) => return Err(e),
        }
    }

    // Write-ahead: everything this add may do to the VM (the grant, the attach at the reserved
    // slot and generation, the mount at the reserved index and path) is durable before its
    // first backend call. An add that only takes references makes no call: its one durable
    // point is its handle.
    let new_mount = mount_plan.is_some_and(|(_, n)| n);
    if new || new_mount || req.vm_id.is_some() {
        inner.crash_point(op, Site::Plan, Boundary::BeforeIntent)?;
        let planned = inner.state().last_seq;
        inner.durable_for(op, planned).await?;
        inner.crash_point(op, Site::Plan, Boundary::AfterIntent)?;
    }
    if let Some(vm) = &req.vm_id {
        grant(inner, op, vm, &req.host_path).await?;
    }
    if new {
        let attach = inner
            .state()
            .attachments
            .get(&slot)
            .map(|a| a.attach)
            .unwrap_or(0);
        let areq = AttachRequest {
            slot,
            attach,
            disk: disk.clone(),
        };
        let res = inner
            .run_step(
                op,
                Step::Attach,
                Target::Slot(slot),
                inner.host.attach(&areq),
            )
            .await?;
        res.map_err(|source| Error::Backend {
            step: Step::Attach,
            slot,
            path: Some(disk.path.clone()),
            source,
        })?;
    }
    if let Some(e) = unplannable {
        return Err(e);
    }

    let mount_id = match mount_plan {
        Some((id, new)) => Some(run_mount(inner, op, slot, id, new).await?),
        None => None,
    };

    inner.crash_point(op, Site::IssueHandle, Boundary::BeforeIntent)?;
    let (handle, seq) = inner.record_with(op, |st| {
        let handle = st.next_handle;
        let ev = Event::HandleIssued {
            handle,
            slot,
            mount: mount_id,
            owner: req.owner.clone(),
        };
        // The caller's alone until the add hands it over (see `Manager::release_owner`).
        inner.issuing(handle);
        Ok((ev, handle))
    })?;
    let issued = async {
        // The caller may act on the handle at once; it must survive a crash from then on.
        inner.durable_for(op, seq).await?;
        inner.crash_point(op, Site::IssueHandle, Boundary::AfterOutcome)?;
        let st = inner.state();
        let h = st
            .handles
            .get(&handle)
            .ok_or_else(|| Error::Internal(format!("handle {handle} vanished")))?;
        Ok(Mount::new(inner.clone(), handle, h))
    }
    .await;
    if issued.is_err() {
        inner.handed_over(handle);
    }
    issued
}

/// Waits until the teardown due on the attachment now at `slot` (holding the image at `path`)
/// is done, or that attachment is otherwise no longer due for teardown, at most until
/// `deadline`. `Error::DiskBusy` when the deadline passes, or at once when the teardown failed
/// and nobody is running it.
async fn wait_teardown(
    inner: &Inner,
    path: String,
    slot: Slot,
    deadline: tokio::time::Instant,
) -> Result<()> {
    let attach = inner.state().attachments.get(&slot).map(|a| a.attach);
    let busy = || Error::DiskBusy {
        path: path.clone(),
        slot,
    };
    let wait = inner.wait_until(|st| match st.attachments.get(&slot) {
        Some(a) if Some(a.attach) == attach && a.phase.teardown_due() => {
            inner.teardown_stalled(st, slot).then(|| Err(busy()))
        }
        _ => Some(Ok(())),
    });
    match tokio::time::timeout_at(deadline, wait).await {
        Ok(r) => r?,
        Err(_) => Err(busy()),
    }
}

/// Waits for the attach another operation is running on a shared attachment.
async fn wait_attached(inner: &Inner, slot: Slot) -> Result<()> {
    inner
        .wait_until(|st| match st.attachments.get(&slot) {
            Some(a) if a.phase == AttachPhase::Attached => Some(Ok(())),
            Some(a) if matches!(a.phase, AttachPhase::Reserved | AttachPhase::Attaching) => None,
            Some(a) => Some(Err(inner.shared_failure(
                Step::Attach,
                Target::Slot(slot),
                slot,
                Some(a.disk.path.clone()),
                a.last_error.as_deref(),
                &a.phase,
            ))),
            None => Some(Err(Error::Internal(format!(
                "attachment at {slot} vanished"
            )))),
        })
        .await?
}

/// Takes a reference on a matching mount, or reserves a new one (journaled, not yet durable).
/// Returns the mount and whether it is new.
fn plan_mount(
    inner: &Arc<Inner>,
    op: OpId,
    slot: Slot,
    spec: &MountSpec,
    requested: Option<&str>,
) -> Result<(MountId, bool)> {
    let (taken, _) = inner.record_with(op, |st| {
        if let Some(id) = st.find_mount(slot, spec) {
            // hcsshim: a requested path is ignored when a matching mount exists.
            return Ok((Event::MountRefTaken { mount: id }, (id, false)));
        }
        let (index, path) = match requested {
            Some(p) if st.mount_at_path(p).is_some() => {
                return Err(Error::GuestPathConflict {
                    path: p.to_string(),
                })
            }
            Some(p) => (Some(st.lowest_free_index()), p.to_string()),
            None => {
                let (i, p) = st.next_mount_path().ok_or_else(|| {
                    Error::InvalidConfig("the mount format yields no free path".into())
                })?;
                (Some(i), p)
            }
        };
        let id = st.next_mount;
        let ev = Event::MountReserved {
            mount: id,
            slot,
            index,
            path,
            spec: spec.clone(),
        };
        Ok((ev, (id, true)))
    })?;
    Ok(taken)
}

/// Performs the mount `plan_mount` reserved (`new`), or waits for the one it shares.
async fn run_mount(
    inner: &Arc<Inner>,
    op: OpId,
    slot: Slot,
    id: MountId,
    new: bool,
) -> Result<MountId> {
    if new {
        let mreq = {
            let st = inner.state();
            let m = st
                .mounts
                .get(&id)
                .ok_or_else(|| Error::Internal(format!("mount {id} vanished")))?;
            MountRequest {
                slot,
                attach: m.attach,
                mount: id,
                path: m.path.clone(),
                spec: m.spec.clone(),
            }
        };
        let res = inner
            .run_step(op, Step::Mount, Target::Mount(id), inner.guest.mount(&mreq))
            .await?;
        res.map_err(|source| Error::Backend {
            step: Step::Mount,
            slot,
            path: Some(mreq.path.clone()),
            source,
        })?;
    } else {
        inner
            .wait_until(|st| match st.mounts.get(&id) {
                Some(m) if m.phase == MountPhase::Mounted => Some(Ok(())),
                Some(m) if matches!(m.phase, MountPhase::Reserved | MountPhase::Mounting) => None,
                Some(m) => Some(Err(inner.shared_failure(
                    Step::Mount,
                    Target::Mount(id),
                    slot,
                    Some(m.path.clone()),
                    m.last_error.as_deref(),
                    &m.phase,
                ))),
                None => Some(Err(Error::Internal(format!("mount {id} vanished")))),
            })
            .await??;
    }
    Ok(id)
}
