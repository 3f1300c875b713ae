//! The demo (`make run`) shows production, and the docs show the demo as it is.
//!
//! One real run of the demo binary, small and fast (8 builds, short steps), in a temporary
//! directory: it must converge with signed webhooks in `enforce`, keep Envoy's log, and print
//! figures that hold together (the invariants below). README.md's and envoy/README.md's
//! samples of its output (between `<!-- demo-output: begin -->` and `<!-- demo-output: end
//! -->`) must have exactly the lines of that real output once numbers are masked (a renamed,
//! added or removed line fails), their LOST/RECOVERED/progress lines the shapes the demo
//! prints, and their figures must pass the same invariants, for the 40 builds of `make run`.
//! To refresh a sample: `make run`, then copy from `out/demo/output.txt`.
//!
//! ENVOY_BIN and STATUS_SYNC_WASM must be set (`make test` does it): the test fails without
//! them, it is never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The samples that show the demo's output.
const SAMPLES: [&str; 2] = ["README.md", "envoy/README.md"];
const BEGIN: &str = "<!-- demo-output: begin";
const END: &str = "<!-- demo-output: end";
/// Builds of the test's run, and of `make run` (the samples).
const TEST_BUILDS: i64 = 8;
const MAKE_RUN_BUILDS: i64 = 40;

/// drone's build statuses, as the demo prints them.
const STATUSES: [&str; 10] = [
    "pending",
    "running",
    "success",
    "failure",
    "error",
    "killed",
    "skipped",
    "declined",
    "blocked",
    "waiting_on_dependencies",
];

/// The shapes of the lines the demo prints while builds run ([`event_shape`]); a sample may
/// show any of them, or leave them out (`[...]`).
const EVENT_SHAPES: [&str; 5] = [
    "[#.#s] LOST K drone: S v# pipeline: S v# (its build:A S v# webhook was lost)",
    "[#.#s] LOST K drone: S v# pipeline: nothing (its build:A S v# webhook was lost)",
    "[#.#s] LOST K drone: S v# pipeline: S v# (drone sends no webhook for a decline)",
    "[#.#s] RECOVERED K pipeline now: S v# (re-delivered by status-sync #.#s later)",
    "[#.#s] progress #/# builds finished, the pipeline agrees on #; so far # lost, # recovered, # re-delivered",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// What one demo run printed (`output.txt`) and the Envoy log it kept.
struct Run {
    output: String,
    envoy_log: String,
}

/// The test's demo run, once for all tests here.
fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        for var in ["ENVOY_BIN", "STATUS_SYNC_WASM"] {
            assert!(
                std::env::var_os(var).is_some(),
                "{var} is not set: run with `make test` (it builds Envoy and the module)"
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new(env!("CARGO_BIN_EXE_demo"))
            .current_dir(dir.path())
            .args(["--builds", &TEST_BUILDS.to_string()])
            .args(["--step-ms", "150", "--every-ms", "300", "--loss", "0.5"])
            .args([
                "--progress-s",
                "2",
                "--timeout-s",
                "60",
                "--out-dir",
                "out/demo",
            ])
            .output()
            .expect("run the demo");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the demo failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let output = std::fs::read_to_string(dir.path().join("out/demo/output.txt"))
            .expect("the demo writes out/demo/output.txt");
        assert_eq!(output, stdout, "output.txt is what the demo printed");
        let envoy_log = std::fs::read_to_string(dir.path().join("out/demo/envoy.log"))
            .expect("Envoy's log is kept after the demo");
        Run { output, envoy_log }
    })
}

/// `line` with every run of digits as `#`, runs of spaces as one, no space after `[`.
fn shape(line: &str) -> String {
    let mut out = String::new();
    let (mut digit, mut space) = (false, false);
    for c in line.trim_end().chars() {
        if c.is_ascii_digit() {
            if !digit {
                out.push('#');
            }
            (digit, space) = (true, false);
        } else if c.is_whitespace() {
            if !space {
                out.push(' ');
            }
            (digit, space) = (false, true);
        } else {
            out.push(c);
            (digit, space) = (false, false);
        }
    }
    out.replace("[ ", "[")
}

/// A line printed while builds run, with build keys (`K`), statuses (`S`) and webhook
/// actions (`build:A`) masked too; `None` for other lines.
fn event_shape(line: &str) -> Option<String> {
    let s = shape(line);
    let kind = s.split(' ').nth(1)?;
    if !s.starts_with("[#.#s] ") || !["LOST", "RECOVERED", "progress"].contains(&kind) {
        return None;
    }
    Some(
        s.split(' ')
            .map(|t| {
                if t.contains('/') && t.contains('#') && kind != "progress" {
                    "K"
                } else if STATUSES.contains(&t) {
                    "S"
                } else if t.starts_with("build:") {
                    "build:A"
                } else {
                    t
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The lines of a text that are compared exactly (numbers masked): all but the event lines,
/// each of which must have one of [`EVENT_SHAPES`], and `[...]`, which marks left-out event
/// lines in a sample.
fn fixed_lines(text: &str, what: &str) -> Result<Vec<String>, String> {
    let mut fixed = Vec::new();
    for line in text.lines() {
        if line.trim() == "[...]" {
            continue;
        }
        match event_shape(line) {
            Some(e) if EVENT_SHAPES.contains(&e.as_str()) => {}
            Some(e) => return Err(format!("{what}: no such demo line: {line:?} (shape {e:?})")),
            None => fixed.push(shape(line)),
        }
    }
    Ok(fixed)
}

/// Checks that `sample` is the real output, or a part of it that starts at its first line or
/// at `== summary` and ends at its end or at a blank line, with numbers masked and event lines
/// left out at will.
fn matches(sample: &str, output: &str, what: &str) -> Result<(), String> {
    let real = fixed_lines(output, "the demo's output")?;
    let got = fixed_lines(sample, what)?;
    let start = match got.first() {
        Some(first) if first.starts_with("== summary") => real
            .iter()
            .position(|l| l.starts_with("== summary"))
            .ok_or("the output has no summary")?,
        _ => 0,
    };
    for (i, line) in got.iter().enumerate() {
        match real.get(start + i) {
            Some(r) if r == line => {}
            Some(r) => {
                return Err(format!(
                    "{what}: compared line {} (event lines and `[...]` aside) differs from the demo's output, numbers masked:\n  sample: {line}\n  demo:   {r}",
                    i + 1
                ))
            }
            None => return Err(format!("{what}: line {} is not in the demo's output: {line}", i + 1)),
        }
    }
    let end = start + got.len();
    if end < real.len() && !real[end].is_empty() {
        return Err(format!(
            "{what}: ends before the demo's line {:?} (a sample stops at the end or at a blank line)",
            real[end]
        ));
    }
    Ok(())
}

/// The numbers of a summary row (after its label), in order.
fn numbers(text: &str, label: &str) -> Result<Vec<f64>, String> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .ok_or_else(|| format!("no line {label:?}"))?;
    let rest = &line.trim_start()[label.len()..];
    Ok(rest
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|t| t.trim_matches('.').parse::<f64>().ok())
        .collect())
}

fn num(text: &str, label: &str, i: usize) -> Result<f64, String> {
    numbers(text, label)?
        .get(i)
        .copied()
        .ok_or_else(|| format!("{label:?} has no number #{}", i + 1))
}

/// The figures of a summary hold together, for a run of `builds` builds.
fn invariants(text: &str, builds: i64) -> Result<(), String> {
    let n = |label: &str, i: usize| num(text, label, i);
    let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
    check(text.contains("== summary (converged "), "the run converged")?;
    check(
        n("builds", 0)? == builds as f64,
        "builds is the run's --builds",
    )?;
    let produced = n("webhooks drone produced", 0)?;
    let lost = n("webhooks lost", 0)?;
    check(
        produced >= builds as f64,
        "drone produces a webhook per build at least",
    )?;
    check(lost < produced, "lost < produced")?;
    check(
        (n("webhooks lost", 1)? - (100.0 * lost / produced).round()).abs() < 0.5,
        "the lost share is lost / produced",
    )?;
    check(
        n("webhooks refused by the filter", 1)? == 1.0,
        "only the demo's unsigned webhook refused: drone-sim signs with the secret Envoy has",
    )?;
    let final_lost = n("builds whose final state was lost", 0)?;
    let recovered = n("... recovered by status-sync", 0)?;
    check(final_lost >= 1.0, "the run shows a recovery")?;
    check(recovered == final_lost, "every lost final state recovered")?;
    let r = numbers(text, "transitions re-delivered / accepted")?;
    let [sent, accepted, had, repeats, errors] = r[..] else {
        return Err(format!("re-delivered / accepted: 5 numbers, got {r:?}"));
    };
    check(
        accepted >= recovered,
        "each recovered build had an accepted re-delivery",
    )?;
    check(
        sent == accepted + had + repeats + errors,
        "re-delivered = accepted + the reasons for the others",
    )?;
    let c = numbers(text, "drone API calls")?;
    let [calls, ok, failed] = c[..] else {
        return Err(format!("drone API calls: 3 numbers, got {c:?}"));
    };
    check(!text.contains("NOT EQUAL"), "the counts were read together")?;
    check(calls == ok + failed, "drone-sim's count = the filter's")?;
    check(calls >= recovered, "a lookup per recovered build at least")?;
    check(
        calls <= 5.0 * builds as f64,
        "at most 5 drone API calls per build",
    )?;
    check(
        n("builds no webhook of which arrived", 0)? == 0.0,
        "every build's first webhook arrives (no --lose-any)",
    )?;
    check(n("builds where pipeline != drone", 0)? == 0.0, "converged")?;
    check(
        n("oldest undelivered transition now", 0)? == 0.0,
        "caught up",
    )?;
    let d = numbers(text, "recovery delay p50 / p99 (known -> accepted)")?;
    let [p50, p99, transitions] = d[..] else {
        return Err(format!("recovery delay: 3 numbers, got {d:?}"));
    };
    check(p50 <= p99, "recovery delay p50 <= p99")?;
    check(
        transitions >= recovered,
        "a recovered transition per build at least",
    )?;
    let v = numbers(text, "pipeline behind drone p50 / p99 (demo's view)")?;
    let [v50, v99] = v[..] else {
        return Err(format!("demo's view: 2 numbers, got {v:?}"));
    };
    check(
        v50 <= v99 && v99 <= 30.0,
        "pipeline behind drone: p50 <= p99 <= 30 s",
    )?;
    if !text.contains("status-sync metrics at the end") {
        return Ok(()); // a sample that stops after the SLO lines
    }
    check(
        n("status_sync.drone_polls_ok", 0)? == ok,
        "the metric is the one the calls line read",
    )?;
    check(
        n("status_sync.transitions_recovered", 0)? == transitions,
        "the metric is the one the delay line read",
    )?;
    check(
        n("status_sync.webhooks_signature_invalid", 0)? == 1.0,
        "one bad signature: the demo's unsigned webhook",
    )?;
    Ok(())
}

/// The sample of `file` between the markers, without the code fences.
fn sample(file: &str) -> String {
    let text = std::fs::read_to_string(repo().join(file)).expect("read the sample's file");
    let begin = text
        .find(BEGIN)
        .unwrap_or_else(|| panic!("{file}: no `{BEGIN}` marker"));
    let after = &text[begin..];
    let end = after
        .find(END)
        .unwrap_or_else(|| panic!("{file}: no `{END}` marker"));
    after[..end]
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_demo_converges_with_signed_webhooks_in_enforce_and_keeps_envoys_log() {
    let run = run();
    let out = &run.output;
    for line in [
        "mode: signature_mode enforce: unsigned or forged webhooks get 401",
        "admin on http://127.0.0.1:",
        "/stats?filter=status_sync'",
        "log in out/demo/envoy.log",
        "] waiting for the filter to load",
        "] checking enforce: an unsigned webhook to /hook was answered 401",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
    assert!(
        run.envoy_log.contains("wasm"),
        "Envoy's log, kept after the demo, has the filter's lines"
    );
    // Webhooks were observed in enforce: their signatures verified.
    assert!(
        num(out, "status_sync.webhooks_observed", 0).unwrap() > 0.0,
        "{out}"
    );
    if let Err(e) = invariants(out, TEST_BUILDS) {
        panic!("the demo's summary: {e}\n{out}");
    }
    // Every line printed while builds ran has a known shape.
    fixed_lines(out, "the demo's output").unwrap_or_else(|e| panic!("{e}\n{out}"));
}

#[test]
fn the_docs_demo_samples_are_the_real_output_with_figures_that_hold_together() {
    let run = run();
    for file in SAMPLES {
        let s = sample(file);
        if let Err(e) = matches(&s, &run.output, file) {
            panic!(
                "{e}\n\nrefresh it from out/demo/output.txt of a `make run`; this run printed:\n{}",
                run.output
            );
        }
        if s.contains("== summary") {
            if let Err(e) = invariants(&s, MAKE_RUN_BUILDS) {
                panic!("{file}: its summary is not from a converged `make run`: {e}");
            }
        }
    }
}

#[test]
fn a_sample_with_a_renamed_added_or_removed_line_does_not_match() {
    let out = &run().output;
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("drone API calls"))
        .expect("a drone API calls line");
    let edit = |f: &dyn Fn(&mut Vec<String>)| {
        let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        f(&mut v);
        v.join("\n")
    };
    assert!(matches(out, out, "itself").is_ok());
    let renamed = edit(&|v| v[at] = v[at].replace("drone API calls", "drone API requests"));
    let removed = edit(&|v| {
        v.remove(at);
    });
    let added = edit(&|v| v.insert(at, "  webhooks retried                 0".into()));
    let event = edit(&|v| v.insert(at - 1, "[ 9.9s] LOST      a/b#1 (something else)".into()));
    for (what, text) in [
        ("renamed", renamed),
        ("removed", removed),
        ("added", added),
        ("unknown event", event),
    ] {
        assert!(
            matches(&text, out, what).is_err(),
            "a sample with a line {what} matched"
        );
    }
    // Numbers are masked; event lines may be left out.
    let numbers_changed = out.replace(" 0 ", " 12 ");
    assert!(matches(&numbers_changed, out, "numbers").is_ok());
    let abridged: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.contains("] RECOVERED "))
        .collect();
    assert!(matches(&abridged.join("\n"), out, "abridged").is_ok());
}
