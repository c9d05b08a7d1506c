//! `lunledger verify`: integrity (each record's check, decoding, sequence continuity and hash
//! chain, the sealed segments the manifest names, the durable watermark, via `Journal::verify`
//! and what opening the copy found), every kept checkpoint against the fold of the records
//! (`lunledger::audit::check_checkpoints`), and the fold's invariants (every record applies;
//! `State::violations` is empty after each one). Names the first bad record.

use crate::args::VerifyArgs;
use crate::fail::{CliError, CliResult, Outcome};
use crate::history;
use crate::progress;
use crate::replay::{say_banner, write_out};
use crate::snapshot;
use crate::style;
use lunledger::journal::ProblemKind;
use lunledger::journal::{Head, JournalError, SealCheck, SealKey};
use lunledger::recovery::State;
use serde::Serialize;

/// One problem found.
#[derive(Clone, Debug, Serialize)]
struct Finding {
    /// The record at fault.
    seq: u64,
    /// Which check: `integrity`, `tail`, `lost`, `segments`, `watermark`, `checkpoint`, `fold`,
    /// `invariants`, `seal` or `anchor`.
    check: &'static str,
    /// What is wrong.
    what: String,
}

#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    records_checked: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    records_folded: u64,
    /// The first problem (lowest sequence number), if any.
    problem: Option<Finding>,
    /// Every problem found (each check stops at its first).
    problems: Vec<Finding>,
    /// The journal's head, `SEQ:HASH`: keep it elsewhere and pass it to `--expect-head` later.
    head: Option<String>,
    /// Whether the keyed seal was checked (`--key-file`).
    seal_checked: bool,
    /// Whether an anchor was checked (`--expect-head`).
    anchor_checked: bool,
}

/// Runs `verify`.
pub fn run(v: &VerifyArgs) -> CliResult {
    let a = &v.common;
    // Bad key files and anchors are usage errors, found before any copying.
    let key = v
        .key_file
        .as_deref()
        .map(SealKey::from_file)
        .transpose()
        .map_err(|e| CliError::Usage(format!("--key-file: {e}")))?;
    let anchor = v
        .expect_head
        .as_deref()
        .map(str::parse::<Head>)
        .transpose()
        .map_err(|e| CliError::Usage(format!("--expect-head: {e}")))?;
    let snap = snapshot::open(&a.journal, a.copy, a.work_dir.as_deref())?;
    say_banner(&snap, a.json);
    let mut problems = Vec::new();
    let opened = snap.journal().open_report().clone();
    if let Some(t) = &opened.tail_quarantined {
        problems.push(Finding {
            seq: t.first_bad_seq,
            check: "tail",
            what: format!("damaged tail of {} record(s): {}", t.records, t.what),
        });
    }
    if let Some((first, durable)) = opened.lost_records {
        problems.push(Finding {
            seq: first,
            check: "lost",
            what: format!(
                "records {first}..={durable} had been made durable but are missing or damaged"
            ),
        });
    }
    if let Some(m) = &opened.middle_damage {
        problems.push(Finding {
            seq: m.seq,
            check: "integrity",
            what: m.what.clone(),
        });
    }
    let spin = progress::spinner(snap.journal().last_seq(), "verifying");
    let report = snap
        .journal()
        .verify()
        .map_err(|e| CliError::io("reading the journal copy", e))?;
    spin.finish_and_clear();
    let mut record_seen = false;
    for p in &report.problems {
        if p.kind == ProblemKind::Record {
            // The record check names its first problem only.
            if record_seen {
                continue;
            }
            record_seen = true;
        }
        problems.push(Finding {
            seq: p.seq,
            check: match p.kind {
                ProblemKind::Record => "integrity",
                ProblemKind::MissingSegment { .. } | ProblemKind::UnexpectedSegment { .. } => {
                    "segments"
                }
                ProblemKind::Watermark => "watermark",
                ProblemKind::Checkpoint { .. } => "checkpoint",
            },
            what: p.what.clone(),
        });
    }
    let io = |e| CliError::io("reading the journal copy", e);
    // A record the seal, the anchor or the head needs may be unreadable (damaged, or in a lost
    // segment): that is a finding of the check, not a failure to check.
    let unreadable = |e: JournalError| match e {
        JournalError::Corrupt { seq, what } | JournalError::Decode { seq, what } => Ok((seq, what)),
        e => Err(io(e)),
    };
    let last = snap.journal().last_seq();
    if let Some(key) = &key {
        let (seq, what) = match snap.journal().check_seal(key) {
            Ok(check) => (
                match &check {
                    SealCheck::Sealed { .. } => None,
                    SealCheck::HeadChanged { seq } => Some(*seq),
                    SealCheck::Unsealed { head, .. } => Some(head + 1),
                    SealCheck::Missing | SealCheck::BadMac => Some(last),
                },
                check.to_string(),
            ),
            Err(e) => {
                let (seq, what) = unreadable(e)?;
                (Some(seq.unwrap_or(last)), what)
            }
        };
        if let Some(seq) = seq {
            problems.push(Finding {
                seq,
                check: "seal",
                what,
            });
        }
    }
    if let Some(anchor) = &anchor {
        let what = match snap.journal().check_anchor(anchor) {
            Ok(w) => w,
            Err(e) => Some(format!(
                "the anchored record cannot be read: {}",
                unreadable(e)?.1
            )),
        };
        if let Some(what) = what {
            problems.push(Finding {
                seq: anchor.seq.min(last.saturating_add(1)),
                check: "anchor",
                what,
            });
        }
    }
    let head = match snap.journal().head() {
        Ok(h) => h.map(|h| h.to_string()),
        Err(e) => {
            // The last record is unreadable; the checks above and below name why.
            unreadable(e)?;
            None
        }
    };
    // Every kept checkpoint against the fold of the records up to it.
    let audit = lunledger::audit::check_checkpoints(snap.journal())
        .map_err(|e| CliError::Io(format!("checking checkpoints: {e}")))?;
    for m in &audit.mismatches {
        problems.push(Finding {
            seq: m.at_seq,
            check: "checkpoint",
            what: format!("checkpoint at seq {}: {}", m.at_seq, m.what),
        });
    }
    let hist = history::load(snap.journal(), None)?;
    let mut state: State = hist.start.clone();
    let mut folded = 0;
    let pb = progress::bar(hist.records.len() as u64, "folding");
    for rec in &hist.records {
        if let Err(e) = state.apply(rec) {
            problems.push(Finding {
                seq: e.seq,
                check: "fold",
                what: format!("{} does not fit the state: {}", e.event, e.what),
            });
            break;
        }
        folded += 1;
        pb.inc(1);
        let v: Vec<String> = state.violations();
        if !v.is_empty() {
            problems.push(Finding {
                seq: rec.seq,
                check: "invariants",
                what: format!("after {}: {}", rec.event.name(), v.join("; ")),
            });
            break;
        }
    }
    pb.finish_and_clear();
    if let Some((seq, what)) = &hist.damage {
        if !problems.iter().any(|p| Some(p.seq) == *seq) {
            problems.push(Finding {
                seq: seq.unwrap_or(0),
                check: "integrity",
                what: what.clone(),
            });
        }
    }
    problems.sort_by_key(|p| p.seq);
    // The open scan and the verify pass can report the same damage.
    problems.dedup_by(|a, b| a.seq == b.seq && a.what == b.what);
    let out = Report {
        ok: problems.is_empty(),
        records_checked: report.records_checked,
        // The range the journal spans, lost segments included (not only what could be read).
        first_seq: match (report.first_seq, snap.journal().first_seq().ok().flatten()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        last_seq: report
            .last_seq
            .max(
                opened
                    .tail_quarantined
                    .as_ref()
                    .map(|t| t.first_bad_seq + t.records - 1),
            )
            .max(Some(snap.journal().last_seq()).filter(|s| *s > 0)),
        records_folded: folded,
        problem: problems.first().cloned(),
        problems,
        head,
        seal_checked: key.is_some(),
        anchor_checked: anchor.is_some(),
    };
    let text = if a.json {
        format!("{}\n", serde_json::to_string(&out).unwrap_or_default())
    } else {
        render(&out)
    };
    write_out(&mut std::io::stdout().lock(), &text)?;
    Ok(Outcome::problem_if(!out.ok))
}

fn render(r: &Report) -> String {
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!("seq {a}..{b}"),
        _ => "empty journal".into(),
    };
    let stopped = if r.problem.is_some() && r.records_folded < r.records_checked {
        " (folding stops at the first bad record)"
    } else {
        ""
    };
    let mut out = format!(
        "records checked: {} ({range}); records folded: {}{stopped}\n",
        r.records_checked, r.records_folded
    );
    let check = |name: &str, ok: bool| {
        format!(
            "  {name:<34} {}\n",
            if ok {
                style::green("ok")
            } else {
                style::red("FAILED")
            }
        )
    };
    let failed = |c: &str| r.problems.iter().any(|p| p.check == c);
    out.push_str(&check(
        "hash chain, continuity, decoding",
        !failed("integrity") && !failed("tail"),
    ));
    out.push_str(&check(
        "sealed segments (manifest)",
        !failed("segments") && !failed("lost"),
    ));
    out.push_str(&check("durable watermark", !failed("watermark")));
    out.push_str(&check(
        "checkpoints (match the fold)",
        !failed("checkpoint"),
    ));
    out.push_str(&check("fold (every record applies)", !failed("fold")));
    out.push_str(&check(
        "invariants (slots, refcounts)",
        !failed("invariants"),
    ));
    if r.seal_checked {
        out.push_str(&check("keyed seal (--key-file)", !failed("seal")));
    }
    if r.anchor_checked {
        out.push_str(&check("anchor (--expect-head)", !failed("anchor")));
    }
    if let Some(h) = &r.head {
        out.push_str(&format!("head: {h}\n"));
    }
    if !r.seal_checked && !r.anchor_checked {
        out.push_str(&style::dim(
            "note: without --key-file or --expect-head this finds damage, not forgery: a rewritten history with a recomputed chain passes\n",
        ));
    }
    match &r.problem {
        None => out.push_str(&style::green("journal OK\n")),
        Some(p) => out.push_str(&style::red(&format!(
            "first bad record: seq {} ({}): {}\n",
            p.seq,
            p.check,
            style::printable(&p.what)
        ))),
    }
    out
}
