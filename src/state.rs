//! What every request handler shares: the sequencer handle, the store, auth, market data.

use crate::auth::Verifier;
use crate::market_data::MarketData;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::sequencer::SequencerHandle;
use crate::store::Store;
use std::sync::Arc;

/// Shared application state, registered as `web::Data<AppState>`.
#[derive(Clone)]
pub struct AppState {
    /// Writes and engine reads go through the sequencer.
    pub sequencer: SequencerHandle,
    /// History (finished orders and leases) is read from the store.
    pub store: Arc<dyn Store>,
    /// Bearer-token verification.
    pub verifier: Arc<Verifier>,
    /// Per-account rate limit.
    pub rate_limiter: Arc<RateLimiter>,
    /// Recent trades, candles, stats.
    pub market: Arc<MarketData>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The WebSocket feed's hub (`/v1/ws`).
    pub ws: crate::ws::Hub,
    /// The bus (Redis or in-process) and what its tasks last saw.
    pub bus: crate::bus::BusHandle,
    /// Signs lease tokens for model gateways; its public key is served as the JWKS.
    pub lease_key: Arc<crate::lease_token::LeaseKey>,
    /// The lease tokens' `aud` and `iss`.
    pub lease_token_audience: Arc<str>,
    /// See [`AppState::lease_token_audience`]: offpeak's issuer, as on API tokens.
    pub lease_token_issuer: Arc<str>,
    /// This node among several (DESIGN section 10): who leads, how far the journal is.
    pub cluster: Arc<crate::cluster::Cluster>,
}
