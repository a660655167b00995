//! Every shape the outside world sees: REST bodies ([`rest`]), WebSocket messages ([`ws`]),
//! the Redis field formats ([`redis`]), and the text codes of the engine's enums ([`codes`],
//! which live in the journal because the store writes them too).
//!
//! The REST handlers, the WebSocket feed and the bus publisher all speak through this module
//! and none of them imports another, so a field's spelling is decided in one place.

pub mod redis;
pub mod rest;
pub mod ws;

pub use crate::journal::codes;
