//! `lunledger-recovery`: the pure model of the manager: `State` as the fold of journal events,
//! its invariants, point-in-time state, and the recovery planner. No I/O.
#![deny(missing_docs)]

pub mod state;

pub use state::{ApplyError, AttachPhase, Attachment, Handle, Mount, MountPhase, Op, State};
mod alloc;
mod invariants;
pub mod plan;
pub mod settle;

pub use plan::{plan, Action, Observation, RecoveryPolicy, ReleaseEnd, SeenAttachment, SeenGuest};
pub use settle::{settle, Settled};
