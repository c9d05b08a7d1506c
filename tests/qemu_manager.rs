//! The manager on real QEMU, crashed: a child process (the "shim") drives a booted QEMU guest
//! through the journaled manager (attach over QMP, mount through qemu-guest-agent) and is killed
//! with SIGKILL mid-workload while QEMU lives on. The parent then opens the same journal against
//! the same VM, recovers from the journal and `inspect`, and checks that the VM holds exactly the
//! disks and mounts live handles need, that every handle the child got is still live, and finally
//! that releasing everything leaves the VM empty.
//!
//! Kills are aimed: six in every seven wait for the child to announce (through the backends'
//! `SequenceHook`) that it is inside one multi-command sequence (between blockdev-add and
//! device_add; between device_del and DEVICE_DELETED; between DEVICE_DELETED and blockdev-del;
//! inside the guest mount script, before mkfs or mount; inside the unmount script; inside the
//! unplug script), the hook holding it there for a moment, and kill it there; the seventh lands
//! at a random time. After each recovery an observer that does not use lunledger's inspect (the
//! VM's second QMP monitor, and a raw `guest-exec` of `cat /proc/mounts`) checks that QEMU has no
//! block node without a device, no device the journal does not hold, and the guest no mount the
//! journal does not hold.
//!
//! Run: `scripts/install-qemu.sh && scripts/build-guest.sh && cargo test --features qemu-tests
//! --test qemu_manager`. `LUNLEDGER_QEMU_KILLS` sets the number of kills (default 7: one per
//! site and one random; the long tier of scripts/test-all.sh runs 105).

use lunledger_test_support as common;

use common::{assert_replay_equals_live, observer, Victim};
use lunledger::backend::qemu::{hooks, QemuGuest, QemuHost, QgaClient, SequenceHook};
use lunledger::backend::{GuestBackend, HostBackend};
use lunledger::demo::vm::{GuestImage, QemuVm, QemuVmOptions};
use lunledger::model::{HandleId, ManagerConfig};
use lunledger::{DiskRequest, Manager, ManagerOptions, MountConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const CHILD_ENV: &str = "LUNLEDGER_QEMU_CHILD";

fn config() -> ManagerConfig {
    ManagerConfig {
        guest: Default::default(),
        controllers: 2,
        luns_per_controller: 64,
        mount_format: format!("{PREFIX}%d"),
        reserved: vec![],
    }
}

const PREFIX: &str = "/run/lunledger/m";
/// The site the child is to announce and pause at (`LUNLEDGER_KILL_SITE`), and for how long.
const SITE_ENV: &str = "LUNLEDGER_KILL_SITE";
const PAUSE: Duration = Duration::from_millis(300);
/// Guest scripts pause longer (twice per mount script), as a slow mkfs would: a shim killed
/// there is recovered while its script still runs in the guest.
const GUEST_PAUSE: Duration = Duration::from_millis(1500);

async fn open(journal: &Path, qmp: &Path, qga: &Path) -> Manager {
    open_hooked(journal, qmp, qga, None).await
}

/// Opens the manager; with `site`, the backends print `window <site>` and pause there.
async fn open_hooked(journal: &Path, qmp: &Path, qga: &Path, site: Option<String>) -> Manager {
    let mut host = QemuHost::connect(qmp)
        .await
        .unwrap_or_else(|e| panic!("QMP: {e}"));
    let map = host
        .controller_map()
        .await
        .unwrap_or_else(|e| panic!("controllers: {e}"));
    let mut guest = QemuGuest::connect(qga, map)
        .await
        .unwrap_or_else(|e| panic!("QGA: {e}"));
    if let Some(site) = site {
        let hook = SequenceHook::new(move |at| {
            if at != site {
                return Duration::ZERO;
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "window {at}");
            let _ = out.flush();
            if at.starts_with("guest") {
                GUEST_PAUSE
            } else {
                PAUSE
            }
        });
        host = host.with_sequence_hook(hook.clone());
        guest = guest.with_sequence_hook(hook);
    }
    let host: Arc<dyn HostBackend> = Arc::new(host);
    let guest: Arc<dyn GuestBackend> = Arc::new(guest);
    Manager::open_with(journal, ManagerOptions::new(config()), host, guest)
        .await
        .unwrap_or_else(|e| panic!("open: {e}"))
}

/// Eight ext4 images made on the host, then three blank ones the guest formats: disk 8 mounted
/// encrypted (dm-crypt; a fresh ext4 at every mount), disk 9 as ext4, disk 10 as xfs (which
/// wants 300 MiB; the image is sparse).
fn images(dir: &Path) -> Vec<PathBuf> {
    (0..11)
        .map(|i| {
            let p = dir.join(format!("disk{i}.img"));
            if !p.exists() {
                let mib = if i == 10 { 320 } else { 32 };
                std::fs::File::create(&p)
                    .unwrap()
                    .set_len(mib << 20)
                    .unwrap();
                if i < 8 {
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
    let site = std::env::var(SITE_ENV).ok();
    let m = open_hooked(&dir.join("journal"), &qmp, &qga, site).await;
    println!("opened");
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
        let i = (x % disks.len() as u64) as usize;
        let disk = &disks[i];
        let mut req = DiskRequest::new(disk.to_string_lossy()).read_only(x % 2 == 0);
        req = match x % 4 {
            _ if i >= 8 => req.read_only(false).mount(MountConfig {
                // A blank disk: the guest runs mkfs first (encrypted: cryptsetup open first).
                ensure_filesystem: true,
                encrypted: i == 8,
                filesystem: if i == 10 { "xfs" } else { "ext4" }.into(),
                ..Default::default()
            }),
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
        .unwrap_or(7);
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
    // Where each kill landed: an aimed site the child announced, or a random time.
    let mut landed: BTreeMap<&str, u64> = BTreeMap::new();
    let mut observer_checks = 0;
    let started = std::time::Instant::now();
    for i in 0..kills {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let round = (i % 7) as usize;
        let site = hooks::SITES.get(round).copied();
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
        if let Some(site) = site {
            cmd.env(SITE_ENV, site);
        }
        let victim = Victim::spawn(cmd);
        victim.wait_started(Duration::from_secs(60));
        let where_ = match site {
            Some(site) if victim.wait_line(&format!("window {site}"), Duration::from_secs(60)) => {
                // Inside the window: the hook holds the child there for PAUSE (a guest script
                // pauses twice, with mkfs between), so a kill up to PAUSE later lands inside.
                std::thread::sleep(Duration::from_millis(x % PAUSE.as_millis() as u64));
                site
            }
            Some(_) => "missed (site not reached within 60 s): random",
            None => {
                std::thread::sleep(Duration::from_millis(100 + x % 1500));
                "random time"
            }
        };
        *landed.entry(where_).or_default() += 1;
        let (_, reported) = victim.kill();
        assert!(vm.is_alive(), "QEMU died with the shim");

        let what = format!("kill {i} ({where_})");
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
        assert!(
            report.teardowns_pending.is_empty(),
            "{what}: teardowns left pending: {:?}",
            report.teardowns_pending
        );
        let live: BTreeSet<HandleId> = m.handles().iter().map(|h| h.handle_id()).collect();
        let lost = reported.lost(&live);
        assert!(lost.is_empty(), "{what}: handles lost: {lost:?}");
        assert_replay_equals_live(&m).await;
        assert!(m.state().ops.is_empty(), "{what}: operations in flight");
        // The manager holds the only agent connection: observe after closing it.
        let st = m.state();
        m.close().await.unwrap();
        observe(&vm, &st, &what).await;
        observer_checks += 1;
        println!(
            "{what}: {} live handles, {} rolled back, {} finished; plan {:?}",
            live.len(),
            report.rolled_back.len(),
            report.releases_finished.len(),
            report.plan
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
    observe(
        &vm,
        &lunledger::recovery::State::new(),
        "after releasing everything",
    )
    .await;
    observer_checks += 1;
    println!(
        "QEMU kill -9: {kills} kills in {:?}, {rolled_back} adds rolled back, {finished} releases \
         finished, {resolved} outcomes resolved by inspect; {observer_checks} observer checks",
        started.elapsed()
    );
    for (site, n) in &landed {
        println!("  kills landed {site}: {n}");
    }
}

/// The independent observer's check of the VM against `state` (see `common/observer.rs`):
/// QEMU through the second monitor, the guest through a raw guest-exec on a fresh agent
/// connection (the manager is closed: the agent serves one client).
async fn observe(vm: &QemuVm, state: &lunledger::recovery::State, what: &str) {
    let mut seen = observer::host(&vm.aux_qmp_socket()).await;
    let qga = vm.qga_socket().unwrap();
    let mut c = QgaClient::connect(&qga, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{what}: observer agent: {e}"));
    observer::guest(&mut c, PREFIX, &mut seen).await;
    drop(c);
    observer::assert_matches(&seen, state, what);
}

const SHARED_ENV: &str = "LUNLEDGER_QEMU_SHARED_CHILD";

/// The child half of `kill_inside_the_mount_script_of_a_shared_attachment`: holds disk 0
/// attached without a mount, then adds it again with a mount (sharing the attachment) and is
/// killed while the guest's mount script pauses before mount(2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_shared_mount_child() {
    let Ok(dir) = std::env::var(SHARED_ENV) else {
        return; // Only runs when the parent starts it.
    };
    let dir = PathBuf::from(dir);
    let qmp = PathBuf::from(std::env::var("LUNLEDGER_QMP").unwrap());
    let qga = PathBuf::from(std::env::var("LUNLEDGER_QGA").unwrap());
    let disks = images(&dir);
    let site = Some(hooks::GUEST_MOUNT.to_string());
    let m = open_hooked(&dir.join("journal"), &qmp, &qga, site).await;
    println!("opened");
    let disk = disks[0].to_string_lossy().to_string();
    let h2 = if std::env::var("LUNLEDGER_QEMU_SCENARIO").as_deref() == Ok("encrypted") {
        // A blank disk mounted encrypted: cryptsetup open, (pause: the kill), mkfs, mount.
        let blank = disks[8].to_string_lossy().to_string();
        m.add_virtual_disk(DiskRequest::new(&blank).mount(MountConfig {
            encrypted: true,
            ensure_filesystem: true,
            filesystem: "ext4".into(),
            ..Default::default()
        }))
        .await
    } else {
        let h = m.add_virtual_disk(DiskRequest::new(&disk)).await.unwrap();
        println!("got {}", h.handle_id());
        m.add_virtual_disk(DiskRequest::new(&disk).mount(MountConfig::default()))
            .await
    };
    println!("unexpectedly finished: {:?}", h2.map(|h| h.handle_id()));
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// A shim killed inside the guest's mount script leaves the script running in the guest. If
/// recovery decides the mount did not happen while the script has yet to mount, and the
/// attachment stays (another handle holds it), the script's mount lands after recovery: a guest
/// mount the journal does not hold. The observer waits for guest scripts to end, then looks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn kill_inside_the_mount_script_of_a_shared_attachment() {
    kill_inside_the_mount_script("shared", 1).await;
}

/// A shim killed inside an encrypted mount's script, after `cryptsetup open` and before mkfs:
/// the dm-crypt mapping is open on the disk with nothing mounted. Rolling the add back must
/// close it and unplug the disk, leaving neither a mapping nor a device behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn kill_inside_an_encrypted_mount_script() {
    kill_inside_the_mount_script("encrypted", 0).await;
}

/// Runs the `qemu_shared_mount_child` scenario, kills it inside the mount script, recovers and
/// observes; `live` handles must survive.
async fn kill_inside_the_mount_script(scenario: &str, want_live: usize) {
    if std::env::var(SHARED_ENV).is_ok() || std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let guest_dir = std::env::var_os("LUNLEDGER_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/guest"));
    let image = GuestImage::from_dir(&guest_dir).unwrap_or_else(|e| panic!("{e}"));
    let vm = QemuVm::start(QemuVmOptions {
        controllers: 2,
        guest: Some(image),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    vm.wait_ready(Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (qmp, qga) = (vm.qmp_socket(), vm.qga_socket().unwrap());
    let work = tempfile::tempdir().unwrap();
    images(work.path());
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "qemu_shared_mount_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(SHARED_ENV, work.path())
    .env("LUNLEDGER_QEMU_SCENARIO", scenario)
    .env("LUNLEDGER_QMP", &qmp)
    .env("LUNLEDGER_QGA", &qga);
    let victim = Victim::spawn(cmd);
    victim.wait_started(Duration::from_secs(60));
    let window = format!("window {}", hooks::GUEST_MOUNT);
    assert!(
        victim.wait_line(&window, Duration::from_secs(60)),
        "the child never reached the mount script"
    );
    std::thread::sleep(Duration::from_millis(100));
    let (_, reported) = victim.kill();
    let m = open(&work.path().join("journal"), &qmp, &qga).await;
    let report = m.last_recovery().unwrap();
    println!("plan {:?}", report.plan);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(
        report.teardowns_pending.is_empty(),
        "teardowns left pending: {:?}",
        report.teardowns_pending
    );
    let live: BTreeSet<HandleId> = m.handles().iter().map(|h| h.handle_id()).collect();
    assert!(reported.lost(&live).is_empty(), "handles lost");
    assert_eq!(live.len(), want_live, "handles after recovery");
    let st = m.state();
    m.close().await.unwrap();
    observe(&vm, &st, "after the kill inside the mount script").await;
    let m = open(&work.path().join("journal"), &qmp, &qga).await;
    for h in m.handles() {
        h.release().await.unwrap_or_else(|e| panic!("release: {e}"));
    }
    let st = m.state();
    m.close().await.unwrap();
    observe(&vm, &st, "after releasing everything").await;
}
