//! The `offpeak` command line: the server (`serve`, `serve --demo`, `demo`), `token`, and a
//! client of the whole REST API a person uses: market data (`pools`, `book`, `quote`,
//! `trades`, `candles`, `stats`), buyers (`keys ...`, `bid`, `orders`, `amend`, `cancel`,
//! `leases`, `release-lease`, `ssh`, `lease-token`), suppliers (`capacity ...`) and admins
//! (`admin ...`).
//!
//! This file holds the clap definitions of the top level and the dispatch; each command
//! family lives in its own file with its flags, its requests and its tables (`serve`,
//! `market`, `keys`, `orders`, `leases`, `capacity`, `admin`), over the shared `client` and
//! `table`.
//!
//! The client reads `OFFPEAK_URL` (default `http://127.0.0.1:8080`) and `OFFPEAK_TOKEN`, prints
//! aligned tables (or the server's JSON with `--json`), writes errors to stderr with the
//! server's code and message, and exits with a code scripts can trust (see [`Outcome`]):
//! 0 ok, 1 refused by the server (4xx), 2 usage, 3 unreachable or server error (5xx).

pub mod admin;
pub mod capacity;
pub mod client;
mod flags;
pub mod keys;
pub mod leases;
pub mod market;
pub mod orders;
pub mod report;
pub mod serve;
pub mod simulate;
pub mod table;

use clap::{Parser, Subcommand};
pub use client::{CliError, Client, Outcome};
use serde_json::Value;
pub use serve::{serve, DemoArgs, ServeArgs};
use std::process::ExitCode;

/// offpeak: a spot market for idle GPU-hours.
#[derive(Parser, Debug)]
#[command(
    name = "offpeak",
    version,
    about,
    after_help = "Client commands read OFFPEAK_URL (default http://127.0.0.1:8080) and \
        OFFPEAK_TOKEN.\nExit codes: 0 ok, 1 refused by the server (4xx), 2 usage error, \
        3 server unreachable or failing (5xx)."
)]
pub struct Cli {
    /// Print the server's JSON instead of a table (client commands).
    #[arg(long, global = true)]
    pub json: bool,
    /// The server's base URL (default: OFFPEAK_URL, else http://127.0.0.1:8080).
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (configured by environment variables; see the README).
    Serve(ServeArgs),
    /// Run the server with the demo market: `serve --demo`.
    Demo(DemoArgs),
    /// Print a signed JWT for an account, using the server's configured key.
    Token(serve::TokenArgs),
    /// Compare market mechanisms on a seeded scenario, in simulated time (no server).
    Simulate(simulate::SimulateArgs),
    /// List the pools with their best prices and capacity.
    Pools,
    /// Show a pool's order book.
    Book(market::BookArgs),
    /// Price a bid against the book now, without placing it.
    Quote(market::QuoteArgs),
    /// Show a pool's recent trades, newest first.
    Trades(market::TradesArgs),
    /// Show a pool's OHLC candles and GPU-hours volume.
    Candles(market::CandlesArgs),
    /// Show a pool's price, volume and preemption statistics over a window.
    Stats(market::StatsArgs),
    /// Set, list or clear your default ssh public keys (role buyer).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Place a bid (role buyer).
    Bid(orders::BidArgs),
    /// List your orders (role buyer).
    Orders(orders::OrdersArgs),
    /// Change a resting bid's price or total GPUs (role buyer).
    Amend(orders::AmendArgs),
    /// Cancel an order (role buyer).
    Cancel(orders::CancelArgs),
    /// List your leases, or show one with its endpoints (role buyer).
    Leases(leases::LeasesArgs),
    /// End one of your leases now (role buyer).
    ReleaseLease(leases::ReleaseLeaseArgs),
    /// Print the ssh command for a ready lease's first machine (role buyer).
    Ssh(leases::SshArgs),
    /// Print a token for a ready model lease's gateway (role buyer).
    LeaseToken(leases::LeaseTokenArgs),
    /// Release, update, reclaim and list capacity blocks; hand leases over (role supplier).
    #[command(subcommand)]
    Capacity(capacity::CapacityCommand),
    /// What idle capacity earned, per pool: offered and leased GPU-hours, revenue (role admin).
    Report(report::ReportArgs),
    /// Pools, kill switches, account limits, the state hash (role admin).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
}

/// The server's answer to a client command, and how to print it as a table.
type Answer = (Value, fn(&Value));

/// Runs the parsed command line and returns the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        None => serve::serve_blocking(ServeArgs::default()),
        Some(Command::Serve(args)) => serve::serve_blocking(args),
        Some(Command::Demo(args)) => serve::serve_blocking(args.into()),
        Some(Command::Token(args)) => serve::print_token(args),
        Some(Command::Simulate(args)) => simulate::print_simulation(args, cli.json),
        Some(command) => client_blocking(cli.json, cli.url.as_deref(), command),
    }
}

fn client_blocking(json: bool, url: Option<&str>, command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Outcome::Unavailable.into();
        }
    };
    let result = runtime.block_on(async {
        let client = Client::from_env(url)?;
        execute(&client, json, command).await
    });
    match result {
        Ok(()) => Outcome::Ok.into(),
        Err(error) => {
            match (&error.body, json) {
                (Some(body), true) => eprintln!("{body}"),
                _ => eprintln!("error: {}", error.message),
            }
            error.outcome.into()
        }
    }
}

async fn execute(client: &Client, json: bool, command: Command) -> Result<(), CliError> {
    let (answer, show) = match command {
        Command::Pools => market::pools(client).await?,
        Command::Book(args) => market::book(client, args).await?,
        Command::Quote(args) => market::quote(client, args).await?,
        Command::Trades(args) => market::trades(client, args).await?,
        Command::Candles(args) => market::candles(client, args).await?,
        Command::Stats(args) => market::stats(client, args).await?,
        Command::Report(args) => report::report(client, args).await?,
        Command::Keys(command) => keys::run(client, command).await?,
        Command::Bid(args) => orders::bid(client, args).await?,
        Command::Orders(args) => orders::orders(client, args).await?,
        Command::Amend(args) => orders::amend(client, args).await?,
        Command::Cancel(args) => orders::cancel(client, args).await?,
        Command::Leases(args) => leases::leases(client, args).await?,
        Command::ReleaseLease(args) => leases::release(client, args).await?,
        Command::Ssh(args) => leases::ssh(client, args).await?,
        Command::LeaseToken(args) => leases::token(client, args).await?,
        Command::Capacity(command) => capacity::run(client, command).await?,
        Command::Admin(command) => admin::run(client, command).await?,
        Command::Serve(_) | Command::Demo(_) | Command::Token(_) | Command::Simulate(_) => {
            return Err(CliError::usage("not a client command"))
        }
    };
    if json {
        print_json(&answer)
    } else {
        show(&answer);
        Ok(())
    }
}

fn print_json(value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::usage(format!("cannot print the answer: {e}")))?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
