//! `lunledger-journal`: the event vocabulary, record framing and schema versions, the sled store
//! with durable group-committed appends, checkpoints and retention, and integrity verification.
//!
//! This crate knows nothing of managers: it stores and returns events.
#![deny(missing_docs)]

pub mod event;
pub mod model;
pub mod record;

pub use event::{Drift, Event, OpKind, Resolution, Step, Target};
pub use model::{
    AttachId, DiskKind, DiskSpec, Durability, HandleId, ManagerConfig, MountId, MountSpec, OpId,
    Slot,
};
pub use record::{ChainHash, Record, HASH_LEN, SCHEMA_VERSION};
