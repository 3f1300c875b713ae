//! What the tests, simulators and benchmarks know of drone-server, in one place.
//!
//! `fixtures`: drone's sample payloads from `testdata/drone/` (see its README for where each came
//! from), compiled into the crate so that no test reads a file outside the repository or
//! depends on the directory it runs in.

pub mod fixtures;
