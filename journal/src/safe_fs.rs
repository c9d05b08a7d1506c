//! Reading a journal directory that may be damaged or tampered with. A name in the directory can
//! be a FIFO (an `open` for reading would wait forever for a writer), a device (`/dev/zero` reads
//! without end), or a symlink to anywhere. So the journal reads only regular files, never through
//! a final symlink, opens them without blocking, checks what it opened (`fstat`) before reading,
//! and reads no more than a known bound.

use crate::error::JournalError;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a directory entry is, without following a symlink.
pub(crate) fn kind_name(ft: &std::fs::FileType) -> &'static str {
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symlink"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading if, and only if, it is a regular file reached without a final
/// symlink. Returns the file and its size when opened; `Ok(None)` when it does not exist.
pub(crate) fn open_regular(path: &Path) -> Result<Option<(File, u64)>, JournalError> {
    let file = match OpenOptions::new()
        .read(true)
        // O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a
        // writer (it has no effect on the regular files read afterwards).
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(JournalError::BadEntry {
                path: path.to_path_buf(),
                what: "is a symlink (the journal follows none)".into(),
            })
        }
        Err(e) => return Err(JournalError::io(path, e)),
    };
    let len = check_regular(&file, path)?;
    Ok(Some((file, len)))
}

/// Checks that an opened `file` (at `path`) is a regular file (`fstat`, so what was opened is
/// what is checked); returns its size.
pub(crate) fn check_regular(file: &File, path: &Path) -> Result<u64, JournalError> {
    let meta = file.metadata().map_err(|e| JournalError::io(path, e))?;
    if !meta.file_type().is_file() {
        return Err(JournalError::BadEntry {
            path: path.to_path_buf(),
            what: format!("is {}, not a regular file", kind_name(&meta.file_type())),
        });
    }
    Ok(meta.len())
}

/// Reads the whole of a regular file of at most `max` bytes; `Ok(None)` when it does not exist.
/// A larger file is a [`JournalError::BadEntry`]: no journal file this reads is that large.
pub(crate) fn read_regular(path: &Path, max: u64) -> Result<Option<Vec<u8>>, JournalError> {
    let Some((file, len)) = open_regular(path)? else {
        return Ok(None);
    };
    let too_large = || JournalError::BadEntry {
        path: path.to_path_buf(),
        what: format!("is larger than the {max} bytes such a file can hold"),
    };
    if len > max {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // One byte past the bound tells a file that grew meanwhile from one that fits.
    file.take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| JournalError::io(path, e))?;
    if buf.len() as u64 > max {
        return Err(too_large());
    }
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_and_symlinks_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 100]).unwrap();
        let ok = dir.path().join("ok");
        std::fs::write(&ok, b"hello").unwrap();

        for (path, want) in [(&fifo, "FIFO"), (&link, "symlink")] {
            match read_regular(path, 64) {
                Err(JournalError::BadEntry { what, .. }) => assert!(what.contains(want), "{what}"),
                other => panic!("{}: {other:?}", path.display()),
            }
        }
        assert!(matches!(
            read_regular(Path::new("/dev/zero"), 64),
            Err(JournalError::BadEntry { .. })
        ));
        assert!(matches!(
            read_regular(&big, 64),
            Err(JournalError::BadEntry { .. })
        ));
        assert_eq!(read_regular(&ok, 64).unwrap().unwrap(), b"hello");
        assert!(read_regular(&dir.path().join("missing"), 64)
            .unwrap()
            .is_none());
    }
}
