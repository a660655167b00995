//! The market every benchmark runs in: one continuous pool with the default tick and band, and
//! accounts whose pre-trade limits are raised out of the way.

use matching_engine::{
    AccountLimits, Command, Engine, PlaceBid, PoolConfig, PriceMicros, ReleaseCapacity,
    TimeInForce, TimeMs,
};

/// The pool's id.
pub const POOL: &str = "h100-sxm.us-east";
/// The pool's tick in micro-dollars ($0.01, the default).
pub const TICK_MICROS: u64 = 10_000;
/// The benchmark's clock starts at 2026-01-01T00:00:00Z.
pub const START_MS: i64 = 1_767_225_600_000;
/// Block windows end ten years after the start: far enough never to close during a run.
pub const FAR_FUTURE: TimeMs = TimeMs(START_MS + 10 * 365 * 24 * 3600 * 1000);
/// The lease length bids ask for.
pub const DURATION_S: u32 = 3600;

/// The pool's settings: the DESIGN defaults ($0.01 tick, $0.01 to $100.00 band).
pub fn pool_config() -> PoolConfig {
    PoolConfig::with_defaults("h100-sxm", "us-east")
}

/// The n-th buyer's account id.
pub fn buyer(n: usize) -> String {
    format!("buyer-{n}")
}

/// The n-th supplier's account id.
pub fn supplier(n: usize) -> String {
    format!("supplier-{n}")
}

/// A price given in ticks.
pub fn price(ticks: u32) -> PriceMicros {
    PriceMicros(ticks as u64 * TICK_MICROS)
}

/// A price in ticks.
pub fn ticks(price: PriceMicros) -> u32 {
    (price.0 / TICK_MICROS) as u32
}

/// Configures the pool and lifts the limits of `buyers` buyers and `suppliers` suppliers.
pub fn setup_commands(buyers: usize, suppliers: usize) -> Vec<Command> {
    let limits = AccountLimits {
        orders_open_max: u32::MAX,
        open_notional_max_micros: u64::MAX,
    };
    let mut commands = vec![Command::ConfigurePool(pool_config())];
    let accounts = (0..buyers).map(buyer).chain((0..suppliers).map(supplier));
    commands.extend(accounts.map(|account| Command::SetAccountLimits { account, limits }));
    commands
}

/// A bid that accepts partial fills (`min_gpus` 1) for an hour-long lease.
pub fn bid(account: String, price_ticks: u32, gpus: u32, tif: TimeInForce) -> Command {
    Command::PlaceBid(PlaceBid {
        account,
        pool: POOL.to_owned(),
        gpus,
        min_gpus: Some(1),
        price: price(price_ticks),
        duration_s: DURATION_S,
        max_duration_s: None,
        tif,
        expires_at: None,
        persistent: false,
        client_order_id: None,
        ssh_public_keys: Vec::new(),
    })
}

/// A capacity block open from now until `FAR_FUTURE`.
pub fn block(supplier: String, block_id: String, price_ticks: u32, gpus: u32) -> Command {
    Command::ReleaseCapacity(ReleaseCapacity {
        supplier,
        block_id,
        pool: POOL.to_owned(),
        gpus,
        reserve_price: price(price_ticks),
        available_from: None,
        available_until: FAR_FUTURE,
        nodes: vec![],
    })
}

/// What the engine holds for the first `buyers` buyers and `suppliers` suppliers at the end
/// of a run: state that outlives the orders on the book.
pub struct Holdings {
    /// Blocks known (every one until its window closes).
    pub blocks: usize,
    /// Of those, blocks with no GPU left to sell.
    pub nothing_to_sell: usize,
    /// Of those, blocks with no GPU leased either (the rest reclaimed): no running lease
    /// refers to them, so only their window keeps them.
    pub none_leased: usize,
    /// Leases running.
    pub leases: usize,
}

impl std::fmt::Display for Holdings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} blocks known ({} with nothing left to sell, {} of them with none leased), {} leases running",
            self.blocks, self.nothing_to_sell, self.none_leased, self.leases
        )
    }
}

/// The engine's [`Holdings`] (not timed; scans every block and lease).
pub fn holdings(engine: &Engine, buyers: usize, suppliers: usize) -> Holdings {
    let mut held = Holdings {
        blocks: 0,
        nothing_to_sell: 0,
        none_leased: 0,
        leases: (0..buyers).map(|n| engine.leases_of(&buyer(n)).len()).sum(),
    };
    for block in (0..suppliers).flat_map(|n| engine.blocks_of(&supplier(n))) {
        held.blocks += 1;
        if block.gpus_unsold == 0 {
            held.nothing_to_sell += 1;
            if block.gpus_sold == 0 {
                held.none_leased += 1;
            }
        }
    }
    held
}
