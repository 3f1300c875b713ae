//! One request through the HTTP filter, as a state machine: the shell feeds it what Envoy
//! reports (request headers, body bytes, the end of the body, trailers, the response status,
//! the end of the stream) and performs what it answers (continue, pause, answer 401, observe).
//! The signature policy lives here, so every path through a request runs natively in tests.
//!
//! Pass-through first: the only decisions other than `Continue` are `Pause`, for the body of a
//! correctly signed request in `enforce` mode until its `Digest` is checked, and `Reject`, a
//! 401 in `enforce` mode for missing or forged signature headers (at the request headers: the
//! HMAC covers only `Date` and `Digest`) or a body that does not match its `Digest` (at the end
//! of the body or at the trailers, whichever ends the request). Headers are never held: Envoy
//! turns a paused `on_request_headers` into StopAllIteration, after which the body callbacks
//! would not run.

use super::body_budget::{BodyBudget, Hold};
use super::config::{Config, SignatureMode};
use super::metadata::SentMetadata;
use super::model::{DeliveryOutcome, ParseError};
use super::observation::{Observation, QueueKey};
use super::signature::{self, DigestStream};
use super::webhook;

/// The request headers the filter looks at (`None`: absent or not UTF-8).
#[derive(Clone, Copy, Debug, Default)]
pub struct Headers<'a> {
    pub path: &'a str,
    pub method: &'a str,
    pub drone_event: Option<&'a str>,
    pub date: Option<&'a str>,
    pub digest: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// What the shell does with the stream after a callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let the request go on.
    Continue,
    /// Hold the body (Envoy buffers it) until the end of the body or the trailers.
    Pause,
    /// A signature check failed in `monitor` mode: count it, log `why`, let the request go on.
    PassUnverified { why: String },
    /// A signature check failed in `enforce` mode: count it, log `why`, answer
    /// [`REJECT_STATUS`] with [`REJECT_BODY`] and pause (as Envoy requires after a local reply).
    Reject { why: String },
    /// `enforce` holds a body for its digest check, and holding more of it would pass the
    /// worker's `max_body_bytes_in_flight`: it can neither be held nor let through unchecked.
    /// Count it, answer [`BUSY_STATUS`] with [`BUSY_BODY`] and pause.
    Busy,
}

/// The status of the local reply to a request `enforce` refuses.
pub const REJECT_STATUS: u32 = 401;
/// Its body: says nothing about which check failed.
pub const REJECT_BODY: &[u8] = b"invalid webhook signature\n";

/// The status of the local reply to a request `enforce` cannot check because the worker holds
/// `max_body_bytes_in_flight` already: the request was not refused, it may be sent again.
pub const BUSY_STATUS: u32 = 503;
/// Its body.
pub const BUSY_BODY: &[u8] = b"webhook not checked: too many request bodies in flight\n";

/// What the request headers decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadersStep {
    /// A build webhook (`POST`, `X-Drone-Event: build`, to exactly `webhook_path`): count it as
    /// observed, whatever the signature checks decide.
    pub observed: bool,
    pub decision: Decision,
}

/// Which body bytes the machine needs from the shell before [`Request::on_body`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// None: the body is not ours to look at (or this chunk is empty).
    Nothing,
    /// This chunk (`body_size` bytes at offset 0 of the body buffer), passed to [`Request::data`].
    Chunk(usize),
    /// Everything Envoy buffered while we paused, from offset 0, in pieces passed to
    /// [`Request::data`]; `Some(total)` when Envoy told us, otherwise until the buffer ends.
    Held(Option<usize>),
}

/// What the end of the stream leaves for the shell.
#[derive(Debug, PartialEq, Eq)]
pub enum Finish {
    /// Not a build webhook, rejected, or already finished.
    Nothing,
    /// A build webhook larger than `max_body_bytes`: passed through unparsed; count, log.
    Oversized,
    /// A build webhook whose body did not fit in the worker's `max_body_bytes_in_flight`
    /// with the other requests' bodies: passed through unobserved; count, log.
    OverBudget,
    /// A build webhook whose body never ended (reset): nothing to parse; count as unparsable.
    Incomplete,
    /// A complete build webhook: parse it and hand it to the reconciler.
    Observe(Observe),
}

/// A complete build webhook and how the pipeline answered it, made only by the request state
/// machine ([`Request::finish`]): whether its signature verified decides evidence or hint
/// (its queue message is tagged as evidence), so no other code may build one or change it.
/// The fields are private; the compiler refuses a verified `Observe` made elsewhere:
///
/// ```compile_fail,E0451
/// use status_sync::core::request::Observe;
///
/// fn forge(body: Vec<u8>) -> Observe {
///     // error[E0451]: fields `body`, `response_status` and `verified` of struct `Observe`
///     // are private
///     Observe {
///         body,
///         response_status: Some(200),
///         verified: true,
///     }
/// }
/// ```
///
/// and a hint's made evidence:
///
/// ```compile_fail,E0616
/// use status_sync::core::request::Observe;
///
/// fn promote(mut hint: Observe) -> Observe {
///     // error[E0616]: field `verified` of struct `Observe` is private
///     hint.verified = true;
///     hint
/// }
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct Observe {
    body: Vec<u8>,
    response_status: Option<u16>,
    /// Signature headers verified and the body's digest matched: evidence, not a hint.
    verified: bool,
}

/// A queue message ready to send, and what to record once it is sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub bytes: Vec<u8>,
    pub outcome: DeliveryOutcome,
    /// `(repo_id, metadata hash)` to mark as sent in [`SentMetadata`] once the message is
    /// queued: it carried the repository and system objects.
    pub sent_metadata: Option<(u64, u64)>,
}

impl Observe {
    /// Whether the signature headers verified and the body's digest matched (evidence).
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// Parses the body into the reconciler's queue message. The repository and system objects
    /// go along only with a verified webhook, and only when this VM has not sent them recently
    /// (`sent`, at `now_ms`): the reconciler takes them from evidence alone, so an unverified
    /// webhook's copy would be dead weight in the queue, and marking them sent on its word
    /// would hold back the next verified webhook's (real) objects. Parsing
    /// waits until the end of the stream because forwarding the webhook does not need it, so
    /// it adds nothing to the pipeline's latency.
    ///
    /// A verified webhook's message is tagged with `key` (the configuration's [`QueueKey`]):
    /// the reconciler believes no other claim of verification.
    pub fn into_message(
        self,
        sent: &SentMetadata,
        now_ms: u64,
        key: Option<&QueueKey>,
    ) -> Result<Message, ParseError> {
        let view = webhook::scan_webhook(&self.body)?;
        let repo_id = view.repo.id;
        // Only a verified webhook may carry the objects, so only its are hashed.
        let sent_metadata = self
            .verified
            .then(|| (repo_id, view.metadata_hash()))
            .filter(|&(id, hash)| sent.needs(id, hash, now_ms));
        let webhook = view.into_parsed(sent_metadata.is_some())?;
        let outcome = DeliveryOutcome::from_status(self.response_status);
        let bytes = Observation::message(&webhook, outcome, key.filter(|_| self.verified));
        Ok(Message {
            bytes,
            outcome,
            sent_metadata,
        })
    }
}

/// Our copy of a build webhook's body, up to `max_body_bytes`, its capacity reserved in the
/// worker's [`BodyBudget`] before it grows.
struct Copy {
    bytes: Vec<u8>,
    oversized: bool,
    /// The worker's budget had no room for the next bytes: given up, not observed.
    over_budget: bool,
    /// `max_body_bytes`.
    limit: usize,
}

impl Copy {
    fn wants(&self) -> bool {
        !self.oversized && !self.over_budget
    }

    /// [`Copy::take`] of a chunk the caller owns: the first chunk becomes the copy itself (no
    /// second allocation and copy of the body), reserved in the budget exactly as `take` would
    /// (its size; `take` grows an empty copy to exactly what the chunk needs).
    fn take_owned(&mut self, chunk: Vec<u8>, hold: &mut Hold, buffered: usize) {
        if self.bytes.capacity() == 0
            && self.wants()
            && chunk.capacity() <= self.limit
            && hold.resize(chunk.capacity().max(buffered))
        {
            self.bytes = chunk;
            return;
        }
        self.take(&chunk, hold, buffered);
    }

    /// Appends `chunk`. `hold` is the request's share of the budget, `buffered` what of it
    /// Envoy's buffer of a held body takes (the share is the larger of the two).
    fn take(&mut self, chunk: &[u8], hold: &mut Hold, buffered: usize) {
        if !self.wants() {
            return;
        }
        let needed = self.bytes.len().saturating_add(chunk.len());
        if needed > self.limit {
            self.oversized = true;
            self.bytes = Vec::new();
            hold.resize(buffered);
            return;
        }
        // Rule: the budget is asked for more only when the chunk does not fit in the copy's
        // capacity, and a body whose bytes fit in the budget is never given up for the copy's
        // slack: the copy grows as `Vec` would (doubling, so a body in many small chunks is
        // not copied over and over), never past `max_body_bytes`, and when the budget has no
        // room for that, to exactly what the body needs so far.
        if needed > self.bytes.capacity() {
            let doubled = needed
                .max(self.bytes.capacity().saturating_mul(2))
                .min(self.limit);
            let capacity = if hold.resize(doubled.max(buffered)) {
                doubled
            } else if hold.resize(needed.max(buffered)) {
                needed
            } else {
                self.over_budget = true;
                self.bytes = Vec::new();
                hold.resize(buffered);
                return;
            };
            self.bytes
                .reserve_exact(capacity.saturating_sub(self.bytes.len()));
        }
        self.bytes.extend_from_slice(chunk);
    }
}

/// The body's digest as it streams past, and the `Digest` header it must match.
struct Check {
    digest: DigestStream,
    expected: Option<String>,
}

enum State {
    /// Not ours (another path; or, outside `enforce`, not a build webhook), or finished.
    Pass,
    /// Answered 401: nothing more to do, nothing to observe.
    Rejected,
    /// Reading the body: copying it (a build webhook), checking its digest (signature headers
    /// verified), or both. `held`: `enforce` holds it until the digest is checked (so a
    /// digest mismatch is a 401 exactly when the body is held).
    Body {
        copy: Option<Copy>,
        check: Option<Check>,
        held: bool,
    },
    /// The body ended (or there was none); `verified` when its digest matched verified
    /// signature headers.
    Complete { copy: Option<Copy>, verified: bool },
}

/// One request's state. Created per request; the configuration is passed to each event.
pub struct Request {
    state: State,
    response_status: Option<u16>,
    /// This request's share of the worker's body bytes; given back when the request ends,
    /// and when it is dropped (a stream destroyed without an end).
    hold: Hold,
    /// Bytes Envoy buffers because this filter holds the body (`enforce`): the share covers
    /// them until the body is let go.
    buffered: usize,
}

impl Request {
    /// A request whose body bytes are counted in `budget`, the worker's.
    pub fn new(budget: &BodyBudget) -> Self {
        Request {
            state: State::Pass,
            response_status: None,
            hold: budget.hold(),
            buffered: 0,
        }
    }

    /// Bytes this request makes the worker hold now (its share of the budget).
    pub fn held_bytes(&self) -> usize {
        self.hold.bytes()
    }

    /// Whether the signature headers (`Date`, `Digest`, `Signature`) matter under `cfg`: the
    /// shell reads them only then (three host calls fewer per webhook otherwise).
    pub fn checks_signatures(cfg: &Config) -> bool {
        cfg.signature_mode != SignatureMode::Off && cfg.webhook_secret.is_some()
    }

    /// Whether a request to `path` concerns the filter at all under `cfg`: exactly
    /// `webhook_path` (observed, maybe checked), or, in `enforce`, any spelling the path
    /// policy covers (checked: `webhook::is_webhook_path`). The shell reads no other header
    /// otherwise, and outside `enforce` the policy (which decodes the path) never runs.
    pub fn concerns(cfg: &Config, path: &str) -> bool {
        webhook::is_delivery_path(path, &cfg.webhook_path)
            || (cfg.signature_mode == SignatureMode::Enforce
                && Self::checks_signatures(cfg)
                && webhook::is_webhook_path(path, &cfg.webhook_path))
    }

    /// The request headers. `now_ms` is the host's clock (the `Date` must be within
    /// `max_clock_skew_ms`; unused unless [`Request::checks_signatures`], so the shell reads
    /// the clock only then); `end_of_stream`: the request has no body.
    pub fn on_headers(
        &mut self,
        cfg: &Config,
        h: &Headers<'_>,
        now_ms: u64,
        end_of_stream: bool,
    ) -> HeadersStep {
        let pass = HeadersStep {
            observed: false,
            decision: Decision::Continue,
        };
        // Only the exact `webhook_path` is evidence of delivery (see
        // `webhook::is_delivery_path`): the same signed bytes replayed to `/hook/x` are not a
        // delivery or refusal of their transition, so they are never observed, in any mode.
        let exact = webhook::is_delivery_path(h.path, &cfg.webhook_path);
        let build = exact && webhook::is_build_event(h.method, h.drone_event);
        let secret = cfg
            .webhook_secret
            .as_ref()
            .filter(|_| Self::checks_signatures(cfg));
        let enforce = cfg.signature_mode == SignatureMode::Enforce && secret.is_some();
        // `enforce` covers every request a framework could route to the webhook's handler
        // (`webhook::is_webhook_path`: any case, `;` parameters, suffixes, sub-paths), with any
        // method and any or no event header: a PUT, a POST without `X-Drone-Event: build`, or
        // a POST to `/HOOK` is drone's only if signed. Such a request, once verified, passes
        // through and is not observed.
        let covered = enforce && (exact || webhook::is_webhook_path(h.path, &cfg.webhook_path));
        if !build && !covered {
            return pass;
        }
        let copy = build.then(|| Copy {
            bytes: Vec::new(),
            oversized: false,
            over_budget: false,
            limit: cfg.max_body_bytes,
        });
        let mut check = None;
        let mut decision = Decision::Continue;
        if let Some(secret) = secret {
            match signature::verify_headers(
                secret.as_bytes(),
                h.date,
                h.digest,
                h.signature,
                now_ms,
                cfg.max_clock_skew_ms,
            ) {
                Ok(()) => {
                    check = Some(Check {
                        digest: DigestStream::default(),
                        expected: h.digest.map(str::to_string),
                    })
                }
                Err(e) => {
                    decision = self.signature_failed(enforce, e.to_string());
                    if enforce {
                        return HeadersStep {
                            observed: build,
                            decision,
                        };
                    }
                }
            }
        }
        if secret.is_some() && check.is_none() {
            // Unsigned or forged (monitor): its copy comes from the unverified half of the
            // worker's body budget, so such bodies cannot crowd out a genuine webhook's.
            self.hold.unverified();
        }
        let held = enforce && check.is_some();
        self.state = State::Body { copy, check, held };
        if end_of_stream {
            // A monitor-mode failure of the headers leaves no digest to check, so the end of
            // the body cannot add a second one.
            let end = self.body_complete();
            if decision == Decision::Continue {
                decision = end;
            }
        }
        HeadersStep {
            observed: build,
            decision,
        }
    }

    /// Which bytes of a body callback the machine needs (see [`Read`]).
    pub fn body_read(&self, body_size: usize, end_of_stream: bool) -> Read {
        match &self.state {
            State::Body { held: true, .. } if end_of_stream => Read::Held(Some(body_size)),
            State::Body { held: true, .. } => Read::Nothing,
            State::Body { copy, check, .. } => {
                let wants = check.is_some() || copy.as_ref().is_some_and(Copy::wants);
                if wants && body_size > 0 {
                    Read::Chunk(body_size)
                } else {
                    Read::Nothing
                }
            }
            _ => Read::Nothing,
        }
    }

    /// Bytes of the body, in order: fed to the digest, and copied (up to `max_body_bytes`,
    /// and while the worker's `max_body_bytes_in_flight` has room).
    pub fn data(&mut self, chunk: &[u8]) {
        if let State::Body { copy, check, .. } = &mut self.state {
            if let Some(c) = check.as_mut() {
                c.digest.update(chunk);
            }
            if let Some(copy) = copy.as_mut() {
                copy.take(chunk, &mut self.hold, self.buffered);
            }
        }
    }

    /// [`Request::data`] of bytes the caller hands over: the body's first chunk is kept as
    /// the copy without copying it again.
    pub fn data_owned(&mut self, chunk: Vec<u8>) {
        if let State::Body { copy, check, .. } = &mut self.state {
            if let Some(c) = check.as_mut() {
                c.digest.update(&chunk);
            }
            if let Some(copy) = copy.as_mut() {
                copy.take_owned(chunk, &mut self.hold, self.buffered);
            }
        }
    }

    /// A body callback (`body_size` as Envoy reports it), after the bytes
    /// [`Request::body_read`] asked for were given to [`Request::data`].
    pub fn on_body(&mut self, body_size: usize, end_of_stream: bool) -> Decision {
        match &self.state {
            State::Body { held, copy, .. } if !end_of_stream => {
                if !*held {
                    return Decision::Continue;
                }
                // Envoy buffers while we pause; `body_size` is the total so far. It is read
                // once, at the end, in pieces. Those bytes are held because of us: they take
                // the request's share of the budget, and when they do not fit the body can be
                // neither held (the cap) nor let through unchecked (`enforce`).
                let copied = copy.as_ref().map_or(0, |c| c.bytes.capacity());
                if !self.hold.resize(body_size.max(copied)) {
                    self.state = State::Rejected;
                    self.let_go();
                    return Decision::Busy;
                }
                self.buffered = body_size;
                Decision::Pause
            }
            State::Body { .. } => self.body_complete(),
            _ => Decision::Continue,
        }
    }

    /// Which bytes the trailers need read first: a held body (none if no data frame came).
    /// Unheld chunks were already taken as they passed.
    pub fn trailers_read(&self) -> Read {
        match &self.state {
            State::Body { held: true, .. } => Read::Held(None),
            _ => Read::Nothing,
        }
    }

    /// Trailers end the body (HTTP/2, or chunked HTTP/1 with trailers): the last body chunk
    /// came with `end_of_stream` false, so a held body is checked here, before Envoy may send
    /// it on. Without this, a genuine signed `Date`/`Digest`/`Signature` replayed with a forged
    /// body ending in trailers would reach the pipeline unchecked.
    pub fn on_trailers(&mut self) -> Decision {
        match &self.state {
            State::Body { .. } => self.body_complete(),
            _ => Decision::Continue,
        }
    }

    /// The response status is needed: this is a build webhook being observed.
    pub fn wants_response_status(&self) -> bool {
        matches!(
            &self.state,
            State::Body { copy: Some(_), .. } | State::Complete { copy: Some(_), .. }
        )
    }

    /// The pipeline's (or Envoy's) response status, if it parsed.
    pub fn on_response_status(&mut self, status: Option<u16>) {
        if self.wants_response_status() {
            self.response_status = status;
        }
    }

    /// The end of the stream (`on_log`): what there is to observe. Once only; later calls
    /// return [`Finish::Nothing`].
    pub fn finish(&mut self) -> Finish {
        let state = std::mem::replace(&mut self.state, State::Pass);
        // The request is over: whatever it held goes back (the observed body is the caller's
        // now, for as long as it takes to parse and queue it).
        self.let_go();
        let (copy, complete) = match state {
            State::Body { copy: Some(c), .. } => (c, None),
            State::Complete {
                copy: Some(c),
                verified,
            } => (c, Some(verified)),
            other => {
                self.state = other;
                return Finish::Nothing;
            }
        };
        if copy.oversized {
            return Finish::Oversized;
        }
        if copy.over_budget {
            return Finish::OverBudget;
        }
        match complete {
            // The request ended without a complete body (reset): nothing to parse.
            None => Finish::Incomplete,
            Some(verified) => Finish::Observe(Observe {
                body: copy.bytes,
                response_status: self.response_status,
                verified,
            }),
        }
    }

    /// The whole body has been seen (or there was none): check its digest.
    fn body_complete(&mut self) -> Decision {
        let State::Body { copy, check, held } = std::mem::replace(&mut self.state, State::Pass)
        else {
            return Decision::Continue;
        };
        // Envoy's buffer is let go (or refused): only our copy stays held.
        self.buffered = 0;
        self.hold
            .resize(copy.as_ref().map_or(0, |c| c.bytes.capacity()));
        let mut verified = false;
        let mut decision = Decision::Continue;
        if let Some(Check { digest, expected }) = check {
            match digest.check(expected.as_deref()) {
                Ok(()) => verified = true,
                Err(e) => {
                    decision = self.signature_failed(held, e.to_string());
                    if held {
                        return decision;
                    }
                }
            }
        }
        self.state = State::Complete { copy, verified };
        decision
    }

    /// Gives back every byte this request held.
    fn let_go(&mut self) {
        self.buffered = 0;
        self.hold.resize(0);
    }

    fn signature_failed(&mut self, enforce: bool, why: String) -> Decision {
        if enforce {
            self.state = State::Rejected;
            self.let_go();
            Decision::Reject { why }
        } else {
            Decision::PassUnverified { why }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::BuildStatus;

    pub(super) const SECRET: &str = "unit-test-webhook-secret";
    pub(super) const NOW: u64 = 1_717_236_000_000;

    pub(super) fn body() -> Vec<u8> {
        drone_model::fixtures::text("webhook-build-updated-running.json")
            .as_bytes()
            .to_vec()
    }

    /// `mode`: `None` = no secret at all; otherwise `signature_mode` with a secret.
    fn cfg(mode: Option<&str>, max_body_bytes: usize) -> Config {
        let secret = match mode {
            None => String::new(),
            Some(m) => format!(r#","webhook_secret":"{SECRET}","signature_mode":"{m}""#),
        };
        let json = format!(
            r#"{{"pipeline_cluster":"p","drone_cluster":"d","drone_token":"t","max_body_bytes":{max_body_bytes}{secret}}}"#
        );
        Config::parse(json.as_bytes(), &|_| None).unwrap()
    }

    fn qkey() -> QueueKey {
        QueueKey::derive(SECRET.as_bytes())
    }

    /// A budget no test of a single request reaches.
    fn roomy() -> BodyBudget {
        BodyBudget::new(1 << 30)
    }

    fn off() -> Config {
        cfg(None, 262_144)
    }
    fn monitor() -> Config {
        cfg(Some("monitor"), 262_144)
    }
    fn enforce() -> Config {
        cfg(Some("enforce"), 262_144)
    }

    /// Envoy's side of one request: which signature headers it carries.
    struct Req {
        method: &'static str,
        path: &'static str,
        event: Option<&'static str>,
        signed: Option<signature::SignedHeaders>,
    }

    fn build_webhook(signed_for: Option<&[u8]>) -> Req {
        Req {
            method: "POST",
            path: "/hook",
            event: Some("build"),
            signed: signed_for.map(|b| signature::sign(SECRET.as_bytes(), b, NOW)),
        }
    }

    impl Req {
        fn headers(&self) -> Headers<'_> {
            Headers {
                path: self.path,
                method: self.method,
                drone_event: self.event,
                date: self.signed.as_ref().map(|s| s.date.as_str()),
                digest: self.signed.as_ref().map(|s| s.digest.as_str()),
                signature: self.signed.as_ref().map(|s| s.signature.as_str()),
            }
        }
    }

    /// The shell, minus Envoy: delivers `body` in `chunks` pieces, optionally ending with
    /// trailers, the way Envoy calls the filter (a held body is re-read from the buffer).
    /// Returns every decision taken, in order, and whether the request was observed.
    struct Run {
        decisions: Vec<Decision>,
        observed: bool,
        req: Request,
    }

    fn run(cfg: &Config, r: &Req, body: &[u8], chunks: usize, trailers: bool) -> Run {
        let mut req = Request::new(&roomy());
        let h = req.on_headers(cfg, &r.headers(), NOW, body.is_empty() && !trailers);
        let mut decisions = vec![h.decision.clone()];
        let stopped = |d: &[Decision]| d.iter().any(|d| matches!(d, Decision::Reject { .. }));
        let mut buffered: Vec<u8> = Vec::new();
        if !body.is_empty() && !stopped(&decisions) {
            let size = body.len().div_ceil(chunks.max(1));
            let pieces: Vec<&[u8]> = body.chunks(size).collect();
            let n = pieces.len();
            for (i, piece) in pieces.into_iter().enumerate() {
                let end = i + 1 == n && !trailers;
                // Envoy keeps what a paused filter has not let through.
                if !matches!(decisions.last(), Some(Decision::Pause)) {
                    buffered.clear();
                }
                buffered.extend_from_slice(piece);
                match req.body_read(buffered.len(), end) {
                    Read::Nothing => {}
                    Read::Chunk(n) => {
                        assert_eq!(n, buffered.len());
                        // As the shell does: the chunk is handed over.
                        req.data_owned(buffered.clone());
                    }
                    Read::Held(Some(n)) => {
                        assert_eq!(n, buffered.len());
                        req.data(&buffered);
                    }
                    Read::Held(None) => panic!("the body callback always knows the size"),
                }
                decisions.push(req.on_body(buffered.len(), end));
                if stopped(&decisions) {
                    break;
                }
            }
        }
        if trailers && !stopped(&decisions) {
            if !matches!(decisions.last(), Some(Decision::Pause)) {
                buffered.clear();
            }
            match req.trailers_read() {
                Read::Nothing => {}
                Read::Held(None) => req.data(&buffered),
                other => panic!("trailers read {other:?}"),
            }
            decisions.push(req.on_trailers());
        }
        Run {
            decisions,
            observed: h.observed,
            req,
        }
    }

    impl Run {
        fn rejected(&self) -> bool {
            self.decisions
                .iter()
                .any(|d| matches!(d, Decision::Reject { .. }))
        }
        fn unverified(&self) -> usize {
            self.decisions
                .iter()
                .filter(|d| matches!(d, Decision::PassUnverified { .. }))
                .count()
        }
        fn paused(&self) -> bool {
            self.decisions.contains(&Decision::Pause)
        }
        fn finish(mut self, status: Option<u16>) -> Finish {
            self.req.on_response_status(status);
            let f = self.req.finish();
            assert_eq!(self.req.finish(), Finish::Nothing, "finish twice");
            f
        }
    }

    fn observed(f: Finish) -> Observe {
        match f {
            Finish::Observe(o) => o,
            other => panic!("want Observe, got {other:?}"),
        }
    }

    /// A genuine signed build webhook through `cfg`, its body in each `(chunks, trailers)`
    /// split: `during` checks the run's decisions, then the pipeline answers `status` and the
    /// request must be observed with the whole body, `verified` or not.
    fn genuine_in_splits(
        cfg: &Config,
        splits: &[(usize, bool)],
        status: u16,
        verified: bool,
        during: impl Fn(&Run, usize, bool),
    ) {
        let b = body();
        for &(chunks, trailers) in splits {
            let r = run(cfg, &build_webhook(Some(&b)), &b, chunks, trailers);
            during(&r, chunks, trailers);
            let o = observed(r.finish(Some(status)));
            assert_eq!(o.body, b);
            assert_eq!(o.response_status, Some(status));
            assert_eq!(o.verified(), verified, "{chunks} {trailers}");
        }
    }

    #[test]
    fn off_passes_and_observes_unverified() {
        let splits: Vec<(usize, bool)> = [1, 3, 50]
            .into_iter()
            .flat_map(|chunks| [(chunks, false), (chunks, true)])
            .collect();
        // Off: never evidence.
        genuine_in_splits(&off(), &splits, 200, false, |r, _, _| {
            assert!(r.observed);
            assert!(r.decisions.iter().all(|d| *d == Decision::Continue));
        });
    }

    #[test]
    fn monitor_verifies_a_genuine_webhook_without_holding_it() {
        let splits = [(1, false), (4, false), (4, true)];
        genuine_in_splits(&monitor(), &splits, 204, true, |r, _, _| {
            assert!(!r.paused(), "monitor never holds");
            assert_eq!(r.unverified(), 0);
        });
    }

    #[test]
    fn monitor_reports_forgeries_and_passes_them_unverified() {
        let b = body();
        // Unsigned: reported at the headers.
        let r = run(&monitor(), &build_webhook(None), &b, 2, false);
        assert_eq!(r.unverified(), 1);
        assert!(!r.rejected() && !r.paused());
        assert!(!observed(r.finish(Some(200))).verified());
        // Genuine headers, another body: reported at the end of the body, or at the trailers.
        for trailers in [false, true] {
            let r = run(&monitor(), &build_webhook(Some(b"{}")), &b, 3, trailers);
            assert_eq!(r.unverified(), 1);
            assert!(matches!(
                r.decisions.last(),
                Some(Decision::PassUnverified { .. })
            ));
            assert!(!observed(r.finish(Some(200))).verified());
        }
        // Monitor ignores requests that are not build webhooks.
        let mut put = build_webhook(None);
        put.method = "PUT";
        let r = run(&monitor(), &put, &b, 1, false);
        assert!(!r.observed && r.decisions == [Decision::Continue, Decision::Continue]);
        assert_eq!(r.finish(Some(200)), Finish::Nothing);
    }

    #[test]
    fn enforce_holds_a_genuine_body_until_its_end_or_trailers() {
        let splits = [(1, false), (5, false), (5, true), (1, true)];
        genuine_in_splits(&enforce(), &splits, 200, true, |r, chunks, trailers| {
            assert!(!r.rejected());
            // Paused on every chunk but the last, then released.
            assert_eq!(r.decisions.first(), Some(&Decision::Continue));
            assert_eq!(r.decisions.last(), Some(&Decision::Continue));
            assert_eq!(r.paused(), chunks > 1 || trailers, "{chunks} {trailers}");
        });
    }

    #[test]
    fn enforce_rejects_unsigned_and_forged_at_the_headers() {
        let b = body();
        let mut forged = build_webhook(Some(&b));
        if let Some(s) = forged.signed.as_mut() {
            s.signature = s.signature.replace("signature=\"", "signature=\"AAAA");
        }
        let mut stale = build_webhook(None);
        stale.signed = Some(signature::sign(SECRET.as_bytes(), &b, NOW - 3_600_000));
        for r in [build_webhook(None), forged, stale] {
            let run = run(&enforce(), &r, &b, 2, false);
            assert!(run.observed, "counted as observed before the check");
            assert_eq!(run.decisions.len(), 1, "nothing after the 401");
            assert!(run.rejected());
            assert!(!run.req.wants_response_status());
            assert_eq!(
                run.finish(Some(401)),
                Finish::Nothing,
                "rejected: not observed"
            );
        }
    }

    #[test]
    fn enforce_rejects_a_forged_body_at_its_end_or_at_the_trailers() {
        let genuine = body();
        let forged = b"{\"event\":\"build\",\"action\":\"updated\"}".to_vec();
        for (chunks, trailers) in [(1, false), (3, false), (3, true), (1, true)] {
            let r = run(
                &enforce(),
                &build_webhook(Some(&genuine)),
                &forged,
                chunks,
                trailers,
            );
            assert!(r.rejected(), "{chunks} {trailers}");
            assert!(matches!(r.decisions.last(), Some(Decision::Reject { .. })));
            // Before the check, the body was only ever held.
            let before = &r.decisions[1..r.decisions.len() - 1];
            assert!(before.iter().all(|d| *d == Decision::Pause), "{before:?}");
            assert_eq!(r.finish(None), Finish::Nothing);
        }
        // No body at all, only trailers: the empty body is checked too.
        let r = run(&enforce(), &build_webhook(Some(&genuine)), b"", 1, true);
        assert!(r.rejected());
        // No body, no trailers: checked at the headers' end of stream.
        let r = run(&enforce(), &build_webhook(Some(&genuine)), b"", 1, false);
        assert_eq!(r.decisions.len(), 1);
        assert!(r.rejected());
    }

    #[test]
    fn enforce_covers_every_request_to_the_path_and_observes_only_build_webhooks() {
        let b = body();
        for (method, event) in [
            ("PUT", Some("build")),
            ("POST", None),
            ("POST", Some("build.x")),
            ("GET", None),
        ] {
            let unsigned = Req {
                method,
                path: "/hook/sub?x=1",
                event,
                signed: None,
            };
            let r = run(&enforce(), &unsigned, &b, 1, false);
            assert!(!r.observed && r.rejected(), "{method} {event:?}");
            let signed = Req {
                signed: Some(signature::sign(SECRET.as_bytes(), &b, NOW)),
                ..unsigned
            };
            let r = run(&enforce(), &signed, &b, 2, true);
            assert!(!r.observed && !r.rejected(), "{method} {event:?}");
            assert!(!r.req.wants_response_status());
            assert_eq!(r.finish(Some(200)), Finish::Nothing, "not a build webhook");
        }
        // Outside the path nothing is checked, in any mode.
        for cfg in [off(), monitor(), enforce()] {
            let r = Req {
                method: "POST",
                path: "/hooks",
                event: Some("build"),
                signed: None,
            };
            let run = run(&cfg, &r, &b, 1, false);
            assert!(!run.observed);
            assert!(run.decisions.iter().all(|d| *d == Decision::Continue));
            assert_eq!(run.req.body_read(10, true), Read::Nothing);
            assert_eq!(run.finish(Some(200)), Finish::Nothing);
        }
    }

    /// Issue 20, finding 3: an unsigned request to any spelling a framework routes to the
    /// webhook's handler is refused in `enforce`, whatever its method.
    #[test]
    fn enforce_rejects_unsigned_requests_to_every_spelling_of_the_path() {
        let b = body();
        for path in [
            "/HOOK",
            "/Hook",
            "/hook;jsessionid=1",
            "/hook.json",
            "/hook%20",
            "/hook/x",
            "/hook?x=1",
        ] {
            for method in ["POST", "PUT"] {
                let r = Req {
                    method,
                    path,
                    event: Some("build"),
                    signed: None,
                };
                let run = run(&enforce(), &r, &b, 1, false);
                assert!(run.rejected(), "{method} {path}: unsigned, must be refused");
                assert!(!run.observed, "{method} {path}: not the delivery path");
            }
        }
    }

    /// Issue 20, finding 4: the genuine signed webhook replayed within the clock skew to
    /// another spelling of the path passes `enforce` (it is signed), but is no evidence of
    /// delivery or refusal: nothing is observed, whatever the pipeline answers, in any mode.
    #[test]
    fn a_signed_webhook_replayed_to_another_path_is_not_observed() {
        let b = body();
        for path in ["/hook/x", "/hook?x=1", "/HOOK", "/hook.json", "/hook/"] {
            for cfg in [off(), monitor(), enforce()] {
                let r = Req {
                    path,
                    ..build_webhook(Some(&b))
                };
                let run = run(&cfg, &r, &b, 2, false);
                assert!(!run.rejected(), "{path}: signed");
                assert!(!run.observed, "{path}: counted as observed");
                assert!(!run.req.wants_response_status(), "{path}");
                assert_eq!(run.finish(Some(404)), Finish::Nothing, "{path}");
            }
        }
        // The exact path still is evidence.
        let r = run(&enforce(), &build_webhook(Some(&b)), &b, 2, false);
        assert!(observed(r.finish(Some(404))).verified());
    }

    #[test]
    fn only_the_exact_path_concerns_the_filter_outside_enforce() {
        for (cfg, covered) in [(off(), false), (monitor(), false), (enforce(), true)] {
            assert!(Request::concerns(&cfg, "/hook"));
            assert_eq!(Request::concerns(&cfg, "/HOOK;x=1"), covered);
            assert_eq!(Request::concerns(&cfg, "/hook/x"), covered);
            assert!(!Request::concerns(&cfg, "/hooks"));
        }
    }

    #[test]
    fn enforce_without_a_secret_is_off() {
        // `signature_mode: enforce` needs a secret to mean anything; without one nothing is
        // checked (the configuration parser decides whether that is allowed at all).
        let mut c = enforce();
        c.webhook_secret = None;
        let b = body();
        let r = run(&c, &build_webhook(None), &b, 2, false);
        assert!(!r.rejected() && !r.paused());
        assert!(!observed(r.finish(Some(200))).verified());
        assert!(!Request::checks_signatures(&c));
    }

    /// `max_body_bytes` is the largest body still copied and parsed, not the first one refused.
    #[test]
    fn a_body_of_exactly_max_body_bytes_is_observed() {
        let b = body();
        for (limit, observed) in [(b.len(), true), (b.len() - 1, false)] {
            let r = run(&cfg(None, limit), &build_webhook(None), &b, 3, false);
            let f = r.finish(Some(200));
            assert_eq!(matches!(f, Finish::Observe(_)), observed, "{limit}: {f:?}");
        }
    }

    #[test]
    fn oversized_bodies_pass_unparsed_and_stop_being_copied() {
        let b = body();
        let small = 1024;
        assert!(b.len() > small);
        // In one chunk (handed over whole: never kept as the copy) and in eight.
        for (mode, chunks) in [None, Some("monitor"), Some("enforce")]
            .into_iter()
            .flat_map(|m| [(m, 1), (m, 8)])
        {
            let c = cfg(mode, small);
            let signed = mode.map(|_| b.as_slice());
            let r = run(&c, &build_webhook(signed), &b, chunks, false);
            assert!(!r.rejected(), "{mode:?} {chunks}");
            assert_eq!(r.finish(Some(200)), Finish::Oversized, "{mode:?} {chunks}");
        }
        // Once oversized, unsigned chunks are no longer read at all.
        let c = cfg(None, small);
        let mut req = Request::new(&roomy());
        req.on_headers(&c, &build_webhook(None).headers(), NOW, false);
        assert_eq!(req.body_read(small + 1, false), Read::Chunk(small + 1));
        req.data(&vec![b'x'; small + 1]);
        assert_eq!(req.on_body(small + 1, false), Decision::Continue);
        assert_eq!(req.body_read(10, false), Read::Nothing);
        assert_eq!(req.body_read(0, true), Read::Nothing);
        // A digest still needs every byte.
        let mut req = Request::new(&roomy());
        let cm = cfg(Some("monitor"), small);
        req.on_headers(&cm, &build_webhook(Some(&b)).headers(), NOW, false);
        req.data(&vec![b'x'; small + 1]);
        assert_eq!(req.body_read(10, false), Read::Chunk(10));
    }

    #[test]
    fn a_reset_before_the_end_of_the_body_observes_nothing() {
        let b = body();
        for c in [off(), monitor(), enforce()] {
            let mut req = Request::new(&roomy());
            let signed = build_webhook(Some(&b));
            let h = req.on_headers(&c, &signed.headers(), NOW, false);
            assert!(h.observed);
            if let Read::Chunk(n) = req.body_read(10, false) {
                req.data(&b[..n]);
            }
            let _ = req.on_body(10, false);
            // Envoy still reports the local or upstream status, then logs.
            req.on_response_status(Some(503));
            assert_eq!(req.finish(), Finish::Incomplete);
        }
        // Reset after the headers only: still incomplete.
        let mut req = Request::new(&roomy());
        req.on_headers(&off(), &build_webhook(None).headers(), NOW, false);
        assert_eq!(req.finish(), Finish::Incomplete);
    }

    #[test]
    fn a_bodiless_build_webhook_is_complete_at_the_headers() {
        let mut req = Request::new(&roomy());
        let h = req.on_headers(&off(), &build_webhook(None).headers(), NOW, true);
        assert_eq!(h.decision, Decision::Continue);
        assert_eq!(req.body_read(0, true), Read::Nothing);
        assert_eq!(req.on_trailers(), Decision::Continue, "already complete");
        req.on_response_status(Some(400));
        let o = observed(req.finish());
        assert!(o.body.is_empty());
        assert_eq!(o.response_status, Some(400));
    }

    #[test]
    fn the_response_status_is_kept_only_for_observed_webhooks() {
        let b = body();
        let r = run(&off(), &build_webhook(None), &b, 1, false);
        assert!(r.req.wants_response_status());
        assert_eq!(observed(r.finish(None)).response_status, None);
        let mut req = Request::new(&roomy());
        req.on_response_status(Some(200));
        assert!(!req.wants_response_status());
        assert_eq!(req.finish(), Finish::Nothing);
    }

    #[test]
    fn an_observed_webhook_becomes_a_queue_message() {
        let b = body();
        let r = run(&enforce(), &build_webhook(Some(&b)), &b, 2, false);
        let o = observed(r.finish(Some(202)));
        let mut sent = SentMetadata::new(16);
        let m = o.into_message(&sent, NOW, Some(&qkey())).unwrap();
        assert_eq!(m.outcome, DeliveryOutcome::Delivered);
        let (repo, hash) = m.sent_metadata.expect("first time: with the repository");
        let obs = Observation::decode(&m.bytes, Some(&qkey())).unwrap();
        assert!(obs.verified());
        assert_eq!(obs.webhook().status, BuildStatus::Running);
        assert_eq!(obs.webhook().repo.id, repo);
        assert!(obs.webhook().repo_json.is_some());
        // Once sent, the next webhook of that repository goes without it.
        sent.sent(repo, hash, NOW);
        let r = run(&enforce(), &build_webhook(Some(&b)), &b, 1, false);
        let m = observed(r.finish(Some(500)))
            .into_message(&sent, NOW, Some(&qkey()))
            .unwrap();
        assert_eq!(m.outcome, DeliveryOutcome::NotDelivered);
        assert_eq!(m.sent_metadata, None);
        assert_eq!(
            Observation::decode(&m.bytes, Some(&qkey()))
                .unwrap()
                .webhook()
                .repo_json,
            None
        );
        // Not a webhook we understand: an error for the shell to count.
        let r = run(
            &off(),
            &build_webhook(None),
            b"{\"event\":\"repo\"}",
            1,
            false,
        );
        assert!(observed(r.finish(Some(200)))
            .into_message(&sent, NOW, Some(&qkey()))
            .is_err());
    }

    /// An unverified webhook carries no repository or system object (the reconciler takes
    /// them from evidence only) and marks nothing sent: the next verified webhook of that
    /// repository still brings drone's real objects.
    #[test]
    fn an_unverified_webhook_carries_and_marks_no_metadata() {
        let b = body();
        let sent = SentMetadata::new(16);
        let r = run(&off(), &build_webhook(Some(&b)), &b, 1, false);
        let m = observed(r.finish(Some(200)))
            .into_message(&sent, NOW, Some(&qkey()))
            .unwrap();
        assert_eq!(m.sent_metadata, None);
        let obs = Observation::decode(&m.bytes, Some(&qkey())).unwrap();
        assert!(!obs.verified());
        assert_eq!(obs.webhook().repo_json, None);
        assert_eq!(obs.webhook().system_json, None);
        let r = run(&enforce(), &build_webhook(Some(&b)), &b, 1, false);
        let m = observed(r.finish(Some(200)))
            .into_message(&sent, NOW, Some(&qkey()))
            .unwrap();
        assert!(m.sent_metadata.is_some());
        assert!(Observation::decode(&m.bytes, Some(&qkey()))
            .unwrap()
            .webhook()
            .repo_json
            .is_some());
    }
}

#[cfg(test)]
mod budget_tests {
    //! `max_body_bytes_in_flight`: what many requests at once may make one worker hold.
    use super::tests::{body, NOW, SECRET};
    use super::*;
    use crate::core::signature;

    fn cfg(mode: Option<&str>) -> Config {
        let secret = match mode {
            None => String::new(),
            Some(m) => format!(r#","webhook_secret":"{SECRET}","signature_mode":"{m}""#),
        };
        let json =
            format!(r#"{{"pipeline_cluster":"p","drone_cluster":"d","drone_token":"t"{secret}}}"#);
        Config::parse(json.as_bytes(), &|_| None).unwrap()
    }

    fn start(c: &Config, budget: &BodyBudget, b: &[u8]) -> Request {
        let signed = signature::sign(SECRET.as_bytes(), b, NOW);
        let h = Headers {
            path: "/hook",
            method: "POST",
            drone_event: Some("build"),
            date: Some(&signed.date),
            digest: Some(&signed.digest),
            signature: Some(&signed.signature),
        };
        let mut req = Request::new(budget);
        let step = req.on_headers(c, &h, NOW, false);
        assert_eq!(step.decision, Decision::Continue);
        req
    }

    /// One body callback the way Envoy makes it: `buffered` is what Envoy holds for a paused
    /// filter (the whole body so far) or this chunk alone.
    fn feed(req: &mut Request, chunk: &[u8], buffered: &mut Vec<u8>, end: bool) -> Decision {
        buffered.extend_from_slice(chunk);
        match req.body_read(buffered.len(), end) {
            Read::Nothing => {}
            // As the shell does: a chunk is handed over, a held body is read in pieces.
            Read::Chunk(_) => req.data_owned(buffered.clone()),
            Read::Held(_) => req.data(buffered),
        }
        let d = req.on_body(buffered.len(), end);
        if d != Decision::Pause {
            buffered.clear();
        }
        d
    }

    /// Monitor: unsigned slow bodies to the webhook path take at most half of the worker's
    /// budget, so a genuine webhook arriving while they hang is still observed (an unsigned
    /// sender could otherwise make it pass unobserved, and so be re-delivered: a duplicate).
    #[test]
    fn unsigned_slow_bodies_leave_room_for_a_genuine_webhook() {
        let b = body();
        let cap = 4 * b.len();
        let c = cfg(Some("monitor"));
        let budget = BodyBudget::new(cap);
        let unsigned = Headers {
            path: "/hook",
            method: "POST",
            drone_event: Some("build"),
            date: None,
            digest: None,
            signature: None,
        };
        let mut slow: Vec<(Request, Vec<u8>)> = (0..40)
            .map(|_| {
                let mut req = Request::new(&budget);
                let step = req.on_headers(&c, &unsigned, NOW, false);
                assert!(
                    matches!(step.decision, Decision::PassUnverified { .. }),
                    "monitor passes it: {:?}",
                    step.decision
                );
                (req, Vec::new())
            })
            .collect();
        let piece = &b[..b.len() - 1];
        for (req, buffered) in slow.iter_mut() {
            assert_eq!(feed(req, piece, buffered, false), Decision::Continue);
        }
        assert!(budget.held() > 0, "some unsigned copies were taken");
        assert!(
            budget.held() <= cap / 2,
            "{} > half of {cap}",
            budget.held()
        );
        let mut genuine = start(&c, &budget, &b);
        let mut buffered = Vec::new();
        assert_eq!(
            feed(&mut genuine, &b, &mut buffered, true),
            Decision::Continue
        );
        genuine.on_response_status(Some(200));
        match genuine.finish() {
            Finish::Observe(o) => assert!(o.verified(), "observed as evidence"),
            other => panic!("the genuine webhook was not observed: {other:?}"),
        }
        drop(slow);
        assert_eq!(budget.held(), 0);
    }

    /// Monitor and off: 40 slow webhooks to one worker, their chunks interleaved, none
    /// finished. The worker never holds more than the cap; the requests that do not fit pass
    /// through untouched (every decision `Continue`) and end unobserved, counted; every way a
    /// request ends gives its bytes back, so later webhooks are observed again.
    #[test]
    fn many_slow_bodies_never_hold_more_than_the_cap_and_give_it_all_back() {
        let b = body();
        let cap = 3 * b.len();
        for mode in [None, Some("monitor")] {
            let c = cfg(mode);
            let budget = BodyBudget::new(cap);
            let mut reqs: Vec<(Request, Vec<u8>)> = (0..40)
                .map(|_| (start(&c, &budget, &b), Vec::new()))
                .collect();
            let pieces: Vec<&[u8]> = b.chunks(b.len().div_ceil(8)).collect();
            let mut peak = 0;
            // All but the last piece, round-robin: nobody ends.
            for piece in &pieces[..pieces.len() - 1] {
                for (req, buffered) in reqs.iter_mut() {
                    let d = feed(req, piece, buffered, false);
                    assert_eq!(d, Decision::Continue, "{mode:?}: never blocked, never held");
                    peak = peak.max(budget.held());
                    assert!(budget.held() <= cap, "{mode:?}: {} > {cap}", budget.held());
                }
            }
            assert!(peak > cap / 2, "{mode:?}: the cap was reached ({peak})");
            let holding = reqs.iter().filter(|(r, _)| r.held_bytes() > 0).count();
            assert!((1..=3).contains(&holding), "{mode:?}: {holding} copies fit");
            // The ends: a third finish their body, a third are reset, a third are destroyed
            // without any end (Envoy's on_done without on_log).
            let mut over = 0;
            let mut observed = 0;
            for (i, (mut req, mut buffered)) in reqs.into_iter().enumerate() {
                match i % 3 {
                    0 => {
                        let last = pieces.last().unwrap();
                        assert_eq!(
                            feed(&mut req, last, &mut buffered, true),
                            Decision::Continue
                        );
                        req.on_response_status(Some(200));
                        match req.finish() {
                            Finish::OverBudget => over += 1,
                            Finish::Observe(o) => {
                                assert_eq!(o.body, b);
                                observed += 1;
                            }
                            other => panic!("{other:?}"),
                        }
                        assert_eq!(req.held_bytes(), 0);
                    }
                    1 => {
                        let f = req.finish();
                        assert!(
                            matches!(f, Finish::Incomplete | Finish::OverBudget),
                            "{f:?}"
                        );
                    }
                    _ => drop(req),
                }
                assert!(budget.held() <= cap);
            }
            assert!(observed >= 1 && over >= 10, "{mode:?}: {observed} {over}");
            assert_eq!(budget.held(), 0, "{mode:?}: every end gave its bytes back");
            // Room again: the next webhook is observed.
            let mut req = start(&c, &budget, &b);
            assert_eq!(
                feed(&mut req, &b, &mut Vec::new(), true),
                Decision::Continue
            );
            assert!(matches!(req.finish(), Finish::Observe(_)), "{mode:?}");
        }
    }

    /// The copy grows by doubling but within the budget: its capacity, not only its length,
    /// is what is reserved.
    #[test]
    fn the_share_is_the_copy_capacity() {
        let b = body();
        let budget = BodyBudget::new(1 << 30);
        let mut req = start(&cfg(None), &budget, &b);
        for piece in b.chunks(97) {
            feed(&mut req, piece, &mut Vec::new(), false);
            assert!(req.held_bytes() >= piece.len());
        }
        let State::Body {
            copy: Some(copy), ..
        } = &req.state
        else {
            panic!("copying")
        };
        assert_eq!(req.held_bytes(), copy.bytes.capacity());
        assert_eq!(budget.held(), copy.bytes.capacity());
    }

    /// A chunk that fits in the copy's capacity asks the budget for nothing more: pieces of
    /// 100, 50 and 50 bytes make a copy of 100, then 200 (doubled), which the third fills
    /// exactly; the share stays 200.
    #[test]
    fn a_chunk_that_fits_the_copys_capacity_asks_the_budget_for_nothing() {
        let b = body();
        let budget = BodyBudget::new(1 << 30);
        let mut req = start(&cfg(None), &budget, &b);
        for (piece, held) in [(&b[..100], 100), (&b[100..150], 200), (&b[150..200], 200)] {
            feed(&mut req, piece, &mut Vec::new(), false);
            assert_eq!(req.held_bytes(), held);
        }
        assert_eq!(budget.held(), 200);
    }

    /// A body that fits in the budget is observed even when doubling its copy would not fit:
    /// the copy then grows to exactly what the body needs. Budget of one body; the body in a
    /// piece of two thirds, then the rest (doubling would ask for 4/3 of it).
    #[test]
    fn a_body_that_fits_the_budget_is_observed_though_its_doubled_copy_would_not() {
        let b = body();
        let budget = BodyBudget::new(b.len());
        let mut req = start(&cfg(None), &budget, &b);
        let cut = b.len() * 2 / 3;
        feed(&mut req, &b[..cut], &mut Vec::new(), false);
        assert_eq!(req.held_bytes(), cut);
        feed(&mut req, &b[cut..], &mut Vec::new(), true);
        req.on_response_status(Some(200));
        match req.finish() {
            Finish::Observe(o) => assert_eq!(o.body, b),
            other => panic!("not observed: {other:?}"),
        }
        assert_eq!(budget.held(), 0);
    }

    /// Enforce holds a signed body (Envoy buffers it) until its digest is checked: those bytes
    /// count. A held body that no longer fits can be neither held nor let through unchecked:
    /// answered 503 (`Busy`), its bytes given back, nothing observed. The others still finish
    /// verified.
    #[test]
    fn enforce_answers_busy_to_a_held_body_that_does_not_fit() {
        let b = body();
        let pieces: Vec<&[u8]> = b.chunks(b.len().div_ceil(4)).collect();
        // Two and a half bodies.
        let cap = 10 * pieces[0].len();
        let c = cfg(Some("enforce"));
        let budget = BodyBudget::new(cap);
        let mut reqs: Vec<(Request, Vec<u8>, Option<Decision>)> = (0..6)
            .map(|_| (start(&c, &budget, &b), Vec::new(), None))
            .collect();
        for piece in &pieces[..pieces.len() - 1] {
            for (req, buffered, last) in reqs.iter_mut() {
                if last == &Some(Decision::Busy) {
                    continue;
                }
                let d = feed(req, piece, buffered, false);
                assert!(matches!(d, Decision::Pause | Decision::Busy), "{d:?}");
                assert!(budget.held() <= cap, "{} > {cap}", budget.held());
                *last = Some(d);
            }
        }
        let busy = reqs
            .iter()
            .filter(|(_, _, d)| d == &Some(Decision::Busy))
            .count();
        assert!((3..6).contains(&busy), "{busy} answered 503");
        for (mut req, mut buffered, last) in reqs {
            if last == Some(Decision::Busy) {
                assert_eq!(req.held_bytes(), 0);
                assert_eq!(req.body_read(10, false), Read::Nothing);
                assert_eq!(
                    req.on_body(10, true),
                    Decision::Continue,
                    "already answered"
                );
                assert_eq!(req.finish(), Finish::Nothing);
                continue;
            }
            let d = feed(&mut req, pieces.last().unwrap(), &mut buffered, true);
            assert_eq!(d, Decision::Continue);
            assert!(budget.held() <= cap);
            req.on_response_status(Some(200));
            match req.finish() {
                Finish::Observe(o) => assert!(o.verified() && o.body == b),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(budget.held(), 0);
    }

    /// In monitor a body over the budget is still checked (the digest streams, nothing is
    /// held): a forgery is still reported, and the request still passes.
    #[test]
    fn monitor_still_checks_a_body_over_the_budget() {
        let b = body();
        let budget = BodyBudget::new(1_024);
        let c = cfg(Some("monitor"));
        let mut req = start(&c, &budget, &b);
        let mut forged = b.clone();
        forged[10] ^= 1;
        let d = feed(&mut req, &forged, &mut Vec::new(), true);
        assert!(matches!(d, Decision::PassUnverified { .. }), "{d:?}");
        assert_eq!(req.finish(), Finish::OverBudget);
        assert_eq!(budget.held(), 0);
    }
}
