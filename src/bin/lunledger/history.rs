//! Reading a journal's records for folding: from the first record, or — for a journal pruned
//! behind a checkpoint — from the state of the oldest checkpoint whose successors are retained,
//! since records before the oldest retained one cannot be folded any more.

use crate::fail::CliError;
use crate::progress;
use lunledger::journal::{Journal, Record};
use lunledger::recovery::State;

/// Records to fold, the state to fold them onto, and any damage met while reading.
pub struct History {
    /// The state before `records[0]`.
    pub start: State,
    /// The records, in order, up to the first unreadable one.
    pub records: Vec<Record>,
    /// Said to people when the history does not start at record 1.
    pub note: Option<String>,
    /// The read error that ended the records early (damage), if any: (seq if known, what).
    pub damage: Option<(Option<u64>, String)>,
}

/// Reads the history of `journal` (`to`: last sequence number wanted).
pub fn load(journal: &Journal, to: Option<u64>) -> Result<History, CliError> {
    let io = |e| CliError::io("reading the journal copy", e);
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
            .ok_or_else(|| {
                CliError::Io(format!(
                    "records before {first} were pruned and no checkpoint covers them"
                ))
            })?;
        start = lunledger::audit::decode_checkpoint(cp)
            .map_err(|e| CliError::Io(format!("the checkpoint at seq {}: {e}", cp.at_seq)))?;
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
    let pb = progress::bar(last.saturating_sub(from) + 1, "reading");
    let mut records = Vec::new();
    let mut damage = None;
    for item in journal.read_range(from, last) {
        match item {
            Ok(r) => {
                records.push(r);
                pb.inc(1);
            }
            Err(e) => {
                let seq = match &e {
                    lunledger::journal::JournalError::Corrupt { seq, .. }
                    | lunledger::journal::JournalError::Decode { seq, .. } => *seq,
                    _ => None,
                };
                damage = Some((seq, e.to_string()));
                break;
            }
        }
    }
    pb.finish_and_clear();
    if damage.is_none() {
        // What the open found is damage too, even where every record that is left reads well:
        // records that had been made durable and are gone, or damage inside the records.
        let opened = journal.open_report();
        if let Some((first, durable)) = opened.lost_records {
            damage = Some((
                Some(first),
                format!("records {first}..={durable} had been made durable but are missing"),
            ));
        } else if let Some(m) = &opened.middle_damage {
            damage = Some((Some(m.seq), m.what.clone()));
        }
    }
    Ok(History {
        start,
        records,
        note,
        damage,
    })
}
