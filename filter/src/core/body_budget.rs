//! One cap on the body bytes a worker holds for all its requests at once
//! (`max_body_bytes_in_flight`).
//!
//! `max_body_bytes` bounds one request; without this, a slow client opening many streams to
//! the webhook path and never finishing their bodies makes the worker hold `max_body_bytes`
//! per stream (and wasm memory, once grown, is never given back to the system). Every byte a
//! request makes the worker hold is reserved here first: our copy of a build webhook's body
//! (by its capacity, not its length), and in `enforce` the body Envoy buffers while the filter
//! holds it for its digest check. A request whose next bytes do not fit is not observed (see
//! [`super::request`] for what it gets).
//!
//! A [`Hold`] is one request's share; it gives its bytes back when it is dropped, so every way
//! a request ends (finished, rejected, oversized, reset, or its context destroyed without an
//! end of stream) releases what it held.
//!
//! Requests whose signature did not verify (with a secret configured) may hold at most half of
//! the cap between them ([`Hold::unverified`]), as hints have their own share of the ledger:
//! unsigned slow bodies cannot fill the worker and leave a genuine webhook unobserved.

use std::cell::Cell;
use std::rc::Rc;

/// The bytes held by all the requests of one worker, and the cap. Cheap to clone: clones
/// share the count (one per root context, handed to each request).
#[derive(Clone, Debug)]
pub struct BodyBudget {
    pool: Rc<Pool>,
}

#[derive(Debug)]
struct Pool {
    cap: usize,
    held: Cell<usize>,
    /// Of `held`, what unverified requests hold; at most `cap / 2` of it.
    unverified: Cell<usize>,
}

impl BodyBudget {
    /// A budget of `cap` bytes (`max_body_bytes_in_flight`).
    pub fn new(cap: usize) -> Self {
        BodyBudget {
            pool: Rc::new(Pool {
                cap,
                held: Cell::new(0),
                unverified: Cell::new(0),
            }),
        }
    }

    /// Bytes held now, by every request of this worker.
    pub fn held(&self) -> usize {
        self.pool.held.get()
    }

    /// A share of nothing yet, for one request.
    pub fn hold(&self) -> Hold {
        Hold {
            pool: Rc::clone(&self.pool),
            bytes: 0,
            unverified: false,
        }
    }
}

/// One request's share of the [`BodyBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Hold {
    pool: Rc<Pool>,
    bytes: usize,
    unverified: bool,
}

impl Hold {
    /// Bytes this share holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Counts this share, from now on, in the unverified requests' half of the cap. Called
    /// once the headers showed the signature does not verify, before any byte is held (what
    /// it already holds moves along).
    pub fn unverified(&mut self) {
        if !self.unverified {
            let pool = &self.pool;
            pool.unverified
                .set(pool.unverified.get().saturating_add(self.bytes));
            self.unverified = true;
        }
    }

    /// Makes this share `total` bytes: a smaller one always, a larger one only if the worker's
    /// cap allows it, and for an unverified share also their half of it (false, and nothing
    /// changed, otherwise).
    pub fn resize(&mut self, total: usize) -> bool {
        let held = self.pool.held.get();
        let after = held.saturating_sub(self.bytes).saturating_add(total);
        // The worker's bytes after the change must be within the cap, or no more than now:
        // nothing grows past the cap, so that is every shrink (and no change).
        if after > self.pool.cap.max(held) {
            return false;
        }
        if self.unverified {
            let held = self.pool.unverified.get();
            let after = held.saturating_sub(self.bytes).saturating_add(total);
            if after > (self.pool.cap / 2).max(held) {
                return false;
            }
            self.pool.unverified.set(after);
        }
        self.pool.held.set(after);
        self.bytes = total;
        true
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let held = self.pool.held.get();
        self.pool.held.set(held.saturating_sub(self.bytes));
        if self.unverified {
            let held = self.pool.unverified.get();
            self.pool.unverified.set(held.saturating_sub(self.bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unverified requests share half the cap: however many of them there are, a verified one
    /// still finds the other half (issue 20's slow bodies, sent unsigned).
    #[test]
    fn unverified_shares_hold_at_most_half_and_leave_room_for_verified_ones() {
        let budget = BodyBudget::new(100);
        let mut slow: Vec<Hold> = (0..10).map(|_| budget.hold()).collect();
        for h in &mut slow {
            h.unverified();
        }
        let mut taken = 0;
        for h in &mut slow {
            taken += usize::from(h.resize(20));
        }
        assert_eq!(
            (taken, budget.held()),
            (2, 40),
            "two of 20 fit in half of 100"
        );
        assert!(!slow[2].resize(11), "40 + 11 > 50");
        assert!(slow[2].resize(10));
        let mut genuine = budget.hold();
        assert!(genuine.resize(50), "the verified half is still free");
        assert!(!genuine.resize(51), "and the whole cap still holds");
        drop(slow);
        assert!(
            genuine.resize(100),
            "everything given back, unverified share too"
        );
        let mut late = budget.hold();
        assert!(late.resize(0));
        drop(genuine);
        late.unverified();
        assert!(late.resize(50) && !late.resize(51));
        drop(late);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn shares_grow_within_the_cap_and_give_back_when_dropped() {
        let budget = BodyBudget::new(100);
        let mut a = budget.hold();
        let mut b = budget.hold();
        assert!(a.resize(60));
        assert!(!b.resize(41), "60 + 41 > 100");
        assert_eq!(
            (b.bytes(), budget.held()),
            (0, 60),
            "a refusal takes nothing"
        );
        assert!(b.resize(40));
        assert_eq!(budget.held(), 100);
        assert!(!a.resize(61));
        assert!(a.resize(10), "shrinking always works");
        assert_eq!(budget.held(), 50);
        assert!(b.resize(90));
        drop(b);
        assert_eq!(budget.held(), 10);
        drop(a);
        assert_eq!(budget.held(), 0);
        let clone = budget.clone();
        let mut c = clone.hold();
        assert!(c.resize(100));
        assert_eq!(budget.held(), 100, "clones share the count");
    }
}
