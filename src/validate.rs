//! Input checks the REST API and the Redis capacity signals share, each written once with the
//! sentence both give: what a caller-chosen name may hold, which pool ids can exist, how many
//! nodes a block lists and what they are called.
//!
//! A check refuses with an [`Invalid`]: a malformed field (REST answers 400 `invalid_body`, the
//! bus dead-letters the entry as `malformed`, both with the same message), or what the engine
//! would refuse anyway (REST answers that rejection, the bus dead-letters under its code).
//! Prices and times are parsed by [`crate::money`] and [`crate::timestamp`], and the rules that
//! depend on a pool (tick, band, window, notice) are the engine's: neither path repeats them.
//!
//! Layering: this module imports only the limits, money, timestamp and the engine.

use crate::limits::{
    ACCOUNT_ID_BYTES_MAX, BLOCK_ID_BYTES_MAX, CLIENT_ORDER_ID_BYTES_MAX, ENDPOINT_HOST_BYTES_MAX,
    ENDPOINT_URL_BYTES_MAX, ENDPOINT_USER_BYTES_MAX, FAILURE_REASON_BYTES_MAX, NODE_NAME_BYTES_MAX,
    POOL_ID_BYTES_MAX,
};
use matching_engine::limits::NODES_PER_BLOCK_MAX;
use matching_engine::{Endpoint, Rejection};

/// Why an input is refused before it reaches the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// A field that can never be right as written: what is wrong with it, for the sender.
    Malformed(String),
    /// What the engine would refuse it for anyway (a pool id longer than any pool's).
    Rejected(Rejection),
}

/// A caller-chosen name: 1..=max bytes of `[A-Za-z0-9._:-]`.
pub fn name<'a>(value: &'a str, max: usize, field: &str) -> Result<&'a str, Invalid> {
    if value.is_empty()
        || value.len() > max
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err(Invalid::Malformed(format!(
            "{field} must be 1..={max} characters of [A-Za-z0-9._:-]"
        )));
    }
    Ok(value)
}

/// A supplier's own id for a block.
pub fn block_id(value: &str) -> Result<&str, Invalid> {
    name(value, BLOCK_ID_BYTES_MAX, "block_id")
}

/// A supplier's account named in a signal (REST takes it from the token).
pub fn supplier(value: &str) -> Result<&str, Invalid> {
    name(value, ACCOUNT_ID_BYTES_MAX, "supplier")
}

/// A pool id no longer than any pool's; whether the pool exists is the engine's answer.
pub fn pool(value: &str) -> Result<(), Invalid> {
    if value.len() > POOL_ID_BYTES_MAX {
        return Err(Invalid::Rejected(Rejection::UnknownPool));
    }
    Ok(())
}

/// An order or lease id: digits that fit a `u64`; anything else names nothing.
pub fn numeric_id(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A block's machines: at most [`NODES_PER_BLOCK_MAX`], each named like any caller-chosen name.
pub fn nodes<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> Result<(), Invalid> {
    if names.len() > NODES_PER_BLOCK_MAX {
        return Err(Invalid::Malformed(format!(
            "a block lists at most {NODES_PER_BLOCK_MAX} nodes"
        )));
    }
    for node in names {
        name(node, NODE_NAME_BYTES_MAX, "nodes[].node")?;
    }
    Ok(())
}

/// A bid's idempotency key: 1..=[`CLIENT_ORDER_ID_BYTES_MAX`] printable ASCII characters.
pub fn client_order_id(value: &str) -> Result<(), Invalid> {
    if value.is_empty()
        || value.len() > CLIENT_ORDER_ID_BYTES_MAX
        || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Invalid::Malformed(format!(
            "client_order_id must be 1..={CLIENT_ORDER_ID_BYTES_MAX} printable ASCII characters"
        )));
    }
    Ok(())
}

/// A `ready`'s endpoints: at most one per node a block may list, each with a host name or
/// address, a port and a login user; a node, when named, is named like a block's nodes.
pub fn endpoints(list: &[Endpoint]) -> Result<(), Invalid> {
    if list.len() > NODES_PER_BLOCK_MAX {
        return Err(Invalid::Malformed(format!(
            "endpoints lists at most {NODES_PER_BLOCK_MAX} entries"
        )));
    }
    for endpoint in list {
        if let Some(node) = &endpoint.node {
            name(node, NODE_NAME_BYTES_MAX, "endpoints[].node")?;
        }
        let host_ok = !endpoint.host.is_empty()
            && endpoint.host.len() <= ENDPOINT_HOST_BYTES_MAX
            && endpoint
                .host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if !host_ok {
            return Err(Invalid::Malformed(format!(
                "endpoints[].host must be 1..={ENDPOINT_HOST_BYTES_MAX} characters of a host \
                 name or address"
            )));
        }
        if endpoint.port == 0 {
            return Err(Invalid::Malformed(
                "endpoints[].port must be 1..=65535".into(),
            ));
        }
        let user_ok = !endpoint.user.is_empty()
            && endpoint.user.len() <= ENDPOINT_USER_BYTES_MAX
            && endpoint
                .user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !endpoint.user.starts_with('-');
        if !user_ok {
            return Err(Invalid::Malformed(format!(
                "endpoints[].user must be 1..={ENDPOINT_USER_BYTES_MAX} characters of \
                 [A-Za-z0-9._-], not starting with '-'"
            )));
        }
    }
    Ok(())
}

/// A model gateway's base URL: `http://` or `https://`, printable, bounded.
pub fn endpoint_url(url: &str) -> Result<(), Invalid> {
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    if !scheme_ok
        || rest.is_empty()
        || url.len() > ENDPOINT_URL_BYTES_MAX
        || !url.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Invalid::Malformed(format!(
            "endpoint must be an http:// or https:// URL of at most {ENDPOINT_URL_BYTES_MAX} \
             printable characters"
        )));
    }
    Ok(())
}

/// Why a provisioner failed a lease: 1..=[`FAILURE_REASON_BYTES_MAX`] bytes, no control
/// characters (it is shown to the buyer).
pub fn failure_reason(reason: &str) -> Result<(), Invalid> {
    if reason.trim().is_empty()
        || reason.len() > FAILURE_REASON_BYTES_MAX
        || reason.chars().any(char::is_control)
    {
        return Err(Invalid::Malformed(format!(
            "reason must be 1..={FAILURE_REASON_BYTES_MAX} bytes of text without control \
             characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str, port: u16, user: &str) -> Endpoint {
        Endpoint {
            node: None,
            host: host.into(),
            port,
            user: user.into(),
        }
    }

    #[test]
    fn endpoints_urls_and_reasons_are_bounded_and_printable() {
        assert_eq!(endpoints(&[endpoint("10.0.0.7", 22, "ubuntu")]), Ok(()));
        assert_eq!(endpoints(&[endpoint("[::1]", 2222, "root")]), Ok(()));
        for bad in [
            endpoint("", 22, "u"),
            endpoint("a b", 22, "u"),
            endpoint("h", 0, "u"),
            endpoint("h", 22, ""),
            endpoint("h", 22, "-oProxyCommand=x"),
            endpoint("h", 22, "a;b"),
        ] {
            assert!(endpoints(std::slice::from_ref(&bad)).is_err(), "{bad:?}");
        }
        assert_eq!(endpoint_url("https://gw.example/v1"), Ok(()));
        for bad in [
            "",
            "ftp://x",
            "https://",
            "https://a b",
            "javascript:alert(1)",
        ] {
            assert!(endpoint_url(bad).is_err(), "{bad:?}");
        }
        assert_eq!(failure_reason("disk failed"), Ok(()));
        for bad in ["", "  ", "a\nb", &"x".repeat(FAILURE_REASON_BYTES_MAX + 1)] {
            assert!(failure_reason(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_bounded_and_drawn_from_a_safe_alphabet() {
        assert_eq!(block_id("rack12-night:a.b_c"), Ok("rack12-night:a.b_c"));
        for bad in ["", "a b", "a/b", "ü", &"x".repeat(BLOCK_ID_BYTES_MAX + 1)] {
            assert_eq!(
                block_id(bad),
                Err(Invalid::Malformed(format!(
                    "block_id must be 1..={BLOCK_ID_BYTES_MAX} characters of [A-Za-z0-9._:-]"
                ))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_pool_id_longer_than_any_pools_is_an_unknown_pool() {
        assert_eq!(pool("h100-sxm.us-east"), Ok(()));
        assert_eq!(
            pool(&"p".repeat(POOL_ID_BYTES_MAX + 1)),
            Err(Invalid::Rejected(Rejection::UnknownPool))
        );
    }

    #[test]
    fn nodes_are_counted_before_their_names_are_read() {
        assert_eq!(nodes(["rack1-n1", "rack1-n2"].into_iter()), Ok(()));
        assert!(matches!(
            nodes(["bad name"].into_iter()),
            Err(Invalid::Malformed(m)) if m.starts_with("nodes[].node must be")
        ));
        let many = vec!["bad name"; NODES_PER_BLOCK_MAX + 1];
        assert!(matches!(
            nodes(many.into_iter()),
            Err(Invalid::Malformed(m)) if m.contains("at most")
        ));
    }
}
