//! A real hypervisor backend: QEMU driven over QMP (host side: hot-plug `scsi-hd` disks onto
//! `virtio-scsi-pci` controllers) and qemu-guest-agent (guest side: find the disk by
//! host:channel:target:LUN and its serial, mount, unmount, eject).
//!
//! Naming, limits and why: see [`names`]. The VM itself (for tests and the demo) is
//! `lunledger::demo::vm::QemuVm` (feature `cli`);
//! what a VM started by anything else must provide (controller ids `scsi0..`, sockets, guest
//! tools) is in `docs/qemu.md`. `Manager::open` checks the controllers the configuration names
//! exist (`Error::VmMismatch` otherwise).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use lunledger::backend::qemu::{QemuGuest, QemuHost};
//! use lunledger::backend::{GuestBackend, HostBackend};
//!
//! // One QMP client per monitor: the backend keeps its connection for its lifetime.
//! let host = QemuHost::connect("/run/vm/qmp.sock").await?;
//! // The guest side maps controllers to guest SCSI hosts through their PCI addresses.
//! let guest = QemuGuest::connect("/run/vm/qga.sock", host.controller_map().await?).await?;
//! let (held, seen) = (host.inspect().await?, guest.inspect().await?);
//! # let _ = (held, seen);
//! # Ok(())
//! # }
//! ```

mod base64;
pub mod controllers;
pub mod error;
pub mod guest;
mod guest_scan;
mod guest_scripts;
pub mod hooks;
pub mod host;
pub mod image;
mod lines;
pub mod names;
pub mod qga;
pub mod qmp;

pub use controllers::{ControllerMap, PciAddress};
pub use error::QemuError;
pub use guest::{QemuGuest, QemuGuestOptions};
pub use hooks::SequenceHook;
pub use host::{QemuHost, QemuHostOptions};
pub use qga::{ExecOutput, QgaClient};
pub use qmp::QmpClient;
