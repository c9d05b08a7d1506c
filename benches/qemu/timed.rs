//! Backends that pass every call on to the shared QEMU backends and log what was called and how
//! long it took. Each manager gets its own pair with its own log, so the bench can check that the
//! journaled and the un-journaled manager made the same calls in the same order, and split each
//! cycle into time inside backend calls (the VM) and time outside them (the manager's own work,
//! the journal's included).

use async_trait::async_trait;
use lunledger::backend::{
    AttachRequest, BackendError, DetachRequest, GuestBackend, GuestView, HostBackend, HostView,
    MountRequest,
};
use lunledger::model::{ManagerConfig, Slot};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One backend call: its name, what it was called on, and its duration (ms).
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub name: &'static str,
    /// The slot (`controller:lun`) and, for mounts, the guest path; not the attach and mount
    /// ids, which the managers number differently.
    pub on: String,
    pub ms: f64,
}

/// The calls made since the last [`CallLog::take`].
#[derive(Default)]
pub struct CallLog(Mutex<Vec<Call>>);

impl CallLog {
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    async fn timed<T>(
        &self,
        name: &'static str,
        on: String,
        call: impl std::future::Future<Output = T>,
    ) -> T {
        let t = Instant::now();
        let out = call.await;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Call { name, on, ms });
        out
    }
}

/// Wraps both sides of a VM with one shared log.
pub fn wrap(
    host: Arc<dyn HostBackend>,
    guest: Arc<dyn GuestBackend>,
) -> (Arc<dyn HostBackend>, Arc<dyn GuestBackend>, Arc<CallLog>) {
    let log = Arc::new(CallLog::default());
    let h = TimedHost {
        inner: host,
        log: log.clone(),
    };
    let g = TimedGuest {
        inner: guest,
        log: log.clone(),
    };
    (Arc::new(h), Arc::new(g), log)
}

struct TimedHost {
    inner: Arc<dyn HostBackend>,
    log: Arc<CallLog>,
}

#[async_trait]
impl HostBackend for TimedHost {
    async fn grant_vm_access(&self, vm_id: &str, path: &str) -> Result<(), BackendError> {
        let call = self.inner.grant_vm_access(vm_id, path);
        self.log.timed("grant", String::new(), call).await
    }
    async fn attach(&self, req: &AttachRequest) -> Result<(), BackendError> {
        let call = self.inner.attach(req);
        self.log.timed("attach", on(req.slot), call).await
    }
    async fn detach(&self, req: &DetachRequest) -> Result<(), BackendError> {
        let call = self.inner.detach(req);
        self.log.timed("detach", on(req.slot), call).await
    }
    async fn inspect(&self) -> Result<HostView, BackendError> {
        let call = self.inner.inspect();
        self.log.timed("host inspect", String::new(), call).await
    }
    async fn check_config(&self, config: &ManagerConfig) -> Result<(), BackendError> {
        let call = self.inner.check_config(config);
        self.log
            .timed("host check_config", String::new(), call)
            .await
    }
}

struct TimedGuest {
    inner: Arc<dyn GuestBackend>,
    log: Arc<CallLog>,
}

#[async_trait]
impl GuestBackend for TimedGuest {
    async fn mount(&self, req: &MountRequest) -> Result<(), BackendError> {
        let call = self.inner.mount(req);
        self.log.timed("mount", on_mount(req), call).await
    }
    async fn unmount(&self, req: &MountRequest) -> Result<(), BackendError> {
        let call = self.inner.unmount(req);
        self.log.timed("unmount", on_mount(req), call).await
    }
    async fn unplug(&self, slot: Slot) -> Result<(), BackendError> {
        let call = self.inner.unplug(slot);
        self.log.timed("unplug", on(slot), call).await
    }
    async fn inspect(&self) -> Result<GuestView, BackendError> {
        let call = self.inner.inspect();
        self.log.timed("guest inspect", String::new(), call).await
    }
    async fn check_config(&self, config: &ManagerConfig) -> Result<(), BackendError> {
        let call = self.inner.check_config(config);
        self.log
            .timed("guest check_config", String::new(), call)
            .await
    }
}

fn on(slot: Slot) -> String {
    format!("{}:{}", slot.controller, slot.lun)
}

fn on_mount(req: &MountRequest) -> String {
    format!("{} {}", on(req.slot), req.path)
}
