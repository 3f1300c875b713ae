//! One VM: a wasmtime `Store` + `Instance` of the module (one Envoy thread-local VM), with the
//! per-VM context bookkeeping the hostcalls need.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use wasmtime::error::Context as _;
use wasmtime::{format_err, Result};
use wasmtime::{
    Instance, InstancePre, Memory, Store, StoreLimits, StoreLimitsBuilder, TypedFunc, WasmParams,
    WasmResults,
};

use crate::world::World;

/// Envoy caps every VM's linear memory at 1 GiB (cpp-host `limits.h`).
const MAX_MEMORY: usize = 1 << 30;

/// Timer and call state of a root context.
#[derive(Debug)]
pub(crate) struct RootState {
    pub period_ms: u32,
    /// Bumped on every (re-)arm; older tick events are stale.
    pub epoch: u64,
    /// Its config was replaced: no more ticks, replies or queue deliveries.
    pub retired: bool,
    /// `proxy_on_done` returned false: deleted once the module calls `proxy_done`.
    pub pending_done: bool,
    /// `proxy_get_status` of the last failed call.
    pub status: (u32, String),
}

impl RootState {
    pub fn new() -> Self {
        RootState {
            period_ms: 0,
            epoch: 0,
            retired: false,
            pending_done: false,
            status: (0, String::new()),
        }
    }
}

/// A `proxy_send_local_response` waiting for the callback to return.
#[derive(Clone, Debug)]
pub(crate) struct LocalReply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One HTTP stream's maps and buffers, with Envoy's availability windows.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    pub root: u32,
    pub req_headers: Vec<(String, String)>,
    pub req_headers_open: bool,
    pub resp_headers: Vec<(String, String)>,
    pub resp_headers_open: bool,
    /// Request data not yet passed on (current chunk, or everything buffered while paused).
    pub req_body: Vec<u8>,
    pub req_body_open: bool,
    pub resp_body: Vec<u8>,
    pub resp_body_open: bool,
    /// During `proxy_on_log` both header maps are readable again (access-log phase).
    pub log_phase: bool,
    pub local_reply: Option<LocalReply>,
    pub resume_request: bool,
    pub resume_response: bool,
    pub reset: bool,
}

/// The response of an HTTP call, readable only during `proxy_on_http_call_response`.
#[derive(Debug)]
pub(crate) struct CallWindow {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Always empty (no trailers are modelled), but readable during the window.
    pub trailers: Vec<(String, String)>,
}

/// Per-VM hostcall state.
pub(crate) struct VmCtx {
    next_ctx: u32,
    next_token: u32,
    /// Context the hostcalls act on: the callback's, or `proxy_set_effective_context`'s.
    pub effective: u32,
    /// Root that new streams are created under (the latest config's).
    pub current_root: u32,
    pub roots: BTreeMap<u32, RootState>,
    pub streams: HashMap<u32, StreamState>,
    /// Inside `proxy_on_configure`: BufferType 7 is readable only then.
    pub configuring: bool,
    pub plugin_config: Vec<u8>,
    pub vm_config: Vec<u8>,
    pub call_window: Option<CallWindow>,
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    pub rng: u64,
    /// Partial stdout / stderr lines.
    pub out_buf: [Vec<u8>; 2],
    /// Roots whose `proxy_done` arrived: `proxy_on_delete` after the current callback.
    pub pending_deletes: Vec<u32>,
}

impl VmCtx {
    pub fn alloc_ctx(&mut self) -> u32 {
        self.next_ctx += 1;
        self.next_ctx
    }

    pub fn alloc_token(&mut self) -> u32 {
        self.next_token += 1;
        self.next_token
    }

    /// The root context that owns `ctx` (Envoy's `root_context()`).
    pub fn root_of(&self, ctx: u32) -> u32 {
        if self.roots.contains_key(&ctx) {
            ctx
        } else if let Some(s) = self.streams.get(&ctx) {
            s.root
        } else {
            self.current_root
        }
    }

    pub fn effective_stream(&mut self) -> Option<&mut StreamState> {
        self.streams.get_mut(&self.effective)
    }

    /// splitmix64: deterministic `random_get`.
    pub fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Store data of one VM.
pub(crate) struct VmData {
    pub world: Rc<RefCell<World>>,
    /// VM index, or `CANARY`.
    pub index: usize,
    /// Incremented on every reload of this index.
    pub gen: u32,
    /// Unique per instance in the process (metric ids are per instance).
    pub instance: u64,
    pub memory: Option<Memory>,
    pub alloc: Option<TypedFunc<i32, i32>>,
    limits: StoreLimits,
    pub ctx: VmCtx,
}

impl VmData {
    pub fn new(world: Rc<RefCell<World>>, spec: &VmSpec) -> Self {
        VmData {
            world,
            index: spec.index,
            gen: spec.gen,
            instance: spec.instance,
            memory: None,
            alloc: None,
            limits: StoreLimitsBuilder::new().memory_size(MAX_MEMORY).build(),
            ctx: VmCtx {
                next_ctx: 0,
                next_token: 0,
                effective: 0,
                current_root: 0,
                roots: BTreeMap::new(),
                streams: HashMap::new(),
                configuring: false,
                plugin_config: spec.plugin_config.to_vec(),
                vm_config: spec.vm_config.to_vec(),
                call_window: None,
                properties: HashMap::new(),
                rng: spec.seed
                    ^ (spec.index as u64).wrapping_mul(0xA24B_AED4_963E_E407)
                    ^ u64::from(spec.gen).wrapping_mul(0x9FB2_1C65_1E98_DF25),
                out_buf: [Vec::new(), Vec::new()],
                pending_deletes: Vec::new(),
            },
        }
    }

    /// Store data for linking checks only.
    pub fn scratch(world: Rc<RefCell<World>>) -> Self {
        Self::new(
            world,
            &VmSpec {
                index: crate::types::CANARY,
                gen: 0,
                instance: 0,
                plugin_config: &[],
                vm_config: &[],
                seed: 0,
                fuel: false,
            },
        )
    }

    /// Emits complete stdout (info) / stderr (error) lines as log lines; `all` flushes partial
    /// lines too (when the VM dies).
    pub fn flush_output(&mut self, all: bool) {
        for fd in 0..2 {
            let buf = &mut self.ctx.out_buf[fd];
            let mut lines = Vec::new();
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
            if all && !buf.is_empty() {
                lines.push(String::from_utf8_lossy(buf).into_owned());
                buf.clear();
            }
            let level = if fd == 0 { 2 } else { 4 };
            let mut w = self.world.borrow_mut();
            for l in lines {
                w.log(self.index, level, l);
            }
        }
    }
}

/// `proxy_on_http_call_response(root, token, headers, body, trailers)`.
type CallResponseFn = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// The module's callbacks (ABI 0.2.1); missing ones are simply not called, like Envoy.
#[derive(Default)]
pub(crate) struct Exports {
    pub initialize: Option<TypedFunc<(), ()>>,
    pub start: Option<TypedFunc<(), ()>>,
    pub main: Option<TypedFunc<(i32, i32), i32>>,
    pub context_create: Option<TypedFunc<(i32, i32), ()>>,
    pub vm_start: Option<TypedFunc<(i32, i32), i32>>,
    pub configure: Option<TypedFunc<(i32, i32), i32>>,
    pub done: Option<TypedFunc<i32, i32>>,
    pub log: Option<TypedFunc<i32, ()>>,
    pub delete: Option<TypedFunc<i32, ()>>,
    pub tick: Option<TypedFunc<i32, ()>>,
    pub queue_ready: Option<TypedFunc<(i32, i32), ()>>,
    pub http_call_response: Option<CallResponseFn>,
    pub request_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub request_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub response_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub response_body: Option<TypedFunc<(i32, i32, i32), i32>>,
}

fn typed<P: WasmParams, R: WasmResults>(
    inst: &Instance,
    store: &mut Store<VmData>,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>> {
    match inst.get_func(&mut *store, name) {
        None => Ok(None),
        Some(f) => Ok(Some(f.typed(&*store).with_context(|| {
            format!("export {name} has a signature that does not match ABI 0.2.1")
        })?)),
    }
}

/// `Exports { field: typed(inst, s, "proxy_on_<field>")?, .. }` for each callback named: the
/// field names are the ABI's callback names without their `proxy_on_` prefix.
macro_rules! callbacks {
    ($inst:expr, $s:expr; $($field:ident)*) => {
        Exports {
            $($field: typed($inst, $s, concat!("proxy_on_", stringify!($field)))?,)*
            ..Exports::default()
        }
    };
}

impl Exports {
    fn new(inst: &Instance, s: &mut Store<VmData>) -> Result<Self> {
        Ok(Exports {
            initialize: typed(inst, s, "_initialize")?,
            start: typed(inst, s, "_start")?,
            main: typed(inst, s, "main").ok().flatten(),
            ..callbacks!(inst, s;
                context_create vm_start configure done log delete tick queue_ready
                http_call_response request_headers request_body response_headers response_body)
        })
    }
}

/// A trap (or a host error inside a hostcall, which traps too), with wasmtime's message.
#[derive(Debug, Clone)]
pub(crate) struct Trap(pub String);

/// Parameters of a fresh VM instance.
pub(crate) struct VmSpec<'a> {
    pub index: usize,
    pub gen: u32,
    pub instance: u64,
    pub plugin_config: &'a [u8],
    pub vm_config: &'a [u8],
    pub seed: u64,
    /// Meter fuel (the module must come from the fuel engine).
    pub fuel: bool,
}

pub(crate) struct Vm {
    pub index: usize,
    pub gen: u32,
    pub store: Store<VmData>,
    pub ex: Exports,
    pub dead: bool,
    /// Fuel in the store when it was created (`None` without fuel metering).
    pub fuel_start: Option<u64>,
}

impl Vm {
    pub fn new(pre: &InstancePre<VmData>, world: Rc<RefCell<World>>, spec: VmSpec) -> Result<Vm> {
        let data = VmData::new(world, &spec);
        let mut store = Store::new(pre.module().engine(), data);
        store.limiter(|d| &mut d.limits);
        let fuel_start = if spec.fuel {
            store.set_fuel(u64::MAX)?;
            Some(store.get_fuel()?)
        } else {
            None
        };
        let inst = pre
            .instantiate(&mut store)
            .context("instantiating the module")?;
        let memory = inst.get_memory(&mut store, "memory");
        // cpp-host tries `malloc`, then `proxy_on_memory_allocate`, and fails the VM if neither.
        let alloc = match typed::<i32, i32>(&inst, &mut store, "malloc")? {
            Some(f) => Some(f),
            None => typed::<i32, i32>(&inst, &mut store, "proxy_on_memory_allocate")?,
        };
        if alloc.is_none() {
            return Err(format_err!(
                "module exports neither malloc nor proxy_on_memory_allocate"
            ));
        }
        store.data_mut().memory = memory;
        store.data_mut().alloc = alloc;
        let ex = Exports::new(&inst, &mut store)?;
        Ok(Vm {
            index: spec.index,
            gen: spec.gen,
            store,
            ex,
            dead: false,
            fuel_start,
        })
    }

    /// Fuel consumed since the instance was created (`None` without fuel metering).
    pub fn fuel_consumed(&self) -> Option<u64> {
        let start = self.fuel_start?;
        let left = self.store.get_fuel().ok()?;
        Some(start.saturating_sub(left))
    }

    pub fn ctx(&mut self) -> &mut VmCtx {
        &mut self.store.data_mut().ctx
    }

    /// Calls `f` with `ctx` as the effective context; `Ok(None)` if the module lacks it.
    pub fn invoke<P: WasmParams, R: WasmResults>(
        &mut self,
        f: Option<TypedFunc<P, R>>,
        ctx: u32,
        params: P,
    ) -> Result<Option<R>, Trap> {
        let Some(f) = f else { return Ok(None) };
        self.store.data_mut().ctx.effective = ctx;
        let r = f.call(&mut self.store, params);
        self.store.data_mut().ctx.effective = 0;
        self.store.data_mut().flush_output(false);
        r.map(Some).map_err(|e| Trap(format!("{e:#}")))
    }

    /// `_initialize` (or `_start`), then `main(0, 0)` if exported (spec "Integration").
    pub fn initialize(&mut self) -> Result<(), Trap> {
        if self.ex.initialize.is_some() {
            self.invoke(self.ex.initialize.clone(), 0, ())?;
            if self.ex.main.is_some() {
                self.invoke(self.ex.main.clone(), 0, (0, 0))?;
            }
        } else {
            self.invoke(self.ex.start.clone(), 0, ())?;
        }
        Ok(())
    }

    /// `proxy_on_context_create(root, 0)`, `proxy_on_vm_start`, `proxy_on_configure` for a new
    /// root context; `Ok(Err(why))` if either returned false.
    pub fn create_root(&mut self) -> Result<Result<u32, String>, Trap> {
        let root = self.ctx().alloc_ctx();
        self.ctx().roots.insert(root, RootState::new());
        self.ctx().current_root = root;
        self.invoke(self.ex.context_create.clone(), root, (root as i32, 0))?;
        let vm_len = self.ctx().vm_config.len() as i32;
        if self.invoke(self.ex.vm_start.clone(), root, (root as i32, vm_len))? == Some(0) {
            return Ok(Err(format!("proxy_on_vm_start({root}) returned false")));
        }
        let len = self.ctx().plugin_config.len() as i32;
        self.ctx().configuring = true;
        let r = self.invoke(self.ex.configure.clone(), root, (root as i32, len));
        self.ctx().configuring = false;
        if r? == Some(0) {
            return Ok(Err(format!("proxy_on_configure({root}) returned false")));
        }
        Ok(Ok(root))
    }

    pub fn memory_bytes(&self) -> usize {
        self.store
            .data()
            .memory
            .map(|m| m.data_size(&self.store))
            .unwrap_or(0)
    }
}
