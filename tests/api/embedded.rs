//! The server on its embedded defaults: no `DATABASE_URL`, so SQLite in a fresh data
//! directory per test. A representative part of the API suite runs here against SQLite
//! (place, cancel, leases, reclaim, release, restart with the same state), and the harness
//! ([`EmbeddedApp`]) serves the CLI and demo tests too.

use crate::helpers::{code, rfc3339_in, settings_from, token, POOL, SECRET};
use offpeak::startup::Application;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server on SQLite in its own data directory.
pub struct EmbeddedApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The data directory (the SQLite file and the generated JWT secret live here).
    pub data_dir: Option<TempDir>,
    /// The server's shared state (the sequencer handle, for the demo).
    pub state: offpeak::state::AppState,
    http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The environment of an embedded test server: what an operator would set, minus the database.
pub fn embedded_env(dir: &TempDir) -> HashMap<String, String> {
    HashMap::from([
        ("OFFPEAK_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        (
            "OFFPEAK_DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        ),
        ("OFFPEAK_JWT_SECRET".to_owned(), SECRET.to_owned()),
        ("OFFPEAK_HTTP_WORKERS".to_owned(), "1".to_owned()),
        ("OFFPEAK_RATE_LIMIT_PER_S".to_owned(), "100000".to_owned()),
        ("OFFPEAK_RATE_LIMIT_BURST".to_owned(), "100000".to_owned()),
        // No idle ticks during a test: the state hash stays put between two reads.
        ("OFFPEAK_IDLE_TICK_MS".to_owned(), "3600000".to_owned()),
    ])
}

impl EmbeddedApp {
    /// A server on a fresh data directory.
    pub async fn spawn() -> EmbeddedApp {
        EmbeddedApp::spawn_in(tempfile::tempdir().expect("temp dir")).await
    }

    /// A server on `dir` (fresh, or left by a stopped server).
    pub async fn spawn_in(dir: TempDir) -> EmbeddedApp {
        let env = embedded_env(&dir);
        let app = Application::build(settings_from(&env))
            .await
            .expect("the server builds on SQLite");
        let port = app.port();
        let state = app.state().clone();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        EmbeddedApp {
            address: format!("http://127.0.0.1:{port}"),
            data_dir: Some(dir),
            state,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("reqwest client"),
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// Stops the server gracefully and hands back its data directory.
    pub async fn stop(mut self) -> TempDir {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
        self.data_dir.take().expect("data dir")
    }

    /// Sends a request; `body` as JSON when given.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// The admin view of the engine's state hash and seq.
    pub async fn state_hash(&self) -> Value {
        let (status, body) = self
            .get("/v1/admin/state-hash", Some(&token("root", "admin")))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

impl Drop for EmbeddedApp {
    fn drop(&mut self) {
        // A test that panicked still stops its server, so the data directory can be removed.
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Blocks, bids, a cancel, a reclaim and a lease release; returns the lease that was released.
async fn trade_a_little(app: &EmbeddedApp) -> String {
    let supplier = token("dc1", "supplier");
    let acme = token("acme", "buyer");
    let globex = token("globex", "buyer");
    for (block, gpus, price, hours) in [("b1", 8, "1.50", 3), ("b2", 4, "2.10", 5)] {
        let (status, body) = app
            .post(
                "/v1/capacity",
                Some(&supplier),
                json!({"block_id": block, "pool": POOL, "gpus": gpus, "reserve_price": price,
                       "available_until": rfc3339_in(hours * 3600)}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let order = |gpus: u32, price: &str| json!({"pool": POOL, "gpus": gpus, "price": price, "duration_s": 3600});
    let (status, leased) = app.post("/v1/orders", Some(&acme), order(4, "2.00")).await;
    assert_eq!(status, StatusCode::CREATED, "{leased}");
    assert_eq!(
        leased["leases"].as_array().map(Vec::len),
        Some(1),
        "{leased}"
    );
    let (status, resting) = app
        .post("/v1/orders", Some(&globex), order(2, "1.00"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{resting}");
    assert_eq!(resting["order"]["status"], "open");
    let (status, cancelled) = app
        .post("/v1/orders", Some(&globex), order(1, "1.10"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cancelled}");
    let id = cancelled["order"]["id"].as_str().expect("id");
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/v1/orders/{id}"),
            Some(&globex),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["order"]["status"], "cancelled");
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/v1/orders/{id}"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another buyer's order: {body}"
    );
    assert_eq!(code(&body), "unknown_order");
    let (status, body) = app
        .post(
            "/v1/capacity/b2/reclaim",
            Some(&supplier),
            json!({"gpus": 4}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let lease = leased["leases"][0]["id"]
        .as_str()
        .expect("lease id")
        .to_owned();
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/leases/{lease}/release"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["lease"]["status"], "released");
    lease
}

#[tokio::test]
async fn without_a_database_url_the_server_keeps_its_state_in_sqlite() {
    let app = EmbeddedApp::spawn().await;
    let (status, pools) = app.get("/v1/pools", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pools["pools"].as_array().map(Vec::len), Some(5), "{pools}");
    trade_a_little(&app).await;
    let file = app
        .data_dir
        .as_ref()
        .unwrap()
        .path()
        .join(offpeak::store::sqlite::DATABASE_FILE);
    assert!(file.exists(), "{} was created", file.display());
    let dir = app.stop().await;
    // The rows are in the file, under the DESIGN's table and column names.
    let conn = rusqlite::Connection::open(dir.path().join(offpeak::store::sqlite::DATABASE_FILE))
        .expect("open the file");
    let (buyer, status, cost): (String, String, i64) = conn
        .query_row(
            "SELECT buyer, status, cost_micros FROM leases ORDER BY started_at LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .expect("a lease row");
    assert_eq!((buyer.as_str(), status.as_str()), ("acme", "released"));
    assert!(cost >= 0);
    let journal: i64 = conn
        .query_row("SELECT count(*) FROM journal", [], |row| row.get(0))
        .unwrap();
    assert!(journal >= 10, "{journal} commands journaled");
}

#[tokio::test]
async fn a_restart_on_the_same_data_directory_rebuilds_the_same_state() {
    let app = EmbeddedApp::spawn().await;
    let released = trade_a_little(&app).await;
    let acme = token("acme", "buyer");
    let before = app.state_hash().await;
    let (_, book) = app.get(&format!("/v1/pools/{POOL}/book"), None).await;
    let (_, orders) = app.get("/v1/orders", Some(&acme)).await;
    let (_, leases) = app.get("/v1/leases", Some(&acme)).await;
    let dir = app.stop().await;

    let app = EmbeddedApp::spawn_in(dir).await;
    assert_eq!(app.state_hash().await, before);
    assert_eq!(
        app.get(&format!("/v1/pools/{POOL}/book"), None).await.1,
        book
    );
    assert_eq!(app.get("/v1/orders", Some(&acme)).await.1, orders);
    assert_eq!(app.get("/v1/leases", Some(&acme)).await.1, leases);
    let (status, lease) = app
        .get(&format!("/v1/leases/{released}"), Some(&acme))
        .await;
    assert_eq!(status, StatusCode::OK, "{lease}");
    assert_eq!(lease["lease"]["status"], "released");
    let (_, trades) = app.get(&format!("/v1/pools/{POOL}/trades"), None).await;
    assert!(
        !trades["trades"].as_array().unwrap().is_empty(),
        "market history is warmed from SQLite: {trades}"
    );
    // It keeps working, and ids continue where they were.
    let (status, body) = app
        .post(
            "/v1/orders",
            Some(&acme),
            json!({"pool": POOL, "gpus": 1, "price": "1.00", "duration_s": 3600}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let newest: u64 = body["order"]["id"].as_str().unwrap().parse().unwrap();
    let previous: u64 = orders["orders"][0]["id"].as_str().unwrap().parse().unwrap();
    assert!(newest > previous);
}

#[tokio::test]
async fn without_a_snapshot_the_sqlite_journal_is_replayed_whole() {
    let app = EmbeddedApp::spawn().await;
    trade_a_little(&app).await;
    let before = app.state_hash().await;
    let dir = app.stop().await;
    let conn =
        rusqlite::Connection::open(dir.path().join(offpeak::store::sqlite::DATABASE_FILE)).unwrap();
    let removed = conn.execute("DELETE FROM snapshots", []).unwrap();
    assert!(removed >= 1, "the clean stop wrote a snapshot");
    drop(conn);
    let app = EmbeddedApp::spawn_in(dir).await;
    assert_eq!(app.state_hash().await, before);
}

#[tokio::test]
async fn the_handoff_is_stored_and_replayed_on_sqlite() {
    let app = EmbeddedApp::spawn().await;
    let (supplier, buyer) = (token("dc1", "supplier"), token("acme", "buyer"));
    let (status, body) = app
        .post(
            "/v1/capacity",
            Some(&supplier),
            json!({"block_id": "b1", "pool": POOL, "gpus": 8, "reserve_price": "1.50",
                   "available_until": rfc3339_in(3 * 3600)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let order = json!({"pool": POOL, "gpus": 4, "price": "2.00", "duration_s": 3600,
                       "ssh_public_keys": [crate::handoff::ED25519_KEY]});
    let mut leases = Vec::new();
    for _ in 0..2 {
        let (status, body) = app.post("/v1/orders", Some(&buyer), order.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        leases.push(body["leases"][0]["id"].as_str().unwrap().to_owned());
    }
    let (status, body) = app
        .post(
            &format!("/v1/capacity/b1/leases/{}/ready", leases[0]),
            Some(&supplier),
            json!({"endpoints": [{"host": "10.1.0.1", "port": 22, "user": "ubuntu"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post(
            &format!("/v1/capacity/b1/leases/{}/failed", leases[1]),
            Some(&supplier),
            json!({"reason": "no power"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = app.state_hash().await;
    let dir = app.stop().await;
    let conn = rusqlite::Connection::open(dir.path().join(offpeak::store::sqlite::DATABASE_FILE))
        .expect("open the file");
    let (status, access): (String, String) = conn
        .query_row(
            "SELECT status, access FROM leases WHERE id = ?1",
            [&leases[1]],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("the failed lease's row");
    assert_eq!(status, "failed");
    assert!(access.contains("no power"), "{access}");
    let failed: i64 = conn
        .query_row(
            "SELECT gpus_failed FROM blocks WHERE block_id = 'b1'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(failed, 4);
    drop(conn);
    let app = EmbeddedApp::spawn_in(dir).await;
    assert_eq!(app.state_hash().await, before);
    let (_, lease) = app
        .get(&format!("/v1/leases/{}", leases[0]), Some(&buyer))
        .await;
    assert_eq!(lease["lease"]["access"]["endpoints"][0]["host"], "10.1.0.1");
}

impl crate::report::Api for EmbeddedApp {
    async fn post_json(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.post(path, Some(token), body).await
    }
}

#[tokio::test]
async fn the_report_agrees_with_the_leases_table_on_sqlite() {
    let app = EmbeddedApp::spawn().await;
    crate::report::trade_two_leases(&app).await;
    let admin = token("root", "admin");
    let (status, report) = app.get("/v1/admin/report?bucket=1m", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let dir = app.stop().await;
    let conn = rusqlite::Connection::open(dir.path().join(offpeak::store::sqlite::DATABASE_FILE))
        .expect("open the file");
    let costs: i64 = conn
        .query_row("SELECT sum(cost_micros) FROM leases", [], |row| row.get(0))
        .unwrap();
    assert!(costs > 0);
    assert_eq!(
        crate::report::micros(&crate::report::pool_entry(&report)["total"]),
        costs
    );
    assert_eq!(crate::report::micros(&report["total"]), costs);
    let offered = crate::report::pool_entry(&report)["total"]["offered_gpu_hours"]
        .as_f64()
        .unwrap();
    assert!(offered > 0.0, "{report}");
}
