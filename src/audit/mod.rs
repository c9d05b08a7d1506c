//! Auditing a journal with the fold, which the journal does not know: the history to fold (from
//! record 1, or from a checkpoint when older records were pruned), the audit trail (one row per
//! record with the context a person needs), and checkpoints checked against the records.
//!
//! These read a journal and never change it; `lunledger replay`, `verify` and `status` render
//! them.

mod checkpoints;
mod history;
mod trail;
mod verify;

pub use checkpoints::{
    check_checkpoints, check_newest, decode_checkpoint, state_diff, CheckpointAudit,
    CheckpointMismatch, Newest,
};
pub use history::{load as load_history, AuditError, Damage, History, Progress, Quiet};
pub use trail::{describe_drift, format_micros, Auditor, Row};
pub use verify::{open_findings, verify, Finding, Verification};
