//! README's metrics and configuration tables are generated from the declarations
//! (`core::metrics::METRICS`, `core::config::KEYS`); this test fails when README.md differs
//! from what they say, and `make docs` (this test with `STATUS_SYNC_WRITE_DOCS=1`) rewrites
//! them. It also checks that every `status_sync` metric the runbook, the alerts and the
//! dashboard name is one the filter defines.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use status_sync::core::metrics::{self, Kind, METRICS};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A table cell: `|` would end it.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn metrics_table() -> String {
    let mut out = String::from("| metric | kind | meaning |\n|---|---|---|\n");
    for m in METRICS {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            m.name,
            m.kind.as_str(),
            cell(m.help)
        ));
    }
    out
}

/// The text between `<!-- begin {what} -->` and `<!-- end {what} -->` lines.
fn section(text: &str, what: &str) -> Option<(usize, usize)> {
    let begin = format!("<!-- begin {what}");
    let end = format!("<!-- end {what} -->");
    let b = text.find(&begin)?;
    let start = b + text[b..].find('\n')? + 1;
    let stop = start + text[start..].find(&end)?;
    Some((start, stop))
}

/// README's generated sections, each compared with (or, with `STATUS_SYNC_WRITE_DOCS=1`,
/// replaced by) what the declarations give.
#[test]
fn readme_tables_match_the_declarations() {
    let generated = [("metrics table", metrics_table())];
    let mut readme = read("README.md");
    let mut stale = Vec::new();
    for (what, want) in &generated {
        let (start, stop) = section(&readme, what).unwrap_or_else(|| {
            panic!("README.md has no `<!-- begin {what}` ... `<!-- end {what} -->` section")
        });
        if readme[start..stop] != **want {
            stale.push(*what);
            readme.replace_range(start..stop, want);
        }
    }
    if stale.is_empty() {
        return;
    }
    if std::env::var_os("STATUS_SYNC_WRITE_DOCS").is_some() {
        std::fs::write(root().join("README.md"), &readme).expect("write README.md");
        eprintln!("README.md: rewrote {stale:?}");
        return;
    }
    let want: String = generated.iter().map(|(_, t)| t.as_str()).collect();
    panic!(
        "README.md's {stale:?} differ from the declarations (core::metrics::METRICS, \
         core::config::KEYS): edit those, then run `make docs`. They give:\n{want}"
    );
}

/// Prometheus names (`status_sync_x`, `status_sync_x_bucket`) and Envoy names
/// (`status_sync.x`, with or without the `sync_instance` tag) that the operators' material
/// uses, reduced to the metric they name.
fn named_metrics(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while let Some(off) = text[i..].find("status_sync") {
        let at = i + off;
        i = at + "status_sync".len();
        // `envoy_wasm_status_sync_…` is Envoy's own stat about the plugin, not ours.
        if at > 0 && word(bytes[at - 1]) {
            continue;
        }
        let sep = bytes.get(i).copied();
        if sep != Some(b'_') && sep != Some(b'.') {
            continue;
        }
        let mut rest = &text[i + 1..];
        // The instance tag, as Envoy names it (`sync_instance=.=ci;.;`) or flattened without
        // stats tags (`sync_instance___ci___`).
        if let Some(r) = rest.strip_prefix("sync_instance=.=") {
            match r.find(";.;") {
                Some(e) => rest = &r[e + 3..],
                None => continue,
            }
        } else if let Some(r) = rest.strip_prefix("sync_instance___") {
            match r.find("___") {
                Some(e) => rest = &r[e + 3..],
                None => continue,
            }
        }
        let end = rest.bytes().position(|b| !word(b)).unwrap_or(rest.len());
        // `status_sync.*` names them all.
        if end > 0 {
            out.push(rest[..end].to_string());
        }
    }
    out
}

/// Names in the operators' material that are not metrics of the filter, and why.
const NOT_OURS: &[(&str, &str)] = &[
    ("wasm", "the module's file name, status_sync.wasm"),
    ("image", "status_sync.image-digest, a file of dist/"),
    ("vm_reload", "Envoy's own stat about the plugin's VM"),
    (
        "vm_reload_failure",
        "Envoy's own stat about the plugin's VM",
    ),
    (
        "vm_reload_success",
        "Envoy's own stat about the plugin's VM",
    ),
    (
        "circuit_opens",
        "README's table of renamed metrics: the old name",
    ),
];

#[test]
fn the_operators_material_names_only_metrics_we_define() {
    let mut files = vec![
        "README.md",
        "docs/runbook.md",
        "envoy/README.md",
        "envoy/istio/README.md",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    let mut monitoring: Vec<String> = std::fs::read_dir(root().join("envoy/monitoring"))
        .expect("envoy/monitoring")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "json")
            )
        })
        .map(|p| {
            format!(
                "envoy/monitoring/{}",
                p.file_name().unwrap().to_string_lossy()
            )
        })
        .collect();
    monitoring.sort();
    assert!(monitoring.len() >= 3, "{monitoring:?}");
    files.extend(monitoring);
    let mut used = std::collections::BTreeSet::new();
    for file in &files {
        for name in named_metrics(&read(file)) {
            if NOT_OURS.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let known = |tail: &str| metrics::by_name(&format!("status_sync.{tail}"));
            let ok = known(&name).is_some()
                || ["_bucket", "_sum", "_count"].iter().any(|s| {
                    name.strip_suffix(s)
                        .and_then(known)
                        .is_some_and(|m| m.kind == Kind::Histogram)
                });
            assert!(
                ok,
                "{file} names `status_sync_{name}`, which the filter does not define"
            );
            used.insert(name);
        }
    }
    // The scan sees the material: the SLO metric is in all of it.
    assert!(used.contains("oldest_undelivered_seconds"), "{used:?}");
}
