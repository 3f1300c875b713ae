//! The ledger's snapshot in shared data, so a new leader (after a VM crash, a reload or a
//! config change) continues where the old one stopped.
//!
//! Keys are a fixed set per configuration (`ledger/meta` plus one per shard), never one per
//! build: shared-data keys cannot be deleted. Values are a compact binary encoding; decoding
//! is defensive (fuzzed), a corrupt shard is skipped and counted.

use super::ledger::{Entry, NOT_SCHEDULED};
use super::limits::{check_positive, check_slug_part, check_version};
use super::model::{BuildKey, RepoRef};
use super::wire::{put_str16, put_u32, put_u64, Magic, Reader};

/// `SSL2` added the claim (version, status), the class and a flags byte to each record.
/// `SSL1` shards are still read, but their builds come back as hints: the filter that wrote
/// them settled builds on unverified webhooks, so what they call settled is only a claim
/// until drone confirms it.
const MAGIC: Magic = Magic {
    current: *b"SSL2",
    previous: *b"SSL1",
};

/// One build as stored in a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub repo: RepoRef,
    pub number: u64,
    pub entry: Entry,
}

impl Record {
    pub fn key(&self) -> BuildKey {
        BuildKey {
            repo_id: self.repo.id,
            number: self.number,
        }
    }
}

pub fn meta_key(instance: &str) -> String {
    format!("status-sync/{instance}/ledger/meta")
}

pub fn shard_key(instance: &str, shard: u32) -> String {
    format!("status-sync/{instance}/ledger/{shard}")
}

pub fn lease_key(instance: &str) -> String {
    format!("status-sync/{instance}/lease")
}

pub fn watermarks_key(instance: &str) -> String {
    format!("status-sync/{instance}/repos")
}

/// `SSR3`: written from confirmed identities and from watermarks raised by evidence or drone
/// only. `SSR2` values (which unverified webhooks could raise) are not read.
const WATERMARKS_MAGIC: &[u8; 4] = b"SSR3";

/// Encodes repositories with their highest and lowest known build numbers.
pub fn encode_watermarks(marks: &[(RepoRef, u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + marks.len() * 48);
    out.extend_from_slice(WATERMARKS_MAGIC);
    put_u32(&mut out, u32::try_from(marks.len()).unwrap_or(u32::MAX));
    for (repo, max, min) in marks {
        put_u64(&mut out, repo.id);
        put_u64(&mut out, *max);
        put_u64(&mut out, *min);
        put_names(&mut out, repo);
    }
    out
}

pub fn decode_watermarks(bytes: &[u8]) -> Option<Vec<(RepoRef, u64, u64)>> {
    let mut r = Reader::new(bytes);
    if r.take(4)? != WATERMARKS_MAGIC {
        return None;
    }
    // At least 28 bytes per entry.
    let marks = r.list(28, |r| {
        let id = r.u64()?;
        let max = check_version(r.u64()?, "max").ok()?;
        let min = check_version(r.u64()?, "min").ok()?;
        Some((names(r, id)?, max, min))
    })?;
    r.is_empty().then_some(marks)
}

/// A repository's namespace and name, after its id, in a shard record or a watermark.
fn put_names(out: &mut Vec<u8>, repo: &RepoRef) {
    put_str16(out, &repo.namespace);
    put_str16(out, &repo.name);
}

/// A repository's id and names, within the input limits again (`core::limits`): shared data is
/// written by this module, but a decoder trusts no bytes it did not check.
fn names(r: &mut Reader<'_>, id: u64) -> Option<RepoRef> {
    let repo = RepoRef {
        id: check_positive(id, "repo.id").ok()?,
        namespace: r.str16()?,
        name: r.str16()?,
    };
    check_slug_part(&repo.namespace, "repo.namespace").ok()?;
    check_slug_part(&repo.name, "repo.name").ok()?;
    Some(repo)
}

pub fn queue_name(instance: &str) -> String {
    format!("status-sync/{instance}/observations")
}

pub fn encode_meta(shards: u32) -> Vec<u8> {
    format!("v1 {shards}").into_bytes()
}

pub fn decode_meta(bytes: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(bytes).ok()?;
    let n: u32 = s.strip_prefix("v1 ")?.parse().ok()?;
    (n > 0).then_some(n)
}

/// Encodes one shard.
pub fn encode_shard(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + records.len() * 80);
    out.extend_from_slice(&MAGIC.current);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        out.extend_from_slice(&r.repo.id.to_le_bytes());
        out.extend_from_slice(&r.number.to_le_bytes());
        r.entry.write(&mut out);
        put_names(&mut out, &r.repo);
    }
    out
}

/// Decodes one shard. `None` if the value is not a shard (empty, corrupt, other version).
pub fn decode_shard(bytes: &[u8]) -> Option<Vec<Record>> {
    let mut r = Reader::new(bytes);
    let v2 = r.magic(&MAGIC)?;
    // Each record takes at least 58 bytes (68 in SSL2).
    let records = r.list(if v2 { 68 } else { 58 }, |r| read_record(r, v2))?;
    r.is_empty().then_some(records)
}

fn read_record(r: &mut Reader<'_>, v2: bool) -> Option<Record> {
    let id = r.u64()?;
    let number = check_positive(r.u64()?, "build.number").ok()?;
    let entry = Entry::read(r, v2)?;
    Some(Record {
        repo: names(r, id)?,
        number,
        entry,
    })
}

/// A record whose call was in flight when the snapshot was taken is due again at once.
pub fn reschedule_in_flight(entry: &mut Entry, now_ms: u64) {
    if entry.next_due_ms == NOT_SCHEDULED {
        entry.next_due_ms = now_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ledger::Class;
    use crate::core::limits::MAX_INT;
    use crate::core::model::BuildStatus;

    fn rec(n: u64) -> Record {
        let mut entry =
            Entry::new(10, Class::Backed).settled_for_tests(n + 1, BuildStatus::Running);
        entry.claimed_version = n + 2;
        entry.claimed_status = BuildStatus::Success;
        entry.class = [Class::Backed, Class::Hint, Class::Inferred][(n % 3) as usize];
        entry.deferred = n % 2 == 1;
        entry.failures = 2;
        entry.interval_ms = 4000;
        entry.last_change_ms = 20;
        entry.next_due_ms = if n % 2 == 0 { 30 } else { NOT_SCHEDULED };
        Record {
            repo: RepoRef {
                id: 42,
                namespace: "octocat".into(),
                name: "hello-world".into(),
            },
            number: n,
            entry,
        }
    }

    #[test]
    fn shard_round_trip() {
        let records: Vec<_> = (1..=50).map(rec).collect();
        let bytes = encode_shard(&records);
        assert_eq!(decode_shard(&bytes).unwrap(), records);
        assert_eq!(decode_shard(&encode_shard(&[])).unwrap(), vec![]);
    }

    /// The decoders apply the input limits again (`core::limits`): a value outside them is not
    /// a snapshot, whoever wrote it.
    #[test]
    fn values_outside_the_input_limits_are_refused() {
        let bad_repos = [
            RepoRef {
                id: 0,
                ..rec(1).repo
            },
            RepoRef {
                id: MAX_INT + 1,
                ..rec(1).repo
            },
            RepoRef {
                namespace: String::new(),
                ..rec(1).repo
            },
            RepoRef {
                name: "..".into(),
                ..rec(1).repo
            },
            RepoRef {
                name: "a/b".into(),
                ..rec(1).repo
            },
            RepoRef {
                namespace: "x".repeat(251),
                ..rec(1).repo
            },
        ];
        for repo in bad_repos {
            let shard = encode_shard(&[Record {
                repo: repo.clone(),
                ..rec(1)
            }]);
            assert_eq!(decode_shard(&shard), None, "{repo:?}");
            assert_eq!(
                decode_watermarks(&encode_watermarks(&[(repo.clone(), 2, 1)])),
                None
            );
        }
        let mut big = rec(1);
        big.number = 0;
        assert_eq!(decode_shard(&encode_shard(&[big.clone()])), None);
        big.number = 1;
        big.entry = big
            .entry
            .settled_for_tests(MAX_INT + 1, BuildStatus::Running);
        assert_eq!(decode_shard(&encode_shard(&[big.clone()])), None);
        big.entry = big.entry.settled_for_tests(1, BuildStatus::Running);
        big.entry.claimed_version = MAX_INT + 1;
        assert_eq!(decode_shard(&encode_shard(&[big])), None);
        let repo = rec(1).repo;
        assert_eq!(
            decode_watermarks(&encode_watermarks(&[(repo.clone(), MAX_INT + 1, 1)])),
            None
        );
        assert_eq!(
            decode_watermarks(&encode_watermarks(&[(repo.clone(), 2, MAX_INT + 1)])),
            None
        );
        let edge = [(
            RepoRef {
                name: "n".repeat(250),
                ..repo
            },
            MAX_INT,
            1,
        )];
        assert_eq!(
            decode_watermarks(&encode_watermarks(&edge)),
            Some(edge.to_vec())
        );
    }

    #[test]
    fn version_one_shards_come_back_as_hints() {
        let mut v1 = b"SSL1".to_vec();
        v1.extend_from_slice(&1u32.to_le_bytes());
        for v in [42u64, 7, 5] {
            v1.extend_from_slice(&v.to_le_bytes());
        }
        v1.extend_from_slice(&[BuildStatus::Success.code(), 0]);
        v1.extend_from_slice(&1000u32.to_le_bytes());
        for v in [1u64, 2, 3] {
            v1.extend_from_slice(&v.to_le_bytes());
        }
        put_str16(&mut v1, "octocat");
        put_str16(&mut v1, "hello-world");
        let r = decode_shard(&v1).unwrap();
        let e = r[0].entry;
        assert_eq!((r[0].repo.id, r[0].number), (42, 7));
        assert_eq!(e.class, Class::Hint);
        assert_eq!((e.settled_version(), e.claimed_version), (0, 5));
        assert_eq!(e.claimed_status, BuildStatus::Success);
    }

    #[test]
    fn corrupt_shards_are_rejected_without_panicking() {
        let bytes = encode_shard(&[rec(1), rec(2)]);
        for cut in 0..bytes.len() {
            assert!(decode_shard(&bytes[..cut]).is_none(), "cut {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode_shard(&extra).is_none());
        let mut bad_class = bytes.clone();
        // Header (8), fixed fields (54), claimed version (8) and status (1), then the class.
        bad_class[8 + 54 + 8 + 1] = 7;
        assert!(decode_shard(&bad_class).is_none());
        let mut huge = b"SSL2".to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_shard(&huge).is_none());
        assert!(decode_shard(b"").is_none());
    }

    #[test]
    fn watermarks_round_trip_and_reject_garbage() {
        let marks = vec![
            (rec(1).repo, 77, 2),
            (
                RepoRef {
                    id: 9,
                    namespace: "a".into(),
                    name: "b".into(),
                },
                3,
                3,
            ),
        ];
        let bytes = encode_watermarks(&marks);
        assert_eq!(decode_watermarks(&bytes).unwrap(), marks);
        for cut in 0..bytes.len() {
            assert!(decode_watermarks(&bytes[..cut]).is_none(), "cut {cut}");
        }
        assert!(decode_watermarks(b"SSR1\xff\xff\xff\xff").is_none());
        let mut old = bytes.clone();
        old[3] = b'2';
        assert!(decode_watermarks(&old).is_none(), "SSR2 is not read");
    }

    #[test]
    fn meta_round_trip() {
        assert_eq!(decode_meta(&encode_meta(157)), Some(157));
        assert_eq!(decode_meta(b"v1 0"), None);
        assert_eq!(decode_meta(b""), None);
    }
}
