//! lunledger: a crash-safe, journaled SCSI disk manager for VM shims.
#![deny(missing_docs)]

pub mod backend;
pub mod vm;

pub use lunledger_journal as journal;
pub use lunledger_recovery as recovery;
