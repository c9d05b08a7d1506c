//! `lunledger-model`: the domain vocabulary every other part of lunledger speaks: ids, slots,
//! disk and mount specifications, the manager's configuration, and the events the manager
//! journals.
//!
//! It depends on serde alone and does no I/O, so the pure recovery model (`lunledger-recovery`)
//! can build on it without linking storage or runtime crates. The journal stores and verifies
//! records of these events and knows nothing else about them.
#![deny(missing_docs, missing_debug_implementations)]

pub mod entry;
pub mod event;
pub mod spec;

pub use entry::Entry;
pub use event::{Drift, Event, OpKind, Resolution, Step, Target};
pub use spec::{
    AttachId, DiskKind, DiskSpec, GuestOs, HandleId, ManagerConfig, MountId, MountSpec, OpId, Slot,
};
