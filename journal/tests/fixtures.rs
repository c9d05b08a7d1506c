//! Every frozen journal under `tests/fixtures/v<N>/` (one per schema version ever written) still
//! opens, reads back the events it was written with, verifies, and takes new appends (in the
//! current schema) on the same hash chain. When SCHEMA_VERSION changes, freeze a fixture of the
//! new version with `cargo test -p lunledger-journal --test fixtures -- --ignored
//! generate_current_fixture`, and never regenerate an old one.

mod common;
use common::*;
use lunledger_journal::*;
use lunledger_model::*;
use std::path::{Path, PathBuf};

fn fixture_dir(version: u16) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/v{version}"))
}

fn slot() -> Slot {
    Slot::new(0, 1)
}

fn config() -> ManagerConfig {
    ManagerConfig {
        reserved: vec![Slot::new(0, 0)],
        ..ManagerConfig::lcow_default()
    }
}

/// An add with a mount, then its release: what the manager writes for one container layer.
fn expected() -> Vec<(u64, Event)> {
    let disk = DiskSpec {
        path: "/var/lib/vms/ctr-1/scratch.vhdx".into(),
        read_only: false,
        kind: DiskKind::VirtualDisk,
        evd_type: None,
    };
    let spec = MountSpec {
        options: vec!["noatime".into()],
        ensure_filesystem: true,
        filesystem: "ext4".into(),
        ..MountSpec::default()
    };
    let path = "/run/mounts/scsi/m0".to_string();
    vec![
        (
            1,
            Event::OpStarted {
                kind: OpKind::Configure,
            },
        ),
        (1, Event::ConfigSet { config: config() }),
        (1, Event::OpFinished),
        (
            2,
            Event::OpStarted {
                kind: OpKind::Add {
                    disk: disk.clone(),
                    mount: Some(spec.clone()),
                    requested_path: None,
                    owner: Some("ctr-1".into()),
                    vm_id: Some("uvm-1".into()),
                },
            },
        ),
        (
            2,
            Event::AccessGranted {
                vm_id: "uvm-1".into(),
                path: disk.path.clone(),
            },
        ),
        (
            2,
            Event::AttachReserved {
                slot: slot(),
                attach: 1,
                disk,
            },
        ),
        (
            2,
            Event::StepIntent {
                step: Step::Attach,
                target: Target::Slot(slot()),
            },
        ),
        (
            2,
            Event::StepDone {
                step: Step::Attach,
                target: Target::Slot(slot()),
            },
        ),
        (
            2,
            Event::MountReserved {
                mount: 1,
                slot: slot(),
                index: Some(0),
                path,
                spec,
            },
        ),
        (
            2,
            Event::StepIntent {
                step: Step::Mount,
                target: Target::Mount(1),
            },
        ),
        (
            2,
            Event::StepDone {
                step: Step::Mount,
                target: Target::Mount(1),
            },
        ),
        (
            2,
            Event::HandleIssued {
                handle: 1,
                slot: slot(),
                mount: Some(1),
                owner: Some("ctr-1".into()),
            },
        ),
        (2, Event::OpFinished),
        (0, Event::CheckpointTaken { at_seq: 13 }),
        (
            3,
            Event::OpStarted {
                kind: OpKind::Release { handle: 1 },
            },
        ),
        (3, Event::ReleaseStarted { handle: 1 }),
        (3, Event::MountRefDropped { mount: 1 }),
        (
            3,
            Event::StepIntent {
                step: Step::Unmount,
                target: Target::Mount(1),
            },
        ),
        (
            3,
            Event::StepFailed {
                step: Step::Unmount,
                target: Target::Mount(1),
                error: "busy".into(),
            },
        ),
        (
            3,
            Event::StepIntent {
                step: Step::Unmount,
                target: Target::Mount(1),
            },
        ),
        (
            3,
            Event::StepDone {
                step: Step::Unmount,
                target: Target::Mount(1),
            },
        ),
        (3, Event::AttachRefDropped { slot: slot() }),
        (
            3,
            Event::StepIntent {
                step: Step::Unplug,
                target: Target::Slot(slot()),
            },
        ),
        (
            3,
            Event::StepDone {
                step: Step::Unplug,
                target: Target::Slot(slot()),
            },
        ),
        (
            3,
            Event::StepIntent {
                step: Step::Detach,
                target: Target::Slot(slot()),
            },
        ),
        (
            3,
            Event::StepDone {
                step: Step::Detach,
                target: Target::Slot(slot()),
            },
        ),
        (3, Event::HandleReleased { handle: 1 }),
        (3, Event::OpFinished),
    ]
}

#[test]
#[ignore]
fn generate_current_fixture() {
    let dir = fixture_dir(SCHEMA_VERSION);
    let _ = std::fs::remove_dir_all(&dir);
    let j = Journal::open(&dir, opts()).unwrap();
    for (op, ev) in expected() {
        j.append(op, ev).unwrap();
    }
    j.wait_durable_blocking(j.last_seq()).unwrap();
    j.write_checkpoint(13, b"opaque state at 13".to_vec())
        .unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

#[test]
fn every_frozen_fixture_opens_and_reads_the_expected_events() {
    for version in 1..=SCHEMA_VERSION {
        assert!(
            fixture_dir(version).is_dir(),
            "no frozen fixture for schema {version}"
        );
        fixture_opens(version);
    }
}

fn fixture_opens(version: u16) {
    // Work on a copy: opening writes (sled snapshot, lock file).
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(version), tmp.path());
    let j = Journal::open(tmp.path(), opts()).unwrap();
    assert_eq!(j.open_report().tail_quarantined, None);
    assert_eq!(j.open_report().middle_damage, None);
    let recs = read_all(&j);
    let got: Vec<(u64, Event)> = recs.iter().map(|r| (r.op, r.event.clone())).collect();
    assert_eq!(got, expected());
    assert!(recs.iter().all(|r| r.schema == version), "schema {version}");
    let cp = j.latest_checkpoint().unwrap().unwrap();
    assert_eq!(
        (cp.at_seq, cp.blob.as_slice()),
        (13, &b"opaque state at 13"[..])
    );
    // Schema 1 journals predate the durable watermark: verify says that a lost tail could not be
    // detected (nothing else), until the first flush writes one.
    let first = j.verify().unwrap();
    if version == 1 {
        assert_eq!(
            first.problems.iter().map(|p| p.kind).collect::<Vec<_>>(),
            vec![ProblemKind::Watermark],
            "{first:?}"
        );
        assert!(j.open_report().watermark.is_some());
    } else {
        assert_eq!(first.problem, None);
        assert_eq!(j.open_report().watermark, None);
    }
    // Schemas 1 and 2 were written before the segment manifest: it is reconstructed (nothing
    // sealed) and stored. Schema 3 journals have one.
    assert_eq!(j.open_report().manifest_reconstructed, version < 3);
    assert!(j.open_report().missing_segments.is_empty());
    let next = expected().len() as u64 + 1;
    assert_eq!(j.append(9, Event::OpFinished).unwrap(), next);
    j.wait_durable_blocking(next).unwrap();
    // The new record is written in the current schema on the old chain.
    let last = j.newest(1).unwrap();
    assert_eq!(last[0].schema, SCHEMA_VERSION);
    assert_eq!(
        j.verify().unwrap().problem,
        None,
        "schema {version} + current"
    );
}
