//! The store conformance suite: the same test functions run against PostgreSQL (a fresh
//! database each) and the embedded SQLite store (a fresh data directory each), through the
//! `Store` trait only. The rows come from the real engine applying real commands, so what is
//! checked is that each backend gives back exactly what the engine produced.
//!
//! Each test is an `async fn(&dyn Store)`; `conformance!` instantiates it once per backend, as
//! `store_conformance::postgres::<name>` and `store_conformance::sqlite::<name>`.

use matching_engine::{
    BlockStatus, Command, Engine, Event, Handoff, LeaseId, LeaseStatus, LeaseView, OrderId,
    OrderStatus, OrderView, PlaceBid, PoolConfig, PriceMicros, ReclaimCapacity, ReleaseCapacity,
    TimeInForce, TimeMs,
};
use offpeak::journal::EntryId;
use offpeak::journal::{CommandRecord, CommittedBatch};
use offpeak::store::{AppliedSignal, BatchRows, ListFilter, Store, StoreError, StoredSnapshot};
use std::collections::BTreeMap;
use std::sync::Arc;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    // The database outlives the store (locals drop in reverse order).
                    let db = crate::helpers::TestDb::create().await;
                    let store = offpeak::store::postgres::connect(&db.url()).expect("store");
                    store.migrate().await.expect("migrations");
                    super::$name(&*store).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let store = offpeak::store::sqlite::open(dir.path()).expect("store");
                    store.migrate().await.expect("migrations");
                    super::$name(&*store).await;
                }
            )*
        }
    };
}

conformance!(
    migrations_run_again_without_effect,
    the_journal_comes_back_in_order_from_any_position,
    a_failed_batch_leaves_nothing_behind,
    the_newest_snapshot_wins_and_a_repeated_one_is_ignored,
    orders_are_upserted_and_listed_newest_first_per_account,
    leases_follow_their_status_and_stay_private_to_their_buyer,
    blocks_are_listed_by_block_id_per_supplier,
    market_history_keeps_the_newest_trades_per_pool_and_lease_minutes,
    lease_events_come_back_in_commit_order_with_their_lease,
    a_capacity_signal_is_recorded_once,
    values_beyond_the_column_range_are_refused_not_wrapped,
);

const POOL: &str = "h100-sxm.us-east";
const OTHER_POOL: &str = "a100-80gb.eu-west";
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const HOUR_MS: i64 = 3_600_000;

/// The real engine, stamping commands with increasing times and sequence numbers.
struct Market {
    engine: Engine,
    seq: u64,
    now: TimeMs,
}

impl Market {
    /// A market with two pools, their configuration committed as the first batch (seq 1, 2).
    async fn open(store: &dyn Store) -> Market {
        let mut market = Market {
            engine: Engine::new(),
            seq: 0,
            now: TimeMs(T0),
        };
        commit(
            store,
            &mut market,
            vec![
                // Leases here are ready when they open: the store is under test, not the handoff.
                Command::ConfigurePool(PoolConfig {
                    handoff: Handoff::None,
                    ..PoolConfig::with_defaults("h100-sxm", "us-east")
                }),
                Command::ConfigurePool(PoolConfig {
                    handoff: Handoff::None,
                    ..PoolConfig::with_defaults("a100-80gb", "eu-west")
                }),
            ],
        )
        .await;
        market
    }

    /// Applies commands one second apart and returns the batch they make.
    fn batch(&mut self, commands: Vec<Command>) -> CommittedBatch {
        let mut records = Vec::new();
        for command in commands {
            self.now = TimeMs(self.now.0 + 1_000);
            self.seq += 1;
            let mut events = Vec::new();
            self.engine.apply(self.now, &command, &mut events);
            records.push(CommandRecord {
                seq: self.seq,
                at: self.now,
                command,
                signal: None,
                events,
            });
        }
        CommittedBatch {
            records,
            usage: Vec::new(),
        }
    }

    fn advance(&mut self, ms: i64) {
        self.now = TimeMs(self.now.0 + ms);
    }
}

fn rows(batch: &CommittedBatch) -> BatchRows {
    BatchRows::from_batch(batch).expect("rows")
}

async fn commit(store: &dyn Store, market: &mut Market, commands: Vec<Command>) -> CommittedBatch {
    let batch = market.batch(commands);
    store
        .write_batch(&rows(&batch))
        .await
        .expect("batch commits");
    batch
}

fn bid(account: &str, pool: &str, gpus: u32, price_cents: u64) -> Command {
    Command::PlaceBid(PlaceBid {
        account: account.to_owned(),
        pool: pool.to_owned(),
        gpus,
        min_gpus: None,
        price: PriceMicros(price_cents * 10_000),
        duration_s: 3600,
        max_duration_s: None,
        tif: TimeInForce::Gtc,
        expires_at: None,
        persistent: false,
        client_order_id: None,
        ssh_public_keys: Vec::new(),
    })
}

fn release(
    market: &Market,
    supplier: &str,
    block: &str,
    pool: &str,
    gpus: u32,
    cents: u64,
) -> Command {
    Command::ReleaseCapacity(ReleaseCapacity {
        supplier: supplier.to_owned(),
        block_id: block.to_owned(),
        pool: pool.to_owned(),
        gpus,
        reserve_price: PriceMicros(cents * 10_000),
        available_from: None,
        available_until: TimeMs(market.now.0 + 6 * HOUR_MS),
        nodes: Vec::new(),
    })
}

fn reclaim(supplier: &str, block: &str, gpus: u32) -> Command {
    Command::ReclaimCapacity(ReclaimCapacity {
        supplier: supplier.to_owned(),
        block_id: block.to_owned(),
        gpus,
        notice_s: None,
        emergency: false,
    })
}

fn orders_in(batch: &CommittedBatch) -> Vec<OrderView> {
    let mut latest = BTreeMap::new();
    for record in &batch.records {
        for event in &record.events {
            if let Event::BidAccepted { order } | Event::OrderChanged { order } = event {
                latest.insert(order.id, order.clone());
            }
        }
    }
    latest.into_values().collect()
}

fn leases_in(batch: &CommittedBatch) -> Vec<LeaseView> {
    let mut latest = BTreeMap::new();
    for record in &batch.records {
        for event in &record.events {
            if let Event::LeaseOpened { lease } | Event::LeaseChanged { lease } = event {
                latest.insert(lease.id, LeaseView::clone(lease));
            }
        }
    }
    latest.into_values().collect()
}

fn filter(status: Option<&str>, cursor: Option<&str>, limit: usize) -> ListFilter {
    ListFilter {
        status: status.map(str::to_owned),
        cursor: cursor.map(str::to_owned),
        limit,
    }
}

async fn migrations_run_again_without_effect(store: &dyn Store) {
    store
        .migrate()
        .await
        .expect("a second migration run is a no-op");
    store.ping().await.expect("ping");
    assert!(store.latest_snapshot().await.unwrap().is_none());
    assert!(store.journal_after(0, 10).await.unwrap().is_empty());
    assert!(store
        .orders("acme", &filter(None, None, 10))
        .await
        .unwrap()
        .is_empty());
}

async fn the_journal_comes_back_in_order_from_any_position(store: &dyn Store) {
    let mut market = Market::open(store).await;
    for commands in [
        vec![bid("acme", POOL, 4, 120)],
        vec![Command::Tick, bid("globex", POOL, 2, 110)],
        vec![bid("acme", OTHER_POOL, 1, 90)],
    ] {
        commit(store, &mut market, commands).await;
    }
    let all = store.journal_after(0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    let page = store.journal_after(2, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert!(store.journal_after(6, 10).await.unwrap().is_empty());
    // Replaying the journal, times included, rebuilds the engine exactly.
    let mut replayed = Engine::new();
    let mut scratch = Vec::new();
    for entry in &all {
        let command: Command = serde_json::from_str(&entry.command_json).expect("command json");
        replayed.apply(entry.at, &command, &mut scratch);
    }
    assert_eq!(replayed.state_hash(), market.engine.state_hash());
    assert_eq!(all.last().map(|e| e.at), Some(market.now));
}

async fn a_failed_batch_leaves_nothing_behind(store: &dyn Store) {
    let mut market = Market::open(store).await;
    let first = commit(store, &mut market, vec![bid("acme", POOL, 4, 120)]).await;
    let order = orders_in(&first)[0].clone();
    // The next batch repeats a journal seq: its other rows must not be written either.
    let failing = market.batch(vec![
        bid("acme", POOL, 2, 130),
        Command::CancelBid {
            account: "acme".into(),
            order_id: order.id,
        },
    ]);
    let mut bad = rows(&failing);
    bad.journal.push(bad.journal[0].clone());
    let error = store
        .write_batch(&bad)
        .await
        .expect_err("a repeated seq fails the batch");
    assert!(matches!(error, StoreError::Query(_)), "{error:?}");
    let journal = store.journal_after(0, 100).await.unwrap();
    assert_eq!(journal.last().map(|e| e.seq), Some(first.last_seq()));
    let stored = store
        .order("acme", order.id)
        .await
        .unwrap()
        .expect("first order");
    assert_eq!(
        stored.status,
        OrderStatus::Open,
        "the cancel was not written"
    );
    assert_eq!(
        store
            .orders("acme", &filter(None, None, 10))
            .await
            .unwrap()
            .len(),
        1
    );
    // And the store still works afterwards.
    store
        .write_batch(&rows(&failing))
        .await
        .expect("the batch itself is fine");
    assert_eq!(
        store
            .orders("acme", &filter(None, None, 10))
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn the_newest_snapshot_wins_and_a_repeated_one_is_ignored(store: &dyn Store) {
    let older = StoredSnapshot {
        seq: 5,
        state_hash: 1,
        state: b"five".to_vec(),
    };
    // A hash with the top bit set must come back as the same 64 bits.
    let newer = StoredSnapshot {
        seq: 9,
        state_hash: u64::MAX - 7,
        state: vec![0, 159, 146, 150, 255],
    };
    store.write_snapshot(&older).await.unwrap();
    store.write_snapshot(&newer).await.unwrap();
    store
        .write_snapshot(&StoredSnapshot {
            seq: 9,
            state_hash: 3,
            state: b"again".to_vec(),
        })
        .await
        .expect("a repeated snapshot seq is not an error");
    let latest = store.latest_snapshot().await.unwrap().expect("snapshot");
    assert_eq!(
        (latest.seq, latest.state_hash, latest.state),
        (newer.seq, newer.state_hash, newer.state)
    );
}

async fn orders_are_upserted_and_listed_newest_first_per_account(store: &dyn Store) {
    let mut market = Market::open(store).await;
    let placed = commit(
        store,
        &mut market,
        vec![
            bid("acme", POOL, 4, 120),
            bid("acme", POOL, 2, 110),
            bid("globex", POOL, 1, 100),
            bid("acme", OTHER_POOL, 8, 95),
        ],
    )
    .await;
    let ids: Vec<OrderId> = orders_in(&placed).iter().map(|o| o.id).collect();
    let (a1, a2, g1, a3) = (ids[0], ids[1], ids[2], ids[3]);
    market.advance(60_000);
    let cancelled = commit(
        store,
        &mut market,
        vec![Command::CancelBid {
            account: "acme".into(),
            order_id: a2,
        }],
    )
    .await;
    let cancelled_view = orders_in(&cancelled)[0].clone();
    assert_eq!(cancelled_view.status, OrderStatus::Cancelled);

    // Every row reads back exactly as the engine's latest view.
    assert_eq!(store.order("acme", a2).await.unwrap(), Some(cancelled_view));
    for id in [a1, a3] {
        assert_eq!(
            store.order("acme", id).await.unwrap(),
            market.engine.order(id),
            "order {id}"
        );
    }
    // Another account's order is not there for this one.
    assert_eq!(store.order("acme", g1).await.unwrap(), None);
    assert_eq!(store.order("globex", a1).await.unwrap(), None);
    assert_eq!(store.order("acme", OrderId(u64::MAX)).await.unwrap(), None);

    let all = store.orders("acme", &filter(None, None, 10)).await.unwrap();
    assert_eq!(
        all.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![a3, a2, a1]
    );
    let open = store
        .orders("acme", &filter(Some("open"), None, 10))
        .await
        .unwrap();
    assert_eq!(open.iter().map(|o| o.id).collect::<Vec<_>>(), vec![a3, a1]);
    let gone = store
        .orders("acme", &filter(Some("cancelled"), None, 10))
        .await
        .unwrap();
    assert_eq!(gone.iter().map(|o| o.id).collect::<Vec<_>>(), vec![a2]);
    let page = store
        .orders("acme", &filter(None, Some(&a3.to_string()), 1))
        .await
        .unwrap();
    assert_eq!(page.iter().map(|o| o.id).collect::<Vec<_>>(), vec![a2]);
    assert!(store
        .orders("acme", &filter(None, Some("not-an-id"), 10))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .orders("globex", &filter(None, None, 10))
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn leases_follow_their_status_and_stay_private_to_their_buyer(store: &dyn Store) {
    let mut market = Market::open(store).await;
    let supply = release(&market, "dc1", "b1", POOL, 8, 100);
    commit(store, &mut market, vec![supply]).await;
    let traded = commit(
        store,
        &mut market,
        vec![bid("acme", POOL, 4, 150), bid("globex", POOL, 2, 150)],
    )
    .await;
    let opened = leases_in(&traded);
    assert_eq!(opened.len(), 2, "both bids traded");
    let (acme_lease, globex_lease) = (opened[0].clone(), opened[1].clone());
    assert_eq!(&*acme_lease.buyer, "acme");
    assert_eq!(
        store.lease("acme", acme_lease.id).await.unwrap(),
        Some(acme_lease.clone())
    );
    assert_eq!(store.lease("globex", acme_lease.id).await.unwrap(), None);
    assert_eq!(
        store
            .leases_of_order("acme", acme_lease.order_id)
            .await
            .unwrap(),
        vec![acme_lease.clone()]
    );
    assert!(store
        .leases_of_order("globex", acme_lease.order_id)
        .await
        .unwrap()
        .is_empty());

    // The supplier takes the whole block back: both leases get notice, then end.
    market.advance(10 * 60_000);
    let reclaimed = commit(store, &mut market, vec![reclaim("dc1", "b1", 8)]).await;
    let noticed = leases_in(&reclaimed);
    assert!(noticed.iter().all(|l| l.status == LeaseStatus::Preempting));
    let notice_ends = noticed[0].notice_ends_at.expect("notice end");
    assert_eq!(
        store
            .lease("acme", acme_lease.id)
            .await
            .unwrap()
            .map(|l| l.status),
        Some(LeaseStatus::Preempting)
    );
    let preempting = store
        .leases("globex", &filter(Some("preempting"), None, 10))
        .await
        .unwrap();
    assert_eq!(preempting.len(), 1);
    assert_eq!(preempting[0].id, globex_lease.id);
    assert_eq!(preempting[0].notice_ends_at, Some(notice_ends));

    market.now = TimeMs(notice_ends.0);
    let ended = commit(store, &mut market, vec![Command::Tick]).await;
    for lease in leases_in(&ended) {
        assert_eq!(lease.status, LeaseStatus::Preempted);
        let stored = store.lease(&lease.buyer, lease.id).await.unwrap();
        assert_eq!(stored, Some(lease.clone()), "lease {}", lease.id);
    }
    let acme = store.leases("acme", &filter(None, None, 10)).await.unwrap();
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0].status, LeaseStatus::Preempted);
    assert!(acme[0].ended_at.is_some());
    assert!(store
        .leases("acme", &filter(Some("active"), None, 10))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .leases("acme", &filter(None, Some(&acme_lease.id.to_string()), 10))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.lease("acme", LeaseId(999_999)).await.unwrap(), None);
}

async fn blocks_are_listed_by_block_id_per_supplier(store: &dyn Store) {
    let mut market = Market::open(store).await;
    let commands = vec![
        release(&market, "dc1", "b-2", POOL, 8, 100),
        release(&market, "dc1", "b-10", POOL, 8, 100),
        release(&market, "dc1", "a-1", OTHER_POOL, 16, 90),
        release(&market, "dc2", "b-2", POOL, 4, 100),
    ];
    commit(store, &mut market, commands).await;
    commit(store, &mut market, vec![reclaim("dc1", "b-10", 8)]).await;
    let listed = store.blocks("dc1", &filter(None, None, 10)).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|b| &*b.block_id).collect();
    assert_eq!(ids, vec!["a-1", "b-10", "b-2"], "byte order of block ids");
    for block in &listed {
        assert_eq!(
            Some(block.clone()),
            market.engine.block("dc1", &block.block_id),
            "block {}",
            block.block_id
        );
    }
    let reclaimed = store.block("dc1", "b-10").await.unwrap().expect("block");
    assert_eq!(reclaimed.gpus_reclaimed + reclaimed.gpus_reclaiming, 8);
    let after = store
        .blocks("dc1", &filter(None, Some("a-1"), 1))
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|b| &*b.block_id).collect::<Vec<_>>(),
        vec!["b-10"]
    );
    let open = store
        .blocks("dc1", &filter(Some("open"), None, 10))
        .await
        .unwrap();
    assert!(open.iter().all(|b| b.status == BlockStatus::Open));
    let dc2 = store
        .block("dc2", "b-2")
        .await
        .unwrap()
        .expect("dc2's own b-2");
    assert_eq!(dc2.gpus, 4);
    assert_eq!(store.block("dc2", "a-1").await.unwrap(), None);
    assert!(store
        .blocks("dc3", &filter(None, None, 10))
        .await
        .unwrap()
        .is_empty());
}

async fn market_history_keeps_the_newest_trades_per_pool_and_lease_minutes(store: &dyn Store) {
    let mut market = Market::open(store).await;
    let supply = vec![
        release(&market, "dc1", "h", POOL, 64, 100),
        release(&market, "dc1", "a", OTHER_POOL, 64, 80),
    ];
    commit(store, &mut market, supply).await;
    let mut trades = Vec::new();
    let mut leases = Vec::new();
    for round in 0..3u32 {
        market.advance(90_000);
        let batch = commit(
            store,
            &mut market,
            vec![
                bid("acme", POOL, 1 + round, 150),
                bid("globex", OTHER_POOL, 2, 150),
            ],
        )
        .await;
        for record in &batch.records {
            for event in &record.events {
                if let Event::Traded { trade } = event {
                    trades.push(trade.clone());
                }
            }
        }
        leases.extend(leases_in(&batch));
    }
    assert_eq!(trades.len(), 6);
    // A lease ends, so the ended counts have something to count.
    let first = leases[0].clone();
    market.advance(30_000);
    commit(
        store,
        &mut market,
        vec![Command::ReleaseLease {
            account: first.buyer.to_string(),
            lease_id: first.id,
        }],
    )
    .await;

    let history = store.market_history(TimeMs(T0), 2).await.unwrap();
    let mut expected: Vec<(String, u64, u32)> = Vec::new();
    for pool in [POOL, OTHER_POOL] {
        let of_pool: Vec<_> = trades.iter().filter(|t| &*t.pool == pool).collect();
        for t in &of_pool[of_pool.len() - 2..] {
            expected.push((pool.to_owned(), t.id.0, t.gpus));
        }
    }
    expected.sort_by_key(|(_, id, _)| *id);
    let got: Vec<(String, u64, u32)> = history
        .trades
        .iter()
        .map(|(pool, t)| (pool.clone(), t.id, t.gpus))
        .collect();
    assert_eq!(got, expected, "two newest per pool, oldest first");
    let newest = trades.last().unwrap();
    let (_, public) = history.trades.last().unwrap();
    assert_eq!((public.price, public.at), (newest.price, newest.at));

    // A `since` after every trade leaves none.
    let later = store
        .market_history(TimeMs(market.now.0 + 1), 10)
        .await
        .unwrap();
    assert!(later.trades.is_empty());

    let mut minutes: BTreeMap<(String, i64), (u64, u64, u64)> = BTreeMap::new();
    for m in &history.lease_minutes {
        let entry = minutes.entry((m.pool.clone(), m.minute)).or_default();
        entry.0 += m.gpu_seconds_started;
        entry.1 += m.ended;
        entry.2 += m.preempted;
    }
    let mut expected: BTreeMap<(String, i64), (u64, u64, u64)> = BTreeMap::new();
    for opened in &leases {
        let lease = store
            .lease(&opened.buyer, opened.id)
            .await
            .unwrap()
            .expect("lease row");
        let entry = expected
            .entry((
                lease.pool.to_string(),
                lease.started_at.0.div_euclid(60_000),
            ))
            .or_default();
        entry.0 += u64::from(lease.gpus) * ((lease.ends_at.0 - lease.started_at.0) as u64 / 1000);
    }
    let ended_at = store
        .lease(&first.buyer, first.id)
        .await
        .unwrap()
        .and_then(|l| l.ended_at)
        .expect("the released lease ended");
    expected
        .entry((first.pool.to_string(), ended_at.0.div_euclid(60_000)))
        .or_default()
        .1 += 1;
    assert_eq!(minutes, expected);
}

async fn lease_events_come_back_in_commit_order_with_their_lease(store: &dyn Store) {
    let mut market = Market::open(store).await;
    let supply = release(&market, "dc1", "b1", POOL, 4, 100);
    commit(store, &mut market, vec![supply]).await;
    let traded = commit(store, &mut market, vec![bid("acme", POOL, 4, 150)]).await;
    let lease = leases_in(&traded)[0].clone();
    commit(store, &mut market, vec![reclaim("dc1", "b1", 4)]).await;
    let events = store.lease_events_after(0, 0, 100).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, vec!["opened", "notice"]);
    assert!(events
        .iter()
        .all(|e| e.lease_id == lease.id && &*e.buyer == "acme"));
    let now = store.lease("acme", lease.id).await.unwrap();
    assert_eq!(
        events[1].lease, now,
        "each event carries the lease as it is now"
    );
    assert_eq!(events[1].detail_at, now.and_then(|l| l.notice_ends_at));
    let rest = store
        .lease_events_after(events[0].seq, events[0].row_id, 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].kind, "notice");
    assert!(store
        .lease_events_after(u64::MAX, u64::MAX, 100)
        .await
        .unwrap()
        .is_empty());
}

async fn a_capacity_signal_is_recorded_once(store: &dyn Store) {
    let mut market = Market::open(store).await;
    let mut batch = market.batch(vec![bid("acme", POOL, 1, 100), Command::Tick]);
    batch.records[0].signal = Some(EntryId::new(1_700_000_000_000, 0));
    batch.records[1].signal = Some(EntryId::new(1_700_000_000_001, 3));
    let written = rows(&batch);
    assert_eq!(written.applied_signals.len(), 2);
    store.write_batch(&written).await.unwrap();
    assert_eq!(
        store.applied_signals_newest(1).await.unwrap(),
        vec![EntryId::new(1_700_000_000_001, 3)]
    );
    let found = store
        .applied_signals(&[
            EntryId::new(1_700_000_000_000, 0),
            EntryId::new(1_700_000_000_000, 1),
            EntryId::new(u64::MAX, 0),
        ])
        .await
        .unwrap();
    assert_eq!(
        found,
        vec![AppliedSignal {
            id: EntryId::new(1_700_000_000_000, 0),
            seq: batch.records[0].seq,
            rejection: None,
        }]
    );
    // Recording the same entry again fails the whole batch.
    let mut again = market.batch(vec![Command::Tick]);
    again.records[0].signal = Some(EntryId::new(1_700_000_000_000, 0));
    assert!(store.write_batch(&rows(&again)).await.is_err());
    assert_eq!(
        store
            .journal_after(0, 100)
            .await
            .unwrap()
            .last()
            .map(|e| e.seq),
        Some(batch.last_seq())
    );
}

async fn values_beyond_the_column_range_are_refused_not_wrapped(store: &dyn Store) {
    let mut market = Market::open(store).await;
    let batch = market.batch(vec![bid("acme", POOL, 1, 100)]);
    let mut huge = rows(&batch);
    huge.orders[0].price = PriceMicros(u64::MAX);
    let error = store.write_batch(&huge).await.expect_err("refused");
    assert!(matches!(error, StoreError::Query(_)), "{error:?}");
    let mut many = rows(&batch);
    many.orders[0].gpus = u32::MAX;
    assert!(store.write_batch(&many).await.is_err());
    assert_eq!(
        store.journal_after(0, 10).await.unwrap().len(),
        2,
        "the pools only"
    );
    let account: Arc<str> = Arc::from("acme");
    assert!(store
        .orders(&account, &filter(None, None, 10))
        .await
        .unwrap()
        .is_empty());
}
