//! The `offpeak` binary: parses the command line and runs it. Everything it does lives in the
//! library: the server in `offpeak::startup`, the commands in `offpeak::cli`.

use clap::Parser;
use std::process::ExitCode;

/// mimalloc: the server allocates per request (bodies, views, JSON); glibc's malloc and free
/// were about 13% of its CPU under an order load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Usage errors exit with 2 here (clap's convention), before anything runs.
    offpeak::cli::run(offpeak::cli::Cli::parse())
}
