//! Public market data: pools, book, trades, candles, stats, quote.

use crate::helpers::{code, eventually, TestApp, POOL};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn a_fresh_journal_gets_h100_and_a100_in_two_regions() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/v1/pools", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = body["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "a100-80gb.eu-west",
            "a100-80gb.us-east",
            "h100-sxm.eu-west",
            "h100-sxm.us-east",
            "llama-3.1-70b-instruct.us-east"
        ]
    );
    let pool = &body["pools"][3];
    assert_eq!(pool["tick"], "0.01");
    assert_eq!(pool["notice_s"], 120);
    assert_eq!(pool["free_if_preempted_within_s"], 3600);
    assert_eq!(pool["auction"]["kind"], "continuous");
    assert_eq!(pool["best_bid"], Value::Null);
}

#[tokio::test]
async fn pools_from_a_pools_file_replace_the_defaults() {
    let dir = std::env::temp_dir().join(format!("offpeak-pools-{:x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pools.json");
    std::fs::write(
        &file,
        r#"[{"gpu": "l40s", "region": "ap-south", "tick": "0.05", "notice_s": 300,
             "auction": {"kind": "batch", "interval_ms": 200}}]"#,
    )
    .unwrap();
    let app = TestApp::spawn_with(|env| {
        env.insert("OFFPEAK_POOLS_FILE".into(), file.display().to_string());
    })
    .await;
    let (_, body) = app.get("/v1/pools", None).await;
    let pools = body["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 1, "{body}");
    assert_eq!(pools[0]["id"], "l40s.ap-south");
    assert_eq!(pools[0]["tick"], "0.05");
    assert_eq!(pools[0]["notice_s"], 300);
    assert_eq!(
        pools[0]["auction"],
        json!({"kind": "batch", "interval_ms": 200})
    );
    let (status, body) = app.get("/v1/pools/l40s.ap-south", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_book_aggregates_levels_best_first_with_its_seq() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let other = app.token("globex", "buyer");
    let supplier = app.token("dc1", "supplier");
    assert_eq!(app.bid(&buyer, 2, "1.00").await.0, StatusCode::CREATED);
    assert_eq!(app.bid(&other, 3, "1.00").await.0, StatusCode::CREATED);
    assert_eq!(app.bid(&buyer, 1, "1.10").await.0, StatusCode::CREATED);
    app.release_block(&supplier, "b1", 4, "2.00", 3).await;
    let (status, book) = app.get(&format!("/v1/pools/{POOL}/book"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        book["bids"],
        json!([{"price": "1.10", "gpus": 1, "orders": 1}, {"price": "1.00", "gpus": 5, "orders": 2}])
    );
    assert_eq!(
        book["asks"],
        json!([{"price": "2.00", "gpus": 4, "orders": 1}])
    );
    let seq = book["seq"].as_u64().unwrap();
    assert!(seq >= 8, "{book}");
    let (_, top) = app
        .get(&format!("/v1/pools/{POOL}/book?depth=1"), None)
        .await;
    assert_eq!(top["bids"].as_array().unwrap().len(), 1);
    // The pool summary agrees.
    let (_, pool) = app.get(&format!("/v1/pools/{POOL}"), None).await;
    assert_eq!(pool["pool"]["best_bid"], "1.10");
    assert_eq!(pool["pool"]["best_ask"], "2.00");
    assert_eq!(pool["pool"]["idle_gpus"], 4);
}

#[tokio::test]
async fn book_depth_is_bounded_and_unknown_pools_are_404() {
    let app = TestApp::spawn().await;
    for bad in ["depth=101", "depth=0", "depth=-1", "depth=x", "levels=3"] {
        let (status, body) = app.get(&format!("/v1/pools/{POOL}/book?{bad}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(code(&body), "invalid_query");
    }
    let (status, _) = app
        .get(&format!("/v1/pools/{POOL}/book?depth=100"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/v1/pools/nope.nowhere",
        "/v1/pools/nope.nowhere/book",
        "/v1/pools/nope.nowhere/trades",
        "/v1/pools/nope.nowhere/candles",
        "/v1/pools/nope.nowhere/stats",
        "/v1/pools/nope.nowhere/quote?gpus=1&duration_s=3600",
    ] {
        let (status, body) = app.get(path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(code(&body), "unknown_pool", "{path}");
    }
}

/// Two trades: 4 GPUs at 1.50 and 2 GPUs at 2.50, one hour each.
async fn two_trades(app: &TestApp) {
    let supplier = app.token("dc1", "supplier");
    let buyer = app.token("acme", "buyer");
    app.release_block(&supplier, "cheap", 4, "1.50", 3).await;
    app.release_block(&supplier, "dear", 2, "2.50", 3).await;
    let (status, body) = app.bid(&buyer, 4, "3.00").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.bid(&buyer, 2, "3.00").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["leases"][0]["price"], "2.50");
}

#[tokio::test]
async fn trades_are_public_newest_first_and_name_no_one() {
    let app = TestApp::spawn().await;
    two_trades(&app).await;
    let (status, body) = app
        .get(&format!("/v1/pools/{POOL}/trades?limit=10"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let trades = body["trades"].as_array().unwrap();
    assert_eq!(trades.len(), 2, "{body}");
    assert_eq!(trades[0]["price"], "2.50");
    assert_eq!(trades[1]["price"], "1.50");
    assert_eq!(trades[1]["gpus"], 4);
    let text = body.to_string();
    for private in [
        "acme", "dc1", "buyer", "supplier", "block", "lease", "order",
    ] {
        assert!(!text.contains(private), "trades reveal {private}: {text}");
    }
    let (_, one) = app
        .get(&format!("/v1/pools/{POOL}/trades?limit=1"), None)
        .await;
    assert_eq!(one["trades"].as_array().unwrap().len(), 1);
    for bad in ["limit=0", "limit=1001"] {
        let (status, _) = app
            .get(&format!("/v1/pools/{POOL}/trades?{bad}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn candles_show_ohlc_and_gpu_hours() {
    let app = TestApp::spawn().await;
    two_trades(&app).await;
    let (status, body) = app
        .get(&format!("/v1/pools/{POOL}/candles?interval=1h"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let candles = body["candles"].as_array().unwrap();
    // Both trades happened within the same second, so in one hour candle unless the test ran
    // across an hour boundary.
    let total_gpus: u64 = candles
        .iter()
        .map(|c| c["volume_gpus"].as_u64().unwrap())
        .sum();
    assert_eq!(total_gpus, 6);
    let total_hours: f64 = candles
        .iter()
        .map(|c| c["volume_gpu_hours"].as_f64().unwrap())
        .sum();
    assert!((total_hours - 6.0).abs() < 0.01, "{body}");
    if candles.len() == 1 {
        let c = &candles[0];
        assert_eq!(
            (&c["open"], &c["high"], &c["low"], &c["close"]),
            (
                &json!("1.50"),
                &json!("2.50"),
                &json!("1.50"),
                &json!("2.50")
            )
        );
        assert_eq!(c["trades"], 2);
    }
    let (status, body) = app
        .get(&format!("/v1/pools/{POOL}/candles?interval=7m"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "invalid_query");
}

#[tokio::test]
async fn stats_report_weighted_percentiles_volume_and_preemptions() {
    let app = TestApp::spawn().await;
    two_trades(&app).await;
    let supplier = app.token("dc1", "supplier");
    // Preempt the 2.50 lease at once (emergency, no notice): it is preempted by the next tick.
    let (status, body) = app
        .post(
            "/v1/capacity/dear/reclaim",
            Some(&supplier),
            json!({"gpus": 2, "notice_s": 0, "emergency": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats: Value = eventually(
        Duration::from_secs(10),
        "the preemption in stats",
        || async {
            let (_, stats) = app
                .get(&format!("/v1/pools/{POOL}/stats?window=1h"), None)
                .await;
            (stats["leases_preempted"] == 1).then_some(stats)
        },
    )
    .await;
    assert_eq!(stats["trades"], 2, "{stats}");
    assert_eq!(stats["volume_gpus"], 6);
    // GPU-weighted: 4 of 6 GPUs traded at 1.50.
    assert_eq!(stats["price_p50"], "1.50");
    assert_eq!(stats["price_p95"], "2.50");
    assert_eq!(stats["vwap"], "1.833333");
    assert_eq!(stats["last_price"], "2.50");
    assert_eq!(stats["window_s"], 3600);
    assert_eq!(stats["leases_ended"], 1);
    assert_eq!(stats["preemption_rate"], 1.0);
    // The emergency reclaim is counted on the pool and in the metrics.
    assert_eq!(stats["emergency_reclaims"], 1, "{stats}");
    let metrics = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains(&format!(
            "offpeak_emergency_reclaims_total{{pool=\"{POOL}\"}} 1\n"
        )),
        "{metrics}"
    );
    for bad in ["window=forever", "window=10s", "window=30d"] {
        let (status, _) = app
            .get(&format!("/v1/pools/{POOL}/stats?{bad}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn a_quote_prices_a_bid_without_placing_it() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    app.release_block(&supplier, "cheap", 4, "1.50", 3).await;
    app.release_block(&supplier, "dear", 4, "2.50", 3).await;
    let (status, quote) = app
        .get(
            &format!("/v1/pools/{POOL}/quote?gpus=6&duration_s=3600"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{quote}");
    assert_eq!(quote["fillable_gpus"], 6);
    assert_eq!(quote["worst_price"], "2.50");
    // 4 * 1.50 + 2 * 2.50 for one hour.
    assert_eq!(quote["total_cost"], "11.00");
    // A block that closes before the lease would end is not eligible.
    let (_, long) = app
        .get(
            &format!("/v1/pools/{POOL}/quote?gpus=6&duration_s=36000"),
            None,
        )
        .await;
    assert_eq!(long["fillable_gpus"], 0, "{long}");
    // Nothing was placed.
    let (_, book) = app.get(&format!("/v1/pools/{POOL}/book"), None).await;
    assert_eq!(book["bids"], json!([]));
    let (status, body) = app
        .get(
            &format!("/v1/pools/{POOL}/quote?gpus=0&duration_s=3600"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&body), "gpus_must_not_be_zero");
    let (status, _) = app
        .get(&format!("/v1/pools/{POOL}/quote?gpus=1"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_quote_fills_min_gpus_or_nothing_as_matching_would() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc1", "supplier");
    app.release_block(&supplier, "only", 4, "1.50", 3).await;
    let quote = |query: &'static str| {
        let app = &app;
        async move {
            app.get(&format!("/v1/pools/{POOL}/quote?{query}"), None)
                .await
        }
    };
    let (status, all_or_none) = quote("gpus=6&duration_s=3600").await;
    assert_eq!(status, StatusCode::OK, "{all_or_none}");
    assert_eq!(all_or_none["min_gpus"], 6);
    assert_eq!(all_or_none["fillable_gpus"], 0, "{all_or_none}");
    assert_eq!(all_or_none["total_cost"], "0.00");
    assert_eq!(all_or_none["clears_at"], Value::Null);
    let (_, partial) = quote("gpus=6&min_gpus=4&duration_s=3600").await;
    assert_eq!(partial["fillable_gpus"], 4, "{partial}");
    assert_eq!(partial["average_price"], "1.50");
    assert_eq!(partial["total_cost"], "6.00");
    for bad in [
        "gpus=6&min_gpus=0&duration_s=3600",
        "gpus=6&min_gpus=7&duration_s=3600",
    ] {
        let (status, body) = quote(bad).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "min_gpus_invalid"),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_batch_pool_quote_is_the_next_uncross_price_for_every_gpu() {
    let app = TestApp::spawn().await;
    let admin = app.token("root", "admin");
    let supplier = app.token("dc1", "supplier");
    let buyer = app.token("acme", "buyer");
    // A long interval, so no uncross runs while the test looks.
    let (status, body) = app
        .put(
            &format!("/v1/admin/pools/{POOL}"),
            Some(&admin),
            json!({"gpu": "h100-sxm", "region": "us-east",
                   "auction": {"kind": "batch", "interval_ms": 3_600_000}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.release_block(&supplier, "cheap", 4, "1.00", 3).await;
    app.release_block(&supplier, "dear", 4, "1.40", 3).await;
    let (status, body) = app.bid(&buyer, 4, "1.60").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, quote) = app
        .get(
            &format!("/v1/pools/{POOL}/quote?gpus=4&duration_s=3600"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{quote}");
    // With the quote's 4 GPUs, 8 clear, which only 1.40 allows: every GPU at 1.40.
    assert_eq!(quote["fillable_gpus"], 4, "{quote}");
    assert_eq!(quote["average_price"], "1.40");
    assert_eq!(quote["worst_price"], "1.40");
    assert_eq!(quote["total_cost"], "5.60");
    assert!(quote["clears_at"].is_string(), "{quote}");
}
