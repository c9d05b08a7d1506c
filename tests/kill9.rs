//! The kill -9 harness: a child process drives a random workload on a persistent simulated VM (its
//! state file outlives the process, as a VM outlives its shim) and is killed with SIGKILL at a
//! random moment. The parent then reopens the same journal and VM, recovers, and checks: replay
//! equals the live state, the VM holds exactly what live handles need, and every handle the child
//! reported as returned (and had not started releasing) is still live. The next child continues on
//! the same journal and VM, so history and recoveries accumulate.
//!
//! `LUNLEDGER_KILLS` sets the number of kills (default 25; the full tier runs 200).

use lunledger_test_support as common;

use common::*;
use lunledger::backend::sim::SimVm;
use lunledger::model::HandleId;
use lunledger::{DiskRequest, Manager, ManagerOptions, MountConfig};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CHILD_ENV: &str = "LUNLEDGER_KILL9_CHILD";

fn options() -> ManagerOptions {
    let mut o = ManagerOptions::new(config());
    // Small enough that checkpoints are taken (and crashed into) during the run, and that each
    // one rotates the journal (seals history into a segment), so kills land in rotations too.
    o.checkpoint_every = 200;
    o.segment_records = 200;
    o
}

async fn open_persistent(dir: &Path) -> (Manager, SimVm) {
    let vm = SimVm::persistent(dir.join("vm.json")).unwrap_or_else(|e| panic!("vm: {e}"));
    let opened = Manager::open_with(
        dir.join("journal"),
        options(),
        vm.host_backend(),
        vm.guest_backend(),
    )
    .await;
    match opened {
        Ok(m) => (m, vm),
        Err(e) => panic!("open: {e} (journal kept at {})", keep(dir).display()),
    }
}

/// Copies the work dir somewhere that survives the test's unwinding, for a post-mortem.
fn keep(dir: &Path) -> std::path::PathBuf {
    let to = std::env::temp_dir().join(format!("lunledger-kill9-failure-{}", std::process::id()));
    let _ = Command::new("cp").arg("-a").arg(dir).arg(&to).status();
    to
}

/// The child: runs until killed. Prints `got N` when an add returned handle N and `releasing N`
/// before it starts releasing N, flushing each line so the parent sees it before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Only runs when the harness starts it.
    };
    let dir = Path::new(&dir);
    let seed: u64 = std::env::var("LUNLEDGER_KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let (m, vm) = open_persistent(dir).await;
    vm.set_latency(Duration::from_micros(300));
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let m = m.clone();
        let r = next();
        tasks.push(tokio::spawn(async move {
            let mut x = r | 1;
            loop {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let live = m.handles();
                if x % 3 == 0 && !live.is_empty() {
                    let h = &live[(x as usize / 3) % live.len()];
                    println!("releasing {}", h.handle_id());
                    let _ = h.release().await;
                } else {
                    let disk = format!("disk-{}", x % 12);
                    let mut req = DiskRequest::new(disk)
                        .read_only(x % 5 == 0)
                        .owner(format!("c{t}"));
                    if x % 4 != 0 {
                        let block_dev = x % 7 == 0;
                        req = req.mount(MountConfig {
                            block_dev,
                            ..Default::default()
                        });
                    }
                    if let Ok(h) = m.add_virtual_disk(req).await {
                        println!("got {}", h.handle_id());
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_then_recover() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let kills: u64 = std::env::var("LUNLEDGER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let work = tempdir();
    let exe = std::env::current_exe().unwrap();
    let mut violations = 0;
    let mut rolled_back = 0;
    let mut finished = 0;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..kills {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut cmd = Command::new(&exe);
        cmd.args(["kill9_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, work.path())
            .env("LUNLEDGER_KILL9_SEED", (x | 1).to_string());
        let victim = Victim::spawn(cmd);
        // Let the child open (and recover) and run for a random while before the kill.
        victim.wait_started(Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(5 + x % 250));
        let (exited, reported) = victim.kill();
        assert!(!exited, "kill {i}: the child exited on its own");

        let (m, vm) = open_persistent(work.path()).await;
        let report = m.last_recovery().unwrap();
        rolled_back += report.rolled_back.len();
        finished += report.releases_finished.len();
        let live: BTreeSet<HandleId> = m.handles().iter().map(|h| h.handle_id()).collect();
        let lost = reported.lost(&live);
        if !lost.is_empty() {
            violations += 1;
            eprintln!("kill {i}: handles returned before the kill were lost: {lost:?}");
        }
        assert_replay_equals_live(&m).await;
        assert_vm_matches(&m, &vm);
        if !m.state().ops.is_empty() {
            panic!(
                "kill {i}: operations left in flight: {:?}\nreport: {report:?}\nkept at {}",
                m.state().ops,
                keep(work.path()).display()
            );
        }
        m.close().await.unwrap();
        drop(vm);
    }
    let (m, vm) = open_persistent(work.path()).await;
    for h in m.handles() {
        h.release().await.unwrap();
    }
    assert!(m.state().is_empty(), "{:?}", m.state());
    assert!(vm.snapshot().is_empty());
    assert_replay_equals_live(&m).await;
    let records = m.state().last_seq;
    m.close().await.unwrap();
    println!(
        "kill -9 harness: {kills} kills, {violations} violations, {rolled_back} adds rolled back, \
         {finished} releases finished, {records} records"
    );
    assert_eq!(violations, 0);
}
