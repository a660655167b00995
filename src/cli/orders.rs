//! A buyer's bids (role `buyer`): `bid` builds the `POST /v1/orders` body from flags (hours or
//! seconds, a USD limit price, the time in force, a `gtd` expiry, ssh keys for the leases'
//! machines), `orders` lists them, `amend` changes a resting bid's price or size, `cancel` ends
//! one. An order prints as one row, followed by the leases the command opened for it, if any.

use super::flags::{hours_to_seconds, lease_seconds, list_query, price, rfc3339};
use super::keys::read_keys;
use super::leases::print_leases;
use super::table::{self, Table};
use super::{Answer, CliError, Client};
use clap::{ArgGroup, Args, ValueEnum};
use reqwest::Method;
use serde_json::{json, Map, Value};

/// `offpeak bid`.
#[derive(Args, Debug)]
pub struct BidArgs {
    /// The pool, e.g. h100-sxm.us-east.
    #[arg(long)]
    pub pool: String,
    /// GPUs wanted.
    #[arg(long)]
    pub gpus: u32,
    /// Lease length needed, in hours (e.g. 4 or 0.5).
    #[arg(
        long,
        required_unless_present = "duration_s",
        conflicts_with = "duration_s"
    )]
    pub hours: Option<f64>,
    /// Lease length needed, in seconds.
    #[arg(long)]
    pub duration_s: Option<u32>,
    /// Limit price per GPU-hour in USD, e.g. 1.20.
    #[arg(long, value_name = "USD")]
    pub max_price: String,
    /// The least GPUs one execution may give (default: all of --gpus).
    #[arg(long)]
    pub min_gpus: Option<u32>,
    /// The longest lease wanted, in hours (default: --hours).
    #[arg(long)]
    pub max_hours: Option<f64>,
    /// Immediate or cancel: take what is there now, cancel the rest (= --tif ioc).
    #[arg(long, conflicts_with = "fok")]
    pub ioc: bool,
    /// Fill or kill: all at once or nothing (= --tif fok).
    #[arg(long)]
    pub fok: bool,
    /// Time in force (default gtc; gtd needs --expires-at).
    #[arg(long, value_enum, conflicts_with_all = ["ioc", "fok"])]
    pub tif: Option<Tif>,
    /// When a good-till-date bid expires, RFC 3339 (implies --tif gtd).
    #[arg(long, value_name = "RFC3339")]
    pub expires_at: Option<String>,
    /// Bid again for the GPUs of a preempted lease.
    #[arg(long)]
    pub persistent: bool,
    /// Idempotency key: the same key returns the first result.
    #[arg(long)]
    pub client_order_id: Option<String>,
    /// An ssh public key for the lease's machines: a key line (quoted), a file of key lines
    /// such as ~/.ssh/id_ed25519.pub, or - for stdin (repeat for more; default: the keys of
    /// `offpeak keys set`).
    #[arg(long = "ssh-key", value_name = "KEY_OR_FILE")]
    pub ssh_keys: Vec<String>,
}

/// How long a bid stays on the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tif {
    /// Good till cancelled.
    Gtc,
    /// Immediate or cancel.
    Ioc,
    /// Fill or kill.
    Fok,
    /// Good till --expires-at.
    Gtd,
}

impl Tif {
    fn code(self) -> &'static str {
        match self {
            Tif::Gtc => "gtc",
            Tif::Ioc => "ioc",
            Tif::Fok => "fok",
            Tif::Gtd => "gtd",
        }
    }
}

/// `offpeak orders`.
#[derive(Args, Debug)]
pub struct OrdersArgs {
    /// Only open, filled, cancelled or expired orders.
    #[arg(long)]
    pub status: Option<String>,
    /// At most this many.
    #[arg(long)]
    pub limit: Option<u32>,
}

/// `offpeak amend`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("change").required(true).multiple(true).args(["price", "gpus"])))]
pub struct AmendArgs {
    /// The order id.
    pub id: String,
    /// A new limit price per GPU-hour, in USD (a change loses time priority).
    #[arg(long, value_name = "USD")]
    pub price: Option<String>,
    /// The bid's new total GPUs, those already filled included (fewer keeps time priority,
    /// more loses it).
    #[arg(long)]
    pub gpus: Option<u32>,
}

/// `offpeak cancel`.
#[derive(Args, Debug)]
pub struct CancelArgs {
    /// The order id.
    pub id: String,
}

/// `POST /v1/orders`.
pub async fn bid(client: &Client, args: BidArgs) -> Result<Answer, CliError> {
    let body = bid_body(&args)?;
    let answer = client
        .authed(Method::POST, &["v1", "orders"], &[], Some(&body))
        .await?;
    Ok((answer, show_order_with_leases))
}

/// `GET /v1/orders?status=&limit=`.
pub async fn orders(client: &Client, args: OrdersArgs) -> Result<Answer, CliError> {
    let query = list_query(args.status, args.limit);
    let answer = client
        .authed(Method::GET, &["v1", "orders"], &query, None)
        .await?;
    Ok((answer, show_orders))
}

/// `PATCH /v1/orders/{id}`.
pub async fn amend(client: &Client, args: AmendArgs) -> Result<Answer, CliError> {
    let mut body = Map::new();
    if let Some(text) = &args.price {
        body.insert("price".into(), json!(price(text, "--price")?));
    }
    if let Some(gpus) = args.gpus {
        body.insert("gpus".into(), json!(gpus));
    }
    let answer = client
        .authed(
            Method::PATCH,
            &["v1", "orders", &args.id],
            &[],
            Some(&Value::Object(body)),
        )
        .await?;
    Ok((answer, show_order_with_leases))
}

/// `DELETE /v1/orders/{id}`.
pub async fn cancel(client: &Client, args: CancelArgs) -> Result<Answer, CliError> {
    let answer = client
        .authed(Method::DELETE, &["v1", "orders", &args.id], &[], None)
        .await?;
    Ok((answer, show_order_with_leases))
}

fn bid_body(args: &BidArgs) -> Result<Value, CliError> {
    let duration_s = lease_seconds(args.hours, args.duration_s)?;
    let mut body = Map::new();
    body.insert("pool".into(), json!(args.pool));
    body.insert("gpus".into(), json!(args.gpus));
    body.insert(
        "price".into(),
        json!(price(&args.max_price, "--max-price")?),
    );
    body.insert("duration_s".into(), json!(duration_s));
    if let Some(hours) = args.max_hours {
        body.insert(
            "max_duration_s".into(),
            json!(hours_to_seconds(hours, "--max-hours")?),
        );
    }
    if let Some(min) = args.min_gpus {
        body.insert("min_gpus".into(), json!(min));
    }
    let tif = match (args.tif, args.ioc, args.fok, &args.expires_at) {
        (Some(tif), _, _, _) => tif,
        (None, true, _, _) => Tif::Ioc,
        (None, _, true, _) => Tif::Fok,
        (None, false, false, Some(_)) => Tif::Gtd,
        (None, false, false, None) => Tif::Gtc,
    };
    body.insert("tif".into(), json!(tif.code()));
    match (tif, &args.expires_at) {
        (Tif::Gtd, Some(at)) => {
            rfc3339(at, "--expires-at")?;
            body.insert("expires_at".into(), json!(at));
        }
        (Tif::Gtd, None) => return Err(CliError::usage("--tif gtd needs --expires-at")),
        (_, Some(_)) => {
            return Err(CliError::usage(
                "--expires-at is for good-till-date bids (--tif gtd)",
            ))
        }
        (_, None) => {}
    }
    if args.persistent {
        body.insert("persistent".into(), json!(true));
    }
    if let Some(id) = &args.client_order_id {
        body.insert("client_order_id".into(), json!(id));
    }
    if !args.ssh_keys.is_empty() {
        body.insert("ssh_public_keys".into(), json!(read_keys(&args.ssh_keys)?));
    }
    Ok(Value::Object(body))
}

const ORDER_HEADERS: &[&str] = &[
    "ID", "POOL", "PRICE", "GPUS", "FILLED", "LEFT", "DURATION", "TIF", "STATUS", "CREATED",
];

fn order_row(o: &Value) -> Vec<String> {
    let mut tif = table::text(&o["tif"]);
    if o["persistent"].as_bool() == Some(true) {
        tif.push_str("+persistent");
    }
    let mut status = table::text(&o["status"]);
    if let Some(reason) = o["cancel_reason"].as_str() {
        status = format!("{status} ({reason})");
    }
    vec![
        table::text(&o["id"]),
        table::text(&o["pool"]),
        table::text(&o["price"]),
        table::text(&o["gpus"]),
        table::text(&o["filled_gpus"]),
        table::text(&o["remaining_gpus"]),
        table::duration(&o["duration_s"]),
        tif,
        status,
        table::time(&o["created_at"]),
    ]
}

fn show_orders(answer: &Value) {
    let mut t = Table::new(ORDER_HEADERS);
    for o in answer["orders"].as_array().into_iter().flatten() {
        t.row(order_row(o));
    }
    t.print();
}

fn show_order_with_leases(answer: &Value) {
    let mut t = Table::new(ORDER_HEADERS);
    t.row(order_row(&answer["order"]));
    t.print();
    if let Some(leases) = answer["leases"].as_array().filter(|l| !l.is_empty()) {
        println!();
        print_leases(leases.iter());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("offpeak").chain(args.iter().copied()))
    }

    #[test]
    fn bid_flags_build_the_request_body() {
        let cli = parse(&[
            "bid",
            "--pool",
            "h100-sxm.us-east",
            "--gpus",
            "8",
            "--hours",
            "4",
            "--max-price",
            "1.20",
            "--ioc",
            "--persistent",
        ])
        .unwrap();
        let Some(Command::Bid(args)) = cli.command else {
            panic!("not a bid")
        };
        let body = bid_body(&args).unwrap();
        assert_eq!(
            body,
            json!({"pool": "h100-sxm.us-east", "gpus": 8, "price": "1.20", "duration_s": 14400, "tif": "ioc", "persistent": true})
        );
    }

    #[test]
    fn ssh_keys_go_with_the_bid() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC5k3K7KDeQvz2YfHkn5XCT+dAunPX0yMg638MMYjOo9 alice@laptop";
        let body = bid_body(&bid(&["--ssh-key", key])).unwrap();
        assert_eq!(body["ssh_public_keys"], json!([key]));
        assert!(bid_body(&bid(&[]))
            .unwrap()
            .get("ssh_public_keys")
            .is_none());
        let error = bid_body(&bid(&["--ssh-key", "ssh-ed25519 AAAA!!!"])).unwrap_err();
        assert_eq!(error.outcome, crate::cli::Outcome::Usage);
    }

    fn bid(extra: &[&str]) -> BidArgs {
        let mut args = vec![
            "bid",
            "--pool",
            "p",
            "--gpus",
            "2",
            "--hours",
            "1",
            "--max-price",
            "1",
        ];
        args.extend_from_slice(extra);
        match parse(&args).unwrap().command {
            Some(Command::Bid(args)) => args,
            other => panic!("not a bid: {other:?}"),
        }
    }

    #[test]
    fn good_till_date_bids_carry_their_expiry() {
        let at = "2030-01-02T03:04:05Z";
        for extra in [
            vec!["--tif", "gtd", "--expires-at", at],
            vec!["--expires-at", at],
        ] {
            let body = bid_body(&bid(&extra)).unwrap();
            assert_eq!(body["tif"], "gtd", "{extra:?}");
            assert_eq!(body["expires_at"], at, "{extra:?}");
        }
        assert_eq!(bid_body(&bid(&["--tif", "fok"])).unwrap()["tif"], "fok");
        for extra in [
            vec!["--tif", "gtd"],
            vec!["--tif", "gtc", "--expires-at", at],
            vec!["--ioc", "--expires-at", at],
            vec!["--expires-at", "tomorrow"],
        ] {
            let error = bid_body(&bid(&extra)).unwrap_err();
            assert_eq!(error.outcome, crate::cli::Outcome::Usage, "{extra:?}");
        }
        assert!(parse(&[
            "bid",
            "--pool",
            "p",
            "--gpus",
            "1",
            "--hours",
            "1",
            "--max-price",
            "1",
            "--ioc",
            "--tif",
            "gtc"
        ])
        .is_err());
    }

    #[test]
    fn an_amend_names_a_price_or_gpus() {
        assert!(parse(&["amend", "7"]).is_err());
        assert!(parse(&["amend", "7", "--gpus", "4"]).is_ok());
        assert!(parse(&["amend", "7", "--price", "1.10", "--gpus", "4"]).is_ok());
    }

    #[test]
    fn conflicting_or_missing_flags_are_usage_errors() {
        assert!(parse(&["bid", "--pool", "p", "--gpus", "1", "--max-price", "1"]).is_err());
        assert!(parse(&[
            "bid",
            "--pool",
            "p",
            "--gpus",
            "1",
            "--hours",
            "1",
            "--max-price",
            "1",
            "--ioc",
            "--fok"
        ])
        .is_err());
        assert!(parse(&["serve", "--speed", "10"]).is_err());
        assert!(parse(&[
            "bid",
            "--pool",
            "p",
            "--gpus",
            "-1",
            "--hours",
            "1",
            "--max-price",
            "1"
        ])
        .is_err());
    }
}
