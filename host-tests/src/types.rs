//! Public value types exchanged between the tests and the host.

/// Index used in [`LogLine::vm`] / [`CallRecord::vm`] for the config-time canary VM, which Envoy
/// runs (and throws away) before every plugin configuration is accepted.
pub const CANARY: usize = usize::MAX;

/// One `proxy_log` call (or one line the module wrote to stdout/stderr through WASI `fd_write`;
/// Envoy logs those at info/error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// VM index, or [`CANARY`].
    pub vm: usize,
    /// proxy-wasm log level: 0 trace … 5 critical.
    pub level: u32,
    pub message: String,
    /// Virtual time of the call.
    pub at_ms: u64,
}

/// One `proxy_http_call` the module made: the request as the upstream would see it (its
/// fields and methods read through `Deref`: `record.cluster`, `record.path()`), and what the
/// hostcall did with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    pub at_ms: u64,
    /// VM index, or [`CANARY`].
    pub vm: usize,
    pub request: CallRequest,
    /// Status the hostcall returned: 0 Ok, 2 BadArgument, 10 InternalFailure.
    pub result: u32,
    /// Token handed to the module when `result == 0`.
    pub token: Option<u32>,
}

impl std::ops::Deref for CallRecord {
    type Target = CallRequest;
    fn deref(&self) -> &CallRequest {
        &self.request
    }
}

/// Fuel of one `proxy_on_tick` (see `HostConfig::fuel` and `Host::take_tick_fuel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickFuel {
    pub vm: usize,
    /// Root context id.
    pub root: u32,
    /// Virtual time of the tick.
    pub at_ms: u64,
    /// Fuel the callback consumed.
    pub fuel: u64,
}

/// What the responder of a cluster sees for one `proxy_http_call`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRequest {
    pub cluster: String,
    /// Request headers as sent (Envoy adds `content-length` when there is a body).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

impl CallRequest {
    /// First value of a header (case-insensitive name), like Envoy's header lookup.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    pub fn method(&self) -> &str {
        self.header(":method").unwrap_or("")
    }
    pub fn path(&self) -> &str {
        self.header(":path").unwrap_or("")
    }
    pub fn authority(&self) -> &str {
        self.header(":authority").unwrap_or("")
    }
    /// The body as (lossy) UTF-8, for assertions.
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How the upstream cluster answers one `proxy_http_call`; the shapes are the ones Envoy
/// produces (reference §3 "dispatch_http_call / Outcomes").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallReply {
    /// A real response, delivered `delay_ms` after the call. If the call has a timeout and
    /// `delay_ms >= timeout`, Envoy's timeout fires first and the module gets the 504 instead.
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        delay_ms: u64,
    },
    /// Envoy: a 504 response with body "upstream request timeout" once the call's timeout
    /// expires (timeout 0 = no timeout, so it never answers).
    Timeout,
    /// Envoy: a 503 response, body "upstream connect error or disconnect/reset before headers.
    /// reset reason: connection failure", on the next event-loop step.
    ConnectFailure,
    /// Envoy: callback with `num_headers = 0`, `proxy_get_status` = (11, "reset").
    ResetAfterHeaders,
    /// `proxy_http_call` itself returns InternalFailure (10); no token, no callback.
    InlineFailure,
    /// Never answers (to test the module's own expiry); dropped with the VM.
    Hang,
}

impl CallReply {
    /// A `200` with a body and no delay.
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        CallReply::status(200, body)
    }
    /// A response with the given status and body and no delay.
    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Self {
        CallReply::after(0, status, body)
    }
    /// A response with the given status and body and no headers, `delay_ms` after the call.
    pub fn after(delay_ms: u64, status: u16, body: impl Into<Vec<u8>>) -> Self {
        CallReply::Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay_ms,
        }
    }
}

/// A downstream request driven through one VM's filter by [`crate::Host::request`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestRequest {
    pub method: String,
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Body chunk size for `proxy_on_request_body`; 0 = one chunk.
    pub chunk_size: usize,
}

impl TestRequest {
    pub fn get(path: &str) -> Self {
        TestRequest {
            method: "GET".into(),
            path: path.into(),
            authority: "status-sync.test".into(),
            ..Default::default()
        }
    }
    pub fn post(path: &str, body: impl Into<Vec<u8>>) -> Self {
        TestRequest {
            method: "POST".into(),
            path: path.into(),
            authority: "status-sync.test".into(),
            body: body.into(),
            ..Default::default()
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn chunked(mut self, chunk_size: usize) -> Self {
        self.chunk_size = chunk_size;
        self
    }
}

/// What the upstream (route cluster) received after the filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// Includes the pseudo-headers, after the filter's modifications.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl UpstreamRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// How the route's upstream answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamReply {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Envoy answers 503 itself ("upstream connect error or disconnect/reset before headers.
    /// reset reason: connection termination"), through the filter's encode path.
    Reset,
    /// Envoy answers 504 "upstream request timeout", through the filter's encode path.
    Timeout,
}

impl UpstreamReply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        UpstreamReply::Response {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
        }
    }
    pub fn status(status: u16) -> Self {
        UpstreamReply::Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

/// What became of one piece of an open stream's body ([`crate::Host::stream_chunk`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partial {
    /// The filter let it through: Envoy sent it on.
    Forwarded,
    /// The filter paused: Envoy holds it (with the pieces before it).
    Buffered,
    /// The stream ended with this status from the filter's local reply (or Envoy's 413 over
    /// its buffer limit); the stream is finished.
    Local(u16),
    /// The stream is gone (reset, VM trapped).
    Gone,
}

/// What happened to one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamOutcome {
    /// What the upstream received; `None` if the filter (or a failure) stopped the request.
    pub upstream: Option<UpstreamRequest>,
    /// The status the client got (0 if the stream was reset before a response).
    pub status: u16,
    /// Set when the filter called `proxy_send_local_response`: (status, body) it asked for.
    pub local_reply: Option<(u16, Vec<u8>)>,
    /// The response body the client got.
    pub body: Vec<u8>,
    /// The response headers the client got (with `:status`).
    pub headers: Vec<(String, String)>,
    /// The stream was reset (`proxy_close_stream`, or a local reply after the response
    /// headers were already sent).
    pub reset: bool,
}

impl StreamOutcome {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A VM that trapped (or was killed): Envoy marks it failed and never calls it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmDeath {
    pub vm: usize,
    pub at_ms: u64,
    pub reason: String,
}

/// Envoy's `failure_policy` for streams that arrive on a failed VM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Default: every stream on that VM gets a 503 local reply.
    #[default]
    FailClosed,
    /// The filter is skipped: the request goes straight upstream.
    FailOpen,
    /// A fresh VM is created for the next stream (Envoy's backoff is not modelled).
    FailReload,
}

pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
