//! Drone 2.25's JSON shapes: they live in the `drone-model` crate (`drone_model::shapes`),
//! re-exported here for the binaries and tests that name them through `envoy_e2e`.

pub use ::drone_model::is_done;
pub use ::drone_model::shapes::*;
