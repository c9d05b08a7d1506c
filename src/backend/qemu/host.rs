//! [`QemuHost`]: the host side over QMP. Attach is `blockdev-add` then `device_add scsi-hd`;
//! detach is `device_del`, a poll until the device has left `query-block`, then `blockdev-del`.
//! Everything is derived from queries, never from events: QEMU does not replay events to a
//! client that reconnects after a crash.

use super::controllers::ControllerMap;
use super::error::QemuError;
use super::hooks::{self, SequenceHook};
use super::image;
use super::names;
use super::qmp::QmpClient;
use crate::backend::{
    AttachRequest, BackendError, DetachRequest, HostAttachment, HostBackend, HostView,
};
use async_trait::async_trait;
use lunledger_model::{AttachId, DiskKind, ManagerConfig, Slot};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How often detach polls `query-block` while QEMU finishes an unplug (~60 ms typically).
const UNPLUG_POLL: Duration = Duration::from_millis(10);

/// Timeouts of a [`QemuHost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QemuHostOptions {
    /// Bound on the QMP handshake and each QMP command.
    pub command_timeout: Duration,
    /// Bound on waiting for a `device_del` to complete.
    pub unplug_timeout: Duration,
}

impl Default for QemuHostOptions {
    fn default() -> Self {
        QemuHostOptions {
            command_timeout: Duration::from_secs(5),
            unplug_timeout: Duration::from_secs(10),
        }
    }
}

/// The host backend for a QEMU VM whose SCSI controllers are `virtio-scsi-pci` devices with ids
/// `scsi0`, `scsi1`, ... Slot (controller c, LUN l) is `scsi-id` 0, `lun` l on bus `scsi<c>.0`.
///
/// It owns one QMP connection (QEMU serves one client per monitor) and serialises calls on it;
/// a broken connection is re-established on the next call.
#[derive(Debug)]
pub struct QemuHost {
    qmp: Mutex<QmpClient>,
    opts: QemuHostOptions,
    hook: Option<SequenceHook>,
}

/// One block device as `query-block` shows it.
struct BlockEntry {
    qdev: String,
    node: Option<String>,
    file: Option<String>,
    read_only: Option<bool>,
}

impl QemuHost {
    /// Connects to the QMP monitor at `qmp_socket` with default timeouts.
    pub async fn connect(qmp_socket: impl AsRef<Path>) -> Result<Self, BackendError> {
        QemuHost::connect_with(qmp_socket, QemuHostOptions::default()).await
    }

    /// Connects to the QMP monitor at `qmp_socket`.
    pub async fn connect_with(
        qmp_socket: impl AsRef<Path>,
        opts: QemuHostOptions,
    ) -> Result<Self, BackendError> {
        let qmp = QmpClient::connect(qmp_socket, opts.command_timeout).await?;
        Ok(QemuHost {
            qmp: Mutex::new(qmp),
            opts,
            hook: None,
        })
    }

    /// Installs a test hook that pauses inside attach and detach (see [`super::hooks`]).
    pub fn with_sequence_hook(mut self, hook: SequenceHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The controllers' PCI addresses, which [`super::QemuGuest`] needs to find them in the guest.
    pub async fn controller_map(&self) -> Result<ControllerMap, BackendError> {
        let mut qmp = self.qmp.lock().await;
        let map = match ControllerMap::query(&mut qmp).await {
            Err(e) if e.is_connection() => ControllerMap::query(&mut qmp).await,
            r => r,
        };
        Ok(map?)
    }

    /// Runs a raw QMP command on this backend's connection (diagnostics and tests).
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QemuError> {
        let mut qmp = self.qmp.lock().await;
        qmp.execute(command, arguments).await
    }

    async fn attach_locked(
        &self,
        qmp: &mut QmpClient,
        req: &AttachRequest,
    ) -> Result<(), QemuError> {
        names::check_slot(req.slot)?;
        if req.disk.kind == DiskKind::ExtensibleVirtualDisk {
            return Err(QemuError::Unsupported(format!(
                "extensible virtual disks ({}) have no QEMU equivalent",
                req.disk.evd_type.as_deref().unwrap_or("?")
            )));
        }
        if !Path::new(&req.disk.path).is_absolute() {
            // QEMU would resolve it against its own working directory ("/" once daemonized),
            // not ours.
            return Err(QemuError::Unsupported(format!(
                "disk path {:?} is relative; the QEMU backend needs absolute paths",
                req.disk.path
            )));
        }
        let (protocol, format) = image::probe(Path::new(&req.disk.path)).await?;
        let node = names::node_name(req.attach);
        let dev = names::device_id(req.attach);

        // 1. The block node. The common case (nothing there yet) costs one command; a node an
        // earlier try left behind is reused once it is checked to be the same disk.
        let ro = req.disk.read_only;
        let args = json!({
            "driver": format.driver(),
            "node-name": node,
            "read-only": ro,
            "file": {
                "driver": protocol,
                "filename": req.disk.path,
                "node-name": names::file_node_name(req.attach, req.slot),
                "read-only": ro,
            },
        });
        match call(qmp, "blockdev-add", Some(args)).await {
            Ok(_) => {}
            Err(e) if e.desc_contains("Duplicate nodes") => {
                // A retry. Cheapest first: with hundreds of disks query-named-block-nodes takes
                // tens of ms and qom-get well under one.
                match device_slot(qmp, &dev).await? {
                    Some(slot) if slot == Some(req.slot) => {
                        let blocks = query_block(qmp).await?;
                        return match blocks.iter().find(|b| b.qdev == dev) {
                            Some(b) => check_same_disk(
                                &node,
                                b.file.as_deref().unwrap_or(""),
                                b.read_only.unwrap_or(false),
                                &req.disk.path,
                                ro,
                            ),
                            // Being unplugged by someone: not an attachment to reuse.
                            None => Err(QemuError::Conflict(format!(
                                "device {dev} is being unplugged"
                            ))),
                        };
                    }
                    Some(slot) => {
                        return Err(QemuError::Conflict(format!(
                            "device {dev} exists at {slot:?}, not at slot {}",
                            req.slot
                        )))
                    }
                    // A half-done attach: the node is there, the device is not.
                    None => match find_node(qmp, &node).await? {
                        Some(n) => check_same_disk(
                            &node,
                            n.get("file").and_then(Value::as_str).unwrap_or(""),
                            n.get("ro").and_then(Value::as_bool).unwrap_or(false),
                            &req.disk.path,
                            ro,
                        )?,
                        // Gone again in between (a concurrent detach): report the original error.
                        None => return Err(e),
                    },
                }
            }
            Err(e) => return Err(e),
        }

        SequenceHook::at(&self.hook, hooks::ATTACH_AFTER_BLOCKDEV_ADD).await;
        // 2. The device.
        let args = json!({
            "driver": "scsi-hd",
            "id": dev,
            "bus": names::bus_name(req.slot.controller),
            "scsi-id": 0,
            "lun": req.slot.lun,
            "drive": node,
            "serial": names::serial(req.attach),
        });
        match call(qmp, "device_add", Some(args)).await {
            Ok(_) => Ok(()),
            Err(e) => {
                if e.desc_contains("Duplicate") {
                    match device_slot(qmp, &dev).await? {
                        Some(Some(slot)) if slot == req.slot => return Ok(()),
                        Some(other) => {
                            return Err(QemuError::Conflict(format!(
                                "device {dev} exists at {other:?}, not at slot {}",
                                req.slot
                            )))
                        }
                        None => {}
                    }
                }
                // Roll back so no half-done attach outlives a definite failure. The node is
                // ours (named after this attach id) whether this call or an earlier one made it.
                if let Err(rb) = call(qmp, "blockdev-del", Some(json!({"node-name": node}))).await {
                    tracing::warn!(node, error = %rb, "rollback of blockdev-add failed");
                }
                if e.desc_contains("already used") {
                    Err(QemuError::Conflict(format!(
                        "slot {} is taken: {e}",
                        req.slot
                    )))
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn detach_locked(
        &self,
        qmp: &mut QmpClient,
        req: &DetachRequest,
    ) -> Result<(), QemuError> {
        let node = names::node_name(req.attach);
        let dev = names::device_id(req.attach);
        if !self.ours_at(qmp, req).await? {
            return Ok(());
        }
        // Events left over from earlier calls are of no use to anyone: nothing here relies on
        // events except as the fast path below.
        qmp.take_events();
        let initiated = match call(qmp, "device_del", Some(json!({"id": dev}))).await {
            Ok(_) => true,
            // Gone already, or an unplug in progress (the id leaves QOM before query-block).
            Err(e) if e.is_class("DeviceNotFound") => false,
            Err(e) => return Err(e),
        };
        // DEVICE_DELETED arrives ~60 ms after device_del. Waiting for it spares polling
        // query-block, which takes tens of ms with hundreds of disks. Without the event (someone
        // else's device_del, a reconnect: events are not replayed) poll query-block instead.
        let mut seen = false;
        if initiated {
            SequenceHook::at(&self.hook, hooks::DETACH_AFTER_DEVICE_DEL).await;
            let is_ours = |ev: &Value| {
                ev.get("event").and_then(Value::as_str) == Some("DEVICE_DELETED")
                    && ev.pointer("/data/device").and_then(Value::as_str) == Some(dev.as_str())
            };
            let wait = self.opts.unplug_timeout.min(Duration::from_secs(2));
            match qmp.wait_event(wait, is_ours).await {
                Ok(ev) => seen = ev.is_some(),
                Err(e) => tracing::debug!(error = %e, "no DEVICE_DELETED; polling query-block"),
            }
        }
        let start = Instant::now();
        if !seen {
            loop {
                let blocks = query_block(qmp).await?;
                if !blocks
                    .iter()
                    .any(|b| b.qdev == dev || qom_path(&b.qdev) == qom_path(&dev))
                {
                    break;
                }
                if start.elapsed() >= self.opts.unplug_timeout {
                    return Err(QemuError::timeout(
                        &format!(
                            "QMP device_del {dev} (waiting for the device to leave query-block)"
                        ),
                        self.opts.unplug_timeout,
                    ));
                }
                tokio::time::sleep(UNPLUG_POLL).await;
            }
        }
        SequenceHook::at(&self.hook, hooks::DETACH_BEFORE_BLOCKDEV_DEL).await;
        for name in [node, names::file_node_name(req.attach, req.slot)] {
            loop {
                match call(qmp, "blockdev-del", Some(json!({"node-name": name}))).await {
                    Ok(_) => break,
                    Err(e)
                        if e.desc_contains("Failed to find node")
                            || e.desc_contains("not found") =>
                    {
                        break
                    }
                    // Still held by the device being torn down: only possible in the moment
                    // around the event, so retry briefly.
                    Err(e)
                        if (e.desc_contains("in use") || e.desc_contains("busy"))
                            && start.elapsed() < self.opts.unplug_timeout =>
                    {
                        tokio::time::sleep(UNPLUG_POLL).await
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Whether attachment `req.attach` is at `req.slot` (or is half there) rather than
    /// somewhere else: a detach names both, and must not touch the attachment at another slot.
    async fn ours_at(&self, qmp: &mut QmpClient, req: &DetachRequest) -> Result<bool, QemuError> {
        if let Some(slot) = device_slot(qmp, &names::device_id(req.attach)).await? {
            return Ok(slot == Some(req.slot));
        }
        // No device (or one being unplugged): the file node name records the slot.
        let nodes = call(qmp, "query-named-block-nodes", Some(json!({"flat": true}))).await?;
        let mine = names::file_node_name(req.attach, req.slot);
        let elsewhere = nodes
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .any(|n| {
                str_field(n, "node-name")
                    .and_then(|name| names::parse_file_node_name(&name).map(|p| (name, p)))
                    .is_some_and(|(name, (a, _))| a == req.attach && name != mine)
            });
        Ok(!elsewhere)
    }

    async fn inspect_locked(&self, qmp: &mut QmpClient) -> Result<HostView, QemuError> {
        let nodes = call(qmp, "query-named-block-nodes", Some(json!({"flat": true}))).await?;
        let nodes = nodes.as_array().cloned().unwrap_or_default();
        // Our file nodes record the slot of attaches whose device is missing or going.
        let mut slot_of: BTreeMap<AttachId, Slot> = BTreeMap::new();
        for n in &nodes {
            if let Some((a, s)) =
                str_field(n, "node-name").and_then(|n| names::parse_file_node_name(&n))
            {
                slot_of.insert(a, s);
            }
        }
        let blocks = query_block(qmp).await?;
        let in_use: BTreeSet<String> = blocks.iter().filter_map(|b| b.node.clone()).collect();
        let mut out = Vec::new();
        for b in &blocks {
            let ours = names::parse_device_id(&b.qdev)
                .or_else(|| b.node.as_deref().and_then(names::parse_node_name));
            let path = qom_path(&b.qdev);
            let (slot, attach, complete) = match qom_get(qmp, &path, "parent_bus").await {
                Ok(bus) => match scsi_placement(qmp, &path, &bus).await? {
                    Some((slot, serial)) => {
                        let attach =
                            ours.or_else(|| serial.as_deref().and_then(names::parse_serial));
                        (slot, attach, true)
                    }
                    // Not on one of our slots (another bus, or a target other than 0).
                    None => continue,
                },
                // In query-block but no longer in QOM: an unplug in progress. Only ours can be
                // placed (by the file node name); it is reported as incomplete.
                Err(e) if e.is_class("DeviceNotFound") => {
                    match ours.and_then(|a| slot_of.get(&a).map(|s| (*s, a))) {
                        Some((slot, a)) => (slot, Some(a), false),
                        None => continue,
                    }
                }
                Err(e) => return Err(e),
            };
            out.push(HostAttachment {
                slot,
                attach,
                path: b.file.clone(),
                read_only: b.read_only,
                complete,
            });
        }
        for n in &nodes {
            let Some(name) = str_field(n, "node-name") else {
                continue;
            };
            let Some(a) = names::parse_node_name(&name) else {
                continue;
            };
            if in_use.contains(&name) {
                continue;
            }
            let Some(slot) = slot_of.get(&a).copied() else {
                continue;
            };
            out.push(HostAttachment {
                slot,
                attach: Some(a),
                path: str_field(n, "file"),
                read_only: n.get("ro").and_then(Value::as_bool),
                complete: false,
            });
        }
        out.sort_by_key(|h| (h.slot, h.attach));
        Ok(HostView { attachments: out })
    }
}

#[async_trait]
impl HostBackend for QemuHost {
    async fn attach(&self, req: &AttachRequest) -> Result<(), BackendError> {
        let mut qmp = self.qmp.lock().await;
        let res = self.attach_locked(&mut qmp, req).await;
        tracing::debug!(slot = %req.slot, attach = req.attach, path = %req.disk.path, ?res, "qemu attach");
        Ok(res?)
    }

    async fn detach(&self, req: &DetachRequest) -> Result<(), BackendError> {
        let mut qmp = self.qmp.lock().await;
        let res = self.detach_locked(&mut qmp, req).await;
        tracing::debug!(slot = %req.slot, attach = req.attach, ?res, "qemu detach");
        Ok(res?)
    }

    async fn inspect(&self) -> Result<HostView, BackendError> {
        let mut qmp = self.qmp.lock().await;
        Ok(self.inspect_locked(&mut qmp).await?)
    }

    async fn check_config(&self, config: &ManagerConfig) -> Result<(), BackendError> {
        let mut qmp = self.qmp.lock().await;
        let list = call(
            &mut qmp,
            "qom-list",
            Some(json!({"path": "/machine/peripheral"})),
        )
        .await?;
        let types: BTreeMap<String, String> = list
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(|e| Some((str_field(e, "name")?, str_field(e, "type")?)))
            .collect();
        Ok(check_controllers(config, &types)?)
    }
}

/// Checks `config` against the VM's `/machine/peripheral` children (id to QOM type): the LUN
/// range is one the guest can address, and every controller `scsi0..scsi<N-1>` the
/// configuration names exists and is a virtio-scsi controller.
fn check_controllers(
    config: &ManagerConfig,
    types: &BTreeMap<String, String>,
) -> Result<(), QemuError> {
    if config.luns_per_controller > names::MAX_LUN {
        return Err(QemuError::Mismatch(format!(
            "{} LUNs per controller: the QEMU backend addresses LUNs 0..{} only (Linux guests \
             mis-address hot-plugged LUNs >= 256)",
            config.luns_per_controller,
            names::MAX_LUN - 1
        )));
    }
    if config.controllers > names::MAX_CONTROLLER {
        return Err(QemuError::Mismatch(format!(
            "{} controllers: the QEMU backend supports at most {}",
            config.controllers,
            names::MAX_CONTROLLER
        )));
    }
    let mut missing = Vec::new();
    for c in 0..config.controllers {
        let id = names::controller_id(c);
        match types.get(&id) {
            Some(t) if t.starts_with("child<virtio-scsi") => {}
            Some(t) => {
                return Err(QemuError::Mismatch(format!(
                    "device {id} is a {t}, not a virtio-scsi controller (the QEMU backend puts \
                     controller {c} on bus {})",
                    names::bus_name(c)
                )))
            }
            None => missing.push(id),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let mut have: Vec<&str> = types
        .iter()
        .filter(|(id, t)| {
            t.starts_with("child<virtio-scsi") && names::parse_controller_id(id).is_some()
        })
        .map(|(id, _)| id.as_str())
        .collect();
    have.sort_by_key(|id| names::parse_controller_id(id));
    Err(QemuError::Mismatch(format!(
        "the configuration names {} controllers (scsi0..scsi{}) but the VM has no {}; it has \
         [{}] (start QEMU with -device virtio-scsi-pci,id=scsiN for each, or lower \
         ManagerConfig::controllers)",
        config.controllers,
        config.controllers.saturating_sub(1),
        missing.join(", "),
        have.join(", ")
    )))
}

/// Runs one command, retrying once on a fresh connection if the connection broke. Every command
/// we send is safe to repeat: callers read "already exists" / "not found" as the goal reached.
async fn call(qmp: &mut QmpClient, command: &str, args: Option<Value>) -> Result<Value, QemuError> {
    match qmp.execute(command, args.clone()).await {
        Err(e) if e.is_connection() => qmp.execute(command, args).await,
        r => r,
    }
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

/// The QOM path of a `query-block` `qdev` (an id, or already a path for devices without one).
fn qom_path(qdev: &str) -> String {
    if qdev.starts_with('/') {
        qdev.to_string()
    } else {
        format!("/machine/peripheral/{qdev}")
    }
}

async fn qom_get(qmp: &mut QmpClient, path: &str, property: &str) -> Result<Value, QemuError> {
    call(
        qmp,
        "qom-get",
        Some(json!({"path": path, "property": property})),
    )
    .await
}

async fn query_block(qmp: &mut QmpClient) -> Result<Vec<BlockEntry>, QemuError> {
    let v = call(qmp, "query-block", None).await?;
    let mut out = Vec::new();
    for b in v.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let Some(qdev) = str_field(b, "qdev").filter(|q| !q.is_empty()) else {
            continue;
        };
        let ins = b.get("inserted");
        out.push(BlockEntry {
            qdev,
            node: ins.and_then(|i| str_field(i, "node-name")),
            file: ins.and_then(|i| str_field(i, "file")),
            read_only: ins.and_then(|i| i.get("ro")).and_then(Value::as_bool),
        });
    }
    Ok(out)
}

/// Our named format node, from `query-named-block-nodes`.
async fn find_node(qmp: &mut QmpClient, node: &str) -> Result<Option<Value>, QemuError> {
    let nodes = call(qmp, "query-named-block-nodes", Some(json!({"flat": true}))).await?;
    Ok(nodes
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|n| n.get("node-name").and_then(Value::as_str) == Some(node))
        })
        .cloned())
}

fn check_same_disk(
    node: &str,
    file: &str,
    ro: bool,
    path: &str,
    read_only: bool,
) -> Result<(), QemuError> {
    if file != path || ro != read_only {
        return Err(QemuError::Conflict(format!(
            "block node {node} holds {file} (read-only {ro}), not {path} (read-only {read_only})"
        )));
    }
    Ok(())
}

/// Where our device `dev` is: `None` if QOM has no such device, `Some(None)` if it exists but
/// not on one of our SCSI slots.
async fn device_slot(qmp: &mut QmpClient, dev: &str) -> Result<Option<Option<Slot>>, QemuError> {
    let path = qom_path(dev);
    match qom_get(qmp, &path, "parent_bus").await {
        Ok(bus) => Ok(Some(
            scsi_placement(qmp, &path, &bus).await?.map(|(s, _)| s),
        )),
        Err(e) if e.is_class("DeviceNotFound") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The slot and serial of the device at QOM `path` whose `parent_bus` is `bus`, or `None` if it
/// is not a target-0 device on a controller named `scsi<N>`.
async fn scsi_placement(
    qmp: &mut QmpClient,
    path: &str,
    bus: &Value,
) -> Result<Option<(Slot, Option<String>)>, QemuError> {
    // ".../scsi2/virtio-backend/scsi2.0"
    let Some(controller) = bus
        .as_str()
        .and_then(|b| b.rsplit('/').next())
        .and_then(|last| last.strip_suffix(".0"))
        .and_then(names::parse_controller_id)
    else {
        return Ok(None);
    };
    let num = |v: Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    let Some(target) = num(qom_get(qmp, path, "scsi-id").await?) else {
        return Ok(None);
    };
    let Some(lun) = num(qom_get(qmp, path, "lun").await?) else {
        return Ok(None);
    };
    if target != 0 {
        // Outside our slot space (we always use target 0).
        return Ok(None);
    }
    let serial = qom_get(qmp, path, "serial")
        .await
        .ok()
        .and_then(|v| v.as_str().map(str::to_string));
    Ok(Some((Slot::new(controller, lun), serial)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(controllers: u32, luns: u32) -> ManagerConfig {
        ManagerConfig {
            guest: Default::default(),
            controllers,
            luns_per_controller: luns,
            mount_format: "/m%d".into(),
            reserved: vec![],
        }
    }

    fn peripherals(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(id, t)| (id.to_string(), format!("child<{t}>")))
            .collect()
    }

    #[test]
    fn controllers_the_configuration_names_must_exist() {
        let vm = peripherals(&[
            ("scsi0", "virtio-scsi-pci"),
            ("scsi1", "virtio-scsi-pci"),
            ("vser0", "virtio-serial-pci"),
        ]);
        assert!(check_controllers(&config(2, 64), &vm).is_ok());
        assert!(check_controllers(&config(1, 256), &vm).is_ok());
        let e = check_controllers(&config(4, 64), &vm).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, QemuError::Mismatch(_)), "{e:?}");
        assert!(
            msg.contains("no scsi2, scsi3") && msg.contains("[scsi0, scsi1]"),
            "{msg}"
        );
        let e = check_controllers(&config(2, 257), &vm).unwrap_err();
        assert!(e.to_string().contains("LUNs 0..255"), "{e}");
        let odd = peripherals(&[("scsi0", "virtio-scsi-pci"), ("scsi1", "lsi53c895a")]);
        let e = check_controllers(&config(2, 8), &odd).unwrap_err();
        assert!(
            e.to_string().contains("not a virtio-scsi controller"),
            "{e}"
        );
    }
}
