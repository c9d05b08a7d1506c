//! Opening a manager: validate the configuration, open the journal, rebuild the state from the
//! newest checkpoint plus the records after it, reconcile the configuration with the journal, and
//! recover.

use super::recover::{recover, RecoveryReport};
use super::{Inner, Manager};
use crate::audit::Newest;
use crate::backend::{BackendError, GuestBackend, HostBackend};
#[cfg(feature = "testing")]
use crate::crash::CrashHook;
use crate::error::{Error, Result};
use lunledger_journal::{Durability, Journal, JournalOptions, JournalReader, Retention};
use lunledger_model::{Event, GuestOs, ManagerConfig, OpKind};
use lunledger_recovery::{RecoveryPolicy, State};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Everything `Manager::open_with` takes besides the journal directory and the backends.
#[derive(Clone)]
pub struct ManagerOptions {
    /// Controllers, LUNs, mount format, reserved slots.
    pub config: ManagerConfig,
    /// How durable an intent is before its backend call.
    pub durability: Durability,
    /// sled page cache size in bytes.
    pub cache_capacity: u64,
    /// Write a checkpoint every this many records (0: never).
    pub checkpoint_every: u64,
    /// At a checkpoint, seal history into an archive segment once the journal's active sled
    /// generation holds this many records (0: never), so recovery time does not grow with
    /// history. See `JournalOptions::segment_records`.
    pub segment_records: u64,
    /// Recovery choices.
    pub recovery: RecoveryPolicy,
    /// Attempts per teardown during recovery.
    pub teardown_attempts: u32,
    /// First backoff between teardown attempts (doubles each time).
    pub teardown_backoff: Duration,
    /// How long an add of a disk whose previous attachment is still being torn down waits for
    /// that teardown before it fails with `Error::DiskBusy` (a teardown that failed and is not
    /// being retried fails it at once).
    pub busy_disk_wait: Duration,
    /// How long recovery waits for a backend's `inspect`.
    pub inspect_timeout: Duration,
    /// How long an operation waits for its records to become durable before the manager
    /// stops (a journal disk that stopped answering). Default 60 s.
    pub durable_timeout: Duration,
    /// After each checkpoint, prune records older than this keeps (`None`: keep everything).
    pub retention: Option<Retention>,
    /// Open even when records that had been durable are missing from the journal's files
    /// (damage); by default such an open fails with `JournalError::LostRecords`.
    pub accept_lost_records: bool,
    /// Seal the journal's head at every durable point with this key, kept outside the journal
    /// directory, so that `lunledger verify --key-file` detects any rewritten history (see
    /// `lunledger_journal::SealKey`). `None`: no seal.
    pub seal_key: Option<lunledger_journal::SealKey>,
    /// Crash-point hook (tests only).
    #[cfg(feature = "testing")]
    pub crash_hook: Option<Arc<dyn CrashHook>>,
}

impl std::fmt::Debug for ManagerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("ManagerOptions");
        d.field("config", &self.config)
            .field("durability", &self.durability)
            .field("cache_capacity", &self.cache_capacity)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("segment_records", &self.segment_records)
            .field("recovery", &self.recovery)
            .field("teardown_attempts", &self.teardown_attempts)
            .field("teardown_backoff", &self.teardown_backoff)
            .field("busy_disk_wait", &self.busy_disk_wait)
            .field("inspect_timeout", &self.inspect_timeout)
            .field("durable_timeout", &self.durable_timeout)
            .field("retention", &self.retention)
            .field("accept_lost_records", &self.accept_lost_records)
            .field("seal_key", &self.seal_key);
        #[cfg(feature = "testing")]
        d.field("crash_hook", &self.crash_hook.as_ref().map(|_| "set"));
        d.finish()
    }
}

impl ManagerOptions {
    /// Defaults around `config`: Flush durability, 8 MiB cache, a checkpoint every 10 000 records,
    /// history sealed at a checkpoint once 10 000 records are in sled, 3 teardown attempts from 20 ms, 10 s inspect timeout,
    /// 10 s wait for a busy disk's teardown.
    pub fn new(config: ManagerConfig) -> Self {
        ManagerOptions {
            config,
            durability: Durability::Flush,
            cache_capacity: 8 << 20,
            checkpoint_every: 10_000,
            segment_records: 10_000,
            recovery: RecoveryPolicy::default(),
            teardown_attempts: 3,
            teardown_backoff: Duration::from_millis(20),
            inspect_timeout: Duration::from_secs(10),
            durable_timeout: Duration::from_secs(60),
            busy_disk_wait: Duration::from_secs(10),
            retention: None,
            accept_lost_records: false,
            seal_key: None,
            #[cfg(feature = "testing")]
            crash_hook: None,
        }
    }
}

/// Checks a configuration: controllers and LUNs non-zero, a format with exactly one `%d` and no
/// other `%`, reserved slots in range and distinct.
pub fn validate_config(c: &ManagerConfig) -> Result<()> {
    if c.controllers == 0 || c.luns_per_controller == 0 {
        return Err(Error::InvalidConfig(format!(
            "{} controllers x {} LUNs leaves no slot",
            c.controllers, c.luns_per_controller
        )));
    }
    if c.mount_format.matches("%d").count() != 1 || c.mount_format.matches('%').count() != 1 {
        return Err(Error::InvalidConfig(format!(
            "mount format {:?} must hold exactly one %d and no other %",
            c.mount_format
        )));
    }
    if let Err(why) = crate::guest_os::check_guest_path(c.guest, &c.mount_format) {
        return Err(Error::InvalidConfig(format!(
            "mount format {:?} is not a {} guest path: {why}",
            c.mount_format, c.guest
        )));
    }
    // hcsshim's VerifyOptions: "exactly 1 SCSI controller is required for WCOW"; with one
    // controller every mount is on controller 0, the only one its Windows mount request takes.
    if c.guest == GuestOs::Windows && c.controllers != 1 {
        return Err(Error::InvalidConfig(format!(
            "a Windows guest has exactly 1 SCSI controller (hcsshim's WCOW), not {}",
            c.controllers
        )));
    }
    let mut seen = HashSet::new();
    for s in &c.reserved {
        if !c.contains(*s) {
            return Err(Error::InvalidConfig(format!(
                "reserved slot {s} is outside {} controllers x {} LUNs",
                c.controllers, c.luns_per_controller
            )));
        }
        if !seen.insert(*s) {
            return Err(Error::InvalidConfig(format!(
                "reserved slot {s} is listed twice"
            )));
        }
    }
    Ok(())
}

/// Asks both backends whether the VM can serve `config` (bounded by `limit` each). A definite
/// mismatch refuses the open; a VM that cannot be asked is only logged (recovery reports it).
async fn check_vm(
    config: &ManagerConfig,
    host: &dyn HostBackend,
    guest: &dyn GuestBackend,
    limit: Duration,
) -> Result<()> {
    let host_res = tokio::time::timeout(limit, host.check_config(config)).await;
    let guest_res = tokio::time::timeout(limit, guest.check_config(config)).await;
    for (side, res) in [("host", host_res), ("guest", guest_res)] {
        match res {
            Ok(Ok(())) => {}
            Ok(Err(BackendError::Mismatch(what))) => return Err(Error::VmMismatch { side, what }),
            Ok(Err(e)) => {
                tracing::warn!(side, error = %e, "cannot check the VM against the configuration")
            }
            Err(_) => tracing::warn!(
                side,
                ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                "checking the VM against the configuration timed out"
            ),
        }
    }
    Ok(())
}

/// Why `new` cannot replace the configuration of `state`, if it cannot.
fn config_conflict(state: &State, new: &ManagerConfig) -> Option<String> {
    state.attachments.keys().find_map(|slot| {
        if !new.contains(*slot) {
            Some(format!(
                "slot {slot} is in use but outside the new configuration"
            ))
        } else if new.reserved.contains(slot) {
            Some(format!(
                "slot {slot} is in use but reserved by the new configuration"
            ))
        } else {
            None
        }
    })
}

/// Rebuilds the state: the newest checkpoint, then every record after it. The checkpoint is
/// first checked against the records (see [`crate::audit::check_newest`]): one they do not
/// support is [`Error::CheckpointMismatch`], never loaded; so is one that cannot be checked
/// because records before it are missing (see [`load_state_with`] to accept that).
pub fn load_state(journal: &JournalReader) -> Result<LoadedState> {
    load_state_with(journal, false)
}

/// [`load_state`]; with `accept_lost_records`, a checkpoint that cannot be checked because
/// records before it are missing or unreadable is used as it is (logged), as an open that
/// accepts lost records goes on with what is left.
pub fn load_state_with(journal: &JournalReader, accept_lost_records: bool) -> Result<LoadedState> {
    let mut state = State::new();
    let mut from = journal.first_seq()?.unwrap_or(1);
    let mut checkpoint = None;
    let mut use_cp = |at: u64, s: State| {
        state = s;
        from = at.saturating_add(1);
        checkpoint = Some(at);
    };
    match crate::audit::check_newest(journal)? {
        Newest::Unusable => {}
        Newest::Supported(at, s) => use_cp(at, s),
        Newest::Unchecked {
            at_seq,
            state: s,
            why,
            records_lost,
        } => {
            if records_lost && !accept_lost_records {
                return Err(Error::CheckpointMismatch { at_seq, what: why });
            }
            tracing::warn!(at_seq, %why, "checkpoint used without being checked");
            use_cp(at_seq, s);
        }
    }
    if checkpoint.is_none() && from > 1 {
        return Err(Error::Internal(format!(
            "records before {from} were pruned and no usable checkpoint covers them"
        )));
    }
    let mut replayed = 0;
    for rec in journal.read_from(from) {
        let rec = rec?;
        state
            .apply(&rec)
            .map_err(|e| Error::Internal(format!("replaying the journal: {e}")))?;
        replayed += 1;
    }
    // The journal appends after its last sequence number: the state must end there too, or
    // the first append would contradict it.
    if state.last_seq != journal.last_seq() {
        let what = format!(
            "the journal continues after seq {} but its records fold to seq {}",
            journal.last_seq(),
            state.last_seq
        );
        return Err(match journal.checkpoints()?.last() {
            Some(cp) if cp.at_seq > state.last_seq => Error::CheckpointMismatch {
                at_seq: cp.at_seq,
                what,
            },
            _ => Error::Internal(what),
        });
    }
    Ok(LoadedState {
        state,
        checkpoint,
        replayed,
    })
}

/// What [`load_state`] rebuilt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedState {
    /// The state as of the journal's last record.
    pub state: State,
    /// The checkpoint it started from (its sequence number), if any.
    pub checkpoint: Option<u64>,
    /// Records replayed after the checkpoint.
    pub replayed: u64,
}

impl Manager {
    /// Opens (or creates) the journal at `dir` with default options and recovers.
    pub async fn open(
        dir: impl AsRef<Path>,
        config: ManagerConfig,
        host: Arc<dyn HostBackend>,
        guest: Arc<dyn GuestBackend>,
    ) -> Result<Manager> {
        Self::open_with(dir, ManagerOptions::new(config), host, guest).await
    }

    /// Opens (or creates) the journal at `dir` and recovers: rebuilds the state, rolls back adds
    /// whose caller never got a handle, finishes releases, settles lost outcomes with the
    /// backends' `inspect`, retries teardowns, and reports drift. See [`Manager::last_recovery`].
    pub async fn open_with(
        dir: impl AsRef<Path>,
        opts: ManagerOptions,
        host: Arc<dyn HostBackend>,
        guest: Arc<dyn GuestBackend>,
    ) -> Result<Manager> {
        let started = Instant::now();
        validate_config(&opts.config)?;
        check_vm(
            &opts.config,
            host.as_ref(),
            guest.as_ref(),
            opts.inspect_timeout,
        )
        .await?;
        let dir = dir.as_ref().to_path_buf();
        let accept_lost = opts.accept_lost_records;
        let jopts = JournalOptions {
            durability: opts.durability,
            cache_capacity: opts.cache_capacity,
            accept_lost_records: opts.accept_lost_records,
            segment_records: opts.segment_records,
            seal_key: opts.seal_key.clone(),
            ..JournalOptions::default()
        };
        let (journal, loaded) = tokio::task::spawn_blocking(move || {
            let journal = Journal::open(&dir, jopts)?;
            let loaded = load_state_with(&journal.reader(), accept_lost)?;
            Ok::<_, Error>((journal, loaded))
        })
        .await
        .map_err(|e| Error::Internal(format!("open task: {e}")))??;
        let LoadedState {
            state,
            checkpoint,
            replayed,
        } = loaded;
        let opened = journal.open_report();
        let tail_quarantined = opened.tail_quarantined.as_ref().map(|t| {
            format!(
                "{} record(s) from seq {} set aside: {}",
                t.records, t.first_bad_seq, t.what
            )
        });
        let lost_records = opened.lost_records;
        let mut journal_findings = Vec::new();
        if let Some(w) = &opened.watermark {
            journal_findings.push(w.clone());
        }
        for lunledger_journal::SeqRange { first, last } in &opened.missing_segments {
            journal_findings.push(format!(
                "records {first}..={last} are lost: their sealed segment is missing"
            ));
        }
        for p in &opened.unexpected_segments {
            journal_findings.push(format!(
                "segment file {} is not in the manifest (ignored)",
                p.display()
            ));
        }
        if opened.manifest_reconstructed {
            journal_findings.push(
                "the journal had no segment manifest (written before manifests existed): reconstructed from the files present".into(),
            );
        }
        for f in &journal_findings {
            tracing::warn!(finding = %f, "journal integrity");
        }
        if let Some(t) = &tail_quarantined {
            tracing::warn!(damage = %t, "journal tail was damaged; recovered the valid prefix");
        }
        if let Some(old) = &state.config {
            if old.guest != opts.config.guest {
                return Err(Error::GuestOsMismatch {
                    journal: old.guest,
                    requested: opts.config.guest,
                });
            }
            if *old != opts.config {
                if let Some(why) = config_conflict(&state, &opts.config) {
                    return Err(Error::ConfigConflict(why));
                }
            }
        }
        let last_checkpoint = checkpoint.unwrap_or(0);
        let inner = Arc::new(Inner {
            journal,
            state: Mutex::new(state),
            host,
            guest,
            changed: Notify::new(),
            stopped: Mutex::new(None),
            #[cfg(feature = "testing")]
            crash: opts.crash_hook.clone(),
            #[cfg(not(feature = "testing"))]
            crash: None,
            releasing: Mutex::new(HashSet::new()),
            issuing: Mutex::new(HashSet::new()),
            busy: Mutex::new(HashSet::new()),
            failed_steps: Mutex::new(HashMap::new()),
            opts: opts.clone(),
            last_recovery: Mutex::new(None),
            teardown_steps: AtomicU64::new(0),
            last_checkpoint: tokio::sync::Mutex::new(last_checkpoint),
            tasks: tokio_util::task::TaskTracker::new(),
        });
        if inner.state().config.as_ref() != Some(&opts.config) {
            let op = inner.start_op(OpKind::Configure)?;
            inner.record(
                op,
                Event::ConfigSet {
                    config: opts.config.clone(),
                },
            )?;
            let seq = inner.record(op, Event::OpFinished)?;
            inner.durable_for(op, seq).await?;
        }
        let report = RecoveryReport {
            checkpoint_seq: checkpoint,
            records_replayed: replayed,
            tail_quarantined,
            lost_records,
            journal_findings,
            duration: started.elapsed(),
            ..Default::default()
        };
        recover(&inner, report).await?;
        inner.maybe_checkpoint().await?;
        Ok(Manager { inner })
    }
}
