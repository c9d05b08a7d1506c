//! Checkpoints against the records: every checkpoint the journal keeps is compared with the fold
//! of the records up to it.
//!
//! A checkpoint is a copy of the manager's state at a sequence number (`State` = fold of the
//! records). It bounds recovery time, so it is trusted by [`crate::load_state`]; a checkpoint
//! the records do not support (forged, or written by a bug) would make recovery act on state
//! that never was. [`check_checkpoints`] (behind `lunledger verify`) checks every kept
//! checkpoint; [`check_newest`] (behind every open) checks the newest one against the records
//! since the one before it, so its cost is bounded by the checkpoint interval, not history.

use crate::error::{Error, Result};
use lunledger_journal::{Checkpoint, JournalError, JournalReader};
use lunledger_recovery::State;

/// A checkpoint the records do not support.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointMismatch {
    /// The checkpoint's sequence number.
    pub at_seq: u64,
    /// What differs.
    pub what: String,
}

/// What [`check_checkpoints`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointAudit {
    /// Checkpoints whose state equals the fold of the records up to them.
    pub checked: Vec<u64>,
    /// Checkpoints the records do not support.
    pub mismatches: Vec<CheckpointMismatch>,
    /// Checkpoints that could not be compared, and why (their records were pruned, or damage
    /// or a record the fold rejects stopped the fold first: `verify` reports those itself).
    pub unchecked: Vec<(u64, String)>,
}

/// Decodes a checkpoint's state; `Err` says what is wrong with it.
pub fn decode_checkpoint(cp: &Checkpoint) -> std::result::Result<State, String> {
    let s = lunledger_recovery::decode_checkpoint(&cp.blob).map_err(|e| e.to_string())?;
    if s.last_seq != cp.at_seq {
        return Err(format!(
            "its state is as of seq {}, not {}",
            s.last_seq, cp.at_seq
        ));
    }
    Ok(s)
}

/// Which parts of two states differ, in words.
pub fn state_diff(want: &State, got: &State) -> String {
    let mut parts = Vec::new();
    let mut cmp = |name: &str, same: bool| {
        if !same {
            parts.push(name.to_string());
        }
    };
    cmp("configuration", want.config == got.config);
    cmp("last_seq", want.last_seq == got.last_seq);
    cmp(
        "id counters",
        (
            want.next_op,
            want.next_handle,
            want.next_mount,
            want.next_attach,
        ) == (
            got.next_op,
            got.next_handle,
            got.next_mount,
            got.next_attach,
        ),
    );
    cmp("attachments", want.attachments == got.attachments);
    cmp("mounts", want.mounts == got.mounts);
    cmp("handles", want.handles == got.handles);
    cmp("operations", want.ops == got.ops);
    cmp("drift", want.drift == got.drift);
    cmp("counters", want.counters == got.counters);
    if parts.is_empty() {
        "the states differ".into()
    } else {
        format!(
            "differs from the fold of the records in: {}",
            parts.join(", ")
        )
    }
}

/// Compares the checkpoint `cp` with `folded` (the fold of the records up to it).
fn compare(cp: &Checkpoint, folded: &State) -> Option<CheckpointMismatch> {
    let what = match decode_checkpoint(cp) {
        Err(e) => e,
        Ok(s) if s == *folded => return None,
        Ok(s) => state_diff(folded, &s),
    };
    Some(CheckpointMismatch {
        at_seq: cp.at_seq,
        what,
    })
}

/// Folds the records after `state` up to `to` onto it. `Err` says why it stopped early.
fn fold_to(journal: &JournalReader, state: &mut State, to: u64) -> std::result::Result<(), String> {
    let from = state.last_seq.saturating_add(1);
    if to < from {
        return Ok(());
    }
    for item in journal.read_range(from, to) {
        let rec = item.map_err(|e| format!("the records before it cannot be read: {e}"))?;
        state
            .apply(&rec)
            .map_err(|e| format!("the fold stopped before it: {e}"))?;
    }
    if state.last_seq < to {
        return Err(format!(
            "the records end at seq {} before it",
            state.last_seq
        ));
    }
    Ok(())
}

/// Compares every checkpoint the journal keeps with the fold of the records up to it: from the
/// first record when history starts at 1, else from the oldest checkpoint whose successors are
/// retained (that one cannot be checked: the records before it were pruned).
pub fn check_checkpoints(journal: &JournalReader) -> Result<CheckpointAudit> {
    let mut audit = CheckpointAudit::default();
    let cps = journal.checkpoints()?;
    let first = journal.first_seq()?.unwrap_or(1);
    let last = journal.last_seq();
    let mut state = State::new();
    let mut rest: &[Checkpoint] = &cps;
    if first > 1 {
        // Checkpoints whose records are pruned, and the base the fold starts from.
        while let Some((cp, tail)) = rest.split_first() {
            if cp.at_seq.saturating_add(1) >= first {
                break;
            }
            audit
                .unchecked
                .push((cp.at_seq, "its records were pruned".into()));
            rest = tail;
        }
        match rest.split_first() {
            None => return Ok(audit),
            Some((base, tail)) => {
                match decode_checkpoint(base) {
                    Ok(s) => state = s,
                    Err(e) => {
                        audit.mismatches.push(CheckpointMismatch {
                            at_seq: base.at_seq,
                            what: e,
                        });
                        for cp in tail {
                            audit.unchecked.push((
                                cp.at_seq,
                                format!(
                                    "the records before it were pruned and the checkpoint at {} is unusable",
                                    base.at_seq
                                ),
                            ));
                        }
                        return Ok(audit);
                    }
                }
                audit.unchecked.push((
                    base.at_seq,
                    "the records before it were pruned (history starts from it)".into(),
                ));
                rest = tail;
            }
        }
    }
    let mut stopped: Option<String> = None;
    for cp in rest {
        if cp.at_seq > last {
            audit.mismatches.push(CheckpointMismatch {
                at_seq: cp.at_seq,
                what: format!("it names a record past the last one ({last})"),
            });
            continue;
        }
        if let Some(why) = &stopped {
            audit.unchecked.push((cp.at_seq, why.clone()));
            continue;
        }
        if let Err(why) = fold_to(journal, &mut state, cp.at_seq) {
            audit.unchecked.push((cp.at_seq, why.clone()));
            stopped = Some(why);
            continue;
        }
        match compare(cp, &state) {
            None => audit.checked.push(cp.at_seq),
            Some(m) => audit.mismatches.push(m),
        }
    }
    Ok(audit)
}

/// What [`check_newest`] found about the newest checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum Newest {
    /// No checkpoint, or one whose state does not decode or is not as of its own sequence
    /// number (unusable: the records are replayed instead).
    Unusable,
    /// The records support it: the fold from the checkpoint before it (or from record 1)
    /// equals it. Its sequence number and state.
    Supported(u64, State),
    /// It could not be compared, and why; its sequence number and (unchecked) state.
    Unchecked {
        /// Its sequence number.
        at_seq: u64,
        /// Its state, as stored.
        state: State,
        /// Why it was not compared.
        why: String,
        /// Whether the records before it are missing or unreadable (rather than pruned).
        records_lost: bool,
    },
}

/// Checks the newest checkpoint (which an open loads) against the records: the fold from the
/// checkpoint before it (or from the first record when there is none and history starts at 1)
/// must equal it. [`Error::CheckpointMismatch`] when the records contradict it (or a record
/// does not fold) or it names a record past the last one. The cost is bounded by the
/// checkpoint interval: a rotation keeps the checkpoint before the newest (journals rotated
/// before it did are folded from record 1, once, until two checkpoints follow).
pub fn check_newest(journal: &JournalReader) -> Result<Newest> {
    let cps = journal.checkpoints()?;
    let Some((newest, older)) = cps.split_last() else {
        return Ok(Newest::Unusable);
    };
    let last = journal.last_seq();
    if newest.at_seq > last {
        return Err(Error::CheckpointMismatch {
            at_seq: newest.at_seq,
            what: format!("it names a record past the last one ({last})"),
        });
    }
    let cp_state = match decode_checkpoint(newest) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(at_seq = newest.at_seq, what = %e, "checkpoint unusable; replaying all retained records");
            return Ok(Newest::Unusable);
        }
    };
    let unchecked = |state: State, why: String, records_lost: bool| Newest::Unchecked {
        at_seq: newest.at_seq,
        state,
        why,
        records_lost,
    };
    let first = journal.first_seq()?.unwrap_or(1);
    let base = older
        .iter()
        .rev()
        .filter(|c| c.at_seq.saturating_add(1) >= first)
        .find_map(|c| decode_checkpoint(c).ok());
    let mut state = match base {
        Some(s) => s,
        None if first <= 1 => State::new(),
        None => {
            return Ok(unchecked(
                cp_state,
                "the records before it were pruned and no earlier checkpoint is kept".into(),
                false,
            ))
        }
    };
    let unsupported = |what: String| Error::CheckpointMismatch {
        at_seq: newest.at_seq,
        what,
    };
    let from = state.last_seq.saturating_add(1);
    for item in journal.read_range(from, newest.at_seq) {
        let rec = match item {
            Ok(rec) => rec,
            Err(e @ (JournalError::Corrupt { .. } | JournalError::Decode { .. })) => {
                return Ok(unchecked(
                    cp_state,
                    format!("the records before it cannot be read: {e}"),
                    true,
                ));
            }
            Err(e) => return Err(Error::Journal(e)),
        };
        state
            .apply(&rec)
            .map_err(|e| unsupported(format!("the records before it do not fold: {e}")))?;
    }
    if state.last_seq != newest.at_seq {
        return Ok(unchecked(
            cp_state,
            format!("the records end at seq {} before it", state.last_seq),
            true,
        ));
    }
    if state != cp_state {
        return Err(unsupported(state_diff(&state, &cp_state)));
    }
    Ok(Newest::Supported(newest.at_seq, cp_state))
}
