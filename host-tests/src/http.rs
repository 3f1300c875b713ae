//! HTTP streams through one VM's filter, in Envoy's order:
//! `on_context_create` → `on_request_headers` → `on_request_body`* → upstream →
//! `on_response_headers` → `on_response_body` → `on_log` → `on_done` → `on_delete`.
//!
//! A `Pause` waits for `proxy_continue_stream` while the event loop (and so the virtual clock)
//! runs; a local reply is taken only after the callback returns.

use anyhow::{ensure, Result};

use crate::abi::{envoy_reply, TIMEOUT_BODY};
use crate::host::Host;
use crate::types::{
    FailurePolicy, Partial, StreamOutcome, TestRequest, UpstreamReply, UpstreamRequest,
};
use crate::vm::{LocalReply, StreamState};
use crate::world::Resolved;

/// HCM `stream_idle_timeout` default: a stream paused this long gets a 408.
pub const STREAM_IDLE_TIMEOUT_MS: u64 = 300_000;

const RESET_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection termination";

const CONTINUE: i32 = 0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Request,
    Response,
}

/// How a callback (and any pause after it) ended.
enum Settled {
    Continue,
    /// Paused and not waited for (a request body chunk that is not the last).
    Buffering,
    Local(LocalReply),
    Reset,
    Died,
    IdleTimeout,
}

enum Cb {
    RequestHeaders(usize, bool),
    RequestBody(usize, bool),
    ResponseHeaders(usize, bool),
    ResponseBody(usize, bool),
}

impl Host {
    /// Drives one request through VM `vm`'s filter; `upstream` answers if the filter lets the
    /// request through. See the module docs for the order of callbacks.
    pub fn request(
        &mut self,
        vm: usize,
        req: TestRequest,
        upstream: impl FnOnce(&UpstreamRequest) -> UpstreamReply,
    ) -> Result<StreamOutcome> {
        let r = self.request_inner(vm, req, upstream);
        self.sync();
        r
    }

    fn request_inner(
        &mut self,
        vm: usize,
        req: TestRequest,
        upstream: impl FnOnce(&UpstreamRequest) -> UpstreamReply,
    ) -> Result<StreamOutcome> {
        ensure!(vm < self.vms.len(), "no VM {vm} (have {})", self.vms.len());
        let headers = self.downstream_headers(&req);
        let mut out = StreamOutcome::default();
        if self.vms[vm].dead {
            match self.cfg.failure_policy {
                FailurePolicy::FailClosed => {
                    fail_stream(&mut out);
                    return Ok(out);
                }
                FailurePolicy::FailOpen => {
                    let up = UpstreamRequest {
                        headers,
                        body: req.body,
                    };
                    let (_, headers, body) =
                        resolve(upstream(&up)).into_parts().unwrap_or_default();
                    out.upstream = Some(up);
                    out.status = status_of(&headers);
                    out.headers = headers;
                    out.body = body;
                    return Ok(out);
                }
                FailurePolicy::FailReload => self.reload_inner(vm)?,
            }
        }
        let v = &mut self.vms[vm];
        let root = v.ctx().current_root;
        let ctx = v.ctx().alloc_ctx();
        v.ctx().streams.insert(
            ctx,
            StreamState {
                root,
                req_headers: headers,
                ..Default::default()
            },
        );
        let f = v.ex.context_create.clone();
        let r = v.invoke(f, ctx, (ctx as i32, root as i32));
        if self.after_call(vm, r).is_none() {
            fail_stream(&mut out);
            return Ok(out);
        }
        self.decode(vm, ctx, req, upstream, &mut out);
        self.finish(vm, ctx);
        Ok(out)
    }

    /// What the filter sees: the HTTP/1 codec's pseudo-headers, the client's headers, and
    /// what the HCM adds before filters run.
    fn downstream_headers(&mut self, req: &TestRequest) -> Vec<(String, String)> {
        self.request_seq += 1;
        let mut h: Vec<(String, String)> = vec![
            (":authority".into(), req.authority.clone()),
            (":path".into(), req.path.clone()),
            (":method".into(), req.method.clone()),
            (":scheme".into(), "http".into()),
        ];
        h.extend(
            req.headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
        );
        let has = |h: &[(String, String)], k: &str| h.iter().any(|(n, _)| n == k);
        if !req.body.is_empty() && !has(&h, "content-length") && !has(&h, "transfer-encoding") {
            h.push(("content-length".into(), req.body.len().to_string()));
        }
        if !has(&h, "x-forwarded-proto") {
            h.push(("x-forwarded-proto".into(), "http".into()));
        }
        if !has(&h, "x-request-id") {
            let a = splitmix(self.cfg.seed ^ self.request_seq);
            let b = splitmix(a);
            h.push((
                "x-request-id".into(),
                format!(
                    "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                    a >> 32,
                    (a >> 16) & 0xffff,
                    a & 0xfff,
                    b >> 52,
                    b & 0xffff_ffff_ffff
                ),
            ));
        }
        h
    }

    /// Opens a stream on VM `vm` and sends its request headers, announcing a body that
    /// [`Host::stream_chunk`] sends piece by piece and that may never end: a slow client.
    /// Returns the stream's context id, or `None` if the headers already ended it (a local
    /// reply, a reset, a trap).
    pub fn stream_open(&mut self, vm: usize, req: &TestRequest) -> Result<Option<u32>> {
        ensure!(vm < self.vms.len(), "no VM {vm} (have {})", self.vms.len());
        ensure!(!self.vms[vm].dead, "VM {vm} is dead");
        let headers = self.downstream_headers(req);
        let n = headers.len();
        let v = &mut self.vms[vm];
        let root = v.ctx().current_root;
        let ctx = v.ctx().alloc_ctx();
        v.ctx().streams.insert(
            ctx,
            StreamState {
                root,
                req_headers: headers,
                req_headers_open: true,
                ..Default::default()
            },
        );
        let f = v.ex.context_create.clone();
        let r = v.invoke(f, ctx, (ctx as i32, root as i32));
        if self.after_call(vm, r).is_none() {
            return Ok(None);
        }
        let r = self.callback(vm, ctx, Cb::RequestHeaders(n, false));
        let open = matches!(
            self.settle(vm, ctx, r, Dir::Request, false),
            Settled::Continue | Settled::Buffering
        );
        if let Some(s) = self.stream(vm, ctx) {
            s.req_headers_open = false;
        }
        if !open {
            self.finish(vm, ctx);
            return Ok(None);
        }
        Ok(Some(ctx))
    }

    /// One more piece of an open stream's body, not the last: what Envoy does with it after
    /// the filter's `on_request_body` (forwarded, or buffered while the filter pauses: up to
    /// the buffer limit, then 413), or the local reply that ended the stream.
    pub fn stream_chunk(&mut self, vm: usize, ctx: u32, chunk: &[u8]) -> Result<Partial> {
        let Some(s) = self.stream(vm, ctx) else {
            return Ok(Partial::Gone);
        };
        s.req_body.extend_from_slice(chunk);
        s.req_body_open = true;
        let len = s.req_body.len();
        let r = self.callback(vm, ctx, Cb::RequestBody(len, false));
        let settled = self.settle(vm, ctx, r, Dir::Request, false);
        if let Some(s) = self.stream(vm, ctx) {
            s.req_body_open = false;
        }
        let out = match settled {
            Settled::Continue => {
                if let Some(s) = self.stream(vm, ctx) {
                    s.req_body.clear();
                }
                Partial::Forwarded
            }
            Settled::Buffering if len > self.cfg.buffer_limit_bytes => Partial::Local(413),
            Settled::Buffering => Partial::Buffered,
            Settled::Local(lr) => Partial::Local(lr.status as u16),
            Settled::Reset | Settled::Died | Settled::IdleTimeout => Partial::Gone,
        };
        if matches!(out, Partial::Local(_) | Partial::Gone) {
            self.stream_reset(vm, ctx);
        }
        self.sync();
        Ok(out)
    }

    /// Ends an open stream without its body: the client went away (Envoy resets the stream,
    /// then logs it and destroys the filter: `on_log`, `on_done`, `on_delete`).
    pub fn stream_reset(&mut self, vm: usize, ctx: u32) {
        if self.stream(vm, ctx).is_some() {
            self.finish(vm, ctx);
        }
        self.sync();
    }

    /// Request path, then upstream, then response path.
    fn decode(
        &mut self,
        vm: usize,
        ctx: u32,
        req: TestRequest,
        upstream: impl FnOnce(&UpstreamRequest) -> UpstreamReply,
        out: &mut StreamOutcome,
    ) {
        let eos = req.body.is_empty();
        let n = self.stream(vm, ctx).map_or(0, |s| {
            s.req_headers_open = true;
            s.req_headers.len()
        });
        let r = self.callback(vm, ctx, Cb::RequestHeaders(n, eos));
        match self.settle(vm, ctx, r, Dir::Request, true) {
            Settled::Continue | Settled::Buffering => {}
            other => return self.abort(vm, ctx, other, out),
        }
        if let Some(s) = self.stream(vm, ctx) {
            s.req_headers_open = false;
        }

        let mut forwarded = Vec::new();
        if !eos {
            let size = if req.chunk_size == 0 {
                req.body.len()
            } else {
                req.chunk_size
            };
            let chunks: Vec<&[u8]> = req.body.chunks(size).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let last = i + 1 == chunks.len();
                let Some(s) = self.stream(vm, ctx) else {
                    return;
                };
                s.req_body.extend_from_slice(chunk);
                s.req_body_open = true;
                let len = s.req_body.len();
                let r = self.callback(vm, ctx, Cb::RequestBody(len, last));
                match self.settle(vm, ctx, r, Dir::Request, last) {
                    Settled::Continue => {
                        if let Some(s) = self.stream(vm, ctx) {
                            forwarded.append(&mut s.req_body);
                        }
                    }
                    Settled::Buffering => {
                        // StopIterationAndBuffer: over the buffer limit Envoy answers 413.
                        if len > self.cfg.buffer_limit_bytes {
                            let reply = envoy_reply(413, "Payload Too Large");
                            return self.respond_via_filter(vm, ctx, reply, out);
                        }
                    }
                    other => return self.abort(vm, ctx, other, out),
                }
            }
            if let Some(s) = self.stream(vm, ctx) {
                s.req_body_open = false;
            }
        }

        let Some(s) = self.stream(vm, ctx) else {
            return;
        };
        let up = UpstreamRequest {
            headers: s.req_headers.clone(),
            body: forwarded,
        };
        let reply = resolve(upstream(&up));
        out.upstream = Some(up);
        self.respond_via_filter(vm, ctx, reply, out);
    }

    /// Ends the request path early (local reply, reset, trap, idle timeout).
    fn abort(&mut self, vm: usize, ctx: u32, how: Settled, out: &mut StreamOutcome) {
        match how {
            Settled::Local(lr) => {
                out.local_reply = Some((lr.status as u16, lr.body.clone()));
                let reply = local_reply_response(lr);
                self.respond_via_filter(vm, ctx, reply, out);
            }
            Settled::Reset => out.reset = true,
            Settled::Died => fail_stream(out),
            Settled::IdleTimeout => direct_reply(out, envoy_reply(408, "stream timeout")),
            Settled::Continue | Settled::Buffering => {}
        }
    }

    /// The response (from upstream, Envoy, or the filter's local reply) goes through the
    /// filter's encode callbacks.
    fn respond_via_filter(
        &mut self,
        vm: usize,
        ctx: u32,
        reply: Resolved,
        out: &mut StreamOutcome,
    ) {
        let Some((_, headers, body)) = reply.into_parts() else {
            out.reset = true;
            return;
        };
        let eos = body.is_empty();
        let Some(s) = self.stream(vm, ctx) else {
            return;
        };
        let n = headers.len();
        (s.resp_headers, s.resp_headers_open) = (headers, true);
        match self.on_response(vm, ctx, Cb::ResponseHeaders(n, eos)) {
            Settled::Continue | Settled::Buffering => {}
            Settled::Local(lr) => {
                // Response headers not sent yet: Envoy sends the local reply directly,
                // bypassing the filters.
                out.local_reply = Some((lr.status as u16, lr.body.clone()));
                return direct_reply(out, local_reply_response(lr));
            }
            Settled::Reset => {
                out.reset = true;
                return;
            }
            Settled::Died => return fail_stream(out),
            Settled::IdleTimeout => {
                return direct_reply(out, envoy_reply(408, "stream timeout"));
            }
        }
        let Some(s) = self.stream(vm, ctx) else {
            return;
        };
        s.resp_headers_open = false;
        out.headers = s.resp_headers.clone();
        out.status = status_of(&out.headers);
        if eos {
            return;
        }
        let len = body.len();
        (s.resp_body, s.resp_body_open) = (body, true);
        match self.on_response(vm, ctx, Cb::ResponseBody(len, true)) {
            Settled::Continue | Settled::Buffering => {
                if let Some(s) = self.stream(vm, ctx) {
                    s.resp_body_open = false;
                    out.body = std::mem::take(&mut s.resp_body);
                }
            }
            Settled::Local(lr) => {
                // Headers already went out: all Envoy can do is reset the stream.
                out.local_reply = Some((lr.status as u16, lr.body));
                out.reset = true;
            }
            Settled::Reset | Settled::Died | Settled::IdleTimeout => out.reset = true,
        }
    }

    /// `on_log` (both header maps readable again), `on_done`, `on_delete`.
    fn finish(&mut self, vm: usize, ctx: u32) {
        if self.vms[vm].dead {
            return;
        }
        if let Some(s) = self.stream(vm, ctx) {
            s.log_phase = true;
            s.req_headers_open = false;
            s.resp_headers_open = false;
            s.req_body_open = false;
            s.resp_body_open = false;
        }
        let ex = &self.vms[vm].ex;
        let (log, done, delete) = (ex.log.clone(), ex.done.clone(), ex.delete.clone());
        let r = self.vms[vm].invoke(log, ctx, ctx as i32);
        if self.after_call(vm, r).is_none() {
            return;
        }
        if let Some(s) = self.stream(vm, ctx) {
            s.log_phase = false;
        }
        let r = self.vms[vm].invoke(done, ctx, ctx as i32);
        if self.after_call(vm, r).is_none() {
            return;
        }
        let r = self.vms[vm].invoke(delete, ctx, ctx as i32);
        self.vms[vm].ctx().streams.remove(&ctx);
        self.after_call(vm, r);
    }

    fn stream(&mut self, vm: usize, ctx: u32) -> Option<&mut StreamState> {
        let v = self.vms.get_mut(vm)?;
        if v.dead {
            return None;
        }
        v.ctx().streams.get_mut(&ctx)
    }

    /// Runs one stream callback; `None` = the VM trapped (and is now dead).
    fn callback(&mut self, vm: usize, ctx: u32, cb: Cb) -> Option<i32> {
        if let Some(s) = self.stream(vm, ctx) {
            s.resume_request = false;
            s.resume_response = false;
        }
        let v = &mut self.vms[vm];
        let c = ctx as i32;
        let b = |x: bool| i32::from(x);
        let r = match cb {
            Cb::RequestHeaders(n, e) => {
                v.invoke(v.ex.request_headers.clone(), ctx, (c, n as i32, b(e)))
            }
            Cb::RequestBody(n, e) => v.invoke(v.ex.request_body.clone(), ctx, (c, n as i32, b(e))),
            Cb::ResponseHeaders(n, e) => {
                v.invoke(v.ex.response_headers.clone(), ctx, (c, n as i32, b(e)))
            }
            Cb::ResponseBody(n, e) => {
                v.invoke(v.ex.response_body.clone(), ctx, (c, n as i32, b(e)))
            }
        };
        // A missing callback continues.
        self.after_call(vm, r).map(|a| a.unwrap_or(CONTINUE))
    }

    /// A response callback, settled (waiting for a resume after a `Pause`).
    fn on_response(&mut self, vm: usize, ctx: u32, cb: Cb) -> Settled {
        let r = self.callback(vm, ctx, cb);
        self.settle(vm, ctx, r, Dir::Response, true)
    }

    /// Applies what the callback left behind (local reply, reset, continue) and, for a
    /// `Pause` that must be waited for, runs the event loop until the stream is resumed.
    fn settle(
        &mut self,
        vm: usize,
        ctx: u32,
        action: Option<i32>,
        dir: Dir,
        wait: bool,
    ) -> Settled {
        let Some(action) = action else {
            return Settled::Died;
        };
        let deadline = self.now_ms().saturating_add(STREAM_IDLE_TIMEOUT_MS);
        let paused = action != CONTINUE;
        loop {
            let Some(s) = self.stream(vm, ctx) else {
                return Settled::Died;
            };
            if let Some(lr) = s.local_reply.take() {
                return Settled::Local(lr);
            }
            if s.reset {
                return Settled::Reset;
            }
            let resumed = match dir {
                Dir::Request => std::mem::take(&mut s.resume_request),
                Dir::Response => std::mem::take(&mut s.resume_response),
            };
            if !paused || resumed {
                return Settled::Continue;
            }
            if !wait {
                return Settled::Buffering;
            }
            if !self.step(deadline) {
                self.run_until(deadline);
                return Settled::IdleTimeout;
            }
        }
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn status_of(headers: &[(String, String)]) -> u16 {
    headers
        .iter()
        .find(|(k, _)| k == ":status")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The response Envoy builds for `proxy_send_local_response`.
fn local_reply_response(lr: LocalReply) -> Resolved {
    let mut headers = lr.headers;
    if !lr.body.is_empty() {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
        headers.push(("content-length".into(), lr.body.len().to_string()));
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("content-type".into(), "text/plain".into()));
        }
    }
    Resolved::Response {
        status: lr.status as u16,
        headers,
        body: lr.body,
    }
}

/// A reply that reaches the client without passing the filter.
fn direct_reply(out: &mut StreamOutcome, reply: Resolved) {
    if let Some((status, headers, body)) = reply.into_parts() {
        out.status = status;
        out.headers = headers;
        out.body = body;
    }
}

/// Envoy's `failStream`: 503 with an empty body (details "wasm_fail_stream").
fn fail_stream(out: &mut StreamOutcome) {
    out.status = 503;
    out.headers = vec![(":status".into(), "503".into())];
    out.body = Vec::new();
}

/// What Envoy makes of the upstream's answer: a response, or its own 503/504.
fn resolve(r: UpstreamReply) -> Resolved {
    match r {
        UpstreamReply::Response {
            status,
            headers,
            body,
        } => Resolved::Response {
            status,
            headers,
            body,
        },
        UpstreamReply::Reset => envoy_reply(503, RESET_BODY),
        UpstreamReply::Timeout => envoy_reply(504, TIMEOUT_BODY),
    }
}
