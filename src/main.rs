//! The `offpeak` binary: parses the command line and runs it. Everything it does lives in the
//! library: the server in `offpeak::startup`, the commands in `offpeak::cli`.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Usage errors exit with 2 here (clap's convention), before anything runs.
    offpeak::cli::run(offpeak::cli::Cli::parse())
}
