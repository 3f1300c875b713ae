//! Access to a module's linear memory from inside a hostcall.

use wasmtime::error::Context as _;
use wasmtime::Caller;
use wasmtime::{bail, format_err, Result};

use crate::vm::VmData;

/// Helpers on the hostcall's `Caller`. Out-of-bounds pointers trap the VM: Envoy would return
/// InvalidMemoryAccess (6), which the Rust SDK cannot even represent.
pub(crate) trait Mem {
    fn bytes(&mut self, ptr: i32, len: i32) -> Result<Vec<u8>>;
    fn string(&mut self, ptr: i32, len: i32) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.bytes(ptr, len)?).into_owned())
    }
    fn put(&mut self, ptr: i32, data: &[u8]) -> Result<()>;
    fn put_u32(&mut self, ptr: i32, v: u32) -> Result<()> {
        self.put(ptr, &v.to_le_bytes())
    }
    fn put_u64(&mut self, ptr: i32, v: u64) -> Result<()> {
        self.put(ptr, &v.to_le_bytes())
    }
    /// Envoy's `copyToPointerSize`: allocate with the module's allocator, copy, and write
    /// pointer and size; empty data writes a NULL pointer and size 0 without allocating.
    fn copy_out(&mut self, data: &[u8], ptr_ptr: i32, size_ptr: i32) -> Result<()>;
}

impl Mem for Caller<'_, VmData> {
    fn bytes(&mut self, ptr: i32, len: i32) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let mem = self
            .data()
            .memory
            .ok_or_else(|| format_err!("module has no memory"))?;
        let start = ptr as u32 as usize;
        let end = start
            .checked_add(len as u32 as usize)
            .ok_or_else(|| format_err!("invalid memory access"))?;
        mem.data(&*self)
            .get(start..end)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format_err!("invalid memory access at {start:#x}..{end:#x}"))
    }

    fn put(&mut self, ptr: i32, data: &[u8]) -> Result<()> {
        let mem = self
            .data()
            .memory
            .ok_or_else(|| format_err!("module has no memory"))?;
        mem.write(&mut *self, ptr as u32 as usize, data)
            .with_context(|| format!("invalid memory access at {:#x}", ptr as u32))
    }

    fn copy_out(&mut self, data: &[u8], ptr_ptr: i32, size_ptr: i32) -> Result<()> {
        let mut ptr = 0i32;
        if !data.is_empty() {
            let alloc = self
                .data()
                .alloc
                .clone()
                .ok_or_else(|| format_err!("module exports no allocator"))?;
            // Calling the allocator is the one re-entry into the module Envoy does from a
            // hostcall; no host borrow is held here.
            ptr = alloc
                .call(&mut *self, data.len() as i32)
                .context("module allocator trapped")?;
            if ptr == 0 {
                bail!("module allocator returned NULL for {} bytes", data.len());
            }
            self.put(ptr, data)?;
        }
        self.put_u32(ptr_ptr, ptr as u32)?;
        self.put_u32(size_ptr, data.len() as u32)
    }
}
