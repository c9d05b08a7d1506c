//! Turns the guest's inspect report (lines `H`, `D`, `M`, `L` from the inspect script) into a
//! [`GuestView`], mapping H:C:T:L back to slots through the controllers' PCI addresses.

use super::controllers::ControllerMap;
use crate::backend::{GuestMount, GuestView};
use lunledger_model::Slot;
use std::collections::BTreeMap;

/// Parses the report. Lines it does not understand are skipped: the view is best effort and a
/// malformed line must not hide the others.
pub(crate) fn parse(report: &str, controllers: &ControllerMap) -> GuestView {
    let mut host_controller: BTreeMap<u32, u32> = BTreeMap::new();
    let mut slot_of_disk: BTreeMap<String, Slot> = BTreeMap::new();
    // dm-crypt mapping (`/dev/mapper/NAME`) to the disk or partition under it (`sdX`, `sdXN`).
    let mut under_mapping: BTreeMap<String, String> = BTreeMap::new();
    let mut view = GuestView::default();
    for line in report.lines() {
        let mut f = line.splitn(3, ' ');
        match (f.next(), f.next(), f.next()) {
            (Some("H"), Some(n), Some(path)) => {
                if let (Ok(n), Some(c)) = (n.parse(), controllers.controller_in_path(path)) {
                    host_controller.insert(n, c);
                }
            }
            (Some("C"), Some(mapping), Some(under)) if !under.is_empty() => {
                under_mapping.insert(mapping.to_string(), format!("/dev/{under}"));
            }
            (Some("D"), Some(hctl), Some(rest)) => {
                let disk = rest.split(' ').next().unwrap_or("");
                if let Some(slot) = slot_of_hctl(hctl, &host_controller) {
                    view.devices.push(slot);
                    slot_of_disk.insert(disk.to_string(), slot);
                }
            }
            _ => {}
        }
    }
    for line in report.lines() {
        let mut f = line.splitn(3, ' ');
        match (f.next(), f.next(), f.next()) {
            (Some("M"), Some(dev), Some(path)) => {
                if !(dev.starts_with("/dev/sd") || dev.starts_with("/dev/mapper/ll-crypt-")) {
                    continue;
                }
                // A dm-crypt mount is placed on the disk under its mapping.
                let disk = under_mapping.get(dev).map(String::as_str).unwrap_or(dev);
                view.mounts.push(GuestMount {
                    path: unescape_mount_path(path),
                    slot: disk_slot(disk, &slot_of_disk),
                    block_dev: false,
                });
            }
            (Some("L"), Some(target), Some(path)) => {
                let disk = under_mapping
                    .get(target)
                    .map(String::as_str)
                    .unwrap_or(target);
                view.mounts.push(GuestMount {
                    path: path.to_string(),
                    slot: disk_slot(disk, &slot_of_disk),
                    block_dev: true,
                })
            }
            _ => {}
        }
    }
    view.devices.sort();
    view.devices.dedup();
    view.mounts.sort_by(|a, b| a.path.cmp(&b.path));
    view
}

/// `H:0:0:L` on a known host is slot (controller of H, L); other targets are not our slots.
fn slot_of_hctl(hctl: &str, host_controller: &BTreeMap<u32, u32>) -> Option<Slot> {
    let n: Vec<u32> = hctl
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match n.as_slice() {
        [h, 0, 0, lun] => Some(Slot::new(*host_controller.get(h)?, *lun)),
        _ => None,
    }
}

/// The slot of `/dev/sdX` or a partition `/dev/sdXN`.
fn disk_slot(dev: &str, slot_of_disk: &BTreeMap<String, Slot>) -> Option<Slot> {
    let name = dev.strip_prefix("/dev/")?;
    let disk = name.trim_end_matches(|c: char| c.is_ascii_digit());
    slot_of_disk.get(disk).copied()
}

/// /proc/mounts writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::qemu::controllers::PciAddress;

    #[test]
    fn maps_report_to_slots() {
        let mut controllers = ControllerMap::default();
        for (c, slot) in [(0, 2), (1, 3)] {
            controllers.controllers.insert(
                c,
                PciAddress {
                    domain: 0,
                    bus: 0,
                    slot,
                    function: 0,
                },
            );
        }
        let report = "\
H 0 /sys/devices/pci0000:00/0000:00:02.0/virtio1/host0/scsi_host/host0
H 1 /sys/devices/pci0000:00/0000:00:03.0/virtio2/host1/scsi_host/host1
D 1:0:0:17 sdb ll-5
D 0:0:0:3 sda ll-6
D 0:0:2:3 sdc foreign
D 7:0:0:1 sdd
M /dev/sdb /mnt/j\\0401
M /dev/sda1 /mnt/p
M /dev/root /
M /dev/sdz /mnt/gone
L /dev/sda /run/blk
C /dev/mapper/ll-crypt-4 sdb
C /dev/mapper/ll-crypt-9 sda1
C /dev/mapper/other 
M /dev/mapper/ll-crypt-4 /mnt/enc
L /dev/mapper/ll-crypt-9 /run/encblk
garbage
";
        let v = parse(report, &controllers);
        assert_eq!(v.devices, vec![Slot::new(0, 3), Slot::new(1, 17)]);
        let m: Vec<_> = v
            .mounts
            .iter()
            .map(|m| (m.path.as_str(), m.slot, m.block_dev))
            .collect();
        assert_eq!(
            m,
            vec![
                ("/mnt/enc", Some(Slot::new(1, 17)), false),
                ("/mnt/gone", None, false),
                ("/mnt/j 1", Some(Slot::new(1, 17)), false),
                ("/mnt/p", Some(Slot::new(0, 3)), false),
                ("/run/blk", Some(Slot::new(0, 3)), true),
                ("/run/encblk", Some(Slot::new(0, 3)), true),
            ]
        );
    }
}
