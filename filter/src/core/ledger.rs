//! The ledger: every build the reconciler is responsible for, what the pipeline has of it, and
//! when to look at it next.
//!
//! Bounded four ways: at most `cap` builds, of which builds nothing but an unverified webhook
//! ([`Class::Hint`]) or an inference ([`Class::Inferred`]: gap filling, scans) vouches for get a
//! quarter each and can never evict a build backed by evidence (a verified webhook or drone's
//! answer); a due index per lane so a tick touches only builds that are due (cost
//! proportional to due builds, not tracked ones); and a bounded set of tombstones for builds
//! that finished, so late step webhooks carrying older versions cannot bring them back.

use super::fifo_map::FifoMap;
use super::limits::check_version;
use super::model::{BuildKey, BuildStatus};
use super::proof::Proof;
use super::wire::{put_u32, put_u64, put_u8, Reader};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// `next_due_ms` value of a build that is not scheduled (a call for it is in flight).
pub const NOT_SCHEDULED: u64 = u64::MAX;

/// What vouches for a tracked build. Decides its share of the ledger and its lane of lookups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A verified (signed) webhook, or drone's own answer for this build: the build exists.
    Backed,
    /// Only unverified webhooks: anyone who can reach the pipeline could have sent them.
    Hint,
    /// Only an inference from numbers (gap filling, a scan, discovery): drone may not have it.
    Inferred,
}

impl Class {
    pub fn code(self) -> u8 {
        match self {
            Self::Backed => 0,
            Self::Hint => 1,
            Self::Inferred => 2,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Self::Backed),
            1 => Some(Self::Hint),
            2 => Some(Self::Inferred),
            _ => None,
        }
    }

    fn index(self) -> usize {
        usize::from(self.code())
    }

    /// Lane of the due index: lookups only unverified webhooks asked for go through their own
    /// lane and rate, so a flood of them cannot take the lookups of other builds' turn.
    /// Inferred builds come from evidence or drone's answers, so they share the main lane.
    pub fn lane(self) -> Lane {
        match self {
            Self::Backed | Self::Inferred => Lane::Main,
            Self::Hint => Lane::Hint,
        }
    }
}

/// The two due indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Main,
    Hint,
}

impl Lane {
    fn index(self) -> usize {
        match self {
            Self::Main => 0,
            Self::Hint => 1,
        }
    }
}

/// What the reconciler knows of one build. Kept small: under 64 bytes, index overhead aside.
///
/// Its delivery state (the settled version and status) is private to this module: a new
/// entry has none, and only [`Ledger::settle`], which takes a [`Proof`], moves it (or a
/// tombstone written with one, [`Ledger::resumed`], or the leader's own checkpoint,
/// [`Entry::read`]). No other code can write it, not even through [`Ledger::update`]:
///
/// ```compile_fail,E0616
/// use status_sync::core::ledger::Ledger;
/// use status_sync::core::model::{BuildKey, BuildStatus};
///
/// fn settle_without_proof(ledger: &mut Ledger, key: &BuildKey) {
///     ledger.update(key, |e| {
///         // error[E0616]: field `settled_version` of struct `Entry` is private
///         e.settled_version = 5;
///         e.settled_status = BuildStatus::Success;
///     });
/// }
/// ```
///
/// nor make an entry that starts settled:
///
/// ```compile_fail,E0451
/// use status_sync::core::ledger::{Class, Entry};
/// use status_sync::core::model::BuildStatus;
///
/// fn born_settled(now_ms: u64) -> Entry {
///     // error[E0451]: field `settled_version` of struct `Entry` is private
///     Entry {
///         settled_version: 5,
///         settled_status: BuildStatus::Success,
///         ..Entry::new(now_ms, Class::Backed)
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Newest version the pipeline has (answered 2xx) or refused (4xx), as evidence or drone
    /// confirmed it; 0 = none yet (drone versions start at 1).
    settled_version: u64,
    settled_status: BuildStatus,
    /// What the latest unverified webhook claims the pipeline took (answered 2xx; a refused
    /// one is no claim), kept apart until drone's answer confirms it (same version and
    /// status); 0 = no claim. A claim is not delivery state: a hint may write it, and only
    /// drone's answer, through [`Ledger::settle`], makes it settled.
    pub claimed_version: u64,
    pub claimed_status: BuildStatus,
    pub class: Class,
    /// A drone answer older than the claim was set aside once (the claim may have raced the
    /// call); the next answer decides.
    pub deferred: bool,
    /// Consecutive failed calls for this build (drone or pipeline), or drone's 404s for an
    /// inferred build.
    pub failures: u8,
    /// Current interval between looks while drone reports no change.
    pub interval_ms: u32,
    pub first_seen_ms: u64,
    /// Last time a webhook or drone told us something new about this build.
    pub last_change_ms: u64,
    pub next_due_ms: u64,
}

impl Entry {
    /// A build nothing has been delivered of yet.
    pub fn new(now_ms: u64, class: Class) -> Self {
        Entry {
            settled_version: 0,
            settled_status: BuildStatus::Unknown,
            claimed_version: 0,
            claimed_status: BuildStatus::Unknown,
            class,
            deferred: false,
            failures: 0,
            interval_ms: 0,
            first_seen_ms: now_ms,
            last_change_ms: now_ms,
            next_due_ms: NOT_SCHEDULED,
        }
    }

    /// Newest version the pipeline has or refused, as a [`Proof`] showed; 0 = none yet.
    pub fn settled_version(&self) -> u64 {
        self.settled_version
    }

    /// The status of [`Entry::settled_version`].
    pub fn settled_status(&self) -> BuildStatus {
        self.settled_status
    }

    pub fn settled_is_terminal(&self) -> bool {
        self.settled_version > 0 && self.settled_status.is_done()
    }

    /// Writes the entry as a snapshot record carries it (`SSL2`, see `core::snapshot`).
    pub fn write(&self, out: &mut Vec<u8>) {
        put_u64(out, self.settled_version);
        put_u8(out, self.settled_status.code());
        put_u8(out, self.failures);
        put_u32(out, self.interval_ms);
        put_u64(out, self.first_seen_ms);
        put_u64(out, self.last_change_ms);
        put_u64(out, self.next_due_ms);
        put_u64(out, self.claimed_version);
        put_u8(out, self.claimed_status.code());
        put_u8(out, self.class.code());
        put_u8(out, u8::from(self.deferred));
    }

    /// Reads an entry as [`Entry::write`] wrote it (`v2`), or as an `SSL1` record did: the
    /// leader's own checkpoint, the one source of a settled state besides a [`Proof`]. An
    /// `SSL1` record's settled state comes back as a hint's claim (the filter that wrote it
    /// settled builds on unverified webhooks). `None` for a value outside the input limits.
    pub fn read(r: &mut Reader<'_>, v2: bool) -> Option<Entry> {
        let settled_version = check_version(r.u64()?, "build.version").ok()?;
        let settled_status = BuildStatus::from_code(r.u8()?);
        let mut entry = Entry {
            settled_version,
            settled_status,
            failures: r.u8()?,
            interval_ms: r.u32()?,
            first_seen_ms: r.u64()?,
            last_change_ms: r.u64()?,
            next_due_ms: r.u64()?,
            ..Entry::new(0, Class::Hint)
        };
        if v2 {
            entry.claimed_version = check_version(r.u64()?, "build.version").ok()?;
            entry.claimed_status = BuildStatus::from_code(r.u8()?);
            entry.class = Class::from_code(r.u8()?)?;
            entry.deferred = match r.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            };
        } else {
            entry.claimed_version = entry.settled_version;
            entry.claimed_status = entry.settled_status;
            entry.settled_version = 0;
            entry.settled_status = BuildStatus::Unknown;
        }
        Some(entry)
    }

    /// The entry with a settled state, for the crate's unit tests (the integration tests
    /// settle through [`Ledger::settle`] with drone's answer, as the reconciler does).
    #[cfg(test)]
    pub(crate) fn settled_for_tests(mut self, version: u64, status: BuildStatus) -> Self {
        self.settled_version = version;
        self.settled_status = status;
        self
    }
}

/// Builds per snapshot shard: small enough that rewriting a dirty shard each tick is cheap.
pub const SHARD_SIZE: usize = 64;

/// Shard of a build: a fixed hash (not `RandomState`: every VM must agree).
pub fn shard_of(key: &BuildKey, shards: u32) -> u32 {
    let mut z = key
        .repo_id
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(key.number);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % u64::from(shards.max(1))) as u32
}

/// Words of the dirty-shard bitset for `shards` shards.
fn dirty_words(shards: u32) -> usize {
    (shards as usize).div_ceil(64)
}

/// Number of snapshot shards for a ledger of `cap` builds.
pub fn shard_count(cap: usize) -> u32 {
    u32::try_from(cap.div_ceil(SHARD_SIZE).max(1)).unwrap_or(u32::MAX)
}

#[derive(Debug)]
pub struct Ledger {
    /// Keyed by (shard, build) so one shard's builds are a contiguous range for snapshots.
    entries: BTreeMap<(u32, BuildKey), Entry>,
    shards: u32,
    /// Shards changed since the last [`Ledger::take_dirty`]: one bit per shard (a bitset, not
    /// a `BTreeSet`: one B-tree instantiation less in the module, BENCHMARKS.md 7).
    dirty: Vec<u64>,
    /// Due index per [`Lane`].
    due: [BTreeSet<(u64, BuildKey)>; 2],
    /// Insertion order per [`Class`], for evicting the oldest. Lazily cleaned: keys no longer
    /// tracked (or of another class by now) are skipped, and a deque is compacted when it
    /// grows past twice its class.
    age: [VecDeque<BuildKey>; 3],
    /// Builds per [`Class`].
    counts: [usize; 3],
    /// Builds finished and delivered, with the version they finished at: late step webhooks
    /// with older versions must not resurrect them. Oldest forgotten first.
    tombstones: FifoMap<BuildKey, u64>,
    cap: usize,
    /// Most builds of class [`Class::Hint`] and [`Class::Inferred`] each.
    share: usize,
}

impl Ledger {
    pub fn new(cap: usize, tombstone_cap: usize) -> Self {
        let cap = cap.max(1);
        Ledger {
            entries: BTreeMap::new(),
            shards: shard_count(cap),
            dirty: vec![0; dirty_words(shard_count(cap))],
            due: Default::default(),
            age: Default::default(),
            counts: [0; 3],
            tombstones: FifoMap::new(tombstone_cap),
            cap,
            share: (cap / 4).max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Most builds of one unconfirmed class ([`Class::Hint`], [`Class::Inferred`]).
    pub fn share(&self) -> usize {
        self.share
    }

    /// Builds of one class.
    pub fn count(&self, class: Class) -> usize {
        self.counts.get(class.index()).copied().unwrap_or(0)
    }

    fn slot(&self, key: &BuildKey) -> (u32, BuildKey) {
        (shard_of(key, self.shards), *key)
    }

    fn touch(&mut self, key: &BuildKey) {
        self.mark_dirty(shard_of(key, self.shards));
    }

    pub fn get(&self, key: &BuildKey) -> Option<&Entry> {
        self.entries.get(&self.slot(key))
    }

    pub fn contains(&self, key: &BuildKey) -> bool {
        self.entries.contains_key(&self.slot(key))
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The builds of one shard, for its snapshot.
    pub fn shard_entries(&self, shard: u32) -> impl Iterator<Item = (&BuildKey, &Entry)> {
        let lo = (
            shard,
            BuildKey {
                repo_id: 0,
                number: 0,
            },
        );
        let hi = (shard, max_key());
        self.entries.range(lo..=hi).map(|((_, k), e)| (k, e))
    }

    /// Shards changed since the last call.
    /// Shards changed since the last call, in ascending order.
    pub fn take_dirty(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        for (base, word) in (0u32..).step_by(64).zip(self.dirty.iter_mut()) {
            let mut bits = std::mem::take(word);
            while bits != 0 {
                out.push(base + bits.trailing_zeros());
                bits &= bits - 1;
            }
        }
        out
    }

    /// Marks every shard dirty (after loading a snapshot written with another shard count).
    pub fn mark_all_dirty(&mut self) {
        for shard in 0..self.shards {
            self.mark_dirty(shard);
        }
    }

    fn mark_dirty(&mut self, shard: u32) {
        if let Some(word) = self.dirty.get_mut((shard / 64) as usize) {
            *word |= 1 << (shard % 64);
        }
    }

    /// Version a finished build finished at, if it finished recently.
    pub fn tombstone(&self, key: &BuildKey) -> Option<u64> {
        self.tombstones.get(key).copied()
    }

    /// Whether any build is due at `now_ms` (cheap: one look per lane).
    pub fn any_due(&self, now_ms: u64) -> bool {
        self.due
            .iter()
            .any(|d| d.range(..=(now_ms, max_key())).next().is_some())
    }

    /// Number of builds due at `now_ms` in both lanes (for tests and metrics; O(due)).
    pub fn due_count(&self, now_ms: u64) -> usize {
        self.due
            .iter()
            .map(|d| d.range(..=(now_ms, max_key())).count())
            .sum()
    }

    fn due_set(&mut self, class: Class) -> Option<&mut BTreeSet<(u64, BuildKey)>> {
        self.due.get_mut(class.lane().index())
    }

    fn bump(&mut self, class: Class, up: bool) {
        if let Some(c) = self.counts.get_mut(class.index()) {
            *c = if up { *c + 1 } else { c.saturating_sub(1) };
        }
    }

    /// Inserts a new build. When its class is over its share, the oldest build of that class
    /// goes; when the ledger is full, the oldest unconfirmed build goes (a backed build may
    /// also evict the oldest backed one). An unconfirmed build never evicts a backed one: it is
    /// refused instead. Returns the build given up (the evicted one, or `key` itself when
    /// refused), if any. An existing entry is left as it is.
    pub fn insert(&mut self, key: BuildKey, entry: Entry) -> Option<BuildKey> {
        if self.contains(&key) {
            return None;
        }
        let mut evicted = None;
        let class = entry.class;
        if class != Class::Backed && self.count(class) >= self.share {
            evicted = self.evict_oldest(class);
        } else if self.entries.len() >= self.cap {
            evicted = self
                .evict_oldest(Class::Hint)
                .or_else(|| self.evict_oldest(Class::Inferred));
            if evicted.is_none() {
                if class != Class::Backed {
                    return Some(key);
                }
                evicted = self.evict_oldest(Class::Backed);
            }
        }
        self.tombstones.remove(&key);
        if entry.next_due_ms != NOT_SCHEDULED {
            if let Some(due) = self.due_set(class) {
                due.insert((entry.next_due_ms, key));
            }
        }
        let slot = self.slot(&key);
        self.entries.insert(slot, entry);
        self.bump(class, true);
        self.touch(&key);
        self.push_age(key, class);
        evicted
    }

    fn push_age(&mut self, key: BuildKey, class: Class) {
        let count = self.count(class);
        let shards = self.shards;
        let entries = &self.entries;
        if let Some(age) = self.age.get_mut(class.index()) {
            age.push_back(key);
            if age.len() > 2 * count + 64 {
                age.retain(|k| {
                    entries
                        .get(&(shard_of(k, shards), *k))
                        .is_some_and(|e| e.class == class)
                });
            }
        }
    }

    fn evict_oldest(&mut self, class: Class) -> Option<BuildKey> {
        loop {
            let key = self.age.get_mut(class.index())?.pop_front()?;
            if self.get(&key).is_some_and(|e| e.class == class) {
                self.remove(&key);
                return Some(key);
            }
        }
    }

    /// The pipeline has `version` of a build in `status`: the settled state moves up to it
    /// (never down). Takes a [`Proof`]: nothing a hint brought settles a build (the
    /// reconciler settles only through here). True when it moved.
    #[inline(never)] // one copy in the module, not one per call site (BENCHMARKS.md, 7)
    pub fn settle(
        &mut self,
        key: &BuildKey,
        version: u64,
        status: BuildStatus,
        _by: &Proof,
    ) -> bool {
        let mut moved = false;
        self.update(key, |e| {
            if version > e.settled_version {
                e.settled_version = version;
                e.settled_status = status;
                moved = true;
            }
        });
        moved
    }

    /// `entry` for build `key` tracked again after it finished: settled at the version it
    /// finished at (its tombstone, written with a proof), so only what drone wrote since is
    /// re-delivered. Unchanged for a build that never finished.
    pub fn resumed(&self, key: &BuildKey, mut entry: Entry) -> Entry {
        if let Some(finished_at) = self.tombstone(key) {
            entry.settled_version = finished_at;
        }
        entry
    }

    /// Changes an entry in place; the due index and the class counts follow.
    pub fn update(&mut self, key: &BuildKey, f: impl FnOnce(&mut Entry)) -> bool {
        let slot = self.slot(key);
        let Some(entry) = self.entries.get_mut(&slot) else {
            return false;
        };
        let before = *entry;
        f(entry);
        let after = *entry;
        if before.next_due_ms != after.next_due_ms || before.class.lane() != after.class.lane() {
            if before.next_due_ms != NOT_SCHEDULED {
                if let Some(due) = self.due_set(before.class) {
                    due.remove(&(before.next_due_ms, *key));
                }
            }
            if after.next_due_ms != NOT_SCHEDULED {
                if let Some(due) = self.due_set(after.class) {
                    due.insert((after.next_due_ms, *key));
                }
            }
        }
        if before.class != after.class {
            self.bump(before.class, false);
            self.bump(after.class, true);
            self.push_age(*key, after.class);
        }
        self.touch(key);
        true
    }

    /// Takes the earliest build of `lane` due at `now_ms` out of the schedule (its
    /// `next_due_ms` becomes [`NOT_SCHEDULED`] until the caller reschedules it).
    pub fn pop_due(&mut self, now_ms: u64, lane: Lane) -> Option<(BuildKey, Entry)> {
        let due = self.due.get_mut(lane.index())?;
        let first = *due.first()?;
        if first.0 > now_ms {
            return None;
        }
        due.remove(&first);
        let slot = self.slot(&first.1);
        let entry = self.entries.get_mut(&slot)?;
        entry.next_due_ms = NOT_SCHEDULED;
        let copy = *entry;
        self.touch(&first.1);
        Some((first.1, copy))
    }

    /// The build [`Ledger::pop_due`] would take, left in place: the caller decides what it
    /// needs (a drone call or not) before it pays for anything.
    pub fn peek_due(&self, now_ms: u64, lane: Lane) -> Option<(BuildKey, Entry)> {
        let (t, key) = *self.due.get(lane.index())?.first()?;
        if t > now_ms {
            return None;
        }
        Some((key, *self.get(&key)?))
    }

    /// Earliest scheduled time of a lane, if any.
    pub fn next_due(&self, lane: Lane) -> Option<u64> {
        self.due.get(lane.index())?.first().map(|(t, _)| *t)
    }

    /// Stops tracking a build.
    pub fn remove(&mut self, key: &BuildKey) -> Option<Entry> {
        let slot = self.slot(key);
        let entry = self.entries.remove(&slot)?;
        self.touch(key);
        self.bump(entry.class, false);
        if entry.next_due_ms != NOT_SCHEDULED {
            if let Some(due) = self.due_set(entry.class) {
                due.remove(&(entry.next_due_ms, *key));
            }
        }
        Some(entry)
    }

    /// Stops tracking a build that finished and was delivered, remembering the version so a
    /// late webhook with an older version does not resurrect it. Takes a [`Proof`]: nothing a
    /// hint brought can finish a build.
    pub fn finish(&mut self, key: &BuildKey, version: u64, _by: &Proof) {
        self.remove(key);
        self.tombstones.insert(*key, version);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&BuildKey, &Entry)> {
        self.entries.iter().map(|((_, k), e)| (k, e))
    }

    /// Drops everything (a leader that lost the lease forgets its copy; the next one loads the
    /// snapshot).
    pub fn clear(&mut self) {
        self.entries = BTreeMap::new();
        self.dirty.fill(0);
        self.due = Default::default();
        self.age = Default::default();
        self.counts = [0; 3];
        self.tombstones.clear();
    }
}

fn max_key() -> BuildKey {
    BuildKey {
        repo_id: u64::MAX,
        number: u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> BuildKey {
        BuildKey {
            repo_id: 1,
            number: n,
        }
    }

    fn scheduled(now: u64, due: u64) -> Entry {
        Entry {
            next_due_ms: due,
            ..Entry::new(now, Class::Backed)
        }
    }

    #[test]
    fn pops_only_due_builds_in_order() {
        let mut l = Ledger::new(10, 10);
        l.insert(key(1), scheduled(0, 300));
        l.insert(key(2), scheduled(0, 100));
        l.insert(key(3), scheduled(0, 200));
        assert_eq!(l.due_count(150), 1);
        assert!(l.pop_due(50, Lane::Main).is_none());
        assert_eq!(l.pop_due(250, Lane::Main).unwrap().0, key(2));
        assert_eq!(l.pop_due(250, Lane::Main).unwrap().0, key(3));
        assert!(l.pop_due(250, Lane::Main).is_none());
        assert_eq!(l.get(&key(2)).unwrap().next_due_ms, NOT_SCHEDULED);
        assert_eq!(l.next_due(Lane::Main), Some(300));
    }

    /// `peek_due` shows the build `pop_due` would take, from its due time exactly, and leaves
    /// it scheduled: the reconciler decides whether a build needs a drone call before it pays
    /// for one (cargo-mutants: `peek_due`'s bound). `any_due` sees the same bound.
    #[test]
    fn a_peek_shows_the_build_due_first_from_its_time_on_and_leaves_it_scheduled() {
        let mut l = Ledger::new(10, 10);
        l.insert(key(1), scheduled(0, 300));
        l.insert(key(2), scheduled(0, 100));
        assert!(l.peek_due(99, Lane::Main).is_none());
        // `due_count` (`due=` in the leader's summary line) counts every build due by then.
        assert_eq!(l.due_count(99), 0);
        assert_eq!(l.due_count(300), 2);
        // `any_due` is what the cluster leader asks before reading the other replicas'
        // records ahead of its lookups (cargo-mutants: `any_due` → false went unseen).
        assert!(!l.any_due(99));
        assert!(l.any_due(100));
        let (k, e) = l.peek_due(100, Lane::Main).unwrap();
        assert_eq!((k, e.next_due_ms), (key(2), 100));
        assert!(l.peek_due(100, Lane::Hint).is_none());
        assert_eq!(l.due_count(100), 1, "left in place");
        assert_eq!(l.pop_due(100, Lane::Main).unwrap().0, key(2));
        assert_eq!(l.peek_due(1_000, Lane::Main).unwrap().0, key(1));
    }

    /// A build is tracked from its insert until its removal: what gap filling and the SLO
    /// ask before they count a build as missing or lost (cargo-mutants: `contains` → false
    /// went unseen by the ledger's own tests).
    #[test]
    fn a_build_is_contained_from_its_insert_until_its_removal() {
        let mut l = Ledger::new(10, 10);
        assert!(!l.contains(&key(1)));
        l.insert(key(1), scheduled(1, 100));
        assert!(l.contains(&key(1)));
        assert!(!l.contains(&key(2)));
        l.remove(&key(1));
        assert!(!l.contains(&key(1)));
    }

    #[test]
    fn update_moves_the_due_index() {
        let mut l = Ledger::new(10, 10);
        l.insert(key(1), scheduled(0, 100));
        l.update(&key(1), |e| e.next_due_ms = 500);
        assert!(l.pop_due(400, Lane::Main).is_none());
        assert_eq!(l.pop_due(500, Lane::Main).unwrap().0, key(1));
        l.update(&key(1), |e| e.next_due_ms = 600);
        assert_eq!(l.next_due(Lane::Main), Some(600));
        l.remove(&key(1));
        assert_eq!(l.next_due(Lane::Main), None);
    }

    #[test]
    fn full_ledger_evicts_the_oldest() {
        let mut l = Ledger::new(3, 10);
        for n in 1..=3 {
            assert_eq!(l.insert(key(n), scheduled(n, 100 + n)), None);
        }
        l.remove(&key(1));
        assert_eq!(
            l.insert(key(4), scheduled(4, 104)),
            None,
            "room after removal"
        );
        assert_eq!(l.insert(key(5), scheduled(5, 105)), Some(key(2)));
        assert_eq!(l.len(), 3);
        assert!(l.get(&key(2)).is_none());
        // The due index no longer holds the evicted build.
        let mut popped = vec![];
        while let Some((k, _)) = l.pop_due(1000, Lane::Main) {
            popped.push(k.number);
        }
        assert_eq!(popped, vec![3, 4, 5]);
    }

    #[test]
    fn tombstones_are_bounded_and_cleared_on_reinsert() {
        let mut l = Ledger::new(10, 2);
        for n in 1..=3 {
            l.insert(key(n), Entry::new(0, Class::Backed));
            l.finish(&key(n), 7, &Proof::for_tests());
        }
        assert_eq!(l.tombstone(&key(1)), None, "oldest tombstone dropped");
        assert_eq!(l.tombstone(&key(3)), Some(7));
        assert!(l.is_empty());
        l.insert(key(3), Entry::new(0, Class::Backed));
        assert_eq!(l.tombstone(&key(3)), None);
    }

    #[test]
    fn age_queue_stays_bounded_under_churn() {
        let mut l = Ledger::new(100, 10);
        l.insert(key(0), Entry::new(0, Class::Backed)); // a long-lived build at the front
        for n in 1..100_000 {
            l.insert(key(n), Entry::new(n, Class::Backed));
            l.finish(&key(n), 3, &Proof::for_tests());
        }
        assert!(l.age[0].len() <= 2 * l.len() + 65, "{}", l.age[0].len());
        assert_eq!(l.len(), 1);
    }

    /// Builds that stay in the ledger.
    fn live(l: &mut Ledger, numbers: std::ops::Range<u64>) {
        for n in numbers {
            l.insert(key(n), Entry::new(0, Class::Backed));
        }
    }

    /// Builds that come and finish at once: each leaves a key behind in the age queue, which
    /// stays within twice the builds plus 64 after every one (its memory bound).
    fn churn(l: &mut Ledger, numbers: std::ops::Range<u64>) {
        for n in numbers {
            l.insert(key(n), Entry::new(n, Class::Backed));
            assert!(
                l.age[0].len() <= 2 * l.len() + 64,
                "{n}: {}",
                l.age[0].len()
            );
            l.finish(&key(n), 3, &Proof::for_tests());
        }
    }

    /// The compaction bound falls when builds leave, so the age queue can pass it without ever
    /// being equal to it: the check must be "above", or the queue grows without bound.
    #[test]
    fn age_queue_compacts_after_the_bound_falls_past_it() {
        let mut l = Ledger::new(1000, 10);
        live(&mut l, 0..500);
        for n in 0..500 {
            l.finish(&key(n), 3, &Proof::for_tests());
        }
        churn(&mut l, 500..20_000);
        assert!(l.age[0].len() <= 2 * l.len() + 65, "{}", l.age[0].len());
    }

    /// Compaction keeps the live builds of the queue's class in their order, so eviction still
    /// takes the oldest one afterwards.
    #[test]
    fn compaction_keeps_the_live_builds_in_age_order() {
        let mut l = Ledger::new(100, 10);
        live(&mut l, 0..10);
        churn(&mut l, 10..200);
        for n in 200..290 {
            assert_eq!(l.insert(key(n), Entry::new(0, Class::Backed)), None);
        }
        assert_eq!(
            l.insert(key(290), Entry::new(0, Class::Backed)),
            Some(key(0))
        );
        assert_eq!(
            l.insert(key(291), Entry::new(0, Class::Backed)),
            Some(key(1))
        );
    }

    #[test]
    fn shards_partition_the_builds_and_track_changes() {
        let mut l = Ledger::new(1000, 10);
        assert_eq!(l.shards(), 16);
        for n in 0..500 {
            l.insert(key(n), Entry::new(0, Class::Backed));
        }
        let total: usize = (0..l.shards()).map(|s| l.shard_entries(s).count()).sum();
        assert_eq!(total, 500);
        assert!(
            (0..l.shards()).all(|s| l.shard_entries(s).count() > 10),
            "spread"
        );
        assert_eq!(l.take_dirty().len(), 16);
        assert!(l.take_dirty().is_empty());
        l.update(&key(7), |e| e.failures = 1);
        assert_eq!(l.take_dirty(), vec![shard_of(&key(7), 16)]);
    }

    /// Past one word of the dirty bitset: every shard comes back once, in ascending order, and
    /// a change marks only its own shard.
    #[test]
    fn dirty_shards_come_back_in_order_once_beyond_64_shards() {
        let mut l = Ledger::new(SHARD_SIZE * 130, 10);
        assert_eq!(l.shards(), 130);
        l.mark_all_dirty();
        assert_eq!(l.take_dirty(), (0..130).collect::<Vec<u32>>());
        assert!(l.take_dirty().is_empty());
        let far = (0..).map(key).find(|k| shard_of(k, 130) >= 64).unwrap();
        l.insert(far, Entry::new(0, Class::Backed));
        assert_eq!(l.take_dirty(), vec![shard_of(&far, 130)]);
        l.clear();
        assert!(l.take_dirty().is_empty());
    }

    fn of(class: Class, due: u64) -> Entry {
        Entry {
            next_due_ms: due,
            ..Entry::new(0, class)
        }
    }

    #[test]
    fn unconfirmed_builds_never_evict_backed_ones() {
        let mut l = Ledger::new(8, 10);
        assert_eq!(l.share(), 2);
        for n in 1..=6 {
            assert_eq!(l.insert(key(n), of(Class::Backed, 100)), None);
        }
        // Hints beyond their share evict only hints.
        assert_eq!(l.insert(key(10), of(Class::Hint, 100)), None);
        assert_eq!(l.insert(key(11), of(Class::Hint, 100)), None);
        assert_eq!(l.insert(key(12), of(Class::Hint, 100)), Some(key(10)));
        assert_eq!(l.count(Class::Hint), 2);
        // Full (6 backed + 2 hints): an inferred build may evict a hint, never a backed one.
        assert_eq!(l.insert(key(20), of(Class::Inferred, 100)), Some(key(11)));
        assert_eq!(l.insert(key(21), of(Class::Inferred, 100)), Some(key(12)));
        assert_eq!(l.insert(key(22), of(Class::Inferred, 100)), Some(key(20)));
        // Full of backed builds and the inferred share: a hint is refused.
        for n in 30..40 {
            l.insert(key(n), of(Class::Backed, 100));
        }
        assert_eq!(l.count(Class::Backed), 8);
        assert_eq!(l.insert(key(50), of(Class::Hint, 100)), Some(key(50)));
        assert!(!l.contains(&key(50)));
        assert_eq!(l.len(), 8);
    }

    #[test]
    fn promotion_moves_lane_and_share() {
        let mut l = Ledger::new(8, 10);
        l.insert(key(1), of(Class::Hint, 100));
        assert_eq!(l.next_due(Lane::Hint), Some(100));
        assert_eq!(l.next_due(Lane::Main), None);
        l.update(&key(1), |e| e.class = Class::Backed);
        assert_eq!(l.next_due(Lane::Hint), None);
        assert_eq!(l.pop_due(100, Lane::Main).unwrap().0, key(1));
        assert_eq!((l.count(Class::Hint), l.count(Class::Backed)), (0, 1));
        l.remove(&key(1));
        assert_eq!(l.count(Class::Backed), 0);
    }
}
