//! The QEMU backend's typed error, and how it maps onto the fixed [`BackendError`].

use crate::backend::BackendError;
use std::time::Duration;

/// An error from the QEMU backend (QMP, the guest agent, or our own checks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QemuError {
    /// Nothing listens on the socket: QEMU (or its agent chardev) is gone.
    #[error("QEMU is gone: cannot connect to {path}: {reason}")]
    Gone {
        /// The socket path.
        path: String,
        /// What connect(2) said.
        reason: String,
    },
    /// The connection broke while a call was in flight; the call's effect is unknown.
    #[error("connection to {path} lost: {reason}")]
    Disconnected {
        /// The socket path.
        path: String,
        /// What broke.
        reason: String,
    },
    /// Connected but got no greeting or sync reply in time: QEMU is stopped or hung (a
    /// SIGSTOPped QEMU still accepts connections), the guest agent is frozen or not started
    /// yet, or another client holds the monitor (QMP serves one client per monitor, so a second
    /// client waits here).
    #[error(
        "no handshake from {path} within {ms} ms (not answering: QEMU stopped or hung, agent \
         frozen or not up, or another client connected)"
    )]
    NoHandshake {
        /// The socket path.
        path: String,
        /// The timeout.
        ms: u64,
    },
    /// A call took longer than its timeout; its effect is unknown.
    #[error("{command} timed out after {ms} ms")]
    Timeout {
        /// The command.
        command: String,
        /// The timeout.
        ms: u64,
    },
    /// The peer sent something that is not the protocol we expect.
    #[error("protocol error from {path}: {detail}")]
    Protocol {
        /// The socket path.
        path: String,
        /// What was wrong.
        detail: String,
    },
    /// The command ran and failed.
    #[error("{command} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QMP/QGA error class (e.g. `GenericError`, `DeviceNotFound`).
        class: String,
        /// Human-readable description.
        desc: String,
    },
    /// A LUN the guest cannot address (Linux mis-handles hot-plugged LUNs >= 256).
    #[error("LUN {lun} is out of range: the QEMU backend supports LUNs 0..{max}")]
    LunOutOfRange {
        /// The LUN asked for.
        lun: u32,
        /// The exclusive bound.
        max: u32,
    },
    /// A controller index our block node names cannot encode.
    #[error(
        "controller {controller} is out of range: the QEMU backend supports controllers 0..{max}"
    )]
    ControllerOutOfRange {
        /// The controller asked for.
        controller: u32,
        /// The exclusive bound.
        max: u32,
    },
    /// The request cannot be served by this backend (e.g. an EVD, or encryption without dm-crypt).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The VM holds something that contradicts the request (another disk at the slot, our names
    /// bound to another file, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The VM lacks what the configuration names (controllers, LUN range).
    #[error("{0}")]
    Mismatch(String),
    /// A host-side I/O error (reading the disk image header, ...).
    #[error("{0}")]
    Io(String),
    /// A `guest-exec` result that does not carry our call's nonce: it belongs to another
    /// process that had the same pid (the agent keeps uncollected results by pid). Never taken
    /// as an answer.
    #[error("guest-exec pid {pid} answered for another process: {detail}")]
    ExecMismatch {
        /// The pid our call was given.
        pid: i64,
        /// What was seen.
        detail: String,
    },
    /// A command run in the guest failed.
    #[error("guest command failed (exit {code}): {stderr}")]
    GuestCommand {
        /// Exit code (or -1 when killed by a signal).
        code: i64,
        /// Its stderr (trimmed).
        stderr: String,
    },
}

impl QemuError {
    /// A timeout error for `command` after `timeout`.
    pub(crate) fn timeout(command: &str, timeout: Duration) -> Self {
        QemuError::Timeout {
            command: command.to_string(),
            ms: millis(timeout),
        }
    }

    /// Whether this is a QMP/QGA command error of `class`.
    pub fn is_class(&self, class: &str) -> bool {
        matches!(self, QemuError::Command { class: c, .. } if c == class)
    }

    /// Whether this is a command error whose description contains `needle`.
    pub fn desc_contains(&self, needle: &str) -> bool {
        matches!(self, QemuError::Command { desc, .. } if desc.contains(needle))
    }

    /// Whether the connection (not the command) failed, so a retry on a fresh connection is
    /// meaningful for idempotent work.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            QemuError::Disconnected { .. } | QemuError::Gone { .. }
        )
    }
}

/// Saturating milliseconds of a duration.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<QemuError> for BackendError {
    fn from(e: QemuError) -> Self {
        match e {
            // ExecMismatch: our own command's result was never seen, so whether it took effect
            // is unknown, as for a lost connection (the manager then asks `inspect`, or assumes
            // it did and tears down idempotently).
            QemuError::Gone { .. }
            | QemuError::Disconnected { .. }
            | QemuError::NoHandshake { .. }
            | QemuError::ExecMismatch { .. } => BackendError::Unavailable(e.to_string()),
            QemuError::Timeout { command, ms } => BackendError::Timeout { call: command, ms },
            QemuError::LunOutOfRange { .. }
            | QemuError::ControllerOutOfRange { .. }
            | QemuError::Unsupported(_) => BackendError::Unsupported(e.to_string()),
            QemuError::Mismatch(m) => BackendError::Mismatch(m),
            QemuError::Protocol { .. }
            | QemuError::Command { .. }
            | QemuError::Conflict(_)
            | QemuError::Io(_)
            | QemuError::GuestCommand { .. } => BackendError::Failed(e.to_string()),
        }
    }
}
