//! A test hook that widens the windows inside the backends' multi-command sequences, so a kill
//! test can aim a SIGKILL of the shim between two QMP commands of one attach or detach, or inside
//! a guest script, instead of hoping a random delay lands there.
//!
//! The hook is called with a site name (one of the constants below) each time the backend
//! reaches it, and returns how long to pause there (zero: no pause). Host sites pause on the
//! host between commands; guest sites make the guest script itself sleep at its inner steps
//! (after `cryptsetup open` and before `mkfs`, before `mount`; between `umount` and removing the
//! mount point or closing the mapping; between the unplug script's mounted check and the
//! delete), so killing the shim then leaves the script running in the guest, as a real crash
//! would.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Between `blockdev-add` and `device_add` of an attach.
pub const ATTACH_AFTER_BLOCKDEV_ADD: &str = "attach: between blockdev-add and device_add";
/// Between `device_del` and waiting for the device to go (`DEVICE_DELETED`).
pub const DETACH_AFTER_DEVICE_DEL: &str = "detach: between device_del and DEVICE_DELETED";
/// Between the device being gone and `blockdev-del`.
pub const DETACH_BEFORE_BLOCKDEV_DEL: &str = "detach: between DEVICE_DELETED and blockdev-del";
/// Inside the guest mount script (before mkfs, before mount).
pub const GUEST_MOUNT: &str = "guest: inside the mount script";
/// Inside the guest unmount script (between umount and rmdir / cryptsetup close).
pub const GUEST_UNMOUNT: &str = "guest: inside the unmount script";
/// Inside the guest unplug script (between its mounted check and the delete).
pub const GUEST_UNPLUG: &str = "guest: inside the unplug script";

/// Every site, for tests that aim at each in turn.
pub const SITES: [&str; 6] = [
    ATTACH_AFTER_BLOCKDEV_ADD,
    DETACH_AFTER_DEVICE_DEL,
    DETACH_BEFORE_BLOCKDEV_DEL,
    GUEST_MOUNT,
    GUEST_UNMOUNT,
    GUEST_UNPLUG,
];

/// See the module documentation.
#[derive(Clone)]
pub struct SequenceHook(Arc<dyn Fn(&'static str) -> Duration + Send + Sync>);

impl SequenceHook {
    /// A hook calling `f(site)` at each site; `f` returns the pause.
    pub fn new(f: impl Fn(&'static str) -> Duration + Send + Sync + 'static) -> Self {
        SequenceHook(Arc::new(f))
    }

    /// The pause at `site`.
    pub(crate) fn pause(&self, site: &'static str) -> Duration {
        (self.0)(site)
    }

    /// Calls the hook and sleeps for the pause it returns (host sites).
    pub(crate) async fn at(hook: &Option<SequenceHook>, site: &'static str) {
        if let Some(h) = hook {
            let d = h.pause(site);
            if !d.is_zero() {
                tokio::time::sleep(d).await;
            }
        }
    }
}

impl fmt::Debug for SequenceHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SequenceHook(..)")
    }
}
