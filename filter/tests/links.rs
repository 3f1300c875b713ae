//! Every relative link of the user's documentation (README.md, docs/*.md, and the Envoy and
//! Istio READMEs it sends readers to) reaches a file of the repository, and every `#anchor`
//! a heading (or an `<a id>`) of the markdown file it names, as GitHub renders it. Sections
//! move between README and docs/; a link left pointing at the old place fails here.
//! The test names the docs quote (the security model names the test pinning each rule) are
//! defined somewhere in the workspace.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

mod common;

use common::repo::{docs_files, root, rust_files};

/// The markdown files whose links are checked, as paths from the repository's root.
fn documents() -> Vec<String> {
    let mut out = vec![
        "README.md".to_string(),
        "DEVELOPERS.md".to_string(),
        "BENCHMARKS.md".to_string(),
        "envoy/README.md".to_string(),
        "envoy/istio/README.md".to_string(),
    ];
    out.extend(docs_files());
    out
}

/// The text outside fenced blocks, with every inline code span replaced by `code` (so a
/// `](` inside one is no link, and a link whose text is code stays a link).
fn prose(text: &str) -> String {
    let mut lines = String::new();
    let mut fence: Option<&str> = None;
    for line in text.lines() {
        let t = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| t.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => {
                lines.push_str(line);
                lines.push('\n');
            }
            _ => {}
        }
    }
    let mut out = String::new();
    let mut rest = lines.as_str();
    while let Some(open) = rest.find('`') {
        let ticks = rest[open..].len() - rest[open..].trim_start_matches('`').len();
        let fence = "`".repeat(ticks);
        let body = &rest[open + ticks..];
        let Some(close) = body.find(&fence) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str("code");
        rest = &body[close + ticks..];
    }
    out.push_str(rest);
    out
}

/// The targets of the inline links and images of a markdown text: `[text](target)`,
/// `![alt](target "title")`.
fn link_targets(text: &str) -> Vec<String> {
    let prose = prose(text);
    let mut out = Vec::new();
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split_whitespace().next().unwrap_or("");
        let target = target.trim_start_matches('<').trim_end_matches('>');
        out.push(target.to_string());
        rest = &rest[end..];
    }
    out
}

/// GitHub's anchor for a heading's text: links become their text, then lower case, every
/// character but letters, digits, `-`, `_` and spaces dropped, spaces made `-`.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // `[text](target)` reads `text`.
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](").map(|m| open + m) else {
            break;
        };
        let Some(close) = rest[mid..].find(')').map(|c| mid + c) else {
            break;
        };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..mid]);
        rest = &rest[close + 1..];
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown text: its headings' (outside fenced blocks; a repeated one
/// gets `-1`, `-2`, ... as on GitHub) and its `<a id="...">`/`<a name="...">`.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for attr in ["<a id=\"", "<a name=\""] {
            if let Some(at) = line.find(attr) {
                let rest = &line[at + attr.len()..];
                if let Some(end) = rest.find('"') {
                    out.push(rest[..end].to_string());
                }
            }
        }
        let hashes = line.len() - line.trim_start_matches('#').len();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim().trim_end_matches('#'));
        let n = seen.entry(base.clone()).or_insert(0);
        out.push(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// `dir/target` with `.` and `..` resolved, or `None` when it leaves the repository.
fn resolve(dir: &Path, target: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in dir.join(target).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// What is wrong with the links of `file` (a path from the root), given a way to read any
/// file of the repository (`None`: no such file or directory; `Some("")` for a directory).
fn dead_links(file: &str, read: &dyn Fn(&Path) -> Option<String>) -> Vec<String> {
    let text = read(Path::new(file)).unwrap_or_else(|| panic!("{file}: cannot read"));
    let dir = Path::new(file).parent().unwrap_or(Path::new(""));
    let mut out = Vec::new();
    for target in link_targets(&text) {
        let scheme = target
            .split_once(':')
            .is_some_and(|(s, _)| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic()));
        if scheme {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let resolved = if path.is_empty() {
            Some(PathBuf::from(file))
        } else {
            resolve(dir, path)
        };
        let Some(resolved) = resolved else {
            out.push(format!("{file}: `{target}` leaves the repository"));
            continue;
        };
        let Some(content) = read(&resolved) else {
            out.push(format!(
                "{file}: `{target}`: no file {}",
                resolved.display()
            ));
            continue;
        };
        let Some(anchor) = anchor else { continue };
        if resolved.extension().is_none_or(|e| e != "md") {
            out.push(format!(
                "{file}: `{target}`: an anchor into a file that is not markdown"
            ));
            continue;
        }
        if !anchors(&content).iter().any(|a| a == anchor) {
            out.push(format!(
                "{file}: `{target}`: {} has no heading `#{anchor}`",
                resolved.display()
            ));
        }
    }
    out
}

fn read_repo(rel: &Path) -> Option<String> {
    let path = root().join(rel);
    if path.is_dir() {
        return Some(String::new());
    }
    std::fs::read_to_string(path).ok()
}

#[test]
fn every_relative_link_and_anchor_of_the_docs_resolves() {
    let files = documents();
    assert!(files.len() >= 10, "{files:?}");
    let mut dead = Vec::new();
    let mut links = 0;
    for file in &files {
        links += link_targets(&read_repo(Path::new(file)).unwrap_or_default()).len();
        dead.extend(dead_links(file, &read_repo));
    }
    // The scan sees the links: README alone has dozens.
    assert!(links >= 100, "only {links} links found");
    assert!(dead.is_empty(), "dead links:\n{}", dead.join("\n"));
}

#[test]
fn anchors_are_the_ones_github_gives_headings() {
    assert_eq!(
        slug("Which side: the pipeline's or drone's"),
        "which-side-the-pipelines-or-drones"
    );
    assert_eq!(
        slug("`instance` renamed: orphaned ledger"),
        "instance-renamed-orphaned-ledger"
    );
    assert_eq!(
        slug("Performance (see [`BENCHMARKS.md`](BENCHMARKS.md))"),
        "performance-see-benchmarksmd"
    );
    assert_eq!(
        slug("Alerts, dashboard, runbook"),
        "alerts-dashboard-runbook"
    );
    assert_eq!(
        anchors("# A\n```\n# not a heading\n```\n## A\n### B_c\n<a id=\"x\"></a>\n"),
        vec!["a", "a-1", "b_c", "x"]
    );
}

#[test]
fn a_link_to_a_missing_file_or_heading_is_reported() {
    let files: BTreeMap<&str, &str> = [
        (
            "README.md",
            "See [a](docs/a.md#one), [b](docs/a.md#two), [c](docs/gone.md), \
             `[code](docs/gone.md)`, [d](#top), [e](#bottom), [f](https://x.org/y#z),\n\
             [g](../outside.md), ![h](docs/a.md \"title\").\n\n# Top\n",
        ),
        ("docs/a.md", "# One\n\n```\n# two\n```\n"),
    ]
    .into_iter()
    .collect();
    let read = |p: &Path| files.get(p.to_str().unwrap()).map(|s| s.to_string());
    let dead = dead_links("README.md", &read);
    assert_eq!(dead.len(), 4, "{dead:#?}");
    assert!(dead[0].contains("`docs/a.md#two`"), "{dead:?}");
    assert!(dead[1].contains("`docs/gone.md`"), "{dead:?}");
    assert!(dead[2].contains("`#bottom`"), "{dead:?}");
    assert!(dead[3].contains("leaves the repository"), "{dead:?}");
}

/// Every `.rs` file of the workspace's crates, as text.
fn sources() -> Vec<String> {
    let crates = [
        "filter",
        "host-tests",
        "envoy",
        "drone-model",
        "test-support",
        "benchmarks",
    ];
    let files = crates.iter().flat_map(|c| rust_files(&root().join(c)));
    files.map(|(_, text)| text).collect()
}

/// The test names a document quotes: inline code spans that are a sentence in snake case (six
/// words or more, optionally after `file::`), minus metric names (Envoy's, Istio's and ours,
/// which are snake case too).
fn quoted_test_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for span in text.split('`').skip(1).step_by(2) {
        let name = span.rsplit("::").next().unwrap_or(span);
        let snake = !name.is_empty()
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        let metric = ["envoy_", "istio_", "status_sync_"]
            .iter()
            .any(|p| name.starts_with(p));
        if snake && !metric && name.split('_').count() >= 6 {
            names.push(name.to_string());
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The security model and the guarantees are lists of rules, each naming the test that pins
/// it: a test renamed or deleted must not leave a rule pointing at nothing.
#[test]
fn every_test_the_docs_name_exists() {
    let sources = sources();
    let mut quoted = 0;
    let mut missing = Vec::new();
    for file in documents() {
        for name in quoted_test_names(&read_repo(Path::new(&file)).unwrap_or_default()) {
            quoted += 1;
            let defined = sources.iter().any(|s| {
                s.match_indices(&format!("fn {name}")).any(|(at, m)| {
                    !s[at + m.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
                })
            });
            if !defined {
                missing.push(format!("{file}: `{name}`"));
            }
        }
    }
    // The scan sees them: docs/security.md alone names dozens.
    assert!(quoted >= 25, "only {quoted} test names found");
    assert!(
        missing.is_empty(),
        "tests the docs name but nobody defines:\n{}",
        missing.join("\n")
    );
}

#[test]
fn test_names_are_told_from_metric_names_and_keys() {
    let text = "`turn::a_late_answer_to_a_call_is_ignored_unread`, `max_body_bytes_in_flight`, \
                `status_sync_sync_instance___ci___webhooks_observed`, `Not_A_Test_Name_At_All`";
    assert_eq!(
        quoted_test_names(text),
        vec!["a_late_answer_to_a_call_is_ignored_unread"]
    );
}
