//! A supplier's capacity blocks (role `supplier`): `capacity release` puts idle GPUs on the
//! ask side for a window, now or from a later time (optionally naming the machines), `update`
//! changes a block's reserve price or extends its window, `reclaim` takes GPUs back with the
//! pool's notice, `forecast` warns the block's buyers of a coming reclaim, `list` shows what
//! each block sold, has unsold, is reclaiming and earned. `ready` hands a lease's access over
//! (ssh endpoints, or a model gateway's URL) and `failed` reports that it could not be
//! provisioned (DESIGN sections 11 and 12).

use super::flags::{hours_to_seconds, list_query, price, rfc3339};
use super::leases::show_one_lease;
use super::table::{self, Table};
use super::{Answer, CliError, Client};
use crate::timestamp::{format_rfc3339, now_ms};
use crate::validate::{self, Invalid};
use clap::{ArgGroup, Subcommand};
use matching_engine::{Endpoint, TimeMs};
use reqwest::Method;
use serde_json::{json, Value};

/// `offpeak capacity ...`.
#[derive(Subcommand, Debug)]
pub enum CapacityCommand {
    /// Release a block of idle GPUs at a reserve price for a window.
    Release {
        /// Your id for the block (unique among your blocks).
        #[arg(long)]
        block_id: String,
        /// The pool, e.g. h100-sxm.us-east.
        #[arg(long)]
        pool: String,
        /// GPUs released.
        #[arg(long)]
        gpus: u32,
        /// Lowest price per GPU-hour accepted, in USD.
        #[arg(long, value_name = "USD")]
        reserve_price: String,
        /// The window's length, in hours from its opening (now, or --available-from).
        #[arg(long, required_unless_present = "until", conflicts_with = "until")]
        hours: Option<f64>,
        /// The window's end, RFC 3339 (e.g. 2030-01-02T03:04:05Z).
        #[arg(long, visible_alias = "available-until", value_name = "RFC3339")]
        until: Option<String>,
        /// The window's opening, RFC 3339 (default now); the block waits as pending until then.
        #[arg(long, visible_alias = "from", value_name = "RFC3339")]
        available_from: Option<String>,
        /// A machine of the block as NAME:GPUS (repeat; their GPUs must add up to --gpus).
        #[arg(long = "node", value_name = "NAME:GPUS")]
        nodes: Vec<String>,
    },
    /// Change a block's reserve price or extend its window.
    #[command(group(
        ArgGroup::new("change")
            .required(true)
            .multiple(true)
            .args(["reserve_price", "until"])
    ))]
    Update {
        /// The block id.
        block_id: String,
        /// A new lowest price per GPU-hour, in USD.
        #[arg(long, value_name = "USD")]
        reserve_price: Option<String>,
        /// A later window end, RFC 3339 (a window never shrinks).
        #[arg(long, visible_alias = "available-until", value_name = "RFC3339")]
        until: Option<String>,
    },
    /// Take GPUs of a block back; leases on them get the pool's notice.
    Reclaim {
        /// The block id.
        block_id: String,
        /// GPUs wanted back.
        #[arg(long)]
        gpus: u32,
        /// Notice in seconds (default: the pool's).
        #[arg(long)]
        notice_s: Option<u32>,
        /// Allow a notice shorter than the pool's promise (recorded).
        #[arg(long)]
        emergency: bool,
    },
    /// Warn a block's buyers that a reclaim is coming.
    Forecast {
        /// The block id.
        block_id: String,
        /// When, from now (e.g. 10m, 2h).
        #[arg(long = "in", value_name = "DURATION")]
        within: humantime::Duration,
    },
    /// Hand a lease's access over to its buyer: the lease is ready, and billed, from now.
    #[command(group(ArgGroup::new("access").required(true).args(["endpoints", "gateway"])))]
    Ready {
        /// The block id.
        block_id: String,
        /// The lease id.
        lease_id: String,
        /// Bare metal: how the buyer logs in to a node, as [NODE=]USER@HOST:PORT, e.g.
        /// rack1-n1=ubuntu@10.1.0.1:22 (repeat, one per node of the lease; NODE= only for
        /// blocks released with --node; an IPv6 address in brackets: root@[fd00::7]:22).
        #[arg(long = "endpoint", value_name = "[NODE=]USER@HOST:PORT")]
        endpoints: Vec<String>,
        /// Model pools: the inference gateway's base URL, e.g. https://gateway.example/v1.
        #[arg(long, value_name = "URL")]
        gateway: Option<String>,
    },
    /// Report that a lease could not be provisioned: it ends failed, costs nothing, and its
    /// GPUs leave the block until released again.
    Failed {
        /// The block id.
        block_id: String,
        /// The lease id.
        lease_id: String,
        /// Why, for the buyer.
        #[arg(long)]
        reason: String,
    },
    /// List your blocks.
    List {
        /// Only pending, open or closed blocks.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// Runs one `capacity` subcommand.
pub async fn run(client: &Client, command: CapacityCommand) -> Result<Answer, CliError> {
    Ok(match command {
        CapacityCommand::Release {
            block_id,
            pool,
            gpus,
            reserve_price,
            hours,
            until,
            available_from,
            nodes,
        } => {
            let opens = match &available_from {
                Some(from) => rfc3339(from, "--available-from")?,
                None => now_ms(),
            };
            let until = match (hours, until) {
                (Some(hours), None) => {
                    let seconds = hours_to_seconds(hours, "--hours")?;
                    format_rfc3339(TimeMs(opens.0 + i64::from(seconds) * 1000))
                }
                (None, Some(until)) => {
                    rfc3339(&until, "--until")?;
                    until
                }
                _ => return Err(CliError::usage("give either --hours or --until")),
            };
            let nodes = nodes
                .iter()
                .map(|n| parse_node(n))
                .collect::<Result<Vec<_>, _>>()?;
            let mut body = json!({
                "block_id": block_id,
                "pool": pool,
                "gpus": gpus,
                "reserve_price": price(&reserve_price, "--reserve-price")?,
                "available_until": until,
                "nodes": nodes,
            });
            if let Some(from) = available_from {
                body["available_from"] = json!(from);
            }
            (
                client
                    .authed(Method::POST, &["v1", "capacity"], &[], Some(&body))
                    .await?,
                show_one_block,
            )
        }
        CapacityCommand::Update {
            block_id,
            reserve_price,
            until,
        } => {
            let mut body = json!({});
            if let Some(text) = reserve_price {
                body["reserve_price"] = json!(price(&text, "--reserve-price")?);
            }
            if let Some(until) = until {
                rfc3339(&until, "--until")?;
                body["available_until"] = json!(until);
            }
            (
                client
                    .authed(
                        Method::PATCH,
                        &["v1", "capacity", &block_id],
                        &[],
                        Some(&body),
                    )
                    .await?,
                show_one_block,
            )
        }
        CapacityCommand::Reclaim {
            block_id,
            gpus,
            notice_s,
            emergency,
        } => {
            let mut body = json!({"gpus": gpus, "emergency": emergency});
            if let Some(notice) = notice_s {
                body["notice_s"] = json!(notice);
            }
            (
                client
                    .authed(
                        Method::POST,
                        &["v1", "capacity", &block_id, "reclaim"],
                        &[],
                        Some(&body),
                    )
                    .await?,
                show_reclaim,
            )
        }
        CapacityCommand::Forecast { block_id, within } => {
            let within = std::time::Duration::from(within);
            let ms = i64::try_from(within.as_millis())
                .map_err(|_| CliError::usage("--in is too long"))?;
            let body = json!({"reclaim_at": format_rfc3339(TimeMs(now_ms().0.saturating_add(ms)))});
            (
                client
                    .authed(
                        Method::POST,
                        &["v1", "capacity", &block_id, "forecast"],
                        &[],
                        Some(&body),
                    )
                    .await?,
                show_one_block,
            )
        }
        CapacityCommand::Ready {
            block_id,
            lease_id,
            endpoints,
            gateway,
        } => {
            let body = match gateway {
                Some(url) => {
                    validate::endpoint_url(&url).map_err(|e| invalid("--gateway", &url, e))?;
                    json!({ "endpoint": url })
                }
                None => {
                    let endpoints = endpoints
                        .iter()
                        .map(|e| parse_endpoint(e))
                        .collect::<Result<Vec<_>, _>>()?;
                    json!({ "endpoints": endpoints })
                }
            };
            (
                client
                    .authed(
                        Method::POST,
                        &["v1", "capacity", &block_id, "leases", &lease_id, "ready"],
                        &[],
                        Some(&body),
                    )
                    .await?,
                show_one_lease,
            )
        }
        CapacityCommand::Failed {
            block_id,
            lease_id,
            reason,
        } => {
            validate::failure_reason(&reason).map_err(|e| invalid("--reason", &reason, e))?;
            (
                client
                    .authed(
                        Method::POST,
                        &["v1", "capacity", &block_id, "leases", &lease_id, "failed"],
                        &[],
                        Some(&json!({ "reason": reason })),
                    )
                    .await?,
                show_one_lease,
            )
        }
        CapacityCommand::List { status, limit } => (
            client
                .authed(
                    Method::GET,
                    &["v1", "capacity"],
                    &list_query(status, limit),
                    None,
                )
                .await?,
            show_blocks,
        ),
    })
}

fn parse_node(text: &str) -> Result<Value, CliError> {
    let parsed = text
        .rsplit_once(':')
        .and_then(|(name, gpus)| Some((name, gpus.parse::<u32>().ok()?)));
    match parsed {
        Some((name, gpus)) if !name.is_empty() => Ok(json!({"node": name, "gpus": gpus})),
        _ => Err(CliError::usage(format!(
            "--node {text:?} must be NAME:GPUS, e.g. rack12-n3:8"
        ))),
    }
}

/// An endpoint given as `[NODE=]USER@HOST:PORT`, checked as the server checks it.
fn parse_endpoint(text: &str) -> Result<Value, CliError> {
    let usage = || {
        CliError::usage(format!(
            "--endpoint {text:?} must be [NODE=]USER@HOST:PORT, e.g. ubuntu@10.1.0.1:22 or \
             rack1-n1=ubuntu@10.1.0.1:22"
        ))
    };
    let (node, login) = match text.split_once('=') {
        Some((node, login)) => (Some(node), login),
        None => (None, text),
    };
    let (user, address) = login.split_once('@').ok_or_else(usage)?;
    let (host, port) = address.rsplit_once(':').ok_or_else(usage)?;
    let port = port.parse::<u16>().map_err(|_| usage())?;
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.strip_suffix(']').ok_or_else(usage)?,
        None if host.contains(':') => {
            return Err(CliError::usage(format!(
                "--endpoint {text:?}: write an IPv6 address in brackets, e.g. root@[fd00::7]:22"
            )))
        }
        None => host,
    };
    let endpoint = Endpoint {
        node: node.map(Into::into),
        host: host.into(),
        port,
        user: user.into(),
    };
    validate::endpoints(std::slice::from_ref(&endpoint))
        .map_err(|e| invalid("--endpoint", text, e))?;
    serde_json::to_value(&endpoint).map_err(|e| CliError::usage(format!("--endpoint: {e}")))
}

/// A value the server would refuse, as a usage error naming the flag.
fn invalid(flag: &str, text: &str, why: Invalid) -> CliError {
    let why = match why {
        Invalid::Malformed(message) => message,
        Invalid::Rejected(rejection) => format!("{rejection:?}"),
    };
    CliError::usage(format!("{flag} {text:?}: {why}"))
}

const BLOCK_HEADERS: &[&str] = &[
    "BLOCK",
    "POOL",
    "STATUS",
    "GPUS",
    "SOLD",
    "UNSOLD",
    "RECLAIMING",
    "RECLAIMED",
    "RESERVE",
    "FROM",
    "UNTIL",
    "REVENUE",
];

fn block_row(b: &Value) -> Vec<String> {
    vec![
        table::text(&b["block_id"]),
        table::text(&b["pool"]),
        table::text(&b["status"]),
        table::text(&b["gpus"]),
        table::text(&b["gpus_sold"]),
        table::text(&b["gpus_unsold"]),
        table::text(&b["gpus_reclaiming"]),
        table::text(&b["gpus_reclaimed"]),
        table::text(&b["reserve_price"]),
        table::time(&b["available_from"]),
        table::time(&b["available_until"]),
        table::text(&b["revenue"]),
    ]
}

fn show_blocks(answer: &Value) {
    let mut t = Table::new(BLOCK_HEADERS);
    for b in answer["blocks"].as_array().into_iter().flatten() {
        t.row(block_row(b));
    }
    t.print();
}

fn show_one_block(answer: &Value) {
    let mut t = Table::new(BLOCK_HEADERS);
    t.row(block_row(&answer["block"]));
    t.print();
    if let Some(n) = answer["leases_opened"].as_u64().filter(|n| *n > 0) {
        println!("{n} lease(s) opened at once");
    }
    if let Some(n) = answer["leases_warned"].as_u64() {
        println!("{n} lease(s) warned");
    }
}

fn show_reclaim(answer: &Value) {
    show_one_block(answer);
    let r = &answer["reclaim"];
    println!(
        "reclaimed {} GPUs: {} from the book, {} lease(s) preempted, notice ends {}{}",
        table::text(&r["gpus"]),
        table::text(&r["gpus_from_book"]),
        table::text(&r["leases_preempted"]),
        table::time(&r["notice_ends_at"]),
        if r["emergency"].as_bool() == Some(true) {
            " (emergency)"
        } else {
            ""
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Outcome;

    #[test]
    fn endpoints_are_node_equals_user_at_host_colon_port() {
        assert_eq!(
            parse_endpoint("ubuntu@10.1.0.1:22").unwrap(),
            json!({"host": "10.1.0.1", "port": 22, "user": "ubuntu"})
        );
        assert_eq!(
            parse_endpoint("rack1-n1=ubuntu@10.1.0.1:2222").unwrap(),
            json!({"node": "rack1-n1", "host": "10.1.0.1", "port": 2222, "user": "ubuntu"})
        );
        assert_eq!(
            parse_endpoint("root@[fd00::7]:22").unwrap()["host"],
            "fd00::7"
        );
        for bad in [
            "10.1.0.1:22",
            "ubuntu@10.1.0.1",
            "ubuntu@10.1.0.1:0",
            "ubuntu@10.1.0.1:65536",
            "root@fd00::7:22",
            "-oProxyCommand@h:22",
            "a;b@h:22",
            "n=u@a b:22",
            "bad node=u@h:22",
        ] {
            assert_eq!(
                parse_endpoint(bad).unwrap_err().outcome,
                Outcome::Usage,
                "{bad}"
            );
        }
    }

    #[test]
    fn nodes_are_name_colon_gpus() {
        assert!(parse_node("rack1-n1:8").is_ok());
        for bad in ["rack1", ":8", "rack1:x", "rack1:-1"] {
            assert_eq!(
                parse_node(bad).unwrap_err().outcome,
                Outcome::Usage,
                "{bad}"
            );
        }
    }
}
