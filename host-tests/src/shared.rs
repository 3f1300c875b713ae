//! Process-wide shared data and shared queues, with Envoy's (cpp-host `shared_data.cc`,
//! `shared_queue.cc`) exact rules.

use std::collections::{HashMap, VecDeque};

/// Shared data: one map per vm_id, CAS values from one process-wide counter that skips 0.
#[derive(Default)]
pub(crate) struct SharedData {
    map: HashMap<(String, Vec<u8>), (Vec<u8>, u32)>,
    next_cas: u32,
}

/// Result of [`SharedData::set`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SetResult {
    Ok,
    CasMismatch,
}

impl SharedData {
    fn next_cas(&mut self) -> u32 {
        self.next_cas = self.next_cas.wrapping_add(1);
        if self.next_cas == 0 {
            self.next_cas = 1;
        }
        self.next_cas
    }

    /// `(value, cas)`; `None` = NotFound.
    pub fn get(&self, vm_id: &str, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.map.get(&(vm_id.to_string(), key.to_vec())).cloned()
    }

    /// Envoy checks the CAS only for an existing key, and `cas == 0` is unconditional; a
    /// "remove" (NULL value) just stores an empty value, the key stays.
    pub fn set(&mut self, vm_id: &str, key: &[u8], value: &[u8], cas: u32) -> SetResult {
        let k = (vm_id.to_string(), key.to_vec());
        if let Some((_, current)) = self.map.get(&k) {
            if cas != 0 && cas != *current {
                return SetResult::CasMismatch;
            }
        }
        let cas = self.next_cas();
        self.map.insert(k, (value.to_vec(), cas));
        SetResult::Ok
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn keys(&self, vm_id: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .map
            .keys()
            .filter(|(v, _)| v == vm_id)
            .map(|(_, k)| String::from_utf8_lossy(k).into_owned())
            .collect();
        keys.sort();
        keys
    }
}

/// Who gets `on_queue_ready`: the root context of the last registrant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Consumer {
    pub vm: usize,
    pub root: u32,
}

struct Queue {
    items: VecDeque<Vec<u8>>,
    consumer: Consumer,
}

/// Shared queues keyed (vm_id, name); tokens from one process-wide counter that skips 0.
#[derive(Default)]
pub(crate) struct Queues {
    tokens: HashMap<(String, String), u32>,
    queues: HashMap<u32, Queue>,
    next_token: u32,
}

impl Queues {
    /// Creates or re-opens the queue; the caller becomes its (only) consumer. Data survives.
    pub fn register(&mut self, vm_id: &str, name: &str, consumer: Consumer) -> u32 {
        let key = (vm_id.to_string(), name.to_string());
        if let Some(&token) = self.tokens.get(&key) {
            if let Some(q) = self.queues.get_mut(&token) {
                q.consumer = consumer;
            }
            return token;
        }
        loop {
            self.next_token = self.next_token.wrapping_add(1);
            if self.next_token != 0 && !self.queues.contains_key(&self.next_token) {
                break;
            }
        }
        let token = self.next_token;
        self.tokens.insert(key, token);
        self.queues.insert(
            token,
            Queue {
                items: VecDeque::new(),
                consumer,
            },
        );
        token
    }

    pub fn resolve(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.tokens
            .get(&(vm_id.to_string(), name.to_string()))
            .copied()
    }

    /// `None` = NotFound; otherwise the consumer to post `on_queue_ready` to.
    pub fn enqueue(&mut self, token: u32, value: Vec<u8>) -> Option<Consumer> {
        let q = self.queues.get_mut(&token)?;
        q.items.push_back(value);
        Some(q.consumer)
    }

    /// `Err(true)` = NotFound, `Err(false)` = Empty.
    pub fn dequeue(&mut self, token: u32) -> Result<Vec<u8>, bool> {
        let q = self.queues.get_mut(&token).ok_or(true)?;
        q.items.pop_front().ok_or(false)
    }

    pub fn len(&self, vm_id: &str, name: &str) -> Option<usize> {
        let token = self.resolve(vm_id, name)?;
        self.queues.get(&token).map(|q| q.items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_only_for_existing_keys() {
        let mut s = SharedData::default();
        assert_eq!(s.set("v", b"k", b"1", 12345), SetResult::Ok);
        let (_, cas) = s.get("v", b"k").unwrap();
        assert_ne!(cas, 0);
        assert_eq!(s.set("v", b"k", b"2", cas + 1), SetResult::CasMismatch);
        assert_eq!(s.set("v", b"k", b"2", cas), SetResult::Ok);
        assert_eq!(s.set("v", b"k", b"3", 0), SetResult::Ok);
        assert_eq!(s.get("v", b"k").unwrap().0, b"3");
        assert!(s.get("other", b"k").is_none());
    }

    #[test]
    fn queue_last_registrant() {
        let mut q = Queues::default();
        let a = Consumer { vm: 0, root: 1 };
        let b = Consumer { vm: 1, root: 1 };
        let t = q.register("v", "n", a);
        assert_eq!(q.enqueue(t, b"x".to_vec()), Some(a));
        assert_eq!(q.register("v", "n", b), t);
        assert_eq!(q.enqueue(t, b"y".to_vec()), Some(b));
        assert_eq!(q.dequeue(t), Ok(b"x".to_vec()));
        assert_eq!(q.dequeue(t), Ok(b"y".to_vec()));
        assert_eq!(q.dequeue(t), Err(false));
        assert_eq!(q.dequeue(t + 1), Err(true));
        assert_eq!(q.resolve("v", "other"), None);
    }
}
