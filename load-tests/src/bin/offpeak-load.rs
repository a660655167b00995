//! offpeak-load: load scenarios against a running offpeak server, one subcommand each (see
//! BENCHMARKS.md for the commands and the figures measured with them).
//!
//! Each scenario prints a report; its last line is machine-readable, e.g.
//! `offpeak-load ws-fanout: clients=2000 lag_p99_ms=12.3 dropped=0 server_cpu_pct=85`.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "offpeak-load",
    about = "Load scenarios against a running offpeak server"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// WebSocket viewers of one pool's book while the book changes at a fixed rate.
    WsFanout(load_tests::ws_fanout::Args),
    /// A scheduler releasing and reclaiming capacity through the Redis stream while buyers
    /// bid: signal-to-book and reclaim-to-notice latency, nothing lost or applied twice.
    Signals(load_tests::signals::Args),
    /// Buyers placing and cancelling bids (and a supplier releasing blocks that some bids take)
    /// as fast as the server acknowledges them durably; then `/healthz` as the HTTP ceiling.
    Orders(load_tests::orders::Args),
    /// Leader takeovers of a cluster (nodes it starts, or pauses) while orders go through every
    /// node: takeover time, and no acknowledged order lost or placed twice.
    Failover(load_tests::failover::Args),
    /// A long journal written as the sequencer writes it, then `offpeak serve` timed from
    /// spawn to ready: a full replay, then again from the snapshot it left.
    Recovery(load_tests::recovery::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.scenario {
        Scenario::WsFanout(args) => {
            runtime.block_on(load_tests::ws_fanout::run(args))?;
        }
        Scenario::Signals(args) => {
            runtime.block_on(load_tests::signals::run(args))?;
        }
        Scenario::Orders(args) => {
            runtime.block_on(load_tests::orders::run(args))?;
        }
        Scenario::Failover(args) => {
            runtime.block_on(load_tests::failover::run(args))?;
        }
        Scenario::Recovery(args) => {
            runtime.block_on(load_tests::recovery::run(args))?;
        }
    }
    Ok(())
}
