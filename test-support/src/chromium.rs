//! Headless Chromium for the browser tests and the timeline benchmark: every run gets a fresh
//! profile directory (removed afterwards), is bounded by a timeout, and is killed by its
//! process group id when it overruns or when the caller panics.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// What one run printed and how long it took.
#[derive(Debug)]
pub struct Run {
    /// Standard output (the DOM, for `--dump-dom`).
    pub stdout: String,
    /// Wall time from spawn to exit.
    pub wall: Duration,
}

/// Kills the browser's process group (the browser and its helpers) unless it has been reaped.
struct Guard {
    child: Child,
    reaped: bool,
}

impl Guard {
    fn kill_group(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) with the negated id of the group the child leads; no memory involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_group();
            let _ = self.child.wait();
        }
        // Helpers still around after the browser exited go too (ESRCH when none are left).
        self.kill_group();
    }
}

/// One browser at a time per test process: the machine has few cores, and a browser starved
/// of them can run out of its virtual time budget before the page's scripts ran.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs Chromium headless on `url` with `extra` flags, bounded by `timeout`.
pub fn run(url: &str, extra: &[String], timeout: Duration) -> Result<Run, String> {
    // A test that panicked while holding the lock leaves nothing behind to protect.
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !Path::new(CHROMIUM).exists() {
        return Err(format!(
            "{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
        ));
    }
    let profile = tempfile::tempdir().map_err(|e| format!("profile dir: {e}"))?;
    let out_path = profile.path().join("stdout");
    let err_path = profile.path().join("stderr");
    let out = std::fs::File::create(&out_path).map_err(|e| format!("stdout file: {e}"))?;
    let err = std::fs::File::create(&err_path).map_err(|e| format!("stderr file: {e}"))?;
    let user_data = profile.path().join("profile");
    let started = Instant::now();
    let child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", user_data.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("spawning {CHROMIUM}: {e}"))?;
    let mut guard = Guard {
        child,
        reaped: false,
    };
    let status = loop {
        match guard.child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if started.elapsed() > timeout => {
                guard.kill_group();
                let _ = guard.child.wait();
                guard.reaped = true;
                let e = std::fs::read_to_string(&err_path).unwrap_or_default();
                return Err(format!(
                    "chromium on {url} did not finish within {timeout:?}; killed. stderr:\n{e}"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for chromium: {e}")),
        }
    };
    guard.reaped = true;
    let wall = started.elapsed();
    drop(guard);
    let stdout = std::fs::read_to_string(&out_path).map_err(|e| format!("reading stdout: {e}"))?;
    if !status.success() {
        let e = std::fs::read_to_string(&err_path).unwrap_or_default();
        return Err(format!(
            "chromium on {url} exited with {status}; stderr:\n{e}"
        ));
    }
    Ok(Run { stdout, wall })
}

/// The DOM of `url` after its scripts ran (the page's timers and frames included, up to
/// `budget_ms` of virtual time; 0: dumped once loaded, for a page too big to load within a
/// virtual time budget).
pub fn dump_dom(url: &str, budget_ms: u32, timeout: Duration) -> Result<Run, String> {
    let mut flags = vec!["--dump-dom".to_string()];
    if budget_ms > 0 {
        flags.push(format!("--virtual-time-budget={budget_ms}"));
    }
    run(url, &flags, timeout)
}

/// A PNG screenshot of `url` at `width` x `height`.
pub fn screenshot(
    url: &str,
    png: &Path,
    width: u32,
    height: u32,
    timeout: Duration,
) -> Result<Run, String> {
    run(
        url,
        &[
            format!("--screenshot={}", png.display()),
            format!("--window-size={width},{height}"),
            "--hide-scrollbars".into(),
        ],
        timeout,
    )
}

/// The value of attribute `name` on the `<body>` element of a dumped DOM.
pub fn body_attr(dom: &str, name: &str) -> Option<String> {
    let start = dom.find("<body")?;
    let tag = &dom[start..start + dom[start..].find('>')?];
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    let len = tag[at..].find('"')?;
    Some(tag[at..at + len].to_string())
}

/// A `file://` URL for `path` (absolute), with an optional `#fragment`.
pub fn file_url(path: &Path, fragment: &str) -> String {
    let mut u = format!("file://{}", path.display());
    if !fragment.is_empty() {
        u.push('#');
        u.push_str(fragment);
    }
    u
}
