//! An observer of a QEMU VM that does not go through lunledger's `inspect`: it reads QEMU over
//! the VM's second QMP monitor (`QemuVm::aux_qmp_socket`, so it never competes with the
//! backend's connection) with raw `qom-list`/`qom-get`/`query-block`/`query-named-block-nodes`,
//! and the guest with a raw `guest-exec` of `cat /proc/mounts` (no lunledger parsing), then
//! compares what it saw with a journal state.

use lunledger::backend::qemu::{QgaClient, QmpClient};
use lunledger::model::Slot;
use lunledger::recovery::State;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// What QEMU and the guest hold, as seen from outside lunledger.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen {
    /// scsi-hd devices by slot (controller from the bus `scsiN.0`, LUN), with their backing file.
    pub devices: BTreeMap<Slot, String>,
    /// Files of every block node of the `file` driver (attached or not).
    pub file_nodes: BTreeSet<String>,
    /// Format nodes that no device uses (a half-done attach or an unfinished detach).
    pub loose_nodes: BTreeSet<String>,
    /// Guest mount points under `prefix` (from `/proc/mounts`) and guest symlinks there.
    pub guest_paths: BTreeSet<String>,
    /// Serials of the scsi-hd devices QEMU has.
    pub host_serials: BTreeSet<String>,
    /// Serials (VPD page 0x80) of the SCSI disks the guest sees.
    pub guest_serials: BTreeSet<String>,
    /// Device-mapper devices in the guest (`/dev/mapper/*` but `control`).
    pub mappings: BTreeSet<String>,
}

async fn qmp(c: &mut QmpClient, cmd: &str, args: Option<Value>) -> Value {
    c.execute(cmd, args)
        .await
        .unwrap_or_else(|e| panic!("observer: QMP {cmd}: {e}"))
}

/// Reads QEMU through the monitor at `aux_qmp` (a fresh connection each time).
pub async fn host(aux_qmp: &Path) -> Seen {
    let mut c = QmpClient::connect(aux_qmp, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("observer: connect {}: {e}", aux_qmp.display()));
    let mut seen = Seen::default();
    let blocks = qmp(&mut c, "query-block", None).await;
    let mut file_of_qdev = BTreeMap::new();
    let mut used_nodes = BTreeSet::new();
    for b in blocks.as_array().cloned().unwrap_or_default() {
        let qdev = b["qdev"].as_str().unwrap_or("").to_string();
        if let Some(n) = b["inserted"]["node-name"].as_str() {
            used_nodes.insert(n.to_string());
        }
        let file = b["inserted"]["file"].as_str().unwrap_or("").to_string();
        file_of_qdev.insert(qdev, file);
    }
    let list = qmp(
        &mut c,
        "qom-list",
        Some(json!({"path": "/machine/peripheral"})),
    )
    .await;
    for e in list.as_array().cloned().unwrap_or_default() {
        if e["type"] != "child<scsi-hd>" {
            continue;
        }
        let id = e["name"].as_str().unwrap_or("").to_string();
        let path = format!("/machine/peripheral/{id}");
        let get = |p: &'static str| json!({"path": path, "property": p});
        let bus = qmp(&mut c, "qom-get", Some(get("parent_bus"))).await;
        let lun = qmp(&mut c, "qom-get", Some(get("lun"))).await;
        let serial = qmp(&mut c, "qom-get", Some(get("serial"))).await;
        seen.host_serials
            .insert(serial.as_str().unwrap_or("").to_string());
        let controller = bus
            .as_str()
            .and_then(|b| b.rsplit('/').next())
            .and_then(|b| b.strip_prefix("scsi"))
            .and_then(|b| b.strip_suffix(".0"))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("observer: device {id} on bus {bus}"));
        let lun = lun
            .as_u64()
            .and_then(|l| u32::try_from(l).ok())
            .unwrap_or_else(|| panic!("observer: device {id} lun {lun}"));
        let file = file_of_qdev.get(&id).cloned().unwrap_or_default();
        let dup = seen.devices.insert(Slot::new(controller, lun), file);
        assert!(dup.is_none(), "observer: two devices at {controller}:{lun}");
    }
    let nodes = qmp(
        &mut c,
        "query-named-block-nodes",
        Some(json!({"flat": true})),
    )
    .await;
    for n in nodes.as_array().cloned().unwrap_or_default() {
        let name = n["node-name"].as_str().unwrap_or("").to_string();
        if n["drv"] == "file" {
            seen.file_nodes
                .insert(n["image"]["filename"].as_str().unwrap_or("").to_string());
        } else if !used_nodes.contains(&name) {
            seen.loose_nodes.insert(name);
        }
    }
    seen
}

/// The guest half: prints every mount point in `/proc/mounts` and every symlink under `$1`.
/// Run it with a raw `guest-exec` (`QgaClient::exec` or `QemuGuest::sh`), never lunledger's
/// inspect, and hand its stdout to [`parse_guest`].
pub const GUEST_SCRIPT: &str = "awk '{print \"M\", $2}' /proc/mounts; \
    for p in \"$1\"*; do [ -L \"$p\" ] && echo \"L $p\"; done; \
    for d in /sys/bus/scsi/devices/*:*:*:*; do [ -d \"$d/block\" ] && \
    echo \"D $(tail -c +5 \"$d/vpd_pg80\" | tr -d '\\000 ')\"; done; \
    for x in /dev/mapper/*; do [ \"$x\" = /dev/mapper/control ] || echo \"X $x\"; done; true";

/// Waits until no lunledger guest script runs in the guest (their text carries the marker
/// `lunledger-guest-script`; the pattern is assembled at run time so this script does not match
/// itself): a script a killed shim started goes on running, and what it does later counts.
/// Prints how many are still running when it gives up after `$1` tries of 50 ms.
pub const GUEST_QUIET: &str = "m=lunledger-guest; m=$m-script; i=0; while :; do n=0; \
    for p in /proc/[0-9]*; do [ \"${p#/proc/}\" = $$ ] && continue; \
    case \"$(tr -d '\\000' < $p/cmdline 2>/dev/null)\" in *$m*) n=$((n+1));; esac; done; \
    [ $n = 0 ] && { echo $i; exit 0; }; i=$((i+1)); [ $i -ge $1 ] && { echo $n; exit 1; }; sleep 0.05; done";

/// Adds the guest paths under `prefix` that [`GUEST_SCRIPT`] printed.
pub fn parse_guest(stdout: &str, prefix: &str, seen: &mut Seen) {
    for line in stdout.lines() {
        if let Some(x) = line.strip_prefix("X ") {
            if x != "/dev/mapper/*" {
                seen.mappings.insert(x.to_string());
            }
            continue;
        }
        if let Some(serial) = line.strip_prefix("D ") {
            seen.guest_serials.insert(serial.to_string());
            continue;
        }
        if let Some(p) = line.strip_prefix("M ").or_else(|| line.strip_prefix("L ")) {
            if p.starts_with(prefix) {
                seen.guest_paths.insert(p.to_string());
            }
        }
    }
}

/// Adds the guest's view through an agent connection of the observer's own, once no
/// lunledger script runs there any more (waiting up to 20 s).
pub async fn guest(qga: &mut QgaClient, prefix: &str, seen: &mut Seen) {
    let quiet = qga
        .exec(
            "/bin/sh",
            &["-c", GUEST_QUIET, "sh", "400"],
            Duration::from_secs(40),
        )
        .await
        .unwrap_or_else(|e| panic!("observer: guest-exec: {e}"));
    assert!(
        quiet.success(),
        "observer: lunledger scripts still running in the guest after 20 s: {quiet:?}"
    );
    if quiet.stdout.trim() != "0" {
        eprintln!(
            "observer: waited {} x 50 ms for lunledger scripts to end in the guest",
            quiet.stdout.trim()
        );
    }
    let out = qga
        .exec(
            "/bin/sh",
            &["-c", GUEST_SCRIPT, "sh", prefix],
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|e| panic!("observer: guest-exec cat /proc/mounts: {e}"));
    assert!(out.success(), "observer: guest script failed: {out:?}");
    parse_guest(&out.stdout, prefix, seen);
}

/// Asserts that what was seen matches `state` exactly: a device at each slot the journal holds
/// on the VM (backed by the journal's file) and nowhere else, no block node without a device,
/// no file node for a disk the journal does not hold, and exactly the journal's guest paths.
pub fn assert_matches(seen: &Seen, state: &State, what: &str) {
    let (want_slots, want_paths) = state.needed_on_vm();
    let want_devices: BTreeMap<Slot, String> = state
        .attachments
        .iter()
        .filter(|(s, _)| want_slots.contains(s))
        .map(|(s, a)| (*s, a.disk.path.clone()))
        .collect();
    assert_eq!(
        seen.devices, want_devices,
        "{what}: QEMU's scsi-hd devices (observer) differ from the journal's attachments"
    );
    assert!(
        seen.loose_nodes.is_empty(),
        "{what}: block nodes with no device leaked: {:?}",
        seen.loose_nodes
    );
    let want_files: BTreeSet<String> = want_devices.values().cloned().collect();
    assert_eq!(
        seen.file_nodes, want_files,
        "{what}: QEMU's file nodes (observer) differ from the journal's disks"
    );
    assert_eq!(
        seen.guest_paths, want_paths,
        "{what}: the guest's mounts and links (observer) differ from the journal's"
    );
    let want_mappings: BTreeSet<String> = state
        .mounts
        .iter()
        .filter(|(_, m)| m.spec.encrypted && want_paths.contains(&m.path))
        .map(|(id, _)| format!("/dev/mapper/ll-crypt-{id}"))
        .collect();
    assert_eq!(
        seen.mappings, want_mappings,
        "{what}: the guest's dm-crypt mappings (observer) differ from the journal's encrypted mounts"
    );
    let zombies: Vec<_> = seen.guest_serials.difference(&seen.host_serials).collect();
    assert!(
        zombies.is_empty(),
        "{what}: the guest sees disks QEMU no longer has (serials {zombies:?})"
    );
}
