//! The honest in-memory baseline: an hcsshim-like SCSI manager with no journal.
//!
//! Attachments are keyed by disk (path, read-only, kind) in a `HashMap` with reference counts;
//! slots are taken first-free in controller-major order by a linear scan (as hcsshim does);
//! mounts hang off their attachment, keyed by their spec, with the lowest free mount index. It
//! calls the very same backends as the real manager, in the same order (attach, mount; unmount,
//! unplug, detach): any `HostBackend` and `GuestBackend`, the `SimVm`'s in this suite and real
//! QEMU's in `benches/qemu` (which checks, cycle by cycle, that both made the same calls). It does not wait for an in-flight attach of a shared disk (hcsshim
//! does); the benchmarks never share a disk between concurrent callers, so this costs it nothing.
//!
//! Optionally it persists Kata-style: after every operation (add or release) it serializes its
//! whole state to JSON (`to_writer_pretty`, as Kata's `persist` crate) and writes it, either as
//! Kata does (truncate and write in place, no fsync) or crash-safe (temporary file, fsync,
//! rename, fsync of the directory); and, for a like-for-like guarantee with a write-ahead
//! journal, crash-safe before every backend call too.

use lunledger::backend::{AttachRequest, DetachRequest, GuestBackend, HostBackend, MountRequest};
use lunledger::model::{DiskKind, DiskSpec, ManagerConfig, MountSpec, Slot};
use serde::Serialize;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How the baseline persists its state after every operation.
#[derive(Clone, Debug)]
pub enum Persist {
    /// Not at all (pure in-memory bookkeeping).
    None,
    /// Kata as shipped: `File::create` + `to_writer_pretty`, no rename, no fsync.
    KataNoSync(PathBuf),
    /// Crash-safe snapshot: write `<file>.tmp`, fsync, rename over `<file>`, fsync the directory.
    SnapshotFsync(PathBuf),
    /// The crash-safe snapshot also before every backend call (attach, mount, unmount, unplug,
    /// detach), as well as after the operation: what snapshot persistence needs to give the
    /// crash guarantee of a write-ahead journal (after a crash the state names every call that
    /// may have happened).
    SnapshotFsyncWriteAhead(PathBuf),
}

#[derive(Serialize)]
struct BaseMount {
    id: u64,
    index: u32,
    path: String,
    spec: MountSpec,
    refs: u32,
}

#[derive(Serialize)]
struct BaseAttachment {
    slot: Slot,
    attach: u64,
    disk: DiskSpec,
    refs: u32,
    mounts: Vec<BaseMount>,
}

#[derive(Serialize, Default)]
struct BaseState {
    /// Keyed by "path|ro|kind" (JSON needs string keys).
    attachments: HashMap<String, BaseAttachment>,
    #[serde(skip)]
    slots_used: Vec<bool>,
    #[serde(skip)]
    mount_index_used: Vec<bool>,
    next_attach: u64,
    next_mount: u64,
}

/// What an add returns: enough to release.
pub struct BaseHandle {
    key: String,
    mount: Option<u64>,
}

/// The baseline manager.
pub struct BaseManager {
    state: Mutex<BaseState>,
    host: Arc<dyn HostBackend>,
    guest: Arc<dyn GuestBackend>,
    config: ManagerConfig,
    persist: Mutex<Persist>,
}

fn key(d: &DiskSpec) -> String {
    format!("{}|{}|{}", d.path, d.read_only, d.kind.as_str())
}

impl BaseManager {
    pub fn new(
        config: ManagerConfig,
        host: Arc<dyn HostBackend>,
        guest: Arc<dyn GuestBackend>,
        persist: Persist,
    ) -> Arc<BaseManager> {
        let slots = (config.controllers * config.luns_per_controller) as usize;
        Arc::new(BaseManager {
            state: Mutex::new(BaseState {
                slots_used: vec![false; slots],
                next_attach: 1,
                next_mount: 1,
                ..Default::default()
            }),
            host,
            guest,
            config,
            persist: Mutex::new(persist),
        })
    }

    /// Changes how the state is persisted from now on.
    pub fn set_persist(&self, persist: Persist) {
        *self.persist.lock().unwrap_or_else(|e| e.into_inner()) = persist;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BaseState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attach (first free slot) and mount (lowest free index) `path`, sharing both when present.
    pub async fn add(&self, path: &str, mount: Option<MountSpec>) -> Result<BaseHandle, String> {
        let disk = DiskSpec {
            path: path.to_string(),
            read_only: false,
            kind: DiskKind::VirtualDisk,
            evd_type: None,
        };
        let k = key(&disk);
        let (slot, attach, new) = {
            let mut st = self.lock();
            if let Some(a) = st.attachments.get_mut(&k) {
                a.refs += 1;
                (a.slot, a.attach, false)
            } else {
                let luns = self.config.luns_per_controller as usize;
                let i = st
                    .slots_used
                    .iter()
                    .position(|u| !u)
                    .ok_or("no available location")?;
                st.slots_used[i] = true;
                let slot = Slot::new((i / luns) as u32, (i % luns) as u32);
                let attach = st.next_attach;
                st.next_attach += 1;
                st.attachments.insert(
                    k.clone(),
                    BaseAttachment {
                        slot,
                        attach,
                        disk: disk.clone(),
                        refs: 1,
                        mounts: Vec::new(),
                    },
                );
                (slot, attach, true)
            }
        };
        if new {
            let req = AttachRequest {
                slot,
                attach,
                disk: disk.clone(),
            };
            self.persist_before_call()?;
            self.host.attach(&req).await.map_err(|e| e.to_string())?;
        }
        let mut mount_id = None;
        if let Some(spec) = mount {
            let new_mount = {
                let mut st = self.lock();
                let st = &mut *st;
                let a = st.attachments.get_mut(&k).ok_or("attachment vanished")?;
                if let Some(m) = a.mounts.iter_mut().find(|m| m.spec.same_mount(&spec)) {
                    m.refs += 1;
                    mount_id = Some(m.id);
                    None
                } else {
                    let index = match st.mount_index_used.iter().position(|u| !u) {
                        Some(i) => i,
                        None => {
                            st.mount_index_used.push(false);
                            st.mount_index_used.len() - 1
                        }
                    };
                    st.mount_index_used[index] = true;
                    let id = st.next_mount;
                    st.next_mount += 1;
                    let path = self
                        .config
                        .mount_path(index as u32)
                        .ok_or("bad mount format")?;
                    a.mounts.push(BaseMount {
                        id,
                        index: index as u32,
                        path: path.clone(),
                        spec: spec.clone(),
                        refs: 1,
                    });
                    mount_id = Some(id);
                    Some(MountRequest {
                        slot,
                        attach,
                        mount: id,
                        path,
                        spec,
                    })
                }
            };
            if let Some(req) = new_mount {
                self.persist_before_call()?;
                self.guest.mount(&req).await.map_err(|e| e.to_string())?;
            }
        }
        self.persist_now()?;
        Ok(BaseHandle {
            key: k,
            mount: mount_id,
        })
    }

    /// Drop the handle's references; unmount, unplug and detach what is no longer used.
    pub async fn release(&self, h: BaseHandle) -> Result<(), String> {
        let (unmount, detach) = {
            let mut st = self.lock();
            let st = &mut *st;
            let a = st.attachments.get_mut(&h.key).ok_or("no such attachment")?;
            let mut unmount = None;
            if let Some(id) = h.mount {
                let i = a
                    .mounts
                    .iter()
                    .position(|m| m.id == id)
                    .ok_or("no such mount")?;
                a.mounts[i].refs -= 1;
                if a.mounts[i].refs == 0 {
                    // The index (and so the path) stays taken until the unmount succeeded.
                    let m = a.mounts.swap_remove(i);
                    let req = MountRequest {
                        slot: a.slot,
                        attach: a.attach,
                        mount: m.id,
                        path: m.path,
                        spec: m.spec,
                    };
                    unmount = Some((m.index as usize, req));
                }
            }
            a.refs -= 1;
            let detach = if a.refs == 0 {
                let a = st.attachments.remove(&h.key).ok_or("vanished")?;
                Some(DetachRequest {
                    slot: a.slot,
                    attach: a.attach,
                })
            } else {
                None
            };
            (unmount, detach)
        };
        if let Some((index, req)) = unmount {
            self.persist_before_call()?;
            self.guest.unmount(&req).await.map_err(|e| e.to_string())?;
            self.lock().mount_index_used[index] = false;
        }
        if let Some(req) = detach {
            self.persist_before_call()?;
            self.guest
                .unplug(req.slot)
                .await
                .map_err(|e| e.to_string())?;
            self.persist_before_call()?;
            self.host.detach(&req).await.map_err(|e| e.to_string())?;
            let luns = self.config.luns_per_controller as usize;
            let i = req.slot.controller as usize * luns + req.slot.lun as usize;
            self.lock().slots_used[i] = false;
        }
        self.persist_now()
    }

    /// In write-ahead mode, persists before a backend call.
    fn persist_before_call(&self) -> Result<(), String> {
        let write_ahead = matches!(
            *self.persist.lock().unwrap_or_else(|e| e.into_inner()),
            Persist::SnapshotFsyncWriteAhead(_)
        );
        if write_ahead {
            self.persist_now()?;
        }
        Ok(())
    }

    /// Serializes the whole state and writes it, as `self.persist` says.
    fn persist_now(&self) -> Result<(), String> {
        // Held while writing: snapshots are written one at a time, in order.
        let persist = self.persist.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*persist, Persist::None) {
            return Ok(());
        }
        let bytes = {
            let st = self.lock();
            serde_json::to_vec_pretty(&*st).map_err(|e| e.to_string())?
        };
        let io = |e: std::io::Error| e.to_string();
        match &*persist {
            Persist::None => {}
            Persist::KataNoSync(file) => {
                let mut f = File::create(file).map_err(io)?;
                f.write_all(&bytes).map_err(io)?;
            }
            Persist::SnapshotFsync(file) | Persist::SnapshotFsyncWriteAhead(file) => {
                let tmp = file.with_extension("json.tmp");
                let mut f = File::create(&tmp).map_err(io)?;
                f.write_all(&bytes).map_err(io)?;
                f.sync_all().map_err(io)?;
                drop(f);
                fs::rename(&tmp, file).map_err(io)?;
                let dir = file.parent().ok_or("snapshot file has no directory")?;
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
        }
        Ok(())
    }

    /// Size in bytes of one serialized snapshot (for the report).
    pub fn snapshot_len(&self) -> usize {
        let st = self.lock();
        serde_json::to_vec_pretty(&*st)
            .map(|v| v.len())
            .unwrap_or(0)
    }
}
