//! Injected storage faults, for testing what a failing disk does to the journal (feature
//! `testing`). Each of the journal's own write and sync sites asks `check` before it touches
//! the disk; an armed site fails with the OS error it was armed with, as the disk would. sled's
//! own sites are armed through sled's failpoints ([`arm_sled`]), which this feature turns on.
//!
//! The arming is process-wide (as sled's failpoints are): tests that arm faults run one at a
//! time. Without the feature, `check` is an empty inline function.

use std::io;

/// One of the journal's own write or sync sites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// The fdatasync of sled's data file at a durable point (`Durability::Sync`).
    DataSync,
    /// Writing the durable watermark after a flush.
    Watermark,
    /// Writing a sealed segment file (at a rotation).
    SegmentWrite,
    /// Replacing `CURRENT` (the commit point of a rotation).
    CurrentReplace,
    /// Storing a checkpoint.
    CheckpointWrite,
    /// Creating or opening the directory lock file.
    LockFile,
}

impl Site {
    /// Every site.
    #[cfg(feature = "testing")]
    pub const ALL: [Site; 6] = [
        Site::DataSync,
        Site::Watermark,
        Site::SegmentWrite,
        Site::CurrentReplace,
        Site::CheckpointWrite,
        Site::LockFile,
    ];
}

#[cfg(feature = "testing")]
mod armed {
    use super::Site;
    use std::sync::Mutex;

    /// The armed site: it fails with `errno` (or, with `stall`, first waits that long, as a
    /// disk that stopped answering) after letting `skip` calls through.
    pub(super) struct Armed {
        pub site: Site,
        pub errno: i32,
        pub skip: u32,
        pub stall: Option<std::time::Duration>,
    }

    pub(super) static ARMED: Mutex<Option<Armed>> = Mutex::new(None);
}

/// Arms `site`: its next call after `skip` successful ones fails with OS error `errno`, and so
/// does every call after that (a disk that failed stays failed) until [`disarm`].
#[cfg(feature = "testing")]
pub fn arm(site: Site, errno: i32, skip: u32) {
    if let Ok(mut a) = armed::ARMED.lock() {
        *a = Some(armed::Armed {
            site,
            errno,
            skip,
            stall: None,
        });
    }
}

/// Arms `site` to stall: its next call waits `stall` (a disk that stopped answering), then fails
/// with EIO.
#[cfg(feature = "testing")]
pub fn arm_stall(site: Site, stall: std::time::Duration) {
    if let Ok(mut a) = armed::ARMED.lock() {
        *a = Some(armed::Armed {
            site,
            errno: libc::EIO,
            skip: 0,
            stall: Some(stall),
        });
    }
}

/// Arms one of sled's own failpoints (by sled's name, such as `"buffer write"`): its hit after
/// `skip` others (at most 63) fails, and sled then fails every later operation of that
/// database, as after a real I/O error.
#[cfg(feature = "testing")]
pub fn arm_sled(name: &'static str, skip: u32) {
    sled::fail::set(name, 1u64 << skip.min(63));
}

/// Disarms every injected fault, ours and sled's.
#[cfg(feature = "testing")]
pub fn disarm() {
    if let Ok(mut a) = armed::ARMED.lock() {
        *a = None;
    }
    sled::fail::reset();
}

/// Fails with the armed OS error when `site` is armed (feature `testing`).
#[cfg(feature = "testing")]
pub(crate) fn check(site: Site) -> io::Result<()> {
    let stall = {
        let Ok(mut a) = armed::ARMED.lock() else {
            return Ok(());
        };
        match a.as_mut() {
            Some(armed) if armed.site == site => {
                if armed.skip > 0 {
                    armed.skip -= 1;
                    return Ok(());
                }
                (armed.stall, armed.errno)
            }
            _ => return Ok(()),
        }
    };
    if let Some(d) = stall.0 {
        std::thread::sleep(d);
    }
    Err(io::Error::from_raw_os_error(stall.1))
}

/// Never fails: fault injection is compiled out without the `testing` feature.
#[cfg(not(feature = "testing"))]
#[inline(always)]
pub(crate) fn check(_site: Site) -> io::Result<()> {
    Ok(())
}
