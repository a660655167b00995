//! Liveness, readiness, metrics, and the JSON 404.

use crate::helpers::{code, TestApp};
use reqwest::StatusCode;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn readyz_reports_the_database_up_and_writes_accepted() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["database"], "up");
    assert_eq!(body["writes"], "accepting");
    // The four default pools were journaled at start.
    assert!(body["seq"].as_u64().unwrap() >= 4, "{body}");
}

#[tokio::test]
async fn metrics_count_committed_commands() {
    let app = TestApp::spawn().await;
    let buyer = app.token("acme", "buyer");
    let (status, _) = app.bid(&buyer, 1, "1.00").await;
    assert_eq!(status, StatusCode::CREATED);
    let response = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let commands: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("offpeak_commands_total "))
        .expect("offpeak_commands_total")
        .parse()
        .unwrap();
    assert!(commands >= 5, "{text}");
    assert!(text.contains("offpeak_writes_available 1"), "{text}");
}

#[tokio::test]
async fn unknown_paths_and_methods_are_json_errors() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/v1/nothing-here", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "not_found");
    let (status, body) = app.delete("/v1/pools", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(code(&body), "method_not_allowed");
}

#[tokio::test]
async fn an_idle_server_journals_ticks_so_engine_time_follows_the_clock() {
    let app = TestApp::spawn_with(|env| {
        env.insert("OFFPEAK_IDLE_TICK_MS".into(), "200".into());
    })
    .await;
    let admin = app.token("root", "admin");
    let (_, first) = app.get("/v1/admin/state-hash", Some(&admin)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let (_, later) = app.get("/v1/admin/state-hash", Some(&admin)).await;
    let ticks = later["seq"].as_u64().unwrap() - first["seq"].as_u64().unwrap();
    assert!(
        (2..=10).contains(&ticks),
        "about one tick per 200 ms idle: {ticks}"
    );
    assert!(later["engine_now"].as_str().unwrap() > first["engine_now"].as_str().unwrap());
}
