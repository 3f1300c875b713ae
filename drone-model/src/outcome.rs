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
    /// Torn down while pending, without ever running (§4): the final status written without a
    /// setup, one webhook. The chaos workload's; drivers of [`MIX`] never draw it.
    NoRun,
    /// Runs and never ends (a runner that died): no teardown, no final webhook. The soak's;
    /// drivers of [`MIX`] never draw it.
    Stuck,
}

/// The mix a busy drone sees, mostly successes: each outcome with its share in percent (they
/// add up to 100). The one table of it: the simulator, the benchmarks and their docs refer
/// here.
pub const MIX: [(Outcome, u64); 9] = [
    (Outcome::Success, 55),
    (Outcome::Failure, 15),
    (Outcome::Killed, 7),
    (Outcome::Skipped, 7),
    (Outcome::Declined, 6),
    (Outcome::Error, 5),
    (Outcome::ConfigError, 5),
    (Outcome::NoRun, 0),
    (Outcome::Stuck, 0),
];

/// The chaos suite's harsher mix (percent): fewer builds run to their end, more are
/// cancelled, declined or torn down without running. [`Outcome::Success`] stands for every
/// build that runs to its teardown; the status that teardown writes is drawn apart, from
/// [`TEARDOWN`].
pub const CHAOS: [(Outcome, u64); 6] = [
    (Outcome::Success, 70),
    (Outcome::NoRun, 4),
    (Outcome::Killed, 9),
    (Outcome::Skipped, 5),
    (Outcome::Declined, 8),
    (Outcome::ConfigError, 4),
];

/// The soak's mix (percent): a day of a busy drone, with builds that never end.
pub const SOAK: [(Outcome, u64); 6] = [
    (Outcome::Success, 60),
    (Outcome::Failure, 20),
    (Outcome::Killed, 6),
    (Outcome::Declined, 5),
    (Outcome::Stuck, 1),
    (Outcome::ConfigError, 8),
];

/// The statuses a teardown writes in the chaos suite, each equally likely (mostly success).
pub const TEARDOWN: [&str; 11] = [
    "success", "success", "success", "success", "success", "success", "success", "failure",
    "failure", "error", "killed",
];

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Error,
        Outcome::Killed,
        Outcome::Skipped,
        Outcome::Declined,
        Outcome::ConfigError,
        Outcome::NoRun,
        Outcome::Stuck,
    ];

    /// Every outcome whose build ends ([`Outcome::ALL`] but [`Outcome::Stuck`]): what a test
    /// that waits for the reconciler to go idle may schedule (a stuck build stays tracked
    /// until `max_build_age_ms`, as it should).
    pub const ENDING: [Outcome; 8] = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Error,
        Outcome::Killed,
        Outcome::Skipped,
        Outcome::Declined,
        Outcome::ConfigError,
        Outcome::NoRun,
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
            Outcome::NoRun => "success",
            Outcome::Stuck => "running",
        }
    }

    /// The outcome of a roll in `0..100` under [`MIX`] (a roll of 100 or more: the last).
    pub fn from_roll(roll: u64) -> Outcome {
        Outcome::draw(&MIX, roll).unwrap_or(Outcome::ConfigError)
    }

    /// The outcome of a roll in `0..100` under `mix` (shares in percent, in the table's
    /// order); `None` past its end.
    pub fn draw(mix: &[(Outcome, u64)], roll: u64) -> Option<Outcome> {
        let mut upto = 0;
        for (outcome, share) in mix {
            upto += share;
            if roll < upto {
                return Some(*outcome);
            }
        }
        None
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
        let ending: Vec<Outcome> = Outcome::ALL
            .into_iter()
            .filter(|o| *o != Outcome::Stuck)
            .collect();
        assert_eq!(ending, Outcome::ENDING);
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

    #[test]
    fn the_chaos_and_soak_mixes_add_up_and_split_in_their_order() {
        assert_eq!(CHAOS.iter().map(|(_, s)| s).sum::<u64>(), 100);
        assert_eq!(SOAK.iter().map(|(_, s)| s).sum::<u64>(), 100);
        assert_eq!(Outcome::draw(&SOAK, 91), Some(Outcome::Stuck));
        assert_eq!(Outcome::draw(&SOAK, 92), Some(Outcome::ConfigError));
        assert_eq!(Outcome::draw(&CHAOS, 69), Some(Outcome::Success));
        assert_eq!(Outcome::draw(&CHAOS, 70), Some(Outcome::NoRun));
        assert_eq!(Outcome::draw(&CHAOS, 99), Some(Outcome::ConfigError));
        assert_eq!(Outcome::draw(&CHAOS, 100), None);
    }
}
