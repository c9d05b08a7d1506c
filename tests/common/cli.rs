//! Running the `lunledger` binary from the CLI tests.

use lunledger::model::ManagerConfig;
use std::process::{Command, Output};

/// A small configuration for CLI tests: 2 controllers x 8 LUNs.
pub fn small_config() -> ManagerConfig {
    ManagerConfig {
        guest: Default::default(),
        controllers: 2,
        luns_per_controller: 8,
        mount_format: "/run/mounts/scsi/m%d".into(),
        reserved: vec![],
    }
}

/// Runs `lunledger ARGS` to the end, without colour.
pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lunledger"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("running lunledger: {e}"))
}

/// Everything it printed: stdout, then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
