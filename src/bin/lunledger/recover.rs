//! `lunledger recover --dry-run`: the plan opening the journal would execute. Nothing is
//! executed; exits 1 when the plan is not empty.

use crate::args::RecoverArgs;
use crate::replay::{open_copy, write_out};
use lunledger::cli::fail::{CliError, CliResult, Outcome};
use lunledger::cli::plan::plan_text;
use lunledger::recovery::RecoveryPolicy;

/// Runs `recover`.
pub fn run(a: &RecoverArgs) -> CliResult {
    if !a.dry_run {
        return Err(CliError::Usage(
            "recover only plans (--dry-run): the CLI never changes a journal; recovery runs when the shim opens the manager".into(),
        ));
    }
    let snap = open_copy(&a.common, false)?;
    let policy = RecoveryPolicy {
        detach_unknown: a.detach_unknown,
    };
    let (text, actions) = plan_text(&snap, a.sim_state.as_deref(), &policy, a.common.json)?;
    write_out(&mut std::io::stdout().lock(), &text)?;
    Ok(Outcome::problem_if(actions > 0))
}
