//! The host as the leader's turn ([`super::turn`]) sees it: one trait over shared data and the
//! queue ([`SharedStore`]), the clock, outgoing HTTP calls and their answers, and metrics. The
//! shell implements it with proxy-wasm hostcalls; [`MemoryHost`] implements it in memory for
//! native tests (its shared data and queue are a [`MemoryStore`], with Envoy's rules).

use super::metrics::Id;
use super::reconciler::OutgoingCall;
use super::store::{MemoryStore, SetError, SharedStore};

/// What the leader's turn needs of the host, beside shared data and the queue.
pub trait Host: SharedStore {
    /// The host's wall clock, in Unix milliseconds.
    fn now_ms(&self) -> u64;

    /// Sends `call`; the host's token for its answer, or why the host refused it (for the log:
    /// typically a cluster Envoy does not define).
    fn dispatch(&mut self, call: &OutgoingCall) -> Result<u32, String>;

    /// The `:status` of the call answer being handled, if it has a readable one. Only asked
    /// while an answer is handled, and only for a call this leader made.
    fn answer_status(&self) -> Option<u16>;

    /// The first `len` bytes of the call answer's body being handled.
    fn answer_body(&self, len: usize) -> Option<Vec<u8>>;

    /// Adds `by` to the counter `id`.
    fn add_metric(&mut self, id: Id, by: u64);

    /// Sets the gauge `id`, or records one sample of the histogram `id`.
    fn set_metric(&mut self, id: Id, value: u64);
}

/// A host in memory, for native tests: shared data and queue with Envoy's rules, a clock the
/// test sets, calls recorded (or refused) rather than sent, a staged answer, and metrics as
/// Envoy would hold them (counters add up, gauges keep the last value, histograms keep every
/// sample).
#[derive(Debug, Default)]
pub struct MemoryHost {
    pub store: MemoryStore,
    pub now_ms: u64,
    /// While set, every dispatch is refused with this reason.
    pub refuse: Option<String>,
    /// Calls dispatched, with their tokens, oldest first.
    pub dispatched: Vec<(u32, OutgoingCall)>,
    /// Calls refused, oldest first.
    pub refused: Vec<OutgoingCall>,
    /// The answer the next [`super::turn::Turn::on_call_answer`] reads: status and body.
    pub answer: Option<(Option<u16>, Vec<u8>)>,
    /// How many times an answer's status or body was read.
    pub answer_reads: std::cell::Cell<usize>,
    next_token: u32,
    values: std::collections::BTreeMap<&'static str, u64>,
    samples: Vec<(Id, u64)>,
}

impl MemoryHost {
    /// A host whose clock reads `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        MemoryHost {
            now_ms,
            ..Self::default()
        }
    }

    /// A counter's total or a gauge's last value (0 if never written).
    pub fn metric(&self, id: Id) -> u64 {
        self.values.get(id.name()).copied().unwrap_or_default()
    }

    /// Every sample recorded into histogram `id`, oldest first.
    pub fn samples(&self, id: Id) -> Vec<u64> {
        self.samples
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, v)| *v)
            .collect()
    }

    /// Takes the calls dispatched so far.
    pub fn take_dispatched(&mut self) -> Vec<(u32, OutgoingCall)> {
        std::mem::take(&mut self.dispatched)
    }
}

impl SharedStore for MemoryHost {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.store.get(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        self.store.set(key, value, cas)
    }

    fn dequeue(&mut self) -> Option<Vec<u8>> {
        self.store.dequeue()
    }
}

impl Host for MemoryHost {
    fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn dispatch(&mut self, call: &OutgoingCall) -> Result<u32, String> {
        if let Some(why) = &self.refuse {
            self.refused.push(call.clone());
            return Err(why.clone());
        }
        // Envoy's tokens start at 1 and never repeat while a call is in flight.
        self.next_token = self.next_token.wrapping_add(1).max(1);
        self.dispatched.push((self.next_token, call.clone()));
        Ok(self.next_token)
    }

    fn answer_status(&self) -> Option<u16> {
        self.answer_reads.set(self.answer_reads.get() + 1);
        self.answer.as_ref().and_then(|(status, _)| *status)
    }

    fn answer_body(&self, len: usize) -> Option<Vec<u8>> {
        self.answer_reads.set(self.answer_reads.get() + 1);
        let (_, body) = self.answer.as_ref()?;
        Some(body.iter().take(len).copied().collect())
    }

    fn add_metric(&mut self, id: Id, by: u64) {
        let v = self.values.entry(id.name()).or_default();
        *v = v.saturating_add(by);
    }

    fn set_metric(&mut self, id: Id, value: u64) {
        match id.kind() {
            super::metrics::Kind::Histogram => self.samples.push((id, value)),
            _ => {
                self.values.insert(id.name(), value);
            }
        }
    }
}
