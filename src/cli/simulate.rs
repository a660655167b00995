//! `offpeak simulate` (DESIGN section 13): a seeded scenario run straight through the engine
//! in simulated time, once per market mechanism, on identical supply and demand. No server.

use super::Outcome;
use crate::simulate::{execute, SimulateOptions};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// `offpeak simulate`.
#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Seed of every random draw: the same seed prints the same report, byte for byte.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated days (default: the scenario's; the built-in one is a week).
    #[arg(long)]
    pub days: Option<f64>,
    /// A scenario file (JSON; `scenarios/default.json` documents every field). Default: the
    /// built-in week.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Draw utilisation and revenue over time per mechanism to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,
}

/// Runs the simulation and prints the table (its last line the summary), or the JSON report.
pub fn print_simulation(args: SimulateArgs, json: bool) -> ExitCode {
    let options = SimulateOptions {
        seed: args.seed,
        days: args.days,
        scenario: args.scenario,
        json,
        chart: args.chart,
    };
    match execute(&options) {
        Ok(out) => {
            print!("{out}");
            Outcome::Ok.into()
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Outcome::Usage.into()
        }
    }
}
