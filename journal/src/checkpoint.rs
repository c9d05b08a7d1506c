//! Checkpoints and retention.
//!
//! A checkpoint is an opaque blob (a snapshot of the manager's state) stored under the sequence
//! number it includes, together with the chain hash of the record at that sequence number. It
//! bounds the open scan and lets older records be pruned: `prune` never removes records after the
//! newest checkpoint, and before removing anything it stores an *anchor* (the first retained
//! sequence number and the hash its `prev_hash` must equal) so verification stays anchored.
//!
//! A checkpoint is also where the journal rotates (see `rotate.rs`): once the active sled
//! generation holds `segment_records` records up to it, they are sealed into a segment.
//! Pruning removes whole sealed segments first, then records of the active generation.

use crate::active::Active;
use crate::codec::{chain_hash, decode_record, key_seq, seq_key};
use crate::error::JournalError;
use crate::iter::RawIter;
use crate::manifest::Manifest;
use crate::record::{ChainHash, HASH_LEN};
use crate::store::{lock, Journal, META_ANCHOR};
use std::sync::Arc;
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
    /// When the active generation has grown past `segment_records`, also rotates (seals the
    /// records up to `at_seq` into a segment; see [`Journal::segments`]).
    ///
    /// A storage failure on the way stops the journal (fail-stop; see [`JournalError::Storage`]).
    pub fn write_checkpoint(&self, at_seq: u64, blob: Vec<u8>) -> Result<(), JournalError> {
        self.write_checkpoint_inner(at_seq, blob).map_err(|e| {
            crate::writer::fail_on_storage_error(self.shared(), "writing a checkpoint", e)
        })
    }

    fn write_checkpoint_inner(&self, at_seq: u64, blob: Vec<u8>) -> Result<(), JournalError> {
        self.wait_durable_blocking(at_seq)?;
        let s = self.shared();
        let _m = lock(&s.maint);
        let hash = self
            .stored_hash(at_seq)?
            .ok_or(JournalError::NoSuchRecord { seq: at_seq })?;
        let mut v = Vec::with_capacity(HASH_LEN + blob.len());
        v.extend_from_slice(&hash);
        v.extend_from_slice(&blob);
        let active = s.active();
        const CHECKPOINT: &str = "writing a checkpoint";
        crate::faults::check(crate::faults::Site::CheckpointWrite)
            .map_err(|e| JournalError::storage_io(CHECKPOINT, active.dir(), e))?;
        active
            .checkpoints
            .insert(seq_key(at_seq), v)
            .map_err(|e| JournalError::storage(CHECKPOINT, active.dir(), e))?;
        active.flush_durable(s.durability, &s.counters)?;
        crate::rotate::maybe_rotate(self, &active, at_seq)
    }

    /// Every checkpoint stored in the active generation, oldest first. A rotation carries the
    /// checkpoint it rotates at and the one before it into the new generation (so the newest
    /// can be checked against the records after the one before); pruning removes those before
    /// the first retained record, except the newest.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, JournalError> {
        let mut out = Vec::new();
        for item in self.shared().active().checkpoints.iter() {
            let (k, v) = item?;
            out.push(decode_checkpoint(&k, &v)?);
        }
        Ok(out)
    }

    /// The newest checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, JournalError> {
        latest_checkpoint_in(&self.shared().active().checkpoints)
    }

    /// Removes records older than `retention` keeps behind the newest checkpoint (nothing without
    /// a checkpoint), durable before returning. Sealed segments go whole (a segment is removed
    /// only when all of it is outside `retention`), oldest first; records of the active
    /// generation only once no segment is left before them.
    ///
    /// A storage failure on the way stops the journal (fail-stop).
    pub fn prune(&self, retention: &Retention) -> Result<PruneReport, JournalError> {
        self.prune_inner(retention)
            .map_err(|e| crate::writer::fail_on_storage_error(self.shared(), "pruning", e))
    }

    fn prune_inner(&self, retention: &Retention) -> Result<PruneReport, JournalError> {
        let s = self.shared();
        let _m = lock(&s.maint);
        let mut report = PruneReport::default();
        let view = s.view();
        let cp = match latest_checkpoint_in(&view.active.checkpoints)? {
            Some(cp) => cp,
            None => {
                report.first_retained = self.first_seq()?;
                return Ok(report);
            }
        };
        let newest = match (view.active.last_seq()?, view.segments.last()) {
            (Some(n), _) => n,
            (None, Some(seg)) => seg.last,
            (None, None) => return Ok(report),
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

        // Whole sealed segments, oldest first: a segment goes when its newest record does.
        let mut gone = Vec::new();
        let mut last_removed: Option<(u64, ChainHash)> = None;
        for seg in view.segments.iter() {
            if seg.last > limit || !seg.path.is_file() {
                // A missing segment is a loss to report, never to be pruned away.
                break;
            }
            let mut newest_in_seg = None;
            for item in RawIter::segment_only(seg) {
                newest_in_seg = Some(item?);
            }
            let Some((seq, v)) = newest_in_seg else { break };
            let rec = decode_record(v.as_slice()).map_err(|e| e.at_seq(seq))?;
            if seq != seg.last || rec.ts_micros >= cutoff {
                break;
            }
            last_removed = Some((seq, chain_hash(v.as_slice())));
            gone.push(seg.clone());
        }
        if let Some((last, hash)) = last_removed {
            store_anchor(&view.active, last, hash)?;
            // The manifest records the pruning before any file goes: an interrupted prune
            // leaves files the next open removes, never a segment it would call missing.
            Manifest::of(last, &view.segments[gone.len()..]).store(&view.active.meta)?;
            view.active.flush_durable(s.durability, &s.counters)?;
            s.view_write().segments = Arc::new(view.segments[gone.len()..].to_vec());
            crate::segment::remove(&s.dir, &gone)?;
            report.records_removed += gone.iter().map(|g| g.last - g.first + 1).sum::<u64>();
        }
        if gone.len() == view.segments.len() {
            prune_active(s, &view.active, &cp, limit, cutoff, &mut report)?;
        }
        report.first_retained = self.first_seq()?;
        Ok(report)
    }
}

/// Stores the pruning anchor: `last + 1` is the first retained record and must link to `hash`.
fn store_anchor(active: &Active, last: u64, hash: ChainHash) -> Result<(), JournalError> {
    let mut a = Vec::with_capacity(8 + HASH_LEN);
    a.extend_from_slice(&(last + 1).to_be_bytes());
    a.extend_from_slice(&hash);
    active.meta.insert(META_ANCHOR, a)?;
    Ok(())
}

/// Prunes records (and older checkpoints) of the active generation up to `limit`.
fn prune_active(
    s: &crate::store::Shared,
    active: &Active,
    cp: &Checkpoint,
    limit: u64,
    cutoff: u64,
    report: &mut PruneReport,
) -> Result<(), JournalError> {
    // First pass: find the last record to remove (contiguous from the oldest).
    let mut last_removed: Option<(u64, ChainHash)> = None;
    for item in active.records.range(..=seq_key(limit)) {
        let (k, v) = item?;
        let seq =
            key_seq(&k).ok_or_else(|| JournalError::corrupt(None, "record key is not 8 bytes"))?;
        let rec = decode_record(&v).map_err(|e| e.at_seq(seq))?;
        if rec.ts_micros >= cutoff {
            break;
        }
        last_removed = Some((seq, chain_hash(&v)));
    }
    let Some((last, hash)) = last_removed else {
        return Ok(());
    };
    // Anchor first, so a crash part way leaves verification anchored.
    store_anchor(active, last, hash)?;
    // No segment is left (this runs only then): the manifest records how far pruning went.
    Manifest::of(last, &[]).store(&active.meta)?;
    active.flush_durable(s.durability, &s.counters)?;
    let keys: Vec<sled::IVec> = active
        .records
        .range(..=seq_key(last))
        .keys()
        .collect::<Result<_, _>>()?;
    for k in keys {
        active.records.remove(k)?;
        report.records_removed += 1;
    }
    let old_cps: Vec<sled::IVec> = active
        .checkpoints
        .range(..seq_key(last + 1))
        .keys()
        .collect::<Result<_, _>>()?;
    for k in old_cps {
        if key_seq(&k) != Some(cp.at_seq) {
            active.checkpoints.remove(k)?;
            report.checkpoints_removed += 1;
        }
    }
    active.flush_durable(s.durability, &s.counters)
}
