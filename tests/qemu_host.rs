//! QEMU tier without a guest: the host backend over real QMP against `qemu-system-x86_64 -S`.
//!
//! Run: `cargo test --features qemu-tests --test qemu_host` (after scripts/install-qemu.sh).
//! Without the feature these tests are ignored; with it, a missing QEMU fails them.

use lunledger::backend::qemu::{names, QemuError, QemuHost, QmpClient};
use lunledger::backend::{AttachRequest, BackendError, DetachRequest, HostAttachment, HostBackend};
use lunledger::demo::vm::{QemuVm, QemuVmOptions};
use lunledger::model::{AttachId, DiskKind, DiskSpec, Slot};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "LL_QEMU_CHILD_QMP";
const CHILD_DIR_ENV: &str = "LL_QEMU_CHILD_DIR";

/// A VM plus a temp dir for its disks; both are cleaned up on drop, also when a test panics.
struct Fixture {
    vm: QemuVm,
    disks: tempfile::TempDir,
}

async fn start(controllers: u32) -> Fixture {
    let vm = QemuVm::start(QemuVmOptions {
        controllers,
        ..QemuVmOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    vm.wait_ready(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Fixture {
        vm,
        disks: tempfile::tempdir().expect("temp dir"),
    }
}

impl Fixture {
    fn raw_disk(&self, name: &str) -> PathBuf {
        raw_disk(self.disks.path(), name)
    }

    async fn host(&self) -> QemuHost {
        QemuHost::connect(self.vm.qmp_socket())
            .await
            .expect("connect QMP")
    }

    /// A client on the second monitor, to observe while the backend holds the first.
    async fn observer(&self) -> QmpClient {
        QmpClient::connect(self.vm.aux_qmp_socket(), Duration::from_secs(5))
            .await
            .expect("aux QMP")
    }
}

fn raw_disk(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).expect("create disk");
    f.set_len(1 << 20).expect("size disk");
    p
}

fn attach_req(slot: Slot, attach: AttachId, path: &Path, read_only: bool) -> AttachRequest {
    AttachRequest {
        slot,
        attach,
        disk: DiskSpec {
            path: path.display().to_string(),
            read_only,
            kind: DiskKind::VirtualDisk,
            evd_type: None,
        },
    }
}

async fn node_names(q: &mut QmpClient) -> Vec<String> {
    let v = q
        .execute("query-named-block-nodes", Some(json!({"flat": true})))
        .await
        .expect("nodes");
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.get("node-name").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn complete(view: &[HostAttachment]) -> Vec<(Slot, Option<AttachId>)> {
    view.iter()
        .filter(|a| a.complete)
        .map(|a| (a.slot, a.attach))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn attach_and_detach_4x64_disks() {
    let t0 = Instant::now();
    let fx = start(4).await;
    let host = fx.host().await;
    let mut reqs = Vec::new();
    for c in 0..4u32 {
        for l in 0..64u32 {
            let attach = u64::from(c * 64 + l + 1);
            reqs.push(attach_req(
                Slot::new(c, l),
                attach,
                &fx.raw_disk(&format!("d{c}-{l}.raw")),
                false,
            ));
        }
    }
    for r in &reqs {
        host.attach(r).await.expect("attach");
    }
    let attached = t0.elapsed();
    // Retrying every attach is a no-op.
    let t1 = Instant::now();
    for r in &reqs {
        host.attach(r).await.expect("idempotent attach");
    }
    let retried = t1.elapsed();
    let view = host.inspect().await.expect("inspect").attachments;
    assert_eq!(view.len(), 256);
    for (a, r) in view.iter().zip(&reqs) {
        assert_eq!(
            (a.slot, a.attach, a.complete),
            (r.slot, Some(r.attach), true)
        );
        assert_eq!(a.path.as_deref(), Some(r.disk.path.as_str()));
        assert_eq!(a.read_only, Some(false));
    }
    let t2 = Instant::now();
    for r in &reqs {
        host.detach(&DetachRequest {
            slot: r.slot,
            attach: r.attach,
        })
        .await
        .expect("detach");
    }
    let detached = t2.elapsed();
    assert!(host
        .inspect()
        .await
        .expect("inspect")
        .attachments
        .is_empty());
    assert!(
        node_names(&mut fx.observer().await).await.is_empty(),
        "block nodes left behind"
    );
    // Detaching what is gone succeeds.
    host.detach(&DetachRequest {
        slot: reqs[0].slot,
        attach: reqs[0].attach,
    })
    .await
    .expect("again");
    eprintln!(
        "256 attaches (incl. start): {attached:?}, 256 retried: {retried:?}, 256 detaches: \
         {detached:?}; whole test: {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn attach_errors_are_typed_and_leave_nothing_behind() {
    let fx = start(2).await;
    let host = fx.host().await;
    let d = fx.raw_disk("a.raw");
    host.attach(&attach_req(Slot::new(0, 1), 10, &d, false))
        .await
        .expect("attach");

    // Another attachment at a taken slot: a conflict, rolled back.
    let other = fx.raw_disk("b.raw");
    let e = host
        .attach(&attach_req(Slot::new(0, 1), 11, &other, false))
        .await
        .unwrap_err();
    assert!(
        matches!(e, BackendError::Failed(ref m) if m.contains("taken")),
        "{e:?}"
    );
    // The same attach id for another disk: a conflict.
    let e = host
        .attach(&attach_req(Slot::new(0, 1), 10, &other, false))
        .await
        .unwrap_err();
    assert!(
        matches!(e, BackendError::Failed(ref m) if m.contains("conflict")),
        "{e:?}"
    );
    // The same attach id at another slot: a conflict.
    let e = host
        .attach(&attach_req(Slot::new(1, 1), 10, &d, false))
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::Failed(_)), "{e:?}");
    // A controller the VM lacks: QEMU refuses, rolled back.
    let e = host
        .attach(&attach_req(Slot::new(5, 0), 12, &other, false))
        .await
        .unwrap_err();
    assert!(
        matches!(e, BackendError::Failed(ref m) if m.contains("scsi5")),
        "{e:?}"
    );
    // LUN >= 256: typed, before QEMU is asked.
    let e = host
        .attach(&attach_req(Slot::new(0, 256), 13, &other, false))
        .await
        .unwrap_err();
    assert!(
        matches!(e, BackendError::Unsupported(ref m) if m.contains("LUN 256")),
        "{e:?}"
    );
    // A missing disk file names the path.
    let missing = fx.disks.path().join("missing.raw");
    let e = host
        .attach(&attach_req(Slot::new(0, 2), 14, &missing, false))
        .await
        .unwrap_err();
    assert!(
        matches!(e, BackendError::Failed(ref m) if m.contains("missing.raw")),
        "{e:?}"
    );
    // A relative path would be resolved by QEMU, against its own working directory.
    let e = host
        .attach(&attach_req(
            Slot::new(0, 2),
            16,
            Path::new("rel.raw"),
            false,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(e, BackendError::Unsupported(ref m) if m.contains("relative")),
        "{e:?}"
    );
    // An EVD has no QEMU equivalent.
    let mut evd = attach_req(Slot::new(0, 3), 15, &other, false);
    evd.disk.kind = DiskKind::ExtensibleVirtualDisk;
    evd.disk.evd_type = Some("space".into());
    assert!(matches!(
        host.attach(&evd).await,
        Err(BackendError::Unsupported(_))
    ));

    let view = host.inspect().await.expect("inspect").attachments;
    assert_eq!(complete(&view), vec![(Slot::new(0, 1), Some(10))]);
    assert_eq!(view.len(), 1, "a failed attach left something: {view:?}");
    let nodes = node_names(&mut fx.observer().await).await;
    assert!(
        nodes
            .iter()
            .all(|n| n == "ll-a10" || n.starts_with("ll-fa.")),
        "{nodes:?}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn read_only_and_qcow2_disks() {
    let fx = start(1).await;
    let host = fx.host().await;
    let raw = fx.raw_disk("ro.raw");
    host.attach(&attach_req(Slot::new(0, 0), 1, &raw, true))
        .await
        .expect("read-only attach");
    let qcow = fx.disks.path().join("q.qcow2");
    let st = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&qcow)
        .arg("8M")
        .status()
        .unwrap_or_else(|e| panic!("qemu-img missing ({e}): run scripts/install-qemu.sh"));
    assert!(st.success());
    host.attach(&attach_req(Slot::new(0, 1), 2, &qcow, false))
        .await
        .expect("qcow2 attach");
    let view = host.inspect().await.expect("inspect").attachments;
    assert_eq!(view.len(), 2);
    assert_eq!(view[0].read_only, Some(true));
    assert_eq!(view[1].read_only, Some(false));
    let blocks = fx
        .observer()
        .await
        .execute("query-block", None)
        .await
        .expect("query-block");
    let drv: Vec<&str> = blocks
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|b| b.pointer("/inserted/drv").and_then(Value::as_str))
        .collect();
    assert_eq!(drv, vec!["raw", "qcow2"]);
}

#[tokio::test]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn inspect_after_reconnect_and_detach_of_absent() {
    let fx = start(2).await;
    let before = {
        let host = fx.host().await;
        for (i, slot) in [Slot::new(0, 0), Slot::new(1, 63), Slot::new(1, 255)]
            .into_iter()
            .enumerate()
        {
            let attach = 100 + i as u64;
            host.attach(&attach_req(
                slot,
                attach,
                &fx.raw_disk(&format!("r{i}")),
                false,
            ))
            .await
            .expect("attach");
        }
        host.inspect().await.expect("inspect")
    };
    // The first client is gone (dropped): a new one sees the same thing.
    let host = fx.host().await;
    let after = host.inspect().await.expect("inspect");
    assert_eq!(before, after);
    assert_eq!(after.attachments.len(), 3);
    // Never attached, or attached under another id: nothing to do, success.
    host.detach(&DetachRequest {
        slot: Slot::new(0, 5),
        attach: 999,
    })
    .await
    .expect("absent");
    host.detach(&DetachRequest {
        slot: Slot::new(0, 0),
        attach: 101,
    })
    .await
    .expect("other id");
    assert_eq!(host.inspect().await.expect("inspect"), after);
}

#[tokio::test]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn foreign_devices_are_reported_without_attach_id() {
    let fx = start(1).await;
    let host = fx.host().await;
    let d = fx.raw_disk("f.raw");
    let mut q = fx.observer().await;
    q.execute(
        "blockdev-add",
        Some(json!({"driver": "raw", "node-name": "foreign",
        "file": {"driver": "file", "filename": d.display().to_string()}})),
    )
    .await
    .expect("blockdev-add");
    q.execute(
        "device_add",
        Some(json!({"driver": "scsi-hd", "id": "hd-x", "bus": "scsi0.0",
        "scsi-id": 0, "lun": 9, "drive": "foreign"})),
    )
    .await
    .expect("device_add");
    let view = host.inspect().await.expect("inspect").attachments;
    assert_eq!(view.len(), 1);
    assert_eq!(
        (view[0].slot, view[0].attach, view[0].complete),
        (Slot::new(0, 9), None, true)
    );
    // Our detach never touches it.
    host.detach(&DetachRequest {
        slot: Slot::new(0, 9),
        attach: 1,
    })
    .await
    .expect("detach");
    assert_eq!(host.inspect().await.expect("inspect").attachments.len(), 1);
}

#[tokio::test]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn half_done_attach_is_incomplete_and_detach_or_retry_settles_it() {
    let fx = start(2).await;
    let host = fx.host().await;
    let mut q = fx.observer().await;
    // What a client killed between blockdev-add and device_add leaves behind.
    for (attach, slot) in [(7u64, Slot::new(1, 3)), (8, Slot::new(0, 4))] {
        let d = fx.raw_disk(&format!("h{attach}"));
        q.execute(
            "blockdev-add",
            Some(
                json!({"driver": "raw", "node-name": names::node_name(attach),
            "file": {"driver": "file", "filename": d.display().to_string(),
                     "node-name": names::file_node_name(attach, slot)}}),
            ),
        )
        .await
        .expect("blockdev-add");
    }
    let view = host.inspect().await.expect("inspect").attachments;
    let got: Vec<_> = view
        .iter()
        .map(|a| (a.slot, a.attach, a.complete))
        .collect();
    assert_eq!(
        got,
        vec![
            (Slot::new(0, 4), Some(8), false),
            (Slot::new(1, 3), Some(7), false)
        ]
    );
    // Recovery either rolls back ...
    host.detach(&DetachRequest {
        slot: Slot::new(1, 3),
        attach: 7,
    })
    .await
    .expect("detach");
    // ... or retries the attach, which completes it.
    let d8 = fx.disks.path().join("h8");
    host.attach(&attach_req(Slot::new(0, 4), 8, &d8, false))
        .await
        .expect("retry attach");
    let view = host.inspect().await.expect("inspect").attachments;
    assert_eq!(complete(&view), vec![(Slot::new(0, 4), Some(8))]);
    assert_eq!(view.len(), 1);
    assert!(!node_names(&mut q)
        .await
        .iter()
        .any(|n| n.contains("ll-a7") || n.starts_with("ll-f7.")));
}

#[tokio::test]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn unplug_in_progress_and_qemu_gone() {
    let mut fx = start(1).await;
    let host = fx.host().await;
    let d = fx.raw_disk("g.raw");
    host.attach(&attach_req(Slot::new(0, 0), 1, &d, false))
        .await
        .expect("attach");
    // device_del from elsewhere, not waited for: detach must still finish the job.
    fx.observer()
        .await
        .execute("device_del", Some(json!({"id": names::device_id(1)})))
        .await
        .expect("del");
    host.detach(&DetachRequest {
        slot: Slot::new(0, 0),
        attach: 1,
    })
    .await
    .expect("detach");
    assert!(host
        .inspect()
        .await
        .expect("inspect")
        .attachments
        .is_empty());
    fx.vm.stop().expect("stop");
    let e = host.inspect().await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable(_)), "{e:?}");
    let e = QemuHost::connect(fx.vm.qmp_socket())
        .await
        .expect_err("no QEMU");
    assert!(
        matches!(e, BackendError::Unavailable(ref m) if m.contains("gone")),
        "{e:?}"
    );
}

/// The child half of `kill_9_mid_attach`: attaches disks as fast as it can until killed. A
/// no-op unless started by that test.
#[tokio::test]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn child_attach_loop() {
    let (Ok(sock), Ok(dir)) = (std::env::var(CHILD_ENV), std::env::var(CHILD_DIR_ENV)) else {
        return;
    };
    let host = QemuHost::connect(&sock).await.expect("child connect");
    for i in 0..256u32 {
        let slot = Slot::new(i / 64, i % 64);
        let d = raw_disk(Path::new(&dir), &format!("c{i}"));
        host.attach(&attach_req(slot, u64::from(i) + 1, &d, false))
            .await
            .expect("child attach");
        println!("ATTACHED {i}");
    }
    // Stay connected until killed.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn kill_9_mid_attach_then_a_new_client_inspects_and_cleans_up() {
    use tokio::io::AsyncBufReadExt;
    let fx = start(4).await;
    let exe = std::env::current_exe().expect("test binary");
    let mut child = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "child_attach_loop",
            "--nocapture",
            "--include-ignored",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, fx.vm.qmp_socket())
        .env(CHILD_DIR_ENV, fx.disks.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn child");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    // Let it get some way in, then SIGKILL it mid-stream.
    let mut n = 0;
    while let Some(line) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("child progress")
        .expect("read child")
    {
        if line.starts_with("ATTACHED") {
            n += 1;
            if n == 40 {
                break;
            }
        }
    }
    assert_eq!(n, 40, "child stopped early");
    child.start_kill().expect("kill -9");
    child.wait().await.expect("reap child");

    let host = fx.host().await;
    let view = host.inspect().await.expect("inspect").attachments;
    assert!(view.len() >= 40, "{view:?}");
    for a in &view {
        let attach = a.attach.expect("ours");
        assert_eq!(
            a.slot,
            Slot::new((attach as u32 - 1) / 64, (attach as u32 - 1) % 64)
        );
    }
    for a in &view {
        host.detach(&DetachRequest {
            slot: a.slot,
            attach: a.attach.unwrap_or(0),
        })
        .await
        .expect("detach");
    }
    assert!(host
        .inspect()
        .await
        .expect("inspect")
        .attachments
        .is_empty());
    assert!(node_names(&mut fx.observer().await).await.is_empty());
    eprintln!(
        "child got {n}+ attaches in before kill; recovered {} attachments",
        view.len()
    );
}

#[tokio::test]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn qmp_client_is_alone_on_its_monitor_and_reconnects_after_qemu_restarts() {
    let links = tempfile::tempdir().expect("temp dir");
    let link = links.path().join("qmp.sock");
    let first = start(1).await;
    std::os::unix::fs::symlink(first.vm.qmp_socket(), &link).expect("symlink");
    let mut q = QmpClient::connect(&link, Duration::from_secs(5))
        .await
        .expect("connect");
    assert!(q.greeting().is_some());
    q.execute("query-status", None).await.expect("query-status");
    // QEMU serves one client per monitor: a second one gets no greeting.
    let e = QmpClient::connect(&link, Duration::from_millis(500))
        .await
        .expect_err("busy");
    assert!(matches!(e, QemuError::NoHandshake { .. }), "{e:?}");
    // QEMU goes away: a typed connection error, not a hang.
    drop(first);
    let e = q.execute("query-status", None).await.unwrap_err();
    assert!(e.is_connection(), "{e:?}");
    // A new QEMU behind the same path: the same client carries on.
    let second = start(1).await;
    std::fs::remove_file(&link).expect("unlink");
    std::os::unix::fs::symlink(second.vm.qmp_socket(), &link).expect("symlink");
    let st = q
        .execute("query-status", None)
        .await
        .expect("after restart");
    assert_eq!(st.get("status").and_then(Value::as_str), Some("prelaunch"));
    // An unknown command is a typed command error, and the connection stays usable.
    let e = q.execute("no-such-command", None).await.unwrap_err();
    assert!(e.is_class("CommandNotFound"), "{e:?}");
    q.execute("query-status", None).await.expect("still usable");
}

/// A configuration naming more controllers than the VM has is refused at open, with an error
/// that says which are missing, before the journal is created; one that fits opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn open_refuses_a_configuration_naming_controllers_the_vm_lacks() {
    use lunledger::backend::sim::SimVm;
    use lunledger::model::ManagerConfig;
    use lunledger::{Error, Manager};
    use std::sync::Arc;

    let fx = start(2).await;
    let sim = SimVm::new();
    let open = |config: ManagerConfig, dir: PathBuf| {
        let qmp = fx.vm.qmp_socket();
        let guest = sim.guest_backend();
        async move {
            let host: Arc<dyn HostBackend> = Arc::new(QemuHost::connect(qmp).await.expect("QMP"));
            Manager::open(dir, config, host, guest).await
        }
    };
    // lcow_default: 4 controllers, on a VM with 2.
    let journal = fx.disks.path().join("journal-4");
    match open(ManagerConfig::lcow_default(), journal.clone()).await {
        Err(Error::VmMismatch { side, what }) => {
            assert_eq!(side, "host");
            assert!(what.contains("no scsi2, scsi3"), "{what}");
        }
        Err(e) => panic!("expected VmMismatch, got {e}"),
        Ok(_) => panic!("opened 4 controllers on a VM with 2"),
    }
    assert!(!journal.exists(), "a refused open created the journal");
    // LUNs the guest cannot address are refused too.
    let too_many_luns = ManagerConfig {
        controllers: 1,
        luns_per_controller: 300,
        ..ManagerConfig::lcow_default()
    };
    let r = open(too_many_luns, fx.disks.path().join("journal-luns")).await;
    assert!(
        matches!(&r, Err(Error::VmMismatch { what, .. }) if what.contains("LUNs 0..255")),
        "{:?}",
        r.err()
    );
    // What the VM has opens.
    let fits = ManagerConfig {
        controllers: 2,
        ..ManagerConfig::lcow_default()
    };
    let m = open(fits, fx.disks.path().join("journal-2"))
        .await
        .unwrap_or_else(|e| panic!("open with 2 controllers: {e}"));
    m.close().await.expect("close");
}
