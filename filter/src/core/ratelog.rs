//! Rate limiting for log lines caused by outside input: a flood of bad webhooks or a failing
//! drone must be visible in the log, but must not flood it. Time is a parameter.

/// Allows one line per window and counts the ones it held back.
#[derive(Clone, Debug)]
pub struct LogLimiter {
    window_ms: u64,
    last_ms: Option<u64>,
    suppressed: u64,
}

impl LogLimiter {
    pub const fn new(window_ms: u64) -> Self {
        LogLimiter {
            window_ms,
            last_ms: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be logged now, with `n` lines suppressed since the last one;
    /// `None` when this one should be suppressed.
    #[inline(never)] // one copy in the module, not one per call site (BENCHMARKS.md, 7)
    pub fn allow(&mut self, now_ms: u64) -> Option<u64> {
        match self.last_ms {
            Some(last) if now_ms.saturating_sub(last) < self.window_ms => {
                self.suppressed = self.suppressed.saturating_add(1);
                None
            }
            _ => {
                self.last_ms = Some(now_ms);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Field for a line that follows suppressed ones: ` suppressed=<n>` (lines like it held back).
pub fn suppressed_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" suppressed={n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_with_a_count() {
        let mut l = LogLimiter::new(1000);
        assert_eq!(l.allow(0), Some(0));
        assert_eq!(l.allow(10), None);
        assert_eq!(l.allow(999), None);
        assert_eq!(l.allow(1000), Some(2));
        assert_eq!(suppressed_note(2), " suppressed=2");
        assert_eq!(suppressed_note(0), "");
    }
}
