//! What depends on the guest OS (hcsshim's `osType`): guest path rules, the mount options a
//! Windows guest refuses, and whether teardown unplugs before it detaches.
//!
//! hcsshim checks the Windows mount rules when it builds the guest request, after the disk is
//! already attached; lunledger checks them before anything is journaled or asked of the VM, so
//! a refused mount attaches nothing.

use crate::error::{Error, Result};
use crate::request::MountConfig;
use lunledger_model::GuestOs;

/// Checks a guest path (a requested one, or a mount format) by the guest's rules: Linux paths
/// are absolute POSIX paths; Windows paths start with a drive letter, a colon and a backslash
/// (`c:\...`). Neither may hold a NUL or a `..` component (a path that climbs out of where it
/// claims to be is never what a caller meant).
pub fn check_guest_path(guest: GuestOs, path: &str) -> std::result::Result<(), String> {
    if path.contains('\0') {
        return Err("it holds a NUL".into());
    }
    match guest {
        GuestOs::Linux => {
            if !path.starts_with('/') {
                return Err("a Linux guest path must be absolute (start with '/')".into());
            }
            if path.split('/').any(|c| c == "..") {
                return Err("it holds a '..' component".into());
            }
        }
        GuestOs::Windows => {
            let b = path.as_bytes();
            let drive = b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\';
            if !drive {
                return Err(
                    r"a Windows guest path must be drive-letter absolute (like c:\mounts\m0)"
                        .into(),
                );
            }
            // Windows accepts both separators, so a '..' between either climbs.
            if path.split(['\\', '/']).any(|c| c == "..") {
                return Err("it holds a '..' component".into());
            }
        }
    }
    Ok(())
}

/// Refuses, on a Windows guest, the mount settings hcsshim's Windows mount request refuses:
/// encryption, a partition, guest mount options, a filesystem, ensure-filesystem ("WCOW does
/// not support encrypted, verity, guest options, partitions, specifying mount filesystem, or
/// ensuring filesystem on mounts"). hcsshim silently ignores `block_dev` and the read-only flag
/// for Windows mounts (the attachment itself is read-only), and so does lunledger.
pub fn check_mount_supported(guest: GuestOs, m: &MountConfig) -> Result<()> {
    if guest != GuestOs::Windows {
        return Ok(());
    }
    let refused: Vec<&str> = [
        (m.encrypted, "encrypted"),
        (m.partition != 0, "partition"),
        (!m.options.is_empty(), "options"),
        (!m.filesystem.is_empty(), "filesystem"),
        (m.ensure_filesystem, "ensure_filesystem"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    if refused.is_empty() {
        return Ok(());
    }
    Err(Error::UnsupportedByGuest {
        guest,
        what: format!(
            "a Windows guest does not support {} on mounts (as hcsshim's WCOW)",
            refused.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_paths_are_drive_letter_absolute() {
        let w = GuestOs::Windows;
        assert!(check_guest_path(w, r"c:\mounts\scsi\m0").is_ok());
        assert!(check_guest_path(w, r"D:\data").is_ok());
        for bad in [
            "/run/mounts/m0",
            r"\mounts\m0",
            r"c:mounts",
            "c:/mounts",
            r"1:\x",
            r"c:\a\..\b",
            r"c:\a/../b",
            "c:\\a\0",
            "",
        ] {
            assert!(check_guest_path(w, bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn linux_paths_are_posix_absolute() {
        let l = GuestOs::Linux;
        assert!(check_guest_path(l, "/run/mounts/scsi/m0").is_ok());
        for bad in [r"c:\mounts\m0", "rel", "/a/../b", "/a\0"] {
            assert!(check_guest_path(l, bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn windows_refuses_what_hcsshim_refuses_and_names_it() {
        let plain = MountConfig::default();
        assert!(check_mount_supported(GuestOs::Windows, &plain).is_ok());
        // hcsshim ignores these on Windows: not refused.
        let ignored = MountConfig {
            block_dev: true,
            format_with_refs: true,
            ..Default::default()
        };
        assert!(check_mount_supported(GuestOs::Windows, &ignored).is_ok());
        let cases: [(MountConfig, &str); 5] = [
            (
                MountConfig {
                    encrypted: true,
                    ..Default::default()
                },
                "encrypted",
            ),
            (
                MountConfig {
                    partition: 1,
                    ..Default::default()
                },
                "partition",
            ),
            (
                MountConfig {
                    options: vec!["ro".into()],
                    ..Default::default()
                },
                "options",
            ),
            (
                MountConfig {
                    filesystem: "ntfs".into(),
                    ..Default::default()
                },
                "filesystem",
            ),
            (
                MountConfig {
                    ensure_filesystem: true,
                    ..Default::default()
                },
                "ensure_filesystem",
            ),
        ];
        for (m, name) in cases {
            assert!(check_mount_supported(GuestOs::Linux, &m).is_ok());
            match check_mount_supported(GuestOs::Windows, &m) {
                Err(Error::UnsupportedByGuest {
                    guest: GuestOs::Windows,
                    what,
                }) => {
                    assert!(what.contains(name), "{what}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
