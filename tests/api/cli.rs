//! The CLI against a real server (SQLite, in process): every command, its `--json` output
//! parsed, its tables, and the exit codes scripts rely on (0 ok, 1 refused, 2 usage,
//! 3 unreachable).

use crate::embedded::EmbeddedApp;
use crate::first_start::BIN;
use crate::helpers::{token, POOL, SECRET};
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
    assert_eq!(pools["pools"].as_array().map(Vec::len), Some(4), "{pools}");
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
