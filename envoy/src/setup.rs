//! What the end-to-end tests set up alike: the parts to run, a lossy drone.

use crate::drone_sim::{DroneSimConfig, LossPolicy};
use crate::envoy::Tools;

/// [`Tools::from_env`] for a test: a missing part fails the test, saying how to get it.
pub fn tools() -> Tools {
    Tools::from_env().unwrap_or_else(|e| panic!("{e:#}"))
}

/// A drone that loses `share` of its webhooks but never a build's first (so the sidecar
/// learns of every build), and with `all_finals` every webhook of a done status.
pub fn losing(share: f64, all_finals: bool) -> DroneSimConfig {
    DroneSimConfig {
        loss: LossPolicy {
            share,
            spare_first: true,
            all_finals,
        },
        ..Default::default()
    }
}

/// A check's answer for `scenario::wait_for`: done when `cond`, otherwise `why` not yet.
pub fn done_if(cond: bool, why: impl FnOnce() -> String) -> std::result::Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}
