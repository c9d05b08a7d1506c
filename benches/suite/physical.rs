//! The physical limit, measured in the same run in the same filesystem as the journals: append a
//! ~120 B record to a file and make it stable, once per record.

use crate::report::{median, pct, us};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Instant;

/// Per-record latencies in µs.
pub struct Limit {
    pub median_us: f64,
    pub p99_us: f64,
}

#[derive(Clone, Copy)]
pub enum Mechanism {
    /// `write` + `fdatasync` (power-loss durable).
    Fdatasync,
    /// `write` + `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)` over the written range: sled's
    /// `flush()` mechanism (survives a process crash, not power loss).
    SyncFileRange,
}

pub fn measure(dir: &Path, mech: Mechanism, n: usize) -> Limit {
    let path = dir.join(match mech {
        Mechanism::Fdatasync => "raw-fdatasync.log",
        Mechanism::SyncFileRange => "raw-sfr.log",
    });
    let _ = std::fs::remove_file(&path);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open raw log");
    // A 120-byte record: length, crc-ish word, 112 B payload (the journal's average envelope is
    // in the same range).
    let mut rec = [0u8; 120];
    let mut off = 0u64;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 50 {
        rec[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let t = Instant::now();
        f.write_all(&rec).expect("write");
        match mech {
            Mechanism::Fdatasync => f.sync_data().expect("fdatasync"),
            Mechanism::SyncFileRange => {
                // SAFETY: a valid open fd; the range is the bytes just written.
                let rc = unsafe {
                    libc::sync_file_range(
                        f.as_raw_fd(),
                        off as libc::off64_t,
                        rec.len() as libc::off64_t,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                    )
                };
                assert_eq!(rc, 0, "sync_file_range failed");
            }
        }
        let d = t.elapsed();
        off += rec.len() as u64;
        if i >= 50 {
            lat.push(us(d));
        }
    }
    let _ = std::fs::remove_file(&path);
    Limit {
        median_us: median(&mut lat),
        p99_us: pct(&mut lat, 99.0),
    }
}
