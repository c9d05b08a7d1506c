//! Verifying a journal: integrity (each record's check, decoding, sequence continuity and hash
//! chain, the sealed segments the manifest names, the durable watermark, via `Journal::verify`
//! and what opening found), every kept checkpoint against the fold of the records, the fold's
//! invariants (every record applies; `State::violations` is empty after each one), and, when
//! given, the keyed seal and an anchor kept elsewhere. `lunledger verify` renders the result.

use super::{AuditError, Progress};
use lunledger_journal::{
    Head, JournalError, JournalReader, OpenReport, ProblemKind, SealCheck, SealKey, SeqRange,
};
use lunledger_recovery::State;
use serde::Serialize;

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The record at fault.
    pub seq: u64,
    /// Which check: `integrity`, `tail`, `lost`, `segments`, `watermark`, `checkpoint`, `fold`,
    /// `invariants`, `seal` or `anchor`.
    pub check: &'static str,
    /// What is wrong.
    pub what: String,
}

/// What [`verify`] found. Field names are the stable JSON schema of `lunledger verify --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// No problem found.
    pub ok: bool,
    /// Records whose integrity was checked.
    pub records_checked: u64,
    /// The first sequence number the journal spans (lost segments included).
    pub first_seq: Option<u64>,
    /// The last sequence number the journal spans (a quarantined tail included).
    pub last_seq: Option<u64>,
    /// Records folded before the first that does not apply (or all).
    pub records_folded: u64,
    /// The first problem (lowest sequence number), if any.
    pub problem: Option<Finding>,
    /// Every problem found (each check stops at its first).
    pub problems: Vec<Finding>,
    /// The journal's head, `SEQ:HASH`: keep it elsewhere and pass it as an anchor later.
    pub head: Option<String>,
    /// Whether the keyed seal was checked.
    pub seal_checked: bool,
    /// Whether an anchor was checked.
    pub anchor_checked: bool,
}

/// What opening the journal found, as findings, in this order: a quarantined tail, durable
/// records lost, damage inside the records.
pub fn open_findings(opened: &OpenReport) -> Vec<Finding> {
    let mut problems = Vec::new();
    if let Some(t) = &opened.tail_quarantined {
        problems.push(Finding {
            seq: t.first_bad_seq,
            check: "tail",
            what: format!("damaged tail of {} record(s): {}", t.records, t.what),
        });
    }
    if let Some(SeqRange {
        first,
        last: durable,
    }) = opened.lost_records
    {
        problems.push(Finding {
            seq: first,
            check: "lost",
            what: format!(
                "records {first}..={durable} had been made durable but are missing or damaged"
            ),
        });
    }
    if let Some(m) = &opened.middle_damage {
        problems.push(Finding {
            seq: m.seq,
            check: "integrity",
            what: m.what.clone(),
        });
    }
    problems
}

/// Verifies `journal` (see the module docs). `progress` hears of the records read for the fold.
pub fn verify(
    journal: &JournalReader,
    key: Option<&SealKey>,
    anchor: Option<&Head>,
    progress: &mut dyn Progress,
) -> Result<Verification, AuditError> {
    let opened = journal.open_report().clone();
    let mut problems = open_findings(&opened);
    let report = journal.verify()?;
    let mut record_seen = false;
    for p in &report.problems {
        if p.kind == ProblemKind::Record {
            // The record check names its first problem only.
            if record_seen {
                continue;
            }
            record_seen = true;
        }
        problems.push(Finding {
            seq: p.seq,
            check: match p.kind {
                ProblemKind::Record => "integrity",
                ProblemKind::MissingSegment { .. } | ProblemKind::UnexpectedSegment { .. } => {
                    "segments"
                }
                ProblemKind::Watermark => "watermark",
                ProblemKind::Checkpoint { .. } => "checkpoint",
            },
            what: p.what.clone(),
        });
    }
    // A record the seal, the anchor or the head needs may be unreadable (damaged, or in a lost
    // segment): that is a finding of the check, not a failure to check.
    let unreadable = |e: JournalError| match e {
        JournalError::Corrupt { seq, what } | JournalError::Decode { seq, what } => Ok((seq, what)),
        e => Err(AuditError::Journal(e)),
    };
    let last = journal.last_seq();
    if let Some(key) = key {
        let (seq, what) = match journal.check_seal(key) {
            Ok(check) => (
                match &check {
                    SealCheck::Sealed { .. } => None,
                    SealCheck::HeadChanged { seq } => Some(*seq),
                    SealCheck::Unsealed { head, .. } => Some(head + 1),
                    SealCheck::Missing | SealCheck::BadMac => Some(last),
                },
                check.to_string(),
            ),
            Err(e) => {
                let (seq, what) = unreadable(e)?;
                (Some(seq.unwrap_or(last)), what)
            }
        };
        if let Some(seq) = seq {
            problems.push(Finding {
                seq,
                check: "seal",
                what,
            });
        }
    }
    if let Some(anchor) = anchor {
        let what = match journal.check_anchor(anchor) {
            Ok(w) => w,
            Err(e) => Some(format!(
                "the anchored record cannot be read: {}",
                unreadable(e)?.1
            )),
        };
        if let Some(what) = what {
            problems.push(Finding {
                seq: anchor.seq.min(last.saturating_add(1)),
                check: "anchor",
                what,
            });
        }
    }
    let head = match journal.head() {
        Ok(h) => h.map(|h| h.to_string()),
        Err(e) => {
            // The last record is unreadable; the checks above and below name why.
            unreadable(e)?;
            None
        }
    };
    // Every kept checkpoint against the fold of the records up to it.
    let audit = super::check_checkpoints(journal).map_err(AuditError::Checkpoints)?;
    for m in &audit.mismatches {
        problems.push(Finding {
            seq: m.at_seq,
            check: "checkpoint",
            what: format!("checkpoint at seq {}: {}", m.at_seq, m.what),
        });
    }
    let hist = super::load_history(journal, None, progress)?;
    let mut state: State = hist.start.clone();
    let mut folded = 0;
    for rec in &hist.records {
        if let Err(e) = state.apply(rec) {
            problems.push(Finding {
                seq: e.seq,
                check: "fold",
                what: format!("{} does not fit the state: {}", e.event, e.what),
            });
            break;
        }
        folded += 1;
        let v: Vec<String> = state.violations();
        if !v.is_empty() {
            problems.push(Finding {
                seq: rec.seq,
                check: "invariants",
                what: format!("after {}: {}", rec.event.name(), v.join("; ")),
            });
            break;
        }
    }
    if let Some(d) = &hist.damage {
        if !problems.iter().any(|p| Some(p.seq) == d.seq) {
            problems.push(Finding {
                seq: d.seq.unwrap_or(0),
                check: "integrity",
                what: d.what.clone(),
            });
        }
    }
    problems.sort_by_key(|p| p.seq);
    // The open scan and the verify pass can report the same damage.
    problems.dedup_by(|a, b| a.seq == b.seq && a.what == b.what);
    Ok(Verification {
        ok: problems.is_empty(),
        records_checked: report.records_checked,
        // The range the journal spans, lost segments included (not only what could be read).
        first_seq: match (report.first_seq, journal.first_seq().ok().flatten()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        last_seq: report
            .last_seq
            .max(
                opened
                    .tail_quarantined
                    .as_ref()
                    .map(|t| t.first_bad_seq + t.records - 1),
            )
            .max(Some(journal.last_seq()).filter(|s| *s > 0)),
        records_folded: folded,
        problem: problems.first().cloned(),
        problems,
        head,
        seal_checked: key.is_some(),
        anchor_checked: anchor.is_some(),
    })
}
