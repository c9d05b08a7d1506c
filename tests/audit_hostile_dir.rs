//! Read-only commands against a damaged or hostile journal directory (issue #12, items 1, 2, 7).
//! Every audit command (`status`, `replay`, `replay --at`, `verify`, `recover --dry-run`) runs
//! against every mutation of a real, rotated journal: names in `CURRENT` that would escape the
//! directory, FIFOs, devices and symlinks where files belong, oversized files. For each run:
//! nothing in the journal or beside it changes (every entry hashed before and after, symlinks
//! not followed), the command ends within a bound, it does not panic, and it leaves nothing in
//! its temporary directory. A signal in the middle of a replay leaves nothing either.

use lunledger::backend::sim::SimVm;
use lunledger::{DiskRequest, Manager, ManagerOptions, MountConfig};
use lunledger_test_support::cli::small_config;
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A run that takes longer than this is a hang.
const BOUND: Duration = Duration::from_secs(30);

/// A journal with sealed segments, `CURRENT` naming a later generation, and live handles:
/// `rounds` times, `layers` (at most 16) read-only layers added and half of them released.
fn rotated_journal(dir: &Path, layers: usize, rounds: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let vm = SimVm::new();
        let mut opts = ManagerOptions::new(small_config());
        opts.checkpoint_every = 10;
        opts.segment_records = 10;
        let m = Manager::open_with(dir, opts, vm.host_backend(), vm.guest_backend())
            .await
            .unwrap();
        let mut held: Vec<lunledger::Mount> = Vec::new();
        for round in 0..rounds {
            if round > 0 {
                for h in held.drain(..) {
                    h.release().await.unwrap();
                }
            }
            for i in 0..layers {
                let req = DiskRequest::new(format!("/img/{i}.vhdx"))
                    .read_only(true)
                    .mount(MountConfig::default())
                    .owner(format!("c{}", i % 3));
                held.push(m.add_virtual_disk(req).await.unwrap());
            }
            for h in held.drain(..layers / 2) {
                h.release().await.unwrap();
            }
        }
        m.close().await.unwrap();
    });
    assert!(dir.join("CURRENT").is_file(), "the journal did not rotate");
    assert!(dir.join("archive").is_dir(), "the journal sealed nothing");
}

/// Every entry below `root`: its kind, and for a regular file its size and content hash.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let what = if ft.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::hash::Hash::hash(&bytes, &mut h);
                format!("file {} {:x}", m.len(), std::hash::Hasher::finish(&h))
            } else if ft.is_dir() {
                walk(root, &p, out);
                "dir".into()
            } else if ft.is_symlink() {
                format!("symlink {:?}", std::fs::read_link(&p).unwrap())
            } else if ft.is_fifo() {
                format!("fifo ino {}", m.ino())
            } else {
                "other".into()
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "{}",
        p.display()
    );
}

fn replace_with_fifo(p: &Path) {
    if p.is_dir() {
        std::fs::remove_dir_all(p).unwrap();
    } else {
        let _ = std::fs::remove_file(p);
    }
    mkfifo(p);
}

fn replace_with_symlink(p: &Path, target: &Path) {
    if std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(p).unwrap();
    } else {
        let _ = std::fs::remove_file(p);
    }
    std::os::unix::fs::symlink(target, p).unwrap();
}

fn active_gen(j: &Path) -> PathBuf {
    let name = std::fs::read_to_string(j.join("CURRENT")).unwrap();
    j.join(name.trim())
}

fn first_segment(j: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(j.join("archive"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    segs.remove(0)
}

/// One damage or attack: a name, and what it does to the journal `j` (with the sentinel
/// directory `s` beside it, and `root` above both).
type Mutation = (&'static str, fn(&Path, &Path, &Path));

fn mutations() -> Vec<Mutation> {
    vec![
        (
            "current names the journal's own generation by absolute path",
            |j, _, _| {
                let gen = active_gen(j);
                std::fs::write(j.join("CURRENT"), format!("{}\n", gen.display())).unwrap();
            },
        ),
        ("current names the sentinel directory", |j, s, _| {
            std::fs::write(j.join("CURRENT"), format!("{}\n", s.display())).unwrap();
        }),
        ("current is ../sentinel", |j, _, _| {
            std::fs::write(j.join("CURRENT"), "../sentinel\n").unwrap();
        }),
        ("current is ../../etc", |j, _, _| {
            std::fs::write(j.join("CURRENT"), "../../etc\n").unwrap();
        }),
        (
            "current is ../tmp/x (the command's own temp dir)",
            |j, _, _| {
                std::fs::write(j.join("CURRENT"), "../tmp/x\n").unwrap();
            },
        ),
        ("current holds control bytes", |j, _, _| {
            std::fs::write(j.join("CURRENT"), b"sled-000001\x1b[2J\x00\n").unwrap();
        }),
        ("current is a FIFO", |j, _, _| {
            replace_with_fifo(&j.join("CURRENT"))
        }),
        ("current is a symlink to /dev/zero", |j, _, _| {
            replace_with_symlink(&j.join("CURRENT"), Path::new("/dev/zero"))
        }),
        (
            "current is a symlink to a valid name elsewhere",
            |j, s, _| {
                let name = std::fs::read_to_string(j.join("CURRENT")).unwrap();
                std::fs::write(s.join("current"), name).unwrap();
                replace_with_symlink(&j.join("CURRENT"), &s.join("current"));
            },
        ),
        ("current is 1 MiB", |j, _, _| {
            std::fs::write(j.join("CURRENT"), vec![b'1'; 1 << 20]).unwrap();
        }),
        ("current is a directory", |j, _, _| {
            std::fs::remove_file(j.join("CURRENT")).unwrap();
            std::fs::create_dir(j.join("CURRENT")).unwrap();
        }),
        ("lock is a FIFO", |j, _, _| {
            replace_with_fifo(&j.join("LOCK"))
        }),
        ("lock is a symlink to a sentinel file", |j, s, _| {
            replace_with_symlink(&j.join("LOCK"), &s.join("precious"))
        }),
        ("durable-watermark is a FIFO", |j, _, _| {
            replace_with_fifo(&j.join("durable-watermark"))
        }),
        ("durable-watermark is a symlink to /dev/zero", |j, _, _| {
            replace_with_symlink(&j.join("durable-watermark"), Path::new("/dev/zero"))
        }),
        ("the generation is a symlink to the sentinel", |j, s, _| {
            replace_with_symlink(&active_gen(j), s)
        }),
        ("the generation is a FIFO", |j, _, _| {
            replace_with_fifo(&active_gen(j))
        }),
        ("sled's db is a FIFO", |j, _, _| {
            replace_with_fifo(&active_gen(j).join("db"))
        }),
        ("sled's db is a symlink to /dev/zero", |j, _, _| {
            replace_with_symlink(&active_gen(j).join("db"), Path::new("/dev/zero"))
        }),
        ("sled's conf is a FIFO", |j, _, _| {
            replace_with_fifo(&active_gen(j).join("conf"))
        }),
        ("archive is a symlink to the sentinel", |j, s, _| {
            replace_with_symlink(&j.join("archive"), s)
        }),
        ("a segment is a FIFO", |j, _, _| {
            replace_with_fifo(&first_segment(j))
        }),
        ("a segment is a symlink to /dev/zero", |j, _, _| {
            replace_with_symlink(&first_segment(j), Path::new("/dev/zero"))
        }),
        (
            "a stray FIFO and socket-like names at the top",
            |j, _, _| {
                mkfifo(&j.join("stray"));
                mkfifo(&j.join("sled-999999"));
            },
        ),
        (
            "an unknown directory holds a symlink to the root",
            |j, _, root| {
                std::fs::create_dir(j.join("extra")).unwrap();
                std::os::unix::fs::symlink(root, j.join("extra").join("up")).unwrap();
            },
        ),
    ]
}

fn commands(j: &str) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        v(&["status", j]),
        v(&["replay", j]),
        v(&["replay", j, "--at", "5"]),
        v(&["verify", j]),
        v(&["recover", j, "--dry-run"]),
        v(&["timeline", j, "--json"]),
    ]
}

/// Kills the child if the test fails before it ended.
struct Reaper(Child);
impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the CLI with its own TMPDIR; `None` when it did not end within [`BOUND`].
fn run_bounded(args: &[String], tmp: &Path) -> Option<(i32, String)> {
    let child = Command::new(env!("CARGO_BIN_EXE_lunledger"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaper(child);
    let start = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            return Some((status.code().unwrap_or(-1), err));
        }
        if start.elapsed() > BOUND {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn read_only_commands_never_write_hang_or_leave_copies_in_a_hostile_directory() {
    let template = tempfile::tempdir().unwrap();
    rotated_journal(template.path(), 12, 1);
    let mut runs = 0;
    let mut failures = Vec::new();
    for (name, mutate) in mutations() {
        let root = tempfile::tempdir().unwrap();
        let j = root.path().join("journal");
        let s = root.path().join("sentinel");
        let tmp = root.path().join("tmp");
        copy_dir(template.path(), &j);
        std::fs::create_dir(&s).unwrap();
        std::fs::write(s.join("precious"), b"keep me").unwrap();
        std::fs::create_dir(&tmp).unwrap();
        mutate(&j, &s, root.path());
        // The command's own temp dir is left out: it must be empty afterwards, checked below.
        let before: BTreeMap<_, _> = tree(root.path())
            .into_iter()
            .filter(|(p, _)| !p.starts_with("tmp"))
            .collect();
        for args in commands(j.to_str().unwrap()) {
            runs += 1;
            let what = format!("{name}: lunledger {}", args.join(" "));
            let Some((code, err)) = run_bounded(&args, &tmp) else {
                failures.push(format!("{what}: did not end within {BOUND:?}"));
                continue;
            };
            if !(0..=2).contains(&code) || err.contains("panicked") {
                failures.push(format!("{what}: exit {code}: {err}"));
            }
            let after: BTreeMap<_, _> = tree(root.path())
                .into_iter()
                .filter(|(p, _)| !p.starts_with("tmp"))
                .collect();
            if after != before {
                let changed: Vec<_> = before
                    .iter()
                    .filter(|(p, v)| after.get(*p) != Some(v))
                    .map(|(p, _)| p.display().to_string())
                    .chain(
                        after
                            .keys()
                            .filter(|p| !before.contains_key(*p))
                            .map(|p| format!("+{}", p.display())),
                    )
                    .collect();
                failures.push(format!("{what}: changed {changed:?}"));
            }
            let left: Vec<_> = std::fs::read_dir(&tmp)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            if !left.is_empty() {
                failures.push(format!("{what}: left {left:?} in its temp dir"));
                for e in std::fs::read_dir(&tmp).unwrap() {
                    let p = e.unwrap().path();
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                }
            }
        }
    }
    println!(
        "hostile directory: {} mutations x {} commands = {runs} runs, {} failures",
        mutations().len(),
        commands("j").len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_hostile_current_is_named_in_the_error() {
    let root = tempfile::tempdir().unwrap();
    let j = root.path().join("journal");
    std::fs::create_dir(&j).unwrap();
    rotated_journal(&j, 4, 1);
    let gen = active_gen(&j);
    std::fs::write(j.join("CURRENT"), format!("{}\n", gen.display())).unwrap();
    let (code, err) = run_bounded(&["status".into(), j.to_str().unwrap().into()], root.path())
        .expect("status hung");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("CURRENT"), "{err}");
}

#[test]
fn a_signal_during_replay_leaves_no_copy_behind() {
    let template = tempfile::tempdir().unwrap();
    rotated_journal(template.path(), 16, 30);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let tmp = tempfile::tempdir().unwrap();
        // stdout is a pipe nobody reads: the replay fills it and blocks mid-output.
        let child = Command::new(env!("CARGO_BIN_EXE_lunledger"))
            .args(["replay", template.path().to_str().unwrap()])
            .env("NO_COLOR", "1")
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = Reaper(child);
        // Wait until the private copy exists, then signal.
        let start = Instant::now();
        while std::fs::read_dir(tmp.path()).unwrap().next().is_none() {
            assert!(start.elapsed() < BOUND, "no private copy appeared");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.0.id() as i32, sig) }, 0);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < BOUND,
                "replay did not stop on signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "signal {sig} left {left:?} ({status:?})");
    }
}
