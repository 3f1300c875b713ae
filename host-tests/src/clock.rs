//! The virtual clock and its event queue (Envoy's dispatcher timers and posted callbacks).
//!
//! Events run in (due time, insertion order); a callback that schedules something "now" (a
//! queue-ready post, an immediate call failure) runs after the current one, never inside it.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// `proxy_on_tick(root)` if the root's timer epoch still matches (re-arming or changing the
    /// period bumps the epoch, which cancels older timers).
    Tick {
        vm: usize,
        gen: u32,
        root: u32,
        epoch: u64,
    },
    /// Deliver the in-flight call `(vm, token)` (if it was not cancelled).
    CallReply { vm: usize, gen: u32, token: u32 },
    /// `proxy_on_queue_ready(root, qid)` on the consumer's thread.
    QueueReady { vm: usize, root: u32, qid: u32 },
}

#[derive(Debug)]
pub(crate) struct Event {
    pub due: u64,
    pub seq: u64,
    pub kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    /// Reversed so that `BinaryHeap` (a max-heap) pops the earliest event first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

pub(crate) struct Clock {
    pub now_ms: u64,
    heap: BinaryHeap<Event>,
    seq: u64,
}

impl Clock {
    pub fn new(now_ms: u64) -> Self {
        Clock {
            now_ms,
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }

    pub fn schedule(&mut self, due: u64, kind: EventKind) {
        self.seq += 1;
        self.heap.push(Event {
            due,
            seq: self.seq,
            kind,
        });
    }

    pub fn schedule_in(&mut self, delay_ms: u64, kind: EventKind) {
        self.schedule(self.now_ms.saturating_add(delay_ms), kind);
    }

    /// Pops the next event due at or before `limit` and moves the clock to its due time.
    pub fn pop_due(&mut self, limit: u64) -> Option<Event> {
        if self.heap.peek()?.due > limit {
            return None;
        }
        let ev = self.heap.pop()?;
        self.now_ms = self.now_ms.max(ev.due);
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_then_insertion_order() {
        let mut c = Clock::new(100);
        let q = |qid| EventKind::QueueReady {
            vm: 0,
            root: 1,
            qid,
        };
        c.schedule_in(10, q(1));
        c.schedule_in(0, q(2));
        c.schedule_in(10, q(3));
        c.schedule_in(0, q(4));
        let order: Vec<_> = std::iter::from_fn(|| c.pop_due(105))
            .map(|e| e.kind)
            .collect();
        assert_eq!(order, vec![q(2), q(4)]);
        assert_eq!(c.now_ms, 100);
        let order: Vec<_> = std::iter::from_fn(|| c.pop_due(200))
            .map(|e| e.kind)
            .collect();
        assert_eq!(order, vec![q(1), q(3)]);
        assert_eq!(c.now_ms, 110);
    }
}
