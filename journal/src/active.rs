//! The active sled generation: the database that takes appends, and which generation it is.
//!
//! Generation 0 lives in `sled/` (the only layout before segments existed); generation `n > 0`
//! in `sled-<n:06>/`. The file `CURRENT` names the active one (absent: `sled`). Replacing
//! `CURRENT` (write a temporary file, fsync, rename, fsync the directory) is the commit point of a
//! rotation, so after any crash exactly one generation is active; the others are leftovers,
//! either retired (everything they held is sealed or copied) or never committed (a partial copy),
//! and open removes them.

use crate::error::JournalError;
use crate::options::Durability;
use crate::segment::sync_dir;
use crate::stats::Counters;
use crate::store::{TREE_CHECKPOINTS, TREE_META, TREE_QUARANTINE, TREE_RECORDS};
use std::fs::File;
use std::io::Write;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Generation 0's directory name.
pub const SLED_DIR: &str = "sled";
/// sled's data file inside a generation's directory (the file `Durability::Sync` fdatasyncs).
pub const SLED_DATA_FILE: &str = "db";
/// The file naming the active generation.
pub const CURRENT_FILE: &str = "CURRENT";

/// The most bytes a valid `CURRENT` holds ("sled-" and up to 20 digits, a newline, with room).
const CURRENT_MAX_LEN: u64 = 64;

/// The directory name of generation `gen`.
pub(crate) fn gen_dir_name(gen: u64) -> String {
    if gen == 0 {
        SLED_DIR.to_string()
    } else {
        format!("{SLED_DIR}-{gen:06}")
    }
}

/// The generation a directory name denotes, if it is a generation directory.
pub(crate) fn parse_gen_dir(name: &str) -> Option<u64> {
    if name == SLED_DIR {
        return Some(0);
    }
    let n = name.strip_prefix("sled-")?;
    if n.len() < 6 || !n.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    n.parse().ok().filter(|g| *g > 0)
}

/// Whether `dir` looks like a journal directory (has a generation to open).
pub fn is_journal_dir(dir: &Path) -> bool {
    // A CURRENT of any kind counts: what it is is checked (and refused) when it is read.
    dir.join(CURRENT_FILE).symlink_metadata().is_ok() || dir.join(SLED_DIR).is_dir()
}

/// The active generation named by `CURRENT` (0 when there is no `CURRENT`).
pub(crate) fn read_current(journal_dir: &Path) -> Result<u64, JournalError> {
    let path = journal_dir.join(CURRENT_FILE);
    // A regular file of a few bytes; anything else (a FIFO, `/dev/zero`, a symlink) is refused
    // before it is read.
    let Some(text) = crate::safe_fs::read_regular(&path, CURRENT_MAX_LEN)? else {
        return Ok(0);
    };
    std::str::from_utf8(&text)
        .ok()
        .map(str::trim)
        .and_then(parse_gen_dir)
        .ok_or_else(|| {
            JournalError::corrupt(
                None,
                format!(
                    "{} does not name a sled generation ({:?})",
                    path.display(),
                    String::from_utf8_lossy(&text[..text.len().min(64)])
                ),
            )
        })
}

/// Makes generation `gen` the active one, durably (the commit point of a rotation).
pub(crate) fn write_current(journal_dir: &Path, gen: u64) -> Result<(), JournalError> {
    let path = journal_dir.join(CURRENT_FILE);
    let tmp = journal_dir.join(format!("{CURRENT_FILE}.tmp"));
    const COMMIT: &str = "replacing CURRENT";
    let mut f = File::create(&tmp).map_err(|e| JournalError::storage_io(COMMIT, &tmp, e))?;
    crate::faults::check(crate::faults::Site::CurrentReplace)
        .and_then(|()| writeln!(f, "{}", gen_dir_name(gen)))
        .and_then(|()| f.sync_all())
        .map_err(|e| JournalError::storage_io(COMMIT, &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| JournalError::storage_io(COMMIT, &path, e))?;
    sync_dir(journal_dir)
}

/// Removes every generation directory but the active one, and a stray `CURRENT.tmp`. Returns
/// the directories removed. Safe because a non-active generation is either retired (all it
/// held was sealed into segments or copied into its successor before `CURRENT` moved) or an
/// uncommitted partial copy of the active one.
pub(crate) fn remove_inactive(
    journal_dir: &Path,
    active: u64,
) -> Result<Vec<PathBuf>, JournalError> {
    let tmp = journal_dir.join(format!("{CURRENT_FILE}.tmp"));
    if tmp.exists() {
        std::fs::remove_file(&tmp).map_err(|e| JournalError::io(&tmp, e))?;
    }
    let entries = std::fs::read_dir(journal_dir).map_err(|e| JournalError::io(journal_dir, e))?;
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io(journal_dir, e))?;
        let name = entry.file_name();
        let Some(gen) = parse_gen_dir(&name.to_string_lossy()) else {
            continue;
        };
        if gen != active && entry.path().is_dir() {
            let p = entry.path();
            std::fs::remove_dir_all(&p).map_err(|e| JournalError::io(&p, e))?;
            removed.push(p);
        }
    }
    Ok(removed)
}

/// Refuses a sled database that another program wrote: one with trees the journal never makes,
/// or entries in sled's default tree (the journal keeps nothing there). An empty database (a new
/// journal) passes.
fn check_ours(db: &sled::Db, dir: &Path) -> Result<(), JournalError> {
    const OURS: [&str; 4] = [TREE_RECORDS, TREE_CHECKPOINTS, TREE_META, TREE_QUARANTINE];
    let default = db.name();
    let foreign: Vec<String> = db
        .tree_names()
        .into_iter()
        .filter(|n| *n != default && !OURS.iter().any(|o| n.as_ref() == o.as_bytes()))
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .collect();
    if !foreign.is_empty() || !db.is_empty() {
        return Err(JournalError::BadEntry {
            path: dir.to_path_buf(),
            what: format!(
                "is a sled database but not a lunledger journal (it holds {})",
                if foreign.is_empty() {
                    "entries in sled's default tree".to_string()
                } else {
                    format!("trees the journal never makes: {}", foreign.join(", "))
                }
            ),
        });
    }
    Ok(())
}

/// One open sled generation.
///
/// sled's handles are dropped by hand, inside `catch_unwind` (see the `Drop` impl): sled 0.34
/// fsyncs its log when the last handle goes and `unwrap`s the result, so a disk that failed
/// (EIO, EROFS) would panic whichever thread dropped the journal.
pub(crate) struct Active {
    pub gen: u64,
    pub db: ManuallyDrop<sled::Db>,
    pub records: ManuallyDrop<sled::Tree>,
    pub checkpoints: ManuallyDrop<sled::Tree>,
    pub meta: ManuallyDrop<sled::Tree>,
    pub quarantine: ManuallyDrop<sled::Tree>,
    pub data_file: File,
    pub data_path: PathBuf,
    /// Declared last: runs after sled's handles are dropped.
    pub closer: Closer,
}

impl Drop for Active {
    fn drop(&mut self) {
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: each field is dropped exactly once, here, and never used again: `self` is
            // being dropped and the `ManuallyDrop` fields are not touched by any other drop.
            unsafe {
                ManuallyDrop::drop(&mut self.records);
                ManuallyDrop::drop(&mut self.checkpoints);
                ManuallyDrop::drop(&mut self.meta);
                ManuallyDrop::drop(&mut self.quarantine);
                ManuallyDrop::drop(&mut self.db);
            }
        }));
        if let Err(p) = dropped {
            tracing::error!(
                dir = %self.closer.dir.display(),
                panic = %crate::store::panic_msg(&p),
                "sled failed while closing the journal (its storage failed); the next open recovers"
            );
        }
    }
}

/// Waits for sled to let go of the generation's data file when the generation is dropped, and
/// removes the directory of a retired generation.
pub(crate) struct Closer {
    data_path: PathBuf,
    dir: PathBuf,
    retired: AtomicBool,
}

impl Drop for Closer {
    fn drop(&mut self) {
        if !crate::lock::wait_flock_free(&self.data_path, Duration::from_secs(5)) {
            tracing::warn!(path = %self.data_path.display(), "sled still holds its data file");
        }
        if self.retired.load(Ordering::SeqCst) {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                // The next open removes it.
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove a retired sled generation");
            }
        }
    }
}

impl Active {
    /// Opens (creating when missing) generation `gen` of the journal in `journal_dir`.
    pub fn open(
        journal_dir: &Path,
        gen: u64,
        cache_capacity: u64,
        flush_every_ms: Option<u64>,
    ) -> Result<Active, JournalError> {
        let dir = journal_dir.join(gen_dir_name(gen));
        let config = sled::Config::new()
            .path(&dir)
            .cache_capacity(cache_capacity)
            .flush_every_ms(flush_every_ms);
        let db = crate::store::open_sled(&config)?;
        check_ours(&db, &dir)?;
        let records = db.open_tree(TREE_RECORDS)?;
        let checkpoints = db.open_tree(TREE_CHECKPOINTS)?;
        let meta = db.open_tree(TREE_META)?;
        let quarantine = db.open_tree(TREE_QUARANTINE)?;
        let data_path = dir.join(SLED_DATA_FILE);
        let data_file = File::open(&data_path).map_err(|e| JournalError::io(&data_path, e))?;
        Ok(Active {
            gen,
            db: ManuallyDrop::new(db),
            records: ManuallyDrop::new(records),
            checkpoints: ManuallyDrop::new(checkpoints),
            meta: ManuallyDrop::new(meta),
            quarantine: ManuallyDrop::new(quarantine),
            data_file,
            data_path: data_path.clone(),
            closer: Closer {
                data_path,
                dir,
                retired: AtomicBool::new(false),
            },
        })
    }

    /// The generation's directory.
    pub fn dir(&self) -> &Path {
        &self.closer.dir
    }

    /// Marks the generation retired: its directory goes when its last handle does.
    pub fn retire(&self) {
        self.closer.retired.store(true, Ordering::SeqCst);
    }

    /// Makes everything handed to this generation durable under `durability`.
    pub fn flush_durable(
        &self,
        durability: Durability,
        counters: &Counters,
    ) -> Result<(), JournalError> {
        const FLUSH: &str = "flushing the journal";
        self.db
            .flush()
            .map_err(|e| JournalError::storage(FLUSH, self.dir(), e))?;
        Counters::add(&counters.flushes, 1);
        if durability == Durability::Sync {
            const SYNC: &str = "syncing the journal's data file";
            crate::faults::check(crate::faults::Site::DataSync)
                .and_then(|()| self.data_file.sync_data())
                .map_err(|e| JournalError::storage_io(SYNC, &self.data_path, e))?;
            Counters::add(&counters.fdatasyncs, 1);
        }
        Ok(())
    }

    /// The sequence number of the first stored record, if any.
    pub fn first_seq(&self) -> Result<Option<u64>, JournalError> {
        entry_seq(self.records.first()?)
    }

    /// The sequence number of the last stored record, if any.
    pub fn last_seq(&self) -> Result<Option<u64>, JournalError> {
        entry_seq(self.records.last()?)
    }
}

fn entry_seq(entry: Option<(sled::IVec, sled::IVec)>) -> Result<Option<u64>, JournalError> {
    entry
        .map(|(k, _)| {
            crate::codec::key_seq(&k)
                .ok_or_else(|| JournalError::corrupt(None, "record key is not 8 bytes"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names() {
        assert_eq!(parse_gen_dir(&gen_dir_name(0)), Some(0));
        assert_eq!(parse_gen_dir(&gen_dir_name(7)), Some(7));
        assert_eq!(parse_gen_dir(&gen_dir_name(1_234_567)), Some(1_234_567));
        assert_eq!(parse_gen_dir("sled-unfinished-snapshots"), None);
        assert_eq!(parse_gen_dir("sled-000000"), None);
        assert_eq!(parse_gen_dir("sled-12"), None);
    }

    #[test]
    fn current_round_trip_and_garbage_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_current(dir.path()).unwrap(), 0);
        write_current(dir.path(), 3).unwrap();
        assert_eq!(read_current(dir.path()).unwrap(), 3);
        std::fs::write(dir.path().join(CURRENT_FILE), b"../../etc\n").unwrap();
        assert!(matches!(
            read_current(dir.path()),
            Err(JournalError::Corrupt { .. })
        ));
    }
}
