//! A damaged journal directory: a real journal (written by a manager workload, with a
//! checkpoint and a rotation: a sealed segment, `CURRENT`, a second sled generation) is copied to a fresh directory, its files are flipped, truncated, overwritten,
//! extended or removed as the input says, and then `Journal::open`, reading every record,
//! `verify`, the checkpoint, the stored configuration, the quarantine, rebuilding the manager's
//! state, one durable append and a second open must each return a value or a typed error: never
//! panic, never hang.
//!
//! Input format (hand-rolled rather than `arbitrary`, so seeds can be written on purpose): a
//! sequence of at most [`MAX_EDITS`] commands, each
//! `tag:u8 file:u8 offset:u32-le arg:u8 [arg data bytes for tags 2 and 4]`, where `file` indexes
//! the template's files in path order and `offset` is taken modulo the file's length:
//!
//! | tag % 6 | edit |
//! |---|---|
//! | 0 | xor the byte at `offset` with `arg | 1` |
//! | 1 | truncate to `offset` bytes |
//! | 2 | overwrite from `offset` with the `arg` data bytes |
//! | 3 | remove the file |
//! | 4 | append the `arg` data bytes |
//! | 5 | zero `arg` bytes from `offset` |

use lunledger::backend::sim::SimVm;
use lunledger::journal::{Journal, JournalError, JournalOptions};
use lunledger::model::{Event, ManagerConfig};
use lunledger::{DiskRequest, Manager, ManagerOptions, MountConfig};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

/// Most edits applied per input.
pub const MAX_EDITS: usize = 16;

/// How long one examination may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(20);

/// The files of a small real journal: (path relative to the journal directory, contents).
pub type Template = Vec<(PathBuf, Vec<u8>)>;

static TEMPLATE: OnceLock<Template> = OnceLock::new();

/// The template journal, built once per process.
pub fn template() -> &'static Template {
    TEMPLATE.get_or_init(build_template)
}

fn build_template() -> Template {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        let vm = SimVm::new();
        let cfg = ManagerConfig {
            guest: Default::default(),
            controllers: 2,
            luns_per_controller: 2,
            mount_format: "/m/%d".into(),
            reserved: vec![],
        };
        let mut opts = ManagerOptions::new(cfg);
        // A checkpoint part way through, so the open scan starts after it; rotation at it, so
        // the directory holds a sealed segment, `CURRENT` and a later sled generation too.
        opts.checkpoint_every = 12;
        opts.segment_records = 12;
        let m = Manager::open_with(dir.path(), opts, vm.host_backend(), vm.guest_backend())
            .await
            .unwrap_or_else(|e| panic!("open: {e}"));
        let mut held = Vec::new();
        for i in 0..3 {
            let req = DiskRequest::new(format!("/d/{i}"))
                .mount(MountConfig::default())
                .owner("c");
            held.push(
                m.add_virtual_disk(req)
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        if let Some(h) = held.pop() {
            h.release().await.unwrap_or_else(|e| panic!("{e}"));
        }
        let _ = m.close().await;
    });
    let mut files = Vec::new();
    collect(dir.path(), dir.path(), &mut files);
    files.sort();
    files
}

fn collect(root: &Path, dir: &Path, out: &mut Template) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(root, &p, out);
        } else if let (Ok(rel), Ok(bytes)) = (p.strip_prefix(root), std::fs::read(&p)) {
            out.push((rel.to_path_buf(), bytes));
        }
    }
}

/// One edit of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// XORs one byte with `mask` (tag 0).
    Flip {
        /// Which of the template's files (an index, modulo their number).
        file: usize,
        /// Which byte (modulo the file's length; an empty file is left alone).
        offset: u32,
        /// What to XOR it with: the input's `arg | 1`, so never zero.
        mask: u8,
    },
    /// Cuts the file short (tag 1).
    Truncate {
        /// Which of the template's files (an index, modulo their number).
        file: usize,
        /// The length it is cut to (modulo the file's length plus one).
        len: u32,
    },
    /// Writes bytes over the file, extending it where they run past its end (tag 2).
    Overwrite {
        /// Which of the template's files (an index, modulo their number).
        file: usize,
        /// Where the bytes go (modulo the file's length).
        offset: u32,
        /// The bytes, taken from the input after the command.
        data: Vec<u8>,
    },
    /// Deletes the file; later edits of it are skipped (tag 3).
    Remove {
        /// Which of the template's files (an index, modulo their number).
        file: usize,
    },
    /// Adds bytes at the end of the file (tag 4).
    Append {
        /// Which of the template's files (an index, modulo their number).
        file: usize,
        /// The bytes, taken from the input after the command.
        data: Vec<u8>,
    },
    /// Zeroes a run of bytes, stopping at the end of the file (tag 5).
    Zero {
        /// Which of the template's files (an index, modulo their number).
        file: usize,
        /// Where the run starts (modulo the file's length).
        offset: u32,
        /// How many bytes to zero at the most.
        len: u8,
    },
}

/// Parses the input into edits (see the module docs); a short tail is ignored.
pub fn edits(data: &[u8]) -> Vec<Edit> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < MAX_EDITS && rest.len() >= 7 {
        let (tag, file, arg) = (rest[0], rest[1] as usize, rest[6]);
        let offset = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]);
        rest = &rest[7..];
        let mut take = |n: usize| {
            let n = n.min(rest.len());
            let (d, r) = rest.split_at(n);
            rest = r;
            d.to_vec()
        };
        out.push(match tag % 6 {
            0 => Edit::Flip {
                file,
                offset,
                mask: arg | 1,
            },
            1 => Edit::Truncate { file, len: offset },
            2 => Edit::Overwrite {
                file,
                offset,
                data: take(arg as usize),
            },
            3 => Edit::Remove { file },
            4 => Edit::Append {
                file,
                data: take(arg as usize),
            },
            _ => Edit::Zero {
                file,
                offset,
                len: arg,
            },
        });
    }
    out
}

/// Applies edits to in-memory copies of the template's files (`None`: removed).
pub fn apply(template: &Template, edits: &[Edit]) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut files: Vec<(PathBuf, Option<Vec<u8>>)> = template
        .iter()
        .map(|(p, b)| (p.clone(), Some(b.clone())))
        .collect();
    if files.is_empty() {
        return files;
    }
    let n = files.len();
    for e in edits {
        let idx = match e {
            Edit::Flip { file, .. }
            | Edit::Truncate { file, .. }
            | Edit::Overwrite { file, .. }
            | Edit::Remove { file }
            | Edit::Append { file, .. }
            | Edit::Zero { file, .. } => file % n,
        };
        let slot = &mut files[idx].1;
        let Some(bytes) = slot.as_mut() else { continue };
        let at = |off: u32, len: usize| if len == 0 { 0 } else { off as usize % len };
        match e {
            Edit::Flip { offset, mask, .. } => {
                if !bytes.is_empty() {
                    let i = at(*offset, bytes.len());
                    bytes[i] ^= mask;
                }
            }
            Edit::Truncate { len, .. } => {
                let l = *len as usize % (bytes.len() + 1);
                bytes.truncate(l);
            }
            Edit::Overwrite { offset, data, .. } => {
                let i = at(*offset, bytes.len());
                for (k, b) in data.iter().enumerate() {
                    match bytes.get_mut(i + k) {
                        Some(x) => *x = *b,
                        None => bytes.push(*b),
                    }
                }
            }
            Edit::Remove { .. } => *slot = None,
            Edit::Append { data, .. } => bytes.extend_from_slice(data),
            Edit::Zero { offset, len, .. } => {
                let i = at(*offset, bytes.len());
                let end = (i + *len as usize).min(bytes.len());
                bytes[i..end].iter_mut().for_each(|b| *b = 0);
            }
        }
    }
    files
}

/// What an examination of a damaged directory came to (for seed triage and the corpus test).
#[derive(Debug)]
pub enum Outcome {
    /// Opened; this many records read before the first typed error (if any).
    Opened {
        /// Records read from the first one on, before the end or the first error.
        records: u64,
        /// That error, rendered, when reading stopped at one.
        read_error: Option<String>,
    },
    /// `Journal::open` refused with a typed error.
    Refused(String),
}

/// The target: examines the directory `data` describes ([`examine_input`]); only a panic or a
/// hang is a finding, so the outcome is dropped.
pub fn run(data: &[u8]) {
    let _ = examine_input(data);
}

/// Writes the damaged directory and examines it on a separate thread, so a hang is reported as
/// one (a panic message) instead of stalling the fuzzer or the test.
pub fn examine_input(data: &[u8]) -> Outcome {
    let files = apply(template(), &edits(data));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for (rel, bytes) in &files {
        let Some(bytes) = bytes else { continue };
        let p = dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }
    let path = dir.path().to_path_buf();
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(examine(&path));
    });
    match rx.recv_timeout(HANG) {
        Ok(outcome) => {
            let _ = worker.join();
            outcome
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("hang: examining the damaged journal took over {HANG:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The worker panicked: re-raise its panic here, where the fuzzer sees it.
            match worker.join() {
                Err(p) => std::panic::resume_unwind(p),
                Ok(()) => panic!("examination ended without an outcome"),
            }
        }
    }
}

fn journal_opts() -> JournalOptions {
    JournalOptions {
        // No background flusher thread per examined directory.
        flush_every_ms: None,
        cache_capacity: 1 << 20,
        ..JournalOptions::default()
    }
}

fn examine(dir: &Path) -> Outcome {
    let j = match Journal::open(dir, journal_opts()) {
        Ok(j) => j,
        Err(e) => return Outcome::Refused(typed(e)),
    };
    let mut records = 0u64;
    let mut read_error = None;
    for r in j.read_from(1) {
        match r {
            Ok(_) => records += 1,
            Err(e) => {
                read_error = Some(typed(e));
                break;
            }
        }
    }
    let _ = j.verify().map_err(typed);
    let _ = j.latest_checkpoint().map_err(typed);
    let _ = j.quarantined().map_err(typed);
    let _ = j.first_seq().map_err(typed);
    // The manager's own rebuild (checkpoint + replay through `State::apply`) on whatever
    // survived: typed errors only.
    let _ = lunledger::load_state(&j.reader());
    // The journal stays writable after its open repaired or reported the damage, or refuses
    // with a typed error.
    let appended = j
        .append(0, Event::OpFinished)
        .and_then(|seq| j.wait_durable_blocking(seq));
    drop(j);
    // A journal that opened and took an append must open again.
    match (appended, reopen(dir)) {
        (Ok(()), Err(e)) => panic!("journal opened and appended, then refused to reopen: {e}"),
        (_, Ok(j)) => {
            for r in j.read_from(1) {
                if r.is_err() {
                    break;
                }
            }
        }
        (Err(_), Err(_)) => {}
    }
    Outcome::Opened {
        records,
        read_error,
    }
}

/// Opens again right after the previous handle was dropped (the journal itself waits out sled's
/// asynchronous lock release; this used to fail now and then).
fn reopen(dir: &Path) -> Result<Journal, JournalError> {
    Journal::open(dir, journal_opts())
}

/// Renders a typed error (the point of the match: every `JournalError` is a value, not a panic).
fn typed(e: JournalError) -> String {
    e.to_string()
}
