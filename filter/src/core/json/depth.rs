//! Nesting depth of unvalidated JSON text, for the decoders that do not limit it themselves.

/// Maximum bracket nesting of `json`, ignoring brackets inside strings. Runs on unvalidated
/// input: it only counts, the parser that follows reports any syntax error. Only the
/// reference webhook parser (the test oracle, built on serde_json, which skips raw values
/// without a depth limit) and the tests holding serde_json to [`super::MAX_DEPTH`] need it;
/// the [`super::Scanner`] limits nesting as it goes.
pub(crate) fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for b in json.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_inside_strings_do_not_count() {
        assert_eq!(nesting_depth(r#"{"a":"\\",  "b":[{}]}"#), 3);
        assert_eq!(nesting_depth(r#"["[{\"]"]"#), 1);
        assert_eq!(nesting_depth("]]{"), 1);
        assert_eq!(nesting_depth(""), 0);
    }
}
