//! Structure-aware: the input is decoded (with `arbitrary`) into a sequence of manager operations
//! — adds, releases, injected backend failures, cancelled callers, crashes at chosen crash points
//! with recovery, restarts — run against a real `Manager` on a `SimVm` with the same checks as
//! the property test (`test-support/src/model.rs`): after every operation the live handles, the state, a
//! replay of the journal, the invariants, the VM and the reference model agree; at the end
//! everything is released and the VM and state are empty.

use crate::model::{run_ops_blocking, Op};
use arbitrary::{Arbitrary, Unstructured};

/// Longest sequence run per input (each operation costs journal flushes; restarts reopen sled).
pub const MAX_OPS: usize = 24;

/// Decodes the operations an input stands for (what the seed generator and reproductions use).
pub fn ops(data: &[u8]) -> Vec<Op> {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS && !u.is_empty() {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// The target: runs the operations `data` decodes to ([`ops`]) on a fresh harness, on a
/// current-thread runtime; panics at the first disagreement.
pub fn run(data: &[u8]) {
    run_ops_blocking(&ops(data));
}
