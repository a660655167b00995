//! The plain limit-order stream through our engine: buys are bids (`min_gpus` 1, GTC), sells
//! are capacity blocks open until the far future, a sell's cancel is a reclaim of its unsold
//! GPUs. Commands are built (and applied to a recording engine, to learn the order ids the engine
//! assigns) outside the timed section; the timed engine replays them.

use crate::mix::Stamped;
use crate::setup::{self, buyer, supplier, START_MS};
use crate::stream::{BookLevels, Op, Side};
use matching_engine::{Command, Engine, Event, OrderId, ReclaimCapacity, TimeInForce, TimeMs};
use std::time::{Duration, Instant};

/// Buyer accounts the stream's bids are spread over.
pub const BUYERS: usize = 64;
/// Supplier accounts the stream's blocks are spread over.
pub const SUPPLIERS: usize = 64;
/// Stream operations per millisecond of market time: leases (an hour long) never end during
/// the stream, so GPUs never return to the book and the engine trades exactly as the model.
pub const OPS_PER_MS: i64 = 1_000;

/// Builds our commands for the stream.
pub struct OursStreamBuilder {
    engine: Engine,
    out: Vec<Event>,
    /// handle -> order id (bids only).
    order_ids: Vec<OrderId>,
    ops: i64,
    buyers: Vec<String>,
    suppliers: Vec<String>,
    /// Rejections seen while recording (the stream should cause none).
    pub rejected: u64,
}

impl Default for OursStreamBuilder {
    fn default() -> Self {
        OursStreamBuilder {
            engine: Engine::new(),
            out: Vec::new(),
            order_ids: Vec::new(),
            ops: 0,
            buyers: (0..BUYERS).map(buyer).collect(),
            suppliers: (0..SUPPLIERS).map(supplier).collect(),
            rejected: 0,
        }
    }
}

impl OursStreamBuilder {
    /// The pool and the accounts (applied untimed to every engine).
    pub fn setup(&mut self) -> Vec<Stamped> {
        setup::setup_commands(BUYERS, SUPPLIERS)
            .into_iter()
            .map(|command| self.record(command))
            .collect()
    }

    /// Our commands for a slice of the stream.
    pub fn build(&mut self, ops: &[Op]) -> Vec<Stamped> {
        ops.iter()
            .map(|op| {
                let command = match *op {
                    Op::Place {
                        handle,
                        side: Side::Buy,
                        price_ticks,
                        quantity,
                    } => setup::bid(
                        self.buyers[handle as usize % BUYERS].clone(),
                        price_ticks,
                        quantity,
                        TimeInForce::Gtc,
                    ),
                    Op::Place {
                        handle,
                        side: Side::Sell,
                        price_ticks,
                        quantity,
                    } => setup::block(
                        self.suppliers[handle as usize % SUPPLIERS].clone(),
                        format!("b{handle}"),
                        price_ticks,
                        quantity,
                    ),
                    Op::Cancel {
                        handle,
                        side: Side::Buy,
                        ..
                    } => Command::CancelBid {
                        account: self.buyers[handle as usize % BUYERS].clone(),
                        order_id: self.order_ids[handle as usize],
                    },
                    Op::Cancel {
                        handle,
                        side: Side::Sell,
                        remaining,
                    } => Command::ReclaimCapacity(ReclaimCapacity {
                        supplier: self.suppliers[handle as usize % SUPPLIERS].clone(),
                        block_id: format!("b{handle}"),
                        gpus: remaining,
                        notice_s: None,
                        emergency: false,
                    }),
                };
                if let Op::Place { handle, .. } = *op {
                    debug_assert_eq!(handle as usize, self.order_ids.len());
                    self.order_ids.push(OrderId(0));
                }
                let stamped = self.record(command);
                if let Op::Place {
                    handle,
                    side: Side::Buy,
                    ..
                } = *op
                {
                    self.order_ids[handle as usize] = self
                        .out
                        .iter()
                        .find_map(|event| match event {
                            Event::BidAccepted { order } => Some(order.id),
                            _ => None,
                        })
                        .expect("every bid of the stream is accepted");
                }
                stamped
            })
            .collect()
    }

    fn record(&mut self, command: Command) -> Stamped {
        let at = TimeMs(START_MS + self.ops / OPS_PER_MS);
        self.ops += 1;
        self.out.clear();
        self.engine.apply(at, &command, &mut self.out);
        self.rejected += self
            .out
            .iter()
            .filter(|event| matches!(event, Event::Rejected { .. }))
            .count() as u64;
        (at, command)
    }

    /// The recording engine (in the state the timed replay reaches).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// Applies stamped commands back to back; returns the time they took. Events are dropped as
/// they come (a consumer must at least do that), inside the timed section.
pub fn replay(engine: &mut Engine, commands: &[Stamped], out: &mut Vec<Event>) -> Duration {
    let started = Instant::now();
    for (at, command) in commands {
        engine.apply(*at, command, out);
        out.clear();
    }
    started.elapsed()
}

/// Aggregated levels `(price_ticks, gpus)` of our pool, best first.
pub fn levels(engine: &Engine) -> BookLevels {
    let depth = engine
        .depth(setup::POOL, usize::MAX)
        .expect("the benchmark pool exists");
    let convert = |levels: &[matching_engine::Level]| {
        levels
            .iter()
            .map(|level| (setup::ticks(level.price), level.gpus))
            .collect()
    };
    (convert(&depth.bids), convert(&depth.asks))
}
