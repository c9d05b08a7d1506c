//! `lunledger-recovery`: the pure model of the manager: `State` as the fold of journal events,
//! its invariants, point-in-time state, and the recovery planner. No I/O.
#![deny(missing_docs)]
