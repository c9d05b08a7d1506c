//! Reading a journal's records for folding: from the first record, or — for a journal pruned
//! behind a checkpoint — from the state of the oldest checkpoint whose successors are retained,
//! since records before the oldest retained one cannot be folded any more.

use lunledger_journal::{JournalError, JournalReader, Record};
use lunledger_recovery::State;

/// Records to fold, the state to fold them onto, and any damage met while reading.
#[derive(Debug)]
pub struct History {
    /// The state before `records[0]`.
    pub start: State,
    /// The records, in order, up to the first unreadable one.
    pub records: Vec<Record>,
    /// Said to people when the history does not start at record 1.
    pub note: Option<String>,
    /// The damage that ended the records early, or that opening found, if any.
    pub damage: Option<Damage>,
}

/// Damage met while reading a history: where (when the record is known) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The damaged or missing record, when known.
    pub seq: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(s) => write!(f, "journal damaged at record {s}: {}", self.what),
            None => write!(f, "journal damaged: {}", self.what),
        }
    }
}

/// Why an audit could not be done (a problem it finds in the journal is a finding, not this).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The journal could not be read.
    #[error("reading the journal copy: {0}")]
    Journal(#[from] JournalError),
    /// Records were pruned and no checkpoint stands in for them.
    #[error("records before {first} were pruned and no checkpoint covers them")]
    Uncovered {
        /// The first record retained.
        first: u64,
    },
    /// The checkpoints could not be checked.
    #[error("checking checkpoints: {0}")]
    Checkpoints(crate::Error),
    /// The checkpoint that stands in for pruned records does not decode.
    #[error("the checkpoint at seq {at_seq}: {what}")]
    Checkpoint {
        /// Its sequence number.
        at_seq: u64,
        /// What is wrong with it.
        what: String,
    },
}

/// Reads the history of `journal` (`to`: last sequence number wanted). `progress` is told the
/// number of records to read, then called once per record read.
pub fn load(
    journal: &JournalReader,
    to: Option<u64>,
    progress: &mut dyn Progress,
) -> Result<History, AuditError> {
    let io = AuditError::Journal;
    let first = journal.first_seq().map_err(io)?.unwrap_or(1);
    let mut start = State::new();
    let mut from = first;
    let mut note = None;
    if first > 1 {
        // The oldest checkpoint whose successors are all retained: the most records are folded
        // from it, and a newer checkpoint is never trusted (`verify` compares it with the fold).
        let cps = journal.checkpoints().map_err(io)?;
        let cp = cps
            .iter()
            .find(|c| c.at_seq.saturating_add(1) >= first)
            .ok_or(AuditError::Uncovered { first })?;
        start = super::decode_checkpoint(cp).map_err(|what| AuditError::Checkpoint {
            at_seq: cp.at_seq,
            what,
        })?;
        from = cp.at_seq.saturating_add(1);
        note = Some(if cp.at_seq >= first {
            format!(
                "records 1..{} were pruned; history starts from the checkpoint at seq {} (records {}..{} are retained but cannot be folded)",
                first - 1,
                cp.at_seq,
                first,
                cp.at_seq
            )
        } else {
            format!(
                "records 1..{} were pruned; history starts from the checkpoint at seq {}",
                first - 1,
                cp.at_seq
            )
        });
    }
    let last = to.unwrap_or(u64::MAX).min(journal.last_seq());
    progress.start(last.saturating_sub(from) + 1);
    let mut records = Vec::new();
    let mut damage = None;
    for item in journal.read_range(from, last) {
        match item {
            Ok(r) => {
                records.push(r);
                progress.step();
            }
            Err(e) => {
                let seq = match &e {
                    JournalError::Corrupt { seq, .. } | JournalError::Decode { seq, .. } => *seq,
                    _ => None,
                };
                damage = Some(Damage {
                    seq,
                    what: e.to_string(),
                });
                break;
            }
        }
    }
    progress.finish();
    if damage.is_none() {
        // What the open found is damage too, even where every record that is left reads well:
        // records that had been made durable and are gone, or damage inside the records.
        let opened = journal.open_report();
        damage = super::open_findings(opened)
            .into_iter()
            .find(|f| f.check != "tail")
            .map(|f| Damage {
                seq: Some(f.seq),
                what: f.what,
            });
    }
    Ok(History {
        start,
        records,
        note,
        damage,
    })
}

/// Told how far a long read has come (a progress bar, or nothing).
pub trait Progress {
    /// `len` items will follow.
    fn start(&mut self, len: u64);
    /// One more item done.
    fn step(&mut self);
    /// Done (or stopped early).
    fn finish(&mut self);
}

/// No progress reporting.
#[derive(Debug)]
pub struct Quiet;

impl Progress for Quiet {
    fn start(&mut self, _: u64) {}
    fn step(&mut self) {}
    fn finish(&mut self) {}
}
