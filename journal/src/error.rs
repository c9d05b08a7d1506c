//! The journal's typed errors.

use std::path::PathBuf;
use thiserror::Error;

/// Everything that can go wrong in the journal. Every variant says what and, where it is known,
/// where (the directory, or the sequence number of the record involved).
#[derive(Debug, Error)]
pub enum JournalError {
    /// Another `Journal` (in this or another process) holds the directory's lock.
    #[error("journal directory {dir} is in use by {}", fmt_holder(*pid))]
    InUse {
        /// The journal directory.
        dir: PathBuf,
        /// The holder's process id, when the system tells (Linux: `/proc/locks`).
        pid: Option<u32>,
    },
    /// An entry of the journal directory is not what the journal keeps there (a FIFO, device or
    /// symlink where a regular file belongs, a file far larger than its kind, a name that is not
    /// a plain generation name): refused instead of read, followed or written.
    #[error("{path} {what}")]
    BadEntry {
        /// The entry.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A record was written by a newer build with a schema this build does not know.
    #[error("record schema {found} is newer than the supported schema {supported}")]
    NewerSchema {
        /// Schema version found in the record.
        found: u16,
        /// Newest schema version this build reads.
        supported: u16,
    },
    /// Stored data is damaged: a checksum mismatch, a broken hash chain, a gap, a key that does not
    /// match its record, or a checkpoint that does not match its record.
    #[error("journal corrupt{}: {what}", fmt_seq(*seq))]
    Corrupt {
        /// Sequence number of the damaged record, when known.
        seq: Option<u64>,
        /// What is wrong.
        what: String,
    },
    /// A record's bytes passed their checksum but could not be decoded.
    #[error("cannot decode record{}: {what}", fmt_seq(*seq))]
    Decode {
        /// Sequence number of the record, when known (never known to the pure [`crate::decode_record`]).
        seq: Option<u64>,
        /// The decoder's message.
        what: String,
    },
    /// An I/O error outside sled (the lock file, the data file sync, the directory).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A sled generation was retired (its records moved on by a rotation) while a reader copied
    /// it; copying again finds the new one.
    #[error("sled generation {path} was retired while it was read")]
    Retired {
        /// The generation's directory.
        path: PathBuf,
    },
    /// The journal's storage failed while it wrote or synced (a full disk, an I/O error, a
    /// read-only filesystem): the journal stopped (fail-stop). What was acknowledged as durable
    /// before is kept; reopen once the fault is gone.
    #[error("{source} while {action} in {path}")]
    Storage {
        /// What the journal was doing ("flushing the journal", "sealing a segment", ...).
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An error reported by sled.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// The journal was halted (the crash-simulation test hook, or a failed write): nothing more is
    /// appended or made durable by this handle.
    #[error("journal halted")]
    Halted,
    /// The journal's writer has stopped (the journal is shutting down).
    #[error("journal closed")]
    Closed,
    /// A wait for a sequence number that was never assigned (it would never complete).
    #[error("sequence number {seq} was never assigned (last assigned is {last})")]
    NotAssigned {
        /// The sequence number asked for.
        seq: u64,
        /// The last assigned sequence number.
        last: u64,
    },
    /// A checkpoint was asked for at a sequence number that holds no stored record.
    #[error("no stored record at seq {seq} to checkpoint")]
    NoSuchRecord {
        /// The sequence number asked for.
        seq: u64,
    },
    /// Records that were durable are missing: damage inside sled's files made it recover a
    /// shorter log, a sealed segment the manifest names is gone, or the records end below the
    /// durable watermark or the newest checkpoint. Refused unless
    /// [`crate::JournalOptions::accept_lost_records`] is set.
    #[error("records {first}..={durable} were durable but are missing or damaged (the journal's files were damaged); open with accept_lost_records to go on without them")]
    LostRecords {
        /// The first missing or damaged sequence number.
        first: u64,
        /// The highest sequence number the journal had made durable.
        durable: u64,
    },
    /// A failure inside sled or the writer that surfaced as a panic; caught and reported instead.
    #[error("internal failure: {0}")]
    Internal(String),
}

/// sled passes some OS errors on wrapped in another `io::Error` whose message is the first one's
/// `Debug` text; this recovers the OS error itself, so its number and message read as usual.
fn plain_os_error(e: std::io::Error) -> std::io::Error {
    if e.raw_os_error().is_some() {
        return e;
    }
    if let Some(code) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error)
    {
        return std::io::Error::from_raw_os_error(code);
    }
    let text = e.to_string();
    let code = text
        .split_once("code: ")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<i32>().ok());
    match code {
        Some(code) if text.starts_with("Os {") => std::io::Error::from_raw_os_error(code),
        _ => e,
    }
}

fn fmt_holder(pid: Option<u32>) -> String {
    match pid {
        Some(p) => format!("process {p}"),
        None => "another process or handle".to_string(),
    }
}

fn fmt_seq(seq: Option<u64>) -> String {
    match seq {
        Some(s) => format!(" at seq {s}"),
        None => String::new(),
    }
}

impl JournalError {
    /// Attaches a sequence number to a `Corrupt` or `Decode` error that has none.
    pub fn at_seq(self, at: u64) -> JournalError {
        match self {
            JournalError::Corrupt { seq: None, what } => JournalError::Corrupt {
                seq: Some(at),
                what,
            },
            JournalError::Decode { seq: None, what } => JournalError::Decode {
                seq: Some(at),
                what,
            },
            other => other,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: path.into(),
            source,
        }
    }

    /// A storage failure while doing `action` on `path`: sled's I/O errors (and its injected
    /// failpoints) become [`JournalError::Storage`]; its other errors stay [`JournalError::Sled`].
    pub(crate) fn storage(action: &'static str, path: &std::path::Path, e: sled::Error) -> Self {
        let source = match e {
            sled::Error::Io(io) => plain_os_error(io),
            #[cfg(feature = "testing")]
            sled::Error::FailPoint => std::io::Error::other("injected sled failpoint"),
            other => return JournalError::Sled(other),
        };
        JournalError::Storage {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// A storage failure of the journal's own file I/O.
    pub(crate) fn storage_io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        JournalError::Storage {
            action,
            path: path.into(),
            source,
        }
    }

    /// The OS error number of a storage failure, if it is one.
    pub fn os_error(&self) -> Option<i32> {
        match self {
            JournalError::Storage { source, .. } | JournalError::Io { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }

    pub(crate) fn corrupt(seq: impl Into<Option<u64>>, what: impl Into<String>) -> JournalError {
        JournalError::Corrupt {
            seq: seq.into(),
            what: what.into(),
        }
    }
}
