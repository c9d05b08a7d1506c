//! The protocol's durable points, counted by the journal per operation kind
//! (`JournalStats::durable_points`): everything an operation may do is durable before its first
//! backend call, and a handle before it is returned; nothing else is waited for.

use lunledger_test_support as common;

use common::scenarios::mounted;
use common::*;
use lunledger::backend::sim::SimVm;
use lunledger::journal::DurablePoints;
use lunledger::{DiskRequest, Manager, MountConfig};

fn points(m: &Manager) -> DurablePoints {
    m.journal().stats().durable_points
}

/// The durable points `f` made, by kind.
async fn made<F, Fut, T>(m: &Manager, f: F) -> (T, DurablePoints)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let before = points(m);
    let out = f().await;
    let after = points(m);
    let diff = DurablePoints {
        add: after.add - before.add,
        release: after.release - before.release,
        recovery: after.recovery - before.recovery,
        other: after.other - before.other,
    };
    (out, diff)
}

fn only_add(n: u64) -> DurablePoints {
    DurablePoints {
        add: n,
        ..Default::default()
    }
}

fn only_release(n: u64) -> DurablePoints {
    DurablePoints {
        release: n,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_kind_makes_the_protocols_minimum_of_durable_points() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;

    // A new disk with a mount: its plan (slot, attach id, mount index and path) before the
    // attach, its handle before it is returned.
    let (h1, p) = made(&m, || m.add_virtual_disk(mounted("a"))).await;
    let h1 = h1.unwrap();
    assert_eq!(p, only_add(2), "add of a new disk with a mount");

    // Only references on what exists: the handle alone.
    let (h2, p) = made(&m, || m.add_virtual_disk(mounted("a"))).await;
    let h2 = h2.unwrap();
    assert_eq!(p, only_add(1), "add that only takes references");

    // A new mount on a shared attachment: its plan and its handle.
    let block = mounted("a").mount(MountConfig {
        block_dev: true,
        ..Default::default()
    });
    let (h3, p) = made(&m, || m.add_virtual_disk(block)).await;
    let h3 = h3.unwrap();
    assert_eq!(p, only_add(2), "add of a mount on a shared attachment");
    assert_eq!(h3.slot(), h1.slot(), "the attachment is shared");

    // A new attach-only disk: its plan and its handle.
    let (h4, p) = made(&m, || m.add_virtual_disk(DiskRequest::new("b"))).await;
    let h4 = h4.unwrap();
    assert_eq!(p, only_add(2), "add of a new attach-only disk");

    // A release that only drops references, and one that tears down: one each, before the
    // first teardown call.
    let (r, p) = made(&m, || h2.release()).await;
    r.unwrap();
    assert_eq!(p, only_release(1), "release of a non-last reference");
    let (r, p) = made(&m, || h3.release()).await;
    r.unwrap();
    assert_eq!(p, only_release(1), "release that unmounts");
    let (r, p) = made(&m, || h4.release()).await;
    r.unwrap();
    assert_eq!(p, only_release(1), "release that unplugs and detaches");

    // An add with an access grant that only takes references: the grant is a backend call, so
    // its intent (the plan) is durable first, then the handle.
    let (h5, p) = made(&m, || m.add_virtual_disk(mounted("a").vm_id("vm1"))).await;
    let h5 = h5.unwrap();
    assert_eq!(p, only_add(2), "refs-only add with an access grant");
    h5.release().await.unwrap();

    // The whole cycle of a new disk with a mount: at most 3 (today: plan, handle, release).
    let (r, p_rel) = made(&m, || h1.release()).await;
    r.unwrap();
    let (h, p_add) = made(&m, || m.add_virtual_disk(mounted("c"))).await;
    let h = h.unwrap();
    let (r, p_rel2) = made(&m, || h.release()).await;
    r.unwrap();
    assert_eq!(p_rel, only_release(1));
    let cycle = p_add.add + p_rel2.release;
    println!("durable points per add+release cycle of a new disk with a mount: {cycle}");
    assert!(cycle <= 3, "add+release cycle made {cycle} durable points");
    assert_eq!(cycle, 3);

    assert!(m.state().is_empty(), "{:?}", m.state());
    assert!(vm.snapshot().is_empty(), "{:?}", vm.snapshot());
    m.close().await.unwrap();
}

/// Operations in flight share durable points (group commit): 16 concurrent cycles make far
/// fewer flushes than durable points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_operations_share_flushes() {
    let dir = tempdir();
    let vm = SimVm::new();
    let m = open(dir.path(), &vm).await;
    let before = m.journal().stats();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..8 {
                let h = m.add_virtual_disk(mounted(&format!("d{i}"))).await?;
                h.release().await?;
            }
            Ok::<_, lunledger::Error>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let after = m.journal().stats();
    let points = (after.durable_points.add - before.durable_points.add)
        + (after.durable_points.release - before.durable_points.release);
    let flushes = after.flushes - before.flushes;
    println!("16 x 8 cycles: {points} durable points, {flushes} flushes");
    assert_eq!(points, 16 * 8 * 3);
    assert!(
        flushes < points,
        "{flushes} flushes for {points} durable points"
    );
    m.close().await.unwrap();
}
