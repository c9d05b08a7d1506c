//! Drift between the journal and the VM, found by recovery: what the VM lost is marked lost (never
//! handed out again, still releasable), what the VM holds that the journal does not know is
//! reported, and detached only when the policy says so (our own old generations always are).

mod common;

use common::*;
use lunledger::backend::sim::{SimAttachment, SimVm};
use lunledger::journal::{DiskKind, DiskSpec, Drift, Slot};
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
