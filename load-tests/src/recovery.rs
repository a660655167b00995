//! `offpeak-load recovery`: how long `offpeak serve` takes to be ready after a long journal,
//! first with no snapshot (a full replay), then again from the snapshot it left.
//!
//! The journal is written the way the sequencer writes it, through the server's own store: the
//! generator applies each command to its own engine at a time it stamps, keeps the events, and
//! every `--batch-commands` commands become one `CommittedBatch` (with the pools' usage over it)
//! whose `BatchRows` go to `Store::write_batch` in one transaction. So the journal, the orders,
//! leases, trades, blocks, lease events and usage rows are what a server that had taken those
//! commands would hold. Generating and writing overlap (a bounded queue of batches), so memory
//! stays bounded whatever `--commands` is.
//!
//! The mix (on the four bare-metal default pools, configured first as a fresh server would):
//! buyers place bids (most rest below the asks; some take, as IOC, FOK or GTC; some GTD),
//! amend and cancel them; suppliers release blocks on nodes, update their reserve prices,
//! hand leases over (`ready`, now and then `failed`), forecast and reclaim (unsold GPUs, or
//! leases with notice); buyers release some leases early; an admin raises a few limits; and a
//! `Tick` every few commands moves the clock a few milliseconds (5/6 ms per command on
//! average), starting so that the journal ends about when it is written. The generator
//! reads its engine's events to name only live orders, blocks and leases, so few commands are
//! refused (the count is printed).
//!
//! Then the server (`--binary serve`, PostgreSQL, a node of a cluster of one) is started with a
//! fresh data directory and timed from spawn to its first `/readyz` 200; stopped with SIGTERM
//! (it leaves a snapshot, which is checked for); started again and timed the same way. Its
//! stderr is kept in `<tmp>/offpeak-recovery-<run>/serve-<n>.log`, each line prefixed with the
//! seconds since spawn. Last, the journal is replayed in this process the way the server does
//! (chunks of `REPLAY_CHUNK_COMMANDS`), which must reach the generator's state hash, timing the
//! reads, the JSON decoding and `Engine::apply` apart, and the snapshot's read, decoding and
//! restore: where the replay's time goes.
//!
//! Only a database on this machine is accepted, and it must be fresh (an empty journal). The
//! server started is killed however the run ends.
//!
//! Last line: `offpeak-load recovery: commands=<n> full_replay_s=<x.x> snapshot_ready_s=<x.x>`.

use crate::failover::{listening_address, local_only, send_signal};
use crate::live::LiveSet;
use crate::measure::load_average;
use crate::setup::{buyer, supplier};
use anyhow::{bail, ensure, Context};
use matching_engine::{
    AccessStatus, AccountLimits, AmendBid, BlockStatus, Command, Endpoint, Engine, Event, LeaseId,
    LeaseReady, LeaseStatus, Name, NodeGpus, Offering, OrderId, OrderStatus, PlaceBid, PriceMicros,
    ReclaimCapacity, ReleaseCapacity, TimeInForce, TimeMs, UpdateCapacity,
};
use offpeak::journal::{usage_between, CommandRecord, CommittedBatch};
use offpeak::limits::{MARKET_HISTORY_MS, REPLAY_CHUNK_COMMANDS, TRADES_KEPT_PER_POOL_MAX};
use offpeak::sequencer::{decode_snapshot, default_pools, encode_snapshot};
use offpeak::store::{BatchRows, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Options of the scenario.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// A fresh PostgreSQL database on this machine (the caller creates it; its journal must be
    /// empty).
    #[arg(long)]
    pub database_url: String,
    /// Commands to journal, setup and ticks included.
    #[arg(long, default_value_t = 1_000_000)]
    pub commands: u64,
    /// The `offpeak` binary to time (`PATH serve`).
    #[arg(long, default_value = "target/release/offpeak")]
    pub binary: PathBuf,
    /// Commands per journaled batch (the sequencer's batches are up to 4,096).
    #[arg(long, default_value_t = 1_000)]
    pub batch_commands: usize,
    /// Seed of the command mix.
    #[arg(long, default_value_t = 20_260_101)]
    pub seed: u64,
    /// The server's `OFFPEAK_JWT_SECRET` (32 characters or more).
    #[arg(long, default_value = "recovery-bench-secret-0123456789abcdef")]
    pub secret: String,
    /// How long each start may take to be ready.
    #[arg(long, default_value_t = 900)]
    pub ready_timeout_s: u64,
}

/// What the run measured.
#[derive(Debug)]
pub struct Summary {
    /// Commands journaled.
    pub commands: u64,
    /// Seconds to write the journal.
    pub journal_write_s: f64,
    /// Seconds from spawn to the first `/readyz` 200 with no snapshot.
    pub full_replay_s: f64,
    /// Seconds from spawn to the first `/readyz` 200 from the snapshot.
    pub snapshot_ready_s: f64,
}

// ----- the command mix -----------------------------------------------------------------------

/// Buyer accounts the bids are spread over (each far below the default 1,000 open bids).
const BUYERS: usize = 400;
/// Supplier accounts.
const SUPPLIERS: usize = 24;
/// Buyers whose limits an admin raises at setup (the market makers).
const RAISED_BUYERS: usize = 8;
/// Resting bids the mix steers towards, over all pools.
const RESTING_BIDS_TARGET: usize = 8_000;
/// Blocks with unsold GPUs on the book the mix steers towards, over all pools.
const OFFERED_BLOCKS_TARGET: usize = 1_000;
/// GPUs per node of a block.
const GPUS_PER_NODE: u32 = 8;
/// Lease lengths bids ask for, seconds.
const DURATIONS_S: [u32; 6] = [900, 1_800, 3_600, 3_600, 7_200, 14_400];
/// Bid sizes, GPUs.
const BID_GPUS: [u32; 8] = [1, 1, 2, 4, 8, 8, 16, 32];
/// A tick every this many commands at most (at least 3).
const TICK_EVERY_MAX: u32 = 7;
/// Batches generated ahead of the writer: what bounds the generator's memory.
const BATCHES_AHEAD: usize = 4;
/// How often `/readyz` is polled: the precision of the times.
const READY_POLL: Duration = Duration::from_millis(10);
/// A `/readyz` probe that takes longer counts as not ready.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a SIGTERMed server may take to stop (it writes its final snapshot first).
const STOP_TIMEOUT: Duration = Duration::from_secs(300);

/// One pool of the mix: its id and where its prices centre, in ticks of $0.01.
struct PoolMarket {
    id: String,
    centre_ticks: u64,
}

/// A resting bid, as the generator knows it.
#[derive(Default)]
struct BidState {
    buyer: usize,
    price_ticks: u64,
    filled: u32,
    min_gpus: u32,
}

/// A block that is not closed.
struct BlockState {
    pool: usize,
    reserve_ticks: u64,
    unsold: u32,
    open: bool,
}

/// A lease that runs (active: not given notice, not ended).
struct ActiveLease {
    block: u64,
    gpus: u32,
}

/// A lease waiting for its supplier's handoff.
#[derive(Default)]
struct Provisioning {
    block: u64,
    nodes: Vec<Name>,
}

/// Counts of what the generator emitted and saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct MixCounts {
    /// Pool configurations and account limits.
    pub setup: u64,
    /// Bids placed to rest (GTC or GTD below the asks).
    pub resting_bids: u64,
    /// Bids placed through the best ask (IOC, FOK or GTC).
    pub taking_bids: u64,
    /// Bids amended.
    pub amends: u64,
    /// Bids cancelled.
    pub cancels: u64,
    /// Blocks released.
    pub releases: u64,
    /// Blocks' reserve prices or windows updated.
    pub updates: u64,
    /// Reclaims (of unsold GPUs or of leases, with notice).
    pub reclaims: u64,
    /// Reclaim forecasts.
    pub forecasts: u64,
    /// Leases reported ready.
    pub readies: u64,
    /// Leases reported failed.
    pub failures: u64,
    /// Leases released early by their buyers.
    pub lease_releases: u64,
    /// Ticks.
    pub ticks: u64,
    /// Trades seen.
    pub trades: u64,
    /// Leases opened.
    pub leases_opened: u64,
    /// Commands the engine refused.
    pub rejected: u64,
}

/// Emits the mix, one stamped command at a time, applying each to its own engine.
pub struct JournalGenerator {
    rng: ChaCha8Rng,
    engine: Engine,
    pools: Vec<PoolMarket>,
    /// Setup commands still to emit.
    setup: Vec<Command>,
    /// Resting bids by order id.
    bids: LiveSet<BidState>,
    /// Blocks that are not closed, by block number.
    blocks: HashMap<u64, BlockState>,
    /// Blocks open with unsold GPUs or active leases: what supplier commands pick from.
    live_blocks: LiveSet<()>,
    /// Open blocks with unsold GPUs: what reserve price updates pick from.
    offered_blocks: LiveSet<()>,
    /// GPUs in active leases per block.
    block_leased: HashMap<u64, u32>,
    /// Active leases by lease id.
    active: HashMap<u64, ActiveLease>,
    /// Leases waiting for their handoff.
    provisioning: LiveSet<Provisioning>,
    /// Ready active leases, by lease id: their buyer.
    running: LiveSet<usize>,
    next_block: u64,
    next_client_order: u64,
    now: i64,
    since_tick: u32,
    tick_every: u32,
    /// What was emitted so far.
    pub counts: MixCounts,
}

impl JournalGenerator {
    /// A generator whose clock starts at `start` (ms since the epoch).
    pub fn new(seed: u64, start: TimeMs) -> JournalGenerator {
        let configs = default_pools();
        let pools = configs
            .iter()
            .filter(|config| config.offering == Offering::BareMetal)
            .map(|config| PoolMarket {
                id: config.id.clone(),
                // H100s around $2.50 an hour, A100s around $1.30; Europe a little dearer.
                centre_ticks: match (config.gpu.starts_with("h100"), config.region.as_str()) {
                    (true, "us-east") => 250,
                    (true, _) => 265,
                    (false, "us-east") => 130,
                    (false, _) => 140,
                },
            })
            .collect();
        let raised = AccountLimits {
            orders_open_max: 5_000,
            open_notional_max_micros: 50_000_000 * 1_000_000,
        };
        let mut setup: Vec<Command> = configs.into_iter().map(Command::ConfigurePool).collect();
        setup.extend((0..RAISED_BUYERS).map(|n| Command::SetAccountLimits {
            account: buyer(n),
            limits: raised,
        }));
        setup.reverse();
        JournalGenerator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            engine: Engine::new(),
            pools,
            setup,
            bids: LiveSet::default(),
            blocks: HashMap::new(),
            live_blocks: LiveSet::default(),
            offered_blocks: LiveSet::default(),
            block_leased: HashMap::new(),
            active: HashMap::new(),
            provisioning: LiveSet::default(),
            running: LiveSet::default(),
            next_block: 0,
            next_client_order: 0,
            now: start.0,
            since_tick: 0,
            tick_every: 3,
            counts: MixCounts::default(),
        }
    }

    /// The generator's engine (the state a replay of what it emitted reaches).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The next command, the time it is applied at, and its events.
    pub fn next_command(&mut self) -> (TimeMs, Command, Vec<Event>) {
        let command = match self.setup.pop() {
            Some(command) => {
                self.counts.setup += 1;
                command
            }
            None if self.since_tick >= self.tick_every => {
                // The clock moves at the ticks: on average 1 ms for each command since the
                // last tick.
                self.now += self.rng.gen_range(0..=2 * i64::from(self.since_tick));
                self.since_tick = 0;
                self.tick_every = self.rng.gen_range(3..=TICK_EVERY_MAX);
                self.counts.ticks += 1;
                Command::Tick
            }
            None => {
                self.since_tick += 1;
                self.draw()
            }
        };
        let at = TimeMs(self.now);
        let mut events = Vec::new();
        self.engine.apply(at, &command, &mut events);
        self.learn(&events);
        (at, command, events)
    }

    /// Draws a market command, weighted, steering the book's size.
    fn draw(&mut self) -> Command {
        let resting = self.bids.len().max(1) as f64 / RESTING_BIDS_TARGET as f64;
        let offered = self.offered_blocks.len().max(1) as f64 / OFFERED_BLOCKS_TARGET as f64;
        let weights = [
            300.0,                                             // place a bid
            150.0 * (resting * resting).clamp(0.2, 5.0),       // cancel a bid
            200.0,                                             // amend a bid
            40.0 * (1.0 / offered).clamp(0.25, 4.0),           // release a block
            50.0,                                              // update a block
            25.0,                                              // reclaim
            4.0,                                               // forecast a reclaim
            (self.provisioning.len() as f64 * 8.0).min(150.0), // hand a lease over
            25.0,                                              // release a lease
            1.0,                                               // raise a buyer's limits
        ];
        let total: f64 = weights.iter().sum();
        let mut roll = self.rng.gen_range(0.0..total);
        let mut kind = 0;
        for (i, weight) in weights.iter().enumerate() {
            if roll < *weight {
                kind = i;
                break;
            }
            roll -= weight;
        }
        let picked = match kind {
            1 => self.cancel(),
            2 => self.amend(),
            3 => Some(self.release()),
            4 => self.update(),
            5 => self.reclaim(),
            6 => self.forecast(),
            7 => self.hand_over(),
            8 => self.release_lease(),
            9 => Some(self.raise_limits()),
            _ => None,
        };
        picked.unwrap_or_else(|| self.place())
    }

    /// The best ask of pool `p`, in ticks.
    fn best_ask(&self, p: usize) -> Option<u64> {
        let depth = self.engine.depth(&self.pools[p].id, 1)?;
        depth.asks.first().map(|level| level.price.0 / 10_000)
    }

    fn place(&mut self) -> Command {
        let p = self.rng.gen_range(0..self.pools.len());
        let centre = self.pools[p].centre_ticks;
        let best_ask = self.best_ask(p);
        let account = self.rng.gen_range(0..BUYERS);
        let gpus = BID_GPUS[self.rng.gen_range(0..BID_GPUS.len())];
        let duration_s = DURATIONS_S[self.rng.gen_range(0..DURATIONS_S.len())];
        let roll = self.rng.gen_range(0..100);
        let (price_ticks, tif, expires_at) = match (roll, best_ask) {
            (0..=17, Some(ask)) => {
                self.counts.taking_bids += 1;
                let tif = match self.rng.gen_range(0..10) {
                    0..=4 => TimeInForce::Ioc,
                    5 => TimeInForce::Fok,
                    _ => TimeInForce::Gtc,
                };
                (ask + self.rng.gen_range(0..=10), tif, None)
            }
            _ => {
                self.counts.resting_bids += 1;
                let below = best_ask.unwrap_or(centre + 10).min(centre + 10);
                let price = below.saturating_sub(self.rng.gen_range(1..=60)).max(1);
                match self.rng.gen_range(0..10) {
                    0 => {
                        let life_ms = self.rng.gen_range(30_000..=1_200_000);
                        (price, TimeInForce::Gtd, Some(TimeMs(self.now + life_ms)))
                    }
                    _ => (price, TimeInForce::Gtc, None),
                }
            }
        };
        let min_gpus = match self.rng.gen_range(0..10) {
            0..=5 => Some(1),
            6 | 7 => None,
            _ => Some((gpus / 2).max(1)),
        };
        let client_order_id = self.rng.gen_bool(0.4).then(|| {
            self.next_client_order += 1;
            format!("run-{}", self.next_client_order)
        });
        Command::PlaceBid(PlaceBid {
            account: buyer(account),
            pool: self.pools[p].id.clone(),
            gpus,
            min_gpus,
            price: PriceMicros(price_ticks * 10_000),
            duration_s,
            max_duration_s: self.rng.gen_bool(0.2).then_some(duration_s * 2),
            tif,
            expires_at,
            persistent: self.rng.gen_bool(0.05),
            client_order_id,
            ssh_public_keys: Vec::new(),
        })
    }

    fn cancel(&mut self) -> Option<Command> {
        let (id, bid) = self.bids.pick(&mut self.rng)?;
        self.counts.cancels += 1;
        Some(Command::CancelBid {
            account: buyer(bid.buyer),
            order_id: OrderId(id),
        })
    }

    fn amend(&mut self) -> Option<Command> {
        let (id, bid) = self.bids.pick(&mut self.rng)?;
        let (account, old, filled, min_gpus) =
            (bid.buyer, bid.price_ticks, bid.filled, bid.min_gpus);
        self.counts.amends += 1;
        let (price, gpus) = if self.rng.gen_bool(0.75) {
            // Mostly a step of a few ticks; now and then it crosses and fills.
            let step = self.rng.gen_range(1..=20);
            let price = match self.rng.gen_bool(0.5) {
                true => old + step,
                false => old.saturating_sub(step).max(1),
            };
            (Some(PriceMicros(price * 10_000)), None)
        } else {
            let gpus = (filled + self.rng.gen_range(1..=16)).max(min_gpus);
            (None, Some(gpus))
        };
        Some(Command::AmendBid(AmendBid {
            account: buyer(account),
            order_id: OrderId(id),
            price,
            gpus,
        }))
    }

    fn release(&mut self) -> Command {
        self.counts.releases += 1;
        let number = self.next_block;
        self.next_block += 1;
        let p = self.rng.gen_range(0..self.pools.len());
        let centre = self.pools[p].centre_ticks as i64;
        let reserve = (centre + self.rng.gen_range(-20..=40)).max(1) as u64;
        let nodes: Vec<NodeGpus> = (0..self.rng.gen_range(1..=4))
            .map(|i| NodeGpus {
                node: Name::from(format!("rack{number}-n{i}")),
                gpus: GPUS_PER_NODE,
            })
            .collect();
        let hours = self.rng.gen_range(4..=12);
        // Most windows open now; a few later (pending until then).
        let available_from = self
            .rng
            .gen_bool(0.05)
            .then(|| TimeMs(self.now + self.rng.gen_range(60_000..=600_000)));
        let opens = available_from.map_or(self.now, |t| t.0);
        Command::ReleaseCapacity(ReleaseCapacity {
            supplier: supplier(number as usize % SUPPLIERS),
            block_id: format!("blk-{number}"),
            pool: self.pools[p].id.clone(),
            gpus: GPUS_PER_NODE * nodes.len() as u32,
            reserve_price: PriceMicros(reserve * 10_000),
            available_from,
            available_until: TimeMs(opens + hours * 3_600_000),
            nodes,
        })
    }

    /// A live block, with what it has unsold and in active leases.
    fn pick_block(&mut self) -> Option<(u64, u32, u32)> {
        let (number, _) = self.live_blocks.pick(&mut self.rng)?;
        let unsold = self.blocks.get(&number).map_or(0, |b| b.unsold);
        let leased = self.block_leased.get(&number).copied().unwrap_or(0);
        Some((number, unsold, leased))
    }

    fn update(&mut self) -> Option<Command> {
        let (number, _) = self.offered_blocks.pick(&mut self.rng)?;
        let block = &self.blocks[&number];
        let (pool, old) = (block.pool, block.reserve_ticks);
        let centre = self.pools[pool].centre_ticks;
        self.counts.updates += 1;
        // Scarce capacity is priced up, idle capacity down, around the pool's centre.
        let step = self.rng.gen_range(1..=15);
        let price = if old > centre { old - step } else { old + step };
        Some(Command::UpdateCapacity(UpdateCapacity {
            supplier: supplier(number as usize % SUPPLIERS),
            block_id: format!("blk-{number}"),
            reserve_price: Some(PriceMicros(price.max(1) * 10_000)),
            available_until: None,
        }))
    }

    fn reclaim(&mut self) -> Option<Command> {
        let (number, unsold, leased) = self.pick_block()?;
        let gpus = if unsold > 0 && (leased == 0 || self.rng.gen_bool(0.6)) {
            unsold
        } else if leased > 0 {
            self.rng.gen_range(1..=leased.min(16))
        } else {
            return None;
        };
        self.counts.reclaims += 1;
        let emergency = self.rng.gen_bool(0.02);
        Some(Command::ReclaimCapacity(ReclaimCapacity {
            supplier: supplier(number as usize % SUPPLIERS),
            block_id: format!("blk-{number}"),
            gpus,
            notice_s: emergency.then_some(30),
            emergency,
        }))
    }

    fn forecast(&mut self) -> Option<Command> {
        let (number, _, leased) = self.pick_block()?;
        if leased == 0 {
            return None;
        }
        self.counts.forecasts += 1;
        Some(Command::ForecastReclaim {
            supplier: supplier(number as usize % SUPPLIERS),
            block_id: format!("blk-{number}"),
            reclaim_at: TimeMs(self.now + self.rng.gen_range(300_000..=1_800_000)),
        })
    }

    fn hand_over(&mut self) -> Option<Command> {
        let (id, lease) = self.provisioning.pick(&mut self.rng)?;
        let supplier = supplier(lease.block as usize % SUPPLIERS);
        let block_id = format!("blk-{}", lease.block);
        if self.rng.gen_bool(0.03) {
            self.counts.failures += 1;
            return Some(Command::LeaseFailed {
                supplier,
                block_id,
                lease_id: LeaseId(id),
                reason: "a node failed its GPU health check".to_owned(),
            });
        }
        self.counts.readies += 1;
        let endpoints = lease
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| Endpoint {
                node: Some(node.clone()),
                host: Name::from(format!("10.{}.{}.{}", lease.block % 250, id % 250, i + 1)),
                port: 22,
                user: Name::from("ubuntu"),
            })
            .collect();
        Some(Command::LeaseReady(LeaseReady {
            supplier,
            block_id,
            lease_id: LeaseId(id),
            endpoints,
            endpoint: None,
        }))
    }

    fn release_lease(&mut self) -> Option<Command> {
        let (id, &account) = self.running.pick(&mut self.rng)?;
        self.counts.lease_releases += 1;
        Some(Command::ReleaseLease {
            account: buyer(account),
            lease_id: LeaseId(id),
        })
    }

    fn raise_limits(&mut self) -> Command {
        self.counts.setup += 1;
        Command::SetAccountLimits {
            account: buyer(self.rng.gen_range(0..BUYERS)),
            limits: AccountLimits {
                orders_open_max: 2_000,
                open_notional_max_micros: 20_000_000 * 1_000_000,
            },
        }
    }

    /// Keeps the generator's view of bids, blocks and leases in step with the engine.
    fn learn(&mut self, events: &[Event]) {
        for event in events {
            match event {
                Event::BidAccepted { order } | Event::OrderChanged { order } => {
                    if order.status == OrderStatus::Open {
                        let state = BidState {
                            buyer: index_of(&order.account, "buyer-"),
                            price_ticks: order.price.0 / 10_000,
                            filled: order.filled_gpus,
                            min_gpus: order.min_gpus,
                        };
                        self.bids.upsert(order.id.0, state);
                    } else {
                        self.bids.remove(order.id.0);
                    }
                }
                Event::BlockChanged { block } => {
                    let number = block_number(&block.block_id);
                    if block.status == BlockStatus::Closed {
                        self.blocks.remove(&number);
                    } else {
                        let pool = self
                            .pools
                            .iter()
                            .position(|p| *p.id == *block.pool)
                            .expect("a pool of the mix");
                        let state = BlockState {
                            pool,
                            reserve_ticks: block.reserve_price.0 / 10_000,
                            unsold: block.gpus_unsold,
                            open: block.status == BlockStatus::Open,
                        };
                        self.blocks.insert(number, state);
                    }
                    self.refresh_block(number);
                }
                Event::LeaseOpened { lease } => {
                    self.counts.leases_opened += 1;
                    let number = block_number(&lease.block_id);
                    self.active.insert(
                        lease.id.0,
                        ActiveLease {
                            block: number,
                            gpus: lease.gpus,
                        },
                    );
                    *self.block_leased.entry(number).or_default() += lease.gpus;
                    if lease.access.status == AccessStatus::Provisioning {
                        let nodes = lease.nodes.iter().map(|n| n.node.clone()).collect();
                        self.provisioning.upsert(
                            lease.id.0,
                            Provisioning {
                                block: number,
                                nodes,
                            },
                        );
                    }
                    self.refresh_block(number);
                }
                Event::LeaseChanged { lease } => {
                    if lease.access.status != AccessStatus::Provisioning {
                        self.provisioning.remove(lease.id.0);
                    }
                    if lease.status == LeaseStatus::Active {
                        if lease.access.status == AccessStatus::Ready {
                            let account = index_of(&lease.buyer, "buyer-");
                            self.running.upsert(lease.id.0, account);
                        }
                    } else {
                        self.running.remove(lease.id.0);
                        if let Some(ended) = self.active.remove(&lease.id.0) {
                            let leased = self.block_leased.entry(ended.block).or_default();
                            *leased -= ended.gpus;
                            if *leased == 0 {
                                self.block_leased.remove(&ended.block);
                            }
                            self.refresh_block(ended.block);
                        }
                    }
                }
                Event::Traded { .. } => self.counts.trades += 1,
                Event::Rejected { .. } => self.counts.rejected += 1,
                _ => {}
            }
        }
    }

    /// A block is live (reclaims and forecasts may name it) while it is open with unsold GPUs
    /// or active leases, and offered while it is open with unsold GPUs.
    fn refresh_block(&mut self, number: u64) {
        let leased = self.block_leased.get(&number).copied().unwrap_or(0);
        let (open, unsold) = self
            .blocks
            .get(&number)
            .map_or((false, 0), |b| (b.open, b.unsold));
        for (set, member) in [
            (&mut self.live_blocks, open && (unsold > 0 || leased > 0)),
            (&mut self.offered_blocks, open && unsold > 0),
        ] {
            if member {
                set.upsert(number, ());
            } else {
                set.remove(number);
            }
        }
    }

    /// Resting bids, offered blocks and active leases now.
    pub fn holdings(&self) -> (usize, usize, usize) {
        (
            self.bids.len(),
            self.offered_blocks.len(),
            self.active.len(),
        )
    }
}

/// `n` of an account named `<prefix>n`.
fn index_of(account: &str, prefix: &str) -> usize {
    account
        .strip_prefix(prefix)
        .and_then(|n| n.parse().ok())
        .expect("an account of the mix")
}

/// `n` of a block named `blk-n`.
fn block_number(block_id: &str) -> u64 {
    block_id
        .strip_prefix("blk-")
        .and_then(|n| n.parse().ok())
        .expect("a block of the mix")
}

// ----- writing the journal -------------------------------------------------------------------

/// What the generator left behind.
struct Journaled {
    counts: MixCounts,
    state_hash: u64,
    json_bytes: u64,
    batches: u64,
    first_at: TimeMs,
    last_at: TimeMs,
    /// Resting bids, offered blocks and active leases at the end.
    holdings: (usize, usize, usize),
}

/// Generates `commands` commands in batches of `batch_commands` and sends each batch's rows.
fn generate(
    commands: u64,
    batch_commands: usize,
    seed: u64,
    start: TimeMs,
    rows_tx: mpsc::Sender<BatchRows>,
) -> anyhow::Result<Journaled> {
    let mut generator = JournalGenerator::new(seed, start);
    let mut usage = generator.engine().usage();
    let (mut seq, mut json_bytes, mut batches) = (0u64, 0u64, 0u64);
    let mut last_at = start;
    while seq < commands {
        let size = (commands - seq).min(batch_commands as u64) as usize;
        let mut records = Vec::with_capacity(size);
        for _ in 0..size {
            seq += 1;
            let (at, command, events) = generator.next_command();
            records.push(CommandRecord {
                seq,
                at,
                command,
                signal: None,
                events,
            });
        }
        // As the sequencer's `staged()`: the usage since the previous batch, credited to the
        // minute of its last command.
        last_at = records.last().map_or(last_at, |r| r.at);
        let usage_after = generator.engine().usage();
        let batch = CommittedBatch {
            usage: usage_between(&usage, &usage_after, last_at),
            records,
        };
        usage = usage_after;
        let rows = BatchRows::from_batch(&batch).context("building a batch's rows")?;
        json_bytes += rows
            .journal
            .iter()
            .map(|j| j.command_json.len() as u64)
            .sum::<u64>();
        batches += 1;
        if rows_tx.blocking_send(rows).is_err() {
            bail!("the journal writer stopped");
        }
    }
    Ok(Journaled {
        counts: generator.counts,
        state_hash: generator.engine().state_hash(),
        json_bytes,
        batches,
        first_at: start,
        last_at,
        holdings: generator.holdings(),
    })
}

/// Writes the journal; returns what was generated and the seconds it took.
async fn write_journal(store: &Arc<dyn Store>, args: &Args) -> anyhow::Result<(Journaled, f64)> {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    // A tick after 5 commands on average moves the clock 5 ms on average: 5/6 ms per command,
    // so the journal ends about now.
    let start = TimeMs(now_ms - (args.commands * 5 / 6) as i64);
    let (rows_tx, mut rows_rx) = mpsc::channel::<BatchRows>(BATCHES_AHEAD);
    let (commands, batch_commands, seed) = (args.commands, args.batch_commands, args.seed);
    let started = Instant::now();
    let generator = tokio::task::spawn_blocking(move || {
        generate(commands, batch_commands, seed, start, rows_tx)
    });
    let mut written = 0u64;
    let mut reported = 0u64;
    while let Some(rows) = rows_rx.recv().await {
        store
            .write_batch(&rows)
            .await
            .with_context(|| format!("writing the batch after seq {written}"))?;
        written += rows.journal.len() as u64;
        if written * 10 / commands.max(1) > reported {
            reported = written * 10 / commands.max(1);
            println!(
                "recovery: journal {written}/{commands} after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let journaled = generator.await.context("the generator panicked")??;
    Ok((journaled, started.elapsed().as_secs_f64()))
}

// ----- the server under test -----------------------------------------------------------------

/// Log lines of the server worth reporting, with the seconds since spawn they arrived at.
type Marks = Arc<Mutex<Vec<(f64, String)>>>;

/// A started `offpeak serve`; killed when dropped unless it was stopped.
struct Server {
    child: Option<Child>,
    pid: u32,
    spawned: Instant,
    marks: Marks,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Server {
    /// Starts the server and returns at once.
    fn spawn(args: &Args, data_dir: &Path, log: PathBuf) -> anyhow::Result<Server> {
        let mut command = crate::failover::serve_command(&args.binary);
        command
            .env("DATABASE_URL", &args.database_url)
            .env("OFFPEAK_JWT_SECRET", &args.secret)
            .env("OFFPEAK_LISTEN", "127.0.0.1:0")
            .env("OFFPEAK_NODE_ID", "recovery-bench")
            .env("OFFPEAK_DATA_DIR", data_dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let spawned = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {} serve", args.binary.display()))?;
        let pid = child.id();
        let stderr = child.stderr.take().context("the server's stderr")?;
        let marks: Marks = Arc::default();
        let (marks_in, log_path) = (marks.clone(), log.clone());
        std::thread::spawn(move || drain_stderr(stderr, &log_path, spawned, &marks_in));
        Ok(Server {
            child: Some(child),
            pid,
            spawned,
            marks,
            log,
        })
    }

    fn exited(&mut self) -> anyhow::Result<bool> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait().context("polling the server")?.is_some()),
            None => Ok(true),
        }
    }

    fn marks(&self) -> Vec<(f64, String)> {
        self.marks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for the `listening on` line, then for the first `/readyz` 200; returns the URL
    /// and the seconds from spawn to ready.
    async fn ready(
        &mut self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> anyhow::Result<(String, f64)> {
        let deadline = self.spawned + timeout;
        let url = loop {
            let listening = self
                .marks()
                .iter()
                .find_map(|(_, line)| listening_address(line));
            if let Some(address) = listening {
                break format!("http://{address}");
            }
            ensure!(
                !self.exited()?,
                "the server exited before listening; see {}",
                self.log.display()
            );
            ensure!(
                Instant::now() < deadline,
                "the server did not listen within {timeout:?}; see {}",
                self.log.display()
            );
            tokio::time::sleep(READY_POLL).await;
        };
        loop {
            let answer = http
                .get(format!("{url}/readyz"))
                .timeout(PROBE_TIMEOUT)
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok((url, self.spawned.elapsed().as_secs_f64()));
            }
            ensure!(
                !self.exited()?,
                "the server exited before it was ready; see {}",
                self.log.display()
            );
            ensure!(
                Instant::now() < deadline,
                "the server was not ready within {timeout:?}; see {}",
                self.log.display()
            );
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// SIGTERM, and waits for the server to finish (its final snapshot included).
    async fn stop(&mut self) -> anyhow::Result<f64> {
        let started = Instant::now();
        send_signal(self.pid, "TERM")?;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Ok(0.0);
            };
            if let Some(status) = child.try_wait().context("waiting for the server")? {
                self.child = None;
                ensure!(
                    status.success(),
                    "the server stopped with {status}; see {}",
                    self.log.display()
                );
                return Ok(started.elapsed().as_secs_f64());
            }
            ensure!(
                started.elapsed() < STOP_TIMEOUT,
                "the server did not stop within {STOP_TIMEOUT:?} of SIGTERM; see {}",
                self.log.display()
            );
            tokio::time::sleep(READY_POLL).await;
        }
    }
}

/// Log lines the report quotes.
const MARKED: [&str; 7] = [
    "listening on http://",
    "engine state loaded",
    "leadership won",
    "leader: taking writes",
    "snapshot written",
    "sequencer stopped",
    "ERROR",
];

/// Copies the server's stderr to its log (each line prefixed with the seconds since spawn)
/// and keeps the lines the report quotes.
fn drain_stderr(stderr: ChildStderr, log: &Path, spawned: Instant, marks: &Marks) {
    let mut file = std::fs::File::create(log).ok();
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let at = spawned.elapsed().as_secs_f64();
        if let Some(file) = file.as_mut() {
            let _ = writeln!(file, "+{at:.3} {line}");
        }
        if MARKED.iter().any(|m| line.contains(m)) {
            marks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((at, line));
        }
    }
}

/// The quoted log lines of one start, shortened to their message and fields.
fn describe_marks(marks: &[(f64, String)]) -> Vec<String> {
    marks
        .iter()
        .map(|(at, line)| {
            let message = MARKED
                .iter()
                .find_map(|m| line.find(m))
                .map_or(line.as_str(), |i| &line[i..]);
            format!("    +{at:.3} s  {message}")
        })
        .collect()
}

// ----- where replay time goes ----------------------------------------------------------------

/// Replays the journal written (up to `commands`: the server journals ticks of its own after
/// it) in this process as the server does, timing each part, and checks that it reaches the
/// generator's state.
async fn breakdown(
    store: &Arc<dyn Store>,
    commands: u64,
    expected_hash: u64,
) -> anyhow::Result<Vec<String>> {
    let (mut read, mut decode, mut apply) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut engine = Engine::new();
    let mut scratch = Vec::new();
    let (mut seq, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    while seq < commands {
        let t = Instant::now();
        let limit = REPLAY_CHUNK_COMMANDS.min((commands - seq) as usize);
        let chunk = store
            .journal_after(seq, limit)
            .await
            .context("reading the journal")?;
        read += t.elapsed();
        if chunk.is_empty() {
            break;
        }
        let t = Instant::now();
        let commands = chunk
            .iter()
            .map(|entry| {
                bytes += entry.command_json.len() as u64;
                let command: Command = serde_json::from_str(&entry.command_json)
                    .with_context(|| format!("decoding journal command {}", entry.seq))?;
                Ok((entry.at, command))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        decode += t.elapsed();
        seq = chunk.last().map_or(seq, |entry| entry.seq);
        drop(chunk);
        let t = Instant::now();
        for (at, command) in &commands {
            engine.apply(*at, command, &mut scratch);
            scratch.clear();
        }
        apply += t.elapsed();
    }
    let total = started.elapsed();
    let hash = engine.state_hash();
    let per = |d: Duration| d.as_secs_f64() * 1e9 / seq.max(1) as f64;
    let share = |d: Duration| 100.0 * d.as_secs_f64() / total.as_secs_f64().max(1e-9);
    let mut lines = vec![
        format!(
            "recovery: breakdown, in this process ({seq} commands, {:.1} MB of JSON, chunks of {REPLAY_CHUNK_COMMANDS}): {:.2} s in all, state hash {}",
            bytes as f64 / 1e6,
            total.as_secs_f64(),
            match hash == expected_hash {
                true => "= the generator's",
                false => "DIFFERS from the generator's",
            }
        ),
        format!(
            "    journal read (SELECT ... command::text, rows to String): {:.2} s ({:.0}%, {:.0} ns/command)",
            read.as_secs_f64(), share(read), per(read)
        ),
        format!(
            "    JSON decode (serde_json::from_str::<Command>): {:.2} s ({:.0}%, {:.0} ns/command)",
            decode.as_secs_f64(), share(decode), per(decode)
        ),
        format!(
            "    Engine::apply: {:.2} s ({:.0}%, {:.0} ns/command)",
            apply.as_secs_f64(), share(apply), per(apply)
        ),
    ];
    let t = Instant::now();
    if let Some(stored) = store.latest_snapshot().await? {
        let read = t.elapsed();
        let t = Instant::now();
        let snapshot = decode_snapshot(&stored.state)?;
        let decoded = t.elapsed();
        let t = Instant::now();
        let restored = Engine::restore(snapshot);
        let hash_ok = restored.state_hash() == stored.state_hash;
        let restore = t.elapsed();
        let t = Instant::now();
        let encoded = encode_snapshot(&restored.snapshot())?.len();
        let encode = t.elapsed();
        lines.push(format!(
            "    snapshot at seq {} ({:.1} MB): read {:.2} s, decode {:.2} s, restore + state hash {:.2} s (hash {}); encoding it again {:.2} s ({:.1} MB)",
            stored.seq,
            stored.state.len() as f64 / 1e6,
            read.as_secs_f64(),
            decoded.as_secs_f64(),
            restore.as_secs_f64(),
            if hash_ok { "ok" } else { "MISMATCH" },
            encode.as_secs_f64(),
            encoded as f64 / 1e6,
        ));
    }
    // What the server loads between the replay and leading: the market data's history.
    let t = Instant::now();
    let since = TimeMs(offpeak::timestamp::now_ms().0 - MARKET_HISTORY_MS);
    let history = store
        .market_history(since, TRADES_KEPT_PER_POOL_MAX)
        .await
        .context("loading market history")?;
    lines.push(format!(
        "    market history (last {} days: {} trades, {} lease minutes): read {:.2} s",
        MARKET_HISTORY_MS / 86_400_000,
        history.trades.len(),
        history.lease_minutes.len(),
        t.elapsed().as_secs_f64()
    ));
    Ok(lines)
}

// ----- the scenario --------------------------------------------------------------------------

/// Runs the scenario and prints its report; the last line is the machine-readable one. The
/// server it started is killed however it ends (Ctrl-C too).
pub async fn run(args: Args) -> anyhow::Result<Summary> {
    tokio::select! {
        result = scenario(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted (the server started is killed)"),
    }
}

async fn scenario(args: Args) -> anyhow::Result<Summary> {
    local_only("--database-url", &args.database_url, true)?;
    ensure!(
        args.commands > 0 && args.batch_commands > 0,
        "--commands and --batch-commands must be positive"
    );
    ensure!(
        args.secret.len() >= 32,
        "--secret must be 32 characters or more"
    );
    ensure!(
        args.binary.exists(),
        "--binary {} does not exist (cargo build --release --bin offpeak)",
        args.binary.display()
    );
    let load_before = load_average();
    let store =
        offpeak::store::postgres::connect(&args.database_url).context("configuring PostgreSQL")?;
    store.migrate().await.context("applying migrations")?;
    let journal = store.journal_after(0, 1).await?;
    ensure!(
        journal.is_empty() && store.latest_snapshot().await?.is_none(),
        "the database already has a journal or a snapshot: give a fresh one"
    );

    let (journaled, journal_write_s) = write_journal(&store, &args).await?;
    let c = journaled.counts;
    println!(
        "recovery: seed {} | setup {} | bids resting {} taking {} | amends {} | cancels {} | \
         releases {} | updates {} | reclaims {} | forecasts {} | ready {} failed {} | \
         lease releases {} | ticks {}",
        args.seed,
        c.setup,
        c.resting_bids,
        c.taking_bids,
        c.amends,
        c.cancels,
        c.releases,
        c.updates,
        c.reclaims,
        c.forecasts,
        c.readies,
        c.failures,
        c.lease_releases,
        c.ticks
    );
    let (bids, offered, leases) = journaled.holdings;
    println!(
        "recovery: engine saw {} trades, {} leases opened, {} commands refused ({:.2}%); at the \
         end {bids} bids rest, {offered} blocks offer GPUs, {leases} leases run",
        c.trades,
        c.leases_opened,
        c.rejected,
        100.0 * c.rejected as f64 / args.commands as f64
    );
    println!(
        "recovery: journal of {} commands in {} batches written in {journal_write_s:.1} s \
         ({:.0} commands/s); {:.0} bytes of JSON per command; times span {:.0} s, ending {:.1} s ago",
        args.commands,
        journaled.batches,
        args.commands as f64 / journal_write_s,
        journaled.json_bytes as f64 / args.commands as f64,
        (journaled.last_at.0 - journaled.first_at.0) as f64 / 1000.0,
        (SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64 - journaled.last_at.0)
            as f64
            / 1000.0
    );

    let run_id = format!(
        "{:x}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 0xffff_ffff
    );
    let dir = std::env::temp_dir().join(format!("offpeak-recovery-{run_id}"));
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let http = reqwest::Client::new();
    let timeout = Duration::from_secs(args.ready_timeout_s);

    // 1. No snapshot: the whole journal is replayed.
    let mut server = Server::spawn(&args, &data_dir, dir.join("serve-1.log"))?;
    let (_, full_replay_s) = server.ready(&http, timeout).await?;
    let stop_1_s = server.stop().await?;
    let marks = server.marks();
    let replayed_all = marks
        .iter()
        .any(|(_, line)| line.contains(&format!("replayed={} ", args.commands)));
    println!(
        "recovery: full replay: ready {full_replay_s:.2} s after spawn{}",
        match replayed_all {
            true => "",
            false => " (WARNING: no `engine state loaded ... replayed=<commands>` line)",
        }
    );
    describe_marks(&marks).iter().for_each(|l| println!("{l}"));
    println!("    stopped {stop_1_s:.2} s after SIGTERM");
    drop(server);
    let snapshot = store
        .latest_snapshot()
        .await?
        .context("no snapshot after the first run's SIGTERM")?;
    println!(
        "recovery: snapshot row at seq {} ({:.1} MB)",
        snapshot.seq,
        snapshot.state.len() as f64 / 1e6
    );
    drop(snapshot);

    // 2. From that snapshot.
    let mut server = Server::spawn(&args, &data_dir, dir.join("serve-2.log"))?;
    let (_, snapshot_ready_s) = server.ready(&http, timeout).await?;
    let stop_2_s = server.stop().await?;
    println!("recovery: snapshot start: ready {snapshot_ready_s:.2} s after spawn");
    describe_marks(&server.marks())
        .iter()
        .for_each(|l| println!("{l}"));
    println!("    stopped {stop_2_s:.2} s after SIGTERM");
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
    println!("recovery: server logs in {}", dir.display());

    for line in breakdown(&store, args.commands, journaled.state_hash).await? {
        println!("{line}");
    }
    println!(
        "recovery: load average before {load_before}, after {}",
        load_average()
    );
    let summary = Summary {
        commands: args.commands,
        journal_write_s,
        full_replay_s,
        snapshot_ready_s,
    };
    println!(
        "offpeak-load recovery: commands={} full_replay_s={:.1} snapshot_ready_s={:.1}",
        summary.commands, summary.full_replay_s, summary.snapshot_ready_s
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_configures_the_default_pools_first_and_keeps_time_monotonic() {
        let start = TimeMs(1_800_000_000_000);
        let mut generator = JournalGenerator::new(7, start);
        let pools = default_pools().len();
        let mut last = start;
        for n in 0..20_000 {
            let (at, command, _) = generator.next_command();
            if n < pools {
                assert!(matches!(command, Command::ConfigurePool(_)), "command {n}");
            }
            assert!(at >= last, "time went back at command {n}");
            last = at;
        }
        let c = generator.counts;
        assert!(c.ticks > 20_000 / 8 && c.trades > 0 && c.leases_opened > 0 && c.readies > 0);
        assert!(
            c.rejected * 50 < 20_000,
            "under 2% refused, got {}",
            c.rejected
        );
        // About 5/6 ms per command.
        let span = last.0 - start.0;
        assert!((10_000..=30_000).contains(&span), "span {span} ms");
    }
}
