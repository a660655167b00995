//! A buyer's leases (role `buyer`): `leases` lists them with their notice and cost so far,
//! `release-lease` ends one early. The lease table is shared with the order commands, which
//! print the leases a bid opened.

use super::flags::list_query;
use super::table::{self, Table};
use super::{Answer, CliError, Client};
use clap::Args;
use reqwest::Method;
use serde_json::Value;

/// `offpeak leases`.
#[derive(Args, Debug)]
pub struct LeasesArgs {
    /// Only active, preempting, preempted, completed or released leases.
    #[arg(long)]
    pub status: Option<String>,
    /// At most this many.
    #[arg(long)]
    pub limit: Option<u32>,
}

/// `offpeak release-lease`.
#[derive(Args, Debug)]
pub struct ReleaseLeaseArgs {
    /// The lease id.
    pub id: String,
}

/// `GET /v1/leases?status=&limit=`.
pub async fn leases(client: &Client, args: LeasesArgs) -> Result<Answer, CliError> {
    let query = list_query(args.status, args.limit);
    let answer = client
        .authed(Method::GET, &["v1", "leases"], &query, None)
        .await?;
    Ok((answer, show_leases))
}

/// `POST /v1/leases/{id}/release`.
pub async fn release(client: &Client, args: ReleaseLeaseArgs) -> Result<Answer, CliError> {
    let answer = client
        .authed(
            Method::POST,
            &["v1", "leases", &args.id, "release"],
            &[],
            None,
        )
        .await?;
    Ok((answer, show_one_lease))
}

const LEASE_HEADERS: &[&str] = &[
    "ID",
    "ORDER",
    "POOL",
    "GPUS",
    "PRICE",
    "STATUS",
    "STARTED",
    "ENDS",
    "NOTICE_ENDS",
    "COST",
];

/// Prints leases as one table.
pub fn print_leases<'a>(leases: impl Iterator<Item = &'a Value>) {
    let mut t = Table::new(LEASE_HEADERS);
    for l in leases {
        t.row(vec![
            table::text(&l["id"]),
            table::text(&l["order_id"]),
            table::text(&l["pool"]),
            table::text(&l["gpus"]),
            table::text(&l["price"]),
            table::text(&l["status"]),
            table::time(&l["started_at"]),
            table::time(&l["ends_at"]),
            table::time(&l["notice_ends_at"]),
            table::text(&l["cost"]),
        ]);
    }
    t.print();
}

fn show_leases(answer: &Value) {
    print_leases(answer["leases"].as_array().into_iter().flatten());
}

fn show_one_lease(answer: &Value) {
    print_leases(std::iter::once(&answer["lease"]));
}
