//! `lunledger replay`: the audit trail, filtered, optionally followed; or with `--at`, the state
//! as of a sequence number or time.

use crate::args::{CommonArgs, ReplayArgs};
use crate::cursor;
use crate::filter::Filter;
use lunledger::audit::History;
use lunledger::audit::{Auditor, Row};
use lunledger::cli::clock::{now_micros, parse_when};
use lunledger::cli::fail::{CliError, CliResult, Outcome};
use lunledger::cli::interrupt;
use lunledger::cli::rows;
use lunledger::cli::snapshot::{self, Snapshot};
use lunledger::cli::table::Table;
use lunledger::cli::view::StateView;
use lunledger::journal::Head;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// How often `--follow` re-copies the journal.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Runs `replay`.
pub fn run(a: &ReplayArgs) -> CliResult {
    if let Some(at) = &a.at {
        let filtered = a.filter.any()
            || a.lines.is_some()
            || a.show_cursor
            || a.after_cursor.is_some()
            || a.cursor_file.is_some();
        if a.follow || a.reverse || filtered {
            return Err(CliError::Usage(
                "--at shows one state; it does not combine with record filters, cursors, -n, --follow or --reverse".into(),
            ));
        }
        return at_point(a, at);
    }
    if a.follow && a.reverse {
        return Err(CliError::Usage(
            "--follow and --reverse do not combine".into(),
        ));
    }
    let filter = Filter::from_filter_args(&a.filter)?;
    if a.after_cursor.is_some() && a.cursor_file.is_some() {
        return Err(CliError::Usage(
            "--after-cursor and --cursor-file do not combine (the file holds the cursor)".into(),
        ));
    }
    let resume = match (&a.after_cursor, &a.cursor_file) {
        (Some(c), _) => Some(cursor::parse(c, "--after-cursor")?),
        (None, Some(f)) => cursor::read_file(f)?,
        (None, None) => None,
    };
    if a.follow {
        interrupt::set_graceful();
    }
    // Following a journal only makes sense while a shim writes it: --follow implies --copy.
    let snap = open_copy(&a.common, a.follow)?;
    let to = if a.follow { None } else { filter.to_seq() };
    let hist = snapshot::history(&snap, to)?;
    if let Some(c) = &resume {
        if let Some(why) = cursor::check(snap.journal(), c)? {
            eprintln!("lunledger: {}", lunledger::cli::style::printable(&why));
            return Ok(Outcome::Problem);
        }
    }
    let (mut auditor, mut rows, mut problem) = trail_of(&hist, &filter);
    if let Some(c) = &resume {
        rows.retain(|r| r.seq > c.seq);
    }
    if let Some(n) = a.lines {
        let skip = rows.len().saturating_sub(n);
        rows.drain(..skip);
    }
    if a.reverse {
        rows.reverse();
    }
    let mut out = std::io::stdout().lock();
    let text = if a.common.json {
        rows::json_lines(&rows)
    } else {
        rows::table(&rows)
    };
    let reader_there = write_or_closed(&mut out, &text)?;
    drop(out);
    if let Some(p) = &problem {
        eprintln!("lunledger: {}", lunledger::cli::style::printable(p));
    }
    // The cursor is the last record read (filtered out or not): resuming skips nothing unseen.
    let read_to = hist.records.last().map(|r| r.seq).unwrap_or(0);
    let mut head = cursor::at(snap.journal(), read_to)?.or(resume);
    if problem.is_none() {
        save_cursor(a, head.as_ref())?;
    }
    if a.follow && reader_there {
        let mut widths = {
            let mut t = Table::new(rows::HEAD);
            for r in &rows {
                rows::add(&mut t, r);
            }
            t.widths()
        };
        let mut next = hist.records.last().map(|r| r.seq + 1).unwrap_or(1);
        drop(snap);
        follow(
            a,
            &filter,
            &mut auditor,
            &mut next,
            &mut widths,
            &mut problem,
            &mut head,
        )?;
    }
    if a.show_cursor {
        if let Some(h) = &head {
            let line = if a.common.json {
                format!("{}\n", serde_json::json!({ "cursor": h.to_string() }))
            } else {
                format!("-- cursor: {h}\n")
            };
            write_out(&mut std::io::stdout().lock(), &line)?;
        }
    }
    Ok(Outcome::problem_if(problem.is_some()))
}

/// Writes the cursor to `--cursor-file`, when given.
fn save_cursor(a: &ReplayArgs, head: Option<&Head>) -> Result<(), CliError> {
    match (&a.cursor_file, head) {
        (Some(f), Some(h)) => cursor::write_file(f, h),
        _ => Ok(()),
    }
}

/// Folds the history into rows that pass `filter`; a fold error or damage ends it (described).
fn trail_of(hist: &History, filter: &Filter) -> (Auditor, Vec<Row>, Option<String>) {
    let mut auditor = Auditor::new(hist.start.clone());
    auditor.learn_handles(&hist.records);
    let mut rows = Vec::new();
    let mut problem = None;
    if let Some(note) = &hist.note {
        eprintln!("note: {}", lunledger::cli::style::printable(note));
    }
    for rec in &hist.records {
        match auditor.push(rec) {
            Ok(row) => {
                if filter.matches(&row) {
                    rows.push(row);
                }
            }
            Err(e) => {
                problem = Some(format!(
                    "record {} ({}) does not fit the state: {}",
                    e.seq, e.event, e.what
                ));
                break;
            }
        }
    }
    if problem.is_none() {
        problem = hist.damage.as_ref().map(|d| d.to_string());
    }
    (auditor, rows, problem)
}

/// Polls a refreshed copy of the journal and prints new matching records until Ctrl-C.
fn follow(
    a: &ReplayArgs,
    filter: &Filter,
    auditor: &mut Auditor,
    next: &mut u64,
    widths: &mut [usize],
    problem: &mut Option<String>,
    head: &mut Option<Head>,
) -> Result<(), CliError> {
    interrupt::install();
    while !interrupt::requested() {
        std::thread::sleep(FOLLOW_EVERY);
        if interrupt::requested() || interrupt::stdout_closed() {
            break;
        }
        let snap = match refresh(&a.common.journal, a.common.work_dir.as_deref()) {
            Ok(s) => s,
            // A copy of a journal caught mid-write can fail to open: try again next tick.
            Err(CliError::Io(_)) => continue,
            Err(e) => return Err(e),
        };
        // The same journal as before: the last record read still carries its hash (a shim's
        // restart keeps it; a replaced or restored journal does not).
        if let Some(h) = head.as_ref() {
            if let Some(why) = cursor::check(snap.journal(), h)? {
                eprintln!("lunledger: {}", lunledger::cli::style::printable(&why));
                *problem = Some(why);
                return Ok(());
            }
        }
        let mut fresh = Vec::new();
        for item in snap.journal().read_from(*next) {
            match item {
                Ok(r) => fresh.push(r),
                Err(_) => break,
            }
        }
        auditor.learn_handles(&fresh);
        let mut rows = Vec::new();
        for rec in &fresh {
            match auditor.push(rec) {
                Ok(row) => {
                    *next = rec.seq + 1;
                    if filter.matches(&row) {
                        rows.push(row);
                    }
                }
                Err(e) => {
                    let p = format!(
                        "record {} ({}) does not fit the state: {}",
                        e.seq, e.event, e.what
                    );
                    eprintln!("lunledger: {}", lunledger::cli::style::printable(&p));
                    *problem = Some(p);
                    return Ok(());
                }
            }
        }
        if let Some(h) = cursor::at(snap.journal(), next.saturating_sub(1))? {
            *head = Some(h);
        }
        if rows.is_empty() {
            save_cursor(a, head.as_ref())?;
            continue;
        }
        let text = if a.common.json {
            rows::json_lines(&rows)
        } else {
            let mut t = Table::new(rows::HEAD);
            for r in &rows {
                rows::add(&mut t, r);
            }
            let w = t.widths();
            for (i, x) in w.into_iter().enumerate() {
                if let Some(y) = widths.get_mut(i) {
                    *y = (*y).max(x);
                }
            }
            t.render_with(widths, false)
        };
        let mut out = std::io::stdout().lock();
        if !write_or_closed(&mut out, &text)? {
            // Nobody reads any more (`| head`, a closed pipe): stop following.
            break;
        }
        drop(out);
        // After the records are out: a shipper killed now resumes after them, not before.
        save_cursor(a, head.as_ref())?;
    }
    Ok(())
}

fn refresh(dir: &Path, work_dir: Option<&Path>) -> Result<Snapshot, CliError> {
    snapshot::open(dir, true, work_dir)
}

/// `--at`: the state as of a sequence number or a time.
fn at_point(a: &ReplayArgs, at: &str) -> CliResult {
    let snap = open_copy(&a.common, false)?;
    let last = snap.journal().last_seq();
    let (to_seq, to_time) = match at.parse::<u64>() {
        Ok(seq) => {
            if seq > last {
                return Err(CliError::Usage(format!(
                    "--at {seq}: the journal ends at seq {last}"
                )));
            }
            (Some(seq), None)
        }
        Err(_) => (None, Some(parse_when(at, now_micros())?)),
    };
    let hist = snapshot::history(&snap, to_seq)?;
    let mut auditor = Auditor::new(hist.start.clone());
    let mut ts = None;
    let mut problem = None;
    for rec in &hist.records {
        if to_time.is_some_and(|t| rec.ts_micros > t) {
            break;
        }
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
        if let Some(d) = &hist.damage {
            let within = match (to_seq, d.seq) {
                (Some(t), Some(s)) => s <= t,
                _ => true,
            };
            if within {
                problem = Some(format!("journal damaged: {}", d.what));
            }
        }
    }
    let view = StateView::of(auditor.state(), ts);
    let text = if a.common.json {
        format!("{}\n", serde_json::to_string(&view).unwrap_or_default())
    } else {
        view.render()
    };
    write_out(&mut std::io::stdout().lock(), &text)?;
    if let Some(p) = &problem {
        eprintln!("lunledger: {}", lunledger::cli::style::printable(p));
    }
    Ok(Outcome::problem_if(problem.is_some()))
}

/// Prints the snapshot's banner: to stdout for people, stderr for programs.
/// Opens the journal copy the common arguments name (a live journal only with `--copy`, or
/// `live`) and says what was audited.
pub fn open_copy(c: &CommonArgs, live: bool) -> Result<Snapshot, CliError> {
    let snap = snapshot::open(&c.journal, c.copy || live, c.work_dir.as_deref())?;
    say_banner(&snap, c.json);
    Ok(snap)
}

pub fn say_banner(snap: &Snapshot, json: bool) {
    if let Some(b) = snap.banner() {
        if json {
            eprintln!("{b}");
        } else {
            println!("{b}");
        }
    }
}

/// Writes to stdout; a closed pipe (`| head`) ends quietly.
pub fn write_out(out: &mut impl Write, text: &str) -> Result<(), CliError> {
    write_or_closed(out, text).map(|_| ())
}

/// Writes to stdout; `Ok(false)` when the reader has gone (a closed pipe).
fn write_or_closed(out: &mut impl Write, text: &str) -> Result<bool, CliError> {
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CliError::io("writing output", e)),
    }
}
