//! Leases: list, read, release early, tenant isolation, and the `leases` table other tools read.

use crate::helpers::{code, TestApp, POOL};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A supplier block of 8 at 1.50 and a buyer lease of 4 from it; returns the lease.
async fn one_lease(app: &TestApp, buyer: &str) -> Value {
    let supplier = app.token("dc1", "supplier");
    app.release_block(&supplier, "b1", 8, "1.50", 3).await;
    let (status, body) = app.bid(buyer, 4, "2.00").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["leases"][0].clone()
}

#[tokio::test]
async fn a_buyer_lists_and_reads_its_running_leases() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let lease = one_lease(&app, &buyer).await;
    let id = lease["id"].as_str().unwrap();
    let (status, listed) = app.get("/v1/leases", Some(&buyer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["leases"].as_array().unwrap().len(), 1);
    assert_eq!(listed["leases"][0]["id"], id);
    let (_, active) = app.get("/v1/leases?status=active", Some(&buyer)).await;
    assert_eq!(active["leases"][0]["id"], id);
    let (_, none) = app.get("/v1/leases?status=released", Some(&buyer)).await;
    assert_eq!(none["leases"], json!([]));
    let (status, one) = app.get(&format!("/v1/leases/{id}"), Some(&buyer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["lease"]["gpus"], 4);
    assert_eq!(one["lease"]["block_id"], "b1");
    let started = one["lease"]["started_at"].as_str().unwrap();
    let ends = one["lease"]["ends_at"].as_str().unwrap();
    assert!(ends > started, "{one}");
    let (status, _) = app.get("/v1/leases?status=melted", Some(&buyer)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn releasing_a_lease_ends_it_and_keeps_it_in_history() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let lease = one_lease(&app, &buyer).await;
    let id = lease["id"].as_str().unwrap();
    let (status, released) = app
        .post(&format!("/v1/leases/{id}/release"), Some(&buyer), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(released["lease"]["status"], "released");
    assert!(released["lease"]["ended_at"].is_string());
    assert!(released["lease"]["cost"].is_string());
    let (status, one) = app.get(&format!("/v1/leases/{id}"), Some(&buyer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["lease"]["status"], "released");
    let (_, history) = app.get("/v1/leases?status=released", Some(&buyer)).await;
    assert_eq!(history["leases"][0]["id"], id);
    // The GPUs went back to the book.
    let (_, pool) = app.get("/v1/pools/h100-sxm.us-east", None).await;
    assert_eq!(pool["pool"]["idle_gpus"], 8);
    assert_eq!(pool["pool"]["leased_gpus"], 0);
    let (status, body) = app
        .post(&format!("/v1/leases/{id}/release"), Some(&buyer), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(code(&body), "unknown_lease");
}

#[tokio::test]
async fn another_tenant_cannot_read_or_release_a_lease() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", "buyer");
    let mallory = app.token("mallory", "buyer");
    let lease = one_lease(&app, &alice).await;
    let id = lease["id"].as_str().unwrap();
    let (_, missing) = app.get("/v1/leases/987654", Some(&mallory)).await;
    let (status, read) = app.get(&format!("/v1/leases/{id}"), Some(&mallory)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(read, missing);
    let (status, release) = app
        .post(
            &format!("/v1/leases/{id}/release"),
            Some(&mallory),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(release, missing);
    let (_, listed) = app.get("/v1/leases", Some(&mallory)).await;
    assert_eq!(listed["leases"], json!([]));
    let (_, still) = app.get(&format!("/v1/leases/{id}"), Some(&alice)).await;
    assert_eq!(still["lease"]["status"], "active");
}

#[tokio::test]
async fn the_leases_table_has_the_design_columns_and_one_row_per_lease() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let lease = one_lease(&app, &buyer).await;
    let id = lease["id"].as_str().unwrap().to_owned();
    let db = app.db().client().await;
    let columns: Vec<String> = db
        .query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'leases'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for wanted in [
        "id",
        "order_id",
        "buyer",
        "pool",
        "block_id",
        "gpus",
        "price_micros",
        "status",
        "started_at",
        "ends_at",
        "notice_ends_at",
        "ended_at",
        "cost_micros",
    ] {
        assert!(
            columns.iter().any(|c| c == wanted),
            "leases.{wanted} missing: {columns:?}"
        );
    }
    let row = db
        .query_one(
            "SELECT id, order_id, buyer, pool, block_id, gpus, price_micros, status, \
             notice_ends_at IS NULL AS no_notice, ended_at IS NULL AS running, cost_micros \
             FROM leases",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>("id"),
        id,
        "the id exactly as the API shows it"
    );
    assert_eq!(
        row.get::<_, String>("order_id"),
        lease["order_id"].as_str().unwrap()
    );
    assert_eq!(row.get::<_, String>("buyer"), "acme");
    assert_eq!(row.get::<_, String>("pool"), "h100-sxm.us-east");
    assert_eq!(row.get::<_, String>("block_id"), "b1");
    assert_eq!(row.get::<_, i32>("gpus"), 4);
    assert_eq!(row.get::<_, i64>("price_micros"), 1_500_000);
    assert_eq!(row.get::<_, String>("status"), "active");
    assert!(row.get::<_, bool>("no_notice"));
    assert!(row.get::<_, bool>("running"));
    // The row follows the lease's status.
    app.post(&format!("/v1/leases/{id}/release"), Some(&buyer), json!({}))
        .await;
    let row = db
        .query_one(
            "SELECT status, ended_at IS NOT NULL AS ended, count(*) OVER () AS n FROM leases",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>("status"), "released");
    assert!(row.get::<_, bool>("ended"));
    assert_eq!(row.get::<_, i64>("n"), 1);
}

#[tokio::test]
async fn a_lease_keeps_the_notice_promised_when_it_opened() {
    let app = TestApp::spawn().await;
    let admin = app.token("root", "admin");
    let supplier = app.token("dc1", "supplier");
    let buyer = app.token("acme", "buyer");
    let pool =
        |notice_s: u32| json!({"gpu": "h100-sxm", "region": "us-east", "notice_s": notice_s});
    let (status, body) = app
        .put(&format!("/v1/admin/pools/{POOL}"), Some(&admin), pool(600))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let lease = one_lease(&app, &buyer).await;
    assert_eq!(lease["notice_s"], 600, "{lease}");
    let id = lease["id"].as_str().unwrap();
    // Lowering the pool's notice does not shorten the running lease's promise.
    let (status, body) = app
        .put(&format!("/v1/admin/pools/{POOL}"), Some(&admin), pool(60))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, read) = app.get(&format!("/v1/leases/{id}"), Some(&buyer)).await;
    assert_eq!(read["lease"]["notice_s"], 600, "{read}");
    // An explicit notice that satisfies the pool but not the lease needs emergency.
    let (status, body) = app
        .post(
            "/v1/capacity/b1/reclaim",
            Some(&supplier),
            json!({"gpus": 8, "notice_s": 120}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "notice_too_short"),
        "{body}"
    );
    // Without a notice the lease gets its own 600 s, not the pool's 60 s.
    let (status, body) = app
        .post(
            "/v1/capacity/b1/reclaim",
            Some(&supplier),
            json!({"gpus": 8}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reclaim"]["emergency"], false);
    let (_, read) = app.get(&format!("/v1/leases/{id}"), Some(&buyer)).await;
    let lease = &read["lease"];
    assert_eq!(lease["status"], "preempting");
    assert_eq!(lease["emergency"], false);
    let notice_s = seconds_between(
        lease["preempted_at"].as_str().unwrap(),
        lease["notice_ends_at"].as_str().unwrap(),
    );
    assert_eq!(notice_s, 600, "{lease}");
    assert_eq!(body["reclaim"]["notice_ends_at"], lease["notice_ends_at"]);
}

fn seconds_between(from: &str, to: &str) -> i64 {
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .expect("an RFC 3339 time")
    };
    (parse(to) - parse(from)).whole_seconds()
}
