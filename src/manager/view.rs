//! A light, read-only view of what the manager holds: each attachment and mount with its
//! reference count, slot, path and phase, without cloning the whole state (`Manager::state`).

use super::Manager;
use lunledger_model::{DiskSpec, MountId, Slot};
use lunledger_recovery::{AttachPhase, MountPhase};

/// One attachment: a disk at a slot, and who holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentInfo {
    /// Where.
    pub slot: Slot,
    /// What (the attachment key: path, read-only, kind, EVD type).
    pub disk: DiskSpec,
    /// References: live handles and operations in flight.
    pub refs: u32,
    /// Where it is in its life (`Attached`, or a teardown still due, ...).
    pub phase: AttachPhase,
}

/// One guest mount on an attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// The mount's id.
    pub mount: MountId,
    /// The attachment's slot.
    pub slot: Slot,
    /// The guest path.
    pub path: String,
    /// References: live handles and operations in flight.
    pub refs: u32,
    /// Where it is in its life.
    pub phase: MountPhase,
}

impl Manager {
    /// Every attachment with its reference count and phase, by slot.
    pub fn attachments(&self) -> Vec<AttachmentInfo> {
        let st = self.inner.state();
        st.attachments
            .iter()
            .map(|(slot, a)| AttachmentInfo {
                slot: *slot,
                disk: a.disk.clone(),
                refs: a.refs,
                phase: a.phase,
            })
            .collect()
    }

    /// Every mount with its reference count, path and phase, by mount id.
    pub fn mounts(&self) -> Vec<MountInfo> {
        let st = self.inner.state();
        st.mounts
            .iter()
            .map(|(id, m)| MountInfo {
                mount: *id,
                slot: m.slot,
                path: m.path.clone(),
                refs: m.refs,
                phase: m.phase,
            })
            .collect()
    }
}
