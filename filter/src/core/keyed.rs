//! The hash keys of every hash map the core keeps.
//!
//! Those maps are keyed by what arrives from outside: repository ids and build numbers from
//! webhooks, unsigned ones included. With hash keys an attacker can predict, they can choose
//! ids that collide, so that every lookup walks a long probe sequence (hash flooding): the
//! caps bound how many entries a map holds, not how long each lookup takes. std's
//! `RandomState` is seeded by the operating system on most targets, but the module is built for
//! `wasm32-unknown-unknown`, where std has no randomness and seeds it from two allocation
//! addresses, the same in every VM of the same module. So the shell seeds this module once per
//! VM with the host's random bytes ([`seed`]) before it builds anything, and every map of the
//! core is a [`Map`]: std's SipHash-1-3 whose state has first absorbed that secret.
//!
//! Natively (the tests) nothing seeds it, so runs stay deterministic.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, DefaultHasher, Hasher};

thread_local! {
    /// The VM's secret; one VM is one thread, and nothing reads it but [`Keyed::default`].
    static SEED: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Sets the secret that every [`Map`] built from now on hashes with. Maps already built keep
/// theirs, so the shell calls this before it builds its first context.
pub fn seed(k0: u64, k1: u64) {
    SEED.with(|s| s.set((k0, k1)));
}

/// A hash map whose hashes an attacker cannot predict (once the shell has seeded [`seed`]).
pub type Map<K, V> = HashMap<K, V, Keyed>;

/// The hasher of a [`Map`]: SipHash-1-3 that has already absorbed the VM's secret, cloned for
/// each key (the secret costs nothing per key).
#[derive(Clone)]
pub struct Keyed(DefaultHasher);

impl Default for Keyed {
    fn default() -> Self {
        let (k0, k1) = SEED.with(Cell::get);
        let mut hasher = DefaultHasher::new();
        hasher.write_u64(k0);
        hasher.write_u64(k1);
        Keyed(hasher)
    }
}

impl BuildHasher for Keyed {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        self.0.clone()
    }
}

/// The state is derived from the secret: never printed.
impl fmt::Debug for Keyed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keyed(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(keyed: &Keyed, key: u64) -> u64 {
        keyed.hash_one(key)
    }

    #[test]
    fn maps_built_after_another_seed_hash_the_same_key_differently() {
        seed(0, 0);
        let before = Keyed::default();
        seed(0x5eed, 42);
        let after = Keyed::default();
        assert_ne!(hash_of(&before, 7), hash_of(&after, 7));
        // a map built before keeps its own keys
        assert_eq!(hash_of(&before, 7), hash_of(&Keyed(before.0.clone()), 7));
        seed(0, 0);
    }

    #[test]
    fn maps_of_one_seed_agree_so_a_map_finds_what_it_stored() {
        seed(1, 2);
        let (a, b) = (Keyed::default(), Keyed::default());
        assert_eq!(hash_of(&a, 99), hash_of(&b, 99));
        let mut map: Map<u64, &str> = Map::default();
        map.insert(99, "x");
        assert_eq!(map.get(&99), Some(&"x"));
        seed(0, 0);
    }

    #[test]
    fn the_hasher_never_prints_its_secret_derived_state() {
        seed(0xdead_beef, 0xfeed);
        let printed = format!("{:?}", Keyed::default());
        assert_eq!(printed, "Keyed(..)");
        seed(0, 0);
    }
}
