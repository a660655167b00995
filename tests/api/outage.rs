//! Database outage: writes get 503, reads of live state keep working, and the server recovers
//! by itself (rebuilding from snapshot + journal) once PostgreSQL answers again.

use crate::helpers::{base_env, code, eventually, TestApp, TestDb, POOL};
use reqwest::StatusCode;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// How long writes go on after the recovery: longer than the longest wait between two
/// recovery attempts (`RECOVERY_RETRY_MAX`, 5 s).
const WRITES_AFTER_RECOVERY: Duration = Duration::from_secs(6);

/// A TCP proxy in front of PostgreSQL that the test can cut (all connections dropped, new ones
/// refused) and restore.
struct PgProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl PgProxy {
    async fn start(upstream: &'static str) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (cut2, connections2) = (cut.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if cut2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                connections2.lock().unwrap().push(task.abort_handle());
            }
        });
        PgProxy {
            port,
            cut,
            connections,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    fn url(&self, db: &TestDb) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, db.name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_get_503_reads_keep_working_and_it_recovers_by_itself() {
    let proxy = PgProxy::start("127.0.0.1:5432").await;
    let db = TestDb::create().await;
    let env = base_env(&proxy.url(&db));
    let app = TestApp::spawn_on(db, env).await;
    let buyer = app.token("acme", "buyer");
    let (status, resting) = app.bid(&buyer, 2, "1.00").await;
    assert_eq!(status, StatusCode::CREATED);
    let resting_id = resting["order"]["id"].as_str().unwrap().to_owned();
    let (hash_before, seq_before) = app.state_hash().await;

    proxy.cut();
    // The first write after the cut fails its commit (or finds writes already refused).
    let (status, body) = app.bid(&buyer, 3, "1.20").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // `unavailable`: its commit failed; `no_leader`: an idle tick's commit failed first, and
    // this node stopped taking writes until it can lead again.
    assert!(
        ["unavailable", "no_leader"].contains(&code(&body)),
        "{body}"
    );
    // And so do the next ones, fast, with Retry-After.
    let response = app
        .http
        .post(format!("{}/v1/orders", app.address))
        .bearer_auth(&buyer)
        .json(&json!({"pool": POOL, "gpus": 1, "price": "1.10", "duration_s": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let (status, _) = app
        .delete(&format!("/v1/orders/{resting_id}"), Some(&buyer))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // Reads of live state still answer, and show only what was committed.
    let (status, book) = app.get(&format!("/v1/pools/{POOL}/book"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        book["bids"],
        json!([{"price": "1.00", "gpus": 2, "orders": 1}]),
        "{book}"
    );
    assert_eq!(app.get("/v1/pools", None).await.0, StatusCode::OK);
    let (status, mine) = app
        .get(&format!("/v1/orders/{resting_id}"), Some(&buyer))
        .await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(mine["order"]["status"], "open");
    let (status, open) = app.get("/v1/orders?status=open", Some(&buyer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(open["orders"].as_array().unwrap().len(), 1);
    assert_eq!(app.state_hash().await, (hash_before.clone(), seq_before));
    // History needs the database: an honest 503, not a partial answer.
    let (status, body) = app.get("/v1/orders?status=cancelled", Some(&buyer)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
    );
    let (status, ready) = app.get("/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["writes"], "refused");
    assert_eq!(ready["database"], "down");
    assert_eq!(app.get("/healthz", None).await.0, StatusCode::OK);

    proxy.restore();
    eventually(Duration::from_secs(20), "writes to resume", || async {
        let (status, _) = app.get("/readyz", None).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    let (status, body) = app.bid(&buyer, 1, "1.05").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The refused writes never happened; the committed bid is still there.
    let (_, book) = app.get(&format!("/v1/pools/{POOL}/book"), None).await;
    assert_eq!(
        book["bids"],
        json!([{"price": "1.05", "gpus": 1, "orders": 1}, {"price": "1.00", "gpus": 2, "orders": 1}]),
        "{book}"
    );
    let (status, _) = app
        .delete(&format!("/v1/orders/{resting_id}"), Some(&buyer))
        .await;
    assert_eq!(status, StatusCode::OK);

    // Writes go on, several at once so batches are in flight, for longer than the longest
    // wait between two recovery attempts: nothing the outage set going (a reload of the state,
    // a retry) may land under them. Every one commits, and the served state is the journal's.
    let until = Instant::now() + WRITES_AFTER_RECOVERY;
    let writer = || async {
        let mut refused = Vec::new();
        while Instant::now() < until {
            let (status, body) = app
                .post(
                    "/v1/orders",
                    Some(&buyer),
                    json!({"pool": POOL, "gpus": 1, "price": "0.50", "duration_s": 3600, "tif": "ioc"}),
                )
                .await;
            if status != StatusCode::CREATED {
                refused.push((status, body));
            }
        }
        refused
    };
    let refused = tokio::join!(writer(), writer(), writer(), writer());
    assert_eq!(
        [refused.0, refused.1, refused.2, refused.3].concat(),
        Vec::new(),
        "every write after the recovery commits"
    );
    app.assert_served_seq_is_the_journals_end(&app.db().client().await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_are_replaced_without_losing_a_write() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    assert_eq!(app.bid(&buyer, 1, "1.00").await.0, StatusCode::CREATED);
    let admin = crate::helpers::pg(&crate::helpers::admin_url()).await;
    let name = app.db().name.clone();
    let terminated: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'offpeak') t",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(terminated >= 1, "the server holds connections");
    // Each write either commits (201) or is refused (503) while the server rebuilds; within
    // a few seconds writes commit again, and everything acknowledged is there.
    let mut acknowledged = Vec::new();
    eventually(
        Duration::from_secs(20),
        "a write to commit after the terminate",
        || async {
            let (status, body) = app.bid(&buyer, 1, "1.01").await;
            assert!(
                matches!(
                    status,
                    StatusCode::CREATED | StatusCode::SERVICE_UNAVAILABLE
                ),
                "{status}: {body}"
            );
            (status == StatusCode::CREATED)
                .then(|| body["order"]["id"].as_str().unwrap().to_owned())
        },
    )
    .await;
    for _ in 0..5 {
        let (status, body) = app.bid(&buyer, 1, "1.02").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        acknowledged.push(body["order"]["id"].as_str().unwrap().to_owned());
    }
    let expected = app.state_hash().await;
    let db = app.stop().await;
    let env = base_env(&db.url());
    let app = TestApp::spawn_on(db, env).await;
    assert_eq!(app.state_hash().await, expected);
    for id in acknowledged {
        assert_eq!(
            app.get(&format!("/v1/orders/{id}"), Some(&buyer)).await.0,
            StatusCode::OK
        );
    }
}
