//! A point-in-time state for people and programs: attachments with reference counts and
//! phases, mounts with reference counts and paths, handles and operations in flight. The JSON
//! form is a stable schema of its own (the fold's `State` has map keys JSON cannot carry).

use crate::audit::describe_drift;
use crate::cli::clock::format_micros;
use crate::cli::style;
use crate::cli::table::Table;
use crate::recovery::State;
use serde::Serialize;

/// The state, flattened for output.
#[derive(Clone, Debug, Serialize)]
pub struct StateView {
    /// Sequence number of the last record folded.
    pub last_seq: u64,
    /// Time of that record, when known.
    pub time: Option<String>,
    /// Attachments by slot.
    pub attachments: Vec<AttachmentView>,
    /// Mounts by id.
    pub mounts: Vec<MountView>,
    /// Live handles by id.
    pub handles: Vec<HandleView>,
    /// Operations in flight.
    pub ops: Vec<OpView>,
    /// Drift found by the most recent recovery, described.
    pub drift: Vec<String>,
}

/// One attachment.
#[derive(Clone, Debug, Serialize)]
pub struct AttachmentView {
    /// `controller:lun`.
    pub slot: String,
    /// Attachment generation id.
    pub attach: u64,
    /// Host path.
    pub disk: String,
    /// Read-only.
    pub read_only: bool,
    /// Disk kind (hcsshim's name).
    pub kind: &'static str,
    /// References held.
    pub refs: u32,
    /// Phase (`Reserved`, `Attaching`, `Attached`, `Failed`, `NeedsUnplug`, `NeedsDetach`, `Lost`).
    pub phase: String,
    /// Step with a journaled intent and no outcome.
    pub pending: Option<&'static str>,
    /// Last step error.
    pub last_error: Option<String>,
}

/// One mount.
#[derive(Clone, Debug, Serialize)]
pub struct MountView {
    /// Mount id.
    pub mount: u64,
    /// Its attachment's slot.
    pub slot: String,
    /// Guest path.
    pub path: String,
    /// Block-device link rather than a filesystem mount.
    pub block_dev: bool,
    /// References held.
    pub refs: u32,
    /// Phase (`Reserved`, `Mounting`, `Mounted`, `Failed`, `NeedsUnmount`, `Lost`).
    pub phase: String,
    /// Step with a journaled intent and no outcome.
    pub pending: Option<&'static str>,
    /// Last step error.
    pub last_error: Option<String>,
}

/// One live handle.
#[derive(Clone, Debug, Serialize)]
pub struct HandleView {
    /// Handle id.
    pub handle: u64,
    /// Owner label.
    pub owner: Option<String>,
    /// Slot.
    pub slot: String,
    /// Mount id, if mounted.
    pub mount: Option<u64>,
    /// Guest path (empty for attach only).
    pub path: String,
    /// Operation that issued it.
    pub issued_by: u64,
    /// A release has started.
    pub releasing: bool,
}

/// One operation in flight.
#[derive(Clone, Debug, Serialize)]
pub struct OpView {
    /// Operation id.
    pub op: u64,
    /// Kind.
    pub kind: &'static str,
    /// Sequence number of its start.
    pub started_seq: u64,
    /// Handle it issued, if any.
    pub handle: Option<u64>,
    /// Handle it is releasing, if any.
    pub releasing: Option<u64>,
}

impl StateView {
    /// Flattens `st` (`ts_micros`: time of its last record, if known).
    pub fn of(st: &State, ts_micros: Option<u64>) -> StateView {
        StateView {
            last_seq: st.last_seq,
            time: ts_micros.map(format_micros),
            attachments: st
                .attachments
                .iter()
                .map(|(slot, a)| AttachmentView {
                    slot: slot.to_string(),
                    attach: a.attach,
                    disk: a.disk.path.clone(),
                    read_only: a.disk.read_only,
                    kind: a.disk.kind.as_str(),
                    refs: a.refs,
                    phase: format!("{:?}", a.phase),
                    pending: a.pending.map(|s| s.name()),
                    last_error: a.last_error.clone(),
                })
                .collect(),
            mounts: st
                .mounts
                .iter()
                .map(|(id, m)| MountView {
                    mount: *id,
                    slot: m.slot.to_string(),
                    path: m.path.clone(),
                    block_dev: m.spec.block_dev,
                    refs: m.refs,
                    phase: format!("{:?}", m.phase),
                    pending: m.pending.map(|s| s.name()),
                    last_error: m.last_error.clone(),
                })
                .collect(),
            handles: st
                .handles
                .iter()
                .map(|(id, h)| HandleView {
                    handle: *id,
                    owner: h.owner.clone(),
                    slot: h.slot.to_string(),
                    mount: h.mount,
                    path: h.path.clone(),
                    issued_by: h.issued_by,
                    releasing: h.releasing,
                })
                .collect(),
            ops: st
                .ops
                .iter()
                .map(|(id, o)| OpView {
                    op: *id,
                    kind: o.kind.name(),
                    started_seq: o.started_seq,
                    handle: o.handle,
                    releasing: o.releasing,
                })
                .collect(),
            drift: st.drift.iter().map(describe_drift).collect(),
        }
    }

    /// Whether nothing is attached, mounted, held or in flight.
    pub fn is_empty(&self) -> bool {
        self.attachments.is_empty()
            && self.mounts.is_empty()
            && self.handles.is_empty()
            && self.ops.is_empty()
    }

    /// Tables for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let when = self
            .time
            .as_deref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        out.push_str(&style::bold(&format!(
            "State as of seq {}{when}\n",
            self.last_seq
        )));
        let none = |what: &str| format!("  no {what}\n");
        out.push_str(&style::bold(&format!(
            "\nAttachments ({})\n",
            self.attachments.len()
        )));
        if self.attachments.is_empty() {
            out.push_str(&none("attachments"));
        } else {
            let mut t = Table::new(&[
                "SLOT",
                "DISK",
                "MODE",
                "REFS",
                "PHASE",
                "PENDING",
                "LAST ERROR",
            ]);
            for a in &self.attachments {
                t.painted(vec![
                    (a.slot.clone(), None),
                    (a.disk.clone(), None),
                    ((if a.read_only { "ro" } else { "rw" }).to_string(), None),
                    (a.refs.to_string(), None),
                    (a.phase.clone(), phase_paint(&a.phase)),
                    (a.pending.unwrap_or("-").to_string(), None),
                    (a.last_error.clone().unwrap_or_else(|| "-".into()), None),
                ]);
            }
            out.push_str(&indent(&t.render()));
        }
        out.push_str(&style::bold(&format!("\nMounts ({})\n", self.mounts.len())));
        if self.mounts.is_empty() {
            out.push_str(&none("mounts"));
        } else {
            let mut t = Table::new(&[
                "MOUNT",
                "SLOT",
                "PATH",
                "TYPE",
                "REFS",
                "PHASE",
                "PENDING",
                "LAST ERROR",
            ]);
            for m in &self.mounts {
                t.painted(vec![
                    (m.mount.to_string(), None),
                    (m.slot.clone(), None),
                    (m.path.clone(), None),
                    ((if m.block_dev { "block" } else { "fs" }).to_string(), None),
                    (m.refs.to_string(), None),
                    (m.phase.clone(), phase_paint(&m.phase)),
                    (m.pending.unwrap_or("-").to_string(), None),
                    (m.last_error.clone().unwrap_or_else(|| "-".into()), None),
                ]);
            }
            out.push_str(&indent(&t.render()));
        }
        out.push_str(&style::bold(&format!(
            "\nHandles ({})\n",
            self.handles.len()
        )));
        if self.handles.is_empty() {
            out.push_str(&none("handles"));
        } else {
            let mut t = Table::new(&[
                "HANDLE",
                "OWNER",
                "SLOT",
                "MOUNT",
                "PATH",
                "ISSUED BY",
                "RELEASING",
            ]);
            for h in &self.handles {
                t.row(vec![
                    h.handle.to_string(),
                    h.owner.clone().unwrap_or_else(|| "-".into()),
                    h.slot.clone(),
                    h.mount.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                    if h.path.is_empty() {
                        "-".into()
                    } else {
                        h.path.clone()
                    },
                    format!("op {}", h.issued_by),
                    (if h.releasing { "yes" } else { "no" }).into(),
                ]);
            }
            out.push_str(&indent(&t.render()));
        }
        out.push_str(&style::bold(&format!(
            "\nOperations in flight ({})\n",
            self.ops.len()
        )));
        if self.ops.is_empty() {
            out.push_str(&none("operations in flight"));
        } else {
            let mut t = Table::new(&["OP", "KIND", "STARTED AT SEQ", "HANDLE", "RELEASING"]);
            for o in &self.ops {
                t.row(vec![
                    o.op.to_string(),
                    o.kind.to_string(),
                    o.started_seq.to_string(),
                    o.handle
                        .map(|h| h.to_string())
                        .unwrap_or_else(|| "-".into()),
                    o.releasing
                        .map(|h| h.to_string())
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            out.push_str(&indent(&t.render()));
        }
        out
    }
}

fn phase_paint(phase: &str) -> Option<fn(&str) -> String> {
    match phase {
        "Attached" | "Mounted" => Some(style::green),
        "Failed" | "Lost" => Some(style::red),
        "NeedsUnplug" | "NeedsDetach" | "NeedsUnmount" => Some(style::yellow),
        _ => None,
    }
}

/// Indents every non-empty line by two spaces.
pub fn indent(s: &str) -> String {
    s.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("  {l}\n")
            }
        })
        .collect()
}
