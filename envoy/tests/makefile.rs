//! `make help`: a user finds every target there, each with its one-line description, taken from
//! the `## target: text` comments of the Makefile (so a new documented target cannot be missed).

use anyhow::{ensure, Result};
use envoy_e2e::dist::{clean_build_env, missing_part, repo_root, run, which};
use std::process::Command;

#[test]
fn make_help_lists_every_documented_target_with_its_description() -> Result<()> {
    let test = "make_help_lists_every_documented_target_with_its_description";
    if which("make").is_none() {
        return missing_part(test, "make");
    }
    let root = repo_root();
    let makefile = std::fs::read_to_string(root.join("Makefile"))?;
    let documented: Vec<&str> = makefile
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .filter_map(|l| l.split_once(": ").map(|(t, _)| t))
        .filter(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .collect();
    for t in [
        "build",
        "test",
        "run",
        "lint",
        "dist",
        "release-check",
        "compat",
        "help",
    ] {
        ensure!(documented.contains(&t), "`{t}` has no `## {t}:` comment");
    }
    let mut cmd = Command::new("make");
    cmd.args(["-s", "--no-print-directory", "help"])
        .current_dir(&root);
    clean_build_env(&mut cmd);
    let out = run(&mut cmd)?;
    for t in &documented {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().take(2).eq(["make", *t]))
            .unwrap_or_default();
        let description = line.split_whitespace().skip(2).collect::<Vec<_>>();
        ensure!(
            !description.is_empty(),
            "`make help` has no line with a description for `{t}`:\n{out}"
        );
        ensure!(
            !line.contains("$("),
            "`make help` shows an unexpanded variable: {line}"
        );
    }
    ensure!(
        out.lines().count() == documented.len(),
        "`make help` prints {} lines for {} documented targets:\n{out}",
        out.lines().count(),
        documented.len()
    );
    Ok(())
}
