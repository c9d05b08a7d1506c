//! How long an async durable waiter keeps its thread awake before it parks.
//!
//! A waiter the writer thread commits for (a cancellable wait, the manager's) learns that its
//! records are durable through a wake-up from the writer. On a VM, waking a thread whose vCPU
//! went idle costs far more than the work around it: 34 µs per wake-up here, against 1.2 µs
//! on a busy vCPU (`perf bench sched pipe`, docs/performance.md), and a durable point already
//! pays three other hand-offs (to the writer, to sled's I/O thread and back). So a waiter first
//! yields to its executor for a while (its worker stays awake, its other tasks still run), and
//! its thread to the OS scheduler (the writer it waits for may need this vCPU), and parks only
//! if the flush takes longer than recent ones did.
//!
//! The budget follows the waits: twice their moving average plus a margin, so that a wait as
//! long as the usual one ends while still polling, and never more than [`CAP`]. Where waits
//! take longer than that (a slow disk, `Durability::Sync` on rotating media, a loaded machine)
//! nobody polls at all: a wake-up is then small next to the flush, and the CPU is worth more.
//! The average is shared by concurrent waiters and updated without a lock: approximate by
//! design, it only tunes a wait that is correct for any budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The longest a waiter polls. Past it, polling costs more CPU than a wake-up costs time.
const CAP: Duration = Duration::from_millis(1);

/// What a poll budget adds to twice the average wait: room for its spread.
const MARGIN: Duration = Duration::from_micros(50);

/// The moving average of recent durable waits, in nanoseconds (0: none measured yet).
#[derive(Default)]
pub(crate) struct WaitAverage(AtomicU64);

impl WaitAverage {
    /// How long the next waiter may poll before it parks.
    pub fn budget(&self) -> Duration {
        let avg = Duration::from_nanos(self.0.load(Ordering::Relaxed));
        if avg > CAP {
            return Duration::ZERO;
        }
        (avg * 2 + MARGIN).min(CAP)
    }

    /// Counts a wait that took `took` from its registration until it saw its records durable.
    pub fn record(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.0.load(Ordering::Relaxed);
        // Weight 1/8: a single slow flush does not switch polling off, a run of them does.
        let new = if old == 0 {
            took
        } else {
            old - old / 8 + took / 8
        };
        self.0.store(new, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_follows_the_waits_and_stops_past_the_cap() {
        let a = WaitAverage::default();
        assert_eq!(a.budget(), MARGIN, "nothing measured yet: a short poll");
        for _ in 0..64 {
            a.record(Duration::from_micros(100));
        }
        assert_eq!(a.budget(), Duration::from_micros(250));
        for _ in 0..64 {
            a.record(Duration::from_micros(700));
        }
        assert_eq!(a.budget(), CAP, "capped");
        for _ in 0..64 {
            a.record(Duration::from_millis(5));
        }
        assert_eq!(a.budget(), Duration::ZERO, "slow flushes: no polling");
        a.record(Duration::from_micros(10));
        assert_eq!(
            a.budget(),
            Duration::ZERO,
            "one fast wait does not switch it back on"
        );
        for _ in 0..64 {
            a.record(Duration::from_micros(10));
        }
        assert!(a.budget() < Duration::from_micros(100), "{:?}", a.budget());
    }
}
