//! The binaries' command line: minimal `--flag value` parsing (no dependency for four flags
//! each), and waiting for Ctrl-C.

use anyhow::{bail, Context as _, Result};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Parsed `--name value` pairs and bare `--switch`es.
pub struct Args(BTreeMap<String, Option<String>>);

impl Args {
    /// Parses `std::env::args()` against the flags `usage` names (see [`flags`]); `--help`
    /// prints `usage`.
    pub fn parse(usage: &str) -> Result<Args> {
        let known = flags(usage);
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

/// The flags a usage text names, `(name, takes_value)`: `[--name VALUE]` takes a value,
/// `[--name]` is a switch. The usage is the one place a binary lists its flags.
pub fn flags(usage: &str) -> Vec<(&str, bool)> {
    usage
        .split('[')
        .skip(1)
        .filter_map(|part| {
            let mut words = part.split(']').next()?.split_whitespace();
            let name = words.next()?.strip_prefix("--")?;
            Some((name, words.next().is_some()))
        })
        .collect()
}

/// A flag that turns true on Ctrl-C (the handler is installed once per process).
pub fn ctrl_c() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))?;
    Ok(stop)
}

/// Returns once Ctrl-C is pressed: a simulator binary serves until then.
pub fn until_ctrl_c() -> Result<()> {
    let stop = ctrl_c()?;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::flags;

    #[test]
    fn flags_are_read_from_the_usage() {
        assert_eq!(
            flags("demo [--builds 40] [--lose-any] [--seed 7]\n\nNeeds ENVOY_BIN [really]."),
            vec![("builds", true), ("lose-any", false), ("seed", true)]
        );
        assert_eq!(flags("pipeline-sim [--port 8080]"), vec![("port", true)]);
    }
}
