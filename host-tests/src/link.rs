//! Linking: our `env` and WASI imports, plus stubs so that instantiation never fails on an
//! import we did not expect (they are recorded in `Host::unknown_imports`).

use std::cell::RefCell;
use std::rc::Rc;

use wasmtime::error::Context as _;
use wasmtime::{bail, Result};
use wasmtime::{Extern, ExternType, InstancePre, Linker, Module, Store, Val, ValType};

use crate::vm::VmData;
use crate::world::World;
use crate::{abi, wasi};

/// Links `module`; returns the pre-instantiated module and the names of stubbed imports.
pub(crate) fn instance_pre(
    module: &Module,
    world: &Rc<RefCell<World>>,
) -> Result<(InstancePre<VmData>, Vec<String>)> {
    let mut linker: Linker<VmData> = Linker::new(module.engine());
    abi::add(&mut linker).context("defining env imports")?;
    wasi::add(&mut linker).context("defining WASI imports")?;
    linker.allow_shadowing(true);

    // A scratch store, only to compare our functions' types with the imports'.
    let mut store = Store::new(module.engine(), VmData::scratch(world.clone()));
    let mut stubbed = Vec::new();
    for import in module.imports() {
        let ExternType::Func(want) = import.ty() else {
            continue;
        };
        let ok = match linker.get_by_import(&mut store, &import) {
            Some(Extern::Func(f)) => f.ty(&store).matches(&want),
            _ => false,
        };
        if ok {
            continue;
        }
        let (m, n) = (import.module().to_string(), import.name().to_string());
        let full = format!("{m}::{n}");
        let errno_only = m == "wasi_snapshot_preview1"
            && want.results().len() == 1
            && matches!(want.results().next(), Some(ValType::I32));
        if errno_only {
            // Envoy stubs most of WASI: answer ENOSYS.
            linker.func_new(&m, &n, want.clone(), |_, _, results| {
                results[0] = Val::I32(wasi::ENOSYS);
                Ok(())
            })?;
        } else {
            let name = full.clone();
            linker.func_new(&m, &n, want.clone(), move |_, _, _| {
                bail!("called unknown import {name}")
            })?;
        }
        stubbed.push(full);
    }
    let pre = linker
        .instantiate_pre(module)
        .context("linking the module")?;
    Ok((pre, stubbed))
}
