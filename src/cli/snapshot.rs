//! Read-only access to a journal for the audit commands: the journal library's private copy
//! ([`crate::journal::open_read_only`]), guarded so that a command stopped by a signal removes it.

use crate::cli::fail::CliError;
use crate::journal::{open_read_only, Provenance, ReadOnlyJournal, ReadOnlyOptions};
use crate::journal::{JournalError, JournalReader};
use std::mem::ManuallyDrop;
use std::path::Path;

/// An opened private copy of a journal; removed when dropped.
#[derive(Debug)]
pub struct Snapshot {
    // Dropped by hand: the copy is removed first, then forgotten by the signal guard, so a
    // signal in between still finds it to remove.
    inner: ManuallyDrop<ReadOnlyJournal>,
}

impl Snapshot {
    /// The opened copy.
    pub fn journal(&self) -> &JournalReader {
        self.inner().journal()
    }

    /// A line for people saying what was audited, when it is not simply the journal at rest,
    /// and what the copy left out.
    pub fn banner(&self) -> Option<String> {
        let mut lines = Vec::new();
        if let Provenance::LiveCopy { pid } = self.inner().provenance() {
            lines.push(format!(
                "note: auditing a point-in-time copy of live journal {} (in use by {})",
                self.inner().source().display(),
                pid.map(|p| format!("pid {p}"))
                    .unwrap_or_else(|| "a running process".into())
            ));
        }
        for left in &self.inner().copy_report().left_out {
            lines.push(format!(
                "note: {} was not read: it is {}",
                left.path.display(),
                left.why
            ));
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

impl Snapshot {
    fn inner(&self) -> &ReadOnlyJournal {
        &self.inner
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let dir = self.inner.private_dir().to_path_buf();
        // SAFETY: dropped exactly once, here; `self.inner` is not used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.inner) };
        crate::cli::interrupt::release_private_dir(&dir);
    }
}

/// Copies `dir` into a private directory (in `work_dir`, default TMPDIR) and opens the copy.
/// `allow_live`: `--copy`.
pub fn open(dir: &Path, allow_live: bool, work_dir: Option<&Path>) -> Result<Snapshot, CliError> {
    let opts = ReadOnlyOptions {
        allow_live,
        work_dir: work_dir.map(Path::to_path_buf),
    };
    let inner = open_read_only(dir, &opts, &mut |p| {
        crate::cli::interrupt::guard_private_dir(p)
    })
    .map_err(|e| match e {
        JournalError::InUse { dir, pid } => CliError::InUse { dir, pid },
        e if e.os_error().is_none() => {
            CliError::Io(format!("auditing journal {}: {e}", dir.display()))
        }
        e => {
            // Where the copy went, so a full temporary directory is told apart from a
            // problem of the journal's own.
            let into = work_dir
                .map(|d| format!("{} (--work-dir)", d.display()))
                .unwrap_or_else(|| format!("{} (TMPDIR)", std::env::temp_dir().display()));
            let hint = match e.os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EROFS) => {
                    "; name a directory with room with --work-dir"
                }
                _ => "",
            };
            CliError::Io(format!(
                "auditing journal {} through a private copy in {into}: {e}{hint}",
                dir.display()
            ))
        }
    })?;
    Ok(Snapshot {
        inner: ManuallyDrop::new(inner),
    })
}

/// The history of the copy up to `to` (see [`crate::audit::load_history`]), with a progress bar
/// on a terminal.
pub fn history(snap: &Snapshot, to: Option<u64>) -> Result<crate::audit::History, CliError> {
    let mut bar = crate::cli::progress::Bar::new("reading");
    crate::audit::load_history(snap.journal(), to, &mut bar)
        .map_err(|e| CliError::Io(e.to_string()))
}
