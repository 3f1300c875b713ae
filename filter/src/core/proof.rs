//! What may move delivery state, as types. A live webhook is [`Evidence`] (its drone
//! signature verified) or a [`Hint`] (anyone who can reach the pipeline can send one); only
//! [`Evidence`], drone's own answer about a build ([`ApiBuild`]) and the pipeline's answer to a
//! re-delivery of drone's state ([`Redelivery`]) make a [`Proof`]. Tombstoning a build
//! ([`crate::core::ledger::Ledger::finish`]), settling it
//! ([`crate::core::ledger::Ledger::settle`]) and the SLO ([`crate::core::slo::Slo`]) take a
//! [`Proof`], so data a hint brought cannot reach them: the compiler refuses, not a review.
//! (Gap filling and the watermarks take the reconciler's `Shown`, built the same way.)
//!
//! The seal holds because nothing else can make what a proof is made of: an [`Evidence`] only
//! from an [`Observation`] whose queue tag verified (its fields are private to
//! `core::observation`), an [`ApiBuild`] only from `drone_api::parse_build` (its fields are
//! private too), and a build's settled state is private to `core::ledger`: each has its own
//! `compile_fail` doctest there.
//!
//! A hint cannot settle a build:
//!
//! ```compile_fail,E0308
//! use status_sync::core::ledger::Ledger;
//! use status_sync::core::observation::Observation;
//! use status_sync::core::proof::{Proof, Seen};
//!
//! fn settle_from_a_hint(ledger: &mut Ledger, obs: Observation) {
//!     if let Seen::Hint(hint) = Seen::sort(obs) {
//!         // error[E0308]: expected `&Evidence`, found `&Hint`
//!         let proof = Proof::evidence(&hint);
//!         ledger.settle(&hint.key(), hint.version(), hint.status(), &proof);
//!     }
//! }
//! ```
//!
//! nor finish one:
//!
//! ```compile_fail,E0308
//! use status_sync::core::ledger::Ledger;
//! use status_sync::core::observation::Observation;
//! use status_sync::core::proof::{Proof, Seen};
//!
//! fn finish_from_a_hint(ledger: &mut Ledger, obs: Observation) {
//!     if let Seen::Hint(hint) = Seen::sort(obs) {
//!         // error[E0308]: expected `&Evidence`, found `&Hint`
//!         ledger.finish(&hint.key(), hint.version(), &Proof::evidence(&hint));
//!     }
//! }
//! ```
//!
//! nor move the SLO:
//!
//! ```compile_fail,E0308
//! use status_sync::core::observation::Observation;
//! use status_sync::core::proof::{Proof, Seen};
//! use status_sync::core::slo::Slo;
//!
//! fn slo_from_a_hint(slo: &mut Slo, obs: Observation, now_ms: u64) {
//!     if let Seen::Hint(hint) = Seen::sort(obs) {
//!         // error[E0308]: expected `&Evidence`, found `&Hint`
//!         let proof = Proof::evidence(&hint);
//!         slo.outcome(hint.key(), hint.version(), hint.outcome(), now_ms, &proof);
//!     }
//! }
//! ```
//!
//! nor give a repository's name (a hint gives only a [`Candidate`], no [`RepoRef`] to confirm
//! or rename with, nor the webhook it came in):
//!
//! ```compile_fail,E0599
//! use status_sync::core::model::RepoRef;
//! use status_sync::core::proof::Hint;
//!
//! fn name_from_a_hint(hint: &Hint) -> RepoRef {
//!     // error[E0599]: no method named `webhook` found for reference `&Hint`
//!     hint.webhook().repo.clone()
//! }
//! ```
//!
//! while evidence can (the same code with [`Evidence`] compiles):
//!
//! ```
//! use status_sync::core::ledger::Ledger;
//! use status_sync::core::observation::Observation;
//! use status_sync::core::proof::{Proof, Seen};
//! use status_sync::core::slo::Slo;
//!
//! fn from_evidence(ledger: &mut Ledger, slo: &mut Slo, obs: Observation, now_ms: u64) {
//!     if let Seen::Evidence(evidence) = Seen::sort(obs) {
//!         let hook = evidence.webhook();
//!         let proof = Proof::evidence(&evidence);
//!         slo.outcome(hook.key(), hook.version, evidence.outcome(), now_ms, &proof);
//!         ledger.settle(&hook.key(), hook.version, hook.status, &proof);
//!         ledger.finish(&hook.key(), hook.version, &proof);
//!     }
//! }
//! ```

use super::drone_api::ApiBuild;
use super::model::{BuildKey, BuildStatus, DeliveryOutcome, ParsedWebhook, RepoRef};
use super::observation::Observation;

/// A live webhook whose drone signature verified.
#[derive(Debug)]
pub struct Evidence(Observation);

/// A live webhook nobody vouches for: anyone who can reach the pipeline can send one.
#[derive(Debug)]
pub struct Hint(Observation);

/// A live webhook, sorted by what vouches for it.
#[derive(Debug)]
pub enum Seen {
    Evidence(Evidence),
    Hint(Hint),
}

impl Seen {
    /// Evidence when drone's signature verified, else a hint: the one place a queue
    /// message's `verified` is read.
    pub fn sort(obs: Observation) -> Seen {
        if obs.verified() {
            Seen::Evidence(Evidence(obs))
        } else {
            Seen::Hint(Hint(obs))
        }
    }
}

impl Evidence {
    pub fn key(&self) -> BuildKey {
        self.0.webhook().key()
    }

    pub fn outcome(&self) -> DeliveryOutcome {
        self.0.outcome()
    }

    pub fn webhook(&self) -> &ParsedWebhook {
        self.0.webhook()
    }

    pub fn into_webhook(self) -> ParsedWebhook {
        self.0.into_webhook()
    }
}

/// What a hint says, as far as anything may use it: the build it names, the state it claims,
/// what the pipeline answered, and the repository name it gives only as a [`Candidate`]. It
/// gives no [`ParsedWebhook`] and no [`RepoRef`], so its name cannot be confirmed (or rename a
/// repository) and its `repo` or `system` object cannot be re-delivered.
impl Hint {
    pub fn outcome(&self) -> DeliveryOutcome {
        self.0.outcome()
    }

    pub fn key(&self) -> BuildKey {
        self.0.webhook().key()
    }

    pub fn version(&self) -> u64 {
        self.0.webhook().version
    }

    pub fn status(&self) -> BuildStatus {
        self.0.webhook().status
    }

    /// The repository name the hint gives: a candidate, for drone to confirm or refute.
    pub fn candidate(&self) -> Candidate {
        Candidate(self.0.webhook().repo.clone())
    }
}

/// A repository name nobody vouches for (a hint's, or a hint-only snapshot record's): the
/// repository identities take it only as a candidate, to ask drone about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate(RepoRef);

impl Candidate {
    /// A name nobody vouches for (making a candidate is always safe).
    pub fn new(repo: RepoRef) -> Self {
        Candidate(repo)
    }

    /// The name, for the repository identities to keep as a candidate.
    pub(crate) fn name(&self) -> &RepoRef {
        &self.0
    }
}

/// A re-delivery of drone's state of a build: drone's version and status, as drone's answer
/// gave them (built only from an [`ApiBuild`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redelivery {
    version: u64,
    status: BuildStatus,
}

impl Redelivery {
    pub fn of(answer: &ApiBuild<'_>) -> Self {
        Redelivery {
            version: answer.version(),
            status: answer.status(),
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn status(&self) -> BuildStatus {
        self.status
    }
}

/// What may finish a build or move the SLO: evidence, drone's answer about the build, or the
/// pipeline's answer to a re-delivery of drone's state. Never anything a hint brought.
#[derive(Debug)]
pub struct Proof {
    _by: By,
}

#[derive(Debug)]
enum By {
    Evidence,
    Drone,
    Redelivery,
    #[cfg(test)]
    Test,
}

impl Proof {
    /// A verified webhook.
    pub fn evidence(_: &Evidence) -> Self {
        Proof { _by: By::Evidence }
    }

    /// Drone's answer about one build (whatever asked for the lookup: drone's word about that
    /// build; what else it may move is the reconciler's `Shown`'s business).
    pub fn drone(_: &ApiBuild<'_>) -> Self {
        Proof { _by: By::Drone }
    }

    /// The pipeline's answer to a re-delivery of drone's state.
    pub fn redelivery(_: &Redelivery) -> Self {
        Proof {
            _by: By::Redelivery,
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Proof { _by: By::Test }
    }
}
