//! `lunledger verify`: the checks of [`lunledger::audit::verify`] on a copy of the journal,
//! rendered. Names the first bad record.

use crate::args::VerifyArgs;
use crate::replay::{open_copy, write_out};
use lunledger::audit::{self, Verification};
use lunledger::cli::fail::{CliError, CliResult, Outcome};
use lunledger::cli::progress;
use lunledger::cli::style;
use lunledger::journal::{Head, SealKey};

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
    let snap = open_copy(a, false)?;
    let mut bar = progress::Bar::new("reading");
    let out = audit::verify(snap.journal(), key.as_ref(), anchor.as_ref(), &mut bar)
        .map_err(|e| CliError::Io(e.to_string()))?;
    let text = if a.json {
        format!("{}\n", serde_json::to_string(&out).unwrap_or_default())
    } else {
        render(&out)
    };
    write_out(&mut std::io::stdout().lock(), &text)?;
    Ok(Outcome::problem_if(!out.ok))
}

fn render(r: &Verification) -> String {
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
