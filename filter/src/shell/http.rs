//! The HTTP filter: watches drone's build webhooks on their way to the pipeline.
//!
//! Pass-through first: the request is never paused for our sake (`Action::Continue`
//! everywhere), the body is copied as it streams past (up to `max_body_bytes`), and nothing is
//! changed. The one exception is opt-in: with `signature_mode: enforce`, any request to
//! `webhook_path` (whatever its method or event header) whose signature headers are missing or
//! forged is answered 401 before anything is forwarded (the HMAC covers only `Date` and
//! `Digest`, so this needs no body), and the body of a correctly signed one is held until its
//! `Digest` is checked, at the end of the body or at the trailers, whichever ends the request.
//! Headers are never held: Envoy turns a
//! paused `on_request_headers` into StopAllIteration, after which the body callbacks would not
//! run. When the stream ends, the transition and the pipeline's answer go to the reconciler
//! through the shared queue.

use super::host;
use super::metrics::Filter;
use super::root::Shared;
use crate::core::config::SignatureMode;
use crate::core::logfmt::Val;
use crate::core::model::{DeliveryOutcome, ParseError};
use crate::core::observation::Observation;
use crate::core::ratelog::{suppressed_note, LogLimiter};
use crate::core::signature::{self, DigestStream};
use crate::core::webhook;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use std::rc::Rc;

/// Kinds of per-request log lines, each rate-limited on its own (one per 10 s per VM), so a
/// flood of bad webhooks is visible but cannot flood Envoy's log.
#[derive(Clone, Copy)]
enum Kind {
    Unparsable = 0,
    Oversized = 1,
    Signature = 2,
    Queue = 3,
}

/// The per-kind limiters of one root context (one VM thread).
pub fn new_limits() -> std::cell::RefCell<[LogLimiter; 4]> {
    std::cell::RefCell::new([const { LogLimiter::new(10_000) }; 4])
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

#[derive(Default)]
struct SignedHeaders {
    date: Option<String>,
    digest: Option<String>,
}

pub struct Observer {
    shared: Option<Rc<Shared>>,
    watching: bool,
    /// Enforce mode with valid signature headers: the body is held (Envoy buffers it) until
    /// its digest is checked.
    holding_body: bool,
    body: Vec<u8>,
    oversized: bool,
    saw_body_end: bool,
    signed: SignedHeaders,
    /// Digest of the body as it streams past (signature checks only).
    digest: Option<DigestStream>,
    rejected: bool,
    /// The signature headers verified and the body's digest matched: the observation is
    /// evidence. Set only at the end of a complete body.
    verified: bool,
    response_status: Option<u16>,
}

fn utf8(v: Option<&[u8]>) -> Option<String> {
    v.and_then(|b| std::str::from_utf8(b).ok())
        .map(str::to_string)
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

impl Observer {
    pub fn new(shared: Option<Rc<Shared>>) -> Self {
        Observer {
            shared,
            watching: false,
            holding_body: false,
            body: Vec::new(),
            oversized: false,
            saw_body_end: false,
            signed: SignedHeaders::default(),
            digest: None,
            rejected: false,
            verified: false,
            response_status: None,
        }
    }

    /// A signature check failed: count it; in enforce mode answer 401 (the caller returns
    /// `Pause`, as Envoy requires after a local reply).
    fn signature_failed(&mut self, shared: &Shared, why: &str) -> Action {
        shared.metrics.count(Filter::SignatureInvalid);
        if shared.cfg.signature_mode == SignatureMode::Enforce {
            shared.metrics.count(Filter::Rejected);
            limited(shared, Kind::Signature, |note| {
                log::warn!(
                    "webhook rejected with 401 (enforce mode) why={}{note}",
                    Val(why)
                )
            });
            self.rejected = true;
            self.watching = false;
            self.body = Vec::new();
            host::send_local_response(401, b"invalid webhook signature\n");
            return Action::Pause;
        }
        limited(shared, Kind::Signature, |note| {
            log::warn!(
                "webhook signature invalid, passed (monitor mode) why={}{note}",
                Val(why)
            )
        });
        Action::Continue
    }

    /// Copies a chunk (up to `max_body_bytes`) and feeds the digest.
    fn take_chunk(&mut self, chunk: &[u8], limit: usize) {
        if let Some(d) = self.digest.as_mut() {
            d.update(chunk);
        }
        if self.oversized || !self.watching {
            return;
        }
        if self.body.len().saturating_add(chunk.len()) > limit {
            self.oversized = true;
            self.body = Vec::new();
        } else {
            self.body.extend_from_slice(chunk);
        }
    }

    /// Still reading this request's body: observing it, or checking its digest.
    fn in_body(&self) -> bool {
        (self.watching || self.digest.is_some()) && !self.saw_body_end && !self.rejected
    }

    /// Reads the body Envoy buffered while we paused, in pieces, into the digest (and our
    /// copy). `size` is the total when the host told us; otherwise read until the buffer ends.
    fn read_held_body(&mut self, shared: &Shared, size: Option<usize>) {
        let limit = shared.cfg.max_body_bytes;
        let mut offset = 0;
        while size.is_none_or(|size| offset < size) {
            let len = size.map_or(READ_CHUNK, |size| READ_CHUNK.min(size - offset));
            let Some(chunk) = host::buffer(BufferType::HttpRequestBody, offset, len) else {
                break;
            };
            if chunk.is_empty() {
                break;
            }
            offset += chunk.len();
            self.take_chunk(&chunk, limit);
        }
    }

    /// Called once the whole body has been seen (or there was none).
    fn body_complete(&mut self, shared: &Shared) -> Action {
        self.saw_body_end = true;
        if let Some(d) = self.digest.take() {
            match d.check(self.signed.digest.as_deref()) {
                Ok(()) => self.verified = true,
                Err(e) => {
                    let action = self.signature_failed(shared, &e.to_string());
                    if self.rejected {
                        return action;
                    }
                }
            }
        }
        // Parsing waits for the end of the stream (`finish`).
        Action::Continue
    }

    /// At the end of the stream: parse the body and hand the transition and the pipeline's
    /// answer to the reconciler. Parsing waits until now because forwarding the webhook does
    /// not need it, so it adds nothing to the pipeline's latency.
    fn finish(&mut self, shared: &Shared) {
        if !self.watching || self.rejected {
            return;
        }
        self.watching = false;
        let body = std::mem::take(&mut self.body);
        if self.oversized {
            shared.metrics.count(Filter::Oversized);
            let limit = shared.cfg.max_body_bytes;
            limited(shared, Kind::Oversized, |note| {
                log::info!(
                    "drone webhook larger than max_body_bytes, passed through unparsed max_body_bytes={limit}{note}"
                )
            });
            return;
        }
        if !self.saw_body_end {
            // The request ended without a complete body (reset): nothing to parse.
            shared.metrics.count(Filter::Unparsable);
            return;
        }
        let view = match webhook::scan_webhook(&body) {
            Ok(v) => v,
            Err(e) => return not_understood(shared, &e),
        };
        // The time of this VM's last tick: the metadata cache counts in minutes, and a clock
        // read is one more host call per webhook.
        let now = shared.tick_ms.get();
        let (repo_id, hash) = (view.repo.id, view.metadata_hash());
        let with_metadata = shared.sent_metadata.borrow().needs(repo_id, hash, now);
        let webhook = match view.into_parsed(with_metadata) {
            Ok(w) => w,
            Err(e) => return not_understood(shared, &e),
        };
        let outcome = DeliveryOutcome::from_status(self.response_status);
        shared.metrics.count(match outcome {
            DeliveryOutcome::Delivered => Filter::Delivered,
            DeliveryOutcome::Refused => Filter::Refused,
            DeliveryOutcome::NotDelivered => Filter::NotDelivered,
        });
        let msg = Observation {
            webhook,
            outcome,
            verified: self.verified,
        }
        .encode();
        let queued = shared
            .queue
            .map(|q| host::enqueue(q, &msg).is_ok())
            .unwrap_or(false);
        if !queued {
            shared.metrics.count(Filter::QueueDropped);
            limited(shared, Kind::Queue, |note| {
                log::warn!("could not hand a webhook to the reconciler (shared queue full){note}")
            });
        } else if with_metadata {
            shared.sent_metadata.borrow_mut().sent(repo_id, hash, now);
        }
    }
}

impl Context for Observer {}

impl HttpContext for Observer {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        // Cheapest rejections first: most requests to a pipeline are not drone's webhooks.
        let req = |name: &str| utf8(host::header(MapType::HttpRequestHeaders, name).as_deref());
        let path = req(":path").unwrap_or_default();
        if !webhook::is_webhook_path(&path, &shared.cfg.webhook_path) {
            return Action::Continue;
        }
        let method = req(":method").unwrap_or_default();
        let build = webhook::is_build_event(&method, req("x-drone-event").as_deref());
        let secret = match shared.cfg.signature_mode {
            SignatureMode::Off => None,
            _ => shared.cfg.webhook_secret.as_ref(),
        };
        let enforce = shared.cfg.signature_mode == SignatureMode::Enforce && secret.is_some();
        // `enforce` covers every request to the webhook path (any method, any or no event
        // header): a PUT, or a POST without `X-Drone-Event: build`, is drone's only if signed.
        // Such a request, once verified, passes through and is not observed.
        if !build && !enforce {
            return Action::Continue;
        }
        self.watching = build;
        if build {
            shared.metrics.count(Filter::Observed);
        }
        if let Some(secret) = secret {
            self.signed = SignedHeaders {
                date: req("date"),
                digest: req("digest"),
            };
            let signature = req("signature");
            match signature::verify_headers(
                secret.as_bytes(),
                self.signed.date.as_deref(),
                self.signed.digest.as_deref(),
                signature.as_deref(),
                host::now_ms(),
                shared.cfg.max_clock_skew_ms,
            ) {
                Ok(()) => {
                    self.digest = Some(DigestStream::default());
                    self.holding_body = enforce;
                }
                Err(e) => {
                    let action = self.signature_failed(&shared, &e.to_string());
                    if self.rejected {
                        return action;
                    }
                }
            }
        }
        if end_of_stream {
            return self.body_complete(&shared);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        if !self.in_body() {
            return Action::Continue;
        }
        if self.holding_body {
            // Envoy buffers while we pause; `body_size` is the total so far. Read it once, at
            // the end, in pieces (the digest needs all of it, our copy only max_body_bytes).
            if !end_of_stream {
                return Action::Pause;
            }
            self.read_held_body(&shared, Some(body_size));
            return self.body_complete(&shared);
        }
        if body_size > 0 && (self.digest.is_some() || (self.watching && !self.oversized)) {
            if let Some(chunk) = host::buffer(BufferType::HttpRequestBody, 0, body_size) {
                self.take_chunk(&chunk, shared.cfg.max_body_bytes);
            }
        }
        if end_of_stream {
            let _ = self.body_complete(&shared);
        }
        Action::Continue
    }

    /// Trailers end the body (HTTP/2, or chunked HTTP/1 with trailers): the last body chunk
    /// came with `end_of_stream` false, so a held body is checked here, before Envoy may send
    /// it on. Without this, a genuine signed `Date`/`Digest`/`Signature` replayed with a forged
    /// body ending in trailers would reach the pipeline unchecked.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        if !self.in_body() {
            return Action::Continue;
        }
        if self.holding_body {
            // Everything Envoy buffered while we paused (none if no data frame came).
            self.read_held_body(&shared, None);
        }
        // Unheld chunks were already taken as they passed.
        self.body_complete(&shared)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.watching {
            self.response_status = host::header(MapType::HttpResponseHeaders, ":status")
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse().ok());
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some(shared) = self.shared.clone() {
            self.finish(&shared);
        }
    }
}
