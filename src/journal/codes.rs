//! The text codes of the engine's enums, as stored in rows and shown in JSON.
//!
//! Exhaustive matches both ways: a new engine variant fails to compile here until it has a
//! code, instead of being stored as something it is not.

use matching_engine::{
    AccessStatus, BlockStatus, CancelReason, LeaseStatus, OrderStatus, Side, TimeInForce,
};

/// Code of a lease's access status.
pub fn access_status(s: AccessStatus) -> &'static str {
    match s {
        AccessStatus::Provisioning => "provisioning",
        AccessStatus::Ready => "ready",
        AccessStatus::Failed => "failed",
    }
}

/// Code of an order status.
pub fn order_status(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::Open => "open",
        OrderStatus::Filled => "filled",
        OrderStatus::Cancelled => "cancelled",
        OrderStatus::Expired => "expired",
    }
}

/// Order status of a code.
pub fn parse_order_status(s: &str) -> Option<OrderStatus> {
    Some(match s {
        "open" => OrderStatus::Open,
        "filled" => OrderStatus::Filled,
        "cancelled" => OrderStatus::Cancelled,
        "expired" => OrderStatus::Expired,
        _ => return None,
    })
}

/// Code of a lease status.
pub fn lease_status(s: LeaseStatus) -> &'static str {
    match s {
        LeaseStatus::Active => "active",
        LeaseStatus::Preempting => "preempting",
        LeaseStatus::Preempted => "preempted",
        LeaseStatus::Completed => "completed",
        LeaseStatus::Released => "released",
        LeaseStatus::Failed => "failed",
    }
}

/// Lease status of a code.
pub fn parse_lease_status(s: &str) -> Option<LeaseStatus> {
    Some(match s {
        "active" => LeaseStatus::Active,
        "preempting" => LeaseStatus::Preempting,
        "preempted" => LeaseStatus::Preempted,
        "completed" => LeaseStatus::Completed,
        "released" => LeaseStatus::Released,
        "failed" => LeaseStatus::Failed,
        _ => return None,
    })
}

/// Code of a block status.
pub fn block_status(s: BlockStatus) -> &'static str {
    match s {
        BlockStatus::Pending => "pending",
        BlockStatus::Open => "open",
        BlockStatus::Closed => "closed",
    }
}

/// Block status of a code.
pub fn parse_block_status(s: &str) -> Option<BlockStatus> {
    Some(match s {
        "pending" => BlockStatus::Pending,
        "open" => BlockStatus::Open,
        "closed" => BlockStatus::Closed,
        _ => return None,
    })
}

/// Code of a time in force.
pub fn tif(t: TimeInForce) -> &'static str {
    match t {
        TimeInForce::Gtc => "gtc",
        TimeInForce::Ioc => "ioc",
        TimeInForce::Fok => "fok",
        TimeInForce::Gtd => "gtd",
    }
}

/// Time in force of a code.
pub fn parse_tif(s: &str) -> Option<TimeInForce> {
    Some(match s {
        "gtc" => TimeInForce::Gtc,
        "ioc" => TimeInForce::Ioc,
        "fok" => TimeInForce::Fok,
        "gtd" => TimeInForce::Gtd,
        _ => return None,
    })
}

/// Code of a cancel reason.
pub fn cancel_reason(r: CancelReason) -> &'static str {
    match r {
        CancelReason::ByOwner => "by_owner",
        CancelReason::IocRemainder => "ioc_remainder",
        CancelReason::FokNotFillable => "fok_not_fillable",
        CancelReason::KillSwitch => "kill_switch",
    }
}

/// Cancel reason of a code.
pub fn parse_cancel_reason(s: &str) -> Option<CancelReason> {
    Some(match s {
        "by_owner" => CancelReason::ByOwner,
        "ioc_remainder" => CancelReason::IocRemainder,
        "fok_not_fillable" => CancelReason::FokNotFillable,
        "kill_switch" => CancelReason::KillSwitch,
        _ => return None,
    })
}

/// Code of a book side.
pub fn side(s: Side) -> &'static str {
    match s {
        Side::Bid => "bid",
        Side::Ask => "ask",
    }
}

/// Book side of a code.
pub fn parse_side(s: &str) -> Option<Side> {
    Some(match s {
        "bid" => Side::Bid,
        "ask" => Side::Ask,
        _ => return None,
    })
}
