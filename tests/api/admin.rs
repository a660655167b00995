//! Administration: pools, kill switches, account limits, the state hash.

use crate::helpers::{code, TestApp, POOL};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn the_state_hash_is_admin_only_and_moves_with_the_state() {
    let app = TestApp::spawn().await;
    let (before, seq_before) = app.state_hash().await;
    assert_eq!(before.len(), 16, "64-bit hex: {before}");
    let buyer = app.token("acme", "buyer");
    app.bid(&buyer, 1, "1.00").await;
    let (after, seq_after) = app.state_hash().await;
    assert_ne!(before, after);
    assert!(seq_after > seq_before);
    let (status, _) = app.get("/v1/admin/state-hash", Some(&buyer)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.get("/v1/admin/state-hash", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_account_kill_switch_cancels_its_bids_and_refuses_new_ones() {
    let app = TestApp::spawn().await;
    let admin = app.token("root", "admin");
    let buyer = app.token("acme", "buyer");
    let (_, placed) = app.bid(&buyer, 2, "1.00").await;
    let id = placed["order"]["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .post(
            "/v1/admin/kill-switch",
            Some(&admin),
            json!({"account": "acme", "engaged": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, order) = app.get(&format!("/v1/orders/{id}"), Some(&buyer)).await;
    assert_eq!(order["order"]["status"], "cancelled");
    assert_eq!(order["order"]["cancel_reason"], "kill_switch");
    let (status, body) = app.bid(&buyer, 1, "1.00").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "kill_switch")
    );
    app.post(
        "/v1/admin/kill-switch",
        Some(&admin),
        json!({"account": "acme", "engaged": false}),
    )
    .await;
    let (status, _) = app.bid(&buyer, 1, "1.00").await;
    assert_eq!(status, StatusCode::CREATED);
    for bad in [
        json!({"engaged": true}),
        json!({"account": "a", "pool": POOL, "engaged": true}),
    ] {
        let (status, _) = app.post("/v1/admin/kill-switch", Some(&admin), bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn a_pool_kill_switch_halts_the_pool() {
    let app = TestApp::spawn().await;
    let admin = app.token("root", "admin");
    let supplier = app.token("dc1", "supplier");
    let (status, _) = app
        .post(
            "/v1/admin/kill-switch",
            Some(&admin),
            json!({"pool": POOL, "engaged": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, pool) = app.get(&format!("/v1/pools/{POOL}"), None).await;
    assert_eq!(pool["pool"]["halted"], true);
    let (status, body) = app
        .post(
            "/v1/capacity",
            Some(&supplier),
            json!({"block_id": "b", "pool": POOL, "gpus": 1, "reserve_price": "1.00",
                   "available_until": crate::helpers::rfc3339_in(7200)}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "kill_switch")
    );
}

#[tokio::test]
async fn account_limits_refuse_bids_over_them() {
    let app = TestApp::spawn().await;
    let admin = app.token("root", "admin");
    let buyer = app.token("acme", "buyer");
    let (status, body) = app
        .put(
            "/v1/admin/accounts/acme/limits",
            Some(&admin),
            json!({"orders_open_max": 1, "open_notional_max": "10.00"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["open_notional_max"], "10.00");
    // 4 GPUs * 3.00 for an hour = 12.00 > 10.00.
    let (status, body) = app.bid(&buyer, 4, "3.00").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "limit_notional")
    );
    let (status, _) = app.bid(&buyer, 1, "1.00").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = app.bid(&buyer, 1, "1.00").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "limit_orders_open")
    );
}

#[tokio::test]
async fn admins_create_and_reconfigure_pools() {
    let app = TestApp::spawn().await;
    let admin = app.token("root", "admin");
    let buyer = app.token("acme", "buyer");
    let (status, body) = app
        .put(
            "/v1/admin/pools/b200.us-west",
            Some(&admin),
            json!({"gpu": "b200", "region": "us-west", "tick": "0.05", "price_max": "50.00"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pool"]["tick"], "0.05");
    let (_, pools) = app.get("/v1/pools", None).await;
    assert_eq!(pools["pools"].as_array().unwrap().len(), 6);
    let (status, body) = app
        .put(
            "/v1/admin/pools/b200.us-west",
            Some(&admin),
            json!({"gpu": "b200", "region": "us-west", "tick": "0.03", "price_min": "0.05"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "pool_config_invalid")
    );
    // A pool with resting bids keeps its price grid.
    app.bid(&buyer, 1, "1.00").await;
    let (status, body) = app
        .put(
            &format!("/v1/admin/pools/{POOL}"),
            Some(&admin),
            json!({"gpu": "h100-sxm", "region": "us-east", "tick": "0.05"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "pool_not_empty")
    );
    let (status, _) = app
        .put(
            "/v1/admin/pools/b200.us-west",
            Some(&admin),
            json!({"gpu": "h100-sxm", "region": "us-west"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
