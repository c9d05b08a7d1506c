//! Read-only access to a journal: every command works on a private copy, never on the journal
//! itself, because `Journal::open` takes an exclusive lock and may repair a torn tail — neither
//! may ever touch a journal a shim owns.
//!
//! Normally the journal's lock file is probed with a non-blocking `flock`; if a running process
//! holds it the command stops with a clear error (exit 2). Otherwise a shared `flock` is held
//! while the directory is copied (so no shim can open it half way through the copy), then
//! released, and the copy is opened. `--copy` copies a live journal without the lock: the result
//! is a point-in-time copy, which `Journal::open` may have to repair (only ever in the copy).

use crate::fail::CliError;
use lunledger::journal::lock::LOCK_FILE;
use lunledger::journal::store::{is_journal_dir, CURRENT_FILE, SLED_DATA_FILE, SLED_DIR};
use lunledger::journal::{Journal, JournalOptions};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

/// How the copy was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provenance {
    /// The journal was not in use; the copy was taken under its lock.
    Quiescent,
    /// A running process (pid if known) held the journal: this is a point-in-time copy of a live
    /// journal, taken without the lock.
    LiveCopy {
        /// The holder's pid, when known.
        pid: Option<u32>,
    },
}

/// An opened private copy of a journal. The temporary directory goes when this is dropped.
pub struct Snapshot {
    /// The opened copy.
    pub journal: Journal,
    /// The directory the copy was taken from.
    pub source: PathBuf,
    /// How the copy was taken.
    pub provenance: Provenance,
    // Dropped after `journal` (field order), so sled closes before its files go.
    _tmp: TempDir,
}

impl Snapshot {
    /// A line for people saying what was audited, when it is not simply the journal at rest.
    pub fn banner(&self) -> Option<String> {
        match &self.provenance {
            Provenance::Quiescent => None,
            Provenance::LiveCopy { pid } => Some(format!(
                "note: auditing a point-in-time copy of live journal {} (in use by {})",
                self.source.display(),
                pid.map(|p| format!("pid {p}"))
                    .unwrap_or_else(|| "a running process".into())
            )),
        }
    }
}

/// Copies `dir` (see the module docs) and opens the copy. `allow_live`: `--copy`.
pub fn open(dir: &Path, allow_live: bool) -> Result<Snapshot, CliError> {
    if !is_journal_dir(dir) {
        return Err(CliError::Io(format!(
            "{} is not a lunledger journal directory (no {CURRENT_FILE} or {SLED_DIR}/ inside)",
            dir.display()
        )));
    }
    let tmp = tempfile::Builder::new()
        .prefix("lunledger-audit-")
        .tempdir()
        .map_err(|e| CliError::io("creating a temporary directory", e))?;
    let copy = tmp.path().join("journal");
    // With --copy a busy lock is fine at once; without, it must stay busy to count.
    let probe = if allow_live {
        probe_lock(dir)?
    } else {
        probe_lock_patiently(dir)?
    };
    let provenance = match probe {
        Probe::Held(lock) => {
            copy_journal(dir, &copy)?;
            drop(lock);
            Provenance::Quiescent
        }
        Probe::Busy { pid } if allow_live => {
            let options = audit_options();
            // A live journal may rotate while it is copied and retire the generation being
            // copied (see `copy_journal`): then the copy is taken again, a few times.
            let mut attempt = 0;
            let journal = loop {
                attempt += 1;
                let _ = fs::remove_dir_all(&copy);
                let res = copy_journal(dir, &copy).and_then(|()| {
                    Journal::open(&copy, options.clone()).map_err(|e| {
                        CliError::Io(format!("opening a copy of journal {}: {e}", dir.display()))
                    })
                });
                match res {
                    Ok(j) => break j,
                    Err(e) if attempt >= 10 => return Err(e),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            return Ok(Snapshot {
                journal,
                source: dir.to_path_buf(),
                provenance: Provenance::LiveCopy { pid },
                _tmp: tmp,
            });
        }
        Probe::Busy { pid } => {
            return Err(CliError::InUse {
                dir: dir.to_path_buf(),
                pid,
            })
        }
    };
    let journal = Journal::open(&copy, audit_options())
        .map_err(|e| CliError::Io(format!("opening a copy of journal {}: {e}", dir.display())))?;
    Ok(Snapshot {
        journal,
        source: dir.to_path_buf(),
        provenance,
        _tmp: tmp,
    })
}

enum Probe {
    /// We hold a shared lock (or there is no lock file, so nobody ever opened the journal).
    Held(Option<File>),
    /// Someone holds it.
    Busy { pid: Option<u32> },
}

/// How many times, and how far apart, a busy lock is probed before the journal counts as in use.
const PROBES: u32 = 5;
const PROBE_GAP: Duration = Duration::from_millis(100);

/// Probes the lock, retrying a busy one for a moment: a running shim holds it for good, but a
/// lock can also be held for an instant by a process closing its journal, or by a child forked
/// (and not yet exec'd) by a process that had the journal open.
fn probe_lock_patiently(dir: &Path) -> Result<Probe, CliError> {
    let mut probe = probe_lock(dir)?;
    for _ in 1..PROBES {
        if !matches!(probe, Probe::Busy { .. }) {
            break;
        }
        std::thread::sleep(PROBE_GAP);
        probe = probe_lock(dir)?;
    }
    Ok(probe)
}

fn probe_lock(dir: &Path) -> Result<Probe, CliError> {
    let path = dir.join(LOCK_FILE);
    // Opened read-only, and never created: the audit must not change the journal directory.
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Probe::Held(None)),
        Err(e) => return Err(CliError::io(format!("opening {}", path.display()), e)),
    };
    // SAFETY: flock on a valid, owned descriptor has no memory-safety preconditions.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Probe::Held(Some(file)));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        let pid = file
            .metadata()
            .ok()
            .and_then(|m| lock_holder(m.dev(), m.ino()));
        return Ok(Probe::Busy { pid });
    }
    Err(CliError::io(format!("locking {}", path.display()), err))
}

/// The pid holding an flock on the file (`dev`, `ino`), from /proc/locks (Linux), if it says.
fn lock_holder(dev: u64, ino: u64) -> Option<u32> {
    let text = fs::read_to_string("/proc/locks").ok()?;
    let me = std::process::id();
    // Linux's encoding of a dev_t (see major(3)); /proc/locks prints both numbers in hex.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    text.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 12345 fd:01:1234567 0 EOF" (waiters have "->" after "1:").
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] != "FLOCK" {
            return None;
        }
        let pid: u32 = f[4].parse().ok()?;
        let mut id = f[5].split(':');
        let maj = u64::from_str_radix(id.next()?, 16).ok()?;
        let min = u64::from_str_radix(id.next()?, 16).ok()?;
        let file_ino: u64 = id.next()?.parse().ok()?;
        // Inode numbers repeat across filesystems: the device must match too.
        (maj == major && min == minor && file_ino == ino && pid != me).then_some(pid)
    })
}

/// How an audit opens its private copy.
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

/// Copies a journal directory so that the copy is one journal even when a live shim rotates
/// meanwhile: `CURRENT` first, then the sled generation it names (a rotation that commits later
/// leaves that generation in place until it is retired), then everything else but the lock and
/// other generations. Segments sealed after the generation was copied repeat records the copy's
/// generation holds; opening the copy drops them. If the generation is retired (removed) while
/// it is copied, the copy fails and is taken again.
fn copy_journal(from: &Path, to: &Path) -> Result<(), CliError> {
    fs::create_dir_all(to).map_err(|e| CliError::io(format!("creating {}", to.display()), e))?;
    let current = from.join(CURRENT_FILE);
    let gen = match fs::read_to_string(&current) {
        Ok(name) => {
            fs::write(to.join(CURRENT_FILE), &name)
                .map_err(|e| CliError::io(format!("copying {}", current.display()), e))?;
            name.trim().to_string()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SLED_DIR.to_string(),
        Err(e) => return Err(CliError::io(format!("reading {}", current.display()), e)),
    };
    let gen_src = from.join(&gen);
    copy_tree(&gen_src, &to.join(&gen), &|_| false)?;
    if !gen_src.join(SLED_DATA_FILE).is_file() || !to.join(&gen).join(SLED_DATA_FILE).is_file() {
        return Err(CliError::Io(format!(
            "{} was retired while it was copied",
            gen_src.display()
        )));
    }
    // Everything else but the lock and the sled generations (the copied one is done).
    copy_tree(from, to, &|name| {
        name == LOCK_FILE || name == CURRENT_FILE || name.to_string_lossy().starts_with(SLED_DIR)
    })
}

/// Copies one regular file; one that vanished meanwhile (a live sled removes old snapshots) is
/// skipped.
fn copy_file(src: &Path, dst: &Path) -> Result<(), CliError> {
    match fs::copy(src, dst) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CliError::io(format!("copying {}", src.display()), e)),
    }
}

/// Copies a directory tree (regular files and directories), leaving out the top-level entries
/// `skip` names.
fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&OsStr) -> bool) -> Result<(), CliError> {
    fs::create_dir_all(to).map_err(|e| CliError::io(format!("creating {}", to.display()), e))?;
    let entries =
        fs::read_dir(from).map_err(|e| CliError::io(format!("reading {}", from.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| CliError::io(format!("reading {}", from.display()), e))?;
        let name = entry.file_name();
        if skip(&name) {
            continue;
        }
        let src = entry.path();
        let dst = to.join(&name);
        let ty = entry
            .file_type()
            .map_err(|e| CliError::io(format!("inspecting {}", src.display()), e))?;
        if ty.is_dir() {
            copy_tree(&src, &dst, &|_| false)?;
        } else if ty.is_file() {
            copy_file(&src, &dst)?;
        }
    }
    Ok(())
}
