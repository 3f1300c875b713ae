//! Benchmark 7: the size of the module Envoy loads, `out/status_sync.wasm` as `make build`
//! produces it (or `$STATUS_SYNC_WASM`), with the size of each section.
//!
//! Target: under 300 KB (300,000 bytes).

mod common;

use common::report::{self, Op, Summary};
use serde_json::{json, Value};

const LIMIT: f64 = 300_000.0;

fn leb128(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let (mut v, mut shift) = (0u64, 0u32);
    loop {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// (section name, bytes) in file order; custom sections by their own name.
fn sections(wasm: &[u8]) -> Option<Vec<(String, u64)>> {
    if wasm.get(..4)? != b"\0asm" {
        return None;
    }
    let names = [
        "custom",
        "type",
        "import",
        "function",
        "table",
        "memory",
        "global",
        "export",
        "start",
        "element",
        "code",
        "data",
        "data count",
    ];
    let mut pos = 8;
    let mut out = Vec::new();
    while pos < wasm.len() {
        let id = *wasm.get(pos)?;
        pos += 1;
        let len = leb128(wasm, &mut pos)?;
        let body = pos;
        let mut name = names.get(id as usize).unwrap_or(&"unknown").to_string();
        if id == 0 {
            let mut p = body;
            let n = leb128(wasm, &mut p)? as usize;
            name = format!("custom:{}", String::from_utf8_lossy(wasm.get(p..p + n)?));
        }
        out.push((name, len));
        pos = body + len as usize;
    }
    Some(out)
}

fn main() {
    report::process_start();
    let path = common::wasm();
    let bytes = std::fs::read(&path).expect("read the wasm");
    let size = bytes.len() as f64;
    let secs = sections(&bytes).expect("a wasm module");
    let mut s = Summary::new(
        "binary_size",
        "make bench (make build; cargo bench -p host-tests --bench binary_size)",
    );
    // Relative to the workspace: the summary is committed, and names no path of this machine.
    let shown = path
        .strip_prefix(report::workspace_root())
        .unwrap_or(&path)
        .display()
        .to_string();
    s.figure("path", shown)
        .figure("bytes", bytes.len() as u64)
        .figure("kib", report::round(size / 1024.0))
        .figure(
            "sections",
            Value::Array(
                secs.iter()
                    .map(|(n, l)| json!({"section": n, "bytes": l}))
                    .collect(),
            ),
        );
    s.target("size of status_sync.wasm", size, Op::Lt, LIMIT, "bytes");
    s.emit();
}
