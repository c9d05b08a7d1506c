//! The `lunledger` command: audit, inspect and verify a journal without ever changing it, and a
//! self-contained crash-and-recover demo. See docs/cli.md.
//!
//! Exit codes: 0 ok, 1 problem found, 2 usage or I/O error.

// One file per command; what they show and how they read a journal is `lunledger::cli`, the
// demo `lunledger::demo`.
mod args;
mod cursor;
mod filter;
mod recover;
mod replay;
mod status;
mod timeline;
mod verify;

use args::{Cli, Command};
use clap::Parser;
use lunledger::cli::style;
use lunledger::demo;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_logging(cli.verbose);
    let result = match &cli.command {
        Command::Replay(a) => replay::run(a),
        Command::Status(a) => status::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Timeline(a) => timeline::run(a),
        Command::Recover(a) => recover::run(a),
        Command::Demo(a) => demo::run(a),
        Command::DemoShim(a) => demo::shim::run(a),
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
