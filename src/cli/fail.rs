//! How a command ends: the exit codes scripts rely on (0 ok, 1 problem found, 2 usage or I/O
//! error) and the one error type every command returns for code 2.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

/// A command that ran to the end: either everything checked out, or it found a problem it has
/// already described on its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing wrong (exit 0).
    Ok,
    /// A problem was found and reported (exit 1).
    Problem,
}

impl Outcome {
    /// `Problem` when `bad`, else `Ok`.
    pub fn problem_if(bad: bool) -> Outcome {
        if bad {
            Outcome::Problem
        } else {
            Outcome::Ok
        }
    }

    /// The process exit code.
    pub fn code(self) -> ExitCode {
        match self {
            Outcome::Ok => ExitCode::SUCCESS,
            Outcome::Problem => ExitCode::from(1),
        }
    }
}

/// A usage or I/O error: the command could not do its job (exit 2).
#[derive(Debug)]
pub enum CliError {
    /// The arguments do not make sense together, or a value does not parse.
    Usage(String),
    /// Reading, copying or opening something failed.
    Io(String),
    /// A running process holds the journal's lock.
    InUse {
        /// The journal directory.
        dir: PathBuf,
        /// The holder's process id, when /proc/locks tells.
        pid: Option<u32>,
    },
}

impl CliError {
    /// An I/O error with what was being done.
    pub fn io(what: impl fmt::Display, err: impl fmt::Display) -> CliError {
        CliError::Io(format!("{what}: {err}"))
    }

    /// The process exit code (always 2: scripts tell "could not check" from "found a problem").
    pub fn code(&self) -> ExitCode {
        ExitCode::from(2)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) => write!(f, "usage: {m}"),
            CliError::Io(m) => f.write_str(m),
            CliError::InUse { dir, pid } => {
                let who = match pid {
                    Some(p) => format!("pid {p}"),
                    None => "pid unknown".to_string(),
                };
                write!(
                    f,
                    "journal {} is in use by a running process ({who}); re-run with --copy to audit a point-in-time copy",
                    dir.display()
                )
            }
        }
    }
}

/// What every command returns.
pub type CliResult = Result<Outcome, CliError>;
