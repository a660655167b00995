//! The plain limit-order stream both engines are fed in the side-by-side run: places, cancels and
//! crossing places on both sides, partial fills allowed, every order good till cancelled.
//!
//! The stream is engine-neutral: orders are named by a handle (the n-th place of the stream) and
//! prices are in ticks. A deliberately simple price-time book (`Model`) runs alongside the
//! generator so that every cancel names an order that is still resting; both engines must end in
//! the model's state, which the benchmark checks after the timed runs.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Which side an order rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Demand (our bids).
    Buy,
    /// Supply (our capacity blocks).
    Sell,
}

/// One operation of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A good-till-cancelled limit order; it trades with whatever it crosses, the rest rests.
    Place {
        /// The n-th place of the stream.
        handle: u32,
        /// Its side.
        side: Side,
        /// Limit price in ticks.
        price_ticks: u32,
        /// Quantity (GPUs).
        quantity: u32,
    },
    /// Cancels a resting order.
    Cancel {
        /// The order's handle.
        handle: u32,
        /// Its side.
        side: Side,
        /// Quantity still resting (what a supplier reclaims to take a block off the book).
        remaining: u32,
    },
}

/// Aggregated levels `(price_ticks, quantity)` of both sides, best first: bids, then asks.
pub type BookLevels = (Vec<(u32, u64)>, Vec<(u32, u64)>);

/// Centre of the stream's prices, in ticks ($20.00 at a $0.01 tick).
pub const CENTRE_TICKS: u32 = 2_000;
/// Prices stay inside 1..=PRICE_TICKS_MAX (the default pool band: $0.01 to $99.99).
pub const PRICE_TICKS_MAX: u32 = 9_999;
/// Resting orders the generator steers towards.
pub const RESTING_TARGET: usize = 2_000;

/// A naive price-time book: the ground truth the generator draws cancels from.
#[derive(Default)]
pub struct Model {
    bids: BTreeMap<u32, VecDeque<(u32, u32)>>,
    asks: BTreeMap<u32, VecDeque<(u32, u32)>>,
    /// handle -> (side, price) of every resting order.
    resting: HashMap<u32, (Side, u32)>,
    /// Resting handles, for uniform random picks.
    handles: Vec<u32>,
    /// handle -> index in `handles`.
    positions: HashMap<u32, usize>,
    /// Executions so far (one per resting order touched).
    pub trades: u64,
}

impl Model {
    /// Resting orders.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether nothing rests.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Best bid and best ask, in ticks.
    pub fn best(&self) -> (Option<u32>, Option<u32>) {
        (
            self.bids.keys().next_back().copied(),
            self.asks.keys().next().copied(),
        )
    }

    /// Aggregated levels `(price_ticks, quantity)` per side, best first.
    pub fn levels(&self) -> BookLevels {
        let sum = |queue: &VecDeque<(u32, u32)>| queue.iter().map(|(_, q)| *q as u64).sum();
        (
            self.bids.iter().rev().map(|(p, q)| (*p, sum(q))).collect(),
            self.asks.iter().map(|(p, q)| (*p, sum(q))).collect(),
        )
    }

    /// Quantity resting on the opposite side at prices a `side` order at `price` would trade at.
    pub fn crossable(&self, side: Side, price: u32) -> u64 {
        let sum = |queue: &VecDeque<(u32, u32)>| queue.iter().map(|(_, q)| *q as u64).sum::<u64>();
        match side {
            Side::Buy => self.asks.range(..=price).map(|(_, q)| sum(q)).sum(),
            Side::Sell => self.bids.range(price..).map(|(_, q)| sum(q)).sum(),
        }
    }

    fn forget(&mut self, handle: u32) {
        self.resting.remove(&handle);
        let index = self.positions.remove(&handle).expect("resting handle");
        self.handles.swap_remove(index);
        if let Some(moved) = self.handles.get(index) {
            self.positions.insert(*moved, index);
        }
    }

    /// Applies a place: trades against the opposite side in price-time order, rests the rest.
    pub fn place(&mut self, handle: u32, side: Side, price: u32, mut quantity: u32) {
        loop {
            if quantity == 0 {
                return;
            }
            let opposite = match side {
                Side::Buy => self.asks.first_entry().filter(|e| *e.key() <= price),
                Side::Sell => self.bids.last_entry().filter(|e| *e.key() >= price),
            };
            let Some(mut level) = opposite else { break };
            let queue = level.get_mut();
            let mut filled = vec![];
            while quantity > 0 {
                let Some(front) = queue.front_mut() else {
                    break;
                };
                let take = front.1.min(quantity);
                front.1 -= take;
                quantity -= take;
                self.trades += 1;
                if front.1 == 0 {
                    filled.push(front.0);
                    queue.pop_front();
                }
            }
            if queue.is_empty() {
                level.remove();
            }
            for done in filled {
                self.forget(done);
            }
        }
        let book = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        book.entry(price).or_default().push_back((handle, quantity));
        self.resting.insert(handle, (side, price));
        self.positions.insert(handle, self.handles.len());
        self.handles.push(handle);
    }

    /// Removes a resting order; returns its side and remaining quantity.
    pub fn cancel(&mut self, handle: u32) -> (Side, u32) {
        let (side, price) = self.resting[&handle];
        let book = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let queue = book.get_mut(&price).expect("level of a resting order");
        let at = queue
            .iter()
            .position(|(h, _)| *h == handle)
            .expect("queued");
        let (_, remaining) = queue.remove(at).expect("queued");
        if queue.is_empty() {
            book.remove(&price);
        }
        self.forget(handle);
        (side, remaining)
    }
}

/// Generates the stream, keeping the book near `RESTING_TARGET` orders around a slowly
/// mean-reverting mid price.
pub struct StreamGenerator {
    rng: ChaCha8Rng,
    /// The book after every operation generated so far.
    pub model: Model,
    next_handle: u32,
    /// Places generated (crossing or not).
    pub places: u64,
    /// Places priced through the opposite best.
    pub crossing_places: u64,
    /// Cancels generated.
    pub cancels: u64,
}

impl StreamGenerator {
    /// A generator drawing from `rng`.
    pub fn new(rng: ChaCha8Rng) -> StreamGenerator {
        StreamGenerator {
            rng,
            model: Model::default(),
            next_handle: 0,
            places: 0,
            crossing_places: 0,
            cancels: 0,
        }
    }

    /// The next operation (already applied to the model).
    pub fn next_op(&mut self) -> Op {
        let resting = self.model.len();
        let cancel_probability = if resting >= RESTING_TARGET { 0.5 } else { 0.1 };
        if !self.model.is_empty() && self.rng.gen_bool(cancel_probability) {
            let handle = self.model.handles[self.rng.gen_range(0..resting)];
            let (side, remaining) = self.model.cancel(handle);
            self.cancels += 1;
            return Op::Cancel {
                handle,
                side,
                remaining,
            };
        }
        let (best_bid, best_ask) = self.model.best();
        let mid = match (best_bid, best_ask) {
            (Some(b), Some(a)) => (a + b) / 2,
            (Some(b), None) => b,
            (None, Some(a)) => a,
            (None, None) => CENTRE_TICKS,
        };
        let crossing_drawn = self.rng.gen_bool(0.2);
        let (side, price_ticks, quantity) = match (crossing_drawn, best_bid, best_ask) {
            (true, Some(bid), Some(ask)) => {
                // Lean against the drift: above the centre, sellers cross more often.
                let drift = (mid as f64 - CENTRE_TICKS as f64) / 1_000.0;
                let buy = self.rng.gen_bool((0.5 - drift).clamp(0.1, 0.9));
                let through = self.rng.gen_range(0..=5);
                let (side, price) = match buy {
                    true => (Side::Buy, ask + through),
                    false => (Side::Sell, bid.saturating_sub(through).max(1)),
                };
                // A crossing order never asks for more than rests within its limit: matchcore
                // 0.4.0 sweeps a crossing limit order through the book with no price limit
                // (`submit_crossable_order` passes `None` to `match_order`), so a larger one
                // would trade differently there. Makers still fill partially.
                let available = self.model.crossable(side, price).min(48) as u32;
                (side, price, self.rng.gen_range(1..=available))
            }
            _ => {
                let away = self.rng.gen_range(1..=100);
                let quantity = self.rng.gen_range(1..=32);
                match self.rng.gen_bool(0.5) {
                    true => (
                        Side::Buy,
                        best_ask.unwrap_or(mid + 1).saturating_sub(away),
                        quantity,
                    ),
                    false => (Side::Sell, best_bid.unwrap_or(mid) + away, quantity),
                }
            }
        };
        let crossing = crossing_drawn && best_bid.is_some() && best_ask.is_some();
        let price_ticks = price_ticks.clamp(1, PRICE_TICKS_MAX);
        let handle = self.next_handle;
        self.next_handle += 1;
        self.places += 1;
        self.crossing_places += crossing as u64;
        self.model.place(handle, side, price_ticks, quantity);
        Op::Place {
            handle,
            side,
            price_ticks,
            quantity,
        }
    }
}
