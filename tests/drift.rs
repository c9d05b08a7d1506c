//! Drift between the journal and the VM, found by recovery: what the VM lost is marked lost (never
//! handed out again, still releasable), what the VM holds that the journal does not know is
//! reported, and detached only when the policy says so (our own old generations always are).

use lunledger_test_support as common;

use common::*;
use lunledger::backend::sim::{SimAttachment, SimVm};
use lunledger::model::{DiskKind, DiskSpec, Drift, Slot};
use lunledger::recovery::AttachPhase;
use lunledger::{DiskRequest, ManagerOptions, MountConfig};

fn foreign(slot: Slot) -> SimAttachment {
    SimAttachment {
        slot,
        attach: None,
        disk: DiskSpec {
            path: "/somebody/else.img".into(),
            read_only: false,
            kind: DiskKind::VirtualDisk,
            evd_type: None,
        },
        guest_visible: true,
    }
}

#[tokio::test]
async fn a_disk_the_vm_lost_is_marked_lost_and_never_handed_out() {
    let dir = tempdir();
    let vm = SimVm::new();
    let (id, slot) = {
        let m = open(dir.path(), &vm).await;
        let h = m
            .add_virtual_disk(DiskRequest::new("a").mount(MountConfig::default()))
            .await
            .unwrap();
        let r = (h.handle_id(), h.slot());
        m.close().await.unwrap();
        r
    };
    // The VM loses the disk and its mount behind our back.
    vm.edit_state(|s| {
        s.attachments.clear();
        s.mounts.clear();
    })
    .unwrap();
    let m = open(dir.path(), &vm).await;
    let report = m.last_recovery().unwrap();
    assert!(
        report.drift.contains(&Drift::MissingAttachment { slot }),
        "{:?}",
        report.drift
    );
    assert_eq!(m.state().attachments[&slot].phase, AttachPhase::Lost);
    // A new add of the same disk gets a fresh attachment, not the lost one.
    let h2 = m.add_virtual_disk(DiskRequest::new("a")).await.unwrap();
    assert_ne!(h2.slot(), slot);
    assert_replay_equals_live(&m).await;
    m.handle(id).unwrap().release().await.unwrap();
    h2.release().await.unwrap();
    assert!(m.state().is_empty() && vm.snapshot().is_empty());
}

#[tokio::test]
async fn unknown_disks_are_reported_and_detached_only_when_configured() {
    for detach in [false, true] {
        let dir = tempdir();
        let vm = SimVm::new();
        open(dir.path(), &vm).await.close().await.unwrap();
        vm.edit_state(|s| s.put_attachment(foreign(Slot::new(2, 5))))
            .unwrap();
        let mut opts = ManagerOptions::new(config());
        opts.recovery.detach_unknown = detach;
        let m = open_opts(dir.path(), &vm, opts).await;
        let report = m.last_recovery().unwrap();
        let found = report.drift.iter().any(|d| {
            matches!(d, Drift::UnknownAttachment { slot, detached, .. } if *slot == Slot::new(2, 5) && *detached == detach)
        });
        assert!(
            found,
            "detach_unknown={detach}: {:?} {:?}",
            report.drift, report.errors
        );
        assert_eq!(vm.snapshot().attachments.is_empty(), detach);
        assert_replay_equals_live(&m).await;
    }
}

/// Issue #15 item 4: recovering again and again with the same drift in the VM does not grow
/// the drift the state (and `status`) shows, nor the report's: each is the last recovery's.
#[tokio::test]
async fn drift_does_not_accumulate_across_recoveries() {
    let dir = tempdir();
    let vm = SimVm::new();
    open(dir.path(), &vm).await.close().await.unwrap();
    vm.edit_state(|s| s.put_attachment(foreign(Slot::new(2, 5))))
        .unwrap();
    for round in 0..4 {
        let m = open(dir.path(), &vm).await;
        let report = m.last_recovery().unwrap();
        assert_eq!(report.drift.len(), 1, "round {round}: {:?}", report.drift);
        assert_eq!(m.state().drift, report.drift, "round {round}");
        assert_replay_equals_live(&m).await;
        m.close().await.unwrap();
    }
}

/// A guest mount the journal does not know, on a slot the journal owns, is repaired (unmounted)
/// by recovery and reported as repaired; one on a disk that is not ours is only reported. The
/// next recovery shows only what is still there.
#[tokio::test]
async fn an_unknown_mount_on_our_slot_is_unmounted_and_others_are_reported() {
    use lunledger::backend::sim::SimMount;
    use lunledger::model::MountSpec;
    let dir = tempdir();
    let vm = SimVm::new();
    let (slot, attach, path) = {
        let m = open(dir.path(), &vm).await;
        let h = m
            .add_virtual_disk(DiskRequest::new("a").mount(MountConfig::default()))
            .await
            .unwrap();
        let attach = m.state().attachments[&h.slot()].attach;
        let r = (h.slot(), attach, h.guest_path().to_string());
        m.close().await.unwrap();
        r
    };
    let foreign_slot = Slot::new(2, 5);
    vm.edit_state(|s| {
        s.put_attachment(foreign(foreign_slot));
        let stray = |slot, attach| SimMount {
            slot,
            attach,
            mount: 99,
            spec: MountSpec::default(),
            zombie: false,
        };
        s.mounts
            .insert("/var/run/scsi/7".into(), stray(slot, attach));
        s.mounts
            .insert("/var/run/scsi/8".into(), stray(foreign_slot, 0));
    })
    .unwrap();
    let m = open(dir.path(), &vm).await;
    let report = m.last_recovery().unwrap();
    let ours = Drift::UnknownMountUnmounted {
        path: "/var/run/scsi/7".into(),
        slot,
    };
    let theirs = Drift::UnknownMount {
        path: "/var/run/scsi/8".into(),
    };
    assert!(report.drift.contains(&ours), "{:?}", report.drift);
    assert!(report.drift.contains(&theirs), "{:?}", report.drift);
    assert!(
        !report.drift.contains(&Drift::UnknownMount {
            path: "/var/run/scsi/7".into()
        }),
        "the repair replaces the report: {:?}",
        report.drift
    );
    let mounts = vm.snapshot().mounts;
    assert!(!mounts.contains_key("/var/run/scsi/7"), "repaired");
    assert!(
        mounts.contains_key("/var/run/scsi/8"),
        "not ours: left alone"
    );
    assert!(mounts.contains_key(&path), "our own mount is untouched");
    assert_replay_equals_live(&m).await;
    m.close().await.unwrap();
    // The next recovery finds only what is still there.
    let m = open(dir.path(), &vm).await;
    let report = m.last_recovery().unwrap();
    assert!(!report.drift.contains(&ours), "{:?}", report.drift);
    assert!(report.drift.contains(&theirs), "{:?}", report.drift);
    assert_eq!(m.state().drift, report.drift);
    for h in m.handles() {
        h.release().await.unwrap();
    }
    assert_replay_equals_live(&m).await;
}
