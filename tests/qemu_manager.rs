//! The manager on real QEMU, crashed: a child process (the "shim") drives a booted QEMU guest
//! through the journaled manager (attach over QMP, mount through qemu-guest-agent) and is killed
//! with SIGKILL mid-workload while QEMU lives on. The parent then opens the same journal against
//! the same VM, recovers from the journal and `inspect`, and checks that the VM holds exactly the
//! disks and mounts live handles need, that every handle the child got is still live, and finally
//! that releasing everything leaves the VM empty.
//!
//! Run: `scripts/install-qemu.sh && scripts/build-guest.sh && cargo test --features qemu-tests
//! --test qemu_manager`. `LUNLEDGER_QEMU_KILLS` sets the number of kills (default 4).

mod common;

use common::{assert_replay_equals_live, Victim};
use lunledger::backend::qemu::{QemuGuest, QemuHost};
use lunledger::backend::{GuestBackend, HostBackend};
use lunledger::journal::{HandleId, ManagerConfig};
use lunledger::vm::{GuestImage, QemuVm, QemuVmOptions};
use lunledger::{DiskRequest, Manager, ManagerOptions, MountConfig};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const CHILD_ENV: &str = "LUNLEDGER_QEMU_CHILD";

fn config() -> ManagerConfig {
    ManagerConfig {
        controllers: 2,
        luns_per_controller: 64,
        mount_format: "/run/lunledger/m%d".into(),
        reserved: vec![],
    }
}

async fn open(journal: &Path, qmp: &Path, qga: &Path) -> Manager {
    let host = QemuHost::connect(qmp)
        .await
        .unwrap_or_else(|e| panic!("QMP: {e}"));
    let map = host
        .controller_map()
        .await
        .unwrap_or_else(|e| panic!("controllers: {e}"));
    let guest = QemuGuest::connect(qga, map)
        .await
        .unwrap_or_else(|e| panic!("QGA: {e}"));
    let host: Arc<dyn HostBackend> = Arc::new(host);
    let guest: Arc<dyn GuestBackend> = Arc::new(guest);
    Manager::open_with(journal, ManagerOptions::new(config()), host, guest)
        .await
        .unwrap_or_else(|e| panic!("open: {e}"))
}

fn images(dir: &Path) -> Vec<PathBuf> {
    (0..8)
        .map(|i| {
            let p = dir.join(format!("disk{i}.img"));
            if !p.exists() {
                std::fs::File::create(&p)
                    .unwrap()
                    .set_len(32 << 20)
                    .unwrap();
                let ok = Command::new("mkfs.ext4")
                    .args(["-F", "-q"])
                    .arg(&p)
                    .status()
                    .unwrap();
                assert!(
                    ok.success(),
                    "mkfs.ext4 failed (scripts/install-qemu.sh installs it)"
                );
            }
            p
        })
        .collect()
}

/// The shim: random adds and releases until killed; prints `got N` / `releasing N`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_manager_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Only runs when the parent starts it.
    };
    let dir = PathBuf::from(dir);
    let qmp = PathBuf::from(std::env::var("LUNLEDGER_QMP").unwrap());
    let qga = PathBuf::from(std::env::var("LUNLEDGER_QGA").unwrap());
    let mut x: u64 = std::env::var("LUNLEDGER_SEED").unwrap().parse().unwrap();
    let disks = images(&dir);
    let m = open(&dir.join("journal"), &qmp, &qga).await;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let live = m.handles();
        if (x % 2 == 0 || live.len() > 6) && !live.is_empty() {
            let h = &live[(x as usize / 2) % live.len()];
            println!("releasing {}", h.handle_id());
            let _ = h.release().await;
            continue;
        }
        let disk = &disks[(x % disks.len() as u64) as usize];
        let mut req = DiskRequest::new(disk.to_string_lossy()).read_only(x % 2 == 0);
        req = match x % 4 {
            0 => req,
            1 => req.mount(MountConfig {
                block_dev: true,
                ..Default::default()
            }),
            _ => req.mount(MountConfig::default()),
        };
        if let Ok(h) = m.add_virtual_disk(req).await {
            println!("got {}", h.handle_id());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn sigkill_the_shim_while_qemu_lives_on() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let kills: u64 = std::env::var("LUNLEDGER_QEMU_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let guest_dir = std::env::var_os("LUNLEDGER_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/guest"));
    let image = GuestImage::from_dir(&guest_dir).unwrap_or_else(|e| panic!("{e}"));
    let opts = QemuVmOptions {
        controllers: 2,
        guest: Some(image),
        ..Default::default()
    };
    let vm = QemuVm::start(opts)
        .await
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    vm.wait_ready(Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let qmp = vm.qmp_socket();
    let qga = vm.qga_socket().unwrap();
    let work = tempfile::tempdir().unwrap();
    images(work.path());
    let exe = std::env::current_exe().unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let (mut rolled_back, mut finished, mut resolved) = (0, 0, 0);
    for i in 0..kills {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut cmd = Command::new(&exe);
        cmd.args([
            "qemu_manager_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, work.path())
        .env("LUNLEDGER_QMP", &qmp)
        .env("LUNLEDGER_QGA", &qga)
        .env("LUNLEDGER_SEED", (x | 1).to_string());
        let victim = Victim::spawn(cmd);
        victim.wait_started(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(100 + x % 1500));
        let (_, reported) = victim.kill();
        assert!(vm.is_alive(), "QEMU died with the shim");

        let what = format!("kill {i}");
        let m = open(&work.path().join("journal"), &qmp, &qga).await;
        let report = m.last_recovery().unwrap();
        rolled_back += report.rolled_back.len();
        finished += report.releases_finished.len();
        resolved += report.resolved.len();
        assert!(
            report.errors.is_empty(),
            "{what}: recovery errors: {:?}",
            report.errors
        );
        let live: BTreeSet<HandleId> = m.handles().iter().map(|h| h.handle_id()).collect();
        let lost = reported.lost(&live);
        assert!(lost.is_empty(), "{what}: handles lost: {lost:?}");
        assert_replay_equals_live(&m).await;
        assert!(m.state().ops.is_empty(), "{what}: operations in flight");
        // The manager holds the only QMP and agent connections: compare after closing it.
        let st = m.state();
        m.close().await.unwrap();
        RecheckState(st).check(&qmp, &qga, &what).await;
        println!(
            "{what}: {} live handles, {} rolled back, {} finished",
            live.len(),
            report.rolled_back.len(),
            report.releases_finished.len()
        );
    }
    let m = open(&work.path().join("journal"), &qmp, &qga).await;
    for h in m.handles() {
        h.release()
            .await
            .unwrap_or_else(|e| panic!("final release: {e}"));
    }
    assert!(m.state().is_empty(), "{:?}", m.state());
    m.close().await.unwrap();
    RecheckState(lunledger::recovery::State::new())
        .check(&qmp, &qga, "after releasing everything")
        .await;
    println!("QEMU kill -9: {kills} kills, {rolled_back} adds rolled back, {finished} releases finished, {resolved} outcomes resolved by inspect");
}

/// The VM holds exactly what a state says: every attachment (and teardown still due) on the
/// host, every mount in the guest. Checked with the manager closed, since QMP and the agent
/// serve one client at a time.
struct RecheckState(lunledger::recovery::State);

impl RecheckState {
    async fn check(&self, qmp: &Path, qga: &Path, what: &str) {
        let host = QemuHost::connect(qmp).await.unwrap();
        let map = host.controller_map().await.unwrap();
        let seen_slots: BTreeSet<_> = host
            .inspect()
            .await
            .unwrap()
            .attachments
            .iter()
            .map(|a| a.slot)
            .collect();
        drop(host);
        let guest = QemuGuest::connect(qga, map).await.unwrap();
        let seen_paths: BTreeSet<_> = guest
            .inspect()
            .await
            .unwrap()
            .mounts
            .into_iter()
            .map(|m| m.path)
            .collect();
        drop(guest);
        let (want_slots, want_paths) = self.0.needed_on_vm();
        assert_eq!(
            seen_slots, want_slots,
            "{what}: QEMU's disks differ from the journal's"
        );
        assert_eq!(
            seen_paths, want_paths,
            "{what}: the guest's mounts differ from the journal's"
        );
    }
}
