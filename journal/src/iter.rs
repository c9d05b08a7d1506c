//! Reading records: the raw stream over sealed segments and the active sled generation, the
//! checked [`RecordIter`] and the following [`Tail`].

use crate::active::Active;
use crate::chain::Break;
use crate::codec::{decode_record, decode_record_hashed, key_seq, seq_key};
use crate::error::JournalError;
use crate::record::{ChainHash, Record};
use crate::segment::{Cursor, Frame, Loaded, SegmentInfo};
use crate::store::{Journal, View};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One record's stored bytes, wherever they are kept.
pub(crate) enum Stored {
    Sled(sled::IVec),
    Segment(Frame),
}

impl Stored {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Stored::Sled(v) => v,
            Stored::Segment(f) => f.as_slice(),
        }
    }
}

/// The stored records with `from <= seq <= to`, as (sequence number, stored bytes), unchecked:
/// the sealed segments in order, then the active generation. It works on the [`View`] it was
/// made from, so a rotation meanwhile changes nothing it yields. A damaged segment yields one
/// error and the stream goes on with the next segment.
pub(crate) struct RawIter {
    from: u64,
    to: u64,
    segs: std::vec::IntoIter<SegmentInfo>,
    cur: Option<Cursor>,
    sled: Option<sled::Iter>,
    // Declared after the sled iterator, so the generation outlives it.
    active: Option<Arc<Active>>,
}

impl RawIter {
    pub fn new(view: &View, from: u64, to: u64) -> RawIter {
        let segs: Vec<SegmentInfo> = view
            .segments
            .iter()
            .filter(|s| s.last >= from && s.first <= to)
            .cloned()
            .collect();
        RawIter {
            from,
            to,
            segs: segs.into_iter(),
            cur: None,
            sled: None,
            active: Some(view.active.clone()),
        }
    }

    /// Only the records of one segment.
    pub fn segment_only(seg: &SegmentInfo) -> RawIter {
        RawIter {
            from: 0,
            to: u64::MAX,
            segs: vec![seg.clone()].into_iter(),
            cur: None,
            sled: None,
            active: None,
        }
    }
}

impl Iterator for RawIter {
    type Item = Result<(u64, Stored), JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(c) = &mut self.cur {
                match c.next_frame() {
                    None => self.cur = None,
                    Some(Err(e)) => {
                        self.cur = None;
                        return Some(Err(e));
                    }
                    Some(Ok((seq, _))) if seq < self.from => {}
                    Some(Ok((seq, _))) if seq > self.to => self.cur = None,
                    Some(Ok((seq, f))) => return Some(Ok((seq, Stored::Segment(f)))),
                }
                continue;
            }
            if let Some(info) = self.segs.next() {
                match Loaded::read(&info) {
                    Ok(l) => self.cur = Some(l.cursor()),
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            if self.sled.is_none() {
                let a = self.active.as_ref()?;
                self.sled = Some(a.records.range(seq_key(self.from)..=seq_key(self.to)));
            }
            let item = self.sled.as_mut()?.next()?;
            return Some(match item {
                Err(e) => Err(JournalError::from(e)),
                Ok((k, v)) => key_seq(&k)
                    .map(|seq| (seq, Stored::Sled(v)))
                    .ok_or_else(|| JournalError::corrupt(None, "record key is not 8 bytes")),
            });
        }
    }
}

/// Iterator over stored records in sequence order (see [`Journal::read_from`]). Each record's
/// check, key, continuity and hash link to the record before it (within this iteration) are
/// checked; a problem is yielded as a typed error and ends the iteration.
pub struct RecordIter {
    inner: Option<RawIter>,
    prev: Option<(u64, ChainHash)>,
    // Declared last: dropped after the sled iterator, so a closing journal never waits on it.
    _journal: Journal,
}

impl std::fmt::Debug for RecordIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordIter")
            .field("after", &self.prev.map(|(seq, _)| seq))
            .field("done", &self.inner.is_none())
            .finish()
    }
}

impl RecordIter {
    pub(crate) fn new(journal: Journal, inner: RawIter) -> RecordIter {
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

    fn step(&mut self, seq: u64, v: &[u8]) -> Result<Record, JournalError> {
        let (rec, hash) = decode_record_hashed(v).map_err(|e| e.at_seq(seq))?;
        match crate::chain::link(seq, &rec, self.prev) {
            None => {}
            Some(Break::Misfiled { holds }) => {
                return Err(JournalError::corrupt(
                    seq,
                    format!("stored under seq {seq} but holds seq {holds}"),
                ))
            }
            Some(Break::Gap { after }) => {
                return Err(JournalError::corrupt(
                    after.saturating_add(1),
                    format!("records {}..{} missing", after.saturating_add(1), seq),
                ))
            }
            Some(Break::Hash { prev }) => {
                return Err(JournalError::corrupt(
                    prev,
                    format!(
                        "hash chain broken: record {prev}'s stored bytes do not match the hash held by record {seq}"
                    ),
                ))
            }
        }
        self.prev = Some((seq, hash));
        Ok(rec)
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.as_mut()?.next()?;
        let out = match item {
            Err(e) => Err(e),
            Ok((seq, v)) => self.step(seq, v.as_slice()),
        };
        if out.is_err() {
            self.inner = None;
        }
        Some(out)
    }
}

/// Follows the journal (see [`Journal::tail`]).
#[derive(Debug)]
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
            if let Some(item) = RawIter::new(&s.view(), self.next, u64::MAX).next() {
                let (seq, v) = item?;
                let rec = decode_record(v.as_slice()).map_err(|e| e.at_seq(seq))?;
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
