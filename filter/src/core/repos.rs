//! Repository identities and objects the reconciler keeps: which name addresses a repository
//! id in drone's API (confirmed by evidence or drone, or only a candidate an unverified webhook
//! gave), its gap-filling watermarks and discovery schedule, and the `repo` objects
//! re-deliveries carry. Every map here is bounded by `max_repos`.

use super::fifo_map::FifoMap;
use super::ledger::NOT_SCHEDULED;
use super::model::{BuildKey, RepoRef};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// What vouches for a repository's name, and so which of the two bounded pools holds it.
///
/// Rule (issue 20, finding 7; `tests/hints.rs`
/// `hints_never_push_out_the_confirmed_name_of_a_repository_with_an_open_build`): a name
/// drone confirmed because a hint asked (`GET /api/repos/{o}/{n}` for a candidate) stays in
/// the hints' pool, so hints naming other real repositories can only push out names hints
/// brought, never a name evidence or drone's own answers gave. Only [`Vouch::Evidence`] names
/// have gap filling, watermarks and the evidence lane of discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Vouch {
    /// A verified webhook, or drone's answer to a call no hint asked for (a lookup of a build
    /// evidence or drone's numbering showed, discovery, the list of incomplete builds).
    Evidence,
    /// Only unverified webhooks: a candidate, or a name drone confirmed on a hint's behalf.
    Hint,
}

impl Vouch {
    fn index(self) -> usize {
        match self {
            Vouch::Evidence => 0,
            Vouch::Hint => 1,
        }
    }
}

/// A repository's name (to address the API) and its gap-filling watermarks.
#[derive(Clone, Debug)]
pub(crate) struct RepoIdent {
    pub(crate) namespace: Box<str>,
    pub(crate) name: Box<str>,
    /// Evidence (a verified webhook) or drone itself gave this name for this id. Otherwise it
    /// is a candidate from an unverified webhook, confirmed with drone before any use.
    pub(crate) confirmed: bool,
    /// The pool this name is in (see [`Vouch`]).
    pub(crate) vouch: Vouch,
    /// When this reconciler began watching the repository: drone or evidence first confirmed
    /// its name here (`None`: not yet; `Some(0)`: inherited from a previous leader's
    /// watermarks, whose watch began at a time unknown). A build drone says finished before
    /// it is never re-delivered.
    pub(crate) watch_since_ms: Option<u64>,
    /// A confirmation call for the candidate is on its way.
    pub(crate) confirming: bool,
    /// Another name a hint gave while the candidate was being confirmed: the next candidate
    /// should drone refute this one (so a forged name sent first cannot shut out the real one).
    pub(crate) next: Option<(Box<str>, Box<str>)>,
    /// Highest build number evidence or drone showed for this repository (0 = none yet), for
    /// finding builds whose every webhook was lost.
    pub(crate) max_number: u64,
    /// Lowest build number evidence or drone showed since this reconciler started (0 =
    /// none), kept in the watermarks. Gap filling never goes below it.
    pub(crate) min_number: u64,
    /// Discovery (confirmed repositories only): when evidence or drone last showed a new
    /// build number (0 = not known yet: set on the first discovery), the current interval
    /// between looks at `counter`, when the next look is due ([`NOT_SCHEDULED`]: none), and
    /// whether a look is on its way.
    pub(crate) last_activity_ms: u64,
    pub(crate) discover_interval_ms: u32,
    pub(crate) discover_due_ms: u64,
    pub(crate) discovering: bool,
}

/// Repository identities: at most `2 * max_repos` names evidence or drone vouch for and
/// `max_repos` names hints brought (candidates, and those drone confirmed for a hint), the
/// oldest of a pool going first (counted in `repos_evicted`). Small (a name and two
/// numbers), unlike the `repo` objects, which `max_repos` bounds.
#[derive(Debug, Default)]
pub(crate) struct Idents {
    pub(crate) map: HashMap<u64, RepoIdent>,
    /// Order in which ids entered the evidence pool (0) or the hints' pool (1); lazily
    /// cleaned.
    pub(crate) order: [VecDeque<u64>; 2],
    pub(crate) counts: [usize; 2],
    /// Discovery index: (due, repository id as a [`BuildKey`] of number 0) of confirmed
    /// repositories (the ledger's index type: one instantiation less in the module).
    pub(crate) due: BTreeSet<(u64, BuildKey)>,
    /// `max_repos`.
    pub(crate) cap: usize,
}

impl RepoIdent {
    /// Watched since `now_ms`, unless since earlier.
    fn watching_since(&mut self, now_ms: u64) {
        self.watch_since_ms = Some(self.watch_since_ms.map_or(now_ms, |t| t.min(now_ms)));
    }

    /// This identity as the API addresses it (one copy of the conversion for every caller).
    #[inline(never)]
    pub(crate) fn repo(&self, id: u64) -> RepoRef {
        RepoRef {
            id,
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
        }
    }
}

impl Idents {
    pub(crate) fn get(&self, id: &u64) -> Option<&RepoIdent> {
        self.map.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &u64) -> Option<&mut RepoIdent> {
        self.map.get_mut(id)
    }

    pub(crate) fn confirmed(&self, id: &u64) -> Option<&RepoIdent> {
        self.map.get(id).filter(|i| i.confirmed)
    }

    /// A confirmed name of the evidence pool: the only names gap filling, the watermarks and
    /// the evidence lane of discovery follow.
    pub(crate) fn watched(&self, id: &u64) -> Option<&RepoIdent> {
        self.confirmed(id).filter(|i| i.vouch == Vouch::Evidence)
    }

    /// The pool of `id`'s name, if it has one.
    pub(crate) fn vouch(&self, id: &u64) -> Option<Vouch> {
        self.map.get(id).map(|i| i.vouch)
    }

    /// Records a name evidence or drone gave for `repo.id` (renames included), in the evidence
    /// pool (a name hints brought moves there), watched since `now_ms` unless earlier.
    /// Returns how many identities were evicted to make room.
    pub(crate) fn confirm(&mut self, repo: &RepoRef, now_ms: u64) -> u64 {
        self.confirm_as(repo, Vouch::Evidence, now_ms)
    }

    /// Records a name drone confirmed (the same id) for `repo.id` in pool `vouch`: a name in
    /// the evidence pool stays there (drone may rename it); [`Vouch::Hint`] never moves a name
    /// to the evidence pool, so it never pushes one out. Returns how many identities were
    /// evicted to make room.
    pub(crate) fn confirm_as(&mut self, repo: &RepoRef, vouch: Vouch, now_ms: u64) -> u64 {
        let evidence = vouch == Vouch::Evidence;
        match self.map.get_mut(&repo.id) {
            Some(i) if i.confirmed && (i.vouch == Vouch::Evidence || !evidence) => {
                if *i.namespace != *repo.namespace || *i.name != *repo.name {
                    i.namespace = repo.namespace.clone().into_boxed_str();
                    i.name = repo.name.clone().into_boxed_str();
                }
                i.watching_since(now_ms);
                0
            }
            Some(i) => {
                let moves = i.vouch != vouch;
                i.namespace = repo.namespace.clone().into_boxed_str();
                i.name = repo.name.clone().into_boxed_str();
                i.confirmed = true;
                i.confirming = false;
                i.next = None;
                i.watching_since(now_ms);
                if !moves {
                    return 0;
                }
                i.vouch = vouch;
                if let Some(c) = self.counts.get_mut(Vouch::Hint.index()) {
                    *c = c.saturating_sub(1);
                }
                self.added(repo.id, vouch)
            }
            None => {
                let mut new = ident(repo, true);
                new.vouch = vouch;
                new.watch_since_ms = Some(now_ms);
                self.map.insert(repo.id, new);
                self.added(repo.id, vouch)
            }
        }
    }

    /// Records a name a previous leader's watermarks vouch for (evidence pool; its watch
    /// began before this reconciler's, at a time unknown: `watch_since_ms` is `Some(0)`).
    pub(crate) fn inherit(&mut self, repo: &RepoRef) -> u64 {
        self.confirm_as(repo, Vouch::Evidence, 0)
    }

    /// Records the name an unverified webhook gave, unless drone or evidence already named the
    /// repository (hints never rename). The latest candidate wins: the genuine webhooks of a
    /// build keep coming, a refuted candidate is dropped.
    pub(crate) fn candidate(&mut self, repo: &RepoRef) -> u64 {
        match self.map.get_mut(&repo.id) {
            Some(i) if i.confirmed => 0,
            Some(i) => {
                let same = *i.namespace == *repo.namespace && *i.name == *repo.name;
                if !i.confirming {
                    i.namespace = repo.namespace.clone().into_boxed_str();
                    i.name = repo.name.clone().into_boxed_str();
                } else if !same {
                    i.next = Some((
                        repo.namespace.clone().into_boxed_str(),
                        repo.name.clone().into_boxed_str(),
                    ));
                }
                0
            }
            None => {
                self.map.insert(repo.id, ident(repo, false));
                self.added(repo.id, Vouch::Hint)
            }
        }
    }

    /// Drops a candidate drone refuted, if it is still the one asked about; a name another
    /// hint gave meanwhile becomes the candidate.
    pub(crate) fn refute(&mut self, id: u64, namespace: &str, name: &str) {
        let Some(i) = self.map.get_mut(&id) else {
            return;
        };
        i.confirming = false;
        if i.confirmed || *i.namespace != *namespace || *i.name != *name {
            return;
        }
        match i.next.take() {
            Some((ns, n)) => {
                i.namespace = ns;
                i.name = n;
            }
            None => {
                self.map.remove(&id);
                self.counts[1] = self.counts[1].saturating_sub(1);
            }
        }
    }

    pub(crate) fn added(&mut self, id: u64, vouch: Vouch) -> u64 {
        let k = vouch.index();
        let mut evicted = 0;
        if let (Some(order), Some(count)) = (self.order.get_mut(k), self.counts.get_mut(k)) {
            order.push_back(id);
            *count += 1;
            let cap = match vouch {
                Vouch::Evidence => 2 * self.cap,
                Vouch::Hint => self.cap,
            };
            while *count > cap {
                let Some(old) = order.pop_front() else {
                    break;
                };
                if self.map.get(&old).is_some_and(|i| i.vouch == vouch) {
                    if let Some(gone) = self.map.remove(&old) {
                        self.due.remove(&(gone.discover_due_ms, repo_key(old)));
                    }
                    *count -= 1;
                    evicted += 1;
                }
            }
            if order.len() > 2 * *count + 64 {
                let map = &self.map;
                order.retain(|id| map.get(id).is_some_and(|i| i.vouch == vouch));
            }
        }
        evicted
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&u64, &RepoIdent)> {
        self.map.iter()
    }

    /// Schedules the next look at a confirmed repository's `counter` (at most one per
    /// repository).
    pub(crate) fn schedule_discovery(&mut self, id: u64, due_ms: u64) {
        let Some(i) = self.map.get_mut(&id).filter(|i| i.confirmed) else {
            return;
        };
        if i.discover_due_ms != NOT_SCHEDULED {
            self.due.remove(&(i.discover_due_ms, repo_key(id)));
        }
        i.discover_due_ms = due_ms;
        self.due.insert((due_ms, repo_key(id)));
    }

    /// Earliest repository due for discovery at `now_ms`, taken out of the schedule.
    pub(crate) fn pop_discovery(&mut self, now_ms: u64) -> Option<u64> {
        let first = *self.due.first()?;
        if first.0 > now_ms {
            return None;
        }
        self.due.remove(&first);
        let id = first.1.repo_id;
        if let Some(i) = self.map.get_mut(&id) {
            i.discover_due_ms = NOT_SCHEDULED;
        }
        Some(id)
    }

    /// The next repository due for discovery: (due, repository id).
    pub(crate) fn next_discovery(&self) -> Option<(u64, u64)> {
        self.due.first().map(|(t, k)| (*t, k.repo_id))
    }
}

pub(crate) fn repo_key(repo_id: u64) -> BuildKey {
    BuildKey { repo_id, number: 0 }
}

pub(crate) fn ident(repo: &RepoRef, confirmed: bool) -> RepoIdent {
    RepoIdent {
        namespace: repo.namespace.clone().into_boxed_str(),
        name: repo.name.clone().into_boxed_str(),
        confirmed,
        vouch: if confirmed {
            Vouch::Evidence
        } else {
            Vouch::Hint
        },
        watch_since_ms: None,
        confirming: false,
        next: None,
        max_number: 0,
        min_number: 0,
        last_activity_ms: 0,
        discover_interval_ms: 0,
        discover_due_ms: NOT_SCHEDULED,
        discovering: false,
    }
}

/// Bounded FIFO cache of `repo` objects (the big part: about 1.2 KB each), from evidence or
/// drone's answers only, by repository id; at most `max_repos`.
pub(crate) type RepoJsonCache = FifoMap<u64, Box<str>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(id: u64, name: &str) -> RepoRef {
        RepoRef {
            id,
            namespace: "o".into(),
            name: name.into(),
        }
    }

    fn idents(cap: usize) -> Idents {
        Idents {
            cap,
            ..Default::default()
        }
    }

    #[test]
    fn hints_never_rename_a_confirmed_repository() {
        let mut i = idents(4);
        i.confirm(&repo(1, "real"), 0);
        i.candidate(&repo(1, "forged"));
        assert_eq!(&*i.confirmed(&1).unwrap().name, "real");
        // Evidence and drone may rename.
        i.confirm(&repo(1, "renamed"), 0);
        assert_eq!(&*i.confirmed(&1).unwrap().name, "renamed");
    }

    /// Finding 7 of issue 20: names drone confirmed for hints stay in the hints' pool and push
    /// out only each other; evidence moves a name into its own pool; the watch starts at the
    /// first confirmation and an inherited name's is unknown (`Some(0)`).
    #[test]
    fn names_confirmed_for_hints_never_push_out_evidence_names() {
        let mut i = idents(1);
        assert_eq!(i.confirm(&repo(1, "real"), 100), 0);
        let mut evicted = 0;
        for id in 2..=6 {
            evicted += i.candidate(&repo(id, "c"));
            evicted += i.confirm_as(&repo(id, "c"), Vouch::Hint, 200 + id);
        }
        assert_eq!(evicted, 4, "hint names pushed out hint names");
        assert!(i.watched(&1).is_some());
        assert_eq!(i.confirmed(&6).map(|r| r.watch_since_ms), Some(Some(206)));
        assert!(i.watched(&6).is_none(), "confirmed, not watched");
        // Drone confirming an evidence name for a hint leaves it where it is.
        assert_eq!(i.confirm_as(&repo(1, "real"), Vouch::Hint, 300), 0);
        assert_eq!(i.vouch(&1), Some(Vouch::Evidence));
        // Evidence moves a hint name to its pool (2 × max_repos room).
        assert_eq!(i.confirm(&repo(6, "c"), 400), 0);
        assert_eq!(i.vouch(&6), Some(Vouch::Evidence));
        assert_eq!(
            i.get(&6).unwrap().watch_since_ms,
            Some(206),
            "watched since first"
        );
        assert_eq!(i.inherit(&repo(9, "w")), 1, "the oldest evidence name goes");
        assert_eq!(i.get(&9).unwrap().watch_since_ms, Some(0));
        assert!(i.get(&1).is_none());
    }

    #[test]
    fn a_refuted_candidate_gives_way_to_the_next_one() {
        let mut i = idents(4);
        i.candidate(&repo(1, "forged"));
        i.get_mut(&1).unwrap().confirming = true;
        i.candidate(&repo(1, "real"));
        assert_eq!(
            &*i.get(&1).unwrap().name,
            "forged",
            "not while it is asked about"
        );
        i.refute(1, "o", "forged");
        assert_eq!(&*i.get(&1).unwrap().name, "real");
        i.refute(1, "o", "real");
        assert!(i.get(&1).is_none());
    }

    #[test]
    fn both_kinds_are_bounded_and_eviction_leaves_no_discovery_behind() {
        let mut i = idents(2);
        let mut evicted = 0;
        for id in 1..=10 {
            evicted += i.confirm(&repo(id, "r"), 0);
            i.schedule_discovery(id, 100 + id);
        }
        for id in 11..=20 {
            evicted += i.candidate(&repo(id, "c"));
        }
        assert_eq!(evicted, 6 + 8);
        assert_eq!(i.iter().count(), 4 + 2);
        assert_eq!(i.due.len(), 4, "discovery only for the confirmed ones kept");
        assert_eq!(i.pop_discovery(1_000), Some(7));
        assert_eq!(i.next_discovery(), Some((108, 8)));
    }

    /// A repository is due for discovery once: rescheduling replaces its time; it is taken at
    /// its due time exactly, not before (cargo-mutants survivors).
    #[test]
    fn discovery_is_due_once_and_at_its_time() {
        let mut i = idents(4);
        i.confirm(&repo(1, "r"), 0);
        i.schedule_discovery(1, 500);
        i.schedule_discovery(1, 300);
        assert_eq!(i.due.len(), 1, "rescheduled, not added");
        assert_eq!(i.next_discovery(), Some((300, 1)));
        assert_eq!(i.pop_discovery(299), None);
        assert_eq!(i.pop_discovery(300), Some(1));
        assert_eq!(i.pop_discovery(10_000), None, "taken once");
        assert_eq!(i.get(&1).unwrap().discover_due_ms, NOT_SCHEDULED);
    }

    /// Names dropped out of turn (refuted candidates) leave stale places in the eviction
    /// order; its compaction keeps the live names of the kind, so the oldest still goes first
    /// after it (cargo-mutants survivor).
    #[test]
    fn eviction_order_compaction_keeps_the_bound() {
        let mut i = idents(2);
        i.candidate(&repo(1_000, "kept"));
        for id in 1..=100 {
            i.candidate(&repo(id, "c"));
            i.refute(id, "o", "c");
        }
        assert_eq!(i.iter().count(), 1);
        for id in 101..=110 {
            i.candidate(&repo(id, "c"));
        }
        let mut kept: Vec<u64> = i.iter().map(|(id, _)| *id).collect();
        kept.sort();
        assert_eq!(kept, vec![109, 110], "the newest, the oldest going first");
        assert!(i.order[1].len() <= 2 * i.counts[1] + 64);
    }

    /// The eviction order's memory bound holds after every name added, also once refutations
    /// lowered it below the queue's length (it must compact above the bound, not only at it).
    #[test]
    fn eviction_order_stays_within_its_bound_under_churn() {
        let mut i = idents(1000);
        let within = |i: &Idents| i.order[1].len() <= 2 * i.counts[1] + 64;
        for id in 1..=500 {
            i.candidate(&repo(id, "c"));
        }
        for id in 1..=500 {
            i.refute(id, "o", "c");
        }
        for id in 501..=5000 {
            i.candidate(&repo(id, "c"));
            assert!(within(&i), "{id}: {}", i.order[1].len());
            i.refute(id, "o", "c");
        }
    }
}
