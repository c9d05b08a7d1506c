//! Unfinished sled snapshots. sled 0.34 writes a snapshot on open as `snap.<lsn>.generating`,
//! syncs it and renames it to `snap.<lsn>`: the rename is its commit point. A process killed
//! before the rename leaves the unfinished file, which sled's next open takes for the newest
//! snapshot and refuses as corrupt (sled issues #1527 and #1533; our kill -9 harness hit it).
//! Such a file is never the only copy of anything: the previous snapshot and the log are intact.
//! It is moved (not deleted) out of sled's way before sled opens.

use crate::error::JournalError;
use std::path::{Path, PathBuf};

/// Where set-aside snapshots go, inside the journal directory but outside sled's.
const SET_ASIDE_DIR: &str = "sled-unfinished-snapshots";

/// Moves every `snap.*.generating` file in `sled_dir` into `journal_dir/sled-unfinished-snapshots/`
/// and returns their new paths.
pub(crate) fn set_aside_unfinished(
    sled_dir: &Path,
    journal_dir: &Path,
) -> Result<Vec<PathBuf>, JournalError> {
    let io = |path: &Path, source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(sled_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(sled_dir, e)),
    };
    let mut moved = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io(sled_dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("snap.") && name.ends_with(".generating")) {
            continue;
        }
        let to_dir = journal_dir.join(SET_ASIDE_DIR);
        std::fs::create_dir_all(&to_dir).map_err(|e| io(&to_dir, e))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let to = to_dir.join(format!("{name}.{stamp}"));
        std::fs::rename(entry.path(), &to).map_err(|e| io(&entry.path(), e))?;
        tracing::warn!(from = %entry.path().display(), to = %to.display(),
            "set aside an unfinished sled snapshot left by an interrupted process");
        moved.push(to);
    }
    Ok(moved)
}
