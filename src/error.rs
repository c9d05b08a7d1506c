//! The manager's typed errors. Each says what went wrong and where (step, slot, path).

use crate::backend::BackendError;
use lunledger_model::{GuestOs, HandleId, Slot, Step};
use std::path::PathBuf;

/// Any error the manager returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Every slot is taken (or reserved, or held by a teardown that has not succeeded yet).
    #[error("no available location: every SCSI slot is in use")]
    NoAvailableLocation,
    /// The handle was already released.
    #[error("mount was already released")]
    AlreadyReleased,
    /// A release of this handle is running right now.
    #[error("handle {0} is being released by another call")]
    ReleaseInProgress(HandleId),
    /// The disk's previous attachment is still being torn down at `slot` (or its teardown
    /// failed and waits for a retry), and the VM cannot attach the same image again until it
    /// is gone (QEMU's image lock: a read-write attachment excludes any other). The add waited
    /// up to `ManagerOptions::busy_disk_wait` and attached nothing (its operation is
    /// journaled as failed). Retryable: once the teardown finishes (see
    /// `Manager::retry_teardowns`), the same add succeeds.
    #[error(
        "disk {path} is still being detached from slot {slot}; retry once its teardown is done"
    )]
    DiskBusy {
        /// The host path of the disk.
        path: String,
        /// The slot whose teardown holds it.
        slot: Slot,
    },
    /// No live handle has this id.
    #[error("no live handle {0}")]
    UnknownHandle(HandleId),
    /// The requested guest path is held by a different mount.
    #[error("cannot mount over an existing mountpoint: {path}")]
    GuestPathConflict {
        /// The path asked for.
        path: String,
    },
    /// A caller-supplied value is not acceptable.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An `evd://<type>/<path>` host path is malformed.
    #[error("invalid extensible virtual disk path: {0:?} (want evd://<type>/<path>)")]
    InvalidEvdPath(String),
    /// The configuration is not valid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The VM cannot serve the configuration (e.g. it has fewer SCSI controllers than
    /// `ManagerConfig::controllers` names), found by the backends' `check_config` at open,
    /// before the journal is touched.
    #[error("the VM does not match the configuration ({side} side): {what}")]
    VmMismatch {
        /// `host` or `guest`.
        side: &'static str,
        /// What is missing.
        what: String,
    },
    /// The guest OS cannot do what the add asks (a Windows guest refuses encrypted, partition,
    /// options, filesystem and ensure-filesystem mounts, as hcsshim's WCOW). Found before
    /// anything is journaled or asked of the VM.
    #[error("not supported by the {guest} guest: {what}")]
    UnsupportedByGuest {
        /// The configured guest OS.
        guest: GuestOs,
        /// What was refused.
        what: String,
    },
    /// The journal was written for a VM with another guest OS: a journal's attachments, paths
    /// and teardown steps belong to one OS, so it is never reopened as the other.
    #[error("the journal is for a {journal} guest; it cannot be opened as a {requested} guest")]
    GuestOsMismatch {
        /// The guest OS the journal's configuration names.
        journal: GuestOs,
        /// The guest OS the open asked for.
        requested: GuestOs,
    },
    /// The configuration contradicts what the journal holds.
    #[error("configuration conflicts with the journal: {0}")]
    ConfigConflict(String),
    /// A backend step failed.
    #[error("{step} at slot {slot}{}: {source}", path.as_deref().map(|p| format!(" ({p})")).unwrap_or_default())]
    Backend {
        /// The step.
        step: Step,
        /// The slot.
        slot: Slot,
        /// The host or guest path involved.
        path: Option<String>,
        /// The backend's error.
        source: BackendError,
    },
    /// Granting the VM access to the disk's file failed (`HostBackend::grant_vm_access`).
    #[error("granting {vm_id} access to {path}: {source}")]
    GrantFailed {
        /// The VM.
        vm_id: String,
        /// The host path.
        path: String,
        /// The backend's error.
        source: BackendError,
    },
    /// The journal failed.
    #[error("journal: {0}")]
    Journal(#[from] lunledger_journal::JournalError),
    /// The journal failed while operation `op` waited for its records to become durable (its
    /// storage is full or failing, for example): the manager stopped (fail-stop) and nothing
    /// whose intent was not durable reached the VM. Reopen once the fault is gone.
    #[error("operation {op} stopped: the journal failed: {source}")]
    JournalFailed {
        /// The operation that was waiting.
        op: lunledger_model::OpId,
        /// What the journal met (for a full or failing disk, a `JournalError::Storage` naming
        /// what it was doing, the file or directory, and the OS error).
        #[source]
        source: lunledger_journal::JournalError,
    },
    /// The journal directory could not be used.
    #[error("journal directory {dir}: {what}")]
    JournalDir {
        /// The directory.
        dir: PathBuf,
        /// What went wrong.
        what: String,
    },
    /// The manager stopped after a journal failure (fail-stop: its live state may be ahead of the
    /// journal). Reopen it to recover.
    #[error("manager stopped after a journal failure: {0}; reopen to recover")]
    Stopped(String),
    /// A simulated crash (test hook) stopped the manager.
    #[error("simulated crash at {0}")]
    Crashed(String),
    /// A checkpoint the journal's records do not support: its state is not the fold of the
    /// records up to it, or it names a record past the last one. Recovery would act on a state
    /// that never was, so the open is refused.
    #[error("checkpoint at seq {at_seq} is not supported by the journal's records: {what}")]
    CheckpointMismatch {
        /// The checkpoint's sequence number.
        at_seq: u64,
        /// What differs.
        what: String,
    },
    /// An event did not fit the state: a bug in lunledger, reported instead of panicking.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether this error stopped the manager (a journal failure, a fail-stop, a simulated
    /// crash): nothing more may be journaled, so it is passed up as it is, never recorded as a
    /// step's or an operation's failure and never retried. Reopen the manager to recover.
    pub fn stops_manager(&self) -> bool {
        matches!(
            self,
            Error::Crashed(_) | Error::Stopped(_) | Error::Journal(_) | Error::JournalFailed { .. }
        )
    }
}

impl Error {
    /// Whether the same call may succeed when simply retried later (nothing was changed by the
    /// failed one): a release already running, a disk whose previous attachment is still being
    /// torn down.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::ReleaseInProgress(_) | Error::DiskBusy { .. })
    }
}

/// The manager's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
