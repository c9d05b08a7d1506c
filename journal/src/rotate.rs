//! Rotation: sealing history into a segment and moving sled to a fresh generation, so that what
//! sled loads on open stays bounded however long the journal lives (see `segment.rs`).
//!
//! Runs at a checkpoint, under the maintenance lock. Steps, and what an open finds after a crash
//! just before each (the crash-point tests stop at every one):
//! 1. seal: records from the active generation's first up to the checkpoint go into a segment,
//!    fsynced. Before: nothing happened.
//! 2. build: generation `n+1` gets the `meta` tree (pruning anchor, the segment manifest
//!    naming the new segment), quarantine, the checkpoint (and the one before it) and the records
//!    after it (copied while appends go on). Before: the new segment repeats
//!    records generation `n` still holds; open removes it.
//! 3. commit: with the writer paused between batches, the last records are copied, generation
//!    `n+1` is flushed and fsynced and `CURRENT` names it. Before: open removes the partial
//!    `n+1` and the repeated segment.
//! 4. switch: the journal's view points at `n+1`; the writer resumes there. Before (after the
//!    commit): open takes `n+1` and removes `n`, whose records are all sealed or copied.
//! 5. retire: generation `n` is removed when its last reader lets go. Before: open removes it.

use crate::active::{gen_dir_name, write_current, Active};
use crate::codec::{key_seq, seq_key};
use crate::error::JournalError;
use crate::manifest::Manifest;
use crate::segment::{sync_dir, SegmentInfo};
use crate::store::{Journal, Shared, View};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Rotates at the checkpoint `at_seq` when the active generation holds at least
/// `segment_records` records up to it. The caller holds the maintenance lock.
pub(crate) fn maybe_rotate(
    j: &Journal,
    active: &Arc<Active>,
    at_seq: u64,
) -> Result<(), JournalError> {
    let s = j.shared();
    if s.segment_records == 0 {
        return Ok(());
    }
    let Some(first) = active.first_seq()? else {
        return Ok(());
    };
    if first > at_seq || at_seq - first + 1 < s.segment_records {
        return Ok(());
    }
    let started = Instant::now();
    let seg = rotate(s, active, first, at_seq)?;
    tracing::info!(
        first = seg.first,
        last = seg.last,
        generation = active.gen + 1,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "journal rotated: history sealed into a segment"
    );
    Ok(())
}

/// The crash-simulation hook: stops before `step` when asked to.
fn fault(s: &Shared, step: u8) -> Result<(), JournalError> {
    // Past the commit point (step 4 on), a halt lets the rotation finish switching to the
    // generation `CURRENT` already names, so that what the process sees is what a reopen
    // will (`Journal::crash` drops the non-durable tail from that generation).
    if s.halted.load(Ordering::SeqCst) && step < 4 {
        return Err(JournalError::Halted);
    }
    if s.rotation_fault.load(Ordering::SeqCst) == step {
        crate::writer::halt(s);
        return Err(JournalError::Halted);
    }
    Ok(())
}

fn rotate(
    s: &Shared,
    old: &Arc<Active>,
    first: u64,
    at_seq: u64,
) -> Result<SegmentInfo, JournalError> {
    fault(s, 1)?;
    let sealed = old
        .records
        .range(seq_key(first)..=seq_key(at_seq))
        .map(|item| {
            let (k, v) = item?;
            let seq = key_seq(&k)
                .ok_or_else(|| JournalError::corrupt(None, "record key is not 8 bytes"))?;
            Ok((seq, v))
        });
    let seg = crate::segment::write(&s.dir, first, sealed)?;
    if seg.last != at_seq {
        return Err(JournalError::Internal(format!(
            "sealed {}..={} but the checkpoint is at {at_seq}",
            seg.first, seg.last
        )));
    }

    fault(s, 2)?;
    let gen = old.gen + 1;
    let gen_dir = s.dir.join(gen_dir_name(gen));
    if gen_dir.exists() {
        std::fs::remove_dir_all(&gen_dir).map_err(|e| JournalError::io(&gen_dir, e))?;
    }
    let new = Active::open(&s.dir, gen, s.cache_capacity, s.flush_every_ms)?;
    copy_tree(&old.meta, &new.meta)?;
    // The new generation's manifest names the new segment too: it commits with `CURRENT`.
    let mut sealed = s.view().segments.to_vec();
    sealed.push(seg.clone());
    let pruned_through = sealed.first().map_or(0, |f| f.first.saturating_sub(1));
    Manifest::of(pruned_through, &sealed).store(&new.meta)?;
    copy_tree(&old.quarantine, &new.quarantine)?;
    let cp = old
        .checkpoints
        .get(seq_key(at_seq))?
        .ok_or_else(|| JournalError::Internal(format!("no checkpoint at {at_seq} to carry")))?;
    new.checkpoints.insert(seq_key(at_seq), cp)?;
    // And the one before it, so the newest can still be checked against the records between
    // them (their record is sealed in the new segment; `verify` checks its hash there).
    if let Some(item) = old.checkpoints.range(..seq_key(at_seq)).next_back() {
        let (k, v) = item?;
        new.checkpoints.insert(k, v)?;
    }
    let copied = copy_records(old, &new, at_seq)?;

    fault(s, 3)?;
    let mut view = s.view_write();
    copy_records(old, &new, copied)?;
    new.db.flush()?;
    sync_generation(new.dir())?;
    write_current(&s.dir, gen)?;

    fault(s, 4)?;
    let mut segments = view.segments.to_vec();
    segments.push(seg.clone());
    *view = View {
        active: Arc::new(new),
        segments: Arc::new(segments),
    };
    drop(view);

    fault(s, 5)?;
    old.retire();
    Ok(seg)
}

/// Copies every entry of one tree into another.
fn copy_tree(from: &sled::Tree, to: &sled::Tree) -> Result<(), JournalError> {
    for item in from.iter() {
        let (k, v) = item?;
        to.insert(k, v)?;
    }
    Ok(())
}

/// Copies the records after `after` from `old` to `new`; returns the last one copied.
fn copy_records(old: &Active, new: &Active, after: u64) -> Result<u64, JournalError> {
    let mut last = after;
    for item in old.records.range(seq_key(after.saturating_add(1))..) {
        let (k, v) = item?;
        last =
            key_seq(&k).ok_or_else(|| JournalError::corrupt(None, "record key is not 8 bytes"))?;
        new.records.insert(k, v)?;
    }
    Ok(last)
}

/// fsyncs every file sled created in a generation's directory, and the directory, so the commit
/// that follows never names a generation a power loss could take back.
fn sync_generation(dir: &std::path::Path) -> Result<(), JournalError> {
    let entries = std::fs::read_dir(dir).map_err(|e| JournalError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io(dir, e))?;
        let p = entry.path();
        if p.is_file() {
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| JournalError::io(&p, e))?;
        }
    }
    sync_dir(dir)
}
