//! The CLI against a real server (SQLite, in process): every command, its `--json` output
//! parsed, its tables, and the exit codes scripts rely on (0 ok, 1 refused, 2 usage,
//! 3 unreachable). One test per command family beyond the first walk-through: market data,
//! amends and good-till-date bids, capacity updates and future windows, administration, and
//! the handoff (ssh keys, `capacity ready` and `failed`, `ssh`, lease tokens).

use crate::embedded::EmbeddedApp;
use crate::first_start::BIN;
use crate::handoff::{ED25519_KEY, MODEL_POOL};
use crate::helpers::{rfc3339_in, token, POOL, SECRET};
use serde_json::Value;
use std::process::Command;

/// One CLI run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "exit code; stderr: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `offpeak <args>` with only these environment variables, off the async runtime (the
/// server under test runs on it).
async fn offpeak(env: &[(&str, &str)], args: &[&str]) -> Run {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(BIN)
            .args(&args)
            .env_clear()
            .envs(env)
            .output()
            .expect("the CLI runs");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .expect("join")
}

/// The CLI as one account: `OFFPEAK_URL` and `OFFPEAK_TOKEN` set.
struct As<'a> {
    url: &'a str,
    token: String,
}

impl As<'_> {
    async fn run(&self, args: &[&str]) -> Run {
        offpeak(
            &[("OFFPEAK_URL", self.url), ("OFFPEAK_TOKEN", &self.token)],
            args,
        )
        .await
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        self.run(&args).await.json()
    }
}

#[tokio::test]
async fn every_cli_command_works_against_a_real_server() {
    let app = EmbeddedApp::spawn().await;
    let url = app.address.as_str();
    let supplier = As {
        url,
        token: token("dc1", "supplier"),
    };
    let buyer = As {
        url,
        token: token("acme", "buyer"),
    };

    let pools = supplier.json(&["pools"]).await;
    assert_eq!(pools["pools"].as_array().map(Vec::len), Some(5), "{pools}");
    let table = supplier.run(&["pools"]).await;
    assert_eq!(table.code, 0);
    assert!(table.stdout.starts_with("POOL "), "{}", table.stdout);
    assert!(table.stdout.contains(POOL));

    // Supplier: release, list, forecast.
    let released = supplier
        .json(&[
            "capacity",
            "release",
            "--block-id",
            "b1",
            "--pool",
            POOL,
            "--gpus",
            "8",
            "--reserve-price",
            "1.50",
            "--hours",
            "3",
            "--node",
            "rack1-n1:8",
        ])
        .await;
    assert_eq!(released["block"]["block_id"], "b1");
    assert_eq!(released["block"]["status"], "open");
    assert_eq!(released["block"]["nodes"][0]["node"], "rack1-n1");
    let listed = supplier.json(&["capacity", "list"]).await;
    assert_eq!(
        listed["blocks"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    let table = supplier
        .run(&["capacity", "list", "--status", "open"])
        .await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("BLOCK"), "{}", table.stdout);
    assert!(table.stdout.contains("b1"), "{}", table.stdout);

    // The book, public.
    let book = offpeak(&[("OFFPEAK_URL", url)], &["book", POOL, "--json"])
        .await
        .json();
    assert_eq!(book["asks"][0]["price"], "1.50");
    assert_eq!(book["asks"][0]["gpus"], 8);
    let table = offpeak(&[], &["--url", url, "book", POOL]).await;
    assert_eq!(
        table.code, 0,
        "--url works without OFFPEAK_URL: {}",
        table.stderr
    );
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("ask") && l.contains("1.50")),
        "{}",
        table.stdout
    );

    // Buyer: a bid that trades at once, one that rests, a cancel, leases.
    let filled = buyer
        .json(&[
            "bid",
            "--pool",
            POOL,
            "--gpus",
            "4",
            "--hours",
            "1",
            "--max-price",
            "2.00",
        ])
        .await;
    assert_eq!(filled["order"]["status"], "filled", "{filled}");
    assert_eq!(filled["order"]["tif"], "gtc");
    assert_eq!(filled["leases"][0]["price"], "1.50");
    let lease_kept = filled["leases"][0]["id"].as_str().unwrap().to_owned();
    let second = buyer
        .json(&[
            "bid",
            "--pool",
            POOL,
            "--gpus",
            "2",
            "--hours",
            "1",
            "--max-price",
            "2.00",
            "--client-order-id",
            "cli-2",
        ])
        .await;
    let lease_released = second["leases"][0]["id"].as_str().unwrap().to_owned();
    let resting = buyer
        .json(&[
            "bid",
            "--pool",
            POOL,
            "--gpus",
            "1",
            "--hours",
            "0.5",
            "--max-price",
            "1.00",
            "--persistent",
        ])
        .await;
    assert_eq!(resting["order"]["status"], "open");
    assert_eq!(resting["order"]["duration_s"], 1800);
    assert_eq!(resting["order"]["persistent"], true);
    let ioc = buyer
        .json(&[
            "bid",
            "--pool",
            POOL,
            "--gpus",
            "1",
            "--hours",
            "1",
            "--max-price",
            "1.00",
            "--ioc",
        ])
        .await;
    assert_eq!(ioc["order"]["tif"], "ioc");
    assert_eq!(ioc["order"]["status"], "cancelled");
    let fok = buyer
        .json(&[
            "bid",
            "--pool",
            POOL,
            "--gpus",
            "64",
            "--hours",
            "1",
            "--max-price",
            "5.00",
            "--fok",
        ])
        .await;
    assert_eq!(fok["order"]["tif"], "fok");
    assert_eq!(fok["order"]["status"], "cancelled");

    let orders = buyer.json(&["orders"]).await;
    assert_eq!(
        orders["orders"].as_array().map(Vec::len),
        Some(5),
        "{orders}"
    );
    let open = buyer.json(&["orders", "--status", "open"]).await;
    assert_eq!(open["orders"].as_array().map(Vec::len), Some(1), "{open}");
    let resting_id = resting["order"]["id"].as_str().unwrap().to_owned();
    let cancelled = buyer.json(&["cancel", &resting_id]).await;
    assert_eq!(cancelled["order"]["status"], "cancelled");
    let table = buyer.run(&["orders", "--limit", "2"]).await;
    assert_eq!(table.code, 0);
    assert_eq!(table.stdout.lines().count(), 3, "{}", table.stdout);
    assert!(table.stdout.starts_with("ID "), "{}", table.stdout);

    let released = buyer.json(&["release-lease", &lease_released]).await;
    assert_eq!(released["lease"]["status"], "released");
    let leases = buyer.json(&["leases"]).await;
    assert_eq!(
        leases["leases"].as_array().map(Vec::len),
        Some(2),
        "{leases}"
    );
    let active = buyer.json(&["leases", "--status", "active"]).await;
    assert_eq!(active["leases"][0]["id"], lease_kept.as_str());

    // Supplier: warn, then take the block back; the buyer's lease gets notice.
    let warned = supplier
        .json(&["capacity", "forecast", "b1", "--in", "10m"])
        .await;
    assert_eq!(warned["leases_warned"], 1, "{warned}");
    let reclaimed = supplier
        .json(&["capacity", "reclaim", "b1", "--gpus", "8"])
        .await;
    assert_eq!(reclaimed["reclaim"]["leases_preempted"], 1, "{reclaimed}");
    let table = supplier
        .run(&["capacity", "reclaim", "b1", "--gpus", "1"])
        .await;
    assert_eq!(table.code, 1, "nothing left to reclaim: {}", table.stdout);
    let preempting = buyer.json(&["leases", "--status", "preempting"]).await;
    assert_eq!(preempting["leases"][0]["id"], lease_kept.as_str());
    let table = buyer.run(&["leases"]).await;
    assert!(table.stdout.contains("preempting"), "{}", table.stdout);

    // `offpeak token` signs with the server's key: its token is accepted.
    let minted = offpeak(
        &[("OFFPEAK_JWT_SECRET", SECRET)],
        &["token", "--sub", "acme", "--role", "buyer"],
    )
    .await;
    assert_eq!(minted.code, 0, "{}", minted.stderr);
    let again = As {
        url,
        token: minted.stdout.trim().to_owned(),
    };
    assert_eq!(
        again.json(&["orders"]).await["orders"]
            .as_array()
            .map(Vec::len),
        Some(5)
    );
    app.stop().await;
}

#[tokio::test]
async fn cli_errors_carry_the_server_code_and_a_trustworthy_exit_code() {
    let app = EmbeddedApp::spawn().await;
    let url = app.address.as_str();
    let buyer = As {
        url,
        token: token("acme", "buyer"),
    };

    // 1: refused by the server, with its code and message on stderr.
    let missing = buyer.run(&["cancel", "424242"]).await;
    assert_eq!(missing.code, 1);
    assert!(missing.stdout.is_empty());
    assert!(
        missing.stderr.contains("unknown_order"),
        "{}",
        missing.stderr
    );
    assert!(missing.stderr.contains("404"), "{}", missing.stderr);
    let as_json = buyer.run(&["cancel", "424242", "--json"]).await;
    assert_eq!(as_json.code, 1);
    let body: Value =
        serde_json::from_str(as_json.stderr.trim()).expect("stderr is the error JSON");
    assert_eq!(body["error"]["code"], "unknown_order");
    let pool = buyer
        .run(&[
            "bid",
            "--pool",
            "nope.nowhere",
            "--gpus",
            "1",
            "--hours",
            "1",
            "--max-price",
            "1",
        ])
        .await;
    assert_eq!(pool.code, 1);
    assert!(pool.stderr.contains("unknown_pool"), "{}", pool.stderr);
    let tick = buyer
        .run(&[
            "bid",
            "--pool",
            POOL,
            "--gpus",
            "1",
            "--hours",
            "1",
            "--max-price",
            "1.005",
        ])
        .await;
    assert_eq!(tick.code, 1);
    assert!(tick.stderr.contains("price_not_on_tick"), "{}", tick.stderr);
    let supplier = As {
        url,
        token: token("dc1", "supplier"),
    };
    let forbidden = supplier.run(&["orders"]).await;
    assert_eq!(forbidden.code, 1);
    assert!(
        forbidden.stderr.contains("forbidden"),
        "{}",
        forbidden.stderr
    );
    let bad_token = As {
        url,
        token: "not-a-jwt".into(),
    };
    let unauthorized = bad_token.run(&["leases"]).await;
    assert_eq!(unauthorized.code, 1);
    assert!(
        unauthorized.stderr.contains("unauthorized"),
        "{}",
        unauthorized.stderr
    );

    // 2: usage errors, nothing sent.
    for args in [
        vec![
            "bid",
            "--pool",
            POOL,
            "--gpus",
            "1",
            "--hours",
            "1",
            "--max-price",
            "abc",
        ],
        vec![
            "bid",
            "--pool",
            POOL,
            "--gpus",
            "1",
            "--hours",
            "-2",
            "--max-price",
            "1",
        ],
        vec!["bid", "--pool", POOL, "--gpus", "1", "--max-price", "1"],
        vec![
            "bid",
            "--pool",
            POOL,
            "--gpus",
            "1",
            "--hours",
            "1",
            "--max-price",
            "1",
            "--ioc",
            "--fok",
        ],
        vec![
            "capacity",
            "release",
            "--block-id",
            "b",
            "--pool",
            POOL,
            "--gpus",
            "8",
            "--reserve-price",
            "1",
            "--hours",
            "1",
            "--node",
            "rack",
        ],
        vec!["no-such-command"],
    ] {
        let run = buyer.run(&args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(!run.stderr.is_empty());
    }
    let no_token = offpeak(&[("OFFPEAK_URL", url)], &["orders"]).await;
    assert_eq!(no_token.code, 2);
    assert!(
        no_token.stderr.contains("OFFPEAK_TOKEN"),
        "{}",
        no_token.stderr
    );
    let bad_url = offpeak(&[("OFFPEAK_URL", "localhost:8080")], &["pools"]).await;
    assert_eq!(bad_url.code, 2, "{}", bad_url.stderr);

    // 3: nothing listening there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    };
    let unreachable = offpeak(&[("OFFPEAK_URL", &closed)], &["pools"]).await;
    assert_eq!(unreachable.code, 3, "{}", unreachable.stderr);
    assert!(
        unreachable.stderr.contains("cannot connect"),
        "{}",
        unreachable.stderr
    );
    // 3: a server that fails (5xx) or answers something that is not the API. A plain TCP
    // listener stands in for it: a real offpeak answers 503 only while its database is down.
    for (status, body) in [
        (
            "503 Service Unavailable",
            r#"{"error":{"code":"unavailable","message":"writes are unavailable"}}"#,
        ),
        ("200 OK", "<html>not the API</html>"),
    ] {
        let url = answer_once(status, body);
        let run = buyer_at(&url).run(&["orders"]).await;
        assert_eq!(run.code, 3, "{status}: {}", run.stderr);
        if status.starts_with("503") {
            assert!(run.stderr.contains("unavailable"), "{}", run.stderr);
        }
    }

    // The exit codes are documented where a script writer looks first.
    let help = offpeak(&[], &["--help"]).await;
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("Exit codes"), "{}", help.stdout);
    app.stop().await;
}

/// A refused run: exit 1, nothing on stdout, the server's code on stderr.
fn assert_refused(run: &Run, code: &str) {
    assert_eq!(run.code, 1, "{code}: {}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains(code), "{code}: {}", run.stderr);
}

#[tokio::test]
async fn quote_trades_candles_and_stats_read_the_market_from_the_cli() {
    let app = EmbeddedApp::spawn().await;
    let url = app.address.as_str();
    let supplier = As {
        url,
        token: token("dc1", "supplier"),
    };
    let buyer = As {
        url,
        token: token("acme", "buyer"),
    };
    for (block, reserve) in [("cheap", "1.50"), ("dear", "2.50")] {
        let released = supplier
            .json(&[
                "capacity",
                "release",
                "--block-id",
                block,
                "--pool",
                POOL,
                "--gpus",
                "4",
                "--reserve-price",
                reserve,
                "--hours",
                "3",
            ])
            .await;
        assert_eq!(released["block"]["status"], "open", "{released}");
    }

    // A quote is public and places nothing: 4 * 1.50 + 2 * 2.50 for one hour.
    let quote = offpeak(
        &[("OFFPEAK_URL", url)],
        &["quote", POOL, "--gpus", "6", "--hours", "1", "--json"],
    )
    .await
    .json();
    assert_eq!(quote["fillable_gpus"], 6, "{quote}");
    assert_eq!(quote["worst_price"], "2.50");
    assert_eq!(quote["total_cost"], "11.00");
    let table = buyer
        .run(&["quote", POOL, "--gpus", "6", "--duration-s", "3600"])
        .await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("POOL "), "{}", table.stdout);
    assert!(table.stdout.contains("11.00"), "{}", table.stdout);

    // Two trades: 4 GPUs at 1.50, then 2 at 2.50.
    for gpus in ["4", "2"] {
        let filled = buyer
            .json(&[
                "bid",
                "--pool",
                POOL,
                "--gpus",
                gpus,
                "--hours",
                "1",
                "--max-price",
                "3.00",
            ])
            .await;
        assert_eq!(filled["order"]["status"], "filled", "{filled}");
    }
    let trades = buyer.json(&["trades", POOL, "--limit", "1"]).await;
    assert_eq!(
        trades["trades"].as_array().map(Vec::len),
        Some(1),
        "{trades}"
    );
    assert_eq!(trades["trades"][0]["price"], "2.50");
    let table = buyer.run(&["trades", POOL]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("ID "), "{}", table.stdout);
    assert_eq!(table.stdout.lines().count(), 3, "{}", table.stdout);

    let candles = buyer.json(&["candles", POOL, "--interval", "1h"]).await;
    assert_eq!(candles["interval"], "1h", "{candles}");
    let gpus: u64 = candles["candles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["volume_gpus"].as_u64().unwrap())
        .sum();
    assert_eq!(gpus, 6, "{candles}");
    let table = buyer.run(&["candles", POOL]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("START "), "{}", table.stdout);

    let stats = buyer.json(&["stats", POOL, "--window", "1h"]).await;
    assert_eq!(stats["window_s"], 3600, "{stats}");
    assert_eq!(stats["trades"], 2);
    assert_eq!(stats["volume_gpus"], 6);
    assert_eq!(stats["last_price"], "2.50");
    let table = buyer.run(&["stats", POOL]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("STAT "), "{}", table.stdout);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("window") && l.ends_with("1d")),
        "the default window is 24h: {}",
        table.stdout
    );

    // Refused by the server, or caught before anything is sent.
    assert_refused(
        &buyer.run(&["trades", "nope.nowhere"]).await,
        "unknown_pool",
    );
    assert_refused(
        &buyer
            .run(&["quote", POOL, "--gpus", "0", "--hours", "1"])
            .await,
        "gpus_must_not_be_zero",
    );
    for args in [
        vec!["candles", POOL, "--interval", "7m"],
        vec!["stats", POOL, "--window", "a while"],
        vec!["quote", POOL, "--gpus", "1"],
    ] {
        let run = buyer.run(&args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
    app.stop().await;
}

#[tokio::test]
async fn amends_and_good_till_date_bids_from_the_cli() {
    let app = EmbeddedApp::spawn().await;
    let url = app.address.as_str();
    let buyer = As {
        url,
        token: token("acme", "buyer"),
    };
    let resting = buyer
        .json(&[
            "bid",
            "--pool",
            POOL,
            "--gpus",
            "4",
            "--hours",
            "1",
            "--max-price",
            "1.00",
        ])
        .await;
    assert_eq!(resting["order"]["status"], "open", "{resting}");
    let id = resting["order"]["id"].as_str().unwrap().to_owned();

    let amended = buyer
        .json(&["amend", &id, "--price", "1.10", "--gpus", "2"])
        .await;
    assert_eq!(amended["order"]["price"], "1.10", "{amended}");
    assert_eq!(amended["order"]["gpus"], 2);
    assert_eq!(amended["order"]["remaining_gpus"], 2);
    let table = buyer.run(&["amend", &id, "--gpus", "3"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("ID "), "{}", table.stdout);
    assert!(table.stdout.contains("1.10"), "{}", table.stdout);
    let book = buyer.json(&["book", POOL]).await;
    assert_eq!(book["bids"][0]["price"], "1.10", "{book}");
    assert_eq!(book["bids"][0]["gpus"], 3);
    assert_refused(
        &buyer.run(&["amend", &id, "--price", "1.10"]).await,
        "nothing_to_change",
    );
    assert_refused(
        &buyer.run(&["amend", "424242", "--gpus", "1"]).await,
        "unknown_order",
    );
    let nothing = buyer.run(&["amend", &id]).await;
    assert_eq!(
        nothing.code, 2,
        "an amend names a change: {}",
        nothing.stderr
    );

    let expires_at = rfc3339_in(3600);
    let gtd = buyer
        .json(&[
            "bid",
            "--pool",
            POOL,
            "--gpus",
            "1",
            "--hours",
            "1",
            "--max-price",
            "0.90",
            "--tif",
            "gtd",
            "--expires-at",
            &expires_at,
        ])
        .await;
    assert_eq!(gtd["order"]["tif"], "gtd", "{gtd}");
    assert_eq!(gtd["order"]["status"], "open");
    assert_eq!(
        gtd["order"]["expires_at"].as_str().map(|t| &t[..19]),
        Some(&expires_at[..19])
    );
    let past = buyer
        .run(&[
            "bid",
            "--pool",
            POOL,
            "--gpus",
            "1",
            "--hours",
            "1",
            "--max-price",
            "0.90",
            "--expires-at",
            &rfc3339_in(-60),
        ])
        .await;
    assert_refused(&past, "expires_at_invalid");
    let no_expiry = buyer
        .run(&[
            "bid",
            "--pool",
            POOL,
            "--gpus",
            "1",
            "--hours",
            "1",
            "--max-price",
            "0.90",
            "--tif",
            "gtd",
        ])
        .await;
    assert_eq!(no_expiry.code, 2, "{}", no_expiry.stderr);
    assert!(
        no_expiry.stderr.contains("--expires-at"),
        "{}",
        no_expiry.stderr
    );
    app.stop().await;
}

#[tokio::test]
async fn capacity_updates_and_future_windows_from_the_cli() {
    let app = EmbeddedApp::spawn().await;
    let url = app.address.as_str();
    let supplier = As {
        url,
        token: token("dc1", "supplier"),
    };
    let opens = rfc3339_in(3600);
    let later = supplier
        .json(&[
            "capacity",
            "release",
            "--block-id",
            "tonight",
            "--pool",
            POOL,
            "--gpus",
            "8",
            "--reserve-price",
            "1.20",
            "--available-from",
            &opens,
            "--hours",
            "2",
        ])
        .await;
    assert_eq!(later["block"]["status"], "pending", "{later}");
    assert_eq!(
        later["block"]["available_from"].as_str().map(|t| &t[..19]),
        Some(&opens[..19])
    );
    let book = supplier.json(&["book", POOL]).await;
    assert_eq!(book["asks"], serde_json::json!([]), "not on the book yet");

    supplier
        .json(&[
            "capacity",
            "release",
            "--block-id",
            "now",
            "--pool",
            POOL,
            "--gpus",
            "4",
            "--reserve-price",
            "1.50",
            "--hours",
            "2",
        ])
        .await;
    let until = rfc3339_in(5 * 3600);
    let updated = supplier
        .json(&[
            "capacity",
            "update",
            "now",
            "--reserve-price",
            "1.75",
            "--until",
            &until,
        ])
        .await;
    assert_eq!(updated["block"]["reserve_price"], "1.75", "{updated}");
    assert_eq!(
        updated["block"]["available_until"]
            .as_str()
            .map(|t| &t[..19]),
        Some(&until[..19])
    );
    let book = supplier.json(&["book", POOL]).await;
    assert_eq!(book["asks"][0]["price"], "1.75", "{book}");
    let table = supplier
        .run(&[
            "capacity",
            "update",
            "now",
            "--available-until",
            &rfc3339_in(6 * 3600),
        ])
        .await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("BLOCK "), "{}", table.stdout);
    assert!(table.stdout.contains("1.75"), "{}", table.stdout);

    assert_refused(
        &supplier
            .run(&["capacity", "update", "now", "--until", &rfc3339_in(3600)])
            .await,
        "window_cannot_shrink",
    );
    assert_refused(
        &supplier
            .run(&["capacity", "update", "nope", "--reserve-price", "1.00"])
            .await,
        "unknown_block",
    );
    for args in [
        vec!["capacity", "update", "now"],
        vec!["capacity", "update", "now", "--until", "tomorrow"],
    ] {
        let run = supplier.run(&args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
    app.stop().await;
}

#[tokio::test]
async fn admin_commands_configure_pools_switches_limits_and_read_the_state_hash() {
    let app = EmbeddedApp::spawn().await;
    let url = app.address.as_str();
    let admin = As {
        url,
        token: token("root", "admin"),
    };
    let buyer = As {
        url,
        token: token("acme", "buyer"),
    };

    let pools = admin.json(&["admin", "pools"]).await;
    let before = pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == POOL)
        .cloned()
        .expect("the default pool");
    let table = admin.run(&["admin", "pools"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("POOL "), "{}", table.stdout);
    assert!(table.stdout.contains("TICK"), "{}", table.stdout);

    // A flag changes one setting; the others stay as they were.
    let set = admin
        .json(&["admin", "pools", "set", POOL, "--notice-s", "300"])
        .await;
    assert_eq!(set["pool"]["notice_s"], 300, "{set}");
    for kept in [
        "tick",
        "price_min",
        "price_max",
        "gpus_per_order_max",
        "auction",
    ] {
        assert_eq!(set["pool"][kept], before[kept], "{kept}: {set}");
    }
    // A new pool from a spec file.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("b200.json");
    std::fs::write(
        &spec,
        r#"{"gpu": "b200", "region": "eu-west", "tick": "0.05", "auction": {"kind": "batch", "interval_ms": 500}}"#,
    )
    .unwrap();
    let spec = spec.display().to_string();
    let table = admin
        .run(&["admin", "pools", "set", "b200.eu-west", "--file", &spec])
        .await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains("batch/500ms"), "{}", table.stdout);
    let pools = buyer.json(&["pools"]).await;
    assert_eq!(pools["pools"].as_array().map(Vec::len), Some(6), "{pools}");

    // Kill switches: a pool halts, an account is refused.
    let halted = admin
        .json(&["admin", "kill-switch", "on", "--pool", POOL])
        .await;
    assert_eq!(
        halted,
        serde_json::json!({"kind": "pool", "id": POOL, "engaged": true})
    );
    let pools = buyer.json(&["pools"]).await;
    assert!(
        pools["pools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == POOL && p["halted"] == true),
        "{pools}"
    );
    let table = admin
        .run(&["admin", "kill-switch", "off", "--pool", POOL])
        .await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("KIND "), "{}", table.stdout);
    let stopped = admin
        .json(&["admin", "kill-switch", "on", "--account", "acme"])
        .await;
    assert_eq!(stopped["kind"], "account", "{stopped}");
    let bid = [
        "bid",
        "--pool",
        POOL,
        "--gpus",
        "1",
        "--hours",
        "1",
        "--max-price",
        "1.00",
    ];
    assert_refused(&buyer.run(&bid).await, "kill_switch");
    admin
        .json(&["admin", "kill-switch", "off", "--account", "acme"])
        .await;

    // Limits: one resting bid at most.
    let limits = admin
        .json(&[
            "admin",
            "limits",
            "acme",
            "--orders-open-max",
            "1",
            "--open-notional-max",
            "10.00",
        ])
        .await;
    assert_eq!(limits["orders_open_max"], 1, "{limits}");
    assert_eq!(limits["open_notional_max"], "10.00");
    assert_eq!(buyer.run(&bid).await.code, 0);
    assert_refused(&buyer.run(&bid).await, "limit_orders_open");

    let hash = admin.json(&["admin", "state-hash"]).await;
    assert_eq!(
        hash["state_hash"].as_str().map(str::len),
        Some(16),
        "{hash}"
    );
    let table = admin.run(&["admin", "state-hash"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("SEQ "), "{}", table.stdout);
    assert!(
        table.stdout.contains(hash["state_hash"].as_str().unwrap()),
        "{}",
        table.stdout
    );

    // Not an admin: refused with the server's code.
    assert_refused(&buyer.run(&["admin", "state-hash"]).await, "forbidden");
    assert_refused(
        &buyer
            .run(&["admin", "pools", "set", POOL, "--notice-s", "60"])
            .await,
        "forbidden",
    );
    let usage = admin
        .run(&[
            "admin",
            "kill-switch",
            "on",
            "--pool",
            POOL,
            "--account",
            "acme",
        ])
        .await;
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    app.stop().await;
}

#[tokio::test]
async fn keys_bids_with_keys_ready_ssh_and_lease_tokens_from_the_cli() {
    let app = EmbeddedApp::spawn().await;
    let url = app.address.as_str();
    let supplier = As {
        url,
        token: token("dc1", "supplier"),
    };
    let buyer = As {
        url,
        token: token("acme", "buyer"),
    };

    // The pools table shows what each pool sells; the model pool has a per-token price.
    let pools = buyer.json(&["pools"]).await;
    assert_eq!(pools["pools"].as_array().map(Vec::len), Some(5), "{pools}");
    let table = buyer.run(&["pools"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains("PER 1M TOK"), "{}", table.stdout);
    let model_row = |stdout: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(MODEL_POOL))
            .unwrap_or_else(|| panic!("no {MODEL_POOL} row: {stdout}"))
            .to_owned()
    };
    assert!(
        model_row(&table.stdout).contains("model/llama-3.1-70b-instruct"),
        "{}",
        table.stdout
    );

    // Default keys from a .pub file: comments and blank lines skipped.
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("id_ed25519.pub");
    std::fs::write(&public, format!("# alice's laptop\n\n{ED25519_KEY}\n")).unwrap();
    let public = public.display().to_string();
    let set = buyer.run(&["keys", "set", &public]).await;
    assert_eq!(set.code, 0, "{}", set.stderr);
    assert!(set.stdout.starts_with("TYPE "), "{}", set.stdout);
    assert!(
        set.stdout
            .contains("SHA256:i5CcGEHKcgQw8wrMvKeivnIRd23YosQwAQsNX+zJdfk"),
        "the fingerprint ssh-keygen -l prints: {}",
        set.stdout
    );
    let listed = buyer.json(&["keys", "list"]).await;
    assert_eq!(listed["keys"], serde_json::json!([ED25519_KEY]), "{listed}");
    let table = buyer.run(&["keys", "list"]).await;
    assert!(table.stdout.contains("alice@laptop"), "{}", table.stdout);
    // A private key never leaves the machine; a key set names at least one key.
    let private = dir.path().join("id_ed25519");
    std::fs::write(
        &private,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    for args in [
        vec!["keys", "set", private.to_str().unwrap()],
        vec!["keys", "set"],
        vec!["keys", "set", "ssh-ed25519 AAAA!!! bad"],
    ] {
        let run = buyer.run(&args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("b3Blbn"), "{}", run.stderr);
    }

    // A bid with its own key; the lease waits for its supplier's provisioner.
    supplier
        .json(&[
            "capacity",
            "release",
            "--block-id",
            "b1",
            "--pool",
            POOL,
            "--gpus",
            "8",
            "--reserve-price",
            "1.50",
            "--hours",
            "3",
            "--node",
            "rack1-n1:8",
        ])
        .await;
    let bid = |gpus: &'static str| {
        [
            "bid",
            "--pool",
            POOL,
            "--gpus",
            gpus,
            "--hours",
            "1",
            "--max-price",
            "2.00",
            "--ssh-key",
            ED25519_KEY,
        ]
    };
    let filled = buyer.json(&bid("4")).await;
    let lease = &filled["leases"][0];
    assert_eq!(
        lease["ssh_public_keys"],
        serde_json::json!([ED25519_KEY]),
        "{filled}"
    );
    assert_eq!(lease["access"]["status"], "provisioning");
    let id = lease["id"].as_str().unwrap().to_owned();
    let early = buyer.run(&["ssh", &id]).await;
    assert_refused(&early, "lease_not_ready");
    assert!(early.stderr.contains("provisioning"), "{}", early.stderr);
    let table = buyer.run(&["leases"]).await;
    assert!(table.stdout.contains("ACCESS"), "{}", table.stdout);
    assert!(table.stdout.contains("provisioning"), "{}", table.stdout);

    // The supplier hands it over; the buyer sees it ready and gets the ssh command.
    let ready = supplier
        .json(&[
            "capacity",
            "ready",
            "b1",
            &id,
            "--endpoint",
            "rack1-n1=ubuntu@10.1.0.1:22",
        ])
        .await;
    assert_eq!(ready["lease"]["access"]["status"], "ready", "{ready}");
    assert_eq!(
        ready["lease"]["access"]["endpoints"],
        serde_json::json!([{"node": "rack1-n1", "host": "10.1.0.1", "port": 22, "user": "ubuntu"}])
    );
    let table = buyer.run(&["leases"]).await;
    let row = table
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{id} ")))
        .unwrap_or_else(|| panic!("no row for lease {id}: {}", table.stdout));
    assert!(row.contains("ready"), "{row}");
    assert!(row.contains("ubuntu@10.1.0.1:22"), "{row}");
    for args in [vec!["ssh", &id], vec!["ssh", &id, "--print"]] {
        let ssh = buyer.run(&args).await;
        assert_eq!(ssh.code, 0, "{}", ssh.stderr);
        assert_eq!(ssh.stdout, "ssh -p 22 ubuntu@10.1.0.1\n");
    }
    let one = buyer.run(&["leases", &id]).await;
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert!(
        one.stdout
            .lines()
            .any(|l| l.starts_with("rack1-n1") && l.ends_with("ssh -p 22 ubuntu@10.1.0.1")),
        "{}",
        one.stdout
    );
    assert_refused(&buyer.run(&["lease-token", &id]).await, "not_a_model_lease");

    // A lease its supplier cannot provision fails, costs nothing, and says why.
    let second = buyer.json(&bid("2")).await;
    let failed_id = second["leases"][0]["id"].as_str().unwrap().to_owned();
    let failed = supplier
        .json(&[
            "capacity",
            "failed",
            "b1",
            &failed_id,
            "--reason",
            "GPU health check failed",
        ])
        .await;
    assert_eq!(failed["lease"]["status"], "failed", "{failed}");
    let listed = buyer.json(&["leases", "--status", "failed"]).await;
    assert_eq!(listed["leases"][0]["id"], failed_id.as_str(), "{listed}");
    assert_eq!(listed["leases"].as_array().map(Vec::len), Some(1));
    let one = buyer.run(&["leases", &failed_id]).await;
    assert!(
        one.stdout.contains("failed: GPU health check failed"),
        "{}",
        one.stdout
    );
    assert_refused(&buyer.run(&["ssh", &failed_id]).await, "lease_failed");

    // A model lease: no ssh; a lease token once its gateway is ready.
    supplier
        .json(&[
            "capacity",
            "release",
            "--block-id",
            "m1",
            "--pool",
            MODEL_POOL,
            "--gpus",
            "8",
            "--reserve-price",
            "1.44",
            "--hours",
            "3",
        ])
        .await;
    let table = buyer.run(&["pools"]).await;
    // $1.44 per GPU-hour at 400 tokens/s per GPU is $1.00 per million tokens.
    assert!(
        model_row(&table.stdout).contains(" 1.00"),
        "{}",
        table.stdout
    );
    let model = buyer
        .json(&[
            "bid",
            "--pool",
            MODEL_POOL,
            "--gpus",
            "2",
            "--hours",
            "1",
            "--max-price",
            "1.50",
        ])
        .await;
    let model_id = model["leases"][0]["id"].as_str().unwrap().to_owned();
    let ssh = buyer.run(&["ssh", &model_id]).await;
    assert_refused(&ssh, "not_a_bare_metal_lease");
    assert!(ssh.stderr.contains("offpeak lease-token"), "{}", ssh.stderr);
    assert_refused(
        &buyer.run(&["lease-token", &model_id]).await,
        "lease_not_ready",
    );
    let gateway = "https://gateway.dc1.example/v1";
    let ready = supplier
        .run(&["capacity", "ready", "m1", &model_id, "--gateway", gateway])
        .await;
    assert_eq!(ready.code, 0, "{}", ready.stderr);
    assert!(ready.stdout.contains(gateway), "{}", ready.stdout);
    let table = buyer.run(&["leases"]).await;
    assert!(table.stdout.contains(gateway), "{}", table.stdout);
    let minted = buyer.run(&["lease-token", &model_id]).await;
    assert_eq!(minted.code, 0, "{}", minted.stderr);
    assert_eq!(minted.stdout.lines().count(), 1, "the token alone");
    let parts: Vec<&str> = minted.stdout.trim().split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {}", minted.stdout);
    assert!(parts.iter().all(|p| !p.is_empty()), "{}", minted.stdout);
    let minted = buyer.json(&["lease-token", &model_id]).await;
    assert!(minted["expires_at"].is_string(), "{minted}");

    // Usage errors: nothing is sent.
    for args in [
        vec!["capacity", "ready", "b1", &id],
        vec![
            "capacity",
            "ready",
            "b1",
            &id,
            "--endpoint",
            "ubuntu@10.1.0.1",
        ],
        vec![
            "capacity",
            "ready",
            "b1",
            &id,
            "--endpoint",
            "ubuntu@10.1.0.1:22",
            "--gateway",
            gateway,
        ],
        vec!["capacity", "ready", "m1", &model_id, "--gateway", "ftp://x"],
        vec!["leases", &id, "--status", "active"],
    ] {
        let run = supplier.run(&args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }

    let cleared = buyer.json(&["keys", "clear"]).await;
    assert_eq!(cleared["keys"], serde_json::json!([]), "{cleared}");
    app.stop().await;
}

/// A buyer's CLI pointed at `url`.
fn buyer_at(url: &str) -> As<'_> {
    As {
        url,
        token: token("acme", "buyer"),
    }
}

/// A one-shot HTTP server on a free port that answers one request with `status` and `body`.
fn answer_once(status: &'static str, body: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        if let Ok((mut socket, _)) = listener.accept() {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request);
            let _ = write!(
                socket,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[tokio::test]
async fn the_owner_reads_what_idle_capacity_earned_from_the_cli() {
    let app = EmbeddedApp::spawn().await;
    crate::report::trade_two_leases(&app).await;
    let admin = As {
        url: app.address.as_str(),
        token: token("root", "admin"),
    };
    let table = admin.run(&["report", "--bucket", "15m"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains("OFFERED_GPU_H"), "{}", table.stdout);
    assert!(table.stdout.contains(POOL), "{}", table.stdout);
    assert!(table.stdout.contains("all pools"), "{}", table.stdout);
    let json = admin.json(&["report", "--pool", POOL]).await;
    let pool = crate::report::pool_entry(&json);
    assert!(crate::report::micros(&pool["total"]) > 0, "{json}");
    let buckets = admin.run(&["report", "--buckets", "--bucket", "1h"]).await;
    assert!(buckets.stdout.starts_with("START"), "{}", buckets.stdout);
    let refused = admin.run(&["report", "--bucket", "7s"]).await;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("invalid_query"),
        "{}",
        refused.stderr
    );
}
