//! Shared helpers for the journal's integration tests.
#![allow(dead_code)]

use lunledger_journal::*;
use lunledger_model::*;

/// One of every event variant (and every nested variant), with realistic values.
pub fn every_event() -> Vec<Event> {
    let disk = DiskSpec {
        path: "/var/lib/vms/layer-0001.vhdx".into(),
        read_only: true,
        kind: DiskKind::VirtualDisk,
        evd_type: None,
    };
    let evd = DiskSpec {
        path: "/dev/evd0".into(),
        read_only: false,
        kind: DiskKind::ExtensibleVirtualDisk,
        evd_type: Some("space".into()),
    };
    let spec = MountSpec {
        partition: 1,
        read_only: true,
        encrypted: false,
        block_dev: false,
        options: vec!["ro".into(), "noatime".into()],
        ensure_filesystem: true,
        filesystem: "ext4".into(),
        format_with_refs: false,
    };
    let slot = Slot::new(0, 3);
    vec![
        Event::OpStarted {
            kind: OpKind::Add {
                disk: disk.clone(),
                mount: Some(spec.clone()),
                requested_path: Some("/run/x".into()),
                owner: Some("ctr-1".into()),
                vm_id: Some("vm-9".into()),
            },
        },
        Event::OpStarted {
            kind: OpKind::Add {
                disk: DiskSpec {
                    kind: DiskKind::PassThru,
                    ..disk.clone()
                },
                mount: None,
                requested_path: None,
                owner: None,
                vm_id: None,
            },
        },
        Event::OpStarted {
            kind: OpKind::Release { handle: 4 },
        },
        Event::OpStarted {
            kind: OpKind::Recovery,
        },
        Event::OpStarted {
            kind: OpKind::RetryTeardown,
        },
        Event::OpStarted {
            kind: OpKind::Configure,
        },
        Event::AccessGranted {
            vm_id: "vm-9".into(),
            path: disk.path.clone(),
        },
        Event::AttachReserved {
            slot,
            attach: 17,
            disk: evd,
        },
        Event::AttachRefTaken { slot },
        Event::AttachRefDropped { slot },
        Event::MountReserved {
            mount: 5,
            slot,
            index: Some(2),
            path: "/run/mounts/scsi/m2".into(),
            spec: spec.clone(),
        },
        Event::MountRefTaken { mount: 5 },
        Event::MountRefDropped { mount: 5 },
        Event::StepIntent {
            step: Step::Attach,
            target: Target::Slot(slot),
        },
        Event::StepDone {
            step: Step::Mount,
            target: Target::Mount(5),
        },
        Event::StepFailed {
            step: Step::Unmount,
            target: Target::Mount(5),
            error: "device busy".into(),
        },
        Event::StepResolved {
            step: Step::Unplug,
            target: Target::Slot(slot),
            resolution: Resolution::Happened,
        },
        Event::StepResolved {
            step: Step::Detach,
            target: Target::Slot(slot),
            resolution: Resolution::DidNotHappen,
        },
        Event::HandleIssued {
            handle: 4,
            slot,
            mount: Some(5),
            owner: Some("ctr-1".into()),
        },
        Event::ReleaseStarted { handle: 4 },
        Event::HandleReleased { handle: 4 },
        Event::DriftFound {
            drift: Drift::UnknownAttachment {
                slot,
                path: Some("/x".into()),
                detached: true,
            },
        },
        Event::DriftFound {
            drift: Drift::MissingAttachment { slot },
        },
        Event::DriftFound {
            drift: Drift::UnknownMount { path: "/m".into() },
        },
        Event::DriftFound {
            drift: Drift::MissingMount {
                mount: 5,
                path: "/m5".into(),
            },
        },
        Event::AttachmentLost { slot },
        Event::MountLost { mount: 5 },
        Event::ConfigSet {
            config: ManagerConfig::lcow_default(),
        },
        Event::OpFinished,
        Event::OpFailed {
            error: "no free slot".into(),
        },
        Event::OpRolledBack {
            reason: "caller gone".into(),
        },
        Event::OpAbandoned,
        Event::CheckpointTaken { at_seq: 12 },
    ]
}

/// Fast options for tests.
pub fn opts() -> JournalOptions {
    JournalOptions::default()
}

/// Reads all records from the start.
pub fn read_all(j: &Journal) -> Vec<Record> {
    j.read_from(0).collect::<Result<Vec<_>, _>>().unwrap()
}

/// Sets the durable watermark back to `seq`, as a crash between sled writing records and the
/// flush that would make them durable leaves it: records after `seq` are then a torn tail.
#[allow(dead_code)]
pub fn rewind_watermark(dir: &std::path::Path, seq: u64) {
    let line = format!("lunledger-durable {seq:020}\n");
    std::fs::write(dir.join(lunledger_journal::WATERMARK_FILE), line).unwrap();
}

/// A two-worker multi-thread runtime: waiters there may lead a commit round (`block_in_place`).
pub fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
