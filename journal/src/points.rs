//! Durable points per operation kind: how often operations of each kind waited for durability
//! (the protocol's cost, which `Journal::stats` reports and tests bound).
//!
//! The journal learns an operation's kind from its `OpStarted` record as it is appended, so the
//! caller only names the operation when it waits ([`crate::Journal::wait_durable_for`]).

use lunledger_model::{Event, OpId, OpKind};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Operations whose kind is remembered: the newest this many. An operation older than that (or
/// started before this open) that still waits is counted under `other`.
const REMEMBERED: usize = 4096;

/// Durable points (waits for durability naming an operation), by the operation's kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurablePoints {
    /// By adds.
    pub add: u64,
    /// By releases.
    pub release: u64,
    /// By recoveries (their repairs and their end).
    pub recovery: u64,
    /// By any other operation, or one whose `OpStarted` this open did not see.
    pub other: u64,
}

#[derive(Clone, Copy)]
enum Kind {
    Add,
    Release,
    Recovery,
}

#[derive(Default)]
pub(crate) struct PointCounters {
    kinds: Mutex<BTreeMap<OpId, Kind>>,
    add: AtomicU64,
    release: AtomicU64,
    recovery: AtomicU64,
    other: AtomicU64,
}

impl PointCounters {
    /// Notes the kind of an operation that starts with `event`.
    pub fn appended(&self, op: OpId, event: &Event) {
        let kind = match event {
            Event::OpStarted {
                kind: OpKind::Add { .. },
            } => Kind::Add,
            Event::OpStarted {
                kind: OpKind::Release { .. },
            } => Kind::Release,
            Event::OpStarted {
                kind: OpKind::Recovery,
            } => Kind::Recovery,
            _ => return,
        };
        let mut k = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        k.insert(op, kind);
        while k.len() > REMEMBERED {
            k.pop_first();
        }
    }

    /// Counts one durable point of `op`.
    pub fn point(&self, op: OpId) {
        let kind = self
            .kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&op)
            .copied();
        let c = match kind {
            Some(Kind::Add) => &self.add,
            Some(Kind::Release) => &self.release,
            Some(Kind::Recovery) => &self.recovery,
            None => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> DurablePoints {
        DurablePoints {
            add: self.add.load(Ordering::Relaxed),
            release: self.release.load(Ordering::Relaxed),
            recovery: self.recovery.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
        }
    }
}
