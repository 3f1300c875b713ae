//! Probe filter for the host-tests self-test.
//!
//! Root context (plugin config `k=v;k=v`): `tick=<ms>` sets the tick period, `fail` makes
//! `on_configure` return false, `count_configures` CAS-increments shared key "configures",
//! `qreg=<name>` registers a queue, `call=<cluster>` + `timeout=<ms>` dispatches an HTTP call
//! on every tick, `ticks_max=<n>` disables the timer after n ticks, `panic_tick=<n>` panics on
//! tick n. Everything it sees is logged.
//!
//! HTTP context: the `x-probe-op` request header selects an operation; most answer with a
//! local reply whose body is the result.

#![allow(clashing_extern_declarations)]

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use log::info;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, Status};

#[link(wasm_import_module = "env")]
extern "C" {
    #[link_name = "proxy_get_header_map_value"]
    fn raw_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    #[link_name = "proxy_get_header_map_pairs"]
    fn raw_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

/// (status, value) of `proxy_get_header_map_value` without the SDK's panic.
fn raw_value(map_type: u32, key: &str) -> (u32, String) {
    let mut ptr: *mut u8 = std::ptr::null_mut();
    let mut len: usize = 0;
    let status =
        unsafe { raw_get_header_map_value(map_type, key.as_ptr(), key.len(), &mut ptr, &mut len) };
    let value = if status == 0 && !ptr.is_null() {
        String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(ptr, len) }).into_owned()
    } else {
        String::new()
    };
    (status, value)
}

/// (status, serialized size) of `proxy_get_header_map_pairs`.
fn raw_pairs(map_type: u32) -> (u32, usize) {
    let mut ptr: *mut u8 = std::ptr::null_mut();
    let mut len: usize = 0;
    let status = unsafe { raw_get_header_map_pairs(map_type, &mut ptr, &mut len) };
    (status, len)
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(ProbeRoot { id, cfg: HashMap::new(), ticks: 0, tick_metric: 0, gauge: 0 })
    });
}}

struct ProbeRoot {
    id: u32,
    cfg: HashMap<String, String>,
    ticks: u64,
    tick_metric: u32,
    gauge: u32,
}

impl ProbeRoot {
    fn num(&self, key: &str) -> Option<u64> {
        self.cfg.get(key).and_then(|v| v.parse().ok())
    }
}

fn cas_increment(key: &str) {
    for _ in 0..10 {
        let (value, cas) = hostcalls::get_shared_data(key).unwrap();
        let n: u64 = value
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let next = (n + 1).to_string();
        match hostcalls::set_shared_data(key, Some(next.as_bytes()), cas) {
            Ok(()) => return,
            Err(Status::CasMismatch) => continue,
            Err(e) => panic!("set_shared_data: {e:?}"),
        }
    }
}

impl Context for ProbeRoot {
    fn on_http_call_response(&mut self, token: u32, nh: usize, body_size: usize, _nt: usize) {
        if nh == 0 {
            let st = hostcalls::get_grpc_status().unwrap();
            info!(
                "call-failed root={} token={token} status={}:{}",
                self.id,
                st.0,
                st.1.unwrap_or_default()
            );
            return;
        }
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_default();
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        info!(
            "call-response root={} token={token} headers={nh} status={status} body={}",
            self.id,
            String::from_utf8_lossy(&body)
        );
    }

    fn on_done(&mut self) -> bool {
        info!("done root={}", self.id);
        true
    }
}

impl RootContext for ProbeRoot {
    fn on_vm_start(&mut self, size: usize) -> bool {
        let cfg = self.get_vm_configuration().unwrap_or_default();
        info!(
            "vm_start root={} size={size} vmcfg={}",
            self.id,
            String::from_utf8_lossy(&cfg)
        );
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let raw = String::from_utf8_lossy(&raw).into_owned();
        info!("configure root={} cfg={raw}", self.id);
        self.cfg = raw
            .split(';')
            .filter(|s| !s.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.to_string(), String::new()),
            })
            .collect();
        if self.cfg.contains_key("fail") {
            return false;
        }
        if self.cfg.contains_key("count_configures") {
            cas_increment("configures");
        }
        if let Some(name) = self.cfg.get("qreg").cloned() {
            let qid = hostcalls::register_shared_queue(&name).unwrap();
            info!("qreg root={} name={name} qid={qid}", self.id);
        }
        self.tick_metric = hostcalls::define_metric(MetricType::Counter, "probe.ticks").unwrap();
        self.gauge = hostcalls::define_metric(MetricType::Gauge, "probe.last_tick_root").unwrap();
        if let Some(ms) = self.num("tick") {
            self.set_tick_period(Duration::from_millis(ms));
        }
        true
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        hostcalls::increment_metric(self.tick_metric, 1).unwrap();
        hostcalls::record_metric(self.gauge, u64::from(self.id)).unwrap();
        info!("tick root={} n={}", self.id, self.ticks);
        if self.num("panic_tick") == Some(self.ticks) {
            panic!("probe panics on tick {}", self.ticks);
        }
        if let Some(cluster) = self.cfg.get("call").cloned() {
            let timeout = Duration::from_millis(self.num("timeout").unwrap_or(0));
            let r = self.dispatch_http_call(
                &cluster,
                vec![
                    (":method", "GET"),
                    (":path", "/probe"),
                    (":authority", "probe"),
                ],
                None,
                vec![],
                timeout,
            );
            match r {
                Ok(t) => info!("dispatch root={} token={t}", self.id),
                Err(e) => info!("dispatch root={} err={e:?}", self.id),
            }
        }
        if self.num("ticks_max") == Some(self.ticks) {
            self.set_tick_period(Duration::ZERO);
        }
    }

    fn on_queue_ready(&mut self, qid: u32) {
        let mut items = Vec::new();
        while let Ok(Some(v)) = hostcalls::dequeue_shared_queue(qid) {
            items.push(String::from_utf8_lossy(&v).into_owned());
        }
        info!(
            "queue-ready root={} qid={qid} items={}",
            self.id,
            items.join(",")
        );
    }

    fn create_http_context(&self, id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProbeStream {
            id,
            root: self.id,
            op: String::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct ProbeStream {
    id: u32,
    root: u32,
    op: String,
}

impl ProbeStream {
    fn header(&self, name: &str) -> String {
        self.get_http_request_header(name).unwrap_or_default()
    }

    fn reply(&self, body: String) -> Action {
        self.send_http_response(
            200,
            vec![("x-probe-op", self.op.as_str())],
            Some(body.as_bytes()),
        );
        Action::Pause
    }

    fn call(&self) -> Result<u32, Status> {
        let omit = self.header("x-omit");
        let extra: usize = self.header("x-count").parse().unwrap_or(0);
        let names: Vec<String> = (0..extra).map(|i| format!("x-extra-{i}")).collect();
        let mut headers: Vec<(&str, &str)> = [
            (":method", "POST"),
            (":path", "/hook"),
            (":authority", "pipeline"),
        ]
        .into_iter()
        .filter(|(k, _)| *k != omit)
        .collect();
        for n in &names {
            headers.push((n.as_str(), "v"));
        }
        let timeout = Duration::from_millis(self.header("x-timeout").parse().unwrap_or(0));
        self.dispatch_http_call(
            &self.header("x-cluster"),
            headers,
            Some(b"payload"),
            vec![],
            timeout,
        )
    }
}

impl Context for ProbeStream {
    fn on_http_call_response(&mut self, token: u32, nh: usize, body_size: usize, _nt: usize) {
        // Still paused: the request headers must be readable.
        let op = self.header("x-probe-op");
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        info!(
            "stream-call-response ctx={} token={token} headers={nh} body={} op={op}",
            self.id,
            String::from_utf8_lossy(&body)
        );
        self.set_http_request_header("x-probe-resumed", Some(&op));
        self.resume_http_request();
    }

    fn on_done(&mut self) -> bool {
        info!("stream-done ctx={}", self.id);
        true
    }
}

impl HttpContext for ProbeStream {
    fn on_http_request_headers(&mut self, n: usize, eos: bool) -> Action {
        self.op = self.header("x-probe-op");
        info!(
            "req-headers ctx={} root={} n={n} eos={eos} op={}",
            self.id, self.root, self.op
        );
        match self.op.as_str() {
            "get" => {
                let (v, cas) = hostcalls::get_shared_data(&self.header("x-key")).unwrap();
                let v = v.map_or("none".to_string(), |v| {
                    String::from_utf8_lossy(&v).into_owned()
                });
                self.reply(format!(
                    "value={v} cas={}",
                    cas.map_or("none".into(), |c| c.to_string())
                ))
            }
            "set" => {
                let value = self.get_http_request_header("x-value");
                let cas = self.header("x-cas").parse().ok();
                let r = hostcalls::set_shared_data(
                    &self.header("x-key"),
                    value.as_deref().map(str::as_bytes),
                    cas,
                );
                self.reply(match r {
                    Ok(()) => "ok".into(),
                    Err(e) => format!("err={e:?}"),
                })
            }
            "qreg" => {
                let qid = hostcalls::register_shared_queue(&self.header("x-name")).unwrap();
                self.reply(format!("qid={qid}"))
            }
            "qresolve" => {
                let r = hostcalls::resolve_shared_queue(
                    &self.header("x-vm-id"),
                    &self.header("x-name"),
                )
                .unwrap();
                self.reply(r.map_or("none".into(), |q| format!("qid={q}")))
            }
            "qenq" => {
                let qid = self.header("x-qid").parse().unwrap_or(0);
                let r =
                    hostcalls::enqueue_shared_queue(qid, Some(self.header("x-value").as_bytes()));
                self.reply(match r {
                    Ok(()) => "ok".into(),
                    Err(e) => format!("err={e:?}"),
                })
            }
            "qdeq" => {
                let qid = self.header("x-qid").parse().unwrap_or(0);
                self.reply(match hostcalls::dequeue_shared_queue(qid) {
                    Ok(Some(v)) => format!("value={}", String::from_utf8_lossy(&v)),
                    Ok(None) => "empty".into(),
                    Err(e) => format!("err={e:?}"),
                })
            }
            "call" => {
                let r = self.call();
                self.reply(match r {
                    Ok(t) => format!("token={t}"),
                    Err(e) => format!("err={e:?}"),
                })
            }
            "pause-call" => match self.call() {
                Ok(t) => {
                    info!("pause-call ctx={} token={t}", self.id);
                    Action::Pause
                }
                Err(e) => self.reply(format!("err={e:?}")),
            },
            "property" => {
                let path = self.header("x-path");
                let r = hostcalls::get_property(path.split('.').collect()).unwrap();
                self.reply(r.map_or("none".into(), |v| {
                    format!("value={}", String::from_utf8_lossy(&v))
                }))
            }
            "local" => {
                self.send_http_response(418, vec![("x-probe", "local")], Some(b"teapot"));
                Action::Pause
            }
            "tick" => {
                let ms = self.header("x-ms").parse().unwrap_or(0);
                hostcalls::set_tick_period(Duration::from_millis(ms)).unwrap();
                self.reply("ok".into())
            }
            "metric" => {
                let c = hostcalls::define_metric(MetricType::Counter, "probe.requests").unwrap();
                let g = hostcalls::define_metric(MetricType::Gauge, "probe.gauge").unwrap();
                let inc = hostcalls::increment_metric(c, 1);
                let inc0 = hostcalls::increment_metric(c, 0);
                let rec = hostcalls::record_metric(c, 5);
                let value = self.header("x-value").parse().unwrap_or(0);
                let grec = hostcalls::record_metric(g, value);
                let ginc = hostcalls::increment_metric(g, -1);
                let got = hostcalls::get_metric(c);
                self.reply(format!(
                    "inc={inc:?} inc0={inc0:?} rec={rec:?} grec={grec:?} ginc={ginc:?} get={got:?}"
                ))
            }
            "env" => self.reply(format!(
                "value={}",
                std::env::var("PROBE_ENV").unwrap_or_default()
            )),
            "time" => {
                let now = self
                    .get_current_time()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                self.reply(format!("now={}", now.as_millis()))
            }
            "panic" => panic!("probe panics on request"),
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        info!("req-body ctx={} size={size} eos={eos}", self.id);
        match self.op.as_str() {
            "late" => {
                let (st, _) = raw_value(0, "x-probe-op");
                let (pst, plen) = raw_pairs(0);
                info!("late-body value-status={st} pairs-status={pst} pairs-len={plen}");
                Action::Continue
            }
            "buffer" if !eos => Action::Pause,
            "buffer" => {
                let body = self.get_http_request_body(0, size).unwrap_or_default();
                let upper = String::from_utf8_lossy(&body).to_uppercase();
                self.set_http_request_body(0, size, upper.as_bytes());
                info!("req-body-final len={}", body.len());
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, n: usize, eos: bool) -> Action {
        let status = self.get_http_response_header(":status").unwrap_or_default();
        info!(
            "resp-headers ctx={} n={n} eos={eos} status={status}",
            self.id
        );
        if self.op == "late" {
            let (st, _) = raw_value(0, "x-probe-op");
            info!("late-resp value-status={st}");
        }
        self.set_http_response_header("x-probe-seen", Some("1"));
        if self.op == "resp-local" {
            self.send_http_response(299, vec![], Some(b"replaced"));
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        info!("resp-body ctx={} size={size} eos={eos}", self.id);
        Action::Continue
    }

    fn on_log(&mut self) {
        let (st, path) = raw_value(0, ":path");
        info!("log ctx={} path-status={st} path={path}", self.id);
    }
}
