//! The commit pipeline against a real PostgreSQL whose commits the test holds back: no write
//! is answered before its batch is durable, the writes that arrive while a batch's statements
//! are held join one next batch, and when a batch in flight fails, every batch behind it is
//! refused and rolled back, and the server rebuilds exactly the committed state.

use crate::helpers::{code, eventually, TestApp, POOL};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Bids sent at once while the journal is locked: enough for several batches.
const HELD_WRITES: usize = 60;

/// Bids sent one by one while the first batch is held.
const STAGGERED_WRITES: usize = 10;

/// How long the test holds the journal: well under the server's batch write timeout.
const HOLD: Duration = Duration::from_millis(1_500);

/// Sends `count` bids from as many buyers at once; each task answers with its status, its
/// body and when the answer came.
fn bids_at_once(app: &Arc<TestApp>, count: usize) -> JoinSet<(StatusCode, Value, Instant)> {
    let mut answers = JoinSet::new();
    for i in 0..count {
        let app = app.clone();
        answers.spawn(async move {
            let buyer = app.token(&format!("pipeline-{i}"), "buyer");
            let (status, body) = app
                .post(
                    "/v1/orders",
                    Some(&buyer),
                    json!({"pool": POOL, "gpus": 1, "price": "1.00", "duration_s": 3600}),
                )
                .await;
            (status, body, Instant::now())
        });
    }
    answers
}

/// The server's `offpeak_journal_batch_commands` count and sum: batches committed, and the
/// commands in them.
async fn batches_committed(app: &TestApp) -> (u64, u64) {
    (
        app.metric("offpeak_journal_batch_commands_count").await,
        app.metric("offpeak_journal_batch_commands_sum").await,
    )
}

async fn journal_count(db: &tokio_postgres::Client) -> i64 {
    db.query_one("SELECT count(*) FROM journal", &[])
        .await
        .unwrap()
        .get(0)
}

async fn bids_journaled(db: &tokio_postgres::Client) -> i64 {
    db.query_one(
        "SELECT count(*) FROM journal WHERE command->>'type' = 'place_bid'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_is_answered_before_its_commit_while_commits_are_held_back() {
    let app = Arc::new(TestApp::spawn().await);
    let observer = app.db().client().await;
    let mut holder = app.db().client().await;
    let journaled_before = journal_count(&observer).await;

    // Inserts into the journal wait for this transaction: every batch's commit is held.
    let hold = holder.transaction().await.unwrap();
    hold.batch_execute("LOCK TABLE journal IN SHARE MODE")
        .await
        .unwrap();
    let mut answers = bids_at_once(&app, HELD_WRITES);
    tokio::time::sleep(HOLD).await;
    assert!(
        answers.try_join_next().is_none(),
        "a write was answered while its commit was held back"
    );
    assert_eq!(journal_count(&observer).await, journaled_before);
    let released = Instant::now();
    hold.commit().await.unwrap();

    let mut acknowledged = 0;
    while let Some(answer) = answers.join_next().await {
        let (status, body, at) = answer.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert!(at >= released, "answered before the journal was released");
        acknowledged += 1;
    }
    assert_eq!(acknowledged, HELD_WRITES);
    assert_eq!(
        bids_journaled(&observer).await,
        HELD_WRITES as i64,
        "every acknowledged bid is in the journal"
    );
    let orders: i64 = observer
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, HELD_WRITES as i64);
    app.assert_served_seq_is_the_journals_end(&observer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_arriving_while_a_batch_is_written_join_one_next_batch() {
    let app = Arc::new(TestApp::spawn().await);
    let mut holder = app.db().client().await;
    let (batches_before, commands_before) = batches_committed(&app).await;

    // The first bid's batch is held in its statements (its journal insert waits for the lock).
    let hold = holder.transaction().await.unwrap();
    hold.batch_execute("LOCK TABLE journal IN SHARE MODE")
        .await
        .unwrap();
    let mut answers = bids_at_once(&app, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The rest arrive one by one while it is held: with room in the pipeline, each could have
    // been cut into a batch of its own; they wait together for the first batch to be written.
    let mut later = JoinSet::new();
    for _ in 0..STAGGERED_WRITES {
        let app = app.clone();
        later.spawn(async move { bids_at_once(&app, 1).join_next().await.unwrap().unwrap() });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    hold.commit().await.unwrap();

    let (status, body, _) = answers.join_next().await.unwrap().unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    while let Some(answer) = later.join_next().await {
        let (status, body, _) = answer.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (batches_after, commands_after) = batches_committed(&app).await;
    // Ticks the sequencer stages itself may make batches of their own.
    let others = commands_after - commands_before - 1 - STAGGERED_WRITES as u64;
    assert!(
        batches_after - batches_before <= 2 + others,
        "{} batches for {} commands ({others} of them not the test's)",
        batches_after - batches_before,
        commands_after - commands_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_in_flight_refuses_every_batch_behind_it_and_the_state_is_rebuilt() {
    let app = Arc::new(TestApp::spawn().await);
    let buyer = app.token("before", "buyer");
    let (status, body) = app.bid(&buyer, 1, "1.00").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let observer = app.db().client().await;
    let mut holder = app.db().client().await;

    let hold = holder.transaction().await.unwrap();
    hold.batch_execute("LOCK TABLE journal IN SHARE MODE")
        .await
        .unwrap();
    let mut answers = bids_at_once(&app, HELD_WRITES);
    // Wait until a batch is blocked on the lock, then end the server's batch sessions: the
    // batch at the head fails, and none behind it may commit.
    eventually(
        Duration::from_secs(10),
        "a batch waiting on the journal",
        || async {
            let waiting: i64 = observer
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND application_name = 'offpeak' AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (waiting > 0).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    observer
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'offpeak' \
             AND state <> 'idle'",
            &[],
        )
        .await
        .unwrap();
    hold.commit().await.unwrap();

    let mut refused = 0;
    let mut acknowledged = 0;
    while let Some(answer) = answers.join_next().await {
        let (status, body, _) = answer.unwrap();
        match status {
            StatusCode::CREATED => acknowledged += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                // `unavailable`: its batch, or one before it, failed; `no_leader`: it came
                // after, while this node (the leader of one) stepped down to re-take the lead.
                assert!(
                    ["unavailable", "no_leader"].contains(&code(&body)),
                    "{body}"
                );
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(refused > 0, "the failed batch's writers are refused");

    // The server rebuilds from the journal by itself (it follows the journal, then leads
    // again); then what it serves is exactly what was committed: the acknowledged bids and nothing of the refused ones.
    eventually(Duration::from_secs(20), "writes to resume", || async {
        let (status, _) = app.get("/readyz", None).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(
        bids_journaled(&observer).await,
        1 + acknowledged as i64,
        "the journal holds the acknowledged bids and no refused one"
    );
    app.assert_served_seq_is_the_journals_end(&observer).await;
    let (status, body) = app.bid(&buyer, 1, "1.00").await;
    assert_eq!(status, StatusCode::CREATED, "writes work again: {body}");
}
