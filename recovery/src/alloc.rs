//! Allocation rules, exactly hcsshim's: an existing match anywhere wins; otherwise the first free
//! slot in controller-major order; mounts take the lowest free index and the path the format gives
//! it. Unlike hcsshim, nothing half torn down or lost is ever matched, and a generated path never
//! collides with a requested one.

use crate::state::{Handle, Mount, State};
use lunledger_model::{DiskKind, DiskSpec, HandleId, MountId, MountSpec, Slot};

impl State {
    /// The shareable attachment with this key, if any.
    pub fn find_attachment(&self, disk: &DiskSpec) -> Option<Slot> {
        self.attachments
            .iter()
            .find(|(_, a)| a.phase.shareable() && a.disk == *disk)
            .map(|(slot, _)| *slot)
    }

    /// The slot of an attachment of the same host file or device as `disk` (same kind and
    /// path) whose teardown is
    /// due (unplug or detach not done yet), when it conflicts with a new attachment of `disk`:
    /// the VM still holds the image, and QEMU locks images, so a second attachment fails when
    /// either one is read-write. A new add of `disk` must wait for that teardown. EVDs take no
    /// image lock.
    pub fn teardown_holding(&self, disk: &DiskSpec) -> Option<Slot> {
        if disk.kind == DiskKind::ExtensibleVirtualDisk {
            return None;
        }
        self.attachments
            .iter()
            .find(|(_, a)| {
                a.phase.teardown_due()
                    && a.disk.kind == disk.kind
                    && a.disk.path == disk.path
                    && (!a.disk.read_only || !disk.read_only)
            })
            .map(|(slot, _)| *slot)
    }

    /// The first free slot, controller-major, skipping reserved slots.
    pub fn free_slot(&self) -> Option<Slot> {
        let cfg = self.config.as_ref()?;
        (0..cfg.controllers)
            .flat_map(|c| (0..cfg.luns_per_controller).map(move |l| Slot::new(c, l)))
            .find(|s| !cfg.reserved.contains(s) && !self.attachments.contains_key(s))
    }

    /// The shareable mount of the attachment at `slot` with this key, if any.
    pub fn find_mount(&self, slot: Slot, spec: &MountSpec) -> Option<MountId> {
        let attach = self.attachments.get(&slot)?.attach;
        self.mounts
            .iter()
            .find(|(_, m)| {
                m.slot == slot
                    && m.attach == attach
                    && m.phase.shareable()
                    && m.spec.same_mount(spec)
            })
            .map(|(id, _)| *id)
    }

    /// The mount holding a guest path, if any (in any phase: a path is reserved until unmounted).
    pub fn mount_at_path(&self, path: &str) -> Option<(MountId, &Mount)> {
        self.mounts
            .iter()
            .find(|(_, m)| m.path == path)
            .map(|(id, m)| (*id, m))
    }

    /// The lowest mount index no mount holds. Every new mount takes one, even one at a requested
    /// path (as in hcsshim).
    pub fn lowest_free_index(&self) -> u32 {
        let used = self.used_indexes();
        (0..=u32::MAX)
            .find(|i| used.binary_search(i).is_err())
            .unwrap_or(u32::MAX)
    }

    /// The lowest free mount index whose generated path is free, with that path. `None` when the
    /// configuration is missing or its format is invalid.
    pub fn next_mount_path(&self) -> Option<(u32, String)> {
        let cfg = self.config.as_ref()?;
        // This runs on every add, under the manager's state lock: one sorted index list, and a
        // path is formatted (and looked for among the mounts) only for a free index. A requested
        // path rarely equals a generated one, so the first free index almost always wins.
        let used = self.used_indexes();
        for i in (0..=u32::MAX).filter(|i| used.binary_search(i).is_err()) {
            // An invalid format gives no path for any index: stop at the first.
            let path = cfg.mount_path(i)?;
            if !self.mounts.values().any(|m| m.path == path) {
                return Some((i, path));
            }
        }
        None
    }

    /// The indexes mounts hold, sorted and without repeats.
    fn used_indexes(&self) -> Vec<u32> {
        let mut used: Vec<u32> = self.mounts.values().filter_map(|m| m.index).collect();
        used.sort_unstable();
        used.dedup();
        used
    }

    /// Live handles labelled with `owner`.
    pub fn handles_by_owner<'a>(
        &'a self,
        owner: &'a str,
    ) -> impl Iterator<Item = (HandleId, &'a Handle)> + 'a {
        self.handles
            .iter()
            .filter(move |(_, h)| h.owner.as_deref() == Some(owner))
            .map(|(id, h)| (*id, h))
    }
}
