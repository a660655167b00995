//! The exchange-core style mix on one pool: about 1,000 resting orders over about 750 price
//! levels; 9% GTC places, 3% IOC bids, 6% cancels, 82% amends that move the price.
//!
//! Both sides rest. Bids are buyers' bids; asks are capacity blocks, so on the ask side a place
//! is a block release, an amend is an `UpdateCapacity` of the reserve price and a cancel is a
//! reclaim of the block's unsold GPUs (with the pool's notice; nothing is preempted because only
//! unsold GPUs are taken). IOC exists only for bids, so IOCs are always bids that cross into the
//! asks; places and cancels pick the side that keeps the two sides near 500 orders each, and the
//! IOC size steers the total towards 1,000.
//!
//! Prices: bids rest uniformly on `[centre - 900, centre)`, asks on `[centre, centre + 900)`
//! (ticks), which occupies about 750 levels with 1,000 orders; an amend moves an order to a new
//! random price on its side, so amends never cross. IOC bids are priced up to 20 ticks through
//! the best ask.
//!
//! The generator drives its own copy of the engine and reads its events to know which orders
//! rest, so every command it emits names a live order; the benchmark replays the emitted
//! commands on fresh engines, which (the engine being deterministic) reach the same states.

use crate::live::LiveSet;
use crate::setup::{self, block, buyer, supplier, ticks, START_MS};
use matching_engine::{
    AmendBid, BlockStatus, Command, Engine, Event, OrderId, OrderStatus, ReclaimCapacity,
    TimeInForce, TimeMs, UpdateCapacity,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Centre price in ticks ($20.00).
pub const CENTRE_TICKS: u32 = 2_000;
/// Width of each side's price range in ticks.
pub const SIDE_RANGE_TICKS: u32 = 900;
/// Resting orders per side the generator steers towards.
pub const PER_SIDE_TARGET: usize = 500;
/// How far above the best ask an IOC bid is priced, at most (ticks).
pub const IOC_THROUGH_TICKS: u32 = 20;
/// Buyer accounts the bids are spread over.
pub const BUYERS: usize = 64;
/// Supplier accounts the blocks are spread over.
pub const SUPPLIERS: usize = 64;
/// Commands per millisecond of market time (a million a second). At that pace no hour-long
/// lease ends during a run: an ended lease would put its GPUs back on the book, and the book
/// would then grow without bound, since only cancels could take orders off it for good.
pub const COMMANDS_PER_MS: i64 = 1_000;

/// A command and the time it is applied at.
pub type Stamped = (TimeMs, Command);

/// Counts of what the generator emitted.
#[derive(Clone, Copy, Debug, Default)]
pub struct MixCounts {
    /// GTC bids placed.
    pub gtc_bids: u64,
    /// Blocks released.
    pub blocks_released: u64,
    /// IOC bids.
    pub ioc_bids: u64,
    /// Bids cancelled.
    pub bid_cancels: u64,
    /// Blocks reclaimed (their unsold GPUs).
    pub block_reclaims: u64,
    /// Bid price amends.
    pub bid_amends: u64,
    /// Block reserve price updates.
    pub block_updates: u64,
    /// Trades seen.
    pub trades: u64,
    /// Rejections seen (the mix should cause none).
    pub rejected: u64,
}

impl MixCounts {
    /// All commands counted.
    pub fn total(&self) -> u64 {
        self.gtc_bids
            + self.blocks_released
            + self.ioc_bids
            + self.bid_cancels
            + self.block_reclaims
            + self.bid_amends
            + self.block_updates
    }
}

/// Emits the mix, one command at a time, applying each to its own engine.
pub struct MixGenerator {
    rng: ChaCha8Rng,
    engine: Engine,
    out: Vec<Event>,
    /// Resting bids: order id -> (buyer index, price ticks).
    bids: LiveSet<(usize, u32)>,
    /// Blocks with GPUs on the book: block number -> (price ticks, unsold GPUs).
    blocks: LiveSet<(u32, u32)>,
    next_block: u64,
    commands: i64,
    buyers: Vec<String>,
    suppliers: Vec<String>,
    /// What was emitted so far.
    pub counts: MixCounts,
}

impl MixGenerator {
    /// A generator drawing from `rng`.
    pub fn new(rng: ChaCha8Rng) -> MixGenerator {
        MixGenerator {
            rng,
            engine: Engine::new(),
            out: Vec::new(),
            bids: LiveSet::default(),
            blocks: LiveSet::default(),
            next_block: 0,
            commands: 0,
            buyers: (0..BUYERS).map(buyer).collect(),
            suppliers: (0..SUPPLIERS).map(supplier).collect(),
            counts: MixCounts::default(),
        }
    }

    /// The generator's own engine (in the state every replay reaches).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Resting bids and blocks on the book now.
    pub fn resting(&self) -> (usize, usize) {
        (self.bids.len(), self.blocks.len())
    }

    /// The pool, the accounts, and the initial book of `PER_SIDE_TARGET` orders per side.
    pub fn setup(&mut self) -> Vec<Stamped> {
        let mut commands: Vec<Stamped> = setup::setup_commands(BUYERS, SUPPLIERS)
            .into_iter()
            .map(|command| self.emit(command))
            .collect();
        while self.bids.len() < PER_SIDE_TARGET || self.blocks.len() < PER_SIDE_TARGET {
            let command = if self.bids.len() < self.blocks.len() {
                self.gtc_bid()
            } else {
                self.release()
            };
            commands.push(self.emit(command));
        }
        commands
    }

    /// The next `n` commands of the mix.
    pub fn chunk(&mut self, n: usize) -> Vec<Stamped> {
        (0..n)
            .map(|_| {
                let command = self.next_command();
                self.emit(command)
            })
            .collect()
    }

    fn next_command(&mut self) -> Command {
        let roll = self.rng.gen_range(0..100);
        let (bids, blocks) = (self.bids.len(), self.blocks.len());
        match roll {
            0..=8 => {
                // A place goes to the thinner side.
                let bid_side = match bids == blocks {
                    true => self.rng.gen_bool(0.5),
                    false => bids < blocks,
                };
                if bid_side {
                    self.gtc_bid()
                } else {
                    self.release()
                }
            }
            9..=11 => self.ioc_bid(),
            12..=17 => {
                // A cancel comes from the thicker side.
                let bid_side = match bids == blocks {
                    true => self.rng.gen_bool(0.5),
                    false => bids > blocks,
                };
                match (bid_side, bids == 0, blocks == 0) {
                    (_, true, true) => self.gtc_bid(),
                    (true, false, _) | (false, false, true) => self.cancel_bid(),
                    _ => self.reclaim(),
                }
            }
            _ => {
                if bids + blocks == 0 {
                    return self.gtc_bid();
                }
                if self.rng.gen_range(0..bids + blocks) < bids {
                    self.amend_bid()
                } else {
                    self.update_block()
                }
            }
        }
    }

    fn gtc_bid(&mut self) -> Command {
        self.counts.gtc_bids += 1;
        let price = self
            .rng
            .gen_range(CENTRE_TICKS - SIDE_RANGE_TICKS..CENTRE_TICKS);
        let gpus = self.rng.gen_range(1..=16);
        let account = self.buyers[self.rng.gen_range(0..BUYERS)].clone();
        setup::bid(account, price, gpus, TimeInForce::Gtc)
    }

    fn ioc_bid(&mut self) -> Command {
        self.counts.ioc_bids += 1;
        // A larger IOC takes more blocks off the book: the book's size regulator.
        let total = self.bids.len() + self.blocks.len();
        let gpus = if total > 2 * PER_SIDE_TARGET {
            self.rng.gen_range(16..=48)
        } else {
            self.rng.gen_range(1..=6)
        };
        // Priced a little through the best ask, so it trades whenever there is supply.
        let best_ask = self
            .engine
            .depth(setup::POOL, 1)
            .and_then(|depth| depth.asks.first().map(|level| ticks(level.price)))
            .unwrap_or(CENTRE_TICKS);
        let through = self.rng.gen_range(0..=IOC_THROUGH_TICKS);
        let account = self.buyers[self.rng.gen_range(0..BUYERS)].clone();
        setup::bid(account, best_ask + through, gpus, TimeInForce::Ioc)
    }

    fn release(&mut self) -> Command {
        self.counts.blocks_released += 1;
        let number = self.next_block;
        self.next_block += 1;
        let price = self
            .rng
            .gen_range(CENTRE_TICKS..CENTRE_TICKS + SIDE_RANGE_TICKS);
        let gpus = self.rng.gen_range(1..=16);
        block(
            self.suppliers[number as usize % SUPPLIERS].clone(),
            format!("b{number}"),
            price,
            gpus,
        )
    }

    fn cancel_bid(&mut self) -> Command {
        self.counts.bid_cancels += 1;
        let (id, &(account, _)) = self.bids.pick(&mut self.rng).expect("a resting bid");
        Command::CancelBid {
            account: self.buyers[account].clone(),
            order_id: OrderId(id),
        }
    }

    fn reclaim(&mut self) -> Command {
        self.counts.block_reclaims += 1;
        let (number, &(_, unsold)) = self.blocks.pick(&mut self.rng).expect("a resting block");
        Command::ReclaimCapacity(ReclaimCapacity {
            supplier: self.suppliers[number as usize % SUPPLIERS].clone(),
            block_id: format!("b{number}"),
            gpus: unsold,
            notice_s: None,
            emergency: false,
        })
    }

    fn amend_bid(&mut self) -> Command {
        self.counts.bid_amends += 1;
        let (id, &(account, old)) = self.bids.pick(&mut self.rng).expect("a resting bid");
        let low = CENTRE_TICKS - SIDE_RANGE_TICKS;
        let price = moved_price(&mut self.rng, low, old);
        Command::AmendBid(AmendBid {
            account: self.buyers[account].clone(),
            order_id: OrderId(id),
            price: Some(setup::price(price)),
            gpus: None,
        })
    }

    fn update_block(&mut self) -> Command {
        self.counts.block_updates += 1;
        let (number, &(old, _)) = self.blocks.pick(&mut self.rng).expect("a resting block");
        let price = moved_price(&mut self.rng, CENTRE_TICKS, old);
        Command::UpdateCapacity(UpdateCapacity {
            supplier: self.suppliers[number as usize % SUPPLIERS].clone(),
            block_id: format!("b{number}"),
            reserve_price: Some(setup::price(price)),
            available_until: None,
        })
    }

    /// Applies a command to the generator's engine and learns from its events.
    fn emit(&mut self, command: Command) -> Stamped {
        let at = TimeMs(START_MS + self.commands / COMMANDS_PER_MS);
        self.commands += 1;
        self.out.clear();
        self.engine.apply(at, &command, &mut self.out);
        for event in &self.out {
            match event {
                Event::BidAccepted { order } | Event::OrderChanged { order } => {
                    if order.status == OrderStatus::Open {
                        let account = order
                            .account
                            .strip_prefix("buyer-")
                            .and_then(|n| n.parse().ok())
                            .expect("a benchmark buyer");
                        self.bids.upsert(order.id.0, (account, ticks(order.price)));
                    } else {
                        self.bids.remove(order.id.0);
                    }
                }
                Event::BlockChanged { block } => {
                    let number: u64 = block.block_id[1..].parse().expect("a benchmark block");
                    if block.status == BlockStatus::Open && block.gpus_unsold > 0 {
                        self.blocks
                            .upsert(number, (ticks(block.reserve_price), block.gpus_unsold));
                    } else {
                        self.blocks.remove(number);
                    }
                }
                Event::Traded { .. } => self.counts.trades += 1,
                Event::Rejected { .. } => self.counts.rejected += 1,
                _ => {}
            }
        }
        (at, command)
    }
}

/// A new price on `[low, low + SIDE_RANGE_TICKS)` different from `old`.
fn moved_price(rng: &mut ChaCha8Rng, low: u32, old: u32) -> u32 {
    loop {
        let price = rng.gen_range(low..low + SIDE_RANGE_TICKS);
        if price != old {
            return price;
        }
    }
}
