//! Drone's builds driven in virtual time, as chaos, soak, the benchmarks and
//! [`crate::server`] drive them: each build numbered per repository in creation order, its
//! lifecycle planned as timed [`Act`]s ([`acts`], or the harness's own timings), and every act
//! applied to its row ([`Row::act`]) with the write going to the [`Store`] the API answers
//! from. The harness chooses repositories, outcomes and
//! timings (its workload), when to run what is due, and what becomes of each webhook.

use crate::lifecycle::{Act, Hook, Row};
use crate::outcome::Outcome;
use crate::rng::Rng;
use crate::store::Store;
use std::collections::{BTreeMap, BTreeSet};

/// Events in time order (equal times: in the order they were scheduled).
#[derive(Debug)]
pub struct Timeline<E> {
    events: BTreeMap<(u64, u64), E>,
    seq: u64,
}

impl<E> Default for Timeline<E> {
    fn default() -> Self {
        Timeline {
            events: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<E> Timeline<E> {
    /// Schedules `e` at `t`.
    pub fn at(&mut self, t: u64, e: E) {
        self.seq += 1;
        self.events.insert((t, self.seq), e);
    }

    /// The earliest event, due before `until`.
    pub fn next_before(&mut self, until: u64) -> Option<(u64, E)> {
        let entry = self.events.first_entry().filter(|e| e.key().0 < until)?;
        let t = entry.key().0;
        Some((t, entry.remove()))
    }

    /// When the earliest event is due.
    pub fn first_at(&self) -> Option<u64> {
        self.events.keys().next().map(|k| k.0)
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// What drone does to a build created at `t` that ends as `outcome`, in time order: created;
/// after `pending_ms` declined, skipped or torn down without running, or set up and run
/// 2–7 steps (a start and an end each, at random within `duration_ms`) and torn down with
/// `teardown` (a killed build: cancelled while pending or running, its teardown seconds
/// after; a stuck one: never); a config error ends at creation.
pub fn acts(
    outcome: Outcome,
    t: u64,
    (pending_ms, duration_ms): (u64, u64),
    teardown: &'static str,
    rng: &mut Rng,
) -> Vec<(u64, Act)> {
    let mut acts = vec![(t, Act::Create)];
    let setup = t + pending_ms;
    match outcome {
        Outcome::ConfigError => {}
        Outcome::Declined => acts.push((setup, Act::Decline)),
        Outcome::Skipped => acts.push((setup, Act::Skip)),
        Outcome::NoRun => acts.push((setup, Act::Teardown(teardown))),
        Outcome::Success | Outcome::Failure | Outcome::Error | Outcome::Killed | Outcome::Stuck => {
            acts.push((setup, Act::Setup));
            let steps = rng.range(2, 7);
            let mut bounds: Vec<u64> = (0..steps * 2)
                .map(|_| setup + 200 + rng.range(0, duration_ms))
                .collect();
            bounds.sort_unstable();
            acts.extend(bounds.into_iter().map(|b| (b, Act::Step)));
            let end = setup + duration_ms + rng.range(200, 2_000);
            if outcome == Outcome::Killed {
                // The runner stops on the cancel: its teardown comes seconds after it.
                let cancel_at = t + rng.range(100, pending_ms + duration_ms);
                acts.push((cancel_at, Act::Cancel));
                let down = cancel_at.max(setup) + rng.range(500, 30_000);
                acts.push((down, Act::Teardown(teardown)));
            } else if outcome != Outcome::Stuck {
                acts.push((end, Act::Teardown(teardown)));
            }
        }
    }
    acts
}

/// One build: where it is, how it ends, drone's row and its writes, its webhooks.
#[derive(Clone, Debug)]
pub struct Build {
    pub repo: u64,
    pub number: u64,
    pub outcome: Outcome,
    pub row: Row,
    pub created_ms: u64,
    /// (version, status, when) of every write drone made to the row.
    pub writes: Vec<(u64, &'static str, u64)>,
    /// Webhooks drone sent for it, and how many reached the filter (the harness counts).
    pub sent: u32,
    pub arrived: u32,
}

impl Build {
    /// (repository, number).
    pub fn key(&self) -> (u64, u64) {
        (self.repo, self.number)
    }

    /// When drone last wrote the row (its final transition, once done).
    pub fn last_write_ms(&self) -> u64 {
        self.writes.last().map_or(self.created_ms, |w| w.2)
    }

    /// When drone first wrote a done status.
    pub fn done_ms(&self) -> Option<u64> {
        self.writes
            .iter()
            .find(|w| crate::lifecycle::is_done(w.1))
            .map(|w| w.2)
    }
}

/// Drone's builds, the store their rows go to, and the acts due.
#[derive(Debug, Default)]
pub struct Builds {
    pub store: Store,
    pub builds: Vec<Build>,
    pub due: Timeline<(usize, Act)>,
    numbers: BTreeMap<u64, u64>,
}

impl Builds {
    pub fn new(store: Store) -> Builds {
        Builds {
            store,
            ..Builds::default()
        }
    }

    /// A build of `repo` created at `at` that ends as `outcome`, numbered after the
    /// repository's last; drone writes it at its [`Act::Create`]. Its index.
    pub fn add(&mut self, repo: u64, outcome: Outcome, at: u64) -> usize {
        let n = self.numbers.entry(repo).or_insert(0);
        *n += 1;
        self.builds.push(Build {
            repo,
            number: *n,
            outcome,
            row: Row::new(),
            created_ms: at,
            writes: Vec::new(),
            sent: 0,
            arrived: 0,
        });
        self.builds.len() - 1
    }

    /// [`Builds::add`] with its acts scheduled on [`Builds::due`].
    pub fn plan(&mut self, repo: u64, outcome: Outcome, acts: Vec<(u64, Act)>) -> usize {
        let at = acts.first().map_or(0, |a| a.0);
        let b = self.add(repo, outcome, at);
        for (t, act) in acts {
            self.due.at(t, (b, act));
        }
        b
    }

    /// The last number given in `repo`.
    pub fn last_number(&self, repo: u64) -> u64 {
        self.numbers.get(&repo).copied().unwrap_or(0)
    }

    /// Drone does `act` to build `b` at `at` (`chance` draws its races): a row whose version
    /// moved is written to the store, which answers it from now on. The webhook it sends.
    pub fn act(
        &mut self,
        b: usize,
        act: Act,
        at: u64,
        chance: &mut dyn FnMut(f64) -> bool,
    ) -> Option<Hook> {
        let build = self.builds.get_mut(b)?;
        let version = build.row.version;
        let hook = build
            .row
            .act(act, build.outcome == Outcome::ConfigError, chance);
        let row = &build.row;
        if row.version != version {
            build.writes.push((row.version, row.status, at));
            self.store
                .write(build.repo, build.number, row.status, row.version);
        } else if act == Act::Reserve {
            self.store.taken(build.repo, build.number);
        }
        if hook.is_some() {
            build.sent += 1;
        }
        hook
    }

    /// Runs the earliest act due before `until`: (build, when, the webhook it sends).
    pub fn run_next(&mut self, until: u64, rng: &mut Rng) -> Option<(usize, u64, Option<Hook>)> {
        let (at, (b, act)) = self.due.next_before(until)?;
        Some((b, at, self.act(b, act, at, &mut |p| rng.chance(p))))
    }
}

/// The builds a sidecar looks up by number (`max_gap_fill`, docs/configuration.md) after the
/// webhooks `arrivals` (time, repository, number) reached it: each reconciler keeps, per
/// repository, the highest number it saw in a webhook; one for build n above m + 1 makes it
/// look up builds max(m + 1, n - max_gap_fill)..n. A new reconciler (one starts at each of
/// `epochs`: a VM crash, a config change) starts without those numbers, and its first webhook
/// of a repository only sets it.
pub fn gap_filled(
    arrivals: &[(u64, u64, u64)],
    epochs: &[u64],
    max_gap_fill: u64,
) -> BTreeSet<(u64, u64)> {
    let mut filled = BTreeSet::new();
    for (i, start) in epochs.iter().enumerate() {
        let end = epochs.get(i + 1).copied().unwrap_or(u64::MAX);
        let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
        for (_, repo, n) in arrivals.iter().filter(|(t, _, _)| *t >= *start && *t < end) {
            let m = seen.get(repo).copied().unwrap_or(0);
            seen.insert(*repo, m.max(*n));
            if m == 0 || *n <= m + 1 {
                continue;
            }
            filled.extend(((m + 1).max(n.saturating_sub(max_gap_fill))..*n).map(|k| (*repo, k)));
        }
    }
    filled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_ends_in_its_status_and_the_store_answers_the_last_write() {
        let mut rng = Rng::new(7);
        let mut d = Builds::new(Store::new());
        for (i, o) in Outcome::ALL.into_iter().enumerate() {
            let acts = acts(
                o,
                1_000 * i as u64,
                (500, 60_000),
                o.final_status(),
                &mut rng,
            );
            d.plan(1, o, acts);
        }
        while d.run_next(u64::MAX, &mut rng).is_some() {}
        for b in &d.builds {
            assert_eq!(b.row.status, b.outcome.final_status(), "{:?}", b.outcome);
            assert_eq!(
                d.store.row(1, b.number),
                Some((b.row.status, b.row.version))
            );
            assert_eq!(b.done_ms().is_some(), b.outcome != Outcome::Stuck);
        }
        assert_eq!(d.last_number(1), Outcome::ALL.len() as u64);
        let declined = d.builds.iter().find(|b| b.outcome == Outcome::Declined);
        assert_eq!(declined.map(|b| b.sent), Some(1), "declines send nothing");
    }

    #[test]
    fn gap_filling_looks_up_at_most_max_gap_fill_below_a_jump_within_one_reconciler() {
        let arrivals = [
            (0, 1, 1),
            (1, 1, 30),
            (2, 2, 5),
            (10, 2, 9),
            (11, 1, 33),
            (12, 1, 36),
        ];
        let filled = gap_filled(&arrivals, &[0, 10], 20);
        let want: BTreeSet<(u64, u64)> =
            (10..30).map(|n| (1, n)).chain([(1, 34), (1, 35)]).collect();
        assert_eq!(
            filled, want,
            "repo 2's jump spans two reconcilers: nothing looked up"
        );
    }

    #[test]
    fn the_timeline_keeps_time_then_scheduling_order() {
        let mut t = Timeline::default();
        t.at(5, 'b');
        t.at(3, 'a');
        t.at(5, 'c');
        assert_eq!(t.next_before(4), Some((3, 'a')));
        assert_eq!(t.next_before(5), None);
        assert_eq!(t.next_before(6), Some((5, 'b')));
        assert_eq!(t.next_before(6), Some((5, 'c')));
        assert!(t.is_empty());
    }
}
