//! A read-only handle on an open journal: everything a reader may ask (records, checkpoints,
//! counters, integrity, the head) and nothing that writes. The manager hands this out, so an
//! embedder cannot journal an event past the manager's own validation.

use crate::checkpoint::Checkpoint;
use crate::error::JournalError;
use crate::iter::{RecordIter, Tail};
use crate::record::{ChainHash, Record};
use crate::recover::OpenReport;
use crate::seal::{Head, SealCheck, SealKey};
use crate::segment::SegmentInfo;
use crate::stats::JournalStats;
use crate::store::Journal;
use crate::verify::VerifyReport;
use std::path::Path;

/// Read access to a [`Journal`] (see the module docs). Cheap to clone; it keeps the journal
/// open while it lives, as a [`Journal`] clone does.
#[derive(Clone, Debug)]
pub struct JournalReader {
    journal: Journal,
}

impl Journal {
    /// A read-only handle on this journal.
    pub fn reader(&self) -> JournalReader {
        JournalReader {
            journal: self.clone(),
        }
    }
}

impl JournalReader {
    /// See [`Journal::open_report`].
    pub fn open_report(&self) -> &OpenReport {
        self.journal.open_report()
    }
    /// See [`Journal::dir`].
    pub fn dir(&self) -> &Path {
        self.journal.dir()
    }
    /// See [`Journal::last_seq`].
    pub fn last_seq(&self) -> u64 {
        self.journal.last_seq()
    }
    /// See [`Journal::durable_seq`].
    pub fn durable_seq(&self) -> u64 {
        self.journal.durable_seq()
    }
    /// See [`Journal::first_seq`].
    pub fn first_seq(&self) -> Result<Option<u64>, JournalError> {
        self.journal.first_seq()
    }
    /// See [`Journal::segments`].
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.journal.segments()
    }
    /// See [`Journal::generation`].
    pub fn generation(&self) -> u64 {
        self.journal.generation()
    }
    /// See [`Journal::read_from`].
    pub fn read_from(&self, seq: u64) -> RecordIter {
        self.journal.read_from(seq)
    }
    /// See [`Journal::read_range`].
    pub fn read_range(&self, from: u64, to_inclusive: u64) -> RecordIter {
        self.journal.read_range(from, to_inclusive)
    }
    /// See [`Journal::newest`].
    pub fn newest(&self, n: usize) -> Result<Vec<Record>, JournalError> {
        self.journal.newest(n)
    }
    /// See [`Journal::tail`].
    pub fn tail(&self, from: u64) -> Tail {
        self.journal.tail(from)
    }
    /// See [`Journal::stats`].
    pub fn stats(&self) -> JournalStats {
        self.journal.stats()
    }
    /// See [`Journal::quarantined`].
    pub fn quarantined(&self) -> Result<Vec<(u64, Vec<u8>)>, JournalError> {
        self.journal.quarantined()
    }
    /// See [`Journal::stored_hash`].
    pub fn stored_hash(&self, seq: u64) -> Result<Option<ChainHash>, JournalError> {
        self.journal.stored_hash(seq)
    }
    /// See [`Journal::checkpoints`].
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, JournalError> {
        self.journal.checkpoints()
    }
    /// See [`Journal::latest_checkpoint`].
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, JournalError> {
        self.journal.latest_checkpoint()
    }
    /// See [`Journal::verify`].
    pub fn verify(&self) -> Result<VerifyReport, JournalError> {
        self.journal.verify()
    }
    /// See [`Journal::head`].
    pub fn head(&self) -> Result<Option<Head>, JournalError> {
        self.journal.head()
    }
    /// See [`Journal::check_anchor`].
    pub fn check_anchor(&self, anchor: &Head) -> Result<Option<String>, JournalError> {
        self.journal.check_anchor(anchor)
    }
    /// See [`Journal::check_seal`].
    pub fn check_seal(&self, key: &SealKey) -> Result<SealCheck, JournalError> {
        self.journal.check_seal(key)
    }
}
