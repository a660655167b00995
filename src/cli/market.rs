//! Public market data, no token needed: `pools` (every pool with its best prices and
//! capacity) and `book` (one pool's aggregated ladder, asks above bids so the spread sits in
//! the middle).

use super::table::{self, Table};
use super::{Answer, CliError, Client};
use clap::Args;
use serde_json::Value;

/// `offpeak book`.
#[derive(Args, Debug)]
pub struct BookArgs {
    /// The pool, e.g. h100-sxm.us-east.
    pub pool: String,
    /// Price levels per side.
    #[arg(long, default_value_t = 10)]
    pub depth: u32,
}

/// `GET /v1/pools`.
pub async fn pools(client: &Client) -> Result<Answer, CliError> {
    Ok((client.get_public(&["v1", "pools"], &[]).await?, show_pools))
}

/// `GET /v1/pools/{pool}/book?depth=`.
pub async fn book(client: &Client, args: BookArgs) -> Result<Answer, CliError> {
    let answer = client
        .get_public(
            &["v1", "pools", &args.pool, "book"],
            &[("depth", args.depth.to_string())],
        )
        .await?;
    Ok((answer, show_book))
}

fn show_pools(answer: &Value) {
    let mut t = Table::new(&[
        "POOL",
        "BID",
        "ASK",
        "LAST",
        "IDLE",
        "LEASED",
        "RECLAIMING",
        "NOTICE",
    ]);
    for p in answer["pools"].as_array().into_iter().flatten() {
        t.row(vec![
            table::text(&p["id"]),
            table::text(&p["best_bid"]),
            table::text(&p["best_ask"]),
            table::text(&p["last_price"]),
            table::text(&p["idle_gpus"]),
            table::text(&p["leased_gpus"]),
            table::text(&p["reclaiming_gpus"]),
            table::duration(&p["notice_s"]),
        ]);
    }
    t.print();
}

fn show_book(answer: &Value) {
    println!("{}  (seq {})", table::text(&answer["pool"]), answer["seq"]);
    let mut t = Table::new(&["SIDE", "PRICE", "GPUS", "ORDERS"]);
    // Asks from the highest down to the best, then bids from the best down: the spread sits
    // in the middle, as on an exchange ladder.
    let asks: Vec<&Value> = answer["asks"].as_array().into_iter().flatten().collect();
    for level in asks.iter().rev() {
        t.row(vec![
            "ask".into(),
            table::text(&level["price"]),
            table::text(&level["gpus"]),
            table::text(&level["orders"]),
        ]);
    }
    for level in answer["bids"].as_array().into_iter().flatten() {
        t.row(vec![
            "bid".into(),
            table::text(&level["price"]),
            table::text(&level["gpus"]),
            table::text(&level["orders"]),
        ]);
    }
    t.print();
    if t.is_empty() {
        println!("(the book is empty)");
    }
}
