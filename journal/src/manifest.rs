//! The manifest of sealed and pruned history: which segments the journal has sealed (and so must
//! find in `archive/`), and up to which sequence number it has pruned sealed history on purpose.
//! With it a missing segment is always a named loss ([`crate::JournalError::LostRecords`] on
//! open, [`crate::ProblemKind::MissingSegment`] from `verify`), never mistaken for pruning, and a
//! segment file it does not name is reported, not read.
//!
//! It is stored in the active generation's `meta` tree under `manifest`, so it changes
//! atomically with what it describes: a rotation writes the new manifest into the generation it
//! builds, before `CURRENT` names that generation (its commit point); a pruning stores it with
//! the pruning anchor before it removes any file. Its encoding is `b"LLMF" ‖ version (1) ‖
//! pruned_through u64 BE ‖ count u32 BE ‖ count × (first u64 BE, last u64 BE) ‖ blake3[..8]` of
//! everything before; the entries are consecutive from `pruned_through + 1`.
//!
//! Journals written before the manifest existed have none: open reconstructs it from what is
//! present (the segment files, the pruning anchor, and the active generation's first record,
//! before which everything not pruned must be sealed), stores it, and says so
//! ([`crate::OpenReport::manifest_reconstructed`]); a range the files do not cover becomes a
//! missing entry, so the loss is named from then on.

use crate::error::JournalError;
use crate::segment::SegmentInfo;
use std::path::Path;

pub(crate) const META_MANIFEST: &[u8] = b"manifest";
const MAGIC: &[u8; 4] = b"LLMF";
const VERSION: u8 = 1;
const CHECK_LEN: usize = 8;

/// Sealed segments (oldest first) and how far sealed history was pruned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// Every record up to here was pruned (0: none).
    pub pruned_through: u64,
    /// (first, last) of each sealed segment still retained, consecutive from
    /// `pruned_through + 1`.
    pub sealed: Vec<(u64, u64)>,
}

fn bad(what: impl Into<String>) -> JournalError {
    JournalError::corrupt(None, format!("segment manifest: {}", what.into()))
}

impl Manifest {
    /// The manifest of `segments` (pruning recorded as `pruned_through`).
    pub fn of(pruned_through: u64, segments: &[SegmentInfo]) -> Manifest {
        Manifest {
            pruned_through,
            sealed: segments.iter().map(|s| (s.first, s.last)).collect(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + 1 + 8 + 4 + 16 * self.sealed.len() + CHECK_LEN);
        v.extend_from_slice(MAGIC);
        v.push(VERSION);
        v.extend_from_slice(&self.pruned_through.to_be_bytes());
        v.extend_from_slice(&(self.sealed.len() as u32).to_be_bytes());
        for (a, b) in &self.sealed {
            v.extend_from_slice(&a.to_be_bytes());
            v.extend_from_slice(&b.to_be_bytes());
        }
        let h = blake3::hash(&v);
        v.extend_from_slice(&h.as_bytes()[..CHECK_LEN]);
        v
    }

    pub fn decode(v: &[u8]) -> Result<Manifest, JournalError> {
        let head = 4 + 1 + 8 + 4;
        if v.len() < head + CHECK_LEN {
            return Err(bad("too short"));
        }
        let (body, check) = v.split_at(v.len() - CHECK_LEN);
        if blake3::hash(body).as_bytes()[..CHECK_LEN] != *check {
            return Err(bad("checksum mismatch: it was changed or damaged"));
        }
        if &body[..4] != MAGIC {
            return Err(bad("bad magic"));
        }
        if body[4] != VERSION {
            return Err(bad(format!("unknown version {}", body[4])));
        }
        let u64_at = |at: usize| -> u64 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let pruned_through = u64_at(5);
        let mut n = [0u8; 4];
        n.copy_from_slice(&body[13..17]);
        let n = u32::from_be_bytes(n) as usize;
        if n.checked_mul(16).and_then(|x| x.checked_add(head)) != Some(body.len()) {
            return Err(bad("length does not match its entry count"));
        }
        let mut sealed = Vec::with_capacity(n);
        let mut expect = pruned_through.saturating_add(1);
        for i in 0..n {
            let (a, b) = (u64_at(head + 16 * i), u64_at(head + 16 * i + 8));
            if a != expect || b < a {
                return Err(bad(format!(
                    "entry {a}..={b} does not follow on from {}",
                    expect.saturating_sub(1)
                )));
            }
            sealed.push((a, b));
            expect = b.saturating_add(1);
        }
        Ok(Manifest {
            pruned_through,
            sealed,
        })
    }

    pub fn load(meta: &sled::Tree) -> Result<Option<Manifest>, JournalError> {
        match meta.get(META_MANIFEST)? {
            None => Ok(None),
            Some(v) => Manifest::decode(&v).map(Some),
        }
    }

    /// Stores the manifest (durable with the tree's next flush).
    pub fn store(&self, meta: &sled::Tree) -> Result<(), JournalError> {
        meta.insert(META_MANIFEST, self.encode())?;
        Ok(())
    }

    /// The segments the manifest names, where they must be.
    pub fn segments(&self, journal_dir: &Path) -> Vec<SegmentInfo> {
        self.sealed
            .iter()
            .map(|(a, b)| crate::segment::info(journal_dir, *a, *b))
            .collect()
    }
}

/// What is sealed according to the manifest, and what the archive directory holds besides.
pub(crate) struct Sealed {
    pub segments: Vec<SegmentInfo>,
    pub missing: Vec<(u64, u64)>,
    pub unexpected: Vec<std::path::PathBuf>,
    pub reconstructed: bool,
}

/// Reconciles the manifest (reconstructed for a journal that has none) with the files in
/// `archive/`. Removes leftovers that are not the only copy of anything: segments of a rotation
/// that never committed (they start at or after the active generation's first record) and
/// segments the manifest records as pruned (a pruning interrupted before it removed them).
/// Other files it does not name are left alone and returned as unexpected.
/// A `fresh` journal (created by this open) gets an empty manifest, stored, and is not said to
/// be reconstructed.
pub(crate) fn reconcile(
    journal_dir: &Path,
    active: &crate::active::Active,
    fresh: bool,
) -> Result<Sealed, JournalError> {
    let listed = crate::segment::list(journal_dir)?;
    let active_first = active.first_seq()?;
    let (manifest, reconstructed, store) = match Manifest::load(&active.meta)? {
        Some(m) => (m, false, false),
        None if fresh => (reconstruct(active, &listed, active_first)?, false, true),
        None => (reconstruct(active, &listed, active_first)?, true, true),
    };
    let mut redundant = Vec::new();
    let mut unexpected = Vec::new();
    for s in listed {
        if manifest.sealed.contains(&(s.first, s.last)) {
            continue;
        }
        if s.last <= manifest.pruned_through || active_first.is_some_and(|a| s.first >= a) {
            redundant.push(s);
        } else {
            unexpected.push(s.path);
        }
    }
    if !redundant.is_empty() {
        tracing::info!(
            count = redundant.len(),
            "removing segments sealed by a rotation that never committed, or already pruned"
        );
        crate::segment::remove(journal_dir, &redundant)?;
    }
    for p in &unexpected {
        tracing::warn!(path = %p.display(), "segment file not in the manifest; ignored");
    }
    let segments = manifest.segments(journal_dir);
    let missing: Vec<(u64, u64)> = segments
        .iter()
        .filter(|s| !s.path.is_file())
        .map(|s| (s.first, s.last))
        .collect();
    if reconstructed {
        tracing::warn!(
            segments = manifest.sealed.len(),
            missing = missing.len(),
            "journal had no segment manifest; reconstructed it from the files present"
        );
    }
    if store {
        manifest.store(&active.meta)?;
        active.db.flush()?;
    }
    Ok(Sealed {
        segments,
        missing,
        unexpected,
        reconstructed,
    })
}

/// The manifest of a journal written before manifests: every record from the pruning point to
/// the active generation's first record must be in a segment; what the files do not cover is
/// entered as missing.
fn reconstruct(
    active: &crate::active::Active,
    listed: &[SegmentInfo],
    active_first: Option<u64>,
) -> Result<Manifest, JournalError> {
    let pruned_through = crate::checkpoint::anchor(&active.meta)?
        .map(|a| a.0.saturating_sub(1))
        .unwrap_or(0);
    let end = match active_first {
        Some(a) => a.saturating_sub(1),
        // A generation holding only the checkpoint it was rotated at.
        None if active.gen > 0 => crate::checkpoint::latest_checkpoint_in(&active.checkpoints)?
            .map(|c| c.at_seq)
            .unwrap_or(0),
        None => 0,
    };
    let mut sealed = Vec::new();
    let mut expect = pruned_through.saturating_add(1);
    for s in listed {
        if s.first < expect || s.last > end {
            continue;
        }
        if s.first > expect {
            sealed.push((expect, s.first - 1));
        }
        sealed.push((s.first, s.last));
        expect = s.last.saturating_add(1);
    }
    if expect <= end {
        sealed.push((expect, end));
    }
    Ok(Manifest {
        pruned_through,
        sealed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_typed() {
        let m = Manifest {
            pruned_through: 20,
            sealed: vec![(21, 40), (41, 60)],
        };
        let v = m.encode();
        assert_eq!(Manifest::decode(&v).unwrap(), m);
        for i in 0..v.len() {
            let mut w = v.clone();
            w[i] ^= 0x10;
            assert!(Manifest::decode(&w).is_err(), "byte {i}");
        }
        assert!(Manifest::decode(&v[..v.len() - 1]).is_err());
        assert!(Manifest::decode(b"").is_err());
        assert_eq!(
            Manifest::decode(&Manifest::default().encode()).unwrap(),
            Manifest::default()
        );
    }
}
