//! Input at the boundary: bodies, prices, timestamps, sizes, content types, the rate limit.
//! Bad input is a 4xx with a code and a message, never a 500.

use crate::helpers::{code, TestApp, POOL};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn unknown_fields_are_refused_with_their_name() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let (status, body) = app
        .post(
            "/v1/orders",
            Some(&buyer),
            json!({"pool": POOL, "gpus": 1, "price": "1.00", "duration_s": 3600, "leverage": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "invalid_body");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("leverage"),
        "{body}"
    );
    let supplier = app.token("dc1", "supplier");
    let (status, _) = app
        .post(
            "/v1/capacity/x/reclaim",
            Some(&supplier),
            json!({"gpus": 1, "force": true}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn prices_are_exact_decimals_never_rounded() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let place = |price: serde_json::Value| {
        let app = &app;
        let buyer = buyer.clone();
        async move {
            app.post(
                "/v1/orders",
                Some(&buyer),
                json!({"pool": POOL, "gpus": 1, "price": price, "duration_s": 3600}),
            )
            .await
        }
    };
    // A JSON number is read from its text.
    let (status, body) = place(json!(1.25)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["order"]["price"], "1.25");
    let raw = r#"{"pool": "h100-sxm.us-east", "gpus": 1, "price": 1.2500000000000001, "duration_s": 3600}"#;
    let response = app
        .http
        .post(format!("{}/v1/orders", app.address))
        .bearer_auth(&buyer)
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "f64 would have said 1.25"
    );
    for bad in [
        json!("1.2500001"),
        json!("-1"),
        json!("1e2"),
        json!("abc"),
        json!(""),
        json!(true),
        json!([1]),
    ] {
        let (status, body) = place(bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(code(&body), "invalid_body");
    }
    // Six decimals parse; off the tick they are the engine's refusal, not rounding.
    let (status, body) = place(json!("1.000001")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "price_not_on_tick")
    );
}

#[tokio::test]
async fn malformed_json_wrong_types_and_wrong_content_type_are_refused() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let send = |body: &'static str, content_type: &'static str| {
        let request = app
            .http
            .post(format!("{}/v1/orders", app.address))
            .bearer_auth(&buyer)
            .header("content-type", content_type)
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body)
        }
    };
    let (status, body) = send("{not json", "application/json").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_body")
    );
    let (status, body) = send(
        r#"{"pool": "h100-sxm.us-east", "gpus": -1, "price": "1.00", "duration_s": 3600}"#,
        "application/json",
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_body")
    );
    let (status, body) = send(
        r#"{"pool": "h100-sxm.us-east", "gpus": 1, "price": "1.00", "duration_s": 3600, "tif": "forever"}"#,
        "application/json",
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_body")
    );
    let (status, body) = send(r#"{"pool": "h100-sxm.us-east"}"#, "application/json").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_body")
    );
    let (status, body) = send("gpus=1", "application/x-www-form-urlencoded").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    let nodes: Vec<_> = (0..3000)
        .map(|i| json!({"node": format!("rack-{i:05}-node-with-a-long-name"), "gpus": 1}))
        .collect();
    let (status, body) = app
        .post(
            "/v1/capacity",
            Some(&supplier),
            json!({"block_id": "huge", "pool": POOL, "gpus": 3000, "reserve_price": "1.00",
                   "available_until": crate::helpers::rfc3339_in(7200), "nodes": nodes}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(code(&body), "body_too_large");
}

#[tokio::test]
async fn timestamps_must_be_rfc3339() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    for bad in [json!("tomorrow"), json!(1_900_000_000), json!("2030-01-01")] {
        let (status, body) = app
            .post(
                "/v1/capacity",
                Some(&supplier),
                json!({"block_id": "b", "pool": POOL, "gpus": 1, "reserve_price": "1.00",
                       "available_until": bad}),
            )
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_body"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn the_rate_limit_is_per_account_with_retry_after() {
    let app = TestApp::spawn_with(|env| {
        env.insert("OFFPEAK_RATE_LIMIT_PER_S".into(), "1".into());
        env.insert("OFFPEAK_RATE_LIMIT_BURST".into(), "3".into());
    })
    .await;
    let acme = app.token("acme", "buyer");
    for _ in 0..3 {
        let (status, _) = app.get("/v1/orders", Some(&acme)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let response = app
        .http
        .get(format!("{}/v1/orders", app.address))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(code(&body), "rate_limited");
    // Another account is not affected; public market data is not rate limited per account.
    let globex = app.token("globex", "buyer");
    assert_eq!(app.get("/v1/orders", Some(&globex)).await.0, StatusCode::OK);
}

/// Every list cursor a client can send, under both names, that no resource id has the shape
/// of: a NUL (which PostgreSQL refuses inside text), stray bytes, an overlong name.
const BAD_CURSORS: [&str; 5] = ["%00b%C3%84", "%00", "b1%00", "%C3%84", "caf%C3%A9"];

/// Checks the list cursors of `/v1/orders`, `/v1/leases` and `/v1/capacity` on the server at
/// `address`: a cursor that cannot be an id of the listed resource is 400 `invalid_query`
/// before anything reaches the store, under `before` and `after` alike.
async fn cursors_are_checked_at_the_boundary(address: &str) {
    let http = reqwest::Client::new();
    let buyer = crate::helpers::token("acme", "buyer");
    let supplier = crate::helpers::token("dc1", "supplier");
    let get = |path: String, token: &str| {
        let request = http.get(format!("{address}{path}")).bearer_auth(token);
        async move {
            let response = request.send().await.expect("request sent");
            let status = response.status();
            let body: serde_json::Value = response.json().await.expect("a JSON body");
            (status, body)
        }
    };
    let lists = [
        ("/v1/orders", &buyer, "abc"),
        ("/v1/leases", &buyer, "-1"),
        ("/v1/capacity", &supplier, "no spaces"),
    ];
    for (list, token, wrong_shape) in lists {
        let overlong = "x".repeat(65);
        let shapes = BAD_CURSORS.iter().map(|s| s.to_string()).chain([
            wrong_shape.replace(' ', "%20"),
            overlong,
            String::new(),
        ]);
        for bad in shapes {
            for name in ["before", "after"] {
                let (status, body) = get(format!("{list}?{name}={bad}"), token).await;
                assert_eq!(
                    status,
                    StatusCode::BAD_REQUEST,
                    "{list}?{name}={bad}: {body}"
                );
                assert_eq!(code(&body), "invalid_query", "{list}?{name}={bad}: {body}");
            }
        }
        let good = if list == "/v1/capacity" { "b1" } else { "1" };
        let (status, body) = get(format!("{list}?before={good}&after={good}"), token).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{list}: both cursors: {body}"
        );
        assert_eq!(code(&body), "invalid_query");
        for name in ["before", "after"] {
            let (status, body) = get(format!("{list}?{name}={good}"), token).await;
            assert_eq!(status, StatusCode::OK, "{list}?{name}={good}: {body}");
        }
    }
}

#[tokio::test]
async fn list_cursors_are_checked_at_the_boundary_on_postgres() {
    let app = TestApp::spawn().await;
    cursors_are_checked_at_the_boundary(&app.address).await;
}

#[tokio::test]
async fn list_cursors_are_checked_at_the_boundary_on_sqlite() {
    let app = crate::embedded::EmbeddedApp::spawn().await;
    cursors_are_checked_at_the_boundary(&app.address).await;
    app.stop().await;
}

#[tokio::test]
async fn after_is_the_same_cursor_as_before() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    for id in ["b1", "b2", "b3"] {
        app.release_block(&supplier, id, 1, "1.50", 3).await;
    }
    let (status, first) = app.get("/v1/capacity?limit=2", Some(&supplier)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["next_after"], "b2", "{first}");
    for name in ["after", "before"] {
        let (status, next) = app
            .get(&format!("/v1/capacity?limit=2&{name}=b2"), Some(&supplier))
            .await;
        assert_eq!(status, StatusCode::OK, "{next}");
        let ids: Vec<&str> = next["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["block_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["b3"], "{name}: {next}");
    }
    let buyer = app.token("acme", "buyer");
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, body) = app.bid(&buyer, 1, &format!("1.0{i}")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["order"]["id"].as_str().unwrap().to_owned());
    }
    for name in ["after", "before"] {
        let (status, page) = app
            .get(&format!("/v1/orders?{name}={}", ids[2]), Some(&buyer))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let listed: Vec<&str> = page["orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, [ids[1].as_str(), ids[0].as_str()], "{name}: {page}");
    }
}
