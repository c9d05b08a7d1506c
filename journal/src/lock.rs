//! Exclusive use of a journal directory: an `flock(LOCK_EX | LOCK_NB)` on a lock file inside it,
//! taken before sled is opened and held until the journal is dropped.

use crate::error::JournalError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Name of the lock file inside the journal directory.
pub const LOCK_FILE: &str = "LOCK";

/// How long [`DirLock::acquire`] keeps trying before it reports the directory in use. A lock
/// can outlive its holder's close by a moment: a child forked by any thread of the holder's
/// process carries a copy of the descriptor until its `exec` (the kernel drops an flock with the
/// last descriptor of its open file), and a killed shim's descriptors close as it exits. A
/// restarted shim, or a test that reopens while another thread spawns a process, must not fail
/// for that; a journal another process really uses is still refused, a second later.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A held directory lock; released when dropped (the file is closed, which drops the flock).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    dir: PathBuf,
}

impl DirLock {
    /// Takes the lock on `dir`, trying for up to [`LOCK_WAIT`]. Fails with
    /// [`JournalError::InUse`] when another open file description (another process, or another
    /// handle in this one) holds it all that time.
    pub fn acquire(dir: &Path) -> Result<DirLock, JournalError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .and_then(|f| crate::faults::check(crate::faults::Site::LockFile).map(|()| f))
            .map_err(|e| JournalError::storage_io("opening the lock file", &path, e))?;
        crate::safe_fs::check_regular(&file, &path)?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            // SAFETY: flock on a valid, owned file descriptor has no memory-safety
            // preconditions.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Some(libc::EWOULDBLOCK) => {
                    return Err(JournalError::InUse {
                        dir: dir.to_path_buf(),
                        pid: holder(&file),
                    })
                }
                Some(libc::EINTR) => {}
                _ => return Err(JournalError::io(&path, err)),
            }
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

/// A shared lock taken by a reader: while it is held no process can open the journal for
/// writing. Opened read-only and never created, so a reader changes nothing in the directory.
#[derive(Debug)]
pub struct SharedLock {
    _file: Option<File>,
}

impl SharedLock {
    /// Takes a shared lock on `dir`'s lock file without waiting. A missing lock file means no
    /// process ever opened the journal for writing: there is nothing to hold (`Ok` all the same).
    /// Fails with [`JournalError::InUse`] (naming the holder when known) while a writer holds it,
    /// and with [`JournalError::BadEntry`] when the lock file is not a regular file.
    pub fn try_acquire(dir: &Path) -> Result<SharedLock, JournalError> {
        let path = dir.join(LOCK_FILE);
        let file = match crate::safe_fs::open_regular(&path)? {
            Some((file, _)) => file,
            None => return Ok(SharedLock { _file: None }),
        };
        // SAFETY: flock on a valid, owned descriptor has no memory-safety preconditions.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(SharedLock { _file: Some(file) });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(JournalError::InUse {
                dir: dir.to_path_buf(),
                pid: holder(&file),
            });
        }
        Err(JournalError::io(&path, err))
    }
}

/// The pid of another process holding an flock on `file`, from `/proc/locks` (Linux), if it says.
fn holder(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let (dev, ino) = (meta.dev(), meta.ino());
    let text = std::fs::read_to_string("/proc/locks").ok()?;
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
            Err(JournalError::InUse { dir: d, .. }) => assert_eq!(d, dir.path()),
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(a);
        DirLock::acquire(dir.path()).unwrap();
    }

    /// A copy of the descriptor in a child between fork and exec (here: a second open file
    /// description held a moment longer) delays the lock; it does not refuse it. One held past
    /// [`LOCK_WAIT`] is refused, after that long.
    #[test]
    fn a_lock_released_within_the_wait_is_taken_and_one_held_longer_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(150));
            drop(held);
        });
        let start = std::time::Instant::now();
        let lock = DirLock::acquire(dir.path()).unwrap();
        assert!(start.elapsed() < LOCK_WAIT, "took {:?}", start.elapsed());
        t.join().unwrap();

        let start = std::time::Instant::now();
        match DirLock::acquire(dir.path()) {
            Err(JournalError::InUse { .. }) => {}
            other => panic!("expected InUse, got {other:?}"),
        }
        assert!(
            start.elapsed() >= LOCK_WAIT,
            "refused after {:?}",
            start.elapsed()
        );
        drop(lock);
    }
}
