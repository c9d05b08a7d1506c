//! When `--follow` stops: Ctrl-C (a SIGINT handler that only sets a flag, so the polling loop
//! ends normally and the temporary journal copies are removed), or a reader that went away.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Installs the handler (SIGINT and SIGTERM).
pub fn install() {
    let handler = on_sigint as extern "C" fn(libc::c_int);
    // SAFETY: the handler only performs an atomic store, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

/// Whether Ctrl-C was pressed.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
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
