//! Crash: the real binary as a child process, killed with SIGKILL in the middle of a load of
//! orders, then restarted on the same database. Every acknowledged order and lease is there,
//! no order got a lease twice, and nothing unacknowledged is half-done.

use crate::helpers::{rfc3339_in, token, TestDb, SECRET};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running `offpeak serve` child.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(db: &TestDb) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_offpeak"))
            .arg("serve")
            .env("DATABASE_URL", db.url())
            .env("OFFPEAK_JWT_SECRET", SECRET)
            .env("OFFPEAK_LISTEN", "127.0.0.1:0")
            .env("OFFPEAK_HTTP_WORKERS", "2")
            .env("OFFPEAK_RATE_LIMIT_PER_S", "1000000")
            .env("OFFPEAK_RATE_LIMIT_BURST", "1000000")
            .env("RUST_LOG", "info")
            .env_remove("OFFPEAK_POOLS_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn offpeak");
        let stderr = child.stderr.take().expect("stderr");
        let (found, address) = std::sync::mpsc::channel();
        // Keep draining stderr for the child's whole life, or it blocks on a full pipe.
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    if let Some(found) = found.take() {
                        let address: String = rest
                            .chars()
                            .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                            .collect();
                        let _ = found.send(address);
                    }
                }
                if std::env::var_os("TEST_LOG").is_some() {
                    eprintln!("[child] {line}");
                }
            }
        });
        let address = address
            .recv_timeout(Duration::from_secs(60))
            .expect("the server logs its address");
        Server {
            child,
            address: format!("http://{address}"),
        }
    }

    fn kill_9(&mut self) {
        // std's kill() is SIGKILL on Unix: no shutdown, no final snapshot, no drain.
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Debug)]
struct Acked {
    buyer: String,
    client_order_id: String,
    order: Value,
    leases: Vec<Value>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_loses_no_acknowledged_order_or_lease() {
    let db = TestDb::create().await;
    let mut server = Server::start(&db);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let supplier = token("dc1", "supplier");
    for i in 0..4 {
        let response = http
            .post(format!("{}/v1/capacity", server.address))
            .bearer_auth(&supplier)
            .json(
                &json!({"block_id": format!("blk-{i}"), "pool": "h100-sxm.us-east", "gpus": 4096,
                           "reserve_price": "1.00", "available_until": rfc3339_in(3 * 3600)}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let unacked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..8 {
        let (http, address) = (http.clone(), server.address.clone());
        let (acked, unacked) = (acked.clone(), unacked.clone());
        workers.push(tokio::spawn(async move {
            let buyer = format!("buyer-{w}");
            let auth = token(&buyer, "buyer");
            for n in 0.. {
                let client_order_id = format!("w{w}-n{n}");
                // Mostly bids that lease at once, some that rest.
                let price = if n % 4 == 3 { "0.50" } else { "2.00" };
                let sent = http
                    .post(format!("{address}/v1/orders"))
                    .bearer_auth(&auth)
                    .json(
                        &json!({"pool": "h100-sxm.us-east", "gpus": 1, "price": price,
                                   "duration_s": 3600, "client_order_id": client_order_id}),
                    )
                    .send()
                    .await;
                let body = match sent {
                    Ok(response) if response.status() == StatusCode::CREATED => {
                        response.json::<Value>().await.ok()
                    }
                    _ => None,
                };
                match body {
                    Some(body) => acked.lock().unwrap().push(Acked {
                        buyer: buyer.clone(),
                        client_order_id,
                        order: body["order"].clone(),
                        leases: body["leases"].as_array().cloned().unwrap_or_default(),
                    }),
                    None => {
                        unacked
                            .lock()
                            .unwrap()
                            .push((buyer.clone(), client_order_id));
                        return;
                    }
                }
            }
        }));
    }
    // Let the load run, then pull the plug while requests are in flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill_9();
    for worker in workers {
        worker.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let unacked = unacked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "the load should get well going: {} acked",
        acked.len()
    );

    let server = Server::start(&db);
    let check = |path: String, who: String| {
        let (http, address) = (http.clone(), server.address.clone());
        async move {
            let response = http
                .get(format!("{address}{path}"))
                .bearer_auth(token(&who, "buyer"))
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    for ack in &acked {
        let id = ack.order["id"].as_str().unwrap();
        let (status, body) = check(format!("/v1/orders/{id}"), ack.buyer.clone()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "acknowledged order {id} lost: {body}"
        );
        assert_eq!(
            body["order"]["client_order_id"],
            ack.client_order_id.as_str()
        );
        assert_eq!(body["order"]["filled_gpus"], ack.order["filled_gpus"]);
        for lease in &ack.leases {
            let lease_id = lease["id"].as_str().unwrap();
            let (status, body) = check(format!("/v1/leases/{lease_id}"), ack.buyer.clone()).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "acknowledged lease {lease_id} lost: {body}"
            );
            assert_eq!(body["lease"]["order_id"], id);
        }
    }
    // Requests cut off by the kill either happened whole or not at all: retrying with the same
    // client_order_id answers 200 (it happened) or 201 (it had not), never a second lease.
    for (buyer, client_order_id) in &unacked {
        let response = http
            .post(format!("{}/v1/orders", server.address))
            .bearer_auth(token(buyer, "buyer"))
            .json(
                &json!({"pool": "h100-sxm.us-east", "gpus": 1, "price": "2.00",
                           "duration_s": 3600, "client_order_id": client_order_id}),
            )
            .send()
            .await
            .unwrap();
        assert!(
            matches!(response.status(), StatusCode::OK | StatusCode::CREATED),
            "retry of {client_order_id}: {}",
            response.status()
        );
    }

    let sql = db.client().await;
    let twice: i64 = sql
        .query_one(
            "SELECT count(*) FROM (SELECT order_id FROM leases GROUP BY order_id HAVING sum(gpus) > 1) t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(twice, 0, "an order of one GPU got more than one lease");
    let half_done: i64 = sql
        .query_one(
            "SELECT count(*) FROM orders o WHERE o.filled_gpus <> \
               (SELECT coalesce(sum(l.gpus), 0) FROM leases l WHERE l.order_id = o.id::text)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(half_done, 0, "an order's fills and its lease rows disagree");
    let orphans: i64 = sql
        .query_one(
            "SELECT count(*) FROM leases l WHERE NOT EXISTS \
               (SELECT 1 FROM orders o WHERE o.id::text = l.order_id)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0, "a lease without its order");
    let row = sql
        .query_one("SELECT count(*), coalesce(max(seq), 0) FROM journal", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        row.get::<_, i64>(1),
        "journal without gaps"
    );
    let oversold: i64 = sql
        .query_one(
            "SELECT count(*) FROM (SELECT block_id FROM leases WHERE status IN ('active', 'preempting') \
               GROUP BY block_id HAVING sum(gpus) > 4096) t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(oversold, 0);
    drop(server);
}
