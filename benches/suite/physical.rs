//! The physical limit, measured in the same run in the same filesystem as the journals: append a
//! ~120 B record to a file and make it stable, once per record.

use crate::report::us;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Instant;

#[derive(Clone, Copy)]
pub enum Mechanism {
    /// `write` + `fdatasync` (power-loss durable).
    Fdatasync,
    /// `pwrite` into a pre-zeroed, already-synced file + `fdatasync`: no size or extent metadata
    /// changes, so no filesystem journal commit (the floor for a store that overwrites in place).
    PrezeroedFdatasync,
    /// `write` + `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)` over the written range: sled's
    /// `flush()` mechanism (survives a process crash, not power loss).
    SyncFileRange,
}

/// Per-record latencies (µs) of `n` records, after 50 unmeasured ones.
pub fn measure(dir: &Path, mech: Mechanism, n: usize) -> Vec<f64> {
    let path = dir.join(match mech {
        Mechanism::Fdatasync => "raw-fdatasync.log",
        Mechanism::PrezeroedFdatasync => "raw-prezeroed.log",
        Mechanism::SyncFileRange => "raw-sfr.log",
    });
    let _ = std::fs::remove_file(&path);
    let rec_len = 120u64;
    let mut f = OpenOptions::new()
        .create(true)
        .append(!matches!(mech, Mechanism::PrezeroedFdatasync))
        .write(true)
        .open(&path)
        .expect("open raw log");
    if matches!(mech, Mechanism::PrezeroedFdatasync) {
        f.write_all(&vec![0u8; (n as u64 + 50) as usize * rec_len as usize])
            .expect("pre-zero");
        f.sync_all().expect("sync pre-zeroed file");
    }
    // A 120-byte record: length, crc-ish word, 112 B payload (the journal's average envelope is
    // in the same range).
    let mut rec = [0u8; 120];
    let mut off = 0u64;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 50 {
        rec[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let t = Instant::now();
        match mech {
            Mechanism::PrezeroedFdatasync => {
                f.write_all_at(&rec, off).expect("pwrite");
                f.sync_data().expect("fdatasync");
            }
            Mechanism::Fdatasync => {
                f.write_all(&rec).expect("write");
                f.sync_data().expect("fdatasync");
            }
            Mechanism::SyncFileRange => {
                f.write_all(&rec).expect("write");
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
        off += rec_len;
        if i >= 50 {
            lat.push(us(d));
        }
    }
    let _ = std::fs::remove_file(&path);
    lat
}
