//! offpeak's load tests: seeded command streams and the side-by-side engine benchmarks run by
//! the `engine-bench` binary, and the scenarios `offpeak-load` runs against a live server (one
//! module each, e.g. `ws_fanout`; see BENCHMARKS.md at the repository root).
//!
//! Every stream is generated from a printed seed with a portable generator (ChaCha8), so a run
//! can be repeated exactly. Commands are built outside the timed sections; the timed sections
//! apply them and drop the events they produce, nothing else.

#![forbid(unsafe_code)]

pub mod failover;
pub mod http1;
pub mod live;
pub mod matchcore_side;
pub mod measure;
pub mod memory;
pub mod mix;
pub mod orders;
pub mod ours_stream;
pub mod recovery;
pub mod setup;
pub mod signals;
pub mod stream;
pub mod target;
pub mod ws_fanout;
