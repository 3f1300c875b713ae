//! Leader election through a lease in shared data.
//!
//! Envoy runs a root context on every worker and on the main thread, each with its own tick,
//! and Istio offers no singleton. Exactly one of them must reconcile. Shared data has CAS but
//! no TTL and no delete, so the value carries its own expiry: the holder renews it on every
//! tick; anyone may take it (by CAS) once it has expired. This module only decides;
//! [`super::leader`] does the shared-data calls.

/// The lease value stored under `status-sync/<instance>/lease`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Random id of the holding root context.
    pub owner: u64,
    pub expires_ms: u64,
    /// Incremented on every change of holder: tells a returning holder it was replaced.
    pub epoch: u64,
}

impl Lease {
    pub fn encode(&self) -> Vec<u8> {
        format!("v1 {:016x} {} {}", self.owner, self.expires_ms, self.epoch).into_bytes()
    }

    /// Decodes a stored value; anything else (including the empty value Envoy keeps for a
    /// "removed" key) is `None`, which counts as no lease.
    pub fn decode(bytes: &[u8]) -> Option<Lease> {
        let s = std::str::from_utf8(bytes).ok()?;
        let mut it = s.split(' ');
        if it.next()? != "v1" {
            return None;
        }
        let owner = u64::from_str_radix(it.next()?, 16).ok()?;
        let expires_ms = it.next()?.parse().ok()?;
        let epoch = it.next()?.parse().ok()?;
        if it.next().is_some() {
            return None;
        }
        Some(Lease {
            owner,
            expires_ms,
            epoch,
        })
    }
}

/// What a root context should do about the lease on this tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: write this renewed value (with the CAS we read) and reconcile.
    Renew(Lease),
    /// It is free or expired: try to write this value (with the CAS we read); on success we
    /// are the new leader.
    Acquire(Lease),
    /// Someone else holds a valid lease: do not reconcile.
    Follow,
}

/// Decides from the current stored value.
pub fn decide(current: Option<&[u8]>, me: u64, now_ms: u64, lease_ms: u64) -> Decision {
    let expires_ms = now_ms.saturating_add(lease_ms);
    match current.and_then(Lease::decode) {
        Some(l) if l.owner == me => Decision::Renew(Lease { expires_ms, ..l }),
        Some(l) if l.expires_ms > now_ms => Decision::Follow,
        Some(l) => Decision::Acquire(Lease {
            owner: me,
            expires_ms,
            epoch: l.epoch.wrapping_add(1),
        }),
        None => Decision::Acquire(Lease {
            owner: me,
            expires_ms,
            epoch: 1,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let l = Lease {
            owner: 0xdead_beef,
            expires_ms: 123,
            epoch: 4,
        };
        assert_eq!(Lease::decode(&l.encode()), Some(l));
        for bad in [
            &b""[..],
            b"v1",
            b"v2 1 2 3",
            b"v1 zz 1 1",
            b"v1 1 1 1 1",
            b"\xff\xfe",
        ] {
            assert_eq!(Lease::decode(bad), None);
        }
    }

    #[test]
    fn lifecycle() {
        // Nobody holds it: acquire.
        let Decision::Acquire(a) = decide(None, 1, 1000, 500) else {
            panic!()
        };
        assert_eq!((a.owner, a.expires_ms, a.epoch), (1, 1500, 1));
        let v = a.encode();
        // Another root follows while it is valid.
        assert_eq!(decide(Some(&v), 2, 1499, 500), Decision::Follow);
        // The holder renews.
        assert!(
            matches!(decide(Some(&v), 1, 1200, 500), Decision::Renew(l) if l.expires_ms == 1700 && l.epoch == 1)
        );
        // Once expired, another takes over with a new epoch.
        assert!(
            matches!(decide(Some(&v), 2, 1500, 500), Decision::Acquire(l) if l.owner == 2 && l.epoch == 2)
        );
        // An emptied value counts as free.
        assert!(matches!(decide(Some(b""), 3, 0, 500), Decision::Acquire(_)));
    }
}
