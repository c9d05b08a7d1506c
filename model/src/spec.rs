//! Domain data carried inside events: ids, slots, disk and mount specifications, and the manager's
//! configuration. Plain values: storage and backends only carry them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifier of an operation (one public call, or one recovery pass). Assigned by the fold of the
/// journal, so it is unique for the life of a journal.
pub type OpId = u64;
/// Durable identifier of a handle issued to a caller by a successful add.
pub type HandleId = u64;
/// Identifier of a guest mount entry (unique for the life of a journal; indexes are reused).
pub type MountId = u64;
/// Identifier of one attachment generation (unique for the life of a journal; slots are reused).
/// Backends derive stable names from it (QEMU node names, serials).
pub type AttachId = u64;

/// A (controller, LUN) position on the VM's SCSI controllers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Slot {
    /// Controller index, `0..controllers`.
    pub controller: u32,
    /// LUN index on that controller, `0..luns_per_controller`.
    pub lun: u32,
}

impl Slot {
    /// A slot at `controller`, `lun`.
    pub const fn new(controller: u32, lun: u32) -> Self {
        Slot { controller, lun }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.controller, self.lun)
    }
}

/// What kind of host disk is attached (hcsshim's attachment `typ`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DiskKind {
    /// A virtual disk file (VHD/VHDX in hcsshim; raw or qcow2 image under QEMU).
    VirtualDisk,
    /// A host block device passed through ("PassThru").
    PassThru,
    /// An extensible virtual disk, addressed as `evd://<type>/<path>`.
    ExtensibleVirtualDisk,
}

impl DiskKind {
    /// hcsshim's name for the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskKind::VirtualDisk => "VirtualDisk",
            DiskKind::PassThru => "PassThru",
            DiskKind::ExtensibleVirtualDisk => "ExtensibleVirtualDisk",
        }
    }
}

/// The attachment key: two adds share an attachment exactly when their `DiskSpec`s are equal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DiskSpec {
    /// Host path (for EVDs, the mount path after the type).
    pub path: String,
    /// Attached read-only.
    pub read_only: bool,
    /// Disk kind.
    pub kind: DiskKind,
    /// EVD provider type; `None` for other kinds.
    pub evd_type: Option<String>,
}

/// How a disk is mounted in the guest. Two adds on the same attachment share a mount exactly when
/// their specs [`MountSpec::same_mount`] each other.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct MountSpec {
    /// 1-based partition index; 0 means the whole disk.
    pub partition: u64,
    /// Mounted read-only (copied from the add's read-only flag).
    pub read_only: bool,
    /// dm-crypt encrypted.
    pub encrypted: bool,
    /// Expose the block device itself at the guest path instead of mounting a filesystem.
    pub block_dev: bool,
    /// Mount options in the caller's order (the order is passed on to the guest unchanged).
    pub options: Vec<String>,
    /// Format as `filesystem` when the disk has none.
    pub ensure_filesystem: bool,
    /// Target filesystem for `ensure_filesystem`; empty means the guest's default.
    pub filesystem: String,
    /// Format with ReFS (Windows confidential scratch).
    pub format_with_refs: bool,
}

impl MountSpec {
    /// The mount key comparison: every field equal, with options compared as sorted copies (the
    /// caller's data is never reordered; hcsshim sorted it in place).
    pub fn same_mount(&self, other: &MountSpec) -> bool {
        self.partition == other.partition
            && self.read_only == other.read_only
            && self.encrypted == other.encrypted
            && self.block_dev == other.block_dev
            && self.ensure_filesystem == other.ensure_filesystem
            && self.filesystem == other.filesystem
            && self.format_with_refs == other.format_with_refs
            && sorted(&self.options) == sorted(&other.options)
    }
}

fn sorted(v: &[String]) -> Vec<&str> {
    let mut s: Vec<&str> = v.iter().map(String::as_str).collect();
    s.sort_unstable();
    s
}

/// The guest operating system of the VM (hcsshim's `osType`). It decides the guest path rules,
/// which mount options the guest accepts and whether a detach is preceded by a guest unplug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum GuestOs {
    /// A Linux utility VM (LCOW): POSIX paths, every mount option, unplug before detach.
    #[default]
    Linux,
    /// A Windows utility VM (WCOW): drive-letter paths, plain mounts on controller 0 only, and no
    /// guest unplug step (hcsshim treats it as a no-op).
    Windows,
}

impl GuestOs {
    /// hcsshim's `osType` string.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestOs::Linux => "linux",
            GuestOs::Windows => "windows",
        }
    }

    /// Whether a detach is preceded by a guest unplug (Linux) or not (Windows).
    pub fn unplugs(self) -> bool {
        self == GuestOs::Linux
    }
}

impl fmt::Display for GuestOs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The manager's configuration, journaled as the first event of a journal and checked on every
/// open.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ManagerConfig {
    /// Number of SCSI controllers.
    pub controllers: u32,
    /// LUNs per controller.
    pub luns_per_controller: u32,
    /// Guest mount path format with exactly one `%d` (the mount index).
    pub mount_format: String,
    /// Slots never handed out (used by the VM itself, e.g. its root disk).
    pub reserved: Vec<Slot>,
    /// The guest OS. Last, and defaulted, so that a configuration written before it existed (a
    /// shorter MessagePack array) decodes as Linux, the only guest there was.
    #[serde(default)]
    pub guest: GuestOs,
}

impl ManagerConfig {
    /// hcsshim's LCOW defaults: 4 controllers × 64 LUNs, `/run/mounts/scsi/m%d`, nothing reserved.
    pub fn lcow_default() -> Self {
        ManagerConfig {
            controllers: 4,
            luns_per_controller: 64,
            mount_format: "/run/mounts/scsi/m%d".to_string(),
            reserved: Vec::new(),
            guest: GuestOs::Linux,
        }
    }

    /// hcsshim's WCOW defaults: one controller (a Windows utility VM has exactly one) × 64 LUNs,
    /// `c:\mounts\scsi\m%d`, nothing reserved (a UVM's own scratch at 0:0 is the embedder's to
    /// reserve).
    pub fn wcow_default() -> Self {
        ManagerConfig {
            controllers: 1,
            luns_per_controller: 64,
            mount_format: r"c:\mounts\scsi\m%d".to_string(),
            reserved: Vec::new(),
            guest: GuestOs::Windows,
        }
    }

    /// Whether `slot` lies inside the configured controllers and LUNs.
    pub fn contains(&self, slot: Slot) -> bool {
        slot.controller < self.controllers && slot.lun < self.luns_per_controller
    }

    /// The guest path for mount index `index`: the format's single `%d` replaced by the index.
    /// Returns `None` when the format does not hold exactly one `%d`.
    pub fn mount_path(&self, index: u32) -> Option<String> {
        if self.mount_format.matches("%d").count() != 1 {
            return None;
        }
        Some(self.mount_format.replacen("%d", &index.to_string(), 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_mount_compares_sorted_options_without_reordering() {
        let a = MountSpec {
            options: vec!["ro".into(), "noatime".into()],
            ..Default::default()
        };
        let b = MountSpec {
            options: vec!["noatime".into(), "ro".into()],
            ..Default::default()
        };
        assert!(a.same_mount(&b));
        assert_eq!(a.options, vec!["ro".to_string(), "noatime".to_string()]);
        let c = MountSpec {
            options: vec!["noatime".into()],
            ..Default::default()
        };
        assert!(!a.same_mount(&c));
        let d = MountSpec {
            read_only: true,
            ..b.clone()
        };
        assert!(!b.same_mount(&d));
    }

    #[test]
    fn mount_path_needs_exactly_one_placeholder() {
        let mut c = ManagerConfig::lcow_default();
        assert_eq!(c.mount_path(3).as_deref(), Some("/run/mounts/scsi/m3"));
        c.mount_format = "/m".into();
        assert_eq!(c.mount_path(3), None);
        c.mount_format = "/m%d/%d".into();
        assert_eq!(c.mount_path(3), None);
    }
}
