//! Who vouches for what reaches the reconciler, as types: a live webhook is [`Evidence`] (its
//! drone signature verified) or a [`Hint`] (both in [`crate::core::proof`], with the
//! [`Proof`] that tombstoning and the SLO take); a drone call was asked for by evidence (or drone's
//! own numbering) or by a hint ([`Asker`]). The paths that move repository-wide or delivery
//! state take the evidence types only: the SLO ([`Reconciler::slo_saw`]), gap filling and the
//! watermarks ([`super::gaps::Shown`]), names in the evidence pool. A hint cannot be turned
//! into evidence outside this module.

use super::Reconciler;
use crate::core::config::SignatureMode;
use crate::core::ledger::Class;
pub(super) use crate::core::proof::{Evidence, Hint, Proof, Seen};
use crate::core::repos::Vouch;

/// What asked for a drone call about one build: its answer may move repository-wide state
/// (gap filling, watermarks, a name in the evidence pool) only when evidence or drone's own
/// numbering did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Asker {
    /// Evidence, drone's numbering (gap filling, discovery, scans) or drone's earlier answer.
    Evidence,
    /// Only unverified webhooks vouch for the build, where evidence exists
    /// (`signature_mode` `monitor` or `enforce`).
    Hint,
    /// An unverified webhook in `signature_mode: off`, where nothing can be evidence.
    Unsigned,
}

impl Asker {
    /// Who asks for the lookup of a build of `class`. In `signature_mode: off` nothing can be
    /// evidence: drone's answers are the best there is, so a lookup an unverified webhook
    /// asked for counts as drone's own (upward gap filling, watermarks, names); gap filling
    /// still never goes down, and nothing that finished before the watch is re-delivered.
    pub(super) fn of(class: Class, mode: SignatureMode) -> Asker {
        match (class, mode) {
            (Class::Hint, SignatureMode::Monitor | SignatureMode::Enforce) => Asker::Hint,
            (Class::Hint, SignatureMode::Off) => Asker::Unsigned,
            (Class::Backed | Class::Inferred, _) => Asker::Evidence,
        }
    }

    /// The pool a name drone confirmed for this asker goes to.
    pub(super) fn vouch(self) -> Vouch {
        match self {
            Asker::Evidence | Asker::Unsigned => Vouch::Evidence,
            Asker::Hint => Vouch::Hint,
        }
    }
}

impl Reconciler {
    /// What the pipeline did with a live webhook, for the SLO.
    ///
    /// Rule: only evidence moves the SLO gauges (`oldest_undelivered_seconds`,
    /// `transitions_lost`, `transitions_recovered`): a forged webhook the pipeline refused
    /// must not make it look behind, nor a forged accepted one make it look caught up
    /// (`tests/hints.rs`: `unverified_webhooks_never_move_the_slo_gauges`). Takes
    /// [`Evidence`], so a hint cannot reach it.
    pub(super) fn slo_saw(&mut self, evidence: &Evidence, now_ms: u64) {
        let hook = evidence.webhook();
        let proof = Proof::evidence(evidence);
        (self.slo).outcome(
            evidence.key(),
            hook.version,
            evidence.outcome(),
            now_ms,
            &proof,
        );
    }
}
