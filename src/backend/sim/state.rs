//! The simulated VM's state and the pure semantics of every backend call on it.
//!
//! Each `apply_*` function either changes the state and returns `Ok`, or returns an error and
//! leaves the state untouched. The rules mirror a real VM (see the QEMU backend notes) and are
//! strict, so that manager bugs fail loudly instead of passing silently.

use crate::backend::{
    AttachRequest, BackendError, DetachRequest, GuestMount, GuestView, HostAttachment, HostView,
    MountRequest,
};
use lunledger_model::{AttachId, DiskKind, DiskSpec, GuestOs, MountId, MountSpec, Slot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One disk attached on the host at a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimAttachment {
    /// Where.
    pub slot: Slot,
    /// The attachment's generation id; `None` for a disk someone else attached (drift).
    pub attach: Option<AttachId>,
    /// What.
    pub disk: DiskSpec,
    /// Whether the guest still sees the device (`false` once unplugged in the guest).
    pub guest_visible: bool,
}

/// One mount (or block-device link) at a guest path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimMount {
    /// The slot of the device behind the mount.
    pub slot: Slot,
    /// The attachment generation the mount was made on.
    pub attach: AttachId,
    /// The mount id the caller gave (informational: a real guest cannot know it).
    pub mount: MountId,
    /// How it was mounted.
    pub spec: MountSpec,
    /// `true` when the device behind the mount vanished while mounted (a surprise removal, only
    /// possible with strict mode off): the guest still lists it, as a real kernel does.
    pub zombie: bool,
}

/// Everything the simulated VM holds. Comparable, so tests can assert on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimState {
    /// Host attachments, sorted by slot, at most one per slot.
    pub attachments: Vec<SimAttachment>,
    /// Guest mounts by guest path.
    pub mounts: BTreeMap<String, SimMount>,
    /// The guest's OS: a Windows guest takes only drive-letter mount paths, mounts only on
    /// controller 0, has no unplug (a call is an error, so tests prove none is made) and lets
    /// the host detach a device it still sees once nothing is mounted on it. Defaulted so
    /// state files written before it load as Linux.
    #[serde(default)]
    pub guest: GuestOs,
}

fn failed(msg: impl Into<String>) -> BackendError {
    BackendError::Failed(msg.into())
}

impl SimState {
    /// The attachment at `slot`, if any.
    pub fn attachment(&self, slot: Slot) -> Option<&SimAttachment> {
        self.attachments.iter().find(|a| a.slot == slot)
    }

    fn attachment_mut(&mut self, slot: Slot) -> Option<&mut SimAttachment> {
        self.attachments.iter_mut().find(|a| a.slot == slot)
    }

    /// Inserts or replaces the attachment at its slot, keeping the list sorted. For tests that
    /// model drift (a disk someone else attached).
    pub fn put_attachment(&mut self, att: SimAttachment) {
        self.attachments.retain(|a| a.slot != att.slot);
        let pos = self.attachments.partition_point(|a| a.slot < att.slot);
        self.attachments.insert(pos, att);
    }

    /// Whether the state holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.attachments.is_empty() && self.mounts.is_empty()
    }

    /// Live (non-zombie) mounts on the device at `slot`.
    fn live_mounts_on(&self, slot: Slot) -> impl Iterator<Item = (&String, &SimMount)> {
        self.mounts
            .iter()
            .filter(move |(_, m)| m.slot == slot && !m.zombie)
    }

    fn zombify_mounts_on(&mut self, slot: Slot) {
        for m in self.mounts.values_mut().filter(|m| m.slot == slot) {
            m.zombie = true;
        }
    }

    /// Attach: an empty slot takes the disk; the same attach id with the same disk again is a
    /// no-op; anything else at an occupied slot fails. Like QEMU's image locking, a disk file or
    /// device already attached read-write at another slot (even one the guest has unplugged but
    /// the host has not detached) cannot be attached read-write again. (QEMU also refuses a
    /// reader beside a writer; the simulation leaves that out, as hcsshim, whose allocation the
    /// property tests compare against, attaches them side by side.)
    pub fn apply_attach(&mut self, req: &AttachRequest) -> Result<(), BackendError> {
        match self.attachment(req.slot) {
            None => {
                if let Some(held) = self.image_lock_conflict(req) {
                    return Err(failed(format!(
                        "Failed to get \"write\" lock: {} is attached read-write at slot {}",
                        req.disk.path, held.slot
                    )));
                }
                self.put_attachment(SimAttachment {
                    slot: req.slot,
                    attach: Some(req.attach),
                    disk: req.disk.clone(),
                    guest_visible: true,
                });
                Ok(())
            }
            Some(a) if a.attach == Some(req.attach) && a.disk == req.disk => Ok(()),
            Some(a) if a.attach == Some(req.attach) => Err(failed(format!(
                "slot {} already holds attachment {} with a different disk ({})",
                req.slot, req.attach, a.disk.path
            ))),
            Some(a) => Err(failed(format!(
                "slot {} is occupied by {} ({})",
                req.slot,
                match a.attach {
                    Some(id) => format!("attachment {id}"),
                    None => "a foreign disk".to_string(),
                },
                a.disk.path
            ))),
        }
    }

    /// Another read-write attachment of the same host file or device (same kind and path),
    /// which holds the write lock a read-write `req` needs (EVDs are not image files and take
    /// no lock).
    fn image_lock_conflict(&self, req: &AttachRequest) -> Option<&SimAttachment> {
        if req.disk.kind == DiskKind::ExtensibleVirtualDisk || req.disk.read_only {
            return None;
        }
        self.attachments.iter().find(|a| {
            a.slot != req.slot
                && a.disk.kind == req.disk.kind
                && a.disk.path == req.disk.path
                && !a.disk.read_only
        })
    }

    /// Detach: an empty slot, or one holding someone else's disk (unless the request's attach id
    /// is 0, which means any disk), is a no-op. In strict mode a
    /// device the guest still sees cannot be detached; otherwise it is yanked and its mounts
    /// become zombies.
    pub fn apply_detach(&mut self, req: &DetachRequest, strict: bool) -> Result<(), BackendError> {
        let Some(a) = self.attachment(req.slot) else {
            return Ok(());
        };
        // Attach id 0 is never issued; it asks for whatever is at the slot (stray disks).
        if req.attach != 0 && a.attach != Some(req.attach) {
            return Ok(());
        }
        if self.guest == GuestOs::Windows {
            // No unplug on Windows: the detach itself removes the device; with a volume
            // still mounted on it that is a surprise removal.
            if let Some((path, _)) = self.live_mounts_on(req.slot).next() {
                if strict {
                    return Err(failed(format!(
                        "device busy: {} is mounted at {path} in the Windows guest",
                        req.slot
                    )));
                }
            }
            self.zombify_mounts_on(req.slot);
        } else if a.guest_visible {
            if strict {
                return Err(failed(format!(
                    "detach before unplug: the guest still sees the device at {}",
                    req.slot
                )));
            }
            self.zombify_mounts_on(req.slot);
        }
        self.attachments.retain(|a| a.slot != req.slot);
        Ok(())
    }

    /// Mount: the device must be attached (with the request's attach id) and visible to the
    /// guest; the path must be free or hold exactly this mount already.
    pub fn apply_mount(&mut self, req: &MountRequest) -> Result<(), BackendError> {
        if let Err(why) = crate::guest_os::check_guest_path(self.guest, &req.path) {
            return Err(failed(format!("mount {:?}: {why}", req.path)));
        }
        // hcsshim's Windows mount request: "WCOW only supports SCSI controller 0".
        if self.guest == GuestOs::Windows && req.slot.controller != 0 {
            return Err(failed(format!(
                "mount {}: a Windows guest mounts only from SCSI controller 0, not {}",
                req.path, req.slot
            )));
        }
        match self.attachment(req.slot) {
            None => {
                return Err(failed(format!(
                    "mount {}: no device at {} in the guest",
                    req.path, req.slot
                )))
            }
            Some(a) if !a.guest_visible => {
                return Err(failed(format!(
                    "mount {}: device at {} was unplugged from the guest",
                    req.path, req.slot
                )))
            }
            Some(a) if a.attach != Some(req.attach) => {
                return Err(failed(format!(
                    "mount {}: device at {} is not attachment {}",
                    req.path, req.slot, req.attach
                )))
            }
            Some(_) => {}
        }
        if let Some(m) = self.mounts.get(&req.path) {
            if m.slot == req.slot
                && m.attach == req.attach
                && !m.zombie
                && m.spec.same_mount(&req.spec)
            {
                return Ok(());
            }
            return Err(failed(format!(
                "mount {}: path already holds a different mount (device {})",
                req.path, m.slot
            )));
        }
        self.mounts.insert(
            req.path.clone(),
            SimMount {
                slot: req.slot,
                attach: req.attach,
                mount: req.mount,
                spec: req.spec.clone(),
                zombie: false,
            },
        );
        Ok(())
    }

    /// Unmount: a path that is not mounted is a no-op; a path holding another device's mount
    /// fails (the manager would be unmounting something it does not own).
    pub fn apply_unmount(&mut self, req: &MountRequest) -> Result<(), BackendError> {
        let Some(m) = self.mounts.get(&req.path) else {
            return Ok(());
        };
        if m.slot != req.slot || m.attach != req.attach {
            return Err(failed(format!(
                "unmount {}: path holds the mount of device {} (attachment {}), not {} (attachment {})",
                req.path, m.slot, m.attach, req.slot, req.attach
            )));
        }
        self.mounts.remove(&req.path);
        Ok(())
    }

    /// Unplug: an absent or already unplugged device is a no-op. In strict mode a device with a
    /// live mount is busy; otherwise it goes and its mounts become zombies.
    pub fn apply_unplug(&mut self, slot: Slot, strict: bool) -> Result<(), BackendError> {
        if self.guest == GuestOs::Windows {
            return Err(BackendError::Unsupported(format!(
                "unplug of {slot}: a Windows guest has no unplug (hcsshim treats it as a no-op)"
            )));
        }
        let visible = self.attachment(slot).is_some_and(|a| a.guest_visible);
        if !visible {
            return Ok(());
        }
        if let Some((path, _)) = self.live_mounts_on(slot).next() {
            if strict {
                return Err(failed(format!(
                    "device busy: {slot} is mounted at {path} in the guest"
                )));
            }
        }
        self.zombify_mounts_on(slot);
        if let Some(a) = self.attachment_mut(slot) {
            a.guest_visible = false;
        }
        Ok(())
    }

    /// What the host reports.
    pub fn host_view(&self) -> HostView {
        HostView {
            attachments: self
                .attachments
                .iter()
                .map(|a| HostAttachment {
                    slot: a.slot,
                    attach: a.attach,
                    path: Some(a.disk.path.clone()),
                    read_only: Some(a.disk.read_only),
                    complete: true,
                })
                .collect(),
        }
    }

    /// What the guest reports: visible devices, and every mount (zombies included, as
    /// `/proc/mounts` lists them).
    pub fn guest_view(&self) -> GuestView {
        GuestView {
            devices: self
                .attachments
                .iter()
                .filter(|a| a.guest_visible)
                .map(|a| a.slot)
                .collect(),
            mounts: self
                .mounts
                .iter()
                .map(|(path, m)| GuestMount {
                    path: path.clone(),
                    slot: Some(m.slot),
                    block_dev: m.spec.block_dev,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lunledger_model::DiskKind;

    fn disk(name: &str) -> DiskSpec {
        DiskSpec {
            path: format!("/img/{name}"),
            read_only: false,
            kind: DiskKind::VirtualDisk,
            evd_type: None,
        }
    }

    fn att(slot: Slot, attach: AttachId, name: &str) -> AttachRequest {
        AttachRequest {
            slot,
            attach,
            disk: disk(name),
        }
    }

    fn mnt(slot: Slot, attach: AttachId, path: &str) -> MountRequest {
        MountRequest {
            slot,
            attach,
            mount: 1,
            path: path.into(),
            spec: MountSpec::default(),
        }
    }

    #[test]
    fn attach_rules() {
        let s0 = Slot::new(0, 0);
        let mut s = SimState::default();
        s.apply_attach(&att(s0, 1, "a")).unwrap();
        s.apply_attach(&att(s0, 1, "a")).unwrap();
        assert!(s.apply_attach(&att(s0, 2, "a")).is_err());
        assert!(s.apply_attach(&att(s0, 1, "b")).is_err());
        assert_eq!(s.attachments.len(), 1);
        s.apply_attach(&att(Slot::new(1, 3), 2, "b")).unwrap();
        s.apply_attach(&att(Slot::new(0, 5), 3, "c")).unwrap();
        let slots: Vec<_> = s.attachments.iter().map(|a| a.slot).collect();
        assert_eq!(slots, vec![s0, Slot::new(0, 5), Slot::new(1, 3)]);
    }

    #[test]
    fn a_read_write_image_cannot_be_attached_twice() {
        let mut s = SimState::default();
        let mut rw = att(Slot::new(0, 0), 1, "img");
        rw.disk.read_only = false;
        s.apply_attach(&rw).unwrap();
        // Unplugged in the guest, not yet detached: the host still holds the image.
        s.attachments[0].guest_visible = false;
        let mut again = att(Slot::new(0, 1), 2, "img");
        again.disk.read_only = false;
        let e = s.apply_attach(&again).unwrap_err();
        assert!(
            e.to_string().contains("Failed to get \"write\" lock"),
            "{e}"
        );
        s.apply_attach(&rw).unwrap();
        s.attachments.clear();
        s.apply_attach(&again).unwrap();
        // Readers share.
        let (mut r1, mut r2) = (att(Slot::new(1, 0), 3, "ro"), att(Slot::new(1, 1), 4, "ro"));
        r1.disk.read_only = true;
        r2.disk.read_only = true;
        s.apply_attach(&r1).unwrap();
        s.apply_attach(&r2).unwrap();
    }

    #[test]
    fn mount_rules() {
        let s0 = Slot::new(0, 0);
        let mut s = SimState::default();
        assert!(s.apply_mount(&mnt(s0, 1, "/m0")).is_err(), "no device");
        s.apply_attach(&att(s0, 1, "a")).unwrap();
        assert!(
            s.apply_mount(&mnt(s0, 2, "/m0")).is_err(),
            "wrong attach id"
        );
        s.apply_mount(&mnt(s0, 1, "/m0")).unwrap();
        s.apply_mount(&mnt(s0, 1, "/m0")).unwrap();
        let mut other = mnt(s0, 1, "/m0");
        other.spec.read_only = true;
        assert!(
            s.apply_mount(&other).is_err(),
            "different spec at same path"
        );
        s.apply_attach(&att(Slot::new(0, 1), 2, "b")).unwrap();
        assert!(s.apply_mount(&mnt(Slot::new(0, 1), 2, "/m0")).is_err());
        // Same device at a second path is fine.
        s.apply_mount(&mnt(s0, 1, "/m1")).unwrap();
        assert_eq!(s.mounts.len(), 2);
    }

    #[test]
    fn unmount_rules() {
        let s0 = Slot::new(0, 0);
        let mut s = SimState::default();
        s.apply_unmount(&mnt(s0, 1, "/m0")).unwrap();
        s.apply_attach(&att(s0, 1, "a")).unwrap();
        s.apply_mount(&mnt(s0, 1, "/m0")).unwrap();
        assert!(s.apply_unmount(&mnt(Slot::new(0, 1), 7, "/m0")).is_err());
        s.apply_unmount(&mnt(s0, 1, "/m0")).unwrap();
        s.apply_unmount(&mnt(s0, 1, "/m0")).unwrap();
        assert!(s.mounts.is_empty());
    }

    #[test]
    fn strict_teardown_order() {
        let s0 = Slot::new(0, 0);
        let mut s = SimState::default();
        s.apply_unplug(s0, true).unwrap();
        s.apply_detach(
            &DetachRequest {
                slot: s0,
                attach: 1,
            },
            true,
        )
        .unwrap();
        s.apply_attach(&att(s0, 1, "a")).unwrap();
        s.apply_mount(&mnt(s0, 1, "/m0")).unwrap();
        let e = s.apply_unplug(s0, true).unwrap_err();
        assert!(e.to_string().contains("device busy"), "{e}");
        let e = s
            .apply_detach(
                &DetachRequest {
                    slot: s0,
                    attach: 1,
                },
                true,
            )
            .unwrap_err();
        assert!(e.to_string().contains("detach before unplug"), "{e}");
        // Someone else's slot: nothing of ours, success, no effect.
        s.apply_detach(
            &DetachRequest {
                slot: s0,
                attach: 9,
            },
            true,
        )
        .unwrap();
        assert_eq!(s.attachments.len(), 1);
        s.apply_unmount(&mnt(s0, 1, "/m0")).unwrap();
        s.apply_unplug(s0, true).unwrap();
        s.apply_unplug(s0, true).unwrap();
        assert!(s.guest_view().devices.is_empty());
        assert_eq!(s.host_view().attachments.len(), 1);
        assert!(s.apply_mount(&mnt(s0, 1, "/m0")).is_err(), "unplugged");
        s.apply_detach(
            &DetachRequest {
                slot: s0,
                attach: 1,
            },
            true,
        )
        .unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn lax_mode_leaves_zombie_mounts() {
        let s0 = Slot::new(0, 0);
        let mut s = SimState::default();
        s.apply_attach(&att(s0, 1, "a")).unwrap();
        s.apply_mount(&mnt(s0, 1, "/m0")).unwrap();
        s.apply_unplug(s0, false).unwrap();
        assert!(s.mounts["/m0"].zombie);
        assert_eq!(s.guest_view().mounts.len(), 1);
        assert!(s.guest_view().devices.is_empty());
        // A zombie blocks its path for a fresh mount but can be unmounted.
        s.apply_unmount(&mnt(s0, 1, "/m0")).unwrap();

        let s1 = Slot::new(0, 1);
        s.apply_attach(&att(s1, 2, "b")).unwrap();
        s.apply_mount(&mnt(s1, 2, "/m1")).unwrap();
        s.apply_detach(
            &DetachRequest {
                slot: s1,
                attach: 2,
            },
            false,
        )
        .unwrap();
        assert!(s.mounts["/m1"].zombie);
        assert!(s.attachment(s1).is_none());
    }

    #[test]
    fn views() {
        let mut s = SimState::default();
        let mut req = att(Slot::new(2, 7), 4, "ro");
        req.disk.read_only = true;
        s.apply_attach(&req).unwrap();
        let mut m = mnt(Slot::new(2, 7), 4, "/dev/x");
        m.spec.block_dev = true;
        s.apply_mount(&m).unwrap();
        let h = s.host_view();
        assert_eq!(
            h.attachments,
            vec![HostAttachment {
                slot: Slot::new(2, 7),
                attach: Some(4),
                path: Some("/img/ro".into()),
                read_only: Some(true),
                complete: true,
            }]
        );
        let g = s.guest_view();
        assert_eq!(g.devices, vec![Slot::new(2, 7)]);
        assert_eq!(
            g.mounts,
            vec![GuestMount {
                path: "/dev/x".into(),
                slot: Some(Slot::new(2, 7)),
                block_dev: true,
            }]
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Attach(u32, u64, u8),
            Detach(u32, u64),
            Mount(u32, u64, u8, bool),
            Unmount(u32, u64, u8),
            Unplug(u32),
        }

        fn slot(i: u32) -> Slot {
            Slot::new(i / 2, i % 2)
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0..4u32, 1..4u64, 0..2u8).prop_map(|(s, a, d)| Op::Attach(s, a, d)),
                (0..4u32, 1..4u64).prop_map(|(s, a)| Op::Detach(s, a)),
                (0..4u32, 1..4u64, 0..3u8, any::<bool>())
                    .prop_map(|(s, a, p, b)| Op::Mount(s, a, p, b)),
                (0..4u32, 1..4u64, 0..3u8).prop_map(|(s, a, p)| Op::Unmount(s, a, p)),
                (0..4u32).prop_map(Op::Unplug),
            ]
        }

        fn apply(s: &mut SimState, op: &Op, strict: bool) -> Result<(), BackendError> {
            match *op {
                Op::Attach(i, a, d) => s.apply_attach(&att(slot(i), a, &format!("d{d}"))),
                Op::Detach(i, a) => s.apply_detach(
                    &DetachRequest {
                        slot: slot(i),
                        attach: a,
                    },
                    strict,
                ),
                Op::Mount(i, a, p, b) => {
                    let mut m = mnt(slot(i), a, &format!("/m{p}"));
                    m.spec.block_dev = b;
                    s.apply_mount(&m)
                }
                Op::Unmount(i, a, p) => s.apply_unmount(&mnt(slot(i), a, &format!("/m{p}"))),
                Op::Unplug(i) => s.apply_unplug(slot(i), strict),
            }
        }

        fn check_invariants(s: &SimState, strict: bool) {
            let slots: Vec<_> = s.attachments.iter().map(|a| a.slot).collect();
            let mut sorted = slots.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(slots, sorted, "one attachment per slot, sorted");
            for (path, m) in &s.mounts {
                if m.zombie {
                    assert!(!strict, "zombie {path} in strict mode");
                    continue;
                }
                let a = s.attachment(m.slot);
                assert!(
                    a.is_some_and(|a| a.guest_visible && a.attach == Some(m.attach)),
                    "live mount {path} on a device the guest does not see"
                );
            }
        }

        proptest! {
            #[test]
            fn any_sequence_keeps_invariants(
                ops in proptest::collection::vec(op(), 0..60),
                strict in any::<bool>(),
            ) {
                let mut s = SimState::default();
                for op in &ops {
                    let before = s.clone();
                    match apply(&mut s, op, strict) {
                        Err(_) => prop_assert_eq!(&s, &before, "failed {:?} changed state", op),
                        Ok(()) => {
                            // Every successful call is idempotent: again changes nothing.
                            let once = s.clone();
                            prop_assert!(apply(&mut s, op, strict).is_ok(), "{:?} again", op);
                            prop_assert_eq!(&s, &once, "{:?} again changed state", op);
                        }
                    }
                    check_invariants(&s, strict);
                }
            }
        }
    }
}
