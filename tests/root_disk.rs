//! The journal's disk really fails (issue #14): a size-limited tmpfs that fills up under a
//! concurrent workload, an ext4 filesystem that goes read-only under a running manager (the
//! kernel's own error path: `errors=remount-ro` and ext4's `trigger_fs_error`), and the CLI on
//! a full temporary directory and on a read-only journal.
//!
//! NEEDS ROOT (mount, loop devices): it runs with `--features root-tests` (`scripts/test-all.sh`
//! does, as root); without root every test here fails loudly, it never passes silently.

use lunledger_test_support as common;

use common::scenarios::{check_recovered, release_all_and_check_empty};
use lunledger::backend::sim::SimVm;
use lunledger::model::HandleId;
use lunledger::{DiskRequest, Error, Manager, ManagerOptions, MountConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (this test needs root and {cmd})"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed (this test needs root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "tests/root_disk.rs needs root (it mounts filesystems); run it as root or leave out --features root-tests"
    );
}

/// A mounted filesystem, unmounted (lazily, so a failure cannot leave it busy) on drop.
struct Mounted {
    at: PathBuf,
    _root: tempfile::TempDir,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

fn tmpfs(size: &str) -> Mounted {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let at = root.path().join("mnt");
    std::fs::create_dir(&at).unwrap();
    sh(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            at.to_str().unwrap(),
        ],
    );
    Mounted { at, _root: root }
}

/// Fills the filesystem at `at` up to `leave` free bytes with a ballast file.
fn fill(at: &Path, leave: u64) -> PathBuf {
    let ballast = at.join("ballast");
    // SAFETY: statvfs writes into the struct we pass.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let c = std::ffi::CString::new(at.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    let free = st.f_bavail * st.f_frsize;
    let len = free.saturating_sub(leave);
    let f = std::fs::File::create(&ballast).unwrap();
    // Written, not set_len: tmpfs counts only pages that exist.
    let chunk = vec![0xa5u8; 1 << 16];
    let mut w = std::io::BufWriter::new(f);
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if std::io::Write::write_all(&mut w, &chunk[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    let _ = std::io::Write::flush(&mut w);
    ballast
}

fn options() -> ManagerOptions {
    let mut o = ManagerOptions::new(common::config());
    o.checkpoint_every = 50;
    o.segment_records = 50;
    o.teardown_backoff = Duration::from_millis(1);
    o
}

async fn open(dir: &Path, vm: &SimVm) -> Result<Manager, Error> {
    Manager::open_with(dir, options(), vm.host_backend(), vm.guest_backend()).await
}

/// Eight tasks adding and releasing disks until the journal fails (or `limit` passes). Returns
/// the handles each task held when it stopped (returned by an add, not released) and the
/// errors seen.
async fn churn_until_failure(m: &Manager, limit: Duration) -> (Vec<HandleId>, Vec<String>) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            let mut errors = Vec::new();
            let mut i = 0u64;
            while start.elapsed() < limit {
                i += 1;
                let req = DiskRequest::new(format!("/img/t{t}-{}.vhdx", i % 4))
                    .read_only(true)
                    .mount(MountConfig::default())
                    .owner(format!("c{t}"));
                match m.add_virtual_disk(req).await {
                    Ok(h) => {
                        if i % 3 == 0 {
                            held.push(h.handle_id());
                        } else if let Err(e) = h.release().await {
                            // A release that failed may be finished by recovery (it had
                            // started) or not: the handle counts as held by no one, as in the
                            // crash matrix.
                            errors.push(e);
                            break;
                        }
                    }
                    Err(e) => {
                        errors.push(e);
                        break;
                    }
                }
            }
            (held, errors)
        }));
    }
    let mut held = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let (h, e) = t.await.unwrap();
        held.extend(h);
        for e in e {
            assert!(
                e.stops_manager(),
                "a journal failure must stop the manager, got: {e}"
            );
            errors.push(e.to_string());
        }
    }
    (held, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tmpfs_stops_the_manager_and_recovers_once_space_is_freed() {
    let fs = tmpfs("3m");
    let dir = fs.at.join("journal");
    let vm = SimVm::new();
    let m = open(&dir, &vm).await.unwrap();
    let ballast = fill(&fs.at, 256 << 10);
    let (held, errors) = tokio::time::timeout(
        Duration::from_secs(120),
        churn_until_failure(&m, Duration::from_secs(60)),
    )
    .await
    .expect("the workload hung on a full disk");
    assert!(!errors.is_empty(), "the disk never filled");
    assert!(
        errors.iter().any(|e| e.contains("No space left on device")),
        "no error names the full disk: {errors:?}"
    );
    // Handles returned before the failure are still there after recovery.
    let _ = m.close().await;
    println!(
        "full tmpfs: {} handles held, {} errors, first: {}",
        held.len(),
        errors.len(),
        errors[0]
    );
    // Opening on the still-full disk is a clear error or a recovery, never a panic or hang.
    let still_full = tokio::time::timeout(Duration::from_secs(60), open(&dir, &vm))
        .await
        .expect("open on a full disk hung");
    if let Ok(m) = still_full {
        let _ = m.close().await;
    }
    std::fs::remove_file(&ballast).unwrap();
    let m = open(&dir, &vm).await.expect("reopen once space is freed");
    check_recovered(&m, &vm, &held, "full tmpfs").await;
    release_all_and_check_empty(&m, &vm, "full tmpfs").await;
    let v = m.journal().verify().unwrap();
    assert!(v.problem.is_none(), "{v:?}");
    m.close().await.unwrap();
}

/// An ext4 image on a loop device, mounted with `errors=remount-ro`.
struct Ext4 {
    mnt: Mounted,
    image: PathBuf,
}

fn ext4(size_mb: u64) -> Ext4 {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let image = root.path().join("fs.img");
    let at = root.path().join("mnt");
    std::fs::create_dir(&at).unwrap();
    std::fs::File::create(&image)
        .unwrap()
        .set_len(size_mb << 20)
        .unwrap();
    sh("mkfs.ext4", &["-q", image.to_str().unwrap()]);
    sh(
        "mount",
        &[
            "-o",
            "loop,errors=remount-ro",
            image.to_str().unwrap(),
            at.to_str().unwrap(),
        ],
    );
    Ext4 {
        mnt: Mounted { at, _root: root },
        image,
    }
}

impl Ext4 {
    /// Makes the filesystem fail as a disk error would: the kernel remounts it read-only.
    fn fail(&self) {
        let out = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.mnt.at)
            .output()
            .unwrap();
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let name = Path::new(&dev)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        std::fs::write(
            format!("/sys/fs/ext4/{name}/trigger_fs_error"),
            b"lunledger test\n",
        )
        .expect("ext4's trigger_fs_error (this test needs root and ext4's sysfs knobs)");
    }

    /// Unmounts, repairs and mounts again: the disk is healthy once more.
    fn repair(&self) {
        let at = self.mnt.at.to_str().unwrap();
        sh("umount", &[at]);
        let _ = Command::new("e2fsck")
            .args(["-fy"])
            .arg(&self.image)
            .status();
        sh(
            "mount",
            &[
                "-o",
                "loop,errors=remount-ro",
                self.image.to_str().unwrap(),
                at,
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_whose_filesystem_goes_read_only_stops_and_recovers() {
    let fs = ext4(16);
    let dir = fs.mnt.at.join("journal");
    let vm = SimVm::new();
    let m = open(&dir, &vm).await.unwrap();
    let mut held = Vec::new();
    for i in 0..6 {
        let h = m
            .add_virtual_disk(
                DiskRequest::new(format!("/img/{i}.vhdx")).mount(MountConfig::default()),
            )
            .await
            .unwrap();
        held.push(h.handle_id());
    }
    fs.fail();
    let (more, errors) = tokio::time::timeout(
        Duration::from_secs(120),
        churn_until_failure(&m, Duration::from_secs(30)),
    )
    .await
    .expect("the workload hung on a read-only filesystem");
    held.extend(more);
    assert!(
        !errors.is_empty(),
        "the read-only filesystem went unnoticed"
    );
    // ext4 answers writes after its error with EROFS or EIO, depending on the path.
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Read-only file system") || e.contains("Input/output error")),
        "no error names the failed filesystem: {errors:?}"
    );
    println!("read-only ext4: first error: {}", errors[0]);
    let _ = m.close().await;
    // A journal on a read-only filesystem cannot be opened for writing: a clear error.
    match open(&dir, &vm).await {
        Err(e) => assert!(
            e.to_string().contains("Read-only file system")
                || e.to_string().contains("Input/output error"),
            "{e}"
        ),
        Ok(_) => panic!("a journal on a read-only filesystem opened for writing"),
    }
    // The CLI still audits it (the copy goes to TMPDIR): a result or a clear error, no panic.
    for cmd in ["status", "verify", "replay"] {
        let o = Command::new(env!("CARGO_BIN_EXE_lunledger"))
            .args([cmd, dir.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            matches!(o.status.code(), Some(0..=2)) && !err.contains("panicked"),
            "{cmd} on a read-only journal: {:?} {err}",
            o.status
        );
    }
    fs.repair();
    let m = open(&dir, &vm).await.expect("reopen after repair");
    check_recovered(&m, &vm, &held, "read-only ext4").await;
    release_all_and_check_empty(&m, &vm, "read-only ext4").await;
    m.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_on_a_full_temporary_directory_says_so_and_work_dir_helps() {
    let journal = tempfile::tempdir().unwrap();
    let vm = SimVm::new();
    let m = open(journal.path(), &vm).await.unwrap();
    for i in 0..20 {
        let h = m
            .add_virtual_disk(DiskRequest::new(format!("/img/{i}.vhdx")).read_only(true))
            .await
            .unwrap();
        h.release().await.unwrap();
    }
    m.close().await.unwrap();
    let full = tmpfs("512k");
    fill(&full.at, 0);
    let d = journal.path().to_str().unwrap();
    for cmd in ["status", "verify", "replay"] {
        let o = Command::new(env!("CARGO_BIN_EXE_lunledger"))
            .args([cmd, d])
            .env("TMPDIR", &full.at)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("No space left on device") && err.contains("--work-dir"),
            "{cmd}: {err}"
        );
        let work = tempfile::tempdir().unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_lunledger"))
            .args([cmd, d, "--work-dir", work.path().to_str().unwrap()])
            .env("TMPDIR", &full.at)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{cmd} --work-dir: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
