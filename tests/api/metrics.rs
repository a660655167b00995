//! `/metrics`: strictly valid Prometheus text (version 0.0.4), and after some trading the
//! series of orders, trades, per-pool GPUs, journal commits, notice delivery, WebSocket clients
//! and rejections by reason carry what happened.

use crate::helpers::{eventually, TestApp, POOL};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// `{a="1",b="x\"y"}` into its pairs; `None` when malformed.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        if !is_name(key) || key.contains(':') || labels.contains_key(key) {
            return None;
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    _ => return None,
                },
                (_, '\n') => return None,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = &after[end + 1..];
        rest = match rest.strip_prefix(',') {
            Some(next) => next,
            None if rest.is_empty() => rest,
            None => return None,
        };
    }
    Some(labels)
}

/// Parses the text exposition format strictly: every line a HELP, a TYPE or a sample; each
/// family's TYPE once, before its samples, its lines together; sample names that fit the
/// family's type; no series twice; histogram buckets cumulative and ending in `+Inf` equal
/// to `_count`. Panics with the offending line.
fn parse_strict(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series: BTreeSet<String> = BTreeSet::new();
    let mut samples = Vec::new();
    let mut enter = |family: &str, line: &str, current: &mut Option<String>| {
        if current.as_deref() != Some(family) {
            if let Some(previous) = current.take() {
                finished.insert(previous);
            }
            assert!(!finished.contains(family), "{family} is split up: {line}");
            *current = Some(family.to_owned());
        }
    };
    for line in text.lines() {
        assert!(!line.is_empty(), "an empty line");
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let keyword = parts.next().unwrap();
            let family = parts.next().unwrap_or_else(|| panic!("{line}"));
            assert!(is_name(family), "{line}");
            match keyword {
                "HELP" => {
                    assert!(parts.next().is_some(), "HELP without text: {line}");
                    assert!(helps.insert(family.to_owned()), "HELP twice: {line}");
                    enter(family, line, &mut current);
                }
                "TYPE" => {
                    let kind = parts.next().unwrap_or_else(|| panic!("{line}"));
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "{line}"
                    );
                    assert!(
                        types.insert(family.to_owned(), kind.to_owned()).is_none(),
                        "TYPE twice: {line}"
                    );
                    enter(family, line, &mut current);
                }
                _ => panic!("an unknown comment: {line}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "{line}");
        let (series_text, value_text) = match line.find('}') {
            Some(close) => {
                let (head, tail) = line.split_at(close + 1);
                (
                    head,
                    tail.strip_prefix(' ').unwrap_or_else(|| panic!("{line}")),
                )
            }
            None => line.split_once(' ').unwrap_or_else(|| panic!("{line}")),
        };
        let mut value_parts = value_text.split(' ');
        let value = parse_value(value_parts.next().unwrap())
            .unwrap_or_else(|| panic!("a value that is not a number: {line}"));
        if let Some(timestamp) = value_parts.next() {
            timestamp
                .parse::<i64>()
                .unwrap_or_else(|_| panic!("a bad timestamp: {line}"));
        }
        assert!(value_parts.next().is_none(), "{line}");
        let (name, labels) = match series_text.split_once('{') {
            Some((name, labels)) => (
                name,
                parse_labels(labels.strip_suffix('}').unwrap())
                    .unwrap_or_else(|| panic!("bad labels: {line}")),
            ),
            None => (series_text, BTreeMap::new()),
        };
        assert!(is_name(name), "{line}");
        let family = current
            .clone()
            .unwrap_or_else(|| panic!("a sample before any TYPE: {line}"));
        let kind = types
            .get(&family)
            .unwrap_or_else(|| panic!("no TYPE for {family}: {line}"));
        let fits = match kind.as_str() {
            "histogram" => [
                format!("{family}_bucket"),
                format!("{family}_sum"),
                format!("{family}_count"),
            ]
            .contains(&name.to_owned()),
            _ => name == family,
        };
        assert!(fits, "{name} is not a sample of {kind} {family}: {line}");
        if name.ends_with("_bucket") {
            assert!(labels.contains_key("le"), "a bucket without le: {line}");
        }
        assert!(
            series.insert(format!("{name}{labels:?}")),
            "a series twice: {line}"
        );
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    // Histograms: per label set, buckets cumulative, the last `+Inf`, equal to `_count`.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let mut rest = s.labels.clone();
            let le = parse_value(&rest.remove("le").unwrap()).expect("le is a number");
            buckets
                .entry(format!("{rest:?}"))
                .or_default()
                .push((le, s.value));
        }
        for (labels, list) in buckets {
            assert!(
                list.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family}{labels}: buckets not cumulative: {list:?}"
            );
            let (le, total) = *list.last().unwrap();
            assert_eq!(le, f64::INFINITY, "{family}{labels}: no +Inf bucket");
            let count = samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count") && format!("{:?}", s.labels) == labels
                })
                .unwrap_or_else(|| panic!("{family}{labels}: no _count"));
            assert_eq!(
                count.value, total,
                "{family}{labels}: +Inf bucket != _count"
            );
        }
    }
    samples
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn scrape(app: &TestApp) -> Vec<Sample> {
    let response = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse_strict(&response.text().await.unwrap())
}

#[test]
fn the_strict_parser_refuses_what_prometheus_would() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert_eq!(parse_strict(ok)[0].value, 2.0);
    for bad in [
        "a_total 2\n",                                    // no TYPE
        "# TYPE a_total counter\na_total{x=\"1} 2\n",     // unterminated label
        "# TYPE a_total counter\na_total two\n",          // not a number
        "# TYPE a_total counter\nb_total 1\n",            // another family's sample
        "# TYPE a_total counter\na_total 1\na_total 2\n", // the same series twice
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\n", // +Inf != count
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_strict(bad)).is_err(),
            "accepted: {bad:?}"
        );
    }
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_the_trading() {
    let app = TestApp::spawn().await;
    let supplier = app.token("dc-1", "supplier");
    let buyer = app.token("startup-1", "buyer");
    let before = scrape(&app).await;
    assert_eq!(
        value(&before, "offpeak_pool_idle_gpus", &[("pool", POOL)]),
        Some(0.0)
    );
    assert_eq!(value(&before, "offpeak_ws_connections", &[]), Some(0.0));

    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/v1/ws", app.port))
        .await
        .expect("a WebSocket client");
    app.release_block(&supplier, "night-1", 16, "1.10", 8).await;
    let (status, body) = app.bid(&buyer, 8, "1.25").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.bid(&buyer, 2, "0.50").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = app.bid(&buyer, 1, "1.234").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.get("/v1/orders", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // 8 unsold GPUs come off the book, the 8-GPU lease gets notice.
    let (status, body) = app
        .post(
            "/v1/capacity/night-1/reclaim",
            Some(&supplier),
            json!({"gpus": 16}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reclaim"]["leases_preempted"], 1, "{body}");

    let samples = eventually(
        Duration::from_secs(10),
        "notices timed to ws and bus",
        || {
            let app = &app;
            async move {
                let samples = scrape(app).await;
                let ws = value(
                    &samples,
                    "offpeak_notice_delivery_seconds_count",
                    &[("to", "ws")],
                );
                let bus = value(
                    &samples,
                    "offpeak_notice_delivery_seconds_count",
                    &[("to", "bus")],
                );
                (ws == Some(1.0) && bus == Some(1.0)).then_some(samples)
            }
        },
    )
    .await;
    let pool = [("pool", POOL)];
    assert_eq!(value(&samples, "offpeak_orders_total", &pool), Some(2.0));
    assert_eq!(value(&samples, "offpeak_trades_total", &pool), Some(1.0));
    assert_eq!(
        value(&samples, "offpeak_traded_gpus_total", &pool),
        Some(8.0)
    );
    assert_eq!(value(&samples, "offpeak_notices_total", &pool), Some(1.0));
    assert_eq!(value(&samples, "offpeak_pool_idle_gpus", &pool), Some(0.0));
    assert_eq!(
        value(&samples, "offpeak_pool_leased_gpus", &pool),
        Some(8.0)
    );
    assert_eq!(
        value(&samples, "offpeak_pool_reclaiming_gpus", &pool),
        Some(8.0)
    );
    assert_eq!(
        value(&samples, "offpeak_pool_resting_bids", &pool),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "offpeak_rejections_total",
            &[("reason", "price_not_on_tick")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "offpeak_api_errors_total",
            &[("code", "price_not_on_tick")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "offpeak_api_errors_total",
            &[("code", "unauthorized")]
        ),
        Some(1.0)
    );
    let batches = value(&samples, "offpeak_batches_total", &[]).unwrap();
    assert!(batches >= 5.0, "{batches} batches");
    assert_eq!(
        value(&samples, "offpeak_journal_commit_seconds_count", &[]),
        Some(batches)
    );
    assert_eq!(
        value(&samples, "offpeak_journal_batch_commands_count", &[]),
        Some(batches)
    );
    assert_eq!(
        value(&samples, "offpeak_journal_batch_commands_sum", &[]),
        value(&samples, "offpeak_commands_total", &[])
    );
    assert_eq!(value(&samples, "offpeak_ws_connections", &[]), Some(1.0));
    drop(ws);
}
