//! The HTTP filter: watches drone's build webhooks on their way to the pipeline.
//!
//! Pass-through first: the request is never paused for our sake (`Action::Continue`
//! everywhere), the body is copied as it streams past (up to `max_body_bytes`), and nothing is
//! changed. The only exceptions are opt-in: `signature_mode: enforce` (a forged webhook is
//! answered 401 and never reaches the pipeline) and `live_webhook_id` (the header can only be
//! added before the headers leave). When the stream ends, the transition and the pipeline's
//! answer go to the reconciler through the shared queue.

use super::host;
use super::root::Shared;
use crate::core::config::SignatureMode;
use crate::core::metrics::names;
use crate::core::model::{DeliveryOutcome, ParsedWebhook};
use crate::core::observation::Observation;
use crate::core::ratelog::{suppressed_note, LogLimiter};
use crate::core::{signature, webhook};
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

thread_local! {
    static LIMITS: std::cell::RefCell<[LogLimiter; 4]> =
        const { std::cell::RefCell::new([const { LogLimiter::new(10_000) }; 4]) };
}

/// Runs `f` with the suppressed-lines note when a line of this kind may be logged now.
fn limited(kind: Kind, f: impl FnOnce(String)) {
    let now = host::now_ms();
    let allowed = LIMITS.with(|l| {
        l.borrow_mut()
            .get_mut(kind as usize)
            .and_then(|lim| lim.allow(now))
    });
    if let Some(n) = allowed {
        f(suppressed_note(n));
    }
}

#[derive(Default)]
struct SignedHeaders {
    date: Option<String>,
    digest: Option<String>,
    signature: Option<String>,
}

pub struct Observer {
    shared: Option<Rc<Shared>>,
    watching: bool,
    /// Headers are held until the body is read (enforce mode or live webhook ids only).
    holding: bool,
    body: Vec<u8>,
    oversized: bool,
    saw_body_end: bool,
    signed: SignedHeaders,
    parsed: Option<ParsedWebhook>,
    rejected: bool,
    response_status: Option<u16>,
}

fn utf8(v: Option<&[u8]>) -> Option<String> {
    v.and_then(|b| std::str::from_utf8(b).ok())
        .map(str::to_string)
}

impl Observer {
    pub fn new(shared: Option<Rc<Shared>>) -> Self {
        Observer {
            shared,
            watching: false,
            holding: false,
            body: Vec::new(),
            oversized: false,
            saw_body_end: false,
            signed: SignedHeaders::default(),
            parsed: None,
            rejected: false,
            response_status: None,
        }
    }

    /// Called once the whole body has been seen (or there was none).
    fn body_complete(&mut self, shared: &Shared) -> Action {
        self.saw_body_end = true;
        if !self.oversized {
            match webhook::parse_webhook(&self.body) {
                Ok(p) => self.parsed = Some(p),
                Err(e) => limited(Kind::Unparsable, |note| {
                    log::info!(
                        "status-sync: drone webhook not understood ({e}); passed through unchanged{note}"
                    )
                }),
            }
        }
        if shared.cfg.signature_mode != SignatureMode::Off {
            if let Some(secret) = &shared.cfg.webhook_secret {
                let verdict = if self.oversized {
                    Err("body larger than max_body_bytes".to_string())
                } else {
                    signature::verify(
                        secret.as_bytes(),
                        self.signed.date.as_deref(),
                        self.signed.digest.as_deref(),
                        self.signed.signature.as_deref(),
                        &self.body,
                        host::now_ms(),
                        shared.cfg.max_clock_skew_ms,
                    )
                    .map_err(|e| e.to_string())
                };
                if let Err(why) = verdict {
                    shared.metrics.inc(names::WEBHOOKS_SIGNATURE_INVALID, 1);
                    if shared.cfg.signature_mode == SignatureMode::Enforce {
                        shared.metrics.inc(names::WEBHOOKS_REJECTED, 1);
                        limited(Kind::Signature, |note| {
                            log::warn!("status-sync: rejected a webhook with 401: {why}{note}")
                        });
                        self.rejected = true;
                        self.parsed = None;
                        host::send_local_response(401, b"invalid webhook signature\n");
                        return Action::Pause;
                    }
                    limited(Kind::Signature, |note| {
                        log::warn!(
                            "status-sync: webhook signature invalid ({why}); passed (monitor mode){note}"
                        )
                    });
                }
            }
        }
        if self.holding && shared.cfg.live_webhook_id {
            if let Some(p) = &self.parsed {
                let id = signature::webhook_id(p.repo.id, p.number, p.version);
                let _ = host::add_request_header("webhook-id", &id);
            }
        }
        self.body = Vec::new();
        Action::Continue
    }

    fn finish(&mut self, shared: &Shared) {
        if !self.watching || self.rejected {
            return;
        }
        self.watching = false;
        let Some(webhook) = self.parsed.take() else {
            if self.oversized {
                shared.metrics.inc(names::WEBHOOKS_OVERSIZED, 1);
                let limit = shared.cfg.max_body_bytes;
                limited(Kind::Oversized, |note| {
                    log::info!(
                        "status-sync: drone webhook larger than max_body_bytes ({limit}); passed through unparsed{note}"
                    )
                });
            } else {
                shared.metrics.inc(names::WEBHOOKS_UNPARSABLE, 1);
            }
            return;
        };
        let outcome = DeliveryOutcome::from_status(self.response_status);
        shared.metrics.inc(
            match outcome {
                DeliveryOutcome::Delivered => names::WEBHOOKS_DELIVERED,
                DeliveryOutcome::Refused => names::WEBHOOKS_REFUSED,
                DeliveryOutcome::NotDelivered => names::WEBHOOKS_NOT_DELIVERED,
            },
            1,
        );
        let msg = Observation { webhook, outcome }.encode();
        let queued = shared
            .queue
            .map(|q| host::enqueue(q, &msg).is_ok())
            .unwrap_or(false);
        if !queued {
            shared.metrics.inc(names::QUEUE_DROPPED, 1);
            limited(Kind::Queue, |note| {
                log::warn!(
                    "status-sync: could not hand a webhook to the reconciler (shared queue){note}"
                )
            });
        }
    }
}

impl Context for Observer {}

impl HttpContext for Observer {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let headers = host::header_pairs(MapType::HttpRequestHeaders);
        let method = utf8(host::first(&headers, ":method")).unwrap_or_default();
        let path = utf8(host::first(&headers, ":path")).unwrap_or_default();
        let event = utf8(host::first(&headers, "x-drone-event"));
        if !webhook::is_build_webhook(&method, &path, event.as_deref(), &shared.cfg.webhook_path) {
            return Action::Continue;
        }
        self.watching = true;
        shared.metrics.inc(names::WEBHOOKS_OBSERVED, 1);
        if shared.cfg.signature_mode != SignatureMode::Off {
            self.signed = SignedHeaders {
                date: utf8(host::first(&headers, "date")),
                digest: utf8(host::first(&headers, "digest")),
                signature: utf8(host::first(&headers, "signature")),
            };
        }
        self.holding =
            shared.cfg.signature_mode == SignatureMode::Enforce || shared.cfg.live_webhook_id;
        if end_of_stream {
            return self.body_complete(&shared);
        }
        if self.holding {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        if !self.watching || self.saw_body_end {
            return Action::Continue;
        }
        let limit = shared.cfg.max_body_bytes;
        if self.holding {
            // Envoy buffers while we pause; `body_size` is the total so far.
            if body_size > limit {
                self.oversized = true;
            }
            if !end_of_stream {
                return if self.oversized {
                    self.body_complete(&shared)
                } else {
                    Action::Pause
                };
            }
            if !self.oversized && body_size > 0 {
                self.body =
                    host::buffer(BufferType::HttpRequestBody, 0, body_size).unwrap_or_default();
            }
            return self.body_complete(&shared);
        }
        if !self.oversized && body_size > 0 {
            if self.body.len().saturating_add(body_size) > limit {
                self.oversized = true;
                self.body = Vec::new();
            } else if let Some(chunk) = host::buffer(BufferType::HttpRequestBody, 0, body_size) {
                self.body.extend_from_slice(&chunk);
            }
        }
        if end_of_stream {
            let _ = self.body_complete(&shared);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.watching {
            let headers = host::header_pairs(MapType::HttpResponseHeaders);
            self.response_status = host::first(&headers, ":status")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse().ok());
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some(shared) = self.shared.clone() {
            if self.watching && !self.saw_body_end {
                // The request ended without a complete body (reset): nothing to parse.
                self.parsed = None;
            }
            self.finish(&shared);
        }
    }
}
