//! A private copy of a journal directory, for readers that must never change the journal (the
//! audit commands open the copy, because opening a journal takes its lock and may repair a torn
//! tail).
//!
//! The copy is built from what the journal knows, not from what the directory happens to hold:
//! - `CURRENT` is read as a regular file of a few bytes and must be a plain generation name; the
//!   copy's `CURRENT` is written from the parsed name, and only that generation's directory is
//!   copied (a `CURRENT` holding `/`, `..` or an absolute path is a typed error, never a path).
//! - Only regular files and directories are copied; FIFOs, devices, sockets and symlinks are left
//!   out and listed in the [`CopyReport`]. Every source file is opened read-only, without
//!   following a symlink and without blocking, and is copied up to the size it had when opened.
//! - Every file of the copy is created new (`O_EXCL`, no symlink followed) inside a directory the
//!   copy itself created, so nothing outside it is written.
//!
//! A copy of a journal that is being written is consistent when taken in this order: first the
//! small files that bound what must exist (the durable watermark: copied before the records, it
//! can only claim less than the copy holds), then `CURRENT`, then the generation it names (a
//! rotation that commits meanwhile leaves it in place until it is retired; then the copy fails
//! and is taken again), then the sealed segments.

use crate::active::{gen_dir_name, parse_gen_dir, CURRENT_FILE, SLED_DATA_FILE};
use crate::error::JournalError;
use crate::lock::LOCK_FILE;
use crate::safe_fs::{kind_name, open_regular};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How deep a copied tree may nest (sled's generation holds `blobs/`; nothing goes deeper).
const MAX_DEPTH: usize = 4;

/// What a copy left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Entries that were not copied, each with what it was (a FIFO, a symlink, ...).
    pub left_out: Vec<LeftOut>,
}

/// One entry of the source directory that the copy did not take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftOut {
    /// The entry in the source directory.
    pub path: PathBuf,
    /// Why: what kind of entry it is.
    pub why: String,
}

/// Copies the journal in `from` into `to`, which must not exist yet (it is created, and must not
/// lie inside `from`). Never writes to `from`. See the module docs for what is copied and in
/// which order.
pub fn copy_journal(from: &Path, to: &Path) -> Result<CopyReport, JournalError> {
    let src_meta = std::fs::metadata(from).map_err(|e| JournalError::io(from, e))?;
    if !src_meta.is_dir() {
        return Err(JournalError::BadEntry {
            path: from.to_path_buf(),
            what: "is not a directory".into(),
        });
    }
    if let (Some(parent), Ok(src)) = (to.parent(), from.canonicalize()) {
        if parent.canonicalize().is_ok_and(|p| p.starts_with(&src)) {
            return Err(JournalError::BadEntry {
                path: to.to_path_buf(),
                what: format!("lies inside the journal {} it would copy", from.display()),
            });
        }
    }
    std::fs::create_dir(to).map_err(|e| JournalError::io(to, e))?;
    let mut report = CopyReport::default();

    // 1. The small top-level files (the durable watermark among them) before any record.
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(from).map_err(|e| JournalError::io(from, e))? {
        let entry = entry.map_err(|e| JournalError::io(from, e))?;
        let name = entry.file_name();
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| JournalError::io(&path, e))?;
        let plain = name.to_str().map(str::to_owned);
        match plain.as_deref() {
            Some(LOCK_FILE) | Some(CURRENT_FILE) => continue,
            Some(n) if n == format!("{CURRENT_FILE}.tmp") => continue,
            Some(n) if parse_gen_dir(n).is_some() => continue,
            _ => {}
        }
        if ft.is_file() {
            copy_file(&path, &to.join(&name), &mut report)?;
        } else if ft.is_dir() {
            dirs.push(name);
        } else {
            report.left_out.push(LeftOut {
                path,
                why: kind_name(&ft).into(),
            });
        }
    }

    // 2. CURRENT, validated; the copy's is written from the parsed generation number.
    let gen = crate::active::read_current(from)?;
    if from.join(CURRENT_FILE).exists() {
        let path = to.join(CURRENT_FILE);
        let mut f = new_file(&path)?;
        writeln!(f, "{}", gen_dir_name(gen)).map_err(|e| JournalError::io(&path, e))?;
    }

    // 3. The generation it names.
    let gen_name = gen_dir_name(gen);
    let gen_src = from.join(&gen_name);
    match std::fs::symlink_metadata(&gen_src) {
        Ok(m) if m.is_dir() => copy_tree(&gen_src, &to.join(&gen_name), 0, &mut report)?,
        Ok(m) => {
            return Err(JournalError::BadEntry {
                path: gen_src,
                what: format!(
                    "is {}, not a generation directory",
                    kind_name(&m.file_type())
                ),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && gen == 0 => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(JournalError::Retired { path: gen_src })
        }
        Err(e) => return Err(JournalError::io(&gen_src, e)),
    }
    if gen > 0 && !gen_src.join(SLED_DATA_FILE).is_file() {
        // A rotation committed and retired this generation while it was copied.
        return Err(JournalError::Retired { path: gen_src });
    }

    // 4. The other directories (sealed segments, set-aside snapshots).
    for name in dirs {
        copy_tree(&from.join(&name), &to.join(&name), 0, &mut report)?;
    }
    Ok(report)
}

/// Copies a directory tree: regular files and directories, nothing else.
fn copy_tree(
    from: &Path,
    to: &Path,
    depth: usize,
    report: &mut CopyReport,
) -> Result<(), JournalError> {
    if depth > MAX_DEPTH {
        report.left_out.push(LeftOut {
            path: from.to_path_buf(),
            why: format!("nested deeper than the {MAX_DEPTH} levels a journal uses"),
        });
        return Ok(());
    }
    std::fs::create_dir(to).map_err(|e| JournalError::io(to, e))?;
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        // A live sled may remove what was listed a moment ago.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(JournalError::io(from, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io(from, e))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| JournalError::io(&path, e))?;
        let dst = to.join(entry.file_name());
        if ft.is_file() {
            copy_file(&path, &dst, report)?;
        } else if ft.is_dir() {
            copy_tree(&path, &dst, depth + 1, report)?;
        } else {
            report.left_out.push(LeftOut {
                path,
                why: kind_name(&ft).into(),
            });
        }
    }
    Ok(())
}

/// Copies one regular file up to the size it had when opened. One that vanished meanwhile (a
/// live sled removes old snapshots) is skipped; one that turned into something else is left out.
fn copy_file(src: &Path, dst: &Path, report: &mut CopyReport) -> Result<(), JournalError> {
    let (file, len) = match open_regular(src) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(()),
        Err(JournalError::BadEntry { path, what }) => {
            report.left_out.push(LeftOut { path, why: what });
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let mut out = new_file(dst)?;
    std::io::copy(&mut file.take(len), &mut out).map_err(|e| JournalError::io(dst, e))?;
    Ok(())
}

/// Creates a file that did not exist, never through a symlink.
fn new_file(path: &Path) -> Result<File, JournalError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| JournalError::io(path, e))
}
