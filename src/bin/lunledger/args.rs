//! The command line, declared with clap's derive API.

use clap::{Args, Parser, Subcommand, ValueEnum};
use lunledger::demo::{DemoArgs, DemoShimArgs};
use std::path::PathBuf;

/// lunledger: audit and inspect the journal of a crash-safe SCSI disk manager.
///
/// Every command works on a private copy of the journal and never changes it. Exit codes: 0 ok,
/// 1 problem found, 2 usage or I/O error (including a journal in use by a running shim).
#[derive(Debug, Parser)]
#[command(name = "lunledger", version, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log the library's tracing spans and events to stderr: -v info, -vv debug, -vvv trace
    /// (RUST_LOG, when set, takes precedence).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the audit trail (one line per record), or with --at the state at a point in time.
    Replay(ReplayArgs),
    /// Show the current state, pending teardowns and drift found by the last recovery.
    Status(StatusArgs),
    /// Check integrity (hash chain, continuity, decoding) and the fold's invariants.
    Verify(VerifyArgs),
    /// Draw the history as a timeline: one self-contained HTML page (or --json).
    Timeline(TimelineArgs),
    /// Show the recovery plan opening the journal would execute (requires --dry-run).
    Recover(RecoverArgs),
    /// Run a scripted shim session on a simulated VM, kill it mid-operation, recover, clean up.
    Demo(DemoArgs),
    /// The demo's shim process (spawned by `demo`).
    #[command(hide = true)]
    DemoShim(DemoShimArgs),
}

/// Options every journal command takes.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The journal directory.
    pub journal: PathBuf,
    /// Audit a point-in-time copy even when a running process holds the journal.
    #[arg(long)]
    pub copy: bool,
    /// One JSON object per line instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Where the private copy of the journal goes (default: TMPDIR); for when the temporary
    /// directory is full or small.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Check the keyed seal with this key (32 raw bytes or 64 hex digits; the shim's
    /// `seal_key`): without the key, a rewritten history with a recomputed chain passes.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Check an anchor kept outside the journal (the `head` a verify or the shim printed):
    /// catches a dropped tail and a directory rolled back to an older copy.
    #[arg(long, value_name = "SEQ:HASH")]
    pub expect_head: Option<String>,
}

/// `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Show the state as of this sequence number or time instead of the trail.
    #[arg(long, value_name = "SEQ|TIME", allow_hyphen_values = true)]
    pub at: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Newest first.
    #[arg(long)]
    pub reverse: bool,
    /// Only the last N matching records.
    #[arg(long, short = 'n', value_name = "N")]
    pub lines: Option<usize>,
    /// Keep printing new records (re-copies the journal every 500 ms) until Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// After the records, print the cursor (`SEQ:HASH` of the last record read) to resume from.
    #[arg(long)]
    pub show_cursor: bool,
    /// Only records after this cursor; refused (exit 1) when the record there no longer carries
    /// the cursor's hash (the journal was replaced, restored or pruned past it).
    #[arg(long, value_name = "CURSOR")]
    pub after_cursor: Option<String>,
    /// Resume after the cursor in FILE (if it holds one), and write the new cursor to it after
    /// the records (and after each batch with --follow).
    #[arg(long, value_name = "FILE")]
    pub cursor_file: Option<PathBuf>,
}

/// `timeline`.
#[derive(Debug, Args)]
pub struct TimelineArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The HTML file to write (with --json: the JSON file; default: stdout).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// The record filters `replay` takes, for commands that share them.
#[derive(Clone, Debug, Default, Args)]
pub struct FilterArgs {
    /// Only records of this operation.
    #[arg(long, value_name = "N")]
    pub op: Option<u64>,
    /// Only records concerning this handle (the add that issued it, its release).
    #[arg(long, value_name = "N")]
    pub handle: Option<u64>,
    /// Only records of this owner's operations and handles.
    #[arg(long, value_name = "S")]
    pub owner: Option<String>,
    /// Only records about this disk (host path).
    #[arg(long, value_name = "PATH")]
    pub disk: Option<String>,
    /// Only records about this slot.
    #[arg(long, value_name = "C:L")]
    pub slot: Option<String>,
    /// Only records of this backend step.
    #[arg(long, value_enum)]
    pub step: Option<StepArg>,
    /// Only failures: failed steps, failed and rolled-back operations.
    #[arg(long)]
    pub failed: bool,
    /// Only records at or after this time (RFC 3339 UTC, or relative: -10m, -2h).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Only records at or before this time.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub until: Option<String>,
    /// Only records from this sequence number on.
    #[arg(long, value_name = "SEQ")]
    pub from_seq: Option<u64>,
    /// Only records up to this sequence number.
    #[arg(long, value_name = "SEQ")]
    pub to_seq: Option<u64>,
}

impl FilterArgs {
    /// Whether any filter is given.
    pub fn any(&self) -> bool {
        self.op.is_some()
            || self.handle.is_some()
            || self.owner.is_some()
            || self.disk.is_some()
            || self.slot.is_some()
            || self.step.is_some()
            || self.failed
            || self.since.is_some()
            || self.until.is_some()
            || self.from_seq.is_some()
            || self.to_seq.is_some()
    }
}

/// A backend step name for `--step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StepArg {
    /// Host attach.
    Attach,
    /// Guest mount.
    Mount,
    /// Guest unmount.
    Unmount,
    /// Guest unplug.
    Unplug,
    /// Host detach.
    Detach,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `recover`.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Only plan; never execute (the only mode: the CLI never changes a journal).
    #[arg(long)]
    pub dry_run: bool,
    /// Observe a persistent simulated VM's state file for the plan (else a journal-only plan).
    #[arg(long, value_name = "FILE")]
    pub sim_state: Option<PathBuf>,
    /// Plan as if recovery were configured to detach disks the journal does not know.
    #[arg(long)]
    pub detach_unknown: bool,
}
