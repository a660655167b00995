//! Pool settings as people write them (the pools file, the admin API): prices in USD, every
//! field but `gpu` and `region` optional with the DESIGN defaults.
//!
//! ```json
//! [{"gpu": "h100-sxm", "region": "us-east", "tick": "0.01", "notice_s": 120,
//!   "auction": {"kind": "batch", "interval_ms": 500}}]
//! ```

use crate::limits::GPUS_PER_ORDER_MAX;
use crate::money::ApiPrice;
use anyhow::Context;
use matching_engine::{AuctionMode, Handoff, Offering, PoolConfig, PROVISION_TIMEOUT_S_MAX};
use serde::Deserialize;
use std::path::Path;

/// One pool's settings; missing fields take `PoolConfig::with_defaults`, except that
/// `price_min` defaults to the tick when a tick is given.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"gpu": "h100-sxm", "region": "us-east"}))]
pub struct PoolSpec {
    /// `<gpu>.<region>`; optional, but must match when given.
    #[schema(
        pattern = r"^[a-z0-9][a-z0-9.-]{0,31}\.[a-z0-9-]{1,31}$",
        max_length = 64
    )]
    pub id: Option<String>,
    /// GPU model.
    #[schema(
        pattern = r"^[a-z0-9-]{1,31}$",
        min_length = 1,
        max_length = 31,
        example = "h100-sxm"
    )]
    pub gpu: String,
    /// Region.
    #[schema(
        pattern = r"^[a-z0-9-]{1,31}$",
        min_length = 1,
        max_length = 31,
        example = "us-east"
    )]
    pub region: String,
    /// Price grid (USD).
    pub tick: Option<ApiPrice>,
    /// Lowest price (USD).
    pub price_min: Option<ApiPrice>,
    /// Highest price (USD).
    pub price_max: Option<ApiPrice>,
    /// Most GPUs per bid or block.
    #[schema(minimum = 1, maximum = 1000000)]
    pub gpus_per_order_max: Option<u32>,
    /// Shortest lease.
    #[schema(minimum = 1)]
    pub duration_min_s: Option<u32>,
    /// Longest lease, at least `duration_min_s`.
    #[schema(minimum = 1)]
    pub duration_max_s: Option<u32>,
    /// Guaranteed preemption notice.
    pub notice_s: Option<u32>,
    /// Free if preempted this early.
    pub free_if_preempted_within_s: Option<u32>,
    /// Continuous or batch.
    pub auction: Option<AuctionMode>,
    /// `bare_metal` (default) or `model` (GPUs of a managed model deployment; the pool's id is
    /// then `<model>.<region>`, and `gpu` names what the deployment runs on).
    pub offering: Option<Offering>,
    /// Model pools: the model served, e.g. `llama-3.1-70b-instruct`.
    #[schema(pattern = r"^[a-z0-9][a-z0-9.-]{0,31}$", max_length = 32)]
    pub model: Option<String>,
    /// Model pools: the tokens per second the supplier guarantees per GPU.
    #[schema(minimum = 1)]
    pub tokens_per_s_per_gpu: Option<u32>,
    /// `required` (default: leases are billed from the supplier's `ready`) or `none` (from
    /// their start; access is handed over outside offpeak).
    pub handoff: Option<Handoff>,
    /// Seconds a lease may stay provisioning before it fails (default 600).
    #[schema(minimum = 1, maximum = 86400)]
    pub provision_timeout_s: Option<u32>,
}

/// Longest model name (it and the region make a pool id of at most 64 bytes).
pub const MODEL_NAME_BYTES_MAX: usize = 32;

fn is_model_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MODEL_NAME_BYTES_MAX
        && text.as_bytes()[0].is_ascii_alphanumeric()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn is_id_part(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 31
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl PoolSpec {
    /// The engine's settings for this spec.
    pub fn to_config(&self) -> Result<PoolConfig, String> {
        if !is_id_part(&self.gpu) || !is_id_part(&self.region) {
            return Err("gpu and region must be 1..=31 characters of [a-z0-9-]".into());
        }
        let mut config = PoolConfig::with_defaults(&self.gpu, &self.region);
        if let Some(offering) = self.offering {
            config.offering = offering;
        }
        match (config.offering, &self.model, self.tokens_per_s_per_gpu) {
            (Offering::BareMetal, None, None) => {}
            (Offering::BareMetal, _, _) => {
                return Err(
                    "model and tokens_per_s_per_gpu are for pools with offering \"model\"".into(),
                )
            }
            (Offering::Model, Some(model), Some(tps)) if is_model_name(model) && tps > 0 => {
                config.model = Some(model.clone());
                config.tokens_per_s_per_gpu = tps;
                config.id = config.expected_id();
            }
            (Offering::Model, _, _) => {
                return Err(format!(
                    "a model pool needs model (1..={MODEL_NAME_BYTES_MAX} characters of \
                     [a-z0-9.-]) and tokens_per_s_per_gpu (at least 1)"
                ))
            }
        }
        if let Some(id) = &self.id {
            if *id != config.id {
                return Err(format!(
                    "id {id:?} must be {:?} (<gpu>.<region>, or <model>.<region> for a model \
                     pool)",
                    config.id
                ));
            }
        }
        if let Some(handoff) = self.handoff {
            config.handoff = handoff;
        }
        if let Some(seconds) = self.provision_timeout_s {
            if !(1..=PROVISION_TIMEOUT_S_MAX).contains(&seconds) {
                return Err(format!(
                    "provision_timeout_s must be 1..={PROVISION_TIMEOUT_S_MAX}"
                ));
            }
            config.provision_timeout_s = seconds;
        }
        if let Some(p) = self.tick {
            config.tick = p.0;
        }
        // The lowest price defaults to one tick: the default $0.01 is off a coarser grid.
        match (self.price_min, self.tick) {
            (Some(p), _) | (None, Some(p)) => config.price_min = p.0,
            (None, None) => {}
        }
        if let Some(p) = self.price_max {
            config.price_max = p.0;
        }
        if let Some(n) = self.gpus_per_order_max {
            if n > GPUS_PER_ORDER_MAX {
                return Err(format!(
                    "gpus_per_order_max must be at most {GPUS_PER_ORDER_MAX}"
                ));
            }
            config.gpus_per_order_max = n;
        }
        if let Some(n) = self.duration_min_s {
            config.duration_min_s = n;
        }
        if let Some(n) = self.duration_max_s {
            config.duration_max_s = n;
        }
        if let Some(n) = self.notice_s {
            config.notice_s = n;
        }
        if let Some(n) = self.free_if_preempted_within_s {
            config.free_if_preempted_within_s = n;
        }
        if let Some(auction) = self.auction {
            config.auction = auction;
        }
        Ok(config)
    }
}

/// Reads a pools file: a JSON list of [`PoolSpec`].
pub fn load_pools_file(path: &Path) -> anyhow::Result<Vec<PoolConfig>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the pools file {}", path.display()))?;
    let specs: Vec<PoolSpec> = serde_json::from_str(&text)
        .with_context(|| format!("parsing the pools file {}", path.display()))?;
    let mut pools = Vec::with_capacity(specs.len());
    for spec in specs {
        let config = spec
            .to_config()
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("in the pools file {}", path.display()))?;
        if config.price_levels().is_none() {
            anyhow::bail!(
                "pool {}: tick and price band do not form a price ladder",
                config.id
            );
        }
        if pools.iter().any(|p: &PoolConfig| p.id == config.id) {
            anyhow::bail!("pool {} is listed twice in {}", config.id, path.display());
        }
        pools.push(config);
    }
    Ok(pools)
}
