//! Repository identities and objects the reconciler keeps: which name addresses a repository
//! id in drone's API (confirmed by evidence or drone, or only a candidate an unverified webhook
//! gave), its gap-filling watermarks and discovery schedule, and the `repo` objects
//! re-deliveries carry. Every map here is bounded by `max_repos`.
//!
//! A name is in one of three states ([`NameState`]): a candidate only hints gave, a candidate
//! drone is being asked about, or a confirmed name. Only a confirmed name has a watch (when it
//! began, its pool, watermarks and discovery schedule): the state is private and moves only
//! through [`Idents`]' methods, so no other module can confirm a name by setting a flag.

use super::backoff::{grow_interval, Rng};
use super::fifo_map::FifoMap;
use super::keyed::Map;
use super::ledger::NOT_SCHEDULED;
use super::model::{BuildKey, RepoRef};
use super::proof::Candidate;
use std::collections::{BTreeSet, VecDeque};

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

/// A name another hint gave while a candidate was being asked about.
type Name = (Box<str>, Box<str>);

/// Where a repository's name stands.
#[derive(Clone, Debug)]
enum NameState {
    /// Only unverified webhooks gave this name; drone was not asked about it yet (or gave no
    /// usable answer). `next`: see [`NameState::Confirming`].
    Candidate { next: Option<Name> },
    /// A confirmation call for the candidate is on its way. `next`: another name a hint gave
    /// meanwhile, the next candidate should drone refute this one (so a forged name sent
    /// first cannot shut out the real one).
    Confirming { next: Option<Name> },
    /// Evidence or drone gave this name for this id.
    Confirmed(Watch),
}

/// What a confirmed name has: its pool, its watch, its watermarks and its discovery.
#[derive(Clone, Debug)]
struct Watch {
    /// The pool this name is in (see [`Vouch`]).
    vouch: Vouch,
    /// When this reconciler began watching the repository: drone or evidence first confirmed
    /// its name here (0: inherited from a previous leader's watermarks, whose watch began at
    /// a time unknown). A build drone says finished before it is never re-delivered.
    since_ms: u64,
    /// Highest build number evidence or drone showed for this repository (0 = none yet), for
    /// finding builds whose every webhook was lost.
    max_number: u64,
    /// Lowest build number evidence or drone showed since this reconciler started (0 =
    /// none), kept in the watermarks. Gap filling never goes below it.
    min_number: u64,
    /// Discovery: when evidence or drone last showed a new build number (0 = not known yet:
    /// set on the first discovery), the current interval between looks at `counter`, when
    /// the next look is due ([`NOT_SCHEDULED`]: none), and whether a look is on its way.
    last_activity_ms: u64,
    discover_interval_ms: u32,
    discover_due_ms: u64,
    discovering: bool,
}

impl Watch {
    fn new(vouch: Vouch, since_ms: u64) -> Self {
        Watch {
            vouch,
            since_ms,
            max_number: 0,
            min_number: 0,
            last_activity_ms: 0,
            discover_interval_ms: 0,
            discover_due_ms: NOT_SCHEDULED,
            discovering: false,
        }
    }
}

/// A repository's name (to address the API) and where it stands.
#[derive(Clone, Debug)]
pub(crate) struct RepoIdent {
    namespace: Box<str>,
    name: Box<str>,
    state: NameState,
}

/// How a build of a repository can be looked up now ([`Idents::address`]).
#[derive(Debug)]
pub(crate) enum Address {
    /// Under its confirmed name.
    Confirmed(RepoRef),
    /// Not before drone confirms this candidate, which nobody asked about yet.
    Candidate(RepoRef),
    /// Not before the answer about the candidate, which is on its way.
    Confirming,
}

/// What discovery may do with the repository due first ([`Idents::look`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Look {
    /// Ask drone for its `counter`, under this name.
    Ask(RepoRef),
    /// Quiet for longer than any build may run (or no confirmed name): not looked at again
    /// until a webhook or drone shows a new build.
    Drop,
}

/// Repository identities: at most `2 * max_repos` names evidence or drone vouch for and
/// `max_repos` names hints brought (candidates, and those drone confirmed for a hint), the
/// oldest of a pool going first (counted in `repos_evicted`). Small (a name and two
/// numbers), unlike the `repo` objects, which `max_repos` bounds.
#[derive(Debug, Default)]
pub(crate) struct Idents {
    map: Map<u64, RepoIdent>,
    /// Order in which ids entered the evidence pool (0) or the hints' pool (1); lazily
    /// cleaned.
    order: [VecDeque<u64>; 2],
    counts: [usize; 2],
    /// Discovery index: (due, repository id as a [`BuildKey`] of number 0) of confirmed
    /// repositories (the ledger's index type: one instantiation less in the module).
    due: BTreeSet<(u64, BuildKey)>,
    /// `max_repos`.
    cap: usize,
    /// A watermark moved since the last [`Idents::take_marks_moved`].
    marks_moved: bool,
}

impl RepoIdent {
    fn new(repo: &RepoRef, state: NameState) -> Self {
        RepoIdent {
            namespace: repo.namespace.clone().into_boxed_str(),
            name: repo.name.clone().into_boxed_str(),
            state,
        }
    }

    /// This identity as the API addresses it (one copy of the conversion for every caller).
    #[inline(never)]
    fn repo(&self, id: u64) -> RepoRef {
        RepoRef {
            id,
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
        }
    }

    fn is(&self, namespace: &str, name: &str) -> bool {
        *self.namespace == *namespace && *self.name == *name
    }

    fn rename(&mut self, repo: &RepoRef) {
        if !self.is(&repo.namespace, &repo.name) {
            self.namespace = repo.namespace.clone().into_boxed_str();
            self.name = repo.name.clone().into_boxed_str();
        }
    }

    fn vouch(&self) -> Vouch {
        match &self.state {
            NameState::Confirmed(w) => w.vouch,
            NameState::Candidate { .. } | NameState::Confirming { .. } => Vouch::Hint,
        }
    }

    fn watch(&self) -> Option<&Watch> {
        match &self.state {
            NameState::Confirmed(w) => Some(w),
            _ => None,
        }
    }

    fn watch_mut(&mut self) -> Option<&mut Watch> {
        match &mut self.state {
            NameState::Confirmed(w) => Some(w),
            _ => None,
        }
    }

    fn due_ms(&self) -> u64 {
        self.watch().map_or(NOT_SCHEDULED, |w| w.discover_due_ms)
    }
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Idents {
    /// An empty set of identities, at most `max_repos` per pool (twice for evidence).
    pub(crate) fn new(max_repos: usize) -> Self {
        Idents {
            cap: max_repos,
            ..Default::default()
        }
    }

    fn watch_mut(&mut self, id: u64) -> Option<&mut Watch> {
        self.map.get_mut(&id).and_then(RepoIdent::watch_mut)
    }

    /// The confirmed name of repository `id`: (namespace, name).
    pub(crate) fn confirmed_name(&self, id: u64) -> Option<(&str, &str)> {
        let i = self.map.get(&id)?;
        i.watch().map(|_| (&*i.namespace, &*i.name))
    }

    /// The confirmed name of repository `id` as the API addresses it.
    pub(crate) fn confirmed_repo(&self, id: u64) -> Option<RepoRef> {
        let i = self.map.get(&id)?;
        i.watch().map(|_| i.repo(id))
    }

    /// The name of repository `id`, confirmed or a candidate (a snapshot record keeps it).
    pub(crate) fn repo(&self, id: u64) -> Option<RepoRef> {
        self.map.get(&id).map(|i| i.repo(id))
    }

    /// Whether `id` has a confirmed name of the evidence pool: the only names gap filling, the
    /// watermarks and the evidence lane of discovery follow.
    #[cfg(test)]
    fn watched(&self, id: u64) -> bool {
        self.map
            .get(&id)
            .and_then(RepoIdent::watch)
            .is_some_and(|w| w.vouch == Vouch::Evidence)
    }

    /// The pool of `id`'s name, if it has one.
    pub(crate) fn vouch(&self, id: u64) -> Option<Vouch> {
        self.map.get(&id).map(RepoIdent::vouch)
    }

    /// When this reconciler began watching repository `id` (0: a previous leader's watch, its
    /// start unknown); `None` while its name is not confirmed.
    pub(crate) fn watch_since(&self, id: u64) -> Option<u64> {
        self.map
            .get(&id)
            .and_then(RepoIdent::watch)
            .map(|w| w.since_ms)
    }

    /// Highest build number evidence or drone showed for repository `id` (0: none).
    pub(crate) fn max_number(&self, id: u64) -> u64 {
        self.map
            .get(&id)
            .and_then(RepoIdent::watch)
            .map_or(0, |w| w.max_number)
    }

    /// How a build of repository `id` can be looked up now.
    pub(crate) fn address(&self, id: u64) -> Option<Address> {
        let i = self.map.get(&id)?;
        Some(match &i.state {
            NameState::Confirmed(_) => Address::Confirmed(i.repo(id)),
            NameState::Candidate { .. } => Address::Candidate(i.repo(id)),
            NameState::Confirming { .. } => Address::Confirming,
        })
    }

    /// A confirmation call for `id`'s candidate is on its way.
    pub(crate) fn confirming(&mut self, id: u64) {
        if let Some(i) = self.map.get_mut(&id) {
            if let NameState::Candidate { next } = &mut i.state {
                i.state = NameState::Confirming { next: next.take() };
            }
        }
    }

    /// The confirmation call for `id`'s candidate got no usable answer: it may be asked again.
    pub(crate) fn unconfirmed(&mut self, id: u64) {
        if let Some(i) = self.map.get_mut(&id) {
            if let NameState::Confirming { next } = &mut i.state {
                i.state = NameState::Candidate { next: next.take() };
            }
        }
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
        let Some(i) = self.map.get_mut(&repo.id) else {
            let new = RepoIdent::new(repo, NameState::Confirmed(Watch::new(vouch, now_ms)));
            self.map.insert(repo.id, new);
            return self.added(repo.id, vouch);
        };
        i.rename(repo);
        let moves = match &mut i.state {
            NameState::Confirmed(w) => {
                w.since_ms = w.since_ms.min(now_ms);
                let moves = w.vouch == Vouch::Hint && vouch == Vouch::Evidence;
                if moves {
                    w.vouch = vouch;
                }
                moves
            }
            NameState::Candidate { .. } | NameState::Confirming { .. } => {
                i.state = NameState::Confirmed(Watch::new(vouch, now_ms));
                vouch == Vouch::Evidence
            }
        };
        if !moves {
            return 0;
        }
        if let Some(c) = self.counts.get_mut(Vouch::Hint.index()) {
            *c = c.saturating_sub(1);
        }
        self.added(repo.id, vouch)
    }

    /// Records a name a previous leader's watermarks vouch for (evidence pool; its watch
    /// began before this reconciler's, at a time unknown: [`Idents::watch_since`] is 0).
    pub(crate) fn inherit(&mut self, repo: &RepoRef) -> u64 {
        self.confirm_as(repo, Vouch::Evidence, 0)
    }

    /// Records a previous leader's watermarks for `repo` (see [`Idents::inherit`]) and
    /// schedules a look at its `counter` at once. Returns how many identities were evicted.
    pub(crate) fn inherit_marks(
        &mut self,
        repo: &RepoRef,
        max_number: u64,
        min_number: u64,
    ) -> u64 {
        let evicted = self.inherit(repo);
        self.schedule_discovery(repo.id, 0);
        if let Some(w) = self.watch_mut(repo.id) {
            w.max_number = w.max_number.max(max_number);
            if w.min_number == 0 || (min_number > 0 && min_number < w.min_number) {
                w.min_number = min_number;
            }
        }
        evicted
    }

    /// Whether a watermark moved since the last call (the snapshot's watermarks are due).
    pub(crate) fn take_marks_moved(&mut self) -> bool {
        std::mem::take(&mut self.marks_moved)
    }

    /// The watermarks of the evidence pool's names: (repository, highest, lowest number).
    pub(crate) fn watermarks(&self) -> Vec<(RepoRef, u64, u64)> {
        self.map
            .iter()
            .filter_map(|(id, i)| Some((id, i, i.watch()?)))
            .filter(|(_, _, w)| w.vouch == Vouch::Evidence && w.max_number > 0)
            .map(|(id, i, w)| (i.repo(*id), w.max_number, w.min_number))
            .collect()
    }

    /// Evidence or drone showed build `number` of a watched repository `id`: the watermarks
    /// take it. Returns the (highest, lowest) numbers seen before, `None` when `id` has no
    /// confirmed name of the evidence pool.
    pub(crate) fn show_number(&mut self, id: u64, number: u64) -> Option<(u64, u64)> {
        let w = self.watch_mut(id).filter(|w| w.vouch == Vouch::Evidence)?;
        let seen = (w.max_number, w.min_number);
        if number > seen.0 {
            w.max_number = number;
        }
        if seen.1 == 0 || number < seen.1 {
            w.min_number = number;
        }
        self.marks_moved |= number > seen.0 || seen.1 == 0 || number < seen.1;
        Some(seen)
    }

    /// Drone's newest number for confirmed repository `id` (a listing): the highest number
    /// takes it. Returns the highest number known before, `None` without a confirmed name.
    pub(crate) fn raise_max(&mut self, id: u64, newest: u64) -> Option<u64> {
        let w = self.watch_mut(id)?;
        let known = w.max_number;
        w.max_number = w.max_number.max(newest);
        self.marks_moved |= newest > known;
        Some(known)
    }

    /// Drone's `counter` for confirmed repository `id`: when above the highest number known,
    /// it becomes the highest and the repository is active at `now_ms`. Returns the highest
    /// number known before when it was below `counter`.
    pub(crate) fn raise_counter(&mut self, id: u64, counter: u64, now_ms: u64) -> Option<u64> {
        let w = self.watch_mut(id)?;
        let known = w.max_number;
        if counter <= known {
            return None;
        }
        w.max_number = counter;
        w.last_activity_ms = now_ms;
        self.marks_moved = true;
        Some(known)
    }

    /// Records a name an unverified webhook gave, unless drone or evidence already named the
    /// repository (hints never rename). The latest candidate wins: the genuine webhooks of a
    /// build keep coming, a refuted candidate is dropped.
    pub(crate) fn candidate(&mut self, candidate: &Candidate) -> u64 {
        let repo = candidate.name();
        let Some(i) = self.map.get_mut(&repo.id) else {
            let new = RepoIdent::new(repo, NameState::Candidate { next: None });
            self.map.insert(repo.id, new);
            return self.added(repo.id, Vouch::Hint);
        };
        let same = i.is(&repo.namespace, &repo.name);
        match &mut i.state {
            NameState::Confirmed(_) => {}
            NameState::Candidate { .. } => i.rename(repo),
            NameState::Confirming { next } => {
                if !same {
                    *next = Some((
                        repo.namespace.clone().into_boxed_str(),
                        repo.name.clone().into_boxed_str(),
                    ));
                }
            }
        }
        0
    }

    /// Drops a candidate drone refuted, if it is still the one asked about; a name another
    /// hint gave meanwhile becomes the candidate.
    pub(crate) fn refute(&mut self, id: u64, namespace: &str, name: &str) {
        self.unconfirmed(id);
        let Some(i) = self.map.get_mut(&id) else {
            return;
        };
        let same = i.is(namespace, name);
        let NameState::Candidate { next } = &mut i.state else {
            return;
        };
        if !same {
            return;
        }
        match next.take() {
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

    fn added(&mut self, id: u64, vouch: Vouch) -> u64 {
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
                if self.map.get(&old).is_some_and(|i| i.vouch() == vouch) {
                    if let Some(gone) = self.map.remove(&old) {
                        self.due.remove(&(gone.due_ms(), repo_key(old)));
                    }
                    *count -= 1;
                    evicted += 1;
                }
            }
            if order.len() > 2 * *count + 64 {
                let map = &self.map;
                order.retain(|id| map.get(id).is_some_and(|i| i.vouch() == vouch));
            }
        }
        evicted
    }

    /// Schedules the next look at a confirmed repository's `counter` (at most one per
    /// repository).
    pub(crate) fn schedule_discovery(&mut self, id: u64, due_ms: u64) {
        let Some(w) = self.map.get_mut(&id).and_then(RepoIdent::watch_mut) else {
            return;
        };
        if w.discover_due_ms != NOT_SCHEDULED {
            self.due.remove(&(w.discover_due_ms, repo_key(id)));
        }
        w.discover_due_ms = due_ms;
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
        if let Some(w) = self.watch_mut(id) {
            w.discover_due_ms = NOT_SCHEDULED;
        }
        Some(id)
    }

    /// The next repository due for discovery: (due, repository id).
    pub(crate) fn next_discovery(&self) -> Option<(u64, u64)> {
        self.due.first().map(|(t, k)| (*t, k.repo_id))
    }

    /// A new build number of confirmed repository `id` showed at `now_ms`: it is active, so its
    /// `counter` is looked at often again (from `stale_after_ms`), unless a look is on its way.
    pub(crate) fn note_activity(
        &mut self,
        id: u64,
        now_ms: u64,
        stale_after_ms: u64,
        rng: &mut Rng,
    ) {
        let Some(w) = self.watch_mut(id) else {
            return;
        };
        w.last_activity_ms = now_ms;
        w.discover_interval_ms = clamp_u32(stale_after_ms);
        if w.discovering {
            return;
        }
        let current = w.discover_due_ms;
        let due = now_ms.saturating_add(rng.jitter(stale_after_ms));
        if due < current {
            self.schedule_discovery(id, due);
        }
    }

    /// Whether repository `id`, due for discovery at `now_ms`, is to be asked about, without
    /// changing anything (decided before a call is paid for).
    pub(crate) fn look(&self, id: u64, now_ms: u64, max_age_ms: u64) -> Look {
        let Some((i, w)) = self.map.get(&id).and_then(|i| Some((i, i.watch()?))) else {
            return Look::Drop;
        };
        // Loaded from a previous leader's watermarks (0): silence counts from now.
        let active = if w.last_activity_ms == 0 {
            now_ms
        } else {
            w.last_activity_ms
        };
        if now_ms.saturating_sub(active) > max_age_ms {
            Look::Drop
        } else {
            Look::Ask(i.repo(id))
        }
    }

    /// A look at confirmed repository `id`'s `counter` is on its way.
    pub(crate) fn begin_look(&mut self, id: u64, now_ms: u64) {
        if let Some(w) = self.watch_mut(id) {
            if w.last_activity_ms == 0 {
                w.last_activity_ms = now_ms;
            }
            w.discovering = true;
        }
    }

    /// The look at repository `id` ended; `found` when it showed new builds. The next one is
    /// due after `stale_after_ms` when it did, else after an interval growing up to `max_ms`.
    pub(crate) fn end_look(
        &mut self,
        id: u64,
        found: bool,
        now_ms: u64,
        timing: (u64, u64),
        rng: &mut Rng,
    ) {
        let (stale_after, max) = timing;
        let Some(i) = self.map.get_mut(&id) else {
            return;
        };
        let previous = i.watch().map_or(0, |w| w.discover_interval_ms);
        // Nothing new (or no usable answer): look less often.
        let interval = if found {
            stale_after
        } else {
            grow_interval(u64::from(previous), stale_after, max)
        };
        let due = now_ms.saturating_add(rng.jitter(interval));
        let Some(w) = i.watch_mut() else {
            return;
        };
        w.discovering = false;
        w.discover_interval_ms = clamp_u32(interval);
        self.schedule_discovery(id, due);
    }
}

pub(crate) fn repo_key(repo_id: u64) -> BuildKey {
    BuildKey { repo_id, number: 0 }
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

    fn cand(id: u64, name: &str) -> Candidate {
        Candidate::new(repo(id, name))
    }

    fn idents(cap: usize) -> Idents {
        Idents::new(cap)
    }

    #[test]
    fn hints_never_rename_a_confirmed_repository() {
        let mut i = idents(4);
        i.confirm(&repo(1, "real"), 0);
        i.candidate(&cand(1, "forged"));
        assert_eq!(i.confirmed_name(1).unwrap().1, "real");
        // Evidence and drone may rename.
        i.confirm(&repo(1, "renamed"), 0);
        assert_eq!(i.confirmed_name(1).unwrap().1, "renamed");
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
            evicted += i.candidate(&cand(id, "c"));
            evicted += i.confirm_as(&repo(id, "c"), Vouch::Hint, 200 + id);
        }
        assert_eq!(evicted, 4, "hint names pushed out hint names");
        assert!(i.watched(1));
        assert_eq!(i.watch_since(6), Some(206));
        assert!(!i.watched(6), "confirmed, not watched");
        // Drone confirming an evidence name for a hint leaves it where it is.
        assert_eq!(i.confirm_as(&repo(1, "real"), Vouch::Hint, 300), 0);
        assert_eq!(i.vouch(1), Some(Vouch::Evidence));
        // Evidence moves a hint name to its pool (2 × max_repos room).
        assert_eq!(i.confirm(&repo(6, "c"), 400), 0);
        assert_eq!(i.vouch(6), Some(Vouch::Evidence));
        assert_eq!(i.watch_since(6), Some(206), "watched since first");
        assert_eq!(i.inherit(&repo(9, "w")), 1, "the oldest evidence name goes");
        assert_eq!(i.watch_since(9), Some(0));
        assert!(i.repo(1).is_none());
    }

    #[test]
    fn a_refuted_candidate_gives_way_to_the_next_one() {
        let mut i = idents(4);
        i.candidate(&cand(1, "forged"));
        i.confirming(1);
        i.candidate(&cand(1, "real"));
        assert_eq!(
            i.repo(1).unwrap().name,
            "forged",
            "not while it is asked about"
        );
        i.refute(1, "o", "forged");
        assert_eq!(i.repo(1).unwrap().name, "real");
        i.refute(1, "o", "real");
        assert!(i.repo(1).is_none());
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
            evicted += i.candidate(&cand(id, "c"));
        }
        assert_eq!(evicted, 6 + 8);
        assert_eq!(i.map.len(), 4 + 2);
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
        assert_eq!(i.map.get(&1).unwrap().due_ms(), NOT_SCHEDULED);
    }

    /// A repository a previous leader handed over has no known last activity; its silence
    /// counts from this reconciler's first look at it, so one that stays quiet is dropped from
    /// discovery a build age later instead of being looked at forever (cargo-mutants survivor:
    /// `begin_look` doing nothing).
    #[test]
    fn a_handed_over_repository_that_stays_quiet_is_dropped_a_build_age_after_its_first_look() {
        let (age, timing) = (60_000, (30_000, 300_000));
        let mut rng = Rng::new(7);
        let mut i = idents(4);
        i.inherit_marks(&repo(1, "r"), 10, 5);
        assert_eq!(i.pop_discovery(1_000), Some(1));
        assert!(matches!(i.look(1, 1_000, age), Look::Ask(_)));
        i.begin_look(1, 1_000);
        i.end_look(1, false, 2_000, timing, &mut rng);
        assert!(matches!(i.look(1, 1_000 + age, age), Look::Ask(_)));
        assert!(matches!(i.look(1, 1_001 + age, age), Look::Drop));
    }

    /// One look at a repository's `counter` at a time: a new build showing while a look is on
    /// its way schedules no second one; the look's end schedules the next (cargo-mutants
    /// survivor: `begin_look` doing nothing).
    #[test]
    fn activity_during_a_look_schedules_no_second_look() {
        let mut rng = Rng::new(7);
        let mut i = idents(4);
        i.confirm(&repo(1, "r"), 0);
        i.schedule_discovery(1, 100);
        assert_eq!(i.pop_discovery(100), Some(1));
        i.begin_look(1, 100);
        i.note_activity(1, 200, 30_000, &mut rng);
        assert_eq!(
            i.next_discovery(),
            None,
            "a second look while one is on its way"
        );
        i.end_look(1, true, 300, (30_000, 300_000), &mut rng);
        assert!(i.next_discovery().is_some_and(|(t, id)| id == 1 && t > 300));
    }

    /// Names dropped out of turn (refuted candidates) leave stale places in the eviction
    /// order; its compaction keeps the live names of the kind, so the oldest still goes first
    /// after it (cargo-mutants survivor).
    #[test]
    fn eviction_order_compaction_keeps_the_bound() {
        let mut i = idents(2);
        i.candidate(&cand(1_000, "kept"));
        for id in 1..=100 {
            i.candidate(&cand(id, "c"));
            i.refute(id, "o", "c");
        }
        assert_eq!(i.map.len(), 1);
        for id in 101..=110 {
            i.candidate(&cand(id, "c"));
        }
        let mut kept: Vec<u64> = i.map.keys().copied().collect();
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
            i.candidate(&cand(id, "c"));
        }
        for id in 1..=500 {
            i.refute(id, "o", "c");
        }
        for id in 501..=5000 {
            i.candidate(&cand(id, "c"));
            assert!(within(&i), "{id}: {}", i.order[1].len());
            i.refute(id, "o", "c");
        }
    }
}
