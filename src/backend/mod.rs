//! Backend traits: the host side (attach and detach disks at slots) and the guest side (mount,
//! unmount, unplug), each with an `inspect` call that reports what the VM really holds, so
//! recovery can settle steps whose outcome the journal lost.
//!
//! Every method must be idempotent in the direction of the goal: detaching a slot that holds
//! nothing, unmounting a path that is not mounted and unplugging a device that is gone all succeed;
//! attaching or mounting what is already there with the same identity succeeds.

pub mod gone;
pub mod qemu;

use async_trait::async_trait;
use lunledger_model::{AttachId, DiskSpec, ManagerConfig, MountId, MountSpec, Slot};
use serde::{Deserialize, Serialize};

pub mod sim;

/// An error from a backend call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The VM refused or failed the call.
    #[error("{0}")]
    Failed(String),
    /// The VM (or its agent) cannot be reached.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The call took longer than its timeout; its effect is unknown. `call` says which
    /// (e.g. `QMP blockdev-add`, `guest agent: mount script (guest-exec)`), so a hang can be told
    /// apart from a slow command and the monitor from the agent.
    #[error("{call} timed out after {ms} ms (effect unknown)")]
    Timeout {
        /// What did not answer in time.
        call: String,
        /// The timeout.
        ms: u64,
    },
    /// The backend cannot do what was asked (e.g. encryption on a guest without dm-crypt).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The VM does not have what the manager's configuration names (e.g. fewer SCSI
    /// controllers than `ManagerConfig::controllers`). Found by `check_config` at open.
    #[error("the VM does not match the configuration: {0}")]
    Mismatch(String),
}

/// Attach `disk` at `slot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    /// Where.
    pub slot: Slot,
    /// The attachment's generation id: backends derive stable names from it (node names, serials)
    /// so an interrupted attach can be found and retried.
    pub attach: AttachId,
    /// What.
    pub disk: DiskSpec,
}

/// Detach whatever our attachment `attach` left at `slot` (including a half-done attach).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachRequest {
    /// Where.
    pub slot: Slot,
    /// The attachment's generation id. 0 (never issued: ids start at 1) means whatever disk is
    /// at the slot: recovery uses it to detach stray disks when its policy says so.
    pub attach: AttachId,
}

/// Mount the disk at `slot` in the guest at `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRequest {
    /// The attachment's slot.
    pub slot: Slot,
    /// The attachment's generation id.
    pub attach: AttachId,
    /// The mount's id.
    pub mount: MountId,
    /// Guest path.
    pub path: String,
    /// How.
    pub spec: MountSpec,
}

/// One attachment as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAttachment {
    /// Where.
    pub slot: Slot,
    /// Our generation id when the backend can tell (from its names or serial), else `None`
    /// (a disk someone else attached).
    pub attach: Option<AttachId>,
    /// Host path of the backing file or device, when known.
    pub path: Option<String>,
    /// Read-only, when known.
    pub read_only: Option<bool>,
    /// `false` for a half-done attach (e.g. a QEMU block node with no device).
    pub complete: bool,
}

/// What the host holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    /// Every attachment, complete or not.
    pub attachments: Vec<HostAttachment>,
}

/// One guest mount (or block-device link).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMount {
    /// Guest path.
    pub path: String,
    /// The SCSI slot of the device behind it, when known.
    pub slot: Option<Slot>,
    /// A block-device link rather than a filesystem mount.
    pub block_dev: bool,
}

/// What the guest holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestView {
    /// SCSI devices the guest sees (not unplugged).
    pub devices: Vec<Slot>,
    /// Mounts at guest paths.
    pub mounts: Vec<GuestMount>,
}

/// The host side of a VM: hot-plugs disks onto SCSI slots.
#[async_trait]
pub trait HostBackend: Send + Sync {
    /// Grants the VM access to a host path before an attach (hcsshim's `GrantVmAccess`).
    /// Backends without access control succeed.
    async fn grant_vm_access(&self, _vm_id: &str, _path: &str) -> Result<(), BackendError> {
        Ok(())
    }
    /// Attaches a disk. Attaching the same `attach` id at the same slot again succeeds.
    async fn attach(&self, req: &AttachRequest) -> Result<(), BackendError>;
    /// Detaches; a slot holding nothing of ours is success.
    async fn detach(&self, req: &DetachRequest) -> Result<(), BackendError>;
    /// Reports every attachment.
    async fn inspect(&self) -> Result<HostView, BackendError>;
    /// Checks that the VM can serve every slot `config` names (its controllers exist, its
    /// LUNs are addressable). `Manager::open` calls it before touching the journal and refuses
    /// to open on [`BackendError::Mismatch`]; any other error (VM unreachable) is only logged,
    /// since recovery must still run. Backends with nothing to check succeed.
    async fn check_config(&self, _config: &ManagerConfig) -> Result<(), BackendError> {
        Ok(())
    }
}

/// The guest side of a VM: mounts attached disks and ejects devices before the host detaches.
#[async_trait]
pub trait GuestBackend: Send + Sync {
    /// Mounts (or links, for block-device mounts). Mounting the same device at the same path
    /// again succeeds.
    async fn mount(&self, req: &MountRequest) -> Result<(), BackendError>;
    /// Unmounts; a path that is not mounted is success.
    async fn unmount(&self, req: &MountRequest) -> Result<(), BackendError>;
    /// Ejects the SCSI device at `slot` in the guest; a device that is gone is success.
    async fn unplug(&self, slot: Slot) -> Result<(), BackendError>;
    /// Reports devices and mounts.
    async fn inspect(&self) -> Result<GuestView, BackendError>;
    /// As [`HostBackend::check_config`], for the guest side (e.g. it can find every
    /// controller the configuration names).
    async fn check_config(&self, _config: &ManagerConfig) -> Result<(), BackendError> {
        Ok(())
    }
}
