//! Reading records: the checked [`RecordIter`] and the following [`Tail`].

use crate::codec::{chain_hash, decode_record, key_seq, seq_key};
use crate::error::JournalError;
use crate::record::{ChainHash, Record};
use crate::store::Journal;
use std::sync::atomic::Ordering;

/// Iterator over stored records in sequence order (see [`Journal::read_from`]). Each record's
/// check, key, continuity and hash link to the record before it (within this iteration) are
/// checked; a problem is yielded as a typed error and ends the iteration.
pub struct RecordIter {
    inner: Option<sled::Iter>,
    prev: Option<(u64, ChainHash)>,
    // Declared last: dropped after the sled iterator, so a closing journal never waits on it.
    _journal: Journal,
}

impl RecordIter {
    pub(crate) fn new(journal: Journal, inner: sled::Iter) -> RecordIter {
        RecordIter {
            _journal: journal,
            inner: Some(inner),
            prev: None,
        }
    }

    pub(crate) fn empty(journal: Journal) -> RecordIter {
        RecordIter {
            _journal: journal,
            inner: None,
            prev: None,
        }
    }

    fn step(&mut self, k: &[u8], v: &[u8]) -> Result<Record, JournalError> {
        let seq =
            key_seq(k).ok_or_else(|| JournalError::corrupt(None, "record key is not 8 bytes"))?;
        let rec = decode_record(v).map_err(|e| e.at_seq(seq))?;
        if rec.seq != seq {
            return Err(JournalError::corrupt(
                seq,
                format!("stored under seq {seq} but holds seq {}", rec.seq),
            ));
        }
        if let Some((ps, ph)) = self.prev {
            if seq != ps.saturating_add(1) {
                return Err(JournalError::corrupt(
                    ps.saturating_add(1),
                    format!("records {}..{} missing", ps.saturating_add(1), seq),
                ));
            }
            if rec.prev_hash != ph {
                return Err(JournalError::corrupt(
                    ps,
                    format!(
                        "hash chain broken: record {ps}'s stored bytes do not match the hash held by record {seq}"
                    ),
                ));
            }
        }
        self.prev = Some((seq, chain_hash(v)));
        Ok(rec)
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.as_mut()?.next()?;
        let out = match item {
            Err(e) => Err(JournalError::from(e)),
            Ok((k, v)) => self.step(&k, &v),
        };
        if out.is_err() {
            self.inner = None;
        }
        Some(out)
    }
}

/// Follows the journal (see [`Journal::tail`]).
pub struct Tail {
    journal: Journal,
    next: u64,
    rx: tokio::sync::watch::Receiver<u64>,
}

impl Tail {
    pub(crate) fn new(journal: Journal, from: u64) -> Tail {
        let rx = journal.shared().written_tx.subscribe();
        Tail {
            journal,
            next: from,
            rx,
        }
    }

    /// The sequence number the next call looks for first.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next stored record at or after the current position, waiting for it to be written.
    /// Fails with [`JournalError::Halted`] once the journal is halted.
    pub async fn next(&mut self) -> Result<Record, JournalError> {
        loop {
            self.rx.borrow_and_update();
            let s = self.journal.shared();
            if let Some(item) = s.records.range(seq_key(self.next)..).next() {
                let (k, v) = item?;
                let seq = key_seq(&k)
                    .ok_or_else(|| JournalError::corrupt(None, "record key is not 8 bytes"))?;
                let rec = decode_record(&v).map_err(|e| e.at_seq(seq))?;
                self.next = seq.saturating_add(1);
                return Ok(rec);
            }
            if s.halted.load(Ordering::SeqCst) {
                return Err(JournalError::Halted);
            }
            self.rx.changed().await.map_err(|_| JournalError::Closed)?;
        }
    }
}
