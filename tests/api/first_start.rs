//! The first five minutes, on the real binary: a fresh directory and no environment at all
//! (only a free port instead of 8080, so tests can run side by side). `offpeak` starts a
//! working market on SQLite under `./data`, prints the page URL and how to get a token, accepts
//! an order with a token from `offpeak token`, stops cleanly on Ctrl-C (SIGINT) or SIGTERM,
//! and the next start comes back with the same state. `offpeak demo` makes the market trade.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_offpeak");

/// A running `offpeak` process.
pub struct Process {
    child: Child,
    /// The page URL it printed, without the trailing slash.
    pub url: String,
    /// Everything it printed on stdout so far (the banner).
    pub banner: String,
}

impl Process {
    /// Starts `offpeak <args>` in `dir` with no environment but `OFFPEAK_LISTEN`, and waits
    /// for its banner (from `page:` to `stop:`).
    pub fn start(dir: &Path, args: &[&str]) -> Process {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("OFFPEAK_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let (lines, banner_lines) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining stdout for the child's whole life, so it never blocks on a pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = lines.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut banner = String::new();
        let mut url = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match banner_lines.recv_timeout(left) {
                Ok(line) => {
                    banner.push_str(&line);
                    banner.push('\n');
                    if let Some(page) = line.trim().strip_prefix("page:") {
                        url = Some(page.trim().trim_end_matches('/').to_owned());
                    }
                    // The banner ends with how to stop the server.
                    if let (Some(url), true) = (&url, line.trim().starts_with("stop:")) {
                        let url = url.clone();
                        return Process { child, url, banner };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("no banner within 60 s; stdout so far:\n{banner}");
                }
            }
        }
    }

    /// Sends `signal` (`INT`, `TERM`) and waits for the exit; panics unless it exits 0.
    pub fn stop_with(mut self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait().expect("wait") {
                Some(status) => {
                    assert!(
                        status.success(),
                        "offpeak exited with {status} on SIG{signal}"
                    );
                    return;
                }
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    panic!("offpeak did not stop within 30 s of SIG{signal}");
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Process {
    /// SIGKILL: no shutdown, no final snapshot, whatever was in flight is cut.
    pub fn kill_hard(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A failed test must not leave a server running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `offpeak token ...` run in `dir` with no environment, as the banner says.
fn mint(dir: &Path, sub: &str, role: &str) -> String {
    let output = Command::new(BIN)
        .args(["token", "--sub", sub, "--role", role])
        .current_dir(dir)
        .env_clear()
        .output()
        .expect("offpeak token runs");
    assert!(
        output.status.success(),
        "offpeak token failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("GET");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn a_fresh_start_with_no_environment_serves_trades_and_comes_back_after_ctrl_c() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Process::start(dir.path(), &[]);
    assert!(server.banner.contains("token:"), "{}", server.banner);
    assert!(server.banner.contains("--role buyer"), "{}", server.banner);
    assert!(dir.path().join("data/offpeak.sqlite3").exists());
    assert!(dir.path().join("data/jwt-secret").exists());

    let (status, page) = get(&format!("{}/", server.url), None).await;
    assert_eq!(status, 200);
    assert!(
        page.as_str().is_some_and(|html| html.contains("<")),
        "the page is HTML"
    );
    let (status, pools) = get(&format!("{}/v1/pools", server.url), None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = pools["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec![
            "a100-80gb.eu-west",
            "a100-80gb.us-east",
            "h100-sxm.eu-west",
            "h100-sxm.us-east",
            "llama-3.1-70b-instruct.us-east"
        ]
    );

    // The token minted by the CLI (from the secret the server generated) is accepted.
    let buyer = mint(dir.path(), "acme", "buyer");
    let response = reqwest::Client::new()
        .post(format!("{}/v1/orders", server.url))
        .bearer_auth(&buyer)
        .json(&json!({"pool": "h100-sxm.us-east", "gpus": 8, "price": "1.20", "duration_s": 14400}))
        .send()
        .await
        .expect("POST /v1/orders");
    assert_eq!(response.status().as_u16(), 201);
    let placed: Value = response.json().await.expect("json");
    let id = placed["order"]["id"].as_str().expect("order id").to_owned();
    let (_, book) = get(
        &format!("{}/v1/pools/h100-sxm.us-east/book", server.url),
        None,
    )
    .await;
    server.stop_with("INT");

    // The next start, same directory, still no environment: same state.
    let server = Process::start(dir.path(), &[]);
    let (status, order) = get(&format!("{}/v1/orders/{id}", server.url), Some(&buyer)).await;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["order"]["status"], "open");
    assert_eq!(order["order"]["gpus"], 8);
    let (_, again) = get(
        &format!("{}/v1/pools/h100-sxm.us-east/book", server.url),
        None,
    )
    .await;
    assert_eq!(again["bids"], book["bids"]);
    assert_eq!(again["bids"][0]["price"], "1.20");
    server.stop_with("TERM");
}

#[tokio::test]
async fn the_demo_binary_makes_the_market_trade_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Process::start(dir.path(), &["demo", "--speed", "5000", "--seed", "3"]);
    assert!(server.banner.contains("demo"), "{}", server.banner);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, pools) = get(&format!("{}/v1/pools", server.url), None).await;
        let traded = pools["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| !p["last_price"].is_null());
        if traded {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no trade in any pool within 90 s: {pools}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    server.stop_with("INT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_on_sqlite_loses_no_acknowledged_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Process::start(dir.path(), &[]);
    let url = server.url.clone();
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let token = mint(dir.path(), &format!("buyer-{writer}"), "buyer");
        let (url, acknowledged) = (url.clone(), acknowledged.clone());
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 0u32.. {
                let body = json!({"pool": "h100-sxm.us-east", "gpus": 1 + n % 4,
                    "price": format!("1.{:02}", n % 100), "duration_s": 3600});
                let Ok(response) = http
                    .post(format!("{url}/v1/orders"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                else {
                    // The server is gone: stop.
                    return;
                };
                if response.status().as_u16() == 201 {
                    if let Ok(placed) = response.json::<Value>().await {
                        if let Some(id) = placed["order"]["id"].as_str() {
                            acknowledged
                                .lock()
                                .unwrap()
                                .push((token.clone(), id.to_owned()));
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::spawn_blocking(move || server.kill_hard())
        .await
        .expect("kill");
    for writer in writers {
        let _ = writer.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 8,
        "only {} orders acknowledged",
        acknowledged.len()
    );

    let dir_path = dir.path().to_owned();
    let server = tokio::task::spawn_blocking(move || Process::start(&dir_path, &[]))
        .await
        .expect("restart");
    for (token, id) in &acknowledged {
        let (status, order) = get(&format!("{}/v1/orders/{id}", server.url), Some(token)).await;
        assert_eq!(
            status, 200,
            "acknowledged order {id} survived the kill: {order}"
        );
        assert_eq!(order["order"]["status"], "open");
    }
    server.stop_with("TERM");
}
