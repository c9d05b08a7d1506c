//! The demo's command-line arguments (`lunledger demo`, and the shim process it spawns).

use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Which VM the demo drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// The persistent simulated VM.
    Sim,
    /// QEMU over QMP and the guest agent.
    Qemu,
}

/// The guest OS the demo's VM runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GuestArg {
    /// A Linux utility VM (LCOW).
    Linux,
    /// A Windows utility VM (WCOW): simulated only (there is no Windows VM to drive).
    Windows,
}

impl GuestArg {
    /// The library's value.
    pub fn os(self) -> crate::model::GuestOs {
        match self {
            GuestArg::Linux => crate::model::GuestOs::Linux,
            GuestArg::Windows => crate::model::GuestOs::Windows,
        }
    }

    /// The flag's value, to pass it on to the shim.
    pub fn as_str(self) -> &'static str {
        self.os().as_str()
    }
}

/// `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Journal directory (default: a new temporary work directory, kept for later auditing).
    #[arg(long, value_name = "DIR")]
    pub journal: Option<PathBuf>,
    /// The VM backend.
    #[arg(long, value_enum, default_value = "sim")]
    pub backend: BackendArg,
    /// Backend latency per call in the shim, in milliseconds (makes operations observable).
    #[arg(long, default_value_t = 40, value_name = "MS")]
    pub latency_ms: u64,
    /// The guest OS (`windows`: hcsshim's WCOW rules, on the simulated VM only).
    #[arg(long, value_enum, default_value = "linux")]
    pub guest: GuestArg,
}

/// `demo-shim` (internal).
#[derive(Debug, Args)]
pub struct DemoShimArgs {
    /// Journal directory.
    #[arg(long)]
    pub journal: PathBuf,
    /// The VM backend.
    #[arg(long, value_enum, default_value = "sim")]
    pub backend: BackendArg,
    /// Simulated VM state file (`--backend sim`).
    #[arg(long, required_if_eq("backend", "sim"))]
    pub sim_state: Option<PathBuf>,
    /// QEMU's QMP socket (`--backend qemu`).
    #[arg(long, required_if_eq("backend", "qemu"))]
    pub qmp: Option<PathBuf>,
    /// QEMU's guest agent socket (`--backend qemu`).
    #[arg(long, required_if_eq("backend", "qemu"))]
    pub qga: Option<PathBuf>,
    /// Directory of the disk image files (`--backend qemu`; see `shim::DISKS`).
    #[arg(long, required_if_eq("backend", "qemu"))]
    pub disks: Option<PathBuf>,
    /// Latency per backend call, ms (simulated VM only).
    #[arg(long, default_value_t = 40)]
    pub latency_ms: u64,
    /// The guest OS.
    #[arg(long, value_enum, default_value = "linux")]
    pub guest: GuestArg,
}
