//! Reading a journal without changing it: a private copy, opened.
//!
//! [`Journal::open`] takes the directory's exclusive lock and may repair a torn tail; neither may
//! happen to a journal a shim owns or an auditor inspects. So a reader copies the directory
//! ([`crate::copy`]) into a private temporary directory and opens the copy. Normally the copy is
//! taken under a shared lock (no writer can open the journal half way through it). A journal in
//! use by a writer is refused with [`JournalError::InUse`], unless the reader asks for a
//! point-in-time copy of the live journal ([`ReadOnlyOptions::allow_live`]).
//!
//! The temporary directory is removed when the [`ReadOnlyJournal`] is dropped; a process that is
//! stopped by a signal can remove it through [`ReadOnlyJournal::private_dir`].

use crate::copy::{copy_journal, CopyReport};
use crate::error::JournalError;
use crate::lock::SharedLock;
use crate::options::JournalOptions;
use crate::reader::JournalReader;
use crate::store::Journal;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a read-only journal is taken.
#[derive(Clone, Debug, Default)]
pub struct ReadOnlyOptions {
    /// Copy a journal that a writer holds, without its lock (a point-in-time copy).
    pub allow_live: bool,
    /// Where the private copy goes (default: the system's temporary directory, `TMPDIR`).
    pub work_dir: Option<PathBuf>,
}

/// How the copy was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provenance {
    /// The journal was not in use; the copy was taken under its lock.
    Quiescent,
    /// A writer (pid if known) held the journal: a point-in-time copy of a live journal.
    LiveCopy {
        /// The holder's pid, when known.
        pid: Option<u32>,
    },
}

/// A private copy of a journal, opened. Dropping it closes the copy and removes it.
#[derive(Debug)]
pub struct ReadOnlyJournal {
    journal: JournalReader,
    source: PathBuf,
    provenance: Provenance,
    report: CopyReport,
    // Dropped after `journal` (field order), so sled closes before its files go.
    tmp: tempfile::TempDir,
}

impl ReadOnlyJournal {
    /// The opened copy (read access: the copy is private, and nothing needs to write it).
    pub fn journal(&self) -> &JournalReader {
        &self.journal
    }

    /// The directory the copy was taken from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// How the copy was taken.
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// What the copy left out (special files, symlinks).
    pub fn copy_report(&self) -> &CopyReport {
        &self.report
    }

    /// The private directory holding the copy (removed on drop).
    pub fn private_dir(&self) -> &Path {
        self.tmp.path()
    }
}

/// How many times, and how far apart, a busy lock is probed before the journal counts as in use:
/// a running shim holds it for good, but a process closing its journal, or a child it forked and
/// has not yet exec'd, holds it for an instant.
const PROBES: u32 = 5;
const PROBE_GAP: Duration = Duration::from_millis(100);
/// How often a live copy is retaken when a rotation retires the generation being copied.
const LIVE_ATTEMPTS: u32 = 10;

/// Copies the journal in `dir` into a private directory and opens the copy (see the module docs).
/// `on_private_dir` is called with the private directory as soon as it exists, before anything
/// is copied, so that a caller can remove it should the process be stopped meanwhile.
pub fn open_read_only(
    dir: &Path,
    opts: &ReadOnlyOptions,
    on_private_dir: &mut dyn FnMut(&Path),
) -> Result<ReadOnlyJournal, JournalError> {
    if !crate::active::is_journal_dir(dir) {
        return Err(JournalError::BadEntry {
            path: dir.to_path_buf(),
            what: format!(
                "is not a lunledger journal directory (no {} or {}/ inside)",
                crate::active::CURRENT_FILE,
                crate::active::SLED_DIR
            ),
        });
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix("lunledger-audit-");
    let work = opts.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = builder
        .tempdir_in(&work)
        .map_err(|e| JournalError::io(&work, e))?;
    on_private_dir(tmp.path());
    let copy = tmp.path().join("journal");

    let lock = if opts.allow_live {
        SharedLock::try_acquire(dir)
    } else {
        probe_patiently(dir)
    };
    let (journal, provenance, report) = match lock {
        Ok(lock) => {
            let report = copy_journal(dir, &copy)?;
            drop(lock);
            let journal = Journal::open(&copy, audit_options())?;
            (journal, Provenance::Quiescent, report)
        }
        Err(JournalError::InUse { pid, .. }) if opts.allow_live => {
            let (journal, report) = live_copy(dir, &copy)?;
            (journal, Provenance::LiveCopy { pid }, report)
        }
        Err(e) => return Err(e),
    };
    Ok(ReadOnlyJournal {
        journal: journal.reader(),
        source: dir.to_path_buf(),
        provenance,
        report,
        tmp,
    })
}

/// Copies and opens a journal a writer holds: a rotation may retire the generation being copied,
/// and a copy may catch a half-written rotation that does not open; either is taken again.
fn live_copy(dir: &Path, copy: &Path) -> Result<(Journal, CopyReport), JournalError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        if copy.exists() {
            std::fs::remove_dir_all(copy).map_err(|e| JournalError::io(copy, e))?;
        }
        let res = copy_journal(dir, copy)
            .and_then(|report| Ok((Journal::open(copy, audit_options())?, report)));
        match res {
            Ok(done) => return Ok(done),
            // Refusals of what the directory holds are final; retrying cannot change them.
            Err(e @ JournalError::BadEntry { .. }) => return Err(e),
            Err(e) if attempt >= LIVE_ATTEMPTS => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn probe_patiently(dir: &Path) -> Result<SharedLock, JournalError> {
    let mut probe = SharedLock::try_acquire(dir);
    for _ in 1..PROBES {
        if !matches!(probe, Err(JournalError::InUse { .. })) {
            break;
        }
        std::thread::sleep(PROBE_GAP);
        probe = SharedLock::try_acquire(dir);
    }
    probe
}

/// How a private copy is opened.
fn audit_options() -> JournalOptions {
    // The copy is private: a large page cache is free (sled allocates it only as pages are read)
    // and speeds up reading whatever history is still in sled; opening despite lost durable
    // records lets `verify` report them instead of failing to look.
    JournalOptions {
        cache_capacity: 512 << 20,
        accept_lost_records: true,
        ..JournalOptions::default()
    }
}
