//! Checkpoints and retention.
//!
//! A checkpoint is an opaque blob (a snapshot of the manager's state) stored under the sequence
//! number it includes, together with the chain hash of the record at that sequence number. It
//! bounds the open scan and lets older records be pruned: `prune` never removes records after the
//! newest checkpoint, and before removing anything it stores an *anchor* (the first retained
//! sequence number and the hash its `prev_hash` must equal) so verification stays anchored.

use crate::codec::{chain_hash, decode_record, key_seq, seq_key};
use crate::error::JournalError;
use crate::record::{ChainHash, HASH_LEN};
use crate::store::{Journal, META_ANCHOR};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A stored checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The sequence number whose state the blob includes.
    pub at_seq: u64,
    /// The opaque snapshot.
    pub blob: Vec<u8>,
    /// The chain hash (blake3 of the stored bytes) of the record at `at_seq`.
    pub hash_at_seq: ChainHash,
}

/// How much history to keep behind the newest checkpoint. A record at or before the newest
/// checkpoint is pruned only when it is outside both bounds; records after the newest
/// checkpoint, and the newest record, are always kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Keep this many records at and before the newest checkpoint's sequence number.
    pub keep_records: u64,
    /// Keep records appended within this long before now.
    pub keep_for: Duration,
}

/// What [`Journal::prune`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Records removed.
    pub records_removed: u64,
    /// Older checkpoints removed (those before the first retained record; the newest is kept).
    pub checkpoints_removed: u64,
    /// The oldest retained record after pruning.
    pub first_retained: Option<u64>,
}

pub(crate) fn decode_checkpoint(k: &[u8], v: &[u8]) -> Result<Checkpoint, JournalError> {
    let at_seq =
        key_seq(k).ok_or_else(|| JournalError::corrupt(None, "checkpoint key is not 8 bytes"))?;
    if v.len() < HASH_LEN {
        return Err(JournalError::corrupt(
            at_seq,
            "checkpoint value shorter than its hash",
        ));
    }
    let mut hash = [0u8; HASH_LEN];
    hash.copy_from_slice(&v[..HASH_LEN]);
    Ok(Checkpoint {
        at_seq,
        blob: v[HASH_LEN..].to_vec(),
        hash_at_seq: hash,
    })
}

pub(crate) fn latest_checkpoint_in(tree: &sled::Tree) -> Result<Option<Checkpoint>, JournalError> {
    match tree.last()? {
        None => Ok(None),
        Some((k, v)) => decode_checkpoint(&k, &v).map(Some),
    }
}

/// The pruning anchor: (first retained seq, the hash its `prev_hash` must equal).
pub(crate) fn anchor(meta: &sled::Tree) -> Result<Option<(u64, ChainHash)>, JournalError> {
    match meta.get(META_ANCHOR)? {
        None => Ok(None),
        Some(v) if v.len() == 8 + HASH_LEN => {
            let mut s = [0u8; 8];
            s.copy_from_slice(&v[..8]);
            let mut h = [0u8; HASH_LEN];
            h.copy_from_slice(&v[8..]);
            Ok(Some((u64::from_be_bytes(s), h)))
        }
        Some(_) => Err(JournalError::corrupt(
            None,
            "pruning anchor has a bad length",
        )),
    }
}

impl Journal {
    /// Stores a checkpoint at `at_seq` (waiting first until that record is durable); durable
    /// before returning. Fails with [`JournalError::NoSuchRecord`] when no record is stored there.
    pub fn write_checkpoint(&self, at_seq: u64, blob: Vec<u8>) -> Result<(), JournalError> {
        self.wait_durable_blocking(at_seq)?;
        let s = self.shared();
        let stored = s
            .records
            .get(seq_key(at_seq))?
            .ok_or(JournalError::NoSuchRecord { seq: at_seq })?;
        let mut v = Vec::with_capacity(HASH_LEN + blob.len());
        v.extend_from_slice(&chain_hash(&stored));
        v.extend_from_slice(&blob);
        s.checkpoints.insert(seq_key(at_seq), v)?;
        s.flush_durable()
    }

    /// The newest checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, JournalError> {
        latest_checkpoint_in(&self.shared().checkpoints)
    }

    /// Removes records older than `retention` keeps behind the newest checkpoint (nothing without
    /// a checkpoint), durable before returning.
    pub fn prune(&self, retention: &Retention) -> Result<PruneReport, JournalError> {
        let s = self.shared();
        let mut report = PruneReport::default();
        let cp = match self.latest_checkpoint()? {
            Some(cp) => cp,
            None => {
                report.first_retained = self.first_seq()?;
                return Ok(report);
            }
        };
        let newest = match s.records.last()? {
            Some((k, _)) => key_seq(&k).unwrap_or(0),
            None => return Ok(report),
        };
        let limit = cp
            .at_seq
            .saturating_sub(retention.keep_records)
            .min(newest.saturating_sub(1));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let cutoff = now.saturating_sub(retention.keep_for.as_micros() as u64);

        // First pass: find the last record to remove (contiguous from the oldest).
        let mut last_removed: Option<(u64, ChainHash)> = None;
        for item in s.records.range(..=seq_key(limit)) {
            let (k, v) = item?;
            let seq = key_seq(&k)
                .ok_or_else(|| JournalError::corrupt(None, "record key is not 8 bytes"))?;
            let rec = decode_record(&v).map_err(|e| e.at_seq(seq))?;
            if rec.ts_micros >= cutoff {
                break;
            }
            last_removed = Some((seq, chain_hash(&v)));
        }
        let (last, hash) = match last_removed {
            Some(x) => x,
            None => {
                report.first_retained = self.first_seq()?;
                return Ok(report);
            }
        };
        // Anchor first, so a crash part way leaves verification anchored.
        let mut a = Vec::with_capacity(8 + HASH_LEN);
        a.extend_from_slice(&(last + 1).to_be_bytes());
        a.extend_from_slice(&hash);
        s.meta.insert(META_ANCHOR, a)?;
        s.flush_durable()?;
        let keys: Vec<sled::IVec> = s
            .records
            .range(..=seq_key(last))
            .keys()
            .collect::<Result<_, _>>()?;
        for k in keys {
            s.records.remove(k)?;
            report.records_removed += 1;
        }
        let old_cps: Vec<sled::IVec> = s
            .checkpoints
            .range(..seq_key(last + 1))
            .keys()
            .collect::<Result<_, _>>()?;
        for k in old_cps {
            if key_seq(&k) != Some(cp.at_seq) {
                s.checkpoints.remove(k)?;
                report.checkpoints_removed += 1;
            }
        }
        s.flush_durable()?;
        report.first_retained = self.first_seq()?;
        Ok(report)
    }
}
