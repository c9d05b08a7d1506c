//! `lunledger timeline`: the history as a picture. Reads the journal as `replay` does (private
//! copy, pruned history from its checkpoint), selects records with `replay`'s filters, and
//! leaves building and drawing to the library (`lunledger::timeline`).

use crate::args::TimelineArgs;
use crate::filter::Filter;
use lunledger::audit::{Auditor, History};
use lunledger::cli::fail::{CliError, CliResult, Outcome};
use lunledger::cli::{snapshot, style};
use std::io::Write;

/// Runs `timeline`.
pub fn run(a: &TimelineArgs) -> CliResult {
    let filter = Filter::from_filter_args(&a.filter)?;
    let snap = snapshot::open(
        &a.common.journal,
        a.common.copy,
        a.common.work_dir.as_deref(),
    )?;
    if let Some(b) = snap.banner() {
        eprintln!("{b}");
    }
    let hist = snapshot::history(&snap, filter.to_seq())?;
    if let Some(note) = &hist.note {
        eprintln!("note: {}", style::printable(note));
    }
    let keep = if a.filter.any() {
        Some(selected(&hist, &filter))
    } else {
        None
    };
    let tl = lunledger::timeline::build_filtered(
        &hist.start,
        &hist.records,
        |i| {
            keep.as_ref()
                .is_none_or(|k| k.get(i).copied().unwrap_or(false))
        },
        keep.is_none(),
    );
    let mut problem = tl.problem.clone();
    if problem.is_none() {
        problem = hist.damage.as_ref().map(|d| d.to_string());
    }
    let text = if a.common.json {
        let mut j = tl.to_json();
        j.push('\n');
        j
    } else {
        let name = a.common.journal.display().to_string();
        lunledger::timeline::html::render(&tl, &name)
    };
    match &a.output {
        Some(path) => std::fs::write(path, text.as_bytes())
            .map_err(|e| CliError::io(format!("writing {}", path.display()), e))?,
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(CliError::io("writing output", e)),
            }
        }
    }
    if let Some(path) = &a.output {
        eprintln!(
            "wrote {} ({} records, {} slots, {} operations, {} restarts)",
            path.display(),
            tl.records.seq.len(),
            tl.lanes.len(),
            tl.ops.len(),
            tl.restarts.len()
        );
    }
    if let Some(p) = &problem {
        eprintln!("lunledger: {}", style::printable(p));
    }
    Ok(Outcome::problem_if(problem.is_some()))
}

/// Which records pass the filters: the same rows, folded the same way, as `replay` shows.
fn selected(hist: &History, filter: &Filter) -> Vec<bool> {
    let mut auditor = Auditor::new(hist.start.clone());
    auditor.learn_handles(&hist.records);
    let mut keep = Vec::with_capacity(hist.records.len());
    for rec in &hist.records {
        match auditor.push(rec) {
            Ok(row) => keep.push(filter.matches(&row)),
            // The library's own fold reports the record that does not fit.
            Err(_) => break,
        }
    }
    keep
}
