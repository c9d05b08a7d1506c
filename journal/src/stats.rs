//! Counters of the journal's work, for tests and benchmarks.

use crate::points::{DurablePoints, PointCounters};
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the journal's counters since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Records appended (durable or not).
    pub appended: u64,
    /// Calls that waited for durability (`wait_durable*`, `append_durable`).
    pub durable_waits: u64,
    /// Of those, async waits for the writer thread that saw their records durable while still
    /// polling, without parking their thread (see [`crate::Journal::wait_durable_cancellable`]).
    pub polled_waits: u64,
    /// sled `flush()` calls made by the journal.
    pub flushes: u64,
    /// fdatasync calls on sled's data file (only in `Durability::Sync`).
    pub fdatasyncs: u64,
    /// The most records one commit round handed to sled.
    pub largest_batch: u64,
    /// Commit rounds run by a waiting caller on its own thread (a leader), not by the writer
    /// thread.
    pub leader_rounds: u64,
    /// Durable points by operation kind ([`crate::Journal::wait_durable_for`]).
    pub durable_points: DurablePoints,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub appended: AtomicU64,
    pub durable_waits: AtomicU64,
    pub polled_waits: AtomicU64,
    pub flushes: AtomicU64,
    pub fdatasyncs: AtomicU64,
    pub largest_batch: AtomicU64,
    pub leader_rounds: AtomicU64,
    pub points: PointCounters,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> JournalStats {
        JournalStats {
            appended: self.appended.load(Ordering::Relaxed),
            durable_waits: self.durable_waits.load(Ordering::Relaxed),
            polled_waits: self.polled_waits.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            fdatasyncs: self.fdatasyncs.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            leader_rounds: self.leader_rounds.load(Ordering::Relaxed),
            durable_points: self.points.snapshot(),
        }
    }
}
