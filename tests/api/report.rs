//! `GET /v1/admin/report` (DESIGN section 13) on PostgreSQL: its revenue is the `leases`
//! table's costs, its usage what the engine integrated; bad queries are 400s. The same on
//! SQLite is in `embedded.rs`.

use crate::helpers::{code, rfc3339_in, TestApp, POOL};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// A server's REST API, whichever store it runs on.
pub trait Api {
    /// `POST path` with a JSON body.
    async fn post_json(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value);
}

impl Api for TestApp {
    async fn post_json(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.post(path, Some(token), body).await
    }
}

/// Two leases of 8 GPUs at $90 that are ready for about two seconds each, then released.
pub async fn trade_two_leases(app: &impl Api) {
    let (buyer, supplier) = (
        crate::helpers::token("acme", "buyer"),
        crate::helpers::token("dc1", "supplier"),
    );
    let (status, body) = app
        .post_json(
            "/v1/capacity",
            &supplier,
            json!({"block_id": "b1", "pool": POOL, "gpus": 16, "reserve_price": "90.00",
                   "available_until": rfc3339_in(3 * 3600)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut leases = Vec::new();
    for _ in 0..2 {
        let (status, body) = app
            .post_json(
                "/v1/orders",
                &buyer,
                json!({"pool": POOL, "gpus": 8, "price": "90.00", "duration_s": 3600}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        leases.push(body["leases"][0]["id"].as_str().unwrap().to_owned());
    }
    let endpoints = json!({"endpoints": [{"host": "10.0.0.1", "port": 22, "user": "u"}]});
    for id in &leases {
        let path = format!("/v1/capacity/b1/leases/{id}/ready");
        let (status, body) = app.post_json(&path, &supplier, endpoints.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(2300)).await;
    for id in &leases {
        let path = format!("/v1/leases/{id}/release");
        let (status, body) = app.post_json(&path, &buyer, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// A report's USD string as micro-dollars.
pub fn micros(figures: &Value) -> i64 {
    let text = figures["revenue"].as_str().unwrap();
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    whole.parse::<i64>().unwrap() * 1_000_000 + format!("{frac:0<6}")[..6].parse::<i64>().unwrap()
}

/// The report's entry for [`POOL`].
pub fn pool_entry(report: &Value) -> Value {
    report["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool"] == POOL)
        .unwrap_or_else(|| panic!("{POOL} in {report}"))
        .clone()
}

#[tokio::test]
async fn the_report_agrees_with_the_leases_table_and_the_engines_usage() {
    let app = TestApp::spawn().await;
    let admin = app.token("root", "admin");
    trade_two_leases(&app).await;
    let (status, report) = app.get("/v1/admin/report?bucket=1m", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let pool = pool_entry(&report);
    let costs: i64 = app
        .db()
        .client()
        .await
        .query_one("SELECT sum(cost_micros)::int8 FROM leases", &[])
        .await
        .unwrap()
        .get(0);
    assert!(costs > 0, "the leases cost something");
    let revenue = micros;
    assert_eq!(revenue(&pool["total"]), costs, "{pool}");
    assert_eq!(revenue(&report["total"]), costs);
    let buckets_sum: i64 = pool["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(revenue)
        .sum();
    assert_eq!(buckets_sum, costs);
    assert_eq!(
        report["pools"].as_array().unwrap().len(),
        5,
        "every pool, idle ones too"
    );
    let total = &pool["total"];
    let offered = total["offered_gpu_hours"].as_f64().unwrap();
    let leased = total["leased_gpu_hours"].as_f64().unwrap();
    assert!(
        offered > 0.0 && leased > 0.0 && leased <= offered,
        "{total}"
    );
    assert!(total["utilisation"].as_f64().unwrap() > 0.5, "{total}");
    assert_eq!(total["average_price"], "90.00");
    assert_eq!(total["preemptions"], 0);
    // The usage rows are the engine's integrals, minute by minute.
    let usage: i64 = app
        .db()
        .client()
        .await
        .query_one(
            "SELECT sum(leased_gpu_ms)::int8 FROM pool_usage WHERE pool = $1",
            &[&POOL],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        (leased * 3_600_000.0 - usage as f64).abs() <= 1_800.0,
        "{leased} GPU-hours reported, {usage} GPU-ms stored"
    );

    // One pool; refusals.
    let (status, one) = app
        .get(
            &format!("/v1/admin/report?pool={POOL}&bucket=15m"),
            Some(&admin),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["pools"].as_array().unwrap().len(), 1);
    assert_eq!(one["bucket"], "15m");
    for bad in [
        "bucket=90s",
        "bucket=2d",
        "from=yesterday",
        "bucket=1m&from=2020-01-01T00:00:00Z",
    ] {
        let (status, body) = app
            .get(&format!("/v1/admin/report?{bad}"), Some(&admin))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(code(&body), "invalid_query");
    }
    let (status, _) = app
        .get("/v1/admin/report?pool=tpu.moon", Some(&admin))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let buyer = app.token("acme", "buyer");
    let (status, _) = app.get("/v1/admin/report", Some(&buyer)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The counters.
    let metrics = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "offpeak_revenue_micros_total{{pool=\"{POOL}\"}} {costs}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("offpeak_offered_gpu_seconds_total{pool="));
    assert!(metrics.contains("offpeak_leased_gpu_seconds_total{pool="));
}
