//! A buyer's leases (role `buyer`): `leases` lists them with their notice, cost so far and
//! access (DESIGN section 11), or shows one with all its endpoints; `release-lease` ends one
//! early; `ssh` prints the ssh command for a ready bare-metal lease; `lease-token` mints the
//! token a model lease's gateway takes. The lease table is shared with the order commands,
//! which print the leases a bid opened, and with `capacity ready` and `failed`.

use super::flags::list_query;
use super::table::{self, Table};
use super::{Answer, CliError, Client};
use clap::Args;
use reqwest::Method;
use serde_json::Value;

/// `offpeak leases`.
#[derive(Args, Debug)]
pub struct LeasesArgs {
    /// Show this one lease, with all its endpoints (default: list).
    #[arg(conflicts_with_all = ["status", "limit"])]
    pub id: Option<String>,
    /// Only active, preempting, preempted, completed, released or failed leases.
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

/// `offpeak ssh`.
#[derive(Args, Debug)]
pub struct SshArgs {
    /// The lease id.
    pub id: String,
    /// Print the ssh command (what `offpeak ssh` does: it never runs ssh itself, so
    /// `$(offpeak ssh 7)` does).
    #[arg(long)]
    pub print: bool,
}

/// `offpeak lease-token`.
#[derive(Args, Debug)]
pub struct LeaseTokenArgs {
    /// The lease id (a ready lease of a model pool).
    pub id: String,
}

/// `GET /v1/leases?status=&limit=`, or `GET /v1/leases/{id}` for one.
pub async fn leases(client: &Client, args: LeasesArgs) -> Result<Answer, CliError> {
    if let Some(id) = &args.id {
        let answer = client
            .authed(Method::GET, &["v1", "leases", id], &[], None)
            .await?;
        return Ok((answer, show_one_lease));
    }
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

/// `GET /v1/leases/{id}`, then the ssh command for its first endpoint; a lease that cannot be
/// reached over ssh now is refused (exit 1) with the reason.
pub async fn ssh(client: &Client, args: SshArgs) -> Result<Answer, CliError> {
    let answer = client
        .authed(Method::GET, &["v1", "leases", &args.id], &[], None)
        .await?;
    let lease = &answer["lease"];
    let id = &args.id;
    let access = &lease["access"];
    let has_endpoints = access["endpoints"]
        .as_array()
        .is_some_and(|e| !e.is_empty());
    if !has_endpoints && is_model_lease(client, lease).await {
        return Err(CliError::refused(
            "not_a_bare_metal_lease",
            format!(
                "lease {id} is in the model pool {}: it is reached at its endpoint URL with a \
                 lease token (`offpeak lease-token {id}`), not over ssh",
                table::text(&lease["pool"])
            ),
        ));
    }
    match access["status"].as_str() {
        Some("ready") => {}
        Some("failed") => {
            return Err(CliError::refused(
                "lease_failed",
                format!(
                    "lease {id} is not ready: its access is failed ({}); it costs nothing",
                    access["reason"].as_str().unwrap_or("no reason given")
                ),
            ))
        }
        status => {
            return Err(CliError::refused(
                "lease_not_ready",
                format!(
                    "lease {id} is not ready: its access is {} (the supplier has not handed the \
                     machines over yet); try again shortly",
                    status.unwrap_or("unknown")
                ),
            ))
        }
    }
    if !matches!(lease["status"].as_str(), Some("active" | "preempting")) {
        return Err(CliError::refused(
            "lease_ended",
            format!(
                "lease {id} has ended ({}): its machines are no longer yours",
                table::text(&lease["status"])
            ),
        ));
    }
    if !has_endpoints {
        return Err(CliError::refused(
            "no_endpoints",
            format!(
                "lease {id} is ready but lists no endpoints: its supplier hands access over \
                 outside offpeak"
            ),
        ));
    }
    Ok((answer, show_ssh_command))
}

/// Whether a lease is of a model pool: it says so once ready (an `endpoint` URL); before, its
/// pool does. A pool that cannot be read counts as bare metal: the access status then speaks.
async fn is_model_lease(client: &Client, lease: &Value) -> bool {
    if lease["access"]["endpoint"].is_string() {
        return true;
    }
    let Some(pool) = lease["pool"].as_str() else {
        return false;
    };
    match client.get_public(&["v1", "pools", pool], &[]).await {
        Ok(answer) => answer["pool"]["offering"] == "model",
        Err(_) => false,
    }
}

/// `POST /v1/leases/{id}/token`.
pub async fn token(client: &Client, args: LeaseTokenArgs) -> Result<Answer, CliError> {
    let answer = client
        .authed(
            Method::POST,
            &["v1", "leases", &args.id, "token"],
            &[],
            None,
        )
        .await?;
    Ok((answer, show_token))
}

const LEASE_HEADERS: &[&str] = &[
    "ID",
    "ORDER",
    "POOL",
    "GPUS",
    "PRICE",
    "STATUS",
    "ACCESS",
    "STARTED",
    "ENDS",
    "NOTICE_ENDS",
    "COST",
    "ENDPOINT",
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
            table::text(&l["access"]["status"]),
            table::time(&l["started_at"]),
            table::time(&l["ends_at"]),
            table::time(&l["notice_ends_at"]),
            table::text(&l["cost"]),
            endpoint_cell(&l["access"]),
        ]);
    }
    t.print();
}

/// The first endpoint as `user@host:port` (with `+N` when there are more), or the model
/// endpoint's URL; empty before the lease is ready.
fn endpoint_cell(access: &Value) -> String {
    let endpoints = access["endpoints"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    match (endpoints, access["endpoint"].as_str()) {
        ([first], _) => login(first),
        ([first, rest @ ..], _) => format!("{} +{}", login(first), rest.len()),
        ([], Some(url)) => url.to_owned(),
        ([], None) => String::new(),
    }
}

/// An endpoint as `user@host:port`; an IPv6 address goes in brackets.
fn login(endpoint: &Value) -> String {
    let host = table::text(&endpoint["host"]);
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    format!(
        "{}@{host}:{}",
        table::text(&endpoint["user"]),
        table::text(&endpoint["port"])
    )
}

/// The ssh command for an endpoint, port always given: `ssh -p 22 ubuntu@10.1.0.1`. ssh takes
/// an IPv6 address bare, not in brackets.
fn ssh_command(endpoint: &Value) -> String {
    let host = table::text(&endpoint["host"]);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    format!(
        "ssh -p {} {}@{host}",
        table::text(&endpoint["port"]),
        table::text(&endpoint["user"])
    )
}

fn show_leases(answer: &Value) {
    print_leases(answer["leases"].as_array().into_iter().flatten());
}

/// One lease: its row, then every endpoint (or the model endpoint) and why it failed.
pub fn show_one_lease(answer: &Value) {
    let lease = &answer["lease"];
    print_leases(std::iter::once(lease));
    let access = &lease["access"];
    if let Some(endpoints) = access["endpoints"].as_array().filter(|e| !e.is_empty()) {
        println!();
        let mut t = Table::new(&["NODE", "ENDPOINT", "SSH"]);
        for e in endpoints {
            t.row(vec![
                e["node"].as_str().unwrap_or("-").to_owned(),
                login(e),
                ssh_command(e),
            ]);
        }
        t.print();
    }
    if let Some(url) = access["endpoint"].as_str() {
        println!(
            "\nendpoint: {url} (call it with `offpeak lease-token {}`)",
            table::text(&lease["id"])
        );
    }
    if let Some(reason) = access["reason"].as_str() {
        println!("\nfailed: {reason}");
    }
}

fn show_ssh_command(answer: &Value) {
    if let Some(first) = answer["lease"]["access"]["endpoints"]
        .as_array()
        .and_then(|e| e.first())
    {
        println!("{}", ssh_command(first));
    }
}

/// The token alone, so `$(offpeak lease-token 7)` is the token.
fn show_token(answer: &Value) {
    println!("{}", table::text(&answer["token"]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_print_as_logins_and_ssh_commands() {
        let e = json!({"node": "rack1-n1", "host": "10.1.0.1", "port": 22, "user": "ubuntu"});
        assert_eq!(login(&e), "ubuntu@10.1.0.1:22");
        assert_eq!(ssh_command(&e), "ssh -p 22 ubuntu@10.1.0.1");
        let v6 = json!({"host": "fd00::7", "port": 2222, "user": "root"});
        assert_eq!(login(&v6), "root@[fd00::7]:2222");
        assert_eq!(ssh_command(&v6), "ssh -p 2222 root@fd00::7");
        assert_eq!(
            endpoint_cell(&json!({"status": "ready", "endpoints": [e, v6]})),
            "ubuntu@10.1.0.1:22 +1"
        );
        assert_eq!(
            endpoint_cell(&json!({"status": "ready", "endpoint": "https://gw.example/v1"})),
            "https://gw.example/v1"
        );
        assert_eq!(endpoint_cell(&json!({"status": "provisioning"})), "");
    }
}
