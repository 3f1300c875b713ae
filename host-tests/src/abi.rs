//! The `env` imports of proxy-wasm ABI 0.2.1, with Envoy's statuses (envoy
//! `source/extensions/common/wasm/context.cc`, cpp-host `src/exports.cc`).
//!
//! Rules kept everywhere: never return 6 (InvalidMemoryAccess) or 12 (Unimplemented), which
//! the Rust SDK cannot represent; never call into the module from a hostcall (except the
//! allocator, as Envoy does): anything that would run module code is recorded and run by the
//! host after the current callback returns.

use wasmtime::Result;
use wasmtime::{Caller, Linker};

use crate::clock::EventKind;
use crate::memory::Mem;
use crate::metrics::{MetricError, Metrics};
use crate::pairs;
use crate::shared::{Consumer, SetResult};
use crate::types::{CallRecord, CallReply, CallRequest, CANARY};
use crate::vm::{LocalReply, VmCtx, VmData};
use crate::world::{Inflight, Resolved};

pub(crate) const OK: i32 = 0;
pub(crate) const NOT_FOUND: i32 = 1;
pub(crate) const BAD_ARGUMENT: i32 = 2;
pub(crate) const EMPTY: i32 = 7;
pub(crate) const CAS_MISMATCH: i32 = 8;
pub(crate) const INTERNAL_FAILURE: i32 = 10;
/// `proxy_get_status` code after a reset HTTP call.
pub(crate) const BROKEN_CONNECTION: u32 = 11;

type C<'a> = Caller<'a, VmData>;

/// Registers each `fn <name>(<caller pattern>, <params>) -> <result> { body }` as the `env`
/// import `<name>`, a closure over wasmtime's `Caller` (`C`): the ABI name is written once, as
/// the function's, and no registration boilerplate stands between two hostcalls. (rustfmt does
/// not format inside the macro: keep the bodies as it would.)
macro_rules! hostcalls {
    ($l:ident; $(fn $name:ident($c:pat_param $(, $p:tt: $t:ty)*) -> $ret:ty { $($body:tt)* })*) => {
        $($l.func_wrap("env", stringify!($name), |$c: C $(, $p: $t)*| -> $ret { $($body)* })?;)*
    };
}

pub(crate) const TIMEOUT_BODY: &str = "upstream request timeout";
pub(crate) const CONNECT_FAILURE_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";

/// Headers of a reply Envoy generates itself (`sendLocalReply`).
pub(crate) fn envoy_reply(status: u16, body: &str) -> Resolved {
    Resolved::Response {
        status,
        headers: vec![
            ("content-length".into(), body.len().to_string()),
            ("content-type".into(), "text/plain".into()),
        ],
        body: body.as_bytes().to_vec(),
    }
}

/// A readable buffer (BufferType) for the effective context, if one exists right now.
fn buffer(ctx: &VmCtx, ty: i32) -> Option<Vec<u8>> {
    match ty {
        0 => ctx
            .streams
            .get(&ctx.effective)
            .filter(|s| s.req_body_open)
            .map(|s| s.req_body.clone()),
        1 => ctx
            .streams
            .get(&ctx.effective)
            .filter(|s| s.resp_body_open)
            .map(|s| s.resp_body.clone()),
        4 => ctx.call_window.as_ref().map(|w| w.body.clone()),
        6 => Some(ctx.vm_config.clone()),
        // Envoy exposes the plugin configuration only while `on_configure` runs.
        7 if ctx.configuring => Some(ctx.plugin_config.clone()),
        _ => None,
    }
}

fn buffer_mut(ctx: &mut VmCtx, ty: i32) -> Option<&mut Vec<u8>> {
    let eff = ctx.effective;
    match ty {
        0 => ctx
            .streams
            .get_mut(&eff)
            .filter(|s| s.req_body_open)
            .map(|s| &mut s.req_body),
        1 => ctx
            .streams
            .get_mut(&eff)
            .filter(|s| s.resp_body_open)
            .map(|s| &mut s.resp_body),
        _ => None,
    }
}

/// The header map (MapType) of the effective context, if it is inside its window: request
/// headers until they are forwarded, response headers during response callbacks, both again
/// in `on_log`; HTTP-call response headers/trailers during `on_http_call_response`.
fn map_mut(ctx: &mut VmCtx, ty: i32) -> Option<&mut Vec<(String, String)>> {
    let eff = ctx.effective;
    match ty {
        0 => ctx
            .streams
            .get_mut(&eff)
            .filter(|s| s.req_headers_open || s.log_phase)
            .map(|s| &mut s.req_headers),
        2 => ctx
            .streams
            .get_mut(&eff)
            .filter(|s| s.resp_headers_open || s.log_phase)
            .map(|s| &mut s.resp_headers),
        6 => ctx.call_window.as_mut().map(|w| &mut w.headers),
        7 => ctx.call_window.as_mut().map(|w| &mut w.trailers),
        _ => None,
    }
}

/// Envoy's `Buffer::copyFrom`: start 0 replaces the first `size` bytes, start >= length
/// appends, anything else is BadArgument.
fn set_buffer(buf: &mut Vec<u8>, start: usize, size: usize, data: &[u8]) -> i32 {
    if start == 0 {
        let n = size.min(buf.len());
        buf.splice(..n, data.iter().copied());
        OK
    } else if start >= buf.len() {
        buf.extend_from_slice(data);
        OK
    } else {
        BAD_ARGUMENT
    }
}

fn metric_status(e: MetricError) -> i32 {
    match e {
        MetricError::NotFound => NOT_FOUND,
        MetricError::BadArgument => BAD_ARGUMENT,
    }
}

/// Registers every `env` import the Rust SDK 0.2.5 can reference.
pub(crate) fn add(l: &mut Linker<VmData>) -> Result<()> {
    hostcalls! { l;
        fn proxy_log(mut c, level: i32, ptr: i32, len: i32) -> Result<i32> {
            let msg = c.string(ptr, len)?;
            let vm = c.data().index;
            c.data().world.borrow_mut().log(vm, level as u32, msg);
            Ok(OK)
        }
        fn proxy_get_log_level(mut c, ptr: i32) -> Result<i32> {
            let level = c.data().world.borrow().log_level;
            c.put_u32(ptr, level)?;
            Ok(OK)
        }
        fn proxy_get_current_time_nanoseconds(mut c, ptr: i32) -> Result<i32> {
            let now = c.data().world.borrow().now();
            c.put_u64(ptr, now.saturating_mul(1_000_000))?;
            Ok(OK)
        }
        fn proxy_set_tick_period_milliseconds(mut c, period: i32) -> Result<i32> {
            set_tick_period(&mut c, period as u32);
            Ok(OK)
        }
    }
    add_buffers(l)?;
    add_header_maps(l)?;
    add_properties(l)?;
    add_shared(l)?;
    add_stream_control(l)?;
    add_http_call(l)?;
    add_metrics(l)?;
    add_misc(l)?;
    Ok(())
}

/// Envoy attaches the timer to the *root* context, even when called from a stream, and
/// (re)arms it `period` from now; 0 disables it.
fn set_tick_period(c: &mut C, period: u32) {
    let (index, gen) = (c.data().index, c.data().gen);
    let world = c.data().world.clone();
    let ctx = &mut c.data_mut().ctx;
    let root = ctx.root_of(ctx.effective);
    let Some(r) = ctx.roots.get_mut(&root) else {
        return;
    };
    r.period_ms = period;
    r.epoch += 1;
    if index == CANARY {
        return;
    }
    let mut w = world.borrow_mut();
    *w.tick_calls.entry((index, root)).or_insert(0) += 1;
    if period > 0 && !r.retired {
        let epoch = r.epoch;
        w.clock.schedule_in(
            u64::from(period),
            EventKind::Tick {
                vm: index,
                gen,
                root,
                epoch,
            },
        );
    }
}

fn add_buffers(l: &mut Linker<VmData>) -> Result<()> {
    hostcalls! { l;
        fn proxy_get_buffer_bytes(mut c, ty: i32, start: i32, max: i32, ptr_ptr: i32,
                size_ptr: i32) -> Result<i32> {
            if !(0..=8).contains(&ty) {
                return Ok(BAD_ARGUMENT);
            }
            let Some(buf) = buffer(&c.data().ctx, ty) else {
                return Ok(NOT_FOUND);
            };
            let start = (start as u32 as usize).min(buf.len());
            let len = (max as u32 as usize).min(buf.len() - start);
            // Envoy writes nothing for an empty range and returns Ok (the SDK sees NULL).
            if len > 0 {
                c.copy_out(&buf[start..start + len], ptr_ptr, size_ptr)?;
            }
            Ok(OK)
        }
        fn proxy_set_buffer_bytes(mut c, ty: i32, start: i32, size: i32, ptr: i32,
                len: i32) -> Result<i32> {
            let data = c.bytes(ptr, len)?;
            let Some(buf) = buffer_mut(&mut c.data_mut().ctx, ty) else {
                return Ok(NOT_FOUND);
            };
            Ok(set_buffer(
                buf,
                start as u32 as usize,
                size as u32 as usize,
                &data,
            ))
        }
    }
    Ok(())
}

fn add_header_maps(l: &mut Linker<VmData>) -> Result<()> {
    hostcalls! { l;
        fn proxy_get_header_map_pairs(mut c, ty: i32, ptr_ptr: i32, size_ptr: i32) -> Result<i32> {
            if !(0..=7).contains(&ty) {
                return Ok(BAD_ARGUMENT);
            }
            // Outside its window Envoy answers Ok with an empty map.
            let bytes = match map_mut(&mut c.data_mut().ctx, ty) {
                Some(m) if !m.is_empty() => pairs::serialize(m),
                _ => Vec::new(),
            };
            c.copy_out(&bytes, ptr_ptr, size_ptr)?;
            Ok(OK)
        }
        fn proxy_set_header_map_pairs(mut c, ty: i32, ptr: i32, len: i32) -> Result<i32> {
            let new = pairs::deserialize(&c.bytes(ptr, len)?);
            Ok(with_map(&mut c, ty, |m| {
                *m = new
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect();
                OK
            }))
        }
        fn proxy_get_header_map_value(mut c, ty: i32, kp: i32, kl: i32, ptr_ptr: i32,
                size_ptr: i32) -> Result<i32> {
            let key = header_name(&mut c, kp, kl)?;
            let mut value = None;
            // Outside its window Envoy answers BadArgument (the SDK panics on it).
            let status = with_map(&mut c, ty, |m| {
                value = m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
                if value.is_some() {
                    OK
                } else {
                    NOT_FOUND
                }
            });
            if let Some(v) = value {
                c.copy_out(v.as_bytes(), ptr_ptr, size_ptr)?;
            }
            Ok(status)
        }
        fn proxy_add_header_map_value(mut c, ty: i32, kp: i32, kl: i32, vp: i32,
                vl: i32) -> Result<i32> {
            let (key, val) = (header_name(&mut c, kp, kl)?, c.string(vp, vl)?);
            Ok(with_map(&mut c, ty, |m| {
                m.push((key, val));
                OK
            }))
        }
        fn proxy_replace_header_map_value(mut c, ty: i32, kp: i32, kl: i32, vp: i32,
                vl: i32) -> Result<i32> {
            let (key, val) = (header_name(&mut c, kp, kl)?, c.string(vp, vl)?);
            Ok(with_map(&mut c, ty, |m| {
                match m.iter().position(|(k, _)| *k == key) {
                    Some(i) => {
                        m[i].1 = val;
                        let mut n = 0;
                        m.retain(|(k, _)| {
                            n += 1;
                            n - 1 <= i || *k != key
                        });
                    }
                    None => m.push((key, val)),
                }
                OK
            }))
        }
        fn proxy_remove_header_map_value(mut c, ty: i32, kp: i32, kl: i32) -> Result<i32> {
            let key = header_name(&mut c, kp, kl)?;
            Ok(with_map(&mut c, ty, |m| {
                m.retain(|(k, _)| *k != key);
                OK
            }))
        }
    }
    Ok(())
}

/// A header name from module memory, lowercased as Envoy's header maps keep them.
fn header_name(c: &mut C, ptr: i32, len: i32) -> Result<String> {
    Ok(c.string(ptr, len)?.to_ascii_lowercase())
}

/// `f` on header map `ty` of the effective context; BadArgument outside its window.
fn with_map(c: &mut C, ty: i32, f: impl FnOnce(&mut Vec<(String, String)>) -> i32) -> i32 {
    map_mut(&mut c.data_mut().ctx, ty).map_or(BAD_ARGUMENT, f)
}

fn add_properties(l: &mut Linker<VmData>) -> Result<()> {
    hostcalls! { l;
        fn proxy_get_property(mut c, pp: i32, pl: i32, ptr_ptr: i32, size_ptr: i32) -> Result<i32> {
            let path = c.bytes(pp, pl)?;
            let value = if let Some(v) = c.data().ctx.properties.get(&path) {
                Some(v.clone())
            } else {
                let w = c.data().world.borrow();
                match path.as_slice() {
                    b"plugin_root_id" => Some(w.root_id.clone().into_bytes()),
                    b"plugin_vm_id" => Some(w.vm_id.clone().into_bytes()),
                    b"plugin_name" => Some(w.plugin_name.clone().into_bytes()),
                    _ => None,
                }
            };
            let Some(v) = value else {
                return Ok(NOT_FOUND);
            };
            c.copy_out(&v, ptr_ptr, size_ptr)?;
            Ok(OK)
        }
        fn proxy_set_property(mut c, pp: i32, pl: i32, vp: i32, vl: i32) -> Result<i32> {
            let path = c.bytes(pp, pl)?;
            let val = c.bytes(vp, vl)?;
            c.data_mut().ctx.properties.insert(path, val);
            Ok(OK)
        }
    }
    Ok(())
}

fn add_shared(l: &mut Linker<VmData>) -> Result<()> {
    hostcalls! { l;
        fn proxy_get_shared_data(mut c, kp: i32, kl: i32, ptr_ptr: i32, size_ptr: i32,
                cas_ptr: i32) -> Result<i32> {
            let key = c.bytes(kp, kl)?;
            let found = {
                let w = c.data().world.borrow();
                w.shared.get(&w.vm_id, &key)
            };
            let Some((value, cas)) = found else {
                return Ok(NOT_FOUND);
            };
            c.copy_out(&value, ptr_ptr, size_ptr)?;
            c.put_u32(cas_ptr, cas)?;
            Ok(OK)
        }
        fn proxy_set_shared_data(mut c, kp: i32, kl: i32, vp: i32, vl: i32,
                cas: i32) -> Result<i32> {
            let key = c.bytes(kp, kl)?;
            let value = c.bytes(vp, vl)?;
            let mut w = c.data().world.borrow_mut();
            let vm_id = w.vm_id.clone();
            Ok(match w.shared.set(&vm_id, &key, &value, cas as u32) {
                SetResult::Ok => OK,
                SetResult::CasMismatch => CAS_MISMATCH,
            })
        }
        fn proxy_register_shared_queue(mut c, np: i32, nl: i32, qid_ptr: i32) -> Result<i32> {
            let name = c.string(np, nl)?;
            let ctx = &c.data().ctx;
            // on_queue_ready goes to the root, even if a stream registered.
            let consumer = Consumer {
                vm: c.data().index,
                root: ctx.root_of(ctx.effective),
            };
            let token = {
                let mut w = c.data().world.borrow_mut();
                let vm_id = w.vm_id.clone();
                w.queues.register(&vm_id, &name, consumer)
            };
            c.put_u32(qid_ptr, token)?;
            Ok(OK)
        }
        fn proxy_resolve_shared_queue(mut c, vp: i32, vl: i32, np: i32, nl: i32,
                qid_ptr: i32) -> Result<i32> {
            let (vm_id, name) = (c.string(vp, vl)?, c.string(np, nl)?);
            let token = c.data().world.borrow().queues.resolve(&vm_id, &name);
            match token {
                Some(t) => {
                    c.put_u32(qid_ptr, t)?;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        }
        fn proxy_enqueue_shared_queue(mut c, qid: i32, ptr: i32, len: i32) -> Result<i32> {
            let value = c.bytes(ptr, len)?;
            let mut w = c.data().world.borrow_mut();
            let Some(consumer) = w.queues.enqueue(qid as u32, value) else {
                return Ok(NOT_FOUND);
            };
            // Posted to the consumer's thread: runs after this callback, never inside it.
            if consumer.vm != CANARY {
                w.clock.schedule_in(
                    0,
                    EventKind::QueueReady {
                        vm: consumer.vm,
                        root: consumer.root,
                        qid: qid as u32,
                    },
                );
            }
            Ok(OK)
        }
        fn proxy_dequeue_shared_queue(mut c, qid: i32, ptr_ptr: i32, size_ptr: i32) -> Result<i32> {
            let r = c.data().world.borrow_mut().queues.dequeue(qid as u32);
            match r {
                Ok(v) => {
                    c.copy_out(&v, ptr_ptr, size_ptr)?;
                    Ok(OK)
                }
                Err(true) => Ok(NOT_FOUND),
                Err(false) => Ok(EMPTY),
            }
        }
    }
    Ok(())
}

fn add_stream_control(l: &mut Linker<VmData>) -> Result<()> {
    hostcalls! { l;
        fn proxy_continue_stream(mut c, ty: i32) -> Result<i32> {
            if !(0..=1).contains(&ty) {
                return Ok(BAD_ARGUMENT);
            }
            // Envoy defers continueDecoding/Encoding until the callback returns, and drops its
            // pointer to the request headers right away.
            if let Some(s) = c.data_mut().ctx.effective_stream() {
                if ty == 0 {
                    s.resume_request = true;
                    s.req_headers_open = false;
                } else {
                    s.resume_response = true;
                    s.resp_headers_open = false;
                }
            }
            Ok(OK)
        }
        fn proxy_close_stream(mut c, ty: i32) -> Result<i32> {
            if !(0..=1).contains(&ty) {
                return Ok(BAD_ARGUMENT);
            }
            if let Some(s) = c.data_mut().ctx.effective_stream() {
                s.reset = true;
            }
            Ok(OK)
        }
        fn proxy_send_local_response(mut c, status: i32, _dp: i32, _dl: i32, bp: i32, bl: i32,
                hp: i32, hl: i32, _grpc: i32) -> Result<i32> {
            let body = c.bytes(bp, bl)?;
            let headers = pairs::deserialize(&c.bytes(hp, hl)?);
            // Deferred until the callback returns (envoy `sendLocalResponse`); from a root
            // context there is no stream and nothing happens.
            if let Some(s) = c.data_mut().ctx.effective_stream() {
                s.local_reply = Some(LocalReply {
                    status: status as u32,
                    headers,
                    body,
                });
            }
            Ok(OK)
        }
    }
    Ok(())
}

fn add_http_call(l: &mut Linker<VmData>) -> Result<()> {
    hostcalls! { l;
        fn proxy_http_call(mut c, up: i32, upl: i32, hp: i32, hl: i32, bp: i32, bl: i32, _tp: i32,
                _tl: i32, timeout: i32, token_ptr: i32) -> Result<i32> {
            let cluster = c.string(up, upl)?;
            let headers = pairs::deserialize(&c.bytes(hp, hl)?);
            let body = c.bytes(bp, bl)?;
            let (status, token) = http_call(&mut c, cluster, headers, body, timeout);
            if let Some(t) = token {
                c.put_u32(token_ptr, t)?;
            }
            Ok(status)
        }
        fn proxy_get_status(mut c, code_ptr: i32, ptr_ptr: i32, size_ptr: i32) -> Result<i32> {
            let ctx = &c.data().ctx;
            let (code, msg) = ctx
                .roots
                .get(&ctx.root_of(ctx.effective))
                .map(|r| r.status.clone())
                .unwrap_or_default();
            c.put_u32(code_ptr, code)?;
            c.copy_out(msg.as_bytes(), ptr_ptr, size_ptr)?;
            Ok(OK)
        }
        // gRPC is not modelled: calls fail inline (InternalFailure is a status the SDK handles).
        fn proxy_grpc_call(_, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32,
                _: i32, _: i32, _: i32) -> i32 { INTERNAL_FAILURE }
        fn proxy_grpc_stream(_, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32,
                _: i32) -> i32 { INTERNAL_FAILURE }
        fn proxy_grpc_send(_, _: i32, _: i32, _: i32, _: i32) -> i32 { NOT_FOUND }
        fn proxy_grpc_cancel(_, _: i32) -> i32 { NOT_FOUND }
        fn proxy_grpc_close(_, _: i32) -> i32 { NOT_FOUND }
    }
    Ok(())
}

/// Envoy's `httpCall`: validate, send on the *root* context, answer later through the event
/// queue. Returns (status, token).
fn http_call(
    c: &mut C,
    cluster: String,
    mut headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: i32,
) -> (i32, Option<u32>) {
    let (index, gen) = (c.data().index, c.data().gen);
    let world = c.data().world.clone();
    let mut w = world.borrow_mut();
    let now = w.now();
    let has = |h: &[(String, String)], k: &str| h.iter().any(|(n, _)| n == k);
    let status = if timeout < 0
        || !w.clusters.contains(&cluster)
        || !has(&headers, ":path")
        || !has(&headers, ":method")
        || !has(&headers, ":authority")
    {
        BAD_ARGUMENT
    } else {
        OK
    };
    if status == OK && !body.is_empty() {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
        headers.push(("content-length".into(), body.len().to_string()));
    }
    let timeout_ms = u64::from(timeout.max(0) as u32);
    let req = CallRequest {
        cluster: cluster.clone(),
        headers,
        body,
        timeout_ms,
    };
    let mut record = CallRecord {
        at_ms: now,
        vm: index,
        request: req.clone(),
        result: status as u32,
        token: None,
    };
    if status != OK {
        w.calls.push(record);
        return (status, None);
    }
    let ctx = &mut c.data_mut().ctx;
    let token = ctx.alloc_token();
    let root = ctx.root_of(ctx.effective);
    // The canary's calls are lost with it: Envoy kills the canary right after on_configure.
    if index == CANARY {
        record.token = Some(token);
        w.calls.push(record);
        return (OK, Some(token));
    }
    let reply = match w.responders.get_mut(&cluster) {
        Some(f) => f(&req, now),
        // No responder: nothing listens on that cluster.
        None => CallReply::ConnectFailure,
    };
    let scheduled: Option<(u64, Resolved)> = match reply {
        CallReply::InlineFailure => {
            record.result = INTERNAL_FAILURE as u32;
            w.calls.push(record);
            return (INTERNAL_FAILURE, None);
        }
        CallReply::Hang => None,
        CallReply::Timeout if timeout_ms == 0 => None,
        CallReply::Timeout => Some((timeout_ms, envoy_reply(504, TIMEOUT_BODY))),
        CallReply::ConnectFailure => Some((0, envoy_reply(503, CONNECT_FAILURE_BODY))),
        CallReply::ResetAfterHeaders => Some((0, Resolved::Reset)),
        CallReply::Reply {
            status,
            headers,
            body,
            delay_ms,
        } => {
            if timeout_ms > 0 && delay_ms >= timeout_ms {
                Some((timeout_ms, envoy_reply(504, TIMEOUT_BODY)))
            } else {
                Some((
                    delay_ms,
                    Resolved::Response {
                        status,
                        headers,
                        body,
                    },
                ))
            }
        }
    };
    if let Some((delay, reply)) = scheduled {
        w.inflight
            .insert((index, token), Inflight { gen, root, reply });
        w.clock.schedule_in(
            delay,
            EventKind::CallReply {
                vm: index,
                gen,
                token,
            },
        );
    }
    record.token = Some(token);
    w.calls.push(record);
    (OK, Some(token))
}

/// `f` on Envoy's process-wide stats, for the calling VM instance (metric ids are per VM).
fn with_metrics<T>(c: &C, f: impl FnOnce(&mut Metrics, u64) -> T) -> T {
    let inst = c.data().instance;
    f(&mut c.data().world.borrow_mut().metrics, inst)
}

/// OK after writing a successful result with `put`, or the metric error's status.
fn metric_result<V>(r: Result<V, MetricError>, put: impl FnOnce(V) -> Result<()>) -> Result<i32> {
    match r {
        Ok(v) => put(v).map(|()| OK),
        Err(e) => Ok(metric_status(e)),
    }
}

fn add_metrics(l: &mut Linker<VmData>) -> Result<()> {
    hostcalls! { l;
        fn proxy_define_metric(mut c, ty: i32, np: i32, nl: i32, id_ptr: i32) -> Result<i32> {
            let name = c.string(np, nl)?;
            let r = with_metrics(&c, |m, inst| m.define(inst, ty as u32, &name));
            metric_result(r, |id| c.put_u32(id_ptr, id))
        }
        fn proxy_increment_metric(c, id: i32, offset: i64) -> i32 {
            let r = with_metrics(&c, |m, inst| m.increment(inst, id as u32, offset));
            r.map_or_else(metric_status, |_| OK)
        }
        fn proxy_record_metric(c, id: i32, value: i64) -> i32 {
            let r = with_metrics(&c, |m, inst| m.record(inst, id as u32, value as u64));
            r.map_or_else(metric_status, |_| OK)
        }
        fn proxy_get_metric(mut c, id: i32, ptr: i32) -> Result<i32> {
            let r = with_metrics(&c, |m, inst| m.get(inst, id as u32));
            metric_result(r, |v| c.put_u64(ptr, v))
        }
    }
    Ok(())
}

fn add_misc(l: &mut Linker<VmData>) -> Result<()> {
    hostcalls! { l;
        fn proxy_set_effective_context(mut c, id: i32) -> i32 {
            let ctx = &mut c.data_mut().ctx;
            let id = id as u32;
            if ctx.roots.contains_key(&id) || ctx.streams.contains_key(&id) {
                ctx.effective = id;
                OK
            } else {
                BAD_ARGUMENT
            }
        }
        fn proxy_done(mut c) -> i32 {
            // Only a root whose on_done returned false can finish; it is deleted after the
            // current callback (envoy `WasmBase::done`).
            let ctx = &mut c.data_mut().ctx;
            let eff = ctx.effective;
            match ctx.roots.get_mut(&eff) {
                Some(r) if r.pending_done => {
                    r.pending_done = false;
                    ctx.pending_deletes.push(eff);
                    OK
                }
                _ => NOT_FOUND,
            }
        }
        fn proxy_call_foreign_function(_, _: i32, _: i32, _: i32, _: i32, _: i32,
                _: i32) -> i32 { NOT_FOUND }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_buffer_follows_envoy_copy_from() {
        let mut b = b"hello".to_vec();
        assert_eq!(set_buffer(&mut b, 0, 5, b"bye"), OK);
        assert_eq!(b, b"bye");
        assert_eq!(set_buffer(&mut b, 3, 0, b"!"), OK);
        assert_eq!(b, b"bye!");
        assert_eq!(set_buffer(&mut b, 0, 0, b">"), OK);
        assert_eq!(b, b">bye!");
        assert_eq!(set_buffer(&mut b, 2, 1, b"x"), BAD_ARGUMENT);
    }
}
