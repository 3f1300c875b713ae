//! How a build ends, and how often: the outcome mix every driver of the model draws from.

use crate::rng::Rng;
use serde::Serialize;

/// How a simulated build ends, and which drone code path gets it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every step passes; teardown → `success`.
    Success,
    /// The last step exits 1; teardown → `failure`.
    Failure,
    /// The last step errors (e.g. image pull); teardown → `error`.
    Error,
    /// Cancelled through the API while a step runs → `killed` (webhook #5).
    Killed,
    /// Auto-cancelled while pending (superseded push) → `skipped` (webhook #7).
    Skipped,
    /// A stage is blocked for approval and gets declined → `declined`, no webhook.
    Declined,
    /// The YAML does not parse → `build:created` with status `error` (webhook #2).
    ConfigError,
}

/// The mix a busy drone sees, mostly successes: each outcome with its share in percent (they
/// add up to 100). The one table of it: the simulator, the benchmarks and their docs refer
/// here.
pub const MIX: [(Outcome, u64); 7] = [
    (Outcome::Success, 55),
    (Outcome::Failure, 15),
    (Outcome::Killed, 7),
    (Outcome::Skipped, 7),
    (Outcome::Declined, 6),
    (Outcome::Error, 5),
    (Outcome::ConfigError, 5),
];

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Error,
        Outcome::Killed,
        Outcome::Skipped,
        Outcome::Declined,
        Outcome::ConfigError,
    ];

    /// The build status drone ends with.
    pub fn final_status(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Error | Outcome::ConfigError => "error",
            Outcome::Killed => "killed",
            Outcome::Skipped => "skipped",
            Outcome::Declined => "declined",
        }
    }

    /// The outcome of a roll in `0..100` under [`MIX`] (a roll of 100 or more: the last).
    pub fn from_roll(roll: u64) -> Outcome {
        let mut upto = 0;
        for (outcome, share) in MIX {
            upto += share;
            if roll < upto {
                return outcome;
            }
        }
        Outcome::ConfigError
    }

    /// Draws an outcome from [`MIX`] (one draw).
    pub fn random(rng: &mut Rng) -> Outcome {
        Outcome::from_roll(rng.range(0, 99))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_covers_every_outcome_once_and_adds_up() {
        assert_eq!(MIX.iter().map(|(_, s)| s).sum::<u64>(), 100);
        for o in Outcome::ALL {
            assert_eq!(MIX.iter().filter(|(m, _)| *m == o).count(), 1, "{o:?}");
        }
        let counts = |o: Outcome| (0..100).filter(|r| Outcome::from_roll(*r) == o).count();
        for (o, share) in MIX {
            assert_eq!(counts(o) as u64, share, "{o:?}");
        }
        // The rolls keep the order the table lists (drivers split on them).
        assert_eq!(Outcome::from_roll(54), Outcome::Success);
        assert_eq!(Outcome::from_roll(55), Outcome::Failure);
        assert_eq!(Outcome::from_roll(70), Outcome::Killed);
        assert_eq!(Outcome::from_roll(99), Outcome::ConfigError);
    }
}
