//! Test harness: a fresh PostgreSQL database per test, the real server on port 0, tokens,
//! and a small HTTP client.
//!
//! `TEST_LOG=1 cargo test` shows the servers' logs. The admin connection defaults to
//! `postgres://postgres@127.0.0.1:5432/postgres` (override with `OFFPEAK_TEST_PG_ADMIN`).

#![allow(dead_code)]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use offpeak::config::Settings;
use offpeak::startup::Application;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The HS256 secret every test server is configured with (unless a test says otherwise).
pub const SECRET: &str = "offpeak-test-secret-0123456789abcdef0123456789";

/// The pools a fresh journal gets.
pub const POOL: &str = "h100-sxm.us-east";

static TRACING: Once = Once::new();

fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            offpeak::telemetry::init(offpeak::telemetry::LogFormat::Text);
        }
    });
}

/// The maintenance database URL tests create and drop databases through.
pub fn admin_url() -> String {
    std::env::var("OFFPEAK_TEST_PG_ADMIN")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A connection to `url`, its driver running on the current runtime.
pub async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database of its own, dropped (best effort) when this value is dropped.
pub struct TestDb {
    /// The database's name.
    pub name: String,
}

impl TestDb {
    /// Creates `offpeak_t_<random>`.
    pub async fn create() -> TestDb {
        let name = format!("offpeak_t_{:016x}", rand::random::<u64>());
        pg(&admin_url())
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        TestDb { name }
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        let admin = admin_url();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        format!("{base}/{}", self.name)
    }

    /// A direct SQL connection to it.
    pub async fn client(&self) -> tokio_postgres::Client {
        pg(&self.url()).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside or outside a runtime; a thread with its own runtime works in both.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// The environment a test server gets, as the variables an operator would set.
pub fn base_env(database_url: &str) -> HashMap<String, String> {
    HashMap::from([
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
        ("OFFPEAK_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("OFFPEAK_JWT_SECRET".to_owned(), SECRET.to_owned()),
        ("OFFPEAK_HTTP_WORKERS".to_owned(), "1".to_owned()),
        // Tests drive many requests from one account; the limiter has its own test.
        ("OFFPEAK_RATE_LIMIT_PER_S".to_owned(), "100000".to_owned()),
        ("OFFPEAK_RATE_LIMIT_BURST".to_owned(), "100000".to_owned()),
        // No idle ticks, so a state hash read is not raced by a tick; timers still tick (and
        // `an_idle_server_journals_ticks` covers idle ticks).
        ("OFFPEAK_IDLE_TICK_MS".to_owned(), "3600000".to_owned()),
    ])
}

/// Settings from an environment map, through the same parser the binary uses.
pub fn settings_from(env: &HashMap<String, String>) -> Settings {
    Settings::from_lookup(|k| env.get(k).cloned()).expect("test settings")
}

/// A running server.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The bound port.
    pub port: u16,
    /// Its database (dropped last, after the server).
    pub db: Option<TestDb>,
    /// HTTP client.
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// A server on a fresh database with the default settings.
    pub async fn spawn() -> TestApp {
        let db = TestDb::create().await;
        let env = base_env(&db.url());
        TestApp::spawn_on(db, env).await
    }

    /// A server on a fresh database, with changes to the environment.
    pub async fn spawn_with(change: impl FnOnce(&mut HashMap<String, String>)) -> TestApp {
        let db = TestDb::create().await;
        let mut env = base_env(&db.url());
        change(&mut env);
        TestApp::spawn_on(db, env).await
    }

    /// A server on `db` with this environment.
    pub async fn spawn_on(db: TestDb, env: HashMap<String, String>) -> TestApp {
        init_tracing();
        let app = Application::build(settings_from(&env))
            .await
            .expect("the server builds");
        let port = app.port();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        TestApp {
            address: format!("http://127.0.0.1:{port}"),
            port,
            db: Some(db),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("reqwest client"),
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// Stops the server gracefully and hands back its database.
    pub async fn stop(mut self) -> TestDb {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
        self.db.take().expect("database")
    }

    /// The test database.
    pub fn db(&self) -> &TestDb {
        self.db.as_ref().expect("database")
    }

    /// A token for `sub` in `role`, valid for an hour.
    pub fn token(&self, sub: &str, role: &str) -> String {
        token(sub, role)
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
        let text = response.text().await.expect("response body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
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

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, token, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, token, None).await
    }

    /// Releases a block of `gpus` at `price` open for `hours`; asserts 201.
    pub async fn release_block(
        &self,
        supplier: &str,
        block_id: &str,
        gpus: u32,
        price: &str,
        hours: i64,
    ) -> Value {
        let (status, body) = self
            .post(
                "/v1/capacity",
                Some(supplier),
                json!({
                    "block_id": block_id,
                    "pool": POOL,
                    "gpus": gpus,
                    "reserve_price": price,
                    "available_until": rfc3339_in(hours * 3600),
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "release_block: {body}");
        body
    }

    /// Places a GTC bid in [`POOL`] for an hour; returns the status and body.
    pub async fn bid(&self, buyer: &str, gpus: u32, price: &str) -> (StatusCode, Value) {
        self.post(
            "/v1/orders",
            Some(buyer),
            json!({"pool": POOL, "gpus": gpus, "price": price, "duration_s": 3600}),
        )
        .await
    }

    /// The admin state hash and seq.
    pub async fn state_hash(&self) -> (String, u64) {
        let admin = token("root", "admin");
        let (status, body) = self.get("/v1/admin/state-hash", Some(&admin)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (
            body["state_hash"].as_str().expect("state_hash").to_owned(),
            body["seq"].as_u64().expect("seq"),
        )
    }

    /// A counter, gauge or histogram sum from `/metrics` (whole units).
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name} not in /metrics")) as u64
    }

    /// Asserts that the seq the server serves is the journal's last (read through `db`):
    /// nothing in memory that is not journaled.
    pub async fn assert_served_seq_is_the_journals_end(&self, db: &tokio_postgres::Client) {
        let (_, seq) = self.state_hash().await;
        let journal_end: i64 = db
            .query_one("SELECT max(seq) FROM journal", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            seq, journal_end as u64,
            "the served seq is the journal's end"
        );
    }
}

/// Seconds since the epoch.
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// RFC 3339 for now plus `seconds` (may be negative).
pub fn rfc3339_in(seconds: i64) -> String {
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds);
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

/// Signs arbitrary claims with HS256 and [`SECRET`].
pub fn sign(claims: &Value) -> String {
    sign_with(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

/// Signs arbitrary claims with this header and key.
pub fn sign_with(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).expect("token")
}

/// Claims of a valid token for `sub` in `role`.
pub fn claims(sub: &str, role: &str) -> Value {
    let now = now_s();
    json!({"sub": sub, "role": role, "iss": "offpeak", "aud": "offpeak", "iat": now, "exp": now + 3600})
}

/// A valid HS256 token for `sub` in `role`.
pub fn token(sub: &str, role: &str) -> String {
    sign(&claims(sub, role))
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The error code of an error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}
