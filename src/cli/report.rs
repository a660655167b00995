//! `offpeak report` (role `admin`): what idle capacity earned, per pool (DESIGN section 13),
//! from `GET /v1/admin/report`.

use super::table::{self, Table};
use super::{Answer, CliError, Client};
use clap::Args;
use reqwest::Method;
use serde_json::Value;

/// `offpeak report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Start (RFC 3339); default 24 hours before --to.
    #[arg(long)]
    pub from: Option<String>,
    /// End (RFC 3339); default now.
    #[arg(long)]
    pub to: Option<String>,
    /// One pool only.
    #[arg(long)]
    pub pool: Option<String>,
    /// Bucket length (whole minutes, 1m to 1d); default 1h.
    #[arg(long)]
    pub bucket: Option<String>,
    /// Print every bucket, not only each pool's total.
    #[arg(long)]
    pub buckets: bool,
}

/// `GET /v1/admin/report?from=&to=&pool=&bucket=`.
pub async fn report(client: &Client, args: ReportArgs) -> Result<Answer, CliError> {
    let query: Vec<(&str, String)> = [
        ("from", args.from),
        ("to", args.to),
        ("pool", args.pool),
        ("bucket", args.bucket),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| (name, v)))
    .collect();
    let answer = client
        .authed(Method::GET, &["v1", "admin", "report"], &query, None)
        .await?;
    Ok((
        answer,
        if args.buckets {
            show_buckets
        } else {
            show_totals
        },
    ))
}

const HEADERS: &[&str] = &[
    "POOL",
    "OFFERED_GPU_H",
    "LEASED_GPU_H",
    "UTIL",
    "REVENUE",
    "PER_OFFERED_GPU_H",
    "AVG_PRICE",
    "PREEMPTIONS",
    "NOTICES_HONOURED",
];

fn figures_row(first: String, f: &Value) -> Vec<String> {
    let pct = |v: &Value, scale: f64| {
        v.as_f64()
            .map_or_else(|| "-".to_owned(), |x| format!("{:.1}%", x * scale))
    };
    vec![
        first,
        table::text(&f["offered_gpu_hours"]),
        table::text(&f["leased_gpu_hours"]),
        pct(&f["utilisation"], 100.0),
        table::text(&f["revenue"]),
        table::text(&f["revenue_per_offered_gpu_hour"]),
        table::text(&f["average_price"]),
        table::text(&f["preemptions"]),
        pct(&f["notices_honoured_pct"], 1.0),
    ]
}

/// One row per pool, then the fleet.
fn show_totals(answer: &Value) {
    println!(
        "{} to {}, by {}",
        table::text(&answer["from"]),
        table::text(&answer["to"]),
        table::text(&answer["bucket"])
    );
    let mut out = Table::new(HEADERS);
    for pool in answer["pools"].as_array().into_iter().flatten() {
        out.row(figures_row(table::text(&pool["pool"]), &pool["total"]));
    }
    out.row(figures_row("all pools".to_owned(), &answer["total"]));
    out.print();
}

/// One row per pool and bucket.
fn show_buckets(answer: &Value) {
    let mut headers = vec!["START"];
    headers.extend_from_slice(HEADERS);
    let mut out = Table::new(&headers);
    for pool in answer["pools"].as_array().into_iter().flatten() {
        for bucket in pool["buckets"].as_array().into_iter().flatten() {
            let mut row = vec![table::text(&bucket["start"])];
            row.extend(figures_row(table::text(&pool["pool"]), bucket));
            out.row(row);
        }
    }
    out.print();
    show_totals(answer);
}
