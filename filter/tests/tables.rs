//! The metrics and configuration tables of the docs (`docs/metrics.md`,
//! `docs/configuration.md`) are generated from the declarations (`core::metrics::METRICS`,
//! `core::config::KEYS`); this test fails when a file differs from what they say, and
//! `make docs` (this test with `STATUS_SYNC_WRITE_DOCS=1`) rewrites them. It also checks that
//! every `status_sync` metric README, the docs, the alerts and the dashboard name is one the
//! filter defines.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use status_sync::core::config::{Spec, Unit, KEYS};
use status_sync::core::metrics::{self, Kind, METRICS};
mod common;

use common::repo::{docs_files, files_in, read, root, rust_files};

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

/// An integer as the docs show it: milliseconds and bytes in their largest whole unit.
fn human(n: u64, unit: Unit) -> String {
    let units: &[(u64, &str)] = match unit {
        Unit::Count => &[],
        Unit::Ms => &[
            (86_400_000, " day"),
            (3_600_000, " h"),
            (60_000, " min"),
            (1_000, " s"),
        ],
        Unit::Bytes => &[(1 << 20, " MiB"), (1 << 10, " KiB")],
    };
    for &(size, name) in units {
        if n >= size && n % size == 0 {
            let plural = if name == " day" && n / size > 1 {
                "s"
            } else {
                ""
            };
            return format!("{}{name}{plural}", n / size);
        }
    }
    match unit {
        Unit::Count => n.to_string(),
        Unit::Ms => format!("{n} ms"),
        Unit::Bytes => format!("{n} bytes"),
    }
}

fn config_table() -> String {
    let mut out = String::from("| key | default | range | meaning |\n|---|---|---|---|\n");
    for k in KEYS {
        let (default, range) = match k.spec {
            Spec::Int {
                default,
                min,
                max,
                unit,
                shown,
                rule,
            } => {
                let default = match default {
                    Some(d) if human(d, unit) != d.to_string() => {
                        format!("{d} ({})", human(d, unit))
                    }
                    Some(d) => d.to_string(),
                    None => shown.to_string(),
                };
                let mut range = format!("{}–{}", human(min, unit), human(max, unit));
                if !rule.is_empty() {
                    range.push_str(", ");
                    range.push_str(rule);
                }
                (default, range)
            }
            Spec::Str { default, range } => (format!("`{default}`"), range.to_string()),
            Spec::Other { default, range } | Spec::Secret { default, range } => {
                (default.to_string(), range.to_string())
            }
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            k.name,
            cell(&default),
            cell(&range),
            cell(k.help)
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

/// The generated sections (file, section), each compared with (or, with
/// `STATUS_SYNC_WRITE_DOCS=1`, replaced by) what the declarations give.
#[test]
fn the_generated_tables_in_the_docs_match_the_declarations() {
    let generated = [
        (
            "docs/configuration.md",
            "configuration table",
            config_table(),
        ),
        ("docs/metrics.md", "metrics table", metrics_table()),
    ];
    let write = std::env::var_os("STATUS_SYNC_WRITE_DOCS").is_some();
    let mut stale = Vec::new();
    for (file, what, want) in &generated {
        let mut text = read(file);
        let (start, stop) = section(&text, what).unwrap_or_else(|| {
            panic!("{file} has no `<!-- begin {what}` ... `<!-- end {what} -->` section")
        });
        if text[start..stop] == **want {
            continue;
        }
        stale.push(format!("{file}: {what}"));
        if write {
            text.replace_range(start..stop, want);
            std::fs::write(root().join(file), &text).unwrap_or_else(|e| panic!("{file}: {e}"));
            eprintln!("{file}: rewrote the {what}");
        }
    }
    if stale.is_empty() || write {
        return;
    }
    let want: String = generated.iter().map(|(_, _, t)| t.as_str()).collect();
    panic!(
        "{stale:?} differ from the declarations (core::metrics::METRICS, \
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
        "docs/metrics.md's table of renamed metrics: the old name",
    ),
];

#[test]
fn the_operators_material_names_only_metrics_we_define() {
    let mut files = vec!["README.md", "envoy/README.md", "envoy/istio/README.md"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    files.extend(docs_files());
    assert!(files.iter().any(|f| f == "docs/runbook.md"), "{files:?}");
    let monitoring = files_in("envoy/monitoring", &["yaml", "json"]);
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

/// The inline code spans of a markdown text (one or more backticks, closed by as many),
/// with runs of whitespace (line breaks inside a span included) made one space. Fenced
/// blocks are skipped.
fn code_spans(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut prose = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    let mut rest = prose.as_str();
    while let Some(open) = rest.find('`') {
        let ticks = rest[open..].len() - rest[open..].trim_start_matches('`').len();
        let fence = "`".repeat(ticks);
        let body = &rest[open + ticks..];
        let Some(close) = body.find(&fence) else {
            break;
        };
        out.push(
            body[..close]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        );
        rest = &body[close + ticks..];
    }
    out
}

/// The `key=` fields of a quoted log line: words followed by `=`, after the event text.
fn log_keys(quote: &str) -> Vec<&str> {
    quote
        .split(' ')
        .filter_map(|w| w.split_once('=').map(|(k, _)| k))
        .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .collect()
}

/// A log line the runbook quotes: an event in words, then `key=value` fields
/// (`gave up: ledger full build=... max_tracked_builds=...`). Returns the text up to and
/// including the first field's `=`, the part the code writes literally.
fn quoted_log_line(span: &str) -> Option<&str> {
    let first = span.split(' ').next()?;
    if first.contains('=') || !first.starts_with(|c: char| c.is_ascii_lowercase()) {
        return None;
    }
    let key = log_keys(span).into_iter().next()?;
    let at = span.find(&format!(" {key}="))?;
    Some(&span[..at + key.len() + 2])
}

/// True when `text` is what a line of Rust source writes from some position on. The
/// source's `{...}` format placeholders stand for at least one character without a quote;
/// `...` in `text` stands for anything the line writes there. The text must end on literal
/// source text, or on a field name a placeholder writes (`shard=` from `{where_}`), and
/// start on literal text, so placeholders cannot swallow a wrong event or ending.
fn written_by(text: &str, source_line: &str) -> bool {
    fn from(text: &[u8], src: &[u8]) -> bool {
        let Some(&t) = text.first() else {
            return true;
        };
        if let Some(rest) = text.strip_prefix(b"...") {
            return (0..=src.len()).any(|i| from(rest, &src[i..]));
        }
        match src.first() {
            None => false,
            Some(b'{') => {
                let Some(close) = src.iter().position(|&b| b == b'}') else {
                    return false;
                };
                let after = &src[close + 1..];
                (1..=text.len())
                    .take_while(|&i| text[i - 1] != b'"')
                    .any(|i| {
                        if i == text.len() {
                            text.strip_suffix(b"=").is_some_and(|k| {
                                !k.is_empty()
                                    && k.iter().all(|&b| b.is_ascii_lowercase() || b == b'_')
                            })
                        } else {
                            from(&text[i..], after)
                        }
                    })
            }
            Some(&s) => s == t && from(&text[1..], &src[1..]),
        }
    }
    // The event's first word is written literally: a placeholder may not start the match.
    let (t, s) = (text.as_bytes(), source_line.as_bytes());
    (0..s.len()).any(|i| s[i] != b'{' && from(t, &s[i..]))
}

fn filter_sources() -> String {
    let files = rust_files(&root().join("filter/src")).into_iter();
    files.map(|(_, text)| text + "\n").collect()
}

#[test]
fn finds_the_log_lines_a_text_quotes_and_where_the_code_writes_them() {
    let text = "Log `gave up: ledger full\n  build=... max_tracked_builds=...` and \
                `status_sync_giveups`, ``invalid: key `k`: x``, `instance=`.";
    let spans = code_spans(text);
    assert_eq!(spans.len(), 4, "{spans:?}");
    let quoted: Vec<_> = spans.iter().filter_map(|s| quoted_log_line(s)).collect();
    assert_eq!(quoted, vec!["gave up: ledger full build="]);
    assert_eq!(log_keys(&spans[0]), vec!["build", "max_tracked_builds"]);
    let src = r#"    "re-delivery {what} build={} status={} {}","#;
    assert!(written_by("re-delivery failed, will retry build=", src));
    assert!(!written_by("re-delivery failed, will retry", src));
    assert!(written_by("re-delivery failed build=x status=", src));
    assert!(!written_by("re-delivery failed, will retry id=", src));
    assert!(written_by(
        "configured ... webhook_path=",
        r#""configured instance={} webhook_path={} root={}","#
    ));
    assert!(written_by(
        "snapshot shard unreadable, skipped shard=",
        r#"log::warn!("snapshot {what} unreadable, skipped {where_}{who}");"#
    ));
    assert!(!written_by(
        "gave up: drone has no such build (404) build=",
        r#""gave up: drone has no such build build={} http={status} {}","#
    ));
}

/// Every log line docs/runbook.md quotes is one the filter writes (its event text and the
/// fields it names), so the runbook's "search the log for ..." cannot drift from the code.
#[test]
fn every_log_line_the_runbook_quotes_is_written_by_the_filter() {
    let source = filter_sources();
    let runbook = read("docs/runbook.md");
    let mut quotes = 0;
    let mut missing = Vec::new();
    for span in code_spans(&runbook) {
        let Some(head) = quoted_log_line(&span) else {
            continue;
        };
        quotes += 1;
        if !source.lines().any(|l| written_by(head, l)) {
            missing.push(format!("`{span}`: no line of filter/src writes `{head}`"));
        }
        for key in log_keys(&span) {
            if !source.contains(&format!(" {key}=")) && !source.contains(&format!("\"{key}=")) {
                missing.push(format!("`{span}`: the filter logs no field `{key}=`"));
            }
        }
    }
    assert!(quotes >= 10, "only {quotes} log lines found in the runbook");
    assert!(
        missing.is_empty(),
        "docs/runbook.md quotes log lines the filter does not write:\n{}",
        missing.join("\n")
    );
}
