//! QEMU tier benchmark (issue #16 part 4): what the journal costs a user on a real VM.
//!
//! One QEMU VM (q35 under TCG, 4 `virtio-scsi-pci` controllers, qemu-guest-agent in the guest),
//! booted once. One QMP and one agent connection (`QemuHost`, `QemuGuest`) are shared by two
//! managers that make the very same backend calls in the same order: the journaled
//! `lunledger::Manager` (its journal in a temp dir on disk under the cargo target directory,
//! `Durability::Flush`, the default) and the un-journaled in-memory baseline of the suite
//! (`benches/suite/baseline.rs`, an hcsshim-like manager). Two kinds of add+release cycle of one
//! disk:
//!
//! - attach-only: attach (QMP blockdev-add, device_add); release: guest unplug, detach
//!   (device_del, DEVICE_DELETED, blockdev-del);
//! - attach+mount: attach, guest mount (an ext4 image); release: unmount, unplug, detach.
//!
//! The two managers are interleaved cycle by cycle (journaled, un-journaled, then the other order
//! in the next round, for each kind), because a shared VM drifts by ±15 % within minutes. The
//! overhead is the ratio of the medians (journaled / un-journaled − 1); the spread is p25–p75 of
//! the per-pair ratios. Each manager sees the shared backends through its own call log
//! (`timed.rs`): a pair whose managers made different calls fails the run, and each cycle splits
//! into time inside backend calls (the VM) and outside them (the manager's own work, the journal
//! included), a second, far less noisy estimate of the overhead. The journal's durable points,
//! flushes and records per cycle come from `Journal::stats()`.
//!
//! Run (root, Debian; see docs/performance.md):
//!
//! ```sh
//! scripts/install-qemu.sh && scripts/build-guest.sh
//! cargo bench --features qemu-tests --bench qemu
//! ```
//!
//! `LUNLEDGER_QEMU_BENCH_CYCLES` (default 40): measured pairs per kind (`scripts/test-all.sh`
//! runs 10). `-- --sim-control`: the same cycles on the simulated VM instead (zero latency, then
//! QEMU's per-call latencies), a control that needs no QEMU. `LUNLEDGER_GUEST_DIR`: the guest image (default `target/guest`). A missing QEMU,
//! guest image or `mkfs.ext4` fails the run (exit 1, the reason on stderr); so does any backend
//! error. QEMU is stopped by pid and the temp dirs are removed on every exit path, SIGINT and
//! SIGTERM included.

// The suite's baseline and table printing, shared as they are; the suite uses all of them.
#[allow(dead_code)]
#[path = "../suite/baseline.rs"]
mod baseline;
#[allow(dead_code)]
#[path = "../suite/report.rs"]
mod report;
mod timed;

use baseline::{BaseManager, Persist};
use lunledger::backend::qemu::{QemuGuest, QemuHost};
use lunledger::backend::sim::{SimOp, SimVm};
use lunledger::backend::{GuestBackend, HostBackend};
use lunledger::demo::vm::{GuestImage, QemuVm, QemuVmOptions};
use lunledger::journal::JournalStats;
use lunledger::model::{ManagerConfig, MountSpec};
use lunledger::{DiskRequest, Manager, ManagerOptions, MountConfig};
use report::{median, ms, pct, Table, Target};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timed::{Call, CallLog};

/// Measured pairs (one journaled and one un-journaled cycle) per kind, unless
/// `LUNLEDGER_QEMU_BENCH_CYCLES` says otherwise.
const DEFAULT_PAIRS: usize = 40;
/// Unmeasured cycles per kind and manager before the measured ones (the guest's first mount,
/// the first script on the agent connection, page cache).
const WARMUP: usize = 3;
/// Targets of issue #16 part 4: journaled / un-journaled cycle, ratio of the medians.
const TARGET_ATTACH_ONLY: f64 = 1.10;
const TARGET_ATTACH_MOUNT: f64 = 1.02;

const KINDS: [Kind; 2] = [Kind::AttachOnly, Kind::AttachMount];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    AttachOnly,
    AttachMount,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::AttachOnly => "attach-only",
            Kind::AttachMount => "attach+mount",
        }
    }

    fn mounts(self) -> bool {
        self == Kind::AttachMount
    }

    fn target(self) -> f64 {
        match self {
            Kind::AttachOnly => TARGET_ATTACH_ONLY,
            Kind::AttachMount => TARGET_ATTACH_MOUNT,
        }
    }
}

/// What one kind of cycle measured.
#[derive(Default)]
struct Measured {
    /// Per-cycle wall time (ms), pair i of both vectors measured back to back.
    journaled: Vec<f64>,
    base: Vec<f64>,
    /// Of each cycle, the time outside backend calls (ms): the manager's own work, the
    /// journal's included.
    journaled_outside: Vec<f64>,
    base_outside: Vec<f64>,
    /// The backend calls of one cycle (the same for both managers).
    calls: Vec<String>,
    /// Each call's durations (ms), both managers', by call name.
    call_ms: std::collections::BTreeMap<&'static str, Vec<f64>>,
    /// Journal counters summed over the measured journaled cycles.
    points: u64,
    flushes: u64,
    appended: u64,
}

impl Measured {
    fn count(&mut self, s0: &JournalStats, s1: &JournalStats) {
        let (p0, p1) = (&s0.durable_points, &s1.durable_points);
        self.points += (p1.add - p0.add) + (p1.release - p0.release);
        self.flushes += s1.flushes - s0.flushes;
        self.appended += s1.appended - s0.appended;
    }

    fn push(&mut self, j: &Cycle, base: &Cycle) {
        if self.calls.is_empty() {
            self.calls = j.call_names();
        }
        for c in j.calls.iter().chain(&base.calls) {
            self.call_ms.entry(c.name).or_default().push(c.ms);
        }
        self.journaled.push(j.ms);
        self.base.push(base.ms);
        self.journaled_outside.push(j.outside_ms());
        self.base_outside.push(base.outside_ms());
    }

    fn per_cycle(&self, v: u64) -> f64 {
        v as f64 / self.journaled.len() as f64
    }

    /// A 95 % bootstrap interval of the ratio of the medians (journaled / un-journaled):
    /// pairs resampled with replacement, 2000 times (xorshift, fixed seed).
    fn ratio_interval(&self) -> (f64, f64) {
        let n = self.journaled.len();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let (mut j, mut b) = (vec![0.0; n], vec![0.0; n]);
        let mut ratios: Vec<f64> = (0..2000)
            .map(|_| {
                for k in 0..n {
                    let i = next();
                    j[k] = self.journaled[i];
                    b[k] = self.base[i];
                }
                median(&mut j) / median(&mut b)
            })
            .collect();
        (pct(&mut ratios, 2.5), pct(&mut ratios, 97.5))
    }

    fn ratios(&self) -> Vec<f64> {
        self.journaled
            .iter()
            .zip(&self.base)
            .map(|(j, b)| j / b)
            .collect()
    }
}

/// One measured cycle: its wall time (ms) and the backend calls it made.
struct Cycle {
    ms: f64,
    calls: Vec<Call>,
}

impl Cycle {
    /// The cycle's time outside backend calls.
    fn outside_ms(&self) -> f64 {
        self.ms - self.calls.iter().map(|c| c.ms).sum::<f64>()
    }

    fn call_names(&self) -> Vec<String> {
        self.calls
            .iter()
            .map(|c| format!("{} {}", c.name, c.on).trim().to_string())
            .collect()
    }
}

/// hcsshim's LCOW numbers: 4 controllers x 64 LUNs, mounts at /run/mounts/scsi/m%d.
fn config() -> ManagerConfig {
    ManagerConfig::lcow_default()
}

/// The cargo target directory (the journal goes on the disk it is on).
fn target_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => manifest.join(t),
        None => manifest.join("target"),
    }
}

fn pairs() -> Result<usize, String> {
    match std::env::var("LUNLEDGER_QEMU_BENCH_CYCLES") {
        Err(_) => Ok(DEFAULT_PAIRS),
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "LUNLEDGER_QEMU_BENCH_CYCLES must be a positive number of pairs, not {v:?}"
            )),
        },
    }
}

/// A sparse raw image of `mib` MiB; with `ext4`, formatted on the host.
fn image(path: &Path, mib: u64, ext4: bool) -> Result<String, String> {
    let f = std::fs::File::create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.set_len(mib << 20)
        .map_err(|e| format!("cannot size {}: {e}", path.display()))?;
    if ext4 {
        let out = Command::new("mkfs.ext4")
            .args(["-F", "-q"])
            .arg(path)
            .output()
            .map_err(|e| {
                format!("cannot run mkfs.ext4 ({e}): install e2fsprogs (scripts/install-qemu.sh)")
            })?;
        if !out.status.success() {
            return Err(format!(
                "mkfs.ext4 {} failed ({}): {}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(path.display().to_string())
}

async fn journaled_cycle(
    m: &Manager,
    log: &CallLog,
    disk: &str,
    kind: Kind,
) -> Result<Cycle, String> {
    let mut req = DiskRequest::new(disk);
    if kind.mounts() {
        req = req.mount(MountConfig::default());
    }
    log.take();
    let t = Instant::now();
    let h = m
        .add_virtual_disk(req)
        .await
        .map_err(|e| format!("journaled {} add: {e}", kind.name()))?;
    h.release()
        .await
        .map_err(|e| format!("journaled {} release: {e}", kind.name()))?;
    let ms = ms(t.elapsed());
    Ok(Cycle {
        ms,
        calls: log.take(),
    })
}

async fn base_cycle(
    b: &BaseManager,
    log: &CallLog,
    disk: &str,
    kind: Kind,
) -> Result<Cycle, String> {
    let mount = kind.mounts().then(MountSpec::default);
    log.take();
    let t = Instant::now();
    let h = b
        .add(disk, mount)
        .await
        .map_err(|e| format!("un-journaled {} add: {e}", kind.name()))?;
    b.release(h)
        .await
        .map_err(|e| format!("un-journaled {} release: {e}", kind.name()))?;
    let ms = ms(t.elapsed());
    Ok(Cycle {
        ms,
        calls: log.take(),
    })
}

/// Warm-up, then `pairs` interleaved pairs of each kind: one `Measured` per kind of `KINDS`
/// (`disks[k]` is the disk of `KINDS[k]`).
async fn measure(
    m: &Manager,
    j_log: &CallLog,
    b: &BaseManager,
    b_log: &CallLog,
    disks: [&str; 2],
    pairs: usize,
) -> Result<[Measured; 2], String> {
    for (k, kind) in KINDS.into_iter().enumerate() {
        for _ in 0..WARMUP {
            journaled_cycle(m, j_log, disks[k], kind).await?;
            base_cycle(b, b_log, disks[k], kind).await?;
        }
    }
    let mut measured = [Measured::default(), Measured::default()];
    let progress = Instant::now();
    for i in 0..pairs {
        for (k, kind) in KINDS.into_iter().enumerate() {
            let d = disks[k];
            // The order alternates from round to round, so neither side always runs second.
            let journaled_first = i % 2 == 0;
            let mut base = None;
            if !journaled_first {
                base = Some(base_cycle(b, b_log, d, kind).await?);
            }
            let s0 = m.journal().stats();
            let j = journaled_cycle(m, j_log, d, kind).await?;
            let s1 = m.journal().stats();
            let base = match base {
                Some(base) => base,
                None => base_cycle(b, b_log, d, kind).await?,
            };
            // The comparison only means something if both made the very same calls.
            if j.call_names() != base.call_names() {
                return Err(format!(
                    "{} pair {i}: the managers made different backend calls: journaled {:?}, \
                     un-journaled {:?}",
                    kind.name(),
                    j.call_names(),
                    base.call_names()
                ));
            }
            measured[k].count(&s0, &s1);
            measured[k].push(&j, &base);
        }
        if (i + 1) % 10 == 0 || i + 1 == pairs {
            eprintln!(
                "  {}/{pairs} pairs of each kind ({:.1} s)",
                i + 1,
                progress.elapsed().as_secs_f64()
            );
        }
    }
    Ok(measured)
}

/// Boots the VM, measures, and returns the table. Everything that needs cleaning up is a local
/// with a drop guard, declared so that it drops in the right order (managers, then the work dir,
/// then QEMU, stopped by pid), whether this returns, fails, panics or is cancelled by a signal.
async fn run(started: Instant) -> Result<Table, String> {
    let pairs = pairs()?;
    let guest_dir = std::env::var_os("LUNLEDGER_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/guest"));
    let image_dir = GuestImage::from_dir(&guest_dir).map_err(|e| e.to_string())?;
    eprintln!(
        "== QEMU: journaled manager vs un-journaled baseline on one VM (TCG), {pairs} pairs per kind"
    );
    let boot = Instant::now();
    let mut vm = QemuVm::start(QemuVmOptions {
        controllers: config().controllers,
        guest: Some(image_dir),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot start QEMU: {e}"))?;
    vm.wait_ready(Duration::from_secs(120))
        .await
        .map_err(|e| e.to_string())?;
    let boot_ms = ms(boot.elapsed());
    let qga = vm.qga_socket().ok_or("the VM has no guest agent socket")?;
    eprintln!(
        "  QEMU pid {} booted to a responsive guest agent in {boot_ms:.0} ms",
        vm.pid().unwrap_or(-1)
    );

    let bench_tmp = target_dir().join("bench-tmp");
    std::fs::create_dir_all(&bench_tmp)
        .map_err(|e| format!("cannot create {}: {e}", bench_tmp.display()))?;
    let work = tempfile::Builder::new()
        .prefix("qemu-")
        .tempdir_in(&bench_tmp)
        .map_err(|e| format!("cannot create a temp dir in {}: {e}", bench_tmp.display()))?;
    let attach_disk = image(&work.path().join("attach-only.img"), 32, false)?;
    let mount_disk = image(&work.path().join("mount-ext4.img"), 32, true)?;

    let host = QemuHost::connect(vm.qmp_socket())
        .await
        .map_err(|e| format!("QMP: {e}"))?;
    let map = host
        .controller_map()
        .await
        .map_err(|e| format!("controller map: {e}"))?;
    let guest = QemuGuest::connect(&qga, map)
        .await
        .map_err(|e| format!("guest agent: {e}"))?;
    let host: Arc<dyn HostBackend> = Arc::new(host);
    let guest: Arc<dyn GuestBackend> = Arc::new(guest);
    // The same two connections for both managers, each seen through its own call log.
    let (j_host, j_guest, j_log) = timed::wrap(host.clone(), guest.clone());
    let (b_host, b_guest, b_log) = timed::wrap(host, guest);
    let journal = work.path().join("journal");
    let m = Manager::open_with(&journal, ManagerOptions::new(config()), j_host, j_guest)
        .await
        .map_err(|e| format!("open the journaled manager on {}: {e}", journal.display()))?;
    let b = BaseManager::new(config(), b_host, b_guest, Persist::None);
    eprintln!("  journal: {} (Durability::Flush)", journal.display());

    let progress = Instant::now();
    let disks = [attach_disk.as_str(), mount_disk.as_str()];
    let mut measured = measure(&m, &j_log, &b, &b_log, disks, pairs).await?;
    let measuring_s = progress.elapsed().as_secs_f64();
    m.close()
        .await
        .map_err(|e| format!("close the journaled manager: {e}"))?;
    drop(b);
    vm.stop().map_err(|e| format!("stop QEMU: {e}"))?;

    let mut t = Table::default();
    for (k, kind) in KINDS.into_iter().enumerate() {
        report_kind(
            &mut t,
            &format!("q{}", k + 1),
            "",
            kind,
            &mut measured[k],
            true,
        );
    }
    let cycles = 2 * KINDS.len() * pairs;
    t.add(
        "q3a",
        format!(
            "measured cycles ({pairs} pairs of each kind, after {WARMUP} warm-up cycles of each kind and manager)"
        ),
        cycles as f64,
        "cycles",
        None,
        None,
    );
    t.add(
        "q3b",
        "boot to a responsive guest agent (TCG)",
        boot_ms / 1e3,
        "s",
        None,
        None,
    );
    t.add("q3c", "measuring time", measuring_s, "s", None, None);
    t.add(
        "q3d",
        "bench wall time (process start to QEMU stopped)",
        started.elapsed().as_secs_f64(),
        "s",
        None,
        None,
    );
    Ok(t)
}

/// QEMU's p50 per backend call on the 2-core TCG machine (2026-11-30), for `--sim-control`.
const QEMU_P50_MS: [(SimOp, f64); 5] = [
    (SimOp::Attach, 2.4),
    (SimOp::Mount, 77.0),
    (SimOp::Unmount, 41.0),
    (SimOp::Unplug, 65.0),
    (SimOp::Detach, 55.0),
];

/// `-- --sim-control`: the same interleaved cycles on the simulated VM, no QEMU anywhere: once
/// with zero latency, once with each call sleeping as long as QEMU's took (`QEMU_P50_MS`). It
/// tells the journal's cost behind a slow backend (idle threads between calls) from QEMU's
/// competition for the cores. No targets are judged.
async fn sim_control(started: Instant) -> Result<Table, String> {
    let pairs = pairs()?;
    let bench_tmp = target_dir().join("bench-tmp");
    std::fs::create_dir_all(&bench_tmp)
        .map_err(|e| format!("cannot create {}: {e}", bench_tmp.display()))?;
    let work = tempfile::Builder::new()
        .prefix("qemu-sim-")
        .tempdir_in(&bench_tmp)
        .map_err(|e| format!("cannot create a temp dir in {}: {e}", bench_tmp.display()))?;
    let mut t = Table::default();
    for (id, label, slow) in [
        ("z", "simulated VM, zero latency: ", false),
        ("s", "simulated VM, QEMU's latencies: ", true),
    ] {
        eprintln!("== {label}{pairs} pairs per kind");
        let vm = SimVm::new();
        if slow {
            for (op, ms) in QEMU_P50_MS {
                vm.set_op_latency(op, Duration::from_secs_f64(ms / 1e3));
            }
        }
        let (j_host, j_guest, j_log) = timed::wrap(vm.host_backend(), vm.guest_backend());
        let (b_host, b_guest, b_log) = timed::wrap(vm.host_backend(), vm.guest_backend());
        let journal = work.path().join(format!("journal-{id}"));
        let m = Manager::open_with(&journal, ManagerOptions::new(config()), j_host, j_guest)
            .await
            .map_err(|e| format!("open the journaled manager on {}: {e}", journal.display()))?;
        let b = BaseManager::new(config(), b_host, b_guest, Persist::None);
        let disks = ["/disks/attach-only.img", "/disks/mount-ext4.img"];
        let mut measured = measure(&m, &j_log, &b, &b_log, disks, pairs).await?;
        m.close()
            .await
            .map_err(|e| format!("close the journaled manager: {e}"))?;
        for (k, kind) in KINDS.into_iter().enumerate() {
            report_kind(
                &mut t,
                &format!("{id}{}", k + 1),
                label,
                kind,
                &mut measured[k],
                false,
            );
        }
    }
    t.add(
        "z3",
        "bench wall time",
        started.elapsed().as_secs_f64(),
        "s",
        None,
        None,
    );
    Ok(t)
}

/// The rows of one kind. `label` prefixes the figures; `judge` applies the QEMU target.
fn report_kind(t: &mut Table, id: &str, label: &str, kind: Kind, mx: &mut Measured, judge: bool) {
    let name = format!("{label}{}", kind.name());
    eprintln!("  {name} cycle: {}", mx.calls.join(", "));
    let per_call: Vec<String> = mx
        .call_ms
        .iter_mut()
        .map(|(call, v)| format!("{call} {:.1}", median(v)))
        .collect();
    eprintln!("  {name} backend calls, p50 ms: {}", per_call.join(", "));
    let (lo, hi) = mx.ratio_interval();
    let mut ratios = mx.ratios();
    let (r25, r50, r75) = (
        pct(&mut ratios, 25.0),
        pct(&mut ratios, 50.0),
        pct(&mut ratios, 75.0),
    );
    let b50 = median(&mut mx.base);
    let (b25, b75) = (pct(&mut mx.base, 25.0), pct(&mut mx.base, 75.0));
    let j50 = median(&mut mx.journaled);
    let (j25, j75) = (pct(&mut mx.journaled, 25.0), pct(&mut mx.journaled, 75.0));
    let o50 = median(&mut mx.journaled_outside);
    let (o25, o75) = (
        pct(&mut mx.journaled_outside, 25.0),
        pct(&mut mx.journaled_outside, 75.0),
    );
    let ob50 = median(&mut mx.base_outside);
    t.add(
        &format!("{id}a"),
        format!("{name}: un-journaled cycle p50 (p25-p75 {b25:.1}-{b75:.1} ms)"),
        b50,
        "ms",
        None,
        None,
    );
    t.add(
        &format!("{id}b"),
        format!(
            "{name}: journaled cycle p50 (p25-p75 {j25:.1}-{j75:.1} ms); overhead {:+.2} % (95 % bootstrap interval {:+.1} to {:+.1} %)",
            (j50 / b50 - 1.0) * 100.0,
            (lo - 1.0) * 100.0,
            (hi - 1.0) * 100.0
        ),
        j50,
        "ms",
        Some(("un-journaled", b50)),
        judge.then(|| Target::RatioAtMost(kind.target())),
    );
    t.add(
        &format!("{id}c"),
        format!(
            "{name}: per-pair ratio journaled/un-journaled, median (spread p25-p75 {r25:.3}-{r75:.3})"
        ),
        r50,
        "x",
        None,
        None,
    );
    t.add(
        &format!("{id}d"),
        format!("{name}: journaled minus un-journaled, difference of the medians"),
        j50 - b50,
        "ms",
        None,
        None,
    );
    t.add(
        &format!("{id}e"),
        format!(
            "{name}: time outside backend calls per cycle (manager + journal), journaled p50 (p25-p75 {o25:.2}-{o75:.2} ms)"
        ),
        o50,
        "ms",
        Some(("un-journaled", ob50)),
        None,
    );
    t.add(
        &format!("{id}f"),
        format!(
            "{name}: overhead from the time outside backend calls: (journaled - un-journaled) / un-journaled cycle, p50s"
        ),
        (o50 - ob50) / b50 * 100.0,
        "%",
        None,
        None,
    );
    t.add(
        &format!("{id}g"),
        format!(
            "{name}: journal per cycle ({:.2} flushes, {:.1} records): durable points",
            mx.per_cycle(mx.flushes),
            mx.per_cycle(mx.appended)
        ),
        mx.per_cycle(mx.points),
        "points",
        None,
        None,
    );
}

/// Resolves on SIGINT or SIGTERM (never, if the handlers cannot be installed).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

fn main() {
    let started = Instant::now();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qemu bench FAILED: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let sim = std::env::args().skip(1).any(|a| a == "--sim-control");
    let work = async move {
        if sim {
            sim_control(started).await
        } else {
            run(started).await
        }
    };
    // Either branch drops `run`'s future before `block_on` returns: its guards stop QEMU and
    // remove the temp dirs.
    let outcome = rt.block_on(async {
        tokio::select! {
            r = work => r.map_err(|e| (1, e)),
            s = interrupted() => Err((130, format!("interrupted by {s}"))),
        }
    });
    drop(rt);
    match outcome {
        Ok(t) => {
            eprintln!(
                "total qemu bench time {:.1} s",
                started.elapsed().as_secs_f64()
            );
            t.print();
        }
        Err((code, e)) => {
            eprintln!("qemu bench FAILED: {e}");
            std::process::exit(code);
        }
    }
}
