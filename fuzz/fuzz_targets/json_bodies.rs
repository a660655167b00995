//! Every JSON body the server deserializes, from arbitrary bytes.
//!
//! Each input is parsed as every REST request body (place and amend an order; release,
//! update, reclaim and forecast capacity; the admin pool settings, kill switch and account
//! limits), the pools file and the WebSocket client message, with `serde_json::from_slice`
//! as actix-web's `web::Json` does. A body that parses then goes through the checks its
//! handler makes before it submits a command (the body's fields are private to the routes,
//! so the field values are read from the same bytes as a `serde_json::Value`): names,
//! lengths, `client_order_id`, account ids, WebSocket channel names, and for pool settings
//! `PoolSpec::to_config` and the engine's `ConfigurePool`. Nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use matching_engine::limits::{NODES_PER_BLOCK_MAX, PRICE_LEVELS_MAX};
use matching_engine::{Command, Engine, TimeMs};
use offpeak::auth::is_valid_account_id;
use offpeak::limits::{NODE_NAME_BYTES_MAX, POOL_ID_BYTES_MAX, REQUEST_BODY_BYTES_MAX};
use offpeak::pool_spec::PoolSpec;
use offpeak::routes::admin::{KillSwitchBody, LimitsBody};
use offpeak::routes::capacity::{ForecastBody, ReclaimBody, ReleaseBody, UpdateBody};
use offpeak::routes::orders::{AmendOrderBody, PlaceOrderBody};
use offpeak::validate;
use offpeak::wire::ws::{Channel, ClientOp};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Parses `data` as `T` exactly as the server does; `Some` with the fields as a `Value`.
fn parse<T: DeserializeOwned + std::fmt::Debug>(data: &[u8]) -> Option<(T, Value)> {
    let body: T = serde_json::from_slice(data).ok()?;
    // Debug is what the handlers' traces print.
    let _ = format!("{body:?}");
    let value: Value = serde_json::from_slice(data).expect("a body that parses is a JSON value");
    Some((body, value))
}

fn text<'v>(value: &'v Value, field: &str) -> Option<&'v str> {
    value.get(field).and_then(Value::as_str)
}

fn pool_spec(spec: &PoolSpec) {
    let Ok(config) = spec.to_config() else {
        return;
    };
    assert!(config.id.len() <= POOL_ID_BYTES_MAX, "{config:?}");
    // The engine judges the ladder itself; a wide one costs 24 bytes a level, so only
    // small ladders are applied here (the engine target covers the widest).
    if config
        .price_levels()
        .is_some_and(|levels| levels <= PRICE_LEVELS_MAX.min(100_000))
    {
        let mut engine = Engine::new();
        let mut events = Vec::new();
        engine.apply(TimeMs(0), &Command::ConfigurePool(config), &mut events);
        engine.assert_invariants();
    }
}

fuzz_target!(|data: &[u8]| {
    // actix-web refuses larger bodies before parsing.
    if data.len() > REQUEST_BODY_BYTES_MAX {
        return;
    }
    if let Some((_, v)) = parse::<PlaceOrderBody>(data) {
        if let Some(id) = text(&v, "client_order_id") {
            let _ = validate::client_order_id(id);
        }
    }
    let _ = parse::<AmendOrderBody>(data);
    if let Some((_, v)) = parse::<ReleaseBody>(data) {
        let block_id = text(&v, "block_id").expect("a parsed release has a block_id");
        let _ = validate::block_id(block_id);
        let nodes = v.get("nodes").and_then(Value::as_array);
        if nodes.is_some_and(|n| n.len() <= NODES_PER_BLOCK_MAX) {
            for node in nodes.into_iter().flatten() {
                let name = text(node, "node").expect("a parsed node has a name");
                let _ = validate::name(name, NODE_NAME_BYTES_MAX, "nodes[].node");
            }
        }
    }
    let _ = parse::<UpdateBody>(data);
    let _ = parse::<ReclaimBody>(data);
    let _ = parse::<ForecastBody>(data);
    if let Some((spec, _)) = parse::<PoolSpec>(data) {
        pool_spec(&spec);
    }
    // The pools file: a list of the same specs.
    if let Some((specs, _)) = parse::<Vec<PoolSpec>>(data) {
        for spec in specs.iter().take(8) {
            pool_spec(spec);
        }
    }
    if let Some((_, v)) = parse::<KillSwitchBody>(data) {
        if let Some(account) = text(&v, "account") {
            let _ = is_valid_account_id(account);
        }
    }
    let _ = parse::<LimitsBody>(data);
    // The WebSocket client's messages arrive as text frames.
    if let Ok(frame) = std::str::from_utf8(data) {
        if let Ok(ClientOp::Subscribe { channels } | ClientOp::Unsubscribe { channels }) =
            serde_json::from_str::<ClientOp>(frame)
        {
            for name in &channels {
                let _ = Channel::parse(name);
            }
        }
    }
});
