//! Ctrl-C and SIGTERM. A handler that only records the signal (async-signal-safe) lets `--follow`
//! and the demo end their loops normally. Audit commands also register the private journal copy
//! they work on: a watchdog thread removes it and ends the process when a signal arrives and the
//! command does not end by itself within a moment (it may be busy, or blocked writing to a pipe
//! nobody reads), so a stopped command never leaves a copy of the journal behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// The signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Whether the running command ends by itself on a signal (`--follow`): the watchdog waits for
/// it a moment before stepping in.
static GRACEFUL: AtomicBool = AtomicBool::new(false);
/// Private directories to remove if the process is stopped.
static PRIVATE_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();
static WATCHDOG: Once = Once::new();

/// How long a graceful command has to end by itself after a signal.
const GRACE: Duration = Duration::from_secs(2);
/// How often the watchdog looks for a signal.
const POLL: Duration = Duration::from_millis(20);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Installs the handler (SIGINT and SIGTERM); idempotent.
pub fn install() {
    INSTALL.call_once(|| {
        let handler = on_signal as extern "C" fn(libc::c_int);
        // SAFETY: the handler only performs an atomic store, which is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
            libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        }
    });
}

/// Whether Ctrl-C (or SIGTERM) was received.
pub fn requested() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// Says that the running command ends by itself when [`requested`] turns true.
pub fn set_graceful() {
    GRACEFUL.store(true, Ordering::SeqCst);
}

/// Registers a private directory to remove should the process be stopped by a signal, and
/// starts the watchdog that does it.
pub fn guard_private_dir(dir: &Path) {
    install();
    if let Ok(mut dirs) = PRIVATE_DIRS.lock() {
        dirs.push(dir.to_path_buf());
    }
    WATCHDOG.call_once(|| {
        // If the thread cannot start, the copy is still removed on every normal exit.
        let _ = std::thread::Builder::new()
            .name("lunledger-signals".into())
            .spawn(watchdog);
    });
}

/// Forgets a private directory (its owner removed it).
pub fn release_private_dir(dir: &Path) {
    if let Ok(mut dirs) = PRIVATE_DIRS.lock() {
        dirs.retain(|d| d != dir);
    }
}

fn watchdog() {
    let sig = loop {
        let sig = SIGNAL.load(Ordering::SeqCst);
        if sig != 0 {
            break sig;
        }
        std::thread::sleep(POLL);
    };
    if GRACEFUL.load(Ordering::SeqCst) {
        let start = Instant::now();
        while start.elapsed() < GRACE {
            std::thread::sleep(POLL);
        }
    }
    let dirs = PRIVATE_DIRS.lock().map(|d| d.clone()).unwrap_or_default();
    for d in dirs {
        // The command's own threads (sled's among them) may still write into the copy while it
        // is removed, making the last rmdir fail: try again a few times.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&d).is_ok() || !d.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // _exit, not exit: the main thread may hold stdout's lock (blocked on a full pipe), which
    // exit's flush of stdout would wait for forever.
    // SAFETY: _exit has no preconditions; it ends the process at once.
    unsafe { libc::_exit(128 + sig) };
}

/// Whether stdout is a pipe whose reader has gone (`| head` after it had enough): polling the
/// write end reports an error then. `--follow` stops instead of polling forever for nobody.
pub fn stdout_closed() -> bool {
    let mut fds = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout; poll only writes `revents`.
    let rc = unsafe { libc::poll(&mut fds, 1, 0) };
    rc > 0 && fds.revents & (libc::POLLERR | libc::POLLHUP) != 0
}
