//! The QEMU names we give an attachment, all derived from its attach id (and slot), so a
//! restarted client finds an interrupted attach again and tells ours from foreign devices.
//!
//! * format node `ll-a<attach>` and device id `ll-d<attach>`, serial `ll-<attach>` (decimal);
//! * file node `ll-f<attach>.<controller>.<lun>` in lower-case hex: it is the only place the slot
//!   of a half-done attach (a block node with no device yet) is recorded. QEMU caps node names at
//!   31 characters; with `controller < 2^16` and `lun < 256` this is at most 28.

use super::error::QemuError;
use lunledger_model::{AttachId, Slot};

/// Exclusive LUN bound: Linux mis-addresses hot-plugged LUNs >= 256 (flat addressing bit leaks).
pub const MAX_LUN: u32 = 256;
/// Exclusive controller bound: what the file node name can encode.
pub const MAX_CONTROLLER: u32 = 1 << 16;

/// Checks that `slot` is addressable by this backend.
pub fn check_slot(slot: Slot) -> Result<(), QemuError> {
    if slot.lun >= MAX_LUN {
        return Err(QemuError::LunOutOfRange {
            lun: slot.lun,
            max: MAX_LUN,
        });
    }
    if slot.controller >= MAX_CONTROLLER {
        return Err(QemuError::ControllerOutOfRange {
            controller: slot.controller,
            max: MAX_CONTROLLER,
        });
    }
    Ok(())
}

/// The format (top) block node of attachment `attach`.
pub fn node_name(attach: AttachId) -> String {
    format!("ll-a{attach}")
}

/// The protocol (file) block node of attachment `attach` at `slot`.
pub fn file_node_name(attach: AttachId, slot: Slot) -> String {
    format!("ll-f{attach:x}.{:x}.{:x}", slot.controller, slot.lun)
}

/// The scsi-hd device id of attachment `attach`.
pub fn device_id(attach: AttachId) -> String {
    format!("ll-d{attach}")
}

/// The SCSI serial (VPD page 0x80, visible in the guest) of attachment `attach`.
pub fn serial(attach: AttachId) -> String {
    format!("ll-{attach}")
}

/// The id of controller `controller` (`-device virtio-scsi-pci,id=...`).
pub fn controller_id(controller: u32) -> String {
    format!("scsi{controller}")
}

/// The SCSI bus of controller `controller`.
pub fn bus_name(controller: u32) -> String {
    format!("{}.0", controller_id(controller))
}

/// The attach id in a format node name of ours.
pub fn parse_node_name(name: &str) -> Option<AttachId> {
    parse_decimal(name.strip_prefix("ll-a")?)
}

/// The attach id and slot in a file node name of ours.
pub fn parse_file_node_name(name: &str) -> Option<(AttachId, Slot)> {
    let mut parts = name.strip_prefix("ll-f")?.split('.');
    let attach = parse_hex(parts.next()?)?;
    let controller = u32::try_from(parse_hex(parts.next()?)?).ok()?;
    let lun = u32::try_from(parse_hex(parts.next()?)?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((attach, Slot::new(controller, lun)))
}

/// The attach id in a device id of ours.
pub fn parse_device_id(id: &str) -> Option<AttachId> {
    parse_decimal(id.strip_prefix("ll-d")?)
}

/// The attach id in a serial of ours.
pub fn parse_serial(serial: &str) -> Option<AttachId> {
    parse_decimal(serial.strip_prefix("ll-")?)
}

/// The controller index in a controller id `scsi<N>`.
pub fn parse_controller_id(id: &str) -> Option<u32> {
    parse_decimal(id.strip_prefix("scsi")?).and_then(|n| u32::try_from(n).ok())
}

/// Canonical digits only: no sign, no leading zeros (so each id has exactly one spelling).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

fn parse_hex(s: &str) -> Option<u64> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_fit_qemu_limits() {
        for attach in [0, 1, 42, u64::MAX] {
            let slot = Slot::new(MAX_CONTROLLER - 1, MAX_LUN - 1);
            assert!(node_name(attach).len() <= 31);
            assert!(file_node_name(attach, slot).len() <= 31);
            assert!(serial(attach).len() <= 36);
            assert_eq!(parse_node_name(&node_name(attach)), Some(attach));
            assert_eq!(parse_device_id(&device_id(attach)), Some(attach));
            assert_eq!(parse_serial(&serial(attach)), Some(attach));
            assert_eq!(
                parse_file_node_name(&file_node_name(attach, slot)),
                Some((attach, slot))
            );
        }
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for n in [
            "",
            "ll-a",
            "ll-a01",
            "ll-a-1",
            "hd-a",
            "ll-ax",
            "ll-a99999999999999999999",
        ] {
            assert_eq!(parse_node_name(n), None, "{n}");
        }
        assert_eq!(parse_file_node_name("ll-f1.2"), None);
        assert_eq!(parse_file_node_name("ll-f1.2.3.4"), None);
        assert_eq!(parse_file_node_name("#block123"), None);
        assert_eq!(parse_controller_id("scsi2"), Some(2));
        assert_eq!(parse_controller_id("scsi"), None);
        assert_eq!(parse_controller_id("vser0"), None);
    }

    #[test]
    fn slot_limits_are_typed_errors() {
        assert!(check_slot(Slot::new(3, 255)).is_ok());
        assert_eq!(
            check_slot(Slot::new(0, 256)),
            Err(QemuError::LunOutOfRange { lun: 256, max: 256 })
        );
        assert!(matches!(
            check_slot(Slot::new(MAX_CONTROLLER, 0)),
            Err(QemuError::ControllerOutOfRange { .. })
        ));
    }
}
