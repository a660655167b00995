//! Which pools exist at start: the pool file's settings, or the default pools on a fresh
//! journal.
//!
//! Pools are engine state like any other, so they are configured by journaled
//! `ConfigurePool` commands, never behind the journal's back: a replay rebuilds them. Only the
//! pools whose settings differ from the engine's are journaled, so restarting with the same
//! file journals nothing.

use matching_engine::{Command, Engine, PoolConfig};

/// Which pools to make sure exist at start.
#[derive(Clone, Debug)]
pub enum PoolsSetup {
    /// Exactly these settings (journaled as `ConfigurePool` where the engine differs).
    File(Vec<PoolConfig>),
    /// The default pools, on a fresh journal only.
    Defaults,
}

/// The default model pool's model, the GPU its deployment runs on, and the tokens per second
/// it guarantees per GPU (a 70B model on H100s: a few hundred tokens/s per GPU at batch).
pub const DEFAULT_MODEL_POOL: (&str, &str, &str, u32) =
    ("llama-3.1-70b-instruct", "h100-sxm", "us-east", 400);

/// The default pools: H100 and A100 in two regions, and one model pool (DESIGN section 12).
pub fn default_pools() -> Vec<PoolConfig> {
    let mut pools = Vec::new();
    for gpu in ["h100-sxm", "a100-80gb"] {
        for region in ["us-east", "eu-west"] {
            pools.push(PoolConfig::with_defaults(gpu, region));
        }
    }
    let (model, gpu, region, tokens_per_s_per_gpu) = DEFAULT_MODEL_POOL;
    pools.push(PoolConfig::model_with_defaults(
        model,
        gpu,
        region,
        tokens_per_s_per_gpu,
    ));
    pools
}

/// The commands that bring `engine` (at journal position `seq`) to the wanted pools.
pub(super) fn pool_commands(engine: &Engine, seq: u64, pools: &PoolsSetup) -> Vec<Command> {
    match pools {
        PoolsSetup::File(list) => list
            .iter()
            .filter(|wanted| engine.pool(&wanted.id).map(|p| p.config).as_ref() != Some(*wanted))
            .cloned()
            .map(Command::ConfigurePool)
            .collect(),
        PoolsSetup::Defaults if seq == 0 && engine.pools().is_empty() => default_pools()
            .into_iter()
            .map(Command::ConfigurePool)
            .collect(),
        PoolsSetup::Defaults => Vec::new(),
    }
}
