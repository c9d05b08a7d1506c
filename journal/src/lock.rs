//! Exclusive use of a journal directory: an `flock(LOCK_EX | LOCK_NB)` on a lock file inside it,
//! taken before sled is opened and held until the journal is dropped.

use crate::error::JournalError;
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Name of the lock file inside the journal directory.
pub const LOCK_FILE: &str = "LOCK";

/// A held directory lock; released when dropped (the file is closed, which drops the flock).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    dir: PathBuf,
}

impl DirLock {
    /// Takes the lock on `dir` without waiting. Fails with [`JournalError::InUse`] when another
    /// open file description (another process, or another handle in this one) holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, JournalError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| JournalError::io(&path, e))?;
        // SAFETY: flock on a valid, owned file descriptor has no memory-safety preconditions.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Err(JournalError::InUse {
                    dir: dir.to_path_buf(),
                }),
                _ => Err(JournalError::io(&path, err)),
            };
        }
        Ok(DirLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Waits (up to `limit`) until no other open file description holds an flock on `path`. sled
/// flocks its data file and releases it only when its last background reference is gone, which
/// can be a moment after its handles are dropped; the journal waits for that before releasing
/// its own directory lock, so a reopen right after a drop never meets sled's lock.
pub fn wait_flock_free(path: &Path, limit: std::time::Duration) -> bool {
    let Ok(file) = OpenOptions::new().read(true).open(path) else {
        return true;
    };
    let start = std::time::Instant::now();
    loop {
        // SAFETY: flock on a valid, owned file descriptor has no memory-safety preconditions.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            // SAFETY: as above; releases the probe lock at once.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_in_same_process_is_in_use_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = DirLock::acquire(dir.path()).unwrap();
        match DirLock::acquire(dir.path()) {
            Err(JournalError::InUse { dir: d }) => assert_eq!(d, dir.path()),
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(a);
        DirLock::acquire(dir.path()).unwrap();
    }
}
