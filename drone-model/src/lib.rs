//! What the tests, simulators and benchmarks know of drone-server, in one place.
//!
//! - [`lifecycle`]: drone's build lifecycle as a small state machine (which event writes the
//!   build row, which sends a webhook, of which shape): every driver's one model of it;
//! - [`store`]: drone's repositories and builds (rows, numbering) and its REST API answered
//!   from them, for every harness: chaos, scenarios, soak and the benchmarks (webhook and API
//!   bodies made fast from the fixtures) and [`server`] (builds kept whole);
//! - [`server`]: a whole drone-server as a sans-IO model (its builds [`workload::Builds`],
//!   kept whole in the [`store::Store`], webhook bodies out, the store's API answers out);
//!   `envoy-e2e`'s HTTP simulator wraps it in threads and sockets;
//! - [`workload`]: builds driven in virtual time (numbering, their lifecycle planned as timed
//!   acts, each applied to the row and written to the store): chaos, soak, the benchmarks
//!   and [`server`];
//! - [`outcome`]: how builds end and how often ([`outcome::MIX`], the one table of it);
//! - [`rng`]: the seeded splitmix64 every test-side driver draws from;
//! - [`shapes`]: drone's JSON types, serialised byte for byte as drone's Go structs are;
//! - [`fixtures`]: drone's sample payloads from `testdata/drone/` (see its README for where
//!   each came from), compiled into the crate so that no test reads a file outside the
//!   repository or depends on the directory it runs in.
//!
//! The drivers choose *when* things happen (their workloads differ: seconds-long builds for
//! a real Envoy, a simulated day for a benchmark); what happens is decided here.

pub mod fixtures;
pub mod lifecycle;
pub mod outcome;
pub mod rng;
pub mod server;
pub mod shapes;
pub mod store;
pub mod workload;

pub use lifecycle::{is_done, Hook, Row, Shape};
pub use outcome::{Outcome, MIX};
pub use rng::Rng;
