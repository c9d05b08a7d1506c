//! The VM misbehaving under a running manager, on real QEMU with a booted guest: QEMU stopped
//! with SIGSTOP (neither the QMP monitor nor the guest agent answers), the guest agent frozen
//! while QMP answers, and QEMU killed with SIGKILL. Every call must come back within a bound
//! with a typed error that says what did not answer, and once the VM answers again nothing may
//! be left behind: an observer that does not go through lunledger's inspect (a second QMP
//! monitor and a raw `cat /proc/mounts` in the guest, see `common/observer.rs`) checks QEMU and
//! the guest against the journal.
//!
//! Run: `scripts/install-qemu.sh && scripts/build-guest.sh && cargo test --features qemu-tests
//! --test qemu_faults`.

use lunledger_test_support as common;

use common::observer;
use lunledger::backend::qemu::{QemuGuest, QemuGuestOptions, QemuHost, QemuHostOptions};
use lunledger::backend::{BackendError, GuestBackend, HostBackend};
use lunledger::demo::vm::{GuestImage, QemuVm, QemuVmOptions};
use lunledger::model::{ManagerConfig, Step};
use lunledger::{DiskRequest, Error, Manager, ManagerOptions, MountConfig};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PREFIX: &str = "/run/lunledger/m";

fn config() -> ManagerConfig {
    ManagerConfig {
        guest: Default::default(),
        controllers: 2,
        luns_per_controller: 64,
        mount_format: format!("{PREFIX}%d"),
        reserved: vec![],
    }
}

/// Short bounds, so a hang shows within seconds: 1 s per QMP or agent command, 5 s per guest
/// script, 2 s per inspect.
fn host_opts() -> QemuHostOptions {
    QemuHostOptions {
        command_timeout: Duration::from_secs(1),
        unplug_timeout: Duration::from_secs(3),
    }
}

fn guest_opts() -> QemuGuestOptions {
    QemuGuestOptions {
        command_timeout: Duration::from_secs(1),
        device_timeout: Duration::from_secs(5),
        exec_timeout: Duration::from_secs(5),
    }
}

fn manager_opts() -> ManagerOptions {
    let mut o = ManagerOptions::new(config());
    o.inspect_timeout = Duration::from_secs(2);
    o.teardown_attempts = 1;
    o
}

/// Any call under a misbehaving VM must return within this, error or not.
const BOUND: Duration = Duration::from_secs(20);

/// Sends `sig` to the QEMU process (by its pid, which the VM checked is its own).
fn signal(vm: &QemuVm, sig: i32) {
    let pid = vm.pid().expect("QEMU pid");
    // SAFETY: kill(2) on the pid of the QEMU this test started; no memory is involved.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Resumes a SIGSTOPped QEMU when dropped, so a failing assertion never leaves it stopped
/// (the VM's own drop then kills it by pid).
struct ContOnDrop(Option<i32>);

impl Drop for ContOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // SAFETY: as in `signal`.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
}

/// A booted VM and the backends a manager uses. Drops the backends, then the VM (killed by
/// pid, its directory removed), then the disk images.
struct Fixture {
    host: Arc<QemuHost>,
    guest: Arc<QemuGuest>,
    vm: QemuVm,
    work: tempfile::TempDir,
}

async fn boot() -> Fixture {
    let dir = std::env::var_os("LUNLEDGER_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/guest"));
    let image = GuestImage::from_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
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
    let host = QemuHost::connect_with(vm.qmp_socket(), host_opts())
        .await
        .unwrap_or_else(|e| panic!("QMP: {e}"));
    let map = host
        .controller_map()
        .await
        .unwrap_or_else(|e| panic!("controllers: {e}"));
    let qga = vm.qga_socket().expect("qga socket");
    let guest = QemuGuest::connect_with(qga, map, guest_opts())
        .await
        .unwrap_or_else(|e| panic!("QGA: {e}"));
    Fixture {
        host: Arc::new(host),
        guest: Arc::new(guest),
        vm,
        work: tempfile::tempdir().expect("temp dir"),
    }
}

impl Fixture {
    /// `n` ext4 images of 32 MiB, formatted on the host.
    fn images(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let p = self.work.path().join(format!("disk{i}.img"));
                std::fs::File::create(&p)
                    .and_then(|f| f.set_len(32 << 20))
                    .expect("image");
                let ok = std::process::Command::new("mkfs.ext4")
                    .args(["-F", "-q"])
                    .arg(&p)
                    .status()
                    .expect("mkfs.ext4 (scripts/install-qemu.sh installs it)");
                assert!(ok.success(), "mkfs.ext4 failed");
                p.display().to_string()
            })
            .collect()
    }

    async fn open(&self) -> Manager {
        self.open_at(&self.work.path().join("journal")).await
    }

    async fn open_at(&self, journal: &Path) -> Manager {
        let host: Arc<dyn HostBackend> = self.host.clone();
        let guest: Arc<dyn GuestBackend> = self.guest.clone();
        Manager::open_with(journal, manager_opts(), host, guest)
            .await
            .unwrap_or_else(|e| panic!("open: {e}"))
    }

    /// The observer's check of the VM against the manager's state (second QMP monitor, raw
    /// guest-exec on the backend's agent connection: the agent serves one client).
    async fn observe(&self, m: &Manager, what: &str) {
        let mut seen = observer::host(&self.vm.aux_qmp_socket()).await;
        let out = self
            .guest
            .sh(observer::GUEST_SCRIPT, &[PREFIX])
            .await
            .unwrap_or_else(|e| panic!("{what}: observer guest-exec: {e}"));
        observer::parse_guest(&out.stdout, PREFIX, &mut seen);
        observer::assert_matches(&seen, &m.state(), what);
    }

    /// Waits (bounded) until the agent runs a command again.
    async fn wait_agent(&self) {
        let start = Instant::now();
        loop {
            match self.guest.sh("true", &[]).await {
                Ok(o) if o.success() => return,
                r => assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "the agent did not come back: {r:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Runs `fut`, failing the test if it takes longer than [`BOUND`]; returns its output and time.
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    match tokio::time::timeout(BOUND, fut).await {
        Ok(v) => (v, start.elapsed()),
        Err(_) => panic!("{what}: no answer within {BOUND:?} (a hang)"),
    }
}

/// The backend error of a failed step, checked to be `step`.
fn backend_error<T: std::fmt::Debug>(r: Result<T, Error>, step: Step, what: &str) -> BackendError {
    match r {
        Err(Error::Backend {
            step: s, source, ..
        }) if s == step => source,
        other => panic!("{what}: expected a {step} backend error, got {other:?}"),
    }
}

fn mounted() -> MountConfig {
    MountConfig::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn qemu_sigstopped_under_a_running_manager_then_resumed() {
    let fx = boot().await;
    let disks = fx.images(3);
    let m = fx.open().await;
    let h1 = m
        .add_virtual_disk(DiskRequest::new(&disks[0]).mount(mounted()))
        .await
        .unwrap_or_else(|e| panic!("add before the stop: {e}"));
    fx.observe(&m, "before the stop").await;

    signal(&fx.vm, libc::SIGSTOP);
    let mut cont = ContOnDrop(fx.vm.pid());

    // Host side: QMP does not answer. The error names the QMP command that timed out.
    let (r, took) = bounded(
        "add while QEMU is stopped",
        m.add_virtual_disk(DiskRequest::new(&disks[1])),
    )
    .await;
    eprintln!("add while stopped: {took:?}: {:?}", r.as_ref().err());
    match backend_error(r, Step::Attach, "add while stopped") {
        BackendError::Timeout { call, .. } => {
            assert!(
                call.starts_with("QMP "),
                "the error does not say QMP: {call}"
            )
        }
        other => panic!("add while stopped: expected a timeout, got {other:?}"),
    }

    // Guest side: the agent does not answer. The error names the agent and the script.
    let (r, took) = bounded("release while QEMU is stopped", h1.release()).await;
    eprintln!("release while stopped: {took:?}: {:?}", r.as_ref().err());
    match backend_error(r, Step::Unmount, "release while stopped") {
        BackendError::Timeout { call, .. } => assert!(
            call.starts_with("guest agent ") && call.contains("unmount"),
            "the error does not say guest agent / unmount: {call}"
        ),
        BackendError::Unavailable(msg) => assert!(
            msg.contains("qga.sock"),
            "the error does not name the agent's socket: {msg}"
        ),
        other => panic!("release while stopped: expected a timeout, got {other:?}"),
    }
    let (pending, _) = bounded("retry_teardowns while stopped", m.retry_teardowns()).await;
    eprintln!("teardowns pending while stopped: {pending:?}");

    // Resume. Whatever the stopped QEMU had queued runs now; nothing may be left behind.
    drop(cont);
    cont = ContOnDrop(None);
    fx.wait_agent().await;
    let (r, _) = bounded("release after resume", h1.release()).await;
    r.unwrap_or_else(|e| panic!("release after resume: {e}"));
    let (left, _) = bounded("retry_teardowns after resume", m.retry_teardowns()).await;
    assert_eq!(left.unwrap_or_else(|e| panic!("retry: {e}")), 0);
    assert!(m.state().is_empty(), "{:?}", m.state());
    fx.observe(&m, "after resume").await;

    // The same disks attach and mount again (no stale node, lock or mount in the way).
    for d in &disks {
        let h = m
            .add_virtual_disk(DiskRequest::new(d).mount(mounted()))
            .await
            .unwrap_or_else(|e| panic!("add after resume: {e}"));
        fx.observe(&m, "re-add after resume").await;
        h.release().await.expect("release");
    }
    fx.observe(&m, "the end").await;
    common::assert_replay_equals_live(&m).await;
    drop(cont);
    m.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn guest_agent_frozen_while_qmp_answers() {
    let fx = boot().await;
    let disks = fx.images(3);
    let m = fx.open().await;
    let h1 = m
        .add_virtual_disk(DiskRequest::new(&disks[0]).mount(mounted()))
        .await
        .unwrap_or_else(|e| panic!("add before the freeze: {e}"));

    // Freeze qemu-ga in the guest for 8 s (from a detached background job, since nothing can
    // reach the guest while the agent is stopped). Its environment is cleared, so it is not
    // taken for one of lunledger's own commands.
    let freeze = "p=$(pidof qemu-ga) || exit 1; \
        (sleep 0.5; kill -STOP $p; sleep 8; kill -CONT $p) </dev/null >/dev/null 2>&1 & echo $p";
    let out = fx.guest.sh(freeze, &[]).await.expect("freeze");
    assert!(out.success(), "{out:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // QMP still answers: an add without a guest step works.
    let (r, _) = bounded(
        "add without mount while the agent is frozen",
        m.add_virtual_disk(DiskRequest::new(&disks[1])),
    )
    .await;
    let h2 = r.unwrap_or_else(|e| panic!("add without mount while the agent is frozen: {e}"));

    // An add that mounts fails at the mount, saying the agent did not answer, and rolls back.
    let (r, took) = bounded(
        "add with mount while the agent is frozen",
        m.add_virtual_disk(DiskRequest::new(&disks[2]).mount(mounted())),
    )
    .await;
    eprintln!(
        "add with mount while frozen: {took:?}: {:?}",
        r.as_ref().err()
    );
    match backend_error(r, Step::Mount, "add with mount while frozen") {
        BackendError::Timeout { call, .. } => assert!(
            call.starts_with("guest agent "),
            "the error does not say guest agent: {call}"
        ),
        BackendError::Unavailable(msg) => assert!(
            msg.contains("qga.sock"),
            "the error does not name the agent's socket: {msg}"
        ),
        other => panic!("add with mount while frozen: expected a timeout, got {other:?}"),
    }
    // Releasing a mounted disk needs the agent too.
    let (r, _) = bounded("release while the agent is frozen", h1.release()).await;
    assert!(r.is_err(), "a release needing the frozen agent succeeded");

    fx.wait_agent().await;
    for h in [&h1, &h2] {
        let (r, _) = bounded("release after the thaw", h.release()).await;
        r.unwrap_or_else(|e| panic!("release after the thaw: {e}"));
    }
    let (left, _) = bounded("retry_teardowns after the thaw", m.retry_teardowns()).await;
    assert_eq!(left.unwrap_or_else(|e| panic!("retry: {e}")), 0);
    // Give a command the frozen agent had queued time to run, then look.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(m.state().is_empty(), "{:?}", m.state());
    fx.observe(&m, "after the thaw").await;
    common::assert_replay_equals_live(&m).await;
    m.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn qemu_killed_under_a_running_manager() {
    let fx = boot().await;
    let disks = fx.images(3);
    let m = fx.open().await;
    let h1 = m
        .add_virtual_disk(DiskRequest::new(&disks[0]).mount(mounted()))
        .await
        .unwrap_or_else(|e| panic!("add before the kill: {e}"));
    // Held through the kill: what the journal holds and the gone VM lost.
    let h2 = m
        .add_virtual_disk(DiskRequest::new(&disks[2]))
        .await
        .unwrap_or_else(|e| panic!("attach-only add before the kill: {e}"));
    let held_slot = h2.slot();
    let pid = fx.vm.pid().expect("pid");
    signal(&fx.vm, libc::SIGKILL);
    let start = Instant::now();
    while lunledger::demo::vm::pid_alive(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "QEMU survived SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (r, took) = bounded(
        "add after QEMU died",
        m.add_virtual_disk(DiskRequest::new(&disks[1]).mount(mounted())),
    )
    .await;
    eprintln!("add after the kill: {took:?}: {:?}", r.as_ref().err());
    match backend_error(r, Step::Attach, "add after the kill") {
        BackendError::Unavailable(msg) => assert!(
            msg.contains("qmp.sock"),
            "the error does not name the QMP socket: {msg}"
        ),
        other => panic!("add after the kill: expected unavailable, got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(5),
        "a dead QEMU took {took:?} to notice"
    );

    let (r, took) = bounded("release after QEMU died", h1.release()).await;
    eprintln!("release after the kill: {took:?}: {:?}", r.as_ref().err());
    match backend_error(r, Step::Unmount, "release after the kill") {
        BackendError::Unavailable(msg) => assert!(
            msg.contains("qga.sock"),
            "the error does not name the agent's socket: {msg}"
        ),
        other => panic!("release after the kill: expected unavailable, got {other:?}"),
    }
    let (r, _) = bounded("retry_teardowns after QEMU died", m.retry_teardowns()).await;
    assert!(
        r.as_ref().is_ok_and(|n| *n > 0),
        "teardowns of a dead VM cannot have succeeded: {r:?}"
    );
    // The journal is intact and consistent; the manager closes without waiting on the VM.
    common::assert_replay_equals_live(&m).await;
    let (r, _) = bounded("close after QEMU died", m.close()).await;
    r.expect("close");

    // The shim knows the VM is gone for good: it settles the journal explicitly with GoneVm.
    // Recovery reports what the journal held as missing (the attach-only disk), finishes the
    // failed release (its teardown is run again: a teardown whose outcome may not have been
    // durable is expected to be gone from the VM, so it is not drift), and the journal ends
    // empty.
    let gone = Arc::new(lunledger::backend::gone::GoneVm::new(format!(
        "QEMU pid {pid} was killed"
    )));
    let host: Arc<dyn HostBackend> = gone.clone();
    let guest: Arc<dyn GuestBackend> = gone;
    let journal = fx.work.path().join("journal");
    let (r, _) = bounded(
        "open with the VM gone",
        Manager::open_with(&journal, manager_opts(), host, guest),
    )
    .await;
    let m = r.unwrap_or_else(|e| panic!("open with the VM gone: {e}"));
    let report = m.last_recovery().expect("report");
    eprintln!("recovery with the VM gone: drift {:?}", report.drift);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(
        report.drift.iter().any(|d| matches!(
            d,
            lunledger::model::Drift::MissingAttachment { slot } if *slot == held_slot
        )),
        "the held attachment the VM lost is not reported: {:?}",
        report.drift
    );
    assert!(
        !report.drift.iter().any(|d| matches!(
            d,
            lunledger::model::Drift::MissingAttachment { slot } if *slot == h1.slot()
        )),
        "the failed release's teardown is reported as drift: {:?}",
        report.drift
    );
    let live: Vec<_> = m.handles().iter().map(|h| h.slot()).collect();
    assert_eq!(live, vec![held_slot], "the failed release was not finished");
    for h in m.handles() {
        h.release().await.unwrap_or_else(|e| panic!("release: {e}"));
    }
    let st = m.state();
    assert!(st.is_empty(), "the journal is not clean: {st:?}");
    let e = match m.add_virtual_disk(DiskRequest::new(&disks[1])).await {
        Err(e) => e,
        Ok(_) => panic!("an add on a gone VM succeeded"),
    };
    assert!(e.to_string().contains("the VM is gone"), "{e}");
    common::assert_replay_equals_live(&m).await;
    m.close().await.expect("close");

    // Between shim runs: connecting to the dead VM is a typed, prompt error.
    let (r, took) = bounded(
        "connect to a dead QEMU",
        QemuHost::connect_with(fx.vm.qmp_socket(), host_opts()),
    )
    .await;
    match r {
        Err(BackendError::Unavailable(msg)) => {
            assert!(msg.contains("QEMU is gone"), "{msg}")
        }
        Err(e) => panic!("connect to a dead QEMU: expected unavailable, got {e:?}"),
        Ok(_) => panic!("connected to a dead QEMU"),
    }
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// The VM dies between two runs of the shim and the shim comes back on a new VM with the same
/// journal: recovery must say what the journal held that the new VM lacks (drift), take none of
/// it as still attached or mounted, and act on the new VM only for new work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn qemu_killed_between_shim_runs_then_a_new_vm() {
    use lunledger::model::Drift;
    let shared = tempfile::tempdir().expect("temp dir");
    let journal = shared.path().join("journal");
    let (disks, slots, mount_path) = {
        let fx = boot().await;
        let disks: Vec<String> = fx
            .images(2)
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let to = shared.path().join(format!("d{i}.img"));
                std::fs::rename(&p, &to).expect("move image");
                to.display().to_string()
            })
            .collect();
        let m = fx.open_at(&journal).await;
        let h1 = m
            .add_virtual_disk(DiskRequest::new(&disks[0]).mount(mounted()))
            .await
            .expect("add");
        let h2 = m
            .add_virtual_disk(DiskRequest::new(&disks[1]))
            .await
            .expect("add");
        let slots = vec![h1.slot(), h2.slot()];
        let mount_path = h1.guest_path().to_string();
        m.close().await.expect("close");
        signal(&fx.vm, libc::SIGKILL);
        (disks, slots, mount_path)
        // fx drops: the dead VM's directory goes.
    };

    let fx = boot().await;
    let (m, took) = bounded("open on a new VM", fx.open_at(&journal)).await;
    eprintln!("open on the new VM: {took:?}");
    let report = m.last_recovery().expect("report");
    eprintln!("drift: {:?}", report.drift);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for slot in &slots {
        assert!(
            report
                .drift
                .iter()
                .any(|d| matches!(d, Drift::MissingAttachment { slot: s } if s == slot)),
            "the missing attachment at {slot} is not reported: {:?}",
            report.drift
        );
    }
    assert!(
        report
            .drift
            .iter()
            .any(|d| matches!(d, Drift::MissingMount { path, .. } if *path == mount_path)),
        "the missing mount is not reported: {:?}",
        report.drift
    );
    let (need_slots, need_paths) = m.state().needed_on_vm();
    assert!(
        need_slots.is_empty() && need_paths.is_empty(),
        "the journal still takes the old VM's disks as attached: {need_slots:?} {need_paths:?}"
    );
    fx.observe(&m, "new VM after recovery").await;

    // The old handles are released without touching the new VM.
    for h in m.handles() {
        let (r, _) = bounded("release an old VM's handle", h.release()).await;
        r.unwrap_or_else(|e| panic!("release an old VM's handle: {e}"));
    }
    assert!(m.state().is_empty(), "{:?}", m.state());
    fx.observe(&m, "new VM after releasing the old handles")
        .await;

    // New work on the new VM.
    let h = m
        .add_virtual_disk(DiskRequest::new(&disks[0]).mount(mounted()))
        .await
        .unwrap_or_else(|e| panic!("add on the new VM: {e}"));
    fx.observe(&m, "new VM with a new disk").await;
    h.release().await.expect("release");
    fx.observe(&m, "new VM at the end").await;
    common::assert_replay_equals_live(&m).await;
    m.close().await.expect("close");
}
