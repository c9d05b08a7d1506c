//! Helpers shared by the manager's integration tests.
#![allow(dead_code)]

use lunledger::backend::sim::SimVm;
use lunledger::journal::ManagerConfig;
use lunledger::recovery::State;
use lunledger::{Manager, ManagerOptions};
use std::collections::BTreeSet;
use std::path::Path;

/// hcsshim's test configuration: 4 controllers x 64 LUNs.
pub fn config() -> ManagerConfig {
    ManagerConfig {
        controllers: 4,
        luns_per_controller: 64,
        mount_format: "/var/run/scsi/%d".into(),
        reserved: vec![],
    }
}

pub async fn open(dir: &Path, vm: &SimVm) -> Manager {
    open_opts(dir, vm, ManagerOptions::new(config())).await
}

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

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}
