//! The backend conformance suite: every backend's test file includes this module with
//! `mod conformance;`, implements [`Fixture`], and runs [`run_all`] or each case as its own
//! `#[tokio::test]`.
//!
//! Cases use the fixture's slots from the front, clean up after themselves, and compare views
//! against a baseline taken at their start, so they run on a VM that holds disks of its own (a
//! root disk, say) and one after another on the same fixture. Guest cases are skipped, with a
//! printed message, when the fixture has no guest.
#![allow(dead_code)]

use lunledger::backend::{
    AttachRequest, DetachRequest, GuestBackend, GuestMount, GuestView, HostAttachment, HostBackend,
    HostView, MountRequest,
};
use lunledger::model::{AttachId, DiskSpec, GuestOs, MountId, MountSpec, Slot};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a backend's test file provides to run the suite.
pub trait Fixture {
    /// The host side of the VM under test.
    fn host(&self) -> Arc<dyn HostBackend>;
    /// The guest side of the VM under test (only called when [`Fixture::has_guest`]).
    fn guest(&self) -> Arc<dyn GuestBackend>;
    /// A disk named `name`, creating its backing image when the backend needs one (QEMU: a
    /// small ext4 raw image). The same name gives the same disk.
    fn disk(&self, name: &str, read_only: bool) -> DiskSpec;
    /// Slots the suite may use, all empty when a case starts. Give at least two, and at least
    /// one with controller > 0 and one with LUN > 0 to cover those.
    fn slots(&self) -> Vec<Slot>;
    /// Whether the VM runs a guest that can mount.
    fn has_guest(&self) -> bool;
    /// The guest's OS. A Windows guest has no unplug (hcsshim: a no-op): the suite's teardown
    /// is unmount then detach, and an unplug call must fail (a backend that accepted it would
    /// hide a manager that makes one).
    fn guest_os(&self) -> GuestOs {
        GuestOs::Linux
    }
    /// A guest path the suite may mount at, in the guest's path syntax.
    fn guest_path(&self, name: &str) -> String {
        match self.guest_os() {
            GuestOs::Linux => format!("/run/lunledger-conformance/{name}"),
            GuestOs::Windows => format!(r"c:\lunledger-conformance\{name}"),
        }
    }
}

/// Every case, by name, in the order [`run_all`] runs them.
pub const CASES: &[&str] = &[
    "attach_then_inspect_shows_it",
    "attach_is_idempotent",
    "attach_over_another_attachment_fails",
    "detach_of_empty_slot_succeeds",
    "detach_after_attach_removes_it",
    "attach_at_several_slots",
    "read_only_attach_is_reported",
    "mount_then_guest_inspect_shows_it",
    "mount_is_idempotent",
    "unmount_is_idempotent",
    "unplug_then_detach_leaves_nothing",
    "block_device_mount_shows_as_block_dev",
    "full_teardown_leaves_empty_views",
];

/// Runs every case, in order, on one fixture.
pub async fn run_all(f: &dyn Fixture) {
    for name in CASES {
        println!("conformance: {name}");
        run_case(f, name).await;
    }
}

/// Runs one case by name; panics on an unknown name.
pub async fn run_case(f: &dyn Fixture, name: &str) {
    match name {
        "attach_then_inspect_shows_it" => attach_then_inspect_shows_it(f).await,
        "attach_is_idempotent" => attach_is_idempotent(f).await,
        "attach_over_another_attachment_fails" => attach_over_another_attachment_fails(f).await,
        "detach_of_empty_slot_succeeds" => detach_of_empty_slot_succeeds(f).await,
        "detach_after_attach_removes_it" => detach_after_attach_removes_it(f).await,
        "attach_at_several_slots" => attach_at_several_slots(f).await,
        "read_only_attach_is_reported" => read_only_attach_is_reported(f).await,
        "mount_then_guest_inspect_shows_it" => mount_then_guest_inspect_shows_it(f).await,
        "mount_is_idempotent" => mount_is_idempotent(f).await,
        "unmount_is_idempotent" => unmount_is_idempotent(f).await,
        "unplug_then_detach_leaves_nothing" => unplug_then_detach_leaves_nothing(f).await,
        "block_device_mount_shows_as_block_dev" => block_device_mount_shows_as_block_dev(f).await,
        "full_teardown_leaves_empty_views" => full_teardown_leaves_empty_views(f).await,
        other => panic!("unknown conformance case {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The `i`th usable slot.
fn slot(f: &dyn Fixture, i: usize) -> Slot {
    let slots = f.slots();
    match slots.get(i) {
        Some(s) => *s,
        None => panic!(
            "fixture gives {} slots, the case needs at least {}",
            slots.len(),
            i + 1
        ),
    }
}

fn attach_req(
    f: &dyn Fixture,
    slot: Slot,
    attach: AttachId,
    name: &str,
    ro: bool,
) -> AttachRequest {
    AttachRequest {
        slot,
        attach,
        disk: f.disk(name, ro),
    }
}

fn detach_req(slot: Slot, attach: AttachId) -> DetachRequest {
    DetachRequest { slot, attach }
}

fn mount_req(
    f: &dyn Fixture,
    att: &AttachRequest,
    mount: MountId,
    name: &str,
    block_dev: bool,
) -> MountRequest {
    MountRequest {
        slot: att.slot,
        attach: att.attach,
        mount,
        path: f.guest_path(name),
        spec: MountSpec {
            read_only: att.disk.read_only,
            block_dev,
            ..MountSpec::default()
        },
    }
}

fn skip_without_guest(f: &dyn Fixture, case: &str) -> bool {
    if f.has_guest() {
        return false;
    }
    println!("conformance: {case}: skipped (the fixture has no guest)");
    true
}

async fn host_view(f: &dyn Fixture) -> HostView {
    match f.host().inspect().await {
        Ok(v) => v,
        Err(e) => panic!("host inspect failed: {e}"),
    }
}

async fn guest_view(f: &dyn Fixture) -> GuestView {
    match f.guest().inspect().await {
        Ok(v) => v,
        Err(e) => panic!("guest inspect failed: {e}"),
    }
}

/// How long a guest may take to see a hot-plugged disk (a real guest needs 10 to 50 ms).
const GUEST_SETTLE: Duration = Duration::from_secs(10);

/// Waits until the guest sees (or, with `present` false, no longer sees) the device at `slot`;
/// panics after [`GUEST_SETTLE`].
async fn wait_for_device(f: &dyn Fixture, case: &str, slot: Slot, present: bool) {
    let start = Instant::now();
    loop {
        let devices = guest_view(f).await.devices;
        if devices.contains(&slot) == present {
            return;
        }
        assert!(
            start.elapsed() < GUEST_SETTLE,
            "{case}: guest {} {slot} after {GUEST_SETTLE:?}: {devices:?}",
            if present {
                "does not see"
            } else {
                "still sees"
            }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn host_at(f: &dyn Fixture, slot: Slot) -> Vec<HostAttachment> {
    host_view(f)
        .await
        .attachments
        .into_iter()
        .filter(|a| a.slot == slot)
        .collect()
}

async fn guest_mount_at(f: &dyn Fixture, path: &str) -> Vec<GuestMount> {
    guest_view(f)
        .await
        .mounts
        .into_iter()
        .filter(|m| m.path == path)
        .collect()
}

/// Both views, sorted so they compare regardless of the order a backend reports in.
#[derive(Debug, PartialEq)]
struct Views {
    host: Vec<HostAttachment>,
    guest: Option<GuestView>,
}

async fn views(f: &dyn Fixture) -> Views {
    let mut host = host_view(f).await.attachments;
    host.sort_by(|a, b| (a.slot, &a.path, a.attach).cmp(&(b.slot, &b.path, b.attach)));
    let guest = if f.has_guest() {
        let mut g = guest_view(f).await;
        g.devices.sort();
        g.mounts.sort_by(|a, b| a.path.cmp(&b.path));
        Some(g)
    } else {
        None
    };
    Views { host, guest }
}

/// Asserts that the slots a case is about to use are free, so a leak from an earlier case
/// shows up as such and not as a confusing failure.
async fn assert_free(f: &dyn Fixture, case: &str, slots: &[Slot]) {
    for s in slots {
        let held = host_at(f, *s).await;
        assert!(
            held.is_empty(),
            "{case}: fixture slot {s} is not free at the start: {held:?}"
        );
    }
}

fn ok<E: std::fmt::Display>(what: &str, r: Result<(), E>) {
    if let Err(e) = r {
        panic!("{what} failed: {e}");
    }
}

/// Attaches, then (with a guest) waits until the guest sees the device, as a manager's mount
/// step would.
async fn attach(f: &dyn Fixture, req: &AttachRequest) {
    let what = format!("attach {} at {}", req.attach, req.slot);
    ok(&what, f.host().attach(req).await);
    if f.has_guest() {
        wait_for_device(f, &what, req.slot, true).await;
    }
}

async fn detach(f: &dyn Fixture, slot: Slot, attach: AttachId) {
    ok(
        &format!("detach {attach} at {slot}"),
        f.host().detach(&detach_req(slot, attach)).await,
    );
}

async fn mount(f: &dyn Fixture, req: &MountRequest) {
    ok(
        &format!("mount {} at {}", req.slot, req.path),
        f.guest().mount(req).await,
    );
}

async fn unmount(f: &dyn Fixture, req: &MountRequest) {
    ok(
        &format!("unmount {}", req.path),
        f.guest().unmount(req).await,
    );
}

async fn unplug(f: &dyn Fixture, slot: Slot) {
    ok(&format!("unplug {slot}"), f.guest().unplug(slot).await);
}

/// Tears an attachment down in the order a real VM needs: unmount, unplug (not on Windows),
/// detach.
async fn teardown(f: &dyn Fixture, att: &AttachRequest, mounts: &[MountRequest]) {
    if f.has_guest() {
        for m in mounts {
            unmount(f, m).await;
        }
        if f.guest_os().unplugs() {
            unplug(f, att.slot).await;
        }
    }
    detach(f, att.slot, att.attach).await;
}

// ---------------------------------------------------------------------------------------------
// Host cases

/// An attached disk shows in the host view at its slot, with our attach id and its path.
pub async fn attach_then_inspect_shows_it(f: &dyn Fixture) {
    let case = "attach_then_inspect_shows_it";
    let s = slot(f, 0);
    assert_free(f, case, &[s]).await;
    let before = views(f).await;
    let req = attach_req(f, s, 101, "c1", false);
    attach(f, &req).await;
    let held = host_at(f, s).await;
    assert_eq!(held.len(), 1, "{case}: one attachment at {s}: {held:?}");
    let a = &held[0];
    assert_eq!(a.attach, Some(req.attach), "{case}: attach id at {s}");
    assert_eq!(
        a.path.as_deref(),
        Some(req.disk.path.as_str()),
        "{case}: host path at {s}"
    );
    assert!(a.complete, "{case}: attachment at {s} reported incomplete");
    teardown(f, &req, &[]).await;
    assert_eq!(views(f).await, before, "{case}: views after teardown");
}

/// Attaching the same attach id and disk at the same slot again succeeds and changes nothing.
pub async fn attach_is_idempotent(f: &dyn Fixture) {
    let case = "attach_is_idempotent";
    let s = slot(f, 0);
    assert_free(f, case, &[s]).await;
    let before = views(f).await;
    let req = attach_req(f, s, 102, "c2", false);
    attach(f, &req).await;
    let once = views(f).await;
    attach(f, &req).await;
    assert_eq!(
        views(f).await,
        once,
        "{case}: a repeated attach changed the views"
    );
    assert_eq!(
        host_at(f, s).await.len(),
        1,
        "{case}: one attachment at {s}"
    );
    teardown(f, &req, &[]).await;
    assert_eq!(views(f).await, before, "{case}: views after teardown");
}

/// Attaching a different attachment at an occupied slot fails and leaves the first in place.
pub async fn attach_over_another_attachment_fails(f: &dyn Fixture) {
    let case = "attach_over_another_attachment_fails";
    let s = slot(f, 0);
    assert_free(f, case, &[s]).await;
    let before = views(f).await;
    let first = attach_req(f, s, 103, "c3a", false);
    attach(f, &first).await;
    let second = attach_req(f, s, 104, "c3b", false);
    let r = f.host().attach(&second).await;
    assert!(
        r.is_err(),
        "{case}: attaching {} over {} at {s} succeeded",
        second.attach,
        first.attach
    );
    let held = host_at(f, s).await;
    assert_eq!(held.len(), 1, "{case}: one attachment at {s}: {held:?}");
    assert_eq!(held[0].attach, Some(first.attach), "{case}: first kept");
    // Detaching the failed attachment touches nothing of the first.
    detach(f, s, second.attach).await;
    assert_eq!(host_at(f, s).await.len(), 1, "{case}: first survives");
    teardown(f, &first, &[]).await;
    assert_eq!(views(f).await, before, "{case}: views after teardown");
}

/// Detaching a slot that holds nothing succeeds and changes nothing.
pub async fn detach_of_empty_slot_succeeds(f: &dyn Fixture) {
    let case = "detach_of_empty_slot_succeeds";
    let s = slot(f, 0);
    assert_free(f, case, &[s]).await;
    let before = views(f).await;
    detach(f, s, 105).await;
    detach(f, s, 105).await;
    assert_eq!(views(f).await, before, "{case}: views changed");
}

/// After a full teardown the slot is empty, and detaching again still succeeds.
pub async fn detach_after_attach_removes_it(f: &dyn Fixture) {
    let case = "detach_after_attach_removes_it";
    let s = slot(f, 0);
    assert_free(f, case, &[s]).await;
    let before = views(f).await;
    let req = attach_req(f, s, 106, "c6", false);
    attach(f, &req).await;
    teardown(f, &req, &[]).await;
    assert!(host_at(f, s).await.is_empty(), "{case}: {s} still held");
    detach(f, s, req.attach).await;
    assert_eq!(views(f).await, before, "{case}: views after teardown");
    // The slot is reusable by a new attachment generation.
    let again = attach_req(f, s, 107, "c6", false);
    attach(f, &again).await;
    assert_eq!(host_at(f, s).await[0].attach, Some(again.attach));
    teardown(f, &again, &[]).await;
    assert_eq!(
        views(f).await,
        before,
        "{case}: views after second teardown"
    );
}

/// Disks at several slots, including controller > 0 and LUN > 0, each show at their own slot.
pub async fn attach_at_several_slots(f: &dyn Fixture) {
    let case = "attach_at_several_slots";
    let all = f.slots();
    let mut chosen: Vec<Slot> = Vec::new();
    let picks = [
        all.first().copied(),
        all.iter().copied().find(|s| s.controller > 0),
        all.iter().copied().find(|s| s.lun > 0),
        all.iter().copied().find(|s| s.controller > 0 && s.lun > 0),
    ];
    for s in picks.into_iter().flatten() {
        if !chosen.contains(&s) {
            chosen.push(s);
        }
    }
    if !chosen.iter().any(|s| s.controller > 0) {
        println!("conformance: {case}: the fixture offers no slot with controller > 0");
    }
    if !chosen.iter().any(|s| s.lun > 0) {
        println!("conformance: {case}: the fixture offers no slot with LUN > 0");
    }
    assert_free(f, case, &chosen).await;
    let before = views(f).await;
    let reqs: Vec<AttachRequest> = chosen
        .iter()
        .enumerate()
        .map(|(i, s)| attach_req(f, *s, 110 + i as u64, &format!("c7-{i}"), false))
        .collect();
    for r in &reqs {
        attach(f, r).await;
    }
    for r in &reqs {
        let held = host_at(f, r.slot).await;
        assert_eq!(held.len(), 1, "{case}: one attachment at {}", r.slot);
        assert_eq!(held[0].attach, Some(r.attach), "{case}: id at {}", r.slot);
        assert_eq!(held[0].path.as_deref(), Some(r.disk.path.as_str()));
    }
    if f.has_guest() {
        for r in &reqs {
            wait_for_device(f, case, r.slot, true).await;
        }
    }
    for r in reqs.iter().rev() {
        teardown(f, r, &[]).await;
    }
    assert_eq!(views(f).await, before, "{case}: views after teardown");
}

/// A read-only disk is reported read-only (and a read-write one read-write) when the backend
/// reports read-only at all.
pub async fn read_only_attach_is_reported(f: &dyn Fixture) {
    let case = "read_only_attach_is_reported";
    let (s0, s1) = (slot(f, 0), slot(f, 1));
    assert_free(f, case, &[s0, s1]).await;
    let before = views(f).await;
    let ro = attach_req(f, s0, 120, "c8-ro", true);
    let rw = attach_req(f, s1, 121, "c8-rw", false);
    attach(f, &ro).await;
    attach(f, &rw).await;
    let ro_seen = host_at(f, s0).await;
    let rw_seen = host_at(f, s1).await;
    match ro_seen[0].read_only {
        Some(v) => assert!(v, "{case}: read-only disk reported read-write"),
        None => println!("conformance: {case}: backend does not report read-only"),
    }
    if let Some(v) = rw_seen[0].read_only {
        assert!(!v, "{case}: read-write disk reported read-only");
    }
    teardown(f, &rw, &[]).await;
    teardown(f, &ro, &[]).await;
    assert_eq!(views(f).await, before, "{case}: views after teardown");
}

// ---------------------------------------------------------------------------------------------
// Guest cases

/// A mount shows in the guest view at its path, with its device's slot; the device shows too.
pub async fn mount_then_guest_inspect_shows_it(f: &dyn Fixture) {
    let case = "mount_then_guest_inspect_shows_it";
    if skip_without_guest(f, case) {
        return;
    }
    let s = slot(f, 0);
    assert_free(f, case, &[s]).await;
    let before = views(f).await;
    let att = attach_req(f, s, 130, "c9", false);
    attach(f, &att).await;
    wait_for_device(f, case, s, true).await;
    let m = mount_req(f, &att, 1, "c9", false);
    mount(f, &m).await;
    let seen = guest_mount_at(f, &m.path).await;
    assert_eq!(
        seen,
        vec![GuestMount {
            path: m.path.clone(),
            slot: Some(s),
            block_dev: false,
        }],
        "{case}: guest mounts at {}",
        m.path
    );
    teardown(f, &att, &[m]).await;
    assert_eq!(views(f).await, before, "{case}: views after teardown");
}

/// Mounting the same device at the same path again succeeds and changes nothing.
pub async fn mount_is_idempotent(f: &dyn Fixture) {
    let case = "mount_is_idempotent";
    if skip_without_guest(f, case) {
        return;
    }
    let s = slot(f, 0);
    assert_free(f, case, &[s]).await;
    let before = views(f).await;
    let att = attach_req(f, s, 131, "c10", false);
    attach(f, &att).await;
    let m = mount_req(f, &att, 2, "c10", false);
    mount(f, &m).await;
    let once = views(f).await;
    mount(f, &m).await;
    assert_eq!(
        views(f).await,
        once,
        "{case}: a repeated mount changed the views"
    );
    assert_eq!(guest_mount_at(f, &m.path).await.len(), 1, "{case}");
    teardown(f, &att, &[m]).await;
    assert_eq!(views(f).await, before, "{case}: views after teardown");
}

/// Unmounting a path that is not mounted succeeds, before a mount and after its unmount.
pub async fn unmount_is_idempotent(f: &dyn Fixture) {
    let case = "unmount_is_idempotent";
    if skip_without_guest(f, case) {
        return;
    }
    let s = slot(f, 0);
    assert_free(f, case, &[s]).await;
    let before = views(f).await;
    let att = attach_req(f, s, 132, "c11", false);
    attach(f, &att).await;
    let m = mount_req(f, &att, 3, "c11", false);
    unmount(f, &m).await;
    mount(f, &m).await;
    unmount(f, &m).await;
    assert!(
        guest_mount_at(f, &m.path).await.is_empty(),
        "{case}: {} still mounted",
        m.path
    );
    unmount(f, &m).await;
    teardown(f, &att, &[m]).await;
    assert_eq!(views(f).await, before, "{case}: views after teardown");
}

/// Unplug hides the device from the guest but not the host; unplugging again, and a device that
/// is gone, succeed; detach then leaves nothing. On a Windows guest there is no unplug: the
/// call fails and changes nothing, and the detach alone leaves nothing.
pub async fn unplug_then_detach_leaves_nothing(f: &dyn Fixture) {
    let case = "unplug_then_detach_leaves_nothing";
    if skip_without_guest(f, case) {
        return;
    }
    let (s, absent) = (slot(f, 0), slot(f, 1));
    assert_free(f, case, &[s, absent]).await;
    let before = views(f).await;
    if !f.guest_os().unplugs() {
        let att = attach_req(f, s, 133, "c12", false);
        attach(f, &att).await;
        let during = views(f).await;
        assert!(
            f.guest().unplug(s).await.is_err(),
            "{case}: a Windows guest accepted an unplug"
        );
        assert_eq!(
            views(f).await,
            during,
            "{case}: a refused unplug changed the VM"
        );
        assert!(
            guest_view(f).await.devices.contains(&s),
            "{case}: the guest lost {s} without a detach"
        );
        detach(f, s, att.attach).await;
        assert!(host_at(f, s).await.is_empty(), "{case}: {s} still held");
        assert_eq!(views(f).await, before, "{case}: views after teardown");
        return;
    }
    unplug(f, absent).await;
    let att = attach_req(f, s, 133, "c12", false);
    attach(f, &att).await;
    unplug(f, s).await;
    assert!(
        !guest_view(f).await.devices.contains(&s),
        "{case}: guest still sees {s} after unplug"
    );
    assert_eq!(
        host_at(f, s).await.len(),
        1,
        "{case}: host lost {s} on unplug"
    );
    unplug(f, s).await;
    detach(f, s, att.attach).await;
    assert!(host_at(f, s).await.is_empty(), "{case}: {s} still held");
    assert_eq!(views(f).await, before, "{case}: views after teardown");
}

/// A block-device mount shows in the guest view as `block_dev`.
pub async fn block_device_mount_shows_as_block_dev(f: &dyn Fixture) {
    let case = "block_device_mount_shows_as_block_dev";
    if skip_without_guest(f, case) {
        return;
    }
    let s = slot(f, 0);
    assert_free(f, case, &[s]).await;
    let before = views(f).await;
    let att = attach_req(f, s, 134, "c13", false);
    attach(f, &att).await;
    let m = mount_req(f, &att, 4, "c13-blk", true);
    mount(f, &m).await;
    let seen = guest_mount_at(f, &m.path).await;
    assert_eq!(seen.len(), 1, "{case}: {seen:?}");
    assert!(seen[0].block_dev, "{case}: not reported as a block device");
    assert_eq!(seen[0].slot, Some(s), "{case}: slot of the block device");
    teardown(f, &att, &[m]).await;
    assert_eq!(views(f).await, before, "{case}: views after teardown");
}

/// Several disks, mounts and a block-device link, torn down in order, leave the views exactly
/// as they were before.
pub async fn full_teardown_leaves_empty_views(f: &dyn Fixture) {
    let case = "full_teardown_leaves_empty_views";
    let (s0, s1) = (slot(f, 0), slot(f, 1));
    assert_free(f, case, &[s0, s1]).await;
    let before = views(f).await;
    let a0 = attach_req(f, s0, 140, "c14-a", false);
    let a1 = attach_req(f, s1, 141, "c14-b", true);
    attach(f, &a0).await;
    attach(f, &a1).await;
    let mut m0 = Vec::new();
    let mut m1 = Vec::new();
    if f.has_guest() {
        m0.push(mount_req(f, &a0, 5, "c14-a", false));
        m0.push(mount_req(f, &a0, 6, "c14-a-blk", true));
        m1.push(mount_req(f, &a1, 7, "c14-b", false));
        for m in m0.iter().chain(&m1) {
            mount(f, m).await;
        }
        assert_eq!(
            guest_view(f).await.mounts.len(),
            before.guest.as_ref().map_or(0, |g| g.mounts.len()) + 3,
            "{case}: three new mounts"
        );
    }
    assert_ne!(views(f).await, before, "{case}: nothing changed");
    teardown(f, &a1, &m1).await;
    teardown(f, &a0, &m0).await;
    let after = views(f).await;
    assert_eq!(after, before, "{case}: views after teardown");
    for s in [s0, s1] {
        assert!(!after.host.iter().any(|a| a.slot == s), "{case}: {s} held");
        if let Some(g) = &after.guest {
            assert!(!g.devices.contains(&s), "{case}: guest sees {s}");
            assert!(
                !g.mounts.iter().any(|m| m.slot == Some(s)),
                "{case}: mount on {s} left"
            );
        }
    }
}
