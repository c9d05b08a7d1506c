//! `lunledger-test-support`: what the tests, the benches and the fuzz targets share (dev-only;
//! never published). One copy of each: the simulated-VM helpers below, the reference model the
//! property test and the `manager_ops` fuzz target both check against ([`model`]), the crash
//! matrix's scenarios ([`scenarios`]), the backend conformance suite ([`conformance`]), the fuzz
//! targets' logic ([`targets`]), an observer of a QEMU VM outside lunledger ([`observer`]),
//! headless Chromium ([`chromium`]) and the `lunledger` binary ([`cli`]).
//!
//! The crash points and storage faults some of them use need the `testing` feature (it turns on
//! `lunledger/testing`); the main crate's own `testing` feature turns it on here.
#![deny(missing_docs, missing_debug_implementations)]

pub mod chromium;
pub mod cli;
pub mod conformance;
#[cfg(feature = "testing")]
pub mod model;
pub mod observer;
#[cfg(feature = "testing")]
pub mod scenarios;
#[cfg(feature = "testing")]
pub mod targets;

use lunledger::backend::sim::SimVm;
use lunledger::model::{GuestOs, ManagerConfig};
use lunledger::recovery::State;
use lunledger::{Manager, ManagerOptions};
use std::collections::BTreeSet;
use std::path::Path;

/// hcsshim's test configuration: 4 controllers x 64 LUNs.
pub fn config() -> ManagerConfig {
    ManagerConfig {
        guest: Default::default(),
        controllers: 4,
        luns_per_controller: 64,
        mount_format: "/var/run/scsi/%d".into(),
        reserved: vec![],
    }
}

/// Both guest kinds, for tests that run once per guest.
pub const GUESTS: [GuestOs; 2] = [GuestOs::Linux, GuestOs::Windows];

/// [`config`] for `guest`: Linux as hcsshim's tests; Windows as a WCOW utility VM (one
/// controller, hcsshim's `c:\mounts\scsi\m%d`).
pub fn config_for(guest: GuestOs) -> ManagerConfig {
    match guest {
        GuestOs::Linux => config(),
        GuestOs::Windows => ManagerConfig::wcow_default(),
    }
}

/// Opens a manager on `dir` with `vm`'s backends and [`config`]; panics if it cannot.
pub async fn open(dir: &Path, vm: &SimVm) -> Manager {
    open_opts(dir, vm, ManagerOptions::new(config())).await
}

/// [`open`] with `opts` (a test's own configuration or options) instead of [`config`]'s defaults.
pub async fn open_opts(dir: &Path, vm: &SimVm, opts: ManagerOptions) -> Manager {
    match Manager::open_with(dir, opts, vm.host_backend(), vm.guest_backend()).await {
        Ok(m) => m,
        Err(e) => panic!("open: {e}"),
    }
}

/// Replaying the whole journal from scratch gives exactly the live state.
pub async fn assert_replay_equals_live(m: &Manager) {
    if let Err(e) = m.sync().await {
        panic!("sync: {e}");
    }
    let live = m.state();
    let records: Vec<_> = m
        .journal()
        .read_from(1)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("reading the journal: {e}"));
    let replayed = State::fold(records.iter()).unwrap_or_else(|e| panic!("fold: {e}"));
    assert_eq!(replayed, live, "replay differs from the live state");
    let v = live.violations();
    assert!(v.is_empty(), "invariants violated: {v:?}");
}

/// The simulated VM holds exactly what the journal says is attached and mounted: every live
/// attachment and mount, plus teardowns still due, and nothing else.
pub fn assert_vm_matches(m: &Manager, vm: &SimVm) {
    let st = m.state();
    let snap = vm.snapshot();
    let vm_slots: BTreeSet<_> = snap.attachments.iter().map(|a| a.slot).collect();
    let vm_paths: BTreeSet<_> = snap.mounts.keys().cloned().collect();
    let (want_slots, want_paths) = st.needed_on_vm();
    assert_eq!(
        vm_slots, want_slots,
        "VM attachments differ from the journal's"
    );
    assert_eq!(vm_paths, want_paths, "VM mounts differ from the journal's");
    for (id, h) in &st.handles {
        assert!(
            vm_slots.contains(&h.slot),
            "handle {id} needs slot {}",
            h.slot
        );
        if h.mount.is_some() {
            assert!(vm_paths.contains(&h.path), "handle {id} needs {}", h.path);
        }
    }
}

/// A fresh temporary directory for a journal (removed when dropped); panics if none can be made.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

/// A child process the kill -9 tests run and SIGKILL: it prints `got N` when an add returned
/// handle N and `releasing N` before it starts releasing N.
#[derive(Debug)]
pub struct Victim {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<Vec<String>>>,
    killed: bool,
}

/// A test that panics before `kill` must not leave its child running.
impl Drop for Victim {
    fn drop(&mut self) {
        if !self.killed {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a killed child reported: handles it got, and handles it had started releasing (those
/// may be live or released after recovery; the others must be live).
#[derive(Debug)]
pub struct Reported {
    /// `got N` lines.
    pub got: BTreeSet<lunledger::model::HandleId>,
    /// `releasing N` lines.
    pub releasing: BTreeSet<lunledger::model::HandleId>,
}

impl Reported {
    /// Handles the child got, never started releasing, and that are not in `live`.
    pub fn lost(&self, live: &BTreeSet<lunledger::model::HandleId>) -> Vec<u64> {
        self.got
            .difference(&self.releasing)
            .filter(|h| !live.contains(h))
            .copied()
            .collect()
    }
}

impl Victim {
    /// Spawns `cmd` with its stdout read line by line on a thread.
    pub fn spawn(mut cmd: std::process::Command) -> Victim {
        use std::io::{BufRead, BufReader};
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l.clone());
                lines.push(l);
            }
            lines
        });
        Victim {
            child,
            lines,
            reader: Some(reader),
            killed: false,
        }
    }

    /// Waits (up to `limit`) for the child's first line: the kill clock starts there, so the
    /// kill lands in its workload rather than in its start-up.
    pub fn wait_started(&self, limit: std::time::Duration) {
        let _ = self.lines.recv_timeout(limit);
    }

    /// Waits (up to `limit`) for a line equal to `line`; whether it came.
    pub fn wait_line(&self, line: &str, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == line => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }

    /// SIGKILLs the child, reaps it, and returns whether it had exited on its own and what it
    /// reported.
    pub fn kill(mut self) -> (bool, Reported) {
        // std's kill is SIGKILL on Unix.
        self.child.kill().unwrap_or_else(|e| panic!("kill: {e}"));
        let status = self.child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
        self.killed = true;
        let lines = self
            .reader
            .take()
            .and_then(|r| r.join().ok())
            .unwrap_or_default();
        let ids = |prefix: &str| -> BTreeSet<_> {
            lines
                .iter()
                .filter_map(|l| l.strip_prefix(prefix)?.parse().ok())
                .collect()
        };
        let reported = Reported {
            got: ids("got "),
            releasing: ids("releasing "),
        };
        (status.success(), reported)
    }
}

/// Copies a directory tree (a journal fixture, before opening it: opening writes).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
    for e in entries {
        let e = e.unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
        let t = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t)
                .unwrap_or_else(|e| panic!("copying to {}: {e}", t.display()));
        }
    }
}
