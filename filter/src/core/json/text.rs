//! Walks over JSON text that need no parse: whitespace removal for re-deliveries, and the
//! nesting depth the tests hold serde_json to. Each only has to know, character by character,
//! whether it is inside a string literal ([`Strings`]).

/// Tells, for each character of a JSON text fed in order, whether it belongs to a string
/// literal (its quotes included). It only follows quotes and backslashes, so it runs on
/// unvalidated text too.
#[derive(Default)]
struct Strings {
    in_string: bool,
    escaped: bool,
}

impl Strings {
    /// Feeds `c`, the next character; true when it is part of a string literal.
    fn holds(&mut self, c: char) -> bool {
        if !self.in_string {
            self.in_string = c == '"';
            return self.in_string;
        }
        if self.escaped {
            self.escaped = false;
        } else if c == '\\' {
            self.escaped = true;
        } else if c == '"' {
            self.in_string = false;
        }
        true
    }
}

/// Removes JSON whitespace outside strings. Only for already validated JSON: the tokens are
/// copied unchanged, so numbers and strings stay byte-for-byte what drone wrote, while an
/// answer pretty-printed by `HTTP_JSON_INDENT=true` becomes compact like a real webhook.
pub(crate) fn compact(json: &str) -> String {
    let mut strings = Strings::default();
    let mut out = String::with_capacity(json.len());
    out.extend(
        json.chars()
            .filter(|&c| strings.holds(c) || !matches!(c, ' ' | '\t' | '\n' | '\r')),
    );
    out
}

/// Maximum bracket nesting of `json`, ignoring brackets inside strings. Runs on unvalidated
/// input: it only counts, the parser that follows reports any syntax error. Only the tests
/// holding serde_json (which skips raw values without a depth limit) to [`super::MAX_DEPTH`]
/// need it; the [`super::Scanner`] limits nesting as it goes.
#[cfg(test)]
pub(crate) fn nesting_depth(json: &str) -> usize {
    let mut strings = Strings::default();
    let (mut depth, mut max) = (0usize, 0usize);
    for c in json.chars() {
        match c {
            _ if strings.holds(c) => {}
            '{' | '[' => {
                depth += 1;
                max = max.max(depth);
            }
            '}' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_keeps_strings_whole() {
        assert_eq!(compact(" [ 1 , \"a b\\\\\" , { } ]\n"), r#"[1,"a b\\",{}]"#);
        assert_eq!(compact(r#""\" ""#), r#""\" ""#);
        assert_eq!(
            compact("{\"a\" :\t\"x\\\" \\n y\" }"),
            r#"{"a":"x\" \n y"}"#
        );
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        assert_eq!(nesting_depth(r#"{"a":"\\",  "b":[{}]}"#), 3);
        assert_eq!(nesting_depth(r#"["[{\"]"]"#), 1);
        assert_eq!(nesting_depth("]]{"), 1);
        assert_eq!(nesting_depth(""), 0);
    }

    /// Depth, not a count of brackets: siblings do not add up.
    #[test]
    fn closing_brackets_end_a_level() {
        assert_eq!(nesting_depth("[[],[],{}]"), 2);
        assert_eq!(nesting_depth(r#"{"a":[1],"b":{"c":[]}}"#), 3);
    }
}
