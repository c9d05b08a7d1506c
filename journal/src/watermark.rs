//! The durable watermark: after every flush the writer records, in a small file beside sled's,
//! the highest sequence number it made durable. sled recovers a damaged log by silently keeping
//! the prefix before the damage; the watermark is what lets `open` tell "a torn tail beyond the
//! last flush" (expected after a crash: quarantine it and go on) from "records that were durable
//! are gone" (refuse, with a typed error, unless the caller accepts the loss).
//!
//! The file holds one fixed-width line, `lunledger-durable <seq:020> <check:016x>\n`, where
//! `check` is the first 8 bytes of blake3 over `lunledger-durable <seq:020>`, rewritten in place
//! with one `pwrite`; it is written after the flush it describes, so it never claims more than
//! was durable (it may lag by one flush). Journals written before the check have the line
//! without it (`lunledger-durable <seq:020>\n`): still read, and rewritten in the new form at the
//! next flush.
//!
//! The watermark is one of several lower bounds on what must be stored (the newest checkpoint
//! and the last sealed segment are the others; see `Journal::open`). A watermark that is
//! missing, empty, unreadable or fails its check on a journal that has records is itself a
//! finding ([`crate::OpenReport::watermark`], and `verify`), because then a lost tail can go
//! unnoticed.

use crate::error::JournalError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The watermark file's name inside the journal directory.
pub const WATERMARK_FILE: &str = "durable-watermark";
const PREFIX: &str = "lunledger-durable ";

/// What the watermark file held when the journal was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mark {
    /// No file, or an empty one (a journal never flushed, or a removed or emptied watermark).
    Absent,
    /// A value that passed its check (or was written in the older, unchecked form).
    Value(u64),
    /// Unreadable, or failing its check: what is wrong.
    Bad(String),
}

pub(crate) struct Watermark {
    file: File,
}

fn check(body: &str) -> String {
    let h = blake3::hash(body.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    format!("{:016x}", u64::from_be_bytes(b))
}

/// The line recording `seq` (fixed width: 56 bytes).
pub(crate) fn line(seq: u64) -> String {
    let body = format!("{PREFIX}{seq:020}");
    let c = check(&body);
    format!("{body} {c}\n")
}

/// Parses the watermark file's contents.
pub(crate) fn parse(bytes: &[u8]) -> Mark {
    if bytes.is_empty() {
        return Mark::Absent;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Mark::Bad("the durable watermark is not text".into());
    };
    let Some(l) = text.lines().next() else {
        return Mark::Bad("the durable watermark is blank".into());
    };
    let Some(rest) = l.strip_prefix(PREFIX) else {
        return Mark::Bad(format!("the durable watermark is unreadable ({l:?})"));
    };
    let (digits, sum) = match rest.split_once(' ') {
        Some((d, s)) => (d, Some(s)),
        None => (rest, None),
    };
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Mark::Bad(format!("the durable watermark is unreadable ({l:?})"));
    }
    let Ok(seq) = digits.parse::<u64>() else {
        return Mark::Bad(format!("the durable watermark is unreadable ({l:?})"));
    };
    match sum {
        // The older form, without a check.
        None => Mark::Value(seq),
        Some(s) if s == check(&format!("{PREFIX}{digits}")) => Mark::Value(seq),
        Some(_) => Mark::Bad(format!(
            "the durable watermark ({seq}) fails its checksum: it was changed"
        )),
    }
}

impl Watermark {
    /// Opens (or creates) the watermark; returns it with what it held.
    pub(crate) fn open(dir: &Path) -> Result<(Watermark, Mark), JournalError> {
        let path: PathBuf = dir.join(WATERMARK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| JournalError::io(&path, e))?;
        let mut buf = vec![0u8; 128];
        let n = file
            .read_at(&mut buf, 0)
            .map_err(|e| JournalError::io(&path, e))?;
        let mark = parse(&buf[..n]);
        if let Mark::Bad(what) = &mark {
            tracing::warn!(path = %path.display(), %what, "bad durable watermark; lost records may go undetected this time");
        }
        Ok((Watermark { file }, mark))
    }

    /// Records that everything up to `seq` is durable: one `pwrite` of a fixed-width line, so a
    /// rewrite in place never leaves a longer old value's bytes behind.
    pub(crate) fn record(&self, seq: u64) -> std::io::Result<()> {
        crate::faults::check(crate::faults::Site::Watermark)?;
        self.file.write_all_at(line(seq).as_bytes(), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_changes_are_caught() {
        for seq in [0, 1, 10, u64::MAX] {
            let l = line(seq);
            assert_eq!(l.len(), 56);
            assert_eq!(parse(l.as_bytes()), Mark::Value(seq));
        }
        assert_eq!(
            parse(b"lunledger-durable 00000000000000000007\n"),
            Mark::Value(7)
        );
        assert_eq!(parse(b""), Mark::Absent);
        let forged = line(10).replacen("00000000000000000010", "00000000000000000004", 1);
        assert!(matches!(parse(forged.as_bytes()), Mark::Bad(w) if w.contains("checksum")));
        assert!(matches!(parse(b"\xff\xfe"), Mark::Bad(_)));
        assert!(matches!(parse(b"lunledger-durable 12\n"), Mark::Bad(_)));
        assert!(matches!(parse(b"\n"), Mark::Bad(_)));
    }
}
