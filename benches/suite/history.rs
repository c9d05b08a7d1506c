//! Journals with long histories for the recovery, replay and memory benchmarks, generated with
//! real add/release cycles through the manager and cached under
//! `target/bench-cache/<CACHE_VERSION>/` between runs.

use crate::{config_8x64, open_manager, LIVE};
use lunledger::backend::sim::{persist as simfile, SimVm};
use lunledger::journal::Durability;
use lunledger::{DiskRequest, MountConfig};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bump when the generated journals would differ (workload, configuration, record format).
pub const CACHE_VERSION: &str = "v3-segments10k-8x64-live256-64tasks";

/// One generated journal.
pub struct History {
    pub dir: PathBuf,
    pub checkpoint_every: u64,
    pub last_seq: u64,
    /// Generated in this run (not taken from the cache), and how long it took.
    pub generated: Option<Duration>,
}

impl History {
    /// A journal already generated in `dir` (for the profiling modes).
    pub fn at(dir: PathBuf, checkpoint_every: u64) -> History {
        let last_seq = std::fs::read_to_string(dir.join("done"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .expect("not a generated history directory");
        History {
            dir,
            checkpoint_every,
            last_seq,
            generated: None,
        }
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.dir.join("journal")
    }
    pub fn vm_file(&self) -> PathBuf {
        self.dir.join("vm.json")
    }
    /// A simulated VM holding what the journal says is attached (restored from the saved file).
    pub fn vm(&self) -> SimVm {
        let st = simfile::load(&self.vm_file())
            .expect("load vm state")
            .expect("vm state file missing");
        SimVm::with_state(st)
    }
}

/// The cached journal with `LIVE` held attachments plus `history` records of add/release
/// history, generated when missing.
pub fn get(cache: &Path, history: u64, checkpoint_every: u64) -> History {
    let dir = cache
        .join(CACHE_VERSION)
        .join(format!("h{history}-cp{checkpoint_every}"));
    let done = dir.join("done");
    if let Ok(s) = std::fs::read_to_string(&done) {
        if let Ok(last_seq) = s.trim().parse() {
            eprintln!(
                "  using cached journal {} (last_seq {last_seq})",
                dir.display()
            );
            return History {
                dir,
                checkpoint_every,
                last_seq,
                generated: None,
            };
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create cache dir");
    eprintln!(
        "  generating {} (+{history} records, checkpoint_every {checkpoint_every}) ...",
        dir.display()
    );
    let t = Instant::now();
    let rt = crate::runtime();
    let last_seq = rt.block_on(generate(&dir, history, checkpoint_every));
    let took = t.elapsed();
    std::fs::write(&done, format!("{last_seq}\n")).expect("write done marker");
    eprintln!(
        "  generated last_seq {last_seq} in {:.1} s ({:.0} records/s)",
        took.as_secs_f64(),
        last_seq as f64 / took.as_secs_f64()
    );
    History {
        dir,
        checkpoint_every,
        last_seq,
        generated: Some(took),
    }
}

async fn generate(dir: &Path, history: u64, checkpoint_every: u64) -> u64 {
    let vm = SimVm::new();
    let m = open_manager(
        &dir.join("journal"),
        &vm,
        config_8x64(),
        Durability::Flush,
        checkpoint_every,
    )
    .await;
    for i in 0..LIVE {
        let h = m
            .add_virtual_disk(
                DiskRequest::new(format!("/disks/live-{i:03}.vhdx")).mount(MountConfig::default()),
            )
            .await
            .expect("add live disk");
        // A `Mount` does not release on drop: the handle stays live in the journal.
        drop(h);
    }
    let target = m.journal().last_seq() + history;
    let mut tasks = Vec::new();
    for t in 0..64 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("/disks/hist-{t:02}.vhdx");
            while m.journal().last_seq() < target {
                let h = m
                    .add_virtual_disk(DiskRequest::new(path.clone()).mount(MountConfig::default()))
                    .await
                    .expect("history add");
                h.release().await.expect("history release");
            }
        }));
    }
    for t in tasks {
        t.await.expect("history task");
    }
    m.sync().await.expect("sync");
    let last = m.journal().last_seq();
    assert_eq!(m.handles().len(), LIVE, "live handles after history");
    simfile::save(&dir.join("vm.json"), &vm.snapshot()).expect("save vm");
    m.close().await.expect("close");
    last
}
