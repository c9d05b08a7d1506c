//! Property tests of the manager against reference models.
//!
//! - `manager_agrees_with_model`: random sequences of adds, releases, injected backend failures,
//!   cancelled callers, crashes at chosen crash points with recovery, and restarts, run against a
//!   real `Manager` on a `SimVm`; after every transition the live handles, the state, a replay of
//!   the journal, the invariants and the VM must agree with the model in `test-support/src/model.rs`.
//! - `allocation_matches_hcsshim*`: without faults, every add gets exactly the slot and guest
//!   path hcsshim's own allocator (modelled literally from its source, below) would give.
//!
//! Case counts: `LUNLEDGER_PROPTEST_CASES` (default 32 for the state machine, 4x that for the
//! cheaper allocation properties). Failures shrink to a minimal sequence.

use lunledger_test_support as common;
use lunledger_test_support::model;

use lunledger::backend::sim::SimVm;
use lunledger::model::{ManagerConfig, Slot};
use lunledger::{DiskRequest, Error, Manager, Mount, MountConfig};
use model::{AddArgs, AddFault, Kind, MountChoice, Op, ReleaseFault};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn cases(default: u32) -> u32 {
    std::env::var("LUNLEDGER_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Virtual), Just(Kind::Physical), Just(Kind::Evd)]
}

fn mount_choice() -> impl Strategy<Value = MountChoice> {
    prop_oneof![
        Just(MountChoice::Plain),
        Just(MountChoice::Ro),
        Just(MountChoice::OptsAb),
        Just(MountChoice::OptsBa),
        Just(MountChoice::BlockDev),
    ]
}

fn add_args() -> impl Strategy<Value = AddArgs> {
    (
        0..model::DISKS,
        // Mostly one kind, so that adds share attachments often.
        prop_oneof![4 => Just(Kind::Virtual), 1 => kind()],
        any::<bool>(),
        proptest::option::weighted(0.7, mount_choice()),
        proptest::option::weighted(0.2, 0u8..4),
        proptest::option::of(0u8..3),
    )
        .prop_map(|(disk, kind, read_only, mount, path, owner)| AddArgs {
            disk,
            kind,
            read_only,
            // A requested path without a mount is a typed error; keep it rare.
            path: if mount.is_some() || path == Some(3) {
                path
            } else {
                None
            },
            mount,
            owner,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => add_args().prop_map(Op::Add),
        6 => any::<u8>().prop_map(|handle| Op::Release { handle }),
        2 => (any::<u8>(), prop_oneof![
                Just(ReleaseFault::Unmount),
                Just(ReleaseFault::Unplug),
                Just(ReleaseFault::Detach)
            ])
            .prop_map(|(handle, fault)| Op::ReleaseFailing { handle, fault }),
        1 => (any::<u8>(), prop_oneof![
                Just(ReleaseFault::Unmount),
                Just(ReleaseFault::Unplug),
                Just(ReleaseFault::Detach)
            ])
            .prop_map(|(handle, fault)| Op::ReleaseTimingOut { handle, fault }),
        2 => (add_args(), prop_oneof![Just(AddFault::Attach), Just(AddFault::Mount)])
            .prop_map(|(args, fault)| Op::AddFailing { args, fault }),
        1 => (add_args(), prop_oneof![Just(AddFault::Attach), Just(AddFault::Mount)])
            .prop_map(|(args, fault)| Op::AddTimingOut { args, fault }),
        1 => add_args().prop_map(Op::AddCancelled),
        1 => add_args().prop_map(Op::AddTwiceConcurrently),
        1 => (add_args(), 0u8..16).prop_map(|(args, point)| Op::CrashInAdd { args, point }),
        1 => (any::<u8>(), 0u8..12).prop_map(|(handle, point)| Op::CrashInRelease { handle, point }),
        1 => Just(Op::Restart),
        1 => Just(Op::RetryTeardowns),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(32),
        max_shrink_iters: 2000,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    /// Every transition keeps the manager, its journal, the VM and the model in agreement, and
    /// releasing everything at the end leaves the VM and the state empty.
    #[test]
    fn manager_agrees_with_model(ops in proptest::collection::vec(op(), 1..28)) {
        model::run_ops_blocking(&ops);
    }

    /// The same on a Windows guest: no unplug step (the simulated Windows guest fails any
    /// unplug call), mount options refused before anything is journaled, Windows paths.
    #[test]
    fn manager_agrees_with_model_windows(ops in proptest::collection::vec(op(), 1..28)) {
        model::run_ops_blocking_for(lunledger::model::GuestOs::Windows, &ops);
    }
}

// ---------------------------------------------------------------------------------------------
// hcsshim's allocator, modelled literally from `attach.go` / `mount.go` (see
// reference/hcsshim-scsi-behavior.md sections 2.3, 3.3, 3.5, 5.1, 5.2).
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct HcsAttachment {
    /// `None` for a reserved slot: `config` is nil, so DeepEqual never matches it.
    config: Option<(Kind, u8, bool)>,
    ref_count: u32,
}

#[derive(Clone, Debug, PartialEq)]
struct HcsMount {
    path: String,
    controller: u32,
    lun: u32,
    config: (MountChoice, bool),
    ref_count: u32,
}

#[derive(Debug, PartialEq)]
enum HcsError {
    NoAvailableLocation,
    MountOverExisting,
}

/// hcsshim's attach and mount managers without faults.
struct Hcs {
    slots: Vec<Vec<Option<HcsAttachment>>>,
    mounts: Vec<Option<HcsMount>>,
    mount_fmt: String,
    /// `false`: hcsshim exactly. `true`: lunledger's two deliberate deviations, both about
    /// requested paths, to check that nothing else differs: a matching mount anywhere wins over a
    /// conflicting path found earlier in the scan, and a generated path skips an index whose path
    /// a requested mount already holds (hcsshim would hand out the same path twice).
    lunledger_rules: bool,
}

/// What an hcsshim `Mount` handle remembers.
#[derive(Clone, Debug)]
struct HcsHandle {
    controller: u32,
    lun: u32,
    guest_path: String,
}

impl Hcs {
    fn new(cfg: &ManagerConfig) -> Hcs {
        let mut slots =
            vec![vec![None; cfg.luns_per_controller as usize]; cfg.controllers as usize];
        for s in &cfg.reserved {
            slots[s.controller as usize][s.lun as usize] = Some(HcsAttachment {
                config: None,
                ref_count: 1,
            });
        }
        Hcs {
            slots,
            mounts: Vec::new(),
            mount_fmt: cfg.mount_format.clone(),
            lunledger_rules: false,
        }
    }

    /// `trackAttachment`: scan controller-major, an existing match anywhere wins, else the first
    /// free slot.
    fn attach(&mut self, c: (Kind, u8, bool)) -> Result<(u32, u32), HcsError> {
        let mut free = None;
        for (ci, row) in self.slots.iter_mut().enumerate() {
            for (li, slot) in row.iter_mut().enumerate() {
                match slot {
                    None => {
                        if free.is_none() {
                            free = Some((ci, li));
                        }
                    }
                    Some(a) if a.config == Some(c) => {
                        a.ref_count += 1;
                        return Ok((ci as u32, li as u32));
                    }
                    Some(_) => {}
                }
            }
        }
        let (ci, li) = free.ok_or(HcsError::NoAvailableLocation)?;
        self.slots[ci][li] = Some(HcsAttachment {
            config: Some(c),
            ref_count: 1,
        });
        Ok((ci as u32, li as u32))
    }

    /// `detach`: refcount down; at zero unplug + detach, then the slot is freed.
    fn detach(&mut self, controller: u32, lun: u32) {
        let slot = &mut self.slots[controller as usize][lun as usize];
        if let Some(a) = slot {
            a.ref_count -= 1;
            if a.ref_count == 0 {
                *slot = None;
            }
        }
    }

    /// `trackMount`: scan in index order; the first element that decides wins (a match is
    /// reused, else a requested path held by it is a conflict); a new mount takes the lowest
    /// nil index (or appends) and, without a requested path, the path the format gives it.
    fn mount(
        &mut self,
        controller: u32,
        lun: u32,
        path: &str,
        config: (MountChoice, bool),
    ) -> Result<String, HcsError> {
        if self.lunledger_rules {
            // lunledger: match first, anywhere.
            let found = self
                .mounts
                .iter_mut()
                .flatten()
                .find(|m| m.controller == controller && m.lun == lun && m.config == config);
            if let Some(m) = found {
                m.ref_count += 1;
                return Ok(m.path.clone());
            }
        }
        let mut free = None;
        let indexed = self.mounts.len();
        let held: Vec<String> = self
            .mounts
            .iter()
            .flatten()
            .map(|m| m.path.clone())
            .collect();
        let skip = |i: usize| {
            self.lunledger_rules
                && path.is_empty()
                && held.contains(&self.mount_fmt.replacen("%d", &i.to_string(), 1))
        };
        let skips: Vec<bool> = (0..=indexed).map(skip).collect();
        for (i, m) in self.mounts.iter_mut().enumerate() {
            match m {
                None => {
                    if free.is_none() && !skips[i] {
                        free = Some(i);
                    }
                }
                Some(m) if m.controller == controller && m.lun == lun && m.config == config => {
                    m.ref_count += 1;
                    return Ok(m.path.clone());
                }
                Some(m) if !path.is_empty() && path == m.path => {
                    return Err(HcsError::MountOverExisting)
                }
                Some(_) => {}
            }
        }
        let new = HcsMount {
            path: path.to_string(),
            controller,
            lun,
            config,
            ref_count: 1,
        };
        let index = match free {
            Some(i) => i,
            None => {
                // Append, past any index whose generated path is held (lunledger's rule).
                loop {
                    self.mounts.push(None);
                    let i = self.mounts.len() - 1;
                    let taken = self.lunledger_rules
                        && path.is_empty()
                        && held.contains(&self.mount_fmt.replacen("%d", &i.to_string(), 1));
                    if !taken {
                        break i;
                    }
                }
            }
        };
        let path = if path.is_empty() {
            self.mount_fmt.replacen("%d", &index.to_string(), 1)
        } else {
            path.to_string()
        };
        self.mounts[index] = Some(HcsMount {
            path: path.clone(),
            ..new
        });
        Ok(path)
    }

    /// `unmount`: looked up by path; refcount down; at zero the index is freed.
    fn unmount(&mut self, path: &str) {
        for m in self.mounts.iter_mut() {
            if let Some(x) = m {
                if x.path == path {
                    x.ref_count -= 1;
                    if x.ref_count == 0 {
                        *m = None;
                    }
                    return;
                }
            }
        }
    }

    /// `Manager.add`: attach, then mount; a failed mount detaches again.
    fn add(&mut self, a: &AddArgs, requested: &str) -> Result<HcsHandle, HcsError> {
        let (controller, lun) = self.attach((a.kind, a.disk % model::DISKS, a.read_only))?;
        let mut guest_path = String::new();
        if let Some(mc) = a.mount {
            // `sort.Strings(options)` makes the two option orders one key.
            let key = match mc {
                MountChoice::OptsBa => MountChoice::OptsAb,
                other => other,
            };
            match self.mount(controller, lun, requested, (key, a.read_only)) {
                Ok(p) => guest_path = p,
                Err(e) => {
                    self.detach(controller, lun);
                    return Err(e);
                }
            }
        }
        Ok(HcsHandle {
            controller,
            lun,
            guest_path,
        })
    }

    /// `Manager.remove`: unmount (if mounted), then detach.
    fn remove(&mut self, h: &HcsHandle) {
        if !h.guest_path.is_empty() {
            self.unmount(&h.guest_path);
        }
        self.detach(h.controller, h.lun);
    }
}

#[derive(Clone, Debug)]
enum AllocOp {
    Add(AddArgs),
    Release(u8),
}

/// Requested paths are drawn from `/req/N` when `requested_paths`, a namespace the mount format
/// never generates (hcsshim does not check a generated path against requested ones; lunledger
/// deliberately does, so colliding paths are not an allocation comparison).
fn alloc_ops(requested_paths: bool) -> impl Strategy<Value = Vec<AllocOp>> {
    let add = (
        0..model::DISKS,
        prop_oneof![4 => Just(Kind::Virtual), 1 => kind()],
        any::<bool>(),
        proptest::option::weighted(0.7, mount_choice()),
        proptest::option::weighted(0.4, 0u8..3),
    )
        .prop_map(move |(disk, kind, read_only, mount, path)| {
            let path = path.filter(|_| requested_paths);
            AllocOp::Add(AddArgs {
                disk,
                kind,
                read_only,
                path: if mount.is_some() { path } else { None },
                mount,
                owner: None,
            })
        });
    let op = prop_oneof![3 => add, 2 => any::<u8>().prop_map(AllocOp::Release)];
    proptest::collection::vec(op, 1..40)
}

fn hcs_request(a: &AddArgs) -> (DiskRequest, String) {
    let d = a.disk % model::DISKS;
    let host = match a.kind {
        Kind::Virtual | Kind::Physical => format!("/d/{d}"),
        Kind::Evd => format!("evd://t/d{d}"),
    };
    let mut r = DiskRequest::new(host).read_only(a.read_only);
    if let Some(m) = a.mount {
        let options = match m {
            MountChoice::Ro => vec!["ro".to_string()],
            MountChoice::OptsAb => vec!["a".to_string(), "b".to_string()],
            MountChoice::OptsBa => vec!["b".to_string(), "a".to_string()],
            _ => Vec::new(),
        };
        r = r.mount(MountConfig {
            options,
            block_dev: m == MountChoice::BlockDev,
            ..Default::default()
        });
    }
    let requested = a.path.map(|p| format!("/req/{p}")).unwrap_or_default();
    if !requested.is_empty() {
        r = r.guest_path(requested.clone());
    }
    (r, requested)
}

/// Runs `ops` on a manager and on hcsshim's allocator; every add must get the same slot and
/// guest path (or the same error) from both.
fn run_alloc(ops: &[AllocOp], exact: bool) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(format!("runtime: {e}")))?;
    rt.block_on(async {
        let cfg = model::harness_config();
        let dir = common::tempdir();
        let vm = SimVm::new();
        let m = Manager::open(
            dir.path(),
            cfg.clone(),
            vm.host_backend(),
            vm.guest_backend(),
        )
        .await
        .map_err(|e| TestCaseError::fail(format!("open: {e}")))?;
        let mut hcs = Hcs::new(&cfg);
        hcs.lunledger_rules = !exact;
        let mut live: BTreeMap<u64, (Mount, HcsHandle)> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                AllocOp::Add(a) => {
                    let (req, requested) = hcs_request(a);
                    let got = match a.kind {
                        Kind::Virtual => m.add_virtual_disk(req).await,
                        Kind::Physical => m.add_physical_disk(req).await,
                        Kind::Evd => m.add_extensible_virtual_disk(req).await,
                    };
                    let want = hcs.add(a, &requested);
                    match (want, got) {
                        (Ok(h), Ok(mount)) => {
                            prop_assert_eq!(
                                (mount.slot(), mount.guest_path()),
                                (Slot::new(h.controller, h.lun), h.guest_path.as_str()),
                                "op {}: {:?}",
                                i,
                                a
                            );
                            live.insert(mount.handle_id(), (mount, h));
                        }
                        (Err(HcsError::NoAvailableLocation), Err(Error::NoAvailableLocation)) => {}
                        (
                            Err(HcsError::MountOverExisting),
                            Err(Error::GuestPathConflict { .. }),
                        ) => {}
                        (w, g) => {
                            return Err(TestCaseError::fail(format!(
                                "op {i}: {a:?}: hcsshim gives {w:?}, lunledger {g:?}"
                            )))
                        }
                    }
                }
                AllocOp::Release(k) => {
                    let ids: Vec<u64> = live.keys().copied().collect();
                    if ids.is_empty() {
                        continue;
                    }
                    let id = ids[*k as usize % ids.len()];
                    if let Some((mount, h)) = live.remove(&id) {
                        mount
                            .release()
                            .await
                            .map_err(|e| TestCaseError::fail(format!("op {i}: release: {e}")))?;
                        hcs.remove(&h);
                    }
                }
            }
        }
        for (_, (mount, _)) in live {
            mount
                .release()
                .await
                .map_err(|e| TestCaseError::fail(format!("final release: {e}")))?;
        }
        prop_assert!(vm.snapshot().is_empty());
        common::assert_replay_equals_live(&m).await;
        let _ = m.close().await;
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(32) * 4,
        max_shrink_iters: 2000,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    /// Generated paths only: slots and paths are exactly hcsshim's.
    #[test]
    fn allocation_matches_hcsshim(ops in alloc_ops(false)) {
        run_alloc(&ops, true)?;
    }

    /// With requested guest paths, allowing the two known deviations (see `Hcs`): everything else
    /// is hcsshim's.
    #[test]
    fn allocation_matches_hcsshim_but_for_requested_path_indexes(ops in alloc_ops(true)) {
        run_alloc(&ops, false)?;
    }

    /// With requested guest paths too.
    #[test]
    #[ignore = "deviation: a matching mount wins over an earlier conflicting requested path, \
                unlike hcsshim's order-dependent scan; see \
                a_conflicting_requested_path_scanned_before_a_match_is_an_error_like_hcsshim"]
    fn allocation_matches_hcsshim_with_requested_paths(ops in alloc_ops(true)) {
        run_alloc(&ops, true)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Minimal regressions for what the properties found.
// ---------------------------------------------------------------------------------------------

fn mounted(path: &str) -> DiskRequest {
    DiskRequest::new(path).mount(MountConfig::default())
}

/// Found by `allocation_matches_hcsshim_with_requested_paths`. In hcsshim every new mount takes
/// the lowest free index, even one with a requested path (reference section 3.3: "Every new mount
/// consumes an index, even one with an explicit path"), so the next generated path is `m1`.
/// lunledger journals a requested-path mount with `index: None` (src/manager/add.rs
/// `take_mount`), so the next generated path reuses index 0.
#[tokio::test]
async fn requested_guest_path_consumes_a_mount_index_like_hcsshim() {
    let dir = common::tempdir();
    let vm = SimVm::new();
    let m = Manager::open(
        dir.path(),
        model::harness_config(),
        vm.host_backend(),
        vm.guest_backend(),
    )
    .await
    .unwrap_or_else(|e| panic!("open: {e}"));
    let a = m
        .add_virtual_disk(mounted("/d/0").guest_path("/req/0"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let b = m
        .add_virtual_disk(mounted("/d/1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.guest_path(), "/req/0");
    assert_eq!(
        b.guest_path(),
        "/m/1",
        "hcsshim gives index 1: index 0 is /req/0's"
    );
}

/// Found by `manager_agrees_with_model` (minimal sequence: add with a mount, release with the
/// unmount failing once). The release drops both references first, so the mount is due for
/// unmount and the attachment due for unplug: the state the design asks for, which the next
/// release retry or `retry_teardowns` finishes. `State::violations` reports it as "mount N
/// outlives its attachment's teardown" (recovery/src/invariants.rs), so `lunledger verify` and
/// every replay check would flag a healthy journal.
#[tokio::test]
async fn failed_unmount_state_satisfies_the_invariants() {
    use lunledger::backend::sim::{FaultPlan, SimOp};
    let dir = common::tempdir();
    let vm = SimVm::new();
    let m = Manager::open(
        dir.path(),
        model::harness_config(),
        vm.host_backend(),
        vm.guest_backend(),
    )
    .await
    .unwrap_or_else(|e| panic!("open: {e}"));
    let h = m
        .add_virtual_disk(mounted("/d/0"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    vm.set_faults(FaultPlan::new().fail_nth(SimOp::Unmount, 1, "busy"));
    assert!(h.release().await.is_err());
    vm.clear_faults();
    let v = m.state().violations();
    assert!(v.is_empty(), "{v:?}");
    h.release().await.unwrap_or_else(|e| panic!("retry: {e}"));
    assert!(m.state().violations().is_empty());
}

/// Found by `manager_agrees_with_model` (a crash at the first crash point of a release: the
/// journal writer had handed the release's `OpStarted` to sled but not yet its `ReleaseStarted`,
/// and the halt dropped the rest). Recovery plans `FinishRelease` for the release operation, but
/// `finish_release` drops the handle's references under an operation that never recorded
/// `ReleaseStarted`, so `State::apply` refuses ("the operation holds no such reference"): the
/// error is only listed in the report, the operation stays in flight forever (every later open
/// fails the same way) and the state never becomes empty again. The race is timing-dependent,
/// so this test writes that journal tail directly.
#[tokio::test]
async fn recovery_finishes_a_release_whose_release_started_record_was_lost() {
    use lunledger::journal::{Journal, JournalOptions};
    use lunledger::model::{Event, OpKind};
    let dir = common::tempdir();
    let vm = SimVm::new();
    let cfg = model::harness_config();
    let id = {
        let m = Manager::open(
            dir.path(),
            cfg.clone(),
            vm.host_backend(),
            vm.guest_backend(),
        )
        .await
        .unwrap_or_else(|e| panic!("open: {e}"));
        let h = m
            .add_virtual_disk(mounted("/d/0"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let id = h.handle_id();
        let _ = m.close().await;
        id
    };
    // What the crashed process left: the release's OpStarted, and nothing after it.
    tokio::task::spawn_blocking({
        let path = dir.path().to_path_buf();
        move || {
            let j = Journal::open(&path, JournalOptions::default())
                .unwrap_or_else(|e| panic!("journal: {e}"));
            let st = lunledger::load_state(&j.reader())
                .unwrap_or_else(|e| panic!("{e}"))
                .state;
            let seq = j
                .append(
                    st.next_op,
                    Event::OpStarted {
                        kind: OpKind::Release { handle: id },
                    },
                )
                .unwrap_or_else(|e| panic!("append: {e}"));
            j.wait_durable_blocking(seq)
                .unwrap_or_else(|e| panic!("durable: {e}"));
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // sled releases its file lock asynchronously after a drop (see
    // journal_reopens_right_after_close in tests/fuzz_corpus.rs).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let m = Manager::open(dir.path(), cfg, vm.host_backend(), vm.guest_backend())
        .await
        .unwrap_or_else(|e| panic!("reopen: {e}"));
    let report = m.last_recovery().unwrap_or_default();
    assert!(
        report.errors.is_empty(),
        "recovery errors: {:?}",
        report.errors
    );
    let st = m.state();
    assert!(st.ops.is_empty(), "operations left in flight: {:?}", st.ops);
}

/// Found while extending the model's faults to `succeed_but_fail_nth` (a backend call that took
/// effect on the VM but reported `BackendError::Timeout`, "its effect is unknown"). The add's
/// step is journaled as failed and the rollback forgets the attachment or mount without a
/// detach or unmount, though the VM holds it:
/// - attach: the disk stays at the slot the state now calls free; every later add that picks
///   that slot fails with "slot 0:0 is occupied", and `retry_teardowns` sees nothing to do;
/// - mount: the guest keeps the mount at a path the state calls free, so the next generated
///   path collides, and the attachment's unplug fails "device busy" forever.
///
/// Proposed fix (src/manager/add.rs, `add_steps`/`take_mount`): treat a `Timeout` from attach or
/// mount as "may have happened", as the recovery planner does for an unknown outcome: journal
/// the step as done (or settle it with `inspect`) and let the rollback unmount / unplug / detach,
/// which are idempotent.
#[tokio::test]
async fn an_attach_or_mount_that_times_out_after_taking_effect_leaks_nothing() {
    use lunledger::backend::sim::{FaultPlan, SimOp};
    let mut leaks = Vec::new();
    for op in [SimOp::Attach, SimOp::Mount] {
        let dir = common::tempdir();
        let vm = SimVm::new();
        let m = Manager::open(
            dir.path(),
            model::harness_config(),
            vm.host_backend(),
            vm.guest_backend(),
        )
        .await
        .unwrap_or_else(|e| panic!("open: {e}"));
        vm.set_faults(FaultPlan::new().succeed_but_fail_nth(op, 1, 5));
        // The manager asks the VM what the timed-out call did: here it took effect, so the add
        // succeeds. Release it; nothing may stay behind either way.
        if let Ok(h) = m.add_virtual_disk(mounted("/d/0")).await {
            h.release()
                .await
                .unwrap_or_else(|e| panic!("{op:?}: release: {e}"));
        }
        vm.clear_faults();
        let _ = m.retry_teardowns().await;
        if !vm.snapshot().is_empty() {
            leaks.push(format!("{op:?}: the VM still holds {:?}", vm.snapshot()));
        }
        // The next add must not trip over what the failed one left behind.
        if let Err(e) = m.add_virtual_disk(mounted("/d/1")).await {
            leaks.push(format!("{op:?}: the next add fails: {e}"));
        }
    }
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// Found by `allocation_matches_hcsshim_but_for_requested_path_indexes` (before it allowed this
/// deviation too). hcsshim's `trackMount` scans mounts in index order and the first element that
/// decides wins: a mount holding the requested path at a lower index is a conflict even when a
/// matching mount (same slot and config) exists at a higher index (reference section 3.3: "A
/// conflicting path at a lower index than a matching mount produces the error"). lunledger looks
/// for a match anywhere first (src/manager/add.rs `take_mount`), so it shares instead. Arguably
/// better, but not "exactly hcsshim": for the owners of the allocation rules to decide.
#[tokio::test]
#[ignore = "deviation: a matching mount wins over an earlier conflicting requested path, unlike hcsshim's scan order (src/manager/add.rs take_mount)"]
async fn a_conflicting_requested_path_scanned_before_a_match_is_an_error_like_hcsshim() {
    let dir = common::tempdir();
    let vm = SimVm::new();
    let m = Manager::open(
        dir.path(),
        model::harness_config(),
        vm.host_backend(),
        vm.guest_backend(),
    )
    .await
    .unwrap_or_else(|e| panic!("open: {e}"));
    // Index 0 in hcsshim: another disk at /req/2.
    let _a = m
        .add_virtual_disk(mounted("/d/1").guest_path("/req/2"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Index 1: the disk we will match, at /req/0.
    let _b = m
        .add_virtual_disk(mounted("/d/0").guest_path("/req/0"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Same disk and config as b, requesting a's path: hcsshim meets a first and refuses.
    let c = m
        .add_virtual_disk(mounted("/d/0").guest_path("/req/2"))
        .await;
    assert!(
        matches!(c, Err(Error::GuestPathConflict { .. })),
        "hcsshim refuses with 'cannot mount over an existing mountpoint'; lunledger gave {c:?}"
    );
}
