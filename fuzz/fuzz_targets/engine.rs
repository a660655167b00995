//! Arbitrary command sequences against the matching engine.
//!
//! The fuzzer's bytes are decoded into at most [`COMMANDS_MAX`] commands over two pools (one
//! continuous, one batch) and one pool that is never configured, with every number biased to
//! the edges: zero, one, the pool's bounds and one past them, the type's extremes, times at,
//! just before and just after the next timer, and ids the engine actually handed out. After
//! every command `Engine::assert_invariants` must hold. A `restore` step rebuilds the engine
//! from its snapshot through JSON (as the server does after a restart): the state hash and
//! snapshot must be the same, and from then on the original and the restored engine run in
//! lockstep and must emit the same events.

#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use matching_engine::{
    AccountLimits, AmendBid, AuctionMode, Command, Endpoint, Engine, Event, Handoff, KillTarget,
    LeaseId, LeaseReady, NodeGpus, OrderId, PlaceBid, PoolConfig, PriceMicros, ReclaimCapacity,
    ReleaseCapacity, TimeInForce, TimeMs, UpdateCapacity,
};

/// Commands per input: long enough for fills, notices and expiries, short enough to run fast.
const COMMANDS_MAX: usize = 96;
/// 2026-01-01T00:00:00Z.
const EPOCH_MS: i64 = 1_767_225_600_000;
/// The latest time the sequencer stamps here: 2226, two centuries of wall clock.
const STAMP_MAX: i64 = EPOCH_MS + 200 * 365 * 24 * 3_600_000;
const POOLS: [&str; 3] = ["h100.us", "a100.eu", "tpu.mars"];
const ACCOUNTS: [&str; 4] = ["ada", "bob", "dc1", "dc2"];
const BLOCK_IDS: [&str; 3] = ["b0", "b1", "b2"];

struct Gen<'a, 'b> {
    u: &'b mut Unstructured<'a>,
    /// Order and lease ids the engine emitted (most recent last).
    orders: Vec<u64>,
    leases: Vec<u64>,
}

impl Gen<'_, '_> {
    fn pick<T: Copy>(&mut self, items: &[T]) -> Result<T> {
        Ok(*self.u.choose(items)?)
    }

    fn account(&mut self) -> Result<String> {
        Ok(if self.u.ratio(1, 40)? {
            // Anything at all: empty, long, non-ASCII.
            self.u.arbitrary::<String>()?
        } else {
            self.pick(&ACCOUNTS)?.to_owned()
        })
    }

    fn pool(&mut self) -> Result<String> {
        Ok(match self.u.int_in_range(0..=20u8)? {
            0 => POOLS[2].to_owned(),
            1..=12 => POOLS[0].to_owned(),
            _ => POOLS[1].to_owned(),
        })
    }

    fn block_id(&mut self) -> Result<String> {
        Ok(self.pick(&BLOCK_IDS)?.to_owned())
    }

    fn config(&self, engine: &Engine, pool: &str) -> Option<PoolConfig> {
        engine.pool(pool).map(|p| p.config)
    }

    fn price(&mut self, engine: &Engine, pool: &str) -> Result<PriceMicros> {
        let config = self.config(engine, pool);
        let (tick, min, max) = config
            .map(|c| (c.tick.0, c.price_min.0, c.price_max.0))
            .unwrap_or((10_000, 10_000, 100_000_000));
        let tick = tick.max(1);
        let levels = max.saturating_sub(min) / tick;
        let on_grid = |k: u64| min.saturating_add(tick.saturating_mul(k.min(levels)));
        Ok(PriceMicros(match self.u.int_in_range(0..=15u8)? {
            0 => min,
            1 => max,
            2 => min.saturating_sub(tick),
            3 => max.saturating_add(tick),
            4 => on_grid(self.u.int_in_range(0..=levels)?).saturating_add(1),
            5 => 0,
            6 => u64::MAX,
            7 => self.u.arbitrary()?,
            // Near the bottom of the band, where most of the book sits.
            _ => on_grid(self.u.int_in_range(0..=20u64)?),
        }))
    }

    fn gpus(&mut self, engine: &Engine, pool: &str) -> Result<u32> {
        let max = self
            .config(engine, pool)
            .map_or(4096, |c| c.gpus_per_order_max);
        Ok(match self.u.int_in_range(0..=15u8)? {
            0 => 0,
            1 => max,
            2 => max.saturating_add(1),
            3 => u32::MAX,
            4 => self.u.arbitrary()?,
            _ => self.u.int_in_range(1..=8)?,
        })
    }

    fn duration_s(&mut self, engine: &Engine, pool: &str) -> Result<u32> {
        let (min, max) = self.config(engine, pool).map_or((60, 30 * 24 * 3600), |c| {
            (c.duration_min_s, c.duration_max_s)
        });
        Ok(match self.u.int_in_range(0..=11u8)? {
            0 => 0,
            1 => min.saturating_sub(1),
            2 => min,
            3 => max,
            4 => max.saturating_add(1),
            5 => u32::MAX,
            6 => self.u.arbitrary()?,
            7 => 60,
            8 => 600,
            _ => 3600,
        })
    }

    /// A time relative to the engine's clock.
    fn time(&mut self, now: TimeMs, next_timer: Option<TimeMs>) -> Result<TimeMs> {
        let now = now.0;
        Ok(TimeMs(match self.u.int_in_range(0..=15u8)? {
            0 => now,
            1 => now - 1,
            2 => now + 1,
            3 => i64::MAX,
            4 => i64::MIN,
            5 => self.u.arbitrary()?,
            6 => match next_timer {
                Some(t) => t.0.saturating_add(self.u.int_in_range(-1..=1)?),
                None => now + 1_000,
            },
            7 => now.saturating_add(self.u.int_in_range(1..=30 * 3_600_000)?),
            8 => now.saturating_sub(self.u.int_in_range(1..=3_600_000)?),
            _ => now.saturating_add(self.u.int_in_range(1..=8)? * 1_800_000),
        }))
    }

    /// The time the next command is stamped at: the sequencer's wall clock, mostly moving
    /// forward, never past [`STAMP_MAX`] (times in commands are the client's, and unbounded).
    fn stamp(&mut self, engine: &Engine) -> Result<TimeMs> {
        let now = engine.now().0;
        let at = match self.u.int_in_range(0..=15u8)? {
            0..=5 => now,
            6..=8 => now + self.u.int_in_range(1..=3_000)?,
            9 => now + self.u.int_in_range(1..=120)? * 1_000,
            10..=12 => match engine.next_timer_at() {
                Some(t) => t.0.saturating_add(self.u.int_in_range(-1..=1)?),
                None => now + 1_000,
            },
            13 => now + self.u.int_in_range(1..=30 * 3_600_000)?,
            // The sequencer never does this, but the engine must not go back in time.
            14 => now - self.u.int_in_range(1..=5_000)?,
            _ => now + self.u.arbitrary::<u32>()? as i64,
        };
        Ok(TimeMs(at.min(STAMP_MAX)))
    }

    fn order_id(&mut self) -> Result<OrderId> {
        Ok(OrderId(
            if !self.orders.is_empty() && !self.u.ratio(1, 10)? {
                let back = self.u.int_in_range(0..=self.orders.len().min(4) - 1)?;
                self.orders[self.orders.len() - 1 - back]
            } else {
                self.pick(&[0, 1, 2, u64::MAX])?
            },
        ))
    }

    fn lease_id(&mut self) -> Result<LeaseId> {
        Ok(LeaseId(
            if !self.leases.is_empty() && !self.u.ratio(1, 10)? {
                let back = self.u.int_in_range(0..=self.leases.len().min(4) - 1)?;
                self.leases[self.leases.len() - 1 - back]
            } else {
                self.pick(&[0, 1, u64::MAX])?
            },
        ))
    }

    fn nodes(&mut self, gpus: u32) -> Result<Vec<NodeGpus>> {
        if self.u.ratio(3, 4)? {
            return Ok(Vec::new());
        }
        let names = ["n1", "n2", "n3"];
        Ok(match self.u.int_in_range(0..=3u8)? {
            // Split exactly.
            0 | 1 => {
                let first = self.u.int_in_range(0..=gpus)?;
                let mut nodes = vec![NodeGpus {
                    node: names[0].into(),
                    gpus: first,
                }];
                if gpus > first {
                    nodes.push(NodeGpus {
                        node: names[1].into(),
                        gpus: gpus - first,
                    });
                }
                nodes
            }
            // Anything: wrong sums, duplicates, empty nodes.
            _ => {
                let n = self.u.int_in_range(1..=3usize)?;
                let mut nodes = Vec::with_capacity(n);
                for _ in 0..n {
                    nodes.push(NodeGpus {
                        node: self.pick(&names)?.into(),
                        gpus: self.pick(&[0, 1, gpus, u32::MAX])?,
                    });
                }
                nodes
            }
        })
    }

    fn pool_config(&mut self) -> Result<PoolConfig> {
        let id = if self.u.ratio(1, 8)? {
            POOLS[2]
        } else {
            self.pick(&POOLS[..2])?
        };
        let (gpu, region) = id.split_once('.').expect("pool ids have a dot");
        let mut config = PoolConfig::with_defaults(gpu, region);
        let tick = self.pick(&[1, 5_000, 10_000, 10_000, 50_000, 0])?;
        config.tick = PriceMicros(tick);
        // The widest ladder allowed (24 MB a side) is slow to check: rarely.
        let levels: u64 = if self.u.ratio(1, 64)? {
            self.pick(&[1_000_000, 1_000_001])?
        } else {
            self.pick(&[0, 1, 2, 10, 1_000, 10_000])?
        };
        let min_levels: u64 = self.pick(&[0, 1, 1, 3])?;
        config.price_min = PriceMicros(tick.saturating_mul(min_levels));
        config.price_max = PriceMicros(
            tick.saturating_mul(min_levels.saturating_add(levels))
                .saturating_add(self.pick(&[0, 0, 0, 1])?),
        );
        config.gpus_per_order_max = self.pick(&[0, 1, 8, 4096, u32::MAX])?;
        config.duration_min_s = self.pick(&[0, 1, 60, 3600, u32::MAX])?;
        config.duration_max_s = self.pick(&[0, 60, 3600, 30 * 24 * 3600, u32::MAX])?;
        config.notice_s = self.pick(&[0, 1, 120, u32::MAX])?;
        config.free_if_preempted_within_s = self.pick(&[0, 1, 3600, u32::MAX])?;
        config.handoff = if self.u.ratio(1, 3)? {
            Handoff::None
        } else {
            Handoff::Required
        };
        config.provision_timeout_s = self.pick(&[0, 1, 60, 600])?;
        config.auction = match self.u.int_in_range(0..=3u8)? {
            0 | 1 => AuctionMode::Continuous,
            _ => AuctionMode::Batch {
                interval_ms: self.pick(&[0, 1, 500, 60_000, u64::MAX])?,
            },
        };
        Ok(config)
    }

    fn command(&mut self, engine: &Engine) -> Result<Command> {
        let now = engine.now();
        let next_timer = engine.next_timer_at();
        Ok(match self.u.int_in_range(0..=99u8)? {
            0..=29 => {
                let pool = self.pool()?;
                let gpus = self.gpus(engine, &pool)?;
                let tif = self.pick(&[
                    TimeInForce::Gtc,
                    TimeInForce::Gtc,
                    TimeInForce::Ioc,
                    TimeInForce::Fok,
                    TimeInForce::Gtd,
                ])?;
                let expires_at = if tif == TimeInForce::Gtd || self.u.ratio(1, 20)? {
                    Some(self.time(now, next_timer)?)
                } else {
                    None
                };
                let duration_s = self.duration_s(engine, &pool)?;
                Command::PlaceBid(PlaceBid {
                    account: self.account()?,
                    price: self.price(engine, &pool)?,
                    min_gpus: match self.u.int_in_range(0..=5u8)? {
                        0 => Some(0),
                        1 => Some(1),
                        2 => Some(gpus.saturating_add(1)),
                        3 => Some(self.u.int_in_range(0..=gpus)?),
                        _ => None,
                    },
                    duration_s,
                    max_duration_s: match self.u.int_in_range(0..=3u8)? {
                        0 => Some(self.duration_s(engine, &pool)?),
                        1 => Some(duration_s.saturating_mul(2)),
                        _ => None,
                    },
                    tif,
                    expires_at,
                    persistent: self.u.ratio(1, 5)?,
                    client_order_id: if self.u.ratio(1, 5)? {
                        Some(self.pick(&["k1", "k2", ""])?.to_owned())
                    } else {
                        None
                    },
                    ssh_public_keys: if self.u.ratio(1, 8)? {
                        vec!["ssh-ed25519 AAAA k".to_owned()]
                    } else {
                        Vec::new()
                    },
                    gpus,
                    pool,
                })
            }
            30..=39 => {
                let pool = self.pool()?;
                Command::AmendBid(AmendBid {
                    account: self.account()?,
                    order_id: self.order_id()?,
                    price: if self.u.arbitrary()? {
                        Some(self.price(engine, &pool)?)
                    } else {
                        None
                    },
                    gpus: if self.u.arbitrary()? {
                        Some(self.gpus(engine, &pool)?)
                    } else {
                        None
                    },
                })
            }
            40..=45 => Command::CancelBid {
                account: self.account()?,
                order_id: self.order_id()?,
            },
            46..=62 => {
                let pool = self.pool()?;
                let gpus = self.gpus(engine, &pool)?;
                let available_from = if self.u.ratio(1, 3)? {
                    Some(self.time(now, next_timer)?)
                } else {
                    None
                };
                Command::ReleaseCapacity(ReleaseCapacity {
                    supplier: self.account()?,
                    block_id: self.block_id()?,
                    reserve_price: self.price(engine, &pool)?,
                    available_from,
                    available_until: self.time(now, next_timer)?,
                    nodes: self.nodes(gpus)?,
                    gpus,
                    pool,
                })
            }
            63..=67 => {
                let pool = self.pool()?;
                Command::UpdateCapacity(UpdateCapacity {
                    supplier: self.account()?,
                    block_id: self.block_id()?,
                    reserve_price: if self.u.arbitrary()? {
                        Some(self.price(engine, &pool)?)
                    } else {
                        None
                    },
                    available_until: if self.u.arbitrary()? {
                        Some(self.time(now, next_timer)?)
                    } else {
                        None
                    },
                })
            }
            68..=75 => {
                let pool = self.pool()?;
                Command::ReclaimCapacity(ReclaimCapacity {
                    supplier: self.account()?,
                    block_id: self.block_id()?,
                    gpus: self.gpus(engine, &pool)?,
                    notice_s: match self.u.int_in_range(0..=3u8)? {
                        0 => Some(0),
                        1 => Some(self.pick(&[1, 60, 120, 121, u32::MAX])?),
                        _ => None,
                    },
                    emergency: self.u.arbitrary()?,
                })
            }
            76..=78 => Command::ForecastReclaim {
                supplier: self.account()?,
                block_id: self.block_id()?,
                reclaim_at: self.time(now, next_timer)?,
            },
            79..=83 => Command::ReleaseLease {
                account: self.account()?,
                lease_id: self.lease_id()?,
            },
            84..=85 => Command::SetKillSwitch {
                target: if self.u.arbitrary()? {
                    KillTarget::Account(self.account()?)
                } else {
                    KillTarget::Pool(self.pool()?)
                },
                engaged: self.u.arbitrary()?,
            },
            86..=87 => Command::SetAccountLimits {
                account: self.account()?,
                limits: AccountLimits {
                    orders_open_max: self.pick(&[0, 1, 2, 1_000, u32::MAX])?,
                    open_notional_max_micros: self.pick(&[
                        0,
                        1,
                        10_000_000,
                        10_000_000_000_000,
                        u64::MAX,
                    ])?,
                },
            },
            88..=89 => Command::ConfigurePool(self.pool_config()?),
            90..=94 => Command::LeaseReady(LeaseReady {
                supplier: self.account()?,
                block_id: if self.u.ratio(1, 4)? {
                    String::new()
                } else {
                    self.block_id()?
                },
                lease_id: self.lease_id()?,
                endpoints: if self.u.ratio(1, 4)? {
                    Vec::new()
                } else {
                    vec![Endpoint {
                        node: None,
                        host: "10.0.0.1".into(),
                        port: 22,
                        user: "u".into(),
                    }]
                },
                endpoint: if self.u.ratio(1, 4)? {
                    Some("https://gw".to_owned())
                } else {
                    None
                },
            }),
            95..=96 => Command::LeaseFailed {
                supplier: self.account()?,
                block_id: self.block_id()?,
                lease_id: self.lease_id()?,
                reason: "broken".to_owned(),
            },
            97 => Command::SetSshKeys {
                account: self.account()?,
                keys: vec!["ssh-ed25519 AAAA k".to_owned()],
            },
            _ => Command::Tick,
        })
    }

    fn remember(&mut self, events: &[Event]) {
        for event in events {
            match event {
                Event::BidAccepted { order } => self.orders.push(order.id.0),
                Event::LeaseOpened { lease } => self.leases.push(lease.id.0),
                _ => {}
            }
        }
    }
}

/// The engine rebuilt from its snapshot through JSON, as after a server restart.
fn restored(engine: &Engine) -> Engine {
    let snapshot = engine.snapshot();
    let text = serde_json::to_string(&snapshot).expect("snapshot to JSON");
    let back = serde_json::from_str(&text).expect("snapshot from JSON");
    let restored = Engine::restore(back);
    restored.assert_invariants();
    assert_eq!(
        restored.state_hash(),
        engine.state_hash(),
        "a restored snapshot has another state hash"
    );
    assert!(
        restored.snapshot() == snapshot,
        "a restored snapshot has another snapshot"
    );
    restored
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let mut gen = Gen {
        u: &mut u,
        orders: Vec::new(),
        leases: Vec::new(),
    };
    let mut engine = Engine::new();
    let mut shadow: Option<Engine> = None;
    let mut events = Vec::new();
    let mut start = |engine: &mut Engine, command: Command| {
        events.clear();
        engine.apply(TimeMs(EPOCH_MS), &command, &mut events);
    };
    // Two pools to start with: a continuous one and a batch one. Their bands are narrow
    // (500 and 200 levels): `assert_invariants` walks every level after every command, and
    // the default band's 10,000 levels made it most of the run time.
    let mut continuous = PoolConfig::with_defaults("h100", "us");
    continuous.price_max = PriceMicros(5_000_000);
    start(&mut engine, Command::ConfigurePool(continuous));
    let mut batch = PoolConfig::with_defaults("a100", "eu");
    batch.tick = PriceMicros(50_000);
    batch.price_min = PriceMicros(50_000);
    batch.price_max = PriceMicros(10_000_000);
    batch.auction = AuctionMode::Batch { interval_ms: 500 };
    start(&mut engine, Command::ConfigurePool(batch));
    engine.assert_invariants();

    for _ in 0..COMMANDS_MAX {
        if gen.u.is_empty() {
            break;
        }
        // One step in 32 is a restart: from then on the restored engine runs in lockstep.
        if gen.u.ratio(1, 32)? {
            let again = restored(&engine);
            if shadow.is_none() {
                shadow = Some(again);
            } else {
                engine = again;
            }
            continue;
        }
        let at = gen.stamp(&engine)?;
        let command = gen.command(&engine)?;
        let mut events = Vec::new();
        engine.apply(at, &command, &mut events);
        engine.assert_invariants();
        if let Some(shadow) = shadow.as_mut() {
            let mut theirs = Vec::new();
            shadow.apply(at, &command, &mut theirs);
            assert_eq!(
                events, theirs,
                "a restored engine answered {command:?} differently"
            );
        }
        gen.remember(&events);
    }
    let again = restored(&engine);
    if let Some(shadow) = shadow {
        assert_eq!(
            shadow.state_hash(),
            engine.state_hash(),
            "a restored engine drifted from the original"
        );
    }
    drop(again);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
