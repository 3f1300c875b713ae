//! Process-wide wasmtime `Engine` and compiled-`Module` cache.
//!
//! Compiling the filter with cranelift takes far longer than instantiating it, and scenario
//! tests create many hosts: compile once per (path, mtime, size) per test process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use wasmtime::{Engine, Module};

/// (path, mtime, size, fuel metering).
type Key = (PathBuf, Option<SystemTime>, u64, bool);

pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

/// An engine whose modules count fuel (`HostConfig::fuel`); modules compiled for it carry
/// the metering code, so they are cached apart from the plain ones.
fn fuel_engine() -> Result<&'static Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(e) = ENGINE.get() {
        return Ok(e);
    }
    let mut config = wasmtime::Config::new();
    config.consume_fuel(true);
    let engine = Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("creating a fuel-metering wasmtime engine")?;
    Ok(ENGINE.get_or_init(|| engine))
}

/// The compiled module for `path`, compiled at most once per file version (and per fuel
/// setting).
pub(crate) fn module(path: &Path, fuel: bool) -> Result<Module> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Module>>> = OnceLock::new();
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "wasm module {} not found (run `make build` to build out/status_sync.wasm, \
             or set STATUS_SYNC_WASM)",
            path.display()
        )
    })?;
    let key = (path.to_path_buf(), meta.modified().ok(), meta.len(), fuel);
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(m) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(m.clone());
    }
    // Compile outside the lock: tests for different modules compile in parallel.
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let engine = if fuel { fuel_engine()? } else { engine() };
    let module = Module::new(engine, &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("compiling {}", path.display()))?;
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, module.clone());
    Ok(module)
}
