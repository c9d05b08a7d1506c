//! The CLI on a Windows guest: the demo tells the same story with Windows paths and no unplug,
//! and `replay` and `status` print Windows paths as they are (backslashes kept, not escaped).

use lunledger_test_support as common;

use common::cli::{cli, text};
use common::tempdir;
use lunledger::backend::sim::SimVm;
use lunledger::journal::{Journal, JournalOptions};
use lunledger::model::{Event, GuestOs, ManagerConfig, Step};
use lunledger::{DiskRequest, Manager, MountConfig};

#[test]
fn windows_demo_recovers_with_windows_paths_and_no_unplug() {
    let dir = tempdir();
    let j = dir.path().join("journal");
    let o = cli(&[
        "demo",
        "--guest",
        "windows",
        "--journal",
        j.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("sent SIGKILL"), "{out}");
    assert!(out.contains(r"c:\mounts\scsi\m0"), "{out}");
    assert!(!out.contains("/run/mounts"), "{out}");
    assert!(out.contains("PASS"), "{out}");
    // The trail has detaches and no unplug at all.
    let journal = Journal::open(&j, JournalOptions::default()).unwrap();
    let steps: Vec<Step> = journal
        .read_from(1)
        .map(|r| r.unwrap())
        .filter_map(|r| match r.event {
            Event::StepIntent { step, .. } => Some(step),
            _ => None,
        })
        .collect();
    assert!(steps.contains(&Step::Detach), "{steps:?}");
    assert!(!steps.contains(&Step::Unplug), "{steps:?}");
    drop(journal);
    let vm = SimVm::persistent(dir.path().join("journal.sim-vm.json")).unwrap();
    assert_eq!(vm.snapshot().guest, GuestOs::Windows);
    assert!(vm.snapshot().is_empty());
    assert_eq!(cli(&["verify", j.to_str().unwrap()]).status.code(), Some(0));
}

#[test]
fn windows_demo_on_qemu_is_a_usage_error() {
    let o = cli(&["demo", "--guest", "windows", "--backend", "qemu"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no Windows VM"), "{}", text(&o));
}

#[test]
fn replay_and_status_print_windows_paths_as_they_are() {
    let dir = tempdir();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let vm = SimVm::with_guest(GuestOs::Windows);
        let m = Manager::open(
            dir.path(),
            ManagerConfig::wcow_default(),
            vm.host_backend(),
            vm.guest_backend(),
        )
        .await
        .unwrap();
        let held = m
            .add_virtual_disk(
                DiskRequest::new(r"C:\ProgramData\vm\layer.vhdx")
                    .read_only(true)
                    .mount(MountConfig::default())
                    .guest_path(r"c:\layers\base"),
            )
            .await
            .unwrap();
        let gone = m
            .add_virtual_disk(DiskRequest::new("b").mount(MountConfig::default()))
            .await
            .unwrap();
        gone.release().await.unwrap();
        drop(held);
        m.close().await.unwrap();
    });
    let d = dir.path().to_str().unwrap();
    let replay = text(&cli(&["replay", d]));
    assert!(replay.contains(r"c:\layers\base"), "{replay}");
    assert!(replay.contains(r"C:\ProgramData\vm\layer.vhdx"), "{replay}");
    assert!(replay.contains(r"c:\mounts\scsi\m1"), "{replay}");
    assert!(!replay.contains(r"\\"), "a backslash was escaped: {replay}");
    assert!(!replay.contains("unplug"), "{replay}");
    let status = text(&cli(&["status", d]));
    assert!(status.contains(r"c:\layers\base"), "{status}");
    assert!(!status.contains(r"\\"), "a backslash was escaped: {status}");
    // JSON escapes it as JSON must, and decodes back to the path.
    let json = cli(&["replay", d, "--json"]);
    let paths: Vec<String> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["path"].as_str().map(str::to_string))
        .collect();
    assert!(paths.iter().any(|p| p == r"c:\layers\base"), "{paths:?}");
}
