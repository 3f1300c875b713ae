//! The HTTP filter: watches drone's build webhooks on their way to the pipeline.
//!
//! Only translation: what Envoy reports goes to [`Request`], the per-request state machine of
//! the core (which holds the signature policy: pass through, hold a signed body in `enforce`
//! mode, answer 401), and what it decides is performed here: host calls, metrics, rate-limited
//! log lines. When the stream ends, the transition and the pipeline's answer go to the
//! reconciler through the shared queue.

use super::abi::{self, Action};
use super::host;
use super::metrics::Filter;
use super::shared::Shared;
use crate::core::body_budget::BodyBudget;
use crate::core::logfmt::Val;
use crate::core::model::{DeliveryOutcome, ParseError};
use crate::core::ratelog::suppressed_note;
use crate::core::request::{self, Decision, Finish, Headers, Read, Request};
use std::rc::Rc;

/// Kinds of per-request log lines, each rate-limited on its own (one per 10 s per VM), so a
/// flood of bad webhooks is visible but cannot flood Envoy's log.
#[derive(Clone, Copy)]
enum Kind {
    Unparsable = 0,
    Oversized = 1,
    Signature = 2,
    Queue = 3,
    OverBudget = 4,
}

// One limiter per kind in `Shared::log_limits`.
const _: () = assert!(Kind::OverBudget as usize + 1 == super::shared::LOG_KINDS);

/// Counts and logs a request the worker's body budget had no room for.
fn over_budget(shared: &Shared, what: &str) {
    shared.metrics.count(Filter::OverBudget);
    let cap = shared.cfg.max_body_bytes_in_flight;
    limited(shared, Kind::OverBudget, |note| {
        log::warn!(
            "drone webhook {what}: this worker already holds max_body_bytes_in_flight={cap} body bytes{note}"
        )
    });
}

/// Runs `f` with the suppressed-lines note when a line of this kind may be logged now.
fn limited(shared: &Shared, kind: Kind, f: impl FnOnce(String)) {
    let now = host::now_ms();
    let allowed = shared
        .log_limits
        .borrow_mut()
        .get_mut(kind as usize)
        .and_then(|lim| lim.allow(now));
    if let Some(n) = allowed {
        f(suppressed_note(n));
    }
}

pub struct Observer {
    shared: Option<Rc<Shared>>,
    request: Request,
}

/// A header value the host handed over, as text (no copy: the host's bytes become the string).
fn utf8(v: Option<Vec<u8>>) -> Option<String> {
    v.and_then(|b| String::from_utf8(b).ok())
}

/// Size of the pieces a held body is read in to hash it.
const READ_CHUNK: usize = 64 * 1024;

/// A build webhook we will not track: counted (out of limits apart from the rest, as it may
/// be an attack) and logged (rate-limited); it was passed through unchanged.
fn not_understood(shared: &Shared, e: &ParseError) {
    let counter = match e {
        ParseError::Limit(_) => Filter::OutOfLimits,
        _ => Filter::Unparsable,
    };
    shared.metrics.count(counter);
    limited(shared, Kind::Unparsable, |note| {
        log::info!(
            "drone webhook not understood, passed through unchanged why={}{note}",
            Val(&e.to_string())
        )
    });
}

/// Performs a decision of the state machine: counts and logs a failed signature check, sends
/// the 401, and tells Envoy whether to go on.
fn perform(shared: &Shared, decision: Decision) -> Action {
    match decision {
        Decision::Continue => Action::Continue,
        Decision::Pause => Action::Pause,
        Decision::PassUnverified { why } => {
            shared.metrics.count(Filter::SignatureInvalid);
            limited(shared, Kind::Signature, |note| {
                log::warn!(
                    "webhook signature invalid, passed (monitor mode) why={}{note}",
                    Val(&why)
                )
            });
            Action::Continue
        }
        Decision::Reject { why } => {
            shared.metrics.count(Filter::SignatureInvalid);
            shared.metrics.count(Filter::Rejected);
            limited(shared, Kind::Signature, |note| {
                log::warn!(
                    "webhook rejected with 401 (enforce mode) why={}{note}",
                    Val(&why)
                )
            });
            host::send_local_response(request::REJECT_STATUS, request::REJECT_BODY);
            // Envoy requires a paused stream after a local reply.
            Action::Pause
        }
        Decision::Busy => {
            over_budget(shared, "answered 503 (enforce mode, body not checked)");
            host::send_local_response(request::BUSY_STATUS, request::BUSY_BODY);
            Action::Pause
        }
    }
}

impl Observer {
    pub fn new(shared: Option<Rc<Shared>>) -> Self {
        let request = match &shared {
            Some(s) => Request::new(&s.body_budget),
            None => Request::new(&BodyBudget::new(0)),
        };
        Observer { shared, request }
    }

    /// Reads the body bytes the state machine asked for into it: this chunk, or everything
    /// Envoy buffered while we paused, in pieces (`size` is the total when the host told us;
    /// otherwise read until the buffer ends).
    fn read(&mut self, read: Read) {
        match read {
            Read::Nothing => {}
            Read::Chunk(size) => {
                if let Some(chunk) = host::buffer(abi::HTTP_REQUEST_BODY, 0, size) {
                    self.request.data_owned(chunk);
                }
            }
            Read::Held(size) => {
                let mut offset = 0;
                while size.is_none_or(|size| offset < size) {
                    let len = size.map_or(READ_CHUNK, |size| READ_CHUNK.min(size - offset));
                    let Some(chunk) = host::buffer(abi::HTTP_REQUEST_BODY, offset, len) else {
                        break;
                    };
                    if chunk.is_empty() {
                        break;
                    }
                    offset += chunk.len();
                    self.request.data(&chunk);
                }
            }
        }
    }

    /// At the end of the stream: parse the body and hand the transition and the pipeline's
    /// answer to the reconciler.
    fn finish(&mut self, shared: &Shared) {
        let observe = match self.request.finish() {
            Finish::Nothing => return,
            Finish::Oversized => {
                shared.metrics.count(Filter::Oversized);
                let limit = shared.cfg.max_body_bytes;
                limited(shared, Kind::Oversized, |note| {
                    log::info!(
                        "drone webhook larger than max_body_bytes, passed through unparsed max_body_bytes={limit}{note}"
                    )
                });
                return;
            }
            Finish::OverBudget => {
                over_budget(shared, "passed through unobserved");
                return;
            }
            Finish::Incomplete => {
                shared.metrics.count(Filter::Unparsable);
                return;
            }
            Finish::Observe(observe) => observe,
        };
        // The time of this VM's last tick: the metadata cache counts in minutes, and a clock
        // read is one more host call per webhook.
        let now = shared.tick_ms.get();
        let message = match observe.into_message(
            &shared.sent_metadata.borrow(),
            now,
            shared.queue_key.as_ref(),
        ) {
            Ok(m) => m,
            Err(e) => return not_understood(shared, &e),
        };
        shared.metrics.count(match message.outcome {
            DeliveryOutcome::Delivered => Filter::Delivered,
            DeliveryOutcome::Refused => Filter::Refused,
            DeliveryOutcome::NotDelivered => Filter::NotDelivered,
        });
        let queued = shared
            .queue
            .map(|q| host::enqueue(q, &message.bytes).is_ok())
            .unwrap_or(false);
        if !queued {
            shared.metrics.count(Filter::QueueDropped);
            limited(shared, Kind::Queue, |note| {
                log::warn!("could not hand a webhook to the reconciler (shared queue full){note}")
            });
        } else if let Some((repo_id, hash)) = message.sent_metadata {
            shared.sent_metadata.borrow_mut().sent(repo_id, hash, now);
        }
    }
}

/// The callbacks of an HTTP context (`proxy_on_request_headers` and the rest, in `mod.rs`).
impl Observer {
    pub fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let req = |name: &str| utf8(host::header(abi::HTTP_REQUEST_HEADERS, name));
        // Cheapest first: most requests to a pipeline are not drone's webhooks, and the
        // other headers are read only for requests to the webhook path (in `enforce`, any
        // spelling of it).
        let path = req(":path").unwrap_or_default();
        if !Request::concerns(&shared.cfg, &path) {
            return Action::Continue;
        }
        let (method, event) = (req(":method").unwrap_or_default(), req("x-drone-event"));
        // The clock is read for the signature's `Date` only: one host call less per webhook
        // where no signature is checked.
        let (date, digest, signature, now) = if Request::checks_signatures(&shared.cfg) {
            let now = host::now_ms();
            (req("date"), req("digest"), req("signature"), now)
        } else {
            (None, None, None, 0)
        };
        let headers = Headers {
            path: &path,
            method: &method,
            drone_event: event.as_deref(),
            date: date.as_deref(),
            digest: digest.as_deref(),
            signature: signature.as_deref(),
        };
        let step = self
            .request
            .on_headers(&shared.cfg, &headers, now, end_of_stream);
        if step.observed {
            shared.metrics.count(Filter::Observed);
        }
        perform(&shared, step.decision)
    }

    pub fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        self.read(self.request.body_read(body_size, end_of_stream));
        perform(&shared, self.request.on_body(body_size, end_of_stream))
    }

    pub fn on_request_trailers(&mut self) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        self.read(self.request.trailers_read());
        perform(&shared, self.request.on_trailers())
    }

    /// The end of the stream. The pipeline's answer is read here, from the response headers
    /// the access-log phase still shows (none if the stream ended without one): a module
    /// without `proxy_on_response_headers` is not called into on every response.
    pub fn on_log(&mut self) {
        if self.request.wants_response_status() {
            let status = host::header(abi::HTTP_RESPONSE_HEADERS, ":status")
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse().ok());
            self.request.on_response_status(status);
        }
        if let Some(shared) = self.shared.clone() {
            self.finish(&shared);
        }
    }
}
