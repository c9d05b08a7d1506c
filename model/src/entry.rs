//! What a fold needs to know of one stored entry: its place in the sequence, its operation and
//! its event. The journal's record implements it; the fold never sees the storage envelope
//! (schema, time, chain hash).

use crate::event::Event;
use crate::spec::OpId;

/// One entry of an event log, as the fold of the manager's state reads it.
pub trait Entry {
    /// Sequence number: gap-free and monotonic over the log's whole life, starting at 1.
    fn seq(&self) -> u64;
    /// The operation the event belongs to.
    fn op(&self) -> OpId;
    /// What happened.
    fn event(&self) -> &Event;
}
