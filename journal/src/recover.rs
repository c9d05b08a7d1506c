//! What happens on open: the records from the newest checkpoint to the end are decoded and
//! chain-checked; a damaged tail is moved to the `quarantine` tree (nothing is deleted) so that
//! appends continue from the last good record; damage followed by intact records is only
//! reported (reads and `verify` surface it as typed errors).

use crate::chain::Break;
use crate::checkpoint::{anchor, latest_checkpoint_in};
use crate::codec::{chain_hash, decode_record, key_seq, seq_key};
use crate::error::JournalError;
use crate::record::ChainHash;
use crate::store::META_QUARANTINE_EPOCH;
use crate::verify::Problem;

/// A damaged tail found on open and moved to the quarantine tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailDamage {
    /// Sequence number (key) of the first damaged record.
    pub first_bad_seq: u64,
    /// How many records were moved to quarantine.
    pub records: u64,
    /// What was wrong with the first damaged record.
    pub what: String,
}

/// What [`crate::Journal::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// A damaged tail moved to quarantine, if any.
    pub tail_quarantined: Option<TailDamage>,
    /// Damage followed by intact records: left in place and reported here (reads and `verify`
    /// report it as errors too).
    pub middle_damage: Option<Problem>,
    /// Records decoded and chain-checked by the open scan.
    pub records_scanned: u64,
    /// The last good sequence number after open (appends continue after it).
    pub last_seq: u64,
    /// The sequence number the scan started from (after the newest checkpoint), if any record
    /// was scanned.
    pub scanned_from: Option<u64>,
    /// Unfinished sled snapshots (left by a process killed while sled wrote one) moved out of
    /// sled's way, with where they now are.
    pub snapshots_set_aside: Vec<std::path::PathBuf>,
    /// Records that had been durable but were missing or damaged (up to the last durable one),
    /// when the open was told to accept that. Besides the watermark, the newest checkpoint and
    /// the manifest's sealed segments say what must be stored.
    pub lost_records: Option<SeqRange>,
    /// Sealed segments the manifest names that are not in `archive/`: lost history (reads over
    /// it fail, `verify` names it). Only with `accept_lost_records`; otherwise the open fails
    /// with [`crate::JournalError::LostRecords`].
    pub missing_segments: Vec<SeqRange>,
    /// Segment files in `archive/` that the manifest does not name: left in place, never read.
    pub unexpected_segments: Vec<std::path::PathBuf>,
    /// The journal had no segment manifest (it was written before manifests existed): it was
    /// reconstructed from the files present, the pruning anchor and the active generation, and
    /// stored.
    pub manifest_reconstructed: bool,
    /// What is wrong with the durable watermark, if anything (missing or unreadable on a journal
    /// with records, failing its checksum, or below a checkpoint or sealed segment): lost
    /// records at the tail may then go undetected.
    pub watermark: Option<String>,
}

/// An inclusive range of sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct SeqRange {
    /// The first sequence number.
    pub first: u64,
    /// The last sequence number.
    pub last: u64,
}

pub(crate) struct Scan {
    pub last_seq: u64,
    pub prev_hash: ChainHash,
    pub report: OpenReport,
}

const CHAIN_BROKEN: &str = "hash chain broken";

struct Entry {
    seq: u64,
    bytes: sled::IVec,
}

/// Checks one entry against its predecessor; returns what is wrong, if anything.
/// `Err` only for errors that must fail the open (a newer schema).
fn check(
    e: &Entry,
    prev: Option<(u64, ChainHash)>,
    expect_first: Option<ChainHash>,
) -> Result<Option<String>, JournalError> {
    let rec = match decode_record(&e.bytes) {
        Ok(r) => r,
        Err(err @ JournalError::NewerSchema { .. }) => return Err(err),
        Err(err) => return Ok(Some(err.to_string())),
    };
    let seq = e.seq;
    Ok(match crate::chain::link(seq, &rec, prev) {
        Some(Break::Misfiled { holds }) => {
            Some(format!("stored under seq {seq} but holds seq {holds}"))
        }
        Some(Break::Gap { after }) => Some(format!("gap: seq {seq} follows {after}")),
        Some(Break::Hash { prev }) => Some(format!(
            "{CHAIN_BROKEN}: record {prev}'s stored bytes do not match the hash held by record {seq}"
        )),
        None if prev.is_none() && expect_first.is_some_and(|h| rec.prev_hash != h) => {
            Some("hash chain broken at the anchor".into())
        }
        None => None,
    })
}

pub(crate) fn scan_on_open(
    db: &sled::Db,
    records: &sled::Tree,
    checkpoints: &sled::Tree,
    meta: &sled::Tree,
    quarantine: &sled::Tree,
) -> Result<Scan, JournalError> {
    let cp = latest_checkpoint_in(checkpoints)?;
    let anchor = anchor(meta)?;
    let mut report = OpenReport::default();

    // Where to start and what the first scanned record must link to.
    let (start, mut prev, expect_first) = match &cp {
        Some(cp) => match records.get(seq_key(cp.at_seq))? {
            Some(v) => {
                if chain_hash(&v) != cp.hash_at_seq {
                    return Err(JournalError::corrupt(
                        cp.at_seq,
                        "record does not match the hash stored by its checkpoint",
                    ));
                }
                (
                    cp.at_seq.saturating_add(1),
                    Some((cp.at_seq, cp.hash_at_seq)),
                    None,
                )
            }
            None => (cp.at_seq.saturating_add(1), None, Some(cp.hash_at_seq)),
        },
        None => {
            let first = match records.first()? {
                Some((k, _)) => key_seq(&k).unwrap_or(0),
                None => 0,
            };
            let expect = if first <= 1 {
                Some([0u8; 32])
            } else {
                anchor.filter(|a| a.0 == first).map(|a| a.1)
            };
            (first, None, expect)
        }
    };

    // Stream the records: only the damaged remainder's keys are ever held in memory.
    let mut iter = records.range(seq_key(start)..);
    let next_entry = |iter: &mut sled::Iter| -> Result<Option<Entry>, JournalError> {
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (k, v) = item?;
                let seq = key_seq(&k)
                    .ok_or_else(|| JournalError::corrupt(None, "record key is not 8 bytes"))?;
                Ok(Some(Entry { seq, bytes: v }))
            }
        }
    };

    let mut bad: Option<(Entry, String)> = None;
    while let Some(e) = next_entry(&mut iter)? {
        if report.scanned_from.is_none() {
            report.scanned_from = Some(e.seq);
        }
        let ef = if prev.is_none() { expect_first } else { None };
        if let Some(what) = check(&e, prev, ef)? {
            bad = Some((e, what));
            break;
        }
        report.records_scanned += 1;
        prev = Some((e.seq, chain_hash(&e.bytes)));
    }

    if let Some((first, what)) = bad {
        let chain_break = what.starts_with(CHAIN_BROKEN);
        let first_bad = first.seq;
        // Is there an intact link after the damage? Then it is middle damage, not a tail.
        let mut damaged_keys = vec![first.seq];
        let mut pred = (first.seq, chain_hash(&first.bytes));
        let mut intact_after = false;
        while let Some(e) = next_entry(&mut iter)? {
            if matches!(check(&e, Some(pred), None), Ok(None)) {
                intact_after = true;
            }
            pred = (e.seq, chain_hash(&e.bytes));
            damaged_keys.push(e.seq);
        }
        if intact_after {
            // A broken link blames the predecessor's stored bytes, as `verify` does.
            let seq = match (chain_break, prev) {
                (true, Some((ps, _))) => ps,
                _ => first_bad,
            };
            report.middle_damage = Some(Problem::record(seq, what));
            prev = Some(pred);
        } else {
            let epoch = next_epoch(meta)?;
            for &seq in &damaged_keys {
                if let Some(v) = records.get(seq_key(seq))? {
                    let mut qk = Vec::with_capacity(16);
                    qk.extend_from_slice(&epoch.to_be_bytes());
                    qk.extend_from_slice(&seq_key(seq));
                    quarantine.insert(qk, v)?;
                }
            }
            db.flush()?;
            for &seq in &damaged_keys {
                records.remove(seq_key(seq))?;
            }
            db.flush()?;
            let n = damaged_keys.len() as u64;
            tracing::warn!(first_bad_seq = first_bad, records = n, %what, "journal tail damaged; moved to quarantine");
            report.tail_quarantined = Some(TailDamage {
                first_bad_seq: first_bad,
                records: n,
                what,
            });
        }
    }

    let (last_seq, prev_hash) = match prev {
        Some(p) => p,
        None => {
            // Nothing good scanned: continue after the checkpoint or anchor, or from scratch.
            match (&cp, &anchor) {
                (Some(cp), _) => (cp.at_seq, cp.hash_at_seq),
                (None, Some(a)) if a.0 > 0 => (a.0 - 1, a.1),
                _ => (0, [0u8; 32]),
            }
        }
    };
    // Never reuse a sequence number that is still stored (possible with middle damage before
    // the scan start) — the scan covers up to the last key, so `last_seq` is the last good key.
    report.last_seq = last_seq;
    Ok(Scan {
        last_seq,
        prev_hash,
        report,
    })
}

fn next_epoch(meta: &sled::Tree) -> Result<u64, JournalError> {
    let cur = match meta.get(META_QUARANTINE_EPOCH)? {
        Some(v) => {
            let arr: [u8; 8] = v.as_ref().try_into().unwrap_or([0; 8]);
            u64::from_be_bytes(arr)
        }
        None => 0,
    };
    let next = cur.saturating_add(1);
    meta.insert(META_QUARANTINE_EPOCH, &next.to_be_bytes())?;
    Ok(next)
}
