//! What callers pass to the add calls: the disk, its optional mount, and labels.

use crate::error::{Error, Result};
use crate::guest_os::{check_guest_path, check_mount_supported};
use lunledger_model::{DiskKind, DiskSpec, GuestOs, MountSpec};

/// How to mount a disk in the guest (hcsshim's `MountConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountConfig {
    /// 1-based partition index; 0 = whole disk.
    pub partition: u64,
    /// dm-crypt encrypted.
    pub encrypted: bool,
    /// Mount options, passed to the guest in this order. Never reordered.
    pub options: Vec<String>,
    /// Format as `filesystem` when the disk has no filesystem.
    pub ensure_filesystem: bool,
    /// Filesystem for `ensure_filesystem`.
    pub filesystem: String,
    /// Expose the block device at the guest path (a link) instead of mounting a filesystem.
    pub block_dev: bool,
    /// Format with ReFS (virtual disks only, as in hcsshim).
    pub format_with_refs: bool,
}

/// One add request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskRequest {
    /// Host path (for EVDs: `evd://<type>/<path>`).
    pub host_path: String,
    /// Attach (and mount) read-only.
    pub read_only: bool,
    /// VM id to grant access to the host path first.
    pub vm_id: Option<String>,
    /// Guest path wanted; `None` generates one from the mount format.
    pub guest_path: Option<String>,
    /// The mount, or `None` to attach only.
    pub mount: Option<MountConfig>,
    /// Owner label (a container id), for finding handles after a restart.
    pub owner: Option<String>,
}

impl DiskRequest {
    /// A request for `host_path`, read-write, attach only.
    pub fn new(host_path: impl Into<String>) -> Self {
        DiskRequest {
            host_path: host_path.into(),
            ..Default::default()
        }
    }
    /// Sets read-only.
    pub fn read_only(mut self, ro: bool) -> Self {
        self.read_only = ro;
        self
    }
    /// Sets the mount.
    pub fn mount(mut self, m: MountConfig) -> Self {
        self.mount = Some(m);
        self
    }
    /// Sets the requested guest path.
    pub fn guest_path(mut self, p: impl Into<String>) -> Self {
        self.guest_path = Some(p.into());
        self
    }
    /// Sets the owner label.
    pub fn owner(mut self, o: impl Into<String>) -> Self {
        self.owner = Some(o.into());
        self
    }
    /// Sets the VM id for an access grant.
    pub fn vm_id(mut self, v: impl Into<String>) -> Self {
        self.vm_id = Some(v.into());
        self
    }

    /// Validates the request for a Linux guest and turns it into the attachment and mount keys.
    #[cfg(test)]
    pub(crate) fn specs(&self, kind: DiskKind) -> Result<(DiskSpec, Option<MountSpec>)> {
        self.specs_for(kind, GuestOs::Linux)
    }

    /// Validates the request by `guest`'s rules (its path syntax, the mounts it supports) and
    /// turns it into the attachment and mount keys.
    pub(crate) fn specs_for(
        &self,
        kind: DiskKind,
        guest: GuestOs,
    ) -> Result<(DiskSpec, Option<MountSpec>)> {
        if self.host_path.is_empty() || self.host_path.contains('\0') {
            return Err(Error::InvalidInput(format!(
                "host path {:?} is empty or holds a NUL",
                self.host_path
            )));
        }
        let (path, evd_type) = match kind {
            DiskKind::ExtensibleVirtualDisk => {
                // hcsshim's AddExtensibleVirtualDisk takes no VM id and grants nothing: the
                // provider behind `evd://` controls access, and there is no host file to grant.
                if let Some(vm) = &self.vm_id {
                    return Err(Error::InvalidInput(format!(
                        "a VM id ({vm:?}) was given for an extensible virtual disk: EVDs are not granted access, as in hcsshim"
                    )));
                }
                let (t, p) = parse_evd_path(&self.host_path)?;
                (p.to_string(), Some(t.to_string()))
            }
            _ => (self.host_path.clone(), None),
        };
        if let Some(g) = &self.guest_path {
            if self.mount.is_none() {
                // hcsshim would later unmount this never-mounted path (and hit the wrong mount).
                return Err(Error::InvalidInput(format!(
                    "guest path {g:?} given for an attach-only add"
                )));
            }
            if let Err(why) = check_guest_path(guest, g) {
                return Err(Error::InvalidInput(format!(
                    "guest path {g:?} is not valid for a {guest} guest: {why}"
                )));
            }
        }
        if let Some(m) = &self.mount {
            check_mount_supported(guest, m)?;
        }
        let disk = DiskSpec {
            path,
            read_only: self.read_only,
            kind,
            evd_type,
        };
        let mount = self.mount.as_ref().map(|m| MountSpec {
            partition: m.partition,
            read_only: self.read_only,
            encrypted: m.encrypted,
            block_dev: m.block_dev,
            options: m.options.clone(),
            ensure_filesystem: m.ensure_filesystem,
            filesystem: m.filesystem.clone(),
            // hcsshim copies FormatWithRefs for virtual disks only.
            format_with_refs: m.format_with_refs && kind == DiskKind::VirtualDisk,
        });
        Ok((disk, mount))
    }
}

/// Splits `evd://<type>/<path>` as hcsshim does: the prefix is optional, the type is what comes
/// before the first `/` and must not be empty, the path is everything after it (it may be empty
/// or hold more `/`).
pub fn parse_evd_path(host_path: &str) -> Result<(&str, &str)> {
    let trimmed = host_path.strip_prefix("evd://").unwrap_or(host_path);
    match trimmed.find('/') {
        Some(i) if i > 0 => Ok((&trimmed[..i], &trimmed[i + 1..])),
        _ => Err(Error::InvalidEvdPath(host_path.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evd_paths_parse_like_hcsshim() {
        assert_eq!(
            parse_evd_path("evd://space/abc/def").ok(),
            Some(("space", "abc/def"))
        );
        assert_eq!(parse_evd_path("type/").ok(), Some(("type", "")));
        assert!(matches!(
            parse_evd_path("evd:///x"),
            Err(Error::InvalidEvdPath(_))
        ));
        assert!(matches!(
            parse_evd_path("evd://nopath"),
            Err(Error::InvalidEvdPath(_))
        ));
        assert!(matches!(parse_evd_path(""), Err(Error::InvalidEvdPath(_))));
    }

    #[test]
    fn guest_path_needs_a_mount_and_an_absolute_path() {
        let r = DiskRequest::new("/d").guest_path("/mnt");
        assert!(matches!(
            r.specs(DiskKind::VirtualDisk),
            Err(Error::InvalidInput(_))
        ));
        let r = DiskRequest::new("/d")
            .mount(MountConfig::default())
            .guest_path("rel");
        assert!(matches!(
            r.specs(DiskKind::VirtualDisk),
            Err(Error::InvalidInput(_))
        ));
        let r = DiskRequest::new("/d")
            .mount(MountConfig::default())
            .guest_path("/a/../b");
        assert!(matches!(
            r.specs(DiskKind::VirtualDisk),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn format_with_refs_only_for_virtual_disks_and_options_kept_in_order() {
        let m = MountConfig {
            format_with_refs: true,
            options: vec!["rw".into(), "noatime".into()],
            ..Default::default()
        };
        let r = DiskRequest::new("/d").mount(m);
        let (_, v) = r
            .specs(DiskKind::VirtualDisk)
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, p) = r
            .specs(DiskKind::PassThru)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(v.as_ref().is_some_and(|m| m.format_with_refs));
        assert!(p.as_ref().is_some_and(|m| !m.format_with_refs));
        assert_eq!(
            v.map(|m| m.options),
            Some(vec!["rw".to_string(), "noatime".to_string()])
        );
    }
}
