//! `lunledger-journal`: record framing and schema versions for the model's events, the sled store
//! with durable group-committed appends, checkpoints and retention, and integrity verification.
//!
//! This crate knows nothing of managers: it stores, verifies and returns records of
//! [`lunledger_model::Event`]s.
//!
//! # Layout on disk
//! `dir/LOCK` (flock, exclusive use); the active sled generation (sled 0.34): `dir/sled/`
//! (generation 0) or `dir/sled-<n:06>/`, named by `dir/CURRENT` (absent: `sled`); its `db` is
//! the data file that `Durability::Sync` fdatasyncs. sled trees: `records` (big-endian seq →
//! stored record), `checkpoints` (big-endian seq → chain hash ‖ blob), `meta` (pruning anchor, quarantine epoch, segment manifest), `quarantine` (epoch ‖ seq → damaged
//! stored bytes, never deleted). `dir/archive/<first>-<last>.seg`: sealed history, the stored
//! bytes of every record before the active generation (see [`SegmentInfo`]); which segments must be
//! there is the manifest's word, not the directory listing's (see `manifest.rs`).
//! `dir/durable-watermark`: checksummed, see [`Mark`].
//!
//! # Invariants
//! - Sequence numbers are assigned by [`Journal::append`] under one lock: gap-free, monotonic,
//!   continuing after a restart; seq order is call order and the order records reach sled.
//! - A stored record is `rmp(Record) ‖ blake3(rmp)[..8]`; `Record::prev_hash` is blake3 of the
//!   previous record's full stored bytes (all zero for seq 1). Any changed byte fails the check;
//!   a validly re-framed change breaks the successor's link.
//! - A durable wait returns only after one sled `flush()` (and, in `Sync`, one fdatasync of the
//!   data file) that covers the record; one flush serves every waiter of its batch.
//! - Open never deletes: a damaged tail moves to `quarantine`; damage followed by intact records
//!   stays in place and is reported (open report, reads, `verify`).
//! - Every stored record is in exactly one place: a sealed segment or the active generation,
//!   segments before the active generation in seq order. A rotation (at a checkpoint, once the
//!   generation holds `segment_records` records) seals the records up to the checkpoint into a
//!   durable segment, builds the next generation from the checkpoint, configuration, anchor,
//!   quarantine and the records after it, and commits by replacing `CURRENT`; open removes
//!   whatever an interrupted rotation left (an uncommitted generation and its repeated segment,
//!   or a retired generation). sled therefore only ever opens a bounded database.
//! - `prune` removes only records at or before the newest checkpoint and never the newest
//!   record (sealed segments whole, oldest first); it stores the pruning anchor first, so
//!   `verify` stays anchored.
//! - What must be stored has lower bounds besides the records: the durable watermark, the
//!   newest checkpoint and the manifest's sealed segments. Open refuses
//!   ([`JournalError::LostRecords`]) when the records end below any of them or a sealed
//!   segment is missing, unless told to accept the loss; a missing or bad watermark on a
//!   journal with records is reported ([`OpenReport::watermark`], `verify`).
//! - A record with a schema newer than [`SCHEMA_VERSION`] fails the open with
//!   [`JournalError::NewerSchema`] and is left untouched.
//! - No library path panics on input, disk contents or sled errors; everything is a
//!   [`JournalError`].
#![deny(missing_docs, missing_debug_implementations)]

mod active;
mod chain;
mod checkpoint;
mod codec;
mod copy;
mod error;
// Fault injection is public with the `testing` feature only; the journal's sites always ask it
// (an empty inline function without the feature).
#[cfg(feature = "testing")]
pub mod faults;
#[cfg(not(feature = "testing"))]
mod faults;
mod iter;
mod lock;
mod manifest;
mod options;
mod points;
mod reader;
mod readonly;
mod record;
mod recover;
mod rotate;
mod safe_fs;
mod seal;
mod segment;
mod snapshot;
mod spin;
mod stats;
mod store;
mod verify;
mod watermark;
mod writer;

pub use active::{CURRENT_FILE, SLED_DATA_FILE, SLED_DIR};
pub use checkpoint::{Checkpoint, PruneReport, Retention};
pub use codec::{chain_hash, decode_record, decode_record_hashed, encode_record, CHECK_LEN};
pub use copy::{copy_journal, CopyReport, LeftOut};
pub use error::JournalError;
pub use iter::{RecordIter, Tail};
pub use lock::{wait_flock_free, DirLock, SharedLock, LOCK_FILE, LOCK_WAIT};
pub use options::{Durability, JournalOptions};
pub use points::DurablePoints;
pub use reader::JournalReader;
pub use readonly::{open_read_only, Provenance, ReadOnlyJournal, ReadOnlyOptions};
pub use record::{ChainHash, Record, HASH_LEN, SCHEMA_VERSION};
pub use recover::{OpenReport, SeqRange, TailDamage};
pub use seal::{Head, SealCheck, SealKey};
pub use segment::{SegmentInfo, ARCHIVE_DIR};
pub use stats::JournalStats;
pub use store::{is_journal_dir, Journal};
pub use verify::{Problem, ProblemKind, VerifyReport, MAX_PROBLEMS};
pub use watermark::{Mark, WATERMARK_FILE};
