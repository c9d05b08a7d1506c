//! Integrity verification: every retained record's (sealed segments, then the active sled
//! generation) check, key, sequence continuity and hash link, anchored at the start (all-zero hash for seq 1, the pruning anchor or a checkpoint hash
//! after pruning) and cross-checked against every stored checkpoint.

use crate::checkpoint::{anchor, decode_checkpoint};
use crate::codec::{chain_hash, decode_record, key_seq};
use crate::error::JournalError;
use crate::iter::RawIter;
use crate::record::ChainHash;
use crate::store::Journal;
use std::collections::BTreeMap;

/// The first problem `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The sequence number of the record at fault (for a missing record, the first one missing).
    pub seq: u64,
    /// What is wrong.
    pub what: String,
}

/// What [`Journal::verify`] checked and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records read and checked.
    pub records_checked: u64,
    /// The oldest retained record.
    pub first_seq: Option<u64>,
    /// The newest stored record.
    pub last_seq: Option<u64>,
    /// The first problem, or `None` when the journal is intact.
    pub problem: Option<Problem>,
}

impl Journal {
    /// Checks the whole retained journal. Returns `Err` only when the store cannot be read;
    /// damage is reported in [`VerifyReport::problem`], naming the record at fault.
    pub fn verify(&self) -> Result<VerifyReport, JournalError> {
        let s = self.shared();
        let mut cps: BTreeMap<u64, ChainHash> = BTreeMap::new();
        let mut report = VerifyReport::default();
        let note = |report: &mut VerifyReport, seq: u64, what: String| {
            if report.problem.is_none() {
                report.problem = Some(Problem { seq, what });
            }
        };
        let view = s.view();
        for item in view.active.checkpoints.iter() {
            let (k, v) = item?;
            match decode_checkpoint(&k, &v) {
                Ok(cp) => {
                    cps.insert(cp.at_seq, cp.hash_at_seq);
                }
                Err(e) => note(
                    &mut report,
                    key_seq(&k).unwrap_or(0),
                    format!("checkpoint: {e}"),
                ),
            }
        }
        let anchor = anchor(&view.active.meta)?;
        let mut prev: Option<(u64, ChainHash)> = None;
        for item in RawIter::new(&view, 0, u64::MAX) {
            let (seq, v) = match item {
                Ok(x) => x,
                Err(JournalError::Corrupt { seq, what }) => {
                    // A bad key, or a damaged or missing segment: note it and go on.
                    let at =
                        seq.unwrap_or_else(|| prev.map(|p| p.0.saturating_add(1)).unwrap_or(0));
                    note(&mut report, at, what);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let v = v.as_slice();
            report.records_checked += 1;
            if report.first_seq.is_none() {
                report.first_seq = Some(seq);
            }
            report.last_seq = Some(seq);
            let hash = chain_hash(v);
            if let Some(h) = cps.get(&seq) {
                if *h != hash {
                    note(
                        &mut report,
                        seq,
                        "stored bytes do not match the checkpoint's hash".into(),
                    );
                }
            }
            match decode_record(v) {
                Err(e) => note(&mut report, seq, e.to_string()),
                Ok(rec) => {
                    if rec.seq != seq {
                        note(
                            &mut report,
                            seq,
                            format!("stored under seq {seq} but holds seq {}", rec.seq),
                        );
                    }
                    match prev {
                        Some((ps, ph)) => {
                            if seq != ps.saturating_add(1) {
                                note(
                                    &mut report,
                                    ps.saturating_add(1),
                                    format!("records {}..{} missing", ps.saturating_add(1), seq),
                                );
                            } else if rec.prev_hash != ph {
                                // The predecessor's stored bytes are not what this record saw
                                // (or this record's link was changed).
                                note(
                                    &mut report,
                                    ps,
                                    format!(
                                        "record {ps}'s stored bytes do not match the hash held by record {seq}"
                                    ),
                                );
                            }
                        }
                        None => {
                            let expect = if seq == 1 {
                                Some([0u8; 32])
                            } else if let Some(a) = anchor.filter(|a| a.0 == seq) {
                                Some(a.1)
                            } else {
                                cps.get(&seq.saturating_sub(1)).copied()
                            };
                            match expect {
                                Some(h) if rec.prev_hash != h => note(
                                    &mut report,
                                    seq,
                                    "first retained record does not link to its anchor".into(),
                                ),
                                Some(_) => {}
                                // Only pruning removes the oldest records, and it leaves an
                                // anchor: without one, they were lost (a deleted segment, say).
                                None => {
                                    let from =
                                        anchor.map(|a| a.0).filter(|a| *a < seq).unwrap_or(1);
                                    note(
                                        &mut report,
                                        from,
                                        format!(
                                            "records {from}..{} are missing (no pruning anchor accounts for them)",
                                            seq - 1
                                        ),
                                    );
                                }
                            }
                        }
                    }
                }
            }
            prev = Some((seq, hash));
        }
        Ok(report)
    }
}
