//! hcsshim's SCSI tests for both guest kinds (its `osType` "linux" and "windows"), run on the
//! simulated VM: `internal/uvm/scsi/manager_test.go` (every test, once per guest), and the
//! skipped functional tests in `test/functional/uvm_scsi_test.go` (`TestSCSIAddRemoveLCOW`,
//! `TestSCSIAddRemoveWCOW`, `TestParallelScsiOps`). Then the Windows behaviour of hcsshim's
//! `backend.go` (`mountRequest`, `unmountRequest`, `unplugRequest`), `guestpath/paths.go` and
//! `uvm/create.go`, each with the test that holds lunledger to it.

use lunledger_test_support as common;

use common::*;
use lunledger::backend::sim::{SimCall, SimOp, SimVm};
use lunledger::model::{GuestOs, ManagerConfig, Slot};
use lunledger::{DiskRequest, Error, Manager, ManagerOptions, Mount, MountConfig};
use std::path::Path;

/// A guest path in `guest`'s syntax: `/name` or `c:\name`.
fn gpath(guest: GuestOs, name: &str) -> String {
    match guest {
        GuestOs::Linux => format!("/{name}"),
        GuestOs::Windows => format!(r"c:\{name}"),
    }
}

fn ro_mount(path: &str) -> DiskRequest {
    DiskRequest::new(path)
        .read_only(true)
        .mount(MountConfig::default())
}

async fn open_guest(dir: &Path, vm: &SimVm, cfg: ManagerConfig) -> Manager {
    open_opts(dir, vm, ManagerOptions::new(cfg)).await
}

/// The VM calls made, without inspections (recovery's), in order.
fn calls(vm: &SimVm) -> Vec<SimCall> {
    vm.call_log()
        .into_iter()
        .map(|c| c.call)
        .filter(|c| c.op() != SimOp::Inspect)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// manager_test.go, once per guest (its 4 x 64 manager; Windows: a WCOW VM's 1 x 64)
// ---------------------------------------------------------------------------------------------

/// `TestAddAddRemoveRemove`: two adds of one disk share the attachment and the guest path; the
/// disk is detached on the second release only.
#[tokio::test]
async fn add_add_remove_remove_both_guests() {
    for guest in GUESTS {
        let dir = tempdir();
        let vm = SimVm::with_guest(guest);
        let m = open_guest(dir.path(), &vm, config_for(guest)).await;
        let m1 = m.add_virtual_disk(ro_mount("path")).await.unwrap();
        let m2 = m.add_virtual_disk(ro_mount("path")).await.unwrap();
        assert!(!m1.guest_path().is_empty(), "{guest}");
        assert_eq!(m1.guest_path(), m2.guest_path(), "{guest}");
        let paths: Vec<_> = vm
            .snapshot()
            .attachments
            .iter()
            .map(|a| a.disk.path.clone())
            .collect();
        assert_eq!(paths, vec!["path".to_string()], "{guest}");
        m1.release().await.unwrap();
        m2.release().await.unwrap();
        assert!(vm.snapshot().attachments.is_empty(), "{guest}");
        assert_replay_equals_live(&m).await;
        m.close().await.unwrap();
    }
}

/// `TestGuestPath`: a requested path is used; an add without one reuses the matching mount; an
/// add asking for another path still gets the existing mount; the mount goes on the last release.
#[tokio::test]
async fn guest_path_both_guests() {
    for guest in GUESTS {
        let dir = tempdir();
        let vm = SimVm::with_guest(guest);
        let m = open_guest(dir.path(), &vm, config_for(guest)).await;
        let (mnt1, mnt2) = (gpath(guest, "mnt1"), gpath(guest, "mnt2"));
        let mounts = |vm: &SimVm| vm.snapshot().mounts.keys().cloned().collect::<Vec<_>>();
        let m1 = m
            .add_virtual_disk(ro_mount("path").guest_path(&mnt1))
            .await
            .unwrap();
        assert_eq!(m1.guest_path(), mnt1, "{guest}");
        assert_eq!(mounts(&vm), vec![mnt1.clone()], "{guest}");
        let m2 = m.add_virtual_disk(ro_mount("path")).await.unwrap();
        assert_eq!(m2.guest_path(), mnt1, "{guest}");
        assert_eq!(mounts(&vm), vec![mnt1.clone()], "{guest}");
        let m3 = m
            .add_virtual_disk(ro_mount("path").guest_path(&mnt2))
            .await
            .unwrap();
        assert_eq!(m3.guest_path(), mnt1, "{guest}: the existing mount wins");
        assert_eq!(mounts(&vm), vec![mnt1.clone()], "{guest}");
        m3.release().await.unwrap();
        assert_eq!(mounts(&vm), vec![mnt1.clone()], "{guest}");
        m2.release().await.unwrap();
        assert_eq!(mounts(&vm), vec![mnt1.clone()], "{guest}");
        m1.release().await.unwrap();
        assert!(mounts(&vm).is_empty(), "{guest}");
        assert!(vm.snapshot().is_empty(), "{guest}");
        m.close().await.unwrap();
    }
}

/// `TestConflictingGuestPath`: another disk asking for a path in use is an error (and its
/// attach is rolled back).
#[tokio::test]
async fn conflicting_guest_path_both_guests() {
    for guest in GUESTS {
        let dir = tempdir();
        let vm = SimVm::with_guest(guest);
        let m = open_guest(dir.path(), &vm, config_for(guest)).await;
        let mnt1 = gpath(guest, "mnt1");
        let _m1 = m
            .add_virtual_disk(ro_mount("path").guest_path(&mnt1))
            .await
            .unwrap();
        let e = m
            .add_virtual_disk(ro_mount("path2").guest_path(&mnt1))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::GuestPathConflict { path } if *path == mnt1),
            "{guest}: {e}"
        );
        assert_eq!(vm.snapshot().attachments.len(), 1, "{guest}: rolled back");
        assert_replay_equals_live(&m).await;
        m.close().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// test/functional/uvm_scsi_test.go
// ---------------------------------------------------------------------------------------------

/// The functional tests' VMs: LCOW with 4 controllers (hcsshim forces 4 on RS5+ without VPMem),
/// WCOW with one controller whose 0:0 holds the UVM's own scratch.
fn functional_config(guest: GuestOs) -> (ManagerConfig, usize) {
    match guest {
        GuestOs::Linux => (ManagerConfig::lcow_default(), 64),
        GuestOs::Windows => (
            ManagerConfig {
                reserved: vec![Slot::new(0, 0)],
                ..ManagerConfig::wcow_default()
            },
            // "Windows: 63 as the UVM scratch is at 0:0"
            63,
        ),
    }
}

fn sandboxes(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("/layers/{i}/sandbox.vhdx"))
        .collect()
}

async fn add_all(m: &Manager, disks: &[String], attach_only: bool) -> Vec<Mount> {
    let mut out = Vec::new();
    for d in disks {
        let mut r = DiskRequest::new(d.clone()).vm_id("uvm-1");
        if !attach_only {
            r = r.mount(MountConfig::default());
        }
        out.push(
            m.add_virtual_disk(r)
                .await
                .unwrap_or_else(|e| panic!("add {d}: {e}")),
        );
    }
    out
}

async fn release_all(mounts: Vec<Mount>) {
    for h in mounts {
        h.release().await.unwrap_or_else(|e| panic!("release: {e}"));
    }
}

/// `testSCSIAddRemoveSingle` (hcsshim runs it for WCOW): every slot filled attach-only, all
/// removed, filled again, removed again; one more disk than fits is `NoAvailableLocation` (the
/// functional test's TODO).
#[tokio::test]
async fn scsi_add_remove_single_both_guests() {
    for guest in GUESTS {
        let dir = tempdir();
        let vm = SimVm::with_guest(guest);
        let (cfg, n) = functional_config(guest);
        let controllers = cfg.controllers as usize;
        let m = open_guest(dir.path(), &vm, cfg).await;
        // The LCOW VM has 4 x 64 slots; fill them all to reach the "one more" error.
        let disks = sandboxes(if guest == GuestOs::Linux {
            controllers * 64
        } else {
            n
        });
        for _ in 0..2 {
            let mounts = add_all(&m, &disks, true).await;
            assert_eq!(vm.snapshot().attachments.len(), disks.len(), "{guest}");
            if guest == GuestOs::Windows {
                assert!(mounts.iter().all(|h| h.controller() == 0 && h.lun() > 0));
            }
            let e = m
                .add_virtual_disk(DiskRequest::new("/layers/extra/sandbox.vhdx"))
                .await
                .unwrap_err();
            assert!(matches!(e, Error::NoAvailableLocation), "{guest}: {e}");
            release_all(mounts).await;
            assert!(vm.snapshot().is_empty(), "{guest}");
        }
        assert_eq!(
            vm.calls(SimOp::Unplug),
            if guest == GuestOs::Windows {
                0
            } else {
                2 * disks.len() as u64
            }
        );
        assert_replay_equals_live(&m).await;
        m.close().await.unwrap();
    }
}

/// `testSCSIAddRemoveMultiple` (hcsshim runs it for LCOW only: "We only support re-adding the
/// same scsi device for lcow right now"; lunledger shares on Windows too): attach-only adds, the
/// same disks re-added with a mount share the attachments, the first releases only drop
/// references, the second remove the devices; then again; no mount path is left in the guest.
#[tokio::test]
async fn scsi_add_remove_multiple_both_guests() {
    for guest in GUESTS {
        let dir = tempdir();
        let vm = SimVm::with_guest(guest);
        let (cfg, n) = functional_config(guest);
        let m = open_guest(dir.path(), &vm, cfg).await;
        let disks = sandboxes(n);
        for _ in 0..2 {
            let first = add_all(&m, &disks, true).await;
            let second = add_all(&m, &disks, false).await;
            for (a, b) in first.iter().zip(&second) {
                assert_eq!(
                    a.slot(),
                    b.slot(),
                    "{guest}: the re-add shares the attachment"
                );
            }
            assert_eq!(vm.snapshot().attachments.len(), n, "{guest}");
            assert_eq!(vm.snapshot().mounts.len(), n, "{guest}");
            release_all(first).await;
            assert_eq!(vm.snapshot().attachments.len(), n, "{guest}: refs remain");
            let paths: Vec<String> = second.iter().map(|h| h.guest_path().to_string()).collect();
            release_all(second).await;
            let view = vm.guest_view();
            for p in &paths {
                assert!(
                    !view.mounts.iter().any(|g| g.path == *p),
                    "{guest}: {p} left"
                );
            }
            assert!(vm.snapshot().is_empty(), "{guest}");
        }
        assert_replay_equals_live(&m).await;
        m.close().await.unwrap();
    }
}

/// `TestParallelScsiOps`: 16 workers, each adding a fresh disk attach-only, releasing it, adding
/// it with a mount, releasing it (1000 iterations in all; `LUNLEDGER_PARALLEL_CYCLES` scales it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_scsi_ops_both_guests() {
    let iterations: usize = std::env::var("LUNLEDGER_PARALLEL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for guest in GUESTS {
        let dir = tempdir();
        let vm = SimVm::with_guest(guest);
        let m = open_guest(dir.path(), &vm, functional_config(guest).0).await;
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut workers = Vec::new();
        for w in 0..16 {
            let (m, next) = (m.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= iterations {
                        return;
                    }
                    let path = format!("/tmp/{w}-{i}-sandbox.vhdx");
                    let a = m
                        .add_virtual_disk(DiskRequest::new(path.clone()).vm_id("uvm-1"))
                        .await
                        .unwrap_or_else(|e| panic!("worker {w} iteration {i}: add: {e}"));
                    a.release()
                        .await
                        .unwrap_or_else(|e| panic!("worker {w}: release: {e}"));
                    let b = m
                        .add_virtual_disk(
                            DiskRequest::new(path)
                                .vm_id("uvm-1")
                                .mount(MountConfig::default()),
                        )
                        .await
                        .unwrap_or_else(|e| panic!("worker {w} iteration {i}: add: {e}"));
                    b.release()
                        .await
                        .unwrap_or_else(|e| panic!("worker {w}: release: {e}"));
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
        assert!(vm.snapshot().is_empty(), "{guest}");
        assert!(m.state().is_empty(), "{guest}");
        let unplugs = vm.calls(SimOp::Unplug);
        match guest {
            GuestOs::Windows => assert_eq!(unplugs, 0, "a Windows guest was asked to unplug"),
            GuestOs::Linux => assert_eq!(unplugs, 2 * iterations as u64),
        }
        assert_eq!(vm.calls(SimOp::Detach), 2 * iterations as u64, "{guest}");
        assert_replay_equals_live(&m).await;
        m.close().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// hcsshim's Windows behaviour
// ---------------------------------------------------------------------------------------------

/// `guestpath.WCOWGlobalScsiMountPrefixFmt`: generated Windows paths are `c:\mounts\scsi\m<N>`,
/// indexes reused once free.
#[tokio::test]
async fn windows_generated_paths_use_hcsshims_wcow_format() {
    let dir = tempdir();
    let vm = SimVm::with_guest(GuestOs::Windows);
    let m = open_guest(dir.path(), &vm, ManagerConfig::wcow_default()).await;
    let a = m.add_virtual_disk(ro_mount("a")).await.unwrap();
    let b = m.add_virtual_disk(ro_mount("b")).await.unwrap();
    assert_eq!(a.guest_path(), r"c:\mounts\scsi\m0");
    assert_eq!(b.guest_path(), r"c:\mounts\scsi\m1");
    a.release().await.unwrap();
    let c = m.add_virtual_disk(ro_mount("c")).await.unwrap();
    assert_eq!(c.guest_path(), r"c:\mounts\scsi\m0", "index 0 is reused");
    assert!(vm.snapshot().mounts.contains_key(r"c:\mounts\scsi\m1"));
    m.close().await.unwrap();
}

/// `unplugRequest` for "windows" is a no-op: a release is unmount then detach, and the journal's
/// trail has no unplug step.
#[tokio::test]
async fn windows_teardown_is_unmount_then_detach_without_unplug() {
    let dir = tempdir();
    let vm = SimVm::with_guest(GuestOs::Windows);
    let m = open_guest(dir.path(), &vm, ManagerConfig::wcow_default()).await;
    let h = m.add_virtual_disk(ro_mount("a")).await.unwrap();
    vm.clear_call_log();
    h.release().await.unwrap();
    let ops: Vec<SimOp> = calls(&vm).iter().map(SimCall::op).collect();
    assert_eq!(ops, vec![SimOp::Unmount, SimOp::Detach]);
    m.sync().await.unwrap();
    let steps: Vec<String> = m
        .journal()
        .read_from(1)
        .filter_map(Result::ok)
        .filter_map(|r| match r.event {
            lunledger::model::Event::StepIntent { step, .. } => Some(step.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(steps, vec!["attach", "mount", "unmount", "detach"]);
    assert_replay_equals_live(&m).await;
    m.close().await.unwrap();
}

/// `mountRequest` for "windows" refuses encrypted, options, ensure-filesystem, filesystem and
/// partition ("WCOW does not support ..."). lunledger refuses them with a typed error before
/// anything is journaled or asked of the VM (hcsshim only after attaching); the same requests
/// are accepted on Linux. `blockDev` and read-only are silently ignored on Windows, as there.
#[tokio::test]
async fn windows_refuses_hcsshims_unsupported_mounts_before_journaling_or_calling() {
    let refused = [
        (
            "encrypted",
            MountConfig {
                encrypted: true,
                ..Default::default()
            },
        ),
        (
            "options",
            MountConfig {
                options: vec!["ro".into()],
                ..Default::default()
            },
        ),
        (
            "ensure_filesystem",
            MountConfig {
                ensure_filesystem: true,
                ..Default::default()
            },
        ),
        (
            "filesystem",
            MountConfig {
                filesystem: "ntfs".into(),
                ..Default::default()
            },
        ),
        (
            "partition",
            MountConfig {
                partition: 1,
                ..Default::default()
            },
        ),
    ];
    let dir = tempdir();
    let vm = SimVm::with_guest(GuestOs::Windows);
    let m = open_guest(dir.path(), &vm, ManagerConfig::wcow_default()).await;
    m.sync().await.unwrap();
    let seq = m.journal().last_seq();
    vm.clear_call_log();
    for (name, cfg) in &refused {
        let e = m
            .add_virtual_disk(DiskRequest::new("d").vm_id("uvm").mount(cfg.clone()))
            .await
            .unwrap_err();
        match &e {
            Error::UnsupportedByGuest {
                guest: GuestOs::Windows,
                what,
            } => {
                assert!(what.contains(name), "{what}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    m.sync().await.unwrap();
    assert_eq!(
        m.journal().last_seq(),
        seq,
        "a refused add journaled something"
    );
    assert!(
        calls(&vm).is_empty(),
        "a refused add called the VM: {:?}",
        calls(&vm)
    );
    // Ignored, as hcsshim's Windows request builder ignores them.
    let h = m
        .add_virtual_disk(DiskRequest::new("d").read_only(true).mount(MountConfig {
            block_dev: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    h.release().await.unwrap();
    m.close().await.unwrap();
    // Linux takes every one of them.
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    for (name, cfg) in refused {
        let h = m
            .add_virtual_disk(DiskRequest::new(format!("/d/{name}")).mount(cfg))
            .await
            .unwrap_or_else(|e| panic!("linux {name}: {e}"));
        h.release().await.unwrap();
    }
    m.close().await.unwrap();
}

/// Guest paths follow the guest: drive-letter absolute on Windows, POSIX on Linux; a NUL or a
/// `..` is refused on both; each is a typed error before anything is journaled.
#[tokio::test]
async fn guest_paths_are_validated_by_the_guests_rules() {
    let dir = tempdir();
    let vm = SimVm::with_guest(GuestOs::Windows);
    let m = open_guest(dir.path(), &vm, ManagerConfig::wcow_default()).await;
    for bad in ["/run/m", r"\m", "c:m", r"c:\a\..\b", "c:\\a\0"] {
        let e = m
            .add_virtual_disk(ro_mount("d").guest_path(bad))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{bad:?}: {e}");
    }
    let ok = m
        .add_virtual_disk(ro_mount("d").guest_path(r"D:\data\layer"))
        .await
        .unwrap();
    assert_eq!(ok.guest_path(), r"D:\data\layer");
    ok.release().await.unwrap();
    m.close().await.unwrap();

    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let e = m
        .add_virtual_disk(ro_mount("d").guest_path(r"c:\data"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    m.close().await.unwrap();
}

/// `uvm/create.go`: "exactly 1 SCSI controller is required for WCOW" (so every Windows mount
/// is on controller 0, the only one `mountRequest` takes); the mount format must be a Windows
/// path with one `%d`. Invalid configurations are typed errors.
#[tokio::test]
async fn windows_configurations_are_checked() {
    let vm = SimVm::with_guest(GuestOs::Windows);
    let bad = [
        ManagerConfig {
            controllers: 4,
            ..ManagerConfig::wcow_default()
        },
        ManagerConfig {
            mount_format: "/run/mounts/scsi/m%d".into(),
            ..ManagerConfig::wcow_default()
        },
        ManagerConfig {
            mount_format: r"c:\mounts\m".into(),
            ..ManagerConfig::wcow_default()
        },
        ManagerConfig {
            mount_format: r"c:\m%d\%d".into(),
            ..ManagerConfig::wcow_default()
        },
    ];
    for cfg in bad {
        let dir = tempdir();
        let r = Manager::open(
            dir.path(),
            cfg.clone(),
            vm.host_backend(),
            vm.guest_backend(),
        )
        .await;
        assert!(
            matches!(r, Err(Error::InvalidConfig(_))),
            "{cfg:?} was accepted"
        );
    }
    // A Linux format on a Linux guest, and a Windows one on Linux, the other way round.
    let dir = tempdir();
    let linux = ManagerConfig {
        mount_format: r"c:\m%d".into(),
        ..ManagerConfig::lcow_default()
    };
    let r = Manager::open(dir.path(), linux, vm.host_backend(), vm.guest_backend()).await;
    assert!(
        matches!(r, Err(Error::InvalidConfig(_))),
        "{:?}",
        r.as_ref().err()
    );
}

/// The guest OS is part of the journaled configuration: a journal is never reopened as the
/// other OS (typed error, nothing changed), and a VM whose guest differs from the configuration
/// is a mismatch found before the journal is touched.
#[tokio::test]
async fn a_journal_is_never_reopened_as_the_other_guest() {
    let dir = tempdir();
    let linux_vm = SimVm::new();
    let m = open(dir.path(), &linux_vm).await;
    let h = m.add_virtual_disk(ro_mount("a")).await.unwrap();
    let id = h.handle_id();
    drop(h);
    m.close().await.unwrap();

    let windows_vm = SimVm::with_guest(GuestOs::Windows);
    let r = Manager::open(
        dir.path(),
        ManagerConfig::wcow_default(),
        windows_vm.host_backend(),
        windows_vm.guest_backend(),
    )
    .await;
    assert!(
        matches!(
            r,
            Err(Error::GuestOsMismatch {
                journal: GuestOs::Linux,
                requested: GuestOs::Windows
            })
        ),
        "{:?}",
        r.as_ref().err()
    );
    assert!(
        windows_vm.call_log().is_empty(),
        "the refused open called the VM"
    );
    // The configuration and the VM disagree: refused before the journal is opened.
    let r = Manager::open(
        dir.path(),
        ManagerConfig::wcow_default(),
        linux_vm.host_backend(),
        linux_vm.guest_backend(),
    )
    .await;
    assert!(
        matches!(r, Err(Error::VmMismatch { side: "guest", .. })),
        "{:?}",
        r.as_ref().err()
    );
    // Reopened as what it is, nothing was lost.
    let m = open(dir.path(), &linux_vm).await;
    assert!(m.handle(id).is_some());
    m.handle(id).unwrap().release().await.unwrap();
    assert!(linux_vm.snapshot().is_empty());
    m.close().await.unwrap();
}

/// Recovery on a Windows guest: a shim that stopped right after a release's unmount leaves the
/// attachment due for its detach (never an unplug), and recovery detaches it.
#[tokio::test]
async fn windows_recovery_detaches_without_unplug() {
    use lunledger::crash::{Boundary, CrashHook, CrashPoint, Site};
    use lunledger::model::Step;
    struct StopAfterUnmount;
    impl CrashHook for StopAfterUnmount {
        fn crash_at(&self, p: &CrashPoint) -> bool {
            matches!(p.site, Site::Step(Step::Unmount, _)) && p.boundary == Boundary::AfterOutcome
        }
    }
    let dir = tempdir();
    let vm = SimVm::with_guest(GuestOs::Windows);
    let mut o = ManagerOptions::new(ManagerConfig::wcow_default());
    o.crash_hook = Some(std::sync::Arc::new(StopAfterUnmount));
    let m = open_opts(dir.path(), &vm, o).await;
    let h = m.add_virtual_disk(ro_mount("a")).await.unwrap();
    let r = h.release().await;
    assert!(
        matches!(r, Err(Error::Crashed(_))),
        "{:?}",
        r.as_ref().err()
    );
    let _ = m.close().await;
    assert!(vm.snapshot().mounts.is_empty() && vm.snapshot().attachments.len() == 1);

    vm.clear_call_log();
    let m = open_guest(dir.path(), &vm, ManagerConfig::wcow_default()).await;
    let ops: Vec<SimOp> = calls(&vm).iter().map(SimCall::op).collect();
    // The unmount's outcome rode the next durable point, which the crash never reached: the
    // crash dropped it, so recovery repeats the (idempotent) unmount, then detaches. Never an
    // unplug.
    assert_eq!(
        ops,
        vec![SimOp::Unmount, SimOp::Detach],
        "recovery's teardown"
    );
    assert!(vm.snapshot().is_empty());
    assert!(m.state().is_empty());
    assert_replay_equals_live(&m).await;
    m.close().await.unwrap();
}
