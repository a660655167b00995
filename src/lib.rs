//! offpeak, the server: a spot market for idle GPU-hours.
//!
//! The pure engine (`matching-engine`) clears the market; this crate is the shell around it:
//! configuration, authentication, the REST API, the sequencer that journals every command and
//! commits each batch to PostgreSQL before anything is acknowledged, and recovery from
//! snapshot + journal. See `startup` for the wiring and `sequencer` for the write path.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod bus;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod feed;
pub mod journal;
pub mod lease_token;
pub mod limits;
pub mod market_data;
pub mod metrics;
pub mod money;
pub mod openapi;
pub mod pool_spec;
pub mod rate_limit;
pub mod report;
pub mod routes;
pub mod sequencer;
pub mod simulate;
pub mod ssh_keys;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod timestamp;
pub mod validate;
pub mod web;
pub mod wire;
pub mod ws;
