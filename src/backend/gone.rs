//! [`GoneVm`]: the backends of a VM that is gone for good (QEMU killed or crashed, not coming
//! back). A shim that finds its VM dead opens its journal with these to settle the journal
//! explicitly: a dead VM holds nothing, so `inspect` reports nothing, recovery records every
//! attachment and mount the journal held as lost (drift: `MissingAttachment`, `MissingMount`),
//! rolls back adds and finishes releases, and the handles left can be released without any VM
//! call. The journal then ends empty, ready for a new VM. Nothing new can be attached or mounted
//! (`BackendError::Unavailable`).
//!
//! Never use these for a VM that may still be running: its disks would be forgotten, not
//! detached. A VM that merely does not answer is the QEMU backends' timeouts' business.

use super::{
    AttachRequest, BackendError, DetachRequest, GuestBackend, GuestView, HostBackend, HostView,
    MountRequest,
};
use async_trait::async_trait;
use lunledger_model::Slot;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct GoneVm {
    why: String,
}

impl GoneVm {
    /// A gone VM; `why` is quoted by every refused call (e.g. "QEMU pid 123 was killed").
    pub fn new(why: impl Into<String>) -> Self {
        GoneVm { why: why.into() }
    }

    fn refuse(&self, what: &str) -> BackendError {
        BackendError::Unavailable(format!("the VM is gone ({}): cannot {what}", self.why))
    }
}

#[async_trait]
impl HostBackend for GoneVm {
    async fn attach(&self, _req: &AttachRequest) -> Result<(), BackendError> {
        Err(self.refuse("attach"))
    }
    async fn detach(&self, _req: &DetachRequest) -> Result<(), BackendError> {
        Ok(())
    }
    async fn inspect(&self) -> Result<HostView, BackendError> {
        Ok(HostView::default())
    }
}

#[async_trait]
impl GuestBackend for GoneVm {
    async fn mount(&self, _req: &MountRequest) -> Result<(), BackendError> {
        Err(self.refuse("mount"))
    }
    async fn unmount(&self, _req: &MountRequest) -> Result<(), BackendError> {
        Ok(())
    }
    async fn unplug(&self, _slot: Slot) -> Result<(), BackendError> {
        Ok(())
    }
    async fn inspect(&self) -> Result<GuestView, BackendError> {
        Ok(GuestView::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lunledger_model::{DiskKind, DiskSpec};

    #[tokio::test]
    async fn holds_nothing_refuses_new_work_and_tears_down_trivially() {
        let vm = GoneVm::new("killed");
        let slot = Slot::new(0, 1);
        assert_eq!(HostBackend::inspect(&vm).await, Ok(HostView::default()));
        assert_eq!(GuestBackend::inspect(&vm).await, Ok(GuestView::default()));
        let req = AttachRequest {
            slot,
            attach: 1,
            disk: DiskSpec {
                path: "/d".into(),
                read_only: false,
                kind: DiskKind::VirtualDisk,
                evd_type: None,
            },
        };
        let e = vm.attach(&req).await.unwrap_err();
        assert!(
            matches!(&e, BackendError::Unavailable(m) if m.contains("killed")),
            "{e:?}"
        );
        assert_eq!(vm.detach(&DetachRequest { slot, attach: 1 }).await, Ok(()));
        assert_eq!(vm.unplug(slot).await, Ok(()));
    }
}
