//! Embedding lunledger in a restartable shim.
//!
//! Run it twice: the first run adds a container's disks and "crashes" without releasing them;
//! the second run (a restarted shim) recovers, takes the container's handles back by owner, and
//! releases them.
//!
//!     cargo run --example embed -- /tmp/shim-state
//!     cargo run --example embed -- /tmp/shim-state

use lunledger::backend::sim::SimVm;
use lunledger::model::ManagerConfig;
use lunledger::{DiskRequest, Manager, MountConfig};
use std::path::PathBuf;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // lunledger reports each operation as a tracing span (operation id, disk, slot, step):
    // an embedder shows them with any subscriber, here the fmt one, filtered by RUST_LOG
    // (e.g. RUST_LOG=lunledger=debug).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "shim-state".into()),
    );
    std::fs::create_dir_all(&dir)?;
    // The VM outlives the shim: here a simulated one whose state lives in a file. A real shim
    // passes QEMU backends instead (lunledger::backend::qemu).
    let vm = SimVm::persistent(dir.join("vm.json"))?;
    let config = ManagerConfig::lcow_default();
    let manager = Manager::open(
        dir.join("journal"),
        config,
        vm.host_backend(),
        vm.guest_backend(),
    )
    .await?;

    if let Some(report) = manager.last_recovery() {
        println!(
            "recovered in {:?}: {} rolled back, {} releases finished, {} handles live",
            report.duration,
            report.rolled_back.len(),
            report.releases_finished.len(),
            report.live_handles
        );
    }

    let held = manager.handles_by_owner("container-1");
    if held.is_empty() {
        // First run: the container's read-only layer and its scratch disk.
        let layer = manager
            .add_virtual_disk(
                DiskRequest::new("/images/layer0.vhd")
                    .read_only(true)
                    .mount(MountConfig {
                        options: vec!["ro".into()],
                        ..Default::default()
                    })
                    .owner("container-1"),
            )
            .await?;
        let scratch = manager
            .add_virtual_disk(
                DiskRequest::new("/images/scratch.vhd")
                    .mount(MountConfig {
                        ensure_filesystem: true,
                        filesystem: "ext4".into(),
                        ..Default::default()
                    })
                    .owner("container-1"),
            )
            .await?;
        println!(
            "layer at {} ({}:{})",
            layer.guest_path(),
            layer.controller(),
            layer.lun()
        );
        println!("scratch at {}", scratch.guest_path());
        println!("exiting without releasing; run again to recover and release");
    } else {
        // A restarted shim: the container is gone, release what it held.
        println!("container-1 held {} handles; releasing", held.len());
        let n = manager.release_owner("container-1").await?;
        println!(
            "released {n}; live handles now: {}",
            manager.handles().len()
        );
    }
    manager.close().await?;
    Ok(())
}
