//! `replay`'s record filters. Each is a plain predicate over an audit [`Row`]; all given filters
//! must hold (AND).

use crate::args::{FilterArgs, StepArg};
use lunledger::audit::Row;
use lunledger::cli::clock::{now_micros, parse_when};
use lunledger::cli::fail::CliError;

/// The filters given on the command line.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    op: Option<u64>,
    handle: Option<u64>,
    owner: Option<String>,
    disk: Option<String>,
    slot: Option<String>,
    step: Option<&'static str>,
    failed: bool,
    since: Option<u64>,
    until: Option<u64>,
    from_seq: Option<u64>,
    to_seq: Option<u64>,
}

impl Filter {
    /// Builds the filter from the filter options `replay` and `timeline` share, parsing times
    /// and slots (a bad value is a usage error).
    pub fn from_filter_args(a: &FilterArgs) -> Result<Filter, CliError> {
        let now = now_micros();
        let when = |s: &Option<String>| s.as_deref().map(|s| parse_when(s, now)).transpose();
        let slot = a.slot.as_deref().map(parse_slot).transpose()?;
        if let (Some(from), Some(to)) = (a.from_seq, a.to_seq) {
            if from > to {
                return Err(CliError::Usage(format!(
                    "--from-seq {from} is after --to-seq {to}: no record could match"
                )));
            }
        }
        let (since, until) = (when(&a.since)?, when(&a.until)?);
        if let (Some(s), Some(u)) = (since, until) {
            if s > u {
                return Err(CliError::Usage(
                    "--since is after --until: no record could match".into(),
                ));
            }
        }
        Ok(Filter {
            op: a.op,
            handle: a.handle,
            owner: a.owner.clone(),
            disk: a.disk.clone(),
            slot,
            step: a.step.map(step_name),
            failed: a.failed,
            since,
            until,
            from_seq: a.from_seq,
            to_seq: a.to_seq,
        })
    }

    /// Whether `row` passes every filter.
    pub fn matches(&self, row: &Row) -> bool {
        fn eq<T: PartialEq>(want: &Option<T>, got: Option<&T>) -> bool {
            match want {
                None => true,
                Some(w) => got == Some(w),
            }
        }
        fn within(bound: Option<u64>, ok: impl Fn(u64) -> bool) -> bool {
            bound.map(ok).unwrap_or(true)
        }
        eq(&self.op, Some(&row.op))
            && eq(&self.handle, row.handle.as_ref())
            && eq(&self.owner, row.owner.as_ref())
            && eq(&self.disk, row.disk.as_ref())
            && eq(&self.slot, row.slot.as_ref())
            && eq(&self.step, row.step.as_ref())
            && (!self.failed || matches!(row.outcome, Some("failed" | "rolled-back")))
            && within(self.since, |t| row.ts_micros >= t)
            && within(self.until, |t| row.ts_micros <= t)
            && within(self.from_seq, |s| row.seq >= s)
            && within(self.to_seq, |s| row.seq <= s)
    }

    /// The last sequence number any matching row can have.
    pub fn to_seq(&self) -> Option<u64> {
        self.to_seq
    }
}

fn step_name(s: StepArg) -> &'static str {
    match s {
        StepArg::Attach => "attach",
        StepArg::Mount => "mount",
        StepArg::Unmount => "unmount",
        StepArg::Unplug => "unplug",
        StepArg::Detach => "detach",
    }
}

/// Parses `C:L` into the canonical `controller:lun` text rows carry.
pub fn parse_slot(s: &str) -> Result<String, CliError> {
    let bad = || CliError::Usage(format!("slot {s:?} is not controller:lun, e.g. 0:3"));
    let (c, l) = s.split_once(':').ok_or_else(bad)?;
    let c: u32 = c.trim().parse().map_err(|_| bad())?;
    let l: u32 = l.trim().parse().map_err(|_| bad())?;
    Ok(format!("{c}:{l}"))
}
