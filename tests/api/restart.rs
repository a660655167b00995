//! Restart: a new server on the same database rebuilds exactly the same state, from the
//! snapshot and the journal after it, from the whole journal, or past a corrupt snapshot.

use crate::helpers::{base_env, eventually, TestApp, TestDb};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

/// Some of everything: blocks, leases, resting bids, a cancel, a reclaim, a release.
async fn trade_a_little(app: &TestApp) {
    let supplier = app.token("dc1", "supplier");
    let acme = app.token("acme", "buyer");
    let globex = app.token("globex", "buyer");
    app.release_block(&supplier, "b1", 8, "1.50", 3).await;
    app.release_block(&supplier, "b2", 4, "2.10", 5).await;
    let (_, leased) = app.bid(&acme, 4, "2.00").await;
    app.bid(&globex, 2, "1.00").await;
    let (_, cancelled) = app.bid(&globex, 1, "1.10").await;
    let id = cancelled["order"]["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/v1/orders/{id}"), Some(&globex))
            .await
            .0,
        StatusCode::OK
    );
    let persistent = json!({"pool": "h100-sxm.us-east", "gpus": 2, "price": "2.50", "duration_s": 3600, "persistent": true, "client_order_id": "p-1"});
    assert_eq!(
        app.post("/v1/orders", Some(&globex), persistent.clone())
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, _) = app
        .post(
            "/v1/capacity/b2/reclaim",
            Some(&supplier),
            json!({"gpus": 4}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let lease = leased["leases"][0]["id"].as_str().unwrap();
    let (status, _) = app
        .post(
            &format!("/v1/leases/{lease}/release"),
            Some(&acme),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

async fn restarted(db: TestDb) -> TestApp {
    let env = base_env(&db.url());
    TestApp::spawn_on(db, env).await
}

#[tokio::test]
async fn a_restart_on_the_same_database_rebuilds_the_same_state() {
    let app = TestApp::spawn().await;
    trade_a_little(&app).await;
    let acme = app.token("acme", "buyer");
    let (hash, seq) = app.state_hash().await;
    let (_, book) = app.get("/v1/pools/h100-sxm.us-east/book", None).await;
    let (_, orders) = app.get("/v1/orders", Some(&acme)).await;
    let db = app.stop().await;
    let app = restarted(db).await;
    assert_eq!(app.state_hash().await, (hash, seq));
    assert_eq!(
        app.get("/v1/pools/h100-sxm.us-east/book", None).await.1,
        book
    );
    assert_eq!(app.get("/v1/orders", Some(&acme)).await.1, orders);
    // Idempotency survives the restart too.
    let globex = app.token("globex", "buyer");
    let (status, again) = app
        .post(
            "/v1/orders",
            Some(&globex),
            json!({"pool": "h100-sxm.us-east", "gpus": 2, "price": "2.50", "duration_s": 3600, "persistent": true, "client_order_id": "p-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    // Trades and candles are warmed from the database.
    let (_, trades) = app.get("/v1/pools/h100-sxm.us-east/trades", None).await;
    assert!(!trades["trades"].as_array().unwrap().is_empty(), "{trades}");
    // And it keeps working.
    assert_eq!(app.bid(&acme, 1, "1.00").await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn without_a_snapshot_the_whole_journal_is_replayed() {
    let app = TestApp::spawn().await;
    trade_a_little(&app).await;
    let expected = app.state_hash().await;
    let db = app.stop().await;
    db.client()
        .await
        .batch_execute("DELETE FROM snapshots")
        .await
        .unwrap();
    let app = restarted(db).await;
    assert_eq!(app.state_hash().await, expected);
}

#[tokio::test]
async fn a_corrupt_snapshot_is_skipped_and_the_journal_decides() {
    let app = TestApp::spawn().await;
    trade_a_little(&app).await;
    let expected = app.state_hash().await;
    let db = app.stop().await;
    let client = db.client().await;
    let snapshots: i64 = client
        .query_one("SELECT count(*) FROM snapshots", &[])
        .await
        .unwrap()
        .get(0);
    assert!(snapshots >= 1, "a graceful stop writes a snapshot");
    client
        .batch_execute("UPDATE snapshots SET state = 'not a snapshot'::bytea")
        .await
        .unwrap();
    let app = restarted(db).await;
    assert_eq!(app.state_hash().await, expected);
}

#[tokio::test]
async fn the_journal_is_gapless_and_matches_the_rows() {
    let app = TestApp::spawn().await;
    trade_a_little(&app).await;
    let (_, seq) = app.state_hash().await;
    let db = app.db().client().await;
    let row = db
        .query_one("SELECT count(*), min(seq), max(seq) FROM journal", &[])
        .await
        .unwrap();
    let (count, min, max): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((min, max), (1, count), "seq 1..=n without gaps");
    assert!(max as u64 >= seq);
    let applied: i64 = db
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert!(applied >= 1);
}

#[tokio::test]
async fn only_the_newest_snapshots_are_kept() {
    let mut app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    for _ in 0..3 {
        assert_eq!(app.bid(&buyer, 1, "1.00").await.0, StatusCode::CREATED);
        let db = app.stop().await;
        app = restarted(db).await;
    }
    let expected = app.state_hash().await;
    let seqs: Vec<i64> = app
        .db()
        .client()
        .await
        .query("SELECT seq FROM snapshots ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seqs.len(), 2, "three stops wrote three snapshots: {seqs:?}");
    assert_eq!(seqs[1] as u64, expected.1, "the newest is the last stop's");
}

#[tokio::test]
async fn a_running_server_takes_periodic_snapshots_of_the_committed_state() {
    let app = TestApp::spawn_with(|env| {
        env.insert("OFFPEAK_SNAPSHOT_EVERY_MS".into(), "200".into());
    })
    .await;
    let buyer = app.token("acme", "buyer");
    assert_eq!(app.bid(&buyer, 1, "1.00").await.0, StatusCode::CREATED);
    let (hash, seq) = app.state_hash().await;
    let db = app.db().client().await;
    // Written while running (not at shutdown), for exactly the state the API reports.
    let stored: i64 = eventually(Duration::from_secs(10), "a periodic snapshot", || async {
        db.query_opt(
            "SELECT state_hash FROM snapshots WHERE seq = $1",
            &[&(seq as i64)],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
    })
    .await;
    assert_eq!(format!("{:016x}", stored as u64), hash);
}
