//! Injectable crash points: a test hook consulted at every step boundary. When it says "crash",
//! the manager stops exactly there, as if the process died: no further record is journaled and no
//! further backend call is made.

use lunledger_model::{OpId, Step, Target};
use std::fmt;

/// Where, relative to a step, the manager is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Boundary {
    /// Before the step's intent is journaled.
    BeforeIntent,
    /// The intent is journaled (durable at the operation's plan, see [`Site::Plan`]); the
    /// backend has not been called.
    AfterIntent,
    /// The backend call returned; its outcome is not journaled.
    AfterCall,
    /// The outcome is journaled.
    AfterOutcome,
}

/// What the manager is doing at a crash point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Site {
    /// A backend step.
    Step(Step, Target),
    /// Issuing a handle to the caller.
    IssueHandle,
    /// Making an operation's plan durable before its first backend call: an add's reservations
    /// (slot, attach id, mount index and path) and access grant, a release's dropped references
    /// (and so the teardowns that became due). `BeforeIntent`: not yet waited for;
    /// `AfterIntent`: durable.
    Plan,
    /// An operation was just started (its `OpStarted` record is appended, nothing else yet).
    OpStarted,
    /// An add's access grant (`HostBackend::grant_vm_access`). Its intent is the add's durable
    /// plan (its `OpStarted` record names the VM and the path); its outcome, `AccessGranted`.
    Grant,
    /// Recovery's repair of drift, a step on something the journal never held: the unplug and
    /// detach of a stray disk at a slot, or the unmount of a stray mount. Its intent is the
    /// durable `DriftFound` record naming it.
    Repair(Step),
}

/// One crash point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CrashPoint {
    /// The operation.
    pub op: OpId,
    /// What it is doing.
    pub site: Site,
    /// Where relative to it.
    pub boundary: Boundary,
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.site {
            Site::Step(step, target) => {
                write!(f, "op {} {step} {target:?} {:?}", self.op, self.boundary)
            }
            Site::IssueHandle => write!(f, "op {} issue-handle {:?}", self.op, self.boundary),
            Site::Plan => write!(f, "op {} plan {:?}", self.op, self.boundary),
            Site::OpStarted => write!(f, "op {} started", self.op),
            Site::Grant => write!(f, "op {} grant {:?}", self.op, self.boundary),
            Site::Repair(step) => write!(f, "op {} repair {step} {:?}", self.op, self.boundary),
        }
    }
}

/// Decides whether to crash at a point. Tests implement it; production passes none.
pub trait CrashHook: Send + Sync {
    /// Returns `true` to crash at `point`.
    fn crash_at(&self, point: &CrashPoint) -> bool;
}
