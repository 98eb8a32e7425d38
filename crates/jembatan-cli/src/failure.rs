//! How a command failed, which decides its exit code: 1 when the command
//! ran and the answer is "no" (a log that does not verify, an incompatible
//! schema, a refused request, a failing record), 2 for usage errors,
//! unreadable input and unreachable stores or brokers, 3 when an exchange
//! is denied by policy (`query`, `lookup`).

use std::process::ExitCode;

use anyhow::anyhow;

pub(crate) enum Failure {
    /// The answer is "no" (exit 1).
    Refused(anyhow::Error),
    /// Usage errors, unreadable files, unreachable services (exit 2).
    Usage(anyhow::Error),
    /// An exchange denied by policy, with its reasons (exit 3).
    Denied(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::Usage(err)
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Self {
        Failure::Usage(anyhow!("i/o error: {err}"))
    }
}

/// Prints the error and turns the outcome into the exit code.
pub(crate) fn exit(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
        Err(Failure::Denied(err)) => {
            eprintln!("{err:#}");
            ExitCode::from(3)
        }
    }
}
