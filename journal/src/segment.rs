//! Archive segments: history sealed out of sled.
//!
//! sled's open time grows with the number of pages its database has ever held (it loads a
//! page-table entry per page), so a journal that kept its whole life in one sled database would
//! recover more slowly the longer it ran. At a checkpoint the journal therefore *rotates* (see
//! `rotate.rs`): the records up to the checkpoint are sealed into one immutable segment file
//! here, and sled goes on in a fresh generation holding only the checkpoint and what follows.
//! Recovery opens only that generation; audits, `verify` and reads of old records read the
//! segments as well.
//!
//! A segment is `archive/<first seq:020>-<last seq:020>.seg`: [`MAGIC`], then for every record
//! in sequence order `u32 LE length ‖ stored bytes` — exactly the bytes sled held, so each
//! record keeps its own check and its hash link to the record before it. It is written under a
//! `.tmp` name, fsynced, renamed and the directory fsynced: a segment is complete or absent.
//!
//! Which segments exist is not taken from the directory listing: the manifest (see
//! `manifest.rs`) names every segment sealed and not pruned, so a deleted segment is a named
//! loss and a stray file is reported, not read.

use crate::error::JournalError;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The directory (inside the journal directory) holding sealed segments.
pub const ARCHIVE_DIR: &str = "archive";
/// The first bytes of every segment file (the last byte is the format version).
pub const MAGIC: &[u8; 8] = b"LLSEG\0\0\x01";
const SUFFIX: &str = ".seg";
const TMP_SUFFIX: &str = ".seg.tmp";

/// A sealed segment: which records it holds and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Sequence number of its first record.
    pub first: u64,
    /// Sequence number of its last record.
    pub last: u64,
    /// The segment file.
    pub path: PathBuf,
}

fn file_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}{SUFFIX}")
}

/// Where the segment holding `first..=last` of the journal in `journal_dir` is kept.
pub(crate) fn info(journal_dir: &Path, first: u64, last: u64) -> SegmentInfo {
    SegmentInfo {
        first,
        last,
        path: journal_dir.join(ARCHIVE_DIR).join(file_name(first, last)),
    }
}

/// The (first, last) sequence numbers a segment file name claims, if it is one.
pub(crate) fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (a, b) = stem.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return None;
    }
    let (first, last) = (a.parse().ok()?, b.parse().ok()?);
    (first >= 1 && first <= last).then_some((first, last))
}

/// The sealed segments of the journal in `journal_dir`, oldest first. Removes leftovers of a
/// seal that was interrupted before its rename (never the only copy of anything: the sled
/// generation that was being sealed still holds those records). Files that are not segments are
/// left alone and ignored.
pub(crate) fn list(journal_dir: &Path) -> Result<Vec<SegmentInfo>, JournalError> {
    let dir = journal_dir.join(ARCHIVE_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(JournalError::io(&dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io(&dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(TMP_SUFFIX) {
            let p = entry.path();
            std::fs::remove_file(&p).map_err(|e| JournalError::io(&p, e))?;
            continue;
        }
        if let Some((first, last)) = parse_name(&name) {
            out.push(SegmentInfo {
                first,
                last,
                path: entry.path(),
            });
        }
    }
    out.sort_by_key(|s| (s.first, s.last));
    Ok(out)
}

/// Seals `records` (consecutive, starting at `first`) into a segment file and makes it durable
/// (file and directory fsynced) before returning.
pub(crate) fn write<I, B>(
    journal_dir: &Path,
    first: u64,
    records: I,
) -> Result<SegmentInfo, JournalError>
where
    I: IntoIterator<Item = Result<(u64, B), JournalError>>,
    B: AsRef<[u8]>,
{
    let dir = journal_dir.join(ARCHIVE_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| JournalError::io(&dir, e))?;
    let mut buf = Vec::with_capacity(1 << 20);
    buf.extend_from_slice(MAGIC);
    let mut expect = first;
    for item in records {
        let (seq, bytes) = item?;
        if seq != expect {
            return Err(JournalError::corrupt(
                expect,
                format!("cannot seal: record {expect} is missing (found {seq})"),
            ));
        }
        let bytes = bytes.as_ref();
        let len = u32::try_from(bytes.len())
            .map_err(|_| JournalError::corrupt(seq, "record too large to seal"))?;
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(bytes);
        expect += 1;
    }
    if expect == first {
        return Err(JournalError::Internal(
            "cannot seal an empty segment".into(),
        ));
    }
    let last = expect - 1;
    let path = dir.join(file_name(first, last));
    let tmp = dir.join(format!("{first:020}-{last:020}{TMP_SUFFIX}"));
    const SEAL: &str = "sealing a segment";
    let mut f = File::create(&tmp).map_err(|e| JournalError::storage_io(SEAL, &tmp, e))?;
    crate::faults::check(crate::faults::Site::SegmentWrite)
        .and_then(|()| f.write_all(&buf))
        .and_then(|()| f.sync_all())
        .map_err(|e| JournalError::storage_io(SEAL, &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| JournalError::storage_io(SEAL, &path, e))?;
    sync_dir(&dir)?;
    Ok(SegmentInfo { first, last, path })
}

/// Deletes sealed segments (pruning) and makes the deletion durable.
pub(crate) fn remove(journal_dir: &Path, segs: &[SegmentInfo]) -> Result<(), JournalError> {
    for s in segs {
        match std::fs::remove_file(&s.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(JournalError::io(&s.path, e)),
        }
    }
    sync_dir(&journal_dir.join(ARCHIVE_DIR))
}

/// fsyncs a directory, so the names created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io(dir, e))
}

/// The largest segment file read (far above what `segment_records` records make: the bound only
/// stops a hostile file from being read without end).
const MAX_SEGMENT_BYTES: u64 = 4 << 30;

/// A segment read into memory, walked frame by frame.
pub(crate) struct Loaded {
    pub info: SegmentInfo,
    pub bytes: Arc<Vec<u8>>,
}

impl Loaded {
    /// Reads a whole segment file and checks its magic.
    pub fn read(info: &SegmentInfo) -> Result<Loaded, JournalError> {
        // A regular file only (never a FIFO or a device: see `safe_fs`); its size bounds the read.
        let bytes =
            crate::safe_fs::read_regular(&info.path, MAX_SEGMENT_BYTES)?.ok_or_else(|| {
                JournalError::corrupt(
                    info.first,
                    format!(
                        "records {}..={} are missing: segment {} is gone",
                        info.first,
                        info.last,
                        info.path.display()
                    ),
                )
            })?;
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC[..] {
            return Err(JournalError::corrupt(
                info.first,
                format!("segment {} has no segment header", info.path.display()),
            ));
        }
        Ok(Loaded {
            info: info.clone(),
            bytes: Arc::new(bytes),
        })
    }

    /// A cursor at the segment's first record.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            bytes: self.bytes.clone(),
            info: self.info.clone(),
            next_seq: self.info.first,
            offset: MAGIC.len(),
        }
    }
}

/// Walks the frames of a loaded segment.
pub(crate) struct Cursor {
    bytes: Arc<Vec<u8>>,
    info: SegmentInfo,
    next_seq: u64,
    offset: usize,
}

/// One record's stored bytes inside a loaded segment.
#[derive(Clone)]
pub(crate) struct Frame {
    pub bytes: Arc<Vec<u8>>,
    pub start: usize,
    pub end: usize,
}

impl Frame {
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }
}

impl Cursor {
    /// The next frame as (sequence number, frame); `None` after the last record the file name
    /// claims. A frame that does not fit, or bytes left over, are `Corrupt` at that record.
    pub fn next_frame(&mut self) -> Option<Result<(u64, Frame), JournalError>> {
        let seq = self.next_seq;
        let total = self.bytes.len();
        if seq > self.info.last {
            if self.offset != total {
                self.offset = total;
                return Some(Err(JournalError::corrupt(
                    self.info.last,
                    format!(
                        "segment {} has bytes after its last record",
                        self.info.path.display()
                    ),
                )));
            }
            return None;
        }
        let bad = |what: &str| {
            Some(Err(JournalError::corrupt(
                seq,
                format!("segment {}: {what}", self.info.path.display()),
            )))
        };
        let Some(len_end) = self.offset.checked_add(4).filter(|e| *e <= total) else {
            self.next_seq = self.info.last.saturating_add(1);
            self.offset = total;
            return bad("truncated before this record");
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.bytes[self.offset..len_end]);
        let len = u32::from_le_bytes(len) as usize;
        let Some(end) = len_end.checked_add(len).filter(|e| *e <= total) else {
            self.next_seq = self.info.last.saturating_add(1);
            self.offset = total;
            return bad("record length runs past the end of the file");
        };
        self.offset = end;
        self.next_seq = seq.saturating_add(1);
        Some(Ok((
            seq,
            Frame {
                bytes: self.bytes.clone(),
                start: len_end,
                end,
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_lookalikes() {
        assert_eq!(parse_name(&file_name(1, 10_000)), Some((1, 10_000)));
        assert_eq!(
            parse_name("00000000000000000005-00000000000000000004.seg"),
            None
        );
        assert_eq!(
            parse_name("00000000000000000000-00000000000000000004.seg"),
            None
        );
        assert_eq!(parse_name("1-4.seg"), None);
        assert_eq!(parse_name(&format!("{}.tmp", file_name(1, 2))), None);
    }

    #[test]
    fn write_list_read_round_trip_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<(u64, Vec<u8>)> =
            (5..=9u64).map(|s| (s, vec![s as u8; s as usize])).collect();
        let info = write(dir.path(), 5, recs.iter().cloned().map(Ok)).unwrap();
        assert_eq!((info.first, info.last), (5, 9));
        std::fs::write(dir.path().join(ARCHIVE_DIR).join("x.seg.tmp"), b"junk").unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![info.clone()]);
        assert!(!dir.path().join(ARCHIVE_DIR).join("x.seg.tmp").exists());
        let loaded = Loaded::read(&info).unwrap();
        let mut c = loaded.cursor();
        for (seq, b) in &recs {
            let (s, f) = c.next_frame().unwrap().unwrap();
            assert_eq!((s, f.as_slice()), (*seq, &b[..]));
        }
        assert!(c.next_frame().is_none());
        // A truncated file names the record it cuts.
        let full = std::fs::read(&info.path).unwrap();
        std::fs::write(&info.path, &full[..full.len() - 3]).unwrap();
        let loaded = Loaded::read(&info).unwrap();
        let mut c = loaded.cursor();
        for _ in 0..4 {
            c.next_frame().unwrap().unwrap();
        }
        match c.next_frame() {
            Some(Err(JournalError::Corrupt { seq: Some(9), .. })) => {}
            other => panic!(
                "expected Corrupt at 9, got {:?}",
                other.map(|r| r.map(|x| x.0))
            ),
        }
        assert!(c.next_frame().is_none());
    }

    #[test]
    fn gaps_are_refused_when_sealing() {
        let dir = tempfile::tempdir().unwrap();
        let recs = vec![Ok((1u64, vec![1u8])), Ok((3u64, vec![3u8]))];
        assert!(matches!(
            write(dir.path(), 1, recs),
            Err(JournalError::Corrupt { seq: Some(2), .. })
        ));
    }
}
