//! Recovery on a damaged journal: a torn or garbled tail (the records after the last durable one
//! are exactly what a crash may tear) is set aside, the valid prefix is recovered, and the report
//! says so. Nothing is deleted: the damaged records stay in the journal's quarantine.

use lunledger_test_support as common;

use common::*;
use lunledger::backend::sim::SimVm;
use lunledger::{DiskRequest, MountConfig};

enum Damage {
    Truncate,
    Garble,
}

async fn damaged_tail_is_quarantined_and_the_prefix_recovered(damage: Damage) {
    let dir = tempdir();
    let vm = SimVm::new();
    let mut ids = Vec::new();
    {
        let m = open(dir.path(), &vm).await;
        for i in 0..3 {
            let h = m
                .add_virtual_disk(DiskRequest::new(format!("d{i}")).mount(MountConfig::default()))
                .await
                .unwrap();
            ids.push(h.handle_id());
        }
        m.close().await.unwrap();
    }
    // The last record is the last add's OpFinished: not durable when the caller got its handle,
    // so a crash may tear it.
    {
        let db = sled::open(dir.path().join("sled")).unwrap();
        let records = db.open_tree("records").unwrap();
        let (key, value) = records.last().unwrap().unwrap();
        let bad = match damage {
            Damage::Truncate => value[..value.len() / 2].to_vec(),
            Damage::Garble => value.iter().map(|b| b ^ 0x5a).collect(),
        };
        records.insert(key.clone(), bad).unwrap();
        db.flush().unwrap();
        // A torn tail lies beyond the last flush: set the durable watermark back one record, as
        // a crash between sled's write and the flush leaves it.
        let seq = u64::from_be_bytes(key.as_ref().try_into().unwrap());
        std::fs::write(
            dir.path().join(lunledger::journal::WATERMARK_FILE),
            format!("lunledger-durable {:020}\n", seq - 1),
        )
        .unwrap();
    }
    let m = open(dir.path(), &vm).await;
    let report = m.last_recovery().unwrap();
    let tail = report.tail_quarantined.clone();
    assert!(tail.is_some(), "the damaged tail was not reported");
    println!("reported: {tail:?}; plan: {:?}", report.plan);
    for id in &ids {
        assert!(m.handle(*id).is_some(), "handle {id} lost");
    }
    assert!(
        !m.journal().quarantined().unwrap().is_empty(),
        "damaged records were deleted"
    );
    assert!(m.journal().verify().unwrap().problem.is_none());
    assert_replay_equals_live(&m).await;
    assert_vm_matches(&m, &vm);
    for h in m.handles() {
        h.release().await.unwrap();
    }
    assert!(m.state().is_empty() && vm.snapshot().is_empty());
}

#[tokio::test]
async fn truncated_tail() {
    damaged_tail_is_quarantined_and_the_prefix_recovered(Damage::Truncate).await;
}

#[tokio::test]
async fn garbled_tail() {
    damaged_tail_is_quarantined_and_the_prefix_recovered(Damage::Garble).await;
}

#[tokio::test]
async fn damage_to_durable_records_is_a_typed_error_unless_accepted() {
    let dir = tempdir();
    let vm = SimVm::new();
    {
        let m = open(dir.path(), &vm).await;
        m.add_virtual_disk(DiskRequest::new("d").mount(MountConfig::default()))
            .await
            .unwrap();
        m.close().await.unwrap();
    }
    {
        let db = sled::open(dir.path().join("sled")).unwrap();
        let records = db.open_tree("records").unwrap();
        let (key, value) = records.last().unwrap().unwrap();
        records
            .insert(key, value.iter().map(|b| b ^ 0x5a).collect::<Vec<u8>>())
            .unwrap();
        db.flush().unwrap();
    }
    let r =
        lunledger::Manager::open(dir.path(), config(), vm.host_backend(), vm.guest_backend()).await;
    assert!(
        matches!(
            r,
            Err(lunledger::Error::Journal(
                lunledger::journal::JournalError::LostRecords { .. }
            ))
        ),
        "{:?}",
        r.err()
    );
    let mut opts = lunledger::ManagerOptions::new(config());
    opts.accept_lost_records = true;
    let m = open_opts(dir.path(), &vm, opts).await;
    assert!(m.last_recovery().unwrap().lost_records.is_some());
    assert_eq!(m.handles().len(), 1, "the handle's durable records survive");
}
