//! The host's shared data and observation queue, as the leader sees them: a small trait the
//! shell implements with proxy-wasm hostcalls, and an in-memory implementation with Envoy's
//! rules for native tests.
//!
//! Envoy's shared data has no delete and no TTL, and its compare-and-swap (CAS) applies only
//! to keys that exist: two roots that both "insert" a key both succeed, the last one wins.
//! "Removing" a key stores an empty value. Code that uses a [`SharedStore`] must hold up
//! under those rules; [`MemoryStore`] keeps them so the tests see what Envoy would do.

use std::collections::{BTreeMap, VecDeque};

/// Why a [`SharedStore::set`] did not write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetError {
    /// The key changed since the CAS given was read.
    CasMismatch,
    /// The host refused the write for another reason.
    Refused,
}

/// The process-wide key-value store and the observation queue, as one root context sees them.
pub trait SharedStore {
    /// The value under `key` and its CAS (never 0: Envoy's counter skips it); `None` if the
    /// key was never written. An emptied ("removed") key reads as an empty value with its CAS.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;

    /// Writes `value` under `key`. With `Some(cas)`, only if the key still has that CAS (or
    /// does not exist: the host checks CAS for existing keys only); with `None`, always.
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;

    /// The next message of the queue the HTTP filters feed, if any.
    fn dequeue(&mut self) -> Option<Vec<u8>>;
}

/// Shared data and a queue in memory, with Envoy's rules: CAS values from one counter that
/// never yields 0, CAS checked for existing keys only, no delete. For native tests.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    values: BTreeMap<String, (Vec<u8>, u32)>,
    last_cas: u32,
    queue: VecDeque<Vec<u8>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a message to the queue, as a worker's HTTP filter does.
    pub fn enqueue(&mut self, message: Vec<u8>) {
        self.queue.push_back(message);
    }

    /// Messages still in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The value under `key`, without its CAS.
    pub fn value(&self, key: &str) -> Option<&[u8]> {
        self.values.get(key).map(|(v, _)| v.as_slice())
    }

    /// Every key written so far, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.values.get(key).cloned()
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        if let (Some(cas), Some((_, current))) = (cas, self.values.get(key)) {
            if cas != *current {
                return Err(SetError::CasMismatch);
            }
        }
        self.last_cas = self.last_cas.checked_add(1).unwrap_or(1);
        self.values
            .insert(key.to_string(), (value.to_vec(), self.last_cas));
        Ok(())
    }

    fn dequeue(&mut self) -> Option<Vec<u8>> {
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_guards_existing_keys_only() {
        let mut s = MemoryStore::new();
        assert_eq!(s.get("k"), None);
        // An insert succeeds whatever CAS it names: the key did not exist.
        assert_eq!(s.set("k", b"a", Some(7)), Ok(()));
        let (v, cas) = s.get("k").unwrap_or_default();
        assert_eq!((v.as_slice(), cas != 0), (&b"a"[..], true));
        assert_eq!(s.set("k", b"b", Some(cas + 1)), Err(SetError::CasMismatch));
        assert_eq!(s.set("k", b"b", Some(cas)), Ok(()));
        // The CAS changed with the write: the old one no longer works; `None` always does.
        assert_eq!(s.set("k", b"c", Some(cas)), Err(SetError::CasMismatch));
        assert_eq!(s.set("k", b"", None), Ok(()));
        assert_eq!(s.value("k"), Some(&b""[..]));
        assert_eq!(s.keys().collect::<Vec<_>>(), ["k"]);
    }

    #[test]
    fn queue_is_first_in_first_out() {
        let mut s = MemoryStore::new();
        s.enqueue(b"1".to_vec());
        s.enqueue(b"2".to_vec());
        assert_eq!(s.queued(), 2);
        assert_eq!(s.dequeue().as_deref(), Some(&b"1"[..]));
        assert_eq!(s.dequeue().as_deref(), Some(&b"2"[..]));
        assert_eq!(s.dequeue(), None);
    }
}
