//! Integrity verification: every retained record's (sealed segments, then the active sled
//! generation) check, key, sequence continuity and hash link, anchored at the start (all-zero hash for seq 1, the pruning anchor or a checkpoint hash
//! after pruning) and cross-checked against every stored checkpoint; every segment the manifest
//! names is present and no other is found; the durable watermark is readable, passes its
//! checksum and is not below a checkpoint or sealed segment; no checkpoint lies past the last
//! record. (Whether a checkpoint's *state* is the fold of the records is checked where the fold
//! lives: `lunledger::audit`.)

use crate::chain::Break;
use crate::checkpoint::{anchor, decode_checkpoint};
use crate::codec::{chain_hash, decode_record, key_seq};
use crate::error::JournalError;
use crate::iter::RawIter;
use crate::record::ChainHash;
use crate::store::Journal;
use std::collections::BTreeMap;

/// What kind of problem `verify` (or an open) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// A record: changed, undecodable, missing, out of place, or not linking to its predecessor.
    Record,
    /// A sealed segment the manifest names is not there: its records are lost.
    MissingSegment {
        /// Its first sequence number.
        first: u64,
        /// Its last sequence number.
        last: u64,
    },
    /// A segment file the manifest does not name (left in place, never read).
    UnexpectedSegment {
        /// The first sequence number its name claims.
        first: u64,
        /// The last sequence number its name claims.
        last: u64,
    },
    /// The durable watermark is missing, unreadable, fails its checksum, or is below what a
    /// checkpoint or sealed segment proves durable: lost records at the tail may go undetected.
    Watermark,
    /// A checkpoint does not match its record's hash, or names a record past the last one.
    Checkpoint {
        /// The checkpoint's sequence number.
        at_seq: u64,
    },
}

/// A problem `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The sequence number of the record at fault (for a missing record, the first one missing;
    /// for a watermark problem, the last stored record).
    pub seq: u64,
    /// What is wrong.
    pub what: String,
    /// Which kind of problem.
    pub kind: ProblemKind,
}

impl Problem {
    /// A problem with the record at `seq`.
    pub fn record(seq: u64, what: impl Into<String>) -> Problem {
        Problem {
            seq,
            what: what.into(),
            kind: ProblemKind::Record,
        }
    }
}

/// At most this many problems are listed in [`VerifyReport::problems`].
pub const MAX_PROBLEMS: usize = 256;

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
    /// Every problem found, in the order found (at most [`MAX_PROBLEMS`]); the first is
    /// [`VerifyReport::problem`].
    pub problems: Vec<Problem>,
}

impl Journal {
    /// Checks the whole retained journal. Returns `Err` only when the store cannot be read;
    /// damage is reported in [`VerifyReport::problem`], naming the record at fault.
    pub fn verify(&self) -> Result<VerifyReport, JournalError> {
        let s = self.shared();
        let mut cps: BTreeMap<u64, ChainHash> = BTreeMap::new();
        let mut report = VerifyReport::default();
        let view = s.view();
        // Lost segments are named once, as such, not again by every check they break.
        let missing: Vec<(u64, u64)> = view
            .segments
            .iter()
            .filter(|seg| !seg.path.is_file())
            .map(|seg| (seg.first, seg.last))
            .collect();
        let add = |report: &mut VerifyReport, p: Problem| {
            if report.problem.is_none() {
                report.problem = Some(p.clone());
            }
            if report.problems.len() < MAX_PROBLEMS {
                report.problems.push(p);
            }
        };
        let note = |report: &mut VerifyReport, seq: u64, what: String| {
            if missing.iter().any(|(a, b)| (*a..=*b).contains(&seq)) {
                return;
            }
            add(report, Problem::record(seq, what));
        };
        for (first, last) in &missing {
            add(
                &mut report,
                Problem {
                    seq: *first,
                    what: format!(
                        "records {first}..={last} are lost: their sealed segment is missing"
                    ),
                    kind: ProblemKind::MissingSegment {
                        first: *first,
                        last: *last,
                    },
                },
            );
        }
        for path in &self.open_report().unexpected_segments {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if let Some((first, last)) = name.as_deref().and_then(crate::segment::parse_name) {
                add(
                    &mut report,
                    Problem {
                        seq: first,
                        what: format!("segment file {} is not in the manifest", path.display()),
                        kind: ProblemKind::UnexpectedSegment { first, last },
                    },
                );
            }
        }
        let stored_end = crate::store::stored_end(&view.active, &view.segments)?;
        let newest_cp = crate::checkpoint::latest_checkpoint_in(&view.active.checkpoints)
            .ok()
            .flatten();
        let wm_path = s.dir.join(crate::watermark::WATERMARK_FILE);
        // Read as every journal file is read from a directory that may be hostile (a regular
        // file only, bounded): anything else is a bad watermark, never a hang.
        let mark = match crate::safe_fs::read_regular(&wm_path, 4096) {
            Ok(Some(b)) => crate::watermark::parse(&b),
            Ok(None) => crate::watermark::Mark::Absent,
            Err(e) => crate::watermark::Mark::Bad(format!("the durable watermark: {e}")),
        };
        if let Some(what) = crate::store::watermark_finding(
            &mark,
            // Open wrote one for a new journal: without one, this journal is not new.
            true,
            stored_end,
            newest_cp.map(|c| c.at_seq),
            view.segments.last().map(|s| s.last),
        ) {
            add(
                &mut report,
                Problem {
                    seq: stored_end,
                    what,
                    kind: ProblemKind::Watermark,
                },
            );
        }
        for item in view.active.checkpoints.iter() {
            let (k, v) = item?;
            match decode_checkpoint(&k, &v) {
                Ok(cp) => {
                    if cp.at_seq > stored_end {
                        add(
                            &mut report,
                            Problem {
                                seq: cp.at_seq,
                                what: format!(
                                    "checkpoint at {} names no stored record (records end at {stored_end})",
                                    cp.at_seq
                                ),
                                kind: ProblemKind::Checkpoint { at_seq: cp.at_seq },
                            },
                        );
                    }
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
                    add(
                        &mut report,
                        Problem {
                            seq,
                            what: "stored bytes do not match the checkpoint's hash".into(),
                            kind: ProblemKind::Checkpoint { at_seq: seq },
                        },
                    );
                }
            }
            match decode_record(v) {
                Err(e) => note(&mut report, seq, e.to_string()),
                Ok(rec) => {
                    match crate::chain::link(seq, &rec, prev) {
                        None => {}
                        Some(Break::Misfiled { holds }) => note(
                            &mut report,
                            seq,
                            format!("stored under seq {seq} but holds seq {holds}"),
                        ),
                        Some(Break::Gap { after }) => note(
                            &mut report,
                            after.saturating_add(1),
                            format!("records {}..{} missing", after.saturating_add(1), seq),
                        ),
                        // The predecessor's stored bytes are not what this record saw (or this
                        // record's link was changed).
                        Some(Break::Hash { prev }) => note(
                            &mut report,
                            prev,
                            format!(
                                "record {prev}'s stored bytes do not match the hash held by record {seq}"
                            ),
                        ),
                    }
                    if prev.is_none() {
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
                                let from = anchor.map(|a| a.0).filter(|a| *a < seq).unwrap_or(1);
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
            prev = Some((seq, hash));
        }
        Ok(report)
    }
}
