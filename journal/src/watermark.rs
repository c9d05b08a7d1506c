//! The durable watermark: after every flush the writer records, in a small file beside sled's,
//! the highest sequence number it made durable. sled recovers a damaged log by silently keeping
//! the prefix before the damage; the watermark is what lets `open` tell "a torn tail beyond the
//! last flush" (expected after a crash: quarantine it and go on) from "records that were durable
//! are gone" (refuse, with a typed error, unless the caller accepts the loss).
//!
//! The file holds one line, `lunledger-durable <seq>`, rewritten in place; it is written after
//! the flush it describes, so it never claims more than was durable (it may lag by one flush).

use crate::error::JournalError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The watermark file's name inside the journal directory.
pub const WATERMARK_FILE: &str = "durable-watermark";
const PREFIX: &str = "lunledger-durable ";

pub(crate) struct Watermark {
    file: File,
}

impl Watermark {
    /// Opens (or creates) the watermark; returns it with the value it held, if readable.
    pub(crate) fn open(dir: &Path) -> Result<(Watermark, Option<u64>), JournalError> {
        let path: PathBuf = dir.join(WATERMARK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| JournalError::io(&path, e))?;
        let mut buf = vec![0u8; 64];
        let n = file
            .read_at(&mut buf, 0)
            .map_err(|e| JournalError::io(&path, e))?;
        let value = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.lines().next())
            .and_then(|l| l.strip_prefix(PREFIX))
            .and_then(|v| v.trim().parse().ok());
        if n > 0 && value.is_none() {
            tracing::warn!(path = %path.display(), "unreadable durable watermark; lost records cannot be detected this time");
        }
        Ok((Watermark { file }, value))
    }

    /// Records that everything up to `seq` is durable. Fixed-width, so a rewrite in place never
    /// leaves a longer old value's digits behind.
    pub(crate) fn record(&self, seq: u64) -> std::io::Result<()> {
        let line = format!("{PREFIX}{seq:020}\n");
        crate::faults::check(crate::faults::Site::Watermark)?;
        self.file.write_all_at(line.as_bytes(), 0)
    }
}
