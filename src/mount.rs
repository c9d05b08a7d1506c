//! `Mount`: the handle a successful add returns. It names the slot and guest path and releases
//! them; it survives a shim restart by its durable id and owner label.

use crate::error::Result;
use crate::manager::Inner;
use lunledger_model::{HandleId, Slot};
use lunledger_recovery::Handle;
use std::fmt;
use std::sync::{Arc, Weak};

/// A reference on an attachment (and its mount, if any) held by one caller.
#[derive(Clone)]
pub struct Mount {
    // Weak: the manager owns the journal; a handle must not keep a closed manager's journal
    // locked.
    inner: Weak<Inner>,
    id: HandleId,
    slot: Slot,
    guest_path: String,
    owner: Option<String>,
}

impl fmt::Debug for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mount")
            .field("handle", &self.id)
            .field("slot", &self.slot)
            .field("guest_path", &self.guest_path)
            .field("owner", &self.owner)
            .finish()
    }
}

impl Mount {
    pub(crate) fn new(inner: Arc<Inner>, id: HandleId, h: &Handle) -> Self {
        Mount {
            inner: Arc::downgrade(&inner),
            id,
            slot: h.slot,
            guest_path: h.path.clone(),
            owner: h.owner.clone(),
        }
    }

    /// SCSI controller index.
    pub fn controller(&self) -> u32 {
        self.slot.controller
    }

    /// LUN on the controller.
    pub fn lun(&self) -> u32 {
        self.slot.lun
    }

    /// The (controller, LUN) slot.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// Guest path of the mount; empty for an attach-only add.
    pub fn guest_path(&self) -> &str {
        &self.guest_path
    }

    /// The handle's durable id.
    pub fn handle_id(&self) -> HandleId {
        self.id
    }

    /// The owner label given at add.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Releases the handle: unmounts and detaches when it held the last reference. A failed
    /// release can be called again and resumes where it stopped; after success, a second call
    /// returns [`crate::Error::AlreadyReleased`]. The release completes even if the caller
    /// stops waiting.
    pub async fn release(&self) -> Result<()> {
        let release = match self.inner.upgrade() {
            Some(inner) => inner.start_release(self.id)?,
            None => return Err(crate::Error::Stopped("the manager was closed".into())),
        };
        release.await
    }
}
