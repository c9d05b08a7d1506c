//! Where each SCSI controller sits on the PCI bus, which is how the guest side finds the SCSI
//! host number of a controller (`/sys/class/scsi_host/hostN` resolves to a path through the
//! controller's PCI address). Guest SCSI host numbers depend on probe order, so they are never
//! assumed.

use super::error::QemuError;
use super::names;
use super::qmp::QmpClient;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// A PCI address as the guest's sysfs spells it (`0000:00:03.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// PCI domain (segment); 0 on q35.
    pub domain: u16,
    /// Bus number.
    pub bus: u8,
    /// Slot (device) number.
    pub slot: u8,
    /// Function number.
    pub function: u8,
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.slot, self.function
        )
    }
}

/// Controller index (`scsi<N>`) to the controller's PCI address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerMap {
    /// The map.
    pub controllers: BTreeMap<u32, PciAddress>,
}

impl ControllerMap {
    /// Reads the map from QEMU with `query-pci`: every PCI device whose id is `scsi<N>`.
    pub async fn query(qmp: &mut QmpClient) -> Result<Self, QemuError> {
        let buses = qmp.execute("query-pci", None).await?;
        let mut map = ControllerMap::default();
        if let Some(buses) = buses.as_array() {
            for bus in buses {
                collect(bus, &mut map.controllers);
            }
        }
        Ok(map)
    }

    /// The PCI address of `controller`.
    pub fn get(&self, controller: u32) -> Option<PciAddress> {
        self.controllers.get(&controller).copied()
    }

    /// The controller whose PCI address appears as a path component of `sysfs_path` (the
    /// resolved `/sys/class/scsi_host/hostN` link).
    pub fn controller_in_path(&self, sysfs_path: &str) -> Option<u32> {
        let parts: Vec<&str> = sysfs_path.split('/').collect();
        self.controllers.iter().find_map(|(c, addr)| {
            let want = addr.to_string();
            parts.iter().any(|p| *p == want).then_some(*c)
        })
    }
}

/// Walks one `PciBusInfo` (and bridges below it).
fn collect(bus: &Value, out: &mut BTreeMap<u32, PciAddress>) {
    let Some(devices) = bus.get("devices").and_then(Value::as_array) else {
        return;
    };
    for d in devices {
        let num = |k: &str| {
            d.get(k)
                .and_then(Value::as_u64)
                .and_then(|n| u8::try_from(n).ok())
        };
        if let (Some(id), Some(b), Some(s), Some(f)) = (
            d.get("qdev_id").and_then(Value::as_str),
            num("bus"),
            num("slot"),
            num("function"),
        ) {
            if let Some(c) = names::parse_controller_id(id) {
                out.insert(
                    c,
                    PciAddress {
                        domain: 0,
                        bus: b,
                        slot: s,
                        function: f,
                    },
                );
            }
        }
        if let Some(child) = d.get("pci_bridge").and_then(|b| b.get("bus")) {
            let mut sub = child.clone();
            if let Some(devs) = d.get("pci_bridge").and_then(|b| b.get("devices")) {
                sub["devices"] = devs.clone();
            }
            collect(&sub, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_query_pci_and_sysfs_paths() {
        let bus = json!({"bus": 0, "devices": [
            {"bus": 0, "slot": 2, "function": 0, "qdev_id": "scsi0"},
            {"bus": 0, "slot": 3, "function": 0, "qdev_id": "scsi1"},
            {"bus": 0, "slot": 4, "function": 0, "qdev_id": "vser0"},
            {"bus": 0, "slot": 31, "function": 0, "qdev_id": ""}
        ]});
        let mut map = ControllerMap::default();
        collect(&bus, &mut map.controllers);
        assert_eq!(map.controllers.len(), 2);
        assert_eq!(
            map.get(1).map(|a| a.to_string()).as_deref(),
            Some("0000:00:03.0")
        );
        let p = "/sys/devices/pci0000:00/0000:00:03.0/virtio2/host1/scsi_host/host1";
        assert_eq!(map.controller_in_path(p), Some(1));
        assert_eq!(
            map.controller_in_path("/sys/devices/pci0000:00/0000:00:09.0/x"),
            None
        );
    }
}
