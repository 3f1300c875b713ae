//! The shape of the sans-IO core, held by tests so it cannot drift back (issue 20, item 3):
//! no file of `filter/src/core` is over 700 lines before its unit tests, and no two core
//! modules import each other, directly or through others. A file that grows past the limit is
//! split by concern into a directory module (as `core/json/` and `core/config/` are); an import
//! circle is broken by moving what both sides need below both (as `core/object.rs` is, under
//! `drone_api`, `limits` and `config`). The shell's modules are held to the second rule too,
//! but for the one circle issue 20 removes by moving the leader's turn into the core.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use common::repo::rust_files;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Lines a core file may have before its `#[cfg(test)] mod tests`.
const MAX_LINES_BEFORE_TESTS: usize = 700;

/// `filter/src/<part>`: `core` or `shell`.
fn src_dir(part: &str) -> PathBuf {
    common::repo::root().join("filter/src").join(part)
}

/// The lines of `text` before its unit tests: before the `#[cfg(test)]` that opens
/// `mod tests` (and the attributes between them), or all of them when it has none.
fn lines_before_tests(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        // Only the file's own (top-level, unindented) test module ends the count.
        if line.starts_with("mod tests") || line.starts_with("pub(crate) mod tests") {
            // Back over the attributes of `mod tests` (`#[cfg(test)]` and any others).
            let mut start = i;
            while start > 0 && lines[start - 1].trim_start().starts_with("#[") {
                start -= 1;
            }
            return start;
        }
    }
    lines.len()
}

/// The module path (below `core`) of a file: `x.rs` and `x/mod.rs` are `[x]`, `x/y.rs` is
/// `[x, y]`, `mod.rs` is `[]`.
fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segment of each path a `{...}` group at the start of `s` names
/// (`{a, b::C, self}` gives `a`, `b`, `self`).
fn group_heads(s: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut at_start = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => {
                depth += 1;
                at_start = depth == 1;
            }
            '}' => {
                if depth == 1 {
                    break;
                }
                depth -= 1;
            }
            ',' if depth == 1 => at_start = true,
            c if c.is_whitespace() => {}
            _ if at_start && depth == 1 => {
                heads.push(ident(&s[i..]).to_string());
                at_start = false;
            }
            _ => {}
        }
    }
    heads
}

/// The top-level modules of `part` (`core`, `shell`) that `text` (the file at module path `at`
/// below `part`) names outside its unit tests and comments: through `crate::<part>::x`, or
/// `super::` chains that resolve to another top-level module.
fn imports(
    part: &str,
    at: &[String],
    text: &str,
    top_level: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut code = String::new();
    for line in text.lines().take(lines_before_tests(text)) {
        let line = line.trim_start();
        if !line.starts_with("//") {
            code.push_str(line);
            code.push('\n');
        }
    }
    let mut names = BTreeSet::new();
    let mut add = |base: &[String], rest: &str| {
        let heads = if rest.starts_with('{') {
            group_heads(rest)
        } else {
            vec![ident(rest).to_string()]
        };
        for head in heads {
            // A path below `core` resolves to its first segment; from a file nested in an
            // inline module (or a name not found) `super::` chains stop at `core`.
            let target = match base.first() {
                Some(first) => first.clone(),
                None => head,
            };
            if top_level.contains(&target) {
                names.insert(target);
            }
        }
    };
    let prefix = format!("crate::{part}::");
    for (i, _) in code.match_indices(&prefix) {
        add(&[], &code[i + prefix.len()..]);
    }
    let mut i = 0;
    while let Some(found) = code[i..].find("super::") {
        let start = i + found;
        // Only whole chains: skip a `super::` that continues one already counted.
        let preceded = code[..start].ends_with("super::")
            || code[..start]
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let mut rest = &code[start..];
        let mut ups = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            ups += 1;
            rest = r;
        }
        if !preceded {
            let base = &at[..at.len().saturating_sub(ups)];
            add(base, rest);
        }
        i = start + "super::".len() * ups.max(1);
    }
    names
}

/// Edges `module -> modules it imports` between the top-level modules of `part` (a directory
/// module and its files are one node).
fn module_graph(part: &str) -> BTreeMap<String, BTreeSet<String>> {
    let files = rust_files(&src_dir(part));
    let top_level: BTreeSet<String> = files
        .iter()
        .filter_map(|(rel, _)| module_path(rel).first().cloned())
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in &files {
        let at = module_path(rel);
        let Some(me) = at.first().cloned() else {
            continue;
        };
        let mut targets = imports(part, &at, text, &top_level);
        targets.remove(&me);
        graph.entry(me).or_default().extend(targets);
    }
    graph
}

/// One cycle of `graph`, as the list of its modules with the first repeated at the end.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = path.iter().position(|n| n == node) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut done, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_core_file_is_over_700_lines_before_its_tests() {
    let files = rust_files(&src_dir("core"));
    assert!(files.len() > 20, "found only {} core files", files.len());
    let too_long: Vec<String> = files
        .iter()
        .map(|(rel, text)| (rel, lines_before_tests(text)))
        .filter(|(_, n)| *n > MAX_LINES_BEFORE_TESTS)
        .map(|(rel, n)| format!("core/{rel}: {n} lines before its tests"))
        .collect();
    assert!(
        too_long.is_empty(),
        "split these by concern into a directory module (at most {MAX_LINES_BEFORE_TESTS} \
         lines each before the tests):\n{}",
        too_long.join("\n")
    );
}

/// `part`'s modules import each other in no cycle, and the scan sees each import of `seen`
/// (so an empty graph cannot pass for a clean one).
fn assert_no_import_cycle(part: &str, seen: &[(&str, &str)]) {
    let graph = module_graph(part);
    for (from, to) in seen {
        assert!(
            graph.get(*from).is_some_and(|t| t.contains(*to)),
            "the scan should see {part}::{from} import {part}::{to}: {graph:?}"
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "{part} modules import each other: {}; move what they share below both",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn no_two_core_modules_import_each_other_even_through_others() {
    let seen = [
        ("leader", "config"),
        ("request", "webhook"),
        ("webhook", "json"),
    ];
    assert_no_import_cycle("core", &seen);
}

#[test]
fn no_two_shell_modules_import_each_other() {
    assert_no_import_cycle("shell", &[("http", "host")]);
}

#[test]
fn the_structure_checks_see_what_they_check() {
    // Tests stop the line count.
    assert_eq!(
        lines_before_tests("a\nb\n#[cfg(test)]\nmod tests {\n}\n"),
        2
    );
    assert_eq!(lines_before_tests("a\nb\n"), 2);
    assert_eq!(lines_before_tests("mod inline {\n    mod tests {}\n}\n"), 3);
    // Paths, groups and `super::` chains resolve to top-level modules.
    let top: BTreeSet<String> = ["a", "b", "c", "d"].map(String::from).into();
    let at = module_path("a/x.rs");
    assert_eq!(at, ["a", "x"]);
    let text = "use super::y;\nuse super::super::b::T;\nuse crate::core::{c, d::E};\n\
                // use crate::core::d;\n#[cfg(test)]\nmod tests { use crate::core::b; }\n";
    let seen = imports("core", &at, text, &top);
    assert_eq!(seen, ["a", "b", "c", "d"].map(String::from).into());
    // A cycle through a third module is found; a chain is not a cycle.
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (f, t) in edges {
            g.entry(f.to_string()).or_default().insert(t.to_string());
        }
        g
    };
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(["a", "b", "c", "a"].map(String::from).to_vec())
    );
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
}
