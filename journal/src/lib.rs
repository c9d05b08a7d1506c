//! `lunledger-journal`: the event vocabulary, record framing and schema versions, the sled store
//! with durable group-committed appends, checkpoints and retention, and integrity verification.
//!
//! This crate knows nothing of managers: it stores and returns events.
#![deny(missing_docs)]

pub mod checkpoint;
pub mod codec;
pub mod error;
pub mod event;
pub mod iter;
pub mod lock;
pub mod model;
pub mod options;
pub mod record;
pub mod recover;
pub mod stats;
pub mod store;
pub mod verify;
mod writer;

pub use checkpoint::{Checkpoint, PruneReport, Retention};
pub use codec::{decode_record, encode_record};
pub use error::JournalError;
pub use event::{Drift, Event, OpKind, Resolution, Step, Target};
pub use iter::{RecordIter, Tail};
pub use model::{
    AttachId, DiskKind, DiskSpec, Durability, HandleId, ManagerConfig, MountId, MountSpec, OpId,
    Slot,
};
pub use options::JournalOptions;
pub use record::{ChainHash, Record, HASH_LEN, SCHEMA_VERSION};
pub use recover::{OpenReport, TailDamage};
pub use stats::JournalStats;
pub use store::Journal;
pub use verify::{Problem, VerifyReport};
