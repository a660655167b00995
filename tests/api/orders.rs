//! Bids: place, idempotency, list, read, amend, cancel, every rejection, and tenant isolation.

use crate::helpers::{code, rfc3339_in, TestApp, POOL};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn bid_body(gpus: u32, price: &str) -> Value {
    json!({"pool": POOL, "gpus": gpus, "price": price, "duration_s": 3600})
}

#[tokio::test]
async fn a_bid_that_crosses_opens_a_lease_at_the_resting_price() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    let buyer = app.token("acme", "buyer");
    app.release_block(&supplier, "b1", 8, "1.50", 3).await;
    let (status, body) = app.bid(&buyer, 8, "2.00").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let order = &body["order"];
    assert!(order["id"].is_string(), "ids are strings: {order}");
    assert_eq!(order["status"], "filled");
    assert_eq!(order["filled_gpus"], 8);
    assert_eq!(order["price"], "2.00");
    assert_eq!(order["tif"], "gtc");
    assert!(order["created_at"].as_str().unwrap().ends_with('Z'));
    let leases = body["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0]["price"], "1.50");
    assert_eq!(leases[0]["gpus"], 8);
    assert_eq!(leases[0]["status"], "active");
    assert_eq!(leases[0]["order_id"], order["id"]);
    assert!(
        leases[0].get("supplier").is_none(),
        "a buyer is not told the supplier"
    );
}

#[tokio::test]
async fn a_resting_bid_is_open_listed_and_readable() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let (status, body) = app.bid(&buyer, 4, "1.25").await;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["order"]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["order"]["status"], "open");
    assert_eq!(body["leases"], json!([]));
    let (status, one) = app.get(&format!("/v1/orders/{id}"), Some(&buyer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["order"]["remaining_gpus"], 4);
    let (status, open) = app.get("/v1/orders?status=open", Some(&buyer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(open["orders"].as_array().unwrap().len(), 1);
    assert_eq!(open["orders"][0]["id"], id.as_str());
    let (_, all) = app.get("/v1/orders", Some(&buyer)).await;
    assert_eq!(all["orders"].as_array().unwrap().len(), 1);
    let (status, body) = app.get("/v1/orders?status=sleeping", Some(&buyer)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn lists_page_newest_first() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, body) = app.bid(&buyer, 1, &format!("1.0{i}")).await;
        ids.push(body["order"]["id"].as_str().unwrap().to_owned());
    }
    let (_, first) = app.get("/v1/orders?limit=2", Some(&buyer)).await;
    let page: Vec<&str> = first["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, [ids[4].as_str(), ids[3].as_str()]);
    let cursor = first["next_before"].as_str().unwrap();
    let (_, second) = app
        .get(&format!("/v1/orders?limit=2&before={cursor}"), Some(&buyer))
        .await;
    assert_eq!(second["orders"][0]["id"], ids[2].as_str());
    let (_, open_page) = app
        .get(
            &format!("/v1/orders?status=open&limit=3&before={cursor}"),
            Some(&buyer),
        )
        .await;
    assert_eq!(open_page["orders"].as_array().unwrap().len(), 3);
    for bad in ["limit=0", "limit=1001", "before=abc", "page=2"] {
        let (status, _) = app.get(&format!("/v1/orders?{bad}"), Some(&buyer)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn a_repeated_client_order_id_returns_the_first_result_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    let buyer = app.token("acme", "buyer");
    app.release_block(&supplier, "b1", 4, "1.50", 3).await;
    let mut body = bid_body(4, "2.00");
    body["client_order_id"] = json!("job-42");
    let (first_status, first) = app.post("/v1/orders", Some(&buyer), body.clone()).await;
    assert_eq!(first_status, StatusCode::CREATED, "{first}");
    let (again_status, again) = app.post("/v1/orders", Some(&buyer), body.clone()).await;
    assert_eq!(again_status, StatusCode::OK, "{again}");
    assert_eq!(again["order"]["id"], first["order"]["id"]);
    assert_eq!(again["order"]["client_order_id"], "job-42");
    assert_eq!(again["leases"], first["leases"]);
    // Nothing new: one lease, no bid resting.
    let (_, leases) = app.get("/v1/leases", Some(&buyer)).await;
    assert_eq!(leases["leases"].as_array().unwrap().len(), 1);
    let (_, book) = app.get(&format!("/v1/pools/{POOL}/book"), None).await;
    assert_eq!(book["bids"], json!([]));
    // The same key from another account is that account's own.
    let other = app.token("globex", "buyer");
    let (status, theirs) = app.post("/v1/orders", Some(&other), body).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(theirs["order"]["id"], first["order"]["id"]);
    let mut bad = bid_body(1, "1.00");
    bad["client_order_id"] = json!("has spaces in it");
    let (status, _) = app.post("/v1/orders", Some(&buyer), bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn amending_a_bid_changes_its_price_and_can_trade() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    let buyer = app.token("acme", "buyer");
    app.release_block(&supplier, "b1", 4, "1.50", 3).await;
    let (_, body) = app.bid(&buyer, 4, "1.00").await;
    let id = body["order"]["id"].as_str().unwrap().to_owned();
    let (status, amended) = app
        .patch(
            &format!("/v1/orders/{id}"),
            Some(&buyer),
            json!({"gpus": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{amended}");
    assert_eq!(amended["order"]["gpus"], 3);
    assert_eq!(amended["leases"], json!([]));
    let (status, traded) = app
        .patch(
            &format!("/v1/orders/{id}"),
            Some(&buyer),
            json!({"price": "1.60"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{traded}");
    assert_eq!(traded["order"]["status"], "filled");
    assert_eq!(traded["leases"][0]["gpus"], 3);
    let (status, body) = app
        .patch(
            &format!("/v1/orders/{id}"),
            Some(&buyer),
            json!({"price": "1.70"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a filled bid is finished: {body}"
    );
}

#[tokio::test]
async fn cancelling_takes_the_bid_off_the_book_and_into_history() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let (_, body) = app.bid(&buyer, 2, "1.00").await;
    let id = body["order"]["id"].as_str().unwrap().to_owned();
    let (status, cancelled) = app.delete(&format!("/v1/orders/{id}"), Some(&buyer)).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["order"]["status"], "cancelled");
    assert_eq!(cancelled["order"]["cancel_reason"], "by_owner");
    let (_, book) = app.get(&format!("/v1/pools/{POOL}/book"), None).await;
    assert_eq!(book["bids"], json!([]));
    // History comes from the database.
    let (status, one) = app.get(&format!("/v1/orders/{id}"), Some(&buyer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["order"]["status"], "cancelled");
    let (_, listed) = app.get("/v1/orders?status=cancelled", Some(&buyer)).await;
    assert_eq!(listed["orders"][0]["id"], id.as_str());
    let (_, open) = app.get("/v1/orders?status=open", Some(&buyer)).await;
    assert_eq!(open["orders"], json!([]));
    // Cancelling again: it is no longer a live order.
    let (status, body) = app.delete(&format!("/v1/orders/{id}"), Some(&buyer)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "unknown_order");
}

#[tokio::test]
async fn ioc_and_fok_leftovers_are_cancelled_with_their_reason() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    let buyer = app.token("acme", "buyer");
    app.release_block(&supplier, "b1", 2, "1.50", 3).await;
    let mut ioc = bid_body(4, "2.00");
    ioc["tif"] = json!("ioc");
    ioc["min_gpus"] = json!(1);
    let (status, body) = app.post("/v1/orders", Some(&buyer), ioc).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["order"]["status"], "cancelled");
    assert_eq!(body["order"]["cancel_reason"], "ioc_remainder");
    assert_eq!(body["order"]["filled_gpus"], 2);
    let mut fok = bid_body(4, "2.00");
    fok["tif"] = json!("fok");
    let (_, body) = app.post("/v1/orders", Some(&buyer), fok).await;
    assert_eq!(body["order"]["cancel_reason"], "fok_not_fillable");
    assert_eq!(body["leases"], json!([]));
}

#[tokio::test]
async fn a_gtd_bid_expires_at_its_time() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let mut gtd = bid_body(1, "1.00");
    gtd["tif"] = json!("gtd");
    gtd["expires_at"] = json!(rfc3339_in(1));
    let (status, body) = app.post("/v1/orders", Some(&buyer), gtd).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["order"]["id"].as_str().unwrap().to_owned();
    let expired = crate::helpers::eventually(
        std::time::Duration::from_secs(10),
        "the GTD bid to expire",
        || async {
            let (_, one) = app.get(&format!("/v1/orders/{id}"), Some(&buyer)).await;
            (one["order"]["status"] == "expired").then_some(one)
        },
    )
    .await;
    assert_eq!(expired["order"]["remaining_gpus"], 1);
}

#[tokio::test]
async fn every_bid_rejection_has_its_code_and_status() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            bid_body(1, "1.005"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "price_not_on_tick",
        ),
        (
            bid_body(1, "100.01"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "price_out_of_band",
        ),
        (
            bid_body(0, "1.00"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "gpus_must_not_be_zero",
        ),
        (
            bid_body(5000, "1.00"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "gpus_over_max",
        ),
        (
            json!({"pool": POOL, "gpus": 2, "min_gpus": 3, "price": "1.00", "duration_s": 3600}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "min_gpus_invalid",
        ),
        (
            json!({"pool": POOL, "gpus": 1, "price": "1.00", "duration_s": 10}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "duration_too_short",
        ),
        (
            json!({"pool": POOL, "gpus": 1, "price": "1.00", "duration_s": 3600, "max_duration_s": 99999999}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "duration_too_long",
        ),
        (
            json!({"pool": POOL, "gpus": 1, "price": "1.00", "duration_s": 3600, "max_duration_s": 600}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "max_duration_below_duration",
        ),
        (
            json!({"pool": POOL, "gpus": 1, "price": "1.00", "duration_s": 3600, "tif": "gtd"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expires_at_invalid",
        ),
        (
            json!({"pool": POOL, "gpus": 1, "price": "1.00", "duration_s": 3600, "expires_at": rfc3339_in(600)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expires_at_invalid",
        ),
        (
            json!({"pool": "tpu.mars", "gpus": 1, "price": "1.00", "duration_s": 3600}),
            StatusCode::NOT_FOUND,
            "unknown_pool",
        ),
    ];
    for (body, status, expected) in cases {
        let (got, answer) = app.post("/v1/orders", Some(&buyer), body.clone()).await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert_eq!(code(&answer), expected, "{body}");
        assert!(answer["error"]["message"].is_string());
    }
    // Nothing was created by any of them.
    let (_, all) = app.get("/v1/orders", Some(&buyer)).await;
    assert_eq!(all["orders"], json!([]));
    // Amend rejections.
    let (_, body) = app.bid(&buyer, 2, "1.00").await;
    let id = body["order"]["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .patch(&format!("/v1/orders/{id}"), Some(&buyer), json!({}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "nothing_to_change")
    );
    let (status, body) = app
        .patch(
            &format!("/v1/orders/{id}"),
            Some(&buyer),
            json!({"price": "1.0000001"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_body"),
        "{body}"
    );
    let (status, body) = app
        .patch(
            &format!("/v1/orders/{id}"),
            Some(&buyer),
            json!({"price": "1.015"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "price_not_on_tick")
    );
}

#[tokio::test]
async fn amending_gpus_to_no_more_than_filled_is_gpus_not_above_filled() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    let buyer = app.token("acme", "buyer");
    app.release_block(&supplier, "b1", 2, "1.50", 3).await;
    let body = json!({"pool": POOL, "gpus": 4, "min_gpus": 1, "price": "2.00", "duration_s": 3600});
    let (_, placed) = app.post("/v1/orders", Some(&buyer), body).await;
    assert_eq!(placed["order"]["filled_gpus"], 2, "{placed}");
    let id = placed["order"]["id"].as_str().unwrap();
    let (status, body) = app
        .patch(
            &format!("/v1/orders/{id}"),
            Some(&buyer),
            json!({"gpus": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "gpus_not_above_filled");
    // The new total, not the new remaining: 3 = 2 filled + 1 still wanted.
    let (status, body) = app
        .patch(
            &format!("/v1/orders/{id}"),
            Some(&buyer),
            json!({"gpus": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["order"]["remaining_gpus"], 1, "{body}");
}

#[tokio::test]
async fn another_tenant_cannot_read_amend_or_cancel_an_order() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", "buyer");
    let mallory = app.token("mallory", "buyer");
    let (_, body) = app.bid(&alice, 2, "1.00").await;
    let id = body["order"]["id"].as_str().unwrap().to_owned();
    let (_, missing) = app.get("/v1/orders/999999", Some(&mallory)).await;
    for (status, body) in [
        app.get(&format!("/v1/orders/{id}"), Some(&mallory)).await,
        app.patch(
            &format!("/v1/orders/{id}"),
            Some(&mallory),
            json!({"price": "9.00"}),
        )
        .await,
        app.delete(&format!("/v1/orders/{id}"), Some(&mallory))
            .await,
    ] {
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        // Indistinguishable from an order that does not exist.
        assert_eq!(body, missing);
    }
    let (_, listed) = app.get("/v1/orders", Some(&mallory)).await;
    assert_eq!(listed["orders"], json!([]));
    // Alice's order is untouched.
    let (_, mine) = app.get(&format!("/v1/orders/{id}"), Some(&alice)).await;
    assert_eq!(mine["order"]["status"], "open");
    assert_eq!(mine["order"]["price"], "1.00");
    // Cancelled orders (history, from the database) are just as private.
    app.delete(&format!("/v1/orders/{id}"), Some(&alice)).await;
    let (status, _) = app.get(&format!("/v1/orders/{id}"), Some(&mallory)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for weird in ["abc", "-1", "18446744073709551616", "1.5"] {
        let (status, body) = app.get(&format!("/v1/orders/{weird}"), Some(&alice)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{weird}: {body}");
    }
}
