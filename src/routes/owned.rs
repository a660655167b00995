//! Orders, leases and blocks as their owner reads them back: live from the engine, else stored.
//!
//! The engine holds the live ones (an open order and its fills, a running lease and its cost so
//! far, a pending or open block); the store holds every one as of the last commit that wrote its
//! row, which for a live one may be older than the engine's view. So one is read from the engine
//! first (through the sequencer: committed state only) and from the store when the engine no
//! longer holds it; neither having it for this owner is a 404, so another account's is answered
//! exactly like a missing one. A page is read from the engine alone for the statuses only live
//! ones have, and otherwise from the store with the live views laid over the stored rows.
//!
//! [`Owned`] says, for each of the three, where the engine and the store keep it;
//! [`find`], [`after`] and [`page`] are the one way every route reads them.

use super::{ListKind, ListQuery};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{ListFilter, Store, StoreError};
use crate::validate;
use crate::wire::codes;
use matching_engine::{
    BlockStatus, BlockView, Engine, Event, LeaseId, LeaseStatus, LeaseView, OrderId, OrderStatus,
    OrderView,
};
use std::cmp::Reverse;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;

/// A store read, as the [`Store`] trait's methods return it.
pub type StoreRead<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A view an account owns and reads back, live or stored.
pub trait Owned: Clone + Send + 'static {
    /// What a path names one by: an order or lease id, a block id.
    type Id: Clone + Send + Sync + 'static;
    /// Where one stands in a page, first first; the last one's key is the next page's cursor.
    type Key: Ord + Hash + Clone + Send + 'static;
    /// Its status.
    type Status: Copy + Eq + Send + 'static;
    /// The 404 code of one that is missing or another account's.
    const UNKNOWN: &'static str;
    /// The 400 message of a `status=` it cannot have.
    const STATUS_EXPECTED: &'static str;
    /// The 400 message of a cursor that is not one.
    const CURSOR_EXPECTED: &'static str;

    /// Its place in a page.
    fn key(&self) -> Self::Key;
    /// Its status.
    fn status(&self) -> Self::Status;
    /// A `status=` code, if it names one of its statuses.
    fn parse_status(code: &str) -> Option<Self::Status>;
    /// The code the store keeps for `status`.
    fn status_code(status: Self::Status) -> &'static str;
    /// Whether only live ones have `status`: a page of them is read from the engine alone.
    fn only_live(status: Self::Status) -> bool;
    /// A `before=` / `after=` cursor, if it is one.
    fn parse_cursor(text: &str) -> Option<Self::Key>;
    /// The cursor text of `key`, for the store and for the next page.
    fn cursor(key: &Self::Key) -> String;
    /// The latest view of the owner's `id` among a command's events.
    fn in_events<'e>(events: &'e [Event], owner: &str, id: &Self::Id) -> Option<&'e Self>;
    /// The owner's `id`, if the engine holds it.
    fn live(engine: &Engine, owner: &str, id: &Self::Id) -> Option<Self>;
    /// Every one of the owner's the engine holds.
    fn all_live(engine: &Engine, owner: &str) -> Vec<Self>;
    /// The owner's stored row of `id`.
    fn stored<'a>(
        store: &'a dyn Store,
        owner: &'a str,
        id: &'a Self::Id,
    ) -> StoreRead<'a, Option<Self>>;
    /// A page of the owner's stored rows.
    fn stored_page<'a>(
        store: &'a dyn Store,
        owner: &'a str,
        filter: &'a ListFilter,
    ) -> StoreRead<'a, Vec<Self>>;
}

/// One of `owner`'s: live from the engine, else stored, else 404.
pub async fn find<V: Owned>(state: &AppState, owner: &Arc<str>, id: V::Id) -> Result<V, ApiError> {
    let (who, wanted) = (owner.clone(), id.clone());
    let live = state
        .sequencer
        .read(move |v| V::live(v.engine, &who, &wanted))
        .await?;
    match live {
        Some(view) => Ok(view),
        None => V::stored(state.store.as_ref(), owner, &id)
            .await?
            .ok_or(ApiError::NotFound(V::UNKNOWN)),
    }
}

/// One of `owner`'s after a command: as the command's events left it, else [`find`].
pub async fn after<V: Owned>(
    state: &AppState,
    events: &[Event],
    owner: &Arc<str>,
    id: V::Id,
) -> Result<V, ApiError> {
    match V::in_events(events, owner, &id) {
        Some(view) => Ok(view.clone()),
        None => find(state, owner, id).await,
    }
}

/// A page of `owner`'s as `query` asks, and the cursor of the next page (none on the last).
pub async fn page<V: Owned, K: ListKind>(
    state: &AppState,
    owner: &Arc<str>,
    query: &ListQuery<K>,
) -> Result<(Vec<V>, Option<String>), ApiError> {
    let limit = query.limit()?;
    let status = match query.status.as_deref() {
        None => None,
        Some(code) => Some(
            V::parse_status(code)
                .ok_or_else(|| ApiError::InvalidQuery(V::STATUS_EXPECTED.into()))?,
        ),
    };
    let cursor = match query.cursor_text()? {
        None => None,
        Some(text) => Some(
            V::parse_cursor(text)
                .ok_or_else(|| ApiError::InvalidQuery(V::CURSOR_EXPECTED.into()))?,
        ),
    };
    let who = owner.clone();
    let views: Vec<V> = match status {
        Some(wanted) if V::only_live(wanted) => {
            let mut live = state
                .sequencer
                .read(move |v| V::all_live(v.engine, &who))
                .await?;
            live.retain(|x| x.status() == wanted && cursor.as_ref().is_none_or(|c| x.key() > *c));
            live.sort_unstable_by_key(V::key);
            live.truncate(limit);
            live
        }
        _ => {
            let filter = ListFilter {
                status: status.map(|s| V::status_code(s).to_owned()),
                cursor: cursor.as_ref().map(V::cursor),
                limit,
            };
            let mut stored = V::stored_page(state.store.as_ref(), owner, &filter).await?;
            // Live views are at least as new as the rows just read.
            let live = state
                .sequencer
                .read(move |v| V::all_live(v.engine, &who))
                .await?;
            overlay_live(&mut stored, live);
            stored
        }
    };
    let next = (views.len() == limit)
        .then(|| views.last().map(|x| V::cursor(&x.key())))
        .flatten();
    Ok((views, next))
}

/// Replaces stored rows by their live engine views where the engine still holds them: a
/// running lease's cost so far, an open order's fills since its row was written.
fn overlay_live<V: Owned>(stored: &mut [V], live: Vec<V>) {
    if live.is_empty() {
        return;
    }
    let mut fresh: HashMap<V::Key, V> = live.into_iter().map(|view| (view.key(), view)).collect();
    for row in stored {
        if let Some(view) = fresh.remove(&row.key()) {
            *row = view;
        }
    }
}

/// [`Owned`] for a view with an engine id (orders, leases): paged newest first by id, read by
/// id from the engine (if `owner` holds it) and from the store. Only what differs is given.
macro_rules! owned_by_id {
    ($view:ident {
        id: $id:ident,
        owner: $owner:ident,
        status: $status:ident,
        codes: ($parse_status:ident, $status_code:ident),
        only_live: $only_live:pat,
        unknown: $unknown:literal,
        status_expected: $status_expected:literal,
        cursor_expected: $cursor_expected:literal,
        engine: ($live:ident, $all_live:ident),
        store: ($stored:ident, $stored_page:ident),
        in_events: |$event:ident, $wanted:ident| $in_events:expr $(,)?
    }) => {
        impl Owned for $view {
            type Id = $id;
            type Key = Reverse<$id>;
            type Status = $status;
            const UNKNOWN: &'static str = $unknown;
            const STATUS_EXPECTED: &'static str = $status_expected;
            const CURSOR_EXPECTED: &'static str = $cursor_expected;

            fn key(&self) -> Reverse<$id> {
                Reverse(self.id)
            }
            fn status(&self) -> $status {
                self.status
            }
            fn parse_status(code: &str) -> Option<$status> {
                codes::$parse_status(code)
            }
            fn status_code(status: $status) -> &'static str {
                codes::$status_code(status)
            }
            fn only_live(status: $status) -> bool {
                matches!(status, $only_live)
            }
            fn parse_cursor(text: &str) -> Option<Reverse<$id>> {
                super::parse_id(text).map(|id| Reverse($id(id)))
            }
            fn cursor(key: &Reverse<$id>) -> String {
                key.0.to_string()
            }
            fn in_events<'e>(
                events: &'e [Event],
                _owner: &str,
                $wanted: &$id,
            ) -> Option<&'e $view> {
                events.iter().rev().find_map(|$event| $in_events)
            }
            fn live(engine: &Engine, owner: &str, id: &$id) -> Option<$view> {
                engine.$live(*id).filter(|v| &*v.$owner == owner)
            }
            fn all_live(engine: &Engine, owner: &str) -> Vec<$view> {
                engine.$all_live(owner)
            }
            fn stored<'a>(
                store: &'a dyn Store,
                owner: &'a str,
                id: &'a $id,
            ) -> StoreRead<'a, Option<$view>> {
                store.$stored(owner, *id)
            }
            fn stored_page<'a>(
                store: &'a dyn Store,
                owner: &'a str,
                filter: &'a ListFilter,
            ) -> StoreRead<'a, Vec<$view>> {
                store.$stored_page(owner, filter)
            }
        }
    };
}

owned_by_id!(OrderView {
    id: OrderId,
    owner: account,
    status: OrderStatus,
    codes: (parse_order_status, order_status),
    only_live: OrderStatus::Open,
    unknown: "unknown_order",
    status_expected: "status must be open, filled, cancelled or expired",
    cursor_expected: "before must be an order id",
    engine: (order, orders_of),
    store: (order, orders),
    in_events: |event, id| match event {
        Event::BidAccepted { order } | Event::OrderChanged { order } if order.id == *id => {
            Some(order)
        }
        _ => None,
    },
});

owned_by_id!(LeaseView {
    id: LeaseId,
    owner: buyer,
    status: LeaseStatus,
    codes: (parse_lease_status, lease_status),
    only_live: LeaseStatus::Active | LeaseStatus::Preempting,
    unknown: "unknown_lease",
    status_expected: "status must be active, preempting, preempted, completed or released",
    cursor_expected: "before must be a lease id",
    engine: (lease, leases_of),
    store: (lease, leases),
    in_events: |event, id| match event {
        Event::LeaseChanged { lease } if lease.id == *id => Some(&**lease),
        _ => None,
    },
});

impl Owned for BlockView {
    type Id = String;
    type Key = Arc<str>;
    type Status = BlockStatus;
    const UNKNOWN: &'static str = "unknown_block";
    const STATUS_EXPECTED: &'static str = "status must be pending, open or closed";
    // Blocks are paged by block id, so a cursor is one: anything else (a NUL, say) would only
    // reach the database to be refused there.
    const CURSOR_EXPECTED: &'static str = "after must be a block id";

    fn key(&self) -> Arc<str> {
        self.block_id.clone()
    }
    fn status(&self) -> BlockStatus {
        self.status
    }
    fn parse_status(code: &str) -> Option<BlockStatus> {
        codes::parse_block_status(code)
    }
    fn status_code(status: BlockStatus) -> &'static str {
        codes::block_status(status)
    }
    fn only_live(status: BlockStatus) -> bool {
        matches!(status, BlockStatus::Pending | BlockStatus::Open)
    }
    fn parse_cursor(text: &str) -> Option<Arc<str>> {
        validate::block_id(text).ok().map(Arc::from)
    }
    fn cursor(key: &Arc<str>) -> String {
        key.to_string()
    }
    fn in_events<'e>(events: &'e [Event], owner: &str, id: &String) -> Option<&'e BlockView> {
        events.iter().rev().find_map(|e| match e {
            Event::BlockChanged { block }
                if &*block.supplier == owner && *block.block_id == **id =>
            {
                Some(block)
            }
            _ => None,
        })
    }
    fn live(engine: &Engine, owner: &str, id: &String) -> Option<BlockView> {
        engine.block(owner, id)
    }
    fn all_live(engine: &Engine, owner: &str) -> Vec<BlockView> {
        engine.blocks_of(owner)
    }
    fn stored<'a>(
        store: &'a dyn Store,
        owner: &'a str,
        id: &'a String,
    ) -> StoreRead<'a, Option<BlockView>> {
        store.block(owner, id)
    }
    fn stored_page<'a>(
        store: &'a dyn Store,
        owner: &'a str,
        filter: &'a ListFilter,
    ) -> StoreRead<'a, Vec<BlockView>> {
        store.blocks(owner, filter)
    }
}
