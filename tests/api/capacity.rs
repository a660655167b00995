//! Capacity blocks: release, list, read, update, reclaim with notice, forecast, rejections,
//! and supplier isolation.

use crate::helpers::{code, eventually, rfc3339_in, TestApp, POOL};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

fn block(block_id: &str, gpus: u32, price: &str, hours: i64) -> Value {
    json!({
        "block_id": block_id,
        "pool": POOL,
        "gpus": gpus,
        "reserve_price": price,
        "available_until": rfc3339_in(hours * 3600),
    })
}

#[tokio::test]
async fn a_released_block_rests_on_the_ask_side() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    let mut body = block("rack12", 16, "1.25", 4);
    body["nodes"] = json!([{"node": "rack12-n1", "gpus": 8}, {"node": "rack12-n2", "gpus": 8}]);
    let (status, released) = app.post("/v1/capacity", Some(&supplier), body).await;
    assert_eq!(status, StatusCode::CREATED, "{released}");
    assert_eq!(released["block"]["status"], "open");
    assert_eq!(released["block"]["gpus_unsold"], 16);
    assert_eq!(released["block"]["reserve_price"], "1.25");
    assert_eq!(released["block"]["nodes"][1]["node"], "rack12-n2");
    assert_eq!(released["leases_opened"], 0);
    let (_, book) = app.get(&format!("/v1/pools/{POOL}/book"), None).await;
    assert_eq!(
        book["asks"],
        json!([{"price": "1.25", "gpus": 16, "orders": 1}])
    );
}

#[tokio::test]
async fn a_block_arriving_fills_a_resting_bid_and_assigns_nodes() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    let buyer = app.token("acme", "buyer");
    let (_, bid) = app.bid(&buyer, 4, "2.00").await;
    let mut body = block("rack7", 8, "1.50", 3);
    body["nodes"] = json!([{"node": "rack7-n1", "gpus": 8}]);
    let (status, released) = app.post("/v1/capacity", Some(&supplier), body).await;
    assert_eq!(status, StatusCode::CREATED, "{released}");
    assert_eq!(released["leases_opened"], 1);
    assert_eq!(released["block"]["gpus_sold"], 4);
    let (_, leases) = app.get("/v1/leases", Some(&buyer)).await;
    let lease = &leases["leases"][0];
    assert_eq!(lease["order_id"], bid["order"]["id"]);
    // The resting bid set the price.
    assert_eq!(lease["price"], "2.00");
    assert_eq!(lease["nodes"], json!([{"node": "rack7-n1", "gpus": 4}]));
}

#[tokio::test]
async fn suppliers_list_read_and_update_their_own_blocks_only() {
    let app = TestApp::spawn().await;
    let dc1 = app.token("dc1", "supplier");
    let dc2 = app.token("dc2", "supplier");
    app.release_block(&dc1, "a", 4, "1.00", 3).await;
    app.release_block(&dc1, "b", 4, "1.00", 3).await;
    // Block ids are per supplier: dc2 may use "a" too.
    app.release_block(&dc2, "a", 2, "3.00", 3).await;
    let (status, mine) = app.get("/v1/capacity", Some(&dc1)).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = mine["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["block_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    let (_, open) = app
        .get("/v1/capacity?status=open&limit=1", Some(&dc1))
        .await;
    assert_eq!(open["blocks"].as_array().unwrap().len(), 1);
    assert_eq!(open["next_after"], "a");
    let (_, theirs) = app.get("/v1/capacity/a", Some(&dc2)).await;
    assert_eq!(theirs["block"]["gpus"], 2);
    let (status, body) = app.get("/v1/capacity/b", Some(&dc2)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "unknown_block")
    );
    // dc2 cannot change or reclaim dc1's block "b".
    let (status, _) = app
        .patch(
            "/v1/capacity/b",
            Some(&dc2),
            json!({"reserve_price": "0.50"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post("/v1/capacity/b/reclaim", Some(&dc2), json!({"gpus": 1}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // dc1 updates its own.
    let (status, updated) = app
        .patch(
            "/v1/capacity/b",
            Some(&dc1),
            json!({"reserve_price": "0.90", "available_until": rfc3339_in(5 * 3600)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["block"]["reserve_price"], "0.90");
    let (status, body) = app
        .patch(
            "/v1/capacity/b",
            Some(&dc1),
            json!({"available_until": rfc3339_in(3600)}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "window_cannot_shrink")
    );
}

#[tokio::test]
async fn a_reclaim_takes_unsold_gpus_first_then_preempts_with_notice() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    let buyer = app.token("acme", "buyer");
    app.release_block(&supplier, "b1", 8, "1.50", 3).await;
    let (_, bid) = app.bid(&buyer, 4, "2.00").await;
    let lease_id = bid["leases"][0]["id"].as_str().unwrap().to_owned();
    // 4 unsold: they come off the book, no lease is touched.
    let (status, first) = app
        .post(
            "/v1/capacity/b1/reclaim",
            Some(&supplier),
            json!({"gpus": 4}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["reclaim"]["gpus_from_book"], 4);
    assert_eq!(first["reclaim"]["leases_preempted"], 0);
    assert_eq!(first["block"]["gpus_reclaimed"], 4);
    // Now the lease: notice of the pool's 120 s.
    let (status, second) = app
        .post(
            "/v1/capacity/b1/reclaim",
            Some(&supplier),
            json!({"gpus": 4}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["reclaim"]["leases_preempted"], 1);
    assert_eq!(second["reclaim"]["emergency"], false);
    assert_eq!(second["block"]["gpus_reclaiming"], 4);
    let (_, lease) = app
        .get(&format!("/v1/leases/{lease_id}"), Some(&buyer))
        .await;
    assert_eq!(lease["lease"]["status"], "preempting");
    assert_eq!(
        lease["lease"]["notice_ends_at"],
        second["reclaim"]["notice_ends_at"]
    );
    let (status, body) = app
        .post(
            "/v1/capacity/b1/reclaim",
            Some(&supplier),
            json!({"gpus": 1}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "reclaim_over_block")
    );
}

#[tokio::test]
async fn a_short_notice_needs_emergency_and_is_recorded() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    let buyer = app.token("acme", "buyer");
    app.release_block(&supplier, "b1", 4, "1.50", 3).await;
    let (_, bid) = app.bid(&buyer, 4, "2.00").await;
    let lease_id = bid["leases"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .post(
            "/v1/capacity/b1/reclaim",
            Some(&supplier),
            json!({"gpus": 4, "notice_s": 10}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "notice_too_short")
    );
    let (status, body) = app
        .post(
            "/v1/capacity/b1/reclaim",
            Some(&supplier),
            json!({"gpus": 4, "notice_s": 10, "emergency": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reclaim"]["emergency"], true);
    let (_, lease) = app
        .get(&format!("/v1/leases/{lease_id}"), Some(&buyer))
        .await;
    assert_eq!(lease["lease"]["emergency"], true);
    assert_eq!(lease["lease"]["status"], "preempting");
}

#[tokio::test]
async fn a_forecast_warns_every_running_lease_of_the_block() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    let acme = app.token("acme", "buyer");
    let globex = app.token("globex", "buyer");
    app.release_block(&supplier, "b1", 8, "1.50", 3).await;
    app.bid(&acme, 4, "2.00").await;
    app.bid(&globex, 4, "2.00").await;
    let at = rfc3339_in(1800);
    let (status, body) = app
        .post(
            "/v1/capacity/b1/forecast",
            Some(&supplier),
            json!({"reclaim_at": at}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["leases_warned"], 2);
    assert!(body["block"]["reclaim_forecast_at"].is_string());
    let (status, body) = app
        .post(
            "/v1/capacity/b1/forecast",
            Some(&supplier),
            json!({"reclaim_at": rfc3339_in(-3600)}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "reclaim_at_in_past")
    );
    let db = app.db().client().await;
    let warned: i64 = db
        .query_one(
            "SELECT count(*) FROM lease_events WHERE kind = 'forecast'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(warned, 2);
}

#[tokio::test]
async fn every_capacity_rejection_has_its_code_and_status() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    app.release_block(&supplier, "taken", 4, "1.00", 3).await;
    let mut nodes = block("n", 8, "1.00", 3);
    nodes["nodes"] = json!([{"node": "x", "gpus": 3}]);
    let mut past = block("p", 8, "1.00", 3);
    past["available_until"] = json!(rfc3339_in(-60));
    let mut elsewhere = block("e", 8, "1.00", 3);
    elsewhere["pool"] = json!("tpu.mars");
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            block("taken", 4, "1.00", 3),
            StatusCode::CONFLICT,
            "block_id_taken",
        ),
        (
            block("z", 0, "1.00", 3),
            StatusCode::UNPROCESSABLE_ENTITY,
            "gpus_must_not_be_zero",
        ),
        (
            block("z", 9999, "1.00", 3),
            StatusCode::UNPROCESSABLE_ENTITY,
            "gpus_over_max",
        ),
        (
            block("z", 4, "1.003", 3),
            StatusCode::UNPROCESSABLE_ENTITY,
            "price_not_on_tick",
        ),
        (
            block("z", 4, "500.00", 3),
            StatusCode::UNPROCESSABLE_ENTITY,
            "price_out_of_band",
        ),
        (
            nodes,
            StatusCode::UNPROCESSABLE_ENTITY,
            "nodes_do_not_match_gpus",
        ),
        (past, StatusCode::UNPROCESSABLE_ENTITY, "window_invalid"),
        (elsewhere, StatusCode::NOT_FOUND, "unknown_pool"),
        (
            block("bad id!", 4, "1.00", 3),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ];
    for (body, status, expected) in cases {
        let (got, answer) = app
            .post("/v1/capacity", Some(&supplier), body.clone())
            .await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert_eq!(code(&answer), expected, "{body}");
    }
    for (status, body) in [
        app.patch(
            "/v1/capacity/ghost",
            Some(&supplier),
            json!({"reserve_price": "1.00"}),
        )
        .await,
        app.post(
            "/v1/capacity/ghost/reclaim",
            Some(&supplier),
            json!({"gpus": 1}),
        )
        .await,
        app.post(
            "/v1/capacity/ghost/forecast",
            Some(&supplier),
            json!({"reclaim_at": rfc3339_in(60)}),
        )
        .await,
        app.get("/v1/capacity/ghost", Some(&supplier)).await,
    ] {
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "unknown_block"),
            "{body}"
        );
    }
    let (status, body) = app
        .patch("/v1/capacity/taken", Some(&supplier), json!({}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "nothing_to_change")
    );
    let (status, body) = app
        .post(
            "/v1/capacity/taken/reclaim",
            Some(&supplier),
            json!({"gpus": 0}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "gpus_must_not_be_zero")
    );
}

#[tokio::test]
async fn a_pending_forecast_shows_on_the_block_and_warns_a_lease_opened_later() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    let acme = app.token("acme", "buyer");
    app.release_block(&supplier, "b1", 8, "1.50", 3).await;
    let (status, body) = app
        .post(
            "/v1/capacity/b1/forecast",
            Some(&supplier),
            json!({"reclaim_at": rfc3339_in(1800)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["leases_warned"], 0);
    let expected = body["block"]["reclaim_expected_at"].clone();
    assert!(expected.is_string(), "{body}");
    assert_eq!(expected, body["block"]["reclaim_forecast_at"]);
    let (_, block) = app.get("/v1/capacity/b1", Some(&supplier)).await;
    assert_eq!(block["block"]["reclaim_expected_at"], expected);
    // The quote that would use the block says so.
    let (_, quote) = app
        .get(
            &format!("/v1/pools/{POOL}/quote?gpus=4&duration_s=3600"),
            None,
        )
        .await;
    assert_eq!(quote["reclaim_expected_at"], expected, "{quote}");
    // A lease opened now is warned at once, like the leases running at the forecast.
    let (status, bid) = app.bid(&acme, 4, "2.00").await;
    assert_eq!(status, StatusCode::CREATED, "{bid}");
    let lease_id = bid["leases"][0]["id"].as_str().unwrap().to_owned();
    let db = app.db().client().await;
    let warned: i64 = db
        .query_one(
            "SELECT count(*) FROM lease_events WHERE kind = 'forecast' AND lease_id = $1",
            &[&lease_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(warned, 1);
}

#[tokio::test]
async fn updating_a_block_whose_window_ended_is_block_closed() {
    let app = TestApp::spawn().await;
    let admin = app.token("root", "admin");
    let supplier = app.token("dc1", "supplier");
    let (status, body) = app
        .put(
            &format!("/v1/admin/pools/{POOL}"),
            Some(&admin),
            json!({"gpu": "h100-sxm", "region": "us-east", "duration_min_s": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut short = block("brief", 4, "1.50", 0);
    short["available_until"] = json!(rfc3339_in(2));
    let (status, body) = app.post("/v1/capacity", Some(&supplier), short).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    eventually(Duration::from_secs(15), "the block to close", || async {
        let (_, block) = app.get("/v1/capacity/brief", Some(&supplier)).await;
        (block["block"]["status"] == "closed").then_some(())
    })
    .await;
    let (status, body) = app
        .patch(
            "/v1/capacity/brief",
            Some(&supplier),
            json!({"reserve_price": "1.60"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "block_closed"),
        "{body}"
    );
}

/// A list cursor that is not an id of the list's kind (here a NUL, which PostgreSQL refuses in
/// text) is 400 `invalid_query` at the boundary, never a database error.
const BAD_CURSORS: &[&str] = &["before=%00b%C3%84", "after=%00", "after=a%20b"];

#[tokio::test]
async fn a_cursor_that_is_no_id_is_400_on_postgresql() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    let buyer = app.token("acme", "buyer");
    for bad in BAD_CURSORS {
        let (status, body) = app
            .get(&format!("/v1/capacity?{bad}"), Some(&supplier))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(code(&body), "invalid_query", "{bad}");
        for list in ["/v1/orders", "/v1/leases"] {
            let (status, body) = app.get(&format!("{list}?{bad}"), Some(&buyer)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{list}?{bad}: {body}");
        }
    }
    let (status, body) = app.get("/v1/capacity?after=b1", Some(&supplier)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_cursor_that_is_no_id_is_400_on_sqlite() {
    let app = crate::embedded::EmbeddedApp::spawn().await;
    let supplier = crate::helpers::token("dc1", "supplier");
    for bad in BAD_CURSORS {
        let (status, body) = app
            .get(&format!("/v1/capacity?{bad}"), Some(&supplier))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(code(&body), "invalid_query", "{bad}");
    }
}
