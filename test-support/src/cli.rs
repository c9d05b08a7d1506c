//! Running the `lunledger` binary from the CLI tests.

use lunledger::model::ManagerConfig;
use std::path::PathBuf;
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
    Command::new(bin())
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

/// The `lunledger` binary cargo built for the integration test that calls this: a test runs
/// from `target/<profile>/deps/`, the binaries sit one level up (cargo builds a package's
/// binaries before its integration tests; only the test itself sees `CARGO_BIN_EXE_*`).
pub fn bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("the test's own path: {e}"));
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("lunledger"))
        .unwrap_or_else(|| panic!("{} has no grandparent directory", exe.display()));
    assert!(
        bin.is_file(),
        "{} is missing: run the CLI tests with `cargo test` (it builds the binary first)",
        bin.display()
    );
    bin
}
