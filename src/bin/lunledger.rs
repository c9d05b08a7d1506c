//! The `lunledger` command: audit, inspect and verify a journal without ever changing it, and a
//! self-contained crash-and-recover demo. See docs/cli.md.
//!
//! Exit codes: 0 ok, 1 problem found, 2 usage or I/O error.

// The modules live in src/bin/lunledger/ (one concept per file); re-exported here so they are
// addressed as `crate::<module>`.
#[path = "lunledger/mod.rs"]
mod cli;
use cli::{
    args, audit, backend, clock, cursor, demo, demo_shim, dry_run, fail, filter, history,
    interrupt, progress, replay, snapshot, status, style, table, timeline, trail, verify, view,
};

use args::{Cli, Command};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_logging(cli.verbose);
    let result = match &cli.command {
        Command::Replay(a) => replay::run(a),
        Command::Status(a) => status::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Timeline(a) => timeline::run(a),
        Command::Recover(a) => dry_run::run(a),
        Command::Demo(a) => demo::run(a),
        Command::DemoShim(a) => demo_shim::run(a),
    };
    match result {
        Ok(outcome) => outcome.code(),
        Err(e) => {
            eprintln!("lunledger: {}", style::printable(&e.to_string()));
            e.code()
        }
    }
}

/// Sends the library's `tracing` output to stderr: RUST_LOG when set, else by `-v` count
/// (warnings only by default).
fn install_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // A second install (never here) would fail; logging is best effort either way.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
