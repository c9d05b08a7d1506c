//! QEMU tier with a guest: a Debian cloud kernel and a busybox + qemu-ga initramfs under TCG.
//! The host backend hot-plugs, the guest backend mounts through the agent.
//!
//! Run: `scripts/build-guest.sh && cargo test --features qemu-tests --test qemu_guest` (after
//! scripts/install-qemu.sh). The image is read from `$LUNLEDGER_GUEST_DIR` or `target/guest`.
//! Without the feature these tests are ignored; with it, a missing QEMU or image fails them.

use lunledger::backend::qemu::{QemuGuest, QemuHost, QmpClient};
use lunledger::backend::{
    AttachRequest, BackendError, DetachRequest, GuestBackend, HostBackend, MountRequest,
};
use lunledger::demo::vm::{GuestImage, QemuVm, QemuVmOptions};
use lunledger::model::{AttachId, DiskKind, DiskSpec, MountSpec, Slot};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Two cores: at most two booted guests at a time.
static GUESTS: Semaphore = Semaphore::const_new(2);

/// A booted VM with both backends, and a temp dir of disk images. Fields drop in order: the
/// backends, then the VM (stopped by pid), then the disks, then the permit.
struct Fixture {
    host: QemuHost,
    guest: QemuGuest,
    vm: QemuVm,
    disks: tempfile::TempDir,
    _permit: SemaphorePermit<'static>,
}

fn guest_image() -> GuestImage {
    let dir = std::env::var_os("LUNLEDGER_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/guest"));
    GuestImage::from_dir(&dir).unwrap_or_else(|e| panic!("{e}"))
}

async fn boot() -> Fixture {
    let permit = GUESTS.acquire().await.expect("semaphore");
    let t0 = Instant::now();
    let opts = QemuVmOptions {
        controllers: 2,
        guest: Some(guest_image()),
        ..Default::default()
    };
    let vm = QemuVm::start(opts)
        .await
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    vm.wait_ready(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("guest ready in {:?}", t0.elapsed());
    let host = QemuHost::connect(vm.qmp_socket()).await.expect("QMP");
    let controllers = host.controller_map().await.expect("controller map");
    assert_eq!(controllers.controllers.len(), 2, "{controllers:?}");
    let qga = vm.qga_socket().expect("qga socket");
    let guest = QemuGuest::connect(qga, controllers).await.expect("QGA");
    Fixture {
        host,
        guest,
        vm,
        disks: tempfile::tempdir().expect("temp dir"),
        _permit: permit,
    }
}

impl Fixture {
    /// A sparse image of `mib` MiB, formatted ext4 on the host when `ext4`.
    fn image(&self, name: &str, mib: u64, ext4: bool) -> PathBuf {
        let p = self.disks.path().join(name);
        std::fs::File::create(&p)
            .expect("create")
            .set_len(mib << 20)
            .expect("size");
        if ext4 {
            let st = std::process::Command::new("mkfs.ext4")
                .args(["-F", "-q"])
                .arg(&p)
                .status()
                .unwrap_or_else(|e| panic!("mkfs.ext4 missing ({e}): run scripts/install-qemu.sh"));
            assert!(st.success(), "mkfs.ext4 failed");
        }
        p
    }

    async fn attach(&self, slot: Slot, attach: AttachId, path: &Path, read_only: bool) {
        let req = AttachRequest {
            slot,
            attach,
            disk: DiskSpec {
                path: path.display().to_string(),
                read_only,
                kind: DiskKind::VirtualDisk,
                evd_type: None,
            },
        };
        self.host.attach(&req).await.expect("attach");
    }

    /// Runs a shell snippet in the guest; returns (exit code, stdout, stderr).
    async fn sh(&self, script: &str) -> (i64, String, String) {
        let out = self.guest.sh(script, &[]).await.expect("guest-exec");
        (out.exit_code.unwrap_or(-1), out.stdout, out.stderr)
    }
}

fn mount_req(
    slot: Slot,
    attach: AttachId,
    mount: u64,
    path: &str,
    spec: MountSpec,
) -> MountRequest {
    MountRequest {
        slot,
        attach,
        mount,
        path: path.to_string(),
        spec,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn mount_write_teardown_reattach_read_back() {
    let t0 = Instant::now();
    let fx = boot().await;
    let slot = Slot::new(1, 5);
    let img = fx.image("data.ext4", 32, true);
    fx.attach(slot, 1, &img, false).await;
    let m = mount_req(slot, 1, 1, "/mnt/a", MountSpec::default());
    fx.guest.mount(&m).await.expect("mount");
    fx.guest.mount(&m).await.expect("mount again is a no-op");
    let (rc, _, err) = fx.sh("echo hello-lunledger > /mnt/a/f && sync").await;
    assert_eq!(rc, 0, "{err}");

    let view = fx.guest.inspect().await.expect("guest inspect");
    assert_eq!(view.devices, vec![slot]);
    assert_eq!(view.mounts.len(), 1);
    assert_eq!(
        (view.mounts[0].path.as_str(), view.mounts[0].slot),
        ("/mnt/a", Some(slot))
    );

    fx.guest.unmount(&m).await.expect("unmount");
    fx.guest.unmount(&m).await.expect("unmount again");
    fx.guest.unplug(slot).await.expect("unplug");
    fx.guest.unplug(slot).await.expect("unplug again");
    fx.host
        .detach(&DetachRequest { slot, attach: 1 })
        .await
        .expect("detach");
    assert!(fx
        .host
        .inspect()
        .await
        .expect("host inspect")
        .attachments
        .is_empty());
    let view = fx.guest.inspect().await.expect("guest inspect");
    assert!(
        view.devices.is_empty() && view.mounts.is_empty(),
        "{view:?}"
    );

    // A new generation at the same slot (a new serial): the guest must find it again, even
    // though the old device was deleted in the guest.
    fx.attach(slot, 2, &img, false).await;
    let m2 = mount_req(slot, 2, 2, "/mnt/b", MountSpec::default());
    fx.guest.mount(&m2).await.expect("mount again");
    let (rc, out, err) = fx.sh("cat /mnt/b/f").await;
    assert_eq!((rc, out.trim()), (0, "hello-lunledger"), "{err}");
    // Mounting the old generation's id at the slot is refused: the serial says it is not ours.
    let stale = mount_req(slot, 1, 3, "/mnt/c", MountSpec::default());
    let e = fx.guest.mount(&stale).await.unwrap_err();
    assert!(
        matches!(e, BackendError::Failed(ref s) if s.contains("serial")),
        "{e:?}"
    );
    // Unplug refuses while mounted (a surprise removal would leave a zombie mount).
    assert!(fx.guest.unplug(slot).await.is_err());
    fx.guest.unmount(&m2).await.expect("unmount");
    fx.guest.unplug(slot).await.expect("unplug");
    fx.host
        .detach(&DetachRequest { slot, attach: 2 })
        .await
        .expect("detach");
    eprintln!("test took {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn block_device_ensure_filesystem_and_read_only() {
    let t0 = Instant::now();
    let fx = boot().await;
    let slot = Slot::new(0, 3);
    let blank = fx.image("blank.raw", 16, false);
    fx.attach(slot, 7, &blank, false).await;

    // Block-device "mount": a link at the guest path.
    let spec = MountSpec {
        block_dev: true,
        ..MountSpec::default()
    };
    let b = mount_req(slot, 7, 1, "/run/blk/d7", spec);
    fx.guest.mount(&b).await.expect("link");
    fx.guest.mount(&b).await.expect("link again");
    let (rc, _, err) = fx.sh("test -b \"$(readlink -f /run/blk/d7)\"").await;
    assert_eq!(rc, 0, "{err}");
    let view = fx.guest.inspect().await.expect("inspect");
    let links: Vec<_> = view
        .mounts
        .iter()
        .filter(|m| m.block_dev)
        .map(|m| (m.path.as_str(), m.slot))
        .collect();
    assert_eq!(links, vec![("/run/blk/d7", Some(slot))]);
    fx.guest.unmount(&b).await.expect("unlink");
    let (rc, _, _) = fx.sh("test -e /run/blk/d7").await;
    assert_ne!(rc, 0, "link still there");

    // ensure_filesystem formats a blank disk.
    let spec = MountSpec {
        ensure_filesystem: true,
        ..MountSpec::default()
    };
    let f = mount_req(slot, 7, 2, "/mnt/fmt", spec);
    fx.guest.mount(&f).await.expect("format + mount");
    let (rc, _, err) = fx.sh("echo x > /mnt/fmt/y && cat /mnt/fmt/y").await;
    assert_eq!(rc, 0, "{err}");
    fx.guest.unmount(&f).await.expect("unmount");

    // Read-only mount refuses writes but reads.
    let spec = MountSpec {
        read_only: true,
        ..MountSpec::default()
    };
    let r = mount_req(slot, 7, 3, "/mnt/ro", spec);
    fx.guest.mount(&r).await.expect("ro mount");
    let (rc, out, _) = fx.sh("cat /mnt/ro/y").await;
    assert_eq!((rc, out.trim()), (0, "x"));
    let (rc, _, err) = fx.sh("echo z > /mnt/ro/z").await;
    assert_ne!(rc, 0, "write to a read-only mount succeeded");
    assert!(err.contains("Read-only"), "{err}");
    fx.guest.unmount(&r).await.expect("unmount");

    // A filesystem the guest has no mkfs for: a typed Unsupported.
    let spec = MountSpec {
        ensure_filesystem: true,
        filesystem: "nofs".into(),
        ..MountSpec::default()
    };
    let blank2 = fx.image("blank2.raw", 16, false);
    fx.attach(Slot::new(0, 4), 9, &blank2, false).await;
    let e = fx
        .guest
        .mount(&mount_req(Slot::new(0, 4), 9, 4, "/mnt/nofs", spec))
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::Unsupported(_)), "{e:?}");
    fx.host
        .detach(&DetachRequest {
            slot: Slot::new(0, 4),
            attach: 9,
        })
        .await
        .expect("detach");

    // A read-only attachment: the guest sees a write-protected disk.
    let ro_img = fx.image("ro.ext4", 16, true);
    let ro_slot = Slot::new(1, 0);
    fx.attach(ro_slot, 8, &ro_img, true).await;
    let spec = MountSpec {
        read_only: true,
        ..MountSpec::default()
    };
    let rr = mount_req(ro_slot, 8, 5, "/mnt/rodisk", spec);
    fx.guest.mount(&rr).await.expect("mount read-only disk");
    let (rc, _, _) = fx.sh("touch /mnt/rodisk/nope").await;
    assert_ne!(rc, 0);
    let view = fx.guest.inspect().await.expect("inspect");
    assert_eq!(view.devices, vec![slot, ro_slot]);
    eprintln!("test took {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn stale_agent_reply_from_a_dead_client_is_discarded() {
    let fx = boot().await;
    let qga = fx.vm.qga_socket().expect("qga");
    // The backend holds the agent's only connection; release it, play a client that sends a
    // command and dies before reading the reply, then let a new backend take over.
    drop(fx.guest);
    {
        let mut s = tokio::net::UnixStream::connect(&qga)
            .await
            .expect("connect");
        let cmd = json!({"execute": "guest-exec", "arguments": {"path": "/bin/true"}});
        s.write_all(format!("{cmd}\n").as_bytes())
            .await
            .expect("write");
        s.flush().await.expect("flush");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let controllers = fx.host.controller_map().await.expect("map");
    let guest = QemuGuest::connect(&qga, controllers).await.expect("resync");
    let view = guest.inspect().await.expect("inspect after resync");
    assert!(view.devices.is_empty(), "{view:?}");
    let out = guest.sh("echo $((6 * 7))", &[]).await.expect("exec");
    assert_eq!(out.stdout.trim(), "42");
    // The QMP side is unaffected by all this.
    let mut q = QmpClient::connect(fx.vm.aux_qmp_socket(), Duration::from_secs(5))
        .await
        .expect("aux");
    assert!(q.execute("query-status", None).await.is_ok());
}

const CHILD_QMP: &str = "LL_QEMU_CHILD_QMP";
const CHILD_QGA: &str = "LL_QEMU_CHILD_QGA";
const CHILD_DISKS: &str = "LL_QEMU_CHILD_DISKS";

/// The child half of `kill_9_after_mount_then_recover`: attaches two disks, mounts one and
/// links the other, leaves a guest command's reply unread, and waits to be killed. A no-op
/// unless started by that test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn child_attach_and_mount() {
    let (Ok(qmp), Ok(qga), Ok(disks)) = (
        std::env::var(CHILD_QMP),
        std::env::var(CHILD_QGA),
        std::env::var(CHILD_DISKS),
    ) else {
        return;
    };
    let host = QemuHost::connect(&qmp).await.expect("child QMP");
    let guest = QemuGuest::connect(&qga, host.controller_map().await.expect("map"))
        .await
        .expect("QGA");
    for (i, slot) in [Slot::new(0, 2), Slot::new(1, 9)].into_iter().enumerate() {
        let attach = 50 + i as u64;
        let req = AttachRequest {
            slot,
            attach,
            disk: DiskSpec {
                path: format!("{disks}/k{i}.ext4"),
                read_only: false,
                kind: DiskKind::VirtualDisk,
                evd_type: None,
            },
        };
        host.attach(&req).await.expect("child attach");
        let spec = MountSpec {
            block_dev: i == 1,
            ..MountSpec::default()
        };
        let m = mount_req(slot, attach, i as u64, &format!("/mnt/k{i}"), spec);
        guest.mount(&m).await.expect("child mount");
    }
    drop(guest);
    // Leave a reply for the next agent client to trip over.
    let mut s = tokio::net::UnixStream::connect(&qga)
        .await
        .expect("connect");
    let cmd = json!({"execute": "guest-exec", "arguments": {"path": "/bin/true"}});
    s.write_all(format!("{cmd}\n").as_bytes())
        .await
        .expect("write");
    println!("READY");
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn kill_9_after_mount_then_recover() {
    use tokio::io::AsyncBufReadExt;
    let fx = boot().await;
    for i in 0..2 {
        fx.image(&format!("k{i}.ext4"), 16, true);
    }
    let Fixture {
        host,
        guest,
        vm,
        disks,
        _permit,
    } = fx;
    let controllers = guest.controllers().clone();
    // The child needs the monitor and the agent to itself.
    drop(host);
    drop(guest);
    let exe = std::env::current_exe().expect("test binary");
    let mut child = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "child_attach_and_mount",
            "--nocapture",
            "--include-ignored",
        ])
        .env(CHILD_QMP, vm.qmp_socket())
        .env(CHILD_QGA, vm.qga_socket().expect("qga"))
        .env(CHILD_DISKS, disks.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn child");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("child progress")
            .expect("read child")
            .expect("child exited before READY");
        if line == "READY" {
            break;
        }
    }
    child.start_kill().expect("kill -9");
    child.wait().await.expect("reap");

    let t0 = Instant::now();
    let host = QemuHost::connect(vm.qmp_socket()).await.expect("QMP");
    let guest = QemuGuest::connect(vm.qga_socket().expect("qga"), controllers)
        .await
        .expect("QGA");
    let hv = host.inspect().await.expect("host inspect");
    let gv = guest.inspect().await.expect("guest inspect");
    eprintln!("recovery scan after kill -9: {:?}", t0.elapsed());
    let got: Vec<_> = hv
        .attachments
        .iter()
        .map(|a| (a.slot, a.attach, a.complete))
        .collect();
    assert_eq!(
        got,
        vec![
            (Slot::new(0, 2), Some(50), true),
            (Slot::new(1, 9), Some(51), true)
        ]
    );
    assert_eq!(gv.devices, vec![Slot::new(0, 2), Slot::new(1, 9)]);
    let mounts: Vec<_> = gv
        .mounts
        .iter()
        .map(|m| (m.path.as_str(), m.slot, m.block_dev))
        .collect();
    assert_eq!(
        mounts,
        vec![
            ("/mnt/k0", Some(Slot::new(0, 2)), false),
            ("/mnt/k1", Some(Slot::new(1, 9)), true)
        ]
    );
    // Tear everything down from what was found.
    for (i, a) in hv.attachments.iter().enumerate() {
        let attach = a.attach.expect("ours");
        let spec = MountSpec {
            block_dev: i == 1,
            ..MountSpec::default()
        };
        guest
            .unmount(&mount_req(
                a.slot,
                attach,
                i as u64,
                &format!("/mnt/k{i}"),
                spec,
            ))
            .await
            .expect("unmount");
        guest.unplug(a.slot).await.expect("unplug");
        host.detach(&DetachRequest {
            slot: a.slot,
            attach,
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
    let gv = guest.inspect().await.expect("inspect");
    assert!(gv.devices.is_empty() && gv.mounts.is_empty(), "{gv:?}");
}

/// Writes an MBR with one Linux partition from 1 MiB to the end (no sfdisk on the host).
fn write_mbr(path: &Path, total_mib: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut mbr = [0u8; 512];
    let start: u32 = 2048;
    let sectors = u32::try_from(total_mib * 2048).expect("small disk") - start;
    let entry = &mut mbr[446..462];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&start.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    f.seek(SeekFrom::Start(0)).expect("seek");
    f.write_all(&mbr).expect("write MBR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn partition_mount_and_conflicting_mounts() {
    let fx = boot().await;
    let slot = Slot::new(1, 1);
    let img = fx.image("parted.raw", 32, false);
    write_mbr(&img, 32);
    let st = std::process::Command::new("mkfs.ext4")
        .args(["-F", "-q", "-E", "offset=1048576"])
        .arg(&img)
        .arg("31M")
        .status()
        .unwrap_or_else(|e| panic!("mkfs.ext4 missing ({e}): run scripts/install-qemu.sh"));
    assert!(st.success());
    fx.attach(slot, 21, &img, false).await;
    let spec = MountSpec {
        partition: 1,
        ..MountSpec::default()
    };
    let p = mount_req(slot, 21, 1, "/mnt/part", spec.clone());
    fx.guest.mount(&p).await.expect("mount partition 1");
    let (rc, out, err) = fx
        .sh("awk '$2 == \"/mnt/part\" { print $1 }' /proc/mounts")
        .await;
    assert_eq!(rc, 0, "{err}");
    assert!(
        out.trim().starts_with("/dev/sd") && out.trim().ends_with('1'),
        "{out}"
    );
    let view = fx.guest.inspect().await.expect("inspect");
    assert_eq!(
        view.mounts.iter().map(|m| m.slot).collect::<Vec<_>>(),
        vec![Some(slot)]
    );
    // A partition that does not exist.
    let none = mount_req(
        slot,
        21,
        2,
        "/mnt/p2",
        MountSpec {
            partition: 2,
            ..MountSpec::default()
        },
    );
    assert!(fx.guest.mount(&none).await.is_err());
    // The same path asked read-only while it is mounted read-write: not the same mount.
    let ro = mount_req(
        slot,
        21,
        3,
        "/mnt/part",
        MountSpec {
            read_only: true,
            ..spec
        },
    );
    let e = fx.guest.mount(&ro).await.unwrap_err();
    assert!(
        matches!(e, BackendError::Failed(ref m) if m.contains("read-only")),
        "{e:?}"
    );
    // Another disk's mount path is taken.
    let other_slot = Slot::new(0, 0);
    let other = fx.image("other.ext4", 16, true);
    fx.attach(other_slot, 22, &other, false).await;
    let clash = mount_req(other_slot, 22, 4, "/mnt/part", MountSpec::default());
    let e = fx.guest.mount(&clash).await.unwrap_err();
    assert!(
        matches!(e, BackendError::Failed(ref m) if m.contains("already mounted")),
        "{e:?}"
    );
    fx.guest.unmount(&p).await.expect("unmount");
}

/// Counts occurrences of `needle` in the file at `path` (on the host).
fn count_in_file(path: &Path, needle: &[u8]) -> usize {
    let data = std::fs::read(path).expect("read image");
    data.windows(needle.len()).filter(|w| *w == needle).count()
}

/// What a real guest mounts with (scripts/build-guest.sh ships e2fsprogs, xfsprogs, cryptsetup
/// and the xfs and dm-crypt modules): `ensure_filesystem` ext4 makes a real ext4 (journal,
/// extents; busybox's mke2fs made ext2), xfs works, and an encrypted mount writes only
/// ciphertext to the host image and closes its mapping on unmount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn ext4_xfs_and_encrypted_mounts_end_to_end() {
    let t0 = Instant::now();
    let fx = boot().await;
    const MARK: &str = "lunledger-plaintext-marker-0123456789";
    let write_marks = |dir: &str| {
        format!("i=0; while [ $i -lt 64 ]; do echo {MARK} >> {dir}/f; i=$((i+1)); done; sync")
    };
    let fstype = |dir: &str| format!("awk -v p={dir} '$2 == p {{ print $1, $3 }}' /proc/mounts");

    // ext4 on a blank disk.
    let (e4_slot, e4_img) = (Slot::new(0, 1), fx.image("e4.raw", 64, false));
    fx.attach(e4_slot, 11, &e4_img, false).await;
    let e4 = mount_req(
        e4_slot,
        11,
        1,
        "/mnt/e4",
        MountSpec {
            ensure_filesystem: true,
            filesystem: "ext4".into(),
            ..MountSpec::default()
        },
    );
    fx.guest.mount(&e4).await.expect("ext4: format + mount");
    let (rc, out, err) = fx.sh(&fstype("/mnt/e4")).await;
    assert_eq!(rc, 0, "{err}");
    assert!(out.trim().ends_with(" ext4"), "ext4 mount is {out:?}");
    let (rc, _, err) = fx.sh(&write_marks("/mnt/e4")).await;
    assert_eq!(rc, 0, "{err}");

    // xfs (mkfs.xfs wants at least 300 MiB; the image is sparse).
    let (x_slot, x_img) = (Slot::new(0, 2), fx.image("x.raw", 320, false));
    fx.attach(x_slot, 12, &x_img, false).await;
    let xfs = mount_req(
        x_slot,
        12,
        2,
        "/mnt/x",
        MountSpec {
            ensure_filesystem: true,
            filesystem: "xfs".into(),
            ..MountSpec::default()
        },
    );
    fx.guest.mount(&xfs).await.expect("xfs: format + mount");
    let (_, out, _) = fx.sh(&fstype("/mnt/x")).await;
    assert!(out.trim().ends_with(" xfs"), "xfs mount is {out:?}");
    let (rc, out, err) = fx.sh("echo hi > /mnt/x/f && cat /mnt/x/f").await;
    assert_eq!((rc, out.trim()), (0, "hi"), "{err}");

    // Encrypted (dm-crypt, plain mode, ephemeral key) with a fresh ext4 inside.
    let (c_slot, c_img) = (Slot::new(1, 0), fx.image("crypt.raw", 64, false));
    fx.attach(c_slot, 13, &c_img, false).await;
    let enc = mount_req(
        c_slot,
        13,
        3,
        "/mnt/enc",
        MountSpec {
            encrypted: true,
            ensure_filesystem: true,
            filesystem: "ext4".into(),
            ..MountSpec::default()
        },
    );
    fx.guest
        .mount(&enc)
        .await
        .expect("encrypted: open + format + mount");
    fx.guest
        .mount(&enc)
        .await
        .expect("encrypted: mount again is a no-op");
    let (_, out, _) = fx.sh(&fstype("/mnt/enc")).await;
    assert_eq!(
        out.trim(),
        "/dev/mapper/ll-crypt-3 ext4",
        "encrypted mount is {out:?}"
    );
    let (rc, _, err) = fx.sh(&write_marks("/mnt/enc")).await;
    assert_eq!(rc, 0, "{err}");
    // The disk under a mounted dm-crypt mapping is not unplugged (its mount names the mapping,
    // not the disk; deleting the disk would leave a zombie mapping and mount).
    let e = fx.guest.unplug(c_slot).await.unwrap_err();
    assert!(
        matches!(&e, BackendError::Failed(m) if m.contains("still held by")),
        "{e:?}"
    );
    let view = fx.guest.inspect().await.expect("inspect");
    let mut paths: Vec<_> = view
        .mounts
        .iter()
        .map(|m| (m.path.as_str(), m.slot))
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            ("/mnt/e4", Some(e4_slot)),
            ("/mnt/enc", Some(c_slot)),
            ("/mnt/x", Some(x_slot)),
        ],
        "inspect places the dm-crypt mount on its disk's slot"
    );

    // Unmount everything; the mapping goes with the encrypted mount.
    for m in [&e4, &xfs, &enc] {
        fx.guest.unmount(m).await.expect("unmount");
        fx.guest.unmount(m).await.expect("unmount again is a no-op");
    }
    let (rc, _, _) = fx.sh("test -e /dev/mapper/ll-crypt-3").await;
    assert_ne!(rc, 0, "the dm-crypt mapping outlived its unmount");
    let (_, out, _) = fx.sh("grep /mnt/ /proc/mounts; true").await;
    assert_eq!(out.trim(), "", "mounts left: {out}");
    // An encrypted mount that fails after opening its mapping (no mkfs for the filesystem)
    // closes the mapping again: nothing holds the disk, and it unplugs.
    let bad = mount_req(
        c_slot,
        13,
        4,
        "/mnt/encbad",
        MountSpec {
            encrypted: true,
            ensure_filesystem: true,
            filesystem: "nofs".into(),
            ..MountSpec::default()
        },
    );
    let e = fx.guest.mount(&bad).await.unwrap_err();
    assert!(matches!(e, BackendError::Unsupported(_)), "{e:?}");
    let (_, out, _) = fx.sh("ls /dev/mapper").await;
    assert_eq!(
        out.trim(),
        "control",
        "a failed mount left its mapping open: {out}"
    );
    for (slot, attach) in [(e4_slot, 11), (x_slot, 12), (c_slot, 13)] {
        fx.guest.unplug(slot).await.expect("unplug");
        fx.host
            .detach(&DetachRequest { slot, attach })
            .await
            .expect("detach");
    }

    // On the host: the ext4 image is real ext4 and holds the plaintext; the encrypted one
    // holds none of it.
    let dump = std::process::Command::new("dumpe2fs")
        .arg("-h")
        .arg(&e4_img)
        .output()
        .expect("dumpe2fs (e2fsprogs)");
    let features = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap_or("")
        .to_string();
    assert!(
        features.contains("has_journal") && features.contains("extent"),
        "ensure_filesystem ext4 did not make ext4: {features}"
    );
    assert!(
        count_in_file(&e4_img, MARK.as_bytes()) > 0,
        "the plaintext check cannot see plaintext"
    );
    assert_eq!(
        count_in_file(&c_img, MARK.as_bytes()),
        0,
        "plaintext reached the encrypted disk's image"
    );
    eprintln!("test took {:?}", t0.elapsed());
}
