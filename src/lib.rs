//! lunledger: a crash-safe, journaled SCSI disk manager for VM shims.
//!
//! A [`Manager`] attaches disks at (controller, LUN) slots, mounts them in the guest, shares both
//! among callers with reference counts, and tears them down on the last release. Every step is
//! journaled before it runs, so after a crash [`Manager::open`] rebuilds the state and finishes or
//! rolls back what was half done.
#![deny(missing_docs, missing_debug_implementations)]

pub mod audit;
pub mod backend;
#[cfg(feature = "cli")]
pub mod cli;
// Crash points are consulted at every step; injecting crashes is a test seam, public with the
// `testing` feature only.
#[cfg(feature = "testing")]
pub mod crash;
#[cfg(not(feature = "testing"))]
mod crash;
#[cfg(feature = "cli")]
pub mod demo;
mod error;
pub mod guest_os;
mod manager;
mod mount;
mod request;
pub mod timeline;

pub use error::{Error, Result};
pub use lunledger_journal as journal;
pub use lunledger_model as model;
pub use lunledger_recovery as recovery;
pub use manager::{
    load_state, load_state_with, observe, validate_config, AttachmentInfo, Inspected, LoadedState,
    Manager, ManagerOptions, MountInfo, RecoveryReport, SettledStep,
};
pub use mount::Mount;
pub use request::{parse_evd_path, DiskRequest, MountConfig};
