//! A real hypervisor backend: QEMU driven over QMP (host side: hot-plug `scsi-hd` disks onto
//! `virtio-scsi-pci` controllers) and qemu-guest-agent (guest side: find the disk by
//! host:channel:target:LUN and its serial, mount, unmount, eject).
//!
//! Naming, limits and why: see [`names`]. The VM itself (for tests) is [`crate::vm::QemuVm`].

mod base64;
pub mod controllers;
pub mod error;
pub mod guest;
mod guest_scan;
mod guest_scripts;
pub mod host;
pub mod image;
mod lines;
pub mod names;
pub mod qga;
pub mod qmp;

pub use controllers::{ControllerMap, PciAddress};
pub use error::QemuError;
pub use guest::{QemuGuest, QemuGuestOptions};
pub use host::{QemuHost, QemuHostOptions};
pub use qga::{ExecOutput, QgaClient};
pub use qmp::QmpClient;
