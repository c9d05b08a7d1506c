//! Persistence of the simulated VM's state to one JSON file, written atomically (temporary file,
//! fsync, rename, fsync of the directory) so that the VM outlives the process driving it.

use super::state::SimState;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The version of the state file format this build writes and reads.
pub const STATE_FILE_VERSION: u32 = 1;

/// An error opening or saving a persistent simulated VM.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Reading or writing the state file failed.
    #[error("simulated VM state file {path}: {op}: {source}")]
    Io {
        /// The file (or directory) involved.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The state file exists but does not parse.
    #[error("simulated VM state file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        reason: String,
    },
    /// The state file was written by a newer (or unknown) format version.
    #[error("simulated VM state file {path} has version {found}, this build reads {expected}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    state: SimState,
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> SimError {
    let path = path.to_path_buf();
    move |source| SimError::Io { path, op, source }
}

/// Loads the state at `path`: `Ok(None)` when the file does not exist.
pub fn load(path: &Path) -> Result<Option<SimState>, SimError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, "read")(e)),
    };
    // Read the version first so a newer file gets a version error, not a parse error.
    #[derive(Deserialize)]
    struct Header {
        version: u32,
    }
    let header: Header = serde_json::from_slice(&bytes).map_err(|e| SimError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if header.version != STATE_FILE_VERSION {
        return Err(SimError::Version {
            path: path.to_path_buf(),
            found: header.version,
            expected: STATE_FILE_VERSION,
        });
    }
    let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| SimError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(Some(file.state))
}

/// Writes `state` to `path` atomically: a reader (or a process started after a crash) sees
/// either the old file or the new one, never a torn one.
pub fn save(path: &Path, state: &SimState) -> Result<(), SimError> {
    let file = StateFile {
        version: STATE_FILE_VERSION,
        state: state.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| SimError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("cannot encode state: {e}"),
    })?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp, "create temporary file"))?;
        f.write_all(&bytes)
            .map_err(io_err(&tmp, "write temporary file"))?;
        f.sync_all().map_err(io_err(&tmp, "fsync temporary file"))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path, "rename temporary file over"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(&dir, "fsync directory"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sim::state::SimAttachment;
    use lunledger_model::{DiskKind, DiskSpec, Slot};

    fn sample() -> SimState {
        let mut s = SimState::default();
        s.put_attachment(SimAttachment {
            slot: Slot::new(1, 2),
            attach: Some(5),
            disk: DiskSpec {
                path: "/img/a".into(),
                read_only: true,
                kind: DiskKind::PassThru,
                evd_type: None,
            },
            guest_visible: true,
        });
        s
    }

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vm.json");
        assert!(load(&p).unwrap().is_none());
        save(&p, &sample()).unwrap();
        assert_eq!(load(&p).unwrap(), Some(sample()));
        save(&p, &SimState::default()).unwrap();
        assert_eq!(load(&p).unwrap(), Some(SimState::default()));
        assert!(!dir.path().join("vm.json.tmp").exists());
    }

    #[test]
    fn corrupt_truncated_and_newer_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vm.json");
        fs::write(&p, b"\x00\xffnot json").unwrap();
        assert!(matches!(load(&p), Err(SimError::Corrupt { .. })));
        save(&p, &sample()).unwrap();
        let full = fs::read(&p).unwrap();
        for cut in [0, 1, full.len() / 2, full.len() - 2] {
            fs::write(&p, &full[..cut]).unwrap();
            assert!(matches!(load(&p), Err(SimError::Corrupt { .. })), "{cut}");
        }
        fs::write(
            &p,
            br#"{"version":1,"state":{"attachments":[{"slot":7}],"mounts":{}}}"#,
        )
        .unwrap();
        assert!(matches!(load(&p), Err(SimError::Corrupt { .. })));
        fs::write(&p, br#"{"version":99,"state":null}"#).unwrap();
        let e = load(&p).unwrap_err();
        assert!(matches!(e, SimError::Version { found: 99, .. }), "{e}");
    }

    #[test]
    fn unwritable_location_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no-such-dir").join("vm.json");
        assert!(matches!(save(&p, &sample()), Err(SimError::Io { .. })));
        // A directory where the file should be.
        let d = dir.path().join("isdir");
        fs::create_dir(&d).unwrap();
        assert!(matches!(load(&d), Err(SimError::Io { .. })));
    }
}
