//! Administration (role `admin`): `admin pools` lists every pool's settings and `admin pools
//! set` creates a pool or changes some of its settings, `admin kill-switch` stops an account
//! or halts a pool, `admin limits` sets an account's pre-trade limits, `admin state-hash`
//! prints the committed engine state's hash (to check that a restart or a replay rebuilt the
//! same state).
//!
//! `PUT /v1/admin/pools/{pool}` takes a whole pool spec, and a field left out takes its
//! default, not its current value. So `admin pools set` with flags reads the pool first and
//! sends its current settings with the flags' changes on top: a flag changes one setting and
//! nothing else. `--file` sends a spec as written, defaults and all.

use super::flags::price;
use super::table::{self, Table};
use super::{Answer, CliError, Client};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::path::PathBuf;

/// `offpeak admin ...`.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// List the pools with their settings (public), or create or change one (`set`).
    Pools {
        /// `set`; without it, list.
        #[command(subcommand)]
        command: Option<PoolsCommand>,
    },
    /// Engage (on) or lift (off) an account's or a pool's kill switch.
    KillSwitch(KillSwitchArgs),
    /// Set an account's pre-trade limits.
    Limits(LimitsArgs),
    /// Print the hash of the committed engine state and the seq it reflects.
    StateHash,
}

/// `offpeak admin pools ...`.
#[derive(Subcommand, Debug)]
pub enum PoolsCommand {
    /// Create a pool, or change the settings named by flags (the others are kept).
    Set(SetPoolArgs),
}

/// `offpeak admin pools set`.
#[derive(Args, Debug)]
#[command(group(
    ArgGroup::new("settings")
        .multiple(true)
        .args([
            "tick", "price_min", "price_max", "gpus_per_order_max", "duration_min_s",
            "duration_max_s", "notice_s", "free_if_preempted_within_s", "auction", "interval_ms",
            "handoff", "provision_timeout_s",
        ])
        .conflicts_with("file")
))]
pub struct SetPoolArgs {
    /// The pool, `<gpu>.<region>`, e.g. h100-sxm.us-east.
    pub pool: String,
    /// Send this pool spec (JSON) as is; fields left out take their defaults.
    #[arg(long, value_name = "JSON FILE")]
    pub file: Option<PathBuf>,
    /// Price grid, in USD.
    #[arg(long, value_name = "USD")]
    pub tick: Option<String>,
    /// Lowest price, in USD.
    #[arg(long, value_name = "USD")]
    pub price_min: Option<String>,
    /// Highest price, in USD.
    #[arg(long, value_name = "USD")]
    pub price_max: Option<String>,
    /// Most GPUs per bid or block.
    #[arg(long)]
    pub gpus_per_order_max: Option<u32>,
    /// Shortest lease, in seconds.
    #[arg(long)]
    pub duration_min_s: Option<u32>,
    /// Longest lease, in seconds.
    #[arg(long)]
    pub duration_max_s: Option<u32>,
    /// Guaranteed preemption notice, in seconds (leases already open keep theirs).
    #[arg(long)]
    pub notice_s: Option<u32>,
    /// A lease preempted within this many seconds of its start costs nothing.
    #[arg(long)]
    pub free_if_preempted_within_s: Option<u32>,
    /// How the pool clears.
    #[arg(long, value_enum)]
    pub auction: Option<Auction>,
    /// Milliseconds between uncrosses of a batch pool (implies --auction batch).
    #[arg(long)]
    pub interval_ms: Option<u64>,
    /// `required`: leases are billed from the supplier's ready; `none`: from their start.
    #[arg(long, value_parser = ["required", "none"])]
    pub handoff: Option<String>,
    /// A lease not ready this many seconds after it opened fails (1 to 86400).
    #[arg(long)]
    pub provision_timeout_s: Option<u32>,
}

/// How a pool clears.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Auction {
    /// Price-time priority, matched as orders arrive.
    Continuous,
    /// Frequent batch auctions every --interval-ms.
    Batch,
}

/// `offpeak admin kill-switch`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("target").required(true).args(["account", "pool"])))]
pub struct KillSwitchArgs {
    /// on: engage; off: lift.
    #[arg(value_enum)]
    pub state: Switch,
    /// Stop an account: its bids are cancelled and new ones refused.
    #[arg(long)]
    pub account: Option<String>,
    /// Halt a pool.
    #[arg(long)]
    pub pool: Option<String>,
}

/// A kill switch's wanted state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Engage.
    On,
    /// Lift.
    Off,
}

/// `offpeak admin limits`.
#[derive(Args, Debug)]
pub struct LimitsArgs {
    /// The account id (a token's `sub`).
    pub account: String,
    /// Most resting bids.
    #[arg(long)]
    pub orders_open_max: u32,
    /// Most USD per hour committed by resting bids (price x GPUs).
    #[arg(long, value_name = "USD")]
    pub open_notional_max: String,
}

/// Runs one `admin` subcommand.
pub async fn run(client: &Client, command: AdminCommand) -> Result<Answer, CliError> {
    Ok(match command {
        AdminCommand::Pools { command: None } => {
            (client.get_public(&["v1", "pools"], &[]).await?, show_pools)
        }
        AdminCommand::Pools {
            command: Some(PoolsCommand::Set(args)),
        } => {
            let body = match &args.file {
                Some(path) => read_spec(path)?,
                None => pool_spec(&args, current_pool(client, &args.pool).await?)?,
            };
            let answer = client
                .authed(
                    Method::PUT,
                    &["v1", "admin", "pools", &args.pool],
                    &[],
                    Some(&body),
                )
                .await?;
            (answer, show_one_pool)
        }
        AdminCommand::KillSwitch(args) => {
            let mut body = json!({"engaged": args.state == Switch::On});
            match (args.account, args.pool) {
                (Some(account), None) => body["account"] = json!(account),
                (None, Some(pool)) => body["pool"] = json!(pool),
                _ => return Err(CliError::usage("give exactly one of --account or --pool")),
            }
            let answer = client
                .authed(
                    Method::POST,
                    &["v1", "admin", "kill-switch"],
                    &[],
                    Some(&body),
                )
                .await?;
            (answer, show_kill_switch)
        }
        AdminCommand::Limits(args) => {
            let body = json!({
                "orders_open_max": args.orders_open_max,
                "open_notional_max": price(&args.open_notional_max, "--open-notional-max")?,
            });
            let answer = client
                .authed(
                    Method::PUT,
                    &["v1", "admin", "accounts", &args.account, "limits"],
                    &[],
                    Some(&body),
                )
                .await?;
            (answer, show_limits)
        }
        AdminCommand::StateHash => (
            client
                .authed(Method::GET, &["v1", "admin", "state-hash"], &[], None)
                .await?,
            show_state_hash,
        ),
    })
}

/// The settings fields of a pool spec, as `GET /v1/pools/{pool}` also names them.
const SETTINGS: &[&str] = &[
    "tick",
    "price_min",
    "price_max",
    "gpus_per_order_max",
    "duration_min_s",
    "duration_max_s",
    "notice_s",
    "free_if_preempted_within_s",
    "auction",
    "offering",
    "model",
    "tokens_per_s_per_gpu",
    "handoff",
    "provision_timeout_s",
];

/// The pool's current settings, or `None` when there is no such pool yet.
async fn current_pool(client: &Client, pool: &str) -> Result<Option<Value>, CliError> {
    match client.get_public(&["v1", "pools", pool], &[]).await {
        Ok(answer) => Ok(Some(answer["pool"].clone())),
        Err(e) if e.code() == Some("unknown_pool") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The spec to send: the current settings (if the pool exists), the flags on top.
fn pool_spec(args: &SetPoolArgs, current: Option<Value>) -> Result<Value, CliError> {
    // The region is after the last dot: a model pool's id is `<model>.<region>`, and its
    // model may hold dots (`llama-3.1-70b-instruct.us-east`).
    let Some((gpu, region)) = args.pool.rsplit_once('.') else {
        return Err(CliError::usage(format!(
            "{:?} is not a pool id such as h100-sxm.us-east (<gpu>.<region>)",
            args.pool
        )));
    };
    let mut spec = Map::new();
    // An existing pool keeps its GPU (a model pool's id does not name it).
    let gpu = current
        .as_ref()
        .and_then(|c| c["gpu"].as_str().map(str::to_owned))
        .unwrap_or_else(|| gpu.to_owned());
    spec.insert("gpu".into(), json!(gpu));
    spec.insert("region".into(), json!(region));
    if let Some(current) = &current {
        for field in SETTINGS {
            if !current[field].is_null() {
                spec.insert((*field).into(), current[field].clone());
            }
        }
    }
    for (field, value, flag) in [
        ("tick", &args.tick, "--tick"),
        ("price_min", &args.price_min, "--price-min"),
        ("price_max", &args.price_max, "--price-max"),
    ] {
        if let Some(value) = value {
            spec.insert(field.into(), json!(price(value, flag)?));
        }
    }
    for (field, value) in [
        ("gpus_per_order_max", args.gpus_per_order_max),
        ("duration_min_s", args.duration_min_s),
        ("duration_max_s", args.duration_max_s),
        ("notice_s", args.notice_s),
        (
            "free_if_preempted_within_s",
            args.free_if_preempted_within_s,
        ),
        ("provision_timeout_s", args.provision_timeout_s),
    ] {
        if let Some(value) = value {
            spec.insert(field.into(), json!(value));
        }
    }
    let auction = match (args.auction, args.interval_ms) {
        (Some(Auction::Continuous), Some(_)) => {
            return Err(CliError::usage(
                "--interval-ms is for --auction batch, not continuous",
            ))
        }
        (Some(Auction::Continuous), None) => Some(json!({"kind": "continuous"})),
        (_, Some(interval_ms)) => Some(json!({"kind": "batch", "interval_ms": interval_ms})),
        (Some(Auction::Batch), None) => match current.as_ref().map(|c| &c["auction"]) {
            Some(auction) if auction["kind"] == "batch" => Some(auction.clone()),
            _ => return Err(CliError::usage("--auction batch needs --interval-ms")),
        },
        (None, None) => None,
    };
    if let Some(auction) = auction {
        spec.insert("auction".into(), auction);
    }
    if let Some(handoff) = &args.handoff {
        spec.insert("handoff".into(), json!(handoff));
    }
    Ok(Value::Object(spec))
}

/// A pool spec file, checked to be JSON before it is sent.
fn read_spec(path: &PathBuf) -> Result<Value, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("reading {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("{} is not JSON: {e}", path.display())))
}

const POOL_HEADERS: &[&str] = &[
    "POOL",
    "TICK",
    "PRICE_MIN",
    "PRICE_MAX",
    "GPUS_MAX",
    "DURATION_MIN",
    "DURATION_MAX",
    "NOTICE",
    "FREE_WITHIN",
    "AUCTION",
    "HALTED",
];

fn pool_row(p: &Value) -> Vec<String> {
    let auction = match p["auction"]["kind"].as_str() {
        Some("batch") => format!("batch/{}ms", table::text(&p["auction"]["interval_ms"])),
        _ => table::text(&p["auction"]["kind"]),
    };
    vec![
        table::text(&p["id"]),
        table::text(&p["tick"]),
        table::text(&p["price_min"]),
        table::text(&p["price_max"]),
        table::text(&p["gpus_per_order_max"]),
        table::duration(&p["duration_min_s"]),
        table::duration(&p["duration_max_s"]),
        table::duration(&p["notice_s"]),
        table::duration(&p["free_if_preempted_within_s"]),
        auction,
        table::text(&p["halted"]),
    ]
}

fn show_pools(answer: &Value) {
    let mut t = Table::new(POOL_HEADERS);
    for p in answer["pools"].as_array().into_iter().flatten() {
        t.row(pool_row(p));
    }
    t.print();
}

fn show_one_pool(answer: &Value) {
    let mut t = Table::new(POOL_HEADERS);
    t.row(pool_row(&answer["pool"]));
    t.print();
}

fn show_kill_switch(answer: &Value) {
    let mut t = Table::new(&["KIND", "ID", "ENGAGED"]);
    t.row(vec![
        table::text(&answer["kind"]),
        table::text(&answer["id"]),
        table::text(&answer["engaged"]),
    ]);
    t.print();
}

fn show_limits(answer: &Value) {
    let mut t = Table::new(&["ACCOUNT", "ORDERS_OPEN_MAX", "OPEN_NOTIONAL_MAX"]);
    t.row(vec![
        table::text(&answer["account"]),
        table::text(&answer["orders_open_max"]),
        table::text(&answer["open_notional_max"]),
    ]);
    t.print();
}

fn show_state_hash(answer: &Value) {
    let mut t = Table::new(&["SEQ", "STATE_HASH", "ENGINE_NOW"]);
    t.row(vec![
        table::text(&answer["seq"]),
        table::text(&answer["state_hash"]),
        table::time(&answer["engine_now"]),
    ]);
    t.print();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, Outcome};
    use clap::Parser;

    fn set_args(args: &[&str]) -> SetPoolArgs {
        let cli = Cli::try_parse_from(
            ["offpeak", "admin", "pools", "set"]
                .into_iter()
                .chain(args.iter().copied()),
        )
        .unwrap();
        match cli.command {
            Some(Command::Admin(AdminCommand::Pools {
                command: Some(PoolsCommand::Set(args)),
            })) => args,
            other => panic!("not admin pools set: {other:?}"),
        }
    }

    #[test]
    fn a_flag_changes_one_setting_and_keeps_the_others() {
        let current = json!({"id": "h100-sxm.us-east", "tick": "0.05", "price_min": "0.05",
            "price_max": "50.00", "notice_s": 120, "auction": {"kind": "batch", "interval_ms": 500},
            "best_bid": "1.00", "halted": false});
        let spec = pool_spec(
            &set_args(&["h100-sxm.us-east", "--notice-s", "60"]),
            Some(current.clone()),
        )
        .unwrap();
        assert_eq!(
            spec,
            json!({"gpu": "h100-sxm", "region": "us-east", "tick": "0.05", "price_min": "0.05",
                "price_max": "50.00", "notice_s": 60, "auction": {"kind": "batch", "interval_ms": 500}})
        );
        let spec = pool_spec(
            &set_args(&["h100-sxm.us-east", "--auction", "continuous"]),
            Some(current),
        )
        .unwrap();
        assert_eq!(spec["auction"], json!({"kind": "continuous"}));
        let spec = pool_spec(&set_args(&["b200.eu-west", "--interval-ms", "250"]), None).unwrap();
        assert_eq!(
            spec,
            json!({"gpu": "b200", "region": "eu-west", "auction": {"kind": "batch", "interval_ms": 250}})
        );
    }

    #[test]
    fn a_model_pool_keeps_its_offering_and_gpu_and_the_handoff_flags_apply() {
        let current = json!({"id": "llama-3.1-70b-instruct.us-east", "gpu": "h100-sxm",
            "region": "us-east", "offering": "model", "model": "llama-3.1-70b-instruct",
            "tokens_per_s_per_gpu": 400, "price_per_million_tokens": "1.00",
            "handoff": "required", "provision_timeout_s": 600});
        let spec = pool_spec(
            &set_args(&[
                "llama-3.1-70b-instruct.us-east",
                "--provision-timeout-s",
                "30",
                "--handoff",
                "none",
            ]),
            Some(current),
        )
        .unwrap();
        assert_eq!(
            spec,
            json!({"gpu": "h100-sxm", "region": "us-east", "offering": "model",
                "model": "llama-3.1-70b-instruct", "tokens_per_s_per_gpu": 400,
                "handoff": "none", "provision_timeout_s": 30})
        );
    }

    #[test]
    fn pool_flags_that_cannot_be_sent_are_usage_errors() {
        for (args, current) in [
            (vec!["nodot"], None),
            (vec!["a.b", "--auction", "batch"], None),
            (
                vec!["a.b", "--auction", "continuous", "--interval-ms", "5"],
                None,
            ),
            (vec!["a.b", "--tick", "abc"], None),
        ] {
            let error = pool_spec(&set_args(&args), current).unwrap_err();
            assert_eq!(error.outcome, Outcome::Usage, "{args:?}");
        }
        let conflicting = Cli::try_parse_from([
            "offpeak",
            "admin",
            "pools",
            "set",
            "a.b",
            "--file",
            "x.json",
            "--notice-s",
            "1",
        ]);
        assert!(conflicting.is_err());
        let no_target = Cli::try_parse_from(["offpeak", "admin", "kill-switch", "on"]);
        assert!(no_target.is_err());
    }
}
