//! Fault injection for the simulated VM: which call fails, hangs, or succeeds on the VM while
//! reporting failure to the caller.

use crate::backend::BackendError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The kind of a backend call, for counting calls and aiming faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SimOp {
    /// `HostBackend::grant_vm_access`.
    Grant,
    /// `HostBackend::attach`.
    Attach,
    /// `HostBackend::detach`.
    Detach,
    /// `GuestBackend::mount`.
    Mount,
    /// `GuestBackend::unmount`.
    Unmount,
    /// `GuestBackend::unplug`.
    Unplug,
    /// `HostBackend::inspect` or `GuestBackend::inspect`.
    Inspect,
}

impl SimOp {
    /// Every kind, in declaration order.
    pub const ALL: [SimOp; 7] = [
        SimOp::Grant,
        SimOp::Attach,
        SimOp::Detach,
        SimOp::Mount,
        SimOp::Unmount,
        SimOp::Unplug,
        SimOp::Inspect,
    ];

    /// Whether a call of this kind can change the VM's state.
    pub fn mutates(self) -> bool {
        matches!(
            self,
            SimOp::Attach | SimOp::Detach | SimOp::Mount | SimOp::Unmount | SimOp::Unplug
        )
    }
}

impl fmt::Display for SimOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// When a fault rule fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// On the `n`th call (1-based) of the rule's kind counted since the plan was installed.
    Nth(u64),
    /// On every call of the rule's kind.
    Always,
    /// On each call with probability `p` (0.0..=1.0), drawn from the plan's seeded generator.
    Probability(f64),
}

/// What a fired fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Return this error; the VM's state is untouched.
    Fail(BackendError),
    /// Never complete (the future stays pending until dropped); the VM's state is untouched.
    Hang,
    /// Apply the call's effect on the VM, then return this error (a timeout after the VM did it).
    ApplyThenFail(BackendError),
    /// Apply the call's effect on the VM, then never complete (the reply is lost).
    ApplyThenHang,
}

/// One rule of a [`FaultPlan`].
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// The kind of call the rule aims at.
    pub op: SimOp,
    /// When it fires.
    pub trigger: Trigger,
    /// What it does.
    pub action: FaultAction,
}

/// A set of fault rules with its own per-kind call counters and a seeded generator. The first
/// rule that fires for a call decides its fault; a call no rule fires for runs normally.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    rules: Vec<FaultRule>,
    counts: BTreeMap<SimOp, u64>,
    rng: XorShift,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan::new()
    }
}

impl FaultPlan {
    /// An empty plan (no faults) with a fixed seed.
    pub fn new() -> Self {
        FaultPlan::seeded(0x9E37_79B9_7F4A_7C15)
    }

    /// An empty plan whose probabilistic rules draw from a generator seeded with `seed`.
    pub fn seeded(seed: u64) -> Self {
        FaultPlan {
            rules: Vec::new(),
            counts: BTreeMap::new(),
            rng: XorShift::new(seed),
        }
    }

    /// Adds a rule.
    pub fn rule(mut self, op: SimOp, trigger: Trigger, action: FaultAction) -> Self {
        self.push(FaultRule {
            op,
            trigger,
            action,
        });
        self
    }

    /// Adds a rule in place.
    pub fn push(&mut self, rule: FaultRule) {
        self.rules.push(rule);
    }

    /// Removes every rule (counters and generator keep running).
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[FaultRule] {
        &self.rules
    }

    /// Fails the `n`th (1-based) call of `op` with `BackendError::Failed(msg)`.
    pub fn fail_nth(self, op: SimOp, n: u64, msg: impl Into<String>) -> Self {
        self.rule(
            op,
            Trigger::Nth(n),
            FaultAction::Fail(BackendError::Failed(msg.into())),
        )
    }

    /// Fails every call of `op` with `error`.
    pub fn fail_always(self, op: SimOp, error: BackendError) -> Self {
        self.rule(op, Trigger::Always, FaultAction::Fail(error))
    }

    /// Fails each call of `op` with probability `p` with `BackendError::Failed(msg)`.
    pub fn fail_with_probability(self, op: SimOp, p: f64, msg: impl Into<String>) -> Self {
        self.rule(
            op,
            Trigger::Probability(p),
            FaultAction::Fail(BackendError::Failed(msg.into())),
        )
    }

    /// Makes every call of `op` hang until cancelled.
    pub fn hang(self, op: SimOp) -> Self {
        self.rule(op, Trigger::Always, FaultAction::Hang)
    }

    /// Makes the `n`th call of `op` hang until cancelled.
    pub fn hang_nth(self, op: SimOp, n: u64) -> Self {
        self.rule(op, Trigger::Nth(n), FaultAction::Hang)
    }

    /// Makes the `n`th call of `op` take effect on the VM and then report
    /// `BackendError::Timeout` after `ms`.
    pub fn succeed_but_fail_nth(self, op: SimOp, n: u64, ms: u64) -> Self {
        self.rule(
            op,
            Trigger::Nth(n),
            FaultAction::ApplyThenFail(BackendError::Timeout {
                call: format!("simulated {op:?}"),
                ms,
            }),
        )
    }

    /// Makes the `n`th call of `op` take effect on the VM and then hang until cancelled.
    pub fn succeed_but_hang_nth(self, op: SimOp, n: u64) -> Self {
        self.rule(op, Trigger::Nth(n), FaultAction::ApplyThenHang)
    }

    /// Counts one call of `op` and returns the fault it gets, if any.
    pub fn decide(&mut self, op: SimOp) -> Option<FaultAction> {
        let count = self.counts.entry(op).or_insert(0);
        *count += 1;
        let n = *count;
        let mut fired = None;
        for rule in self.rules.iter().filter(|r| r.op == op) {
            let fires = match rule.trigger {
                Trigger::Nth(k) => k == n,
                Trigger::Always => true,
                // Draw even when an earlier rule fired, so the sequence of draws depends only
                // on the sequence of calls.
                Trigger::Probability(p) => self.rng.next_f64() < p,
            };
            if fires && fired.is_none() {
                fired = Some(rule.action.clone());
            }
        }
        fired
    }

    /// Calls of `op` counted since the plan was installed.
    pub fn count(&self, op: SimOp) -> u64 {
        self.counts.get(&op).copied().unwrap_or(0)
    }
}

/// A tiny xorshift64* generator: deterministic, seedable, good enough for fault dice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator seeded with `seed` (0 is replaced by a fixed non-zero constant).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x2545_F491_4F6C_DD1D
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniform draw in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_fires_once_on_its_kind_only() {
        let mut p = FaultPlan::new().fail_nth(SimOp::Attach, 2, "boom");
        assert_eq!(p.decide(SimOp::Attach), None);
        assert_eq!(p.decide(SimOp::Detach), None);
        assert_eq!(
            p.decide(SimOp::Attach),
            Some(FaultAction::Fail(BackendError::Failed("boom".into())))
        );
        assert_eq!(p.decide(SimOp::Attach), None);
        assert_eq!(p.count(SimOp::Attach), 3);
        assert_eq!(p.count(SimOp::Detach), 1);
    }

    #[test]
    fn first_matching_rule_wins() {
        let mut p = FaultPlan::new()
            .succeed_but_fail_nth(SimOp::Mount, 1, 5)
            .hang(SimOp::Mount);
        assert_eq!(
            p.decide(SimOp::Mount),
            Some(FaultAction::ApplyThenFail(BackendError::Timeout {
                call: "simulated Mount".into(),
                ms: 5
            }))
        );
        assert_eq!(p.decide(SimOp::Mount), Some(FaultAction::Hang));
        p.clear();
        assert_eq!(p.decide(SimOp::Mount), None);
    }

    #[test]
    fn probability_is_seeded_and_roughly_right() {
        let run = |seed| {
            let mut p = FaultPlan::seeded(seed).fail_with_probability(SimOp::Unplug, 0.25, "x");
            (0..4000)
                .map(|_| p.decide(SimOp::Unplug).is_some())
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        let hits = a.iter().filter(|h| **h).count();
        assert!((800..1200).contains(&hits), "{hits}");
        let mut never = FaultPlan::new().fail_with_probability(SimOp::Unplug, 0.0, "x");
        let mut always = FaultPlan::new().fail_with_probability(SimOp::Unplug, 1.0, "x");
        for _ in 0..100 {
            assert!(never.decide(SimOp::Unplug).is_none());
            assert!(always.decide(SimOp::Unplug).is_some());
        }
    }

    #[test]
    fn xorshift_zero_seed_is_not_stuck() {
        let mut r = XorShift::new(0);
        assert_ne!(r.next_u64(), r.next_u64());
        let f = r.next_f64();
        assert!((0.0..1.0).contains(&f));
    }
}
