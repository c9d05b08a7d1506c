//! Choosing the VM a demo drives. One small factory, so adding a backend is one match arm: it
//! returns the two backend halves for the manager plus a probe that can tell whether the VM is
//! empty at the end.

use crate::args::BackendArg;
use crate::fail::CliError;
use lunledger::backend::sim::SimVm;
use lunledger::backend::{GuestBackend, HostBackend};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A VM opened for the manager.
pub struct Vm {
    /// The host half.
    pub host: Arc<dyn HostBackend>,
    /// The guest half.
    pub guest: Arc<dyn GuestBackend>,
    /// Counts what the VM still holds: (attachments, mounts).
    pub holds: Box<dyn Fn() -> (usize, usize) + Send + Sync>,
}

/// Fails when `kind` is not available in this build (before anything is started).
pub fn check(kind: BackendArg) -> Result<(), CliError> {
    match kind {
        BackendArg::Sim => Ok(()),
        BackendArg::Qemu => Err(unavailable()),
    }
}

fn unavailable() -> CliError {
    CliError::Io(
        "qemu backend not available in this build (the QEMU backend lives on branch qemu; the demo needs src/backend/qemu and QemuVm merged)".into(),
    )
}

/// Opens the VM kind `kind`, kept at `state` (for the simulated VM, its state file), with
/// `latency` per backend call.
pub fn open(kind: BackendArg, state: &Path, latency: Duration) -> Result<Vm, CliError> {
    match kind {
        BackendArg::Sim => {
            let vm = SimVm::persistent(state).map_err(|e| CliError::Io(e.to_string()))?;
            vm.set_latency(latency);
            let probe = vm.clone();
            Ok(Vm {
                host: vm.host_backend(),
                guest: vm.guest_backend(),
                holds: Box::new(move || {
                    let s = probe.snapshot();
                    (s.attachments.len(), s.mounts.len())
                }),
            })
        }
        BackendArg::Qemu => Err(unavailable()),
    }
}
