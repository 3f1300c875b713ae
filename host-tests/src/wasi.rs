//! The WASI (`wasi_snapshot_preview1`) subset a wasip1 Rust module uses, implemented like
//! Envoy's mostly-stub WASI (cpp-host `include/proxy-wasm/exports.h`): stdout/stderr become
//! log lines, the environment comes from the VM config, time is the virtual clock and
//! randomness is deterministic. Anything else is stubbed in `link.rs`.

use wasmtime::{bail, Result};
use wasmtime::{Caller, Linker};

use crate::memory::Mem;
use crate::vm::VmData;

const M: &str = "wasi_snapshot_preview1";
const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EINVAL: i32 = 28;
/// Returned by the generic stubs (`link.rs`) for WASI functions we do not implement.
pub(crate) const ENOSYS: i32 = 52;

type C<'a> = Caller<'a, VmData>;

pub(crate) fn add(l: &mut Linker<VmData>) -> Result<()> {
    l.func_wrap(
        M,
        "fd_write",
        |mut c: C, fd: i32, iovs: i32, n: i32, nwritten: i32| -> Result<i32> {
            if fd != 1 && fd != 2 {
                return Ok(EBADF);
            }
            let mut data = Vec::new();
            for i in 0..n {
                let iov = c.bytes(iovs.wrapping_add(i * 8), 8)?;
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                data.extend(c.bytes(ptr, len)?);
            }
            c.put_u32(nwritten, data.len() as u32)?;
            let d = c.data_mut();
            d.ctx.out_buf[(fd - 1) as usize].extend(data);
            d.flush_output(false);
            Ok(ESUCCESS)
        },
    )?;
    l.func_wrap(
        M,
        "environ_sizes_get",
        |mut c: C, count_ptr: i32, size_ptr: i32| -> Result<i32> {
            let (count, size) = {
                let w = c.data().world.borrow();
                let size: usize = w.env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
                (w.env.len(), size)
            };
            c.put_u32(count_ptr, count as u32)?;
            c.put_u32(size_ptr, size as u32)?;
            Ok(ESUCCESS)
        },
    )?;
    l.func_wrap(
        M,
        "environ_get",
        |mut c: C, environ: i32, buf: i32| -> Result<i32> {
            let env = c.data().world.borrow().env.clone();
            let mut off = 0i32;
            for (i, (k, v)) in env.iter().enumerate() {
                let entry = format!("{k}={v}\0");
                c.put_u32(
                    environ.wrapping_add(i as i32 * 4),
                    buf.wrapping_add(off) as u32,
                )?;
                c.put(buf.wrapping_add(off), entry.as_bytes())?;
                off += entry.len() as i32;
            }
            Ok(ESUCCESS)
        },
    )?;
    l.func_wrap(
        M,
        "args_sizes_get",
        // No arguments: a count of 0 and 0 bytes of them.
        |mut c: C, argc: i32, size: i32| -> Result<i32> {
            for ptr in [argc, size] {
                c.put_u32(ptr, 0)?;
            }
            Ok(ESUCCESS)
        },
    )?;
    l.func_wrap(M, "args_get", |_: C, _: i32, _: i32| -> i32 { ESUCCESS })?;
    l.func_wrap(
        M,
        "clock_time_get",
        |mut c: C, id: i32, _precision: i64, ptr: i32| -> Result<i32> {
            let (now, start) = {
                let w = c.data().world.borrow();
                (w.now(), w.clock_start)
            };
            let ns = match id {
                // realtime
                0 => now.saturating_mul(1_000_000),
                // monotonic / process / thread: virtual time since start, never 0
                1..=3 => (now - start).saturating_mul(1_000_000) + 1_000_000_000,
                _ => return Ok(EINVAL),
            };
            c.put_u64(ptr, ns)?;
            Ok(ESUCCESS)
        },
    )?;
    l.func_wrap(
        M,
        "clock_res_get",
        // Every clock ticks in milliseconds (1,000,000 ns), as the virtual clock does.
        |mut c: C, _id: i32, ptr: i32| -> Result<i32> {
            c.put_u64(ptr, 1_000_000).map(|()| ESUCCESS)
        },
    )?;
    l.func_wrap(
        M,
        "random_get",
        |mut c: C, ptr: i32, len: i32| -> Result<i32> {
            let mut bytes = Vec::with_capacity(len as u32 as usize + 8);
            while bytes.len() < len as u32 as usize {
                let r = c.data_mut().ctx.next_random();
                bytes.extend_from_slice(&r.to_le_bytes());
            }
            bytes.truncate(len as u32 as usize);
            c.put(ptr, &bytes)?;
            Ok(ESUCCESS)
        },
    )?;
    l.func_wrap(M, "proc_exit", |_: C, code: i32| -> Result<()> {
        bail!("proc_exit({code})")
    })?;
    l.func_wrap(M, "sched_yield", |_: C| -> i32 { ESUCCESS })?;
    // No preopened directories: wasi-libc stops scanning at the first EBADF.
    l.func_wrap(M, "fd_prestat_get", |_: C, _: i32, _: i32| -> i32 { EBADF })?;
    l.func_wrap(
        M,
        "fd_prestat_dir_name",
        |_: C, _: i32, _: i32, _: i32| -> i32 { EBADF },
    )?;
    l.func_wrap(M, "fd_close", |_: C, _: i32| -> i32 { EBADF })?;
    l.func_wrap(
        M,
        "fd_fdstat_get",
        |mut c: C, fd: i32, ptr: i32| -> Result<i32> {
            if !(0..=2).contains(&fd) {
                return Ok(EBADF);
            }
            // filetype character_device, no flags, no rights.
            let mut stat = [0u8; 24];
            stat[0] = 2;
            c.put(ptr, &stat)?;
            Ok(ESUCCESS)
        },
    )?;
    Ok(())
}
