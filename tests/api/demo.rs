//! The demo market: simulated schedulers and startups produce trades and preemptions within a
//! bounded time, through the sequencer like any client (every event counted here comes from a
//! committed batch).

use crate::embedded::EmbeddedApp;
use matching_engine::{Event, LeaseStatus};
use offpeak::demo::{self, DemoOptions};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

#[tokio::test]
async fn the_demo_produces_trades_and_preemptions_quickly() {
    let app = EmbeddedApp::spawn().await;
    let mut batches = app.state.sequencer.subscribe();
    let running = demo::start(
        app.state.sequencer.clone(),
        DemoOptions {
            seed: 7,
            // A simulated day every ~17 s: the morning ramp (reclaims) comes within seconds.
            speed: 5_000.0,
            start_hour: 4.0,
        },
    )
    .expect("valid options");
    let (mut trades, mut preemptions, mut releases, mut handed_over) = (0u64, 0u64, 0u64, 0u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while trades == 0 || preemptions == 0 || handed_over == 0 {
        let batch = match tokio::time::timeout_at(deadline, batches.recv()).await {
            Ok(Ok(batch)) => batch,
            Ok(Err(RecvError::Lagged(_))) => continue,
            Ok(Err(RecvError::Closed)) => panic!("the sequencer stopped"),
            Err(_) => panic!(
                "within 120 s: {trades} trades, {preemptions} preemptions, {releases} blocks, \
                 {handed_over} leases handed over"
            ),
        };
        for record in &batch.records {
            // The schedulers' provisioners hand leases over with endpoints.
            if let matching_engine::Command::LeaseReady(ready) = &record.command {
                let has_access = !ready.endpoints.is_empty() || ready.endpoint.is_some();
                if has_access && offpeak::routes::rejection(&record.events).is_none() {
                    handed_over += 1;
                }
            }
            for event in &record.events {
                match event {
                    Event::Traded { .. } => trades += 1,
                    Event::LeaseChanged { lease } if lease.status == LeaseStatus::Preempting => {
                        preemptions += 1
                    }
                    Event::BlockChanged { .. } => releases += 1,
                    _ => {}
                }
            }
        }
    }
    let stats = running.stats();
    running.stop().await;
    assert!(stats.bids.load(Ordering::Relaxed) > 0);
    assert!(stats.trades.load(Ordering::Relaxed) > 0);
    assert!(stats.preemptions.load(Ordering::Relaxed) > 0);
    // The public market data shows it too.
    let (_, pools) = app.get("/v1/pools", None).await;
    assert!(
        pools["pools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| !p["last_price"].is_null()),
        "{pools}"
    );
    app.stop().await;
}

#[test]
fn demo_options_out_of_range_are_refused() {
    let bad = DemoOptions {
        speed: 0.0,
        ..DemoOptions::default()
    };
    assert!(bad.validate().is_err());
}
