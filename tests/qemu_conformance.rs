//! The shared backend conformance suite (`lunledger_test_support::conformance`) on
//! the QEMU backends: once without a guest (host cases only) and once with a booted guest.
//!
//! Run: `cargo test --features qemu-tests --test qemu_conformance` (after scripts/install-qemu.sh
//! and scripts/build-guest.sh). The whole file is compiled only with the feature, so the default
//! `cargo test` builds nothing here; with the feature, a missing QEMU or guest image fails.
#![cfg(feature = "qemu-tests")]

use lunledger_test_support::conformance;

use lunledger::backend::qemu::{QemuGuest, QemuHost};
use lunledger::backend::{GuestBackend, HostBackend};
use lunledger::demo::vm::{GuestImage, QemuVm, QemuVmOptions};
use lunledger::model::{DiskKind, DiskSpec, Slot};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Drop order: backends, then the VM (stopped by pid), then the disk images.
struct QemuFixture {
    host: Arc<QemuHost>,
    guest: Option<Arc<QemuGuest>>,
    _vm: QemuVm,
    disks: tempfile::TempDir,
}

impl QemuFixture {
    async fn start(with_guest: bool) -> Self {
        let guest_image = with_guest.then(|| {
            let dir = std::env::var_os("LUNLEDGER_GUEST_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/guest"));
            GuestImage::from_dir(&dir).unwrap_or_else(|e| panic!("{e}"))
        });
        let opts = QemuVmOptions {
            controllers: 2,
            guest: guest_image,
            ..QemuVmOptions::default()
        };
        let vm = QemuVm::start(opts)
            .await
            .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
        vm.wait_ready(Duration::from_secs(90))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let host = QemuHost::connect(vm.qmp_socket()).await.expect("QMP");
        let guest = match vm.qga_socket() {
            Some(qga) => {
                let map = host.controller_map().await.expect("controller map");
                Some(Arc::new(QemuGuest::connect(qga, map).await.expect("QGA")))
            }
            None => None,
        };
        QemuFixture {
            host: Arc::new(host),
            guest,
            _vm: vm,
            disks: tempfile::tempdir().expect("temp dir"),
        }
    }
}

impl conformance::Fixture for QemuFixture {
    fn host(&self) -> Arc<dyn HostBackend> {
        self.host.clone()
    }

    fn guest(&self) -> Arc<dyn GuestBackend> {
        match &self.guest {
            Some(g) => g.clone(),
            None => panic!("the suite asked for a guest on a fixture without one"),
        }
    }

    fn disk(&self, name: &str, read_only: bool) -> DiskSpec {
        let path = self.disks.path().join(format!("{name}.ext4"));
        if !path.exists() {
            std::fs::File::create(&path)
                .expect("create")
                .set_len(16 << 20)
                .expect("size");
            let st = std::process::Command::new("mkfs.ext4")
                .args(["-F", "-q"])
                .arg(&path)
                .status()
                .unwrap_or_else(|e| panic!("mkfs.ext4 missing ({e}): run scripts/install-qemu.sh"));
            assert!(st.success(), "mkfs.ext4 {}", path.display());
        }
        DiskSpec {
            path: path.display().to_string(),
            read_only,
            kind: DiskKind::VirtualDisk,
            evd_type: None,
        }
    }

    fn slots(&self) -> Vec<Slot> {
        vec![
            Slot::new(0, 1),
            Slot::new(1, 2),
            Slot::new(0, 0),
            Slot::new(1, 0),
        ]
    }

    fn has_guest(&self) -> bool {
        self.guest.is_some()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn conformance_qemu_without_guest() {
    let t0 = Instant::now();
    let f = QemuFixture::start(false).await;
    conformance::run_all(&f).await;
    eprintln!("conformance without guest: {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "qemu-tests"),
    ignore = "needs QEMU: run scripts/test-all.sh"
)]
async fn conformance_qemu_with_guest() {
    let t0 = Instant::now();
    let f = QemuFixture::start(true).await;
    conformance::run_all(&f).await;
    eprintln!("conformance with guest: {:?}", t0.elapsed());
}
