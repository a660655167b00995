//! Resident memory per resting bid: the growth of the process's resident set while a fresh
//! engine takes `n` non-crossing bids spread over most of the pool's band.

use crate::measure::resident_bytes;
use crate::setup::{self, buyer, START_MS};
use matching_engine::{Engine, Event, TimeInForce, TimeMs};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Buyer accounts the bids are spread over.
pub const BUYERS: usize = 1_000;
/// Bids rest on ticks 1..=PRICE_LEVELS (of the band's 10,000); there are no asks, so none trades.
pub const PRICE_LEVELS: u32 = 9_000;

/// What the measurement saw.
#[derive(Clone, Copy, Debug)]
pub struct MemoryReport {
    /// Bids placed.
    pub bids: u64,
    /// Bids resting at the end (should equal `bids`).
    pub resting: u64,
    /// Resident set before the bids, after the pool and accounts were set up.
    pub rss_before: u64,
    /// Resident set with all the bids resting.
    pub rss_after: u64,
}

impl MemoryReport {
    /// Resident bytes per resting bid.
    pub fn bytes_per_order(&self) -> u64 {
        self.rss_after.saturating_sub(self.rss_before) / self.resting.max(1)
    }
}

/// Places `n` bids on a fresh engine and measures the resident set before and after. The
/// engine is returned so that it is dropped only after the caller is done measuring.
pub fn measure(rng: &mut ChaCha8Rng, n: u64) -> (MemoryReport, Engine) {
    let mut engine = Engine::new();
    let mut out: Vec<Event> = Vec::with_capacity(64);
    let at = TimeMs(START_MS);
    for command in setup::setup_commands(BUYERS, 0) {
        engine.apply(at, &command, &mut out);
        out.clear();
    }
    let buyers: Vec<String> = (0..BUYERS).map(buyer).collect();
    let rss_before = resident_bytes();
    let mut resting = 0;
    for n in 0..n {
        let price = 1 + (n as u32).wrapping_mul(7_919) % PRICE_LEVELS;
        let gpus = rng.gen_range(1..=8);
        let account = buyers[n as usize % BUYERS].clone();
        let command = setup::bid(account, price, gpus, TimeInForce::Gtc);
        engine.apply(at, &command, &mut out);
        resting += out
            .iter()
            .filter(|event| matches!(event, Event::BidAccepted { .. }))
            .count() as u64;
        out.clear();
    }
    let rss_after = resident_bytes();
    let report = MemoryReport {
        bids: n,
        resting,
        rss_before,
        rss_after,
    };
    (report, engine)
}
