//! `lunledger status`: the current state, teardowns still due, and drift from the last recovery.
//! Exits 1 when something needs attention (a teardown due, an invariant broken, damage).

use crate::args::StatusArgs;
use crate::replay::{open_copy, write_out};
use lunledger::audit::Auditor;
use lunledger::cli::fail::{CliResult, Outcome};
use lunledger::cli::snapshot;
use lunledger::cli::style;
use lunledger::cli::table::Table;
use lunledger::cli::view::{indent, StateView};
use lunledger::model::Target;
use serde::Serialize;

/// A teardown still due.
#[derive(Debug, Serialize)]
struct Pending {
    /// `unmount` or `unplug` / `detach`.
    step: &'static str,
    /// Mount id or slot.
    target: String,
    /// Guest path or host path.
    what: String,
    /// Phase.
    phase: String,
    /// The last error.
    last_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Status {
    state: StateView,
    pending_teardowns: Vec<Pending>,
    violations: Vec<String>,
    problem: Option<String>,
    counters: Counters,
}

#[derive(Debug, Serialize)]
struct Counters {
    ops_finished: u64,
    ops_failed: u64,
    ops_rolled_back: u64,
    ops_abandoned: u64,
    handles_issued: u64,
    handles_released: u64,
}

/// Runs `status`.
pub fn run(a: &StatusArgs) -> CliResult {
    let snap = open_copy(&a.common, false)?;
    let hist = snapshot::history(&snap, None)?;
    let mut auditor = Auditor::new(hist.start.clone());
    let mut problem = None;
    let mut ts = None;
    for rec in &hist.records {
        if let Err(e) = auditor.push(rec) {
            problem = Some(format!(
                "record {} ({}) does not fit the state: {}",
                e.seq, e.event, e.what
            ));
            break;
        }
        ts = Some(rec.ts_micros);
    }
    if problem.is_none() {
        problem = hist
            .damage
            .as_ref()
            .map(|d| format!("journal damaged: {}", d.what));
    }
    let st = auditor.state();
    let pending = st
        .pending_teardowns()
        .into_iter()
        .map(|p| Pending {
            step: p.step.name(),
            target: match p.target {
                Target::Mount(id) => format!("mount {id}"),
                Target::Slot(slot) => format!("slot {slot}"),
            },
            what: p.path,
            phase: p.phase,
            last_error: p.last_error,
        })
        .collect();
    let c = &st.counters;
    let status = Status {
        state: StateView::of(st, ts),
        pending_teardowns: pending,
        violations: st.violations(),
        problem,
        counters: Counters {
            ops_finished: c.ops_finished,
            ops_failed: c.ops_failed,
            ops_rolled_back: c.ops_rolled_back,
            ops_abandoned: c.ops_abandoned,
            handles_issued: c.handles_issued,
            handles_released: c.handles_released,
        },
    };
    let bad = !status.pending_teardowns.is_empty()
        || !status.violations.is_empty()
        || status.problem.is_some();
    let text = if a.common.json {
        format!("{}\n", serde_json::to_string(&status).unwrap_or_default())
    } else {
        render(&status)
    };
    write_out(&mut std::io::stdout().lock(), &text)?;
    Ok(Outcome::problem_if(bad))
}

fn render(s: &Status) -> String {
    let mut out = s.state.render();
    out.push_str(&style::bold(&format!(
        "\nPending teardowns ({})\n",
        s.pending_teardowns.len()
    )));
    if s.pending_teardowns.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut t = Table::new(&["STEP", "TARGET", "PATH", "PHASE", "LAST ERROR"]);
        for p in &s.pending_teardowns {
            t.painted(vec![
                (p.step.to_string(), Some(style::yellow)),
                (p.target.clone(), None),
                (p.what.clone(), None),
                (p.phase.clone(), None),
                (p.last_error.clone().unwrap_or_else(|| "-".into()), None),
            ]);
        }
        out.push_str(&indent(&t.render()));
    }
    out.push_str(&style::bold(&format!(
        "\nDrift found by the last recovery ({})\n",
        s.state.drift.len()
    )));
    if s.state.drift.is_empty() {
        out.push_str("  none\n");
    }
    for d in &s.state.drift {
        out.push_str(&format!("  {}\n", style::yellow(&style::printable(d))));
    }
    let c = &s.counters;
    out.push_str(&format!(
        "\nLifetime: {} ops finished, {} failed, {} rolled back, {} abandoned; {} handles issued, {} released\n",
        c.ops_finished, c.ops_failed, c.ops_rolled_back, c.ops_abandoned, c.handles_issued, c.handles_released
    ));
    for v in &s.violations {
        out.push_str(&style::red(&format!(
            "invariant violated: {}\n",
            style::printable(&v.to_string())
        )));
    }
    if let Some(p) = &s.problem {
        out.push_str(&style::red(&format!("problem: {}\n", style::printable(p))));
    }
    out
}
