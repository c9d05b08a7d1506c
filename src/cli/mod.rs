//! What the `lunledger` command shows and how it reads a journal: time in and out, exit codes,
//! the guarded read-only copy, colour, tables, audit rows and state views, and the recovery
//! plan in words. Shared by the command and the demo; behind the `cli` feature, so an embedder
//! of the manager does not build it.

pub mod clock;
pub mod fail;
pub mod interrupt;
pub mod plan;
pub mod progress;
pub mod rows;
pub mod snapshot;
pub mod style;
pub mod table;
pub mod view;
