//! Resumable audit streams: a cursor is the head of what a reader has seen (the sequence number
//! of the last record read and its chain hash, `SEQ:HASH`, the same form as `verify`'s head and
//! `--expect-head`). Resuming after a cursor first checks that the record there still carries
//! that hash, so a shipper notices a journal replaced, restored from an older copy, or pruned
//! past its position, instead of silently skipping or repeating records.

use lunledger::cli::fail::CliError;
use lunledger::journal::{Head, JournalReader};
use std::path::Path;

/// The cursor after `seq` in `journal` (`None` for an empty journal).
pub fn at(journal: &JournalReader, seq: u64) -> Result<Option<Head>, CliError> {
    if seq == 0 {
        return Ok(None);
    }
    let hash = journal
        .stored_hash(seq)
        .map_err(|e| CliError::io("reading the journal copy", e))?;
    Ok(hash.map(|hash| Head { seq, hash }))
}

/// Parses a cursor given on the command line or read from a file.
pub fn parse(text: &str, from: &str) -> Result<Head, CliError> {
    text.trim()
        .parse::<Head>()
        .map_err(|e| CliError::Usage(format!("{from}: not a cursor: {e}")))
}

/// Why the journal cannot be resumed after `cursor`, if it cannot.
pub fn check(journal: &JournalReader, cursor: &Head) -> Result<Option<String>, CliError> {
    let why = journal
        .check_anchor(cursor)
        .map_err(|e| CliError::io("reading the journal copy", e))?;
    Ok(why.map(|w| format!("cannot resume after cursor {cursor}: {w}")))
}

/// Reads a cursor file: `None` when it does not exist or is empty (start from the beginning).
pub fn read_file(path: &Path) -> Result<Option<Head>, CliError> {
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().is_empty() => Ok(None),
        Ok(t) => parse(&t, &path.display().to_string()).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::io(format!("reading {}", path.display()), e)),
    }
}

/// Replaces a cursor file atomically (a temporary file beside it, renamed over it), so a reader
/// killed meanwhile leaves the old cursor or the new one, never half of one.
pub fn write_file(path: &Path, cursor: &Head) -> Result<(), CliError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{cursor}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| CliError::io(format!("writing cursor file {}", path.display()), e))
}
