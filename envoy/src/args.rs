//! Minimal `--flag value` parsing for the binaries (no dependency for four flags each).

use anyhow::{bail, Context as _, Result};
use std::collections::BTreeMap;
use std::str::FromStr;

/// Parsed `--name value` pairs and bare `--switch`es.
pub struct Args(BTreeMap<String, Option<String>>);

impl Args {
    /// Parses `std::env::args()`; `known` lists `(flag, takes_value)`; `--help` prints `usage`.
    pub fn parse(usage: &str, known: &[(&str, bool)]) -> Result<Args> {
        let mut map = BTreeMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            if a == "--help" || a == "-h" {
                println!("{usage}");
                std::process::exit(0);
            }
            let Some(name) = a.strip_prefix("--") else {
                bail!("unexpected argument {a:?}\n{usage}");
            };
            let Some((_, takes)) = known.iter().find(|(k, _)| *k == name) else {
                bail!("unknown flag --{name}\n{usage}");
            };
            let v = if *takes {
                Some(
                    it.next()
                        .with_context(|| format!("--{name} needs a value"))?,
                )
            } else {
                None
            };
            map.insert(name.to_string(), v);
        }
        Ok(Args(map))
    }

    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.get(name) {
            Some(Some(v)) => v
                .parse()
                .map_err(|e| anyhow::anyhow!("--{name} {v:?}: {e}")),
            _ => Ok(default),
        }
    }

    pub fn opt(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned().flatten()
    }

    pub fn flag(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}
