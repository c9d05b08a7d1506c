//! `lunledger-recovery`: the pure model of the manager: `State` as the fold of journal events,
//! its invariants, the checkpoint's persisted form, and the recovery planner. No I/O: it
//! depends on the model crate alone (and serde), which Cargo enforces.
#![deny(missing_docs, missing_debug_implementations)]

mod alloc;
mod change;
mod check;
mod invariants;
mod persist;
mod plan;
mod settle;
mod state;

pub use invariants::PendingTeardown;
pub use persist::{
    decode_checkpoint, encode_checkpoint, PersistError, PersistedV1, FORMAT_VERSION, MAGIC,
};
pub use plan::{
    plan, Action, Observation, PlanError, RecoveryPolicy, ReleaseEnd, SeenAttachment, SeenGuest,
};
pub use settle::{settle, Settled};
pub use state::{
    ApplyError, AttachPhase, Attachment, Counters, Handle, Mount, MountPhase, Op, State,
};
