//! Log line fields. Envoy already starts every line with `wasm log <plugin name> <root id>:`,
//! so a line is the event in words, then `key=value` fields a log query can pick out
//! (`build=acme/api#12 status=success version=5`). Values with spaces, quotes or `=` are
//! quoted. The reconciler's lines end with its identity (`instance=`, `reconciler=`, `epoch=`)
//! so that the one reconciler of a process can be told from the other roots, and from the
//! previous one after a leader change.

use std::fmt;

/// A value as a field: bare when it is one plain word, else quoted with `"` and `\` escaped.
pub struct Val<'a>(pub &'a str);

impl fmt::Display for Val<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self
                .0
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=');
        if plain {
            return f.write_str(self.0);
        }
        f.write_str("\"")?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

/// A build as people name it: `acme/api#12` (the repository id when its name is unknown).
pub fn build(repo: Option<(&str, &str)>, repo_id: u64, number: u64) -> String {
    match repo {
        Some((namespace, name)) => format!("{namespace}/{name}#{number}"),
        None => format!("repo:{repo_id}#{number}"),
    }
}

/// A root context's id as logged (`reconciler=`, `root=`): the low 32 bits of its lease id, in
/// hex. Short, and enough to tell the roots of a process apart.
pub fn root_id(me: u64) -> String {
    format!("{:08x}", me & 0xffff_ffff)
}

/// The fields that identify a reconciler, appended to its lines.
pub fn identity(instance: &str, me: u64, epoch: u64) -> String {
    format!(
        "instance={} reconciler={} epoch={epoch}",
        Val(instance),
        root_id(me)
    )
}

/// How often the reconciler logs its summary line.
pub const SUMMARY_EVERY_MS: u64 = 60_000;

/// The reconciler's periodic summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub tracked: u64,
    pub due: u64,
    pub missing: u64,
    pub oldest_undelivered_s: u64,
    pub circuit_open: bool,
    pub inflight: u64,
    pub recovered: u64,
    pub giveups: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "summary tracked={} due={} missing={} oldest_undelivered_s={} circuit={} inflight={} recovered={} giveups={}",
            self.tracked,
            self.due,
            self.missing,
            self.oldest_undelivered_s,
            if self.circuit_open { "open" } else { "closed" },
            self.inflight,
            self.recovered,
            self.giveups
        )
    }
}

/// When the next summary is due: one per [`SUMMARY_EVERY_MS`], the first one a period after
/// the reconciler started.
#[derive(Clone, Debug)]
pub struct Every {
    next_ms: Option<u64>,
    period_ms: u64,
}

impl Every {
    pub const fn new(period_ms: u64) -> Self {
        Every {
            next_ms: None,
            period_ms,
        }
    }

    /// True at most once per period.
    pub fn due(&mut self, now_ms: u64) -> bool {
        match self.next_ms {
            None => {
                self.next_ms = Some(now_ms.saturating_add(self.period_ms));
                false
            }
            Some(next) if now_ms >= next => {
                self.next_ms = Some(now_ms.saturating_add(self.period_ms));
                true
            }
            Some(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bare_or_quoted() {
        assert_eq!(Val("success").to_string(), "success");
        assert_eq!(Val("HTTP 503").to_string(), "\"HTTP 503\"");
        assert_eq!(Val("a\"b\\c").to_string(), "\"a\\\"b\\\\c\"");
        assert_eq!(Val("k=v").to_string(), "\"k=v\"");
        assert_eq!(Val("").to_string(), "\"\"");
        assert_eq!(Val("x\ny").to_string(), "\"x\\u{a}y\"");
    }

    #[test]
    fn builds_and_identity() {
        assert_eq!(build(Some(("acme", "api")), 7, 12), "acme/api#12");
        assert_eq!(build(None, 7, 12), "repo:7#12");
        assert_eq!(
            identity("ci", 0xdead_beef_0123_abcd, 4),
            "instance=ci reconciler=0123abcd epoch=4"
        );
    }

    #[test]
    fn summary_line_and_its_rate() {
        let s = Summary {
            tracked: 12,
            due: 3,
            missing: 2,
            oldest_undelivered_s: 45,
            circuit_open: true,
            inflight: 1,
            recovered: 9,
            giveups: 0,
        };
        assert_eq!(
            s.to_string(),
            "summary tracked=12 due=3 missing=2 oldest_undelivered_s=45 circuit=open inflight=1 recovered=9 giveups=0"
        );
        let mut every = Every::new(60_000);
        assert!(!every.due(1_000), "not at the start");
        assert!(!every.due(60_000));
        assert!(every.due(61_000));
        assert!(!every.due(100_000));
        assert!(every.due(121_000));
        let lines = (1..=600u64)
            .filter(|t| every.due(121_000 + t * 1_000))
            .count();
        assert_eq!(lines, 10, "one line a minute over ten minutes");
    }
}
