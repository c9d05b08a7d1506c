//! A timeline picture of a journal (`lunledger timeline`): one lane per slot, attachments from
//! attach intent to detach with their mounts nested under them, operations as spans, every
//! backend step with its duration, shim restarts with what recovery did next to them.
//!
//! This module is the data model, built from journal records by folding them ([`build`]); the
//! same value is the `--json` output. [`layout`] packs operation spans into rows and
//! [`html`] renders one self-contained HTML page (inline SVG, CSS and JavaScript, no network).
//!
//! Times are microseconds relative to [`Timeline::t0`] (the first record shown), which keeps
//! the numbers short in a file that may describe a million records.

mod build;
pub mod html;
pub mod layout;

pub use build::{build, build_filtered, describe_drift};

use serde::Serialize;

/// The picture's data: everything the page draws.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timeline {
    /// Wall-clock time of the first record shown, microseconds since the Unix epoch.
    pub t0: u64,
    /// Time of the last record shown, relative to `t0`.
    pub end: u64,
    /// Sequence numbers of the first and last record shown (0 when none).
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// Host paths of the disks, in order of first appearance; spans name a disk by its index
    /// here (the page gives each its own colour).
    pub disks: Vec<String>,
    /// One lane per slot that held an attachment, ordered by controller then LUN.
    pub lanes: Vec<Lane>,
    /// Every operation (add, release, recovery, ...) with at least one record shown.
    pub ops: Vec<OpSpan>,
    /// Shim restarts: the gap before each recovery operation.
    pub restarts: Vec<Restart>,
    /// Drift found by recovery.
    pub drift: Vec<DriftMark>,
    /// The records shown, column by column.
    pub records: Records,
    /// Why the picture stops early (a record that does not fit the state, damage), if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One slot's lane.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Lane {
    /// `controller:lun`.
    pub slot: String,
    /// Its attachments, oldest first; they never overlap (a slot holds one at a time).
    pub spans: Vec<AttachSpan>,
}

/// How a span (attachment or mount) ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpanEnd {
    /// Torn down (detached, unmounted) or freed without ever reaching the VM.
    Gone,
    /// Still held at the last record shown.
    Open,
    /// Its teardown was due and had not succeeded at the last record shown.
    Due,
    /// The VM lost it without our teardown (drift).
    Lost,
}

/// An attachment: from its reservation (the attach intent follows at once) to its detach.
#[derive(Clone, Debug, Serialize)]
pub struct AttachSpan {
    /// The attachment's generation id.
    pub attach: u64,
    /// Index into [`Timeline::disks`].
    pub disk: usize,
    /// Attached read-only.
    pub read_only: bool,
    /// Start and end (relative µs); an open span ends at [`Timeline::end`].
    pub start: u64,
    /// See `start`.
    pub stop: u64,
    /// How it ends.
    pub end: SpanEnd,
    /// Backend steps on the attachment (attach, unplug, detach).
    pub steps: Vec<StepSpan>,
    /// Mounts of this attachment.
    pub mounts: Vec<MountSpan>,
    /// Operations that took or dropped a reference on it (first [`MAX_IDS`]).
    pub ops: Vec<u64>,
    /// Handles issued on it (first [`MAX_IDS`]).
    pub handles: Vec<u64>,
    /// Indices into [`Timeline::records`] of the records behind it (first [`MAX_RECS`]).
    pub recs: Vec<u32>,
}

/// A guest mount, nested under its attachment.
#[derive(Clone, Debug, Serialize)]
pub struct MountSpan {
    /// Mount id.
    pub mount: u64,
    /// Guest path.
    pub path: String,
    /// Start and end (relative µs).
    pub start: u64,
    /// See `start`.
    pub stop: u64,
    /// How it ends.
    pub end: SpanEnd,
    /// Backend steps on it (mount, unmount).
    pub steps: Vec<StepSpan>,
    /// Operations that took or dropped a reference on it (first [`MAX_IDS`]).
    pub ops: Vec<u64>,
    /// Records behind it (first [`MAX_RECS`]).
    pub recs: Vec<u32>,
}

/// One backend step: from its intent to its outcome.
#[derive(Clone, Debug, Serialize)]
pub struct StepSpan {
    /// `attach`, `mount`, `unmount`, `unplug`, `detach`.
    pub step: &'static str,
    /// The operation that ran it.
    pub op: u64,
    /// Intent and outcome times (relative µs); without an outcome, `stop` is the next record
    /// of the journal that shows the shim alive, or the end.
    pub start: u64,
    /// See `start`.
    pub stop: u64,
    /// `ok`, `failed`, `happened`, `did-not-happen`, or `none` (no outcome recorded).
    pub outcome: &'static str,
    /// The backend's error, for a failed step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Records behind it (intent, outcome, resolution).
    pub recs: Vec<u32>,
}

/// An operation.
#[derive(Clone, Debug, Serialize)]
pub struct OpSpan {
    /// Operation id.
    pub op: u64,
    /// `add`, `release`, `recovery`, `retry-teardown`, `configure`.
    pub kind: &'static str,
    /// Start and end (relative µs).
    pub start: u64,
    /// See `start`.
    pub stop: u64,
    /// `ok`, `failed`, `rolled-back`, `abandoned`, or `open` (no end recorded).
    pub outcome: &'static str,
    /// Error or rollback reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Owner label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Disk index for an add.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<usize>,
    /// The handle it issued or released.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    /// The slot it acted on, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// Row in the operations area ([`layout::pack`]).
    pub row: u32,
    /// Records behind it (first [`MAX_RECS`]). Not in the JSON: the records' `op` column
    /// finds them all, and a million records make a hundred thousand operations.
    #[serde(skip)]
    pub recs: Vec<u32>,
}

/// A restart of the shim: the journal is silent, then a recovery operation starts.
#[derive(Clone, Debug, Serialize)]
pub struct Restart {
    /// Time of the last record before the recovery (relative µs).
    pub last_before: u64,
    /// Start of the recovery operation (relative µs).
    pub at: u64,
    /// The recovery operation.
    pub op: u64,
    /// What recovery did, one line each.
    pub did: Vec<String>,
    /// The recovery operation's records (first [`MAX_RECS`]); not in the JSON, as for
    /// [`OpSpan::recs`].
    #[serde(skip)]
    pub recs: Vec<u32>,
}

/// Drift found by recovery.
#[derive(Clone, Debug, Serialize)]
pub struct DriftMark {
    /// When (relative µs).
    pub at: u64,
    /// The slot concerned, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// What disagreed, in words.
    pub what: String,
    /// The record.
    pub recs: Vec<u32>,
}

/// The records shown, as columns (a million records stay a few tens of megabytes).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Records {
    /// Sequence numbers.
    pub seq: Vec<u64>,
    /// Times (relative µs).
    pub t: Vec<u64>,
    /// Operation ids.
    pub op: Vec<u64>,
    /// Event, as an index into `names`.
    pub ev: Vec<u16>,
    /// Outcome, as an index into `names` (0: none).
    pub out: Vec<u16>,
    /// Error or detail, as 1 + an index into `texts` (0: none).
    pub err: Vec<u32>,
    /// Event and outcome names (index 0 is the empty name).
    pub names: Vec<&'static str>,
    /// Error and detail texts, each once.
    pub texts: Vec<String>,
}

/// At most this many record indices are kept per mark (the hover shows them; the rest are
/// counted).
pub const MAX_RECS: usize = 24;
/// At most this many operation or handle ids are kept per span.
pub const MAX_IDS: usize = 64;

impl Timeline {
    /// The timeline as one JSON document (the `--json` output).
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail; an empty object is never written.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Number of marks the page draws one by one at full zoom (attachments, mounts, steps,
    /// operations, restarts, drift).
    pub fn mark_count(&self) -> usize {
        let lanes: usize = self
            .lanes
            .iter()
            .flat_map(|l| &l.spans)
            .map(|a| {
                1 + a.steps.len()
                    + a.mounts.len()
                    + a.mounts.iter().map(|m| m.steps.len()).sum::<usize>()
            })
            .sum();
        lanes + self.ops.len() + self.restarts.len() + self.drift.len()
    }
}
