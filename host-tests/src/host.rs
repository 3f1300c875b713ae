//! `Host`: one simulated Envoy process with N worker VMs + the main-thread VM, the config
//! canary, the event loop, and VM failure/reload/reconfiguration.

use std::cell::RefCell;
use std::rc::Rc;

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use wasmtime::InstancePre;

use crate::abi::BROKEN_CONNECTION;
use crate::cache;
use crate::clock::{Event, EventKind};
use crate::config::HostConfig;
use crate::link;
use crate::types::{CallRecord, CallReply, CallRequest, LogLine, TickFuel, VmDeath, CANARY};
use crate::vm::{CallWindow, Trap, Vm, VmData, VmSpec};
use crate::world::World;

/// One Envoy process running the filter (see the crate docs).
pub struct Host {
    pub(crate) cfg: HostConfig,
    pub(crate) world: Rc<RefCell<World>>,
    pre: InstancePre<VmData>,
    pub(crate) vms: Vec<Vm>,
    next_instance: u64,
    logs: Vec<LogLine>,
    calls: Vec<CallRecord>,
    deaths: Vec<VmDeath>,
    unknown_imports: Vec<String>,
    pub(crate) request_seq: u64,
    /// Fuel of every `on_tick` since the last `take_tick_fuel` (only with `HostConfig::fuel`).
    tick_fuel: Vec<TickFuel>,
}

impl Host {
    /// Boots the process like Envoy: the canary VM (`_initialize`, root create, `on_vm_start`,
    /// `on_configure`, then destroyed), then every VM (workers, then main). Errors if any of
    /// those returns false or traps: Envoy refuses to start.
    pub fn start(cfg: HostConfig) -> Result<Host> {
        let module = cache::module(&cfg.wasm_path, cfg.fuel)?;
        let world = Rc::new(RefCell::new(World::new(&cfg)));
        let (pre, unknown_imports) = link::instance_pre(&module, &world)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("linking {}", cfg.wasm_path.display()))?;
        world
            .borrow_mut()
            .unknown_imports
            .extend(unknown_imports.iter().cloned());
        let mut host = Host {
            cfg,
            world,
            pre,
            vms: Vec::new(),
            next_instance: 0,
            logs: Vec::new(),
            calls: Vec::new(),
            deaths: Vec::new(),
            unknown_imports,
            request_seq: 0,
            tick_fuel: Vec::new(),
        };
        let config = host.cfg.plugin_config.clone();
        let r = host.start_vms(&config);
        host.sync();
        r.map_err(|e| anyhow!("{e:#}\n{}", host.log_tail(12)))
            .context("Envoy would refuse to start")?;
        Ok(host)
    }

    fn start_vms(&mut self, config: &str) -> Result<()> {
        self.run_canary(config)?;
        for index in 0..=self.cfg.workers {
            let vm = self.boot(index, 0, config)?;
            self.vms.push(vm);
        }
        Ok(())
    }

    /// A fresh instance with one root context, fully configured.
    fn boot(&mut self, index: usize, gen: u32, config: &str) -> Result<Vm> {
        self.next_instance += 1;
        let spec = VmSpec {
            index,
            gen,
            instance: self.next_instance,
            plugin_config: config.as_bytes(),
            vm_config: self.cfg.vm_config.as_bytes(),
            seed: self.cfg.seed,
            fuel: self.cfg.fuel,
        };
        let mut vm = Vm::new(&self.pre, self.world.clone(), spec)?;
        let name = if index == CANARY {
            "canary VM".to_string()
        } else {
            format!("VM {index}")
        };
        let r = vm.initialize().and_then(|_| vm.create_root());
        vm.store.data_mut().flush_output(true);
        match r {
            Ok(Ok(_)) => Ok(vm),
            Ok(Err(why)) => bail!("{name}: {why}"),
            Err(Trap(t)) => bail!("{name} trapped while starting: {t}"),
        }
    }

    /// Envoy validates every plugin config on a throwaway clone first; its side effects
    /// (shared data writes, queue registration) stay, its calls and timers are lost.
    fn run_canary(&mut self, config: &str) -> Result<()> {
        self.boot(CANARY, 0, config).map(drop)
    }

    /// Moves log lines and call records from the world to the host (see `logs()`).
    pub(crate) fn sync(&mut self) {
        let mut w = self.world.borrow_mut();
        self.logs.append(&mut w.logs);
        self.calls.append(&mut w.calls);
    }

    fn log_tail(&self, n: usize) -> String {
        let start = self.logs.len().saturating_sub(n);
        self.logs[start..]
            .iter()
            .map(|l| {
                let vm = if l.vm == CANARY {
                    "canary".to_string()
                } else {
                    l.vm.to_string()
                };
                format!("  [vm {vm} L{}] {}", l.level, l.message)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    // ---------------------------------------------------------------- clock and events

    pub fn now_ms(&self) -> u64 {
        self.world.borrow().now()
    }

    /// Moves the virtual clock forward by `ms`, running every due event in order: ticks
    /// (re-armed after `on_tick` returns), HTTP-call replies and timeouts, queue-ready posts.
    /// A trap marks that VM dead and the clock goes on.
    pub fn advance(&mut self, ms: u64) -> Result<()> {
        let target = self.now_ms().saturating_add(ms);
        self.run_until(target);
        self.sync();
        Ok(())
    }

    pub(crate) fn run_until(&mut self, target: u64) {
        loop {
            let ev = self.world.borrow_mut().clock.pop_due(target);
            let Some(ev) = ev else { break };
            self.dispatch(ev);
        }
        let mut w = self.world.borrow_mut();
        w.clock.now_ms = w.clock.now_ms.max(target);
    }

    /// Runs one event if there is one due before `limit`; false otherwise.
    pub(crate) fn step(&mut self, limit: u64) -> bool {
        let ev = self.world.borrow_mut().clock.pop_due(limit);
        match ev {
            Some(ev) => {
                self.dispatch(ev);
                true
            }
            None => false,
        }
    }

    fn live(&mut self, vm: usize, gen: u32) -> Option<&mut Vm> {
        self.vms.get_mut(vm).filter(|v| !v.dead && v.gen == gen)
    }

    fn dispatch(&mut self, ev: Event) {
        match ev.kind {
            EventKind::Tick {
                vm,
                gen,
                root,
                epoch,
            } => self.tick(vm, gen, root, epoch),
            EventKind::CallReply { vm, gen, token } => self.call_reply(vm, gen, token),
            EventKind::QueueReady { vm, root, qid } => {
                let Some(gen) = self.vms.get(vm).map(|v| v.gen) else {
                    return;
                };
                let Some(v) = self.live(vm, gen) else { return };
                if v.ctx().roots.get(&root).is_none_or(|r| r.retired) {
                    return;
                }
                let f = v.ex.queue_ready.clone();
                let r = v.invoke(f, root, (root as i32, qid as i32));
                self.after_call(vm, r);
            }
        }
    }

    /// Envoy's `tickHandler`: call `on_tick`, then re-arm with the *current* period.
    fn tick(&mut self, vm: usize, gen: u32, root: u32, epoch: u64) {
        let Some(v) = self.live(vm, gen) else { return };
        if !v
            .ctx()
            .roots
            .get(&root)
            .is_some_and(|r| r.epoch == epoch && !r.retired)
        {
            return;
        }
        let Some(f) = v.ex.tick.clone() else { return };
        let before = v.fuel_consumed();
        let r = v.invoke(Some(f), root, root as i32);
        if let (Some(before), Some(after)) = (before, v.fuel_consumed()) {
            let at_ms = self.world.borrow().now();
            self.tick_fuel.push(TickFuel {
                vm,
                root,
                at_ms,
                fuel: after.saturating_sub(before),
            });
        }
        if self.after_call(vm, r).is_none() {
            return;
        }
        let v = &mut self.vms[vm];
        if let Some(r) = v.ctx().roots.get_mut(&root) {
            if !r.retired && r.period_ms > 0 {
                r.epoch += 1;
                let (period, epoch) = (u64::from(r.period_ms), r.epoch);
                self.world.borrow_mut().clock.schedule_in(
                    period,
                    EventKind::Tick {
                        vm,
                        gen,
                        root,
                        epoch,
                    },
                );
            }
        }
    }

    /// `proxy_on_http_call_response(root, token, headers, body, trailers)`; the response is
    /// readable (MapType 6, BufferType 4) only during the callback.
    fn call_reply(&mut self, vm: usize, gen: u32, token: u32) {
        let call = self.world.borrow_mut().inflight.remove(&(vm, token));
        let Some(call) = call.filter(|c| c.gen == gen) else {
            return;
        };
        let Some(v) = self.live(vm, gen) else { return };
        let root = call.root;
        let Some(rs) = v.ctx().roots.get_mut(&root).filter(|r| !r.retired) else {
            return;
        };
        let (n_headers, body_len, window) = match call.reply.into_parts() {
            Some((_, headers, body)) => (
                headers.len(),
                body.len(),
                Some(CallWindow {
                    headers,
                    body,
                    trailers: Vec::new(),
                }),
            ),
            None => {
                rs.status = (BROKEN_CONNECTION, "reset".into());
                (0, 0, None)
            }
        };
        v.ctx().call_window = window;
        let f = v.ex.http_call_response.clone();
        let r = v.invoke(
            f,
            root,
            (
                root as i32,
                token as i32,
                n_headers as i32,
                body_len as i32,
                0,
            ),
        );
        v.ctx().call_window = None;
        self.after_call(vm, r);
    }

    /// After every callback: a trap kills the VM (`None`); otherwise run the deferred root
    /// deletions requested through `proxy_done`.
    pub(crate) fn after_call<R>(&mut self, vm: usize, r: Result<R, Trap>) -> Option<R> {
        let r = match r {
            Ok(r) => r,
            Err(t) => {
                self.mark_dead(vm, t.0);
                return None;
            }
        };
        loop {
            let v = &mut self.vms[vm];
            let Some(root) = v.ctx().pending_deletes.pop() else {
                break;
            };
            let f = v.ex.delete.clone();
            let d = v.invoke(f, root, root as i32);
            v.ctx().roots.remove(&root);
            if let Err(t) = d {
                self.mark_dead(vm, t.0);
                return None;
            }
        }
        Some(r)
    }

    /// Envoy marks a trapped VM failed: no more callbacks, its in-flight calls are dropped.
    pub(crate) fn mark_dead(&mut self, vm: usize, reason: String) {
        let v = &mut self.vms[vm];
        if v.dead {
            return;
        }
        v.dead = true;
        v.store.data_mut().flush_output(true);
        let at_ms = {
            let mut w = self.world.borrow_mut();
            w.cancel_calls(vm, None);
            w.now()
        };
        eprintln!("[host-tests] VM {vm} failed at {at_ms} ms: {reason}");
        self.deaths.push(VmDeath { vm, at_ms, reason });
    }

    // ---------------------------------------------------------------- failures and config

    /// As if the VM trapped: no more callbacks, its in-flight calls are dropped, its queue
    /// registrations dangle.
    pub fn kill_vm(&mut self, vm: usize) {
        if vm < self.vms.len() {
            self.mark_dead(vm, "killed by test".into());
        }
        self.sync();
    }

    /// FAIL_RELOAD: a fresh instance and root context (`_initialize`, create, `on_vm_start`,
    /// `on_configure`) replaces the VM. Statics are lost, shared data survives.
    pub fn reload_vm(&mut self, vm: usize) -> Result<()> {
        let r = self.reload_inner(vm);
        self.sync();
        r
    }

    pub(crate) fn reload_inner(&mut self, vm: usize) -> Result<()> {
        ensure!(vm < self.vms.len(), "no VM {vm}");
        let gen = self.vms[vm].gen + 1;
        {
            let mut w = self.world.borrow_mut();
            w.cancel_calls(vm, None);
            w.tick_calls.retain(|(v, _), _| *v != vm);
        }
        self.vms[vm].dead = true;
        let config = self.cfg.plugin_config.clone();
        match self.boot(vm, gen, &config) {
            Ok(new) => {
                self.vms[vm] = new;
                Ok(())
            }
            Err(e) => {
                self.vms[vm].gen = gen;
                self.mark_dead_record(vm, format!("reload failed: {e:#}"));
                Err(e).with_context(|| format!("reloading VM {vm}"))
            }
        }
    }

    fn mark_dead_record(&mut self, vm: usize, reason: String) {
        let at_ms = self.now_ms();
        self.deaths.push(VmDeath { vm, at_ms, reason });
    }

    /// An Envoy config update with the same code and vm_id: the canary validates the new
    /// config (an error = NACK, the old config stays); then every live VM gets a NEW root
    /// context (statics persist) and the old roots get `proxy_on_done` + `proxy_on_delete`
    /// and stop ticking; their in-flight calls are cancelled.
    pub fn reconfigure(&mut self, plugin_config: &str) -> Result<()> {
        let r = self.reconfigure_inner(plugin_config);
        self.sync();
        r
    }

    fn reconfigure_inner(&mut self, plugin_config: &str) -> Result<()> {
        self.run_canary(plugin_config)
            .context("config rejected by the canary (NACK); the old config stays")?;
        self.cfg.plugin_config = plugin_config.to_string();
        for vm in 0..self.vms.len() {
            if self.vms[vm].dead {
                continue;
            }
            let v = &mut self.vms[vm];
            let old = v.ctx().current_root;
            v.ctx().plugin_config = plugin_config.as_bytes().to_vec();
            let r = v.create_root();
            match self.after_call(vm, r) {
                None => continue,
                Some(Err(why)) => {
                    self.mark_dead(vm, why);
                    continue;
                }
                Some(Ok(_)) => {}
            }
            self.retire_root(vm, old);
        }
        Ok(())
    }

    /// The old config is released: `proxy_on_done`, then `proxy_on_delete` unless it returned
    /// false (then after `proxy_done`).
    fn retire_root(&mut self, vm: usize, root: u32) {
        self.world.borrow_mut().cancel_calls(vm, Some(root));
        let v = &mut self.vms[vm];
        let Some(r) = v.ctx().roots.get_mut(&root) else {
            return;
        };
        r.retired = true;
        r.epoch += 1;
        let f = v.ex.done.clone();
        let done = v.invoke(f, root, root as i32);
        match self.after_call(vm, done) {
            None => {}
            Some(Some(0)) => {
                if let Some(r) = self.vms[vm].ctx().roots.get_mut(&root) {
                    r.pending_done = true;
                }
            }
            Some(_) => {
                let v = &mut self.vms[vm];
                let f = v.ex.delete.clone();
                let d = v.invoke(f, root, root as i32);
                v.ctx().roots.remove(&root);
                self.after_call(vm, d);
            }
        }
    }

    // ---------------------------------------------------------------- upstream clusters

    /// How `cluster` answers `proxy_http_call`s from now on. Clusters without a responder
    /// answer like an upstream with nobody listening ([`CallReply::ConnectFailure`]).
    pub fn set_responder(
        &mut self,
        cluster: &str,
        f: impl FnMut(&CallRequest, u64) -> CallReply + 'static,
    ) {
        self.world
            .borrow_mut()
            .responders
            .insert(cluster.to_string(), Box::new(f));
    }

    // ---------------------------------------------------------------- observations

    /// Counters: summed over all VMs; gauges: the last value written by any VM.
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.world.borrow().metrics.value(name)
    }

    /// All counters and gauges, sorted by name.
    /// How many `increment_metric` and `record_metric` calls every VM made so far.
    pub fn metric_writes(&self) -> u64 {
        self.world.borrow().metrics.writes()
    }

    pub fn metrics(&self) -> Vec<(String, i64)> {
        self.world.borrow().metrics.all()
    }

    /// Samples recorded into a histogram.
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        self.world.borrow().metrics.samples(name)
    }

    pub fn logs(&self) -> &[LogLine] {
        &self.logs
    }

    /// Log messages containing `needle`.
    pub fn logs_containing(&self, needle: &str) -> Vec<&LogLine> {
        self.logs
            .iter()
            .filter(|l| l.message.contains(needle))
            .collect()
    }

    pub fn memory_bytes(&self, vm: usize) -> usize {
        self.vms.get(vm).map_or(0, Vm::memory_bytes)
    }

    /// Wasm fuel (about one unit per executed wasm operator, see wasmtime's `consume_fuel`)
    /// VM `vm` has used since its instance was created, including the module's allocator
    /// called from hostcalls but no host work. `None` unless `HostConfig::fuel` is set.
    pub fn fuel_consumed(&self, vm: usize) -> Option<u64> {
        self.vms.get(vm).and_then(Vm::fuel_consumed)
    }

    /// The fuel of every `proxy_on_tick` since the last call, in order, and forgets them.
    /// Empty unless `HostConfig::fuel` is set; with it, call this now and then (one record per
    /// tick is kept until taken).
    pub fn take_tick_fuel(&mut self) -> Vec<TickFuel> {
        std::mem::take(&mut self.tick_fuel)
    }

    /// (vm, root context id, times `proxy_set_tick_period_milliseconds` was called for it);
    /// the canary is not included.
    pub fn tick_period_calls(&self) -> Vec<(usize, u32, usize)> {
        self.world
            .borrow()
            .tick_calls
            .iter()
            .map(|(&(vm, root), &n)| (vm, root, n))
            .collect()
    }

    /// Number of shared-data keys.
    pub fn shared_data_len(&self) -> usize {
        self.world.borrow().shared.len()
    }

    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        let w = self.world.borrow();
        w.shared.get(&w.vm_id, key.as_bytes()).map(|(v, _)| v)
    }

    /// Shared-data keys of this vm_id, sorted.
    pub fn shared_data_keys(&self) -> Vec<String> {
        let w = self.world.borrow();
        w.shared.keys(&w.vm_id)
    }

    /// Writes shared data like another plugin in the same vm_id would (unconditional).
    pub fn set_shared_data(&mut self, key: &str, value: &[u8]) {
        let mut w = self.world.borrow_mut();
        let vm_id = w.vm_id.clone();
        w.shared.set(&vm_id, key.as_bytes(), value, 0);
    }

    /// Items waiting in queue `name` of this vm_id (`None` if never registered).
    pub fn queue_len(&self, name: &str) -> Option<usize> {
        let w = self.world.borrow();
        w.queues.len(&w.vm_id, name)
    }

    pub fn calls(&self) -> &[CallRecord] {
        &self.calls
    }

    /// Forgets the log lines and call records kept so far (`logs()`, `calls()`), so that a
    /// long run (a soak benchmark) does not keep every one of them in the host's memory.
    pub fn clear_records(&mut self) {
        self.sync();
        self.logs.clear();
        self.calls.clear();
    }

    pub fn live_vms(&self) -> Vec<usize> {
        self.vms
            .iter()
            .filter(|v| !v.dead)
            .map(|v| v.index)
            .collect()
    }

    pub fn dead_vms(&self) -> Vec<usize> {
        self.vms
            .iter()
            .filter(|v| v.dead)
            .map(|v| v.index)
            .collect()
    }

    /// Every VM failure so far, in order (including killed ones and failed reloads).
    pub fn deaths(&self) -> &[VmDeath] {
        &self.deaths
    }

    /// Workers + main.
    pub fn vm_count(&self) -> usize {
        self.vms.len()
    }

    /// Imports the host stubbed (`module::name`): WASI ones answer ENOSYS, others trap.
    pub fn unknown_imports(&self) -> &[String] {
        &self.unknown_imports
    }

    /// The id of the root context that new streams of `vm` use.
    pub fn root_context_id(&self, vm: usize) -> Option<u32> {
        self.vms.get(vm).map(|v| v.store.data().ctx.current_root)
    }

    pub fn config(&self) -> &HostConfig {
        &self.cfg
    }
}
